//! The image target: a local raw or qcow2 disk image, made ready for the
//! agent. Steps: create the raw file (never over an existing one),
//! partition it as planned, attach it to a loop device (`losetup` +
//! `partx -a`, since the host kernel parses no partition tables itself),
//! mkfs each partition with the planned features and a UUID chosen here,
//! and mount the tree under a staging directory.
//!
//! Everything attached or mounted is owned by a guard ([`PreparedImage`])
//! that unmounts, detaches and removes its partition devices when dropped,
//! on success and on failure alike. [`PreparedImage::finish`] does the same
//! in order and with checks: sync, unmount, fsck, detach, then (for qcow2)
//! `qemu-img convert`. A failure says which command failed and its output.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plan::{FsType, ImageFormat, Partition, PartitionRole, Plan, TargetSpec};
use crate::random::bytes as random_bytes;
use crate::target::partition;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path} already exists; hotclone never overwrites a disk image. Remove it or choose another path")]
    Exists { path: PathBuf },
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("partitioning {path}: {source}")]
    Partition {
        path: PathBuf,
        source: partition::PartitionError,
    },
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("`{command}` could not start: {source}. Is it installed ({package})?")]
    Missing {
        command: String,
        package: &'static str,
        source: std::io::Error,
    },
    #[error("the target disk {path} is gone; the journal describes a disk that no longer exists. Start over with `hotclone forget NAME` and a new clone")]
    DiskGone { path: PathBuf },
    #[error("{point} is still mounted by an interrupted run and will not unmount ({why}); find its user with `fuser -vm {point}`")]
    Busy { point: PathBuf, why: String },
    #[error("{device} is too small for the plan: it needs {}, the disk has {}. Give the VM a larger disk", crate::units::format_bytes(*needed), crate::units::format_bytes(*available))]
    TooSmall {
        device: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("the target {0} is not a disk image on this machine")]
    NotAnImage(String),
    #[error("{device} is not the disk the plan names ({planned}); hotclone writes only to the planned disk. Plan again for this disk")]
    NotPlanned { device: PathBuf, planned: String },
    #[error("{device} is in use ({what}); hotclone only writes to a disk nothing uses. Unmount or release it first, or name another disk")]
    InUse { device: PathBuf, what: String },
    #[error("{device} is still mounted elsewhere, so hotclone will not detach or mount it again (two mounts of one filesystem corrupt it): {holders}. Stop that process (a killed hotclone's agent, or the shell of an `ip netns exec` it ran in) and run the command again")]
    MountedElsewhere { device: PathBuf, holders: String },
    #[error("the target filesystem on {device} is damaged, so hotclone will not write into it. `e2fsck -fn` said: {output}. Look at it with `e2fsck -f {device}` (it can repair), or start the clone over")]
    Damaged { device: PathBuf, output: String },
    #[error(transparent)]
    Lock(#[from] super::lock::LockError),
    #[error("partition device {0} did not appear after the partition table was read")]
    NoPartitionDevice(PathBuf),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Run a host command; its output goes into the error when it fails.
pub fn run(program: &str, args: &[&str], package: &'static str) -> Result<String, ImageError> {
    let shown = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| ImageError::Missing {
            command: shown.clone(),
            package,
            source,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(ImageError::Command {
            command: shown,
            output: format!("{} ({})", text.trim(), out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A random (version 4) UUID in its usual text form.
pub fn new_uuid() -> Result<String, ImageError> {
    let mut b = random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// A filesystem made on the target, for conversion (fstab, bootloader).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewFilesystem {
    pub number: u32,
    /// None for swap.
    pub mount_point: Option<String>,
    pub fs_type: FsType,
    pub uuid: String,
    pub device: PathBuf,
    /// What it replaces on the source (device path as the source named it).
    pub source_device: Option<String>,
}

/// A loop device with its partitions; detached on drop.
#[derive(Debug)]
pub struct LoopDisk {
    pub device: PathBuf,
}

impl LoopDisk {
    pub fn attach(image: &Path) -> Result<LoopDisk, ImageError> {
        Self::attach_with(image, false)
    }

    pub fn attach_with(image: &Path, read_only: bool) -> Result<LoopDisk, ImageError> {
        let path = image.to_string_lossy();
        let mut args = vec!["-f", "--show"];
        if read_only {
            args.push("-r");
        }
        args.push(&path);
        let dev = run("losetup", &args, "mount")?;
        let disk = LoopDisk {
            device: PathBuf::from(dev.trim()),
        };
        if !read_only {
            disk.write_around_the_page_cache();
        }
        // -u, not -a: it also corrects partitions an earlier user of this
        // loop device left behind (its `partx -d` failed on a busy
        // partition, and `losetup -d` keeps them), where -a failed with
        // "error adding partition N".
        run(
            "partx",
            &["-u", &disk.device.to_string_lossy()],
            "util-linux",
        )?;
        Ok(disk)
    }

    /// Direct I/O from the loop device to the image file, where the
    /// kernel and util-linux (2.30 and later) allow it: each write is then
    /// copied once, not into the page cache of the filesystem in the image
    /// and again into that of the image file, which each flush (every
    /// `syncfs` of the agent's group commits) had to write back. W2 (200,000 small files) cloned into an image:
    /// copy phase 50.6 s buffered, 39.8 s and 44.4 s with direct I/O
    /// (issue 16). Where it is refused the loop stays buffered, which is
    /// only slower.
    fn write_around_the_page_cache(&self) {
        let dev = self.device.to_string_lossy();
        if let Err(e) = run("losetup", &["--direct-io=on", &dev], "mount") {
            tracing::debug!("{dev} stays buffered: {e}");
        }
    }

    /// Whether the kernel does direct I/O for this loop device.
    pub fn direct_io(&self) -> bool {
        let name = self
            .device
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        std::fs::read_to_string(format!("/sys/block/{name}/loop/dio"))
            .is_ok_and(|v| v.trim() == "1")
    }

    pub fn partition(&self, number: u32) -> Result<PathBuf, ImageError> {
        wait_for_node(partition_path(&self.device, number))
    }

    fn detach(&mut self) -> Result<(), ImageError> {
        if self.device.as_os_str().is_empty() {
            return Ok(());
        }
        let dev = self.device.to_string_lossy().into_owned();
        drop_partitions(&dev);
        run("losetup", &["-d", &dev], "mount")?;
        self.device = PathBuf::new();
        Ok(())
    }
}

/// Remove a loop device's partitions before it is detached (`losetup -d`
/// keeps them). Once, without waiting: a partition still busy (udev's
/// probe, a copy of a mount in another mount namespace) stays, and the next
/// attach of the device corrects it (`partx -u`). A wait here lengthened
/// the end of a run that had already recorded its result, and a kill
/// landing in it made the same command, run again, refuse as "already
/// cloned" (fault_lab).
fn drop_partitions(dev: &str) {
    let _ = run("partx", &["-d", dev], "util-linux");
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}

/// The disk the target's filesystems are made on: an image file attached
/// to a loop device (on the client), or a whole block device (the VM's
/// disk, seen from the rescue system).
#[derive(Debug)]
pub enum DiskHandle {
    Loop(LoopDisk),
    Device(PathBuf),
}

impl DiskHandle {
    pub fn device(&self) -> &Path {
        match self {
            DiskHandle::Loop(l) => &l.device,
            DiskHandle::Device(d) => d,
        }
    }

    /// Partition `number`'s device node (`vda1`, `loop0p1`, `nvme0n1p1`).
    pub fn partition(&self, number: u32) -> Result<PathBuf, ImageError> {
        match self {
            DiskHandle::Loop(l) => l.partition(number),
            DiskHandle::Device(d) => wait_for_node(partition_path(d, number)),
        }
    }

    fn detach(&mut self) -> Result<(), ImageError> {
        match self {
            DiskHandle::Loop(l) => l.detach(),
            DiskHandle::Device(_) => Ok(()),
        }
    }
}

/// The device node of partition `number` of the disk `disk`.
pub fn partition_path(disk: &Path, number: u32) -> PathBuf {
    let d = disk.display().to_string();
    let sep = if d.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    PathBuf::from(format!("{d}{sep}{number}"))
}

/// devtmpfs creates partition nodes asynchronously; give it a moment.
fn wait_for_node(dev: PathBuf) -> Result<PathBuf, ImageError> {
    for _ in 0..100 {
        if dev.exists() {
            return Ok(dev);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(ImageError::NoPartitionDevice(dev))
}

/// Mount points made by us, unmounted in reverse order on drop.
#[derive(Debug, Default)]
pub struct Mounts {
    pub points: Vec<PathBuf>,
}

impl Mounts {
    fn unmount_all(&mut self) -> Result<(), ImageError> {
        while let Some(point) = self.points.pop() {
            if let Err(e) = run("umount", &[&point.to_string_lossy()], "mount") {
                self.points.push(point);
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Mounts {
    /// Unmount everything, lazily where a clean unmount fails, so a failed
    /// run leaves no mount behind.
    fn release(&mut self) {
        if self.unmount_all().is_err() {
            while let Some(point) = self.points.pop() {
                let _ = run("umount", &["-l", &point.to_string_lossy()], "mount");
            }
        }
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        self.release();
    }
}

/// The image, partitioned, formatted and mounted at `root`. Dropped
/// without [`PreparedImage::finish`], it unmounts, detaches and deletes the
/// half-made raw file: a failed clone leaves nothing behind.
///
/// Once files were copied into it, [`PreparedImage::keep`] makes a drop
/// keep the raw file (unmounted and detached): the journal describes it,
/// and the next run continues from it. [`attach`] opens such a disk again.
#[derive(Debug)]
pub struct PreparedImage {
    pub raw: PathBuf,
    pub root: PathBuf,
    pub filesystems: Vec<NewFilesystem>,
    mounts: Mounts,
    disk: DiskHandle,
    finished: bool,
    keep: bool,
}

impl Drop for PreparedImage {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.mounts.release();
        let _ = self.disk.detach();
        // A block device is never removed; only an image file made here.
        if !self.keep && matches!(self.disk, DiskHandle::Loop(_)) {
            let _ = std::fs::remove_file(&self.raw);
        }
    }
}

/// How far to trust an existing target's filesystems before writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsCheck {
    /// Check a filesystem that is not marked clean (it was not unmounted:
    /// the host or VM went down). A clean one is trusted.
    IfUnclean,
    /// The last holder of the target died while it held it: check every
    /// filesystem fully (`e2fsck -fn`) whatever its state.
    Full,
}

impl FsCheck {
    /// The check a lock calls for: full when its last holder died.
    pub fn after(lock: &super::lock::TargetLock) -> FsCheck {
        if lock.previous_died().is_some() {
            FsCheck::Full
        } else {
            FsCheck::IfUnclean
        }
    }
}

/// Attach and mount an existing target disk (made by [`prepare`], possibly
/// by a run that was interrupted) read-write under `staging`. Whatever an
/// interrupted run left attached or mounted is released first, and the
/// filesystems are checked (`check`) before they are mounted; a damaged
/// one is refused. Dropped, it unmounts and detaches; the disk is never
/// deleted. The caller holds the target's [`super::lock::TargetLock`].
pub fn attach(
    plan: &Plan,
    raw: &Path,
    staging: &Path,
    check: FsCheck,
) -> Result<PreparedImage, ImageError> {
    if !raw.exists() {
        return Err(ImageError::DiskGone {
            path: raw.to_path_buf(),
        });
    }
    release_stale(raw, staging)?;
    let disk = DiskHandle::Loop(LoopDisk::attach(raw)?);
    reattached(plan, raw, staging, disk, check)
}

/// Mount the filesystems of an existing target on the block device
/// `device` (the rescue system's view of the VM's disk) under `staging`,
/// after releasing what an interrupted run left mounted there.
pub fn attach_device(
    plan: &Plan,
    device: &Path,
    staging: &Path,
    check: FsCheck,
) -> Result<PreparedImage, ImageError> {
    release_stale(Path::new(""), staging)?;
    super::device::wait_unclaimed(device, UNCLAIM_WAIT)?;
    reattached(
        plan,
        device,
        staging,
        DiskHandle::Device(device.to_path_buf()),
        check,
    )
}

/// How long a disk still mounted elsewhere is given to be released (a
/// killed run's mount namespace going away) before it is refused.
const UNCLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

fn reattached(
    plan: &Plan,
    raw: &Path,
    staging: &Path,
    disk: DiskHandle,
    check: FsCheck,
) -> Result<PreparedImage, ImageError> {
    let filesystems = filesystems(plan, &disk, |_, _, device| {
        let uuid = run(
            "blkid",
            &["-p", "-s", "UUID", "-o", "value", &device.to_string_lossy()],
            "util-linux",
        )?;
        Ok(uuid.trim().to_string())
    })?;
    for fs in &filesystems {
        check_filesystem(fs, check)?;
    }
    mounted(raw, staging, filesystems, disk, true)
}

/// Never trust, always check: before a pass writes into an existing
/// ext2/3/4 filesystem, replay its journal if it was not unmounted, and
/// run `e2fsck -fn` (read-only) when it was not clean or `check` is
/// [`FsCheck::Full`]. Any error it reports refuses the target. Other
/// filesystem types are mounted as they are (their own log recovery).
fn check_filesystem(fs: &NewFilesystem, check: FsCheck) -> Result<(), ImageError> {
    if !matches!(fs.fs_type, FsType::Ext2 | FsType::Ext3 | FsType::Ext4) {
        return Ok(());
    }
    let dev = fs.device.to_string_lossy().into_owned();
    let header = run("dumpe2fs", &["-h", &dev], "e2fsprogs")?;
    let unclean = ext_needs_check(&header);
    if unclean {
        tracing::info!("{dev} was not unmounted cleanly: replaying its journal, then checking it");
        // Replays the journal only (what a mount would do), no repairs.
        // Exit 1 means "replayed".
        if let Err(e) = run("e2fsck", &["-E", "journal_only", "-p", &dev], "e2fsprogs") {
            if !matches!(&e, ImageError::Command { output, .. } if output.contains("exit status: 1)"))
            {
                return Err(e);
            }
        }
    }
    if !unclean && check == FsCheck::IfUnclean {
        return Ok(());
    }
    match run("e2fsck", &["-f", "-n", &dev], "e2fsprogs") {
        Ok(_) => {
            tracing::info!("{dev}: e2fsck -fn found no damage");
            Ok(())
        }
        Err(ImageError::Command { output, .. }) => Err(ImageError::Damaged {
            device: fs.device.clone(),
            output: last_lines(&output, 12),
        }),
        Err(e) => Err(e),
    }
}

/// Whether a `dumpe2fs -h` header shows a filesystem that was not
/// unmounted cleanly (journal to replay) or is marked with errors.
pub fn ext_needs_check(header: &str) -> bool {
    header.lines().any(|l| {
        let l = l.trim();
        (l.starts_with("Filesystem features:") && l.contains("needs_recovery"))
            || (l.starts_with("Filesystem state:") && !l.ends_with(" clean"))
    })
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Undo what a killed run left behind for this disk: mounts at or under
/// `staging` in this mount namespace (deepest first; a busy one is retried
/// for a while) and loop devices backed by `raw`. The caller holds the
/// target's lock, so no agent of an earlier pass still writes. A loop
/// device still mounted in another mount namespace is never detached
/// ([`super::device::wait_unclaimed`]): mounting the same filesystem
/// through a second loop device would corrupt it, so such a leftover is an
/// error naming who holds it.
pub fn release_stale(raw: &Path, staging: &Path) -> Result<(), ImageError> {
    unmount_under(staging)?;
    if raw.is_file() {
        let raw_s = raw.to_string_lossy().into_owned();
        let held = run("losetup", &["-j", &raw_s, "-n", "-O", "NAME"], "mount")?;
        let devices: Vec<&Path> = held.split_whitespace().map(Path::new).collect();
        // A killed client's mount(8) may finish after the client died, so
        // a mount under `staging` can land here after the scan above, on
        // any of the image's devices: look again while any of them stays
        // claimed, and detach none before (one detached first would fail
        // that late mount, or take the device from under it).
        let started = std::time::Instant::now();
        while devices
            .iter()
            .flat_map(|dev| super::device::with_partitions(dev))
            .any(|d| super::device::claimed(&d).unwrap_or(false))
            && started.elapsed() < UNCLAIM_WAIT
        {
            unmount_under(staging)?;
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        for dev in devices {
            // Still mounted in some other mount namespace (a killed
            // client's, kept alive by its agent or its shell)? Then it is
            // not ours to detach: detaching would leave that mount writing
            // while we mount the image again through a second device.
            super::device::wait_unclaimed(dev, std::time::Duration::ZERO)?;
            let dev = dev.to_string_lossy();
            drop_partitions(&dev);
            run("losetup", &["-d", &dev], "mount")?;
            tracing::info!("detached {dev}, left attached to {raw_s} by an interrupted run");
        }
    }
    Ok(())
}

/// Unmount what is mounted at or under `staging` in this mount namespace,
/// deepest first; a busy mount is retried for 30 s.
fn unmount_under(staging: &Path) -> Result<(), ImageError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut stale: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(staging))
        .collect();
    stale.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in stale {
        let at = point.to_string_lossy().into_owned();
        let mut tries = 0;
        while let Err(e) = run("umount", &[&at], "mount") {
            tries += 1;
            if tries > 60 {
                return Err(ImageError::Busy {
                    point: point.clone(),
                    why: e.to_string(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        tracing::info!("unmounted {at}, left mounted by an interrupted run");
    }
    Ok(())
}

fn mkfs(fs: FsType, part: &Partition, device: &Path, uuid: &str) -> Result<(), ImageError> {
    let dev = device.to_string_lossy().into_owned();
    let mut args: Vec<String> = Vec::new();
    let program = match fs {
        FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => {
            args.extend(["-q", "-F", "-t", fs.name(), "-U", uuid].map(String::from));
            if let Some(label) = &part.label {
                args.extend(["-L".into(), label.chars().take(16).collect()]);
            }
            if let Some(n) = part.inodes {
                args.extend(["-N".into(), n.to_string()]);
            }
            "mke2fs"
        }
        FsType::Xfs => {
            args.extend([
                "-q".into(),
                "-f".into(),
                "-m".into(),
                format!("uuid={uuid}"),
            ]);
            if let Some(label) = &part.label {
                args.extend(["-L".into(), label.chars().take(12).collect()]);
            }
            "mkfs.xfs"
        }
        FsType::Btrfs => {
            args.extend(["-q", "-f", "-U", uuid].map(String::from));
            "mkfs.btrfs"
        }
        FsType::Vfat => {
            args.extend(["-i".into(), uuid.replace('-', "")[..8].to_string()]);
            "mkfs.vfat"
        }
        FsType::Swap => {
            args.extend(["-U", uuid].map(String::from));
            "mkswap"
        }
    };
    if let Some(choice) = &part.fs {
        args.extend(crate::plan::fs_rules::mkfs_args(choice));
    }
    args.push(dev);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let package = match fs {
        FsType::Xfs => "xfsprogs",
        FsType::Btrfs => "btrfs-progs",
        FsType::Vfat => "dosfstools",
        _ => "e2fsprogs",
    };
    run(program, &refs, package).map(|_| ())
}

/// Mount `(mount point, device)` pairs under `root`, parents first, on a
/// shared bind of `root` itself.
fn mount_tree(
    targets: &[(&str, &Path)],
    root: &Path,
    options: &[&str],
    mounts: &mut Mounts,
) -> Result<(), ImageError> {
    // The root becomes a shared bind of itself first. A process that
    // `ip netns exec` (or any unshare) starts while the tree is mounted
    // gets a copy of it, as a slave: under a private root, that copy
    // outlived our unmount and kept the partition "in use" (e2fsck
    // refused, a next run found it mounted elsewhere). Under a shared one,
    // the unmount reaches the copies.
    std::fs::create_dir_all(root)?;
    let at = root.to_string_lossy();
    run("mount", &["--bind", &at, &at], "mount")?;
    mounts.points.push(root.to_path_buf());
    run("mount", &["--make-shared", &at], "mount")?;
    let mut order = targets.to_vec();
    order.sort_by_key(|(m, _)| {
        m.trim_end_matches('/').matches('/').count() + usize::from(*m != "/")
    });
    for (mp, device) in order {
        let point = root.join(mp.trim_start_matches('/'));
        std::fs::create_dir_all(&point)?;
        let (dev, at) = (device.to_string_lossy(), point.to_string_lossy());
        let mut args: Vec<&str> = options.to_vec();
        args.extend([dev.as_ref(), at.as_ref()]);
        run("mount", &args, "mount")?;
        mounts.points.push(point);
    }
    Ok(())
}

/// A finished image mounted read-only (for `verify`). A qcow2 image is
/// first converted to a temporary raw copy, since this host has no nbd.
/// Everything is released, and the temporary copy deleted, on drop.
#[derive(Debug)]
pub struct ReadOnlyImage {
    pub root: PathBuf,
    mounts: Mounts,
    disk: LoopDisk,
    temporary: Option<PathBuf>,
    /// The target's lock: no pass writes while this reads. Declared last,
    /// so it goes after the drop has unmounted and detached.
    _lock: super::lock::TargetLock,
}

impl Drop for ReadOnlyImage {
    fn drop(&mut self) {
        self.mounts.release();
        let _ = self.disk.detach();
        if let Some(t) = &self.temporary {
            let _ = std::fs::remove_file(t);
        }
    }
}

pub fn open_read_only(plan: &Plan, work: &Path) -> Result<ReadOnlyImage, ImageError> {
    let TargetSpec::Image { path, format, .. } = &plan.target else {
        return Err(ImageError::NotAnImage(plan.target.display()));
    };
    std::fs::create_dir_all(work)?;
    let lock = super::lock::TargetLock::acquire(
        &super::lock::image_lock_path(path),
        "verify",
        super::lock::wait_time(),
    )?;
    let (raw, temporary) = match format {
        ImageFormat::Raw => (path.clone(), None),
        ImageFormat::Qcow2 => {
            let tmp = work.join("verify.raw");
            let _ = std::fs::remove_file(&tmp);
            run(
                "qemu-img",
                &[
                    "convert",
                    "-O",
                    "raw",
                    &path.to_string_lossy(),
                    &tmp.to_string_lossy(),
                ],
                "qemu-utils",
            )?;
            (tmp.clone(), Some(tmp))
        }
    };
    let mut image = ReadOnlyImage {
        root: work.join("mnt"),
        mounts: Mounts::default(),
        disk: LoopDisk::attach_with(&raw, true)?,
        temporary,
        _lock: lock,
    };
    let mut devices = Vec::new();
    for p in plan
        .disk
        .partitions
        .iter()
        .filter(|p| p.role == PartitionRole::Filesystem)
    {
        devices.push((
            p.mount_point.clone().unwrap_or_default(),
            image.disk.partition(p.number)?,
        ));
    }
    let targets: Vec<(&str, &Path)> = devices
        .iter()
        .map(|(m, d)| (m.as_str(), d.as_path()))
        .collect();
    mount_tree(
        &targets,
        &image.root.clone(),
        &["-o", "ro"],
        &mut image.mounts,
    )?;
    Ok(image)
}

/// Create, partition, format and mount the plan's image under `staging`.
/// The raw image is written at `raw` (for a qcow2 target, a temporary file
/// that [`PreparedImage::finish`] converts).
pub fn prepare(plan: &Plan, raw: &Path, staging: &Path) -> Result<PreparedImage, ImageError> {
    let TargetSpec::Image { path, .. } = &plan.target else {
        return Err(ImageError::NotAnImage(plan.target.display()));
    };
    for existing in [path.as_path(), raw] {
        if existing.exists() {
            return Err(ImageError::Exists {
                path: existing.to_path_buf(),
            });
        }
    }
    // From here on the raw file is ours: a failure removes it again (the
    // guards inside have unmounted and detached by then).
    let prepared = prepare_new(plan, raw, staging);
    if prepared.is_err() {
        let _ = std::fs::remove_file(raw);
    }
    prepared
}

fn prepare_new(plan: &Plan, raw: &Path, staging: &Path) -> Result<PreparedImage, ImageError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(raw)
        .map_err(|source| ImageError::Create {
            path: raw.to_path_buf(),
            source,
        })?;
    file.set_len(plan.disk.size_bytes)
        .map_err(|source| ImageError::Create {
            path: raw.to_path_buf(),
            source,
        })?;
    partition::write(&mut file, &plan.disk, bootable(plan)).map_err(|source| {
        ImageError::Partition {
            path: raw.to_path_buf(),
            source,
        }
    })?;
    file.sync_all()?;
    drop(file);

    let disk = DiskHandle::Loop(LoopDisk::attach(raw)?);
    formatted(plan, raw, staging, disk)
}

fn formatted(
    plan: &Plan,
    raw: &Path,
    staging: &Path,
    disk: DiskHandle,
) -> Result<PreparedImage, ImageError> {
    let filesystems = filesystems(plan, &disk, |fs_type, part, device| {
        let uuid = new_uuid()?;
        mkfs(fs_type, part, device, &uuid)?;
        Ok(uuid)
    })?;
    mounted(raw, staging, filesystems, disk, false)
}

/// The partition of the plan's bootloader (/boot, else /).
fn bootable(plan: &Plan) -> Option<u32> {
    plan.disk
        .partitions
        .iter()
        .find(|p| p.mount_point.as_deref() == Some("/boot"))
        .or_else(|| {
            plan.disk
                .partitions
                .iter()
                .find(|p| p.mount_point.as_deref() == Some("/"))
        })
        .map(|p| p.number)
}

/// Partition, format and mount the whole block device `device` as the
/// plan says, under `staging`. Refused when anything on the device is in
/// use (mounted, swap, held by LVM or MD) or the device is smaller than the
/// plan; nothing is written then.
pub fn prepare_device(
    plan: &Plan,
    device: &Path,
    staging: &Path,
) -> Result<PreparedImage, ImageError> {
    super::device::check_free(device)?;
    let size = super::device::size(device)?;
    if size < plan.disk.size_bytes {
        return Err(ImageError::TooSmall {
            device: device.to_path_buf(),
            needed: plan.disk.size_bytes,
            available: size,
        });
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|source| ImageError::Create {
            path: device.to_path_buf(),
            source,
        })?;
    // Old signatures at the start of the disk (a previous table, a
    // filesystem) would confuse probing; the new table replaces them.
    use std::io::{Seek, Write};
    file.write_all(&vec![0u8; 1 << 20])?;
    file.seek(std::io::SeekFrom::Start(0))?;
    partition::write(&mut file, &plan.disk, bootable(plan)).map_err(|source| {
        ImageError::Partition {
            path: device.to_path_buf(),
            source,
        }
    })?;
    file.sync_all()?;
    drop(file);
    run(
        "blockdev",
        &["--rereadpt", &device.to_string_lossy()],
        "util-linux",
    )?;
    formatted(
        plan,
        device,
        staging,
        DiskHandle::Device(device.to_path_buf()),
    )
}

/// The plan's filesystems on `disk` (swap included), each with the UUID
/// `uuid` gives it (made by mkfs, or read back).
fn filesystems(
    plan: &Plan,
    disk: &DiskHandle,
    mut uuid: impl FnMut(FsType, &Partition, &Path) -> Result<String, ImageError>,
) -> Result<Vec<NewFilesystem>, ImageError> {
    let mut out = Vec::new();
    for part in &plan.disk.partitions {
        let fs_type = match (part.role, &part.fs) {
            (PartitionRole::Swap, _) => FsType::Swap,
            (PartitionRole::Filesystem, Some(choice)) => choice.fs_type,
            _ => continue,
        };
        let device = disk.partition(part.number)?;
        let uuid = uuid(fs_type, part, &device)?;
        out.push(NewFilesystem {
            number: part.number,
            mount_point: part.mount_point.clone(),
            fs_type,
            uuid,
            device,
            source_device: part.source_device.clone(),
        });
    }
    Ok(out)
}

/// Mount `filesystems` under `staging`, parents first. On failure the
/// returned guard's drop releases everything (and, unless `keep`, deletes
/// `raw`).
fn mounted(
    raw: &Path,
    staging: &Path,
    filesystems: Vec<NewFilesystem>,
    disk: DiskHandle,
    keep: bool,
) -> Result<PreparedImage, ImageError> {
    std::fs::create_dir_all(staging)?;
    let mut image = PreparedImage {
        raw: raw.to_path_buf(),
        root: staging.to_path_buf(),
        filesystems,
        mounts: Mounts::default(),
        disk,
        finished: false,
        keep,
    };
    let targets: Vec<(&str, &Path)> = image
        .filesystems
        .iter()
        .filter_map(|f| f.mount_point.as_deref().map(|m| (m, f.device.as_path())))
        .collect();
    mount_tree(&targets, staging, &[], &mut image.mounts)?;
    Ok(image)
}

impl PreparedImage {
    /// From now on a failure keeps the disk (see the type's docs).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Keep everything mounted when this guard goes (the rescue system's
    /// `hotclone target prepare`: the next command writes into the mounts).
    pub fn leave_mounted(mut self) -> Vec<NewFilesystem> {
        self.mounts.points.clear();
        if let DiskHandle::Loop(l) = &mut self.disk {
            l.device = PathBuf::new();
        }
        self.finished = true;
        std::mem::take(&mut self.filesystems)
    }

    /// Flush, unmount and detach, keeping the raw disk as it is (the end
    /// of a sync pass).
    pub fn close(mut self) -> Result<(), ImageError> {
        run("sync", &[], "coreutils")?;
        self.mounts.unmount_all()?;
        self.disk.detach()?;
        self.finished = true;
        Ok(())
    }

    /// The device of the whole disk (for grub-install).
    pub fn disk_device(&self) -> &Path {
        self.disk.device()
    }

    /// Flush, unmount, check every filesystem, detach, and produce the
    /// final image (qcow2 via `qemu-img convert`, then the raw file goes).
    pub fn finish(mut self, plan: &Plan) -> Result<PathBuf, ImageError> {
        run("sync", &[], "coreutils")?;
        self.mounts.unmount_all()?;
        for fs in &self.filesystems {
            if matches!(fs.fs_type, FsType::Ext2 | FsType::Ext3 | FsType::Ext4) {
                // -f: check even if clean; -y: fix. Exit 1 means "fixed".
                let dev = fs.device.to_string_lossy().into_owned();
                if let Err(e) = run("e2fsck", &["-f", "-y", &dev], "e2fsprogs") {
                    if !matches!(&e, ImageError::Command { output, .. } if output.contains("exit status: 1)"))
                    {
                        return Err(e);
                    }
                }
            }
        }
        self.disk.detach()?;
        let TargetSpec::Image { path, format, .. } = &plan.target else {
            // A block device: it is the result.
            self.finished = true;
            return Ok(self.raw.clone());
        };
        match format {
            ImageFormat::Raw if &self.raw != path => std::fs::rename(&self.raw, path)?,
            ImageFormat::Raw => {}
            ImageFormat::Qcow2 => {
                run(
                    "qemu-img",
                    &[
                        "convert",
                        "-O",
                        "qcow2",
                        &self.raw.to_string_lossy(),
                        &path.to_string_lossy(),
                    ],
                    "qemu-utils",
                )?;
                std::fs::remove_file(&self.raw)?;
            }
        }
        self.finished = true;
        Ok(path.clone())
    }
}
