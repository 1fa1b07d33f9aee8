//! GRUB 2 for a guest that has no bootloader of its own that can boot the
//! VM: a Xen PV guest that pygrub or its host's kernel booted, a copy with
//! a `menu.lst` but no `grub` shell, or none at all. The copy's own GRUB is
//! used whenever it is there ([`super::grub2`], [`super::grub_legacy`]);
//! only when it is not does [`crate::convert::family`] pick this one.
//!
//! Its tools are this host's, not the guest's: the rescue system's GRUB
//! (the rescue image carries grub-pc-bin) for a live target, the client's
//! for an image target. `grub-install --boot-directory=<clone>/boot` writes
//! the boot code and GRUB's modules into the clone; the menu is written
//! here ([`menu`]), since the guest has no `grub-mkconfig`: one entry, the
//! kernel the clone boots, its initrd, the new root and the conversion's
//! options. The boot check reads it back like any GRUB 2 menu.
//!
//! On failure nothing of the guest's is lost: the host's GRUB missing, or
//! grub-install failing, is an error naming the command and what to
//! install; the copy's files other than `/boot/grub` are not touched.

use std::path::Path;

use super::grub2::verify_menu;
use super::{run_host_noted, Bootloader};
use crate::convert::chroot::{ChrootError, ChrootExec};
use crate::convert::{ConvertContext, ConvertError, FileAction, FilePattern, FileRewriter};
use crate::progress::Progress;

/// Where the menu is written, relative to the clone's root.
pub const MENU: &str = "boot/grub/grub.cfg";

/// What a host needs to install GRUB into a clone (Debian's names).
const HOST_PACKAGES: &str = "grub-pc-bin, grub2-common and udev";

pub struct HostGrub2;

impl FileRewriter for HostGrub2 {
    fn name(&self) -> &'static str {
        "grub2 (this host's)"
    }
    fn files(&self) -> &'static [FilePattern] {
        &[]
    }
    fn rewrite(&self, _path: &str, text: &str, _ctx: &ConvertContext) -> FileAction {
        FileAction::from_text(text, text.to_string())
    }
}

impl Bootloader for HostGrub2 {
    fn as_rewriter(&self) -> &dyn FileRewriter {
        self
    }
    fn device_patterns(&self) -> &'static [&'static str] {
        &[]
    }
    fn install(
        &self,
        exec: &mut dyn ChrootExec,
        ctx: &ConvertContext,
        progress: &mut dyn Progress,
    ) -> Result<(), ConvertError> {
        let disk = super::install_disk(ctx)?;
        let boot_dir = exec.root().join("boot");
        let boot_dir = boot_dir.to_string_lossy().into_owned();
        progress.note(&format!(
            "the copy has no bootloader that boots a VM: installing this host's GRUB 2 into {disk}"
        ));
        let argv = [
            "grub-install",
            "--target=i386-pc",
            "--boot-directory",
            &boot_dir,
            disk,
        ];
        let hint = format!(
            "this host's GRUB 2 is what the clone gets, since its copy has no bootloader of its own. Install {HOST_PACKAGES} here (or install grub on the source, then run the same clone again)"
        );
        match run_host_noted(exec, &argv, progress) {
            Ok(_) => Ok(()),
            Err(ConvertError::Chroot(ChrootError::Spawn { command, .. })) => Err(
                ConvertError::Context(format!("`{command}` could not start on this host: {hint}")),
            ),
            Err(ConvertError::Chroot(ChrootError::Failed {
                command, output, ..
            })) => Err(ConvertError::Context(format!(
                "`{command}` failed on this host:\n{output}\n{hint}"
            ))),
            Err(e) => Err(e),
        }
    }
    fn update(
        &self,
        exec: &mut dyn ChrootExec,
        ctx: &ConvertContext,
        progress: &mut dyn Progress,
    ) -> Result<(), ConvertError> {
        let root = exec.root().to_path_buf();
        let names: Vec<String> = std::fs::read_dir(root.join("boot"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let files = BootFiles::find(&names, &ctx.guest.kernel).ok_or_else(|| {
            ConvertError::Verify(format!(
                "/boot has no vmlinuz-{} (the kernel the clone boots): install the distribution's kernel package on the source, then sync",
                ctx.guest.kernel
            ))
        })?;
        let text = menu(ctx, &files);
        let path = root.join(MENU);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(crate::convert::io_err(dir))?;
        }
        std::fs::write(&path, text).map_err(crate::convert::io_err(&path))?;
        progress.note(&format!(
            "wrote /{MENU}: one entry for {}; the guest has no grub-mkconfig, so a kernel installed later is not added to it (install the distribution's grub package in the VM for that)",
            files.kernel
        ));
        Ok(())
    }
    fn verify(&self, root: &Path, ctx: &ConvertContext) -> Result<Vec<String>, ConvertError> {
        let text = std::fs::read_to_string(root.join(MENU))
            .map_err(|e| ConvertError::Verify(format!("/{MENU} was not written ({e})")))?;
        verify_menu(root, ctx, MENU, &text)
    }
}

/// The kernel and initrd of one kernel version, as names in `/boot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub kernel: String,
    pub initrd: Option<String>,
}

impl BootFiles {
    /// Find `kver`'s kernel among the names in `/boot`, and its initrd by
    /// each family's naming: Debian's `initrd.img-V`, dracut's
    /// `initramfs-V.img`, Red Hat mkinitrd's `initrd-V.img`, SUSE's
    /// `initrd-V`.
    pub fn find(names: &[String], kver: &str) -> Option<BootFiles> {
        let has = |n: &str| names.iter().any(|x| x == n);
        let kernel = [format!("vmlinuz-{kver}"), format!("vmlinux-{kver}")]
            .into_iter()
            .find(|k| has(k))?;
        let initrd = [
            format!("initrd.img-{kver}"),
            format!("initramfs-{kver}.img"),
            format!("initrd-{kver}.img"),
            format!("initrd-{kver}"),
        ]
        .into_iter()
        .find(|i| has(i));
        Some(BootFiles { kernel, initrd })
    }
}

/// The GRUB 2 menu for the clone (a pure function of the context): the
/// VM's serial and VGA consoles, the filesystem holding `/boot` found by
/// its new UUID, and one entry booting `files` on the new root with the
/// conversion's kernel options.
pub fn menu(ctx: &ConvertContext, files: &BootFiles) -> String {
    let boot_fs = ctx
        .filesystems
        .iter()
        .find(|f| f.mount_point == "/boot")
        .or_else(|| ctx.root());
    let separate_boot = boot_fs.is_some_and(|f| f.mount_point == "/boot");
    let prefix = if separate_boot { "" } else { "/boot" };
    let root_uuid = ctx.root().map(|r| r.uuid.as_str()).unwrap_or_default();
    let fs_module = match boot_fs.map(|f| f.fs_type.as_str()) {
        Some("xfs") => "xfs",
        Some("btrfs") => "btrfs",
        _ => "ext2",
    };
    let mut options = vec![format!("root=UUID={root_uuid}"), "ro".to_string()];
    options.extend(ctx.cmdline_add.iter().cloned());
    let mut out = String::from(
        "# Written by hotclone: the source had no bootloader that boots a VM, so GRUB 2\n\
         # was installed from the host that converted it. The guest has no grub-mkconfig:\n\
         # edit this file by hand, or install the distribution's grub package.\n\
         set default=0\n\
         set timeout=3\n\
         serial --unit=0 --speed=115200\n\
         terminal_input console serial\n\
         terminal_output console serial\n\
         insmod part_gpt\n\
         insmod part_msdos\n",
    );
    out.push_str(&format!("insmod {fs_module}\n"));
    if let Some(f) = boot_fs {
        out.push_str(&format!(
            "search --no-floppy --fs-uuid --set=root {}\n",
            f.uuid
        ));
    }
    let title = format!(
        "{} {} ({})",
        crate::convert::family::family_name(ctx.guest.family),
        ctx.guest.version.as_deref().unwrap_or(""),
        ctx.guest.kernel
    )
    .replace("  ", " ");
    out.push_str(&format!("menuentry '{}' {{\n", title.replace('\'', "")));
    out.push_str(&format!(
        "\tlinux {prefix}/{} {}\n",
        files.kernel,
        options.join(" ")
    ));
    if let Some(i) = &files.initrd {
        out.push_str(&format!("\tinitrd {prefix}/{i}\n"));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{FsMapping, Guest};
    use crate::probe::{BootloaderKind, DistroFamily};

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_familys_initrd_name_is_found() {
        let k = "2.6.18-398.el5";
        for initrd in [
            format!("initrd.img-{k}"),
            format!("initramfs-{k}.img"),
            format!("initrd-{k}.img"),
            format!("initrd-{k}"),
        ] {
            let found = BootFiles::find(
                &names(&[
                    &format!("vmlinuz-{k}"),
                    &initrd,
                    "config-2.6.18-398.el5",
                    "grub",
                ]),
                k,
            );
            assert_eq!(
                found,
                Some(BootFiles {
                    kernel: format!("vmlinuz-{k}"),
                    initrd: Some(initrd)
                })
            );
        }
        assert_eq!(BootFiles::find(&names(&["vmlinuz-2.6.18-1"]), k), None);
    }

    #[test]
    fn the_menu_boots_the_new_root_from_a_separate_boot() {
        let fs = |mount: &str, uuid: &str, fs_type: &str, part: u32| FsMapping {
            mount_point: mount.into(),
            old_specs: vec![],
            uuid: uuid.into(),
            fs_type: fs_type.into(),
            device: None,
            partition: Some(part),
        };
        let guest = Guest {
            family: DistroFamily::Debian,
            id: "debian".into(),
            version: Some("5.0.10".into()),
            bootloader: BootloaderKind::None,
            kernel: "2.6.26-2-686".into(),
            network_styles: vec![],
        };
        let ctx = ConvertContext::new(
            guest,
            vec![
                fs("/", "ROOT-UUID", "ext3", 3),
                fs("/boot", "BOOT-UUID", "ext2", 1),
            ],
        );
        let files = BootFiles {
            kernel: "vmlinuz-2.6.26-2-686".into(),
            initrd: Some("initrd.img-2.6.26-2-686".into()),
        };
        let text = menu(&ctx, &files);
        let body: Vec<&str> = text.lines().skip_while(|l| l.starts_with('#')).collect();
        assert_eq!(
            body.join("\n"),
            format!(
                "set default=0\nset timeout=3\nserial --unit=0 --speed=115200\nterminal_input console serial\nterminal_output console serial\ninsmod part_gpt\ninsmod part_msdos\ninsmod ext2\nsearch --no-floppy --fs-uuid --set=root BOOT-UUID\nmenuentry 'Debian 5.0.10 (2.6.26-2-686)' {{\n\tlinux /vmlinuz-2.6.26-2-686 root=UUID=ROOT-UUID ro {}\n\tinitrd /initrd.img-2.6.26-2-686\n}}",
                ctx.cmdline_add.join(" ")
            )
        );
        // What the boot check reads back: the entry and its options.
        crate::convert::bootloader::grub2::check_linux_entries(
            MENU,
            &text,
            "ROOT-UUID",
            &ctx.cmdline_add,
        )
        .unwrap();
    }
}
