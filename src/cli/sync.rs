//! `hotclone sync NAME`: a delta pass (or `--watch N` of them) that brings
//! a ready clone up to date with its running source.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use hotclone::migration::{self, Migration};
use hotclone::pass::copy::Batching;
use hotclone::pass::PassOptions;
use hotclone::sync::SyncReport;
use hotclone::units::format_bytes;

use super::progress::CliProgress;
use super::ssh_args::SshArgs;

/// Bring a migration's target up to date with its running source: list
/// the source, compare with the journal, and send only what changed (new
/// and changed files, metadata-only changes as metadata, deletions, type
/// and hardlink changes). The source is only read. An interrupted pass
/// loses nothing: run it again and it continues, a big file from where it
/// was cut off. A file that only grew (a log) goes as its new tail, once
/// both sides agree on its beginning. Files that change while read stay
/// dirty for the next pass.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
hotclone sync web01                      # one pass\n  \
hotclone sync web01 --watch 300          # a pass every 5 minutes until Ctrl-C\n  \
HOTCLONE_HOME=/new/state hotclone sync web01 --from-target /var/lib/vm/web01.img\n  \
                                         # take over from another client machine")]
pub struct SyncArgs {
    /// The migration's name (see $HOTCLONE_HOME and `hotclone status`).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Run a pass every N seconds until interrupted (Ctrl-C stops after the
    /// current pass).
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<u64>,
    /// Take the migration over from the state its target disk carries (for
    /// a client machine that does not have it, or lost it).
    #[arg(long, value_name = "DISK")]
    pub from_target: Option<PathBuf>,
    /// Also compare the contents of files whose size and mtime did not
    /// change: hashed on the source with its own md5sum (or sha1sum) and
    /// on the target with the same tool. Reads every file on both sides:
    /// slow, on demand only.
    #[arg(long)]
    pub checksum: bool,
    /// Files per tar run on the source.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub tar_batch_files: usize,
    /// Progress and each pass's result as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

pub async fn run(args: SyncArgs) -> anyhow::Result<u8> {
    let home = migration::home();
    if let Some(disk) = &args.from_target {
        let m = hotclone::sync::adopt::adopt(&home, &args.name, disk)?;
        eprintln!(
            "took migration {} over from {} into {}",
            m.name,
            disk.display(),
            m.dir.display()
        );
    }
    let migration = Migration::open(&home, &args.name)?;
    let (inventory, plan) = migration.load()?;
    // Before anything is contacted (a cut-over clone serves now).
    hotclone::sync::check_stage(&migration)?;
    let options = PassOptions {
        batching: Batching {
            max_files: args.tar_batch_files.max(1),
            ..Batching::default()
        },
        sweep: false,
        checksum: args.checksum,
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if args.watch.is_some() {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping after this pass (Ctrl-C again does not abort; kill -9 does, and loses nothing)");
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    let mut worst = 0u8;
    loop {
        let mut progress = CliProgress::new(args.json);
        let session =
            hotclone::ssh::Session::connect(&inventory.source, &args.ssh.to_options()?).await?;
        let opener =
            super::clone::opener(&plan, Some(&migration), &args.ssh, &mut progress).await?;
        let report = hotclone::sync::run(
            &session,
            &inventory,
            &plan,
            &migration,
            opener,
            &options,
            &mut progress,
        )
        .await;
        progress.finish();
        let _ = session.disconnect().await;
        let report = report.map_err(|e| {
            let advice = if e.target_damaged() {
                "the sync pass wrote nothing".to_string()
            } else {
                format!(
                    "the sync pass stopped; what was acknowledged is recorded. Run `hotclone sync {}` again to continue",
                    args.name
                )
            };
            anyhow::Error::from(e).context(advice)
        })?;
        show(&args, &report);
        let code = u8::from(report.pass.dirty > 0 || !report.pass.warnings.is_empty()) * 3;
        worst = worst.max(code);
        let Some(every) = args.watch else {
            return Ok(code);
        };
        let next = tokio::time::Instant::now() + Duration::from_secs(every);
        while tokio::time::Instant::now() < next {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(worst);
            }
            if !args.json {
                let left = next - tokio::time::Instant::now();
                eprint!("\rnext pass in {:>4} s (Ctrl-C stops)", left.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !args.json {
            eprintln!();
        }
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(worst);
        }
    }
}

fn show(args: &SyncArgs, r: &SyncReport) {
    let p = &r.pass;
    let secs = p.duration.as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"event": "pass", "migration": args.name, "pass": p.pass,
                "listed": p.listed, "unchanged": p.unchanged, "sent_files": p.sent_files,
                "sent_bytes": p.sent_bytes, "tails": p.tails, "resumed": p.resumed, "wire_bytes": p.wire_bytes, "attrs": p.attrs,
                "removed": p.removed, "dirty": p.dirty, "recent": p.recent, "still_changing": p.still_changing, "warnings": p.warnings.len(),
                "seconds": secs, "reconverted": r.reconverted, "checksum_differ": p.checksum_differ,
                "since_previous_seconds": r.since_previous.map(|d| d.as_secs()),
                "change_rate_bytes_per_second": r.change_rate})
        );
        return;
    }
    println!("Sync pass {} of {} done in {secs:.1} s", p.pass, args.name);
    println!(
        "  changed    {} files, {} (on the wire {})",
        p.sent_files,
        format_bytes(p.sent_bytes),
        format_bytes(p.wire_bytes)
    );
    if p.resumed > 0 {
        println!(
            "  resumed    {} cut off by an interruption: sent from where their partial copy ends",
            p.resumed
        );
    }
    if p.tails > 0 {
        println!(
            "  grown      {} of them only grew: sent their new tail (prefix checked on both sides)",
            p.tails
        );
    }
    println!(
        "  also       {} metadata-only, {} removed; {} of {} unchanged",
        p.attrs, p.removed, p.unchanged, p.listed
    );
    if let (Some(since), Some(rate)) = (r.since_previous, r.change_rate) {
        println!(
            "  lag        {} changed in the {} s since the last pass ({}/s)",
            format_bytes(p.sent_bytes),
            since.as_secs(),
            format_bytes(rate as u64)
        );
    }
    println!(
        "  dirty      {} (changed while read; the next pass sends them again)",
        p.dirty
    );
    if p.recent > 0 {
        println!(
            "  recent     {} (modified while the source was listed; the next pass sends them again)",
            p.recent
        );
    }
    let named = hotclone::pass::for_example(&p.still_changing, 3);
    if !named.is_empty() {
        println!(
            "  again      {} file(s) next pass{named}",
            p.dirty + p.recent
        );
    }
    println!("  warnings   {}", p.warnings.len());
    if args.checksum {
        println!(
            "  checksum   {} file(s) with the same size and mtime but other contents on the target: sent",
            p.checksum_differ
        );
    }
    if r.reconverted {
        println!("  converted again: a kernel, module, fstab, bootloader or network file changed");
    }
    for note in r.notes.iter().chain(&p.tar_messages) {
        println!("  note: {note}");
    }
}
