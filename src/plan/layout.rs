//! Which source filesystems become partitions, in what order and size.

use crate::probe::{BlockDevice, Inventory, Mount, MountKind};
use crate::units::{round_up, MIB};

/// A mount that will be copied, or the reason it will not be.
pub enum Selection<'a> {
    Copy(&'a Mount),
    Skip { mount: &'a Mount, reason: String },
}

/// The whole disk a block device lives on (`hda3` -> `hda`), following
/// parents through the probe's block device list.
pub fn disk_of(devices: &[BlockDevice], device_path: &str) -> Option<String> {
    let mut name = device_path.strip_prefix("/dev/")?.to_string();
    for _ in 0..8 {
        let dev = devices.iter().find(|d| d.name == name)?;
        match &dev.parent {
            Some(parent) => name = parent.clone(),
            None => return Some(name),
        }
    }
    None
}

/// Local filesystems to copy: every disk-backed mount, except bind mounts
/// of one already chosen, and filesystems on another disk than / (unless
/// the user names their mount point in `include`).
pub fn select<'a>(inv: &'a Inventory, include: &[String]) -> Vec<Selection<'a>> {
    let mounts = &inv.storage.mounts;
    let root_disk = inv
        .root_mount()
        .and_then(|m| disk_of(&inv.storage.block_devices, &m.device));
    let mut seen_devices: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for m in mounts.iter().filter(|m| m.kind == MountKind::Disk) {
        if seen_devices.contains(&m.device.as_str()) {
            out.push(Selection::Skip {
                mount: m,
                reason: format!("bind mount or second mount of {}", m.device),
            });
            continue;
        }
        seen_devices.push(&m.device);
        let disk = disk_of(&inv.storage.block_devices, &m.device);
        let other_disk = matches!((&disk, &root_disk), (Some(d), Some(r)) if d != r);
        if other_disk && !include.iter().any(|i| i == &m.mount_point) {
            out.push(Selection::Skip {
                mount: m,
                reason: format!(
                    "on another disk ({}) than / ({}); add --include-mount {} to copy it",
                    disk.as_deref().unwrap_or("?"),
                    root_disk.as_deref().unwrap_or("?"),
                    crate::shell::quote_for_paste(&m.mount_point)
                ),
            });
            continue;
        }
        out.push(Selection::Copy(m));
    }
    out
}

/// Order partitions like an installer would: /boot first, then /, then the
/// rest by mount point, so grub-legacy finds /boot early on the disk.
pub fn order_key(mount_point: &str) -> (u8, String) {
    match mount_point {
        "/boot" => (0, String::new()),
        "/" => (1, String::new()),
        other => (2, other.to_string()),
    }
}

/// Size for a copy of a filesystem holding `used` bytes: the data, plus
/// `headroom_percent` of it, plus `min_free`, rounded up to whole MiB, and
/// never below `floor`.
pub fn partition_size(used: u64, headroom_percent: u32, min_free: u64, floor: u64) -> u64 {
    let headroom = used / 100 * u64::from(headroom_percent);
    round_up(used.saturating_add(headroom).saturating_add(min_free), MIB).max(round_up(floor, MIB))
}

/// Inodes to ask mkfs for when the default ratio (one per 16 KiB) would
/// not hold the source's files with half again to spare.
pub fn inode_count(size_bytes: u64, inodes_used: Option<u64>) -> Option<u64> {
    let used = inodes_used?;
    let needed = used + used / 2 + 10_000;
    (needed > size_bytes / 16384).then_some(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_headroom_and_floor() {
        assert_eq!(
            partition_size(1000 * MIB, 30, 256 * MIB, 32 * MIB),
            1556 * MIB
        );
        assert_eq!(partition_size(0, 30, 0, 32 * MIB), 32 * MIB);
        assert_eq!(partition_size(1, 30, 0, 0), MIB);
    }

    #[test]
    fn inode_count_only_when_default_ratio_is_short() {
        assert_eq!(inode_count(1 << 30, Some(1000)), None);
        // A mail spool: 200k small files in 1 GiB.
        assert_eq!(inode_count(1 << 30, Some(200_000)), Some(310_000));
        assert_eq!(inode_count(1 << 30, None), None);
    }

    #[test]
    fn boot_before_root_before_the_rest() {
        let mut mps = vec!["/var", "/", "/boot", "/home"];
        mps.sort_by_key(|m| order_key(m));
        assert_eq!(mps, vec!["/boot", "/", "/home", "/var"]);
    }
}
