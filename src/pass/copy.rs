//! The copy phase: the source readers ([`super::reader`]: the source's own
//! tar for whole files, `tail | head` for files sent from an offset) read
//! the files, the client checks and frames them
//! ([`crate::stream::tar_to_wire`]), and the agent writes them under the
//! target root and acknowledges each durable write.
//!
//! ```text
//! source: tar -c -T -   ──ssh──> pump (BLAKE3, zstd) ──pipe──> hotclone agent ──acks──> journal
//!         tail -c | head ─┘
//! ```
//!
//! Four things run at once: the file list is written to tar's stdin, tar's
//! stderr is collected, the tar stream is pumped (on this thread, blocking),
//! and the agent's acknowledgements are read (a thread). A file that tar
//! says changed while it was read is marked dirty: it is copied, but not
//! trusted, and the next pass sends it again.

use std::collections::HashMap;
use std::io::BufRead;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::reader::{self, attrs_meta, relative, Counting, ReadStats, SentEntries};
use super::{tar_messages, CloneError};
use crate::journal::{FileRecord, Journal, Partial};
use crate::pass::grown::Tail;
use crate::probe::Capabilities;
use crate::progress::{FileWarning, Progress};
use crate::ssh::Session;
use crate::stream::listing::{FileKind, ListedFile};
use crate::stream::tar_to_wire::PumpStats;
use crate::stream::wire::{Ack, EntryKind, EntryMeta, WireError, WireWriter};
use crate::target::StateFile;
pub use reader::Batching;

/// What the copy achieved.
#[derive(Debug, Default)]
pub struct CopyOutcome {
    pub stats: PumpStats,
    pub wire_bytes: u64,
    /// Paths acknowledged and committed to the journal dirty (changed while
    /// read, or in the listing's racy window): the next pass sends them
    /// again. The other records are in the journal only (a pass of a
    /// million files keeps none of them in memory).
    pub dirty: Vec<Vec<u8>>,
    pub removed: u64,
    pub attrs: u64,
    /// Records booked dirty because they were modified while the source
    /// was listed (see [`JournalSink::racy_from`]).
    pub recent: u64,
    pub warnings: Vec<FileWarning>,
    /// Lines of tar's stderr that named no file.
    pub tar_messages: Vec<String>,
}

/// What one pass hands to the agent: removals and metadata updates first
/// (client-made frames), then the tails of files that only grew, then
/// contents through the source's tar.
#[derive(Debug, Default)]
pub struct Work<'a> {
    pub remove: &'a [Vec<u8>],
    /// Metadata-only updates, with what the journal holds of the entry.
    pub attrs: Vec<(&'a ListedFile, Kept)>,
    /// Sent from an offset ([`crate::pass::grown`]): files that only
    /// grew, and transfers an interruption cut off.
    pub append: Vec<Tail<'a>>,
    pub send: Vec<&'a ListedFile>,
    /// The whole listing that `attrs`, `append` and `send` point into,
    /// sorted by path: the journal thread looks acknowledged paths up in
    /// it, shared rather than copied (a million entries are 150 MB).
    pub listing: Arc<Vec<ListedFile>>,
}

/// What a metadata-only update keeps of the journal's record.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    pub digest: Option<[u8; 32]>,
    pub xattr_digest: Option<[u8; 32]>,
    pub link_target: Option<Vec<u8>>,
}

/// Where acknowledged writes are recorded as they arrive.
#[derive(Clone)]
pub struct JournalSink {
    pub path: PathBuf,
    pub pass: i64,
    /// Refreshes the copy of the journal kept on the target itself (every
    /// [`TARGET_COPY_EVERY`], and by the caller at the end of the pass).
    pub target_copy: Option<crate::target::StateWriter>,
    /// The source's clock (whole seconds) when the listing began. A file
    /// whose listed mtime lies in the listing's window, from this second to
    /// [`JournalSink::racy_until`], is booked dirty: busybox lists whole
    /// seconds, so a later write in that same second, with the same size,
    /// would look like no change. Booked with the ack, not at the end of
    /// the pass, so an interrupted pass leaves it dirty too.
    pub racy_from: i64,
    /// The source's clock (whole seconds) right after the listing ended.
    /// An mtime after it was not made by a write during the listing (it
    /// was set to a future date): not racy, or the file would be sent
    /// again on every pass. A later write changes its mtime, and the next
    /// delta finds it.
    pub racy_until: i64,
}

/// Whether a file listed with `mtime` may have been written again, in the
/// same whole second and with the same size, after the listing saw it: its
/// mtime lies within the listing's window `from..=until` (the source's
/// clock as the listing began and as it ended). A clock stepped back
/// during the listing (`until < from`) widens the window to both readings.
fn listed_in_racy_window(mtime: i64, from: i64, until: i64) -> bool {
    (from.min(until)..=from.max(until)).contains(&mtime)
}

/// Acknowledged records are committed at least this often.
const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// ...or when this many are waiting.
const COMMIT_BATCH: usize = 2000;
/// ...or when they confirm this much content: what a killed client loses
/// (acked, but not yet in the journal, so sent again) stays about one
/// big file, not 50 ms of the stream.
const COMMIT_BYTES: u64 = 256 << 10;
/// How often the journal copy on the target is refreshed during a pass.
pub const TARGET_COPY_EVERY: Duration = Duration::from_secs(20);

/// How [`copy`] streams: the tar batches, and whether the agent first
/// sweeps temporary files a killed agent left.
#[derive(Debug, Clone, Copy)]
pub struct CopyOptions {
    pub sweep: bool,
    pub batching: Batching,
}

/// Run `work` against `target`. Every acknowledged write is committed to
/// the journal within [`COMMIT_EVERY`] (sooner for big files), so when the pass is interrupted
/// (the link drops, the agent or tar is killed, or this process is), the
/// journal still says exactly what the target holds, and the next pass
/// sends only the rest.
///
/// The agent's stream is written from blocking sections
/// (`block_in_place`): for a live target it is an SSH channel bridged to
/// blocking I/O.
pub async fn copy(
    session: &Session,
    caps: &Capabilities,
    work: &Work<'_>,
    target: &dyn crate::target::Target,
    options: CopyOptions,
    journal: &JournalSink,
    progress: &mut dyn Progress,
) -> Result<CopyOutcome, CloneError> {
    let CopyOptions { sweep, batching } = options;
    let send_bytes: u64 = work.send.iter().map(|f| f.size).sum();
    let compression = reader::compression::for_pass(session, caps, send_bytes).await;
    let crate::target::AgentLink {
        input,
        acks,
        process,
    } = target.agent(sweep).await?;
    let sent: SentEntries = Default::default();
    let book = AckBook::new(work, journal.clone(), sent.clone())?;
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let acks_thread = std::thread::spawn(move || {
        for line in acks.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let committer = std::thread::spawn(move || book.run(lines_rx));
    let finish_threads = |process: Box<dyn crate::target::AgentProcess>| {
        tokio::task::block_in_place(|| {
            let status = process.wait();
            let _ = acks_thread.join();
            let booked = committer
                .join()
                .unwrap_or_else(|_| Err(CloneError::internal("the journal thread")));
            (status, booked)
        })
    };
    let stream_err = |e: WireError| CloneError::Stream {
        error: e.into(),
        tar_stderr: String::new(),
    };
    let started = tokio::task::block_in_place(|| {
        let mut out = WireWriter::with_level(
            Counting {
                inner: input,
                bytes: 0,
            },
            target.wire_level(),
        )?;
        let remember = sent.clone();
        out.on_entry(Box::new(move |meta: &EntryMeta| {
            if let Ok(mut m) = remember.lock() {
                m.insert(meta.path.clone(), meta.clone());
            }
        }));
        for path in work.remove {
            out.remove(relative(path))?;
        }
        for (f, _) in &work.attrs {
            out.attrs(&attrs_meta(f))?;
        }
        out.flush()?;
        Ok::<_, WireError>(out)
    });
    let mut out = match started {
        Ok(out) => out,
        Err(e) => {
            let _ = finish_threads(process);
            return Err(stream_err(e));
        }
    };
    let mut read = ReadStats::default();
    let mut sent_ok = Ok(());
    for mut source in reader::for_work(&work.append, &work.send, caps, batching, compression) {
        tracing::debug!("reading from the source: {}", source.describe());
        match source.send(session, &mut out, &sent, progress).await {
            Ok(r) => read.add(r),
            Err(e) => {
                sent_ok = Err(e);
                break;
            }
        }
    }
    let ReadStats {
        stats,
        stderr: tar_stderr,
    } = read;
    let wire_bytes = match sent_ok {
        Ok(()) => tokio::task::block_in_place(|| out.finish())
            .map(|c| c.bytes)
            .map_err(|e| CloneError::Stream {
                error: e.into(),
                tar_stderr: tar_stderr.clone(),
            }),
        Err(e) => {
            // Hand the agent every whole frame sent so far (the partial
            // copy of a big file cut off midway gets all the data that
            // arrived), close the stream and let the agent finish (and the
            // journal record what it acknowledged) before the caller
            // unmounts.
            let _ = tokio::task::block_in_place(|| out.flush());
            drop(out);
            let _ = finish_threads(process);
            return Err(e);
        }
    };
    let (agent_status, booked) = finish_threads(process);
    let booked = booked?;
    let wire_bytes = wire_bytes?;
    if let Some(status) = agent_status? {
        return Err(CloneError::AgentFailed { status });
    }

    let (mut warnings, tar_messages) = tar_messages::parse(&tar_stderr);
    warnings.extend(booked.warnings);
    let dirty: std::collections::HashSet<Vec<u8>> = warnings
        .iter()
        .filter(|w| matches!(w, FileWarning::Dirty { .. }))
        .map(|w| w.path().as_os_str().as_bytes().to_vec())
        .collect();
    let mut dirty_paths = booked.dirty;
    let booked_dirty: std::collections::HashSet<&[u8]> =
        dirty_paths.iter().map(Vec::as_slice).collect();
    let more: Vec<Vec<u8>> = dirty
        .into_iter()
        .filter(|p| !booked_dirty.contains(p.as_slice()) && !booked.refused.contains(p))
        .collect();
    dirty_paths.extend(more);
    for w in &warnings {
        progress.warning(w);
    }
    Ok(CopyOutcome {
        stats,
        wire_bytes,
        dirty: dirty_paths,
        removed: booked.removed,
        attrs: booked.attrs,
        recent: booked.recent,
        warnings,
        tar_messages,
    })
}

/// What the journal thread recorded.
struct Booked {
    /// Records booked dirty.
    dirty: Vec<Vec<u8>>,
    /// Files the agent refused (`bad`): tar's word that one changed marks
    /// nothing, it has no record.
    refused: std::collections::HashSet<Vec<u8>>,
    removed: u64,
    attrs: u64,
    recent: u64,
    warnings: Vec<FileWarning>,
}

/// Turns acknowledgements into journal records and commits them.
struct AckBook {
    /// The pass's listing, sorted by path ([`Work::listing`]).
    listing: Arc<Vec<ListedFile>>,
    /// Per entry of `listing`: whether this pass sends or updates it. An
    /// ack for any other path is not booked.
    wanted: Vec<bool>,
    /// Metadata-only updates keep what the journal had of the content.
    kept: HashMap<Vec<u8>, Kept>,
    /// Content booked so far, per file, from where its sending started
    /// (0, or a tail's offset): `part` acks and the final `ok` add the rest.
    counted_to: HashMap<Vec<u8>, u64>,
    /// The latest `part` of big files, committed with the next batch.
    parts: HashMap<Vec<u8>, Partial>,
    /// Files refused (`bad`): their partial copy, if any, is forgotten.
    unparted: Vec<Vec<u8>>,
    removing: std::collections::HashSet<Vec<u8>>,
    sent: SentEntries,
    sink: JournalSink,
    journal: Journal,
}

impl AckBook {
    fn new(work: &Work<'_>, sink: JournalSink, sent: SentEntries) -> Result<AckBook, CloneError> {
        let journal = Journal::open(&sink.path)?;
        let mut wanted = vec![false; work.listing.len()];
        for f in work
            .send
            .iter()
            .copied()
            .chain(work.attrs.iter().map(|(f, _)| *f))
            .chain(work.append.iter().map(|g| g.file))
        {
            let i = index_of(&work.listing, &f.path).ok_or_else(|| {
                CloneError::internal(&format!(
                    "{} is sent but not in the pass's listing",
                    String::from_utf8_lossy(&f.path)
                ))
            })?;
            wanted[i] = true;
        }
        Ok(AckBook {
            listing: work.listing.clone(),
            wanted,
            counted_to: work
                .append
                .iter()
                .map(|g| (g.file.path.clone(), g.offset))
                .collect(),
            parts: HashMap::new(),
            unparted: Vec::new(),
            kept: work
                .attrs
                .iter()
                .map(|(f, k)| (f.path.clone(), k.clone()))
                .collect(),
            removing: work.remove.iter().cloned().collect(),
            sent,
            sink,
            journal,
        })
    }

    fn run(mut self, lines: std::sync::mpsc::Receiver<String>) -> Result<Booked, CloneError> {
        use std::sync::mpsc::RecvTimeoutError;
        let mut booked = Booked {
            dirty: Vec::new(),
            refused: std::collections::HashSet::new(),
            removed: 0,
            attrs: 0,
            recent: 0,
            warnings: Vec::new(),
        };
        let (mut pending, mut gone) = (Vec::new(), Vec::new());
        let mut pending_bytes = 0u64;
        let mut last_commit = Instant::now();
        let mut last_copy = Instant::now();
        loop {
            let next = lines.recv_timeout(COMMIT_EVERY);
            if let Ok(line) = &next {
                // With it, whatever else already arrived: under load, one
                // commit covers many acks.
                for line in std::iter::once(line.clone()).chain(lines.try_iter()) {
                    let ack = Ack::parse(&line).map_err(|e| CloneError::Remote {
                        what: e.to_string(),
                        stderr: String::new(),
                    })?;
                    pending_bytes += self.take(ack, &mut pending, &mut gone, &mut booked);
                    if pending.len() >= COMMIT_BATCH {
                        break;
                    }
                }
            }
            let ended = matches!(next, Err(RecvTimeoutError::Disconnected));
            let due = last_commit.elapsed() >= COMMIT_EVERY
                || pending.len() >= COMMIT_BATCH
                || pending_bytes >= COMMIT_BYTES;
            let idle = pending.is_empty()
                && gone.is_empty()
                && self.parts.is_empty()
                && self.unparted.is_empty();
            if (due || ended) && !idle {
                self.journal
                    .record(self.sink.pass, &pending, &gone, pending_bytes)?;
                if !self.parts.is_empty() {
                    let parts: Vec<Partial> = self.parts.drain().map(|(_, p)| p).collect();
                    self.journal.record_parts(&parts)?;
                }
                if !self.unparted.is_empty() {
                    let paths: Vec<&[u8]> = self.unparted.iter().map(|p| p.as_slice()).collect();
                    self.journal.forget_partials(&paths)?;
                    self.unparted.clear();
                }
                pending_bytes = 0;
                booked
                    .dirty
                    .extend(pending.drain(..).filter(|r| r.dirty).map(|r| r.path));
                gone.clear();
                last_commit = Instant::now();
            }
            if let Some(copy) = &self.sink.target_copy {
                if last_copy.elapsed() >= TARGET_COPY_EVERY {
                    copy("journal.sqlite", StateFile::Journal(&self.journal))?;
                    last_copy = Instant::now();
                }
            }
            if ended {
                return Ok(booked);
            }
        }
    }

    /// The listed entry of an acknowledged path, if this pass sent it.
    fn listed(&self, abs: &[u8]) -> Option<(Arc<Vec<ListedFile>>, usize)> {
        let i = index_of(&self.listing, abs)?;
        self.wanted[i].then(|| (self.listing.clone(), i))
    }

    /// Whether `listed`'s mtime lies in the listing's window
    /// ([`listed_in_racy_window`]).
    fn racy(&self, listed: &ListedFile) -> bool {
        listed_in_racy_window(listed.mtime, self.sink.racy_from, self.sink.racy_until)
    }

    /// Book one acknowledgement; returns the content bytes it confirms.
    fn take(
        &mut self,
        ack: Ack,
        pending: &mut Vec<FileRecord>,
        gone: &mut Vec<Vec<u8>>,
        booked: &mut Booked,
    ) -> u64 {
        match ack {
            Ack::Ok { path, digest } => {
                let abs = absolute(&path);
                if self.removing.remove(&abs) {
                    gone.push(abs);
                    booked.removed += 1;
                    return 0;
                }
                let Some((listing, i)) = self.listed(&abs) else {
                    return 0;
                };
                let listed = &listing[i];
                let sent = self.sent.lock().ok().and_then(|mut m| m.remove(&path));
                self.parts.remove(&abs);
                let (digest, content, xattr_digest, link_target) = match self.kept.get(&abs) {
                    Some(kept) => {
                        booked.attrs += 1;
                        (kept.digest, 0, kept.xattr_digest, kept.link_target.clone())
                    }
                    // Counted as sent: what tar read, not what was listed
                    // (a file can shrink in between).
                    None => (
                        digest,
                        match (&digest, &sent) {
                            (None, _) => 0,
                            (Some(_), Some(m)) if m.kind == EntryKind::File => m
                                .size
                                .saturating_sub(self.counted_to.get(&abs).copied().unwrap_or(0)),
                            (Some(_), _) => listed.size,
                        },
                        sent.as_ref().and_then(|m| xattr_digest(&m.xattrs)),
                        sent.as_ref().and_then(|m| match &m.kind {
                            EntryKind::Symlink { target } => Some(target.clone()),
                            _ => None,
                        }),
                    ),
                };
                // The copy has what tar read (hardlinks carry no size).
                let changed = sent
                    .as_ref()
                    .filter(|m| m.kind == EntryKind::File)
                    .and_then(|m| crate::verify::changed_since_listing(listed, (m.size, m.mtime)));
                let mut dirty = changed.is_some();
                booked.warnings.extend(changed);
                if !dirty && listed.kind != FileKind::Dir && self.racy(listed) {
                    dirty = true;
                    booked.recent += 1;
                }
                pending.push(FileRecord {
                    path: abs,
                    kind: listed.kind.name().into(),
                    size: listed.size,
                    mtime: listed.mtime,
                    mtime_nsec: listed.mtime_nsec,
                    ctime: listed.ctime,
                    inode: listed.inode,
                    uid: listed.uid,
                    gid: listed.gid,
                    mode: listed.mode,
                    digest,
                    link_target,
                    xattr_digest,
                    dirty,
                });
                content
            }
            Ack::Warn { path, reason } => {
                booked.warnings.push(FileWarning::Degraded {
                    path: lossy_abs(&path),
                    reason,
                });
                0
            }
            Ack::Bad { path, reason } => {
                // Whatever partial copy it had is gone (a failed resume
                // removes it): the next pass sends the file whole.
                let abs = absolute(&path);
                self.parts.remove(&abs);
                booked.refused.insert(abs.clone());
                self.unparted.push(abs);
                booked.warnings.push(FileWarning::Unreadable {
                    path: lossy_abs(&path),
                    reason: format!("not written on the target: {reason}"),
                });
                0
            }
            Ack::Part {
                path,
                offset,
                digest,
            } => {
                let abs = absolute(&path);
                let Some((listing, i)) = self.listed(&abs) else {
                    return 0;
                };
                let listed = &listing[i];
                // Only a copy of the file as listed is worth resuming: not
                // one read while it changed, or listed in its last second.
                let as_listed = self.sent.lock().ok().is_some_and(|m| {
                    m.get(&path).is_some_and(|m| {
                        crate::verify::changed_since_listing(listed, (m.size, m.mtime)).is_none()
                    })
                });
                if !as_listed || self.racy(listed) {
                    return 0;
                }
                let counted = self.counted_to.entry(abs.clone()).or_insert(0);
                let more = offset.saturating_sub(*counted);
                *counted = (*counted).max(offset);
                self.parts.insert(
                    abs.clone(),
                    Partial {
                        path: abs,
                        offset,
                        digest,
                        size: listed.size,
                        mtime: listed.mtime,
                        mtime_nsec: listed.mtime_nsec,
                        ctime: listed.ctime,
                        inode: listed.inode,
                    },
                );
                more
            }
            Ack::Done { .. } => 0,
        }
    }
}

/// Where `path` is in `listing` (sorted by path).
fn index_of(listing: &[ListedFile], path: &[u8]) -> Option<usize> {
    listing
        .binary_search_by(|f| f.path.as_slice().cmp(path))
        .ok()
}

fn absolute(rel: &[u8]) -> Vec<u8> {
    if rel == b"." {
        return b"/".to_vec();
    }
    let mut abs = b"/".to_vec();
    abs.extend_from_slice(rel);
    abs
}

/// BLAKE3 over an entry's extended attributes (as sent), names sorted;
/// None without any.
pub fn xattr_digest(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Option<[u8; 32]> {
    if xattrs.is_empty() {
        return None;
    }
    let mut sorted: Vec<&(Vec<u8>, Vec<u8>)> = xattrs.iter().collect();
    sorted.sort();
    let mut h = blake3::Hasher::new();
    for (name, value) in sorted {
        h.update(name);
        h.update(&[0]);
        h.update(&(value.len() as u64).to_le_bytes());
        h.update(value);
    }
    Some(*h.finalize().as_bytes())
}

fn lossy_abs(rel: &[u8]) -> PathBuf {
    PathBuf::from(format!("/{}", String::from_utf8_lossy(rel)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a journal holds after a pass that sent `files`, listed the
    /// source between `racy_from` and `racy_until`, and had `acks` back
    /// before the agent went away (the pass never finishes).
    struct Booking {
        booked: Booked,
        /// Per journal record: its path and whether it is dirty.
        dirty: Vec<(Vec<u8>, bool)>,
        partials: Vec<Partial>,
    }

    fn book(
        name: &str,
        files: &[&ListedFile],
        (racy_from, racy_until): (i64, i64),
        sent: SentEntries,
        acks: &[Ack],
    ) -> Booking {
        let dir =
            std::env::temp_dir().join(format!("hotclone-ackbook-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.sqlite");
        let _ = std::fs::remove_file(&path);
        let pass = Journal::open(&path).unwrap().begin_pass("sync").unwrap();
        let mut listing: Vec<ListedFile> = files.iter().map(|f| (*f).clone()).collect();
        listing.sort_by(|a, b| a.path.cmp(&b.path));
        let work = Work {
            send: files.to_vec(),
            listing: Arc::new(listing),
            ..Default::default()
        };
        let sink = JournalSink {
            path: path.clone(),
            pass,
            target_copy: None,
            racy_from,
            racy_until,
        };
        let book = AckBook::new(&work, sink, sent).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for ack in acks {
            tx.send(ack.to_string()).unwrap();
        }
        drop(tx);
        let booked = book.run(rx).unwrap();
        let journal = Journal::open(&path).unwrap();
        let dirty = journal
            .files()
            .unwrap()
            .into_iter()
            .map(|r| (r.path, r.dirty))
            .collect();
        let partials = journal.partials().unwrap();
        drop(journal);
        std::fs::remove_dir_all(&dir).unwrap();
        Booking {
            booked,
            dirty,
            partials,
        }
    }

    /// An `ok` ack for each of `files`, as [`book`] takes them.
    fn oks(files: &[&ListedFile]) -> Vec<Ack> {
        files
            .iter()
            .map(|f| {
                let rel = relative(&f.path);
                Ack::Ok {
                    path: rel.to_vec(),
                    digest: Some(*blake3::hash(rel).as_bytes()),
                }
            })
            .collect()
    }

    fn dirty_of(files: &[(&str, bool)]) -> Vec<(Vec<u8>, bool)> {
        files
            .iter()
            .map(|(p, d)| (p.as_bytes().to_vec(), *d))
            .collect()
    }

    /// Regression: the racily-clean rule ran only when a pass finished, so
    /// a pass interrupted after booking a file listed in the second the
    /// listing began left it clean. A same-size rewrite in that second
    /// (the next pass listing it unchanged) then never reached the target.
    #[test]
    fn a_file_modified_in_the_listing_second_is_booked_dirty_as_its_ack_arrives() {
        let old = ListedFile::test_file("/old", 5, 999);
        let racy = ListedFile::test_file("/racy", 5, 1000);
        let files = [&old, &racy];
        let b = book(
            "racy",
            &files,
            (1000, 1000),
            Default::default(),
            &oks(&files),
        );
        assert_eq!(b.booked.recent, 1);
        assert_eq!(b.dirty, dirty_of(&[("/old", false), ("/racy", true)]));
    }

    /// Regression: every file with an mtime at or after the listing's
    /// start was racy, so a file dated in the future (`touch -d 2100-01-01`)
    /// was booked dirty and sent again on every pass: `verify` never came
    /// back clean and cutover's final sync always failed. Only mtimes in
    /// the listing's window are racy; a future date is not.
    #[test]
    fn regression_a_file_dated_in_the_future_is_clean_after_one_pass() {
        let future = ListedFile::test_file("/future", 5, 4_102_444_800); // 2100-01-01
        let start = ListedFile::test_file("/start", 5, 1000);
        let end = ListedFile::test_file("/end", 5, 1002);
        let after = ListedFile::test_file("/after", 5, 1003);
        let files = [&after, &end, &future, &start];
        let b = book(
            "future",
            &files,
            (1000, 1002),
            Default::default(),
            &oks(&files),
        );
        assert_eq!(b.booked.recent, 2);
        assert!(b.booked.warnings.is_empty());
        assert_eq!(
            b.dirty,
            dirty_of(&[
                ("/after", false),
                ("/end", true),
                ("/future", false),
                ("/start", true),
            ])
        );
    }

    /// The partial copy of a big file cut off midway is kept for a resume
    /// when the file is dated in the future (it was not written during the
    /// listing), but not when it was modified while the source was listed.
    #[test]
    fn a_future_dated_file_cut_off_keeps_its_partial_copy_a_racy_one_does_not() {
        let future = ListedFile::test_file("/future", 1 << 20, 4_102_444_800);
        let racy = ListedFile::test_file("/racy", 1 << 20, 1001);
        let sent: SentEntries = Default::default();
        let mut acks = Vec::new();
        for f in [&future, &racy] {
            let meta = EntryMeta {
                size: f.size,
                kind: EntryKind::File,
                ..attrs_meta(f)
            };
            acks.push(Ack::Part {
                path: meta.path.clone(),
                offset: 4096,
                digest: [7; 32],
            });
            sent.lock().unwrap().insert(meta.path.clone(), meta);
        }
        let b = book("part", &[&future, &racy], (1000, 1002), sent, &acks);
        let kept: Vec<&[u8]> = b.partials.iter().map(|p| &p.path[..]).collect();
        assert_eq!(kept, vec![&b"/future"[..]]);
        assert!(b.dirty.is_empty());
    }

    #[test]
    fn the_racy_window_holds_the_listing_seconds_and_nothing_after() {
        // Listed from 1000 to 1002: both ends are in.
        assert!(!listed_in_racy_window(999, 1000, 1002));
        assert!(listed_in_racy_window(1000, 1000, 1002));
        assert!(listed_in_racy_window(1001, 1000, 1002));
        assert!(listed_in_racy_window(1002, 1000, 1002));
        assert!(!listed_in_racy_window(1003, 1000, 1002));
        assert!(!listed_in_racy_window(4_102_444_800, 1000, 1002));
        // A listing within one second: that second only.
        assert!(listed_in_racy_window(1000, 1000, 1000));
        assert!(!listed_in_racy_window(1001, 1000, 1000));
        // The clock stepped back during the listing: both readings count.
        assert!(listed_in_racy_window(999, 1000, 998));
        assert!(listed_in_racy_window(1000, 1000, 998));
        assert!(!listed_in_racy_window(1001, 1000, 998));
        assert!(!listed_in_racy_window(i64::MAX, 1000, 1002));
        assert!(!listed_in_racy_window(i64::MIN, 1000, 1002));
    }
}
