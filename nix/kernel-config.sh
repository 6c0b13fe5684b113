# The installer kernel's .config: the architecture's defconfig, the NFS-root fragment of
# `nixos-pxe kernel-config` merged over it, `make olddefconfig`, then the check that every symbol
# the fragment wants built in (=y) still is. One procedure for nix/kernel.nix's configfile
# derivation (nixpkgs' stdenv) and tests/kernel_fragment.rs (Debian's linux-source-6.1).
#
# Usage: bash kernel-config.sh SOURCE BUILD FRAGMENT
#   SOURCE    the kernel source tree (only read: every make runs with O=BUILD)
#   BUILD     where .config is made (created if missing)
#   FRAGMENT  the fragment, kconfig lines (CONFIG_X=y, # CONFIG_X is not set, CONFIG_X=value)
# Environment: KERNEL_ARCH (make's ARCH=, default x86_64), MAKE_FLAGS (more make arguments, e.g.
# CC=... HOSTCC=... as the kernel's build passes them).
#
# Why defconfig and olddefconfig rather than nixpkgs' generate-config.pl with autoModules: every
# symbol the fragment leaves open takes its Kconfig default, so nothing is a module that nobody
# asked for, and the kernel builds in minutes instead of building every module of a kernel that
# loads none (README, "The kernel").
set -euo pipefail

source_dir=${1:?usage: kernel-config.sh SOURCE BUILD FRAGMENT}
build=${2:?usage: kernel-config.sh SOURCE BUILD FRAGMENT}
fragment=${3:?usage: kernel-config.sh SOURCE BUILD FRAGMENT}
arch=${KERNEL_ARCH:-x86_64}
read -r -a make_flags <<< "${MAKE_FLAGS:-}"

mkdir -p "$build"
build=$(cd "$build" && pwd)
fragment=$(cd "$(dirname "$fragment")" && pwd)/$(basename "$fragment")
kmake() { make -s -C "$source_dir" O="$build" ARCH="$arch" "${make_flags[@]}" "$@"; }

kmake defconfig
# -m: merge only (no make of its own); its temporary files go to the current directory, so it
# runs in BUILD, never in the (possibly read-only) source tree. Run with bash: the script's
# #!/bin/bash does not exist in Nix's sandbox.
(cd "$build" && bash "$source_dir/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$fragment" > merge.log 2>&1) || {
  cat "$build/merge.log" >&2
  exit 1
}
kmake olddefconfig

missing=""
names=""
wanted=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=y) ;;
    *) continue ;;
  esac
  wanted=$((wanted + 1))
  symbol=${line%%=*}
  symbol=${symbol#CONFIG_}
  if ! grep -qx "CONFIG_$symbol=y" "$build/.config"; then
    got=$(grep -E "^CONFIG_$symbol=|^# CONFIG_$symbol is not set" "$build/.config" || true)
    missing="$missing
  $symbol: ${got:-not in .config}"
    names="$names $symbol"
  fi
done < "$fragment"

if [ -n "$names" ]; then
  count=$(echo $names | wc -w)
  echo "nixos-pxe: $count kernel symbols that the NFS root needs built in are not =y in the kernel's .config (defconfig of $arch, the fragment merged, make olddefconfig):$missing
The NFS root has no kernel modules, so each of them must be =y. A symbol that is =m, not set or
not in .config at all depends on something that is not built in: add that dependency to
nfsroot.extraKernelOptions (the \`depends on\` lines of the symbol's Kconfig entry name it), or
to the fixed set in src/kernel_config.rs. A symbol that this kernel version does not have is
never in .config: remove it from nfsroot.extraKernelOptions.
nixos-pxe: not built in:$names" >&2
  exit 1
fi
echo "all $wanted built-in symbols of the fragment are =y" > "$build/config-check"
