//! What a pass must do: the source's fresh listing compared with the
//! journal (what the target holds). Pure: no I/O, so every rule has a unit
//! test.
//!
//! - **send** (content, through the source's tar): new paths, type changes,
//!   files whose size, mtime, inode or ctime changed, files marked dirty by
//!   an earlier pass, and every name of a hardlinked inode when any of its
//!   names is sent (so tar links them again). Kept in path order, with each
//!   hardlink set together.
//! - **attrs** (metadata only): owner or mode changed and the content
//!   provably not (same size, mtime and inode); directories whose metadata
//!   changed.
//! - **remove**: journal paths the source no longer has, deepest first.
//!
//! Files that conversion rewrote are left alone while the source's copy is
//! unchanged. When it changed, or a file that decides how the clone boots
//! changed (kernel, modules, fstab, bootloader and network config), the
//! pass says so in `reconvert`, and the caller converts the copy again.

use std::collections::{HashMap, HashSet};

use crate::journal::{ConvertedFile, FileRecord};
use crate::stream::listing::{FileKind, ListedFile};

/// Where a change means the copy must be converted again.
const BOOT_RELEVANT: &[&str] = &[
    "/boot/",
    "/lib/modules/",
    "/usr/lib/modules/",
    "/etc/fstab",
    "/etc/default/grub",
    "/etc/initramfs-tools/",
    "/etc/dracut.conf",
    "/etc/network/interfaces",
    "/etc/sysconfig/network-scripts/",
    "/etc/netplan/",
    "/etc/udev/rules.d/",
    "/etc/modprobe.d/",
    "/etc/inittab",
    "/etc/securetty",
];

fn boot_relevant(path: &[u8]) -> bool {
    BOOT_RELEVANT.iter().any(|p| {
        let p = p.as_bytes();
        if p.ends_with(b"/") {
            path.starts_with(p)
        } else {
            path == p || (path.starts_with(p) && path.get(p.len()) == Some(&b'/'))
        }
    })
}

/// Why an entry is in the pass (for `--verbose` and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    New,
    KindChanged,
    Content,
    Dirty,
    HardlinkSet,
}

#[derive(Debug, Default)]
pub struct Delta<'a> {
    pub send: Vec<(&'a ListedFile, Reason)>,
    pub attrs: Vec<&'a ListedFile>,
    /// Absolute source paths, deepest first.
    pub remove: Vec<Vec<u8>>,
    pub unchanged: u64,
    /// Content bytes of what is sent.
    pub send_bytes: u64,
    /// A converted or boot-relevant file changed: convert again after the pass.
    pub reconvert: bool,
}

impl<'a> Delta<'a> {
    /// After an interrupted pass, directories' times cannot be trusted: the
    /// agent sets them last, when its stream ends, and writing children
    /// changes them. Send every directory's metadata again (cheap: no
    /// content), so the target ends with the source's times.
    pub fn reassert_directories(&mut self, listing: &'a [ListedFile]) {
        let chosen: HashSet<&[u8]> = self
            .send
            .iter()
            .map(|(f, _)| f.path.as_slice())
            .chain(self.attrs.iter().map(|f| f.path.as_slice()))
            .collect();
        let dirs: Vec<&'a ListedFile> = listing
            .iter()
            .filter(|f| f.kind == FileKind::Dir && !chosen.contains(f.path.as_slice()))
            .collect();
        self.unchanged = self.unchanged.saturating_sub(dirs.len() as u64);
        self.attrs.extend(dirs);
    }

    pub fn is_empty(&self) -> bool {
        self.send.is_empty() && self.attrs.is_empty() && self.remove.is_empty()
    }

    pub fn send_files(&self) -> Vec<&'a ListedFile> {
        self.send.iter().map(|(f, _)| *f).collect()
    }
}

/// What changed about one path that both sides have.
fn compare(f: &ListedFile, r: &FileRecord) -> Option<Change> {
    if r.dirty {
        return Some(Change::Send(Reason::Dirty));
    }
    if f.kind.name() != r.kind && !(r.kind == "hardlink" && f.kind == FileKind::File) {
        return Some(Change::Send(Reason::KindChanged));
    }
    let owner_mode = f.uid != r.uid || f.gid != r.gid || f.mode != r.mode;
    let times = f.mtime != r.mtime || f.mtime_nsec != r.mtime_nsec;
    match f.kind {
        FileKind::File => {
            if f.size != r.size || times || f.inode != r.inode {
                Some(Change::Send(Reason::Content))
            } else if owner_mode {
                Some(Change::Attrs)
            } else if f.ctime != r.ctime {
                // Something changed that the listing cannot see (xattrs,
                // or content written with the mtime put back): send it.
                Some(Change::Send(Reason::Content))
            } else {
                None
            }
        }
        FileKind::Dir => (owner_mode || times || f.ctime != r.ctime).then_some(Change::Attrs),
        _ => (owner_mode || times || f.inode != r.inode || f.size != r.size || f.ctime != r.ctime)
            .then_some(Change::Send(Reason::Content)),
    }
}

enum Change {
    Send(Reason),
    Attrs,
}

/// Compare `listing` (the source now, each path once) with `journal`
/// (the target).
///
/// What is chosen is kept per listing entry, by index, not in maps keyed
/// by path: a first clone of a million entries chooses them all, and a map
/// of a million paths costs 50 MB a copy (issue 16).
pub fn compute<'a>(
    listing: &'a [ListedFile],
    journal: &[FileRecord],
    converted: &[ConvertedFile],
) -> Delta<'a> {
    let held: HashMap<&[u8], &FileRecord> =
        journal.iter().map(|r| (r.path.as_slice(), r)).collect();
    let converted: HashSet<&[u8]> = converted.iter().map(|(p, _)| p.as_slice()).collect();
    let mut delta = Delta::default();
    // Per entry: why its content is sent, and whether its metadata is.
    let mut chosen: Vec<Option<Reason>> = vec![None; listing.len()];
    let mut in_attrs = vec![false; listing.len()];
    for (i, f) in listing.iter().enumerate() {
        let change = match held.get(f.path.as_slice()) {
            None => Some(Change::Send(Reason::New)),
            Some(r) => compare(f, r),
        };
        match change {
            None => delta.unchanged += 1,
            Some(change) => {
                if converted.contains(f.path.as_slice()) || boot_relevant(&f.path) {
                    delta.reconvert = true;
                }
                match change {
                    // The root always exists on the target: only its
                    // metadata is ever sent.
                    Change::Send(_) if f.path == b"/" => {
                        delta.attrs.push(f);
                        in_attrs[i] = true;
                    }
                    Change::Send(reason) => chosen[i] = Some(reason),
                    Change::Attrs => {
                        delta.attrs.push(f);
                        in_attrs[i] = true;
                    }
                }
            }
        }
    }

    // Hardlink sets travel together: tar links names only within one run.
    let mut sets: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, f) in listing.iter().enumerate() {
        if f.kind == FileKind::File && f.nlink > 1 {
            sets.entry((f.dev, f.inode)).or_default().push(i);
        }
    }
    for set in sets.values() {
        if set.iter().any(|&i| chosen[i].is_some()) {
            for &i in set {
                if chosen[i].is_none() {
                    chosen[i] = Some(Reason::HardlinkSet);
                    delta.unchanged = delta.unchanged.saturating_sub(1);
                    if in_attrs[i] {
                        in_attrs[i] = false;
                        let path = &listing[i].path;
                        delta.attrs.retain(|a| a.path != *path);
                    }
                }
            }
        }
    }
    let mut placed = vec![false; listing.len()];
    for (i, f) in listing.iter().enumerate() {
        if placed[i] || chosen[i].is_none() {
            continue;
        }
        let members: Vec<usize> = match sets.get(&(f.dev, f.inode)) {
            Some(set) if f.kind == FileKind::File && f.nlink > 1 => set.clone(),
            _ => vec![i],
        };
        // One content per set: the other names travel as links.
        delta.send_bytes += f.size;
        for m in members {
            if let (false, Some(reason)) = (placed[m], chosen[m]) {
                placed[m] = true;
                delta.send.push((&listing[m], reason));
            }
        }
    }
    drop(placed);

    let mut remove: Vec<Vec<u8>> = if journal.is_empty() {
        Vec::new()
    } else {
        let mut present: Vec<&[u8]> = listing.iter().map(|f| f.path.as_slice()).collect();
        present.sort_unstable();
        journal
            .iter()
            .filter(|r| present.binary_search(&r.path.as_slice()).is_err())
            .map(|r| r.path.clone())
            .collect()
    };
    remove.sort_unstable_by(|a, b| b.cmp(a));
    if remove
        .iter()
        .any(|p| converted.contains(p.as_slice()) || boot_relevant(p))
    {
        delta.reconvert = true;
    }
    delta.remove = remove;

    // The agent writes a changed file beside the old one and renames it
    // into place, and removes what the source deleted: both change the
    // parent's mtime on the target. The parent's metadata goes along (the
    // agent sets directory times last), so the target keeps the source's.
    let parents: HashSet<&[u8]> = delta
        .send
        .iter()
        .map(|(f, _)| parent(&f.path))
        .chain(delta.remove.iter().map(|p| parent(p)))
        .collect();
    let mut touched: Vec<&'a ListedFile> = listing
        .iter()
        .enumerate()
        .filter(|(i, f)| {
            f.kind == FileKind::Dir
                && parents.contains(f.path.as_slice())
                && chosen[*i].is_none()
                && !in_attrs[*i]
        })
        .map(|(_, f)| f)
        .collect();
    delta.unchanged = delta.unchanged.saturating_sub(touched.len() as u64);
    delta.attrs.append(&mut touched);
    delta
}

/// "/a/b" -> "/a", "/a" -> "/".
fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(0) => b"/",
        Some(i) => &path[..i],
        None => b"",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(path: &str, kind: FileKind, size: u64, mtime: i64, inode: u64) -> ListedFile {
        ListedFile {
            kind,
            inode,
            ..ListedFile::test_file(path, size, mtime)
        }
    }

    fn file(path: &str, size: u64, mtime: i64) -> ListedFile {
        listed(path, FileKind::File, size, mtime, 7)
    }

    fn held(f: &ListedFile) -> FileRecord {
        FileRecord {
            path: f.path.clone(),
            kind: f.kind.name().into(),
            size: f.size,
            mtime: f.mtime,
            mtime_nsec: f.mtime_nsec,
            ctime: f.ctime,
            inode: f.inode,
            uid: f.uid,
            gid: f.gid,
            mode: f.mode,
            digest: None,
            link_target: None,
            xattr_digest: None,
            dirty: false,
        }
    }

    fn sent(d: &Delta) -> Vec<(String, Reason)> {
        d.send
            .iter()
            .map(|(f, r)| (String::from_utf8_lossy(&f.path).into_owned(), *r))
            .collect()
    }

    #[test]
    fn nothing_changed_means_an_empty_pass() {
        let listing = vec![listed("/", FileKind::Dir, 0, 1, 2), file("/a", 5, 10)];
        let journal: Vec<FileRecord> = listing.iter().map(held).collect();
        let d = compute(&listing, &journal, &[]);
        assert!(d.is_empty());
        assert_eq!(d.unchanged, 2);
        assert!(!d.reconvert);
    }

    #[test]
    fn new_changed_dirty_and_type_changed_paths_are_sent() {
        let old = [
            file("/grown", 5, 10),
            file("/touched", 5, 10),
            file("/dirty", 5, 10),
            file("/became-link", 5, 10),
            file("/same", 5, 10),
            file("/replaced", 5, 10),
        ];
        let mut journal: Vec<FileRecord> = old.iter().map(held).collect();
        journal[2].dirty = true;
        let listing = vec![
            file("/dirty", 5, 10),
            file("/grown", 9, 10),
            file("/new", 1, 10),
            listed("/replaced", FileKind::File, 5, 10, 99),
            file("/same", 5, 10),
            file("/touched", 5, 11),
            listed("/became-link", FileKind::Symlink, 3, 10, 7),
        ];
        let d = compute(&listing, &journal, &[]);
        assert_eq!(
            sent(&d),
            vec![
                ("/dirty".into(), Reason::Dirty),
                ("/grown".into(), Reason::Content),
                ("/new".into(), Reason::New),
                ("/replaced".into(), Reason::Content),
                ("/touched".into(), Reason::Content),
                ("/became-link".into(), Reason::KindChanged),
            ]
        );
        assert_eq!(d.unchanged, 1);
        assert_eq!(d.send_bytes, 5 + 9 + 1 + 5 + 5 + 3);
    }

    #[test]
    fn owner_and_mode_changes_are_metadata_only_unless_content_may_differ() {
        let old = [file("/chmod", 5, 10), file("/chmod-and-write", 5, 10)];
        let journal: Vec<FileRecord> = old.iter().map(held).collect();
        let mut chmod = file("/chmod", 5, 10);
        chmod.mode = 0o600;
        chmod.ctime = 99;
        let mut both = file("/chmod-and-write", 6, 10);
        both.mode = 0o600;
        let listing = vec![chmod, both];
        let d = compute(&listing, &journal, &[]);
        assert_eq!(d.attrs.len(), 1);
        assert_eq!(d.attrs[0].path, b"/chmod");
        assert_eq!(sent(&d), vec![("/chmod-and-write".into(), Reason::Content)]);
    }

    #[test]
    fn a_ctime_change_alone_resends_a_file_but_only_updates_a_directory() {
        let old = [file("/f", 5, 10), listed("/d", FileKind::Dir, 0, 10, 3)];
        let journal: Vec<FileRecord> = old.iter().map(held).collect();
        let mut f = file("/f", 5, 10);
        f.ctime = 50;
        let mut d = listed("/d", FileKind::Dir, 0, 10, 3);
        d.ctime = 50;
        let listing = vec![d, f];
        let delta = compute(&listing, &journal, &[]);
        assert_eq!(sent(&delta), vec![("/f".into(), Reason::Content)]);
        assert_eq!(delta.attrs[0].path, b"/d");
    }

    #[test]
    fn after_an_interruption_every_directory_goes_as_metadata_once() {
        let listing = vec![
            listed("/", FileKind::Dir, 0, 1, 2),
            listed("/d", FileKind::Dir, 0, 1, 3),
            file("/d/f", 1, 1),
            listed("/new", FileKind::Dir, 0, 1, 4),
        ];
        let journal: Vec<FileRecord> = listing[..3].iter().map(held).collect();
        let mut d = compute(&listing, &journal, &[]);
        d.reassert_directories(&listing);
        let attrs: Vec<&[u8]> = d.attrs.iter().map(|f| f.path.as_slice()).collect();
        assert_eq!(attrs, vec![b"/".as_slice(), b"/d"]);
        assert_eq!(sent(&d), vec![("/new".into(), Reason::New)]);
        assert_eq!(d.unchanged, 1);
    }

    #[test]
    fn a_rewritten_file_brings_its_unchanged_parent_as_metadata() {
        let listing = vec![
            listed("/", FileKind::Dir, 0, 1, 2),
            listed("/d", FileKind::Dir, 0, 1, 3),
            file("/d/f", 1, 1),
            listed("/e", FileKind::Dir, 0, 1, 4),
        ];
        let journal: Vec<FileRecord> = listing.iter().map(held).collect();
        let mut changed = listing.clone();
        changed[2].size = 2;
        let d = compute(&changed, &journal, &[]);
        let attrs: Vec<&[u8]> = d.attrs.iter().map(|f| f.path.as_slice()).collect();
        assert_eq!(attrs, vec![b"/d".as_slice()]);
        assert_eq!(d.unchanged, 2);
        assert_eq!(parent(b"/a/b"), b"/a");
        assert_eq!(parent(b"/a"), b"/");
    }

    #[test]
    fn the_root_travels_as_metadata() {
        let listing = vec![listed("/", FileKind::Dir, 0, 1, 2)];
        let d = compute(&listing, &[], &[]);
        assert!(d.send.is_empty());
        assert_eq!(d.attrs[0].path, b"/");
    }

    #[test]
    fn deletions_come_deepest_first() {
        let old = [
            listed("/d", FileKind::Dir, 0, 1, 2),
            file("/d/a", 1, 1),
            listed("/d/sub", FileKind::Dir, 0, 1, 3),
            file("/d/sub/b", 1, 1),
            file("/keep", 1, 1),
        ];
        let journal: Vec<FileRecord> = old.iter().map(held).collect();
        let listing = vec![file("/keep", 1, 1)];
        let d = compute(&listing, &journal, &[]);
        let shown: Vec<String> = d
            .remove
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        assert_eq!(shown, vec!["/d/sub/b", "/d/sub", "/d/a", "/d"]);
    }

    #[test]
    fn a_changed_hardlink_brings_its_whole_set_adjacent() {
        let mut a = listed("/a", FileKind::File, 5, 10, 40);
        a.nlink = 2;
        let mut z = listed("/z", FileKind::File, 5, 10, 40);
        z.nlink = 2;
        let m = file("/m", 1, 1);
        let journal: Vec<FileRecord> = [a.clone(), z.clone(), m.clone()].iter().map(held).collect();
        z.mtime = 11;
        a.mtime = 11;
        let mut n = file("/n", 1, 1);
        n.inode = 8;
        let listing = vec![a, m, n, z];
        let d = compute(&listing, &journal, &[]);
        assert_eq!(
            sent(&d),
            vec![
                ("/a".into(), Reason::Content),
                ("/z".into(), Reason::Content),
                ("/n".into(), Reason::New),
            ]
        );

        // Only one name changed (a new link to an existing inode): the
        // unchanged name goes along.
        let mut old_name = listed("/old", FileKind::File, 5, 10, 41);
        let journal = vec![held(&old_name)];
        old_name.nlink = 2;
        let mut new_name = old_name.clone();
        new_name.path = b"/new".to_vec();
        let listing = vec![new_name, old_name];
        let d = compute(&listing, &journal, &[]);
        assert_eq!(
            sent(&d),
            vec![
                ("/new".into(), Reason::New),
                ("/old".into(), Reason::HardlinkSet),
            ]
        );
        assert_eq!(d.unchanged, 0);
        assert_eq!(d.send_bytes, 5);
    }

    #[test]
    fn converted_files_stay_converted_until_the_source_changes_them() {
        let fstab = file("/etc/fstab", 50, 10);
        let journal = vec![held(&fstab)];
        let converted: Vec<ConvertedFile> = vec![(b"/etc/fstab".to_vec(), Some([1; 32]))];
        let listing = vec![fstab.clone()];
        let d = compute(&listing, &journal, &converted);
        assert!(d.is_empty() && !d.reconvert);

        let mut edited = fstab;
        edited.size = 60;
        let listing = vec![edited];
        let d = compute(&listing, &journal, &converted);
        assert_eq!(d.send.len(), 1);
        assert!(d.reconvert);
    }

    #[test]
    fn a_new_kernel_or_module_asks_for_conversion_and_other_files_do_not() {
        let reconverts = |path: &str| compute(&[file(path, 1, 1)], &[], &[]).reconvert;
        assert!(reconverts("/boot/vmlinuz-6.1"));
        assert!(reconverts("/lib/modules/6.1/x.ko"));
        assert!(!reconverts("/srv/www/index.html"));
        assert!(!reconverts("/etc/fstab.orig"));
        let gone = held(&file("/boot/old-initrd", 1, 1));
        let d = compute(&[], &[gone], &[]);
        assert!(d.reconvert);
    }
}
