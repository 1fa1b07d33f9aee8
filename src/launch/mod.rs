//! Target VMs: start the rescue image in a new VM with an empty disk,
//! wait until its SSH answers with the host key it was given, and later
//! stop it or boot it from its own disk, under the hypervisor `--hypervisor`
//! chose ([`hypervisor`]: QEMU direct, or a libvirt domain); `export`
//! writes definitions for other hypervisors.
//!
//! Everything about the VM is recorded in the migration's state
//! (`NAME/vm/`): `vm.json` ([`VmState`]), the ephemeral keys
//! ([`keys`]), the VM's initrd (the rescue image plus a layer with those
//! keys) and its console logs. Later commands (`clone --target ssh://`,
//! `cutover`) find the VM, its address and its keys there.
//!
//! On failure nothing is left running: a VM that does not answer in time
//! is stopped, its console log is quoted in the error, and a disk this
//! launch created is removed again. An existing disk is never replaced.

pub mod export;
pub mod hypervisor;
pub mod keys;
pub mod libvirt;
pub mod qemu;
pub mod spec;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::migration::Migration;
use crate::plan::ImageFormat;
use crate::progress::Progress;
use crate::rescue::RescueImage;
pub use spec::{DiskSpec, HypervisorSpec, NetSpec, StagingIp};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{path} already exists and is not this migration's disk; hotclone never overwrites a disk. Remove it or choose another path")]
    DiskExists { path: PathBuf },
    #[error("the disk size is unknown: give --disk PATH,size=SIZE, or plan the migration first (`hotclone plan SOURCE --name {name} --target ssh://...`)")]
    NoSize { name: String },
    #[error(
        "migration {name} has no VM; start one with `hotclone launch {name} --disk PATH --net ...`"
    )]
    NoVm { name: String },
    #[error("the VM of {name} is already running (pid {pid}); stop it first with `hotclone launch {name} --stop`")]
    Running { name: String, pid: i32 },
    #[error("the VM did not answer SSH at {addr} within {after:?} ({why}). The end of its console log ({console}):\n{tail}")]
    NoAnswer {
        addr: String,
        after: Duration,
        why: String,
        console: PathBuf,
        tail: String,
    },
    #[error("something at {addr} answers SSH with another host key than the VM was given: {detail}. Another machine holds the staging address; choose a free one with --ip")]
    WrongHost { addr: String, detail: String },
    #[error("{what} does not work with --hypervisor {hypervisor}: {advice}")]
    Unsupported {
        what: String,
        hypervisor: String,
        advice: String,
    },
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("`{command}` could not start: {source}. Install {package}")]
    Missing {
        command: String,
        package: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    Rescue(#[from] crate::rescue::RescueError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LaunchError + '_ {
    move |source| LaunchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the VM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// The rescue image (kernel + initrd), the disk attached.
    Rescue,
    /// Its own disk (the converted clone).
    Disk,
}

/// A migration's VM, as recorded in `vm/vm.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmState {
    pub name: String,
    pub disk: PathBuf,
    pub format: ImageFormat,
    pub size_bytes: u64,
    pub net: NetSpec,
    /// The tap device the NIC uses; `tap_created`: made (and removed) by us.
    pub tap: String,
    pub tap_created: bool,
    pub mac: String,
    /// The rescue system's address (`None`: DHCP).
    pub staging_ip: Option<StagingIp>,
    pub memory_mib: u64,
    pub cpus: u32,
    /// The QEMU process while it runs.
    pub pid: Option<i32>,
    pub mode: BootMode,
    /// `SHA256:...` of the host key the rescue system was given.
    pub rescue_host_key: String,
    /// The build id of the hotclone inside the rescue image.
    pub rescue_agent_build: String,
    /// More `-drive` options (a rehearsal's overlay: its backing file,
    /// the disk the real VM holds open, is read without QEMU's lock).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drive_options: Vec<String>,
    /// Which hypervisor runs it (a VM recorded before there was a choice
    /// ran under QEMU direct).
    #[serde(default)]
    pub hypervisor: HypervisorSpec,
}

/// A VM record for tests: web01, 4 GiB, a qcow2 disk whose path needs
/// escaping, booted from its disk.
#[cfg(test)]
pub(crate) fn example_vm(net: NetSpec) -> VmState {
    VmState {
        name: "web01".into(),
        disk: "/var/lib/vm/web01 <old>.qcow2".into(),
        format: ImageFormat::Qcow2,
        size_bytes: 40 << 30,
        net,
        tap: "hct-1".into(),
        tap_created: true,
        mac: "52:54:00:12:34:56".into(),
        staging_ip: Some("192.0.2.50/24".parse::<StagingIp>().unwrap()),
        memory_mib: 4096,
        cpus: 2,
        pid: None,
        mode: BootMode::Disk,
        rescue_host_key: String::new(),
        rescue_agent_build: String::new(),
        drive_options: Vec::new(),
        hypervisor: Default::default(),
    }
}

/// A random locally administered MAC in QEMU's (and libvirt's) 52:54:00 range.
pub fn random_mac() -> String {
    let b = crate::random::bytes::<3>().unwrap_or([0x12, 0x34, 0x56]);
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// Files of a migration's VM.
pub struct VmFiles {
    pub dir: PathBuf,
}

impl VmFiles {
    pub fn of(migration: &Migration) -> VmFiles {
        VmFiles {
            dir: migration.dir.join("vm"),
        }
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("vm.json")
    }
    /// The client's login key for the rescue system.
    pub fn identity(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    /// The rescue system's host key, for strict checking.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
    pub fn console(&self, mode: BootMode) -> PathBuf {
        self.dir.join(match mode {
            BootMode::Rescue => "console-rescue.log",
            BootMode::Disk => "console-disk.log",
        })
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
}

impl VmState {
    /// The VM of `migration`, if it ever had one.
    pub fn load(migration: &Migration) -> Result<Option<VmState>, LaunchError> {
        let path = VmFiles::of(migration).state();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| LaunchError::Io {
                    path,
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LaunchError::Io { path, source }),
        }
    }

    pub fn save(&self, migration: &Migration) -> Result<(), LaunchError> {
        let files = VmFiles::of(migration);
        let path = files.state();
        let tmp = files.dir.join("vm.json.tmp");
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// `root@ADDR` of the rescue system, when its address is static.
    pub fn ssh_destination(&self) -> Option<String> {
        self.staging_ip
            .as_ref()
            .map(|ip| format!("root@{}", ip.addr))
    }

    /// True while the VM runs ([`hypervisor::Hypervisor::running`]).
    pub fn running(&self) -> bool {
        hypervisor::for_vm(self).running(self)
    }
}

/// How to launch.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    pub disk: DiskSpec,
    pub net: NetSpec,
    pub ip: Option<StagingIp>,
    pub memory_mib: Option<u64>,
    pub cpus: Option<u32>,
    /// The rescue image to boot.
    pub rescue: PathBuf,
    /// How long to wait for SSH.
    pub timeout: Duration,
    /// Which hypervisor runs the VM.
    pub hypervisor: HypervisorSpec,
}

/// The VM's memory and vCPUs: like the source's, capped (1-4 GiB, 1-4
/// vCPUs, and no more vCPUs than this host has); 2 GiB and 2 vCPUs when
/// the source is not known yet.
pub fn size_like(source: Option<&crate::probe::Hardware>) -> (u64, u32) {
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    match source {
        Some(hw) => (
            (hw.memory_bytes >> 20).clamp(1024, 4096),
            hw.cpus.clamp(1, 4).min(host_cpus.max(1)),
        ),
        None => (2048, 2.min(host_cpus.max(1))),
    }
}

/// Start the rescue VM of `migration` with a new disk (or the disk it
/// already has) and wait until its SSH answers with the host key it was
/// given.
pub async fn launch(
    migration: &Migration,
    opts: &LaunchOptions,
    progress: &mut dyn Progress,
) -> Result<VmState, LaunchError> {
    let files = VmFiles::of(migration);
    let previous = VmState::load(migration)?;
    if let Some(p) = previous.as_ref().filter(|p| p.running()) {
        return Err(LaunchError::Running {
            name: migration.name.clone(),
            pid: p.pid.unwrap_or_default(),
        });
    }
    let rescue = RescueImage::open(&opts.rescue)?;
    std::fs::create_dir_all(&files.dir).map_err(io(&files.dir))?;
    set_private(&files.dir)?;

    // The disk: this migration's own (relaunch), or a new one.
    let ours = previous.as_ref().is_some_and(|p| p.disk == opts.disk.path);
    let (size_bytes, created) = if ours && opts.disk.path.exists() {
        (previous.as_ref().map(|p| p.size_bytes).unwrap_or(0), false)
    } else if opts.disk.path.exists() {
        return Err(LaunchError::DiskExists {
            path: opts.disk.path.clone(),
        });
    } else {
        let size = match opts.disk.size_bytes {
            Some(s) => s,
            None => planned_size(migration).ok_or_else(|| LaunchError::NoSize {
                name: migration.name.clone(),
            })?,
        };
        progress.phase("creating the disk");
        hypervisor::for_spec(&opts.hypervisor).create_disk(
            &opts.disk.path,
            opts.disk.format,
            size,
        )?;
        (size, true)
    };
    let undo_disk = |created: bool| {
        if created {
            let _ = std::fs::remove_file(&opts.disk.path);
        }
    };

    progress.phase("making the VM's keys");
    let host_key = keys::KeyPair::generate()?;
    let login = keys::KeyPair::generate()?;
    let made = write_keys(&files, &rescue, &host_key, &login, opts.ip.as_ref());
    if let Err(e) = made {
        undo_disk(created);
        return Err(e);
    }
    let inventory = migration.inventory().ok();
    let (memory, cpus) = size_like(inventory.as_ref().map(|i| &i.hardware));
    let mut state = VmState {
        name: migration.name.clone(),
        disk: opts.disk.path.clone(),
        format: opts.disk.format,
        size_bytes,
        net: opts.net.clone(),
        tap: String::new(),
        tap_created: false,
        mac: previous
            .as_ref()
            .map(|p| p.mac.clone())
            .unwrap_or_else(random_mac),
        staging_ip: opts.ip.clone(),
        memory_mib: opts.memory_mib.unwrap_or(memory),
        cpus: opts.cpus.unwrap_or(cpus),
        pid: None,
        mode: BootMode::Rescue,
        rescue_host_key: host_key.fingerprint(),
        rescue_agent_build: rescue.manifest.agent_build.clone(),
        drive_options: Vec::new(),
        hypervisor: opts.hypervisor.clone(),
    };
    progress.phase("starting the rescue VM");
    if let Err(e) = hypervisor::for_vm(&state).start(&mut state, &files, Some(&rescue)) {
        undo_disk(created);
        return Err(e);
    }
    state.save(migration)?;
    progress.phase("waiting for the rescue system's SSH");
    if let Err(e) = wait_for_rescue(&state, &files, opts.timeout).await {
        let _ = hypervisor::for_vm(&state).stop(&mut state);
        let _ = state.save(migration);
        undo_disk(created);
        return Err(e);
    }
    progress.note(&format!(
        "the rescue VM answers at {} with host key {}",
        state.ssh_destination().unwrap_or_default(),
        state.rescue_host_key
    ));
    Ok(state)
}

/// The disk size the migration's plan asks for, if it has a plan.
fn planned_size(migration: &Migration) -> Option<u64> {
    let text = std::fs::read_to_string(migration.plan_path()).ok()?;
    let plan = crate::plan::Plan::from_toml(&text).ok()?;
    Some(plan.disk.size_bytes)
}

fn set_private(dir: &Path) -> Result<(), LaunchError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// The client key, known_hosts and the VM's initrd (rescue image + a
/// layer with the host key and authorized_keys).
fn write_keys(
    files: &VmFiles,
    rescue: &RescueImage,
    host_key: &keys::KeyPair,
    login: &keys::KeyPair,
    ip: Option<&StagingIp>,
) -> Result<(), LaunchError> {
    keys::write_private(&files.identity(), login.private_openssh()?.as_bytes())?;
    let host_public = host_key.public_openssh("hotclone-rescue")?;
    let known = match ip {
        Some(ip) => format!("{} {}\n", ip.addr, host_public),
        None => String::new(),
    };
    std::fs::write(files.known_hosts(), known).map_err(io(&files.known_hosts()))?;
    let authorized = format!("{}\n", login.public_openssh("hotclone-client")?);
    let host_private = host_key.private_openssh()?;
    let layer = crate::rescue::layer(
        &["etc", "etc/hotclone"],
        &[
            (
                "etc/hotclone/ssh_host_ed25519_key",
                0o600,
                host_private.as_bytes(),
            ),
            ("etc/hotclone/authorized_keys", 0o600, authorized.as_bytes()),
        ],
    )?;
    let mut initrd = std::fs::read(rescue.initrd()).map_err(io(&rescue.initrd()))?;
    initrd.extend_from_slice(&layer);
    keys::write_private(&files.initrd(), &initrd)?;
    Ok(())
}

/// Connection options for the rescue system: its own key and known_hosts
/// only (no agent, no user ssh_config), host keys checked strictly.
pub fn rescue_connect_options(files: &VmFiles) -> crate::ssh::ConnectOptions {
    crate::ssh::ConnectOptions {
        ssh_config: Some(PathBuf::from("/dev/null")),
        identity_files: vec![files.identity()],
        known_hosts: Some(files.known_hosts()),
        host_key_policy: crate::ssh::HostKeyPolicy::Strict,
        use_agent: false,
        password: None,
        connect_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

async fn wait_for_rescue(
    state: &VmState,
    files: &VmFiles,
    timeout: Duration,
) -> Result<(), LaunchError> {
    let Some(dest) = state.ssh_destination() else {
        // DHCP: the address shows on the console once the VM has it.
        return Ok(());
    };
    let started = Instant::now();
    let opts = crate::ssh::ConnectOptions {
        connect_timeout: Duration::from_secs(5),
        ..rescue_connect_options(files)
    };
    let mut why = String::from("no answer yet");
    while started.elapsed() < timeout {
        if !state.running() {
            why = "the VM stopped".into();
            break;
        }
        match crate::ssh::Session::connect(&dest, &opts).await {
            Ok(session) => {
                let ok = session.run("true", b"").await.map(|o| o.status.success());
                let _ = session.disconnect().await;
                if let Ok(true) = ok {
                    return Ok(());
                }
                why = "it connected but could not run a command".into();
            }
            Err(
                e @ (crate::ssh::SshError::HostKeyChanged { .. }
                | crate::ssh::SshError::UnknownHostKey { .. }),
            ) => {
                return Err(LaunchError::WrongHost {
                    addr: dest,
                    detail: e.to_string(),
                })
            }
            Err(e) => why = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let console = files.console(BootMode::Rescue);
    Err(LaunchError::NoAnswer {
        addr: dest,
        after: timeout,
        why,
        tail: tail(&console, 20),
        console,
    })
}

/// The last `n` lines of a (console) log.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Stop the VM of `migration` (it may already be stopped).
pub fn stop(migration: &Migration) -> Result<VmState, LaunchError> {
    let mut state = VmState::load(migration)?.ok_or_else(|| LaunchError::NoVm {
        name: migration.name.clone(),
    })?;
    hypervisor::for_vm(&state).stop(&mut state)?;
    state.save(migration)?;
    Ok(state)
}

/// Restart the VM of `migration` from its own disk (the converted clone).
/// Returns once QEMU runs; the guest's own boot takes its time.
pub fn boot_disk(
    migration: &Migration,
    progress: &mut dyn Progress,
) -> Result<VmState, LaunchError> {
    let mut state = VmState::load(migration)?.ok_or_else(|| LaunchError::NoVm {
        name: migration.name.clone(),
    })?;
    let files = VmFiles::of(migration);
    if state.running() {
        progress.phase("stopping the rescue system");
        hypervisor::for_vm(&state).stop(&mut state)?;
    }
    progress.phase("booting the VM from its disk");
    state.mode = BootMode::Disk;
    hypervisor::for_vm(&state).start(&mut state, &files, None)?;
    state.save(migration)?;
    Ok(state)
}

/// Boot the VM of `migration` into the rescue system again, with the disk,
/// network and sizes it had (after a cutover rolled back a boot from its
/// disk). New keys are made, as at every launch.
pub async fn relaunch_rescue(
    migration: &Migration,
    rescue: &Path,
    timeout: Duration,
    progress: &mut dyn Progress,
) -> Result<VmState, LaunchError> {
    let mut state = VmState::load(migration)?.ok_or_else(|| LaunchError::NoVm {
        name: migration.name.clone(),
    })?;
    if state.running() {
        hypervisor::for_vm(&state).stop(&mut state)?;
        state.save(migration)?;
    }
    let opts = LaunchOptions {
        disk: DiskSpec {
            path: state.disk.clone(),
            size_bytes: Some(state.size_bytes),
            format: state.format,
        },
        net: state.net.clone(),
        ip: state.staging_ip.clone(),
        memory_mib: Some(state.memory_mib),
        cpus: Some(state.cpus),
        rescue: rescue.to_path_buf(),
        timeout,
        hypervisor: state.hypervisor.clone(),
    };
    launch(migration, &opts, progress).await
}
