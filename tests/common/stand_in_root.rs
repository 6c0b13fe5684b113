//! What the end-to-end installs put into their stand-in NFS roots: busybox, nixos-pxe as /init,
//! Debian's disk tools (with their shared libraries) and stand-ins for the NixOS-only commands the
//! installer runs, which cannot exist here. Shared by tests/e2e_install.rs and tests/e2e_fleet.rs.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Copies `binary` into the NFS root at `dest` with the shared libraries it needs (found by ldd).
pub fn install_binary(nfsroot: &Path, binary: &Path, dest: &str) {
    let target = nfsroot.join(dest.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    std::fs::copy(binary, &target).unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));
    for line in super::run(Command::new("ldd").arg(binary)).lines() {
        let lib = match line.split("=>").nth(1) {
            Some(rest) => rest.split_whitespace().next().unwrap_or_default().to_string(),
            None => line.split_whitespace().next().unwrap_or_default().to_string(),
        };
        if lib.starts_with('/') {
            let dest = nfsroot.join(lib.trim_start_matches('/'));
            if !dest.exists() {
                std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
                std::fs::copy(&lib, &dest).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
            }
        }
    }
}

pub fn write_exec(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Stand-in for nixos-enter --root ROOT -- /nix/var/nix/profiles/system/bin/switch-to-configuration
/// boot: records its call on the target disk and runs the installed system's own
/// switch-to-configuration (below, one per boot loader), with ROOT in NIXOS_PXE_STAND_IN_ROOT.
/// NixOS's would chroot into ROOT; the stand-in system has no programs, so its script runs here,
/// on the NFS root, with the tools the installer has, against ROOT's files and the real disk.
const NIXOS_ENTER_STAND_IN: &str = r#"#!/bin/sh
# stand-in for nixos-enter --root ROOT -- COMMAND
root=$2
echo "nixos-enter $* NIXOS_INSTALL_BOOTLOADER=$NIXOS_INSTALL_BOOTLOADER" >> "$root/stand-in.log"
shift 3
# The profile links to the system by its absolute store path, which is below ROOT here.
system=$(readlink "$root/nix/var/nix/profiles/system")
command=$(echo "$1" | sed "s|^/nix/var/nix/profiles/system|$system|")
shift
NIXOS_PXE_STAND_IN_ROOT=$root exec "$root$command" "$@"
"#;

/// Makes `dir/nfsroot` with what every end-to-end NFS root has: the directories init and the
/// installer use, busybox (the shell for stand-ins and the rescue shell), `nixos_pxe` as /init and
/// on PATH (the Nix closure puts it in /nix/store), the disk tools the installer runs, from
/// Debian, and the stand-ins for the NixOS-only commands, which record on the target disk that
/// they ran. Returns the NFS root.
pub fn base_nfs_root(dir: &Path, nixos_pxe: &Path) -> PathBuf {
    let nfsroot = dir.join("nfsroot");
    for d in ["dev", "proc", "sys", "run", "tmp", "mnt", "etc", "root", "bin", "nixos-pxe/tools/bin", "nixos-pxe/tools/sbin"] {
        std::fs::create_dir_all(nfsroot.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", nfsroot.join("bin/busybox")).expect("copy busybox");
    for applet in super::run(Command::new("/bin/busybox").arg("--list")).lines() {
        let link = nfsroot.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            symlink("busybox", link).expect("symlink");
        }
    }
    install_binary(&nfsroot, nixos_pxe, "/nixos-pxe/tools/bin/nixos-pxe");
    symlink("/nixos-pxe/tools/bin/nixos-pxe", nfsroot.join("init")).expect("symlink init");
    for (src, name) in [("/usr/sbin/sfdisk", "sfdisk"), ("/usr/sbin/mkfs.fat", "mkfs.vfat"), ("/usr/sbin/mke2fs", "mkfs.ext4"), ("/usr/sbin/mkswap", "mkswap")] {
        install_binary(&nfsroot, Path::new(src), &format!("/nixos-pxe/tools/sbin/{name}"));
    }
    let bin = nfsroot.join("nixos-pxe/tools/bin");
    write_exec(&bin.join("nix-store"), "#!/bin/sh\n# stand-in for nix-store --store ROOT --load-db\necho \"nix-store $*\" >> \"$2/stand-in.log\"\ncat > \"$2/stand-in.registration\"\n");
    write_exec(&bin.join("nix-env"), "#!/bin/sh\n# stand-in for nix-env --store ROOT -p PROFILE --set SYSTEM\necho \"nix-env $*\" >> \"$2/stand-in.log\"\nmkdir -p \"$(dirname \"$4\")\"\nln -sfn \"$6\" \"$4\"\n");
    write_exec(&bin.join("nixos-generate-config"), "#!/bin/sh\n# stand-in for nixos-generate-config --root ROOT\necho \"nixos-generate-config $*\" >> \"$2/stand-in.log\"\nmkdir -p \"$2/etc/nixos\"\ngrep \" $2\" /proc/mounts > \"$2/etc/nixos/hardware-configuration.nix\"\n");
    write_exec(&bin.join("nixos-enter"), NIXOS_ENTER_STAND_IN);
    nfsroot
}
