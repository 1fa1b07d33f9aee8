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
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hotclone::progress::{FileWarning, Progress};
use hotclone::receiver::agent::{self, AgentOptions, AgentStats};
use hotclone::stream::tar_to_wire::pump;
use hotclone::stream::wire::{Ack, AppendBase, EntryKind, EntryMeta, Frame, WireWriter, VERSION};

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
    Frame::Hello { version: VERSION }.encode(&mut raw).unwrap();
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
    let (tmp, root, outside) = root_and_outside("escape");
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
    let kinds = verdicts(&acks);
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

// ---- Delta passes: Remove and Attrs, type changes, the sweep ----

/// Builds a stream with `build`, runs the agent over `root`, checks the
/// final Done line and returns the stats and the other acks.
fn run_stream(
    root: &Path,
    options: AgentOptions,
    build: impl FnOnce(&mut WireWriter<Vec<u8>>),
) -> (AgentStats, Vec<Ack>) {
    let mut w = WireWriter::new(Vec::new()).unwrap();
    build(&mut w);
    let wire = w.finish().unwrap();
    let mut out = Vec::new();
    let stats = agent::run_with(root, options, wire.as_slice(), &mut out).unwrap();
    let mut acks = acks(&out);
    assert_eq!(
        acks.pop(),
        Some(Ack::Done {
            files: stats.files,
            bytes: stats.bytes
        }),
        "{acks:?}"
    );
    (stats, acks)
}

/// ("ok" | "warn" | "bad" | "part" | "done", path) per ack, for comparing
/// outcomes.
fn verdicts(acks: &[Ack]) -> Vec<(&'static str, Vec<u8>)> {
    acks.iter()
        .map(|a| match a {
            Ack::Ok { path, .. } => ("ok", path.clone()),
            Ack::Bad { path, .. } => ("bad", path.clone()),
            Ack::Warn { path, .. } => ("warn", path.clone()),
            Ack::Part { path, .. } => ("part", path.clone()),
            Ack::Done { .. } => ("done", vec![]),
        })
        .collect()
}

fn ok(path: &[u8]) -> Ack {
    Ack::Ok {
        path: path.to_vec(),
        digest: None,
    }
}

fn bad_reason<'a>(acks: &'a [Ack], path: &[u8]) -> &'a str {
    acks.iter()
        .find_map(|a| match a {
            Ack::Bad { path: p, reason } if p == path => Some(reason.as_str()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no bad ack for {}: {acks:?}", String::from_utf8_lossy(path)))
}

fn entry(
    path: &[u8],
    kind: EntryKind,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, u32),
) -> EntryMeta {
    EntryMeta {
        path: path.to_vec(),
        kind,
        mode,
        uid: owner.0,
        gid: owner.1,
        mtime: mtime.0,
        mtime_nsec: mtime.1,
        size: 0,
        xattrs: vec![],
    }
}

fn send_file(w: &mut WireWriter<Vec<u8>>, path: &[u8], content: &[u8]) {
    let meta = EntryMeta {
        size: content.len() as u64,
        ..file_meta(path, 0)
    };
    w.file(&meta, &mut &content[..]).unwrap();
}

/// (uid, gid, mode & 0o7777, mtime, mtime_nsec) without following symlinks.
fn owner_mode_mtime(path: &Path) -> (u32, u32, u32, i64, i64) {
    let m = fs::symlink_metadata(path).unwrap();
    (
        m.uid(),
        m.gid(),
        m.mode() & 0o7777,
        m.mtime(),
        m.mtime_nsec(),
    )
}

/// A temporary directory holding `root` (what the agent writes into) and
/// `outside` (what no entry may reach), both created; as root only.
fn root_and_outside(tag: &str) -> (TempDir, PathBuf, PathBuf) {
    require_root();
    let tmp = TempDir::new(tag);
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    (tmp, root, outside)
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// A tmpfs mounted for one test, lazily unmounted on drop (declare it after
/// the TempDir holding it, so it goes first).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let c = |s: &[u8]| CString::new(s).unwrap();
        let (src, target, fstype) = (
            c(b"hotclone-test"),
            c(at.as_os_str().as_bytes()),
            c(b"tmpfs"),
        );
        // SAFETY: valid NUL-terminated strings, no data.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount tmpfs on {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let c = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn remove_deletes_files_trees_and_is_idempotent() {
    let (_tmp, root, outside) = root_and_outside("remove");
    fs::create_dir_all(root.join("tree/sub")).unwrap();
    fs::write(outside.join("keep"), b"outside").unwrap();
    fs::write(root.join("f"), b"f").unwrap();
    fs::write(root.join("keep"), b"keep").unwrap();
    fs::write(root.join("tree/a"), b"a").unwrap();
    fs::write(root.join("tree/sub/b"), b"b").unwrap();
    mkfifo(&root.join("tree/sub/fifo"));
    mknod(&root.join("tree/null"), libc::S_IFCHR, 1, 3);
    std::os::unix::fs::symlink(&outside, root.join("tree/out")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("tree/sub/out")).unwrap();
    std::os::unix::fs::symlink("keep", root.join("link")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("dirlink")).unwrap();
    let paths: [&[u8]; 9] = [
        b"f",
        b"tree",
        b"link",
        b"dirlink",
        b"missing",
        b"missing/deeper",
        // Under a regular file: nothing can be there.
        b"keep/x",
        // Again: already gone is success.
        b"f",
        b"tree/",
    ];
    let (stats, acks) = run_stream(&root, AgentOptions::default(), |w| {
        for p in paths {
            w.remove(p).unwrap();
        }
    });
    assert_eq!(acks, paths.iter().map(|p| ok(p)).collect::<Vec<_>>());
    assert_eq!(
        (
            stats.entries,
            stats.removed,
            stats.bad,
            stats.files,
            stats.bytes
        ),
        (9, 9, 0, 0, 0)
    );
    let mut left: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, vec![OsStr::new("keep").to_os_string()]);
    assert_eq!(fs::read(root.join("keep")).unwrap(), b"keep");
    // The symlinks went, not what they point to.
    assert_eq!(fs::read(outside.join("keep")).unwrap(), b"outside");
}

#[test]
fn remove_refuses_escapes_symlinked_parents_and_the_root() {
    let (tmp, root, outside) = root_and_outside("remove-escape");
    fs::write(tmp.path().join("x"), b"x").unwrap();
    fs::write(outside.join("victim"), b"v").unwrap();
    fs::create_dir(outside.join("vdir")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("sub")).unwrap();
    fs::create_dir(root.join("real")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("real/sub2")).unwrap();
    let paths: [&[u8]; 8] = [
        b"../x",
        b"a/../../x",
        b"sub/victim",
        b"real/sub2/vdir",
        b"/abs",
        b".",
        b"",
        b"./",
    ];
    let (stats, acks) = run_stream(&root, AgentOptions::default(), |w| {
        for p in paths {
            w.remove(p).unwrap();
        }
    });
    assert_eq!(
        verdicts(&acks),
        paths
            .iter()
            .map(|p| ("bad", p.to_vec()))
            .collect::<Vec<_>>()
    );
    assert!(bad_reason(&acks, b"../x").contains("'..'"));
    assert!(bad_reason(&acks, b"sub/victim").contains("is a symlink on the target"));
    assert!(bad_reason(&acks, b"real/sub2/vdir").contains("is a symlink on the target"));
    assert!(bad_reason(&acks, b".").contains("root itself"));
    assert_eq!((stats.bad, stats.removed, stats.entries), (8, 0, 0));
    assert_eq!(fs::read(tmp.path().join("x")).unwrap(), b"x");
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"v");
    assert!(outside.join("vdir").is_dir());
    assert!(fs::symlink_metadata(root.join("sub"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(root.join("real/sub2").exists());
}

#[test]
fn remove_stops_at_a_mounted_filesystem() {
    require_root();
    let tmp = TempDir::new("remove-mount");
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("d/e")).unwrap();
    fs::write(root.join("d/e/file"), b"on the root filesystem").unwrap();
    let _m1 = Tmpfs::mount(&root.join("mnt"));
    let _m2 = Tmpfs::mount(&root.join("d/mnt"));
    fs::write(root.join("mnt/precious"), b"1").unwrap();
    fs::write(root.join("d/mnt/precious"), b"2").unwrap();
    let (stats, acks) = run_stream(&root, AgentOptions::default(), |w| {
        w.remove(b"mnt").unwrap();
        w.remove(b"d").unwrap();
        // A full entry replacing the mount point refuses the same way.
        send_file(w, b"mnt", b"not a mount point");
    });
    assert_eq!(
        verdicts(&acks),
        vec![
            ("bad", b"mnt".to_vec()),
            ("bad", b"d".to_vec()),
            ("bad", b"mnt".to_vec())
        ]
    );
    assert!(
        bad_reason(&acks, b"d").contains("another filesystem is mounted"),
        "{acks:?}"
    );
    assert_eq!(stats.bad, 3);
    assert_eq!(fs::read(root.join("mnt/precious")).unwrap(), b"1");
    assert_eq!(fs::read(root.join("d/mnt/precious")).unwrap(), b"2");
}

#[test]
fn attrs_change_metadata_in_place() {
    require_root();
    let tmp = TempDir::new("attrs");
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("d")).unwrap();
    fs::write(root.join("f"), b"content").unwrap();
    xattr::set(root.join("f"), "user.keep", b"kept").unwrap();
    fs::write(root.join("d/old"), b"old").unwrap();
    std::os::unix::fs::symlink("f", root.join("l")).unwrap();
    mkfifo(&root.join("p"));
    mknod(&root.join("null"), libc::S_IFCHR, 1, 3);
    fs::write(root.join("h1"), b"linked").unwrap();
    fs::hard_link(root.join("h1"), root.join("h2")).unwrap();
    let inode = |rel: &str| fs::symlink_metadata(root.join(rel)).unwrap().ino();
    let inodes_before: Vec<u64> = ["f", "d", "l", "p", "null", "h1"].map(inode).to_vec();

    let f = entry(
        b"f",
        EntryKind::File,
        0o4750,
        (1234, 2345),
        (1_000_000_123, 456),
    );
    let d = EntryMeta {
        xattrs: vec![(b"user.dir".to_vec(), b"v".to_vec())],
        ..entry(b"d", EntryKind::Dir, 0o1777, (1, 2), (700_000_000, 5))
    };
    let l = entry(
        b"l",
        EntryKind::Symlink {
            target: b"f".to_vec(),
        },
        0o777,
        (3, 4),
        (600_000_000, 7),
    );
    let p = entry(b"p", EntryKind::Fifo, 0o600, (5, 6), (500_000_000, 8));
    let null = entry(
        b"null",
        EntryKind::CharDev { major: 1, minor: 3 },
        0o660,
        (7, 8),
        (400_000_000, 9),
    );
    let h2 = entry(
        b"h2",
        EntryKind::Hardlink {
            target: b"h1".to_vec(),
        },
        0o640,
        (9, 10),
        (300_000_000, 10),
    );
    let root_attrs = entry(b".", EntryKind::Dir, 0o700, (11, 12), (200_000_000, 11));
    let (stats, acks) = run_stream(&root, AgentOptions::default(), |w| {
        w.attrs(&root_attrs).unwrap();
        w.attrs(&d).unwrap();
        // Later changes inside d do not move its mtime.
        send_file(w, b"d/new", b"new");
        w.remove(b"d/old").unwrap();
        w.attrs(&f).unwrap();
        w.attrs(&l).unwrap();
        w.attrs(&p).unwrap();
        w.attrs(&null).unwrap();
        w.attrs(&h2).unwrap();
    });
    let new_digest = Ack::Ok {
        path: b"d/new".to_vec(),
        digest: Some(*blake3::hash(b"new").as_bytes()),
    };
    assert_eq!(
        acks,
        vec![
            ok(b"."),
            ok(b"d"),
            new_digest,
            ok(b"d/old"),
            ok(b"f"),
            ok(b"l"),
            ok(b"p"),
            ok(b"null"),
            ok(b"h2")
        ]
    );
    // Attrs never count as files in the totals.
    assert_eq!(
        (
            stats.entries,
            stats.attrs,
            stats.removed,
            stats.files,
            stats.bytes,
            stats.bad
        ),
        (9, 7, 1, 1, 3, 0)
    );
    // Nothing was recreated.
    assert_eq!(
        ["f", "d", "l", "p", "null", "h1"].map(inode).to_vec(),
        inodes_before
    );
    assert_eq!(
        owner_mode_mtime(&root.join("f")),
        (1234, 2345, 0o4750, 1_000_000_123, 456)
    );
    assert_eq!(fs::read(root.join("f")).unwrap(), b"content");
    // No xattrs in the Attrs: the existing ones stay.
    assert_eq!(
        xattr::get(root.join("f"), "user.keep").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        owner_mode_mtime(&root.join("d")),
        (1, 2, 0o1777, 700_000_000, 5)
    );
    assert_eq!(
        xattr::get(root.join("d"), "user.dir").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert!(root.join("d/new").exists() && !root.join("d/old").exists());
    // The symlink itself: owner and time; its mode is not a thing.
    let (uid, gid, _, secs, nsec) = owner_mode_mtime(&root.join("l"));
    assert_eq!((uid, gid, secs, nsec), (3, 4, 600_000_000, 7));
    assert_eq!(fs::read_link(root.join("l")).unwrap(), Path::new("f"));
    assert_eq!(
        owner_mode_mtime(&root.join("p")),
        (5, 6, 0o600, 500_000_000, 8)
    );
    assert_eq!(
        owner_mode_mtime(&root.join("null")),
        (7, 8, 0o660, 400_000_000, 9)
    );
    // One inode, two names.
    assert_eq!(
        owner_mode_mtime(&root.join("h1")),
        (9, 10, 0o640, 300_000_000, 10)
    );
    assert_eq!(owner_mode_mtime(&root), (11, 12, 0o700, 200_000_000, 11));
}

#[test]
fn attrs_owner_change_keeps_file_capabilities() {
    require_root();
    let tmp = TempDir::new("attrs-cap");
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("ping"), b"\x7fELF").unwrap();
    // VFS_CAP_REVISION_2 | effective, CAP_NET_RAW (13) permitted.
    let mut cap = (0x0200_0000u32 | 1).to_le_bytes().to_vec();
    for word in [1u32 << 13, 0, 0, 0] {
        cap.extend_from_slice(&word.to_le_bytes());
    }
    xattr::set(root.join("ping"), "security.capability", &cap).unwrap();
    let (_, acks) = run_stream(&root, AgentOptions::default(), |w| {
        w.attrs(&entry(b"ping", EntryKind::File, 0o4755, (0, 1000), (1, 0)))
            .unwrap();
    });
    assert_eq!(acks, vec![ok(b"ping")]);
    assert_eq!(
        owner_mode_mtime(&root.join("ping")),
        (0, 1000, 0o4755, 1, 0)
    );
    assert_eq!(
        xattr::get(root.join("ping"), "security.capability")
            .unwrap()
            .as_deref(),
        Some(cap.as_slice())
    );
}

#[test]
fn attrs_refuse_missing_paths_and_other_kinds() {
    let (_tmp, root, outside) = root_and_outside("attrs-bad");
    fs::create_dir_all(root.join("d")).unwrap();
    fs::write(outside.join("o"), b"o").unwrap();
    fs::write(root.join("f"), b"f").unwrap();
    fs::write(root.join("g"), b"g").unwrap();
    std::os::unix::fs::symlink("f", root.join("l")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
    mkfifo(&root.join("p"));
    mknod(&root.join("null"), libc::S_IFCHR, 1, 3);
    let everything = ["f", "g", "d", "l", "p", "null", "out"];
    let before: Vec<_> = everything
        .iter()
        .map(|r| owner_mode_mtime(&root.join(r)))
        .collect();
    let outside_before = owner_mode_mtime(&outside.join("o"));
    let at = |path: &[u8], kind: EntryKind| entry(path, kind, 0o777, (42, 42), (42, 0));
    let link = |t: &[u8]| EntryKind::Symlink { target: t.to_vec() };
    let frames = vec![
        at(b"missing", EntryKind::File),
        at(b"nodir/x", EntryKind::Dir),
        at(b"f/x", EntryKind::File),
        at(b"d", EntryKind::File),
        at(b"f", EntryKind::Dir),
        at(b"f", link(b"f")),
        at(b"l", EntryKind::File),
        at(b"l", link(b"elsewhere")),
        at(b"p", EntryKind::BlockDev { major: 1, minor: 3 }),
        at(b"null", EntryKind::CharDev { major: 1, minor: 5 }),
        at(b"null", EntryKind::Fifo),
        at(
            b"g",
            EntryKind::Hardlink {
                target: b"f".to_vec(),
            },
        ),
        at(b"../outside/o", EntryKind::File),
        at(b"out/o", EntryKind::File),
        at(b".", EntryKind::File),
    ];
    let (stats, acks) = run_stream(&root, AgentOptions::default(), |w| {
        for m in &frames {
            w.attrs(m).unwrap();
        }
    });
    assert_eq!(
        verdicts(&acks),
        frames
            .iter()
            .map(|m| ("bad", m.path.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!((stats.bad, stats.attrs, stats.entries), (15, 0, 0));
    let reason = |i: usize| match &acks[i] {
        Ack::Bad { reason, .. } => reason.clone(),
        a => panic!("{a:?}"),
    };
    for i in [0, 1, 2] {
        assert!(
            reason(i).contains("is not on the target; send it in full"),
            "{}",
            reason(i)
        );
    }
    assert!(
        reason(3).contains("for a regular file but the target has a directory"),
        "{}",
        reason(3)
    );
    assert!(reason(4).contains("for a directory but the target has a regular file"));
    assert!(
        reason(7).contains("points to f, not elsewhere"),
        "{}",
        reason(7)
    );
    assert!(reason(9).contains("1:3, not 1:5"), "{}", reason(9));
    assert!(
        reason(11).contains("not a hard link to f"),
        "{}",
        reason(11)
    );
    assert!(
        reason(13).contains("symlink on the target"),
        "{}",
        reason(13)
    );
    for reason in (0..acks.len()).map(reason) {
        assert!(
            reason.contains("send it in full") || reason.contains("refused"),
            "{reason}"
        );
    }
    // Nothing created, nothing changed.
    assert!(!root.join("missing").exists() && !root.join("nodir").exists());
    let after: Vec<_> = everything
        .iter()
        .map(|r| owner_mode_mtime(&root.join(r)))
        .collect();
    assert_eq!(after, before);
    assert_eq!(owner_mode_mtime(&outside.join("o")), outside_before);
}

/// Full entries replace whatever kind is at their path.
#[test]
fn type_changes_replace_what_is_there() {
    require_root();
    let tmp = TempDir::new("types");
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let dir = |path: &[u8]| entry(path, EntryKind::Dir, 0o755, (0, 0), (100, 0));
    let symlink = |path: &[u8], target: &[u8]| {
        entry(
            path,
            EntryKind::Symlink {
                target: target.to_vec(),
            },
            0o777,
            (0, 0),
            (100, 0),
        )
    };
    let hardlink = |path: &[u8], target: &[u8]| {
        entry(
            path,
            EntryKind::Hardlink {
                target: target.to_vec(),
            },
            0o644,
            (0, 0),
            (100, 0),
        )
    };
    // The first pass.
    let (stats, _) = run_stream(&root, AgentOptions::default(), |w| {
        send_file(w, b"file-to-link", b"a file");
        w.entry(&symlink(b"link-to-file", b"file-to-link")).unwrap();
        w.entry(&dir(b"dir-to-file")).unwrap();
        w.entry(&dir(b"dir-to-file/sub")).unwrap();
        send_file(w, b"dir-to-file/x", b"x");
        send_file(w, b"dir-to-file/sub/y", b"y");
        w.entry(&symlink(b"dir-to-file/sub/out", b"/")).unwrap();
        send_file(w, b"file-to-dir", b"was a file");
        send_file(w, b"target", b"old content");
        w.entry(&hardlink(b"linked", b"target")).unwrap();
        send_file(w, b"plain", b"a plain file at the link path");
        send_file(w, b"other", b"the other inode");
    });
    assert_eq!(stats.bad, 0);
    let ino = |rel: &str| fs::symlink_metadata(root.join(rel)).unwrap().ino();
    let old_target = ino("target");
    assert_eq!(ino("linked"), old_target);
    let old_plain = ino("plain");

    // The second pass: every path changes kind.
    let (stats, acks) = run_stream(&root, AgentOptions::default(), |w| {
        w.entry(&symlink(b"file-to-link", b"elsewhere")).unwrap();
        send_file(w, b"link-to-file", b"now a file");
        send_file(w, b"dir-to-file", b"now a file too");
        w.entry(&dir(b"file-to-dir")).unwrap();
        send_file(w, b"file-to-dir/inside", b"inside");
        // The link's target name now holds a new inode.
        send_file(w, b"target", b"new content");
        w.entry(&hardlink(b"linked", b"target")).unwrap();
        // A hard link replacing an unrelated regular file.
        w.entry(&hardlink(b"plain", b"other")).unwrap();
    });
    assert_eq!(
        (stats.bad, stats.warnings, stats.entries),
        (0, 0, 8),
        "{acks:?}"
    );
    let l = fs::symlink_metadata(root.join("file-to-link")).unwrap();
    assert!(l.file_type().is_symlink());
    assert_eq!(
        fs::read_link(root.join("file-to-link")).unwrap(),
        Path::new("elsewhere")
    );
    let f = fs::symlink_metadata(root.join("link-to-file")).unwrap();
    assert!(f.is_file());
    assert_eq!(fs::read(root.join("link-to-file")).unwrap(), b"now a file");
    assert!(fs::symlink_metadata(root.join("dir-to-file"))
        .unwrap()
        .is_file());
    assert_eq!(
        fs::read(root.join("dir-to-file")).unwrap(),
        b"now a file too"
    );
    assert!(fs::symlink_metadata(root.join("file-to-dir"))
        .unwrap()
        .is_dir());
    assert_eq!(
        fs::read(root.join("file-to-dir/inside")).unwrap(),
        b"inside"
    );
    let (t, h) = (
        fs::metadata(root.join("target")).unwrap(),
        fs::metadata(root.join("linked")).unwrap(),
    );
    assert_ne!(t.ino(), old_target);
    assert_eq!((h.ino(), h.nlink()), (t.ino(), 2));
    assert_eq!(fs::read(root.join("linked")).unwrap(), b"new content");
    let (o, p) = (
        fs::metadata(root.join("other")).unwrap(),
        fs::metadata(root.join("plain")).unwrap(),
    );
    assert_ne!(p.ino(), old_plain);
    assert_eq!((p.ino(), p.nlink()), (o.ino(), 2));
    assert_eq!(fs::read(root.join("plain")).unwrap(), b"the other inode");
    let find = Command::new("find")
        .arg(&root)
        .arg("-name")
        .arg("*hotclone-tmp*")
        .output()
        .unwrap();
    assert!(
        find.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&find.stdout)
    );
}

#[test]
fn sweep_removes_leftover_temp_files_only() {
    require_root();
    let tmp = TempDir::new("sweep");
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let near_misses = [
        "f.hotclone-tmp",
        ".f.hotclone-tmp.bak",
        ".hotclone-tmp",
        ".f.hotclone-tmp~",
        "f",
    ];
    for name in near_misses {
        fs::write(root.join(name), b"keep").unwrap();
    }
    fs::write(root.join(".f.hotclone-tmp"), b"partial").unwrap();
    // Off by default.
    let (stats, _) = run_stream(&root, AgentOptions::default(), |_| {});
    assert_eq!(stats.swept, 0);
    assert!(root.join(".f.hotclone-tmp").exists());
    let (stats, acks) = run_stream(
        &root,
        AgentOptions {
            sweep: true,
            ..Default::default()
        },
        |_| {},
    );
    assert_eq!((stats.swept, stats.entries, stats.bad), (1, 0, 0));
    assert!(acks.is_empty(), "{acks:?}");
    assert!(!root.join(".f.hotclone-tmp").exists());
    let mut left: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut want = near_misses.map(String::from).to_vec();
    want.sort();
    assert_eq!(left, want);
}

#[test]
fn sweep_descends_into_mounts_but_never_follows_symlinks() {
    let (_tmp, root, outside) = root_and_outside("sweep-deep");
    fs::create_dir_all(root.join("a/b")).unwrap();
    let _mnt = Tmpfs::mount(&root.join("a/mnt"));
    fs::create_dir(root.join("a/mnt/deeper")).unwrap();
    let hashed = format!(".hotclone-tmp-{}", "0123456789abcdef".repeat(2));
    let swept = [
        root.join("a/b").join(&hashed),
        root.join("a/mnt/.x.hotclone-tmp"),
        root.join("a/mnt/deeper/.y.hotclone-tmp"),
    ];
    for p in &swept {
        fs::write(p, b"partial").unwrap();
    }
    // Not regular files, or only reachable through a symlink: kept.
    fs::write(outside.join(".o.hotclone-tmp"), b"not ours").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("a/link")).unwrap();
    fs::create_dir(root.join(".d.hotclone-tmp")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join(".s.hotclone-tmp")).unwrap();
    let (stats, _) = run_stream(
        &root,
        AgentOptions {
            sweep: true,
            ..Default::default()
        },
        |w| {
            send_file(w, b"a/mnt/real", b"written after the sweep");
        },
    );
    assert_eq!((stats.swept, stats.files, stats.bad), (3, 1, 0));
    for p in &swept {
        assert!(!p.exists(), "{} is still there", p.display());
    }
    assert!(outside.join(".o.hotclone-tmp").exists());
    assert!(root.join(".d.hotclone-tmp").is_dir());
    assert!(fs::symlink_metadata(root.join(".s.hotclone-tmp")).is_ok());
    assert_eq!(
        fs::read(root.join("a/mnt/real")).unwrap(),
        b"written after the sweep"
    );
}

/// A real agent killed (SIGKILL) in the middle of a file leaves its
/// temporary file; `hotclone agent --sweep` removes it.
#[test]
fn killed_agent_leaves_a_temp_file_that_sweep_removes() {
    require_root();
    let tmp = TempDir::new("killed");
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let agent = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hotclone"))
            .args(["agent", "--root"])
            .arg(&root)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = agent(&[]);
    // An entry and part of its data, pushed through zstd into the agent;
    // the rest never comes.
    let mut w = WireWriter::new(child.stdin.take().unwrap()).unwrap();
    w.frame(&Frame::Entry(file_meta(b"big", 1 << 20))).unwrap();
    w.frame(&Frame::Data(vec![7; 4096])).unwrap();
    w.flush().unwrap();
    let temp = root.join(".big.hotclone-tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !temp.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never created {}",
            temp.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(w);
    assert!(temp.exists(), "SIGKILL leaves the temporary file");
    assert!(!root.join("big").exists());

    let mut child = agent(&["--sweep"]);
    let mut stdin = child.stdin.take().unwrap();
    let wire = WireWriter::new(Vec::new()).unwrap().finish().unwrap();
    stdin.write_all(&wire).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(acks(&out.stdout), vec![Ack::Done { files: 0, bytes: 0 }]);
    assert!(!temp.exists(), "not swept; stderr: {stderr}");
    assert!(
        stderr.contains("removed 1 leftover temporary file"),
        "{stderr}"
    );
}

/// A directory (dirty, waiting for its fsync) or a file whose metadata
/// changed, replaced by a FIFO in the same batch: the fsync must not open
/// the FIFO (that would block forever).
#[test]
fn paths_replaced_by_fifos_in_one_batch_do_not_hang() {
    require_root();
    let tmp = TempDir::new("fifo-batch");
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("y"), b"y").unwrap();
    let fifo = |path: &[u8]| entry(path, EntryKind::Fifo, 0o600, (0, 0), (1, 0));
    let (stats, acks) = run_stream(&root, AgentOptions::default(), |w| {
        w.entry(&entry(b"x", EntryKind::Dir, 0o755, (0, 0), (1, 0)))
            .unwrap();
        send_file(w, b"x/f", b"f");
        w.entry(&fifo(b"x")).unwrap();
        w.attrs(&entry(b"y", EntryKind::File, 0o600, (1, 1), (1, 0)))
            .unwrap();
        w.entry(&fifo(b"y")).unwrap();
    });
    assert_eq!((stats.bad, stats.entries), (0, 5), "{acks:?}");
    for p in ["x", "y"] {
        assert!(fs::symlink_metadata(root.join(p))
            .unwrap()
            .file_type()
            .is_fifo());
    }
}

// ---- Append: the tail of a file that only grew ----

#[test]
fn an_append_keeps_the_verified_prefix_and_refuses_a_copy_that_differs() {
    require_root();
    let tmp = TempDir::new("append");
    let old = random_bytes(200_000, 7);
    // A hole in the kept prefix stays a hole on the target.
    let mut prefix = old.clone();
    prefix[65536..131072].fill(0);
    let tail = random_bytes(5_000, 8);
    let mut whole = prefix.clone();
    whole.extend_from_slice(&tail);
    let (_, acks) = run_stream(tmp.path(), AgentOptions::default(), |w| {
        w.file(
            &file_meta(b"log", prefix.len() as u64),
            &mut prefix.as_slice(),
        )
        .unwrap();
        w.file(&file_meta(b"other", 6), &mut &b"abcdef"[..])
            .unwrap();
    });
    assert_eq!(
        verdicts(&acks),
        vec![("ok", b"log".to_vec()), ("ok", b"other".to_vec())]
    );
    let grown = EntryMeta {
        mode: 0o640,
        mtime: 1_700_000_000,
        ..file_meta(b"log", whole.len() as u64)
    };
    let (stats, acks) = run_stream(tmp.path(), AgentOptions::default(), |w| {
        let p = *blake3::hash(&prefix).as_bytes();
        let at = (prefix.len() as u64, p, AppendBase::Existing);
        w.append(&grown, at, &mut tail.as_slice()).unwrap();
        // A prefix digest that is not the target's copy, and an offset
        // that is not its size: both refused, both files left as they are.
        let other = file_meta(b"other", 9);
        let wrong_digest = (6, [0; 32], AppendBase::Existing);
        w.append(&other, wrong_digest, &mut &b"ghi"[..]).unwrap();
        let wrong_offset = (5, *blake3::hash(b"abcde").as_bytes(), AppendBase::Existing);
        w.append(&other, wrong_offset, &mut &b"xxxx"[..]).unwrap();
    });
    assert_eq!(
        acks[0],
        Ack::Ok {
            path: b"log".to_vec(),
            digest: Some(*blake3::hash(&whole).as_bytes())
        },
        "an append is acked with the digest of the whole file"
    );
    assert!(bad_reason(&acks, b"other").contains("differs from what the journal recorded"));
    assert!(
        matches!(&acks[2], Ack::Bad { reason, .. } if reason.contains("is 6 bytes, not the 5")),
        "{acks:?}"
    );
    assert_eq!((stats.files, stats.bad), (1, 2));
    let log = tmp.path().join("log");
    assert_eq!(fs::read(&log).unwrap(), whole);
    let m = fs::metadata(&log).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o640, 1_700_000_000));
    assert!(
        m.blocks() * 512 < whole.len() as u64 - 60_000,
        "the prefix's hole was filled: {} blocks",
        m.blocks()
    );
    assert_eq!(fs::read(tmp.path().join("other")).unwrap(), b"abcdef");
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "temporary files left: {names:?}");
}

// ---- Resume: a big file cut off midway goes on from its partial copy ----

/// A stream that resumes `meta` at `at` = (offset, prefix digest) from its
/// partial copy, sending the rest of `content`; the agent's acks.
fn resume(
    root: &Path,
    options: AgentOptions,
    meta: &EntryMeta,
    content: &[u8],
    (offset, prefix): (u64, [u8; 32]),
) -> (AgentStats, Vec<Ack>) {
    run_stream(root, options, |w| {
        let at = (offset, prefix, AppendBase::Partial);
        w.append(meta, at, &mut &content[offset as usize..])
            .unwrap();
    })
}

#[test]
// The acks go to a `Vec` this test never reads; `&mut` keeps the call as
// it was written before `agent::run` took its output by value.
#[allow(clippy::needless_borrows_for_generic_args)]
fn a_big_file_cut_off_midway_resumes_from_its_partial_copy() {
    require_root();
    let tmp = TempDir::new("resume");
    let content = random_bytes(6000 << 10, 11);
    let meta = file_meta(b"big", content.len() as u64);
    // The stream breaks after 3000 KiB of the file (parts come every MiB,
    // at the end of the frame that reaches one).
    let mut frames = vec![Frame::Entry(meta.clone())];
    for chunk in content[..3000 << 10].chunks(1000 << 10) {
        frames.push(Frame::Data(chunk.to_vec()));
    }
    let mut out = Vec::new();
    let err = agent::run(tmp.path(), raw_stream(&frames).as_slice(), &mut out).unwrap_err();
    assert!(err.to_string().contains("ended"), "{err}");
    let parts: Vec<(u64, [u8; 32])> = acks(&out)
        .into_iter()
        .filter_map(|a| match a {
            Ack::Part { offset, digest, .. } => Some((offset, digest)),
            _ => None,
        })
        .collect();
    let (offset, digest) = *parts.last().expect("a part for a big file");
    assert_eq!(offset, 2000 << 10, "{parts:?}");
    assert_eq!(
        digest,
        *blake3::hash(&content[..offset as usize]).as_bytes()
    );
    assert!(
        tmp.path().join(".big.hotclone-tmp").exists(),
        "the partial copy was not kept"
    );

    // A resume with a prefix that is not the partial copy's is refused,
    // and takes the partial copy away: the file goes whole next time.
    let mut refused = Vec::new();
    let (_, acks_) = resume(
        tmp.path(),
        AgentOptions::default(),
        &meta,
        &content,
        (offset, [9; 32]),
    );
    refused.extend(acks_);
    assert!(bad_reason(&refused, b"big").contains("partial copy differs"));
    assert!(!tmp.path().join(".big.hotclone-tmp").exists());

    // Cut off again, then resumed right: the file is whole, acked with the
    // digest of all of it, and no temporary file is left.
    let mut out = Vec::new();
    let _ = agent::run(tmp.path(), raw_stream(&frames).as_slice(), &mut out);
    let (stats, acks) = resume(
        tmp.path(),
        AgentOptions {
            sweep: true,
            ..Default::default()
        },
        &meta,
        &content,
        (offset, digest),
    );
    let last = acks
        .iter()
        .rev()
        .find(|a| !matches!(a, Ack::Part { .. }))
        .unwrap();
    assert_eq!(
        last,
        &Ack::Ok {
            path: b"big".to_vec(),
            digest: Some(*blake3::hash(&content).as_bytes())
        }
    );
    assert_eq!(stats.files, 1);
    assert_eq!(fs::read(tmp.path().join("big")).unwrap(), content);
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["big".to_string()]);

    // A partial copy nothing resumes goes with the sweep at the end.
    let _ = agent::run(tmp.path(), raw_stream(&frames).as_slice(), &mut Vec::new());
    assert!(tmp.path().join(".big.hotclone-tmp").exists());
    let (stats, _) = run_stream(
        tmp.path(),
        AgentOptions {
            sweep: true,
            ..Default::default()
        },
        |_| {},
    );
    assert_eq!(stats.swept, 1);
    assert!(!tmp.path().join(".big.hotclone-tmp").exists());
}

/// Regression: a resume cut off again before its next `part` dropped the
/// partial copy while the journal still named it, and every later pass
/// failed on the resume.
#[test]
// The acks go to a `Vec` this test never reads; `&mut` keeps the call as
// it was written before `agent::run` took its output by value.
#[allow(clippy::needless_borrows_for_generic_args)]
fn a_resume_cut_off_before_its_next_part_keeps_the_partial_copy() {
    require_root();
    let tmp = TempDir::new("resume-again");
    let content = random_bytes(6000 << 10, 12);
    let meta = file_meta(b"big", content.len() as u64);
    let cut_at = |from: usize, to: usize| {
        let mut frames = vec![Frame::Entry(meta.clone())];
        for chunk in content[from..to].chunks(1000 << 10) {
            frames.push(Frame::Data(chunk.to_vec()));
        }
        frames
    };
    let mut out = Vec::new();
    let _ = agent::run(
        tmp.path(),
        raw_stream(&cut_at(0, 2000 << 10)).as_slice(),
        &mut out,
    );
    let offset: u64 = 2000 << 10;
    let digest = *blake3::hash(&content[..offset as usize]).as_bytes();
    assert!(acks(&out).contains(&Ack::Part {
        path: b"big".to_vec(),
        offset,
        digest
    }));

    // Resumed, then cut off 10 KiB later: no new part, the copy stays.
    let mut raw = Vec::new();
    Frame::Hello { version: VERSION }.encode(&mut raw).unwrap();
    Frame::Append {
        meta: meta.clone(),
        offset,
        prefix: digest,
        base: AppendBase::Partial,
    }
    .encode(&mut raw)
    .unwrap();
    Frame::Data(content[offset as usize..offset as usize + 10_240].to_vec())
        .encode(&mut raw)
        .unwrap();
    let wire = zstd::encode_all(raw.as_slice(), 3).unwrap();
    assert!(agent::run(tmp.path(), wire.as_slice(), &mut Vec::new()).is_err());
    assert!(
        tmp.path().join(".big.hotclone-tmp").exists(),
        "the partial copy went"
    );

    let (_, acks) = resume(
        tmp.path(),
        AgentOptions {
            sweep: true,
            ..Default::default()
        },
        &meta,
        &content,
        (offset, digest),
    );
    assert!(
        verdicts(&acks).contains(&("ok", b"big".to_vec())),
        "{acks:?}"
    );
    assert_eq!(fs::read(tmp.path().join("big")).unwrap(), content);
}

/// Regression: when a client died, its agent could go on and finish a big
/// file whose `part` the journal had, so the next pass's resume found no
/// partial copy and failed. The finished file serves as the base.
#[test]
fn a_resume_whose_partial_copy_was_finished_meanwhile_uses_the_finished_file() {
    require_root();
    let tmp = TempDir::new("resume-finished");
    let content = random_bytes(600 << 10, 13);
    let meta = file_meta(b"big", content.len() as u64);
    let offset: u64 = 200 << 10;
    let digest = *blake3::hash(&content[..offset as usize]).as_bytes();
    // The orphaned agent finished it: whole, in place, no partial copy.
    let (_, acks) = run_stream(tmp.path(), AgentOptions::default(), |w| {
        w.file(&meta, &mut content.as_slice()).unwrap();
    });
    assert!(verdicts(&acks).contains(&("ok", b"big".to_vec())));
    assert!(!tmp.path().join(".big.hotclone-tmp").exists());

    let (_, acks) = resume(
        tmp.path(),
        AgentOptions::default(),
        &meta,
        &content,
        (offset, digest),
    );
    assert!(
        verdicts(&acks).contains(&("ok", b"big".to_vec())),
        "{acks:?}"
    );
    assert_eq!(fs::read(tmp.path().join("big")).unwrap(), content);
    // A finished file with another beginning is refused, and left alone.
    let (_, acks) = resume(
        tmp.path(),
        AgentOptions::default(),
        &meta,
        &content,
        (offset, [1; 32]),
    );
    assert!(bad_reason(&acks, b"big").contains("differs"));
    assert_eq!(fs::read(tmp.path().join("big")).unwrap(), content);
}

/// Files are committed as a group (issue 16), small ones and, one in
/// fifty, big ones with a `part`: through the real agent binary, whose
/// input is a pipe it polls, every `ok` read from it names a file that is
/// already in place with its content, and the acks
/// of a first batch arrive while the input stays open (the agent does not
/// wait for more input, or for the group to fill, before it answers).
#[test]
fn small_files_are_acked_only_once_in_place_and_while_the_input_pauses() {
    use std::io::BufRead;
    require_root();
    let tmp = TempDir::new("group-commit");
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hotclone"))
        .args(["agent", "--root"])
        .arg(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Every 50th file is big (it reports a `part`, and waits for the
    // group's commit under its temporary name).
    let content = |i: usize| match i % 50 {
        7 => random_bytes(300_000 + i, i as u64),
        _ => random_bytes(1000 + i * 37, i as u64),
    };
    let name = |i: usize| format!("d{}/f{i:04}", i / 100).into_bytes();
    let mut w = WireWriter::new(child.stdin.take().unwrap()).unwrap();
    let mut acked = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = 0;
    let mut read_acks = |upto: usize, acked: &mut std::io::BufReader<_>| {
        while seen < upto {
            let mut line = String::new();
            assert!(
                acked.read_line(&mut line).unwrap() > 0,
                "the agent ended early"
            );
            match Ack::parse(line.trim_end()).unwrap() {
                Ack::Ok { path, .. } => {
                    let i: usize = std::str::from_utf8(&path).unwrap()[4..].parse().unwrap();
                    assert_eq!(
                        fs::read(root.join(std::str::from_utf8(&path).unwrap())).unwrap(),
                        content(i),
                        "acked before it was in place"
                    );
                    seen += 1;
                }
                Ack::Part { path, offset, .. } => {
                    let i: usize = std::str::from_utf8(&path).unwrap()[4..].parse().unwrap();
                    assert!(
                        i % 50 == 7 && offset == 256 << 10,
                        "part {offset} of file {i}"
                    );
                }
                other => panic!("unexpected ack {other:?}"),
            }
        }
    };
    for i in 0..300 {
        w.file(
            &file_meta_sized(&name(i), content(i).len()),
            &mut &content(i)[..],
        )
        .unwrap();
    }
    w.flush().unwrap();
    // The input stays open: these acks come because the input paused.
    read_acks(300, &mut acked);
    for i in 300..600 {
        w.file(
            &file_meta_sized(&name(i), content(i).len()),
            &mut &content(i)[..],
        )
        .unwrap();
    }
    drop(w.finish().unwrap());
    read_acks(600, &mut acked);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let leftovers: Vec<_> = walk(&root)
        .into_keys()
        .filter(|p| p.ends_with(b".hotclone-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn file_meta_sized(path: &[u8], size: usize) -> EntryMeta {
    EntryMeta {
        size: size as u64,
        ..file_meta(path, 0)
    }
}

/// A source file named like a temporary file (`.x.hotclone-tmp`) and the
/// file `x`, whose temporary name that is, in one group commit: the
/// rename of the first must not land on `x`'s temporary file (it would
/// give `x` the other's content). Found in review of the group commit.
#[test]
fn regression_a_file_named_like_a_temporary_file_does_not_corrupt_its_neighbour() {
    require_root();
    let tmp = TempDir::new("temp-named");
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let (stats, acks) = run_stream(&root, AgentOptions::default(), |w| {
        send_file(w, b"d/a", b"first");
        send_file(w, b"d/.x.hotclone-tmp", b"named like a temporary file");
        send_file(w, b"d/x", b"the real x");
    });
    assert_eq!(stats.bad, 0, "{acks:?}");
    assert_eq!(fs::read(root.join("d/x")).unwrap(), b"the real x");
    assert_eq!(fs::read(root.join("d/a")).unwrap(), b"first");
}

/// A removal dirties a directory that a later entry of the same batch
/// takes away, its parent replaced by a file (`todir/inner/y` removed,
/// then `todir` sent as a file): the fsync of the dirty directories must
/// pass over it, not fail the whole pass with "Not a directory". Found by
/// sync_lab once acks (and that fsync) waited for the input to pause.
#[test]
fn regression_a_dirty_directory_whose_parent_became_a_file_is_passed_over() {
    require_root();
    let tmp = TempDir::new("dirty-gone");
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("todir/inner")).unwrap();
    fs::write(root.join("todir/inner/y"), b"y").unwrap();
    let (stats, acks) = run_stream(&root, AgentOptions::default(), |w| {
        w.remove(b"todir/inner/y").unwrap();
        send_file(w, b"todir", b"now a file");
    });
    assert_eq!(stats.bad, 0, "{acks:?}");
    assert_eq!(fs::read(root.join("todir")).unwrap(), b"now a file");
}

/// Regression (issue 16, found in review): a file below a small file that
/// still waited for its commit, where that file replaces a directory, was
/// written in place into the directory the commit then removed, and acked
/// `ok` though it was gone. It now waits for that commit, and fails (its
/// parent is a file by then).
#[test]
fn a_file_below_a_file_waiting_for_its_commit_is_not_acked_once_its_directory_went() {
    require_root();
    let tmp = TempDir::new("below-waiting");
    fs::create_dir_all(tmp.path().join("a/f")).unwrap();
    fs::write(tmp.path().join("a/f/old"), b"old").unwrap();
    let file = |path: &[u8], content: &[u8]| {
        vec![
            Frame::Entry(file_meta(path, content.len() as u64)),
            Frame::Data(content.to_vec()),
            Frame::FileEnd {
                blake3: *blake3::hash(content).as_bytes(),
            },
        ]
    };
    let mut frames = file(b"a/f", b"a file now");
    frames.extend(file(b"a/f/g", b"below it"));
    frames.extend(file(b"a/h", b"beside it"));
    frames.push(Frame::Done {
        files: 3,
        bytes: 27,
    });
    let mut out = Vec::new();
    let _ = agent::run(tmp.path(), raw_stream(&frames).as_slice(), &mut out);
    let acks = acks(&out);
    assert_eq!(fs::read(tmp.path().join("a/f")).unwrap(), b"a file now");
    assert_eq!(fs::read(tmp.path().join("a/h")).unwrap(), b"beside it");
    let ok = |p: &[u8]| {
        acks.iter()
            .any(|a| matches!(a, Ack::Ok { path, .. } if path == p))
    };
    assert!(ok(b"a/f") && ok(b"a/h"), "{acks:?}");
    assert!(!ok(b"a/f/g"), "a/f/g acked though a/f is a file: {acks:?}");
    assert!(
        acks.iter()
            .any(|a| matches!(a, Ack::Bad { path, .. } if path == b"a/f/g")),
        "{acks:?}"
    );
}
