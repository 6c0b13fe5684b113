//! Reading a configuration: the settings a file makes, merged over the schema's defaults,
//! validated, and turned into the typed [`Config`]. Readers: static Nix, evaluated Nix, JSON.

pub mod diagnostic;
pub mod eval_nix;
pub mod json;
pub mod static_nix;
pub mod typed;

pub use diagnostic::{ConfigError, Diagnostic};
pub use typed::Config;

use crate::origin::Origin;
use crate::schema::{self, OptionSpec};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One value a file gives an option, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub value: Value,
    pub origin: Origin,
}

/// The values a configuration sets explicitly, by option path. Defaults are not in here.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: BTreeMap<&'static str, Setting>,
}

impl Settings {
    /// Records a definition. Lists from several definitions are concatenated (as the NixOS
    /// module system merges `listOf`); any other option defined twice with different values
    /// is an error naming both places.
    pub fn define(&mut self, spec: &'static OptionSpec, value: Value, origin: Origin) -> Result<(), Diagnostic> {
        match self.values.get_mut(spec.path) {
            None => {
                self.values.insert(spec.path, Setting { value, origin });
                Ok(())
            }
            Some(existing) => match (&mut existing.value, value) {
                (Value::Array(have), Value::Array(more)) => {
                    have.extend(more);
                    Ok(())
                }
                (have, value) if *have == value => Ok(()),
                (_, value) => Err(Diagnostic::new(
                    origin,
                    format!(
                        "`{}` is defined twice with different values ({} here, {} at {})",
                        spec.path,
                        schema::describe(&value),
                        schema::describe(&existing.value),
                        existing.origin
                    ),
                )
                .option(spec.path)),
            },
        }
    }

    pub fn get(&self, path: &str) -> Option<&Setting> {
        self.values.get(path)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// One option's effective value, for `nixos-pxe options`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Effective {
    pub option: &'static str,
    pub value: Value,
    pub origin: Origin,
}

/// A configuration read and validated: the typed config and where every value came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: Config,
    pub effective: Vec<Effective>,
    /// The file it was read from, for messages about missing facts.
    pub source: Utf8PathBuf,
}

impl Resolved {
    pub fn origin_of(&self, path: &str) -> Origin {
        self.effective.iter().find(|e| e.option == path).map_or(Origin::Default, |e| e.origin.clone())
    }
}

/// How to read a Nix file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceMode {
    /// Read the syntax tree only (rnix); values that need evaluation are reported, never guessed.
    Static,
    /// Evaluate with `nix eval --json` (needs `nix` on PATH).
    Eval,
    /// Evaluate when `nix` is on PATH, read statically otherwise.
    Auto,
}

/// Reads `file` (Nix or JSON, by its extension) and validates it.
pub fn load(file: &Utf8Path, mode: SourceMode) -> Result<Resolved, ConfigError> {
    let settings = if file.extension() == Some("json") {
        json::read(file)?
    } else {
        match mode {
            SourceMode::Static => static_nix::read(file)?,
            SourceMode::Eval => eval_nix::read(file)?,
            SourceMode::Auto => {
                if eval_nix::nix_available() {
                    eval_nix::read(file)?
                } else {
                    static_nix::read(file)?
                }
            }
        }
    };
    resolve(&settings, file)
}

/// Merges `settings` over the defaults, checks every value and the rules between options,
/// and builds the typed config. All problems are reported at once.
pub fn resolve(settings: &Settings, source: &Utf8Path) -> Result<Resolved, ConfigError> {
    let mut problems = Vec::new();
    let mut effective = Vec::new();
    for spec in schema::OPTIONS {
        let (value, origin) = match settings.get(spec.path) {
            Some(s) => (s.value.clone(), s.origin.clone()),
            None => (spec.default.to_value(), Origin::Default),
        };
        if let Err(message) = spec.check(&value) {
            problems.push(Diagnostic::new(origin.clone(), message).option(spec.path));
        }
        effective.push(Effective { option: spec.path, value, origin });
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    let tree = to_tree(effective.iter().map(|e| (e.option, e.value.clone())));
    let config: Config = serde_json::from_value(Value::Object(tree)).map_err(|e| {
        ConfigError::Invalid(vec![Diagnostic::new(
            Origin::File { file: source.to_owned() },
            format!("internal: the schema and the typed config disagree: {e}"),
        )])
    })?;
    let resolved = Resolved { config, effective, source: source.to_owned() };
    let cross = typed::cross_checks(&resolved);
    if cross.is_empty() { Ok(resolved) } else { Err(ConfigError::Invalid(cross)) }
}

/// Builds the nested attribute set `{ a = { b = v; }; }` from dotted paths.
pub fn to_tree<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Map<String, Value> {
    let mut root = Map::new();
    for (path, value) in entries {
        let mut parts: Vec<&str> = path.split('.').collect();
        let Some(leaf) = parts.pop() else { continue };
        let mut node = &mut root;
        for part in parts {
            let entry = node.entry(part.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(next) = entry else { unreachable!("made an object just above") };
            node = next;
        }
        node.insert(leaf.to_string(), value);
    }
    root
}
