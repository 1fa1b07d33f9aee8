//! udev persistent-net rules pin names to the source's MACs; with them the
//! VM's NIC would come up as eth1. They are deleted, and udev writes new
//! ones on the first boot where it still does that.

use super::NetworkConfig;
use crate::convert::{ConvertContext, FileAction, FilePattern, FileRewriter};

pub struct UdevPersistentNet;

impl FileRewriter for UdevPersistentNet {
    fn name(&self) -> &'static str {
        "udev persistent-net"
    }
    fn files(&self) -> &'static [FilePattern] {
        &[
            FilePattern {
                pattern: "etc/udev/rules.d/70-persistent-net.rules",
                create: false,
            },
            FilePattern {
                pattern: "etc/udev/rules.d/z25_persistent-net.rules",
                create: false,
            },
        ]
    }
    fn rewrite(&self, _path: &str, _text: &str, _ctx: &ConvertContext) -> FileAction {
        FileAction::Remove
    }
}

impl NetworkConfig for UdevPersistentNet {
    fn as_rewriter(&self) -> &dyn FileRewriter {
        self
    }
}
