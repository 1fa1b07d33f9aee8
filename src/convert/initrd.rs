//! The initrd half of the boot check (issue 13): read back the initramfs
//! the bootloader's default entry loads, and check it holds the drivers the
//! VM needs to find its disk and mount its root (virtio block and PCI, the
//! root filesystem's driver), or that the kernel has them built in.
//!
//! An initramfs is one or more cpio "newc" archives, concatenated, each
//! possibly compressed (Debian: an uncompressed early archive with CPU
//! microcode, then a zstd or gzip one; RHEL 5/6: one gzip archive), with
//! NUL padding between them. [`initrd_members`] lists the paths in all of
//! them; it reads raw, gzip and zstd archives.
//!
//! On failure: a kernel or initrd the entry names but the clone lacks, an
//! initrd that is not an initramfs, or one that lacks a driver, is a
//! [`ConvertError::Verify`] naming the file, the config line that loads it
//! and what was expected, with the command that rebuilds the image for the
//! guest's initramfs tool; the clone is not reported as bootable. An initrd
//! compressed in a format hotclone cannot read (xz, lz4, bzip2, lzma,
//! lzo) is not a failure: the check returns a note saying it was not
//! checked, and the conversion goes on.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{ConvertContext, ConvertError};

/// Decompressed initramfs content read at most (a real one is well under).
const MAX_UNPACKED: u64 = 1 << 30;
/// Compressed archives inside compressed archives read at most.
const MAX_DEPTH: u32 = 2;
const HEADER: usize = 110;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitrdError {
    /// A segment compressed with something hotclone cannot decompress.
    #[error("compressed with {name}, which hotclone cannot read")]
    Unsupported { name: &'static str },
    /// Not a (complete) newc archive.
    #[error("not a readable initramfs: {0}")]
    Corrupt(String),
}

/// The member paths of an initramfs image (files, directories, links; as
/// the archives spell them), in archive order, trailers left out.
pub fn initrd_members(bytes: &[u8]) -> Result<Vec<String>, InitrdError> {
    let mut out = Vec::new();
    segments(bytes, 0, &mut out)?;
    if out.is_empty() {
        return Err(InitrdError::Corrupt("no cpio archive in it".into()));
    }
    Ok(out)
}

/// Walk the concatenated segments of `bytes`, pushing member names.
fn segments(bytes: &[u8], depth: u32, out: &mut Vec<String>) -> Result<(), InitrdError> {
    let mut pos = 0;
    while pos < bytes.len() {
        if bytes[pos] == 0 {
            pos += 1;
            continue;
        }
        let rest = &bytes[pos..];
        let used = if rest.starts_with(b"070701") || rest.starts_with(b"070702") {
            newc(rest, out).map_err(|e| at(e, pos))?
        } else {
            let (unpacked, used) = decompress(rest).map_err(|e| at(e, pos))?;
            if depth >= MAX_DEPTH {
                return Err(InitrdError::Corrupt(format!(
                    "compressed archives nested deeper than {MAX_DEPTH} at byte {pos}"
                )));
            }
            segments(&unpacked, depth + 1, out)?;
            used
        };
        pos += used.max(1);
    }
    Ok(())
}

fn at(e: InitrdError, pos: usize) -> InitrdError {
    match e {
        InitrdError::Corrupt(m) => InitrdError::Corrupt(format!("{m} (segment at byte {pos})")),
        other => other,
    }
}

/// Parse one newc archive at the start of `a` up to its trailer; returns
/// the bytes it took. Padding counts from the archive's start.
fn newc(a: &[u8], out: &mut Vec<String>) -> Result<usize, InitrdError> {
    let mut pos = 0;
    loop {
        let header = a
            .get(pos..pos + HEADER)
            .ok_or_else(|| corrupt("truncated cpio header", pos))?;
        if !(header.starts_with(b"070701") || header.starts_with(b"070702")) {
            return Err(corrupt("bad cpio magic", pos));
        }
        let size = hex_field(header, 6).ok_or_else(|| corrupt("bad cpio header", pos))?;
        let name_size = hex_field(header, 11).ok_or_else(|| corrupt("bad cpio header", pos))?;
        let name_end = pos + HEADER + name_size;
        let name = a
            .get(pos + HEADER..name_end)
            .ok_or_else(|| corrupt("truncated cpio name", pos))?;
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        let data = align4(name_end);
        let next = align4(data.saturating_add(size));
        if name == b"TRAILER!!!" {
            return Ok(next.min(a.len()));
        }
        if a.len() < data.saturating_add(size) {
            return Err(corrupt("truncated cpio member", pos));
        }
        out.push(String::from_utf8_lossy(name).into_owned());
        pos = next;
    }
}

fn corrupt(what: &str, pos: usize) -> InitrdError {
    InitrdError::Corrupt(format!("{what} at byte {pos}"))
}

/// Field `i` (0-based, after the magic) of a newc header: 8 hex digits.
fn hex_field(header: &[u8], i: usize) -> Option<usize> {
    let start = 6 + 8 * i;
    let text = std::str::from_utf8(header.get(start..start + 8)?).ok()?;
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    usize::from_str_radix(text, 16).ok()
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// Decompress the stream at the start of `rest` (consecutive gzip members,
/// or consecutive zstd frames); returns the content and the bytes taken.
fn decompress(rest: &[u8]) -> Result<(Vec<u8>, usize), InitrdError> {
    const GZIP: &[u8] = &[0x1f, 0x8b];
    const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
    let mut unpacked = Vec::new();
    let mut input = rest;
    if input.starts_with(GZIP) {
        while input.starts_with(GZIP) {
            let mut d = flate2::bufread::GzDecoder::new(input);
            read_capped(&mut d, &mut unpacked, "gzip")?;
            input = d.into_inner();
        }
    } else if input.starts_with(ZSTD) {
        while input.starts_with(ZSTD) {
            let mut d = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| InitrdError::Corrupt(format!("zstd: {e}")))?
                .single_frame();
            read_capped(&mut d, &mut unpacked, "zstd")?;
            input = d.finish();
        }
    } else {
        return Err(match unsupported(rest) {
            Some(name) => InitrdError::Unsupported { name },
            None => InitrdError::Corrupt("neither a cpio archive nor compressed data".into()),
        });
    }
    Ok((unpacked, rest.len() - input.len()))
}

fn read_capped(r: &mut dyn Read, out: &mut Vec<u8>, what: &str) -> Result<(), InitrdError> {
    let room = MAX_UNPACKED.saturating_sub(out.len() as u64);
    let n = Read::take(r, room + 1)
        .read_to_end(out)
        .map_err(|e| InitrdError::Corrupt(format!("{what}: {e}")))?;
    if n as u64 > room {
        return Err(InitrdError::Corrupt(format!(
            "{what}: more than {MAX_UNPACKED} bytes unpacked"
        )));
    }
    Ok(())
}

/// The compression the kernel knows but hotclone does not read, by magic.
fn unsupported(rest: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], "xz"),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
        (&[0x04, 0x22, 0x4d, 0x18], "lz4"),
        (b"BZh", "bzip2"),
        (&[0x5d, 0x00, 0x00], "lzma"),
        (&[0x89, 0x4c, 0x5a, 0x4f], "lzo"),
    ];
    MAGIC
        .iter()
        .find(|(m, _)| rest.starts_with(m))
        .map(|(_, n)| *n)
}

/// A module file's driver name: `.../virtio-blk.ko.zst` is `virtio_blk`.
fn driver_of(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|s| file.strip_suffix(s))?;
    Some(stem.replace('-', "_"))
}

/// The drivers of `wanted` neither in the initrd (`members`, as a module
/// file, compressed or not) nor built into the kernel (`builtin`, the text
/// of its `modules.builtin`). `-` and `_` are the same, as for the kernel.
pub fn missing_drivers(members: &[String], builtin: &str, wanted: &[String]) -> Vec<String> {
    let have: HashSet<String> = members
        .iter()
        .map(String::as_str)
        .chain(builtin.lines().map(str::trim))
        .filter_map(driver_of)
        .collect();
    wanted
        .iter()
        .filter(|w| !have.contains(&w.replace('-', "_")))
        .cloned()
        .collect()
}

/// The entry a bootloader boots by default, as its config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub title: String,
    /// The kernel image path and its 1-based line; `None` for an entry
    /// that boots no Linux kernel (chainloader, memtest).
    pub kernel: Option<(usize, String)>,
    /// The initrd paths (several for GRUB 2's `initrd a b`) and their line.
    pub initrds: Vec<String>,
    pub initrd_line: usize,
}

/// A driver the initrd must hold: any one of `alternatives`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub alternatives: Vec<String>,
}

impl Need {
    fn one(d: &str) -> Self {
        Need {
            alternatives: vec![d.to_string()],
        }
    }
    fn label(&self) -> String {
        match self.alternatives.split_first() {
            Some((first, [])) => first.clone(),
            Some((first, rest)) => format!("{first} (or {})", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// The drivers a root filesystem type needs, any one of them. ext4's
/// driver serves ext3 and ext2 on the kernels that dropped those (4.3+)
/// and on many before (CONFIG_EXT4_USE_FOR_EXT23), so ext3 accepts ext3 or
/// ext4, ext2 accepts ext2 or ext4. Other types need the driver of their
/// name (xfs, btrfs, reiserfs...).
pub fn fs_drivers(fs_type: &str) -> Vec<String> {
    let names: &[&str] = match fs_type {
        "" | "swap" => &[],
        "ext3" => &["ext3", "ext4"],
        "ext2" => &["ext2", "ext4"],
        other => return vec![other.to_string()],
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// What the initrd of kernel `version` must hold: virtio_blk and
/// virtio_pci when the conversion put them in (`ctx.drivers`), and the
/// root filesystem's driver; each only when that kernel has it at all
/// ([`super::kernel_modules`]; a kernel without virtio fails elsewhere).
pub fn needed_drivers(root: &Path, ctx: &ConvertContext, version: &str) -> Vec<Need> {
    let known = super::kernel_modules(root, version);
    let has = |d: &String| match &known {
        Some(k) => k.contains(&d.replace('-', "_")),
        None => true,
    };
    let mut needs: Vec<Need> = ["virtio_blk", "virtio_pci"]
        .into_iter()
        .filter(|d| ctx.drivers.iter().any(|c| c.replace('-', "_") == *d))
        .map(Need::one)
        .filter(|n| n.alternatives.iter().all(has))
        .collect();
    let fs: Vec<String> = fs_drivers(ctx.root().map_or("", |r| r.fs_type.as_str()))
        .into_iter()
        .filter(has)
        .collect();
    if !fs.is_empty() {
        needs.push(Need { alternatives: fs });
    }
    needs
}

/// A path from a bootloader config, found in the clone: `root/<path>`, or
/// `root/boot/<path>` (a config on a separate /boot names its files from
/// that filesystem's top). A GRUB device prefix (`($root)`, `(hd0,0)`) is
/// dropped. Symlinks are followed inside `root` (an absolute target is
/// taken from `root`, never from this host).
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = relative(path);
    if rel.is_empty() {
        return None;
    }
    [root.join(rel), root.join("boot").join(rel)]
        .into_iter()
        .find_map(|c| follow(root, c))
}

/// A config path without its GRUB device prefix (`($root)`, `(hd0,0)`)
/// and leading slashes.
fn relative(path: &str) -> &str {
    let p = match path.strip_prefix('(') {
        Some(r) => r.split_once(')').map_or(r, |x| x.1),
        None => path,
    };
    p.trim_start_matches('/')
}

/// `path` with its last-component symlinks followed inside `root`, when
/// it ends at a file.
fn follow(root: &Path, mut path: PathBuf) -> Option<PathBuf> {
    for _ in 0..16 {
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.file_type().is_symlink() {
            return meta.is_file().then_some(path);
        }
        let target = std::fs::read_link(&path).ok()?;
        path = match target.strip_prefix("/") {
            Ok(abs) => root.join(abs),
            Err(_) => path.parent()?.join(target),
        };
    }
    None
}

/// The kernel version of an image file: `vmlinuz-6.1.0-18-amd64` is
/// `6.1.0-18-amd64`.
pub fn kernel_version(image: &Path) -> Option<String> {
    let name = image.file_name()?.to_str()?;
    let (_, v) = name.split_once('-')?;
    (!v.is_empty() && name.starts_with("vmlinu")).then(|| v.to_string())
}

/// Where a config path is in the guest: a path not under /boot is named
/// from a separate /boot's top (`/initrd.img-X` is `/boot/initrd.img-X`).
fn in_boot(path: &str) -> String {
    let rel = relative(path);
    if rel.starts_with("boot/") {
        format!("/{rel}")
    } else {
        format!("/boot/{rel}")
    }
}

/// Show a path in the clone as the guest sees it.
fn shown(root: &Path, p: &Path) -> String {
    format!("/{}", p.strip_prefix(root).unwrap_or(p).display())
}

/// Check the default entry `entry` of the bootloader config `cfg` (as the
/// guest names it, `/boot/grub/grub.cfg`): its kernel and initrds exist in
/// the clone and the initrds hold [`needed_drivers`] or the kernel has
/// them built in. Ok carries notes (what could not be checked).
pub fn check_boot_entry(
    root: &Path,
    ctx: &ConvertContext,
    cfg: &str,
    entry: &BootEntry,
) -> Result<Vec<String>, ConvertError> {
    let mut notes = Vec::new();
    let Some((kline, kpath)) = &entry.kernel else {
        notes.push(format!(
            "{cfg}: the default entry \"{}\" boots no Linux kernel; its initrd was not checked",
            entry.title
        ));
        return Ok(notes);
    };
    let image = resolve(root, kpath).ok_or_else(|| {
        ConvertError::Verify(format!(
            "{kpath} (the kernel of {cfg} line {kline}) is not in the clone: the VM has no kernel to boot. Reinstall the kernel package in the clone, or point the default entry at an installed kernel"
        ))
    })?;
    let version = match kernel_version(&image) {
        Some(v) => v,
        None => {
            notes.push(format!(
                "{cfg} line {kline}: no kernel version in the name {}; checked the initrd against {}'s modules",
                shown(root, &image),
                ctx.guest.kernel
            ));
            ctx.guest.kernel.clone()
        }
    };
    let builtin = std::fs::read_to_string(
        root.join("lib/modules")
            .join(&version)
            .join("modules.builtin"),
    )
    .unwrap_or_default();
    let needs = needed_drivers(root, ctx, &version);
    if entry.initrds.is_empty() {
        let missing = unmet(&needs, &[], &builtin);
        if !missing.is_empty() {
            return Err(ConvertError::Verify(format!(
                "{} (the kernel of {cfg} line {kline}) boots without an initrd and has no built-in {}: {}. The entry needs an initrd: {}, then regenerate {cfg}",
                shown(root, &image),
                labels(&missing),
                consequence(&missing),
                advice(ctx, &missing, None, &version, true)
            )));
        }
        return Ok(notes);
    }
    let mut members = Vec::new();
    let mut shown_initrds = Vec::new();
    for path in &entry.initrds {
        let line = entry.initrd_line;
        let file = resolve(root, path).ok_or_else(|| {
            ConvertError::Verify(format!(
                "{path} (the initrd of {cfg} line {line}) is not in the clone: the VM would not boot. {}",
                advice(ctx, &[], Some(&in_boot(path)), &version, true)
            ))
        })?;
        let name = shown(root, &file);
        let bytes = std::fs::read(&file).map_err(|error| ConvertError::Io {
            path: file.clone(),
            error,
        })?;
        match initrd_members(&bytes) {
            Ok(m) => members.extend(m),
            Err(e @ InitrdError::Unsupported { .. }) => {
                notes.push(format!(
                    "the initrd at {name} (of {cfg} line {line}) is {e}: its drivers were not checked"
                ));
                return Ok(notes);
            }
            Err(e) => {
                return Err(ConvertError::Verify(format!(
                    "{name} (the initrd of {cfg} line {line}) is {e}: the VM would not boot with it. {}",
                    advice(ctx, &[], Some(&name), &version, false)
                )))
            }
        }
        shown_initrds.push(name);
    }
    let missing = unmet(&needs, &members, &builtin);
    if !missing.is_empty() {
        let names = shown_initrds.join(" + ");
        return Err(ConvertError::Verify(format!(
            "{names} (the initrd of {cfg} line {}) lacks {}, and the kernel {version} has none of them built in: {}. {}",
            entry.initrd_line,
            labels(&missing),
            consequence(&missing),
            advice(
                ctx,
                &missing,
                // The main image comes last (after microcode).
                shown_initrds.last().map(String::as_str),
                &version,
                false,
            )
        )));
    }
    Ok(notes)
}

/// The needs of which no alternative is present.
fn unmet(needs: &[Need], members: &[String], builtin: &str) -> Vec<Need> {
    needs
        .iter()
        .filter(|n| {
            missing_drivers(members, builtin, &n.alternatives).len() == n.alternatives.len()
        })
        .cloned()
        .collect()
}

fn labels(needs: &[Need]) -> String {
    needs.iter().map(Need::label).collect::<Vec<_>>().join(", ")
}

/// What the VM does without these drivers.
fn consequence(missing: &[Need]) -> &'static str {
    let virtio = missing
        .iter()
        .any(|n| n.alternatives.iter().any(|a| a.starts_with("virtio")));
    let fs = missing
        .iter()
        .any(|n| n.alternatives.iter().all(|a| !a.starts_with("virtio")));
    match (virtio, fs) {
        (true, true) => "the VM could not find its disk nor mount its root filesystem",
        (true, false) => "the VM could not find its disk",
        _ => "the VM could not mount its root filesystem",
    }
}

/// How to rebuild the image with the guest's initramfs tool: add the
/// `missing` drivers (when any) to its configuration, then run it for
/// `version` (creating the image when `create`).
fn advice(
    ctx: &ConvertContext,
    missing: &[Need],
    initrd: Option<&str>,
    version: &str,
    create: bool,
) -> String {
    let drivers: Vec<&str> = missing
        .iter()
        .filter_map(|n| n.alternatives.first().map(String::as_str))
        .collect();
    let list = drivers.join(", ");
    let image = initrd.unwrap_or("<initrd>");
    let tool = super::family::initramfs_tool(&ctx.guest, ctx.copy);
    let (add, run) = match tool.name() {
        "dracut" => (
            format!("Add {list} to add_drivers in /etc/dracut.conf.d/hotclone.conf and run"),
            format!("dracut -f --no-hostonly {image} {version}"),
        ),
        "SUSE mkinitrd" => (
            format!("Add {list} to INITRD_MODULES in /etc/sysconfig/kernel and run"),
            format!("mkinitrd -k vmlinuz-{version} -i {image}"),
        ),
        "mkinitrd" => {
            let with: String = drivers.iter().map(|d| format!("--with={d} ")).collect();
            (
                "Run".to_string(),
                format!("mkinitrd -f {with}{image} {version}"),
            )
        }
        _ => (
            format!("Add {list} to /etc/initramfs-tools/modules (or MODULES=most in /etc/initramfs-tools/initramfs.conf) and run"),
            format!(
                "update-initramfs {} -k {version}",
                if create { "-c" } else { "-u" }
            ),
        ),
    };
    if drivers.is_empty() {
        format!("Rebuild it: run {run} in the clone")
    } else {
        format!("{add} {run} in the clone")
    }
}

/// An initramfs as Debian builds one, for tests: an uncompressed early
/// archive (`early`), NUL padding, then `main` compressed with zstd (or
/// gzip when `zstd` is false); without `early`, just the compressed one
/// (RHEL 5/6's form).
#[cfg(test)]
pub(crate) fn fake_initrd(early: &[&str], main: &[&str], zstd: bool) -> Vec<u8> {
    use std::io::Write;
    let archive = |files: &[&str]| {
        let mut c = crate::rescue::cpio::Cpio::new(Vec::new());
        for f in files {
            c.file(f, 0o644, b"\x7fELF module").expect("in memory");
        }
        c.finish().expect("in memory")
    };
    let mut img = Vec::new();
    if !early.is_empty() {
        img = archive(early);
        img.extend_from_slice(&[0; 512]);
    }
    let main = archive(main);
    if zstd {
        img.extend(zstd::encode_all(&main[..], 3).expect("in memory"));
    } else {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&main).expect("in memory");
        img.extend(e.finish().expect("in memory"));
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rescue::cpio::Cpio;
    use std::io::Write;

    /// A guest with no bootloader of its own is converted since issue 13
    /// (this host's GRUB); the rebuild advice picked the tool through the
    /// bootloader-dependent module choice, which refused it, and told a
    /// RHEL or SUSE guest to run Debian's update-initramfs.
    #[test]
    fn regression_rebuild_advice_names_the_guests_tool_without_a_bootloader() {
        use crate::convert::Guest;
        use crate::probe::{BootloaderKind, DistroFamily};
        let ctx = |family, id: &str, version: &str| {
            ConvertContext::new(
                Guest {
                    family,
                    id: id.into(),
                    version: Some(version.into()),
                    bootloader: BootloaderKind::None,
                    kernel: "K".into(),
                    network_styles: vec![],
                },
                vec![],
            )
        };
        let need = [Need {
            alternatives: vec!["virtio_blk".into()],
        }];
        let rhel7 = advice(
            &ctx(DistroFamily::RedHat, "centos", "7.9"),
            &need,
            Some("/boot/initramfs-K.img"),
            "K",
            false,
        );
        assert!(
            rhel7.contains("dracut -f --no-hostonly /boot/initramfs-K.img K"),
            "{rhel7}"
        );
        let sles11 = advice(
            &ctx(DistroFamily::Suse, "sles", "11.4"),
            &need,
            Some("/boot/initrd-K"),
            "K",
            false,
        );
        assert!(
            sles11.contains("INITRD_MODULES")
                && sles11.contains("mkinitrd -k vmlinuz-K -i /boot/initrd-K"),
            "{sles11}"
        );
        let debian = advice(
            &ctx(DistroFamily::Debian, "debian", "5"),
            &need,
            None,
            "K",
            true,
        );
        assert!(debian.contains("update-initramfs -c -k K"), "{debian}");
    }

    fn archive(files: &[&str]) -> Vec<u8> {
        let mut c = Cpio::new(Vec::new());
        for f in files {
            c.file(f, 0o644, b"module bytes").unwrap();
        }
        c.finish().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Debian's layout: an uncompressed early archive (microcode), NUL
    /// padding, then the compressed main archive.
    fn debian_like(main: Vec<u8>) -> Vec<u8> {
        let mut img = archive(&["kernel/x86/microcode/GenuineIntel.bin"]);
        img.extend_from_slice(&[0; 512]);
        img.extend(main);
        img
    }

    const MAIN: &[&str] = &[
        "usr/lib/modules/6.1.0-18-amd64/kernel/drivers/block/virtio_blk.ko",
        "usr/lib/modules/6.1.0-18-amd64/kernel/fs/ext4/ext4.ko.xz",
        "init",
    ];

    fn expected() -> Vec<String> {
        std::iter::once("kernel/x86/microcode/GenuineIntel.bin")
            .chain(MAIN.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn an_early_cpio_then_a_zstd_main_archive_lists_both() {
        let main = zstd::encode_all(&archive(MAIN)[..], 3).unwrap();
        assert_eq!(initrd_members(&debian_like(main)), Ok(expected()));
    }

    #[test]
    fn an_early_cpio_then_a_gzip_main_archive_lists_both() {
        assert_eq!(
            initrd_members(&debian_like(gzip(&archive(MAIN)))),
            Ok(expected())
        );
    }

    #[test]
    fn a_single_gzip_archive_and_a_raw_one_are_read() {
        let members = || MAIN.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(initrd_members(&gzip(&archive(MAIN))), Ok(members()));
        assert_eq!(initrd_members(&archive(MAIN)), Ok(members()));
        // The crc variant and two archives in one compressed stream.
        let mut crc = archive(&["a"]);
        crc[5] = b'2';
        crc.extend(archive(&["b"]));
        assert_eq!(
            initrd_members(&gzip(&crc)),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
    }

    #[test]
    fn a_compressed_segment_ends_where_its_stream_ends() {
        let mut img = gzip(&archive(&["a"]));
        img.extend_from_slice(&[0; 3]);
        img.extend(archive(&["b"]));
        img.extend(zstd::encode_all(&archive(&["c"])[..], 1).unwrap());
        img.extend(archive(&["d"]));
        let want: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(initrd_members(&img), Ok(want));
        let img = fake_initrd(&["early"], &["main"], false);
        assert_eq!(
            initrd_members(&img),
            Ok(vec!["early".to_string(), "main".to_string()])
        );
    }

    #[test]
    fn unreadable_compressions_name_themselves() {
        let mut img = archive(&["kernel/x86/microcode/AuthenticAMD.bin"]);
        img.extend_from_slice(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2, 3]);
        let e = initrd_members(&img).unwrap_err();
        assert_eq!(e, InitrdError::Unsupported { name: "xz" });
        assert_eq!(
            e.to_string(),
            "compressed with xz, which hotclone cannot read"
        );
        for (magic, name) in [
            (&[0x02u8, 0x21, 0x4c, 0x18][..], "lz4"),
            (&b"BZh91AY"[..], "bzip2"),
            (&[0x5d, 0, 0, 0x80], "lzma"),
        ] {
            assert_eq!(
                initrd_members(magic),
                Err(InitrdError::Unsupported { name })
            );
        }
    }

    #[test]
    fn garbage_truncation_and_corruption_are_errors_not_panics() {
        assert!(initrd_members(b"").is_err());
        assert!(initrd_members(&[0; 64]).is_err());
        assert!(initrd_members(b"hello, world").is_err());
        let good = debian_like(zstd::encode_all(&archive(MAIN)[..], 3).unwrap());
        let gz = gzip(&archive(MAIN));
        for img in [archive(MAIN), good, gz] {
            for cut in 0..img.len() {
                let _ = initrd_members(&img[..cut]);
            }
            let mut seed = 0x2545_f491_u32;
            for _ in 0..2000 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let mut bad = img.clone();
                let i = seed as usize % bad.len();
                bad[i] ^= (seed >> 8) as u8 | 1;
                let _ = initrd_members(&bad);
            }
        }
        // A header claiming a huge member fails cleanly.
        let mut big = archive(&["x"]);
        big[54..62].copy_from_slice(b"ffffffff");
        assert!(matches!(initrd_members(&big), Err(InitrdError::Corrupt(_))));
        // No trailer: truncated.
        let whole = archive(&["x"]);
        let cut = whole.len() - 120;
        assert!(initrd_members(&whole[..cut]).is_err());
    }

    #[test]
    fn drivers_count_as_modules_in_any_compression_or_built_in() {
        let members: Vec<String> = [
            "lib/modules/5.10.0/kernel/drivers/block/virtio_blk.ko.zst",
            "lib/modules/5.10.0/kernel/drivers/virtio/virtio-pci.ko.gz",
            "lib/ext3.ko",
            "lib/virtio_blk.ko.bak",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            missing_drivers(&members, "", &want(&["virtio_blk", "virtio_pci", "ext3"])),
            Vec::<String>::new()
        );
        assert_eq!(
            missing_drivers(&members, "", &want(&["ext4", "virtio_net"])),
            want(&["ext4", "virtio_net"])
        );
        let builtin = "kernel/fs/ext4/ext4.ko\nkernel/drivers/net/virtio_net.ko\n";
        assert_eq!(
            missing_drivers(&members, builtin, &want(&["ext4", "virtio_net", "xfs"])),
            want(&["xfs"])
        );
        // A name that merely ends like a driver is not it.
        assert_eq!(
            missing_drivers(
                &want(&["lib/not_virtio_blk.ko"]),
                "",
                &want(&["virtio_blk"])
            ),
            want(&["virtio_blk"])
        );
    }

    #[test]
    fn config_paths_are_found_in_the_root_or_its_boot_and_never_on_the_host() {
        let root = std::env::temp_dir().join(format!("hotclone-initrd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.1.0-18-amd64"), b"k").unwrap();
        std::os::unix::fs::symlink("boot/vmlinuz-6.1.0-18-amd64", root.join("vmlinuz")).unwrap();
        // An absolute link is the guest's, read inside the root.
        std::os::unix::fs::symlink("/boot/vmlinuz-6.1.0-18-amd64", root.join("boot/vmlinuz"))
            .unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("boot/host")).unwrap();
        let k = root.join("boot/vmlinuz-6.1.0-18-amd64");
        assert_eq!(
            resolve(&root, "/boot/vmlinuz-6.1.0-18-amd64"),
            Some(k.clone())
        );
        assert_eq!(resolve(&root, "/vmlinuz-6.1.0-18-amd64"), Some(k.clone()));
        assert_eq!(
            resolve(&root, "($root)/vmlinuz-6.1.0-18-amd64"),
            Some(k.clone())
        );
        assert_eq!(resolve(&root, "/vmlinuz"), Some(k.clone()));
        assert_eq!(resolve(&root, "/boot/vmlinuz"), Some(k));
        assert_eq!(resolve(&root, "/boot/host"), None);
        assert_eq!(resolve(&root, "/boot"), None);
        assert_eq!(resolve(&root, "/"), None);
        assert_eq!(in_boot("/initrd.img-1"), "/boot/initrd.img-1");
        assert_eq!(in_boot("(hd0,0)/boot/initrd.img-1"), "/boot/initrd.img-1");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn kernel_versions_come_from_the_image_name() {
        assert_eq!(
            kernel_version(Path::new("/r/boot/vmlinuz-6.1.0-18-amd64")).as_deref(),
            Some("6.1.0-18-amd64")
        );
        assert_eq!(kernel_version(Path::new("/r/vmlinuz")), None);
        assert_eq!(kernel_version(Path::new("/r/boot/xen.gz-2.6.18")), None);
    }

    #[test]
    fn filesystem_drivers_accept_ext4_for_older_ext() {
        assert_eq!(fs_drivers("ext4"), vec!["ext4"]);
        assert_eq!(fs_drivers("ext3"), vec!["ext3", "ext4"]);
        assert_eq!(fs_drivers("xfs"), vec!["xfs"]);
        assert!(fs_drivers("").is_empty());
    }
}
