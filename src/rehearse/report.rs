//! The rehearsal's record and its Markdown report (`rehearsal-report.md`
//! and `.json` in the migration's directory, the console log beside them).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::console::Reached;
use super::prober::CheckResult;

/// Where the time went, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Parking the target and making the overlay and the network.
    pub overlay_ms: u64,
    /// QEMU's start to SSH answering with the source's host key.
    pub boot_ms: Option<u64>,
    /// SSH answering to the last health check.
    pub checks_ms: Option<u64>,
    /// Stopping the VM, removing the network and the overlay, un-parking.
    pub teardown_ms: u64,
    pub total_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rehearsal {
    pub migration: String,
    /// What was booted: the image, or the live VM's disk, under an overlay.
    pub disk: PathBuf,
    /// The conversion booted (the journal's stamp).
    pub conversion: Option<i64>,
    /// Unix seconds at the start.
    pub started_at: i64,
    pub passed: bool,
    pub reached: Reached,
    pub checks: Vec<CheckResult>,
    pub timings: Timings,
    /// The isolated network: namespace, the prober's addresses, and every
    /// interface in it (a bridge and the clone's tap, nothing else).
    pub namespace: String,
    /// The clone's NIC's MAC in the rehearsal (its own, random).
    pub mac: String,
    pub prober_addresses: Vec<String>,
    pub interfaces: String,
    /// The overlay, when kept (`--keep`).
    pub kept_overlay: Option<PathBuf>,
    pub console_log: PathBuf,
    pub console_tail: String,
}

impl Rehearsal {
    /// The first failure, as one line.
    pub fn first_failure(&self) -> Option<String> {
        self.checks
            .iter()
            .find(|c| c.passed == Some(false))
            .map(|c| format!("{}: {}", c.name, c.detail))
    }

    pub fn summary(&self) -> String {
        match self.first_failure() {
            Some(f) => format!("failed: {f}"),
            None => format!("passed: {} check(s)", self.checks.len()),
        }
    }
}

fn secs(ms: Option<u64>) -> String {
    ms.map(|m| format!("{:.1} s", m as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

pub fn markdown(r: &Rehearsal) -> String {
    let mut s = format!(
        "# Rehearsal of {}: {}\n\n",
        r.migration,
        if r.passed { "PASSED" } else { "FAILED" }
    );
    s.push_str(&format!(
        "- Disk: `{}`, read-only under a copy-on-write overlay ({})\n",
        r.disk.display(),
        match &r.kept_overlay {
            Some(p) => format!("kept at `{}`", p.display()),
            None => "discarded".into(),
        }
    ));
    s.push_str(&format!(
        "- Conversion rehearsed: {}\n",
        r.conversion
            .map(|c| c.to_string())
            .unwrap_or_else(|| "unknown".into())
    ));
    s.push_str(&format!(
        "- Network: namespace `{}` (prober {}, the clone's NIC {}), with no route out\n",
        r.namespace,
        r.prober_addresses.join(", "),
        r.mac
    ));
    s.push_str(&format!("- Boot reached: {}\n\n", r.reached.describe()));
    s.push_str("| check | result | after | detail |\n|---|---|---|---|\n");
    for c in &r.checks {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            c.name,
            match c.passed {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "not run",
            },
            secs(Some(c.after_ms)),
            c.detail.replace('|', "\\|")
        ));
    }
    let t = &r.timings;
    s.push_str(&format!(
        "\n## Timings\n\n| overlay and network | boot to SSH | checks | teardown | total |\n|---|---|---|---|---|\n| {} | {} | {} | {} | {} |\n",
        secs(Some(t.overlay_ms)),
        secs(t.boot_ms),
        secs(t.checks_ms),
        secs(Some(t.teardown_ms)),
        secs(Some(t.total_ms))
    ));
    s.push_str(&format!(
        "\n## Interfaces in the rehearsal's network\n\n```\n{}```\n",
        r.interfaces
    ));
    s.push_str(&format!(
        "\n## Console (last lines; all of it in `{}`)\n\n```\n{}\n```\n",
        r.console_log.display(),
        r.console_tail
    ));
    s
}
