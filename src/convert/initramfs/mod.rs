//! Initramfs tools behind one trait: make sure the VM's drivers are in the
//! image, and rebuild it for the kernel the clone boots. Which tool a guest
//! has depends on its distribution and version, not the family alone
//! ([`crate::convert::family::select`]): Red Hat's mkinitrd (RHEL 5 and
//! older, Fedora 8-11), SUSE's own mkinitrd (SLES 10-11, openSUSE up to
//! 13.1), dracut (RHEL 6+, Fedora 12+, SLES 12+, openSUSE 13.2+/Leap),
//! initramfs-tools (Debian, Ubuntu).

pub mod dracut;
pub mod initramfs_tools;
pub mod mkinitrd;
pub mod suse_mkinitrd;

use super::chroot::ChrootExec;
use super::{ConvertContext, ConvertError, FileRewriter};
use crate::progress::Progress;

pub trait Initramfs: FileRewriter {
    fn as_rewriter(&self) -> &dyn FileRewriter;
    /// Rebuild the initramfs for `ctx.guest.kernel` in the chroot.
    fn rebuild(
        &self,
        exec: &mut dyn ChrootExec,
        ctx: &ConvertContext,
        progress: &mut dyn Progress,
    ) -> Result<(), ConvertError>;
}

/// Whether a driver is already listed: the first word of a non-comment
/// line, `-` and `_` alike.
pub(crate) fn listed(text: &str, driver: &str) -> bool {
    let want = driver.replace('-', "_");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .any(|w| w.replace('-', "_") == want)
}

/// Run an initramfs tool's argument list in the chroot (its output to the
/// progress notes; a failure names the command).
pub(crate) fn run_args(
    exec: &mut dyn ChrootExec,
    args: &[String],
    progress: &mut dyn Progress,
) -> Result<(), ConvertError> {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    super::bootloader::run_noted(exec, &argv, progress).map(|_| ())
}
