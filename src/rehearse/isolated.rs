//! The rehearsal's own network: a network namespace holding one bridge,
//! the clone's tap and the prober's addresses, and no other interface. The
//! clone keeps its production addresses in it; nothing it sends has a way
//! out, so production never sees a frame of the rehearsal.
//!
//! The prober takes, in each subnet of the production addresses, the
//! source's default gateway when it lies in that subnet (so the clone's
//! routes resolve as in production), else the highest host address that
//! is not a production one.
//!
//! On failure: a namespace that cannot be made is an error naming the
//! `ip` command; whatever was made is removed when [`Isolated`] drops
//! (removing the namespace removes the bridge and taps in it).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use super::RehearseError;
use crate::cutover::network::{parse_cidr, ProdAddr};

/// The bridge inside the namespace.
pub const BRIDGE: &str = "br0";

/// The namespace of a migration's rehearsal (`hcr-` and 8 hex digits).
pub fn namespace_name(migration: &str) -> String {
    format!("hcr-{}", &blake3::hash(migration.as_bytes()).to_hex()[..8])
}

/// The prober's addresses (CIDR), one per subnet of `addrs`.
pub fn prober_addresses(addrs: &[ProdAddr], gateway: Option<&str>) -> Vec<String> {
    let mut taken: Vec<Ipv4Addr> = addrs
        .iter()
        .filter_map(|a| parse_cidr(&a.cidr).ok().map(|(ip, _)| ip))
        .collect();
    let gateway: Option<Ipv4Addr> = gateway.and_then(|g| g.parse().ok());
    let mut out: Vec<String> = Vec::new();
    let mut subnets: Vec<(u32, u8)> = Vec::new();
    for a in addrs {
        let Ok((ip, prefix)) = parse_cidr(&a.cidr) else {
            continue;
        };
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let net = u32::from(ip) & mask;
        if subnets.contains(&(net, prefix)) || prefix > 30 {
            continue;
        }
        subnets.push((net, prefix));
        let in_subnet = |c: Ipv4Addr| u32::from(c) & mask == net;
        let chosen = gateway
            .filter(|g| in_subnet(*g) && !taken.contains(g))
            .or_else(|| {
                let broadcast = net | !mask;
                (net + 1..broadcast)
                    .rev()
                    .map(Ipv4Addr::from)
                    .find(|c| !taken.contains(c))
            });
        if let Some(c) = chosen {
            taken.push(c);
            out.push(format!("{c}/{prefix}"));
        }
    }
    out
}

/// A rehearsal network that exists while this value lives.
pub struct Isolated {
    pub name: String,
    pub prober: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), RehearseError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| RehearseError::Network(format!("ip {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(RehearseError::Network(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Isolated {
    /// Make the namespace `name` with its bridge and the prober's
    /// addresses. A namespace of that name left by a killed rehearsal is
    /// removed first.
    pub fn create(name: &str, prober: Vec<String>) -> Result<Isolated, RehearseError> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name])?;
        let made = Isolated {
            name: name.to_string(),
            prober,
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        ip(&["-n", name, "link", "add", BRIDGE, "type", "bridge"])?;
        for a in &made.prober {
            ip(&["-n", name, "addr", "add", a, "dev", BRIDGE])?;
        }
        ip(&["-n", name, "link", "set", BRIDGE, "up"])?;
        Ok(made)
    }

    /// The namespace's file, for [`crate::netns::connect`].
    pub fn path(&self) -> PathBuf {
        crate::netns::path_of(&self.name)
    }

    /// Interfaces in the namespace (for the report: proof of isolation).
    pub fn interfaces(&self) -> String {
        Command::new("ip")
            .args(["-n", &self.name, "-br", "link"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(cidr: &str) -> ProdAddr {
        ProdAddr {
            iface: "eth0".into(),
            cidr: cidr.into(),
            mac: None,
        }
    }

    #[test]
    fn the_prober_takes_the_gateway_when_it_is_in_the_subnet() {
        let got = prober_addresses(&[addr("198.51.100.11/24")], Some("198.51.100.1"));
        assert_eq!(got, vec!["198.51.100.1/24"]);
    }

    #[test]
    fn without_a_gateway_the_prober_takes_the_highest_free_host_address() {
        let got = prober_addresses(
            &[addr("198.51.100.254/24"), addr("198.51.100.11/24")],
            Some("192.0.2.1"),
        );
        assert_eq!(got, vec!["198.51.100.253/24"]);
        // A gateway that is a production address is not taken.
        let got = prober_addresses(&[addr("198.51.100.1/24")], Some("198.51.100.1"));
        assert_eq!(got, vec!["198.51.100.254/24"]);
    }

    #[test]
    fn one_prober_address_per_subnet_and_none_for_host_routes() {
        let got = prober_addresses(
            &[
                addr("198.51.100.11/24"),
                addr("198.51.100.12/24"),
                addr("198.51.100.130/25"),
                addr("198.51.100.77/32"),
            ],
            None,
        );
        assert_eq!(got, vec!["198.51.100.254/24", "198.51.100.253/25"]);
    }

    #[test]
    fn namespace_names_fit_and_differ() {
        let a = namespace_name("web01");
        assert!(a.starts_with("hcr-") && a.len() == 12, "{a}");
        assert_ne!(a, namespace_name("web02"));
    }
}
