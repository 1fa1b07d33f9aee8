//! GRUB 2: `/etc/default/grub` gets the kernel options; the real
//! `grub.cfg` is regenerated in the chroot by the guest's `update-grub` or
//! `grub2-mkconfig`, which finds the root by `/dev/disk/by-uuid` (the
//! chroot provides those links).

use std::path::Path;

use super::{edit_cmdline, run_noted, Bootloader};
use crate::convert::chroot::ChrootExec;
use crate::convert::{
    map_lines, ConvertContext, ConvertError, FileAction, FilePattern, FileRewriter,
};
use crate::probe::DistroFamily;
use crate::progress::Progress;

pub struct Grub2;

impl Grub2 {
    /// Debian names the tools grub-*, Red Hat and SUSE grub2-*.
    fn debian_style(ctx: &ConvertContext) -> bool {
        ctx.guest.family == DistroFamily::Debian
    }
    fn cfg_path(ctx: &ConvertContext) -> &'static str {
        if Self::debian_style(ctx) {
            "boot/grub/grub.cfg"
        } else {
            "boot/grub2/grub.cfg"
        }
    }
}

impl FileRewriter for Grub2 {
    fn name(&self) -> &'static str {
        "grub2"
    }
    fn files(&self) -> &'static [FilePattern] {
        &[FilePattern {
            pattern: "etc/default/grub",
            create: false,
        }]
    }
    fn rewrite(&self, _path: &str, text: &str, ctx: &ConvertContext) -> FileAction {
        FileAction::from_text(text, rewrite_default(text, ctx))
    }
}

impl Bootloader for Grub2 {
    fn as_rewriter(&self) -> &dyn FileRewriter {
        self
    }
    fn device_patterns(&self) -> &'static [&'static str] {
        &["root=", "resume="]
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
        let tool = if Self::debian_style(ctx) {
            "grub-install"
        } else {
            "grub2-install"
        };
        run_noted(
            exec,
            &[tool, "--target=i386-pc", "--recheck", disk],
            progress,
        )?;
        Ok(())
    }
    fn update(
        &self,
        exec: &mut dyn ChrootExec,
        ctx: &ConvertContext,
        progress: &mut dyn Progress,
    ) -> Result<(), ConvertError> {
        let cfg = format!("/{}", Self::cfg_path(ctx));
        if Self::debian_style(ctx) && exec.root().join("usr/sbin/update-grub").exists() {
            run_noted(exec, &["update-grub"], progress)?;
        } else {
            let tool = if Self::debian_style(ctx) {
                "grub-mkconfig"
            } else {
                "grub2-mkconfig"
            };
            run_noted(exec, &[tool, "-o", &cfg], progress)?;
        }
        Ok(())
    }
    fn verify(&self, root: &Path, ctx: &ConvertContext) -> Result<(), ConvertError> {
        let rel = Self::cfg_path(ctx);
        let path = root.join(rel);
        let uuid = ctx.root().map(|r| r.uuid.clone()).unwrap_or_default();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConvertError::Verify(format!("/{rel} was not written ({e})")))?;
        let want = format!("root=UUID={uuid}");
        if !text.contains(&want) {
            let found: Vec<&str> = text
                .split_whitespace()
                .filter(|t| t.starts_with("root="))
                .collect();
            return Err(ConvertError::Verify(format!(
                "/{rel} does not boot the new root: no {want} (it has {}). grub-mkconfig only writes UUIDs when /dev/disk/by-uuid/{uuid} exists in the chroot and GRUB_DISABLE_LINUX_UUID is not true",
                if found.is_empty() { "no root= at all".to_string() } else { found.join(", ") }
            )));
        }
        Ok(())
    }
}

/// The pure rewrite of `/etc/default/grub`.
pub fn rewrite_default(text: &str, ctx: &ConvertContext) -> String {
    let mut seen_cmdline = false;
    let mut out = map_lines(text, |line| {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        let (export, body) = match t.strip_prefix("export ") {
            Some(b) => ("export ", b),
            None => ("", t),
        };
        for (key, add) in [
            ("GRUB_CMDLINE_LINUX=", true),
            ("GRUB_CMDLINE_LINUX_DEFAULT=", false),
        ] {
            if let Some(value) = body.strip_prefix(key) {
                if add {
                    seen_cmdline = true;
                }
                return vec![format!(
                    "{indent}{export}{key}{}",
                    edit_value(value, ctx, add)
                )];
            }
        }
        if let Some(v) = body.strip_prefix("GRUB_DISABLE_LINUX_UUID=") {
            if v.trim_matches(|c| c == '"' || c == '\'') == "true" {
                return vec![format!("# hotclone: the clone boots by UUID: {t}")];
            }
        }
        vec![line.to_string()]
    });
    if !seen_cmdline {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let tokens = edit_cmdline(&[], ctx, true);
        out.push_str(&format!(
            "# hotclone: kernel options for the VM\nGRUB_CMDLINE_LINUX=\"{}\"\n",
            tokens.join(" ")
        ));
    }
    out
}

/// Edit a shell value (`"..."`, `'...'` or bare), keeping its quoting and
/// anything after the closing quote (a comment).
fn edit_value(value: &str, ctx: &ConvertContext, add: bool) -> String {
    let (quote, inner, rest) = match value.chars().next() {
        Some(q @ ('"' | '\'')) => match value[1..].find(q) {
            Some(end) => (Some(q), &value[1..1 + end], &value[2 + end..]),
            None => (Some(q), &value[1..], ""),
        },
        _ => {
            let end = value.find(char::is_whitespace).unwrap_or(value.len());
            (None, &value[..end], &value[end..])
        }
    };
    let tokens: Vec<String> = inner.split_whitespace().map(str::to_string).collect();
    let edited = edit_cmdline(&tokens, ctx, add);
    if edited == tokens {
        return value.to_string();
    }
    let q = quote.unwrap_or('"');
    format!("{q}{}{q}{rest}", edited.join(" "))
}
