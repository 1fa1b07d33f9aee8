//! The source readers: each reads some of a pass's files on the source,
//! with the source's own tools, and writes them into the one wire stream
//! to the agent. One archiver over many sources: [`super::copy::copy`]
//! opens the stream and books the acknowledgements; the readers only read
//! and frame. Today's readers are [`tails::Tails`] (files sent from an
//! offset, by `tail -c | head -c`) and [`tar_batches::TarBatches`] (whole
//! files, by the source's tar); a block-level reader would be a third,
//! chosen in [`for_work`].
//!
//! On failure a reader stops at its first error and returns it: the
//! readers after it do not run, and what it had counted is dropped (the
//! pass fails; the journal, not these counts, says what arrived). Whatever
//! whole frames it wrote stay in the stream, and the caller flushes them to
//! the agent before it closes the stream, so a big file cut off midway
//! keeps the part that arrived (its `part` acks are booked).

pub mod compression;
mod tails;
mod tar_batches;

use std::collections::HashMap;

use tokio::io::AsyncWriteExt;

use crate::pass::grown::Tail;
use crate::probe::Capabilities;
use crate::progress::Progress;
use crate::ssh::Session;
use crate::stream::listing::{FileKind, ListedFile};
use crate::stream::tar_to_wire::PumpStats;
use crate::stream::wire::{EntryKind, EntryMeta, WireWriter};
use crate::target::CloneError;
pub use tar_batches::Batching;

/// One way of reading files on the source into the agent's stream.
#[async_trait::async_trait(?Send)]
pub trait SourceReader {
    /// What it reads, for the debug log ("tar batches: 3").
    fn describe(&self) -> String;

    /// Read every file it holds on the source and write them into `out`;
    /// a reader runs once (it may give up what it holds as it goes).
    /// `sent` learns each entry as it is framed (the ack is booked from
    /// it); a reader that sends fewer bytes than it framed corrects it.
    async fn send(
        &mut self,
        session: &Session,
        out: &mut AgentWire,
        sent: &SentEntries,
        progress: &mut dyn Progress,
    ) -> Result<ReadStats, CloneError>;
}

/// What a reader sent.
#[derive(Debug, Default)]
pub struct ReadStats {
    pub stats: PumpStats,
    /// What the source's tools said on stderr about files (tar's "file
    /// changed as we read it"), parsed by the caller.
    pub stderr: String,
}

impl ReadStats {
    pub fn add(&mut self, other: ReadStats) {
        self.stats.entries += other.stats.entries;
        self.stats.files += other.stats.files;
        self.stats.bytes += other.stats.bytes;
        self.stats.skipped += other.stats.skipped;
        self.stderr.push_str(&other.stderr);
    }
}

/// The readers for a pass's `append` (files sent from an offset) and
/// `send` (whole files), in the order they run: the tails first (small,
/// and a cut-off transfer resumes before anything new is sent), then the
/// whole files by tar. The one place a reader is chosen.
pub fn for_work<'a>(
    append: &'a [Tail<'a>],
    send: &'a [&'a ListedFile],
    caps: &'a Capabilities,
    batching: Batching,
    compression: Option<compression::SourceCompression>,
) -> Vec<Box<dyn SourceReader + 'a>> {
    let mut readers: Vec<Box<dyn SourceReader + 'a>> = Vec::new();
    if !append.is_empty() {
        readers.push(Box::new(tails::Tails { tails: append }));
    }
    if !send.is_empty() {
        readers.push(Box::new(tar_batches::TarBatches::new(
            caps,
            send,
            batching,
            compression,
        )));
    }
    readers
}

/// The stream every reader writes into: framed, compressed, counted.
pub(super) type AgentWire = WireWriter<Counting<Box<dyn std::io::Write + Send>>>;

/// What the client sent of each entry still waiting for its ack, by the
/// wire path: the record is made from it, not read back from the target.
pub(super) type SentEntries = std::sync::Arc<std::sync::Mutex<HashMap<Vec<u8>, EntryMeta>>>;

/// Counts the compressed bytes that go to the agent.
pub(super) struct Counting<W> {
    pub(super) inner: W,
    pub(super) bytes: u64,
}

impl<W: std::io::Write> std::io::Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A command running on the source, its stdin fed by a task.
struct Fed {
    remote: crate::ssh::RemoteChild,
    stdout: crate::ssh::ChildOutput,
    feeder: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Start `command` on the source; a task writes `input` to its stdin and
/// closes it.
async fn exec_fed(session: &Session, command: &str, input: Vec<u8>) -> Result<Fed, CloneError> {
    let mut remote = session.exec(command).await.map_err(CloneError::Ssh)?;
    let mut stdin = remote
        .take_stdin()
        .ok_or_else(|| CloneError::internal("remote stdin"))?;
    let stdout = remote
        .take_stdout()
        .ok_or_else(|| CloneError::internal("remote stdout"))?;
    let feeder = tokio::spawn(async move {
        stdin.write_all(&input).await?;
        stdin.shutdown().await
    });
    Ok(Fed {
        remote,
        stdout,
        feeder,
    })
}

/// The wire's form of a source path: relative to the root, "." for it.
pub(super) fn relative(abs: &[u8]) -> &[u8] {
    if abs == b"/" {
        return b".";
    }
    abs.strip_prefix(b"/").unwrap_or(abs)
}

/// The metadata-only update for a listed file or directory.
pub(super) fn attrs_meta(f: &ListedFile) -> EntryMeta {
    EntryMeta {
        path: relative(&f.path).to_vec(),
        kind: if f.kind == FileKind::Dir {
            EntryKind::Dir
        } else {
            EntryKind::File
        },
        mode: f.mode & 0o7777,
        uid: f.uid,
        gid: f.gid,
        mtime: f.mtime,
        mtime_nsec: f.mtime_nsec,
        size: 0,
        xattrs: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pass::copy::Work;
    use crate::probe::parse::capabilities::{parse, ToolOutputs};
    use crate::stream::wire::AppendBase;

    fn descriptions(work: &Work<'_>) -> Vec<String> {
        let caps = parse(ToolOutputs {
            tar_version: Some("tar (GNU tar) 1.34"),
            ..Default::default()
        });
        let readers = for_work(&work.append, &work.send, &caps, Batching::default(), None);
        readers.iter().map(|r| r.describe()).collect()
    }

    #[test]
    fn tails_are_read_before_whole_files_and_an_empty_side_has_no_reader() {
        let (grown, new) = (
            ListedFile::test_file("/var/log/big.log", 1 << 20, 0),
            ListedFile::test_file("/etc/hosts", 10, 0),
        );
        let tail = Tail {
            file: &grown,
            offset: 1 << 19,
            prefix: [0; 32],
            base: AppendBase::Existing,
        };
        let both = Work {
            append: vec![tail],
            send: vec![&new],
            ..Default::default()
        };
        assert_eq!(
            descriptions(&both),
            ["files from an offset: 1", "tar batches: 1"]
        );
        let whole_only = Work {
            send: vec![&new],
            ..Default::default()
        };
        assert_eq!(descriptions(&whole_only), ["tar batches: 1"]);
        assert!(descriptions(&Work::default()).is_empty());
    }
}
