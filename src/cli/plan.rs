//! `hotclone plan`: probe a source (or read a saved inventory) and show
//! the target disk it would get. Writes nothing but the plan file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use hotclone::plan::{self, PlanOptions, TargetSpec};
use hotclone::probe::Inventory;

use super::render;
use super::ssh_args::SshArgs;

/// Decide the target disk for a source: partition table, partitions and
/// their sizes, filesystems with features the source's own kernel and
/// bootloader can read, what is not copied, and the network mapping.
/// Prints the plan; nothing is written except the -o file.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
hotclone plan root@web01 --target image:/var/lib/vm/web01.qcow2,size=40G -o web01.plan.toml\n  \
hotclone probe --json root@web01 > web01.json && hotclone plan --inventory web01.json --target image:web01.img\n\n\
The plan file is TOML: edit it (sizes, filesystems, excludes) and pass it to `hotclone clone --plan`.")]
pub struct PlanArgs {
    /// The source: [user@]host[:port] or an ssh_config Host alias.
    #[arg(value_name = "SOURCE", required_unless_present = "inventory")]
    pub source: Option<String>,
    /// Where the clone goes: image:PATH[,size=SIZE][,format=raw|qcow2].
    /// Without size=, the disk is sized from the plan.
    #[arg(long, value_name = "TARGET")]
    pub target: TargetSpec,
    /// Plan from an inventory saved with `hotclone probe --json` instead of
    /// probing the source again.
    #[arg(long, value_name = "FILE", conflicts_with = "source")]
    pub inventory: Option<PathBuf>,
    /// Write the plan (TOML) here.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the plan as TOML instead of a summary.
    #[arg(long)]
    pub toml: bool,
    #[command(flatten)]
    pub planning: PlanFlags,
    #[command(flatten)]
    pub ssh: SshArgs,
}

/// Planning choices, shared by `plan` and `clone`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Planning options")]
pub struct PlanFlags {
    /// Also copy this mount point although it is on another disk than /
    /// (repeatable).
    #[arg(long, value_name = "MOUNTPOINT")]
    pub include_mount: Vec<String>,
    /// Do not copy this path (repeatable).
    #[arg(long, value_name = "PATH")]
    pub exclude: Vec<String>,
    /// Free space to add to each filesystem, in percent of its data.
    #[arg(long, value_name = "PERCENT", default_value_t = 30)]
    pub headroom: u32,
    /// The installed kernel the clone will boot (default: the newest).
    #[arg(long, value_name = "RELEASE")]
    pub kernel: Option<String>,
    /// Put every copied filesystem into one root filesystem.
    #[arg(long)]
    pub consolidate: bool,
}

impl PlanFlags {
    pub fn options(&self, target: TargetSpec) -> PlanOptions {
        PlanOptions {
            headroom_percent: self.headroom,
            include_mounts: self.include_mount.clone(),
            excludes: self.exclude.clone(),
            kernel: self.kernel.clone(),
            consolidate: self.consolidate,
            ..PlanOptions::new(target)
        }
    }
}

async fn inventory(args: &PlanArgs) -> anyhow::Result<Inventory> {
    if let Some(path) = &args.inventory {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the inventory {}", path.display()))?;
        return serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not an inventory written by `hotclone probe --json`",
                path.display()
            )
        });
    }
    let source = args
        .source
        .as_deref()
        .context("name a SOURCE or --inventory FILE")?;
    let session = hotclone::ssh::Session::connect(source, &args.ssh.to_options()?).await?;
    let inventory = hotclone::probe::probe(&session, source).await?;
    if let Err(e) = session.disconnect().await {
        tracing::debug!("disconnecting from {source}: {e}");
    }
    Ok(inventory)
}

pub async fn run(args: PlanArgs) -> anyhow::Result<()> {
    let inventory = inventory(&args).await?;
    let options = args.planning.options(args.target.clone());
    let plan = plan::make(&inventory, &options)?;
    let toml = plan.to_toml();
    if let Some(path) = &args.output {
        std::fs::write(path, &toml)
            .with_context(|| format!("writing the plan to {}", path.display()))?;
        tracing::info!("plan written to {}", path.display());
    }
    if args.toml {
        print!("{toml}");
    } else {
        print!("{}", render::plan(&plan));
    }
    Ok(())
}
