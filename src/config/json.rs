//! Reads a configuration written as JSON: the option tree as the Nix side's
//! `builtins.toJSON { inherit (config) nfsroot customInstaller bootServer fleet; }` writes it
//! (lib.mkFleet adds each host's `image`, which only this form may set).

use super::{ConfigError, Diagnostic, Settings};
use crate::origin::{Location, Origin};
use crate::schema;
use camino::Utf8Path;
use serde_json::Value;

pub fn read(file: &Utf8Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Io { path: file.to_owned(), source })?;
    parse(file, &text)
}

pub fn parse(file: &Utf8Path, text: &str) -> Result<Settings, ConfigError> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        Diagnostic::new(
            Origin::Defined(Location::new(file, e.line() as u32, e.column() as u32)),
            format!("not valid JSON: {e}"),
        )
    })?;
    let origin = Origin::File { file: file.to_owned() };
    let mut settings = Settings::default();
    let mut problems = Vec::new();
    walk(&root, &mut Vec::new(), &origin, &mut settings, &mut problems);
    if problems.is_empty() { Ok(settings) } else { Err(ConfigError::Invalid(problems)) }
}

fn walk(node: &Value, prefix: &mut Vec<String>, origin: &Origin, settings: &mut Settings, problems: &mut Vec<Diagnostic>) {
    let Value::Object(map) = node else {
        problems.push(Diagnostic::new(origin.clone(), format!("expected an object at `{}`, got {}", schema::dotted(prefix), schema::describe(node))));
        return;
    };
    for (key, value) in map {
        prefix.push(key.clone());
        match schema::lookup(prefix) {
            schema::Lookup::Option { spec, name } => {
                if let Err(d) = settings.define_named(spec, name.as_deref(), value.clone(), origin.clone()) {
                    problems.push(d);
                }
            }
            schema::Lookup::Prefix { member } => {
                if let Some((set, name)) = member {
                    settings.member(set, &name, origin.clone());
                }
                walk(value, prefix, origin, settings, problems);
            }
            schema::Lookup::Unknown => {
                let path = schema::dotted(prefix);
                let mut d = Diagnostic::new(origin.clone(), format!("unknown option `{path}`"));
                if let Some(near) = schema::nearest(&path) {
                    d = d.hint(format!("did you mean `{near}`?"));
                }
                problems.push(d);
            }
        }
        prefix.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_json_becomes_settings() {
        let s = parse(
            Utf8Path::new("c.json"),
            r#"{"nfsroot":{"bootLoader":{"linuxPnPInterface":"eth1"}},"bootServer":{"nameServers":["10.0.0.1"]}}"#,
        )
        .expect("valid");
        assert_eq!(s.get("nfsroot.bootLoader.linuxPnPInterface").map(|s| &s.value), Some(&Value::from("eth1")));
        assert!(s.get("customInstaller.rootDevice").is_none());
    }

    #[test]
    fn unknown_keys_and_bad_json_are_reported() {
        let err = parse(Utf8Path::new("c.json"), r#"{"customInstaller":{"rootDev":"/dev/sdb"}}"#).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown option `customInstaller.rootDev`"), "{text}");
        assert!(text.contains("did you mean `customInstaller.rootDevice`"), "{text}");
        let err = parse(Utf8Path::new("c.json"), "{\n  \"nfsroot\": ,\n}").unwrap_err();
        assert!(err.to_string().starts_with("c.json:2:"), "{err}");
    }

    #[test]
    fn fleet_hosts_with_images_and_overrides() {
        let s = parse(
            Utf8Path::new("c.json"),
            r#"{"fleet":{"maxAttempts":2,"hosts":{"web1":{"macs":["52:54:00:00:00:01"],"image":"systems/a.tar.zst","customInstaller":{"networking":{"useDHCP":true}}},"empty":{}}}}"#,
        )
        .expect("valid");
        assert_eq!(s.get("fleet.hosts.web1.image").map(|s| &s.value), Some(&Value::from("systems/a.tar.zst")));
        assert_eq!(s.get("fleet.hosts.web1.customInstaller.networking.useDHCP").map(|s| &s.value), Some(&Value::from(true)));
        assert_eq!(s.get("fleet.maxAttempts").map(|s| &s.value), Some(&Value::from(2)));
        let err = parse(Utf8Path::new("c.json"), r#"{"fleet":{"hosts":{"web1":{"customInstaller":{"target":{"flake":"x#y"}}}}}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown option `fleet.hosts.web1.customInstaller.target`"), "{err}");
    }
}
