//! `hotclone agent`: reads the wire stream, writes every entry under the
//! root through [`Writer`], and answers with one [`Ack`] line per entry.
//!
//! An `ok` means durable: the file's data and its name are on the disk
//! before the ack is written, and so is a `part`'s partial copy. Files
//! received whole are made durable and placed as a group
//! ([`Commit::run`]: one `syncfs` before their renames, one after; none
//! of either for small files new to the target, written in place), and
//! so are big files' `part`s; a file appended to or resumed is fsynced
//! before its rename, and its directory synced before its ack.
//!
//! Acks are batched: they go out after the commit they wait for, which
//! runs on a thread of its own while the next files are written
//! (`committer`; one at a time, in order). What waits is handed to it:
//! - before the agent waits for more input (given the input's descriptor:
//!   when none arrived within [`INPUT_PAUSE`]);
//! - when [`COMMIT_FILES`] or [`COMMIT_BYTES`] are waiting or the oldest
//!   waited [`COMMIT_AGE`], and the committer is free (a group waits for
//!   it only once it is twice [`COMMIT_BYTES`]);
//! - as soon as the committer is free after a `part`;
//! - before the next read after the ack of a file synced alone;
//! - at the end.
//!
//! On a failed commit the agent stops, and what waited for it is never
//! acknowledged: the next pass sends it again.
//!
//! Delta passes also send `Remove` (acked `ok` once the path is gone, also
//! when it already was) and `Attrs` (metadata of an existing entry; `bad`
//! when it is missing or of another kind, so the client sends it in full).
//! Big files ([`crate::stream::wire::RESUMABLE_MIN`]) are also answered
//! with `part` lines while they arrive. When the stream breaks inside one,
//! its partial copy is left beside the old file, and the next pass resumes
//! it (`Append` with the partial base) instead of sending it whole.
//!
//! With [`AgentOptions::sweep`], temporary files left by a killed agent
//! (partial copies no resume took up included) are removed once the stream
//! has ended.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use super::writer::{is_temp_name, last_name, Commit, EntryError, FileSink, Held, Writer};
use crate::stream::wire::{
    Ack, AppendBase, EntryKind, EntryMeta, Frame, WireError, WireReader, RESUMABLE_MIN,
};

/// What one run wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Acknowledged `ok`: entries of all kinds, removals and attribute
    /// changes.
    pub entries: u64,
    /// Regular files written and verified.
    pub files: u64,
    /// Their content bytes.
    pub bytes: u64,
    /// Entries refused or failed (`bad`).
    pub bad: u64,
    /// `warn` lines (written, but something not kept).
    pub warnings: u64,
    /// Of `entries`: `Remove` frames done (including paths already gone).
    pub removed: u64,
    /// Of `entries`: `Attrs` frames applied.
    pub attrs: u64,
    /// Leftover temporary files removed at the end (with
    /// [`AgentOptions::sweep`]).
    pub swept: u64,
}

/// How [`run_with`] works beyond the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentOptions {
    /// Once the stream has ended, remove every leftover temporary file
    /// (`.NAME.hotclone-tmp`, `.hotclone-tmp-HASH`) under the root, in
    /// mounted filesystems too, never following symlinks. Only while no
    /// other agent writes under the root.
    pub sweep: bool,
    /// The input's descriptor, polled to tell whether a read would wait:
    /// acks go out before one would. Without it, before every read.
    pub input_fd: Option<RawFd>,
}

/// Acks wait at most this long for input that is on its way.
pub const INPUT_PAUSE: Duration = Duration::from_millis(10);
/// A group commit is due with this many files waiting...
pub const COMMIT_FILES: usize = 2048;
/// ...or this many of their bytes: what a client killed meanwhile sends
/// again stays about what the client's own journal commit leaves in
/// flight (sync_lab's 24 interruptions re-sent 17 % of their data with
/// 64 MiB here; the bound is 10 %)...
pub const COMMIT_BYTES: u64 = 256 << 10;
/// ...or when the oldest unsent ack has waited this long.
pub const COMMIT_AGE: Duration = Duration::from_millis(100);
/// While the commit running holds this many bytes of files, no more input
/// is read until it is done: of a run of big files, one waits for its
/// commit while the next arrives, not several (what a client or agent
/// killed meanwhile sends again; sync_lab's 24 interruptions re-sent 8.6 %
/// of their data on average over five runs without this bound, 7.6 % over
/// five with it).
pub const READ_AHEAD_BYTES: u64 = 512 << 10;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot use {root} as the root to write into: {source}; create it (and mount the target filesystem there) first")]
    Root { root: String, source: io::Error },
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("the stream is out of order: {0}; the sender is broken or a different version")]
    Protocol(String),
    #[error("cannot write acknowledgements: {0}; the client went away")]
    Acks(io::Error),
    #[error("the sender says it sent {sent} files but {received} arrived; the stream lost frames, run the pass again")]
    Totals { sent: u64, received: u64 },
    #[error("{0}; the copy is not durable, check the target disk")]
    Sync(String),
}

/// Stop this process as soon as its client is gone. The client (or, in
/// the rescue VM, the SSH server's session process) is the agent's parent;
/// when it dies the agent is re-parented, and an agent that outlives its
/// client would go on writing what was buffered while the next pass
/// prepares the disk. Everything it had acknowledged is durable already;
/// what it had not is sent again. Polls `getppid` every 50 ms in a thread.
pub fn stop_when_orphaned() {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        // SAFETY: as above.
        if unsafe { libc::getppid() } != parent {
            let _ = writeln!(
                io::stderr(),
                "agent: the client (pid {parent}) is gone; stopping without writing more"
            );
            // SAFETY: _exit ends the process at once, with no unwinding;
            // no further write reaches the target.
            unsafe { libc::_exit(75) };
        }
    });
}

/// What the committer thread is given: a commit, then the acks that
/// waited for it.
struct Job {
    commit: Commit,
    acks: Vec<Ack>,
}

/// What the committer reports for each job: the sizes of the files whose
/// `ok` it turned `bad` (for the totals), and why it stopped, if it did.
struct JobDone {
    unplaced: Vec<u64>,
    error: Option<AgentError>,
}

/// The committer thread: runs each job's commit, then writes its acks
/// (those of files the commit could not place turned `bad`). After a
/// failed commit or ack write it writes nothing more. Returns the ack
/// output once the jobs end.
fn committer<W: Write>(out: W, jobs: Receiver<Job>, done: Sender<JobDone>) -> W {
    let mut out = io::BufWriter::with_capacity(64 << 10, out);
    let mut stopped = false;
    for Job { commit, mut acks } in jobs {
        let mut unplaced = Vec::new();
        let mut error = None;
        if !stopped {
            let (failed, dirs) = commit.run();
            match dirs {
                // What waited for it is not known to be durable: its acks
                // are never written, and the next pass sends it again.
                Err(e) => error = Some(AgentError::Sync(e.0)),
                Ok(()) => {
                    for (path, size, e) in failed {
                        let acked = acks
                            .iter_mut()
                            .rev()
                            .find(|a| matches!(a, Ack::Ok { path: p, .. } if *p == path));
                        if let Some(ack) = acked {
                            tracing::warn!("{e}");
                            *ack = Ack::Bad { path, reason: e.0 };
                            unplaced.push(size);
                        }
                    }
                    error = write_acks(&mut out, &acks).err();
                }
            }
            stopped = error.is_some();
        }
        if done.send(JobDone { unplaced, error }).is_err() {
            break;
        }
    }
    // Each job flushed its acks; after a failed write, what is left
    // unwritten stays so.
    out.into_parts().0
}

fn write_acks(out: &mut impl Write, acks: &[Ack]) -> Result<(), AgentError> {
    for ack in acks {
        writeln!(out, "{ack}").map_err(AgentError::Acks)?;
    }
    out.flush().map_err(AgentError::Acks)
}

struct AckOut {
    pending: Vec<Ack>,
    /// When the oldest of `pending` was pushed.
    since: Option<Instant>,
    /// A `part`, or the ack of a big file synced alone, waits: it goes out
    /// before the next read, as every ack did before group commits (a
    /// client killed meanwhile would send the file again, from its last
    /// part).
    urgent: bool,
    /// A `part` whose partial copy the next commit syncs waits: it is due
    /// (the committer takes it once free), not overdue.
    prompt: bool,
    writer: Writer,
    stats: AgentStats,
    /// To the committer thread; `None` once closed.
    jobs: Option<Sender<Job>>,
    done: Receiver<JobDone>,
    /// The paths of the commit the committer is running, while it is.
    running: Option<Held>,
    /// The bytes of the files in that commit.
    running_bytes: u64,
}

impl AckOut {
    /// Whether acks are waiting to go out (or files or directories to be
    /// made durable first).
    fn waiting(&self) -> bool {
        !self.pending.is_empty() || self.writer.has_dirty_dirs() || self.writer.uncommitted().0 > 0
    }

    /// Whether enough waits that the acks go out now, input or not.
    fn due(&self) -> bool {
        let (files, bytes) = self.writer.uncommitted();
        self.urgent
            || self.prompt
            || files >= COMMIT_FILES
            || bytes >= COMMIT_BYTES
            || self.since.is_some_and(|t| t.elapsed() >= COMMIT_AGE)
    }

    /// Whether what waits must go out even when that means waiting for the
    /// commit running: the ack of a file synced alone, or a full group
    /// (one only due by its age waits on while the commit before runs).
    fn overdue(&self) -> bool {
        let (files, bytes) = self.writer.uncommitted();
        self.urgent || files >= COMMIT_FILES || bytes >= 2 * COMMIT_BYTES
    }

    /// Learns whether the running commit is done (waiting for it with
    /// `wait`): its files that could not be placed leave the totals, and
    /// its failure is this run's.
    fn poll_done(&mut self, wait: bool) -> Result<(), AgentError> {
        if self.running.is_none() {
            return Ok(());
        }
        let done = if wait {
            self.done.recv().map_err(|_| ())
        } else {
            match self.done.try_recv() {
                Ok(d) => Ok(d),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => Err(()),
            }
        };
        self.running = None;
        let done = done.map_err(|()| AgentError::Sync("the commit thread stopped".into()))?;
        for size in done.unplaced {
            self.stats.entries -= 1;
            self.stats.files -= 1;
            self.stats.bytes -= size;
            self.stats.bad += 1;
        }
        done.error.map_or(Ok(()), Err)
    }

    /// Hands what waits (the commit and the acks) to the committer, once
    /// the commit it runs is done: with `wait`, waiting for that, else
    /// leaving everything to wait (and grow) while it runs.
    fn hand_off(&mut self, wait: bool) -> Result<(), AgentError> {
        self.poll_done(false)?;
        if self.running.is_some() {
            if !wait {
                return Ok(());
            }
            self.poll_done(true)?;
        }
        let bytes = self.writer.uncommitted().1;
        let mut commit = self.writer.take_commit();
        if commit.is_empty() && self.pending.is_empty() {
            return Ok(());
        }
        self.since = None;
        self.urgent = false;
        self.prompt = false;
        let paths = commit.take_paths();
        let acks = std::mem::take(&mut self.pending);
        let jobs = self.jobs.as_ref().expect("open until the end");
        jobs.send(Job { commit, acks })
            .map_err(|_| AgentError::Sync("the commit thread stopped".into()))?;
        self.running = Some(paths);
        self.running_bytes = bytes;
        Ok(())
    }

    /// Everything waiting made durable and acked, before this returns.
    fn settle(&mut self) -> Result<(), AgentError> {
        self.hand_off(true)?;
        self.poll_done(true)
    }

    /// Whether `path` (as sent) is a file waiting for its commit (or
    /// in the commit running), or a directory above one.
    fn holds_uncommitted(&self, path: &[u8]) -> bool {
        self.writer.holds_uncommitted(path)
            || self.running.as_ref().is_some_and(|r| r.touches(path))
    }

    /// Whether the committer runs a commit (as far as this thread knows).
    fn committing(&self) -> bool {
        self.running.is_some()
    }

    /// Whether the commit running holds [`READ_AHEAD_BYTES`] or more.
    fn read_ahead_full(&self) -> bool {
        self.running.is_some() && self.running_bytes >= READ_AHEAD_BYTES
    }

    /// Whether files wait for their commit, or a commit runs.
    fn any_uncommitted(&self) -> bool {
        self.writer.uncommitted().0 > 0 || self.running.is_some()
    }

    fn push(&mut self, ack: Ack) {
        match &ack {
            Ack::Ok { .. } => self.stats.entries += 1,
            Ack::Warn { .. } => self.stats.warnings += 1,
            Ack::Bad { .. } => self.stats.bad += 1,
            Ack::Done { .. } | Ack::Part { .. } => {}
        }
        self.since.get_or_insert_with(Instant::now);
        self.pending.push(ack);
    }

    /// Reports a big file's progress, when a `part` is due. Its ack goes
    /// out at once, or with group commits as soon as the committer is
    /// free: after a commit that synced the partial copy.
    fn part(&mut self, sink: &FileSink, meta: &EntryMeta, part: Option<(u64, [u8; 32])>) {
        if let Some((offset, digest)) = part {
            let by_commit = self.writer.part_reported(sink);
            self.push(Ack::Part {
                path: meta.path.clone(),
                offset,
                digest,
            });
            if by_commit {
                self.prompt = true;
            } else {
                self.urgent = true;
            }
        }
    }

    /// Acks an Entry (with its content for files, counted in the totals).
    fn result(
        &mut self,
        meta: &EntryMeta,
        r: Result<Vec<String>, EntryError>,
        digest: Option<[u8; 32]>,
    ) {
        let content = (meta.kind == EntryKind::File).then_some(meta.size);
        // A big file that waits for its group's commit goes out with it,
        // due by its bytes; one synced alone is acked at once.
        if content.is_some_and(|size| size >= RESUMABLE_MIN)
            && !self.writer.holds_uncommitted(&meta.path)
        {
            self.urgent = true;
        }
        self.ack(&meta.path, r, content, digest);
    }

    /// Acks one frame for `path`: its warnings, then `ok` or `bad`.
    /// `content` is the size of a regular file received with its content.
    /// Returns whether it was `ok`.
    fn ack(
        &mut self,
        path: &[u8],
        r: Result<Vec<String>, EntryError>,
        content: Option<u64>,
        digest: Option<[u8; 32]>,
    ) -> bool {
        match r {
            Ok(warnings) => {
                for reason in warnings {
                    self.push(Ack::Warn {
                        path: path.to_vec(),
                        reason,
                    });
                }
                if let Some(size) = content {
                    self.stats.files += 1;
                    self.stats.bytes += size;
                }
                tracing::trace!(path = %String::from_utf8_lossy(path), "written");
                self.push(Ack::Ok {
                    path: path.to_vec(),
                    digest,
                });
                true
            }
            Err(e) => {
                tracing::warn!("{e}");
                self.push(Ack::Bad {
                    path: path.to_vec(),
                    reason: e.0,
                });
                false
            }
        }
    }
}

/// Hands pending acks (and the commit they wait for) to the committer
/// before every read from the input that could block (with the input's
/// descriptor: when no input arrives within [`INPUT_PAUSE`]; without it,
/// before every read), and whenever a commit is due and the committer is
/// free (or it is overdue). Reads nothing while the commit running is
/// full ([`READ_AHEAD_BYTES`]).
struct FlushBeforeRead<R> {
    input: R,
    input_fd: Option<RawFd>,
    acks: Rc<RefCell<AckOut>>,
    failed: Rc<RefCell<Option<AgentError>>>,
}

/// Whether `fd` has input (or its end) within `wait`.
fn input_within(fd: RawFd, wait: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, wait.as_millis() as libc::c_int) };
    // An error (EINTR) counts as no input: the acks go out first.
    n > 0
}

impl<R: Read> FlushBeforeRead<R> {
    /// Before a read: hand off what waits when it should go (waiting for
    /// the running commit when it must), else only learn whether the
    /// running commit is done.
    fn before_read(&self) -> Result<(), AgentError> {
        let mut acks = self.acks.borrow_mut();
        acks.poll_done(false)?;
        if acks.read_ahead_full() {
            acks.poll_done(true)?;
        }
        if !acks.waiting() {
            return Ok(());
        }
        let Some(fd) = self.input_fd else {
            return acks.hand_off(true);
        };
        // A group that is due goes when the committer is free or it is
        // overdue; else it waits on while input comes, but never past a
        // pause in the input.
        let goes = acks.due() && (!acks.committing() || acks.overdue());
        if goes || !input_within(fd, INPUT_PAUSE) {
            acks.hand_off(true)
        } else {
            Ok(())
        }
    }
}

impl<R: Read> Read for FlushBeforeRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Err(e) = self.before_read() {
            let msg = e.to_string();
            *self.failed.borrow_mut() = Some(e);
            return Err(io::Error::other(msg));
        }
        self.input.read(buf)
    }
}

enum State {
    Idle,
    /// Receiving a file; `None` when it already failed (data is skipped).
    File {
        meta: EntryMeta,
        sink: Option<Box<FileSink>>,
        error: Option<EntryError>,
    },
}

impl State {
    /// Receiving `meta`'s content into the sink just begun (or skipping it,
    /// when beginning failed: the error is its ack at FileEnd).
    fn receiving(meta: EntryMeta, begun: Result<FileSink, EntryError>) -> State {
        match begun {
            Ok(sink) => State::File {
                meta,
                sink: Some(Box::new(sink)),
                error: None,
            },
            Err(e) => State::File {
                meta,
                sink: None,
                error: Some(e),
            },
        }
    }
}

/// Whether `frame` may depend on files still waiting for their
/// group commit: a hard link (to one), a removal or metadata change (of
/// one, or of a directory holding one), an append, or an entry that
/// replaces one or a directory holding one, or one named like a temporary
/// file (it could be the temporary name of a file in the group).
fn needs_placed_files(frame: &Frame, acks: &AckOut) -> bool {
    if !acks.any_uncommitted() {
        return false;
    }
    match frame {
        Frame::Entry(meta) => {
            matches!(meta.kind, EntryKind::Hardlink { .. })
                || acks.holds_uncommitted(&meta.path)
                || is_temp_name(last_name(&meta.path))
        }
        Frame::Remove(_) | Frame::Attrs(_) | Frame::Append { .. } => true,
        _ => false,
    }
}

/// Decodes the stream from `input`, writes under `root`, acks to `acks`,
/// with the default [`AgentOptions`].
pub fn run(
    root: &Path,
    input: impl Read,
    acks: impl Write + Send,
) -> Result<AgentStats, AgentError> {
    run_with(root, AgentOptions::default(), input, acks)
}

/// [`run`] with options. Commits (and the acks that wait for them) run
/// on a thread of their own while the next entries are written.
pub fn run_with(
    root: &Path,
    options: AgentOptions,
    input: impl Read,
    acks: impl Write + Send,
) -> Result<AgentStats, AgentError> {
    let writer = Writer::new(root).map_err(|source| AgentError::Root {
        root: root.display().to_string(),
        source,
    })?;
    let (jobs, jobs_rx) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    std::thread::scope(|scope| {
        let committing = scope.spawn(move || committer(acks, jobs_rx, done_tx));
        let out = Rc::new(RefCell::new(AckOut {
            pending: Vec::new(),
            since: None,
            urgent: false,
            prompt: false,
            writer,
            stats: AgentStats::default(),
            jobs: Some(jobs),
            done,
            running: None,
            running_bytes: 0,
        }));
        let result = receive(root, options, input, &out);
        // The committer ends once its jobs do.
        let stats = out.borrow().stats;
        drop(out);
        let acks = match committing.join() {
            Ok(acks) => acks,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        result?;
        let mut acks = acks;
        writeln!(
            acks,
            "{}",
            Ack::Done {
                files: stats.files,
                bytes: stats.bytes
            }
        )
        .map_err(AgentError::Acks)?;
        acks.flush().map_err(AgentError::Acks)?;
        Ok(stats)
    })
}

/// [`run_with`]'s work on this thread: reads the stream and writes it.
fn receive(
    root: &Path,
    options: AgentOptions,
    input: impl Read,
    out: &Rc<RefCell<AckOut>>,
) -> Result<(), AgentError> {
    let failed = Rc::new(RefCell::new(None));
    let wrapped = FlushBeforeRead {
        input,
        input_fd: options.input_fd,
        acks: out.clone(),
        failed: failed.clone(),
    };
    let fail = |e: WireError| failed.borrow_mut().take().unwrap_or(AgentError::Wire(e));
    let mut reader = WireReader::new(wrapped).map_err(fail)?;
    let mut state = State::Idle;
    let mut received_files: u64 = 0;
    let received = (|| -> Result<(), AgentError> {
        loop {
            let frame = reader.next_frame().map_err(fail)?;
            let Some(frame) = frame else { break };
            let mut o = out.borrow_mut();
            if needs_placed_files(&frame, &o) {
                o.settle()?;
            }
            state = match (std::mem::replace(&mut state, State::Idle), frame) {
                (State::Idle, Frame::Entry(meta)) if meta.kind == EntryKind::File => {
                    received_files += 1;
                    let begun = o.writer.begin_file(&meta);
                    State::receiving(meta, begun)
                }
                (
                    State::Idle,
                    Frame::Append {
                        meta,
                        offset,
                        prefix,
                        base,
                    },
                ) => {
                    received_files += 1;
                    let begun = match base {
                        AppendBase::Existing => o.writer.begin_append(&meta, offset, &prefix),
                        AppendBase::Partial => o.writer.begin_resume(&meta, offset, &prefix),
                    };
                    State::receiving(meta, begun)
                }
                (State::Idle, Frame::Entry(meta)) => {
                    let r = o.writer.entry(&meta);
                    o.result(&meta, r, None);
                    State::Idle
                }
                (State::Idle, Frame::Remove(path)) => {
                    let r = o.writer.remove(&path).map(|()| Vec::new());
                    if o.ack(&path, r, None, None) {
                        o.stats.removed += 1;
                    }
                    State::Idle
                }
                (State::Idle, Frame::Attrs(meta)) => {
                    let r = o.writer.attrs(&meta);
                    if o.ack(&meta.path, r, None, None) {
                        o.stats.attrs += 1;
                    }
                    State::Idle
                }
                (
                    State::File {
                        meta,
                        mut sink,
                        mut error,
                    },
                    Frame::Data(bytes),
                ) => {
                    if let Some(s) = sink.as_mut() {
                        match s.data(&bytes) {
                            Ok(part) => o.part(s, &meta, part),
                            Err(e) => {
                                sink = None;
                                error = Some(e);
                            }
                        }
                    }
                    State::File { meta, sink, error }
                }
                (
                    State::File {
                        meta,
                        mut sink,
                        mut error,
                    },
                    Frame::Hole(len),
                ) => {
                    if let Some(s) = sink.as_mut() {
                        match s.hole(len) {
                            Ok(part) => o.part(s, &meta, part),
                            Err(e) => {
                                sink = None;
                                error = Some(e);
                            }
                        }
                    }
                    State::File { meta, sink, error }
                }
                (State::File { meta, sink, error }, Frame::FileEnd { blake3 }) => {
                    // An appended file is acked with the digest of all of it.
                    let digest = sink
                        .as_ref()
                        .and_then(|s| s.whole_digest())
                        .unwrap_or(blake3);
                    let r = match (sink, error) {
                        (Some(s), None) => o.writer.finish_file(*s, &blake3),
                        (_, Some(e)) => Err(e),
                        (None, None) => Err(EntryError(format!("{}: lost", meta.display_path()))),
                    };
                    o.result(&meta, r, Some(digest));
                    State::Idle
                }
                (State::Idle, Frame::Done { files, bytes: _ }) => {
                    if files != received_files {
                        return Err(AgentError::Totals {
                            sent: files,
                            received: received_files,
                        });
                    }
                    State::Idle
                }
                (State::Idle, f) => {
                    return Err(AgentError::Protocol(format!(
                        "a {} frame outside a file",
                        f.name()
                    )))
                }
                (State::File { meta, .. }, f) => {
                    return Err(AgentError::Protocol(format!(
                        "a {} frame inside the file {}",
                        f.name(),
                        meta.display_path()
                    )))
                }
            };
        }
        Ok(())
    })();
    if let Err(e) = received {
        // What was written before the failure is durable: say so, so the
        // client does not send it again. A big file cut off midway keeps
        // its partial copy, for a resume.
        if let State::File { sink: Some(s), .. } = &mut state {
            s.keep_partial();
        }
        let _ = out.borrow_mut().settle();
        return Err(e);
    }
    let mut o = out.borrow_mut();
    // Before the sweep (which removes temporary names) and before the
    // directory times are set (renames change them).
    o.settle()?;
    if options.sweep {
        // At the end, not the start: a partial copy left by an interrupted
        // pass may have been resumed by this stream. Before directory
        // times are set, since removing files changes them.
        let sweep = o.writer.sweep_temp_files();
        for e in &sweep.errors {
            tracing::warn!("sweep: {e}");
        }
        tracing::info!(
            "sweep: removed {} leftover temporary files under {}{}",
            sweep.removed,
            root.display(),
            match sweep.errors.len() {
                0 => String::new(),
                n => format!(" ({n} places could not be swept, see above)"),
            }
        );
        o.stats.swept = sweep.removed;
    }
    for e in o.writer.finish() {
        tracing::warn!("{e}");
        o.push(Ack::Warn {
            path: Vec::new(),
            reason: e.0,
        });
    }
    o.settle()?;
    o.jobs = None;
    Ok(())
}
