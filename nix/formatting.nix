# checks.<system>.formatting: `nixfmt --check` (nixpkgs' nixfmt, the RFC 166 style that `nix fmt`
# applies through nixfmt-tree) on every Nix file of the flake's source except those listed in
# nix/nixfmt-pending.txt. The list holds the files not yet formatted: nixfmt cannot run on the
# machines this project is developed on (nixpkgs cannot be fetched there), so no file was
# reformatted without seeing the formatter's result. A file leaves the list once `nix fmt` has
# formatted it where nixpkgs is; a new file is checked from the start. tests/flake.rs checks that
# the list names only Nix files of the repository.
{
  lib,
  pkgs,
  src,
}:
pkgs.runCommand "nixos-pxe-formatting" {nativeBuildInputs = [pkgs.nixfmt];} ''
  cd ${src}
  pending=$(grep -v '^#' nix/nixfmt-pending.txt | grep -v '^$' || true)
  checked=""
  for file in $(find . -name '*.nix' -type f | sed 's|^\./||' | sort); do
    if ! printf '%s\n' "$pending" | grep -qxF "$file"; then checked="$checked $file"; fi
  done
  if [ -n "$checked" ]; then
    nixfmt --check $checked
  fi
  echo "formatted:$checked" > $out
''
