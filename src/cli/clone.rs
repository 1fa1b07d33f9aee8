//! `hotclone clone`: probe, plan, and clone a running source into a disk
//! image that boots as a VM.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use hotclone::clone::{self, AgentCommand, Batching};
use hotclone::migration::{self, Migration};
use hotclone::plan::{self, Plan, TargetSpec};
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
    let inventory = hotclone::probe::probe(&session, &args.source).await?;
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
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| inventory.hostname.clone());
    let migration = Migration::create(&migration::home(), &name)?;
    migration.write(
        &migration.inventory_path(),
        &serde_json::to_string_pretty(&inventory)?,
    )?;
    migration.write(&migration.plan_path(), &plan.to_toml())?;

    let agent = AgentCommand {
        program: std::env::current_exe().context("finding the hotclone binary for the agent")?,
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
        &mut progress,
    )
    .await;
    progress.finish();
    if let Err(e) = session.disconnect().await {
        tracing::debug!("disconnecting: {e}");
    }
    let report = match report {
        Ok(report) => report,
        Err(e) => {
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
