//! What the end-to-end installs put into their stand-in NFS roots: the binaries they copy in
//! (with their shared libraries) and the stand-in for NixOS's `nixos-enter`, which cannot exist
//! here. Shared by tests/e2e_install.rs and tests/e2e_fleet.rs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
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
pub const NIXOS_ENTER_STAND_IN: &str = r#"#!/bin/sh
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
