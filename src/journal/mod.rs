//! The migration's journal: what the target holds, file by file, and the
//! history of passes. SQLite (WAL, synchronous=FULL), so a crash at any
//! moment leaves it consistent: a file is recorded only after the agent
//! acknowledged its durable write, in the same transaction as the rest of
//! its batch. Sync passes compare the source's listing with this record to
//! find what changed; `verify` re-hashes the target against it.
//!
//! On failure: every error names the journal file and the operation.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

/// Bump when the schema changes; an old journal is refused, not guessed at.
pub const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {what}: {source}")]
pub struct JournalError {
    pub path: PathBuf,
    pub what: String,
    #[source]
    pub source: rusqlite::Error,
}

/// One file as the target holds it, with the source metadata it was
/// copied from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Absolute path on the source (raw bytes).
    pub path: Vec<u8>,
    /// "file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo".
    pub kind: String,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub inode: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// BLAKE3 of the content, for regular files.
    pub digest: Option<[u8; 32]>,
    /// Changed while read: the copy is not trusted until a later pass.
    pub dirty: bool,
}

/// A file conversion rewrote (its new digest) or removed (None).
pub type ConvertedFile = (Vec<u8>, Option<[u8; 32]>);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassStats {
    pub files: u64,
    pub bytes: u64,
    pub wire_bytes: u64,
    pub dirty: u64,
    pub warnings: u64,
}

pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

impl Journal {
    fn err(&self, what: &str) -> impl Fn(rusqlite::Error) -> JournalError + '_ {
        let what = what.to_string();
        move |source| JournalError {
            path: self.path.clone(),
            what: what.clone(),
            source,
        }
    }

    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let wrap = |what: &str| {
            let what = what.to_string();
            move |source| JournalError {
                path: path.to_path_buf(),
                what: what.clone(),
                source,
            }
        };
        let conn = Connection::open(path).map_err(wrap("opening"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS files (
                path BLOB PRIMARY KEY, kind TEXT NOT NULL, size INTEGER NOT NULL,
                mtime INTEGER NOT NULL, mtime_nsec INTEGER NOT NULL, ctime INTEGER NOT NULL,
                inode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL, mode INTEGER NOT NULL,
                digest BLOB, dirty INTEGER NOT NULL, pass INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS converted (path BLOB PRIMARY KEY, digest BLOB);
             CREATE TABLE IF NOT EXISTS passes (
                id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
                started INTEGER NOT NULL, finished INTEGER,
                files INTEGER, bytes INTEGER, wire_bytes INTEGER, dirty INTEGER, warnings INTEGER);",
        )
        .map_err(wrap("creating the schema"))?;
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(wrap("reading the schema version"))?;
        match version.as_deref() {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(wrap("writing the schema version"))?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(JournalError {
                    path: path.to_path_buf(),
                    what: format!("schema version {v}, this hotclone reads {SCHEMA_VERSION}"),
                    source: rusqlite::Error::InvalidQuery,
                })
            }
        }
        Ok(Journal {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn begin_pass(&mut self, kind: &str) -> Result<i64, JournalError> {
        self.conn
            .execute(
                "INSERT INTO passes (kind, started) VALUES (?1, strftime('%s','now'))",
                [kind],
            )
            .map_err(self.err("starting a pass"))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_pass(&mut self, pass: i64, stats: &PassStats) -> Result<(), JournalError> {
        self.conn
            .execute(
                "UPDATE passes SET finished = strftime('%s','now'), files = ?2, bytes = ?3, wire_bytes = ?4, dirty = ?5, warnings = ?6 WHERE id = ?1",
                params![pass, stats.files as i64, stats.bytes as i64, stats.wire_bytes as i64, stats.dirty as i64, stats.warnings as i64],
            )
            .map_err(self.err("finishing a pass"))?;
        Ok(())
    }

    /// Record acknowledged files, all in one transaction.
    pub fn record(&mut self, pass: i64, records: &[FileRecord]) -> Result<(), JournalError> {
        let path = self.path.clone();
        let wrap = |source| JournalError {
            path: path.clone(),
            what: "recording files".into(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO files (path, kind, size, mtime, mtime_nsec, ctime, inode, uid, gid, mode, digest, dirty, pass)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )
                .map_err(wrap)?;
            for r in records {
                stmt.execute(params![
                    r.path,
                    r.kind,
                    r.size as i64,
                    r.mtime,
                    r.mtime_nsec,
                    r.ctime,
                    r.inode as i64,
                    r.uid,
                    r.gid,
                    r.mode,
                    r.digest.map(|d| d.to_vec()),
                    r.dirty,
                    pass
                ])
                .map_err(wrap)?;
            }
        }
        tx.commit().map_err(wrap)
    }

    pub fn files(&self) -> Result<Vec<FileRecord>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, kind, size, mtime, mtime_nsec, ctime, inode, uid, gid, mode, digest, dirty FROM files ORDER BY path")
            .map_err(self.err("listing files"))?;
        let rows = stmt
            .query_map([], |r| {
                let digest: Option<Vec<u8>> = r.get(10)?;
                Ok(FileRecord {
                    path: r.get(0)?,
                    kind: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    mtime: r.get(3)?,
                    mtime_nsec: r.get(4)?,
                    ctime: r.get(5)?,
                    inode: r.get::<_, i64>(6)? as u64,
                    uid: r.get(7)?,
                    gid: r.get(8)?,
                    mode: r.get(9)?,
                    digest: digest.and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok()),
                    dirty: r.get(11)?,
                })
            })
            .map_err(self.err("listing files"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.err("reading a file record"))
    }

    /// Files the conversion rewrote (digest of the new content) or
    /// removed (no digest): they differ from the source on purpose.
    pub fn record_converted(&mut self, files: &[ConvertedFile]) -> Result<(), JournalError> {
        let path = self.path.clone();
        let wrap = |source| JournalError {
            path: path.clone(),
            what: "recording converted files".into(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        for (p, d) in files {
            tx.execute(
                "INSERT OR REPLACE INTO converted (path, digest) VALUES (?1, ?2)",
                params![p, d.map(|d| d.to_vec())],
            )
            .map_err(wrap)?;
        }
        tx.commit().map_err(wrap)
    }

    pub fn converted(&self) -> Result<Vec<ConvertedFile>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, digest FROM converted ORDER BY path")
            .map_err(self.err("listing converted files"))?;
        let rows = stmt
            .query_map([], |r| {
                let d: Option<Vec<u8>> = r.get(1)?;
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    d.and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok()),
                ))
            })
            .map_err(self.err("listing converted files"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.err("reading a converted file"))
    }

    /// (files, dirty files) held.
    pub fn counts(&self) -> Result<(u64, u64), JournalError> {
        self.conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(dirty), 0) FROM files",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(self.err("counting files"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &[u8], dirty: bool) -> FileRecord {
        FileRecord {
            path: path.to_vec(),
            kind: "file".into(),
            size: 5,
            mtime: 1_700_000_000,
            mtime_nsec: 7,
            ctime: 1_700_000_001,
            inode: 42,
            uid: 0,
            gid: 0,
            mode: 0o644,
            digest: Some(*blake3::hash(b"hello").as_bytes()),
            dirty,
        }
    }

    #[test]
    fn records_survive_reopening_and_replace_by_path() {
        let dir = std::env::temp_dir().join(format!("hotclone-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.sqlite");
        let _ = std::fs::remove_file(&path);
        {
            let mut j = Journal::open(&path).unwrap();
            let pass = j.begin_pass("clone").unwrap();
            j.record(pass, &[rec(b"/etc/a", false), rec(b"/x\xff", true)])
                .unwrap();
            j.record(pass, &[rec(b"/etc/a", true)]).unwrap();
            j.finish_pass(
                pass,
                &PassStats {
                    files: 2,
                    ..Default::default()
                },
            )
            .unwrap();
        }
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.counts().unwrap(), (2, 2));
        let files = j.files().unwrap();
        assert_eq!(files[0], rec(b"/etc/a", true));
        assert_eq!(files[1].path, b"/x\xff");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journal_from_another_schema_is_refused() {
        let dir = std::env::temp_dir().join(format!("hotclone-journal-v-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.sqlite");
        let _ = std::fs::remove_file(&path);
        drop(Journal::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE meta SET value = '99' WHERE key = 'schema'", [])
            .unwrap();
        let err = Journal::open(&path).err().unwrap().to_string();
        assert!(err.contains("schema version 99"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
