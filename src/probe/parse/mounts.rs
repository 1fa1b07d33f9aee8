//! Mounted filesystems: /proc/mounts, `df -P -k`, `df -P -i`, `blkid`, and
//! the source's /etc/fstab (kept as written; the converter rewrites it).

use std::collections::BTreeMap;

use super::{quoted_pairs, unescape_octal};
use crate::probe::inventory::{FstabEntry, Mount, MountKind, Swap};

const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "mqueue",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "autofs",
    "rpc_pipefs",
    "nfsd",
    "usbfs",
    "rootfs",
    "efivarfs",
    "selinuxfs",
    "ramfs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "nsfs",
    "overlay",
    "squashfs",
    "iso9660",
    "swap",
];
const NETWORK: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smbfs",
    "smb3",
    "ncpfs",
    "fuse.sshfs",
    "glusterfs",
    "fuse.glusterfs",
    "ceph",
    "fuse.ceph",
    "9p",
    "afs",
    "ocfs2",
    "gfs2",
];

pub fn classify(device: &str, fs_type: &str) -> MountKind {
    if NETWORK.contains(&fs_type)
        || (device.contains(":/") && !device.starts_with('/'))
        || device.starts_with("//")
    {
        MountKind::Network
    } else if PSEUDO.contains(&fs_type) {
        MountKind::Pseudo
    } else if device.starts_with("/dev/") {
        MountKind::Disk
    } else {
        MountKind::Other
    }
}

/// Sizes from `df`: mount point -> (total, used) in bytes (or inodes).
pub type DfTable = BTreeMap<String, (u64, u64)>;

/// `df -P -k` (sizes in KiB, scaled to bytes) or `df -P -i` (inode counts,
/// `scale` 1). Columns: filesystem, total, used, available, capacity, then
/// the mount point, which may contain spaces.
pub fn parse_df(text: &str, scale: u64) -> DfTable {
    let mut table = DfTable::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 {
            continue;
        }
        let (Ok(total), Ok(used)) = (fields[1].parse::<u64>(), fields[2].parse::<u64>()) else {
            continue;
        };
        let mount_point = fields[5..].join(" ");
        table.insert(
            mount_point,
            (total.saturating_mul(scale), used.saturating_mul(scale)),
        );
    }
    table
}

/// `blkid` lines: device -> KEY -> value.
pub fn parse_blkid(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((device, rest)) = line.split_once(": ") else {
            continue;
        };
        let tags = quoted_pairs(rest).into_iter().collect();
        out.insert(device.trim().to_string(), tags);
    }
    out
}

/// /proc/mounts joined with df and blkid. The `rootfs` pseudo-entry that
/// old kernels list before the real root is dropped.
pub fn parse_mounts(
    proc_mounts: &str,
    df_bytes: &DfTable,
    df_inodes: &DfTable,
    blkid: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in proc_mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[2] == "rootfs" {
            continue;
        }
        let device = unescape_octal(f[0]);
        let mount_point = unescape_octal(f[1]);
        let tags = blkid.get(&device);
        let tag = |k: &str| tags.and_then(|t| t.get(k)).cloned();
        mounts.push(Mount {
            kind: classify(&device, f[2]),
            uuid: tag("UUID"),
            label: tag("LABEL"),
            bytes_total: df_bytes.get(&mount_point).map(|v| v.0),
            bytes_used: df_bytes.get(&mount_point).map(|v| v.1),
            inodes_total: df_inodes.get(&mount_point).map(|v| v.0),
            inodes_used: df_inodes.get(&mount_point).map(|v| v.1),
            device,
            mount_point,
            fs_type: f[2].to_string(),
            options: f[3].to_string(),
        });
    }
    mounts
}

pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 3 {
                return None;
            }
            Some(FstabEntry {
                spec: unescape_octal(f[0]),
                mount_point: unescape_octal(f[1]),
                fs_type: f[2].to_string(),
                options: f.get(3).unwrap_or(&"defaults").to_string(),
                dump: f.get(4).and_then(|v| v.parse().ok()).unwrap_or(0),
                pass: f.get(5).and_then(|v| v.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// /proc/swaps: `Filename Type Size Used Priority`, sizes in KiB.
pub fn parse_swaps(text: &str) -> Vec<Swap> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                return None;
            }
            Some(Swap {
                path: unescape_octal(f[0]),
                kind: f[1].to_string(),
                size_bytes: f[2].parse::<u64>().ok()?.saturating_mul(1024),
                used_bytes: f[3].parse::<u64>().ok()?.saturating_mul(1024),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian5() -> Vec<Mount> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/probe/debian5/");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap();
        parse_mounts(
            &read("proc_mounts"),
            &parse_df(&read("df_k"), 1024),
            &parse_df(&read("df_i"), 1),
            &parse_blkid(&read("blkid")),
        )
    }

    #[test]
    fn debian5_root_on_hda1_with_sizes_and_uuid() {
        let mounts = debian5();
        let root = mounts.iter().find(|m| m.mount_point == "/").unwrap();
        assert_eq!(root.device, "/dev/hda1");
        assert_eq!(root.fs_type, "ext3");
        assert_eq!(root.kind, MountKind::Disk);
        assert_eq!(
            root.uuid.as_deref(),
            Some("3e6be9de-8139-11d1-9106-a43f08d823a6")
        );
        assert_eq!(root.bytes_total, Some(9611492 * 1024));
        assert_eq!(root.bytes_used, Some(3014476 * 1024));
        assert_eq!(root.inodes_used, Some(118342));
    }

    #[test]
    fn debian5_rootfs_entry_dropped_and_kinds_classified() {
        let mounts = debian5();
        assert_eq!(mounts.iter().filter(|m| m.mount_point == "/").count(), 1);
        let kind = |mp: &str| mounts.iter().find(|m| m.mount_point == mp).unwrap().kind;
        assert_eq!(kind("/proc"), MountKind::Pseudo);
        assert_eq!(kind("/dev"), MountKind::Pseudo);
        assert_eq!(kind("/home"), MountKind::Network);
        assert_eq!(kind("/var"), MountKind::Disk);
    }

    #[test]
    fn mount_point_with_space_joins_df_and_label() {
        let mounts = debian5();
        let data = mounts.iter().find(|m| m.device == "/dev/hdb1").unwrap();
        assert_eq!(data.mount_point, "/srv/my data");
        assert_eq!(data.label.as_deref(), Some("data"));
        assert_eq!(data.bytes_total, Some(38456308 * 1024));
        assert_eq!(data.inodes_total, Some(2443200));
    }

    #[test]
    fn fstab_keeps_legacy_devices_labels_and_short_lines() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/probe/debian5/fstab"
        ));
        let fstab = parse_fstab(text);
        assert_eq!(fstab.len(), 7);
        assert_eq!(fstab[1].spec, "/dev/hda1");
        assert_eq!(fstab[1].pass, 1);
        assert_eq!(fstab[3].spec, "LABEL=data");
        assert_eq!(fstab[3].mount_point, "/srv/my data");
        assert_eq!(fstab[6].options, "defaults");
        assert_eq!(fstab[6].pass, 0);
    }

    #[test]
    fn swaps_partition_and_file() {
        let swaps = parse_swaps("Filename\t\t\t\tType\t\tSize\tUsed\tPriority\n/dev/hda2                               partition\t1951888\t0\t-1\n/swapfile                               file\t\t1048572\t12\t-2\n");
        assert_eq!(swaps.len(), 2);
        assert_eq!(
            (
                swaps[0].path.as_str(),
                swaps[0].kind.as_str(),
                swaps[0].size_bytes
            ),
            ("/dev/hda2", "partition", 1951888 * 1024)
        );
        assert_eq!(
            (swaps[1].kind.as_str(), swaps[1].used_bytes),
            ("file", 12 * 1024)
        );
    }

    #[test]
    fn busybox_df_without_inodes_is_empty_not_an_error() {
        assert!(parse_df("df: invalid option -- 'i'\n", 1).is_empty());
    }
}
