//! The source's production addresses, read off the inventory: what a
//! cutover moves to the clone and a rehearsal gives it in its own network.
//! Pure; nothing here fails.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::Network;

/// One production address of the source, on its interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProdAddr {
    pub iface: String,
    /// CIDR, e.g. `198.51.100.11/24`.
    pub cidr: String,
    /// The interface's MAC on the source (who should answer ARP now).
    pub mac: Option<String>,
}

impl ProdAddr {
    pub fn ip(&self) -> &str {
        self.cidr.split('/').next().unwrap_or(&self.cidr)
    }
}

/// The source's production IPv4 addresses (all of them but loopback), and
/// the IPv6 ones that stay where they are.
pub fn production(network: &Network) -> (Vec<ProdAddr>, Vec<String>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for i in &network.interfaces {
        if i.name == "lo" {
            continue;
        }
        for a in &i.addresses {
            let ip = a.split('/').next().unwrap_or(a);
            match ip.parse::<Ipv4Addr>() {
                Ok(ip) if !ip.is_loopback() && !ip.is_link_local() => v4.push(ProdAddr {
                    iface: i.name.clone(),
                    cidr: a.clone(),
                    mac: i.mac.clone(),
                }),
                Ok(_) => {}
                Err(_) if !ip.to_ascii_lowercase().starts_with("fe80") => {
                    v6.push(format!("{a} on {}", i.name))
                }
                Err(_) => {}
            }
        }
    }
    (v4, v6)
}
