//! `hotclone clone`: from a running source to a bootable VM disk, in one
//! readable sequence of phases. Each phase takes the records it needs (the
//! Inventory, the Plan, the journal) and returns what the next one needs:
//!
//! 1. prepare the target disk (partition, mkfs, mount), [`crate::target`]
//! 2. list the source, [`crate::stream::listing`]
//! 3. copy, [`copy`]
//! 4. convert the copy so it boots as a VM, [`crate::convert`]
//! 5. finish the disk (sync, unmount, fsck; detach and qcow2 for images)
//!
//! The target is an image on this machine or the disk of a rescue VM over
//! SSH ([`crate::target::Opener`]); the phases are the same.
//!
//! On failure before any file was copied, every mount and loop device is
//! released, a half-made image is removed, and the error says which phase
//! failed and why. Once files are on the target, they are kept and the
//! same command continues. The source is only read.

pub mod copy;
pub mod tar_messages;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::convert;
use crate::journal::Journal;
use crate::migration::{Migration, Stage};
use crate::plan::{Exclude, Plan};
use crate::probe::{BootloaderKind, DistroFamily, Inventory};
use crate::progress::{FileWarning, Progress};
use crate::ssh::Session;
use crate::stream::listing::{self, FileKind, ListedFile};
use crate::target::{image, CloneStart, Opener};

pub use copy::Batching;

#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    /// Not `#[source]`: the message already holds it (shown once, not twice).
    #[error("preparing the target disk: {0}")]
    Image(image::ImageError),
    #[error(transparent)]
    Ssh(crate::ssh::SshError),
    #[error("on the source, {what}. Its stderr: {stderr}")]
    Remote { what: String, stderr: String },
    #[error("the data stream broke: {error}. The source's tar said: {tar_stderr}")]
    Stream {
        error: crate::stream::StreamError,
        tar_stderr: String,
    },
    #[error("{what}: {source}")]
    Agent {
        what: String,
        source: std::io::Error,
    },
    #[error("the agent failed ({status}); its messages are above")]
    AgentFailed { status: String },
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Migration(#[from] crate::migration::MigrationError),
    #[error("on the target: {0}")]
    Target(String),
    #[error("{0}")]
    Stage(String),
    #[error("converting the copy: {0}")]
    Convert(String),
    #[error("internal error: {0} is missing")]
    Internal(String),
}

impl From<image::ImageError> for CloneError {
    fn from(e: image::ImageError) -> Self {
        CloneError::Image(e)
    }
}

impl CloneError {
    pub(crate) fn internal(what: &str) -> CloneError {
        CloneError::Internal(what.to_string())
    }

    /// The target's filesystem was found damaged and refused: running the
    /// same command again does not help (its message says what does).
    pub fn target_damaged(&self) -> bool {
        matches!(self, CloneError::Image(image::ImageError::Damaged { .. }))
    }
}

/// What a clone did, for the summary.
#[derive(Debug)]
pub struct CloneReport {
    /// The clone: an image file, or the rescue VM's disk.
    pub image: String,
    pub files: u64,
    pub bytes: u64,
    pub wire_bytes: u64,
    pub duration: Duration,
    pub dirty: u64,
    pub warnings: Vec<FileWarning>,
    pub notes: Vec<String>,
}

/// True when `path` (absolute, raw) is left out by the plan.
pub fn excluded(path: &[u8], excludes: &[Exclude]) -> bool {
    excludes.iter().any(|e| {
        let p = e.path.trim_end_matches('/').as_bytes();
        let inside =
            path.len() > p.len() && path.starts_with(p) && (p.is_empty() || path[p.len()] == b'/');
        inside || (!e.contents_only && path == p)
    })
}

/// Phase 2: list every filesystem the plan copies; keep what is not
/// excluded, and each mount point once (as the root of its own filesystem).
pub async fn list_source(
    session: &Session,
    inv: &Inventory,
    plan: &Plan,
    progress: &mut dyn Progress,
) -> Result<Vec<ListedFile>, CloneError> {
    let roots: Vec<&str> = plan
        .disk
        .partitions
        .iter()
        .filter_map(|p| p.mount_point.as_deref())
        .chain(plan.merged_into_root.iter().map(String::as_str))
        .collect();
    let cmd = listing::command(&inv.capabilities, &roots);
    let out = session.run(&cmd, b"").await.map_err(CloneError::Ssh)?;
    let (files, unparsed) = listing::parse(&inv.capabilities, &out.stdout);
    if files.is_empty() {
        return Err(CloneError::Remote {
            what: format!(
                "listing the files with `{cmd}` produced nothing ({})",
                out.status
            ),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    for u in unparsed {
        progress.warning(&FileWarning::Skipped {
            path: PathBuf::from(u.0),
            reason: "the listing line could not be read (a newline in the name?)".into(),
        });
    }
    let mut by_path: std::collections::BTreeMap<Vec<u8>, ListedFile> =
        std::collections::BTreeMap::new();
    for f in files {
        if excluded(&f.path, &plan.excludes) {
            continue;
        }
        if f.kind == FileKind::Socket {
            progress.warning(&FileWarning::Skipped {
                path: PathBuf::from(String::from_utf8_lossy(&f.path).into_owned()),
                reason: "sockets are recreated by their daemons".into(),
            });
            continue;
        }
        by_path.insert(f.path.clone(), f);
    }
    Ok(by_path.into_values().collect())
}

/// The journal's meta key set once the target disk is finished (a live
/// target; an image target shows it by its partial file being gone).
pub const FINISHED: &str = "finished";

/// The whole clone, phase by phase. When the migration's journal says a
/// clone of it was interrupted (stage "copying" and its disk still there),
/// it continues that clone instead of starting over.
pub async fn run(
    session: &Session,
    inv: &Inventory,
    plan: &Plan,
    migration: &Migration,
    opener: Opener,
    batching: Batching,
    progress: &mut dyn Progress,
) -> Result<CloneReport, CloneError> {
    let started = Instant::now();
    let mut journal = Journal::open(&migration.journal_path())?;
    let start = match journal.stage()? {
        Stage::New => CloneStart::New,
        Stage::Preparing => CloneStart::Redo,
        _ => CloneStart::Resume,
    };
    match start {
        CloneStart::Resume => {
            progress.phase("attaching the partly copied disk");
            let (files, _) = journal.counts()?;
            progress.note(&format!(
                "continuing an interrupted clone: {files} entries are already on the target"
            ));
        }
        CloneStart::Redo => {
            progress.phase("preparing the target disk");
            progress
                .note("the last run was stopped while it prepared the disk: preparing it again");
        }
        CloneStart::New => progress.phase("preparing the target disk"),
    }
    if start != CloneStart::Resume {
        journal.set_stage(Stage::Preparing)?;
    }
    // From here on the disk holds acknowledged files the journal describes:
    // a failure keeps both, and running the clone again continues.
    let mut target = opener.for_clone(plan, migration, start).await?;
    journal.set_stage(Stage::Copying)?;
    journal.set_meta(FINISHED, "")?;

    let pass = crate::sync::pass(
        session,
        inv,
        plan,
        migration,
        target.as_ref(),
        "clone",
        &crate::sync::PassOptions {
            batching,
            sweep: false,
            checksum: false,
        },
        progress,
    )
    .await?;

    let converted = target
        .convert(inv, plan, &journal.files()?, progress)
        .await?;
    journal.record_converted(&converted.files)?;
    journal.set_stage(Stage::Ready)?;
    tokio::task::block_in_place(|| {
        crate::sync::write_target_state(target.as_ref(), migration, &journal)
    })?;

    progress.phase("finishing the disk");
    let image = match target.finish(plan, progress).await {
        Ok(image) => image,
        Err(e) => {
            let _ = journal.set_stage(Stage::Copying);
            return Err(e);
        }
    };
    journal.set_meta(FINISHED, "yes")?;
    let (files, _) = journal.counts()?;
    Ok(CloneReport {
        image,
        files,
        bytes: pass.sent_bytes,
        wire_bytes: pass.wire_bytes,
        duration: started.elapsed(),
        dirty: pass.dirty,
        warnings: pass.warnings,
        notes: converted
            .notes
            .into_iter()
            .chain(pass.tar_messages)
            .collect(),
    })
}

/// The mount point of a filesystem that is not copied (/proc, /sys, an NFS
/// mount) is read by tar as the mounted filesystem's root, which changes
/// all the time. Only the directory is kept, so such a change is no reason
/// to distrust it.
pub(crate) fn forgive_mount_points(copied: &mut copy::CopyOutcome, excludes: &[Exclude]) {
    let is_mount_point = |p: &std::path::Path| {
        excludes
            .iter()
            .any(|e| e.contents_only && p == std::path::Path::new(&e.path))
    };
    copied
        .warnings
        .retain(|w| !(matches!(w, FileWarning::Dirty { .. }) && is_mount_point(w.path())));
    for r in &mut copied.records {
        if r.dirty && is_mount_point(std::path::Path::new(&*String::from_utf8_lossy(&r.path))) {
            r.dirty = false;
        }
    }
}

/// Why a copy is left unconverted, if it is: a source of no known
/// distribution family (a busybox box) is copied faithfully and left as
/// it is. A known family without a bootloader is converted: the copy's
/// own GRUB or this host's is installed ([`convert::family`]), or the
/// conversion says why it cannot be.
fn not_converted(family: DistroFamily, bootloader: BootloaderKind) -> Option<String> {
    let name = |v: serde_json::Result<serde_json::Value>| {
        v.ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    (family == DistroFamily::Unknown).then(|| {
        format!(
            "the copy was not converted ({} family, {} bootloader): it holds the files exactly, but will not boot as a VM as it is",
            name(serde_json::to_value(family)),
            name(serde_json::to_value(bootloader))
        )
    })
}

/// Phase 4: make the copy boot as a VM, with the guest's own tools
/// (unless [`not_converted`] says why not, in a note).
pub(crate) fn convert_phase(
    inv: &Inventory,
    plan: &Plan,
    prepared: &image::PreparedImage,
    progress: &mut dyn Progress,
) -> Result<Vec<String>, CloneError> {
    if let Some(note) = not_converted(inv.os.family, plan.source.bootloader) {
        progress.note(&note);
        return Ok(vec![note]);
    }
    let made: Vec<convert::NewFilesystem> = prepared
        .filesystems
        .iter()
        .map(|f| convert::NewFilesystem {
            partition: f.number,
            uuid: f.uuid.clone(),
            device: Some(f.device.display().to_string()),
        })
        .collect();
    let disk = Some(prepared.disk_device().display().to_string());
    let ctx = convert::ConvertContext::from_plan(plan, inv, &made, disk)
        .map_err(|e| CloneError::Convert(e.to_string()))?;
    let mut exec = convert::chroot::UnshareChroot::new(&prepared.root)
        .map_err(|e| CloneError::Convert(e.to_string()))?
        .with_uuid_links(&ctx);
    let report = convert::convert(&prepared.root, &ctx, &mut exec, progress)
        .map_err(|e| CloneError::Convert(e.to_string()))?;
    // Conversion's own bookkeeping (the interface-rename record) stays in
    // the target's state directory, for the re-conversions of later syncs;
    // cutover removes it with the rest of that state. Nothing of ours is
    // in the clone's own tree.
    let mut notes = report.notes;
    if plan.autorelabel {
        let flag = prepared.root.join(".autorelabel");
        std::fs::write(&flag, b"")
            .map_err(|e| CloneError::Convert(format!("writing {}: {e}", flag.display())))?;
        let note = "SELinux labels were not copied: /.autorelabel makes the clone relabel itself at first boot";
        progress.note(note);
        notes.push(note.to_string());
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: a known family whose source had no bootloader was left
    /// unconverted ("will not boot as a VM"), so a Xen PV guest booted by
    /// its dom0 never got the GRUB the conversion now installs.
    #[test]
    fn regression_a_known_family_without_a_bootloader_is_converted() {
        assert_eq!(
            not_converted(DistroFamily::Debian, BootloaderKind::None),
            None
        );
        assert_eq!(
            not_converted(DistroFamily::RedHat, BootloaderKind::None),
            None
        );
        let busybox = not_converted(DistroFamily::Unknown, BootloaderKind::None).unwrap();
        assert!(
            busybox.starts_with("the copy was not converted (unknown family, none bootloader)"),
            "{busybox}"
        );
    }

    fn ex(path: &str, contents_only: bool) -> Exclude {
        Exclude {
            path: path.into(),
            contents_only,
            reason: String::new(),
        }
    }

    /// `CloneError::Image` was `#[from]` with `{0}` in its message, so the
    /// CLI's `{:#}` printed the disk error twice ("...: X: X").
    #[test]
    fn regression_image_errors_are_shown_once() {
        let e = CloneError::from(image::ImageError::InUse {
            device: "/dev/vda".into(),
            what: "/dev/vda1 is mounted on /mnt".into(),
        });
        let shown = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(shown.matches("is mounted on /mnt").count(), 1, "{shown}");
        assert!(
            shown.starts_with("preparing the target disk: /dev/vda is in use"),
            "{shown}"
        );
    }

    #[test]
    fn excludes_keep_mount_points_and_drop_contents() {
        let ex = vec![
            ex("/proc", true),
            ex("/var/cache/apt", false),
            ex("/srv/my data", true),
        ];
        assert!(!excluded(b"/proc", &ex));
        assert!(excluded(b"/proc/1/stat", &ex));
        assert!(!excluded(b"/procfile", &ex));
        assert!(excluded(b"/var/cache/apt", &ex));
        assert!(excluded(b"/var/cache/apt/archives/x.deb", &ex));
        assert!(!excluded(b"/var/cache/aptitude", &ex));
        assert!(excluded(b"/srv/my data/x", &ex));
        assert!(!excluded(b"/", &ex));
    }
}
