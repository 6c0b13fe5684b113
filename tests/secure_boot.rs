//! Secure Boot with the site's own key (issue 19), the first link of the chain: the firmware
//! verifies the first thing it runs against the site's db, and that thing is the installer's
//! kernel, initrd and command line as one signed unified kernel image, so all three are verified
//! whole. Everything real: a key and certificate the test generates with openssl, enrolled as PK,
//! KEK and db into a copy of Debian's empty OVMF variable store with virt-fw-vars (PyPI's
//! virt-firmware, pinned), `nixos-pxe sign` (objcopy + sbsign) making the image from the test
//! kernel and an initrd of `nixos-pxe pack --format newc`, and QEMU with Debian's
//! OVMF_CODE_4M.secboot.fd (SMM, secure flash) loading it as the removable loader of an ESP image.
//!
//! Shown: (a) the signed image boots under enforcement, the kernel says Secure Boot is on, the
//! installer in the initrd runs, reads the firmware's SecureBoot variable (1), fetches its
//! programs from serve (in a network namespace of the test's, reached through QEMU's user-mode
//! network as bootServer.address) checked against the signed manifest, and finds the system image
//! changed on the server by one byte: it stops at step 2 naming the chunk, the machine's disk byte
//! for byte unchanged; (a') the programs changed on the server by one byte are refused as they
//! arrive, before the installer runs; (b) the same image signed with another key is refused by
//! the firmware; (c) one byte changed in its .linux or its .initrd section is refused; (d) the
//! signed image boots with Secure Boot off (plain OVMF_CODE_4M.fd), the installer reading
//! SecureBoot 0 and fetching the image and the system's boot file, both matching, then stopping
//! at the disk's checks (this test's programs are a stand-in archive without sfdisk and mkfs).
//! Each boot's time is printed.

mod common;

use common::{efi_disk, stand_in_root, virt_firmware};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const CODE_PLAIN: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// How long one boot may take under TCG on a loaded two-core machine (measured: about a minute).
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// What the installer in the signed initrd says once it runs (src/init.rs, signed_initrd).
const INSTALLER_STARTS: &str = "nixos-pxe: init: nixos-pxe is PID 1 in the signed initrd";
/// The installer's last line when it failed (init then leaves a shell).
const INSTALLER_FAILED: &str = "nixos-pxe: the installer failed";
/// What OVMF prints when the image's signature does not verify against db.
const REFUSED: &str = "Access Denied";

/// The site's configuration: tests/configs/secure-boot-uki.nix with the key and the
/// certificate the test made.
fn site_config(dir: &Path, key: &Path, cert: &Path) -> PathBuf {
    let file = dir.join("site.nix");
    std::fs::write(
        &file,
        format!(
            "{{ ... }}: {{\n  imports = [ {} ];\n  bootServer.secureBoot.keyFile = \"{}\";\n  bootServer.secureBoot.certificateFile = \"{}\";\n}}\n",
            common::root().join("tests/configs/secure-boot-uki.nix").display(),
            key.display(),
            cert.display()
        ),
    )
    .expect("write site.nix");
    file
}

/// The unsigned parts `nixos-pxe sign` takes (see its --help): the test kernel; the installer's
/// initrd, `nixos-pxe pack --format newc` of this build's nixos-pxe (debug info stripped, its
/// libraries beside it) as /init and the configuration's JSON form; and stand-ins for what this
/// slice does not use yet: the tools and the system image (small archives) and the system's
/// unsigned boot file (systemd-stub without sections: sign only signs it).
fn unsigned_parts(dir: &Path, config: &Path, kernel: &Path) -> PathBuf {
    let parts = dir.join("unsigned");
    let tree = dir.join("initrd-tree");
    std::fs::create_dir_all(&parts).expect("mkdir");
    let stripped = dir.join("nixos-pxe.stripped");
    common::run(Command::new("strip").arg("-o").arg(&stripped).arg(env!("CARGO_BIN_EXE_nixos-pxe")));
    stand_in_root::install_binary(&tree, &stripped, "/nixos-pxe/tools/bin/nixos-pxe");
    let config = config.to_str().expect("utf-8");
    let json = common::nixos_pxe(&["options", "--source", "static", "--config", config, "--as-config-json"]);
    std::fs::write(tree.join("nixos-pxe/config.json"), json).expect("config.json");
    let initrd = parts.join("initrd");
    let mut args: Vec<String> = ["pack", "--format", "newc", "--out"].map(String::from).to_vec();
    args.push(initrd.to_str().expect("utf-8").into());
    for top in std::fs::read_dir(&tree).expect("read tree").flatten() {
        let name = top.file_name().to_string_lossy().into_owned();
        args.extend(["--file".into(), format!("{name}={}", top.path().display())]);
    }
    args.extend(["--symlink".into(), "init=/nixos-pxe/tools/bin/nixos-pxe".into()]);
    for d in ["proc", "sys", "dev", "tmp", "run"] {
        args.extend(["--dir".into(), d.into()]);
    }
    common::nixos_pxe(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let readme = dir.join("stand-in.txt");
    std::fs::write(&readme, "stand-in\n").expect("write");
    for (archive, inside) in [("tools.tar.zst", "bin/stand-in"), ("system.tar.zst", "nixos-pxe/registration")] {
        let out = parts.join(archive);
        common::nixos_pxe(&["pack", "--out", out.to_str().expect("utf-8"), "--file", &format!("{inside}={}", readme.display())]);
    }
    std::fs::copy(STUB, parts.join("system.efi")).expect("copy the stub");
    std::fs::copy(kernel, parts.join("kernel")).expect("copy the kernel");
    parts
}

/// The start and size in the file of `section` of the PE image `file`, from objdump's table.
fn section(file: &Path, section: &str) -> (u64, u64) {
    let table = common::run(Command::new("objdump").args(["-h", "-w"]).arg(file));
    let hex = |s: &str| u64::from_str_radix(s, 16).expect("hex");
    table
        .lines()
        .find_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            // Idx Name Size VMA LMA File-off Algn Flags
            (words.get(1) == Some(&section)).then(|| (hex(words[5]), hex(words[2])))
        })
        .unwrap_or_else(|| panic!("{}: no {section} section:\n{table}", file.display()))
}

/// A copy of `uki` with the byte in the middle of `name` flipped.
fn with_a_byte_changed(dir: &Path, uki: &Path, name: &str) -> PathBuf {
    let (offset, size) = section(uki, name);
    let mut bytes = std::fs::read(uki).expect("read");
    bytes[(offset + size / 2) as usize] ^= 0x01;
    let out = dir.join(format!("changed{}.efi", name.replace('.', "-")));
    std::fs::write(&out, bytes).expect("write");
    out
}

/// The firmware a boot runs.
#[derive(Clone, Copy)]
enum Firmware<'a> {
    /// OVMF_CODE_4M.secboot.fd with this variable store (the site's keys enrolled).
    Enforcing(&'a Path),
    /// OVMF_CODE_4M.fd with the empty store: Secure Boot off.
    Off,
    /// OVMF_CODE_4M.secboot.fd with this variable store itself (the machine's own, kept from
    /// boot to boot: BootNext set by one boot is read by the next).
    EnforcingWith(&'a Path),
}

/// QEMU's machine and flash arguments for `firmware`: the code, and the variable store (a copy
/// in `dir`, or the machine's own for `EnforcingWith`); enforcing needs SMM and a secure flash.
fn firmware_args(firmware: Firmware, dir: &Path) -> Vec<String> {
    let copy = |from: &Path| {
        let vars = dir.join("vars.fd");
        std::fs::copy(from, &vars).expect("copy vars");
        vars
    };
    let (code, vars, enforcing) = match firmware {
        Firmware::Enforcing(enrolled) => (CODE_SECBOOT, copy(enrolled), true),
        Firmware::EnforcingWith(kept) => (CODE_SECBOOT, kept.to_path_buf(), true),
        Firmware::Off => (CODE_PLAIN, copy(Path::new(virt_firmware::EMPTY_VARS)), false),
    };
    let mut args: Vec<String> = match enforcing {
        true => ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"].map(String::from).to_vec(),
        false => ["-machine", "q35"].map(String::from).to_vec(),
    };
    args.extend([
        "-drive".into(),
        format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
    ]);
    args
}

/// One boot's console and how long it ran until it ended (`until` seen, or the timeout).
struct Boot {
    console: String,
    seconds: f64,
}

/// Boots `uki` as EFI/BOOT/BOOTX64.EFI of an ESP image in QEMU (TCG, no NIC) under `firmware`,
/// until the console shows one of `until` (or BOOT_TIMEOUT), then stops it.
fn boot(dir: &Path, name: &str, uki: &Path, firmware: Firmware, until: &[&str]) -> Boot {
    boot_on(dir, name, uki, firmware, None, until)
}

/// What a networked boot has: the namespace QEMU runs in (serve listens there on 127.0.0.1:80,
/// which QEMU's user-mode network shows the machine as 10.42.0.1, bootServer.address) and the
/// machine's empty disk (its first, /dev/vda: customInstaller.rootDevice).
struct Network<'a> {
    ns: &'a str,
    target: &'a Path,
    /// The NIC's MAC (a fleet host's), or QEMU's default.
    mac: Option<&'a str>,
}

/// `boot` with `net`: a virtio NIC on QEMU's user-mode network (its DHCP gives 10.42.0.50 on
/// and the server is 10.42.0.1) and the target disk before the ESP disk.
fn boot_on(dir: &Path, name: &str, uki: &Path, firmware: Firmware, net: Option<&Network>, until: &[&str]) -> Boot {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let disk = efi_disk::esp_disk(&dir, &[("EFI/BOOT/BOOTX64.EFI", std::fs::read(uki).expect("read the image"))]);
    let serial = dir.join("serial.log");
    let mut args: Vec<String> = Vec::new();
    if let Some(net) = net {
        args.extend(["netns", "exec", net.ns, "nice"].map(String::from));
    }
    args.extend(["-n", "10", "qemu-system-x86_64", "-accel", "tcg", "-no-reboot", "-display", "none", "-monitor", "none", "-m", "512"].map(String::from));
    match net {
        Some(net) => args.extend([
            "-netdev".into(),
            "user,id=n0,net=10.42.0.0/24,host=10.42.0.1,dhcpstart=10.42.0.50".into(),
            // No option ROM: the firmware's own virtio-net driver (iPXE's ROM is unsigned).
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,romfile={}", net.mac.map(|m| format!(",mac={m}")).unwrap_or_default()),
            "-drive".into(),
            format!("file={},format=raw,if=none,id=t0", net.target.display()),
            "-device".into(),
            "virtio-blk-pci,drive=t0".into(),
        ]),
        None => args.extend(["-nic".into(), "none".into()]),
    }
    args.extend(firmware_args(firmware, &dir));
    args.extend([
        "-serial".into(),
        format!("file:{}", serial.display()),
        "-drive".into(),
        format!("file={},format=raw,if=none,id=d0", disk.display()),
        "-device".into(),
        "virtio-blk-pci,drive=d0,bootindex=1".into(),
    ]);
    let started = Instant::now();
    let mut qemu = Command::new(if net.is_some() { "ip" } else { "nice" })
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("qemu.log")).expect("qemu log"))
        .spawn()
        .expect("start qemu");
    while started.elapsed() < BOOT_TIMEOUT {
        let console = common::console(&serial);
        if until.iter().any(|u| console.contains(u)) {
            break;
        }
        if let Ok(Some(status)) = qemu.try_wait() {
            panic!("{name}: QEMU ended ({status}) before the console showed any of {until:?}: {}\n{}", std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default(), common::tail(&console));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = qemu.kill();
    let _ = qemu.wait();
    let console = common::console(&serial);
    eprintln!("secure_boot: {name}: {seconds:.1} s until {:?}", until.iter().find(|u| console.contains(*u)).copied().unwrap_or("the timeout"));
    Boot { console, seconds }
}

/// Whether `boot` was refused by the firmware: its message, and no kernel ever started.
fn refused(boot: &Boot) -> Result<(), String> {
    if boot.console.contains(REFUSED) && !boot.console.contains("EFI stub") && !boot.console.contains("Linux version") {
        Ok(())
    } else {
        Err(format!("not refused by the firmware (after {:.1} s):\n{}", boot.seconds, common::tail(&boot.console)))
    }
}

#[test]
fn the_firmware_runs_the_installer_only_signed_with_the_sites_key_and_whole() {
    let _one = common::preflight(&[STUB, CODE_SECBOOT, CODE_PLAIN, virt_firmware::EMPTY_VARS]);
    let tmp = tempfile::Builder::new().prefix("nixos-pxe-secure-boot-").tempdir_in("/var/tmp").expect("temp dir");
    let dir = tmp.path();
    let (key, cert) = common::signing_keys::key_pair(dir, "site-db");
    let (other_key, other_cert) = common::signing_keys::key_pair(dir, "another-db");
    let config = site_config(dir, &key, &cert);
    let kernel = common::test_kernel(&["--source", "static", "--config", config.to_str().expect("utf-8")]);
    let parts = unsigned_parts(dir, &config, &kernel);

    let out = dir.join("served");
    let signing = Instant::now();
    let said = common::nixos_pxe(&[
        "sign", "--source", "static", "--config", config.to_str().expect("utf-8"),
        "--unsigned", parts.to_str().expect("utf-8"), "--stub", STUB, "--out", out.to_str().expect("utf-8"),
    ]);
    eprintln!("secure_boot: nixos-pxe sign: {:.1} s\n{said}", signing.elapsed().as_secs_f64());
    let signed = out.join("bootx64.efi");
    let sections = common::run(Command::new("objdump").args(["-h", "-w"]).arg(&signed));
    for name in [".osrel", ".cmdline", ".linux", ".initrd"] {
        assert!(sections.contains(&format!(" {name} ")), "the image has no {name} section:\n{sections}");
    }
    // The system's boot file is signed with the same key (the firmware checks it in a later slice).
    common::run(Command::new("sbverify").arg("--cert").arg(&cert).arg(out.join("nixos-pxe/secure-boot/system.efi")));

    // The same image without a signature (taken off), and signed with another key. (An image
    // sign left unsigned has none to take off: sbattach fails, and (a) says what is wrong.)
    let (bare, resigned) = (dir.join("signature-removed.efi"), dir.join("another-key.efi"));
    std::fs::copy(&signed, &bare).expect("copy");
    let _ = Command::new("sbattach").arg("--remove").arg(&bare).stderr(Stdio::null()).status();
    let still = Command::new("sbverify").arg("--cert").arg(&cert).arg(&bare).stdout(Stdio::null()).stderr(Stdio::null()).status().expect("sbverify");
    assert!(!still.success(), "{} still verifies after sbattach --remove", bare.display());
    common::run(Command::new("sbsign").arg("--key").arg(&other_key).arg("--cert").arg(&other_cert).arg("--output").arg(&resigned).arg(&bare));
    common::run(Command::new("sbverify").arg("--cert").arg(&other_cert).arg(&resigned));
    let changed_kernel = with_a_byte_changed(dir, &signed, ".linux");
    let changed_initrd = with_a_byte_changed(dir, &signed, ".initrd");

    let enrolled = dir.join("OVMF_VARS_4M.site.fd");
    virt_firmware::enrol(&cert, &enrolled);

    // serve with the signed files, reached from the machines at 10.42.0.1 (bootServer.address).
    let ns = common::Namespace::new("sb");
    let _serve = common::ServeFiles::start(&ns.name, dir, &out, 80);
    let served_image = out.join("nixos-pxe/secure-boot/system.tar.zst");
    let signed_image = std::fs::read(&served_image).expect("the served image");
    let target = dir.join("target.img");
    std::fs::File::create(&target).expect("target").set_len(64 << 20).expect("size");
    let target_hash = || blake3::hash(&std::fs::read(&target).expect("read the target")).to_hex().to_string();
    let empty = target_hash();
    let net = Network { ns: &ns.name, target: &target, mac: None };

    let mut failures = Vec::new();
    let installer_ran = [INSTALLER_FAILED, REFUSED, "Kernel panic", "init FAILED"];

    // (a) Signed with the site's key, Secure Boot enforced: it boots and the installer runs,
    // fetches its programs checked against the manifest, then finds the system image changed on
    // the server (one byte, after signing) and stops before the disk is touched.
    let mut changed = signed_image.clone();
    changed[signed_image.len() / 2] ^= 0x01;
    std::fs::write(&served_image, &changed).expect("change the served image");
    let a = boot_on(dir, "a-signed-enforced-image-changed", &signed, Firmware::Enforcing(&enrolled), Some(&net), &installer_ran);
    std::fs::write(&served_image, &signed_image).expect("restore the served image");
    let a_expect = [
        "EFI stub: UEFI Secure Boot is enabled.",
        "secureboot: Secure boot enabled",
        INSTALLER_STARTS,
        "Secure Boot: enforced (the firmware's SecureBoot variable is 1)",
        "the signed manifest: the installer's tools",
        "fetching the installer's programs from http://10.42.0.1",
        "nixos-pxe: step 2/7 disk",
        "nixos-pxe: install FAILED at step 2/7 (disk): nixos-pxe/secure-boot/system.tar.zst: bytes 0-",
        "are not the ones that were signed",
        "nothing was written to the disk",
        INSTALLER_FAILED,
    ];
    if !common::in_order(&a.console, &a_expect) {
        failures.push(format!("(a) the signed image under enforcement did not show {a_expect:?} in order:\n{}", common::tail(&a.console)));
    }
    if target_hash() != empty {
        failures.push("(a) the target disk was written to".into());
    }
    // (a') The installer's programs changed on the server: refused as they arrive, before the
    // installer runs.
    let served_tools = out.join("nixos-pxe/secure-boot/tools.tar.zst");
    let signed_tools = std::fs::read(&served_tools).expect("the served tools");
    let mut changed = signed_tools.clone();
    changed[signed_tools.len() / 2] ^= 0x01;
    std::fs::write(&served_tools, &changed).expect("change the served tools");
    let tools = boot_on(dir, "a-signed-enforced-tools-changed", &signed, Firmware::Enforcing(&enrolled), Some(&net), &installer_ran);
    std::fs::write(&served_tools, &signed_tools).expect("restore the served tools");
    let tools_expect = [
        "Secure Boot: enforced (the firmware's SecureBoot variable is 1)",
        "init FAILED: the installer's programs: nixos-pxe/secure-boot/tools.tar.zst: bytes 0-",
        "are not the ones that were signed",
    ];
    if !common::in_order(&tools.console, &tools_expect) || tools.console.contains("nixos-pxe: step 1/7") {
        failures.push(format!("(a') the changed tools were not refused before the installer ran ({tools_expect:?} in order):\n{}", common::tail(&tools.console)));
    }
    if target_hash() != empty {
        failures.push("(a') the target disk was written to".into());
    }
    // (b) The same image signed with another key, and with no signature at all.
    for (name, image) in [("b-another-key", &resigned), ("b-unsigned", &bare)] {
        let b = boot(dir, name, image, Firmware::Enforcing(&enrolled), &installer_ran);
        if let Err(e) = refused(&b) {
            failures.push(format!("({name}) {e}"));
        }
    }
    // (c) One byte changed in the kernel, then in the initrd.
    for (name, image) in [("c-kernel-byte-changed", &changed_kernel), ("c-initrd-byte-changed", &changed_initrd)] {
        let c = boot(dir, name, image, Firmware::Enforcing(&enrolled), &installer_ran);
        if let Err(e) = refused(&c) {
            failures.push(format!("({name}) {e}"));
        }
    }
    // (d) The signed image with Secure Boot off: it runs anywhere.
    // The image as signed now: fetched and matched, then the install goes on to the disk's
    // checks (this test's tools are a stand-in archive without sfdisk and mkfs, so it stops there).
    let d = boot_on(dir, "d-signed-secure-boot-off", &signed, Firmware::Off, Some(&net), &installer_ran);
    let d_expect = [
        INSTALLER_STARTS,
        "Secure Boot: off (the firmware's SecureBoot variable is 0",
        "nixos-pxe/secure-boot/system.tar.zst (",
        "fetched and matched the signed manifest",
        "nixos-pxe/secure-boot/system.efi (",
        "fetched and matched the signed manifest",
        "nixos-pxe: install FAILED at step 2/7 (disk): ",
        INSTALLER_FAILED,
    ];
    if !common::in_order(&d.console, &d_expect) || d.console.contains("UEFI Secure Boot is enabled") {
        failures.push(format!("(d) the signed image with Secure Boot off did not show {d_expect:?} in order:\n{}", common::tail(&d.console)));
    }
    for (name, boot) in [("a", &a), ("d", &d)] {
        let said = boot.console.lines().filter(|l| l.contains("fetched and matched") || l.contains("install FAILED")).collect::<Vec<_>>().join("\n  ");
        eprintln!("secure_boot: ({name}) the installer said:\n  {said}");
    }
    if target_hash() != empty {
        failures.push("(d) the target disk was written to before the install's checks passed".into());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The fleet of the whole install: tests/configs/lab-fleet-secureboot.nix with the test's key
/// and certificate and each host's image named as lib.mkFleet names it, as JSON: the initrd's
/// config.json, what sign and serve read.
fn fleet_config(dir: &Path, key: &Path, cert: &Path) -> PathBuf {
    let nix = dir.join("fleet.nix");
    std::fs::write(
        &nix,
        format!(
            "{{ ... }}: {{\n  imports = [ {} ];\n  bootServer.secureBoot.keyFile = \"{}\";\n  bootServer.secureBoot.certificateFile = \"{}\";\n}}\n",
            common::root().join("tests/configs/lab-fleet-secureboot.nix").display(),
            key.display(),
            cert.display()
        ),
    )
    .expect("write fleet.nix");
    let text = common::nixos_pxe(&["options", "--source", "static", "--config", nix.to_str().expect("utf-8"), "--as-config-json"]);
    let mut tree: serde_json::Value = serde_json::from_str(&text).expect("config JSON");
    for host in ["sb-a", "sb-b"] {
        tree["fleet"]["hosts"][host]["image"] = "systems/sb.tar.zst".into();
    }
    let json = dir.join("config.json");
    std::fs::write(&json, serde_json::to_string_pretty(&tree).expect("json")).expect("write config.json");
    json
}

/// The installer's initrd for `config`: `nixos-pxe pack --format newc` of this build's nixos-pxe
/// (stripped, its libraries beside it) as /init and the configuration's JSON form.
fn installer_initrd(dir: &Path, config: &Path, out: &Path) {
    let tree = dir.join("installer-initrd-tree");
    let stripped = dir.join("nixos-pxe.stripped");
    common::run(Command::new("strip").arg("-o").arg(&stripped).arg(env!("CARGO_BIN_EXE_nixos-pxe")));
    stand_in_root::install_binary(&tree, &stripped, "/nixos-pxe/tools/bin/nixos-pxe");
    let json = common::nixos_pxe(&["options", "--source", "static", "--config", config.to_str().expect("utf-8"), "--as-config-json"]);
    std::fs::write(tree.join("nixos-pxe/config.json"), json).expect("config.json");
    pack_newc(&tree, out, &["--symlink", "init=/nixos-pxe/tools/bin/nixos-pxe"]);
}

/// `nixos-pxe pack --format newc` of everything in `tree`, with /proc, /sys, /dev, /tmp, /run.
fn pack_newc(tree: &Path, out: &Path, extra: &[&str]) {
    let mut args: Vec<String> = ["pack", "--format", "newc", "--out"].map(String::from).to_vec();
    args.push(out.to_str().expect("utf-8").into());
    for top in std::fs::read_dir(tree).expect("read tree").flatten() {
        let name = top.file_name().to_string_lossy().into_owned();
        args.extend(["--file".into(), format!("{name}={}", top.path().display())]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    for d in ["proc", "sys", "dev", "tmp", "run"] {
        args.extend(["--dir".into(), d.into()]);
    }
    common::nixos_pxe(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The installed system's unsigned unified kernel image, as a NixOS build would hand it to sign:
/// systemd-stub, the test kernel, and an initrd whose /init (busybox) stands in for the system:
/// it says the firmware's SecureBoot variable on the console and powers off.
fn system_uki(dir: &Path, kernel: &Path, out: &Path) {
    let tree = dir.join("system-initrd-tree");
    std::fs::create_dir_all(tree.join("bin")).expect("mkdir");
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).expect("copy busybox");
    stand_in_root::write_exec(
        &tree.join("init"),
        "#!/bin/busybox sh\n# stand-in for the installed NixOS system: says what the firmware enforced (efivarfs cannot seek: read whole), then powers off\n\
         /bin/busybox mount -t proc proc /proc\n/bin/busybox mount -t sysfs sysfs /sys\n\
         /bin/busybox mount -t efivarfs efivarfs /sys/firmware/efi/efivars\n\
         v=$(/bin/busybox cat /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | /bin/busybox dd bs=1 skip=4 count=1 2>/dev/null | /bin/busybox od -An -tu1 | /bin/busybox tr -d ' ')\n\
         echo \"installed system: SecureBoot=$v\"\n/bin/busybox poweroff -f\n",
    );
    let initrd = dir.join("system-initrd");
    pack_newc(&tree, &initrd, &[]);
    let stub = std::fs::read(STUB).expect("read the stub");
    let layout = nixos_pxe_installer::secure_boot::pe::layout(&stub).expect("the stub's layout");
    let cmdline = dir.join("system-cmdline");
    std::fs::write(&cmdline, "console=ttyS0,115200n8\0").expect("write");
    let files = [(".cmdline", cmdline), (".linux", kernel.to_path_buf()), (".initrd", initrd)];
    let sizes: Vec<u64> = files.iter().map(|(_, f)| std::fs::metadata(f).expect("size").len()).collect();
    let at = nixos_pxe_installer::secure_boot::pe::placements(&layout, &sizes);
    let mut objcopy = Command::new("objcopy");
    for ((name, file), vma) in files.iter().zip(at) {
        objcopy.arg("--add-section").arg(format!("{name}={}", file.display())).arg("--change-section-vma").arg(format!("{name}=0x{vma:x}"));
    }
    common::run(objcopy.arg(STUB).arg(out));
}

/// The stand-in system image: a system whose switch-to-configuration records its call (the
/// signed boot file is what boots it), named by nixos-pxe/system, with its registration.
fn system_image(dir: &Path, out: &Path) {
    let tree = dir.join("system-image-tree");
    let system = "nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-sb";
    stand_in_root::write_exec(
        &tree.join(system).join("bin/switch-to-configuration"),
        "#!/bin/sh\n# stand-in for a NixOS system's switch-to-configuration boot\necho \"stand-in switch-to-configuration $*\" >> \"$NIXOS_PXE_STAND_IN_ROOT/stand-in.log\"\n",
    );
    std::fs::create_dir_all(tree.join("nixos-pxe")).expect("mkdir");
    std::fs::write(tree.join("nixos-pxe/system"), format!("/{system}\n")).expect("write");
    std::fs::write(tree.join("nixos-pxe/registration"), "stand-in registration\n").expect("write");
    let tree_s = tree.display();
    common::nixos_pxe(&[
        "pack", "--compression", "zstd", "--out", out.to_str().expect("utf-8"),
        "--file", &format!("nix={tree_s}/nix"), "--file", &format!("nixos-pxe/system={tree_s}/nixos-pxe/system"),
        "--file", &format!("nixos-pxe/registration={tree_s}/nixos-pxe/registration"),
    ]);
}

/// Issue 19's first proof: a signed fleet host installs with Secure Boot enforced and then boots
/// its disk with Secure Boot still on. The installer (signed, booted from an ESP image) asks serve
/// for sb-a's decision, fetches its programs (busybox, Debian's disk tools, stand-ins for the
/// NixOS-only commands: tests/common/stand_in_root.rs), the system image and the system's signed
/// boot file, each checked against the signed manifest, installs, reports `installed` to serve,
/// and reboots; the machine then starts from its disk alone, the firmware verifying the system's
/// boot file against the site's db, and the system reads SecureBoot 1.
#[test]
fn a_signed_fleet_host_installs_and_boots_its_disk_with_secure_boot_on() {
    let _one = common::preflight(&[STUB, CODE_SECBOOT, virt_firmware::EMPTY_VARS]);
    let tmp = tempfile::Builder::new().prefix("nixos-pxe-secure-boot-install-").tempdir_in("/var/tmp").expect("temp dir");
    let dir = tmp.path();
    let (key, cert) = common::signing_keys::key_pair(dir, "site-db");
    let config = fleet_config(dir, &key, &cert);
    let config_s = config.to_str().expect("utf-8");
    let kernel = common::test_kernel(&["--source", "static", "--config", config_s]);
    let parts = dir.join("unsigned");
    std::fs::create_dir_all(parts.join("systems")).expect("mkdir");
    installer_initrd(dir, &config, &parts.join("initrd"));
    std::fs::copy(&kernel, parts.join("kernel")).expect("copy the kernel");
    // The installer's programs: the end-to-end NFS roots' tools, without nixos-pxe itself (the
    // signed initrd has it, running).
    let tools = stand_in_root::base_nfs_root(dir, Path::new(env!("CARGO_BIN_EXE_nixos-pxe")));
    std::fs::remove_file(tools.join("nixos-pxe/tools/bin/nixos-pxe")).expect("rm");
    std::fs::remove_file(tools.join("init")).expect("rm");
    let mut args: Vec<String> = ["pack", "--compression", "zstd", "--out"].map(String::from).to_vec();
    args.push(parts.join("tools.tar.zst").display().to_string());
    for top in std::fs::read_dir(&tools).expect("read").flatten() {
        args.extend(["--file".into(), format!("{}={}", top.file_name().to_string_lossy(), top.path().display())]);
    }
    common::nixos_pxe(&args.iter().map(String::as_str).collect::<Vec<_>>());
    system_image(dir, &parts.join("systems/sb.tar.zst"));
    system_uki(dir, &kernel, &parts.join("systems/sb.efi"));

    let out = dir.join("served");
    common::nixos_pxe(&["sign", "--config", config_s, "--unsigned", parts.to_str().expect("utf-8"), "--stub", STUB, "--out", out.to_str().expect("utf-8")]);
    let enrolled = dir.join("OVMF_VARS_4M.site.fd");
    virt_firmware::enrol(&cert, &enrolled);

    // serve with the fleet in the lab (DHCP, TFTP, HTTP on br0, 10.42.0.1): the machine boots
    // the signed installer over UEFI PXE, serve's DHCP binds its MAC to its lease, and serve
    // answers its decision, its files and its reports.
    let mut lab = common::Lab::new("sbi");
    let state = dir.join("state");
    let serve_log = dir.join("fleet-serve.log");
    let script = format!(
        "exec {} serve --config {config_s} --interface br0 --tftp-root {} --state-dir {} --http-port 80",
        env!("CARGO_BIN_EXE_nixos-pxe"),
        out.display(),
        state.display()
    );
    lab.spawn(&["sh", "-c", &script], &serve_log);
    let ns = lab.ns.clone();
    lab.wait_listening(&ns, &[common::Socket::Udp(67), common::Socket::Udp(69), common::Socket::TcpListen(80)]);
    let target = dir.join("target.img");
    std::fs::File::create(&target).expect("target").set_len(2 << 30).expect("size");
    let vars_a = dir.join("sb-a-vars.fd");
    std::fs::copy(&enrolled, &vars_a).expect("sb-a's variable store");
    let install = boot_pxe(dir, "sb-a-install", &ns, Firmware::EnforcingWith(&vars_a), &target, SB_A);
    let state_s = state.to_str().expect("utf-8").to_string();
    let host_status = |host: &str| -> serde_json::Value {
        let status = common::nixos_pxe(&["fleet", "status", "--state-dir", &state_s, "--json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&status).expect("status JSON");
        rows.into_iter().find(|r| r["host"] == host).unwrap_or_else(|| panic!("no {host} in {status}"))
    };
    let install_expect = [
        "EFI stub: UEFI Secure Boot is enabled.",
        "Secure Boot: enforced (the firmware's SecureBoot variable is 1)",
        "the boot server says: install (nixos-pxe.host=sb-a nixos-pxe.generation=1 nixos-pxe.mac=52:54:00:00:5b:01 nixos-pxe.attempt=1 nixos-pxe.token=... ",
        "nixos-pxe/secure-boot/systems/sb.tar.zst (",
        "fetched and matched the signed manifest",
        "step 4/7 unpack done",
        "the system's signed boot file is",
        "install complete in",
    ];
    assert!(common::in_order(&install.console, &install_expect), "the install did not show {install_expect:?} in order:\n{}", common::tail(&install.console));
    let sb_a = host_status("sb-a");
    assert_eq!(sb_a["state"], "installed", "serve's state for sb-a: {sb_a}\n{}", std::fs::read_to_string(&serve_log).unwrap_or_default());
    let log = std::fs::read_to_string(&serve_log).unwrap_or_default();
    assert!(log.contains("bootx64.efi"), "the signed installer went out over TFTP:\n{log}");

    // sb-b, with the system image changed on serve by one byte: its attempt ends `failed` at
    // step 2 saying which bytes, and its disk is byte for byte as it was.
    let served_image = out.join("nixos-pxe/secure-boot/systems/sb.tar.zst");
    let signed_image = std::fs::read(&served_image).expect("the served image");
    let mut changed = signed_image.clone();
    changed[signed_image.len() / 2] ^= 0x01;
    std::fs::write(&served_image, &changed).expect("change the served image");
    let target_b = dir.join("target-b.img");
    std::fs::File::create(&target_b).expect("target").set_len(2 << 30).expect("size");
    let hash = |file: &Path| blake3::hash(&std::fs::read(file).expect("read the disk")).to_hex().to_string();
    let empty = hash(&target_b);
    // This time over UEFI HTTP boot: the firmware fetches the signed installer from serve's HTTP.
    let refused = boot_net(dir, "sb-b-image-changed-http-boot", &ns, Firmware::Enforcing(&enrolled), &target_b, SB_B, true);
    std::fs::write(&served_image, &signed_image).expect("restore the served image");
    let log = std::fs::read_to_string(&serve_log).unwrap_or_default();
    assert!(log.lines().any(|l| l.contains("http: sending") && l.contains("path=\"/bootx64.efi\"")), "sb-b's firmware fetched the installer over HTTP (sb-a's over TFTP):\n{log}");
    assert!(
        common::in_order(&refused.console, &["Secure Boot: enforced", "install FAILED at step 2/7 (disk): nixos-pxe/secure-boot/systems/sb.tar.zst: bytes 0-", "nothing was written to the disk"]),
        "sb-b with the image changed:\n{}",
        common::tail(&refused.console)
    );
    assert_eq!(hash(&target_b), empty, "sb-b's disk was written to");
    let sb_b = host_status("sb-b");
    let why = sb_b.to_string();
    assert!(sb_b["state"] == "failed" && why.contains("are not the ones that were signed") && why.contains("disk"), "serve's state for sb-b: {sb_b}");

    // sb-b again with Secure Boot off and the image as signed: attempt 2 installs (the signed
    // artefacts work anywhere); power-on to installed side by side with sb-a's.
    let off = boot_pxe(dir, "sb-b-secure-boot-off", &ns, Firmware::Off, &target_b, SB_B);
    assert!(
        common::in_order(&off.console, &["Secure Boot: off", "nixos-pxe.attempt=2", "fetched and matched the signed manifest", "install complete in"]),
        "sb-b with Secure Boot off:\n{}",
        common::tail(&off.console)
    );
    assert_eq!(host_status("sb-b")["state"], "installed", "{}", host_status("sb-b"));

    // sb-a powers on again, the network still first in its boot order: serve says boot from the
    // disk; with no GRUB to chainload it, the installer sets BootNext to the disk's entry and
    // reboots, and the next start boots the disk, whose signed system reads SecureBoot 1.
    let local = boot_pxe(dir, "sb-a-local-boot", &ns, Firmware::EnforcingWith(&vars_a), &target, SB_A);
    assert!(
        common::in_order(&local.console, &["Secure Boot: enforced", "the boot server says: boot from the disk", "BootNext is Boot", "rebooting into it"]),
        "sb-a's local boot decision:\n{}",
        common::tail(&local.console)
    );
    let booted = boot_pxe(dir, "sb-a-installed", &ns, Firmware::EnforcingWith(&vars_a), &target, SB_A);
    assert!(booted.console.contains(&format!("{INSTALLED_SYSTEM}1")), "the installed disk, booted by BootNext under enforcement:\n{}", common::tail(&booted.console));
    assert!(!booted.console.contains("nixos-pxe: init"), "BootNext did not take the machine to its disk:\n{}", common::tail(&booted.console));
    drop(lab);
    eprintln!(
        "secure_boot: power-on to installed: {:.1} s with Secure Boot enforced (sb-a), {:.1} s with it off (sb-b), ratio {:.2}; a changed image refused {:.1} s after power-on; the installed disk's boot {:.1} s (enforced)",
        install.seconds,
        off.seconds,
        install.seconds / off.seconds,
        refused.seconds,
        booted.seconds
    );
}

/// Powers the machine on in the lab `ns` with Secure Boot enforced: its NIC (MAC `mac`, on tap0)
/// first in the boot order, so the firmware boots what serve's DHCP names over UEFI PXE, and its
/// empty disk `target`; until the install ends (QEMU stops at the reboot) or fails.
fn boot_pxe(dir: &Path, name: &str, ns: &str, firmware: Firmware, target: &Path, mac: &str) -> Boot {
    boot_net(dir, name, ns, firmware, target, mac, false)
}

/// `boot_pxe`, or with `http` UEFI HTTP boot: the firmware's PXE turned off (its fw_cfg knobs), so
/// that it asks DHCP as an HTTPClient and fetches the URL serve's DHCP gives.
fn boot_net(dir: &Path, name: &str, ns: &str, firmware: Firmware, target: &Path, mac: &str, http: bool) -> Boot {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let serial = dir.join("serial.log");
    let args: Vec<String> = vec![
        "netns".into(), "exec".into(), ns.into(), "nice".into(),
        "-n".into(), "10".into(), "qemu-system-x86_64".into(), "-accel".into(), "tcg".into(), "-no-reboot".into(), "-display".into(), "none".into(),
        "-monitor".into(), "none".into(), "-m".into(), "768".into(),
        "-serial".into(), format!("file:{}", serial.display()),
        "-netdev".into(), "tap,id=n0,ifname=tap0,script=no,downscript=no".into(),
        // The firmware's own network stack, no option ROM (iPXE's is unsigned).
        "-device".into(), format!("virtio-net-pci,netdev=n0,romfile=,bootindex=1,mac={mac}"),
        "-drive".into(), format!("file={},format=raw,if=none,id=t0", target.display()),
        "-device".into(), "virtio-blk-pci,drive=t0,bootindex=9".into(),
    ];
    let mut args = args;
    args.extend(firmware_args(firmware, &dir));
    if http {
        for knob in ["IPv4PXESupport", "IPv6PXESupport"] {
            args.extend(["-fw_cfg".into(), format!("name=opt/org.tianocore/{knob},string=no")]);
        }
    }
    let until = ["install complete in", INSTALLER_FAILED, REFUSED, "Kernel panic", "init FAILED", "rebooting into it", INSTALLED_SYSTEM];
    let started = Instant::now();
    let mut qemu = Command::new("ip").args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(dir.join("qemu.log")).expect("log")).spawn().expect("qemu");
    let mut ended = false;
    while started.elapsed() < INSTALL_TIMEOUT && !ended {
        let console = common::console(&serial);
        ended = until.iter().any(|u| console.contains(u)) || matches!(qemu.try_wait(), Ok(Some(_)));
        std::thread::sleep(Duration::from_millis(500));
    }
    // A complete install's last lines (the reboot) before QEMU stops; a failed one waits in its
    // rescue shell.
    let console = common::console(&serial);
    let rebooting = console.contains("install complete in") || console.contains("rebooting into it");
    let deadline = Instant::now() + Duration::from_secs(if rebooting { 20 } else { 0 });
    while Instant::now() < deadline && !matches!(qemu.try_wait(), Ok(Some(_))) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = qemu.kill();
    let _ = qemu.wait();
    Boot { console: common::console(&serial), seconds }
}

const SB_A: &str = "52:54:00:00:5b:01";
/// What the stand-in installed system says first (then 0 or 1).
const INSTALLED_SYSTEM: &str = "installed system: SecureBoot=";
const SB_B: &str = "52:54:00:00:5b:02";

/// How long power-on to installed may take under TCG on a loaded two-core machine.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
