//! The fleet's power commands against an IPMI BMC: OpenIPMI's ipmi_sim (Debian's openipmi) on
//! 127.0.0.1 in a network namespace of the test, spoken to by Debian's ipmitool (lanplus, RMCP+),
//! which `nixos-pxe` runs through its command wrapper with the password in its environment. The
//! simulated chassis is a script of the test (ipmi_sim's `chassis_control`): it keeps the power
//! and boot device in files and logs every request ipmi_sim passes on, so the test sees exactly
//! what reached the machine.
//!
//! ipmi_sim 2.0.33 keeps the boot device of `chassis bootdev pxe options=efiboot` but reads the
//! boot flags back as invalid and legacy: against it a reinstall's override is reported as not
//! taken and nothing is reset, which is what `an_override_read_back_as_invalid_...` checks.

mod common;

use common::{Lab, Socket, root};
use nixos_pxe_installer::fleet::sqlite::SqliteStore;
use nixos_pxe_installer::fleet::store::{FleetHost, Store};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nixos-pxe");
const USER: &str = "fleet-admin";
const PASSWORD: &str = "ipmi-s3cret-pw";
const PORT: u16 = 9623;

const CHASSIS: &str = r#"#!/bin/sh
# ipmi_sim's chassis_control for the test: get PARM... | set PARM VALUE...
dir=$(dirname "$0")
echo "$*" >> "$dir/chassis.log"
op=$1; shift
case $op in
get) for p in "$@"; do
       case $p in
       power) echo "power:$(cat "$dir/power" 2>/dev/null || echo 0)";;
       boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)";;
       *) echo "no $p" >&2; exit 1;;
       esac
     done;;
set) while [ $# -ge 2 ]; do
       case $1 in power) echo "$2" > "$dir/power";; boot) echo "$2" > "$dir/boot";; esac
       shift 2
     done;;
esac
"#;

struct Sim {
    lab: Lab,
    dir: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
}

impl Sim {
    fn new(tag: &str) -> Sim {
        let id = Command::new("id").arg("-u").output().expect("id");
        assert_eq!(String::from_utf8_lossy(&id.stdout), "0\n", "this test needs root for network namespaces (CI runs as root)");
        for program in ["/usr/bin/ipmi_sim", "/usr/bin/ipmitool"] {
            assert!(Path::new(program).exists(), "{program} missing: run dev/install-deps.sh test (openipmi, ipmitool)");
        }
        let mut lab = Lab::new(tag);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let chassis = d.join("chassis.sh");
        std::fs::write(&chassis, CHASSIS).expect("chassis");
        common::run(Command::new("chmod").arg("+x").arg(&chassis));
        std::fs::create_dir_all(d.join("sim-state")).expect("mkdir");
        std::fs::write(
            d.join("lan.conf"),
            format!(
                "name \"nixos-pxe-test\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {PORT}\n    priv_limit admin\n    \
                 allowed_auths_callback md5\n    allowed_auths_user md5\n    allowed_auths_operator md5\n    allowed_auths_admin md5\n    \
                 guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"{}\"\n  user 2 true \"{USER}\" \"{PASSWORD}\" admin 10 md5\n",
                chassis.display()
            ),
        )
        .expect("lan.conf");
        std::fs::write(d.join("bmc.emu"), "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n").expect("emu");
        let ns = lab.ns.clone();
        let s = |p: &Path| p.to_str().expect("utf8").to_string();
        lab.spawn_in(
            &ns,
            &["ipmi_sim", "-c", &s(&d.join("lan.conf")), "-f", &s(&d.join("bmc.emu")), "-s", &s(&d.join("sim-state")), "-n"],
            &d.join("ipmi_sim.log"),
        );
        lab.wait_listening(&ns, &[Socket::Udp(PORT)]);
        std::fs::write(d.join("password"), format!("{PASSWORD}\n")).expect("password");
        std::fs::write(d.join("wrong-password"), "not-the-password\n").expect("password");
        let host = |name: &str, n: u8, bmc: &str| format!("  fleet.hosts.{name} = {{ macs = [ \"52:54:00:00:03:{n:02x}\" ]; target.flake = \"/f#{name}\"; bmc = {{ {bmc} }}; }};\n");
        let mut text = format!(
            "{{\n  nfsroot.bootLoader = {{ efinetDHCPInterface = \"auto\"; linuxPnPInterface = \"auto\"; }};\n  \
             fleet.bmc = {{ protocol = \"ipmi\"; user = \"{USER}\"; passwordFile = \"{}\"; }};\n",
            d.join("password").display()
        );
        text.push_str(&host("db7", 1, &format!("address = \"127.0.0.1:{PORT}\";")));
        text.push_str(&host("wrongpw", 2, &format!("address = \"127.0.0.1:{PORT}\"; passwordFile = \"{}\";", d.join("wrong-password").display())));
        text.push_str(&host("stranger", 3, &format!("address = \"127.0.0.1:{PORT}\"; user = \"nobody\";")));
        text.push_str(&host("gone", 4, &format!("address = \"127.0.0.1:{}\";", PORT + 1)));
        text.push_str("}\n");
        let config = d.join("fleet.nix");
        std::fs::write(&config, text).expect("config");
        let state = d.join("state");
        std::fs::create_dir_all(&state).expect("mkdir");
        let store = SqliteStore::open(&state).expect("state");
        let hosts: Vec<FleetHost> =
            ["db7", "wrongpw"].iter().enumerate().map(|(i, n)| FleetHost { name: n.to_string(), macs: vec![format!("52:54:00:00:04:{i:02x}").parse().expect("mac")], generation: 1 }).collect();
        store.sync_fleet(&hosts).expect("sync");
        Sim { lab, dir, config, state }
    }

    fn fleet(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.lab.ns, BIN, "fleet"])
            .args(args)
            .current_dir(root())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run nixos-pxe");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn power(&self, hosts: &str, action: &str, more: &[&str]) -> (bool, String, String) {
        let mut args = vec!["power", "--config", self.config.to_str().expect("utf8"), "--source", "static", "--state-dir", self.state.to_str().expect("utf8")];
        args.extend(more);
        args.extend([hosts, action]);
        self.fleet(&args)
    }

    /// What ipmi_sim passed on to the chassis, the `set` requests only.
    fn chassis_sets(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("chassis.log")).unwrap_or_default().lines().filter(|l| l.starts_with("set ")).map(str::to_string).collect()
    }
}

#[test]
fn ipmi_power_status_on_cycle_off_through_ipmitool() {
    let sim = Sim::new("ipmi-power");
    let (ok, out, err) = sim.power("db7", "status", &[]);
    assert!(ok && out.contains("db7: off (the IPMI BMC at 127.0.0.1:9623)"), "{out}{err}");

    let (ok, dry, err) = sim.power("db7", "cycle", &["--dry-run"]);
    assert!(ok, "{err}");
    assert!(
        dry.contains(&format!("ipmitool -I lanplus -H 127.0.0.1 -p {PORT} -U {USER} -E -N 2 -R 2 -v chassis power cycle if it is on, `chassis power on` if it is off")),
        "{dry}"
    );
    assert!(sim.chassis_sets().is_empty(), "the dry run reached the chassis");

    let (ok, out, err) = sim.power("db7", "cycle", &[]);
    assert!(ok && out.contains("db7: cycle: was off; reset On, now on"), "{out}{err}");
    assert_eq!(sim.chassis_sets(), ["set power 1"]);
    let (ok, out, err) = sim.power("db7", "cycle", &[]);
    assert!(ok && out.contains("db7: cycle: was on; reset Restart, now on"), "{out}{err}");
    assert_eq!(sim.chassis_sets()[1..], ["set power 0", "set power 1"], "ipmi_sim's power cycle: off, then on");
    let (ok, out, err) = sim.power("db7", "off", &[]);
    assert!(ok && out.contains("db7: off: was on; reset ForceOff, now off"), "{out}{err}");
    assert_eq!(sim.chassis_sets().last().map(String::as_str), Some("set power 0"));

    let store = SqliteStore::open_existing(&sim.state).expect("state");
    let actions = store.power_actions(Some("db7"), 10).expect("actions");
    assert_eq!(actions.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(), ["off", "cycle", "cycle"]);
    assert!(actions[1].calls.contains("chassis power cycle => Chassis Power Control: Cycle"), "{}", actions[1].calls);
    for a in &actions {
        assert!(!a.calls.contains(PASSWORD) && a.calls.contains(" -E "), "the password is given in the environment, never on the command line: {}", a.calls);
    }
}

#[test]
fn an_override_read_back_as_invalid_is_not_assumed_and_credentials_and_silence_are_told_apart() {
    let sim = Sim::new("ipmi-fail");
    let store = SqliteStore::open_existing(&sim.state).expect("state");
    let reinstall = |host: &str| {
        sim.fleet(&["reinstall", "--power-cycle", "--config", sim.config.to_str().expect("utf8"), "--source", "static", "--state-dir", sim.state.to_str().expect("utf8"), host])
    };
    let (ok, _, err) = reinstall("db7");
    assert!(!ok);
    assert!(
        err.contains("error: db7: the IPMI BMC at 127.0.0.1:9623 did not take the one-time boot override: asked for Force PXE, valid, next boot only, EFI, it reads back Force PXE, flags invalid (the BMC will not use them), next boot only, legacy; nothing was reset"),
        "{err}"
    );
    assert_eq!(sim.chassis_sets(), ["set boot pxe"], "the override reached the chassis, no power change did");
    assert!(!store.host("db7", 1).expect("state").reinstall_requested, "the reinstall was marked");

    let (ok, _, err) = sim.power("wrongpw", "cycle", &[]);
    assert!(!ok && err.contains(&format!("error: wrongpw: the IPMI BMC at 127.0.0.1:9623 refused the credentials of user \"{USER}\"")), "{err}");
    assert!(err.contains("RAKP 2 HMAC is invalid") && err.contains("wrong-password"), "{err}");
    let (ok, _, err) = sim.power("stranger", "on", &[]);
    assert!(!ok && err.contains("refused the credentials of user \"nobody\"") && err.contains("unauthorized name"), "{err}");
    let started = Instant::now();
    let (ok, _, err) = sim.power("gone", "on", &[]);
    assert!(!ok && err.contains("error: gone: the IPMI BMC at 127.0.0.1:9624 did not answer: "), "{err}");
    assert!(started.elapsed() < Duration::from_secs(40), "{:?}", started.elapsed());
    assert_eq!(sim.chassis_sets(), ["set boot pxe"], "no failed command changed the chassis");
    let failed = store.power_actions(None, 10).expect("actions");
    assert_eq!(failed.iter().filter(|a| a.outcome.as_str() == "failed").count(), 4, "every failure is recorded");
}
