//! Rollback: back to the source, from whatever the record says was done.
//! The clone leaves the network first, so the production addresses are
//! free before the source takes them back; then the source gets its
//! addresses, routes and services, and the VM boots its rescue system
//! again with its disk re-verified. Every part is attempted even when an
//! earlier one failed; what failed is reported.

use std::time::Duration;

use super::state::{Outcome, Step};
use super::{network, now_ms, services, watchdog, Cutover, CutoverError};
use crate::journal::Journal;
use crate::progress::Progress;

impl Cutover<'_> {
    pub(super) async fn rollback(
        &mut self,
        reason: String,
        progress: &mut dyn Progress,
    ) -> CutoverError {
        super::hold_before(self.migration, Step::Rollback).await;
        progress.phase("cutover: rollback");
        progress.note(&format!("rolling back: {reason}"));
        self.rec.begin(Step::Rollback, now_ms());
        let _ = self.save();
        let mut done: Vec<String> = Vec::new();
        let mut errors: Vec<String> = Vec::new();

        if self.rec.clone_booted {
            if let Some(s) = self.clone.take() {
                let _ = s.disconnect().await;
            }
            match crate::launch::stop(self.migration) {
                Ok(_) => done.push("the clone's VM stopped".into()),
                Err(e) => errors.push(format!("stopping the clone's VM: {e}")),
            }
        }

        let touched_source = self.rec.released
            || self.rec.watchdog
            || self.rec.fallback.is_some()
            || !self.rec.stopped.is_empty();
        if touched_source {
            match self.source_for_rollback().await {
                Ok(()) => self.restore_source(&mut done, &mut errors).await,
                Err(e) => errors.push(format!("reaching the source: {e}")),
            }
        }

        if self.rec.clone_booted {
            match self.opts.rescue.clone() {
                Some(rescue) => match self.reverify(&rescue, progress).await {
                    Ok(d) => {
                        done.push(d);
                        self.rec.clone_booted = false;
                    }
                    Err(e) => errors.push(format!("booting the VM's rescue system again: {e}")),
                },
                None => errors.push(format!(
                    "the VM stays stopped (no rescue image given); boot it with `hotclone launch {} --disk ...`, then `hotclone verify {}`",
                    self.migration.name, self.migration.name
                )),
            }
        }

        let detail = if done.is_empty() {
            "nothing to undo".to_string()
        } else {
            done.join("; ")
        };
        self.rec.outcome = if errors.is_empty() {
            Outcome::RolledBack {
                reason: reason.clone(),
            }
        } else {
            Outcome::RollbackFailed {
                reason: reason.clone(),
                error: errors.join("; "),
            }
        };
        self.rec.end(
            errors.is_empty(),
            &format!(
                "{detail}{}",
                if errors.is_empty() {
                    String::new()
                } else {
                    format!("; FAILED: {}", errors.join("; "))
                }
            ),
            now_ms(),
        );
        let _ = self.save();
        if let Some(s) = self.source.take() {
            let _ = s.disconnect().await;
        }
        let (report, _) = self.write_report();
        if errors.is_empty() {
            CutoverError::RolledBack { reason, report }
        } else {
            CutoverError::RollbackFailed {
                name: self.migration.name.clone(),
                reason,
                error: errors.join("; "),
                report,
            }
        }
    }

    /// A working session to the source: the one held, or a new one on its
    /// fallback address (if it moved there) or its production address.
    async fn source_for_rollback(&mut self) -> Result<(), CutoverError> {
        if let Some(s) = &self.source {
            if s.run("true", b"").await.is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
        }
        if let Some(s) = self.source.take() {
            let _ = s.disconnect().await;
        }
        let host = match &self.rec.fallback {
            Some((fb, _)) => fb.split('/').next().unwrap_or(fb).to_string(),
            None => self
                .rec
                .addresses
                .first()
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
        };
        self.source = Some(self.source_at(&host, Duration::from_secs(30)).await?);
        Ok(())
    }

    async fn restore_source(&mut self, done: &mut Vec<String>, errors: &mut Vec<String>) {
        if self.rec.watchdog || self.rec.released {
            let _ = self
                .on_source(Step::Rollback, &watchdog::disarm(), b"")
                .await;
            self.rec.watchdog = false;
        }
        if let Err(e) = self
            .on_source(Step::Rollback, &self.restore_commands(), b"")
            .await
        {
            errors.push(e.to_string());
        }
        match self
            .on_source(Step::Rollback, network::LIST_ADDRESSES, b"")
            .await
        {
            Ok(text) => {
                let held = network::held(&text);
                let missing: Vec<&str> = self
                    .rec
                    .addresses
                    .iter()
                    .filter(|a| !held.iter().any(|(_, c)| *c == a.cidr))
                    .map(|a| a.cidr.as_str())
                    .collect();
                if missing.is_empty() {
                    if self.rec.released {
                        done.push("the source holds its addresses again".into());
                    }
                    self.rec.released = false;
                } else {
                    errors.push(format!(
                        "the source did not take back {}",
                        missing.join(", ")
                    ));
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
        let manager = services::for_source(&self.inventory.init);
        let mut started = Vec::new();
        for s in self.rec.stopped.clone().iter().rev() {
            if self
                .source_succeeds(&manager.is_running(s))
                .await
                .unwrap_or(false)
            {
                started.push(s.clone());
            } else {
                errors.push(format!(
                    "{s} does not run on the source after `{}`",
                    manager.start(s)
                ));
            }
        }
        if !started.is_empty() {
            done.push(format!(
                "{} running on the source again",
                started.join(", ")
            ));
        }
        let _ = self.save();
        if let Some((fb, iface)) = self.rec.fallback.clone() {
            if self.rec.released {
                return;
            }
            // Back on the production address before the fallback goes.
            let prod = self.rec.addresses[0].ip().to_string();
            for a in &self.rec.addresses {
                network::forget_neighbour(a.ip());
            }
            match self.source_at(&prod, Duration::from_secs(60)).await {
                Ok(session) => {
                    if let Some(old) = self.source.replace(session) {
                        let _ = old.disconnect().await;
                    }
                    match self
                        .on_source(Step::Rollback, &network::remove_fallback(&fb, &iface), b"")
                        .await
                    {
                        Ok(_) => {
                            done.push(format!("the source answers at {prod} again; {fb} removed"));
                            self.rec.fallback = None;
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                Err(e) => errors.push(format!(
                    "the source does not answer SSH at {prod} after the restore ({e}); it keeps {fb}"
                )),
            }
        }
    }

    /// Boot the VM's rescue system again and re-verify its disk: the
    /// clone's boot changed files the journal does not know about; those
    /// are marked dirty so the next sync sends them again.
    async fn reverify(
        &mut self,
        rescue: &std::path::Path,
        progress: &mut dyn Progress,
    ) -> Result<String, CutoverError> {
        crate::launch::relaunch_rescue(self.migration, rescue, Duration::from_secs(300), progress)
            .await?;
        let mut journal = Journal::open(&self.migration.journal_path())?;
        let snapshot = journal.snapshot()?;
        let conn = self.rescue(progress).await?;
        let diffs = conn.verify(&self.plan, &snapshot).await;
        conn.close().await;
        let diffs = diffs?;
        let paths: Vec<Vec<u8>> = diffs.iter().map(|d| d.path.clone().into_bytes()).collect();
        journal.mark_dirty(&paths)?;
        Ok(format!(
            "the VM runs its rescue system again; {} file(s) the clone's boot changed are marked for the next sync",
            paths.len()
        ))
    }
}
