//! `hotclone target ...`: the target host's side of a live clone. Not for
//! people: the client runs these in the rescue VM over SSH. Results are
//! JSON on stdout, logs on stderr.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use hotclone::plan::Plan;
use hotclone::probe::Inventory;
use hotclone::target::remote;

use super::progress::CliProgress;

#[derive(Debug, Args)]
pub struct TargetArgs {
    #[command(subcommand)]
    pub action: TargetAction,
}

#[derive(Debug, Args)]
pub struct DiskArgs {
    /// The migration's plan (TOML).
    #[arg(long, value_name = "FILE")]
    pub plan: PathBuf,
    /// The whole disk to work on; it must be the one the plan names.
    #[arg(long, value_name = "DEVICE")]
    pub disk: PathBuf,
    /// Where its filesystems are mounted.
    #[arg(long, value_name = "DIR", default_value = remote::ROOT)]
    pub root: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum TargetAction {
    /// Version, build id, kernel and disks of this host, as JSON.
    Hello,
    /// Partition, format and mount the disk as planned (--attach: mount
    /// what an earlier prepare made). Prints the filesystems as JSON.
    Prepare {
        #[command(flatten)]
        disk: DiskArgs,
        #[arg(long)]
        attach: bool,
    },
    /// Convert the copy so it boots as a VM; progress as JSON lines, then
    /// {"event":"result","converted":...}.
    Convert {
        #[command(flatten)]
        disk: DiskArgs,
        /// The source's inventory (JSON).
        #[arg(long, value_name = "FILE")]
        inventory: PathBuf,
    },
    /// Re-hash the target against a journal; the differences as JSON.
    Verify {
        #[command(flatten)]
        disk: DiskArgs,
        /// The journal to check against (the client's copy).
        #[arg(long, value_name = "FILE")]
        journal: PathBuf,
    },
    /// Cutover: check the clone's network identity, make it announce its
    /// addresses at boot, remove hotclone's files from it, fsck, unmount.
    /// The notes as JSON.
    Finalize {
        #[command(flatten)]
        disk: DiskArgs,
        /// The source's inventory (JSON).
        #[arg(long, value_name = "FILE")]
        inventory: PathBuf,
        /// The production addresses (JSON).
        #[arg(long, value_name = "FILE")]
        addresses: PathBuf,
    },
    /// Rehearsal: hold the disk's lock with nothing of it mounted, print
    /// {"parked":DISK}, and keep holding it until stdin closes.
    Park {
        #[command(flatten)]
        disk: DiskArgs,
    },
    /// Unmount the disk's filesystems (--fsck: and check them).
    Finish {
        #[command(flatten)]
        disk: DiskArgs,
        #[arg(long)]
        fsck: bool,
    },
}

fn plan(path: &PathBuf) -> anyhow::Result<Plan> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Plan::from_toml(&text)?)
}

pub fn run(args: TargetArgs) -> anyhow::Result<()> {
    match args.action {
        TargetAction::Hello => println!("{}", serde_json::to_string(&remote::hello())?),
        TargetAction::Prepare { disk, attach } => {
            let made = remote::prepare(&plan(&disk.plan)?, &disk.disk, &disk.root, attach)?;
            println!("{}", serde_json::to_string(&made)?);
        }
        TargetAction::Convert { disk, inventory } => {
            let text = std::fs::read_to_string(&inventory)
                .with_context(|| format!("reading {}", inventory.display()))?;
            let inv: Inventory = serde_json::from_str(&text)?;
            let mut progress = CliProgress::new(true);
            let converted = remote::convert(
                &inv,
                &plan(&disk.plan)?,
                &disk.disk,
                &disk.root,
                &mut progress,
            )?;
            println!(
                "{}",
                serde_json::json!({"event": "result", "converted": converted})
            );
        }
        TargetAction::Verify { disk, journal } => {
            let diffs = remote::verify(&plan(&disk.plan)?, &disk.disk, &disk.root, &journal)?;
            println!("{}", serde_json::to_string(&diffs)?);
        }
        TargetAction::Finalize {
            disk,
            inventory,
            addresses,
        } => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            let inv: Inventory = serde_json::from_str(&read(&inventory)?)?;
            let addrs: Vec<hotclone::probe::addresses::ProdAddr> =
                serde_json::from_str(&read(&addresses)?)?;
            let notes = remote::finalize(&plan(&disk.plan)?, &disk.disk, &disk.root, &inv, &addrs)?;
            println!("{}", serde_json::to_string(&notes)?);
        }
        TargetAction::Park { disk } => {
            let lock = remote::park(&plan(&disk.plan)?, &disk.disk)?;
            println!("{}", serde_json::json!({"parked": disk.disk}));
            use std::io::{Read, Write};
            std::io::stdout().flush()?;
            // Until the client closes stdin (or its connection dies).
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            drop(lock);
        }
        TargetAction::Finish { disk, fsck } => {
            let done = remote::finish(&plan(&disk.plan)?, &disk.disk, &disk.root, fsck)?;
            println!("{}", serde_json::json!({"disk": done}));
        }
    }
    Ok(())
}
