//! The state of a migration, read from its journal only (the source and
//! the target are not contacted): its stage, passes, lag, dirty files, last
//! verify, and whether it is ready for cutover, with the reasons if not.

use serde::Serialize;

use crate::journal::{Journal, JournalError, PassRow, RehearsalRow, VerifyRow};
use crate::migration::{Migration, Stage};

/// A pass longer than this is not "small": the final sync in the
/// maintenance window would take about as long.
pub const SMALL_PASS_SECONDS: i64 = 120;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub stage: Stage,
    pub files: u64,
    pub dirty: u64,
    pub passes: Vec<PassRow>,
    pub last_verify: Option<VerifyRow>,
    /// True when cutover can start; otherwise `not_ready` says why.
    pub ready_for_cutover: bool,
    pub not_ready: Vec<String>,
    /// The last finished pass's duration: about what the final sync costs.
    pub final_sync_estimate_seconds: Option<i64>,
    /// The last `hotclone rehearse`, and whether the target was converted
    /// again since (then it proves nothing about what cutover boots).
    pub last_rehearsal: Option<RehearsalRow>,
    pub converted_since_rehearsal: bool,
    /// Why the rehearsal gate holds the cutover (one of `not_ready`);
    /// `cutover --no-rehearsal` overrides only this one.
    pub rehearsal_gate: Option<String>,
}

/// Why the cutover's rehearsal gate is closed, if it is: no rehearsal,
/// a failed one, or one of an earlier conversion.
pub fn rehearsal_gate(
    name: &str,
    last: Option<&RehearsalRow>,
    conversion: Option<i64>,
) -> Option<String> {
    let run = format!("run `hotclone rehearse {name}`");
    match last {
        None => Some(format!(
            "the clone was never rehearsed; {run} (or cut over with --no-rehearsal)"
        )),
        Some(r) if r.conversion != conversion => Some(format!(
            "the clone was converted again since its last rehearsal; {run}"
        )),
        Some(r) if !r.passed => Some(format!(
            "its last rehearsal {} (see {}); fix that, then {run}",
            r.summary,
            r.report.display()
        )),
        Some(_) => None,
    }
}

pub fn read(migration: &Migration) -> Result<Status, JournalError> {
    let journal = Journal::open(&migration.journal_path())?;
    let stage = journal.stage()?;
    let (files, dirty) = journal.counts()?;
    let passes = journal.passes()?;
    let last_verify = journal.last_verify()?;
    let mut not_ready = Vec::new();
    if stage == Stage::CutOver {
        not_ready.push(format!(
            "cut over already: the clone serves (see {})",
            migration.dir.join("cutover-report.md").display()
        ));
    } else if stage != Stage::Ready {
        not_ready.push(format!(
            "the clone is not finished (stage {stage}); run `hotclone clone` again"
        ));
    }
    let last = passes.last();
    if last.is_some_and(|p| p.finished.is_none()) {
        not_ready.push(format!(
            "the last pass was interrupted; run `hotclone sync {}`",
            migration.name
        ));
    }
    // Files that changed while read do not hold the cutover up: its
    // final sync, with the services stopped, sends them.
    let last_finished = passes.iter().rev().find(|p| p.finished.is_some());
    let estimate = last_finished.and_then(|p| Some(p.finished? - p.started));
    if let Some(secs) = estimate.filter(|s| *s > SMALL_PASS_SECONDS) {
        not_ready.push(format!(
            "the last pass took {secs} s; sync until a pass takes under {SMALL_PASS_SECONDS} s (try `hotclone sync {} --watch 300`)",
            migration.name
        ));
    }
    if let Some(v) = last_verify.as_ref().filter(|v| v.differences > 0) {
        not_ready.push(format!(
            "the last verify found {} difference(s); sync, then `hotclone verify {}`",
            v.differences, migration.name
        ));
    }
    let last_rehearsal = journal.last_rehearsal()?;
    let conversion = journal.conversion()?;
    let converted_since_rehearsal = last_rehearsal
        .as_ref()
        .is_some_and(|r| r.conversion != conversion);
    let gate = if stage == Stage::Ready {
        rehearsal_gate(&migration.name, last_rehearsal.as_ref(), conversion)
    } else {
        None
    };
    not_ready.extend(gate.clone());
    Ok(Status {
        name: migration.name.clone(),
        stage,
        files,
        dirty,
        passes,
        last_verify,
        ready_for_cutover: not_ready.is_empty(),
        not_ready,
        final_sync_estimate_seconds: estimate,
        last_rehearsal,
        converted_since_rehearsal,
        rehearsal_gate: gate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(passed: bool, conversion: Option<i64>) -> RehearsalRow {
        RehearsalRow {
            at: 1,
            passed,
            conversion,
            summary: if passed {
                "passed: 7 check(s)"
            } else {
                "failed: cron runs: it does not run on the clone"
            }
            .into(),
            report: "/m/web01/rehearsal-report.md".into(),
        }
    }

    #[test]
    fn the_gate_opens_only_for_a_passing_rehearsal_of_the_latest_conversion() {
        let never = rehearsal_gate("web01", None, Some(5)).unwrap();
        assert!(
            never.contains("hotclone rehearse web01") && never.contains("--no-rehearsal"),
            "{never}"
        );
        let failed = rehearsal_gate("web01", Some(&row(false, Some(5))), Some(5)).unwrap();
        assert!(
            failed.contains("cron runs") && failed.contains("rehearsal-report.md"),
            "{failed}"
        );
        let stale = rehearsal_gate("web01", Some(&row(true, Some(4))), Some(5)).unwrap();
        assert!(stale.contains("converted again"), "{stale}");
        assert_eq!(
            rehearsal_gate("web01", Some(&row(true, Some(5))), Some(5)),
            None
        );
    }
}
