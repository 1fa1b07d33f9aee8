//! Files sent from an offset ([`crate::pass::grown`]): transfers an
//! interruption cut off, resumed from their partial copy, and files that
//! only grew. The source reads each with `tail -c +N | head -c M`.
//!
//! On failure (`sh` cannot be started on the source, the stream breaks)
//! the reader stops with the error. A file that shrank or vanished
//! meanwhile is no failure (tail's exit status is not read): what is
//! missing is padded with zeros and the file is booked dirty, so the next
//! pass sends it again.

use tokio_util::io::SyncIoBridge;

use super::{attrs_meta, exec_fed, AgentWire, Fed, ReadStats, SentEntries, SourceReader};
use crate::pass::grown::{self, Tail};
use crate::progress::Progress;
use crate::ssh::Session;
use crate::stream::wire::{EntryKind, EntryMeta};
use crate::target::CloneError;

/// The files of a pass that go from an offset.
pub struct Tails<'t, 'a> {
    pub tails: &'t [Tail<'a>],
}

#[async_trait::async_trait(?Send)]
impl SourceReader for Tails<'_, '_> {
    fn describe(&self) -> String {
        format!("files from an offset: {}", self.tails.len())
    }

    async fn send(
        &mut self,
        session: &Session,
        out: &mut AgentWire,
        sent: &SentEntries,
        progress: &mut dyn Progress,
    ) -> Result<ReadStats, CloneError> {
        let mut read = ReadStats::default();
        for g in self.tails {
            let n = send_tail(session, g, out, sent).await?;
            read.stats.entries += 1;
            read.stats.files += 1;
            read.stats.bytes += n;
            progress.file_done(n);
        }
        Ok(read)
    }
}

/// Sends a file from an offset, read on the source by `tail | head`.
/// Returns the bytes sent. A file that shrank or was replaced since the
/// prefix was checked gives fewer bytes: the rest is sent as zeros (the
/// stream stays whole, as tar pads a shrunk file) and the entry's recorded
/// size says what was really read, so the ack books it dirty.
async fn send_tail(
    session: &Session,
    g: &Tail<'_>,
    out: &mut AgentWire,
    sent: &SentEntries,
) -> Result<u64, CloneError> {
    let Fed {
        remote,
        stdout: sh_out,
        feeder,
    } = exec_fed(session, "sh", grown::tail_command(g)).await?;
    let meta = EntryMeta {
        size: g.file.size,
        kind: EntryKind::File,
        ..attrs_meta(g.file)
    };
    let (path, sent, offset) = (meta.path.clone(), sent.clone(), g.offset);
    let mut padded = PadShort {
        inner: SyncIoBridge::new(sh_out),
        left: g.file.size - g.offset,
        got: 0,
        on_short: Some(Box::new(move |got| {
            if let Ok(mut m) = sent.lock() {
                if let Some(e) = m.get_mut(&path) {
                    e.size = offset + got;
                }
            }
        })),
    };
    let result = tokio::task::block_in_place(|| {
        out.append(&meta, (g.offset, g.prefix, g.base), &mut padded)
    });
    let _ = feeder.await;
    let _ = remote.wait().await;
    result.map_err(|e| CloneError::Stream {
        error: e.into(),
        tar_stderr: String::new(),
    })?;
    Ok(g.file.size - g.offset)
}

/// Reads `left` bytes from `inner`; after an early end, zeros, and
/// `on_short` is told how many real bytes there were (before the first
/// zero is handed out, so before the file's FileEnd is written).
struct PadShort<R> {
    inner: R,
    left: u64,
    got: u64,
    on_short: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl<R: std::io::Read> std::io::Read for PadShort<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min(self.left.try_into().unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        if self.on_short.is_some() {
            let n = self.inner.read(&mut buf[..want])?;
            if n > 0 {
                self.got += n as u64;
                self.left -= n as u64;
                return Ok(n);
            }
            if let Some(tell) = self.on_short.take() {
                tell(self.got);
            }
        }
        buf[..want].fill(0);
        self.left -= want as u64;
        Ok(want)
    }
}
