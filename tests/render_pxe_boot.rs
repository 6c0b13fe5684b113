//! The rendered grub.cfg and dnsmasq.conf working for real: a UEFI QEMU (OVMF, TCG) PXE-boots
//! the bootx64.efi `mk-bootloader` built, in a network namespace this test makes, against dnsmasq,
//! ISC dhcpd (+ tftpd-hpa) and Kea (+ tftpd-hpa), each started only from its rendered file; the
//! serial console shows each GRUB step. The other firmwares against the rendered dnsmasq.conf:
//! legacy BIOS PXE (SeaBIOS + iPXE fetching bios.0) and UEFI HTTP boot (OVMF fetching
//! bootx64.efi from an HTTP server, busybox httpd standing in for serve's HTTP endpoint).
//! The kernel is the end-to-end test kernel (tests/e2e/build-test-kernel.sh, built once and cached)
//! or $NIXOS_PXE_TEST_KERNEL; one test leaves it out to check GRUB's message for a missing kernel.

mod common;

use common::{Boot, GRUB_BIOS_LIB, GRUB_LIB, Lab, Qemu, in_order, nixos_pxe};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    let mut qemu = Qemu::start_with(lab, dir, 512, None, boot);
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

/// dnsmasq started from the rendered dnsmasq.conf, as it is, its log into `log`.
fn spawn_rendered_dnsmasq(lab: &mut Lab, rendered: &Path, log: &Path) {
    let conf = rendered.join("dnsmasq.conf");
    lab.spawn(
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--log-facility=-",
            "--pid-file",
            &format!("--conf-file={}", conf.display()),
        ],
        log,
    );
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
    lab.spawn_in(
        &site,
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--log-facility=-",
            "--pid-file",
            "--port=0",
            "--interface=eth0",
            "--bind-interfaces",
            "--dhcp-range=10.42.0.150,10.42.0.159,255.255.255.0,600",
            "--log-dhcp",
            "--conf-file=/dev/null",
        ],
        &site_log,
    );
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
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

/// The wrong efinet interface (efinet1 on a one-NIC machine): GRUB says what failed and lists
/// the cards it sees, instead of hanging or booting nothing silently.
#[test]
fn a_wrong_efinet_interface_is_explained_on_the_console() {
    let _one_boot = preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = lab_config();
    config["nfsroot"] = serde_json::json!({ "bootLoader": { "efinetDHCPInterface": "efinet1" } });
    let rendered = prepare(dir.path(), config, Kernel::Missing);
    let mut lab = Lab::new("wrongnic");
    spawn_rendered_dnsmasq(&mut lab, &rendered, &dir.path().join("dnsmasq.log"));
    pxe_boot(
        &mut lab,
        dir.path(),
        &[
            "nixos-pxe: DHCP on efinet1",
            "nixos-pxe: DHCP on efinet1 failed",
            "efinet0",
            "set nfsroot.bootLoader.efinetDHCPInterface",
        ],
    );
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
    pxe_boot(
        &mut lab,
        dir.path(),
        &[
            "nixos-pxe: loading (tftp)/nixos/bzImage from 10.42.0.1",
            "nixos-pxe: could not load nixos/bzImage from the TFTP server 10.42.0.1",
        ],
    );
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
/// from busybox httpd (a stand-in for serve's HTTP endpoint, serving the TFTP root); GRUB, which
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
