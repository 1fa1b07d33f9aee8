//! The cutover report: a Markdown page for people and the [`Record`] as
//! JSON for tools. Both are written into the migration's directory at the
//! end of every cutover, finished or rolled back.

use super::state::{Outcome, Record, Step};
use crate::units::format_bytes;

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS.mmm UTC`.
pub fn timestamp(ms: u64) -> String {
    let (days, rest) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03} UTC",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// How long each step took, by name, for the downtime breakdown.
pub fn step_ms(record: &Record, step: Step) -> Option<u64> {
    record
        .steps
        .iter()
        .filter(|s| s.step == step)
        .filter_map(|s| Some(s.finished_ms? - s.started_ms))
        .reduce(|a, b| a + b)
}

pub fn markdown(r: &Record) -> String {
    let mut out = format!("# Cutover of {}\n\n", r.migration);
    let outcome = match &r.outcome {
        Outcome::Done => "**Done.** The clone serves on the production addresses.".to_string(),
        Outcome::Running => "**Unfinished.** The cutover did not reach its end.".to_string(),
        Outcome::Refused { reason } => {
            format!("**Refused.** Nothing was changed. Why: {reason}")
        }
        Outcome::RolledBack { reason } => {
            format!("**Rolled back.** The source serves again. Why: {reason}")
        }
        Outcome::RollbackFailed { reason, error } => format!(
            "**Rollback failed.** Why the cutover stopped: {reason}. What failed in the rollback: {error}. \
             Check the source by hand."
        ),
    };
    out.push_str(&outcome);
    out.push_str("\n\n");
    if !r.rehearsal.is_empty() {
        out.push_str(&format!("Rehearsal: {}\n\n", r.rehearsal));
    }
    if let Some(d) = r.downtime_ms {
        out.push_str(&format!(
            "Downtime (first service stopped to healthy clone): **{}**\n\n",
            secs(d)
        ));
        out.push_str("| Part | Time |\n|---|---|\n");
        for (name, steps) in [
            ("quiesce", &[Step::Quiesce][..]),
            ("final sync and verify", &[Step::FinalSync, Step::Verify]),
            (
                "moving the addresses (release, probe, identity)",
                &[Step::ReleaseSourceIp, Step::ProbeIp, Step::FinalizeIdentity],
            ),
            (
                "clone boot (until SSH answers)",
                &[Step::BootClone, Step::Announce],
            ),
            ("health check", &[Step::HealthCheck]),
        ] {
            let ms: u64 = steps.iter().filter_map(|s| step_ms(r, *s)).sum();
            out.push_str(&format!("| {name} | {} |\n", secs(ms)));
        }
        out.push('\n');
    }
    out.push_str(
        "## Timeline\n\n| Step | Started | Took | Result | Detail |\n|---|---|---|---|---|\n",
    );
    for s in &r.steps {
        let took = s
            .finished_ms
            .map(|f| secs(f - s.started_ms))
            .unwrap_or_else(|| "-".into());
        let result = match s.ok {
            Some(true) => "ok",
            Some(false) => "FAILED",
            None => "interrupted",
        };
        out.push_str(&format!(
            "| {} | {} | {took} | {result} | {} |\n",
            s.step.name(),
            timestamp(s.started_ms),
            s.detail.replace('|', "\\|").replace('\n', " ")
        ));
    }
    out.push_str("\n## Addresses\n\n");
    for a in &r.addresses {
        out.push_str(&format!(
            "- {} on {} (source MAC {})\n",
            a.cidr,
            a.iface,
            a.mac.as_deref().unwrap_or("unknown")
        ));
    }
    if let Some((fb, iface)) = &r.fallback {
        out.push_str(&format!(
            "- the source's fallback address: {fb} on {iface}\n"
        ));
    }
    if let Some(f) = &r.final_sync {
        out.push_str(&format!(
            "\n## Final sync\n\n{} files, {} ({} on the wire), {} removed, {} metadata updates, in {}\n",
            f.files,
            format_bytes(f.bytes),
            format_bytes(f.wire_bytes),
            f.removed,
            f.attrs,
            secs(f.milliseconds)
        ));
    }
    if let Some((checked, diffs)) = r.verify {
        out.push_str(&format!(
            "\nVerify of what it changed: {checked} checked, {diffs} differences\n"
        ));
    }
    if !r.stopped.is_empty() {
        out.push_str(&format!(
            "\n## Services\n\nStopped on the source ({}): {}\n",
            r.manager,
            r.stopped.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cutover::state::FinalSync;
    use crate::probe::addresses::ProdAddr;

    fn sample() -> Record {
        let mut r = Record::new("web01");
        let t0 = 1_764_633_600_000; // 2025-12-02 00:00:00 UTC
        let mut t = t0;
        for (step, took, detail) in [
            (Step::Preflight, 2100, "source and target reachable"),
            (Step::Quiesce, 800, "stopped hc-echo"),
            (Step::FinalSync, 9500, "12 files"),
            (Step::Verify, 3000, "12 checked, 0 differences"),
            (Step::ReleaseSourceIp, 1200, "198.51.100.11/24 off eth0"),
            (Step::ProbeIp, 3100, "nobody answers for 198.51.100.11"),
            (Step::FinalizeIdentity, 4000, "removed /.hotclone"),
            (Step::BootClone, 900, "QEMU started"),
            (Step::Announce, 45000, "SSH answers | with the source's key"),
            (
                Step::HealthCheck,
                1500,
                "hc-echo running; tcp 198.51.100.11:8080",
            ),
        ] {
            r.begin(step, t);
            t += took;
            r.end(true, detail, t);
        }
        r.outcome = Outcome::Done;
        r.addresses = vec![ProdAddr {
            iface: "eth0".into(),
            cidr: "198.51.100.11/24".into(),
            mac: Some("02:00:00:00:00:11".into()),
        }];
        r.fallback = Some(("198.51.100.61/24".into(), "eth0".into()));
        r.manager = "sysvinit scripts".into();
        r.stopped = vec!["hc-echo".into()];
        r.final_sync = Some(FinalSync {
            files: 12,
            bytes: 1_048_576,
            wire_bytes: 400_000,
            removed: 1,
            attrs: 3,
            milliseconds: 9500,
        });
        r.verify = Some((12, 0));
        r.downtime_ms = Some(t - r.down_since().unwrap());
        r
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(timestamp(1_764_633_600_123), "2025-12-02 00:00:00.123 UTC");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00.000 UTC");
    }

    #[test]
    fn report_golden() {
        crate::golden::assert_golden("cutover", "report.md", &markdown(&sample()));
    }

    #[test]
    fn a_rollback_says_why() {
        let mut r = sample();
        r.outcome = Outcome::RolledBack {
            reason: "02:aa:00:00:00:01 answers ARP for 198.51.100.11".into(),
        };
        r.downtime_ms = None;
        let md = markdown(&r);
        assert!(md.contains("**Rolled back.**"), "{md}");
        assert!(md.contains("02:aa:00:00:00:01 answers ARP"), "{md}");
        assert!(!md.contains("Downtime"), "{md}");
    }
}
