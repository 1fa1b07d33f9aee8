//! The source's listing as several GNU `find`s at once (issue 16). A cold
//! listing waits on the source's disk for one directory or inode block at
//! a time; several finds keep several reads in flight. On this lab's disk
//! (`cargo xtask bench --only W2`, page cache dropped), the listing phase
//! of a W2 sync (216,000 entries) took 1.69 s and 1.64 s with one find,
//! 1.30 s and 1.41 s with this walk; the bench disk's W2 tree alone,
//! listed on the host without SSH, 1.39 s with one find, 0.96 s with two
//! at once, 0.92 s with four and 0.83 s with eight.
//!
//! Each find goes [`LEVELS`] directory levels deep. The first lists a
//! root that deep; every directory it reached at its last level (on the
//! root's filesystem) becomes a start, and the starts of one level are
//! handed out in batches to the next free find, which lists [`LEVELS`]
//! more below them. A big tree is spread over every find whatever its
//! shape, and a small one costs a few execs.
//!
//! The starts reach the source on a find's stdin (NUL-separated, through
//! `xargs -0`), so a directory name needs no quoting and may hold any
//! byte. Together the finds print what one `find ROOT -xdev` prints: the
//! same records, in another order (the caller sorts them).
//!
//! On failure: a find that cannot read a directory (removed while the
//! walk ran) lists the rest, as a single find did; a source that changes
//! under the walk is what every pass handles already (the next pass sends
//! what this one missed). A directory on another filesystem is never a
//! start: `-xdev` would not keep a find that started there from it.

use super::listing::{self, FileKind, ListedFile};
use std::collections::{BTreeMap, VecDeque};

/// Directory levels one find lists below its starts.
pub const LEVELS: usize = 2;
/// A find takes at least this many starts (or all that wait): each find
/// is an exec on the source, some 15 ms of a lane (debian12's /usr and
/// /etc, 13,744 entries, page cache warm: one find 49 ms; the walk with
/// batches from one start 88 finds and 350 ms, from 64 about 23 finds and
/// 150 ms)...
const MIN_STARTS: usize = 64;
/// ...and at most this many...
const MAX_STARTS: usize = 512;
/// ...and at most this many bytes of them (its stdin, and the argv
/// `xargs` builds: a 2.6 kernel before 2.6.23 allows 128 KiB in all).
const MAX_START_BYTES: usize = 32 << 10;

/// One find's share of the walk: its starts, all on one level of one
/// root's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Index of the root (in [`Walk::new`]'s order) the starts are under.
    pub root: usize,
    pub starts: Vec<Vec<u8>>,
    /// The starts' depth (path components: "/" is 0, "/srv" is 1).
    depth: usize,
    /// The root's filesystem; `None` for the root's own batch, which
    /// lists the root itself too.
    dev: Option<u64>,
}

impl Batch {
    /// A root's own batch (the root itself, then its first levels).
    pub fn is_root(&self) -> bool {
        self.dev.is_none()
    }

    /// The remote command; its stdin is [`Batch::stdin`].
    pub fn command(&self, prune: &[String]) -> String {
        let min_depth = if self.is_root() { 0 } else { 1 };
        listing::walk_command(min_depth, LEVELS, prune)
    }

    /// The starts, NUL-separated.
    pub fn stdin(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &self.starts {
            out.extend_from_slice(s);
            out.push(0);
        }
        out
    }
}

/// Where the walk stands: the roots not yet listed, and the starts no
/// find has taken yet.
#[derive(Debug)]
pub struct Walk {
    roots: Vec<Vec<u8>>,
    /// Roots whose own batch has not run (or failed), by index.
    unlisted: VecDeque<usize>,
    /// Starts waiting, by (root, depth, filesystem).
    waiting: BTreeMap<(usize, usize, u64), Vec<Vec<u8>>>,
}

impl Walk {
    pub fn new(roots: &[&str]) -> Walk {
        Walk {
            roots: roots.iter().map(|r| r.as_bytes().to_vec()).collect(),
            unlisted: (0..roots.len()).collect(),
            waiting: BTreeMap::new(),
        }
    }

    /// The next batch for an idle find, or `None` when nothing waits (the
    /// walk is over once no find runs either): a `finds`-th of the starts
    /// that wait on one level, from [`MIN_STARTS`] to [`MAX_STARTS`].
    pub fn next(&mut self, finds: usize) -> Option<Batch> {
        if let Some(root) = self.unlisted.pop_front() {
            let path = self.roots[root].clone();
            return Some(Batch {
                root,
                depth: depth(&path),
                starts: vec![path],
                dev: None,
            });
        }
        let mut entry = self.waiting.first_entry()?;
        let (root, depth, dev) = *entry.key();
        let share = entry
            .get()
            .len()
            .div_ceil(finds.max(1))
            .clamp(MIN_STARTS, MAX_STARTS);
        let mut starts = Vec::new();
        let mut bytes = 0;
        while starts.len() < share {
            let Some(s) = entry.get_mut().pop() else {
                break;
            };
            bytes += s.len() + 1;
            starts.push(s);
            if bytes >= MAX_START_BYTES {
                break;
            }
        }
        if entry.get().is_empty() {
            entry.remove();
        }
        Some(Batch {
            root,
            starts,
            depth,
            dev: Some(dev),
        })
    }

    /// `batch`'s find printed `files`: the directories on its last level
    /// become starts.
    pub fn listed(&mut self, batch: &Batch, files: &[ListedFile]) {
        let dev = match batch.dev {
            Some(dev) => dev,
            None => match files.iter().find(|f| batch.starts.contains(&f.path)) {
                Some(root) if root.kind == FileKind::Dir => root.dev,
                _ => return,
            },
        };
        let last = batch.depth + LEVELS;
        for f in files {
            if f.kind == FileKind::Dir && f.dev == dev && depth(&f.path) == last {
                self.waiting
                    .entry((batch.root, last, dev))
                    .or_default()
                    .push(f.path.clone());
            }
        }
    }

    /// A batch whose find failed goes back to wait for another.
    pub fn retry(&mut self, batch: Batch) {
        match batch.dev {
            None => self.unlisted.push_front(batch.root),
            Some(dev) => self
                .waiting
                .entry((batch.root, batch.depth, dev))
                .or_default()
                .extend(batch.starts),
        }
    }
}

/// Path components: "/" is 0, "/srv" 1, "/srv/bench" 2.
fn depth(path: &[u8]) -> usize {
    path.split(|b| *b == b'/').filter(|c| !c.is_empty()).count()
}

#[cfg(test)]
mod tests {
    //! The walk's commands run by this machine's own GNU find (the one a
    //! source has), one after another, against one `find -xdev`.
    use super::*;
    use crate::probe::{Capabilities, TarFlavour};
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    use std::process::{Command, Stdio};

    fn sh(cmd: &str, stdin: &[u8]) -> Vec<u8> {
        let mut child = Command::new("sh")
            .args(["-c", cmd])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "`{cmd}`: {}", out.status);
        out.stdout
    }

    /// Every batch's find in turn; returns the entries and the batches.
    fn walked(roots: &[&str], prune: &[String], finds: usize) -> (Vec<ListedFile>, usize) {
        let mut walk = Walk::new(roots);
        let (mut files, mut batches) = (Vec::new(), 0);
        while let Some(batch) = walk.next(finds) {
            let (listed, bad) = listing::parse_gnu(&sh(&batch.command(prune), &batch.stdin()));
            assert!(bad.is_empty(), "{bad:?}");
            walk.listed(&batch, &listed);
            files.extend(listed);
            batches += 1;
        }
        (files, batches)
    }

    fn one_find(roots: &[&str], prune: &[String]) -> Vec<ListedFile> {
        let caps = Capabilities::for_test(TarFlavour::Gnu, &[]);
        let (files, bad) = listing::parse_gnu(&sh(&listing::command(&caps, roots, prune), b""));
        assert!(bad.is_empty(), "{bad:?}");
        files
    }

    fn paths(files: &[ListedFile]) -> Vec<Vec<u8>> {
        let mut p: Vec<Vec<u8>> = files.iter().map(|f| f.path.clone()).collect();
        p.sort();
        p
    }

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    /// A tree of odd shapes: one chain ten levels deep, 300 directories
    /// side by side, names with a newline, a quote, spaces and a byte
    /// that is not UTF-8 (as directories the walk starts from), and two
    /// trees the plan excludes (one whole, one its contents).
    fn odd_tree(name: &str) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("hc-walk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        touch(&root.join("a/b/c/d/e/f/g/h/i/j/deep"));
        for d in 0..300 {
            touch(&root.join(format!("wide/sub/d{d:03}/f")));
        }
        let odd = std::ffi::OsStr::from_bytes(b"x/y/new\nline/it's a \xff dir/z/zz");
        touch(&root.join(odd).join("file"));
        touch(&root.join("srv/skip/a/b/c"));
        touch(&root.join("srv/cache/a/b/c"));
        std::fs::create_dir_all(root.join("empty/e1/e2")).unwrap();
        root
    }

    #[test]
    fn the_walk_lists_what_one_find_lists() {
        let root = odd_tree("same");
        let r = root.to_str().unwrap();
        let prune = vec![
            listing::prune_pattern(&format!("{r}/srv/skip"), false).unwrap(),
            listing::prune_pattern(&format!("{r}/srv/cache"), true).unwrap(),
        ];
        let one = one_find(&[r], &prune);
        assert!(one.len() > 600, "{}", one.len());
        for finds in [1, 4] {
            let (walked, batches) = walked(&[r], &prune, finds);
            assert_eq!(walked.len(), one.len(), "no entry listed twice");
            assert_eq!(paths(&walked), paths(&one), "{finds} finds");
            // The 300 directories side by side were shared out.
            assert!(batches > 5, "{batches} batches");
        }
        assert!(paths(&one).contains(&format!("{r}/srv/cache").into_bytes()));
        assert!(!paths(&one).contains(&format!("{r}/srv/skip").into_bytes()));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn several_roots_keep_their_order_and_a_file_root_is_listed() {
        let root = odd_tree("roots");
        let (a, file) = (root.join("a"), root.join("a/b/c/d/e/f/g/h/i/j/deep"));
        let roots = [a.to_str().unwrap(), file.to_str().unwrap()];
        let (walked, _) = walked(&roots, &[], 4);
        assert_eq!(paths(&walked), paths(&one_find(&roots, &[])));
        // The second root's own listing comes after all of the first's.
        assert_eq!(walked.last().unwrap().path, roots[1].as_bytes());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_refused_batch_goes_back_and_is_handed_out_again() {
        let mut walk = Walk::new(&["/r"]);
        let root = walk.next(4).unwrap();
        assert!(root.is_root());
        walk.retry(root.clone());
        assert_eq!(walk.next(4), Some(root.clone()));
        let dir = |p: &str| ListedFile {
            kind: FileKind::Dir,
            ..ListedFile::test_file(p, 0, 0)
        };
        let listed: Vec<ListedFile> = ["/r", "/r/a", "/r/a/b", "/r/a/c", "/r/x/y"]
            .iter()
            .map(|p| dir(p))
            .collect();
        walk.listed(&root, &listed);
        let level = walk.next(4).unwrap();
        assert_eq!(level.starts.len(), 3, "fewer than MIN_STARTS go together");
        assert_eq!(walk.next(4), None);
        walk.retry(level.clone());
        let mut again = Vec::new();
        while let Some(b) = walk.next(1) {
            again.extend(b.starts);
        }
        again.sort();
        assert_eq!(
            again,
            [b"/r/a/b".to_vec(), b"/r/a/c".to_vec(), b"/r/x/y".to_vec()]
        );
    }

    #[test]
    fn a_level_is_shared_among_the_finds_from_64_to_512_starts_a_find() {
        let sizes = |waiting: usize, finds: usize| {
            let mut walk = Walk::new(&["/r"]);
            let root = walk.next(finds).unwrap();
            let mut listed = vec![ListedFile {
                kind: FileKind::Dir,
                ..ListedFile::test_file("/r", 0, 0)
            }];
            listed.extend((0..waiting).map(|i| ListedFile {
                kind: FileKind::Dir,
                ..ListedFile::test_file(&format!("/r/a/d{i}"), 0, 0)
            }));
            walk.listed(&root, &listed);
            std::iter::from_fn(|| walk.next(finds).map(|b| b.starts.len())).collect::<Vec<_>>()
        };
        // Each find takes a quarter of what waits, from 64 to 512.
        assert_eq!(sizes(300, 4), [75, 64, 64, 64, 33]);
        assert_eq!(sizes(100, 4), [64, 36]);
        assert_eq!(sizes(3, 4), [3]);
        assert_eq!(sizes(0, 4), Vec::<usize>::new());
        let big = sizes(5000, 4);
        assert_eq!(big[..3], [512, 512, 512]);
        assert_eq!(big.iter().sum::<usize>(), 5000);
        assert!(big.iter().all(|n| (1..=512).contains(n)), "{big:?}");
    }

    #[test]
    fn a_directory_on_another_filesystem_is_no_start() {
        let mut walk = Walk::new(&["/"]);
        let root = walk.next(4).unwrap();
        let entry = |p: &str, dev| ListedFile {
            kind: FileKind::Dir,
            dev,
            ..ListedFile::test_file(p, 0, 0)
        };
        walk.listed(
            &root,
            &[entry("/", 1), entry("/usr/lib", 1), entry("/srv/data", 2)],
        );
        let b = walk.next(4).unwrap();
        assert_eq!(b.starts, [b"/usr/lib".to_vec()]);
        assert_eq!(walk.next(4), None);
    }
}
