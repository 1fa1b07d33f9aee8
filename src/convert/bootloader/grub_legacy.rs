//! GRUB legacy (0.97): `menu.lst` (Debian, SUSE) or `grub.conf` (Red Hat).
//!
//! `kernel` (and Xen `module`) lines get `root=UUID=<new>` and the extra
//! options; Debian's `# kopt=` magic comment too, so the guest's own
//! `update-grub` regenerates the same. `(hd0,0)` device names,
//! `splashimage` and `hiddenmenu` are left alone.
//!
//! Installing runs the guest's `grub` shell in batch mode with a device map
//! naming the target disk `(hd0)`.

use std::path::Path;

use super::{edit_cmdline, run_noted, Bootloader};
use crate::convert::chroot::ChrootExec;
use crate::convert::{
    map_lines, ConvertContext, ConvertError, FileAction, FilePattern, FileRewriter,
};
use crate::progress::Progress;

pub struct GrubLegacy;

const FILES: &[FilePattern] = &[
    FilePattern {
        pattern: "boot/grub/menu.lst",
        create: false,
    },
    FilePattern {
        pattern: "boot/grub/grub.conf",
        create: false,
    },
];

impl FileRewriter for GrubLegacy {
    fn name(&self) -> &'static str {
        "grub-legacy"
    }
    fn files(&self) -> &'static [FilePattern] {
        FILES
    }
    fn rewrite(&self, _path: &str, text: &str, ctx: &ConvertContext) -> FileAction {
        FileAction::from_text(text, rewrite_menu(text, ctx))
    }
}

impl Bootloader for GrubLegacy {
    fn as_rewriter(&self) -> &dyn FileRewriter {
        self
    }
    fn device_patterns(&self) -> &'static [&'static str] {
        &["root=", "resume=", "# kopt="]
    }
    fn install(
        &self,
        exec: &mut dyn ChrootExec,
        ctx: &ConvertContext,
        progress: &mut dyn Progress,
    ) -> Result<(), ConvertError> {
        let disk = ctx.disk_device.as_deref().ok_or_else(|| {
            ConvertError::Context("no target disk device to install GRUB into".into())
        })?;
        let boot = ctx
            .filesystems
            .iter()
            .find(|f| f.mount_point == "/boot")
            .or_else(|| ctx.root());
        let part = boot.and_then(|b| b.partition).ok_or_else(|| {
            ConvertError::Context(
                "grub-legacy needs the partition number of /boot (or /) in the convert context"
                    .into(),
            )
        })?;
        let map = exec.root().join("boot/grub/device.map");
        std::fs::write(&map, format!("(hd0)\t{disk}\n")).map_err(|error| ConvertError::Io {
            path: map.clone(),
            error,
        })?;
        let script = format!(
            "printf 'device (hd0) {disk}\\nroot (hd0,{})\\nsetup (hd0)\\nquit\\n' | grub --batch --no-floppy --device-map=/boot/grub/device.map",
            part.saturating_sub(1)
        );
        let out = run_noted(exec, &["sh", "-c", &script], progress)?;
        if !out.contains("succeeded") {
            return Err(ConvertError::Verify(format!(
                "grub setup (hd0) did not report success:\n{out}"
            )));
        }
        Ok(())
    }
    fn update(
        &self,
        exec: &mut dyn ChrootExec,
        _ctx: &ConvertContext,
        progress: &mut dyn Progress,
    ) -> Result<(), ConvertError> {
        // Debian's update-grub regenerates menu.lst from `# kopt=`; Red Hat
        // has no generator (grubby edits grub.conf, which we rewrote).
        if exec.root().join("usr/sbin/update-grub").exists()
            && exec.root().join("boot/grub/menu.lst").exists()
        {
            run_noted(exec, &["update-grub"], progress)?;
        }
        Ok(())
    }
    fn verify(&self, root: &Path, ctx: &ConvertContext) -> Result<(), ConvertError> {
        let uuid = ctx.root().map(|r| r.uuid.clone()).unwrap_or_default();
        for f in FILES {
            if let Ok(text) = std::fs::read_to_string(root.join(f.pattern)) {
                let kernels: Vec<&str> = text.lines().filter(|l| is_kernel_line(l)).collect();
                if kernels.is_empty()
                    || kernels
                        .iter()
                        .any(|l| !l.contains(&format!("root=UUID={uuid}")))
                {
                    return Err(ConvertError::Verify(format!(
                        "/{}: not every kernel line boots root=UUID={uuid}",
                        f.pattern
                    )));
                }
                return Ok(());
            }
        }
        Err(ConvertError::Verify(
            "no menu.lst or grub.conf in /boot/grub".into(),
        ))
    }
}

fn is_kernel_line(line: &str) -> bool {
    let t = line.trim_start();
    (t.starts_with("kernel") || t.starts_with("module")) && t.contains("root=")
}

/// The pure rewrite of menu.lst / grub.conf.
pub fn rewrite_menu(text: &str, ctx: &ConvertContext) -> String {
    map_lines(text, |line| {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        // Debian's magic comments: `# kopt=root=/dev/hda1 ro`, `# kopt_2_6=...`
        if let Some(rest) = t.strip_prefix("# kopt") {
            if let Some((suffix, value)) = rest.split_once('=') {
                if !suffix.contains(char::is_whitespace) {
                    let tokens: Vec<String> =
                        value.split_whitespace().map(str::to_string).collect();
                    return vec![format!(
                        "{indent}# kopt{suffix}={}",
                        edit_cmdline(&tokens, ctx, true).join(" ")
                    )];
                }
            }
            return vec![line.to_string()];
        }
        let word = t
            .split(|c: char| c.is_whitespace() || c == '=')
            .next()
            .unwrap_or("");
        let is_kernel = word == "kernel" || (word == "module" && t.contains("root="));
        if !is_kernel {
            return vec![line.to_string()];
        }
        // kernel [--options] /vmlinuz-X args...
        let after = &t[word.len()..];
        let sep_len = after.len()
            - after
                .trim_start_matches(|c: char| c.is_whitespace() || c == '=')
                .len();
        let sep = &after[..sep_len];
        let mut parts = after[sep_len..].split_whitespace();
        let mut head = Vec::new();
        for p in parts.by_ref() {
            head.push(p.to_string());
            if !p.starts_with("--") {
                break;
            }
        }
        let args: Vec<String> = parts.map(str::to_string).collect();
        if head.last().is_some_and(|h| h.contains("xen.gz")) {
            // The hypervisor's line; the dom0 kernel is the `module` line.
            return vec![line.to_string()];
        }
        let edited = edit_cmdline(
            &args,
            ctx,
            word == "kernel" || args.iter().any(|a| a.starts_with("root=")),
        );
        let mut all = head;
        all.extend(edited);
        vec![format!("{indent}{word}{sep}{}", all.join(" "))]
    })
}
