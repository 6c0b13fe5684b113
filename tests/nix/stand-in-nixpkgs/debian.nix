# Packages the stand-in provides from Debian's programs (in the sandbox through
# extra-sandbox-paths): $out/bin holds links to them, so a tree built from them (buildEnv, the NFS
# root) has the layout nixpkgs' would, but runs only where Debian's files are. Everything goes to
# bin/, sbin programs too: nixpkgs' stdenv moves sbin/ into bin/
# (pkgs/build-support/setup-hooks/move-sbin.sh), and dnsmasq installs to bin/ itself
# (pkgs/by-name/dn/dnsmasq/package.nix: BINDIR=$(out)/bin).
# And packages that cannot be built on this machine at all: their build fails, saying why.
{stdenv}: {
  fromDebian = name: programs:
    stdenv.runCommand "${name}-from-debian" {inherit programs;} ''
      for program in $programs; do
        if [ ! -x "$program" ]; then
          echo "stand-in nixpkgs: pkgs.${name} links Debian's $program, which is not installed (bash dev/install-deps.sh test)" >&2
          exit 1
        fi
        mkdir -p "$out/bin"
        ln -s "$program" "$out/bin/"
      done
    '';

  notBuildableHere = name: why:
    stdenv.runCommand "${name}-not-buildable-here" {} ''
      echo "stand-in nixpkgs: pkgs.${name} cannot be built on this machine: ${why}" >&2
      exit 1
    '';

  # Programs only NixOS has: scripts that say so when run.
  nixosOnly = name: programs:
    stdenv.runCommand "${name}-nixos-only" {inherit programs;} ''
      mkdir -p $out/bin
      for program in $programs; do
        printf '#!/bin/sh\necho "stand-in nixpkgs: %s is part of NixOS (pkgs.${name}) and not available here" >&2\nexit 1\n' "$program" > "$out/bin/$program"
        chmod +x "$out/bin/$program"
      done
    '';
}
