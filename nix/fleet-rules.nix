# The fleet's rules at Nix evaluation, and its JSON form. Part of nix/module.nix (imported there);
# the same rules as the tool's (src/config/fleet_rules.rs), which checks them again, with file,
# line and column, when it reads a configuration: here they fail the evaluation early, each
# message naming the option and the files that define it (the module system knows files, not
# lines). lib.mkInstaller and lib.mkFleet throw the failed ones; nix/nixos-module.nix makes them
# NixOS assertions.
#   - a host's name is a DNS label;
#   - a host has at least one MAC, each a MAC address in a usual spelling, each in one host only;
#   - a host has exactly one target: target.directory, target.flake, or (lib.mkFleet only) a
#     nixosConfigurations entry in its `hosts` argument (nixosPxe.fleetSystems);
#   - a fleet boots by the firmware's boot NIC: both interface options "auto";
#   - the single installer's customInstaller.target is not used by a fleet;
#   - a host's merged networking options keep customInstaller's rule;
#   - a host with a BMC address has an account and a password file (outside the Nix store), and a
#     Redfish BMC a certificate or fingerprint to be checked against; IPMI has no UEFI HTTP boot.
# A configuration without fleet.hosts has no fleet: no rule here applies and the JSON has no
# `fleet` (the single installer's config.json is as it was).
{
  lib,
  config,
  options,
  ...
}: let
  cfg = config;
  hosts = cfg.fleet.hosts;
  isFleet = hosts != {};
  separators = [":" "-" "."];
  hexDigits = lib.stringToCharacters "0123456789abcdef";

  # A MAC address in any usual spelling, as src/config/fleet.rs parses it: { mac } normalised
  # (lower case, colons) or { why } (the tool's wording).
  parseMac = text: let
    lower = lib.toLower text;
    chars = lib.stringToCharacters text;
    stray = lib.findFirst (c: !(lib.elem (lib.toLower c) hexDigits) && !(lib.elem c separators)) null chars;
    used = lib.unique (lib.filter (c: lib.elem c separators) chars);
    twelve = digits: map (i: builtins.substring (2 * i) 2 digits) (lib.range 0 5);
    pad = group:
      if builtins.stringLength group == 1
      then "0${group}"
      else group;
    bytes =
      if text == ""
      then {why = "it is empty";}
      else if stray != null
      then {why = "'${stray}' is not a hexadecimal digit or separator";}
      else if lib.length used > 1
      then {why = "it mixes separators";}
      else if used == []
      then
        (
          if builtins.stringLength text == 12
          then {ok = twelve lower;}
          else {why = "it has ${toString (builtins.stringLength text)} digits without separators, not 12";}
        )
      else if lib.head used == "."
      then
        (let
          groups = lib.splitString "." lower;
        in
          if lib.length groups != 3 || lib.any (g: builtins.stringLength g != 4) groups
          then {why = "the dotted form is three groups of four digits";}
          else {ok = twelve (lib.concatStrings groups);})
      else
        (let
          groups = lib.splitString (lib.head used) lower;
          bad = lib.findFirst (g: g == "" || builtins.stringLength g > 2) null groups;
        in
          if lib.length groups != 6
          then {why = "it has ${toString (lib.length groups)} groups, not 6";}
          else if bad != null
          then {why = "the group \"${bad}\" is not one or two digits";}
          else {ok = map pad groups;});
    # The first byte's low bit (the second digit odd) marks a group address.
    multicast = b: lib.elem (builtins.substring 1 1 (lib.head b)) ["1" "3" "5" "7" "9" "b" "d" "f"];
  in
    if bytes ? why
    then {inherit (bytes) why;}
    else if lib.all (b: b == "00") bytes.ok
    then {why = "it is all zeros";}
    else if multicast bytes.ok
    then {why = "it is a multicast address (the first byte is odd), which no NIC has as its own";}
    else {mac = lib.concatStringsSep ":" bytes.ok;};

  # `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`
  isDnsLabel = name: builtins.match "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?" name != null;

  # The files that define fleet.hosts.NAME (and, with `attr`, its attr): the module system keeps
  # files, not lines, of each definition of fleet.hosts.
  definedIn = name: attr: let
    defs = lib.filter (d: builtins.isAttrs d.value && d.value ? ${name}) options.fleet.hosts.definitionsWithLocations;
    own = lib.filter (d: attr == null || (builtins.isAttrs d.value.${name} && d.value.${name} ? ${attr})) defs;
    files = lib.unique (map (d: toString d.file) (
      if own != []
      then own
      else defs
    ));
  in
    if files == []
    then ""
    else " (defined in ${lib.concatStringsSep ", " files})";

  option = name: rest: "fleet.hosts.${lib.strings.escapeNixIdentifier name}${lib.optionalString (rest != "") ".${rest}"}";

  parsed = lib.mapAttrs (_: host: map (text: {inherit text;} // parseMac text) host.macs) hosts;
  # Every (MAC, host) pair that parsed, in host order.
  owners = lib.concatLists (lib.mapAttrsToList (name: macs:
    map (m: {
      inherit name;
      inherit (m) mac;
    }) (lib.filter (m: m ? mac) macs))
  parsed);

  hostChecks = name: host: let
    macs = parsed.${name};
    good = lib.filter (m: m ? mac) macs;
    repeated = lib.filter (mac: lib.count (m: m.mac == mac) good > 1) (lib.unique (map (m: m.mac) good));
    others = mac: lib.unique (map (o: o.name) (lib.filter (o: o.mac == mac && o.name != name) owners));
    # Reported once, at the host that comes later.
    shared = lib.filter (mac: lib.any (other: other < name) (others mac)) (lib.unique (map (m: m.mac) good));
    targets = lib.filter (x: x) [(host.target.directory != null) (host.target.flake != null) (lib.elem name cfg.nixosPxe.fleetSystems)];
    networking = host.customInstaller.networking;
    bmc = host.bmc;
  in
    [
      {
        assertion = isDnsLabel name;
        message = "nixos-pxe: ${option name ""}: the host name \"${name}\" is not a DNS label: a-z, 0-9 and '-', 1 to 63 characters, not starting or ending with '-'${definedIn name null}";
      }
      {
        assertion = host.macs != [];
        message = "nixos-pxe: ${option name "macs"}: the host ${name} has no MAC address; a host is recognised by the MAC of the NIC its firmware boots from: set ${option name "macs"} = [ \"52:54:00:ab:cd:01\" ];${definedIn name null}";
      }
      {
        assertion = lib.length targets == 1;
        message =
          if targets == []
          then "nixos-pxe: ${option name "target"}: the host ${name} has no target: nothing says which system to install on it; set ${option name "target.directory"} or ${option name "target.flake"}, or pass hosts.${name} = <a nixosConfigurations entry> to lib.mkFleet${definedIn name null}"
          else "nixos-pxe: ${option name "target"}: the host ${name} has ${toString (lib.length targets)} targets (${lib.concatStringsSep ", " (lib.optional (host.target.directory != null) "target.directory" ++ lib.optional (host.target.flake != null) "target.flake" ++ lib.optional (lib.elem name cfg.nixosPxe.fleetSystems) "lib.mkFleet's hosts.${name}")}); its system must be exactly one of them${definedIn name "target"}";
      }
      {
        assertion = networking.useDHCP || networking.staticInterfaceFromDHCP != null;
        message = "nixos-pxe: ${option name "customInstaller.networking.useDHCP"}: useDHCP is false, so ${option name "customInstaller.networking.staticInterfaceFromDHCP"} must name the interface for the static address${definedIn name "customInstaller"}";
      }
    ]
    ++ lib.optionals (bmc.address != null) [
      {
        assertion = bmc.user != null && bmc.passwordFile != null;
        message = "nixos-pxe: ${option name "bmc"}: ${name}'s BMC needs an account and the file holding its password: set fleet.bmc.user and fleet.bmc.passwordFile (or ${option name "bmc.user"} and ${option name "bmc.passwordFile"})${definedIn name "bmc"}";
      }
      {
        assertion = bmc.passwordFile == null || !(lib.hasPrefix "${builtins.storeDir}/" bmc.passwordFile);
        message = "nixos-pxe: ${option name "bmc.passwordFile"}: \"${toString bmc.passwordFile}\" is in the Nix store, which every user on the machine can read; keep the password in a file outside it and give its path as a string${definedIn name "bmc"}";
      }
      {
        assertion = bmc.protocol != "redfish" || bmc.certificate != null || bmc.fingerprint != null;
        message = "nixos-pxe: ${option name "bmc.fingerprint"}: ${name}'s Redfish BMC is reached over HTTPS, and nothing says which certificate is its own: set its certificate (or the authority that signed it, fleet.bmc.certificate) or its certificate's fingerprint${definedIn name "bmc"}";
      }
      {
        assertion = bmc.protocol != "ipmi" || bmc.bootTarget != "uefi-http";
        message = "nixos-pxe: ${option name "bmc.bootTarget"}: IPMI cannot ask for a UEFI HTTP boot (${name}'s BMC speaks IPMI); only \"pxe\"${definedIn name "bmc"}";
      }
    ]
    ++ map (m: {
      assertion = false;
      message = "nixos-pxe: ${option name "macs"}: \"${m.text}\" is not a MAC address: ${m.why}; expected six bytes in hexadecimal, like 52:54:00:ab:cd:01, 52-54-00-ab-cd-01, 5254.00ab.cd01 or 525400abcd01${definedIn name "macs"}";
    }) (lib.filter (m: m ? why) macs)
    ++ map (mac: {
      assertion = false;
      message = "nixos-pxe: ${option name "macs"}: ${mac} is listed more than once for ${name}${definedIn name "macs"}";
    })
    repeated
    ++ map (mac: {
      assertion = false;
      message = "nixos-pxe: ${option name "macs"}: ${mac} is listed for ${name} and for ${lib.concatStringsSep ", " (others mac)}; a MAC belongs to one host: remove it from all but one${definedIn name "macs"}";
    })
    shared;

  # A host's customInstaller values that differ from the top-level ones (the JSON form keeps only
  # the overrides; the tool merges them over the top level, src/config/fleet.rs).
  overrides = host: let
    top = cfg.customInstaller;
    own = host.customInstaller;
    differing = lib.filterAttrs (key: value: key == "networking" || value != top.${key}) own;
    networking = lib.filterAttrs (key: value: value != top.networking.${key}) own.networking;
  in
    removeAttrs differing ["networking"] // lib.optionalAttrs (networking != {}) {inherit networking;};

  # A certificate file goes into the store (it is public), so that the boot server has it.
  certificateJSON = c:
    if c == null
    then null
    else "${c}";

  # A host's BMC settings as the JSON form keeps them: its address, fingerprint and system id,
  # and what differs from fleet.bmc (src/config/bmc.rs merges them over it).
  bmcOverrides = host: let
    top = cfg.fleet.bmc;
    own = host.bmc;
    fromTop = lib.filterAttrs (key: value: value != top.${key}) (removeAttrs own ["address" "fingerprint" "systemId"]);
    fixed = lib.filterAttrs (_: value: value != null) {inherit (own) address fingerprint systemId;};
  in
    fixed // fromTop // lib.optionalAttrs (fromTop ? certificate) {certificate = certificateJSON own.certificate;};

  hostJSON = name: host:
    {
      macs = map (m: m.mac or m.text) parsed.${name};
      inherit (host) generation;
      target = {
        directory =
          if host.target.directory == null
          then null
          else toString host.target.directory;
        inherit (host.target) flake;
      };
      customInstaller = overrides host;
    }
    // lib.optionalAttrs (bmcOverrides host != {}) {bmc = bmcOverrides host;};
in {
  config.nixosPxe = lib.mkIf (isFleet || cfg.nixosPxe.fleetSystems != []) {
    checks =
      [
        {
          assertion = cfg.nfsroot.bootLoader.efinetDHCPInterface == "auto";
          message = "nixos-pxe: nfsroot.bootLoader.efinetDHCPInterface: a fleet needs \"auto\", not \"${cfg.nfsroot.bootLoader.efinetDHCPInterface}\": GRUB fetches each machine's configuration by the MAC of the NIC the firmware booted from, which it knows from the firmware's lease only; set nfsroot.bootLoader.efinetDHCPInterface = \"auto\";";
        }
        {
          assertion = cfg.nfsroot.bootLoader.linuxPnPInterface == "auto";
          message = "nixos-pxe: nfsroot.bootLoader.linuxPnPInterface: a fleet needs \"auto\", not \"${cfg.nfsroot.bootLoader.linuxPnPInterface}\": the kernel and the installer must use the NIC GRUB booted from, whose MAC travels on the command line (nixos-pxe.mac=); set nfsroot.bootLoader.linuxPnPInterface = \"auto\";";
        }
        {
          assertion = cfg.customInstaller.target.directory == null && cfg.customInstaller.target.flake == null;
          message = "nixos-pxe: customInstaller.target: a fleet installs each host's own target; the single installer's target is not used: move it to fleet.hosts.<name>.target of the host it belongs to";
        }
      ]
      ++ map (name: {
        assertion = hosts ? ${name};
        message = "nixos-pxe: lib.mkFleet's hosts.${name} is not a host of the fleet: define fleet.hosts.${lib.strings.escapeNixIdentifier name}.macs (the host is recognised by its MACs), or remove hosts.${name}";
      })
      cfg.nixosPxe.fleetSystems
      ++ lib.concatLists (lib.mapAttrsToList hostChecks hosts);

    configValue = lib.mkIf isFleet {
      fleet = {
        inherit (cfg.fleet) maxAttempts unknownHosts trustBootNetwork;
        bmc = cfg.fleet.bmc // {certificate = certificateJSON cfg.fleet.bmc.certificate;};
        hosts = lib.mapAttrs hostJSON hosts;
      };
    };
  };
}
