#!/usr/bin/env bash
# Installs, from Debian's packages, every program the build, the tests and the end-to-end lab run
# for real: GRUB's EFI modules, QEMU with OVMF, the DHCP/TFTP/NFS servers the generated configs are
# checked against, the disk tools the installer calls, Nix (for parsing and eval mode), and the kernel source.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(
  # boot loader and firmware
  grub-efi-amd64-bin grub-common ovmf qemu-system-x86 qemu-utils
  # the servers whose configs nixos-pxe renders
  isc-dhcp-server kea-dhcp4-server dnsmasq-base tftpd-hpa nfs-ganesha nfs-ganesha-vfs rpcbind
  # clients used by the protocol tests
  atftp curl busybox-static
  # what the installer runs, and what the tests inspect disks with
  util-linux fdisk parted dosfstools e2fsprogs kmod zstd xz-utils gzip tar cpio file
  # network namespaces, bridges, netem
  iproute2 nftables
  # Nix: `nix-instantiate --parse` on every .nix file, and `--source eval`
  nix-bin
  # the test kernel
  linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev
)
if [ "$(id -u)" -ne 0 ]; then
  echo "dev/install-deps.sh: run as root (it calls apt-get)" >&2
  exit 1
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
