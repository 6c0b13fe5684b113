# checks.<system>.formatting: every Nix file of the flake's source is in the style `nix fmt` writes
# (nix/formatter.nix). nix-format searches the whole source, so a new file is checked as soon as
# it is there; the output lists the files it checked. A file out of style fails the check with
# its name.
{
  runCommand,
  formatter,
  src,
}:
runCommand "nixos-pxe-formatting" {nativeBuildInputs = [formatter];} ''
  cd ${src}
  nix-format --check . > $out
''
