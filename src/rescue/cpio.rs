//! The newc ("070701") cpio format the Linux kernel unpacks as an
//! initramfs. Several archives may be concatenated, each compressed or not:
//! the rescue image is a base archive plus small layers (the hotclone
//! binary, a migration's keys) appended to it.

use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Writes one newc archive; [`Cpio::finish`] writes the trailer.
pub struct Cpio<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;

impl<W: Write> Cpio<W> {
    pub fn new(out: W) -> Self {
        Cpio {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.raw(&[0u8; 3][..n])
    }

    /// One entry: `mode` includes the file type bits; `data` is the
    /// content (the link target for a symlink).
    pub fn entry(
        &mut self,
        name: &[u8],
        mode: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & S_IFDIR == S_IFDIR { 2 } else { 1 },
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.raw(header.as_bytes())?;
        self.raw(name)?;
        self.raw(&[0])?;
        self.pad()?;
        self.raw(data)?;
        self.pad()
    }

    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.entry(name.as_bytes(), S_IFDIR | perm, (0, 0), &[])
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name.as_bytes(), S_IFREG | perm, (0, 0), data)
    }

    /// Every entry below `root` (not `root` itself), named relative to it,
    /// parents before children, owned by root. Hardlinks become copies.
    pub fn tree(&mut self, root: &Path) -> io::Result<()> {
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let path = e.path();
                let meta = std::fs::symlink_metadata(&path)?;
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let name = rel.as_os_str().as_bytes();
                let ft = meta.file_type();
                let data = if ft.is_symlink() {
                    std::fs::read_link(&path)?.as_os_str().as_bytes().to_vec()
                } else if ft.is_file() {
                    std::fs::read(&path)?
                } else {
                    Vec::new()
                };
                let rdev = meta.rdev();
                let dev = (libc::major(rdev), libc::minor(rdev));
                self.entry(name, meta.mode(), dev, &data)?;
                if ft.is_dir() {
                    stack.push(path);
                }
            }
        }
        Ok(())
    }

    /// Write the trailer; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry(b"TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_end_with_a_trailer() {
        let mut c = Cpio::new(Vec::new());
        c.dir("etc", 0o755).unwrap();
        c.file("etc/x", 0o600, b"hello").unwrap();
        let out = c.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("070701"));
        // The file entry: mode 0100600 and size 5, then its name and data.
        let file = text.find("etc/x\0").unwrap();
        let header = &text[file - 110..file];
        assert_eq!(&header[14..22], "00008180");
        assert_eq!(&header[54..62], "00000005");
        assert!(text[file..].contains("hello"));
        let trailer = text.rfind("TRAILER!!!\0").unwrap();
        assert!(text[trailer + 11..].bytes().all(|b| b == 0));
    }

    #[test]
    fn a_tree_round_trips_through_the_systems_cpio() {
        // Checked against GNU cpio (the suite installs it).
        let dir = std::env::temp_dir().join(format!("hotclone-cpio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src/a/b")).unwrap();
        std::fs::write(dir.join("src/a/b/f"), b"data").unwrap();
        std::os::unix::fs::symlink("b/f", dir.join("src/a/link")).unwrap();
        let mut c = Cpio::new(Vec::new());
        c.tree(&dir.join("src")).unwrap();
        let out = c.finish().unwrap();
        let text = String::from_utf8_lossy(&out);
        for name in ["a\0", "a/b\0", "a/b/f\0", "a/link\0"] {
            assert!(text.contains(name), "{name:?} missing");
        }
        assert!(text.find("a\0").unwrap() < text.find("a/b/f\0").unwrap());
        {
            std::fs::create_dir_all(dir.join("out")).unwrap();
            std::fs::write(dir.join("x.cpio"), &out).unwrap();
            let st = std::process::Command::new("sh")
                .arg("-c")
                .arg("cd out && cpio -id --quiet < ../x.cpio")
                .current_dir(&dir)
                .status()
                .expect("GNU cpio is needed for this test (apt-get install cpio)");
            assert!(st.success());
            assert_eq!(std::fs::read(dir.join("out/a/b/f")).unwrap(), b"data");
            assert_eq!(
                std::fs::read_link(dir.join("out/a/link")).unwrap(),
                Path::new("b/f")
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
