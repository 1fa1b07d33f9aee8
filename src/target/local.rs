//! The image target: a raw or qcow2 file on this machine, attached to a
//! loop device and mounted under the migration's staging directory. The
//! agent runs as a child process of this one; conversion runs here, in an
//! unshare + chroot of the staging tree.
//!
//! A qcow2 image is written through a raw working copy (this host mounts
//! raw disks only): a clone converts it at the end, a sync pass unpacks
//! the image first and packs it again when it closes.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use super::image::{self, FsCheck, PreparedImage};
use super::lock::{self, TargetLock};
use super::{AgentLink, AgentProcess, Converted, StateFile, StateWriter, Target};
use crate::migration::Migration;
use crate::plan::{ImageFormat, Plan, TargetSpec};
use crate::probe::Inventory;
use crate::progress::Progress;
use crate::target::CloneError;

/// The working raw disk of a clone while it is being made (renamed, or
/// converted to qcow2, when the clone finishes).
pub fn partial_raw(path: &Path) -> PathBuf {
    path.with_extension("raw.partial")
}

/// The raw disk a sync pass writes: the image itself, or for a qcow2
/// image a raw working copy beside it, converted back when the pass ends.
/// A pass that was interrupted leaves its working copy, which the next
/// pass continues from: the journal describes it, not the older qcow2.
pub fn working_disk(path: &Path, format: ImageFormat) -> (PathBuf, bool) {
    match format {
        ImageFormat::Raw => (path.to_path_buf(), false),
        ImageFormat::Qcow2 => (path.with_extension("sync.raw"), true),
    }
}

/// An image target, prepared and mounted, with the target's lock held
/// (see [`lock`]): from before anything is attached until the disk is
/// unmounted and detached again, and by the agent as well.
pub struct LocalImage {
    prepared: PreparedImage,
    /// The hotclone binary that runs the agent.
    agent_program: PathBuf,
    image: PathBuf,
    /// Sync of a qcow2 image: pack the working copy back when closing.
    repack: Option<PathBuf>,
    /// Declared last: dropped after `prepared` has unmounted and detached.
    lock: TargetLock,
}

/// Take the image target's lock for `role` ("clone of web01"), waiting a
/// while for an earlier pass's agent to stop.
pub fn lock_image(image: &Path, role: &str) -> Result<TargetLock, CloneError> {
    Ok(
        TargetLock::acquire(&lock::image_lock_path(image), role, lock::wait_time())
            .map_err(image::ImageError::from)?,
    )
}

fn image_of(plan: &Plan) -> Result<(PathBuf, ImageFormat), CloneError> {
    match &plan.target {
        TargetSpec::Image { path, format, .. } => Ok((path.clone(), *format)),
        other => Err(CloneError::Target(format!(
            "not an image target: {other:?}"
        ))),
    }
}

impl LocalImage {
    /// For a clone: a new disk, the same made again over the half-made one
    /// a clone killed while preparing left (`Redo`), or the partial disk an
    /// interrupted clone left (`Resume`). The disk is kept from now on when
    /// a later step fails (the journal describes what it holds).
    pub fn for_clone(
        plan: &Plan,
        migration: &Migration,
        agent_program: PathBuf,
        start: super::CloneStart,
    ) -> Result<LocalImage, CloneError> {
        let (image, _) = image_of(plan)?;
        let lock = lock_image(&image, &format!("clone of {}", migration.name))?;
        let raw = partial_raw(&image);
        if start == super::CloneStart::Redo && raw.exists() {
            // Ours (the journal says a clone of this migration was making
            // it) and empty of files: released and made again.
            image::release_stale(&raw, &migration.staging_dir())?;
            std::fs::remove_file(&raw).map_err(|e| {
                CloneError::Target(format!("removing the half-made {}: {e}", raw.display()))
            })?;
        }
        let mut prepared = if start == super::CloneStart::Resume {
            if !raw.exists() {
                return Err(image::ImageError::DiskGone { path: raw }.into());
            }
            image::attach(plan, &raw, &migration.staging_dir(), FsCheck::after(&lock))?
        } else {
            image::prepare(plan, &raw, &migration.staging_dir())?
        };
        prepared.keep();
        Ok(LocalImage {
            prepared,
            agent_program,
            image,
            repack: None,
            lock,
        })
    }

    /// For a sync pass: the finished image, attached again (through a raw
    /// working copy for qcow2).
    pub fn for_sync(
        plan: &Plan,
        migration: &Migration,
        agent_program: PathBuf,
        progress: &mut dyn Progress,
    ) -> Result<LocalImage, CloneError> {
        let (image, format) = image_of(plan)?;
        progress.phase("waiting for the target's lock");
        let lock = lock_image(&image, &format!("sync of {}", migration.name))?;
        let (disk, qcow2) = working_disk(&image, format);
        if qcow2 && !disk.exists() {
            progress.phase("unpacking the qcow2 image for writing");
            image::run(
                "qemu-img",
                &[
                    "convert",
                    "-O",
                    "raw",
                    &image.to_string_lossy(),
                    &disk.to_string_lossy(),
                ],
                "qemu-utils",
            )?;
        }
        progress.phase("attaching the target disk");
        let prepared = image::attach(plan, &disk, &migration.staging_dir(), FsCheck::after(&lock))?;
        Ok(LocalImage {
            prepared,
            agent_program,
            repack: qcow2.then(|| disk.clone()),
            image,
            lock,
        })
    }
}

struct LocalAgent(Child);

impl AgentProcess for LocalAgent {
    fn wait(mut self: Box<Self>) -> Result<Option<String>, CloneError> {
        let status = self.0.wait().map_err(|source| CloneError::Agent {
            what: "waiting for the agent".into(),
            source,
        })?;
        Ok((!status.success()).then(|| status.to_string()))
    }
}

#[async_trait::async_trait]
impl Target for LocalImage {
    fn root(&self) -> &Path {
        &self.prepared.root
    }

    /// zstd's fastest useful level: the stream only crosses a pipe, so
    /// its size does not matter and its CPU does (the copy shares the
    /// cores with it). `zstd -b` on 200 MB of /usr/lib here: --fast=1000
    /// packs at 1,381 MB/s and unpacks at 2,128 MB/s; level -5 at 266
    /// and 659; level 3 at about 210 and 900.
    fn wire_level(&self) -> i32 {
        -1000
    }

    fn describe(&self) -> String {
        self.image.display().to_string()
    }

    async fn hash_files(&self, tool: &str, paths: &[u8]) -> Result<Vec<u8>, CloneError> {
        use crate::stream::hashing as checksum;
        let err = |e: std::io::Error| super::error::checksum_error(tool, e);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(checksum::command(tool, &self.root().display().to_string()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(err)?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = paths.to_vec();
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
        let out = tokio::task::block_in_place(|| child.wait_with_output()).map_err(err)?;
        let _ = writer.join();
        Ok(out.stdout)
    }

    async fn agent(&self, sweep: bool) -> Result<AgentLink, CloneError> {
        let mut command = Command::new(&self.agent_program);
        command
            .arg("agent")
            .arg("--root")
            .arg(self.root())
            .arg("--lock-fd")
            .arg(lock::LOCK_FD.to_string());
        if sweep {
            command.arg("--sweep");
        }
        let held = self.lock.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls: dup2
        // (which leaves the new descriptor without FD_CLOEXEC) and fcntl.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(move || {
                if held == lock::LOCK_FD {
                    let flags = libc::fcntl(held, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(held, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(held, lock::LOCK_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| CloneError::Agent {
                what: format!("starting {} agent", self.agent_program.display()),
                source,
            })?;
        self.lock.note(&format!("agent pid {}", child.id()));
        let input = child
            .stdin
            .take()
            .ok_or_else(|| CloneError::internal("agent stdin"))?;
        let acks = child
            .stdout
            .take()
            .ok_or_else(|| CloneError::internal("agent stdout"))?;
        Ok(AgentLink {
            input: Box::new(input),
            acks: Box::new(BufReader::new(acks)),
            process: Box::new(LocalAgent(child)),
        })
    }

    fn state_writer(&self) -> StateWriter {
        let dir = crate::migration::target_state(self.root());
        Arc::new(move |name: &str, file: StateFile<'_>| write_state_file(&dir, name, file))
    }

    async fn convert(
        &mut self,
        inv: &Inventory,
        plan: &Plan,
        journal: &Path,
        progress: &mut dyn Progress,
    ) -> Result<Converted, CloneError> {
        let notes = crate::target::conversion::convert_phase(inv, plan, &self.prepared, progress)?;
        Ok(Converted {
            notes,
            files: crate::verify::converted_files(self.root(), journal)?,
        })
    }

    async fn finish(
        self: Box<Self>,
        plan: &Plan,
        _progress: &mut dyn Progress,
    ) -> Result<String, CloneError> {
        let image = self.prepared.finish(plan)?;
        Ok(image.display().to_string())
    }

    async fn close(self: Box<Self>, progress: &mut dyn Progress) -> Result<(), CloneError> {
        progress.phase("closing the target disk");
        self.prepared.close()?;
        if let Some(disk) = &self.repack {
            progress.phase("writing the qcow2 image");
            let tmp = self.image.with_extension("qcow2.tmp");
            image::run(
                "qemu-img",
                &[
                    "convert",
                    "-O",
                    "qcow2",
                    &disk.to_string_lossy(),
                    &tmp.to_string_lossy(),
                ],
                "qemu-utils",
            )?;
            std::fs::rename(&tmp, &self.image).map_err(|e| {
                CloneError::Target(format!("replacing {}: {e}", self.image.display()))
            })?;
            std::fs::remove_file(disk)
                .map_err(|e| CloneError::Target(format!("removing {}: {e}", disk.display())))?;
        }
        Ok(())
    }
}

/// Write `dir/name` atomically (a temporary beside it, then a rename),
/// creating `dir` readable by root only. The journal goes straight there
/// (`VACUUM INTO`), without a copy in between.
pub fn write_state_file(dir: &Path, name: &str, file: StateFile<'_>) -> Result<(), CloneError> {
    let io = |what: &str, e: std::io::Error| {
        CloneError::Target(format!("{what} {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io("protecting", e))?;
    let bytes = match file {
        StateFile::Journal(journal) => return Ok(journal.copy_to(&dir.join(name))?),
        StateFile::Bytes(bytes) => bytes,
    };
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| io("writing the state into", e))?;
    std::fs::rename(&tmp, dir.join(name)).map_err(|e| io("writing the state into", e))
}
