//! GRUB legacy (0.97): `menu.lst` (Debian, SUSE) or `grub.conf` (Red Hat).
//!
//! The rewrite ([`rewrite_menu`]) goes entry by entry. A Linux entry's
//! kernel line (in a Xen entry, the first `module` after `kernel
//! /xen.gz`; the hypervisor's line keeps its own options) gets the
//! command-line edits of [`super::cmdline`]: the new root by UUID, no
//! LVM/MD activation, the VM's consoles and options; memtest gets none.
//! Entries that boot something elsewhere (a chainloader, another menu)
//! are left as they are. Disk addresses are recomputed for the plan's layout: `root
//! (hdX,Y)`, Debian's `# groot=`, `splashimage`, `gfxmenu` and path
//! prefixes name `(hd0,P)`, P the partition holding /boot (or /) counted
//! from 0; a Xen PV guest's whole-disk `(hd0)` becomes that partition
//! too. When the plan merged the source's /boot filesystem into / (its
//! `--consolidate`), paths named from that filesystem's top gain `/boot`;
//! the plan never makes a /boot the source did not have, so the reverse
//! never happens. Debian's `# kopt=` magic comment gets the same edits as
//! the kernel lines, so the guest's own `update-grub` regenerates the
//! same. A `serial` line on another port than the first becomes `serial
//! --unit=0 --speed=115200`.
//!
//! Installing runs the guest's `grub` shell in batch mode ([`setup_script`])
//! with a device map naming the target disk `(hd0)`. The shell writes a
//! partition's sectors (stage 2's patched first block) through the
//! partition's own device, which it names by appending the partition
//! number to the disk's: `/dev/vda` → `/dev/vda1`, but `/dev/loop7` →
//! `/dev/loop71`, which does not exist. So the map names a directory of
//! links made for the run (`disk`, `disk1`, ...), removed afterwards; a
//! device.map the clone has is rewritten to name the VM's disk. A setup is done only when
//! its `install` step succeeded ([`setup_succeeded`]): `embed` succeeds
//! before it, and a failing install still ends with "Done".
//!
//! Verifying checks every kernel line boots the new root and carries no
//! storage activation or console the VM has not, then reads the default
//! entry ([`default_entry`]) and checks its kernel and initrd
//! ([`crate::convert::initrd`]). On failure it names the file, the line
//! and what to change.

use std::path::Path;

use super::cmdline::{is_linux_image, is_xen_hypervisor, leftovers};
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

/// The clone's `device.map`, when it has one: the VM's virtio disk.
const VM_DEVICE_MAP: &str = "(hd0)\t/dev/vda\n";

/// Where [`setup_script`] puts the links the grub shell opens, in the
/// clone (removed when the shell is done).
const LINKS: &str = "/run/hotclone-grub";

/// The shell script that installs GRUB 0.97 on `disk` from partition
/// `part` (1-based): links for the disk and each partition the context
/// knows the device of, a device map naming them, `setup (hd0)`, and the
/// links removed again whatever grub's outcome (its output and status are
/// the script's).
pub(crate) fn setup_script(disk: &str, part: u32, ctx: &ConvertContext) -> String {
    use crate::shell::quote;
    let mut links = format!("ln -s {} {LINKS}/disk", quote(disk));
    // One link per partition number (the first filesystem naming it).
    let mut parts = std::collections::BTreeMap::new();
    for f in &ctx.filesystems {
        if let (Some(n), Some(device)) = (f.partition, f.device.as_deref()) {
            parts.entry(n).or_insert(device);
        }
    }
    for (n, device) in parts {
        links.push_str(&format!(" && ln -s {} {LINKS}/disk{n}", quote(device)));
    }
    format!(
        "rm -rf {LINKS} && mkdir -p {LINKS} && {links} && printf '(hd0)\\t{LINKS}/disk\\n' > {LINKS}/device.map && \
         printf 'device (hd0) {LINKS}/disk\\nroot (hd0,{})\\nsetup (hd0)\\nquit\\n' | grub --batch --no-floppy --device-map={LINKS}/device.map; \
         rc=$?; rm -rf {LINKS}; exit $rc",
        part.saturating_sub(1)
    )
}

/// Whether the grub shell's `setup` output says its `install` step
/// succeeded (see the module doc).
pub(crate) fn setup_succeeded(out: &str) -> Result<(), ConvertError> {
    let install = out.lines().find(|l| l.contains("Running \"install "));
    let error = out.lines().find(|l| l.trim_start().starts_with("Error "));
    match (install, error) {
        (Some(line), None) if line.trim_end().ends_with("succeeded") => Ok(()),
        _ => {
            Err(ConvertError::Verify(format!(
            "grub setup (hd0) did not install GRUB{}; the VM would not boot. Its output:\n{out}",
            error.map(|e| format!(" ({})", e.trim())).unwrap_or_default()
        )))
        }
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
        let disk = super::install_disk(ctx)?;
        let part = ctx.boot_partition().ok_or_else(|| {
            ConvertError::Context(
                "grub-legacy needs the partition number of /boot (or /) in the convert context"
                    .into(),
            )
        })?;
        let script = setup_script(disk, part, ctx);
        let out = run_noted(exec, &["sh", "-c", &script], progress)?;
        setup_succeeded(&out)?;
        // A device map the clone keeps names the VM's disk, for the next
        // grub-install in the VM (the source's named its own disk).
        let map = exec.root().join("boot/grub/device.map");
        if map.exists() {
            std::fs::write(&map, VM_DEVICE_MAP).map_err(|error| ConvertError::Io {
                path: map.clone(),
                error,
            })?;
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
                let kernels: Vec<(usize, &str)> = text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| is_kernel_line(l))
                    .collect();
                if kernels.is_empty()
                    || kernels
                        .iter()
                        .any(|(_, l)| !l.contains(&format!("root=UUID={uuid}")))
                {
                    return Err(ConvertError::Verify(format!(
                        "/{}: not every kernel line boots root=UUID={uuid}",
                        f.pattern
                    )));
                }
                for (n, l) in &kernels {
                    let args: Vec<&str> = l.split_whitespace().collect();
                    let left = leftovers(&args);
                    if !left.is_empty() {
                        return Err(ConvertError::Verify(format!(
                            "/{} line {}: the kernel line still has {}, which the VM has not (its filesystems are plain partitions, its consoles ttyS0 and tty0): dracut would wait for volumes that do not exist, or the console would go nowhere. Remove them from the line",
                            f.pattern,
                            n + 1,
                            left.join(", ")
                        )));
                    }
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
            "kernel" if is_xen_hypervisor(image) => xen_modules = 1,
            "kernel" if !is_linux_image(image) => {}
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

/// Whether each `title` entry boots a file of the clone's boot
/// filesystem (a `kernel` line: Linux, Xen's hypervisor, memtest), whose
/// disk addresses and paths follow the plan's layout; or something
/// elsewhere (a chainloader, another menu), which is left exactly as it
/// is.
fn own_entries(text: &str) -> Vec<bool> {
    // None: nothing seen yet; Some(false): boots something elsewhere.
    let mut kinds: Vec<Option<bool>> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('#') {
            continue;
        }
        let (word, _) = split_word(t);
        match (word, kinds.last_mut()) {
            ("title", _) => kinds.push(None),
            ("kernel", Some(k @ None)) => *k = Some(true),
            ("chainloader" | "configfile", Some(k)) => *k = Some(false),
            _ => {}
        }
    }
    kinds.into_iter().map(|k| k == Some(true)).collect()
}

/// A line's first word (up to whitespace or `=`) and what follows the
/// separator.
fn split_word(t: &str) -> (&str, &str) {
    let word = t
        .split(|c: char| c.is_whitespace() || c == '=')
        .next()
        .unwrap_or("");
    let rest = t[word.len()..].trim_start_matches(|c: char| c.is_whitespace() || c == '=');
    (word, rest)
}

/// `kernel [--options] /image args...`: the options and image, and the
/// arguments.
fn kernel_head(rest: &str) -> (Vec<String>, Vec<String>) {
    let mut parts = rest.split_whitespace();
    let mut head = Vec::new();
    for p in parts.by_ref() {
        head.push(p.to_string());
        if !p.starts_with("--") {
            break;
        }
    }
    (head, parts.map(str::to_string).collect())
}

/// A GRUB legacy disk address for the clone's disk: `(hdN)` (a Xen PV
/// guest's whole-disk filesystem) or `(hdN,M)` becomes `(hd0,P)`, P the
/// partition holding /boot (or /) counted from 0. Other devices (`(fd0)`,
/// `(nd)`) and an unknown partition are left alone.
fn remap_device(dev: &str, part: Option<u32>) -> String {
    match (dev.strip_prefix("(hd"), part) {
        (Some(_), Some(p)) if dev.ends_with(')') => format!("(hd0,{})", p.saturating_sub(1)),
        _ => dev.to_string(),
    }
}

/// A file path as GRUB legacy reads it in the clone: its device prefix
/// remapped ([`remap_device`]), and, when the source's /boot filesystem
/// became a directory of / (`merged`), `/boot` in front of a path named
/// from that filesystem's top.
/// A kernel-ish line's head (its `--options` and image path), with the
/// path remapped and the options kept.
fn remap_head(head: &[String], part: Option<u32>, merged: bool) -> Vec<String> {
    head.iter()
        .map(|h| {
            if h.starts_with("--") {
                h.clone()
            } else {
                remap_path(h, part, merged)
            }
        })
        .collect()
}

fn remap_path(path: &str, part: Option<u32>, merged: bool) -> String {
    let (dev, file) = match path.strip_prefix('(').and_then(|r| r.split_once(')')) {
        Some((d, f)) => (remap_device(&format!("({d})"), part), f),
        None => (String::new(), path),
    };
    let file = if merged && file.starts_with('/') && !file.starts_with("/boot/") {
        format!("/boot{file}")
    } else {
        file.to_string()
    };
    format!("{dev}{file}")
}

/// `serial --unit=1 ...` (or `--port=0x2f8`) drives a port the VM does
/// not have: it becomes `--unit=0 --speed=115200`, the VM's first port,
/// other settings kept. A line already on unit 0 is the source's choice.
fn remap_serial(rest: &str) -> Option<String> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let other_port = words
        .iter()
        .any(|w| w.starts_with("--port=") || w.strip_prefix("--unit=").is_some_and(|u| u != "0"));
    if !other_port {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for w in &words {
        if w.starts_with("--port=") || w.starts_with("--unit=") {
            if !out.iter().any(|o| o == "--unit=0") {
                out.push("--unit=0".into());
            }
        } else if w.starts_with("--speed=") {
            continue;
        } else {
            out.push(w.to_string());
        }
    }
    let at = out
        .iter()
        .position(|o| o == "--unit=0")
        .map_or(0, |i| i + 1);
    out.insert(at, "--speed=115200".into());
    Some(out.join(" "))
}

/// The pure rewrite of menu.lst / grub.conf, entry by entry: in an entry
/// that boots a kernel, `root (hdX,Y)` and the device prefixes of its
/// paths name the clone's boot partition, and paths gain `/boot` when
/// that filesystem was merged into /. Its Linux kernel line (the first
/// `module` after Xen's hypervisor) gets [`edit_cmdline`]; the
/// hypervisor's own line, memtest's and the initrd keep their options.
/// Entries that boot something elsewhere (chainloader, another menu) are
/// left as they are. Outside the
/// entries: `splashimage`, `gfxmenu`, Debian's `# groot=`, `# kopt=`,
/// `# defoptions=`, `# xenkopt=`, and a `serial` line on another port.
pub fn rewrite_menu(text: &str, ctx: &ConvertContext) -> String {
    let own = own_entries(text);
    let part = ctx.boot_partition();
    let merged = ctx.boot_merged_into_root();
    let mut entry: Option<usize> = None;
    let mut after_hypervisor = false;
    map_lines(text, |line| {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        if t.starts_with('#') {
            return vec![magic_comment(line, ctx, part).unwrap_or_else(|| line.to_string())];
        }
        let (word, rest) = split_word(t);
        let sep = &t[word.len()..t.len() - rest.len()];
        if word == "title" {
            entry = Some(entry.map_or(0, |e| e + 1));
            after_hypervisor = false;
            return vec![line.to_string()];
        }
        if entry.is_some_and(|e| !own.get(e).copied().unwrap_or(false)) {
            return vec![line.to_string()];
        }
        let new_rest = match word {
            "root" => {
                let mut words = rest.splitn(2, char::is_whitespace);
                let dev = words.next().unwrap_or("");
                let tail = words.next().map(|w| format!(" {w}")).unwrap_or_default();
                format!("{}{tail}", remap_device(dev, part))
            }
            "splashimage" | "gfxmenu" | "initrd" => {
                let (head, args) = kernel_head(rest);
                let mut all = remap_head(&head, part, merged);
                all.extend(args);
                all.join(" ")
            }
            "serial" => match remap_serial(rest) {
                Some(r) => r,
                None => return vec![line.to_string()],
            },
            "kernel" | "module" | "modulenounzip" => {
                let (head, args) = kernel_head(rest);
                let Some(image) = head.last() else {
                    return vec![line.to_string()];
                };
                let hypervisor = word == "kernel" && is_xen_hypervisor(image);
                let typed_other = head
                    .iter()
                    .any(|h| h.starts_with("--type=") && h != "--type=linux");
                let linux_line = match word {
                    "kernel" => !hypervisor && !typed_other && is_linux_image(image),
                    _ => after_hypervisor || args.iter().any(|a| a.starts_with("root=")),
                };
                if word == "kernel" {
                    after_hypervisor = hypervisor;
                } else if linux_line {
                    after_hypervisor = false;
                }
                let mut all = remap_head(&head, part, merged);
                if linux_line {
                    all.extend(edit_cmdline(&args, ctx, true));
                } else {
                    all.extend(args);
                }
                all.join(" ")
            }
            _ => return vec![line.to_string()],
        };
        if new_rest.split_whitespace().eq(rest.split_whitespace()) {
            return vec![line.to_string()];
        }
        vec![format!("{indent}{word}{sep}{new_rest}")]
    })
}

/// Debian's magic comments, which its `update-grub` regenerates the menu
/// from: `# kopt=` (and `# kopt_2_6=`...) carry the kernel options and get
/// ours; `# defoptions=` and `# xenkopt=` are added to them, and only lose
/// what the VM cannot boot with; `# groot=` names the boot partition.
fn magic_comment(line: &str, ctx: &ConvertContext, part: Option<u32>) -> Option<String> {
    let t = line.trim_start();
    let indent = &line[..line.len() - t.len()];
    let body = t.strip_prefix("# ")?;
    let (key, value) = body.split_once('=')?;
    if key.contains(char::is_whitespace) {
        return None;
    }
    let edit = |add: bool| {
        let tokens: Vec<String> = value.split_whitespace().map(str::to_string).collect();
        let edited = edit_cmdline(&tokens, ctx, add);
        (edited != tokens).then(|| format!("{indent}# {key}={}", edited.join(" ")))
    };
    match key {
        "groot" => {
            let (dev, tail) = match value.find(')') {
                Some(i) => value.split_at(i + 1),
                None => (value, ""),
            };
            let new = remap_device(dev.trim(), part);
            (new != dev.trim()).then(|| format!("{indent}# groot={new}{tail}"))
        }
        "defoptions" | "xenkopt" => edit(false),
        k if k == "kopt" || k.starts_with("kopt_") => edit(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{default_entry, remap_serial, rewrite_menu};
    use crate::convert::ConvertContext;

    /// / on partition 2 of the plan (so GRUB reads (hd0,1)).
    fn ctx() -> ConvertContext {
        toml::from_str(
            "[guest]\nfamily = \"red-hat\"\nversion = \"5.11\"\nbootloader = \"grub-legacy\"\nkernel = \"2.6.18-398.el5\"\n\n[[filesystems]]\nmount_point = \"/\"\nold_specs = [\"/dev/hda3\"]\nuuid = \"3f1c8a2e-5b7d-4e1a-9c3f-2a6b8d0e4f11\"\nfs_type = \"ext3\"\npartition = 2\n",
        )
        .unwrap()
    }

    /// Regression (issue 14): options went onto every `kernel` line, and
    /// the disk addresses of the source stayed. A chainloader's are not
    /// ours and stay; memtest's follow the layout but get no options. grubby's test/grub.2 and
    /// grub.10: a chainloader entry and a Fedora Core 4 Xen entry.
    #[test]
    fn regression_only_linux_entries_are_rewritten_and_the_xen_module_is_the_kernel() {
        let menu = "\
title DOS
\troot (hd0,0)
\tchainloader +1
title xen
\troot (hd0,2)
\tkernel /xen.gz dom0_mem=1024M console=com1
\tmodule /vmlinuz-2.6.10-1.1082_FC4 ro rhgb quiet acpi=off
\tmodule /initrd-2.6.10-1.1082_FC4
title Memtest86+ (4.20)
\troot (hd0,0)
\tkernel --type=netbsd /elf-memtest86+-4.20
";
        let got = rewrite_menu(menu, &ctx());
        assert_eq!(
            got,
            "\
title DOS
\troot (hd0,0)
\tchainloader +1
title xen
\troot (hd0,1)
\tkernel /xen.gz dom0_mem=1024M console=com1
\tmodule /vmlinuz-2.6.10-1.1082_FC4 ro rhgb quiet acpi=off net.ifnames=0 console=tty0 console=ttyS0,115200
\tmodule /initrd-2.6.10-1.1082_FC4
title Memtest86+ (4.20)
\troot (hd0,1)
\tkernel --type=netbsd /elf-memtest86+-4.20
"
        );
        assert_eq!(rewrite_menu(&got, &ctx()), got, "idempotent");
    }

    #[test]
    fn debian_names_its_hypervisor_xen_dash_version_dot_gz() {
        let menu = "title Xen 3.2-1-i386 / Debian GNU/Linux, kernel 2.6.26-2-xen-686\nroot (hd0,0)\nkernel /boot/xen-3.2-1-i386.gz\nmodule /boot/vmlinuz-2.6.26-2-xen-686 root=/dev/hda3 ro console=tty0\nmodule /boot/initrd.img-2.6.26-2-xen-686\n";
        let got = rewrite_menu(menu, &ctx());
        assert!(got.contains("\nroot (hd0,1)\nkernel /boot/xen-3.2-1-i386.gz\nmodule /boot/vmlinuz-2.6.26-2-xen-686 root=UUID=3f1c8a2e-5b7d-4e1a-9c3f-2a6b8d0e4f11 ro console=tty0 net.ifnames=0\nmodule /boot/initrd.img-2.6.26-2-xen-686\n"), "{got}");
        let (e, _) = default_entry(&got);
        assert_eq!(
            e.unwrap().kernel.unwrap().1,
            "/boot/vmlinuz-2.6.26-2-xen-686"
        );
    }

    #[test]
    fn a_serial_line_on_another_port_moves_to_the_first() {
        assert_eq!(
            remap_serial("--unit=1 --speed=19200 --word=8 --parity=no --stop=1").as_deref(),
            Some("--unit=0 --speed=115200 --word=8 --parity=no --stop=1")
        );
        assert_eq!(
            remap_serial("--port=0x2f8 --speed=9600").as_deref(),
            Some("--unit=0 --speed=115200")
        );
        assert_eq!(remap_serial("--unit=0 --speed=9600"), None);
    }

    #[test]
    fn a_memtest_default_entry_boots_no_linux_kernel() {
        let (e, _) = default_entry("title Memtest86+\nroot (hd0,0)\nkernel /elf-memtest86+-4.20\n");
        assert_eq!(e.unwrap().kernel, None);
    }

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
