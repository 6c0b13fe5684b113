# The stand-in nixpkgs' builder (stdenv.nix): Debian's bash runs a derivation's script the way
# nixpkgs' stdenv does for what the project's Nix layer uses: `buildCommand` if set, otherwise
# the unpack of `src` (a tarball, or a directory holding the source's one top directory, copied
# and made writable as nixpkgs' unpackPhase does) with postPatch in it, buildPhase, checkPhase
# (when doCheck) and installPhase; the bin/ and sbin/ of nativeBuildInputs first on PATH, then
# Debian's own directories (reachable through extra-sandbox-paths).
set -euo pipefail
# __structuredAttrs: the attributes are in .attrs.sh instead of the environment.
if [ -e .attrs.sh ]; then
  # shellcheck disable=SC1091
  . ./.attrs.sh
fi
search=""
for input in ${nativeBuildInputs:-}; do
  for dir in bin sbin; do
    if [ -d "$input/$dir" ]; then search="$search$input/$dir:"; fi
  done
done
export PATH="$search$standInPath"
# nixpkgs' patchShebangs rewrites #! lines to store paths; Debian's interpreters are where the
# scripts name them, so there is nothing to rewrite here.
patchShebangs() { :; }
if [ -n "${buildCommand:-}" ]; then
  eval "$buildCommand"
else
  if [ -n "${src:-}" ]; then
    if [ -d "$src" ]; then cp -r "$src"/. .; chmod -R u+w .; else tar -xf "$src"; fi
    roots=(*/)
    [ "${#roots[@]}" -eq 1 ] || { echo "stand-in stdenv: $src unpacks to ${#roots[@]} directories, not one" >&2; exit 1; }
    cd "${roots[0]}"
    eval "${postPatch:-}"
  fi
  eval "${buildPhase:-}"
  if [ -n "${doCheck:-}" ]; then eval "${checkPhase:-}"; fi
  eval "${installPhase:-}"
fi
# The script's last command runs as a child of this bash, never as the sandbox's PID 1 (bash
# would exec a last simple command in its place).
:
