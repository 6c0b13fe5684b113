# Added to every fleet host's system (lib.mkFleet): on the boots after an install, a oneshot unit
# reports `booted` to the boot server with the running system's store path (nix/boot-report.sh),
# once the network is online; serve then counts the install as confirmed. It runs only while the
# installer's state file is there (the installer writes it, 0600, with the attempt's token).
#
# NixOS interfaces, read in nixpkgs (NixOS/nixpkgs nixos/lib/systemd-unit-options.nix at
# 01f31c2ee7d045a337dff0f858c0ed61dd0f4ddb): systemd.services.<name>.description, wantedBy,
# wants, after, unitConfig, serviceConfig, path, script (run by bash with `set -e`),
# restartIfChanged. network-online.target both wanted and ordered after: ordering alone does not
# pull it in, and NixOS's systemd.nix warns when a unit is ordered after it without wanting it.
{pkgs, ...}: {
  systemd.services.nixos-pxe-boot-report = {
    description = "Report this system's boot to the nixos-pxe boot server";
    wantedBy = ["multi-user.target"];
    wants = ["network-online.target"];
    after = ["network-online.target"];
    unitConfig.ConditionPathExists = "/var/lib/nixos-pxe/boot-report.json";
    path = [pkgs.coreutils pkgs.curl pkgs.jq];
    serviceConfig.Type = "oneshot";
    # A switch-to-configuration does not report again: only a boot does.
    restartIfChanged = false;
    script = builtins.readFile ./boot-report.sh;
  };
}
