//! Which network interface is the installer's, when the kernel asked DHCP on every NIC
//! (`ip=dhcp`, linuxPnPInterface = "auto"): the one whose MAC is the NIC GRUB booted from
//! (`nixos-pxe.mac=`), and it must be the one the kernel configured. The choice is pure; reading
//! the interfaces (/sys/class/net and their IPv4 addresses) is done by the caller.

use crate::config::fleet::Mac;
use camino::Utf8Path;
use std::net::Ipv4Addr;

/// A network interface as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub mac: Option<Mac>,
    /// Its IPv4 address: IP-PnP gives one to the interface whose DHCP answer it took, and takes
    /// the others down again.
    pub ipv4: Option<Ipv4Addr>,
}

impl Nic {
    fn describe(&self) -> String {
        let mac = self.mac.map_or("no MAC".to_string(), |m| format!("MAC {m}"));
        match self.ipv4 {
            Some(a) => format!("{} ({mac}, {a})", self.name),
            None => format!("{} ({mac})", self.name),
        }
    }
}

/// The interfaces the kernel configured: those with an IPv4 address (loopback aside).
fn configured(nics: &[Nic]) -> Vec<&Nic> {
    nics.iter().filter(|n| n.name != "lo" && n.ipv4.is_some()).collect()
}

/// The interface with `boot_mac`, when the kernel configured it; otherwise why not, naming both.
pub fn boot_nic<'a>(boot_mac: &Mac, nics: &'a [Nic]) -> Result<&'a Nic, String> {
    let listed = || nics.iter().filter(|n| n.name != "lo").map(Nic::describe).collect::<Vec<_>>().join(", ");
    let Some(boot) = nics.iter().find(|n| n.mac.as_ref() == Some(boot_mac)) else {
        return Err(format!(
            "no network interface has the MAC {boot_mac} of the NIC GRUB booted from (nixos-pxe.mac=); this machine has {}. \
             Is the kernel missing the driver of that NIC (nfsroot.extraKernelOptions)?",
            listed()
        ));
    };
    if boot.ipv4.is_some() {
        return Ok(boot);
    }
    let others = configured(nics);
    let Some(other) = others.first() else {
        return Err(format!(
            "{} is the NIC GRUB booted from, but the kernel configured no interface (none has an IPv4 address); interfaces: {}",
            boot.describe(),
            listed()
        ));
    };
    Err(format!(
        "the kernel configured {}, but GRUB booted from {}, which the kernel did not configure. With ip=dhcp \
         (nfsroot.bootLoader.linuxPnPInterface = \"auto\") the kernel asks DHCP on every NIC and keeps the first answer: \
         this machine has NICs on two networks with DHCP servers, and {}'s answered first. The installer stops here rather \
         than install over a network other than the boot server's. Leave only the boot network's DHCP server answering \
         this machine (or disconnect the other NIC), then boot it again.",
        other.describe(),
        boot.describe(),
        other.name
    ))
}

/// The one configured interface when no MAC says which (`ip=dhcp` without `nixos-pxe.mac=`).
pub fn only_configured(nics: &[Nic]) -> Result<&Nic, String> {
    match configured(nics).as_slice() {
        [one] => Ok(one),
        [] => Err("the kernel configured no network interface (none has an IPv4 address)".into()),
        many => Err(format!(
            "the kernel configured several interfaces ({}) and the command line does not say which is the boot NIC (no nixos-pxe.mac=)",
            many.iter().map(|n| n.describe()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The interfaces in `sys_class_net` (/sys/class/net), by name, each with its MAC and the IPv4
/// address `address_of` finds for it.
pub fn read(sys_class_net: &Utf8Path, address_of: impl Fn(&str) -> Option<Ipv4Addr>) -> Vec<Nic> {
    let mut names: Vec<String> = std::fs::read_dir(sys_class_net)
        .map(|entries| entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let mac = std::fs::read_to_string(sys_class_net.join(&name).join("address")).ok().and_then(|t| t.trim().parse::<Mac>().ok());
            let ipv4 = address_of(&name);
            Nic { name, mac, ipv4 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str, mac: &str, ipv4: Option<&str>) -> Nic {
        Nic { name: name.into(), mac: mac.parse().ok(), ipv4: ipv4.map(|a| a.parse().expect("address")) }
    }

    fn mac(s: &str) -> Mac {
        s.parse().expect("mac")
    }

    #[test]
    fn the_boot_nic_is_found_by_its_mac_whatever_its_number() {
        let nics = [nic("lo", "00:00:00:00:00:00", Some("127.0.0.1")), nic("eth0", "52:54:00:00:00:d0", None), nic("eth1", "52:54:00:00:00:a1", Some("10.42.0.23"))];
        assert_eq!(boot_nic(&mac("52:54:00:00:00:a1"), &nics).map(|n| n.name.as_str()), Ok("eth1"));
        assert_eq!(only_configured(&nics).map(|n| n.name.as_str()), Ok("eth1"));
    }

    #[test]
    fn another_nic_configured_fails_naming_both_and_why() {
        let nics = [nic("eth0", "52:54:00:00:00:d0", Some("192.168.7.40")), nic("eth1", "52:54:00:00:00:a1", None)];
        let err = boot_nic(&mac("52:54:00:00:00:a1"), &nics).unwrap_err();
        assert_eq!(
            err,
            "the kernel configured eth0 (MAC 52:54:00:00:00:d0, 192.168.7.40), but GRUB booted from eth1 (MAC 52:54:00:00:00:a1), \
             which the kernel did not configure. With ip=dhcp (nfsroot.bootLoader.linuxPnPInterface = \"auto\") the kernel asks DHCP \
             on every NIC and keeps the first answer: this machine has NICs on two networks with DHCP servers, and eth0's answered \
             first. The installer stops here rather than install over a network other than the boot server's. Leave only the boot \
             network's DHCP server answering this machine (or disconnect the other NIC), then boot it again."
        );
    }

    #[test]
    fn a_mac_no_interface_has_or_nothing_configured_is_said() {
        let nics = [nic("lo", "00:00:00:00:00:00", Some("127.0.0.1")), nic("eth0", "52:54:00:00:00:d0", Some("10.42.0.5"))];
        assert_eq!(
            boot_nic(&mac("52:54:00:00:00:a1"), &nics).unwrap_err(),
            "no network interface has the MAC 52:54:00:00:00:a1 of the NIC GRUB booted from (nixos-pxe.mac=); this machine has \
             eth0 (MAC 52:54:00:00:00:d0, 10.42.0.5). Is the kernel missing the driver of that NIC (nfsroot.extraKernelOptions)?"
        );
        let down = [nic("eth0", "52:54:00:00:00:a1", None)];
        assert!(boot_nic(&mac("52:54:00:00:00:a1"), &down).unwrap_err().contains("the kernel configured no interface"));
        assert!(only_configured(&down).is_err());
        let two = [nic("eth0", "52:54:00:00:00:a1", Some("10.0.0.2")), nic("eth1", "52:54:00:00:00:a2", Some("10.0.1.2"))];
        assert!(only_configured(&two).unwrap_err().starts_with("the kernel configured several interfaces (eth0 (MAC 52:54:00:00:00:a1, 10.0.0.2), eth1"));
    }

    #[test]
    fn interfaces_are_read_from_sysfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Utf8Path::from_path(dir.path()).expect("utf8");
        for (name, address) in [("lo", "00:00:00:00:00:00\n"), ("eth1", "52:54:00:00:00:A1\n"), ("eth0", "52:54:00:00:00:d0\n")] {
            std::fs::create_dir_all(root.join(name)).expect("mkdir");
            std::fs::write(root.join(name).join("address"), address).expect("write");
        }
        let nics = read(root, |name| (name == "eth1").then(|| Ipv4Addr::new(10, 42, 0, 23)));
        assert_eq!(nics, [nic("eth0", "52:54:00:00:00:d0", None), nic("eth1", "52:54:00:00:00:a1", Some("10.42.0.23")), Nic { name: "lo".into(), mac: None, ipv4: None }]);
    }
}
