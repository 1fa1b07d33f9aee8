//! Which filesystem, with which on-disk features, the clone gets: chosen
//! for the kernel that will boot it and the bootloader that must read it.
//!
//! Modern mkfs turns on features an old kernel cannot mount (ext4's
//! metadata_csum needs 3.6, orphan_file 5.15) and an old bootloader cannot
//! read (grub-legacy reads neither extents nor 256-byte inodes). The rules
//! are one table, [`FEATURE_RULES`], and one function, [`choose`]. Every
//! feature that modern mkfs enables by default and that the target kernel
//! lacks is switched off explicitly, so the result does not depend on the
//! mkfs version that formats the disk.

use serde::{Deserialize, Serialize};

use crate::probe::BootloaderKind;

/// A kernel release reduced to what the rules compare: "2.6.26-2-686" ->
/// 2.6.26.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KernelVersion(pub u32, pub u32, pub u32);

impl KernelVersion {
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(str::parse::<u32>);
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        let patch = parts.next().and_then(Result::ok).unwrap_or(0);
        Some(KernelVersion(major, minor, patch))
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The filesystems a plan may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
    Btrfs,
    Vfat,
    Swap,
}

impl FsType {
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
            FsType::Vfat => "vfat",
            FsType::Swap => "swap",
        }
    }

    /// The smallest filesystem mkfs will make (xfsprogs refuses < 300 MiB).
    pub fn min_bytes(self) -> u64 {
        match self {
            FsType::Xfs => 300 << 20,
            FsType::Btrfs => 256 << 20,
            FsType::Vfat => 64 << 20,
            _ => 32 << 20,
        }
    }

    fn is_ext(self) -> bool {
        matches!(self, FsType::Ext2 | FsType::Ext3 | FsType::Ext4)
    }
}

/// Who must be able to read a feature: a minimum kernel, and whether
/// grub-legacy (0.97) can read a filesystem that has it.
#[derive(Debug)]
pub struct FeatureRule {
    pub fs: FsType,
    /// The feature as mkfs names it; for xfs, "section:name" (`-m crc`).
    pub feature: &'static str,
    pub min_kernel: KernelVersion,
    pub grub_legacy_reads_it: bool,
}

const fn rule(
    fs: FsType,
    feature: &'static str,
    k: (u32, u32, u32),
    grub_legacy: bool,
) -> FeatureRule {
    FeatureRule {
        fs,
        feature,
        min_kernel: KernelVersion(k.0, k.1, k.2),
        grub_legacy_reads_it: grub_legacy,
    }
}

/// Features that current mkfs.ext4 / mkfs.xfs enable by default, with the
/// first kernel that mounts them read-write. 64bit is held back to 3.10
/// although 2.6.28 knew it: it only matters above 16 TiB, and resize2fs and
/// GRUB before 2.02 handled it badly.
pub const FEATURE_RULES: &[FeatureRule] = &[
    rule(FsType::Ext4, "extent", (2, 6, 28), false),
    rule(FsType::Ext4, "flex_bg", (2, 6, 28), false),
    rule(FsType::Ext4, "huge_file", (2, 6, 28), false),
    rule(FsType::Ext4, "dir_nlink", (2, 6, 28), false),
    rule(FsType::Ext4, "extra_isize", (2, 6, 28), false),
    rule(FsType::Ext4, "64bit", (3, 10, 0), false),
    rule(FsType::Ext4, "metadata_csum", (3, 6, 0), false),
    rule(FsType::Ext4, "metadata_csum_seed", (4, 4, 0), false),
    rule(FsType::Ext4, "orphan_file", (5, 15, 0), false),
    rule(FsType::Xfs, "m:crc", (3, 15, 0), false),
    rule(FsType::Xfs, "m:finobt", (3, 16, 0), false),
    rule(FsType::Xfs, "i:sparse", (4, 2, 0), false),
    rule(FsType::Xfs, "m:rmapbt", (4, 12, 0), false),
    rule(FsType::Xfs, "m:reflink", (4, 16, 0), false),
    rule(FsType::Xfs, "m:bigtime", (5, 10, 0), false),
    rule(FsType::Xfs, "m:inobtcount", (5, 10, 0), false),
    rule(FsType::Xfs, "i:nrext64", (5, 19, 0), false),
];

/// The first kernel that mounts each filesystem type.
fn min_kernel_for(fs: FsType) -> KernelVersion {
    match fs {
        FsType::Ext4 => KernelVersion(2, 6, 28),
        FsType::Btrfs => KernelVersion(2, 6, 29),
        _ => KernelVersion(2, 4, 0),
    }
}

/// Inode size grub-legacy can read.
pub const GRUB_LEGACY_INODE_SIZE: u32 = 128;

/// What the plan will make of one source filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsChoice {
    pub fs_type: FsType,
    /// Features switched off explicitly (see the module docs).
    pub features_off: Vec<String>,
    pub inode_size: Option<u32>,
    /// Why this choice, for the plan's reader.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsRuleError {
    #[error(
        "{fs} on kernel {kernel}: no filesystem hotclone can create is readable by that kernel"
    )]
    NoReadableFs { fs: String, kernel: KernelVersion },
}

/// Choose the filesystem for a copy of a `source_fs` filesystem that the
/// given kernel mounts and, when it holds /boot, the bootloader reads.
pub fn choose(
    source_fs: &str,
    kernel: KernelVersion,
    bootloader: BootloaderKind,
    holds_boot: bool,
) -> Result<FsChoice, FsRuleError> {
    let grub_legacy_boot = holds_boot && bootloader == BootloaderKind::GrubLegacy;
    let (wanted, why) = match source_fs {
        "ext2" => (FsType::Ext2, "same type as the source".to_string()),
        "ext3" => (FsType::Ext3, "same type as the source".to_string()),
        "ext4" | "ext4dev" => (FsType::Ext4, "same type as the source".to_string()),
        "xfs" => (FsType::Xfs, "same type as the source".to_string()),
        "btrfs" => (FsType::Btrfs, "same type as the source".to_string()),
        "vfat" | "msdos" => (FsType::Vfat, "same type as the source".to_string()),
        other => (
            FsType::Ext4,
            format!("{other} cannot be recreated; its files go onto a journalled ext filesystem"),
        ),
    };
    let mut fs = wanted;
    let mut reason = why;
    if grub_legacy_boot && !matches!(fs, FsType::Ext2 | FsType::Ext3) {
        fs = FsType::Ext3;
        reason = format!("holds /boot and grub-legacy reads only ext2/ext3 (source: {source_fs})");
    }
    if kernel < min_kernel_for(fs) {
        let fallback = if fs == FsType::Btrfs || fs == FsType::Ext4 {
            FsType::Ext3
        } else {
            fs
        };
        if kernel < min_kernel_for(fallback) {
            return Err(FsRuleError::NoReadableFs {
                fs: source_fs.to_string(),
                kernel,
            });
        }
        reason = format!(
            "kernel {kernel} predates {} (needs {}); ext3 instead",
            fs.name(),
            min_kernel_for(fs)
        );
        fs = fallback;
    }
    let features_off: Vec<String> = FEATURE_RULES
        .iter()
        .filter(|r| r.fs == fs)
        .filter(|r| kernel < r.min_kernel || (grub_legacy_boot && !r.grub_legacy_reads_it))
        .map(|r| r.feature.to_string())
        .collect();
    let inode_size = (grub_legacy_boot && fs.is_ext()).then_some(GRUB_LEGACY_INODE_SIZE);
    Ok(FsChoice {
        fs_type: fs,
        features_off,
        inode_size,
        reason,
    })
}

/// mkfs arguments that realise a choice (device and label are added by the
/// caller): `mkfs.ext4 -O ^metadata_csum,^64bit -I 128`,
/// `mkfs.xfs -m crc=0,finobt=0 -i sparse=0`.
pub fn mkfs_args(choice: &FsChoice) -> Vec<String> {
    let mut args = Vec::new();
    if choice.fs_type.is_ext() {
        if !choice.features_off.is_empty() {
            let off: Vec<String> = choice
                .features_off
                .iter()
                .map(|f| format!("^{f}"))
                .collect();
            args.extend(["-O".to_string(), off.join(",")]);
        }
        if let Some(size) = choice.inode_size {
            args.extend(["-I".to_string(), size.to_string()]);
        }
    } else if choice.fs_type == FsType::Xfs {
        for section in ["m", "i"] {
            let off: Vec<String> = choice
                .features_off
                .iter()
                .filter_map(|f| f.split_once(':'))
                .filter(|(s, _)| *s == section)
                .map(|(_, name)| format!("{name}=0"))
                .collect();
            if !off.is_empty() {
                args.extend([format!("-{section}"), off.join(",")]);
            }
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> KernelVersion {
        KernelVersion::parse(s).unwrap()
    }

    #[test]
    fn kernel_versions_parse_distro_releases() {
        assert_eq!(k("2.6.26-2-686"), KernelVersion(2, 6, 26));
        assert_eq!(k("2.6.18-398.el5"), KernelVersion(2, 6, 18));
        assert_eq!(k("6.1.0-28-amd64"), KernelVersion(6, 1, 0));
        assert_eq!(k("3.0"), KernelVersion(3, 0, 0));
        assert!(KernelVersion::parse("unknown").is_none());
    }

    #[test]
    fn debian5_kernel_gets_ext3_even_for_an_ext4_source() {
        let c = choose("ext4", k("2.6.26-2-686"), BootloaderKind::Grub2, false).unwrap();
        assert_eq!(c.fs_type, FsType::Ext3);
        assert!(c.reason.contains("2.6.26"), "{}", c.reason);
    }

    #[test]
    fn grub_legacy_boot_fs_is_ext3_with_128_byte_inodes() {
        let c = choose(
            "ext3",
            k("2.6.32-5-amd64"),
            BootloaderKind::GrubLegacy,
            true,
        )
        .unwrap();
        assert_eq!((c.fs_type, c.inode_size), (FsType::Ext3, Some(128)));
        assert_eq!(mkfs_args(&c), vec!["-I", "128"]);
        // A data filesystem under grub-legacy keeps ext4.
        let data = choose(
            "ext4",
            k("2.6.32-5-amd64"),
            BootloaderKind::GrubLegacy,
            false,
        )
        .unwrap();
        assert_eq!((data.fs_type, data.inode_size), (FsType::Ext4, None));
    }

    #[test]
    fn ext4_on_2_6_32_loses_every_later_feature() {
        let c = choose("ext4", k("2.6.32-5-amd64"), BootloaderKind::Grub2, true).unwrap();
        assert_eq!(
            c.features_off,
            vec![
                "64bit",
                "metadata_csum",
                "metadata_csum_seed",
                "orphan_file"
            ]
        );
        assert_eq!(
            mkfs_args(&c),
            vec![
                "-O",
                "^64bit,^metadata_csum,^metadata_csum_seed,^orphan_file"
            ]
        );
    }

    #[test]
    fn metadata_csum_boundary_is_3_6() {
        let before = choose("ext4", k("3.5.7"), BootloaderKind::Grub2, false).unwrap();
        let after = choose("ext4", k("3.6.0"), BootloaderKind::Grub2, false).unwrap();
        assert!(before.features_off.contains(&"metadata_csum".to_string()));
        assert!(!after.features_off.contains(&"metadata_csum".to_string()));
    }

    #[test]
    fn bookworm_kernel_keeps_all_but_nothing_it_lacks() {
        let c = choose("ext4", k("6.1.0-28-amd64"), BootloaderKind::Grub2, true).unwrap();
        assert!(c.features_off.is_empty(), "{:?}", c.features_off);
        let bullseye = choose("ext4", k("5.10.0-33-amd64"), BootloaderKind::Grub2, true).unwrap();
        assert_eq!(bullseye.features_off, vec!["orphan_file"]);
    }

    #[test]
    fn xfs_v5_needs_3_15_and_maps_to_m_and_i_options() {
        let c = choose(
            "xfs",
            k("3.10.0-1160.el7.x86_64"),
            BootloaderKind::Grub2,
            false,
        )
        .unwrap();
        assert_eq!(c.fs_type, FsType::Xfs);
        assert_eq!(
            mkfs_args(&c),
            vec![
                "-m",
                "crc=0,finobt=0,rmapbt=0,reflink=0,bigtime=0,inobtcount=0",
                "-i",
                "sparse=0,nrext64=0"
            ]
        );
    }

    #[test]
    fn unknown_source_types_become_ext_and_say_why() {
        let c = choose("reiserfs", k("2.6.26"), BootloaderKind::Lilo, false).unwrap();
        assert_eq!(c.fs_type, FsType::Ext3);
        let modern = choose("reiserfs", k("4.19"), BootloaderKind::Grub2, false).unwrap();
        assert_eq!(modern.fs_type, FsType::Ext4);
        assert!(modern.reason.contains("reiserfs"));
    }

    #[test]
    fn btrfs_on_a_kernel_before_it_existed_falls_back_to_ext3() {
        let c = choose("btrfs", k("2.6.18"), BootloaderKind::GrubLegacy, false).unwrap();
        assert_eq!(c.fs_type, FsType::Ext3);
    }
}
