//! `cargo xtask demo`: the lab, and hotclone at work on it. For now this is
//! a probe of every lab source; it grows into the full migration.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{apt, lab, suite};

pub fn run() -> Result<()> {
    apt::ensure_packages(&suite::packages())?;
    let root = lab::workspace_root();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args(["build", "--quiet", "--bin", "hotclone"])
        .status()
        .context("building hotclone")?;
    if !status.success() {
        bail!("building hotclone failed");
    }
    let opts = lab::LabOptions::from_env();
    let info = lab::up(&opts)?;
    let hotclone = root.join("target/debug/hotclone");
    for source in &info.sources {
        println!(
            "\n=== hotclone probe {} ({}, {} sshd) ===",
            source.name, source.ip, source.sshd
        );
        let status = Command::new("ip")
            .args(["netns", "exec", &info.client_ns])
            .arg(&hotclone)
            .args(["probe", "--batch", "-F"])
            .arg(&info.ssh_config)
            .arg(&source.name)
            .status()
            .with_context(|| format!("running hotclone probe {}", source.name))?;
        if !status.success() {
            bail!("hotclone probe {} failed ({status})", source.name);
        }
    }
    println!(
        "\nThe lab stays up: try `ip netns exec {} {} probe -F {} debian12`, and `cargo xtask lab down` when done.",
        info.client_ns,
        hotclone.display(),
        info.ssh_config.display()
    );
    Ok(())
}
