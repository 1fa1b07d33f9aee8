//! `hotclone agent`: reads the wire stream, writes every entry under the
//! root through [`Writer`], and answers with one [`Ack`] line per entry.
//!
//! An `ok` means durable: the file was fsynced before its rename, and its
//! directory is fsynced before the ack is written. Acks are batched: they
//! go out (after one fsync per changed directory) whenever the agent is
//! about to wait for more input, and at the end.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::Path;
use std::rc::Rc;

use super::writer::{EntryError, FileSink, Writer};
use crate::stream::wire::{Ack, EntryKind, EntryMeta, Frame, WireError, WireReader};

/// What one run wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Entries acknowledged `ok` (all kinds).
    pub entries: u64,
    /// Regular files written and verified.
    pub files: u64,
    /// Their content bytes.
    pub bytes: u64,
    /// Entries refused or failed (`bad`).
    pub bad: u64,
    /// `warn` lines (written, but something not kept).
    pub warnings: u64,
}

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

struct AckOut<W: Write> {
    out: W,
    pending: Vec<Ack>,
    writer: Writer,
    stats: AgentStats,
}

impl<W: Write> AckOut<W> {
    /// fsync changed directories, then write and flush pending acks.
    fn flush(&mut self) -> Result<(), AgentError> {
        if self.pending.is_empty() && !self.writer.has_dirty_dirs() {
            return Ok(());
        }
        self.writer.sync_dirs().map_err(|e| AgentError::Sync(e.0))?;
        for ack in self.pending.drain(..) {
            writeln!(self.out, "{ack}").map_err(AgentError::Acks)?;
        }
        self.out.flush().map_err(AgentError::Acks)
    }

    fn push(&mut self, ack: Ack) {
        match &ack {
            Ack::Ok { .. } => self.stats.entries += 1,
            Ack::Warn { .. } => self.stats.warnings += 1,
            Ack::Bad { .. } => self.stats.bad += 1,
            Ack::Done { .. } => {}
        }
        self.pending.push(ack);
    }

    fn result(
        &mut self,
        meta: &EntryMeta,
        r: Result<Vec<String>, EntryError>,
        digest: Option<[u8; 32]>,
    ) {
        match r {
            Ok(warnings) => {
                for reason in warnings {
                    self.push(Ack::Warn {
                        path: meta.path.clone(),
                        reason,
                    });
                }
                if meta.kind == EntryKind::File {
                    self.stats.files += 1;
                    self.stats.bytes += meta.size;
                }
                tracing::trace!(path = %meta.display_path(), "written");
                self.push(Ack::Ok {
                    path: meta.path.clone(),
                    digest,
                });
            }
            Err(e) => {
                tracing::warn!("{e}");
                self.push(Ack::Bad {
                    path: meta.path.clone(),
                    reason: e.0,
                });
            }
        }
    }
}

/// Flushes pending acks before every read from the input that could block.
struct FlushBeforeRead<R, W: Write> {
    input: R,
    acks: Rc<RefCell<AckOut<W>>>,
    failed: Rc<RefCell<Option<AgentError>>>,
}

impl<R: Read, W: Write> Read for FlushBeforeRead<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Err(e) = self.acks.borrow_mut().flush() {
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

/// Decodes the stream from `input`, writes under `root`, acks to `acks`.
pub fn run(root: &Path, input: impl Read, acks: impl Write) -> Result<AgentStats, AgentError> {
    let writer = Writer::new(root).map_err(|source| AgentError::Root {
        root: root.display().to_string(),
        source,
    })?;
    let out = Rc::new(RefCell::new(AckOut {
        out: acks,
        pending: Vec::new(),
        writer,
        stats: AgentStats::default(),
    }));
    let failed = Rc::new(RefCell::new(None));
    let wrapped = FlushBeforeRead {
        input,
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
            state = match (state, frame) {
                (State::Idle, Frame::Entry(meta)) if meta.kind == EntryKind::File => {
                    received_files += 1;
                    match o.writer.begin_file(&meta) {
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
                (State::Idle, Frame::Entry(meta)) => {
                    let r = o.writer.entry(&meta);
                    o.result(&meta, r, None);
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
                        if let Err(e) = s.data(&bytes) {
                            sink = None;
                            error = Some(e);
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
                        if let Err(e) = s.hole(len) {
                            sink = None;
                            error = Some(e);
                        }
                    }
                    State::File { meta, sink, error }
                }
                (State::File { meta, sink, error }, Frame::FileEnd { blake3 }) => {
                    let r = match (sink, error) {
                        (Some(s), None) => o.writer.finish_file(*s, &blake3),
                        (_, Some(e)) => Err(e),
                        (None, None) => Err(EntryError(format!("{}: lost", meta.display_path()))),
                    };
                    o.result(&meta, r, Some(blake3));
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
        // client does not send it again.
        let _ = out.borrow_mut().flush();
        return Err(e);
    }
    let mut o = out.borrow_mut();
    for e in o.writer.finish() {
        tracing::warn!("{e}");
        o.push(Ack::Warn {
            path: Vec::new(),
            reason: e.0,
        });
    }
    o.flush()?;
    let stats = o.stats;
    writeln!(
        o.out,
        "{}",
        Ack::Done {
            files: stats.files,
            bytes: stats.bytes
        }
    )
    .map_err(AgentError::Acks)?;
    o.out.flush().map_err(AgentError::Acks)?;
    Ok(stats)
}
