//! `hotclone rescue build`: make the rescue image target VMs boot.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use hotclone::rescue::{self, BuildOptions};
use hotclone::units::format_bytes;

use super::progress::CliProgress;

/// The rescue image: a small Debian kernel + initramfs (and ISO) with an
/// SSH server, disk and boot tools, and hotclone's agent. `hotclone
/// launch` boots it in the target VM; `hotclone clone --target ssh://`
/// streams into it.
#[derive(Debug, Args)]
pub struct RescueArgs {
    #[command(subcommand)]
    pub action: RescueAction,
}

#[derive(Debug, Subcommand)]
pub enum RescueAction {
    /// Build the rescue image from Debian packages (debootstrap; the slow
    /// part is cached by recipe, so a rebuild takes seconds). Needs root.
    #[command(
        after_help = "Example:\n  hotclone rescue build --out /var/lib/hotclone/rescue\n\n\
The ISO boots on hypervisors that take ISOs (BIOS or UEFI). Reach it by adding\n\
hotclone.ip=ADDR/PREFIX and hotclone.authorized_key=ssh-ed25519:BASE64 at its\n\
GRUB prompt; `hotclone launch` injects a key pair of its own instead."
    )]
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Where the image goes [default: $HOTCLONE_RESCUE_DIR, else
    /// ~/.local/share/hotclone/rescue].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where the debootstrapped base is cached [default:
    /// $HOTCLONE_RESCUE_CACHE, else ~/.cache/hotclone].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// The Debian mirror debootstrap uses.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://deb.debian.org/debian"
    )]
    pub mirror: String,
    /// Do not make the ISO (it needs grub-mkrescue, xorriso and mtools).
    #[arg(long)]
    pub no_iso: bool,
    /// Progress as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: RescueArgs) -> anyhow::Result<()> {
    let RescueAction::Build(args) = args.action;
    let opts = BuildOptions {
        cache: args.cache.unwrap_or_else(rescue::default_cache),
        out: args.out.unwrap_or_else(rescue::default_dir),
        mirror: args.mirror,
        agent: std::env::current_exe().context("finding the hotclone binary to put inside")?,
        iso: !args.no_iso,
    };
    let mut progress = CliProgress::new(args.json);
    let started = std::time::Instant::now();
    let image = rescue::build(&opts, &mut progress)?;
    progress.finish();
    let m = &image.manifest;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"event": "done", "dir": image.dir, "manifest": m,
                "seconds": started.elapsed().as_secs_f64()})
        );
        return Ok(());
    }
    println!(
        "Rescue image in {} (recipe {})",
        image.dir.display(),
        m.recipe_hash
    );
    println!(
        "  kernel   {} ({})",
        m.kernel_release,
        format_bytes(m.kernel_bytes)
    );
    println!("  initrd   {}", format_bytes(m.initrd_bytes));
    if let Some(iso) = m.iso_bytes {
        println!("  iso      {}", format_bytes(iso));
    }
    println!("  agent    hotclone build {}", m.agent_build);
    println!(
        "  time     {:.0} s{}",
        started.elapsed().as_secs_f64(),
        if m.base_build_seconds == 0 {
            " (base from the cache)"
        } else {
            ""
        }
    );
    Ok(())
}
