//! The receiving agent, apart from the target connectors ([`crate::target`])
//! and from disk preparation: what runs where the disk is and turns the
//! wire stream into files.
//!
//! - [`agent`]: `hotclone agent`, which decodes the wire stream, writes it
//!   through [`writer`] and acknowledges each entry once it is durable.
//! - [`writer`]: writes one entry with full fidelity under a root, never
//!   outside it.
//!
//! On failure the agent stops acknowledging: what was acknowledged is on
//! the disk, what was not is sent again by the next pass.

pub mod agent;
pub mod writer;
