//! Boot Loader Specification entries, which GRUB 2 reads when its config
//! says `blscfg` (RHEL 8 and later, Fedora 30 and later): one
//! `/boot/loader/entries/<machine-id>-<version>.conf` per kernel, with
//! `linux`, `initrd` and `options` lines. `grub2-mkconfig` does not
//! regenerate them, so the conversion rewrites them itself.
//!
//! - `options` gets the kernel command-line edits of [`super::cmdline`].
//!   RHEL 8's entries say `options $kernelopts $tuned_params`: the options
//!   live in `/boot/grub2/grubenv`'s `kernelopts=` line, which gets the
//!   edits ([`rewrite_grubenv`]), and such an entry only loses what the VM
//!   cannot boot with. grubenv is a 1024-byte block padded with `#`; the
//!   rewrite keeps its size (it grows only if the new options do not fit
//!   in the padding, which GRUB still reads).
//! - `linux` and `initrd` paths gain `/boot` when the plan merged the
//!   source's /boot filesystem into / (`--consolidate`).
//! - An entry that boots no Linux kernel (memtest) is left as it is.
//!
//! The boot check ([`verify`]) reads every entry back: each Linux entry,
//! its `$kernelopts` expanded from grubenv (or the `set kernelopts=`
//! fallback grub.cfg carries), must boot the new root by UUID with the
//! options the conversion relies on and nothing the VM has not; then the
//! default entry (grubenv's `saved_entry`, else the newest by name, with
//! a note) gets its kernel and initrd checked ([`check_boot_entry`]). On
//! failure it names the entry file, the line and what to change.

use std::path::Path;

use super::cmdline::{is_linux_image, leftovers};
use super::edit_cmdline;
use crate::convert::initrd::{check_boot_entry, BootEntry};
use crate::convert::{map_lines, ConvertContext, ConvertError};

/// Where the entries are, relative to the root.
pub const ENTRIES_DIR: &str = "boot/loader/entries";

/// The GRUB environment block RHEL 8 keeps `kernelopts` in.
pub const GRUBENV: &str = "boot/grub2/grubenv";

/// Whether a generated grub.cfg reads BLS entries (a `blscfg` command).
pub fn uses_blscfg(grub_cfg: &str) -> bool {
    grub_cfg
        .lines()
        .any(|l| l.split_whitespace().next() == Some("blscfg"))
}

/// The image of an entry's `linux` line (`None` without one).
fn linux_image(text: &str) -> Option<&str> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("linux")).then(|| w.next()).flatten()
    })
}

/// A path from an entry, as the clone has it (see the module doc).
fn boot_path(path: &str, ctx: &ConvertContext) -> String {
    if ctx.boot_merged_into_root() && path.starts_with('/') && !path.starts_with("/boot/") {
        format!("/boot{path}")
    } else {
        path.to_string()
    }
}

/// The pure rewrite of one entry file. Files that are not `.conf`
/// entries, and entries that boot no Linux kernel, are kept.
pub fn rewrite_entry(path: &str, text: &str, ctx: &ConvertContext) -> String {
    if !path.ends_with(".conf") || !linux_image(text).is_some_and(is_linux_image) {
        return text.to_string();
    }
    map_lines(text, |line| {
        let t = line.trim_start();
        let key = t.split_whitespace().next().unwrap_or("");
        let rest = t[key.len()..].trim_start();
        let sep = &t[key.len()..t.len() - rest.len()];
        let tokens: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
        let edited: Vec<String> = match key {
            "linux" | "initrd" => tokens
                .iter()
                .map(|p| {
                    if p.starts_with('$') {
                        p.clone()
                    } else {
                        boot_path(p, ctx)
                    }
                })
                .collect(),
            "options" => {
                let from_env = tokens.iter().any(|o| o.contains("$kernelopts"));
                edit_cmdline(&tokens, ctx, !from_env)
            }
            _ => return vec![line.to_string()],
        };
        if edited == tokens {
            return vec![line.to_string()];
        }
        let indent = &line[..line.len() - t.len()];
        vec![format!("{indent}{key}{sep}{}", edited.join(" "))]
    })
}

/// The pure rewrite of grubenv: its `kernelopts=` gets the kernel
/// command-line edits, and the `#` padding shrinks or grows so the block
/// keeps its size.
pub fn rewrite_grubenv(text: &str, ctx: &ConvertContext) -> String {
    let body = text.trim_end_matches('#');
    let edited = map_lines(body, |line| match line.strip_prefix("kernelopts=") {
        Some(v) => {
            let tokens: Vec<String> = v.split_whitespace().map(str::to_string).collect();
            let new = edit_cmdline(&tokens, ctx, true);
            if new == tokens {
                vec![line.to_string()]
            } else {
                vec![format!("kernelopts={}", new.join(" "))]
            }
        }
        None => vec![line.to_string()],
    });
    if edited == body {
        return text.to_string();
    }
    let pad = text.len().saturating_sub(edited.len());
    format!("{edited}{}", "#".repeat(pad))
}

/// The variables of a GRUB environment block.
fn env_vars(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The `set kernelopts="..."` fallback a RHEL 8 grub.cfg carries.
fn cfg_kernelopts(grub_cfg: &str) -> Option<String> {
    grub_cfg.lines().find_map(|l| {
        let v = l.trim().strip_prefix("set kernelopts=")?;
        Some(v.trim_matches(|c| c == '"' || c == '\'').trim().to_string())
    })
}

/// One entry, as the boot check reads it.
struct Entry {
    file: String,
    title: String,
    linux: Option<(usize, String)>,
    initrds: Vec<String>,
    initrd_line: usize,
    options: Option<(usize, Vec<String>)>,
}

fn parse(file: &str, text: &str, kernelopts: &str) -> Entry {
    let mut e = Entry {
        file: file.to_string(),
        title: file.to_string(),
        linux: None,
        initrds: vec![],
        initrd_line: 0,
        options: None,
    };
    for (n, line) in text.lines().enumerate() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("title") => e.title = w.collect::<Vec<_>>().join(" "),
            Some("linux") => e.linux = w.next().map(|p| (n + 1, p.to_string())),
            Some("initrd") => {
                e.initrds
                    .extend(w.filter(|p| !p.starts_with('$')).map(str::to_string));
                e.initrd_line = n + 1;
            }
            Some("options") => {
                let opts = w
                    .flat_map(|o| match o {
                        "$kernelopts" => kernelopts.split_whitespace().collect::<Vec<_>>(),
                        o if o.starts_with('$') => vec![],
                        o => vec![o],
                    })
                    .map(str::to_string)
                    .collect();
                e.options = Some((n + 1, opts));
            }
            _ => {}
        }
    }
    e
}

/// The boot check of a GRUB 2 config that reads BLS entries (see the
/// module doc). `grub_cfg` is the generated grub.cfg's text. Ok carries
/// notes.
pub fn verify(
    root: &Path,
    ctx: &ConvertContext,
    grub_cfg: &str,
) -> Result<Vec<String>, ConvertError> {
    let mut notes = Vec::new();
    let env = std::fs::read_to_string(root.join(GRUBENV))
        .map(|t| env_vars(&t))
        .unwrap_or_default();
    let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let kernelopts = var("kernelopts")
        .or_else(|| cfg_kernelopts(grub_cfg))
        .unwrap_or_default();
    let dir = root.join(ENTRIES_DIR);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| {
            ConvertError::Verify(format!(
                "grub.cfg reads Boot Loader Specification entries (blscfg) but /{ENTRIES_DIR} cannot be read ({e}): the VM would have no menu. Reinstall the kernel package in the clone (kernel-install writes the entries)"
            ))
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".conf"))
        .collect();
    names.sort();
    let uuid = ctx.root().map(|r| r.uuid.clone()).unwrap_or_default();
    let want_root = format!("root=UUID={uuid}");
    let mut linux = Vec::new();
    for name in &names {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| ConvertError::Io {
            path: path.clone(),
            error: e,
        })?;
        let e = parse(name, &text, &kernelopts);
        if !e.linux.as_ref().is_some_and(|(_, p)| is_linux_image(p)) {
            continue;
        }
        let rel = format!("/{ENTRIES_DIR}/{name}");
        let Some((line, opts)) = &e.options else {
            return Err(ConvertError::Verify(format!(
                "{rel}: the entry has no options line, so its kernel gets no root=: add `options {want_root} ro`"
            )));
        };
        let args: Vec<&str> = opts.iter().map(String::as_str).collect();
        let mut missing: Vec<&str> = Vec::new();
        if !args.contains(&want_root.as_str()) {
            missing.push(&want_root);
        }
        missing.extend(
            ctx.cmdline_add
                .iter()
                .filter(|o| !o.starts_with("console="))
                .filter(|o| !args.contains(&o.as_str()))
                .map(String::as_str),
        );
        let left = leftovers(&args);
        if !missing.is_empty() || !left.is_empty() {
            let from_env = if text.contains("$kernelopts") {
                format!(" (its options come from kernelopts in /{GRUBENV})")
            } else {
                String::new()
            };
            let mut what = Vec::new();
            if !missing.is_empty() {
                what.push(format!("lack {}", missing.join(", ")));
            }
            if !left.is_empty() {
                what.push(format!(
                    "still have {}, which the VM has not",
                    left.join(", ")
                ));
            }
            return Err(ConvertError::Verify(format!(
                "{rel} line {line}: the kernel options {}{from_env}; the VM would not find its root or would wait for volumes that do not exist. Fix the options line (grubby --update-kernel=ALL --args/--remove-args does it in the clone)",
                what.join(" and ")
            )));
        }
        linux.push(e);
    }
    if linux.is_empty() {
        return Err(ConvertError::Verify(format!(
            "grub.cfg reads Boot Loader Specification entries (blscfg) but /{ENTRIES_DIR} has no Linux entry: the VM has nothing to boot"
        )));
    }
    let saved = var("saved_entry");
    let default = saved
        .as_deref()
        .and_then(|s| {
            linux
                .iter()
                .find(|e| e.file.strip_suffix(".conf") == Some(s))
        })
        .unwrap_or_else(|| {
            notes.push(format!(
                "/{ENTRIES_DIR}: {}; the boot check read the newest entry by name, {}",
                match &saved {
                    Some(s) => format!("the saved entry \"{s}\" is not one of the entries"),
                    None => "no saved_entry in grubenv".to_string(),
                },
                linux.last().map_or("", |e| e.file.as_str())
            ));
            linux.last().expect("not empty")
        });
    let boot = BootEntry {
        title: default.title.clone(),
        kernel: default.linux.clone(),
        initrds: default.initrds.clone(),
        initrd_line: default.initrd_line,
    };
    let cfg = format!("/{ENTRIES_DIR}/{}", default.file);
    notes.extend(check_boot_entry(root, ctx, &cfg, &boot)?);
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// insights-core's RHEL 8.4 grubenv (tests/combiners/test_grub_conf.py).
    const GRUBENV_84: &str = "# GRUB Environment Block\nsaved_entry=295e1ba1696e4fad9e062f096f92d147-4.18.0-305.el8.x86_64\nkernelopts=root=/dev/mapper/root_vg-lv_root ro crashkernel=auto resume=/dev/mapper/root_vg-lv_swap rd.lvm.lv=root_vg/lv_root rd.lvm.lv=root_vg/lv_swap console=tty0 console=ttyS0,115200 noapic\nboot_success=0\n";

    fn ctx() -> ConvertContext {
        let text = "[guest]\nfamily = \"red-hat\"\nversion = \"8.4\"\nbootloader = \"grub2\"\nkernel = \"4.18.0-305.el8.x86_64\"\n\n[[filesystems]]\nmount_point = \"/\"\nold_specs = [\"/dev/mapper/root_vg-lv_root\"]\nuuid = \"3f1c8a2e-5b7d-4e1a-9c3f-2a6b8d0e4f11\"\nfs_type = \"xfs\"\npartition = 2\n";
        toml::from_str(text).unwrap()
    }

    fn padded(body: &str) -> String {
        format!("{body}{}", "#".repeat(1024 - body.len()))
    }

    #[test]
    fn regression_grubenv_kernelopts_lose_lvm_and_keep_the_block_size() {
        let env = padded(GRUBENV_84);
        let got = rewrite_grubenv(&env, &ctx());
        assert_eq!(got.len(), 1024);
        assert!(got.contains("\nkernelopts=root=UUID=3f1c8a2e-5b7d-4e1a-9c3f-2a6b8d0e4f11 ro crashkernel=auto console=tty0 console=ttyS0,115200 noapic net.ifnames=0\n"), "{got}");
        assert_eq!(rewrite_grubenv(&got, &ctx()), got, "idempotent");
    }

    #[test]
    fn blscfg_is_a_command_not_a_word_in_a_comment() {
        assert!(uses_blscfg("insmod blscfg\nblscfg\n"));
        assert!(!uses_blscfg("insmod blscfg\n# blscfg\n"));
    }

    #[test]
    fn a_memtest_entry_and_other_files_are_kept() {
        let memtest = "title Memtest86+\nlinux /memtest86+.bin\noptions console=hvc0\n";
        assert_eq!(rewrite_entry("x.conf", memtest, &ctx()), memtest);
        let entry = "linux /vmlinuz-1\noptions root=/dev/sda1 rd.lvm.lv=a/b\n";
        assert_eq!(rewrite_entry("README", entry, &ctx()), entry);
    }
}
