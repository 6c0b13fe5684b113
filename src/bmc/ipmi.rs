//! IPMI 2.0 over LAN (RMCP+, `-I lanplus`) through ipmitool (Debian's and nixpkgs' `ipmitool`),
//! run through `crate::command`. The password goes in ipmitool's environment (`-E` reads
//! IPMI_PASSWORD), never on its command line, where every user could read it in /proc.
//! ipmitool bounds each call itself (`-N` seconds between retransmissions, `-R` retries), and
//! the command is killed if it still runs after [`COMMAND_TIMEOUT`].

use super::{Bmc, BmcErrorKind, BootOverride, Call, PowerRequest, PowerState, Reset, Step};
use crate::command::{Command, CommandError};
use crate::config::bmc::{BmcProtocol, BmcSpec, BootTarget};
use std::time::Duration;

/// ipmitool's own bound is about (`-R` + 1) x `-N` per message; this is the hard one.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Ipmi {
    spec: BmcSpec,
    password: String,
    /// The host boots by UEFI: the boot override asks for an EFI boot (`options=efiboot`).
    uefi: bool,
    calls: Vec<Call>,
}

impl Ipmi {
    pub fn new(spec: &BmcSpec, password: String, uefi: bool) -> Ipmi {
        Ipmi { spec: spec.clone(), password, uefi, calls: Vec::new() }
    }

    /// ipmitool's arguments before the command: interface, BMC, account, retransmissions, and
    /// -v, without which a wrong password, an unknown account and a BMC that does not answer all
    /// end in the same "Unable to establish IPMI v2 / RMCP+ session".
    fn base(&self) -> Vec<String> {
        let port = self.spec.address.port.unwrap_or_else(|| BmcProtocol::Ipmi.default_port());
        ["-I", "lanplus", "-H", &self.spec.address.server_name(), "-p", &port.to_string(), "-U", &self.spec.user, "-E", "-N", "2", "-R", "2", "-v"]
            .map(String::from)
            .to_vec()
    }

    fn shown(&self, args: &[&str]) -> String {
        Command::new("ipmitool").args(self.base()).args(args).to_string()
    }

    fn run(&mut self, args: &[&str]) -> Result<String, BmcErrorKind> {
        let command = Command::new("ipmitool").args(self.base()).args(args).env("IPMI_PASSWORD", &self.password).timeout(COMMAND_TIMEOUT);
        let shown = command.to_string();
        match command.run() {
            Ok(out) => {
                let text = out.stdout_text();
                self.calls.push(Call { request: shown, answer: text.trim().to_string() });
                Ok(text)
            }
            Err(e) => {
                let detail = match &e {
                    // -v's chatter left out; what says why stays.
                    CommandError::Failed { stderr, .. } => {
                        stderr.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("Loading IANA")).collect::<Vec<_>>().join("; ")
                    }
                    other => other.to_string(),
                };
                self.calls.push(Call { request: shown.clone(), answer: detail.clone() });
                let lower = detail.to_lowercase();
                Err(match e {
                    CommandError::NotFound { .. } | CommandError::Spawn { .. } => BmcErrorKind::Setup(format!("{e} (Debian's and nixpkgs' package: ipmitool)")),
                    // ipmitool says why the RMCP+ session failed: RAKP's answer to the account
                    // and its key (the password).
                    _ if lower.contains("unauthorized name") || lower.contains("hmac is invalid") || lower.contains("invalid user name") || lower.contains("ipmi_password") => {
                        BmcErrorKind::Credentials { user: self.spec.user.clone(), password_file: self.spec.password_file.clone(), detail: format!("`{shown}`: {detail}") }
                    }
                    _ if lower.contains("unable to establish") || lower.contains("no response") || matches!(e, CommandError::TimedOut { .. }) => {
                        BmcErrorKind::Unreachable(format!("`{shown}`: {detail}; nothing was changed by this call"))
                    }
                    _ => BmcErrorKind::Protocol(format!("`{shown}`: {detail}")),
                })
            }
        }
    }

    fn bootdev_args(&self, target: BootTarget) -> Vec<&'static str> {
        debug_assert_eq!(target, BootTarget::Pxe, "the fleet's rules allow only pxe with IPMI");
        if self.uefi { vec!["chassis", "bootdev", "pxe", "options=efiboot"] } else { vec!["chassis", "bootdev", "pxe"] }
    }
}

/// ipmitool's `chassis bootparam get 5` as a boot override; `enabled` says whether the flags are
/// valid, for the next boot only or all, and EFI or legacy.
pub fn parse_boot_flags(text: &str) -> BootOverride {
    let selector = text
        .lines()
        .find_map(|l| l.trim().trim_start_matches("- ").strip_prefix("Boot Device Selector :").map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "(none)".into());
    let once = text.contains("Options apply to only next boot");
    let valid = !text.contains("Boot Flag Invalid");
    let firmware = if text.contains("BIOS EFI boot") { "EFI" } else { "legacy" };
    BootOverride {
        target: selector,
        once: valid && once,
        enabled: format!(
            "{}, {}, {firmware}",
            if valid { "valid" } else { "flags invalid (the BMC will not use them)" },
            if once { "next boot only" } else { "all future boots" }
        ),
    }
}

impl Bmc for Ipmi {
    fn describe(&self, step: Step) -> Vec<String> {
        match step {
            Step::ReadState => vec![self.shown(&["chassis", "power", "status"])],
            Step::BootOnce(target) => vec![self.shown(&self.bootdev_args(target)), format!("{} (read the override back)", self.shown(&["chassis", "bootparam", "get", "5"]))],
            Step::Power(PowerRequest::Status) => vec![],
            Step::Power(PowerRequest::On) => vec![format!("{} (unless it is on)", self.shown(&["chassis", "power", "on"]))],
            Step::Power(PowerRequest::Off) => vec![format!("{} (unless it is off)", self.shown(&["chassis", "power", "off"]))],
            Step::Power(PowerRequest::Cycle) => {
                vec![format!("{} if it is on, `chassis power on` if it is off", self.shown(&["chassis", "power", "cycle"]))]
            }
            Step::WaitForState => vec![format!(
                "{} each second until the power is the one asked for (at most {} s)",
                self.shown(&["chassis", "power", "status"]),
                super::POWER_WAIT.as_secs()
            )],
        }
    }

    fn power_state(&mut self) -> Result<PowerState, BmcErrorKind> {
        let text = self.run(&["chassis", "power", "status"])?;
        let line = text.lines().map(str::trim).find(|l| l.starts_with("Chassis Power is ")).unwrap_or_default();
        match line {
            "Chassis Power is on" => Ok(PowerState::On),
            "Chassis Power is off" => Ok(PowerState::Off),
            _ => Err(BmcErrorKind::Protocol(format!("`chassis power status` said \"{}\"", text.trim()))),
        }
    }

    fn boot_once(&mut self, target: BootTarget) -> Result<BootOverride, BmcErrorKind> {
        let args = self.bootdev_args(target);
        self.run(&args)?;
        let flags = parse_boot_flags(&self.run(&["chassis", "bootparam", "get", "5"])?);
        let firmware_ok = !self.uefi || flags.enabled.ends_with(", EFI");
        if !flags.target.contains("PXE") || !flags.once || !firmware_ok {
            let wanted = format!("Force PXE, valid, next boot only, {}", if self.uefi { "EFI" } else { "legacy" });
            return Err(BmcErrorKind::OverrideNotTaken { wanted, got: format!("{}, {}", flags.target, flags.enabled) });
        }
        Ok(flags)
    }

    fn reset(&mut self, reset: Reset) -> Result<(), BmcErrorKind> {
        let word = match reset {
            Reset::On => "on",
            Reset::ForceOff => "off",
            Reset::Restart => "cycle",
        };
        self.run(&["chassis", "power", word]).map(drop)
    }

    fn calls(&self) -> &[Call] {
        &self.calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_flags_are_read_as_ipmitool_prints_them() {
        let once = " Boot parameter version: 1\n Boot parameter 5 is valid/unlocked\n Boot parameter data: e004000000\n Boot Flags :\n   - Boot Flag Valid\n   - Options apply to only next boot\n   - BIOS EFI boot \n   - Boot Device Selector : Force PXE\n";
        let flags = parse_boot_flags(once);
        assert_eq!((flags.target.as_str(), flags.once, flags.enabled.as_str()), ("Force PXE", true, "valid, next boot only, EFI"));
        let persistent = once.replace("Options apply to only next boot", "Options apply to all future boots");
        assert!(!parse_boot_flags(&persistent).once);
        // What ipmi_sim 2.0.33 reads back after `chassis bootdev pxe options=efiboot`: it keeps
        // the device only.
        let sim = " Boot Flags :\n   - Boot Flag Invalid\n   - Options apply to only next boot\n   - BIOS PC Compatible (legacy) boot \n   - Boot Device Selector : Force PXE\n";
        let flags = parse_boot_flags(sim);
        assert_eq!((flags.once, flags.enabled.as_str()), (false, "flags invalid (the BMC will not use them), next boot only, legacy"));
    }
}
