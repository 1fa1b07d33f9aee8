//! Debian's initramfs-tools: list the drivers in
//! `/etc/initramfs-tools/modules` (one per line, comments kept, idempotent),
//! point `RESUME=` at the new swap (or `none`), then
//! `update-initramfs -u -k K` (`-c` when the image does not exist yet).

use super::{listed, Initramfs};
use crate::convert::bootloader::run_noted;
use crate::convert::chroot::ChrootExec;
use crate::convert::{
    map_lines, ConvertContext, ConvertError, FileAction, FilePattern, FileRewriter,
};
use crate::progress::Progress;

pub struct InitramfsTools;

pub const MODULES: &str = "etc/initramfs-tools/modules";
pub const RESUME: &str = "etc/initramfs-tools/conf.d/resume";

impl FileRewriter for InitramfsTools {
    fn name(&self) -> &'static str {
        "initramfs-tools"
    }
    fn files(&self) -> &'static [FilePattern] {
        &[
            FilePattern {
                pattern: MODULES,
                create: true,
            },
            FilePattern {
                pattern: RESUME,
                create: false,
            },
        ]
    }
    fn rewrite(&self, path: &str, text: &str, ctx: &ConvertContext) -> FileAction {
        let new = if path == RESUME {
            rewrite_resume(text, ctx)
        } else {
            rewrite_modules(text, ctx)
        };
        FileAction::from_text(text, new)
    }
}

impl Initramfs for InitramfsTools {
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
        let exists = exec.root().join(format!("boot/initrd.img-{k}")).exists();
        run_noted(
            exec,
            &[
                "update-initramfs",
                if exists { "-u" } else { "-c" },
                "-k",
                k,
            ],
            progress,
        )?;
        Ok(())
    }
}

/// Append the drivers not yet listed, under a hotclone comment.
pub fn rewrite_modules(text: &str, ctx: &ConvertContext) -> String {
    let missing: Vec<&String> = ctx.drivers.iter().filter(|d| !listed(text, d)).collect();
    if missing.is_empty() {
        return text.to_string();
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("# hotclone: drivers for the VM\n");
    for d in missing {
        out.push_str(d);
        out.push('\n');
    }
    out
}

/// `RESUME=` names the new swap, or `none` when the old device is gone
/// (else the initramfs waits for it at every boot).
pub fn rewrite_resume(text: &str, ctx: &ConvertContext) -> String {
    map_lines(text, |line| {
        let t = line.trim_start();
        match t.strip_prefix("RESUME=") {
            Some(v) => {
                let v = v.trim().trim_matches('"');
                if v == "none" || v == "auto" {
                    return vec![line.to_string()];
                }
                match ctx.swap_for(v) {
                    Some(s) => vec![format!("RESUME=UUID={}", s.uuid)],
                    None => vec![format!("RESUME=none")],
                }
            }
            None => vec![line.to_string()],
        }
    })
}
