//! How long-running work reports to its caller. The library never prints:
//! it calls these hooks, and the binary decides what to show (bars on a
//! terminal, log lines otherwise, JSON events with `--json`). Per-file
//! problems are reported here too; the caller counts them and sets the exit
//! code.

use std::path::PathBuf;

/// Something about one file that did not go as planned. Never fatal on
/// its own: the file is counted and, where it says so, sent again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileWarning {
    /// Changed while it was read (tar said so, or its size or mtime differ
    /// from the listing). Its copy is not trusted; the next pass sends it again.
    Dirty { path: PathBuf, reason: String },
    /// Gone between the listing and the read.
    Vanished { path: PathBuf },
    /// Could not be read on the source (permissions, I/O error).
    Unreadable { path: PathBuf, reason: String },
    /// Deliberately not copied (a socket, an unsupported type).
    Skipped { path: PathBuf, reason: String },
    /// Copied, but something of it could not be kept (an xattr, an owner).
    Degraded { path: PathBuf, reason: String },
}

impl FileWarning {
    pub fn path(&self) -> &PathBuf {
        match self {
            FileWarning::Dirty { path, .. }
            | FileWarning::Vanished { path }
            | FileWarning::Unreadable { path, .. }
            | FileWarning::Skipped { path, .. }
            | FileWarning::Degraded { path, .. } => path,
        }
    }
}

/// Progress hooks. Every method has a default that ignores the call, so an
/// implementation overrides only what it shows.
pub trait Progress: Send {
    /// A new phase starts ("listing", "copying", "converting"...).
    fn phase(&mut self, _name: &str) {}
    /// Entries the source's listing has returned so far: on a big server
    /// with a cold cache it takes minutes.
    fn listed(&mut self, _entries: u64) {}
    /// What the current phase will handle in all, when known.
    fn totals(&mut self, _files: u64, _bytes: u64) {}
    /// One file's content starts going to the target (its durable write is
    /// acknowledged shortly after, and recorded in the journal).
    fn file_done(&mut self, _bytes: u64) {}
    /// Raw bytes moved over the wire so far (compressed), for the rate.
    fn wire_bytes(&mut self, _bytes: u64) {}
    fn warning(&mut self, _warning: &FileWarning) {}
    /// A line for the log ("grub-install: Installation finished").
    fn note(&mut self, _message: &str) {}
}

/// Shows nothing. For tests and for callers that only want the result.
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {}
