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

mod common;

use common::{GRUB_LIB, Lab, Qemu, nixos_pxe as pxe, root, run, sh, tail};
use std::os::unix::fs::{PermissionsExt, symlink};
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
        "/usr/bin/unionfs",
    ])
}

/// Copies `binary` into the NFS root at `dest` with the shared libraries it needs (found by ldd).
fn install_binary(nfsroot: &Path, binary: &Path, dest: &str) {
    let target = nfsroot.join(dest.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    std::fs::copy(binary, &target).unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));
    for line in run(Command::new("ldd").arg(binary)).lines() {
        let lib = match line.split("=>").nth(1) {
            Some(rest) => rest.split_whitespace().next().unwrap_or_default().to_string(),
            None => line.split_whitespace().next().unwrap_or_default().to_string(),
        };
        if lib.starts_with('/') {
            let dest = nfsroot.join(lib.trim_start_matches('/'));
            if !dest.exists() {
                std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
                std::fs::copy(&lib, &dest).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
            }
        }
    }
}

fn write_exec(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The NFS root: the brief's layout, with busybox and Debian programs standing in for the closure.
fn nfs_root(dir: &Path, config: &str, with_image: bool) -> PathBuf {
    let nfsroot = dir.join("nfsroot");
    for d in ["dev", "proc", "sys", "run", "tmp", "mnt", "etc", "root", "bin", "nixos-pxe/tools/bin", "nixos-pxe/tools/sbin"] {
        std::fs::create_dir_all(nfsroot.join(d)).expect("mkdir");
    }
    // busybox: the shell for stand-ins and the rescue shell.
    std::fs::copy("/bin/busybox", nfsroot.join("bin/busybox")).expect("copy busybox");
    for applet in run(Command::new("/bin/busybox").arg("--list")).lines() {
        let link = nfsroot.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            symlink("busybox", link).expect("symlink");
        }
    }
    // nixos-pxe itself, as /init and on PATH (the Nix closure puts it in /nix/store).
    install_binary(&nfsroot, Path::new(env!("CARGO_BIN_EXE_nixos-pxe")), "/nixos-pxe/tools/bin/nixos-pxe");
    symlink("/nixos-pxe/tools/bin/nixos-pxe", nfsroot.join("init")).expect("symlink init");
    // The disk tools the installer runs, from Debian.
    for (src, name) in [
        ("/usr/sbin/sfdisk", "sfdisk"),
        ("/usr/sbin/mkfs.fat", "mkfs.vfat"),
        ("/usr/sbin/mke2fs", "mkfs.ext4"),
        ("/usr/sbin/mkswap", "mkswap"),
        ("/usr/bin/partx", "partx"),
    ] {
        install_binary(&nfsroot, Path::new(src), &format!("/nixos-pxe/tools/sbin/{name}"));
    }
    // unionfs-fuse, for nfsroot.writableLayer = "unionfs-fuse" (the Nix side adds it only then).
    install_binary(&nfsroot, Path::new("/usr/bin/unionfs"), "/nixos-pxe/tools/bin/unionfs");
    // Stand-ins for the NixOS-only commands: they record, on the target disk, that they ran.
    let bin = nfsroot.join("nixos-pxe/tools/bin");
    write_exec(&bin.join("nix-store"), "#!/bin/sh\n# stand-in for nix-store --store ROOT --load-db\necho \"nix-store $*\" >> \"$2/stand-in.log\"\ncat > \"$2/stand-in.registration\"\n");
    write_exec(&bin.join("nix-env"), "#!/bin/sh\n# stand-in for nix-env --store ROOT -p PROFILE --set SYSTEM\necho \"nix-env $*\" >> \"$2/stand-in.log\"\nmkdir -p \"$(dirname \"$4\")\"\nln -sfn \"$6\" \"$4\"\n");
    write_exec(&bin.join("nixos-generate-config"), "#!/bin/sh\n# stand-in for nixos-generate-config --root ROOT\necho \"nixos-generate-config $*\" >> \"$2/stand-in.log\"\nmkdir -p \"$2/etc/nixos\"\ngrep \" $2\" /proc/mounts > \"$2/etc/nixos/hardware-configuration.nix\"\n");
    write_exec(&bin.join("nixos-enter"), "#!/bin/sh\n# stand-in for nixos-enter --root ROOT -- COMMAND\necho \"nixos-enter $* NIXOS_INSTALL_BOOTLOADER=$NIXOS_INSTALL_BOOTLOADER\" >> \"$2/stand-in.log\"\nls /sys/firmware/efi/efivars > \"$2/stand-in.efivars\"\n");
    // The configuration, as the Nix side writes it.
    std::fs::write(nfsroot.join("nixos-pxe/config.json"), pxe(&["options", "--source", "static", "--config", config, "--as-config-json"])).expect("config.json");
    if with_image {
        let tree = dir.join("image");
        let system = tree.join("nix/store/00000000000000000000000000000000-nixos-system-pxe-example");
        std::fs::create_dir_all(system.join("bin")).expect("mkdir");
        write_exec(&system.join("bin/switch-to-configuration"), "#!/bin/sh\necho stand-in\n");
        std::fs::write(system.join("nixos-version"), "stand-in system image\n").expect("write");
        std::fs::write(tree.join("registration"), "stand-in registration\n").expect("write");
        std::fs::write(tree.join("system"), "/nix/store/00000000000000000000000000000000-nixos-system-pxe-example\n").expect("write");
        let out = nfsroot.join("nixos-pxe/system.tar.zst");
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
    nfsroot
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
                lab.spawn_in(
                    &site,
                    &["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--pid-file", "--port=0", "--interface=eth0", "--bind-interfaces",
                      "--dhcp-range=10.42.0.150,10.42.0.159,255.255.255.0,600", "--log-dhcp", "--conf-file=/dev/null"],
                    &dir.join("site-dhcp.log"),
                );
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
            // --pid-file without a path: none (the default /run/dnsmasq is shared with the host's).
            let script = format!(
                "exec dnsmasq --keep-in-foreground --log-facility=- --pid-file --conf-file={}",
                rendered.join("dnsmasq.conf").display()
            );
            spawn_with_srv(lab, tftp, nfsroot, &script, &dir.join("dhcp.log"));
        }
    }
    if nfs && matches!(servers, Servers::IscTftpd | Servers::Dnsmasq) {
        // rpcbind and ganesha in one mount namespace with a private /run (their sockets and pid
        // files); the host kernel has no nfsd, ganesha is the NFS server here.
        let script = format!(
            "mount -t tmpfs run /run && mkdir -p /run/rpcbind /var/run/ganesha && rpcbind -w -f & sleep 1; \
             exec ganesha.nfsd -F -f {} -L {} -p {}",
            rendered.join("ganesha.conf").display(),
            dir.join("ganesha.log").display(),
            dir.join("ganesha.pid").display()
        );
        spawn_with_srv(lab, tftp, nfsroot, &script, &dir.join("nfs.log"));
    }
    // Servers up: DHCP bound, NFS registered with rpcbind.
    std::thread::sleep(Duration::from_secs(3));
    let died = lab.exited();
    assert!(died.is_empty(), "a server did not start:\n{}", died.join("\n"));
}

/// What the run reached, and when (seconds from QEMU's start).
const MILESTONES: &[(&str, &str)] = &[
    ("firmware DHCP", "Station IP address"),
    ("loader fetched", "nixos-pxe: GRUB started"),
    ("kernel fetched", "Linux version"),
    ("NFS root mounted", "VFS: Mounted root (nfs"),
    ("init start", "nixos-pxe: init: nixos-pxe is PID 1"),
    ("installer start", "nixos-pxe: step 1/7 network"),
    ("install done", "nixos-pxe: install complete"),
];

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
    let mut qemu = Qemu::start(lab, dir, 1024, Some(disk));
    let mut times: Vec<(&'static str, f64)> = Vec::new();
    let exited = loop {
        let text = qemu.console();
        for (name, pattern) in MILESTONES {
            if !times.iter().any(|(n, _)| n == name) && text.contains(pattern) {
                times.push((name, qemu.started.elapsed().as_secs_f64()));
            }
        }
        if qemu.exit_status().is_some() {
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
    pxe(&["mk-bootloader", "--source", "static", "--config", config, "--grub-lib", GRUB_LIB, "--out", tftp.to_str().expect("utf8")]);
    std::fs::remove_file(tftp.join("grub.cfg")).expect("only bootx64.efi is served");
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
}

fn inspect(disk: &Path, files: &[&str]) -> Inspected {
    let dev = run(Command::new("losetup").args(["--find", "--show", "--partscan", "--read-only"]).arg(disk)).trim().to_string();
    let result = std::panic::catch_unwind(|| {
        // losetup --partscan does not always make the partition devices here; partx does.
        let _ = Command::new("partx").args(["-u", &dev]).output();
        let table: serde_json::Value = serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(&dev))).expect("json");
        let labels = (1..=2).map(|n| run(Command::new("blkid").args(["-o", "export"]).arg(format!("{dev}p{n}")))).collect();
        let mnt = tempfile::tempdir().expect("tempdir");
        run(Command::new("mount").args(["-o", "ro"]).arg(format!("{dev}p2")).arg(mnt.path()));
        let files = files
            .iter()
            .map(|f| (f.to_string(), std::fs::read_to_string(mnt.path().join(f)).unwrap_or_else(|e| format!("<missing: {e}>"))))
            .collect();
        let _ = Command::new("umount").arg(mnt.path()).status();
        Inspected { table, labels, files }
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
    let p = prepare(config);
    let nfsroot = nfs_root(p.dir.path(), config, true);
    let mut lab = Lab::new(&format!("e2e-{name}"));
    start_servers(&mut lab, &p, config, &nfsroot, servers, true);
    let b = boot(&lab, p.dir.path(), &p.disk, None);
    drop(lab);
    report(name, &b);
    let serial = &b.serial;
    let logs = || server_logs(p.dir.path());
    assert!(b.exited, "QEMU did not finish within {RUN_TIMEOUT:?} (the installer reboots, -no-reboot ends QEMU):\n{}{}", tail(serial), logs());
    assert!(serial.contains("nixos-pxe: install complete in "), "{}{}", tail(serial), logs());
    for (milestone, _) in MILESTONES {
        assert!(b.times.iter().any(|(n, _)| n == milestone), "never reached: {milestone}\n{}", tail(serial));
    }
    // GRUB: DHCP on the configured interface, the server from option 66, the kernel over TFTP.
    // (The server comes from option 66, or from grub.cfg in proxy mode: each test checks which.)
    assert!(common::in_order(serial, &["nixos-pxe: DHCP on efinet0", "nixos-pxe: boot server 10.42.0.1 (", "nixos-pxe: loading (tftp)/nixos/bzImage from 10.42.0.1"]), "{}", tail(serial));
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
    let disk = inspect(&p.disk, &["stand-in.log", "etc/nixos/networking.nix", "etc/nixos/hardware-configuration.nix", "stand-in.efivars", "nix/store/00000000000000000000000000000000-nixos-system-pxe-example/nixos-version"]);
    assert_eq!(disk.table["partitiontable"]["label"], "gpt");
    let names: Vec<&str> = disk.table["partitiontable"]["partitions"].as_array().expect("partitions").iter().map(|p| p["name"].as_str().unwrap_or_default()).collect();
    assert_eq!(names, ["ESP", "nixos"]);
    assert!(disk.labels[0].contains("TYPE=vfat") && disk.labels[1].contains("LABEL=nixos") && disk.labels[1].contains("TYPE=ext4"), "{:?}", disk.labels);
    assert_eq!(disk.files["nix/store/00000000000000000000000000000000-nixos-system-pxe-example/nixos-version"], "stand-in system image\n");
    let log = &disk.files["stand-in.log"];
    assert!(log.contains("--load-db") && log.contains("--set /nix/store/00000000000000000000000000000000-nixos-system-pxe-example"), "{log}");
    assert!(log.contains("-- /nix/var/nix/profiles/system/bin/switch-to-configuration boot NIXOS_INSTALL_BOOTLOADER=1"), "{log}");
    // nixos-generate-config saw the root and the ESP mounted; EFI variables were reachable.
    let hw = &disk.files["etc/nixos/hardware-configuration.nix"];
    assert!(hw.contains("/dev/vda2") && hw.contains("/dev/vda1") && hw.contains("vfat"), "{hw}");
    assert!(!disk.files["stand-in.efivars"].starts_with("<missing"), "efivarfs was not mounted");
    (p, b, disk)
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
    let (p, _, disk) = installs(STATIC, Servers::Dnsmasq, "dnsmasq");
    let networking = &disk.files["etc/nixos/networking.nix"];
    assert!(networking.contains("networking.useDHCP = false;"), "{networking}");
    assert!(networking.contains("networking.interfaces.\"enp0s2\".ipv4.addresses = [ { address = \"10.42.0.1"), "{networking}");
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
    assert!(log.contains("NFS: serving read-only") && log.contains("Accepting connection from 10.42.0."), "serve's NFS was mounted:\n{log}");
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
    assert!(serve.contains("Accepting connection from 10.42.0.15"), "the kernel mounted serve's NFS:\n{serve}");
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
