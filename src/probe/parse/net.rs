//! Network state: `ip -o link/addr`, `ip route` (iproute2), with net-tools
//! `ifconfig -a` / `route -n` as the fallback for old or minimal systems
//! (both the 1.60 "Link encap" shape and the 2.x "flags=" shape), DNS from
//! resolv.conf, and the config style from which files exist.

use crate::probe::inventory::{Dns, Interface, NetConfigStyle, Route};

fn base_name(name: &str) -> &str {
    // "eth0@if5" (veth peer) -> "eth0"; "eth0:1" is an alias of eth0.
    let name = name.split('@').next().unwrap_or(name);
    name.split(':').next().unwrap_or(name)
}

fn interface<'a>(list: &'a mut Vec<Interface>, name: &str) -> &'a mut Interface {
    let idx = match list.iter().position(|i| i.name == name) {
        Some(idx) => idx,
        None => {
            list.push(Interface {
                name: name.to_string(),
                mac: None,
                mtu: None,
                up: false,
                addresses: vec![],
            });
            list.len() - 1
        }
    };
    &mut list[idx]
}

/// `ip -o link show` and `ip -o addr show` together.
pub fn parse_ip(link: &str, addr: &str) -> Vec<Interface> {
    let mut list = Vec::new();
    for line in link.lines() {
        let mut parts = line.splitn(3, ": ");
        let (Some(_idx), Some(name), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let iface = interface(&mut list, base_name(name));
        let words: Vec<&str> = rest.split_whitespace().collect();
        let flags = words.first().copied().unwrap_or("");
        iface.up = flags.trim_matches(['<', '>']).split(',').any(|f| f == "UP");
        iface.mtu = words
            .windows(2)
            .find(|w| w[0] == "mtu")
            .and_then(|w| w[1].parse().ok());
        iface.mac = words
            .windows(2)
            .find(|w| w[0].starts_with("link/") && w[0] != "link/loopback" && w[0] != "link/none")
            .map(|w| w[1].to_ascii_lowercase());
    }
    for line in addr.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 4 || !(words[2] == "inet" || words[2] == "inet6") {
            continue;
        }
        let iface = interface(&mut list, base_name(words[1].trim_end_matches(':')));
        let cidr = words[3].to_string();
        if !iface.addresses.contains(&cidr) {
            iface.addresses.push(cidr);
        }
    }
    list
}

/// Prefix length of a dotted netmask ("255.255.255.0" -> 24).
pub fn netmask_prefix(mask: &str) -> Option<u32> {
    let ip: std::net::Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(ip);
    (bits.leading_ones() + bits.trailing_zeros() == 32).then(|| bits.leading_ones())
}

/// `ifconfig -a`, net-tools 1.60 ("Link encap", "inet addr:") or 2.x ("flags=", "inet A netmask M").
pub fn parse_ifconfig(text: &str) -> Vec<Interface> {
    let mut list: Vec<Interface> = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            let raw = line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches(':');
            let name = base_name(raw).to_string();
            let iface = interface(&mut list, &name);
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(w) = words.windows(2).find(|w| w[0] == "HWaddr") {
                iface.mac = Some(w[1].to_ascii_lowercase());
            }
            if let Some(w) = words.windows(2).find(|w| w[0] == "mtu") {
                iface.mtu = w[1].parse().ok();
            }
            if line.contains("flags=") {
                iface.up = line.contains("<UP") || line.contains(",UP");
            }
            current = Some(name);
            continue;
        }
        let Some(name) = current.clone() else {
            continue;
        };
        let iface = interface(&mut list, &name);
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("inet") => {
                let (addr, mask) =
                    if let Some(a) = words.get(1).and_then(|w| w.strip_prefix("addr:")) {
                        (a, words.iter().find_map(|w| w.strip_prefix("Mask:")))
                    } else {
                        (
                            words.get(1).copied().unwrap_or(""),
                            words.windows(2).find(|w| w[0] == "netmask").map(|w| w[1]),
                        )
                    };
                if let Some(prefix) = mask.and_then(netmask_prefix) {
                    iface.addresses.push(format!("{addr}/{prefix}"));
                }
            }
            Some("inet6") => {
                if let Some(a) = words.get(2).filter(|_| words.get(1) == Some(&"addr:")) {
                    iface.addresses.push(a.to_string());
                } else if let (Some(a), Some(p)) =
                    (words.get(1), words.windows(2).find(|w| w[0] == "prefixlen"))
                {
                    iface.addresses.push(format!("{a}/{}", p[1]));
                }
            }
            Some("ether") => iface.mac = words.get(1).map(|m| m.to_ascii_lowercase()),
            Some(w) if w == "UP" || w.starts_with("UP ") => {
                iface.up = true;
                if let Some(m) = words.iter().find_map(|w| w.strip_prefix("MTU:")) {
                    iface.mtu = m.parse().ok();
                }
            }
            Some(_) => {
                if let Some(m) = words.iter().find_map(|w| w.strip_prefix("MTU:")) {
                    iface.mtu = m.parse().ok();
                }
            }
            None => {}
        }
    }
    list
}

/// `ip route show` (IPv4 main table).
pub fn parse_ip_route(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let destination = (*words.first()?).to_string();
            let after = |key: &str| {
                words
                    .windows(2)
                    .find(|w| w[0] == key)
                    .map(|w| w[1].to_string())
            };
            Some(Route {
                destination,
                gateway: after("via"),
                device: after("dev"),
            })
        })
        .collect()
}

/// `route -n` (net-tools).
pub fn parse_route_n(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() < 8 || w[0] == "Destination" {
                return None;
            }
            let prefix = netmask_prefix(w[2])?;
            let destination = if w[0] == "0.0.0.0" && prefix == 0 {
                "default".into()
            } else {
                format!("{}/{prefix}", w[0])
            };
            let gateway = (w[1] != "0.0.0.0").then(|| w[1].to_string());
            Some(Route {
                destination,
                gateway,
                device: Some(w[7].to_string()),
            })
        })
        .collect()
}

pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => dns.search = words.map(str::to_string).collect(),
            _ => {}
        }
    }
    dns
}

/// Config styles and their files, from the list of paths that exist.
pub fn config_styles(present: &[&str]) -> (Vec<NetConfigStyle>, Vec<String>) {
    let rules: &[(&str, NetConfigStyle)] = &[
        ("/etc/netplan/", NetConfigStyle::Netplan),
        (
            "/etc/NetworkManager/system-connections/",
            NetConfigStyle::NetworkManager,
        ),
        ("/etc/systemd/network/", NetConfigStyle::Networkd),
        (
            "/etc/sysconfig/network-scripts/ifcfg-",
            NetConfigStyle::Ifcfg,
        ),
        ("/etc/sysconfig/network/ifcfg-", NetConfigStyle::Ifcfg),
        ("/etc/network/interfaces", NetConfigStyle::Ifupdown),
    ];
    let mut styles = Vec::new();
    let mut files = Vec::new();
    for (prefix, style) in rules {
        for path in present.iter().filter(|p| p.starts_with(prefix)) {
            if !styles.contains(style) {
                styles.push(*style);
            }
            files.push(path.to_string());
        }
    }
    if let Some(rules) = present
        .iter()
        .find(|p| p.ends_with("70-persistent-net.rules"))
    {
        files.push(rules.to_string());
    }
    (styles, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iproute2_one_line_output_with_veth_suffix() {
        let link = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n\
2: eth0@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 02:48:43:00:00:11 brd ff:ff:ff:ff:ff:ff link-netns hc-lan\n";
        let addr = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
2: eth0    inet 198.51.100.11/24 brd 198.51.100.255 scope global eth0\\       valid_lft forever preferred_lft forever\n\
2: eth0    inet 198.51.100.21/24 scope global secondary eth0:1\\       valid_lft forever preferred_lft forever\n\
2: eth0    inet6 fe80::48:43ff:fe00:11/64 scope link \\       valid_lft forever preferred_lft forever\n";
        let ifs = parse_ip(link, addr);
        assert_eq!(ifs.len(), 2);
        let eth0 = &ifs[1];
        assert_eq!(eth0.name, "eth0");
        assert_eq!(eth0.mac.as_deref(), Some("02:48:43:00:00:11"));
        assert_eq!(eth0.mtu, Some(1500));
        assert!(eth0.up);
        assert_eq!(
            eth0.addresses,
            vec![
                "198.51.100.11/24",
                "198.51.100.21/24",
                "fe80::48:43ff:fe00:11/64"
            ]
        );
        assert_eq!(ifs[0].mac, None);
    }

    #[test]
    fn nettools_160_ifconfig_with_alias_and_down_interface() {
        let ifs = parse_ifconfig(fixture!("nettools/ifconfig_old"));
        let names: Vec<&str> = ifs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, vec!["eth0", "eth1", "lo"]);
        assert_eq!(ifs[0].mac.as_deref(), Some("00:16:3e:2a:7c:01"));
        assert_eq!(
            ifs[0].addresses,
            vec![
                "198.51.100.10/24",
                "fe80::216:3eff:fe2a:7c01/64",
                "198.51.100.20/25"
            ]
        );
        assert!(ifs[0].up);
        assert!(!ifs[1].up);
        assert_eq!(ifs[1].mtu, Some(1500));
        assert_eq!(ifs[2].mtu, Some(16436));
    }

    #[test]
    fn nettools_2x_ifconfig() {
        let ifs = parse_ifconfig(fixture!("nettools/ifconfig_new"));
        assert_eq!(ifs[0].name, "eth0");
        assert_eq!(ifs[0].mac.as_deref(), Some("02:48:43:00:00:11"));
        assert_eq!(
            ifs[0].addresses,
            vec!["198.51.100.11/24", "fe80::48:43ff:fe00:11/64"]
        );
        assert!(ifs[0].up);
        assert_eq!(ifs[1].mtu, Some(65536));
    }

    #[test]
    fn routes_from_iproute2_and_route_n_agree() {
        let ip = parse_ip_route("default via 198.51.100.1 dev eth0 \n198.51.100.0/24 dev eth0 proto kernel scope link src 198.51.100.11 \n");
        let legacy = parse_route_n(fixture!("nettools/route_n"));
        assert_eq!(
            ip[0],
            Route {
                destination: "default".into(),
                gateway: Some("198.51.100.1".into()),
                device: Some("eth0".into())
            }
        );
        assert!(legacy.contains(&ip[0]));
        assert!(legacy.contains(&Route {
            destination: "198.51.100.0/24".into(),
            gateway: None,
            device: Some("eth0".into())
        }));
    }

    #[test]
    fn netmask_prefix_rejects_non_contiguous_masks() {
        assert_eq!(netmask_prefix("255.255.255.128"), Some(25));
        assert_eq!(netmask_prefix("0.0.0.0"), Some(0));
        assert_eq!(netmask_prefix("255.0.255.0"), None);
    }

    #[test]
    fn resolv_conf_and_config_styles() {
        let dns = parse_resolv_conf("# generated\nsearch example.org lab\nnameserver 198.51.100.1\nnameserver 198.51.100.2\n");
        assert_eq!(dns.nameservers, vec!["198.51.100.1", "198.51.100.2"]);
        assert_eq!(dns.search, vec!["example.org", "lab"]);
        let (styles, files) = config_styles(&[
            "/etc/network/interfaces",
            "/etc/sysconfig/network-scripts/ifcfg-eth0",
            "/etc/udev/rules.d/70-persistent-net.rules",
        ]);
        assert_eq!(
            styles,
            vec![NetConfigStyle::Ifcfg, NetConfigStyle::Ifupdown]
        );
        assert_eq!(files.len(), 3);
    }
}
