//! `cargo xtask test`: the whole suite, lab tests included, on a fresh
//! Debian machine as root. Installs what is missing, brings the lab up,
//! runs every test of the workspace, and takes the lab down again (unless
//! `--keep-lab`). A lab that cannot be built fails the run: lab tests never
//! skip.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{apt, lab};

/// Debian packages the suite needs beyond the lab's own
/// ([`lab::HOST_PACKAGES`]): QEMU for the boot tests of cloned disks (TCG)
/// and qemu-img for qcow2 images; zstd, which the rehearsal test repacks a
/// clone's initrd with.
pub const BOOT_PACKAGES: &[&str] = &["qemu-system-x86", "qemu-utils", "zstd"];

/// What building the rescue image and its ISO takes on the host; GNU
/// cpio, which a test unpacks hotclone's archives with; and grub-install
/// (grub2-common) with udevadm, which it finds a loop device's partitions
/// by: an image clone whose copy has no bootloader gets this host's GRUB.
pub const RESCUE_PACKAGES: &[&str] = &[
    "grub-common",
    "grub-pc-bin",
    "grub2-common",
    "udev",
    "grub-efi-amd64-bin",
    "xorriso",
    "mtools",
    "cpio",
    "binutils",
];

/// Everything `test` and `demo` need.
pub fn packages() -> Vec<&'static str> {
    lab::HOST_PACKAGES
        .iter()
        .chain(BOOT_PACKAGES)
        .chain(RESCUE_PACKAGES)
        .copied()
        .collect()
}

pub fn run(keep_lab: bool, cargo_args: &[String]) -> Result<()> {
    apt::ensure_packages(&packages())
        .context("installing the Debian packages the test suite needs")?;
    let opts = lab::LabOptions::from_env();
    let started = std::time::Instant::now();
    // The rescue image builds while the lab's roots do: both mostly wait
    // on the mirror and on dpkg.
    let (up, rescue) = std::thread::scope(|scope| {
        let rescue = scope.spawn(|| crate::rescue::ensure(&opts));
        let up = lab::up(&opts);
        (up, rescue.join())
    });
    up.context("bringing the lab up (lab tests need it; they never skip)")?;
    let rescue = rescue
        .map_err(|_| anyhow::anyhow!("building the rescue image panicked"))?
        .context("building the rescue image (the live-target tests boot it; they never skip)")?;
    eprintln!(
        "xtask test: lab up in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(lab::workspace_root())
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(cargo_args)
        .env("HOTCLONE_LAB_DIR", &opts.lab_dir)
        .env("HOTCLONE_RESCUE_DIR", &rescue)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let mut totals = Totals::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test's output")?;
            println!("{line}");
            totals.add(&line);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    // One closing line for the whole workspace, after cargo's per-binary ones.
    println!(
        "xtask test: {} passed, {} failed, {} ignored",
        totals.passed, totals.failed, totals.ignored
    );
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

/// Test counts summed over cargo's `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Totals {
    /// Add one line of cargo test output (other lines are ignored):
    /// `test result: ok. 85 passed; 0 failed; 1 ignored; 0 measured; ...`.
    pub fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn totals_sum_cargo_result_lines_and_ignore_the_rest() {
        let mut t = Totals::default();
        t.add("test result: ok. 85 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.14s");
        t.add("test result: FAILED. 8 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3.87s");
        t.add("test probe_debian12 ... ok");
        t.add("running 9 tests");
        assert_eq!(
            t,
            Totals {
                passed: 93,
                failed: 1,
                ignored: 1
            }
        );
    }
}
