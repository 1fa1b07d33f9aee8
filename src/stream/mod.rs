//! The data path between the source and the target.
//!
//! - [`listing`]: the source's file list, taken first (totals, change detection).
//! - [`walk`]: that list taken by several finds at once.
//! - [`wire`]: the versioned, framed, zstd-compressed format the client
//!   sends to `hotclone agent`, with a BLAKE3 digest per file, and the
//!   agent's acknowledgements.
//! - [`tar_to_wire`]: the source's own tar stream turned into wire frames.

pub mod hashing;
pub mod listing;
pub mod tar_to_wire;
pub mod walk;
pub mod wire;

use std::io;

/// A failure of the whole stream (per-file problems are
/// [`crate::progress::FileWarning`]s instead).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the source's tar stream is unreadable: {0}; check that the source's tar ran to the end (its stderr says why)")]
    Tar(io::Error),
    #[error("cannot read {path} from the source's tar stream: {source}")]
    Entry { path: String, source: io::Error },
    #[error("the sparse map of {path} in the tar stream is invalid: {why}")]
    SparseMap { path: String, why: String },
    #[error(transparent)]
    Wire(#[from] wire::WireError),
}
