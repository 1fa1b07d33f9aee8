//! `hotclone rehearse NAME`: boot the converted clone and check it as the
//! cutover will, without touching the target disk or production.
//!
//! 1. **Park the target.** An image: take its lock (no pass can write
//!    while the rehearsal reads it). A live target: the rescue VM holds
//!    its disk's lock with nothing mounted (`hotclone target park`) until
//!    the rehearsal ends; the VM keeps running.
//! 2. **Overlay.** A qcow2 over the disk (the image, or the file the VM's
//!    QEMU uses), read-only underneath: everything the clone writes while
//!    it boots lands in the overlay, which is discarded afterwards
//!    (`--keep` keeps it).
//! 3. **Isolated network** ([`isolated`]): a namespace with one bridge,
//!    the clone's tap and the prober. The clone keeps its production
//!    addresses there; nothing has a route out.
//! 4. **Boot and probe** ([`prober`]): the console reaches userspace, each
//!    production address answers, SSH answers with the source's host key,
//!    the services that ran on the source run, every `--check` passes.
//!    The health judgement is the cutover's own
//!    ([`crate::cutover::health::check_once`]).
//! 5. **Teardown and record.** The VM stops, the network and the overlay
//!    go, the target is un-parked; the report (`rehearsal-report.md`,
//!    `.json`, the console log) is written and the journal records the
//!    result against the conversion it booted, which is what `status` and
//!    the cutover's gate read.
//!
//! On failure: a rehearsal whose clone fails a check is a result, not an
//! error ([`Rehearsal::passed`] is false, the report says why). Errors
//! are what kept the rehearsal from running (no conversion yet, the target
//! busy, QEMU missing); teardown runs on every path, and the target disk
//! is never opened for writing.

pub mod console;
pub mod isolated;
pub mod prober;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cutover::health::Check;
use crate::journal::{Journal, RehearsalRow};
use crate::launch::{hypervisor, BootMode, HypervisorSpec, NetSpec, VmFiles, VmState};
use crate::migration::Migration;
use crate::plan::{ImageFormat, TargetSpec};
use crate::progress::Progress;
use crate::ssh::ConnectOptions;
pub use report::Rehearsal;

#[derive(Debug, thiserror::Error)]
pub enum RehearseError {
    #[error("{name} has no converted clone to rehearse yet; run `hotclone clone` first")]
    NotConverted { name: String },
    #[error("the inventory of {name} does not hold the source's host key (it was probed by an older hotclone), so the prober could not tell the clone from an impostor; run `hotclone probe` and `hotclone plan` for it again")]
    NoHostKey { name: String },
    #[error("the inventory of {name} shows no IPv4 address on the source; a rehearsal checks the clone on its production addresses")]
    NoAddress { name: String },
    #[error("{0}")]
    Target(String),
    #[error("the rehearsal's isolated network: {0}")]
    Network(String),
    #[error(transparent)]
    Migration(#[from] crate::migration::MigrationError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Launch(#[from] crate::launch::LaunchError),
    #[error(transparent)]
    Lock(#[from] crate::target::lock::LockError),
    #[error(transparent)]
    Clone(#[from] crate::target::CloneError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RehearseError + '_ {
    move |source| RehearseError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How to rehearse.
#[derive(Debug, Clone)]
pub struct RehearseOptions {
    pub checks: Vec<Check>,
    /// Services that ran on the source but need not run on the VM.
    pub ignore_services: Vec<String>,
    /// Keep the overlay for inspection.
    pub keep: bool,
    pub boot_timeout: Duration,
    pub health_timeout: Duration,
    /// After the login prompt, how long the addresses have to come up.
    pub network_grace: Duration,
    /// How the source is reached (its ssh_config, keys): the clone takes
    /// the same keys.
    pub source: ConnectOptions,
}

/// The files of a migration's rehearsal.
pub fn dir(migration: &Migration) -> PathBuf {
    migration.dir.join("rehearsal")
}

/// The disk to rehearse and its format, and whether it is the live VM's.
fn target_disk(
    migration: &Migration,
    target: &TargetSpec,
) -> Result<(PathBuf, ImageFormat, Option<VmState>), RehearseError> {
    match target {
        TargetSpec::Image { path, format, .. } => Ok((path.clone(), *format, None)),
        TargetSpec::Live { destination, .. } => {
            let vm = VmState::load(migration)?.ok_or_else(|| {
                RehearseError::Target(format!(
                    "the live target {destination} is not a VM `hotclone launch` started, so its disk is not on this host to put an overlay on; rehearse on the host that runs the VM"
                ))
            })?;
            if vm.running() && vm.mode == BootMode::Disk {
                return Err(RehearseError::Target(format!(
                    "the VM of {} runs its own disk (cut over, or booted by hand); a rehearsal boots a copy of the disk while the VM is in its rescue system",
                    migration.name
                )));
            }
            Ok((vm.disk.clone(), vm.format, Some(vm)))
        }
    }
}

/// What holds the target still while the rehearsal reads it.
enum Park {
    Image(#[allow(dead_code)] crate::target::lock::TargetLock),
    Live(crate::target::live::Connection, crate::target::live::Parked),
    /// The VM is stopped: nothing writes to its disk.
    Stopped,
}

impl Park {
    async fn release(self) {
        if let Park::Live(conn, parked) = self {
            parked.release().await;
            let _ = conn
                .shell(&format!("rm -rf {}", crate::target::remote::WORK_DIR))
                .await;
            conn.close().await;
        }
    }
}

async fn park(
    migration: &Migration,
    plan: &crate::plan::Plan,
    disk: &Path,
    vm: Option<&VmState>,
    progress: &mut dyn Progress,
) -> Result<Park, RehearseError> {
    match vm {
        None => Ok(Park::Image(crate::target::lock::TargetLock::acquire(
            &crate::target::lock::image_lock_path(disk),
            "hotclone rehearse",
            crate::target::lock::wait_time(),
        )?)),
        Some(vm) if !vm.running() => Ok(Park::Stopped),
        Some(vm) => {
            let dest = vm.ssh_destination().ok_or_else(|| {
                RehearseError::Target("the VM has no static staging address".into())
            })?;
            let opts = crate::launch::rescue_connect_options(&VmFiles::of(migration));
            let conn = crate::target::live::connect(&dest, &opts, progress).await?;
            match conn.park(plan).await {
                Ok(parked) => Ok(Park::Live(conn, parked)),
                Err(e) => {
                    conn.close().await;
                    Err(e.into())
                }
            }
        }
    }
}

/// Rehearse the latest conversion of `migration`.
pub async fn run(
    migration: &Migration,
    opts: &RehearseOptions,
    progress: &mut dyn Progress,
) -> Result<Rehearsal, RehearseError> {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let (inventory, plan) = migration.load()?;
    let mut journal = Journal::open(&migration.journal_path())?;
    let conversion = journal.conversion()?;
    let stage = journal.stage()?;
    if conversion.is_none() && stage != crate::migration::Stage::Ready {
        return Err(RehearseError::NotConverted {
            name: migration.name.clone(),
        });
    }
    let host_key = inventory
        .host_key
        .clone()
        .ok_or_else(|| RehearseError::NoHostKey {
            name: migration.name.clone(),
        })?;
    let (addrs, _) = crate::cutover::network::production(&inventory.network);
    if addrs.is_empty() {
        return Err(RehearseError::NoAddress {
            name: migration.name.clone(),
        });
    }
    let (disk, format, vm) = target_disk(migration, &plan.target)?;
    let dir = dir(migration);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;

    progress.phase("parking the target");
    let parked = park(migration, &plan, &disk, vm.as_ref(), progress).await?;
    let result = rehearse_parked(
        migration,
        opts,
        &Subject {
            inventory: &inventory,
            disk: &disk,
            format,
            vm: vm.as_ref(),
            host_key: &host_key,
            addrs: &addrs,
        },
        &dir,
        progress,
    )
    .await;
    let teardown = Instant::now();
    parked.release().await;
    let mut rehearsal = result?;
    rehearsal.conversion = conversion;
    rehearsal.started_at = started_at;
    rehearsal.timings.teardown_ms += teardown.elapsed().as_millis() as u64;
    rehearsal.timings.total_ms = started.elapsed().as_millis() as u64;

    let md = migration.dir.join("rehearsal-report.md");
    let json = migration.dir.join("rehearsal-report.json");
    std::fs::write(&md, report::markdown(&rehearsal)).map_err(io(&md))?;
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&rehearsal).unwrap_or_default(),
    )
    .map_err(io(&json))?;
    journal.record_rehearsal(&RehearsalRow {
        at: started_at + (rehearsal.timings.total_ms / 1000) as i64,
        passed: rehearsal.passed,
        conversion,
        summary: rehearsal.summary(),
        report: md,
    })?;
    Ok(rehearsal)
}

/// The rehearsal's VM: the overlay on the isolated bridge in namespace
/// `ns`, under QEMU direct whatever runs the migration's own VM (libvirt
/// puts a NIC in libvirtd's namespace, not in the isolated one). Its backing file may be the live VM's disk, which that VM's QEMU
/// holds locked; it is only read here, and parked.
fn rehearsal_vm(
    migration: &str,
    overlay: &Path,
    ns: &str,
    mac: String,
    memory_mib: u64,
    cpus: u32,
) -> VmState {
    VmState {
        name: format!("rehearse-{migration}"),
        disk: overlay.to_path_buf(),
        format: ImageFormat::Qcow2,
        size_bytes: 0,
        net: NetSpec::Bridge {
            bridge: isolated::BRIDGE.into(),
            netns: Some(ns.to_string()),
        },
        tap: String::new(),
        tap_created: false,
        mac,
        staging_ip: None,
        memory_mib,
        cpus,
        pid: None,
        mode: BootMode::Disk,
        rescue_host_key: String::new(),
        rescue_agent_build: String::new(),
        drive_options: vec!["backing.file.locking=off".into()],
        hypervisor: HypervisorSpec::Qemu,
    }
}

/// A rehearsal killed before its teardown leaves its QEMU running (it is
/// daemonized): stop it, found by its pidfile and checked to be a QEMU
/// on this rehearsal's overlay.
fn stop_stale_vm(dir: &Path, overlay: &Path) {
    let files = VmFiles {
        dir: dir.to_path_buf(),
    };
    let pid = std::fs::read_to_string(files.pidfile())
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok());
    if let Some(pid) = pid {
        let mut stale = rehearsal_vm("stale", overlay, "", String::new(), 0, 0);
        stale.pid = Some(pid);
        let hv = hypervisor::for_vm(&stale);
        if hv.running(&stale) {
            let _ = hv.stop(&mut stale);
        }
    }
    let _ = std::fs::remove_file(files.pidfile());
}

/// What a rehearsal boots and checks: the source as probed, the target
/// disk (and its VM, for a live target), the host key SSH must answer
/// with, and the production addresses.
#[derive(Clone, Copy)]
struct Subject<'a> {
    inventory: &'a crate::probe::Inventory,
    disk: &'a Path,
    format: ImageFormat,
    vm: Option<&'a VmState>,
    host_key: &'a str,
    addrs: &'a [crate::probe::addresses::ProdAddr],
}

/// Overlay, network, boot, probe and teardown, with the target parked.
async fn rehearse_parked(
    migration: &Migration,
    opts: &RehearseOptions,
    subject: &Subject<'_>,
    dir: &Path,
    progress: &mut dyn Progress,
) -> Result<Rehearsal, RehearseError> {
    let Subject {
        inventory,
        disk,
        format,
        vm,
        host_key,
        addrs,
    } = *subject;
    let phase_started = Instant::now();
    progress.phase("making the overlay");
    let overlay = dir.join("overlay.qcow2");
    stop_stale_vm(dir, &overlay);
    let _ = std::fs::remove_file(&overlay);
    hypervisor::for_spec(&HypervisorSpec::Qemu).overlay(disk, format, &overlay)?;

    progress.phase("making the isolated network");
    let gateway = inventory
        .network
        .routes
        .iter()
        .find(|r| r.destination == "default")
        .and_then(|r| r.gateway.clone());
    let ns = isolated::namespace_name(&migration.name);
    let net = match isolated::Isolated::create(
        &ns,
        isolated::prober_addresses(addrs, gateway.as_deref()),
    ) {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&overlay);
            return Err(e);
        }
    };
    let (memory, cpus) = crate::launch::size_like(Some(&inventory.hardware));
    // A MAC of its own: the live VM's rescue system keeps its MAC on the
    // production segment meanwhile, and a capture there can tell the two
    // apart (the clone's NIC is eth0 either way: conversion pins no MAC).
    let mut state = rehearsal_vm(
        &migration.name,
        &overlay,
        &ns,
        crate::launch::random_mac(),
        vm.map(|v| v.memory_mib).unwrap_or(memory),
        vm.map(|v| v.cpus).unwrap_or(cpus),
    );
    let files = VmFiles {
        dir: dir.to_path_buf(),
    };
    let overlay_ms = phase_started.elapsed().as_millis() as u64;

    progress.phase("booting the clone on the isolated network");
    let booted = hypervisor::for_vm(&state).start(&mut state, &files, None);
    let console = hypervisor::for_vm(&state).console_log(&files, BootMode::Disk);
    let outcome = match booted {
        Ok(()) => {
            progress.phase("probing the clone");
            let services: Vec<String> = inventory
                .services
                .running
                .iter()
                .filter(|s| !opts.ignore_services.contains(s))
                .filter(|s| crate::cutover::services::valid_name(s))
                .cloned()
                .collect();
            let probe = prober::Probe {
                addresses: addrs.iter().map(|a| a.ip().to_string()).collect(),
                source: &inventory.source,
                connect: opts.source.clone(),
                host_key,
                netns: net.path(),
                services,
                checks: opts.checks.clone(),
                console: console.clone(),
                boot_timeout: opts.boot_timeout,
                health_timeout: opts.health_timeout,
                network_grace: opts.network_grace,
            };
            let manager = crate::cutover::services::for_clone(&inventory.init);
            let probed_state = state.clone();
            let alive = move || probed_state.running();
            Ok(prober::run(&probe, manager.as_ref(), &alive).await)
        }
        Err(e) => Err(e),
    };

    progress.phase("tearing down the rehearsal");
    let teardown = Instant::now();
    let interfaces = net.interfaces();
    let _ = hypervisor::for_vm(&state).stop(&mut state);
    let prober_addresses = net.prober.clone();
    drop(net);
    let kept_overlay = if opts.keep {
        Some(overlay.clone())
    } else {
        let _ = std::fs::remove_file(&overlay);
        None
    };
    let _ = std::fs::remove_file(files.pidfile());
    let outcome = outcome?;
    Ok(Rehearsal {
        migration: migration.name.clone(),
        disk: disk.to_path_buf(),
        conversion: None,
        started_at: 0,
        passed: outcome.passed(),
        reached: outcome.reached,
        timings: report::Timings {
            overlay_ms,
            boot_ms: outcome.boot_ms,
            checks_ms: outcome.checks_ms,
            teardown_ms: teardown.elapsed().as_millis() as u64,
            total_ms: 0,
        },
        checks: outcome.checks,
        namespace: ns,
        mac: state.mac.clone(),
        prober_addresses,
        interfaces,
        kept_overlay,
        console_tail: crate::launch::tail(&console, 30),
        console_log: console,
    })
}
