//! SUSE's own mkinitrd (SLES 10-11, openSUSE 10.x-13.1), unlike Red
//! Hat's: it takes its drivers from `/etc/sysconfig/kernel`,
//! `INITRD_MODULES` (and `DOMU_INITRD_MODULES`, added for Xen kernels).
//! The VM's drivers are appended to both (each once, the quoting and the
//! rest of the file kept; `INITRD_MODULES` is added when missing), then
//! `mkinitrd -k vmlinuz-K -i initrd-K` rebuilds the image for the kernel
//! (file names relative to /boot, as SUSE's mkinitrd takes them).
//!
//! On failure: mkinitrd's own output is reported with its command line;
//! the sysconfig file stays rewritten (a rerun changes nothing more).

use super::Initramfs;
use crate::convert::chroot::ChrootExec;
use crate::convert::{map_lines, ConvertContext, ConvertError, FileRewriter};
use crate::progress::Progress;

pub struct SuseMkinitrd;

pub const SYSCONFIG_KERNEL: &str = "etc/sysconfig/kernel";

/// The variables whose module lists get the VM's drivers.
const LISTS: &[&str] = &["INITRD_MODULES", "DOMU_INITRD_MODULES"];

one_file_rewriter!(
    SuseMkinitrd,
    "SUSE mkinitrd",
    SYSCONFIG_KERNEL,
    true,
    rewrite_sysconfig_kernel
);

impl Initramfs for SuseMkinitrd {
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

/// `mkinitrd -k vmlinuz-K -i initrd-K`.
pub fn mkinitrd_args(ctx: &ConvertContext) -> Vec<String> {
    let k = &ctx.guest.kernel;
    vec![
        "mkinitrd".into(),
        "-k".into(),
        format!("vmlinuz-{k}"),
        "-i".into(),
        format!("initrd-{k}"),
    ]
}

/// Append the drivers each list lacks; add `INITRD_MODULES` when absent.
pub fn rewrite_sysconfig_kernel(text: &str, ctx: &ConvertContext) -> String {
    let mut seen_initrd = false;
    let mut out = map_lines(text, |line| {
        let t = line.trim_start();
        let Some((key, value)) = t.split_once('=') else {
            return vec![line.to_string()];
        };
        let key = key.trim();
        if t.starts_with('#') || !LISTS.contains(&key) {
            return vec![line.to_string()];
        }
        seen_initrd |= key == "INITRD_MODULES";
        let (q, inner) = match value.trim() {
            v if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') => {
                ("\"", &v[1..v.len() - 1])
            }
            v if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') => {
                ("'", &v[1..v.len() - 1])
            }
            v => ("\"", v),
        };
        let mut words: Vec<String> = inner.split_whitespace().map(str::to_string).collect();
        let before = words.len();
        for d in &ctx.drivers {
            let want = d.replace('-', "_");
            if !words.iter().any(|w| w.replace('-', "_") == want) {
                words.push(d.clone());
            }
        }
        if words.len() == before {
            return vec![line.to_string()];
        }
        vec![format!("{key}={q}{}{q}", words.join(" "))]
    });
    if !seen_initrd {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!(
            "# hotclone: drivers for the VM\nINITRD_MODULES=\"{}\"\n",
            ctx.drivers.join(" ")
        ));
    }
    out
}
