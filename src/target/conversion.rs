//! Conversion where the disk is: the connectors (local image, rescue
//! system) call [`convert_phase`] on the mounted copy, which builds the
//! [`convert::ConvertContext`] from the plan and runs [`convert::convert`]
//! in a chroot. On failure the copy stays as it is on the disk, and the
//! error says what the conversion refused or what failed.

use super::{image, CloneError};
use crate::convert;
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

/// Phase 4: make the copy boot as a VM, with the guest's own tools
/// (unless [`not_converted`] says why not, in a note).
pub(crate) fn convert_phase(
    inv: &Inventory,
    plan: &Plan,
    prepared: &image::PreparedImage,
    progress: &mut dyn Progress,
) -> Result<Vec<String>, CloneError> {
    if let Some(note) = not_converted(inv.os.family, plan.source.bootloader) {
        progress.note(&note);
        return Ok(vec![note]);
    }
    let made: Vec<convert::NewFilesystem> = prepared
        .filesystems
        .iter()
        .map(|f| convert::NewFilesystem {
            partition: f.number,
            uuid: f.uuid.clone(),
            device: Some(f.device.display().to_string()),
        })
        .collect();
    let disk = Some(prepared.disk_device().display().to_string());
    let ctx = convert::ConvertContext::from_plan(plan, inv, &made, disk)
        .map_err(|e| CloneError::Convert(e.to_string()))?;
    let mut exec = convert::chroot::UnshareChroot::new(&prepared.root)
        .map_err(|e| CloneError::Convert(e.to_string()))?
        .with_uuid_links(&ctx);
    let report = convert::convert(&prepared.root, &ctx, &mut exec, progress)
        .map_err(|e| CloneError::Convert(e.to_string()))?;
    // Conversion's own bookkeeping (the interface-rename record) stays in
    // the target's state directory, for the re-conversions of later syncs;
    // cutover removes it with the rest of that state. Nothing of ours is
    // in the clone's own tree.
    let mut notes = report.notes;
    if plan.autorelabel {
        let flag = prepared.root.join(".autorelabel");
        std::fs::write(&flag, b"")
            .map_err(|e| CloneError::Convert(format!("writing {}: {e}", flag.display())))?;
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
