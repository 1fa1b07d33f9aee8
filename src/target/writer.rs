//! Writes entries under a root with full fidelity: content (sparse),
//! numeric owner, mode (suid/sgid/sticky kept: mode after chown), xattrs
//! (ACLs and SELinux labels included), mtimes, device nodes and FIFOs.
//!
//! Paths come from the network and are not trusted: absolute paths, `..`
//! and parents that are symlinks (which could lead out of the root) are
//! refused. Parents are checked with `symlink_metadata`, never followed.

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;

use crate::stream::wire::{is_zero, EntryKind, EntryMeta, HOLE_BLOCK};

/// Why one entry was not written. The message names the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError(pub String);

impl std::fmt::Display for EntryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn io_err(what: &str, path: &Path, e: io::Error) -> EntryError {
    EntryError(format!("{what} {}: {e}", path.display()))
}

/// Where an entry goes.
struct Resolved {
    full: PathBuf,
    parent: PathBuf,
    name: OsString,
}

/// The writing side of the agent for one root.
pub struct Writer {
    root: PathBuf,
    /// Directories whose entries changed: fsynced by [`Writer::sync_dirs`].
    dirty_dirs: BTreeSet<PathBuf>,
    /// Directory mtimes, set last (writing children changes them).
    dir_times: Vec<(usize, PathBuf, FileTime)>,
}

impl Writer {
    pub fn new(root: &Path) -> io::Result<Writer> {
        let m = fs::metadata(root)?;
        if !m.is_dir() {
            return Err(io::Error::other("not a directory"));
        }
        Ok(Writer {
            root: root.to_path_buf(),
            dirty_dirs: BTreeSet::new(),
            dir_times: Vec::new(),
        })
    }

    /// Splits and checks a relative path; creates missing parents (0755,
    /// root-owned; their own entry, if sent, fixes them).
    fn resolve(&mut self, path: &[u8], create_parents: bool) -> Result<Resolved, EntryError> {
        if path.first() == Some(&b'/') {
            return Err(EntryError(format!(
                "{}: absolute path refused (paths must be relative to the root)",
                show(path)
            )));
        }
        let parts: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        if parts.iter().any(|c| *c == b"..") {
            return Err(EntryError(format!(
                "{}: a '..' component is refused (it could leave the root)",
                show(path)
            )));
        }
        let Some((name, parents)) = parts.split_last() else {
            return Ok(Resolved {
                full: self.root.clone(),
                parent: self.root.clone(),
                name: OsString::new(),
            });
        };
        let mut cur = self.root.clone();
        for c in parents {
            cur.push(OsStr::from_bytes(c));
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(EntryError(format!(
                        "{}: its parent {} is a symlink on the target; refused, it could lead out of the root",
                        show(path),
                        cur.display()
                    )))
                }
                Ok(_) => {
                    return Err(EntryError(format!("{}: its parent {} is not a directory", show(path), cur.display())))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create_parents => {
                    fs::create_dir(&cur).map_err(|e| io_err("cannot create the parent directory", &cur, e))?;
                    fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                        .map_err(|e| io_err("cannot chmod", &cur, e))?;
                    if let Some(p) = cur.parent() {
                        self.dirty_dirs.insert(p.to_path_buf());
                    }
                }
                Err(e) => return Err(io_err("cannot look at the parent", &cur, e)),
            }
        }
        let parent = cur.clone();
        let name = OsStr::from_bytes(name).to_os_string();
        cur.push(&name);
        Ok(Resolved {
            full: cur,
            parent,
            name,
        })
    }

    /// Removes whatever is at `full` (without following symlinks).
    fn clear(full: &Path) -> Result<(), EntryError> {
        match fs::symlink_metadata(full) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(full)
                .map_err(|e| io_err("cannot remove the old directory", full, e)),
            Ok(_) => {
                fs::remove_file(full).map_err(|e| io_err("cannot remove the old entry", full, e))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot look at", full, e)),
        }
    }

    /// Starts a regular file: a temp file beside the target.
    pub fn begin_file(&mut self, meta: &EntryMeta) -> Result<FileSink, EntryError> {
        let r = self.resolve(&meta.path, true)?;
        if r.name.is_empty() {
            return Err(EntryError("the root itself cannot be a file".into()));
        }
        let tmp = r.parent.join(temp_name(r.name.as_bytes()));
        let _ = fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| io_err("cannot create the temporary file", &tmp, e))?;
        Ok(FileSink {
            file: Some(file),
            tmp,
            full: r.full,
            parent: r.parent,
            meta: meta.clone(),
            hasher: blake3::Hasher::new(),
            pos: 0,
            placed: false,
        })
    }

    /// Finishes a file whose content arrived: checks the digest, applies
    /// metadata, fsyncs and renames into place. Returns warnings (xattrs
    /// that could not be set). On error the temp file is gone.
    pub fn finish_file(
        &mut self,
        mut sink: FileSink,
        expected: &[u8; 32],
    ) -> Result<Vec<String>, EntryError> {
        let result = sink.finish(expected);
        match result {
            Ok(warnings) => {
                if let Ok(m) = fs::symlink_metadata(&sink.full) {
                    if m.is_dir() {
                        if let Err(e) = Self::clear(&sink.full) {
                            sink.discard();
                            return Err(e);
                        }
                    }
                }
                if let Err(e) = fs::rename(&sink.tmp, &sink.full) {
                    sink.discard();
                    return Err(io_err("cannot rename into place", &sink.full, e));
                }
                sink.placed = true;
                self.dirty_dirs.insert(sink.parent.clone());
                Ok(warnings)
            }
            Err(e) => {
                sink.discard();
                Err(e)
            }
        }
    }

    /// Writes anything but a regular file.
    pub fn entry(&mut self, meta: &EntryMeta) -> Result<Vec<String>, EntryError> {
        let r = self.resolve(&meta.path, true)?;
        let full = &r.full;
        if r.name.is_empty() && meta.kind != EntryKind::Dir {
            return Err(EntryError("the root itself can only be a directory".into()));
        }
        let mut warnings = Vec::new();
        match &meta.kind {
            EntryKind::File => {
                return Err(EntryError(format!(
                    "{}: a file without content",
                    show(&meta.path)
                )))
            }
            EntryKind::Dir => {
                match fs::symlink_metadata(full) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        Self::clear(full)?;
                        fs::create_dir(full)
                            .map_err(|e| io_err("cannot create the directory", full, e))?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir(full)
                            .map_err(|e| io_err("cannot create the directory", full, e))?;
                    }
                    Err(e) => return Err(io_err("cannot look at", full, e)),
                }
                owner_mode(full, meta)?;
                set_xattrs(full, None, meta, &mut warnings);
                let depth = meta
                    .path
                    .split(|&b| b == b'/')
                    .filter(|c| !c.is_empty() && *c != b".")
                    .count();
                self.dir_times.push((depth, full.clone(), mtime(meta)));
                self.dirty_dirs.insert(full.clone());
            }
            EntryKind::Symlink { target } => {
                Self::clear(full)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(target), full)
                    .map_err(|e| io_err("cannot create the symlink", full, e))?;
                std::os::unix::fs::lchown(full, Some(meta.uid), Some(meta.gid))
                    .map_err(|e| io_err("cannot set the owner of", full, e))?;
                set_xattrs(full, None, meta, &mut warnings);
                filetime::set_symlink_file_times(full, mtime(meta), mtime(meta))
                    .map_err(|e| io_err("cannot set the times of", full, e))?;
            }
            EntryKind::Hardlink { target } => {
                let t = self.resolve(target, false).map_err(|e| {
                    EntryError(format!("{}: hard link target: {e}", show(&meta.path)))
                })?;
                match fs::symlink_metadata(&t.full) {
                    Ok(m) if !m.is_dir() => {}
                    Ok(_) => return Err(EntryError(format!("{}: hard link target {} is a directory", show(&meta.path), show(target)))),
                    Err(e) => {
                        return Err(EntryError(format!(
                            "{}: hard link target {} is not on the target ({e}); it was not sent or not written",
                            show(&meta.path),
                            show(target)
                        )))
                    }
                }
                if t.full == *full {
                    return Ok(warnings);
                }
                Self::clear(full)?;
                fs::hard_link(&t.full, full)
                    .map_err(|e| io_err("cannot create the hard link", full, e))?;
            }
            EntryKind::CharDev { major, minor } | EntryKind::BlockDev { major, minor } => {
                let kind = if matches!(meta.kind, EntryKind::CharDev { .. }) {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                Self::clear(full)?;
                let c = cstring(full)?;
                let dev = libc::makedev(*major, *minor);
                // SAFETY: c is a valid NUL-terminated path.
                if unsafe {
                    libc::mknod(c.as_ptr(), kind | (meta.mode & 0o777) as libc::mode_t, dev)
                } != 0
                {
                    return Err(io_err(
                        "cannot create the device node",
                        full,
                        io::Error::last_os_error(),
                    ));
                }
                node_finish(full, meta, &mut warnings)?;
            }
            EntryKind::Fifo => {
                Self::clear(full)?;
                let c = cstring(full)?;
                // SAFETY: c is a valid NUL-terminated path.
                if unsafe { libc::mkfifo(c.as_ptr(), (meta.mode & 0o777) as libc::mode_t) } != 0 {
                    return Err(io_err(
                        "cannot create the FIFO",
                        full,
                        io::Error::last_os_error(),
                    ));
                }
                node_finish(full, meta, &mut warnings)?;
            }
        }
        self.dirty_dirs.insert(r.parent);
        Ok(warnings)
    }

    /// fsyncs every directory whose entries changed since the last call.
    pub fn sync_dirs(&mut self) -> Result<(), EntryError> {
        for dir in std::mem::take(&mut self.dirty_dirs) {
            let f = match File::open(&dir) {
                Ok(f) => f,
                // Replaced by a later entry (a dir that became a file).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("cannot open for fsync", &dir, e)),
            };
            f.sync_all().map_err(|e| io_err("cannot fsync", &dir, e))?;
        }
        Ok(())
    }

    /// Whether any directory waits for its fsync.
    pub fn has_dirty_dirs(&self) -> bool {
        !self.dirty_dirs.is_empty()
    }

    /// Sets directory mtimes, deepest first, then fsyncs them. Returns one
    /// message per directory that could not be fixed.
    pub fn finish(&mut self) -> Vec<EntryError> {
        let mut errors = Vec::new();
        let mut times = std::mem::take(&mut self.dir_times);
        times.sort_by_key(|t| std::cmp::Reverse(t.0));
        for (_, dir, t) in &times {
            match fs::symlink_metadata(dir) {
                Ok(m) if m.is_dir() => {}
                _ => continue,
            }
            if let Err(e) = filetime::set_symlink_file_times(dir, *t, *t) {
                errors.push(io_err("cannot set the mtime of the directory", dir, e));
            }
            self.dirty_dirs.insert(dir.clone());
        }
        if let Err(e) = self.sync_dirs() {
            errors.push(e);
        }
        errors
    }
}

/// `.<name>.hotclone-tmp`, or a hashed short form when that would be
/// longer than NAME_MAX (255).
fn temp_name(name: &[u8]) -> OsString {
    let mut t = Vec::with_capacity(name.len() + 14);
    if name.len() + 14 <= 255 {
        t.push(b'.');
        t.extend_from_slice(name);
        t.extend_from_slice(b".hotclone-tmp");
    } else {
        t.extend_from_slice(b".hotclone-tmp-");
        t.extend_from_slice(blake3::hash(name).to_hex()[..32].as_bytes());
    }
    OsString::from_vec(t)
}

fn cstring(p: &Path) -> Result<CString, EntryError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| EntryError(format!("{}: a NUL byte in the path", p.display())))
}

fn mtime(meta: &EntryMeta) -> FileTime {
    FileTime::from_unix_time(meta.mtime, meta.mtime_nsec.min(999_999_999))
}

/// chown then chmod (chown clears suid/sgid, so the mode comes after).
/// Only for paths known not to be symlinks.
fn owner_mode(full: &Path, meta: &EntryMeta) -> Result<(), EntryError> {
    std::os::unix::fs::lchown(full, Some(meta.uid), Some(meta.gid))
        .map_err(|e| io_err("cannot set the owner of", full, e))?;
    fs::set_permissions(full, fs::Permissions::from_mode(meta.mode & 0o7777))
        .map_err(|e| io_err("cannot chmod", full, e))
}

fn node_finish(
    full: &Path,
    meta: &EntryMeta,
    warnings: &mut Vec<String>,
) -> Result<(), EntryError> {
    owner_mode(full, meta)?;
    set_xattrs(full, None, meta, warnings);
    filetime::set_symlink_file_times(full, mtime(meta), mtime(meta))
        .map_err(|e| io_err("cannot set the times of", full, e))
}

/// Sets every xattr (on the open file when given, else on the path without
/// following symlinks). Failures become warnings.
fn set_xattrs(full: &Path, file: Option<&File>, meta: &EntryMeta, warnings: &mut Vec<String>) {
    use xattr::FileExt as _;
    for (name, value) in &meta.xattrs {
        let n = OsStr::from_bytes(name);
        let r = match file {
            Some(f) => f.set_xattr(n, value),
            None => xattr::set(full, n, value),
        };
        if let Err(e) = r {
            warnings.push(format!(
                "{}: xattr {} not kept: {e} (ignored; the target filesystem may not support it)",
                show(&meta.path),
                show(name)
            ));
        }
    }
}

/// A regular file being received.
pub struct FileSink {
    file: Option<File>,
    tmp: PathBuf,
    full: PathBuf,
    parent: PathBuf,
    meta: EntryMeta,
    hasher: blake3::Hasher,
    pos: u64,
    /// Renamed into place: nothing to clean up.
    placed: bool,
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if !self.placed {
            self.discard();
        }
    }
}

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl FileSink {
    fn advance(&mut self, n: u64) -> Result<u64, EntryError> {
        let start = self.pos;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.meta.size)
            .ok_or_else(|| {
                EntryError(format!(
                    "{}: more data than its size of {} bytes",
                    show(&self.meta.path),
                    self.meta.size
                ))
            })?;
        self.pos = end;
        Ok(start)
    }

    /// Content bytes at the current offset. All-zero blocks (aligned to
    /// the file offset) are skipped, leaving holes.
    pub fn data(&mut self, bytes: &[u8]) -> Result<(), EntryError> {
        let start = self.advance(bytes.len() as u64)?;
        self.hasher.update(bytes);
        let file = self.file.as_ref().expect("open until finish");
        let mut run: Option<usize> = None;
        let mut i = 0;
        let write = |from: usize, to: usize| {
            file.write_all_at(&bytes[from..to], start + from as u64)
                .map_err(|e| io_err("cannot write", &self.tmp, e))
        };
        while i < bytes.len() {
            let off = start + i as u64;
            let end = (i + HOLE_BLOCK - (off % HOLE_BLOCK as u64) as usize).min(bytes.len());
            if is_zero(&bytes[i..end]) {
                if let Some(r) = run.take() {
                    write(r, i)?;
                }
            } else if run.is_none() {
                run = Some(i);
            }
            i = end;
        }
        if let Some(r) = run {
            write(r, bytes.len())?;
        }
        Ok(())
    }

    /// `len` zero bytes: a hole.
    pub fn hole(&mut self, len: u64) -> Result<(), EntryError> {
        self.advance(len)?;
        let mut left = len;
        while left > 0 {
            let n = left.min(ZEROS.len() as u64) as usize;
            self.hasher.update(&ZEROS[..n]);
            left -= n as u64;
        }
        Ok(())
    }

    fn finish(&mut self, expected: &[u8; 32]) -> Result<Vec<String>, EntryError> {
        let path = show(&self.meta.path);
        if self.pos != self.meta.size {
            return Err(EntryError(format!(
                "{path}: got {} bytes, its entry says {}",
                self.pos, self.meta.size
            )));
        }
        let digest = self.hasher.finalize();
        if digest.as_bytes() != expected {
            return Err(EntryError(format!(
                "{path}: BLAKE3 mismatch (received {}, sender computed {}); the data was damaged in transit, send it again",
                digest.to_hex(),
                blake3::Hash::from_bytes(*expected).to_hex()
            )));
        }
        let file = self.file.as_ref().expect("open until finish");
        let tmp = &self.tmp;
        file.set_len(self.meta.size)
            .map_err(|e| io_err("cannot set the size of", tmp, e))?;
        std::os::unix::fs::fchown(file, Some(self.meta.uid), Some(self.meta.gid))
            .map_err(|e| io_err("cannot set the owner of", tmp, e))?;
        file.set_permissions(fs::Permissions::from_mode(self.meta.mode & 0o7777))
            .map_err(|e| io_err("cannot chmod", tmp, e))?;
        let mut warnings = Vec::new();
        set_xattrs(tmp, Some(file), &self.meta, &mut warnings);
        let t = mtime(&self.meta);
        filetime::set_file_handle_times(file, Some(t), Some(t))
            .map_err(|e| io_err("cannot set the times of", tmp, e))?;
        file.sync_all()
            .map_err(|e| io_err("cannot fsync", tmp, e))?;
        Ok(warnings)
    }

    /// Drops the temp file.
    pub fn discard(&mut self) {
        self.file = None;
        let _ = fs::remove_file(&self.tmp);
    }

    pub fn meta(&self) -> &EntryMeta {
        &self.meta
    }
}
