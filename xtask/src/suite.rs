//! `cargo xtask test`: the whole suite, lab tests included, on a fresh
//! Debian machine as root. Installs what is missing, brings the lab up,
//! runs every test of the workspace, and takes the lab down again (unless
//! `--keep-lab`). A lab that cannot be built fails the run: lab tests never
//! skip.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{apt, lab};

/// Debian packages the suite needs beyond the Rust toolchain.
pub const PACKAGES: &[&str] = &[
    "debootstrap",
    "dropbear-bin",
    "busybox-static",
    "openssh-client",
    "e2fsprogs",
    "iproute2",
    "util-linux",
    "tcpdump",
    "arping",
];

pub fn run(keep_lab: bool, cargo_args: &[String]) -> Result<()> {
    apt::ensure_packages(PACKAGES).context("installing the Debian packages the test suite needs")?;
    let opts = lab::LabOptions::from_env();
    let started = std::time::Instant::now();
    lab::up(&opts).context("bringing the lab up (lab tests need it; they never skip)")?;
    eprintln!("xtask test: lab up in {:.0}s", started.elapsed().as_secs_f64());
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(lab::workspace_root())
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(cargo_args)
        .env("HOTCLONE_LAB_DIR", &opts.lab_dir)
        .status()
        .context("running cargo test")?;
    if !keep_lab {
        if let Err(e) = lab::down_with(&opts) {
            eprintln!("xtask test: taking the lab down failed: {e:#}");
        }
    }
    if !status.success() {
        bail!("the test suite failed ({status})");
    }
    Ok(())
}
