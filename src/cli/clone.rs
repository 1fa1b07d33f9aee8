//! `hotclone clone`: probe, plan, and clone a running source into a disk
//! image that boots as a VM.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use hotclone::clone::{self, stage, AgentCommand, Batching};
use hotclone::journal::Journal;
use hotclone::migration::{self, Migration};
use hotclone::plan::{self, Plan, TargetSpec};
use hotclone::probe::Inventory;
use hotclone::units::format_bytes;

use super::plan::PlanFlags;
use super::progress::CliProgress;
use super::render;
use super::ssh_args::SshArgs;

/// Clone a running source into a VM disk image: probe it, plan the disk,
/// create and format the image, copy every file with a BLAKE3 check, and
/// convert the copy (fstab, bootloader, initramfs, network) so it boots as
/// a VM. The source is only read. State goes to $HOTCLONE_HOME/NAME.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
hotclone clone root@web01 --target image:/var/lib/vm/web01.qcow2\n  \
hotclone plan root@web01 --target image:web01.img -o web01.toml   # review, edit\n  \
hotclone clone root@web01 --plan web01.toml --name web01")]
pub struct CloneArgs {
    /// The source: [user@]host[:port] or an ssh_config Host alias.
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Where the clone goes: image:PATH[,size=SIZE][,format=raw|qcow2].
    #[arg(long, value_name = "TARGET", required_unless_present = "plan")]
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
        if let Some(resumed) = resumable(&home, name, &args)? {
            return finish(args, session, resumed, &mut progress).await;
        }
    }
    let inventory = hotclone::probe::probe(&session, &args.source).await?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| inventory.hostname.clone());
    if let Some(resumed) = resumable(&home, &name, &args)? {
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
    let plan: Plan = match &args.plan {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the plan {}", path.display()))?;
            Plan::from_toml(&text).with_context(|| format!("the plan {}", path.display()))?
        }
        None => {
            let target = args
                .target
                .clone()
                .context("--target is needed without --plan")?;
            plan::make(&inventory, &args.planning.options(target))?
        }
    };
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
    let TargetSpec::Image {
        path: image_path, ..
    } = &plan.target;
    if image_path.exists() {
        bail!("{} already exists; hotclone never overwrites a disk image. Remove it or choose another path", image_path.display());
    }
    let migration = Migration::create(&home, &name)?;
    migration.write(
        &migration.inventory_path(),
        &serde_json::to_string_pretty(&inventory)?,
    )?;
    migration.write(&migration.plan_path(), &plan.to_toml())?;
    let started = Started {
        migration,
        inventory,
        plan,
    };
    finish(args, session, started, &mut progress).await
}

/// A migration to clone: new, or interrupted and continued.
struct Started {
    migration: Migration,
    inventory: Inventory,
    plan: Plan,
}

/// The migration `name` if a clone of it was interrupted (its journal says
/// "copying"); an error if it exists in any other state.
fn resumable(
    home: &std::path::Path,
    name: &str,
    args: &CloneArgs,
) -> anyhow::Result<Option<Started>> {
    let Ok(migration) = Migration::open(home, name) else {
        return Ok(None);
    };
    let journal = Journal::open(&migration.journal_path())?;
    let stage = journal.meta("stage")?;
    let (inventory, plan) = migration.load()?;
    // "ready" with the partial disk still there: the last step (finishing
    // the image) was interrupted; running the clone again redoes it.
    let unfinished = clone::partial_raw(&plan).exists();
    if stage.as_deref() == Some(stage::READY) && !unfinished {
        bail!("migration {name} is already cloned; keep it current with `hotclone sync {name}`, or choose another --name");
    }
    if stage.is_none() {
        bail!(
            "a migration named {name:?} exists in {} but never got a disk; remove that directory, or choose another --name",
            migration.dir.display()
        );
    }
    if let Some(TargetSpec::Image { path, .. }) = &args.target {
        let TargetSpec::Image { path: planned, .. } = &plan.target;
        if path != planned {
            bail!(
                "the interrupted clone {name} writes to {}, not to {}; run it again with the same --target (or none)",
                planned.display(),
                path.display()
            );
        }
    }
    Ok(Some(Started {
        migration,
        inventory,
        plan,
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
    } = started;
    let name = migration.name.clone();
    let agent = AgentCommand {
        program: std::env::current_exe().context("finding the hotclone binary for the agent")?,
        sweep: false,
    };
    let report = clone::run(
        &session,
        &inventory,
        &plan,
        &migration,
        &agent,
        Batching {
            max_files: args.tar_batch_files.max(1),
            ..Batching::default()
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
                .filter(|j| j.meta("stage").ok().flatten().is_some())
                .and_then(|j| j.counts().ok());
            if let Some((held, _)) = kept {
                return Err(anyhow::Error::from(e).context(format!(
                    "the clone stopped; {held} entries are safely on the target disk. Run the same command again (with --name {name}) to continue"
                )));
            }
            // Nothing usable was made (the image is gone too): leave no
            // migration behind that would block running the clone again.
            if let Err(rm) = std::fs::remove_dir_all(&migration.dir) {
                tracing::warn!("could not remove {}: {rm}", migration.dir.display());
            }
            return Err(e.into());
        }
    };
    let secs = report.duration.as_secs_f64().max(0.001);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"event": "done", "migration": name, "image": report.image, "files": report.files,
                "bytes": report.bytes, "wire_bytes": report.wire_bytes, "seconds": secs, "dirty": report.dirty,
                "warnings": report.warnings.len()})
        );
    } else {
        println!(
            "Cloned {} into {} (migration {name})",
            args.source,
            report.image.display()
        );
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
