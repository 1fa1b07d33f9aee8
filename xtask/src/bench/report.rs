//! The bench's results: the goals of issue 16 judged from the
//! measurements of one run, written as `results.json`, `results.md` and
//! `results.svg` (each goal's ratio against its bar). Pure functions over
//! the measurements, apart from [`write`].
use super::runner::{Measurement, Tool};
use anyhow::Result;
use std::fmt::Write as _;
use std::path::Path;

/// One goal, judged.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Goal {
    pub id: &'static str,
    pub what: String,
    /// The measured ratio (or value), and the bar it must reach.
    pub measured: Option<f64>,
    pub bar: f64,
    /// `true` when a larger measured value is better.
    pub higher_is_better: bool,
    pub met: Option<bool>,
    pub detail: String,
}

fn find<'a>(ms: &'a [Measurement], case: &str, tool: Tool) -> Option<&'a Measurement> {
    ms.iter().find(|m| m.case == case && m.tool == tool)
}

/// hotclone's copy time in `case` (its copy phase; a sync's whole run).
fn hotclone_copy(ms: &[Measurement], case: &str) -> Option<f64> {
    find(ms, case, Tool::Hotclone)
        .and_then(|m| m.copy_seconds)
        .or_else(|| find(ms, case, Tool::HotcloneSync).map(|m| m.seconds))
}

fn best_baseline<'a>(ms: &'a [Measurement], case: &str) -> Option<&'a Measurement> {
    ms.iter()
        .filter(|m| {
            m.case == case && matches!(m.tool, Tool::TarSsh | Tool::TarZstdSsh | Tool::Rsync)
        })
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
}

fn speedup(
    id: &'static str,
    what: &str,
    bar: f64,
    base: Option<&Measurement>,
    ours: Option<f64>,
) -> Goal {
    let measured = match (base, ours) {
        (Some(b), Some(o)) if o > 0.0 => Some(b.seconds / o),
        _ => None,
    };
    Goal {
        id,
        what: what.into(),
        measured,
        bar,
        higher_is_better: true,
        met: measured.map(|m| m >= bar),
        detail: match (base, ours) {
            (Some(b), Some(o)) => {
                format!("{}: {:.1} s; hotclone: {o:.1} s", b.tool.name(), b.seconds)
            }
            _ => "not measured in this run".into(),
        },
    }
}

/// Judge every goal from one run's measurements.
pub fn goals(ms: &[Measurement]) -> Vec<Goal> {
    let mut out = vec![
        speedup(
            "P1u",
            "W1 unshaped, against tar|ssh|tar (hotclone's copy phase, hashing every file)",
            1.0,
            find(ms, "W1", Tool::TarSsh),
            hotclone_copy(ms, "W1"),
        ),
        speedup(
            "P1s",
            "W2 unshaped, against tar|ssh|tar",
            1.0,
            find(ms, "W2", Tool::TarSsh),
            hotclone_copy(ms, "W2"),
        ),
        speedup(
            "P1",
            "W1 + W3 at 1 Gbit/s, against the best baseline",
            1.0,
            best_baseline(ms, "W1+W3"),
            hotclone_copy(ms, "W1+W3"),
        ),
    ];
    let link = find(ms, "W1+W3", Tool::Hotclone).and_then(|m| {
        let secs = m.copy_seconds?;
        m.link
            .bytes_per_sec()
            .map(|rate| m.link_bytes as f64 / secs / rate)
    });
    out.push(Goal {
        id: "P1-link",
        what: "W1 + W3 at 1 Gbit/s: share of the link hotclone's copy phase uses".into(),
        measured: link,
        bar: 0.85,
        higher_is_better: true,
        met: link.map(|l| l >= 0.85),
        detail: "bytes the source sent / copy phase / 125 MB/s".into(),
    });
    out.push(speedup(
        "P2",
        "W1 at 100 Mbit/s, source without zstd, against tar|ssh|tar",
        2.0,
        find(ms, "W1-100M", Tool::TarSsh),
        hotclone_copy(ms, "W1-100M"),
    ));
    out.push(speedup(
        "P3",
        "W2 after 1 % churn: hotclone sync against an rsync re-run over ssh",
        3.0,
        find(ms, "W2-churn", Tool::Rsync),
        find(ms, "W2-churn", Tool::HotcloneSync).map(|m| m.seconds),
    ));
    let w4 = find(ms, "W4-1M", Tool::Hotclone);
    let rss = w4
        .and_then(|m| m.client_peak_rss_kib)
        .map(|k| k as f64 / 1024.0);
    let per_entry = |case: &str| {
        find(ms, case, Tool::Hotclone)
            .and_then(|m| Some(m.copy_seconds.unwrap_or(m.seconds) / m.files? as f64 * 1e6))
    };
    out.push(Goal {
        id: "P5",
        what: "W4, 1M entries: client peak RSS (MiB)".into(),
        measured: rss,
        bar: 256.0,
        higher_is_better: false,
        met: rss.map(|r| r <= 256.0),
        detail: format!(
            "copy µs per entry at 250k / 500k / 1M: {} / {} / {}",
            fmt_opt(per_entry("W4-250k")),
            fmt_opt(per_entry("W4-500k")),
            fmt_opt(per_entry("W4-1M"))
        ),
    });
    out
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into())
}

fn mib(k: Option<u64>) -> String {
    k.map(|k| format!("{:.0}", k as f64 / 1024.0))
        .unwrap_or_else(|| "".into())
}

/// The Markdown report.
/// `text` in a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

pub fn markdown(ms: &[Measurement], goals: &[Goal], header: &str) -> String {
    let mut s = format!("# hotclone bench\n\n{header}\n\n## Goals\n\n| id | what | measured | goal | met | detail |\n|---|---|---|---|---|---|\n");
    for g in goals {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} {} | {} | {} |",
            g.id,
            cell(&g.what),
            fmt_measured(g),
            if g.higher_is_better { "≥" } else { "≤" },
            g.bar,
            match g.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            },
            cell(&g.detail)
        );
    }
    s += "\n## Measurements\n\nEach run starts with the page cache dropped, into a fresh ext4 (hotclone: a fresh image it partitions and formats itself), and ends when its copy is durable (the baselines with `sync -f` of their target; hotclone acks only what a `syncfs` made durable). hotclone's *copy* is its copy phase (listing to converting); *total* includes preparing the disk and converting the copy so it boots.\n\n| case | link | tool | total s | copy s | MB sent by the source | files | client MiB | agent MiB |\n|---|---|---|---|---|---|---|---|---|\n";
    for m in ms {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {} | {:.1} | {} | {} | {} |",
            m.case,
            m.link.name(),
            cell(m.tool.name()),
            m.seconds,
            fmt_opt(m.copy_seconds),
            m.link_bytes as f64 / 1e6,
            m.files.map(|f| f.to_string()).unwrap_or_default(),
            mib(m.client_peak_rss_kib),
            mib(m.agent_peak_rss_kib),
        );
    }
    s
}

fn fmt_measured(g: &Goal) -> String {
    match (g.measured, g.higher_is_better) {
        (Some(v), true) if g.bar < 1.0 => format!("{:.0} %", v * 100.0),
        (Some(v), true) => format!("{v:.2}×"),
        (Some(v), false) => format!("{v:.0}"),
        (None, _) => "–".into(),
    }
}

/// A bar chart of each goal's measured value as a share of its bar
/// (100 % = the goal is just met), as SVG.
pub fn svg(goals: &[Goal]) -> String {
    let (w, row, left) = (720.0, 34.0, 90.0);
    let h = 40.0 + row * goals.len() as f64;
    let scale = (w - left - 60.0) / 2.0; // 200 % fills the width
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <text x=\"10\" y=\"18\">each goal, measured as a share of its bar (line = goal met)</text>\n"
    );
    for (i, g) in goals.iter().enumerate() {
        let y = 30.0 + row * i as f64;
        let share = g.measured.map(|m| {
            if g.higher_is_better {
                m / g.bar
            } else {
                g.bar / m.max(1e-9)
            }
        });
        let len = share.unwrap_or(0.0).min(2.0) * scale;
        let color = if g.met == Some(true) {
            "#3a7d44"
        } else {
            "#b23a3a"
        };
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{}\">{}</text><rect x=\"{left}\" y=\"{y}\" width=\"{len:.1}\" height=\"{}\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{}\">{}</text>",
            y + 17.0,
            g.id,
            row - 10.0,
            left + len + 5.0,
            y + 17.0,
            fmt_measured(g)
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{x}\" y1=\"24\" x2=\"{x}\" y2=\"{h}\" stroke=\"black\" stroke-dasharray=\"4 3\"/>\n</svg>",
        x = left + scale
    );
    s
}

/// Write results.json, results.md and results.svg into `dir`.
pub fn write(dir: &Path, ms: &[Measurement], header: &str) -> Result<Vec<Goal>> {
    std::fs::create_dir_all(dir)?;
    let goals = goals(ms);
    let json = serde_json::json!({ "header": header, "goals": goals, "measurements": ms });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    std::fs::write(dir.join("results.md"), markdown(ms, &goals, header))?;
    std::fs::write(dir.join("results.svg"), svg(&goals))?;
    Ok(goals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::env::Link;

    fn m(case: &str, tool: Tool, seconds: f64, copy: Option<f64>) -> Measurement {
        Measurement {
            case: case.into(),
            link: Link::Gbit,
            workload: case.into(),
            tool,
            seconds,
            link_bytes: 1_000_000_000,
            copy_seconds: copy,
            client_peak_rss_kib: Some(100 << 10),
            agent_peak_rss_kib: None,
            files: Some(1_000_000),
            bytes: None,
            phases: Vec::new(),
        }
    }

    #[test]
    fn goals_are_ratios_against_the_baselines_of_the_same_run() {
        let ms = [
            m("W1", Tool::TarSsh, 10.0, None),
            m("W1", Tool::Hotclone, 30.0, Some(8.0)),
            m("W1+W3", Tool::TarSsh, 12.0, None),
            m("W1+W3", Tool::Rsync, 9.0, None),
            m("W1+W3", Tool::Hotclone, 20.0, Some(10.0)),
            m("W2-churn", Tool::Rsync, 6.0, None),
            m("W2-churn", Tool::HotcloneSync, 3.0, None),
            m("W4-1M", Tool::Hotclone, 50.0, None),
        ];
        let g = goals(&ms);
        let by = |id: &str| g.iter().find(|g| g.id == id).unwrap();
        assert_eq!(by("P1u").measured, Some(1.25));
        assert_eq!(by("P1u").met, Some(true));
        assert_eq!(by("P1").measured, Some(0.9), "against rsync, the best");
        assert_eq!(by("P1").met, Some(false));
        assert_eq!(by("P1-link").measured, Some(0.8));
        assert_eq!(by("P3").measured, Some(2.0));
        assert_eq!(by("P5").met, Some(true));
        assert_eq!(by("P2").met, None, "not measured");
        assert!(svg(&g).contains(">P3<"));
    }
}
