//! The cutover's persisted record: every step with its timestamps and
//! outcome, and everything rollback needs (which services were stopped,
//! whether the addresses left the source, whether the clone booted). It
//! lives in the migration's journal (meta key [`META_KEY`]) and is written
//! at every step boundary, so a cutover that dies anywhere can be resumed
//! or rolled back from it ([`on_rerun`]).

use serde::{Deserialize, Serialize};

use super::network::ProdAddr;

pub const META_KEY: &str = "cutover";

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Preflight,
    Quiesce,
    FinalSync,
    Verify,
    ReleaseSourceIp,
    ProbeIp,
    FinalizeIdentity,
    BootClone,
    Announce,
    HealthCheck,
    Done,
    Rollback,
}

impl Step {
    pub const ALL: [Step; 10] = [
        Step::Preflight,
        Step::Quiesce,
        Step::FinalSync,
        Step::Verify,
        Step::ReleaseSourceIp,
        Step::ProbeIp,
        Step::FinalizeIdentity,
        Step::BootClone,
        Step::Announce,
        Step::HealthCheck,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::Quiesce => "quiesce",
            Step::FinalSync => "final-sync",
            Step::Verify => "verify",
            Step::ReleaseSourceIp => "release-source-ip",
            Step::ProbeIp => "probe-ip",
            Step::FinalizeIdentity => "finalize-identity",
            Step::BootClone => "boot-clone",
            Step::Announce => "announce",
            Step::HealthCheck => "health-check",
            Step::Done => "done",
            Step::Rollback => "rollback",
        }
    }

    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL
            .into_iter()
            .chain([Step::Done, Step::Rollback])
            .find(|s| s.name() == name)
    }
}

/// One step as it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepLog {
    pub step: Step,
    /// Unix milliseconds.
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    /// None while it runs (or when the process died in it).
    pub ok: Option<bool>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum Outcome {
    Running,
    Done,
    /// It stopped before changing anything (preflight said no).
    Refused {
        reason: String,
    },
    RolledBack {
        reason: String,
    },
    /// Rollback itself failed: the record says what is left to do.
    RollbackFailed {
        reason: String,
        error: String,
    },
}

/// What the final sync sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalSync {
    pub files: u64,
    pub bytes: u64,
    pub wire_bytes: u64,
    pub removed: u64,
    pub attrs: u64,
    pub milliseconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub migration: String,
    pub outcome: Outcome,
    pub steps: Vec<StepLog>,
    /// The production addresses as the cutover found them.
    pub addresses: Vec<ProdAddr>,
    /// The source's fallback address (CIDR) and the interface it is on.
    pub fallback: Option<(String, String)>,
    /// `ip -4 route show` on the source before its addresses went.
    pub routes: String,
    /// The source's host key (`SHA256:...`): the clone must show it too.
    pub host_key: String,
    /// The service manager used on the source, and the services stopped
    /// by this cutover (restarted on rollback, checked on the clone).
    pub manager: String,
    pub stopped: Vec<String>,
    /// The production addresses are off the source.
    pub released: bool,
    /// The source-side watchdog is (or may be) armed.
    pub watchdog: bool,
    /// The VM was booted from the clone's disk.
    pub clone_booted: bool,
    pub final_sync: Option<FinalSync>,
    /// (checked, differences) of the verify after the final sync.
    pub verify: Option<(u64, u64)>,
    /// Service stop to healthy clone.
    pub downtime_ms: Option<u64>,
    /// The rehearsal the cutover relied on, or that it was skipped
    /// (`--no-rehearsal`) and what the gate said.
    #[serde(default)]
    pub rehearsal: String,
}

impl Record {
    pub fn new(migration: &str) -> Record {
        Record {
            migration: migration.to_string(),
            outcome: Outcome::Running,
            steps: Vec::new(),
            addresses: Vec::new(),
            fallback: None,
            routes: String::new(),
            host_key: String::new(),
            manager: String::new(),
            stopped: Vec::new(),
            released: false,
            watchdog: false,
            clone_booted: false,
            final_sync: None,
            verify: None,
            downtime_ms: None,
            rehearsal: String::new(),
        }
    }

    pub fn begin(&mut self, step: Step, now_ms: u64) {
        self.steps.push(StepLog {
            step,
            started_ms: now_ms,
            finished_ms: None,
            ok: None,
            detail: String::new(),
        });
    }

    pub fn end(&mut self, ok: bool, detail: &str, now_ms: u64) {
        if let Some(last) = self.steps.last_mut() {
            last.finished_ms = Some(now_ms);
            last.ok = Some(ok);
            last.detail = detail.to_string();
        }
    }

    /// The furthest step of the main sequence that was started.
    pub fn reached(&self) -> Option<Step> {
        self.steps
            .iter()
            .map(|s| s.step)
            .filter(|s| *s < Step::Done)
            .max()
    }

    /// When the first service stop began (the start of the downtime).
    pub fn down_since(&self) -> Option<u64> {
        self.steps
            .iter()
            .find(|s| s.step == Step::Quiesce)
            .map(|s| s.started_ms)
    }
}

/// What a new `hotclone cutover` does with the record of an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rerun {
    /// None, or it ended (done, or rolled back): start from the beginning.
    Fresh,
    /// It died before the source let go of its addresses: nothing is on
    /// the network that was not before, so continue (from preflight, which
    /// rechecks everything; the services it stopped stay recorded).
    Resume,
    /// It died after: the state of the network is not known, so return to
    /// the source first.
    RollBack,
}

pub fn on_rerun(record: Option<&Record>) -> Rerun {
    match record {
        None => Rerun::Fresh,
        Some(r) => match &r.outcome {
            Outcome::Done | Outcome::Refused { .. } | Outcome::RolledBack { .. } => Rerun::Fresh,
            Outcome::RollbackFailed { .. } => Rerun::RollBack,
            Outcome::Running if r.released || r.clone_booted || r.watchdog => Rerun::RollBack,
            Outcome::Running => Rerun::Resume,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_round_trip_in_order() {
        for s in Step::ALL {
            assert_eq!(Step::from_name(s.name()), Some(s));
        }
        assert!(Step::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Step::from_name("nonsense"), None);
    }

    #[test]
    fn a_rerun_resumes_before_the_release_and_rolls_back_after() {
        assert_eq!(on_rerun(None), Rerun::Fresh);
        let mut r = Record::new("web01");
        r.begin(Step::Quiesce, 1);
        r.stopped.push("apache2".into());
        assert_eq!(on_rerun(Some(&r)), Rerun::Resume);
        r.watchdog = true;
        assert_eq!(on_rerun(Some(&r)), Rerun::RollBack);
        r.outcome = Outcome::RolledBack { reason: "x".into() };
        assert_eq!(on_rerun(Some(&r)), Rerun::Fresh);
        r.outcome = Outcome::RollbackFailed {
            reason: "x".into(),
            error: "y".into(),
        };
        assert_eq!(on_rerun(Some(&r)), Rerun::RollBack);
    }

    #[test]
    fn the_record_tracks_steps_and_downtime_start() {
        let mut r = Record::new("web01");
        r.begin(Step::Preflight, 10);
        r.end(true, "ok", 20);
        r.begin(Step::Quiesce, 25);
        assert_eq!(r.reached(), Some(Step::Quiesce));
        assert_eq!(r.down_since(), Some(25));
        assert_eq!(r.steps[0].ok, Some(true));
        assert_eq!(r.steps[1].ok, None);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
    }
}
