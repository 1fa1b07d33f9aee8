//! The conversion of a copy on its disk, as clone and sync run it: build
//! the [`ConvertContext`] from the plan, the inventory and the filesystems
//! the target made, and run [`convert`] in a chroot of the mounted copy.
//! On failure the copy stays as it is on the disk and the error says what
//! the conversion refused or what failed; running it again redoes it.

use std::path::Path;

use super::{chroot, convert, ConvertContext, ConvertError, NewFilesystem};
use crate::plan::Plan;
use crate::probe::{BootloaderKind, DistroFamily, Inventory};
use crate::progress::Progress;

/// Why a copy is left unconverted, if it is: a source of no known
/// distribution family (a busybox box) is copied faithfully and left as
/// it is. A known family without a bootloader is converted: the copy's
/// own GRUB or this host's is installed ([`convert::family`]), or the
/// conversion says why it cannot be.
fn not_converted(family: DistroFamily, bootloader: BootloaderKind) -> Option<String> {
    let name = |v: serde_json::Result<serde_json::Value>| {
        v.ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    (family == DistroFamily::Unknown).then(|| {
        format!(
            "the copy was not converted ({} family, {} bootloader): it holds the files exactly, but will not boot as a VM as it is",
            name(serde_json::to_value(family)),
            name(serde_json::to_value(bootloader))
        )
    })
}

/// Convert the copy mounted at `root`, whose filesystems the target made
/// as `made` on the disk `disk_device`; Ok carries the notes for the
/// user (unless [`not_converted`] says why not, in a note).
pub fn convert_on_disk(
    inv: &Inventory,
    plan: &Plan,
    root: &Path,
    made: &[NewFilesystem],
    disk_device: Option<String>,
    progress: &mut dyn Progress,
) -> Result<Vec<String>, ConvertError> {
    if let Some(note) = not_converted(inv.os.family, plan.source.bootloader) {
        progress.note(&note);
        return Ok(vec![note]);
    }
    let ctx = ConvertContext::from_plan(plan, inv, made, disk_device)?;
    let mut exec = chroot::UnshareChroot::new(root)?.with_uuid_links(&ctx);
    let report = convert(root, &ctx, &mut exec, progress)?;
    // Conversion's own bookkeeping (the interface-rename record) stays in
    // the target's state directory, for the re-conversions of later syncs;
    // cutover removes it with the rest of that state. Nothing of ours is
    // in the clone's own tree.
    let mut notes = report.notes;
    if plan.autorelabel {
        let flag = root.join(".autorelabel");
        std::fs::write(&flag, b"").map_err(super::io_err(&flag))?;
        let note = "SELinux labels were not copied: /.autorelabel makes the clone relabel itself at first boot";
        progress.note(note);
        notes.push(note.to_string());
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: a known family whose source had no bootloader was left
    /// unconverted ("will not boot as a VM"), so a Xen PV guest booted by
    /// its dom0 never got the GRUB the conversion now installs.
    #[test]
    fn regression_a_known_family_without_a_bootloader_is_converted() {
        assert_eq!(
            not_converted(DistroFamily::Debian, BootloaderKind::None),
            None
        );
        assert_eq!(
            not_converted(DistroFamily::RedHat, BootloaderKind::None),
            None
        );
        let busybox = not_converted(DistroFamily::Unknown, BootloaderKind::None).unwrap();
        assert!(
            busybox.starts_with("the copy was not converted (unknown family, none bootloader)"),
            "{busybox}"
        );
    }
}
