//! The `nixos-pxe` command line: parses arguments, runs one subcommand, and renders errors
//! once, with the file, line and column of the offending value where there is one.

use crate::config::{self, ConfigArgs, Diagnostic, Resolved, SourceMode};
use crate::error::Error;
use crate::compression::Codec;
use crate::{install, kernel_config, loader, pack, render};
use camino::{Utf8Path, Utf8PathBuf};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "nixos-pxe",
    version,
    about = "Install NixOS hosts unattended over PXE",
    long_about = "Install NixOS hosts unattended over PXE.\n\n\
        From one configuration (the nfsroot.*, customInstaller.* and bootServer.* options of a Nix file), \
        nixos-pxe renders the boot loader's grub.cfg, the kernel command line and the DHCP, TFTP and NFS \
        server configurations, builds the GRUB EFI image and the kernel config fragment, and on the client \
        is the init and the installer.\n\n\
        Exit status: 0 success, 1 invalid configuration or failed step, 2 bad command line."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every option with its value and where the value came from (default, or file:line:col).
    Options {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Print the resolved configuration as the JSON tree that /nixos-pxe/config.json holds on the NFS root
        /// (every option, defaults filled in); `--config` accepts it back.
        #[arg(long, conflicts_with = "json")]
        as_config_json: bool,
    },
    /// Validate a configuration; print each problem with its location and what is allowed. Writes nothing.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Write grub.cfg, grub-bios.cfg, cmdline, dhcpd.conf, kea-dhcp4.json, dnsmasq.conf, exports and ganesha.conf into DIR.
    ///
    /// Needs bootServer.address, .subnet and (authoritative DHCP) .dhcpRange. With
    /// bootServer.dhcpMode = "proxy", dhcpd.conf and kea-dhcp4.json are not written: neither server
    /// can answer as a PXE proxy beside another DHCP server; dnsmasq.conf is then a proxy config.
    Render {
        #[command(flatten)]
        config: ConfigArgs,
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: Utf8PathBuf,
    },
    /// Build bootx64.efi (GRUB with the minimal module set and grub.cfg embedded) and write grub.cfg beside it;
    /// with --grub-bios-lib also bios.0 (GRUB i386-pc-pxe for legacy BIOS PXE) and grub-bios.cfg.
    MkBootloader {
        #[command(flatten)]
        config: ConfigArgs,
        /// GRUB's x86_64-efi module directory (Debian: /usr/lib/grub/x86_64-efi; nixpkgs: ${grub2_efi}/lib/grub/x86_64-efi).
        #[arg(long, value_name = "DIR")]
        grub_lib: Utf8PathBuf,
        /// GRUB's i386-pc module directory (Debian: /usr/lib/grub/i386-pc; nixpkgs: ${grub2}/lib/grub/i386-pc): also
        /// write bios.0, GRUB for legacy BIOS PXE, and grub-bios.cfg.
        #[arg(long, value_name = "DIR")]
        grub_bios_lib: Option<Utf8PathBuf>,
        /// Directory to write bootx64.efi and grub.cfg (and bios.0, grub-bios.cfg) into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: Utf8PathBuf,
        /// grub-mkimage to run (default: found on PATH).
        #[arg(long, value_name = "PROGRAM", default_value = "grub-mkimage")]
        grub_mkimage: String,
    },
    /// Print the kernel config fragment (NFS root, IP autoconfiguration, NICs, disks, plus nfsroot.extraKernelOptions).
    KernelConfig {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long, value_enum, default_value = "kconfig")]
        format: KernelConfigFormat,
    },
    /// Write a deterministic tar (sorted entries, mtime 1, owner root) of store paths, files, symlinks and
    /// directories: the system image and the NFS root tarball are made with it.
    Pack {
        /// The archive to write (through a temporary file, so a failure leaves no partial archive).
        #[arg(long, value_name = "FILE")]
        out: Utf8PathBuf,
        #[arg(long, value_enum, default_value = "zstd")]
        compression: Codec,
        /// tar, or newc (cpio, as the kernel unpacks an initrd: the installer's initrd in Secure Boot mode).
        #[arg(long, value_enum, default_value = "tar")]
        format: pack::Format,
        /// A file listing store paths, one per line (closureInfo's store-paths); each is packed at its own path.
        #[arg(long = "store-paths", value_name = "LISTFILE")]
        store_paths: Vec<Utf8PathBuf>,
        /// A file or directory tree SRC, packed at DEST.
        #[arg(long = "file", value_name = "DEST=SRC", value_parser = pack::parse_pair)]
        files: Vec<(String, String)>,
        /// A symbolic link at DEST pointing to TARGET.
        #[arg(long = "symlink", value_name = "DEST=TARGET", value_parser = pack::parse_pair)]
        symlinks: Vec<(String, String)>,
        /// An empty directory at DEST.
        #[arg(long = "dir", value_name = "DEST")]
        dirs: Vec<String>,
    },
    /// On the boot server, where the db key is (bootServer.secureBoot): sign each system's boot file
    /// and the installer (a unified kernel image whose initrd holds the manifest of digests of
    /// everything the installer fetches), and write them with the tools and images into DIR, which
    /// serve then serves. Needs objcopy (binutils) and sbsign (sbsigntool).
    Sign(crate::secure_boot::sign::SignArgs),
    /// Install the system image on the configured disk (run by init on the NFS root). Refuses a disk that
    /// holds a partition table or file system unless customInstaller.wipe = "always".
    Install(install::InstallArgs),
    /// Be the init of the NFS root (what /init runs as PID 1): make / writable, run the installer,
    /// then reboot, power off or halt; on failure, a root shell on the console. Refused unless PID 1.
    Init,
    /// Be the boot server on one interface: DHCP (authoritative or proxy) and TFTP (read-only, from the TFTP
    /// root) in one process, configured from bootServer.*, with --nfs-root the NFS root, and for a fleet
    /// the per-host GRUB configurations, HTTP and each host's state; Ctrl-C stops it. Logs every lease,
    /// transfer, fleet decision and report to stderr; RUST_LOG=debug shows ignored packets too.
    Serve(crate::serve::ServeArgs),
    /// A fleet's state as `serve` keeps it in its state directory: see every host, have one
    /// installed again, and power hosts on, off or cycle them through their BMCs.
    #[command(subcommand)]
    Fleet(FleetCommand),
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Every host: its MACs, state (absent, handed-out, installing, failed, installed, confirmed,
    /// hold), generation (installed/wanted), latest attempt, last report and the attempt's
    /// duration; with --config also what serve hands it at its next network boot.
    ///
    /// Reads state.sqlite3 (or with --database the shared database) directly, so it works while
    /// serve runs and when it does not. Without --config the MACs and wanted generations are
    /// those serve last read from the fleet. Says too how many reports serve on this machine
    /// keeps because the database was away.
    Status {
        /// serve's --state-dir.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/nixos-pxe")]
        state_dir: Utf8PathBuf,
        #[command(flatten)]
        store: crate::fleet::open::StoreArgs,
        /// The fleet's configuration: its hosts (also those never seen), MACs, generations, and
        /// the decision for each host.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<Utf8PathBuf>,
        /// How to read a Nix file given by --config: static, eval, auto.
        #[arg(long, value_enum, default_value = "auto")]
        source: SourceMode,
        /// Print JSON (a list of hosts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Install HOST again the next time it boots from the network, with a fresh budget of
    /// fleet.maxAttempts: the imperative escape hatch, also for a host held after failed attempts.
    ///
    /// The declarative way is to bump fleet.hosts.HOST.generation in the configuration. With
    /// --power-cycle (and --config), the host's BMC is also told to boot from the network once
    /// and the host is reset (powered on if it is off): the BMC is reached and the override read
    /// back first, then the reinstall is marked, then the reset is sent.
    Reinstall {
        /// serve's --state-dir.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/nixos-pxe")]
        state_dir: Utf8PathBuf,
        #[command(flatten)]
        store: crate::fleet::open::StoreArgs,
        /// Also set a one-time network boot on the host's BMC and reset it.
        #[arg(long, requires = "config")]
        power_cycle: bool,
        /// The fleet's configuration (the host's BMC); needed with --power-cycle.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<Utf8PathBuf>,
        /// How to read a Nix file given by --config: static, eval, auto.
        #[arg(long, value_enum, default_value = "auto")]
        source: SourceMode,
        /// Print every BMC call --power-cycle would make, and mark nothing, send nothing.
        #[arg(long, requires = "power_cycle")]
        dry_run: bool,
        /// The host's name under fleet.hosts.
        #[arg(value_name = "HOST")]
        host: String,
    },
    /// Power hosts on, off, cycle them (a host that is off is powered on) or read their power
    /// state, through each host's BMC (fleet.hosts.HOST.bmc.*). Every action but `status` is
    /// recorded in the state directory (who asked, when, the BMC's answers) and shown by `fleet
    /// status`.
    ///
    /// HOSTS is one host, several separated by commas, or `all`, which acts on every host and
    /// must be confirmed (--yes, or "yes" typed on a terminal).
    Power {
        #[command(flatten)]
        target: PowerTarget,
        /// What to do.
        #[arg(value_enum, value_name = "ACTION")]
        action: crate::bmc::PowerRequest,
    },
    /// Power-cycle, through their BMCs, the hosts whose wanted generation (fleet.hosts.HOST.generation)
    /// is ahead of the one installed, each after a one-time network boot is set on its BMC, so
    /// that they install it now. Hosts up to date, or held, are left alone and said.
    ///
    /// HOSTS is one host, several separated by commas, or `all` (confirmed with --yes or on a terminal).
    Apply {
        #[command(flatten)]
        target: PowerTarget,
    },
    /// Copy a fleet's whole state between <state-dir>/state.sqlite3 and a PostgreSQL database
    /// (--to database: a fleet outgrows one boot server; --to state-dir: back to one), every
    /// attempt, token hash, report and binding as it is. The target must be empty; stop serve
    /// first (what it writes during the copy is not copied).
    Copy {
        /// The state directory (the SQLite side).
        #[arg(long, value_name = "DIR", default_value = "/var/lib/nixos-pxe")]
        state_dir: Utf8PathBuf,
        #[command(flatten)]
        store: crate::fleet::open::StoreArgs,
        /// Which side is written.
        #[arg(long, value_enum, value_name = "SIDE")]
        to: CopyTo,
    },
}


/// The hosts of a power command and how to act on them.
#[derive(Debug, clap::Args)]
pub struct PowerTarget {
    /// serve's --state-dir, where each action is recorded (without --database).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/nixos-pxe")]
    pub state_dir: Utf8PathBuf,
    /// Where each action is recorded: --database as serve's, or the state directory.
    #[command(flatten)]
    pub store: crate::fleet::open::StoreArgs,
    /// The fleet's configuration: its hosts and their BMCs.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Utf8PathBuf,
    /// How to read a Nix file given by --config: static, eval, auto.
    #[arg(long, value_enum, default_value = "auto")]
    pub source: SourceMode,
    /// Print every BMC call that would be made, and make none (no password is read, nothing is recorded).
    #[arg(long)]
    pub dry_run: bool,
    /// Confirms `all`.
    #[arg(long)]
    pub yes: bool,
    /// HOST, HOST,HOST,... or `all`.
    #[arg(value_name = "HOSTS")]
    pub hosts: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CopyTo {
    /// From the state directory's state.sqlite3 into the --database.
    Database,
    /// From the --database into the state directory's state.sqlite3 (created).
    StateDir,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KernelConfigFormat {
    /// CONFIG_X=y lines, for scripts/kconfig/merge_config.sh.
    Kconfig,
    /// {"X": "y"}, e.g. for a kernel of your own with nixpkgs' structuredExtraConfig.
    Json,
}

/// The names the command line takes as its first argument: the subcommands and clap's `help`.
pub fn subcommand_names() -> Vec<String> {
    use clap::CommandFactory;
    let mut names: Vec<String> = Cli::command().get_subcommands().map(|s| s.get_name().to_string()).collect();
    names.push("help".into());
    names
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            report(&error);
            ExitCode::from(1)
        }
    }
}

pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Options { config, json, as_config_json } => {
            let resolved = config.load()?;
            if as_config_json {
                println!("{}", serde_json::to_string_pretty(&resolved.config).unwrap_or_default());
                return Ok(ExitCode::SUCCESS);
            }
            print_options(&resolved, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => {
            let resolved = config.load()?;
            // The key and the certificate where they are on this machine (the key may be only
            // on the boot server: `sign` checks it there).
            let problems = crate::secure_boot::keys::check(&resolved, crate::secure_boot::keys::Missing::Skip);
            if !problems.is_empty() {
                return Err(config::ConfigError::Invalid(problems).into());
            }
            let set = resolved.effective.iter().filter(|e| matches!(e.origin, crate::origin::Origin::Defined(_) | crate::origin::Origin::File { .. })).count();
            let hosts = resolved.config.fleet.hosts.len();
            let fleet = if hosts > 0 { format!("; a fleet of {hosts} host(s)") } else { String::new() };
            println!("{}: valid ({} options set, the rest default{fleet})", resolved.source, set);
            Ok(ExitCode::SUCCESS)
        }
        Command::Render { config, out } => {
            let resolved = config.load()?;
            let written = render::write_all(&resolved, &out)?;
            for path in written {
                println!("{path}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::MkBootloader { config, grub_lib, grub_bios_lib, out, grub_mkimage } => {
            let resolved = config.load()?;
            let mut targets = vec![loader::Target { platform: crate::boot_file::Platform::Efi, lib: grub_lib }];
            if let Some(lib) = grub_bios_lib {
                targets.push(loader::Target { platform: crate::boot_file::Platform::Pc, lib });
            }
            for built in loader::build(&resolved, &targets, &grub_mkimage, &out)? {
                println!("{} ({} bytes; GRUB modules: {})", built.image, built.image_size, built.modules.join(" "));
                println!("{}", built.grub_cfg);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::KernelConfig { config, format } => {
            let resolved = config.load()?;
            let symbols = kernel_config::fragment(&resolved.config);
            match format {
                KernelConfigFormat::Kconfig => print!("{}", kernel_config::to_kconfig(&symbols)),
                KernelConfigFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&kernel_config::to_json(&symbols)).unwrap_or_default())
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pack { out, compression, format, store_paths, files, symlinks, dirs } => {
            let spec = pack::Spec {
                store_path_lists: store_paths,
                files: files.into_iter().map(|(d, s)| (d, Utf8PathBuf::from(s))).collect(),
                symlinks,
                dirs,
            };
            let summary = pack::pack_as(&spec, format, compression, &out)?;
            println!("{out}: {} entries, {} bytes of files, {} bytes written", summary.entries, summary.bytes_in, summary.bytes_out);
            Ok(ExitCode::SUCCESS)
        }
        // On the console, under init: one greppable line that says which step failed and why.
        Command::Install(args) => Ok(install::main(&args)),
        // Asked for by name, init still mounts over `/`: only as the first process of a machine or
        // of a PID namespace, never over a running system.
        Command::Init => match std::process::id() {
            1 => Ok(crate::init::main(&[])),
            pid => Err(Error::Message(format!(
                "init runs only as PID 1 (started by the kernel as nfsroot.init, or as the first process of a new \
                 PID namespace); this is PID {pid}, so nothing was mounted"
            ))),
        },
        Command::Sign(args) => {
            let signed = crate::secure_boot::sign::run(&args)?;
            let m = &signed.manifest;
            println!("{} ({} bytes): the installer, signed; it fetches from {}", signed.boot_file, signed.boot_file_size, m.server);
            println!("  {} ({} bytes)", m.tools.path, m.tools.size);
            for (image, digest) in &m.images {
                println!("  {} ({} bytes, {} chunks)", digest.path, digest.size, digest.chunks.len());
                if let Some(boot) = m.boot_files.get(image) {
                    println!("  {} ({} bytes): its system's boot file, signed", boot.path, boot.size);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => crate::serve::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Fleet(command) => fleet(command),
    }
}

fn fleet(command: FleetCommand) -> Result<ExitCode, Error> {
    use crate::fleet::copy::Copyable;
    use crate::fleet::postgres::PostgresStore;
    use crate::fleet::sqlite::SqliteStore;
    let store_error = |e: crate::fleet::store::StoreError| Error::Message(e.to_string());
    match command {
        FleetCommand::Status { state_dir, store, config, source, json } => {
            let fleet = match config {
                Some(file) => {
                    let resolved = config::load(&file, source)?;
                    Some(crate::fleet::Fleet::from_config(&resolved.config).map_err(|e| Error::Message(format!("{file}: {e}")))?)
                }
                None => None,
            };
            // Reports serve on this machine took while the database was away.
            let kept = match store.database {
                Some(_) => crate::serve::report_spool::Spool::new(state_dir.as_std_path()).read().map(|r| r.len()).unwrap_or(0),
                None => 0,
            };
            let kept_line = format!(
                "serve on this machine keeps {kept} report(s) it took while the database was away ({}); it writes them when it reaches the database again",
                state_dir.join(crate::serve::report_spool::FILE_NAME)
            );
            let opened = store.open_existing(state_dir.as_std_path());
            let opened = match opened {
                Ok(s) => s,
                Err(e) => {
                    if kept > 0 {
                        eprintln!("{kept_line}");
                    }
                    return Err(store_error(e));
                }
            };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
            let rows = crate::fleet::status::collect(opened.as_ref(), fleet.as_ref(), now).map_err(store_error)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
            } else {
                print!("{}", crate::fleet::status::table(&rows));
            }
            if kept > 0 {
                eprintln!("{kept_line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Reinstall { state_dir, store, power_cycle: false, host, .. } => {
            let store = store.open_existing(state_dir.as_std_path()).map_err(store_error)?;
            store.reinstall(&host).map_err(store_error)?;
            println!(
                "{host} will be installed again the next time it boots from the network, with a fresh budget of fleet.maxAttempts.\n\
                 This is the imperative way; the declarative one is to bump fleet.hosts.{host}.generation in the configuration."
            );
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Reinstall { state_dir, store, power_cycle: true, config, source, dry_run, host } => {
            let file = config.ok_or_else(|| Error::Message("--power-cycle needs --config (the host's BMC)".into()))?;
            let fleet = load_fleet(&file, source)?;
            let spec = crate::fleet::power::select(&fleet, &host).map_err(power_error)?;
            let [spec] = spec.as_slice() else {
                return Err(Error::Message(format!("`fleet reinstall` takes one host; \"{host}\" names {}", spec.len())));
            };
            let steps = crate::bmc::network_boot_steps(spec.bmc.as_ref().map_or(crate::config::bmc::BootTarget::Pxe, |b| b.boot_target));
            let state = state_dir.as_std_path();
            if dry_run {
                let mark = format!("mark {host} for a reinstall in {}", store.describe(state));
                println!("dry run: no call is made, nothing is marked or recorded.");
                print!("{}", crate::fleet::power::dry_run(spec, &steps, Some(&mark)).map_err(Error::Message)?);
                return Ok(ExitCode::SUCCESS);
            }
            let store = store.open_existing(state).map_err(store_error)?;
            let mut mark = || store.reinstall(&spec.name).map_err(|e| format!("the reinstall could not be marked, so the host was not reset: {e}"));
            let done = crate::fleet::power::act(store.as_ref(), spec, "reinstall --power-cycle", &steps, &mut mark).map_err(power_error)?;
            Ok(report_power(&[done]))
        }
        FleetCommand::Power { target, action } => {
            let fleet = load_fleet(&target.config, target.source)?;
            let hosts = crate::fleet::power::select(&fleet, &target.hosts).map_err(power_error)?;
            let command = format!("fleet power {} {}", target.hosts, action.as_str());
            let steps = crate::fleet::power::power_steps(action);
            if target.dry_run {
                return dry_run_all(&hosts, &steps);
            }
            // A status is read, not an action: no confirmation, nothing recorded, no state needed.
            if action == crate::bmc::PowerRequest::Status {
                return power_status(&hosts);
            }
            crate::fleet::power::confirm(&command, &target.hosts, &hosts, target.yes, &mut ask_on_terminal).map_err(power_error)?;
            let store = target.store.open_existing(target.state_dir.as_std_path()).map_err(store_error)?;
            let mut done = Vec::new();
            let mut failed = false;
            for host in hosts {
                match crate::fleet::power::act(store.as_ref(), host, action.as_str(), &steps, &mut || Ok(())) {
                    Ok(d) => done.push(d),
                    Err(e) => {
                        failed = true;
                        eprintln!("error: {e}");
                    }
                }
            }
            let code = report_power(&done);
            Ok(if failed { ExitCode::from(1) } else { code })
        }
        FleetCommand::Apply { target } => {
            let fleet = load_fleet(&target.config, target.source)?;
            let hosts = crate::fleet::power::select(&fleet, &target.hosts).map_err(power_error)?;
            let command = format!("fleet apply {}", target.hosts);
            let store = target.store.open_existing(target.state_dir.as_std_path()).map_err(store_error)?;
            let (go, skipped) = crate::fleet::power::ahead(store.as_ref(), &fleet, &hosts).map_err(store_error)?;
            for line in &skipped {
                println!("{line}");
            }
            if go.is_empty() {
                println!("no host to power-cycle: every one named has its wanted generation installed, or is held");
                return Ok(ExitCode::SUCCESS);
            }
            let steps_of = |h: &crate::fleet::HostSpec| crate::bmc::network_boot_steps(h.bmc.as_ref().map_or(crate::config::bmc::BootTarget::Pxe, |b| b.boot_target));
            if target.dry_run {
                println!("dry run: no call is made, nothing is recorded.");
                for host in &go {
                    match crate::fleet::power::dry_run(host, &steps_of(host), None) {
                        Ok(text) => print!("{text}"),
                        Err(why) => println!("{why}"),
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            crate::fleet::power::confirm(&command, &target.hosts, &go, target.yes, &mut ask_on_terminal).map_err(power_error)?;
            let mut done = Vec::new();
            let mut failed = false;
            for host in go {
                match crate::fleet::power::act(store.as_ref(), host, "apply", &steps_of(host), &mut || Ok(())) {
                    Ok(d) => done.push(d),
                    Err(e) => {
                        failed = true;
                        eprintln!("error: {e}");
                    }
                }
            }
            let code = report_power(&done);
            Ok(if failed { ExitCode::from(1) } else { code })
        }
        FleetCommand::Copy { state_dir, store, to } => {
            let Some(url) = &store.database else {
                return Err(Error::Message("fleet copy: name the database with --database".into()));
            };
            let password = match &store.database_password_file {
                Some(file) => Some(std::fs::read_to_string(file).map_err(|e| Error::Message(format!("--database-password-file {file}: {e}")))?.lines().next().unwrap_or_default().to_string()),
                None => None,
            };
            let database = PostgresStore::open(url, password.as_deref()).map_err(store_error)?;
            let (dump, target) = match to {
                CopyTo::Database => {
                    let file = SqliteStore::open_existing(state_dir.as_std_path()).map_err(store_error)?;
                    (file.dump().map_err(store_error)?, Box::new(database) as Box<dyn Copyable>)
                }
                CopyTo::StateDir => {
                    let dump = database.dump().map_err(store_error)?;
                    crate::serve::state_dir::prepare(state_dir.as_std_path())?;
                    (dump, Box::new(SqliteStore::open(state_dir.as_std_path()).map_err(store_error)?) as Box<dyn Copyable>)
                }
            };
            target.load(&dump).map_err(store_error)?;
            println!(
                "copied {} from {} to {}",
                dump.summary(),
                match to {
                    CopyTo::Database => state_dir.join(crate::fleet::sqlite::FILE_NAME).to_string(),
                    CopyTo::StateDir => store.describe(state_dir.as_std_path()),
                },
                match to {
                    CopyTo::Database => store.describe(state_dir.as_std_path()),
                    CopyTo::StateDir => state_dir.join(crate::fleet::sqlite::FILE_NAME).to_string(),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A configuration's fleet, for the power commands.
fn load_fleet(file: &Utf8Path, source: SourceMode) -> Result<crate::fleet::Fleet, Error> {
    let resolved = config::load(file, source)?;
    crate::fleet::Fleet::from_config(&resolved.config).map_err(|e| Error::Message(format!("{file}: {e}")))
}

fn power_error(e: crate::fleet::power::PowerError) -> Error {
    Error::Message(e.to_string())
}

/// Asks on the terminal when stdin is one; `None` otherwise (a script must say --yes).
fn ask_on_terminal(question: &str) -> Option<String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return None;
    }
    eprint!("{question}");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).ok()?;
    Some(answer)
}

fn dry_run_all(hosts: &[&crate::fleet::HostSpec], steps: &[crate::bmc::Step]) -> Result<ExitCode, Error> {
    println!("dry run: no call is made, nothing is recorded.");
    let mut missing = false;
    for host in hosts {
        match crate::fleet::power::dry_run(host, steps, None) {
            Ok(text) => print!("{text}"),
            Err(why) => {
                missing = true;
                println!("{why}");
            }
        }
    }
    Ok(if missing { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `fleet power HOSTS status`: each host's power state, read and not recorded.
fn power_status(hosts: &[&crate::fleet::HostSpec]) -> Result<ExitCode, Error> {
    let mut failed = false;
    for host in hosts {
        let Some(spec) = &host.bmc else {
            failed = true;
            eprintln!("error: {}: has no BMC in the configuration (fleet.hosts.{}.bmc.address)", host.name, host.name);
            continue;
        };
        let state = crate::bmc::connect(&host.name, spec, host.install.firmware != crate::config::typed::FirmwareSetting::Bios).and_then(|mut bmc| {
            bmc.power_state().map_err(|kind| crate::bmc::BmcError { host: host.name.clone(), bmc: spec.describe(), kind: Box::new(kind) })
        });
        match state {
            Ok(state) => println!("{}: {state} ({})", host.name, spec.describe()),
            Err(e) => {
                failed = true;
                eprintln!("error: {e}");
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Prints each action's outcome (errors to stderr); exit 1 when one failed.
fn report_power(done: &[crate::fleet::power::Done]) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    for d in done {
        let r = &d.record;
        match &d.error {
            None => println!("{}: {}: {} (action {} recorded, by {})", r.host, r.action, r.summary, r.id, r.requested_by),
            Some(e) => {
                code = ExitCode::from(1);
                eprintln!("error: {e}");
                if r.summary != e.kind.to_string() {
                    eprintln!("  before it: {}", r.summary.split("; then: ").next().unwrap_or_default());
                }
                eprintln!("  calls made (action {} recorded):", r.id);
                for line in r.calls.lines() {
                    eprintln!("    {line}");
                }
            }
        }
    }
    code
}

fn print_options(resolved: &Resolved, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(&resolved.effective).unwrap_or_default());
        return;
    }
    let width = resolved.effective.iter().map(|e| e.option.len()).max().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for e in &resolved.effective {
        let _ = writeln!(out, "{:width$}  {}  ({})", e.option, e.value, e.origin);
    }
}

/// Prints an error to stderr: diagnostics one by one with the source line and a caret.
pub fn report(error: &Error) {
    let mut err = std::io::stderr().lock();
    if let Error::Config(config_error) = error {
        let diagnostics = config_error.diagnostics();
        if !diagnostics.is_empty() {
            for d in diagnostics {
                let _ = writeln!(err, "error: {}", render_diagnostic(d));
            }
            let _ = writeln!(err, "{} problem(s); nothing was written.", diagnostics.len());
            return;
        }
    }
    let _ = writeln!(err, "error: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let _ = writeln!(err, "  caused by: {cause}");
        source = cause.source();
    }
}

/// A diagnostic with the line it points at, e.g.
/// ```text
/// host.nix:4:41: nfsroot.bootLoader.efinetDHCPInterface: "eth0" is not a GRUB EFI network interface; ...
///    4 |   nfsroot.bootLoader.efinetDHCPInterface = "eth0";
///      |                                            ^
/// ```
pub fn render_diagnostic(d: &Diagnostic) -> String {
    let mut text = d.to_string();
    if let Some(location) = d.origin.location()
        && let Some(line) = source_line(&location.file, location.line)
    {
        let number = location.line.to_string();
        let pad = " ".repeat(number.len());
        let caret_pad: String =
            line.chars().take(location.column.saturating_sub(1) as usize).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        text.push_str(&format!("\n {number} | {line}\n {pad} | {caret_pad}^"));
    }
    text
}

fn source_line(file: &Utf8Path, line: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().nth(line.checked_sub(1)? as usize).map(str::to_string)
}
