//! `hotclone rehearse NAME`: boot the converted clone on an overlay, on a
//! network of its own, and check it as the cutover will (see
//! `hotclone::rehearse` for the steps and what happens on failure).

use std::time::Duration;

use clap::Args;
use hotclone::cutover::health::Check;
use hotclone::migration::{self, Migration};
use hotclone::rehearse::RehearseOptions;

use super::progress::CliProgress;
use super::ssh_args::SshArgs;

/// Prove the clone comes up before the maintenance window.
///
/// Boots the converted clone on a copy-on-write overlay of its disk (the
/// image, or the live VM's disk while its rescue system holds it still),
/// on an isolated network where it keeps its production addresses and
/// nothing can reach production. A prober on that network checks: the
/// console reaches userspace, each production address answers, SSH
/// answers with the source's host key, the services that ran on the
/// source run (started by the clone's own init), and every --check
/// passes. The overlay is then discarded: the target disk is unchanged
/// and syncs go on as before.
///
/// The report (rehearsal-report.md and .json, and the console log) is
/// written to the migration's directory. `cutover` refuses a migration
/// whose latest conversion has no passing rehearsal.
///
/// Exit codes: 0 passed, 1 a check failed (the report says which and
/// why) or the rehearsal could not run.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
hotclone rehearse web01\n  \
hotclone rehearse web01 --check tcp:80 --check 'cmd:curl -fsS http://localhost/health'\n  \
hotclone rehearse web01 --ignore-service xe-guest-utilities --keep")]
pub struct RehearseArgs {
    /// The migration's name (see $HOTCLONE_HOME and `hotclone status`).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// A health check the clone must pass, as for cutover: tcp:PORT (on
    /// the first production address), tcp:HOST:PORT, or 'cmd:COMMAND'
    /// (run on the clone). Repeat.
    #[arg(long = "check", value_name = "CHECK")]
    pub checks: Vec<String>,
    /// A service that ran on the source but need not run on the VM (a
    /// hypervisor's guest tools, a hardware monitor). Repeat.
    #[arg(long = "ignore-service", value_name = "SERVICE")]
    pub ignore_services: Vec<String>,
    /// Keep the overlay (in the migration's rehearsal/ directory) to look
    /// at what the clone wrote while it booted.
    #[arg(long)]
    pub keep: bool,
    /// How long the clone has to boot and answer SSH.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub boot_timeout: u64,
    /// How long it then has to pass its checks.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub health_timeout: u64,
    /// Once the console shows a login prompt, how long the production
    /// addresses have to answer before the rehearsal calls the clone's
    /// network down.
    #[arg(long, value_name = "SECONDS", default_value_t = 90)]
    pub network_grace: u64,
    /// Progress as JSON lines on stdout, and the record at the end.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

pub async fn run(args: RehearseArgs) -> anyhow::Result<u8> {
    let migration = Migration::open(&migration::home(), &args.name)?;
    let checks = Check::parse_all(&args.checks).map_err(anyhow::Error::msg)?;
    let opts = RehearseOptions {
        checks,
        ignore_services: args.ignore_services.clone(),
        keep: args.keep,
        boot_timeout: Duration::from_secs(args.boot_timeout.max(1)),
        health_timeout: Duration::from_secs(args.health_timeout.max(1)),
        network_grace: Duration::from_secs(args.network_grace.max(1)),
        source: args.ssh.to_options()?,
    };
    let mut progress = CliProgress::new(args.json);
    let result = hotclone::rehearse::run(&migration, &opts, &mut progress).await;
    progress.finish();
    let r = result?;
    let report = migration.dir.join("rehearsal-report.md");
    if args.json {
        println!(
            "{}",
            serde_json::json!({"event": "rehearsal", "migration": args.name, "record": r,
                "report": report})
        );
    } else {
        println!(
            "Rehearsal of {} {} in {:.1} s (boot to SSH {}). Report: {}",
            args.name,
            if r.passed { "passed" } else { "FAILED" },
            r.timings.total_ms as f64 / 1000.0,
            r.timings
                .boot_ms
                .map(|m| format!("{:.1} s", m as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            report.display()
        );
        for c in &r.checks {
            let mark = match c.passed {
                Some(true) => "ok  ",
                Some(false) => "FAIL",
                None => "  - ",
            };
            if c.passed == Some(false) {
                println!("  {mark} {}: {}", c.name, c.detail);
            } else {
                println!("  {mark} {}", c.name);
            }
        }
        if !r.passed {
            println!(
                "The target disk is unchanged. Fix the clone's configuration on the source (or the conversion), run `hotclone sync {}`, and rehearse again.",
                args.name
            );
        }
    }
    Ok(if r.passed { 0 } else { 1 })
}
