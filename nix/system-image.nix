# The system image: the target systems' closure and its Nix database registration, from
# closureInfo (pkgs/build-support/closure-info.nix: { rootPaths } -> $out/store-paths,
# $out/registration), packed by the tool. closureInfo's output names every path, so they are all
# in this build's sandbox. `toplevels`: the system for each layout the image is built for
# ({ uefi = ...; } or, for customInstaller.firmware = "auto", { uefi = ...; bios = ...; }); each
# is named by a file the installer reads (src/install/firmware.rs, system_file): nixos-pxe/system
# in an image of one system, nixos-pxe/system.<layout> in one of several. Returns the derivation;
# its file is $out/system.tar.<extension of compression>.
{
  lib,
  pkgs,
  tool,
  toplevels,
  compression,
}: let
  imageName = "system.tar.${{
      zstd = "zst";
      gzip = "gz";
      xz = "xz";
    }
    .${compression}}";
  closure = pkgs.closureInfo {rootPaths = lib.attrValues toplevels;};
  fileOf = layout:
    if lib.length (lib.attrNames toplevels) == 1
    then "system"
    else "system.${layout}";
  names =
    lib.mapAttrsToList (layout: toplevel: {
      file = fileOf layout;
      inherit toplevel;
    })
    toplevels;
in
  pkgs.runCommand "nixos-pxe-system-image" {
    nativeBuildInputs = [tool];
    passthru = {inherit imageName;};
  } ''
    ${lib.concatMapStrings (s: "echo ${s.toplevel} > ${s.file}\n") names}
    mkdir $out
    nixos-pxe pack --out $out/${imageName} --compression ${compression} \
      --store-paths ${closure}/store-paths \
      --file nixos-pxe/registration=${closure}/registration \
      ${lib.concatMapStringsSep " " (s: "--file nixos-pxe/${s.file}=${s.file}") names}
  ''
