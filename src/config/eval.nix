# Evaluates a nixos-pxe configuration file without nixpkgs, for `nixos-pxe --source eval`.
# Called as `(import eval.nix) { file = ...; optionPaths = [ ... ]; }`; returns a list of
# definitions { path, value, file, line, column } and of unknown attributes under our roots.
{ file, optionPaths }:
let
  roots = [ "nfsroot" "customInstaller" "bootServer" ];
  isOption = path: builtins.elem path optionPaths;
  isPrefix = path: builtins.any (o: builtins.substring 0 (builtins.stringLength path + 1) o == path + ".") optionPaths;

  # Module arguments: present, but a clear error when used, since there is no nixpkgs here.
  stub = name: throw "nixos-pxe --source eval: the configuration uses the module argument `${name}`, which is not available without nixpkgs; write that value literally, or build through the flake (nix build .#bootLoader)";
  moduleArgs = {
    config = stub "config";
    options = stub "options";
    lib = stub "lib";
    pkgs = stub "pkgs";
    modulesPath = stub "modulesPath";
  };

  call = m:
    if builtins.isFunction m then
      let formals = builtins.functionArgs m;
      in m (if formals == { } then moduleArgs else builtins.mapAttrs (n: _: moduleArgs.${n} or (stub n)) formals)
    else m;

  # A module is a path, a function or an attribute set; returns its own definitions and its imports.
  load = m:
    let
      value = call (if builtins.isPath m || builtins.isString m then import m else m);
      defs = if value ? config || value ? options then value.config or { } else value;
    in
    [ defs ] ++ builtins.concatMap load (value.imports or [ ]);

  plain = v:
    if builtins.isPath v then toString v
    else if builtins.isList v then map plain v
    else if builtins.isAttrs v && v ? _type then throw "nixos-pxe --source eval: a value uses the module system (${v._type}, e.g. lib.mkDefault); write the value itself, or build through the flake"
    else v;

  position = name: set:
    let pos = builtins.unsafeGetAttrPos name set;
    in if pos == null then { file = null; line = 0; column = 0; } else pos;

  walk = prefix: set:
    builtins.concatMap
      (name:
        let
          path = if prefix == "" then name else "${prefix}.${name}";
          value = set.${name};
        in
        if isOption path then [ ({ kind = "definition"; inherit path; value = plain value; } // position name set) ]
        else if isPrefix path && builtins.isAttrs value then walk path value
        else [ ({ kind = "unknown"; inherit path; } // position name set) ])
      (builtins.attrNames set);

  fromModule = defs: walk "" (builtins.intersectAttrs (builtins.listToAttrs (map (r: { name = r; value = null; }) roots)) defs);
in
builtins.concatMap fromModule (load file)
