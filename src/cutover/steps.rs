//! The cutover's steps from the verify on: the ones that move the
//! production addresses and bring the clone up. Each returns the detail
//! line for the report, or the error that starts the rollback.

use std::time::{Duration, Instant};

use super::state::Step;
use super::{health, network, services, step_err, watchdog, Cutover, CutoverError};
use crate::convert::identity;
use crate::journal::Journal;
use crate::progress::Progress;

impl Cutover<'_> {
    pub(super) async fn verify(
        &mut self,
        progress: &mut dyn Progress,
    ) -> Result<String, CutoverError> {
        let mut journal = Journal::open(&self.migration.journal_path())?;
        let snapshot = journal.snapshot_since_pass(self.final_pass)?;
        let conn = self.rescue(progress).await?;
        let diffs = conn.verify(&self.plan, &snapshot).await;
        conn.close().await;
        let diffs = diffs?;
        let written = self
            .rec
            .final_sync
            .as_ref()
            .map(|f| f.files + f.attrs)
            .unwrap_or(0);
        journal.record_verify(written, diffs.len() as u64)?;
        self.rec.verify = Some((written, diffs.len() as u64));
        if !diffs.is_empty() {
            return Err(step_err(
                Step::Verify,
                format!(
                    "{} difference(s) after the final sync: {}",
                    diffs.len(),
                    diffs
                        .iter()
                        .take(5)
                        .map(|d| format!("{} ({})", d.path, d.what))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ));
        }
        Ok(format!(
            "what the final sync wrote ({written} entries) re-hashed in the VM: no differences"
        ))
    }

    /// The restore commands (addresses, routes, services) for the watchdog
    /// and for rollback.
    pub(super) fn restore_commands(&self) -> String {
        let manager = services::for_source(&self.inventory.init);
        let mut cmd = network::restore(&self.rec.addresses, &self.rec.routes);
        for s in self.rec.stopped.iter().rev() {
            cmd.push_str(&format!("; {} >/dev/null 2>&1 || true", manager.start(s)));
        }
        cmd
    }

    pub(super) async fn release(&mut self) -> Result<String, CutoverError> {
        let fallback = self.opts.fallback.clone().expect("checked in preflight");
        let iface = self.rec.addresses[0].iface.clone();
        self.rec.routes = self
            .on_source(Step::ReleaseSourceIp, network::LIST_ROUTES, b"")
            .await?;
        self.rec.fallback = Some((fallback.clone(), iface.clone()));
        self.save()?;
        self.on_source(
            Step::ReleaseSourceIp,
            &network::add_fallback(&fallback, &iface),
            b"",
        )
        .await?;
        let fb_ip = fallback.split('/').next().unwrap_or(&fallback).to_string();
        let via_fallback = self.source_at(&fb_ip, Duration::from_secs(20)).await?;
        if let Some(old) = self.source.replace(via_fallback) {
            let _ = old.disconnect().await;
        }
        let restore = format!(
            "{}; {}",
            self.restore_commands(),
            network::remove_fallback(&fallback, &iface)
        );
        self.rec.watchdog = true;
        self.save()?;
        self.on_source(
            Step::ReleaseSourceIp,
            &watchdog::arm(),
            watchdog::script(&restore, self.opts.watchdog).as_bytes(),
        )
        .await?;
        self.rec.released = true;
        self.save()?;
        self.on_source(
            Step::ReleaseSourceIp,
            &network::release(&self.rec.addresses),
            b"",
        )
        .await?;
        let held = network::held(
            &self
                .on_source(Step::ReleaseSourceIp, network::LIST_ADDRESSES, b"")
                .await?,
        );
        if let Some(a) = self
            .rec
            .addresses
            .iter()
            .find(|a| held.iter().any(|(_, c)| *c == a.cidr))
        {
            return Err(step_err(
                Step::ReleaseSourceIp,
                format!("the source still holds {} after removing it", a.cidr),
            ));
        }
        Ok(format!(
            "{} off the source; it stays reachable at {fallback} on {iface}; watchdog armed for {} s",
            self.rec
                .addresses
                .iter()
                .map(|a| a.cidr.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.opts.watchdog.as_secs()
        ))
    }

    pub(super) async fn probe_ip(
        &mut self,
        progress: &mut dyn Progress,
    ) -> Result<String, CutoverError> {
        let conn = self.rescue(progress).await?;
        let mut problem = None;
        for a in &self.rec.addresses {
            let out = conn.shell(&network::probe(a.ip())).await?;
            let text = String::from_utf8_lossy(&out.stdout);
            let macs = network::repliers(&text);
            if !macs.is_empty() {
                problem = Some(format!(
                    "{} answers ARP for {} after the source let go of it: another machine holds the production address",
                    macs.join(" and "),
                    a.ip()
                ));
                break;
            }
            if !out.status.success() {
                problem = Some(format!(
                    "`arping -D` for {} failed in the VM ({}): {}",
                    a.ip(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                break;
            }
        }
        conn.close().await;
        match problem {
            Some(p) => Err(step_err(Step::ProbeIp, p)),
            None => Ok(format!(
                "nobody answers ARP for {} (RFC 5227 probes from the VM)",
                self.rec
                    .addresses
                    .iter()
                    .map(|a| a.ip())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    pub(super) async fn finalize(
        &mut self,
        progress: &mut dyn Progress,
    ) -> Result<String, CutoverError> {
        let conn = self.rescue(progress).await?;
        let notes = conn
            .finalize(&self.plan, &self.inventory, &self.rec.addresses)
            .await;
        conn.close().await;
        let notes = notes?;
        // From here the client rolls back, not the watchdog.
        let answer = self
            .on_source(Step::FinalizeIdentity, &watchdog::disarm(), b"")
            .await?;
        if answer.trim() != "disarmed" {
            return Err(step_err(
                Step::FinalizeIdentity,
                format!(
                    "the source's watchdog had fired already (the steps took longer than --watchdog {} s): the source took its addresses back",
                    self.opts.watchdog.as_secs()
                ),
            ));
        }
        self.rec.watchdog = false;
        self.save()?;
        Ok(format!(
            "{}; the source's watchdog disarmed",
            if notes.is_empty() {
                "network identity checked".to_string()
            } else {
                notes.join("; ")
            }
        ))
    }

    pub(super) fn boot(&mut self, progress: &mut dyn Progress) -> Result<String, CutoverError> {
        self.rec.clone_booted = true;
        self.save()?;
        let vm = crate::launch::boot_disk(self.migration, progress)?;
        Ok(format!(
            "the VM boots its disk (QEMU pid {}, MAC {})",
            vm.pid.unwrap_or_default(),
            vm.mac
        ))
    }

    pub(super) async fn announce(&mut self) -> Result<String, CutoverError> {
        let started = Instant::now();
        let dest = self.inventory.source.clone();
        let session = match self.pinned(None, self.opts.boot_timeout).await {
            Ok(s) => s,
            Err(e) => {
                return Err(step_err(
                    Step::Announce,
                    format!(
                        "the clone did not answer SSH at {dest} with the source's host key within {} s ({e}); console: {}",
                        self.opts.boot_timeout.as_secs(),
                        crate::launch::VmFiles::of(self.migration)
                            .console(crate::launch::BootMode::Disk)
                            .display()
                    ),
                ))
            }
        };
        let answered = started.elapsed();
        let cmd = format!(
            "{}rm -f /{}",
            network::announce(&self.rec.addresses),
            identity::ANNOUNCE_SYSCTL
        );
        let _ = session.run(&cmd, b"").await;
        self.clone = Some(session);
        Ok(format!(
            "the clone answers SSH at {dest} with the source's host key {} after {:.1} s; it announced its addresses when its interfaces came up (arp_notify)",
            self.rec.host_key,
            answered.as_secs_f64()
        ))
    }

    pub(super) async fn health(&mut self) -> Result<String, CutoverError> {
        let started = Instant::now();
        let manager = services::for_clone(&self.inventory.init);
        let first = self.rec.addresses[0].ip().to_string();
        let expected = health::Expected {
            services: &self.rec.stopped,
            checks: &self.opts.checks,
            first_address: &first,
            netns: None,
        };
        loop {
            let session = self.clone.as_ref().expect("announce connected");
            let verdicts = health::check_once(session, manager.as_ref(), &expected).await;
            let passed: Vec<String> = verdicts
                .iter()
                .filter(|v| v.failure.is_none())
                .map(health::Verdict::line)
                .collect();
            let failed: Vec<String> = verdicts
                .iter()
                .filter(|v| v.failure.is_some())
                .map(health::Verdict::line)
                .collect();
            if failed.is_empty() {
                return Ok(format!(
                    "healthy after {:.1} s: {}",
                    started.elapsed().as_secs_f64(),
                    if passed.is_empty() {
                        "SSH with the source's host key".to_string()
                    } else {
                        passed.join("; ")
                    }
                ));
            }
            if started.elapsed() > self.opts.health_timeout {
                return Err(step_err(Step::HealthCheck, failed.join("; ")));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}
