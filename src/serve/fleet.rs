//! serve's fleet: the per-host GRUB configuration at `nixos-pxe/hosts/mac-<mac>.cfg`, made on
//! each request (over TFTP and HTTP alike) from the fleet and the store by
//! [`decide`](crate::fleet::decide), the attempts' tokens, and the installers' reports.
//!
//! Tokens: an install decision hands out an attempt with a new random token, stored hashed; the
//! plain token is kept only in this process's memory, for as long as the attempt is `Pending`,
//! so that GRUB fetching the file again (it does: `[ -s FILE ]`, then `configfile FILE`) gets the
//! same one. After a restart serve no longer has it: the next request replaces that `Pending`
//! attempt by a new one (the old is recorded `Replaced`, which costs no attempt). An attempt
//! that has started (`Running`) needs no plain token any more: its reports are checked against
//! the stored hash, across restarts.
//!
//! Bindings: serve's DHCP tells this service the address each fleet MAC was seen with
//! ([`crate::serve::dhcp::Observer`]); they take effect at once in this process's memory (before
//! the DHCP answer goes out) and are written to the store by a thread of their own, in batches:
//! the DHCP thread never waits for the store's sync to the disk (tens of milliseconds each on a
//! busy disk, and 200 machines booting at once made the last wait 13 s for its lease). At start
//! serve binds again the fleet MACs its lease file holds leases for, so a binding a crash kept
//! from the store comes back. A fleet host's file with its
//! token, and an attempt, go only to a request from the address bound to that MAC; reports are
//! taken only from an address bound to one of the host's MACs. Any other asker gets a file that
//! does not install ([`grub::unbound_cfg`]) and changes nothing. `fleet.trustBootNetwork` turns
//! this off (for `serve --dhcp off`, where serve sees no DHCP).

use crate::config::Resolved;
use crate::fleet::decide::{Decision, HostState, Outcome, decide};
use crate::render::host_grub::{self as grub, KernelFrom, Served};
use crate::config::fleet::{Fleet, HostSpec, Mac};
use crate::fleet::status::{self, HostStatus};
use crate::fleet::store::{Accepted, BindingChange, FleetHost, HandOut, HandedOut, Refused, Report, Store, StoreError};
use crate::fleet::token;
use crate::secure_boot::decision::HostDecision;
use crate::serve::dhcp::Observer;
use crate::serve::limits::Throttle;
use crate::serve::leases::HwAddr;
use crate::serve::tftp::{Generated, Refusal};
use crate::serve::tftp_packet::ErrorCode;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use crate::serve::report_spool::Spool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

/// How GRUB and the installer reach serve's HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// bootServer.address; without it, the address the request came in on.
    pub address: Option<Ipv4Addr>,
    /// The HTTP port, or None when serve serves no HTTP: then the install entry loads the
    /// kernel over TFTP and carries no attempt, token or report address (nothing can report).
    pub http_port: Option<u16>,
    /// Load the kernel over HTTP (when there is HTTP) rather than TFTP.
    pub kernel_over_http: bool,
}

impl Endpoint {
    /// The server as GRUB's `(http,SERVER)` device names it. Port 80 is left out, so that any
    /// GRUB can use it; another port is written `ADDRESS:PORT`, which Debian's GRUB 2.06 (its
    /// patch net-read-bracketed-ipv6-addr.patch parses it in net.c) and GRUB 2.12 (upstream
    /// commit ac8a37dda, "net/http: Allow use of non-standard TCP/IP ports", in http.c) both
    /// take; upstream GRUB 2.06 has no port at all and would look the whole text up as a name.
    pub fn grub_http_server(address: IpAddr, port: u16) -> String {
        if port == 80 { address.to_string() } else { format!("{address}:{port}") }
    }
}

/// Which protocol a configuration was asked over (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Tftp,
    Http,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Tftp => "tftp",
            Via::Http => "http",
        }
    }
}

pub struct FleetService {
    resolved: Resolved,
    fleet: Fleet,
    store: Arc<dyn Store>,
    endpoint: Endpoint,
    /// The plain tokens of the `Pending` attempts this process handed out, by (host, generation,
    /// attempt).
    tokens: Mutex<HashMap<(String, u32, u32), String>>,
    /// One lock per host: decide-and-hand-out is one step for each host (two requests at once
    /// get one attempt), while other hosts' requests go on.
    host_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// The addresses the fleet's MACs are bound to, as this process last saw or read them.
    bindings: Mutex<HashMap<Mac, Ipv4Addr>>,
    /// Writes the bindings' changes to the store.
    writer: BindingWriter,
    /// Refusals said at most once per MAC and interval.
    throttle: Mutex<Throttle>,
    /// Reports taken while the store could not be reached, written when it can be again.
    spool: Option<Spool>,
    /// The store could not be reached at the last call (said once when it goes, once when back).
    away: AtomicBool,
    /// The fleet's hosts are not recorded yet (the store was away when serve started).
    unsynced: AtomicBool,
    /// One writer of the kept reports at a time (each is written once, in order).
    flushing: Mutex<()>,
}

/// How long a pending attempt that another boot server sharing the store handed out is left to
/// that server's host (GRUB fetches its file, loads the kernel and the installer reports
/// `started` in well under this) before this server takes it for lost and replaces it.
pub const OTHER_SERVERS_PENDING: std::time::Duration = std::time::Duration::from_secs(180);

/// Which per-host file a machine asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostFile {
    /// `mac-<MAC>.cfg`: GRUB's configuration (the NFS-root mode).
    Grub,
    /// `mac-<MAC>.json`: the decision, for the signed installer of Secure Boot mode.
    Decision,
}

/// What a request for a per-host file gets.
enum Asked {
    /// The MAC is a fleet host's, bound to another address than the asker's.
    Unbound,
    Answer(Answer),
}

/// What a fleet machine gets.
enum Answer {
    Decided(Decision, Option<String>),
    /// No decision now: the file waits and asks again.
    Wait(String),
}

/// What became of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// The store took it.
    Accepted(Accepted),
    /// The store could not be reached: kept in the spool, written when it can be (202).
    Kept,
}

impl Reported {
    /// The attempt's outcome after it, when the store took it.
    pub fn status(&self) -> Option<crate::fleet::store::AttemptStatus> {
        match self {
            Reported::Accepted(a) => Some(a.status),
            Reported::Kept => None,
        }
    }
}

impl FleetService {
    /// Serves `resolved`'s fleet with `store`; records the fleet's hosts in the store (later, if
    /// the store cannot be reached now). `spool`: where reports wait while the store is away
    /// (None: they are answered 500 and the installer retries).
    pub fn new(resolved: Resolved, fleet: Fleet, store: Arc<dyn Store>, endpoint: Endpoint, spool: Option<Spool>) -> Result<FleetService, StoreError> {
        let host_locks = fleet.hosts.iter().map(|h| (h.name.clone(), Arc::default())).collect();
        let writer = BindingWriter::start(Arc::clone(&store)).map_err(|e| StoreError::Backend(format!("cannot start the bindings' writer thread: {e}")))?;
        let service = FleetService {
            resolved,
            fleet,
            store,
            endpoint,
            writer,
            tokens: Mutex::new(HashMap::new()),
            host_locks: Mutex::new(host_locks),
            bindings: Mutex::new(HashMap::new()),
            throttle: Mutex::new(Throttle::default()),
            spool,
            away: AtomicBool::new(false),
            unsynced: AtomicBool::new(true),
            flushing: Mutex::new(()),
        };
        match service.catch_up() {
            Ok(()) => {}
            Err(StoreError::Unavailable(why)) => service.went_away(&why),
            Err(e) => return Err(e),
        }
        Ok(service)
    }

    /// What the store missed while it was away, in order: the fleet's hosts and their
    /// bindings, then the kept reports. Called before every decision and every report, and
    /// every few seconds by [`FleetService::keep_up`].
    pub fn catch_up(&self) -> Result<(), StoreError> {
        if self.unsynced.load(Ordering::Acquire) {
            let hosts: Vec<FleetHost> = self.fleet.hosts.iter().map(|h| FleetHost { name: h.name.clone(), macs: h.macs.clone(), generation: h.generation }).collect();
            self.store.sync_fleet(&hosts)?;
            let macs: Vec<Mac> = self.fleet.hosts.iter().flat_map(|h| h.macs.iter().copied()).collect();
            let found = self.store.bindings(&macs)?;
            let mut bindings = self.bindings.lock().unwrap_or_else(PoisonError::into_inner);
            // What this process saw while the store was away is newer than the store's (and on
            // its way there: the writer keeps what it could not write and tries again).
            for (mac, address) in found {
                bindings.entry(mac).or_insert(address);
            }
            drop(bindings);
            self.unsynced.store(false, Ordering::Release);
        }
        if let Some(spool) = &self.spool
            && !spool.is_empty()
        {
            let _one_writer = self.flushing.lock().unwrap_or_else(PoisonError::into_inner);
            let kept = spool.read().map_err(StoreError::Backend)?;
            let mut written = 0;
            let mut result = Ok(());
            for report in &kept {
                match self.store.report(report) {
                    Ok(accepted) => {
                        tracing::info!(host = report.host.as_str(), generation = report.generation, attempt = report.attempt, event = report.event.as_str(), status = accepted.status.as_str(), "fleet: kept report written");
                        self.forget_token(report, &accepted);
                    }
                    Err(Refused::Store(e)) => {
                        result = Err(e);
                        break;
                    }
                    Err(why) => tracing::warn!(host = report.host.as_str(), generation = report.generation, attempt = report.attempt, event = report.event.as_str(), why = %why, "fleet: kept report refused by the store"),
                }
                written += 1;
            }
            if written > 0 {
                spool.drop_first(written).map_err(StoreError::Backend)?;
            }
            result?;
        }
        if self.away.swap(false, Ordering::AcqRel) {
            tracing::warn!(store = self.store_place().as_str(), "fleet: the store is back: deciding and taking reports again");
        }
        Ok(())
    }

    /// Tries [`FleetService::catch_up`] every `interval` until `stop`; says once a minute that
    /// the store is still away.
    pub fn keep_up(&self, interval: std::time::Duration, stop: &AtomicBool) {
        let mut waited = std::time::Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(200));
            waited += std::time::Duration::from_millis(200);
            if waited < interval {
                continue;
            }
            waited = std::time::Duration::ZERO;
            let pending = self.away.load(Ordering::Acquire) || self.unsynced.load(Ordering::Acquire) || self.spool.as_ref().is_some_and(|s| !s.is_empty());
            if !pending {
                continue;
            }
            match self.catch_up() {
                Ok(()) => {}
                Err(StoreError::Unavailable(why)) => self.went_away(&why),
                Err(e) => tracing::error!("fleet: cannot write what the store missed: {e}"),
            }
        }
    }

    fn store_place(&self) -> String {
        if self.store.shared() { "the shared database".into() } else { "the state file".into() }
    }

    /// Says (once when it happens, then at most once a minute) that the store is away.
    fn went_away(&self, why: &str) {
        let first = !self.away.swap(true, Ordering::AcqRel);
        let kept = self.spool.as_ref().and_then(|s| s.read().ok()).map_or(0, |r| r.len());
        if first {
            tracing::error!(kept, "fleet: the store cannot be reached: {why}; no new attempts are handed out (fleet hosts get a file that waits and asks again), reports are kept in the state directory until it is back");
        } else {
            self.warn_once("store away", |quiet| tracing::error!(kept, quiet, "fleet: the store is still away: {why}"));
        }
    }

    /// Whether the store is away (as the last call found it).
    pub fn store_away(&self) -> bool {
        self.away.load(Ordering::Acquire)
    }

    fn forget_token(&self, report: &Report, accepted: &Accepted) {
        if accepted.status != crate::fleet::store::AttemptStatus::Pending {
            let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
            tokens.remove(&(report.host.clone(), report.generation, report.attempt));
        }
    }

    /// Whether tokens and reports are tied to the addresses serve's DHCP saw.
    pub fn binds(&self) -> bool {
        !self.fleet.trust_boot_network
    }

    /// The address `mac` is bound to: this process's own record, else the store's (another
    /// serve on the same store may have seen it), read once what this process saw is written
    /// there (an unbinding may still be on its way). With a shared store the store's word comes
    /// first (another server may have bound the MAC since); this process's record answers while
    /// the store is away.
    fn bound_address(&self, mac: Mac) -> Option<Ipv4Addr> {
        let cached = self.bindings.lock().unwrap_or_else(PoisonError::into_inner).get(&mac).copied();
        if cached.is_some() && !self.store.shared() {
            return cached;
        }
        self.writer.flush(BOUND_ADDRESS_FLUSH);
        match self.store.bindings(&[mac]) {
            Ok(found) => {
                let found = found.first().map(|(_, a)| *a);
                let mut bindings = self.bindings.lock().unwrap_or_else(PoisonError::into_inner);
                match (found, self.store.shared()) {
                    (Some(a), true) => {
                        bindings.insert(mac, a);
                        Some(a)
                    }
                    (None, true) => bindings.remove(&mac).and(None),
                    // A lease seen meanwhile is newer than the store's.
                    (Some(a), false) => Some(*bindings.entry(mac).or_insert(a)),
                    (None, false) => bindings.get(&mac).copied(),
                }
            }
            Err(_) => cached,
        }
    }

    /// Why `client` may not act for `mac` (None: it may).
    fn unbound(&self, mac: Mac, client: IpAddr) -> Option<String> {
        if !self.binds() {
            return None;
        }
        match (self.bound_address(mac), client) {
            (Some(bound), IpAddr::V4(c)) if bound == c => None,
            (Some(bound), _) => Some(format!("{mac} is bound to {bound}, the address serve's DHCP saw it with, not {client}")),
            (None, _) => Some(format!("serve's DHCP has not seen {mac}, so no address is bound to it")),
        }
    }

    /// Says `what` at most once per `key` and interval.
    fn warn_once(&self, key: &str, what: impl FnOnce(u64)) {
        let allowed = self.throttle.lock().unwrap_or_else(PoisonError::into_inner).allow(key, std::time::Instant::now());
        if let Some(quiet) = allowed {
            what(quiet);
        }
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// For a path below the TFTP root (or the HTTP root): None when it is not in
    /// `nixos-pxe/hosts/` (a file on disk then), else the MAC its name gives and which form is
    /// asked for, or why not. With a fleet every name in that directory is serve's, so that stale
    /// files of `render` are not handed out beside it.
    pub fn mac_of(relative: &Path) -> Option<Result<(Mac, HostFile), String>> {
        let parent = relative.parent()?;
        if parent != Path::new(grub::TFTP_DIR) {
            return None;
        }
        let name = relative.file_name()?.to_str().unwrap_or_default();
        let asked = name.strip_prefix("mac-").and_then(|n| {
            n.strip_suffix(".cfg").map(|m| (m, HostFile::Grub)).or_else(|| n.strip_suffix(".json").map(|m| (m, HostFile::Decision)))
        });
        Some(match asked.map(|(m, form)| (m.parse::<Mac>(), form)) {
            Some((Ok(mac), form)) => Ok((mac, form)),
            Some((Err(e), _)) => Err(e.to_string()),
            None => Err(format!("{name} is not mac-<MAC>.cfg or mac-<MAC>.json")),
        })
    }

    /// The per-host file for `mac` in the form asked for.
    pub fn host_file(&self, mac: Mac, form: HostFile, via: Via, client: SocketAddr, local: IpAddr) -> Result<Vec<u8>, String> {
        match form {
            HostFile::Grub => self.host_config(mac, via, client, local),
            HostFile::Decision => self.host_decision(mac, via, client, local).and_then(|d| serde_json::to_vec(&d).map_err(|e| e.to_string())),
        }
    }

    /// The GRUB configuration for `mac`, asked for by `client` over `via`, arriving at `local`.
    /// A fleet host's, asked for from another address than its MAC's, installs nothing.
    pub fn host_config(&self, mac: Mac, via: Via, client: SocketAddr, local: IpAddr) -> Result<Vec<u8>, String> {
        match self.answer(mac, via, client)? {
            Asked::Unbound => Ok(grub::unbound_cfg(&mac, &client.ip().to_string()).into_bytes()),
            // Rendering needs no lock: the attempt is recorded and its token known.
            Asked::Answer(Answer::Decided(decision, token)) => self.render(mac, self.fleet.host_by_mac(&mac), &decision, token.as_deref(), local),
            Asked::Answer(Answer::Wait(why)) => Ok(grub::wait_cfg(&mac, &why).into_bytes()),
        }
    }

    /// The decision for `mac` as the signed installer of Secure Boot mode reads it
    /// (`mac-<MAC>.json`): the same decision, binding and attempt as the GRUB file's, the words
    /// that file would put on the installer's command line instead of a GRUB configuration.
    pub fn host_decision(&self, mac: Mac, via: Via, client: SocketAddr, local: IpAddr) -> Result<HostDecision, String> {
        let spec = self.fleet.host_by_mac(&mac);
        Ok(match self.answer(mac, via, client)? {
            Asked::Unbound => HostDecision::Wait { why: format!("{mac} is not bound to {}, the address that asked: nothing is handed out to it", client.ip()) },
            Asked::Answer(Answer::Wait(why)) => HostDecision::Wait { why },
            Asked::Answer(Answer::Decided(decision, token)) => match (&decision, spec) {
                (Decision::LocalBoot { why }, _) => HostDecision::LocalBoot { why: why.clone() },
                (Decision::Hold { why }, _) => HostDecision::Hold { why: why.clone() },
                (Decision::Install { attempt } | Decision::Reinstall { attempt }, Some(spec)) => {
                    let address = self.endpoint.address.map(IpAddr::V4).unwrap_or(local);
                    let mut words = format!("nixos-pxe.host={} nixos-pxe.generation={} nixos-pxe.mac={mac}", spec.name, spec.generation);
                    if let (Some(token), Some(port)) = (token, self.endpoint.http_port) {
                        words.push_str(&format!(" nixos-pxe.attempt={attempt} nixos-pxe.token={token} nixos-pxe.report=http://{address}:{port}"));
                    }
                    HostDecision::Install { words }
                }
                (Decision::Install { .. } | Decision::Reinstall { .. }, None) => return Err(format!("internal: an install decision for {mac}, which is in no fleet host")),
            },
        })
    }

    /// What `mac`, asked for by `client`, gets: nothing when the MAC is bound to another
    /// address, else the decision (and an attempt's token) or a wait.
    fn answer(&self, mac: Mac, via: Via, client: SocketAddr) -> Result<Asked, String> {
        let spec = self.fleet.host_by_mac(&mac);
        if let Some(spec) = spec
            && let Some(why) = self.unbound(mac, client.ip())
        {
            self.warn_once(&format!("file {mac}"), |quiet| {
                tracing::warn!(%mac, host = spec.name.as_str(), %client, via = via.as_str(), quiet, "fleet: no install from this address: {why}")
            });
            return Ok(Asked::Unbound);
        }
        let answer = match self.catch_up().map_err(Refused::Store).and_then(|()| self.decide_and_hand_out(mac, spec, via, client)) {
            Ok(answer) => answer,
            Err(Refused::Store(StoreError::Unavailable(why))) => {
                self.went_away(&why);
                Answer::Wait(format!("the fleet's state cannot be read now ({why})"))
            }
            Err(e) => return Err(e.to_string()),
        };
        if let Answer::Wait(why) = &answer {
            self.warn_once(&format!("wait {mac}"), |quiet| {
                tracing::warn!(%mac, host = spec.map_or("-", |s| s.name.as_str()), %client, via = via.as_str(), quiet, "fleet: no decision now, the machine waits and asks again: {why}")
            });
        }
        Ok(Asked::Answer(answer))
    }

    /// The decision for `mac` and, for an install, the attempt's token: one step per host
    /// (under its lock), so that two requests at once hand out one attempt.
    fn decide_and_hand_out(&self, mac: Mac, spec: Option<&HostSpec>, via: Via, client: SocketAddr) -> Result<Answer, Refused> {
        let host_lock = spec.map(|s| {
            let mut locks = self.host_locks.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(locks.entry(s.name.clone()).or_default())
        });
        let _one_at_a_time = host_lock.as_ref().map(|l| l.lock().unwrap_or_else(PoisonError::into_inner));
        let tokens = || self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        // A number another process took in between (a second serve on the same store) makes
        // the decision again with what it wrote.
        for _ in 0..3 {
            let state = match spec {
                Some(s) => self.store.host(&s.name, s.generation)?,
                None => HostState::default(),
            };
            let decision = decide(spec, &state, self.fleet.unknown_hosts);
            let (Some(attempt), Some(spec)) = (decision.attempt(), spec) else {
                self.log_decision(mac, spec, &decision, via, client, "");
                return Ok(Answer::Decided(decision, None));
            };
            let key = (spec.name.clone(), spec.generation, attempt);
            let pending = state.attempts.iter().any(|a| a.number == attempt && a.outcome == Outcome::Pending);
            let known = tokens().get(&key).cloned();
            if pending && let Some(token) = known {
                self.log_decision(mac, Some(spec), &decision, via, client, "the same pending attempt again");
                return Ok(Answer::Decided(decision, Some(token)));
            }
            // Another boot server sharing the store may have just handed this attempt out: its
            // host is loading it now. Only one that was not started for a long while was lost.
            if pending && self.store.shared() {
                let at = self.store.handed_out_at(&spec.name, spec.generation, attempt)?.unwrap_or(0);
                let age = now_ms().saturating_sub(at);
                if age < OTHER_SERVERS_PENDING.as_millis() as i64 {
                    return Ok(Answer::Wait(format!(
                        "attempt {attempt} of {} was handed out {} s ago, not by this boot server (another one sharing the database, or this one before it restarted); it is taken for lost after {} s",
                        spec.name,
                        age / 1000,
                        OTHER_SERVERS_PENDING.as_secs()
                    )));
                }
            }
            // A new attempt, or in place of a pending one whose token this process does not have.
            let (number, replaces) = match pending {
                true => (state.attempts.iter().map(|a| a.number).max().unwrap_or(attempt) + 1, Some(attempt)),
                false => (attempt, None),
            };
            let token = token::random().map_err(|e| StoreError::Backend(format!("no random token: {e}")))?;
            let out = HandOut { host: spec.name.clone(), generation: spec.generation, attempt: number, token_hash: token::hash(&token), mac, replaces };
            match self.store.hand_out(&out)? {
                HandedOut::Taken => continue,
                HandedOut::Created => {
                    let decision = match decision {
                        Decision::Reinstall { .. } => Decision::Reinstall { attempt: number },
                        _ => Decision::Install { attempt: number },
                    };
                    let note = match replaces {
                        Some(old) => format!("replaces pending attempt {old}, whose token was lost when serve restarted"),
                        None => "a new attempt".into(),
                    };
                    self.log_decision(mac, Some(spec), &decision, via, client, &note);
                    let mut tokens = tokens();
                    tokens.retain(|(host, _, _), _| host != &spec.name);
                    tokens.insert((spec.name.clone(), spec.generation, number), token.clone());
                    return Ok(Answer::Decided(decision, Some(token)));
                }
            }
        }
        Ok(Answer::Wait(format!("{mac}: another boot server kept taking the attempt numbers")))
    }

    fn render(&self, mac: Mac, spec: Option<&HostSpec>, decision: &Decision, token: Option<&str>, local: IpAddr) -> Result<Vec<u8>, String> {
        let address = self.endpoint.address.map(IpAddr::V4).unwrap_or(local);
        let text = match (decision.attempt(), token, self.endpoint.http_port) {
            (Some(attempt), Some(token), Some(port)) => {
                let report_url = format!("http://{address}:{port}");
                let kernel = match self.endpoint.kernel_over_http {
                    true => KernelFrom::Http { server: Endpoint::grub_http_server(address, port) },
                    false => KernelFrom::Tftp,
                };
                let served = Served { attempt, token, report_url: &report_url, kernel };
                grub::host_cfg(&self.resolved, &mac, spec, decision, Some(&served))
            }
            // No HTTP: the install entry as `render` writes it (kernel over TFTP, no reports).
            _ => grub::host_cfg(&self.resolved, &mac, spec, decision, None),
        };
        text.map(String::into_bytes).map_err(|e| e.to_string())
    }

    fn log_decision(&self, mac: Mac, spec: Option<&HostSpec>, decision: &Decision, via: Via, client: SocketAddr, note: &str) {
        let host = spec.map_or("-", |s| s.name.as_str());
        let generation = spec.map_or(0, |s| s.generation);
        match decision {
            Decision::Install { attempt } => {
                tracing::info!(%mac, host, generation, attempt, decision = "install", why = note, via = via.as_str(), %client, "fleet: decision")
            }
            Decision::Reinstall { attempt } => {
                tracing::info!(%mac, host, generation, attempt, decision = "reinstall", why = note, via = via.as_str(), %client, "fleet: decision")
            }
            Decision::LocalBoot { why } => {
                tracing::info!(%mac, host, generation, decision = "local-boot", why = why.as_str(), via = via.as_str(), %client, "fleet: decision")
            }
            Decision::Hold { why } => {
                tracing::warn!(%mac, host, generation, decision = "hold", why = why.as_str(), via = via.as_str(), %client, "fleet: decision")
            }
        }
    }

    /// Checks and records a report from `client`; logs it either way. While the store is away
    /// a report from the right address is kept in the spool ([`Reported::Kept`]).
    pub fn report(&self, report: &Report, client: SocketAddr) -> Result<Reported, Refused> {
        let (host, generation, attempt, event) = (report.host.as_str(), report.generation, report.attempt, report.event.as_str());
        let result = self
            .check_address(report, client)
            .and_then(|()| report.check().map_err(Refused::Invalid))
            .and_then(|()| self.catch_up().map_err(Refused::Store))
            .and_then(|()| self.store.report(report).map(Reported::Accepted));
        // Only a fleet host's report is kept (from its own address, checked above): what a
        // stranger posts for a made-up host waits for nothing.
        let spool = self.spool.as_ref().filter(|_| self.fleet.host(&report.host).is_some());
        let result = match (result, spool) {
            (Err(Refused::Store(StoreError::Unavailable(why))), Some(spool)) => {
                self.went_away(&why);
                match spool.keep(&report.clone().clipped()) {
                    Ok(()) => Ok(Reported::Kept),
                    Err(e) => Err(Refused::Store(StoreError::Unavailable(format!("{why}; and it cannot be kept: {e}")))),
                }
            }
            (Err(Refused::Store(StoreError::Unavailable(why))), None) => {
                self.went_away(&why);
                Err(Refused::Store(StoreError::Unavailable(why)))
            }
            (other, _) => other,
        };
        match &result {
            Ok(Reported::Accepted(accepted)) => {
                let step = report.step.as_deref().unwrap_or("");
                let message = report.message.as_deref().unwrap_or("");
                tracing::info!(host, generation, attempt, event, step, message, status = accepted.status.as_str(), %client, "fleet: report accepted");
                self.forget_token(report, accepted);
            }
            Ok(Reported::Kept) => tracing::warn!(host, generation, attempt, event, %client, "fleet: report kept until the store is back"),
            Err(why) => tracing::warn!(host, generation, attempt, event, %client, why = %why, "fleet: report refused"),
        }
        result
    }

    /// A report is taken only from an address bound to one of its host's MACs.
    fn check_address(&self, report: &Report, client: SocketAddr) -> Result<(), Refused> {
        let Some(host) = self.fleet.host(&report.host) else {
            // An unknown host's report finds no attempt: the store says so without naming hosts.
            return Ok(());
        };
        let mut reasons = Vec::new();
        for mac in &host.macs {
            match self.unbound(*mac, client.ip()) {
                None => return Ok(()),
                Some(why) => reasons.push(why),
            }
        }
        Err(Refused::WrongAddress(format!(
            "reports for {} are taken only from the addresses serve's DHCP saw its MACs with, and {} is not one ({})",
            host.name,
            client.ip(),
            reasons.join("; ")
        )))
    }

    /// Every host, as `nixos-pxe fleet status` shows it.
    pub fn status(&self) -> Result<Vec<HostStatus>, StoreError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        status::collect(self.store.as_ref(), Some(&self.fleet), now)
    }
}

impl Generated for FleetService {
    fn generate(&self, relative: &Path, client: SocketAddr, local: SocketAddr) -> Option<Result<Vec<u8>, Refusal>> {
        let (mac, form) = match FleetService::mac_of(relative)? {
            Ok(asked) => asked,
            Err(why) => return Some(Err(Refusal { code: ErrorCode::FileNotFound, message: format!("file not found: {why}") })),
        };
        Some(self.host_file(mac, form, Via::Tftp, client, local.ip()).map_err(|e| {
            tracing::error!(%mac, %client, "fleet: cannot make the configuration: {e}");
            Refusal { code: ErrorCode::NotDefined, message: "the boot server cannot decide now; see its log".into() }
        }))
    }
}

impl Observer for FleetService {
    /// A fleet MAC seen with `address` is bound to it; an address serve's DHCP gave a machine
    /// outside the fleet is no fleet MAC's any more. A stranger's claim in proxy mode (a REQUEST
    /// to the site's server, which a neighbour can broadcast for any address) unbinds nothing:
    /// the site's server, not the claim, decides who has the address. In effect at once; written
    /// to the store in the background.
    fn seen(&self, hw: HwAddr, address: Ipv4Addr, leased: bool) {
        let Ok(bytes) = <[u8; 6]>::try_from(hw.as_bytes()) else { return };
        let mac = Mac::new(bytes);
        let mut bindings = self.bindings.lock().unwrap_or_else(PoisonError::into_inner);
        if self.fleet.host_by_mac(&mac).is_some() {
            // A shared store may have heard of another address from another server since.
            if bindings.get(&mac) == Some(&address) && !self.store.shared() {
                return;
            }
            let changed = bindings.get(&mac) != Some(&address);
            bindings.retain(|_, a| *a != address);
            bindings.insert(mac, address);
            self.writer.write(BindingChange::Bind(mac, address));
            if changed {
                tracing::info!(%mac, %address, "fleet: bound (its host's file and reports from this address only)");
            }
        } else if leased && let Some(old) = bindings.iter().find(|(_, a)| **a == address).map(|(m, _)| *m) {
            bindings.remove(&old);
            self.writer.write(BindingChange::Unbind(address));
            tracing::info!(mac = %old, %address, by = %mac, "fleet: unbound (the address is another machine's now)");
        }
    }
}

impl FleetService {
    /// Waits until every binding seen so far is in the store (at most 30 s).
    pub fn flush_bindings(&self) {
        self.writer.flush(Duration::from_secs(30));
    }
}

impl Drop for FleetService {
    fn drop(&mut self) {
        self.writer.flush(Duration::from_secs(30));
    }
}

/// How long a host's file waits for the bindings' writer before the store is read (with a shared
/// store, on every fetch): past it, this process's record answers.
const BOUND_ADDRESS_FLUSH: Duration = Duration::from_secs(5);
/// How often the writer tries again changes the store did not take (it was away).
const BINDINGS_RETRY: Duration = Duration::from_secs(5);
/// Changes the writer keeps while the store is away; past it the oldest are dropped (said).
/// Each is one lease seen; a segment's pool turns over far fewer while a database restarts.
const BINDINGS_KEPT: usize = 65_536;

/// What the writer thread is given.
enum Queued {
    Change(BindingChange),
    /// Answered once every change queued before it was tried (written, or kept for a retry).
    Flush(mpsc::Sender<()>),
}

/// The thread that writes the bindings' changes to the store: all those queued while it wrote the
/// last ones go in one transaction, one sync of the disk. Changes the store did not take (it was
/// away) are kept, in order, and tried again every [`BINDINGS_RETRY`] and with the next ones.
struct BindingWriter {
    queue: mpsc::Sender<Queued>,
}

impl BindingWriter {
    fn start(store: Arc<dyn Store>) -> std::io::Result<BindingWriter> {
        let (queue, queued) = mpsc::channel::<Queued>();
        std::thread::Builder::new().name("fleet-bindings".into()).spawn(move || {
            let mut pending: Vec<BindingChange> = Vec::new();
            let mut throttle = Throttle::default();
            let (mut ended, mut failing) = (false, false);
            while !ended || !pending.is_empty() {
                let first = if pending.is_empty() {
                    queued.recv().ok()
                } else {
                    match queued.recv_timeout(BINDINGS_RETRY) {
                        Ok(q) => Some(q),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            // The service is gone: one last try, then the thread ends.
                            ended = true;
                            None
                        }
                    }
                };
                if first.is_none() && pending.is_empty() {
                    break;
                }
                let mut flushes = Vec::new();
                for q in first.into_iter().chain(queued.try_iter()) {
                    match q {
                        Queued::Change(c) => pending.push(c),
                        Queued::Flush(done) => flushes.push(done),
                    }
                }
                if !pending.is_empty() {
                    match store.record_bindings(&pending) {
                        Ok(()) => {
                            if std::mem::take(&mut failing) {
                                tracing::warn!(changes = pending.len(), "fleet: the bindings kept while the store was away are written");
                            }
                            pending.clear();
                        }
                        Err(e) => {
                            failing = true;
                            if pending.len() > BINDINGS_KEPT {
                                let dropped = pending.len() - BINDINGS_KEPT;
                                pending.drain(..dropped);
                                tracing::error!(dropped, "fleet: more binding changes than kept while the store is away: the oldest are dropped (their hosts are bound again at their next lease)");
                            }
                            if let Some(quiet) = throttle.allow("failed", std::time::Instant::now()) {
                                tracing::error!(changes = pending.len(), quiet, "fleet: cannot record the bindings in the store: {e} (they hold in this process and are tried again every {} s)", BINDINGS_RETRY.as_secs());
                            }
                            if ended {
                                break;
                            }
                        }
                    }
                }
                for done in flushes {
                    let _ = done.send(());
                }
            }
        })?;
        Ok(BindingWriter { queue })
    }

    fn write(&self, change: BindingChange) {
        if self.queue.send(Queued::Change(change)).is_err() {
            tracing::error!(?change, "fleet: the bindings' writer thread has stopped: this binding is not recorded in the store");
        }
    }

    /// Waits (at most `limit`) until every change queued so far was tried.
    fn flush(&self, limit: Duration) {
        let (done, flushed) = mpsc::channel();
        if self.queue.send(Queued::Flush(done)).is_ok() {
            let _ = flushed.recv_timeout(limit);
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_in_the_hosts_directory_are_generated() {
        let mac = |p: &str| FleetService::mac_of(Path::new(p));
        let a1 = "52:54:00:00:00:a1".parse().expect("mac");
        assert_eq!(mac("nixos-pxe/hosts/mac-52:54:00:00:00:a1.cfg"), Some(Ok((a1, HostFile::Grub))));
        assert_eq!(mac("nixos-pxe/hosts/mac-52-54-00-00-00-A1.cfg"), Some(Ok((a1, HostFile::Grub))));
        assert_eq!(mac("nixos-pxe/hosts/mac-52:54:00:00:00:a1.json"), Some(Ok((a1, HostFile::Decision))));
        assert!(matches!(mac("nixos-pxe/hosts/mac-zz.cfg"), Some(Err(why)) if why.contains("not a MAC address")));
        assert!(matches!(mac("nixos-pxe/hosts/readme"), Some(Err(why)) if why.contains("is not mac-<MAC>.cfg or mac-<MAC>.json")));
        assert_eq!(mac("nixos/bzImage"), None);
        assert_eq!(mac("nixos-pxe/hosts"), None);
        assert_eq!(mac("x/nixos-pxe/hosts/mac-52:54:00:00:00:a1.cfg"), None);
    }

    use crate::fleet::sqlite::SqliteStore;
    use crate::serve::dhcp::Observer;
    use crate::fleet::store::{AttemptStatus, Event};
    use serde_json::{Value, json};

    fn resolved() -> Resolved {
        let pairs: &[(&str, Value)] = &[
            ("nfsroot.bootLoader.efinetDHCPInterface", json!("auto")),
            ("nfsroot.bootLoader.linuxPnPInterface", json!("auto")),
            ("bootServer.address", json!("10.42.0.1")),
            ("fleet.unknownHosts", json!("hold")),
            ("fleet.hosts.web1.macs", json!(["52:54:00:00:00:a1"])),
            ("fleet.hosts.web1.target.flake", json!("/f#web1")),
        ];
        crate::config::resolved_from(pairs, "fleet.nix")
    }

    fn service(dir: &Path, http_port: Option<u16>) -> FleetService {
        let s = service_as_stored(dir, http_port);
        // web1's NIC got CLIENT's address from serve's DHCP.
        s.seen(HwAddr::from(WEB1_MAC), CLIENT_IP, true);
        s
    }

    /// The service with only the bindings the store has.
    fn service_as_stored(dir: &Path, http_port: Option<u16>) -> FleetService {
        let resolved = resolved();
        let fleet = Fleet::from_config(&resolved.config).expect("fleet");
        let store = Arc::new(SqliteStore::open(dir).expect("store"));
        let endpoint = Endpoint { address: Some(Ipv4Addr::new(10, 42, 0, 1)), http_port, kernel_over_http: true };
        FleetService::new(resolved, fleet, store, endpoint, None).expect("service")
    }

    const WEB1_MAC: Mac = Mac::new([0x52, 0x54, 0, 0, 0, 0xa1]);
    const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 100);
    const NEIGHBOUR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 42, 0, 150)), 1234);

    const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 42, 0, 100)), 1234);
    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 42, 0, 1));

    fn fetch(s: &FleetService, mac: &str) -> String {
        String::from_utf8(s.host_config(mac.parse().expect("mac"), Via::Tftp, CLIENT, LOCAL).expect("config")).expect("utf-8")
    }

    /// (attempt, token) of an install entry.
    fn install_args(cfg: &str) -> (u32, String) {
        let arg = |name: &str| cfg.split_whitespace().find_map(|w| w.strip_prefix(name)).map(|v| v.trim_end_matches(';').to_string());
        let attempt = arg("nixos-pxe.attempt=").unwrap_or_else(|| panic!("no attempt in {cfg}"));
        (attempt.parse().expect("number"), arg("nixos-pxe.token=").unwrap_or_else(|| panic!("no token in {cfg}")))
    }

    fn report(attempt: u32, token: &str, event: Event) -> Report {
        Report::new("web1", 1, attempt, token, event)
    }

    #[test]
    fn a_host_gets_one_attempt_until_it_starts_and_a_stranger_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = service(dir.path(), Some(8080));
        let stranger = fetch(&s, "52:54:00:00:00:ff");
        assert!(stranger.contains("HOLD 52:54:00:00:00:ff") && !stranger.contains("linux "), "{stranger}");
        let first = fetch(&s, "52:54:00:00:00:a1");
        assert!(first.contains("linux (http,10.42.0.1:8080)/nixos/bzImage "), "{first}");
        assert!(first.contains("nixos-pxe.report=http://10.42.0.1:8080 "), "{first}");
        let (attempt, token) = install_args(&first);
        assert_eq!((attempt, token.len()), (1, 43));
        // GRUB's `[ -s FILE ]` and `configfile FILE`: the same attempt, the same token.
        assert_eq!(fetch(&s, "52:54:00:00:00:a1"), first);
        assert_eq!(s.report(&report(1, &token, Event::Started), CLIENT).expect("started").status(), Some(AttemptStatus::Running));
        // It boots from the network again while running: abandoned, the next attempt.
        let (attempt, second) = install_args(&fetch(&s, "52:54:00:00:00:a1"));
        assert_eq!(attempt, 2);
        assert_ne!(second, token);
        assert!(matches!(s.report(&report(1, &token, Event::Step), CLIENT), Err(Refused::OldAttempt(_))));
        let hosts = s.status().expect("status");
        assert_eq!(hosts.iter().map(|h| (h.host.as_str(), h.state)).collect::<Vec<_>>(), vec![("web1", "handed-out")], "no row for the stranger");
    }

    #[test]
    fn after_a_restart_a_pending_attempt_is_replaced_and_a_running_one_still_reports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (attempt, running) = {
            let s = service(dir.path(), Some(80));
            let (attempt, token) = install_args(&fetch(&s, "52:54:00:00:00:a1"));
            s.report(&report(attempt, &token, Event::Started), CLIENT).expect("started");
            // The reboot of a crashed install: attempt 2 is handed out, not started.
            let (pending, _) = install_args(&fetch(&s, "52:54:00:00:00:a1"));
            assert_eq!(pending, 2);
            (attempt, token)
        };
        let s = service(dir.path(), Some(80));
        let cfg = fetch(&s, "52:54:00:00:00:a1");
        assert!(cfg.contains("linux (http,10.42.0.1)/nixos/bzImage "), "port 80 is left out: {cfg}");
        let (replacement, token) = install_args(&cfg);
        assert_eq!(replacement, 3, "the pending attempt whose token was lost is replaced");
        assert_eq!(install_args(&fetch(&s, "52:54:00:00:00:a1")), (3, token.clone()));
        let state = s.store.host("web1", 1).expect("state");
        assert_eq!(state.attempts.iter().map(|a| a.outcome.clone()).collect::<Vec<_>>(), vec![Outcome::Running, Outcome::Replaced, Outcome::Pending]);
        // The stored hashes outlive the process: attempt 3 reports after the restart; the old
        // running attempt 1 is refused as old, not as forged.
        s.report(&report(3, &token, Event::Started), CLIENT).expect("started after the restart");
        assert!(matches!(s.report(&report(attempt, &running, Event::Step), CLIENT), Err(Refused::OldAttempt(_))));
    }

    /// `nixos-pxe fleet reinstall` of the generation the disk has: the served install entry must
    /// not boot the disk because of the completion stamp the first install left on it; a first
    /// install's entry looks for it.
    #[test]
    fn a_requested_reinstall_is_not_undone_by_the_disk_s_stamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = service(dir.path(), Some(80));
        let stamp_search = "search --no-floppy --file --set=done /nixos-pxe/done-web1-g1";
        let first = fetch(&s, "52:54:00:00:00:a1");
        assert!(first.contains(stamp_search) && first.contains("installing generation 1, attempt 1"), "{first}");
        let (_, token) = install_args(&first);
        s.report(&report(1, &token, Event::Installed), CLIENT).expect("installed");
        assert!(fetch(&s, "52:54:00:00:00:a1").contains("web1 generation 1 is installed"), "installed: local boot");
        s.store.reinstall("web1").expect("reinstall");
        let again = fetch(&s, "52:54:00:00:00:a1");
        assert!(!again.contains("done-web1") && !again.contains("chainloader"), "{again}");
        assert!(again.contains("reinstalling generation 1, attempt 2") && again.contains(" nixos-pxe.attempt=2 "), "{again}");
        // Fetched again (GRUB does): the same pending attempt, still a reinstall.
        assert_eq!(fetch(&s, "52:54:00:00:00:a1"), again);
        let (_, token) = install_args(&again);
        s.report(&report(2, &token, Event::Installed), CLIENT).expect("installed");
        assert!(fetch(&s, "52:54:00:00:00:a1").contains("web1 generation 1 is installed"), "reinstalled: local boot again");
    }

    #[test]
    fn without_http_the_kernel_comes_over_tftp_and_nothing_can_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = service(dir.path(), None);
        let cfg = fetch(&s, "52:54:00:00:00:a1");
        assert!(cfg.contains("linux (tftp)/nixos/bzImage ") && !cfg.contains("nixos-pxe.token") && !cfg.contains("nixos-pxe.report"), "{cfg}");
        assert_eq!(fetch(&s, "52:54:00:00:00:a1"), cfg);
    }

    #[test]
    fn requests_at_once_get_one_attempt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = service(dir.path(), Some(80));
        let configs: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16).map(|_| scope.spawn(|| fetch(&s, "52:54:00:00:00:a1"))).collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        assert!(configs.iter().all(|c| c == &configs[0]), "all the same attempt and token");
        assert_eq!(install_args(&configs[0]).0, 1);
    }

    /// Issue 18: a neighbour with its own address fetching web1's file gets no token and makes
    /// no attempt; its reports with web1's token are refused; web1 itself is not disturbed.
    #[test]
    fn only_the_hosts_own_address_gets_its_token_and_is_heard() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = service(dir.path(), Some(80));
        let asked = |client: SocketAddr| String::from_utf8(s.host_config(WEB1_MAC, Via::Http, client, LOCAL).expect("config")).expect("utf-8");
        let neighbours = asked(NEIGHBOUR);
        assert!(!neighbours.contains("nixos-pxe.token") && !neighbours.contains("linux ") && neighbours.contains("no install from here"), "{neighbours}");
        assert!(s.store.host("web1", 1).expect("state").attempts.is_empty(), "the neighbour's fetch made an attempt");
        // web1 from its own address: attempt 1.
        let (attempt, token) = install_args(&asked(CLIENT));
        assert_eq!(attempt, 1);
        // The neighbour posts with web1's token from its own address: refused, nothing changes.
        for event in [Event::Started, Event::Installed, Event::Failed] {
            let refused = s.report(&Report { system: Some("/nix/store/made-up".into()), ..report(1, &token, event) }, NEIGHBOUR);
            assert!(matches!(refused, Err(Refused::WrongAddress(_))), "{event:?}: {refused:?}");
        }
        assert_eq!(s.store.host("web1", 1).expect("state").attempts.iter().map(|a| a.outcome.clone()).collect::<Vec<_>>(), vec![Outcome::Pending]);
        assert!(s.store.history("web1").expect("history").is_empty());
        // web1 installs as if nothing happened.
        s.report(&report(1, &token, Event::Started), CLIENT).expect("started from web1's address");
        // A stranger's claim of web1's address (proxy mode: a REQUEST to the site's server)
        // changes nothing; the address given to a stranger by serve's DHCP takes web1's binding.
        s.seen(HwAddr::new(&[2, 0, 0, 0, 0, 9]).expect("hw"), CLIENT_IP, false);
        s.report(&report(1, &token, Event::Step), CLIENT).expect("still web1's address");
        s.seen(HwAddr::new(&[2, 0, 0, 0, 0, 9]).expect("hw"), CLIENT_IP, true);
        assert!(matches!(s.report(&report(1, &token, Event::Step), CLIENT), Err(Refused::WrongAddress(_))));
        // A new lease for web1 binds again; the binding outlives the service (it is in the store).
        s.seen(HwAddr::from(WEB1_MAC), Ipv4Addr::new(10, 42, 0, 101), true);
        drop(s);
        let again = service_as_stored(dir.path(), Some(80));
        let moved = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 42, 0, 101)), 99);
        assert_eq!(again.bound_address(WEB1_MAC), Some(Ipv4Addr::new(10, 42, 0, 101)));
        again.report(&report(1, &token, Event::Step), moved).expect("from web1's new address");
    }

    /// A store whose bindings take `delay` to write, as a busy disk's sync does.
    struct SlowBindings {
        inner: SqliteStore,
        delay: std::time::Duration,
    }

    impl Store for SlowBindings {
        fn host(&self, host: &str, generation: u32) -> Result<HostState, StoreError> {
            self.inner.host(host, generation)
        }
        fn hand_out(&self, out: &HandOut) -> Result<HandedOut, StoreError> {
            self.inner.hand_out(out)
        }
        fn report(&self, report: &Report) -> Result<Accepted, Refused> {
            self.inner.report(report)
        }
        fn reinstall(&self, host: &str) -> Result<(), StoreError> {
            self.inner.reinstall(host)
        }
        fn sync_fleet(&self, hosts: &[FleetHost]) -> Result<(), StoreError> {
            self.inner.sync_fleet(hosts)
        }
        fn hosts(&self) -> Result<Vec<crate::fleet::store::HostRecord>, StoreError> {
            self.inner.hosts()
        }
        fn history(&self, host: &str) -> Result<Vec<crate::fleet::store::ReportRecord>, StoreError> {
            self.inner.history(host)
        }
        fn record_bindings(&self, changes: &[BindingChange]) -> Result<(), StoreError> {
            std::thread::sleep(self.delay);
            self.inner.record_bindings(changes)
        }
        fn bindings(&self, macs: &[Mac]) -> Result<Vec<(Mac, Ipv4Addr)>, StoreError> {
            self.inner.bindings(macs)
        }
        fn handed_out_at(&self, host: &str, generation: u32, attempt: u32) -> Result<Option<i64>, StoreError> {
            self.inner.handed_out_at(host, generation, attempt)
        }
        fn record_power_action(&self, action: &crate::fleet::store::PowerAction) -> Result<i64, StoreError> {
            self.inner.record_power_action(action)
        }
        fn power_actions(&self, host: Option<&str>, limit: u32) -> Result<Vec<crate::fleet::store::PowerAction>, StoreError> {
            self.inner.power_actions(host, limit)
        }
    }

    /// The DHCP thread tells the service of a lease and answers: it must not wait for the store
    /// (200 machines at once waited up to 13 s for their leases while each binding was synced).
    #[test]
    fn a_lease_binds_at_once_and_reaches_the_store_in_the_background() {
        let dir = tempfile::tempdir().expect("tempdir");
        let resolved = resolved();
        let fleet = Fleet::from_config(&resolved.config).expect("fleet");
        let store = Arc::new(SlowBindings { inner: SqliteStore::open(dir.path()).expect("store"), delay: std::time::Duration::from_millis(400) });
        let endpoint = Endpoint { address: Some(Ipv4Addr::new(10, 42, 0, 1)), http_port: Some(80), kernel_over_http: true };
        let s = FleetService::new(resolved, fleet, Arc::clone(&store) as Arc<dyn Store>, endpoint, None).expect("service");
        let started = std::time::Instant::now();
        s.seen(HwAddr::from(WEB1_MAC), CLIENT_IP, true);
        s.seen(HwAddr::new(&[2, 0, 0, 0, 0, 9]).expect("hw"), Ipv4Addr::new(10, 42, 0, 120), true);
        assert!(started.elapsed() < std::time::Duration::from_millis(200), "seen() waited {:?} for the store", started.elapsed());
        // In effect at once: web1's file from its address installs.
        let (attempt, _) = install_args(&fetch(&s, "52:54:00:00:00:a1"));
        assert_eq!(attempt, 1);
        s.flush_bindings();
        assert_eq!(store.inner.bindings(&[WEB1_MAC]).expect("bindings"), vec![(WEB1_MAC, CLIENT_IP)]);
    }

    /// fleet.trustBootNetwork: no binding is asked for (serve --dhcp off).
    #[test]
    fn a_trusted_network_ties_nothing_to_addresses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut resolved = resolved();
        resolved.config.fleet.trust_boot_network = true;
        let fleet = Fleet::from_config(&resolved.config).expect("fleet");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
        let endpoint = Endpoint { address: Some(Ipv4Addr::new(10, 42, 0, 1)), http_port: Some(80), kernel_over_http: true };
        let s = FleetService::new(resolved, fleet, store, endpoint, None).expect("service");
        assert!(!s.binds());
        let cfg = String::from_utf8(s.host_config(WEB1_MAC, Via::Tftp, NEIGHBOUR, LOCAL).expect("config")).expect("utf-8");
        let (_, token) = install_args(&cfg);
        s.report(&report(1, &token, Event::Started), NEIGHBOUR).expect("any address");
    }

    #[test]
    fn grub_gets_the_port_only_when_it_is_not_80() {
        let a = IpAddr::V4(Ipv4Addr::new(10, 42, 0, 1));
        assert_eq!(Endpoint::grub_http_server(a, 80), "10.42.0.1");
        assert_eq!(Endpoint::grub_http_server(a, 8080), "10.42.0.1:8080");
    }

    /// Kept reports written by many threads at once (every request writes them first): each
    /// once, in order. Checked: without the one-writer lock reports were written twice.
    #[test]
    fn kept_reports_are_written_once_whoever_writes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let resolved = resolved();
        let fleet = Fleet::from_config(&resolved.config).expect("fleet");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
        let endpoint = Endpoint { address: Some(Ipv4Addr::new(10, 42, 0, 1)), http_port: Some(80), kernel_over_http: true };
        let s = FleetService::new(resolved, fleet, store, endpoint, Some(Spool::new(dir.path()))).expect("service");
        s.seen(HwAddr::from(WEB1_MAC), CLIENT_IP, true);
        let (attempt, token) = install_args(&fetch(&s, "52:54:00:00:00:a1"));
        let spool = Spool::new(dir.path());
        for k in 0..30 {
            spool.keep(&Report { step: Some(format!("s{k}")), ..report(attempt, &token, Event::Step) }).expect("keep");
        }
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| s.catch_up().expect("catch up"));
            }
        });
        let steps: Vec<String> = s.store.history("web1").expect("history").into_iter().filter_map(|r| r.step).collect();
        assert_eq!(steps, (0..30).map(|k| format!("s{k}")).collect::<Vec<_>>());
        assert!(spool.is_empty());
    }

    /// A service on the PostgreSQL database `url`, with its spool in `dir`.
    fn service_on(url: &str, dir: &Path) -> FleetService {
        let resolved = resolved();
        let fleet = Fleet::from_config(&resolved.config).expect("fleet");
        let store = Arc::new(crate::fleet::postgres::PostgresStore::new(url, None).expect("store"));
        let endpoint = Endpoint { address: Some(Ipv4Addr::new(10, 42, 0, 1)), http_port: Some(80), kernel_over_http: true };
        let s = FleetService::new(resolved, fleet, store, endpoint, Some(Spool::new(dir))).expect("service");
        s.seen(HwAddr::from(WEB1_MAC), CLIENT_IP, true);
        s
    }

    /// Two boot servers on one database: the host asks both at once (or one, then the other):
    /// one attempt; the second server's answer waits instead of replacing the first's pending
    /// attempt (it is not lost: its host is loading it). Checked: without the wait, server B
    /// replaced it with attempt 2 (two install entries), and attempt 1's installer was refused.
    #[test]
    fn a_second_server_waits_for_the_first_one_s_pending_attempt() {
        let url = crate::fleet::pg_cluster::Cluster::shared().fresh_database("two").expect("database");
        let (da, db) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let (a, b) = (service_on(&url, da.path()), service_on(&url, db.path()));
        let (cfg_a, cfg_b) = std::thread::scope(|scope| {
            let ha = scope.spawn(|| fetch(&a, "52:54:00:00:00:a1"));
            let hb = scope.spawn(|| fetch(&b, "52:54:00:00:00:a1"));
            (ha.join().expect("thread"), hb.join().expect("thread"))
        });
        let installs: Vec<&String> = [&cfg_a, &cfg_b].into_iter().filter(|c| c.contains("nixos-pxe.token=")).collect();
        assert_eq!(installs.len(), 1, "one install entry:\n{cfg_a}\n---\n{cfg_b}");
        let waits = [&cfg_a, &cfg_b].into_iter().filter(|c| c.contains("no decision for 52:54:00:00:00:a1 now") && c.contains("not by this boot server")).count();
        assert_eq!(waits, 1, "{cfg_a}\n---\n{cfg_b}");
        let (attempt, token) = install_args(installs[0]);
        assert_eq!(attempt, 1);
        let state = a.store.host("web1", 1).expect("state");
        assert_eq!(state.attempts.iter().map(|a| a.outcome.clone()).collect::<Vec<_>>(), vec![Outcome::Pending]);
        // The installer of attempt 1 reports to the other server: taken (the binding is shared).
        let other = if cfg_a.contains("nixos-pxe.token=") { &b } else { &a };
        assert_eq!(other.report(&report(1, &token, Event::Started), CLIENT).expect("started").status(), Some(AttemptStatus::Running));
    }

    /// The database goes away mid-install: no decision (a file that waits), reports kept on the
    /// disk and answered as kept, written in order when it is back; the installed host then
    /// boots locally: nothing lost, no second install. Checked: without writing the kept
    /// reports before deciding, the spool was still full when the host asked again.
    #[test]
    fn while_the_database_is_away_nothing_is_handed_out_and_reports_wait() {
        let cluster = crate::fleet::pg_cluster::Cluster::start("serve-away", true).expect("server");
        let url = cluster.create_database("fleet").expect("database");
        let dir = tempfile::tempdir().expect("tempdir");
        let s = service_on(&url, dir.path());
        let (attempt, token) = install_args(&fetch(&s, "52:54:00:00:00:a1"));
        s.report(&report(attempt, &token, Event::Started), CLIENT).expect("started");
        cluster.stop_server("fast").expect("stop");
        let wait = fetch(&s, "52:54:00:00:00:a1");
        assert!(wait.contains("no decision for") && wait.contains("cannot be read now") && !wait.contains("linux ") && !wait.contains("token"), "{wait}");
        assert!(s.store_away());
        let step = Report { step: Some("unpack".into()), ..report(attempt, &token, Event::Step) };
        assert_eq!(s.report(&step, CLIENT).expect("kept"), Reported::Kept);
        let installed = Report { system: Some("/nix/store/s".into()), ..report(attempt, &token, Event::Installed) };
        assert_eq!(s.report(&installed, CLIENT).expect("kept"), Reported::Kept);
        // A neighbour's report is still refused by address, not kept; nor one for a host that
        // is not in the fleet.
        assert!(matches!(s.report(&installed, NEIGHBOUR), Err(Refused::WrongAddress(_))));
        let stranger = Report { host: "made-up".into(), ..installed.clone() };
        assert!(matches!(s.report(&stranger, NEIGHBOUR), Err(Refused::Store(StoreError::Unavailable(_)))));
        // The host reboots while the database is still away: it waits, it is not installed again.
        assert!(fetch(&s, "52:54:00:00:00:a1").contains("no decision for"));
        assert_eq!(Spool::new(dir.path()).read().expect("spool").len(), 2);
        cluster.start_server().expect("start");
        let back = fetch(&s, "52:54:00:00:00:a1");
        assert!(back.contains("web1 generation 1 is installed"), "{back}");
        assert!(!s.store_away() && Spool::new(dir.path()).is_empty());
        let events: Vec<Event> = s.store.history("web1").expect("history").iter().map(|r| r.event).collect();
        assert_eq!(events, vec![Event::Started, Event::Step, Event::Installed]);
        assert_eq!(s.store.host("web1", 1).expect("state").attempts.len(), 1, "one attempt");
    }
}
