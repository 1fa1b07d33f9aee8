//! One measured copy: a tool (hotclone or a baseline) copying a workload
//! from the bench source into a fresh target, with the page cache dropped
//! first. What it records: wall time, the bytes the source sent on its
//! link, hotclone's phases, and the peak RSS of hotclone's client and
//! agent (sampled from `/proc/PID/status` VmHWM every 50 ms).
//!
//! A tool that exits non-zero fails the bench with its stderr: a figure
//! from a copy that did not finish is never reported.
use super::env::{self, BenchEnv, Link, CLIENT_NS};
use super::workload;
use crate::sh;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What is copied: the source's root, plus these parts of `/srv/bench`
/// (the other parts are excluded).
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub id: &'static str,
    pub parts: &'static [&'static str],
}

const ALL_PARTS: [&str; 5] = ["w2", "w3", "w4a", "w4b", "w4c"];

impl Workload {
    /// Absolute paths on the source that this workload leaves out.
    pub fn excludes(&self) -> Vec<String> {
        ALL_PARTS
            .iter()
            .filter(|p| !self.parts.contains(p))
            .map(|p| format!("{}/{p}", workload::ROOT))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Tool {
    /// `ssh 'tar -c' | tar -x`
    TarSsh,
    /// `ssh 'tar -c | zstd -1 -T0' | zstd -d | tar -x`
    TarZstdSsh,
    /// `rsync -aHAXS --numeric-ids` over ssh
    Rsync,
    /// `hotclone clone`
    Hotclone,
    /// `hotclone sync`
    HotcloneSync,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::TarSsh => "tar|ssh|tar",
            Tool::TarZstdSsh => "tar|zstd -1 -T0|ssh",
            Tool::Rsync => "rsync -aHAXS over ssh",
            Tool::Hotclone => "hotclone clone",
            Tool::HotcloneSync => "hotclone sync",
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measurement {
    pub case: String,
    pub link: Link,
    pub workload: String,
    pub tool: Tool,
    pub seconds: f64,
    /// Bytes the source sent on its link during the run.
    pub link_bytes: u64,
    /// hotclone: from "listing the source" to "converting".
    pub copy_seconds: Option<f64>,
    pub client_peak_rss_kib: Option<u64>,
    pub agent_peak_rss_kib: Option<u64>,
    /// hotclone: files and bytes it reported.
    pub files: Option<u64>,
    pub bytes: Option<u64>,
    /// hotclone: each phase it reported, and when it began (seconds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<(String, f64)>,
}

/// A fresh ext4 for a baseline, loop-mounted on the host (the client
/// namespace sees the host's mounts). Unmounted and deleted on drop.
pub struct FreshFs {
    pub mnt: PathBuf,
    img: PathBuf,
}

impl FreshFs {
    pub fn new(dir: &Path, name: &str) -> Result<FreshFs> {
        let img = dir.join(format!("{name}.img"));
        let mnt = dir.join(format!("{name}.mnt"));
        let _ = fs::remove_file(&img);
        fs::create_dir_all(&mnt)?;
        fs::File::create(&img)?.set_len(16 << 30)?;
        sh::cmd("mkfs.ext4")
            .args(["-q", "-F", "-N", "1700000"])
            .arg(&img)
            .run()?;
        sh::cmd("mount")
            .arg("-o")
            .arg("loop")
            .arg(&img)
            .arg(&mnt)
            .run()?;
        Ok(FreshFs { mnt, img })
    }
}

impl Drop for FreshFs {
    fn drop(&mut self) {
        let _ = sh::cmd("umount").arg(&self.mnt).run();
        let _ = fs::remove_file(&self.img);
        let _ = fs::remove_dir(&self.mnt);
    }
}

/// Runs tools against the bench env.
pub struct Runner<'a> {
    pub env: &'a BenchEnv,
    pub hotclone: PathBuf,
    pub link: Link,
}

impl Runner<'_> {
    fn targets(&self) -> PathBuf {
        self.env.dir.join("targets")
    }

    pub fn home(&self) -> PathBuf {
        self.env.dir.join("home")
    }

    /// A baseline into a fresh filesystem; `keep` returns the filesystem
    /// (for a re-run over it), else it is dropped.
    pub fn baseline(
        &self,
        case: &str,
        w: &Workload,
        tool: Tool,
        keep: bool,
    ) -> Result<(Measurement, Option<FreshFs>)> {
        fs::create_dir_all(self.targets())?;
        let target = FreshFs::new(&self.targets(), &format!("{case}-{:?}", tool))?;
        let m = self.baseline_into(case, w, tool, &target.mnt)?;
        Ok((m, keep.then_some(target)))
    }

    /// A baseline into `dest` as it is (an rsync re-run over its copy).
    pub fn baseline_into(
        &self,
        case: &str,
        w: &Workload,
        tool: Tool,
        dest: &Path,
    ) -> Result<Measurement> {
        let script = baseline_script(tool, &w.excludes());
        let cmd = sh::netns(CLIENT_NS, "bash")
            .args(["-c", &script, "baseline"])
            .env("CFG", &self.env.ssh_config)
            .env("T", dest);
        self.measure(case, w, tool, cmd)
    }

    /// `hotclone clone` into a fresh image, migration `name`.
    pub fn clone(&self, case: &str, w: &Workload, name: &str) -> Result<Measurement> {
        self.clone_with(case, w, name, &[])
    }

    /// `hotclone clone` with `args` added (W4: `--copy-only`, since its
    /// figures are the copy's memory and time; converting the same
    /// debian12 root three more times would only lengthen the run).
    pub fn clone_with(
        &self,
        case: &str,
        w: &Workload,
        name: &str,
        args: &[&str],
    ) -> Result<Measurement> {
        fs::create_dir_all(self.targets())?;
        let img = self.targets().join(format!("{name}.img"));
        let _ = fs::remove_file(&img);
        // What a clone that only copied left (its disk, not finished).
        let _ = fs::remove_file(img.with_extension("raw.partial"));
        let mut cmd = self
            .hotclone_cmd("clone")
            .arg("bench")
            .arg("--target")
            .arg(format!("image:{}", img.display()))
            .args(["--name", name])
            .args(args);
        for e in w.excludes() {
            cmd = cmd.args(["--exclude", &e]);
        }
        self.measure(case, w, Tool::Hotclone, cmd)
    }

    /// `hotclone sync NAME`.
    pub fn sync(&self, case: &str, w: &Workload, name: &str) -> Result<Measurement> {
        let cmd = self.hotclone_cmd("sync").arg(name);
        self.measure(case, w, Tool::HotcloneSync, cmd)
    }

    fn hotclone_cmd(&self, sub: &str) -> sh::Cmd {
        sh::netns(CLIENT_NS, &self.hotclone.display().to_string())
            .arg(sub)
            .arg("-F")
            .arg(&self.env.ssh_config)
            .arg("--json")
            .env("HOTCLONE_HOME", self.home())
    }

    fn measure(&self, case: &str, w: &Workload, tool: Tool, cmd: sh::Cmd) -> Result<Measurement> {
        drop_caches()?;
        let tx0 = self.env.source_tx_bytes()?;
        let (mut command, shown) = cmd.into_command();
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("starting `{shown}`"))?;
        let sampler = RssSampler::start(child.id());
        let out = child.wait_with_output()?;
        let seconds = started.elapsed().as_secs_f64();
        let (client, agent) = sampler.stop();
        if !out.status.success() {
            bail!(
                "`{shown}` failed ({}) in case {case}:\n{}",
                out.status,
                sh::tail(&String::from_utf8_lossy(&out.stderr), 30)
            );
        }
        let events = String::from_utf8_lossy(&out.stdout);
        let hotclone = matches!(tool, Tool::Hotclone | Tool::HotcloneSync);
        let phases = phases(&events);
        let m = Measurement {
            case: case.into(),
            link: self.link,
            workload: w.id.into(),
            tool,
            seconds,
            link_bytes: self.env.source_tx_bytes()? - tx0,
            copy_seconds: hotclone.then(|| copy_seconds(&phases)).flatten(),
            client_peak_rss_kib: hotclone.then_some(client),
            agent_peak_rss_kib: (hotclone && agent > 0).then_some(agent),
            files: result_field(&events, "files"),
            bytes: result_field(&events, "bytes"),
            phases,
        };
        eprintln!(
            "bench: {case:<10} {:<24} {:<8} {:>8.1} s  {:>7.1} MB on the link{}",
            tool.name(),
            w.id,
            seconds,
            m.link_bytes as f64 / 1e6,
            m.copy_seconds
                .map(|c| format!("  (copy {c:.1} s)"))
                .unwrap_or_default()
        );
        Ok(m)
    }
}

/// The baseline's pipeline, run by bash in the client namespace with the
/// ssh_config in `$CFG` and the target directory in `$T`. It ends with
/// `sync -f` of the target: a copy counts once it is durable, as
/// hotclone's does (it acks only what a `syncfs` has made durable), not
/// while gigabytes of it are still dirty in the page cache (W2 through
/// `tar | ssh | tar`: 35.4 s, then 4.7 s more for `sync -f`).
fn baseline_script(tool: Tool, excludes: &[String]) -> String {
    let tar_ex: String = excludes
        .iter()
        .map(|e| format!(" --exclude=.{e}"))
        .collect();
    let tar_c = format!("tar -C / --one-file-system --numeric-owner{tar_ex} -cf - .");
    let copy = match tool {
        Tool::TarSsh => format!(
            "ssh -F \"$CFG\" bench '{tar_c}' | tar -C \"$T\" --numeric-owner -xpf -"
        ),
        Tool::TarZstdSsh => format!(
            "ssh -F \"$CFG\" bench '{tar_c} | zstd -q -1 -T0' | zstd -q -d | tar -C \"$T\" --numeric-owner -xpf -"
        ),
        Tool::Rsync => {
            let ex: String = excludes.iter().map(|e| format!(" --exclude={e}")).collect();
            format!("rsync -aHAXS --numeric-ids -x{ex} -e \"ssh -F $CFG\" bench:/ \"$T\"/")
        }
        Tool::Hotclone | Tool::HotcloneSync => unreachable!("hotclone is not a baseline"),
    };
    format!("set -o pipefail; {copy} && sync -f \"$T\"")
}

/// hotclone's phases, from its JSON events: (name, when it began).
fn phases(events: &str) -> Vec<(String, f64)> {
    events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "phase")
        .filter_map(|v| Some((v["name"].as_str()?.to_string(), v["at_seconds"].as_f64()?)))
        .collect()
}

/// hotclone's copy phase, from its phases: "listing the source" to
/// "converting", or to "closing the target disk" for a clone that only
/// copies (a sync, which converts only when a boot file changed, has
/// none: its whole run is what counts).
fn copy_seconds(phases: &[(String, f64)]) -> Option<f64> {
    let at = |name: &str| phases.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
    let end = at("converting").or_else(|| at("closing the target disk"))?;
    Some(end - at("listing the source")?)
}

/// A number from hotclone's final result line (the last JSON object that
/// has `key`).
fn result_field(events: &str, key: &str) -> Option<u64> {
    events
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] != "file")
        .find_map(|v| v[key].as_u64())
}

fn drop_caches() -> Result<()> {
    sh::run("sync", &[] as &[&str])?;
    fs::write("/proc/sys/vm/drop_caches", "3\n").context("dropping the page cache")
}

/// Samples VmHWM of hotclone processes under one child.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<Mutex<(u64, u64)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(root: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new(Mutex::new((0, 0)));
        let (s, p) = (stop.clone(), peaks.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for (pid, agent) in hotclone_processes(root) {
                    if let Some(hwm) = vm_hwm(pid) {
                        let mut peaks = p.lock().unwrap();
                        let slot = if agent { &mut peaks.1 } else { &mut peaks.0 };
                        *slot = (*slot).max(hwm);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            stop,
            peaks,
            thread: Some(thread),
        }
    }

    /// (client, agent) peaks in KiB.
    fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let peaks = *self.peaks.lock().unwrap();
        peaks
    }
}

/// hotclone processes at or under `root`: (pid, is the agent).
fn hotclone_processes(root: u32) -> Vec<(u32, bool)> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "hotclone")
        })
        .filter(|pid| env::descends_from(*pid, root))
        .map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let agent = cmdline.split(|b| *b == 0).nth(1) == Some(b"agent".as_slice());
            (pid, agent)
        })
        .collect()
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_phase_runs_from_listing_to_converting() {
        let events = r#"{"event":"phase","name":"preparing the target disk","at_seconds":0.1}
{"event":"phase","name":"listing the source","at_seconds":1.5}
{"event":"file","bytes":10}
{"event":"phase","name":"converting","at_seconds":11.0}
{"files":3,"bytes":10,"seconds":20.0}"#;
        assert_eq!(copy_seconds(&phases(events)), Some(9.5));
        assert_eq!(result_field(events, "files"), Some(3));
    }

    #[test]
    fn a_workload_excludes_the_other_parts() {
        let w = Workload {
            id: "W2",
            parts: &["w2"],
        };
        assert_eq!(
            w.excludes(),
            [
                "/srv/bench/w3",
                "/srv/bench/w4a",
                "/srv/bench/w4b",
                "/srv/bench/w4c"
            ]
        );
        let s = baseline_script(Tool::Rsync, &w.excludes());
        assert!(s.contains("--exclude=/srv/bench/w3 "), "{s}");
        let s = baseline_script(Tool::TarSsh, &w.excludes());
        assert!(s.contains("--exclude=./srv/bench/w4c -cf"), "{s}");
        // Every baseline is timed until its copy is durable.
        for tool in [Tool::TarSsh, Tool::TarZstdSsh, Tool::Rsync] {
            let s = baseline_script(tool, &w.excludes());
            assert!(s.ends_with(" && sync -f \"$T\""), "{s}");
        }
    }
}
