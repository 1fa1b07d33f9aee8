//! Network identity: the source's configuration must apply to the VM's
//! NICs. Every style is a [`NetworkConfig`]: it drops MAC pins (the VM's
//! MAC is unknown at convert time) and renames interfaces the plan maps to
//! another name. `net.ifnames=0` on the kernel line keeps `eth0` naming.

pub mod ifcfg;
pub mod ifupdown;
pub mod netplan;
pub mod udev;

use super::{ConvertContext, FileRewriter};

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
