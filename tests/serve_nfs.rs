//! `nixos-pxe serve --nfs-root` against a real NFSv3 client: libnfs's `nfs-ls`, `nfs-cp` and
//! `nfs-cat` (the host kernel has no NFS client; the kernel's own client is exercised by the QEMU
//! install in tests/e2e_install.rs). In a network namespace this test creates, on its loopback.

mod common;

use std::path::Path;

const CONFIG: &str = r#"{
  bootServer = {
    address = "127.0.0.1";
    interface = "lo";
    subnet = "127.0.0.0/8";
    nfsExport = "/srv/nixos/nfsroot";
    nfsMountOptions = "vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock";
  };
  customInstaller.rootDevice = "/dev/vda";
}
"#;

/// Runs `script` in a fresh network namespace with serve's TFTP and NFS on lo; `$URL` is the
/// export's NFS URL for libnfs and `$Q` its query (version and ports).
fn with_server(dir: &Path, script: &str) -> (bool, String) {
    let args = "--config config.nix --source static --interface lo --dhcp off --tftp-root tftp --nfs-root export";
    let script = format!("URL=\"nfs://127.0.0.1/srv/nixos/nfsroot\"\nQ=\"?version=3&nfsport=2049&mountport=2049\"\n{script}");
    common::with_serve_on_loopback(dir, args, "NFS: serving", &script, "NFS: stopped")
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let export = dir.path().join("export");
    std::fs::create_dir_all(export.join("nixos-pxe")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("tftp")).expect("mkdir");
    std::fs::write(dir.path().join("config.nix"), CONFIG).expect("config");
    // Bigger than one 1 MiB READ, and not a multiple of it.
    let image: Vec<u8> = (0..3_000_017u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(export.join("nixos-pxe/system.tar.zst"), image).expect("image");
    std::fs::write(export.join("hello"), b"hello from the NFS root\n").expect("write");
    std::fs::write(dir.path().join("secret"), b"outside the export\n").expect("write");
    std::os::unix::fs::symlink("../secret", export.join("escape")).expect("symlink");
    dir
}

#[test]
fn libnfs_reads_the_export_byte_for_byte_and_cannot_write_or_escape() {
    let dir = setup();
    let (ok, log) = with_server(
        dir.path(),
        r#"
nfs-ls "$URL$Q" > ls.txt || fail "nfs-ls"
grep -q ' hello$' ls.txt && grep -q ' nixos-pxe$' ls.txt && grep -q ' escape$' ls.txt || fail "listing: $(cat ls.txt)"
nfs-cp "$URL/nixos-pxe/system.tar.zst$Q" image.out >/dev/null || fail "nfs-cp"
cmp image.out export/nixos-pxe/system.tar.zst || fail "the image differs"
[ "$(nfs-cat "$URL/hello$Q")" = "hello from the NFS root" ] || fail "nfs-cat hello"
# The symlink is served as a link; following it is the client's business, in its own root.
nfs-cat "$URL/escape$Q" 2>/dev/null && fail "reading through a link out of the export worked"
# Read-only: a write is refused and nothing appears in the export.
nfs-cp export/hello "$URL/written$Q" 2>/dev/null && fail "a write succeeded"
[ ! -e export/written ] || fail "a file was written into the export"
# Only the configured export is mounted.
nfs-ls "nfs://127.0.0.1/srv$Q" 2>/dev/null && fail "a path above the export was mounted"
nfs-ls "nfs://127.0.0.1/etc$Q" 2>/dev/null && fail "another path was mounted"
true
"#,
    );
    assert!(ok, "{log}");
}
