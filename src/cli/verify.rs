//! `hotclone verify NAME`: re-hash the target against the journal and
//! compare the journal with a fresh listing of the source.

use clap::Args;
use hotclone::journal::Journal;
use hotclone::migration::{self, Migration};
use hotclone::progress::Silent;

use super::ssh_args::SshArgs;

/// Check a migration's target: every file re-hashed (BLAKE3) and its type,
/// mode, owner and mtime compared with the journal; then the journal
/// compared with a fresh listing of the source. Lists every difference and
/// exits 1 if there is any. Only reads, on both sides.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The migration's name (see $HOTCLONE_HOME).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Only check the target against the journal; do not contact the source.
    #[arg(long)]
    pub target_only: bool,
    /// Print the differences as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ssh: SshArgs,
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<u8> {
    let migration = Migration::open(&migration::home(), &args.name)?;
    let (inventory, plan) = migration.load()?;
    let mut journal = Journal::open(&migration.journal_path())?;
    let records = journal.files()?;
    let converted = journal.converted()?;

    let mut diffs = match &plan.target {
        hotclone::plan::TargetSpec::Image { .. } => {
            let image =
                hotclone::target::image::open_read_only(&plan, &migration.dir.join("verify"))?;
            hotclone::verify::check_tree(&image.root, &records, &converted)
        }
        hotclone::plan::TargetSpec::Live { .. } => {
            let opener =
                super::clone::opener(&plan, Some(&migration), &args.ssh, &mut Silent).await?;
            let hotclone::target::Opener::Live(conn) = opener else {
                anyhow::bail!("internal error: a live plan without a live connection");
            };
            conn.verify(&plan, &journal.snapshot()?).await?
        }
    };
    let target_checked = records.len();

    if !args.target_only {
        let session =
            hotclone::ssh::Session::connect(&inventory.source, &args.ssh.to_options()?).await?;
        let listing = hotclone::pass::list_source(&session, &inventory, &plan, &mut Silent).await?;
        let _ = session.disconnect().await;
        diffs.extend(hotclone::verify::compare_with_source(&records, &listing));
    }

    journal.record_verify(target_checked as u64, diffs.len() as u64)?;
    if args.json {
        let list: Vec<_> = diffs
            .iter()
            .map(|d| serde_json::json!({"path": d.path, "difference": d.what}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"migration": args.name, "checked": target_checked, "differences": list})
        );
    } else {
        for d in &diffs {
            println!("{}: {}", d.path, d.what);
        }
        println!(
            "{} files checked on the target{} ({} as conversion left them); {} difference(s)",
            target_checked,
            if args.target_only {
                ""
            } else {
                " and against the source"
            },
            converted.len(),
            diffs.len()
        );
    }
    Ok(if diffs.is_empty() { 0 } else { 1 })
}
