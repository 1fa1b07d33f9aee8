//! What the target host does when the client runs `hotclone target ...`
//! there (in the rescue VM, over SSH): say hello (version and disks),
//! prepare the planned disk, convert the copy, finish the disk. Each call
//! is one short command; the filesystems stay mounted under [`ROOT`]
//! between calls, and each call mounts them again first if an interrupted
//! one left them otherwise.
//!
//! The disk code is the same as for image targets ([`super::image`]),
//! run against the VM's block device.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::device::DiskInfo;
use super::image::{self, FsCheck, ImageError, NewFilesystem};
use super::lock::{self, device_lock_path, TargetLock};
use super::Converted;
use crate::plan::{Plan, TargetSpec};
use crate::probe::Inventory;
use crate::progress::Progress;
use crate::target::CloneError;

/// Scratch space on the target host (a RAM disk in the rescue system):
/// the plan, the inventory. Removed at the end.
pub const WORK_DIR: &str = "/run/hotclone";
/// Where the target's filesystems are mounted.
pub const ROOT: &str = "/mnt/target";

/// The target host's answer to `hotclone target hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: String,
    /// Build id (see build.rs): equal ids mean the same code.
    pub build: String,
    pub kernel: String,
    pub disks: Vec<DiskInfo>,
}

pub fn hello() -> Hello {
    Hello {
        version: env!("CARGO_PKG_VERSION").to_string(),
        build: crate::rescue::BUILD_ID.to_string(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        disks: super::device::disks(),
    }
}

/// The disk the plan names; `disk` must be it.
fn check_planned(plan: &Plan, disk: &Path) -> Result<(), ImageError> {
    match &plan.target {
        TargetSpec::Live { disk: Some(d), .. } if d == disk => Ok(()),
        TargetSpec::Live { disk: Some(d), .. } => Err(ImageError::NotPlanned {
            device: disk.to_path_buf(),
            planned: d.display().to_string(),
        }),
        other => Err(ImageError::NotPlanned {
            device: disk.to_path_buf(),
            planned: format!("no disk of this host ({})", other.display()),
        }),
    }
}

/// Take the lock of `disk` (see [`super::lock`]): every `hotclone target`
/// command holds it while it runs, and the agent for its whole life, so
/// nothing remounts the disk under an agent that still writes.
fn hold(disk: &Path) -> Result<TargetLock, ImageError> {
    Ok(TargetLock::acquire(
        &device_lock_path(disk),
        "hotclone target",
        lock::wait_time(),
    )?)
}

/// Partition, format and mount `disk` (or, `attach`, mount what an
/// earlier prepare made) under `root`, and leave it mounted.
pub fn prepare(
    plan: &Plan,
    disk: &Path,
    root: &Path,
    attach: bool,
) -> Result<Vec<NewFilesystem>, ImageError> {
    check_planned(plan, disk)?;
    let lock = hold(disk)?;
    let prepared = if attach {
        image::attach_device(plan, disk, root, FsCheck::after(&lock))?
    } else {
        // A prepare whose client was killed may have finished and left
        // the disk mounted; under the lock nothing else uses it.
        image::release_stale(Path::new(""), root)?;
        image::prepare_device(plan, disk, root)?
    };
    Ok(prepared.leave_mounted())
}

/// Convert the copy on `disk` in place; what changed is found with the
/// journal copy the client keeps on the target.
pub fn convert(
    inv: &Inventory,
    plan: &Plan,
    disk: &Path,
    root: &Path,
    progress: &mut dyn Progress,
) -> Result<Converted, CloneError> {
    check_planned(plan, disk)?;
    let lock = hold(disk)?;
    let prepared = image::attach_device(plan, disk, root, FsCheck::after(&lock))?;
    let notes = crate::target::conversion::convert_phase(inv, plan, &prepared, progress)?;
    let journal = crate::migration::target_state(root).join("journal.sqlite");
    let files = crate::verify::converted_files(root, &journal)?;
    prepared.leave_mounted();
    Ok(Converted { notes, files })
}

/// The end: unmount (and with `fsck`, check every filesystem). The disk
/// itself is the result.
pub fn finish(plan: &Plan, disk: &Path, root: &Path, fsck: bool) -> Result<PathBuf, ImageError> {
    check_planned(plan, disk)?;
    let lock = hold(disk)?;
    let prepared = image::attach_device(plan, disk, root, FsCheck::after(&lock))?;
    if fsck {
        prepared.finish(plan)
    } else {
        prepared.close()?;
        Ok(disk.to_path_buf())
    }
}

/// Park the disk for a rehearsal: hold its lock (no pass, conversion or
/// verify can start while the lock is held), and check that nothing of it
/// is mounted and that its writes reached the VM's disk, so the host can
/// read the disk file consistently. The lock is the caller's to keep.
pub fn park(plan: &Plan, disk: &Path) -> Result<TargetLock, ImageError> {
    check_planned(plan, disk)?;
    let lock = hold(disk)?;
    let mounted = super::device::mounted_anywhere(&super::device::with_partitions(disk));
    if !mounted.is_empty() {
        return Err(ImageError::MountedElsewhere {
            device: disk.to_path_buf(),
            holders: mounted.join("; "),
        });
    }
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    Ok(lock)
}

/// Re-hash the target on `disk` against `journal` (the client's, sent for
/// this), then unmount it again.
pub fn verify(
    plan: &Plan,
    disk: &Path,
    root: &Path,
    journal: &Path,
) -> Result<Vec<crate::verify::Difference>, CloneError> {
    check_planned(plan, disk)?;
    let journal = crate::journal::Journal::open(journal)?;
    let (records, converted) = (journal.files()?, journal.converted()?);
    let lock = hold(disk)?;
    let prepared = image::attach_device(plan, disk, root, FsCheck::after(&lock))?;
    let diffs = crate::verify::check_tree(root, &records, &converted);
    prepared.close()?;
    Ok(diffs)
}

/// Finalize the clone on `disk` for its first boot as production (see
/// [`crate::cutover::identity`]), then check and unmount its filesystems.
/// Returns notes for the cutover report.
pub fn finalize(
    plan: &Plan,
    disk: &Path,
    root: &Path,
    inventory: &Inventory,
    addresses: &[crate::probe::addresses::ProdAddr],
) -> Result<Vec<String>, CloneError> {
    check_planned(plan, disk)?;
    let lock = hold(disk)?;
    let prepared = image::attach_device(plan, disk, root, FsCheck::after(&lock))?;
    match crate::convert::identity::finalize(root, inventory, addresses) {
        Ok(notes) => {
            prepared.finish(plan)?;
            Ok(notes)
        }
        Err(e) => {
            let _ = prepared.close();
            Err(CloneError::Target(e.to_string()))
        }
    }
}
