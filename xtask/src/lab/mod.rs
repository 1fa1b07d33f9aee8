//! The hotclone test lab: network namespaces on one bridge, with real
//! Debian/busybox source roots running their own sshd.
//!
//! `up` builds (or reuses) cached images, copies them per lab, starts the
//! sources, and writes `<labdir>/lab.json`, which tests read.
pub mod libvirtd;
pub mod netns;
pub mod recipe;
pub mod source;
pub mod vm_source;

use crate::{apt, sh};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use source::{SourceSpec, CLIENT, SOURCES};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Packages the lab needs on the host.
pub const HOST_PACKAGES: &[&str] = &[
    "debootstrap",
    "dropbear-bin",
    "busybox-static",
    "openssh-client",
    "e2fsprogs",
    "iproute2",
    "util-linux",
    "tcpdump",
    "arping",
    // QEMU (TCG) for the sources that run as VMs (md-lvm's disks are
    // built in one): `lab up` on a fresh machine failed with "starting
    // qemu-system-x86_64: No such file or directory" without them.
    "qemu-system-x86",
    "qemu-utils",
    // The lab's libvirtd (libvirtd.rs), without libvirt-daemon-system,
    // which would pull in systemd.
    "libvirt-daemon",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
];

/// Where the lab lives.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// `$HOTCLONE_LAB_DIR`, default `<workspace>/target/lab`.
    pub lab_dir: PathBuf,
    /// `$HOTCLONE_LAB_CACHE`, default `/var/cache/hotclone-lab`.
    pub cache_dir: PathBuf,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self::from_env()
    }
}

impl LabOptions {
    pub fn from_env() -> Self {
        let lab_dir = std::env::var_os("HOTCLONE_LAB_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/lab"));
        let cache_dir = std::env::var_os("HOTCLONE_LAB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/hotclone-lab"));
        LabOptions { lab_dir, cache_dir }
    }

    pub fn lab_json(&self) -> PathBuf {
        self.lab_dir.join("lab.json")
    }
}

/// The workspace root (parent of the xtask crate).
pub fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// Contents of `<labdir>/lab.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabInfo {
    pub dir: PathBuf,
    pub client_ns: String,
    pub client_ip: String,
    pub password_file: PathBuf,
    pub ssh_config: PathBuf,
    pub known_hosts: PathBuf,
    pub id_ed25519: PathBuf,
    pub id_rsa: PathBuf,
    pub sources: Vec<SourceInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceInfo {
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
    pub pid: u32,
    pub image: PathBuf,
    /// A source that runs as a VM: its disks, which a test boots
    /// (`-snapshot`: they are the cache's). Empty for the others, which
    /// run as chroots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vm_disks: Vec<PathBuf>,
}

impl SourceInfo {
    /// The record of `spec`, running as `pid` (0: a VM source a test boots).
    pub fn new(
        spec: &SourceSpec,
        facts: source::ImageFacts,
        pid: u32,
        image: PathBuf,
        vm_disks: Vec<PathBuf>,
    ) -> SourceInfo {
        SourceInfo {
            name: spec.name.into(),
            ns: spec.host.ns.into(),
            ip: spec.host.ip.into(),
            prefix: 24,
            mac: spec.host.mac.into(),
            hostname: spec.hostname.into(),
            suite: spec.recipe.suite.map(String::from),
            debian_version: facts.debian_version,
            kernel_installed: facts.kernel_installed,
            root_fstype: "ext4".into(),
            sshd: spec.sshd.as_str().into(),
            pid,
            image,
            vm_disks,
        }
    }
}

impl LabInfo {
    /// Read `lab.json` of a lab that is up.
    pub fn load(opts: &LabOptions) -> Result<LabInfo> {
        let p = opts.lab_json();
        let text = fs::read_to_string(&p).with_context(|| {
            format!("no lab state at {} (run `cargo xtask lab up`)", p.display())
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
    }

    pub fn source(&self, name: &str) -> Option<&SourceInfo> {
        self.sources.iter().find(|s| s.name == name)
    }
}

fn all_namespaces() -> Vec<&'static str> {
    let mut v = vec![netns::LAN_NS, CLIENT.ns];
    v.extend(SOURCES.iter().map(|s| s.host.ns));
    v
}

/// True if every namespace exists and every recorded sshd is alive.
fn fully_up(opts: &LabOptions) -> bool {
    opts.lab_json().exists()
        && all_namespaces().iter().all(|ns| netns::exists(ns))
        && SOURCES
            .iter()
            .all(|s| source::read_pid(&opts.lab_dir, s.name).is_some_and(source::pid_is_ours))
        && libvirtd::alive(&opts.lab_dir)
}

/// Check we can build a lab here at all.
pub fn check_prerequisites() -> Result<()> {
    let uid = sh::run("id", &["-u"])?;
    if uid.trim() != "0" {
        bail!("the lab needs root (network namespaces, loop mounts); run as root");
    }
    apt::ensure_packages(HOST_PACKAGES)
}

/// Bring the lab up (idempotent). Returns what tests need to know.
pub fn up(opts: &LabOptions) -> Result<LabInfo> {
    check_prerequisites()?;
    let _lock = lock(opts)?;
    if fully_up(opts) {
        eprintln!("lab already up ({})", opts.lab_json().display());
        return LabInfo::load(opts);
    }
    let images = build_images(&opts.cache_dir)?;
    if opts.lab_json().exists() || all_namespaces().iter().any(|ns| netns::exists(ns)) {
        eprintln!("a stale lab is present; tearing it down first");
        down_locked(opts)?;
    }
    let t = Instant::now();
    let info = start_lab(opts, &images).context(
        "lab up failed; inspect target/lab/logs, then run `cargo xtask lab down` before retrying",
    )?;
    eprintln!(
        "lab up in {:.1}s: {}",
        t.elapsed().as_secs_f64(),
        opts.lab_json().display()
    );
    Ok(info)
}

/// Every cached image the lab needs, built where missing: the recipes'
/// roots, then the VM sources' disks (which need the lab's client keys).
/// What was built, by name.
pub fn build_all_images(opts: &LabOptions) -> Result<Vec<(String, PathBuf)>> {
    let images = build_images(&opts.cache_dir)?;
    let dir = &opts.lab_dir;
    for sub in ["disks", "stage"] {
        fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let keys = ensure_client_keys(dir, &opts.cache_dir)?;
    let mut all: Vec<(String, PathBuf)> = images
        .iter()
        .map(|(n, p)| (n.to_string(), p.clone()))
        .collect();
    for spec in &vm_source::VM_SOURCES {
        let info = vm_source::prepare(opts, spec, &recipe_image(&images, spec)?, &keys)?;
        all.extend(
            info.vm_disks
                .into_iter()
                .map(|d| (spec.name.to_string(), d)),
        );
    }
    Ok(all)
}

/// The cached image of `spec`'s recipe.
fn recipe_image(images: &[(&str, PathBuf)], spec: &SourceSpec) -> Result<PathBuf> {
    images
        .iter()
        .find(|(n, _)| *n == spec.recipe.name)
        .map(|(_, p)| p.clone())
        .with_context(|| format!("no image of recipe {}", spec.recipe.name))
}

/// Every recipe's cached image, the missing ones built side by side: a
/// debootstrap mostly waits on the mirror and on dpkg's fsyncs, so a
/// fresh machine gets its roots in the time of the slowest.
fn build_images(cache: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    std::thread::scope(|scope| {
        let builds: Vec<_> = recipe::ALL
            .iter()
            .map(|r| (r.name, scope.spawn(move || r.ensure(cache))))
            .collect();
        builds
            .into_iter()
            .map(|(name, build)| {
                let image = build
                    .join()
                    .map_err(|_| anyhow::anyhow!("building the {name} rootfs panicked"))??;
                Ok((name, image))
            })
            .collect()
    })
}

fn start_lab(opts: &LabOptions, images: &[(&str, PathBuf)]) -> Result<LabInfo> {
    let dir = &opts.lab_dir;
    for sub in ["disks", "logs", "pids", "stage", "mnt"] {
        fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let keys = ensure_client_keys(dir, &opts.cache_dir)?;
    netns::create_lan()?;
    netns::create_host(&CLIENT)?;
    let mut infos = Vec::new();
    for spec in &SOURCES {
        infos.push(start_source(
            opts,
            spec,
            &recipe_image(images, spec)?,
            &keys,
        )?);
    }
    for spec in &vm_source::VM_SOURCES {
        infos.push(vm_source::prepare(
            opts,
            spec,
            &recipe_image(images, spec)?,
            &keys,
        )?);
    }
    for spec in &SOURCES {
        source::wait_port(
            spec,
            &dir.join("logs").join(format!("{}.log", spec.name)),
            30,
        )?;
    }
    libvirtd::start(dir)?;
    if !netns::ping(CLIENT.ns, SOURCES[0].host.ip) {
        bail!(
            "hc-client cannot ping {}; the bridge is not forwarding",
            SOURCES[0].host.ip
        );
    }
    let info = LabInfo {
        dir: dir.clone(),
        client_ns: CLIENT.ns.into(),
        client_ip: CLIENT.ip.into(),
        password_file: dir.join("password"),
        ssh_config: dir.join("ssh_config"),
        known_hosts: dir.join("known_hosts"),
        id_ed25519: dir.join("id_ed25519"),
        id_rsa: dir.join("id_rsa"),
        sources: infos,
    };
    write_known_hosts(&info, &opts.cache_dir)?;
    write_ssh_config(&info)?;
    check_ssh(&info)?;
    let json = serde_json::to_string_pretty(&info)?;
    fs::write(opts.lab_json(), json + "\n")?;
    Ok(info)
}

fn start_source(
    opts: &LabOptions,
    spec: &SourceSpec,
    cached: &Path,
    keys: &str,
) -> Result<SourceInfo> {
    let dir = &opts.lab_dir;
    let disk = dir.join("disks").join(format!("{}.img", spec.name));
    // legacy-ssh reuses the debian12 image; give it its own host keys.
    let host_keys = if spec.recipe.name != spec.name {
        Some(source::ensure_own_host_keys(&opts.cache_dir, spec)?)
    } else {
        None
    };
    let facts = spec
        .prepare_disk(
            cached,
            &disk,
            &dir.join("stage").join(spec.name),
            keys,
            host_keys.as_deref(),
        )
        .with_context(|| format!("preparing the disk of {}", spec.name))?;
    netns::create_host(&spec.host)?;
    let log = dir.join("logs").join(format!("{}.log", spec.name));
    let pid = spec.start(&disk, &dir.join("mnt").join(spec.name), &log)?;
    fs::write(source::pid_file(dir, spec.name), format!("{pid}\n"))?;
    Ok(SourceInfo::new(spec, facts, pid, disk, Vec::new()))
}

/// Make id_ed25519, id_rsa and password once; return both public keys.
/// The lab's client keys, made once and kept in the cache
/// (`<cache>/client-keys/`), copied into the lab directory: a VM source's
/// disks hold them, and stay cached across labs only if they stay the
/// same. A lab directory that has keys and a cache that has none: the
/// lab's keys are kept. Returns both public keys.
pub(crate) fn ensure_client_keys(dir: &Path, cache: &Path) -> Result<String> {
    let kept = cache.join("client-keys");
    fs::create_dir_all(&kept).with_context(|| format!("creating {}", kept.display()))?;
    for (file, args) in [
        ("id_ed25519", ["-t", "ed25519", "-b", "256"]),
        ("id_rsa", ["-t", "rsa", "-b", "3072"]),
    ] {
        let have = |d: &Path| d.join(file).exists() && d.join(format!("{file}.pub")).exists();
        if !have(&kept) {
            if have(dir) {
                copy_key(dir, &kept, file)?;
            } else {
                let key = kept.join(file);
                let _ = fs::remove_file(&key);
                sh::cmd("ssh-keygen")
                    .args(["-q", "-N", "", "-C", &format!("hotclone-lab-{file}")])
                    .args(args)
                    .arg("-f")
                    .arg(&key)
                    .run()?;
            }
        }
        copy_key(&kept, dir, file)?;
    }
    fs::write(dir.join("password"), format!("{}\n", recipe::LAB_PASSWORD))?;
    let mut keys = String::new();
    for f in ["id_ed25519.pub", "id_rsa.pub"] {
        keys += &fs::read_to_string(dir.join(f)).with_context(|| format!("reading {f}"))?;
    }
    Ok(keys)
}

/// Copy the key pair `file` from one directory to another (mode 600).
fn copy_key(from: &Path, to: &Path, file: &str) -> Result<()> {
    for name in [file.to_string(), format!("{file}.pub")] {
        let (src, dst) = (from.join(&name), to.join(&name));
        if src == dst {
            continue;
        }
        let tmp = to.join(format!("{name}.tmp"));
        fs::copy(&src, &tmp).with_context(|| format!("copying {}", src.display()))?;
        fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        fs::rename(&tmp, &dst).with_context(|| format!("renaming to {}", dst.display()))?;
    }
    Ok(())
}

fn write_known_hosts(info: &LabInfo, cache: &Path) -> Result<()> {
    let mut out = String::new();
    for s in &info.sources {
        let spec = spec_of(&s.name)?;
        let lines = if !s.vm_disks.is_empty() {
            vm_source::known_hosts_lines(cache, spec)?
        } else if spec.legacy {
            scan_legacy(info, s)?
        } else {
            keyscan(s)?
        };
        if lines.is_empty() {
            bail!("got no host keys from {} ({})", s.name, s.ip);
        }
        for l in lines {
            out += &format!("{l}\n");
        }
    }
    fs::write(&info.known_hosts, out)?;
    Ok(())
}

fn keyscan(s: &SourceInfo) -> Result<Vec<String>> {
    let scan = sh::netns(CLIENT.ns, "ssh-keyscan")
        .args(["-T", "5", "-t", "rsa,ecdsa,ed25519", &s.ip])
        .output()
        .with_context(|| format!("ssh-keyscan of {}", s.name))?;
    Ok(scan
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(String::from)
        .collect())
}

/// ssh-keyscan cannot offer SHA-1 key exchange (and has no -o), so learn
/// the legacy host key by connecting once with `accept-new`.
fn scan_legacy(info: &LabInfo, s: &SourceInfo) -> Result<Vec<String>> {
    let tmp = info.dir.join("known_hosts.legacy.tmp");
    let _ = fs::remove_file(&tmp);
    let mut c = sh::netns(CLIENT.ns, "ssh").args(["-F", "/dev/null"]);
    for (k, v) in source::LEGACY_CLIENT_OPTS {
        c = c.arg("-o").arg(format!("{k}={v}"));
    }
    c.arg("-o")
        .arg(format!("UserKnownHostsFile={}", tmp.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "HashKnownHosts=no",
            "-o",
            "BatchMode=yes",
        ])
        .args(["-o", "IdentitiesOnly=yes", "-i"])
        .arg(&info.id_rsa)
        .args([&format!("root@{}", s.ip), "true"])
        .run()
        .with_context(|| format!("first connection to legacy source {}", s.name))?;
    let text = fs::read_to_string(&tmp).with_context(|| format!("reading {}", tmp.display()))?;
    let _ = fs::remove_file(&tmp);
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect())
}

fn write_ssh_config(info: &LabInfo) -> Result<()> {
    let mut out = String::from("# Written by `cargo xtask lab up`. Use from hc-client: ip netns exec hc-client ssh -F THIS NAME\n");
    for s in &info.sources {
        let spec = spec_of(&s.name)?;
        let key = if spec.legacy {
            &info.id_rsa
        } else {
            &info.id_ed25519
        };
        out += &format!(
            "\nHost {}\n  HostName {}\n  User root\n  Port 22\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n  \
             ConnectTimeout 10\n",
            s.name,
            s.ip,
            key.display(),
            info.known_hosts.display()
        );
        if spec.legacy {
            for (k, v) in source::LEGACY_CLIENT_OPTS {
                out += &format!("  {k} {v}\n");
            }
        }
    }
    fs::write(&info.ssh_config, out)?;
    Ok(())
}

/// A source's definition, chroot or VM.
fn spec_of(name: &str) -> Result<&'static SourceSpec> {
    SOURCES
        .iter()
        .chain(&vm_source::VM_SOURCES)
        .find(|x| x.name == name)
        .with_context(|| format!("unknown source {name}"))
}

/// Acceptance: `ssh -F ssh_config NAME true` works from hc-client for each
/// source that runs (a VM source runs when a test boots it).
fn check_ssh(info: &LabInfo) -> Result<()> {
    for s in info.sources.iter().filter(|s| s.vm_disks.is_empty()) {
        sh::netns(CLIENT.ns, "ssh")
            .arg("-F")
            .arg(&info.ssh_config)
            .args([&s.name, "true"])
            .run()
            .with_context(|| format!("ssh to source {} with the lab ssh_config failed", s.name))?;
    }
    Ok(())
}

/// Tear the lab down (safe to repeat).
pub fn down() -> Result<()> {
    down_with(&LabOptions::from_env())
}

pub fn down_with(opts: &LabOptions) -> Result<()> {
    let _lock = lock(opts)?;
    down_locked(opts)
}

/// Serialise `up`/`down` (e.g. parallel test runs): an exclusive lock on
/// `<labdir>/lock`, released when the returned file is dropped.
fn lock(opts: &LabOptions) -> Result<fs::File> {
    fs::create_dir_all(&opts.lab_dir)
        .with_context(|| format!("creating lab dir {}", opts.lab_dir.display()))?;
    let p = opts.lab_dir.join("lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| format!("opening {}", p.display()))?;
    f.lock()
        .with_context(|| format!("locking {}", p.display()))?;
    Ok(f)
}

fn down_locked(opts: &LabOptions) -> Result<()> {
    let dir = &opts.lab_dir;
    libvirtd::stop(dir, stop_pid)?;
    for spec in &SOURCES {
        if let Some(pid) = source::read_pid(dir, spec.name) {
            stop_pid(pid)?;
        }
        let _ = fs::remove_file(source::pid_file(dir, spec.name));
    }
    for ns in all_namespaces().into_iter().rev() {
        netns::delete(ns)?;
    }
    for spec in &SOURCES {
        detach_loops(&dir.join("disks").join(format!("{}.img", spec.name)))?;
    }
    let _ = fs::remove_file(opts.lab_json());
    for sub in ["disks", "stage", "mnt"] {
        recipe::remove_tree(&dir.join(sub))?;
    }
    Ok(())
}

/// SIGTERM the process group of `pid` (we started it as a group leader),
/// then SIGKILL after 3 s. Only if it is still our unshare process.
pub(crate) fn stop_pid(pid: u32) -> Result<()> {
    if !source::pid_is_ours(pid) {
        return Ok(());
    }
    let _ = sh::run("kill", &["-TERM", "--", &format!("-{pid}")]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if !source::pid_is_ours(pid) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = sh::run("kill", &["-KILL", "--", &format!("-{pid}")]);
    std::thread::sleep(Duration::from_millis(300));
    if source::pid_is_ours(pid) {
        bail!("process {pid} survived SIGKILL; check `ps -o pid,stat,cmd -g {pid}`");
    }
    Ok(())
}

/// Detach any loop device still backed by `img`.
pub(crate) fn detach_loops(img: &Path) -> Result<()> {
    if !img.exists() {
        return Ok(());
    }
    for _ in 0..20 {
        let out = sh::cmd("losetup").arg("-j").arg(img).output()?;
        let devs: Vec<String> = out
            .lines()
            .filter_map(|l| l.split(':').next())
            .map(String::from)
            .collect();
        if devs.is_empty() {
            return Ok(());
        }
        for d in &devs {
            let _ = sh::run("losetup", &["-d", d]);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "loop devices still point at {} (see `losetup -j {}`)",
        img.display(),
        img.display()
    )
}

/// One status line per host; Ok(true) when everything is up.
pub fn status(opts: &LabOptions) -> Result<bool> {
    let mut all = true;
    let mut any = false;
    for ns in [netns::LAN_NS, CLIENT.ns] {
        let e = netns::exists(ns);
        println!("{ns:<12} namespace={}", yes(e));
        all &= e;
        any |= e;
    }
    for spec in &SOURCES {
        let e = netns::exists(spec.host.ns);
        let pid = source::read_pid(&opts.lab_dir, spec.name);
        let alive = pid.is_some_and(source::pid_is_ours);
        let port = e && netns::exists(CLIENT.ns) && netns::tcp_answers(CLIENT.ns, spec.host.ip, 22);
        println!(
            "{:<12} namespace={} pid={} alive={} port22={}  ({} {})",
            spec.name,
            yes(e),
            pid.map_or("-".to_string(), |p| p.to_string()),
            yes(alive),
            yes(port),
            spec.host.ns,
            spec.host.ip
        );
        all &= e && alive && port;
        any |= e || alive;
    }
    println!(
        "lab: {}",
        if all {
            "UP"
        } else if any {
            "PARTIAL"
        } else {
            "DOWN"
        }
    );
    Ok(all || !any)
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
