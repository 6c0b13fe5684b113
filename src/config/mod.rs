//! Reading a configuration: the settings a file makes, merged over the schema's defaults,
//! validated, and turned into the typed [`Config`]. Readers: static Nix, evaluated Nix, JSON.

pub mod bmc;
pub mod diagnostic;
pub mod eval_nix;
pub mod fleet;
pub mod fleet_rules;
pub mod json;
pub mod static_nix;
pub mod typed;

pub use diagnostic::{ConfigError, Diagnostic};
pub use typed::Config;

use crate::origin::Origin;
use crate::schema::{self, Default as SchemaDefault, OptionSpec};
use camino::{Utf8Path, Utf8PathBuf};
use clap::Args;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One value a file gives an option, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub value: Value,
    pub origin: Origin,
}

/// The values a configuration sets explicitly, by concrete option path
/// (`fleet.hosts.web1.macs`), and the members of attribute sets it names. Defaults are not in here.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: BTreeMap<String, Defined>,
    members: Vec<Member>,
}

#[derive(Debug, Clone)]
struct Defined {
    spec: &'static OptionSpec,
    name: Option<String>,
    setting: Setting,
}

/// A member of an attribute set of submodules (`fleet.hosts.web1`) and where it first appears.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Member {
    /// The set's path: `fleet.hosts`.
    pub set: &'static str,
    pub name: String,
    pub origin: Origin,
}

impl Settings {
    /// Records a definition of an option outside any attribute set of submodules.
    pub fn define(&mut self, spec: &'static OptionSpec, value: Value, origin: Origin) -> Result<(), Diagnostic> {
        self.define_named(spec, None, value, origin)
    }

    /// Records a definition; `name` is the member's name for an option inside an attribute set
    /// of submodules (`web1` for `fleet.hosts.<name>.macs`), and the member is recorded too.
    /// Lists from several definitions are concatenated (as the NixOS module system merges
    /// `listOf`); any other option defined twice with different values is an error naming both
    /// places.
    pub fn define_named(&mut self, spec: &'static OptionSpec, name: Option<&str>, value: Value, origin: Origin) -> Result<(), Diagnostic> {
        let path = spec.concrete(name);
        if let (Some(set), Some(name)) = (spec.named_set(), name) {
            self.member(set, name, origin.clone());
        }
        match self.values.get_mut(&path) {
            None => {
                self.values.insert(path, Defined { spec, name: name.map(str::to_string), setting: Setting { value, origin } });
                Ok(())
            }
            Some(Defined { setting: existing, .. }) => match (&mut existing.value, value) {
                (Value::Array(have), Value::Array(more)) => {
                    have.extend(more);
                    Ok(())
                }
                (have, value) if *have == value => Ok(()),
                (_, value) => Err(Diagnostic::new(
                    origin,
                    format!(
                        "`{path}` is defined twice with different values ({} here, {} at {})",
                        schema::describe(&value),
                        schema::describe(&existing.value),
                        existing.origin
                    ),
                )
                .option(&path)),
            },
        }
    }

    /// Records that member `name` of the attribute set `set` exists (`fleet.hosts.web1 = { };`
    /// makes a host that sets nothing); the first place it appears is kept.
    pub fn member(&mut self, set: &'static str, name: &str, origin: Origin) {
        if !self.members.iter().any(|m| m.set == set && m.name == name) {
            self.members.push(Member { set, name: name.to_string(), origin });
        }
    }

    /// A definition by concrete path (`customInstaller.rootDevice`, `fleet.hosts.web1.macs`).
    pub fn get(&self, path: &str) -> Option<&Setting> {
        self.values.get(path).map(|d| &d.setting)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.members.is_empty()
    }

    /// Every definition with its option and member name, for the checks of `json_only`.
    fn definitions(&self) -> impl Iterator<Item = (&'static OptionSpec, Option<&str>, &Setting)> {
        self.values.values().map(|d| (d.spec, d.name.as_deref(), &d.setting))
    }
}

/// One option's effective value, for `nixos-pxe options`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Effective {
    /// The concrete dotted path: `fleet.hosts.web1.customInstaller.wipe`.
    pub option: String,
    pub value: Value,
    pub origin: Origin,
    /// The path's segments (a member's name may hold a dot).
    #[serde(skip)]
    pub segments: Vec<String>,
}

/// A configuration read and validated: the typed config and where every value came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: Config,
    pub effective: Vec<Effective>,
    /// The members of attribute sets (fleet hosts), with where each first appears.
    pub members: Vec<Member>,
    /// The file it was read from, for messages about missing facts.
    pub source: Utf8PathBuf,
}

impl Resolved {
    pub fn origin_of(&self, path: &str) -> Origin {
        self.effective.iter().find(|e| e.option == path).map_or(Origin::Default, |e| e.origin.clone())
    }

    /// Where member `name` of `set` first appears (for problems with the member as a whole).
    pub fn member_origin(&self, set: &str, name: &str) -> Origin {
        self.members.iter().find(|m| m.set == set && m.name == name).map_or_else(|| Origin::File { file: self.source.clone() }, |m| m.origin.clone())
    }
}

/// The problem with an option that only the JSON form may set, met in a Nix file.
pub fn json_only_in_nix(path: &str, origin: Origin) -> Diagnostic {
    Diagnostic::new(origin, format!("`{path}` is written by lib.mkFleet into the JSON configuration (config.json); a Nix file does not set it"))
        .option(path)
        .hint("leave it out: lib.mkFleet builds each host's system image and names it here")
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
        let settings = match mode {
            SourceMode::Static => static_nix::read(file)?,
            SourceMode::Eval => eval_nix::read(file)?,
            SourceMode::Auto => {
                if eval_nix::nix_available() {
                    eval_nix::read(file)?
                } else {
                    static_nix::read(file)?
                }
            }
        };
        let problems = nix_only_problems(&settings);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        settings
    };
    resolve(&settings, file)
}

/// Merges `settings` over the defaults, checks every value and the rules between options,
/// and builds the typed config. All problems are reported at once.
pub fn resolve(settings: &Settings, source: &Utf8Path) -> Result<Resolved, ConfigError> {
    let mut problems = Vec::new();
    let mut effective: Vec<Effective> = Vec::new();
    let mut take = |spec: &'static OptionSpec, name: Option<&str>, effective: &mut Vec<Effective>| {
        let path = spec.concrete(name);
        let (value, origin) = match (settings.get(&path), spec.default) {
            (Some(s), _) => (s.value.clone(), s.origin.clone()),
            (None, _) if spec.json_only => return,
            (None, SchemaDefault::Inherit(from)) => match effective.iter().find(|e| e.option == from) {
                Some(e) => (e.value.clone(), Origin::Inherited { option: from.to_string(), from: Box::new(e.origin.clone()) }),
                None => (spec.default.to_value(), Origin::Default),
            },
            (None, default) => (default.to_value(), Origin::Default),
        };
        if let Err(message) = spec.check(&value) {
            problems.push(Diagnostic::new(origin.clone(), message).option(&path));
        }
        let segments = spec.path.split('.').map(|s| if s == schema::NAME { name.unwrap_or(s).to_string() } else { s.to_string() }).collect();
        effective.push(Effective { option: path, value, origin, segments });
    };
    for spec in schema::OPTIONS.iter().filter(|s| s.named_set().is_none()) {
        take(spec, None, &mut effective);
    }
    // By name, so that every reader lists them alike (evaluation sorts attribute names).
    let mut members = settings.members.clone();
    members.sort_by(|a, b| (a.set, &a.name).cmp(&(b.set, &b.name)));
    for member in &members {
        for spec in schema::OPTIONS.iter().filter(|s| s.named_set() == Some(member.set)) {
            take(spec, Some(&member.name), &mut effective);
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    // Inherited values stay out of the tree: a host's `customInstaller` holds its overrides only.
    let tree = to_tree(effective.iter().filter(|e| !matches!(e.origin, Origin::Inherited { .. })).map(|e| (e.segments.as_slice(), e.value.clone())));
    let config: Config = serde_json::from_value(Value::Object(tree)).map_err(|e| {
        ConfigError::Invalid(vec![Diagnostic::new(
            Origin::File { file: source.to_owned() },
            format!("internal: the schema and the typed config disagree: {e}"),
        )])
    })?;
    let mut resolved = Resolved { config, effective, members, source: source.to_owned() };
    let cross = typed::cross_checks(&resolved);
    if !cross.is_empty() {
        return Err(ConfigError::Invalid(cross));
    }
    // Valid, so every MAC parses: the JSON form carries them in one spelling, GRUB's.
    for host in resolved.config.fleet.hosts.values_mut() {
        for mac in &mut host.macs {
            if let Ok(parsed) = mac.parse::<crate::config::fleet::Mac>() {
                *mac = parsed.to_string();
            }
        }
    }
    Ok(resolved)
}

/// The problems of a Nix file's settings that only its being Nix makes: an option of the JSON
/// form set in it.
fn nix_only_problems(settings: &Settings) -> Vec<Diagnostic> {
    settings
        .definitions()
        .filter(|(spec, ..)| spec.json_only)
        .map(|(spec, name, setting)| json_only_in_nix(&spec.concrete(name), setting.origin.clone()))
        .collect()
}

/// Builds the nested attribute set `{ a = { b = v; }; }` from paths given as segments.
pub fn to_tree<'a>(entries: impl IntoIterator<Item = (&'a [String], Value)>) -> Map<String, Value> {
    let mut root = Map::new();
    for (path, value) in entries {
        let Some((leaf, parts)) = path.split_last() else { continue };
        let mut node = &mut root;
        for part in parts {
            let entry = node.entry(part.clone()).or_insert_with(|| Value::Object(Map::new()));
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

/// Where the configuration comes from.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The configuration: a Nix file (a NixOS module setting nfsroot.*, customInstaller.*, bootServer.*) or its JSON form.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Utf8PathBuf,
    /// How to read a Nix file: static (syntax only), eval (nix eval --json), auto (eval when nix is on PATH).
    #[arg(long, value_enum, default_value = "auto")]
    pub source: SourceMode,
}

impl ConfigArgs {
    pub fn load(&self) -> Result<Resolved, ConfigError> {
        load(&self.config, self.source)
    }
}

/// For unit tests: the configuration that defines each (dotted option path, JSON value) of
/// `pairs`, resolved as if read from `source`.
#[cfg(test)]
pub fn resolved_from(pairs: &[(&str, Value)], source: &str) -> Resolved {
    let mut s = Settings::default();
    for (path, value) in pairs {
        let segments: Vec<&str> = path.split('.').collect();
        let schema::Lookup::Option { spec, name } = schema::lookup(&segments) else { panic!("{path} is no option") };
        s.define_named(spec, name.as_deref(), value.clone(), Origin::Default).expect("define");
    }
    resolve(&s, Utf8Path::new(source)).expect("valid")
}
