//! nix/server-module.nix (the flake's nixosModules.server, services.nixos-pxe):
//! - evaluated with nixpkgs' real lib ($NIXPKGS_LIB; .ci/run sets it to ../shared/nixpkgs-lib) in
//!   the stand-in NixOS of tests/nix/stand-in-nixpkgs (NixOS's types for the options it sets),
//!   with a stand-in fleet: the unit's command line, its one capability and its sandbox, the
//!   firewall ports openFirewall opens for each setting, and the assertions;
//! - its unit run here for real: the server of checks/pxe-fleet.nix (the fleet of
//!   checks/vm-fleet, made by lib.mkFleet through the flake with the stand-in nixpkgs) is
//!   evaluated, its ExecStart and the paths it names built, and that command line started as
//!   the unit would start it: in a network namespace whose interface and address are the fleet's,
//!   as an unprivileged user (DynamicUser) with exactly the unit's capabilities (setpriv: bounding
//!   set, ambient set, no new privileges), its state directory laid out as systemd lays out a
//!   DynamicUser's StateDirectory, behind the nftables firewall NixOS makes from the ports the
//!   module opened. A client in a second namespace then gets a lease (busybox udhcpc), the boot
//!   loader and the kernel over TFTP (atftp), its per-host file and the hosts' status over HTTP
//!   (curl), config.json and a system image over NFS (libnfs). Under strace: every system call
//!   serve made is allowed by the unit's SystemCallFilter (as systemd-analyze expands its
//!   groups), every socket's family by RestrictAddressFamilies, nothing is mapped writable and
//!   executable (MemoryDenyWriteExecute), no namespace is made (RestrictNamespaces), and nothing
//!   is written outside the state directory (ProtectSystem=strict). Without the capability serve
//!   cannot start, and without the opened ports no client gets through: both checks can fail.
//!
//! Needs root (namespaces), nix-instantiate and nix-build (nix-bin), strace, setpriv and unshare
//! (util-linux), nft, busybox, atftp, curl, nfs-cat (libnfs-utils) and systemd-analyze; without
//! one the test fails, or skips loudly with NIXOS_PXE_ALLOW_SKIP=1.

mod common;
mod switches;

use common::{Namespace, root, run};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// As tests/flake.rs: Debian's Nix as root, with the stand-in's builders in the sandbox.
const NIX_CONFIG: &str = "build-users-group =\n\
                          substituters =\n\
                          sandbox = true\n\
                          extra-sandbox-paths = /usr /bin /lib /lib64 /etc\n\
                          allow-import-from-derivation = false\n";

fn nixpkgs_lib() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("NIXPKGS_LIB") else {
        switches::skip_or_fail("NIXPKGS_LIB is not set: it names a copy of nixpkgs' lib (.ci/run sets it to ../shared/nixpkgs-lib)");
        return None;
    };
    let dir = PathBuf::from(dir);
    if !dir.join("lib/default.nix").is_file() {
        switches::skip_or_fail(&format!("NIXPKGS_LIB={} has no lib/default.nix", dir.display()));
        return None;
    }
    if Command::new("nix-instantiate").arg("--version").output().is_err() {
        switches::skip_or_fail("nix-instantiate does not run (apt-get install nix-bin)");
        return None;
    }
    Some(dir.canonicalize().expect("canonical NIXPKGS_LIB"))
}

// ---------------------------------------------------------------------------------------------
// The module evaluated with a stand-in fleet.

/// The module in the stand-in NixOS with `services.nixos-pxe = { enable; fleet; } // settings`,
/// the fleet's bootServer changed by `server` (Nix attribute set text merged over the default);
/// returns the unit, the firewall, the system packages and the failed assertions' messages.
fn evaluate(lib: &Path, settings: &str, server: &str) -> Result<Value, String> {
    evaluate_with(lib, settings, server, "{ }")
}

/// `evaluate` with one more module of the server's configuration (Nix text).
fn evaluate_with(lib: &Path, settings: &str, server: &str, extra: &str) -> Result<Value, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("eval.nix");
    std::fs::write(
        &file,
        format!(
            r#"let
  lib = import {lib}/lib;
  # The packages the module names (with Secure Boot), as paths: nothing is built.
  package = name: {{ type = "derivation"; inherit name; outPath = "/nix/store/55555555555555555555555555555555-${{name}}"; }};
  nixos = import {repo}/tests/nix/stand-in-nixpkgs/nixos.nix {{
    inherit lib;
    pkgs = lib.genAttrs [ "openssl" "sbsigntool" "binutils-unwrapped-all-targets" ] package;
    impl = {{ }};
    modulesPath = {repo}/tests/nix/stand-in-nixpkgs/nixos/modules;
  }};
  # What lib.mkFleet returns, as far as the module reads it (paths as text: nothing is built).
  fleet = {{
    tool = {{ type = "derivation"; name = "nixos-pxe"; outPath = "/nix/store/00000000000000000000000000000000-nixos-pxe"; }};
    configJSON = "/nix/store/11111111111111111111111111111111-nixos-pxe-config.json";
    tftpRoot = "/nix/store/22222222222222222222222222222222-nixos-pxe-tftp-root";
    nfsRoot = "/nix/store/33333333333333333333333333333333-nixos-pxe-nfsroot-unpacked";
    secureBootParts = "/nix/store/44444444444444444444444444444444-nixos-pxe-secure-boot-parts";
    config.bootServer = {{
      address = "10.42.0.1";
      interface = "eth1";
      dhcpMode = "authoritative";
      nfsMountOptions = "vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock";
    }} // ({server});
  }};
  system = nixos.nixosSystem {{
    # The server's own boot loader is not the module's: a real configuration names one (the
    # stand-in's GRUB, on by default, asserts a device as NixOS's does).
    modules = [ {repo}/nix/server-module.nix {{ boot.loader.grub.device = "/dev/sda"; }} {{ services.nixos-pxe = {{ enable = true; inherit fleet; }} // ({settings}); }} ({extra}) ];
  }};
  inherit (system) config;
in
{{
  unit = config.systemd.services.nixos-pxe;
  inherit (config.networking) firewall;
  nftables = config.networking.nftables.tables;
  kernelModules = config.boot.kernelModules;
  packages = config.environment.systemPackages;
  postgresql = config.services.postgresql;
  failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  inherit (config) warnings;
}}
"#,
            lib = lib.display(),
            repo = root().display(),
        ),
    )
    .expect("write");
    let out = Command::new("nix-instantiate")
        .env("NIX_CONFIG", "build-users-group =\n")
        .args(["--eval", "--strict", "--json"])
        .arg(&file)
        .output()
        .expect("run nix-instantiate");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("JSON"))
}

/// The defaults: serve for the fleet with the fleet's interface, one capability, a dynamic user
/// with its state directory, the sandbox, and (openFirewall) DHCP, TFTP, HTTP and NFS on eth1.
#[test]
fn the_unit_runs_serve_for_the_fleet_with_one_capability_in_a_sandbox() {
    let Some(lib) = nixpkgs_lib() else { return };
    let v = evaluate(&lib, "{ openFirewall = true; }", "{ }").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["failed"], json!([]));
    assert_eq!(v["warnings"], json!([]));
    let unit = &v["unit"];
    assert_eq!(unit["wantedBy"], json!(["multi-user.target"]));
    assert_eq!(unit["wants"], json!(["network-online.target"]));
    assert_eq!(unit["after"], json!(["network-online.target", "network-addresses-eth1.service"]));
    let config = &unit["serviceConfig"];
    assert_eq!(
        config["ExecStart"],
        "/nix/store/00000000000000000000000000000000-nixos-pxe/bin/nixos-pxe serve \
         --config /nix/store/11111111111111111111111111111111-nixos-pxe-config.json --interface eth1 \
         --tftp-root /nix/store/22222222222222222222222222222222-nixos-pxe-tftp-root \
         --nfs-root /nix/store/33333333333333333333333333333333-nixos-pxe-nfsroot-unpacked \
         --state-dir /var/lib/nixos-pxe --http-port 80"
    );
    assert_eq!(config["CapabilityBoundingSet"], json!(["CAP_NET_BIND_SERVICE"]));
    assert_eq!(config["AmbientCapabilities"], json!(["CAP_NET_BIND_SERVICE"]));
    for (setting, value) in [
        ("DynamicUser", json!(true)),
        ("StateDirectory", json!("nixos-pxe")),
        ("StateDirectoryMode", json!("0700")),
        ("NoNewPrivileges", json!(true)),
        ("ProtectSystem", json!("strict")),
        ("ProtectHome", json!(true)),
        ("PrivateTmp", json!(true)),
        ("PrivateDevices", json!(true)),
        ("RestrictAddressFamilies", json!(["AF_INET"])),
        ("SystemCallFilter", json!(["@system-service", "~@privileged", "~@resources"])),
        ("MemoryDenyWriteExecute", json!(true)),
        ("RestrictNamespaces", json!(true)),
        // serve's caps follow from it (src/serve/limits.rs); soft = hard, so serve calls no
        // setrlimit (in @resources, denied above).
        ("LimitNOFILE", json!(16384)),
    ] {
        assert_eq!(config[setting], value, "{setting}");
    }
    // PrivateUsers would leave no capability in the network namespace's user namespace.
    assert!(config.get("PrivateUsers").is_none(), "{config}");
    assert_eq!(
        v["firewall"]["interfaces"],
        json!({ "eth1": { "allowedTCPPorts": [80, 2049], "allowedUDPPorts": [67, 69], "allowedTCPPortRanges": [], "allowedUDPPortRanges": [] } })
    );
    assert_eq!(v["packages"], json!(["/nix/store/00000000000000000000000000000000-nixos-pxe"]));
}

/// openFirewall follows the fleet and the settings: 4011 in proxy mode only, the HTTP port
/// given (none for 0), the NFS port of the mount options, the interface given; nothing without
/// openFirewall.
#[test]
fn the_firewall_opens_what_serve_listens_on_and_nothing_else() {
    let Some(lib) = nixpkgs_lib() else { return };
    let v = evaluate(
        &lib,
        "{ openFirewall = true; interface = \"enp1s0\"; httpPort = 8080; }",
        "{ dhcpMode = \"proxy\"; nfsMountOptions = \"vers=3,tcp,port=20490,mountport=20490,mountproto=tcp,nolock\"; }",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["failed"], json!([]));
    let open = &v["firewall"]["interfaces"];
    assert_eq!(open.as_object().map(|o| o.keys().collect::<Vec<_>>()), Some(vec![&"enp1s0".to_string()]), "{open}");
    assert_eq!(open["enp1s0"]["allowedUDPPorts"], json!([67, 69, 4011]));
    assert_eq!(open["enp1s0"]["allowedTCPPorts"], json!([8080, 20490]));
    let exec = v["unit"]["serviceConfig"]["ExecStart"].as_str().expect("ExecStart");
    assert!(exec.contains(" --interface enp1s0 ") && exec.ends_with(" --http-port 8080"), "{exec}");
    assert_eq!(v["unit"]["after"][1], "network-addresses-enp1s0.service");

    let v = evaluate(&lib, "{ openFirewall = true; httpPort = 0; }", "{ }").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["firewall"]["interfaces"]["eth1"]["allowedTCPPorts"], json!([2049]), "no HTTP, no HTTP port");
    assert!(v["unit"]["serviceConfig"]["ExecStart"].as_str().is_some_and(|e| e.ends_with(" --http-port 0")));

    // Outgoing: DHCP replies (port 68) on the interface; the TFTP helper's table and module only
    // where the firewall filters output.
    assert_eq!(v["firewall"]["filterOutput"]["interfaces"], json!({ "eth1": { "allowedUDPPorts": [68], "allowedTCPPorts": [], "allowedUDPPortRanges": [], "allowedTCPPortRanges": [] } }));
    assert_eq!((v["nftables"].clone(), v["kernelModules"].clone()), (json!({}), json!([])), "no helper without filterOutput");
    // The server's own module list sets filterOutput here, beside services.nixos-pxe.
    let v = evaluate(&lib, "{ openFirewall = true; interface = \"enp1s0\"; }", "{ }").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["nftables"], json!({}), "{v}");
    let filtered = evaluate_with(&lib, "{ openFirewall = true; interface = \"enp1s0\"; }", "{ }", "{ networking.nftables.enable = true; networking.firewall.filterOutput.enabled = true; }")
        .unwrap_or_else(|e| panic!("{e}"));
    let helper = filtered["nftables"]["nixos-pxe-tftp"]["content"].as_str().unwrap_or_default();
    assert!(helper.contains("type \"tftp\" protocol udp;") && helper.contains("iifname \"enp1s0\" udp dport 69 ct helper set \"tftp\""), "{helper}");
    assert_eq!(filtered["kernelModules"], json!(["nf_conntrack_tftp"]));

    let v = evaluate(&lib, "{ }", "{ }").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["firewall"]["interfaces"], json!({}), "openFirewall is off by default");
    assert_eq!(v["firewall"]["filterOutput"]["interfaces"], json!({}), "and opens nothing outgoing");
}

/// What serve cannot run with is refused at evaluation, saying what to set.
/// database: by default a local PostgreSQL reached over its socket with peer authentication
/// (the role and database named after the unit's user, AF_UNIX allowed, after postgresql.service
/// but not requiring it); a remote url with its password as a credential, no local server; a
/// password in the url is refused (it would be in the store).
#[test]
fn the_database_is_a_local_postgresql_by_default_or_a_remote_one_with_a_credential() {
    let Some(lib) = nixpkgs_lib() else { return };
    let v = evaluate(&lib, "{ database.enable = true; }", "{ }").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["failed"], json!([]));
    let unit = &v["unit"];
    let exec = unit["serviceConfig"]["ExecStart"].as_str().expect("ExecStart");
    assert!(exec.ends_with(" --http-port 80 --database 'host=/run/postgresql dbname=nixos-pxe user=nixos-pxe'"), "{exec}");
    assert_eq!(unit["wants"], json!(["network-online.target", "postgresql.service"]));
    assert_eq!(unit["after"], json!(["network-online.target", "network-addresses-eth1.service", "postgresql.service"]));
    assert!(unit.get("requires").is_none_or(|r| r == &json!([])), "{unit}");
    assert_eq!(unit["serviceConfig"]["RestrictAddressFamilies"], json!(["AF_INET", "AF_UNIX", "AF_INET6"]));
    assert!(unit["serviceConfig"].get("LoadCredential").is_none());
    let pg = &v["postgresql"];
    assert_eq!((&pg["enable"], &pg["ensureDatabases"]), (&json!(true), &json!(["nixos-pxe"])));
    assert_eq!(pg["ensureUsers"], json!([{ "name": "nixos-pxe", "ensureDBOwnership": true }]));

    let remote = "{ database = { enable = true; url = \"postgresql://nixos-pxe@db.example/nixos-pxe\"; passwordFile = \"/run/keys/pw\"; }; }";
    let v = evaluate(&lib, remote, "{ }").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["failed"], json!([]));
    let exec = v["unit"]["serviceConfig"]["ExecStart"].as_str().expect("ExecStart");
    assert!(exec.ends_with(" --database postgresql://nixos-pxe@db.example/nixos-pxe --database-password-file %d/database-password"), "{exec}");
    assert_eq!(v["unit"]["serviceConfig"]["LoadCredential"], json!(["database-password:/run/keys/pw"]));
    assert_eq!(v["postgresql"]["enable"], json!(false));
    assert_eq!(v["unit"]["wants"], json!(["network-online.target"]));

    let v = evaluate(&lib, "{ database = { enable = true; url = \"postgresql://nixos-pxe:s3cret@db.example/nixos-pxe\"; }; }", "{ }").unwrap_or_else(|e| panic!("{e}"));
    assert!(v["failed"].to_string().contains("database.url carries a password"), "{}", v["failed"]);

    let v = evaluate(&lib, "{ }", "{ }").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["postgresql"]["enable"], json!(false), "no database unless asked");
}

#[test]
fn settings_serve_cannot_use_are_assertions() {
    let Some(lib) = nixpkgs_lib() else { return };
    let v = evaluate(&lib, "{ stateDir = \"/srv/pxe-state\"; }", "{ nfsMountOptions = \"vers=3,tcp\"; address = null; }")
        .unwrap_or_else(|e| panic!("{e}"));
    let failed: Vec<&str> = v["failed"].as_array().expect("list").iter().filter_map(Value::as_str).collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed[0].starts_with("services.nixos-pxe.stateDir = \"/srv/pxe-state\": it must be a directory below /var/lib/"), "{failed:?}");
    assert!(
        failed[1].contains("bootServer.nfsMountOptions = \"vers=3,tcp\" lacks port=P and mountport=P")
            && failed[1].contains("\"vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock\""),
        "{failed:?}"
    );
    assert!(failed[2].contains("bootServer.address is not set"), "{failed:?}");
    let v = evaluate(&lib, "{ }", "{ nfsMountOptions = \"vers=3,tcp,port=2049,mountport=2050,mountproto=tcp,nolock\"; }")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["failed"].as_array().map(Vec::len), Some(1), "port and mountport differ: {}", v["failed"]);
    // Secure Boot: nixos-pxe-sign needs the key and certificate, the installer serve's HTTP.
    let v = evaluate(&lib, "{ httpPort = 0; }", "{ secureBoot = { enable = true; keyFile = null; certificateFile = \"/etc/nixos-pxe/db.pem\"; }; }")
        .unwrap_or_else(|e| panic!("{e}"));
    let failed: Vec<&str> = v["failed"].as_array().expect("list").iter().filter_map(Value::as_str).collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed[0].contains("bootServer.secureBoot.enable is set without keyFile and certificateFile"), "{failed:?}");
    assert!(failed[1].contains("httpPort must not be 0"), "{failed:?}");
}

// ---------------------------------------------------------------------------------------------
// The VM check's server unit, run here.

/// The server node of checks.x86_64-linux.pxe-fleet as the stand-in's runNixOSTest writes it
/// (nodes.json), built: the flake's outputs called with the stand-in nixpkgs, from a copy of the
/// repository's files (what a clone has).
fn vm_check_server(lib: &Path, dir: &Path) -> Value {
    let repo = dir.join("repo");
    copy_tracked_files(root(), &repo);
    let machine = dir.join("machine");
    std::fs::create_dir_all(&machine).expect("mkdir machine");
    // Without debug information (tests/flake.rs does the same): the store keeps each copy.
    run(Command::new("strip").arg("--strip-debug").arg("-o").arg(machine.join("nixos-pxe")).arg(env!("CARGO_BIN_EXE_nixos-pxe")));
    let rustc = run(Command::new("rustc").arg("--version"));
    // The stand-in's kernel source is Debian's linux-source-6.1 (as in tests/flake.rs): the fleet's
    // TFTP root holds the kernel, whose .config is made for real.
    let linux_source = "/usr/src/linux-source-6.1.tar.xz";
    assert!(Path::new(linux_source).is_file(), "{linux_source} is missing (apt-get install linux-source-6.1; dev/packages.txt's test group)");
    let version = run(Command::new("dpkg-query").args(["-W", "-f=${Version}", "linux-source-6.1"]));
    let facts = json!({
        "rustcVersion": rustc.split_whitespace().nth(1).expect("rustc X.Y.Z"),
        "linuxSource": { "tarball": linux_source, "version": version },
    });
    std::fs::write(machine.join("facts.json"), facts.to_string()).expect("facts.json");
    let expression = dir.join("check.nix");
    std::fs::write(
        &expression,
        r#"{ repo, nixpkgsLib, machine }:
let
  lib = import (nixpkgsLib + "/lib");
  standInDir = repo + "/tests/nix/stand-in-nixpkgs";
  standIn = import (standInDir + "/interfaces.nix") {
    inherit lib machine;
    system = "x86_64-linux";
    modulesPath = "${standInDir}/nixos/modules";
  };
  # What a flake's nixpkgs input is, as far as the project's Nix layer reads it.
  nixpkgs = { outPath = standInDir; inherit (standIn) lib; legacyPackages.x86_64-linux = standIn.pkgs; };
  self = (import (repo + "/flake.nix")).outputs { inherit self nixpkgs; } // { outPath = repo; };
in
self.checks.x86_64-linux.pxe-fleet
"#,
    )
    .expect("check.nix");
    let out = Command::new("nix-build")
        .env("NIX_CONFIG", NIX_CONFIG)
        .arg("--no-out-link")
        .arg(&expression)
        .arg("--arg").arg("repo").arg(&repo)
        .arg("--arg").arg("nixpkgsLib").arg(lib)
        .arg("--arg").arg("machine").arg(&machine)
        .output()
        .expect("run nix-build");
    assert!(out.status.success(), "building checks.pxe-fleet failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let built = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let nodes: Value = serde_json::from_str(&std::fs::read_to_string(built.join("nodes.json")).expect("nodes.json")).expect("JSON");
    nodes["server"].clone()
}

/// Copies the files `git ls-files --cached --others --exclude-standard` lists, as tests/flake.rs.
fn copy_tracked_files(from: &Path, to: &Path) {
    let list = run(Command::new("git").args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"]).current_dir(from));
    for file in list.split('\0').filter(|f| !f.is_empty()) {
        let source = from.join(file);
        let Ok(meta) = std::fs::symlink_metadata(&source) else { continue };
        let target = to.join(file);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source).expect("readlink"), &target).expect("symlink");
        } else {
            std::fs::copy(&source, &target).unwrap_or_else(|e| panic!("copy {file}: {e}"));
        }
    }
}

/// Every program the run needs, or the test fails (or skips) naming the first one missing.
fn have_programs() -> bool {
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n");
    if !is_root {
        switches::skip_or_fail("needs root for network namespaces");
        return false;
    }
    for (program, package) in [
        ("nix-build", "nix-bin"),
        ("strace", "strace"),
        ("setpriv", "util-linux"),
        ("unshare", "util-linux"),
        ("nft", "nftables"),
        ("busybox", "busybox-static"),
        ("atftp", "atftp"),
        ("curl", "curl"),
        ("nfs-cat", "libnfs-utils"),
        ("systemd-analyze", "systemd"),
    ] {
        let found = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success());
        if !found {
            switches::skip_or_fail(&format!("{program} is not installed (Debian package {package}, dev/packages.txt)"));
            return false;
        }
    }
    true
}

/// Fleet host beta's MAC in checks/vm-fleet (the client below is beta's NIC).
const BETA_MAC: &str = "52:54:00:12:01:02";

/// Two namespaces joined by a veth pair: the server's end named as the unit's interface with the
/// fleet's address, the client's eth0 without one.
struct Network {
    server: Namespace,
    client: Namespace,
}

impl Network {
    fn new(interface: &str, address: &str) -> Network {
        let network = Network { server: Namespace::new("srvmod-s"), client: Namespace::new("srvmod-c") };
        let (s, c) = (&network.server.name, &network.client.name);
        common::sh(&format!(
            "ip -n {s} link add {interface} type veth peer name eth0 netns {c}; \
             ip -n {s} addr add {address}/24 dev {interface}; ip -n {s} link set {interface} up; \
             ip -n {c} link set eth0 up"
        ));
        network
    }

    /// `args` in the client namespace, at most `seconds`; whether it succeeded, its standard
    /// output, and both outputs for a message.
    fn client(&self, seconds: u32, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("timeout")
            .arg(seconds.to_string())
            .args(["ip", "netns", "exec", &self.client.name])
            .args(args)
            .output()
            .expect("run a client");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let both = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        (out.status.success(), stdout, both)
    }
}

/// NixOS's nftables firewall (nixos/modules/services/networking/firewall-nftables.nix, read at
/// 040b4eb6c33439c14b2ed3ff0660131bee4ef852) with the ports of networking.firewall.interfaces:
/// the reverse path filter that lets DHCP through, input dropped unless established, related,
/// from a trusted interface or to an opened port. With `output` (filterOutput.enabled: its
/// interfaces' ports), the output chain as well: dropped unless established, related, to lo or to
/// an opened port. `tables`: networking.nftables.tables besides the firewall's own, as NixOS
/// loads them beside it.
fn nixos_firewall(interfaces: &Value, output: Option<&Value>, tables: &Value) -> String {
    let rules = |interfaces: &Value, direction: &str| {
        let mut allow = String::new();
        for (interface, open) in interfaces.as_object().expect("interfaces") {
            for (proto, key) in [("tcp", "allowedTCPPorts"), ("udp", "allowedUDPPorts")] {
                let ports: Vec<String> = open[key].as_array().expect("ports").iter().map(Value::to_string).collect();
                if !ports.is_empty() {
                    allow.push_str(&format!("    {direction} {interface} {proto} dport {{ {} }} accept\n", ports.join(", ")));
                }
            }
        }
        allow
    };
    let allow = rules(interfaces, "iifname");
    let output_chains = output.map_or_else(String::new, |out| {
        format!(
            r#"  chain output {{
    type filter hook output priority filter; policy drop;
    oifname {{ "lo" }} accept comment "trusted interfaces"
    ct state vmap {{ invalid : drop, established : accept, related : accept, new : jump output-allow }}
  }}
  chain output-allow {{
{}    icmp type {{ echo-request, echo-reply }} accept comment "allow ping"
  }}
"#,
            rules(out, "oifname")
        )
    });
    let mut others = String::new();
    for (name, table) in tables.as_object().expect("networking.nftables.tables") {
        let family = table["family"].as_str().expect("family");
        others.push_str(&format!("table {family} {name} {{\n{}\n}}\n", table["content"].as_str().expect("content")));
    }
    format!(
        r#"table inet nixos-fw {{
  chain rpfilter {{
    type filter hook prerouting priority mangle + 10; policy drop;
    meta nfproto ipv4 udp sport . udp dport {{ 67 . 68, 68 . 67 }} accept comment "DHCPv4 client/server"
    fib saddr . mark . iif oif exists accept
    jump rpfilter-allow
  }}
  chain rpfilter-allow {{
  }}
  chain input {{
    type filter hook input priority filter; policy drop;
    iifname {{ "lo" }} accept comment "trusted interfaces"
    ct state vmap {{ invalid : drop, established : accept, related : accept, new : jump input-allow, untracked : jump input-allow }}
  }}
  chain input-allow {{
{allow}    icmp type echo-request accept comment "allow ping"
  }}
{output_chains}}}
{others}"#
    )
}

fn load_firewall(network: &Network, rules: &str, dir: &Path) {
    let file = dir.join("firewall.nft");
    std::fs::write(&file, rules).expect("write the rules");
    run(Command::new("ip").args(["netns", "exec", &network.server.name, "nft", "flush", "ruleset"]));
    run(Command::new("ip").args(["netns", "exec", &network.server.name, "nft", "-f"]).arg(&file));
}

/// A user id from systemd's DynamicUser range (61184...65519), not the same in two runs at once.
fn dynamic_uid() -> u32 {
    61184 + std::process::id() % 4000
}

/// setpriv's capability list for the unit's `CAP_X` names: `-all,+x,...`.
fn setpriv_caps(caps: &Value) -> String {
    let names: Vec<String> =
        caps.as_array().expect("capabilities").iter().map(|c| format!("+{}", c.as_str().expect("a name").trim_start_matches("CAP_").to_lowercase())).collect();
    std::iter::once("-all".to_string()).chain(names).collect::<Vec<_>>().join(",")
}

/// serve started with the unit's command line as the unit would start it, under strace.
struct Served {
    child: Child,
    log: PathBuf,
    trace: PathBuf,
}

impl Served {
    /// `ambient`: the ambient capabilities to grant (the unit's, or none to see it fail).
    fn start(network: &Network, unit: &Value, ambient: &str, dir: &Path, tag: &str) -> Served {
        let config = &unit["serviceConfig"];
        let exec = config["ExecStart"].as_str().expect("ExecStart");
        let state = config["StateDirectory"].as_str().expect("StateDirectory");
        assert_eq!(config["DynamicUser"], true, "the run below is a dynamic user's");
        assert_eq!(config["NoNewPrivileges"], true);
        let uid = dynamic_uid();
        let (log, trace) = (dir.join(format!("{tag}.log")), dir.join(format!("{tag}.strace")));
        // A private mount namespace: /var/lib as systemd shows it to a DynamicUser unit with
        // StateDirectory= (systemd.exec(5): the directory below /var/lib/private, owned by the
        // unit's user, mode StateDirectoryMode; /var/lib/NAME a link to it), on a tmpfs of this
        // run only.
        let script = format!(
            r#"set -e
mount -t tmpfs tmpfs /var/lib
mkdir -m 0755 /var/lib/private
mkdir -m {mode} /var/lib/private/{state}
chown {uid}:{uid} /var/lib/private/{state}
ln -s private/{state} /var/lib/{state}
ulimit -n {nofile}
exec ip netns exec {ns} strace -f -qq -o {trace} \
  setpriv --reuid {uid} --regid {uid} --clear-groups --no-new-privs \
    --bounding-set={bounding} --inh-caps={ambient} --ambient-caps={ambient} -- {exec}
"#,
            mode = config["StateDirectoryMode"].as_str().expect("StateDirectoryMode"),
            // LimitNOFILE= sets the soft and the hard limit, as bash's ulimit -n does.
            nofile = config["LimitNOFILE"].as_u64().expect("LimitNOFILE"),
            ns = network.server.name,
            trace = trace.display(),
            bounding = setpriv_caps(&config["CapabilityBoundingSet"]),
        );
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "bash", "-c", &script])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .expect("start serve");
        Served { child, log, trace }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has every one of `lines`; fails with the log if serve exits first.
    fn wait_for(&mut self, lines: &[&str]) {
        let start = Instant::now();
        while !lines.iter().all(|l| self.log().contains(l)) {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("serve exited ({status}) before it logged {lines:?}:\n{}", self.log());
            }
            assert!(start.elapsed() < common::SERVER_START_TIMEOUT, "serve did not log {lines:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// serve's own process id: the one that exec'd the unit's program (strace's first column).
    fn serve_pid(&self, program: &str) -> i32 {
        let trace = std::fs::read_to_string(&self.trace).expect("strace output");
        trace
            .lines()
            .find(|l| l.contains(&format!("execve(\"{program}\"")))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no execve of {program} in the trace"))
    }

    /// SIGTERM, as systemd stops a unit; waits for the exit.
    fn stop(mut self, program: &str) -> (std::process::ExitStatus, String, String) {
        let pid = self.serve_pid(program);
        // SAFETY: kill(2) of the process this test started (serve, below setpriv's exec).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "serve did not stop on SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        };
        let trace = std::fs::read_to_string(&self.trace).unwrap_or_default();
        (status, self.log(), trace)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process group this test made for the run.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The system calls of a SystemCallFilter= allow list with ~deny lists, as systemd-analyze
/// expands their groups (Debian 12's systemd 252: NixOS's newer systemd only adds to the groups).
fn allowed_syscalls(filter: &Value) -> BTreeSet<String> {
    fn expand(group: &str, seen: &mut std::collections::BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
        if let Some(names) = seen.get(group) {
            return names.clone();
        }
        let text = run(Command::new("systemd-analyze").args(["syscall-filter", group]));
        let mut names = BTreeSet::new();
        for word in text.lines().map(str::trim).filter(|w| !w.is_empty() && !w.starts_with('#') && *w != group) {
            if word.starts_with('@') {
                names.extend(expand(word, seen));
            } else {
                names.insert(word.to_string());
            }
        }
        seen.insert(group.to_string(), names.clone());
        names
    }
    let mut seen = Default::default();
    let mut allowed = BTreeSet::new();
    for entry in filter.as_array().expect("SystemCallFilter").iter().filter_map(Value::as_str) {
        match entry.strip_prefix('~') {
            None => allowed.extend(expand(entry, &mut seen)),
            Some(denied) => {
                let denied = expand(denied, &mut seen);
                allowed.retain(|name| !denied.contains(name));
            }
        }
    }
    assert!(allowed.len() > 100, "{filter}: {allowed:?}");
    allowed
}

/// The lines of an strace -f log from the exec of `program` on (before it: setpriv's own).
fn serve_lines<'a>(trace: &'a str, program: &str) -> Vec<&'a str> {
    let from = trace.lines().position(|l| l.contains(&format!("execve(\"{program}\""))).expect("the exec of serve");
    trace.lines().skip(from).collect()
}

/// The system call of an strace line (`PID name(...`), None for resumptions, signals and exits.
fn syscall_of(line: &str) -> Option<&str> {
    let rest = line.split_once(' ')?.1.trim_start();
    let name = &rest[..rest.find('(')?];
    name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_').then_some(name)
}

#[test]
fn the_vm_checks_server_unit_serves_a_client_through_nixos_firewall_with_only_its_capability() {
    let Some(lib) = nixpkgs_lib() else { return };
    if !have_programs() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("server-module");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let server = vm_check_server(&lib, &dir);
    let unit = &server["systemd"]["services"]["nixos-pxe"];
    let settings = &server["services"]["nixos-pxe"];
    let fleet = &settings["fleet"];
    let interface = settings["interface"].as_str().expect("interface");
    let address = fleet["config"]["bootServer"]["address"].as_str().expect("bootServer.address");
    let exec = unit["serviceConfig"]["ExecStart"].as_str().expect("ExecStart").to_string();
    let program = exec.split_whitespace().next().expect("a program").to_string();
    let path = |key: &str| PathBuf::from(fleet[key].as_str().unwrap_or_else(|| panic!("fleet.{key}")));
    let (tftp_root, nfs_root, config_json) = (path("tftpRoot"), path("nfsRoot"), path("configJSON"));
    for wanted in [&tftp_root, &nfs_root, &config_json, &PathBuf::from(&program)] {
        assert!(exec.contains(wanted.to_str().expect("utf-8")), "ExecStart names {}: {exec}", wanted.display());
        assert!(wanted.exists(), "{} is built", wanted.display());
    }

    let network = Network::new(interface, address);
    // The client is fleet host beta's NIC: serve gives beta's file with a token only to the
    // address its DHCP gave beta's MAC.
    common::sh(&format!("ip -n {} link set eth0 address {BETA_MAC}", network.client.name));
    let firewall = &server["networking"]["firewall"];
    let open = &firewall["interfaces"];
    assert_eq!(firewall["enable"], true, "the VM check's firewall is on");
    // It filters what the server sends too (nftables, filterOutput): serve's DHCP replies and
    // TFTP transfers get out only through what the module adds for it.
    assert_eq!((server["networking"]["nftables"]["enable"].clone(), firewall["filterOutput"]["enabled"].clone()), (json!(true), json!(true)));
    let out = &firewall["filterOutput"]["interfaces"];
    let tables = &server["networking"]["nftables"]["tables"];
    assert!(tables["nixos-pxe-tftp"]["content"].as_str().is_some_and(|c| c.contains("ct helper set")), "{tables}");
    assert!(server["boot"]["kernelModules"].as_array().is_some_and(|m| m.contains(&json!("nf_conntrack_tftp"))), "{}", server["boot"]);
    load_firewall(&network, &nixos_firewall(open, Some(out), tables), &dir);

    // Without the capability serve cannot start: the port of HTTP (80) is refused.
    let mut bare = Served::start(&network, unit, "-all", &dir, "no-capability");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = bare.child.try_wait().expect("wait") {
            break status;
        }
        assert!(start.elapsed() < common::SERVER_START_TIMEOUT, "serve ran without CAP_NET_BIND_SERVICE:\n{}", bare.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success() && bare.log().contains("Permission denied"), "{status}:\n{}", bare.log());
    drop(bare);

    // With the unit's capabilities: it starts and serves.
    let ambient = setpriv_caps(&unit["serviceConfig"]["AmbientCapabilities"]);
    let mut served = Served::start(&network, unit, &ambient, &dir, "serve");
    served.wait_for(&["dhcp: serving", "tftp: serving", "http: serving", "NFS: serving"]);

    let script = dir.join("udhcpc.sh");
    // udhcpc's script: on a lease, say what came with it and configure the address, as a client does.
    std::fs::write(
        &script,
        "#!/bin/sh\nif [ \"$1\" = bound ]; then\n  echo \"bound ip=$ip bootfile=$boot_file rootpath=$rootpath\"\n  ip addr add \"$ip/$mask\" dev \"$interface\"\nfi\nexit 0\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let udhcpc = ["busybox", "udhcpc", "-f", "-i", "eth0", "-n", "-q", "-t", "4", "-T", "1", "-O", "rootpath", "-O", "bootfile", "-s", script.to_str().expect("utf-8")];
    let (ok, text, said) = network.client(30, &udhcpc);
    assert!(ok && text.contains("bootfile=bootx64.efi") && text.contains(&format!("rootpath={address}:")), "DHCP:\n{said}\n{}", served.log());

    for file in ["bootx64.efi", "nixos/bzImage"] {
        let got = dir.join(file.replace('/', "-"));
        let (ok, _, said) = network.client(30, &["atftp", "--get", "-r", file, "-l", got.to_str().expect("utf-8"), address]);
        assert!(ok, "TFTP {file}:\n{said}\n{}", served.log());
        assert_eq!(std::fs::read(&got).expect("got"), std::fs::read(tftp_root.join(file)).expect("served"), "{file}");
    }

    let (ok, text, said) = network.client(30, &["curl", "-fsS", &format!("http://{address}/nixos-pxe/hosts/mac-{BETA_MAC}.cfg")]);
    assert!(ok && text.contains("is beta: installing generation 1") && text.contains("nixos-pxe.token="), "HTTP:\n{said}\n{}", served.log());
    assert!(served.log().contains(&format!("fleet: bound (its host's file and reports from this address only) mac={BETA_MAC}")), "{}", served.log());
    // No list of the fleet on the boot network: the status is the operator's (fleet status).
    let (ok, _, said) = network.client(30, &["curl", "-fsS", &format!("http://{address}/v1/hosts")]);
    assert!(!ok && said.contains("404"), "GET /v1/hosts: {said}");

    let export = fleet["config"]["bootServer"]["nfsExport"].as_str().expect("nfsExport");
    let nfs = |file: &str| format!("nfs://{address}{export}/{file}?version=3&nfsport=2049&mountport=2049");
    let (ok, text, said) = network.client(30, &["nfs-cat", &nfs("nixos-pxe/config.json")]);
    assert!(ok, "NFS:\n{said}\n{}", served.log());
    assert_eq!(text, std::fs::read_to_string(&config_json).expect("config.json"), "config.json over NFS");
    let served_config: Value = serde_json::from_str(&text).expect("JSON");
    let image = served_config["fleet"]["hosts"]["beta"]["image"].as_str().expect("beta's image");
    let copy = dir.join("image");
    let (ok, _, said) = network.client(30, &["nfs-cp", &nfs(&format!("nixos-pxe/{image}")), copy.to_str().expect("utf-8")]);
    assert!(ok, "NFS {image}:\n{said}");
    assert_eq!(std::fs::read(&copy).expect("copy"), std::fs::read(nfs_root.join("nixos-pxe").join(image)).expect("image"));

    // Filtering outgoing packets without the TFTP helper's table: the transfer's first packet
    // (from serve's new port to the client's) is dropped, while DHCP and HTTP still pass.
    load_firewall(&network, &nixos_firewall(open, Some(out), &json!({})), &dir);
    assert!(!network.client(10, &["atftp", "--get", "-r", "bootx64.efi", "-l", "/dev/null", address]).0, "TFTP out without the conntrack helper");
    let (ok, _, said) = network.client(30, &udhcpc);
    assert!(ok, "DHCP without the TFTP helper:\n{said}");
    assert!(network.client(10, &["curl", "-fsS", "-m", "5", "-o", "/dev/null", &format!("http://{address}/bootx64.efi")]).0, "HTTP without the TFTP helper");
    // Without the outgoing port 68: no DHCP reply leaves the server; TFTP, helped, still passes.
    let mut no_dhcp_out = out.clone();
    for ports in no_dhcp_out.as_object_mut().expect("interfaces").values_mut() {
        ports["allowedUDPPorts"] = json!([]);
    }
    load_firewall(&network, &nixos_firewall(open, Some(&no_dhcp_out), tables), &dir);
    assert!(!network.client(10, &udhcpc).0, "a lease without port 68 open outgoing");
    assert!(network.client(30, &["atftp", "--get", "-r", "bootx64.efi", "-l", "/dev/null", address]).0, "TFTP with the helper");

    // Behind the same firewall without the ports the module opened, no client gets through.
    let mut closed = open.clone();
    for ports in closed.as_object_mut().expect("interfaces").values_mut() {
        ports["allowedTCPPorts"] = json!([]);
        ports["allowedUDPPorts"] = json!([]);
    }
    load_firewall(&network, &nixos_firewall(&closed, Some(out), tables), &dir);
    assert!(!network.client(10, &udhcpc).0, "a lease without port 67 open");
    assert!(!network.client(10, &["atftp", "--get", "-r", "bootx64.efi", "-l", "/dev/null", address]).0, "TFTP without port 69 open");
    assert!(!network.client(10, &["curl", "-fsS", "-m", "5", &format!("http://{address}/bootx64.efi")]).0, "HTTP without its port open");

    let (status, log, trace) = served.stop(&program);
    assert!(status.success() && log.contains("http: stopped"), "{status}:\n{log}");

    // The sandbox: what serve did fits what the unit allows.
    let config = &unit["serviceConfig"];
    let lines = serve_lines(&trace, &program);
    let allowed = allowed_syscalls(&config["SystemCallFilter"]);
    let used: BTreeSet<&str> = lines.iter().filter_map(|l| syscall_of(l)).collect();
    assert!(used.contains("sendto") && used.contains("bind") && used.len() > 30, "{used:?}");
    let refused: Vec<&&str> = used.iter().filter(|s| !allowed.contains(**s)).collect();
    assert!(refused.is_empty(), "system calls outside SystemCallFilter {}: {refused:?}", config["SystemCallFilter"]);
    let families: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split_once(" socket(").or_else(|| l.split_once(" socketpair(")))
        .filter_map(|(_, args)| args.split(',').next())
        .collect();
    let restricted: BTreeSet<&str> = config["RestrictAddressFamilies"].as_array().expect("families").iter().filter_map(Value::as_str).collect();
    assert!(families.contains("AF_INET") && families.is_subset(&restricted), "socket families {families:?}, allowed {restricted:?}");
    let write_exec: Vec<&&str> = lines
        .iter()
        .filter(|l| (l.contains(" mmap(") && l.contains("PROT_WRITE") && l.contains("PROT_EXEC")) || (l.contains(" mprotect(") && l.contains("PROT_EXEC")))
        .collect();
    assert!(write_exec.is_empty(), "MemoryDenyWriteExecute: {write_exec:?}");
    assert!(!lines.iter().any(|l| l.contains("CLONE_NEW") || l.contains(" unshare(") || l.contains(" setns(")), "RestrictNamespaces");
    let state = format!("/var/lib/{}", config["StateDirectory"].as_str().expect("StateDirectory"));
    let private_state = format!("/var/lib/private/{}", config["StateDirectory"].as_str().expect("StateDirectory"));
    let mut written = 0;
    for line in &lines {
        let writes = (line.contains(" open(") || line.contains(" openat(")) && ["O_WRONLY", "O_RDWR", "O_CREAT"].iter().any(|f| line.contains(f))
            || [" unlink(", " unlinkat(", " rename(", " renameat(", " renameat2(", " mkdir(", " mkdirat("].iter().any(|c| line.contains(c));
        if !writes || line.contains("= -1 ") {
            continue;
        }
        let paths: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert!(
            !paths.is_empty() && paths.iter().all(|p| p.starts_with(&format!("{state}/")) || p.starts_with(&format!("{private_state}/"))),
            "ProtectSystem=strict: written outside the state directory: {line}"
        );
        written += 1;
    }
    assert!(written >= 3, "the state's writes were seen in the trace");
}
