//! `hotclone clone`: probe, plan, and clone a running source into a disk
//! image that boots as a VM.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use hotclone::clone::{self, Batching, CloneOptions};
use hotclone::journal::Journal;
use hotclone::launch::{VmFiles, VmState};
use hotclone::migration::{self, Migration, Stage};
use hotclone::plan::{self, Plan, TargetSpec};
use hotclone::probe::Inventory;
use hotclone::progress::Progress;
use hotclone::target::{live, Opener};
use hotclone::units::format_bytes;

use super::plan::PlanFlags;
use super::progress::CliProgress;
use super::render;
use super::ssh_args::SshArgs;

/// Clone a running source into a VM disk: probe it, plan the disk,
/// partition and format it, copy every file with a BLAKE3 check, and
/// convert the copy (fstab, bootloader, initramfs, network) so it boots as
/// a VM. The disk is an image here, or the disk of a VM booted from the
/// rescue image (`hotclone launch`), written over SSH. The source is only
/// read. State goes to $HOTCLONE_HOME/NAME.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
hotclone clone root@web01 --target image:/var/lib/vm/web01.qcow2\n  \
hotclone launch web01 --disk /var/lib/vm/web01.qcow2,size=40G --net bridge:br0 --ip 192.0.2.50/24\n  \
hotclone clone root@web01 --name web01                # into the launched VM\n  \
hotclone plan root@web01 --target image:web01.img -o web01.toml   # review, edit\n  \
hotclone clone root@web01 --plan web01.toml --name web01\n  \
hotclone clone root@web01 --target image:web01.img --copy-only   # copy now...\n  \
hotclone clone root@web01 --name web01                # ...convert later")]
pub struct CloneArgs {
    /// The source: [user@]host[:port] or an ssh_config Host alias.
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Where the clone goes: image:PATH[,size=SIZE][,format=raw|qcow2], or
    /// ssh://[USER@]HOST[:PORT][,disk=DEVICE] for a VM running the rescue
    /// image. Default: the VM `hotclone launch NAME` started.
    #[arg(long, value_name = "TARGET")]
    pub target: Option<TargetSpec>,
    /// Use this plan (from `hotclone plan -o`, possibly edited) instead of
    /// planning anew. It is validated first.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Name of the migration (default: the source's hostname).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Progress and the result as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// Files per tar run on the source; each run is one batch.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub tar_batch_files: usize,
    /// Copy every file, then stop before converting: the disk is closed
    /// but not bootable yet (an image stays as its .raw.partial file).
    /// Run the same command again without it to finish: it sends what
    /// changed meanwhile, then converts. Seeds a big copy ahead of time.
    #[arg(long)]
    pub copy_only: bool,
    /// (ignored with --plan, which holds these choices already)
    #[command(flatten)]
    pub planning: PlanFlags,
    #[command(flatten)]
    pub ssh: SshArgs,
}

pub async fn run(args: CloneArgs) -> anyhow::Result<u8> {
    let mut progress = CliProgress::new(args.json);
    let session = hotclone::ssh::Session::connect(&args.source, &args.ssh.to_options()?).await?;
    let home = migration::home();
    // A clone that was interrupted continues from its journal, on the
    // inventory and plan it was started with.
    if let Some(name) = &args.name {
        if let Some(resumed) = resumable(&home, name, &args, &mut progress).await? {
            return finish(args, session, resumed, &mut progress).await;
        }
    }
    let inventory = hotclone::probe::probe(&session, &args.source).await?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| inventory.hostname.clone());
    if let Some(resumed) = resumable(&home, &name, &args, &mut progress).await? {
        if resumed.inventory.hostname != inventory.hostname {
            bail!(
                "the interrupted migration {name} cloned {}, but {} is {}; choose another --name",
                resumed.inventory.hostname,
                args.source,
                inventory.hostname
            );
        }
        return finish(args, session, resumed, &mut progress).await;
    }
    let existing = Migration::open(&home, &name).ok();
    let (plan, opener) =
        plan_target(&args, &inventory, existing.as_ref(), &name, &mut progress).await?;
    if plan.source.hostname != inventory.hostname {
        bail!(
            "the plan was made for {} but {} is {}; make a plan for this source with `hotclone plan`",
            plan.source.hostname,
            args.source,
            inventory.hostname
        );
    }
    if !args.json {
        eprint!("{}", render::plan(&plan));
    }
    if let TargetSpec::Image { path, .. } = &plan.target {
        if path.exists() {
            bail!("{} already exists; hotclone never overwrites a disk image. Remove it or choose another path", path.display());
        }
    }
    // A migration that only has its VM yet (`hotclone launch`) is used.
    let migration = match existing {
        Some(m) => m,
        None => Migration::create(&home, &name)?,
    };
    migration.write(
        &migration.inventory_path(),
        &serde_json::to_string_pretty(&inventory)?,
    )?;
    migration.write(&migration.plan_path(), &plan.to_toml())?;
    let started = Started {
        migration,
        inventory,
        plan,
        opener,
    };
    finish(args, session, started, &mut progress).await
}

/// The plan (made now, or read from --plan) and how to reach its target.
/// A live target is asked for its disks first: the plan fills the chosen
/// disk, which must exist and be free.
async fn plan_target(
    args: &CloneArgs,
    inventory: &Inventory,
    migration: Option<&Migration>,
    name: &str,
    progress: &mut dyn Progress,
) -> anyhow::Result<(Plan, Opener)> {
    if let Some(path) = &args.plan {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the plan {}", path.display()))?;
        let plan =
            Plan::from_toml(&text).with_context(|| format!("the plan {}", path.display()))?;
        let opener = opener(&plan, migration, &args.ssh, progress).await?;
        if let (Opener::Live(conn), TargetSpec::Live { disk, .. }) = (&opener, &plan.target) {
            let disk = conn.choose_disk(disk.as_deref())?;
            if disk.size_bytes < plan.disk.size_bytes {
                bail!(
                    "the plan needs a disk of {}, but {} on {} has {}",
                    format_bytes(plan.disk.size_bytes),
                    disk.device.display(),
                    conn.destination,
                    format_bytes(disk.size_bytes)
                );
            }
        }
        return Ok((plan, opener));
    }
    let vm = migration.and_then(|m| VmState::load(m).ok().flatten());
    let target = match (&args.target, vm.as_ref().and_then(VmState::ssh_destination)) {
        (Some(t), _) => t.clone(),
        (None, Some(dest)) => TargetSpec::Live {
            destination: dest,
            disk: None,
            size_bytes: None,
        },
        (None, None) => bail!(
            "name the target with --target (image:PATH or ssh://HOST), or start a VM for it first with `hotclone launch {name} ...`"
        ),
    };
    match target {
        TargetSpec::Live {
            destination, disk, ..
        } => {
            let conn = connect_live(&destination, migration, &args.ssh, progress).await?;
            let chosen = conn.choose_disk(disk.as_deref())?;
            let target = TargetSpec::Live {
                destination,
                disk: Some(chosen.device),
                size_bytes: Some(chosen.size_bytes),
            };
            let plan = plan::make(inventory, &args.planning.options(target))?;
            Ok((plan, Opener::Live(conn)))
        }
        image => {
            let plan = plan::make(inventory, &args.planning.options(image))?;
            let opener = opener(&plan, migration, &args.ssh, progress).await?;
            Ok((plan, opener))
        }
    }
}

/// How to reach `plan`'s target: the image here, or the live target over
/// SSH (as the migration's launched VM when it is that VM).
pub async fn opener(
    plan: &Plan,
    migration: Option<&Migration>,
    ssh: &SshArgs,
    progress: &mut dyn Progress,
) -> anyhow::Result<Opener> {
    match &plan.target {
        TargetSpec::Image { .. } => Ok(Opener::Image {
            agent_program: std::env::current_exe()
                .context("finding the hotclone binary for the agent")?,
        }),
        TargetSpec::Live { destination, .. } => Ok(Opener::Live(
            connect_live(destination, migration, ssh, progress).await?,
        )),
    }
}

/// Connect to a live target. The migration's own VM is reached with the
/// keys `launch` made for it (strictly: its known_hosts holds only the key
/// it was given); any other live target with the usual SSH options.
async fn connect_live(
    destination: &str,
    migration: Option<&Migration>,
    ssh: &SshArgs,
    progress: &mut dyn Progress,
) -> anyhow::Result<live::Connection> {
    let launched = match migration {
        Some(m) => VmState::load(m)?
            .filter(|vm| vm.ssh_destination().as_deref() == Some(destination))
            .map(|_| hotclone::launch::rescue_connect_options(&VmFiles::of(m))),
        None => None,
    };
    let opts = match launched {
        Some(opts) => opts,
        None => ssh.to_options()?,
    };
    Ok(live::connect(destination, &opts, progress).await?)
}

/// A migration to clone: new, or interrupted and continued.
struct Started {
    migration: Migration,
    inventory: Inventory,
    plan: Plan,
    opener: Opener,
}

/// The migration `name` if a clone of it was interrupted (its journal says
/// "copying"); an error if it exists in any other state.
async fn resumable(
    home: &std::path::Path,
    name: &str,
    args: &CloneArgs,
    progress: &mut dyn Progress,
) -> anyhow::Result<Option<Started>> {
    let Ok(migration) = Migration::open(home, name) else {
        return Ok(None);
    };
    let journal = Journal::open(&migration.journal_path())?;
    let stage = journal.stage()?;
    if stage == Stage::New {
        if VmState::load(&migration)?.is_none() {
            // A clone stopped before it began to make a disk (probing or
            // planning): nothing of it is worth keeping, so it starts over.
            progress.note(&format!(
                "an earlier clone {name} stopped before it made a disk; starting over"
            ));
            forget_clone(&migration);
        }
        // Else only its VM so far (`hotclone launch`): a new clone into it.
        return Ok(None);
    }
    let (inventory, plan) = migration.load()?;
    // "ready" but not finished: the last step (finishing the disk) was
    // interrupted; running the clone again redoes it.
    let unfinished = match &plan.target {
        TargetSpec::Image { path, .. } => hotclone::target::local::partial_raw(path).exists(),
        TargetSpec::Live { .. } => journal.meta(clone::FINISHED)?.as_deref() != Some("yes"),
    };
    if stage == Stage::Ready && !unfinished {
        bail!("migration {name} is already cloned; keep it current with `hotclone sync {name}`, or choose another --name");
    }
    if let Some(given) = &args.target {
        let same = match (given, &plan.target) {
            (TargetSpec::Image { path: a, .. }, TargetSpec::Image { path: b, .. }) => a == b,
            (TargetSpec::Live { destination: a, .. }, TargetSpec::Live { destination: b, .. }) => {
                a == b
            }
            _ => false,
        };
        if !same {
            bail!(
                "the interrupted clone {name} writes to {}, not to {}; run it again with the same --target (or none)",
                plan.target.display(),
                given.display()
            );
        }
    }
    let opener = opener(&plan, Some(&migration), &args.ssh, progress).await?;
    Ok(Some(Started {
        migration,
        inventory,
        plan,
        opener,
    }))
}

async fn finish(
    args: CloneArgs,
    session: hotclone::ssh::Session,
    started: Started,
    progress: &mut CliProgress,
) -> anyhow::Result<u8> {
    let Started {
        migration,
        inventory,
        plan,
        opener,
    } = started;
    let name = migration.name.clone();
    let report = clone::run(
        &session,
        &inventory,
        &plan,
        &migration,
        opener,
        CloneOptions {
            batching: Batching {
                max_files: args.tar_batch_files.max(1),
                ..Batching::default()
            },
            copy_only: args.copy_only,
        },
        progress,
    )
    .await;
    progress.finish();
    if let Err(e) = session.disconnect().await {
        tracing::debug!("disconnecting: {e}");
    }
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            // Once the disk holds files (the journal has a stage), both
            // are kept and the same command continues.
            let kept = Journal::open(&migration.journal_path())
                .ok()
                .filter(|j| {
                    let stage = j.stage().unwrap_or(Stage::New);
                    !matches!(stage, Stage::New | Stage::Preparing)
                })
                .and_then(|j| j.counts().ok());
            if e.target_damaged() {
                // Refused before writing: the disk and the journal stay
                // as they are, for inspection; its message says what next.
                return Err(e.into());
            }
            if let Some((held, _)) = kept {
                return Err(anyhow::Error::from(e).context(format!(
                    "the clone stopped; {held} entries are safely on the target disk. Run the same command again (with --name {name}) to continue"
                )));
            }
            // Nothing usable was made (the image is gone too): leave no
            // migration behind that would block running the clone again;
            // a launched VM's state stays, the VM is still there.
            forget_clone(&migration);
            return Err(e.into());
        }
    };
    let secs = report.duration.as_secs_f64().max(0.001);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"event": "done", "migration": name, "image": report.image, "converted": report.converted, "files": report.files,
                "bytes": report.bytes, "wire_bytes": report.wire_bytes, "seconds": secs, "dirty": report.dirty,
                "warnings": report.warnings.len()})
        );
    } else {
        if report.converted {
            println!(
                "Cloned {} into {} (migration {name})",
                args.source, report.image
            );
        } else {
            println!(
                "Copied {} (migration {name}); not converted, the disk does not boot yet. Run `hotclone clone {} --name {name}` to finish it",
                args.source, args.source
            );
        }
        println!("  files      {}", report.files);
        println!(
            "  data       {} (on the wire {}, ratio {:.2})",
            format_bytes(report.bytes),
            format_bytes(report.wire_bytes),
            report.bytes as f64 / report.wire_bytes.max(1) as f64
        );
        println!(
            "  time       {secs:.1} s ({}/s)",
            format_bytes((report.bytes as f64 / secs) as u64)
        );
        println!(
            "  dirty      {} (changed while read; `hotclone sync {name}` sends them again)",
            report.dirty
        );
        println!("  warnings   {}", report.warnings.len());
        for note in &report.notes {
            println!("  note: {note}");
        }
    }
    // Exit 0 clean, 3 when files were dirty or had warnings (the copy is
    // usable but not exact).
    Ok(if report.dirty > 0 || !report.warnings.is_empty() {
        3
    } else {
        0
    })
}

/// Remove what a clone that got nowhere wrote into the migration.
fn forget_clone(migration: &Migration) {
    let launched = VmState::load(migration).ok().flatten().is_some();
    let result = if launched {
        [
            "inventory.json",
            "plan.toml",
            "journal.sqlite",
            "journal.sqlite-wal",
            "journal.sqlite-shm",
        ]
        .iter()
        .map(|f| migration.dir.join(f))
        .filter(|p| p.exists())
        .try_for_each(std::fs::remove_file)
    } else {
        std::fs::remove_dir_all(&migration.dir)
    };
    if let Err(rm) = result {
        tracing::warn!("could not clean up {}: {rm}", migration.dir.display());
    }
}
