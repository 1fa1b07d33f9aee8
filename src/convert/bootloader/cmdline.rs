//! The kernel command line as every bootloader config carries it (a
//! grub-legacy `kernel` line, `GRUB_CMDLINE_LINUX`, a BLS `options` line,
//! grubenv's `kernelopts`), and what the VM needs changed in it.
//!
//! - `root=` names the new root filesystem's UUID; `resume=` the new swap,
//!   or goes when it named a device the VM will not have.
//! - Storage activation goes: the clone's filesystems are always plain
//!   partitions (the plan flattens LVM, MD RAID and LUKS), so dracut must
//!   not wait for a volume group, an array or a LUKS device that no longer
//!   exists (it would drop to its emergency shell). `rd_LVM_LV=`,
//!   `rd.lvm.lv=`, `rd.lvm.vg=`, `rd_MD_UUID=`, `rd.md.uuid=`,
//!   `rd_DM_UUID=`, `rd.dm.uuid=`, `rd_LUKS_UUID=`, `rd.luks.uuid=` and
//!   their kin are dropped ([`storage_activation`]). RHEL 6's dracut
//!   (the `rd_` spelling) gets the installer's own spelling of "none"
//!   instead, `rd_NO_LVM`, `rd_NO_MD`, `rd_NO_DM`, `rd_NO_LUKS`, in place
//!   of the first option it replaces. Newer dracut (`rd.` spelling) gets
//!   nothing: it waits only for what it is told to, and a plain-partition
//!   install writes no `rd.lvm=0` either.
//! - Consoles: Xen's `hvc0`/`xvc0` and a serial console other than the
//!   VM's first port (`ttyS1`...) name devices the VM does not have; they
//!   go, and the VM's consoles (`ctx.cmdline_add`) take their place. A
//!   source that chose `ttyS0` or `tty0` keeps its choice, and gets none
//!   of ours ([`replaced_console`]).
//! - Each other option of `ctx.cmdline_add` is added once; an option with
//!   the same key replaces the old value (`net.ifnames=1` becomes `=0`).
//!
//! Everything here is pure and idempotent: a second edit changes nothing.

use crate::convert::ConvertContext;

/// What an option that activates storage the VM will not have is, and
/// the RHEL 6 dracut option that says "none of those" (for the `rd_`
/// spelling only). `None` for any other option.
pub fn storage_activation(token: &str) -> Option<Option<&'static str>> {
    const RD_OLD: &[(&str, &str)] = &[
        ("rd_LVM_LV=", "rd_NO_LVM"),
        ("rd_LVM_VG=", "rd_NO_LVM"),
        ("rd_LVM_SNAPSHOT=", "rd_NO_LVM"),
        ("rd_MD_UUID=", "rd_NO_MD"),
        ("rd_DM_UUID=", "rd_NO_DM"),
        ("rd_LUKS_UUID=", "rd_NO_LUKS"),
    ];
    const RD_NEW: &[&str] = &[
        "rd.lvm.lv=",
        "rd.lvm.vg=",
        "rd.lvm.snapshot=",
        "rd.md.uuid=",
        "rd.dm.uuid=",
        "rd.luks.uuid=",
        "rd.luks.name=",
    ];
    if let Some((_, no)) = RD_OLD.iter().find(|(p, _)| token.starts_with(p)) {
        return Some(Some(no));
    }
    RD_NEW.iter().any(|p| token.starts_with(p)).then_some(None)
}

/// Whether a `console=` value names a device the VM does not have: Xen's
/// `hvc*` and `xvc*`, or a serial port other than the first (`ttyS1`...).
/// `ttyS0` (any speed) and the virtual terminals are the VM's too.
pub fn replaced_console(value: &str) -> bool {
    let dev = value.split(',').next().unwrap_or(value);
    if dev.starts_with("hvc") || dev.starts_with("xvc") {
        return true;
    }
    match dev.strip_prefix("ttyS") {
        Some(n) => n.parse::<u32>().is_ok_and(|n| n != 0),
        None => false,
    }
}

/// Whether a bootloader's kernel image is a Linux kernel that takes the
/// kernel command line: not memtest86(+), not Xen's hypervisor (`xen.gz`,
/// `xen-4.0-amd64.gz`, `xen.gz-2.6.18-398.el5`: its `module` line is the
/// Linux one), not a network or disk loader (`memdisk`, `*.lkrn`, iPXE).
pub fn is_linux_image(path: &str) -> bool {
    let name = path
        .rsplit(['/', ')'])
        .next()
        .unwrap_or(path)
        .to_ascii_lowercase();
    !(name.contains("memtest")
        || is_xen_hypervisor(path)
        || name == "memdisk"
        || name.ends_with(".lkrn")
        || name.contains("ipxe")
        || name.ends_with(".c32"))
}

/// Whether a kernel image is Xen's hypervisor (its name starts with
/// `xen` and it is not a Linux kernel image itself).
pub fn is_xen_hypervisor(path: &str) -> bool {
    let name = path
        .rsplit(['/', ')'])
        .next()
        .unwrap_or(path)
        .to_ascii_lowercase();
    name.starts_with("xen")
}

/// Kernel command-line edits shared by every bootloader (see the module
/// doc). `add` says whether this line should carry `ctx.cmdline_add`
/// (the main kernel line does; `GRUB_CMDLINE_LINUX_DEFAULT` or a BLS
/// `options $kernelopts` line, whose options come from elsewhere, do not).
pub fn edit_cmdline(tokens: &[String], ctx: &ConvertContext, add: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut dropped_console = false;
    for t in tokens {
        if let Some(v) = t.strip_prefix("root=") {
            // Kernel lines always name the root filesystem.
            let fs = ctx.filesystem_for(v).or_else(|| ctx.root());
            match fs {
                Some(fs) if !v.starts_with('$') => out.push(format!("root=UUID={}", fs.uuid)),
                _ => out.push(t.clone()),
            }
        } else if let Some(v) = t.strip_prefix("resume=") {
            if let Some(s) = ctx.swap_for(v) {
                out.push(format!("resume=UUID={}", s.uuid));
            }
        } else if let Some(none) = storage_activation(t) {
            if let Some(none) = none {
                let have = |x: &String| x == none;
                if !tokens.iter().any(have) && !out.iter().any(have) {
                    out.push(none.to_string());
                }
            }
        } else if t.strip_prefix("console=").is_some_and(replaced_console) {
            dropped_console = true;
        } else {
            out.push(t.clone());
        }
    }
    if add {
        // A source that names consoles the VM has keeps its choice.
        let kept_console = !dropped_console && out.iter().any(|t| t.starts_with("console="));
        for a in &ctx.cmdline_add {
            let key = a.split('=').next().unwrap_or(a);
            if key == "console" && kept_console {
                continue;
            }
            if key == "console" || !a.contains('=') {
                if !out.iter().any(|t| t == a) {
                    out.push(a.clone());
                }
                continue;
            }
            let same_key = |t: &String| t.split('=').next() == Some(key) && t.contains('=');
            match out.iter().position(same_key) {
                Some(i) => {
                    out[i] = a.clone();
                    let mut seen = false;
                    out.retain(|t| {
                        if same_key(t) {
                            let keep = !seen;
                            seen = true;
                            keep
                        } else {
                            true
                        }
                    });
                }
                None => out.push(a.clone()),
            }
        }
    }
    out
}

/// What a final kernel command line still has that the VM cannot boot
/// with: storage activation or a console it does not have. Empty when
/// nothing; the boot checks name the line and these.
pub fn leftovers(args: &[&str]) -> Vec<String> {
    args.iter()
        .filter(|a| {
            storage_activation(a).is_some()
                || a.strip_prefix("console=").is_some_and(replaced_console)
        })
        .map(|a| a.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{FsMapping, Guest};
    use crate::probe::{BootloaderKind, DistroFamily};

    fn ctx() -> ConvertContext {
        ConvertContext::new(
            Guest {
                family: DistroFamily::RedHat,
                id: String::new(),
                version: Some("6.8".into()),
                bootloader: BootloaderKind::GrubLegacy,
                kernel: "2.6.32-642.el6.x86_64".into(),
                network_styles: vec![],
            },
            vec![FsMapping {
                mount_point: "/".into(),
                old_specs: vec!["/dev/mapper/VolGroup-lv_root".into()],
                uuid: "3f1c8a2e-5b7d-4e1a-9c3f-2a6b8d0e4f11".into(),
                fs_type: "ext4".into(),
                device: None,
                partition: Some(2),
            }],
        )
    }

    fn edit(line: &str, add: bool) -> String {
        let tokens: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        edit_cmdline(&tokens, &ctx(), add).join(" ")
    }

    /// Regression (issue 14): a RHEL 6 root on LVM kept `rd_LVM_LV=` on
    /// the flattened clone; dracut waited for VolGroup and dropped to its
    /// emergency shell.
    #[test]
    fn regression_rhel6_lvm_activation_becomes_rd_no_lvm_in_place() {
        // insights-core's RHEL 6.8 grub.conf kernel line.
        let got = edit(
            "ro root=/dev/mapper/VolGroup-lv_root rd_NO_LUKS LANG=en_US.UTF-8 rd_NO_MD rd_LVM_LV=VolGroup/lv_swap SYSFONT=latarcyrheb-sun16 crashkernel=auto rd_LVM_LV=VolGroup/lv_root KEYBOARDTYPE=pc KEYTABLE=us rd_NO_DM rhgb quiet",
            false,
        );
        assert_eq!(got, "ro root=UUID=3f1c8a2e-5b7d-4e1a-9c3f-2a6b8d0e4f11 rd_NO_LUKS LANG=en_US.UTF-8 rd_NO_MD rd_NO_LVM SYSFONT=latarcyrheb-sun16 crashkernel=auto KEYBOARDTYPE=pc KEYTABLE=us rd_NO_DM rhgb quiet");
        assert_eq!(edit(&got, false), got, "idempotent");
        let got = edit(
            "ro rd_MD_UUID=6c6ea003:d9115b5c:52d4a47d:c7d6c6be rd_LVM_LV=vg/root",
            false,
        );
        assert_eq!(got, "ro rd_NO_MD rd_NO_LVM");
    }

    #[test]
    fn regression_newer_dracut_activation_goes_without_a_replacement() {
        let got = edit(
            "crashkernel=auto rd.md.uuid=2f8476d6:c69ef43a:634bb920:01b6e507 rd.lvm.lv=centos/root rd.md.uuid=591be47b:fb3549c1:28d3b4b0:57583bf5 rd.luks.uuid=luks-aa2d1119 rhgb quiet",
            false,
        );
        assert_eq!(got, "crashkernel=auto rhgb quiet");
        // Switches that only enable or disable scanning stay.
        assert_eq!(
            edit("rd.lvm=0 rd.md=0 rd_NO_LVM", false),
            "rd.lvm=0 rd.md=0 rd_NO_LVM"
        );
    }

    #[test]
    fn regression_xen_and_second_serial_consoles_become_the_vms() {
        for line in [
            "ro console=hvc0",
            "ro console=xvc0",
            "ro console=ttyS1,115200",
        ] {
            assert_eq!(
                edit(line, true),
                "ro net.ifnames=0 console=tty0 console=ttyS0,115200",
                "{line}"
            );
        }
        // tty0 stays where it was; the VM's serial console joins it.
        assert_eq!(
            edit("ro console=tty0 console=ttyS1,9600n81", true),
            "ro console=tty0 net.ifnames=0 console=ttyS0,115200"
        );
        // Without `add` (GRUB_CMDLINE_LINUX_DEFAULT) the Xen console only goes.
        assert_eq!(edit("quiet console=hvc0", false), "quiet");
    }

    #[test]
    fn a_source_choosing_ttys0_or_tty0_keeps_its_choice() {
        assert_eq!(
            edit("ro console=ttyS0,9600", true),
            "ro console=ttyS0,9600 net.ifnames=0"
        );
        assert_eq!(
            edit("ro console=tty0", true),
            "ro console=tty0 net.ifnames=0"
        );
        let once = edit("ro console=hvc0", true);
        assert_eq!(edit(&once, true), once, "idempotent");
    }

    #[test]
    fn linux_images_are_told_from_hypervisors_and_tools() {
        for linux in [
            "/vmlinuz-2.6.18-398.el5xen",
            "/boot/vmlinuz-2.6.26-2-xen-686",
            "(hd0,0)/vmlinuz",
            "/boot/kernel-3.6.11-gentoo",
            "/vmlinuz_koan",
        ] {
            assert!(is_linux_image(linux), "{linux}");
            assert!(!is_xen_hypervisor(linux), "{linux}");
        }
        for other in [
            "/xen.gz",
            "/xen.gz-2.6.18-398.el5",
            "/boot/xen-3.2-1-i386.gz",
            "/elf-memtest86+-4.20",
            "/boot/memtest86+.bin",
            "(hd0,0)/boot/ipxe.lkrn",
        ] {
            assert!(!is_linux_image(other), "{other}");
        }
        assert!(is_xen_hypervisor("/boot/xen-4.0-amd64.gz"));
    }

    #[test]
    fn leftovers_name_what_the_vm_cannot_boot_with() {
        assert_eq!(
            leftovers(&["ro", "rd.lvm.lv=rhel/root", "console=hvc0", "console=ttyS0"]),
            vec!["rd.lvm.lv=rhel/root", "console=hvc0"]
        );
    }
}
