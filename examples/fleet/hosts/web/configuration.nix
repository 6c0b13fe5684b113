# The web servers' system (web1 and web2 install the same one). The installer's layout (ESP
# labelled ESP, ext4 root labelled nixos) and the EFI boot loader come from nixos-pxe's target
# module; what is here is the hosts' own configuration.
{
  config,
  pkgs,
  ...
}: {
  networking.hostName = ""; # from DHCP: both hosts share this system
  services.nginx.enable = true;
  networking.firewall.allowedTCPPorts = [80];
  services.openssh.enable = true;
  users.users.root.openssh.authorizedKeys.keys = [];
  system.stateVersion = "25.05";
}
