//! Taking a migration over from its target disk: the disk carries a copy
//! of the journal, inventory and plan (see [`crate::migration::TARGET_STATE_DIR`]), so
//! a client machine that never saw the migration, or lost its state, can
//! continue it. The disk is only read here; nothing is changed if it has
//! no state, or the migration already exists on this machine.

use std::path::{Path, PathBuf};

use crate::migration::Migration;
use crate::target::image::{self, LoopDisk};
use crate::target::CloneError;

/// Copy the state from `disk` (raw) into a new migration `name` under
/// `home`.
pub fn adopt(home: &Path, name: &str, disk: &Path) -> Result<Migration, CloneError> {
    if Migration::open(home, name).is_ok() {
        return Err(CloneError::Stage(format!(
            "migration {name} already exists in {}; use it as it is, or choose another name",
            home.display()
        )));
    }
    let format = image::run(
        "qemu-img",
        &["info", "--output=json", &disk.to_string_lossy()],
        "qemu-utils",
    )?;
    if !format.contains("\"format\": \"raw\"") {
        return Err(CloneError::Stage(format!(
            "{} is not a raw disk; take over from its raw working copy (qemu-img convert -O raw)",
            disk.display()
        )));
    }
    let loop_disk = LoopDisk::attach_with(disk, true)?;
    let probe_dir = std::env::temp_dir().join(format!("hotclone-adopt-{}", std::process::id()));
    std::fs::create_dir_all(&probe_dir)
        .map_err(|e| CloneError::Target(format!("creating {}: {e}", probe_dir.display())))?;
    let found = find_state(&loop_disk, &probe_dir, home, name);
    let _ = std::fs::remove_dir(&probe_dir);
    drop(loop_disk);
    found?.ok_or_else(|| {
        CloneError::Stage(format!(
            "{} carries no hotclone state (no {}/ on any of its filesystems)",
            disk.display(),
            crate::migration::TARGET_STATE_DIR
        ))
    })
}

/// Mount each partition read-only in turn; the first with the state
/// directory becomes the migration.
fn find_state(
    disk: &LoopDisk,
    at: &Path,
    home: &Path,
    name: &str,
) -> Result<Option<Migration>, CloneError> {
    let base = disk
        .device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 1..=128u32 {
        if !Path::new(&format!("/sys/block/{base}/{base}p{n}")).exists() {
            continue;
        }
        let dev = disk.partition(n)?;
        let dev_s = dev.to_string_lossy().into_owned();
        let at_s = at.to_string_lossy().into_owned();
        if image::run("mount", &["-o", "ro", &dev_s, &at_s], "mount").is_err() {
            continue; // swap, BIOS boot, an unknown filesystem
        }
        let state: PathBuf = crate::migration::target_state(at);
        let copied = if state.join("journal.sqlite").is_file() {
            copy_state(&state, home, name).map(Some)
        } else {
            Ok(None)
        };
        let _ = image::run("umount", &[&at_s], "mount");
        if let Some(m) = copied? {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

fn copy_state(state: &Path, home: &Path, name: &str) -> Result<Migration, CloneError> {
    let m = Migration::create(home, name)?;
    let copied = (|| -> std::io::Result<()> {
        std::fs::copy(state.join("inventory.json"), m.inventory_path())?;
        std::fs::copy(state.join("plan.toml"), m.plan_path())?;
        std::fs::copy(state.join("journal.sqlite"), m.journal_path())?;
        Ok(())
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_dir_all(&m.dir);
        return Err(CloneError::Target(format!(
            "copying the state from {}: {e}",
            state.display()
        )));
    }
    Ok(m)
}
