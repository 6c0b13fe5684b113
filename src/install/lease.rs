//! What the kernel's DHCP (IP-PnP) gave: the interface, address, prefix, gateway, name servers,
//! domain and host name; and the files made from it (resolv.conf, the installed networking.nix).

use crate::config::typed::Networking;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The network facts of the installer's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix_length: u8,
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub name_servers: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub host_name: Option<String>,
}

/// The interface named by `ip=` on the kernel command line (`ip=:::::eth0:dhcp:`, field 6).
pub fn pnp_interface(cmdline: &str) -> Option<String> {
    let ip = cmdline.split_whitespace().find_map(|w| w.strip_prefix("ip="))?;
    ip.split(':').nth(5).filter(|d| !d.is_empty()).map(str::to_string)
}

/// Name servers and domain from /proc/net/pnp, which IP-PnP writes in resolv.conf form.
pub fn parse_pnp(text: &str) -> (Vec<Ipv4Addr>, Option<String>) {
    let mut servers = Vec::new();
    let mut domain = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("nameserver"), Some(addr)) => {
                if let Ok(addr) = addr.parse::<Ipv4Addr>()
                    && !addr.is_unspecified()
                {
                    servers.push(addr);
                }
            }
            (Some("domain"), Some(d)) => domain = Some(d.to_string()),
            _ => {}
        }
    }
    (servers, domain)
}

/// The default gateway of `interface` from /proc/net/route (addresses in host byte order, hex).
pub fn parse_route_gateway(text: &str, interface: &str) -> Option<Ipv4Addr> {
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || f[0] != interface || f[1] != "00000000" {
            return None;
        }
        let raw = u32::from_str_radix(f[2], 16).ok()?;
        let gw = Ipv4Addr::from(raw.to_le_bytes());
        (!gw.is_unspecified()).then_some(gw)
    })
}

/// The prefix length of a netmask (255.255.255.0 is 24); `None` for a non-contiguous mask.
pub fn prefix_length(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// A host name the kernel reports, unless it is the kernel's placeholder.
pub fn host_name(raw: &str) -> Option<String> {
    let name = raw.trim();
    (!name.is_empty() && name != "(none)" && name != "localhost").then(|| name.to_string())
}

/// /etc/resolv.conf for the installer's own use.
pub fn resolv_conf(lease: &Lease) -> String {
    let mut text = String::from("# Written by nixos-pxe from the kernel's DHCP lease (/proc/net/pnp).\n");
    if let Some(domain) = &lease.domain {
        text.push_str(&format!("search {domain}\n"));
    }
    for server in &lease.name_servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    text
}

fn nix_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace("${", "\\${"))
}

/// The installed system's /etc/nixos/networking.nix: DHCP, or the lease as a static configuration of
/// `customInstaller.networking.staticInterfaceFromDHCP`.
pub fn networking_nix(lease: &Lease, networking: &Networking) -> String {
    let mut text = String::from(
        "# Written by nixos-pxe at installation, from the installer's DHCP lease\n\
         # (customInstaller.networking). Import it from configuration.nix.\n{\n",
    );
    if let Some(name) = &lease.host_name {
        text.push_str(&format!("  networking.hostName = {};\n", nix_string(name)));
    }
    match (&networking.static_interface_from_dhcp, networking.use_dhcp) {
        (Some(interface), false) => {
            text.push_str("  networking.useDHCP = false;\n");
            text.push_str(&format!(
                "  networking.interfaces.{}.ipv4.addresses = [ {{ address = \"{}\"; prefixLength = {}; }} ];\n",
                nix_string(interface),
                lease.address,
                lease.prefix_length
            ));
            if let Some(gateway) = lease.gateway {
                text.push_str(&format!("  networking.defaultGateway = \"{gateway}\";\n"));
            }
            if !lease.name_servers.is_empty() {
                let servers: Vec<String> = lease.name_servers.iter().map(|s| format!("\"{s}\"")).collect();
                text.push_str(&format!("  networking.nameservers = [ {} ];\n", servers.join(" ")));
            }
            if let Some(domain) = &lease.domain {
                text.push_str(&format!("  networking.domain = {};\n", nix_string(domain)));
            }
        }
        _ => text.push_str("  networking.useDHCP = true;\n"),
    }
    text.push_str("}\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            interface: "eth0".into(),
            address: Ipv4Addr::new(10, 42, 0, 123),
            prefix_length: 24,
            gateway: Some(Ipv4Addr::new(10, 42, 0, 1)),
            name_servers: vec![Ipv4Addr::new(10, 42, 0, 1), Ipv4Addr::new(10, 42, 0, 2)],
            domain: Some("pxe.test".into()),
            host_name: Some("web1".into()),
        }
    }

    #[test]
    fn kernel_facts_parse() {
        assert_eq!(pnp_interface("console=ttyS0 ip=:::::eth1:dhcp: root=/dev/nfs").as_deref(), Some("eth1"));
        assert_eq!(pnp_interface("ip=dhcp root=/dev/nfs"), None);
        let (servers, domain) = parse_pnp("#PROTO: DHCP\ndomain pxe.test\nnameserver 10.42.0.1\nnameserver 0.0.0.0\nbootserver 10.42.0.1\n");
        assert_eq!(servers, [Ipv4Addr::new(10, 42, 0, 1)]);
        assert_eq!(domain.as_deref(), Some("pxe.test"));
        let route = "Iface\tDestination\tGateway \tFlags\nbr0\t00000000\t01002A0A\t0003\neth0\t00000000\t01002A0A\t0003\neth0\t00002A0A\t00000000\t0001\n";
        assert_eq!(parse_route_gateway(route, "eth0"), Some(Ipv4Addr::new(10, 42, 0, 1)));
        assert_eq!(parse_route_gateway(route, "eth1"), None);
        assert_eq!(prefix_length(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_length(Ipv4Addr::new(255, 255, 0, 255)), None);
        assert_eq!(host_name("(none)\n"), None);
    }

    #[test]
    fn networking_nix_for_dhcp() {
        let nix = networking_nix(&lease(), &Networking { use_dhcp: true, static_interface_from_dhcp: None });
        assert!(nix.ends_with("{\n  networking.hostName = \"web1\";\n  networking.useDHCP = true;\n}\n"), "{nix}");
    }

    #[test]
    fn networking_nix_for_a_static_interface() {
        let nix = networking_nix(&lease(), &Networking { use_dhcp: false, static_interface_from_dhcp: Some("enp2s0".into()) });
        let expected = "{\n  networking.hostName = \"web1\";\n  networking.useDHCP = false;\n  networking.interfaces.\"enp2s0\".ipv4.addresses = [ { address = \"10.42.0.123\"; prefixLength = 24; } ];\n  networking.defaultGateway = \"10.42.0.1\";\n  networking.nameservers = [ \"10.42.0.1\" \"10.42.0.2\" ];\n  networking.domain = \"pxe.test\";\n}\n";
        assert!(nix.ends_with(expected), "{nix}");
        assert_eq!(resolv_conf(&lease()).lines().skip(1).collect::<Vec<_>>(), ["search pxe.test", "nameserver 10.42.0.1", "nameserver 10.42.0.2"]);
    }
}
