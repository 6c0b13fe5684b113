//! nixos-pxe is the NFS root's init only when started as init (argv[0] named `init`, PID 1), never
//! because it is PID 1: run as the first process of a new PID namespace, as a container's
//! entrypoint or a sandbox's `exec`ed build step is, a subcommand runs as it runs anywhere else.
//!
//! Everything runs in throwaway namespaces (a private mount namespace, a new PID namespace), so
//! nothing is mounted on this machine, and nothing outlives the test: `setpriv --pdeathsig KILL`
//! kills unshare when the test's thread ends, `unshare --kill-child` passes that on to the
//! namespace's PID 1, and the kernel kills everything in a PID namespace whose PID 1 dies. A
//! respawning rescue shell (what init does when config.json is missing) is killed that way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nixos-pxe");
/// Long enough for a subcommand (well under a second), short enough to fail soon when one
/// became init and waits in its rescue shell forever.
const DEADLINE: Duration = Duration::from_secs(20);

/// A process tree in throwaway namespaces; killed when dropped, also when the test panics.
struct Sandbox {
    child: Child,
}

impl Sandbox {
    /// Runs `unshare UNSHARE_ARGS -- sh -ec SCRIPT sh ARGS...` with stdout and stderr in `dir`.
    fn start(dir: &Path, unshare_args: &[&str], script: &str, args: &[&str]) -> Sandbox {
        let file = |name: &str| std::fs::File::create(dir.join(name)).expect("create output file");
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "unshare"])
            .args(unshare_args)
            .args(["--", "sh", "-ec", script, "sh"])
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(file("sandbox.out"))
            .stderr(file("sandbox.err"))
            .spawn()
            .expect("run setpriv and unshare (util-linux)");
        Sandbox { child }
    }

    /// Waits for the sandbox to exit; None when it is still running at the deadline.
    fn wait(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for unshare") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The mount table of the sandbox's first process (unshare, then sh: one process), as this
    /// machine's /proc shows it.
    fn mounts(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.child.id())).unwrap_or_default()
    }

    /// The host PIDs of the sandbox's first process's children (with `--fork`: the namespace's PID 1).
    fn children(&self) -> Vec<u32> {
        let pid = self.child.id();
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// The first `n` lines of `text`, for failure messages (a rescue shell writes without end).
fn head(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join("\n")
}

/// What a run printed and returned.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    stdout: String,
    stderr: String,
    status: Option<i32>,
}

fn outside(args: &[&str]) -> Run {
    let out = Command::new(BIN).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("run nixos-pxe");
    Run { stdout: read_bytes(&out.stdout), stderr: read_bytes(&out.stderr), status: out.status.code() }
}

fn read_bytes(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// In a private mount namespace: /sys is unmounted (as in a bare sandbox, so an init would mount
/// it), the mount table recorded, then `nixos-pxe ARGS` runs as PID 1 of a new PID namespace with
/// its own /proc (`unshare -fp --mount-proc`, but in this mount namespace, so that what it
/// mounts stays visible after it exits); then its /proc is unmounted and the table recorded again.
const AS_PID_1: &str = r#"
bin=$1; out=$2; shift 2
umount -l /sys
cat /proc/self/mountinfo > "$out/before"
set +e
setpriv --pdeathsig KILL unshare --pid --fork --kill-child=SIGKILL -- \
  sh -c 'test "$$" = 1 || { echo "not PID 1 but $$" >&2; exit 97; }; mount -t proc proc /proc && exec "$0" "$@"' \
  "$bin" "$@" > "$out/stdout" 2> "$out/stderr" < /dev/null
echo $? > "$out/status"
set -e
umount /proc
cat /proc/self/mountinfo > "$out/after"
"#;

fn as_pid_1(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8 temp path");
    let mut sandbox_args = vec![BIN, out];
    sandbox_args.extend_from_slice(args);
    let mut sandbox = Sandbox::start(dir.path(), &["--mount", "--propagation", "private"], AS_PID_1, &sandbox_args);
    let Some(status) = sandbox.wait(DEADLINE) else {
        let before = read(&dir.path().join("before"));
        let added: Vec<String> =
            sandbox.mounts().lines().filter(|l| !before.contains(*l)).map(|l| l.to_string()).collect();
        panic!(
            "`nixos-pxe {}` as PID 1 did not exit within {DEADLINE:?} (it became init?). It printed:\n{}\n\
             Mounts in its namespace beyond those before it ran (the first is its own /proc):\n{}",
            args.join(" "),
            head(&read(&dir.path().join("stdout")), 10),
            added.join("\n")
        );
    };
    assert!(
        status.success(),
        "the namespace set-up failed ({status}): {}{}",
        read(&dir.path().join("sandbox.out")),
        read(&dir.path().join("sandbox.err"))
    );
    let (before, after) = (read(&dir.path().join("before")), read(&dir.path().join("after")));
    assert!(before.lines().count() > 1, "no mount table recorded before the run: {before:?}");
    assert_eq!(before, after, "`nixos-pxe {}` as PID 1 changed the mount table", args.join(" "));
    Run {
        stdout: read(&dir.path().join("stdout")),
        stderr: read(&dir.path().join("stderr")),
        status: read(&dir.path().join("status")).trim().parse().ok(),
    }
}

#[test]
fn a_subcommand_as_pid_1_runs_as_it_does_outside_and_mounts_nothing() {
    for args in [
        &["check", "--config", "examples/seed/installer.nix"][..],
        &["--help"][..],
        &["check", "--config", "examples/seed/no-such-file.nix"][..],
    ] {
        let expected = outside(args);
        assert!(!expected.stdout.is_empty() || !expected.stderr.is_empty(), "`nixos-pxe {}` printed nothing", args.join(" "));
        assert_eq!(as_pid_1(args), expected, "`nixos-pxe {}` as PID 1 of a new PID namespace", args.join(" "));
    }
}

/// A fake NFS root with nixos-pxe (bind-mounted from the build) at /nixos-pxe/tools/bin and /init
/// linking to it, as the tarball has them, Debian's /usr for the libraries and the rescue shell,
/// and no /nixos-pxe/config.json.
fn fake_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["proc", "sys", "dev", "tmp", "usr", "nixos-pxe/tools/bin"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::write(root.join("nixos-pxe/tools/bin/nixos-pxe"), "").expect("bind mount point");
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        std::os::unix::fs::symlink(target, root.join(link)).expect("symlink");
    }
    std::os::unix::fs::symlink("/nixos-pxe/tools/bin/nixos-pxe", root.join("init")).expect("symlink init");
    root
}

/// In a private mount namespace and a new PID namespace, with the fake root: PID 1 execs
/// `COMMAND ARGS...` chrooted there (argv[0] = COMMAND, as the kernel runs init=).
const IN_FAKE_ROOT: &str = r#"
bin=$1; root=$2; shift 2
mount --bind "$bin" "$root/nixos-pxe/tools/bin/nixos-pxe"
mount --bind -o ro /usr "$root/usr"
exec chroot "$root" "$@"
"#;

/// Starts `command` as PID 1 in the fake root, waits for init's rescue (config.json is missing),
/// kills the namespace and returns what PID 1 printed.
fn init_in_fake_root(command: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fake_root(dir.path());
    let mut args = vec![BIN, root.to_str().expect("utf-8 temp path")];
    args.extend_from_slice(command);
    let unshare = ["--mount", "--propagation", "private", "--pid", "--fork", "--kill-child=SIGKILL"];
    let mut sandbox = Sandbox::start(dir.path(), &unshare, IN_FAKE_ROOT, &args);
    let start = Instant::now();
    let stdout = loop {
        let stdout = read(&dir.path().join("sandbox.out"));
        if stdout.contains("dropping to a root shell") {
            break stdout;
        }
        if let Some(status) = sandbox.child.try_wait().expect("wait") {
            panic!(
                "`{}` as PID 1 exited ({status}) instead of staying init:\n{}{}",
                command.join(" "),
                head(&stdout, 10),
                read(&dir.path().join("sandbox.err"))
            );
        }
        assert!(
            start.elapsed() < DEADLINE,
            "`{}` as PID 1 did not reach init's rescue shell within {DEADLINE:?}:\n{}",
            command.join(" "),
            head(&stdout, 10)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The namespace goes with its first process: unshare's child, PID 1 inside, respawning shells.
    let namespace_init = sandbox.children();
    assert_eq!(namespace_init.len(), 1, "unshare --fork has one child: {namespace_init:?}");
    drop(sandbox);
    let gone = Instant::now();
    while Path::new(&format!("/proc/{}", namespace_init[0])).exists() {
        assert!(gone.elapsed() < Duration::from_secs(5), "the namespace's PID 1 (host PID {}) outlived the test", namespace_init[0]);
        std::thread::sleep(Duration::from_millis(50));
    }
    stdout
}

#[test]
fn started_by_the_kernel_as_init_it_is_init_whatever_words_follow() {
    // What the kernel runs for init=/init with `splash` on its command line: argv = ["/init", "splash"].
    let stdout = init_in_fake_root(&["/init", "splash"]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"nixos-pxe: init: nixos-pxe is PID 1 on the NFS root"), "{}", head(&stdout, 10));
    assert_eq!(lines.get(1), Some(&"nixos-pxe: init: ignoring the kernel command line's words passed to init: splash"));
    assert!(
        stdout.contains("init FAILED: reading /nixos-pxe/config.json: cannot read /nixos-pxe/config.json"),
        "{}",
        head(&stdout, 10)
    );
}

#[test]
fn the_init_subcommand_as_pid_1_is_init() {
    let stdout = init_in_fake_root(&["/nixos-pxe/tools/bin/nixos-pxe", "init"]);
    assert_eq!(stdout.lines().next(), Some("nixos-pxe: init: nixos-pxe is PID 1 on the NFS root"), "{}", head(&stdout, 10));
    assert!(stdout.contains("init FAILED: reading /nixos-pxe/config.json"), "{}", head(&stdout, 10));
}

/// Runs `command` not as PID 1 (in a private mount namespace all the same, should it try to be
/// init there); `INIT` in it stands for a link named `init` to nixos-pxe. Returns its exit code,
/// stdout and stderr.
fn not_pid_1(command: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("init");
    std::os::unix::fs::symlink(BIN, &link).expect("symlink init");
    let link = link.to_str().expect("utf-8 temp path");
    let script = r#"before=$(cat /proc/self/mountinfo)
set +e; "$@" < /dev/null; echo "status=$?"; set -e
test "$before" = "$(cat /proc/self/mountinfo)" || echo "the mount table changed"
"#;
    let args: Vec<&str> = command.iter().map(|a| if *a == "INIT" { link } else { a }).collect();
    let mut sandbox = Sandbox::start(dir.path(), &["--mount", "--propagation", "private"], script, &args);
    let status = sandbox.wait(DEADLINE);
    let (out, err) = (read(&dir.path().join("sandbox.out")), read(&dir.path().join("sandbox.err")));
    let what = command.join(" ");
    assert!(status.is_some_and(|s| s.success()), "`{what}` not as PID 1 did not exit in time: {}{err}", head(&out, 10));
    assert!(!out.contains("the mount table changed"), "`{what}` not as PID 1 mounted something:\n{}", head(&out, 10));
    let code = out.lines().find_map(|l| l.strip_prefix("status=")).and_then(|c| c.parse().ok());
    (code, out, err)
}

#[test]
fn init_is_refused_when_not_pid_1() {
    // /init of an unpacked NFS root, run by hand on the boot server.
    let (code, out, err) = not_pid_1(&["INIT"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("(the NFS root's init) but as PID ") && err.contains("Nothing was done"), "{err}");
    assert!(!out.contains("init:"), "{out}");
    let (code, out, err) = not_pid_1(&[BIN, "init"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("init runs only as PID 1") && err.contains("nothing was mounted"), "{err}");
    // Under the name init, a subcommand still runs.
    let (code, out, err) = not_pid_1(&["INIT", "--version"]);
    assert_eq!((code, out.lines().next()), (Some(0), Some(format!("nixos-pxe {}", env!("CARGO_PKG_VERSION")).as_str())), "{err}");
}
