//! The lab network: namespace `hc-lan` with bridge `br0`, and one namespace
//! per host joined to it by a veth. Only 198.51.100.0/24, no routes out.
use crate::sh;
use anyhow::{Context, Result};
use std::path::Path;

pub const LAN_NS: &str = "hc-lan";
pub const BRIDGE: &str = "br0";

/// One host on the lab LAN.
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: &'static str,
    /// Name of the bridge-side veth (`v-<short>`).
    pub port: &'static str,
    pub ip: &'static str,
    pub mac: &'static str,
}

pub fn exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Delete a namespace if it exists.
pub fn delete(ns: &str) -> Result<()> {
    if exists(ns) {
        sh::run("ip", &["netns", "del", ns])
            .with_context(|| format!("deleting network namespace {ns}"))?;
    }
    Ok(())
}

fn add(ns: &str) -> Result<()> {
    sh::run("ip", &["netns", "add", ns])?;
    sh::run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Create `hc-lan` with its bridge.
pub fn create_lan() -> Result<()> {
    add(LAN_NS)?;
    sh::run(
        "ip",
        &[
            "-n",
            LAN_NS,
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ],
    )?;
    sh::run("ip", &["-n", LAN_NS, "link", "set", BRIDGE, "up"])?;
    Ok(())
}

/// Create a host namespace and plug it into the bridge.
pub fn create_host(h: &Host) -> Result<()> {
    add(h.ns)?;
    sh::run(
        "ip",
        &[
            "link", "add", "eth0", "netns", h.ns, "type", "veth", "peer", "name", h.port, "netns",
            LAN_NS,
        ],
    )
    .with_context(|| format!("creating veth for {}", h.ns))?;
    sh::run("ip", &["-n", h.ns, "link", "set", "eth0", "address", h.mac])?;
    sh::run(
        "ip",
        &[
            "-n",
            h.ns,
            "addr",
            "add",
            &format!("{}/24", h.ip),
            "dev",
            "eth0",
        ],
    )?;
    sh::run("ip", &["-n", h.ns, "link", "set", "eth0", "up"])?;
    sh::run(
        "ip",
        &["-n", LAN_NS, "link", "set", h.port, "master", BRIDGE],
    )?;
    sh::run("ip", &["-n", LAN_NS, "link", "set", h.port, "up"])?;
    Ok(())
}

/// True if a TCP connection from `from_ns` to ip:port succeeds within 2 s.
pub fn tcp_answers(from_ns: &str, ip: &str, port: u16) -> bool {
    sh::netns(from_ns, "timeout")
        .args(["2", "bash", "-c", &format!("exec 3<>/dev/tcp/{ip}/{port}")])
        .succeeds()
}

/// One ARP ping from `from_ns` (out of its eth0) to `ip`: proves the
/// bridge forwards (the host has arping but not necessarily ping).
pub fn ping(from_ns: &str, ip: &str) -> bool {
    sh::netns(from_ns, "arping")
        .args(["-q", "-c1", "-w2", "-I", "eth0", ip])
        .succeeds()
}
