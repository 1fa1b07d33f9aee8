//! dracut (RHEL 6+, SUSE 12+, and Debian or Ubuntu servers that installed
//! it in place of initramfs-tools): our own `/etc/dracut.conf.d/hotclone.conf`
//! with `add_drivers+=" ... "`, then `dracut -f` for the kernel.

use super::Initramfs;
use crate::convert::bootloader::run_noted;
use crate::convert::chroot::ChrootExec;
use crate::convert::{ConvertContext, ConvertError, FileRewriter};
use crate::probe::DistroFamily;
use crate::progress::Progress;

pub struct Dracut;

pub const CONF: &str = "etc/dracut.conf.d/hotclone.conf";

one_file_rewriter!(Dracut, "dracut", CONF, true, |_, ctx| conf(ctx));

impl Initramfs for Dracut {
    fn as_rewriter(&self) -> &dyn FileRewriter {
        self
    }
    fn rebuild(
        &self,
        exec: &mut dyn ChrootExec,
        ctx: &ConvertContext,
        progress: &mut dyn Progress,
    ) -> Result<(), ConvertError> {
        let k = ctx.guest.kernel.as_str();
        let image = match ctx.guest.family {
            DistroFamily::Suse => format!("/boot/initrd-{k}"),
            // Debian's dracut keeps initramfs-tools' name, which its
            // grub.cfg and /initrd.img symlink name.
            DistroFamily::Debian => format!("/boot/initrd.img-{k}"),
            _ => format!("/boot/initramfs-{k}.img"),
        };
        // --no-hostonly: the image must hold the VM's drivers, not only the
        // host's (the chroot runs on this machine's hardware).
        run_noted(
            exec,
            &["dracut", "-f", "--no-hostonly", &image, k],
            progress,
        )?;
        Ok(())
    }
}

/// The whole file, regenerated (it is ours).
pub fn conf(ctx: &ConvertContext) -> String {
    format!(
        "# Written by hotclone: drivers the VM needs at boot.\nadd_drivers+=\" {} \"\n",
        ctx.drivers.join(" ")
    )
}
