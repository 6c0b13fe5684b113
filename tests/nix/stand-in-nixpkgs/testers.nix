# Stand-in for pkgs.testers.runNixOSTest (pkgs/build-support/testers/default.nix -> nixos/lib's
# runTest): no VM runs here. It evaluates every node as a NixOS configuration (the stand-in
# nixosSystem; its assertions must hold, as NixOS's toplevel checks them), and its build
#   - parses the test script as Python (the real driver runs it, after type-checking it),
#   - checks that every store path the nodes' settings and the script name exists once the
#     derivations they come from are built (e.g. ${installer.bootLoader}/bootx64.efi),
# and keeps the nodes' settings as JSON and the script in $out.
{
  lib,
  impl,
  nixosSystem,
}: test: let
  testValue =
    if builtins.isFunction test
    then test {}
    else test;
  testScript =
    if builtins.isFunction testValue.testScript
    then testValue.testScript {nodes = {};}
    else testValue.testScript;
  # A node's settings as JSON can hold them: a derivation stays (toJSON writes its path), a
  # function and a whole evaluated configuration inside a value (lib.mkFleet's `targets`, held by
  # services.nixos-pxe.fleet) become a word.
  jsonable = value:
    if lib.isDerivation value
    then value
    else if builtins.isFunction value
    then "<function>"
    else if builtins.isAttrs value && (value._type or null) == "configuration"
    then "<configuration>"
    else if builtins.isAttrs value
    then lib.mapAttrs (_: jsonable) value
    else if builtins.isList value
    then map jsonable value
    else value;
  # Every test node imports nixos/modules/virtualisation/qemu-vm.nix, which gives GRUB (on by
  # default) a device: boot.loader.grub.device = mkVMOverride (if useEFIBoot then "nodev" else
  # bootLoaderDevice) (read at f7072a9e). The stand-in's GRUB asserts a device, as NixOS's does,
  # so a node evaluated without this would fail where the real driver's node does not;
  # "/dev/vda" stands in for bootLoaderDevice (the node's disk, never installed to here).
  qemuVm = {config, ...}: {
    boot.loader.grub.device = lib.mkOverride 10 (
      if config.virtualisation.useEFIBoot or false
      then "nodev"
      else "/dev/vda"
    );
  };
  nodeSettings =
    lib.mapAttrs
    (name: node: let
      system = nixosSystem {modules = [node qemuVm {networking.hostName = lib.mkDefault name;}];};
    in
      # The node's assertions hold (NixOS's toplevel checks them), then its settings.
      builtins.seq system.config.system.build.toplevel.drvPath
      (jsonable (removeAttrs system.config ["_module" "system" "assertions" "warnings"])))
    testValue.nodes;
in
  assert lib.assertMsg (builtins.isInt (testValue.globalTimeout or 3600)) "stand-in runNixOSTest: globalTimeout must be an integer (seconds)";
    impl.runCommand "vm-test-run-${testValue.name}-stand-in"
    {
      nodes = builtins.toJSON nodeSettings;
      inherit testScript;
    } ''
      mkdir "$out"
      printf '%s' "$nodes" > "$out/nodes.json"
      printf '%s' "$testScript" > "$out/test-script.py"
      python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$out/test-script.py"
      missing=0
      for path in $(grep -ohE '/nix/store/[0-9a-z]{32}-[A-Za-z0-9+._?=-]+(/[A-Za-z0-9+._?=-]+)*' "$out/nodes.json" "$out/test-script.py" | sort -u); do
        if [ ! -e "$path" ]; then
          echo "stand-in runNixOSTest: $path is named by the test but does not exist" >&2
          missing=1
        fi
      done
      [ "$missing" = 0 ]
    ''
