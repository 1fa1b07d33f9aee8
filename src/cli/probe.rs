//! `hotclone probe`: connect, inspect, print the Inventory.

use clap::Args;

use super::render;
use super::ssh_args::SshArgs;

/// Inspect a running source and print what hotclone sees: distro, kernel,
/// bootloader, filesystems, disks, network, services, and what its tar and
/// find can do. Read-only: nothing on the source is changed.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  hotclone probe root@198.51.100.11\n  hotclone probe --json -F lab/ssh_config debian12 > inventory.json"
)]
pub struct ProbeArgs {
    /// The source: [user@]host[:port] or an ssh_config Host alias.
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Print the inventory as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let options = args.ssh.to_options()?;
    let session = hotclone::ssh::Session::connect(&args.source, &options).await?;
    let inventory = hotclone::probe::probe(&session, &args.source).await?;
    // A failed disconnect after a complete probe is not worth failing for.
    if let Err(e) = session.disconnect().await {
        tracing::debug!("disconnecting from {}: {e}", args.source);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inventory)?);
    } else {
        print!("{}", render::inventory(&inventory));
    }
    Ok(())
}
