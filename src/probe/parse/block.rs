//! Block devices and their stacking: /proc/partitions (always there),
//! `lsblk -P` (when present, with partition-table types), LVM from `lvs`,
//! MD from /proc/mdstat.

use super::quoted_pairs;
use crate::probe::inventory::{BlockDevice, LogicalVolume, MdArray};

/// `lsblk -P -b -o NAME,KNAME,PKNAME,TYPE,SIZE,FSTYPE,UUID,LABEL,MOUNTPOINT,PTTYPE`.
pub fn parse_lsblk(text: &str) -> Vec<BlockDevice> {
    text.lines()
        .filter_map(|line| {
            let pairs = quoted_pairs(line);
            let get = |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty())
            };
            Some(BlockDevice {
                name: get("KNAME").or_else(|| get("NAME"))?,
                kind: get("TYPE").unwrap_or_else(|| "unknown".into()),
                size_bytes: get("SIZE").and_then(|s| s.parse().ok()).unwrap_or(0),
                parent: get("PKNAME"),
                partition_table: get("PTTYPE"),
                fs_type: get("FSTYPE"),
                uuid: get("UUID"),
                label: get("LABEL"),
                mount_point: get("MOUNTPOINT"),
            })
        })
        .collect()
}

/// /proc/partitions, for systems without lsblk (RHEL 5, busybox). Kinds and
/// parents are derived from kernel names: `hda1` is a partition of `hda`,
/// `cciss/c0d0p1` of `cciss/c0d0`, `md0` an MD array, `dm-0` device-mapper.
pub fn parse_proc_partitions(text: &str) -> Vec<BlockDevice> {
    let names: Vec<(String, u64)> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 4 {
                return None;
            }
            let blocks: u64 = f[2].parse().ok()?;
            Some((f[3].to_string(), blocks.saturating_mul(1024)))
        })
        .collect();
    names
        .iter()
        .map(|(name, size)| {
            let parent = partition_parent(name).filter(|p| names.iter().any(|(n, _)| n == p));
            let kind = if parent.is_some() {
                "part"
            } else if name.starts_with("md") {
                "raid"
            } else if name.starts_with("dm-") {
                "dm"
            } else if name.starts_with("loop") {
                "loop"
            } else if name.starts_with("sr") || name.starts_with("ram") {
                "rom"
            } else {
                "disk"
            };
            BlockDevice {
                name: name.clone(),
                kind: kind.into(),
                size_bytes: *size,
                parent,
                partition_table: None,
                fs_type: None,
                uuid: None,
                label: None,
                mount_point: None,
            }
        })
        .collect()
}

/// The disk a partition name belongs to: `sda1`->`sda`, `nvme0n1p2`->`nvme0n1`,
/// `cciss/c0d0p1`->`cciss/c0d0`, `mmcblk0p1`->`mmcblk0`. None for a whole disk.
pub fn partition_parent(name: &str) -> Option<String> {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits == name.len() {
        return None;
    }
    let stem = &name[..name.len() - digits];
    if let Some(disk) = stem.strip_suffix('p') {
        // nvme0n1p1, mmcblk0p1, cciss/c0d0p1, loop0p1: the disk name ends in a digit.
        if disk.ends_with(|c: char| c.is_ascii_digit()) {
            return Some(disk.to_string());
        }
    }
    let is_letter_disk = ["sd", "hd", "vd", "xvd"]
        .iter()
        .any(|p| stem.starts_with(p));
    is_letter_disk.then(|| stem.to_string())
}

/// `lvs --noheadings --nosuffix --units b --separator '|' -o vg_name,lv_name,lv_size`.
pub fn parse_lvs(text: &str) -> Vec<LogicalVolume> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.trim().split('|').map(str::trim).collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(LogicalVolume {
                vg: f[0].into(),
                lv: f[1].into(),
                size_bytes: f[2].trim_end_matches('B').parse().unwrap_or(0),
                path: format!("/dev/{}/{}", f[0], f[1]),
            })
        })
        .collect()
}

/// /proc/mdstat: `md0 : active raid1 sdb1[1] sda1[0]`.
pub fn parse_mdstat(text: &str) -> Vec<MdArray> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(" : ")?;
            let name = name.trim();
            if !name.starts_with("md") {
                return None;
            }
            let mut words = rest.split_whitespace();
            let state = words.next()?;
            let active = state == "active";
            let rest: Vec<&str> = words
                .filter(|w| *w != "(read-only)" && *w != "(auto-read-only)")
                .collect();
            let (level, members) = match rest.first() {
                Some(l) if !l.contains('[') => (l.to_string(), &rest[1..]),
                _ => ("unknown".to_string(), &rest[..]),
            };
            Some(MdArray {
                name: name.to_string(),
                level,
                active,
                members: members
                    .iter()
                    .map(|m| m.split('[').next().unwrap_or(m).to_string())
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_parents_for_old_and_new_names() {
        assert_eq!(partition_parent("hda1").as_deref(), Some("hda"));
        assert_eq!(partition_parent("sdb12").as_deref(), Some("sdb"));
        assert_eq!(partition_parent("nvme0n1p2").as_deref(), Some("nvme0n1"));
        assert_eq!(
            partition_parent("cciss/c0d0p1").as_deref(),
            Some("cciss/c0d0")
        );
        assert_eq!(partition_parent("xvda1").as_deref(), Some("xvda"));
        assert_eq!(partition_parent("sda"), None);
        assert_eq!(partition_parent("md0"), None);
        assert_eq!(partition_parent("nvme0n1"), None);
        assert_eq!(partition_parent("loop0"), None);
    }

    #[test]
    fn rhel5_proc_partitions_with_cciss_md_and_dm() {
        let devs = parse_proc_partitions(fixture!("rhel5/proc_partitions"));
        assert_eq!(devs.len(), 8);
        let find = |n: &str| devs.iter().find(|d| d.name == n).unwrap();
        assert_eq!(find("cciss/c0d0").kind, "disk");
        assert_eq!(find("cciss/c0d0p2").parent.as_deref(), Some("cciss/c0d0"));
        assert_eq!(find("cciss/c0d0p2").size_bytes, 71545477 * 1024);
        assert_eq!(find("md0").kind, "raid");
        assert_eq!(find("dm-1").kind, "dm");
    }

    #[test]
    fn rhel5_lvm_and_mdstat() {
        let lvs = parse_lvs(fixture!("rhel5/lvs"));
        assert_eq!(lvs[0].path, "/dev/VolGroup00/LogVol00");
        assert_eq!(lvs[1].size_bytes, 2483027968);
        let md = parse_mdstat(fixture!("rhel5/mdstat"));
        assert_eq!(md.len(), 2);
        assert_eq!((md[0].level.as_str(), md[0].active), ("raid1", true));
        assert_eq!(md[0].members, vec!["sdb1", "sda1"]);
        assert!(!md[1].active);
        assert_eq!(md[1].members, vec!["sdc1"]);
    }

    #[test]
    fn lsblk_pairs_with_empty_values_become_none() {
        let devs = parse_lsblk(
            "NAME=\"vda\" KNAME=\"vda\" PKNAME=\"\" TYPE=\"disk\" SIZE=\"21474836480\" FSTYPE=\"\" UUID=\"\" LABEL=\"\" MOUNTPOINT=\"\" PTTYPE=\"gpt\"\n\
             NAME=\"vda1\" KNAME=\"vda1\" PKNAME=\"vda\" TYPE=\"part\" SIZE=\"1048576\" FSTYPE=\"ext4\" UUID=\"u-1\" LABEL=\"my root\" MOUNTPOINT=\"/\" PTTYPE=\"gpt\"\n",
        );
        assert_eq!(devs[0].partition_table.as_deref(), Some("gpt"));
        assert_eq!(devs[0].fs_type, None);
        assert_eq!(devs[1].parent.as_deref(), Some("vda"));
        assert_eq!(devs[1].label.as_deref(), Some("my root"));
        assert_eq!(devs[1].size_bytes, 1048576);
    }
}
