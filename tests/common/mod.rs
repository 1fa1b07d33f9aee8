//! Shared helpers for integration tests that run against the lab
//! (`cargo xtask lab up`). A lab test never skips: when the lab is not up it
//! panics with the command that brings it up.
#![allow(dead_code)]

pub mod pcap;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;

/// `target/lab/lab.json`, written by `cargo xtask lab up`.
#[derive(Debug, Deserialize)]
pub struct Lab {
    pub dir: PathBuf,
    pub client_ns: String,
    pub client_ip: String,
    pub password_file: PathBuf,
    pub ssh_config: PathBuf,
    pub known_hosts: PathBuf,
    pub id_ed25519: PathBuf,
    pub id_rsa: PathBuf,
    pub sources: Vec<LabSource>,
}

#[derive(Debug, Deserialize)]
pub struct LabSource {
    pub name: String,
    pub ns: String,
    pub ip: String,
    pub prefix: u8,
    pub mac: String,
    pub hostname: String,
    pub suite: Option<String>,
    pub debian_version: Option<String>,
    pub kernel_installed: Option<String>,
    pub root_fstype: String,
    pub sshd: String,
    /// The source's disk image (its root filesystem) on the host; for a
    /// source that runs as a VM, the tree its disks were built from.
    pub image: PathBuf,
    /// A source that runs as a VM (root on md/LVM): the disks a test
    /// boots it from ([`vm::SourceVm`]). Empty for the chroot sources.
    #[serde(default)]
    pub vm_disks: Vec<PathBuf>,
}

pub mod image;
pub mod vm;

pub fn lab_dir() -> PathBuf {
    match std::env::var_os("HOTCLONE_LAB_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lab"),
    }
}

/// The running lab. Panics (never skips) when it is not up.
pub fn lab() -> Lab {
    let path = lab_dir().join("lab.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the lab is not up ({}: {e}). Lab tests need it: run `cargo xtask lab up` \
             (or `cargo xtask test`, which brings it up), as root.",
            path.display()
        )
    });
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a lab description: {e}", path.display()))
}

impl Lab {
    pub fn source(&self, name: &str) -> &LabSource {
        self.sources
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "the lab has no source named {name:?}; lab.json lists {:?}",
                    self.sources.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
    }

    /// A `Command` that runs `program` inside the lab's client namespace.
    pub fn client_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.client_ns]).arg(program);
        cmd
    }

    /// The `hotclone` binary under test, run in the client namespace with the
    /// lab's ssh_config and known_hosts.
    pub fn hotclone(&self) -> Command {
        let mut cmd = self.client_command(env!("CARGO_BIN_EXE_hotclone"));
        cmd.env("HOME", self.dir.join("home"));
        cmd
    }
}

/// Run a command, returning its output; prints everything a reader needs when
/// an assertion about it fails later.
pub fn run(cmd: &mut Command) -> Output {
    let started = std::time::Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    eprintln!(
        "$ {cmd:?}\n-- exit: {} after {:.1} s\n-- stdout:\n{}\n-- stderr:\n{}",
        out.status,
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run a command that must succeed; returns its stdout as text.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "command failed: {cmd:?} (see its output above)"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The filesystem UUID of an image, read on the host with blkid: a value
/// independent of anything hotclone computes.
pub fn image_uuid(image: &Path) -> String {
    run_ok(
        Command::new("blkid")
            .args(["-o", "value", "-s", "UUID"])
            .arg(image),
    )
    .trim()
    .to_string()
}

/// Lab tests that boot a VM (one boot segment) or change a source's files
/// (another test's comparison would see it) take turns within a test binary.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh work directory under the lab's, unique to this test run.
pub fn workdir(tag: &str) -> PathBuf {
    let dir = lab_dir()
        .join("work")
        .join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run `command` on a lab source with the system ssh client; its stdout.
pub fn source_ssh(lab: &Lab, source: &str, command: &str) -> String {
    run_ok(
        lab.client_command("ssh")
            .arg("-F")
            .arg(&lab.ssh_config)
            .arg(source)
            .arg(command),
    )
}

/// Assert that two sorted listings (one entry per line) are equal. On a
/// mismatch, the panic names only the entries that differ, each side's,
/// so a long tree's difference is readable in a truncated CI log.
pub fn assert_same_entries(source: &[String], target: &[String], what: &str) {
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        let b: std::collections::BTreeSet<&String> = b.iter().collect();
        a.iter().filter(|l| !b.contains(l)).cloned().collect()
    };
    let (missing, extra) = (only(source, target), only(target, source));
    assert!(
        missing.is_empty() && extra.is_empty() && source.len() == target.len(),
        "{what}: {} entries differ\n-- on the source only:\n{}\n-- on the target only:\n{}",
        missing.len() + extra.len(),
        missing.join("\n"),
        extra.join("\n")
    );
}

/// A small deterministic generator (no rand crate); the seed is printed.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The direct children of `pid` (threads included).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Type, mode, owner, size (not for directories), mtime, link count and
/// name of everything under `DIRS`, plus an md5 per regular file. A shell
/// command that busybox and GNU tools run alike: on a source, in the
/// rescue VM, or on the host over a mounted target.
pub const TREE: &str = "find DIRS -type f -exec sh -c 'for f; do echo \"$(stat -c \"%F|%a|%u|%g|%s|%Y|%h\" \"$f\")|$(md5sum < \"$f\" | cut -c1-32)|$f\"; done' _ {} + ; find DIRS -type l -exec sh -c 'for f; do echo \"link|$(readlink \"$f\")|$f\"; done' _ {} + ; find DIRS ! -type f ! -type l -exec stat -c '%F|%a|%u|%g|-|%Y|%n' {} +";

/// [`TREE`] for `dirs`, run from `/`'s point of view of `root`.
pub fn tree_command(root: &str, dirs: &str) -> String {
    format!("cd {root} && {}", TREE.replace("DIRS", dirs))
}

/// The lines of a [`TREE`] listing, sorted.
pub fn sorted_lines(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// The tree of `dirs` on the lab source `source`.
pub fn source_tree(lab: &Lab, source: &str, dirs: &str) -> Vec<String> {
    sorted_lines(&source_ssh(lab, source, &tree_command("/", dirs)))
}

/// The tree of `dirs` under `root` on this host (a mounted target).
pub fn host_tree(root: &Path, dirs: &str) -> Vec<String> {
    sorted_lines(&run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(tree_command(&root.display().to_string(), dirs)),
    ))
}

/// `command` on a rescue VM at `ip`, as root with the keys `hotclone
/// launch` made for it (in `vm_dir`), its host key checked strictly.
pub fn rescue_ssh(lab: &Lab, vm_dir: &Path, ip: &str, command: &str) -> Output {
    run(lab
        .client_command("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            vm_dir.join("known_hosts").display()
        ))
        .arg("-i")
        .arg(vm_dir.join("id_ed25519"))
        .arg(format!("root@{ip}"))
        .arg(command))
}

/// How the client is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespaces {
    /// `ip netns exec`: network and mount namespaces of its own.
    OwnMounts,
    /// `nsenter --net`: the lab's network, the host's mount namespace.
    HostMounts,
}

/// `hotclone ARGS --batch -F ssh_config`, with its own state directory
/// `home`, started the way `ns` says.
pub fn hotclone_in(lab: &Lab, ns: Namespaces, home: &Path, args: &[&str]) -> Command {
    let mut cmd = match ns {
        Namespaces::OwnMounts => lab.hotclone(),
        Namespaces::HostMounts => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{}", lab.client_ns))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_hotclone"))
                .env("HOME", lab.dir.join("home"));
            c
        }
    };
    cmd.env("HOTCLONE_HOME", home)
        .args(args)
        .arg("--batch")
        .arg("-F")
        .arg(&lab.ssh_config);
    cmd
}

/// The rescue image the tests boot (`HOTCLONE_RESCUE_DIR`, else the lab's);
/// a test fails loudly when it is not built.
pub fn rescue_dir() -> PathBuf {
    let dir = std::env::var_os("HOTCLONE_RESCUE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| lab_dir().join("rescue"));
    assert!(
        dir.join("manifest.json").is_file(),
        "no rescue image in {} (HOTCLONE_RESCUE_DIR): build it with `cargo xtask rescue-image` (`cargo xtask test` does)",
        dir.display()
    );
    dir
}

/// Install the lab's TCP service (`tests/fixtures/hc-echo.sh`: port 8080
/// answers with the hostname) on a source, and start it.
pub fn install_hc_echo(lab: &Lab, source: &str) {
    run_ok(
        lab.client_command("ssh")
            .arg("-F")
            .arg(&lab.ssh_config)
            .args([source, "sh", "-s"])
            .stdin(
                std::fs::File::open(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/fixtures/hc-echo.sh"
                ))
                .unwrap(),
            ),
    );
}

/// The source's shell command that stops and removes the lab service.
pub const HC_ECHO_REMOVE: &str = "[ -x /etc/init.d/hc-echo ] && /etc/init.d/hc-echo stop; \
rm -rf /usr/local/bin/hc-echo /etc/init.d/hc-echo /etc/systemd/system/hc-echo.service \
/etc/systemd/system/multi-user.target.wants/hc-echo.service /etc/hc-echo.broken";

/// The record `hotclone rehearse --json` printed last.
pub fn rehearsal_record(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rfind(|l| l.contains("\"event\":\"rehearsal\""))
        .unwrap_or_else(|| panic!("no rehearsal record in:\n{stdout}"));
    serde_json::from_str::<serde_json::Value>(line).unwrap()["record"].clone()
}
