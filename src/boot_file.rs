//! Which boot file a client's firmware gets, by the architecture it names in DHCP option 93
//! (RFC 4578; IANA "Processor Architecture Types"). One table for every DHCP server the project
//! configures (ISC dhcpd, Kea, dnsmasq, `nixos-pxe serve`), so they cannot disagree.

use crate::schema::{BIOS_LOADER_FILE_NAME, LOADER_FILE_NAME};
use std::net::Ipv4Addr;

/// The GRUB platforms nixos-pxe builds an image for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// x86_64-efi: `bootx64.efi`, for UEFI PXE and UEFI HTTP boot.
    Efi,
    /// i386-pc, as a PXE network boot program (`-O i386-pc-pxe`): `bios.0`, for legacy BIOS PXE.
    Pc,
}

impl Platform {
    /// GRUB's name for it, as the module directory is named.
    pub fn grub_name(self) -> &'static str {
        match self {
            Platform::Efi => "x86_64-efi",
            Platform::Pc => "i386-pc",
        }
    }

    /// The image's file name, as DHCP hands it out (option 67).
    pub fn image_name(self) -> &'static str {
        match self {
            Platform::Efi => crate::schema::LOADER_FILE_NAME,
            Platform::Pc => crate::schema::BIOS_LOADER_FILE_NAME,
        }
    }

    /// The name of the grub.cfg copy written beside the image.
    pub fn cfg_name(self) -> &'static str {
        match self {
            Platform::Efi => "grub.cfg",
            Platform::Pc => "grub-bios.cfg",
        }
    }
}

/// The firmware kinds nixos-pxe boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// Legacy BIOS PXE (option 93 = 0, "x86 BIOS"): GRUB i386-pc-pxe, `bios.0`, over TFTP.
    Bios,
    /// x86-64 UEFI PXE (7 "x64 UEFI"; 9 is "EBC" in the registry, but x86-64 firmware of several
    /// vendors sends it, so it is treated the same): `bootx64.efi` over TFTP.
    Uefi,
    /// x86-64 UEFI HTTP boot (16 "x64 UEFI HTTP"): the same `bootx64.efi` as a URL. The firmware
    /// also sends vendor class `HTTPClient:Arch:00016:...` and takes only a reply that echoes
    /// `HTTPClient` in option 60 (EDK2's HttpBootDxe; measured with Debian's OVMF 2022.11).
    UefiHttp,
}

/// Every firmware, in the order DHCP configs list them.
pub const ALL: [Firmware; 3] = [Firmware::Uefi, Firmware::Bios, Firmware::UefiHttp];

/// The vendor class (option 60) an HTTP boot reply carries.
pub const HTTP_CLIENT_VENDOR_CLASS: &str = "HTTPClient";

impl Firmware {
    /// The option 93 values that name this firmware.
    pub fn architectures(self) -> &'static [u16] {
        match self {
            Firmware::Bios => &[0],
            Firmware::Uefi => &[7, 9],
            Firmware::UefiHttp => &[16],
        }
    }

    /// The firmware an option 93 value names, if nixos-pxe has a boot file for it.
    pub fn from_architecture(arch: u16) -> Option<Firmware> {
        ALL.into_iter().find(|f| f.architectures().contains(&arch))
    }

    /// The boot file name relative to the TFTP root (for HTTP boot: relative to the HTTP root).
    pub fn file_name(self) -> &'static str {
        match self {
            Firmware::Bios => BIOS_LOADER_FILE_NAME,
            Firmware::Uefi | Firmware::UefiHttp => LOADER_FILE_NAME,
        }
    }

    /// What DHCP option 67 says: a file name for TFTP, a URL on `server` (port 80) for HTTP boot.
    pub fn boot_file(self, server: Ipv4Addr) -> String {
        match self {
            Firmware::UefiHttp => http_url(server, 80, self.file_name()),
            Firmware::Bios | Firmware::Uefi => self.file_name().to_string(),
        }
    }

    /// A short tag for config files (dnsmasq tags, Kea class names).
    pub fn tag(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "efi-x64",
            Firmware::UefiHttp => "efi-x64-http",
        }
    }

    /// What a comment in a generated config calls it.
    pub fn description(self) -> &'static str {
        match self {
            Firmware::Bios => "legacy BIOS PXE",
            Firmware::Uefi => "x86-64 UEFI PXE",
            Firmware::UefiHttp => "x86-64 UEFI HTTP boot",
        }
    }
}

/// The URL of `file` (relative to the HTTP root) on an HTTP endpoint at `server`:`port`; HTTP's
/// own port 80 is left out, as a firmware's URL parser needs no port for it.
pub fn http_url(server: Ipv4Addr, port: u16, file: &str) -> String {
    match port {
        80 => format!("http://{server}/{file}"),
        _ => format!("http://{server}:{port}/{file}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_architecture_gets_its_file() {
        let server = Ipv4Addr::new(10, 42, 0, 1);
        let file = |arch| Firmware::from_architecture(arch).map(|f| f.boot_file(server));
        assert_eq!(file(0).as_deref(), Some("bios.0"));
        assert_eq!(file(7).as_deref(), Some("bootx64.efi"));
        assert_eq!(file(9).as_deref(), Some("bootx64.efi"));
        assert_eq!(file(16).as_deref(), Some("http://10.42.0.1/bootx64.efi"));
        assert_eq!(http_url(server, 8080, "bootx64.efi"), "http://10.42.0.1:8080/bootx64.efi");
        // IA32 UEFI, ARM64 UEFI, ARM64 HTTP: nothing nixos-pxe builds.
        for arch in [6, 11, 19] {
            assert_eq!(file(arch), None, "arch {arch}");
        }
    }
}
