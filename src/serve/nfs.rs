//! The read-only NFS server of `nixos-pxe serve`: NFSv3 and MOUNT on one TCP port (the nfs3_server
//! crate speaks the protocols), serving one directory, the unpacked NFS root, under the export path
//! of the configuration. No portmapper and no lock manager: the kernel mounts it with
//! `port=P,mountport=P,mountproto=tcp,nolock` in `bootServer.nfsMountOptions`.
//!
//! What is served and how safely: src/serve/nfs_fs.rs.

use crate::serve::limits::{Gate, NFS_IN_FLIGHT_BYTES, Timeouts};
use crate::serve::nfs_fs::{HandleKey, ReadOnlyDir};
use crate::serve::nfs_gate;
use nfs3_server::tcp::{NFSTcp, NFSTcpListener};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// The mount options the kernel needs for a server without portmapper and lock manager.
pub const REQUIRED_OPTIONS: &str = "vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock";

/// The TCP port `bootServer.nfsMountOptions` tells the kernel to use for both NFS and MOUNT, or
/// what is missing for the built-in server (which has neither portmapper nor lock manager).
pub fn port_from_mount_options(options: &str) -> Result<u16, String> {
    let words: Vec<&str> = options.split(',').map(str::trim).collect();
    let value = |key: &str| words.iter().find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')));
    let port = value("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p != 0);
    let mountport = value("mountport").and_then(|p| p.parse::<u16>().ok());
    let mut missing = Vec::new();
    if !matches!(value("vers").or(value("nfsvers")), Some("3")) {
        missing.push("vers=3 (the built-in server speaks NFSv3 only)".to_string());
    }
    if !(words.contains(&"tcp") || value("proto") == Some("tcp")) {
        missing.push("tcp".into());
    }
    match (port, mountport) {
        (Some(p), Some(m)) if p == m => {}
        (Some(p), Some(m)) => missing.push(format!("port and mountport equal (NFS and MOUNT share one port; they are {p} and {m})")),
        _ => missing.push("port=P and mountport=P with the same P (there is no portmapper to ask)".into()),
    }
    if value("mountproto") != Some("tcp") {
        missing.push("mountproto=tcp".into());
    }
    if !words.contains(&"nolock") {
        missing.push("nolock (there is no lock manager)".into());
    }
    match (missing.is_empty(), port) {
        (true, Some(p)) => Ok(p),
        _ => Err(format!(
            "bootServer.nfsMountOptions = \"{options}\" cannot be used with the built-in NFS server: it needs {}; \
             set bootServer.nfsMountOptions = \"{REQUIRED_OPTIONS}\" (or another port), and the kernel's root-path \
             (DHCP option 17 or nfsroot=) carries them",
            missing.join(", ")
        )),
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The directory served, read-only.
    pub root: PathBuf,
    /// The path clients mount (bootServer.nfsExport), e.g. /srv/nixos/nfsroot.
    pub export: String,
    /// Where to listen: bootServer.address and the port of the mount options.
    pub address: SocketAddr,
    /// The secret of the file handles; the same key after a restart keeps clients' handles valid.
    pub key: HandleKey,
    /// The connections let in, in all and per client address.
    pub gate: Arc<Gate>,
    pub timeouts: Timeouts,
}

/// Serves `settings.root` until `stop` is set. Binds before returning the first error, so a port
/// in use is reported at once. Clients reach the NFS engine (the nfs3_server crate, listening on
/// loopback) only through src/serve/nfs_gate.rs.
pub fn serve(settings: &Settings, stop: &AtomicBool) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("nfs")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the NFS server's runtime: {e}"))?;
    let fs = ReadOnlyDir::new(&settings.root, settings.key.clone()).map_err(|e| e.to_string())?;
    let root = fs.root_path().to_path_buf();
    runtime.block_on(async {
        let public = tokio::net::TcpListener::bind(settings.address)
            .await
            .map_err(|e| format!("cannot listen for NFS on TCP {}: {e}", settings.address))?;
        let mut engine = NFSTcpListener::bind_with_generation("127.0.0.1:0", nfs3_server::vfs::adapters::ReadOnlyAdapter::new(fs), settings.key.generation())
            .await
            .map_err(|e| format!("cannot start the NFS engine on 127.0.0.1 (is the loopback interface up? `ip link set lo up`): {e}"))?;
        engine.with_export_name(&settings.export);
        let engine_address = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, engine.get_listen_port()));
        tracing::info!(
            root = %root.display(),
            export = %settings.export,
            address = %settings.address,
            engine = %engine_address,
            "NFS: serving read-only (NFSv3 and MOUNT on one port, no portmapper, no locks)"
        );
        let engine_loop = async {
            // It returns at a failed accept (out of descriptors): wait and take connections again.
            loop {
                if let Err(e) = engine.handle_forever().await {
                    tracing::warn!("NFS: the engine's accept failed: {e}; taking connections again in 1 s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        tokio::select! {
            () = engine_loop => {},
            () = nfs_gate::serve(public, engine_address, Arc::clone(&settings.gate), settings.timeouts, NFS_IN_FLIGHT_BYTES, stop) => {},
        }
        tracing::info!("NFS: stopped");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_required_options_give_their_port() {
        assert_eq!(port_from_mount_options(REQUIRED_OPTIONS), Ok(2049));
        assert_eq!(port_from_mount_options("vers=3,proto=tcp,port=20049,mountport=20049,mountproto=tcp,nolock"), Ok(20049));
    }

    #[test]
    fn options_that_need_a_portmapper_or_locks_are_refused_with_what_to_set() {
        let e = port_from_mount_options("vers=3,tcp").expect_err("no port");
        assert!(e.contains("port=P and mountport=P") && e.contains("nolock") && e.contains("mountproto=tcp"), "{e}");
        assert!(e.contains(REQUIRED_OPTIONS), "{e}");
        let e = port_from_mount_options("vers=3,tcp,port=2049,mountport=2050,mountproto=tcp,nolock").expect_err("ports differ");
        assert!(e.contains("they are 2049 and 2050"), "{e}");
        let e = port_from_mount_options("vers=4,tcp,port=2049,mountport=2049,mountproto=tcp,nolock").expect_err("v4");
        assert!(e.contains("vers=3"), "{e}");
    }
}
