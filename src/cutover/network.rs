//! The production addresses and the shell commands that move them: off the
//! source (onto its fallback address), back onto it on rollback, and the
//! ARP probes from the target's segment. Pure functions over text; the
//! state machine runs them.
//!
//! Only IPv4 moves: ARP is what decides who answers for an address. IPv6
//! addresses are reported and left alone.

use std::net::Ipv4Addr;

pub use crate::probe::addresses::{production, ProdAddr};

/// An address given on the command line (`ADDR/PREFIX`), checked.
pub fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: give ADDRESS/PREFIX, e.g. 198.51.100.61/24"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{text:?}: {addr:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| format!("{text:?}: the prefix must be 1-32"))?;
    if addr.is_loopback() || addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
        return Err(format!("{text:?} cannot be a host's address"));
    }
    Ok((addr, prefix))
}

/// `ip -o -4 addr show` output: (interface, CIDR) pairs.
pub fn held(ip_addr_output: &str) -> Vec<(String, String)> {
    ip_addr_output
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _index = f.next()?;
            let iface = f.next()?.trim_end_matches(':').to_string();
            let family = f.next()?;
            let cidr = f.next()?.to_string();
            (family == "inet").then_some((iface, cidr))
        })
        .collect()
}

/// The command that lists the source's IPv4 addresses.
pub const LIST_ADDRESSES: &str = "ip -o -4 addr show";
/// The command that saves the source's routes (restored on rollback).
pub const LIST_ROUTES: &str = "ip -4 route show";

/// Put the fallback address on, keeping secondaries when the primary
/// goes (Linux removes a subnet's secondary addresses with its primary
/// unless `promote_secondaries` is set).
pub fn add_fallback(fallback: &str, iface: &str) -> String {
    format!(
        "echo 1 > /proc/sys/net/ipv4/conf/{iface}/promote_secondaries; \
         ip addr show dev {iface} | grep -q ' inet {fallback} ' || ip addr add {fallback} dev {iface}"
    )
}

/// Take the production addresses off the source.
pub fn release(addrs: &[ProdAddr]) -> String {
    let mut cmd = String::from("set -e");
    for a in addrs {
        cmd.push_str(&format!(
            "; if ip -o -4 addr show dev {i} | grep -q ' inet {c} '; then ip addr del {c} dev {i}; fi",
            i = a.iface,
            c = a.cidr
        ));
    }
    cmd
}

/// Give the source its addresses and routes back, and announce them when
/// it has an arping. Each step is best effort; the caller checks the
/// result by connecting again.
pub fn restore(addrs: &[ProdAddr], routes: &str) -> String {
    let mut cmd = String::new();
    for a in addrs {
        cmd.push_str(&format!(
            "ip -o -4 addr show dev {i} | grep -q ' inet {c} ' || ip addr add {c} dev {i}; ",
            i = a.iface,
            c = a.cidr
        ));
    }
    for r in routes.lines().map(str::trim).filter(|r| !r.is_empty()) {
        if r.chars()
            .all(|c| c.is_ascii_alphanumeric() || " ./:-_".contains(c))
        {
            cmd.push_str(&format!("ip route replace {r} 2>/dev/null; "));
        }
    }
    cmd.push_str(&announce(addrs));
    cmd.push_str("true");
    cmd
}

/// Gratuitous ARP for each address, where the machine has an arping
/// (best effort; each command ends in `; `).
pub fn announce(addrs: &[ProdAddr]) -> String {
    addrs
        .iter()
        .map(|a| {
            format!(
                "command -v arping >/dev/null 2>&1 && arping -U -c 2 -I {} {} >/dev/null 2>&1; ",
                a.iface,
                a.ip()
            )
        })
        .collect()
}

/// Remove the fallback address (once the production ones are back).
pub fn remove_fallback(fallback: &str, iface: &str) -> String {
    format!(
        "if ip -o -4 addr show dev {iface} | grep -q ' inet {fallback} '; then ip addr del {fallback} dev {iface}; fi"
    )
}

/// Drop this machine's neighbour entry for `ip` (best effort: it needs
/// root and only matters on the same segment). After a rollback the
/// entry may still point at the clone's MAC; without it the next packet
/// asks again and the source answers.
pub fn forget_neighbour(ip: &str) {
    let _ = std::process::Command::new("ip")
        .args(["neigh", "flush", "to", ip])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The interface of the machine this runs on that leads to `ip`.
fn iface_towards(ip: &str) -> String {
    format!("$(ip -o -4 route get {ip} | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p')")
}

/// Duplicate address detection (RFC 5227 probes, sender 0.0.0.0), as
/// iputils' `arping -D` does: prints replies, exits 0 when nobody answers.
pub fn probe(ip: &str) -> String {
    format!("arping -D -c 3 -w 4 -I {} {ip}", iface_towards(ip))
}

/// Who answers ARP for `ip` right now (a plain request).
pub fn who_has(ip: &str) -> String {
    format!("arping -c 2 -w 3 -I {} {ip}; true", iface_towards(ip))
}

/// iputils arping's replies: the distinct MACs (lowercase) that answered.
pub fn repliers(arping_output: &str) -> Vec<String> {
    let mut macs: Vec<String> = Vec::new();
    for line in arping_output.lines() {
        if !line.contains("reply from") {
            continue;
        }
        let Some(mac) = line
            .split('[')
            .nth(1)
            .and_then(|r| r.split(']').next())
            .map(|m| m.to_ascii_lowercase())
        else {
            continue;
        };
        if !macs.contains(&mac) {
            macs.push(mac);
        }
    }
    macs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Dns, Interface, Network};

    fn net() -> Network {
        Network {
            interfaces: vec![
                Interface {
                    name: "lo".into(),
                    mac: None,
                    mtu: None,
                    up: true,
                    addresses: vec!["127.0.0.1/8".into(), "::1/128".into()],
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("52:54:00:12:34:56".into()),
                    mtu: Some(1500),
                    up: true,
                    addresses: vec![
                        "198.51.100.11/24".into(),
                        "fe80::1/64".into(),
                        "2001:db8::11/64".into(),
                    ],
                },
            ],
            routes: Vec::new(),
            dns: Dns::default(),
            config_styles: Vec::new(),
            config_files: Vec::new(),
        }
    }

    #[test]
    fn production_addresses_are_the_ipv4_ones_off_loopback() {
        let (v4, v6) = production(&net());
        assert_eq!(
            v4,
            vec![ProdAddr {
                iface: "eth0".into(),
                cidr: "198.51.100.11/24".into(),
                mac: Some("52:54:00:12:34:56".into()),
            }]
        );
        assert_eq!(v4[0].ip(), "198.51.100.11");
        assert_eq!(v6, vec!["2001:db8::11/64 on eth0"]);
    }

    #[test]
    fn held_addresses_come_from_ip_o() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                   2: eth0    inet 198.51.100.11/24 brd 198.51.100.255 scope global eth0\\       valid_lft forever\n\
                   2: eth0    inet 198.51.100.61/24 scope global secondary eth0\n";
        assert_eq!(
            held(out),
            vec![
                ("lo".to_string(), "127.0.0.1/8".to_string()),
                ("eth0".to_string(), "198.51.100.11/24".to_string()),
                ("eth0".to_string(), "198.51.100.61/24".to_string()),
            ]
        );
    }

    #[test]
    fn cidrs_are_checked() {
        assert!(parse_cidr("198.51.100.61/24").is_ok());
        for bad in [
            "198.51.100.61",
            "198.51.100.61/33",
            "x/24",
            "127.0.0.1/8",
            "0.0.0.0/0",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arping_replies_are_read() {
        let out = "ARPING 198.51.100.11 from 0.0.0.0 eth0\n\
                   Unicast reply from 198.51.100.11 [52:54:00:12:34:56]  0.712ms\n\
                   Unicast reply from 198.51.100.11 [52:54:00:12:34:56]  0.601ms\n\
                   Unicast reply from 198.51.100.11 [02:AA:00:00:00:01]  0.9ms\n\
                   Sent 3 probes (3 broadcast(s))\nReceived 3 response(s)\n";
        assert_eq!(
            repliers(out),
            vec![
                "52:54:00:12:34:56".to_string(),
                "02:aa:00:00:00:01".to_string()
            ]
        );
        assert!(repliers("Sent 3 probes\nReceived 0 response(s)\n").is_empty());
    }

    #[test]
    fn release_and_restore_are_idempotent_commands() {
        let (v4, _) = production(&net());
        let rel = release(&v4);
        assert!(
            rel.contains("ip addr del 198.51.100.11/24 dev eth0"),
            "{rel}"
        );
        assert!(rel.contains("grep -q ' inet 198.51.100.11/24 '"), "{rel}");
        let routes = "default via 198.51.100.1 dev eth0\n198.51.100.0/24 dev eth0 proto kernel scope link src 198.51.100.11\nbad; rm -rf /\n";
        let back = restore(&v4, routes);
        assert!(
            back.contains("|| ip addr add 198.51.100.11/24 dev eth0"),
            "{back}"
        );
        assert!(
            back.contains("ip route replace default via 198.51.100.1 dev eth0"),
            "{back}"
        );
        assert!(!back.contains("rm -rf"), "{back}");
        assert!(add_fallback("198.51.100.61/24", "eth0").contains("promote_secondaries"));
    }
}
