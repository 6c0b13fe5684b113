# The system the example installs. The installer's layout (ESP labelled ESP, ext4 root
# labelled nixos) and the EFI boot loader come from nixos-pxe's target module; what is here
# is the host's own configuration.
{
  config,
  pkgs,
  ...
}: {
  networking.hostName = "pxe-example";
  services.openssh.enable = true;
  users.users.root.openssh.authorizedKeys.keys = [];
  system.stateVersion = "25.05";
}
