#!/usr/bin/env bash
# The installer kernel built both ways from Debian's linux-source-6.1, one after the other, in one
# run, for README "The kernel" (issue 16): what it costs to build the kernel this flake's way
# (nix/kernel.nix) against nixpkgs' way (the fragment as structuredExtraConfig in generic.nix).
#
#   ours:    make defconfig, the fragment merged (merge_config.sh -m), make olddefconfig, the check
#            (nix/kernel-config.sh itself); then what linuxManualConfig builds when it does not
#            read the .config at evaluation time (no CONFIG_MODULES known, so no `modules`):
#            make bzImage vmlinux.
#   nixpkgs: make defconfig, kconfig's conf.c patched to print "###" after every question (the
#            sed line of generic.nix), then generate-config.pl answering `make config` twice with
#            AUTO_MODULES=1 (autoModules, as on x86_64) and the fragment's answers as
#            structuredExtraConfig gives them (CONFIG_X=y -> "X y", "# CONFIG_X is not set" ->
#            "X n"; common-config.nix's own answers are not given, they would turn more on); then
#            what nixpkgs' kernel derivation builds with CONFIG_MODULES=y (manual-config.nix's
#            buildFlags): make bzImage vmlinux modules.
# Both run outside Nix with Debian's gcc, out of tree (O=), on one extracted source.
#
# Reported for each way, separately for the .config and the build: wall time, CPU time (user+sys
# of make and everything it waited for, from /usr/bin/time: on a shared machine much less
# sensitive to load than wall time) and the load average meanwhile; the symbols =y and =m; the
# compilations (a .o from a .c or .S: the .o.cmd files whose command has -c) done, and the total
# (done, plus what `make -n -k` still lists afterwards: 0 when the build finished); the images'
# sizes; and the ratios nixpkgs/ours.
#
# nixpkgs' files are not part of this repository (nothing fetched is committed); they are read
# from a copy outside it, made from nixpkgs on GitHub:
#   generate-config.pl  NixOS/nixpkgs 03e45e0cb4c56ec37088a7bc64001da02727dde6
#                       pkgs/os-specific/linux/kernel/generate-config.pl, verbatim
#   kconfig-conf.sed    NixOS/nixpkgs 00e6b22b508f93e219efee2dda4397027ccaf934
#                       pkgs/os-specific/linux/kernel/generic.nix, configfile's postPatch: the
#                       sed expression alone, one line: /fflush(stdout);/i\printf("###");
# (That generate-config.pl runs `make config` in the current directory, so it runs in the O=
# build directory here; newer ones take SRC and BUILD_ROOT and clamp a `y` offered only m/n.)
#
# Usage: nice -n 19 bash benches/kernel-build-both-ways.sh
# Environment:
#   NIXPKGS_KERNEL_DIR  the directory with generate-config.pl and kconfig-conf.sed
#                       (default /var/cache/nixos-pxe/nixpkgs-kernel)
#   NIXOS_PXE           the nixos-pxe binary (default target/release/nixos-pxe, built if missing)
#   CONFIG              the installer configuration (default examples/seed/installer.nix)
#   JOBS                make -j (default 2)
#   WAYS                which ways, in order (default "ours nixpkgs")
#   DEADLINE            a time for `date -d` (e.g. "08:00 UTC"): every step still running then is
#                       stopped, and what was done by then is reported as not finished
#   WORK_DIR            where the temporary tree goes (default /var/tmp; ~1.5 GB for the source,
#                       ~1 GB for ours, several GB for nixpkgs'); it is removed at the end
#   RESULTS             where the report is written too (default /var/tmp/kernel-build-both-ways.<time>.txt)
#
# Cost, measured on 2 shared cores (README "The kernel"): each .config takes ~10 s of CPU; ours
# builds in ~55 min of CPU (an hour of wall time), nixpkgs' way in 3 h 26 min of CPU (2 h 18 min
# of wall time), compiling 4.5 times as much and linking 4,847 modules: set DEADLINE. Disk:
# ~1.5 GB for the source, ~1 GB for ours, several GB for nixpkgs'.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

source_tar=/usr/src/linux-source-6.1.tar.xz
nixpkgs_dir=${NIXPKGS_KERNEL_DIR:-/var/cache/nixos-pxe/nixpkgs-kernel}
generate_config=$nixpkgs_dir/generate-config.pl
kconfig_sed=$nixpkgs_dir/kconfig-conf.sed
config=${CONFIG:-examples/seed/installer.nix}
jobs=${JOBS:-2}
ways=${WAYS:-ours nixpkgs}
arch=x86_64

say() { echo "kernel-build-both-ways: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(nice)" -ge 19 ] || die "run it as \`nice -n 19 bash $0\`: it takes the machine's cores for hours (now at niceness $(nice))"
[ -f "$source_tar" ] || die "$source_tar missing (apt-get install linux-source-6.1)"
[ -x /usr/bin/time ] || die "/usr/bin/time missing (apt-get install time)"
case " $ways " in
  *" nixpkgs "*)
    # IKHEADERS=m (autoModules) packs the headers with cpio; nixpkgs' kernel has it too.
    command -v cpio > /dev/null || die "cpio missing (apt-get install cpio): nixpkgs' way builds kheaders"
    for file in "$generate_config" "$kconfig_sed"; do
      [ -s "$file" ] || die "$file missing: nixpkgs' files are not in this repository. Copy, from https://github.com/NixOS/nixpkgs,
  pkgs/os-specific/linux/kernel/generate-config.pl (read at commit 03e45e0cb4c56ec37088a7bc64001da02727dde6) to $generate_config
  and the sed expression of generic.nix's configfile postPatch (commit 00e6b22b508f93e219efee2dda4397027ccaf934), one line:
    /fflush(stdout);/i\\printf(\"###\");
  to $kconfig_sed (or set NIXPKGS_KERNEL_DIR to a directory holding both)"
    done ;;
esac
deadline=""
if [ -n "${DEADLINE:-}" ]; then
  deadline=$(date -d "$DEADLINE" +%s) || die "DEADLINE=$DEADLINE: not a time date -d reads"
fi

pxe=${NIXOS_PXE:-target/release/nixos-pxe}
if [ ! -x "$pxe" ]; then
  say "building $pxe"
  cargo build --release --locked >&2
fi

work=$(mktemp -d "${WORK_DIR:-/var/tmp}/kernel-build-both-ways.XXXXXX")
results=${RESULTS:-/var/tmp/kernel-build-both-ways.$(date -u +%Y%m%dT%H%M%SZ).txt}
sampler=""
cleanup() {
  [ -z "$sampler" ] || kill "$sampler" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The load average, every 30 s, for the report (the machine is shared: a long wall time with a
# high load says little about the build itself).
( while :; do echo "$(date +%s) $(cut -d' ' -f1 /proc/loadavg)"; sleep 30; done ) > "$work/load" &
sampler=$!

# Mean and maximum of the 1-minute load average between two times (seconds since the epoch); for
# a step shorter than the sampling interval, the last sample before its end.
load_between() {
  awk -v from="$1" -v to="$2" '$1 <= to { last = $2 } $1 >= from && $1 <= to { sum += $2; n++; if ($2 > max) max = $2 }
    END { if (n) printf "load average %.1f (max %.1f, %d samples)", sum / n, max, n; else if (last != "") printf "load average %.1f (one sample)", last; else printf "load average not sampled" }' "$work/load"
}

# Runs a step under /usr/bin/time, stopped at the deadline. Sets step_wall, step_cpu (seconds),
# step_load and step_status (finished, failed, or stopped at the deadline). The step's output
# goes to $work/NAME.log.
run_step() {
  local name=$1; shift
  local limit=()
  if [ -n "$deadline" ]; then
    local left=$((deadline - $(date +%s)))
    if [ "$left" -le 0 ]; then
      step_wall=0 step_cpu=0 step_load="" step_status="not started (deadline)"
      return
    fi
    limit=(timeout --signal=TERM --kill-after=60 "$left")
  fi
  local start end rc=0
  start=$(date +%s)
  say "$name: started $(date -u +%H:%M:%S) UTC"
  /usr/bin/time -f 'time %e %U %S' -o "$work/$name.time" "${limit[@]}" "$@" > "$work/$name.log" 2>&1 || rc=$?
  end=$(date +%s)
  read -r _ step_wall user sys < <(grep '^time ' "$work/$name.time")
  step_cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.0f", u + s }')
  step_wall=$(awk -v w="$step_wall" 'BEGIN { printf "%.0f", w }')
  step_load=$(load_between "$start" "$end")
  case $rc in
    0) step_status=finished ;;
    124|137) step_status="NOT finished: stopped at the deadline" ;;
    *) step_status="failed (exit $rc)"; tail -20 "$work/$name.log" >&2 ;;
  esac
  say "$name: $step_status, wall ${step_wall} s, CPU ${step_cpu} s, $step_load"
}

kmake() { local build=$1; shift; make -C "$src" O="$build" ARCH="$arch" "$@"; }

# Compilations done in a build directory: the .o.cmd files whose command compiles (-c); a module's
# .mod.o (compiled from the .mod.c modpost writes) counted apart.
compiled() {
  find "$1" -name '.*.o.cmd' -print0 | xargs -0 -r head -qn1 | grep -e ' -c ' | grep -ve '\.mod\.o := ' -c || true
}
compiled_mod_o() {
  find "$1" -name '.*.mod.o.cmd' -print0 | xargs -0 -r head -qn1 | grep -ce ' -c ' || true
}
# Compilations make would still do: `make -n -k`, the distinct objects of its `-c -o` commands.
# On a fresh tree it undercounts by a few dozen (under -n the files that generated tools would
# write do not exist, so a few directories stop early: -k goes on with the others), and it is
# counted in a copy of the build directory, because even -n builds objtool (a recursive make).
# After a build has begun, it is counted in place (objtool is there by then).
to_compile() {
  local build=$1; shift
  if [ ! -e "$build/tools/objtool/objtool" ]; then
    local copy=$work/count
    rm -rf "$copy" && cp -a "$build" "$copy" && build=$copy
  fi
  mkdir -p "$build/tools"   # what the real build's recipe would have made
  kmake "$build" -n -k "$@" 2> /dev/null | grep -oE -- ' -c -o [^ ;]+' | sort -u | wc -l
  rm -rf "$work/count"
}

symbols() { printf '%s =y, %s =m' "$(grep -c '=y$' "$1/.config")" "$(grep -c '=m$' "$1/.config")"; }

report() { echo "$*" | tee -a "$results"; }

say "extracting $source_tar into $work"
tar -xJf "$source_tar" -C "$work"
src=$work/linux-source-6.1
"$pxe" kernel-config --config "$config" > "$work/fragment.config"
wanted=$(grep -c '^CONFIG_.*=y$' "$work/fragment.config")

: > "$results"
report "Installer kernel, both ways: $(dpkg-query -W -f='linux-source-6.1 ${Version}' linux-source-6.1), $(gcc --version | head -1)"
report "fragment: nixos-pxe kernel-config --config $config ($wanted symbols =y), project commit $(git -C "$repo" rev-parse --short HEAD)"
report "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo); niceness $(nice), make -j$jobs"
report "started $(date -u '+%Y-%m-%d %H:%M') UTC${deadline:+, deadline $(date -u -d @"$deadline" '+%H:%M') UTC}"

declare -A build_cpu build_wall build_done build_total
for way in $ways; do
  build=$work/$way
  case $way in
    ours)
      run_step ours-config bash nix/kernel-config.sh "$src" "$build" "$work/fragment.config"
      targets=(bzImage vmlinux) ;;
    nixpkgs)
      sed -f "$kconfig_sed" -i "$src/scripts/kconfig/conf.c"
      grep -q 'printf("###");' "$src/scripts/kconfig/conf.c" || die "$kconfig_sed changed nothing in scripts/kconfig/conf.c"
      # structuredExtraConfig's answers, in generate-config.pl's "NAME value" lines.
      sed -nE 's/^CONFIG_([A-Za-z0-9_]+)=(.*)$/\1 \2/p; s/^# CONFIG_([A-Za-z0-9_]+) is not set$/\1 n/p' \
        "$work/fragment.config" > "$work/answers"
      run_step nixpkgs-config bash -c '
        set -e
        make -C "$1" O="$2" ARCH="$3" defconfig
        cd "$2"
        KERNEL_CONFIG="$4" ARCH="$3" AUTO_MODULES=1 perl -w "$5"' \
        _ "$src" "$build" "$arch" "$work/answers" "$generate_config"
      targets=(bzImage vmlinux modules) ;;
    *) die "WAYS: unknown way $way (ours, nixpkgs)" ;;
  esac
  report ""
  if [ "$step_status" != finished ]; then
    report "== $way: .config ${step_status}"
    continue
  fi
  report "== $way: .config ${step_status}: wall ${step_wall} s, CPU ${step_cpu} s, $step_load"
  kept=0
  while IFS= read -r line; do grep -qx "$line" "$build/.config" && kept=$((kept + 1)); done < <(grep '^CONFIG_.*=y$' "$work/fragment.config")
  report "   symbols: $(symbols "$build"); $kept of the fragment's $wanted =y kept"
  total_before=$(to_compile "$build" "${targets[@]}")
  run_step "$way-build" make -C "$src" O="$build" ARCH="$arch" -j"$jobs" KBUILD_BUILD_VERSION=1-NixOS "${targets[@]}"
  done_now=$(compiled "$build")
  if [ "$step_status" = finished ]; then left=0; else left=$(to_compile "$build" "${targets[@]}"); fi
  report "== $way: make ${targets[*]} ${step_status}: wall ${step_wall} s, CPU ${step_cpu} s, $step_load"
  report "   compilations: $done_now done, $left left (make -n -k before the build listed $total_before)"
  [ "$way" = nixpkgs ] && report "   modules' .mod.o compiled: $(compiled_mod_o "$build"); modules linked: $(find "$build" -name '*.ko' | wc -l)"
  [ "$done_now" -gt 0 ] && report "   CPU per compilation: $(awk -v c="$step_cpu" -v n="$done_now" 'BEGIN { printf "%.2f s", c / n }')"
  if [ -f "$build/arch/x86/boot/bzImage" ]; then
    report "   bzImage $(stat -c %s "$build/arch/x86/boot/bzImage") bytes, vmlinux $(stat -c %s "$build/vmlinux") bytes"
  fi
  if [ "$way" = nixpkgs ]; then
    report "   modules (.ko, not stripped): $(find "$build" -name '*.ko' -printf '%s\n' | awk '{ s += $1 } END { printf "%d bytes", s }')"
  fi
  build_cpu[$way]=$step_cpu build_wall[$way]=$step_wall build_done[$way]=$done_now build_total[$way]=$((done_now + left))
  if [ "$step_status" != finished ]; then build_done[$way]=""; fi
  # The build tree is GBs; the next way needs the room.
  rm -rf "$build"
done

report ""
if [ -n "${build_done[ours]:-}" ] && [ -n "${build_done[nixpkgs]:-}" ]; then
  report "nixpkgs/ours: wall $(awk -v a="${build_wall[nixpkgs]}" -v b="${build_wall[ours]}" 'BEGIN { printf "%.1f", a / b }')x, CPU $(awk -v a="${build_cpu[nixpkgs]}" -v b="${build_cpu[ours]}" 'BEGIN { printf "%.1f", a / b }')x, compilations $(awk -v a="${build_done[nixpkgs]}" -v b="${build_done[ours]}" 'BEGIN { printf "%.1f", a / b }')x"
elif [ -n "${build_total[ours]:-}" ] && [ -n "${build_total[nixpkgs]:-}" ]; then
  report "nixpkgs/ours: compilations to do $(awk -v a="${build_total[nixpkgs]}" -v b="${build_total[ours]}" 'BEGIN { printf "%.1f", a / b }')x; not both builds finished, so no time ratio"
fi
report "ended $(date -u '+%Y-%m-%d %H:%M') UTC; report in $results"
