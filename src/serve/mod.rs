//! `nixos-pxe serve`: the boot server in one process (DHCP, TFTP, with --nfs-root the NFS root, and
//! for a fleet HTTP and the per-host state), configured from the same bootServer.* options `render`
//! uses, bound to one interface, stopped cleanly by Ctrl-C.

pub mod beneath;
pub mod dhcp;
pub mod lease_log;
pub mod leases;
pub mod limits;
pub mod fleet;
pub mod http;
pub mod http_socket;
pub mod nfs;
pub mod nfs_fs;
pub mod nfs_gate;
pub mod report_spool;
pub mod stall;
pub mod state_dir;
pub mod tftp;
pub mod tftp_packet;

use crate::config::ConfigArgs;
use crate::config::typed::DhcpMode;
use crate::error::Error;
use camino::Utf8PathBuf;
use clap::{Args, ValueEnum};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
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
    /// Where serve keeps what must outlive it: with authoritative DHCP, `leases` (the addresses
    /// handed out, so that a restart does not give a running client's address to another); for a
    /// fleet, state.sqlite3 (every attempt handed out and every report); with --nfs-root,
    /// nfs-handle.key (so that clients' NFS handles stay valid across a restart). Created mode
    /// 0700 when needed; not used otherwise.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/nixos-pxe")]
    pub state_dir: Utf8PathBuf,
    #[command(flatten)]
    pub store: crate::fleet::open::StoreArgs,
    /// TCP port of serve's HTTP endpoint on bootServer.address: the fleet's per-host GRUB
    /// configurations, the kernel and every other file of the TFTP root (read-only), the
    /// installers' reports (POST /v1/report) and the hosts' status (GET /v1/hosts). 0: no HTTP;
    /// a fleet's installers then load the kernel over TFTP and cannot report, so each host stays
    /// "handed-out" and boot-once rests on the done stamp on its disk
    /// [default: 80 with a fleet; without one, no HTTP unless a port is given].
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// TFTP transfers at once; a request beyond them is answered "server busy" [default: from
    /// the open-file limit, at most 512; serve's start-up log says what it took].
    #[arg(long, value_name = "N")]
    pub tftp_transfers: Option<usize>,
    /// HTTP connections at once; one beyond them is closed at once [default: from the open-file
    /// limit, at most 1024].
    #[arg(long, value_name = "N")]
    pub http_connections: Option<usize>,
    /// NFS connections at once; one beyond them is closed at once [default: from the open-file
    /// limit, at most 1024].
    #[arg(long, value_name = "N")]
    pub nfs_connections: Option<usize>,
    /// Seconds a client has to send what it started: an HTTP request's headers (also the longest
    /// an idle keep-alive connection stays open), an HTTP request's body, an NFS call.
    #[arg(long, value_name = "SECONDS", default_value_t = limits::TIMEOUTS.http_header.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub client_timeout: u64,
    /// Seconds a response may wait for the client to read it (HTTP: without progress; NFS: a
    /// whole reply) before the connection is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = limits::TIMEOUTS.send_stall.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stall_timeout: u64,
    /// Seconds an NFS connection with no call in flight stays open (the Linux client reconnects
    /// by itself when it needs the server again).
    #[arg(long, value_name = "SECONDS", default_value_t = limits::TIMEOUTS.nfs_idle.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub nfs_idle_timeout: u64,
    /// The largest TFTP retransmission timeout a client may ask for (the `timeout` option); a
    /// larger one is declined and --tftp-timeout applies.
    #[arg(long, value_name = "SECONDS", default_value_t = limits::TIMEOUTS.tftp_max_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=255))]
    pub tftp_max_timeout: u64,
    /// What one client address may hold of each: TFTP transfers, HTTP connections, NFS
    /// connections.
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_PER_CLIENT)]
    pub per_client: usize,
    /// How a fleet host's install entry loads the kernel: over tftp, or over http (when serve
    /// serves HTTP). TFTP by default: GRUB 2.06 loaded the kernel faster over TFTP than over HTTP
    /// in the kernel_load benchmark (README, "The kernel over TFTP and over HTTP").
    #[arg(long, value_enum, value_name = "PROTOCOL", default_value = "tftp")]
    pub kernel_over: KernelOver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelOver {
    Http,
    Tftp,
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
    // Descriptors first: every cap below follows from what serve may open.
    let (limit_before, open_files) = limits::raise_open_files();
    let asked = limits::Asked {
        tftp_transfers: args.tftp_transfers,
        http_connections: args.http_connections,
        nfs_connections: args.nfs_connections,
        per_client: Some(args.per_client),
    };
    let caps = limits::Caps::new(open_files, limits::open_now(), asked).map_err(|e| Error::Message(format!("serve: {e}")))?;
    let secs = std::time::Duration::from_secs;
    let t = limits::Timeouts {
        http_header: secs(args.client_timeout),
        http_body: secs(args.client_timeout),
        nfs_record: secs(args.client_timeout),
        send_stall: secs(args.stall_timeout),
        nfs_idle: secs(args.nfs_idle_timeout),
        tftp_max_timeout: secs(args.tftp_max_timeout),
    };
    tracing::info!(
        open_files, raised_from = limit_before, reserve = limits::RESERVE,
        tftp_transfers = caps.tftp_transfers, http_connections = caps.http_connections, nfs_connections = caps.nfs_connections,
        per_client = caps.per_client,
        http_header_s = t.http_header.as_secs(), http_body_s = t.http_body.as_secs(), send_stall_s = t.send_stall.as_secs(),
        nfs_idle_s = t.nfs_idle.as_secs(), nfs_record_s = t.nfs_record.as_secs(), tftp_max_timeout_s = t.tftp_max_timeout.as_secs(),
        nfs_max_call = limits::NFS_MAX_RECORD, nfs_in_flight_bytes = limits::NFS_IN_FLIGHT_BYTES,
        "limits"
    );
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
    let fleet = crate::fleet::Fleet::from_config(&resolved.config).map_err(|e| Error::Message(format!("serve: {e}")))?;
    let fleet_macs: Vec<leases::HwAddr> = fleet.hosts.iter().flat_map(|h| h.macs.iter().map(|m| leases::HwAddr::from(*m))).collect();
    let http_port = match (args.http_port, fleet.is_empty()) {
        (Some(0), _) | (None, true) => None,
        (Some(port), _) => Some(port),
        (None, false) => Some(80),
    };
    // UEFI HTTP boot clients get bootx64.efi by URL from serve's own HTTP endpoint, which serves
    // the TFTP root; without HTTP they get no boot file (dhcp.rs says so once in the log).
    let dhcp_settings = dhcp_settings.map(|d| dhcp::Settings {
        http_boot_url: http_port.map(|port| crate::boot_file::http_url(d.server, port, crate::schema::LOADER_FILE_NAME)),
        ..d
    });
    let state_dir = args.state_dir.as_std_path();
    let authoritative = dhcp_settings.as_ref().is_some_and(|d| d.mode == dhcp::Mode::Authoritative);
    if !fleet.is_empty() || args.nfs_root.is_some() || authoritative {
        state_dir::prepare(state_dir)?;
    }
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
            let key = state_dir::nfs_handle_key(state_dir)?;
            Some(nfs::Settings {
                root: root.clone().into(),
                export: server.nfs_export.clone(),
                address: SocketAddr::from((ip, port)),
                key,
                gate: limits::Gate::new(caps.nfs_connections, caps.per_client),
                timeouts: t,
            })
        }
    };
    let root = args.tftp_root.clone().unwrap_or_else(|| Utf8PathBuf::from(&server.tftp_root));
    let mut settings = tftp::Settings::new(root.as_std_path()).map_err(|e| Error::Message(format!("serve: {e}")))?;
    settings.timeout = std::time::Duration::from_secs(args.tftp_timeout.clamp(1, 255));
    settings.retries = args.tftp_retries;
    settings.gate = limits::Gate::new(caps.tftp_transfers, caps.per_client);
    settings.max_timeout = t.tftp_max_timeout;
    settings.interface = interface.clone();
    let fleet_service = match fleet.is_empty() {
        true => None,
        false => {
            match (dhcp, fleet.trust_boot_network) {
                (DhcpChoice::Off, false) => {
                    return Err(Error::Message(
                        "serve --dhcp off: serve sees no DHCP, so it cannot tell a fleet host's own requests and reports from another \
                         machine's (it hands a host's install token only to, and takes its reports only from, the address its DHCP saw \
                         for one of the host's MACs). Serve DHCP (--dhcp authoritative or proxy), or, on a boot network where every \
                         machine is trusted, set fleet.trustBootNetwork = true"
                            .into(),
                    ));
                }
                (_, true) => tracing::warn!(
                    "fleet.trustBootNetwork: any machine on the boot network can fetch any host's install token and report as that host \
                     (install, fail, hold or confirm it)"
                ),
                (_, false) => {}
            }
            let store = args.store.open_for_serve(state_dir).map_err(|e| Error::Message(format!("serve: {e}")))?;
            let endpoint = fleet::Endpoint { address: server.address, http_port, kernel_over_http: args.kernel_over == KernelOver::Http };
            let hosts = fleet.hosts.len();
            // Reports wait on this server's disk while a shared database is away; a local file
            // is away only with its disk, when a spool beside it would be too.
            let spool = args.store.database.is_some().then(|| report_spool::Spool::new(state_dir));
            let service = fleet::FleetService::new(resolved.clone(), fleet, store, endpoint, spool).map_err(|e| Error::Message(format!("serve: {e}")))?;
            let kernel = match (http_port, args.kernel_over) {
                (Some(_), KernelOver::Http) => "http",
                _ => "tftp",
            };
            tracing::info!(hosts, state = %args.store.describe(state_dir), kernel_over = kernel, "fleet: serving");
            if http_port.is_none() {
                tracing::warn!("fleet: no HTTP (--http-port 0): installers cannot report, so every host stays handed-out; boot-once rests on the done stamp on its disk");
            }
            Some(Arc::new(service))
        }
    };
    settings.generated = fleet_service.clone().map(|s| s as Arc<dyn tftp::Generated>);
    let http_listener = match http_port {
        None => None,
        Some(port) => {
            let address = SocketAddr::from((server.address.unwrap_or(Ipv4Addr::UNSPECIFIED), port));
            let listener = http::bind(address, interface.as_deref()).map_err(|e| {
                Error::Message(format!(
                    "serve: cannot listen for HTTP on {address}{}: {e} (ports below 1024 and SO_BINDTODEVICE need root; --http-port chooses another port)",
                    interface.as_deref().map(|i| format!(" on interface {i}")).unwrap_or_default()
                ))
            })?;
            Some(listener)
        }
    };
    let observer = fleet_service.clone().filter(|s| s.binds()).map(|s| s as Arc<dyn dhcp::Observer>);
    // What the store missed while it was away, written every few seconds once it is back.
    let keep_up_thread = fleet_service.clone().map(|s| std::thread::spawn(move || s.keep_up(std::time::Duration::from_secs(5), &STOP)));
    let http_settings = http::Settings {
        root: Arc::clone(&settings.root),
        fleet: fleet_service,
        gate: limits::Gate::new(caps.http_connections, caps.per_client),
        timeouts: t,
    };

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
            // The pool on port 67 of an authoritative server, kept in the state directory; the
            // fleet's MACs have addresses kept for them.
            let mut table = d.lease_table(fleet_macs.iter().copied());
            let log = match (d.mode, answer_to) {
                (dhcp::Mode::Authoritative, dhcp::AnswerTo::Rfc2131) => Some(
                    lease_log::LeaseLog::open(state_dir, &mut table)
                        .map_err(|e| Error::Message(format!("serve: DHCP leases: {e} (--state-dir chooses the directory)")))?,
                ),
                _ => None,
            };
            // The fleet's bindings as the lease file has them (the store may have missed the
            // last ones: it is written in the background).
            if let (Some(_), Some(observer)) = (&log, &observer) {
                dhcp::announce_leases(&table, observer.as_ref());
            }
            let pool = dhcp::Pool { table, log };
            let d = d.clone();
            // The fleet hears which address each of its MACs was seen with.
            let observer = observer.clone();
            dhcp_threads.push(std::thread::spawn(move || {
                let result = dhcp::serve(socket, d, &STOP, answer_to, pool, observer);
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
    let http_thread = http_listener.map(|listener| {
        std::thread::spawn(move || {
            let result = http::serve(listener, http_settings, &STOP);
            // Without it no fleet host can report: stop the rest rather than serve half a boot server.
            STOP.store(true, Ordering::Relaxed);
            result
        })
    });
    let tftp_result = tftp::serve(listener, settings, &STOP).map_err(|e| Error::Message(format!("serve: TFTP: {e}")));
    STOP.store(true, Ordering::Relaxed);
    if let Some(t) = keep_up_thread {
        let _ = t.join();
    }
    if let Some(t) = http_thread {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Message(format!("serve: HTTP: {e}"))),
            Err(_) => return Err(Error::Message("serve: the HTTP thread panicked".into())),
        }
    }
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
pub fn bind_to_device(socket: &impl AsRawFd, interface: &str) -> std::io::Result<()> {
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
