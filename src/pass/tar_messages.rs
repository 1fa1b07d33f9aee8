//! What the source's tar says on stderr about single files, turned into
//! [`FileWarning`]s. GNU tar names the file and the problem on one line:
//!
//! ```text
//! tar: var/log/syslog: file changed as we read it
//! tar: var/lib/db/x: File shrank by 4096 bytes; padding with zeros
//! tar: tmp/gone: Warning: Cannot stat: No such file or directory
//! tar: root/secret: Warning: Cannot open: Permission denied
//! tar: run/sock: socket ignored
//! ```
//!
//! busybox tar says less (`tar: srv/gone: No such file or directory`),
//! goes on with the next file, and ends with `tar: error exit delayed
//! from previous errors` and a failure status.
//!
//! Lines we do not recognise are returned as they are, for the log.

use std::path::PathBuf;

use crate::progress::FileWarning;

/// Message tails and what they mean, most specific first.
const KNOWN: &[(&str, Kind)] = &[
    (": file changed as we read it", Kind::Dirty),
    ("; padding with zeros", Kind::Dirty),
    (
        ": Warning: Cannot stat: No such file or directory",
        Kind::Vanished,
    ),
    (": Cannot stat: No such file or directory", Kind::Vanished),
    (": File removed before we read it", Kind::Vanished),
    // busybox: the file went between the listing and tar.
    (": No such file or directory", Kind::Vanished),
    (": socket ignored", Kind::Skipped),
    (": Warning: Cannot open: ", Kind::Unreadable),
    (": Cannot open: ", Kind::Unreadable),
    (": Warning: Read error", Kind::Unreadable),
    (": Read error", Kind::Unreadable),
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Dirty,
    Vanished,
    Skipped,
    Unreadable,
}

/// Parse tar's stderr: per-file warnings, and the lines left over.
pub fn parse(stderr: &str) -> (Vec<FileWarning>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut other = Vec::new();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        match parse_line(line) {
            Some(w) => warnings.push(w),
            None => other.push(line.to_string()),
        }
    }
    (warnings, other)
}

/// The summary lines tar ends with after per-file problems.
const SUMMARIES: &[&str] = &[
    "tar: error exit delayed from previous errors",
    "tar: Exiting with failure status due to previous errors",
];

/// Whether tar's failure was only about single files it reported (gone,
/// unreadable, changed), each of which becomes a warning and goes again
/// next pass: every line of `stderr` is a per-file message or a summary,
/// and there is at least one per-file message.
pub fn only_file_problems(stderr: &str) -> bool {
    let (warnings, other) = parse(stderr);
    !warnings.is_empty() && other.iter().all(|l| SUMMARIES.contains(&l.trim()))
}

fn parse_line(line: &str) -> Option<FileWarning> {
    let body = line.strip_prefix("tar: ")?;
    for (tail, kind) in KNOWN {
        let Some(at) = body.find(tail) else { continue };
        let name = &body[..at];
        let name = name
            .split_once(": File shrank by")
            .map(|(n, _)| n)
            .unwrap_or(name);
        let path = PathBuf::from(format!(
            "/{}",
            name.trim_start_matches("./").trim_start_matches('/')
        ));
        let reason = body[at + 2..].to_string();
        return Some(match kind {
            Kind::Dirty => FileWarning::Dirty { path, reason },
            Kind::Vanished => FileWarning::Vanished { path },
            Kind::Skipped => FileWarning::Skipped { path, reason },
            Kind::Unreadable => FileWarning::Unreadable { path, reason },
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_tar_messages_become_warnings() {
        let (w, other) = parse(
            "tar: var/log/syslog: file changed as we read it\n\
             tar: var/lib/db/x: File shrank by 4096 bytes; padding with zeros\n\
             tar: tmp/gone: Warning: Cannot stat: No such file or directory\n\
             tar: root/secret: Warning: Cannot open: Permission denied\n\
             tar: run/a: b.sock: socket ignored\n\
             tar: Exiting with failure status due to previous errors\n",
        );
        assert_eq!(
            w[0],
            FileWarning::Dirty {
                path: "/var/log/syslog".into(),
                reason: "file changed as we read it".into()
            }
        );
        assert!(
            matches!(&w[1], FileWarning::Dirty { path, .. } if path == &PathBuf::from("/var/lib/db/x"))
        );
        assert_eq!(
            w[2],
            FileWarning::Vanished {
                path: "/tmp/gone".into()
            }
        );
        assert!(
            matches!(&w[3], FileWarning::Unreadable { path, reason } if path == &PathBuf::from("/root/secret") && reason.contains("Permission denied"))
        );
        assert!(
            matches!(&w[4], FileWarning::Skipped { path, .. } if path == &PathBuf::from("/run/a: b.sock"))
        );
        assert_eq!(
            other,
            vec!["tar: Exiting with failure status due to previous errors"]
        );
    }

    /// A busybox source under churn: a file listed, then deleted before
    /// tar read it. busybox tar goes on and exits 1 (xargs then 123), and
    /// the pass failed with "the source's tar failed (exit status 123)"
    /// although every other file arrived (sync_lab, twenty interruptions
    /// under churn). Now the file is a vanished warning and the failure
    /// only about it is not the pass's.
    #[test]
    fn regression_busybox_tar_on_a_file_gone_since_the_listing() {
        let stderr = concat!(
            "tar: srv/data/churn/new206: No such file or directory\n",
            "tar: error exit delayed from previous errors\n"
        );
        let (w, other) = parse(stderr);
        assert_eq!(
            w,
            vec![FileWarning::Vanished {
                path: "/srv/data/churn/new206".into()
            }]
        );
        assert_eq!(other, vec!["tar: error exit delayed from previous errors"]);
        assert!(only_file_problems(stderr));
        // Anything else tar says keeps the failure a failure.
        assert!(!only_file_problems(
            "tar: srv/x: No such file or directory\ntar: short write\n"
        ));
        assert!(!only_file_problems(
            "tar: error exit delayed from previous errors\n"
        ));
        assert!(!only_file_problems(""));
    }
}
