//! `nixos-pxe mk-bootloader` with Debian's GRUB (grub-efi-amd64-bin, grub-pc-bin): a PE32+ EFI
//! application with grub.cfg embedded, small, and grub.cfg beside it; with `--grub-bios-lib` also
//! bios.0, a PXE network boot program for legacy BIOS, and grub-bios.cfg.

use std::path::Path;
use std::process::Command;

const GRUB_LIB: &str = "/usr/lib/grub/x86_64-efi";
const GRUB_BIOS_LIB: &str = "/usr/lib/grub/i386-pc";

fn mk_bootloader(config: &str, grub_lib: &str, out: &Path) -> std::process::Output {
    mk_bootloader_with(config, grub_lib, &[], out)
}

fn mk_bootloader_with(config: &str, grub_lib: &str, extra: &[&str], out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nixos-pxe"))
        .args([
            "mk-bootloader",
            "--source",
            "static",
            "--config",
            config,
            "--grub-lib",
            grub_lib,
        ])
        .args(extra)
        .arg("--out")
        .arg(out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run nixos-pxe")
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[test]
fn builds_a_small_efi_image_with_the_config_embedded() {
    assert!(
        Path::new(GRUB_LIB).join("moddep.lst").exists(),
        "{GRUB_LIB} missing: apt-get install grub-efi-amd64-bin"
    );
    let out = tempfile::tempdir().expect("tempdir");
    let result = mk_bootloader(
        "examples/static-second-nic/installer.nix",
        GRUB_LIB,
        out.path(),
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );

    let mut names: Vec<String> = std::fs::read_dir(out.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["bootx64.efi", "grub.cfg"],
        "the seed's result/ holds exactly these two files"
    );

    let image = std::fs::read(out.path().join("bootx64.efi")).expect("read image");
    assert_eq!(&image[..2], b"MZ");
    let pe = u32::from_le_bytes(image[0x3c..0x40].try_into().expect("4 bytes")) as usize;
    assert_eq!(&image[pe..pe + 4], b"PE\0\0");
    assert_eq!(u16_at(&image, pe + 4), 0x8664, "machine: x86-64");
    let optional = pe + 24;
    assert_eq!(u16_at(&image, optional), 0x20b, "PE32+");
    assert_eq!(
        u16_at(&image, optional + 68),
        10,
        "subsystem: EFI application"
    );
    assert!(
        image.len() < 1024 * 1024,
        "a minimal image is well under 1 MiB, got {} bytes",
        image.len()
    );

    let cfg = std::fs::read_to_string(out.path().join("grub.cfg")).expect("grub.cfg");
    assert!(cfg.contains("net_bootp efinet1;"), "{cfg}");
    let embedded = image.windows(cfg.len()).any(|w| w == cfg.as_bytes());
    assert!(
        embedded,
        "grub.cfg is embedded in bootx64.efi byte for byte"
    );
    // In the memdisk's tar, where the prefix (memdisk)/boot/grub makes normal mode read it.
    let name = b"boot/grub/grub.cfg\0";
    assert!(
        image.windows(name.len()).any(|w| w == name),
        "the memdisk holds boot/grub/grub.cfg"
    );
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        stdout.contains(" memdisk ") && stdout.contains(" tar "),
        "memdisk and tar modules: {stdout}"
    );
}

#[test]
fn a_wrong_module_directory_is_named_and_nothing_is_written() {
    let out = tempfile::tempdir().expect("tempdir");
    let target = out.path().join("result");
    let result = mk_bootloader("examples/seed/installer.nix", "/usr/lib", &target);
    assert_eq!(result.status.code(), Some(1));
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        err.contains("/usr/lib is not a GRUB module directory (no moddep.lst)"),
        "{err}"
    );
    assert!(!target.exists());
}

#[test]
fn a_missing_grub_mkimage_is_named_and_nothing_is_written() {
    let out = tempfile::tempdir().expect("tempdir");
    let target = out.path().join("result");
    let result = Command::new(env!("CARGO_BIN_EXE_nixos-pxe"))
        .args([
            "mk-bootloader",
            "--source",
            "static",
            "--config",
            "examples/seed/installer.nix",
            "--grub-lib",
            GRUB_LIB,
        ])
        .args(["--grub-mkimage", "no-such-grub-mkimage", "--out"])
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run nixos-pxe");
    assert_eq!(result.status.code(), Some(1));
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        err.contains("`no-such-grub-mkimage` was not found on PATH"),
        "{err}"
    );
    assert!(err.contains("--grub-mkimage PATH"), "{err}");
    assert!(!target.exists());
}

/// A copy of Debian's module directory, as a place to break one thing at a time.
fn copy_lib(to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(GRUB_LIB).expect("grub lib") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

#[test]
fn modules_for_another_platform_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("i386-pc");
    copy_lib(&lib);
    let info = std::fs::read_to_string(lib.join("modinfo.sh")).expect("modinfo.sh");
    let info = info
        .replace(
            "grub_modinfo_target_cpu=x86_64",
            "grub_modinfo_target_cpu=i386",
        )
        .replace("grub_modinfo_platform=efi", "grub_modinfo_platform=pc");
    std::fs::write(lib.join("modinfo.sh"), info).expect("write");
    let result = mk_bootloader(
        "examples/seed/installer.nix",
        lib.to_str().expect("utf-8"),
        &dir.path().join("out"),
    );
    assert_eq!(result.status.code(), Some(1));
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        err.contains("holds GRUB modules for i386-pc, not x86_64-efi"),
        "{err}"
    );
}

/// grub-mkimage itself failing (here on a dependency missing from the module directory, which
/// only grub-mkimage resolves): its stderr reaches the operator and no image is left behind.
#[test]
fn a_failing_grub_mkimage_keeps_its_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("x86_64-efi");
    copy_lib(&lib);
    // archelp is what tar (the memdisk's format) depends on, not a module grub.cfg names.
    std::fs::remove_file(lib.join("archelp.mod")).expect("remove archelp.mod");
    let out = dir.path().join("out");
    let result = mk_bootloader(
        "examples/seed/installer.nix",
        lib.to_str().expect("utf-8"),
        &out,
    );
    assert_eq!(result.status.code(), Some(1));
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        err.contains("`") && err.contains("grub-mkimage") && err.contains("failed"),
        "{err}"
    );
    assert!(
        err.contains("archelp.mod"),
        "grub-mkimage's own message names the module: {err}"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "nothing left in {}: {left:?}",
        out.display()
    );
}

/// A fleet's bootx64.efi: grub.cfg loads each machine's own configuration at run time, so the
/// image holds the modules of every kind of per-host file (install over TFTP or HTTP, local boot
/// by chainloading an ESP's loader or exiting to the firmware, hold); none can be loaded later.
#[test]
fn a_fleet_image_holds_the_modules_of_every_per_host_file() {
    let out = tempfile::tempdir().expect("tempdir");
    let result = mk_bootloader("examples/fleet/installer.nix", GRUB_LIB, out.path());
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let stdout = String::from_utf8_lossy(&result.stdout);
    let modules: Vec<&str> = stdout
        .split("GRUB modules: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the module list")
        .split(' ')
        .collect();
    for needed in [
        "configfile",
        "search",
        "chain",
        "minicmd",
        "part_gpt",
        "fat",
        "http",
        "tftp",
        "linux",
        "test",
    ] {
        assert!(modules.contains(&needed), "{needed} in {modules:?}");
    }
    let cfg = std::fs::read_to_string(out.path().join("grub.cfg")).expect("grub.cfg");
    assert!(
        cfg.contains("configfile (tftp)/nixos-pxe/hosts/mac-$net_default_mac.cfg"),
        "{cfg}"
    );
    assert!(!cfg.contains("net_bootp"), "auto: no second DHCP: {cfg}");
    let image = std::fs::read(out.path().join("bootx64.efi")).expect("read image");
    assert!(image.len() < 1024 * 1024, "{} bytes", image.len());
}

/// `fleet.unknownHosts = "hold"`: grub.cfg waits for Enter (`read`), so the read module is in.
#[test]
fn a_holding_fleet_image_can_wait_for_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("fleet.nix");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fleet/installer.nix"))
            .expect("example")
            .replace("unknownHosts = \"local-boot\";", "unknownHosts = \"hold\";")
            .replace(
                "./hosts/web;",
                concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fleet/hosts/web;"),
            );
    assert!(example.contains("\"hold\""));
    std::fs::write(&config, example).expect("write");
    let result = mk_bootloader(config.to_str().expect("utf-8"), GRUB_LIB, &dir.path().join("out"));
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        String::from_utf8_lossy(&result.stdout).contains(" read "),
        "{}",
        String::from_utf8_lossy(&result.stdout)
    );
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// bios.0 is what a BIOS PXE ROM runs: pxeboot.img once (its jump to 0x8200 must land in the
/// core's decompressor, behind diskboot.img), and no Multiboot header for iPXE to find in the
/// first 8 KiB (iPXE would start it as a Multiboot kernel, without the PXE stack GRUB needs).
/// Both mistakes were made by the first probe and left GRUB silent (see src/loader.rs).
#[test]
fn builds_bios_0_as_a_pxe_boot_program() {
    for lib in [GRUB_LIB, GRUB_BIOS_LIB] {
        assert!(Path::new(lib).join("moddep.lst").exists(), "{lib} missing: apt-get install grub-efi-amd64-bin grub-pc-bin");
    }
    let out = tempfile::tempdir().expect("tempdir");
    let result = mk_bootloader_with("examples/seed/installer.nix", GRUB_LIB, &["--grub-bios-lib", GRUB_BIOS_LIB], out.path());
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    assert_eq!(names(out.path()), ["bios.0", "bootx64.efi", "grub-bios.cfg", "grub.cfg"]);

    let image = std::fs::read(out.path().join("bios.0")).expect("read bios.0");
    let pxeboot = std::fs::read(Path::new(GRUB_BIOS_LIB).join("pxeboot.img")).expect("pxeboot.img");
    let diskboot = std::fs::read(Path::new(GRUB_BIOS_LIB).join("diskboot.img")).expect("diskboot.img");
    assert_eq!(&image[..pxeboot.len()], &pxeboot[..], "bios.0 starts with pxeboot.img");
    // diskboot.img follows, its code unchanged (grub-mkimage patches only the block list at its end).
    assert!(image[pxeboot.len()..pxeboot.len() + 256] == diskboot[..256], "not diskboot.img after pxeboot.img (a second pxeboot.img?)");
    let multiboot = 0x1BAD_B002u32.to_le_bytes();
    let header = image[..8192].chunks_exact(4).position(|w| w == multiboot);
    assert_eq!(header, None, "a Multiboot magic in the first 8 KiB of bios.0");
    // The i386-pc core is loaded below 0x78000 (grub-mkimage refuses bigger ones); a minimal one is far below.
    assert!(image.len() < 256 * 1024, "a minimal bios.0 is well under 256 KiB, got {} bytes", image.len());

    let cfg = std::fs::read_to_string(out.path().join("grub-bios.cfg")).expect("grub-bios.cfg");
    assert!(cfg.contains("insmod pxe\n") && cfg.contains("net_bootp pxe;") && !cfg.contains("efi"), "{cfg}");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let bios_modules = stdout.lines().find(|l| l.contains("bios.0 (")).expect("bios.0's line");
    for module in [" pxe ", " memdisk ", " tar ", " normal ", " linux "] {
        assert!(bios_modules.contains(module), "{module}: {bios_modules}");
    }
    assert!(!bios_modules.contains("efi"), "{bios_modules}");
}

/// The EFI modules given as --grub-bios-lib: refused with what to pass, and nothing written, not
/// even the EFI image that could have been built.
#[test]
fn a_wrong_bios_module_directory_is_named_and_nothing_is_written() {
    let out = tempfile::tempdir().expect("tempdir");
    let target = out.path().join("result");
    let result = mk_bootloader_with("examples/seed/installer.nix", GRUB_LIB, &["--grub-bios-lib", GRUB_LIB], &target);
    assert_eq!(result.status.code(), Some(1));
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(err.contains("holds GRUB modules for x86_64-efi, not i386-pc") && err.contains("/usr/lib/grub/i386-pc (Debian: grub-pc-bin)"), "{err}");
    assert!(!target.exists(), "{:?}", names(&target));
}
