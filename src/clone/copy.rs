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

/// Send `files` (absolute source paths) into `root`.
pub async fn copy(
    session: &Session,
    caps: &Capabilities,
    files: &[&ListedFile],
    root: &Path,
    agent: &AgentCommand,
    progress: &mut dyn Progress,
) -> Result<CopyOutcome, CloneError> {
    let mut list = Vec::new();
    for f in files {
        let rel = f.path.strip_prefix(b"/").unwrap_or(&f.path);
        if !rel.is_empty() {
            list.extend_from_slice(rel);
            list.push(0);
        }
    }

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
        let mut out = WireWriter::new(Counting {
            inner: agent_in,
            bytes: 0,
        })?;
        let stats = tar_to_wire::pump(SyncIoBridge::new(tar_out), &mut out, progress)?;
        let counted = out.finish()?;
        Ok::<_, crate::stream::StreamError>((stats, counted.bytes))
    });
    let tar_stderr = stderr_task.await.unwrap_or_default();
    let fed = feeder.await;
    let tar_status = remote.wait().await.map_err(CloneError::Ssh)?;
    let agent_status = agent_child.wait().map_err(|source| CloneError::Agent {
        what: "waiting for the agent".into(),
        source,
    })?;
    let ack_lines = ack_reader.join().unwrap_or_default();

    let (stats, wire_bytes) = pumped.map_err(|e| CloneError::Stream {
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
