//! `nixos-pxe serve` TFTP against real clients (curl, atftp) in a network namespace this test creates:
//! sizes from 0 bytes to past the 16-bit block rollover, traversal attempts, a stuck client, 10% loss.

mod common;

use std::path::Path;

fn write(path: &Path, size: usize, seed: usize) {
    let data: Vec<u8> = (0..size).map(|i| ((i * 31 + seed * 17 + i / 977) % 253) as u8).collect();
    std::fs::write(path, data).expect("write test file");
}

/// Runs `script` in a fresh network namespace with serve's TFTP (no DHCP) on lo. Every client
/// here is 127.0.0.1, so the per-client cap is raised above the 30 parallel clients below
/// (tests/serve_abuse.rs tests the cap itself).
fn in_namespace(dir: &Path, script: &str) -> (bool, String) {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed/installer.nix");
    let args = format!("--config {config} --source static --interface lo --dhcp off --tftp-root root --per-client 64");
    common::with_serve_on_loopback(dir, &args, "tftp: serving", script, "tftp: stopped")
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("nixos")).expect("mkdir");
    write(&root.join("empty"), 0, 0);
    write(&root.join("b512x3"), 512 * 3, 1);
    write(&root.join("b1468x5"), 1468 * 5, 2);
    write(&root.join("odd"), 100_003, 3);
    write(&root.join("nixos/bzImage"), 3_000_000, 4);
    // More than 65535 blocks of 512 bytes: block numbers wrap to 0.
    write(&root.join("big"), 512 * 65536 + 12345, 5);
    // What the traversal attempts aim at: a file beside the root (the script's working directory
    // is the test's directory, so it is `secret` there), an absolute link to it and a relative
    // link to the directory above the root.
    std::fs::write(dir.path().join("secret"), b"outside the root").expect("write");
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).expect("symlink");
    std::os::unix::fs::symlink("..", root.join("updir")).expect("symlink");
    // A client that sends one read request per name, each from a new port, and prints what comes
    // back: the error's code and message exactly, or that data came.
    std::fs::write(
        dir.path().join("rrq.py"),
        r#"import socket, struct, sys
for name in sys.argv[1:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    s.sendto(b"\0\1" + name.encode() + b"\0octet\0", ("127.0.0.1", 69))
    data, peer = s.recvfrom(70000)
    op, arg = struct.unpack("!HH", data[:4])
    if op == 5:
        message = data[4:].split(b"\0")[0].decode()
        print(f"{name}: error {arg} {message}")
    else:
        print(f"{name}: opcode {op} block {arg}")
        s.sendto(b"\0\5\0\0enough\0", peer)
"#,
    )
    .expect("write client");
    dir
}

#[test]
fn real_clients_get_identical_files_and_traversal_is_refused() {
    let dir = setup();
    let (ok, log) = in_namespace(
        dir.path(),
        r#"
# A client that asks for the big file and never acknowledges: it must not hold up anyone else.
python3 -c 'import socket,time; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.sendto(b"\0\1big\0octet\0blksize\0" b"1468\0",("127.0.0.1",69)); time.sleep(60)' &
STUCK=$!
for f in empty b512x3 b1468x5 odd nixos/bzImage; do
  small="--option blksize\ 8"; [ $f = nixos/bzImage ] && small=""  # 375000 round trips otherwise
  # curl 7.88 fails on 0-byte files against any server (tftpd-hpa too: getpeername errno 107); atftp covers them.
  for bs in 512 1468; do
    [ $f = empty ] && continue
    rm -f out; curl -sS --tftp-blksize $bs -o out tftp://127.0.0.1/$f || fail "curl $f blksize $bs"
    cmp out root/$f || fail "curl $f blksize $bs differs"
  done
  for opts in "" "--option tsize" "--option blksize\ 1468 --option windowsize\ 4 --option tsize" "--option blksize\ 1024 --option tsize" "$small"; do
    rm -f out; eval atftp $opts -g -r $f -l out 127.0.0.1 >atftp.log 2>&1 || { cat atftp.log; fail "atftp $opts $f"; }
    cmp out root/$f || fail "atftp $opts $f differs"
  done
done
rm -f out; curl -sS -o out tftp://127.0.0.1/big || fail "curl big (rollover)"
cmp out root/big || fail "curl big differs"
rm -f out; atftp --option "windowsize 8" -g -r big -l out 127.0.0.1 >atftp.log 2>&1 || { cat atftp.log; fail "atftp big windowsize 8"; }
cmp out root/big || fail "atftp big differs"
grep -q 'tftp: sent.*file="big" bytes=33566777 blksize=512 windowsize=8' server.log || fail "no log line for the windowed big transfer"
[ "$(cat secret)" = "outside the root" ] || fail "no secret beside the root: the leak checks below would prove nothing"
# Each attempt gets exactly this error (code and message); b512x3 shows the client works.
python3 rrq.py ../secret nixos/../../secret '..\secret' escape updir/secret /etc/passwd b512x3 >refusals 2>&1 || fail "rrq.py: $(cat refusals)"
cat >expected <<'END'
../secret: error 2 access violation: path leaves the TFTP root
nixos/../../secret: error 2 access violation: path leaves the TFTP root
..\secret: error 2 access violation: path leaves the TFTP root
escape: error 2 access violation: a symlink or mount point leads outside the TFTP root
updir/secret: error 2 access violation: a symlink or mount point leads outside the TFTP root
/etc/passwd: error 1 file not found
b512x3: opcode 3 block 1
END
diff expected refusals || fail "the refusals differ from the expected codes and messages"
for bad in ../secret nixos/../../secret escape updir/secret /etc/passwd ..\\secret; do
  rm -f out
  if atftp -g -r "$bad" -l out 127.0.0.1 >atftp.log 2>&1; then fail "atftp got $bad"; fi
  if [ -e out ] && cmp -s out secret; then fail "$bad leaked the secret"; fi
done
rm -f out; if curl -sS --path-as-is -o out tftp://127.0.0.1/../secret 2>/dev/null; then fail "curl got ../secret"; fi
if [ -e out ] && cmp -s out secret; then fail "curl: ../secret leaked the secret"; fi
grep -q 'refused: access violation: path leaves the TFTP root.*code=2' server.log || fail "traversal not logged"
grep -q 'symlink or mount point leads outside the TFTP root' server.log || fail "symlink escape not logged"
# Write requests are refused.
echo x > up; if atftp -p -l up -r up 127.0.0.1 >atftp.log 2>&1; then fail "write accepted"; fi
[ ! -e root/up ] || fail "write created a file"
grep -q 'write request refused' server.log || fail "write refusal not logged"
# Garbage on the request port is logged, and the server keeps serving.
printf '\000\011garbage' >/dev/udp/127.0.0.1/69; printf '\000\001' >/dev/udp/127.0.0.1/69
wait_for_log 'malformed request' 5 || fail "garbage not logged"
rm -f out; curl -sS -o out tftp://127.0.0.1/odd && cmp out root/odd || fail "not serving after garbage"
# The stuck client's transfer has given up by now (5 timeouts of 1 s) and says so.
wait_for_log 'transfer failed: no acknowledgement after 6 timeouts.*file="big"' 20 || fail "stuck client not abandoned"
kill $STUCK
"#,
    );
    assert!(ok, "{log}");
}

#[test]
fn transfers_survive_ten_percent_loss() {
    let dir = setup();
    // netem is not in every kernel (not in this CI's); nftables drops 10% of all UDP on lo, both directions.
    let (ok, log) = in_namespace(
        dir.path(),
        r#"
nft add table inet loss
nft add chain inet loss input '{ type filter hook input priority 0; }'
nft add rule inet loss input meta l4proto udp numgen random mod 10 0 counter drop
# atftp gives up ("unexpected OACK") when the OACK the server resent, because the client's ACK 0
# was dropped, arrives after the first one was answered: a legal duplicate that this client does
# not take. Such a run is tried once more; any other failure, or that one twice, fails the test.
for opts in "--option blksize\ 1468 --option windowsize\ 4 --option tsize" "--option blksize\ 1024 --option tsize" ""; do
  for try in 1 2; do
    rm -f out
    if eval atftp --tftp-timeout 1 $opts -g -r odd -l out 127.0.0.1 >atftp.log 2>&1; then break; fi
    if [ $try = 2 ] || ! grep -q "unexpected OACK" atftp.log; then cat atftp.log; fail "atftp $opts under loss"; fi
    echo "atftp $opts: a resent OACK after its ACK 0 was lost (atftp's limit); trying again"
  done
  cmp out root/odd || fail "atftp $opts under loss differs"
done
rm -f out; curl -sS --tftp-blksize 1468 -o out tftp://127.0.0.1/b1468x5 || fail "curl under loss"
cmp out root/b1468x5 || fail "curl under loss differs"
nft list ruleset | grep -q 'packets [1-9]' || fail "the loss rule dropped nothing"
nft list ruleset | grep 'counter'
"#,
    );
    assert!(ok, "{log}");
}

#[test]
fn duplicate_acks_over_the_wire_add_no_packets_and_many_clients_run_at_once() {
    let dir = setup();
    // A client that answers every window with its ACK twice plus a stale ACK, and counts the DATA
    // packets it gets: exactly one per block means duplicates triggered nothing.
    std::fs::write(
        dir.path().join("dupack.py"),
        r#"import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(b"\0\1odd\0octet\0blksize\0" b"512\0windowsize\0" b"4\0", ("127.0.0.1", 69))
data, peer = s.recvfrom(70000); assert data[:2] == b"\0\6", data
s.sendto(b"\0\4\0\0", peer)
got, packets, expect = bytearray(), 0, 1
while True:
    data, _ = s.recvfrom(70000); packets += 1
    op, block = struct.unpack("!HH", data[:4]); assert op == 3, data
    if block == expect:
        got += data[4:]; expect += 1
    last = len(data) - 4 < 512
    if (expect - 1) % 4 == 0 or last:
        for b in (expect - 1, expect - 1, max(expect - 2, 0)):
            s.sendto(struct.pack("!HH", 4, b), peer)
    if last:
        break
assert bytes(got) == open("root/odd", "rb").read(), "content differs"
print("packets", packets)
"#,
    )
    .expect("write client");
    let (ok, log) = in_namespace(
        dir.path(),
        r#"
out=$(python3 dupack.py) || fail "dupack client: $out"
[ "$out" = "packets 196" ] || fail "expected 196 DATA packets for 196 blocks, got: $out"
wait_for_log 'file="odd" bytes=100003 blksize=512 windowsize=4 sent=196 timeouts=0' 5 || fail "server counted resends"
pids=""
for i in $(seq 30); do atftp --option "blksize 1468" --option "windowsize 4" -g -r nixos/bzImage -l par$i 127.0.0.1 >/dev/null 2>&1 & pids="$pids $!"; done
for p in $pids; do wait $p || fail "a parallel client failed"; done
for i in $(seq 30); do cmp par$i root/nixos/bzImage || fail "parallel client $i differs"; done
[ $(grep -c 'tftp: sent.*file="nixos/bzImage"' server.log) = 30 ] || fail "not 30 transfers logged"
"#,
    );
    assert!(ok, "{log}");
}

/// Nothing on another file system mounted inside the TFTP root, and no device node or FIFO in it,
/// is handed out, over TFTP or HTTP (which serves the same root): a tmpfs mounted at mnt/ (in the
/// test's private mount namespace, where serve runs; the host never sees it), reached by its name
/// and through a link below the root, and device nodes of the test's own (mknod: null, zero,
/// urandom) and a FIFO. Each gets exactly its refusal; a file beside them shows the client works.
/// (Without RESOLVE_NO_XDEV, serve sent mnt/file.)
#[test]
fn mounts_and_device_nodes_inside_the_root_are_never_served() {
    let dir = setup();
    // serve's HTTP listens on the boot server's address: here loopback's.
    let config = "{\n  bootServer = { address = \"127.0.0.1\"; interface = \"lo\"; subnet = \"127.0.0.0/8\"; };\n  customInstaller.rootDevice = \"/dev/vda\";\n}\n";
    std::fs::write(dir.path().join("config.nix"), config).expect("config");
    let args = "--config config.nix --source static --interface lo --dhcp off --tftp-root root --http-port 8080";
    let (ok, log) = common::with_serve_on_loopback(
        dir.path(),
        args,
        "tftp: serving",
        r#"
wait_for_log 'http: serving' 10 || fail "no HTTP"
mkdir root/mnt
mount -t tmpfs tftp-test-mount root/mnt
echo "on another file system" > root/mnt/file
ln -s mnt/file root/into-mount
mknod root/null c 1 3; mknod root/zero c 1 5; mknod root/urandom c 1 9; mkfifo root/fifo
[ "$(cat root/mnt/file)" = "on another file system" ] && [ -c root/zero ] || fail "the mount or the device nodes are not there: the checks below would prove nothing"
python3 rrq.py mnt/file into-mount null zero urandom fifo b512x3 >refusals 2>&1 || fail "rrq.py: $(cat refusals)"
cat >expected <<'END'
mnt/file: error 2 access violation: a symlink or mount point leads outside the TFTP root
into-mount: error 2 access violation: a symlink or mount point leads outside the TFTP root
null: error 1 not a regular file
zero: error 1 not a regular file
urandom: error 1 not a regular file
fifo: error 1 not a regular file
b512x3: opcode 3 block 1
END
# Both protocols are asked before either is judged: each shows on its own what it handed out.
diff expected refusals >tftp.diff || true
for f in mnt/file into-mount null zero urandom fifo; do
  code=$(curl -sS -m 10 -o out -w '%{http_code}' "http://127.0.0.1:8080/$f") || fail "curl $f"
  echo "$f: $code $(head -c 80 out)"
done >http 2>&1
cat >expected <<'END'
mnt/file: 403 access violation: a symlink or mount point leads outside the TFTP root
into-mount: 403 access violation: a symlink or mount point leads outside the TFTP root
null: 404 not a regular file
zero: 404 not a regular file
urandom: 404 not a regular file
fifo: 404 not a regular file
END
diff expected http >http.diff || true
[ ! -s tftp.diff ] || fail "the TFTP refusals differ from the expected codes and messages: $(cat tftp.diff) (HTTP: $(cat http.diff))"
[ ! -s http.diff ] || fail "the HTTP answers differ from the expected statuses and messages: $(cat http.diff)"
rm -f out; curl -sS -m 10 -o out http://127.0.0.1:8080/b512x3 && cmp out root/b512x3 || fail "HTTP b512x3"
umount root/mnt
"#,
        "tftp: stopped",
    );
    assert!(ok, "{log}");
}
