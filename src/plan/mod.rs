//! From an [`Inventory`] and the user's options to a [`Plan`]: the target
//! disk's partition table, partitions, filesystems (chosen for the source's
//! kernel and bootloader, see [`fs_rules`]), what is not copied, and how
//! the network identity maps onto the VM.
//!
//! Planning is pure: it reads the inventory and writes nothing. A plan is
//! TOML the user can read and edit; [`Plan::from_toml`] validates an edited
//! plan and names what is wrong. On failure nothing has been touched: a
//! disk too small says both sizes, an unreadable kernel version names it.

pub mod fs_rules;
pub mod kernel_rules;
pub mod layout;
pub mod target;

use serde::{Deserialize, Serialize};

use crate::probe::{BootloaderKind, DistroFamily, Inventory, MountKind};
use crate::units::{format_bytes, round_up, GIB, MIB};
pub use fs_rules::{FsChoice, FsType, KernelVersion};
pub use target::{ImageFormat, TargetSpec};

/// The plan file format version this build reads and writes.
pub const PLAN_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    /// Remarks for the reader: choices made and why, things to check.
    pub notes: Vec<String>,
    pub source: SourceSummary,
    pub target: TargetSpec,
    pub disk: DiskLayout,
    /// Paths not copied (or copied as empty directories).
    pub excludes: Vec<Exclude>,
    /// Source interfaces and the VM NIC that takes over their addresses.
    pub network: Vec<NicMapping>,
    /// Mount points whose files go into the root filesystem instead of a
    /// partition of their own (`--consolidate`).
    #[serde(default)]
    pub merged_into_root: Vec<String>,
    /// The source uses SELinux but its tar cannot copy labels: the clone
    /// gets /.autorelabel and relabels itself at first boot.
    #[serde(default)]
    pub autorelabel: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    pub name: String,
    pub hostname: String,
    pub distro: String,
    pub family: DistroFamily,
    /// The installed kernel the clone will boot; the rules target it.
    pub kernel: String,
    pub bootloader: BootloaderKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionTable {
    /// GPT with a BIOS boot partition for grub2's core image.
    Gpt,
    /// MBR (msdos), for bootloaders that predate GPT (grub-legacy, lilo).
    Mbr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskLayout {
    pub partition_table: PartitionTable,
    pub size_bytes: u64,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionRole {
    BiosBoot,
    Filesystem,
    Swap,
    /// The MBR extended partition that holds logical partitions 5+.
    Extended,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    pub number: u32,
    pub role: PartitionRole,
    pub size_bytes: u64,
    pub mount_point: Option<String>,
    pub fs: Option<FsChoice>,
    /// `mkfs -N`, when the source has more files than the default ratio holds.
    pub inodes: Option<u64>,
    pub label: Option<String>,
    /// What it is a copy of, and how much data that holds.
    pub source_device: Option<String>,
    pub source_used_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclude {
    pub path: String,
    /// Keep the directory itself (a mount point), skip what is inside.
    pub contents_only: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicMapping {
    pub source_interface: String,
    pub source_mac: Option<String>,
    pub addresses: Vec<String>,
    /// 0 for the VM's first NIC.
    pub target_nic: u32,
}

/// The user's choices. Defaults: 30 % headroom plus 256 MiB free per
/// filesystem, copy only what lives on the root disk.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub target: TargetSpec,
    pub headroom_percent: u32,
    pub min_free_bytes: u64,
    /// Mount points on other disks to copy as well.
    pub include_mounts: Vec<String>,
    /// Extra paths not to copy.
    pub excludes: Vec<String>,
    /// The kernel the clone boots; default: the newest installed.
    pub kernel: Option<String>,
    /// One filesystem for everything: every copied mount point goes into /.
    pub consolidate: bool,
}

impl PlanOptions {
    pub fn new(target: TargetSpec) -> Self {
        PlanOptions {
            target,
            headroom_percent: 30,
            min_free_bytes: 256 * MIB,
            include_mounts: vec![],
            excludes: vec![],
            kernel: None,
            consolidate: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "{source_name} has no mounted root filesystem on a disk in its inventory; nothing to clone"
    )]
    NoRoot { source_name: String },
    #[error("cannot read the kernel version {release:?}; name the kernel to boot with --kernel")]
    KernelUnknown { release: String },
    #[error("{what}; {hint}")]
    KernelUnbootable { what: String, hint: String },
    #[error("the target disk is too small: the plan needs {} ({breakdown}), the disk has {}. Give a larger size=, or leave data out with --exclude",
        format_bytes(*needed), format_bytes(*available))]
    DiskTooSmall {
        needed: u64,
        available: u64,
        breakdown: String,
    },
    #[error(transparent)]
    FsRule(#[from] fs_rules::FsRuleError),
    #[error("the plan is not valid: {0}")]
    Invalid(String),
    #[error("the plan file is not valid TOML for a hotclone plan: {0}")]
    Parse(String),
}

/// Space before the first partition (alignment) and after the last (the
/// GPT backup header).
const DISK_OVERHEAD: u64 = 2 * MIB;
const BIOS_BOOT_SIZE: u64 = MIB;

pub fn make(inv: &Inventory, opts: &PlanOptions) -> Result<Plan, PlanError> {
    let kernel_release = match &opts.kernel {
        Some(k) => k.clone(),
        None => newest_installed_kernel(inv),
    };
    if kernel_rules::xen_pv_only(inv.os.family, &kernel_release) {
        return Err(PlanError::KernelUnbootable {
            what: format!(
                "{} has only Xen paravirtual kernels installed ({}), which cannot boot under KVM",
                inv.source,
                pv_kernels(inv, &kernel_release)
            ),
            hint: format!(
                "install the non-Xen kernel on the source: {}; then plan again",
                kernel_rules::non_xen_kernel_package(inv.os.family, &kernel_release)
            ),
        });
    }
    let kernel = KernelVersion::parse(&kernel_release).ok_or_else(|| PlanError::KernelUnknown {
        release: kernel_release.clone(),
    })?;
    let bootloader = inv.bootloader.kind;
    let table = match bootloader {
        BootloaderKind::GrubLegacy | BootloaderKind::Lilo | BootloaderKind::Extlinux => {
            PartitionTable::Mbr
        }
        BootloaderKind::Grub2 | BootloaderKind::None => PartitionTable::Gpt,
    };
    let mut notes = vec![format!(
        "filesystems are chosen for kernel {kernel_release} and {} ({})",
        name_of(&bootloader),
        match table {
            PartitionTable::Mbr => "MBR, as that bootloader predates GPT",
            PartitionTable::Gpt => "GPT with a BIOS boot partition",
        }
    )];
    if inv.bootloader.uefi {
        notes.push(
            "the source boots with UEFI; the clone is planned for BIOS boot (grub-pc)".into(),
        );
    }
    if let kernel_rules::Virtio::Missing(hint) = kernel_rules::virtio_support(&kernel_release) {
        notes.push(format!(
            "kernel {kernel_release} has no virtio drivers by its version ({hint}); conversion refuses it unless its modules list virtio_blk"
        ));
    }
    let kept: Vec<&str> = inv
        .network
        .interfaces
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| crate::probe::is_virtual_interface(n))
        .collect();
    if !kept.is_empty() {
        notes.push(format!(
            "virtual interfaces keep their names and configuration: {} (a bridge's port takes the VM NIC's name)",
            kept.join(", ")
        ));
    }

    let selection = layout::select(inv, &opts.include_mounts);
    let mut excludes = base_excludes(inv);
    let mut copied = Vec::new();
    for s in &selection {
        match s {
            layout::Selection::Copy(m) => copied.push(*m),
            layout::Selection::Skip { mount, reason } => excludes.push(Exclude {
                path: mount.mount_point.clone(),
                contents_only: true,
                reason: reason.clone(),
            }),
        }
    }
    if !copied.iter().any(|m| m.mount_point == "/") {
        return Err(PlanError::NoRoot {
            source_name: inv.source.clone(),
        });
    }
    copied.sort_by_key(|m| layout::order_key(&m.mount_point));
    let merged_into_root: Vec<String> = if opts.consolidate {
        copied
            .iter()
            .filter(|m| m.mount_point != "/")
            .map(|m| m.mount_point.clone())
            .collect()
    } else {
        Vec::new()
    };
    if !merged_into_root.is_empty() {
        notes.push(format!(
            "{} go into the / filesystem (--consolidate); their fstab lines are commented out",
            merged_into_root.join(", ")
        ));
    }
    let merged_usage = |field: fn(&crate::probe::Mount) -> Option<u64>| -> Option<u64> {
        copied.iter().map(|m| field(m)).sum()
    };
    let (root_used, root_inodes) = (
        merged_usage(|m| m.bytes_used),
        merged_usage(|m| m.inodes_used),
    );
    copied.retain(|m| !merged_into_root.contains(&m.mount_point));
    let boot_on_own_fs = copied.iter().any(|m| m.mount_point == "/boot");

    let mut partitions = Vec::new();
    if table == PartitionTable::Gpt {
        partitions.push(bare_partition(PartitionRole::BiosBoot, BIOS_BOOT_SIZE));
    }
    for m in &copied {
        let holds_boot = m.mount_point == "/boot" || (m.mount_point == "/" && !boot_on_own_fs);
        let choice = fs_rules::choose(&m.fs_type, kernel, bootloader, holds_boot)?;
        let consolidated_root = m.mount_point == "/" && !merged_into_root.is_empty();
        let (bytes_used, inodes_used) = if consolidated_root {
            (root_used, root_inodes)
        } else {
            (m.bytes_used, m.inodes_used)
        };
        let used = bytes_used.unwrap_or(0);
        if bytes_used.is_none() {
            notes.push(format!(
                "{}: usage unknown (df failed); sized at the minimum, check it",
                m.mount_point
            ));
        }
        let size = layout::partition_size(
            used,
            opts.headroom_percent,
            opts.min_free_bytes,
            choice.fs_type.min_bytes(),
        );
        if choice.fs_type.name() != m.fs_type {
            notes.push(format!(
                "{}: {} becomes {} ({})",
                m.mount_point,
                m.fs_type,
                choice.fs_type.name(),
                choice.reason
            ));
        }
        partitions.push(Partition {
            number: 0,
            role: PartitionRole::Filesystem,
            size_bytes: size,
            mount_point: Some(m.mount_point.clone()),
            inodes: layout::inode_count(size, inodes_used),
            label: m.label.clone(),
            source_device: Some(m.device.clone()),
            source_used_bytes: bytes_used,
            fs: Some(choice),
        });
    }
    let swap: u64 = inv
        .storage
        .swaps
        .iter()
        .filter(|s| s.kind == "partition")
        .map(|s| s.size_bytes)
        .sum();
    if swap > 0 {
        partitions.push(Partition {
            fs: None,
            ..bare_partition(PartitionRole::Swap, round_up(swap, MIB))
        });
    }
    number_partitions(&mut partitions, table);

    let needed = space_needed(&partitions);
    let target_size = match &opts.target {
        TargetSpec::Image { size_bytes, .. } | TargetSpec::Live { size_bytes, .. } => *size_bytes,
    };
    let size_bytes = match target_size {
        Some(available) if available < needed => {
            return Err(PlanError::DiskTooSmall {
                needed,
                available,
                breakdown: breakdown(&partitions),
            });
        }
        Some(available) => available,
        None => round_up(needed, GIB),
    };
    // The spare space goes to /, where growth usually happens. / is always
    // a primary partition (only /boot comes before it).
    if let Some(root) = partitions
        .iter_mut()
        .find(|p| p.mount_point.as_deref() == Some("/"))
    {
        root.size_bytes += (size_bytes - needed) / MIB * MIB;
    }

    let autorelabel = needs_autorelabel(inv);
    if autorelabel {
        notes.push(format!(
            "SELinux is {} on the source but its tar cannot copy labels (no --selinux): the clone relabels itself at first boot (/.autorelabel), which takes a while",
            inv.selinux.as_deref().unwrap_or("?")
        ));
    }
    for pattern in &opts.excludes {
        excludes.push(Exclude {
            path: pattern.clone(),
            contents_only: false,
            reason: "--exclude".into(),
        });
    }
    let plan = Plan {
        version: PLAN_VERSION,
        notes,
        source: SourceSummary {
            name: inv.source.clone(),
            hostname: inv.hostname.clone(),
            distro: inv.os.pretty_name.clone(),
            family: inv.os.family,
            kernel: kernel_release,
            bootloader,
        },
        target: opts.target.clone(),
        disk: DiskLayout {
            partition_table: table,
            size_bytes,
            partitions,
        },
        excludes,
        network: nic_mappings(inv),
        merged_into_root,
        autorelabel,
    };
    plan.validate()?;
    Ok(plan)
}

/// SELinux labels will be lost: the source enforces or logs SELinux and
/// its tar has no --selinux.
pub fn needs_autorelabel(inv: &Inventory) -> bool {
    matches!(
        inv.selinux.as_deref(),
        Some("enforcing") | Some("permissive")
    ) && !inv.capabilities.tar.selinux
}

fn name_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn bare_partition(role: PartitionRole, size_bytes: u64) -> Partition {
    Partition {
        number: 0,
        role,
        size_bytes,
        mount_point: None,
        fs: None,
        inodes: None,
        label: None,
        source_device: None,
        source_used_bytes: None,
    }
}

/// The newest installed kernel, a Xen paravirtual one only when nothing
/// else is installed (a Xen guest often carries both flavours, and runs
/// the Xen one).
fn newest_installed_kernel(inv: &Inventory) -> String {
    let newest = |xen: bool| {
        inv.kernel
            .installed
            .iter()
            .filter(|k| kernel_rules::xen_pv_only(inv.os.family, k) == xen)
            .filter_map(|k| KernelVersion::parse(k).map(|v| (v, k)))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, k)| k.clone())
    };
    newest(false)
        .or_else(|| newest(true))
        .unwrap_or_else(|| inv.kernel.running.clone())
}

/// The Xen PV kernels installed, for the refusal (the chosen one when the
/// inventory lists none).
fn pv_kernels(inv: &Inventory, chosen: &str) -> String {
    let all: Vec<&str> = inv
        .kernel
        .installed
        .iter()
        .map(String::as_str)
        .filter(|k| kernel_rules::xen_pv_only(inv.os.family, k))
        .collect();
    if all.is_empty() {
        chosen.to_string()
    } else {
        all.join(", ")
    }
}

/// GPT: 1, 2, 3... MBR: primaries 1-3, then extended 4 holding 5, 6...
/// when more than four partitions are needed.
fn number_partitions(partitions: &mut Vec<Partition>, table: PartitionTable) {
    if table == PartitionTable::Mbr && partitions.len() > 4 {
        // Each logical partition is preceded by its 1 MiB extended boot record.
        let logical_total: u64 = partitions[3..].iter().map(|p| p.size_bytes + MIB).sum();
        partitions.insert(3, bare_partition(PartitionRole::Extended, logical_total));
    }
    for (i, p) in partitions.iter_mut().enumerate() {
        p.number = i as u32 + 1;
    }
}

/// Bytes of disk the partitions need: their sizes, the alignment and GPT
/// backup overhead, and an EBR gap per logical partition (the extended
/// partition itself is only a container).
pub fn space_needed(partitions: &[Partition]) -> u64 {
    let logical = if partitions.iter().any(|p| p.role == PartitionRole::Extended) {
        partitions.len() as u64 - 4
    } else {
        0
    };
    partitions
        .iter()
        .filter(|p| p.role != PartitionRole::Extended)
        .map(|p| p.size_bytes)
        .sum::<u64>()
        + DISK_OVERHEAD
        + logical * MIB
}

fn breakdown(partitions: &[Partition]) -> String {
    partitions
        .iter()
        .filter(|p| p.role != PartitionRole::Extended)
        .map(|p| {
            let what = match (p.role, &p.mount_point) {
                (_, Some(mp)) => mp.clone(),
                (PartitionRole::Swap, _) => "swap".into(),
                (PartitionRole::BiosBoot, _) => "bios-boot".into(),
                _ => "?".into(),
            };
            format!("{what} {}", format_bytes(p.size_bytes))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Never copied: kernel and runtime filesystems, temporary files, swap
/// files, and the contents of every non-disk mount (kept as mount points).
fn base_excludes(inv: &Inventory) -> Vec<Exclude> {
    let mut out: Vec<Exclude> = [
        "/proc",
        "/sys",
        "/dev",
        "/run",
        "/tmp",
        "/var/run",
        "/var/lock",
    ]
    .iter()
    .map(|p| Exclude {
        path: p.to_string(),
        contents_only: true,
        reason: "runtime state, recreated at boot".into(),
    })
    .collect();
    for m in &inv.storage.mounts {
        if m.kind == MountKind::Disk
            || out.iter().any(|e| {
                m.mount_point == e.path || m.mount_point.starts_with(&format!("{}/", e.path))
            })
        {
            continue;
        }
        let reason = match m.kind {
            MountKind::Network => format!("network filesystem ({} from {})", m.fs_type, m.device),
            MountKind::Pseudo => format!("{} is not stored on disk", m.fs_type),
            _ => format!("not a local disk filesystem ({} {})", m.fs_type, m.device),
        };
        out.push(Exclude {
            path: m.mount_point.clone(),
            contents_only: true,
            reason,
        });
    }
    for s in inv.storage.swaps.iter().filter(|s| s.kind == "file") {
        out.push(Exclude {
            path: s.path.clone(),
            contents_only: false,
            reason: "swap file; recreate it on the clone if wanted".into(),
        });
    }
    out
}

fn nic_mappings(inv: &Inventory) -> Vec<NicMapping> {
    inv.network
        .interfaces
        .iter()
        .filter(|i| i.name != "lo" && i.mac.is_some())
        .filter(|i| i.addresses.iter().any(|a| !a.starts_with("fe80:")))
        .enumerate()
        .map(|(n, i)| NicMapping {
            source_interface: i.name.clone(),
            source_mac: i.mac.clone(),
            addresses: i
                .addresses
                .iter()
                .filter(|a| !a.starts_with("fe80:"))
                .cloned()
                .collect(),
            target_nic: n as u32,
        })
        .collect()
}

impl Plan {
    pub fn to_toml(&self) -> String {
        // Serialising plain data to TOML cannot fail for this struct: every
        // map key is a string and no value is a bare None at the top level.
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot render the plan as TOML: {e}\n"))
    }

    pub fn from_toml(text: &str) -> Result<Plan, PlanError> {
        let plan: Plan = toml::from_str(text).map_err(|e| PlanError::Parse(e.to_string()))?;
        plan.validate()?;
        Ok(plan)
    }

    /// Checks an edited plan for what would break the clone.
    pub fn validate(&self) -> Result<(), PlanError> {
        let invalid = |m: String| Err(PlanError::Invalid(m));
        if self.version != PLAN_VERSION {
            return invalid(format!(
                "version {} (this hotclone reads version {PLAN_VERSION})",
                self.version
            ));
        }
        let parts = &self.disk.partitions;
        let roots = parts
            .iter()
            .filter(|p| p.mount_point.as_deref() == Some("/"))
            .count();
        if roots != 1 {
            return invalid(format!(
                "{roots} partitions are mounted at /; exactly one must be"
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for p in parts {
            if let Some(mp) = p.mount_point.as_deref() {
                if !mp.starts_with('/') {
                    return invalid(format!(
                        "partition {}: mount point {mp:?} is not absolute",
                        p.number
                    ));
                }
                if seen.contains(&mp) {
                    return invalid(format!("{mp} appears twice"));
                }
                seen.push(mp);
            }
            match (p.role, &p.fs) {
                (PartitionRole::Filesystem, None) => {
                    return invalid(format!("partition {} has no fs", p.number))
                }
                (PartitionRole::Filesystem, Some(fs)) if p.size_bytes < fs.fs_type.min_bytes() => {
                    return invalid(format!(
                        "partition {} ({}) is {}, below the {} minimum of {}",
                        p.number,
                        p.mount_point.as_deref().unwrap_or("?"),
                        format_bytes(p.size_bytes),
                        fs.fs_type.name(),
                        format_bytes(fs.fs_type.min_bytes())
                    ))
                }
                (PartitionRole::Filesystem, _) if p.mount_point.is_none() => {
                    return invalid(format!(
                        "partition {} has a filesystem but no mount point",
                        p.number
                    ))
                }
                _ => {}
            }
            if let Some(used) = p.source_used_bytes {
                if p.size_bytes < used {
                    return invalid(format!(
                        "partition {} ({}) is {}, smaller than the {} of data it must hold",
                        p.number,
                        p.mount_point.as_deref().unwrap_or("?"),
                        format_bytes(p.size_bytes),
                        format_bytes(used)
                    ));
                }
            }
        }
        for m in &self.merged_into_root {
            if !m.starts_with('/') || m == "/" || seen.contains(&m.as_str()) {
                return invalid(format!(
                    "merged_into_root lists {m:?}: it must be an absolute mount point other than / with no partition of its own"
                ));
            }
        }
        let numbers: Vec<u32> = parts.iter().map(|p| p.number).collect();
        if numbers.iter().enumerate().any(|(i, n)| *n != i as u32 + 1) {
            return invalid(format!(
                "partition numbers must run 1, 2, 3... in order, found {numbers:?}"
            ));
        }
        let primaries = parts.iter().filter(|p| p.number <= 4).count();
        if self.disk.partition_table == PartitionTable::Mbr
            && parts.len() > 4
            && parts.get(3).map(|p| p.role) != Some(PartitionRole::Extended)
        {
            return invalid(format!("MBR holds 4 primary partitions; partition 4 must be the extended one ({primaries} primaries)"));
        }
        if self.disk.partition_table == PartitionTable::Gpt
            && parts.first().map(|p| p.role) != Some(PartitionRole::BiosBoot)
        {
            return invalid(
                "a GPT disk for BIOS boot needs partition 1 to be the bios-boot partition".into(),
            );
        }
        let used = space_needed(parts);
        if used > self.disk.size_bytes {
            return Err(PlanError::DiskTooSmall {
                needed: used,
                available: self.disk.size_bytes,
                breakdown: breakdown(parts),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
