//! Writes entries under a root with full fidelity: content (sparse),
//! numeric owner, mode (suid/sgid/sticky kept: mode after chown), xattrs
//! (ACLs and SELinux labels included), mtimes, device nodes and FIFOs.
//!
//! Paths come from the network and are not trusted: absolute paths, `..`
//! and parents that are symlinks (which could lead out of the root) are
//! refused. Parents are checked with `symlink_metadata`, never followed.
//!
//! Delta passes also remove entries ([`Writer::remove`]) and change the
//! metadata of existing ones ([`Writer::attrs`]). Removing a directory tree
//! never follows symlinks and stops at a mounted filesystem.
//!
//! A regular file is written to a temporary name beside its target
//! ([`is_temp_name`]) and renamed into place; an agent killed in between
//! leaves that file, which [`Writer::sweep_temp_files`] removes.
//!
//! Files received whole are committed as a group ([`Commit::run`]):
//! written and closed, then one `syncfs` per filesystem makes them
//! durable, then those written under temporary names are renamed into
//! place, and one more `syncfs` makes the renames durable. A big file's
//! (from [`RESUMABLE_MIN`]) `part`s are made durable by the commit their
//! acks wait for, too, not by an fdatasync each: on W1 (a Debian root, 387
//! files of 256 KiB or more) the agent's thread waited on those syncs a
//! third of the time. Where nothing is at a small file's path yet (all of
//! a first clone), it is written in place, not under a temporary name
//! (a big file keeps its temporary name, its partial copy): an old
//! file's name never points at data that is not on the disk, a new file
//! that is not acked is sent again (whole, then under a temporary name),
//! and every ack is written only after the commit. One fsync per file cost
//! about a millisecond on the lab's disks, most of a clone of many small
//! files (issue 16).
//!
//! With group commits, the directories and metadata changed since the last
//! commit are made durable by the same `syncfs` (one per filesystem, not
//! one fsync per directory, each of which waited for a journal commit).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use filetime::FileTime;

use crate::stream::wire::{
    checkpoint_every, is_zero, EntryKind, EntryMeta, HOLE_BLOCK, RESUMABLE_MIN,
};

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

/// A path looked up without creating parents.
enum Lookup {
    Found(Resolved),
    /// The named parent is missing or not a directory: nothing can be at
    /// the path.
    Absent(PathBuf),
}

/// What [`Writer::sweep_temp_files`] did.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Temporary files removed.
    pub removed: u64,
    /// Directories that could not be listed, files that could not be removed.
    pub errors: Vec<EntryError>,
}

/// The writing side of the agent for one root.
pub struct Writer {
    root: PathBuf,
    /// Directories whose entries changed, and regular files whose metadata
    /// changed ([`Writer::attrs`]): made durable by the next commit.
    dirty_dirs: BTreeSet<PathBuf>,
    /// Directory mtimes, set last (writing children changes them).
    dir_times: Vec<(usize, PathBuf, FileTime)>,
    /// Files written and closed (in place, or under their temporary
    /// names), waiting for the next commit ([`Writer::take_commit`]).
    unplaced: Vec<Unplaced>,
    /// Their paths as sent, and every directory above them (as sent).
    unplaced_paths: Held,
    unplaced_bytes: u64,
    /// One open directory on each filesystem written to, by device: what
    /// a commit's `syncfs` runs on (opened here, where nothing changes the
    /// tree meanwhile, not by the thread the commit runs on).
    filesystems: HashMap<u64, Arc<File>>,
    /// Whether files are committed as a group: only where `syncfs`
    /// reports write errors (Linux 5.8 and later); else each is fsynced.
    group_commit: bool,
}

/// A file finished (in place, or under its temporary name), not yet
/// committed.
struct Unplaced {
    path: Vec<u8>,
    size: u64,
    tmp: PathBuf,
    full: PathBuf,
    parent: PathBuf,
}

/// What [`Commit::run`] could not place: the path as sent, its size,
/// and why.
pub type Unplaceable = (Vec<u8>, u64, EntryError);

/// Paths as sent that a commit holds: nothing may touch them until it
/// has run.
#[derive(Debug, Default)]
pub struct Held {
    /// The files waiting.
    files: HashSet<Vec<u8>>,
    /// Every directory above one.
    dirs: HashSet<Vec<u8>>,
}

impl Held {
    fn insert_file(&mut self, path: &[u8]) {
        for (i, b) in path.iter().enumerate() {
            if *b == b'/' {
                self.dirs.insert(path[..i].to_vec());
            }
        }
        self.files.insert(path.to_vec());
    }

    /// Whether `path` is held, a directory above a held file, or below a
    /// held file (whose placing may replace a directory there, and all
    /// that was written into it).
    pub fn touches(&self, path: &[u8]) -> bool {
        if self.files.is_empty() {
            return false;
        }
        self.files.contains(path)
            || self.dirs.contains(path)
            || path
                .iter()
                .enumerate()
                .any(|(i, b)| *b == b'/' && self.files.contains(&path[..i]))
    }
}

/// What a commit makes durable once its files are written: the
/// filesystems to `syncfs` (group commits), or each changed directory to
/// fsync; or why they could not be opened.
enum SyncTargets {
    Filesystems(Vec<Arc<File>>),
    Each(Vec<(PathBuf, File)>),
}

/// A commit taken from the [`Writer`] ([`Writer::take_commit`]).
pub struct Commit {
    group: Vec<Unplaced>,
    paths: Held,
    targets: Result<SyncTargets, EntryError>,
}

impl Commit {
    /// The paths it holds, taken out (to be kept while it runs
    /// elsewhere). Nothing may touch them until it has run.
    pub fn take_paths(&mut self) -> Held {
        std::mem::take(&mut self.paths)
    }

    /// Whether there is anything to make durable.
    pub fn is_empty(&self) -> bool {
        self.group.is_empty()
            && match &self.targets {
                Ok(SyncTargets::Filesystems(f)) => f.is_empty(),
                Ok(SyncTargets::Each(d)) => d.is_empty(),
                Err(_) => false,
            }
    }

    /// Makes it durable. The group: `syncfs` on each filesystem its files
    /// and the changed directories are on (their data and metadata
    /// durable), those written under temporary names renamed into place,
    /// and `syncfs` again for the renames. Without group commits (an old
    /// kernel), each changed directory is fsynced instead.
    ///
    /// Returns the files that are not durably in place, and why (those
    /// that could not be renamed; all of them when the first `syncfs`
    /// failed, as a failed fsync fails its file: their files are removed),
    /// and whether everything else is durable: when a `syncfs` failed, it
    /// is not, and nothing that waited for this commit (or waits for a
    /// later one) may be acknowledged.
    pub fn run(self) -> (Vec<Unplaceable>, Result<(), EntryError>) {
        let Commit { group, targets, .. } = self;
        let filesystems = match targets {
            Ok(SyncTargets::Each(dirs)) => {
                debug_assert!(
                    group.is_empty(),
                    "files are grouped only with group commits"
                );
                return (Vec::new(), fsync_each(dirs));
            }
            Ok(SyncTargets::Filesystems(f)) => f,
            Err(e) => return (fail_all(group, &e), Err(e)),
        };
        if let Err(e) = syncfs_all(&filesystems) {
            return (fail_all(group, &e), Err(e));
        }
        let mut failed = Vec::new();
        let mut renamed = Vec::new();
        for u in group {
            if u.tmp == u.full {
                continue; // written in place: durable there now
            }
            match Writer::place(&u.tmp, &u.full) {
                Ok(()) => renamed.push(u),
                Err(e) => {
                    let _ = fs::remove_file(&u.tmp);
                    failed.push((u.path, u.size, e));
                }
            }
        }
        if !renamed.is_empty() {
            if let Err(e) = syncfs_all(&filesystems) {
                // In place, but not known to be durable: not acknowledged,
                // so the next pass sends them again. The error fails the
                // commit too: it may belong to what was written meanwhile
                // (a partial copy whose `part` waits for the next commit),
                // and `syncfs` reports an error once, so the next commit's
                // would not see it.
                failed.extend(renamed.into_iter().map(|u| (u.path, u.size, e.clone())));
                return (failed, Err(e));
            }
        }
        (failed, Ok(()))
    }
}

/// Every file of `group` failed with `e`, its file removed.
fn fail_all(group: Vec<Unplaced>, e: &EntryError) -> Vec<Unplaceable> {
    for u in &group {
        let _ = fs::remove_file(&u.tmp);
    }
    group
        .into_iter()
        .map(|u| (u.path, u.size, e.clone()))
        .collect()
}

/// `syncfs` on each filesystem, through an open directory on it.
fn syncfs_all(filesystems: &[Arc<File>]) -> Result<(), EntryError> {
    for f in filesystems {
        // SAFETY: syncfs takes an open descriptor, which `f` holds.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&**f)) } != 0 {
            return Err(EntryError(format!(
                "cannot syncfs the target filesystem: {}",
                io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Opens every directory (and regular file) in `dirs` that is still one,
/// for [`fsync_each`].
fn open_each(dirs: &BTreeSet<PathBuf>) -> Result<Vec<(PathBuf, File)>, EntryError> {
    let mut open = Vec::new();
    for dir in dirs {
        // Replaced by a later entry (a dir that became a file, a FIFO,
        // a symlink) or removed: nothing of it to sync here, the later
        // entry dirtied its own parent. Never open a FIFO or a device.
        // Gone, or a parent of it replaced by a file since (the acks
        // that waited for it go out later now, so a later entry in the
        // same batch can do that): nothing of it to sync.
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() || m.is_file() => {}
            Ok(_) => continue,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(io_err("cannot look at", dir, e)),
        }
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(dir)
        {
            Ok(f) => open.push((dir.clone(), f)),
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(io_err("cannot open for fsync", dir, e)),
        }
    }
    Ok(open)
}

/// fsyncs what [`open_each`] opened.
fn fsync_each(dirs: Vec<(PathBuf, File)>) -> Result<(), EntryError> {
    for (dir, f) in dirs {
        f.sync_all().map_err(|e| io_err("cannot fsync", &dir, e))?;
    }
    Ok(())
}

/// Whether this kernel's `syncfs` returns the write errors it met: since
/// Linux 5.8 (before, it returned 0 whatever happened, and a group commit
/// could not tell a failed write).
fn syncfs_reports_errors() -> bool {
    // SAFETY: uname fills the struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return false;
    }
    // SAFETY: uname NUL-terminates release.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    kernel_at_least(&release.to_string_lossy(), (5, 8))
}

/// Whether a kernel release ("6.1.0-18-amd64", "2.6.32-754.el6") is at
/// least `want`.
fn kernel_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
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
            unplaced: Vec::new(),
            unplaced_paths: Held::default(),
            filesystems: HashMap::new(),
            unplaced_bytes: 0,
            group_commit: syncfs_reports_errors(),
        })
    }

    /// Files finished since the last [`Writer::take_commit`], and their
    /// bytes.
    pub fn uncommitted(&self) -> (usize, u64) {
        (self.unplaced.len(), self.unplaced_bytes)
    }

    /// `sink` reported a `part`: with group commits, the next commit must
    /// sync the filesystem its partial copy is on before the part's ack
    /// is written (see [`FileSink::part_due`]).
    /// Returns whether the part's ack must wait for that commit (else the
    /// partial copy was fdatasynced already).
    pub fn part_reported(&mut self, sink: &FileSink) -> bool {
        if sink.parts_by_commit {
            self.dirty_dirs.insert(sink.parent.clone());
        }
        sink.parts_by_commit
    }

    /// Whether `path` (as sent) is a file waiting for its commit, or a
    /// directory above one.
    pub fn holds_uncommitted(&self, path: &[u8]) -> bool {
        self.unplaced_paths.touches(path)
    }

    /// What waits to be made durable, taken out to be run by
    /// [`Commit::run`] (on another thread, while the next files are
    /// written): the files finished since the last commit, and the
    /// directories (and files whose metadata changed) changed since.
    /// Until it has run, nothing may touch the paths it holds
    /// ([`Commit::take_paths`]).
    ///
    /// What the commit syncs is opened here: a directory on each
    /// filesystem involved (for `syncfs`), or without group commits each
    /// changed directory (for its fsync). A failure to open one fails the
    /// commit (when it runs) as a failed sync would.
    pub fn take_commit(&mut self) -> Commit {
        self.unplaced_bytes = 0;
        let group = std::mem::take(&mut self.unplaced);
        let dirs = std::mem::take(&mut self.dirty_dirs);
        let targets = if self.group_commit {
            let parents = group.iter().map(|u| u.parent.as_path());
            self.filesystems_of(parents, &dirs)
                .map(SyncTargets::Filesystems)
        } else {
            open_each(&dirs).map(SyncTargets::Each)
        };
        Commit {
            group,
            paths: std::mem::take(&mut self.unplaced_paths),
            targets,
        }
    }

    /// An open directory on each filesystem that `parents` (directories
    /// that must be there) and `dirty` (directories or regular files,
    /// skipped when gone or of another kind by now) are on, once each.
    fn filesystems_of<'a>(
        &mut self,
        parents: impl Iterator<Item = &'a Path>,
        dirty: &BTreeSet<PathBuf>,
    ) -> Result<Vec<Arc<File>>, EntryError> {
        let mut devs = Vec::new();
        let mut add = |dev: u64, dir: &Path, devs: &mut Vec<u64>| -> Result<(), EntryError> {
            if let std::collections::hash_map::Entry::Vacant(v) = self.filesystems.entry(dev) {
                let f = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                    .open(dir)
                    .map_err(|e| io_err("cannot open for syncfs", dir, e))?;
                v.insert(Arc::new(f));
            }
            if !devs.contains(&dev) {
                devs.push(dev);
            }
            Ok(())
        };
        let mut last: Option<&Path> = None;
        for parent in parents {
            // Files come sorted: most share the parent before theirs.
            if last == Some(parent) {
                continue;
            }
            last = Some(parent);
            let m = fs::metadata(parent).map_err(|e| io_err("cannot look at", parent, e))?;
            add(m.dev(), parent, &mut devs)?;
        }
        for path in dirty {
            match fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => add(m.dev(), path, &mut devs)?,
                Ok(m) if m.is_file() => {
                    let parent = path.parent().unwrap_or(path);
                    add(m.dev(), parent, &mut devs)?
                }
                Ok(_) => {}
                Err(e) if gone(&e) => {}
                Err(e) => return Err(io_err("cannot look at", path, e)),
            }
        }
        Ok(devs.iter().map(|d| self.filesystems[d].clone()).collect())
    }

    /// Renames a finished file's temporary file to `full`. A directory
    /// there (one that became a file) is removed first, with everything in
    /// it; anything else is replaced by the rename.
    pub(crate) fn place(tmp: &Path, full: &Path) -> Result<(), EntryError> {
        if fs::symlink_metadata(full).is_ok_and(|m| m.is_dir()) {
            Self::clear(full)?;
        }
        fs::rename(tmp, full).map_err(|e| io_err("cannot rename into place", full, e))
    }

    /// Splits and checks a relative path; creates missing parents (0755,
    /// root-owned; their own entry, if sent, fixes them).
    fn resolve(&mut self, path: &[u8]) -> Result<Resolved, EntryError> {
        match self.walk(path, true)? {
            Lookup::Found(r) => Ok(r),
            Lookup::Absent(_) => unreachable!("parents are created"),
        }
    }

    /// Splits and checks a relative path like [`Writer::resolve`], but
    /// creates nothing: a missing parent (or one that is not a directory)
    /// means the path is absent. A symlinked parent is still an error.
    fn lookup(&mut self, path: &[u8]) -> Result<Lookup, EntryError> {
        self.walk(path, false)
    }

    fn walk(&mut self, path: &[u8], create_parents: bool) -> Result<Lookup, EntryError> {
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
            return Ok(Lookup::Found(Resolved {
                full: self.root.clone(),
                parent: self.root.clone(),
                name: OsString::new(),
            }));
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
                Ok(_) if !create_parents => return Ok(Lookup::Absent(cur)),
                Ok(_) => {
                    return Err(EntryError(format!("{}: its parent {} is not a directory", show(path), cur.display())))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && !create_parents => {
                    return Ok(Lookup::Absent(cur))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
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
        Ok(Lookup::Found(Resolved {
            full: cur,
            parent,
            name,
        }))
    }

    /// Removes whatever is at `full` (without following symlinks; a
    /// directory with everything in it, but never a mounted filesystem:
    /// see [`remove_tree`]). Already missing is fine.
    fn clear(full: &Path) -> Result<(), EntryError> {
        match fs::symlink_metadata(full) {
            Ok(m) if m.is_dir() => {
                let parent = full.parent().unwrap_or(full);
                let dev = fs::symlink_metadata(parent)
                    .map_err(|e| io_err("cannot look at", parent, e))?
                    .dev();
                remove_tree(full, dev)
            }
            Ok(_) => match fs::remove_file(full) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(io_err("cannot remove", full, e))
                }
                _ => Ok(()),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot look at", full, e)),
        }
    }

    /// Removes `path` (a [`crate::stream::wire::Frame::Remove`]): a
    /// directory with everything in it, anything else with unlink, never
    /// following symlinks (a symlink is removed itself). Already missing
    /// (or under a parent that is missing or not a directory) is success,
    /// so an interrupted pass can run again. Refused: the root itself, a
    /// symlinked parent, `..`, absolute paths, and a tree with another
    /// filesystem mounted in it.
    ///
    /// The parent is fsynced before the ack. Its mtime becomes the time of
    /// the removal, unless the stream also carries the parent's Entry or
    /// Attrs (which a sync pass does, since the source's parent changed
    /// too): directory times are set at the end, see [`Writer::finish`].
    pub fn remove(&mut self, path: &[u8]) -> Result<(), EntryError> {
        let r = match self.lookup(path)? {
            Lookup::Found(r) => r,
            Lookup::Absent(_) => return Ok(()),
        };
        if r.name.is_empty() {
            return Err(EntryError(format!(
                "{}: the root itself cannot be removed",
                show(path)
            )));
        }
        Self::clear(&r.full)?;
        self.dirty_dirs.insert(r.parent);
        Ok(())
    }

    /// Changes the metadata of an existing entry (a
    /// [`crate::stream::wire::Frame::Attrs`]) in the order full entries use:
    /// owner (lchown), then mode (not for symlinks: chown clears suid and
    /// sgid), then xattrs when `meta.xattrs` is not empty (else the ones on
    /// the target are left alone), then the mtime (directories: at the
    /// end, like full entries, so later writes into them do not change it).
    /// Creates nothing: a missing path, or one whose kind (symlink target,
    /// device numbers, hard link inode) differs from `meta.kind`, is an
    /// error that asks for the entry in full. Returns warnings (xattrs not
    /// kept).
    pub fn attrs(&mut self, meta: &EntryMeta) -> Result<Vec<String>, EntryError> {
        let missing = || {
            EntryError(format!(
                "{}: is not on the target; send it in full",
                show(&meta.path)
            ))
        };
        let r = match self.lookup(&meta.path)? {
            Lookup::Found(r) => r,
            Lookup::Absent(_) => return Err(missing()),
        };
        let full = &r.full;
        let m = match fs::symlink_metadata(full) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(io_err("cannot look at", full, e)),
        };
        self.check_kind(meta, &m, full)?;
        let is_link = m.file_type().is_symlink();
        let mut warnings = Vec::new();
        // chown, even to the same owner, drops suid/sgid (the mode below
        // restores them) and the file capability (restored here unless
        // the meta lists xattrs, which are then set in full).
        let owner_changes = m.uid() != meta.uid || m.gid() != meta.gid;
        let capability = if owner_changes && !is_link && meta.xattrs.is_empty() {
            xattr::get(full, CAPABILITY).ok().flatten()
        } else {
            None
        };
        if owner_changes {
            std::os::unix::fs::lchown(full, Some(meta.uid), Some(meta.gid))
                .map_err(|e| io_err("cannot set the owner of", full, e))?;
        }
        if !is_link {
            fs::set_permissions(full, fs::Permissions::from_mode(meta.mode & 0o7777))
                .map_err(|e| io_err("cannot chmod", full, e))?;
        }
        if let Some(cap) = capability {
            if let Err(e) = xattr::set(full, CAPABILITY, &cap) {
                warnings.push(format!(
                    "{}: xattr {CAPABILITY} lost when its owner changed: {e}",
                    show(&meta.path)
                ));
            }
        }
        set_xattrs(full, None, meta, &mut warnings);
        if m.is_dir() {
            self.dir_times
                .push((depth(&meta.path), full.clone(), mtime(meta)));
            self.dirty_dirs.insert(full.clone());
        } else {
            filetime::set_symlink_file_times(full, mtime(meta), mtime(meta))
                .map_err(|e| io_err("cannot set the times of", full, e))?;
            // Regular files are fsynced themselves; other kinds cannot be
            // opened safely (a FIFO blocks, a device has side effects), so
            // their directory is, as for their full entries.
            self.dirty_dirs
                .insert(if m.is_file() { full.clone() } else { r.parent });
        }
        Ok(warnings)
    }

    /// Whether what is at `full` is what `meta.kind` says.
    fn check_kind(
        &mut self,
        meta: &EntryMeta,
        m: &fs::Metadata,
        full: &Path,
    ) -> Result<(), EntryError> {
        let path = show(&meta.path);
        let ft = m.file_type();
        let dev_nums = |major: u32, minor: u32| -> Result<(), EntryError> {
            let (ma, mi) = (libc::major(m.rdev()), libc::minor(m.rdev()));
            if (ma, mi) == (major, minor) {
                Ok(())
            } else {
                Err(EntryError(format!(
                    "{path}: the device on the target is {ma}:{mi}, not {major}:{minor}; send it in full"
                )))
            }
        };
        let (same, want) = match &meta.kind {
            EntryKind::File => (ft.is_file(), "a regular file"),
            EntryKind::Dir => (ft.is_dir(), "a directory"),
            EntryKind::Fifo => (ft.is_fifo(), "a FIFO"),
            EntryKind::CharDev { major, minor } => {
                if ft.is_char_device() {
                    return dev_nums(*major, *minor);
                }
                (false, "a character device")
            }
            EntryKind::BlockDev { major, minor } => {
                if ft.is_block_device() {
                    return dev_nums(*major, *minor);
                }
                (false, "a block device")
            }
            EntryKind::Symlink { target } => {
                if ft.is_symlink() {
                    let on_disk =
                        fs::read_link(full).map_err(|e| io_err("cannot read the link", full, e))?;
                    if on_disk.as_os_str().as_bytes() == target.as_slice() {
                        return Ok(());
                    }
                    return Err(EntryError(format!(
                        "{path}: the symlink on the target points to {}, not {}; send it in full",
                        on_disk.display(),
                        show(target)
                    )));
                }
                (false, "a symlink")
            }
            EntryKind::Hardlink { target } => {
                if ft.is_file() {
                    let t = match self.lookup(target)? {
                        Lookup::Found(t) => fs::symlink_metadata(&t.full).ok(),
                        Lookup::Absent(_) => None,
                    };
                    if t.is_some_and(|t| (t.dev(), t.ino()) == (m.dev(), m.ino())) {
                        return Ok(());
                    }
                    return Err(EntryError(format!(
                        "{path}: is not a hard link to {} on the target; send it in full",
                        show(target)
                    )));
                }
                (false, "a hard link to a regular file")
            }
        };
        if same {
            return Ok(());
        }
        Err(EntryError(format!(
            "{path}: the change is for {want} but the target has {} there; send it in full",
            kind_name(ft)
        )))
    }

    /// Removes every leftover temporary file ([`is_temp_name`], regular
    /// files only) under the root: what an agent killed while receiving a
    /// file leaves. Descends into every directory, mounted filesystems
    /// included, but never follows a symlink. Run it only while no other
    /// agent writes under the root.
    pub fn sweep_temp_files(&mut self) -> Sweep {
        let mut sweep = Sweep::default();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    sweep.errors.push(io_err("cannot list", &dir, e));
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        sweep.errors.push(io_err("cannot list", &dir, e));
                        break;
                    }
                };
                // The entry's own type: a symlink is never followed.
                let ft = match entry.file_type() {
                    Ok(ft) => ft,
                    Err(e) => {
                        sweep
                            .errors
                            .push(io_err("cannot look at", &entry.path(), e));
                        continue;
                    }
                };
                if ft.is_dir() {
                    stack.push(entry.path());
                } else if ft.is_file() && is_temp_name(entry.file_name().as_bytes()) {
                    let path = entry.path();
                    match fs::remove_file(&path) {
                        Ok(()) => {
                            tracing::debug!(
                                "removed the leftover temporary file {}",
                                path.display()
                            );
                            sweep.removed += 1;
                            self.dirty_dirs.insert(dir.clone());
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => sweep.errors.push(io_err(
                            "cannot remove the leftover temporary file",
                            &path,
                            e,
                        )),
                    }
                }
            }
        }
        sweep
    }

    /// Starts a regular file: written in place when it will be committed
    /// in a group and nothing is at its path yet, else a temp file beside
    /// the target.
    pub fn begin_file(&mut self, meta: &EntryMeta) -> Result<FileSink, EntryError> {
        let r = self.resolve(&meta.path)?;
        if r.name.is_empty() {
            return Err(EntryError("the root itself cannot be a file".into()));
        }
        if self.group_commit && in_place_when_new(meta.size, &meta.path) {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&r.full)
            {
                Ok(file) => {
                    let full = r.full.clone();
                    return Ok(FileSink::new(file, full, r, meta, self.group_commit));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("cannot create", &r.full, e)),
            }
        }
        self.begin_temp(r, meta)
    }

    /// Starts a regular file under a temp name beside the target.
    fn begin_temp(&mut self, r: Resolved, meta: &EntryMeta) -> Result<FileSink, EntryError> {
        let tmp = r.parent.join(temp_name(r.name.as_bytes()));
        let _ = fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| io_err("cannot create the temporary file", &tmp, e))?;
        Ok(FileSink::new(file, tmp, r, meta, self.group_commit))
    }

    /// Starts a file that keeps the first `offset` bytes of the regular
    /// file already at `meta.path`, which must be exactly that long and
    /// hash to `prefix` (what the journal recorded). They are copied into
    /// the temp file beside it (holes stay holes); the content received
    /// next is appended there, and [`Writer::finish_file`] renames it into
    /// place as for any file. On error the old file is untouched.
    pub fn begin_append(
        &mut self,
        meta: &EntryMeta,
        offset: u64,
        prefix: &[u8; 32],
    ) -> Result<FileSink, EntryError> {
        self.begin_from_file(meta, offset, prefix, true)
    }

    /// [`Writer::begin_append`]; without `exact`, the file may be longer
    /// than `offset` (only its first `offset` bytes are kept).
    fn begin_from_file(
        &mut self,
        meta: &EntryMeta,
        offset: u64,
        prefix: &[u8; 32],
        exact: bool,
    ) -> Result<FileSink, EntryError> {
        let r = self.resolve(&meta.path)?;
        if r.name.is_empty() {
            return Err(EntryError("the root itself cannot be a file".into()));
        }
        let mut sink = self.begin_temp(r, meta)?;
        let old = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&sink.full)
            .map_err(|e| io_err("cannot open the copy to append to", &sink.full, e))?;
        let m = old
            .metadata()
            .map_err(|e| io_err("cannot look at", &sink.full, e))?;
        if !m.is_file() || m.len() < offset || (exact && m.len() != offset) {
            return Err(EntryError(format!(
                "{}: the copy on the target is {} bytes{}, not the {offset} the journal recorded; it is sent whole next pass",
                show(&meta.path),
                m.len(),
                if m.is_file() { "" } else { " and not a regular file" }
            )));
        }
        let whole = read_prefix(&old, offset, &sink.full, |bytes, at| sink.put(bytes, at))?;
        sink.continue_after(offset, whole, prefix, "the copy on the target")?;
        Ok(sink)
    }

    /// Continues a big file from the partial copy an interrupted transfer
    /// left beside it ([`FileSink::keep_partial`]): its first `offset` bytes
    /// must hash to `prefix` (the last `part` acked). What follows them is
    /// cut off, and the content received next goes on from there. On error
    /// the partial copy is removed (the file is then sent whole).
    ///
    /// When there is no partial copy because an agent whose client had
    /// died went on and finished the file (its `ok` never reached the
    /// journal), the finished file is the base, as for an append: its first
    /// `offset` bytes must hash to `prefix` just the same.
    pub fn begin_resume(
        &mut self,
        meta: &EntryMeta,
        offset: u64,
        prefix: &[u8; 32],
    ) -> Result<FileSink, EntryError> {
        let r = self.resolve(&meta.path)?;
        let tmp = r.parent.join(temp_name(r.name.as_bytes()));
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return self.begin_from_file(meta, offset, prefix, false)
            }
            Err(e) => return Err(io_err("cannot open the partial copy to resume", &tmp, e)),
        };
        let mut sink = FileSink::new(file, tmp, r, meta, self.group_commit);
        let file = sink.file.as_ref().expect("just opened");
        let m = file
            .metadata()
            .map_err(|e| io_err("cannot look at", &sink.tmp, e))?;
        if !m.is_file() {
            return Err(EntryError(format!(
                "{}: the partial copy is not a regular file",
                show(&meta.path)
            )));
        }
        // Holes at its end were never written; anything past the offset
        // comes again.
        file.set_len(offset)
            .map_err(|e| io_err("cannot cut the partial copy", &sink.tmp, e))?;
        let whole = read_prefix(file, offset, &sink.tmp, |_, _| Ok(()))?;
        sink.continue_after(offset, whole, prefix, "the partial copy")?;
        // Its verified bytes are worth keeping if this stream breaks too,
        // before the next `part`: the journal still has the last one.
        sink.parted = true;
        Ok(sink)
    }

    /// Finishes a file whose content arrived: checks the digest, applies
    /// metadata, fsyncs and renames into place. Returns warnings (xattrs
    /// that could not be set). On error the temp file is gone.
    pub fn finish_file(
        &mut self,
        mut sink: FileSink,
        expected: &[u8; 32],
    ) -> Result<Vec<String>, EntryError> {
        if self.group_commit && sink.committed_in_a_group() {
            return match sink.finish_unsynced(expected) {
                Ok(warnings) => {
                    sink.placed = true;
                    self.unplaced_paths.insert_file(&sink.meta.path);
                    self.unplaced_bytes += sink.meta.size;
                    self.unplaced.push(Unplaced {
                        path: sink.meta.path.clone(),
                        size: sink.meta.size,
                        tmp: sink.tmp.clone(),
                        full: sink.full.clone(),
                        parent: sink.parent.clone(),
                    });
                    Ok(warnings)
                }
                Err(e) => {
                    sink.discard();
                    Err(e)
                }
            };
        }
        let result = sink.finish(expected);
        match result {
            Ok(warnings) => {
                debug_assert!(sink.tmp != sink.full, "only group commits write in place");
                if let Err(e) = Self::place(&sink.tmp, &sink.full) {
                    sink.discard();
                    return Err(e);
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
        let r = self.resolve(&meta.path)?;
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
                self.dir_times
                    .push((depth(&meta.path), full.clone(), mtime(meta)));
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
                let t = match self.lookup(target) {
                    Ok(Lookup::Found(t)) => t,
                    Ok(Lookup::Absent(parent)) => {
                        return Err(EntryError(format!(
                            "{}: hard link target {} is not on the target ({} is missing or not a directory); it was not sent or not written",
                            show(&meta.path),
                            show(target),
                            parent.display()
                        )))
                    }
                    Err(e) => {
                        return Err(EntryError(format!(
                            "{}: hard link target: {e}",
                            show(&meta.path)
                        )))
                    }
                };
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

    /// Whether any directory waits for its fsync.
    pub fn has_dirty_dirs(&self) -> bool {
        !self.dirty_dirs.is_empty()
    }

    /// Sets directory mtimes, deepest first, and marks them for the next
    /// [`Writer::take_commit`]. Returns one message per directory that could
    /// not be fixed.
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
        // Their fsync is the caller's next commit, whose failure withholds
        // the acks still waiting.
        errors
    }
}

/// The last component of a path as sent.
pub fn last_name(path: &[u8]) -> &[u8] {
    path.rsplit(|b| *b == b'/').next().unwrap_or(path)
}

/// Ends the plain temporary name `.<name>.hotclone-tmp`.
const TEMP_SUFFIX: &[u8] = b".hotclone-tmp";
/// Starts the hashed temporary name `.hotclone-tmp-<32 hex digits>`.
const TEMP_HASHED_PREFIX: &[u8] = b".hotclone-tmp-";
/// Lowercase hex digits of BLAKE3 in the hashed form.
const TEMP_HASH_HEX: usize = 32;
/// NAME_MAX on Linux.
const NAME_MAX: usize = 255;

/// Whether the plain temporary name for a name of this length fits.
fn plain_temp_fits(name_len: usize) -> bool {
    1 + name_len + TEMP_SUFFIX.len() <= NAME_MAX
}

/// Whether `file_name` is a name [`temp_name`] gives: `.<name>.hotclone-tmp`
/// (a non-empty name) or `.hotclone-tmp-<32 lowercase hex digits>`. The one
/// definition of the pattern, for the writer and the sweep.
pub fn is_temp_name(file_name: &[u8]) -> bool {
    if let Some(hash) = file_name.strip_prefix(TEMP_HASHED_PREFIX) {
        if hash.len() == TEMP_HASH_HEX
            && hash
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        {
            return true;
        }
    }
    match file_name
        .strip_prefix(b".")
        .and_then(|n| n.strip_suffix(TEMP_SUFFIX))
    {
        Some(name) => !name.is_empty() && plain_temp_fits(name.len()),
        None => false,
    }
}

/// `.<name>.hotclone-tmp`, or a hashed short form when that would be
/// longer than NAME_MAX (255).
fn temp_name(name: &[u8]) -> OsString {
    let mut t = Vec::with_capacity(1 + name.len() + TEMP_SUFFIX.len());
    if plain_temp_fits(name.len()) {
        t.push(b'.');
        t.extend_from_slice(name);
        t.extend_from_slice(TEMP_SUFFIX);
    } else {
        t.extend_from_slice(TEMP_HASHED_PREFIX);
        t.extend_from_slice(blake3::hash(name).to_hex()[..TEMP_HASH_HEX].as_bytes());
    }
    debug_assert!(is_temp_name(&t), "temp_name and is_temp_name disagree");
    OsString::from_vec(t)
}

/// The security.capability xattr (file capabilities), which chown drops.
const CAPABILITY: &str = "security.capability";

/// Path components below the root ("." and empty ones do not count).
fn depth(path: &[u8]) -> usize {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .count()
}

fn kind_name(ft: fs::FileType) -> &'static str {
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symlink"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "something unknown"
    }
}

/// Removes the directory `top` with everything in it, never following a
/// symlink (one is removed itself). A directory on another device than
/// `dev` (the device of `top`'s parent), i.e. a mounted filesystem, is not
/// entered: the removal stops there with an error, so a tree never takes a
/// filesystem mounted in it along. Iterative: deep trees cost neither stack
/// nor open descriptors. Entries that vanish meanwhile are fine.
fn remove_tree(top: &Path, dev: u64) -> Result<(), EntryError> {
    // (directory, its children are gone)
    let mut stack = vec![(top.to_path_buf(), false)];
    while let Some((dir, emptied)) = stack.pop() {
        if emptied {
            match fs::remove_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("cannot remove the directory", &dir, e))
                }
                _ => continue,
            }
        }
        match fs::symlink_metadata(&dir) {
            Ok(m) if !m.is_dir() => continue,
            Ok(m) if m.dev() != dev => {
                return Err(EntryError(format!(
                "{}: another filesystem is mounted there; refused to remove it (unmount it first)",
                dir.display()
            )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("cannot look at", &dir, e)),
        }
        stack.push((dir.clone(), true));
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("cannot list", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err("cannot list", &dir, e))?;
            let path = entry.path();
            let ft = entry
                .file_type()
                .map_err(|e| io_err("cannot look at", &path, e))?;
            if ft.is_dir() {
                stack.push((path, false));
            } else {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_err("cannot remove", &path, e))
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
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
    /// Over the content received (what FileEnd's BLAKE3 covers).
    hasher: blake3::Hasher,
    /// Over the whole file, kept prefix included: only for an append.
    whole: Option<blake3::Hasher>,
    pos: u64,
    /// Renamed into place: nothing to clean up.
    placed: bool,
    /// Where the next `part` is due (never, for small files).
    next_part: u64,
    /// A `part` was reported: the partial copy is worth keeping.
    parted: bool,
    /// Group commits: a `part`'s bytes are made durable by the `syncfs` of
    /// the commit its ack waits for ([`Writer::part_reported`]), not by an
    /// fdatasync of their own.
    parts_by_commit: bool,
    /// Left in place on drop, for a resume.
    keep: bool,
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if !self.placed && !self.keep {
            self.discard();
        }
    }
}

/// Reads `file`'s first `offset` bytes, handing each chunk to `put` (with
/// its offset); their BLAKE3 state.
fn read_prefix(
    file: &File,
    offset: u64,
    path: &Path,
    mut put: impl FnMut(&[u8], u64) -> Result<(), EntryError>,
) -> Result<blake3::Hasher, EntryError> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < offset {
        let want = buf.len().min((offset - at) as usize);
        let n = file
            .read_at(&mut buf[..want], at)
            .map_err(|e| io_err("cannot read", path, e))?;
        if n == 0 {
            return Err(EntryError(format!(
                "{}: shorter than the {offset} bytes to keep",
                path.display()
            )));
        }
        hasher.update(&buf[..n]);
        put(&buf[..n], at)?;
        at += n as u64;
    }
    Ok(hasher)
}

/// Whether an error says the path is not there: missing, or a parent of
/// it is no directory (any more).
fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// Whether a file of `size` named `path` is written in place when nothing
/// is at its path: a small one, committed in a group when it arrives
/// whole (see [`FileSink::committed_in_a_group`]). A big one reports
/// `part`s of a partial copy that a resume continues from, which must not
/// have the file's own name.
fn in_place_when_new(size: u64, path: &[u8]) -> bool {
    size < RESUMABLE_MIN && !is_temp_name(last_name(path))
}

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl FileSink {
    fn new(
        file: File,
        tmp: PathBuf,
        r: Resolved,
        meta: &EntryMeta,
        parts_by_commit: bool,
    ) -> FileSink {
        FileSink {
            file: Some(file),
            tmp,
            full: r.full,
            parent: r.parent,
            meta: meta.clone(),
            hasher: blake3::Hasher::new(),
            whole: None,
            pos: 0,
            placed: false,
            next_part: if meta.size >= RESUMABLE_MIN {
                checkpoint_every(meta.size)
            } else {
                u64::MAX
            },
            parted: false,
            parts_by_commit,
            keep: false,
        }
    }

    /// The first `offset` bytes are in place and hashed as `whole`; they
    /// must be `prefix`. The content received next follows them.
    fn continue_after(
        &mut self,
        offset: u64,
        whole: blake3::Hasher,
        prefix: &[u8; 32],
        what: &str,
    ) -> Result<(), EntryError> {
        if whole.finalize().as_bytes() != prefix {
            return Err(EntryError(format!(
                "{}: {what} differs from what the journal recorded; it is sent whole next pass",
                show(&self.meta.path)
            )));
        }
        self.pos = offset;
        self.whole = Some(whole);
        if self.next_part != u64::MAX {
            self.next_part = offset + checkpoint_every(self.meta.size);
        }
        Ok(())
    }

    /// After content arrived: a `part` (the bytes the partial copy now
    /// holds, and their BLAKE3) when one is due. Acked means durable: the
    /// partial copy is fdatasynced before the part is reported (if that
    /// fails, no part is reported, and the file goes whole next time), or
    /// with group commits, the commit the part's ack waits for syncs it.
    fn part_due(&mut self) -> Option<(u64, [u8; 32])> {
        if self.pos < self.next_part || self.pos >= self.meta.size {
            return None;
        }
        self.next_part = self.pos + checkpoint_every(self.meta.size);
        if !self.parts_by_commit && self.file.as_ref().map(File::sync_data).transpose().is_err() {
            return None;
        }
        self.parted = true;
        let h = self.whole.as_ref().unwrap_or(&self.hasher);
        Some((self.pos, *h.finalize().as_bytes()))
    }

    /// The stream broke inside this file: leave its partial copy for a
    /// resume, when a `part` of it was reported (else it goes as usual).
    pub fn keep_partial(&mut self) {
        self.keep = self.parted;
    }

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
    /// Returns a `part` when one is due.
    pub fn data(&mut self, bytes: &[u8]) -> Result<Option<(u64, [u8; 32])>, EntryError> {
        let start = self.advance(bytes.len() as u64)?;
        self.hasher.update(bytes);
        if let Some(w) = self.whole.as_mut() {
            w.update(bytes);
        }
        self.put(bytes, start)?;
        Ok(self.part_due())
    }

    /// Writes `bytes` at `start`, skipping all-zero blocks.
    fn put(&self, bytes: &[u8], start: u64) -> Result<(), EntryError> {
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
    pub fn hole(&mut self, len: u64) -> Result<Option<(u64, [u8; 32])>, EntryError> {
        self.advance(len)?;
        let mut left = len;
        while left > 0 {
            let n = left.min(ZEROS.len() as u64) as usize;
            self.hasher.update(&ZEROS[..n]);
            if let Some(w) = self.whole.as_mut() {
                w.update(&ZEROS[..n]);
            }
            left -= n as u64;
        }
        Ok(self.part_due())
    }

    /// A file received whole, small or big: its durability and placing
    /// are [`Commit::run`]'s, for the whole group (a big one, which may
    /// have reported `part`s, waits under its temporary name, which stays
    /// its partial copy until then). Appends and resumed files, and files
    /// whose own name is a temporary name (another file's temporary name
    /// in the same group could be it) are synced and placed alone.
    fn committed_in_a_group(&self) -> bool {
        !is_temp_name(last_name(&self.meta.path)) && self.whole.is_none()
    }

    /// Checks the digest and applies the metadata, then fsyncs.
    fn finish(&mut self, expected: &[u8; 32]) -> Result<Vec<String>, EntryError> {
        let warnings = self.finish_unsynced(expected)?;
        let file = self.file.as_ref().expect("open until finish");
        file.sync_all()
            .map_err(|e| io_err("cannot fsync", &self.tmp, e))?;
        Ok(warnings)
    }

    /// Checks the digest and applies the metadata; the file is not synced
    /// and closes with the sink.
    fn finish_unsynced(&mut self, expected: &[u8; 32]) -> Result<Vec<String>, EntryError> {
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

    /// For an append, the BLAKE3 of the whole file as it now is (kept
    /// prefix and received content); None for a file received whole,
    /// whose digest is FileEnd's.
    pub fn whole_digest(&self) -> Option<[u8; 32]> {
        self.whole.as_ref().map(|w| *w.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_come_every_quarter_between_the_resumable_minimum_and_a_mib() {
        use crate::stream::wire::checkpoint_every;
        assert_eq!(checkpoint_every(512 << 10), 256 << 10);
        assert_eq!(checkpoint_every(2 << 20), 512 << 10);
        assert_eq!(checkpoint_every(200 << 20), 1 << 20);
        assert_eq!(checkpoint_every(300 << 10), 256 << 10);
    }

    #[test]
    fn temp_names_are_what_the_sweep_matches() {
        for len in [1usize, 2, 100, 241, 242, 255] {
            let name = vec![b'n'; len];
            let t = temp_name(&name);
            assert!(t.len() <= NAME_MAX, "{len}: {t:?}");
            assert!(is_temp_name(t.as_bytes()), "{len}: {t:?}");
            // The plain form up to 241 bytes (1 + 241 + 13 = 255), hashed after.
            assert_eq!(
                t.as_bytes().starts_with(TEMP_HASHED_PREFIX),
                len > 241,
                "{len}"
            );
        }
        assert_eq!(
            temp_name(b"f\xff"),
            OsStr::from_bytes(b".f\xff.hotclone-tmp")
        );
        for yes in [
            &b".a.hotclone-tmp"[..],
            b"..hidden.hotclone-tmp",
            b".x.hotclone-tmp.hotclone-tmp",
            b".hotclone-tmp-0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_temp_name(yes), "{}", show(yes));
        }
        for no in [
            &b""[..],
            b"a.hotclone-tmp",
            b".hotclone-tmp",
            b"..hotclone-tmp",
            b".a.hotclone-tmp~",
            b".a.hotclone-tmp.bak",
            b".a.hotclone-TMP",
            b"a",
            b".hotclone-tmp-0123456789abcdef0123456789abcde",
            b".hotclone-tmp-0123456789abcdef0123456789abcdef0",
            b".hotclone-tmp-0123456789ABCDEF0123456789abcdef",
            b".hotclone-tmp-0123456789abcdef0123456789abcdeg",
        ] {
            assert!(!is_temp_name(no), "{}", show(no));
        }
    }

    #[test]
    fn remove_tree_keeps_what_symlinks_point_to() {
        let base = std::env::temp_dir().join(format!("hotclone-writer-rt-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let outside = base.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("keep"), b"k").unwrap();
        let top = base.join("top");
        // Deeper than one would like to recurse with an open directory each.
        let mut deep = top.clone();
        for _ in 0..300 {
            deep.push("d");
        }
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, top.join("to-outside")).unwrap();
        std::os::unix::fs::symlink(&outside, deep.join("to-outside")).unwrap();
        fs::write(top.join("file"), b"y").unwrap();
        let dev = fs::symlink_metadata(&base).unwrap().dev();
        remove_tree(&top, dev).unwrap();
        assert!(!top.exists());
        assert_eq!(fs::read(outside.join("keep")).unwrap(), b"k");
        // Gone already: fine. Another device: refused, nothing touched.
        remove_tree(&top, dev).unwrap();
        fs::create_dir(&top).unwrap();
        fs::write(top.join("f"), b"x").unwrap();
        let err = remove_tree(&top, dev.wrapping_add(1)).unwrap_err();
        assert!(err.0.contains("another filesystem is mounted"), "{err}");
        assert!(top.join("f").exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn group_commits_need_a_kernel_whose_syncfs_reports_errors() {
        assert!(kernel_at_least("6.1.0-18-amd64", (5, 8)));
        assert!(kernel_at_least("5.8.0", (5, 8)));
        assert!(!kernel_at_least("5.4.0-150-generic", (5, 8)));
        assert!(!kernel_at_least("2.6.32-754.el6.x86_64", (5, 8)));
        assert!(!kernel_at_least("", (5, 8)));
        assert_eq!(last_name(b"a/b/.c.hotclone-tmp"), b".c.hotclone-tmp");
    }

    /// A path below a held file is held (placing that file may replace a
    /// directory there); a sibling of a held file is not.
    #[test]
    fn below_a_held_file_is_held_and_beside_it_is_not() {
        let mut held = Held::default();
        assert!(!held.touches(b"a"));
        held.insert_file(b"a/f");
        for yes in [&b"a/f"[..], b"a", b"a/f/g", b"a/f/g/h"] {
            assert!(held.touches(yes), "{}", show(yes));
        }
        for no in [&b"a/g"[..], b"a/ff", b"a/f.x", b"b", b"af"] {
            assert!(!held.touches(no), "{}", show(no));
        }
    }

    fn small_file(path: &[u8], content: &[u8]) -> EntryMeta {
        EntryMeta {
            path: path.to_vec(),
            kind: EntryKind::File,
            mode: 0o640,
            uid: 0,
            gid: 0,
            mtime: 1_000_000,
            mtime_nsec: 0,
            size: content.len() as u64,
            xattrs: vec![],
        }
    }

    /// Issue 16: with group commits, a small file new to the target is
    /// written at its own name (no temporary name, no rename); one that
    /// replaces an old file goes through a temporary name, and the old
    /// content stays at the name until the commit has made the new one
    /// durable. Nothing is acknowledged before [`Commit::run`] either way.
    #[test]
    fn a_new_small_file_is_written_in_place_and_an_old_one_replaced_only_by_the_commit() {
        let root = std::env::temp_dir().join(format!("hotclone-writer-ip-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/old"), b"old content").unwrap();
        let mut w = Writer::new(&root).unwrap();
        w.group_commit = true;
        let write = |w: &mut Writer, path: &[u8], content: &[u8]| {
            let meta = small_file(path, content);
            let mut sink = w.begin_file(&meta).unwrap();
            sink.data(content).unwrap();
            let digest = *blake3::hash(content).as_bytes();
            w.finish_file(sink, &digest).unwrap();
        };
        write(&mut w, b"d/new", b"brand new");
        write(&mut w, b"d/old", b"replaced");
        assert_eq!(fs::read(root.join("d/new")).unwrap(), b"brand new");
        assert!(!root.join("d/.new.hotclone-tmp").exists());
        assert_eq!(fs::read(root.join("d/old")).unwrap(), b"old content");
        assert_eq!(
            fs::read(root.join("d/.old.hotclone-tmp")).unwrap(),
            b"replaced"
        );
        assert_eq!(w.uncommitted().0, 2);
        let mut commit = w.take_commit();
        let held = commit.take_paths();
        assert!(held.touches(b"d/new") && held.touches(b"d") && held.touches(b"d/old"));
        assert!(!held.touches(b"d/other") && !held.touches(b"e"));
        let (failed, dirs) = commit.run();
        assert!(failed.is_empty(), "{failed:?}");
        dirs.unwrap();
        assert_eq!(fs::read(root.join("d/old")).unwrap(), b"replaced");
        assert!(!root.join("d/.old.hotclone-tmp").exists());
        let m = fs::metadata(root.join("d/new")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!(m.mtime(), 1_000_000);
        assert_eq!(w.uncommitted(), (0, 0));
        fs::remove_dir_all(&root).unwrap();
    }

    /// Issue 16: with group commits, a big file received whole waits for
    /// the group's commit under its temporary name (its partial copy,
    /// from which a resume continues), not synced on its own; its `part`s
    /// are not fdatasynced either, but put its filesystem into the next
    /// commit, so the commit their acks wait for syncs them. Without group
    /// commits, the part is synced and the file placed alone.
    #[test]
    fn a_big_file_and_its_parts_are_made_durable_by_the_group_commit() {
        let root = std::env::temp_dir().join(format!("hotclone-writer-big-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("d")).unwrap();
        let content: Vec<u8> = (0..RESUMABLE_MIN * 2).map(|i| (i % 251) as u8).collect();
        let digest = *blake3::hash(&content).as_bytes();
        let meta = small_file(b"d/big", &content);
        for group_commit in [true, false] {
            let _ = fs::remove_file(root.join("d/big"));
            let mut w = Writer::new(&root).unwrap();
            w.group_commit = group_commit;
            let mut sink = w.begin_file(&meta).unwrap();
            let half = RESUMABLE_MIN as usize;
            let part = sink.data(&content[..half]).unwrap();
            let (offset, _) = part.expect("a part is due halfway");
            assert_eq!(offset, RESUMABLE_MIN);
            assert_eq!(w.part_reported(&sink), group_commit);
            assert!(
                root.join("d/.big.hotclone-tmp").exists(),
                "a big file is never written in place"
            );
            if group_commit {
                assert!(
                    !w.take_commit().is_empty(),
                    "the commit after a part must sync its partial copy"
                );
            }
            assert_eq!(sink.data(&content[half..]).unwrap(), None);
            w.finish_file(sink, &digest).unwrap();
            if group_commit {
                assert!(!root.join("d/big").exists(), "placed before its commit");
                assert!(w.holds_uncommitted(b"d/big"));
                assert_eq!(w.uncommitted(), (1, content.len() as u64));
                let (failed, dirs) = w.take_commit().run();
                assert!(failed.is_empty(), "{failed:?}");
                dirs.unwrap();
            } else {
                assert_eq!(w.uncommitted(), (0, 0));
            }
            assert_eq!(fs::read(root.join("d/big")).unwrap(), content);
            assert!(!root.join("d/.big.hotclone-tmp").exists());
        }
        fs::remove_dir_all(&root).unwrap();
    }
}
