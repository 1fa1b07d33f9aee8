//! Client side: a tar stream made by the source's own tar (GNU tar in gnu
//! or posix format, busybox tar) in, wire frames out.
//!
//! We walk the members ourselves (see [`TarReader`] for why) and use the
//! tar crate's `Header` for the ustar fields. Handled: ustar prefixes, GNU
//! long names and links, PAX records (path, linkpath, size, uid, gid,
//! mtime with nanoseconds), GNU base-256 numbers (sizes over 8 GiB), old
//! GNU sparse files ('S'), PAX sparse files (formats 0.0, 0.1 and 1.0,
//! which GNU tar writes with `--format=posix`, i.e. whenever `--xattrs` is
//! given), xattrs from `SCHILY.xattr.*` and ACLs from `SCHILY.acl.*`.

use std::io::{self, BufReader, Read};

use std::path::PathBuf;

use tar::EntryType;

use super::wire::{EntryKind, EntryMeta, WireWriter};
use super::StreamError;
use crate::progress::{FileWarning, Progress};

/// What one [`pump`] sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PumpStats {
    /// Entries sent (all kinds, files included).
    pub entries: u64,
    /// Regular files sent.
    pub files: u64,
    /// Content bytes of those files (logical size, holes included).
    pub bytes: u64,
    /// Tar entries not sent (reported as warnings).
    pub skipped: u64,
}

/// Reads a whole tar stream and sends every entry through `out`. Flushes
/// `out` at the end (it does not finish it: the caller may pump several
/// batches into one stream). Per-entry problems go to `progress`; an
/// unreadable tar stream or a broken output is an error.
pub fn pump(
    tar: impl Read,
    out: &mut WireWriter<impl io::Write>,
    progress: &mut dyn Progress,
) -> Result<PumpStats, StreamError> {
    let mut tar = TarReader {
        inner: BufReader::with_capacity(256 << 10, tar),
        offset: 0,
    };
    let mut stats = PumpStats::default();
    while let Some(raw) = tar.next_entry()? {
        let ty = raw.header.entry_type();
        let path = normalize(&raw.path);
        let shown = String::from_utf8_lossy(&path).into_owned();
        let header = &raw.header;
        let kind = match ty {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => EntryKind::File,
            EntryType::Directory => EntryKind::Dir,
            EntryType::Symlink => EntryKind::Symlink {
                target: raw.link.clone(),
            },
            EntryType::Link => EntryKind::Hardlink {
                target: normalize(&raw.link),
            },
            EntryType::Char | EntryType::Block => {
                let major = header.device_major().ok().flatten();
                let minor = header.device_minor().ok().flatten();
                let (Some(major), Some(minor)) = (major, minor) else {
                    skip(
                        progress,
                        &mut stats,
                        &path,
                        "the tar header has no readable device numbers",
                    );
                    tar.skip_data(raw.stored)?;
                    continue;
                };
                if ty == EntryType::Char {
                    EntryKind::CharDev { major, minor }
                } else {
                    EntryKind::BlockDev { major, minor }
                }
            }
            EntryType::Fifo => EntryKind::Fifo,
            other => {
                skip(
                    progress,
                    &mut stats,
                    &path,
                    &format!("tar entry type {:?} is not copied", other.as_byte() as char),
                );
                tar.skip_data(raw.stored)?;
                continue;
            }
        };
        let bad_field = |what: &str| StreamError::Entry {
            path: shown.clone(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("its {what} field is not a number"),
            ),
        };
        let mode = (parse_num(&header.as_bytes()[100..108]).ok_or_else(|| bad_field("mode"))?
            & 0o7777) as u32;
        let uid = match raw.pax.get_u64(b"uid") {
            Some(u) => u,
            None => parse_num(&header.as_bytes()[108..116]).ok_or_else(|| bad_field("uid"))? as u64,
        };
        let gid = match raw.pax.get_u64(b"gid") {
            Some(g) => g,
            None => parse_num(&header.as_bytes()[116..124]).ok_or_else(|| bad_field("gid"))? as u64,
        };
        let (mtime, mtime_nsec) = match raw.pax.get(b"mtime").and_then(parse_pax_time) {
            Some(t) => t,
            None => (
                parse_num(&header.as_bytes()[136..148]).ok_or_else(|| bad_field("mtime"))?,
                0,
            ),
        };
        let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
            (Ok(u), Ok(g)) => (u, g),
            _ => {
                progress.warning(&FileWarning::Degraded {
                    path: to_pathbuf(&path),
                    reason: format!("owner {uid}:{gid} does not fit in 32 bits; written as 0:0"),
                });
                (0, 0)
            }
        };
        let xattrs = xattrs_from_pax(&raw.pax, &path, progress);
        let mut meta = EntryMeta {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
            size: 0,
            xattrs,
        };
        stats.entries += 1;
        if meta.kind != EntryKind::File {
            out.entry(&meta)?;
            // Hardlink entries may carry data in some tars; it is the target's.
            tar.skip_data(raw.stored)?;
            continue;
        }
        let sparse = match raw.gnu_sparse {
            Some(map) => Some(map),
            None => SparseMap::from_pax(&raw.pax, &shown)?,
        };
        let mut data = (&mut tar.inner).take(raw.stored);
        progress.file_done(match &sparse {
            Some(map) => map.real_size,
            None => raw.stored,
        });
        match sparse {
            Some(SparseMap {
                real_size,
                segments: Some(segments),
            }) => {
                meta.size = real_size;
                let mut reader = SparseReader::new(&mut data, segments, real_size, &shown)?;
                send_file(out, &meta, &mut reader, &shown)?;
            }
            Some(SparseMap {
                real_size,
                segments: None,
            }) => {
                // Format 1.0: the map is at the start of the data.
                meta.size = real_size;
                let segments = read_map_1_0(&mut data, &shown)?;
                let mut reader = SparseReader::new(&mut data, segments, real_size, &shown)?;
                send_file(out, &meta, &mut reader, &shown)?;
            }
            None => {
                meta.size = raw.stored;
                send_file(out, &meta, &mut data, &shown)?;
            }
        }
        let left = data.limit();
        tar.offset += raw.stored - left;
        tar.skip_data(left)?;
        stats.files += 1;
        stats.bytes += meta.size;
    }
    out.flush()?;
    Ok(stats)
}

/// One tar member with its extension headers (PAX, GNU long names, old GNU
/// sparse maps) applied. Its data (`stored` bytes) is next in the stream.
struct RawEntry {
    header: tar::Header,
    path: Vec<u8>,
    link: Vec<u8>,
    pax: Pax,
    stored: u64,
    gnu_sparse: Option<SparseMap>,
}

/// A minimal tar member walker. The tar crate's `Archive` would do, except
/// that its PAX parser splits records at newlines, and GNU tar writes
/// newlines in PAX values: every `SCHILY.acl.*` record, names with
/// newlines, binary xattr values. We use its `Header` for the fields.
struct TarReader<R: Read> {
    inner: BufReader<R>,
    /// Bytes consumed so far (for messages and padding).
    offset: u64,
}

const MAX_EXT: u64 = 16 << 20;

impl<R: Read> TarReader<R> {
    fn block(&mut self) -> Result<Option<[u8; 512]>, StreamError> {
        let mut b = [0u8; 512];
        let mut got = 0;
        while got < 512 {
            match self.inner.read(&mut b[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(StreamError::Tar(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("cut off inside a header at byte {}", self.offset),
                    )))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StreamError::Tar(e)),
            }
        }
        self.offset += 512;
        Ok(Some(b))
    }

    fn padding(size: u64) -> u64 {
        (512 - size % 512) % 512
    }

    /// Skips `len` data bytes and the padding after them.
    fn skip_data(&mut self, len: u64) -> Result<(), StreamError> {
        let want = len + Self::padding(self.offset + len);
        let n = io::copy(&mut (&mut self.inner).take(want), &mut io::sink())
            .map_err(StreamError::Tar)?;
        self.offset += n;
        if n < want {
            return Err(StreamError::Tar(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("cut off inside data at byte {}", self.offset),
            )));
        }
        Ok(())
    }

    fn read_ext(&mut self, len: u64, what: &str) -> Result<Vec<u8>, StreamError> {
        if len > MAX_EXT {
            return Err(StreamError::Tar(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {what} of {len} bytes at byte {}", self.offset),
            )));
        }
        let mut v = vec![0u8; len as usize];
        self.inner.read_exact(&mut v).map_err(StreamError::Tar)?;
        self.offset += len;
        self.skip_data(0)?;
        Ok(v)
    }

    fn next_entry(&mut self) -> Result<Option<RawEntry>, StreamError> {
        let mut pax = Pax(Vec::new());
        let mut long_name = None;
        let mut long_link = None;
        loop {
            let Some(block) = self.block()? else {
                return Ok(None);
            };
            if block.iter().all(|&b| b == 0) {
                // End of one archive. Keep reading: busybox sources run tar
                // once per xargs batch, so archives follow each other, and
                // GNU tar's padding up to its record size is zeros too.
                continue;
            }
            let header = tar::Header::from_byte_slice(&block).clone();
            let sum: u64 = block
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        b as u64
                    }
                })
                .sum();
            // Some old tars summed signed bytes.
            let signed: i64 = block
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        b as i8 as i64
                    }
                })
                .sum();
            let stored_sum = parse_num(&block[148..156]);
            if stored_sum != Some(sum as i64) && stored_sum != Some(signed) {
                return Err(StreamError::Tar(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad header checksum at byte {}; this is not a tar stream, or it is damaged", self.offset - 512),
                )));
            }
            let size = parse_num(&block[124..136])
                .and_then(|s| u64::try_from(s).ok())
                .ok_or_else(|| {
                    StreamError::Tar(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad size field at byte {}", self.offset - 512),
                    ))
                })?;
            match block[156] {
                b'x' => {
                    let data = self.read_ext(size, "PAX header")?;
                    pax = Pax::parse(&data).map_err(|why| {
                        StreamError::Tar(io::Error::new(io::ErrorKind::InvalidData, why))
                    })?;
                }
                b'g' => self.skip_data(size)?,
                b'L' => long_name = Some(trim_nul(self.read_ext(size, "GNU long name")?)),
                b'K' => long_link = Some(trim_nul(self.read_ext(size, "GNU long link")?)),
                ty => {
                    let mut gnu_sparse = None;
                    let mut stored = size;
                    if ty == b'S' {
                        gnu_sparse = Some(self.old_gnu_sparse(&block)?);
                    } else if let Some(s) = pax.get_u64(b"size") {
                        stored = s;
                    }
                    // PAX sparse files carry their real name in GNU.sparse.name
                    // (path is a made-up "GNUSparseFile.<pid>/name").
                    let path = match (
                        pax.get(b"GNU.sparse.name").or_else(|| pax.get(b"path")),
                        long_name,
                    ) {
                        (Some(p), _) => p.to_vec(),
                        (None, Some(l)) => l,
                        (None, None) => header.path_bytes().into_owned(),
                    };
                    let link = match (pax.get(b"linkpath"), long_link) {
                        (Some(p), _) => p.to_vec(),
                        (None, Some(l)) => l,
                        (None, None) => header
                            .link_name_bytes()
                            .map(|l| l.into_owned())
                            .unwrap_or_default(),
                    };
                    return Ok(Some(RawEntry {
                        header,
                        path,
                        link,
                        pax,
                        stored,
                        gnu_sparse,
                    }));
                }
            }
        }
    }

    /// Old GNU sparse ('S'): four map entries in the header, more in
    /// extension blocks of 21 each.
    fn old_gnu_sparse(&mut self, block: &[u8; 512]) -> Result<SparseMap, StreamError> {
        let bad = |why: &str| {
            StreamError::Tar(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("old GNU sparse header: {why}"),
            ))
        };
        let mut segments = Vec::new();
        let mut push = |entry: &[u8]| -> Result<(), StreamError> {
            if entry.iter().all(|&b| b == 0) {
                return Ok(());
            }
            let off = parse_num(&entry[..12])
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| bad("bad offset"))?;
            let len = parse_num(&entry[12..24])
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| bad("bad length"))?;
            segments.push((off, len));
            Ok(())
        };
        for i in 0..4 {
            push(&block[386 + i * 24..386 + (i + 1) * 24])?;
        }
        let real_size = parse_num(&block[483..495])
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| bad("bad real size"))?;
        let mut extended = block[482] != 0;
        while extended {
            let ext = self.block()?.ok_or_else(|| bad("cut off"))?;
            for i in 0..21 {
                push(&ext[i * 24..(i + 1) * 24])?;
            }
            extended = ext[504] != 0;
        }
        Ok(SparseMap {
            real_size,
            segments: Some(segments),
        })
    }
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// A tar number: octal (NUL/space padded) or GNU base-256 (first byte
/// 0x80, or 0xff for negative).
fn parse_num(field: &[u8]) -> Option<i64> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            let negative = first == 0xff;
            let mut v: i64 = if negative { -1 } else { (first & 0x7f) as i64 };
            for &b in &field[1..] {
                v = v.checked_mul(256)?.checked_add(b as i64)?;
            }
            return Some(v);
        }
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    i64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

fn send_file(
    out: &mut WireWriter<impl io::Write>,
    meta: &EntryMeta,
    data: &mut dyn Read,
    shown: &str,
) -> Result<(), StreamError> {
    match out.file(meta, data) {
        Ok(_) => Ok(()),
        // A read error inside the tar data is the tar stream's fault.
        Err(super::wire::WireError::Truncated(_)) => Err(StreamError::Entry {
            path: shown.to_string(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the tar stream ended inside this file's data",
            ),
        }),
        Err(e) => Err(e.into()),
    }
}

fn skip(progress: &mut dyn Progress, stats: &mut PumpStats, path: &[u8], reason: &str) {
    stats.skipped += 1;
    progress.warning(&FileWarning::Skipped {
        path: to_pathbuf(path),
        reason: reason.to_string(),
    });
}

fn to_pathbuf(path: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(path))
}

/// Tar names to our relative form: no leading "/" or "./", no trailing "/",
/// no empty components; the root itself is ".".
pub fn normalize(raw: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = raw
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if parts.is_empty() {
        return b".".to_vec();
    }
    parts.join(&b'/')
}

/// The PAX records of one entry, in order (keys repeat in sparse 0.0).
struct Pax(Vec<(Vec<u8>, Vec<u8>)>);

impl Pax {
    /// Parses "<len> <key>=<value>\n" records; `len` counts the whole
    /// record, so values may hold newlines and any bytes.
    fn parse(mut data: &[u8]) -> Result<Pax, String> {
        let mut records = Vec::new();
        while !data.is_empty() && data[0] != 0 {
            let sp = data
                .iter()
                .position(|&b| b == b' ')
                .filter(|&i| i <= 20)
                .ok_or("a PAX record without a length")?;
            let len: usize = std::str::from_utf8(&data[..sp])
                .ok()
                .and_then(|l| l.parse().ok())
                .ok_or("a PAX record length is not a number")?;
            if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
                return Err(format!(
                    "a PAX record claims {len} bytes but does not end there"
                ));
            }
            let rec = &data[sp + 1..len - 1];
            let eq = rec
                .iter()
                .position(|&b| b == b'=')
                .ok_or("a PAX record without '='")?;
            records.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
            data = &data[len..];
        }
        Ok(Pax(records))
    }

    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    fn get_u64(&self, key: &[u8]) -> Option<u64> {
        std::str::from_utf8(self.get(key)?)
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// "1795323108.553540421" or "-12.5" to (seconds, nanoseconds) with the
/// nanoseconds counted forward from the (floored) second, as stat does.
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().ok()?;
    if !neg {
        Some((secs, nsec))
    } else if nsec == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - nsec))
    }
}

fn xattrs_from_pax(pax: &Pax, path: &[u8], progress: &mut dyn Progress) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (k, v) in &pax.0 {
        if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
            xattrs.retain(|(n, _)| n != name);
            xattrs.push((name.to_vec(), v.clone()));
        }
    }
    // GNU tar --acls without --xattrs-include='*' records ACLs only as text.
    for (key, xname) in [
        (&b"SCHILY.acl.access"[..], &b"system.posix_acl_access"[..]),
        (&b"SCHILY.acl.default"[..], &b"system.posix_acl_default"[..]),
    ] {
        let Some(text) = pax.get(key) else { continue };
        if text.is_empty() || xattrs.iter().any(|(n, _)| n == xname) {
            continue;
        }
        match acl_text_to_xattr(text) {
            Ok(Some(bin)) => xattrs.push((xname.to_vec(), bin)),
            Ok(None) => {}
            Err(why) => progress.warning(&FileWarning::Degraded {
                path: to_pathbuf(path),
                reason: format!(
                    "its ACL ({}) is not copied: {why}; run tar with --xattrs --xattrs-include='*' to get ACLs with numeric ids",
                    String::from_utf8_lossy(xname)
                ),
            }),
        }
    }
    xattrs
}

/// Text ACL ("user::rw-\nuser:1000:r--\ngroup::r--\nmask::r--\nother::r--")
/// to the kernel's `system.posix_acl_*` xattr value (version 2, sorted
/// entries). Named (non-numeric) qualifiers cannot be mapped: an error.
/// `None` for an ACL that only repeats the mode bits.
pub fn acl_text_to_xattr(text: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_string())?;
    let mut entries: Vec<(u16, u32, u16)> = Vec::new();
    for item in text.split(['\n', ',']) {
        let item = item.split('#').next().unwrap_or("").trim();
        if item.is_empty() {
            continue;
        }
        let fields: Vec<&str> = item.split(':').collect();
        let [tag, qual, perms] = fields[..] else {
            return Err(format!("entry {item:?} is not tag:qualifier:perms"));
        };
        let id =
            if qual.is_empty() {
                None
            } else {
                Some(qual.parse::<u32>().map_err(|_| {
                    format!("entry {item:?} names {qual:?} instead of a numeric id")
                })?)
            };
        let tag = match (tag, id) {
            ("user" | "u", None) => 0x01,
            ("user" | "u", Some(_)) => 0x02,
            ("group" | "g", None) => 0x04,
            ("group" | "g", Some(_)) => 0x08,
            ("mask" | "m", _) => 0x10,
            ("other" | "o", _) => 0x20,
            _ => return Err(format!("entry {item:?} has an unknown tag")),
        };
        let mut p = 0u16;
        for c in perms.chars() {
            p |= match c {
                'r' => 4,
                'w' => 2,
                'x' => 1,
                '-' => 0,
                _ => return Err(format!("entry {item:?} has unknown permissions")),
            };
        }
        entries.push((
            tag,
            if tag == 0x02 || tag == 0x08 {
                id.unwrap_or(u32::MAX)
            } else {
                u32::MAX
            },
            p,
        ));
    }
    if entries
        .iter()
        .all(|(t, _, _)| matches!(t, 0x01 | 0x04 | 0x20))
    {
        return Ok(None);
    }
    entries.sort_by_key(|&(t, id, _)| (t, id));
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, id, perm) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(Some(out))
}

/// A PAX sparse file: its real size and, for formats 0.0 and 0.1, its map
/// (format 1.0 keeps the map at the start of the data).
struct SparseMap {
    real_size: u64,
    segments: Option<Vec<(u64, u64)>>,
}

impl SparseMap {
    fn from_pax(pax: &Pax, shown: &str) -> Result<Option<SparseMap>, StreamError> {
        let bad = |why: &str| StreamError::SparseMap {
            path: shown.to_string(),
            why: why.to_string(),
        };
        if pax.get(b"GNU.sparse.major").is_some() {
            // Format 1.0 (major 1, minor 0).
            if pax.get(b"GNU.sparse.major") != Some(b"1")
                || pax.get(b"GNU.sparse.minor") != Some(b"0")
            {
                return Err(bad("unknown GNU sparse format version"));
            }
            let real_size = pax
                .get_u64(b"GNU.sparse.realsize")
                .ok_or_else(|| bad("no GNU.sparse.realsize"))?;
            return Ok(Some(SparseMap {
                real_size,
                segments: None,
            }));
        }
        if let Some(map) = pax.get(b"GNU.sparse.map") {
            // Format 0.1: "offset,size,offset,size".
            let real_size = pax
                .get_u64(b"GNU.sparse.size")
                .ok_or_else(|| bad("no GNU.sparse.size"))?;
            let nums: Option<Vec<u64>> = std::str::from_utf8(map).ok().and_then(|m| {
                m.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|n| n.trim().parse().ok())
                    .collect::<Option<Vec<u64>>>()
            });
            let nums = nums
                .filter(|n| n.len() % 2 == 0)
                .ok_or_else(|| bad("GNU.sparse.map is not a list of offset,size pairs"))?;
            let segments = nums.chunks(2).map(|c| (c[0], c[1])).collect();
            return Ok(Some(SparseMap {
                real_size,
                segments: Some(segments),
            }));
        }
        if pax.get(b"GNU.sparse.offset").is_some() {
            // Format 0.0: repeated GNU.sparse.offset / GNU.sparse.numbytes.
            let real_size = pax
                .get_u64(b"GNU.sparse.size")
                .ok_or_else(|| bad("no GNU.sparse.size"))?;
            let mut segments = Vec::new();
            let mut offset = None;
            for (k, v) in &pax.0 {
                let n = || {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                };
                match k.as_slice() {
                    b"GNU.sparse.offset" => {
                        offset = Some(n().ok_or_else(|| bad("GNU.sparse.offset is not a number"))?)
                    }
                    b"GNU.sparse.numbytes" => {
                        let off = offset
                            .take()
                            .ok_or_else(|| bad("GNU.sparse.numbytes without an offset"))?;
                        segments.push((
                            off,
                            n().ok_or_else(|| bad("GNU.sparse.numbytes is not a number"))?,
                        ));
                    }
                    _ => {}
                }
            }
            return Ok(Some(SparseMap {
                real_size,
                segments: Some(segments),
            }));
        }
        Ok(None)
    }
}

/// The 1.0 map: decimal numbers, one per line (count, then offset/size
/// pairs), padded with zeros to a 512-byte block.
fn read_map_1_0(data: &mut dyn Read, shown: &str) -> Result<Vec<(u64, u64)>, StreamError> {
    let bad = |why: String| StreamError::SparseMap {
        path: shown.to_string(),
        why,
    };
    let mut consumed: u64 = 0;
    let mut line = |consumed: &mut u64| -> Result<u64, StreamError> {
        let mut s = Vec::new();
        loop {
            let mut b = [0u8; 1];
            data.read_exact(&mut b)
                .map_err(|e| bad(format!("cannot read the map: {e}")))?;
            *consumed += 1;
            if b[0] == b'\n' {
                break;
            }
            if s.len() > 20 {
                return Err(bad("a map number is too long".into()));
            }
            s.push(b[0]);
        }
        std::str::from_utf8(&s)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("a map line is not a number".into()))
    };
    let count = line(&mut consumed)?;
    if count > 1 << 24 {
        return Err(bad(format!("{count} map entries is implausible")));
    }
    let mut segments = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let off = line(&mut consumed)?;
        let len = line(&mut consumed)?;
        segments.push((off, len));
    }
    let pad = (512 - consumed % 512) % 512;
    io::copy(&mut data.take(pad), &mut io::sink())
        .map_err(|e| bad(format!("cannot read the map padding: {e}")))?;
    Ok(segments)
}

/// The logical content of a sparse file: data segments from `inner`,
/// zeros between them and up to `real_size`.
struct SparseReader<'a> {
    inner: &'a mut dyn Read,
    segments: std::vec::IntoIter<(u64, u64)>,
    current: Option<(u64, u64)>,
    pos: u64,
    real_size: u64,
}

impl<'a> SparseReader<'a> {
    fn new(
        inner: &'a mut dyn Read,
        segments: Vec<(u64, u64)>,
        real_size: u64,
        shown: &str,
    ) -> Result<Self, StreamError> {
        let mut end = 0u64;
        for &(off, len) in &segments {
            let seg_end = off.checked_add(len);
            if off < end || seg_end.map_or(true, |e| e > real_size) {
                return Err(StreamError::SparseMap {
                    path: shown.to_string(),
                    why: format!("segment {off}+{len} overlaps or runs past the size {real_size}"),
                });
            }
            end = seg_end.unwrap_or(end);
        }
        let mut segments = segments.into_iter();
        let current = segments.next();
        Ok(SparseReader {
            inner,
            segments,
            current,
            pos: 0,
            real_size,
        })
    }
}

impl Read for SparseReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos >= self.real_size || buf.is_empty() {
                return Ok(0);
            }
            match self.current {
                Some((off, len)) if self.pos >= off + len => {
                    self.current = self.segments.next();
                }
                Some((off, len)) if self.pos >= off => {
                    let want = (off + len - self.pos).min(buf.len() as u64) as usize;
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "sparse data ended early",
                        ));
                    }
                    self.pos += n as u64;
                    return Ok(n);
                }
                next => {
                    let hole_end = next.map_or(self.real_size, |(off, _)| off);
                    let n = (hole_end - self.pos).min(buf.len() as u64) as usize;
                    buf[..n].fill(0);
                    self.pos += n as u64;
                    return Ok(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_archive(names: &[&str]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for name in names {
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &b"abc"[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Found wiring busybox sources: their tar runs once per xargs batch,
    /// so the stream is several archives back to back, and everything
    /// after the first end-of-archive marker was silently dropped.
    #[test]
    fn regression_concatenated_archives_are_all_read() {
        let mut stream = small_archive(&["a", "b"]);
        stream.extend(small_archive(&["c"]));
        let mut out = WireWriter::new(Vec::new()).unwrap();
        let stats = pump(&stream[..], &mut out, &mut crate::progress::Silent).unwrap();
        assert_eq!((stats.files, stats.bytes), (3, 9));
        let bytes = out.finish().unwrap();
        let mut reader = super::super::wire::WireReader::new(&bytes[..]).unwrap();
        let mut names = Vec::new();
        while let Some(frame) = reader.next_frame().unwrap() {
            if let super::super::wire::Frame::Entry(meta) = frame {
                names.push(String::from_utf8(meta.path).unwrap());
            }
        }
        assert_eq!(names, vec!["a", "b", "c"]);
    }

    #[test]
    fn normalize_strips_dot_slash_and_trailing_slash() {
        assert_eq!(normalize(b"./etc/"), b"etc".to_vec());
        assert_eq!(normalize(b"."), b".".to_vec());
        assert_eq!(normalize(b"./"), b".".to_vec());
        assert_eq!(normalize(b"/a//b/./c"), b"a/b/c".to_vec());
        assert_eq!(normalize(b"../x"), b"../x".to_vec());
    }

    #[test]
    fn pax_records_may_hold_newlines_and_binary() {
        let rec = |k: &[u8], v: &[u8]| {
            let body = [k, b"=", v, b"\n"].concat();
            // The length counts itself.
            let mut len = body.len() + 2;
            if (len + 1).to_string().len() + 1 + body.len() == len + 1 {
                len += 1;
            }
            [format!("{len} ").into_bytes(), body].concat()
        };
        let data = [
            rec(b"SCHILY.acl.access", b"user::rw-\ngroup::r--\n"),
            rec(b"path", b"a\nb\xff"),
            rec(b"SCHILY.xattr.user.x", &[0, 10, 255]),
        ]
        .concat();
        let pax = Pax::parse(&data).unwrap();
        assert_eq!(
            pax.get(b"SCHILY.acl.access"),
            Some(&b"user::rw-\ngroup::r--\n"[..])
        );
        assert_eq!(pax.get(b"path"), Some(&b"a\nb\xff"[..]));
        assert_eq!(pax.get(b"SCHILY.xattr.user.x"), Some(&[0u8, 10, 255][..]));
        assert!(Pax::parse(b"99 path=x\n").is_err());
        assert!(Pax::parse(b"x path=x\n").is_err());
        assert!(Pax::parse(b"9 pathx\n").is_err());
    }

    #[test]
    fn tar_numbers_octal_and_base256() {
        assert_eq!(parse_num(b"0000644\0"), Some(0o644));
        assert_eq!(parse_num(b"   755 \0"), Some(0o755));
        assert_eq!(parse_num(b"\0\0\0\0"), Some(0));
        // 9 GiB in GNU base-256 (12-byte size field).
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[4..].copy_from_slice(&(9u64 << 30).to_be_bytes());
        assert_eq!(parse_num(&f), Some(9 << 30));
        // -1 second (an mtime before 1970).
        assert_eq!(parse_num(&[0xff; 12]), Some(-1));
        assert_eq!(parse_num(b"12x4\0"), None);
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            parse_pax_time(b"1795323108.553540421"),
            Some((1795323108, 553540421))
        );
        assert_eq!(parse_pax_time(b"12"), Some((12, 0)));
        assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn acl_text_converts_numeric_and_refuses_names() {
        let bin =
            acl_text_to_xattr(b"user::rw-\ngroup::r--\nother::r--\nuser:1000:r-x\nmask::r-x\n")
                .unwrap()
                .unwrap();
        let mut want = 2u32.to_le_bytes().to_vec();
        for (t, p, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 5, 1000),
            (4, 4, u32::MAX),
            (0x10, 5, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            want.extend_from_slice(&t.to_le_bytes());
            want.extend_from_slice(&p.to_le_bytes());
            want.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(bin, want);
        assert_eq!(
            acl_text_to_xattr(b"user::rw-,group::r--,other::---").unwrap(),
            None
        );
        let err = acl_text_to_xattr(b"user::rw-\nuser:alice:r--\n").unwrap_err();
        assert!(err.contains("\"alice\""), "{err}");
    }

    #[test]
    fn sparse_reader_fills_holes() {
        let mut data: &[u8] = b"abcXY";
        let mut r = SparseReader::new(&mut data, vec![(2, 3), (8, 2)], 12, "f").unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"\0\0abc\0\0\0XY\0\0".to_vec());
        let mut data: &[u8] = b"";
        assert!(SparseReader::new(&mut data, vec![(2, 3), (4, 2)], 12, "f").is_err());
        assert!(SparseReader::new(&mut data, vec![(10, 3)], 12, "f").is_err());
    }
}
