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
//! conversion relies on; then finds the entry GRUB boots by default
//! ([`default_entry`]) and checks its kernel and initrd
//! ([`crate::convert::initrd`]).
//!
//! RHEL 8 and later (and Fedora) boot Boot Loader Specification entries:
//! grub.cfg says `blscfg`, and the kernels, initrds and options are in
//! `/boot/loader/entries/*.conf` (and RHEL 8's `kernelopts` in
//! `/boot/grub2/grubenv`), which grub2-mkconfig does not regenerate. They
//! are rewritten and checked by [`bls`]; `GRUB_CMDLINE_LINUX` gets the
//! same edits ([`super::cmdline`]: no LVM/MD activation, the VM's
//! consoles) either way.

use std::path::Path;

use super::cmdline::{is_linux_image, leftovers};
use super::{bls, edit_cmdline, run_noted, Bootloader};
use crate::convert::chroot::ChrootExec;
use crate::convert::initrd::{check_boot_entry, BootEntry};
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
        &[
            FilePattern {
                pattern: "etc/default/grub",
                create: true,
            },
            FilePattern {
                pattern: "boot/loader/entries/*",
                create: false,
            },
            FilePattern {
                pattern: bls::GRUBENV,
                create: false,
            },
        ]
    }
    fn rewrite(&self, path: &str, text: &str, ctx: &ConvertContext) -> FileAction {
        let new = if path.starts_with(bls::ENTRIES_DIR) {
            bls::rewrite_entry(path, text, ctx)
        } else if path == bls::GRUBENV {
            bls::rewrite_grubenv(text, ctx)
        } else {
            rewrite_default(text, ctx)
        };
        FileAction::from_text(text, new)
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
        let disk = super::install_disk(ctx)?;
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
    fn verify(&self, root: &Path, ctx: &ConvertContext) -> Result<Vec<String>, ConvertError> {
        let rel = Self::cfg_path(ctx);
        let text = std::fs::read_to_string(root.join(rel))
            .map_err(|e| ConvertError::Verify(format!("/{rel} was not written ({e})")))?;
        let uuid = ctx.root().map(|r| r.uuid.clone()).unwrap_or_default();
        if bls::uses_blscfg(&text) {
            // The menu is the BLS entries (RHEL 8+); entries grub.cfg has
            // of its own are checked too.
            if has_linux_entry(&text) {
                check_linux_entries(rel, &text, &uuid, &ctx.cmdline_add)
                    .map_err(ConvertError::Verify)?;
            }
            return bls::verify(root, ctx, &text);
        }
        verify_menu(root, ctx, rel, &text)
    }
}

/// The boot check of a GRUB 2 menu (not BLS): every Linux entry boots the
/// new root with the conversion's options ([`check_linux_entries`]), and
/// the default entry's kernel and initrd are on the disk with the VM's
/// drivers. `rel` is the menu's path relative to the root.
pub(crate) fn verify_menu(
    root: &Path,
    ctx: &ConvertContext,
    rel: &str,
    text: &str,
) -> Result<Vec<String>, ConvertError> {
    let uuid = ctx.root().map(|r| r.uuid.clone()).unwrap_or_default();
    check_linux_entries(rel, text, &uuid, &ctx.cmdline_add).map_err(ConvertError::Verify)?;
    let cfg = format!("/{rel}");
    let (entry, mut notes) = default_entry(text);
    match entry {
        Some(e) => notes.extend(check_boot_entry(root, ctx, &cfg, &e)?),
        None => {
            return Err(ConvertError::Verify(format!(
                "{cfg} has no menuentry: GRUB would stop at its prompt. Check GRUB_DISABLE_* settings in /etc/default/grub and rerun grub-mkconfig in the clone"
            )))
        }
    }
    Ok(notes)
}

/// Whether a grub.cfg has a `linux` line of its own.
fn has_linux_entry(text: &str) -> bool {
    text.lines().any(|l| {
        matches!(
            l.split_whitespace().next(),
            Some("linux" | "linux16" | "linuxefi")
        )
    })
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
        if !is_linux_image(image) {
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
        let left = leftovers(&args);
        if !left.is_empty() {
            return Err(format!(
                "/{rel} line {}: the kernel line still has {}, which the VM has not (its filesystems are plain partitions, its consoles ttyS0 and tty0): dracut would wait for volumes that do not exist. Remove them from GRUB_CMDLINE_LINUX in /etc/default/grub and rerun grub-mkconfig in the clone",
                n + 1,
                left.join(", ")
            ));
        }
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

/// A top-level item of GRUB's menu: an entry, or a submenu of entries.
#[derive(Debug)]
enum Item {
    Entry(BootEntry),
    Submenu(Vec<BootEntry>),
}

/// A `{ ... }` block being read.
enum Block {
    Entry(BootEntry),
    Submenu(Vec<BootEntry>),
    /// A function or anything else in braces.
    Other,
}

/// The entry a generated `grub.cfg` boots by default, and notes on what
/// was assumed. `set default="N"` (or `"N>M"`, entry M of submenu N) picks
/// it; the last such value that is a literal wins (grub-mkconfig writes
/// `${next_entry}` in one branch and the real default in the other). A
/// default GRUB resolves at boot (`${saved_entry}`, a title or an id) or
/// one out of range falls back to the first entry, with a note. `None`
/// when there is no menuentry at all.
pub fn default_entry(text: &str) -> (Option<BootEntry>, Vec<String>) {
    let (items, defaults) = menu(text);
    let mut notes = Vec::new();
    let first = |items: &[Item]| match items.first()? {
        Item::Entry(e) => Some(e.clone()),
        Item::Submenu(v) => v.first().cloned(),
    };
    let literal = defaults.iter().rev().find(|d| !d.starts_with('$'));
    let Some(value) = literal.or(defaults.last()) else {
        return (first(&items), notes);
    };
    let mut fallback = |why: String| {
        notes.push(format!(
            "grub.cfg: {why}; the boot check read the first entry's kernel and initrd"
        ));
        first(&items)
    };
    let (top, sub) = match value.split_once('>') {
        Some((t, s)) => (t, Some(s)),
        None => (value.as_str(), None),
    };
    let Ok(n) = top.parse::<usize>() else {
        let why = format!("the default entry is \"{value}\", which GRUB resolves at boot");
        return (fallback(why), notes);
    };
    let picked = match (items.get(n), sub.map(str::parse::<usize>)) {
        (Some(Item::Entry(e)), None) => Some(e.clone()),
        (Some(Item::Submenu(v)), Some(Ok(m))) => v.get(m).cloned(),
        _ => None,
    };
    match picked {
        Some(e) => (Some(e), notes),
        None => {
            let why = format!("the default entry \"{value}\" is not an entry of the menu");
            (fallback(why), notes)
        }
    }
}

/// The menu's top-level items and every `set default=` value (unquoted),
/// in file order.
fn menu(text: &str) -> (Vec<Item>, Vec<String>) {
    let mut items = Vec::new();
    let mut defaults = Vec::new();
    let mut stack: Vec<Block> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        let mut words = t.split_whitespace();
        let word = words.next().unwrap_or_default();
        if t.ends_with('{') {
            stack.push(match word {
                "menuentry" => Block::Entry(BootEntry {
                    title: quoted(t),
                    kernel: None,
                    initrds: vec![],
                    initrd_line: 0,
                }),
                "submenu" => Block::Submenu(vec![]),
                _ => Block::Other,
            });
            continue;
        }
        if t == "}" {
            close(&mut stack, &mut items);
            continue;
        }
        let entry = stack.iter_mut().rev().find_map(|b| match b {
            Block::Entry(e) => Some(e),
            _ => None,
        });
        match (entry, word) {
            (Some(e), "linux" | "linux16" | "linuxefi") if e.kernel.is_none() => {
                e.kernel = words.next().map(|p| (n + 1, p.to_string()));
            }
            (Some(e), "initrd" | "initrd16" | "initrdefi") if e.initrds.is_empty() => {
                e.initrds = words.map(str::to_string).collect();
                e.initrd_line = n + 1;
            }
            (None, "set") => {
                if let Some(v) = t["set".len()..].trim_start().strip_prefix("default=") {
                    defaults.push(v.trim().trim_matches(|c| c == '"' || c == '\'').to_string());
                }
            }
            _ => {}
        }
    }
    (items, defaults)
}

/// End the innermost block: an entry joins the enclosing submenu, or the
/// top level; a submenu joins the top level (a nested one, its parent).
fn close(stack: &mut Vec<Block>, items: &mut Vec<Item>) {
    match stack.pop() {
        Some(Block::Entry(e)) => match submenu_of(stack) {
            Some(v) => v.push(e),
            None => items.push(Item::Entry(e)),
        },
        Some(Block::Submenu(entries)) => match submenu_of(stack) {
            Some(v) => v.extend(entries),
            None => items.push(Item::Submenu(entries)),
        },
        Some(Block::Other) | None => {}
    }
}

fn submenu_of(stack: &mut [Block]) -> Option<&mut Vec<BootEntry>> {
    stack.iter_mut().rev().find_map(|b| match b {
        Block::Submenu(v) => Some(v),
        _ => None,
    })
}

/// The first quoted string of a line (a menuentry's title).
fn quoted(line: &str) -> String {
    let Some(start) = line.find(['\'', '"']) else {
        return String::new();
    };
    let q = line[start..].chars().next().unwrap_or('\'');
    let rest = &line[start + 1..];
    rest[..rest.find(q).unwrap_or(rest.len())].to_string()
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
    use super::{check_linux_entries, default_entry};

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

    /// What grub-mkconfig writes on Debian 12 (trimmed): a function, the
    /// next_entry/default dance, an entry, a submenu of two.
    const DEBIAN_CFG: &str = "\
function load_video {
  insmod all_video
}
if [ \"${next_entry}\" ] ; then
   set default=\"${next_entry}\"
   set next_entry=
else
   set default=\"DEFAULT\"
fi
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-x' {
	load_video
	if [ x$feature_platform_search_hint = xy ]; then
	  search --no-floppy --fs-uuid --set=root x
	fi
	echo	'Loading Linux 6.1.0-18-amd64 ...'
	linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=x ro quiet
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-6.1.0-18-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-x' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-18-amd64' --class debian {
		linux	/vmlinuz-6.1.0-18-amd64 root=UUID=x ro
		initrd	/intel-ucode.img /initrd.img-6.1.0-18-amd64
	}
	menuentry 'Debian GNU/Linux, with Linux 5.10.0-28-amd64' --class debian {
		linux	/vmlinuz-5.10.0-28-amd64 root=UUID=x ro
	}
}
";

    fn with_default(value: &str) -> String {
        DEBIAN_CFG.replace("DEFAULT", value)
    }

    #[test]
    fn the_default_entry_is_the_literal_set_default() {
        let (e, notes) = default_entry(&with_default("0"));
        let e = e.unwrap();
        assert_eq!(e.title, "Debian GNU/Linux");
        assert_eq!(e.kernel, Some((16, "/boot/vmlinuz-6.1.0-18-amd64".into())));
        assert_eq!(e.initrds, vec!["/boot/initrd.img-6.1.0-18-amd64"]);
        assert_eq!(e.initrd_line, 18);
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn a_submenu_entry_is_picked_by_n_greater_than_m() {
        let (e, notes) = default_entry(&with_default("1>0"));
        let e = e.unwrap();
        assert_eq!(e.title, "Debian GNU/Linux, with Linux 6.1.0-18-amd64");
        assert_eq!(
            e.initrds,
            vec!["/intel-ucode.img", "/initrd.img-6.1.0-18-amd64"]
        );
        assert!(notes.is_empty(), "{notes:?}");
        let (e, _) = default_entry(&with_default("1>1"));
        let e = e.unwrap();
        assert_eq!(e.kernel, Some((26, "/vmlinuz-5.10.0-28-amd64".into())));
        assert!(e.initrds.is_empty());
    }

    #[test]
    fn a_default_resolved_at_boot_falls_back_to_the_first_entry_with_a_note() {
        for value in ["saved", "gnulinux-simple-x", "Debian GNU/Linux", "7", "1"] {
            let (e, notes) = default_entry(&with_default(value));
            assert_eq!(e.unwrap().title, "Debian GNU/Linux", "{value}");
            assert_eq!(notes.len(), 1, "{value}: {notes:?}");
            assert!(notes[0].contains(value), "{notes:?}");
        }
        // Only a variable (GRUB_DEFAULT=saved on Red Hat).
        let cfg = "set default=\"${saved_entry}\"\nmenuentry 'R' {\n linux16 /vmlinuz-3.10.0 root=x\n initrd16 /initramfs-3.10.0.img\n}\n";
        let (e, notes) = default_entry(cfg);
        assert_eq!(e.unwrap().initrds, vec!["/initramfs-3.10.0.img"]);
        assert!(notes[0].contains("${saved_entry}"), "{notes:?}");
        // No default at all: the first entry, nothing to say.
        let (e, notes) = default_entry("menuentry 'A' {\n linux /vmlinuz-1 root=x\n}\n");
        assert_eq!(e.unwrap().title, "A");
        assert!(notes.is_empty());
        assert_eq!(default_entry("set timeout=5\n").0, None);
    }
}
