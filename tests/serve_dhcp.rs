//! `nixos-pxe serve --dhcp` against busybox udhcpc over a veth pair between two network namespaces this
//! test creates: the options a PXE client and the installed kernel's DHCP client receive, both modes.

mod common;

use common::{Namespace, run_within};
use std::process::Command;
use std::time::Duration;

fn run(mode: &str, client_args: &str) -> String {
    run_with(mode, "", client_args, false)
}

/// `run` with more arguments for serve (e.g. --http-port); with `fetch`, the client then takes the
/// leased address and fetches the boot file's URL with curl (printed as `fetched=<its text>`).
fn run_with(mode: &str, serve_args: &str, client_args: &str, fetch: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = env!("CARGO_BIN_EXE_nixos-pxe");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed/installer.nix");
    // Made (and deleted again, whatever happens to this process) before the script runs.
    let (srv, cli) = (Namespace::new("dhcp-srv"), Namespace::new("dhcp-cli"));
    let (srv, cli) = (&srv.name, &cli.name);
    let script = format!(
        r#"set -eu
cd {dir}
ip link add veth0 netns {srv} type veth peer name eth0 netns {cli}
ip -n {srv} addr add 10.42.0.1/24 dev veth0; ip -n {srv} link set veth0 up
ip -n {cli} link set eth0 up
mkdir root; printf 'the boot loader' > root/bootx64.efi
ip netns exec {srv} {bin} serve --config {config} --source static --interface veth0 --dhcp {mode} --tftp-root root --state-dir state {serve_args} 2>server.log &
SERVER=$!
trap 'kill -9 $SERVER 2>/dev/null || true' EXIT
ready=
for i in $(seq 100); do
  if grep -q "dhcp: serving" server.log; then ready=yes; break; fi
  kill -0 $SERVER 2>/dev/null || break
  sleep 0.1
done
[ -n "$ready" ] || {{ echo "serve did not log 'dhcp: serving' within 10 s:"; cat server.log; exit 1; }}
printf '#!/bin/sh\n[ "$1" = bound ] && env | sort > %s/lease.env && echo "ip=$ip mask=$mask boot_file=$boot_file" > %s/lease.env.sh\nexit 0\n' "$PWD" "$PWD" > script.sh; chmod +x script.sh
ip netns exec {cli} busybox udhcpc -f -i eth0 -n -q -t 5 -T 1 -s ./script.sh -O tftp -O rootpath -O bootfile {client_args} >udhcpc.log 2>&1 || {{ cat udhcpc.log server.log; exit 1; }}
if {fetch}; then
  . ./lease.env.sh
  ip -n {cli} addr add "$ip/$mask" dev eth0
  ip netns exec {cli} curl -sS --max-time 10 -o fetched "$boot_file" || {{ cat server.log; exit 1; }}
  echo "fetched=$(cat fetched)" >> lease.env
fi
kill -INT $SERVER; wait $SERVER
cat lease.env; echo ---; cat server.log
"#,
        dir = dir.path().display()
    );
    let stop = || {
        common::delete_namespace(srv);
        common::delete_namespace(cli);
    };
    let (status, text) = run_within(Command::new("bash").args(["-c", &script]), dir.path(), Duration::from_secs(120), stop);
    assert!(status.success(), "{text}");
    text
}

#[test]
fn authoritative_lease_carries_the_pxe_options() {
    // Option 93 = 7 (x86-64 UEFI), as OVMF sends it.
    let out = run("authoritative", "-x 0x5d:0007");
    for want in [
        "ip=10.42.0.100\n",
        "subnet=255.255.255.0\n",
        "router=10.42.0.1\n",
        "dns=10.42.0.1\n",
        "domain=pxe.test\n",
        "serverid=10.42.0.1\n",
        "siaddr=10.42.0.1\n",
        "tftp=10.42.0.1\n",
        "boot_file=bootx64.efi\n",
        "rootpath=10.42.0.1:/srv/nixos/nfsroot,vers=3,tcp\n",
        "lease=",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(out.contains("dhcp: answered") && out.contains("reply=Some(Ack)"), "{out}");
}

#[test]
fn proxy_mode_gives_boot_information_only() {
    // A proxy answers PXE clients only (vendor class PXEClient) and never hands out an address, so
    // udhcpc (which needs one) gets no lease; the server's log shows the proxy offer it made.
    let dir_out = std::panic::catch_unwind(|| run("proxy", "-V PXEClient:Arch:00007 -x 0x5d:0007"));
    let text = match dir_out {
        Ok(t) => t,
        Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(text.contains("reply=Some(Offer) address=0.0.0.0"), "{text}");
    assert!(!text.contains("ip=10.42.0."), "a proxy handed out an address:\n{text}");
}

/// A UEFI HTTP boot client (option 93 = 16, vendor class HTTPClient, as EDK2's HttpBootDxe sends
/// them) gets option 60 `HTTPClient` back and option 67 the URL of bootx64.efi on serve's own HTTP
/// endpoint, with the port serve listens on; and that URL serves the TFTP root's bootx64.efi.
#[test]
fn an_http_boot_client_gets_the_url_of_serves_http_endpoint() {
    let out = run_with("authoritative", "--http-port 8080", "-V HTTPClient:Arch:00016:UNDI:003001 -x 0x5d:0010 -O 60", true);
    // udhcpc exports option 60 as `vendor`.
    for want in ["ip=10.42.0.100\n", "boot_file=http://10.42.0.1:8080/bootx64.efi\n", "vendor=HTTPClient\n", "fetched=the boot loader\n"] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("dhcp: a UEFI HTTP boot client"), "{out}");
}

/// Without serve's HTTP (no fleet, no --http-port) the HTTP boot client still gets an address but
/// no boot file and no HTTPClient, and serve's log says once why and what to do.
#[test]
fn without_http_serve_says_once_that_an_http_boot_client_was_not_answered() {
    let out = run("authoritative", "-V HTTPClient:Arch:00016:UNDI:003001 -x 0x5d:0010 -O 60");
    assert!(out.contains("ip=10.42.0.100\n"), "{out}");
    assert!(!out.contains("boot_file=") && !out.contains("vendor="), "{out}");
    let said = out.matches("dhcp: a UEFI HTTP boot client (option 93 = 16) was not answered with a boot file").count();
    assert_eq!(said, 1, "said once for the DISCOVER and the REQUEST:\n{out}");
    assert!(out.contains("give serve --http-port PORT"), "{out}");
}
