//! The data path end to end on real files: a source tree with every kind
//! of entry, archived by the host's GNU tar exactly as a source would run
//! it, pumped through `tar_to_wire` into the agent (in process and through
//! the real `hotclone agent` binary), and the trees compared field by field.
//!
//! Needs root (mknod, chown to other users). Fails loudly without it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hotclone::progress::{FileWarning, Progress};
use hotclone::stream::tar_to_wire::pump;
use hotclone::stream::wire::{Ack, EntryKind, EntryMeta, Frame, WireWriter};
use hotclone::target::agent;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "agent_fidelity needs root (mknod, chown); run the suite as root"
    );
}

/// A fresh directory under cargo's per-test temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("agent_fidelity-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct Warnings(Vec<FileWarning>);

impl Progress for Warnings {
    fn warning(&mut self, w: &FileWarning) {
        self.0.push(w.clone());
    }
}

fn mknod(path: &Path, kind: libc::mode_t, major: u32, minor: u32) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is a valid path.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | 0o640, libc::makedev(major, minor)) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn set_mtime(path: &Path, secs: i64, nsec: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nsec);
    filetime::set_symlink_file_times(path, t, t).unwrap();
}

/// Pseudo-random bytes (xorshift), so the test needs no RNG crate.
fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(n);
    v
}

fn p(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

/// The source tree: every kind the agent must reproduce.
fn build_source(src: &Path) {
    let w = |rel: &[u8], data: &[u8]| fs::write(p(src, rel), data).unwrap();
    w(b"empty", b"");
    w(b"small", b"hello, world\n");
    w(b"random", &random_bytes(3 << 20, 0x9e3779b97f4a7c15));
    // 1 GiB sparse with a few written blocks (one not 4 KiB aligned).
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(p(src, b"sparse"))
        .unwrap();
    f.set_len(1 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(&[0xaa; 8192], 300 << 20).unwrap();
    f.write_all_at(b"unaligned", (700 << 20) + 123).unwrap();
    f.write_all_at(b"end", (1 << 30) - 3).unwrap();
    drop(f);
    // setuid root-less binary: chown first (it clears suid), then chmod.
    w(b"suid", b"#!/bin/sh\n");
    std::os::unix::fs::chown(p(src, b"suid"), Some(1234), Some(2345)).unwrap();
    fs::set_permissions(p(src, b"suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir(p(src, b"tmp")).unwrap();
    fs::set_permissions(p(src, b"tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("small", p(src, b"link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/dangling", p(src, b"dangling")).unwrap();
    w(b"hard1", b"two names, one inode\n");
    fs::hard_link(p(src, b"hard1"), p(src, b"tmp/hard2")).unwrap();
    mknod(&p(src, b"null"), libc::S_IFCHR, 1, 3);
    mknod(&p(src, b"loop200"), libc::S_IFBLK, 7, 200);
    let c = CString::new(p(src, b"fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: c is a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    w(b"xattr", b"has xattrs\n");
    xattr::set(p(src, b"xattr"), "user.test", b"value\0with nul").unwrap();
    // A POSIX ACL (user 1000 r-x) as the kernel stores it.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 5, 1000),
        (4, 4, u32::MAX),
        (0x10, 5, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    xattr::set(p(src, b"xattr"), "system.posix_acl_access", &acl).unwrap();
    w(b"new\nline", b"newline in the name\n");
    w(b"bad\xffbyte", b"0xff in the name\n");
    let deep = [vec![b'a'; 200], vec![b'b'; 200]].join(&b'/');
    fs::create_dir_all(p(src, &deep)).unwrap();
    let deep_file = [deep.clone(), vec![b'c'; 250]].join(&b'/');
    w(&deep_file, b"deep and long\n");
    fs::create_dir(p(src, b"old")).unwrap();
    fs::create_dir(p(src, b"old/older")).unwrap();
    w(b"old/older/f", b"in an old directory\n");
    // Old mtimes with nanoseconds, files first, then directories deepest first.
    for (i, rel) in [
        &b"small"[..],
        b"random",
        b"sparse",
        b"suid",
        b"old/older/f",
        b"link",
        b"dangling",
        b"null",
        b"fifo",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&p(src, rel), 1_000_000_000 + i as i64, 123_456_789);
    }
    for (rel, secs) in [
        (&b"old/older"[..], 900_000_000),
        (b"old", 800_000_000),
        (b"tmp", 700_000_000),
    ] {
        set_mtime(&p(src, rel), secs, 987_654_321);
    }
    for rel in [&deep[..], &deep[..200]] {
        set_mtime(&p(src, rel), 600_000_000, 1);
    }
    set_mtime(src, 500_000_000, 5);
}

/// `find . -print0 | sort -z`, then GNU tar as a source would run it.
fn gnu_tar(src: &Path, extra: &[&str]) -> Vec<u8> {
    let list = Command::new("sh")
        .arg("-c")
        .arg("find . -print0 | LC_ALL=C sort -z")
        .current_dir(src)
        .output()
        .unwrap();
    assert!(list.status.success());
    let list_file = src.with_extension("list");
    fs::write(&list_file, &list.stdout).unwrap();
    let mut cmd = Command::new("tar");
    cmd.args([
        "-c",
        "-f",
        "-",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
    ])
    .args(extra)
    .arg("-C")
    .arg(src)
    .args(["--no-recursion", "--null", "-T"])
    .arg(&list_file);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::remove_file(&list_file).unwrap();
    out.stdout
}

fn to_wire(tar: &[u8]) -> (Vec<u8>, hotclone::stream::tar_to_wire::PumpStats) {
    let mut w = WireWriter::new(Vec::new()).unwrap();
    let mut warnings = Warnings::default();
    let stats = pump(tar, &mut w, &mut warnings).unwrap();
    assert_eq!(warnings.0, vec![], "pump warnings");
    (w.finish().unwrap(), stats)
}

/// Pump a tar stream of `src` through the agent into a new `dst`: every
/// entry of `src` is sent, and the agent refuses and warns about nothing.
fn clean_copy(tar: &[u8], src: &Path, dst: &Path) {
    let (wire, stats) = to_wire(tar);
    assert_eq!(stats.entries, walk(src).len() as u64);
    fs::create_dir(dst).unwrap();
    let mut acks_out = Vec::new();
    let astats = agent::run(dst, wire.as_slice(), &mut acks_out).unwrap();
    assert_eq!(
        (astats.bad, astats.warnings),
        (0, 0),
        "{:?}",
        acks(&acks_out)
    );
}

fn acks(out: &[u8]) -> Vec<Ack> {
    std::str::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| Ack::parse(l).unwrap())
        .collect()
}

/// Everything we promise to keep, per relative path.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    link: Option<Vec<u8>>,
    rdev: u64,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    content: Option<String>,
    /// The sorted paths sharing this inode (for hard links).
    inode_group: Vec<Vec<u8>>,
}

/// BLAKE3 of a file's content, reading only its data regions (holes are
/// hashed as zeros without reading them: reading GiBs of holes through the
/// page cache would dominate the test's time).
fn hash_sparse(path: &Path) -> String {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    let f = fs::File::open(path).unwrap();
    let size = f.metadata().unwrap().len() as i64;
    let mut h = blake3::Hasher::new();
    let zeros = vec![0u8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let mut pos: i64 = 0;
    while pos < size {
        // SAFETY: plain lseek on an open fd.
        let data = unsafe { libc::lseek(f.as_raw_fd(), pos, libc::SEEK_DATA) };
        let data = if data < 0 { size } else { data };
        let mut gap = (data - pos) as usize;
        while gap > 0 {
            let n = gap.min(zeros.len());
            h.update(&zeros[..n]);
            gap -= n;
        }
        if data >= size {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) }.min(size);
        let mut at = data;
        while at < hole {
            let n = ((hole - at) as usize).min(buf.len());
            f.read_exact_at(&mut buf[..n], at as u64).unwrap();
            h.update(&buf[..n]);
            at += n as i64;
        }
        pos = hole;
    }
    h.finalize().to_hex().to_string()
}

fn walk(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    fn rec(root: &Path, dir: &Path, out: &mut Vec<(Vec<u8>, fs::Metadata)>) {
        for e in fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let m = fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            out.push((rel, m.clone()));
            if m.is_dir() {
                rec(root, &path, out);
            }
        }
    }
    let mut all = vec![(b".".to_vec(), fs::symlink_metadata(root).unwrap())];
    rec(root, root, &mut all);
    let mut by_inode: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    for (rel, m) in &all {
        if !m.is_dir() {
            by_inode.entry(m.ino()).or_default().push(rel.clone());
        }
    }
    all.into_iter()
        .map(|(rel, m)| {
            let full = if rel == b"." {
                root.to_path_buf()
            } else {
                p(root, &rel)
            };
            let xattrs = xattr::list(&full)
                .unwrap()
                .map(|n| {
                    (
                        n.as_bytes().to_vec(),
                        xattr::get(&full, &n).unwrap().unwrap_or_default(),
                    )
                })
                .collect();
            let content = m.is_file().then(|| hash_sparse(&full));
            let mut inode_group = if m.is_dir() {
                vec![]
            } else {
                by_inode[&m.ino()].clone()
            };
            inode_group.sort();
            let node = Node {
                kind: m.mode() & libc::S_IFMT,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: if m.is_dir() { 0 } else { m.size() },
                mtime: (m.mtime(), m.mtime_nsec()),
                link: m.file_type().is_symlink().then(|| {
                    fs::read_link(&full)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                rdev: m.rdev(),
                xattrs,
                content,
                inode_group,
            };
            (rel, node)
        })
        .collect()
}

/// What an archive format cannot carry, so the comparison leaves it out.
#[derive(Clone, Copy, Default)]
struct Lossy {
    xattrs: bool,
    nsec: bool,
}

fn assert_same_tree(src: &Path, dst: &Path) {
    assert_same_tree_but(src, dst, Lossy::default())
}

fn assert_same_tree_but(src: &Path, dst: &Path, lossy: Lossy) {
    let strip = |mut t: BTreeMap<Vec<u8>, Node>| {
        for n in t.values_mut() {
            if lossy.xattrs {
                n.xattrs.clear();
            }
            if lossy.nsec {
                n.mtime.1 = 0;
            }
        }
        t
    };
    let a = strip(walk(src));
    let b = strip(walk(dst));
    let names = |t: &BTreeMap<Vec<u8>, Node>| {
        t.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    };
    pretty_assertions::assert_eq!(names(&a), names(&b), "the trees hold different paths");
    for (k, na) in &a {
        pretty_assertions::assert_eq!(na, &b[k], "{} differs", String::from_utf8_lossy(k));
    }
}

fn check_extras(dst: &Path) {
    // The sparse copy stays sparse: 1 GiB logical, a few blocks allocated.
    let m = fs::metadata(dst.join("sparse")).unwrap();
    assert_eq!(m.size(), 1 << 30);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "sparse copy allocates {} bytes",
        m.blocks() * 512
    );
    let h1 = fs::metadata(dst.join("hard1")).unwrap();
    let h2 = fs::metadata(dst.join("tmp/hard2")).unwrap();
    assert_eq!((h1.ino(), h1.nlink()), (h2.ino(), 2));
    let dev = fs::symlink_metadata(dst.join("loop200")).unwrap();
    assert_eq!((libc::major(dev.rdev()), libc::minor(dev.rdev())), (7, 200));
    assert_eq!(
        fs::symlink_metadata(dst.join("suid")).unwrap().mode() & 0o7777,
        0o4755
    );
    // No temp files left behind.
    let find = Command::new("find")
        .arg(dst)
        .arg("-name")
        .arg("*hotclone-tmp*")
        .output()
        .unwrap();
    let leftovers = String::from_utf8_lossy(&find.stdout).into_owned();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn gnu_tar_tree_round_trips_in_process_and_through_the_binary() {
    require_root();
    let tmp = TempDir::new("tree");
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_source(&src);
    let tar = gnu_tar(&src, &[]);
    let (wire, stats) = to_wire(&tar);
    let entries = walk(&src).len() as u64;
    assert_eq!(stats.entries, entries);
    assert_eq!(stats.skipped, 0);

    // In process.
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let mut out = Vec::new();
    let astats = agent::run(&dst, wire.as_slice(), &mut out).unwrap();
    let acks_in = acks(&out);
    assert_eq!(astats.bad, 0, "{acks_in:?}");
    assert_eq!(astats.warnings, 0, "{acks_in:?}");
    assert_eq!(astats.entries, entries);
    assert_eq!((astats.files, astats.bytes), (stats.files, stats.bytes));
    assert_eq!(
        acks_in.last(),
        Some(&Ack::Done {
            files: stats.files,
            bytes: stats.bytes
        })
    );
    let small = acks_in
        .iter()
        .find(|a| matches!(a, Ack::Ok { path, .. } if path == b"small"))
        .unwrap();
    assert_eq!(
        small,
        &Ack::Ok {
            path: b"small".to_vec(),
            digest: Some(*blake3::hash(b"hello, world\n").as_bytes())
        }
    );
    assert_same_tree(&src, &dst);
    check_extras(&dst);

    // A second run over the existing copy replaces everything in place.
    let mut out = Vec::new();
    let again = agent::run(&dst, wire.as_slice(), &mut out).unwrap();
    assert_eq!((again.entries, again.bad), (entries, 0), "{:?}", acks(&out));
    assert_same_tree(&src, &dst);

    // Through the real binary, as the client will run it.
    let dst2 = tmp.path().join("dst2");
    fs::create_dir(&dst2).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hotclone"))
        .args(["agent", "--root"])
        .arg(&dst2)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(&wire));
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "hotclone agent failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let acks_bin = acks(&output.stdout);
    assert_eq!(acks_bin, acks_in, "the binary acks differently");
    assert_same_tree(&src, &dst2);
    check_extras(&dst2);
}

fn file_meta(path: &[u8], size: u64) -> EntryMeta {
    EntryMeta {
        path: path.to_vec(),
        kind: EntryKind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_nsec: 0,
        size,
        xattrs: vec![],
    }
}

fn raw_stream(frames: &[Frame]) -> Vec<u8> {
    let mut raw = Vec::new();
    Frame::Hello { version: 1 }.encode(&mut raw).unwrap();
    for f in frames {
        f.encode(&mut raw).unwrap();
    }
    zstd::encode_all(raw.as_slice(), 3).unwrap()
}

#[test]
fn tampered_file_is_not_left_in_place() {
    require_root();
    let tmp = TempDir::new("tampered");
    let wire = raw_stream(&[
        Frame::Entry(file_meta(b"victim", 5)),
        Frame::Data(b"hello".to_vec()),
        Frame::FileEnd {
            blake3: *blake3::hash(b"hellO").as_bytes(),
        },
        Frame::Entry(file_meta(b"fine", 2)),
        Frame::Data(b"ok".to_vec()),
        Frame::FileEnd {
            blake3: *blake3::hash(b"ok").as_bytes(),
        },
        Frame::Done { files: 2, bytes: 7 },
    ]);
    let mut out = Vec::new();
    let stats = agent::run(tmp.path(), wire.as_slice(), &mut out).unwrap();
    let acks = acks(&out);
    assert!(
        matches!(&acks[0], Ack::Bad { path, reason } if path == b"victim" && reason.contains("BLAKE3 mismatch")),
        "{acks:?}"
    );
    assert_eq!(
        acks[1],
        Ack::Ok {
            path: b"fine".to_vec(),
            digest: Some(*blake3::hash(b"ok").as_bytes())
        }
    );
    assert_eq!(acks[2], Ack::Done { files: 1, bytes: 2 });
    assert_eq!((stats.bad, stats.files), (1, 1));
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![OsStr::new("fine").to_os_string()]);
}

#[test]
fn paths_leaving_the_root_are_refused() {
    require_root();
    let tmp = TempDir::new("escape");
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    let dir = |path: &[u8]| EntryMeta {
        kind: EntryKind::Dir,
        mode: 0o755,
        ..file_meta(path, 0)
    };
    let link = EntryMeta {
        kind: EntryKind::Symlink {
            target: outside.as_os_str().as_bytes().to_vec(),
        },
        ..file_meta(b"sub", 0)
    };
    let hard = EntryMeta {
        kind: EntryKind::Hardlink {
            target: b"../outside/secret".to_vec(),
        },
        ..file_meta(b"h", 0)
    };
    fs::write(outside.join("secret"), b"s").unwrap();
    let wire = raw_stream(&[
        Frame::Entry(dir(b"../escape")),
        Frame::Entry(file_meta(b"a/../../escape2", 1)),
        Frame::Data(b"x".to_vec()),
        Frame::FileEnd {
            blake3: *blake3::hash(b"x").as_bytes(),
        },
        Frame::Entry(file_meta(b"/abs", 0)),
        Frame::FileEnd {
            blake3: *blake3::hash(b"").as_bytes(),
        },
        Frame::Entry(link),
        Frame::Entry(file_meta(b"sub/x", 1)),
        Frame::Data(b"x".to_vec()),
        Frame::FileEnd {
            blake3: *blake3::hash(b"x").as_bytes(),
        },
        Frame::Entry(dir(b"sub/d")),
        Frame::Entry(hard),
        Frame::Done { files: 3, bytes: 2 },
    ]);
    let mut out = Vec::new();
    let stats = agent::run(&root, wire.as_slice(), &mut out).unwrap();
    let acks = acks(&out);
    let kinds: Vec<(&str, Vec<u8>)> = acks
        .iter()
        .map(|a| match a {
            Ack::Ok { path, .. } => ("ok", path.clone()),
            Ack::Bad { path, .. } => ("bad", path.clone()),
            Ack::Warn { path, .. } => ("warn", path.clone()),
            Ack::Done { .. } => ("done", vec![]),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("bad", b"../escape".to_vec()),
            ("bad", b"a/../../escape2".to_vec()),
            ("bad", b"/abs".to_vec()),
            ("ok", b"sub".to_vec()),
            ("bad", b"sub/x".to_vec()),
            ("bad", b"sub/d".to_vec()),
            ("bad", b"h".to_vec()),
            ("done", vec![]),
        ],
        "{acks:?}"
    );
    assert_eq!(stats.bad, 6);
    let mut outside_names: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    outside_names.sort();
    assert_eq!(outside_names, vec![OsStr::new("secret").to_os_string()]);
    let mut top: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    top.sort();
    assert_eq!(
        top,
        vec![
            OsStr::new("outside").to_os_string(),
            OsStr::new("root").to_os_string()
        ]
    );
    assert!(!Path::new("/abs").exists());
}

#[test]
fn nine_gib_sparse_file_through_gnu_tar() {
    require_root();
    let tmp = TempDir::new("9g");
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    const SIZE: u64 = 9 << 30;
    let blocks: [(u64, &[u8]); 3] = [
        (0, b"head"),
        ((8 << 30) + 4096 * 3, &[0x5a; 10000]),
        (SIZE - 4, b"tail"),
    ];
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(src.join("big")).unwrap();
        f.set_len(SIZE).unwrap();
        for (off, data) in blocks {
            f.write_all_at(data, off).unwrap();
        }
    }
    let tar = gnu_tar(&src, &["--sparse"]);
    assert!(
        tar.len() < 1 << 20,
        "GNU tar wrote {} bytes for a sparse file",
        tar.len()
    );
    let (wire, stats) = to_wire(&tar);
    assert_eq!((stats.files, stats.bytes), (1, SIZE));
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let mut out = Vec::new();
    let astats = agent::run(&dst, wire.as_slice(), &mut out).unwrap();
    assert_eq!(
        (astats.files, astats.bytes, astats.bad),
        (1, SIZE, 0),
        "{:?}",
        acks(&out)
    );
    let m = fs::metadata(dst.join("big")).unwrap();
    assert_eq!(m.size(), SIZE);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "the copy allocates {} bytes",
        m.blocks() * 512
    );
    // The content: the written blocks where they were, zeros elsewhere
    // (the digest the agent verified covers every byte).
    let mut expected = blake3::Hasher::new();
    let zeros = vec![0u8; 1 << 20];
    let mut pos = 0;
    for (off, data) in blocks {
        let mut gap = off - pos;
        while gap > 0 {
            let n = gap.min(zeros.len() as u64) as usize;
            expected.update(&zeros[..n]);
            gap -= n as u64;
        }
        expected.update(data);
        pos = off + data.len() as u64;
    }
    let big = acks(&out)
        .into_iter()
        .find(|a| matches!(a, Ack::Ok { path, .. } if path == b"big"))
        .unwrap();
    assert_eq!(
        big,
        Ack::Ok {
            path: b"big".to_vec(),
            digest: Some(*expected.finalize().as_bytes())
        }
    );
    let f = fs::File::open(dst.join("big")).unwrap();
    for (off, data) in blocks {
        let mut buf = vec![0u8; data.len()];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, off).unwrap();
        assert_eq!(buf, data);
    }
    let mut around = [1u8; 8];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut around, 4 << 30).unwrap();
    assert_eq!(around, [0; 8]);
}

/// The gnu format (no PAX): GNU long names and links, old GNU sparse ('S')
/// with base-256 sizes, mtimes in whole seconds, no xattrs.
#[test]
fn gnu_format_with_old_sparse_and_long_names() {
    require_root();
    let tmp = TempDir::new("gnufmt");
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_source(&src);
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(src.join("big")).unwrap();
        f.set_len(9 << 30).unwrap();
        f.write_all_at(b"middle", 5 << 30).unwrap();
    }
    let deep_link = [vec![b'l'; 150], vec![b'm'; 150]].join(&b'/');
    std::os::unix::fs::symlink(OsStr::from_bytes(&deep_link), src.join("longlink")).unwrap();
    let list = Command::new("sh")
        .arg("-c")
        .arg("find . -print0 | LC_ALL=C sort -z")
        .current_dir(&src)
        .output()
        .unwrap();
    let list_file = tmp.path().join("list");
    fs::write(&list_file, &list.stdout).unwrap();
    let out = Command::new("tar")
        .args([
            "-c",
            "-f",
            "-",
            "--format=gnu",
            "--sparse",
            "--numeric-owner",
            "-C",
        ])
        .arg(&src)
        .args(["--no-recursion", "--null", "-T"])
        .arg(&list_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.stdout.windows(10).any(|w| w == b"PaxHeader"),
        "expected no PAX headers"
    );
    let dst = tmp.path().join("dst");
    clean_copy(&out.stdout, &src, &dst);
    let big = fs::metadata(dst.join("big")).unwrap();
    assert_eq!(big.size(), 9 << 30);
    assert!(
        big.blocks() * 512 < 1 << 20,
        "the copy allocates {} bytes",
        big.blocks() * 512
    );
    let mut middle = [0u8; 8];
    std::os::unix::fs::FileExt::read_exact_at(
        &fs::File::open(dst.join("big")).unwrap(),
        &mut middle,
        (5 << 30) - 1,
    )
    .unwrap();
    assert_eq!(&middle, b"\0middle\0");
    // Hashing 2 x 9 GiB of holes would dominate the test; the agent already
    // verified the digest of every byte.
    fs::remove_file(src.join("big")).unwrap();
    fs::remove_file(dst.join("big")).unwrap();
    filetime::set_symlink_file_times(
        &dst,
        filetime::FileTime::from_unix_time(500_000_000, 0),
        filetime::FileTime::from_unix_time(500_000_000, 0),
    )
    .unwrap();
    filetime::set_symlink_file_times(
        &src,
        filetime::FileTime::from_unix_time(500_000_000, 0),
        filetime::FileTime::from_unix_time(500_000_000, 0),
    )
    .unwrap();
    assert_same_tree_but(
        &src,
        &dst,
        Lossy {
            xattrs: true,
            nsec: true,
        },
    );
    check_extras(&dst);
}

/// busybox tar (ustar with GNU long names, whole-second mtimes, no xattrs),
/// as on minimal sources.
#[test]
fn busybox_tar_tree_round_trips() {
    require_root();
    let tmp = TempDir::new("busybox");
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_source(&src);
    // busybox tar reads sparse files in full; keep the test quick.
    fs::remove_file(src.join("sparse")).unwrap();
    filetime::set_symlink_file_times(
        &src,
        filetime::FileTime::from_unix_time(500_000_000, 0),
        filetime::FileTime::from_unix_time(500_000_000, 0),
    )
    .unwrap();
    let out = Command::new("busybox")
        .args(["tar", "-c", "-f", "-", "-C"])
        .arg(&src)
        .arg(".")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dst = tmp.path().join("dst");
    clean_copy(&out.stdout, &src, &dst);
    assert_same_tree_but(
        &src,
        &dst,
        Lossy {
            xattrs: true,
            nsec: true,
        },
    );
}

#[test]
fn a_stream_cut_short_is_an_error_but_acks_what_was_written() {
    require_root();
    let tmp = TempDir::new("cut");
    let dir = EntryMeta {
        kind: EntryKind::Dir,
        mode: 0o750,
        ..file_meta(b"d", 0)
    };
    let wire = raw_stream(&[
        Frame::Entry(dir),
        Frame::Entry(file_meta(b"d/partial", 10)),
        Frame::Data(b"12345".to_vec()),
    ]);
    let mut out = Vec::new();
    let err = agent::run(tmp.path(), wire.as_slice(), &mut out).unwrap_err();
    assert!(err.to_string().contains("ended"), "{err}");
    assert_eq!(
        acks(&out),
        vec![Ack::Ok {
            path: b"d".to_vec(),
            digest: None
        }]
    );
    let names: Vec<_> = fs::read_dir(tmp.path().join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "the partial file was left: {names:?}");
}
