//! `cargo xtask test`: the whole suite, lab tests included, on a fresh
//! Debian machine as root. Installs what is missing, brings the lab up,
//! runs every test of the workspace, and takes the lab down again (unless
//! `--keep-lab`). A lab that cannot be built fails the run: lab tests never
//! skip.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{apt, lab};

/// Debian packages the suite needs beyond the lab's own
/// ([`lab::HOST_PACKAGES`], QEMU among them, which also boots the cloned
/// disks and makes qcow2 images): zstd, which the rehearsal test repacks
/// a clone's initrd with.
pub const BOOT_PACKAGES: &[&str] = &["zstd"];

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
    let env = [
        ("HOTCLONE_LAB_DIR", opts.lab_dir.clone()),
        ("HOTCLONE_RESCUE_DIR", rescue),
    ];
    let outcome = if cargo_args.is_empty() {
        run_in_two_lanes(&env)
    } else {
        run_cargo_test(&env, cargo_args)
    };
    if !keep_lab {
        if let Err(e) = lab::down_with(&opts) {
            eprintln!("xtask test: taking the lab down failed: {e:#}");
        }
    }
    let totals = outcome?;
    // One closing line for the whole workspace, after the per-binary ones.
    println!(
        "xtask test: {} passed, {} failed, {} ignored",
        totals.passed, totals.failed, totals.ignored
    );
    if totals.failed_binaries > 0 {
        bail!(
            "the test suite failed ({} test binaries failed)",
            totals.failed_binaries
        );
    }
    Ok(())
}

/// Test binaries with lab resources of their own (a source, a VM address,
/// migration names), which run beside the others. live_lab alone was
/// about half of the suite's time, much of it one emulated vCPU or a wait;
/// beside the rest, the whole run went from 73.6 to 68.7 minutes with one
/// more boot test (each lane runs 1.5-1.8x slower than alone).
pub const BESIDE: &[&str] = &["live_lab"];

/// `cargo test --workspace --no-fail-fast ARGS`, as a developer runs it
/// (`cargo xtask test -- --test clone_lab`): one binary after another.
fn run_cargo_test(env: &[(&str, PathBuf)], cargo_args: &[String]) -> Result<Totals> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(lab::workspace_root())
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(cargo_args)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let mut totals = Totals::default();
    let ok = stream(cmd, &mut totals, &mut std::io::stdout())?;
    totals.failed_binaries += u64::from(!ok);
    Ok(totals)
}

/// Build every test binary, then run the [`BESIDE`] ones in a lane of
/// their own, its output kept in `target/test-logs/` and printed when it
/// ends, while the rest run one after another on this output.
fn run_in_two_lanes(env: &[(&str, PathBuf)]) -> Result<Totals> {
    let binaries = test_binaries()?;
    let (beside, main): (Vec<_>, Vec<_>) = binaries
        .into_iter()
        .partition(|b| BESIDE.contains(&b.name.as_str()));
    let logs = lab::workspace_root().join("target/test-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let (main_totals, beside_result) = std::thread::scope(|scope| {
        let lane = scope.spawn(|| -> Result<(Totals, Vec<PathBuf>)> {
            let mut totals = Totals::default();
            let mut written = Vec::new();
            for b in &beside {
                let log = logs.join(format!("{}.log", b.name));
                let mut file = std::fs::File::create(&log)
                    .with_context(|| format!("creating {}", log.display()))?;
                run_binary(b, env, &mut totals, &mut file)?;
                written.push(log);
            }
            Ok((totals, written))
        });
        let mut totals = Totals::default();
        let main_result = main
            .iter()
            .try_for_each(|b| run_binary(b, env, &mut totals, &mut std::io::stdout()));
        let beside = lane
            .join()
            .map_err(|_| anyhow::anyhow!("the lane beside panicked"))
            .and_then(|r| r);
        (main_result.map(|()| totals), beside)
    });
    let mut totals = main_totals?;
    let (beside_totals, logs) = beside_result?;
    for log in logs {
        println!("\n==> {} (ran beside the others)", log.display());
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        print!("{text}");
    }
    totals.merge(&beside_totals);
    Ok(totals)
}

/// A test executable cargo built, and the package directory it runs in
/// (cargo runs tests there).
#[derive(Debug)]
struct TestBinary {
    name: String,
    executable: PathBuf,
    package_dir: PathBuf,
}

/// `cargo test --workspace --no-run`: every test executable, unit tests
/// first, then by name.
fn test_binaries() -> Result<Vec<TestBinary>> {
    let out = Command::new(cargo())
        .current_dir(lab::workspace_root())
        .args([
            "test",
            "--workspace",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the tests failed ({})", out.status);
    }
    let mut binaries = parse_test_binaries(&String::from_utf8_lossy(&out.stdout));
    binaries.sort_by_key(|b| (!b.name.starts_with("unittests "), b.name.clone()));
    Ok(binaries)
}

/// The test executables in cargo's JSON messages.
fn parse_test_binaries(messages: &str) -> Vec<TestBinary> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| {
            let executable = PathBuf::from(m["executable"].as_str()?);
            let manifest = PathBuf::from(m["manifest_path"].as_str()?);
            let target = m["target"]["name"].as_str()?;
            let kinds = m["target"]["kind"].as_array()?;
            let name = if kinds.iter().any(|k| k == "test") {
                target.to_string()
            } else {
                format!("unittests {target} ({})", kinds.first()?.as_str()?)
            };
            Some(TestBinary {
                name,
                executable,
                package_dir: manifest.parent()?.to_path_buf(),
            })
        })
        .collect()
}

/// Run one test binary, its stdout to `out` and counted; stderr to `out`
/// too when `out` is a log, inherited otherwise. A failed binary is
/// counted, not an error: every binary runs (`--no-fail-fast`).
fn run_binary(
    b: &TestBinary,
    env: &[(&str, PathBuf)],
    totals: &mut Totals,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    writeln!(out, "     Running {} ({})", b.name, b.executable.display())?;
    let mut cmd = Command::new(&b.executable);
    cmd.current_dir(&b.package_dir)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let ok = stream(cmd, totals, out)?;
    if !ok {
        writeln!(out, "error: test failed, {}", b.name)?;
        totals.failed_binaries += 1;
    }
    Ok(())
}

/// Run `cmd`, copying its stdout (and stderr) line by line to `out` and
/// counting the result lines. Whether it succeeded.
fn stream(mut cmd: Command, totals: &mut Totals, out: &mut dyn std::io::Write) -> Result<bool> {
    let (reader, writer) = std::io::pipe().context("making a pipe")?;
    let mut child = cmd
        .stdout(writer.try_clone().context("duplicating a pipe")?)
        .stderr(writer)
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    // The parent's copies of the write end go with `cmd`: the reader
    // ends when the child (and what it started in the background) exits.
    drop(cmd);
    for line in BufReader::new(reader).lines() {
        let line = line.context("reading test output")?;
        writeln!(out, "{line}")?;
        totals.add(&line);
    }
    let status = child.wait().context("waiting for a test binary")?;
    Ok(status.success())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Test counts summed over cargo's `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// Test binaries that exited non-zero (a panic outside a test, a
    /// build failure: not always in a result line).
    pub failed_binaries: u64,
}

impl Totals {
    pub fn merge(&mut self, other: &Totals) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.failed_binaries += other.failed_binaries;
    }

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
    use super::{parse_test_binaries, Totals};

    #[test]
    fn test_binaries_are_the_test_profile_artifacts_with_their_package_dir() {
        let messages = [
            r#"{"reason":"compiler-artifact","package_id":"x","manifest_path":"/w/Cargo.toml","target":{"kind":["lib"],"name":"hotclone"},"profile":{"test":true},"executable":"/w/target/debug/deps/hotclone-1"}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/w/Cargo.toml","target":{"kind":["lib"],"name":"hotclone"},"profile":{"test":false},"executable":null}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/w/Cargo.toml","target":{"kind":["test"],"name":"live_lab"},"profile":{"test":true},"executable":"/w/target/debug/deps/live_lab-2"}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/w/xtask/Cargo.toml","target":{"kind":["bin"],"name":"xtask"},"profile":{"test":true},"executable":"/w/target/debug/deps/xtask-3"}"#,
            r#"{"reason":"build-finished","success":true}"#,
            "not json",
        ]
        .join("\n");
        let found: Vec<(String, String, String)> = parse_test_binaries(&messages)
            .into_iter()
            .map(|b| {
                (
                    b.name,
                    b.executable.display().to_string(),
                    b.package_dir.display().to_string(),
                )
            })
            .collect();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            found,
            [
                s(
                    "unittests hotclone (lib)",
                    "/w/target/debug/deps/hotclone-1",
                    "/w"
                ),
                s("live_lab", "/w/target/debug/deps/live_lab-2", "/w"),
                s(
                    "unittests xtask (bin)",
                    "/w/target/debug/deps/xtask-3",
                    "/w/xtask"
                ),
            ]
        );
    }

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
                ignored: 1,
                failed_binaries: 0
            }
        );
    }
}
