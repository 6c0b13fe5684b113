//! The rendered grub.cfg and dnsmasq.conf working for real: a UEFI QEMU (OVMF, TCG) PXE-boots
//! the bootx64.efi `mk-bootloader` built, in a network namespace this test makes, against dnsmasq,
//! ISC dhcpd (+ tftpd-hpa) and Kea (+ tftpd-hpa), each started only from its rendered file; the
//! serial console shows each GRUB step.
//! The kernel is the cached end-to-end test kernel (tests/e2e/build-test-kernel.sh) or
//! $NIXOS_PXE_TEST_KERNEL; without one a stand-in file checks GRUB's failure message instead.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
const GRUB_LIB: &str = "/usr/lib/grub/x86_64-efi";
/// Under TCG on 2 busy cores the firmware alone can take half a minute.
const BOOT_TIMEOUT: Duration = Duration::from_secs(150);

fn nixos_pxe(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_nixos-pxe"))
        .args(args)
        .output()
        .expect("run nixos-pxe");
    assert!(
        out.status.success(),
        "nixos-pxe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh(script: &str) {
    let out = Command::new("sh")
        .args(["-ec", script])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a bridge `br0` (the boot network) and a tap `tap0` on it for QEMU.
/// Deleted, with every process this test started in it, when dropped.
struct Lab {
    ns: String,
    /// Every process started, with its log.
    children: Vec<(Child, PathBuf)>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let ns = format!("nixos-pxe-{tag}-{}", std::process::id());
        sh(&format!(
            "ip netns add {ns}; ip -n {ns} link set lo up; ip -n {ns} link add br0 type bridge; \
             ip -n {ns} addr add 10.42.0.1/24 dev br0; ip -n {ns} link set br0 up; \
             ip -n {ns} tuntap add dev tap0 mode tap; ip -n {ns} link set tap0 master br0 up"
        ));
        Lab {
            ns,
            children: Vec::new(),
        }
    }

    /// Starts a program inside the namespace; its output goes to `log`.
    fn spawn(&mut self, args: &[&str], log: &Path) {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {args:?}: {e}"));
        self.children.push((child, log.to_owned()));
    }

    /// Boots OVMF from tap0 and waits until every one of `expect` has appeared on the serial
    /// console (in that order), or fails with the console's text.
    fn pxe_boot(&mut self, dir: &Path, expect: &[&str]) -> String {
        let vars = dir.join("OVMF_VARS.fd");
        std::fs::copy(OVMF_VARS, &vars).expect("copy OVMF vars");
        let serial = dir.join("serial.log");
        let qemu = [
            "qemu-system-x86_64".to_string(),
            "-accel".into(),
            "tcg".into(),
            "-m".into(),
            "512".into(),
            "-no-reboot".into(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-drive".into(),
            format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,file={}", vars.display()),
            "-netdev".into(),
            "tap,id=n0,ifname=tap0,script=no,downscript=no".into(),
            // No option ROM: OVMF's own virtio-net driver and PXE, as on a server's onboard NIC.
            "-device".into(),
            "virtio-net-pci,netdev=n0,romfile=".into(),
            "-serial".into(),
            format!("file:{}", serial.display()),
        ];
        let args: Vec<&str> = qemu.iter().map(String::as_str).collect();
        self.spawn(&args, &dir.join("qemu.log"));
        let start = Instant::now();
        loop {
            // Exits are looked at before the console is read: QEMU itself ends when the kernel
            // panics and reboots (-no-reboot) once it is past what this test expects.
            let exited: Vec<String> = self
                .children
                .iter_mut()
                .filter_map(|(child, log)| match child.try_wait() {
                    Ok(Some(status)) => Some(format!(
                        "{} exited ({status}):\n{}",
                        log.display(),
                        std::fs::read_to_string(log.as_path()).unwrap_or_default()
                    )),
                    _ => None,
                })
                .collect();
            let text = console(&serial);
            if in_order(&text, expect) {
                return text;
            }
            // A server that died (a config it rejects) fails the test at once, with its log.
            assert!(
                exited.is_empty(),
                "{}\n--- the console lacks (in order) {expect:?}:\n{text}",
                exited.join("\n")
            );
            assert!(
                start.elapsed() < BOOT_TIMEOUT,
                "after {:?} the serial console lacks (in order) {expect:?}:\n{text}\n--- qemu:\n{}",
                start.elapsed(),
                std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// The serial console as text: GRUB's cursor escapes removed, and GRUB's wrapped lines
/// joined so an expected message matches whatever the terminal width.
fn console(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).replace('\r', "")
}

fn in_order(text: &str, expect: &[&str]) -> bool {
    let flat = text.replace('\n', " ");
    let mut rest = flat.as_str();
    for e in expect {
        match rest.find(e) {
            Some(i) => rest = &rest[i + e.len()..],
            None => return false,
        }
    }
    true
}

/// The cached test kernel, if one was built.
fn test_kernel() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("NIXOS_PXE_TEST_KERNEL") {
        return Some(PathBuf::from(k));
    }
    let cache = std::env::var_os("NIXOS_PXE_KERNEL_CACHE").map_or_else(
        || PathBuf::from("/var/cache/nixos-pxe/test-kernel"),
        PathBuf::from,
    );
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .map(|e| e.path().join("bzImage"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// One QEMU at a time: under TCG on 2 cores, parallel boots would only slow each other past
/// their timeout. Held for a whole test.
static ONE_BOOT_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn preflight() -> std::sync::MutexGuard<'static, ()> {
    let guard = ONE_BOOT_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let uid = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        uid.stdout, b"0\n",
        "this test needs root for network namespaces (CI runs as root)"
    );
    for file in [OVMF_CODE, OVMF_VARS, GRUB_LIB] {
        assert!(
            Path::new(file).exists(),
            "{file} missing: dev/install-deps.sh installs ovmf and grub-efi-amd64-bin"
        );
    }
    guard
}

/// Renders `config` (an option tree, as JSON) and puts bootx64.efi and a kernel under its TFTP root.
/// Returns the render directory and whether the kernel is a real one.
fn prepare(dir: &Path, config: serde_json::Value) -> (PathBuf, bool) {
    let tftp = dir.join("tftp");
    std::fs::create_dir_all(tftp.join("nixos")).expect("mkdir tftp");
    let mut config = config;
    config["bootServer"]["tftpRoot"] = tftp.display().to_string().into();
    let file = dir.join("site.json");
    std::fs::write(&file, serde_json::to_string(&config).expect("json")).expect("write config");
    let file = file.to_str().expect("utf-8 path");
    let rendered = dir.join("rendered");
    nixos_pxe(&[
        "render",
        "--config",
        file,
        "--out",
        rendered.to_str().expect("utf-8"),
    ]);
    nixos_pxe(&[
        "mk-bootloader",
        "--config",
        file,
        "--grub-lib",
        GRUB_LIB,
        "--out",
        tftp.to_str().expect("utf-8"),
    ]);
    let real = match test_kernel() {
        Some(kernel) => {
            std::fs::copy(kernel, tftp.join("nixos/bzImage")).expect("copy kernel");
            true
        }
        None => {
            std::fs::write(tftp.join("nixos/bzImage"), b"a stand-in, not a kernel\n")
                .expect("write stand-in");
            false
        }
    };
    (rendered, real)
}

fn lab_config() -> serde_json::Value {
    serde_json::json!({
        "bootServer": {
            "address": "10.42.0.1",
            "interface": "br0",
            "subnet": "10.42.0.0/24",
            "dhcpRange": { "start": "10.42.0.100", "end": "10.42.0.199" },
            "nfsExport": "/srv/nixos/nfsroot"
        }
    })
}

/// Every dnsmasq here runs with `--log-facility=-` (its log into the test's log, not syslog) and
/// `--pid-file` without a path (none: /run/dnsmasq is shared with every dnsmasq on the machine,
/// and a second one there made the first exit with status 3). Neither changes the rendered file.
///
/// The DHCP server under test in authoritative mode.
#[derive(Clone, Copy, Debug)]
enum Dhcp {
    Dnsmasq,
    IscDhcpd,
    Kea,
}

/// Authoritative mode: GRUB reads the server from option 66; the kernel gets option 17.
/// dnsmasq serves TFTP itself; ISC dhcpd and Kea get tftpd-hpa beside them.
fn boots_with(server: Dhcp) {
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let (rendered, real_kernel) = prepare(dir.path(), lab_config());
    let cmdline = std::fs::read_to_string(rendered.join("cmdline")).expect("cmdline");
    let mut lab = Lab::new(&format!("{server:?}").to_lowercase());
    let log = dir.path().join("dhcp.log");
    let tftp_root = dir.path().join("tftp");
    let tftpd = |lab: &mut Lab| {
        let root = tftp_root.to_str().expect("utf-8");
        // -u root: the test's temporary directory is private to root.
        lab.spawn(
            &[
                "in.tftpd",
                "-L",
                "-v",
                "-u",
                "root",
                "-a",
                "10.42.0.1:69",
                "-s",
                root,
            ],
            &dir.path().join("tftpd.log"),
        );
    };
    match server {
        Dhcp::Dnsmasq => {
            let conf = rendered.join("dnsmasq.conf");
            lab.spawn(
                &[
                    "dnsmasq",
                    "--keep-in-foreground",
                    "--log-facility=-",
                    "--pid-file",
                    &format!("--conf-file={}", conf.display()),
                ],
                &log,
            );
        }
        Dhcp::IscDhcpd => {
            let leases = dir.path().join("dhcpd.leases");
            std::fs::write(&leases, "").expect("leases file");
            let (conf, leases, pid) = (
                rendered.join("dhcpd.conf"),
                leases.display().to_string(),
                dir.path().join("dhcpd.pid"),
            );
            let conf = conf.display().to_string();
            let pid = pid.display().to_string();
            lab.spawn(
                &[
                    "dhcpd", "-4", "-f", "-d", "-cf", &conf, "-lf", &leases, "-pf", &pid, "br0",
                ],
                &log,
            );
            tftpd(&mut lab);
        }
        Dhcp::Kea => {
            // Kea's lease file (default path, in /var/lib/kea), lock and pid files (/run/kea): a
            // mount namespace gives it private empty ones, so the rendered file runs unchanged.
            let conf = rendered.join("kea-dhcp4.json").display().to_string();
            let script = "mount -t tmpfs tmpfs /run && mkdir -p /run/kea && mount -t tmpfs tmpfs /var/lib && \
                          mkdir /var/lib/kea && exec kea-dhcp4 -c \"$1\"";
            lab.spawn(
                &["unshare", "--mount", "sh", "-c", script, "kea", &conf],
                &log,
            );
            tftpd(&mut lab);
        }
    }
    let mut expect = vec![
        "nixos-pxe: GRUB started",
        "nixos-pxe: DHCP on efinet0",
        "nixos-pxe: efinet0 has address 10.42.0.1",
        "nixos-pxe: boot server 10.42.0.1 (DHCP option 66)",
        "nixos-pxe: loading (tftp)/nixos/bzImage from 10.42.0.1",
    ];
    let command_line = format!(
        "Command line: BOOT_IMAGE=(tftp)/nixos/bzImage {}",
        cmdline.trim_end()
    );
    if real_kernel {
        expect.push("nixos-pxe: booting the kernel");
        expect.push(&command_line);
        expect.push("rootpath=/srv/nixos/nfsroot,vers=3,tcp");
    } else {
        expect.push("nixos-pxe: could not load nixos/bzImage from the TFTP server 10.42.0.1");
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.pxe_boot(dir.path(), &expect)
    }));
    if let Err(panic) = result {
        eprintln!(
            "{server:?} log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn grub_boots_the_kernel_from_the_rendered_dnsmasq_conf() {
    boots_with(Dhcp::Dnsmasq);
}

#[test]
fn grub_boots_the_kernel_from_the_rendered_dhcpd_conf() {
    boots_with(Dhcp::IscDhcpd);
}

#[test]
fn grub_boots_the_kernel_from_the_rendered_kea_dhcp4_json() {
    boots_with(Dhcp::Kea);
}

/// Proxy mode: a site DHCP server (another namespace, 10.42.0.2) hands out addresses only; the
/// rendered dnsmasq.conf adds the PXE boot file; grub.cfg names the server and the kernel
/// command line carries nfsroot=.
#[test]
fn proxy_mode_boots_with_another_server_handing_out_addresses() {
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = lab_config();
    config["bootServer"]["dhcpMode"] = "proxy".into();
    config["bootServer"]["dhcpRange"] = serde_json::json!({});
    let (rendered, real_kernel) = prepare(dir.path(), config);
    let cmdline = std::fs::read_to_string(rendered.join("cmdline")).expect("cmdline");
    assert!(
        cmdline.contains(" nfsroot=10.42.0.1:/srv/nixos/nfsroot,vers=3,tcp"),
        "{cmdline}"
    );
    let mut lab = Lab::new("proxy");
    // The site's DHCP server: its own namespace, on the same bridge through a veth pair.
    let site = format!("{}-site", lab.ns);
    sh(&format!(
        "ip netns add {site}; ip -n {site} link set lo up; ip -n {ns} link add veth-site type veth peer name eth0 netns {site}; \
         ip -n {ns} link set veth-site master br0 up; ip -n {site} addr add 10.42.0.2/24 dev eth0; ip -n {site} link set eth0 up",
        ns = lab.ns
    ));
    let site_log = dir.path().join("site-dhcp.log");
    let file = std::fs::File::create(&site_log).expect("log");
    let site_server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &site,
            "dnsmasq",
            "--keep-in-foreground",
            "--log-facility=-",
            "--pid-file",
            "--port=0",
            "--interface=eth0",
            "--bind-interfaces",
        ])
        .args([
            "--dhcp-range=10.42.0.150,10.42.0.159,255.255.255.0,600",
            "--log-dhcp",
            "--conf-file=/dev/null",
        ])
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup"))
        .stderr(file)
        .spawn()
        .expect("start the site's dnsmasq");
    lab.children.push((site_server, site_log.clone()));
    let conf = rendered.join("dnsmasq.conf");
    lab.spawn(
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--log-facility=-",
            "--pid-file",
            &format!("--conf-file={}", conf.display()),
        ],
        &dir.path().join("dnsmasq.log"),
    );
    let mut expect = vec![
        "nixos-pxe: efinet0 has address 10.42.0.15",
        "nixos-pxe: boot server 10.42.0.1 (bootServer.address; proxy DHCP mode)",
        "nixos-pxe: loading (tftp)/nixos/bzImage from 10.42.0.1",
    ];
    let command_line = format!(
        "Command line: BOOT_IMAGE=(tftp)/nixos/bzImage {}",
        cmdline.trim_end()
    );
    if real_kernel {
        expect.push(&command_line);
        expect.push("IP-Config: Got DHCP answer from 10.42.0.2");
    } else {
        expect.push("nixos-pxe: could not load nixos/bzImage");
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.pxe_boot(dir.path(), &expect)
    }));
    drop(lab);
    let _ = Command::new("ip").args(["netns", "del", &site]).status();
    if let Err(panic) = result {
        eprintln!(
            "site DHCP log:\n{}",
            std::fs::read_to_string(&site_log).unwrap_or_default()
        );
        eprintln!(
            "proxy dnsmasq log:\n{}",
            std::fs::read_to_string(dir.path().join("dnsmasq.log")).unwrap_or_default()
        );
        std::panic::resume_unwind(panic);
    }
}

/// The wrong efinet interface (efinet1 on a one-NIC machine): GRUB says what failed and lists
/// the cards it sees, instead of hanging or booting nothing silently.
#[test]
fn a_wrong_efinet_interface_is_explained_on_the_console() {
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = lab_config();
    config["nfsroot"] = serde_json::json!({ "bootLoader": { "efinetDHCPInterface": "efinet1" } });
    let (rendered, _) = prepare(dir.path(), config);
    let mut lab = Lab::new("wrongnic");
    let conf = rendered.join("dnsmasq.conf");
    lab.spawn(
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--log-facility=-",
            "--pid-file",
            &format!("--conf-file={}", conf.display()),
        ],
        &dir.path().join("dnsmasq.log"),
    );
    lab.pxe_boot(
        dir.path(),
        &[
            "nixos-pxe: DHCP on efinet1",
            "nixos-pxe: DHCP on efinet1 failed",
            "efinet0",
            "set nfsroot.bootLoader.efinetDHCPInterface",
        ],
    );
}
