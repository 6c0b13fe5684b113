//! The installer's acting steps: thin code around the programs and system calls, each failure
//! worded with what was being done. The decisions they follow are made in disk.rs, plan.rs, lease.rs.

use super::disk::{self, Decision, Disk, MarkerCheck, Sysfs};
use super::efi;
use super::firmware::{self, Layout, Machine};
use super::host::FleetInstall;
use super::kernel_args::KernelArgs;
use super::lease::{self, Lease};
use super::nic;
use super::plan::{self, Filesystem, Plan};
use super::report::BootReport;
use super::unpack;
use super::{InstallArgs, say};
use crate::command::Command;
use crate::config::Config;
use crate::error::Error;
use camino::{Utf8Path, Utf8PathBuf};
use std::ffi::CString;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Step 1: the lease, from `--lease-json` or from what the kernel's IP autoconfiguration left
/// (`cmdline`: the kernel command line, `kernel`: its nixos-pxe words).
pub fn network(args: &InstallArgs, cmdline: &str, kernel: &KernelArgs) -> Result<Lease, Error> {
    let lease = match &args.lease_json {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(Error::io(file))?;
            serde_json::from_str(&text).map_err(|e| Error::Message(format!("{file}: not a lease: {e}")))?
        }
        None => kernel_lease(cmdline, kernel, &args.sys_class_net)?,
    };
    say(&format!(
        "{}: {}/{} gateway {} name servers {} domain {} host name {}",
        lease.interface,
        lease.address,
        lease.prefix_length,
        lease.gateway.map_or("none".into(), |g| g.to_string()),
        if lease.name_servers.is_empty() { "none".into() } else { lease.name_servers.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(",") },
        lease.domain.as_deref().unwrap_or("none"),
        lease.host_name.as_deref().unwrap_or("none"),
    ));
    if !args.dry_run {
        std::fs::write(&args.resolv_conf, lease::resolv_conf(&lease)).map_err(Error::io(&args.resolv_conf))?;
    }
    Ok(lease)
}

fn read(path: &str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(Error::io(path))
}

/// The interface the kernel configured: named by `ip=:::::eth0:dhcp:`, or with `ip=dhcp` (the
/// kernel asked on every NIC) the one whose MAC is `nixos-pxe.mac=`, which must be the one the
/// kernel configured.
fn kernel_interface(cmdline: &str, kernel: &KernelArgs, sys_class_net: &Utf8Path) -> Result<String, Error> {
    if let Some(named) = lease::pnp_interface(cmdline) {
        return Ok(named);
    }
    let nics = nic::read(sys_class_net, |name| interface_address(name).ok().map(|(address, _)| address));
    let chosen = match &kernel.mac {
        Some(mac) => nic::boot_nic(mac, &nics).map_err(Error::Message)?,
        None => nic::only_configured(&nics).map_err(|why| Error::Message(format!("{why}; the kernel command line is: {}", cmdline.trim())))?,
    };
    match &kernel.mac {
        Some(mac) => say(&format!("{} (MAC {mac}) is the NIC GRUB booted from (nixos-pxe.mac=) and the one the kernel configured (ip=dhcp)", chosen.name)),
        None => say(&format!("{} is the interface the kernel configured (ip=dhcp; no nixos-pxe.mac= to check it against)", chosen.name)),
    }
    Ok(chosen.name.clone())
}

fn kernel_lease(cmdline: &str, kernel: &KernelArgs, sys_class_net: &Utf8Path) -> Result<Lease, Error> {
    let interface = kernel_interface(cmdline, kernel, sys_class_net)?;
    let (address, mask) = interface_address(&interface)?;
    let prefix_length = lease::prefix_length(mask).ok_or_else(|| Error::Message(format!("{interface} has the odd netmask {mask}")))?;
    let (name_servers, domain) = lease::parse_pnp(&std::fs::read_to_string("/proc/net/pnp").unwrap_or_default());
    Ok(Lease {
        gateway: lease::parse_route_gateway(&read("/proc/net/route")?, &interface),
        host_name: lease::host_name(&std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default()),
        interface,
        address,
        prefix_length,
        name_servers,
        domain,
    })
}

/// The IPv4 address and netmask of `interface` (SIOCGIFADDR, SIOCGIFNETMASK).
/// The one interface the kernel configured and its MAC (Secure Boot mode: no GRUB named the
/// boot NIC, so the kernel's DHCP answer says which it is).
pub fn configured_nic(sys_class_net: &Utf8Path) -> Result<nic::Nic, Error> {
    let nics = nic::read(sys_class_net, |name| interface_address(name).ok().map(|(address, _)| address));
    nic::only_configured(&nics).cloned().map_err(Error::Message)
}

fn interface_address(interface: &str) -> Result<(Ipv4Addr, Ipv4Addr), Error> {
    let query = |request: libc::Ioctl| -> Result<Ipv4Addr, Error> {
        // SAFETY: a plain AF_INET datagram socket and an ifreq zeroed and filled within bounds;
        // the kernel writes a sockaddr_in into the union for these two requests.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            if fd < 0 {
                return Err(Error::Message(format!("socket: {}", std::io::Error::last_os_error())));
            }
            let mut req: libc::ifreq = std::mem::zeroed();
            for (i, b) in interface.bytes().take(libc::IFNAMSIZ - 1).enumerate() {
                req.ifr_name[i] = b as libc::c_char;
            }
            let rc = libc::ioctl(fd, request, &mut req);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if rc < 0 {
                return Err(Error::Message(format!("{interface} has no IPv4 address from the kernel's DHCP: {err}")));
            }
            let sin = &*(&req.ifr_ifru.ifru_addr as *const libc::sockaddr as *const libc::sockaddr_in);
            Ok(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
        }
    };
    Ok((query(libc::SIOCGIFADDR)?, query(libc::SIOCGIFNETMASK)?))
}

/// The programs the acting steps run; all are looked up before the disk is touched.
fn required_programs(config: &Config) -> Vec<&'static str> {
    let mut p = vec!["sfdisk", "mkfs.vfat", "mkfs.ext4", "nix-store", "nix-env", "nixos-generate-config", "nixos-enter"];
    if config.custom_installer.swap_size_mib > 0 {
        p.push("mkswap");
    }
    p
}

/// What step 2 decided: the plan (with this host's marker), whether the disk may be written, and
/// the firmware the disk is laid out for.
pub struct Checked {
    pub plan: Plan,
    pub decision: Decision,
    pub firmware: firmware::Decision,
}

/// Step 2: everything checked before anything is written — the image, the programs, the firmware
/// the disk is made for (an image built for a firmware this machine does not boot with is
/// refused), the disk and whether it may be overwritten (for a fleet host, by the marker of its
/// own unfinished attempt too) — and the plan, which puts this host's marker on the disk.
pub fn disk(args: &InstallArgs, config: &Config, image: &Utf8Path, fleet: Option<&FleetInstall>) -> Result<Checked, Error> {
    let size = std::fs::metadata(image)
        .map_err(|e| Error::Message(format!("the system image {image} cannot be read ({e}); nothing was written to the disk")))?
        .len();
    say(&format!("system image {image} ({})", disk::human_size(size)));
    let missing: Vec<&str> = required_programs(config).into_iter().filter(|p| which::which(p).is_err()).collect();
    if !missing.is_empty() {
        return Err(Error::Message(format!(
            "programs missing from PATH ({}): {}; nothing was written to the disk",
            std::env::var("PATH").unwrap_or_default(),
            missing.join(", ")
        )));
    }
    let option = match fleet {
        Some(f) => format!("fleet.hosts.{}.customInstaller.firmware", f.args.host),
        None => "customInstaller.firmware".to_string(),
    };
    let machine = Machine::seen(Utf8Path::new(firmware::FIRMWARE_EFI));
    let firmware = firmware::decide(config.custom_installer.firmware, machine, &option).map_err(Error::Message)?;
    say(&firmware.describe());
    let requested = &config.custom_installer.root_device;
    let disk = disk::resolve(requested, &Sysfs { block: args.sysfs_block.clone() })?;
    say(&format!("target disk {}", disk.describe()));
    let found = disk::probe(&disk.device, disk.size_bytes)?;
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let marker = match fleet {
        Some(f) => Some(MarkerCheck { found: disk::read_gpt_disk_guid(&disk.device)?, host: &f.args.host, generation: f.args.generation, fleet: &f.hosts }),
        None => None,
    };
    let decision = disk::decide(config.custom_installer.wipe, &disk, &found, &disk::mounted_parts(&mounts, &disk), marker.as_ref());
    match &decision {
        Decision::Proceed => say(&format!("{} holds no partition table or file system: it will be partitioned", disk.device)),
        Decision::Overwrite(why) => say(why),
        Decision::Refuse(why) => say(&format!("refusing: {why}")),
    }
    let mut plan = plan::plan(&disk, &config.custom_installer, firmware.layout)?;
    if let Some(f) = fleet {
        let guid = crate::fleet::marker::disk_guid(&f.args.host, f.args.generation);
        say(&format!("the GPT disk GUID will be {guid}, the marker of {}'s install of generation {}", f.args.host, f.args.generation));
        plan.label_id = Some(guid.to_string());
    }
    Ok(Checked { plan, decision, firmware })
}

pub fn print_plan(checked: &Checked, image: &Utf8Path, lease: &Lease, config: &Config) {
    let Checked { plan, decision, firmware } = checked;
    say("dry run: the plan");
    say(&format!("  firmware: {}", firmware.describe()));
    say(&format!("  disk {}", plan.disk.describe()));
    for p in &plan.partitions {
        say(&format!("  partition {} {} MiB {:?} label {}", p.device, p.size_mib, p.filesystem, p.label));
    }
    for c in plan.commands() {
        say(&format!("  run {c}"));
    }
    match plan.esp() {
        Some(esp) => say(&format!("  unpack {image} onto {} (mounted on /mnt), then the ESP {} on /mnt/boot", plan.root().device, esp.device)),
        None => say(&format!("  unpack {image} onto {} (mounted on /mnt; /boot is a directory of the root)", plan.root().device)),
    }
    say(&format!("  install the system named by {} in the image", firmware.system_file()));
    say("  run nix-store --load-db, nix-env --set the system profile, nixos-generate-config --root /mnt");
    say(&format!("  write /etc/nixos/networking.nix:\n{}", lease::networking_nix(lease, &config.custom_installer.networking)));
    say("  run NIXOS_INSTALL_BOOTLOADER=1 nixos-enter --root /mnt -- /nix/var/nix/profiles/system/bin/switch-to-configuration boot");
    say(&format!("    which installs {}", firmware.layout.boot_loader()));
    say(&format!("  then {:?}", config.custom_installer.after_install).to_lowercase());
    match decision {
        Decision::Refuse(why) => say(&format!("  BUT the installer would refuse: {why}")),
        Decision::Overwrite(why) => say(&format!("  note: {why}")),
        Decision::Proceed => {}
    }
}

/// Waits for a partition's device node (devtmpfs makes it when the kernel has re-read the table).
fn wait_for_device(device: &Utf8Path) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if device.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::Message(format!(
        "{device} did not appear within 15 s after partitioning (is customInstaller.partitionSeparator right for this disk?)"
    )))
}

/// Step 3: the partition table and the file systems.
pub fn partition(plan: &Plan) -> Result<(), Error> {
    say(&format!("writing a GPT to {}", plan.disk.device));
    Command::new("sfdisk")
        .args(["--wipe", "always", "--wipe-partitions", "always", "--quiet"])
        .arg(plan.disk.device.as_str())
        .stdin(plan.sfdisk_script())
        .run()?;
    // The kernel re-reads the table when sfdisk asks; some (loop devices among them) do not
    // create the partitions then, and partx adds them explicitly.
    let appeared = |timeout: Duration| {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if plan.partitions.iter().all(|p| p.device.exists()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    if !appeared(Duration::from_secs(2)) && which::which("partx").is_ok() {
        say(&format!("asking the kernel for the partitions of {} (partx -u)", plan.disk.device));
        Command::new("partx").args(["-u", plan.disk.device.as_str()]).run()?;
    }
    for p in &plan.partitions {
        wait_for_device(&p.device)?;
    }
    for p in &plan.partitions {
        if p.filesystem != Filesystem::BiosBoot {
            say(&format!("making {:?} on {} (label {})", p.filesystem, p.device, p.label));
        }
        let command = match p.filesystem {
            Filesystem::Vfat => Command::new("mkfs.vfat").args(["-F", "32", "-n", p.label]),
            Filesystem::Ext4 => Command::new("mkfs.ext4").args(["-F", "-q", "-L", p.label]),
            Filesystem::Swap => Command::new("mkswap").args(["-L", p.label]),
            Filesystem::BiosBoot => {
                say(&format!("{} is the BIOS boot partition: no file system, GRUB's core image goes there", p.device));
                continue;
            }
        };
        command.arg(p.device.as_str()).run()?;
    }
    Ok(())
}

/// Mounts made by the installer, unmounted in reverse order.
#[derive(Default)]
pub struct Mounts {
    points: Vec<Utf8PathBuf>,
}

fn cstring(s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Message(format!("`{s}` contains a NUL byte")))
}

impl Mounts {
    pub fn mount(&mut self, source: &str, target: &Utf8Path, fstype: &str) -> Result<(), Error> {
        std::fs::create_dir_all(target).map_err(Error::io(target))?;
        let (src, tgt, fs) = (cstring(source)?, cstring(target.as_str())?, cstring(fstype)?);
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            return Err(Error::Message(format!("mounting {source} ({fstype}) on {target}: {}", std::io::Error::last_os_error())));
        }
        self.points.push(target.to_owned());
        Ok(())
    }

    pub fn unmount_all(&mut self) -> Result<(), Error> {
        // SAFETY: sync(2) takes no arguments.
        unsafe { libc::sync() };
        while let Some(point) = self.points.pop() {
            let tgt = cstring(point.as_str())?;
            // SAFETY: a valid path string.
            if unsafe { libc::umount2(tgt.as_ptr(), 0) } != 0 {
                return Err(Error::Message(format!("unmounting {point}: {}", std::io::Error::last_os_error())));
            }
            say(&format!("unmounted {point}"));
        }
        Ok(())
    }
}

/// What the unpack step found and did.
pub struct Unpacked {
    pub system: String,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// Step 4: mounts the root, unpacks the image with progress, registers the store paths and sets
/// the system profile to the system `system_file` (install::firmware) names, as nixos-install does.
pub fn unpack(plan: &Plan, image: &Utf8Path, target: &Utf8Path, system_file: &str, mounts: &mut Mounts) -> Result<Unpacked, Error> {
    mounts.mount(plan.root().device.as_str(), target, "ext4")?;
    let extracted = unpack::extract(image, target, &mut |report| match report {
        unpack::Report::Start { codec, image_bytes } => {
            say(&format!("unpacking {image} ({codec:?}, {}) onto {target}", disk::human_size(image_bytes)))
        }
        unpack::Report::Progress { written, read, image_bytes, elapsed } => say(&format!(
            "unpacked {} of image read {} / {} ({:.0}%), {}/s",
            disk::human_size(written),
            disk::human_size(read),
            disk::human_size(image_bytes),
            100.0 * read as f64 / image_bytes.max(1) as f64,
            disk::human_size((written as f64 / elapsed.as_secs_f64().max(0.001)) as u64)
        )),
    })?;

    let meta = target.join("nixos-pxe");
    let system = std::fs::read_to_string(target.join(system_file))
        .map_err(|e| {
            Error::Message(format!(
                "{image} has no {system_file} naming the system to install ({e}): it was not built for customInstaller.firmware as \
                 config.json has it (the NFS root's image and its config.json are of different builds)"
            ))
        })?
        .trim()
        .to_string();
    let registration = std::fs::read(meta.join("registration"))
        .map_err(|e| Error::Message(format!("{image} has no nixos-pxe/registration for the Nix database ({e})")))?;
    say(&format!("registering the store paths of {system}"));
    Command::new("nix-store").args(["--store", target.as_str(), "--load-db"]).stdin(registration).run()?;
    let profile = target.join("nix/var/nix/profiles/system");
    Command::new("nix-env").args(["--store", target.as_str(), "-p", profile.as_str(), "--set", &system]).run()?;
    std::fs::create_dir_all(target.join("etc")).map_err(Error::io(target.join("etc")))?;
    std::fs::write(target.join("etc/NIXOS"), "").map_err(Error::io(target.join("etc/NIXOS")))?;
    std::fs::remove_dir_all(&meta).map_err(Error::io(&meta))?;
    Ok(Unpacked { system, bytes_read: extracted.bytes_read, bytes_written: extracted.bytes_written })
}

/// Step 5: the ESP on /boot if the layout has one (nixos-generate-config records the mounts it
/// sees), then hardware-configuration.nix and networking.nix for the host's later rebuilds, and
/// for a fleet host that reports, the boot token its first boot reports with.
pub fn configure(plan: &Plan, target: &Utf8Path, lease: &Lease, config: &Config, boot: Option<&BootReport>, mounts: &mut Mounts) -> Result<(), Error> {
    match plan.esp() {
        Some(esp) => mounts.mount(esp.device.as_str(), &target.join("boot"), "vfat")?,
        None => {
            let boot = target.join("boot");
            std::fs::create_dir_all(&boot).map_err(Error::io(&boot))?;
        }
    }
    Command::new("nixos-generate-config").args(["--root", target.as_str()]).run()?;
    let dir = target.join("etc/nixos");
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let file = dir.join("networking.nix");
    let text = lease::networking_nix(lease, &config.custom_installer.networking);
    std::fs::write(&file, &text).map_err(Error::io(&file))?;
    say(&format!("wrote {file}"));
    if let Some(boot) = boot {
        let file = boot.write(target)?;
        say(&format!("wrote {file} (mode 0600): the token the installed system reports its first boot with"));
    }
    Ok(())
}

/// Step 6: the installed system's boot loader, by `switch-to-configuration boot` as
/// nixos-install runs it. For the UEFI layout with EFI variables reachable (efi::decide):
/// without them systemd-boot would register nothing, so it fails instead. For the BIOS and both
/// layouts GRUB is installed on `disk` by the name the system was built with
/// (customInstaller.rootDevice, baked into boot.loader.grub.device): a /dev/disk/by-id name that
/// only udev would make is made here, pointing at the disk.
pub fn bootloader(target: &Utf8Path, unpacked: &Unpacked, layout: Layout, disk: &Disk, mounts: &mut Mounts) -> Result<(), Error> {
    if layout.needs_efi_variables() {
        let efivars = Utf8Path::new(efi::EFIVARS);
        let seen = || efi::Seen {
            efivarfs_mounted: efi::efivarfs_mounted(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default(), efivars),
            variables: std::fs::read_dir(efivars).map(|entries| entries.count()).unwrap_or(0),
        };
        if efi::decide(seen()).map_err(Error::Message)? == efi::Next::MountEfivarfs {
            mounts.mount("efivarfs", efivars, "efivarfs").map_err(|e| Error::Message(efi::mount_failed(&e.to_string())))?;
            // Mounted now: Ready, or the error for an efivarfs without variables.
            if efi::decide(seen()).map_err(Error::Message)? != efi::Next::Ready {
                return Err(Error::Message(efi::mount_failed(&format!("efivarfs was mounted on {efivars} but /proc/self/mounts does not show it"))));
            }
        }
        say(&format!("EFI variables reachable in {efivars}: the boot entry can be registered"));
    } else {
        say(&format!("the {} layout's GRUB needs no EFI variables; it is installed on {}", layout.as_str(), disk.requested));
        link_stable_name(disk)?;
    }
    say(&format!("installing the boot loader of {}: {}", unpacked.system, layout.boot_loader()));
    Command::new("nixos-enter")
        .args(["--root", target.as_str(), "--", "/nix/var/nix/profiles/system/bin/switch-to-configuration", "boot"])
        .env("NIXOS_INSTALL_BOOTLOADER", "1")
        .run()?;
    Ok(())
}

/// Makes `disk.requested` (a /dev/disk/by-id/ name found from sysfs, disk::resolve) a link to the
/// disk when no udev made it: GRUB's installer opens the device by the name it was given.
fn link_stable_name(disk: &Disk) -> Result<(), Error> {
    let requested = Utf8Path::new(&disk.requested);
    if disk.requested == disk.device.as_str() || requested.exists() {
        return Ok(());
    }
    let dir = requested.parent().unwrap_or(Utf8Path::new("/dev"));
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    std::os::unix::fs::symlink(&disk.device, requested).map_err(Error::io(requested))?;
    say(&format!("linked {requested} to {} (no udev here makes it; the boot loader is installed by that name)", disk.device));
    Ok(())
}

/// The completion stamp of a fleet install: `path` below /boot (the ESP, or the root's /boot
/// directory in a BIOS layout), holding `text`.
pub struct Stamp {
    pub path: String,
    pub text: String,
}

/// Step 7: everything written out, then (for a fleet host) the completion stamp in /boot, last,
/// so that its presence means the install is whole; then the file systems unmounted. /boot is the
/// ESP when the layout has one; in a BIOS layout it is the root's /boot, which GRUB for BIOS reads
/// as well (the per-host GRUB file looks for the stamp in both places).
pub fn finish(target: &Utf8Path, stamp: Option<&Stamp>, on_esp: bool, mounts: &mut Mounts) -> Result<(), Error> {
    if let Some(stamp) = stamp {
        // SAFETY: sync(2) takes no arguments.
        unsafe { libc::sync() };
        let file = target.join("boot").join(stamp.path.trim_start_matches('/'));
        let dir = file.parent().unwrap_or(target);
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let mut out = std::fs::File::create(&file).map_err(Error::io(&file))?;
        std::io::Write::write_all(&mut out, stamp.text.as_bytes()).map_err(Error::io(&file))?;
        out.sync_all().map_err(Error::io(&file))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))?;
        if on_esp {
            say(&format!("wrote the completion stamp {} on the ESP", stamp.path));
        } else {
            say(&format!("wrote the completion stamp /boot{} on the root file system (no ESP in a BIOS layout)", stamp.path));
        }
    }
    mounts.unmount_all()
}
