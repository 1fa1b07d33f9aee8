//! Progress for people and programs: indicatif bars on a terminal, plain
//! log lines otherwise, JSON lines with `--json`. All three implement the
//! library's `Progress` trait; the library never prints.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use hotclone::progress::{FileWarning, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// Counts shared by every display, for the summary and the exit code.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub files: u64,
    pub bytes: u64,
    pub warnings: u64,
}

pub enum Display {
    Bar { bar: Option<ProgressBar> },
    Lines { last: Instant },
    Json,
}

pub struct CliProgress {
    display: Display,
    pub counts: Counts,
    totals: (u64, u64),
    /// Phases show when they began, counted from here.
    started: Instant,
}

impl CliProgress {
    pub fn new(json: bool) -> CliProgress {
        let display = if json {
            Display::Json
        } else if std::io::stderr().is_terminal() {
            Display::Bar { bar: None }
        } else {
            Display::Lines {
                last: Instant::now(),
            }
        };
        CliProgress {
            display,
            counts: Counts::default(),
            totals: (0, 0),
            started: Instant::now(),
        }
    }

    fn json(value: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
    }

    pub fn finish(&mut self) {
        if let Display::Bar { bar: Some(bar) } = &self.display {
            bar.finish_and_clear();
        }
    }
}

impl Progress for CliProgress {
    fn phase(&mut self, name: &str) {
        let at = self.started.elapsed();
        let secs = at.as_secs();
        match &mut self.display {
            Display::Json => {
                // Milliseconds: a phase of a few seconds is measured
                // (`cargo xtask bench` times the copy phase by them).
                let at = (at.as_millis() as f64) / 1000.0;
                Self::json(serde_json::json!({"event": "phase", "name": name, "at_seconds": at}))
            }
            Display::Bar { bar } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                eprintln!("==> {name} (at {}:{:02})", secs / 60, secs % 60);
            }
            Display::Lines { .. } => eprintln!("==> {name} (at {}:{:02})", secs / 60, secs % 60),
        }
    }

    fn listed(&mut self, entries: u64) {
        match &mut self.display {
            Display::Json => Self::json(serde_json::json!({"event": "listed", "entries": entries})),
            Display::Bar { bar } => {
                let b = bar.get_or_insert_with(|| {
                    let b = ProgressBar::new_spinner();
                    b.enable_steady_tick(Duration::from_millis(250));
                    b
                });
                b.set_message(format!("{entries} entries listed"));
            }
            Display::Lines { last } if last.elapsed() > Duration::from_secs(10) => {
                *last = Instant::now();
                eprintln!("    {entries} entries listed");
            }
            Display::Lines { .. } => {}
        }
    }

    fn totals(&mut self, files: u64, bytes: u64) {
        self.totals = (files, bytes);
        match &mut self.display {
            Display::Json => {
                Self::json(serde_json::json!({"event": "totals", "files": files, "bytes": bytes}))
            }
            Display::Bar { bar } => {
                let b = ProgressBar::new(bytes);
                b.set_style(
                    ProgressStyle::with_template(
                        "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.enable_steady_tick(Duration::from_millis(250));
                *bar = Some(b);
            }
            Display::Lines { .. } => eprintln!(
                "    {files} files, {}",
                hotclone::units::format_bytes(bytes)
            ),
        }
    }

    fn file_done(&mut self, bytes: u64) {
        self.counts.files += 1;
        self.counts.bytes += bytes;
        match &mut self.display {
            Display::Bar { bar: Some(b) } => {
                b.inc(bytes);
                b.set_message(format!("{}/{} files", self.counts.files, self.totals.0));
            }
            // One line per file: a consumer can account for every byte
            // sent, even when the run is killed a moment later.
            Display::Json => Self::json(serde_json::json!({"event": "file", "bytes": bytes})),
            Display::Lines { last } if last.elapsed() > Duration::from_secs(10) => {
                *last = Instant::now();
                eprintln!(
                    "    {}/{} files, {}",
                    self.counts.files,
                    self.totals.0,
                    hotclone::units::format_bytes(self.counts.bytes)
                );
            }
            _ => {}
        }
    }

    fn warning(&mut self, warning: &FileWarning) {
        self.counts.warnings += 1;
        let (kind, reason) = match warning {
            FileWarning::Dirty { reason, .. } => ("dirty", reason.as_str()),
            FileWarning::Vanished { .. } => ("vanished", "gone before it was read"),
            FileWarning::Unreadable { reason, .. } => ("unreadable", reason.as_str()),
            FileWarning::Skipped { reason, .. } => ("skipped", reason.as_str()),
            FileWarning::Degraded { reason, .. } => ("degraded", reason.as_str()),
        };
        let path = warning.path().display().to_string();
        match &self.display {
            Display::Json => Self::json(
                serde_json::json!({"event": "warning", "kind": kind, "path": path, "reason": reason}),
            ),
            Display::Bar { bar: Some(b) } => {
                b.println(format!("warning: {kind}: {path}: {reason}"))
            }
            _ => eprintln!("warning: {kind}: {path}: {reason}"),
        }
    }

    fn note(&mut self, message: &str) {
        match &self.display {
            Display::Json => Self::json(serde_json::json!({"event": "note", "message": message})),
            Display::Bar { bar: Some(b) } => b.println(format!("    {message}")),
            _ => eprintln!("    {message}"),
        }
    }
}
