//! `cargo xtask bench`: hotclone's data path against `tar | ssh | tar`,
//! `tar | zstd | ssh` and `rsync` over OpenSSH, measured in the same run,
//! from the same bench source, each into a fresh target with the page
//! cache dropped. The goals (issue 16) are ratios between figures of one
//! run; nothing here compares against a number from another machine.
//!
//! The bench runs on hosts of its own ([`env`]): it needs no lab, and a
//! lab that is up is left alone (but shares the CPUs: bench on a quiet
//! machine). A failed run writes no results and exits non-zero.
pub mod env;
pub mod image;
pub mod report;
pub mod runner;
pub mod workload;

use anyhow::{Context, Result};
use env::{BenchEnv, Link};
use runner::{Measurement, Runner, Tool, Workload};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Only build the bench source's disk (cached), run nothing.
    #[arg(long)]
    pub image_only: bool,
    /// Run only these cases (comma-separated): W1, W2 (with W2-churn and
    /// W2-quiet), W4, W1+W3, W1-100M.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// (internal) Write the workloads into this directory and exit.
    #[arg(long, hide = true)]
    pub generate_into: Option<PathBuf>,
}

const W1: Workload = Workload {
    id: "W1",
    parts: &[],
};
const W2: Workload = Workload {
    id: "W2",
    parts: &["w2"],
};
const W1_W3: Workload = Workload {
    id: "W1+W3",
    parts: &["w3"],
};
const W4: [(&str, Workload); 3] = [
    (
        "W4-250k",
        Workload {
            id: "W4 250k",
            parts: &["w4a"],
        },
    ),
    (
        "W4-500k",
        Workload {
            id: "W4 500k",
            parts: &["w4a", "w4b"],
        },
    ),
    (
        "W4-1M",
        Workload {
            id: "W4 1M",
            parts: &["w4a", "w4b", "w4c"],
        },
    ),
];
const BASELINES: [Tool; 3] = [Tool::TarSsh, Tool::TarZstdSsh, Tool::Rsync];
const CASES: [&str; 5] = ["W1", "W2", "W4", "W1+W3", "W1-100M"];

pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(dir) = &args.generate_into {
        return workload::generate(dir);
    }
    for case in &args.only {
        anyhow::ensure!(
            CASES.contains(&case.as_str()),
            "unknown case {case:?}; the cases are {}",
            CASES.join(", ")
        );
    }
    let wanted = |case: &str| args.only.is_empty() || args.only.iter().any(|c| c == case);
    let started = Instant::now();
    let opts = crate::lab::LabOptions::from_env();
    // debootstrap builds the bench disk's root (on a fresh machine it was
    // missing: "debootstrap: not found").
    crate::apt::ensure_packages(&[
        "debootstrap",
        "rsync",
        "zstd",
        "openssh-client",
        "e2fsprogs",
        "iproute2",
    ])?;
    let disk = image::ensure(&opts.cache_dir)?;
    if args.image_only {
        println!("{}", disk.display());
        return Ok(());
    }
    let root = crate::lab::workspace_root();
    let hotclone = build_hotclone(&root)?;
    let dir = root.join("target/bench");
    let env = BenchEnv::up(&dir.join("run"), &opts.cache_dir, &disk)?;
    let disk = disk.as_path();
    let mut ms = Vec::new();
    let mut r = Runner {
        env: &env,
        hotclone,
        link: Link::Unshaped,
    };
    let _ = std::fs::remove_dir_all(r.home());
    if wanted("W1") {
        ms.extend(compare(&r, "W1", &W1)?);
    }
    if wanted("W2") {
        ms.extend(delta(&r, disk)?);
    }
    if wanted("W4") {
        for (case, w) in &W4 {
            ms.push(r.clone_with(case, w, &case.to_lowercase(), &["--copy-only"])?);
        }
    }
    if wanted("W1+W3") {
        r.link = Link::Gbit;
        env.shape(r.link)?;
        ms.extend(compare(&r, "W1+W3", &W1_W3)?);
    }
    if wanted("W1-100M") {
        r.link = Link::Mbit100;
        env.shape(r.link)?;
        let dirty = image::Dirty::mark(disk)?;
        let hidden = HiddenZstd::new(&env.source_root)?;
        let (m, _) = r.baseline("W1-100M", &W1, Tool::TarSsh, false)?;
        ms.push(m);
        ms.push(r.clone("W1-100M", &W1, "w1-100m")?);
        hidden.restore()?;
        dirty.clean()?;
    }
    env.shape(Link::Unshaped)?;
    let header = format!(
        "`cargo xtask bench` on {} ({} CPUs), {}; the whole run took {:.0} s.",
        host_name(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        today(),
        started.elapsed().as_secs_f64()
    );
    report::write(&dir, &ms, &header)?;
    print!("{}", std::fs::read_to_string(dir.join("results.md"))?);
    eprintln!("bench: wrote {}/results.{{md,json,svg}}", dir.display());
    Ok(())
}

/// Every baseline, then hotclone, on one workload.
fn compare(r: &Runner, case: &str, w: &Workload) -> Result<Vec<Measurement>> {
    let mut ms = Vec::new();
    for tool in BASELINES {
        ms.push(r.baseline(case, w, tool, false)?.0);
    }
    ms.push(r.clone(case, w, &case.to_lowercase().replace('+', "-"))?);
    Ok(ms)
}

/// W2: every baseline and hotclone's clone; then 1 % churn on the source,
/// an rsync re-run over rsync's copy against `hotclone sync`; then both
/// again with nothing changed.
fn delta(r: &Runner, disk: &Path) -> Result<Vec<Measurement>> {
    let mut ms = Vec::new();
    let (tar, _) = r.baseline("W2", &W2, Tool::TarSsh, false)?;
    let (zstd, _) = r.baseline("W2", &W2, Tool::TarZstdSsh, false)?;
    let (rsync, kept) = r.baseline("W2", &W2, Tool::Rsync, true)?;
    let kept = kept.context("rsync's copy was not kept")?;
    ms.extend([tar, zstd, rsync]);
    ms.push(r.clone("W2", &W2, "w2")?);
    let dirty = image::Dirty::mark(disk)?;
    let churned = workload::churn(
        &r.env
            .source_root
            .join(workload::ROOT.trim_start_matches('/')),
        16,
        &r.env.dir.join("churn-saved.tar"),
    )?;
    eprintln!(
        "bench: churned W2: {} rewritten, {} created, {} deleted",
        churned.rewritten, churned.created, churned.deleted
    );
    ms.push(r.baseline_into("W2-churn", &W2, Tool::Rsync, &kept.mnt)?);
    ms.push(r.sync("W2-churn", &W2, "w2")?);
    ms.push(r.baseline_into("W2-quiet", &W2, Tool::Rsync, &kept.mnt)?);
    ms.push(r.sync("W2-quiet", &W2, "w2")?);
    churned.restore()?;
    dirty.clean()?;
    Ok(ms)
}

/// The release build of hotclone the bench runs.
fn build_hotclone(root: &Path) -> Result<PathBuf> {
    crate::sh::cmd("cargo")
        .args(["build", "--release", "--bin", "hotclone"])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .run()
        .context("building hotclone (release)")?;
    Ok(root.join("target/release/hotclone"))
}

/// zstd taken off the source's PATH (P2: a source with gzip but no
/// zstd) until [`HiddenZstd::restore`].
struct HiddenZstd {
    from: PathBuf,
    to: PathBuf,
}

impl HiddenZstd {
    fn new(source_root: &Path) -> Result<HiddenZstd> {
        let from = source_root.join("usr/bin/zstd");
        let to = source_root.join("usr/bin/.zstd.bench-hidden");
        std::fs::rename(&from, &to).context("hiding zstd on the bench source")?;
        Ok(HiddenZstd { from, to })
    }

    fn restore(self) -> Result<()> {
        std::fs::rename(&self.to, &self.from).context("putting zstd back on the bench source")
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn today() -> String {
    crate::sh::run("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
