//! The receiving side: where the clone's files land and how the disk is
//! made ready for them.
//!
//! - [`partition`]: the planned partition table, written with gptman/mbrman.
//! - [`image`]: a local raw/qcow2 image, attached, formatted and mounted.

pub mod image;
pub mod partition;
