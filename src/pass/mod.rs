//! The copy engine that `clone` and `sync` share: one pass makes the
//! target equal to the source as it is now, sending only what changed
//! since the journal's record. A clone's first copy is a pass against an
//! empty journal; `hotclone sync` runs the later ones.
//!
//! A pass: list the source ([`list_source`]), compare with the journal
//! ([`delta`]), send removals and metadata updates, then files sent from
//! an offset ([`grown`]: transfers an interruption cut off, resumed from
//! their partial copy, and files that only grew, as their tail), then new
//! and changed contents through the source's tar ([`copy`]), recording
//! every acknowledged write as it arrives. Files that changed while read
//! stay dirty and go again next pass. `--checksum` compares contents
//! ([`checksum`]).
//!
//! On failure (the link drops, the agent, tar or this process is killed)
//! the journal holds exactly what was acknowledged; running the pass again
//! continues and re-sends at most what was in flight. A copy of the
//! journal, the inventory and the plan is kept on the target itself
//! ([`crate::migration::TARGET_STATE_DIR`]), so another client machine
//! can take over.

pub mod checksum;
pub mod copy;
pub mod delta;
pub mod grown;
mod reader;
mod source_listing;
pub mod tar_messages;

use std::time::{Duration, Instant};

use crate::journal::{FileRecord, Journal, PassStats};
use crate::migration::Migration;
use crate::plan::{Exclude, Plan};
use crate::probe::Inventory;
use crate::progress::{FileWarning, Progress};
use crate::ssh::Session;
use crate::stream::listing::ListedFile;
use crate::target::{CloneError, StateFile, Target};
use copy::{Batching, JournalSink, Kept, Work};
pub use source_listing::{list_source, walk, Walked, FINDS};

/// True when `path` (absolute, raw) is left out by the plan.
pub fn excluded(path: &[u8], excludes: &[Exclude]) -> bool {
    excludes.iter().any(|e| {
        let p = e.path.trim_end_matches('/').as_bytes();
        let inside =
            path.len() > p.len() && path.starts_with(p) && (p.is_empty() || path[p.len()] == b'/');
        inside || (!e.contents_only && path == p)
    })
}

/// How many of the files a pass leaves dirty or recent its report names.
pub const STILL_CHANGING_SHOWN: usize = 20;

/// What a pass did.
#[derive(Debug, Default)]
pub struct PassReport {
    pub pass: i64,
    /// Entries on the source (after the plan's excludes).
    pub listed: u64,
    pub unchanged: u64,
    /// Entries whose content was sent, and their bytes.
    pub sent_files: u64,
    pub sent_bytes: u64,
    /// Of those, files that only grew, sent as their tail ([`grown`]).
    pub tails: u64,
    /// Of those, transfers an interruption cut off, resumed from their
    /// partial copy on the target.
    pub resumed: u64,
    pub wire_bytes: u64,
    pub attrs: u64,
    pub removed: u64,
    /// Changed while read (reported as warnings).
    pub dirty: u64,
    /// Modified while the source was listed (in the window of
    /// [`JournalSink::racy_from`]): recorded dirty too, so the next pass
    /// sends them again, but not a warning.
    pub recent: u64,
    /// Paths of the files left dirty or recent, at most
    /// [`STILL_CHANGING_SHOWN`] of them, for messages that name some
    /// (`dirty + recent` counts them all).
    pub still_changing: Vec<String>,
    pub warnings: Vec<FileWarning>,
    pub tar_messages: Vec<String>,
    pub duration: Duration,
    /// A boot-relevant file changed: the caller converts the copy again.
    pub reconvert: bool,
    /// Files `--checksum` found with other contents than the source's.
    pub checksum_differ: u64,
}

#[derive(Debug, Clone, Default)]
pub struct PassOptions {
    pub batching: Batching,
    /// Have the agent remove leftover temporary files first (always done
    /// after an interrupted pass).
    pub sweep: bool,
    /// Compare the contents of files whose metadata is unchanged
    /// ([`checksum`]); those that differ are sent.
    pub checksum: bool,
}

/// Keep the target's copy of the state current: inventory, plan, journal.
pub fn write_target_state(
    target: &dyn Target,
    migration: &Migration,
    journal: &Journal,
) -> Result<(), CloneError> {
    let put = target.state_writer();
    for (from, name) in [
        (migration.inventory_path(), "inventory.json"),
        (migration.plan_path(), "plan.toml"),
    ] {
        let bytes = std::fs::read(&from)
            .map_err(|e| CloneError::Target(format!("reading {}: {e}", from.display())))?;
        put(name, StateFile::Bytes(&bytes))?;
    }
    put("journal.sqlite", StateFile::Journal(journal))
}

/// What a pass runs between: the source (its session, and the inventory
/// and plan the migration acts on), the migration's journal, and the
/// target.
#[derive(Clone, Copy)]
pub struct Ends<'a> {
    pub session: &'a Session,
    pub inv: &'a Inventory,
    pub plan: &'a Plan,
    pub migration: &'a Migration,
    pub target: &'a dyn Target,
}

/// One pass into the target; `kind` ("clone", "sync", "final") is what
/// the journal records it as.
pub async fn run(
    ends: &Ends<'_>,
    kind: &str,
    options: &PassOptions,
    progress: &mut dyn Progress,
) -> Result<PassReport, CloneError> {
    let Ends {
        session,
        inv,
        plan,
        migration,
        target,
    } = *ends;
    let started = Instant::now();
    progress.phase("listing the source");
    let listing_began = source_clock(session).await?;
    // The journal's record is read while the source is listed (the
    // listing waits on the source's disk; this on the client's CPU).
    let journal_path = migration.journal_path();
    let loading = tokio::task::spawn_blocking(move || {
        let journal = Journal::open(&journal_path)?;
        let held = journal.files()?;
        Ok::<_, CloneError>((journal, held))
    });
    let listing = std::sync::Arc::new(list_source(session, inv, plan, progress).await?);
    let listing_ended = source_clock(session).await?;
    progress.phase("comparing with the journal");
    let (mut journal, mut held) = loading
        .await
        .map_err(|e| CloneError::Stage(format!("reading the journal: {e}")))??;
    let mut checksum_differ = 0;
    if options.checksum {
        let tool = checksum::tool(&inv.capabilities.hashers).ok_or_else(|| {
            CloneError::Stage(
                "--checksum needs md5sum or sha1sum on the source, and it has neither".into(),
            )
        })?;
        let candidates = checksum::candidates(&listing, &held);
        progress.phase(&format!(
            "comparing the contents of {} files ({tool} on both sides)",
            candidates.len()
        ));
        let input = checksum::stdin(&candidates);
        let on_source = session
            .run(&checksum::command(tool, "/"), &input)
            .await
            .map_err(CloneError::Ssh)?;
        let on_target = target.hash_files(tool, &input).await?;
        let differ = checksum::differing(
            &candidates,
            &checksum::parse(&on_source.stdout),
            &checksum::parse(&on_target),
        );
        checksum_differ = differ.len() as u64;
        journal.mark_dirty(&differ)?;
        held = journal.files()?;
    }
    let converted = journal.converted()?;
    let mut delta = delta::compute(&listing, &held, &converted);
    let interrupted = journal
        .passes()?
        .last()
        .is_some_and(|p| p.finished.is_none());
    if interrupted {
        delta.reassert_directories(&listing);
    }
    let pass = journal.begin_pass(kind)?;
    tokio::task::block_in_place(|| write_target_state(target, migration, &journal))?;

    progress.phase(if kind == "clone" {
        "copying"
    } else {
        "sending changes"
    });
    progress.totals(delta.send.len() as u64, delta.send_bytes);
    let kept: std::collections::HashMap<&[u8], Kept> = held
        .iter()
        .map(|r| {
            let k = Kept {
                digest: r.digest,
                xattr_digest: r.xattr_digest,
                link_target: r.link_target.clone(),
            };
            (r.path.as_slice(), k)
        })
        .collect();
    // Only one list of a million entries is kept (issue 16): what is sent
    // whole is filtered in place, and the delta's own list is freed.
    let mut send = delta.send_files();
    delta.send = Vec::new();
    // Transfers an interruption cut off resume from their partial copy;
    // files that only grew go as their tail; the rest whole, by tar.
    let partials = journal.partials()?;
    let (mut append, stale) = grown::resumable(&send, &partials);
    journal.forget_partials(&stale)?;
    let resumed = append.len() as u64;
    let from_offset = |append: &[grown::Tail<'_>]| -> std::collections::HashSet<Vec<u8>> {
        append.iter().map(|g| g.file.path.clone()).collect()
    };
    let resuming = from_offset(&append);
    send.retain(|f| !resuming.contains(f.path.as_slice()));
    append.extend(grown_tails(session, inv, target, &send, &held, progress).await?);
    let tails = from_offset(&append);
    send.retain(|f| !tails.contains(f.path.as_slice()));
    send.shrink_to_fit();
    let work = Work {
        remove: &delta.remove,
        attrs: delta
            .attrs
            .iter()
            .map(|f| (*f, kept.get(f.path.as_slice()).cloned().unwrap_or_default()))
            .collect(),
        send,
        append,
        listing: listing.clone(),
    };
    drop(kept);
    drop(held);
    // Recorded before anything is sent: see `Journal::mark_in_flight`.
    journal.mark_in_flight(
        pass,
        &work
            .send
            .iter()
            .copied()
            .chain(work.append.iter().map(|g| g.file))
            .collect::<Vec<_>>(),
    )?;
    let sink = JournalSink {
        path: migration.journal_path(),
        pass,
        target_copy: Some(target.state_writer()),
        racy_from: listing_began,
        racy_until: listing_ended,
    };
    let tails = work.append.len() as u64 - resumed;
    let mut copied = copy::copy(
        session,
        &inv.capabilities,
        &work,
        target,
        copy::CopyOptions {
            sweep: options.sweep || interrupted,
            batching: options.batching,
        },
        &sink,
        progress,
    )
    .await?;
    forgive_mount_points(&mut copied, &plan.excludes);
    let recent = copied.recent;
    let dirty: Vec<Vec<u8>> = std::mem::take(&mut copied.dirty);
    journal.mark_dirty(&dirty)?;
    let still_changing = shown_paths(&dirty, STILL_CHANGING_SHOWN);
    let dirty_count = (dirty.len() as u64).saturating_sub(recent);
    journal.finish_pass(
        pass,
        &PassStats {
            wire_bytes: copied.wire_bytes,
            dirty: dirty_count,
            warnings: copied.warnings.len() as u64,
            removed: copied.removed,
            attrs: copied.attrs,
            unchanged: delta.unchanged,
        },
    )?;
    tokio::task::block_in_place(|| write_target_state(target, migration, &journal))?;
    Ok(PassReport {
        pass,
        listed: listing.len() as u64,
        unchanged: delta.unchanged,
        sent_files: copied.stats.files,
        sent_bytes: copied.stats.bytes,
        tails,
        resumed,
        wire_bytes: copied.wire_bytes,
        attrs: copied.attrs,
        removed: copied.removed,
        dirty: dirty_count,
        recent,
        still_changing,
        warnings: copied.warnings,
        tar_messages: copied.tar_messages,
        duration: started.elapsed(),
        reconvert: delta.reconvert,
        checksum_differ,
    })
}

/// " (e.g. /a, /b, /c)": the first `at_most` of `paths` (empty ones
/// skipped), for a message that counts files and names some. Empty when
/// no path is known, so a message never shows an empty example.
pub fn for_example(paths: &[String], at_most: usize) -> String {
    let named: Vec<&str> = paths
        .iter()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .take(at_most)
        .collect();
    if named.is_empty() {
        String::new()
    } else {
        format!(" (e.g. {})", named.join(", "))
    }
}

/// The first `at_most` of `paths`, as text.
fn shown_paths(paths: &[Vec<u8>], at_most: usize) -> Vec<String> {
    paths
        .iter()
        .take(at_most)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// The files of `send` that only grew and whose prefix both sides agree
/// on: they go as their tail ([`grown`]). None when the source has no
/// hashing tool.
async fn grown_tails<'a>(
    session: &Session,
    inv: &Inventory,
    target: &dyn Target,
    send: &[&'a ListedFile],
    held: &[FileRecord],
    progress: &mut dyn Progress,
) -> Result<Vec<grown::Tail<'a>>, CloneError> {
    let candidates = grown::candidates(send, held);
    let Some(tool) = checksum::tool(&inv.capabilities.hashers) else {
        return Ok(Vec::new());
    };
    if candidates.is_empty() {
        return Ok(candidates);
    }
    progress.phase(&format!(
        "checking {} grown files for a tail-only send ({tool} on both sides)",
        candidates.len()
    ));
    let on_source = session
        .run("sh", &grown::source_script(tool, &candidates))
        .await
        .map_err(CloneError::Ssh)?;
    let paths: Vec<&[u8]> = candidates.iter().map(|g| g.file.path.as_slice()).collect();
    let on_target = target.hash_files(tool, &checksum::stdin(&paths)).await?;
    Ok(grown::confirmed(
        candidates,
        &on_source.stdout,
        &checksum::parse(&on_target),
    ))
}

/// The mount point of a filesystem that is not copied (/proc, /sys, an NFS
/// mount) is read by tar as the mounted filesystem's root, which changes
/// all the time. Only the directory is kept, so such a change is no reason
/// to distrust it.
pub(crate) fn forgive_mount_points(copied: &mut copy::CopyOutcome, excludes: &[Exclude]) {
    let is_mount_point = |p: &std::path::Path| {
        excludes
            .iter()
            .any(|e| e.contents_only && p == std::path::Path::new(&e.path))
    };
    copied
        .warnings
        .retain(|w| !(matches!(w, FileWarning::Dirty { .. }) && is_mount_point(w.path())));
    copied
        .dirty
        .retain(|p| !is_mount_point(std::path::Path::new(&*String::from_utf8_lossy(p))));
}

/// The source's clock (Unix seconds), read just before its listing and
/// right after it: the window of [`JournalSink::racy_from`].
pub(crate) async fn source_clock(session: &Session) -> Result<i64, CloneError> {
    let out = session
        .run("date +%s", b"")
        .await
        .map_err(CloneError::Ssh)?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| CloneError::Remote {
            what: "reading the clock with `date +%s`".into(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_keep_mount_points_and_drop_contents() {
        let ex = vec![
            ex("/proc", true),
            ex("/var/cache/apt", false),
            ex("/srv/my data", true),
        ];
        assert!(!excluded(b"/proc", &ex));
        assert!(excluded(b"/proc/1/stat", &ex));
        assert!(!excluded(b"/procfile", &ex));
        assert!(excluded(b"/var/cache/apt", &ex));
        assert!(excluded(b"/var/cache/apt/archives/x.deb", &ex));
        assert!(!excluded(b"/var/cache/aptitude", &ex));
        assert!(excluded(b"/srv/my data/x", &ex));
        assert!(!excluded(b"/", &ex));
    }

    fn ex(path: &str, contents_only: bool) -> Exclude {
        Exclude {
            path: path.into(),
            contents_only,
            reason: String::new(),
        }
    }

    fn paths(p: &[&str]) -> Vec<String> {
        p.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn examples_name_at_most_the_wanted_number_and_never_an_empty_one() {
        let four = paths(&["/a", "/b", "/c", "/d"]);
        assert_eq!(for_example(&four, 3), " (e.g. /a, /b, /c)");
        assert_eq!(for_example(&four[..1], 3), " (e.g. /a)");
        assert_eq!(for_example(&paths(&["", "/b"]), 3), " (e.g. /b)");
        assert_eq!(for_example(&paths(&[""]), 3), "");
        assert_eq!(for_example(&[], 3), "");
        assert_eq!(for_example(&four, 0), "");
    }

    #[test]
    fn a_pass_names_at_most_the_first_paths_left_changing() {
        let dirty: Vec<Vec<u8>> = (0..30).map(|i| format!("/f{i}").into_bytes()).collect();
        let shown = shown_paths(&dirty, STILL_CHANGING_SHOWN);
        assert_eq!(shown.len(), STILL_CHANGING_SHOWN);
        assert_eq!(shown[0], "/f0");
        assert_eq!(shown_paths(&[b"/x\xff".to_vec()], 20), vec!["/x\u{fffd}"]);
    }
}
