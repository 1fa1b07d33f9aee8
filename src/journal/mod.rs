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

use crate::migration::Stage;

/// The meta key [`Journal::stage`] is kept under.
const STAGE_KEY: &str = "stage";

/// Bump when the schema changes; an old journal is refused, not guessed at.
pub const SCHEMA_VERSION: i64 = 2;

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
    /// Where a symlink points, as written on the target.
    pub link_target: Option<Vec<u8>>,
    /// BLAKE3 over the target's extended attributes (sorted name, value
    /// pairs); None when it has none.
    pub xattr_digest: Option<[u8; 32]>,
    /// Changed while read: the copy is not trusted until a later pass.
    pub dirty: bool,
}

/// A file conversion rewrote (its new digest) or removed (None).
pub type ConvertedFile = (Vec<u8>, Option<[u8; 32]>);

/// What one pass did, recorded when it finishes. (Files and bytes
/// written are counted as they are acknowledged, see [`Journal::record`].)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassStats {
    pub wire_bytes: u64,
    pub dirty: u64,
    pub warnings: u64,
    /// Entries removed on the target (deleted on the source).
    pub removed: u64,
    /// Entries whose metadata alone was updated.
    pub attrs: u64,
    /// Entries of the source the pass found unchanged.
    pub unchanged: u64,
}

/// A big file's partial copy on the target, as its last `part` ack said,
/// with the listing's metadata of the file when it was read: a resume
/// needs the source file unchanged since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub path: Vec<u8>,
    pub offset: u64,
    pub digest: [u8; 32],
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub inode: u64,
}

/// One pass as the journal remembers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PassRow {
    pub id: i64,
    /// "clone" or "sync".
    pub kind: String,
    /// Unix seconds.
    pub started: i64,
    /// None while running, or when the pass was interrupted.
    pub finished: Option<i64>,
    /// Entries acknowledged (content or metadata) and their content bytes
    /// (with what the checkpoints of a big file cut off midway hold: a
    /// resume does not send it again).
    pub files: u64,
    pub bytes: u64,
    pub wire_bytes: u64,
    pub dirty: u64,
    pub warnings: u64,
    pub removed: u64,
    pub attrs: u64,
    pub unchanged: u64,
}

/// The outcome of the last `verify`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyRow {
    pub at: i64,
    pub checked: u64,
    pub differences: u64,
}

/// The last rehearsal (`hotclone rehearse`) of a migration's clone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RehearsalRow {
    /// When it finished (Unix seconds).
    pub at: i64,
    pub passed: bool,
    /// The conversion it booted ([`Journal::conversion`]); a rehearsal
    /// proves nothing about a later one.
    pub conversion: Option<i64>,
    /// One line: what passed, or the first failure.
    pub summary: String,
    /// The Markdown report.
    pub report: PathBuf,
}

/// Journal meta keys of the conversion stamp and the last rehearsal.
const CONVERTED_AT: &str = "converted_at";
const REHEARSAL: &str = "rehearsal";

pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

/// Turns a SQLite error into one naming the journal and the operation.
fn wrap(path: &Path, what: &str) -> impl Fn(rusqlite::Error) -> JournalError {
    let (path, what) = (path.to_path_buf(), what.to_string());
    move |source| JournalError {
        path: path.clone(),
        what: what.clone(),
        source,
    }
}

impl Journal {
    fn err(&self, what: &str) -> impl Fn(rusqlite::Error) -> JournalError {
        wrap(&self.path, what)
    }

    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let wrap = |what: &str| wrap(path, what);
        let conn = Connection::open(path).map_err(wrap("opening"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS files (
                path BLOB PRIMARY KEY, kind TEXT NOT NULL, size INTEGER NOT NULL,
                mtime INTEGER NOT NULL, mtime_nsec INTEGER NOT NULL, ctime INTEGER NOT NULL,
                inode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL, mode INTEGER NOT NULL,
                digest BLOB, link_target BLOB, xattr_digest BLOB,
                dirty INTEGER NOT NULL, pass INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS converted (path BLOB PRIMARY KEY, digest BLOB);
             CREATE TABLE IF NOT EXISTS passes (
                id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
                started INTEGER NOT NULL, finished INTEGER,
                files INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
                wire_bytes INTEGER NOT NULL DEFAULT 0, dirty INTEGER NOT NULL DEFAULT 0,
                warnings INTEGER NOT NULL DEFAULT 0, removed INTEGER NOT NULL DEFAULT 0,
                attrs INTEGER NOT NULL DEFAULT 0, unchanged INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS partials (
                path BLOB PRIMARY KEY, offset INTEGER NOT NULL, digest BLOB NOT NULL,
                size INTEGER NOT NULL, mtime INTEGER NOT NULL, mtime_nsec INTEGER NOT NULL,
                ctime INTEGER NOT NULL, inode INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS verifies (
                at INTEGER NOT NULL, checked INTEGER NOT NULL, differences INTEGER NOT NULL);",
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

    /// Close a pass with its totals. A pass that never gets here was
    /// interrupted: what it wrote is recorded all the same.
    pub fn finish_pass(&mut self, pass: i64, stats: &PassStats) -> Result<(), JournalError> {
        self.conn
            .execute(
                "UPDATE passes SET finished = strftime('%s','now'), wire_bytes = ?2, dirty = ?3,
                 warnings = ?4, removed = ?5, attrs = ?6, unchanged = ?7 WHERE id = ?1",
                params![
                    pass,
                    stats.wire_bytes as i64,
                    stats.dirty as i64,
                    stats.warnings as i64,
                    stats.removed as i64,
                    stats.attrs as i64,
                    stats.unchanged as i64
                ],
            )
            .map_err(self.err("finishing a pass"))?;
        Ok(())
    }

    /// Record acknowledged files, and paths acknowledged as removed, in one
    /// transaction, adding them (and `content_bytes`, what of them was sent
    /// as content) to the pass's counts.
    pub fn record(
        &mut self,
        pass: i64,
        records: &[FileRecord],
        removed: &[Vec<u8>],
        content_bytes: u64,
    ) -> Result<(), JournalError> {
        let wrap = self.err("recording files");
        let tx = self.conn.transaction().map_err(&wrap)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO files (path, kind, size, mtime, mtime_nsec, ctime, inode, uid, gid, mode, digest, link_target, xattr_digest, dirty, pass)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(&wrap)?;
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
                    r.link_target,
                    r.xattr_digest.map(|d| d.to_vec()),
                    r.dirty,
                    pass
                ])
                .map_err(&wrap)?;
            }
            let mut gone = tx
                .prepare_cached("DELETE FROM files WHERE path = ?1")
                .map_err(&wrap)?;
            for p in removed {
                gone.execute([p]).map_err(&wrap)?;
            }
            // Whole now (or gone): no partial copy to resume.
            let mut whole = tx
                .prepare_cached("DELETE FROM partials WHERE path = ?1")
                .map_err(&wrap)?;
            for p in records.iter().map(|r| &r.path).chain(removed) {
                whole.execute([p]).map_err(&wrap)?;
            }
            tx.execute(
                "UPDATE passes SET files = files + ?2, bytes = bytes + ?3 WHERE id = ?1",
                params![pass, records.len() as i64, content_bytes as i64],
            )
            .map_err(&wrap)?;
        }
        tx.commit().map_err(&wrap)
    }

    /// Before content is sent: every path about to go is recorded dirty (a
    /// new path with the listing's metadata and no digest). Its
    /// acknowledgement replaces the record; if the pass is interrupted
    /// first, the next pass sends it again, or removes it from the target
    /// when the source deleted it meanwhile. So nothing the agent may have
    /// written is ever unknown to the journal.
    pub fn mark_in_flight(
        &mut self,
        pass: i64,
        files: &[&crate::stream::listing::ListedFile],
    ) -> Result<(), JournalError> {
        let wrap = self.err("recording files in flight");
        let tx = self.conn.transaction().map_err(&wrap)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO files (path, kind, size, mtime, mtime_nsec, ctime, inode, uid, gid, mode, digest, dirty, pass)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, 1, ?11)
                     ON CONFLICT(path) DO UPDATE SET dirty = 1",
                )
                .map_err(&wrap)?;
            for f in files {
                stmt.execute(params![
                    f.path,
                    f.kind.name(),
                    f.size as i64,
                    f.mtime,
                    f.mtime_nsec,
                    f.ctime,
                    f.inode as i64,
                    f.uid,
                    f.gid,
                    f.mode,
                    pass
                ])
                .map_err(&wrap)?;
            }
        }
        tx.commit().map_err(&wrap)
    }

    /// Record (or move on) the partial copies of big files being received.
    pub fn record_parts(&mut self, parts: &[Partial]) -> Result<(), JournalError> {
        let wrap = self.err("recording partial copies");
        let tx = self.conn.transaction().map_err(&wrap)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO partials (path, offset, digest, size, mtime, mtime_nsec, ctime, inode)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(&wrap)?;
            for p in parts {
                stmt.execute(params![
                    p.path,
                    p.offset as i64,
                    p.digest.to_vec(),
                    p.size as i64,
                    p.mtime,
                    p.mtime_nsec,
                    p.ctime,
                    p.inode as i64
                ])
                .map_err(&wrap)?;
            }
        }
        tx.commit().map_err(&wrap)
    }

    /// The partial copies an interrupted pass left on the target.
    pub fn partials(&self) -> Result<Vec<Partial>, JournalError> {
        let wrap = self.err("reading partial copies");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT path, offset, digest, size, mtime, mtime_nsec, ctime, inode FROM partials",
            )
            .map_err(&wrap)?;
        let rows = stmt
            .query_map([], |r| {
                let digest: Vec<u8> = r.get(2)?;
                Ok(Partial {
                    path: r.get(0)?,
                    offset: r.get::<_, i64>(1)? as u64,
                    digest: digest.try_into().unwrap_or([0; 32]),
                    size: r.get::<_, i64>(3)? as u64,
                    mtime: r.get(4)?,
                    mtime_nsec: r.get(5)?,
                    ctime: r.get(6)?,
                    inode: r.get::<_, i64>(7)? as u64,
                })
            })
            .map_err(&wrap)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(&wrap)
    }

    /// Forget partial copies (a pass that will not resume them; the
    /// agent's sweep removes the files).
    pub fn forget_partials(&mut self, paths: &[&[u8]]) -> Result<(), JournalError> {
        let wrap = self.err("forgetting partial copies");
        let tx = self.conn.transaction().map_err(&wrap)?;
        for p in paths {
            tx.execute("DELETE FROM partials WHERE path = ?1", [p])
                .map_err(&wrap)?;
        }
        tx.commit().map_err(&wrap)
    }

    /// Mark files dirty (changed while read): the next pass sends them again.
    pub fn mark_dirty(&mut self, paths: &[Vec<u8>]) -> Result<(), JournalError> {
        let wrap = self.err("marking files dirty");
        let tx = self.conn.transaction().map_err(&wrap)?;
        for p in paths {
            tx.execute("UPDATE files SET dirty = 1 WHERE path = ?1", [p])
                .map_err(&wrap)?;
        }
        tx.commit().map_err(&wrap)
    }

    pub fn files(&self) -> Result<Vec<FileRecord>, JournalError> {
        let mut files = Vec::new();
        self.each_file(|r| files.push(r))?;
        Ok(files)
    }

    /// Hand every record, in path order, to `each`, one at a time: a
    /// migration of a million files is never held whole (issue 16).
    pub fn each_file(&self, mut each: impl FnMut(FileRecord)) -> Result<(), JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, kind, size, mtime, mtime_nsec, ctime, inode, uid, gid, mode, digest, link_target, xattr_digest, dirty FROM files ORDER BY path")
            .map_err(self.err("listing files"))?;
        let digest = |d: Option<Vec<u8>>| d.and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok());
        let rows = stmt
            .query_map([], |r| {
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
                    digest: digest(r.get(10)?),
                    link_target: r.get(11)?,
                    xattr_digest: digest(r.get(12)?),
                    dirty: r.get(13)?,
                })
            })
            .map_err(self.err("listing files"))?;
        for row in rows {
            each(row.map_err(self.err("reading a file record"))?);
        }
        Ok(())
    }

    /// The migration's stage; [`Stage::New`] before a clone recorded one.
    pub fn stage(&self) -> Result<Stage, JournalError> {
        match self.meta(STAGE_KEY)? {
            None => Ok(Stage::New),
            Some(name) => Stage::parse(&name).ok_or_else(|| JournalError {
                path: self.path.clone(),
                what: "reading the migration's stage".into(),
                source: rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    format!("{name:?} is not a stage this hotclone knows").into(),
                ),
            }),
        }
    }

    pub fn set_stage(&mut self, stage: Stage) -> Result<(), JournalError> {
        self.set_meta(STAGE_KEY, stage.as_str())
    }

    /// A value kept about the migration.
    pub fn meta(&self, key: &str) -> Result<Option<String>, JournalError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.err("reading the migration's state"))
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), JournalError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                [key, value],
            )
            .map_err(self.err("recording the migration's state"))?;
        Ok(())
    }

    /// Every pass, oldest first.
    pub fn passes(&self) -> Result<Vec<PassRow>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, kind, started, finished, files, bytes, wire_bytes, dirty, warnings, removed, attrs, unchanged FROM passes ORDER BY id")
            .map_err(self.err("listing passes"))?;
        let rows = stmt
            .query_map([], |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
                Ok(PassRow {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    started: r.get(2)?,
                    finished: r.get(3)?,
                    files: n(4)?,
                    bytes: n(5)?,
                    wire_bytes: n(6)?,
                    dirty: n(7)?,
                    warnings: n(8)?,
                    removed: n(9)?,
                    attrs: n(10)?,
                    unchanged: n(11)?,
                })
            })
            .map_err(self.err("listing passes"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.err("reading a pass"))
    }

    pub fn record_verify(&mut self, checked: u64, differences: u64) -> Result<(), JournalError> {
        self.conn
            .execute(
                "INSERT INTO verifies (at, checked, differences) VALUES (strftime('%s','now'), ?1, ?2)",
                params![checked as i64, differences as i64],
            )
            .map_err(self.err("recording a verify"))?;
        Ok(())
    }

    /// Stamp a finished conversion of the target (clone's, or the one a
    /// sync triggered): Unix milliseconds, so two conversions within a
    /// second still differ. A rehearsal names the stamp it booted.
    pub fn record_conversion(&mut self) -> Result<i64, JournalError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let last = self.conversion()?.unwrap_or(0);
        let stamp = now.max(last + 1);
        self.set_meta(CONVERTED_AT, &stamp.to_string())?;
        Ok(stamp)
    }

    /// The stamp of the latest conversion, if the target was converted.
    pub fn conversion(&self) -> Result<Option<i64>, JournalError> {
        Ok(self.meta(CONVERTED_AT)?.and_then(|v| v.parse().ok()))
    }

    pub fn record_rehearsal(&mut self, row: &RehearsalRow) -> Result<(), JournalError> {
        let json = serde_json::to_string(row).unwrap_or_default();
        self.set_meta(REHEARSAL, &json)
    }

    /// The last rehearsal; `None` if there was none (or its record is
    /// unreadable, which counts as none: the gate then asks for one).
    pub fn last_rehearsal(&self) -> Result<Option<RehearsalRow>, JournalError> {
        Ok(self
            .meta(REHEARSAL)?
            .and_then(|v| serde_json::from_str(&v).ok()))
    }

    pub fn last_verify(&self) -> Result<Option<VerifyRow>, JournalError> {
        self.conn
            .query_row(
                "SELECT at, checked, differences FROM verifies ORDER BY rowid DESC LIMIT 1",
                [],
                |r| {
                    Ok(VerifyRow {
                        at: r.get(0)?,
                        checked: r.get::<_, i64>(1)? as u64,
                        differences: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()
            .map_err(self.err("reading the last verify"))
    }

    /// Write a consistent copy of the journal to `dest` (a temporary file
    /// beside it, fsynced, then renamed over it): a reader of `dest` sees
    /// the old copy or the new one, never half of one.
    pub fn copy_to(&self, dest: &Path) -> Result<(), JournalError> {
        let tmp = dest.with_extension("sqlite.tmp");
        let _ = std::fs::remove_file(&tmp);
        self.conn
            .execute("VACUUM INTO ?1", [tmp.to_string_lossy()])
            .map_err(self.err(&format!("copying the journal to {}", dest.display())))?;
        let io = |e: std::io::Error| JournalError {
            path: self.path.clone(),
            what: format!("copying the journal to {}: {e}", dest.display()),
            source: rusqlite::Error::InvalidQuery,
        };
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, dest).map_err(io)?;
        Ok(())
    }

    /// A consistent copy of the whole journal as bytes (for the copy kept
    /// on the target), made through a temporary file beside it.
    pub fn snapshot(&self) -> Result<Vec<u8>, JournalError> {
        let tmp = self
            .path
            .with_extension(format!("snapshot-{}", std::process::id()));
        self.copy_to(&tmp)?;
        let bytes = std::fs::read(&tmp).map_err(|e| JournalError {
            path: self.path.clone(),
            what: format!("reading the journal copy {}: {e}", tmp.display()),
            source: rusqlite::Error::InvalidQuery,
        });
        let _ = std::fs::remove_file(&tmp);
        bytes
    }

    /// Like [`Journal::snapshot`], but holding only the files written by
    /// pass `first` and the passes after it (to verify what they changed).
    pub fn snapshot_since_pass(&self, first: i64) -> Result<Vec<u8>, JournalError> {
        let tmp = self
            .path
            .with_extension(format!("pass-{first}-{}", std::process::id()));
        self.copy_to(&tmp)?;
        let filtered = Journal::open(&tmp).and_then(|j| {
            j.conn
                .execute("DELETE FROM files WHERE pass < ?1", [first])
                .map_err(j.err("keeping the later passes' files"))?;
            j.conn
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .map_err(j.err("checkpointing"))?;
            j.snapshot()
        });
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
        }
        filtered
    }

    /// Files the conversion rewrote (digest of the new content) or
    /// removed (no digest): they differ from the source on purpose.
    /// Also stamps the conversion ([`Journal::record_conversion`]).
    pub fn record_converted(&mut self, files: &[ConvertedFile]) -> Result<(), JournalError> {
        let wrap = self.err("recording converted files");
        let tx = self.conn.transaction().map_err(&wrap)?;
        for (p, d) in files {
            tx.execute(
                "INSERT OR REPLACE INTO converted (path, digest) VALUES (?1, ?2)",
                params![p, d.map(|d| d.to_vec())],
            )
            .map_err(&wrap)?;
        }
        tx.commit().map_err(&wrap)?;
        self.record_conversion().map(|_| ())
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
            link_target: None,
            xattr_digest: None,
            dirty,
        }
    }

    #[test]
    fn a_snapshot_since_a_pass_holds_only_what_it_and_later_passes_wrote() {
        let dir =
            std::env::temp_dir().join(format!("hotclone-journal-since-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.sqlite");
        let _ = std::fs::remove_file(&path);
        let mut j = Journal::open(&path).unwrap();
        let first = j.begin_pass("clone").unwrap();
        j.record(
            first,
            &[rec(b"/old", false), rec(b"/rewritten", false)],
            &[],
            10,
        )
        .unwrap();
        let second = j.begin_pass("sync").unwrap();
        j.record(
            second,
            &[rec(b"/rewritten", false), rec(b"/new", false)],
            &[],
            10,
        )
        .unwrap();
        let third = j.begin_pass("sync").unwrap();
        j.record(third, &[rec(b"/newer", false)], &[], 5).unwrap();
        let copy = dir.join("since.sqlite");
        std::fs::write(&copy, j.snapshot_since_pass(second).unwrap()).unwrap();
        let mut paths: Vec<Vec<u8>> = Journal::open(&copy)
            .unwrap()
            .files()
            .unwrap()
            .into_iter()
            .map(|r| r.path)
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            vec![b"/new".to_vec(), b"/newer".to_vec(), b"/rewritten".to_vec()]
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
            j.record(
                pass,
                &[
                    rec(b"/etc/a", false),
                    rec(b"/x\xff", true),
                    rec(b"/gone", false),
                ],
                &[],
                15,
            )
            .unwrap();
            j.record(pass, &[rec(b"/etc/a", true)], &[b"/gone".to_vec()], 5)
                .unwrap();
            j.finish_pass(
                pass,
                &PassStats {
                    removed: 1,
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
        let passes = j.passes().unwrap();
        assert_eq!(passes.len(), 1);
        assert_eq!(
            (passes[0].files, passes[0].bytes, passes[0].removed),
            (4, 20, 1)
        );
        assert!(passes[0].finished.is_some());
        // A consistent copy opens as a journal with the same records.
        let copy = dir.join("copy.sqlite");
        j.copy_to(&copy).unwrap();
        assert_eq!(Journal::open(&copy).unwrap().files().unwrap(), files);
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
