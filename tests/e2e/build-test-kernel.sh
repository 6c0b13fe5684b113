#!/usr/bin/env bash
# Builds the end-to-end test kernel from Debian's linux-source with the fragment `nixos-pxe
# kernel-config` prints, on tinyconfig plus qemu-base.config, and caches it outside the work tree
# keyed by the fragment, the base file and the source version: only the first run pays (~7-15 min
# on 2 cores). Prints the path of the cached bzImage on its last line.
#
# Usage: build-test-kernel.sh FRAGMENT   (the output of `nixos-pxe kernel-config`)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fragment=${1:?usage: build-test-kernel.sh FRAGMENT}
base="$here/qemu-base.config"
source_tar=/usr/src/linux-source-6.1.tar.xz
cache_root=${NIXOS_PXE_KERNEL_CACHE:-/var/cache/nixos-pxe/test-kernel}

[ -f "$source_tar" ] || { echo "build-test-kernel: $source_tar missing (apt-get install linux-source-6.1)" >&2; exit 1; }
version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$( { cat "$fragment" "$base"; echo "linux-source-6.1 $version"; } | sha256sum | cut -c1-16)
cache="$cache_root/$key"
# A cached kernel is taken without the lock (it appears whole, by a rename): a test never waits
# for the build of another kernel.
if [ -s "$cache/bzImage" ]; then
  echo "build-test-kernel: cached ($cache)" >&2
  echo "$cache/bzImage"
  exit 0
fi
# One build at a time on this machine: a second caller waits for the first and then finds it cached.
mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [ -s "$cache/bzImage" ]; then
  echo "build-test-kernel: cached ($cache)" >&2
  echo "$cache/bzImage"
  exit 0
fi

build=$(mktemp -d /var/tmp/nixos-pxe-kernel.XXXXXX)
trap 'rm -rf "$build"' EXIT
start=$(date +%s)
echo "build-test-kernel: extracting linux-source-6.1 $version into $build" >&2
tar -xJf "$source_tar" -C "$build"
src="$build/linux-source-6.1"
cd "$src"
make -s tinyconfig >&2
# Fragment first, then the QEMU base: the base only adds, it never turns a fragment symbol off.
./scripts/kconfig/merge_config.sh -m .config "$fragment" "$base" >&2
make -s olddefconfig >&2

# Every fragment symbol set to y must survive olddefconfig; the NFS-root essentials must.
essential="IP_PNP IP_PNP_DHCP NFS_FS NFS_V3 ROOT_NFS OVERLAY_FS DEVTMPFS_MOUNT VIRTIO_NET EXT4_FS VFAT_FS EFI_STUB EFIVAR_FS"
missing_essential=""
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=y)
      symbol=${line%%=*}
      if ! grep -qx "$symbol=y" .config; then
        echo "build-test-kernel: note: ${symbol#CONFIG_} did not survive olddefconfig (an unmet dependency on this base)" >&2
        for e in $essential; do [ "CONFIG_$e" = "$symbol" ] && missing_essential="$missing_essential ${symbol#CONFIG_}"; done
      fi ;;
  esac
done < "$fragment"
if [ -n "$missing_essential" ]; then
  echo "build-test-kernel: essential symbols missing:$missing_essential" >&2
  exit 1
fi

make -s -j"$(nproc)" bzImage >&2
mkdir -p "$cache.tmp"
cp arch/x86/boot/bzImage "$cache.tmp/bzImage"
cp .config "$cache.tmp/config"
echo "$(( $(date +%s) - start ))" > "$cache.tmp/build-seconds"
rm -rf "$cache" && mv "$cache.tmp" "$cache"
echo "build-test-kernel: built in $(cat "$cache/build-seconds") s, cached in $cache" >&2
echo "$cache/bzImage"
