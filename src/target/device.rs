//! Facts about a block device on the target host, read before anything is
//! written to it: is anything on it in use, and how big is it. A disk
//! hotclone writes to must be wholly unused.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::image::ImageError;

/// The kernel's name for `device` (`/dev/vda` -> `vda`), following links.
fn kernel_name(device: &Path) -> Option<String> {
    let real = std::fs::canonicalize(device).ok()?;
    real.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// True when `candidate` (a device path from /proc/mounts or /proc/swaps)
/// is `disk` or one of its partitions.
pub fn on_disk(candidate: &str, disk: &str) -> bool {
    let Some(rest) = candidate.strip_prefix(disk) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    // vda -> vda1; nvme0n1 and loop0 -> nvme0n1p1, loop0p1.
    let digits = if disk.ends_with(|c: char| c.is_ascii_digit()) {
        match rest.strip_prefix('p') {
            Some(d) => d,
            None => return false,
        }
    } else {
        rest
    };
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// What uses `device`, from the mount table, the swap table and sysfs
/// holders (LVM, MD, device-mapper); empty when nothing does.
pub fn users(device: &Path, mounts: &str, swaps: &str, sys_block: &Path) -> Vec<String> {
    let disk = device.display().to_string();
    let mut out = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 2 && on_disk(f[0], &disk) {
            out.push(format!(
                "{} is mounted on {}",
                f[0],
                f[1].replace("\\040", " ")
            ));
        }
    }
    for line in swaps.lines().skip(1) {
        if let Some(dev) = line.split_whitespace().next().filter(|d| on_disk(d, &disk)) {
            out.push(format!("{dev} is active swap"));
        }
    }
    if let Some(name) = kernel_name(device) {
        let base = sys_block.join(&name);
        let mut dirs = vec![base.clone()];
        if let Ok(rd) = std::fs::read_dir(&base) {
            dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&name))
            }));
        }
        for d in dirs {
            if let Ok(rd) = std::fs::read_dir(d.join("holders")) {
                for h in rd.flatten() {
                    out.push(format!(
                        "{} is held by {} (LVM, MD or device-mapper)",
                        d.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        h.file_name().to_string_lossy()
                    ));
                }
            }
        }
    }
    out
}

/// Refuse `device` unless it is a block device nothing uses.
pub fn check_free(device: &Path) -> Result<(), ImageError> {
    let meta = std::fs::metadata(device).map_err(|e| ImageError::InUse {
        device: device.to_path_buf(),
        what: format!("it cannot be opened: {e}"),
    })?;
    if !meta.file_type().is_block_device() {
        return Err(ImageError::InUse {
            device: device.to_path_buf(),
            what: "it is not a block device".into(),
        });
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    let used = users(device, &mounts, &swaps, Path::new("/sys/class/block"));
    if used.is_empty() {
        Ok(())
    } else {
        Err(ImageError::InUse {
            device: device.to_path_buf(),
            what: used.join("; "),
        })
    }
}

/// The size of a block device (or file) in bytes.
pub fn size(device: &Path) -> Result<u64, ImageError> {
    use std::io::Seek;
    let mut f = std::fs::File::open(device)?;
    Ok(f.seek(std::io::SeekFrom::End(0))?)
}

/// A whole disk of the target host, for choosing where the clone goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskInfo {
    pub device: PathBuf,
    pub size_bytes: u64,
    /// What uses it (empty: free).
    pub users: Vec<String>,
}

/// The whole disks of this host (virtio, SCSI/SATA, Xen, NVMe; no loop,
/// RAM or optical devices).
pub fn disks() -> Vec<DiskInfo> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let whole = ["vd", "sd", "hd", "xvd", "nvme"]
            .iter()
            .any(|p| name.starts_with(p));
        if !whole {
            continue;
        }
        let device = PathBuf::from(format!("/dev/{name}"));
        let sectors: u64 = std::fs::read_to_string(format!("/sys/block/{name}/size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        out.push(DiskInfo {
            users: users(&device, &mounts, &swaps, Path::new("/sys/class/block")),
            device,
            size_bytes: sectors * 512,
        });
    }
    out
}

/// Whether the kernel has `device` claimed: mounted in any mount
/// namespace, active swap, or held by LVM/MD. An `O_EXCL` open of a block
/// device fails with EBUSY exactly then (for a whole disk, also when any
/// of its partitions is claimed). Unlike `/proc/mounts`, which shows only
/// this process's mount namespace, it sees every namespace: a mount that a
/// killed client left alive in a namespace of its own (`ip netns exec`, a
/// container, a systemd unit with private mounts) counts.
pub fn claimed(device: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(device)
    {
        Ok(_) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(true),
        Err(e) => Err(e),
    }
}

/// `disk` and its partition devices, as sysfs lists them.
pub fn with_partitions(disk: &Path) -> Vec<PathBuf> {
    let mut out = vec![disk.to_path_buf()];
    let Some(name) = kernel_name(disk) else {
        return out;
    };
    if let Ok(rd) = std::fs::read_dir(Path::new("/sys/class/block").join(&name)) {
        let mut parts: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&name) && n.len() > name.len())
            .map(|n| Path::new("/dev").join(n))
            .collect();
        parts.sort();
        out.extend(parts);
    }
    out
}

/// Where `devices` are mounted, in every mount namespace of this host:
/// "/dev/loop3p2 on /var/lib/hotclone/x/mnt in the mount namespace of pid
/// 4242 (hotclone)". Read from each process's mountinfo (by device
/// number), one line per namespace and mount.
pub fn mounted_anywhere(devices: &[PathBuf]) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let wanted: Vec<(String, &PathBuf)> = devices
        .iter()
        .filter_map(|d| {
            let rdev = std::fs::metadata(d).ok()?.rdev();
            Some((format!("{}:{}", libc::major(rdev), libc::minor(rdev)), d))
        })
        .collect();
    let mut seen_ns = std::collections::HashSet::new();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let name = p.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(ns) = std::fs::read_link(p.path().join("ns/mnt")) else {
            continue;
        };
        if !seen_ns.insert(ns) {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(p.path().join("mountinfo")) else {
            continue;
        };
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        for line in info.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let (Some(devno), Some(point)) = (f.get(2), f.get(4)) else {
                continue;
            };
            if let Some((_, dev)) = wanted.iter().find(|(n, _)| n == devno) {
                out.push(format!(
                    "{} on {} in the mount namespace of pid {name} ({})",
                    dev.display(),
                    point.replace("\\040", " "),
                    comm.trim()
                ));
            }
        }
    }
    out
}

/// Wait up to `wait` for `disk` and its partitions to be released by
/// whatever still has them mounted (a killed run's namespace going away
/// takes a moment). Err with what holds them when they stay claimed.
pub fn wait_unclaimed(disk: &Path, wait: std::time::Duration) -> Result<(), ImageError> {
    let started = std::time::Instant::now();
    loop {
        let devices = with_partitions(disk);
        let mut busy = Vec::new();
        for d in &devices {
            if claimed(d)? {
                busy.push(d.clone());
            }
        }
        if busy.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= wait {
            let mut holders = mounted_anywhere(&busy);
            if holders.is_empty() {
                holders = busy
                    .iter()
                    .map(|d| format!("{} is open exclusively by some process", d.display()))
                    .collect();
            }
            return Err(ImageError::MountedElsewhere {
                device: disk.to_path_buf(),
                holders: holders.join("; "),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_belong_to_their_disk_only() {
        assert!(on_disk("/dev/vda", "/dev/vda"));
        assert!(on_disk("/dev/vda2", "/dev/vda"));
        assert!(!on_disk("/dev/vdb1", "/dev/vda"));
        assert!(!on_disk("/dev/vda-x", "/dev/vda"));
        assert!(on_disk("/dev/nvme0n1p3", "/dev/nvme0n1"));
        assert!(!on_disk("/dev/nvme0n10", "/dev/nvme0n1"));
        assert!(on_disk("/dev/loop0p1", "/dev/loop0"));
    }

    #[test]
    fn mounted_partitions_and_swap_are_named() {
        let mounts = "rootfs / rootfs rw 0 0\n/dev/vda1 /mnt/my\\040data ext4 rw 0 0\n/dev/vdb1 /srv ext4 rw 0 0\n";
        let swaps = "Filename\tType\tSize\tUsed\tPriority\n/dev/vda2 partition 1024 0 -2\n";
        let used = users(
            Path::new("/dev/vda"),
            mounts,
            swaps,
            Path::new("/nonexistent"),
        );
        assert_eq!(
            used,
            vec![
                "/dev/vda1 is mounted on /mnt/my data".to_string(),
                "/dev/vda2 is active swap".to_string()
            ]
        );
        assert!(users(
            Path::new("/dev/vdc"),
            mounts,
            swaps,
            Path::new("/nonexistent")
        )
        .is_empty());
    }

    #[test]
    fn a_regular_file_is_not_a_disk_to_write() {
        let e = check_free(Path::new("/proc/self/status"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a block device"), "{e}");
    }
}
