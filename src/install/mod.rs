//! `nixos-pxe install`: puts the predefined system on the local disk, in logged steps with their
//! times. Nothing is written before every check has passed; a failure names its step and cause.

pub mod disk;
pub mod lease;
pub mod plan;
mod steps;
pub mod unpack;

use crate::config::{self, Config, SourceMode};
use crate::error::Error;
use camino::{Utf8Path, Utf8PathBuf};
use std::time::{Duration, Instant};

/// Where the installer finds things on the NFS root, and what it may be told instead (tests).
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// The resolved configuration (the JSON form of the options).
    #[arg(long, value_name = "FILE", default_value = "/nixos-pxe/config.json")]
    pub config: Utf8PathBuf,
    /// The system image [default: /nixos-pxe/system.tar.zst, .gz or .xz per customInstaller.imageCompression].
    #[arg(long, value_name = "FILE")]
    pub image: Option<Utf8PathBuf>,
    /// Where the new system is mounted while it is installed.
    #[arg(long, value_name = "DIR", default_value = "/mnt")]
    pub target: Utf8PathBuf,
    /// Network facts as JSON (interface, address, prefixLength, gateway, nameServers, domain, hostName)
    /// instead of the kernel's DHCP lease: for a dry run on a workstation, and for tests.
    #[arg(long, value_name = "FILE")]
    pub lease_json: Option<Utf8PathBuf>,
    /// Where to write the name servers of the lease.
    #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
    pub resolv_conf: Utf8PathBuf,
    /// Print the plan (disk, partitions, commands, sizes) and the safety decision; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where block devices are described (tests point it at a fake tree).
    #[arg(long, value_name = "DIR", default_value = "/sys/class/block", hide = true)]
    pub sysfs_block: Utf8PathBuf,
}

/// The steps, in order, as the console shows them.
pub const STEPS: &[&str] = &["network", "disk", "partition", "unpack", "configure", "bootloader", "finish"];

/// Prints a line on the console (stdout is the console under init) and flushes it at once.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "nixos-pxe: {line}");
    let _ = out.flush();
}

/// Runs the steps one by one, timing each, and reports the first failure with its step.
struct Runner {
    timings: Vec<(&'static str, Duration)>,
    started: Instant,
}

impl Runner {
    fn step<T>(&mut self, index: usize, run: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let name = STEPS[index];
        say(&format!("step {}/{} {name}", index + 1, STEPS.len()));
        let start = Instant::now();
        match run() {
            Ok(value) => {
                let took = start.elapsed();
                say(&format!("step {}/{} {name} done in {:.1} s", index + 1, STEPS.len(), took.as_secs_f64()));
                self.timings.push((name, took));
                Ok(value)
            }
            Err(e) => Err(Error::Message(format!("install FAILED at step {}/{} ({name}): {e}", index + 1, STEPS.len()))),
        }
    }
}

/// The image's path when none is given: next to the config, named by the configured compression.
pub fn default_image(config_file: &Utf8Path, config: &Config) -> Utf8PathBuf {
    let codec = crate::compression::Codec::from(config.custom_installer.image_compression);
    config_file.parent().unwrap_or(Utf8Path::new("/nixos-pxe")).join(format!("system.tar{}", codec.extension()))
}

pub fn run(args: &InstallArgs) -> Result<(), Error> {
    let resolved = config::load(&args.config, SourceMode::Static)?;
    let config = resolved.config;
    let image = args.image.clone().unwrap_or_else(|| default_image(&args.config, &config));
    let mut runner = Runner { timings: Vec::new(), started: Instant::now() };
    say(&format!("installing from {} with {}{}", image, args.config, if args.dry_run { " (dry run: nothing is changed)" } else { "" }));

    let lease = runner.step(0, || steps::network(args))?;
    let (plan, decision) = runner.step(1, || steps::disk(args, &config, &image))?;
    if args.dry_run {
        steps::print_plan(&plan, &decision, &image, &lease, &config);
        return match decision {
            disk::Decision::Refuse(why) => Err(Error::Message(format!("dry run: the installer would refuse: {why}"))),
            _ => Ok(()),
        };
    }
    if let disk::Decision::Refuse(why) = decision {
        return Err(Error::Message(format!("install FAILED at step 2/{} (disk): {why}", STEPS.len())));
    }
    let mut mounted = steps::Mounts::default();
    let result = (|| {
        runner.step(2, || steps::partition(&plan))?;
        let unpacked = runner.step(3, || steps::unpack(&plan, &image, &args.target, &mut mounted))?;
        runner.step(4, || steps::configure(&plan, &args.target, &lease, &config, &mut mounted))?;
        runner.step(5, || steps::bootloader(&args.target, &unpacked, &mut mounted))?;
        runner.step(6, || mounted.unmount_all())?;
        Ok(unpacked)
    })();
    let unpacked = match result {
        Ok(u) => u,
        Err(e) => {
            // Leave the disk unmounted so the shell that follows can inspect it.
            let _ = mounted.unmount_all();
            return Err(e);
        }
    };
    say("summary:");
    say(&format!("  disk {}", plan.disk.describe()));
    for p in &plan.partitions {
        say(&format!("  {} {} MiB label {} ({:?})", p.device, p.size_mib, p.label, p.filesystem));
    }
    say(&format!("  system {} ({} bytes unpacked from {} bytes)", unpacked.system, unpacked.bytes_written, unpacked.bytes_read));
    for (name, took) in &runner.timings {
        say(&format!("  {name:<10} {:>7.1} s", took.as_secs_f64()));
    }
    say(&format!("install complete in {:.1} s", runner.started.elapsed().as_secs_f64()));
    Ok(())
}
