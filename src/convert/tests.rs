//! Golden tests over `fixtures/convert/<case>/`: each case has a
//! `context.toml` (a [`ConvertContext`]) and phony-guest files, each with a
//! `<file>.expected` (see [`FileAction::render`]); or an `error.expected`
//! holding the error [`family::select`] must give.
//! `HOTCLONE_BLESS=1 cargo test convert::` rewrites the expected files:
//! review the diff before committing.

use std::path::{Path, PathBuf};

use super::bootloader::Bootloader;
use super::chroot::{CommandOutput, RecordingChroot};
use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/convert")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("fixture dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        // A symlink in a phony guest (an enabled unit) is only there to
        // exist: conversion never rewrites one, and its target is absolute.
        if p.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            continue;
        }
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn load_ctx(case: &Path) -> ConvertContext {
    let text = std::fs::read_to_string(case.join("context.toml"))
        .unwrap_or_else(|e| panic!("{}/context.toml: {e}", case.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}/context.toml: {e}", case.display()))
}

fn rewriters(m: &family::Modules) -> Vec<&dyn FileRewriter> {
    let mut v: Vec<&dyn FileRewriter> = vec![
        &fstab::Fstab,
        m.bootloader.as_rewriter(),
        m.initramfs.as_rewriter(),
    ];
    v.extend(m.network.iter().map(|n| n.as_rewriter()));
    v.extend(m.sysconfig.iter().map(|n| n.as_ref()));
    v.extend(m.console.iter().map(|n| n.as_ref()));
    v
}

#[test]
fn golden_fixtures() {
    let bless = std::env::var("HOTCLONE_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures/convert")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    cases.sort();
    for case in cases.iter().filter(|c| c.is_dir()) {
        let ctx = load_ctx(case);
        let mut results: Vec<(PathBuf, String)> = Vec::new();
        let error_file = case.join("error.expected");
        match family::select(&ctx.guest) {
            Err(e) => results.push((error_file, format!("{e}\n"))),
            Ok(modules) => {
                let mut files = Vec::new();
                walk(case, &mut files);
                // Files the modules create where the phony guest has none.
                let exists = |p: &str| std::fs::symlink_metadata(case.join(p)).is_ok();
                for module in rewriters(&modules) {
                    for rel in module.creates(&exists) {
                        let action = module.rewrite(&rel, "", &ctx);
                        results.push((case.join(format!("{rel}.expected")), action.render("")));
                    }
                }
                for f in files {
                    let rel = f
                        .strip_prefix(case)
                        .expect("under case")
                        .to_string_lossy()
                        .into_owned();
                    if rel == "context.toml" || rel.ends_with(".expected") {
                        continue;
                    }
                    let text = std::fs::read_to_string(&f).expect("fixture readable");
                    let all = rewriters(&modules);
                    let Some(module) = all.iter().find(|m| m.handles(&rel)) else {
                        failures.push(format!(
                            "{}: no module of {modules:?} handles {rel}",
                            case.display()
                        ));
                        continue;
                    };
                    let action = module.rewrite(&rel, &text, &ctx);
                    // A second run changes nothing.
                    let again = match &action {
                        FileAction::Write(t) => Some((rel.clone(), t.clone())),
                        FileAction::Rename { name, content } => Some((
                            format!("{}/{name}", rel.rsplit_once('/').map_or("", |x| x.0)),
                            content.clone(),
                        )),
                        _ => None,
                    };
                    if let Some((p, t)) = again {
                        // What convert() does on a rerun: renames are not applied twice.
                        let second = module.rewrite(&p, &t, &ctx.without_renames());
                        if second != FileAction::Keep {
                            failures.push(format!(
                                "{}/{rel}: not idempotent, a second run gives\n{}",
                                case.display(),
                                second.render(&t)
                            ));
                        }
                    }
                    results.push((
                        PathBuf::from(format!("{}.expected", f.display())),
                        action.render(&text),
                    ));
                }
            }
        }
        for (expected_path, got) in results {
            checked += 1;
            if bless {
                std::fs::write(&expected_path, &got).expect("write expected");
                continue;
            }
            let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
            if want != got {
                failures.push(format!(
                    "{} differs (HOTCLONE_BLESS=1 to accept):\n{}",
                    expected_path.display(),
                    pretty_assertions::StrComparison::new(&want, &got)
                ));
            }
        }
    }
    assert!(checked > 10, "only {checked} golden files found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn guest(family: DistroFamily, bootloader: BootloaderKind) -> Guest {
    Guest {
        family,
        id: String::new(),
        version: Some("12".into()),
        bootloader,
        kernel: "6.1.0-18-amd64".into(),
        network_styles: vec![],
    }
}

#[test]
fn unsupported_combinations_name_themselves() {
    let e = family::select(&guest(DistroFamily::Suse, BootloaderKind::Lilo))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("Suse family with lilo is not supported"),
        "{e}"
    );
    let e = family::select(&guest(DistroFamily::Debian, BootloaderKind::None))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("Debian family with no bootloader is not supported"),
        "{e}"
    );
    let e = family::select(&Guest {
        version: Some("5.11".into()),
        kernel: "2.6.18-398.el5xen".into(),
        ..guest(DistroFamily::RedHat, BootloaderKind::GrubLegacy)
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("the Xen paravirtual kernel 2.6.18-398.el5xen")
            && e.contains("yum install kernel"),
        "{e}"
    );
    let e = family::select(&Guest {
        version: Some("5.2".into()),
        kernel: "2.6.18-92.el5".into(),
        ..guest(DistroFamily::RedHat, BootloaderKind::GrubLegacy)
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("without virtio drivers") && e.contains("5.3 or later"),
        "{e}"
    );
    // A backport the rules do not know: the kernel's own modules decide.
    let old_suse = Guest {
        version: Some("10.4".into()),
        kernel: "2.6.16.60-0.85.1-smp".into(),
        ..guest(DistroFamily::Suse, BootloaderKind::GrubLegacy)
    };
    assert!(family::select(&old_suse).is_err());
    assert!(family::select_with(&old_suse, Some(true), None).is_ok());
    assert!(family::select_with(&old_suse, Some(false), None).is_err());
}

#[test]
fn families_pick_their_modules() {
    let m = family::select(&guest(DistroFamily::Debian, BootloaderKind::Grub2)).unwrap();
    assert_eq!(
        (m.bootloader.name(), m.initramfs.name()),
        ("grub2", "initramfs-tools")
    );
    let m = family::select(&Guest {
        version: Some("5.11".into()),
        ..guest(DistroFamily::RedHat, BootloaderKind::GrubLegacy)
    })
    .unwrap();
    assert_eq!(
        (m.bootloader.name(), m.initramfs.name()),
        ("grub-legacy", "mkinitrd")
    );
    let m = family::select(&Guest {
        version: Some("9.3".into()),
        ..guest(DistroFamily::RedHat, BootloaderKind::Grub2)
    })
    .unwrap();
    assert_eq!(m.initramfs.name(), "dracut");
    // NetworkManager keyfiles and networkd files are converted for every
    // family (they were "left as they are").
    for family in [
        DistroFamily::RedHat,
        DistroFamily::Debian,
        DistroFamily::Suse,
    ] {
        let m = family::select(&guest(family, BootloaderKind::Grub2)).unwrap();
        let names: Vec<&str> = m.network.iter().map(|n| n.name()).collect();
        assert!(
            names.contains(&"NetworkManager keyfile") && names.contains(&"systemd-networkd"),
            "{names:?}"
        );
        assert!(
            !m.notes.iter().any(|n| n.contains("left as they are")),
            "{:?}",
            m.notes
        );
    }
}

/// The initramfs tool by distribution and version (issue 14, item 3).
#[test]
fn regression_the_initramfs_tool_follows_distribution_and_version() {
    let pick = |family, id: &str, version: &str| {
        family::select(&Guest {
            id: id.into(),
            version: Some(version.into()),
            kernel: "3.0.101-63-default".into(),
            ..guest(family, BootloaderKind::GrubLegacy)
        })
        .unwrap()
        .initramfs
        .name()
    };
    use DistroFamily::{RedHat, Suse};
    assert_eq!(pick(RedHat, "fedora", "10"), "mkinitrd");
    assert_eq!(pick(RedHat, "fedora", "11"), "mkinitrd");
    assert_eq!(pick(RedHat, "fedora", "12"), "dracut");
    assert_eq!(pick(RedHat, "rhel", "8.9"), "dracut");
    assert_eq!(pick(RedHat, "centos", "5.11"), "mkinitrd");
    assert_eq!(pick(Suse, "sles", "10.4"), "SUSE mkinitrd");
    assert_eq!(pick(Suse, "sles", "11.4"), "SUSE mkinitrd");
    assert_eq!(pick(Suse, "sles", "12.5"), "dracut");
    assert_eq!(pick(Suse, "opensuse", "11.4"), "SUSE mkinitrd");
    assert_eq!(pick(Suse, "opensuse", "12.3"), "SUSE mkinitrd");
    assert_eq!(pick(Suse, "opensuse", "13.1"), "SUSE mkinitrd");
    assert_eq!(pick(Suse, "opensuse", "13.2"), "dracut");
    assert_eq!(pick(Suse, "opensuse", "42.3"), "dracut");
    assert_eq!(pick(Suse, "opensuse-leap", "15.5"), "dracut");
    // No ID recorded (an older journal): SUSE 13.1 is openSUSE, 12 SLES.
    assert_eq!(pick(Suse, "", "13.1"), "SUSE mkinitrd");
    assert_eq!(pick(Suse, "", "12"), "dracut");
}

#[test]
fn fstab_reports_what_it_comments_out_once() {
    let case = fixtures().join("broken-unknown-device");
    let ctx = load_ctx(&case);
    let text = std::fs::read_to_string(case.join("etc/fstab")).unwrap();
    let lines = fstab::not_copied(&text, &ctx);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("/dev/sdb1")),
        "{lines:?}"
    );
    assert_eq!(
        fstab::not_copied(&fstab::rewrite(&text, &ctx), &ctx),
        Vec::<String>::new()
    );
}

#[test]
fn specs_have_one_spelling() {
    assert_eq!(
        normalize_spec("/dev/mapper/VolGroup00-LogVol00"),
        "/dev/VolGroup00/LogVol00"
    );
    assert_eq!(
        normalize_spec("/dev/mapper/my--vg-root--lv"),
        "/dev/my-vg/root-lv"
    );
    assert_eq!(
        normalize_spec("/dev/disk/by-uuid/ABCD-1234"),
        "UUID=abcd-1234"
    );
    assert_eq!(normalize_spec("UUID=abcd-1234"), "UUID=abcd-1234");
    assert_eq!(normalize_spec("/dev/disk/by-label/root"), "LABEL=root");
}

#[test]
fn columns_stay_aligned_when_a_spec_grows() {
    let ctx = ConvertContext::new(
        guest(DistroFamily::Debian, BootloaderKind::Grub2),
        vec![FsMapping {
            mount_point: "/".into(),
            old_specs: vec!["/dev/sda1".into()],
            uuid: "u".repeat(8),
            fs_type: "ext4".into(),
            device: None,
            partition: None,
        }],
    );
    let got = fstab::rewrite(
        "/dev/sda1       /       ext4    defaults        0 1\n",
        &ctx,
    );
    assert_eq!(got, "UUID=uuuuuuuu   /       ext4    defaults        0 1\n");
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hotclone-convert-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    let mut files = Vec::new();
    walk(from, &mut files);
    for f in files {
        let rel = f.strip_prefix(from).unwrap();
        if rel.to_string_lossy().ends_with(".expected") || rel == Path::new("context.toml") {
            continue;
        }
        std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&f, to.join(rel)).unwrap();
    }
    install_own_grub(to);
}

/// The guest's own GRUB tools, which every fixture's guest has: what the
/// copy holds picks the bootloader module ([`family::CopyBoot`]).
fn install_own_grub(root: &Path) {
    for tool in [
        "usr/sbin/grub-install",
        "usr/lib/grub/i386-pc/normal.mod",
        "sbin/grub",
    ] {
        std::fs::create_dir_all(root.join(tool).parent().unwrap()).unwrap();
        std::fs::write(root.join(tool), b"").unwrap();
    }
}

/// The guest's GRUB tools taken away again.
fn remove_own_grub(root: &Path) {
    for dir in ["usr/sbin", "usr/lib/grub", "sbin"] {
        let _ = std::fs::remove_dir_all(root.join(dir));
    }
}

#[test]
fn convert_runs_the_debian_steps_in_order() {
    let (root, ctx) = debian_guest("debian12-grub2", "debian12");
    let uuid = ctx.root().unwrap().uuid.clone();
    std::fs::create_dir_all(root.join("etc/udev/rules.d")).unwrap();
    std::fs::write(
        root.join("etc/udev/rules.d/70-persistent-net.rules"),
        "# old\n",
    )
    .unwrap();
    let mut exec = RecordingChroot::new(&root).answer(
        "grub-install",
        CommandOutput {
            status: 0,
            stdout: String::new(),
            stderr: "Installation finished. No error reported.\n".into(),
        },
    );
    struct Notes(Vec<String>);
    impl Progress for Notes {
        fn note(&mut self, m: &str) {
            self.0.push(m.to_string());
        }
    }
    let mut notes = Notes(vec![]);
    let report = convert(&root, &ctx, &mut exec, &mut notes).unwrap();
    assert_eq!(
        exec.commands(),
        vec![
            format!("update-initramfs -u -k {}", ctx.guest.kernel),
            "grub-install --target=i386-pc --recheck /dev/loop7".to_string(),
            "grub-mkconfig -o /boot/grub/grub.cfg".to_string(),
        ]
    );
    assert!(
        notes
            .0
            .contains(&"grub-install: Installation finished. No error reported.".to_string()),
        "{:?}",
        notes.0
    );
    let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
    assert!(fstab.contains(&format!("UUID={uuid} /")), "{fstab}");
    assert!(!root
        .join("etc/udev/rules.d/70-persistent-net.rules")
        .exists());
    assert!(
        report
            .changed
            .iter()
            .any(|c| c.starts_with("etc/default/grub")),
        "{:?}",
        report.changed
    );
    // The boot check read the initrd: nothing left unchecked.
    assert!(
        !report.notes.iter().any(|n| n.contains("not checked")),
        "{:?}",
        report.notes
    );
    // Idempotent: a second run rewrites nothing.
    let again = convert(&root, &ctx, &mut RecordingChroot::new(&root), &mut Silent).unwrap();
    assert_eq!(again.changed, Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&root);
}

/// A phony Debian guest from fixture `case` in a scratch root, with what
/// `convert` needs to pass its boot check (kernel, initrd with virtio,
/// grub.cfg as grub-mkconfig writes it from the rewritten defaults).
fn debian_guest(case: &str, name: &str) -> (PathBuf, ConvertContext) {
    let case = fixtures().join(case);
    let root = scratch(name);
    copy_tree(&case, &root);
    let mut ctx = load_ctx(&case);
    ctx.disk_device = Some("/dev/loop7".into());
    let uuid = ctx.root().unwrap().uuid.clone();
    let k = ctx.guest.kernel.clone();
    install_kernel(
        &root,
        &k,
        &debian_initrd(&k, &["virtio_blk", "virtio_pci", "ext4"]),
    );
    std::fs::write(
        root.join("boot/grub/grub.cfg"),
        format!(
            "set default=\"0\"\nmenuentry 'Debian GNU/Linux' {{\n\tlinux\t/boot/vmlinuz-{k} root=UUID={uuid} ro net.ifnames=0 console=tty0 console=ttyS0,115200\n\tinitrd\t/boot/initrd.img-{k}\n}}\n"
        ),
    )
    .unwrap();
    (root, ctx)
}

/// Every file under `dir` of `root`, by path relative to `root`.
fn files_under(root: &Path, dir: &str) -> std::collections::BTreeMap<String, String> {
    let mut files = Vec::new();
    if root.join(dir).exists() {
        walk(&root.join(dir), &mut files);
    }
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read_to_string(&f).unwrap())
        })
        .collect()
}

/// Regression (issue 14, item 6): the interface-rename marker was deleted
/// right after conversion (it lived in the clone's /var/lib/hotclone), so
/// the re-conversion a sync triggers applied the eth0 <-> eth1 swap again
/// and the names flipped back.
#[test]
fn regression_a_second_conversion_does_not_swap_interface_names_back() {
    let case = fixtures().join("debian11-rename");
    let (root, ctx) = debian_guest("debian11-rename", "reconvert");
    // The plan swaps the source's two NICs.
    assert_eq!(ctx.nic_target("eth0"), Some("eth1"));
    assert_eq!(ctx.nic_target("eth1"), Some("eth0"));
    let expected =
        |rel: &str| std::fs::read_to_string(case.join(format!("{rel}.expected"))).unwrap();
    let reconvert = |root: &Path| {
        // What the clone's convert phase removed after conversion before
        // the fix: nothing of the record may be there.
        let _ = std::fs::remove_dir_all(root.join("var/lib/hotclone"));
        convert(root, &ctx, &mut RecordingChroot::new(root), &mut Silent).unwrap()
    };

    convert(&root, &ctx, &mut RecordingChroot::new(&root), &mut Silent).unwrap();
    let first = files_under(&root, "etc/network");
    assert_eq!(
        first["etc/network/interfaces"],
        expected("etc/network/interfaces")
    );
    assert_eq!(
        first["etc/network/interfaces.d/vlan"],
        expected("etc/network/interfaces.d/vlan")
    );
    // The record is in the target's state directory (cutover removes it),
    // nothing of ours is in the clone's own tree.
    assert!(renamed_record(&root).starts_with(crate::migration::target_state(&root)));
    assert!(renamed_record(&root).exists());
    assert!(!root.join("var/lib/hotclone").exists());

    let again = reconvert(&root);
    assert_eq!(files_under(&root, "etc/network"), first);
    assert_eq!(again.changed, Vec::<String>::new());

    // A sync brought the source's interfaces file again (it changed on the
    // source): it is converted from the source's names, like a first
    // conversion of it; the file the sync left alone stays as it was.
    let source = std::fs::read_to_string(case.join("etc/network/interfaces")).unwrap()
        + "# changed on the source\n";
    std::fs::write(root.join("etc/network/interfaces"), &source).unwrap();
    let synced = reconvert(&root);
    let after = files_under(&root, "etc/network");
    assert_eq!(
        after["etc/network/interfaces"],
        network::ifupdown::rewrite(&source, &ctx)
    );
    assert_eq!(
        after["etc/network/interfaces"],
        expected("etc/network/interfaces") + "# changed on the source\n"
    );
    assert_eq!(
        after["etc/network/interfaces.d/vlan"],
        first["etc/network/interfaces.d/vlan"]
    );
    assert_eq!(
        synced.changed,
        vec!["etc/network/interfaces (ifupdown)".to_string()]
    );
    // And converting again once more changes nothing.
    assert_eq!(reconvert(&root).changed, Vec::<String>::new());
    assert_eq!(files_under(&root, "etc/network"), after);
    let _ = std::fs::remove_dir_all(&root);
}

/// A target an older hotclone converted (and whose marker survived) keeps
/// its names, and the old marker leaves the clone's tree.
#[test]
fn a_legacy_rename_marker_is_honoured_once_and_removed() {
    let (root, ctx) = debian_guest("debian11-rename", "legacy-marker");
    convert(&root, &ctx, &mut RecordingChroot::new(&root), &mut Silent).unwrap();
    let first = files_under(&root, "etc/network");
    std::fs::remove_file(renamed_record(&root)).unwrap();
    std::fs::create_dir_all(root.join("var/lib/hotclone")).unwrap();
    std::fs::write(
        root.join(LEGACY_RENAMED_MARKER),
        "eth1 -> eth0\neth0 -> eth1\n",
    )
    .unwrap();
    convert(&root, &ctx, &mut RecordingChroot::new(&root), &mut Silent).unwrap();
    assert_eq!(files_under(&root, "etc/network"), first);
    assert!(!root.join("var/lib/hotclone").exists());
    assert!(renamed_record(&root).exists());
    let _ = std::fs::remove_dir_all(&root);
}

/// ifcfg files are renamed with their interface: a swap writes each file
/// under the other's name, and neither is lost, on a first conversion, a
/// second one, and one after a sync brought both source files again.
#[test]
fn an_ifcfg_swap_keeps_both_files_and_is_not_applied_twice() {
    let root = scratch("ifcfg-swap");
    let dir = root.join("etc/sysconfig/network-scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let source = |dev: &str, ip: &str, mac: &str| {
        format!("DEVICE={dev}\nHWADDR={mac}\nONBOOT=yes\nBOOTPROTO=none\nIPADDR={ip}\nPREFIX=24\n")
    };
    let eth0 = source("eth0", "10.0.0.5", "00:1A:4B:00:00:01");
    let eth1 = source("eth1", "198.51.100.17", "00:1A:4B:00:00:02");
    let write_source = || {
        std::fs::write(dir.join("ifcfg-eth0"), &eth0).unwrap();
        std::fs::write(dir.join("ifcfg-eth1"), &eth1).unwrap();
    };
    let mut ctx = ConvertContext::new(
        Guest {
            version: Some("6.10".into()),
            ..guest(DistroFamily::RedHat, BootloaderKind::GrubLegacy)
        },
        vec![],
    );
    ctx.nics = vec![
        NicRename {
            source: "eth0".into(),
            mac: Some("00:1a:4b:00:00:01".into()),
            target: "eth1".into(),
        },
        NicRename {
            source: "eth1".into(),
            mac: Some("00:1a:4b:00:00:02".into()),
            target: "eth0".into(),
        },
    ];
    let modules = family::select(&ctx.guest).unwrap();
    let run = || {
        let mut report = ConvertReport::default();
        unconfigure_network(&root, &modules, &ctx, &mut report, &mut Silent).unwrap();
        report.changed
    };
    let want = std::collections::BTreeMap::from([
        (
            "etc/sysconfig/network-scripts/ifcfg-eth0".to_string(),
            "DEVICE=eth0\nONBOOT=yes\nBOOTPROTO=none\nIPADDR=198.51.100.17\nPREFIX=24\n"
                .to_string(),
        ),
        (
            "etc/sysconfig/network-scripts/ifcfg-eth1".to_string(),
            "DEVICE=eth1\nONBOOT=yes\nBOOTPROTO=none\nIPADDR=10.0.0.5\nPREFIX=24\n".to_string(),
        ),
    ]);
    write_source();
    assert_eq!(run().len(), 2);
    assert_eq!(files_under(&root, "etc/sysconfig"), want);
    assert_eq!(run(), Vec::<String>::new());
    assert_eq!(files_under(&root, "etc/sysconfig"), want);
    write_source();
    run();
    assert_eq!(files_under(&root, "etc/sysconfig"), want);
    let _ = std::fs::remove_dir_all(&root);
}

/// `boot/vmlinuz-K` and `boot/initrd.img-K` (`initrd`) in a fake root.
fn install_kernel(root: &Path, k: &str, initrd: &[u8]) {
    std::fs::create_dir_all(root.join("boot/grub")).unwrap();
    std::fs::write(root.join(format!("boot/vmlinuz-{k}")), b"kernel").unwrap();
    std::fs::write(root.join(format!("boot/initrd.img-{k}")), initrd).unwrap();
}

/// A Debian initrd (early microcode archive, zstd main archive) holding
/// these drivers as modules of kernel `k`.
fn debian_initrd(k: &str, drivers: &[&str]) -> Vec<u8> {
    let paths: Vec<String> = drivers
        .iter()
        .map(|d| format!("usr/lib/modules/{k}/kernel/drivers/{d}.ko"))
        .chain(["init".to_string(), "scripts/local".to_string()])
        .collect();
    let main: Vec<&str> = paths.iter().map(String::as_str).collect();
    initrd::fake_initrd(&["kernel/x86/microcode/GenuineIntel.bin"], &main, true)
}

#[test]
fn convert_runs_the_rhel5_steps() {
    let case = fixtures().join("rhel5-grub-legacy");
    let root = scratch("rhel5");
    copy_tree(&case, &root);
    let mut ctx = load_ctx(&case);
    ctx.disk_device = Some("/dev/loop7".into());
    // /boot's files, and mkinitrd's image: one gzip archive with the
    // modules flat in /lib.
    let k = ctx.guest.kernel.clone();
    std::fs::write(root.join(format!("boot/vmlinuz-{k}")), b"kernel").unwrap();
    std::fs::write(
        root.join(format!("boot/initrd-{k}.img")),
        initrd::fake_initrd(
            &[],
            &[
                "init",
                "lib/virtio_pci.ko",
                "lib/virtio_blk.ko",
                "lib/jbd.ko",
                "lib/ext3.ko",
            ],
            false,
        ),
    )
    .unwrap();
    let mut exec = RecordingChroot::new(&root).answer(
        "sh -c",
        CommandOutput {
            status: 0,
            stdout: " Running \"embed /grub/e2fs_stage1_5 (hd0)\"...  17 sectors are embedded.\nsucceeded\n Running \"install /grub/stage1 (hd0) (hd0)1+17 p (hd0,0)/grub/stage2 /grub/grub.conf\"... succeeded\nDone.\n".into(),
            stderr: String::new(),
        },
    );
    let report = convert(&root, &ctx, &mut exec, &mut Silent).unwrap();
    let cmds = exec.commands();
    assert_eq!(cmds[0], "mkinitrd -f --with=virtio_pci --with=virtio_blk --with=virtio_net --with=virtio_scsi --with=ata_piix --with=ahci /boot/initrd-2.6.18-398.el5.img 2.6.18-398.el5");
    assert!(
        cmds[1].contains("root (hd0,0)") && cmds[1].contains("setup (hd0)"),
        "{cmds:?}"
    );
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert!(
        !report.notes.iter().any(|n| n.contains("not checked")),
        "{:?}",
        report.notes
    );
    // The grub shell gets links it can name partitions by, in a map of
    // their own: the clone's device.map is not the run's.
    assert!(
        cmds[1].contains("ln -s '/dev/loop7' /run/hotclone-grub/disk &&")
            && cmds[1].contains("--device-map=/run/hotclone-grub/device.map")
            && cmds[1].ends_with("rm -rf /run/hotclone-grub; exit $rc"),
        "{cmds:?}"
    );
    assert!(!root.join("boot/grub/device.map").exists());
    // One the source had names the VM's disk afterwards.
    std::fs::write(root.join("boot/grub/device.map"), "(hd0)\t/dev/sda\n").unwrap();
    let mut exec = RecordingChroot::new(&root).answer(
        "sh -c",
        CommandOutput {
            status: 0,
            stdout: " Running \"install /grub/stage1 (hd0)\"... succeeded\nDone.\n".into(),
            stderr: String::new(),
        },
    );
    convert(&root, &ctx, &mut exec, &mut Silent).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("boot/grub/device.map")).unwrap(),
        "(hd0)\t/dev/vda\n"
    );
    assert!(
        report
            .changed
            .iter()
            .any(|c| c.starts_with("etc/modprobe.conf")),
        "{:?}",
        report.changed
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_grub_cfg_without_the_new_uuid_fails_with_the_reason() {
    let case = fixtures().join("debian12-grub2");
    let root = scratch("verify");
    copy_tree(&case, &root);
    let mut ctx = load_ctx(&case);
    ctx.disk_device = Some("/dev/loop7".into());
    std::fs::create_dir_all(root.join("boot/grub")).unwrap();
    std::fs::write(
        root.join("boot/grub/grub.cfg"),
        "linux /vmlinuz root=/dev/loop0p2 ro\n",
    )
    .unwrap();
    let err = convert(&root, &ctx, &mut RecordingChroot::new(&root), &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("root=/dev/loop0p2") && err.contains("/dev/disk/by-uuid/"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// A converted Debian tree with GRUB 2 and kernel `k`: grub.cfg as
/// grub-mkconfig writes it (default entry 0), the kernel, the initrd, and
/// the kernel's module lists (`dep`: module paths, `builtin`: built in).
fn boot_tree(
    name: &str,
    initrd: &[u8],
    dep: &[&str],
    builtin: &[&str],
) -> (PathBuf, ConvertContext) {
    let ctx = load_ctx(&fixtures().join("debian12-grub2"));
    let k = ctx.guest.kernel.clone();
    let uuid = ctx.root().unwrap().uuid.clone();
    let root = scratch(name);
    install_kernel(&root, &k, initrd);
    std::fs::write(
        root.join("boot/grub/grub.cfg"),
        format!(
            "set default=\"0\"\nfunction load_video {{\n  insmod all_video\n}}\nmenuentry 'Debian GNU/Linux' --class debian {{\n\tload_video\n\tlinux\t/boot/vmlinuz-{k} root=UUID={uuid} ro net.ifnames=0 quiet\n\tinitrd\t/boot/initrd.img-{k}\n}}\n"
        ),
    )
    .unwrap();
    let modules = root.join("lib/modules").join(&k);
    std::fs::create_dir_all(&modules).unwrap();
    let dep: String = dep.iter().map(|p| format!("{p}:\n")).collect();
    std::fs::write(modules.join("modules.dep"), dep).unwrap();
    let builtin: String = builtin.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(modules.join("modules.builtin"), builtin).unwrap();
    (root, ctx)
}

const VIRTIO_MODULES: &[&str] = &[
    "kernel/drivers/block/virtio_blk.ko.xz",
    "kernel/drivers/virtio/virtio_pci.ko.xz",
];

/// Regression (issue 13): the initrd was rebuilt without virtio (an
/// initramfs-tools MODULES=dep image made on the source's hardware), the
/// VM stopped at "Gave up waiting for root file system device", and
/// convert said the clone was bootable.
#[test]
fn regression_an_initrd_without_virtio_is_flagged_with_the_reason() {
    let k = "6.1.0-25-amd64";
    let initrd = debian_initrd(k, &["ext4", "ahci", "megaraid_sas"]);
    let mut dep = VIRTIO_MODULES.to_vec();
    dep.push("kernel/fs/ext4/ext4.ko.xz");
    let (root, ctx) = boot_tree("initrd-no-virtio", &initrd, &dep, &[]);
    let err = bootloader::grub2::Grub2
        .verify(&root, &ctx)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "the converted guest would not boot: /boot/initrd.img-{k} (the initrd of /boot/grub/grub.cfg line 8) lacks virtio_blk, virtio_pci, and the kernel {k} has none of them built in: the VM could not find its disk. Add virtio_blk, virtio_pci to /etc/initramfs-tools/modules (or MODULES=most in /etc/initramfs-tools/initramfs.conf) and run update-initramfs -u -k {k} in the clone"
        )
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn an_initrd_without_virtio_passes_when_the_kernel_has_it_built_in() {
    let k = "6.1.0-25-amd64";
    let initrd = debian_initrd(k, &["ext4"]);
    let builtin = [
        "kernel/drivers/block/virtio_blk.ko",
        "kernel/drivers/virtio/virtio_pci.ko",
    ];
    let (root, ctx) = boot_tree(
        "initrd-builtin-virtio",
        &initrd,
        &["kernel/fs/ext4/ext4.ko.xz"],
        &builtin,
    );
    assert_eq!(
        bootloader::grub2::Grub2.verify(&root, &ctx).unwrap(),
        Vec::<String>::new()
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_root_filesystems_driver_is_needed_and_a_missing_one_is_named() {
    let k = "6.1.0-25-amd64";
    let mut dep = VIRTIO_MODULES.to_vec();
    dep.push("kernel/fs/ext4/ext4.ko.xz");
    let initrd = debian_initrd(k, &["virtio_blk", "virtio-pci"]);
    let (root, mut ctx) = boot_tree("initrd-no-ext4", &initrd, &dep, &[]);
    let err = bootloader::grub2::Grub2
        .verify(&root, &ctx)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lacks ext4, and") && err.contains("could not mount its root filesystem"),
        "{err}"
    );
    // ext3 on this kernel: its ext4 driver serves, and is what is missing.
    ctx.filesystems[0].fs_type = "ext3".into();
    let err = bootloader::grub2::Grub2
        .verify(&root, &ctx)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lacks ext4, and"), "{err}");
    // A kernel with no ext4 at all is another check's business.
    std::fs::write(
        root.join("lib/modules").join(k).join("modules.dep"),
        VIRTIO_MODULES
            .iter()
            .map(|p| format!("{p}:\n"))
            .collect::<String>(),
    )
    .unwrap();
    assert_eq!(
        bootloader::grub2::Grub2.verify(&root, &ctx).unwrap(),
        Vec::<String>::new()
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_missing_or_unreadable_initrd_is_an_error_and_an_xz_one_a_note() {
    let k = "6.1.0-25-amd64";
    let (root, ctx) = boot_tree("initrd-xz", b"", VIRTIO_MODULES, &[]);
    let initrd = root.join(format!("boot/initrd.img-{k}"));
    let err = bootloader::grub2::Grub2
        .verify(&root, &ctx)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("/boot/initrd.img-{k} (the initrd of /boot/grub/grub.cfg line 8) is not a readable initramfs")),
        "{err}"
    );
    std::fs::write(&initrd, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 0]).unwrap();
    let notes = bootloader::grub2::Grub2.verify(&root, &ctx).unwrap();
    assert_eq!(
        notes,
        vec![format!("the initrd at /boot/initrd.img-{k} (of /boot/grub/grub.cfg line 8) is compressed with xz, which hotclone cannot read: its drivers were not checked")]
    );
    std::fs::remove_file(&initrd).unwrap();
    let err = bootloader::grub2::Grub2
        .verify(&root, &ctx)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "/boot/initrd.img-{k} (the initrd of /boot/grub/grub.cfg line 8) is not in the clone"
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_failing_guest_tool_is_reported_with_its_output() {
    let case = fixtures().join("debian12-grub2");
    let root = scratch("fail");
    copy_tree(&case, &root);
    let mut ctx = load_ctx(&case);
    ctx.disk_device = Some("/dev/loop7".into());
    let mut exec = RecordingChroot::new(&root).answer(
        "update-initramfs",
        CommandOutput {
            status: 1,
            stdout: String::new(),
            stderr: "E: no space left\n".into(),
        },
    );
    let err = convert(&root, &ctx, &mut exec, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("update-initramfs -c -k") && err.contains("E: no space left"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn from_plan_collects_every_old_spec() {
    use crate::plan::{ImageFormat, PlanOptions, TargetSpec};
    let inv: Inventory = crate::probe::fixture("debian5");
    let target = TargetSpec::Image {
        path: "/tmp/x.img".into(),
        format: ImageFormat::Raw,
        size_bytes: None,
    };
    let plan = crate::plan::make(&inv, &PlanOptions::new(target)).expect("plan");
    let made: Vec<NewFilesystem> = plan
        .disk
        .partitions
        .iter()
        .filter(|p| matches!(p.role, PartitionRole::Filesystem | PartitionRole::Swap))
        .map(|p| NewFilesystem {
            partition: p.number,
            uuid: format!("new-{}", p.number),
            device: Some(format!("/dev/loop0p{}", p.number)),
        })
        .collect();
    let ctx = ConvertContext::from_plan(&plan, &inv, &made, Some("/dev/loop0".into())).unwrap();
    let root = ctx.root().expect("root mapped");
    assert_eq!(
        ctx.filesystem_for("/dev/hda1").map(|f| &f.uuid),
        Some(&root.uuid)
    );
    assert_eq!(
        ctx.filesystem_for("UUID=3E6BE9DE-8139-11D1-9106-A43F08D823A6")
            .map(|f| &f.uuid),
        Some(&root.uuid)
    );
    assert_eq!(
        ctx.filesystem_for("/dev/hda3")
            .map(|f| f.mount_point.as_str()),
        Some("/var")
    );
    assert!(ctx.swap_for("/dev/hda2").is_some(), "{:?}", ctx.swaps);
    assert_eq!(ctx.nic_target("eth0"), Some("eth0"));
    assert_eq!(ctx.guest.bootloader, plan.source.bootloader);
    assert_eq!(ctx.guest.version.as_deref(), Some("5.0.10"));
}

use crate::progress::{Progress, Silent};

/// What grub2-mkconfig writes on RHEL 8 (insights-core's
/// `GRUB2_TEMPLATE_BLSCFG`, trimmed): no linux line, the entries are read
/// by `blscfg`, with a `kernelopts` fallback.
const RHEL8_GRUB_CFG: &str = "\
### BEGIN /etc/grub.d/00_tuned ###
set tuned_params=\"\"
### END /etc/grub.d/00_tuned ###
insmod blscfg
blscfg
if [ -s $prefix/grubenv ]; then
  load_env
fi

if [ -z \"${kernelopts}\" ]; then
  set kernelopts=\"root=/dev/mapper/rhel-root ro crashkernel=auto resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb quiet transparent_hugepage=never \"
fi
";

/// Regression (issue 14): a RHEL 8 grub.cfg says `blscfg` and has no
/// linux line of its own. The boot check failed it as "no Linux entry",
/// and the BLS entries and grubenv, which kept `rd.lvm.lv=` and the old
/// root, were never rewritten or read.
#[test]
fn regression_bls_entries_are_rewritten_and_checked_as_the_menu() {
    let case = fixtures().join("rhel8-bls");
    let root = scratch("rhel8-bls");
    copy_tree(&case, &root);
    let ctx = load_ctx(&case);
    let k = ctx.guest.kernel.clone();
    std::fs::write(root.join(format!("boot/vmlinuz-{k}")), b"kernel").unwrap();
    std::fs::write(
        root.join(format!("boot/initramfs-{k}.img")),
        debian_initrd(&k, &["virtio_blk", "virtio_pci", "xfs"]),
    )
    .unwrap();
    std::fs::write(root.join("boot/grub2/grub.cfg"), RHEL8_GRUB_CFG).unwrap();

    let entry = format!("/boot/loader/entries/295e1ba1696e4fad9e062f096f92d147-{k}.conf");
    let err = bootloader::grub2::Grub2
        .verify(&root, &ctx)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "the converted guest would not boot: {entry} line 5: the kernel options lack root=UUID=3f1c8a2e-5b7d-4e1a-9c3f-2a6b8d0e4f11, net.ifnames=0 and still have rd.lvm.lv=root_vg/lv_root, rd.lvm.lv=root_vg/lv_swap, which the VM has not (its options come from kernelopts in /boot/grub2/grubenv)"
        )),
        "{err}"
    );

    let mut report = ConvertReport::default();
    let grub2 = bootloader::grub2::Grub2;
    apply(&root, grub2.as_rewriter(), &ctx, &mut report, &mut Silent).unwrap();
    assert!(
        report
            .changed
            .iter()
            .any(|c| c == "boot/grub2/grubenv (grub2)"),
        "{:?}",
        report.changed
    );
    assert_eq!(
        std::fs::metadata(root.join("boot/grub2/grubenv"))
            .unwrap()
            .len(),
        1024
    );
    // grubenv's saved_entry names the 8.4 entry: no note, its kernel and
    // initrd are checked.
    assert_eq!(grub2.verify(&root, &ctx).unwrap(), Vec::<String>::new());
    // Without the kernel, the default entry fails by its own file.
    std::fs::remove_file(root.join(format!("boot/vmlinuz-{k}"))).unwrap();
    let err = grub2.verify(&root, &ctx).unwrap_err().to_string();
    assert!(
        err.contains(&format!("/vmlinuz-{k} (the kernel of {entry} line 3)")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Issue 14 item 4: a guest whose only getty is serial-getty@hvc0 gets the
/// getty@tty1 and serial-getty@ttyS0 links, once (the mechanism: a
/// module's `creates` and `FileAction::Symlink`).
#[test]
fn regression_a_systemd_guest_with_only_an_hvc0_getty_gains_tty1_and_ttys0() {
    use super::console::systemd::{SystemdGetty, WANTS};
    let root = scratch("systemd-gettys");
    let wants = root.join(WANTS);
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/serial-getty@.service",
        wants.join("serial-getty@hvc0.service"),
    )
    .unwrap();
    let ctx = ConvertContext::new(guest(DistroFamily::Debian, BootloaderKind::Grub2), vec![]);
    let mut progress = crate::progress::Silent;
    for _ in 0..2 {
        let mut report = ConvertReport::default();
        apply(&root, &SystemdGetty, &ctx, &mut report, &mut progress).unwrap();
    }
    for (unit, target) in [
        ("getty@tty1.service", "/lib/systemd/system/getty@.service"),
        (
            "serial-getty@ttyS0.service",
            "/lib/systemd/system/serial-getty@.service",
        ),
    ] {
        let link = std::fs::read_link(wants.join(unit)).unwrap();
        assert_eq!(link, Path::new(target), "{unit}");
    }
    assert_eq!(std::fs::read_dir(&wants).unwrap().count(), 3);
    std::fs::remove_dir_all(&root).unwrap();
}

/// Issue 14 item 5: two source swaps with a new swap each keep their own
/// UUIDs (the golden case `two-swaps` covers one new swap for both, which
/// gave two lines the same UUID; `ConvertContext::from_plan` now pairs
/// several planned swaps with the source's in order instead of giving each
/// every old spec).
#[test]
fn two_swaps_map_to_their_own_new_swaps() {
    let mut ctx = ConvertContext::new(guest(DistroFamily::Debian, BootloaderKind::Grub2), vec![]);
    ctx.swaps = vec![
        SwapMapping {
            old_specs: vec!["/dev/sda5".into(), "UUID=aaaa".into()],
            uuid: "1111".into(),
            device: None,
        },
        SwapMapping {
            old_specs: vec!["/dev/sdb1".into()],
            uuid: "2222".into(),
            device: None,
        },
    ];
    let out = fstab::rewrite(
        "UUID=aaaa none swap sw 0 0\n/dev/sdb1 none swap sw 0 0\n",
        &ctx,
    );
    assert_eq!(
        out,
        "UUID=1111 none swap sw 0 0\nUUID=2222 none swap sw 0 0\n"
    );
}

/// Issue 13: a converted config that brings up a NIC the VM will not have
/// fails the boot check, naming the file and the line; the VM's own NICs,
/// VLANs on them and bridges pass.
#[test]
fn regression_the_boot_check_finds_a_config_bringing_up_a_nic_the_vm_lacks() {
    let root = scratch("interfaces-check");
    let mut ctx = ConvertContext::new(guest(DistroFamily::Debian, BootloaderKind::Grub2), vec![]);
    ctx.nics = vec![NicRename {
        source: "eth1".into(),
        mac: None,
        target: "eth0".into(),
    }];
    std::fs::create_dir_all(root.join("etc/network/interfaces.d")).unwrap();
    std::fs::create_dir_all(root.join("etc/sysconfig/network-scripts")).unwrap();
    std::fs::write(
        root.join("etc/network/interfaces"),
        "auto lo\niface lo inet loopback\nauto eth0 eth0.100 br0\n",
    )
    .unwrap();
    verify_interfaces(&root, &ctx).unwrap();
    std::fs::write(
        root.join("etc/network/interfaces.d/backup"),
        "# the old NIC\n\nallow-hotplug eth5\niface eth5 inet dhcp\n",
    )
    .unwrap();
    let err = verify_interfaces(&root, &ctx).unwrap_err().to_string();
    assert!(
        err.contains("/etc/network/interfaces.d/backup line 3 brings up eth5")
            && err.contains("eth0 only"),
        "{err}"
    );
    std::fs::remove_file(root.join("etc/network/interfaces.d/backup")).unwrap();
    std::fs::write(
        root.join("etc/sysconfig/network-scripts/ifcfg-eth1"),
        "DEVICE=eth1\nONBOOT=yes\n",
    )
    .unwrap();
    let err = verify_interfaces(&root, &ctx).unwrap_err().to_string();
    assert!(err.contains("ifcfg-eth1 line 2 brings up eth1"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

/// Issue 13: a copy with no GRUB tools of its own (a Xen PV guest that
/// pygrub booted from its menu.lst, or one booted by its hypervisor's
/// kernel) was refused, or failed running a `grub` it does not have. Now
/// the guest's own GRUB is used when the copy has it, this host's GRUB 2
/// when it has none but has its kernel, and a copy without its kernel is
/// refused with what to do.
#[test]
fn regression_a_copy_without_grub_tools_gets_this_hosts_grub2() {
    use family::CopyBoot;
    let pick = |kind, grub2, grub_legacy, kernel| {
        let copy = CopyBoot {
            grub2,
            grub_legacy,
            kernel,
            dracut: false,
            update_initramfs: true,
        };
        family::select_with(&guest(DistroFamily::Debian, kind), Some(true), Some(copy))
            .map(|m| m.bootloader.name())
            .map_err(|e| e.to_string())
    };
    use BootloaderKind::{Grub2, GrubLegacy, None as NoBootloader};
    assert_eq!(pick(Grub2, true, false, true), Ok("grub2"));
    assert_eq!(pick(GrubLegacy, false, true, true), Ok("grub-legacy"));
    // pygrub's menu.lst, GRUB 2 installed since: the guest's own GRUB 2.
    assert_eq!(pick(GrubLegacy, true, false, true), Ok("grub2"));
    assert_eq!(pick(NoBootloader, true, false, true), Ok("grub2"));
    for kind in [Grub2, GrubLegacy, NoBootloader] {
        assert_eq!(pick(kind, false, false, true), Ok("grub2 (this host's)"));
        let refused = pick(kind, false, false, false).unwrap_err();
        assert_eq!(
            refused,
            "Debian family with no bootloader and no kernel 6.1.0-18-amd64 in /boot is not supported by hotclone's conversion; the source boots a kernel its hypervisor supplies (a Xen PV guest with a kernel in dom0). Install the distribution's kernel package on the source (linux-image-*, kernel or kernel-default), then run the same clone again (or `hotclone sync` if the clone finished)"
        );
    }
    // lilo and extlinux stay refused: their kernel hooks would rewrite
    // the boot sector GRUB was installed into.
    assert!(pick(BootloaderKind::Lilo, false, false, true).is_err());
}

#[test]
fn a_copy_without_grub_is_converted_with_this_hosts_grub_and_its_own_menu() {
    let (root, ctx) = debian_guest("debian12-grub2", "hostgrub");
    remove_own_grub(&root);
    let uuid = ctx.root().unwrap().uuid.clone();
    let k = ctx.guest.kernel.clone();
    let mut exec = RecordingChroot::new(&root);
    let report = convert(&root, &ctx, &mut exec, &mut Silent).unwrap();
    let boot_dir = root.join("boot");
    assert_eq!(
        exec.commands(),
        vec![
            format!("update-initramfs -u -k {k}"),
            format!(
                "[host] grub-install --target=i386-pc --boot-directory {} /dev/loop7",
                boot_dir.display()
            ),
        ]
    );
    let menu = std::fs::read_to_string(root.join("boot/grub/grub.cfg")).unwrap();
    assert!(
        menu.contains(&format!(
            "\tlinux /boot/vmlinuz-{k} root=UUID={uuid} ro net.ifnames=0 console=tty0 console=ttyS0,115200\n\tinitrd /boot/initrd.img-{k}\n"
        )),
        "{menu}"
    );
    assert!(
        menu.contains(&format!("search --no-floppy --fs-uuid --set=root {uuid}\n")),
        "{menu}"
    );
    assert!(
        report.notes.iter().all(|n| !n.contains("not checked")),
        "{:?}",
        report.notes
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_host_without_grub_says_what_to_install() {
    let (root, ctx) = debian_guest("debian12-grub2", "nohostgrub");
    remove_own_grub(&root);
    struct NoHostGrub(RecordingChroot);
    impl super::chroot::ChrootExec for NoHostGrub {
        fn root(&self) -> &Path {
            self.0.root()
        }
        fn run(&mut self, argv: &[&str]) -> Result<CommandOutput, super::chroot::ChrootError> {
            self.0.run(argv)
        }
        fn run_host(&mut self, argv: &[&str]) -> Result<CommandOutput, super::chroot::ChrootError> {
            Err(super::chroot::ChrootError::Spawn {
                command: argv.join(" "),
                error: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        }
    }
    let err = convert(
        &root,
        &ctx,
        &mut NoHostGrub(RecordingChroot::new(&root)),
        &mut Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("could not start on this host")
            && err.contains("grub-pc-bin, grub2-common and udev"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// The review of issue 13's selection: SUSE keeps GRUB 2's modules in
/// /usr/share/grub2 (openSUSE, SLES 15) or /usr/lib/grub2 (SLES 12), so
/// a SUSE guest with its own GRUB 2 was given this host's.
#[test]
fn regression_a_suse_copy_with_its_own_grub2_keeps_it() {
    let root = scratch("suse-grub2");
    for f in [
        "usr/sbin/grub2-install",
        "usr/share/grub2/i386-pc/normal.mod",
        "boot/vmlinuz-5.14.21-150500.55.39-default",
    ] {
        std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
        std::fs::write(root.join(f), b"").unwrap();
    }
    let copy = family::CopyBoot::read(&root, "5.14.21-150500.55.39-default");
    assert_eq!(
        copy,
        family::CopyBoot {
            grub2: true,
            grub_legacy: false,
            kernel: true,
            dracut: false,
            update_initramfs: false,
        }
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_failing_host_grub_install_names_the_host_and_what_to_install() {
    let (root, ctx) = debian_guest("debian12-grub2", "hostgrubfails");
    remove_own_grub(&root);
    let mut exec = RecordingChroot::new(&root).answer(
        "[host] grub-install",
        CommandOutput {
            status: 1,
            stdout: String::new(),
            stderr: "grub-install: error: /usr/lib/grub/i386-pc/modinfo.sh doesn't exist.\n".into(),
        },
    );
    let err = convert(&root, &ctx, &mut exec, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("failed on this host")
            && err.contains("modinfo.sh doesn't exist")
            && err.contains("grub-pc-bin, grub2-common and udev")
            && !err.contains("chroot"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Issue 14, shape 4: a Debian server that installed dracut (which removes
/// initramfs-tools) was converted with `update-initramfs`, which it no
/// longer has: the conversion failed, or with both kept, the initrd the
/// VM boots was never rebuilt with virtio. Now the copy's tool is read,
/// and dracut rebuilds Debian's `/boot/initrd.img-V` with the VM's drivers.
#[test]
fn regression_a_debian_copy_with_dracut_in_place_of_initramfs_tools_rebuilds_with_dracut() {
    let (root, ctx) = debian_guest("debian12-grub2", "debian-dracut");
    let k = ctx.guest.kernel.clone();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/dracut"), b"").unwrap();
    let mut exec = RecordingChroot::new(&root);
    let report = convert(&root, &ctx, &mut exec, &mut Silent).unwrap();
    assert_eq!(
        exec.commands()[0],
        format!("dracut -f --no-hostonly /boot/initrd.img-{k} {k}")
    );
    assert!(
        !exec
            .commands()
            .iter()
            .any(|c| c.contains("update-initramfs")),
        "{:?}",
        exec.commands()
    );
    let conf = std::fs::read_to_string(root.join("etc/dracut.conf.d/hotclone.conf")).unwrap();
    assert!(conf.contains("virtio_blk"), "{conf}");
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("rebuilt with dracut")),
        "{:?}",
        report.notes
    );
    // Both installed (dracut unpacked, never switched to): initramfs-tools
    // is still the one the kernel's hooks run.
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::write(root.join("usr/sbin/update-initramfs"), b"").unwrap();
    let mut exec = RecordingChroot::new(&root);
    convert(&root, &ctx, &mut exec, &mut Silent).unwrap();
    assert_eq!(exec.commands()[0], format!("update-initramfs -u -k {k}"));
    let _ = std::fs::remove_dir_all(&root);
}

/// Issue 14, shape 2's lab boot: the clone of a grub-legacy source did not
/// boot (an empty MBR: "Booting from Hard Disk..." and nothing more), yet
/// its conversion passed. The grub shell's `setup` embedded stage 1.5
/// ("succeeded"), then its `install` failed with "Error 22: No such
/// partition": it writes a partition through `/dev/loop7` + "1", which
/// does not exist. Any "succeeded" in the output was taken for success.
/// Now only the install step's own success counts, and the shell names
/// partitions by links made for the run ([`grub_legacy::setup_script`]).
#[test]
fn regression_grub_legacy_setup_that_embedded_but_did_not_install_fails() {
    use crate::convert::bootloader::grub_legacy::{setup_script, setup_succeeded};
    let failed = "grub> setup (hd0)\n Checking if \"/boot/grub/stage1\" exists... yes\n Running \"embed /boot/grub/e2fs_stage1_5 (hd0)\"...  19 sectors are embedded.\nsucceeded\n Running \"install /boot/grub/stage1 (hd0) (hd0)1+19 p (hd0,0)/boot/grub/stage2 /boot/grub/menu.lst\"... failed\n\nError 22: No such partition\ngrub> quit\n";
    let err = setup_succeeded(failed).unwrap_err().to_string();
    assert!(err.contains("Error 22: No such partition"), "{err}");
    assert!(setup_succeeded("Done.\n").is_err());
    let ok = failed
        .replace("... failed", "... succeeded")
        .replace("\nError 22: No such partition", "\nDone.");
    assert!(setup_succeeded(&ok).is_ok());

    let fs = |mount: &str, partition: u32, device: &str| FsMapping {
        mount_point: mount.into(),
        old_specs: vec![],
        uuid: String::new(),
        fs_type: "ext3".into(),
        device: Some(device.into()),
        partition: Some(partition),
    };
    let ctx = ConvertContext::new(
        guest(DistroFamily::Debian, BootloaderKind::GrubLegacy),
        vec![
            fs("/", 3, "/dev/loop9"),
            fs("/boot", 1, "/dev/loop8"),
            fs("/boot/efi", 1, "/dev/loop6"),
        ],
    );
    let script = setup_script("/dev/loop7", 1, &ctx);
    assert!(
        script.contains("ln -s '/dev/loop7' /run/hotclone-grub/disk && ln -s '/dev/loop8' /run/hotclone-grub/disk1 && ln -s '/dev/loop9' /run/hotclone-grub/disk3 &&")
            && script.contains("root (hd0,0)"),
        "{script}"
    );
    // Run for real: the links are made, grub (a stand-in here) sees them
    // through the map, and nothing is left behind.
    let root = scratch("grub-links");
    let fake = root.join("bin");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(
        fake.join("grub"),
        "#!/bin/sh\nmap=${3#--device-map=}\ncat \"$map\"; readlink \"${map%/device.map}/disk1\"; echo ' Running \"install x\"... succeeded'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(fake.join("grub"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let links = root.join("links");
    let script =
        setup_script("/dev/loop7", 1, &ctx).replace("/run/hotclone-grub", links.to_str().unwrap());
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("PATH", format!("{}:/usr/bin:/bin", fake.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with(&format!("(hd0)\t{}/disk\n/dev/loop8\n", links.display())),
        "{stdout}"
    );
    assert!(setup_succeeded(&stdout).is_ok());
    assert!(!links.exists());
    let _ = std::fs::remove_dir_all(&root);
}
