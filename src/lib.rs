//! hotclone: hot-clone running legacy Linux servers into virtual machines.
//!
//! The library never prints and never exits. Everything a user sees is
//! rendered by the binary (`src/main.rs` and `src/cli/`). Failures are
//! `thiserror` enums per module that say what went wrong and what to do.
//!
//! Layers (data flows left to right):
//! `ssh` (sessions to old servers) -> `probe` (an [`probe::Inventory`] of the
//! running source, read once and acted on afterwards).

pub mod clone;
pub mod convert;
pub mod cutover;
#[cfg(test)]
pub(crate) mod golden;
pub mod journal;
pub mod launch;
pub mod migration;
pub mod netns;
pub mod pass;
pub mod plan;
pub mod probe;
pub mod progress;
pub mod random;
pub mod receiver;
pub mod rehearse;
pub mod rescue;
pub mod shell;
pub mod ssh;
pub mod status;
pub mod stream;
pub mod sync;
pub mod target;
pub mod units;
pub mod verify;
