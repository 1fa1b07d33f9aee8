//! The command line: argument parsing (clap), resolving it into library
//! options, and rendering results. Business logic lives in the library.

pub mod agent;
pub mod clone;
pub mod cutover;
pub mod export;
pub mod launch;
pub mod password;
pub mod plan;
pub mod probe;
pub mod progress;
pub mod rehearse;
pub mod render;
pub mod rescue;
pub mod ssh_args;
pub mod status;
pub mod sync;
pub mod target;
pub mod verify;

use clap::{Parser, Subcommand};

/// Hot-clone running legacy Linux servers into virtual machines.
///
/// hotclone works agentlessly: it connects to the source with SSH and runs
/// only the source's own sh, tar and find. Nothing is installed there and
/// nothing on it is changed.
#[derive(Debug, Parser)]
#[command(
    name = "hotclone",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(after_help = "Start with `hotclone probe root@server` to see what hotclone sees.")]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). HOTCLONE_LOG=filter overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Probe(probe::ProbeArgs),
    Plan(plan::PlanArgs),
    #[command(hide = true)]
    Agent(agent::AgentArgs),
    Clone(clone::CloneArgs),
    Sync(sync::SyncArgs),
    Status(status::StatusArgs),
    Rehearse(rehearse::RehearseArgs),
    Cutover(cutover::CutoverArgs),
    Verify(verify::VerifyArgs),
    Rescue(rescue::RescueArgs),
    Launch(launch::LaunchArgs),
    Export(export::ExportArgs),
    #[command(hide = true)]
    Target(target::TargetArgs),
}
