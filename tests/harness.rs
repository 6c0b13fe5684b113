//! The namespace tests' own harness (tests/common) keeps its promises: a failing or hanging
//! script ends serve and the test instead of waiting forever, a server that never becomes ready
//! fails the run with its log, and namespaces are deleted whatever ends the test. Needs root.

mod common;

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn serve_args() -> String {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed/installer.nix");
    format!("--config {config} --source static --interface lo --dhcp off --tftp-root root")
}

/// Runs `with_serve_on_loopback` on a thread and gives up after `limit`: a harness that waits
/// forever fails here instead of hanging the suite.
fn loopback_within(limit: Duration, ready: &'static str, script: &'static str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("root")).expect("mkdir");
    let (send, receive) = mpsc::channel();
    let path = dir.path().to_owned();
    std::thread::spawn(move || {
        let result = common::with_serve_on_loopback(&path, &serve_args(), ready, script, "tftp: stopped");
        let _ = send.send(result);
    });
    receive
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("with_serve_on_loopback did not return within {limit:?} (serve left running?)"))
}

#[test]
fn a_failing_command_in_the_script_stops_serve_and_returns() {
    let start = Instant::now();
    let (ok, text) = loopback_within(Duration::from_secs(60), "tftp: serving", "false\necho NOT-REACHED");
    assert!(!ok, "{text}");
    assert!(!text.contains("NOT-REACHED") && !text.contains("ALL-OK"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
}

#[test]
fn a_server_that_never_becomes_ready_fails_with_its_log() {
    let (ok, text) = loopback_within(Duration::from_secs(60), "a line serve never logs", "echo SCRIPT-RAN");
    assert!(!ok, "{text}");
    assert!(text.contains("serve did not log 'a line serve never logs' within 10 s"), "{text}");
    assert!(text.contains("tftp: serving"), "the server's log is shown:\n{text}");
    assert!(!text.contains("SCRIPT-RAN"), "the script ran against a server that was not ready:\n{text}");
}

#[test]
fn a_script_past_its_deadline_is_stopped_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = Instant::now();
    let stopped = std::sync::atomic::AtomicBool::new(false);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        common::run_within(Command::new("sh").args(["-c", "echo started; sleep 600"]), dir.path(), Duration::from_secs(1), || {
            stopped.store(true, std::sync::atomic::Ordering::Relaxed)
        })
    }));
    let message = result.err().and_then(|e| e.downcast_ref::<String>().cloned()).expect("run_within fails the test");
    assert!(message.contains("did not end within 1s") && message.contains("started"), "{message}");
    assert!(stopped.into_inner(), "the stop callback ran");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
}

/// A namespace is gone after its owner is dropped, also when a panic drops it.
#[test]
fn a_namespace_is_deleted_when_a_panic_drops_it() {
    let name = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let ns = common::Namespace::new("harness");
        *name.lock().expect("lock") = ns.name.clone();
        panic!("a test failing while it holds the namespace");
    });
    assert!(result.is_err());
    let name = name.into_inner().expect("lock");
    let list = common::run(Command::new("ip").args(["netns", "list"]));
    assert!(!name.is_empty() && !list.lines().any(|l| l.split_whitespace().next() == Some(name.as_str())), "{name} left behind:\n{list}");
}

/// The host-state guard leaves out what `ip netns add` mounts: on a machine that never made a
/// namespace, the first one makes /run/netns a mount point (a bind mount of itself, the line
/// below as a new Debian 12 machine showed it), and it stays one.
#[test]
fn the_host_state_guard_leaves_out_ip_netns_own_mounts_and_nothing_else() {
    let own = [
        "45 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534",
        "640 45 0:4 net:[4026532310] /run/netns/nixos-pxe-arch-dnsmasq-1234-0 rw shared:288 - nsfs nsfs rw",
        "700 29 0:52 / /tmp/.tmpAbCdEf/mnt rw,relatime shared:300 - ext4 /dev/loop3 rw",
    ];
    for line in own {
        assert!(common::HostState::is_tests_own_mount(line), "{line}");
    }
    let host = [
        "29 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard",
        "30 29 0:25 / /run rw,nosuid,nodev shared:2 - tmpfs tmpfs rw",
        "701 30 254:0 /run/netnsx /run/netnsx rw,relatime shared:1 - ext4 /dev/vda rw",
        "702 29 0:53 / /tmpfoo rw shared:301 - tmpfs tmpfs rw",
    ];
    for line in host {
        assert!(!common::HostState::is_tests_own_mount(line), "{line}");
    }
}

/// The host-state guard finds what a test leaves behind below its own directory and in this
/// process's namespaces: a server still running (a process holding its log there), a loop device
/// over a file there, a mount there, a namespace no owner holds; each named, and gone from the
/// guard's answer once removed. An owned namespace is not a leak.
#[test]
fn the_host_state_guard_finds_what_a_test_leaves_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().canonicalize().expect("canonical");
    let leak = format!("nixos-pxe-harness-leak-{}", std::process::id());
    // Should an assertion below fail before its clean-up, the watcher removes what is left.
    common::reap_when_this_process_ends(&format!(
        "umount -l '{d}/mnt' 2>/dev/null; losetup -n -O NAME -j '{d}/disk.img' | xargs -r -n1 losetup -d; ip netns del {leak} 2>/dev/null",
        d = d.display()
    ));
    let guard = common::HostState::below(&[dir.path()]);
    let now = || guard.changes(Duration::ZERO);
    assert_eq!(now(), Vec::<String>::new(), "nothing left before anything was made");

    let log = std::fs::File::create(d.join("server.log")).expect("log");
    let mut server = Command::new("sleep").arg("600").stdout(log).spawn().expect("sleep");
    let left = now();
    let _ = server.kill();
    let _ = server.wait();
    let held = format!("process holding a file below {} left: pid {} (sleep 600) holds {}/server.log", d.display(), server.id(), d.display());
    assert_eq!(left, [held], "a server left running");
    assert_eq!(guard.changes(common::host_state::SETTLE), Vec::<String>::new(), "the server stopped");

    let backing = d.join("disk.img");
    std::fs::File::create(&backing).expect("backing").set_len(1 << 20).expect("size");
    let device = common::run(Command::new("losetup").args(["--find", "--show"]).arg(&backing)).trim().to_string();
    let left = now();
    common::run(Command::new("losetup").args(["-d", &device]));
    assert_eq!(left, [format!("loop device below {} left: {device} over {}", d.display(), backing.display())], "a loop device left attached");
    assert_eq!(guard.changes(common::host_state::SETTLE), Vec::<String>::new(), "the loop device detached");

    // On the host's mount table, below the test's own directory, as the install tests mount.
    std::fs::create_dir(d.join("mnt")).expect("mkdir");
    common::run(Command::new("mount").args(["-t", "tmpfs", "harness-guard"]).arg(d.join("mnt")));
    let left = now();
    common::run(Command::new("umount").arg(d.join("mnt")));
    assert_eq!(left, [format!("mount below {} left: {}/mnt (harness-guard)", d.display(), d.display())], "a mount left");
    assert_eq!(now(), Vec::<String>::new(), "unmounted");

    common::run(Command::new("ip").args(["netns", "add", &leak]));
    let left = now();
    common::run(Command::new("ip").args(["netns", "del", &leak]));
    assert_eq!(left, [format!("network namespace {leak} of this test process left with no owner")], "a namespace no owner holds");
    let owned = common::Namespace::new("harness-owned");
    assert_eq!(now(), Vec::<String>::new(), "{} is owned", owned.name);
    drop(owned);
    assert_eq!(now(), Vec::<String>::new(), "and deleted with its owner");
}
