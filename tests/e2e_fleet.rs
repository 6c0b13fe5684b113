//! End to end, a fleet served by `nixos-pxe serve` alone (DHCP, TFTP, HTTP, the NFS root and the
//! fleet's state, tests/configs/lab-fleet-serve.nix) to UEFI QEMU machines that PXE-boot, install
//! and report, in a network namespace this test makes, on disk images it makes:
//!
//! - `hosts_install_at_once_through_a_serve_crash_then_boot_their_disks`: lab-a (two NICs, the
//!   first dead, "auto") and lab-b (the other system image) install at the same time while serve
//!   is killed with SIGKILL twice and restarted; lab-a boots again from the network and is sent
//!   to its disk, whose boot loader (put on the ESP by the installed system) runs; its first
//!   boot's report is sent as the installed system's unit would; `nixos-pxe fleet reinstall
//!   --power-cycle` alone, through lab-a's BMC (sushy-tools' Redfish emulator, whose notifier
//!   drives lab-a's QEMU: tests/e2e/bmc-bridge.py), installs it again over its own disk; a stranger is not installed and its disk is unchanged;
//!   reports with a wrong or an old token are refused.
//! - `an_interrupted_install_finishes_and_a_failing_host_is_held`: lab-c is killed in the
//!   middle of its unpack and finishes as attempt 2 over its half-written disk; lab-d's disk
//!   holds a file system, so its installs fail, and after fleet.maxAttempts (2) it is held.
//!   This scenario keeps the fleet's state in PostgreSQL (`serve --database`, a server the test
//!   starts: src/fleet/pg_cluster.rs), the first one in state.sqlite3: the QEMU installs run
//!   once against each store.
//!
//! Stand-ins, because NixOS cannot be built here: the NFS root is busybox, Debian's disk tools and
//! nixos-pxe; nix-store, nix-env, nixos-generate-config and nixos-enter are scripts that record
//! on the disk that they ran, and nixos-enter runs the installed system's own
//! switch-to-configuration, which in each stand-in system does what systemd-boot's installation
//! does: it checks the firmware's EFI variables and puts the system's boot loader on the ESP.
//! That boot loader is a small EFI program (GRUB's, with an embedded script) that names its system
//! on the serial console and powers the machine off: there is no OS to boot. Each phase's time is
//! printed and merged into target/e2e-report.json.

mod common;

use common::stand_in_root::{base_nfs_root, write_exec};
use common::efi_disk::{esp_disk, stand_in_loader};
use common::{GRUB_LIB, Lab, Nic, Qemu, SERVER_ADDRESS, Socket, in_order, nixos_pxe as pxe, root, run, sh, tail};
use nixos_pxe_installer::fleet::pg_cluster::Cluster;
use nixos_pxe_installer::fleet::postgres::PostgresStore;
use nixos_pxe_installer::fleet::sqlite::SqliteStore;
use nixos_pxe_installer::fleet::store::Store;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CONFIG: &str = "tests/configs/lab-fleet-serve.nix";
const BIN: &str = env!("CARGO_BIN_EXE_nixos-pxe");
/// lab-a's NIC on the boot network, and its other NIC on a dead segment (first in PCI order).
const A: &str = "52:54:00:00:0a:01";
const A_DEAD: &str = "52:54:00:00:0a:d0";
const B: &str = "52:54:00:00:0b:01";
const C: &str = "52:54:00:00:0c:01";
const D: &str = "52:54:00:00:0d:01";
/// In no host of the fleet.
const STRANGER: &str = "52:54:00:00:ee:01";
const DISK_MIB: u64 = 2048;
/// Random bytes in the "db" system, so that its unpack takes long enough to be interrupted
/// (and serve to be killed during it).
const DB_BLOB_MIB: usize = 48;
/// One install under TCG on two busy cores.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(420);
/// Two installs at once share the two cores.
const TWO_INSTALLS_TIMEOUT: Duration = Duration::from_secs(720);
/// A boot to GRUB's decision and what follows it.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long serve stays down after the first SIGKILL (the second time it stays down until the
/// installer it was killed under has seen its `installed` report fail).
const SERVE_DOWN: Duration = Duration::from_secs(2);

fn preflight() -> common::OneQemu {
    common::preflight(&["/bin/busybox", "/usr/bin/curl", "/usr/bin/jq", "/usr/bin/grub-mkimage", "/usr/bin/mcopy", "/usr/bin/openssl", "/usr/bin/python3", "/usr/sbin/iptables"])
}

// ---- The NFS root and the stand-in systems ----


/// The stand-in system's switch-to-configuration boot, doing what systemd-boot's installation
/// (bootctl install with canTouchEfiVariables) does: it fails unless the firmware's EFI variables
/// are reachable through efivarfs, then puts the system's boot loader on the ESP (mounted on
/// ROOT/boot) as EFI/systemd/systemd-bootx64.efi.
const SWITCH_SYSTEMD_BOOT: &str = r#"#!/bin/sh
# stand-in for a NixOS system's switch-to-configuration boot with systemd-boot
set -e
root=$NIXOS_PXE_STAND_IN_ROOT
system=$(dirname "$(dirname "$0")")
echo "stand-in switch-to-configuration $*: systemd-boot" >> "$root/stand-in.log"
efivars=/sys/firmware/efi/efivars
if ! grep -q " $efivars efivarfs " /proc/mounts || [ -z "$(ls "$efivars")" ]; then
  echo "stand-in switch-to-configuration: no EFI variables in $efivars: systemd-boot could write no boot entry" >&2
  exit 1
fi
mkdir -p "$root/boot/EFI/systemd"
cp "$system/stand-in-systemd-boot.efi" "$root/boot/EFI/systemd/systemd-bootx64.efi"
"#;

/// The store path of the stand-in system `name`.
fn system_path(name: &str) -> String {
    format!("/nix/store/00000000000000000000000000000000-nixos-system-{name}")
}

/// What the boot loader of the stand-in system `name` prints when it runs (one line of the
/// console's 80 columns: the rescue parser's terminal breaks lines anywhere).
fn loader_message(name: &str) -> String {
    format!("nixos-pxe-test: the boot loader of the installed nixos-system-{name} runs")
}

/// Packs the stand-in system image `name` to `out` with `nixos-pxe pack`: its store path with the
/// switch-to-configuration above, its boot loader, a nixos-version file and `blob_mib` MiB of
/// random bytes (incompressible: the unpack moves all of them), its registration and its name.
fn pack_system(dir: &Path, out: &Path, name: &str, blob_mib: usize) {
    let tree = dir.join(format!("image-{name}"));
    let system = system_path(name);
    let store_path = tree.join(system.trim_start_matches('/'));
    std::fs::create_dir_all(store_path.join("share")).expect("mkdir");
    write_exec(&store_path.join("bin/switch-to-configuration"), SWITCH_SYSTEMD_BOOT);
    std::fs::write(store_path.join("nixos-version"), format!("{name}'s system\n")).expect("write");
    let loaders = dir.join(format!("loader-{name}"));
    std::fs::create_dir_all(&loaders).expect("mkdir");
    std::fs::copy(stand_in_loader(&loaders, &loader_message(name)), store_path.join("stand-in-systemd-boot.efi")).expect("copy loader");
    if blob_mib > 0 {
        run(Command::new("head").arg("-c").arg(format!("{}", blob_mib << 20)).arg("/dev/urandom").stdout(
            std::fs::File::create(store_path.join("share/blob")).expect("blob"),
        ));
    }
    std::fs::write(tree.join("registration"), "stand-in registration\n").expect("write");
    std::fs::write(tree.join("system"), format!("{system}\n")).expect("write");
    std::fs::create_dir_all(out.parent().expect("parent")).expect("mkdir");
    pxe(&[
        "pack",
        "--out",
        out.to_str().expect("utf8"),
        "--file",
        &format!("nix={}", tree.join("nix").display()),
        "--file",
        &format!("nixos-pxe/registration={}", tree.join("registration").display()),
        "--file",
        &format!("nixos-pxe/system={}", tree.join("system").display()),
    ]);
}

/// The NFS root: busybox, nixos-pxe as /init, Debian's disk tools, the stand-ins, config.json with
/// each host's image (as lib.mkFleet writes it) and the two system images.
fn nfs_root(dir: &Path) -> PathBuf {
    let nfsroot = base_nfs_root(dir, Path::new(BIN));
    let mut config: Value = serde_json::from_str(&pxe(&["options", "--source", "static", "--config", CONFIG, "--as-config-json"])).expect("config JSON");
    for (host, image) in [("lab-a", "web"), ("lab-b", "db"), ("lab-c", "db"), ("lab-d", "web")] {
        config["fleet"]["hosts"][host]["image"] = format!("systems/{image}.tar.zst").into();
    }
    std::fs::write(nfsroot.join("nixos-pxe/config.json"), serde_json::to_string_pretty(&config).expect("json")).expect("config.json");
    pack_system(dir, &nfsroot.join("nixos-pxe/systems/web.tar.zst"), "web", 0);
    pack_system(dir, &nfsroot.join("nixos-pxe/systems/db.tar.zst"), "db", DB_BLOB_MIB);
    nfsroot
}

// ---- The lab: serve, the machines, the state ----

/// One run's directory, lab and serve.
struct FleetLab {
    dir: tempfile::TempDir,
    lab: Lab,
    tftp: PathBuf,
    nfsroot: PathBuf,
    state: PathBuf,
    /// serve's logs, one per start, in order.
    serve_logs: Vec<PathBuf>,
    /// Seconds each phase took, for target/e2e-report.json.
    phases: Vec<(String, f64)>,
    tag: String,
    /// When the lab was made: the scenario's whole time, its setup included, is printed at the end.
    made: Instant,
    /// The fleet's state in PostgreSQL (the server and the database's connection string)
    /// instead of state.sqlite3.
    database: Option<(Cluster, String)>,
}

impl FleetLab {
    fn new(tag: &str) -> FleetLab {
        let made = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let tftp = dir.path().join("tftp");
        std::fs::create_dir_all(tftp.join("nixos")).expect("mkdir");
        pxe(&["mk-bootloader", "--source", "static", "--config", CONFIG, "--grub-lib", GRUB_LIB, "--out", tftp.to_str().expect("utf8")]);
        std::fs::remove_file(tftp.join("grub.cfg")).expect("only bootx64.efi is served");
        let kernel = common::test_kernel(&["--source", "static", "--config", CONFIG]);
        std::fs::copy(kernel, tftp.join("nixos/bzImage")).expect("copy kernel");
        let nfsroot = nfs_root(dir.path());
        let state = dir.path().join("state");
        let lab = Lab::new(tag);
        // A tap device for each machine's NIC on the boot network, one on no bridge (dead).
        for tap in ["tap-b", "tap-c", "tap-d", "tap-s"] {
            sh(&format!("ip -n {ns} tuntap add dev {tap} mode tap; ip -n {ns} link set {tap} master br0 up", ns = lab.ns));
        }
        sh(&format!("ip -n {ns} tuntap add dev tap-dead mode tap; ip -n {ns} link set tap-dead up", ns = lab.ns));
        FleetLab { dir, lab, tftp, nfsroot, state, serve_logs: Vec::new(), phases: Vec::new(), tag: tag.to_string(), made, database: None }
    }

    /// The lab with the fleet's state in a PostgreSQL database of a server this test starts.
    fn with_postgres(tag: &str) -> FleetLab {
        let mut lab = FleetLab::new(tag);
        let cluster = Cluster::start(tag, true).unwrap_or_else(|e| panic!("{e}"));
        let url = cluster.create_database("fleet").unwrap_or_else(|e| panic!("{e}"));
        lab.database = Some((cluster, url));
        lab
    }

    /// `--database URL` when the state is in PostgreSQL.
    fn database_args(&self) -> Vec<String> {
        self.database.as_ref().map(|(_, url)| vec!["--database".to_string(), url.clone()]).unwrap_or_default()
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts serve (again) with the same state directory; returns once it serves DHCP, TFTP,
    /// HTTP and NFS.
    fn start_serve(&mut self) {
        let log = self.path().join(format!("serve-{}.log", self.serve_logs.len() + 1));
        let config = root().join(CONFIG);
        let args = [
            BIN,
            "serve",
            "--source",
            "static",
            "--config",
            config.to_str().expect("utf8"),
            "--interface",
            "br0",
            "--tftp-root",
            self.tftp.to_str().expect("utf8"),
            "--nfs-root",
            self.nfsroot.to_str().expect("utf8"),
            "--state-dir",
            self.state.to_str().expect("utf8"),
            // Not serve's default (TFTP): this is the test in which GRUB loads the kernel from
            // serve's HTTP, ended by the reset of src/serve/http_socket.rs.
            "--kernel-over",
            "http",
        ];
        let database = self.database_args();
        let args: Vec<&str> = args.iter().copied().chain(database.iter().map(String::as_str)).collect();
        self.lab.spawn(&args, &log);
        self.serve_logs.push(log.clone());
        let ns = self.lab.ns.clone();
        self.lab.wait_listening(&ns, &[Socket::Udp(67), Socket::Udp(69), Socket::TcpListen(80), Socket::TcpListen(2049)]);
        self.lab.wait_until_ready("serve's log says it serves HTTP and TFTP", |_| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("http: serving") && text.contains("tftp: serving")
        });
    }

    /// SIGKILL to serve, as a crash.
    fn kill_serve(&mut self) {
        let log = self.serve_logs.last().expect("serve was started").clone();
        self.lab.kill(&log);
    }

    /// Every line serve logged, across its starts.
    fn serve_log(&self) -> String {
        self.serve_logs.iter().map(|l| std::fs::read_to_string(l).unwrap_or_default()).collect::<Vec<_>>().join("")
    }

    /// The address serve's lease file gives `mac`.
    fn lease_address(&self, mac: &str) -> String {
        let leases = std::fs::read_to_string(self.state.join("leases")).expect("the lease file");
        leases
            .lines()
            .find_map(|l| l.strip_prefix(&format!("set {mac} "))?.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| panic!("no lease of {mac} in {leases}"))
    }

    /// `-I` inserts, `-D` deletes the lab's rule that drops what `address` sends to serve's HTTP
    /// port carrying `"event":"installed"` (the report's JSON: src/fleet/store.rs, Report).
    fn hold_installed(&self, address: &str, action: &str) {
        sh(&format!(
            "ip netns exec {} iptables -w {action} INPUT -s {address} -p tcp --dport 80 -m string --algo bm --string '\"event\":\"installed\"' -j DROP",
            self.lab.ns
        ));
    }

    /// How many packets the rule of `hold_installed` has dropped for `address`.
    fn held_installed(&self, address: &str) -> u64 {
        let rules = sh(&format!("ip netns exec {} iptables -w -L INPUT -v -x -n", self.lab.ns));
        rules
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.len() > 7 && w[2] == "DROP" && w[7] == address)
            .and_then(|w| w[0].parse().ok())
            .unwrap_or_else(|| panic!("no rule for {address}:\n{rules}"))
    }

    /// A blank disk image for `name`.
    fn blank_disk(&self, name: &str) -> PathBuf {
        let disk = self.path().join(format!("{name}.img"));
        std::fs::File::create(&disk).expect("disk").set_len(DISK_MIB << 20).expect("size");
        disk
    }

    /// Starts machine `name` (its `boot`th boot) with `nics` and `disk`: its own directory for
    /// the console and the firmware's variables (a fresh copy: the firmware tries the network
    /// first on every boot, as a fleet machine's does).
    fn boot(&self, name: &str, boot: u32, nics: &[Nic], disk: &Path) -> Qemu {
        let dir = self.path().join(format!("{name}-boot{boot}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        Qemu::start_with_nics(&self.lab, &dir, 1024, Some(disk), nics)
    }

    /// Waits until `ready` holds; fails at once if serve exited, and after `timeout` with the
    /// consoles of `machines` and serve's log.
    fn until(&mut self, what: &str, timeout: Duration, machines: &[&Qemu], mut ready: impl FnMut(&FleetLab) -> bool) {
        let start = Instant::now();
        loop {
            let exited = self.lab.exited();
            assert!(exited.is_empty(), "serve exited while waiting for {what}:\n{}\n{}", exited.join("\n"), consoles(machines));
            if ready(self) {
                return;
            }
            assert!(start.elapsed() < timeout, "not within {timeout:?}: {what}\n{}\n--- serve:\n{}", consoles(machines), tail(&self.serve_log()));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until QEMU has ended (a reboot or power-off: -no-reboot) and returns its console.
    fn until_exit(&mut self, what: &str, timeout: Duration, qemu: &mut Qemu) -> String {
        let start = Instant::now();
        while qemu.exit_status().is_none() {
            let text = qemu.console();
            let stuck = ["Kernel panic", "dropping to a root shell"].iter().find(|s| text.contains(*s));
            assert!(stuck.is_none() && start.elapsed() < timeout, "{what}: {stuck:?} after {:?}:\n{}\n--- serve:\n{}", start.elapsed(), tail(&text), tail(&self.serve_log()));
            let exited = self.lab.exited();
            assert!(exited.is_empty(), "serve exited during {what}:\n{}", exited.join("\n"));
            std::thread::sleep(Duration::from_millis(200));
        }
        qemu.console()
    }

    /// Waits until both QEMUs have ended (each exit is timed from its start) and returns their
    /// consoles.
    fn until_both_exit(&mut self, what: &str, timeout: Duration, a: &mut Qemu, b: &mut Qemu) -> (String, String) {
        let start = Instant::now();
        let mut ended: [Option<f64>; 2] = [None, None];
        while ended.iter().any(Option::is_none) {
            for (i, q) in [&mut *a, &mut *b].into_iter().enumerate() {
                if ended[i].is_none() && q.exit_status().is_some() {
                    ended[i] = Some(q.started.elapsed().as_secs_f64());
                }
                let text = q.console();
                let stuck = ["Kernel panic", "dropping to a root shell"].iter().find(|s| text.contains(*s));
                assert!(stuck.is_none() && start.elapsed() < timeout, "{what}: {stuck:?} after {:?}:\n{}\n--- serve:\n{}", start.elapsed(), tail(&text), tail(&self.serve_log()));
            }
            let exited = self.lab.exited();
            assert!(exited.is_empty(), "serve exited during {what}:\n{}", exited.join("\n"));
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("e2e {}: {what}: ended {:.1} s and {:.1} s after each machine started", self.tag, ended[0].unwrap_or_default(), ended[1].unwrap_or_default());
        (a.console(), b.console())
    }

    fn phase(&mut self, name: &str, since: Instant) {
        let seconds = since.elapsed().as_secs_f64();
        eprintln!("e2e {}: {name}: {seconds:.1} s", self.tag);
        self.phases.push((name.to_string(), (seconds * 10.0).round() / 10.0));
    }

    /// lab-a's BMC: sushy-tools' Redfish emulator with one fake system (lab-a, off) on
    /// 127.0.0.1:8443 in the lab's namespace, its certificate made here, and its notifier the
    /// bridge that owns lab-a's QEMU (A_NICS, `disk`); the configuration's JSON form with lab-a's
    /// BMC, for `fleet reinstall --power-cycle`.
    fn bmc_for_lab_a(&mut self, disk: &Path) -> LabBmc {
        let dir = self.path().join("bmc");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (cert, key) = common::bmc::make_certificate(&dir, "bmc", "127.0.0.1");
        let (user, password) = ("fleet-admin", "lab-a's BMC password");
        std::fs::write(dir.join("password"), format!("{password}\n")).expect("password");
        // The bridge listens where the emulator notifies (its port + 1), and starts lab-a's QEMU.
        let machine = dir.join("lab-a-boot3");
        std::fs::create_dir_all(&machine).expect("mkdir");
        let (mut qemu, serial) = common::qemu_args(&machine, 1024, Some(disk), common::Boot::OvmfPxe, A_NICS);
        // A reboot resets the machine, as a server's does; the bridge's QEMU runs on.
        qemu.retain(|a| a != "-no-reboot");
        let bridge = serde_json::json!({
            "listen": ["127.0.0.1", 8444],
            "qmp": machine.join("qmp.sock"),
            "qemu": qemu,
            "log": dir.join("bridge.log"),
            // The live NIC first, the dead one after it, the disk last; or the disk first.
            "network_first": { "nic1": 1, "nic0": 2, "disk0": 9 },
            "disk_first": { "disk0": 1, "nic1": 2, "nic0": 3 },
        });
        std::fs::write(dir.join("bridge.json"), bridge.to_string()).expect("bridge config");
        let bridge_process_log = dir.join("bridge-process.log");
        let ns = self.lab.ns.clone();
        let script = root().join("tests/e2e/bmc-bridge.py");
        self.lab.spawn_in(&ns, &["/usr/bin/python3", script.to_str().expect("utf8"), dir.join("bridge.json").to_str().expect("utf8")], &bridge_process_log);
        let emulator = common::bmc::Emulator::start(
            &mut self.lab,
            &ns,
            &dir,
            8443,
            &cert,
            &key,
            user,
            password,
            &[common::bmc::FakeSystem { uuid: "0a010000-0000-4000-8000-0000000a0001", name: "lab-a", power: "Off", mac: A }],
            "",
            false,
        );
        let mut config: Value = serde_json::from_str(&pxe(&["options", "--source", "static", "--config", CONFIG, "--as-config-json"])).expect("config JSON");
        config["fleet"]["bmc"] = serde_json::json!({ "protocol": "redfish", "user": user, "passwordFile": dir.join("password"), "certificate": null, "bootTarget": "pxe" });
        config["fleet"]["hosts"]["lab-a"]["bmc"] = serde_json::json!({ "address": "127.0.0.1:8443", "fingerprint": common::bmc::fingerprint(&cert) });
        let config_path = dir.join("fleet-with-bmc.json");
        std::fs::write(&config_path, config.to_string()).expect("config");
        LabBmc { config: config_path, emulator, serial, bridge_log: dir.join("bridge.log"), bridge_process_log }
    }

    /// `nixos-pxe fleet status --json` with the configuration (decisions, hold).
    fn status(&self) -> Vec<Value> {
        let database = self.database_args();
        let mut args = vec!["fleet", "status", "--state-dir", self.state.to_str().expect("utf8"), "--config", CONFIG, "--source", "static", "--json"];
        args.extend(database.iter().map(String::as_str));
        let out = pxe(&args);
        serde_json::from_str(&out).expect("status JSON")
    }

    fn host_status(&self, host: &str) -> Value {
        self.status().into_iter().find(|h| h["host"] == host).unwrap_or_else(|| panic!("no {host} in fleet status"))
    }

    /// The accepted reports of `host`, oldest first, as (attempt, "event" or "step NAME").
    fn history(&self, host: &str) -> Vec<(u32, String)> {
        let store: Box<dyn Store> = match &self.database {
            None => Box::new(SqliteStore::open_existing(&self.state).expect("the state")),
            Some((_, url)) => Box::new(PostgresStore::open(url, None).expect("the database")),
        };
        let history = store.history(host).expect("history");
        history
            .iter()
            .map(|r| match &r.step {
                Some(step) if r.event.as_str() == "step" => (r.attempt, format!("step {step}")),
                _ => (r.attempt, r.event.as_str().to_string()),
            })
            .collect()
    }

    /// Another machine on the boot network (a namespace joined to the bridge), made once.
    fn client(&mut self) -> String {
        let client = format!("{}-cli", self.lab.ns);
        if !self.lab.probe(&client, &["true"]) {
            self.lab.add_host("cli", "10.42.0.50");
        }
        client
    }

    /// A machine on the boot network whose eth0 has `mac` and the address serve's DHCP gives it
    /// (a neighbour with a lease of its own, or a stand-in for a host's installed system, which
    /// reports from its host's address): its namespace and address.
    fn machine(&mut self, suffix: &str, mac: &str) -> (String, String) {
        let ns = format!("{}-{suffix}", self.lab.ns);
        if !self.lab.probe(&ns, &["true"]) {
            self.lab.add_host(suffix, "10.42.0.253");
        }
        sh(&format!("ip -n {ns} addr flush dev eth0; ip -n {ns} link set eth0 address {mac}; ip -n {ns} link set eth0 up"));
        let address = common::dhcp_lease(&ns, self.path()).unwrap_or_else(|| panic!("{suffix} ({mac}) got no lease:\n{}", self.serve_log()));
        (ns, address)
    }

    /// Takes a stand-in machine off the network before the real one (the same MAC) boots: two
    /// ports with one MAC would confuse the bridge.
    fn unplug(&self, ns: &str) {
        sh(&format!("ip -n {ns} addr flush dev eth0; ip -n {ns} link set eth0 down"));
    }

    /// An HTTP GET of `path` on serve from namespace `client`: (status, body).
    fn curl_from(&self, client: &str, path: &str) -> (u16, String) {
        self.http_from(client, &[format!("http://{SERVER_ADDRESS}{path}")])
    }

    /// curl in namespace `client` with `args`: (status, body). What the test asks is serve's
    /// answer: a request that got none (status 0: the lab's network or a loaded machine lost it)
    /// is tried again, up to three times, each loss said on stderr with curl's reason; after the
    /// third the body is curl's reason and serve's last lines.
    fn http_from(&self, client: &str, args: &[String]) -> (u16, String) {
        let mut reason = String::new();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for round in 1..=3 {
            let (code, body, said) = common::curl_in_saying(client, &args);
            if code != 0 {
                return (code, body);
            }
            reason = said;
            eprintln!("e2e {}: no answer from serve to {client}'s request (try {round} of 3): {reason}", self.tag);
            std::thread::sleep(Duration::from_secs(1));
        }
        (0, format!("curl: {reason}\n--- serve's log, last lines:\n{}", tail(&self.serve_log())))
    }

    /// A report POSTed from the neighbour at 10.42.0.50: (status, body).
    fn post_report(&mut self, report: &Value) -> (u16, String) {
        let client = self.client();
        self.post_report_from(&client, report)
    }

    /// A report POSTed from namespace `client`: (status, body).
    fn post_report_from(&mut self, client: &str, report: &Value) -> (u16, String) {
        let args = ["-H", "Content-Type: application/json", "--data-binary", &report.to_string(), &format!("http://{SERVER_ADDRESS}/v1/report")];
        self.http_from(client, &args.map(String::from))
    }
}

/// lab-a's BMC and the machine behind it (see `FleetLab::bmc_for_lab_a`).
struct LabBmc {
    config: PathBuf,
    emulator: common::bmc::Emulator,
    serial: PathBuf,
    bridge_log: PathBuf,
    bridge_process_log: PathBuf,
}

impl Drop for FleetLab {
    fn drop(&mut self) {
        // Milestones merged into target/e2e-report.json, as tests/e2e_install.rs writes them.
        let path = root().join("target").join("e2e-report.json");
        let mut all: Value = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(serde_json::json!({}));
        let total = (self.made.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        eprintln!("e2e {}: the whole scenario, setup included: {total:.1} s", self.tag);
        let mut phases: serde_json::Map<String, Value> = self.phases.iter().map(|(n, t)| (n.clone(), Value::from(*t))).collect();
        phases.insert("whole scenario".into(), Value::from(total));
        all[format!("fleet-{}", self.tag)] = Value::Object(phases);
        let _ = std::fs::write(&path, serde_json::to_string_pretty(&all).unwrap_or_default());
    }
}

fn consoles(machines: &[&Qemu]) -> String {
    machines.iter().map(|q| format!("--- {}:\n{}", q.serial.display(), tail(&q.console()))).collect::<Vec<_>>().join("\n")
}

/// The NIC on the boot network of a machine with MAC `mac` on `tap`, first in the boot order.
fn nic<'a>(tap: &'a str, mac: &'a str) -> Nic<'a> {
    Nic { tap, mac: Some(mac), bootindex: Some(1) }
}

/// lab-a's NICs: the dead one first in PCI order (the kernel's eth0) but second in the boot order
/// (a dead NIC's PXE attempt costs about 2 minutes under TCG), the live one the kernel's eth1.
const A_NICS: &[Nic<'static>] = &[Nic { tap: "tap-dead", mac: Some(A_DEAD), bootindex: Some(2) }, Nic { tap: "tap0", mac: Some(A), bootindex: Some(1) }];

fn sha256(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path)).split_whitespace().next().unwrap_or_default().to_string()
}

/// `nixos-pxe.token=` of the kernel's command line on a console.
fn token_on(console: &str) -> String {
    console
        .lines()
        .find(|l| l.starts_with("Command line:"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("nixos-pxe.token=")))
        .unwrap_or_else(|| panic!("no nixos-pxe.token= on the kernel's command line:\n{}", tail(console)))
        .to_string()
}

/// A file from the root file system (partition 2) of an installed disk image, read through a
/// read-only loop device.
fn read_from_root(disk: &Path, file: &str) -> String {
    let dev = run(Command::new("losetup").args(["--find", "--show", "--partscan", "--read-only"]).arg(disk)).trim().to_string();
    let result = std::panic::catch_unwind(|| {
        let _ = Command::new("partx").args(["-u", &dev]).output();
        let mnt = tempfile::tempdir().expect("tempdir");
        run(Command::new("mount").args(["-o", "ro"]).arg(format!("{dev}p2")).arg(mnt.path()));
        let text = std::fs::read_to_string(mnt.path().join(file)).unwrap_or_else(|e| format!("<missing: {e}>"));
        let _ = Command::new("umount").arg(mnt.path()).status();
        text
    });
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    result.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The text of `console` after the last place `marker` appears, lines joined as `in_order` does.
fn after(console: &str, marker: &str) -> String {
    let flat = console.replace('\n', " ");
    flat.rfind(marker).map_or_else(String::new, |i| flat[i + marker.len()..].to_string())
}

/// The report lines serve logged as accepted for `host`'s `event` (and step).
fn accepted(log: &str, host: &str, what: &str) -> bool {
    let (event, step) = match what.split_once(' ') {
        Some((event, step)) => (event, Some(step)),
        None => (what, None),
    };
    log.lines().any(|l| {
        l.contains("fleet: report accepted")
            && l.contains(&format!("host=\"{host}\""))
            && l.contains(&format!("event=\"{event}\""))
            && step.is_none_or(|s| l.contains(&format!("step=\"{s}\"")))
    })
}

/// The reports serve's log says it accepted from `host`, in order, as `history` names them.
fn accepted_reports(log: &str, host: &str) -> Vec<(u32, String)> {
    // A field of a log line: `name=value` or `name="value"`.
    fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
        let rest = &line[line.find(&format!(" {name}="))? + name.len() + 2..];
        match rest.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next(),
            None => rest.split_whitespace().next(),
        }
    }
    log.lines()
        .filter(|l| l.contains("fleet: report accepted") && field(l, "host") == Some(host))
        .map(|l| {
            let attempt = field(l, "attempt").and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no attempt in {l}"));
            match (field(l, "event"), field(l, "step")) {
                (Some("step"), Some(step)) => (attempt, format!("step {step}")),
                (Some(event), _) => (attempt, event.to_string()),
                _ => panic!("no event in {l}"),
            }
        })
        .collect()
}

/// The reports an installer says on its console it could not deliver (`report step configure:
/// not delivered after 3 tries: ...`), as `history` names them.
fn undelivered(console: &str) -> Vec<String> {
    console
        .lines()
        .filter_map(|l| l.strip_prefix("nixos-pxe: report "))
        .filter_map(|l| l.split_once(": not delivered").map(|(what, _)| what.to_string()))
        .collect()
}

/// Every report an install sends, in order, as `history` gives them.
fn full_install(attempt: u32) -> Vec<(u32, String)> {
    ["started", "step network", "step disk", "step partition", "step unpack", "step configure", "step bootloader", "step finish", "installed"]
        .iter()
        .map(|e| (attempt, e.to_string()))
        .collect()
}

// ---- The scenarios ----

/// lab-a and lab-b install at the same time, through two crashes of serve; lab-a boots its disk,
/// reports its first boot, is reinstalled on request; a stranger is left alone; forged and old
/// reports are refused.
#[test]
fn hosts_install_at_once_through_a_serve_crash_then_boot_their_disks() {
    let _one_qemu = preflight();
    let mut f = FleetLab::new("fleet-ab");
    f.start_serve();

    // -- A neighbour with a lease of its own asks for lab-a's file: no token, and no attempt.
    let (neighbour, neighbour_ip) = f.machine("nbr", "02:00:00:00:00:77");
    let (code, file) = f.curl_from(&neighbour, &format!("/nixos-pxe/hosts/mac-{A}.cfg"));
    assert!(code == 200 && !file.contains("nixos-pxe.token") && file.contains("no install from here"), "{code}:\n{file}");
    assert_eq!(f.host_status("lab-a")["state"], "absent", "the neighbour's request made an attempt");

    // -- lab-a and lab-b at once. Two QEMUs under TCG share the two cores: the wait is longer.
    let (disk_a, disk_b) = (f.blank_disk("lab-a"), f.blank_disk("lab-b"));
    let both = Instant::now();
    let mut qa = f.boot("lab-a", 1, A_NICS, &disk_a);
    let mut qb = f.boot("lab-b", 1, &[nic("tap-b", B)], &disk_b);

    // serve killed (SIGKILL) when lab-b's unpack (of 48 MiB that do not compress) has begun: its
    // NFS reads wait and resume with the handles they had (the key is in the state directory).
    f.until("lab-b's `step unpack` report", TWO_INSTALLS_TIMEOUT, &[&qa, &qb], |f| accepted(&f.serve_log(), "lab-b", "step unpack"));
    f.kill_serve();
    eprintln!("e2e fleet-ab: serve killed {:.1} s after the machines started, when lab-b began its unpack", both.elapsed().as_secs_f64());
    // Every report the killed serve answered is in the state it leaves, in the order answered:
    // what serve logged as accepted begins each host's history, which holds at most one report
    // more (serve logs a report after it commits it, so a kill in between keeps it unlogged; an
    // installer sends one report at a time). lab-b, whose `step unpack` was the cue, has had
    // exactly its first five answered (less any its console says were not delivered).
    let answered = f.serve_log();
    for host in ["lab-a", "lab-b"] {
        let (logged, kept) = (accepted_reports(&answered, host), f.history(host));
        assert!(kept.starts_with(&logged) && kept.len() <= logged.len() + 1, "{host}: answered {logged:?}, kept {kept:?}");
    }
    let lost_b = undelivered(&qb.console());
    let first_five: Vec<(u32, String)> = full_install(1)[..5].iter().filter(|(_, e)| !lost_b.contains(e)).cloned().collect();
    assert_eq!(accepted_reports(&answered, "lab-b"), first_five, "lab-b's reports up to its unpack");
    std::thread::sleep(SERVE_DOWN);
    // serve is killed again when a host's `installed` report reaches it, before serve can read
    // it, and kept down until that host's installer has seen the try fail: the report is then
    // delivered by a retry, however fast or slow the machines install. The event is a packet
    // filter's count, not a log line after the fact: in the lab's namespace, a rule per host
    // (its address) drops the segment that carries `"event":"installed"` (iptables' string
    // match), and the first rule that counts one names the finisher. The rules are in place
    // before serve comes back, so no `installed` reaches the restarted serve first.
    let addresses = [("lab-a", f.lease_address(A)), ("lab-b", f.lease_address(B))];
    for (_, address) in &addresses {
        f.hold_installed(address, "-I");
    }
    f.start_serve();
    // The neighbour releases lab-a's lease in lab-a's name: ignored (lab-a keeps its address and
    // reports on from it below).
    common::forge_dhcp_release(&neighbour, &neighbour_ip, A, &addresses[0].1);

    // Each failed try of `installed` the console says: tried again, or given up.
    let failed_tries = |console: &str| {
        console.lines().filter(|l| l.starts_with("nixos-pxe: report installed: try ") || l.starts_with("nixos-pxe: report installed: not delivered")).count()
    };
    let failed_before = [failed_tries(&qa.console()), failed_tries(&qb.console())];
    let mut held = None;
    f.until("an `installed` report held at serve's door", TWO_INSTALLS_TIMEOUT, &[&qa, &qb], |f| {
        held = addresses.iter().position(|(_, address)| f.held_installed(address) > 0);
        held.is_some()
    });
    let held = held.expect("until returned once a rule counted");
    let finisher = addresses[held].0;
    f.kill_serve();
    for (_, address) in &addresses {
        f.hold_installed(address, "-D");
    }
    eprintln!("e2e fleet-ab: serve killed again {:.1} s after the machines started, when {finisher}'s `installed` reached it", both.elapsed().as_secs_f64());
    let finishing = if held == 0 { &qa } else { &qb };
    f.until(&format!("{finisher}'s `installed` report failing"), INSTALL_TIMEOUT, &[finishing], |_| failed_tries(&finishing.console()) > failed_before[held]);
    f.start_serve();

    let (console_a, console_b) = f.until_both_exit("lab-a's and lab-b's installs", TWO_INSTALLS_TIMEOUT, &mut qa, &mut qb);
    f.phase("lab-a and lab-b installed at once", both);
    // At once: each started before the other had installed (serve's logs are in time order; a
    // loaded machine changes how much they overlap, not that they do).
    let log = f.serve_log();
    let at = |host: &str, event: &str| {
        log.lines()
            .position(|l| l.contains("fleet: report accepted") && l.contains(&format!("host=\"{host}\"")) && l.contains(&format!("event=\"{event}\"")))
            .unwrap_or_else(|| panic!("no accepted {event} of {host} in serve's log"))
    };
    assert!(at("lab-a", "started") < at("lab-b", "installed") && at("lab-b", "started") < at("lab-a", "installed"), "the installs did not overlap:\n{log}");
    drop((qa, qb));

    for (host, console, mac) in [("lab-a", &console_a, A), ("lab-b", &console_b, B)] {
        assert!(
            in_order(console, &[
                &format!("nixos-pxe: loading this machine's configuration (tftp)/nixos-pxe/hosts/mac-{mac}.cfg"),
                &format!("nixos-pxe: {mac} is {host}: installing generation 1, attempt 1"),
                "nixos-pxe: loading (http,10.42.0.1)/nixos/bzImage from 10.42.0.1",
                "nixos-pxe: booting the kernel",
                &format!("nixos-pxe: reporting to http://10.42.0.1:80/v1/report as {host} generation 1 attempt 1"),
                "nixos-pxe: install complete in ",
                "rebooting",
            ]),
            "{host}:\n{}",
            tail(console)
        );
    }
    // lab-a: the dead NIC is the kernel's eth0; GRUB, the kernel and the installer used the live one.
    assert!(console_a.contains(&format!("(MAC {A}, address 10.42.0.")), "{}", tail(&console_a));
    assert!(
        console_a.lines().any(|l| l == format!("nixos-pxe: eth1 (MAC {A}) is the NIC GRUB booted from (nixos-pxe.mac=) and the one the kernel configured (ip=dhcp)")),
        "{}",
        tail(&console_a)
    );
    // The installer whose `installed` found serve down retried it.
    let finisher_console = if finisher == "lab-a" { &console_a } else { &console_b };
    let retried = finisher_console.lines().find(|l| l.starts_with("nixos-pxe: report installed: accepted (after "));
    assert!(retried.is_some(), "{finisher}:\n{}", tail(finisher_console));
    eprintln!("e2e fleet-ab: {finisher}: {}", retried.unwrap_or_default());
    // lab-b's unpack began at most a moment before the first crash and took longer than serve
    // was down: it read the rest of its image from the restarted serve, with the file handles it
    // had, and unpacked it whole.
    let unpack_took = console_b
        .lines()
        .find_map(|l| l.strip_prefix("nixos-pxe: step 4/7 unpack done in ")?.strip_suffix(" s")?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no unpack time on lab-b's console:\n{}", tail(&console_b)));
    assert!(unpack_took > SERVE_DOWN.as_secs_f64(), "lab-b's unpack took {unpack_took} s: it did not span serve's restart");
    // Each host its own system, and in the history every report, none twice, but those its
    // installer says it could not deliver while serve was down (it went on installing).
    assert!(console_a.contains("installing from /nixos-pxe/systems/web.tar.zst") && console_b.contains("installing from /nixos-pxe/systems/db.tar.zst"));
    assert_eq!(read_from_root(&disk_b, &format!("{}/nixos-version", system_path("db").trim_start_matches('/'))), "db's system\n");
    for (host, console) in [("lab-a", &console_a), ("lab-b", &console_b)] {
        let lost = undelivered(console);
        if !lost.is_empty() {
            eprintln!("e2e fleet-ab: {host}'s installer could not deliver {lost:?} while serve was down");
        }
        assert!(!lost.contains(&"installed".to_string()) && !console.contains(": refused ("), "{host}:\n{}", tail(console));
        let expected: Vec<(u32, String)> = full_install(1).into_iter().filter(|(_, e)| !lost.contains(e)).collect();
        assert_eq!(f.history(host), expected, "{host}'s reports");
    }
    for host in ["lab-a", "lab-b"] {
        let h = f.host_status(host);
        assert_eq!((h["state"].as_str(), h["installed_generation"].as_u64(), h["attempt"]["status"].as_str()), (Some("installed"), Some(1), Some("installed")), "{h}");
        assert_eq!((h["attempt"]["reports"].as_u64(), h["decision"]["kind"].as_str()), (Some(f.history(host).len() as u64), Some("local-boot")), "{h}");
    }
    // The NFS clients came back to the restarted serve with the handles they had.
    let serve = f.serve_log();
    assert!(!serve.contains("stale") && !serve.contains("Stale"), "{serve}");
    for later in &f.serve_logs[1..] {
        let text = std::fs::read_to_string(later).unwrap_or_default();
        assert!(text.contains("NFS: connection client=10.42.0."), "an NFS client reconnected to {}:\n{text}", later.display());
    }

    // -- lab-a boots again, the network first: serve sends it to its disk, GRUB starts the boot
    // loader the installed system put on the ESP.
    let again = Instant::now();
    let mut qa = f.boot("lab-a", 2, A_NICS, &disk_a);
    let console = f.until_exit("lab-a's boot from its disk", BOOT_TIMEOUT, &mut qa);
    f.phase("lab-a boots its disk", again);
    assert!(
        in_order(&console, &[
            &format!("nixos-pxe: {A} (lab-a): lab-a generation 1 is installed (its first boot has not reported yet): booting from the disk"),
            "nixos-pxe: starting systemd-boot from hd0,gpt1, the ESP with /nixos-pxe/done-lab-a-g1",
            &loader_message("web"),
        ]),
        "{}",
        tail(&console)
    );
    let handed_over = after(&console, "nixos-pxe: starting systemd-boot from hd0,gpt1");
    assert!(!console.contains("Linux version") && !handed_over.contains("BdsDxe"), "GRUB itself chainloaded the disk's loader:\n{}", tail(&console));

    // Its first boot's report, as nix/report-module.nix's unit sends it (nix/boot-report.sh with
    // the file the installer left on the disk): serve records the boot.
    let boot_report = f.path().join("boot-report.json");
    std::fs::write(&boot_report, read_from_root(&disk_a, "var/lib/nixos-pxe/boot-report.json")).expect("write");
    // Kept for later (nix/boot-report.sh removes the file once its report is accepted).
    let first_boot: Value = serde_json::from_str(&std::fs::read_to_string(&boot_report).expect("boot-report.json")).expect("boot report JSON");
    let current = f.path().join("current-system");
    std::fs::create_dir_all(&current).expect("mkdir");
    // lab-a's installed system reports from lab-a's address: a namespace with lab-a's MAC.
    let (lab_a_os, _) = f.machine("a-os", A);
    let sent = Command::new("ip")
        .args(["netns", "exec", &lab_a_os, "bash", "-e"])
        .arg(root().join("nix/boot-report.sh"))
        .env("NIXOS_PXE_BOOT_REPORT", &boot_report)
        .env("NIXOS_PXE_CURRENT_SYSTEM", &current)
        .env("NIXOS_PXE_BOOT_REPORT_PATIENCE", "20")
        .output()
        .expect("run nix/boot-report.sh");
    let said = String::from_utf8_lossy(&sent.stdout).into_owned() + &String::from_utf8_lossy(&sent.stderr);
    assert!(sent.status.success() && said.contains("report booted: accepted"), "{said}");
    let h = f.host_status("lab-a");
    assert_eq!((h["state"].as_str(), h["confirmed"]["generation"].as_u64()), (Some("confirmed"), Some(1)), "{h}");

    // -- Forged and old reports: refused, and nothing changes. The neighbour with lab-a's token,
    // from its own address; lab-a (its address) with its token for lab-b.
    let token_a1 = token_on(&console_a);
    let as_a = serde_json::json!({ "host": "lab-a", "generation": 1, "attempt": 1, "token": token_a1, "event": "failed", "step": "disk", "message": "forged" });
    let (code, body) = f.post_report(&as_a);
    assert!(code == 403 && body.contains("taken only from the addresses serve's DHCP saw"), "{code}: {body}");
    let forged = serde_json::json!({ "host": "lab-b", "generation": 1, "attempt": 1, "token": token_a1, "event": "failed", "step": "disk", "message": "forged" });
    let (code, body) = f.post_report_from(&lab_a_os, &forged);
    assert_eq!(code, 403, "lab-a's token for lab-b: {body}");
    assert!(f.serve_log().contains("dhcp: ignored: not from the holder of that lease"), "the neighbour's RELEASE of lab-a's lease was not refused");

    // -- `nixos-pxe fleet reinstall lab-a --power-cycle` alone: the next boot installs again
    // (attempt 2), although its disk has the completion stamp of generation 1, over its own disk
    // (its marker). lab-a's BMC is sushy-tools' Redfish emulator; its notifier is the test's only
    // link to lab-a's QEMU (tests/e2e/bmc-bridge.py: the boot device and power onto QEMU's
    // monitor), which is paused ("off") and boots its disk first until the BMC says otherwise.
    f.unplug(&lab_a_os);
    let reinstall = Instant::now();
    let bmc = f.bmc_for_lab_a(&disk_a);
    let out = Command::new("ip")
        .args(["netns", "exec", &f.lab.ns, BIN, "fleet", "reinstall", "--power-cycle", "--config"])
        .arg(&bmc.config)
        .args(["--state-dir", f.state.to_str().expect("utf8"), "lab-a"])
        .args(f.database_args())
        .output()
        .expect("run nixos-pxe fleet reinstall");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}\n--- bridge:\n{}", std::fs::read_to_string(&bmc.bridge_log).unwrap_or_default());
    assert!(said.contains("lab-a: reinstall --power-cycle: was off; boot override Pxe Continuous") && said.contains("reset On, now on"), "{said}");
    let calls: Vec<String> = bmc.emulator.requests_since(0).into_iter().filter(|r| !r.starts_with("GET")).collect();
    assert_eq!(calls.len(), 2, "one PATCH of the boot override, one reset: {calls:?}");
    assert!(calls[0].starts_with("PATCH /redfish/v1/Systems/") && calls[1].contains("/Actions/ComputerSystem.Reset 204"), "{calls:?}");
    // The installer, then its reboot, which boots from the network again (the emulator keeps the
    // override Continuous) and serve sends it to its disk, whose loader powers the machine off.
    let lab_a_done = [
        format!("nixos-pxe: {A} is lab-a: reinstalling generation 1, attempt 2"),
        "nixos-pxe: loading (http,10.42.0.1)/nixos/bzImage".into(),
        "marks it as lab-a's install of generation 1: an earlier attempt of this install that did not finish, or a finished one being reinstalled. Installing over it".into(),
        "nixos-pxe: install complete in ".into(),
        "nixos-pxe: report installed: accepted".into(),
        format!("nixos-pxe: {A} (lab-a): lab-a generation 1 is installed"),
        loader_message("web"),
    ];
    let expected: Vec<&str> = lab_a_done.iter().map(String::as_str).collect();
    f.until("lab-a's reinstall through its BMC, to its installed system's boot loader", INSTALL_TIMEOUT, &[], |_| in_order(&common::console(&bmc.serial), &expected));
    let console = common::console(&bmc.serial);
    f.phase("lab-a reinstalled through its BMC", reinstall);
    let bridge = std::fs::read_to_string(&bmc.bridge_log).unwrap_or_default();
    assert!(in_order(&bridge.replace('\n', " "), &["boot_device=Pxe", "qom-set", "notified power_state=On", "qmp system_reset", "qmp cont"]), "{bridge}");
    f.lab.kill(&bmc.bridge_process_log);
    assert!(!console.contains("is installed already"), "{}", tail(&console));
    let h = f.host_status("lab-a");
    assert_eq!((h["state"].as_str(), h["attempt"]["number"].as_u64(), h["reinstall_requested"].as_bool(), h["decision"]["kind"].as_str()), (Some("installed"), Some(2), Some(false), Some("local-boot")), "{h}");
    // Attempt 1 was installed, so its `booted` needs the boot token its installed report named:
    // the attempt's token alone is refused. Any other report of attempt 1, with its right token,
    // is stale now that attempt 2 is the latest, its installed system's own boot report too (its
    // boot token from the file the installer left on the disk then).
    let (lab_a_os, _) = f.machine("a-os", A);
    let booted = serde_json::json!({ "host": "lab-a", "generation": 1, "attempt": 1, "token": token_a1, "event": "booted", "system": system_path("web") });
    let (code, body) = f.post_report_from(&lab_a_os, &booted);
    assert!(code == 403 && body.contains("the boot token is not"), "attempt 1's booted without its boot token: {code}: {body}");
    let old = serde_json::json!({ "host": "lab-a", "generation": 1, "attempt": 1, "token": token_a1, "event": "failed", "step": "disk" });
    let (code, body) = f.post_report_from(&lab_a_os, &old);
    assert_eq!(code, 409, "attempt 1's report after attempt 2 installed: {body}");
    assert!(body.contains("is not lab-a's latest attempt"), "{body}");
    let old_booted = serde_json::json!({ "host": "lab-a", "generation": 1, "attempt": 1, "token": token_a1, "event": "booted", "system": system_path("web"), "boot_token": first_boot["boot_token"] });
    let (code, body) = f.post_report_from(&lab_a_os, &old_booted);
    assert_eq!(code, 409, "attempt 1's booted with its boot token after attempt 2 installed: {body}");
    assert!(body.contains("is not lab-a's latest attempt"), "{body}");
    let wrong = serde_json::json!({ "host": "lab-a", "generation": 1, "attempt": 2, "token": "A".repeat(43), "event": "failed", "step": "disk" });
    let (code, body) = f.post_report_from(&lab_a_os, &wrong);
    assert!(code == 403 && body.contains("the token is not"), "{code}: {body}");
    f.unplug(&lab_a_os);
    assert_eq!(f.host_status("lab-a")["state"], "installed", "the refused reports changed nothing");

    // -- A stranger: serve's file for its MAC boots its disk's own loader; nothing is installed,
    // the disk is byte for byte what it was, and serve keeps no state for it.
    let stranger = Instant::now();
    let loaders = f.path().join("loader-stranger");
    std::fs::create_dir_all(&loaders).expect("mkdir");
    let own_os = "nixos-pxe-test: the boot loader already on the stranger disk runs";
    let loader = std::fs::read(stand_in_loader(&loaders, own_os)).expect("loader");
    let disk_s = esp_disk(&loaders, &[("/EFI/BOOT/BOOTX64.EFI", loader)]);
    let before = sha256(&disk_s);
    let mut qs = f.boot("stranger", 1, &[nic("tap-s", STRANGER)], &disk_s);
    let console = f.until_exit("the stranger's boot", BOOT_TIMEOUT, &mut qs);
    f.phase("a stranger boots its own disk", stranger);
    assert!(
        in_order(&console, &[
            &format!("nixos-pxe: {STRANGER}: not in the fleet (fleet.unknownHosts = \"local-boot\"): booting from the disk"),
            "nixos-pxe: starting /EFI/BOOT/BOOTX64.EFI from hd0,gpt1",
            own_os,
        ]),
        "{}",
        tail(&console)
    );
    assert!(!console.contains("bzImage"), "{}", tail(&console));
    assert_eq!(sha256(&disk_s), before, "the stranger's disk is unchanged");
    assert!(f.status().iter().all(|h| h["macs"].as_array().is_some_and(|m| !m.contains(&Value::from(STRANGER)))));
    assert!(f.serve_log().contains(&format!("fleet: decision mac={STRANGER} host=\"-\"")), "{}", f.serve_log());
}

/// lab-c is killed in the middle of its unpack and finishes as attempt 2 over its own half-written
/// disk; lab-d's disk holds a file system, its attempts fail and it is held. The fleet's state is
/// in PostgreSQL here (serve --database), so the QEMU installs run once against each store.
#[test]
fn an_interrupted_install_finishes_and_a_failing_host_is_held() {
    let _one_qemu = preflight();
    let mut f = FleetLab::with_postgres("fleet-cd");
    f.start_serve();

    // -- lab-c: its machine dies (QEMU killed) once serve has its `step unpack` report.
    let start = Instant::now();
    let disk_c = f.blank_disk("lab-c");
    let mut qc = f.boot("lab-c", 1, &[nic("tap-c", C)], &disk_c);
    f.until("lab-c's `step unpack` report", INSTALL_TIMEOUT, &[&qc], |f| accepted(&f.serve_log(), "lab-c", "step unpack"));
    qc.stop();
    let first = qc.console();
    assert!(first.contains("nixos-pxe: step 4/7 unpack") && !first.contains("step 4/7 unpack done"), "killed in the middle of the unpack:\n{}", tail(&first));
    let token_c1 = token_on(&first);
    let marker = nixos_pxe_installer::fleet::marker::disk_guid("lab-c", 1);
    let disk_id = run(Command::new("sfdisk").arg("--disk-id").arg(&disk_c));
    assert_eq!(disk_id.trim().parse::<nixos_pxe_installer::fleet::marker::Guid>(), Ok(marker), "the half-written disk has lab-c's marker");
    f.phase("lab-c to its unpack", start);

    let again = Instant::now();
    let mut qc = f.boot("lab-c", 2, &[nic("tap-c", C)], &disk_c);
    let console = f.until_exit("lab-c's second attempt", INSTALL_TIMEOUT, &mut qc);
    f.phase("lab-c attempt 2", again);
    assert!(
        in_order(&console, &[
            &format!("nixos-pxe: {C} is lab-c: installing generation 1, attempt 2"),
            &format!("and its GPT disk GUID {marker} marks it as lab-c's install of generation 1: an earlier attempt of this install that did not finish"),
            "nixos-pxe: step 4/7 unpack done",
            "nixos-pxe: install complete in ",
            "nixos-pxe: report installed: accepted",
        ]),
        "{}",
        tail(&console)
    );
    assert_eq!(read_from_root(&disk_c, &format!("{}/nixos-version", system_path("db").trim_start_matches('/'))), "db's system\n");
    let mut expected = full_install(1)[..5].to_vec();
    expected.extend(full_install(2));
    assert_eq!(f.history("lab-c"), expected, "attempt 1 up to its unpack, then attempt 2 whole");
    let h = f.host_status("lab-c");
    assert_eq!((h["state"].as_str(), h["attempt"]["number"].as_u64(), h["failures"].as_u64()), (Some("installed"), Some(2), Some(0)), "{h}");
    // Attempt 1's token is old now.
    let old = serde_json::json!({ "host": "lab-c", "generation": 1, "attempt": 1, "token": token_c1, "event": "failed", "step": "unpack", "message": "late" });
    let (lab_c_os, _) = f.machine("c-os", C);
    assert_eq!(f.post_report_from(&lab_c_os, &old).0, 409);
    f.unplug(&lab_c_os);

    // -- lab-d: a disk with a file system (wipe = "if-empty" refuses it); maxAttempts = 2.
    let disk_d = f.blank_disk("lab-d");
    sh(&format!("mkfs.ext4 -q -F -L precious {}", disk_d.display()));
    let before = sha256(&disk_d);
    for attempt in 1..=2u32 {
        let failing = Instant::now();
        let mut qd = f.boot("lab-d", attempt, &[nic("tap-d", D)], &disk_d);
        f.until(&format!("lab-d's attempt {attempt} failing and reporting it"), INSTALL_TIMEOUT, &[&qd], |_| {
            qd.console().contains("nixos-pxe: report failed: accepted")
        });
        qd.stop();
        let console = qd.console();
        assert!(
            in_order(&console, &[
                &format!("nixos-pxe: {D} is lab-d: installing generation 1, attempt {attempt}"),
                "is not empty: it holds an ext2/ext3/ext4 file system",
                "install FAILED at step 2/7 (disk)",
                "nixos-pxe: report failed: accepted",
            ]),
            "{}",
            tail(&console)
        );
        f.phase(&format!("lab-d attempt {attempt} fails"), failing);
    }
    let hold = Instant::now();
    let mut qd = f.boot("lab-d", 3, &[nic("tap-d", D)], &disk_d);
    let held = format!("nixos-pxe: HOLD {D} (lab-d): 2 attempts at lab-d generation 1 failed; last: attempt 2: step disk: ");
    f.until("lab-d held", BOOT_TIMEOUT, &[&qd], |_| in_order(&qd.console(), &[&held, "Ask the boot server again"]));
    // It stays there: a quarter of a minute later nothing else has happened.
    let seen = qd.console();
    std::thread::sleep(Duration::from_secs(15));
    assert!(qd.exit_status().is_none(), "QEMU ended while held:\n{}", tail(&qd.console()));
    let later = qd.console();
    assert!(!later[seen.len()..].contains("nixos-pxe:") && !later.contains("Linux version"), "something happened during the hold:\n{}", tail(&later));
    qd.stop();
    f.phase("lab-d held", hold);
    assert_eq!(sha256(&disk_d), before, "lab-d's disk is unchanged");
    let h = f.host_status("lab-d");
    assert_eq!((h["state"].as_str(), h["failures"].as_u64(), h["decision"]["kind"].as_str()), (Some("hold"), Some(2), Some("hold")), "{h}");
    assert_eq!(f.history("lab-d").iter().filter(|(_, e)| e == "failed").count(), 2);
}
