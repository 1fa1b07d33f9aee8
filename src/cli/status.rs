//! `hotclone status NAME`: a migration's state, from its journal.

use clap::Args;
use hotclone::migration::{self, Migration};
use hotclone::units::format_bytes;

/// Show a migration's state: its stage, every pass (what it sent, how long
/// it took), the files still dirty, the last verify, and whether it is
/// ready for cutover (and why not). Reads only the local journal.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The migration's name (see $HOTCLONE_HOME).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The state as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let migration = Migration::open(&migration::home(), &args.name)?;
    let s = hotclone::status::read(&migration)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(0);
    }
    println!("Migration {} ({})", s.name, migration.dir.display());
    println!("  stage      {}", s.stage);
    println!("  on target  {} entries, {} dirty", s.files, s.dirty);
    println!("  passes");
    for p in &s.passes {
        let took = match p.finished {
            Some(f) => format!("{} s", f - p.started),
            None => "interrupted".into(),
        };
        println!(
            "    #{:<3} {:<5} {:>12}  {:>7} entries {:>10}  {} removed, {} metadata-only, {} dirty",
            p.id,
            p.kind,
            took,
            p.files,
            format_bytes(p.bytes),
            p.removed,
            p.attrs,
            p.dirty
        );
    }
    match &s.last_verify {
        Some(v) => println!(
            "  verify     {} checked, {} difference(s)",
            v.checked, v.differences
        ),
        None => println!("  verify     never (`hotclone verify {}`)", s.name),
    }
    match &s.last_rehearsal {
        Some(r) => println!(
            "  rehearsal  {} at {}{} ({})",
            if r.passed { "passed" } else { "FAILED" },
            hotclone::cutover::report::timestamp(r.at as u64 * 1000),
            if s.converted_since_rehearsal {
                ", converted again since"
            } else {
                ""
            },
            r.summary
        ),
        None => println!("  rehearsal  never (`hotclone rehearse {}`)", s.name),
    }
    if let Some(e) = s.final_sync_estimate_seconds {
        println!("  final sync about {e} s (the last pass)");
    }
    if s.ready_for_cutover {
        println!("  ready for cutover");
    } else {
        println!("  not ready for cutover:");
        for why in &s.not_ready {
            println!("    - {why}");
        }
    }
    Ok(0)
}
