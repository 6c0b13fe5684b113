# The server configurations for an installer (dhcpd.conf, kea-dhcp4.json, dnsmasq.conf, exports,
# ganesha.conf, grub.cfg, cmdline), all rendered by the tool from the same JSON.
{
  pkgs,
  tool,
  configJSON,
}:
pkgs.runCommand "nixos-pxe-server-configs" {nativeBuildInputs = [tool];} ''
  nixos-pxe render --config ${configJSON} --out $out
''
