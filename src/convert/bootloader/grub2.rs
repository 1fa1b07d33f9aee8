//! GRUB 2: `/etc/default/grub` gets the kernel options; the real
//! `grub.cfg` is regenerated in the chroot by the guest's `update-grub` or
//! `grub2-mkconfig`, which finds the root by `/dev/disk/by-uuid` (the
//! chroot provides those links).
//!
//! A guest without `/etc/default/grub` (GRUB from `grub-pc-bin` alone, as
//! on many minimal and hoster-built images) gets one holding just the
//! kernel options: grub-mkconfig reads that file when it exists, so the
//! VM's interface naming and console reach the kernel line either way.
//! [`Grub2::verify`] reads the regenerated `grub.cfg` back and fails,
//! naming the line, when a Linux entry lacks the new root or an option the
//! conversion relies on.

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
            create: true,
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
        let text = std::fs::read_to_string(root.join(rel))
            .map_err(|e| ConvertError::Verify(format!("/{rel} was not written ({e})")))?;
        let uuid = ctx.root().map(|r| r.uuid.clone()).unwrap_or_default();
        check_linux_entries(rel, &text, &uuid, &ctx.cmdline_add).map_err(ConvertError::Verify)
    }
}

/// Every Linux entry of a generated `grub.cfg` (its `linux`, `linux16` or
/// `linuxefi` lines) must boot the new root (`root=UUID=uuid`) with the
/// options the conversion relies on (`required`, consoles aside: a source
/// that names its own keeps them). Err names the file, the line and what
/// it lacks.
pub fn check_linux_entries(
    rel: &str,
    text: &str,
    uuid: &str,
    required: &[String],
) -> Result<(), String> {
    let want_root = format!("root=UUID={uuid}");
    let mut entries = 0;
    for (n, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        if !matches!(words.next(), Some("linux" | "linux16" | "linuxefi")) {
            continue;
        }
        let image = words.next().unwrap_or_default();
        if image.contains("memtest") {
            // Not Linux: memtest86+ takes no kernel options.
            continue;
        }
        entries += 1;
        let args: Vec<&str> = words.collect();
        let mut missing: Vec<&str> = Vec::new();
        if !args.contains(&want_root.as_str()) {
            missing.push(&want_root);
        }
        missing.extend(
            required
                .iter()
                .filter(|o| !o.starts_with("console="))
                .filter(|o| !args.contains(&o.as_str()))
                .map(String::as_str),
        );
        if !missing.is_empty() {
            let root_found: Vec<&&str> = args.iter().filter(|a| a.starts_with("root=")).collect();
            return Err(format!(
                "/{rel} line {}: the kernel line lacks {} (it has {}); the VM would not boot this root or would name its NIC otherwise. grub-mkconfig writes root=UUID only when /dev/disk/by-uuid/{uuid} exists in the chroot and GRUB_DISABLE_LINUX_UUID is not true, and takes options from GRUB_CMDLINE_LINUX in /etc/default/grub",
                n + 1,
                missing.join(", "),
                if root_found.is_empty() {
                    "no root= at all".to_string()
                } else {
                    root_found.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
                }
            ));
        }
    }
    if entries == 0 {
        return Err(format!(
            "/{rel} has no Linux entry (no linux line): the VM has nothing to boot"
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::check_linux_entries;

    const UUID: &str = "0b1e2a77-0000-4000-8000-000000000001";

    fn opts() -> Vec<String> {
        ["net.ifnames=0", "console=ttyS0,115200"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn a_grub_cfg_whose_entries_carry_the_root_and_options_passes() {
        let cfg = format!(
            "menuentry 'Debian' {{\n\tlinux\t/boot/vmlinuz-6.1.0-18-amd64 root=UUID={UUID} ro net.ifnames=0 quiet\n\tinitrd\t/boot/initrd.img-6.1.0-18-amd64\n}}\n"
        );
        assert_eq!(
            check_linux_entries("boot/grub/grub.cfg", &cfg, UUID, &opts()),
            Ok(())
        );
    }

    /// Regression (issue 13): with no /etc/default/grub the options never
    /// reached the kernel line, the VM named its NIC ens3, and the clone
    /// came up offline while conversion and verify said all was well.
    #[test]
    fn regression_an_entry_without_the_interface_naming_option_is_flagged_with_its_line() {
        let cfg = format!(
            "set default=0\nmenuentry 'Debian' {{\n\tlinux\t/boot/vmlinuz-6.1.0-18-amd64 root=UUID={UUID} ro quiet\n}}\n"
        );
        let err = check_linux_entries("boot/grub/grub.cfg", &cfg, UUID, &opts()).unwrap_err();
        assert!(
            err.starts_with("/boot/grub/grub.cfg line 3: the kernel line lacks net.ifnames=0 "),
            "{err}"
        );
    }

    #[test]
    fn memtest_entries_are_not_linux_and_need_no_options() {
        let cfg = format!(
            "menuentry 'Debian' {{\n linux /vmlinuz root=UUID={UUID} net.ifnames=0\n}}\nmenuentry 'Memory test (memtest86+.bin)' {{\n linux16 /boot/memtest86+.bin\n}}\n"
        );
        assert_eq!(
            check_linux_entries("boot/grub/grub.cfg", &cfg, UUID, &opts()),
            Ok(())
        );
    }

    #[test]
    fn an_entry_booting_the_old_root_or_no_entry_at_all_is_flagged() {
        let cfg = "menuentry 'x' {\n linux /vmlinuz root=/dev/sda1 ro net.ifnames=0\n}\n";
        let err = check_linux_entries("boot/grub/grub.cfg", cfg, UUID, &opts()).unwrap_err();
        assert!(
            err.contains(&format!("lacks root=UUID={UUID} (it has root=/dev/sda1)")),
            "{err}"
        );
        let err = check_linux_entries("boot/grub/grub.cfg", "set timeout=5\n", UUID, &opts())
            .unwrap_err();
        assert!(err.contains("no Linux entry"), "{err}");
    }
}
