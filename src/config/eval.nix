# Evaluates a nixos-pxe configuration file without nixpkgs, for `nixos-pxe --source eval`.
# Called as `(import eval.nix) { file = ...; optionPaths = [ [ "a" "b" ] ... ]; }` (each option's
# path as segments; "<name>" stands for any member of an attribute set of submodules, as in
# fleet.hosts.<name>.macs). Returns a list of definitions { path, value, file, line, column },
# of the attribute sets walked into ({ kind = "set"; ... }: a fleet host that sets nothing still
# exists) and of unknown attributes under our roots; every path is a list of segments.
{
  file,
  optionPaths,
}: let
  roots = map builtins.head optionPaths;
  # Whether `path` is `pattern`'s first (length path) segments.
  startsLike = pattern: path:
    builtins.length pattern
    >= builtins.length path
    && builtins.all (i: let p = builtins.elemAt pattern i; in p == "<name>" || p == builtins.elemAt path i)
    (builtins.genList (i: i) (builtins.length path));
  isOption = path: builtins.any (o: builtins.length o == builtins.length path && startsLike o path) optionPaths;
  isPrefix = path: builtins.any (o: builtins.length o > builtins.length path && startsLike o path) optionPaths;

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
    if builtins.isFunction m
    then let
      formals = builtins.functionArgs m;
    in
      m (
        if formals == {}
        then moduleArgs
        else builtins.mapAttrs (n: _: moduleArgs.${n} or (stub n)) formals
      )
    else m;

  # A module is a path, a function or an attribute set; returns its own definitions and its imports.
  load = m: let
    value = call (
      if builtins.isPath m || builtins.isString m
      then import m
      else m
    );
    defs =
      if value ? config || value ? options
      then value.config or {}
      else value;
  in
    [defs] ++ builtins.concatMap load (value.imports or []);

  plain = v:
    if builtins.isPath v
    then toString v
    else if builtins.isList v
    then map plain v
    else if builtins.isAttrs v && v ? _type
    then throw "nixos-pxe --source eval: a value uses the module system (${v._type}, e.g. lib.mkDefault); write the value itself, or build through the flake"
    else v;

  position = name: set: let
    pos = builtins.unsafeGetAttrPos name set;
  in
    if pos == null
    then {
      file = null;
      line = 0;
      column = 0;
    }
    else pos;

  walk = prefix: set:
    builtins.concatMap
    (name: let
      path = prefix ++ [name];
      value = set.${name};
    in
      if isOption path
      then [
        ({
            kind = "definition";
            inherit path;
            value = plain value;
          }
          // position name set)
      ]
      else if isPrefix path && builtins.isAttrs value
      then
        [
          ({
              kind = "set";
              inherit path;
            }
            // position name set)
        ]
        ++ walk path value
      else [
        ({
            kind = "unknown";
            inherit path;
          }
          // position name set)
      ])
    (builtins.attrNames set);

  fromModule = defs:
    walk [] (builtins.intersectAttrs (builtins.listToAttrs (map (r: {
        name = r;
        value = null;
      })
      roots))
    defs);
in
  builtins.concatMap fromModule (load file)
