//! Reads option definitions by evaluating the file with `nix eval --json` (src/config/eval.nix),
//! so `let`, functions and string operations work; positions come from `builtins.unsafeGetAttrPos`.

use super::{ConfigError, Diagnostic, Settings};
use crate::command::{Command, CommandError};
use crate::origin::{Location, Origin};
use crate::schema;
use camino::Utf8Path;
use serde::Deserialize;
use serde_json::Value;

const EVAL_PROGRAM: &str = include_str!("eval.nix");
/// How the command is named in messages (the real one carries all of eval.nix).
const SHORT_COMMAND: &str = "nix eval --json --impure --expr <nixos-pxe's src/config/eval.nix>";

/// Whether `nix` is on PATH.
pub fn nix_available() -> bool {
    which::which("nix").is_ok()
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Entry {
    Definition { path: Vec<String>, value: Value, file: Option<String>, line: u32, column: u32 },
    /// An attribute set eval.nix walked into: a fleet host exists even if it sets nothing.
    Set { path: Vec<String>, file: Option<String>, line: u32, column: u32 },
    Unknown { path: Vec<String>, file: Option<String>, line: u32, column: u32 },
}

pub fn read(file: &Utf8Path) -> Result<Settings, ConfigError> {
    let absolute = file.canonicalize_utf8().map_err(|source| ConfigError::Io { path: file.to_owned(), source })?;
    let command = eval_command(&absolute);
    let output = command.run().map_err(|e| match e {
        CommandError::Failed { stderr, .. } => ConfigError::Eval { file: file.to_owned(), command: SHORT_COMMAND.into(), stderr },
        other => ConfigError::NixUnavailable { file: file.to_owned(), message: other.to_string() },
    })?;
    let entries: Vec<Entry> = serde_json::from_slice(&output.stdout).map_err(|e| ConfigError::Eval {
        file: file.to_owned(),
        command: SHORT_COMMAND.into(),
        stderr: format!("unexpected output from nix eval: {e}"),
    })?;
    settings_from(entries, file)
}

/// `nix eval --json --impure --expr '(import eval.nix) { file = ...; optionPaths = ...; }'`.
fn eval_command(file: &Utf8Path) -> Command {
    let paths: Vec<Vec<&str>> = schema::OPTIONS.iter().map(|o| o.path.split('.').collect()).collect();
    let paths = serde_json::to_string(&paths).unwrap_or_default();
    let expr = format!(
        "({program}) {{ file = {file}; optionPaths = builtins.fromJSON {paths}; }}",
        program = EVAL_PROGRAM,
        file = nix_string(file.as_str()),
        paths = nix_string(&paths),
    );
    Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "eval", "--json", "--impure", "--expr"])
        .arg(expr)
}

/// A Nix string literal holding `s` (so a file name can never be read as Nix code).
fn nix_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn settings_from(entries: Vec<Entry>, file: &Utf8Path) -> Result<Settings, ConfigError> {
    let mut settings = Settings::default();
    let mut problems = Vec::new();
    let origin = |f: Option<String>, line: u32, column: u32| match f {
        Some(f) if line > 0 => Origin::Defined(Location::new(crate::origin::shown_path(Utf8Path::new(&f)), line, column)),
        _ => Origin::File { file: file.to_owned() },
    };
    for entry in entries {
        match entry {
            Entry::Definition { path, value, file: f, line, column } => match schema::lookup(&path) {
                schema::Lookup::Option { spec, name } => {
                    if let Err(d) = settings.define_named(spec, name.as_deref(), value, origin(f, line, column)) {
                        problems.push(d);
                    }
                }
                _ => problems.push(Diagnostic::new(origin(f, line, column), format!("unknown option `{}`", schema::dotted(&path)))),
            },
            Entry::Set { path, file: f, line, column } => {
                if let schema::Lookup::Prefix { member: Some((set, name)) } = schema::lookup(&path) {
                    settings.member(set, &name, origin(f, line, column));
                }
            }
            Entry::Unknown { path, file: f, line, column } => {
                let dotted = schema::dotted(&path);
                let d = match schema::lookup(&path) {
                    schema::Lookup::Prefix { .. } => Diagnostic::new(origin(f, line, column), format!("`{dotted}` holds options, so it must be an attribute set")),
                    _ => {
                        let d = Diagnostic::new(origin(f, line, column), format!("unknown option `{dotted}`"));
                        match schema::nearest(&dotted) {
                            Some(near) => d.hint(format!("did you mean `{near}`?")),
                            None => d,
                        }
                    }
                };
                problems.push(d);
            }
        }
    }
    if problems.is_empty() { Ok(settings) } else { Err(ConfigError::Invalid(problems)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_strings_cannot_escape() {
        assert_eq!(nix_string("a\"b${c}\\"), "\"a\\\"b\\${c}\\\\\"");
    }

    #[test]
    fn entries_become_settings_and_unknowns_diagnostics() {
        let entries: Vec<Entry> = serde_json::from_str(
            r#"[{"kind":"definition","path":["customInstaller","rootDevice"],"value":"/dev/sdb","file":"/x/h.nix","line":3,"column":5},
                {"kind":"unknown","path":["bootServer","adress"],"file":"/x/h.nix","line":4,"column":3}]"#,
        )
        .expect("json");
        let err = settings_from(entries, Utf8Path::new("/x/h.nix")).unwrap_err();
        assert_eq!(err.diagnostics()[0].hint.as_deref(), Some("did you mean `bootServer.address`?"));
    }

    #[test]
    fn hosts_are_members_even_when_they_set_nothing() {
        let entries: Vec<Entry> = serde_json::from_str(
            r#"[{"kind":"set","path":["fleet","hosts"],"file":"/x/h.nix","line":2,"column":3},
                {"kind":"set","path":["fleet","hosts","web1"],"file":"/x/h.nix","line":3,"column":5},
                {"kind":"definition","path":["fleet","hosts","db1","macs"],"value":["52:54:00:00:00:01"],"file":"/x/h.nix","line":4,"column":5}]"#,
        )
        .expect("json");
        let settings = settings_from(entries, Utf8Path::new("/x/h.nix")).expect("settings");
        assert!(settings.get("fleet.hosts.db1.macs").is_some());
        let err = super::super::resolve(&settings, Utf8Path::new("/x/h.nix")).unwrap_err().to_string();
        assert!(err.contains("/x/h.nix:3:5: fleet.hosts.web1.macs: the host web1 has no MAC address"), "{err}");
    }
}
