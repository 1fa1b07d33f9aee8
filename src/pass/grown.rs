//! Files sent from an offset, not whole: a transfer an interruption cut off
//! resumes from its partial copy ([`resumable`]), and a file that only grew
//! since the last pass (a log) is sent as its new tail ([`candidates`]).
//!
//! A resume needs the partial copy's last `part` in the journal (see
//! [`crate::receiver::agent`]) and the source file exactly as it was when
//! read (size, mtime, ctime, inode); the agent checks the partial copy's
//! BLAKE3 before it appends.
//!
//! A candidate is a regular file the journal holds with a digest, on the
//! same inode, now larger, with at least [`MIN_PREFIX`] bytes already on the
//! target and no extended attributes (the tail carries none; such files go
//! whole). Dirty records qualify too: a busy log is nearly always modified
//! in the second it is listed, so it is booked dirty every pass, and the
//! checks below compare contents, which is what dirty leaves in doubt. The
//! prefix is confirmed before anything is sent: the source hashes its first
//! N bytes (`head -c N | md5sum`, with whatever tool it has) and the target
//! hashes its whole copy (N bytes) with the same tool. Only files whose two
//! digests match go as a tail; the rest are sent whole, as before. The agent
//! checks again, against the BLAKE3 the journal recorded, while it copies the
//! prefix into a temporary file beside the old one, then appends the tail
//! and renames into place: an interruption leaves the old file whole.
//!
//! A file rewritten in place to a larger size is caught by the prefix
//! check; one that shrinks or is rotated between the check and the read is
//! padded like tar pads a shrunk file, and booked dirty (sent whole next
//! pass).

use std::collections::HashMap;

use crate::journal::{FileRecord, Partial};
use crate::stream::listing::{FileKind, ListedFile};
use crate::stream::wire::AppendBase;

/// Below this, a whole file costs about what the checks do.
pub const MIN_PREFIX: u64 = 64 << 10;

/// A file to send from an offset: one that grew (the target's copy holds
/// the start), or one whose transfer an interruption cut off (its partial
/// copy does).
#[derive(Debug, Clone, Copy)]
pub struct Tail<'a> {
    pub file: &'a ListedFile,
    /// Bytes the target already has.
    pub offset: u64,
    /// Their BLAKE3, as the journal has it.
    pub prefix: [u8; 32],
    pub base: AppendBase,
}

/// Files in `send` that only grew, by what the journal holds.
pub fn candidates<'a>(send: &[&'a ListedFile], held: &[FileRecord]) -> Vec<Tail<'a>> {
    let held: HashMap<&[u8], &FileRecord> = held.iter().map(|r| (r.path.as_slice(), r)).collect();
    send.iter()
        .filter(|f| f.kind == FileKind::File && f.nlink == 1)
        .filter_map(|f| {
            let r = held.get(f.path.as_slice())?;
            let grew = r.kind == "file"
                && r.xattr_digest.is_none()
                && r.inode == f.inode
                && r.size >= MIN_PREFIX
                && f.size > r.size
                && f.mtime >= r.mtime;
            Some(Tail {
                file: f,
                offset: r.size,
                prefix: r.digest.filter(|_| grew)?,
                base: AppendBase::Existing,
            })
        })
        .collect()
}

/// The files of `send` whose transfer an interrupted pass cut off, with a
/// partial copy on the target, and the source file unchanged since (same
/// size, mtime, ctime and inode as when it was read): they resume from
/// the partial copy's last `part`. Also returns the partial copies that
/// cannot be resumed (the file changed, or is not sent).
pub fn resumable<'a, 'p>(
    send: &[&'a ListedFile],
    partials: &'p [Partial],
) -> (Vec<Tail<'a>>, Vec<&'p [u8]>) {
    let by_path: HashMap<&[u8], &Partial> =
        partials.iter().map(|p| (p.path.as_slice(), p)).collect();
    let resume: Vec<Tail<'a>> = send
        .iter()
        .filter_map(|f| {
            let p = by_path.get(f.path.as_slice())?;
            let same = f.kind == FileKind::File
                && (p.size, p.mtime, p.mtime_nsec, p.ctime, p.inode)
                    == (f.size, f.mtime, f.mtime_nsec, f.ctime, f.inode)
                && p.offset < f.size;
            same.then_some(Tail {
                file: f,
                offset: p.offset,
                prefix: p.digest,
                base: AppendBase::Partial,
            })
        })
        .collect();
    let resumed: std::collections::HashSet<&[u8]> =
        resume.iter().map(|t| t.file.path.as_slice()).collect();
    let stale = partials
        .iter()
        .map(|p| p.path.as_slice())
        .filter(|p| !resumed.contains(p))
        .collect();
    (resume, stale)
}

/// A shell script for the source's `sh`: one `HASH  -` line per candidate,
/// in order, the digest of its first `offset` bytes. A file that cannot be
/// read hashes as empty, which never matches.
pub fn source_script(tool: &str, grown: &[Tail<'_>]) -> Vec<u8> {
    let mut script = Vec::new();
    for g in grown {
        script.extend_from_slice(format!("head -c {} ", g.offset).as_bytes());
        script.extend_from_slice(&crate::shell::quote_bytes(&g.file.path));
        script.extend_from_slice(format!(" 2>/dev/null | {tool}\n").as_bytes());
    }
    script
}

/// The source command that prints the tail of `g`: exactly the bytes from
/// its offset to the listed size, or fewer when the file shrank.
pub fn tail_command(g: &Tail<'_>) -> Vec<u8> {
    let mut cmd = format!("tail -c +{} ", g.offset + 1).into_bytes();
    cmd.extend_from_slice(&crate::shell::quote_bytes(&g.file.path));
    cmd.extend_from_slice(format!(" | head -c {}", g.file.size - g.offset).as_bytes());
    cmd
}

/// Keeps the candidates whose prefix digest on the source (the script's
/// output lines, in order) equals the target's digest of its copy.
pub fn confirmed<'a>(
    grown: Vec<Tail<'a>>,
    source: &[u8],
    target: &HashMap<Vec<u8>, String>,
) -> Vec<Tail<'a>> {
    let lines: Vec<&[u8]> = source.split(|b| *b == b'\n').collect();
    grown
        .into_iter()
        .enumerate()
        .filter(|(i, g)| {
            let on_source = lines
                .get(*i)
                .and_then(|l| l.split(|b| *b == b' ').next())
                .map(String::from_utf8_lossy);
            matches!((on_source, target.get(&g.file.path)), (Some(s), Some(t)) if !s.is_empty() && *s == **t)
        })
        .map(|(_, g)| g)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, size: u64, inode: u64) -> FileRecord {
        FileRecord {
            path: path.as_bytes().to_vec(),
            kind: "file".into(),
            size,
            mtime: 100,
            mtime_nsec: 0,
            ctime: 100,
            inode,
            uid: 0,
            gid: 0,
            mode: 0o644,
            digest: Some([7; 32]),
            link_target: None,
            xattr_digest: None,
            dirty: false,
        }
    }

    #[test]
    fn only_files_on_the_same_inode_that_grew_past_the_minimum_qualify() {
        let big = MIN_PREFIX;
        let listed = [
            ListedFile::test_file("/log", big + 10, 200),
            ListedFile::test_file("/small", 100, 200),
            ListedFile::test_file("/shrank", big - 1, 200),
            ListedFile {
                inode: 9,
                ..ListedFile::test_file("/replaced", big + 10, 200)
            },
            ListedFile::test_file("/busy", big + 10, 200),
            ListedFile::test_file("/new", big + 10, 200),
            ListedFile::test_file("/labelled", big + 10, 200),
        ];
        let held = [
            record("/log", big, 1),
            record("/small", 50, 1),
            record("/shrank", big, 1),
            record("/replaced", big, 1),
            FileRecord {
                dirty: true,
                ..record("/busy", big, 1)
            },
            FileRecord {
                xattr_digest: Some([1; 32]),
                ..record("/labelled", big, 1)
            },
        ];
        let send: Vec<&ListedFile> = listed.iter().collect();
        let found = candidates(&send, &held);
        let names: Vec<&[u8]> = found.iter().map(|g| &g.file.path[..]).collect();
        assert_eq!(names, vec![&b"/log"[..], &b"/busy"[..]]);
        assert_eq!(found[0].offset, big);
        assert_eq!(found[0].prefix, [7; 32]);
    }

    #[test]
    fn a_partial_copy_resumes_only_while_the_source_file_is_as_it_was_read() {
        let same = ListedFile::test_file("/same", 1000, 200);
        let touched = ListedFile::test_file("/touched", 1000, 201);
        let partial = |path: &str| Partial {
            path: path.as_bytes().to_vec(),
            offset: 400,
            digest: [5; 32],
            size: 1000,
            mtime: 200,
            mtime_nsec: 0,
            ctime: 0,
            inode: 1,
        };
        let partials = [partial("/same"), partial("/touched"), partial("/not-sent")];
        let (resume, stale) = resumable(&[&same, &touched], &partials);
        assert_eq!(resume.len(), 1);
        assert_eq!(
            (&resume[0].file.path[..], resume[0].offset, resume[0].base),
            (&b"/same"[..], 400, AppendBase::Partial)
        );
        assert_eq!(stale, vec![&b"/touched"[..], &b"/not-sent"[..]]);
    }

    #[test]
    fn scripts_quote_every_name_and_ask_for_exact_byte_ranges() {
        let f = ListedFile::test_file("/var/log/it's a log", 150, 0);
        let g = Tail {
            file: &f,
            offset: 100,
            prefix: [0; 32],
            base: AppendBase::Existing,
        };
        assert_eq!(
            String::from_utf8(source_script("md5sum", &[g])).unwrap(),
            "head -c 100 '/var/log/it'\\''s a log' 2>/dev/null | md5sum\n"
        );
        assert_eq!(
            String::from_utf8(tail_command(&g)).unwrap(),
            "tail -c +101 '/var/log/it'\\''s a log' | head -c 50"
        );
    }

    #[test]
    fn a_prefix_goes_as_a_tail_only_when_both_sides_agree() {
        let (a, b, c) = (
            ListedFile::test_file("/a", 200, 0),
            ListedFile::test_file("/b", 200, 0),
            ListedFile::test_file("/c", 200, 0),
        );
        let g = |f| Tail {
            file: f,
            offset: 100,
            prefix: [0; 32],
            base: AppendBase::Existing,
        };
        let source = b"aaaa  -\nffff  -\ncccc  -\n";
        let target: HashMap<Vec<u8>, String> = [
            (b"/a".to_vec(), "aaaa".to_string()),
            (b"/b".to_vec(), "bbbb".to_string()),
        ]
        .into_iter()
        .collect();
        let kept = confirmed(vec![g(&a), g(&b), g(&c)], source, &target);
        let names: Vec<&[u8]> = kept.iter().map(|g| &g.file.path[..]).collect();
        assert_eq!(names, vec![&b"/a"[..]]);
    }
}
