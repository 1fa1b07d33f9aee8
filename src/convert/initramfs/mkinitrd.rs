//! Red Hat's mkinitrd (RHEL 5 and older, Fedora 8-11): `/etc/modprobe.conf`
//! gets `alias scsi_hostadapterN virtio_blk` (a Xen guest's `xenblk` alias
//! becomes it) and network aliases to `virtio_net`; the image is rebuilt with `mkinitrd -f --with=...`.

use super::Initramfs;
use crate::convert::chroot::ChrootExec;
use crate::convert::{map_lines, ConvertContext, ConvertError, FileRewriter};
use crate::progress::Progress;

pub struct Mkinitrd;

pub const MODPROBE_CONF: &str = "etc/modprobe.conf";

/// Xen guests' block drivers (`alias scsi_hostadapter xenblk`).
const XEN_BLOCK: &[&str] = &[
    "xenblk",
    "xen-vbd",
    "xen_vbd",
    "xen-blkfront",
    "xen_blkfront",
];

one_file_rewriter!(Mkinitrd, "mkinitrd", MODPROBE_CONF, true, rewrite_modprobe);

impl Initramfs for Mkinitrd {
    fn as_rewriter(&self) -> &dyn FileRewriter {
        self
    }
    fn rebuild(
        &self,
        exec: &mut dyn ChrootExec,
        ctx: &ConvertContext,
        progress: &mut dyn Progress,
    ) -> Result<(), ConvertError> {
        super::run_args(exec, &mkinitrd_args(ctx), progress)
    }
}

/// `mkinitrd -f --with=virtio_pci ... /boot/initrd-K.img K`.
pub fn mkinitrd_args(ctx: &ConvertContext) -> Vec<String> {
    let k = &ctx.guest.kernel;
    let mut args = vec!["mkinitrd".to_string(), "-f".to_string()];
    args.extend(ctx.drivers.iter().map(|d| format!("--with={d}")));
    args.push(format!("/boot/initrd-{k}.img"));
    args.push(k.clone());
    args
}

/// Network aliases (`alias eth0 e1000`) name virtio_net; the block driver
/// is added as the next `scsi_hostadapter` alias unless one names it.
pub fn rewrite_modprobe(text: &str, ctx: &ConvertContext) -> String {
    let mut adapters = 0usize;
    let mut has_virtio_blk = false;
    let mut out = map_lines(text, |line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 3 && fields[0] == "alias" && !line.trim_start().starts_with('#') {
            if fields[1].starts_with("scsi_hostadapter") {
                adapters += 1;
                // A Xen guest's block driver is not in a non-Xen kernel, and
                // mkinitrd aborts on a module it cannot find.
                if XEN_BLOCK.contains(&fields[2]) && ctx.drivers.iter().any(|d| d == "virtio_blk") {
                    has_virtio_blk = true;
                    return vec![format!("alias {} virtio_blk", fields[1])];
                }
                has_virtio_blk |= fields[2] == "virtio_blk";
            }
            let is_nic = fields[1].starts_with("eth")
                && fields[1][3..].chars().all(|c| c.is_ascii_digit())
                && fields[1].len() > 3;
            if is_nic && fields[2] != "virtio_net" && ctx.drivers.iter().any(|d| d == "virtio_net")
            {
                return vec![format!("alias {} virtio_net", fields[1])];
            }
        }
        vec![line.to_string()]
    });
    if !has_virtio_blk && ctx.drivers.iter().any(|d| d == "virtio_blk") {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let name = if adapters == 0 {
            "scsi_hostadapter".to_string()
        } else {
            format!("scsi_hostadapter{adapters}")
        };
        out.push_str(&format!("alias {name} virtio_blk\n"));
    }
    out
}
