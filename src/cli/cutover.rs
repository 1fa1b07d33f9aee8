//! `hotclone cutover NAME`: the maintenance window (see
//! `hotclone::cutover` for the steps and what happens on failure).

use std::time::Duration;

use clap::Args;
use hotclone::cutover::health::Check;
use hotclone::cutover::{CutoverOptions, Finished};
use hotclone::migration::{self, Migration};
use hotclone::pass::copy::Batching;
use hotclone::pass::PassOptions;

use super::progress::CliProgress;
use super::ssh_args::SshArgs;

/// Move the service from the source to its clone, with no moment where
/// both answer for the production addresses, and roll back if the clone
/// is not healthy.
///
/// Steps (each recorded as it runs; running the command again after a
/// crash continues it, or rolls it back once the source let go of its
/// addresses): preflight (nothing changes), quiesce (--stop services, by
/// the source's own init), final sync, verify of what it changed, release
/// of the source's addresses (it moves to --fallback-ip, with a watchdog
/// that takes them back if hotclone dies), ARP probe from the VM's segment
/// (anyone answering rolls back), finalize the clone's identity, boot it,
/// wait for SSH with the source's host key, health checks. Any failure
/// after the quiesce rolls back: the clone's VM off, the source's
/// addresses and services back, the VM in its rescue system again.
///
/// A report (cutover-report.md and .json, in the migration's directory)
/// gives the timeline and the downtime.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
hotclone cutover web01 --fallback-ip 192.0.2.99/24 --stop apache2 --stop mysql --dry-run\n  \
hotclone cutover web01 --fallback-ip 192.0.2.99/24 --stop apache2 --check tcp:80 \\\n      \
--check 'cmd:curl -fsS http://localhost/health'\n  \
hotclone cutover web01 --fallback-ip 192.0.2.99/24 --quiesce all")]
pub struct CutoverArgs {
    /// The migration's name (see $HOTCLONE_HOME and `hotclone status`).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// A service to stop on the source before the final sync (repeat, in
    /// order). It is restarted on rollback and must run on the clone.
    #[arg(long = "stop", value_name = "SERVICE")]
    pub stop: Vec<String>,
    /// `all`: stop every running service except sshd, the network, dbus,
    /// udev, gettys and systemd's own.
    #[arg(long, value_name = "all", value_parser = ["all"])]
    pub quiesce: Option<String>,
    /// A health check the clone must pass: tcp:PORT (on the production
    /// address), tcp:HOST:PORT, or 'cmd:COMMAND' (run on the clone). Repeat.
    #[arg(long = "check", value_name = "CHECK")]
    pub checks: Vec<String>,
    /// The address the source moves to while the clone takes its own
    /// (ADDR/PREFIX, free, on the same segment). It keeps it afterwards, so
    /// the old box stays reachable.
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub fallback_ip: Option<String>,
    /// Only check and print every step it would take; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse when the last sync pass finished longer ago than this.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub max_sync_age: u64,
    /// How long the clone has to answer SSH (with the source's host key)
    /// once its boot starts.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub boot_timeout: u64,
    /// How long it then has to pass its checks (the stopped services
    /// running, every --check) before the cutover rolls back.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub health_timeout: u64,
    /// After this long without hotclone, the source takes its addresses
    /// back by itself (the watchdog is disarmed before the clone boots).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub watchdog: u64,
    /// The rescue image to boot the VM into again on rollback [default:
    /// $HOTCLONE_RESCUE_DIR, else ~/.local/share/hotclone/rescue].
    #[arg(long, value_name = "DIR")]
    pub rescue: Option<std::path::PathBuf>,
    /// Cut over even though the latest conversion has no passing
    /// `hotclone rehearse`. The report records that it did.
    #[arg(long)]
    pub no_rehearsal: bool,
    /// Progress as JSON lines on stdout, and the record at the end.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

pub async fn run(args: CutoverArgs) -> anyhow::Result<u8> {
    let migration = Migration::open(&migration::home(), &args.name)?;
    let checks = Check::parse_all(&args.checks).map_err(anyhow::Error::msg)?;
    let opts = CutoverOptions {
        stop: args.stop.clone(),
        quiesce_all: args.quiesce.is_some(),
        checks,
        fallback: args.fallback_ip.clone(),
        max_sync_age: Duration::from_secs(args.max_sync_age),
        boot_timeout: Duration::from_secs(args.boot_timeout.max(1)),
        health_timeout: Duration::from_secs(args.health_timeout.max(1)),
        watchdog: Duration::from_secs(args.watchdog.max(30)),
        rescue: Some(
            args.rescue
                .clone()
                .unwrap_or_else(hotclone::rescue::default_dir),
        ),
        pass: PassOptions {
            batching: Batching::default(),
            sweep: false,
            checksum: false,
        },
        source: args.ssh.to_options()?,
        no_rehearsal: args.no_rehearsal,
    };
    let mut progress = CliProgress::new(args.json);
    if args.dry_run {
        let plan = hotclone::cutover::dry_run(&migration, &opts, &mut progress).await;
        progress.finish();
        let plan = plan?;
        if args.json {
            let steps: Vec<_> = plan
                .steps
                .iter()
                .map(|(s, what)| serde_json::json!({"step": s.name(), "would": what}))
                .collect();
            println!(
                "{}",
                serde_json::json!({"event": "dry-run", "migration": args.name, "steps": steps,
                    "final_sync_estimate_seconds": plan.estimate_seconds})
            );
        } else {
            println!("Cutover of {} (dry run: nothing was changed)", args.name);
            for (i, (s, what)) in plan.steps.iter().enumerate() {
                println!("  {:>2}. {:<18} {what}", i + 1, s.name());
            }
        }
        return Ok(0);
    }
    let result = hotclone::cutover::run(&migration, &opts, &mut progress).await;
    progress.finish();
    let Finished {
        record,
        report_md,
        report_json,
    } = result?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"event": "cutover", "migration": args.name, "record": record,
                "report": report_md, "report_json": report_json})
        );
    } else {
        println!(
            "Cutover of {} done: downtime {:.1} s. Report: {}",
            args.name,
            record.downtime_ms.unwrap_or(0) as f64 / 1000.0,
            report_md.display()
        );
    }
    Ok(0)
}
