//! Benchmark of the installer's unpack (step 4 of `nixos-pxe install`) against GNU tar and `dd`,
//! natively, side by side in one run, onto the same loop device:
//!
//! (a) the installer's unpack: `nixos_pxe_installer::install::unpack::extract`, the function
//!     `nixos-pxe install`'s unpack step calls (src/install/steps.rs, `unpack`) between mounting
//!     the root and running nix-store, built with the same profile as the shipped binary (`cargo
//!     bench` builds with the bench profile, which is the release profile);
//! (b) GNU tar with zstd: `tar --zstd -xf IMAGE -C MOUNT` (tar runs `zstd -d` in a process of its
//!     own, so decompression and file writes overlap on two cores; as root tar keeps owners and
//!     modes by default);
//! (c) `dd` of the same number of bytes (the file contents the unpack writes) from the
//!     uncompressed archive to the raw device, `bs=4M conv=fsync`: through the page cache and
//!     flushed at the end, as (a) and (b) are (they are timed until `syncfs` of the file system
//!     returns), so all three write buffered and are timed until their data is on the device.
//!     This is the goal's reference;
//! (c') the same with `oflag=direct` (and `conv=fsync` for the short last block, which dd writes
//!     without O_DIRECT): 4 MiB at a time straight to the device, no page cache. It shows what the
//!     device takes when no CPU work stands in the way. On the development machine it is several
//!     times faster than (c): the block device's own page cache costs dd seconds of CPU time
//!     that an O_DIRECT write does not, so an unpacker that writes files through a file system
//!     (page cache, inodes, directories) is measured against (c), and (c') tells how far the disk
//!     itself is from being the limit.
//!
//! The image is shaped like a NixOS system closure and made deterministically from a seed: store
//! paths `nix/store/<hash>-<name>-<version>` with `bin/`, `lib/` (shared libraries and their
//! version symlinks), `libexec/`, `share/{man,doc,locale,...}`, a few trees of many small files
//! (terminfo-, zoneinfo-, Python- and kernel-module-like), a few large files (tens of MiB), a
//! `system-path` of absolute symlinks into the other store paths; files 0444, executables and
//! directories 0555; contents text-like, code-like or incompressible according to their kind.
//! It is packed by `nixos-pxe pack --compression zstd` exactly as the flake packs the system
//! image (nix/system-image.nix; `--file nix=TREE/nix` instead of `--store-paths`, which would read
//! the real /nix/store: the archive's entries and headers are the same).
//!
//! Each round goes a, b, c, c'; before every measurement the file system is re-made (`mkfs.ext4 -F
//! -q -L nixos`, the installer's command, also before dd so the device starts from the same
//! state), `sync` runs and the page cache is dropped (`echo 3 > /proc/sys/vm/drop_caches`), so
//! each starts cold. The image and the uncompressed archive lie on tmpfs (/dev/shm): the source is
//! memory for all three, as the installer's NFS-served image comes from the network, not from
//! the disk being written. The loop device (`losetup --direct-io=on`, so its writes go to the
//! disk rather than into a second page cache) is backed by a sparse file in /var/tmp; nothing
//! else is written to. After (a) and (b) the file system is mounted again read-only (its cache
//! gone with the unmount) and every entry is compared with the tree the image was made from:
//! type, mode, owner, size, contents (BLAKE3), symlink target, mtime. A difference stops the run.
//!
//! Run it as root, on an otherwise idle machine:
//!
//! ```text
//! cargo bench --bench unpack                 # about 1 GiB, 3 rounds: a few minutes on 2 cores
//! cargo bench --bench unpack -- --rounds 5   # more rounds
//! cargo bench --bench unpack -- --quick      # 48 MiB, 1 round: a smoke run
//! ```
//!
//! `cargo test --all-targets` (CI) runs this program without `--bench`: it then makes the quick
//! run (debug build, about half a minute), which proves that the benchmark still works and that
//! (a) and (b) unpack the image identically; it needs root like tests/install_loop.rs and fails
//! without it unless NIXOS_PXE_ALLOW_SKIP=1 (tests/switches). The tables go to stdout and to
//! target/bench-unpack.md. The loop device, mounts and files are removed when the run ends, fails
//! or panics, and on Ctrl-C or kill by a watcher process (`clean_up_when_this_process_ends`).

mod common;
#[path = "../tests/switches/mod.rs"]
mod switches;

use camino::Utf8Path;
use nixos_pxe_installer::install::unpack;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The image's shape and the run's length.
#[derive(Clone, Copy)]
struct Settings {
    /// File contents in the image, bytes (about).
    content_bytes: u64,
    rounds: usize,
    seed: u64,
    /// Size of the loop device's sparse backing file, bytes.
    device_bytes: u64,
    quick: bool,
}

const FULL: Settings = Settings { content_bytes: 1 << 30, rounds: 3, seed: 11, device_bytes: 16 << 30, quick: false };
const QUICK: Settings = Settings { content_bytes: 48 << 20, rounds: 1, seed: 11, device_bytes: 1 << 30, quick: true };

/// Programs the benchmark runs (dev/packages.txt installs them).
const PROGRAMS: &[&str] = &["losetup", "mkfs.ext4", "mount", "umount", "tar", "zstd", "dd", "sync"];

// ---------------------------------------------------------------------------------------------
// Shell commands

/// Runs `command`, returns its stdout; a failure names the command and carries its stderr.
fn run(command: &mut Command) -> Result<String, String> {
    let out = command.output().map_err(|e| format!("cannot start {command:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{command:?} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

fn sh(script: &str) -> Result<String, String> {
    run(Command::new("sh").args(["-ec", script]))
}

/// The first line of `command`'s output, or what went wrong.
fn first_line(command: &mut Command) -> String {
    run(command).map_or_else(|e| e, |out| out.lines().next().unwrap_or_default().trim().to_string())
}

// ---------------------------------------------------------------------------------------------
// The image: a tree shaped like a NixOS closure, from a seed

/// xorshift64*: deterministic, fast, good enough to shape a file tree.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// lo..=hi, log-uniformly: as many files of 1-2 KiB as of 1-2 MiB in a range spanning both.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        let x = l + (h - l) * (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (x.exp() as u64).clamp(lo, hi)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const SYLLABLES: &[&str] = &[
    "lib", "gtk", "sys", "tem", "core", "util", "ssl", "x", "py", "perl", "gnu", "tls", "nss", "pam", "z", "bz", "lzma", "ffi", "uv", "ev",
    "dbus", "glib", "mesa", "drm", "kmod", "udev", "curl", "git", "vim", "less", "grep", "sed", "awk", "man", "tar", "xz", "zstd", "acl",
    "attr", "cap", "seccomp", "audit", "iproute", "net", "tools", "fs", "progs", "e2", "dos", "shadow", "sudo", "bash", "zsh", "ncurses",
    "readline", "gmp", "mpfr", "isl", "gcc", "cc", "ld", "bin", "utils", "find", "diff", "patch", "make", "cmake", "ninja", "meson",
];
const LANGUAGES: &[&str] = &["de", "fr", "es", "it", "ja", "ko", "nl", "pl", "pt_BR", "ru", "sv", "tr", "uk", "zh_CN", "zh_TW", "cs", "da", "fi"];
const NIX_BASE32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// What a file's bytes look like; decides how well zstd compresses it.
#[derive(Clone, Copy)]
enum Content {
    /// Words and lines (documentation, scripts, Python, .pc, .desktop): about 3-4x.
    Text,
    /// Machine code and data of ELF files: repeats, zeros, skewed bytes: about 2-3x.
    Code,
    /// Already compressed (.gz man pages, .ko.xz modules, PNG icons, firmware): about 1x.
    Random,
}

/// Writes files of the kinds above from the generator's stream of pseudo-random numbers.
struct Writer {
    rng: Rng,
    words: Vec<String>,
    buf: Vec<u8>,
}

impl Writer {
    fn new(seed: u64) -> Writer {
        let mut rng = Rng::new(seed ^ 0x5EED);
        let words = (0..1500)
            .map(|_| {
                let n = 1 + rng.below(3);
                (0..n).map(|_| *rng.pick(SYLLABLES)).collect::<String>()
            })
            .collect();
        Writer { rng, words, buf: Vec::with_capacity(1 << 20) }
    }

    fn fill(&mut self, content: Content, bytes: usize) {
        self.buf.clear();
        match content {
            Content::Random => {
                while self.buf.len() < bytes {
                    let v = self.rng.next();
                    self.buf.extend_from_slice(&v.to_le_bytes());
                }
            }
            Content::Text => {
                while self.buf.len() < bytes {
                    let word = self.rng.below(self.words.len() as u64) as usize;
                    self.buf.extend_from_slice(self.words[word].as_bytes());
                    let sep: &[u8] = match self.rng.below(12) {
                        0 => b"\n",
                        1 => b", ",
                        2 => b". ",
                        3 => b"_",
                        _ => b" ",
                    };
                    self.buf.extend_from_slice(sep);
                }
            }
            Content::Code => {
                while self.buf.len() < bytes {
                    let len = self.buf.len();
                    match self.rng.below(10) {
                        // A run repeated from earlier in the file (calls, relocations, tables).
                        0..=3 if len > 8192 => {
                            let run = 16 + self.rng.below(240) as usize;
                            let from = len - 1 - self.rng.below(4096.min(len as u64 - run as u64)) as usize - run;
                            self.buf.extend_from_within(from..from + run);
                        }
                        // Padding.
                        4 => self.buf.resize(len + 8 + self.rng.below(56) as usize, 0),
                        // Skewed bytes: opcodes and small immediates.
                        5..=8 => {
                            for _ in 0..8 {
                                let v = self.rng.next();
                                self.buf.extend((0..8).map(|i| (((v >> (i * 8)) as u8) & 0x3f) | (0x40 * (i as u8 & 1))));
                            }
                        }
                        // Addresses and constants.
                        _ => {
                            let v = self.rng.next();
                            self.buf.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                }
            }
        }
        self.buf.truncate(bytes);
    }
}

/// The tree under construction and what it holds.
struct Tree {
    root: PathBuf,
    writer: Writer,
    rng: Rng,
    created: HashSet<PathBuf>,
    files: u64,
    bytes: u64,
    symlinks: u64,
    largest: u64,
}

impl Tree {
    fn dir(&mut self, rel: &Path) -> Result<(), String> {
        let path = self.root.join(rel);
        if self.created.contains(&path) {
            return Ok(());
        }
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.dir(parent)?;
        }
        std::fs::create_dir(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        // Store directories are read-only; root writes into them anyway.
        let mode = if rel.starts_with("nix/store") && rel.components().count() > 2 { 0o555 } else { 0o755 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|e| format!("chmod {}: {e}", path.display()))?;
        self.created.insert(path);
        Ok(())
    }

    /// A name not yet taken in `dir`: `stem` + `suffix`, else with a number.
    fn free_name(&self, dir: &Path, stem: &str, suffix: &str) -> PathBuf {
        let first = dir.join(format!("{stem}{suffix}"));
        if !self.created.contains(&self.root.join(&first)) {
            return first;
        }
        (2..).map(|n| dir.join(format!("{stem}{n}{suffix}"))).find(|p| !self.created.contains(&self.root.join(p))).unwrap_or(first)
    }

    fn file(&mut self, rel: &Path, bytes: u64, content: Content, executable: bool) -> Result<(), String> {
        if let Some(parent) = rel.parent() {
            self.dir(parent)?;
        }
        let path = self.root.join(rel);
        let mut f = File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        let mut left = bytes;
        while left > 0 {
            let piece = left.min(1 << 20);
            self.writer.fill(content, piece as usize);
            f.write_all(&self.writer.buf).map_err(|e| format!("write {}: {e}", path.display()))?;
            left -= piece;
        }
        let mode = if executable { 0o555 } else { 0o444 };
        f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| format!("chmod {}: {e}", path.display()))?;
        self.created.insert(path);
        self.files += 1;
        self.bytes += bytes;
        self.largest = self.largest.max(bytes);
        Ok(())
    }

    fn symlink(&mut self, rel: &Path, target: &str) -> Result<(), String> {
        if let Some(parent) = rel.parent() {
            self.dir(parent)?;
        }
        let path = self.root.join(rel);
        std::os::unix::fs::symlink(target, &path).map_err(|e| format!("symlink {}: {e}", path.display()))?;
        self.created.insert(path);
        self.symlinks += 1;
        Ok(())
    }

    fn name(&mut self) -> String {
        let n = 1 + self.rng.below(2);
        (0..n).map(|_| *self.rng.pick(SYLLABLES)).collect::<Vec<_>>().join("-")
    }

    fn store_path(&mut self, name: &str) -> PathBuf {
        let hash: String = (0..32).map(|_| *self.rng.pick(NIX_BASE32) as char).collect();
        let version = format!("{}.{}.{}", self.rng.below(10), self.rng.below(30), self.rng.below(20));
        PathBuf::from(format!("nix/store/{hash}-{name}-{version}"))
    }
}

/// File sizes drawn log-uniformly from lo..=hi until `budget` bytes are taken.
fn sizes(rng: &mut Rng, budget: u64, lo: u64, hi: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut taken = 0;
    while taken < budget {
        let size = rng.log_uniform(lo, hi).min(budget - taken).max(lo.min(budget - taken));
        taken += size;
        out.push(size);
    }
    out
}

/// What the generated tree holds.
struct Generated {
    files: u64,
    symlinks: u64,
    dirs: u64,
    content_bytes: u64,
    largest: u64,
    store_paths: usize,
}

/// Makes the closure-shaped tree under `root` (`nix/store/...`, plus `registration` and
/// `system`, which the image carries as nixos-pxe/registration and nixos-pxe/system).
fn generate(root: &Path, settings: &Settings) -> Result<Generated, String> {
    let mut rng = Rng::new(settings.seed);
    let total = settings.content_bytes;
    // Budgets: a few large files, some big binaries and libraries, more medium ones, and tens of
    // thousands of small files (man pages, docs, locales, terminfo, zoneinfo, Python, modules).
    let large = sizes(&mut rng, total * 27 / 100, (16 << 20).min(total / 8), (64 << 20).min(total / 4));
    let mut binaries = sizes(&mut rng, total * 36 / 100, 1 << 20, 8 << 20);
    binaries.extend(sizes(&mut rng, total * 27 / 100, 8 << 10, 1 << 20));
    let mut small = sizes(&mut rng, total * 10 / 100, 200, 8 << 10);
    // Shuffle so that packages get a mix of sizes.
    for list in [&mut binaries, &mut small] {
        for i in (1..list.len()).rev() {
            list.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    let per_package_small = (small.len() / 2 / (binaries.len() / 3).max(1)).max(1) as u64;
    let mut tree = Tree {
        root: root.to_path_buf(),
        writer: Writer::new(settings.seed),
        rng,
        created: HashSet::new(),
        files: 0,
        bytes: 0,
        symlinks: 0,
        largest: 0,
    };
    tree.dir(Path::new("nix/store"))?;
    let mut store_paths = Vec::new();
    let mut commands: Vec<(PathBuf, String)> = Vec::new();

    // Libraries and programs: 1-5 binaries each, with their symlinks, man pages, docs, locales.
    while !binaries.is_empty() {
        let name = tree.name();
        let sp = tree.store_path(&name);
        let library = tree.rng.chance(45);
        for _ in 0..(1 + tree.rng.below(5)) {
            let Some(size) = binaries.pop() else { break };
            if library {
                let lib = tree.name().replace('-', "");
                let major = tree.rng.below(9);
                let real = format!("lib{lib}.so.{major}.{}.{}", tree.rng.below(20), tree.rng.below(10));
                let path = tree.free_name(&sp.join("lib"), &real, "");
                let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                tree.file(&path, size, Content::Code, true)?;
                let so_major = tree.free_name(&sp.join("lib"), &format!("lib{lib}.so.{major}"), "");
                tree.symlink(&so_major, &file)?;
                let so = tree.free_name(&sp.join("lib"), &format!("lib{lib}.so"), "");
                tree.symlink(&so, &so_major.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())?;
            } else {
                let cmd = tree.name();
                let dir = if tree.rng.chance(20) { sp.join("libexec").join(&name) } else { sp.join("bin") };
                let path = tree.free_name(&dir, &cmd, "");
                tree.file(&path, size, Content::Code, true)?;
                if dir.ends_with("bin") {
                    commands.push((path.clone(), path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
                    if tree.rng.chance(15) {
                        let alias = tree.free_name(&sp.join("bin"), &format!("{cmd}-alias"), "");
                        tree.symlink(&alias, &format!("{}", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()))?;
                    }
                }
            }
        }
        for _ in 0..tree.rng.below(2 * per_package_small + 1) {
            let Some(size) = small.pop() else { break };
            let (path, content) = match tree.rng.below(8) {
                0..=2 => {
                    let section = [1, 1, 1, 1, 5, 8][tree.rng.below(6) as usize];
                    let stem = tree.name();
                    (tree.free_name(&sp.join(format!("share/man/man{section}")), &stem, &format!(".{section}.gz")), Content::Random)
                }
                3 => {
                    let stem = ["README", "NEWS", "COPYING", "AUTHORS", "ChangeLog", "THANKS"][tree.rng.below(6) as usize];
                    (tree.free_name(&sp.join("share/doc").join(&name), stem, ""), Content::Text)
                }
                // One catalogue per language, two directories each, as gettext lays them out.
                4 => {
                    let lang = *tree.rng.pick(LANGUAGES);
                    (tree.free_name(&sp.join(format!("share/locale/{lang}/LC_MESSAGES")), &name, ".mo"), Content::Text)
                }
                5 => {
                    let size_dir = ["48x48", "scalable"][tree.rng.below(2) as usize];
                    let stem = tree.name();
                    (tree.free_name(&sp.join(format!("share/icons/hicolor/{size_dir}/apps")), &stem, ".png"), Content::Random)
                }
                _ => {
                    let sub = ["", "data", "templates", "scripts", "config"][tree.rng.below(5) as usize];
                    let stem = tree.name();
                    (tree.free_name(&sp.join("share").join(&name).join(sub), &stem, ".conf"), Content::Text)
                }
            };
            tree.file(&path, size, content, false)?;
        }
        store_paths.push(sp);
    }

    // Trees of many small files, the rest of the small budget split between four of them.
    let kinds = ["terminfo", "zoneinfo", "python", "modules"];
    let trees: Vec<PathBuf> = kinds.iter().map(|k| tree.store_path(k)).collect();
    let mut at = 0usize;
    while let Some(size) = small.pop() {
        let kind = at % kinds.len();
        let sp = trees[kind].clone();
        let (path, content) = match kinds[kind] {
            "terminfo" => {
                let stem = tree.name();
                let first = stem.chars().next().unwrap_or('x').to_string();
                (tree.free_name(&sp.join("share/terminfo").join(first), &stem, ""), Content::Code)
            }
            "zoneinfo" => {
                let region = ["Africa", "America", "Antarctica", "Asia", "Atlantic", "Australia", "Europe", "Indian", "Pacific"][tree.rng.below(9) as usize];
                let stem = tree.name();
                (tree.free_name(&sp.join("share/zoneinfo").join(region), &stem, ""), Content::Code)
            }
            "python" => {
                let package = tree.rng.pick(SYLLABLES).to_string();
                let module = tree.name().replace('-', "_");
                if tree.rng.chance(40) {
                    (tree.free_name(&sp.join("lib/python3.11/site-packages").join(package).join("__pycache__"), &module, ".cpython-311.pyc"), Content::Code)
                } else {
                    (tree.free_name(&sp.join("lib/python3.11/site-packages").join(package), &module, ".py"), Content::Text)
                }
            }
            _ => {
                let area = ["drivers/net", "drivers/gpu", "drivers/usb", "fs", "net", "sound/pci", "crypto"][tree.rng.below(7) as usize];
                let group = *tree.rng.pick(&SYLLABLES[..12]);
                let stem = tree.name().replace('-', "_");
                (tree.free_name(&sp.join("lib/modules/6.1.55/kernel").join(area).join(group), &stem, ".ko.xz"), Content::Random)
            }
        };
        tree.file(&path, size, content, false)?;
        at += 1;
    }
    store_paths.extend(trees);

    // Large files: a few shared libraries and firmware-like blobs of tens of MiB.
    for (i, size) in large.iter().enumerate() {
        let name = tree.name();
        let sp = tree.store_path(&name);
        if i % 2 == 0 {
            let path = tree.free_name(&sp.join("lib"), &format!("lib{}", name.replace('-', "")), "-15.so");
            tree.file(&path, *size, Content::Code, true)?;
        } else {
            let path = tree.free_name(&sp.join("lib/firmware").join(&name), "blob", ".bin");
            tree.file(&path, *size, Content::Random, false)?;
        }
        store_paths.push(sp);
    }

    // The system path: absolute symlinks to every command, as buildEnv makes them.
    let system_path = tree.store_path("system-path");
    for (path, file) in &commands {
        let link = tree.free_name(&system_path.join("bin"), file, "");
        tree.symlink(&link, &format!("/{}", path.display()))?;
    }
    let toplevel = tree.store_path("nixos-system-bench");
    tree.symlink(&toplevel.join("sw"), &format!("/{}", system_path.display()))?;
    tree.symlink(&toplevel.join("init"), "/nix/store/00000000000000000000000000000000-init")?;
    store_paths.push(system_path);
    store_paths.push(toplevel.clone());

    // What closureInfo writes: the registration (path, narHash, size, references) and the system.
    let mut registration = String::new();
    for sp in &store_paths {
        registration += &format!("/{}\nsha256:{:052}\n{}\n\n0\n", sp.display(), tree.rng.next(), tree.rng.below(1 << 30));
    }
    std::fs::write(root.join("registration"), registration).map_err(|e| format!("write registration: {e}"))?;
    std::fs::write(root.join("system"), format!("/{}\n", toplevel.display())).map_err(|e| format!("write system: {e}"))?;
    Ok(Generated {
        files: tree.files,
        symlinks: tree.symlinks,
        dirs: tree.created.len() as u64 - tree.files - tree.symlinks,
        content_bytes: tree.bytes,
        largest: tree.largest,
        store_paths: store_paths.len(),
    })
}

// ---------------------------------------------------------------------------------------------
// What an unpacked tree must hold

/// One entry as the unpacked file system must show it.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir { mode: u32, uid: u32, gid: u32, mtime: i64 },
    File { mode: u32, uid: u32, gid: u32, size: u64, mtime: i64, blake3: String },
    Symlink { uid: u32, gid: u32, mtime: i64, target: String },
}

/// Every entry under `dir`, keyed by its path below `prefix` (`dir` itself excluded, and
/// lost+found at the top).
fn manifest_into(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Node>) -> Result<(), String> {
    let mut children: Vec<_> = std::fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?.collect::<Result<_, _>>().map_err(|e| format!("read {}: {e}", dir.display()))?;
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let name = child.file_name().to_string_lossy().into_owned();
        if prefix.is_empty() && name == "lost+found" {
            continue;
        }
        let key = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let path = child.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("stat {}: {e}", path.display()))?;
        let (mode, uid, gid) = (meta.mode() & 0o7777, meta.uid(), meta.gid());
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| format!("readlink {}: {e}", path.display()))?;
            out.insert(key, Node::Symlink { uid, gid, mtime: meta.mtime(), target: target.to_string_lossy().into_owned() });
        } else if meta.is_dir() {
            out.insert(key.clone(), Node::Dir { mode, uid, gid, mtime: meta.mtime() });
            manifest_into(&path, &key, out)?;
        } else {
            out.insert(key, Node::File { mode, uid, gid, size: meta.len(), mtime: meta.mtime(), blake3: hash_file(&path)? });
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<String, String> {
    let mut hasher = blake3::Hasher::new();
    let mut f = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf).map_err(|e| format!("read {}: {e}", path.display()))? {
            0 => return Ok(hasher.finalize().to_hex().to_string()),
            n => {
                hasher.update(&buf[..n]);
            }
        }
    }
}

/// What the image must unpack to: the generated tree as `nixos-pxe pack` records it (owner root,
/// mtime 1), with nixos-pxe/{registration,system} and their directory (0755, made by pack).
fn expected_manifest(tree: &Path) -> Result<BTreeMap<String, Node>, String> {
    let mut out = BTreeMap::new();
    let nix = tree.join("nix");
    let meta = std::fs::metadata(&nix).map_err(|e| format!("stat {}: {e}", nix.display()))?;
    out.insert("nix".to_string(), Node::Dir { mode: meta.mode() & 0o7777, uid: 0, gid: 0, mtime: 0 });
    manifest_into(&nix, "nix", &mut out)?;
    out.insert("nixos-pxe".into(), Node::Dir { mode: 0o755, uid: 0, gid: 0, mtime: 0 });
    for name in ["registration", "system"] {
        let path = tree.join(name);
        let meta = std::fs::metadata(&path).map_err(|e| format!("stat {}: {e}", path.display()))?;
        out.insert(
            format!("nixos-pxe/{name}"),
            Node::File { mode: meta.mode() & 0o7777, uid: 0, gid: 0, size: meta.len(), mtime: 0, blake3: hash_file(&path)? },
        );
    }
    let mtime = nixos_pxe_installer::pack::MTIME as i64;
    for node in out.values_mut() {
        match node {
            Node::File { mtime: m, uid, gid, .. } | Node::Symlink { mtime: m, uid, gid, .. } | Node::Dir { mtime: m, uid, gid, .. } => {
                (*m, *uid, *gid) = (mtime, 0, 0)
            }
        }
    }
    Ok(out)
}

/// The differences between what was unpacked and what should have been, at most 10 of them.
fn differences(expected: &BTreeMap<String, Node>, found: &BTreeMap<String, Node>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, want) in expected {
        match found.get(path) {
            None => out.push(format!("{path}: missing (want {want:?})")),
            Some(got) if got != want => out.push(format!("{path}: {got:?}, want {want:?}")),
            Some(_) => {}
        }
    }
    out.extend(found.keys().filter(|p| !expected.contains_key(*p)).map(|p| format!("{p}: not in the image")));
    out.truncate(10);
    out
}

// ---------------------------------------------------------------------------------------------
// The loop device and the file system

/// The benchmark's files: the tree, image and uncompressed archive on tmpfs; the loop device's
/// backing file and the mount point in /var/tmp.
struct Workspace {
    shm: tempfile::TempDir,
    var: tempfile::TempDir,
}

impl Workspace {
    fn create() -> Result<Workspace, String> {
        let shm = tempfile::Builder::new().prefix("nixos-pxe-bench-unpack-").tempdir_in("/dev/shm").map_err(|e| format!("cannot make a directory on /dev/shm: {e}"))?;
        let var = tempfile::Builder::new().prefix("nixos-pxe-bench-unpack-").tempdir_in("/var/tmp").map_err(|e| format!("cannot make a directory in /var/tmp: {e}"))?;
        Ok(Workspace { shm, var })
    }
    fn tree(&self) -> PathBuf {
        self.shm.path().join("tree")
    }
    fn image(&self) -> PathBuf {
        self.shm.path().join("system.tar.zst")
    }
    fn archive(&self) -> PathBuf {
        self.shm.path().join("system.tar")
    }
    fn backing(&self) -> PathBuf {
        self.var.path().join("disk.img")
    }
    fn mount_point(&self) -> PathBuf {
        self.var.path().join("mnt")
    }
}

/// A watcher in a process group of its own (a terminal's Ctrl-C does not reach it) waits for this
/// process to end, then detaches the loop device over the backing file and removes both
/// directories (the mounts went with this process's mount namespace; the umount is for a run that
/// ended before it made one). After a normal end there is nothing left for it to do.
fn clean_up_when_this_process_ends(workspace: &Workspace) -> Result<(), String> {
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 1; done; \
         umount \"$1\" 2>/dev/null || umount -l \"$1\" 2>/dev/null; \
         for d in $(losetup -n -O NAME -j \"$2\" 2>/dev/null); do losetup -d \"$d\"; done; \
         rm -rf -- \"$3\" \"$4\"",
        std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script, "bench-cleanup"])
        .arg(workspace.mount_point())
        .arg(workspace.backing())
        .arg(workspace.shm.path())
        .arg(workspace.var.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the clean-up watcher: {e}"))
}

/// A loop device over a sparse file, with direct I/O; unmounted and detached when dropped.
struct LoopDisk {
    device: String,
    mount_point: PathBuf,
}

impl LoopDisk {
    fn create(backing: &Path, bytes: u64, mount_point: &Path) -> Result<LoopDisk, String> {
        File::create(backing).and_then(|f| f.set_len(bytes)).map_err(|e| format!("create {}: {e}", backing.display()))?;
        std::fs::create_dir_all(mount_point).map_err(|e| format!("create {}: {e}", mount_point.display()))?;
        let device = run(Command::new("losetup").args(["--find", "--show", "--direct-io=on"]).arg(backing))?.trim().to_string();
        if !device.starts_with("/dev/loop") {
            return Err(format!("losetup named {device:?}, not a loop device"));
        }
        Ok(LoopDisk { device, mount_point: mount_point.to_path_buf() })
    }

    /// Whether the loop driver took direct I/O (it falls back to buffered I/O silently).
    fn direct_io(&self) -> bool {
        let name = self.device.trim_start_matches("/dev/");
        std::fs::read_to_string(format!("/sys/block/{name}/loop/dio")).is_ok_and(|s| s.trim() == "1")
    }

    fn is_mounted(&self) -> bool {
        let point = self.mount_point.display().to_string();
        std::fs::read_to_string("/proc/mounts").unwrap_or_default().lines().any(|l| l.split_whitespace().nth(1) == Some(point.as_str()))
    }

    /// Unmounts it and waits until the kernel has let go of the device: umount(2) can return
    /// before the file system releases it, and mkfs.ext4 then refuses a device "in use".
    fn unmount(&self) -> Result<(), String> {
        if self.is_mounted() {
            run(Command::new("umount").arg(&self.mount_point))?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // An exclusive open fails with EBUSY while anything holds the device.
            match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_EXCL).open(&self.device) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(format!("{} is still in use 10 s after unmounting it: {e}", self.device)),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// A fresh file system (the installer's mkfs.ext4 command), then sync and an empty page cache.
    fn remake(&self) -> Result<(), String> {
        self.unmount()?;
        run(Command::new("mkfs.ext4").args(["-F", "-q", "-L", "nixos", &self.device]))?;
        drop_caches()
    }

    /// Mounts it as the installer does (no options: rw, relatime, data=ordered).
    fn mount(&self, options: &[&str]) -> Result<(), String> {
        run(Command::new("mount").args(["-t", "ext4"]).args(options).arg(&self.device).arg(&self.mount_point)).map(drop)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = self.unmount();
        let _ = run(Command::new("losetup").arg("-d").arg(&self.device));
    }
}

fn drop_caches() -> Result<(), String> {
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").map_err(|e| format!("cannot drop the page cache (/proc/sys/vm/drop_caches): {e}"))
}

/// syncfs(2) of the file system mounted on `point`: its data and metadata on the device.
fn syncfs(point: &Path) -> Result<(), String> {
    let dir = File::open(point).map_err(|e| format!("open {}: {e}", point.display()))?;
    // SAFETY: a valid open file descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(format!("syncfs {}: {}", point.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The measurements

/// CPU time used, user and system, from getrusage(2) of `who` (this process or its waited-for
/// children).
fn cpu_seconds(who: libc::c_int) -> (f64, f64) {
    // SAFETY: getrusage fills the zeroed struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Installer,
    GnuTar,
    Dd,
    DdDirect,
}

impl Method {
    const ALL: [Method; 4] = [Method::Installer, Method::GnuTar, Method::Dd, Method::DdDirect];

    fn is_dd(self) -> bool {
        matches!(self, Method::Dd | Method::DdDirect)
    }

    fn label(self) -> &'static str {
        match self {
            Method::Installer => "(a) nixos-pxe unpack (install::unpack::extract)",
            Method::GnuTar => "(b) GNU tar --zstd -xf",
            Method::Dd => "(c) dd bs=4M conv=fsync to the device",
            Method::DdDirect => "(c') dd bs=4M oflag=direct conv=fsync to the device",
        }
    }
}

/// One timed run.
struct Sample {
    method: Method,
    /// From the start until the data is on the device.
    total: Duration,
    /// Of which: until the unpacker returned (before syncfs); None for dd.
    unpacked: Option<Duration>,
    cpu_user: f64,
    cpu_system: f64,
}

struct Bench {
    workspace: Workspace,
    disk: LoopDisk,
    expected: BTreeMap<String, Node>,
    content_bytes: u64,
}

impl Bench {
    fn measure(&self, method: Method) -> Result<Sample, String> {
        let mount_point = &self.disk.mount_point;
        self.disk.remake()?;
        if !method.is_dd() {
            self.disk.mount(&[])?;
        }
        let image = self.workspace.image();
        let image = Utf8Path::from_path(&image).ok_or("the image's path is not UTF-8")?;
        let target = Utf8Path::from_path(mount_point).ok_or("the mount point is not UTF-8")?;
        let who = if method == Method::Installer { libc::RUSAGE_SELF } else { libc::RUSAGE_CHILDREN };
        let (user0, system0) = cpu_seconds(who);
        let start = Instant::now();
        let unpacked = match method {
            Method::Installer => {
                let done = unpack::extract(image, target, &mut |_| {}).map_err(|e| format!("the installer's unpack: {e}"))?;
                if done.bytes_written != self.content_bytes {
                    return Err(format!("the installer's unpack wrote {} bytes of contents, the image holds {}", done.bytes_written, self.content_bytes));
                }
                Some(start.elapsed())
            }
            Method::GnuTar => {
                run(Command::new("tar").arg("--zstd").arg("-xf").arg(image).arg("-C").arg(mount_point))?;
                Some(start.elapsed())
            }
            Method::Dd | Method::DdDirect => {
                run(Command::new("dd")
                    .arg(format!("if={}", self.workspace.archive().display()))
                    .arg(format!("of={}", self.disk.device))
                    .args(["bs=4M", &format!("count={}", self.content_bytes), "iflag=count_bytes", "status=none"])
                    .args(if method == Method::Dd { &["conv=fsync"][..] } else { &["oflag=direct", "conv=fsync"][..] }))?;
                None
            }
        };
        if !method.is_dd() {
            syncfs(mount_point)?;
        }
        let total = start.elapsed();
        let (user1, system1) = cpu_seconds(who);
        if !method.is_dd() {
            self.verify(method)?;
        }
        Ok(Sample { method, total, unpacked, cpu_user: user1 - user0, cpu_system: system1 - system0 })
    }

    /// Unmounts (which empties the file system's cache), mounts read-only and compares every
    /// entry with the generated tree.
    fn verify(&self, method: Method) -> Result<(), String> {
        self.disk.unmount()?;
        self.disk.mount(&["-o", "ro"])?;
        let mut found = BTreeMap::new();
        let result = manifest_into(&self.disk.mount_point, "", &mut found);
        self.disk.unmount()?;
        result?;
        let diffs = differences(&self.expected, &found);
        if !diffs.is_empty() {
            return Err(format!("{} did not unpack the image faithfully:\n  {}", method.label(), diffs.join("\n  ")));
        }
        Ok(())
    }
}

/// The image: generated tree, its manifest, packed by `nixos-pxe pack`, and the uncompressed
/// archive for dd. Returns what was generated, the manifest and the image's size.
fn make_image(workspace: &Workspace, settings: &Settings) -> Result<(Generated, BTreeMap<String, Node>, u64, Duration), String> {
    let tree = workspace.tree();
    std::fs::create_dir_all(&tree).map_err(|e| format!("create {}: {e}", tree.display()))?;
    eprintln!("bench: generating the tree ({} MiB of contents, seed {})", settings.content_bytes >> 20, settings.seed);
    let generated = generate(&tree, settings)?;
    let expected = expected_manifest(&tree)?;
    eprintln!("bench: packing it with nixos-pxe pack --compression zstd");
    let start = Instant::now();
    run(Command::new(nixos_pxe()?)
        .args(["pack", "--compression", "zstd", "--out"])
        .arg(workspace.image())
        .arg("--file")
        .arg(format!("nix={}", tree.join("nix").display()))
        .arg("--file")
        .arg(format!("nixos-pxe/registration={}", tree.join("registration").display()))
        .arg("--file")
        .arg(format!("nixos-pxe/system={}", tree.join("system").display())))?;
    let packed = start.elapsed();
    std::fs::remove_dir_all(&tree).map_err(|e| format!("remove {}: {e}", tree.display()))?;
    sh(&format!("zstd -dcq '{}' > '{}'", workspace.image().display(), workspace.archive().display()))?;
    let image_bytes = std::fs::metadata(workspace.image()).map_err(|e| format!("stat the image: {e}"))?.len();
    Ok((generated, expected, image_bytes, packed))
}

/// The nixos-pxe binary that packs the image: $NIXOS_PXE, else the one cargo built.
fn nixos_pxe() -> Result<PathBuf, String> {
    let path = std::env::var_os("NIXOS_PXE").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nixos-pxe")), PathBuf::from);
    if path.is_file() { Ok(path) } else { Err(format!("{} is missing: build it with `cargo build --release`, or name one with NIXOS_PXE=", path.display())) }
}

/// Where the stream's time goes without the disk: decompression alone, and decompression with
/// tar parsing, each reading the image from tmpfs into nothing. Also zstd's own decompressor.
fn stream_costs(workspace: &Workspace) -> Result<Vec<(String, Duration, f64)>, String> {
    let image = workspace.image();
    let mut out = Vec::new();
    let cpu = || {
        let (u, s) = cpu_seconds(libc::RUSAGE_SELF);
        u + s
    };
    let (c0, start) = (cpu(), Instant::now());
    let file = File::open(&image).map_err(|e| format!("open the image: {e}"))?;
    let (_, mut reader) = nixos_pxe_installer::compression::decoder(file).map_err(|e| format!("decoder: {e}"))?;
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| format!("decompress: {e}"))?;
    out.push(("decompression alone (compression::decoder to nothing)".to_string(), start.elapsed(), cpu() - c0));

    let (c0, start) = (cpu(), Instant::now());
    let file = File::open(&image).map_err(|e| format!("open the image: {e}"))?;
    let (_, reader) = nixos_pxe_installer::compression::decoder(file).map_err(|e| format!("decoder: {e}"))?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|e| format!("tar: {e}"))? {
        let mut entry = entry.map_err(|e| format!("tar: {e}"))?;
        std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| format!("tar: {e}"))?;
    }
    out.push(("decompression and tar parsing, no writes".to_string(), start.elapsed(), cpu() - c0));

    let (u0, s0) = cpu_seconds(libc::RUSAGE_CHILDREN);
    let start = Instant::now();
    sh(&format!("zstd -dcq '{}' > /dev/null", image.display()))?;
    let (u1, s1) = cpu_seconds(libc::RUSAGE_CHILDREN);
    out.push(("zstd -dc > /dev/null (GNU tar's decompressor)".to_string(), start.elapsed(), u1 - u0 + s1 - s0));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The report

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)))
}

fn results_table(samples: &[Sample], rounds: usize, content_bytes: u64) -> String {
    let times = |m: Method| samples.iter().filter(|s| s.method == m).map(|s| s.total.as_secs_f64()).collect::<Vec<_>>();
    let installer = median(times(Method::Installer));
    let mut table = format!(
        "| method | s (median of {rounds}) | slowest–fastest s | MB/s | CPU s user + sys | unpack + syncfs s | speed of (a) ÷ speed of this |\n\
         |---|---:|---:|---:|---:|---:|---:|\n"
    );
    for method in Method::ALL {
        let runs: Vec<&Sample> = samples.iter().filter(|s| s.method == method).collect();
        let t = times(method);
        let med = median(t.clone());
        let (fast, slow) = min_max(&t);
        let user = median(runs.iter().map(|s| s.cpu_user).collect());
        let system = median(runs.iter().map(|s| s.cpu_system).collect());
        let split = if runs.iter().all(|s| s.unpacked.is_some()) {
            let u = median(runs.iter().filter_map(|s| s.unpacked).map(|d| d.as_secs_f64()).collect());
            format!("{u:.2} + {:.2}", med - u)
        } else {
            "–".into()
        };
        table += &format!(
            "| {} | {med:.2} | {slow:.2}–{fast:.2} | {:.0} | {user:.2} + {system:.2} | {split} | {:.2} |\n",
            method.label(),
            content_bytes as f64 / med / 1e6,
            med / installer
        );
    }
    table
}

/// Speed ratios of (a) to `other` round by round (each round's runs are next to each other).
fn per_round_ratios(samples: &[Sample], other: Method) -> Vec<f64> {
    let (a, o): (Vec<&Sample>, Vec<&Sample>) =
        (samples.iter().filter(|s| s.method == Method::Installer).collect(), samples.iter().filter(|s| s.method == other).collect());
    a.iter().zip(o).map(|(a, o)| o.total.as_secs_f64() / a.total.as_secs_f64()).collect()
}

fn costs_table(costs: &[(String, Duration, f64)], content_bytes: u64) -> String {
    let mut table = String::from("| stream only, image on tmpfs, warm | s | MB/s of contents | CPU s |\n|---|---:|---:|---:|\n");
    for (what, took, cpu) in costs {
        table += &format!("| {what} | {:.2} | {:.0} | {cpu:.2} |\n", took.as_secs_f64(), content_bytes as f64 / took.as_secs_f64() / 1e6);
    }
    table
}

/// The machine's CPU time so far, from /proc/stat's "cpu" line: all, idle (with iowait), and
/// stolen by the hypervisor, in ticks.
struct CpuTime {
    all: u64,
    idle: u64,
    stolen: u64,
}

fn cpu_time() -> CpuTime {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let first = stat.lines().next().unwrap_or_default();
    let ticks: Vec<u64> = first.split_whitespace().skip(1).take(8).filter_map(|f| f.parse().ok()).collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    CpuTime { all: ticks.iter().sum(), idle: at(3) + at(4), stolen: at(7) }
}

fn percent_since(before: &CpuTime, part: impl Fn(&CpuTime) -> u64) -> f64 {
    let now = cpu_time();
    let all = now.all.saturating_sub(before.all).max(1);
    part(&now).saturating_sub(part(before)) as f64 * 100.0 / all as f64
}

fn busy_before_run() -> f64 {
    let before = cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let busy = 100.0 - percent_since(&before, |t| t.idle);
    if busy > 10.0 {
        eprintln!("bench: warning: the machine is {busy:.0}% busy before the run: other work will blur the figures");
    }
    busy
}

fn machine_description(disk: &LoopDisk) -> String {
    let machine = common::cores_and_cpu();
    let memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())).unwrap_or_default();
    let var_tmp = first_line(Command::new("findmnt").args(["-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", "/var/tmp"]));
    let versions = first_line(Command::new("dpkg-query").args(["-W", "-f=${Package} ${Version}, ", "tar", "zstd", "e2fsprogs", "coreutils"]));
    format!(
        "{machine}, {} GiB RAM, Linux {}; loop device {} over a sparse file in /var/tmp ({var_tmp}), direct I/O {}; {}",
        memory.parse::<u64>().map_or(0, |kib| (kib + (1 << 19)) >> 20),
        first_line(Command::new("uname").arg("-r")),
        disk.device,
        if disk.direct_io() { "on" } else { "OFF (the loop driver refused it)" },
        versions.trim_end_matches([',', ' '])
    )
}

/// Stops unless this runs as root and every program the benchmark starts is installed.
fn preflight() -> Result<(), String> {
    if run(Command::new("id").arg("-u"))?.trim() != "0" {
        return Err("run it as root: the benchmark makes a loop device, mounts it and drops the page cache".into());
    }
    for program in PROGRAMS {
        if sh(&format!("command -v {program} >/dev/null")).is_err() {
            return Err(format!("{program} is missing: run dev/install-deps.sh (dev/packages.txt lists it)"));
        }
    }
    Ok(())
}

/// Moves this process into a mount namespace of its own, with every mount private, so that the
/// benchmark's mounts exist nowhere else. Otherwise a namespace another program makes meanwhile
/// (`ip netns exec`, `unshare -m`: the other tests on a shared machine) copies the mounted file
/// system and holds the device busy after the benchmark's unmount, until that program ends. The
/// namespace, and with it any mount left behind, goes away when this process and its children end.
/// Must run while this process has one thread (unshare(2) of CLONE_NEWNS is per thread).
fn private_mount_namespace() -> Result<(), String> {
    // SAFETY: plain system calls with constant arguments and NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(format!("cannot make a mount namespace of its own: {}", std::io::Error::last_os_error()));
        }
        if libc::mount(c"none".as_ptr(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
            return Err(format!("cannot make the mounts private: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn bench(settings: Settings, command: &str) -> Result<String, String> {
    let started = Instant::now();
    let workspace = Workspace::create()?;
    // The watcher stays in the machine's mount namespace; the benchmark leaves it.
    clean_up_when_this_process_ends(&workspace)?;
    private_mount_namespace()?;
    let busy_before = busy_before_run();
    let cpu_before = cpu_time();
    let (generated, expected, image_bytes, packed) = make_image(&workspace, &settings)?;
    let disk = LoopDisk::create(&workspace.backing(), settings.device_bytes, &workspace.mount_point())?;
    let content_bytes = generated.content_bytes
        + ["registration", "system"]
            .iter()
            .filter_map(|n| match expected.get(&format!("nixos-pxe/{n}")) {
                Some(Node::File { size, .. }) => Some(*size),
                _ => None,
            })
            .sum::<u64>();
    let bench = Bench { workspace, disk, expected, content_bytes };
    eprintln!("bench: where the stream's time goes (no disk)");
    let costs = stream_costs(&bench.workspace)?;
    let mut samples = Vec::new();
    for round in 1..=settings.rounds {
        for method in Method::ALL {
            eprintln!("bench: round {round}/{}: {}", settings.rounds, method.label());
            let sample = bench.measure(method)?;
            eprintln!("bench:   {:.2} s", sample.total.as_secs_f64());
            samples.push(sample);
        }
    }
    let ratios = |other| {
        let r = per_round_ratios(&samples, other);
        let (lo, hi) = min_max(&r);
        format!("{:.2} (rounds {lo:.2}–{hi:.2})", median(r))
    };
    let date = first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    Ok(format!(
        "Measured by `{command}` on {date} in {:.0} s.\n\
         Machine: {}.\n\
         CPU busy in the second before the run: {busy_before:.0}%; CPU time stolen by the hypervisor during it: {:.1}%.\n\
         Image (seed {}): {} store paths, {} files ({:.1} MiB of contents, largest {:.1} MiB), {} directories, {} symlinks; \
         tar {:.1} MiB, system.tar.zst {:.1} MiB (zstd level 6 by `nixos-pxe pack`, {:.2}x; packed in {:.0} s).\n\
         Rounds a, b, c, c', a, b, c, c', ...; each run on a new file system and an empty page cache, timed until the data is on the device \
         (syncfs; dd: fsync). MB/s = 10^6 bytes of file contents per second; speed of (a) ÷ speed of this = this method's \
         time ÷ (a)'s (above 1: (a) is faster). Every unpacked tree was compared with the generated one.\n\n{}\n\
         Round by round: (a) ÷ (b) {}, (a) ÷ (c) {}, (a) ÷ (c') {}. Goal: (a) ÷ (b) ≥ 1 and (a) ÷ (c) ≥ 0.90.\n\n{}",
        started.elapsed().as_secs_f64(),
        machine_description(&bench.disk),
        percent_since(&cpu_before, |t| t.stolen),
        settings.seed,
        generated.store_paths,
        generated.files + 2,
        content_bytes as f64 / (1 << 20) as f64,
        generated.largest as f64 / (1 << 20) as f64,
        generated.dirs,
        generated.symlinks,
        std::fs::metadata(bench.workspace.archive()).map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64),
        image_bytes as f64 / (1 << 20) as f64,
        std::fs::metadata(bench.workspace.archive()).map_or(0.0, |m| m.len() as f64 / image_bytes as f64),
        packed.as_secs_f64(),
        results_table(&samples, settings.rounds, content_bytes),
        ratios(Method::GnuTar),
        ratios(Method::Dd),
        ratios(Method::DdDirect),
        costs_table(&costs, content_bytes)
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: then the quick run only.
    let benching = args.iter().any(|a| a == "--bench");
    let mut settings = if benching && !args.iter().any(|a| a == "--quick") { FULL } else { QUICK };
    if let Some(rounds) = args.iter().position(|a| a == "--rounds").and_then(|i| args.get(i + 1)) {
        match rounds.parse() {
            Ok(n) if n > 0 => settings.rounds = n,
            _ => {
                eprintln!("bench: --rounds takes a number above 0, not {rounds:?}");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = preflight() {
        if !benching {
            // As a test (cargo test --all-targets): fail, or skip loudly where that is allowed.
            if switches::on(switches::ALLOW_SKIP) {
                eprintln!("SKIPPED benches/unpack.rs quick run: {e} ({}=1)", switches::ALLOW_SKIP);
                return;
            }
        }
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
    let command = if !benching {
        "cargo test --all-targets (its quick run)".to_string()
    } else {
        let mut options: Vec<String> = Vec::new();
        if settings.quick {
            options.push("--quick".into());
        }
        if settings.rounds != (if settings.quick { QUICK.rounds } else { FULL.rounds }) {
            options.push(format!("--rounds {}", settings.rounds));
        }
        format!("cargo bench --bench unpack{}", if options.is_empty() { String::new() } else { format!(" -- {}", options.join(" ")) })
    };
    let file = if settings.quick { "bench-unpack-quick.md" } else { "bench-unpack.md" };
    common::print_and_keep(bench(settings, &command), file);
}
