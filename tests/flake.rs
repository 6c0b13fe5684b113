//! The Nix layer (flake.nix, nix/*.nix, checks/*.nix), evaluated and built for real with Debian's
//! Nix 2.8: nixpkgs' real lib (a copy of the nixpkgs.lib mirror, $NIXPKGS_LIB; .ci/run sets it to
//! ../shared/nixpkgs-lib) and, for the package set, the stand-in nixpkgs of
//! tests/nix/stand-in-nixpkgs (nixpkgs itself cannot be fetched here). The stand-in provides the
//! nixpkgs interfaces the layer uses, each checked against nixpkgs' source (its interfaces.nix is
//! the one list), and builds them with Debian's programs, Debian's GRUB and the nixos-pxe binary
//! this `cargo test` built. So the derivations here are the flake's own, built in Nix's sandbox;
//! what they are built from is the stand-in's (a placeholder instead of a compiled kernel, Debian
//! programs instead of nixpkgs' packages, the stand-in NixOS's system instead of a NixOS one).
//!
//! Not covered here: nix/package.nix's `src` (lib.fileset.toSource needs builtins.readFileType,
//! Nix 2.14 or newer, and Debian's Nix is 2.8; the stand-in's buildRustPackage never forces src),
//! compiling the tool with nixpkgs' Rust, nixpkgs' kernel build, and the VM check's run: those run
//! where nixpkgs is, with `nix flake check`.

mod common;
mod switches;

use common::{Boot, GRUB_BIOS_LIB, GRUB_LIB, Lab, Qemu, in_order, nixos_pxe, root, run};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

/// The settings Debian's Nix needs here as root (shared/notes/nix-on-this-machine.md): no nixbld
/// group, no reachable binary cache, and the sandbox with Debian's directories in it, which the
/// stand-in's builders run. Import from derivation is refused, as Hydra's default does: every
/// evaluation below (every package and check, both flakes) must read no built file.
const NIX_CONFIG: &str = "build-users-group =\n\
                          substituters =\n\
                          sandbox = true\n\
                          extra-sandbox-paths = /usr /bin /lib /lib64 /etc\n\
                          allow-import-from-derivation = false\n";
const SYSTEM: &str = "x86_64-linux";

/// What the tests share, made once per run in target/tmp/flake: a copy of the repository's files
/// (what a fresh clone has), the machine inputs of the stand-in and a flake of another
/// repository that uses this one.
struct Fixture {
    /// The files `git ls-files` lists, copied (the work tree's target/ would be copied into the
    /// store with a `path:` flake of the work tree itself).
    repo: PathBuf,
    /// nixpkgs' lib, from $NIXPKGS_LIB.
    nixpkgs_lib: PathBuf,
    /// The stand-in's `machine` input: this build's nixos-pxe and facts.json.
    machine: PathBuf,
    /// The same with a rustc older than Cargo.toml's rust-version.
    old_rustc: PathBuf,
    /// Another repository's flake: `inputs.nixos-pxe.url = "path:<repo>"`.
    consumer: PathBuf,
    /// The TFTP root the consumer's installer names (bootServer.tftpRoot).
    tftp_root: PathBuf,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// The fixture, made by the first test that asks; None (the test returns) when what the tests need
/// is missing and NIXOS_PXE_ALLOW_SKIP=1, otherwise such a test fails saying what is missing.
fn fixture() -> Option<&'static Fixture> {
    let Some(dir) = std::env::var_os("NIXPKGS_LIB") else {
        switches::skip_or_fail(
            "NIXPKGS_LIB is not set: it names a copy of nixpkgs' lib (the nixpkgs.lib mirror, with lib/default.nix); \
             .ci/run sets it to ../shared/nixpkgs-lib. Run: NIXPKGS_LIB=/path/to/nixpkgs-lib cargo test --test flake",
        );
        return None;
    };
    let nixpkgs_lib = PathBuf::from(dir);
    if !nixpkgs_lib.join("lib/default.nix").is_file() {
        switches::skip_or_fail(&format!(
            "NIXPKGS_LIB={} has no lib/default.nix: it must name a copy of nixpkgs' lib (the nixpkgs.lib mirror)",
            nixpkgs_lib.display()
        ));
        return None;
    }
    if Command::new("nix").arg("--version").output().is_err() {
        switches::skip_or_fail("`nix --version` does not run: nix is not installed (apt-get install nix-bin)");
        return None;
    }
    Some(FIXTURE.get_or_init(|| make_fixture(&nixpkgs_lib)))
}

fn make_fixture(nixpkgs_lib: &Path) -> Fixture {
    let nixpkgs_lib = nixpkgs_lib.canonicalize().expect("canonical NIXPKGS_LIB");

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("flake");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir target/tmp/flake");

    let repo = dir.join("repo");
    copy_tracked_files(root(), &repo);

    let rustc = run(Command::new("rustc").arg("--version"));
    let rustc_version = rustc.split_whitespace().nth(1).expect("rustc --version: rustc X.Y.Z ...").to_string();
    // The stand-in's kernel source: Debian's linux-source-6.1, named with its Debian version (the
    // store keeps the extracted Kconfig parts under that name).
    let linux_source = serde_json::json!({ "tarball": LINUX_SOURCE, "version": linux_source_version() });
    let machine = make_machine(&dir.join("machine"), None, serde_json::json!({ "rustcVersion": rustc_version, "linuxSource": linux_source }));
    let old_rustc = make_machine(
        &dir.join("machine-old-rustc"),
        Some(&machine),
        serde_json::json!({ "rustcVersion": "1.86.0", "linuxSource": linux_source }),
    );

    let tftp_root = dir.join("tftp");
    std::fs::create_dir_all(tftp_root.join("nixos")).expect("mkdir tftp");
    let consumer = dir.join("consumer");
    write_consumer_flake(&consumer, &repo, &tftp_root);

    Fixture { repo, nixpkgs_lib, machine, old_rustc, consumer, tftp_root }
}

/// Debian's kernel source, which the stand-in's linuxPackages.kernel.src is made from.
const LINUX_SOURCE: &str = "/usr/src/linux-source-6.1.tar.xz";

/// linux-source-6.1's Debian version (the fixture fails saying how to install it if it is absent).
fn linux_source_version() -> String {
    assert!(
        Path::new(LINUX_SOURCE).is_file(),
        "{LINUX_SOURCE} is missing: the stand-in's kernel source is Debian's (apt-get install linux-source-6.1; dev/packages.txt's test group)"
    );
    let version = run(Command::new("dpkg-query").args(["-W", "-f=${Version}", "linux-source-6.1"]));
    assert!(!version.is_empty() && version.bytes().all(|b| b.is_ascii_alphanumeric() || b".+-~".contains(&b)), "dpkg-query: {version:?}");
    version
}

/// Copies the files `git ls-files --cached --others --exclude-standard` lists (tracked and new,
/// not ignored) from `from` to `to`, keeping modes and symbolic links.
fn copy_tracked_files(from: &Path, to: &Path) {
    let list = run(Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(from));
    for file in list.split('\0').filter(|f| !f.is_empty()) {
        let source = from.join(file);
        let Ok(meta) = std::fs::symlink_metadata(&source) else { continue }; // deleted, not yet staged
        let target = to.join(file);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        if meta.file_type().is_symlink() {
            let link = std::fs::read_link(&source).expect("readlink");
            std::os::unix::fs::symlink(link, &target).expect("symlink");
        } else {
            std::fs::copy(&source, &target).unwrap_or_else(|e| panic!("copy {file}: {e}"));
        }
    }
}

/// A `machine` input for the stand-in: the nixos-pxe binary (hard-linked from `like`'s, or this
/// build's without its debug information, which every run would otherwise add to the Nix store
/// as 90 MB), the nix-format binary (the flake's formatter, tests/common/nix_format.rs) and
/// facts.json.
fn make_machine(dir: &Path, like: Option<&Path>, facts: Value) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir machine");
    let binary = dir.join("nixos-pxe");
    let formatter = dir.join("nix-format");
    match like {
        Some(other) => {
            std::fs::hard_link(other.join("nixos-pxe"), &binary).expect("link nixos-pxe");
            std::fs::hard_link(other.join("nix-format"), &formatter).expect("link nix-format");
        }
        None => {
            run(Command::new("strip").arg("--strip-debug").arg("-o").arg(&binary).arg(env!("CARGO_BIN_EXE_nixos-pxe")));
            std::fs::copy(common::nix_format::binary(), &formatter).expect("copy nix-format");
        }
    }
    std::fs::write(dir.join("facts.json"), facts.to_string()).expect("write facts.json");
    dir.to_owned()
}

/// The flake of a repository that uses nixos-pxe the way the README shows: nixos-pxe as an input
/// following its nixpkgs, lib.mkInstaller with a file that is part of a larger NixOS
/// configuration, a target from its own nixosConfigurations. Its other outputs are the cases the
/// tests below look at.
fn write_consumer_flake(dir: &Path, repo: &Path, tftp_root: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir consumer");
    let flake = r#"{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
  inputs.nixos-pxe.url = "path:@REPO@";
  inputs.nixos-pxe.inputs.nixpkgs.follows = "nixpkgs";

  outputs = { self, nixpkgs, nixos-pxe }:
    let
      system = "x86_64-linux";
      installerWith = modules: nixos-pxe.lib.mkInstaller {
        inherit nixpkgs system modules;
        targetSystem = self.nixosConfigurations.web1;
      };
      # A caller that also lists the NixOS module (which imports nix/module.nix again).
      installer = installerWith [ ./installer.nix nixos-pxe.nixosModules.default ];
    in
    {
      nixosConfigurations.web1 = nixpkgs.lib.nixosSystem { modules = [ ./web1.nix ]; };
      packages.${system} = { inherit (installer) bootLoader kernel tarball systemImage serverConfigs kernelFragment configJSON; };
      installerConfig = installer.config;
      # services.nixos-pxe.package as the flake's nixosModules.server sets it on a server of
      # `system` (the module function called with that much of NixOS's arguments).
      serverPackageFor = system: (nixos-pxe.nixosModules.server {
        config.services.nixos-pxe.fleet.tool = "the fleet's tool";
        lib = nixpkgs.lib;
        pkgs.stdenv.hostPlatform.system = system;
      }).services.nixos-pxe.package;
      ownPackages = nixos-pxe.packages;
      # A driver without what it depends on (QED), and a symbol no kernel has.
      missingDriver = installerWith [ ./installer.nix { nfsroot.extraKernelOptions = [ "QEDE" "NIXOS_PXE_NO_SUCH_SYMBOL" ]; } ];

      typo = (installerWith [ ./installer.nix { nfsroot.bootloader.timeout = 3; } ]).configJSON;
      failedCheck = (installerWith [ ./installer.nix { customInstaller.networking.useDHCP = false; } ]).configJSON;
      # The other writable layer: its tools include unionfs-fuse.
      unionfsTarball = (installerWith [ ./installer.nix { nfsroot.writableLayer = "unionfs-fuse"; } ]).tarball;
      # customInstaller.firmware: the target systems (one per layout the image holds) and the image.
      withFirmware = firmware: installerWith [ ./installer.nix { customInstaller.firmware = firmware; } ];
      autoSystemImage = (installerWith [ ./installer.nix { customInstaller.firmware = "auto"; } ]).systemImage;
      # A target that brings its own systemd-boot, installed with firmware = "bios".
      systemdBootForBios = (nixos-pxe.lib.mkInstaller {
        inherit nixpkgs system;
        modules = [ ./installer.nix { customInstaller.firmware = "bios"; } ];
        targetSystem = nixpkgs.lib.nixosSystem { modules = [ ./web1.nix { boot.loader.systemd-boot.enable = true; } ]; };
      }).target.config.system.build.toplevel;

      # The NixOS module in a NixOS system: its checks are NixOS assertions.
      nixosWithModule = extra: (nixpkgs.lib.nixosSystem {
        modules = [ nixos-pxe.nixosModules.default ./installer.nix extra ];
      }).config.system.build;
      # What the filter of the old nix/mk-installer.nix read: every NixOS assertion's message.
      assertionMessages = map (a: a.message) (nixpkgs.lib.nixosSystem { modules = [ ./web1.nix ]; }).config.assertions;

      # lib.mkFleet (fleet.nix): web1 and web2 have web1's system (a nixosConfigurations entry),
      # db1 its own from a directory. `extraHosts` and `modules` are the cases the tests look at.
      fleetWith = { modules ? [ ], extraHosts ? { } }: nixos-pxe.lib.mkFleet {
        inherit nixpkgs system;
        modules = [ ./fleet.nix ] ++ modules;
        hosts = { web1 = self.nixosConfigurations.web1; web2 = self.nixosConfigurations.web1; } // extraHosts;
      };
      fleet = self.fleetWith { };
      # A fleet whose hosts override customInstaller.firmware: web2 (web1's configuration) for
      # legacy BIOS, db1 "auto" (a system for each firmware).
      fleetFirmware = self.fleetWith { modules = [ { fleet.hosts.web2.customInstaller.firmware = "bios"; fleet.hosts.db1.customInstaller.firmware = "auto"; } ]; };
      # A fleet's file given to lib.mkInstaller.
      fleetAsInstaller = (installerWith [ ./fleet.nix ]).configJSON;

      # Secure Boot (secure-boot.nix): the fleet's unsigned parts, and services.nixos-pxe on a
      # boot server signing them in nixos-pxe-sign.service before serve.
      sbFleet = self.fleetWith { modules = [ ./secure-boot.nix ]; };
      sbInstaller = installerWith [ ./installer.nix ./secure-boot.nix ];
      sbServer = nixpkgs.lib.nixosSystem {
        modules = [
          nixos-pxe.nixosModules.server
          { boot.loader.grub.device = "/dev/sda"; services.nixos-pxe = { enable = true; fleet = self.sbFleet; }; }
        ];
      };
      # The two units as JSON; building it builds every path they name.
      sbUnits = nixpkgs.legacyPackages.${system}.writeText "secure-boot-units.json" (builtins.toJSON {
        sign = { inherit (self.sbServer.config.systemd.services.nixos-pxe-sign) serviceConfig path requiredBy before; };
        serve = { inherit (self.sbServer.config.systemd.services.nixos-pxe) serviceConfig after; };
        failed = map (a: a.message) (builtins.filter (a: !a.assertion) self.sbServer.config.assertions);
      });
    };
}
"#
    .replace("@REPO@", repo.to_str().expect("utf-8 path"));
    std::fs::write(dir.join("flake.nix"), flake).expect("write flake.nix");
    let installer = r#"# Part of a larger NixOS configuration: the boot server's own settings beside the installer's.
{ config, lib, pkgs, modulesPath, ... }:
{
  imports = [ (modulesPath + "/profiles/all-hardware.nix") ];
  networking.hostName = "pxe-server";
  networking.domain = "lab.test";
  services.openssh.enable = true;
  environment.etc."motd".source = pkgs.writeText "motd" "boot server";
  networking.firewall.enable = lib.mkDefault false;

  bootServer = {
    address = "10.42.0.1";
    interface = "br0";
    subnet = "10.42.0.0/24";
    dhcpRange.start = "10.42.0.100";
    dhcpRange.end = "10.42.0.199";
    domainName = config.networking.domain;
    tftpRoot = "@TFTP@";
  };
  nfsroot.extraKernelOptions = [ "NR_CPUS=512" ];
  customInstaller.rootDevice = "/dev/vda";
}
"#
    .replace("@TFTP@", tftp_root.to_str().expect("utf-8 path"));
    std::fs::write(dir.join("installer.nix"), installer).expect("write installer.nix");
    std::fs::write(
        dir.join("web1.nix"),
        "{ ... }: { networking.hostName = \"web1\"; system.stateVersion = \"25.11\"; }\n",
    )
    .expect("write web1.nix");
    let fleet = r#"# A fleet of three hosts: MACs in several spellings, per-host overrides, two systems.
{
  nfsroot.bootLoader = { efinetDHCPInterface = "auto"; linuxPnPInterface = "auto"; };
  bootServer = {
    address = "10.42.0.1";
    interface = "br0";
    subnet = "10.42.0.0/24";
    dhcpRange.start = "10.42.0.100";
    dhcpRange.end = "10.42.0.199";
    nfsMountOptions = "vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock";
  };
  customInstaller.rootDevice = "/dev/vda";
  fleet.hosts = {
    web1.macs = [ "52:54:00:AB:CD:01" ];
    web2 = { macs = [ "52-54-00-ab-cd-02" ]; generation = 2; customInstaller.wipe = "always"; };
    db1 = {
      macs = [ "5254.00ab.cd03" "525400abcd04" ];
      target.directory = ./db1;
      # rootDevice as the top level's: not an override.
      customInstaller = { swapSizeMiB = 1024; rootDevice = "/dev/vda"; };
    };
  };
}
"#;
    std::fs::write(dir.join("fleet.nix"), fleet).expect("write fleet.nix");
    let secure_boot = r#"# The site's db key and certificate on the boot server, never in the store.
{
  bootServer.secureBoot = {
    enable = true;
    keyFile = "/etc/nixos-pxe/db.key";
    certificateFile = "/etc/nixos-pxe/db.pem";
  };
  customInstaller.firmware = "uefi";
}
"#;
    std::fs::write(dir.join("secure-boot.nix"), secure_boot).expect("write secure-boot.nix");
    std::fs::create_dir_all(dir.join("db1")).expect("mkdir db1");
    std::fs::write(
        dir.join("db1/configuration.nix"),
        "{ ... }: { networking.hostName = \"db1\"; system.stateVersion = \"25.11\"; }\n",
    )
    .expect("write db1/configuration.nix");
}

/// Which flake a command is about, and which `machine` the stand-in gets.
#[derive(Clone, Copy)]
enum Flake<'a> {
    /// This repository's flake.
    Repo,
    /// The other repository's flake.
    Consumer,
    /// A copy of this repository's flake that a test changed.
    Changed(&'a Path),
}

/// `nix <args> <flake>#<attr>` with the stand-in nixpkgs, nixpkgs' lib and `machine` put in
/// through --override-input; the lock file is never written.
fn nix(f: &Fixture, subcommand: &[&str], flake: Flake, attr: &str, machine: &Path) -> Output {
    let stand_in = f.repo.join("tests/nix/stand-in-nixpkgs");
    let reference = match flake {
        Flake::Repo => format!("path:{}#{attr}", f.repo.display()),
        Flake::Consumer => format!("path:{}#{attr}", f.consumer.display()),
        Flake::Changed(dir) => format!("path:{}#{attr}", dir.display()),
    };
    Command::new("nix")
        .env("NIX_CONFIG", NIX_CONFIG)
        .args(["--extra-experimental-features", "nix-command flakes"])
        .args(subcommand)
        .args(["--option", "eval-cache", "false", "--no-write-lock-file"])
        .arg("--override-input").arg("nixpkgs").arg(format!("path:{}", stand_in.display()))
        .arg("--override-input").arg("nixpkgs/lib").arg(format!("path:{}", f.nixpkgs_lib.display()))
        .arg("--override-input").arg("nixpkgs/machine").arg(format!("path:{}", machine.display()))
        .arg(&reference)
        .output()
        .expect("run nix (Debian's nix-bin)")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `nix eval --json`; fails the test with Nix's message unless it succeeds.
fn eval(f: &Fixture, flake: Flake, attr: &str, apply: Option<&str>) -> (Value, String) {
    let mut args = vec!["eval", "--json"];
    if let Some(apply) = apply {
        args.extend(["--apply", apply]);
    }
    let out = nix(f, &args, flake, attr, &f.machine);
    assert!(out.status.success(), "nix eval {attr} failed:\n{}", stderr(&out));
    (serde_json::from_slice(&out.stdout).expect("nix eval --json prints JSON"), stderr(&out))
}

/// `nix build`; returns the output path, or fails the test with Nix's message.
fn build(f: &Fixture, flake: Flake, attr: &str) -> PathBuf {
    let out = nix(f, &["build", "--no-link", "--json"], flake, attr, &f.machine);
    assert!(out.status.success(), "nix build {attr} failed:\n{}", stderr(&out));
    let built: Value = serde_json::from_slice(&out.stdout).expect("nix build --json prints JSON");
    PathBuf::from(built[0]["outputs"]["out"].as_str().expect("an out path"))
}

/// The stand-in's list of interfaces: { "pkgs.runCommand" = { file, commit, checked }; ... }.
fn stand_in_list(f: &Fixture) -> serde_json::Map<String, Value> {
    let out = Command::new("nix")
        .env("NIX_CONFIG", NIX_CONFIG)
        .args(["--extra-experimental-features", "nix-command flakes", "eval", "--json", "--no-write-lock-file"])
        .arg("--override-input").arg("lib").arg(format!("path:{}", f.nixpkgs_lib.display()))
        .arg("--override-input").arg("machine").arg(format!("path:{}", f.machine.display()))
        .arg(format!("path:{}#standIn.interfaces", f.repo.join("tests/nix/stand-in-nixpkgs").display()))
        .output()
        .expect("run nix");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout).expect("JSON").as_object().expect("an attribute set").clone()
}

/// Every packages.* and checks.* attribute (and devShells.*, formatter.*) of the flake, enumerated
/// from the flake itself, evaluates to a derivation, for x86_64-linux and aarch64-linux (the tool,
/// services.nixos-pxe's package and the checks that need no x86-64 client), with import from
/// derivation refused (NIX_CONFIG). Evaluating them all forces every nixpkgs attribute the layer
/// uses; the stand-in traces each it provides when forced, and that set must be the stand-in's
/// whole list: no entry the layer does not use.
#[test]
fn every_package_and_check_is_a_derivation_and_the_stand_in_provides_exactly_what_they_use() {
    let Some(f) = fixture() else { return };
    let apply = "outputs: builtins.mapAttrs (system: builtins.mapAttrs (name: d: { type = d.type or null; drvPath = d.drvPath or null; })) outputs";
    let mut used = BTreeSet::new();
    let mut names = Vec::new();
    // formatter.<system> is one derivation: seen as a set holding it.
    let formatter_apply = "outputs: builtins.mapAttrs (system: d: { formatter = { type = d.type or null; drvPath = d.drvPath or null; }; }) outputs";
    for output in ["packages", "checks", "devShells", "formatter"] {
        let (value, log) = eval(f, Flake::Repo, output, Some(if output == "formatter" { formatter_apply } else { apply }));
        let systems = value.as_object().expect("an attribute set of systems");
        assert!(systems.contains_key(SYSTEM), "{output} has {SYSTEM}: {value}");
        if output != "devShells" {
            assert!(systems.contains_key("aarch64-linux"), "{output} has aarch64-linux (an ARM boot server): {value}");
        }
        for (system, attrs) in systems {
            let attrs = attrs.as_object().expect("an attribute set");
            assert!(!attrs.is_empty(), "{output}.{system} is empty");
            for (name, d) in attrs {
                assert_eq!(d["type"], "derivation", "{output}.{system}.{name} is not a derivation: {d}");
                let drv = d["drvPath"].as_str().unwrap_or_default();
                assert!(drv.starts_with("/nix/store/") && drv.ends_with(".drv"), "{output}.{system}.{name}: {d}");
                names.push(format!("{output}.{system}.{name}"));
            }
        }
        used.extend(traced(&log));
    }
    // What the example does not reach: the unionfs-fuse writable layer, in the other flake.
    let (drv, log) = eval(f, Flake::Consumer, "unionfsTarball.drvPath", None);
    assert!(drv.as_str().is_some_and(|d| d.ends_with(".drv")), "{drv}");
    used.extend(traced(&log));
    // Nor Secure Boot mode: its parts and services.nixos-pxe's signing unit.
    let (drv, log) = eval(f, Flake::Consumer, "sbUnits.drvPath", None);
    assert!(drv.as_str().is_some_and(|d| d.ends_with(".drv")), "{drv}");
    used.extend(traced(&log));
    eprintln!("evaluated to derivations: {}", names.join(" "));

    let listed: BTreeSet<String> = stand_in_list(f).keys().filter(|k| k.starts_with("pkgs.")).cloned().collect();
    let used_pkgs: BTreeSet<String> = used.iter().filter(|u| u.starts_with("pkgs.")).cloned().collect();
    assert_eq!(
        listed.difference(&used_pkgs).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "the stand-in provides nixpkgs attributes the flake's outputs do not use"
    );
    assert_eq!(used_pkgs.difference(&listed).collect::<Vec<_>>(), Vec::<&String>::new());
    assert!(used.contains("lib.nixosSystem"), "the target system goes through lib.nixosSystem: {used:?}");
}

/// The stand-in attributes an evaluation forced, from its trace lines.
fn traced(log: &str) -> Vec<String> {
    log.lines().filter_map(|l| l.strip_prefix("trace: stand-in nixpkgs: used ")).map(str::to_string).collect()
}

/// Each entry of the list names the nixpkgs file and the commit it was read or found at.
#[test]
fn the_stand_in_list_names_a_nixpkgs_file_and_commit_for_every_entry() {
    let Some(f) = fixture() else { return };
    let list = stand_in_list(f);
    assert!(list.len() > 30, "{list:?}");

    for (name, entry) in &list {
        let file = entry["file"].as_str().unwrap_or_default();
        assert!(!file.is_empty(), "{name}: no file");
        let commits = entry["commit"].as_str().unwrap_or_default();
        assert!(
            commits.split(", ").all(is_commit_id),
            "{name}: `{commits}` is not one or more 40-digit commits"
        );
        assert!(matches!(entry["checked"].as_str(), Some("read" | "found")), "{name}: {entry}");
    }
}

/// Whether `c` is a full git commit id (40 lowercase hex digits).
fn is_commit_id(c: &str) -> bool {
    c.len() == 40 && c.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// checks.formatting, built: the flake's formatter (nix-format; here the stand-in's
/// buildRustPackage gives it the binary the tests built from nix-format/ and its lock file) checks
/// every Nix file of the flake's source, with no list of exceptions, and all are formatted. The
/// formatter's source is the crate's files, without a target/ a local build left.
#[test]
fn the_formatting_check_checks_every_nix_file_and_passes() {
    let Some(f) = fixture() else { return };
    let out = build(f, Flake::Repo, "checks.x86_64-linux.formatting");
    let checked: BTreeSet<String> = std::fs::read_to_string(&out).expect("the check's output").lines().map(str::to_string).collect();
    let listed = run(Command::new("git").args(["ls-files", "--cached", "--others", "--exclude-standard", "--", "*.nix"]).current_dir(root()));
    let listed: BTreeSet<String> = listed.lines().filter(|file| root().join(file).exists()).map(str::to_string).collect();
    assert!(listed.len() > 50, "{listed:?}");
    assert_eq!(checked, listed, "checks.formatting checked other files than the repository's Nix files");
    assert!(!root().join("nix/nixfmt-pending.txt").exists(), "no file is exempt");

    let (program, _) = eval(f, Flake::Repo, "formatter.x86_64-linux.meta.mainProgram", None);
    assert_eq!(program, "nix-format");
    let (files, _) = eval(f, Flake::Repo, "formatter.x86_64-linux.src", Some("src: builtins.attrNames (builtins.readDir src)"));
    assert_eq!(files, serde_json::json!(["Cargo.lock", "Cargo.toml", "src"]), "nix-format's source in the flake");
}

/// The check fails on a Nix file out of style, a changed one and a new one (no list of files to
/// keep up), naming both; `nix fmt` (the flake's formatter) formats them, and then the check
/// passes. On a copy of the repository, so the repository itself stays formatted.
#[test]
fn the_formatting_check_fails_on_an_unformatted_file_and_nix_fmt_formats_it() {
    let Some(f) = fixture() else { return };
    // Outside the work tree: `nix fmt` takes the flake of its directory, and below a git work tree
    // that is the git repository's, without files git does not track.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("repo");
    run(Command::new("cp").arg("-a").arg(&f.repo).arg(&copy));
    // flake.nix with one line indented too far (the same Nix), and a new file in a new directory.
    let flake = std::fs::read_to_string(copy.join("flake.nix")).expect("flake.nix");
    let line = "\n  inputs.nixpkgs.url = ";
    assert_eq!(flake.matches(line).count(), 1, "flake.nix has one {line:?}");
    std::fs::write(copy.join("flake.nix"), flake.replace(line, "\n      inputs.nixpkgs.url = ")).expect("write flake.nix");
    std::fs::create_dir_all(copy.join("checks/new")).expect("mkdir");
    std::fs::write(copy.join("checks/new/host.nix"), "{ networking.hostName=\"new\"; }\n").expect("write");

    let attr = "checks.x86_64-linux.formatting";
    let out = nix(f, &["build", "--no-link"], Flake::Changed(&copy), attr, &f.machine);
    let log = stderr(&out);
    assert!(!out.status.success(), "the check passed on unformatted files:\n{log}");
    for file in ["flake.nix", "checks/new/host.nix"] {
        assert!(log.contains(&format!("{file}: not formatted")), "the check does not name {file}:\n{log}");
    }

    // `nix fmt` in the copy: the flake's formatter on its files.
    let out = Command::new("nix")
        .env("NIX_CONFIG", NIX_CONFIG)
        .args(["--extra-experimental-features", "nix-command flakes", "fmt", "--no-write-lock-file"])
        .arg("--override-input").arg("nixpkgs").arg(format!("path:{}", copy.join("tests/nix/stand-in-nixpkgs").display()))
        .arg("--override-input").arg("nixpkgs/lib").arg(format!("path:{}", f.nixpkgs_lib.display()))
        .arg("--override-input").arg("nixpkgs/machine").arg(format!("path:{}", f.machine.display()))
        .current_dir(&copy)
        .output()
        .expect("run nix fmt");
    assert!(out.status.success(), "nix fmt failed:\n{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(copy.join("flake.nix")).expect("flake.nix"), flake, "nix fmt restored flake.nix");
    assert_eq!(std::fs::read_to_string(copy.join("checks/new/host.nix")).expect("host.nix"), "{networking.hostName = \"new\";}\n");
    let out = nix(f, &["build", "--no-link"], Flake::Changed(&copy), attr, &f.machine);
    assert!(out.status.success(), "the check failed after nix fmt:\n{}", stderr(&out));
}

/// services.nixos-pxe.package defaults (mkDefault) to this flake's own package for the server's
/// system: an ARM boot server gets the aarch64-linux tool, not the x86-64 one the fleet's files
/// were made with; a system the flake does not package falls back to the fleet's tool.
#[test]
fn the_server_module_runs_the_flakes_own_package_for_the_servers_system() {
    let Some(f) = fixture() else { return };
    let (given, _) = eval(
        f,
        Flake::Consumer,
        "serverPackageFor",
        Some("p: { arm = (p \"aarch64-linux\").content.drvPath; x86 = (p \"x86_64-linux\").content.drvPath; other = (p \"riscv64-linux\").content; priority = (p \"aarch64-linux\").priority; }"),
    );
    let (own, _) = eval(f, Flake::Consumer, "ownPackages", Some("p: { arm = p.aarch64-linux.nixos-pxe.drvPath; x86 = p.x86_64-linux.nixos-pxe.drvPath; }"));
    assert_eq!((given["arm"].clone(), given["x86"].clone()), (own["arm"].clone(), own["x86"].clone()), "{given} {own}");
    assert_ne!(own["arm"], own["x86"]);
    assert_eq!(given["other"], "the fleet's tool");
    assert_eq!(given["priority"], 1000, "a default the configuration can override (mkDefault)");
}

/// The flake's boot loader, built with Debian's GRUB through the flake, is the seed's result/.
#[test]
fn boot_loader_builds_from_the_flake() {
    let Some(f) = fixture() else { return };
    let out = build(f, Flake::Repo, "bootLoader");
    let efi = std::fs::read(out.join("bootx64.efi")).expect("bootx64.efi");
    assert_eq!(&efi[..2], b"MZ", "bootx64.efi is a PE image");
    // bios.0 from nixpkgs' grub2 (the stand-in: Debian's i386-pc modules): pxeboot.img in front.
    let bios = std::fs::read(out.join("bios.0")).expect("bios.0");
    let pxeboot = std::fs::read("/usr/lib/grub/i386-pc/pxeboot.img").expect("pxeboot.img (grub-pc-bin)");
    assert!(bios.len() > pxeboot.len() && bios.starts_with(&pxeboot), "bios.0 is pxeboot.img and a core image");
    assert!(out.join("grub-bios.cfg").is_file(), "grub-bios.cfg beside bios.0");
    let cfg = std::fs::read_to_string(out.join("grub.cfg")).expect("grub.cfg");
    // The same grub.cfg the tool renders from the example's file.
    let dir = tempfile::tempdir().expect("tempdir");
    nixos_pxe(&["render", "--config", "examples/seed/installer.nix", "--out", dir.path().to_str().expect("utf-8")]);
    let rendered = std::fs::read_to_string(dir.path().join("grub.cfg")).expect("rendered grub.cfg");
    assert_eq!(cfg.lines().skip_while(|l| l.starts_with('#')).collect::<Vec<_>>(), rendered.lines().skip_while(|l| l.starts_with('#')).collect::<Vec<_>>());
}

/// customInstaller.firmware on the Nix side: the image holds a system for each layout the tool's
/// firmware::built_for names (for "auto" one for UEFI and one for BIOS), and each target system
/// gets the NixOS boot loader its disk needs: systemd-boot with EFI variables for uefi; GRUB on the
/// installer's rootDevice for bios, with no ESP mounted; for both GRUB with efiSupport and
/// efiInstallAsRemovable and the ESP on /boot (the stand-in NixOS declares these options with
/// NixOS's types and repeats GRUB's assertions, so a wrong combination fails here as there).
#[test]
fn each_firmware_gets_the_nixos_boot_loader_its_disk_needs() {
    use nixos_pxe_installer::config::typed::FirmwareSetting;
    use nixos_pxe_installer::install::firmware::built_for;
    let Some(f) = fixture() else { return };
    let settings = [FirmwareSetting::Uefi, FirmwareSetting::Bios, FirmwareSetting::Both, FirmwareSetting::Auto];
    for setting in settings {
        let apply = format!(
            "f: builtins.mapAttrs (layout: t: let l = t.config.boot.loader; in {{ \
               systemdBoot = l.systemd-boot.enable; touchEfi = l.efi.canTouchEfiVariables; grub = l.grub.enable; \
               devices = l.grub.devices; efiSupport = l.grub.efiSupport; removable = l.grub.efiInstallAsRemovable; \
               boot = t.config.fileSystems ? \"/boot\"; toplevel = t.config.system.build.toplevel.drvPath; }}) (f \"{}\").targets",
            setting.as_str()
        );
        let (targets, _) = eval(f, Flake::Consumer, "withFirmware", Some(&apply));
        let targets = targets.as_object().expect("an attribute set of targets");
        let layouts: Vec<&str> = built_for(setting).iter().map(|l| l.as_str()).collect();
        let mut names: Vec<&str> = targets.keys().map(String::as_str).collect();
        let mut expected_names = layouts.clone();
        names.sort();
        expected_names.sort();
        assert_eq!(names, expected_names, "{setting:?}: the layouts the image is built for, as firmware::built_for says");
        for (layout, t) in targets {
            let got = serde_json::json!({
                "systemdBoot": t["systemdBoot"], "touchEfi": t["touchEfi"], "grub": t["grub"], "devices": t["devices"],
                "efiSupport": t["efiSupport"], "removable": t["removable"], "boot": t["boot"],
            });
            let expected = match layout.as_str() {
                "uefi" => serde_json::json!({ "systemdBoot": true, "touchEfi": true, "grub": false, "devices": [], "efiSupport": false, "removable": false, "boot": true }),
                "bios" => serde_json::json!({ "systemdBoot": false, "touchEfi": false, "grub": true, "devices": ["/dev/vda"], "efiSupport": false, "removable": false, "boot": false }),
                "both" => serde_json::json!({ "systemdBoot": false, "touchEfi": false, "grub": true, "devices": ["/dev/vda"], "efiSupport": true, "removable": true, "boot": true }),
                other => panic!("unexpected layout {other}"),
            };
            assert_eq!(got, expected, "{setting:?} {layout}");
            // The system evaluates with every assertion holding (GRUB's among them).
            assert!(t["toplevel"].as_str().is_some_and(|d| d.ends_with(".drv")), "{setting:?} {layout}: {t}");
        }
    }
}

/// firmware = "auto": the image holds both systems, each named by the file the installer reads
/// for its layout (firmware::system_file), and their closures with one registration; each
/// system's configuration (the stand-in NixOS writes it into the system) has its boot loader.
#[test]
fn an_auto_image_holds_a_system_for_each_firmware() {
    use nixos_pxe_installer::config::typed::FirmwareSetting;
    use nixos_pxe_installer::install::firmware::{Layout, system_file};
    let Some(f) = fixture() else { return };
    let image = build(f, Flake::Consumer, "autoSystemImage").join("system.tar.zst");
    let entries = tar_entries(&image, Some("zstd -d"));
    assert!(!entries.iter().any(|(_, n, _)| n == "nixos-pxe/system"), "no single system file in an auto image");
    let registration = registered(&std::fs::read_to_string(run_in_tar(&image, "nixos-pxe/registration")).expect("registration"));
    for (layout, boot_loader) in [(Layout::Uefi, "systemd-boot"), (Layout::Bios, "grub")] {
        let file = system_file(FirmwareSetting::Auto, layout);
        let system = std::fs::read_to_string(run_in_tar(&image, &file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let system = system.trim();
        assert!(system.starts_with("/nix/store/") && system.contains("nixos-system-web1"), "{file}: {system}");
        assert!(registration.contains_key(system), "{system} is registered");
        let configuration: Value = serde_json::from_str(&std::fs::read_to_string(Path::new(system).join("configuration.json")).expect("configuration.json")).expect("JSON");
        let loader = &configuration["boot"]["loader"];
        match boot_loader {
            "systemd-boot" => assert_eq!((loader["systemd-boot"]["enable"].as_bool(), loader["grub"]["enable"].as_bool()), (Some(true), Some(false)), "{loader}"),
            _ => assert_eq!((loader["grub"]["enable"].as_bool(), loader["grub"]["devices"].clone()), (Some(true), serde_json::json!(["/dev/vda"])), "{loader}"),
        }
    }
}

/// A target system that enables systemd-boot itself cannot be installed on a BIOS disk: the
/// evaluation stops with nixos-pxe's message, not with a conflict of NixOS's defaults.
#[test]
fn a_target_with_its_own_systemd_boot_is_refused_for_bios() {
    let Some(f) = fixture() else { return };
    let out = nix(f, &["eval", "--raw", "--apply", "t: t.drvPath"], Flake::Consumer, "systemdBootForBios", &f.machine);
    let log = stderr(&out);
    assert!(!out.status.success(), "a bios install of a systemd-boot target evaluated");
    assert!(log.contains("Failed assertions:") && log.contains("nixos-pxe: customInstaller.firmware gives this system a disk laid out for bios") && log.contains("enables systemd-boot"), "{log}");
}

/// serverConfigs: every file `nixos-pxe render` writes, from the example's options.
#[test]
fn server_configs_build_from_the_flake() {
    let Some(f) = fixture() else { return };
    let out = build(f, Flake::Repo, "serverConfigs");
    for file in ["grub.cfg", "cmdline", "dhcpd.conf", "kea-dhcp4.json", "dnsmasq.conf", "exports", "ganesha.conf"] {
        assert!(out.join(file).is_file(), "serverConfigs lacks {file}");
    }
    let cmdline = std::fs::read_to_string(out.join("cmdline")).expect("cmdline");
    assert!(cmdline.contains("root=/dev/nfs") && cmdline.contains("init=/init"), "{cmdline}");
}

/// The fragment derivation is the tool's fragment (kconfig lines) for the installer's options. The
/// .config derivation (nix/kernel.nix running nix/kernel-config.sh: defconfig, the fragment merged,
/// olddefconfig, the check) runs Kconfig for real on the stand-in's source, Debian's
/// linux-source-6.1: every `y` of the fragment is =y in it, a value (NR_CPUS=512) is kept, and
/// what the fragment leaves open keeps defconfig's default, not a module (a dozen =m where
/// nixpkgs' autoModules made thousands). linuxManualConfig gets that .config and nixpkgs' kernel
/// source, and is not told to read the .config at evaluation time; checks.kernel-config is the
/// example's .config.
#[test]
fn the_kernel_is_built_from_a_config_of_its_own_with_every_built_in_symbol() {
    let Some(f) = fixture() else { return };
    let fragment = std::fs::read_to_string(build(f, Flake::Consumer, "packages.x86_64-linux.kernelFragment")).expect("fragment");
    assert!(fragment.contains("\nCONFIG_NR_CPUS=512\n"), "extraKernelOptions reach the fragment:\n{fragment}");
    let config_json = build(f, Flake::Consumer, "packages.x86_64-linux.configJSON");
    let tool = nixos_pxe(&["kernel-config", "--config", config_json.to_str().expect("utf-8")]);
    assert_eq!(fragment, tool, "the fragment derivation is the tool's fragment for the installer's options");

    let kernel = build(f, Flake::Consumer, "packages.x86_64-linux.kernel");
    assert!(kernel.join("bzImage").exists(), "kernel/bzImage");
    let config = std::fs::read_to_string(kernel.join("config")).expect("kernel/config");
    assert_built_in(&fragment, &config);
    assert!(config.lines().any(|l| l == "CONFIG_NR_CPUS=512"), "NR_CPUS=512 kept");
    let modules = config.lines().filter(|l| l.ends_with("=m")).count();
    assert!(modules < 50, "{modules} symbols =m: what the fragment leaves open should keep defconfig's default");

    let (given, _) = eval(
        f,
        Flake::Consumer,
        "packages.x86_64-linux.kernel",
        Some("k: { configfile = k.kernelPackage.configfile.drvPath; ownConfig = k.configfile.drvPath; \
              src = k.kernelPackage.passthru.src.name; ifd = k.kernelPackage.passthru.allowImportFromDerivation; \
              config = k.kernelPackage.passthru.config; }"),
    );
    assert_eq!(given["configfile"], given["ownConfig"], "linuxManualConfig builds the .config of nix/kernel.nix");
    assert!(given["src"].as_str().is_some_and(|n| n.starts_with("linux-source-") && n.ends_with("-kconfig-parts")), "nixpkgs' kernel source (the stand-in's): {given}");
    assert_eq!((given["ifd"].clone(), given["config"].clone()), (Value::Bool(false), serde_json::json!({})), "nothing read at evaluation time");

    // checks.kernel-config: the example's .config, every `y` of its fragment =y.
    let example_config = std::fs::read_to_string(build(f, Flake::Repo, "checks.x86_64-linux.kernel-config")).expect("the example's .config");
    let example_fragment = nixos_pxe(&["kernel-config", "--config", "examples/seed/installer.nix"]);
    assert_built_in(&example_fragment, &example_config);
}

/// Every `CONFIG_X=y` line of `fragment` is in `config`; more than 50 of them.
fn assert_built_in(fragment: &str, config: &str) {
    let wanted: Vec<&str> = fragment.lines().filter(|l| l.starts_with("CONFIG_") && l.ends_with("=y")).collect();
    assert!(wanted.len() > 50, "{fragment}");
    let lines: BTreeSet<&str> = config.lines().collect();
    let missing: Vec<&&str> = wanted.iter().filter(|l| !lines.contains(**l)).collect();
    assert!(missing.is_empty(), "not in the kernel's .config: {missing:?}");
}

/// A `y` of the fragment that Kconfig does not build in (QEDE without the QED it depends on) or
/// that the kernel does not have fails the .config, so the kernel and whatever serves it, naming
/// each symbol and what the .config has instead; Kconfig decides here, on Debian's 6.1 source.
#[test]
fn a_built_in_symbol_that_kconfig_does_not_build_in_fails_the_kernel_naming_it() {
    let Some(f) = fixture() else { return };
    for attr in ["missingDriver.kernel", "missingDriver.kernelConfigCheck"] {
        let out = nix(f, &["build", "--no-link"], Flake::Consumer, attr, &f.machine);
        let log = stderr(&out);
        assert!(!out.status.success(), "{attr} built with QEDE and a symbol the kernel lacks:\n{log}");
        assert!(log.contains("2 kernel symbols that the NFS root needs built in are not =y"), "{attr}:\n{log}");
        assert!(log.contains("QEDE: not in .config"), "{attr}:\n{log}");
        assert!(log.contains("NIXOS_PXE_NO_SUCH_SYMBOL: not in .config"), "{attr}:\n{log}");
        assert!(log.contains("nixos-pxe: not built in: QEDE NIXOS_PXE_NO_SUCH_SYMBOL"), "{attr}:\n{log}");
    }
}

/// Paths inside a tar archive (`tar -t`, leading ./ dropped) with their kinds.
fn tar_entries(archive: &Path, decompress: Option<&str>) -> Vec<(char, String, String)> {
    let mut cmd = Command::new("tar");
    if let Some(filter) = decompress {
        cmd.arg(format!("--use-compress-program={filter}"));
    }
    let listing = run(cmd.arg("-tvf").arg(archive));
    listing
        .lines()
        .map(|line| {
            let kind = line.chars().next().expect("a mode");
            // tar -tv: MODE OWNER SIZE DATE TIME NAME [-> TARGET]
            let mut rest = line;
            for _ in 0..5 {
                rest = rest.trim_start();
                rest = &rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..];
            }
            let (name, target) = rest.trim_start().split_once(" -> ").unwrap_or((rest.trim_start(), ""));
            (kind, name.trim_start_matches("./").trim_end_matches('/').to_string(), target.to_string())
        })
        .collect()
}

/// The system image holds the target's closure, exactly, with its registration and the system's
/// path; the NFS root tarball is laid out as the README's "The NFS root's layout" says.
#[test]
fn system_image_and_tarball_have_the_readme_layout() {
    let Some(f) = fixture() else { return };
    let image_dir = build(f, Flake::Consumer, "packages.x86_64-linux.systemImage");
    let image = image_dir.join("system.tar.zst");
    let entries = tar_entries(&image, Some("zstd -d"));
    let system = std::fs::read_to_string(run_in_tar(&image, "nixos-pxe/system")).expect("read");
    let system = system.trim();
    assert!(system.starts_with("/nix/store/") && system.contains("nixos-system-web1"), "{system}");
    let closure: BTreeSet<String> = run(Command::new("nix-store").args(["-qR", system]))
        .lines()
        .map(|p| p.trim_start_matches('/').to_string())
        .collect();
    assert!(closure.len() >= 2, "the target's closure: {closure:?}");
    let stored: BTreeSet<String> = entries
        .iter()
        .filter_map(|(_, name, _)| name.strip_prefix("nix/store/").map(|p| format!("nix/store/{}", p.split('/').next().unwrap_or_default())))
        .collect();
    assert_eq!(stored, closure, "the image holds exactly the target's closure");
    let registration = registered(&std::fs::read_to_string(run_in_tar(&image, "nixos-pxe/registration")).expect("read"));
    for path in &closure {
        let hash = registration.get(&format!("/{path}")).unwrap_or_else(|| panic!("/{path} not registered"));
        assert!(hash.starts_with("sha256:"), "{path}'s NAR hash: {hash}");
    }

    let tarball = build(f, Flake::Consumer, "packages.x86_64-linux.tarball").join("nfsroot.tar");
    let entries = tar_entries(&tarball, None);
    let find = |path: &str| entries.iter().find(|(_, name, _)| name == path).cloned();

    // The README's contract, read from the README.
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let layout = readme
        .split("### The NFS root's layout")
        .nth(1)
        .and_then(|s| s.split("```").nth(1))
        .expect("README.md has the NFS root's layout in a code block");
    let mut promised = Vec::new();
    for line in layout.lines() {
        for word in line.split_whitespace().take_while(|w| w.starts_with('/')) {
            promised.push(word.trim_start_matches('/').to_string());
        }
    }
    assert!(promised.len() >= 10, "the README's layout: {promised:?}");
    for path in &promised {
        match path.as_str() {
            "init" => {
                let (kind, _, target) = find("init").expect("/init");
                assert_eq!(kind, 'l', "/init is a symbolic link");
                assert!(target.ends_with("/bin/nixos-pxe"), "/init -> {target}");
                assert!(find(target.trim_start_matches('/')).is_some(), "/init's target {target} is in the NFS root");
            }
            "nixos-pxe/config.json" => {
                let inside = std::fs::read_to_string(run_in_tar(&tarball, path)).expect("config.json");
                let config: Value = serde_json::from_str(&inside).expect("config.json is JSON");
                assert_eq!(config["bootServer"]["domainName"], "lab.test", "the consumer's options: {config}");
            }
            p if p.starts_with("nixos-pxe/system.tar.") => {
                let inside = std::fs::read(run_in_tar(&tarball, "nixos-pxe/system.tar.zst")).expect("image");
                assert_eq!(inside, std::fs::read(&image).expect("image"), "the NFS root's system image is systemImage's");
            }
            p if p.starts_with("nixos-pxe/tools") => {
                let (kind, _, tools) = find("nixos-pxe/tools").expect("/nixos-pxe/tools");
                assert_eq!(kind, 'l');
                let tools = tools.trim_start_matches('/');
                for program in ["nixos-pxe", "sfdisk", "mkfs.ext4", "mkfs.vfat", "nix-store", "nixos-enter", "zstd", "bash"] {
                    assert!(find(&format!("{tools}/bin/{program}")).is_some(), "tools/bin/{program} in the NFS root");
                }
            }
            "nix/store/..." => {
                let stored = entries.iter().filter(|(_, n, _)| n.starts_with("nix/store/")).count();
                assert!(stored > 10, "the tools' closure is in /nix/store: {stored} entries");
            }
            dir => {
                let (kind, _, _) = find(dir).unwrap_or_else(|| panic!("/{dir} missing from the NFS root"));
                assert_eq!(kind, 'd', "/{dir} is a directory");
                assert!(!entries.iter().any(|(_, n, _)| n.starts_with(&format!("{dir}/"))), "/{dir} is empty");
            }
        }
    }
}

/// The paths of a `nix-store --load-db` registration (path, NAR hash, NAR size, deriver, the
/// number of references, the references; entry after entry) with their NAR hashes.
fn registered(text: &str) -> std::collections::BTreeMap<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut entries = std::collections::BTreeMap::new();
    let mut i = 0;
    while i + 4 < lines.len() {
        entries.insert(lines[i].to_string(), lines[i + 1].to_string());
        let references: usize = lines[i + 4].parse().unwrap_or_else(|e| panic!("registration line {}: {:?}: {e}", i + 5, lines[i + 4]));
        i += 5 + references;
    }
    assert_eq!(i, lines.len(), "the registration ends with a whole entry");
    entries
}

/// Extracts `member` of `archive` (zstd or plain tar) below target/tmp/flake (removed by the next
/// run) and returns its path.
fn run_in_tar(archive: &Path, member: &str) -> PathBuf {
    let under = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("flake");
    let dir = tempfile::tempdir_in(under).expect("tempdir").keep();
    let mut cmd = Command::new("tar");
    if archive.extension().is_some_and(|e| e == "zst") {
        cmd.arg("--use-compress-program=zstd -d");
    }
    run(cmd.arg("-xf").arg(archive).arg("-C").arg(&dir).arg(member));
    dir.join(member)
}

/// lib.mkInstaller from another repository's flake: the installer file is part of a larger NixOS
/// configuration ({ config, pkgs, modulesPath, ... }:, other NixOS options, a value read from
/// one of them), and the caller also lists nixosModules.default.
#[test]
fn mk_installer_from_another_flake_reads_a_larger_nixos_configuration() {
    let Some(f) = fixture() else { return };
    let (config, _) = eval(f, Flake::Consumer, "installerConfig", Some("c: { inherit (c) bootServer; rootDevice = c.customInstaller.rootDevice; }"));
    assert_eq!(config["bootServer"]["domainName"], "lab.test", "read from networking.domain: {config}");
    assert_eq!(config["bootServer"]["address"], "10.42.0.1");
    assert_eq!(config["rootDevice"], "/dev/vda");
}

/// A misspelt installer option is refused with its name, as NixOS would; a failed rule between
/// options throws the module's own message.
#[test]
fn a_misspelt_option_and_a_failed_check_are_refused_with_their_names() {
    let Some(f) = fixture() else { return };
    let out = nix(f, &["eval", "--raw"], Flake::Consumer, "typo", &f.machine);
    let log = stderr(&out);
    assert!(!out.status.success(), "a misspelt option was accepted");
    assert!(
        log.contains("nixos-pxe: the option `nfsroot.bootloader.timeout' does not exist (defined in a module passed to lib.mkInstaller)"),
        "{log}"
    );

    let out = nix(f, &["eval", "--raw"], Flake::Consumer, "failedCheck", &f.machine);
    let log = stderr(&out);
    assert!(!out.status.success(), "useDHCP = false without staticInterfaceFromDHCP was accepted");
    assert!(log.contains("nixos-pxe: customInstaller.networking.useDHCP is false, so customInstaller.networking.staticInterfaceFromDHCP must name"), "{log}");
}

/// In a NixOS system, nixosModules.default's checks are NixOS assertions (a failing one stops
/// system.build.toplevel with its message) and its JSON is system.build.nixosPxeConfig.
#[test]
fn the_nixos_module_makes_its_checks_nixos_assertions() {
    let Some(f) = fixture() else { return };
    let out = nix(
        f,
        &["eval", "--raw", "--apply", "f: (f { customInstaller.networking.useDHCP = false; }).toplevel.drvPath"],
        Flake::Consumer,
        "nixosWithModule",
        &f.machine,
    );
    let log = stderr(&out);
    assert!(!out.status.success(), "a failed check did not stop the NixOS system");
    assert!(log.contains("Failed assertions:") && log.contains("- nixos-pxe: customInstaller.networking.useDHCP is false"), "{log}");

    let (json, _) = eval(f, Flake::Consumer, "nixosWithModule", Some("f: (f { }).nixosPxeConfig.drvPath"));
    assert!(json.as_str().is_some_and(|p| p.ends_with("nixos-pxe-config.json.drv")), "{json}");
}

/// The stand-in's NixOS behaves like NixOS where the old nix/mk-installer.nix broke: reading the
/// message of a passing assertion throws (nixos/modules/tasks/filesystems.nix's `cycle`).
#[test]
fn reading_every_nixos_assertion_message_throws_as_in_nixos() {
    let Some(f) = fixture() else { return };
    let out = nix(f, &["eval", "--json"], Flake::Consumer, "assertionMessages", &f.machine);
    let log = stderr(&out);
    assert!(!out.status.success(), "all assertion messages could be read");
    assert!(log.contains("attribute 'cycle' missing"), "{log}");
}

/// A nixpkgs whose rustc is older than Cargo.toml's rust-version gets a message that says so and
/// what to use, before any cargo error.
#[test]
fn an_old_rustc_is_refused_with_the_supported_release() {
    let Some(f) = fixture() else { return };
    for (flake, attr) in [(Flake::Repo, "packages.x86_64-linux.nixos-pxe"), (Flake::Consumer, "packages.x86_64-linux.bootLoader")] {
        let out = nix(f, &["eval", "--raw", "--apply", "d: d.drvPath"], flake, attr, &f.old_rustc);
        let log = stderr(&out);
        assert!(!out.status.success(), "{attr} evaluated with rustc 1.86.0");
        let minimum = env!("CARGO_PKG_RUST_VERSION");
        assert!(log.contains(&format!("nixos-pxe needs Rust {minimum} or newer")), "{attr}:\n{log}");
        assert!(log.contains("has rustc 1.86.0") && log.contains("NixOS 25.11 or newer"), "{attr}:\n{log}");
    }
}

/// checks.pxe-install through the stand-in's runNixOSTest: the nodes evaluate, the test script is
/// Python, and every store path they name (the boot loader, the kernel, the NFS root tarball, the
/// rendered dnsmasq.conf, the target system) exists once built.
#[test]
fn the_vm_check_evaluates_and_every_path_it_names_is_built() {
    let Some(f) = fixture() else { return };
    let out = build(f, Flake::Repo, "checks.x86_64-linux.pxe-install");
    let script = std::fs::read_to_string(out.join("test-script.py")).expect("test script");
    assert!(script.contains("nixos-pxe: install complete"), "{script}");
    let nodes: Value = serde_json::from_str(&std::fs::read_to_string(out.join("nodes.json")).expect("nodes")).expect("JSON");
    let files = nodes["server"]["systemd"]["services"]["pxe-files"]["script"].as_str().unwrap_or_default();
    for wanted in ["/bootx64.efi", "/bzImage", "/nfsroot.tar"] {
        assert!(files.contains(wanted), "the server's script copies {wanted}: {files}");
    }
}

/// The flake-built bootx64.efi and the flake-rendered dnsmasq.conf and command line, of the other
/// repository's installer, PXE-boot a UEFI QEMU up to the kernel's command line (the kernel is
/// the end-to-end test kernel; the stand-in's is a placeholder); then the flake-built bios.0 boots
/// a legacy BIOS QEMU to the same command line.
#[test]
fn qemu_pxe_boots_the_flake_built_boot_loader() {
    let Some(f) = fixture() else { return };
    let boot_loader = build(f, Flake::Consumer, "packages.x86_64-linux.bootLoader");
    let configs = build(f, Flake::Consumer, "packages.x86_64-linux.serverConfigs");
    let _one_boot = common::preflight(&[GRUB_LIB, GRUB_BIOS_LIB, common::SEABIOS, common::IPXE_VIRTIO_ROM]);
    std::fs::copy(boot_loader.join("bootx64.efi"), f.tftp_root.join("bootx64.efi")).expect("copy bootx64.efi");
    let kernel = common::test_kernel(&["--config", "examples/seed/installer.nix"]);
    std::fs::copy(kernel, f.tftp_root.join("nixos/bzImage")).expect("copy kernel");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = Lab::new("flake");
    let conf = configs.join("dnsmasq.conf");
    let log = dir.path().join("dnsmasq.log");
    // Its leases in the test's directory (the Lab checks that the host's lease file is untouched).
    let mut args = vec!["dnsmasq".to_string()];
    args.extend(common::dnsmasq_host_safe_args(&dir.path().join("dnsmasq.leases")));
    // The rendered TFTP root is below this checkout (target/tmp/flake/tftp), which may sit in a
    // private directory such as /root: dnsmasq, which drops to `nobody`, could not reach it
    // ("TFTP directory ... inaccessible: Permission denied" on a clone in a 0700 directory). It
    // keeps root here; the rendered configuration is unchanged.
    args.push("--user=root".into());
    args.push(format!("--conf-file={}", conf.display()));
    lab.spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), &log);
    let ns = lab.ns.clone();
    lab.wait_listening(&ns, &[common::Socket::Udp(67), common::Socket::Udp(69)]);
    let cmdline = std::fs::read_to_string(configs.join("cmdline")).expect("cmdline");
    let command_line = format!("Command line: BOOT_IMAGE=(tftp)/nixos/bzImage {}", cmdline.trim_end());
    let expect = [
        "nixos-pxe: GRUB started",
        "nixos-pxe: DHCP on efinet0",
        "nixos-pxe: boot server 10.42.0.1 (DHCP option 66)",
        "nixos-pxe: loading (tftp)/nixos/bzImage from 10.42.0.1",
        command_line.as_str(),
    ];
    boot_until(&mut lab, dir.path(), Boot::OvmfPxe, &expect, &log);

    // Legacy BIOS: the flake's bios.0 (nixpkgs' grub2 modules; the stand-in's are Debian's)
    // from the same rendered dnsmasq.conf, SeaBIOS with iPXE, to the same kernel command line.
    std::fs::copy(boot_loader.join("bios.0"), f.tftp_root.join("bios.0")).expect("copy bios.0");
    lab.advertise_ipv6_router(dir.path());
    let expect = [
        "nixos-pxe: GRUB started (i386-pc)",
        "nixos-pxe: DHCP on pxe",
        "nixos-pxe: boot server 10.42.0.1 (DHCP option 66)",
        command_line.as_str(),
    ];
    boot_until(&mut lab, dir.path(), Boot::SeaBiosIpxe, &expect, &log);
}

/// Boots a client of `boot` in `lab` until `expect` is on its console (in order); fails with the
/// console and dnsmasq's log after 150 s or when a server exits.
fn boot_until(lab: &mut Lab, dir: &Path, boot: Boot, expect: &[&str], log: &Path) {
    let mut qemu = Qemu::start_with(lab, dir, 512, None, boot, common::ONE_NIC);
    loop {
        let exited = lab.exited();
        let text = qemu.console();
        if in_order(&text, expect) {
            return;
        }
        assert!(exited.is_empty(), "{}\n--- console:\n{text}", exited.join("\n"));
        assert!(
            qemu.exit_status().is_none() && qemu.started.elapsed() < Duration::from_secs(150),
            "{boot:?}: after {:?} the console lacks (in order) {expect:?}:\n{text}\n--- dnsmasq:\n{}",
            qemu.started.elapsed(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// lib.mkFleet from another flake: config.json has the fleet (MACs normalised, each host's
/// overrides only, its image), the tool accepts it; each host's system has the disk layout and
/// the first-boot report; hosts with the same system share one image file, named by the
/// system's store hash, and the NFS root (tarball and unpacked) holds each image once; the
/// server configs have a per-host file for every MAC; the TFTP root has the boot loader and the
/// kernel.
#[test]
fn mk_fleet_builds_one_nfs_root_with_each_distinct_system_once() {
    let Some(f) = fixture() else { return };
    let (targets, _) = eval(
        f,
        Flake::Consumer,
        "fleet",
        Some("f: builtins.mapAttrs (name: t: { toplevel = t.config.system.build.toplevel.outPath; \
              report = t.config.systemd.services ? nixos-pxe-boot-report; root = t.config.fileSystems.\"/\".device; \
              swap = map (s: s.device) t.config.swapDevices; hostName = t.config.networking.hostName; }) f.targets"),
    );
    let system = |host: &str| targets[host]["toplevel"].as_str().unwrap_or_else(|| panic!("{host}'s system: {targets}")).to_string();
    assert_eq!(system("web1"), system("web2"), "web2 has web1's system");
    assert_ne!(system("web1"), system("db1"));
    assert_eq!((targets["web1"]["hostName"].as_str(), targets["db1"]["hostName"].as_str()), (Some("web1"), Some("db1")));
    for host in ["web1", "web2", "db1"] {
        assert_eq!(targets[host]["report"], true, "{host}'s system reports its first boot (nix/report-module.nix)");
        assert_eq!(targets[host]["root"], "/dev/disk/by-label/nixos", "{host}: the installer's layout");
    }
    assert_eq!(targets["db1"]["swap"], serde_json::json!(["/dev/disk/by-label/swap"]), "db1's own swapSizeMiB");
    assert_eq!(targets["web1"]["swap"], serde_json::json!([]));

    let config_path = build(f, Flake::Consumer, "fleet.configJSON");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config.json")).expect("JSON");
    let hosts = &config["fleet"]["hosts"];
    // The hash part of the system's store path (/nix/store/HASH-name: 32 characters).
    let image = |host: &str| {
        let path = system(host);
        let hash = path.strip_prefix("/nix/store/").and_then(|rest| rest.split_once('-')).map(|(hash, _)| hash.to_string()).expect("a store path");
        assert_eq!(hash.len(), 32, "{path}");
        format!("systems/{hash}.tar.zst")
    };
    let expected = serde_json::json!({
        "web1": { "macs": ["52:54:00:ab:cd:01"], "generation": 1, "target": { "directory": null, "flake": null },
                  "customInstaller": {}, "image": image("web1") },
        "web2": { "macs": ["52:54:00:ab:cd:02"], "generation": 2, "target": { "directory": null, "flake": null },
                  "customInstaller": { "wipe": "always" }, "image": image("web2") },
        "db1": { "macs": ["52:54:00:ab:cd:03", "52:54:00:ab:cd:04"], "generation": 1,
                 "target": { "directory": hosts["db1"]["target"]["directory"].clone(), "flake": null },
                 "customInstaller": { "swapSizeMiB": 1024 }, "image": image("db1") },
    });
    assert_eq!(hosts, &expected);
    assert!(hosts["db1"]["target"]["directory"].as_str().is_some_and(|d| d.ends_with("/db1")), "{hosts}");
    assert_eq!((config["fleet"]["maxAttempts"].as_u64(), config["fleet"]["unknownHosts"].as_str()), (Some(3), Some("local-boot")));
    // The tool reads it as it is (the image is the JSON-only option; every rule holds).
    let checked = nixos_pxe(&["check", "--config", config_path.to_str().expect("utf-8")]);
    assert!(checked.contains(": valid (") && checked.trim_end().ends_with("a fleet of 3 host(s))"), "{checked}");

    // The NFS root: each distinct image once, the config.json above, no single installer's image.
    let tarball = build(f, Flake::Consumer, "fleet.tarball").join("nfsroot.tar");
    let entries = tar_entries(&tarball, None);
    let images: BTreeSet<String> = entries.iter().filter_map(|(_, n, _)| n.strip_prefix("nixos-pxe/").filter(|n| n.starts_with("systems/") && n.ends_with(".tar.zst")).map(str::to_string)).collect();
    assert_eq!(images, BTreeSet::from([image("web1"), image("db1")]), "{entries:?}");
    assert!(!entries.iter().any(|(_, n, _)| n.starts_with("nixos-pxe/system.tar")), "no single installer's image");
    let inside = std::fs::read(run_in_tar(&tarball, "nixos-pxe/config.json")).expect("config.json");
    assert_eq!(inside, std::fs::read(&config_path).expect("config.json"), "the NFS root's config.json is configJSON");
    for host in ["web1", "db1"] {
        let file = run_in_tar(&tarball, &format!("nixos-pxe/{}", image(host)));
        let named = std::fs::read_to_string(run_in_tar(&file, "nixos-pxe/system")).expect("nixos-pxe/system");
        assert_eq!(named.trim(), system(host), "{} holds {host}'s system", image(host));
    }
    let unpacked = build(f, Flake::Consumer, "fleet.nfsRoot");
    assert_eq!(std::fs::read(unpacked.join("nixos-pxe/config.json")).expect("unpacked config.json"), inside);
    let listed: BTreeSet<String> = std::fs::read_dir(unpacked.join("nixos-pxe/systems"))
        .expect("systems/")
        .map(|e| format!("systems/{}", e.expect("entry").file_name().to_string_lossy()))
        .collect();
    assert_eq!(listed, images, "the unpacked NFS root has the same images");

    let configs = build(f, Flake::Consumer, "fleet.serverConfigs");
    for (mac, host) in [("01", "web1"), ("02", "web2"), ("03", "db1"), ("04", "db1")] {
        let file = configs.join(format!("hosts/mac-52:54:00:ab:cd:{mac}.cfg"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(text.contains(&format!("is {host}: installing generation")), "{}:\n{text}", file.display());
    }
    let boot_loader = build(f, Flake::Consumer, "fleet.bootLoader");
    let grub = std::fs::read_to_string(boot_loader.join("grub.cfg")).expect("grub.cfg");
    assert!(grub.contains("nixos-pxe/hosts/mac-$net_default_mac.cfg"), "the fleet's grub.cfg loads the per-host file:\n{grub}");
    let tftp = build(f, Flake::Consumer, "fleet.tftpRoot");
    assert_eq!(std::fs::read(tftp.join("bootx64.efi")).expect("tftp bootx64.efi"), std::fs::read(boot_loader.join("bootx64.efi")).expect("bootx64.efi"));
    assert_eq!(std::fs::read(tftp.join("bios.0")).expect("tftp bios.0"), std::fs::read(boot_loader.join("bios.0")).expect("bios.0"), "serve's DHCP names bios.0 for BIOS clients");
    let kernel = build(f, Flake::Consumer, "fleet.kernel");
    assert!(!std::fs::symlink_metadata(tftp.join("nixos/bzImage")).expect("bzImage").file_type().is_symlink(), "a copy, not a link out of the root");
    assert_eq!(std::fs::read(tftp.join("nixos/bzImage")).expect("tftp bzImage"), std::fs::read(kernel.join("bzImage")).expect("bzImage"));
}

/// A fleet host's own customInstaller.firmware decides what its image holds, as it decides the
/// installer's layout on that host (the installer reads the merged value): web2, web1's
/// configuration with firmware = "bios", gets GRUB and its own image, not web1's UEFI one; db1
/// with "auto" gets an image of its UEFI and its BIOS system (nixos-pxe/system.uefi and .bios),
/// named by both hashes, so it never shares a name with a one-system image of either.
#[test]
fn mk_fleet_builds_each_hosts_image_for_its_own_firmware() {
    use nixos_pxe_installer::config::typed::FirmwareSetting;
    use nixos_pxe_installer::install::firmware::{Layout, system_file};
    let Some(f) = fixture() else { return };
    let (systems, _) = eval(
        f,
        Flake::Consumer,
        "fleetFirmware",
        Some("f: builtins.mapAttrs (name: byLayout: builtins.mapAttrs (layout: t: { toplevel = t.config.system.build.toplevel.outPath; \
              grub = t.config.boot.loader.grub.enable; report = t.config.systemd.services ? nixos-pxe-boot-report; }) byLayout) f.systemsByLayout"),
    );
    let layouts = |host: &str| systems[host].as_object().unwrap_or_else(|| panic!("{host}: {systems}")).keys().cloned().collect::<Vec<_>>();
    assert_eq!((layouts("web1"), layouts("web2"), layouts("db1")), (vec!["uefi".to_string()], vec!["bios".to_string()], vec!["bios".to_string(), "uefi".to_string()]));
    for (host, layout, grub) in [("web1", "uefi", false), ("web2", "bios", true), ("db1", "uefi", false), ("db1", "bios", true)] {
        assert_eq!((systems[host][layout]["grub"].as_bool(), systems[host][layout]["report"].as_bool()), (Some(grub), Some(true)), "{host} {layout}: {systems}");
    }
    let toplevel = |host: &str, layout: &str| systems[host][layout]["toplevel"].as_str().expect("a toplevel").to_string();
    let hash = |path: &str| path.strip_prefix("/nix/store/").and_then(|rest| rest.split_once('-')).map(|(hash, _)| hash.to_string()).expect("a store path");
    assert_ne!(toplevel("web1", "uefi"), toplevel("web2", "bios"));
    assert_eq!(toplevel("web1", "uefi").replace(&hash(&toplevel("web1", "uefi")), ""), toplevel("web2", "bios").replace(&hash(&toplevel("web2", "bios")), ""), "the same configuration");

    let config_path = build(f, Flake::Consumer, "fleetFirmware.configJSON");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config.json")).expect("JSON");
    let image = |host: &str| config["fleet"]["hosts"][host]["image"].as_str().unwrap_or_else(|| panic!("{host}'s image: {config}")).to_string();
    assert_eq!(image("web1"), format!("systems/{}.tar.zst", hash(&toplevel("web1", "uefi"))));
    assert_eq!(image("web2"), format!("systems/{}.tar.zst", hash(&toplevel("web2", "bios"))));
    assert_eq!(image("db1"), format!("systems/{}-{}.tar.zst", hash(&toplevel("db1", "uefi")), hash(&toplevel("db1", "bios"))));
    assert_eq!(config["fleet"]["hosts"]["db1"]["customInstaller"]["firmware"], "auto");
    let checked = nixos_pxe(&["check", "--config", config_path.to_str().expect("utf-8")]);
    assert!(checked.contains(": valid ("), "{checked}");

    // Each image holds the systems under the files the installer reads for that host's firmware.
    let tarball = build(f, Flake::Consumer, "fleetFirmware.tarball").join("nfsroot.tar");
    let cases = [
        ("web1", FirmwareSetting::Uefi, vec![Layout::Uefi]),
        ("web2", FirmwareSetting::Bios, vec![Layout::Bios]),
        ("db1", FirmwareSetting::Auto, vec![Layout::Uefi, Layout::Bios]),
    ];
    for (host, setting, host_layouts) in cases {
        let file = run_in_tar(&tarball, &format!("nixos-pxe/{}", image(host)));
        let entries = tar_entries(&file, Some("zstd -d"));
        for layout in host_layouts {
            let name = system_file(setting, layout);
            assert!(entries.iter().any(|(_, n, _)| *n == name), "{host}: no {name} in {}: {entries:?}", image(host));
            let named = std::fs::read_to_string(run_in_tar(&file, &name)).unwrap_or_else(|e| panic!("{host} {name}: {e}"));
            assert_eq!(named.trim(), toplevel(host, layout.as_str()), "{host}: {name}");
        }
    }
}

/// The fleet's rules fail the evaluation with the option's name (and the files defining it):
/// a MAC of two hosts, a MAC that is not one, a host name that is not a DNS label, a host with
/// no target or two, a system passed for a host that is not in the fleet, a fleet without the
/// auto interfaces; and lib.mkInstaller refuses a fleet, pointing at lib.mkFleet.
#[test]
fn the_fleet_rules_fail_the_evaluation_naming_the_option() {
    let Some(f) = fixture() else { return };
    let cases: [(&str, &[&str]); 9] = [
        (
            "{ modules = [ ({ lib, ... }: { fleet.hosts.web2.macs = lib.mkForce [ \"52:54:00:AB:CD:01\" ]; }) ]; }",
            &["nixos-pxe: fleet.hosts.web2.macs: 52:54:00:ab:cd:01 is listed for web2 and for web1; a MAC belongs to one host", "fleet.nix"],
        ),
        (
            "{ modules = [ ({ lib, ... }: { fleet.hosts.web1.macs = lib.mkForce [ \"52:54:00:ab:cd\" \"01:00:5e:00:00:01\" ]; }) ]; }",
            &[
                "nixos-pxe: fleet.hosts.web1.macs: \"52:54:00:ab:cd\" is not a MAC address: it has 5 groups, not 6",
                "\"01:00:5e:00:00:01\" is not a MAC address: it is a multicast address",
            ],
        ),
        (
            "{ modules = [ { fleet.hosts.Db_2.macs = [ \"52:54:00:ab:cd:09\" ]; } ]; }",
            &[
                "nixos-pxe: fleet.hosts.Db_2: the host name \"Db_2\" is not a DNS label",
                "nixos-pxe: fleet.hosts.Db_2.target: the host Db_2 has no target",
            ],
        ),
        (
            "{ modules = [ { fleet.hosts.web1.target.flake = \"github:example/infra#web1\"; } ]; }",
            &["nixos-pxe: fleet.hosts.web1.target: the host web1 has 2 targets (target.flake, lib.mkFleet's hosts.web1)"],
        ),
        ("{ extraHosts.ghost = null; }", &["nixos-pxe: lib.mkFleet's hosts.ghost is not a host of the fleet: define fleet.hosts.ghost.macs"]),
        (
            "{ modules = [ ({ lib, ... }: { nfsroot.bootLoader.linuxPnPInterface = lib.mkForce \"eth0\"; }) ]; }",
            &["nixos-pxe: nfsroot.bootLoader.linuxPnPInterface: a fleet needs \"auto\", not \"eth0\""],
        ),
        (
            "{ modules = [ { fleet.hosts.web1.bmc.address = \"10.0.1.1\"; } ]; }",
            &[
                "nixos-pxe: fleet.hosts.web1.bmc: web1's BMC needs an account and the file holding its password",
                "nixos-pxe: fleet.hosts.web1.bmc.fingerprint: web1's Redfish BMC is reached over HTTPS, and nothing says which certificate is its own",
            ],
        ),
        (
            "{ modules = [ { fleet.bmc = { user = \"admin\"; passwordFile = \"${builtins.toFile \"bmc\" \"secret\"}\"; }; fleet.hosts.db1.bmc = { address = \"10.0.1.3\"; protocol = \"ipmi\"; bootTarget = \"uefi-http\"; }; } ]; }",
            &[
                "nixos-pxe: fleet.hosts.db1.bmc.passwordFile: \"/nix/store/",
                "-bmc\" is in the Nix store, which every user on the machine can read",
                "nixos-pxe: fleet.hosts.db1.bmc.bootTarget: IPMI cannot ask for a UEFI HTTP boot",
            ],
        ),
        (
            "{ modules = [ { fleet.hosts.web1.customInstaller.networking.useDHCP = false; } ]; }",
            &["nixos-pxe: fleet.hosts.web1.customInstaller.networking.useDHCP: useDHCP is false, so fleet.hosts.web1.customInstaller.networking.staticInterfaceFromDHCP must name"],
        ),
    ];
    for (arguments, messages) in cases {
        let apply = format!("f: (f {arguments}).configJSON.drvPath");
        let out = nix(f, &["eval", "--raw", "--apply", &apply], Flake::Consumer, "fleetWith", &f.machine);
        let log = stderr(&out);
        assert!(!out.status.success(), "{arguments} was accepted");
        for message in messages {
            assert!(log.contains(message), "{arguments}: no `{message}` in:\n{log}");
        }
    }
    let out = nix(f, &["eval", "--raw", "--apply", "d: d.drvPath"], Flake::Consumer, "fleetAsInstaller", &f.machine);
    let log = stderr(&out);
    assert!(!out.status.success(), "lib.mkInstaller took a fleet");
    assert!(log.contains("lib.mkInstaller installs one system, but the configuration has fleet.hosts (db1, web1, web2): build a fleet with lib.mkFleet"), "{log}");
}

/// checks.pxe-fleet through the stand-in's runNixOSTest: the nodes evaluate (their assertions
/// hold), every store path they name is built, the server runs services.nixos-pxe for the
/// check's fleet behind its firewall, and each client VM's MAC (the test driver's
/// 52:54:00:12:VLAN:NODE, NODE its place among the sorted node names) is its host's in the fleet.
#[test]
fn the_fleet_vm_check_evaluates_with_services_nixos_pxe_and_the_clients_macs() {
    let Some(f) = fixture() else { return };
    let out = build(f, Flake::Repo, "checks.x86_64-linux.pxe-fleet");
    let script = std::fs::read_to_string(out.join("test-script.py")).expect("test script");
    assert!(script.contains("nixos-pxe fleet status --json") && script.contains("\"confirmed\""), "{script}");
    let nodes: Value = serde_json::from_str(&std::fs::read_to_string(out.join("nodes.json")).expect("nodes")).expect("JSON");
    let server = &nodes["server"];
    let exec = server["systemd"]["services"]["nixos-pxe"]["serviceConfig"]["ExecStart"].as_str().unwrap_or_default();
    let config_path = exec.split_whitespace().skip_while(|w| *w != "--config").nth(1).unwrap_or_else(|| panic!("--config in {exec}"));
    assert!(exec.contains("/bin/nixos-pxe serve ") && exec.contains(" --nfs-root /nix/store/"), "{exec}");
    assert_eq!(server["networking"]["firewall"]["enable"], true);
    assert_eq!(server["networking"]["firewall"]["interfaces"]["eth1"]["allowedUDPPorts"], serde_json::json!([67, 69]));
    assert_eq!(server["networking"]["firewall"]["interfaces"]["eth1"]["allowedTCPPorts"], serde_json::json!([80, 2049]));

    let config: Value = serde_json::from_str(&std::fs::read_to_string(config_path).expect("config.json")).expect("JSON");
    let mut names: Vec<&String> = nodes.as_object().expect("nodes").keys().collect();
    names.sort();
    let clients: Vec<&String> = names.iter().copied().filter(|n| n.as_str() != "server").collect();
    assert_eq!(clients, ["alpha", "beta"]);
    for client in clients {
        let number = names.iter().position(|n| *n == client).expect("a node") + 1;
        let mac = format!("52:54:00:12:01:{number:02x}");
        assert_eq!(config["fleet"]["hosts"][client]["macs"], serde_json::json!([mac]), "{client} is node {number} on VLAN 1");
        assert_eq!(nodes[client]["virtualisation"]["vlans"], serde_json::json!([1]), "{client}");
    }
    let images: BTreeSet<&str> = ["alpha", "beta", "gamma"].iter().map(|h| config["fleet"]["hosts"][*h]["image"].as_str().expect("image")).collect();
    assert_eq!(images.len(), 2, "gamma shares alpha's system: {images:?}");
}

/// Secure Boot mode through the flake, as a boot server runs it: lib.mkFleet's secureBootParts
/// (the installer's kernel and initrd, its tools, each image beside its system's unsigned unified
/// kernel image, systemd's stub) and services.nixos-pxe's nixos-pxe-sign unit, whose command
/// line is run here as systemd would run it (its %d the credentials directory holding the key and
/// certificate, root without a capability, no network, its PATH from `path`), with the key the
/// configuration does not name. What it writes is what serve's unit serves (`--tftp-root`): the
/// installer and every system's boot file verify against the certificate (sbverify), the
/// installer's initrd holds the tool as /init, config.json (the fleet's configJSON) and the
/// manifest, and the tools' archive holds the installer's programs without what the initrd holds.
/// A key of another certificate is refused at the flag that gave it.
#[test]
fn the_fleets_secure_boot_parts_are_signed_by_the_servers_sign_unit() {
    let Some(f) = fixture() else { return };
    let units: Value = serde_json::from_str(&std::fs::read_to_string(build(f, Flake::Consumer, "sbUnits")).expect("units")).expect("JSON");
    assert_eq!(units["failed"], serde_json::json!([]), "{units}");
    let sign = &units["sign"];
    let config = &sign["serviceConfig"];
    assert_eq!((sign["requiredBy"].clone(), sign["before"].clone()), (serde_json::json!(["nixos-pxe.service"]), serde_json::json!(["nixos-pxe.service"])));
    assert!(units["serve"]["after"].as_array().expect("after").contains(&"nixos-pxe-sign.service".into()), "{units}");
    assert_eq!(config["LoadCredential"], serde_json::json!(["db.key:/etc/nixos-pxe/db.key", "db.crt:/etc/nixos-pxe/db.pem"]));
    for (setting, value) in [
        ("Type", serde_json::json!("oneshot")),
        ("StateDirectory", serde_json::json!("nixos-pxe-secure-boot")),
        ("StateDirectoryMode", serde_json::json!("0755")),
        ("CapabilityBoundingSet", serde_json::json!("")),
        ("PrivateNetwork", serde_json::json!(true)),
        ("NoNewPrivileges", serde_json::json!(true)),
        ("ProtectSystem", serde_json::json!("strict")),
    ] {
        assert_eq!(config[setting], value, "{setting}");
    }
    assert!(config.get("DynamicUser").is_none(), "root (the directory serve's user reads is root's)");
    let exec = config["ExecStart"].as_str().expect("ExecStart");
    let words: Vec<String> = shell_words(exec);
    let arg = |flag: &str| words.iter().position(|w| w == flag).map(|i| words[i + 1].clone()).unwrap_or_else(|| panic!("{flag} in {exec}"));
    assert_eq!(arg("--out"), "/var/lib/nixos-pxe-secure-boot");
    assert_eq!((arg("--key-file"), arg("--certificate-file")), ("%d/db.key".into(), "%d/db.crt".into()));
    let serve = shell_words(units["serve"]["serviceConfig"]["ExecStart"].as_str().expect("serve's ExecStart"));
    assert_eq!(serve.iter().position(|w| w == "--tftp-root").map(|i| serve[i + 1].as_str()), Some("/var/lib/nixos-pxe-secure-boot"), "serve serves what sign wrote");

    // The parts, as the unit names them and as mkFleet builds them.
    let parts = PathBuf::from(arg("--unsigned"));
    assert_eq!(parts, build(f, Flake::Consumer, "sbFleet.secureBootParts"));
    assert_eq!(arg("--stub"), parts.join("linuxx64.efi.stub").display().to_string());
    let config_json = arg("--config");
    let fleet: Value = serde_json::from_str(&std::fs::read_to_string(&config_json).expect("config.json")).expect("JSON");
    let images: BTreeSet<String> = fleet["fleet"]["hosts"].as_object().expect("hosts").values().map(|h| h["image"].as_str().expect("image").to_string()).collect();
    assert_eq!(images.len(), 2, "web1 and web2 share one system: {images:?}");
    for image in &images {
        let stem = image.strip_suffix(".tar.zst").expect(".tar.zst");
        assert!(parts.join(image).is_file() && parts.join(format!("{stem}.efi")).is_file(), "{image} and its boot file in {}", parts.display());
    }

    // Run the unit's command line: %d a credentials directory, the output in the test's directory.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let credentials = dir.join("credentials");
    std::fs::create_dir(&credentials).expect("mkdir");
    let (site_key, site_cert) = common::signing_keys::key_pair(dir, "site-db");
    let (other_key, _) = common::signing_keys::key_pair(dir, "other");
    let out = dir.join("nixos-pxe-secure-boot");
    let path: String = sign["path"].as_array().expect("path").iter().map(|p| format!("{}/bin", p.as_str().expect("a package"))).collect::<Vec<_>>().join(":");
    let run_unit = |key: &Path| {
        for (name, from) in [("db.key", key), ("db.crt", site_cert.as_path())] {
            let to = credentials.join(name);
            let _ = std::fs::remove_file(&to);
            std::fs::copy(from, &to).expect("copy a credential");
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o400)).expect("chmod");
        }
        let line: Vec<String> = words
            .iter()
            .map(|w| w.replace("%d", credentials.to_str().expect("utf-8")).replace("/var/lib/nixos-pxe-secure-boot", out.to_str().expect("utf-8")))
            .collect();
        // Absolute: the child's PATH is the unit's.
        Command::new("/usr/bin/unshare")
            .args(["--net", "/usr/bin/setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"])
            .args(&line)
            .env_clear()
            .env("PATH", &path)
            .output()
            .expect("run the unit's command line")
    };
    let refused = run_unit(&other_key);
    let text = stderr(&refused);
    assert!(!refused.status.success(), "signed with another certificate's key:\n{text}");
    assert!(text.contains("nixos-pxe sign --key-file: bootServer.secureBoot.keyFile: the key in") && text.contains("does not belong to the certificate"), "{text}");
    assert!(!out.join("bootx64.efi").exists(), "nothing signed with the wrong key");
    let signed = run_unit(&site_key);
    assert!(signed.status.success(), "the sign unit's command line failed:\n{}", stderr(&signed));

    let verify = |file: &Path| {
        let v = Command::new("sbverify").arg("--cert").arg(&site_cert).arg(file).output().expect("sbverify");
        assert!(v.status.success(), "{} does not verify against the site's certificate: {}", file.display(), stderr(&v));
    };
    verify(&out.join("bootx64.efi"));
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(out.join("nixos-pxe/secure-boot/manifest.json")).expect("manifest")).expect("JSON");
    assert_eq!(manifest["images"].as_object().expect("images").keys().cloned().collect::<BTreeSet<_>>(), images, "{manifest}");
    assert_eq!(manifest["server"], "http://10.42.0.1");
    for image in &images {
        let stem = image.strip_suffix(".tar.zst").expect(".tar.zst");
        verify(&out.join(format!("nixos-pxe/secure-boot/{stem}.efi")));
        let served = out.join(format!("nixos-pxe/secure-boot/{image}"));
        assert!(!served.symlink_metadata().expect("served").file_type().is_symlink(), "{}: a copy, not a link (serve refuses links)", served.display());
        assert_eq!(std::fs::read(&served).expect("served image"), std::fs::read(parts.join(image)).expect("built image"), "{image}");
    }

    // The signed installer's initrd: /init is the tool, config.json the fleet's, the manifest, the
    // tool's store path.
    let initrd = dir.join("initrd.zst");
    run(Command::new("objcopy").args(["-O", "binary", "--only-section=.initrd"]).arg(out.join("bootx64.efi")).arg(&initrd));
    // It is the built initrd (zstd) followed, at a 4-byte boundary, by an archive of the manifest.
    let section = std::fs::read(&initrd).expect("the .initrd section");
    let built = std::fs::read(parts.join("initrd")).expect("the parts' initrd");
    assert!(section.starts_with(&built), "the signed initrd begins with the built one");
    let appended = nixos_pxe_installer::cpio::read(&section[built.len().div_ceil(4) * 4..]).expect("the manifest's archive");
    let unpacked = Command::new("zstd").arg("-dc").arg(parts.join("initrd")).output().expect("zstd");
    assert!(unpacked.status.success(), "the initrd is not zstd: {}", stderr(&unpacked));
    let mut entries = nixos_pxe_installer::cpio::read(&unpacked.stdout).expect("a newc initrd");
    entries.extend(appended);
    let entry = |name: &str| entries.iter().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("{name} not in the initrd: {:?}", entries.iter().map(|e| &e.0).collect::<Vec<_>>()));
    let tool = words[0].strip_suffix("/bin/nixos-pxe").expect("the tool's path").to_string();
    let init = entry("init");
    assert_eq!((init.1 & 0o170000, String::from_utf8_lossy(&init.2).into_owned()), (nixos_pxe_installer::cpio::SYMLINK, format!("{tool}/bin/nixos-pxe")), "/init is the tool");
    assert_eq!(entry(&format!("{}/bin/nixos-pxe", tool.trim_start_matches('/'))).1 & 0o170000, nixos_pxe_installer::cpio::REGULAR, "the tool's store path");
    assert_eq!(entry("nixos-pxe/config.json").2, std::fs::read(&config_json).expect("configJSON"), "the initrd's config.json is the fleet's");
    let inside: Value = serde_json::from_slice(&entry("nixos-pxe/secure-boot/manifest.json").2).expect("the manifest");
    assert_eq!(inside, manifest, "the signed initrd's manifest is the one served");

    // The tools: nixos-pxe/tools links to the programs, the closure without the initrd's paths.
    let tools = tar_entries(&out.join("nixos-pxe/secure-boot/tools.tar.zst"), Some("zstd"));
    let link = tools.iter().find(|(_, n, _)| n == "nixos-pxe/tools").unwrap_or_else(|| panic!("nixos-pxe/tools: {tools:?}"));
    assert!(link.0 == 'l' && link.2.contains("-nixos-pxe-tools"), "{link:?}");
    assert!(tools.iter().any(|(_, n, _)| n.ends_with("-nixos-pxe-tools/bin/sfdisk")), "{tools:?}");
    assert!(!tools.iter().any(|(_, n, _)| format!("/{n}").starts_with(&tool)), "the tool's own path is the initrd's, not unpacked again: {tools:?}");

    // lib.mkInstaller's parts: its one image, system.tar.zst, beside system.efi; sign takes them.
    let single = build(f, Flake::Consumer, "sbInstaller.secureBootParts");
    assert!(single.join("system.tar.zst").is_file() && single.join("system.efi").is_file(), "{}", single.display());
    let single_config = build(f, Flake::Consumer, "sbInstaller.configJSON");
    std::fs::set_permissions(&site_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let single_out = dir.join("single");
    nixos_pxe(&[
        "sign", "--config", single_config.to_str().expect("utf-8"), "--unsigned", single.to_str().expect("utf-8"),
        "--stub", single.join("linuxx64.efi.stub").to_str().expect("utf-8"), "--out", single_out.to_str().expect("utf-8"),
        "--key-file", site_key.to_str().expect("utf-8"), "--certificate-file", site_cert.to_str().expect("utf-8"),
    ]);
    verify(&single_out.join("bootx64.efi"));
    verify(&single_out.join("nixos-pxe/secure-boot/system.efi"));
}

/// The words of a command line as escapeShellArgs quotes them (each word bare or in '').
fn shell_words(line: &str) -> Vec<String> {
    let out = Command::new("sh").arg("-c").arg(format!("for w in {line}; do printf '%s\\0' \"$w\"; done")).output().expect("sh");
    assert!(out.status.success(), "{line}");
    String::from_utf8_lossy(&out.stdout).split('\0').filter(|w| !w.is_empty()).map(str::to_string).collect()
}
