//! GRUB legacy (0.97): `menu.lst` (Debian, SUSE) or `grub.conf` (Red Hat).
//!
//! `kernel` (and Xen `module`) lines get `root=UUID=<new>` and the extra
//! options; Debian's `# kopt=` magic comment too, so the guest's own
//! `update-grub` regenerates the same. `(hd0,0)` device names,
//! `splashimage` and `hiddenmenu` are left alone.
//!
//! Installing runs the guest's `grub` shell in batch mode with a device map
//! naming the target disk `(hd0)`.
//!
//! Verifying checks every kernel line boots the new root, then reads the
//! default entry ([`default_entry`]) and checks its kernel and initrd
//! ([`crate::convert::initrd`]).

use std::path::Path;

use super::{edit_cmdline, run_noted, Bootloader};
use crate::convert::chroot::ChrootExec;
use crate::convert::initrd::{check_boot_entry, BootEntry};
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
    fn verify(&self, root: &Path, ctx: &ConvertContext) -> Result<Vec<String>, ConvertError> {
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
                let cfg = format!("/{}", f.pattern);
                let (entry, mut notes) = default_entry(&text);
                match entry {
                    Some(e) => notes.extend(check_boot_entry(root, ctx, &cfg, &e)?),
                    None => {
                        return Err(ConvertError::Verify(format!(
                            "{cfg} has no title entry: GRUB would stop at its prompt. Add a title with kernel and initrd lines for {}",
                            ctx.guest.kernel
                        )))
                    }
                }
                return Ok(notes);
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

/// The entry GRUB legacy boots by default, and notes on what was assumed:
/// `default N` (or `default=N`) counts `title` entries from 0; `default
/// saved` or one out of range falls back to the first entry, with a note.
/// In a Xen entry (`kernel /xen.gz`), the first `module` is the Linux
/// kernel and the second its initrd. `None` when there is no title.
pub fn default_entry(text: &str) -> (Option<BootEntry>, Vec<String>) {
    let mut entries: Vec<BootEntry> = Vec::new();
    let mut default: Option<String> = None;
    let mut xen_modules = 0;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        let word = t
            .split(|c: char| c.is_whitespace() || c == '=')
            .next()
            .unwrap_or("");
        let rest = t[word.len()..].trim_start_matches(|c: char| c.is_whitespace() || c == '=');
        let image = rest.split_whitespace().find(|p| !p.starts_with("--"));
        if word == "title" {
            entries.push(BootEntry {
                title: rest.to_string(),
                kernel: None,
                initrds: vec![],
                initrd_line: 0,
            });
            xen_modules = 0;
            continue;
        }
        let Some(e) = entries.last_mut() else {
            if word == "default" {
                default = rest.split_whitespace().next().map(str::to_string);
            }
            continue;
        };
        let Some(image) = image else { continue };
        match word {
            "kernel" if image.contains("xen.gz") => xen_modules = 1,
            "kernel" => e.kernel = Some((n + 1, image.to_string())),
            "module" if xen_modules == 1 => {
                e.kernel = Some((n + 1, image.to_string()));
                xen_modules = 2;
            }
            "initrd" | "module" if xen_modules != 1 && e.initrds.is_empty() => {
                e.initrds = vec![image.to_string()];
                e.initrd_line = n + 1;
            }
            _ => {}
        }
    }
    let mut notes = Vec::new();
    let index = match default.as_deref() {
        None => 0,
        Some(d) => match d.parse::<usize>() {
            Ok(i) if i < entries.len() => i,
            _ => {
                notes.push(format!(
                    "menu: the default entry is \"{d}\", which is not an entry's number; the boot check read the first entry's kernel and initrd"
                ));
                0
            }
        },
    };
    (entries.get(index).cloned(), notes)
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

#[cfg(test)]
mod tests {
    use super::default_entry;

    const MENU: &str = "\
default=1
timeout=5
title CentOS (2.6.18-398.el5)
	root (hd0,0)
	kernel /vmlinuz-2.6.18-398.el5 ro root=UUID=x
	initrd /initrd-2.6.18-398.el5.img
title CentOS (2.6.18-398.el5xen)
	root (hd0,0)
	kernel /xen.gz-2.6.18-398.el5
	module /vmlinuz-2.6.18-398.el5xen ro root=UUID=x
	module /initrd-2.6.18-398.el5xen.img
";

    #[test]
    fn default_n_counts_titles_and_xen_entries_take_their_modules() {
        let (e, notes) = default_entry(MENU);
        let e = e.unwrap();
        assert_eq!(e.title, "CentOS (2.6.18-398.el5xen)");
        assert_eq!(e.kernel, Some((10, "/vmlinuz-2.6.18-398.el5xen".into())));
        assert_eq!(e.initrds, vec!["/initrd-2.6.18-398.el5xen.img"]);
        assert_eq!(e.initrd_line, 11);
        assert!(notes.is_empty(), "{notes:?}");
        let (e, _) = default_entry(&MENU.replace("default=1", "default\t\t0"));
        let e = e.unwrap();
        assert_eq!(e.kernel, Some((5, "/vmlinuz-2.6.18-398.el5".into())));
        assert_eq!(e.initrds, vec!["/initrd-2.6.18-398.el5.img"]);
    }

    #[test]
    fn default_saved_or_out_of_range_falls_back_to_the_first_with_a_note() {
        for d in ["default saved", "default 5"] {
            let (e, notes) = default_entry(&MENU.replace("default=1", d));
            assert_eq!(e.unwrap().title, "CentOS (2.6.18-398.el5)");
            assert_eq!(notes.len(), 1, "{notes:?}");
        }
        assert_eq!(default_entry("default 0\ntimeout 5\n").0, None);
    }
}
