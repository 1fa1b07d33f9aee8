//! The receiving side: where the clone's files land and how the disk is
//! made ready for them.
//!
//! - [`partition`]: the planned partition table, written with gptman/mbrman.
//! - [`image`]: a local raw/qcow2 image, attached, formatted and mounted.
//! - [`agent`]: `hotclone agent`, which decodes the wire stream, writes it
//!   through [`writer`] and acknowledges each durable entry.

pub mod agent;
pub mod image;
pub mod partition;
pub mod writer;
