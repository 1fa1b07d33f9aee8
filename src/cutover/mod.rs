//! `hotclone cutover`: the maintenance window. A persisted state machine
//! ([`state::Step`]) that moves the service from the source to the clone
//! so that the production addresses never answer from two machines:
//!
//! 1. preflight: source and rescue VM reachable, the last sync recent and
//!    small, the production addresses held by the source and seen by the
//!    VM on its segment, the fallback address free. Nothing is changed.
//! 2. quiesce: the named services stop, by the source's own init.
//! 3. final sync, 4. verify of what it changed, in the VM.
//! 5. release: the source moves to its fallback address (a second SSH
//!    path, pinned to its host key) and arms a watchdog that gives it its
//!    addresses back if this process dies ([`watchdog`]).
//! 6. ARP probe of every production address from the VM's segment
//!    (RFC 5227, `arping -D`): anyone answering stops the cutover.
//! 7. finalize the clone's identity on its disk ([`crate::convert::identity`]).
//! 8. boot the clone; it announces its addresses (gratuitous ARP) as its
//!    interfaces come up. 9. health: SSH on the production address with
//!    the source's host key, the stopped services running on the clone,
//!    the user's `--check`s.
//!
//! **On failure** after anything changed, [`Cutover::rollback`] undoes in
//! reverse: the clone's VM is stopped first (so the address is free),
//! then the source gets its addresses and routes back and its services are
//! started again, and the VM boots its rescue system again with the disk
//! re-verified (a boot changes files behind the journal's back; those are
//! marked dirty so the next sync sends them). Every step is recorded in
//! the journal as it starts and ends, so a cutover that dies anywhere is
//! resumed (before the release) or rolled back (after) by running it
//! again ([`state::on_rerun`]). A report (Markdown and JSON) is written
//! into the migration's directory either way.

pub mod health;
pub mod network;
pub mod report;
mod rollback;
pub mod services;
pub mod state;
mod steps;
pub mod watchdog;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::journal::Journal;
use crate::launch::{BootMode, VmFiles, VmState};
use crate::migration::Migration;
use crate::pass::PassOptions;
use crate::plan::Plan;
use crate::probe::Inventory;
use crate::progress::Progress;
use crate::ssh::{ConnectOptions, Session};
use crate::target::live;
use crate::target::CloneError;
use health::Check;
use state::{FinalSync, Outcome, Record, Rerun, Step};

#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    #[error("migration {name} is not ready for cutover:\n  - {}", reasons.join("\n  - "))]
    NotReady { name: String, reasons: Vec<String> },
    #[error("preflight: {0}")]
    Preflight(String),
    #[error("{step}: {why}")]
    Step { step: &'static str, why: String },
    #[error("the cutover was rolled back: {reason}. The source serves again. Report: {}", report.display())]
    RolledBack { reason: String, report: PathBuf },
    #[error("the cutover stopped ({reason}) and its rollback failed: {error}. Check the source by hand; run `hotclone cutover {name}` again to retry the rollback. Report: {}", report.display())]
    RollbackFailed {
        name: String,
        reason: String,
        error: String,
        report: PathBuf,
    },
    #[error(transparent)]
    Clone(#[from] CloneError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Migration(#[from] crate::migration::MigrationError),
    #[error(transparent)]
    Launch(#[from] crate::launch::LaunchError),
    #[error(transparent)]
    Ssh(#[from] crate::ssh::SshError),
}

fn step_err(step: Step, why: impl Into<String>) -> CutoverError {
    CutoverError::Step {
        step: step.name(),
        why: why.into(),
    }
}

/// How to cut over.
#[derive(Debug, Clone)]
pub struct CutoverOptions {
    /// Services to stop on the source (`--stop`), in this order.
    pub stop: Vec<String>,
    /// Stop every running service but the way back in (`--quiesce all`).
    pub quiesce_all: bool,
    pub checks: Vec<Check>,
    /// The source's address while the clone holds the production ones
    /// (CIDR, on the first production interface).
    pub fallback: Option<String>,
    /// Refuse when the last finished sync pass is older.
    pub max_sync_age: Duration,
    /// How long the clone has to answer SSH after its boot starts.
    pub boot_timeout: Duration,
    /// How long it then has to pass its checks.
    pub health_timeout: Duration,
    /// The source-side watchdog's timeout.
    pub watchdog: Duration,
    /// The rescue image, to boot the VM into again on a rollback after
    /// the clone booted.
    pub rescue: Option<PathBuf>,
    pub pass: PassOptions,
    /// How to reach the source (as for `sync`).
    pub source: ConnectOptions,
    /// Cut over without a passing rehearsal of the latest conversion
    /// (`--no-rehearsal`); the report records it.
    pub no_rehearsal: bool,
}

/// What a dry run found and would do.
#[derive(Debug, Clone)]
pub struct DryRun {
    pub steps: Vec<(Step, String)>,
    pub estimate_seconds: Option<i64>,
}

/// A finished cutover.
#[derive(Debug, Clone)]
pub struct Finished {
    pub record: Record,
    pub report_md: PathBuf,
    pub report_json: PathBuf,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The record of the migration's last cutover, if any.
pub fn load_record(migration: &Migration) -> Result<Option<Record>, CutoverError> {
    let journal = Journal::open(&migration.journal_path())?;
    match journal.meta(state::META_KEY)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            CutoverError::Migration(crate::migration::MigrationError::Corrupt {
                path: migration.journal_path(),
                why: format!("its cutover record: {e}"),
            })
        }),
    }
}

/// What preflight learned, for the steps after it.
struct Found {
    to_stop: Vec<String>,
    estimate: Option<i64>,
}

pub struct Cutover<'a> {
    migration: &'a Migration,
    inventory: Inventory,
    plan: Plan,
    opts: &'a CutoverOptions,
    rec: Record,
    /// The session to the source on its production address (until the
    /// release), then on its fallback address.
    source: Option<Session>,
    found: Option<Found>,
    /// The journal's pass id of the final sync's first pass: verify checks
    /// what it and any pass after it wrote.
    final_pass: i64,
    /// The session to the booted clone, once it answers.
    clone: Option<Session>,
    dry_run: bool,
}

/// Run the cutover of `migration` (or, with an interrupted one on record,
/// resume or roll it back first).
pub async fn run(
    migration: &Migration,
    opts: &CutoverOptions,
    progress: &mut dyn Progress,
) -> Result<Finished, CutoverError> {
    let previous = load_record(migration)?;
    if let Some(p) = previous.as_ref().filter(|p| p.outcome == Outcome::Done) {
        return Err(CutoverError::Preflight(format!(
            "{} was cut over already ({}); its clone serves",
            p.migration,
            p.steps
                .last()
                .map(|s| report::timestamp(s.started_ms))
                .unwrap_or_default()
        )));
    }
    let mut c = Cutover::new(migration, opts, false)?;
    match state::on_rerun(previous.as_ref()) {
        Rerun::RollBack => {
            c.rec = previous.unwrap_or_else(|| Record::new(&migration.name));
            progress.note("an earlier cutover was interrupted after the source let go of its addresses; rolling it back first");
            return Err(c
                .rollback(
                    "an earlier cutover was interrupted after the source let go of its addresses"
                        .into(),
                    progress,
                )
                .await);
        }
        Rerun::Resume => {
            let p = previous.unwrap_or_else(|| Record::new(&migration.name));
            progress.note(&format!(
                "continuing an interrupted cutover (services it stopped: {})",
                if p.stopped.is_empty() {
                    "none".into()
                } else {
                    p.stopped.join(", ")
                }
            ));
            c.rec.stopped = p.stopped;
            c.rec.manager = p.manager;
        }
        Rerun::Fresh => {}
    }
    c.go(progress).await
}

/// Preflight only, and what every step would do. Changes nothing.
pub async fn dry_run(
    migration: &Migration,
    opts: &CutoverOptions,
    progress: &mut dyn Progress,
) -> Result<DryRun, CutoverError> {
    let mut c = Cutover::new(migration, opts, true)?;
    let detail = c.preflight(progress).await?;
    let plan = c.planned_steps(&detail);
    if let Some(s) = c.source.take() {
        let _ = s.disconnect().await;
    }
    Ok(DryRun {
        steps: plan,
        estimate_seconds: c.found.as_ref().and_then(|f| f.estimate),
    })
}

impl<'a> Cutover<'a> {
    fn new(
        migration: &'a Migration,
        opts: &'a CutoverOptions,
        dry_run: bool,
    ) -> Result<Cutover<'a>, CutoverError> {
        let (inventory, plan) = migration.load()?;
        for s in &opts.stop {
            if !services::valid_name(s) {
                return Err(CutoverError::Preflight(format!(
                    "--stop {s:?} is not a service name"
                )));
            }
        }
        Ok(Cutover {
            migration,
            inventory,
            plan,
            opts,
            rec: Record::new(&migration.name),
            source: None,
            found: None,
            final_pass: 0,
            clone: None,
            dry_run,
        })
    }

    fn save(&self) -> Result<(), CutoverError> {
        if self.dry_run {
            return Ok(());
        }
        let mut journal = Journal::open(&self.migration.journal_path())?;
        let json = serde_json::to_string(&self.rec)
            .map_err(|e| CutoverError::Preflight(format!("recording the cutover: {e}")))?;
        journal.set_meta(state::META_KEY, &json)?;
        Ok(())
    }

    fn write_report(&self) -> (PathBuf, PathBuf) {
        let md = self.migration.dir.join("cutover-report.md");
        let json = self.migration.dir.join("cutover-report.json");
        let _ = std::fs::write(&md, report::markdown(&self.rec));
        let _ = std::fs::write(
            &json,
            serde_json::to_string_pretty(&self.rec).unwrap_or_default(),
        );
        (md, json)
    }

    /// Start `step`: recorded before anything of it happens.
    async fn begin(&mut self, step: Step, progress: &mut dyn Progress) -> Result<(), CutoverError> {
        hold_before(self.migration, step).await;
        progress.phase(&format!("cutover: {}", step.name()));
        self.rec.begin(step, now_ms());
        self.save()
    }

    fn end(&mut self, result: &Result<String, CutoverError>) -> Result<(), CutoverError> {
        match result {
            Ok(detail) => self.rec.end(true, detail, now_ms()),
            Err(e) => self.rec.end(false, &e.to_string(), now_ms()),
        }
        self.save()
    }

    /// Whether anything was changed that rollback must undo.
    fn changed_anything(&self) -> bool {
        !self.rec.stopped.is_empty()
            || self.rec.released
            || self.rec.watchdog
            || self.rec.clone_booted
            || self.rec.fallback.is_some()
    }

    async fn go(mut self, progress: &mut dyn Progress) -> Result<Finished, CutoverError> {
        for step in Step::ALL {
            self.begin(step, progress).await?;
            let result = match step {
                Step::Preflight => self.preflight(progress).await,
                Step::Quiesce => self.quiesce().await,
                Step::FinalSync => self.final_sync(progress).await,
                Step::Verify => self.verify(progress).await,
                Step::ReleaseSourceIp => self.release().await,
                Step::ProbeIp => self.probe_ip(progress).await,
                Step::FinalizeIdentity => self.finalize(progress).await,
                Step::BootClone => self.boot(progress),
                Step::Announce => self.announce().await,
                Step::HealthCheck => self.health().await,
                Step::Done | Step::Rollback => unreachable!("not in Step::ALL"),
            };
            self.end(&result)?;
            if let Ok(detail) = &result {
                progress.note(&format!("{}: {detail}", step.name()));
            }
            if let Err(e) = result {
                if !self.changed_anything() {
                    self.rec.outcome = Outcome::Refused {
                        reason: e.to_string(),
                    };
                    self.save()?;
                    self.write_report();
                    return Err(e);
                }
                return Err(self.rollback(e.to_string(), progress).await);
            }
        }
        self.rec.downtime_ms = self.rec.down_since().map(|t| now_ms().saturating_sub(t));
        self.rec.begin(Step::Done, now_ms());
        self.rec.end(
            true,
            &format!(
                "the clone serves; the source stays reachable at {}",
                self.rec
                    .fallback
                    .as_ref()
                    .map(|f| f.0.as_str())
                    .unwrap_or("its other addresses")
            ),
            now_ms(),
        );
        self.rec.outcome = Outcome::Done;
        let mut journal = Journal::open(&self.migration.journal_path())?;
        journal.set_stage(crate::migration::Stage::CutOver)?;
        drop(journal);
        self.save()?;
        if let Some(s) = self.source.take() {
            let _ = s.disconnect().await;
        }
        let (report_md, report_json) = self.write_report();
        Ok(Finished {
            record: self.rec,
            report_md,
            report_json,
        })
    }

    fn found(&self) -> &Found {
        self.found.as_ref().expect("preflight ran first")
    }

    fn vm(&self) -> Result<VmState, CutoverError> {
        VmState::load(self.migration)?.ok_or_else(|| {
            CutoverError::Preflight(format!(
                "migration {} has no VM; cutover moves the service into the VM `hotclone launch {}` started",
                self.migration.name, self.migration.name
            ))
        })
    }

    /// A connection to the VM's rescue system, its hotclone checked.
    async fn rescue(&self, progress: &mut dyn Progress) -> Result<live::Connection, CutoverError> {
        let vm = self.vm()?;
        let dest = vm.ssh_destination().ok_or_else(|| {
            CutoverError::Preflight("the VM has no static staging address".into())
        })?;
        let opts = crate::launch::rescue_connect_options(&VmFiles::of(self.migration));
        Ok(live::connect(&dest, &opts, progress).await?)
    }

    /// Connect to the server whose host key preflight saw (the source, or
    /// the clone that carries its key), at `address` instead of the
    /// destination's own when given, retrying until `timeout`. Any other
    /// host key is refused at once.
    async fn pinned(
        &self,
        address: Option<&str>,
        timeout: Duration,
    ) -> Result<Session, CutoverError> {
        let opts = ConnectOptions {
            pinned_host_key: Some(self.rec.host_key.clone()),
            address: address.map(str::to_string),
            connect_timeout: Duration::from_secs(10),
            ..self.opts.source.clone()
        };
        let started = Instant::now();
        loop {
            match Session::connect(&self.inventory.source, &opts).await {
                Ok(s) => return Ok(s),
                Err(e @ crate::ssh::SshError::HostKeyNotPinned { .. }) => return Err(e.into()),
                Err(e) if started.elapsed() >= timeout => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// The source at `host` (its fallback or production address).
    async fn source_at(&self, host: &str, timeout: Duration) -> Result<Session, CutoverError> {
        self.pinned(Some(host), timeout).await
    }

    /// Whether `cmd` exits 0 on the source (service status checks).
    async fn source_succeeds(&self, cmd: &str) -> Result<bool, CutoverError> {
        match &self.source {
            Some(session) => Ok(session.run(cmd, b"").await?.status.success()),
            None => Ok(false),
        }
    }

    /// Run `cmd` on the source; an error unless it exits 0.
    async fn on_source(&self, step: Step, cmd: &str, stdin: &[u8]) -> Result<String, CutoverError> {
        let session = self
            .source
            .as_ref()
            .ok_or_else(|| step_err(step, "no session to the source"))?;
        let out = session.run(cmd, stdin).await?;
        if !out.status.success() {
            return Err(step_err(
                step,
                format!(
                    "on the source, `{cmd}` failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn preflight(&mut self, progress: &mut dyn Progress) -> Result<String, CutoverError> {
        let name = self.migration.name.clone();
        let status = crate::status::read(self.migration)?;
        let mut reasons = status.not_ready.clone();
        self.rec.rehearsal = match (&status.rehearsal_gate, &status.last_rehearsal) {
            (Some(gate), _) if self.opts.no_rehearsal => {
                reasons.retain(|r| r != gate);
                format!("skipped with --no-rehearsal ({gate})")
            }
            (Some(_), _) => String::new(),
            (None, Some(r)) => format!("passed ({}; {})", r.summary, r.report.display()),
            (None, None) => String::new(),
        };
        let last_end = status.passes.iter().rev().find_map(|p| p.finished);
        let age = last_end.map(|t| (now_ms() / 1000) as i64 - t);
        if let Some(age) = age.filter(|a| *a > self.opts.max_sync_age.as_secs() as i64) {
            reasons.push(format!(
                "the last sync pass finished {age} s ago (more than --max-sync-age {} s); run `hotclone sync {name}` first",
                self.opts.max_sync_age.as_secs()
            ));
        }
        if !reasons.is_empty() {
            return Err(CutoverError::NotReady { name, reasons });
        }
        let vm = self.vm()?;
        if vm.mode != BootMode::Rescue || !vm.running() {
            return Err(CutoverError::Preflight(format!(
                "the VM of {name} must run its rescue system (it is {}); start it with `hotclone launch {name} --disk {} ...`",
                if vm.running() { "booted from its disk" } else { "stopped" },
                vm.disk.display()
            )));
        }
        let (addrs, v6) = network::production(&self.inventory.network);
        if addrs.is_empty() {
            return Err(CutoverError::Preflight(
                "the inventory shows no IPv4 address on the source to move".into(),
            ));
        }
        let mut notes = Vec::new();
        for a in &v6 {
            notes.push(format!("IPv6 {a} is not moved (only IPv4 is)"));
        }
        let fallback = self.opts.fallback.clone().ok_or_else(|| {
            CutoverError::Preflight(format!(
                "give --fallback-ip ADDRESS/PREFIX: a free address on the source's segment that the source moves to while the clone takes {}, so hotclone can still reach it (and roll back)",
                addrs[0].cidr
            ))
        })?;
        let (fb_ip, _) = network::parse_cidr(&fallback).map_err(CutoverError::Preflight)?;
        if addrs.iter().any(|a| a.ip() == fb_ip.to_string()) {
            return Err(CutoverError::Preflight(format!(
                "--fallback-ip {fallback} is a production address"
            )));
        }

        // The source, on its production address.
        let session = Session::connect(&self.inventory.source, &self.opts.source).await?;
        let info = session.info().clone();
        self.rec.host_key = info.host_key_fingerprint.clone();
        self.rec.addresses = addrs.clone();
        self.source = Some(session);
        let held = network::held(
            &self
                .on_source(Step::Preflight, network::LIST_ADDRESSES, b"")
                .await?,
        );
        for a in &addrs {
            if !held.iter().any(|(i, c)| *i == a.iface && *c == a.cidr) {
                return Err(CutoverError::Preflight(format!(
                    "the source does not hold {} on {} now (it has {}); the inventory is out of date: probe and plan again",
                    a.cidr,
                    a.iface,
                    held.iter().map(|(i, c)| format!("{c} on {i}")).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let fallback_held = held
            .iter()
            .any(|(_, c)| c.split('/').next() == Some(&fb_ip.to_string()));

        // The VM's view of the segment.
        let rescue = self.rescue(progress).await?;
        for a in &addrs {
            let out = rescue.shell(&network::who_has(a.ip())).await?;
            let macs = network::repliers(&String::from_utf8_lossy(&out.stdout));
            let expected = a.mac.as_deref().map(str::to_ascii_lowercase);
            match macs.as_slice() {
                [] => {
                    return Err(CutoverError::Preflight(format!(
                        "the target VM gets no ARP answer for {} from its segment: it must be on the source's L2 segment (same bridge/VLAN) to take the address over",
                        a.ip()
                    )))
                }
                [one] if expected.as_ref().map_or(true, |m| m == one) => {}
                _ => {
                    return Err(CutoverError::Preflight(format!(
                        "{} answers ARP from {} (the source's MAC is {}): another machine already claims it; resolve the conflict first",
                        a.ip(),
                        macs.join(" and "),
                        expected.as_deref().unwrap_or("unknown")
                    )))
                }
            }
        }
        if !fallback_held {
            let out = rescue.shell(&network::probe(&fb_ip.to_string())).await?;
            if !out.status.success() {
                let macs = network::repliers(&String::from_utf8_lossy(&out.stdout));
                rescue.close().await;
                return Err(CutoverError::Preflight(format!(
                    "the fallback address {fb_ip} is in use ({}); choose a free one",
                    if macs.is_empty() {
                        String::from_utf8_lossy(&out.stderr).trim().to_string()
                    } else {
                        format!("{} answers ARP for it", macs.join(", "))
                    }
                )));
            }
        }
        rescue.close().await;

        // Services.
        let manager = services::for_source(&self.inventory.init);
        self.rec.manager = manager.name().to_string();
        let mut wanted = self.opts.stop.clone();
        if self.opts.quiesce_all {
            let listed = self
                .on_source(Step::Preflight, &manager.list_running(), b"")
                .await?;
            for s in services::quiesce_all(&listed) {
                if !wanted.contains(&s) {
                    wanted.push(s);
                }
            }
        }
        let mut to_stop = Vec::new();
        for s in wanted {
            if self.rec.stopped.contains(&s) {
                continue;
            }
            if self.source_succeeds(&manager.is_running(&s)).await? {
                to_stop.push(s);
            } else {
                notes.push(format!(
                    "{s} is not running on the source: not stopped, not checked on the clone"
                ));
            }
        }
        let estimate = status.final_sync_estimate_seconds;
        self.found = Some(Found { to_stop, estimate });
        for n in &notes {
            progress.note(n);
        }
        Ok(format!(
            "source {} (host key {}) holds {}; the VM sees it on its segment; fallback {fallback} free; final sync estimate {}",
            info.addr(),
            info.host_key_fingerprint,
            addrs.iter().map(|a| a.cidr.as_str()).collect::<Vec<_>>().join(", "),
            estimate.map(|s| format!("about {s} s (the last pass)")).unwrap_or_else(|| "unknown".into())
        ))
    }

    fn planned_steps(&self, preflight: &str) -> Vec<(Step, String)> {
        let f = self.found();
        let addrs: Vec<&str> = self.rec.addresses.iter().map(|a| a.cidr.as_str()).collect();
        let fallback = self.opts.fallback.as_deref().unwrap_or("?");
        let clone_mgr = services::for_clone(&self.inventory.init);
        let mut checks: Vec<String> = f
            .to_stop
            .iter()
            .chain(&self.rec.stopped)
            .map(|s| format!("`{}`", clone_mgr.is_running(s)))
            .collect();
        let first = self.rec.addresses.first().map(|a| a.ip()).unwrap_or("?");
        checks.extend(self.opts.checks.iter().map(|c| c.describe(first)));
        vec![
            (Step::Preflight, preflight.to_string()),
            (
                Step::Quiesce,
                if f.to_stop.is_empty() {
                    "stop no services (none named with --stop or --quiesce all)".into()
                } else {
                    format!("stop {} by {}", f.to_stop.join(", "), self.rec.manager)
                },
            ),
            (
                Step::FinalSync,
                format!(
                    "one sync pass with the source quiet ({})",
                    f.estimate
                        .map(|s| format!("about {s} s"))
                        .unwrap_or_else(|| "no estimate".into())
                ),
            ),
            (Step::Verify, "re-hash what the final sync wrote, in the VM".into()),
            (
                Step::ReleaseSourceIp,
                format!(
                    "add {fallback} to the source, arm its watchdog ({} s), remove {}",
                    self.opts.watchdog.as_secs(),
                    addrs.join(", ")
                ),
            ),
            (
                Step::ProbeIp,
                format!("`arping -D` from the VM for {}; any answer rolls back", addrs.join(", ")),
            ),
            (
                Step::FinalizeIdentity,
                "check the addresses in the clone's network config, enable arp_notify, remove /.hotclone, fsck".into(),
            ),
            (Step::BootClone, "boot the VM from its disk".into()),
            (
                Step::Announce,
                format!("wait for SSH on {first} with host key {}", self.rec.host_key),
            ),
            (
                Step::HealthCheck,
                if checks.is_empty() {
                    "SSH only".into()
                } else {
                    checks.join("; ")
                },
            ),
        ]
    }

    async fn quiesce(&mut self) -> Result<String, CutoverError> {
        let manager = services::for_source(&self.inventory.init);
        let mut stopped = Vec::new();
        for s in self.found().to_stop.clone() {
            // Recorded first: a stop that half works is restarted on rollback.
            self.rec.stopped.push(s.clone());
            self.save()?;
            self.on_source(Step::Quiesce, &manager.stop(&s), b"")
                .await?;
            if self.source_succeeds(&manager.is_running(&s)).await? {
                return Err(step_err(
                    Step::Quiesce,
                    format!("{s} still runs after `{}`", manager.stop(&s)),
                ));
            }
            stopped.push(s);
        }
        Ok(if stopped.is_empty() {
            "no services to stop".into()
        } else {
            format!("stopped {} ({})", stopped.join(", "), manager.name())
        })
    }

    async fn final_sync(&mut self, progress: &mut dyn Progress) -> Result<String, CutoverError> {
        let started = Instant::now();
        let mut total = FinalSync::default();
        let mut first_pass = None;
        // Files that changed while read (a service still writing) go again,
        // twice at most.
        for attempt in 0..3 {
            let conn = self.rescue(progress).await?;
            let session = self.source.as_ref().expect("connected in preflight");
            let report = crate::sync::run(
                session,
                &self.inventory,
                &self.plan,
                self.migration,
                crate::target::Opener::Live(conn),
                &self.opts.pass,
                progress,
            )
            .await?;
            let p = &report.pass;
            first_pass.get_or_insert(p.pass);
            total.files += p.sent_files;
            total.bytes += p.sent_bytes;
            total.wire_bytes += p.wire_bytes;
            total.removed += p.removed;
            total.attrs += p.attrs;
            if p.dirty == 0 && p.recent == 0 {
                break;
            }
            if attempt == 2 {
                return Err(step_err(
                    Step::FinalSync,
                    still_changing_message(p.dirty + p.recent, &p.still_changing),
                ));
            }
            // Recently modified files are re-read once their mtime settles.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        total.milliseconds = started.elapsed().as_millis() as u64;
        self.rec.final_sync = Some(total.clone());
        self.final_pass = first_pass.unwrap_or_default();
        Ok(format!(
            "{} files, {} bytes ({} on the wire), {} removed, {} metadata updates",
            total.files, total.bytes, total.wire_bytes, total.removed, total.attrs
        ))
    }
}

/// Why the final sync gives up: `count` files still change on the
/// quiesced source; up to three of `paths` (some of them) are named.
fn still_changing_message(count: u64, paths: &[String]) -> String {
    format!(
        "{count} file(s) still change on the quiesced source{}; stop what writes them (--stop or --quiesce all)",
        crate::pass::for_example(paths, 3)
    )
}

/// A test hook: with `HOTCLONE_CUTOVER_HOLD=STEP[,STEP...]`, wait before
/// each STEP until the file `cutover.hold` in the migration's directory
/// (created here, holding the step's name) is removed (at most 10
/// minutes). The lab tests use it to put a stranger on the network, and
/// take it off again, at exact moments. Debug builds only (the lab's):
/// a release build ignores the variable.
pub(crate) async fn hold_before(migration: &Migration, step: Step) {
    if !cfg!(debug_assertions) {
        return;
    }
    let Ok(wanted) = std::env::var("HOTCLONE_CUTOVER_HOLD") else {
        return;
    };
    if !wanted
        .split(',')
        .any(|w| Step::from_name(w.trim()) == Some(step))
    {
        return;
    }
    let file = migration.dir.join("cutover.hold");
    if std::fs::write(&file, step.name()).is_err() {
        return;
    }
    let started = Instant::now();
    while file.exists() && started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(&file);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the example came from the first warning, and files
    /// modified while the source was listed ("recent") have none, so the
    /// message read "(e.g. )".
    #[test]
    fn the_final_sync_failure_names_up_to_three_changing_files_never_an_empty_one() {
        let paths: Vec<String> = ["/var/log/a", "/var/log/b", "/srv/c", "/srv/d"]
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            still_changing_message(7, &paths),
            "7 file(s) still change on the quiesced source (e.g. /var/log/a, /var/log/b, /srv/c); stop what writes them (--stop or --quiesce all)"
        );
        let none = still_changing_message(2, &[]);
        assert_eq!(
            none,
            "2 file(s) still change on the quiesced source; stop what writes them (--stop or --quiesce all)"
        );
        assert!(!still_changing_message(1, &[String::new()]).contains("e.g."));
    }
}
