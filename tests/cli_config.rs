//! `nixos-pxe options` and `check` run as a user runs them: the built binary on real files.

mod switches;

use std::path::Path;
use std::process::{Command, Output};

fn pxe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nixos-pxe"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run nixos-pxe")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn nix_available() -> bool {
    Command::new("nix")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The fleet example the options tests read.
const FLEET: &str = "examples/fleet/installer.nix";

/// Where `word` is in `file` (from the project's root), as `file:line:column` (from 1), on the
/// first line that holds `line_holding`: what an origin names, found in the file's text.
fn at(file: &str, line_holding: &str, word: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let (number, line) = text.lines().enumerate().find(|(_, l)| l.contains(line_holding)).unwrap_or_else(|| panic!("{file} has no line with {line_holding}"));
    let column = line.find(word).unwrap_or_else(|| panic!("{file}:{}: no {word}", number + 1)) + 1;
    format!("{file}:{}:{column}", number + 1)
}

/// The line `nixos-pxe options` prints for `option`, or "" when there is none.
fn option_line(stdout: &str, option: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{option} ")))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn check_points_at_the_bad_value_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("host.nix");
    std::fs::write(
        &file,
        "{ config, ... }:\n{\n  nfsroot.bootLoader.efinetDHCPInterface = \"eth0\";\n  customInstaller.wipe = \"sometimes\";\n}\n",
    )
    .expect("write");
    let before: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
    for source in ["static", "eval"] {
        if source == "eval" && !nix_available() {
            eprintln!("nix is not installed: eval mode not checked here (CI installs nix-bin)");
            continue;
        }
        let out = pxe(&[
            "check",
            "--config",
            file.to_str().expect("utf8"),
            "--source",
            source,
        ]);
        assert_eq!(out.status.code(), Some(1), "{source}");
        let err = text(&out.stderr);
        assert!(
            err.contains("host.nix:3:3: nfsroot.bootLoader.efinetDHCPInterface: \"eth0\" is not a GRUB EFI network interface; expected efinetN"),
            "{source}: {err}"
        );
        assert!(
            err.contains(" 3 |   nfsroot.bootLoader.efinetDHCPInterface = \"eth0\";\n   |   ^"),
            "{source}: {err}"
        );
        assert!(err.contains("host.nix:4:3: customInstaller.wipe: \"sometimes\" is not one of \"if-empty\", \"always\""), "{source}: {err}");
        assert!(
            err.contains("2 problem(s); nothing was written."),
            "{source}: {err}"
        );
        assert!(out.stdout.is_empty());
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        before.len()
    );
}

#[test]
fn options_say_where_each_value_came_from() {
    let out = pxe(&[
        "options",
        "--config",
        "examples/seed/installer.nix",
        "--source",
        "static",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = |option: &str| option_line(&stdout, option);
    assert!(
        line("nfsroot.bootLoader.efinetDHCPInterface").ends_with("\"efinet0\"  (default)"),
        "{stdout}"
    );
    assert!(
        line("bootServer.address").ends_with(&format!("\"10.42.0.1\"  ({})", at("examples/seed/installer.nix", "address = \"10.42.0.1\"", "address"))),
        "{stdout}"
    );
    let json = pxe(&[
        "options",
        "--config",
        "examples/seed/installer.nix",
        "--source",
        "static",
        "--json",
    ]);
    let parsed: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("options --json is JSON");
    let entries = parsed.as_array().expect("a list");
    // The seed has no fleet: every option but those of fleet hosts.
    let flat = nixos_pxe_installer::schema::OPTIONS
        .iter()
        .filter(|o| o.named_set().is_none())
        .count();
    assert_eq!(entries.len(), flat);
    let address = entries
        .iter()
        .find(|e| e["option"] == "bootServer.address")
        .expect("listed");
    assert_eq!(address["origin"]["kind"], "defined");
    let seed_address = at("examples/seed/installer.nix", "address = \"10.42.0.1\"", "address");
    assert_eq!(address["origin"]["line"].to_string(), seed_address.split(':').nth(1).expect("a line"));
}

#[test]
fn both_examples_read_the_same_statically_and_evaluated() {
    if !nix_available() {
        switches::skip_or_fail("`nix --version` does not run: nix is not installed (apt-get install nix-bin)");
        return;
    }
    for example in [
        "examples/seed/installer.nix",
        "examples/static-second-nic/installer.nix",
        "examples/fleet/installer.nix",
    ] {
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(example).exists());
        let read = |source: &str| {
            let out = pxe(&["options", "--config", example, "--source", source, "--json"]);
            assert!(
                out.status.success(),
                "{example} {source}: {}",
                text(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
        };
        assert_eq!(read("static"), read("eval"), "{example}");
    }
}

#[test]
fn a_missing_file_is_named() {
    let out = pxe(&[
        "check",
        "--config",
        "no/such/file.nix",
        "--source",
        "static",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read no/such/file.nix"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn eval_reads_let_and_string_operations_that_static_rejects() {
    if !nix_available() {
        switches::skip_or_fail("`nix --version` does not run: nix is not installed (apt-get install nix-bin)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("h.nix");
    std::fs::write(
        &file,
        "{ config, ... }:\nlet\n  n = 2;\nin {\n  customInstaller.rootDevice = \"/dev/sd\" + \"b\";\n  bootServer.leaseSeconds = 300 * n;\n  nfsroot.bootLoader.efinetDHCPInterface = \"efinet${builtins.toString n}\";\n}\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf8");
    let stat = pxe(&["check", "--config", path, "--source", "static"]);
    assert_eq!(stat.status.code(), Some(1));
    assert!(
        text(&stat.stderr).contains("h.nix:2:1: the file is a `let ... in` expression"),
        "{}",
        text(&stat.stderr)
    );
    let out = pxe(&["options", "--config", path, "--source", "eval"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = |option: &str| option_line(&stdout, option);
    assert!(
        line("customInstaller.rootDevice").contains("\"/dev/sdb\"  (")
            && line("customInstaller.rootDevice").contains("h.nix:5:3)"),
        "{stdout}"
    );
    assert!(
        line("bootServer.leaseSeconds").contains("600  (")
            && line("bootServer.leaseSeconds").contains("h.nix:6:3)"),
        "{stdout}"
    );
    assert!(
        line("nfsroot.bootLoader.efinetDHCPInterface").contains("\"efinet2\"")
            && line("nfsroot.bootLoader.efinetDHCPInterface").contains("h.nix:7:3)"),
        "{stdout}"
    );
}

/// `nixos-pxe options` on the fleet example: each host's resolved values and where each came
/// from: the host's own definition, the top-level one it inherits, or a default.
#[test]
fn options_show_each_hosts_resolved_values_and_their_origin() {
    let out = pxe(&[
        "options",
        "--config",
        "examples/fleet/installer.nix",
        "--source",
        "static",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = |option: &str| option_line(&stdout, option);
    for (option, ending) in [
        ("fleet.hosts.web2.customInstaller.wipe", format!("\"always\"  ({})", at(FLEET, "customInstaller.wipe = \"always\"", "customInstaller"))),
        ("fleet.hosts.web1.customInstaller.wipe", "\"if-empty\"  (customInstaller.wipe's default)".to_string()),
        ("fleet.hosts.web1.customInstaller.rootDevice", format!("\"/dev/vda\"  (customInstaller.rootDevice at {})", at(FLEET, "rootDevice = \"/dev/vda\"", "rootDevice"))),
        ("fleet.hosts.db1.customInstaller.rootSizeMiB", format!("102400  ({})", at(FLEET, "rootSizeMiB = 102400", "rootSizeMiB"))),
        ("fleet.hosts.db1.generation", format!("2  ({})", at(FLEET, "generation = 2", "generation"))),
        ("fleet.hosts.web1.generation", "1  (default)".to_string()),
        ("fleet.hosts.db1.macs", format!("[\"5254.0000.0b01\",\"5254.0000.0b02\"]  ({})", at(FLEET, "5254.0000.0b01", "macs"))),
        ("fleet.unknownHosts", format!("\"local-boot\"  ({})", at(FLEET, "unknownHosts = ", "unknownHosts"))),
    ] {
        assert!(line(option).ends_with(&ending), "{option}: {:?}\n{stdout}", line(option));
    }
    assert_eq!(line("fleet.hosts.web1.image"), "", "not a Nix option, not set: not listed");
}

/// `--as-config-json` writes the fleet object (MACs normalised, only each host's overrides), and
/// reading it back gives every host the same resolved values.
#[test]
fn the_fleet_round_trips_through_its_json_form() {
    let out = pxe(&[
        "options",
        "--config",
        "examples/fleet/installer.nix",
        "--source",
        "static",
        "--as-config-json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tree: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let fleet = &tree["fleet"];
    assert_eq!(fleet["maxAttempts"], 3);
    assert_eq!(fleet["unknownHosts"], "local-boot");
    assert_eq!(
        fleet["hosts"]["db1"]["macs"],
        serde_json::json!(["52:54:00:00:0b:01", "52:54:00:00:0b:02"])
    );
    assert_eq!(
        fleet["hosts"]["db1"]["customInstaller"],
        serde_json::json!({ "rootDevice": "/dev/disk/by-id/nvme-SAMSUNG_MZVL2512HCJQ_S675NX0T654321", "rootSizeMiB": 102400 })
    );
    assert_eq!(fleet["hosts"]["web1"]["customInstaller"], serde_json::json!({}));
    assert_eq!(fleet["hosts"]["db1"]["target"]["flake"], "github:example/infra#db1");
    // Back in, with an image as lib.mkFleet adds it.
    let mut tree = tree;
    tree["fleet"]["hosts"]["web1"]["image"] = "systems/web.tar.zst".into();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.json");
    std::fs::write(&file, tree.to_string()).expect("write");
    let json = |config: &str| {
        let out = pxe(&["options", "--config", config, "--source", "static", "--json"]);
        assert!(out.status.success(), "{config}: {}", text(&out.stderr));
        let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
        all.into_iter()
            .filter(|e| e["option"].as_str().is_some_and(|o| o.starts_with("fleet.hosts.")))
            .map(|e| (e["option"].as_str().unwrap_or_default().to_string(), e["value"].clone()))
            .collect::<Vec<_>>()
    };
    let nix = json("examples/fleet/installer.nix");
    let mut back = json(file.to_str().expect("utf8"));
    assert!(back.contains(&("fleet.hosts.web1.image".to_string(), "systems/web.tar.zst".into())));
    back.retain(|(o, _)| o != "fleet.hosts.web1.image");
    let normalised = |v: &[(String, serde_json::Value)]| {
        v.iter()
            .filter(|(o, _)| !o.ends_with(".macs"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(normalised(&back), normalised(&nix));
}

/// A broken fleet, read statically and evaluated: every problem at its place, with a hint.
#[test]
fn check_reports_every_fleet_problem_at_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("fleet.nix");
    std::fs::write(
        &file,
        r#"{
  nfsroot.bootLoader.linuxPnPInterface = "auto";
  fleet.hosts = {
    web1 = {
      macs = [ "52:54:00:00:00:01" ];
      target.flake = "/etc/fleet#web1";
    };
    Web_2 = {
      macs = [ "52-54-00-00-00-01" "52:54:00:zz:00:02" ];
      target.flake = "/etc/fleet#web2";
    };
    db1.generation = 2;
    db2 = {
      macs = [ "52:54:00:00:0d:02" ];
      image = "systems/x.tar.zst";
      target.directory = ./db2;
      target.flake = "/etc/fleet#db2";
    };
  };
}
"#,
    )
    .expect("write");
    for source in ["static", "eval"] {
        if source == "eval" && !nix_available() {
            eprintln!("nix is not installed: eval mode not checked here (CI installs nix-bin)");
            continue;
        }
        let out = pxe(&["check", "--config", file.to_str().expect("utf8"), "--source", source]);
        assert_eq!(out.status.code(), Some(1), "{source}");
        let err = text(&out.stderr);
        // Reported before anything else: a Nix file does not set a host's image.
        assert!(err.contains("fleet.nix:15:7: fleet.hosts.db2.image: `fleet.hosts.db2.image` is written by lib.mkFleet"), "{source}: {err}");
        // Without it, the rest.
        let text2 = std::fs::read_to_string(&file).expect("read").replace("      image = \"systems/x.tar.zst\";\n", "");
        let file2 = dir.path().join("fleet2.nix");
        std::fs::write(&file2, text2).expect("write");
        let out = pxe(&["check", "--config", file2.to_str().expect("utf8"), "--source", source]);
        assert_eq!(out.status.code(), Some(1), "{source}");
        let err = self::text(&out.stderr);
        let expected = "fleet2.nix:9:7: fleet.hosts.Web_2.macs: \"52:54:00:zz:00:02\" is not a MAC address: 'z' is not a hexadecimal digit";
        assert!(err.contains(expected), "{source}: {expected}\n{err}");
        // And with the bad MAC fixed, the rules between values.
        let text3 = std::fs::read_to_string(&file2).expect("read").replace("52:54:00:zz:00:02", "52:54:00:00:00:02");
        let file3 = dir.path().join("fleet3.nix");
        std::fs::write(&file3, text3).expect("write");
        let out = pxe(&["check", "--config", file3.to_str().expect("utf8"), "--source", source]);
        assert_eq!(out.status.code(), Some(1), "{source}");
        let err = self::text(&out.stderr);
        for expected in [
            "fleet3.nix:4:5: nfsroot.bootLoader.efinetDHCPInterface: a fleet needs \"auto\", not \"efinet0\"",
            "(hint: set nfsroot.bootLoader.efinetDHCPInterface = \"auto\";)",
            "fleet3.nix:8:5: fleet.hosts.Web_2: the host name \"Web_2\" holds 'W'",
            "fleet3.nix:5:7: fleet.hosts.web1.macs: 52:54:00:00:00:01 is listed for web1 here and for Web_2 at ",
            "fleet3.nix:12:5: fleet.hosts.db1.macs: the host db1 has no MAC address",
            "fleet3.nix:12:5: fleet.hosts.db1.target: the host db1 has no target",
            "fleet.hosts.db2.target.flake: both target.directory and target.flake are set for db2",
        ] {
            assert!(err.contains(expected), "{source}: {expected}\n{err}");
        }
        // The MAC's other place is named with its line: Web_2's list.
        assert!(err.contains("fleet3.nix:9:7; a MAC belongs to one host (hint: remove it from web1 or from Web_2)"), "{source}: {err}");
        assert!(err.contains("6 problem(s); nothing was written."), "{source}: {err}");
    }
}

/// `customInstaller.firmware` and a fleet host's own, read statically and evaluated alike; a
/// value that is not a firmware is refused at its place with the allowed ones.
#[test]
fn the_firmware_option_and_a_hosts_own_are_read_by_both_readers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("fw.nix");
    std::fs::write(
        &file,
        "{ ... }:\n{\n  customInstaller.firmware = \"auto\";\n  fleet.hosts.old = {\n    macs = [ \"52:54:00:00:0c:01\" ];\n    target.directory = ./.;\n    customInstaller.firmware = \"bios\";\n  };\n  fleet.hosts.new = { macs = [ \"52:54:00:00:0c:02\" ]; target.directory = ./.; };\n  nfsroot.bootLoader = { efinetDHCPInterface = \"auto\"; linuxPnPInterface = \"auto\"; };\n}\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf8");
    let sources: &[&str] = if nix_available() { &["static", "eval"] } else { &["static"] };
    if !nix_available() {
        switches::skip_or_fail("`nix --version` does not run: nix is not installed (apt-get install nix-bin); the static reader was checked");
    }
    for source in sources {
        let out = pxe(&["options", "--config", path, "--source", source]);
        assert!(out.status.success(), "{source}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let line = |option: &str| option_line(&stdout, option);
        assert!(line("customInstaller.firmware").contains("\"auto\"  (") && line("customInstaller.firmware").contains("fw.nix:3:3)"), "{source}:\n{stdout}");
        assert!(line("fleet.hosts.old.customInstaller.firmware").contains("\"bios\"  (") && line("fleet.hosts.old.customInstaller.firmware").contains("fw.nix:7:5)"), "{source}:\n{stdout}");
        assert!(line("fleet.hosts.new.customInstaller.firmware").contains("\"auto\"  (customInstaller.firmware at ") && line("fleet.hosts.new.customInstaller.firmware").ends_with("fw.nix:3:3)"), "{source}:\n{stdout}");
    }
    std::fs::write(&file, "{ ... }:\n{\n  customInstaller.firmware = \"legacy\";\n}\n").expect("write");
    let out = pxe(&["check", "--config", path, "--source", "static"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("fw.nix:3:") && stderr.contains("\"legacy\" is not one of \"auto\", \"uefi\", \"bios\", \"both\""), "{stderr}");
}
