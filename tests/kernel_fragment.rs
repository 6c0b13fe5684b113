//! The kernel fragment holds against the real Kconfig, through the procedure the flake's kernel
//! uses: nix/kernel-config.sh (nix/kernel.nix runs it on nixpkgs' kernel source) makes the .config
//! from the architecture's defconfig, the fragment `nixos-pxe kernel-config` prints merged in with
//! scripts/kconfig/merge_config.sh -m, and `make olddefconfig`, then fails unless every symbol the
//! fragment wants `y` is `y`. Here it runs on Debian's linux-source-6.1. A symbol can be no more
//! built in than what it depends on: kconfig quietly lowers it to a module, or leaves it off, and
//! the NFS root has no modules, so the NIC would be gone. A failure names each symbol, where its
//! Kconfig entry is, its conditions with the values they found, and what to build in as well.

mod kconfig;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const SOURCE_TAR: &str = "/usr/src/linux-source-6.1.tar.xz";
const PACKAGE: &str = "linux-source-6.1";
/// The parts of the source that `make defconfig` and `olddefconfig` read: every Kconfig file,
/// scripts/ (kconfig itself, merge_config.sh, the toolchain probes Kconfig runs), the top-level
/// and x86 Makefiles, x86's defconfigs. Checked against the whole tree (6.1.192-3): the same
/// .config for the example's fragment, byte for byte. The stand-in nixpkgs' kernel source
/// (tests/nix/stand-in-nixpkgs/kernel.nix) is the same parts.
const KCONFIG_PARTS: &[&str] = &[
    "linux-source-6.1/Makefile",
    "linux-source-6.1/scripts/*",
    "linux-source-6.1/arch/x86/Makefile*",
    "linux-source-6.1/arch/x86/configs/*",
    "*Kconfig*",
];

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Kconfig part of linux-source-6.1, extracted once per package version outside the work tree
/// (like tests/e2e/build-test-kernel.sh's kernel; $NIXOS_PXE_KCONFIG_CACHE moves it). Read-only
/// afterwards: every make runs with O= a temporary directory.
fn kconfig_tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        assert!(
            Path::new(SOURCE_TAR).is_file(),
            "{SOURCE_TAR} is missing: this test needs Debian's kernel source (apt-get install {PACKAGE}; \
             it is in dev/packages.txt's test group)"
        );
        let version = run(Command::new("dpkg-query").args(["-W", "-f=${Version}", PACKAGE]));
        assert!(!version.is_empty() && !version.contains('/'), "dpkg-query gave no version for {PACKAGE}: {version:?}");
        let cache = std::env::var_os("NIXOS_PXE_KCONFIG_CACHE").map_or_else(|| PathBuf::from("/var/cache/nixos-pxe/kconfig-source"), PathBuf::from);
        // Named by what it holds: an older extraction (fewer parts) is not taken for this one.
        let dir = cache.join(format!("{version}-with-defconfigs"));
        if !dir.join("complete").exists() {
            // Extract beside it and rename: a concurrent run either wins the rename or finds it done.
            let partial = cache.join(format!("{version}.partial.{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&partial);
            std::fs::create_dir_all(&partial).unwrap_or_else(|e| panic!("mkdir {}: {e}", partial.display()));
            run(Command::new("tar").arg("-xJf").arg(SOURCE_TAR).arg("-C").arg(&partial).arg("--wildcards").args(KCONFIG_PARTS));
            std::fs::write(partial.join("complete"), format!("{PACKAGE} {version}: {}\n", KCONFIG_PARTS.join(" "))).expect("mark complete");
            if std::fs::rename(&partial, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&partial);
                assert!(dir.join("complete").exists(), "could not move the extracted source to {}", dir.display());
            }
        }
        dir.join(PACKAGE)
    })
}

/// `nixos-pxe kernel-config` for a configuration file.
fn fragment_of(config: &Path) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_nixos-pxe"))
        .args(["kernel-config", "--source", "static", "--config"])
        .arg(config)
        .current_dir(env!("CARGO_MANIFEST_DIR")))
}

/// A configuration with `nfsroot.extraKernelOptions = extra`, written into `dir`.
fn config_with_extra(dir: &Path, extra: &[&str]) -> PathBuf {
    let quoted: Vec<String> = extra.iter().map(|e| format!("\"{}\"", e.replace('"', "\\\""))).collect();
    let file = dir.join("extra.nix");
    std::fs::write(&file, format!("{{ ... }}:\n{{\n  nfsroot.extraKernelOptions = [ {} ];\n}}\n", quoted.join(" "))).expect("write config");
    file
}

/// nix/kernel-config.sh on the tree: the resulting .config, and the script's own complaint when
/// it found symbols not built in (its exit status 1); any other failure fails the test.
fn settle(fragment: &str) -> (String, Option<String>) {
    let tree = kconfig_tree();
    let out = tempfile::tempdir().expect("tempdir");
    let fragment_file = out.path().join("fragment.config");
    std::fs::write(&fragment_file, fragment).expect("write fragment");
    let build = out.path().join("build");
    let result = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("nix/kernel-config.sh"))
        .arg(tree)
        .arg(&build)
        .arg(&fragment_file)
        .output()
        .expect("run nix/kernel-config.sh");
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    let complaint = match result.status.code() {
        Some(0) => None,
        Some(1) if stderr.contains("nixos-pxe: not built in:") => Some(stderr),
        _ => panic!("nix/kernel-config.sh failed ({}):\n{stderr}", result.status),
    };
    let config = std::fs::read_to_string(build.join(".config")).expect("read .config");
    (config, complaint)
}

/// The symbols `fragment` sets to `y`.
fn wanted_y(fragment: &str) -> Vec<String> {
    fragment.lines().filter_map(|l| l.strip_prefix("CONFIG_")?.strip_suffix("=y")).map(str::to_string).collect()
}

/// The symbols `fragment` wants `y` that are not `y` after settling, each explained; the script
/// says the same symbols on its last line.
fn not_built_in(fragment: &str) -> Vec<(String, String)> {
    let (config, complaint) = settle(fragment);
    let values = kconfig::values(&config);
    let lost: Vec<String> = wanted_y(fragment).into_iter().filter(|s| values.get(s).map(String::as_str) != Some("y")).collect();
    let said = complaint.as_deref().and_then(|c| c.lines().last()).and_then(|l| l.strip_prefix("nixos-pxe: not built in:")).unwrap_or_default();
    assert_eq!(said.split_whitespace().collect::<Vec<_>>(), lost, "the script's complaint names exactly the symbols not =y:\n{complaint:?}");
    if lost.is_empty() {
        return Vec::new();
    }
    let kconfig = kconfig::Kconfig::read(kconfig_tree(), "x86").unwrap_or_else(|e| panic!("reading the Kconfig tree: {e}"));
    lost.into_iter()
        .map(|s| {
            let why = kconfig.explain(&s, &values);
            (s, why)
        })
        .collect()
}

fn assert_all_built_in(what: &str, fragment: &str) {
    assert!(wanted_y(fragment).len() > 50, "{what}: the fragment wants few symbols built in:\n{fragment}");
    let lost = not_built_in(fragment);
    assert!(
        lost.is_empty(),
        "{what}: {} symbol(s) the fragment wants built in (y) are not y after merging it into defconfig of \
         {PACKAGE} and make olddefconfig (nix/kernel-config.sh, as the flake's kernel does):\n\n{}\n\
         Build in what each needs as well (src/kernel_config.rs's GROUPS for the fixed set, \
         nfsroot.extraKernelOptions for a driver of your own), or drop the driver.",
        lost.len(),
        lost.iter().map(|(_, why)| why.as_str()).collect::<String>()
    );
}

#[test]
fn the_example_fragment_stays_built_in_on_defconfig() {
    let example = "examples/seed/installer.nix";
    assert_all_built_in(example, &fragment_of(Path::new(example)));
}

#[test]
fn extra_drivers_with_their_dependencies_stay_built_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    // QLogic's QEDE needs QED built in as well; the rest need nothing beyond the fixed set
    // (examples/static-second-nic asks for MLX5_CORE and NR_CPUS=512 too).
    let extra = ["MLX5_CORE", "ICE", "IGC", "IXGBEVF", "SFC", "QED", "QEDE", "NR_CPUS=512"];
    let fragment = fragment_of(&config_with_extra(dir.path(), &extra));
    for symbol in ["IGC", "SFC", "QED", "QEDE"] {
        assert!(fragment.contains(&format!("\nCONFIG_{symbol}=y\n")), "{symbol} not in the fragment:\n{fragment}");
    }
    assert_all_built_in("nfsroot.extraKernelOptions = [ MLX5_CORE ICE IGC IXGBEVF SFC QED QEDE ]", &fragment);
}

#[test]
fn a_driver_whose_dependencies_are_off_or_modules_is_named_with_what_to_build_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    // QEDE without QED (off in defconfig); AQTION, which builds in because MACSEC is off
    // (`depends on MACSEC || MACSEC=n`); and VXLAN turned back into a module, which MLX5_CORE
    // needs (`depends on VXLAN || !VXLAN`).
    let fragment = fragment_of(&config_with_extra(dir.path(), &["QEDE", "AQTION", "VXLAN=m"]));
    let lost = not_built_in(&fragment);
    let names: Vec<&str> = lost.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["MLX5_CORE", "QEDE"], "{lost:#?}");
    let why = |s: &str| lost.iter().find(|(n, _)| n == s).map(|(_, w)| w.clone()).unwrap_or_default();
    assert!(why("QEDE").contains("QEDE: wanted y, is undefined\n"), "{}", why("QEDE"));
    assert!(why("QEDE").contains("depends on QED   [QED=n]"), "{}", why("QEDE"));
    assert!(why("QEDE").contains("drivers/net/ethernet/qlogic/Kconfig:"), "{}", why("QEDE"));
    assert!(why("QEDE").contains("inside if NET_VENDOR_QLOGIC   [NET_VENDOR_QLOGIC=y]"), "{}", why("QEDE"));
    assert!(why("QEDE").ends_with("build in as well: QED\n"), "{}", why("QEDE"));
    assert!(why("MLX5_CORE").contains("MLX5_CORE: wanted y, is m\n"), "{}", why("MLX5_CORE"));
    assert!(why("MLX5_CORE").ends_with("build in as well: VXLAN\n"), "{}", why("MLX5_CORE"));
}

#[test]
fn a_module_without_a_prompt_is_followed_to_the_symbol_that_decides_it() {
    // PTP_1588_CLOCK as a module: PTP_1588_CLOCK_OPTIONAL, which has no prompt, follows it to m,
    // and every driver that depends on it with it; the fix names PTP_1588_CLOCK.
    let dir = tempfile::tempdir().expect("tempdir");
    let fragment = fragment_of(&config_with_extra(dir.path(), &["PTP_1588_CLOCK=m"]));
    assert!(fragment.contains("\nCONFIG_PTP_1588_CLOCK=m\n"), "{fragment}");
    let lost = not_built_in(&fragment);
    let names: Vec<&str> = lost.iter().map(|(s, _)| s.as_str()).collect();
    assert!(names.contains(&"IGB") && names.contains(&"TIGON3") && names.contains(&"MLX5_CORE"), "{names:?}");
    for (symbol, why) in &lost {
        assert!(why.contains("PTP_1588_CLOCK_OPTIONAL=m") && why.ends_with("build in as well: PTP_1588_CLOCK\n"), "{symbol}:\n{why}");
    }
}
