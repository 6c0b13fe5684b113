//! The rendered grub.cfg and dnsmasq.conf working for real: a UEFI QEMU (OVMF, TCG) PXE-boots
//! the bootx64.efi `mk-bootloader` built, in a network namespace this test makes, against dnsmasq,
//! ISC dhcpd (+ tftpd-hpa) and Kea (+ tftpd-hpa), each started only from its rendered file; the
//! serial console shows each GRUB step.
//! The kernel is the end-to-end test kernel (tests/e2e/build-test-kernel.sh, built once and cached)
//! or $NIXOS_PXE_TEST_KERNEL; one test leaves it out to check GRUB's message for a missing kernel.

mod common;

use common::{CLIENT_MAC, GRUB_LIB, Lab, Qemu, Socket, in_order, nixos_pxe};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Under TCG on 2 busy cores the firmware alone can take half a minute.
const BOOT_TIMEOUT: Duration = Duration::from_secs(150);

/// Boots OVMF from the lab's tap0 and waits until every one of `expect` has appeared on the
/// serial console (in that order); fails with the console's text, or at once with the log of a
/// server that exited (a configuration it rejected).
fn pxe_boot(lab: &mut Lab, dir: &Path, expect: &[&str]) -> String {
    let mut qemu = Qemu::start(lab, dir, 512, None);
    loop {
        // Servers' exits are looked at before the console is read; QEMU's own exit is not an
        // error: it ends when the kernel panics and reboots (-no-reboot) past what is expected.
        let exited = lab.exited();
        let text = qemu.console();
        if in_order(&text, expect) {
            return text;
        }
        assert!(exited.is_empty(), "{}\n--- the console lacks (in order) {expect:?}:\n{text}", exited.join("\n"));
        let qemu_ended = qemu.exit_status().is_some();
        assert!(
            !qemu_ended && qemu.started.elapsed() < BOOT_TIMEOUT,
            "after {:?} (QEMU ended: {qemu_ended}) the serial console lacks (in order) {expect:?}:\n{text}\n--- qemu:\n{}",
            qemu.started.elapsed(),
            std::fs::read_to_string(&qemu.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn preflight() -> common::OneQemu {
    common::preflight(&[])
}

/// Waits until DHCP (67) and TFTP (69) are bound in the lab before the client starts; a server
/// that exits or never binds fails the test with the servers' logs.
fn wait_for_dhcp_and_tftp(lab: &mut Lab) {
    let ns = lab.ns.clone();
    lab.wait_listening(&ns, &[Socket::Udp(67), Socket::Udp(69)]);
}

/// Whether the TFTP root gets the kernel.
#[derive(Clone, Copy, PartialEq)]
enum Kernel {
    /// The end-to-end test kernel (built once, cached; see common::test_kernel).
    Test,
    /// None: GRUB's message for a kernel it cannot fetch is what is tested.
    Missing,
}

/// Renders `config` (an option tree, as JSON) and puts bootx64.efi and the kernel under its TFTP
/// root. Returns the render directory.
fn prepare(dir: &Path, config: serde_json::Value, kernel: Kernel) -> PathBuf {
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
    if kernel == Kernel::Test {
        let kernel = common::test_kernel(&["--config", file]);
        std::fs::copy(kernel, tftp.join("nixos/bzImage")).expect("copy kernel");
    }
    rendered
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

/// dnsmasq started from the rendered dnsmasq.conf, as it is, its log into `log` and its leases
/// beside it (common::dnsmasq_host_safe_args: nothing of the host's is written).
fn spawn_rendered_dnsmasq(lab: &mut Lab, rendered: &Path, log: &Path) {
    let conf = rendered.join("dnsmasq.conf");
    let mut args = vec!["dnsmasq".to_string()];
    args.extend(common::dnsmasq_host_safe_args(&log.with_extension("leases")));
    args.push(format!("--conf-file={}", conf.display()));
    lab.spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), log);
}

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
    let rendered = prepare(dir.path(), lab_config(), Kernel::Test);
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
        Dhcp::Dnsmasq => spawn_rendered_dnsmasq(&mut lab, &rendered, &log),
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
    wait_for_dhcp_and_tftp(&mut lab);
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
    expect.push("nixos-pxe: booting the kernel");
    expect.push(&command_line);
    expect.push("rootpath=/srv/nixos/nfsroot,vers=3,tcp");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pxe_boot(&mut lab, dir.path(), &expect)
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
    let rendered = prepare(dir.path(), config, Kernel::Test);
    let cmdline = std::fs::read_to_string(rendered.join("cmdline")).expect("cmdline");
    assert!(
        cmdline.contains(" nfsroot=10.42.0.1:/srv/nixos/nfsroot,vers=3,tcp"),
        "{cmdline}"
    );
    let mut lab = Lab::new("proxy");
    // The site's DHCP server: its own namespace, on the same bridge through a veth pair.
    let site = lab.add_host("site", "10.42.0.2");
    let site_log = dir.path().join("site-dhcp.log");
    let mut site_args = vec!["dnsmasq".to_string()];
    site_args.extend(common::dnsmasq_host_safe_args(&site_log.with_extension("leases")));
    site_args.extend(
        [
            "--port=0",
            "--interface=eth0",
            "--bind-interfaces",
            "--dhcp-range=10.42.0.150,10.42.0.159,255.255.255.0,600",
            "--log-dhcp",
            "--conf-file=/dev/null",
        ]
        .map(String::from),
    );
    lab.spawn_in(&site, &site_args.iter().map(String::as_str).collect::<Vec<_>>(), &site_log);
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    wait_for_dhcp_and_tftp(&mut lab);
    lab.wait_listening(&site, &[Socket::Udp(67)]);
    let mut expect = vec![
        "nixos-pxe: efinet0 has address 10.42.0.15",
        "nixos-pxe: boot server 10.42.0.1 (bootServer.address; proxy DHCP mode)",
        "nixos-pxe: loading (tftp)/nixos/bzImage from 10.42.0.1",
    ];
    let command_line = format!(
        "Command line: BOOT_IMAGE=(tftp)/nixos/bzImage {}",
        cmdline.trim_end()
    );
    expect.push(&command_line);
    expect.push("IP-Config: Got DHCP answer from 10.42.0.2");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pxe_boot(&mut lab, dir.path(), &expect)
    }));
    drop(lab);
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

/// The wrong efinet interface (efinet1 on a one-NIC machine): GRUB's own DHCP command fails, and
/// GRUB lists the cards it sees (`net_ls_cards`: efinet0 with the client's MAC, nothing else),
/// instead of hanging or booting nothing silently. The card list is what GRUB printed, not the
/// template's own words (its echo names "efinet0" too).
#[test]
fn a_wrong_efinet_interface_is_explained_on_the_console() {
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = lab_config();
    config["nfsroot"] = serde_json::json!({ "bootLoader": { "efinetDHCPInterface": "efinet1" } });
    let rendered = prepare(dir.path(), config, Kernel::Missing);
    let mut lab = Lab::new("wrongnic");
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    wait_for_dhcp_and_tftp(&mut lab);
    let card = format!("efinet0 {CLIENT_MAC}");
    let text = pxe_boot(
        &mut lab,
        dir.path(),
        &[
            "nixos-pxe: DHCP on efinet1 (",
            // GRUB's net_bootp on a card it does not have.
            "error: no network card found.",
            "nixos-pxe: DHCP on efinet1 failed",
            "these are the cards GRUB sees:",
            &card,
            "set nfsroot.bootLoader.efinetDHCPInterface",
        ],
    );
    assert_eq!(cards_listed(&text), [card], "the cards GRUB listed:\n{text}");
    assert!(!text.contains("efinet1 has address"), "{text}");
}

/// The lines `net_ls_cards` printed ("efinetN MAC"), each once: the serial console carries both
/// of GRUB's terminals (serial and console), so every line arrives twice.
fn cards_listed(console: &str) -> Vec<String> {
    let is_mac = |s: &str| s.len() == 17 && s.split(':').all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
    let mut cards: Vec<String> = Vec::new();
    for line in console.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let card = matches!(words.as_slice(), [name, mac] if name.strip_prefix("efinet").is_some_and(|n| n.parse::<u32>().is_ok()) && is_mac(mac));
        if card && !cards.iter().any(|c| c == line.trim()) {
            cards.push(line.trim().to_string());
        }
    }
    cards
}

/// A TFTP root without the kernel: GRUB names the file and the server it could not load it from,
/// instead of falling back to the firmware's menu without a word.
#[test]
fn a_missing_kernel_is_explained_on_the_console() {
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = prepare(dir.path(), lab_config(), Kernel::Missing);
    let mut lab = Lab::new("nokernel");
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    wait_for_dhcp_and_tftp(&mut lab);
    pxe_boot(
        &mut lab,
        dir.path(),
        &[
            "nixos-pxe: loading (tftp)/nixos/bzImage from 10.42.0.1",
            "nixos-pxe: could not load nixos/bzImage from the TFTP server 10.42.0.1",
        ],
    );
}
