//! Network identity: the source's configuration must apply to the VM's
//! NICs. Every style is a [`NetworkConfig`]: it drops MAC pins (the VM's
//! MAC is unknown at convert time) and renames interfaces the plan maps to
//! another name. `net.ifnames=0` on the kernel line keeps `eth0` naming.
//!
//! Virtual interfaces (bridges, bonds, VLANs, `docker0`, `virbr0`: see
//! [`is_virtual_interface`]) keep their names and configuration. When the
//! plan maps one (it maps the interface that carries the address, which
//! for a bridge `br0` over `eth0` is `br0`), the bridge stays `br0` and
//! its port takes the VM NIC's name instead ([`file_context`]), so
//! `ifcfg-br0` is never renamed onto a port's `ifcfg-eth0`.

pub mod ifcfg;
pub mod ifupdown;
pub mod interfaces_check;
pub mod netplan;
pub mod networkd;
pub mod networkmanager;
pub mod udev;

use super::{ConvertContext, FileRewriter, NicRename};
pub use crate::probe::is_virtual_interface;

/// A network configuration style. Its files are only touched when they
/// exist, so a family may list every style it can carry.
pub trait NetworkConfig: FileRewriter {
    fn as_rewriter(&self) -> &dyn FileRewriter;
}

/// The new name for an interface token: `eth1` -> `eth0`, and its alias
/// and VLAN forms (`eth1:0`, `eth1.100`) alike. `None` when unchanged.
pub fn rename_token(token: &str, ctx: &ConvertContext) -> Option<String> {
    for n in &ctx.nics {
        if n.source == n.target {
            continue;
        }
        if token == n.source {
            return Some(n.target.clone());
        }
        for sep in [':', '.'] {
            if let Some(rest) = token.strip_prefix(&format!("{}{sep}", n.source)) {
                return Some(format!("{}{sep}{rest}", n.target));
            }
        }
    }
    None
}

/// The context one network file's renames use, given the (master, port)
/// pairs the file names (`bridge_ports eth0` under `iface br0`, `BRIDGE=br0`
/// in `ifcfg-eth0`, ...). A mapping of a virtual interface keeps its name;
/// the master's first port that no other mapping names takes the VM NIC's
/// name in its place.
pub fn file_context(ctx: &ConvertContext, ports: &[(String, String)]) -> ConvertContext {
    let mut c = ctx.clone();
    let mut moved = Vec::new();
    for n in &mut c.nics {
        if n.source == n.target || !is_virtual_interface(&n.source) {
            continue;
        }
        let target = std::mem::replace(&mut n.target, n.source.clone());
        let mac = n.mac.take();
        let port = ports
            .iter()
            .filter(|(m, _)| *m == n.source)
            .map(|(_, p)| p)
            .find(|p| !ctx.nics.iter().any(|o| &o.source == *p));
        if let Some(p) = port {
            moved.push(NicRename {
                source: p.clone(),
                mac,
                target,
            });
        }
    }
    c.nics.extend(moved);
    c
}

/// Notes for the report: the mapped virtual interfaces that keep their
/// names, and what takes the VM NIC's name.
pub fn kept_notes(ctx: &ConvertContext) -> Vec<String> {
    ctx.nics
        .iter()
        .filter(|n| n.source != n.target && is_virtual_interface(&n.source))
        .map(|n| {
            format!(
                "{} is a virtual interface (bridge, bond, VLAN...): it keeps its name and configuration; where a config file lists its ports (ifupdown, netplan, NetworkManager, networkd) the first one becomes the VM's {}, else (ifcfg) check a port is the VM's NIC; other virtual interfaces (bonds, VLANs, docker0, virbr0) are kept as they are",
                n.source, n.target
            )
        })
        .collect()
}
