//! The bench's own two hosts, apart from the lab's: a client namespace and
//! the bench source, joined by one veth pair, so a shaped link (`tc` on the
//! source's side, where the data leaves) shapes the copy and nothing else.
//!
//! [`BenchEnv::up`] tears down what an earlier, killed bench left first;
//! dropping the env stops the source and deletes both namespaces.
use crate::lab::netns::Host;
use crate::lab::source::{SourceSpec, Sshd};
use crate::lab::{self, recipe};
use crate::sh;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const CLIENT_NS: &str = "hc-bclient";
const CLIENT_IP: &str = "198.51.100.30";
pub const SOURCE: SourceSpec = SourceSpec {
    name: "bench",
    host: Host {
        ns: "hc-bsrc",
        port: "eth0",
        ip: "198.51.100.31",
        mac: "02:48:43:00:00:31",
    },
    hostname: "src-bench",
    recipe: &recipe::BENCH,
    sshd: Sshd::OpenSsh,
    legacy: false,
};

/// A link shape: what `tc` puts on the source's egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Link {
    Unshaped,
    Gbit,
    Mbit100,
}

impl Link {
    pub fn name(self) -> &'static str {
        match self {
            Link::Unshaped => "unshaped veth",
            Link::Gbit => "1 Gbit/s (tbf)",
            Link::Mbit100 => "100 Mbit/s (tbf)",
        }
    }
    /// The rate in bytes per second, if shaped.
    pub fn bytes_per_sec(self) -> Option<f64> {
        match self {
            Link::Unshaped => None,
            Link::Gbit => Some(125e6),
            Link::Mbit100 => Some(12.5e6),
        }
    }
}

/// The running bench hosts.
pub struct BenchEnv {
    pub dir: PathBuf,
    disk: PathBuf,
    pub ssh_config: PathBuf,
    /// The source's root as the host sees it (`/proc/PID/root`).
    pub source_root: PathBuf,
}

impl BenchEnv {
    /// Start the source's sshd on the cached disk itself (copying 7 GB
    /// would cost minutes of every run; what the bench changes on it, it
    /// puts back, see [`super::image::Dirty`]), write an ssh_config with
    /// the source's scanned host keys (strict checking).
    pub fn up(dir: &Path, cache: &Path, disk: &Path) -> Result<BenchEnv> {
        down(dir, disk)?;
        for sub in ["stage", "mnt", "logs"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let keys = lab::ensure_client_keys(dir, cache)?;
        SOURCE
            .overlay(disk, &dir.join("stage/bench"), &keys, None)
            .context("preparing the bench source's disk")?;
        for ns in [CLIENT_NS, SOURCE.host.ns] {
            sh::run("ip", &["netns", "add", ns])?;
            sh::run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        sh::run(
            "ip",
            &[
                "link",
                "add",
                "eth0",
                "netns",
                CLIENT_NS,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                SOURCE.host.ns,
            ],
        )?;
        for (ns, ip) in [(CLIENT_NS, CLIENT_IP), (SOURCE.host.ns, SOURCE.host.ip)] {
            sh::run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            sh::run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        }
        let log = dir.join("logs/bench.log");
        let pid = SOURCE.start(disk, &dir.join("mnt/bench"), &log)?;
        fs::write(dir.join("source.pid"), format!("{pid}\n"))?;
        let env = BenchEnv {
            dir: dir.to_path_buf(),
            disk: disk.to_path_buf(),
            ssh_config: dir.join("ssh_config"),
            source_root: PathBuf::from(format!("/proc/{}/root", sshd_pid(pid)?)),
        };
        env.wait_for_sshd(&log)?;
        env.write_ssh_config()?;
        sh::netns(CLIENT_NS, "ssh")
            .arg("-F")
            .arg(&env.ssh_config)
            .args(["bench", "true"])
            .run()
            .context("ssh to the bench source")?;
        Ok(env)
    }

    fn wait_for_sshd(&self, log: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if lab::netns::tcp_answers(CLIENT_NS, SOURCE.host.ip, 22) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "the bench source did not answer on port 22 within 30 s\n{}",
            sh::tail(&fs::read_to_string(log).unwrap_or_default(), 20)
        )
    }

    fn write_ssh_config(&self) -> Result<()> {
        let scan = sh::netns(CLIENT_NS, "ssh-keyscan")
            .args(["-T", "5", "-t", "ed25519", SOURCE.host.ip])
            .output()?;
        let known = self.dir.join("known_hosts");
        fs::write(&known, scan)?;
        fs::write(
            &self.ssh_config,
            format!(
                "Host bench\n  HostName {}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  \
                 BatchMode yes\n",
                SOURCE.host.ip,
                self.dir.join("id_ed25519").display(),
                known.display()
            ),
        )?;
        Ok(())
    }

    /// Put `link` on the source's egress (replacing what was there).
    pub fn shape(&self, link: Link) -> Result<()> {
        let ns = SOURCE.host.ns;
        let _ = sh::netns(ns, "tc")
            .args(["qdisc", "del", "dev", "eth0", "root"])
            .run();
        let (rate, burst) = match link {
            Link::Unshaped => return Ok(()),
            Link::Gbit => ("1gbit", "1mb"),
            Link::Mbit100 => ("100mbit", "128kb"),
        };
        sh::netns(ns, "tc")
            .args(["qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate])
            .args(["burst", burst, "latency", "100ms"])
            .run()
    }

    /// Bytes the source has sent on its link so far.
    pub fn source_tx_bytes(&self) -> Result<u64> {
        let out = sh::netns(SOURCE.host.ns, "cat")
            .arg("/sys/class/net/eth0/statistics/tx_bytes")
            .output()?;
        out.trim().parse().context("parsing tx_bytes")
    }
}

impl Drop for BenchEnv {
    fn drop(&mut self) {
        if std::env::var_os("HOTCLONE_BENCH_KEEP").is_some() {
            eprintln!("bench: HOTCLONE_BENCH_KEEP: the bench hosts stay up");
            return;
        }
        if let Err(e) = down(&self.dir, &self.disk) {
            eprintln!("bench: tearing down: {e:#}");
        }
    }
}

/// The sshd inside the source's `unshare` (its root is the source's).
fn sshd_pid(unshare: u32) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for e in fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sshd" && descends_from(pid, unshare) {
                return Ok(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("no sshd started under the bench source's process {unshare}")
}

/// Whether `pid` is `ancestor` or one of its descendants.
pub fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        match stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        {
            Some(ppid) if ppid > 1 => pid = ppid,
            _ => return false,
        }
    }
    false
}

/// Stop the source and delete both namespaces (safe to repeat).
pub fn down(dir: &Path, disk: &Path) -> Result<()> {
    if let Some(pid) = fs::read_to_string(dir.join("source.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        lab::stop_pid(pid)?;
        let _ = fs::remove_file(dir.join("source.pid"));
    }
    for ns in [CLIENT_NS, SOURCE.host.ns] {
        lab::netns::delete(ns)?;
    }
    lab::detach_loops(disk)
}
