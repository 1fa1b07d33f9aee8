//! Conversion where the disk is: the connectors (local image, rescue
//! system) call [`convert_phase`] on the mounted copy; the guest edits are
//! [`convert::on_disk`]'s. On failure the copy stays as it is on the
//! disk, and the error says what the conversion refused or what failed.

use super::{image, CloneError};
use crate::convert;
use crate::plan::Plan;
use crate::probe::Inventory;
use crate::progress::Progress;

/// Phase 4: make the copy on the prepared disk boot as a VM.
pub(crate) fn convert_phase(
    inv: &Inventory,
    plan: &Plan,
    prepared: &image::PreparedImage,
    progress: &mut dyn Progress,
) -> Result<Vec<String>, CloneError> {
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
    convert::on_disk::convert_on_disk(inv, plan, &prepared.root, &made, disk, progress)
        .map_err(|e| CloneError::Convert(e.to_string()))
}
