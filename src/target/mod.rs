//! The receiving side: where the clone's files land and how the disk is
//! made ready for them.
//!
//! - [`partition`]: the planned partition table, written with gptman/mbrman.
//! - [`image`]: the disk made ready: partitioned, formatted, mounted (an
//!   image file on a loop device, or a block device in the rescue VM).
//! - [`device`]: is a block device free to write, and how big is it.
//! - The agent that writes the stream is [`crate::receiver`].
//! - [`Target`]: what a clone or sync pass needs from the receiving side,
//!   with two implementations chosen by the plan's target: [`local`] (an
//!   image on this machine, the agent a child process) and [`live`] (the
//!   rescue VM over SSH, the same agent and disk code running there as
//!   `hotclone agent` and `hotclone target ...`).

pub mod conversion;
pub mod device;
pub mod error;
pub mod image;
pub mod live;
pub mod local;
pub mod lock;
pub mod partition;
pub mod remote;

pub use error::CloneError;
use std::path::{Path, PathBuf};

use crate::journal::ConvertedFile;
use crate::plan::Plan;
use crate::probe::Inventory;
use crate::progress::Progress;

/// A running agent: the wire stream goes to `input`, its acknowledgement
/// lines come from `acks`, and `process` says how it ended.
pub struct AgentLink {
    pub input: Box<dyn std::io::Write + Send>,
    pub acks: Box<dyn std::io::BufRead + Send>,
    pub process: Box<dyn AgentProcess>,
}

/// How an agent ended.
pub trait AgentProcess: Send {
    /// Wait for the end (blocking): `Ok(None)` on success, `Ok(Some(status))`
    /// when it failed with that exit status.
    fn wait(self: Box<Self>) -> Result<Option<String>, CloneError>;
}

/// What conversion did, for the journal and the summary.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Converted {
    pub notes: Vec<String>,
    /// Files conversion changed, with their new digest (None: removed).
    pub files: Vec<ConvertedFile>,
}

/// One file of the migration's state, as the target's state directory
/// gets it: bytes, or the journal itself (an image target copies it
/// straight into place; a live one sends a snapshot).
pub enum StateFile<'a> {
    Bytes(&'a [u8]),
    Journal(&'a crate::journal::Journal),
}

/// Writes one file into the target's state directory from any thread
/// (the journal thread refreshes the journal copy during a pass).
pub type StateWriter =
    std::sync::Arc<dyn Fn(&str, StateFile<'_>) -> Result<(), CloneError> + Send + Sync>;

/// The receiving side of a clone or sync pass, disk prepared and mounted.
#[async_trait::async_trait]
pub trait Target: Send + Sync {
    /// The root of the target tree, as the target host sees it.
    fn root(&self) -> &Path;
    /// Where the clone goes, for messages ("/vm/web01.qcow2", "root@vm:/dev/vda").
    fn describe(&self) -> String;
    /// The zstd level of the stream to the agent: what the path between
    /// this client and the agent is worth in CPU. An SSH link to a rescue
    /// VM carries less at level 3; a pipe to a local agent is not worth
    /// compressing, and a fast level leaves the CPU to the copy.
    fn wire_level(&self) -> i32 {
        3
    }
    /// Start an agent writing under [`Target::root`]; with `sweep` it
    /// removes, at the end, temporary files an interrupted agent left.
    async fn agent(&self, sweep: bool) -> Result<AgentLink, CloneError>;
    /// Write `name` into the target's state directory
    /// ([`crate::migration::TARGET_STATE_DIR`]), replacing it atomically.
    fn state_writer(&self) -> StateWriter;
    /// Hash files of the tree with `tool` (md5sum, sha1sum) on the target
    /// host: `paths` are NUL-separated, relative to the root; the tool's
    /// output is returned (`sync --checksum`).
    async fn hash_files(&self, tool: &str, paths: &[u8]) -> Result<Vec<u8>, CloneError>;
    /// Make the copy boot as a VM, with the guest's own tools; the journal
    /// at `journal` says what the copy holds, to find what conversion
    /// changed.
    async fn convert(
        &mut self,
        inv: &Inventory,
        plan: &Plan,
        journal: &Path,
        progress: &mut dyn Progress,
    ) -> Result<Converted, CloneError>;
    /// The end of a clone: flush, unmount, check the filesystems and
    /// produce the final disk. Returns what the clone is now.
    async fn finish(
        self: Box<Self>,
        plan: &Plan,
        progress: &mut dyn Progress,
    ) -> Result<String, CloneError>;
    /// The end of a sync pass: flush and unmount, keeping the disk.
    async fn close(self: Box<Self>, progress: &mut dyn Progress) -> Result<(), CloneError>;
}

/// Where a clone starts from, by the journal's stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneStart {
    /// Nothing made yet: a new disk (an existing image is refused).
    New,
    /// A clone was killed while it prepared the disk (stage "preparing"):
    /// the half-made disk is its own, holds no file, and is made again.
    Redo,
    /// A clone was interrupted while copying: its disk is attached again.
    Resume,
}

/// How to reach the target, chosen once by the caller from the plan.
pub enum Opener {
    /// An image on this machine; the agent is this hotclone binary.
    Image { agent_program: PathBuf },
    /// A rescue VM over SSH.
    Live(live::Connection),
}

impl Opener {
    /// The target for a clone: prepared anew, prepared again over the
    /// half-made disk of a clone killed while preparing it, or attached
    /// again as an interrupted clone left it (see [`CloneStart`]).
    pub async fn for_clone(
        self,
        plan: &Plan,
        migration: &crate::migration::Migration,
        start: CloneStart,
    ) -> Result<Box<dyn Target>, CloneError> {
        match self {
            Opener::Image { agent_program } => Ok(Box::new(local::LocalImage::for_clone(
                plan,
                migration,
                agent_program,
                start,
            )?)),
            Opener::Live(conn) => Ok(Box::new(
                conn.open(plan, start == CloneStart::Resume).await?,
            )),
        }
    }

    /// The target of a finished clone, attached for a sync pass.
    pub async fn for_sync(
        self,
        plan: &Plan,
        migration: &crate::migration::Migration,
        progress: &mut dyn Progress,
    ) -> Result<Box<dyn Target>, CloneError> {
        match self {
            Opener::Image { agent_program } => Ok(Box::new(local::LocalImage::for_sync(
                plan,
                migration,
                agent_program,
                progress,
            )?)),
            Opener::Live(conn) => {
                progress.phase("attaching the target disk");
                Ok(Box::new(conn.open(plan, true).await?))
            }
        }
    }
}
