#!/usr/bin/env bash
# Installs, from Debian's packages (the list is dev/packages.txt), every program the build, the
# tests and the end-to-end lab run for real: GRUB's EFI modules, QEMU with OVMF, the DHCP/TFTP/NFS
# servers the generated configs are checked against, the disk tools the installer calls, Nix (for
# parsing and eval mode), and the kernel source.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "dev/install-deps.sh: run as root (it calls apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2046 # one word per package
apt-get install -y -q --no-install-recommends $(sed 's/#.*//' dev/packages.txt)
