# The system image: the target's closure and its Nix database registration, from closureInfo
# (pkgs/build-support/closure-info.nix: { rootPaths } -> $out/store-paths, $out/registration),
# packed by the tool. closureInfo's output names every path, so they are all in this build's
# sandbox. Returns the derivation; its file is $out/system.tar.<extension of compression>.
{ pkgs, tool, toplevel, compression }:
let
  imageName = "system.tar.${{ zstd = "zst"; gzip = "gz"; xz = "xz"; }.${compression}}";
  closure = pkgs.closureInfo { rootPaths = [ toplevel ]; };
in
pkgs.runCommand "nixos-pxe-system-image" { nativeBuildInputs = [ tool ]; passthru = { inherit imageName; }; } ''
  echo ${toplevel} > system
  mkdir $out
  nixos-pxe pack --out $out/${imageName} --compression ${compression} \
    --store-paths ${closure}/store-paths \
    --file nixos-pxe/registration=${closure}/registration \
    --file nixos-pxe/system=system
''
