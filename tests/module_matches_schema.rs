//! nix/module.nix must declare exactly the options of src/schema.rs, with the same types and
//! defaults: the Nix side and the tool read one schema. Parsed with rnix, so no Nix is needed.

use nixos_pxe_installer::schema::{self, OPTIONS};
use rnix::ast::{self, HasEntry};
use rowan::ast::AstNode;
use std::collections::BTreeMap;

/// An option found in the module: its type expression and default expression, as text.
struct Declared {
    ty: String,
    default: String,
}

fn module_options() -> BTreeMap<String, Declared> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/nix/module.nix")).expect("nix/module.nix");
    let parse = rnix::Root::parse(&text);
    assert!(parse.errors().is_empty(), "nix/module.nix does not parse: {:?}", parse.errors());
    let mut body = parse.tree().expr().expect("an expression");
    while let ast::Expr::Lambda(l) = body {
        body = l.body().expect("lambda body");
    }
    let ast::Expr::LetIn(let_in) = body else { panic!("nix/module.nix is expected to be `{{ ... }}: let ... in {{ ... }}`") };
    let ast::Expr::AttrSet(module) = let_in.body().expect("let body") else { panic!("the module body is an attribute set") };
    let options = module
        .attrpath_values()
        .find(|e| path_of(e) == ["options"])
        .and_then(|e| e.value())
        .expect("the module has `options = { ... }`");
    let ast::Expr::AttrSet(options) = options else { panic!("`options` is an attribute set") };
    let mut found = BTreeMap::new();
    walk(&options, &mut Vec::new(), &mut found);
    found
}

fn path_of(e: &ast::AttrpathValue) -> Vec<String> {
    e.attrpath().expect("attrpath").attrs().map(|a| a.syntax().text().to_string()).collect()
}

fn walk(set: &ast::AttrSet, prefix: &mut Vec<String>, found: &mut BTreeMap<String, Declared>) {
    for entry in set.attrpath_values() {
        let path = path_of(&entry);
        let depth = prefix.len();
        prefix.extend(path);
        match entry.value().expect("value") {
            ast::Expr::AttrSet(inner) => walk(&inner, prefix, found),
            ast::Expr::Apply(apply) if apply.lambda().is_some_and(|f| f.syntax().text() == "mkOption") => {
                let Some(ast::Expr::AttrSet(args)) = apply.argument() else { panic!("mkOption takes an attribute set") };
                let field = |name: &str| {
                    args.attrpath_values()
                        .find(|e| path_of(e) == [name])
                        .and_then(|e| e.value())
                        .map(|v| v.syntax().text().to_string())
                        .unwrap_or_else(|| panic!("{}: mkOption without `{name}`", prefix.join(".")))
                };
                let _ = field("description");
                found.insert(prefix.join("."), Declared { ty: field("type"), default: field("default") });
            }
            other => panic!("{}: unexpected {}", prefix.join("."), other.syntax().text()),
        }
        prefix.truncate(depth);
    }
}

/// Type expressions compared without parentheses and extra spaces.
fn normalize(ty: &str) -> String {
    ty.replace(['(', ')'], " ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The schema's default written as Nix.
fn nix_default(default: schema::Default) -> String {
    match default {
        schema::Default::Null => "null".into(),
        schema::Default::Bool(b) => b.to_string(),
        schema::Default::Str(s) => format!("\"{s}\""),
        schema::Default::Int(i) => i.to_string(),
        schema::Default::EmptyList => "[ ]".into(),
    }
}

#[test]
fn module_declares_exactly_the_schema() {
    let declared = module_options();
    let mut problems = Vec::new();
    for option in OPTIONS {
        match declared.get(option.path) {
            None => problems.push(format!("{}: in src/schema.rs but not in nix/module.nix", option.path)),
            Some(d) => {
                if normalize(&d.ty) != normalize(&option.nix_type()) {
                    problems.push(format!("{}: type is `{}` in nix/module.nix, `{}` in the schema", option.path, d.ty, option.nix_type()));
                }
                let default = d.default.split_whitespace().collect::<Vec<_>>().join(" ");
                if default != nix_default(option.default) {
                    problems.push(format!("{}: default is `{}` in nix/module.nix, `{}` in the schema", option.path, d.default, nix_default(option.default)));
                }
            }
        }
    }
    for path in declared.keys() {
        if schema::find(path).is_none() {
            problems.push(format!("{path}: in nix/module.nix but not in src/schema.rs"));
        }
    }
    assert!(problems.is_empty(), "nix/module.nix and src/schema.rs disagree:\n{}", problems.join("\n"));
}

#[test]
fn the_comparison_sees_a_changed_default() {
    // The test above would be worthless if every default compared equal: check one that differs.
    assert_ne!(nix_default(schema::Default::Str("efinet0")), "\"efinet1\"");
    assert_eq!(normalize("types.nullOr (types.enum [ \"a\" ])"), normalize("types.nullOr types.enum [ \"a\" ]"));
    assert_eq!(module_options().len(), OPTIONS.len());
}
