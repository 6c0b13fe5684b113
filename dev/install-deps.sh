#!/usr/bin/env bash
# Installs, from Debian's packages, what one job needs (dev/packages.txt lists them by group):
#   dev/install-deps.sh example   what dev/example.sh needs (GRUB's EFI modules)
#   dev/install-deps.sh test      what .ci/run needs: that, plus firmware, QEMU, the servers, the
#                                 disk tools, Nix and the kernel source
#   dev/install-deps.sh bench     what the benchmarks run by hand need on top of test (perfdhcp,
#                                 GNU time, cpio)
# Packages already installed are kept as they are, newer ones included (this machine's image has
# some from backports); QEMU goes through dev/install-qemu.sh for that reason.
set -euo pipefail
cd "$(dirname "$0")/.."
job=${1:-test}
case "$job" in
  example) groups="example" ;;
  test) groups="example test" ;;
  bench) groups="example test bench" ;;
  *) echo "usage: dev/install-deps.sh example|test|bench" >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
  echo "dev/install-deps.sh: run as root (it calls apt-get)" >&2
  exit 1
fi
packages=$(bash dev/packages.sh $groups)
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086 # one word per package
apt-get install -y -q --no-install-recommends $packages
if [ "$job" != example ]; then
  bash dev/install-qemu.sh
fi
