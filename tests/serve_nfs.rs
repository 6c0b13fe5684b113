//! `nixos-pxe serve --nfs-root` attacked the way a client on the boot network could: with libnfs's
//! `nfs-ls`, `nfs-cp` and `nfs-cat` (what a user would try; the host kernel has no NFS client, the
//! kernel's own client is exercised by the QEMU installs), and with raw NFSv3 calls (nfs3_client):
//! LOOKUP through a link's handle, READ and READDIR on a link, `..` and `/` in names, forged and
//! altered file handles, writes. In a network namespace this test creates (tests/common Lab), serve
//! in a private mount namespace in which a tmpfs is mounted inside the export.
//!
//! The export holds the links a NixOS closure has and worse: `up -> ..`, `hostroot -> /`,
//! `hostetc -> /etc`, `shadow -> /etc/shadow`, `store -> /nix/store`; a secret lies beside it. The
//! rule proven: nothing but the export's own files ever leaves the server, and a link is resolved
//! by the client in its own root (so `hostroot/etc/hostname` is the export's etc/hostname).

mod common;

use common::Lab;
use nfs3_client::Nfs3ConnectionBuilder;
use nfs3_client::nfs3_types::nfs3::{
    self, LOOKUP3args, Nfs3Result, READ3args, READDIRPLUS3args, READLINK3args, diropargs3, filename3, ftype3, nfs_fh3, nfsstat3,
};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::TokioConnector;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SERVER: &str = "10.42.0.1";
const EXPORT: &str = "/srv/nixos/nfsroot";
const CONFIG: &str = r#"{
  bootServer = {
    address = "10.42.0.1";
    interface = "br0";
    subnet = "10.42.0.0/24";
    nfsExport = "/srv/nixos/nfsroot";
    nfsMountOptions = "vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock";
  };
  customInstaller.rootDevice = "/dev/vda";
}
"#;
const EXPORT_HOSTNAME: &str = "the export's own hostname\n";
const SECRET: &str = "beside the export: must never be served\n";

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let export = dir.path().join("export");
    for d in ["nixos-pxe", "etc", "mnt"] {
        std::fs::create_dir_all(export.join(d)).expect("mkdir");
    }
    std::fs::create_dir_all(dir.path().join("tftp")).expect("mkdir");
    std::fs::write(dir.path().join("config.nix"), CONFIG).expect("config");
    // Bigger than one 1 MiB READ, and not a multiple of it.
    let image: Vec<u8> = (0..3_000_017u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(export.join("nixos-pxe/system.tar.zst"), image).expect("image");
    std::fs::write(export.join("hello"), b"hello from the NFS root\n").expect("write");
    std::fs::write(export.join("etc/hostname"), EXPORT_HOSTNAME).expect("write");
    std::fs::write(dir.path().join("secret"), SECRET).expect("write");
    for (link, target) in [
        ("escape", "../secret"),
        ("up", ".."),
        ("hostroot", "/"),
        ("hostetc", "/etc"),
        ("shadow", "/etc/shadow"),
        ("store", "/nix/store"),
    ] {
        symlink(target, export.join(link)).expect("symlink");
    }
    // A link that stays inside the export, for a client to resolve.
    symlink("etc/hostname", export.join("hostname-link")).expect("symlink");
    run(Command::new("mkfifo").arg(export.join("fifo")));
    // A device node of the test's own: /dev/zero's numbers.
    run(Command::new("mknod").arg(export.join("zero")).args(["c", "1", "5"]));
    dir
}

fn run(cmd: &mut Command) -> String {
    common::run(cmd)
}

/// serve in the lab's namespace, in a mount namespace of its own with a tmpfs (holding `mounted`)
/// on the export's mnt/; returns when its log says NFS is served, or fails with the log.
fn start_serve(lab: &mut Lab, dir: &Path) {
    let bin = env!("CARGO_BIN_EXE_nixos-pxe");
    let d = dir.display();
    let script = format!(
        "mount -t tmpfs tmpfs {d}/export/mnt && echo mounted > {d}/export/mnt/file && cd {d} && \
         exec {bin} serve --config config.nix --source static --dhcp off --tftp-root tftp --nfs-root export --state-dir state"
    );
    let log = dir.join("server.log");
    lab.spawn(&["unshare", "-m", "--propagation", "private", "sh", "-ec", &script], &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("NFS: serving") {
            return;
        }
        let exited = lab.exited();
        assert!(exited.is_empty(), "serve exited before serving NFS:\n{}", exited.join("\n"));
        assert!(Instant::now() < deadline, "serve did not serve NFS within 20 s:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a libnfs command in the lab's namespace: (exit status success, stdout).
fn libnfs(lab: &Lab, dir: &Path, args: &[&str]) -> (bool, String) {
    let (ok, stdout, _) = libnfs_with_stderr(lab, dir, args);
    (ok, stdout)
}

/// `libnfs`, with its stderr too.
fn libnfs_with_stderr(lab: &Lab, dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("timeout")
        .args(["20", "ip", "netns", "exec", &lab.ns])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run libnfs (dev/install-deps.sh test installs libnfs-utils)");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs a libnfs command that must fail, printing nothing, with `why` in its error.
fn libnfs_refused(lab: &Lab, dir: &Path, args: &[&str], why: &str) {
    assert_refused(&libnfs_with_stderr(lab, dir, args), &format!("{args:?}"), why);
}

/// A libnfs command's (success, stdout, stderr) is a refusal for the reason `why`, not any
/// failure (a server that is not there fails too, printing nothing).
fn assert_refused((ok, stdout, stderr): &(bool, String, String), what: &str, why: &str) {
    assert!(!ok && stdout.is_empty() && stderr.contains(why), "{what}: want a failure saying {why:?}; got success {ok}, stdout {stdout:?}, stderr {stderr:?}");
}

/// libnfs's error when the MOUNT of a path other than the export is refused (libnfs mounts the
/// URL's path up to its last component).
const NOT_THE_EXPORT: &str = "Mount failed with error MNT3ERR_NOENT(2)";

fn url(path: &str) -> String {
    format!("nfs://{SERVER}{EXPORT}{path}?version=3&nfsport=2049&mountport=2049")
}

#[test]
fn libnfs_reads_the_export_and_nothing_else() {
    let dir = setup();
    let mut lab = Lab::new("nfs");
    start_serve(&mut lab, dir.path());
    let host_hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host_shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();

    let (ok, listing) = libnfs(&lab, dir.path(), &["nfs-ls", &url("")]);
    assert!(ok, "nfs-ls failed: {listing}");
    for name in ["hello", "nixos-pxe", "up", "hostroot", "escape"] {
        assert!(listing.lines().any(|l| l.ends_with(&format!(" {name}"))), "{name} not listed:\n{listing}");
    }
    let (ok, _) = libnfs(&lab, dir.path(), &["nfs-cp", &url("/nixos-pxe/system.tar.zst"), "image.out"]);
    assert!(ok, "nfs-cp of the image failed");
    assert_eq!(
        std::fs::read(dir.path().join("image.out")).expect("copy"),
        std::fs::read(dir.path().join("export/nixos-pxe/system.tar.zst")).expect("image"),
        "the image differs"
    );
    assert_eq!(libnfs(&lab, dir.path(), &["nfs-cat", &url("/hello")]), (true, "hello from the NFS root\n".into()));

    // The issue's reproduction: each of these returned a file of the boot server before. Now
    // each is refused, for its own reason: serve answers a LOOKUP in a link's handle with
    // NOTDIR; libnfs itself refuses a link that leaves its mount; libnfs mounts the URL's path
    // up to its last component, and serve mounts nothing but the export.
    for (path, why) in [
        ("/up/secret", "Lookup of /secret failed with NFS3ERR_NOTDIR"),
        ("/escape", "Symbolic link resolves to invalid path"),
        ("/hostroot/etc/hostname", NOT_THE_EXPORT),
        ("/hostetc/hostname", "Lookup of /hostname failed with NFS3ERR_NOTDIR"),
        ("/hostroot/etc/shadow", NOT_THE_EXPORT),
        ("/shadow", "Symbolic link points outside export"),
        ("/up/export/../secret", NOT_THE_EXPORT),
    ] {
        let out = libnfs_with_stderr(&lab, dir.path(), &["nfs-cat", &url(path)]);
        let text = &out.1;
        assert!(!text.contains(SECRET.trim()), "{path} served the secret beside the export");
        assert!(host_hostname.is_empty() || *text != host_hostname || text == EXPORT_HOSTNAME, "{path} served the server's /etc/hostname");
        assert!(host_shadow.is_empty() || !text.contains(host_shadow.lines().next().unwrap_or("\0")), "{path} served the server's /etc/shadow");
        assert_refused(&out, path, why);
    }
    // A link resolved by the client in its own root: serve hands out hostname-link as a link,
    // and libnfs reads etc/hostname of the export through it.
    assert_eq!(libnfs(&lab, dir.path(), &["nfs-cat", &url("/hostname-link")]), (true, EXPORT_HOSTNAME.to_string()));

    // The tmpfs mounted inside the export is not served: not listed, not mountable.
    assert!(!listing.lines().any(|l| l.ends_with(" mnt")), "the mount point mnt is listed:\n{listing}");
    libnfs_refused(&lab, dir.path(), &["nfs-cat", &url("/mnt/file")], NOT_THE_EXPORT);
    // A FIFO is not read (and does not hang the server: the next call is answered). nfs-cat of a
    // zero-sized file exits 0 with nothing; the raw test checks the READ's status.
    let (_, text) = libnfs(&lab, dir.path(), &["nfs-cat", &url("/fifo")]);
    assert!(text.is_empty(), "reading a FIFO gave {text:?}");
    assert_eq!(libnfs(&lab, dir.path(), &["nfs-cat", &url("/hello")]).1, "hello from the NFS root\n");

    // Read-only: a write is refused as one (the server's ROFS) and nothing appears in the export.
    libnfs_refused(&lab, dir.path(), &["nfs-cp", "export/hello", &url("/written")], "CREATE of /written failed with NFS3ERR_ROFS");
    assert!(!dir.path().join("export/written").exists(), "a write succeeded");
    // Only the configured export is mounted; the export still is, after those refusals.
    for other in ["/srv", "/etc", "/"] {
        libnfs_refused(&lab, dir.path(), &["nfs-ls", &format!("nfs://{SERVER}{other}?version=3&nfsport=2049&mountport=2049")], NOT_THE_EXPORT);
    }
    assert_eq!(libnfs(&lab, dir.path(), &["nfs-cat", &url("/hello")]), (true, "hello from the NFS root\n".into()), "the export, after the refusals");
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    assert!(log.contains("not serving a mount point inside the export"), "the refused mount point is not logged:\n{log}");
}

/// What the raw client checks, run in a thread inside the lab's network namespace.
async fn raw_attacks(dir: &Path) -> Result<(), String> {
    let mut c = Nfs3ConnectionBuilder::new(TokioConnector, SERVER, EXPORT)
        .mount_port(2049)
        .nfs3_port(2049)
        .connect_from_privileged_port(false)
        .mount()
        .await
        .map_err(|e| format!("mount: {e}"))?;
    let root = c.root_nfs_fh3();
    macro_rules! call {
        ($method:ident, $args:expr) => {
            c.$method(&$args).await.map_err(|e| format!("{}: {e}", stringify!($method)))?
        };
    }
    let lookup = |dir: &nfs_fh3, name: &str| LOOKUP3args {
        what: diropargs3 { dir: dir.clone(), name: filename3(Opaque::owned(name.as_bytes().to_vec())) },
    };
    let read = |file: &nfs_fh3| READ3args { file: file.clone(), offset: 0, count: 4096 };
    let readdir = |dir: &nfs_fh3| READDIRPLUS3args {
        dir: dir.clone(),
        cookie: 0,
        cookieverf: nfs3::cookieverf3::default(),
        dircount: 4096,
        maxcount: 65536,
    };
    fn status<T: std::fmt::Debug, E>(r: Nfs3Result<T, E>) -> Result<T, nfsstat3> {
        match r {
            Nfs3Result::Ok(v) => Ok(v),
            Nfs3Result::Err((s, _)) => Err(s),
        }
    }
    let expect = |what: &str, got: nfsstat3, want: nfsstat3| {
        if got == want { Ok(()) } else { Err(format!("{what}: got {got:?}, want {want:?}")) }
    };

    // A file of the export, read byte for byte.
    let hello = status(call!(lookup, lookup(&root, "hello"))).map_err(|s| format!("LOOKUP hello: {s:?}"))?.object;
    let data = status(call!(read, read(&hello))).map_err(|s| format!("READ hello: {s:?}"))?;
    if &*data.data != b"hello from the NFS root\n" {
        return Err(format!("READ hello: {:?}", data.data));
    }

    for (link, inner) in [("up", "secret"), ("escape", ""), ("hostroot", "etc"), ("hostetc", "hostname"), ("shadow", ""), ("store", "")] {
        let found = status(call!(lookup, lookup(&root, link))).map_err(|s| format!("LOOKUP {link}: {s:?}"))?;
        let attributes = match found.obj_attributes {
            nfs3::post_op_attr::Some(a) => a,
            nfs3::post_op_attr::None => return Err(format!("LOOKUP {link}: no attributes")),
        };
        if attributes.type_ != ftype3::NF3LNK {
            return Err(format!("LOOKUP {link}: type {:?}, want a link", attributes.type_));
        }
        let handle = found.object;
        // READ on the link's own handle: the old server returned the target's contents.
        let got = status(call!(read, read(&handle))).err().unwrap_or(nfsstat3::NFS3_OK);
        expect(&format!("READ {link}"), got, nfsstat3::NFS3ERR_INVAL)?;
        let got = status(call!(readdirplus, readdir(&handle))).err().unwrap_or(nfsstat3::NFS3_OK);
        expect(&format!("READDIRPLUS {link}"), got, nfsstat3::NFS3ERR_NOTDIR)?;
        if !inner.is_empty() {
            // LOOKUP through the link's handle, as if it were a directory.
            let got = status(call!(lookup, lookup(&handle, inner))).err().unwrap_or(nfsstat3::NFS3_OK);
            expect(&format!("LOOKUP {link}/{inner}"), got, nfsstat3::NFS3ERR_NOTDIR)?;
        }
        let text = status(call!(readlink, READLINK3args { symlink: handle.clone() })).map_err(|s| format!("READLINK {link}: {s:?}"))?;
        let want = std::fs::read_link(dir.join("export").join(link)).map_err(|e| e.to_string())?;
        if text.data.0.as_ref() != want.as_os_str().as_encoded_bytes() {
            return Err(format!("READLINK {link}: {:?}", text.data));
        }
    }
    // Names that try to leave the export.
    let top = status(call!(lookup, lookup(&root, ".."))).map_err(|s| format!("LOOKUP ..: {s:?}"))?.object;
    if top.data != root.data {
        return Err("LOOKUP .. of the top is not the top".into());
    }
    for name in ["../secret", "/etc/shadow", "up/secret", "a\0b"] {
        let got = status(call!(lookup, lookup(&root, name))).err().unwrap_or(nfsstat3::NFS3_OK);
        expect(&format!("LOOKUP {name:?}"), got, nfsstat3::NFS3ERR_ACCES)?;
    }
    let got = status(call!(lookup, lookup(&root, "secret"))).err().unwrap_or(nfsstat3::NFS3_OK);
    expect("LOOKUP secret", got, nfsstat3::NFS3ERR_NOENT)?;
    // A mount point inside the export, and a FIFO.
    let got = status(call!(lookup, lookup(&root, "mnt"))).err().unwrap_or(nfsstat3::NFS3_OK);
    expect("LOOKUP mnt (a mount point)", got, nfsstat3::NFS3ERR_ACCES)?;
    let fifo = status(call!(lookup, lookup(&root, "fifo"))).map_err(|s| format!("LOOKUP fifo: {s:?}"))?.object;
    let got = status(call!(read, read(&fifo))).err().unwrap_or(nfsstat3::NFS3_OK);
    expect("READ fifo", got, nfsstat3::NFS3ERR_INVAL)?;
    // A device node: listed like any file, never opened or read.
    let zero = status(call!(lookup, lookup(&root, "zero"))).map_err(|s| format!("LOOKUP zero: {s:?}"))?.object;
    let got = status(call!(read, read(&zero))).err().unwrap_or(nfsstat3::NFS3_OK);
    expect("READ zero (a character device)", got, nfsstat3::NFS3ERR_INVAL)?;

    // Forged handles: the server's generation prefix (the first 8 bytes of any handle it made),
    // then inode numbers the attacker may know (the secret's, the server's /etc/shadow's, and
    // hello's own) with a made-up tag; hello's handle with one bit flipped; a short one.
    let prefix = &hello.data[..8];
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::symlink_metadata(p).expect("stat"));
    let forge = |ino: u64, tag: &[u8]| nfs_fh3 { data: Opaque::owned([prefix, &ino.to_le_bytes(), tag].concat()) };
    let hello_tag = hello.data[16..].to_vec();
    let mut flipped = hello.data.to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let forged = [
        forge(ino(&dir.join("secret")), &[0; 16]),
        forge(ino(Path::new("/etc/shadow")), &hello_tag),
        forge(ino(&dir.join("export/etc/hostname")), &hello_tag),
        nfs_fh3 { data: Opaque::owned(flipped) },
        nfs_fh3 { data: Opaque::owned(hello.data[..12].to_vec()) },
    ];
    for (i, handle) in forged.into_iter().enumerate() {
        let got = status(call!(read, read(&handle))).err().unwrap_or(nfsstat3::NFS3_OK);
        expect(&format!("READ forged handle {i}"), got, nfsstat3::NFS3ERR_BADHANDLE)?;
        let got = status(call!(lookup, lookup(&handle, "hostname"))).err().unwrap_or(nfsstat3::NFS3_OK);
        expect(&format!("LOOKUP in forged handle {i}"), got, nfsstat3::NFS3ERR_BADHANDLE)?;
    }
    // Writes of every kind are refused by the read-only server.
    let create = nfs3::CREATE3args {
        where_: diropargs3 { dir: root.clone(), name: filename3(Opaque::owned(b"planted".to_vec())) },
        how: nfs3::createhow3::UNCHECKED(nfs3::sattr3::default()),
    };
    let got = status(call!(create, create)).err().unwrap_or(nfsstat3::NFS3_OK);
    expect("CREATE", got, nfsstat3::NFS3ERR_ROFS)?;
    let remove = nfs3::REMOVE3args { object: diropargs3 { dir: root.clone(), name: filename3(Opaque::owned(b"hello".to_vec())) } };
    let got = status(call!(remove, remove)).err().unwrap_or(nfsstat3::NFS3_OK);
    expect("REMOVE", got, nfsstat3::NFS3ERR_ROFS)?;
    Ok(())
}

#[test]
fn raw_nfs_calls_cannot_reach_outside_the_export() {
    let dir = setup();
    let mut lab = Lab::new("nfsraw");
    start_serve(&mut lab, dir.path());
    let netns = format!("/run/netns/{}", lab.ns);
    let path = dir.path().to_path_buf();
    let result = std::thread::spawn(move || {
        // setns(CLONE_NEWNET) moves only this thread into the lab's network namespace.
        let file = std::fs::File::open(&netns).map_err(|e| format!("{netns}: {e}"))?;
        // SAFETY: setns on a descriptor this thread owns; affects this thread only.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), raw_attacks(&path)).await.map_err(|_| "timed out".to_string())? })
    })
    .join()
    .expect("client thread");
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    assert!(result.is_ok(), "{}\nserver log:\n{log}", result.err().unwrap_or_default());
    assert!(log.contains("refused a file handle this server did not make"), "forged handles are not logged:\n{log}");
    assert!(!dir.path().join("export/planted").exists());
}

/// Reads 4096 bytes at 1 MB of the image through a new connection, with `handle` (the image's
/// file handle from an earlier connection) or, without one, after looking the image up. Returns
/// the handle used and the READ's data or its NFS status.
async fn read_image(handle: Option<nfs_fh3>) -> Result<(nfs_fh3, Result<Vec<u8>, nfsstat3>), String> {
    let mut c = Nfs3ConnectionBuilder::new(TokioConnector, SERVER, EXPORT)
        .mount_port(2049)
        .nfs3_port(2049)
        .connect_from_privileged_port(false)
        .mount()
        .await
        .map_err(|e| format!("mount: {e}"))?;
    let handle = match handle {
        Some(h) => h,
        None => {
            let mut dir = c.root_nfs_fh3();
            for name in ["nixos-pxe", "system.tar.zst"] {
                let args = LOOKUP3args { what: diropargs3 { dir: dir.clone(), name: filename3(Opaque::owned(name.as_bytes().to_vec())) } };
                dir = match c.lookup(&args).await.map_err(|e| format!("LOOKUP {name}: {e}"))? {
                    Nfs3Result::Ok(found) => found.object,
                    Nfs3Result::Err((s, _)) => return Err(format!("LOOKUP {name}: {s:?}")),
                };
            }
            dir
        }
    };
    let read = c.read(&READ3args { file: handle.clone(), offset: 1_000_000, count: 4096 }).await.map_err(|e| format!("READ: {e}"))?;
    let data = match read {
        Nfs3Result::Ok(r) => Ok(r.data.to_vec()),
        Nfs3Result::Err((s, _)) => Err(s),
    };
    Ok((handle, data))
}

/// Runs `read_image` in a thread inside the lab's network namespace.
fn read_in_lab(lab: &Lab, handle: Option<nfs_fh3>) -> (nfs_fh3, Result<Vec<u8>, nfsstat3>) {
    let netns = format!("/run/netns/{}", lab.ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).map_err(|e| format!("{netns}: {e}"))?;
        // SAFETY: setns on a descriptor this thread owns; affects this thread only.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), read_image(handle)).await.map_err(|_| "timed out".to_string())? })
    })
    .join()
    .expect("client thread")
    .unwrap_or_else(|e| panic!("{e}"))
}

/// serve killed with SIGKILL while a client holds a file handle, then started again: the handle
/// still reads the same bytes, because the key the handles are made with is kept in
/// `--state-dir` (nfs-handle.key, 0600). Without that file the old handle is refused: the
/// control that shows the test can tell.
#[test]
fn a_restarted_serve_keeps_the_handles_clients_hold() {
    let dir = setup();
    let mut lab = Lab::new("nfskey");
    let log = dir.path().join("server.log");
    start_serve(&mut lab, dir.path());
    let image = std::fs::read(dir.path().join("export/nixos-pxe/system.tar.zst")).expect("image");
    let want = image[1_000_000..1_004_096].to_vec();
    let (handle, first) = read_in_lab(&lab, None);
    // Compared as "equal or the status", so that a failure does not print 4096 bytes.
    assert_eq!(first.map(|d| d == want), Ok(true), "the first read");
    let key = dir.path().join("state/nfs-handle.key");
    let meta = std::fs::metadata(&key).expect("serve keeps the key in its state directory");
    assert_eq!((meta.len(), std::os::unix::fs::MetadataExt::mode(&meta) & 0o777), (32, 0o600));
    let key_bytes = std::fs::read(&key).expect("key");

    lab.kill(&log);
    start_serve(&mut lab, dir.path());
    assert_eq!(std::fs::read(&key).expect("key"), key_bytes, "the restart reused the key");
    let (_, after_restart) = read_in_lab(&lab, Some(handle.clone()));
    assert_eq!(after_restart.map(|d| d == want), Ok(true), "the handle from before the SIGKILL reads the same bytes");

    // The control: a serve that lost its key (as every serve did before it kept one).
    lab.kill(&log);
    std::fs::remove_file(&key).expect("remove the key");
    start_serve(&mut lab, dir.path());
    let (_, with_new_key) = read_in_lab(&lab, Some(handle));
    // STALE: the generation prefix derived from the key differs (what a kernel client reports
    // as "Stale file handle", ending an install mid-unpack).
    let with_new_key = with_new_key.map(|d| d.len());
    assert!(matches!(with_new_key, Err(nfsstat3::NFS3ERR_STALE | nfsstat3::NFS3ERR_BADHANDLE)), "a handle made with another key must be refused: {with_new_key:?}");
}
