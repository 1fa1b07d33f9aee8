//! `cargo xtask rescue-image`: the rescue image the lab's target VMs boot,
//! built by `hotclone rescue build` from this workspace's hotclone (debug
//! build, the one the tests run), cached by recipe in the lab cache.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::lab;

/// Where the lab keeps the built image (`HOTCLONE_RESCUE_DIR` for tests).
pub fn out_dir(opts: &lab::LabOptions) -> PathBuf {
    opts.lab_dir.join("rescue")
}

/// Build hotclone, then the rescue image (seconds when the base is cached
/// and nothing changed). Returns its directory.
pub fn ensure(opts: &lab::LabOptions) -> Result<PathBuf> {
    let root = lab::workspace_root();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["build", "--quiet", "--bin", "hotclone"])
        .status()
        .context("building hotclone")?;
    if !status.success() {
        bail!("building hotclone failed");
    }
    let out = out_dir(opts);
    let started = std::time::Instant::now();
    let status = Command::new(root.join("target/debug/hotclone"))
        .args(["rescue", "build", "--out"])
        .arg(&out)
        .arg("--cache")
        .arg(&opts.cache_dir)
        .arg("--mirror")
        .arg(lab::recipe::host_mirror())
        .status()
        .context("running hotclone rescue build")?;
    if !status.success() {
        bail!("hotclone rescue build failed ({status}); the rescue image is needed by the live-target tests");
    }
    eprintln!(
        "xtask: rescue image in {} ({:.0}s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}
