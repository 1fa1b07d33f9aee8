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
    /// The target's lock, inherited from the client as this open
    /// descriptor (image targets: the client holds it too).
    #[arg(long, value_name = "FD", conflicts_with = "lock")]
    pub lock_fd: Option<i32>,
    /// The target's lock file, taken for as long as the agent runs (in the
    /// rescue VM). Waits for an earlier agent to stop, then refuses.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    use hotclone::target::lock::{self, TargetLock};
    // One writer per target: held until this process ends.
    let _lock = match (args.lock_fd, &args.lock) {
        (Some(fd), _) => Some(TargetLock::inherited(fd)?),
        (None, Some(path)) => Some(TargetLock::acquire(path, "agent", lock::wait_time())?),
        (None, None) => None,
    };
    hotclone::receiver::agent::stop_when_orphaned();
    let root = args.root;
    let options = hotclone::receiver::agent::AgentOptions {
        sweep: args.sweep,
        // stdin: acks go out before a read from it would wait.
        input_fd: Some(0),
    };
    let stats = tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin().lock();
        let stdout = std::io::stdout();
        hotclone::receiver::agent::run_with(&root, options, stdin, stdout)
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
