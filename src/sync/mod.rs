//! `hotclone sync`: a delta pass ([`crate::pass`]) into a finished clone
//! while the source keeps serving, and the re-conversion a pass that
//! brought boot-relevant files triggers. [`adopt`] takes a migration over
//! from the journal copy on the target.
//!
//! On failure the journal holds exactly what was acknowledged; running
//! the sync again continues (see [`crate::pass`]).

pub mod adopt;

use std::time::Duration;

use crate::journal::Journal;
use crate::migration::{Migration, Stage};
use crate::pass::{run as pass, write_target_state, Ends, PassOptions, PassReport};
use crate::plan::Plan;
use crate::probe::Inventory;
use crate::progress::Progress;
use crate::ssh::Session;
use crate::target::CloneError;
use crate::target::Opener;

/// What `hotclone sync` did.
#[derive(Debug)]
pub struct SyncReport {
    pub pass: PassReport,
    /// The copy was converted again (a boot-relevant file changed).
    pub reconverted: bool,
    /// Since the previous pass finished, and the rate the source changed
    /// at over that time (content bytes sent per second).
    pub since_previous: Option<Duration>,
    pub change_rate: Option<f64>,
    pub notes: Vec<String>,
}

/// Whether `migration` can take a sync pass now: its clone finished,
/// and not cut over (the clone serves then). Callers check before they
/// contact anything.
pub fn check_stage(migration: &Migration) -> Result<(), CloneError> {
    let journal = Journal::open(&migration.journal_path())?;
    match journal.stage()? {
        Stage::Ready => {}
        Stage::CutOver => {
            return Err(CloneError::Stage(format!(
                "{} was cut over: its clone serves now, and syncing from the old source would overwrite it",
                migration.name
            )))
        }
        Stage::Preparing | Stage::Copying => {
            return Err(CloneError::Stage(format!(
                "the clone of {} did not finish; run the same `hotclone clone ... --name {}` again to continue it",
                migration.name, migration.name
            )))
        }
        Stage::New => {
            return Err(CloneError::Stage(format!(
                "migration {} has no target disk yet; `hotclone clone` makes it",
                migration.name
            )))
        }
    }
    Ok(())
}

/// One `hotclone sync` pass of a migration whose clone is ready.
pub async fn run(
    session: &Session,
    inv: &Inventory,
    plan: &Plan,
    migration: &Migration,
    opener: Opener,
    options: &PassOptions,
    progress: &mut dyn Progress,
) -> Result<SyncReport, CloneError> {
    check_stage(migration)?;
    let journal = Journal::open(&migration.journal_path())?;
    let previous = journal
        .passes()?
        .into_iter()
        .rev()
        .find(|p| p.finished.is_some());
    drop(journal);
    let mut target = opener.for_sync(plan, migration, progress).await?;
    let ends = Ends {
        session,
        inv,
        plan,
        migration,
        target: target.as_ref(),
    };
    let report = pass(&ends, "sync", options, progress).await?;
    let mut notes = Vec::new();
    if report.reconvert {
        progress.phase("converting again (a boot-relevant file changed)");
        let mut journal = Journal::open(&migration.journal_path())?;
        let converted = target
            .convert(inv, plan, &migration.journal_path(), progress)
            .await?;
        notes = converted.notes;
        journal.record_converted(&converted.files)?;
        tokio::task::block_in_place(|| write_target_state(target.as_ref(), migration, &journal))?;
    }
    target.close(progress).await?;
    let since_previous = previous.and_then(|p| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        let finished = p.finished?;
        Some(Duration::from_secs((now - finished).max(1) as u64))
    });
    let change_rate = since_previous.map(|d| report.sent_bytes as f64 / d.as_secs_f64());
    Ok(SyncReport {
        reconverted: report.reconvert,
        pass: report,
        since_previous,
        change_rate,
        notes,
    })
}
