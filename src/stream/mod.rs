//! The data path between the source and the target.
//!
//! - [`listing`]: the source's file list, taken first (totals, change detection).

pub mod listing;
