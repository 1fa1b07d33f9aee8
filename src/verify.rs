//! `verify`: does the target hold what the journal says, and does the
//! journal match the source as it is now? Both checks only read.
//!
//! - [`check_tree`] re-hashes every regular file on the target and checks
//!   type, mode, owner and mtime of every entry against the journal.
//! - [`compare_with_source`] compares a fresh listing of the source with
//!   the journal: new, missing and changed files.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::journal::{ConvertedFile, FileRecord};
use crate::stream::listing::{FileKind, ListedFile};

/// One way the target or the source differs from the record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Difference {
    pub path: String,
    pub what: String,
}

fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "file"
    }
}

fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut f, &mut hasher)?;
    Ok(*hasher.finalize().as_bytes())
}

fn target_path(root: &Path, path: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    root.join(std::ffi::OsStr::from_bytes(
        path.strip_prefix(b"/").unwrap_or(path),
    ))
}

/// Files of the journal at `journal` that differ on the target after
/// conversion: their new digest, or None where conversion removed them.
/// Found by metadata (size, mtime), so it is cheap; run right after
/// conversion. The records are read one at a time, not loaded.
pub fn converted_files(
    root: &Path,
    journal: &Path,
) -> Result<Vec<ConvertedFile>, crate::journal::JournalError> {
    let mut out = Vec::new();
    crate::journal::Journal::open(journal)?.each_file(|r| out.extend(converted_file(root, &r)))?;
    Ok(out)
}

/// Whether conversion changed the file of record `r` ([`converted_files`]).
fn converted_file(root: &Path, r: &FileRecord) -> Option<ConvertedFile> {
    if r.kind != "file" {
        return None;
    }
    let path = target_path(root, &r.path);
    match std::fs::symlink_metadata(&path) {
        Err(_) => Some((r.path.clone(), None)),
        Ok(m) if m.mtime() != r.mtime || m.len() != r.size => {
            Some((r.path.clone(), hash_file(&path).ok()))
        }
        Ok(_) => None,
    }
}

/// A regular file read with another size or mtime (`read`, from the tar
/// header that was sent) than the listing saw: the source changed it
/// between listing and reading, and tar (busybox tar in particular) did
/// not always say so. It is marked dirty; the next pass sends it again.
pub fn changed_since_listing(
    listed: &ListedFile,
    read: (u64, i64),
) -> Option<crate::progress::FileWarning> {
    let (size, mtime) = read;
    (listed.kind == FileKind::File && (size != listed.size || mtime != listed.mtime)).then(|| {
        crate::progress::FileWarning::Dirty {
            path: std::path::PathBuf::from(shown(&listed.path)),
            reason: format!(
                "size/mtime {size}/{mtime} when read, {}/{} when listed",
                listed.size, listed.mtime
            ),
        }
    })
}

/// Check the target tree at `root` against the journal's records. Files in
/// `converted` are compared with the content conversion gave them.
pub fn check_tree(
    root: &Path,
    records: &[FileRecord],
    converted: &[ConvertedFile],
) -> Vec<Difference> {
    let converted: std::collections::HashMap<&[u8], Option<[u8; 32]>> =
        converted.iter().map(|(p, d)| (p.as_slice(), *d)).collect();
    let mut diffs = Vec::new();
    for r in records {
        let path = target_path(root, &r.path);
        let mut differ = |what: String| {
            diffs.push(Difference {
                path: shown(&r.path),
                what,
            })
        };
        if let Some(expected) = converted.get(r.path.as_slice()) {
            match (expected, hash_file(&path)) {
                (None, Err(_)) => {}
                (None, Ok(_)) => {
                    differ("conversion removed it, but it is back on the target".into())
                }
                (Some(want), Ok(got)) if *want == got => {}
                (Some(_), Ok(_)) => differ("differs from the content conversion gave it".into()),
                (Some(_), Err(e)) => {
                    differ(format!("converted file unreadable on the target: {e}"))
                }
            }
            continue;
        }
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                differ(format!("missing on the target ({e})"));
                continue;
            }
        };
        let kind = kind_of(&meta);
        if kind != r.kind && !(r.kind == "hardlink" && kind == "file") {
            differ(format!(
                "is a {kind} on the target, the record says {}",
                r.kind
            ));
            continue;
        }
        if (meta.uid(), meta.gid()) != (r.uid, r.gid) {
            differ(format!(
                "owner {}:{} on the target, {}:{} recorded",
                meta.uid(),
                meta.gid(),
                r.uid,
                r.gid
            ));
        }
        if kind != "symlink" && meta.permissions().mode() & 0o7777 != r.mode {
            differ(format!(
                "mode {:o} on the target, {:o} recorded",
                meta.permissions().mode() & 0o7777,
                r.mode
            ));
        }
        if kind != "dir" && meta.mtime() != r.mtime {
            differ(format!(
                "mtime {} on the target, {} recorded",
                meta.mtime(),
                r.mtime
            ));
        }
        if let (Some(want), "file") = (r.digest, kind) {
            match hash_file(&path) {
                Ok(got) if got == want => {}
                Ok(_) => differ("content differs from the recorded BLAKE3 digest".into()),
                Err(e) => differ(format!("unreadable on the target: {e}")),
            }
        }
    }
    diffs
}

/// Compare a fresh source listing (already filtered by the plan's
/// excludes) with the journal.
pub fn compare_with_source(records: &[FileRecord], listing: &[ListedFile]) -> Vec<Difference> {
    use std::collections::HashMap;
    let recorded: HashMap<&[u8], &FileRecord> =
        records.iter().map(|r| (r.path.as_slice(), r)).collect();
    let listed: HashMap<&[u8], &ListedFile> =
        listing.iter().map(|l| (l.path.as_slice(), l)).collect();
    let mut diffs = Vec::new();
    for l in listing {
        if l.path == b"/" {
            continue;
        }
        match recorded.get(l.path.as_slice()) {
            None => diffs.push(Difference {
                path: shown(&l.path),
                what: "on the source, not on the target".into(),
            }),
            Some(r) => {
                let kind = l.kind.name();
                let mut changed = Vec::new();
                if kind != r.kind && r.kind != "hardlink" {
                    changed.push(format!("type {kind} (was {})", r.kind));
                }
                if l.kind == FileKind::File && l.size != r.size {
                    changed.push(format!("size {} (was {})", l.size, r.size));
                }
                if l.kind != FileKind::Dir && l.mtime != r.mtime {
                    changed.push(format!("mtime {} (was {})", l.mtime, r.mtime));
                }
                if l.mode != r.mode || l.uid != r.uid || l.gid != r.gid {
                    changed.push(format!(
                        "mode/owner {:o} {}:{} (was {:o} {}:{})",
                        l.mode, l.uid, l.gid, r.mode, r.uid, r.gid
                    ));
                }
                if r.dirty {
                    changed.push("changed while it was copied (dirty)".into());
                }
                if !changed.is_empty() {
                    diffs.push(Difference {
                        path: shown(&l.path),
                        what: format!("changed on the source: {}", changed.join(", ")),
                    });
                }
            }
        }
    }
    for r in records {
        if !listed.contains_key(r.path.as_slice()) {
            diffs.push(Difference {
                path: shown(&r.path),
                what: "on the target, gone from the source".into(),
            });
        }
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, kind: &str, content: Option<&[u8]>) -> FileRecord {
        FileRecord {
            path: path.as_bytes().to_vec(),
            kind: kind.into(),
            size: content.map(|c| c.len() as u64).unwrap_or(0),
            mtime: 1_600_000_000,
            mtime_nsec: 0,
            ctime: 0,
            inode: 1,
            uid: 0,
            gid: 0,
            mode: 0o644,
            digest: content.map(|c| *blake3::hash(c).as_bytes()),
            link_target: None,
            xattr_digest: None,
            dirty: false,
        }
    }

    #[test]
    fn tree_check_finds_changed_content_mode_and_missing_files() {
        let root = std::env::temp_dir().join(format!("hotclone-verify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        for (name, body) in [
            ("etc/good", b"same".as_slice()),
            ("etc/bad", b"tampered".as_slice()),
        ] {
            let p = root.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(1_600_000_000, 0))
                .unwrap();
        }
        let records = vec![
            rec("/etc/good", "file", Some(b"same")),
            rec("/etc/bad", "file", Some(b"original")),
            rec("/etc/gone", "file", Some(b"x")),
        ];
        let diffs = check_tree(&root, &records, &[]);
        // A file conversion rewrote (so its mtime moved) is compared with
        // its converted content.
        filetime::set_file_mtime(
            root.join("etc/bad"),
            filetime::FileTime::from_unix_time(1_700_000_000, 0),
        )
        .unwrap();
        let converted: Vec<ConvertedFile> = [rec("/etc/bad", "file", Some(b"original"))]
            .iter()
            .filter_map(|r| converted_file(&root, r))
            .collect();
        assert_eq!(
            converted,
            vec![(
                b"/etc/bad".to_vec(),
                Some(*blake3::hash(b"tampered").as_bytes())
            )]
        );
        assert!(check_tree(&root, &records[..2], &converted).is_empty());
        std::fs::write(root.join("etc/bad"), b"changed after conversion").unwrap();
        assert_eq!(
            check_tree(&root, &records[..2], &converted)[0].what,
            "differs from the content conversion gave it"
        );
        let paths: Vec<&str> = diffs.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, vec!["/etc/bad", "/etc/gone"], "{diffs:?}");
        assert!(diffs[0].what.contains("BLAKE3"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_file_read_with_other_size_or_mtime_than_listed_is_dirty() {
        let same = ListedFile::test_file("/same", 5, 1_600_000_000);
        let grew = ListedFile::test_file("/grew", 5, 1_600_000_000);
        let warnings: Vec<_> = [(&same, (5, 1_600_000_000)), (&grew, (6, 1_600_000_000))]
            .into_iter()
            .filter_map(|(f, read)| changed_since_listing(f, read))
            .collect();
        assert!(
            matches!(&warnings[..], [crate::progress::FileWarning::Dirty { path, .. }] if path == std::path::Path::new("/grew"))
        );
        assert!(changed_since_listing(&same, (5, 1_600_000_001)).is_some());
    }

    #[test]
    fn source_comparison_names_new_gone_and_changed() {
        let records = vec![
            rec("/a", "file", Some(b"12345")),
            rec("/b", "file", Some(b"x")),
        ];
        let listing = vec![
            ListedFile::test_file("/a", 6, 1_600_000_001),
            ListedFile::test_file("/c", 1, 1),
        ];
        let diffs = compare_with_source(&records, &listing);
        assert_eq!(diffs.len(), 3, "{diffs:?}");
        assert!(
            diffs[0].path == "/a"
                && diffs[0].what.contains("size 6 (was 5)")
                && diffs[0].what.contains("mtime")
        );
        assert_eq!(
            (diffs[1].path.as_str(), diffs[1].what.as_str()),
            ("/c", "on the source, not on the target")
        );
        assert_eq!(
            (diffs[2].path.as_str(), diffs[2].what.as_str()),
            ("/b", "on the target, gone from the source")
        );
    }
}
