# The stand-in's versions of nixpkgs' build helpers the project's Nix layer calls, each doing what
# the real one's interface promises (interfaces.nix names the file each was checked against).
{
  lib,
  stdenv,
  machine,
}: {
  # pkgs/build-support/closure-info.nix: { rootPaths } -> $out/store-paths (every path of the
  # closure) and $out/registration (`nix-store --load-db` input: path, NAR hash, NAR size,
  # deriver, references). From exportReferencesGraph with __structuredAttrs, read with Debian's jq.
  closureInfo = {rootPaths}:
    stdenv.mkDerivation {
      name = "closure-info";
      __structuredAttrs = true;
      exportReferencesGraph.closure = rootPaths;
      buildCommand = ''
        out=''${outputs[out]}
        mkdir "$out"
        jq -r '.closure | map([.path, .narHash, .narSize, "", (.references | length)] + .references) | add | map("\(.)\n") | add' < .attrs.json | head -n -1 > "$out/registration"
        jq -r '.closure[].path' < .attrs.json | sort > "$out/store-paths"
      '';
    };

  # pkgs/build-support/buildenv/default.nix: a tree of symlinks to `paths`, limited to
  # `pathsToLink`; two packages with the same file are a collision (an error), as with
  # ignoreCollisions = false, unless both link to the same file.
  buildEnv = {
    name,
    paths,
    pathsToLink ? ["/"],
    ...
  }:
    stdenv.runCommand name {
      inherit paths pathsToLink;
      passthru = {inherit paths;};
    } ''
      mkdir -p "$out"
      for package in $paths; do
        for dir in $pathsToLink; do
          [ -d "$package$dir" ] || continue
          mkdir -p "$out$dir"
          for file in "$package$dir"/*; do
            target="$out$dir/$(basename "$file")"
            if [ -e "$target" ] || [ -L "$target" ]; then
              if [ "$(readlink -f "$target")" != "$(readlink -f "$file")" ]; then
                echo "stand-in buildEnv: collision between $(readlink "$target") and $file" >&2
                exit 1
              fi
              continue
            fi
            ln -s "$file" "$target"
          done
        done
      done
    '';

  # pkgs/build-support/trivial-builders/default.nix
  writeText = name: text: stdenv.runCommand name {inherit text;} ''printf '%s' "$text" > "$out"'';

  # pkgs/build-support/mkshell/default.nix: a derivation that records its inputs.
  mkShell = {
    name ? "nix-shell",
    packages ? [],
    nativeBuildInputs ? [],
    ...
  }:
    stdenv.mkDerivation {
      inherit name;
      nativeBuildInputs = packages ++ nativeBuildInputs;
      buildCommand = ''echo "$nativeBuildInputs" > "$out"'';
    };

  # pkgs/build-support/rust/build-rust-package/default.nix. The stand-in does not compile: its
  # output is the binary `cargo build` made for this test run of the crate `pname` names (the
  # `machine` input holds nixos-pxe, and nix-format, which tests/common/nix_format.rs builds from
  # nix-format/ with its lock file). It never forces `src`: nix/package.nix's src is a
  # lib.fileset.toSource value, which needs builtins.readFileType (Nix 2.14), and Debian's Nix is
  # 2.8; `src` stays an attribute of the result, as it is of nixpkgs' derivations. It reads
  # cargoLock.lockFile, as the real one does (importCargoLock), so a wrong path fails here too.
  rustPlatform.buildRustPackage = args:
    assert lib.assertMsg (builtins.pathExists args.cargoLock.lockFile)
    "stand-in buildRustPackage: cargoLock.lockFile ${toString args.cargoLock.lockFile} does not exist";
      stdenv.mkDerivation (removeAttrs args ["src" "cargoLock"]
        // {
          nativeBuildInputs = args.nativeBuildInputs or [];
          built = "${machine}/${args.pname}";
          passthru = (args.passthru or {}) // {inherit (args) src;};
          buildPhase = args.buildPhase or "";
          installPhase =
            args.installPhase
            or ''
              mkdir -p "$out/bin"
              cp "$built" "$out/bin/${args.pname}"
            '';
        });
}
