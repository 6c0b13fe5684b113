//! nix/module.nix must declare exactly the options of src/schema.rs, with the same types and
//! defaults: the Nix side and the tool read one schema. Parsed with rnix, so no Nix is needed.
//! An attribute set of submodules (`fleet.hosts = mkOption { type = types.attrsOf
//! (types.submodule { options = ...; }); }`) is the schema's `<name>` segment; a default that is
//! the top-level option's value (`default = cfg.customInstaller.wipe;`) is its `Default::Inherit`.

use nixos_pxe_installer::schema::{self, Default, NAME, OPTIONS};
use rnix::ast::{self, HasEntry};
use rowan::ast::AstNode;
use serde_json::Value;
use std::collections::BTreeMap;

const MODULE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/nix/module.nix");

/// An option found in the module: its type expression as text and its default as a value.
struct Declared {
    ty: String,
    default: Result<DefaultValue, String>,
    description: Result<Value, String>,
}

/// A default as the module writes it: a literal, or another option's value (`cfg.a.b`).
#[derive(Debug, PartialEq)]
enum DefaultValue {
    Literal(Value),
    Inherit(String),
}

/// The `mkOption` declarations under `options = { ... }` of a module's text, by dotted path.
fn module_options(text: &str) -> BTreeMap<String, Declared> {
    let parse = rnix::Root::parse(text);
    assert!(
        parse.errors().is_empty(),
        "nix/module.nix does not parse: {:?}",
        parse.errors()
    );
    let mut body = parse.tree().expr().expect("an expression");
    while let ast::Expr::Lambda(l) = body {
        body = l.body().expect("lambda body");
    }
    if let ast::Expr::LetIn(let_in) = body {
        body = let_in.body().expect("let body");
    }
    let ast::Expr::AttrSet(module) = body else {
        panic!("nix/module.nix is expected to be `{{ ... }}: [let ... in] {{ ... }}`")
    };
    let options = module
        .attrpath_values()
        .find(|e| path_of(e) == ["options"])
        .and_then(|e| e.value())
        .expect("the module has `options = { ... }`");
    let ast::Expr::AttrSet(options) = options else {
        panic!("`options` is an attribute set")
    };
    let mut found = BTreeMap::new();
    walk(&options, &mut Vec::new(), &mut found);
    found
}

fn path_of(e: &ast::AttrpathValue) -> Vec<String> {
    e.attrpath()
        .expect("attrpath")
        .attrs()
        .map(|a| a.syntax().text().to_string())
        .collect()
}

fn walk(set: &ast::AttrSet, prefix: &mut Vec<String>, found: &mut BTreeMap<String, Declared>) {
    for entry in set.attrpath_values() {
        let path = path_of(&entry);
        let depth = prefix.len();
        prefix.extend(path);
        match entry.value().expect("value") {
            ast::Expr::AttrSet(inner) => walk(&inner, prefix, found),
            ast::Expr::Apply(apply) if submodule_options(&apply).is_some() => {
                let (options, default) = submodule_options(&apply).expect("checked");
                let name = prefix.join(".");
                // `{ }` or `{}`, as a formatter writes it.
                assert_eq!(
                    default.map(|d| d.split_whitespace().collect::<String>()).as_deref(),
                    Some("{}"),
                    "{name}: an attribute set of submodules defaults to {{ }}"
                );
                prefix.push(NAME.to_string());
                walk(&options, prefix, found);
            }
            ast::Expr::Apply(apply)
                if apply
                    .lambda()
                    .is_some_and(|f| f.syntax().text() == "mkOption") =>
            {
                let Some(ast::Expr::AttrSet(args)) = apply.argument() else {
                    panic!("mkOption takes an attribute set")
                };
                let name = prefix.join(".");
                let field = |field: &str| {
                    args.attrpath_values()
                        .find(|e| path_of(e) == [field])
                        .and_then(|e| e.value())
                };
                let missing = |field: &str| -> ! { panic!("{name}: mkOption without `{field}`") };
                // A description must be there and say something (a string, not empty).
                match field("description") {
                    Some(ast::Expr::Str(s))
                        if !s
                            .syntax()
                            .text()
                            .to_string()
                            .trim_matches('"')
                            .trim()
                            .is_empty() => {}
                    Some(other) => panic!(
                        "{name}: description is not a non-empty string: {}",
                        other.syntax().text()
                    ),
                    None => missing("description"),
                }
                let ty = field("type")
                    .unwrap_or_else(|| missing("type"))
                    .syntax()
                    .text()
                    .to_string();
                let default = default_of(&field("default").unwrap_or_else(|| missing("default")));
                let description = value_of(&field("description").unwrap_or_else(|| missing("description")));
                found.insert(name, Declared { ty, default, description });
            }
            other => panic!("{}: unexpected {}", prefix.join("."), other.syntax().text()),
        }
        prefix.truncate(depth);
    }
}

/// For `mkOption { type = types.attrsOf (types.submodule { options = { ... }; }); default = ...; }`:
/// the submodule's options and the default's text.
fn submodule_options(apply: &ast::Apply) -> Option<(ast::AttrSet, Option<String>)> {
    if apply.lambda()?.syntax().text() != "mkOption" {
        return None;
    }
    let ast::Expr::AttrSet(args) = apply.argument()? else { return None };
    let field = |name: &str| args.attrpath_values().find(|e| path_of(e) == [name]).and_then(|e| e.value());
    let mut ty = field("type")?;
    while let ast::Expr::Paren(p) = ty {
        ty = p.expr()?;
    }
    let ast::Expr::Apply(attrs_of) = ty else { return None };
    if attrs_of.lambda()?.syntax().text() != "types.attrsOf" {
        return None;
    }
    let mut sub = attrs_of.argument()?;
    while let ast::Expr::Paren(p) = sub {
        sub = p.expr()?;
    }
    let ast::Expr::Apply(submodule) = sub else { return None };
    if submodule.lambda()?.syntax().text() != "types.submodule" {
        return None;
    }
    let ast::Expr::AttrSet(module) = submodule.argument()? else { return None };
    let options = module.attrpath_values().find(|e| path_of(e) == ["options"]).and_then(|e| e.value())?;
    let ast::Expr::AttrSet(options) = options else { return None };
    Some((options, field("default").map(|d| d.syntax().text().to_string())))
}

/// A default: `cfg.PATH` (the module's name for its own config) is another option's value,
/// anything else must be a literal.
fn default_of(expr: &ast::Expr) -> Result<DefaultValue, String> {
    if let ast::Expr::Select(select) = expr {
        let text = select.syntax().text().to_string();
        if let Some(path) = text.strip_prefix("cfg.") {
            return Ok(DefaultValue::Inherit(path.to_string()));
        }
    }
    value_of(expr).map(DefaultValue::Literal)
}

/// The value of a default written as a literal: a string, an integer, true/false/null, or a list
/// of those. Anything else is an error naming the expression, so it is reported, not guessed.
fn value_of(expr: &ast::Expr) -> Result<Value, String> {
    match expr {
        ast::Expr::Str(s) => {
            let mut text = String::new();
            for part in s.normalized_parts() {
                match part {
                    ast::InterpolPart::Literal(l) => text.push_str(&l),
                    ast::InterpolPart::Interpolation(_) => {
                        return Err(format!("an interpolated string: {}", s.syntax().text()));
                    }
                }
            }
            Ok(Value::String(text))
        }
        ast::Expr::Literal(l) => match l.kind() {
            ast::LiteralKind::Integer(i) => i
                .value()
                .map(Value::from)
                .map_err(|e| format!("{}: {e}", l.syntax().text())),
            _ => Err(format!(
                "a literal that is not an integer: {}",
                l.syntax().text()
            )),
        },
        ast::Expr::Ident(i) => match i.syntax().text().to_string().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            "null" => Ok(Value::Null),
            other => Err(format!("the name `{other}`")),
        },
        ast::Expr::List(list) => list
            .items()
            .map(|item| value_of(&item))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        ast::Expr::Paren(p) => value_of(&p.expr().ok_or("empty parentheses")?),
        other => Err(format!(
            "an expression that is not a literal: {}",
            other.syntax().text()
        )),
    }
}

/// Type expressions compared without parentheses and extra spaces (also inside list brackets:
/// `[ "a" "b" ]` and `["a" "b"]` are the same list).
fn normalize(ty: &str) -> String {
    ty.replace(['(', ')'], " ")
        .replace('[', " [ ")
        .replace(']', " ] ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every disagreement between a module's text and src/schema.rs, one line each, naming the option.
fn disagreements(text: &str) -> Vec<String> {
    let declared = module_options(text);
    let mut problems = Vec::new();
    // An option only the JSON form may set (a host's image, written by lib.mkFleet) is not one.
    for option in OPTIONS.iter().filter(|o| !o.json_only) {
        let Some(d) = declared.get(option.path) else {
            problems.push(format!(
                "{}: in src/schema.rs but not in nix/module.nix",
                option.path
            ));
            continue;
        };
        if normalize(&d.ty) != normalize(&option.nix_type()) {
            problems.push(format!(
                "{}: type is `{}` in nix/module.nix, `{}` in the schema",
                option.path,
                d.ty,
                option.nix_type()
            ));
        }
        let want = match option.default {
            Default::Inherit(path) => DefaultValue::Inherit(path.to_string()),
            other => DefaultValue::Literal(other.to_value()),
        };
        let shown = |d: &DefaultValue| match d {
            DefaultValue::Literal(v) => v.to_string(),
            DefaultValue::Inherit(path) => format!("the value of {path}"),
        };
        match &d.default {
            Ok(value) if *value == want => {}
            Ok(value) => problems.push(format!(
                "{}: default is {} in nix/module.nix, {} in the schema",
                option.path,
                shown(value),
                shown(&want)
            )),
            Err(why) => problems.push(format!(
                "{}: the default in nix/module.nix is {why}; expected {}",
                option.path,
                match &want {
                    DefaultValue::Literal(v) => format!("the literal {v}"),
                    inherit => shown(inherit),
                }
            )),
        }
        // The same words in `nixos-option`/the manual as in `nixos-pxe options` and the README.
        if d.description.as_ref().ok().and_then(Value::as_str) != Some(option.description) {
            problems.push(format!(
                "{}: description differs:\n  nix/module.nix: {:?}\n  src/schema.rs:  {:?}",
                option.path, d.description, option.description
            ));
        }
    }
    for path in declared.keys() {
        if schema::find(path).is_none_or(|o| o.json_only) {
            problems.push(format!(
                "{path}: in nix/module.nix but not in src/schema.rs"
            ));
        }
    }
    problems
}

fn module_text() -> String {
    std::fs::read_to_string(MODULE).expect("read nix/module.nix")
}

#[test]
fn module_declares_exactly_the_schema() {
    let problems = disagreements(&module_text());
    assert!(
        problems.is_empty(),
        "nix/module.nix and src/schema.rs disagree:\n{}",
        problems.join("\n")
    );
    assert_eq!(
        module_options(&module_text()).len(),
        OPTIONS.iter().filter(|o| !o.json_only).count()
    );
}

/// The fleet's hosts are an attribute set of submodules: their options are found below
/// `<name>`, and an override's default must be the top-level value.
#[test]
fn fleet_host_options_are_checked_like_the_others() {
    let declared = module_options(&module_text());
    assert!(declared.contains_key("fleet.hosts.<name>.macs"));
    assert!(declared.contains_key("fleet.hosts.<name>.customInstaller.networking.useDHCP"));
    assert!(
        !declared.contains_key("fleet.hosts.<name>.image"),
        "image is lib.mkFleet's, not an option"
    );
    let problems = disagreements(&edited(
        "default = cfg.customInstaller.wipe;",
        "default = cfg.customInstaller.afterInstall;",
    ));
    assert_eq!(
        problems,
        [
            "fleet.hosts.<name>.customInstaller.wipe: default is the value of customInstaller.afterInstall in nix/module.nix, the value of customInstaller.wipe in the schema"
        ]
    );
    let problems = disagreements(&edited(
        "default = cfg.customInstaller.rootDevice;",
        "default = \"/dev/sda\";",
    ));
    assert_eq!(
        problems,
        [
            "fleet.hosts.<name>.customInstaller.rootDevice: default is \"/dev/sda\" in nix/module.nix, the value of customInstaller.rootDevice in the schema"
        ]
    );
    let problems = disagreements(&edited("generation = mkOption", "generations = mkOption"));
    assert_eq!(
        problems,
        [
            "fleet.hosts.<name>.generation: in src/schema.rs but not in nix/module.nix",
            "fleet.hosts.<name>.generations: in nix/module.nix but not in src/schema.rs"
        ]
    );
    let problems = disagreements(&edited(
        "type = types.enum [\"local-boot\" \"hold\"];",
        "type = types.enum [\"local-boot\" \"hold\" \"install\"];",
    ));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("fleet.unknownHosts: type is"), "{problems:?}");
}

/// `module.nix` with `from` replaced by `to` exactly once (the edit must apply, or the test
/// below would pass for the wrong reason).
fn edited(from: &str, to: &str) -> String {
    let text = module_text();
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` occurs once in nix/module.nix"
    );
    text.replacen(from, to, 1)
}

#[test]
fn a_changed_default_is_reported_with_its_option() {
    let problems = disagreements(&edited("default = \"efinet0\";", "default = \"efinet1\";"));
    assert_eq!(
        problems,
        [
            "nfsroot.bootLoader.efinetDHCPInterface: default is \"efinet1\" in nix/module.nix, \"efinet0\" in the schema"
        ]
    );
    let problems = disagreements(&edited("default = 3600;", "default = 3601;"));
    assert_eq!(
        problems,
        ["bootServer.leaseSeconds: default is 3601 in nix/module.nix, 3600 in the schema"]
    );
    let problems = disagreements(&edited("default = true;", "default = false;"));
    assert_eq!(
        problems,
        [
            "customInstaller.networking.useDHCP: default is false in nix/module.nix, true in the schema"
        ]
    );
    // A default that is not a literal cannot be compared: said so, not guessed.
    let problems = disagreements(&edited("default = 512;", "default = 256 * 2;"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("customInstaller.espSizeMiB: the default in nix/module.nix is an expression that is not a literal"), "{problems:?}");
}

#[test]
fn a_changed_type_a_missing_and_an_extra_option_are_reported() {
    let problems = disagreements(&edited(
        "type = types.nullOr types.int;\n        default = null;",
        "type = types.nullOr types.str;\n        default = null;",
    ));
    assert_eq!(
        problems,
        [
            "customInstaller.rootSizeMiB: type is `types.nullOr types.str` in nix/module.nix, `types.nullOr (types.int)` in the schema"
        ]
    );

    // tftpRoot renamed: the schema's option is missing and the module has one the schema lacks.
    let problems = disagreements(&edited("tftpRoot = mkOption", "tftpDir = mkOption"));
    assert_eq!(
        problems,
        [
            "bootServer.tftpRoot: in src/schema.rs but not in nix/module.nix",
            "bootServer.tftpDir: in nix/module.nix but not in src/schema.rs"
        ]
    );
}

#[test]
#[should_panic(expected = "bootServer.router: mkOption without `description`")]
fn an_option_without_description_is_refused() {
    disagreements(&edited(
        "description = \"Default gateway handed to clients (DHCP option 3).\";",
        "",
    ));
}
