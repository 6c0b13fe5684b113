//! `nixos-pxe install`: puts the predefined system on the local disk, in logged steps with their
//! times. Nothing is written before every check has passed; a failure names its step and cause.

mod console_tail;
pub mod disk;
pub mod efi;
pub mod efivars;
pub mod firmware;
pub mod host;
pub mod http;
pub mod kernel_args;
pub mod lease;
pub mod nic;
pub mod plan;
pub mod report;
pub mod secure;
pub mod steps;
pub mod unpack;

use crate::config::{self, Config, SourceMode};
use crate::error::Error;
use camino::{Utf8Path, Utf8PathBuf};
use host::Selected;
use kernel_args::KernelArgs;
use report::{BootReport, Reporter};
use std::process::ExitCode;
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
    /// Where network interfaces are described.
    #[arg(long, value_name = "DIR", default_value = "/sys/class/net", hide = true)]
    pub sys_class_net: Utf8PathBuf,
    /// The kernel command line, with the fleet's nixos-pxe.* words (tests give their own).
    #[arg(long, value_name = "FILE", default_value = "/proc/cmdline", hide = true)]
    pub cmdline: Utf8PathBuf,
    /// Secure Boot mode (what init does from the signed initrd): the signed manifest. The system
    /// image and its signed boot file are fetched from the manifest's server into --stage-dir,
    /// each checked whole against the manifest before anything is written to the disk, and the
    /// signed boot file becomes the ESP's EFI/BOOT/BOOTX64.EFI; --image is not taken then.
    #[arg(long, value_name = "FILE", conflicts_with = "image")]
    pub manifest: Option<Utf8PathBuf>,
    /// Where Secure Boot mode keeps the fetched files until they are checked (memory: the signed
    /// initrd's root).
    #[arg(long, value_name = "DIR", default_value = "/nixos-pxe/staged")]
    pub stage_dir: Utf8PathBuf,
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

/// How many of the console's last lines a `failed` report carries.
pub const LOG_TAIL_LINES: usize = 50;

/// Why the install stopped: the step (None before the first) and the cause.
struct Failure {
    step: Option<usize>,
    why: String,
}

impl Failure {
    fn before_steps(e: impl std::fmt::Display) -> Failure {
        Failure { step: None, why: e.to_string() }
    }

    fn at(step: usize, why: impl std::fmt::Display) -> Failure {
        Failure { step: Some(step), why: why.to_string() }
    }

    /// The step's name as reports give it; `start` before the first step.
    fn step_name(&self) -> &'static str {
        self.step.map_or("start", |i| STEPS[i])
    }

    /// The one greppable console line that says which step failed and why.
    fn line(&self) -> String {
        match self.step {
            Some(i) => format!("install FAILED at step {}/{} ({}): {}", i + 1, STEPS.len(), STEPS[i], self.why),
            None => format!("install FAILED: {}", self.why),
        }
    }
}

/// Runs the steps one by one, timing each, reporting each as it starts, and stops at the first failure.
struct Runner<'a> {
    timings: Vec<(&'static str, Duration)>,
    started: Instant,
    reporter: Option<&'a Reporter>,
}

impl Runner<'_> {
    fn step<T>(&mut self, index: usize, run: impl FnOnce() -> Result<T, Error>) -> Result<T, Failure> {
        let name = STEPS[index];
        let title = format!("step {}/{} {name}", index + 1, STEPS.len());
        say(&title);
        if let Some(r) = self.reporter {
            r.step(name, title.clone());
        }
        let start = Instant::now();
        match run() {
            Ok(value) => {
                let took = start.elapsed();
                say(&format!("{title} done in {:.1} s", took.as_secs_f64()));
                self.timings.push((name, took));
                Ok(value)
            }
            Err(e) => Err(Failure::at(index, e)),
        }
    }
}

/// The image's path when none is given: next to the config, named by the configured compression.
pub fn default_image(config_file: &Utf8Path, config: &Config) -> Utf8PathBuf {
    let codec = crate::compression::Codec::from(config.custom_installer.image_compression);
    config_file.parent().unwrap_or(Utf8Path::new("/nixos-pxe")).join(format!("system.tar{}", codec.extension()))
}

/// The image's name as the manifest has it (`systems/HASH.tar.zst`, `system.tar.zst`): its path
/// below the configuration's directory.
fn manifest_name(config_file: &Utf8Path, image: &Utf8Path) -> String {
    let dir = config_file.parent().unwrap_or(Utf8Path::new("/"));
    image.strip_prefix(dir).map_or_else(|_| image.file_name().unwrap_or(image.as_str()).to_string(), |p| p.as_str().to_string())
}

/// `nixos-pxe install`: installs, says on the console how it ended (one `install FAILED` line
/// naming the step), and for a fleet host served by serve, reports it.
pub fn main(args: &InstallArgs) -> ExitCode {
    // The command line first: without its words no report can be sent.
    let (cmdline, kernel) = match read_kernel_args(&args.cmdline) {
        Ok(read) => read,
        Err(why) => {
            say(&Failure::before_steps(why).line());
            return ExitCode::from(1);
        }
    };
    if !kernel.unknown.is_empty() {
        say(&format!(
            "ignoring {} on the kernel command line: this installer knows nixos-pxe.{}= (is the boot server newer than the NFS root?)",
            kernel.unknown.join(" "),
            kernel_args::KNOWN.join("=, nixos-pxe.")
        ));
    }
    let reporter = match (&kernel.fleet, args.dry_run) {
        (Some(fleet), false) => Reporter::new(fleet),
        _ => None,
    };
    let tail = reporter.as_ref().and_then(|_| match console_tail::ConsoleTail::capture(LOG_TAIL_LINES) {
        Ok(tail) => Some(tail),
        Err(e) => {
            say(&format!("cannot keep the console's last lines for a failure report ({e}); a failure is reported without them"));
            None
        }
    });
    if let (Some(r), Some(fleet)) = (&reporter, &kernel.fleet) {
        say(&format!("reporting to {}{} as {} generation {} attempt {}", r.url(), report::ENDPOINT, fleet.host, fleet.generation, fleet.served.as_ref().map_or(0, |s| s.attempt)));
        r.started(format!("installing {} generation {}", fleet.host, fleet.generation));
    }
    let boot = reporter.as_ref().and_then(|r| match BootReport::new(r) {
        Ok(b) => Some(b),
        Err(e) => {
            say(&format!("no boot token ({e}): the installed system's first boot report cannot be made"));
            None
        }
    });
    let result = run(args, &cmdline, &kernel, reporter.as_ref(), boot.as_ref());
    let lines = tail.map(console_tail::ConsoleTail::finish).unwrap_or_default();
    match result {
        Ok(Installed::Done { system }) => {
            if let Some(r) = &reporter {
                r.installed(&system, format!("installed {system}"), boot.as_ref());
            }
            ExitCode::SUCCESS
        }
        Ok(Installed::DryRun) => ExitCode::SUCCESS,
        Err(Outcome::DryRunRefused(why)) => {
            say(&format!("dry run: the installer would refuse: {why}"));
            ExitCode::from(1)
        }
        Err(Outcome::Failed(failure)) => {
            let line = failure.line();
            say(&line);
            if let Some(r) = &reporter {
                let mut lines = lines;
                // The console's pipe was drained before this line was said: it ends the tail.
                lines.push(format!("nixos-pxe: {line}"));
                let skip = lines.len().saturating_sub(LOG_TAIL_LINES);
                r.failed(failure.step_name(), &failure.why, &lines[skip..]);
            }
            ExitCode::from(1)
        }
    }
}

fn read_kernel_args(file: &Utf8Path) -> Result<(String, KernelArgs), String> {
    let cmdline = std::fs::read_to_string(file).map_err(|e| format!("reading the kernel command line {file}: {e}"))?;
    let kernel = kernel_args::parse(&cmdline).map_err(|e| e.to_string())?;
    Ok((cmdline, kernel))
}

/// How a run that did not fail ended.
enum Installed {
    Done { system: String },
    DryRun,
}

enum Outcome {
    Failed(Failure),
    DryRunRefused(String),
}

impl From<Failure> for Outcome {
    fn from(f: Failure) -> Outcome {
        Outcome::Failed(f)
    }
}

fn run(args: &InstallArgs, cmdline: &str, kernel: &KernelArgs, reporter: Option<&Reporter>, boot: Option<&BootReport>) -> Result<Installed, Outcome> {
    let resolved = config::load(&args.config, SourceMode::Static).map_err(Failure::before_steps)?;
    let Selected { config, image, fleet } = host::select(&resolved.config, &args.config, kernel).map_err(Failure::before_steps)?;
    let image = args.image.clone().or(image).unwrap_or_else(|| default_image(&args.config, &config));
    let manifest = match &args.manifest {
        Some(path) => Some(secure::load_manifest(path).map_err(Failure::before_steps)?),
        None => None,
    };
    let mut runner = Runner { timings: Vec::new(), started: Instant::now(), reporter };
    if let Some(f) = &fleet {
        say(&format!(
            "fleet host {}, generation {}{}: its customInstaller and image (from the kernel command line and {})",
            f.args.host,
            f.args.generation,
            f.args.served.as_ref().map(|s| format!(", attempt {}", s.attempt)).unwrap_or_default(),
            args.config
        ));
        if f.args.served.is_none() {
            say("no reports: the kernel command line has no nixos-pxe.report= (a per-host file of nixos-pxe render, not serve)");
        } else if args.dry_run {
            say("no reports: a dry run sends none");
        }
    }
    let source = match (&manifest, &args.manifest) {
        (Some(m), Some(path)) => {
            let name = manifest_name(&args.config, &image);
            let served = m.images.get(&name).map_or(name, |d| d.path.clone());
            format!("{}/{served} (Secure Boot mode: fetched and checked whole against the signed manifest {path} before the disk is touched)", m.server)
        }
        _ => image.to_string(),
    };
    say(&format!("installing from {source} with {}{}", args.config, if args.dry_run { " (dry run: nothing is changed)" } else { "" }));

    let lease = runner.step(0, || steps::network(args, cmdline, kernel))?;
    // Secure Boot mode: the image is what was fetched and checked whole, before the disk is
    // looked at (src/install/secure.rs).
    let mut staged = None;
    let checked = runner.step(1, || {
        let image = match &manifest {
            Some(m) => {
                let name = manifest_name(&args.config, &image);
                let s = secure::stage(m, &name, &args.stage_dir)?;
                let path = s.image.clone();
                staged = Some(s);
                path
            }
            None => image.clone(),
        };
        steps::disk(args, &config, &image, fleet.as_ref()).map(|checked| (checked, image))
    })?;
    let (checked, image) = checked;
    if args.dry_run {
        steps::print_plan(&checked, &image, &lease, &config);
        return match checked.decision {
            disk::Decision::Refuse(why) => Err(Outcome::DryRunRefused(why)),
            _ => Ok(Installed::DryRun),
        };
    }
    let steps::Checked { plan, decision, firmware } = checked;
    if let disk::Decision::Refuse(why) = decision {
        return Err(Failure::at(1, why).into());
    }
    let stamp = fleet.as_ref().map(|f| steps::Stamp {
        path: crate::fleet::marker::done_stamp(&f.args.host, f.args.generation),
        text: format!(
            "{} generation {}{} installed by nixos-pxe\n",
            f.args.host,
            f.args.generation,
            f.args.served.as_ref().map(|s| format!(" attempt {}", s.attempt)).unwrap_or_default()
        ),
    });
    let mut mounted = steps::Mounts::default();
    let result = (|| {
        runner.step(2, || steps::partition(&plan))?;
        let unpacked = runner.step(3, || steps::unpack(&plan, &image, &args.target, &firmware.system_file(), &mut mounted))?;
        runner.step(4, || steps::configure(&plan, &args.target, &lease, &config, boot, &mut mounted))?;
        runner.step(5, || {
            steps::bootloader(&args.target, &unpacked, plan.layout, &plan.disk, &mut mounted)?;
            match (&staged, plan.esp()) {
                (Some(s), Some(_)) => secure::place_boot_file(s, &args.target.join("boot")),
                (Some(_), None) => Err(Error::Message(format!("the {} layout has no ESP for the signed boot file: Secure Boot mode needs customInstaller.firmware = \"uefi\"", plan.layout.as_str()))),
                (None, _) => Ok(()),
            }
        })?;
        runner.step(6, || steps::finish(&args.target, stamp.as_ref(), plan.esp().is_some(), &mut mounted))?;
        Ok::<_, Failure>(unpacked)
    })();
    let unpacked = match result {
        Ok(u) => u,
        Err(e) => {
            // Leave the disk unmounted so the shell that follows can inspect it.
            let _ = mounted.unmount_all();
            return Err(e.into());
        }
    };
    say("summary:");
    say(&format!("  disk {} for {}: {}", plan.disk.describe(), plan.layout.as_str(), plan.layout.boot_loader()));
    if let Some(id) = &plan.label_id {
        say(&format!("  GPT disk GUID {id} (this host's marker)"));
    }
    for p in &plan.partitions {
        say(&format!("  {} {} MiB label {} ({:?})", p.device, p.size_mib, p.label, p.filesystem));
    }
    say(&format!("  system {} ({} bytes unpacked from {} bytes)", unpacked.system, unpacked.bytes_written, unpacked.bytes_read));
    for (name, took) in &runner.timings {
        say(&format!("  {name:<10} {:>7.1} s", took.as_secs_f64()));
    }
    say(&format!("install complete in {:.1} s", runner.started.elapsed().as_secs_f64()));
    Ok(Installed::Done { system: unpacked.system })
}
