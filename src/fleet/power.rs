//! The fleet's power commands: `fleet power`, `fleet reinstall --power-cycle` and `fleet apply`.
//! Which hosts (named one by one, or `all` spelled out and confirmed), what each one's BMC is
//! sent (a dry run prints it and sends nothing), and the record of every action in the fleet's
//! state: who asked, when, the BMC, every call and its answer.

use super::decide::{Decision, decide};
use super::store::{PowerAction, PowerOutcome, Store, StoreError};
use crate::bmc::{self, BmcError, Findings, PowerRequest, Step};
use crate::config::fleet::{Fleet, HostSpec};
use crate::config::typed::FirmwareSetting;

/// The word that means every host of the fleet.
pub const ALL: &str = "all";

/// Why a power command cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("{0}")]
    Hosts(String),
    #[error("`{command}` would act on every host of the fleet ({count}: {names}); add --yes to say so (or answer yes when asked on a terminal)")]
    NotConfirmed { command: String, count: usize, names: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The hosts `target` names: `all`, or names separated by commas, each a host of `fleet`.
pub fn select<'a>(fleet: &'a Fleet, target: &str) -> Result<Vec<&'a HostSpec>, PowerError> {
    let known = || fleet.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ");
    if target == ALL {
        if fleet.host(ALL).is_some() {
            return Err(PowerError::Hosts(format!(
                "\"{ALL}\" is both the word for every host and the name of a host of the fleet: rename that host, or list every host by name"
            )));
        }
        return Ok(fleet.hosts.iter().collect());
    }
    let mut chosen: Vec<&HostSpec> = Vec::new();
    for name in target.split(',') {
        let name = name.trim();
        if name.is_empty() {
            return Err(PowerError::Hosts(format!("\"{target}\" has an empty host name; name hosts as HOST or HOST,HOST,... or say \"{ALL}\"")));
        }
        let host = fleet.host(name).ok_or_else(|| PowerError::Hosts(format!("no host {name} in the fleet; it has {}", known())))?;
        if !chosen.iter().any(|h| h.name == host.name) {
            chosen.push(host);
        }
    }
    Ok(chosen)
}

/// Whether a command on `hosts` chosen by `target` may go on: `all` needs `yes` (or a "yes"
/// typed on a terminal); named hosts need nothing more.
pub fn confirm(command: &str, target: &str, hosts: &[&HostSpec], yes: bool, ask: &mut dyn FnMut(&str) -> Option<String>) -> Result<(), PowerError> {
    if target != ALL || yes {
        return Ok(());
    }
    let names = hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ");
    let question = format!("`{command}` acts on every host of the fleet ({}: {names}). Type yes to go on: ", hosts.len());
    match ask(&question) {
        Some(answer) if answer.trim() == "yes" => Ok(()),
        _ => Err(PowerError::NotConfirmed { command: command.to_string(), count: hosts.len(), names }),
    }
}

/// The Unix account running this, and who it is for under sudo: `root (sudo by alice)`.
pub fn requested_by() -> String {
    // SAFETY: getuid cannot fail; getpwuid_r writes into the buffers given and returns a pointer
    // into them (or null), read before they go out of scope.
    let uid = unsafe { libc::getuid() };
    let mut name = format!("uid {uid}");
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0u8; 4096];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buffer.as_mut_ptr().cast(), buffer.len(), &mut result) };
    if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
        name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned();
    }
    match std::env::var("SUDO_USER") {
        Ok(user) if !user.is_empty() && user != name => format!("{name} (sudo by {user})"),
        _ => name,
    }
}

/// Whether the host boots by UEFI (IPMI's boot override then asks for an EFI boot).
fn uefi(host: &HostSpec) -> bool {
    host.install.firmware != FirmwareSetting::Bios
}

/// The host's BMC, or why there is none to reach.
fn bmc_of(host: &HostSpec) -> Result<&crate::config::bmc::BmcSpec, String> {
    host.bmc.as_ref().ok_or_else(|| format!("{}: has no BMC in the configuration (fleet.hosts.{}.bmc.address): power it by hand", host.name, host.name))
}

/// What a dry run prints for `host`: every call, in order; `mark` is said where the reinstall
/// is marked.
pub fn dry_run(host: &HostSpec, steps: &[Step], mark: Option<&str>) -> Result<String, String> {
    let spec = bmc_of(host)?;
    let mut text = format!("{} ({}, as {}):\n", host.name, spec.describe(), spec.user);
    for step in steps {
        if let (Step::Power(_), Some(mark)) = (step, mark) {
            text.push_str(&format!("  ({mark})\n"));
        }
        for call in bmc::describe(spec, &[*step], uefi(host)) {
            text.push_str(&format!("  {call}\n"));
        }
    }
    Ok(text)
}

/// One host's action done: its record (already stored) and the line to print.
pub struct Done {
    pub record: PowerAction,
    pub error: Option<BmcError>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn summary(found: &Findings) -> String {
    let mut parts = Vec::new();
    if let Some(before) = &found.before {
        parts.push(format!("was {before}"));
    }
    if let Some(boot) = &found.boot {
        let kept = if boot.once { String::new() } else { " (the BMC keeps it for every boot, not once: serve sends an installed host to its disk)".into() };
        parts.push(format!("boot override {} {}{kept}", boot.target, boot.enabled));
    }
    match (&found.reset, &found.after) {
        (Some(reset), Some(after)) => parts.push(format!("reset {reset:?}, now {after}")),
        (Some(reset), None) => parts.push(format!("reset {reset:?}")),
        (None, _) if found.before.is_some() => parts.push("no reset needed".into()),
        _ => {}
    }
    parts.join("; ")
}

/// Runs `steps` on `host`'s BMC and records the action in `store`, done or failed.
/// `before_power` runs after the override is read back and before the reset.
pub fn act(store: &dyn Store, host: &HostSpec, action: &str, steps: &[Step], before_power: &mut dyn FnMut() -> Result<(), String>) -> Result<Done, PowerError> {
    let requested_at = now_ms();
    let spec = match bmc_of(host) {
        Ok(spec) => spec,
        Err(why) => return Err(PowerError::Hosts(why)),
    };
    let fail = |kind| BmcError { host: host.name.clone(), bmc: spec.describe(), kind: Box::new(kind) };
    let (found, error, calls) = match bmc::connect(&host.name, spec, uefi(host)) {
        Err(e) => (Findings::default(), Some(e), Vec::new()),
        Ok(mut client) => {
            let (found, failure) = bmc::run(client.as_mut(), steps, before_power);
            (found, failure.map(fail), client.calls().to_vec())
        }
    };
    let done_so_far = summary(&found);
    let record = PowerAction {
        id: 0,
        host: host.name.clone(),
        action: action.to_string(),
        requested_by: requested_by(),
        requested_at,
        finished_at: now_ms(),
        bmc: spec.describe(),
        outcome: if error.is_some() { PowerOutcome::Failed } else { PowerOutcome::Done },
        summary: match &error {
            None => done_so_far,
            Some(e) if done_so_far.is_empty() => e.kind.to_string(),
            Some(e) => format!("{done_so_far}; then: {}", e.kind),
        },
        calls: calls.iter().map(|c| format!("{} => {}", c.request, c.answer)).collect::<Vec<_>>().join("\n"),
    };
    let id = store.record_power_action(&record)?;
    Ok(Done { record: PowerAction { id, ..record }, error })
}

/// `fleet apply`'s hosts: those of `hosts` whose wanted generation is ahead of the installed one
/// and that serve would install now; the others with why they are left alone.
pub fn ahead<'a>(store: &dyn Store, fleet: &Fleet, hosts: &[&'a HostSpec]) -> Result<(Vec<&'a HostSpec>, Vec<String>), StoreError> {
    let mut go = Vec::new();
    let mut skipped = Vec::new();
    for host in hosts {
        let state = store.host(&host.name, host.generation)?;
        let installed = state.installed_generation;
        match decide(Some(host), &state, fleet.unknown_hosts) {
            Decision::Install { .. } | Decision::Reinstall { .. } if installed.is_none_or(|g| g < host.generation) => go.push(*host),
            Decision::Hold { why } => skipped.push(format!("{}: held, not power-cycled: {why}", host.name)),
            _ => skipped.push(format!(
                "{}: generation {} is installed already{}; not power-cycled",
                host.name,
                installed.unwrap_or(host.generation),
                if state.reinstall_requested { " (a reinstall is requested: `fleet reinstall --power-cycle` it)" } else { "" }
            )),
        }
    }
    Ok((go, skipped))
}

/// The steps of a `fleet power` request.
pub fn power_steps(request: PowerRequest) -> Vec<Step> {
    bmc::steps_for(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(names: &[&str]) -> Fleet {
        let mut tree = serde_json::to_value(crate::config::resolve(&Default::default(), camino::Utf8Path::new("t.nix")).expect("defaults").config).expect("json");
        let hosts: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), serde_json::json!({ "macs": [format!("52:54:00:00:00:{:02x}", i + 1)], "generation": 1, "target": { "directory": "/w", "flake": null } })))
            .collect();
        tree["fleet"]["hosts"] = serde_json::Value::Object(hosts);
        Fleet::from_config(&serde_json::from_value(tree).expect("config")).expect("fleet")
    }

    #[test]
    fn hosts_are_named_one_by_one_or_all() {
        let f = fleet(&["db7", "web1", "web2"]);
        let names = |t: &str| select(&f, t).map(|h| h.iter().map(|h| h.name.clone()).collect::<Vec<_>>()).map_err(|e| e.to_string());
        assert_eq!(names("db7"), Ok(vec!["db7".to_string()]));
        assert_eq!(names("web2,db7,web2"), Ok(vec!["web2".to_string(), "db7".to_string()]));
        assert_eq!(names("all"), Ok(vec!["db7".to_string(), "web1".to_string(), "web2".to_string()]));
        assert_eq!(names("db8"), Err("no host db8 in the fleet; it has db7, web1, web2".to_string()));
        assert!(names("db7,,web1").unwrap_err().contains("empty host name"));
        assert!(names("").is_err(), "no implicit all");
        let g = fleet(&["all", "web1"]);
        assert!(select(&g, "all").unwrap_err().to_string().contains("both the word for every host and the name of a host"));
    }

    #[test]
    fn all_needs_a_yes() {
        let f = fleet(&["db7", "web1"]);
        let all = select(&f, "all").expect("all");
        let mut never = |_: &str| -> Option<String> { panic!("named hosts are not asked about") };
        assert!(confirm("fleet power all cycle", "db7", &all[..1], false, &mut never).is_ok());
        let mut no_terminal = |_: &str| None;
        let err = confirm("fleet power all cycle", "all", &all, false, &mut no_terminal).unwrap_err().to_string();
        assert!(err.contains("would act on every host of the fleet (2: db7, web1); add --yes"), "{err}");
        let mut asked = String::new();
        let mut says_y = |q: &str| {
            asked = q.to_string();
            Some("y\n".to_string())
        };
        assert!(confirm("fleet power all cycle", "all", &all, false, &mut says_y).is_err(), "only \"yes\" is yes");
        assert!(asked.contains("(2: db7, web1)"), "{asked}");
        let mut says_yes = |_: &str| Some("yes\n".to_string());
        assert!(confirm("fleet power all cycle", "all", &all, false, &mut says_yes).is_ok());
        assert!(confirm("fleet power all cycle", "all", &all, true, &mut no_terminal).is_ok());
    }

    #[test]
    fn requested_by_names_the_account() {
        let who = requested_by();
        assert!(!who.is_empty() && !who.starts_with("uid "), "{who}");
    }
}
