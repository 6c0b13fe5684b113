//! The rendered grub.cfg and dnsmasq.conf working for real: a UEFI QEMU (OVMF, TCG) PXE-boots
//! the bootx64.efi `mk-bootloader` built, in a network namespace this test makes, against dnsmasq,
//! ISC dhcpd (+ tftpd-hpa) and Kea (+ tftpd-hpa), each started only from its rendered file; the
//! serial console shows each GRUB step. The other firmwares against the rendered dnsmasq.conf:
//! legacy BIOS PXE (SeaBIOS + iPXE fetching bios.0) and UEFI HTTP boot (OVMF fetching
//! bootx64.efi from an HTTP server, busybox httpd beside the rendered dnsmasq.conf); and UEFI
//! HTTP boot from `nixos-pxe serve` alone (its DHCP, HTTP and TFTP).
//! The kernel is the end-to-end test kernel (tests/e2e/build-test-kernel.sh, built once and cached)
//! or $NIXOS_PXE_TEST_KERNEL; one test leaves it out to check GRUB's message for a missing kernel.

mod common;

use common::efi_disk::{esp_disk, stand_in_loader};
use common::{Boot, CLIENT_MAC, GRUB_BIOS_LIB, GRUB_LIB, Lab, Qemu, Socket, in_order, nixos_pxe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Under TCG on 2 busy cores the firmware alone can take half a minute.
const BOOT_TIMEOUT: Duration = Duration::from_secs(150);

/// Boots OVMF from the lab's tap0 and waits until every one of `expect` has appeared on the
/// serial console (in that order); fails with the console's text, or at once with the log of a
/// server that exited (a configuration it rejected).
fn pxe_boot(lab: &mut Lab, dir: &Path, expect: &[&str]) -> String {
    boot_until(lab, dir, Boot::OvmfPxe, expect)
}

/// `pxe_boot` with the firmware and network boot of `boot`.
fn boot_until(lab: &mut Lab, dir: &Path, boot: Boot, expect: &[&str]) -> String {
    let mut qemu = Qemu::start_with(lab, dir, 512, None, boot, common::ONE_NIC);
    loop {
        // Servers' exits are looked at before the console is read; QEMU's own exit is not an
        // error: it ends when the kernel panics and reboots (-no-reboot) past what is expected.
        let exited = lab.exited();
        let text = qemu.console();
        if in_order(&text, expect) {
            eprintln!("{boot:?}: the console showed all of {expect:?} {:.1} s after QEMU started", qemu.started.elapsed().as_secs_f64());
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

/// Renders `config` (an option tree, as JSON) and puts bootx64.efi, bios.0 and the kernel under its
/// TFTP root. Returns the render directory.
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
        "--grub-bios-lib",
        GRUB_BIOS_LIB,
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
/// beside it (common::dnsmasq_host_safe_args: nothing of the host's is written); returns once it
/// listens for DHCP and TFTP.
fn spawn_rendered_dnsmasq(lab: &mut Lab, rendered: &Path, log: &Path) {
    let conf = rendered.join("dnsmasq.conf");
    let mut args = vec!["dnsmasq".to_string()];
    args.extend(common::dnsmasq_host_safe_args(&log.with_extension("leases")));
    args.push(format!("--conf-file={}", conf.display()));
    lab.spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), log);
    wait_for_dhcp_and_tftp(lab);
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
            // Kea opens no socket on an interface that is not running (IFF_RUNNING: "the
            // interface br0 is not running") and never tries again. br0's only port so far is
            // QEMU's tap, without carrier until QEMU starts, so br0 has carrier only for the
            // moment the kernel takes to notice that after the lab is made: a loaded machine lost
            // that race once. A machine on the bridge (a veth with carrier) keeps br0 running, as
            // a boot server's cabled interface is.
            lab.add_host("link", "10.42.0.254");
            let ns = lab.ns.clone();
            let running = Instant::now();
            while !common::sh(&format!("ip -n {ns} link show br0")).contains("LOWER_UP") {
                assert!(running.elapsed() < Duration::from_secs(10), "br0 in {ns} has no carrier 10 s after a veth joined it");
                std::thread::sleep(Duration::from_millis(50));
            }
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
    proxy_boot(Boot::OvmfPxe);
}

/// The same with legacy BIOS: iPXE gets a boot menu from the proxy (one entry, bios.0) and asks
/// the proxy for it on port 4011, as the PXE specification has it.
#[test]
fn bios_proxy_mode_boots_with_another_server_handing_out_addresses() {
    proxy_boot(Boot::SeaBiosIpxe);
}

fn proxy_boot(boot: Boot) {
    let bios = boot == Boot::SeaBiosIpxe;
    let _one_boot = if bios { common::preflight(&[GRUB_BIOS_LIB, common::SEABIOS, common::IPXE_VIRTIO_ROM]) } else { preflight() };
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
    let mut lab = Lab::new(if bios { "bios-proxy" } else { "proxy" });
    if bios {
        lab.advertise_ipv6_router(dir.path());
    }
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
        if bios { "nixos-pxe: pxe has address 10.42.0.15" } else { "nixos-pxe: efinet0 has address 10.42.0.15" },
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
        boot_until(&mut lab, dir.path(), boot, &expect)
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

/// The lab with both interface options "auto" and a one-second menu, and a fleet whose one host
/// has `macs` (none of them the client's makes the client a stranger).
fn fleet_config(macs: &[&str], unknown_hosts: &str) -> serde_json::Value {
    let mut config = lab_config();
    config["nfsroot"] = serde_json::json!({
        "bootLoader": { "efinetDHCPInterface": "auto", "linuxPnPInterface": "auto", "timeout": 1 }
    });
    config["fleet"] = serde_json::json!({
        "unknownHosts": unknown_hosts,
        "hosts": { "web1": { "macs": macs, "generation": 3, "target": { "flake": "/etc/fleet#web1" } } }
    });
    config
}

/// What `render` wrote for the hosts, copied where the README says: <tftpRoot>/nixos-pxe/hosts/.
fn publish_host_files(dir: &Path, rendered: &Path) -> Vec<String> {
    let to = dir.join("tftp/nixos-pxe/hosts");
    std::fs::create_dir_all(&to).expect("mkdir hosts");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(rendered.join("hosts")).expect("rendered hosts/") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy host file");
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    names
}

/// A fleet host: GRUB keeps the firmware's lease (no net_bootp), loads the per-host file that
/// dnsmasq serves for the client's MAC from the TFTP root, and its install entry loads the
/// kernel with the fleet's arguments and the MAC GRUB booted from; the kernel configures itself
/// by `ip=dhcp`.
#[test]
fn a_fleet_host_loads_its_own_file_and_its_install_entry_loads_the_kernel() {
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = prepare(
        dir.path(),
        fleet_config(&[CLIENT_MAC, "52-54-00-00-0A-02"], "local-boot"),
        Kernel::Test,
    );
    let published = publish_host_files(dir.path(), &rendered);
    assert_eq!(published, ["mac-52:54:00:00:0a:02.cfg", "mac-52:54:00:12:34:56.cfg"]);
    let grub_cfg = std::fs::read_to_string(dir.path().join("tftp/grub.cfg")).expect("grub.cfg");
    assert!(!grub_cfg.contains("net_bootp"), "{grub_cfg}");
    let mut lab = Lab::new("fleet");
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    let command_line = format!(
        "Command line: BOOT_IMAGE=(tftp)/nixos/bzImage console=ttyS0,115200n8 ip=dhcp root=/dev/nfs init=/init \
         nixos-pxe.host=web1 nixos-pxe.generation=3 nixos-pxe.mac={CLIENT_MAC}"
    );
    let expect = [
        &format!("nixos-pxe: the firmware booted from efinet0 (MAC {CLIENT_MAC}, address 10.42.0.1"),
        "nixos-pxe: boot server 10.42.0.1 (the firmware's DHCP next-server)",
        &format!("nixos-pxe: loading this machine's configuration (tftp)/nixos-pxe/hosts/mac-{CLIENT_MAC}.cfg from 10.42.0.1"),
        "Install NixOS: web1 (generation 3)",
        &format!("nixos-pxe: {CLIENT_MAC} is web1: installing generation 3"),
        "nixos-pxe: loading (tftp)/nixos/bzImage from 10.42.0.1",
        "nixos-pxe: booting the kernel",
        &command_line,
        "IP-Config: Got DHCP answer from 10.42.0.1",
    ];
    let console = pxe_boot(&mut lab, dir.path(), &expect);
    assert!(!console.contains("net_bootp"), "{}", common::tail(&console));
}

/// A single installer with both options "auto": grub.cfg's linux command carries
/// `nixos-pxe.mac=$net_default_mac`, and GRUB expands the variable in the command's arguments
/// (GRUB 2.06's script engine expands `$name` in every unquoted or double-quoted word before it
/// runs a command): the kernel's command line holds the MAC itself.
#[test]
fn auto_hands_the_kernel_the_mac_grub_booted_from() {
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = lab_config();
    config["nfsroot"] = serde_json::json!({
        "bootLoader": { "efinetDHCPInterface": "auto", "linuxPnPInterface": "auto", "timeout": 1 }
    });
    let rendered = prepare(dir.path(), config, Kernel::Test);
    let cmdline = std::fs::read_to_string(rendered.join("cmdline")).expect("cmdline");
    assert!(cmdline.trim_end().ends_with(" ip=dhcp root=/dev/nfs init=/init nixos-pxe.mac=$net_default_mac"), "{cmdline}");
    let mut lab = Lab::new("auto");
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    let command_line = format!(
        "Command line: BOOT_IMAGE=(tftp)/nixos/bzImage console=ttyS0,115200n8 ip=dhcp root=/dev/nfs init=/init nixos-pxe.mac={CLIENT_MAC}"
    );
    pxe_boot(
        &mut lab,
        dir.path(),
        &[
            "nixos-pxe: boot server 10.42.0.1 (the firmware's DHCP next-server)",
            "nixos-pxe: loading (tftp)/nixos/bzImage from 10.42.0.1",
            &command_line,
            "IP-Config: Got DHCP answer from 10.42.0.1",
            "rootpath=/srv/nixos/nfsroot,vers=3,tcp",
        ],
    );
}

/// Boots like `pxe_boot` until `expect` is on the console, then watches `for_how_long` more and
/// returns the console and whether QEMU ended (a reboot or power-off) in that time.
fn pxe_boot_and_watch(lab: &mut Lab, dir: &Path, expect: &[&str], for_how_long: Duration) -> (String, bool) {
    let mut qemu = Qemu::start(lab, dir, 512, None);
    let mut seen_at = None;
    loop {
        let exited = lab.exited();
        let text = qemu.console();
        assert!(exited.is_empty(), "{}\n--- console:\n{text}", exited.join("\n"));
        let ended = qemu.exit_status().is_some();
        match seen_at {
            None if in_order(&text, expect) => seen_at = Some(std::time::Instant::now()),
            None => assert!(
                !ended && qemu.started.elapsed() < BOOT_TIMEOUT,
                "after {:?} (QEMU ended: {ended}) the serial console lacks (in order) {expect:?}:\n{text}",
                qemu.started.elapsed()
            ),
            Some(at) if ended || at.elapsed() >= for_how_long => return (text, ended),
            Some(_) => {}
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Like `pxe_boot_and_watch`, with `disk` as the client's disk.
fn pxe_boot_with_disk(lab: &mut Lab, dir: &Path, disk: &Path, expect: &[&str]) -> String {
    let mut qemu = Qemu::start(lab, dir, 512, Some(disk));
    loop {
        let exited = lab.exited();
        let text = qemu.console();
        if in_order(&text, expect) {
            return text;
        }
        assert!(exited.is_empty(), "{}\n--- console:\n{text}", exited.join("\n"));
        let ended = qemu.exit_status().is_some();
        assert!(
            !ended && qemu.started.elapsed() < BOOT_TIMEOUT,
            "after {:?} (QEMU ended: {ended}) the serial console lacks (in order) {expect:?}:\n{text}",
            qemu.started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

const DISK_LOADER: &str = "nixos-pxe-test: the removable-media loader on the disk runs";
const SYSTEMD_BOOT: &str = "nixos-pxe-test: systemd-boot on the disk runs";

/// The text of `console` after the last place `marker` appears (for "nothing after"; GRUB
/// writes each line twice, to its serial terminal and to the firmware's console on the same port).
/// Lines are joined first, as in `in_order`, so a message GRUB wrapped still matches.
fn after(console: &str, marker: &str) -> String {
    let flat = console.replace('\n', " ");
    flat.rfind(marker).map_or_else(String::new, |i| flat[i + marker.len()..].to_string())
}

/// A stranger under `fleet.unknownHosts = "local-boot"`: there is no file for its MAC, so
/// grub.cfg boots the disk's removable-media loader itself (chainloaded, not through the
/// firmware: GRUB 2.06's `exit` would land in OVMF's boot manager, see the next test).
#[test]
fn a_stranger_boots_its_disks_loader() {
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = prepare(dir.path(), fleet_config(&["52:54:00:00:0a:01"], "local-boot"), Kernel::Missing);
    assert_eq!(publish_host_files(dir.path(), &rendered), ["mac-52:54:00:00:0a:01.cfg"]);
    let loader = std::fs::read(stand_in_loader(dir.path(), DISK_LOADER)).expect("stand-in");
    let disk = esp_disk(dir.path(), &[("/EFI/BOOT/BOOTX64.EFI", loader)]);
    let mut lab = Lab::new("stranger");
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    let gone = format!(
        "nixos-pxe: the boot server 10.42.0.1 has no configuration for {CLIENT_MAC}, so it is not in the fleet (fleet.unknownHosts = local-boot): booting from the disk"
    );
    let started = "nixos-pxe: starting /EFI/BOOT/BOOTX64.EFI from hd0,gpt1";
    let console = pxe_boot_with_disk(&mut lab, dir.path(), &disk, &[&gone, started, DISK_LOADER]);
    // GRUB started it (no firmware boot option in between), and nothing was installed.
    assert!(!after(&console, &gone).contains("BdsDxe"), "{}", common::tail(&console));
    assert!(!console.contains("bzImage"), "{}", common::tail(&console));
}

/// What the firmware does when GRUB exits (a host to boot locally, with no boot loader on any
/// disk): OVMF, an EDK2 firmware, takes GRUB 2.06's `exit` (which reports success) as a boot
/// option that ran, and opens its boot manager (UiApp) rather than trying the next option.
/// The file is what serve hands a host that is installed (render::host_grub, LocalBoot).
#[test]
fn exit_to_the_firmware_opens_ovmfs_boot_manager() {
    use nixos_pxe_installer::fleet::Decision;
    use nixos_pxe_installer::render::host_grub as grub;
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = prepare(dir.path(), fleet_config(&[CLIENT_MAC], "local-boot"), Kernel::Missing);
    publish_host_files(dir.path(), &rendered);
    let (resolved, fleet) = served_fleet(dir.path());
    let why = "web1 generation 3 is installed and booted (/nix/store/abc-nixos-system)";
    let mac = CLIENT_MAC.parse().expect("mac");
    let file = grub::host_cfg(&resolved, &mac, fleet.host("web1"), &Decision::LocalBoot { why: why.into() }, None).expect("file");
    std::fs::write(dir.path().join("tftp/nixos-pxe/hosts").join(grub::file_name(&mac)), file).expect("write");
    let mut lab = Lab::new("exit");
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    pxe_boot(
        &mut lab,
        dir.path(),
        &[
            &format!("nixos-pxe: {CLIENT_MAC} (web1): {why}: booting from the disk"),
            "nixos-pxe: no EFI boot loader on any disk; returning to the firmware",
            "BdsDxe: loading Boot0000 \"UiApp\"",
        ],
    );
}

/// The fleet as serve would hold it, from the configuration `prepare` wrote.
fn served_fleet(dir: &Path) -> (nixos_pxe_installer::config::Resolved, nixos_pxe_installer::fleet::Fleet) {
    let resolved = nixos_pxe_installer::config::load(
        camino::Utf8Path::from_path(&dir.join("site.json")).expect("utf-8"),
        nixos_pxe_installer::config::SourceMode::Static,
    )
    .expect("config");
    let fleet = nixos_pxe_installer::fleet::Fleet::from_config(&resolved.config).expect("fleet");
    (resolved, fleet)
}

/// A stranger under `fleet.unknownHosts = "hold"`: grub.cfg says why and waits; a quarter of a
/// minute later nothing else has happened (no firmware boot option, no reboot, no kernel).
#[test]
fn a_stranger_is_held_with_the_reason_on_the_console() {
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = prepare(dir.path(), fleet_config(&["52:54:00:00:0a:01"], "hold"), Kernel::Missing);
    publish_host_files(dir.path(), &rendered);
    let mut lab = Lab::new("hold");
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    let held = format!(
        "nixos-pxe: HOLD {CLIENT_MAC}: the boot server 10.42.0.1 has no configuration for it, so it is not in the fleet (fleet.unknownHosts = hold)"
    );
    let (console, ended) = pxe_boot_and_watch(&mut lab, dir.path(), &[&held, "Waiting; press Enter to ask again."], Duration::from_secs(15));
    assert!(!ended, "QEMU ended while held:\n{}", common::tail(&console));
    let rest = after(&console, "Waiting; press Enter to ask again.");
    assert!(!rest.contains("BdsDxe") && !rest.contains("nixos-pxe:"), "something happened after the hold:\n{rest}");
}

/// A fleet host whose disk carries the completion stamp of its generation (its `installed`
/// report was lost): render's install entry finds the stamp and chainloads the disk's
/// systemd-boot instead of installing again.
#[test]
fn a_host_with_its_stamp_on_the_disk_boots_it_instead_of_installing() {
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = prepare(dir.path(), fleet_config(&[CLIENT_MAC], "local-boot"), Kernel::Test);
    publish_host_files(dir.path(), &rendered);
    let systemd_boot = std::fs::read(stand_in_loader(dir.path(), SYSTEMD_BOOT)).expect("stand-in");
    let removable = std::fs::read(stand_in_loader(dir.path(), DISK_LOADER)).expect("stand-in");
    let stamp = nixos_pxe_installer::fleet::marker::done_stamp("web1", 3);
    let disk = esp_disk(
        dir.path(),
        &[
            ("/EFI/systemd/systemd-bootx64.efi", systemd_boot),
            ("/EFI/BOOT/BOOTX64.EFI", removable),
            (&stamp, b"installed\n".to_vec()),
        ],
    );
    let mut lab = Lab::new("stamp");
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    let found = "nixos-pxe: web1 generation 3 is installed already (/nixos-pxe/done-web1-g3 is on hd0,gpt1)";
    let console = pxe_boot_with_disk(&mut lab, dir.path(), &disk, &["Install NixOS: web1 (generation 3)", found, SYSTEMD_BOOT]);
    let rest = after(&console, found);
    assert!(!rest.contains("BdsDxe") && !console.contains("loading (tftp)/nixos/bzImage"), "GRUB chainloaded it:\n{}", common::tail(&console));
    assert!(!console.contains(DISK_LOADER), "systemd-boot comes first:\n{}", common::tail(&console));
}

/// What serve will hand a host held after failed attempts (render::host_grub with a Hold decision,
/// put where serve's file would be): the reason, a menu without timeout, and nothing else.
#[test]
fn a_served_hold_menu_waits_and_names_the_reason() {
    use nixos_pxe_installer::fleet::Decision;
    use nixos_pxe_installer::render::host_grub as grub;
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = fleet_config(&[CLIENT_MAC], "local-boot");
    let rendered = prepare(dir.path(), config, Kernel::Missing);
    publish_host_files(dir.path(), &rendered);
    let (resolved, fleet) = served_fleet(dir.path());
    let why = "3 attempts at web1 generation 3 failed; last: attempt 3: step disk: /dev/vda holds an ext4 file system";
    let mac = CLIENT_MAC.parse().expect("mac");
    let file = grub::host_cfg(&resolved, &mac, fleet.host("web1"), &Decision::Hold { why: why.into() }, None).expect("hold file");
    std::fs::write(dir.path().join("tftp/nixos-pxe/hosts").join(grub::file_name(&mac)), file).expect("write");
    let mut lab = Lab::new("served-hold");
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    let line = format!("nixos-pxe: HOLD {CLIENT_MAC} (web1): {why}");
    let (console, ended) = pxe_boot_and_watch(&mut lab, dir.path(), &[&line, "Ask the boot server again"], Duration::from_secs(15));
    assert!(!ended, "QEMU ended while held:\n{}", common::tail(&console));
    let rest = after(&console, "Ask the boot server again");
    assert!(!rest.contains("BdsDxe") && !rest.contains("nixos-pxe:") && !rest.contains("executed automatically"), "something happened during the hold:\n{rest}");
}

/// The kernel's command line and NFS root as the kernel prints them: what every boot must reach.
fn kernel_reached(rendered: &Path) -> [String; 2] {
    let cmdline = std::fs::read_to_string(rendered.join("cmdline")).expect("cmdline");
    [
        format!("Command line: BOOT_IMAGE=(tftp)/nixos/bzImage {}", cmdline.trim_end()),
        "rootpath=/srv/nixos/nfsroot,vers=3,tcp".to_string(),
    ]
}

/// Legacy BIOS PXE: SeaBIOS with iPXE gets bios.0 from the rendered dnsmasq.conf (option 93 = 0),
/// GRUB i386-pc does DHCP on `pxe`, reads option 66 and boots the kernel with the same command
/// line as on UEFI. The early config's serial console works there too (the first probe printed
/// nothing: see src/loader.rs), and the rescue parser finds nothing it cannot run in it.
#[test]
fn bios_grub_boots_the_kernel_from_the_rendered_dnsmasq_conf() {
    let _one_boot = common::preflight(&[GRUB_BIOS_LIB, common::SEABIOS, common::IPXE_VIRTIO_ROM]);
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = prepare(dir.path(), lab_config(), Kernel::Test);
    let mut lab = Lab::new("bios");
    lab.advertise_ipv6_router(dir.path());
    let log = dir.path().join("dnsmasq.log");
    spawn_rendered_dnsmasq(&mut lab, &rendered, &log);
    let kernel = kernel_reached(&rendered);
    let mut expect = vec![
        "nixos-pxe: GRUB started (i386-pc), reading grub.cfg from the memdisk of bios.0",
        "nixos-pxe: DHCP on pxe (the NIC the BIOS booted from)",
        "nixos-pxe: pxe has address 10.42.0.1",
        "nixos-pxe: boot server 10.42.0.1 (DHCP option 66)",
        "nixos-pxe: loading (tftp)/nixos/bzImage from 10.42.0.1",
        "nixos-pxe: booting the kernel",
    ];
    expect.extend(kernel.iter().map(String::as_str));
    let console = boot_until(&mut lab, dir.path(), Boot::SeaBiosIpxe, &expect);
    let grub = &console[..console.find("Command line:").expect("kernel reached")];
    assert!(!grub.contains("Unknown command") && !grub.contains("error:"), "GRUB reported an error:\n{grub}");
    let dhcp = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(dhcp.contains("PXEClient:Arch:00000") && dhcp.contains("bootfile-name  bios.0"), "dnsmasq's log:\n{dhcp}");
}

/// UEFI HTTP boot: OVMF with its PXE turned off asks DHCP as `HTTPClient:Arch:00016`; the rendered
/// dnsmasq.conf answers with the URL of bootx64.efi and echoes `HTTPClient`; OVMF downloads it
/// from busybox httpd (an HTTP server serving the TFTP root); GRUB, which
/// gets no server from an HTTP-booted firmware, finds it in its own lease and boots the kernel.
#[test]
fn uefi_http_boot_gets_grub_by_url_and_boots_the_kernel() {
    let _one_boot = common::preflight(&["/bin/busybox"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = prepare(dir.path(), lab_config(), Kernel::Test);
    let mut lab = Lab::new("http");
    let www = dir.path().join("tftp");
    let httpd_log = dir.path().join("httpd.log");
    lab.spawn(&["busybox", "httpd", "-f", "-vv", "-p", "10.42.0.1:80", "-h", www.to_str().expect("utf-8")], &httpd_log);
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    let kernel = kernel_reached(&rendered);
    let mut expect = vec![
        "Start HTTP Boot over IPv4",
        "URI: http://10.42.0.1/bootx64.efi",
        "nixos-pxe: GRUB started (x86_64-efi)",
        "nixos-pxe: efinet0 has address 10.42.0.1",
        "nixos-pxe: boot server 10.42.0.1 (DHCP option 66)",
        "nixos-pxe: booting the kernel",
    ];
    expect.extend(kernel.iter().map(String::as_str));
    boot_until(&mut lab, dir.path(), Boot::OvmfHttp, &expect);
    let http = std::fs::read_to_string(&httpd_log).unwrap_or_default();
    assert!(http.contains("url:/bootx64.efi") && http.contains("response:200"), "httpd's log:\n{http}");
}

/// UEFI HTTP boot from `nixos-pxe serve` alone (no busybox httpd, no dnsmasq): serve's DHCP
/// answers OVMF's `HTTPClient:Arch:00016` with `HTTPClient` and the URL of bootx64.efi on its own
/// HTTP endpoint (here on port 8080, so the URL carries the port), its HTTP serves it from the
/// TFTP root, and GRUB, whose own DHCP serve answers too, loads the kernel over serve's TFTP.
#[test]
fn uefi_http_boot_from_serve_alone_gets_grub_by_url_and_boots_the_kernel() {
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = prepare(dir.path(), lab_config(), Kernel::Test);
    let mut lab = Lab::new("serve-http");
    let log = dir.path().join("serve.log");
    let (config, state) = (dir.path().join("site.json"), dir.path().join("serve-state"));
    lab.spawn(
        &[
            env!("CARGO_BIN_EXE_nixos-pxe"),
            "serve",
            "--config",
            config.to_str().expect("utf-8"),
            "--interface",
            "br0",
            "--dhcp",
            "authoritative",
            "--http-port",
            "8080",
            "--state-dir",
            state.to_str().expect("utf-8"),
        ],
        &log,
    );
    let ns = lab.ns.clone();
    lab.wait_listening(&ns, &[Socket::Udp(67), Socket::Udp(69), Socket::TcpListen(8080)]);
    let kernel = kernel_reached(&rendered);
    let mut expect = vec![
        "Start HTTP Boot over IPv4",
        "URI: http://10.42.0.1:8080/bootx64.efi",
        "nixos-pxe: GRUB started (x86_64-efi)",
        "nixos-pxe: efinet0 has address 10.42.0.1",
        "nixos-pxe: boot server 10.42.0.1 (DHCP option 66)",
        "nixos-pxe: booting the kernel",
    ];
    expect.extend(kernel.iter().map(String::as_str));
    boot_until(&mut lab, dir.path(), Boot::OvmfHttp, &expect);
    let served = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        served.contains("arch=Some(16)") && served.lines().any(|l| l.contains("http: sending") && l.contains("/bootx64.efi")),
        "serve answered the HTTP boot client and sent bootx64.efi over HTTP:\n{served}"
    );
    assert!(!served.contains("was not answered"), "{served}");
}

// ---- A fleet's local boot on legacy BIOS ----

/// What the stand-in MBR boot code prints on the serial port.
const MBR_CODE: &str = "nixos-pxe-test: the boot code in the disk's MBR runs";

/// A disk image for a BIOS machine: a GPT with a BIOS boot partition and an ext4 root (label
/// nixos) holding `root_files`, and in the MBR's boot code area (bytes 0-439, the protective
/// MBR's partition entry kept) a stand-in for GRUB's boot.img: 16-bit code that writes MBR_CODE
/// to COM1 (port 0x3f8) and halts. The file system is made with `mkfs.ext4 -d` in a file and put at
/// the partition's place (nothing is mounted).
fn bios_disk(dir: &Path, root_files: &[(&str, &str)]) -> PathBuf {
    use std::io::{Seek, SeekFrom, Write};
    let staging = dir.join("root-files");
    std::fs::create_dir_all(&staging).expect("mkdir");
    for (path, contents) in root_files {
        let file = staging.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, contents).expect("write");
    }
    let root = dir.join("root.img");
    common::run(std::process::Command::new("mkfs.ext4").args(["-q", "-F", "-L", "nixos", "-d"]).arg(&staging).arg(&root).arg("32M"));
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(40 << 20)).expect("disk image");
    common::run(std::process::Command::new("sh").args(["-c", "printf 'label: gpt\\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\\nstart=4096, size=65536, type=L, name=nixos\\n' | sfdisk --no-reread --no-tell-kernel -q \"$1\"", "gpt"]).arg(&disk));
    // cli; xor ax,ax; mov ds,ax; mov si,0x7c16; mov dx,0x3f8; next: lodsb; test al,al; jz done;
    // out dx,al; jmp next; done: hlt; jmp done; then the message at 0x16.
    let mut code = vec![0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0xBE, 0x16, 0x7C, 0xBA, 0xF8, 0x03, 0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8, 0xF4, 0xEB, 0xFD];
    code.extend_from_slice(format!("{MBR_CODE}\r\n\0").as_bytes());
    assert!(code.len() <= 440);
    let mut file = std::fs::OpenOptions::new().write(true).open(&disk).expect("open disk");
    file.write_all(&code).expect("write boot code");
    file.seek(SeekFrom::Start(4096 * 512)).expect("seek");
    file.write_all(&std::fs::read(&root).expect("read root")).expect("write root");
    disk
}

/// SeaBIOS + iPXE with `disk` second in the boot order, until `expect` is on the console.
fn bios_boot_with_disk(lab: &mut Lab, dir: &Path, disk: &Path, expect: &[&str]) -> String {
    let mut qemu = Qemu::start_with(lab, dir, 512, Some(disk), Boot::SeaBiosIpxe, common::ONE_NIC);
    loop {
        let exited = lab.exited();
        let text = qemu.console();
        if in_order(&text, expect) {
            eprintln!("SeaBIOS: the console showed all of {expect:?} {:.1} s after QEMU started", qemu.started.elapsed().as_secs_f64());
            return text;
        }
        assert!(exited.is_empty(), "{}\n--- console:\n{text}", exited.join("\n"));
        let ended = qemu.exit_status().is_some();
        assert!(
            !ended && qemu.started.elapsed() < BOOT_TIMEOUT,
            "after {:?} (QEMU ended: {ended}) the serial console lacks (in order) {expect:?}:\n{text}",
            qemu.started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A BIOS fleet host whose disk carries its completion stamp in the root's /boot (a BIOS layout
/// has no ESP): bios.0's install entry finds it there and starts that disk's MBR boot code with
/// `chainloader +1`, instead of installing. The per-host file is the one render wrote, which a
/// UEFI machine gets too (tests above); bios.0 holds the modules of its BIOS branch (biosdisk,
/// regexp, ext2).
#[test]
fn a_bios_host_with_its_stamp_in_the_roots_boot_starts_its_disks_mbr() {
    let _one_boot = common::preflight(&[GRUB_BIOS_LIB, common::SEABIOS, common::IPXE_VIRTIO_ROM]);
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = prepare(dir.path(), fleet_config(&[CLIENT_MAC], "local-boot"), Kernel::Missing);
    publish_host_files(dir.path(), &rendered);
    let stamp = format!("/boot{}", nixos_pxe_installer::fleet::marker::done_stamp("web1", 3));
    let disk = bios_disk(dir.path(), &[(&stamp, "web1 generation 3 installed by nixos-pxe\n")]);
    let mut lab = Lab::new("bios-stamp");
    lab.advertise_ipv6_router(dir.path());
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    let found = "nixos-pxe: web1 generation 3 is installed already (/boot/nixos-pxe/done-web1-g3 is on hd0,gpt2)";
    let console = bios_boot_with_disk(
        &mut lab,
        dir.path(),
        &disk,
        &["nixos-pxe: GRUB started (i386-pc)", "Install NixOS: web1 (generation 3)", found, "nixos-pxe: starting the boot code in the MBR of hd0, the disk with /boot/nixos-pxe/done-web1-g3", MBR_CODE],
    );
    assert!(!console.contains("loading (tftp)/nixos/bzImage") && !console.contains("returning to the BIOS"), "{}", common::tail(&console));
    let grub = &console[..console.find(MBR_CODE).expect("reached")];
    assert!(!grub.contains("Unknown command") && !grub.contains("error: file `/"), "GRUB lacked a module:\n{grub}");
}

/// A BIOS stranger under `fleet.unknownHosts = "local-boot"`: grub.cfg's local boot returns to
/// the BIOS with GRUB's `exit` (int 18h on i386-pc), and SeaBIOS boots its next boot device, the
/// disk (measured here; on UEFI, OVMF opens its boot manager instead, see above).
#[test]
fn a_bios_stranger_returns_to_the_bios_which_boots_the_disk() {
    let _one_boot = common::preflight(&[GRUB_BIOS_LIB, common::SEABIOS, common::IPXE_VIRTIO_ROM]);
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = prepare(dir.path(), fleet_config(&["52:54:00:00:0a:01"], "local-boot"), Kernel::Missing);
    publish_host_files(dir.path(), &rendered);
    let disk = bios_disk(dir.path(), &[]);
    let mut lab = Lab::new("bios-stranger");
    lab.advertise_ipv6_router(dir.path());
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    let gone = format!(
        "nixos-pxe: the boot server 10.42.0.1 has no configuration for {CLIENT_MAC}, so it is not in the fleet (fleet.unknownHosts = local-boot): booting from the disk"
    );
    let console = bios_boot_with_disk(&mut lab, dir.path(), &disk, &[&gone, "nixos-pxe: returning to the BIOS, which boots its next boot device", MBR_CODE]);
    assert!(!console.contains("EFI boot loader"), "the EFI branch did not run:\n{}", common::tail(&console));
}
