//! One writer per target disk.
//!
//! Two writers on one target are how a target gets corrupted: a killed
//! client's agent still finishing its buffered stream while a new pass
//! remounts the disk under it, or the same ext4 mounted through two loop
//! devices. So every pass holds an exclusive `flock(2)` on a lock file
//! that belongs to the disk, and the agent holds the very same lock:
//!
//! - **Image target:** the lock file sits beside the image
//!   ([`image_lock_path`]). The client takes it before it attaches or
//!   mounts anything and keeps it until the disk is unmounted and
//!   detached. The agent, its child, inherits the locked file ([`LOCK_FD`])
//!   so the lock outlives a killed client for as long as its agent lives.
//! - **Live target:** in the rescue VM every `hotclone target ...` command
//!   and the agent itself take the lock file of the disk
//!   ([`device_lock_path`]) for as long as they run.
//!
//! A `flock` is released by the kernel when the last process holding the
//! open file dies, however it dies, so a lock can never be left stale.
//! Taking a lock that is held waits (the holder may be an agent finishing
//! its last write after its client died), then fails naming the holder.
//!
//! The file's content says who holds it, and is emptied when the holder
//! lets go cleanly. A holder that finds it non-empty knows that the last
//! holder died while it held the disk ([`TargetLock::previous_died`]); the
//! caller then checks the filesystems before it writes into them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The descriptor number under which a local agent inherits its client's
/// lock (`hotclone agent --lock-fd 3`).
pub const LOCK_FD: i32 = 3;

/// How long a pass waits for the previous holder by default: a killed
/// client's agent needs a moment to notice and stop.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// How long to wait for a held target: `HOTCLONE_LOCK_WAIT` seconds (0:
/// refuse at once), else [`DEFAULT_WAIT`].
pub fn wait_time() -> Duration {
    std::env::var("HOTCLONE_LOCK_WAIT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WAIT)
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("opening the target's lock file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the target is in use by another hotclone ({holder}), still after {waited}s: its lock {path} is held. Only one writer at a time may touch a target. Wait for it to finish, or stop it (it is safe to stop: the next pass continues)", path = path.display(), waited = waited.as_secs())]
    Held {
        path: PathBuf,
        holder: String,
        waited: Duration,
    },
    #[error("locking {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("descriptor {fd} does not hold the target's lock: {reason}; the agent must be started by a client that holds it")]
    NotInherited { fd: i32, reason: String },
}

/// The lock file of an image target: `.NAME.hotclone-lock` beside the
/// image (the clone's working copies, `NAME.raw.partial` and
/// `NAME.sync.raw`, are covered by the same lock).
pub fn image_lock_path(image: &Path) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    image.with_file_name(format!(".{name}.hotclone-lock"))
}

/// The lock file of a whole disk in the rescue VM: `/run/hotclone-vda.lock`
/// for `/dev/vda`.
pub fn device_lock_path(disk: &Path) -> PathBuf {
    let name = disk
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    PathBuf::from(format!("/run/hotclone-{name}.lock"))
}

/// An exclusive lock on a target, held until dropped (or, inherited, until
/// every process holding it ended).
#[derive(Debug)]
pub struct TargetLock {
    file: File,
    path: PathBuf,
    previous: Option<String>,
    /// Whether dropping empties the holder note (a clean release).
    owner: bool,
}

impl TargetLock {
    /// Take the lock at `path`, waiting up to `wait` for a holder to let
    /// go. `role` goes into the holder note ("sync of web01").
    pub fn acquire(path: &Path, role: &str, wait: Duration) -> Result<TargetLock, LockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| LockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let started = Instant::now();
        loop {
            match try_flock(&file) {
                Ok(true) => break,
                Ok(false) if started.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Ok(false) => {
                    return Err(LockError::Held {
                        path: path.to_path_buf(),
                        holder: holder_of(&file),
                        waited: started.elapsed(),
                    })
                }
                Err(source) => {
                    return Err(LockError::Lock {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        }
        let mut lock = TargetLock {
            file,
            path: path.to_path_buf(),
            previous: None,
            owner: true,
        };
        let before = lock.read_note();
        lock.previous = (!before.trim().is_empty()).then(|| before.trim().to_string());
        lock.write_note(&format!(
            "{role}: pid {} on {}, since unix time {}",
            std::process::id(),
            hostname(),
            unix_now()
        ))
        .map_err(|source| LockError::Lock {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(lock)
    }

    /// The lock a client handed down as descriptor `fd`. Checks that the
    /// descriptor really holds it (a `flock` on the same open file is a
    /// no-op for its holder, and would fail for anyone else). Dropping it
    /// leaves the note alone: the client owns it.
    pub fn inherited(fd: i32) -> Result<TargetLock, LockError> {
        use std::os::fd::FromRawFd;
        // SAFETY: fcntl(F_GETFD) on an arbitrary number only reports.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(LockError::NotInherited {
                fd,
                reason: std::io::Error::last_os_error().to_string(),
            });
        }
        // SAFETY: the descriptor is open (checked above) and given to us
        // by our parent for exactly this; nothing else in this process
        // uses it.
        let file = unsafe { File::from_raw_fd(fd) };
        match try_flock(&file) {
            Ok(true) => Ok(TargetLock {
                file,
                path: PathBuf::from(format!("/proc/self/fd/{fd}")),
                previous: None,
                owner: false,
            }),
            Ok(false) => Err(LockError::NotInherited {
                fd,
                reason: format!("another process holds it ({})", holder_of(&file)),
            }),
            Err(e) => Err(LockError::NotInherited {
                fd,
                reason: e.to_string(),
            }),
        }
    }

    /// The holder note left by a holder that died while holding the
    /// target (None after a clean release).
    pub fn previous_died(&self) -> Option<&str> {
        self.previous.as_deref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The locked file, for handing down to an agent.
    pub fn as_raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Add to the holder note (the agent's PID, once it runs).
    pub fn note(&self, more: &str) {
        let now = self.read_note();
        let _ = self.write_note(&format!("{}; {more}", now.trim()));
    }

    fn read_note(&self) -> String {
        let mut s = String::new();
        let mut f = &self.file;
        let _ = f.rewind();
        let _ = f.read_to_string(&mut s);
        s
    }

    fn write_note(&self, text: &str) -> std::io::Result<()> {
        let mut f = &self.file;
        f.set_len(0)?;
        f.rewind()?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        if self.owner {
            // A clean release: the next holder need not distrust the disk.
            let _ = self.file.set_len(0);
            let _ = self.file.sync_all();
        }
        // Closing the file releases the flock (once every inherited copy
        // is closed too).
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: Ok(false) when someone else holds it.
fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor we own.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Who holds `file`'s lock, from its note, with whether each PID named
/// there still runs on this host.
fn holder_of(file: &File) -> String {
    let mut s = String::new();
    let _ = (&*file).rewind();
    let _ = (&*file).read_to_string(&mut s);
    let note = s.trim();
    if note.is_empty() {
        return "no holder note".into();
    }
    let alive: Vec<String> = pids_in(note)
        .into_iter()
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        .map(|pid| pid.to_string())
        .collect();
    if alive.is_empty() {
        note.to_string()
    } else {
        format!("{note}; still running here: pid {}", alive.join(", "))
    }
}

/// The numbers that follow "pid " in a holder note.
fn pids_in(note: &str) -> Vec<u32> {
    note.split("pid ")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "this host".into())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hotclone-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("disk.img")
    }

    #[test]
    fn a_second_holder_waits_then_is_refused_naming_the_first() {
        let path = image_lock_path(&scratch("second"));
        let first = TargetLock::acquire(&path, "sync of web01", Duration::ZERO).unwrap();
        assert!(first.previous_died().is_none());
        let err = TargetLock::acquire(&path, "clone of web01", Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sync of web01"), "{err}");
        assert!(
            err.contains(&format!("still running here: pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let again = TargetLock::acquire(&path, "clone of web01", Duration::ZERO).unwrap();
        assert!(
            again.previous_died().is_none(),
            "a clean release leaves no note"
        );
    }

    #[test]
    fn a_holder_that_died_is_reported_to_the_next() {
        let path = image_lock_path(&scratch("died"));
        let first = TargetLock::acquire(&path, "sync of web01", Duration::ZERO).unwrap();
        // A process killed while holding it never runs its drop.
        std::mem::forget(first);
        // The forgotten descriptor still holds the flock in this process;
        // a real death closes it. Release it the way the kernel would.
        for fd in 3..1024 {
            let link = std::fs::read_link(format!("/proc/self/fd/{fd}"));
            if link.is_ok_and(|l| l == path) {
                unsafe { libc::close(fd) };
            }
        }
        let next = TargetLock::acquire(&path, "sync of web01", Duration::ZERO).unwrap();
        let died = next.previous_died().unwrap_or_default();
        assert!(died.starts_with("sync of web01: pid "), "{died}");
    }

    #[test]
    fn lock_paths_name_the_target() {
        assert_eq!(
            image_lock_path(Path::new("/vm/web01.qcow2")),
            PathBuf::from("/vm/.web01.qcow2.hotclone-lock")
        );
        assert_eq!(
            device_lock_path(Path::new("/dev/vda")),
            PathBuf::from("/run/hotclone-vda.lock")
        );
        assert_eq!(pids_in("sync: pid 12 on h; agent pid 345"), vec![12, 345]);
    }
}
