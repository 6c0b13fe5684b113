//! End to end: a UEFI QEMU machine PXE-boots and installs itself, with every piece that is ours from
//! the project: servers configured only from `nixos-pxe render` output for the example configuration,
//! bootx64.efi from `nixos-pxe mk-bootloader` (Debian's GRUB), a kernel built from Debian's source
//! with `nixos-pxe kernel-config`'s fragment, and nixos-pxe itself as /init and installer.
//!
//! Stand-ins, because NixOS cannot be built here: the NFS root is busybox plus Debian's disk tools
//! instead of the Nix closure, and nix-store, nix-env, nixos-generate-config and nixos-enter are
//! small scripts that record on the target disk that they ran; the system image is a tiny tree
//! packed with `nixos-pxe pack`. Everything runs in a network namespace this test makes; the disk is
//! an image file this test makes. Needs root. Milestone times go to target/e2e-report.json.
//!
//! One fleet install (a client with two NICs, "auto" mode, reports to a sink standing in for
//! serve's endpoint): see `a_fleet_host_installs_from_its_boot_nic_and_reports`.
//!
//! Every firmware (customInstaller.firmware): legacy BIOS PXE (SeaBIOS with iPXE) with "auto" and
//! with "both", UEFI HTTP boot (busybox httpd standing in for serve's HTTP endpoint); the disk is
//! read back for the boot loader its firmware needs, and the "both" disk is booted without network
//! under SeaBIOS and OVMF. The stand-in system's switch-to-configuration does what NixOS's would
//! for its boot loader: the efivars check of systemd-boot, or Debian's real grub-install.

mod common;
mod report_sink;

use common::stand_in_root::{base_nfs_root, install_binary, write_exec};
use common::{Boot as NetBoot, GRUB_BIOS_LIB, GRUB_LIB, Lab, Nic, Qemu, SERVER_ADDRESS, Socket, nixos_pxe as pxe, root, run, sh, tail};
use nixos_pxe_installer::config::typed::FirmwareSetting;
use nixos_pxe_installer::install::firmware::{Layout, built_for, system_file};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SEED: &str = "examples/seed/installer.nix";
const STATIC: &str = "tests/configs/lab-static.nix";
const UNIONFS: &str = "tests/configs/lab-unionfs.nix";
/// A whole install under TCG on two busy cores.
const RUN_TIMEOUT: Duration = Duration::from_secs(420);
const DISK_MIB: u64 = 2048;

fn preflight() -> common::OneQemu {
    common::preflight(&[
        "/bin/busybox",
        "/usr/sbin/dhcpd",
        "/usr/sbin/in.tftpd",
        "/usr/sbin/dnsmasq",
        "/usr/bin/ganesha.nfsd",
        "/usr/sbin/rpcbind",
        "/usr/sbin/rpcinfo",
        "/usr/bin/unionfs",
    ])
}


/// The stand-in system's switch-to-configuration for systemd-boot with canTouchEfiVariables
/// (the uefi layout): systemd-boot writes its boot entry through the firmware's EFI variables, so
/// this fails, as bootctl would, unless efivarfs is mounted and lists variables; their names go
/// to ROOT/stand-in.efivars only when it succeeds.
const SWITCH_SYSTEMD_BOOT: &str = r#"#!/bin/sh
# stand-in for a NixOS system's switch-to-configuration boot with systemd-boot
root=$NIXOS_PXE_STAND_IN_ROOT
echo "stand-in switch-to-configuration $*: systemd-boot" >> "$root/stand-in.log"
efivars=/sys/firmware/efi/efivars
if ! grep -q " $efivars efivarfs " /proc/mounts; then
  echo "stand-in switch-to-configuration: efivarfs is not mounted on $efivars: systemd-boot could write no boot entry" >&2
  exit 1
fi
if ! ls "$efivars" > /tmp/efivars || [ ! -s /tmp/efivars ]; then
  echo "stand-in switch-to-configuration: $efivars lists no EFI variables: systemd-boot could write no boot entry" >&2
  exit 1
fi
cp /tmp/efivars "$root/stand-in.efivars"
"#;

/// The stand-in system's switch-to-configuration for GRUB (the bios and both layouts), doing
/// what NixOS's install-grub.pl does for boot.loader.grub.device = DEVICE (and, for both,
/// efiSupport + efiInstallAsRemovable): Debian's real grub-install --target=i386-pc on the disk,
/// for both also --target=x86_64-efi --removable into the ESP on /boot, then the grub.cfg. The
/// grub.cfg is a stand-in for the one install-grub.pl writes (entries for the system's
/// generations, which cannot boot here): a serial console and one entry, so that the disk's boot
/// can be seen on the console. @DEVICE@, @EFI@ and @SYSTEM@ are filled in per system.
const SWITCH_GRUB: &str = r#"#!/bin/sh
# stand-in for a NixOS system's switch-to-configuration boot with GRUB (install-grub.pl)
set -e
root=$NIXOS_PXE_STAND_IN_ROOT
echo "stand-in switch-to-configuration $*: grub-install --target=i386-pc --boot-directory=$root/boot @DEVICE@" >> "$root/stand-in.log"
grub-install --target=i386-pc --boot-directory="$root/boot" @DEVICE@
if [ "@EFI@" = yes ]; then
  echo "stand-in switch-to-configuration $*: grub-install --target=x86_64-efi --efi-directory=$root/boot --removable --no-nvram" >> "$root/stand-in.log"
  grub-install --target=x86_64-efi --boot-directory="$root/boot" --efi-directory="$root/boot" --removable --no-nvram
fi
cat > "$root/boot/grub/grub.cfg" <<'CFG'
# stand-in for the grub.cfg of NixOS's install-grub.pl (tests/e2e_install.rs)
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=60
echo "stand-in grub.cfg of @SYSTEM@ read by GRUB on $grub_platform from $root"
menuentry "NixOS - Default" {
  echo "the stand-in system has no kernel"
}
CFG
"#;

/// The NFS root: the brief's layout, with busybox and Debian programs standing in for the closure.
fn nfs_root(dir: &Path, config: &str, with_image: bool) -> PathBuf {
    let nfsroot = base_nfs_root(dir, Path::new(env!("CARGO_BIN_EXE_nixos-pxe")));
    // What this test's installs also run: partx, and grub-install for the stand-in systems' GRUB
    // (what a NixOS system's own grub-install does there).
    for (src, name) in [("/usr/bin/partx", "partx"), ("/usr/sbin/grub-install", "grub-install")] {
        install_binary(&nfsroot, Path::new(src), &format!("/nixos-pxe/tools/sbin/{name}"));
    }
    // grub-install's platform directories and font, where Debian's grub-install looks for them.
    for dir in [GRUB_BIOS_LIB, GRUB_LIB] {
        copy_tree(Path::new(dir), &nfsroot.join(dir.trim_start_matches('/')));
    }
    let font = nfsroot.join("usr/share/grub");
    std::fs::create_dir_all(&font).expect("mkdir");
    std::fs::copy("/usr/share/grub/unicode.pf2", font.join("unicode.pf2")).expect("copy unicode.pf2");
    // Where it copies translations from (none here; without the directory it warns).
    std::fs::create_dir_all(nfsroot.join("usr/share/locale")).expect("mkdir");
    // unionfs-fuse, for nfsroot.writableLayer = "unionfs-fuse" (the Nix side adds it only then).
    install_binary(&nfsroot, Path::new("/usr/bin/unionfs"), "/nixos-pxe/tools/bin/unionfs");
    // The configuration, as the Nix side writes it.
    let config_json = pxe(&["options", "--source", "static", "--config", config, "--as-config-json"]);
    std::fs::write(nfsroot.join("nixos-pxe/config.json"), &config_json).expect("config.json");
    if with_image {
        let tree: serde_json::Value = serde_json::from_str(&config_json).expect("config.json");
        let setting: FirmwareSetting = serde_json::from_value(tree["customInstaller"]["firmware"].clone()).expect("customInstaller.firmware");
        let device = tree["customInstaller"]["rootDevice"].as_str().expect("rootDevice").to_string();
        pack_image(dir, &nfsroot.join("nixos-pxe/system.tar.zst"), "pxe-example", "stand-in system image\n", setting, &device);
    }
    nfsroot
}

/// Copies the directory `from` to `to` (files only, as GRUB's module directories are).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e} (dev/install-deps.sh test)", from.display())) {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

/// The store path of the stand-in system `name` that `pack_system` packs.
fn system_path(name: &str) -> String {
    format!("/nix/store/00000000000000000000000000000000-nixos-system-{name}")
}

/// The name of the stand-in system for `layout` in an image of `name` built for `setting`: the
/// name itself in an image of one system, `name-uefi` and `name-bios` for firmware = "auto".
fn system_name(name: &str, setting: FirmwareSetting, layout: Layout) -> String {
    if built_for(setting).len() == 1 { name.to_string() } else { format!("{name}-{}", layout.as_str()) }
}

/// Packs a stand-in system image to `out` as nix/system-image.nix does for customInstaller.firmware
/// `setting`: a system per layout it is built for (firmware::built_for), each named by the file
/// the installer reads for it (firmware::system_file), each with the switch-to-configuration of
/// its boot loader (GRUB's installing on `device`, the rootDevice NixOS bakes into
/// boot.loader.grub.device) and a nixos-version file holding `version`; and one registration.
fn pack_image(dir: &Path, out: &Path, name: &str, version: &str, setting: FirmwareSetting, device: &str) {
    let tree = dir.join(format!("image-{name}"));
    let mut args: Vec<String> = vec!["pack".into(), "--out".into(), out.to_str().expect("utf8").into()];
    for layout in built_for(setting) {
        let system_name = system_name(name, setting, layout);
        let system = system_path(&system_name);
        let store_path = tree.join(system.trim_start_matches('/'));
        std::fs::create_dir_all(store_path.join("bin")).expect("mkdir");
        let switch = match layout {
            Layout::Uefi => SWITCH_SYSTEMD_BOOT.to_string(),
            Layout::Bios | Layout::Both => SWITCH_GRUB
                .replace("@DEVICE@", device)
                .replace("@EFI@", if layout == Layout::Both { "yes" } else { "no" })
                .replace("@SYSTEM@", &system_name),
        };
        write_exec(&store_path.join("bin/switch-to-configuration"), &switch);
        std::fs::write(store_path.join("nixos-version"), version).expect("write");
        let file = system_file(setting, layout);
        let named = tree.join(file.replace('/', "-"));
        std::fs::write(&named, format!("{system}\n")).expect("write");
        args.extend(["--file".into(), format!("{file}={}", named.display())]);
    }
    std::fs::write(tree.join("registration"), "stand-in registration\n").expect("write");
    std::fs::create_dir_all(out.parent().expect("parent")).expect("mkdir");
    args.extend(["--file".into(), format!("nix={}", tree.join("nix").display())]);
    args.extend(["--file".into(), format!("nixos-pxe/registration={}", tree.join("registration").display())]);
    pxe(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A stand-in image of one system `name` for systemd-boot (customInstaller.firmware = "uefi").
fn pack_system(dir: &Path, out: &Path, name: &str, version: &str) {
    pack_image(dir, out, name, version, FirmwareSetting::Uefi, "/dev/vda");
}

/// The servers of one run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Servers {
    /// ISC dhcpd (the seed's server) and tftpd-hpa.
    IscTftpd,
    /// dnsmasq for DHCP and TFTP.
    Dnsmasq,
    /// `nixos-pxe serve` alone: DHCP, TFTP and the NFS root.
    Serve,
    /// `nixos-pxe serve` in proxy DHCP mode, and a site DHCP server (dnsmasq on another host of
    /// the bridge) that hands out the addresses.
    ServeBesideSiteDhcp,
}

/// Starts `script` in the lab, in a mount namespace of its own where the example's server paths
/// (/srv/tftp, /srv/nixos/nfsroot) are this run's directories, so the rendered configurations
/// are used exactly as written and the host's /srv is not touched.
fn spawn_with_srv(lab: &mut Lab, tftp: &Path, nfsroot: &Path, script: &str, log: &Path) {
    let full = format!(
        "mount -t tmpfs lab /srv && mkdir -p /srv/tftp /srv/nixos/nfsroot && \
         mount --bind {} /srv/tftp && mount --bind {} /srv/nixos/nfsroot && {script}",
        tftp.display(),
        nfsroot.display()
    );
    lab.spawn(&["unshare", "--mount", "--propagation", "private", "sh", "-ec", &full], log);
}

/// Starts the DHCP and TFTP servers of `servers` from the rendered files, and (with `nfs`)
/// rpcbind and nfs-ganesha from the rendered ganesha.conf, exporting `nfsroot`.
fn start_servers(lab: &mut Lab, p: &Prepared, config: &str, nfsroot: &Path, servers: Servers, nfs: bool) {
    let (dir, rendered, tftp) = (p.dir.path(), p.rendered.as_path(), p.tftp.as_path());
    match servers {
        Servers::Serve | Servers::ServeBesideSiteDhcp => {
            if servers == Servers::ServeBesideSiteDhcp {
                // Proxy mode: the site's DHCP server, addresses only, on another host of the bridge.
                let site = lab.add_host("site", "10.42.0.2");
                let mut args = vec!["dnsmasq".to_string()];
                args.extend(common::dnsmasq_host_safe_args(&dir.join("site-dhcp.leases")));
                args.extend(
                    ["--port=0", "--interface=eth0", "--bind-interfaces", "--dhcp-range=10.42.0.150,10.42.0.159,255.255.255.0,600", "--log-dhcp", "--conf-file=/dev/null"]
                        .map(String::from),
                );
                lab.spawn_in(&site, &args.iter().map(String::as_str).collect::<Vec<_>>(), &dir.join("site-dhcp.log"));
            }
            // Its state (the NFS handle key) in the run's directory, not in the machine's /var/lib.
            let script = format!(
                "exec {} serve --source static --config {} --interface br0 --state-dir {}{}",
                env!("CARGO_BIN_EXE_nixos-pxe"),
                root().join(config).display(),
                dir.join("serve-state").display(),
                if nfs { " --nfs-root /srv/nixos/nfsroot" } else { "" }
            );
            spawn_with_srv(lab, tftp, nfsroot, &script, &dir.join("dhcp.log"));
        }
        Servers::IscTftpd => {
            std::fs::write(dir.join("dhcpd.leases"), "").expect("leases");
            let script = format!(
                "exec dhcpd -4 -f -d -cf {} -lf {} -pf {} br0",
                rendered.join("dhcpd.conf").display(),
                dir.join("dhcpd.leases").display(),
                dir.join("dhcpd.pid").display()
            );
            spawn_with_srv(lab, tftp, nfsroot, &script, &dir.join("dhcp.log"));
            // -u root: the run's directories are private to root.
            spawn_with_srv(lab, tftp, nfsroot, "exec in.tftpd -L -v -u root -a 10.42.0.1:69 -s /srv/tftp", &dir.join("tftpd.log"));
        }
        Servers::Dnsmasq => {
            let script = format!(
                "exec dnsmasq {} --conf-file={}",
                common::dnsmasq_host_safe_args(&dir.join("dnsmasq.leases")).join(" "),
                rendered.join("dnsmasq.conf").display()
            );
            spawn_with_srv(lab, tftp, nfsroot, &script, &dir.join("dhcp.log"));
        }
    }
    let ganesha = nfs && matches!(servers, Servers::IscTftpd | Servers::Dnsmasq);
    if ganesha {
        // rpcbind and ganesha in one mount namespace with a private /run (their sockets and pid
        // files); the host kernel has no nfsd, ganesha is the NFS server here. The /run mount
        // comes first, then rpcbind, and ganesha starts once rpcbind's socket is there (it
        // registers with rpcbind at start).
        let script = format!(
            "mount -t tmpfs run /run; mkdir -p /run/rpcbind /var/run/ganesha; \
             rpcbind -w -f & \
             i=0; until [ -S /run/rpcbind.sock ]; do \
               i=$((i + 1)); [ $i -le 100 ] || {{ echo 'rpcbind made no /run/rpcbind.sock within 10 s'; exit 1; }}; sleep 0.1; \
             done; \
             exec ganesha.nfsd -F -f {} -L {} -p {}",
            rendered.join("ganesha.conf").display(),
            dir.join("ganesha.log").display(),
            dir.join("ganesha.pid").display()
        );
        spawn_with_srv(lab, tftp, nfsroot, &script, &dir.join("nfs.log"));
    }
    // Each server listening before the client starts (a server that exits or never listens
    // fails the test with the servers' logs).
    let mut sockets = vec![Socket::Udp(67), Socket::Udp(69)];
    if nfs && !ganesha {
        sockets.push(Socket::TcpListen(2049));
    }
    let ns = lab.ns.clone();
    lab.wait_listening(&ns, &sockets);
    if servers == Servers::ServeBesideSiteDhcp {
        lab.wait_listening(&format!("{ns}-site"), &[Socket::Udp(67)]);
    }
    if ganesha {
        // ganesha serves once MOUNT and NFSv3 answer a NULL call over TCP through rpcbind, as
        // the kernel will reach them.
        lab.wait_until_ready("nfs-ganesha answering MOUNT v3 and NFS v3 (rpcinfo -t)", |lab| {
            lab.probe(&ns, &["rpcinfo", "-t", SERVER_ADDRESS, "mountd", "3"]) && lab.probe(&ns, &["rpcinfo", "-t", SERVER_ADDRESS, "nfs", "3"])
        });
    }
}

/// What the run reached, and when (seconds from QEMU's start). The firmware's own DHCP shows on
/// the console as OVMF's PXE prints it; UEFI HTTP boot and iPXE under SeaBIOS say it otherwise
/// or not at all (see `milestones`).
const MILESTONES: &[(&str, &str)] = &[
    ("firmware DHCP", "Station IP address"),
    ("loader fetched", "nixos-pxe: GRUB started"),
    ("kernel fetched", "Linux version"),
    ("NFS root mounted", "VFS: Mounted root (nfs"),
    ("init start", "nixos-pxe: init: nixos-pxe is PID 1"),
    ("installer start", "nixos-pxe: step 1/7 network"),
    ("install done", "nixos-pxe: install complete"),
];

/// The milestones a client booting by `boot` shows: OVMF's HTTP boot prints the URL it got by
/// DHCP; iPXE under SeaBIOS prints on the screen only (QEMU's -display none), so GRUB's first line
/// is the first one seen.
fn milestones(boot: NetBoot) -> Vec<(&'static str, &'static str)> {
    MILESTONES
        .iter()
        .filter_map(|&(name, pattern)| match (name, boot) {
            ("firmware DHCP", NetBoot::OvmfHttp) => Some((name, "URI: http://")),
            ("firmware DHCP", NetBoot::SeaBiosIpxe) => None,
            _ => Some((name, pattern)),
        })
        .collect()
}

/// Console lines after which the run cannot go on: the test stops QEMU instead of waiting.
const STUCK: &[&str] = &["Kernel panic", "dropping to a root shell"];

struct Boot {
    serial: String,
    times: Vec<(&'static str, f64)>,
    exited: bool,
}

/// Boots the client with `disk` until QEMU exits (the installer's reboot, with -no-reboot),
/// `stop_at` or a STUCK line appears, or the timeout. Returns the console and the milestones.
fn boot(lab: &Lab, dir: &Path, disk: &Path, stop_at: Option<&str>) -> Boot {
    boot_with_nics(lab, dir, disk, stop_at, &[Nic { tap: "tap0", mac: None, bootindex: Some(1) }])
}

fn boot_with_nics(lab: &Lab, dir: &Path, disk: &Path, stop_at: Option<&str>, nics: &[Nic]) -> Boot {
    boot_by(lab, dir, disk, stop_at, NetBoot::OvmfPxe, nics)
}

/// `boot_with_nics` with the client's firmware and network boot `how`.
fn boot_by(lab: &Lab, dir: &Path, disk: &Path, stop_at: Option<&str>, how: NetBoot, nics: &[Nic]) -> Boot {
    let mut qemu = Qemu::start_with(lab, dir, 1024, Some(disk), how, nics);
    let milestones = milestones(how);
    let mut times: Vec<(&'static str, f64)> = Vec::new();
    let exited = loop {
        let text = qemu.console();
        for (name, pattern) in &milestones {
            if !times.iter().any(|(n, _)| n == name) && text.contains(pattern) {
                times.push((name, qemu.started.elapsed().as_secs_f64()));
            }
        }
        if qemu.exit_status().is_some() {
            if text.is_empty() {
                eprintln!("QEMU ended without a word on the console; its log:\n{}", std::fs::read_to_string(&qemu.log).unwrap_or_default());
            }
            break true;
        }
        let stuck = STUCK.iter().any(|s| text.contains(s));
        if stop_at.is_some_and(|p| text.contains(p)) || stuck || qemu.started.elapsed() > RUN_TIMEOUT {
            // Let the last lines reach the log.
            std::thread::sleep(Duration::from_millis(500));
            qemu.stop();
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    Boot { serial: qemu.console(), times, exited }
}

/// A run's directory: rendered configs, TFTP root with the loader and the kernel, a blank disk.
struct Prepared {
    dir: tempfile::TempDir,
    rendered: PathBuf,
    tftp: PathBuf,
    disk: PathBuf,
    cmdline: String,
}

fn prepare(config: &str) -> Prepared {
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = dir.path().join("rendered");
    pxe(&["render", "--source", "static", "--config", config, "--out", rendered.to_str().expect("utf8")]);
    let tftp = dir.path().join("tftp");
    std::fs::create_dir_all(tftp.join("nixos")).expect("mkdir");
    pxe(&["mk-bootloader", "--source", "static", "--config", config, "--grub-lib", GRUB_LIB, "--grub-bios-lib", GRUB_BIOS_LIB, "--out", tftp.to_str().expect("utf8")]);
    for copy in ["grub.cfg", "grub-bios.cfg"] {
        std::fs::remove_file(tftp.join(copy)).expect("only bootx64.efi and bios.0 are served");
    }
    let kernel = common::test_kernel(&["--source", "static", "--config", config]);
    std::fs::copy(kernel, tftp.join("nixos/bzImage")).expect("copy kernel");
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk).expect("disk").set_len(DISK_MIB << 20).expect("size");
    let cmdline = std::fs::read_to_string(rendered.join("cmdline")).expect("cmdline").trim().to_string();
    Prepared { dir, rendered, tftp, disk, cmdline }
}

fn sha256(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path)).split_whitespace().next().unwrap_or_default().to_string()
}

/// The installed disk, read back through a loop device after QEMU has exited.
struct Inspected {
    table: serde_json::Value,
    labels: Vec<String>,
    files: std::collections::BTreeMap<String, String>,
    /// The permission bits of each of `files` that exists.
    modes: std::collections::BTreeMap<String, u32>,
}

fn inspect(disk: &Path, files: &[&str]) -> Inspected {
    let dev = run(Command::new("losetup").args(["--find", "--show", "--partscan", "--read-only"]).arg(disk)).trim().to_string();
    let result = std::panic::catch_unwind(|| {
        // losetup --partscan does not always make the partition devices here; partx does.
        let _ = Command::new("partx").args(["-u", &dev]).output();
        let table: serde_json::Value = serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(&dev))).expect("json");
        let parts = table["partitiontable"]["partitions"].as_array().expect("partitions");
        // blkid of each partition (empty for one without a file system, the BIOS boot partition).
        let labels = (1..=parts.len()).map(|n| String::from_utf8_lossy(&Command::new("blkid").args(["-o", "export"]).arg(format!("{dev}p{n}")).output().expect("blkid").stdout).into_owned()).collect();
        let root = parts.iter().position(|p| p["name"] == "nixos").expect("a partition named nixos") + 1;
        let mnt = tempfile::tempdir().expect("tempdir");
        run(Command::new("mount").args(["-o", "ro"]).arg(format!("{dev}p{root}")).arg(mnt.path()));
        let files = files
            .iter()
            .map(|f| (f.to_string(), std::fs::read_to_string(mnt.path().join(f)).unwrap_or_else(|e| format!("<missing: {e}>"))))
            .collect::<std::collections::BTreeMap<String, String>>();
        let modes = files
            .keys()
            .filter_map(|f| Some((f.clone(), std::fs::metadata(mnt.path().join(f)).ok()?.permissions().mode() & 0o7777)))
            .collect();
        let _ = Command::new("umount").arg(mnt.path()).status();
        Inspected { table, labels, files, modes }
    });
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    result.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Prints the milestone times and merges them into target/e2e-report.json under `name`.
fn report(name: &str, boot: &Boot) {
    let path = root().join("target").join("e2e-report.json");
    let mut all: serde_json::Value = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(serde_json::json!({}));
    let times: serde_json::Map<String, serde_json::Value> = boot.times.iter().map(|(n, t)| (n.to_string(), serde_json::json!((t * 10.0).round() / 10.0))).collect();
    all[name] = serde_json::Value::Object(times);
    let _ = std::fs::write(&path, serde_json::to_string_pretty(&all).unwrap_or_default());
    eprintln!("e2e {name}: seconds from QEMU start (written to {}):", path.display());
    for (n, t) in &boot.times {
        eprintln!("  {n:<18} {t:>6.1}");
    }
}

/// A full install: the chain's every link seen on the console, then the disk read back.
fn installs(config: &str, servers: Servers, name: &str) -> (Prepared, Boot, Inspected) {
    let _one_qemu = preflight();
    let (p, b) = install_by(config, servers, name, NetBoot::OvmfPxe);
    let serial = &b.serial;
    let disk = inspect(&p.disk, &["stand-in.log", "etc/nixos/networking.nix", "etc/nixos/hardware-configuration.nix", "stand-in.efivars", "nix/store/00000000000000000000000000000000-nixos-system-pxe-example/nixos-version"]);
    check_uefi_disk(&disk, serial);
    (p, b, disk)
}

/// The disk of a uefi layout, read back: ESP and root, the stand-in system, and systemd-boot's
/// stand-in having seen the firmware's EFI variables.
fn check_uefi_disk(disk: &Inspected, serial: &str) {
    assert_eq!(disk.table["partitiontable"]["label"], "gpt");
    let names: Vec<&str> = disk.table["partitiontable"]["partitions"].as_array().expect("partitions").iter().map(|p| p["name"].as_str().unwrap_or_default()).collect();
    assert_eq!(names, ["ESP", "nixos"]);
    assert!(disk.labels[0].contains("TYPE=vfat") && disk.labels[1].contains("LABEL=nixos") && disk.labels[1].contains("TYPE=ext4"), "{:?}", disk.labels);
    assert_eq!(disk.files["nix/store/00000000000000000000000000000000-nixos-system-pxe-example/nixos-version"], "stand-in system image\n");
    let log = &disk.files["stand-in.log"];
    assert!(log.contains("--load-db") && log.contains("--set /nix/store/00000000000000000000000000000000-nixos-system-pxe-example"), "{log}");
    assert!(log.contains("-- /nix/var/nix/profiles/system/bin/switch-to-configuration boot NIXOS_INSTALL_BOOTLOADER=1"), "{log}");
    assert!(log.contains("stand-in switch-to-configuration boot: systemd-boot"), "{log}");
    // nixos-generate-config saw the root and the ESP mounted; the boot loader step saw OVMF's
    // EFI variables through efivarfs (the stand-in fails without them): BootOrder among them.
    let hw = &disk.files["etc/nixos/hardware-configuration.nix"];
    assert!(hw.contains("/dev/vda2") && hw.contains("/dev/vda1") && hw.contains("vfat"), "{hw}");
    assert!(serial.contains("nixos-pxe: EFI variables reachable in /sys/firmware/efi/efivars"), "{}", tail(serial));
    let efivars = &disk.files["stand-in.efivars"];
    assert!(efivars.lines().any(|v| v == "BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c"), "EFI variables the boot loader step saw:\n{efivars}");
}

/// One install of `config` with `servers`, the client booting by `how`: the chain's every link
/// seen on the console. The caller reads the disk back.
fn install_by(config: &str, servers: Servers, name: &str, how: NetBoot) -> (Prepared, Boot) {
    let p = prepare(config);
    let nfsroot = nfs_root(p.dir.path(), config, true);
    let mut lab = Lab::new(&format!("e2e-{name}"));
    if how == NetBoot::SeaBiosIpxe {
        // iPXE waits for an IPv6 router after DHCP (src/loader.rs): a site's router answers.
        lab.advertise_ipv6_router(p.dir.path());
    }
    if how == NetBoot::OvmfHttp {
        // The HTTP server beside the rendered dnsmasq.conf: the TFTP root over HTTP at the URL it
        // hands out (http://10.42.0.1/bootx64.efi). serve alone over HTTP boot is
        // tests/render_pxe_boot.rs's (uefi_http_boot_from_serve_alone_...).
        lab.spawn(&["busybox", "httpd", "-f", "-vv", "-p", "10.42.0.1:80", "-h", p.tftp.to_str().expect("utf-8")], &p.dir.path().join("httpd.log"));
    }
    start_servers(&mut lab, &p, config, &nfsroot, servers, true);
    if how == NetBoot::OvmfHttp {
        let ns = lab.ns.clone();
        lab.wait_listening(&ns, &[Socket::TcpListen(80)]);
    }
    let b = boot_by(&lab, p.dir.path(), &p.disk, None, how, &[Nic { tap: "tap0", mac: None, bootindex: Some(1) }]);
    drop(lab);
    report(name, &b);
    let serial = &b.serial;
    let logs = || server_logs(p.dir.path());
    assert!(b.exited, "QEMU did not finish (a line of {STUCK:?} appeared, or {RUN_TIMEOUT:?} passed; the installer reboots, -no-reboot ends QEMU):\n{}{}", tail(serial), logs());
    assert!(serial.contains("nixos-pxe: install complete in "), "{}{}", tail(serial), logs());
    for (milestone, _) in milestones(how) {
        assert!(b.times.iter().any(|(n, _)| *n == milestone), "never reached: {milestone}\n{}", tail(serial));
    }
    // GRUB: DHCP on its card (efinet0, or pxe on BIOS), the server from option 66, the kernel
    // over TFTP. (The server comes from option 66, or from grub.cfg in proxy mode: each test
    // checks which.)
    let card = if how == NetBoot::SeaBiosIpxe { "pxe" } else { "efinet0" };
    assert!(common::in_order(serial, &[&format!("nixos-pxe: DHCP on {card}"), "nixos-pxe: boot server 10.42.0.1 (", "nixos-pxe: loading (tftp)/nixos/bzImage from 10.42.0.1"]), "{}", tail(serial));
    // The kernel ran with exactly the rendered command line (GRUB prepends BOOT_IMAGE=),
    // configured eth0, mounted the NFS root read-only; init made it writable.
    let line = serial.lines().find(|l| l.starts_with("Command line:")).unwrap_or_default();
    assert_eq!(line, format!("Command line: BOOT_IMAGE=(tftp)/nixos/bzImage {}", p.cmdline));
    assert!(serial.contains("IP-Config: Complete:") && serial.contains("device=eth0"), "{}", tail(serial));
    assert!(serial.contains("VFS: Mounted root (nfs filesystem) readonly"), "{}", tail(serial));
    for (i, step) in ["network", "disk", "partition", "unpack", "configure", "bootloader", "finish"].iter().enumerate() {
        assert!(serial.contains(&format!("nixos-pxe: step {}/7 {step} done in ", i + 1)), "{step}\n{}", tail(serial));
    }
    assert!(serial.contains("rebooting (customInstaller.afterInstall)"), "{}", tail(serial));
    (p, b)
}

/// The address the kernel's DHCP (IP-PnP) configured, from its console line
/// "device=eth0, hwaddr=..., ipaddr=A.B.C.D, mask=..., gw=...".
fn kernel_address(serial: &str) -> String {
    serial
        .lines()
        .filter(|l| l.contains("device=eth0"))
        .find_map(|l| l.split(", ").find_map(|f| f.trim().strip_prefix("ipaddr=")))
        .unwrap_or_else(|| panic!("no IP-Config line with ipaddr= on the console:\n{}", tail(serial)))
        .to_string()
}

/// The servers' logs of a run, for a failure message.
fn server_logs(dir: &Path) -> String {
    ["dhcp.log", "tftpd.log", "nfs.log", "ganesha.log"]
        .iter()
        .map(|f| format!("\n--- {f}:\n{}", std::fs::read_to_string(dir.join(f)).unwrap_or_default()))
        .collect()
}

#[test]
fn seed_example_installs_with_isc_dhcpd_and_tftpd_hpa() {
    let (p, b, disk) = installs(SEED, Servers::IscTftpd, "isc");
    assert!(b.serial.contains("nixos-pxe: boot server 10.42.0.1 (DHCP option 66)"), "{}", tail(&b.serial));
    assert!(b.serial.contains("writable root: overlayfs over the read-only NFS root"), "{}", tail(&b.serial));
    let networking = &disk.files["etc/nixos/networking.nix"];
    assert!(networking.contains("networking.useDHCP = true;"), "{networking}");
    let dhcp = std::fs::read_to_string(p.dir.path().join("dhcp.log")).unwrap_or_default();
    assert!(dhcp.contains("DHCPACK on 10.42.0."), "dhcpd handed out a lease:\n{dhcp}");
}

#[test]
fn static_configuration_installs_with_dnsmasq() {
    let (p, b, disk) = installs(STATIC, Servers::Dnsmasq, "dnsmasq");
    let networking = &disk.files["etc/nixos/networking.nix"];
    assert!(networking.contains("networking.useDHCP = false;"), "{networking}");
    // The static address is exactly the one the kernel's DHCP got (not the gateway's, which
    // shares its first digits), and the one dnsmasq recorded for the client's MAC.
    let address = kernel_address(&b.serial);
    assert_ne!(address, "10.42.0.1", "{}", tail(&b.serial));
    let leases = std::fs::read_to_string(p.dir.path().join("dnsmasq.leases")).unwrap_or_default();
    assert!(leases.lines().any(|l| l.split_whitespace().nth(1) == Some(common::CLIENT_MAC) && l.split_whitespace().nth(2) == Some(address.as_str())), "dnsmasq's lease file (in the test's directory):\n{leases}");
    let static_address = format!("networking.interfaces.\"enp0s2\".ipv4.addresses = [ {{ address = \"{address}\"; prefixLength = 24; }} ];");
    assert!(networking.contains(&static_address), "expected {static_address}:\n{networking}");
    assert!(networking.contains("networking.defaultGateway = \"10.42.0.1\";"), "{networking}");
    assert!(networking.contains("networking.nameservers = [ \"10.42.0.1\" ];"), "{networking}");
    let log = std::fs::read_to_string(p.dir.path().join("dhcp.log")).unwrap_or_default();
    assert!(log.contains("sent /srv/tftp/bootx64.efi") && log.contains("sent /srv/tftp/nixos/bzImage"), "dnsmasq served both files:\n{log}");
}

/// The seed's writable layer: unionfs-fuse instead of overlayfs, the rest as the seed example.
#[test]
fn unionfs_fuse_writable_layer_installs() {
    let (_, b, _) = installs(UNIONFS, Servers::Dnsmasq, "unionfs");
    assert!(b.serial.contains("writable root: unionfs-fuse over the read-only NFS root"), "{}", tail(&b.serial));
}

const SERVE: &str = "tests/configs/lab-serve.nix";
const SERVE_PROXY: &str = "tests/configs/lab-serve-proxy.nix";

/// `nixos-pxe serve` as the only server: its DHCP hands out the lease with options 66, 67 and 17,
/// its TFTP serves the loader and the kernel, and the kernel mounts its root from serve's NFS.
#[test]
fn serve_alone_installs_the_seed_example() {
    let (p, b, _) = installs(SERVE, Servers::Serve, "serve");
    assert!(b.serial.contains("nixos-pxe: boot server 10.42.0.1 (DHCP option 66)"), "{}", tail(&b.serial));
    assert!(b.serial.contains("port=2049,mountport=2049,mountproto=tcp,nolock"), "option 17 carried the port options:\n{}", tail(&b.serial));
    let log = std::fs::read_to_string(p.dir.path().join("dhcp.log")).unwrap_or_default();
    assert!(log.contains("NFS: serving read-only") && log.contains("NFS: connection client=10.42.0."), "serve's NFS was mounted:\n{log}");
    assert!(log.contains("tftp: sent") && log.contains("file=\"bootx64.efi\"") && log.contains("file=\"/nixos/bzImage\""), "serve's TFTP:\n{log}");
    assert!(log.contains("request=Discover reply=Some(Offer)") && log.contains("request=Request reply=Some(Ack)"), "serve's DHCP:\n{log}");
}

/// `nixos-pxe serve --dhcp proxy` beside a site DHCP server: addresses from the site, the boot
/// file from serve, the server and the NFS root named by grub.cfg and the command line.
#[test]
fn serve_in_proxy_mode_installs_beside_a_site_dhcp_server() {
    let (p, b, _) = installs(SERVE_PROXY, Servers::ServeBesideSiteDhcp, "serve-proxy");
    assert!(b.serial.contains("nixos-pxe: boot server 10.42.0.1 (bootServer.address; proxy DHCP mode)"), "{}", tail(&b.serial));
    assert!(b.serial.contains("IP-Config: Got DHCP answer from 10.42.0.2"), "the kernel's address came from the site:\n{}", tail(&b.serial));
    // OVMF asked serve again on the PXE boot server port before downloading (EDK2 does, for a
    // proxy offer without PXE vendor options); serve answered back to the sender.
    let serve = std::fs::read_to_string(p.dir.path().join("dhcp.log")).unwrap_or_default();
    assert!(
        serve.lines().any(|l| l.contains("dhcp: answered") && l.contains("request=Request reply=Some(Ack)") && l.ends_with(":4011")),
        "serve's log:\n{serve}"
    );
    assert!(serve.contains("NFS: connection client=10.42.0.15"), "the kernel mounted serve's NFS:\n{serve}");
    let site = std::fs::read_to_string(p.dir.path().join("site-dhcp.log")).unwrap_or_default();
    assert!(site.contains("DHCPACK(eth0) 10.42.0.15"), "the site handed out the address:\n{site}");
}

/// The failures: each says on the console what failed, nothing reports success, the disk is unchanged.
fn fails(name: &str, prepare_disk: impl FnOnce(&Path), image: bool, nfs: bool, expect: &[&str]) {
    let _one_qemu = preflight();
    let p = prepare(SEED);
    prepare_disk(&p.disk);
    let before = sha256(&p.disk);
    let nfsroot = nfs_root(p.dir.path(), SEED, image);
    let mut lab = Lab::new(&format!("e2e-{name}"));
    start_servers(&mut lab, &p, SEED, &nfsroot, Servers::Dnsmasq, nfs);
    let b = boot(&lab, p.dir.path(), &p.disk, Some(expect[expect.len() - 1]));
    drop(lab);
    report(name, &b);
    assert!(common::in_order(&b.serial, expect), "the console lacks (in order) {expect:?}:\n{}{}", tail(&b.serial), server_logs(p.dir.path()));
    assert!(!b.serial.contains("install complete"), "{}", tail(&b.serial));
    assert_eq!(sha256(&p.disk), before, "the disk is unchanged");
}

#[test]
fn refuses_a_disk_that_holds_a_file_system() {
    fails(
        "refuse",
        |disk| {
            sh(&format!("mkfs.ext4 -q -F -L precious {}", disk.display()));
        },
        true,
        true,
        &["is not empty: it holds an ext2/ext3/ext4 file system", "install FAILED at step 2/7 (disk)", "dropping to a root shell"],
    );
}

#[test]
fn a_missing_system_image_is_reported_and_nothing_written() {
    fails(
        "no-image",
        |_| {},
        false,
        true,
        &["install FAILED at step 2/7 (disk): the system image /nixos-pxe/system.tar.zst cannot be read", "dropping to a root shell"],
    );
}

#[test]
fn a_missing_nfs_export_stops_the_kernel_with_its_message() {
    // No NFS server: the kernel gives up on its root after its mount retries (about a minute
    // and a half here), says so, and panics on the empty rootfs; the installer never starts.
    fails("no-nfs", |_| {}, true, false, &["IP-Config: Complete:", "rootpath=/srv/nixos/nfsroot", "VFS: Unable to mount root fs via NFS.", "Requested init /init failed"]);
}

// ---- A fleet host's install ----

const FLEET: &str = "tests/configs/lab-fleet.nix";
/// The client's NIC on the boot network: lab1's MAC in the fleet.
const LIVE_MAC: &str = "52:54:00:00:00:a1";
/// The client's other NIC, on a dead segment (a tap device on no bridge); in no host of the fleet.
const DEAD_MAC: &str = "52:54:00:00:00:d0";
/// Where the report sink listens, standing in for serve's HTTP endpoint.
const REPORT_ADDRESS: &str = "10.42.0.1:8080";
/// The attempt's token, as serve would hand it out (43 URL-safe base64 characters).
const FLEET_TOKEN: &str = "e2e-T0ken_of-lab1-generation-3-attempt-1xyz";

/// The per-host GRUB file serve would hand lab1's boot NIC for attempt 1 (render::host_grub::host_cfg
/// with serve's additions: attempt, token, report address; the kernel over TFTP): `render`'s
/// install entry plus what only serve knows. serve itself is another part of the project.
fn served_host_file() -> String {
    use nixos_pxe_installer::config::{self, SourceMode};
    use nixos_pxe_installer::render::host_grub::{KernelFrom, Served, host_cfg};
    use nixos_pxe_installer::fleet::{Decision, Fleet};
    let file = camino::Utf8PathBuf::from_path_buf(root().join(FLEET)).expect("utf8");
    let resolved = config::load(&file, SourceMode::Static).expect("the fleet configuration");
    let fleet = Fleet::from_config(&resolved.config).expect("fleet");
    let report = format!("http://{REPORT_ADDRESS}");
    let served = Served { attempt: 1, token: FLEET_TOKEN, report_url: &report, kernel: KernelFrom::Tftp };
    let mac = LIVE_MAC.parse().expect("mac");
    host_cfg(&resolved, &mac, fleet.host("lab1"), &Decision::Install { attempt: 1 }, Some(&served)).expect("per-host file")
}

/// A fleet install in QEMU, the client with two NICs in "auto" mode: the firmware PXE-boots from
/// the live NIC, GRUB loads the per-host file by that NIC's MAC, the kernel asks DHCP on every NIC
/// (ip=dhcp), and the installer must pick lab1 (its image, its overrides), match the NIC by MAC,
/// report started, each step and installed with the attempt's token, mark the disk and write the
/// completion stamp on the ESP last.
///
/// The NIC layout: the dead NIC is first in PCI order, so the kernel names it eth0 and the live one
/// eth1; an installer that took eth0, or the first interface, would fail, and "device=eth1" with
/// the installer's MAC line proves the matching. The live NIC is first in the firmware's boot order
/// (the dead one second, never reached), because a dead NIC's PXE attempt costs about 2 minutes
/// under TCG (shared/notes/pxe-lab-on-this-machine.md): a firmware that booted from the second NIC
/// after the first timed out would prove no more about the MAC matching, which is the installer's.
#[test]
fn a_fleet_host_installs_from_its_boot_nic_and_reports() {
    let _one_qemu = preflight();
    assert!(Path::new("/usr/bin/mtype").exists(), "/usr/bin/mtype missing (mtools): the test reads the ESP's stamp with it; run dev/install-deps.sh test");
    let p = prepare(FLEET);
    let dir = p.dir.path();
    let nfsroot = nfs_root(dir, FLEET, false);
    // Each host's image below /nixos-pxe/systems/, named in config.json as lib.mkFleet writes it.
    pack_system(dir, &nfsroot.join("nixos-pxe/systems/lab1.tar.zst"), "lab1", "lab1's system\n");
    pack_system(dir, &nfsroot.join("nixos-pxe/systems/lab2.tar.zst"), "lab2", "lab2's system\n");
    let config_json = nfsroot.join("nixos-pxe/config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_json).expect("config.json")).expect("json");
    config["fleet"]["hosts"]["lab1"]["image"] = "systems/lab1.tar.zst".into();
    config["fleet"]["hosts"]["lab2"]["image"] = "systems/lab2.tar.zst".into();
    std::fs::write(&config_json, serde_json::to_string_pretty(&config).expect("json")).expect("write config.json");
    let host_file = served_host_file();
    let hosts = p.tftp.join("nixos-pxe/hosts");
    std::fs::create_dir_all(&hosts).expect("mkdir");
    std::fs::write(hosts.join(format!("mac-{LIVE_MAC}.cfg")), &host_file).expect("write the per-host file");

    let mut lab = Lab::new("e2e-fleet");
    sh(&format!("ip -n {ns} tuntap add dev tap1 mode tap; ip -n {ns} link set tap1 up", ns = lab.ns));
    let sink = report_sink::Sink::start(&lab.ns, REPORT_ADDRESS, report_sink::accept_all);
    start_servers(&mut lab, &p, FLEET, &nfsroot, Servers::Dnsmasq, true);
    let nics = [Nic { tap: "tap1", mac: Some(DEAD_MAC), bootindex: Some(2) }, Nic { tap: "tap0", mac: Some(LIVE_MAC), bootindex: Some(1) }];
    let b = boot_with_nics(&lab, dir, &p.disk, None, &nics);
    drop(lab);
    let received = sink.received();
    let events = sink.events();
    drop(sink);
    report("fleet", &b);
    let serial = &b.serial;
    let logs = || server_logs(dir);
    assert!(b.exited, "QEMU did not finish within {RUN_TIMEOUT:?}:\n{}{}", tail(serial), logs());
    assert!(serial.contains("nixos-pxe: install complete in "), "{}{}", tail(serial), logs());

    // GRUB: the firmware's boot NIC, its per-host file, lab1's install entry.
    assert!(
        common::in_order(
            serial,
            &[
                &format!("(MAC {LIVE_MAC}, address 10.42.0."),
                &format!("nixos-pxe: loading this machine's configuration (tftp)/nixos-pxe/hosts/mac-{LIVE_MAC}.cfg"),
                &format!("nixos-pxe: {LIVE_MAC} is lab1: installing generation 3, attempt 1"),
            ]
        ),
        "{}",
        tail(serial)
    );
    // The kernel: exactly the per-host file's command line; it configured eth1, the live NIC.
    let linux = host_file.lines().find_map(|l| l.trim().strip_prefix("if linux (tftp)/nixos/bzImage ")).expect("the install entry's linux line");
    let cmdline = linux.strip_suffix("; then").expect("; then");
    let line = serial.lines().find(|l| l.starts_with("Command line:")).unwrap_or_default();
    assert_eq!(line, format!("Command line: BOOT_IMAGE=(tftp)/nixos/bzImage {cmdline}"));
    assert!(cmdline.contains(" ip=dhcp ") && cmdline.ends_with(&format!("nixos-pxe.mac={LIVE_MAC}")), "{cmdline}");
    assert!(serial.lines().any(|l| l.starts_with("IP-Config: Complete:")) && serial.contains("device=eth1"), "{}", tail(serial));

    // The installer: the host, its image, the NIC by MAC, the marker, the stamp, the reports.
    for expected in [
        format!("nixos-pxe: eth1 (MAC {LIVE_MAC}) is the NIC GRUB booted from (nixos-pxe.mac=) and the one the kernel configured (ip=dhcp)"),
        "nixos-pxe: fleet host lab1, generation 3, attempt 1: its customInstaller and image (from the kernel command line and /nixos-pxe/config.json)".to_string(),
        "nixos-pxe: installing from /nixos-pxe/systems/lab1.tar.zst with /nixos-pxe/config.json".to_string(),
        format!("nixos-pxe: reporting to http://{REPORT_ADDRESS}/v1/report as lab1 generation 3 attempt 1"),
        format!(
            "nixos-pxe: the GPT disk GUID will be {}, the marker of lab1's install of generation 3",
            nixos_pxe_installer::fleet::marker::disk_guid("lab1", 3)
        ),
        "nixos-pxe: wrote the completion stamp /nixos-pxe/done-lab1-g3 on the ESP".to_string(),
        "nixos-pxe: report started: accepted".to_string(),
        "nixos-pxe: report step unpack: accepted".to_string(),
        "nixos-pxe: report installed: accepted".to_string(),
    ] {
        assert!(serial.lines().any(|l| l == expected), "no line {expected:?} on the console:\n{}", tail(serial));
    }
    assert!(common::in_order(serial, &["wrote the completion stamp", "unmounted /mnt/boot", "install complete in ", "report installed: accepted", "rebooting"]), "{}", tail(serial));

    // The reports, as the sink received them: in order, each with the attempt's token.
    assert_eq!(
        events,
        ["started", "step network", "step disk", "step partition", "step unpack", "step configure", "step bootloader", "step finish", "installed"],
        "{}",
        tail(serial)
    );
    for r in &received {
        let b = &r.body;
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/report"));
        assert_eq!((b["host"].as_str(), b["generation"].as_u64(), b["attempt"].as_u64(), b["token"].as_str()), (Some("lab1"), Some(3), Some(1), Some(FLEET_TOKEN)), "{b}");
    }
    let installed = &received[received.len() - 1].body;
    assert_eq!(installed["system"].as_str(), Some(system_path("lab1").as_str()), "{installed}");

    // The disk: lab1's system with its overrides, the boot token, the marker, the stamp.
    let boot_report = "var/lib/nixos-pxe/boot-report.json";
    let lab1_version = format!("{}/nixos-version", system_path("lab1").trim_start_matches('/'));
    let lab2_version = format!("{}/nixos-version", system_path("lab2").trim_start_matches('/'));
    let disk = inspect(&p.disk, &[boot_report, "etc/nixos/networking.nix", &lab1_version, &lab2_version]);
    assert_eq!(disk.files[&lab1_version], "lab1's system\n");
    assert!(disk.files[&lab2_version].starts_with("<missing"), "lab2's image was not unpacked");
    let partitions = disk.table["partitiontable"]["partitions"].as_array().expect("partitions");
    assert_eq!(partitions[0]["size"].as_u64(), Some(256 * 2048), "lab1's espSizeMiB = 256");
    let networking = &disk.files["etc/nixos/networking.nix"];
    assert!(networking.contains("networking.interfaces.\"enp0s3\".ipv4.addresses = [ { address = \"10.42.0.1"), "lab1's networking: {networking}");
    let token: serde_json::Value = serde_json::from_str(&disk.files[boot_report]).unwrap_or_else(|e| panic!("{boot_report}: {e}: {}", disk.files[boot_report]));
    assert_eq!(disk.modes.get(boot_report), Some(&0o600), "{boot_report} is root's only");
    assert_eq!(
        (token["report"].as_str(), token["host"].as_str(), token["generation"].as_u64(), token["attempt"].as_u64()),
        (Some(format!("http://{REPORT_ADDRESS}").as_str()), Some("lab1"), Some(3), Some(1))
    );
    assert_eq!(token["token"].as_str(), Some(FLEET_TOKEN), "the first boot reports with the attempt's token");
    let disk_id = run(Command::new("sfdisk").arg("--disk-id").arg(&p.disk));
    assert_eq!(disk_id.trim().parse::<nixos_pxe_installer::fleet::marker::Guid>(), Ok(nixos_pxe_installer::fleet::marker::disk_guid("lab1", 3)), "{disk_id}");
    // The ESP is FAT and this machine's kernel has no vfat: mtools reads it from the image.
    let esp_offset = partitions[0]["start"].as_u64().expect("start") * 512;
    let stamp = run(Command::new("mtype").env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(format!("{}@@{esp_offset}", p.disk.display())).arg("::/nixos-pxe/done-lab1-g3"));
    assert_eq!(stamp, "lab1 generation 3 attempt 1 installed by nixos-pxe\n");
}


// ---- Every firmware: legacy BIOS PXE, UEFI HTTP boot, and a disk that boots either way ----

const AUTO: &str = "tests/configs/lab-auto.nix";
const BOTH: &str = "tests/configs/lab-both.nix";
/// GRUB's BIOS boot partition type (src/install/plan.rs).
const BIOS_BOOT_TYPE: &str = "21686148-6449-6E6F-744E-656564454649";

fn preflight_bios() -> common::OneQemu {
    common::preflight(&[
        "/usr/sbin/dnsmasq",
        "/usr/bin/ganesha.nfsd",
        "/usr/sbin/rpcbind",
        "/usr/sbin/rpcinfo",
        "/bin/busybox",
        "/usr/sbin/grub-install",
        GRUB_BIOS_LIB,
        common::SEABIOS,
        common::IPXE_VIRTIO_ROM,
        "/usr/bin/mcopy",
    ])
}

/// The partitions' (name, type, start sector) as sfdisk read them.
fn partitions(disk: &Inspected) -> Vec<(String, String, u64)> {
    disk.table["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or_default().to_string(), p["type"].as_str().unwrap_or_default().to_string(), p["start"].as_u64().unwrap_or_default()))
        .collect()
}

/// GRUB for BIOS as grub-install left it on the disk image, read back from its bytes: boot.img's
/// code in the MBR ("GRUB" among its messages), its kernel sector (offset 0x5c) pointing at the
/// BIOS boot partition, and there core.img, which starts with diskboot.img.
fn check_bios_grub(image: &Path, disk: &Inspected) {
    use std::io::{Read, Seek, SeekFrom};
    let (_, _, start) = partitions(disk).into_iter().find(|(_, t, _)| t == BIOS_BOOT_TYPE).expect("a BIOS boot partition");
    let mut file = std::fs::File::open(image).expect("disk image");
    let mut mbr = [0u8; 512];
    file.read_exact(&mut mbr).expect("read the MBR");
    assert!(mbr[..440].windows(4).any(|w| w == b"GRUB"), "no GRUB boot code in the MBR: {:02x?}", &mbr[..64]);
    let kernel_sector = u64::from_le_bytes(mbr[0x5c..0x64].try_into().expect("8 bytes"));
    assert_eq!(kernel_sector, start, "boot.img starts the core image at the BIOS boot partition's first sector");
    let mut core = [0u8; 512];
    file.seek(SeekFrom::Start(start * 512)).expect("seek");
    file.read_exact(&mut core).expect("read the core image");
    let diskboot = std::fs::read(format!("{GRUB_BIOS_LIB}/diskboot.img")).expect("diskboot.img");
    // grub-bios-setup fills in only the block list at the end of diskboot.img's sector.
    assert_eq!(&core[..0x1f0], &diskboot[..0x1f0], "the BIOS boot partition starts with GRUB's core image (diskboot.img)");
}

/// A file of the ESP (FAT: this machine's kernel may have no vfat, mtools reads the image).
fn esp_file(image: &Path, disk: &Inspected, path: &str) -> Vec<u8> {
    let (_, _, start) = partitions(disk).into_iter().find(|(n, _, _)| n == "ESP").expect("an ESP");
    let out = tempfile::NamedTempFile::new().expect("temp file");
    run(Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").arg("-o").arg("-i").arg(format!("{}@@{}", image.display(), start * 512)).arg(format!("::{path}")).arg(out.path()));
    std::fs::read(out.path()).expect("read")
}

/// Boots `image` with no network at all (no NIC: only the disk is in the boot order) under
/// `how`'s firmware, until `expect` is on the console; returns the console.
fn boot_installed(dir: &Path, image: &Path, how: NetBoot, expect: &[&str]) -> String {
    let dir = dir.join(format!("boot-disk-{how:?}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let lab = Lab::new("e2e-disk");
    let mut qemu = Qemu::start_with(&lab, &dir, 512, Some(image), how, &[]);
    loop {
        let text = qemu.console();
        if common::in_order(&text, expect) {
            eprintln!("the installed disk under {how:?}: {expect:?} on the console {:.1} s after QEMU started", qemu.started.elapsed().as_secs_f64());
            return text;
        }
        assert!(
            qemu.exit_status().is_none() && qemu.started.elapsed() < Duration::from_secs(120),
            "the installed disk under {how:?}: after {:?} the console lacks (in order) {expect:?}:\n{}",
            qemu.started.elapsed(),
            tail(&text)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Legacy BIOS PXE with customInstaller.firmware = "auto": SeaBIOS with iPXE fetches bios.0 from
/// the rendered dnsmasq.conf, GRUB for BIOS loads the kernel, the installer sees no
/// /sys/firmware/efi and lays the disk out for BIOS (a BIOS boot partition, no ESP), installs the
/// image's BIOS system, and that system's boot loader step (the stand-in doing what NixOS's
/// install-grub.pl does: Debian's grub-install --target=i386-pc on /dev/vda) leaves GRUB's boot
/// code in the MBR and its core image in the BIOS boot partition, read back from the image.
#[test]
fn a_bios_machine_installs_with_firmware_auto() {
    let _one_qemu = preflight_bios();
    let (p, b) = install_by(AUTO, Servers::Dnsmasq, "bios-auto", NetBoot::SeaBiosIpxe);
    let serial = &b.serial;
    for line in [
        "nixos-pxe: this machine booted the installer by legacy BIOS (/sys/firmware/efi does not exist); customInstaller.firmware = \"auto\" follows it; the image holds a system for uefi and one for bios: the disk is laid out for bios (GRUB for BIOS: its boot code in the MBR, its core image in the BIOS boot partition)",
        "nixos-pxe: the bios layout's GRUB needs no EFI variables; it is installed on /dev/vda",
    ] {
        assert!(serial.lines().any(|l| l == line), "no line {line:?}:\n{}", tail(serial));
    }
    let bios_system = system_path("pxe-example-bios");
    let version = format!("{}/nixos-version", bios_system.trim_start_matches('/'));
    let disk = inspect(&p.disk, &["stand-in.log", "boot/grub/grub.cfg", "boot/grub/i386-pc/moddep.lst", "stand-in.efivars", &version]);
    let names: Vec<String> = partitions(&disk).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, ["bios-boot", "nixos"], "no ESP");
    assert_eq!(partitions(&disk)[0].1, BIOS_BOOT_TYPE);
    assert_eq!(disk.files[&version], "stand-in system image\n", "the image's BIOS system");
    let log = &disk.files["stand-in.log"];
    assert!(log.contains(&format!("--set {bios_system}")) && !log.contains("pxe-example-uefi"), "{log}");
    assert!(log.contains("stand-in switch-to-configuration boot: grub-install --target=i386-pc --boot-directory=/mnt/boot /dev/vda") && !log.contains("x86_64-efi"), "{log}");
    assert!(disk.files["stand-in.efivars"].starts_with("<missing"), "no EFI variables on a BIOS machine");
    assert!(!disk.files["boot/grub/i386-pc/moddep.lst"].starts_with("<missing"), "GRUB's i386-pc modules in the root's /boot/grub");
    assert!(disk.files["boot/grub/grub.cfg"].contains("menuentry \"NixOS - Default\""), "{}", disk.files["boot/grub/grub.cfg"]);
    check_bios_grub(&p.disk, &disk);
    let dhcp = std::fs::read_to_string(p.dir.path().join("dhcp.log")).unwrap_or_default();
    assert!(dhcp.contains("sent /srv/tftp/bios.0") && dhcp.contains("sent /srv/tftp/nixos/bzImage"), "dnsmasq served bios.0 and the kernel:\n{dhcp}");
}

/// customInstaller.firmware = "both", installed from SeaBIOS: a BIOS boot partition and an ESP,
/// GRUB's boot code and core image for BIOS and its EFI loader as the ESP's /EFI/BOOT/BOOTX64.EFI
/// (the stand-in's second grub-install, --target=x86_64-efi --removable), read back from the image.
/// Then the installed disk alone, without network, under SeaBIOS and under OVMF (fresh variables,
/// no boot entry: the removable path): each time GRUB starts from the disk and shows the menu of
/// the grub.cfg on the ESP. Proven: the disk's boot code, core image, EFI loader and GRUB's
/// finding its configuration on each firmware; not proven: booting NixOS itself (the stand-in
/// system has no kernel).
#[test]
fn a_both_disk_installs_from_bios_and_boots_under_seabios_and_ovmf() {
    let _one_qemu = preflight_bios();
    let (p, b) = install_by(BOTH, Servers::Dnsmasq, "both", NetBoot::SeaBiosIpxe);
    assert!(b.serial.contains("customInstaller.firmware = \"both\": the disk is laid out for both"), "{}", tail(&b.serial));
    let disk = inspect(&p.disk, &["stand-in.log"]);
    let names: Vec<String> = partitions(&disk).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, ["bios-boot", "ESP", "nixos"]);
    assert!(disk.labels[1].contains("TYPE=vfat") && disk.labels[2].contains("LABEL=nixos"), "{:?}", disk.labels);
    let log = &disk.files["stand-in.log"];
    assert!(log.contains("grub-install --target=i386-pc --boot-directory=/mnt/boot /dev/vda") && log.contains("grub-install --target=x86_64-efi --efi-directory=/mnt/boot --removable --no-nvram"), "{log}");
    check_bios_grub(&p.disk, &disk);
    let loader = esp_file(&p.disk, &disk, "/EFI/BOOT/BOOTX64.EFI");
    assert_eq!(&loader[..2], b"MZ", "/EFI/BOOT/BOOTX64.EFI on the ESP is a PE image");
    let cfg = String::from_utf8(esp_file(&p.disk, &disk, "/grub/grub.cfg")).expect("utf-8");
    assert!(cfg.contains("stand-in grub.cfg of pxe-example"), "GRUB's configuration on the ESP (/boot): {cfg}");
    for (how, platform) in [(NetBoot::SeaBiosIpxe, "pc"), (NetBoot::OvmfPxe, "efi")] {
        let console = boot_installed(p.dir.path(), &p.disk, how, &[&format!("stand-in grub.cfg of pxe-example read by GRUB on {platform} from"), "NixOS - Default"]);
        assert!(!console.contains("nixos-pxe: GRUB started"), "no network boot:\n{}", tail(&console));
    }
}

/// UEFI HTTP boot: OVMF with its PXE turned off gets bootx64.efi by URL (busybox httpd serving
/// the TFTP root beside the rendered dnsmasq.conf), and the install
/// goes on as from UEFI PXE: the uefi layout, systemd-boot's stand-in seeing the EFI variables.
#[test]
fn uefi_http_boot_installs() {
    let _one_qemu = common::preflight(&["/bin/busybox", "/usr/sbin/dnsmasq", "/usr/bin/ganesha.nfsd", "/usr/sbin/rpcbind", "/usr/sbin/rpcinfo"]);
    let (p, b) = install_by(SEED, Servers::Dnsmasq, "http", NetBoot::OvmfHttp);
    assert!(common::in_order(&b.serial, &["Start HTTP Boot over IPv4", "URI: http://10.42.0.1/bootx64.efi", "nixos-pxe: GRUB started (x86_64-efi)"]), "{}", tail(&b.serial));
    assert!(b.serial.contains("this machine booted the installer by UEFI (/sys/firmware/efi exists); customInstaller.firmware = \"uefi\""), "{}", tail(&b.serial));
    let disk = inspect(&p.disk, &["stand-in.log", "etc/nixos/networking.nix", "etc/nixos/hardware-configuration.nix", "stand-in.efivars", "nix/store/00000000000000000000000000000000-nixos-system-pxe-example/nixos-version"]);
    check_uefi_disk(&disk, &b.serial);
    let http = std::fs::read_to_string(p.dir.path().join("httpd.log")).unwrap_or_default();
    assert!(http.contains("url:/bootx64.efi") && http.contains("response:200"), "httpd's log:\n{http}");
}
