//! The source's file listing: one `find` over each filesystem to copy,
//! taken before any data moves, so the client knows the totals (progress,
//! ETA) and can tell later whether a file changed while it was read.
//!
//! GNU find prints NUL-separated records (any file name survives). Without
//! `-printf` (busybox), `find -exec stat -c` prints one line per file; a
//! name containing a newline cannot be told apart there, and such a line is
//! reported as unparseable instead of guessed at.

use crate::probe::Capabilities;

/// What a file is, from find's `%y` or the type bits of `stat %f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
}

impl FileKind {
    /// The name the journal records: "file", "dir", "symlink"...
    pub fn name(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::CharDev => "chardev",
            FileKind::BlockDev => "blockdev",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    /// Absolute path on the source, raw bytes.
    pub path: Vec<u8>,
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub inode: u64,
    pub nlink: u32,
    /// The filesystem's device number, to keep hardlink sets per filesystem.
    pub dev: u64,
}

impl ListedFile {
    /// A plain file owned by root, mode 644: a fixture for tests.
    #[cfg(test)]
    pub fn test_file(path: &str, size: u64, mtime: i64) -> ListedFile {
        ListedFile {
            path: path.as_bytes().to_vec(),
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime,
            mtime_nsec: 0,
            ctime: 0,
            inode: 1,
            nlink: 1,
            dev: 1,
        }
    }
}

/// The GNU find format: fixed fields, then the path, NUL-terminated.
const GNU_FORMAT: &str = r"%y %m %U %G %s %T@ %C@ %i %n %D\0%p\0";
/// The busybox/coreutils stat format: raw mode in hex, then the name last.
const STAT_FORMAT: &str = "%f %u %g %s %Y %Z %i %h %d %n";

/// The remote command that lists `roots` (absolute paths of the mount
/// points to copy), staying on each one's filesystem. GNU find does not
/// descend where a `prune` pattern (find's `-path`, see [`prune_pattern`])
/// matches: a big excluded tree costs nothing to list. The caller still
/// filters the listing by its excludes (busybox's find is not given them).
pub fn command(caps: &Capabilities, roots: &[&str], prune: &[String]) -> String {
    if caps.find_printf {
        return gnu_command(roots, prune);
    }
    let roots: Vec<String> = roots.iter().map(|r| crate::shell::quote(r)).collect();
    format!(
        "LC_ALL=C find {} -xdev -exec stat -c '{STAT_FORMAT}' {{}} +",
        roots.join(" ")
    )
}

/// [`command`] for a source with GNU find: one find over `roots`.
pub fn gnu_command(roots: &[&str], prune: &[String]) -> String {
    let roots: Vec<String> = roots.iter().map(|r| crate::shell::quote(r)).collect();
    format!(
        "LC_ALL=C find {} -xdev{} -printf '{GNU_FORMAT}'",
        roots.join(" "),
        pruned(prune)
    )
}

/// The remote command of one find of a [`super::walk`]: GNU find over the
/// starts NUL-separated on its stdin (any byte in a name survives), from
/// `min_depth` to `max_depth` levels below them, each on its start's
/// filesystem, printing what [`command`] prints.
pub fn walk_command(min_depth: usize, max_depth: usize, prune: &[String]) -> String {
    let find = format!(
        "exec find \"$@\" -xdev -mindepth {min_depth} -maxdepth {max_depth}{} -printf '{GNU_FORMAT}'",
        pruned(prune)
    );
    format!(
        "LC_ALL=C xargs -0 -r sh -c {} sh",
        crate::shell::quote(&find)
    )
}

/// find's prune clause (" \( -path P -o ... \) -prune -o"), or nothing.
fn pruned(prune: &[String]) -> String {
    if prune.is_empty() {
        return String::new();
    }
    let paths: Vec<String> = prune
        .iter()
        .map(|p| format!("-path {}", crate::shell::quote(p)))
        .collect();
    format!(" \\( {} \\) -prune -o", paths.join(" -o "))
}

/// find's `-path` pattern for an excluded absolute path: the path itself,
/// or (`contents_only`) what is inside it. Glob characters in the path
/// are escaped, so it matches only itself.
pub fn prune_pattern(path: &str, contents_only: bool) -> Option<String> {
    let path = path.trim_end_matches('/');
    if !path.starts_with('/') || path.len() < 2 {
        return None;
    }
    let mut out = String::with_capacity(path.len() + 2);
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    if contents_only {
        out.push_str("/*");
    }
    Some(out)
}

/// A line or record that could not be read, kept for the warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unparsed(pub String);

/// "1700000000.1234567890" -> (1700000000, 123456789).
fn parse_time(text: &str) -> Option<(i64, u32)> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nsec = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some((secs, nsec))
}

fn kind_from_letter(c: &str) -> Option<FileKind> {
    Some(match c {
        "f" => FileKind::File,
        "d" => FileKind::Dir,
        "l" => FileKind::Symlink,
        "c" => FileKind::CharDev,
        "b" => FileKind::BlockDev,
        "p" => FileKind::Fifo,
        "s" => FileKind::Socket,
        _ => return None,
    })
}

fn kind_from_mode(raw: u32) -> Option<FileKind> {
    Some(match raw & 0o170000 {
        0o100000 => FileKind::File,
        0o040000 => FileKind::Dir,
        0o120000 => FileKind::Symlink,
        0o020000 => FileKind::CharDev,
        0o060000 => FileKind::BlockDev,
        0o010000 => FileKind::Fifo,
        0o140000 => FileKind::Socket,
        _ => return None,
    })
}

/// Parse `find -printf GNU_FORMAT` output.
pub fn parse_gnu(output: &[u8]) -> (Vec<ListedFile>, Vec<Unparsed>) {
    let mut files = Vec::new();
    let mut bad = Vec::new();
    let mut fields = output.split(|b| *b == 0);
    while let Some(head) = fields.next() {
        if head.is_empty() {
            continue;
        }
        let Some(path) = fields.next() else {
            bad.push(Unparsed(String::from_utf8_lossy(head).into_owned()));
            break;
        };
        gnu_record(head, path, &mut files, &mut bad);
    }
    (files, bad)
}

/// One `head NUL path` record: an entry, or an unparsed line.
fn gnu_record(head: &[u8], path: &[u8], files: &mut Vec<ListedFile>, bad: &mut Vec<Unparsed>) {
    match parse_gnu_head(head, path) {
        Some(f) => files.push(f),
        None => bad.push(Unparsed(format!(
            "{} {}",
            String::from_utf8_lossy(head),
            String::from_utf8_lossy(path)
        ))),
    }
}

fn parse_gnu_head(head: &[u8], path: &[u8]) -> Option<ListedFile> {
    let head = std::str::from_utf8(head).ok()?;
    let f: Vec<&str> = head.split(' ').collect();
    if f.len() != 10 {
        return None;
    }
    let (mtime, mtime_nsec) = parse_time(f[5])?;
    Some(ListedFile {
        path: path.to_vec(),
        kind: kind_from_letter(f[0])?,
        mode: u32::from_str_radix(f[1], 8).ok()?,
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        size: f[4].parse().ok()?,
        mtime,
        mtime_nsec,
        ctime: parse_time(f[6])?.0,
        inode: f[7].parse().ok()?,
        nlink: f[8].parse().ok()?,
        dev: f[9].parse().ok()?,
    })
}

/// Parse `stat -c STAT_FORMAT` lines (busybox or coreutils without GNU find).
pub fn parse_stat(output: &[u8]) -> (Vec<ListedFile>, Vec<Unparsed>) {
    let mut files = Vec::new();
    let mut bad = Vec::new();
    for line in output.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match parse_stat_line(line) {
            Some(f) => files.push(f),
            None => bad.push(Unparsed(String::from_utf8_lossy(line).into_owned())),
        }
    }
    (files, bad)
}

fn parse_stat_line(line: &[u8]) -> Option<ListedFile> {
    // Nine fields, then the name, which may itself contain spaces.
    let mut parts = line.splitn(10, |b| *b == b' ');
    let mut next = || parts.next().and_then(|p| std::str::from_utf8(p).ok());
    let raw = u32::from_str_radix(next()?, 16).ok()?;
    let uid = next()?.parse().ok()?;
    let gid = next()?.parse().ok()?;
    let size = next()?.parse().ok()?;
    let mtime = next()?.parse().ok()?;
    let ctime = next()?.parse().ok()?;
    let inode = next()?.parse().ok()?;
    let nlink = next()?.parse().ok()?;
    let dev = next()?.parse().ok()?;
    let path = parts.next()?;
    if !path.starts_with(b"/") {
        return None;
    }
    Some(ListedFile {
        path: path.to_vec(),
        kind: kind_from_mode(raw)?,
        mode: raw & 0o7777,
        uid,
        gid,
        size,
        mtime,
        mtime_nsec: 0,
        ctime,
        inode,
        nlink,
        dev,
    })
}

/// Parse whichever format `command` asked for.
pub fn parse(caps: &Capabilities, output: &[u8]) -> (Vec<ListedFile>, Vec<Unparsed>) {
    let mut parser = Parser::new(caps);
    parser.feed(output);
    parser.finish()
}

/// Parses a listing as it arrives, so the client never holds the raw
/// output (about 100 bytes an entry: 100 MB for a million) beside the
/// entries. Fed in chunks of any size, it gives what [`parse`] gives for
/// the whole output.
pub struct Parser {
    gnu: bool,
    /// The bytes after the last whole record.
    pending: Vec<u8>,
    files: Vec<ListedFile>,
    bad: Vec<Unparsed>,
}

impl Parser {
    pub fn new(caps: &Capabilities) -> Parser {
        if caps.find_printf {
            Parser::gnu()
        } else {
            Parser {
                gnu: false,
                ..Parser::gnu()
            }
        }
    }

    /// A parser of GNU find's records (a [`super::walk`]'s finds).
    pub fn gnu() -> Parser {
        Parser {
            gnu: true,
            pending: Vec::new(),
            files: Vec::new(),
            bad: Vec::new(),
        }
    }

    /// Parse the whole records of `chunk` (with what the last chunk left).
    pub fn feed(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
        let used = if self.gnu {
            gnu_records(&self.pending, &mut self.files, &mut self.bad)
        } else {
            let whole = self
                .pending
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            let (files, bad) = parse_stat(&self.pending[..whole]);
            self.files.extend(files);
            self.bad.extend(bad);
            whole
        };
        self.pending.drain(..used);
    }

    /// The entries, and the records that could not be read (a record cut
    /// off at the end among them).
    pub fn finish(mut self) -> (Vec<ListedFile>, Vec<Unparsed>) {
        let (files, bad) = if self.gnu {
            parse_gnu(&self.pending)
        } else {
            parse_stat(&self.pending)
        };
        self.files.extend(files);
        self.bad.extend(bad);
        (self.files, self.bad)
    }
}

/// The whole `head NUL path NUL` records at the start of `buf`, parsed as
/// [`parse_gnu`] does; returns how many bytes they took.
fn gnu_records(buf: &[u8], files: &mut Vec<ListedFile>, bad: &mut Vec<Unparsed>) -> usize {
    let nul = |from: usize| buf[from..].iter().position(|b| *b == 0).map(|i| from + i);
    let mut pos = 0;
    while let Some(head_end) = nul(pos) {
        if head_end == pos {
            pos += 1;
            continue;
        }
        let Some(path_end) = nul(head_end + 1) else {
            break;
        };
        let (head, path) = (&buf[pos..head_end], &buf[head_end + 1..path_end]);
        gnu_record(head, path, files, bad);
        pos = path_end + 1;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_records_with_odd_names() {
        let out = b"d 755 0 0 4096 1700000000.5000000000 1700000001.0000000000 2 18 2049\0/\0\
f 4755 1234 2345 12 1700000000.0000000000 1700000000.0000000000 77 1 2049\0/usr/bin/a b\nc\0\
l 777 0 0 7 1700000000.1 1700000000.1 78 1 2049\0/x\xff\0";
        let (files, bad) = parse_gnu(out);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(files.len(), 3);
        assert_eq!(
            (
                files[0].kind,
                files[0].mode,
                files[0].mtime,
                files[0].mtime_nsec
            ),
            (FileKind::Dir, 0o755, 1700000000, 500000000)
        );
        assert_eq!(files[1].path, b"/usr/bin/a b\nc");
        assert_eq!(
            (files[1].mode, files[1].uid, files[1].gid, files[1].inode),
            (0o4755, 1234, 2345, 77)
        );
        assert_eq!(
            (files[2].kind, files[2].path.as_slice(), files[2].mtime_nsec),
            (FileKind::Symlink, b"/x\xff".as_slice(), 100000000)
        );
    }

    #[test]
    fn busybox_stat_lines_keep_spaces_in_names_and_report_junk() {
        let out = b"41ed 0 0 1024 1795322734 1795322734 2 17 1795 /\n\
a1ff 0 0 12 1795322404 1795322404 74 1 1795 /bin/sh\n\
81a4 1000 1000 5 1 2 99 2 1795 /home/u/my file.txt\n\
garbage line\n";
        let (files, bad) = parse_stat(out);
        assert_eq!(files.len(), 3);
        assert_eq!((files[0].kind, files[0].mode), (FileKind::Dir, 0o755));
        assert_eq!(files[1].kind, FileKind::Symlink);
        assert_eq!(
            (files[2].path.as_slice(), files[2].nlink, files[2].mode),
            (b"/home/u/my file.txt".as_slice(), 2, 0o644)
        );
        assert_eq!(bad, vec![Unparsed("garbage line".into())]);
    }

    /// A million entries are held for a whole pass (issue 16, P5: a
    /// client under 256 MiB): each is 88 bytes beside its path.
    #[test]
    fn a_listed_entry_stays_small() {
        assert_eq!(std::mem::size_of::<ListedFile>(), 88);
    }

    /// A listing fed in chunks of any size (a record split anywhere, a
    /// record cut off at the end) parses as the whole output does: the
    /// samples above, and the local GNU find's listing of /etc.
    #[test]
    fn a_listing_fed_in_chunks_parses_as_the_whole_output() {
        let gnu = Capabilities::for_test(crate::probe::inventory::TarFlavour::Gnu, &[]);
        let mut busybox = gnu.clone();
        busybox.find_printf = false;
        let cmd = command(&gnu, &["/etc"], &[]);
        let etc = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .output()
            .unwrap()
            .stdout;
        assert!(etc.len() > 10_000, "find listed /etc: {} bytes", etc.len());
        let samples: [(&Capabilities, &[u8]); 5] = [
            (&gnu, b"d 755 0 0 4096 1700000000.5 1700000001.0 2 18 2049\0/\0\0f 644 0 0 1 1.0 1.0 3 1 9\0/a\nb\0bad\0/c\0"),
            (&gnu, b"f 644 0 0 1 1.0 1.0 3 1 9\0/a\0f 644 0 0 1 1.0 1.0 4 1 9\0/cut"),
            (&gnu, b"f 644 0 0 1 1.0 1.0 3 1 9\0/a\0f 644 0 0 1 1.0"),
            (&busybox, b"41ed 0 0 1024 1 1 2 17 1795 /\ngarbage\n\n81a4 0 0 5 1 2 99 2 1795 /a b\n81a4 0 0 5 1 2 99 2 1795 /cut"),
            (&gnu, &etc),
        ];
        for (caps, whole) in samples {
            let expected = if caps.find_printf {
                parse_gnu(whole)
            } else {
                parse_stat(whole)
            };
            assert!(!expected.0.is_empty());
            for size in [1, 2, 3, 7, 64, 4096, whole.len()] {
                let mut parser = Parser::new(caps);
                for chunk in whole.chunks(size) {
                    parser.feed(chunk);
                }
                assert_eq!(parser.finish(), expected, "chunks of {size}");
            }
        }
    }

    /// The pruned listing, run by the local GNU find on a real tree: an
    /// excluded tree is not entered, a `contents_only` one keeps only its
    /// directory, and a name with glob characters prunes only itself.
    #[test]
    fn excluded_trees_are_pruned_by_find_itself() {
        let tmp = std::env::temp_dir().join(format!("hc-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        for d in ["keep/a", "big/deep", "mnt/inside", "star*/x", "starry/y"] {
            std::fs::create_dir_all(tmp.join(d)).unwrap();
        }
        let root = tmp.to_str().unwrap();
        let prune: Vec<String> = [("big", false), ("mnt", true), ("star*", false)]
            .iter()
            .map(|(p, c)| prune_pattern(&format!("{root}/{p}/"), *c).unwrap())
            .collect();
        let caps = Capabilities::for_test(crate::probe::inventory::TarFlavour::Gnu, &[]);
        let cmd = command(&caps, &[root], &prune);
        let out = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .output()
            .unwrap();
        std::fs::remove_dir_all(&tmp).unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (files, bad) = parse_gnu(&out.stdout);
        assert!(bad.is_empty(), "{bad:?}");
        let mut names: Vec<String> = files
            .iter()
            .map(|f| String::from_utf8_lossy(&f.path[root.len()..]).into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["", "/keep", "/keep/a", "/mnt", "/starry", "/starry/y"]
        );
        assert_eq!(prune_pattern("/", false), None, "never the whole root");
    }
}
