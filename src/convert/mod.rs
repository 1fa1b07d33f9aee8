//! Make a copied root boot as a VM: fstab, bootloader, initramfs and
//! network identity, using the guest's own tools in a chroot.
//!
//! The flow ([`convert`]) reads like virt-v2v's: choose the modules for the
//! guest ([`family::select`], the one place that knows distro families),
//! then `remap_fstab`, `configure_bootloader`, `configure_kernel` (the
//! distribution's sysconfig files, [`sysconfig`]), `unconfigure_network`,
//! `configure_console` (gettys on tty1 and ttyS0, [`console`]),
//! `configure_initramfs`, `rebuild_initramfs`, `install_bootloader`,
//! `update_bootloader`, `verify_boot_config`.
//!
//! Every file rewrite is a pure function of the file's text and a
//! [`ConvertContext`] (`fn(&str, &ConvertContext) -> String`), tested with
//! golden files under `fixtures/convert/`. The context is built from the
//! plan and the filesystems the target made ([`ConvertContext::from_plan`]);
//! conversion never inspects the source again.
//!
//! Decisions worth knowing:
//! - An fstab line that names a local device we did not copy (another disk,
//!   a CD-ROM without `noauto`, a filesystem left out of the plan) is kept
//!   but commented out: `# hotclone: not copied: <the line>`. A boot that
//!   waits for a missing device ends in emergency mode, which is worse than
//!   a missing mount; the commented line tells the admin what was there.
//!   Lines with `noauto` or `nofail`, network mounts, pseudo filesystems
//!   and bind mounts are kept as they were.
//! - The clone's filesystems are plain partitions (the plan flattens LVM,
//!   MD RAID and LUKS), so kernel command lines lose the options that
//!   activate them, and Xen or second-port serial consoles become the
//!   VM's ([`bootloader::cmdline`]).
//! - Configs never pin a MAC: the VM's NIC MAC is not known at convert
//!   time. `net.ifnames=0` keeps the kernel's `eth0` naming so the source's
//!   configuration still applies.
//! - Interface renames (eth1 -> eth0) are the one rewrite that is not
//!   idempotent (a second eth0<->eth1 swap would undo the first). [`convert`]
//!   records every network config file it leaves, with the digest of its
//!   content, in [`renamed_record`] (`/.hotclone/interfaces-renamed`, in the
//!   target's state directory, which survives syncs and which cutover
//!   removes with the rest of our state), and a rerun leaves the names of a
//!   recorded file alone while its content is the recorded one. A file a
//!   sync brought again from the source (its content changed) is not, and
//!   gets the renames from the source's names, as in a first conversion.
//!   The files of one module are all read before any is written, so a swap
//!   of file names (`ifcfg-eth0` <-> `ifcfg-eth1`) loses neither.
//! - Guest commands run through [`chroot::ChrootExec`]; their output goes
//!   to [`Progress::note`], never to stdout.
//!
//! On failure: an unsupported guest (family/bootloader combination) fails
//! before anything is written, naming the combination. A guest tool that
//! fails is reported with its command line and output; files rewritten
//! before that stay rewritten (the target is a copy, rerunning `convert` is
//! idempotent). The boot check at the end (the bootloader's `verify`)
//! reads back the config and the default entry's kernel and initrd
//! ([`initrd`]); what it finds wrong fails the conversion with
//! [`ConvertError::Verify`], naming the file, the line and what to do, and
//! what it could not read becomes a note in the [`ConvertReport`].

/// A [`FileRewriter`] for one file whose new text is a pure function of its
/// text and the context: `one_file_rewriter!(Type, "name", PATH, create,
/// |text, ctx| new_text)`.
macro_rules! one_file_rewriter {
    ($ty:ty, $name:expr, $path:expr, $create:expr, $rewrite:expr) => {
        impl $crate::convert::FileRewriter for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn files(&self) -> &'static [$crate::convert::FilePattern] {
                &[$crate::convert::FilePattern {
                    pattern: $path,
                    create: $create,
                }]
            }
            fn rewrite(
                &self,
                _path: &str,
                text: &str,
                ctx: &$crate::convert::ConvertContext,
            ) -> $crate::convert::FileAction {
                let rewrite: fn(&str, &$crate::convert::ConvertContext) -> String = $rewrite;
                $crate::convert::FileAction::from_text(text, rewrite(text, ctx))
            }
        }
    };
}

pub mod bootloader;
pub mod chroot;
pub mod console;
pub mod family;
pub mod fstab;
pub mod identity;
pub mod initramfs;
pub mod initrd;
pub mod network;
pub mod on_disk;
pub mod sysconfig;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::{PartitionRole, Plan};
use crate::probe::{BootloaderKind, DistroFamily, Inventory, NetConfigStyle};
use crate::progress::Progress;
use chroot::ChrootExec;

/// The record of network config files whose interface names conversion
/// already mapped, in the target's state directory
/// ([`crate::migration::TARGET_STATE_DIR`]): see [`renamed_record`].
pub const RENAMED_RECORD: &str = "interfaces-renamed";

/// Where an older hotclone marked (for the whole tree) that renames were
/// applied. Read once for such a target, then removed: nothing of ours may
/// stay in the clone's own tree.
pub const LEGACY_RENAMED_MARKER: &str = "var/lib/hotclone/interfaces-renamed";

/// The rename record of the target tree at `root`. It lives with the
/// migration's other state on the target, so it survives from the clone's
/// conversion to the re-conversions of later syncs, and leaves with that
/// state at cutover ([`crate::convert::identity::finalize`]). Passes never
/// list it, so neither syncs nor `verify` see it.
pub fn renamed_record(root: &Path) -> PathBuf {
    crate::migration::target_state(root).join(RENAMED_RECORD)
}

/// Kernel command-line options every clone gets: keep `eth0` naming, and a
/// serial console next to the VGA one.
/// The serial console comes last, so it is `/dev/console`: the initramfs, init and
/// their failures (an emergency shell) show on it, where a rehearsal reads them.
pub const DEFAULT_CMDLINE: &[&str] = &["net.ifnames=0", "console=tty0", "console=ttyS0,115200"];

/// Drivers the VM needs in the initramfs (virtio, and the emulated
/// IDE/SATA controllers as a fallback). Those the guest's kernel lacks are
/// left out at convert time.
pub const DEFAULT_DRIVERS: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "ata_piix",
    "ahci",
];

/// What the guest is, as far as conversion cares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guest {
    pub family: DistroFamily,
    /// The distribution's os-release ID ("fedora", "centos", "sles",
    /// "opensuse", "opensuse-leap", "ubuntu"): Fedora 8-11 and RHEL 8+
    /// share major versions, and so do openSUSE 12 and SLES 12. Empty in
    /// contexts saved before it was recorded.
    #[serde(default)]
    pub id: String,
    /// The distro's version ("5.0.10", "12.7"); picks the era's tools.
    #[serde(default)]
    pub version: Option<String>,
    pub bootloader: BootloaderKind,
    /// The installed kernel the clone boots (`uname -r` form).
    pub kernel: String,
    /// Network config styles present in the copy.
    #[serde(default)]
    pub network_styles: Vec<NetConfigStyle>,
}

impl Guest {
    /// The major version number, when the version has one.
    pub fn major_version(&self) -> Option<u32> {
        self.version_pair().map(|(major, _)| major)
    }

    /// Major and minor version ("13.1" -> (13, 1), "11" -> (11, 0)).
    pub fn version_pair(&self) -> Option<(u32, u32)> {
        let v = self.version.as_deref()?;
        let mut parts = v.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
        Some((major, minor))
    }
}

/// One copied filesystem: what the source called it, and what it is now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsMapping {
    pub mount_point: String,
    /// Every way the source referred to it: /dev/sda1, /dev/hda1,
    /// /dev/cciss/c0d0p1, LABEL=..., UUID=..., /dev/mapper/..., /dev/VG/LV.
    #[serde(default)]
    pub old_specs: Vec<String>,
    /// The new filesystem's UUID.
    pub uuid: String,
    /// The new filesystem's type ("ext3" when the plan downgraded ext4).
    pub fs_type: String,
    /// Where the new filesystem is on this host now (e.g. /dev/loop3p2), for
    /// the `/dev/disk/by-uuid` links guest tools look for.
    #[serde(default)]
    pub device: Option<String>,
    /// Its partition number on the target disk (grub-legacy's `(hd0,N-1)`).
    #[serde(default)]
    pub partition: Option<u32>,
}

/// The new swap partition, and the specs of the source's swap it replaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapMapping {
    #[serde(default)]
    pub old_specs: Vec<String>,
    pub uuid: String,
    #[serde(default)]
    pub device: Option<String>,
}

/// A source interface and the name its configuration takes in the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicRename {
    pub source: String,
    #[serde(default)]
    pub mac: Option<String>,
    pub target: String,
}

/// Everything the rewrites need. Plain data (serde), so golden fixtures
/// carry theirs as `context.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvertContext {
    pub guest: Guest,
    pub filesystems: Vec<FsMapping>,
    #[serde(default)]
    pub swaps: Vec<SwapMapping>,
    #[serde(default)]
    pub nics: Vec<NicRename>,
    /// Options added to the kernel command line.
    #[serde(default = "default_cmdline")]
    pub cmdline_add: Vec<String>,
    /// Drivers the initramfs must hold.
    #[serde(default = "default_drivers")]
    pub drivers: Vec<String>,
    /// The target disk as seen from this host (grub-install's argument).
    #[serde(default)]
    pub disk_device: Option<String>,
    /// Mount points that were filesystems of their own on the source and
    /// are directories of the root filesystem in the clone (the plan's
    /// `--consolidate`). With `/boot` among them, bootloader paths named
    /// from the top of the old /boot filesystem gain a `/boot` prefix.
    #[serde(default)]
    pub merged_into_root: Vec<String>,
    /// What the copy holds for booting, once read from the mounted copy
    /// (the initramfs tool it has decides the rebuild advice).
    #[serde(skip)]
    pub copy: Option<family::CopyBoot>,
}

fn default_cmdline() -> Vec<String> {
    DEFAULT_CMDLINE.iter().map(|s| s.to_string()).collect()
}

fn default_drivers() -> Vec<String> {
    DEFAULT_DRIVERS.iter().map(|s| s.to_string()).collect()
}

/// A filesystem the target created: which planned partition, its UUID, and
/// its device on this host when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFilesystem {
    pub partition: u32,
    pub uuid: String,
    pub device: Option<String>,
}

impl ConvertContext {
    /// A context with the default kernel options and drivers.
    pub fn new(guest: Guest, filesystems: Vec<FsMapping>) -> Self {
        ConvertContext {
            guest,
            filesystems,
            swaps: vec![],
            nics: vec![],
            cmdline_add: default_cmdline(),
            drivers: default_drivers(),
            disk_device: None,
            merged_into_root: vec![],
            copy: None,
        }
    }

    /// Build the context from the plan, the inventory it came from, and
    /// the filesystems the target made. Old specs come from the plan's
    /// source devices, the source's fstab (by mount point) and the
    /// source's UUIDs and labels.
    pub fn from_plan(
        plan: &Plan,
        inv: &Inventory,
        made: &[NewFilesystem],
        disk_device: Option<String>,
    ) -> Result<Self, ConvertError> {
        let mut filesystems = Vec::new();
        let mut swaps = Vec::new();
        let swap_parts = plan
            .disk
            .partitions
            .iter()
            .filter(|p| {
                p.role == PartitionRole::Swap && made.iter().any(|m| m.partition == p.number)
            })
            .count();
        let mut swap_index = 0;
        for p in &plan.disk.partitions {
            let Some(new) = made.iter().find(|m| m.partition == p.number) else {
                continue;
            };
            match p.role {
                PartitionRole::Filesystem => {
                    let mount_point = p.mount_point.clone().unwrap_or_default();
                    let mut old = Vec::new();
                    old.extend(p.source_device.clone());
                    for e in inv
                        .storage
                        .fstab
                        .iter()
                        .filter(|e| e.mount_point == mount_point)
                    {
                        old.push(e.spec.clone());
                    }
                    for m in inv
                        .storage
                        .mounts
                        .iter()
                        .filter(|m| m.mount_point == mount_point)
                    {
                        old.push(m.device.clone());
                        old.extend(m.uuid.as_ref().map(|u| format!("UUID={u}")));
                        old.extend(m.label.as_ref().map(|l| format!("LABEL={l}")));
                    }
                    old.sort();
                    old.dedup();
                    let fs_type =
                        p.fs.as_ref()
                            .map(|f| f.fs_type.name().to_string())
                            .unwrap_or_default();
                    filesystems.push(FsMapping {
                        mount_point,
                        old_specs: old,
                        uuid: new.uuid.clone(),
                        fs_type,
                        device: new.device.clone(),
                        partition: Some(p.number),
                    });
                }
                PartitionRole::Swap => {
                    let mut old = swap_specs(inv, swap_parts, swap_index);
                    swap_index += 1;
                    old.sort();
                    old.dedup();
                    swaps.push(SwapMapping {
                        old_specs: old,
                        uuid: new.uuid.clone(),
                        device: new.device.clone(),
                    });
                }
                _ => {}
            }
        }
        if !filesystems.iter().any(|f| f.mount_point == "/") {
            return Err(ConvertError::Context(
                "the target made no root filesystem; nothing to convert".into(),
            ));
        }
        let nics = plan
            .network
            .iter()
            .map(|n| NicRename {
                source: n.source_interface.clone(),
                mac: n.source_mac.clone(),
                target: format!("eth{}", n.target_nic),
            })
            .collect();
        let guest = Guest {
            family: plan.source.family,
            id: inv.os.id.clone(),
            version: inv.os.version.clone(),
            bootloader: plan.source.bootloader,
            kernel: plan.source.kernel.clone(),
            network_styles: inv.network.config_styles.clone(),
        };
        Ok(ConvertContext {
            swaps,
            nics,
            disk_device,
            merged_into_root: plan.merged_into_root.clone(),
            ..ConvertContext::new(guest, filesystems)
        })
    }

    /// The root filesystem's mapping.
    pub fn root(&self) -> Option<&FsMapping> {
        self.filesystems.iter().find(|f| f.mount_point == "/")
    }

    /// The target partition GRUB reads its files from: /boot's, or /'s
    /// when /boot is not a filesystem of its own. `None` when the context
    /// does not know it.
    pub fn boot_partition(&self) -> Option<u32> {
        self.filesystems
            .iter()
            .find(|f| f.mount_point == "/boot")
            .or_else(|| self.root())
            .and_then(|f| f.partition)
    }

    /// Whether the source's separate /boot is a directory of / in the
    /// clone (paths named from its top need `/boot` in front).
    pub fn boot_merged_into_root(&self) -> bool {
        self.merged_into_root.iter().any(|m| m == "/boot")
            && !self.filesystems.iter().any(|f| f.mount_point == "/boot")
    }

    /// The copied filesystem a spec (fstab first field, `root=` value)
    /// refers to. The new UUID matches too, so rewrites are idempotent.
    pub fn filesystem_for(&self, spec: &str) -> Option<&FsMapping> {
        let want = normalize_spec(spec);
        self.filesystems.iter().find(|f| {
            f.old_specs
                .iter()
                .chain(std::iter::once(&format!("UUID={}", f.uuid)))
                .any(|s| normalize_spec(s) == want)
        })
    }

    /// The new swap a spec refers to.
    pub fn swap_for(&self, spec: &str) -> Option<&SwapMapping> {
        let want = normalize_spec(spec);
        self.swaps.iter().find(|f| {
            f.old_specs
                .iter()
                .chain(std::iter::once(&format!("UUID={}", f.uuid)))
                .any(|s| normalize_spec(s) == want)
        })
    }

    /// The same context with every interface keeping its name: for a
    /// rerun, when the renames were applied already (renames, unlike the
    /// other rewrites, are not idempotent: eth0<->eth1 would swap back).
    pub fn without_renames(&self) -> Self {
        let mut c = self.clone();
        for n in &mut c.nics {
            n.target = n.source.clone();
        }
        c
    }

    /// The VM name for a source interface name.
    pub fn nic_target(&self, source: &str) -> Option<&str> {
        self.nics
            .iter()
            .find(|n| n.source == source)
            .map(|n| n.target.as_str())
    }

    /// The mapping for a source MAC (any case).
    pub fn nic_by_mac(&self, mac: &str) -> Option<&NicRename> {
        self.nics.iter().find(|n| {
            n.mac
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(mac.trim()))
        })
    }

    /// Keep only the drivers the guest kernel has (as a module or built in,
    /// [`kernel_modules`]). When the kernel's module lists cannot be read,
    /// keep them all.
    pub fn with_available_drivers(mut self, root: &Path) -> Self {
        if let Some(known) = kernel_modules(root, &self.guest.kernel) {
            self.drivers
                .retain(|d| known.contains(&d.replace('-', "_")));
        }
        self
    }
}

/// The specs of the source swaps the `index`-th of `count` new swap
/// partitions replaces. One new swap replaces them all; several pair with
/// the source's swap partitions in order, each taking its own device path
/// and the fstab lines naming that device (by path, UUID or label), so no
/// two source swaps end up with the same new UUID.
fn swap_specs(inv: &Inventory, count: usize, index: usize) -> Vec<String> {
    let parts: Vec<&str> = inv
        .storage
        .swaps
        .iter()
        .filter(|s| s.kind == "partition")
        .map(|s| s.path.as_str())
        .collect();
    let fstab_swaps = inv.storage.fstab.iter().filter(|e| e.fs_type == "swap");
    if count <= 1 {
        let mut old: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
        old.extend(fstab_swaps.map(|e| e.spec.clone()));
        return old;
    }
    let Some(path) = parts.get(index) else {
        return vec![];
    };
    // The spellings of this device: its path, and its UUID and label.
    let name = path.trim_start_matches("/dev/");
    let mut names = vec![normalize_spec(path)];
    for b in inv.storage.block_devices.iter().filter(|b| b.name == name) {
        names.extend(
            b.uuid
                .as_ref()
                .map(|u| normalize_spec(&format!("UUID={u}"))),
        );
        names.extend(
            b.label
                .as_ref()
                .map(|l| normalize_spec(&format!("LABEL={l}"))),
        );
    }
    let mut old = vec![path.to_string()];
    old.extend(
        fstab_swaps
            .filter(|e| names.contains(&normalize_spec(&e.spec)))
            .map(|e| e.spec.clone()),
    );
    old
}

/// The drivers kernel `version` in the copy at `root` has, as a module
/// (`modules.dep`) or built in (`modules.builtin`), `-` spelled `_`; `None`
/// when neither list can be read (then nothing is known to be missing).
pub fn kernel_modules(root: &Path, version: &str) -> Option<std::collections::HashSet<String>> {
    let dir = root.join("lib/modules").join(version);
    let dep = std::fs::read_to_string(dir.join("modules.dep")).unwrap_or_default();
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    if dep.is_empty() && builtin.is_empty() {
        return None;
    }
    Some(
        dep.lines()
            .filter_map(|l| l.split(':').next())
            .chain(builtin.lines())
            .filter_map(|p| p.rsplit('/').next())
            .map(|f| f.split(".ko").next().unwrap_or(f).replace('-', "_"))
            .collect(),
    )
}

/// One spelling per device: `UUID=` and `/dev/disk/by-uuid/` are the same
/// (UUIDs compare without case), `LABEL=` and `/dev/disk/by-label/` too,
/// `/dev/mapper/VG-LV` is `/dev/VG/LV`.
pub fn normalize_spec(spec: &str) -> String {
    let s = spec.trim().trim_matches('"');
    if let Some(u) = s
        .strip_prefix("UUID=")
        .or_else(|| s.strip_prefix("/dev/disk/by-uuid/"))
    {
        return format!("UUID={}", u.to_ascii_lowercase());
    }
    if let Some(l) = s
        .strip_prefix("LABEL=")
        .or_else(|| s.strip_prefix("/dev/disk/by-label/"))
    {
        return format!("LABEL={l}");
    }
    if let Some(dm) = s.strip_prefix("/dev/mapper/") {
        // VG and LV names double their dashes; a single dash separates them.
        let bytes: Vec<char> = dm.chars().collect();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == '-' {
                if bytes.get(i + 1) == Some(&'-') {
                    i += 2;
                    continue;
                }
                let vg: String = bytes[..i].iter().collect();
                let lv: String = bytes[i + 1..].iter().collect();
                return format!("/dev/{}/{}", vg.replace("--", "-"), lv.replace("--", "-"));
            }
            i += 1;
        }
    }
    s.trim_end_matches('/').to_string()
}

/// What a rewrite does to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAction {
    /// Leave the file as it is.
    Keep,
    /// Replace its content.
    Write(String),
    /// Write this content under a new name in the same directory, and
    /// remove the old file.
    Rename { name: String, content: String },
    /// Delete the file.
    Remove,
    /// Make the path a symlink to this target (a systemd unit enabled in a
    /// `.wants` directory), when nothing is there yet.
    Symlink(String),
}

impl FileAction {
    /// `Keep` when the new text equals the old, else `Write`.
    pub fn from_text(old: &str, new: String) -> Self {
        if new == old {
            FileAction::Keep
        } else {
            FileAction::Write(new)
        }
    }

    /// The form golden `.expected` files use: the content; a rename adds a
    /// first line `### renamed to NAME`; a removal is `### removed`.
    pub fn render(&self, old: &str) -> String {
        match self {
            FileAction::Keep => old.to_string(),
            FileAction::Write(t) => t.clone(),
            FileAction::Rename { name, content } => format!("### renamed to {name}\n{content}"),
            FileAction::Remove => "### removed\n".to_string(),
            FileAction::Symlink(target) => format!("### symlink to {target}\n"),
        }
    }
}

/// A file (relative to the target root) a module rewrites. A pattern may
/// end in `*` (any file in that directory starting with the prefix).
#[derive(Debug, Clone, Copy)]
pub struct FilePattern {
    pub pattern: &'static str,
    /// Create the file (from empty text) when it does not exist.
    pub create: bool,
}

/// Something that rewrites some of the guest's files. Bootloaders,
/// initramfs tools and network styles all are.
pub trait FileRewriter {
    fn name(&self) -> &'static str;
    fn files(&self) -> &'static [FilePattern];
    /// `path` is relative to the root, e.g. `etc/fstab`; `text` is empty
    /// for a file that does not exist yet.
    fn rewrite(&self, path: &str, text: &str, ctx: &ConvertContext) -> FileAction;

    /// Files to create (relative to the root) given which paths exist
    /// (`exists` sees symlinks and directories too); `rewrite` gets each
    /// with empty text. For files whose creation depends on others (a
    /// getty job where the guest's init has its getty jobs); unconditional
    /// ones are [`FilePattern::create`].
    fn creates(&self, _exists: &dyn Fn(&str) -> bool) -> Vec<String> {
        Vec::new()
    }

    /// Whether `path` is one of this module's files.
    fn handles(&self, path: &str) -> bool {
        self.files()
            .iter()
            .any(|p| pattern_matches(p.pattern, path))
    }
}

pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix) && !path[prefix.len()..].contains('/'),
        None => pattern == path,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{what} is not supported by hotclone's conversion; {hint}")]
    Unsupported { what: String, hint: String },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error(transparent)]
    Chroot(#[from] chroot::ChrootError),
    #[error("{0}")]
    Context(String),
    #[error("the converted guest would not boot: {0}")]
    Verify(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ConvertError + '_ {
    move |error| ConvertError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// What [`convert`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertReport {
    /// Files changed, relative to the root, with what happened.
    pub changed: Vec<String>,
    /// Remarks for the user (things tolerated, things to check).
    pub notes: Vec<String>,
}

/// Convert the copy mounted at `root` (every planned filesystem mounted
/// under it) so it boots as a VM. `exec` runs the guest's tools in `root`.
pub fn convert(
    root: &Path,
    ctx: &ConvertContext,
    exec: &mut dyn ChrootExec,
    progress: &mut dyn Progress,
) -> Result<ConvertReport, ConvertError> {
    progress.phase("converting");
    let has_virtio = kernel_modules(root, &ctx.guest.kernel).map(|m| m.contains("virtio_blk"));
    let copy = family::CopyBoot::read(root, &ctx.guest.kernel);
    let modules = family::select_with(&ctx.guest, has_virtio, Some(copy))?;
    let mut ctx = ctx.clone().with_available_drivers(root);
    ctx.copy = Some(copy);
    let mut report = ConvertReport {
        notes: modules.notes.clone(),
        ..Default::default()
    };
    report.notes.extend(network::kept_notes(&ctx));
    for n in &report.notes {
        progress.note(n);
    }
    if ctx.root().is_none() {
        return Err(ConvertError::Context(
            "the context maps no root filesystem (\"/\")".into(),
        ));
    }

    // remap_fstab, configure_bootloader, configure_kernel (sysconfig),
    // unconfigure_network, configure_console, configure_initramfs
    if let Ok(text) = std::fs::read_to_string(root.join("etc/fstab")) {
        for line in fstab::not_copied(&text, &ctx) {
            let msg = format!("fstab: commented out, its device is not part of the clone: {line}");
            progress.note(&msg);
            report.notes.push(msg);
        }
    }
    apply(root, &fstab::Fstab, &ctx, &mut report, progress)?;
    apply(
        root,
        modules.bootloader.as_rewriter(),
        &ctx,
        &mut report,
        progress,
    )?;
    for m in &modules.sysconfig {
        apply(root, m.as_ref(), &ctx, &mut report, progress)?;
    }
    unconfigure_network(root, &modules, &ctx, &mut report, progress)?;
    for m in &modules.console {
        apply(root, m.as_ref(), &ctx, &mut report, progress)?;
    }
    apply(
        root,
        modules.initramfs.as_rewriter(),
        &ctx,
        &mut report,
        progress,
    )?;

    // rebuild_initramfs, install_bootloader, update_bootloader, verify
    modules.initramfs.rebuild(exec, &ctx, progress)?;
    modules.bootloader.install(exec, &ctx, progress)?;
    modules.bootloader.update(exec, &ctx, progress)?;
    for n in modules.bootloader.verify(root, &ctx)? {
        progress.note(&n);
        report.notes.push(n);
    }
    verify_interfaces(root, &ctx)?;
    Ok(report)
}

/// The boot check's network part: every interface the converted config
/// brings up at boot is one the VM will have
/// ([`network::interfaces_check`]).
pub fn verify_interfaces(root: &Path, ctx: &ConvertContext) -> Result<(), ConvertError> {
    use network::interfaces_check::{first_missing, ifcfg_brought_up, ifupdown_brought_up};
    let mut vm_nics: Vec<String> = ctx.nics.iter().map(|n| n.target.clone()).collect();
    if vm_nics.is_empty() {
        // Every VM hotclone makes has one NIC.
        vm_nics.push("eth0".into());
    }
    let mut files: Vec<(PathBuf, Vec<(usize, String)>)> = Vec::new();
    let list = |dir: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut ifupdown = vec![root.join("etc/network/interfaces")];
    ifupdown.extend(list("etc/network/interfaces.d"));
    for path in ifupdown {
        if let Ok(text) = std::fs::read_to_string(&path) {
            files.push((path, ifupdown_brought_up(&text)));
        }
    }
    for dir in ["etc/sysconfig/network-scripts", "etc/sysconfig/network"] {
        for path in list(dir) {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            let Some(device) = name.strip_prefix("ifcfg-") else {
                continue;
            };
            if device.contains(".bak") || device.ends_with('~') || device.ends_with(".orig") {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(&path) {
                files.push((path, ifcfg_brought_up(&text, device).into_iter().collect()));
            }
        }
    }
    for (path, up) in files {
        if let Some((line, iface, base)) = first_missing(&up, &vm_nics) {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            return Err(ConvertError::Verify(format!(
                "/{} line {line} brings up {iface} at boot, but the VM will have {} only: {base} does not exist there, so the clone would boot without that network. Map the source's NIC to a VM NIC in the plan (its [[network]] entries), or take {iface} out of the source's config and sync again",
                rel.display(),
                vm_nics.join(", ")
            )));
        }
    }
    Ok(())
}

/// The network step: every network style's rewrites, with the plan's
/// interface renames applied only to files that do not have them yet
/// (see [`renamed_record`]), then the record of what the files are now.
fn unconfigure_network(
    root: &Path,
    modules: &family::Modules,
    ctx: &ConvertContext,
    report: &mut ConvertReport,
    progress: &mut dyn Progress,
) -> Result<(), ConvertError> {
    if !ctx.nics.iter().any(|n| n.source != n.target) {
        for net in &modules.network {
            apply(root, net.as_rewriter(), ctx, report, progress)?;
        }
        return Ok(());
    }
    let record_path = renamed_record(root);
    let record = match std::fs::read_to_string(&record_path) {
        Ok(text) => read_record(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => return Err(io_err(&record_path)(e)),
    };
    // A target an older hotclone converted marked the whole tree instead.
    let legacy = root.join(LEGACY_RENAMED_MARKER);
    let legacy_all = record.is_empty() && legacy.exists();
    let kept_names = ctx.without_renames();
    let mut already = 0;
    for net in &modules.network {
        apply_with(root, net.as_rewriter(), report, progress, |rel, text| {
            if legacy_all || record.contains(&(rel.to_string(), digest(text))) {
                already += 1;
                &kept_names
            } else {
                ctx
            }
        })?;
    }
    if already > 0 {
        let msg = format!(
            "interface renames: {already} network config file(s) have them from an earlier conversion; not applied again"
        );
        progress.note(&msg);
        report.notes.push(msg);
    }
    let mut text = String::from(
        "# hotclone: network config files that have the VM's interface names already\n\
         # (blake3 of the content, path); a conversion renames only files not listed.\n",
    );
    for net in &modules.network {
        for rel in expand(root, net.files())? {
            let path = root.join(&rel);
            if rel.contains('\n')
                || !std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file())
            {
                continue;
            }
            let content = std::fs::read_to_string(&path).map_err(io_err(&path))?;
            text.push_str(&format!("{}  {rel}\n", digest(&content)));
        }
    }
    if std::fs::read_to_string(&record_path).ok().as_deref() != Some(text.as_str()) {
        if let Some(dir) = record_path.parent().filter(|d| !d.exists()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(dir))?;
        }
        write_file(&record_path, &text)?;
    }
    if legacy.exists() {
        std::fs::remove_file(&legacy).map_err(io_err(&legacy))?;
        // Only ours: the directory goes when the marker was all it held.
        if let Some(dir) = legacy.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    Ok(())
}

/// The (path, digest) pairs of a rename record.
fn read_record(text: &str) -> std::collections::HashSet<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once("  "))
        .map(|(d, p)| (p.to_string(), d.to_string()))
        .collect()
}

fn digest(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// Run one module's rewrites over the files it names under `root`.
pub fn apply(
    root: &Path,
    module: &dyn FileRewriter,
    ctx: &ConvertContext,
    report: &mut ConvertReport,
    progress: &mut dyn Progress,
) -> Result<(), ConvertError> {
    apply_with(root, module, report, progress, |_, _| ctx)
}

/// [`apply`], with the context for each file chosen by `ctx_for(path,
/// text)`. Every file is read before any is written, and removals (the
/// old names of renamed files included) go before writes, so a swap of
/// names (`ifcfg-eth0` <-> `ifcfg-eth1`) keeps both files.
fn apply_with<'c>(
    root: &Path,
    module: &dyn FileRewriter,
    report: &mut ConvertReport,
    progress: &mut dyn Progress,
    mut ctx_for: impl FnMut(&str, &str) -> &'c ConvertContext,
) -> Result<(), ConvertError> {
    let mut planned = Vec::new();
    let mut paths = expand(root, module.files())?;
    let exists = |p: &str| std::fs::symlink_metadata(root.join(p)).is_ok();
    for p in module.creates(&exists) {
        if !exists(&p) && !paths.contains(&p) {
            paths.push(p);
        }
    }
    for rel in paths {
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path).ok();
        if meta.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
            let msg = format!("{rel}: a symlink; not rewritten (ignored)");
            progress.note(&msg);
            report.notes.push(msg);
            continue;
        }
        let text = match &meta {
            Some(_) => std::fs::read_to_string(&path).map_err(io_err(&path))?,
            None => String::new(),
        };
        let action = module.rewrite(&rel, &text, ctx_for(&rel, &text));
        planned.push((rel, path, meta.is_some(), action));
    }
    for (_, path, exists, action) in &planned {
        let goes = match action {
            FileAction::Remove => *exists,
            FileAction::Rename { name, .. } => path.with_file_name(name) != *path,
            FileAction::Keep | FileAction::Write(_) | FileAction::Symlink(_) => false,
        };
        if goes {
            std::fs::remove_file(path).map_err(io_err(path))?;
        }
    }
    for (rel, path, exists, action) in planned {
        match action {
            FileAction::Keep => {}
            FileAction::Write(content) => {
                write_file(&path, &content)?;
                report.changed.push(format!("{rel} ({})", module.name()));
            }
            FileAction::Rename { name, content } => {
                write_file(&path.with_file_name(&name), &content)?;
                report
                    .changed
                    .push(format!("{rel} -> {name} ({})", module.name()));
            }
            FileAction::Remove => {
                if exists {
                    report
                        .changed
                        .push(format!("{rel} removed ({})", module.name()));
                }
            }
            FileAction::Symlink(target) => {
                if !exists {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
                    }
                    std::os::unix::fs::symlink(&target, &path).map_err(io_err(&path))?;
                    report
                        .changed
                        .push(format!("{rel} -> {target} created ({})", module.name()));
                }
            }
        }
    }
    Ok(())
}

/// The files under `root` that patterns name (those to create included).
fn expand(root: &Path, patterns: &[FilePattern]) -> Result<Vec<String>, ConvertError> {
    let mut out = Vec::new();
    for p in patterns {
        match p.pattern.strip_suffix('*') {
            Some(prefix) => {
                let (dir, start) = prefix.rsplit_once('/').unwrap_or(("", prefix));
                let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with(start))
                    .collect();
                names.sort();
                out.extend(names.into_iter().map(|n| format!("{dir}/{n}")));
            }
            None => {
                if p.create || std::fs::symlink_metadata(root.join(p.pattern)).is_ok() {
                    out.push(p.pattern.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// Write through a temporary file and rename, keeping the old file's mode.
fn write_file(path: &Path, content: &str) -> Result<(), ConvertError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0o644);
    let tmp = path.with_file_name(format!(
        ".{}.hotclone-tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    std::fs::write(&tmp, content).map_err(io_err(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Split a line into its whitespace-separated fields and the gaps around
/// them: `gaps[0]` leads, `gaps[i+1]` follows `fields[i]`.
pub(crate) fn split_keep_gaps(line: &str) -> (Vec<String>, Vec<String>) {
    let mut fields = Vec::new();
    let mut gaps = vec![String::new()];
    let mut cur = String::new();
    for c in line.chars() {
        if c == ' ' || c == '\t' {
            if !cur.is_empty() {
                fields.push(std::mem::take(&mut cur));
                gaps.push(String::new());
            }
            gaps.last_mut().expect("gaps starts non-empty").push(c);
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        fields.push(cur);
        gaps.push(String::new());
    }
    (fields, gaps)
}

/// Put fields back with their gaps. A replaced field that grew or shrank
/// takes the difference from the space-only gap right after it, so the
/// next column stays where it was when it can (never below one space).
/// Gaps further on are kept as they were.
pub(crate) fn join_keep_gaps(old: &[String], new: &[String], gaps: &[String]) -> String {
    let mut out = gaps[0].clone();
    for (i, field) in new.iter().enumerate() {
        out.push_str(field);
        let grew =
            field.chars().count() as isize - old.get(i).map_or(0, |o| o.chars().count() as isize);
        let gap = gaps.get(i + 1).cloned().unwrap_or_default();
        if grew != 0 && i + 1 < new.len() && !gap.is_empty() && gap.chars().all(|c| c == ' ') {
            out.push_str(&" ".repeat((gap.len() as isize - grew).max(1) as usize));
        } else {
            out.push_str(&gap);
        }
    }
    out
}

/// Apply `f` to each line, keeping the file's line endings and a final
/// newline (or its absence).
pub(crate) fn map_lines(text: &str, mut f: impl FnMut(&str) -> Vec<String>) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for chunk in text.split_inclusive('\n') {
        let (line, nl) = match chunk.strip_suffix('\n') {
            Some(l) => (l, "\n"),
            None => (chunk, ""),
        };
        let replaced = f(line);
        let n = replaced.len();
        for (i, r) in replaced.into_iter().enumerate() {
            out.push_str(&r);
            if i + 1 < n {
                out.push('\n');
            } else {
                out.push_str(nl);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
