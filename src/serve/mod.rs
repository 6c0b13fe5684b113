//! `nixos-pxe serve`: the boot server in one process (DHCP, TFTP and, with --nfs-root, the NFS root),
//! configured from the same bootServer.* options `render` uses, bound to one interface, stopped
//! cleanly by Ctrl-C.

pub mod beneath;
pub mod dhcp;
pub mod nfs;
pub mod nfs_fs;
pub mod tftp;
pub mod tftp_packet;

use crate::cli::ConfigArgs;
use crate::config::typed::DhcpMode;
use crate::error::Error;
use camino::Utf8PathBuf;
use clap::{Args, ValueEnum};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The interface to serve on; every socket is bound to it (SO_BINDTODEVICE, needs root)
    /// [default: bootServer.interface].
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// DHCP: authoritative (leases from bootServer.dhcpRange plus PXE options), proxy (PXE options only,
    /// beside another DHCP server), off [default: bootServer.dhcpMode].
    #[arg(long, value_enum, value_name = "MODE")]
    pub dhcp: Option<DhcpChoice>,
    /// The directory served read-only over TFTP (bootx64.efi, nixos/bzImage) [default: bootServer.tftpRoot].
    #[arg(long, value_name = "DIR")]
    pub tftp_root: Option<Utf8PathBuf>,
    /// UDP port of TFTP requests; transfers use ephemeral ports as RFC 1350 says.
    #[arg(long, value_name = "PORT", default_value_t = 69)]
    pub tftp_port: u16,
    /// Seconds without an acknowledgement before a TFTP block window is resent (clients may ask for
    /// another value with the timeout option).
    #[arg(long, value_name = "SECONDS", default_value_t = 1)]
    pub tftp_timeout: u64,
    /// Timeouts in a row after which a TFTP transfer is abandoned.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub tftp_retries: u32,
    /// Also serve this directory (the unpacked NFS root tarball) read-only over NFSv3, as
    /// bootServer.nfsExport, on bootServer.address. NFS and MOUNT share one TCP port and there is no
    /// portmapper nor lock manager, so bootServer.nfsMountOptions must name the port, e.g.
    /// "vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock". It answers every client that
    /// reaches that address (bootServer.nfsClients restricts only the exports and ganesha.conf
    /// `render` writes): serve it on the boot network only. Without this option, export the root
    /// with the kernel NFS server or nfs-ganesha.
    #[arg(long, value_name = "DIR")]
    pub nfs_root: Option<Utf8PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DhcpChoice {
    Authoritative,
    Proxy,
    Off,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    STOP.store(true, Ordering::Relaxed);
}

pub fn run(args: &ServeArgs) -> Result<(), Error> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let resolved = args.config.load()?;
    let server = &resolved.config.boot_server;
    let interface = args.interface.clone().or_else(|| server.interface.clone());
    let dhcp = args.dhcp.unwrap_or(match server.dhcp_mode {
        DhcpMode::Authoritative => DhcpChoice::Authoritative,
        DhcpMode::Proxy => DhcpChoice::Proxy,
    });
    let dhcp_settings = match dhcp {
        DhcpChoice::Off => None,
        DhcpChoice::Authoritative => Some(dhcp::Mode::Authoritative),
        DhcpChoice::Proxy => Some(dhcp::Mode::Proxy),
    }
    .map(|mode| dhcp::Settings::from_config(server, mode).map_err(|e| Error::Message(format!("serve --dhcp: {e}"))))
    .transpose()?;
    let nfs_settings = match &args.nfs_root {
        None => None,
        Some(root) => {
            let port = nfs::port_from_mount_options(&server.nfs_mount_options).map_err(|e| Error::Message(format!("serve --nfs-root: {e}")))?;
            if !root.is_dir() {
                return Err(Error::Message(format!(
                    "serve --nfs-root {root}: not a directory; unpack the NFS root tarball there first (tar -xf nfsroot.tar -C {root})"
                )));
            }
            let ip = server.address.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let key = nfs_fs::HandleKey::random().map_err(|e| Error::Message(format!("serve --nfs-root: no random key for the file handles: {e}")))?;
            Some(nfs::Settings { root: root.clone().into(), export: server.nfs_export.clone(), address: SocketAddr::from((ip, port)), key })
        }
    };
    let root = args.tftp_root.clone().unwrap_or_else(|| Utf8PathBuf::from(&server.tftp_root));
    let mut settings = tftp::Settings::new(root.as_std_path()).map_err(|e| Error::Message(format!("serve: {e}")))?;
    settings.timeout = std::time::Duration::from_secs(args.tftp_timeout.clamp(1, 255));
    settings.retries = args.tftp_retries;
    settings.interface = interface.clone();

    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
    let address = SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.tftp_port));
    let listener = tftp::bind(address, interface.as_deref()).map_err(|e| {
        Error::Message(format!(
            "serve: cannot listen for TFTP on {address}{}: {e} (port 69 and SO_BINDTODEVICE need root)",
            interface.as_deref().map(|i| format!(" on interface {i}")).unwrap_or_default()
        ))
    })?;
    let mut dhcp_threads = Vec::new();
    if let Some(d) = dhcp_settings {
        let Some(interface) = interface.as_deref() else {
            return Err(Error::Message("serve --dhcp: name the interface with --interface or bootServer.interface".into()));
        };
        let mut ports = vec![(67, dhcp::AnswerTo::Rfc2131)];
        if d.mode == dhcp::Mode::Proxy {
            ports.push((dhcp::PXE_BOOT_SERVER_PORT, dhcp::AnswerTo::Sender));
        }
        for (port, answer_to) in ports {
            let socket = tftp::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), Some(interface))
                .map_err(|e| Error::Message(format!("serve: cannot listen for DHCP on port {port} of {interface}: {e} (needs root)")))?;
            let d = d.clone();
            dhcp_threads.push(std::thread::spawn(move || {
                let result = dhcp::serve(socket, d, &STOP, answer_to);
                // Without DHCP no client can boot: stop TFTP too rather than serve half a boot server.
                STOP.store(true, Ordering::Relaxed);
                result
            }));
        }
    }
    let nfs_thread = nfs_settings.map(|n| {
        std::thread::spawn(move || {
            let result = nfs::serve(&n, &STOP);
            // Without its root no client gets past the kernel: stop the rest rather than serve half a boot server.
            STOP.store(true, Ordering::Relaxed);
            result
        })
    });
    let tftp_result = tftp::serve(listener, settings, &STOP).map_err(|e| Error::Message(format!("serve: TFTP: {e}")));
    STOP.store(true, Ordering::Relaxed);
    if let Some(t) = nfs_thread {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Message(format!("serve: NFS: {e}"))),
            Err(_) => return Err(Error::Message("serve: the NFS thread panicked".into())),
        }
    }
    for t in dhcp_threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Message(format!("serve: DHCP: {e}"))),
            Err(_) => return Err(Error::Message("serve: the DHCP thread panicked".into())),
        }
    }
    tftp_result
}

/// SO_BINDTODEVICE: the socket only sees packets that arrived on `interface` and sends out of it.
pub fn bind_to_device(socket: &UdpSocket, interface: &str) -> std::io::Result<()> {
    let name = interface.as_bytes();
    // SAFETY: setsockopt reads `name.len()` bytes from a live slice; the fd belongs to `socket`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        Err(std::io::Error::new(e.kind(), format!("SO_BINDTODEVICE {interface}: {e}")))
    }
}
