//! The host-state guard: what a test could leave changed on the host by mistake, taken before it
//! runs and compared after. The host's own mounts and Debian's dnsmasq lease file; below each of
//! the test's own directories (its temporary directory, where its servers log and its disks and
//! mounts live): the mounts, the loop devices over files there, and processes still holding a file
//! there (a server, QEMU, a shell the test started); and the network namespaces this test process
//! made that no owner holds any more.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where Debian's dnsmasq keeps its leases unless told otherwise: a test must never write it.
pub const HOST_DNSMASQ_LEASES: &str = "/var/lib/misc/dnsmasq.leases";
/// How long what a test stopped may take to go (a killed server to exit, a lazily unmounted file
/// system, a loop device detached while still open) before the guard calls it left behind.
pub const SETTLE: Duration = Duration::from_secs(10);

/// What a test could change on the host by mistake (see the module's comment).
#[derive(Debug, PartialEq)]
pub struct HostState {
    dnsmasq_leases: Option<(Vec<u8>, Option<std::time::SystemTime>)>,
    /// The host's mounts outside temporary directories and /run/netns (where other tests on the
    /// machine make theirs at the same time).
    mounts: Vec<String>,
    /// The test's own directories, each with what was there when it was added.
    dirs: Vec<Below>,
    /// Network namespaces of this process no owner held.
    leaked_namespaces: Vec<String>,
}

/// What lies below one of the test's directories.
#[derive(Debug, Clone, PartialEq)]
struct Below {
    dir: PathBuf,
    mounts: Vec<String>,
    loop_devices: Vec<String>,
    holders: Vec<String>,
}

impl Below {
    fn now(dir: &Path) -> Below {
        Below { dir: dir.to_path_buf(), mounts: mounts_below(dir), loop_devices: loop_devices_over(dir), holders: processes_holding(dir) }
    }

    /// What differs from `before` (the same directory earlier), one line each.
    fn changes(&self, before: &Below) -> Vec<String> {
        let dir = self.dir.display();
        let mut changes = Vec::new();
        for (what, now, then) in [
            ("mount", &self.mounts, &before.mounts),
            ("loop device", &self.loop_devices, &before.loop_devices),
            ("process holding a file", &self.holders, &before.holders),
        ] {
            changes.extend(now.iter().filter(|x| !then.contains(x)).map(|x| format!("{what} below {dir} left: {x}")));
            changes.extend(then.iter().filter(|x| !now.contains(x)).map(|x| format!("{what} below {dir} gone: {x}")));
        }
        changes
    }
}

impl HostState {
    /// The host as it is, without a directory of the test's (a lab adds its log directories).
    pub fn now() -> HostState {
        HostState::below(&[])
    }

    /// The host as it is, and what lies below each of `dirs` (the test's own directories).
    pub fn below(dirs: &[&Path]) -> HostState {
        let dnsmasq_leases = std::fs::read(HOST_DNSMASQ_LEASES)
            .ok()
            .map(|bytes| (bytes, std::fs::metadata(HOST_DNSMASQ_LEASES).and_then(|m| m.modified()).ok()));
        // This process's mount table is the host's: the tests' own mounts are made in private
        // mount namespaces, or below their own directories.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
        let mounts = mountinfo
            .lines()
            .filter(|line| !HostState::is_tests_own_mount(line))
            .map(|line| {
                // Without the mount's id and its parent's, which a remount elsewhere can shift.
                line.split_whitespace().skip(2).collect::<Vec<_>>().join(" ")
            })
            .collect();
        let dirs = dirs.iter().map(|d| Below::now(&canonical(d))).collect();
        HostState { dnsmasq_leases, mounts, dirs, leaked_namespaces: leaked_namespaces() }
    }

    /// Adds `dir` (what lies below it now is its "before"), unless it or a directory above it is
    /// watched already.
    pub fn watch(&mut self, dir: &Path) {
        let dir = canonical(dir);
        if !self.dirs.iter().any(|b| dir.starts_with(&b.dir)) {
            self.dirs.push(Below::now(&dir));
        }
    }

    /// Whether a line of /proc/self/mountinfo is a mount the tests may make on the host: below a
    /// temporary directory, or `ip netns`'s: each namespace's file under /run/netns, and
    /// /run/netns itself, which the first `ip netns add` on a machine makes a mount point
    /// (a shared bind mount of itself) and which stays one. (Below a test's own directory the
    /// mounts are compared: `below`.)
    pub fn is_tests_own_mount(mountinfo_line: &str) -> bool {
        let point = mountinfo_line.split_whitespace().nth(4).unwrap_or_default();
        point == "/run/netns" || ["/tmp/", "/var/tmp/", "/run/netns/"].iter().any(|p| point.starts_with(p))
    }

    /// What differs now from `self`, one line each; waits up to `settle` for what was stopped to go.
    pub fn changes(&self, settle: Duration) -> Vec<String> {
        let deadline = Instant::now() + settle;
        loop {
            let changes = self.changes_now();
            if changes.is_empty() || Instant::now() >= deadline {
                return changes;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn changes_now(&self) -> Vec<String> {
        let now = HostState::below(&[]);
        let mut changes = Vec::new();
        if self.dnsmasq_leases != now.dnsmasq_leases {
            changes.push(format!(
                "the host's {HOST_DNSMASQ_LEASES} changed (a dnsmasq without --dhcp-leasefile in the test's directory: this test's, or \
                 another on the machine): before {:?}, now {:?}",
                self.dnsmasq_leases.as_ref().map(|(b, t)| (String::from_utf8_lossy(b).into_owned(), t)),
                now.dnsmasq_leases.as_ref().map(|(b, t)| (String::from_utf8_lossy(b).into_owned(), t)),
            ));
        }
        changes.extend(now.mounts.iter().filter(|m| !self.mounts.contains(m)).map(|m| format!("the host's mounts: added {m}")));
        changes.extend(self.mounts.iter().filter(|m| !now.mounts.contains(m)).map(|m| format!("the host's mounts: removed {m}")));
        for before in &self.dirs {
            changes.extend(Below::now(&before.dir).changes(before));
        }
        changes.extend(
            now.leaked_namespaces
                .iter()
                .filter(|n| !self.leaked_namespaces.contains(n))
                .map(|n| format!("network namespace {n} of this test process left with no owner")),
        );
        changes
    }

    /// Fails the test, naming `who`, if anything differs from `self` once what was stopped has
    /// had SETTLE to go.
    pub fn assert_unchanged(&self, who: &str) {
        let changes = self.changes(SETTLE);
        assert!(changes.is_empty(), "the host is not as it was before {who} ran:\n{}", changes.join("\n"));
    }
}

/// `dir` with links resolved (a process's links in /proc name real paths), or as given.
fn canonical(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

/// Whether `path` is `dir` or below it.
fn is_below(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

/// Mount points at or below `dir` in this process's (the host's) mount table, with their source.
fn mounts_below(dir: &Path) -> Vec<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // mountinfo escapes a space in a path as \040.
            let point = fields.get(4)?.replace("\\040", " ");
            let source = fields.iter().position(|f| *f == "-").and_then(|i| fields.get(i + 2)).unwrap_or(&"?");
            is_below(Path::new(&point), dir).then(|| format!("{point} ({source})"))
        })
        .collect()
}

/// Loop devices whose backing file lies below `dir` (as sysfs says, which is what `losetup -l`
/// reads).
fn loop_devices_over(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return Vec::new() };
    let mut found: Vec<String> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let backing = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
            let backing = backing.trim_end();
            let file = backing.strip_suffix(" (deleted)").unwrap_or(backing);
            is_below(Path::new(file), dir).then(|| format!("/dev/{name} over {backing}"))
        })
        .collect();
    found.sort();
    found
}

/// Processes other than this one whose working directory, root, program or an open file lies
/// below `dir`: what a test started and did not stop (its servers log there, QEMU writes its
/// console there, a shell of the test works there).
fn processes_holding(dir: &Path) -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let proc = entry.path();
        let mut held: Vec<PathBuf> = ["cwd", "root", "exe"].iter().filter_map(|l| std::fs::read_link(proc.join(l)).ok()).collect();
        if let Ok(fds) = std::fs::read_dir(proc.join("fd")) {
            held.extend(fds.flatten().filter_map(|fd| std::fs::read_link(fd.path()).ok()));
        }
        if let Some(file) = held.iter().find(|p| is_below(p, dir)) {
            let command = std::fs::read_to_string(proc.join("cmdline")).unwrap_or_default().replace('\0', " ");
            found.push(format!("pid {pid} ({}) holds {}", command.trim(), file.display()));
        }
    }
    found.sort();
    found
}

/// The network namespaces some owner in this process holds (a `Namespace`, a `Lab`): those of
/// this process that are not here are left behind. Locked while `leaked_namespaces` looks, so
/// that a namespace being made or deleted by another test's thread is never seen half-way.
static OWNED_NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Called before namespace `name` is made.
pub fn namespace_owned(name: &str) {
    OWNED_NAMESPACES.lock().unwrap_or_else(PoisonError::into_inner).push(name.to_string());
}

/// Called after namespace `name` is deleted.
pub fn namespace_released(name: &str) {
    OWNED_NAMESPACES.lock().unwrap_or_else(PoisonError::into_inner).retain(|n| n != name);
}

/// The namespaces in /run/netns named like this process's (`nixos-pxe-...`, with this process's
/// id among the name's parts) that no owner holds.
pub fn leaked_namespaces() -> Vec<String> {
    let owned = OWNED_NAMESPACES.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return Vec::new() };
    let mut leaked: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("nixos-pxe-") && n.split('-').any(|part| part == pid) && !owned.contains(n))
        .collect();
    leaked.sort();
    leaked
}
