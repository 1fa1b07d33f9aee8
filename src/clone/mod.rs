//! `hotclone clone`: from a running source to a bootable VM disk, in one
//! readable sequence of phases. Each phase takes the records it needs (the
//! Inventory, the Plan, the journal) and returns what the next one needs:
//!
//! 1. prepare the target disk (partition, mkfs, mount), [`crate::target`]
//! 2. list the source, [`crate::stream::listing`]
//! 3. copy, [`copy`]
//! 4. convert the copy so it boots as a VM, [`crate::convert`]
//! 5. finish the disk (sync, unmount, fsck; detach and qcow2 for images)
//!
//! With [`CloneOptions::copy_only`] it stops after step 3: the disk is
//! closed (unmounted and detached, an image kept as its partial raw file)
//! with the migration still "copying", and running the clone again
//! without it continues: a delta pass, then steps 4 and 5.
//!
//! The target is an image on this machine or the disk of a rescue VM over
//! SSH ([`crate::target::Opener`]); the phases are the same.
//!
//! On failure before any file was copied, every mount and loop device is
//! released, a half-made image is removed, and the error says which phase
//! failed and why. Once files are on the target, they are kept and the
//! same command continues. The source is only read.

use std::time::{Duration, Instant};

use crate::journal::Journal;
use crate::migration::{Migration, Stage};
use crate::plan::Plan;
use crate::probe::Inventory;
use crate::progress::{FileWarning, Progress};
use crate::ssh::Session;
use crate::target::{CloneStart, Opener};

pub use crate::pass::copy::Batching;
pub use crate::target::CloneError;

/// How [`run`] clones beyond the source and the target.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneOptions {
    pub batching: Batching,
    /// Stop once the files are copied: no conversion, the disk not
    /// finished (not bootable yet). The same clone run again finishes it.
    pub copy_only: bool,
}

/// What a clone did, for the summary.
#[derive(Debug)]
pub struct CloneReport {
    /// The clone: an image file, or the rescue VM's disk. Empty when only
    /// copied ([`CloneOptions::copy_only`]).
    pub image: String,
    /// Whether the copy was converted and the disk finished.
    pub converted: bool,
    pub files: u64,
    pub bytes: u64,
    pub wire_bytes: u64,
    pub duration: Duration,
    pub dirty: u64,
    pub warnings: Vec<FileWarning>,
    pub notes: Vec<String>,
}

/// The journal's meta key set once the target disk is finished (a live
/// target; an image target shows it by its partial file being gone).
pub const FINISHED: &str = "finished";

/// The whole clone, phase by phase. When the migration's journal says a
/// clone of it was interrupted (stage "copying" and its disk still there),
/// it continues that clone instead of starting over.
pub async fn run(
    session: &Session,
    inv: &Inventory,
    plan: &Plan,
    migration: &Migration,
    opener: Opener,
    options: CloneOptions,
    progress: &mut dyn Progress,
) -> Result<CloneReport, CloneError> {
    let started = Instant::now();
    let mut journal = Journal::open(&migration.journal_path())?;
    let start = match journal.stage()? {
        Stage::New => CloneStart::New,
        Stage::Preparing => CloneStart::Redo,
        _ => CloneStart::Resume,
    };
    match start {
        CloneStart::Resume => {
            progress.phase("attaching the partly copied disk");
            let (files, _) = journal.counts()?;
            progress.note(&format!(
                "continuing an interrupted clone: {files} entries are already on the target"
            ));
        }
        CloneStart::Redo => {
            progress.phase("preparing the target disk");
            progress
                .note("the last run was stopped while it prepared the disk: preparing it again");
        }
        CloneStart::New => progress.phase("preparing the target disk"),
    }
    if start != CloneStart::Resume {
        journal.set_stage(Stage::Preparing)?;
    }
    // From here on the disk holds acknowledged files the journal describes:
    // a failure keeps both, and running the clone again continues.
    let mut target = opener.for_clone(plan, migration, start).await?;
    journal.set_stage(Stage::Copying)?;
    journal.set_meta(FINISHED, "")?;

    let ends = crate::pass::Ends {
        session,
        inv,
        plan,
        migration,
        target: target.as_ref(),
    };
    let pass = crate::pass::run(
        &ends,
        "clone",
        &crate::pass::PassOptions {
            batching: options.batching,
            sweep: false,
            checksum: false,
        },
        progress,
    )
    .await?;
    let (image, notes) = if options.copy_only {
        tokio::task::block_in_place(|| {
            crate::pass::write_target_state(target.as_ref(), migration, &journal)
        })?;
        target.close(progress).await?;
        (String::new(), Vec::new())
    } else {
        let converted = target
            .convert(inv, plan, &migration.journal_path(), progress)
            .await?;
        journal.record_converted(&converted.files)?;
        journal.set_stage(Stage::Ready)?;
        tokio::task::block_in_place(|| {
            crate::pass::write_target_state(target.as_ref(), migration, &journal)
        })?;

        progress.phase("finishing the disk");
        let image = match target.finish(plan, progress).await {
            Ok(image) => image,
            Err(e) => {
                let _ = journal.set_stage(Stage::Copying);
                return Err(e);
            }
        };
        journal.set_meta(FINISHED, "yes")?;
        (image, converted.notes)
    };
    let (files, _) = journal.counts()?;
    Ok(CloneReport {
        image,
        converted: !options.copy_only,
        files,
        bytes: pass.sent_bytes,
        wire_bytes: pass.wire_bytes,
        duration: started.elapsed(),
        dirty: pass.dirty,
        warnings: pass.warnings,
        notes: notes.into_iter().chain(pass.tar_messages).collect(),
    })
}
