//! Reads option definitions from a Nix file's syntax tree (rnix), without evaluating anything.
//! What syntax alone cannot know (a variable, a call, `with`, `//`) is reported with its place, never guessed.

use super::{ConfigError, Diagnostic, Settings};
use crate::origin::{Location, Origin};
use crate::schema;
use camino::{Utf8Path, Utf8PathBuf};
use rnix::ast::{self, AstToken, HasEntry, InterpolPart};
use rowan::ast::AstNode;
use serde_json::Value;

const EVAL_HINT: &str = "static reading does not evaluate Nix; use `--source eval` (needs `nix` on PATH) or write the value literally";

/// Reads `file` and the files it imports.
pub fn read(file: &Utf8Path) -> Result<Settings, ConfigError> {
    let mut reader = Reader::default();
    reader.read_file(file, None)?;
    if reader.problems.is_empty() { Ok(reader.settings) } else { Err(ConfigError::Invalid(reader.problems)) }
}

/// Reads Nix source held in memory (as if read from `file`), for tests and for stdin.
pub fn read_text(file: &Utf8Path, text: &str) -> Result<Settings, ConfigError> {
    let mut reader = Reader::default();
    reader.read_source(file, text);
    if reader.problems.is_empty() { Ok(reader.settings) } else { Err(ConfigError::Invalid(reader.problems)) }
}

#[derive(Default)]
struct Reader {
    settings: Settings,
    problems: Vec<Diagnostic>,
    /// Files being read, outermost first, to catch import cycles.
    stack: Vec<Utf8PathBuf>,
}

/// The file a node belongs to, for locations and relative paths.
struct Source<'a> {
    path: &'a Utf8Path,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, node: &rnix::SyntaxNode) -> Origin {
        Origin::Defined(Location::from_offset(self.path, self.text, usize::from(node.text_range().start())))
    }

    fn dir(&self) -> &Utf8Path {
        self.path.parent().unwrap_or(Utf8Path::new("."))
    }
}

impl Reader {
    fn read_file(&mut self, file: &Utf8Path, imported_at: Option<Origin>) -> Result<(), ConfigError> {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(source) => {
                return match imported_at {
                    Some(origin) => {
                        self.problems.push(Diagnostic::new(origin, format!("cannot read imported file {file}: {source}")));
                        Ok(())
                    }
                    None => Err(ConfigError::Io { path: file.to_owned(), source }),
                };
            }
        };
        let canonical = file.canonicalize_utf8().unwrap_or_else(|_| file.to_owned());
        if self.stack.contains(&canonical) {
            if let Some(origin) = imported_at {
                self.problems.push(Diagnostic::new(origin, format!("importing {file} again makes an import cycle")));
            }
            return Ok(());
        }
        self.stack.push(canonical);
        self.read_source(file, &text);
        self.stack.pop();
        Ok(())
    }

    fn read_source(&mut self, file: &Utf8Path, text: &str) {
        let src = Source { path: file, text };
        let parse = rnix::Root::parse(text);
        let errors = parse.errors();
        if !errors.is_empty() {
            for error in errors {
                let (offset, message) = syntax_error(error);
                self.problems.push(Diagnostic::new(
                    Origin::Defined(Location::from_offset(file, text, offset.unwrap_or(text.len()))),
                    format!("Nix syntax error: {message}"),
                ));
            }
            return;
        }
        let Some(expr) = parse.tree().expr() else {
            self.problems.push(Diagnostic::new(Origin::Defined(Location::new(file, 1, 1)), "the file holds no expression"));
            return;
        };
        match module_body(expr) {
            Ok(set) => self.walk_set(&set, &[], &src),
            Err(other) => self.problems.push(
                Diagnostic::new(
                    src.at(other.syntax()),
                    format!("the file is {}, not an attribute set or a module function returning one", describe_expr(&other)),
                )
                .hint(EVAL_HINT),
            ),
        }
    }

    fn walk_set(&mut self, set: &ast::AttrSet, prefix: &[String], src: &Source) {
        let under_roots = prefix.first().is_some_and(|r| schema::ROOTS.contains(&r.as_str()));
        for entry in set.entries() {
            match entry {
                ast::Entry::Inherit(inherit) => {
                    let names: Vec<String> = inherit.attrs().filter_map(|a| attr_name(&a)).collect();
                    let touches = under_roots || names.iter().any(|n| schema::ROOTS.contains(&n.as_str()));
                    if touches {
                        self.problems.push(
                            Diagnostic::new(src.at(inherit.syntax()), format!("`inherit {}` takes values from elsewhere", names.join(" ")))
                                .hint(EVAL_HINT),
                        );
                    }
                }
                ast::Entry::AttrpathValue(apv) => {
                    let (Some(attrpath), Some(value)) = (apv.attrpath(), apv.value()) else { continue };
                    let mut path = prefix.to_vec();
                    let mut dynamic = None;
                    for attr in attrpath.attrs() {
                        match attr_name(&attr) {
                            Some(name) => path.push(name),
                            None => {
                                dynamic = Some(attr);
                                break;
                            }
                        }
                    }
                    if let Some(attr) = dynamic {
                        if under_roots || path.first().is_some_and(|r| schema::ROOTS.contains(&r.as_str())) {
                            self.problems.push(
                                Diagnostic::new(src.at(attr.syntax()), "an attribute name computed by interpolation").hint(EVAL_HINT),
                            );
                        }
                        continue;
                    }
                    if prefix.is_empty() && path.len() == 1 && path[0] == "imports" {
                        self.read_imports(&value, src);
                    } else {
                        self.define(path, &attrpath, value, src);
                    }
                }
            }
        }
    }

    fn define(&mut self, path: Vec<String>, attrpath: &ast::Attrpath, value: ast::Expr, src: &Source) {
        if !path.first().is_some_and(|r| schema::ROOTS.contains(&r.as_str())) {
            return; // not ours: the file may be an ordinary NixOS module as well
        }
        let dotted = schema::dotted(&path);
        match schema::lookup(&path) {
            schema::Lookup::Option { spec, name } => match literal_value(&value, src) {
                Ok(v) => {
                    // The position of the attribute path, as Nix's unsafeGetAttrPos reports it, so
                    // static and eval mode agree on where a value came from.
                    if let Err(d) = self.settings.define_named(spec, name.as_deref(), v, src.at(attrpath.syntax())) {
                        self.problems.push(d);
                    }
                }
                Err(what) => self.problems.push(
                    Diagnostic::new(src.at(value.syntax()), format!("the value is {what}, which static reading cannot know"))
                        .option(&dotted)
                        .hint(EVAL_HINT),
                ),
            },
            schema::Lookup::Prefix { member } => {
                if let Some((set, name)) = member {
                    self.settings.member(set, &name, src.at(attrpath.syntax()));
                }
                match strip_parens(value) {
                    ast::Expr::AttrSet(set) => self.walk_set(&set, &path, src),
                    other => self.problems.push(
                        Diagnostic::new(
                            src.at(other.syntax()),
                            format!("`{dotted}` holds options, so it must be an attribute set; it is {}", describe_expr(&other)),
                        )
                        .hint(EVAL_HINT),
                    ),
                }
            }
            schema::Lookup::Unknown => {
                let mut d = Diagnostic::new(src.at(attrpath.syntax()), format!("unknown option `{dotted}`"));
                if let Some(near) = schema::nearest(&dotted) {
                    d = d.hint(format!("did you mean `{near}`?"));
                }
                self.problems.push(d);
            }
        }
    }

    fn read_imports(&mut self, value: &ast::Expr, src: &Source) {
        let ast::Expr::List(list) = strip_parens(value.clone()) else {
            self.problems.push(Diagnostic::new(src.at(value.syntax()), "`imports` must be a list of paths").hint(EVAL_HINT));
            return;
        };
        for item in list.items() {
            match relative_path(&item, src) {
                Some(path) => {
                    let file = crate::origin::shown_path(&if path.is_dir() { path.join("default.nix") } else { path });
                    if let Err(ConfigError::Io { path, source }) = self.read_file(&file, Some(src.at(item.syntax()))) {
                        self.problems.push(Diagnostic::new(src.at(item.syntax()), format!("cannot read {path}: {source}")));
                    }
                }
                None => self.problems.push(
                    Diagnostic::new(src.at(item.syntax()), format!("cannot follow the import {}", describe_expr(&item)))
                        .hint("static reading follows relative path imports (./other.nix) only; use `--source eval`"),
                ),
            }
        }
    }
}

/// A module file is `{ ... }`, or `{ config, pkgs, ... }: { ... }` (any lambda), possibly in parentheses.
fn module_body(expr: ast::Expr) -> Result<ast::AttrSet, ast::Expr> {
    match strip_parens(expr) {
        ast::Expr::AttrSet(set) => Ok(set),
        ast::Expr::Lambda(lambda) => match lambda.body() {
            Some(body) => module_body(body),
            None => Err(ast::Expr::Lambda(lambda)),
        },
        other => Err(other),
    }
}

fn strip_parens(expr: ast::Expr) -> ast::Expr {
    match expr {
        ast::Expr::Paren(p) => match p.expr() {
            Some(inner) => strip_parens(inner),
            None => ast::Expr::Paren(p),
        },
        other => other,
    }
}

/// A plain attribute name (`a`, `"a"`); `None` for `${x}` or `"a${x}"`.
fn attr_name(attr: &ast::Attr) -> Option<String> {
    match attr {
        ast::Attr::Ident(ident) => ident.ident_token().map(|t| t.text().to_string()),
        ast::Attr::Str(s) => plain_string(s),
        ast::Attr::Dynamic(_) => None,
    }
}

fn plain_string(s: &ast::Str) -> Option<String> {
    let mut out = String::new();
    for part in s.normalized_parts() {
        match part {
            InterpolPart::Literal(text) => out.push_str(&text),
            InterpolPart::Interpolation(_) => return None,
        }
    }
    Some(out)
}

/// The JSON value of a literal expression, or a description of why it is not one.
fn literal_value(expr: &ast::Expr, src: &Source) -> Result<Value, String> {
    match strip_parens(expr.clone()) {
        ast::Expr::Str(s) => plain_string(&s).map(Value::String).ok_or_else(|| "a string with ${...} interpolation".to_string()),
        ast::Expr::Ident(ident) => match ident.ident_token().map(|t| t.text().to_string()).as_deref() {
            Some("true") => Ok(Value::Bool(true)),
            Some("false") => Ok(Value::Bool(false)),
            Some("null") => Ok(Value::Null),
            Some(name) => Err(format!("the variable `{name}`")),
            None => Err("an identifier".into()),
        },
        ast::Expr::Literal(lit) => match lit.kind() {
            ast::LiteralKind::Integer(i) => i.value().map(Value::from).map_err(|e| format!("an integer out of range ({e})")),
            ast::LiteralKind::Float(f) => Ok(serde_json::Number::from_f64(f.value().unwrap_or(0.0)).map_or(Value::Null, Value::Number)),
            ast::LiteralKind::Uri(u) => Ok(Value::String(u.syntax().text().to_string())),
        },
        ast::Expr::UnaryOp(op) if op.operator() == Some(ast::UnaryOpKind::Negate) => {
            match op.expr().map(strip_parens) {
                Some(ast::Expr::Literal(lit)) => match lit.kind() {
                    ast::LiteralKind::Integer(i) => i.value().map(|n| Value::from(-n)).map_err(|e| format!("an integer out of range ({e})")),
                    _ => Err("a negated non-integer".into()),
                },
                _ => Err("a negated expression".into()),
            }
        }
        ast::Expr::List(list) => list.items().map(|item| literal_value(&item, src)).collect::<Result<Vec<_>, _>>().map(Value::Array),
        ast::Expr::PathRel(_) | ast::Expr::PathAbs(_) => {
            relative_path(expr, src).map(|p| Value::String(p.into_string())).ok_or_else(|| "a path with ${...} interpolation".to_string())
        }
        other => Err(describe_expr(&other)),
    }
}

/// A path literal resolved against the file's directory (Nix resolves relative paths the same way).
fn relative_path(expr: &ast::Expr, src: &Source) -> Option<Utf8PathBuf> {
    let text = match strip_parens(expr.clone()) {
        ast::Expr::PathRel(p) => literal_path_text(p.parts())?,
        ast::Expr::PathAbs(p) => literal_path_text(p.parts())?,
        _ => return None,
    };
    let joined = if text.starts_with('/') { Utf8PathBuf::from(&text) } else { src.dir().join(&text) };
    Some(normalize(&joined))
}

fn literal_path_text(parts: Vec<InterpolPart<ast::PathContent>>) -> Option<String> {
    let mut out = String::new();
    for part in parts {
        match part {
            InterpolPart::Literal(content) => out.push_str(content.text()),
            InterpolPart::Interpolation(_) => return None,
        }
    }
    Some(out)
}

/// Removes `.` and `a/..` components without touching the file system (as Nix does for path literals).
fn normalize(path: &Utf8Path) -> Utf8PathBuf {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .ok()
            .and_then(|d| Utf8PathBuf::from_path_buf(d).ok())
            .map_or_else(|| path.to_owned(), |d| d.join(path))
    };
    let mut parts: Vec<&str> = Vec::new();
    for component in absolute.as_str().split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Utf8PathBuf::from(format!("/{}", parts.join("/")))
}

/// What kind of expression this is, in words an operator understands.
fn describe_expr(expr: &ast::Expr) -> String {
    match expr {
        ast::Expr::Apply(_) => "a function call".into(),
        ast::Expr::LetIn(_) | ast::Expr::LegacyLet(_) => "a `let ... in` expression".into(),
        ast::Expr::With(_) => "a `with` expression".into(),
        ast::Expr::BinOp(op) => match op.operator() {
            Some(ast::BinOpKind::Update) => "an attribute set update (`//`)".into(),
            Some(ast::BinOpKind::Concat) => "a list concatenation (`++`)".into(),
            Some(ast::BinOpKind::Add) => "an addition or string concatenation (`+`)".into(),
            _ => "an operator expression".into(),
        },
        ast::Expr::IfElse(_) => "an `if ... then ... else` expression".into(),
        ast::Expr::Select(s) => format!("the attribute selection `{}`", s.syntax().text()),
        ast::Expr::Ident(i) => format!("the variable `{}`", i.syntax().text()),
        ast::Expr::Lambda(_) => "a function".into(),
        ast::Expr::AttrSet(_) => "an attribute set".into(),
        ast::Expr::List(_) => "a list".into(),
        ast::Expr::Str(_) => "a string".into(),
        ast::Expr::PathHome(_) | ast::Expr::PathSearch(_) => format!("the path `{}`", expr.syntax().text()),
        ast::Expr::Assert(_) => "an `assert` expression".into(),
        ast::Expr::HasAttr(_) => "an attribute test (`?`)".into(),
        ast::Expr::UnaryOp(_) => "an operator expression".into(),
        ast::Expr::CurPos(_) => "`__curPos`".into(),
        _ => "an expression".into(),
    }
}

/// Where an rnix parse error points, and what it says in words (rnix's own text gives byte ranges).
fn syntax_error(error: &rnix::ParseError) -> (Option<usize>, String) {
    use rnix::ParseError as E;
    let wanted = |kinds: &[rnix::SyntaxKind]| kinds.iter().map(|k| token_name(*k)).collect::<Vec<_>>().join(", ");
    match error {
        E::Unexpected(r) => (Some(usize::from(r.start())), "unexpected input here".into()),
        E::UnexpectedExtra(r) => (Some(usize::from(r.start())), "unexpected text after the end of the expression".into()),
        E::UnexpectedWanted(got, r, want) => {
            (Some(usize::from(r.start())), format!("found {}, expected {}", token_name(*got), wanted(want)))
        }
        E::UnexpectedDoubleBind(r) => (Some(usize::from(r.start())), "a pattern is bound twice".into()),
        E::DuplicatedArgs(r, name) => (Some(usize::from(r.start())), format!("the argument `{name}` is listed twice")),
        E::UnexpectedEOF => (None, "the file ends too early (an unclosed bracket or string?)".into()),
        E::UnexpectedEOFWanted(want) => (None, format!("the file ends too early; expected {}", wanted(want))),
        other => (None, other.to_string()),
    }
}

/// A token kind as the user wrote it: `TOKEN_SEMICOLON` becomes `';'`.
fn token_name(kind: rnix::SyntaxKind) -> String {
    use rnix::SyntaxKind as K;
    let symbol = match kind {
        K::TOKEN_SEMICOLON => ";",
        K::TOKEN_ASSIGN => "=",
        K::TOKEN_L_BRACE => "{",
        K::TOKEN_R_BRACE => "}",
        K::TOKEN_L_BRACK => "[",
        K::TOKEN_R_BRACK => "]",
        K::TOKEN_L_PAREN => "(",
        K::TOKEN_R_PAREN => ")",
        K::TOKEN_COLON => ":",
        K::TOKEN_COMMA => ",",
        K::TOKEN_DOT => ".",
        _ => return format!("{kind:?}").trim_start_matches("TOKEN_").trim_start_matches("NODE_").to_lowercase().replace('_', " "),
    };
    format!("'{symbol}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Settings, ConfigError> {
        read_text(Utf8Path::new("/cfg/host.nix"), text)
    }

    fn value(s: &Settings, path: &str) -> Value {
        s.get(path).map(|s| s.value.clone()).unwrap_or(Value::Null)
    }

    fn line_col(s: &Settings, path: &str) -> (u32, u32) {
        let l = s.get(path).and_then(|s| s.origin.location().cloned()).expect("defined with a location");
        (l.line, l.column)
    }

    #[test]
    fn module_function_with_dotted_and_nested_paths_merged() {
        let s = read(
            "{ config, pkgs, ... }:\n{\n  nfsroot.bootLoader.efinetDHCPInterface = \"efinet1\";\n  nfsroot = {\n    bootLoader.linuxPnPInterface = \"eth1\";\n    extraKernelOptions = [ \"IXGBE\" ];\n  };\n  networking.hostName = f x;\n  bootServer.\"leaseSeconds\" = 600;\n  customInstaller.networking.useDHCP = false;\n  customInstaller.partitionSeparator = null;\n}\n",
        )
        .expect("static");
        assert_eq!(value(&s, "nfsroot.bootLoader.efinetDHCPInterface"), "efinet1");
        assert_eq!(line_col(&s, "nfsroot.bootLoader.efinetDHCPInterface"), (3, 3));
        assert_eq!(line_col(&s, "nfsroot.bootLoader.linuxPnPInterface"), (5, 5));
        assert_eq!(value(&s, "nfsroot.bootLoader.linuxPnPInterface"), "eth1");
        assert_eq!(value(&s, "nfsroot.extraKernelOptions"), serde_json::json!(["IXGBE"]));
        assert_eq!(value(&s, "bootServer.leaseSeconds"), 600);
        assert_eq!(value(&s, "customInstaller.networking.useDHCP"), false);
        assert!(s.get("customInstaller.partitionSeparator").is_some());
    }

    #[test]
    fn plain_sets_negative_ints_multiline_strings_and_paths() {
        let s = read("({\n  customInstaller.swapSizeMiB = -1;\n  customInstaller.rootDevice = ''\n    /dev/vda'';\n  customInstaller.target.directory = ./hosts/../host;\n})")
            .expect("static");
        assert_eq!(value(&s, "customInstaller.swapSizeMiB"), -1);
        assert_eq!(value(&s, "customInstaller.rootDevice"), "/dev/vda");
        assert_eq!(value(&s, "customInstaller.target.directory"), "/cfg/host");
    }

    #[test]
    fn what_needs_evaluation_is_reported_at_its_place_not_guessed() {
        let err = read("{ lib, ... }:\n{\n  customInstaller.rootDevice = lib.mkDefault \"/dev/sdb\";\n  bootServer.address = \"10.0.0.${toString 1}\";\n  nfsroot.bootLoader = defaults;\n}\n")
            .unwrap_err();
        let d = err.diagnostics();
        assert_eq!(d.len(), 3, "{err}");
        assert!(d[0].to_string().starts_with("/cfg/host.nix:3:32: customInstaller.rootDevice: the value is a function call"), "{}", d[0]);
        assert!(d[0].hint.as_deref().unwrap_or_default().contains("--source eval"));
        assert!(d[1].to_string().contains("4:24: bootServer.address: the value is a string with ${...} interpolation"), "{}", d[1]);
        assert!(d[2].to_string().contains("5:24: `nfsroot.bootLoader` holds options, so it must be an attribute set; it is the variable `defaults`"), "{}", d[2]);
    }

    #[test]
    fn top_level_let_is_not_static() {
        let err = read("let dev = \"/dev/sda\"; in { customInstaller.rootDevice = dev; }").unwrap_err();
        assert!(err.to_string().contains("host.nix:1:1: the file is a `let ... in` expression"), "{err}");
    }

    #[test]
    fn unknown_options_under_our_roots_get_a_suggestion() {
        let err = read("{\n  customInstaller.rootDev = \"/dev/sda\";\n}").unwrap_err();
        let d = &err.diagnostics()[0];
        assert_eq!(d.origin.location().map(|l| (l.line, l.column)), Some((2, 3)));
        assert_eq!(d.hint.as_deref(), Some("did you mean `customInstaller.rootDevice`?"));
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let err = read("{\n  nfsroot.init = \"/init\"\n  bootServer.address = \"10.0.0.1\";\n}").unwrap_err();
        let first = &err.diagnostics()[0];
        assert!(first.message.starts_with("Nix syntax error"), "{first}");
        assert_eq!(first.origin.location().map(|l| l.line), Some(3));
    }

    #[test]
    fn conflicting_definitions_name_both_places() {
        let err = read("{\n  customInstaller.rootDevice = \"/dev/sda\";\n  customInstaller = { rootDevice = \"/dev/sdb\"; };\n}").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("3:23: customInstaller.rootDevice: `customInstaller.rootDevice` is defined twice"), "{text}");
        assert!(text.contains("at /cfg/host.nix:2:3"), "{text}");
    }

    #[test]
    fn imports_are_followed_and_cycles_and_missing_files_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = Utf8Path::from_path(dir.path()).expect("utf8");
        std::fs::write(dir.join("main.nix"), "{ imports = [ ./server.nix ./missing.nix ]; nfsroot.extraKernelOptions = [ \"A\" ]; }").expect("write");
        std::fs::write(dir.join("server.nix"), "{ imports = [ ./main.nix ];\n  nfsroot.extraKernelOptions = [ \"B\" ];\n  bootServer.address = \"10.0.0.1\"; }").expect("write");
        let err = super::read(&dir.join("main.nix")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("main.nix:1:28: cannot read imported file"), "{text}");
        assert!(text.contains("server.nix:1:15:") && text.contains("import cycle"), "{text}");
        std::fs::write(dir.join("main.nix"), "{ imports = [ ./server.nix ]; nfsroot.extraKernelOptions = [ \"A\" ]; }").expect("write");
        std::fs::write(dir.join("server.nix"), "{\n  nfsroot.extraKernelOptions = [ \"B\" ];\n  bootServer.address = \"10.0.0.1\"; }").expect("write");
        let s = super::read(&dir.join("main.nix")).expect("static");
        assert_eq!(value(&s, "nfsroot.extraKernelOptions"), serde_json::json!(["B", "A"]));
        let origin = s.get("bootServer.address").map(|s| s.origin.to_string()).unwrap_or_default();
        assert!(origin.ends_with("server.nix:3:3"), "{origin}");
    }
}
