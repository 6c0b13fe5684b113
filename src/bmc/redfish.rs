//! Redfish (DMTF DSP0266) over HTTPS with reqwest and rustls: the host's ComputerSystem, its
//! PowerState, the one-time boot override (`Boot.BootSourceOverrideTarget` with
//! `BootSourceOverrideEnabled: Once`) and the `ComputerSystem.Reset` action. HTTP Basic
//! authentication on every request; no redirects (credentials go to the configured BMC only);
//! each request bounded in time, and retried with backoff where a repeat cannot do anything twice.

use super::tls::{self, Refusal};
use super::{Bmc, BmcErrorKind, BootOverride, Call, PowerRequest, PowerState, Reset, Step, backoff};
use crate::config::bmc::{BmcProtocol, BmcSpec, BootTarget};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::time::Duration;

/// A connection that takes longer is a BMC that does not answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole request (BMCs are slow, but not this slow).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Tries of a request that may be repeated.
const TRIES: u32 = 3;

pub struct Redfish {
    base: String,
    spec: BmcSpec,
    client: Option<Client>,
    password: String,
    refusal: Refusal,
    /// The system's path, once found (or as bmc.systemId names it).
    system: Option<String>,
    /// The system's Reset action (its `target` and allowed reset types), once read.
    reset_target: Option<String>,
    reset_types: Option<Vec<String>>,
    calls: Vec<Call>,
}

/// Whether a request may be sent again after a failure that may have reached the BMC.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// GET and PATCH of the same value: doing it twice is doing it once.
    Idempotent,
    /// A reset: sent again only when the connection was never made.
    OnlyUnsent,
}

impl Redfish {
    pub fn new(host: &str, spec: &BmcSpec, password: String) -> Result<Redfish, BmcErrorKind> {
        let refusal = Refusal::default();
        let trust = spec.tls.as_ref().ok_or_else(|| BmcErrorKind::Setup("a Redfish BMC needs bmc.certificate or bmc.fingerprint".into()))?;
        let config = tls::client_config(trust, host, refusal.clone()).map_err(|e| BmcErrorKind::Setup(e.0))?;
        let client = Client::builder()
            .tls_backend_preconfigured(config)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| BmcErrorKind::Setup(format!("HTTP client: {e}")))?;
        Ok(Redfish { client: Some(client), password, refusal, ..Redfish::offline(spec) })
    }

    /// For describing calls only: sends nothing.
    pub fn offline(spec: &BmcSpec) -> Redfish {
        Redfish {
            base: format!("https://{}", spec.address.with_port(BmcProtocol::Redfish)),
            spec: spec.clone(),
            client: None,
            password: String::new(),
            refusal: Refusal::default(),
            system: spec.system_id.as_ref().map(|id| format!("/redfish/v1/Systems/{id}")),
            reset_target: None,
            reset_types: None,
            calls: Vec::new(),
        }
    }

    fn system_shown(&self) -> String {
        self.system.clone().unwrap_or_else(|| "/redfish/v1/Systems/<the one system it lists>".into())
    }

    /// One request with its retries; `Ok((status, body))` for any 2xx answer.
    fn request(&mut self, method: reqwest::Method, path: &str, body: Option<Value>, repeat: Repeat) -> Result<Value, BmcErrorKind> {
        let url = format!("{}{path}", self.base);
        let shown = match &body {
            Some(b) => format!("{method} {url} {b}"),
            None => format!("{method} {url}"),
        };
        let Some(client) = self.client.clone() else { return Err(BmcErrorKind::Setup("offline".into())) };
        let mut attempt = 0;
        loop {
            let mut request = client.request(method.clone(), &url).basic_auth(&self.spec.user, Some(&self.password)).header("Accept", "application/json");
            if let Some(b) = &body {
                request = request.json(b);
            }
            let outcome = request.send();
            attempt += 1;
            let last = attempt >= TRIES;
            match outcome {
                Err(e) => {
                    if let Some(why) = self.refusal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                        self.calls.push(Call { request: shown, answer: format!("TLS refused: {why}") });
                        return Err(BmcErrorKind::Certificate(why));
                    }
                    let detail = chain(&e);
                    let again = repeat == Repeat::Idempotent || e.is_connect();
                    if !again || last {
                        self.calls.push(Call { request: shown.clone(), answer: format!("no answer: {detail}") });
                        let tries = if attempt > 1 { format!(" ({attempt} tries)") } else { String::new() };
                        return Err(BmcErrorKind::Unreachable(format!("{shown}: {detail}{tries}; nothing was changed by this request")));
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().unwrap_or_default();
                    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if status.is_success() {
                        self.calls.push(Call { request: shown, answer: format!("{} {}", status.as_u16(), summary(&json)) });
                        return Ok(json);
                    }
                    let detail = format!("HTTP {status}: {}", redfish_error(&json, &text));
                    let retryable = status.is_server_error() && status != reqwest::StatusCode::NOT_IMPLEMENTED && repeat == Repeat::Idempotent;
                    if !retryable || last {
                        self.calls.push(Call { request: shown.clone(), answer: detail.clone() });
                        return Err(match status.as_u16() {
                            401 | 403 => BmcErrorKind::Credentials {
                                user: self.spec.user.clone(),
                                password_file: self.spec.password_file.clone(),
                                detail: format!("{shown} answered {detail}"),
                            },
                            _ => BmcErrorKind::Redfish { request: shown, detail },
                        });
                    }
                }
            }
            std::thread::sleep(backoff(attempt - 1));
        }
    }

    /// Finds the system (the Systems collection's one member, or the one bmc.systemId names).
    fn find_system(&mut self) -> Result<String, BmcErrorKind> {
        let collection = self.request(reqwest::Method::GET, "/redfish/v1/Systems", None, Repeat::Idempotent)?;
        let members: Vec<String> = collection["Members"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["@odata.id"].as_str().map(|s| s.trim_end_matches('/').to_string())).collect())
            .unwrap_or_default();
        let ids: Vec<&str> = members.iter().map(|m| m.rsplit('/').next().unwrap_or_default()).collect();
        match &self.spec.system_id {
            Some(id) => members
                .iter()
                .find(|m| m.rsplit('/').next() == Some(id.as_str()))
                .cloned()
                .ok_or_else(|| BmcErrorKind::Protocol(format!("it lists no system {id} (bmc.systemId); it lists {}", list(&ids)))),
            None if members.len() == 1 => Ok(members[0].clone()),
            None => Err(BmcErrorKind::Protocol(format!(
                "it lists {} systems ({}), so bmc.systemId must say which one is this host's",
                members.len(),
                list(&ids)
            ))),
        }
    }

    fn read_system(&mut self) -> Result<Value, BmcErrorKind> {
        let path = match &self.system {
            Some(p) if self.reset_target.is_some() => p.clone(),
            _ => {
                let found = self.find_system()?;
                self.system = Some(found.clone());
                found
            }
        };
        let system = self.request(reqwest::Method::GET, &path, None, Repeat::Idempotent)?;
        let action = &system["Actions"]["#ComputerSystem.Reset"];
        self.reset_target = Some(action["target"].as_str().map_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"), str::to_string));
        self.reset_types = action["ResetType@Redfish.AllowableValues"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect());
        Ok(system)
    }

    /// The ResetType for `reset`: the first this BMC allows of the usual ones.
    fn reset_type(&self, reset: Reset) -> Result<&'static str, BmcErrorKind> {
        let candidates: &[&'static str] = match reset {
            Reset::On => &["On", "ForceOn"],
            Reset::ForceOff => &["ForceOff"],
            Reset::Restart => &["ForceRestart", "PowerCycle"],
        };
        match &self.reset_types {
            None => Ok(candidates[0]),
            Some(allowed) => candidates.iter().copied().find(|c| allowed.iter().any(|a| a == c)).ok_or_else(|| {
                BmcErrorKind::Protocol(format!("its Reset action allows {}, none of {}", allowed.join(", "), candidates.join(", ")))
            }),
        }
    }
}

fn list(ids: &[&str]) -> String {
    if ids.is_empty() { "none".into() } else { ids.join(", ") }
}

/// An error and its causes on one line (reqwest's own message says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// What an answer says that matters here, short.
fn summary(json: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(state) = json["PowerState"].as_str() {
        parts.push(format!("PowerState={state}"));
    }
    if let Some(target) = json["Boot"]["BootSourceOverrideTarget"].as_str() {
        parts.push(format!("BootSourceOverrideTarget={target}"));
        if let Some(enabled) = json["Boot"]["BootSourceOverrideEnabled"].as_str() {
            parts.push(format!("BootSourceOverrideEnabled={enabled}"));
        }
    }
    if let Some(members) = json["Members"].as_array() {
        let ids: Vec<&str> = members.iter().filter_map(|m| m["@odata.id"].as_str()).collect();
        parts.push(format!("Members={}", ids.join(",")));
    }
    parts.join(" ")
}

/// A Redfish error body's message ids and messages, else the body's start.
fn redfish_error(json: &Value, text: &str) -> String {
    let error = &json["error"];
    let mut parts: Vec<String> = error["@Message.ExtendedInfo"]
        .as_array()
        .map(|infos| {
            infos
                .iter()
                .map(|i| match (i["MessageId"].as_str(), i["Message"].as_str()) {
                    (Some(id), Some(m)) => format!("{id}: {m}"),
                    (Some(id), None) => id.to_string(),
                    (None, Some(m)) => m.to_string(),
                    (None, None) => String::new(),
                })
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(message) = error["message"].as_str()
        && !parts.iter().any(|p| p.contains(message))
    {
        parts.insert(0, message.to_string());
    }
    if parts.is_empty() {
        let body: String = text.trim().chars().take(200).collect();
        if body.is_empty() { "(no body)".into() } else { body }
    } else {
        parts.join("; ")
    }
}

fn wire_target(target: BootTarget) -> &'static str {
    match target {
        BootTarget::Pxe => "Pxe",
        BootTarget::UefiHttp => "UefiHttp",
    }
}

impl Bmc for Redfish {
    fn describe(&self, step: Step) -> Vec<String> {
        let system = format!("{}{}", self.base, self.system_shown());
        match step {
            Step::ReadState => vec![format!("GET {}/redfish/v1/Systems", self.base), format!("GET {system}")],
            Step::BootOnce(target) => vec![
                format!("PATCH {system} {}", json!({ "Boot": { "BootSourceOverrideTarget": wire_target(target), "BootSourceOverrideEnabled": "Once" } })),
                format!("GET {system} (read the override back)"),
            ],
            Step::Power(request) => {
                let reset = |t: &str| format!("POST {system}/Actions/ComputerSystem.Reset {}", json!({ "ResetType": t }));
                match request {
                    PowerRequest::Status => vec![],
                    PowerRequest::On => vec![format!("{} (unless it is on)", reset("On"))],
                    PowerRequest::Off => vec![format!("{} (unless it is off)", reset("ForceOff"))],
                    PowerRequest::Cycle => vec![format!("{} if it is on, {} if it is off", reset("ForceRestart"), json!({ "ResetType": "On" }))],
                }
            }
            Step::WaitForState => vec![format!("GET {system} each second until its PowerState is the one asked for (at most {} s)", super::POWER_WAIT.as_secs())],
        }
    }

    fn power_state(&mut self) -> Result<PowerState, BmcErrorKind> {
        let system = self.read_system()?;
        Ok(match system["PowerState"].as_str() {
            Some("On") => PowerState::On,
            Some("Off") => PowerState::Off,
            Some(other) => PowerState::Other(other.to_string()),
            None => return Err(BmcErrorKind::Protocol("its system has no PowerState".into())),
        })
    }

    fn boot_once(&mut self, target: BootTarget) -> Result<BootOverride, BmcErrorKind> {
        let path = match &self.system {
            Some(p) => p.clone(),
            None => {
                self.read_system()?;
                self.system.clone().unwrap_or_default()
            }
        };
        let wanted = wire_target(target);
        let body = json!({ "Boot": { "BootSourceOverrideTarget": wanted, "BootSourceOverrideEnabled": "Once" } });
        self.request(reqwest::Method::PATCH, &path, Some(body), Repeat::Idempotent)?;
        let system = self.request(reqwest::Method::GET, &path, None, Repeat::Idempotent)?;
        let boot = &system["Boot"];
        let got = boot["BootSourceOverrideTarget"].as_str().unwrap_or("(none)").to_string();
        let enabled = boot["BootSourceOverrideEnabled"].as_str().unwrap_or("(none)").to_string();
        if got != wanted || enabled == "Disabled" {
            return Err(BmcErrorKind::OverrideNotTaken {
                wanted: format!("BootSourceOverrideTarget {wanted}, BootSourceOverrideEnabled Once"),
                got: format!("BootSourceOverrideTarget {got}, BootSourceOverrideEnabled {enabled}"),
            });
        }
        Ok(BootOverride { target: got, once: enabled == "Once", enabled })
    }

    fn reset(&mut self, reset: Reset) -> Result<(), BmcErrorKind> {
        let reset_type = self.reset_type(reset)?;
        let target = self.reset_target.clone().unwrap_or_else(|| format!("{}/Actions/ComputerSystem.Reset", self.system.clone().unwrap_or_default()));
        self.request(reqwest::Method::POST, &target, Some(json!({ "ResetType": reset_type })), Repeat::OnlyUnsent).map(drop)
    }

    fn calls(&self) -> &[Call] {
        &self.calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redfish_errors_are_read_from_their_extended_info() {
        let body = json!({ "error": { "code": "Base.1.0.GeneralError", "message": "A general error has occurred.",
            "@Message.ExtendedInfo": [ { "MessageId": "Base.1.8.PropertyValueNotInList", "Message": "The value Floppy for BootSourceOverrideTarget is not allowed." } ] } });
        assert_eq!(
            redfish_error(&body, ""),
            "A general error has occurred.; Base.1.8.PropertyValueNotInList: The value Floppy for BootSourceOverrideTarget is not allowed."
        );
        assert_eq!(redfish_error(&Value::Null, "PATCH only works for Boot\n"), "PATCH only works for Boot");
        assert_eq!(redfish_error(&Value::Null, ""), "(no body)");
    }

    #[test]
    fn answers_are_summed_up_by_what_matters() {
        let system = json!({ "PowerState": "On", "Boot": { "BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once" }, "Name": "x" });
        assert_eq!(summary(&system), "PowerState=On BootSourceOverrideTarget=Pxe BootSourceOverrideEnabled=Once");
        assert_eq!(summary(&json!({ "Members": [ { "@odata.id": "/redfish/v1/Systems/1" } ] })), "Members=/redfish/v1/Systems/1");
    }
}
