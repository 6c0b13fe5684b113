#!/usr/bin/env bash
# The main job on the example configuration, without Nix: checks examples/seed/installer.nix,
# builds the boot loaders with Debian's GRUB (bootx64.efi for UEFI, bios.0 for legacy BIOS PXE), renders the server configs and the kernel config
# fragment. What `nix build .#bootLoader` does with nixpkgs' GRUB, done here with Debian's.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${CONFIG:-examples/seed/installer.nix}
out=${1:-out}

bash dev/install-deps.sh example
cargo build --release --locked
pxe=target/release/nixos-pxe

"$pxe" check --config "$config"
"$pxe" mk-bootloader --config "$config" --grub-lib /usr/lib/grub/x86_64-efi --grub-bios-lib /usr/lib/grub/i386-pc --out "$out/bootLoader"
"$pxe" render --config "$config" --out "$out/server"
"$pxe" kernel-config --config "$config" > "$out/kernel-fragment.config"

echo
echo "Boot loaders (copy bootx64.efi and bios.0 to the TFTP root):"
ls -l "$out/bootLoader"
echo "Server configurations (dhcpd.conf or kea-dhcp4.json or dnsmasq.conf; exports or ganesha.conf):"
ls -l "$out/server"
echo "Kernel command line: $(cat "$out/server/cmdline")"
