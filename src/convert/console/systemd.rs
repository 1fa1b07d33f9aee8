//! systemd's gettys: a Xen guest enables `serial-getty@hvc0.service` in
//! `/etc/systemd/system/getty.target.wants/` and may have no
//! `getty@tty1.service` there. When that directory exists, the missing
//! `getty@tty1.service` and `serial-getty@ttyS0.service` links are created
//! (what `systemctl enable` would write), pointing at the unit directory
//! of the family: `/lib/systemd/system` on Debian and Ubuntu,
//! `/usr/lib/systemd/system` on Red Hat and SUSE. The Xen console's link
//! is left: its device never appears and systemd gives up on it.

use crate::convert::{ConvertContext, FileAction, FilePattern, FileRewriter};
use crate::probe::DistroFamily;

pub struct SystemdGetty;

pub const WANTS: &str = "etc/systemd/system/getty.target.wants";

/// The instances the VM needs, and their template unit.
const UNITS: &[(&str, &str)] = &[
    ("getty@tty1.service", "getty@.service"),
    ("serial-getty@ttyS0.service", "serial-getty@.service"),
];

impl FileRewriter for SystemdGetty {
    fn name(&self) -> &'static str {
        "systemd gettys"
    }
    fn files(&self) -> &'static [FilePattern] {
        &[]
    }
    fn creates(&self, exists: &dyn Fn(&str) -> bool) -> Vec<String> {
        if !exists(WANTS) {
            return vec![];
        }
        UNITS
            .iter()
            .map(|(unit, _)| format!("{WANTS}/{unit}"))
            .filter(|p| !exists(p))
            .collect()
    }
    fn handles(&self, path: &str) -> bool {
        template_of(path).is_some()
    }
    fn rewrite(&self, path: &str, text: &str, ctx: &ConvertContext) -> FileAction {
        match template_of(path) {
            Some(template) if text.is_empty() => {
                FileAction::Symlink(format!("{}/{template}", unit_dir(ctx.guest.family)))
            }
            _ => FileAction::Keep,
        }
    }
}

fn template_of(path: &str) -> Option<&'static str> {
    UNITS
        .iter()
        .find(|(unit, _)| path == format!("{WANTS}/{unit}"))
        .map(|(_, t)| *t)
}

/// Where the family's systemd units live.
pub fn unit_dir(family: DistroFamily) -> &'static str {
    match family {
        DistroFamily::RedHat | DistroFamily::Suse => "/usr/lib/systemd/system",
        _ => "/lib/systemd/system",
    }
}
