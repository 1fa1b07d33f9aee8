//! `hotclone agent`: the receiving end of a clone. Not for people: the
//! client starts it (locally for image targets, over SSH in the rescue VM)
//! and talks to it over stdin/stdout.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Receive a clone stream on stdin and write it under --root; one
/// acknowledgement line per entry on stdout, logs on stderr.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The directory the target filesystem is mounted on.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Once the stream has ended, remove the temporary files
    /// (.NAME.hotclone-tmp) an interrupted agent left anywhere under --root
    /// and this stream did not resume.
    #[arg(long)]
    pub sweep: bool,
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let root = args.root;
    let options = hotclone::target::agent::AgentOptions { sweep: args.sweep };
    let stats = tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin().lock();
        let stdout = std::io::stdout().lock();
        hotclone::target::agent::run_with(&root, options, stdin, stdout)
    })
    .await
    .context("the agent thread failed")??;
    tracing::info!(
        "agent: {} entries written ({} files, {} bytes, {} removed, {} metadata changes), {} refused, {} warnings",
        stats.entries,
        stats.files,
        stats.bytes,
        stats.removed,
        stats.attrs,
        stats.bad,
        stats.warnings
    );
    if stats.bad > 0 {
        anyhow::bail!(
            "{} entries were not written (see the bad lines above)",
            stats.bad
        );
    }
    Ok(())
}
