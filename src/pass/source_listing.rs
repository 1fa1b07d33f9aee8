//! A pass's first step: list every filesystem the plan copies. With GNU
//! find, filesystems that hold [`WALK_FROM_ENTRIES`] or more are listed by
//! a [`walk`] of [`FINDS`] finds at once over one SSH connection (a cold
//! listing is bound by the source disk's latency, not its bandwidth);
//! smaller ones, and busybox's find, in one go.
//!
//! On failure: a find the source refuses a channel for (sshd's
//! `MaxSessions`) while others run gives its share back, and, refused
//! again after a round trip, the walk goes on with fewer; any other SSH
//! error ends the pass. A listing with no entries at all is an error that
//! shows find's own words.

use crate::plan::Plan;
use crate::probe::{Capabilities, Inventory};
use crate::progress::{FileWarning, Progress};
use crate::ssh::{Output, Session, SshError};
use crate::stream::listing::{self, FileKind, ListedFile, Unparsed};
use crate::stream::walk::{Batch, Walk};
use crate::target::CloneError;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::excluded;

/// Finds that run at once: see [`crate::stream::walk`] for what two, four
/// and eight gave. Four stays within sshd's default `MaxSessions` (10).
pub const FINDS: usize = 4;

/// List every filesystem the plan copies; keep what is not excluded, and
/// each mount point once (as the root of its own filesystem).
pub async fn list_source(
    session: &Session,
    inv: &Inventory,
    plan: &Plan,
    progress: &mut dyn Progress,
) -> Result<Vec<ListedFile>, CloneError> {
    let roots: Vec<&str> = plan
        .disk
        .partitions
        .iter()
        .filter_map(|p| p.mount_point.as_deref())
        .chain(plan.merged_into_root.iter().map(String::as_str))
        .collect();
    let prune: Vec<String> = plan
        .excludes
        .iter()
        .filter_map(|e| listing::prune_pattern(&e.path, e.contents_only))
        .collect();
    let caps = &inv.capabilities;
    let (mut files, unparsed) = if caps.find_printf && worth_walking(inv, &roots) {
        let walked = walk(session, &roots, &prune, progress).await?;
        (walked.files, walked.unparsed)
    } else {
        one_find(session, caps, &roots, &prune).await?
    };
    for u in unparsed {
        progress.warning(&FileWarning::Skipped {
            path: PathBuf::from(u.0),
            reason: "the listing line could not be read (a newline in the name?)".into(),
        });
    }
    files.retain(|f| {
        if excluded(&f.path, &plan.excludes) {
            return false;
        }
        if f.kind == FileKind::Socket {
            progress.warning(&FileWarning::Skipped {
                path: PathBuf::from(String::from_utf8_lossy(&f.path).into_owned()),
                reason: "sockets are recreated by their daemons".into(),
            });
            return false;
        }
        true
    });
    // By path; a path listed twice (a mount point, in its parent's
    // listing and as the root of its own) keeps its last listing: the
    // listings come root by root, in the plan's order.
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|later, kept| {
        let same = later.path == kept.path;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
    files.shrink_to_fit();
    Ok(files)
}

/// The walk pays for its execs from about this many entries on.
/// debian12's /usr and /etc (13,744 entries), page cache warm: one find
/// 46 ms, the walk 150 ms (some 20 finds, in a wave per two levels); W2's
/// sync (216,000 entries), cold: one find 1.6–1.7 s, the walk 1.3–1.4 s.
pub const WALK_FROM_ENTRIES: u64 = 100_000;

/// Whether the filesystems to list hold [`WALK_FROM_ENTRIES`] or more (the
/// probe's `df -i`; unknown counts as small).
fn worth_walking(inv: &Inventory, roots: &[&str]) -> bool {
    let used: u64 = inv
        .storage
        .mounts
        .iter()
        .filter(|m| roots.contains(&m.mount_point.as_str()))
        .filter_map(|m| m.inodes_used)
        .sum();
    used >= WALK_FROM_ENTRIES
}

type Listed = (Vec<ListedFile>, Vec<Unparsed>);

/// One find over every root (busybox: `find -exec stat`). Parsed as it
/// arrives: the raw listing (about 100 bytes an entry) is never held
/// whole beside the entries, so a million fit a small client (issue 16).
async fn one_find(
    session: &Session,
    caps: &Capabilities,
    roots: &[&str],
    prune: &[String],
) -> Result<Listed, CloneError> {
    let cmd = listing::command(caps, roots, prune);
    let mut parser = listing::Parser::new(caps);
    let out = session
        .run_streamed(&cmd, b"", &mut |chunk| parser.feed(chunk))
        .await
        .map_err(CloneError::Ssh)?;
    let listed = parser.finish();
    if listed.0.is_empty() {
        return Err(nothing_listed(&cmd, &out));
    }
    Ok(listed)
}

/// What [`walk`] listed, and how.
#[derive(Debug)]
pub struct Walked {
    /// Root by root, in the order given.
    pub files: Vec<ListedFile>,
    pub unparsed: Vec<Unparsed>,
    /// Finds run in all.
    pub batches: usize,
    /// Finds that ran at once at the end: [`FINDS`], or fewer when sshd
    /// refused more channels.
    pub finds: usize,
}

/// The [`walk`](crate::stream::walk) of `roots` (GNU find) with up to
/// [`FINDS`] finds at once, telling `progress` how many entries it has
/// as each find ends.
pub async fn walk(
    session: &Session,
    roots: &[&str],
    prune: &[String],
    progress: &mut dyn Progress,
) -> Result<Walked, CloneError> {
    let mut walk = Walk::new(roots);
    let mut by_root: Vec<Vec<ListedFile>> = vec![Vec::new(); roots.len()];
    let mut unparsed = Vec::new();
    let mut first_root: Option<(String, Output)> = None;
    let (mut finds, mut batches, mut listed) = (FINDS, 0, 0);
    let mut refused = false;
    let open = OpenFinds::default();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < finds {
            let Some(batch) = walk.next(finds) else {
                break;
            };
            running.push(run_batch(session, batch, prune, &open));
        }
        let Some((batch, result)) = running.next().await else {
            break;
        };
        match result {
            Ok((files, bad, out)) => {
                refused = false;
                if batch.is_root() && first_root.is_none() {
                    first_root = Some((batch.command(prune), out));
                }
                walk.listed(&batch, &files);
                listed += files.len() as u64;
                progress.listed(listed);
                by_root[batch.root].extend(files);
                unparsed.extend(bad);
                batches += 1;
            }
            // sshd refused another channel (`MaxSessions`). A channel
            // that just closed can count there for a moment, so the first
            // refusal waits one round trip and tries again; a refusal
            // after that is taken for the limit: the walk goes on with
            // the finds running then, or as many as it has seen send at
            // once. (Where closes lag, that can be fewer than sshd allows:
            // slower, never wrong.)
            Err(SshError::Channel { .. }) if !running.is_empty() => {
                walk.retry(batch);
                if refused {
                    // Fewer than before, each time: refusals cannot go
                    // on while the same number is asked for.
                    let seen = running.len().max(open.peak.load(Ordering::Relaxed));
                    finds = seen.min(finds - 1).max(1);
                } else {
                    refused = true;
                    let _ = session.ping().await;
                }
            }
            Err(e) => return Err(CloneError::Ssh(e)),
        }
    }
    // Into the first root's list: a second list of a million entries
    // beside it would cost the client 100 MB (W4's peak RSS went from 190
    // to 239 MiB with `flatten().collect()`).
    let mut roots_lists = by_root.into_iter();
    let mut files = roots_lists.next().unwrap_or_default();
    for more in roots_lists {
        files.extend(more);
    }
    if files.is_empty() {
        return Err(match first_root {
            Some((cmd, out)) => nothing_listed(&cmd, &out),
            None => CloneError::Stage("the plan names no filesystem to list".into()),
        });
    }
    Ok(Walked {
        files,
        unparsed,
        batches,
        finds,
    })
}

/// Finds whose output is flowing (their channel is surely open), and the
/// most seen at once.
#[derive(Debug, Default)]
struct OpenFinds {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// One find of the walk: its batch, and what it listed.
async fn run_batch(
    session: &Session,
    batch: Batch,
    prune: &[String],
    open: &OpenFinds,
) -> (
    Batch,
    Result<(Vec<ListedFile>, Vec<Unparsed>, Output), SshError>,
) {
    let mut parser = listing::Parser::gnu();
    let mut flowing = false;
    let result = session
        .run_streamed(&batch.command(prune), &batch.stdin(), &mut |chunk| {
            if !flowing {
                flowing = true;
                let now = open.now.fetch_add(1, Ordering::Relaxed) + 1;
                open.peak.fetch_max(now, Ordering::Relaxed);
            }
            parser.feed(chunk)
        })
        .await;
    if flowing {
        open.now.fetch_sub(1, Ordering::Relaxed);
    }
    let result = result.map(|out| {
        let (files, bad) = parser.finish();
        (files, bad, out)
    });
    (batch, result)
}

fn nothing_listed(cmd: &str, out: &Output) -> CloneError {
    CloneError::Remote {
        what: format!(
            "listing the files with `{cmd}` produced nothing ({})",
            out.status
        ),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
