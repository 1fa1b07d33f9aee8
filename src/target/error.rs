//! The error of copying into a target: a clone's or a sync pass's, and
//! the target connectors' own (preparing the disk, the agent, converting
//! where the disk is). Each variant's message says what failed and, where
//! the user can act, what to do.

use super::image;

#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    /// Not `#[source]`: the message already holds it (shown once, not twice).
    #[error("preparing the target disk: {0}")]
    Image(image::ImageError),
    #[error(transparent)]
    Ssh(crate::ssh::SshError),
    #[error("on the source, {what}. Its stderr: {stderr}")]
    Remote { what: String, stderr: String },
    #[error("the data stream broke: {error}. The source's tar said: {tar_stderr}")]
    Stream {
        error: crate::stream::StreamError,
        tar_stderr: String,
    },
    #[error("{what}: {source}")]
    Agent {
        what: String,
        source: std::io::Error,
    },
    #[error("the agent failed ({status}); its messages are above")]
    AgentFailed { status: String },
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Migration(#[from] crate::migration::MigrationError),
    #[error("on the target: {0}")]
    Target(String),
    #[error("{0}")]
    Stage(String),
    #[error("converting the copy: {0}")]
    Convert(String),
    #[error("internal error: {0} is missing")]
    Internal(String),
}

impl From<image::ImageError> for CloneError {
    fn from(e: image::ImageError) -> Self {
        CloneError::Image(e)
    }
}

impl CloneError {
    pub(crate) fn internal(what: &str) -> CloneError {
        CloneError::Internal(what.to_string())
    }

    /// The target's filesystem was found damaged and refused: running the
    /// same command again does not help (its message says what does).
    pub fn target_damaged(&self) -> bool {
        matches!(self, CloneError::Image(image::ImageError::Damaged { .. }))
    }
}

/// A failure of `--checksum`'s hashing on the target.
pub fn checksum_error(what: &str, e: impl std::fmt::Display) -> CloneError {
    CloneError::Target(format!("--checksum: hashing on the target: {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CloneError::Image` was `#[from]` with `{0}` in its message, so the
    /// CLI's `{:#}` printed the disk error twice ("...: X: X").
    #[test]
    fn regression_image_errors_are_shown_once() {
        let e = CloneError::from(image::ImageError::InUse {
            device: "/dev/vda".into(),
            what: "/dev/vda1 is mounted on /mnt".into(),
        });
        let shown = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(shown.matches("is mounted on /mnt").count(), 1, "{shown}");
        assert!(
            shown.starts_with("preparing the target disk: /dev/vda is in use"),
            "{shown}"
        );
    }
}
