# The stand-in's stdenv.mkDerivation: a plain `derivation` run by builder.sh with Debian's bash
# and Debian's programs. It supports what the project's Nix layer and this stand-in use:
# name or pname + version, nativeBuildInputs, buildCommand or src (unpacked) with postPatch and
# build/check/install phases, passthru, meta, __structuredAttrs, and overrideAttrs with a function of the old attributes
# (nixpkgs' also accepts `finalAttrs: prev:`; the layer does not use that form).
{system}: let
  # Debian's programs, in the sandbox through extra-sandbox-paths (/usr /bin /lib /lib64 /etc).
  debianPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

  mkDerivation = attrs: let
    drv = derivation (removeAttrs attrs ["passthru" "meta"]
      // {
        name = attrs.name or "${attrs.pname}-${attrs.version}";
        inherit system;
        builder = "/bin/bash";
        args = [./builder.sh];
        nativeBuildInputs = attrs.nativeBuildInputs or [];
        standInPath = debianPath;
      });
  in
    drv
    // (attrs.passthru or {})
    // {
      meta = attrs.meta or {};
      passthru = attrs.passthru or {};
      overrideAttrs = f: mkDerivation (attrs // f attrs);
    };
in {
  inherit mkDerivation;
  # What nix/kernel.nix reads of stdenv: Kconfig's ARCH= and the compiler's prefix (empty for a
  # native compiler; the stand-in's is Debian's gcc, on PATH).
  hostPlatform.system = system;
  hostPlatform.linuxArch =
    if system == "x86_64-linux"
    then "x86_64"
    else if system == "aarch64-linux"
    then "arm64"
    else throw "stand-in stdenv: no linuxArch for ${system}";
  cc.targetPrefix = "";
  runCommand = name: env: buildCommand: mkDerivation (env // {inherit name buildCommand;});
}
