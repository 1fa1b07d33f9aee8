//! Plans for phony sources. Goldens in fixtures/plan/, regenerated with
//! `HOTCLONE_BLESS=1` (review the diff).

use std::path::Path;

use super::*;
use crate::probe::Inventory;

fn debian5() -> Inventory {
    crate::probe::fixture("debian5")
}

/// The Debian 5 inventory turned into a bookworm-era one: grub2, kernel 6.1, ext4 root.
fn modern() -> Inventory {
    let mut inv = debian5();
    inv.kernel.installed = vec!["6.1.0-28-amd64".into()];
    inv.bootloader.kind = BootloaderKind::Grub2;
    for m in inv
        .storage
        .mounts
        .iter_mut()
        .filter(|m| m.fs_type == "ext3")
    {
        m.fs_type = "ext4".into();
    }
    inv
}

fn target(spec: &str) -> PlanOptions {
    PlanOptions::new(spec.parse().unwrap())
}

fn assert_golden(name: &str, actual: &str) {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/plan")).join(name);
    if std::env::var_os("HOTCLONE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (HOTCLONE_BLESS=1 creates it)", path.display()));
    pretty_assertions::assert_eq!(expected, actual);
}

fn fs_part<'a>(plan: &'a Plan, mp: &str) -> &'a Partition {
    plan.disk
        .partitions
        .iter()
        .find(|p| p.mount_point.as_deref() == Some(mp))
        .unwrap_or_else(|| panic!("no partition for {mp}"))
}

#[test]
fn debian5_grub_legacy_gets_mbr_ext3_and_128_byte_inodes() {
    let plan = make(&debian5(), &target("image:/vm/web01.img")).unwrap();
    assert_eq!(plan.disk.partition_table, PartitionTable::Mbr);
    assert_eq!(plan.source.kernel, "2.6.26-2-686");
    let root = fs_part(&plan, "/");
    let fs = root.fs.as_ref().unwrap();
    assert_eq!((fs.fs_type, fs.inode_size), (FsType::Ext3, Some(128)));
    assert_eq!(root.number, 1);
    let var = fs_part(&plan, "/var");
    assert_eq!(var.fs.as_ref().unwrap().fs_type, FsType::Ext3);
    // /srv/my data lives on hdb, another disk: not copied unless asked.
    assert!(plan
        .disk
        .partitions
        .iter()
        .all(|p| p.mount_point.as_deref() != Some("/srv/my data")));
    assert!(plan
        .excludes
        .iter()
        .any(|e| e.path == "/srv/my data" && e.reason.contains("--include-mount '/srv/my data'")));
    assert!(plan
        .excludes
        .iter()
        .any(|e| e.path == "/home" && e.reason.contains("nfs")));
    assert!(plan
        .disk
        .partitions
        .iter()
        .any(|p| p.role == PartitionRole::Swap && p.size_bytes == 1907 * MIB));
    assert_eq!(plan.disk.size_bytes % GIB, 0);
    assert_golden("debian5.plan.toml", &plan.to_toml());
}

#[test]
fn modern_source_gets_gpt_bios_boot_and_full_ext4() {
    let plan = make(&modern(), &target("image:/vm/web01.qcow2,size=40G")).unwrap();
    assert_eq!(plan.disk.partition_table, PartitionTable::Gpt);
    assert_eq!(plan.disk.partitions[0].role, PartitionRole::BiosBoot);
    assert_eq!(plan.disk.size_bytes, 40 * GIB);
    let root = fs_part(&plan, "/");
    let fs = root.fs.as_ref().unwrap();
    assert_eq!(
        (fs.fs_type, fs.inode_size, fs.features_off.len()),
        (FsType::Ext4, None, 0)
    );
    // The spare space went to /: the partitions fill the disk.
    assert_eq!(space_needed(&plan.disk.partitions), 40 * GIB);
    assert!(matches!(
        plan.target,
        TargetSpec::Image {
            format: ImageFormat::Qcow2,
            ..
        }
    ));
}

#[test]
fn disk_too_small_gives_both_numbers() {
    let err = make(&debian5(), &target("image:/vm/web01.img,size=4G")).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, PlanError::DiskTooSmall { available, .. } if available == 4 * GIB),
        "{msg}"
    );
    assert!(
        msg.contains("the disk has 4.0 GiB")
            && msg.contains("needs 16.2 GiB")
            && msg.contains("/var"),
        "{msg}"
    );
}

#[test]
fn six_mbr_partitions_use_an_extended_one_and_boot_comes_first() {
    let mut inv = debian5();
    let mut boot = inv
        .storage
        .mounts
        .iter()
        .find(|m| m.mount_point == "/")
        .unwrap()
        .clone();
    boot.mount_point = "/boot".into();
    boot.device = "/dev/hda4".into();
    boot.bytes_used = Some(40 * MIB);
    inv.storage.mounts.push(boot);
    let mut opts = target("image:/vm/web01.img");
    opts.include_mounts = vec!["/srv/my data".into()];
    let plan = make(&inv, &opts).unwrap();
    let mps: Vec<Option<&str>> = plan
        .disk
        .partitions
        .iter()
        .map(|p| p.mount_point.as_deref())
        .collect();
    assert_eq!(
        mps,
        vec![
            Some("/boot"),
            Some("/"),
            Some("/srv/my data"),
            None,
            Some("/var"),
            None
        ]
    );
    assert_eq!(plan.disk.partitions[3].role, PartitionRole::Extended);
    assert_eq!(plan.disk.partitions[5].role, PartitionRole::Swap);
    // With /boot on its own filesystem, only /boot must suit grub-legacy.
    assert_eq!(
        fs_part(&plan, "/boot").fs.as_ref().unwrap().inode_size,
        Some(128)
    );
    assert_eq!(fs_part(&plan, "/").fs.as_ref().unwrap().inode_size, None);
    assert_eq!(
        fs_part(&plan, "/srv/my data").label.as_deref(),
        Some("data")
    );
    plan.validate().unwrap();
}

#[test]
fn plan_round_trips_through_toml() {
    let plan = make(&debian5(), &target("image:/vm/web01.img,format=qcow2")).unwrap();
    assert_eq!(Plan::from_toml(&plan.to_toml()).unwrap(), plan);
}

#[test]
fn edited_plans_with_mistakes_are_refused_with_the_reason() {
    let plan = make(&modern(), &target("image:/vm/a.img")).unwrap();
    let mut two_roots = plan.clone();
    two_roots.disk.partitions[2].mount_point = Some("/".into());
    assert!(two_roots
        .validate()
        .unwrap_err()
        .to_string()
        .contains("2 partitions are mounted at /"));
    let mut tiny = plan.clone();
    let root = tiny
        .disk
        .partitions
        .iter_mut()
        .find(|p| p.mount_point.as_deref() == Some("/"))
        .unwrap();
    root.size_bytes = 100 * MIB;
    assert!(tiny
        .validate()
        .unwrap_err()
        .to_string()
        .contains("smaller than the 2.9 GiB of data"));
    let mut overfull = plan.clone();
    overfull.disk.size_bytes = GIB;
    assert!(matches!(
        overfull.validate(),
        Err(PlanError::DiskTooSmall { .. })
    ));
    let bad = plan.to_toml().replace("version = 1", "version = 7");
    assert!(Plan::from_toml(&bad)
        .unwrap_err()
        .to_string()
        .contains("version 7"));
    assert!(matches!(
        Plan::from_toml("not = [toml"),
        Err(PlanError::Parse(_))
    ));
}

#[test]
fn network_mapping_keeps_addresses_and_drops_link_local() {
    let plan = make(&debian5(), &target("image:/vm/a.img")).unwrap();
    assert_eq!(plan.network.len(), 1);
    let nic = &plan.network[0];
    assert_eq!((nic.source_interface.as_str(), nic.target_nic), ("eth0", 0));
    assert_eq!(nic.addresses, vec!["198.51.100.10/24", "198.51.100.20/25"]);
}

#[test]
fn unknown_kernel_version_asks_for_kernel_flag() {
    let mut inv = debian5();
    inv.kernel.installed.clear();
    inv.kernel.running = "custom".into();
    let err = make(&inv, &target("image:/vm/a.img")).unwrap_err();
    assert!(err.to_string().contains("--kernel"), "{err}");
}

#[test]
fn selinux_without_tar_support_plans_an_autorelabel() {
    let mut inv = debian5();
    let plan = make(&inv, &target("image:/vm/a.img")).unwrap();
    assert!(!plan.autorelabel, "no SELinux on the source");
    inv.selinux = Some("enforcing".into());
    let plan = make(&inv, &target("image:/vm/a.img")).unwrap();
    assert!(plan.autorelabel);
    assert!(
        plan.notes.iter().any(|n| n.contains("/.autorelabel")),
        "{:?}",
        plan.notes
    );
    inv.capabilities.tar.selinux = true;
    assert!(
        !make(&inv, &target("image:/vm/a.img")).unwrap().autorelabel,
        "labels travel with tar --selinux"
    );
}

#[test]
fn consolidate_puts_every_copied_filesystem_into_root() {
    let mut opts = target("image:/vm/a.img");
    opts.consolidate = true;
    let plan = make(&debian5(), &opts).unwrap();
    let mps: Vec<Option<&str>> = plan
        .disk
        .partitions
        .iter()
        .map(|p| p.mount_point.as_deref())
        .collect();
    assert_eq!(mps, vec![Some("/"), None], "one filesystem and swap");
    assert_eq!(plan.merged_into_root, vec!["/var"]);
    let root = fs_part(&plan, "/");
    assert_eq!(
        root.source_used_bytes,
        Some((3014476 + 8120408) * 1024),
        "/ holds the data of / and /var"
    );
    assert!(plan.notes.iter().any(|n| n.contains("--consolidate")));
    assert_eq!(Plan::from_toml(&plan.to_toml()).unwrap(), plan);
    let mut bad = plan.clone();
    bad.merged_into_root.push("/".into());
    assert!(bad.validate().is_err());
}
