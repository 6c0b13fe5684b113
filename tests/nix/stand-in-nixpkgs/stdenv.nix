# The stand-in's stdenv.mkDerivation: a plain `derivation` run by builder.sh with Debian's bash
# and Debian's programs. It supports what the project's Nix layer and this stand-in use:
# name or pname + version, nativeBuildInputs, buildCommand or build/check/install phases,
# passthru, meta, __structuredAttrs, and overrideAttrs with a function of the old attributes
# (nixpkgs' also accepts `finalAttrs: prev:`; the layer does not use that form).
{ system }:
let
  # Debian's programs, in the sandbox through extra-sandbox-paths (/usr /bin /lib /lib64 /etc).
  debianPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

  mkDerivation = attrs:
    let
      drv = derivation (removeAttrs attrs [ "passthru" "meta" ] // {
        name = attrs.name or "${attrs.pname}-${attrs.version}";
        inherit system;
        builder = "/bin/bash";
        args = [ ./builder.sh ];
        nativeBuildInputs = attrs.nativeBuildInputs or [ ];
        standInPath = debianPath;
      });
    in
    drv // (attrs.passthru or { }) // {
      meta = attrs.meta or { };
      passthru = attrs.passthru or { };
      overrideAttrs = f: mkDerivation (attrs // f attrs);
    };
in
{
  inherit mkDerivation;
  runCommand = name: env: buildCommand: mkDerivation (env // { inherit name buildCommand; });
}
