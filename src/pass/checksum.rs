//! `sync --checksum`: compare content, not just metadata. Every regular
//! file the journal holds as unchanged is hashed on the source with the
//! tool it has (md5sum, else sha1sum) and on the target with the same tool
//! (the rescue system's busybox, or this host's coreutils for an image).
//! Files whose digests differ are marked dirty, so the pass sends them.
//!
//! Names the tool has to escape (a backslash or newline in them) cannot be
//! matched back and count as different: they are sent. A file that
//! vanished in between is left to the listing.

use std::collections::HashMap;

use crate::journal::FileRecord;
use crate::stream::listing::{FileKind, ListedFile};

pub use crate::stream::hashing::command;

/// The hashing tool both sides use, from what the source has.
pub fn tool(hashers: &[String]) -> Option<&'static str> {
    ["md5sum", "sha1sum"]
        .into_iter()
        .find(|t| hashers.iter().any(|h| h == t))
}

/// The files to compare: regular files the journal holds clean and the
/// listing shows unchanged by size and mtime. Absolute paths.
pub fn candidates<'a>(listing: &'a [ListedFile], held: &[FileRecord]) -> Vec<&'a [u8]> {
    let held: HashMap<&[u8], &FileRecord> = held.iter().map(|r| (r.path.as_slice(), r)).collect();
    listing
        .iter()
        .filter(|f| f.kind == FileKind::File)
        .filter(|f| {
            held.get(f.path.as_slice()).is_some_and(|r| {
                !r.dirty && r.kind == "file" && r.size == f.size && r.mtime == f.mtime
            })
        })
        .map(|f| f.path.as_slice())
        .collect()
}

/// The stdin for [`command`]: relative paths, NUL-separated.
pub fn stdin(paths: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in paths {
        out.extend_from_slice(p.strip_prefix(b"/").unwrap_or(p));
        out.push(0);
    }
    out
}

/// `HASH  name` lines into absolute path -> hash. Escaped lines (leading
/// backslash) are left out, so they count as different.
pub fn parse(output: &[u8]) -> HashMap<Vec<u8>, String> {
    let mut out = HashMap::new();
    for line in output.split(|b| *b == b'\n') {
        if line.first() == Some(&b'\\') {
            continue;
        }
        let Some(sep) = line.windows(2).position(|w| w == b"  ") else {
            continue;
        };
        let (hash, name) = (&line[..sep], &line[sep + 2..]);
        let name = name.strip_prefix(b"*").unwrap_or(name);
        let mut abs = b"/".to_vec();
        abs.extend_from_slice(name);
        out.insert(abs, String::from_utf8_lossy(hash).into_owned());
    }
    out
}

/// The candidates whose digests differ (or are missing on the target).
pub fn differing(
    candidates: &[&[u8]],
    source: &HashMap<Vec<u8>, String>,
    target: &HashMap<Vec<u8>, String>,
) -> Vec<Vec<u8>> {
    candidates
        .iter()
        .filter(|p| match source.get(**p) {
            // Gone from the source since the listing: the next listing
            // sees it.
            None => false,
            Some(s) => target.get(**p) != Some(s),
        })
        .map(|p| p.to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_tool_decides() {
        let h = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(tool(&h(&["sha1sum", "md5sum"])), Some("md5sum"));
        assert_eq!(tool(&h(&["sha1sum"])), Some("sha1sum"));
        assert_eq!(tool(&h(&[])), None);
    }

    #[test]
    fn output_is_matched_by_name_and_escaped_names_differ() {
        let out = b"d41d8cd98f00b204e9800998ecf8427e  etc/empty\n\
                    0cc175b9c0f1b6a831c399e269772661  srv/a  b\n\
                    \\0cc175b9c0f1b6a831c399e269772661  srv/new\\nline\n";
        let m = parse(out);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[&b"/srv/a  b".to_vec()],
            "0cc175b9c0f1b6a831c399e269772661"
        );
        let cands: Vec<&[u8]> = vec![b"/etc/empty", b"/srv/a  b", b"/srv/gone"];
        let mut target = m.clone();
        target.insert(b"/etc/empty".to_vec(), "ffff".into());
        assert_eq!(differing(&cands, &m, &target), vec![b"/etc/empty".to_vec()]);
        assert_eq!(stdin(&cands), b"etc/empty\0srv/a  b\0srv/gone\0".to_vec());
    }
}
