//! The copy phase: the source's own tar reads the listed files, the client
//! checks and frames them ([`crate::stream::tar_to_wire`]), and the agent
//! writes them under the target root and acknowledges each durable write.
//!
//! ```text
//! source: tar -c -T - ──ssh──> pump (BLAKE3, zstd) ──pipe──> hotclone agent ──acks──> journal
//! ```
//!
//! Four things run at once: the file list is written to tar's stdin, tar's
//! stderr is collected, the tar stream is pumped (on this thread, blocking),
//! and the agent's acknowledgements are read (a thread). A file that tar
//! says changed while it was read is marked dirty: it is copied, but not
//! trusted, and the next pass sends it again.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::io::SyncIoBridge;

use super::{tar_messages, CloneError};
use crate::journal::FileRecord;
use crate::probe::{Capabilities, TarFlavour};
use crate::progress::{FileWarning, Progress};
use crate::ssh::{ExitStatus, Session};
use crate::stream::listing::ListedFile;
use crate::stream::tar_to_wire::{self, PumpStats};
use crate::stream::wire::{Ack, WireWriter};

/// The remote tar command for this source, reading NUL-separated relative
/// paths on stdin and writing one tar stream (or, for busybox, several
/// concatenated ones) on stdout.
pub fn tar_command(caps: &Capabilities) -> String {
    match caps.tar.flavour {
        TarFlavour::Busybox => {
            // busybox tar has no -T: xargs hands it the names (NUL-safe).
            "cd / && exec xargs -0 tar -c -f - --no-recursion --numeric-owner".to_string()
        }
        _ => {
            let mut cmd = String::from(
                "cd / && exec tar -c -f - --numeric-owner --no-recursion --sparse --ignore-failed-read --null -T -",
            );
            if caps.tar.xattrs {
                cmd.push_str(" --xattrs --xattrs-include='*'");
            }
            if caps.tar.acls {
                cmd.push_str(" --acls");
            }
            if caps.tar.selinux {
                cmd.push_str(" --selinux");
            }
            cmd
        }
    }
}

/// The `hotclone agent` to run locally (the running binary, normally).
#[derive(Debug, Clone)]
pub struct AgentCommand {
    pub program: PathBuf,
}

/// What the copy achieved.
#[derive(Debug, Default)]
pub struct CopyOutcome {
    pub stats: PumpStats,
    pub wire_bytes: u64,
    pub records: Vec<FileRecord>,
    pub warnings: Vec<FileWarning>,
    /// Lines of tar's stderr that named no file.
    pub tar_messages: Vec<String>,
}

/// How files are grouped into remote tar runs. Each batch is one `tar`
/// on the source; all batches flow into one wire stream and one agent.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_files: usize,
    pub max_bytes: u64,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_files: 20_000,
            max_bytes: 2 << 30,
        }
    }
}

/// Split `files` into NUL-separated relative path lists, each within the
/// batching limits (a single file larger than `max_bytes` is a batch alone).
pub fn batches(files: &[&ListedFile], limits: Batching) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let (mut list, mut count, mut bytes) = (Vec::new(), 0usize, 0u64);
    for f in files {
        let rel = f.path.strip_prefix(b"/").unwrap_or(&f.path);
        if rel.is_empty() {
            continue;
        }
        if count > 0 && (count >= limits.max_files || bytes + f.size > limits.max_bytes) {
            out.push(std::mem::take(&mut list));
            (count, bytes) = (0, 0);
        }
        list.extend_from_slice(rel);
        list.push(0);
        count += 1;
        bytes += f.size;
    }
    if count > 0 {
        out.push(list);
    }
    out
}

type AgentWire = WireWriter<Counting<std::process::ChildStdin>>;

/// One remote tar run: feed it `list`, pump its stream into `out`.
/// Returns what was pumped and tar's stderr.
async fn run_batch(
    session: &Session,
    caps: &Capabilities,
    list: Vec<u8>,
    out: &mut AgentWire,
    progress: &mut dyn Progress,
) -> Result<(PumpStats, String), CloneError> {
    let mut remote = session
        .exec(&tar_command(caps))
        .await
        .map_err(CloneError::Ssh)?;
    let mut tar_in = remote
        .take_stdin()
        .ok_or_else(|| CloneError::internal("tar stdin"))?;
    let tar_out = remote
        .take_stdout()
        .ok_or_else(|| CloneError::internal("tar stdout"))?;
    let mut tar_err = remote
        .take_stderr()
        .ok_or_else(|| CloneError::internal("tar stderr"))?;
    let feeder = tokio::spawn(async move {
        tar_in.write_all(&list).await?;
        tar_in.shutdown().await
    });
    let stderr_task = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = tar_err.read_to_end(&mut text).await;
        String::from_utf8_lossy(&text).into_owned()
    });
    // The pump blocks; block_in_place keeps the other tasks running.
    let pumped = tokio::task::block_in_place(|| {
        tar_to_wire::pump(SyncIoBridge::new(tar_out), out, progress)
    });
    let tar_stderr = stderr_task.await.unwrap_or_default();
    let fed = feeder.await;
    let tar_status = remote.wait().await.map_err(CloneError::Ssh)?;
    let stats = pumped.map_err(|e| CloneError::Stream {
        error: e,
        tar_stderr: tar_stderr.clone(),
    })?;
    if let Ok(Err(e)) = fed {
        return Err(CloneError::Remote {
            what: format!("sending the file list to the source's tar: {e}"),
            stderr: tar_stderr,
        });
    }
    // GNU tar: 1 = some files changed while read (reported per file), 2 = fatal.
    let tar_ok = tar_status.success()
        || (caps.tar.flavour == TarFlavour::Gnu && tar_status == ExitStatus::Code(1));
    if !tar_ok {
        return Err(CloneError::Remote {
            what: format!("the source's tar failed ({tar_status})"),
            stderr: tar_stderr,
        });
    }
    Ok((stats, tar_stderr))
}

/// Send `files` (absolute source paths) into `root`, in batches.
pub async fn copy(
    session: &Session,
    caps: &Capabilities,
    files: &[&ListedFile],
    root: &Path,
    agent: &AgentCommand,
    batching: Batching,
    progress: &mut dyn Progress,
) -> Result<CopyOutcome, CloneError> {
    let mut agent_child = Command::new(&agent.program)
        .arg("agent")
        .arg("--root")
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| CloneError::Agent {
            what: format!("starting {} agent", agent.program.display()),
            source,
        })?;
    let agent_in = agent_child
        .stdin
        .take()
        .ok_or_else(|| CloneError::internal("agent stdin"))?;
    let agent_out = agent_child
        .stdout
        .take()
        .ok_or_else(|| CloneError::internal("agent stdout"))?;
    let ack_reader = std::thread::spawn(move || -> Vec<String> {
        BufReader::new(agent_out)
            .lines()
            .map_while(Result::ok)
            .collect()
    });

    let mut out = WireWriter::new(Counting {
        inner: agent_in,
        bytes: 0,
    })
    .map_err(|e| CloneError::Stream {
        error: e.into(),
        tar_stderr: String::new(),
    })?;
    let mut stats = PumpStats::default();
    let mut tar_stderr = String::new();
    for list in batches(files, batching) {
        let (batch, stderr) = match run_batch(session, caps, list, &mut out, progress).await {
            Ok(done) => done,
            Err(e) => {
                // Close the stream and let the agent finish before the
                // caller unmounts what it writes to.
                drop(out);
                let _ = agent_child.wait();
                let _ = ack_reader.join();
                return Err(e);
            }
        };
        stats.entries += batch.entries;
        stats.files += batch.files;
        stats.bytes += batch.bytes;
        stats.skipped += batch.skipped;
        tar_stderr.push_str(&stderr);
    }
    let wire_bytes = out
        .finish()
        .map_err(|e| CloneError::Stream {
            error: e.into(),
            tar_stderr: tar_stderr.clone(),
        })?
        .bytes;
    let agent_status = agent_child.wait().map_err(|source| CloneError::Agent {
        what: "waiting for the agent".into(),
        source,
    })?;
    let ack_lines = ack_reader.join().unwrap_or_default();
    if !agent_status.success() {
        return Err(CloneError::AgentFailed {
            status: agent_status.to_string(),
        });
    }

    let (mut warnings, tar_messages) = tar_messages::parse(&tar_stderr);
    let dirty: Vec<PathBuf> = warnings
        .iter()
        .filter(|w| matches!(w, FileWarning::Dirty { .. }))
        .map(|w| w.path().clone())
        .collect();
    let by_path: HashMap<&[u8], &ListedFile> =
        files.iter().map(|f| (f.path.as_slice(), *f)).collect();
    let mut records = Vec::new();
    for line in &ack_lines {
        let ack = Ack::parse(line).map_err(|e| CloneError::Remote {
            what: e.to_string(),
            stderr: String::new(),
        })?;
        match ack {
            Ack::Ok { path, digest } => {
                let mut abs = b"/".to_vec();
                abs.extend_from_slice(&path);
                let Some(listed) = by_path.get(abs.as_slice()) else {
                    continue;
                };
                let shown = PathBuf::from(String::from_utf8_lossy(&abs).into_owned());
                progress.file_done(listed.size);
                records.push(FileRecord {
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
                    dirty: dirty.contains(&shown),
                });
            }
            Ack::Warn { path, reason } => warnings.push(FileWarning::Degraded {
                path: lossy_abs(&path),
                reason,
            }),
            Ack::Bad { path, reason } => warnings.push(FileWarning::Unreadable {
                path: lossy_abs(&path),
                reason: format!("not written on the target: {reason}"),
            }),
            Ack::Done { .. } => {}
        }
    }
    for w in &warnings {
        progress.warning(w);
    }
    Ok(CopyOutcome {
        stats,
        wire_bytes,
        records,
        warnings,
        tar_messages,
    })
}

/// Counts the compressed bytes that go to the agent.
struct Counting<W> {
    inner: W,
    bytes: u64,
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

fn lossy_abs(rel: &[u8]) -> PathBuf {
    PathBuf::from(format!("/{}", String::from_utf8_lossy(rel)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, size: u64) -> ListedFile {
        ListedFile::test_file(path, size, 0)
    }

    #[test]
    fn batches_respect_file_and_byte_limits_and_skip_the_root() {
        let files = [
            f("/", 0),
            f("/a", 10),
            f("/b", 10),
            f("/c", 10),
            f("/big", 100),
            f("/d", 1),
        ];
        let refs: Vec<&ListedFile> = files.iter().collect();
        let lists = batches(
            &refs,
            Batching {
                max_files: 2,
                max_bytes: 50,
            },
        );
        let shown: Vec<String> = lists
            .iter()
            .map(|l| String::from_utf8_lossy(l).replace('\0', " "))
            .collect();
        assert_eq!(shown, vec!["a b ", "c ", "big ", "d "]);
    }
}
