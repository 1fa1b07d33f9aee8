//! The bench's workloads, generated from fixed seeds into the bench
//! source's disk (`/srv/bench`), and the churn the delta figures apply.
//!
//! - W1: the debian12 root itself (nothing generated).
//! - W2: 200,000 small files of 1–16 KiB in 2,000 directories.
//! - W3: 4 GiB of dense data: half text-like (compressible), half random.
//! - W4: 1,000,000 empty files in three parts (250k, 250k, 500k), so that
//!   250k, 500k and 1M entries are the parts taken together.
//!
//! On failure the partial tree is left where it was written; the caller
//! writes into a temporary image and keeps it only when this returned Ok.
use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the workloads live on the source.
pub const ROOT: &str = "/srv/bench";
pub const W2_DIRS: usize = 2_000;
pub const W2_FILES_PER_DIR: usize = 100;
pub const W3_FILES: usize = 16;
pub const W3_FILE_BYTES: usize = 256 << 20;
/// W4's parts, and how many empty files each holds (1,000 per directory).
pub const W4_PARTS: [(&str, usize); 3] = [("w4a", 250_000), ("w4b", 250_000), ("w4c", 500_000)];
/// Bump when what [`generate`] writes changes (part of the disk's cache key).
pub const GENERATOR_VERSION: u32 = 1;

/// A small, fixed PRNG (splitmix64): the same bytes on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

const WORDS: [&str; 32] = [
    "server", "legacy", "debian", "kernel", "config", "daemon", "socket", "backup", "cron", "mail",
    "queue", "user", "group", "lock", "spool", "cache", "index", "table", "row", "log", "error",
    "warning", "info", "debug", "request", "reply", "client", "session", "token", "value", "key",
    "path",
];

/// `len` bytes of text-like data (words, spaces, newlines): it compresses
/// about 4:1 with zstd -1, like logs and sources do.
pub fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let r = rng.next_u64();
        for i in 0..4 {
            out.extend_from_slice(WORDS[((r >> (i * 8)) & 31) as usize].as_bytes());
            out.push(if (r >> (32 + i * 8)) & 7 == 0 {
                b'\n'
            } else {
                b' '
            });
        }
    }
    out.truncate(len);
    out
}

/// `len` random bytes (incompressible).
pub fn random(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The size of a W2 file: 1–16 KiB.
fn small_size(rng: &mut Rng) -> usize {
    1024 + rng.below(15 * 1024 + 1) as usize
}

/// A W2 file's content: three in four text-like, one in four random.
fn small_content(rng: &mut Rng) -> Vec<u8> {
    let len = small_size(rng);
    if rng.below(4) == 0 {
        random(rng, len)
    } else {
        text(rng, len)
    }
}

fn w2_dir(root: &Path, d: usize) -> std::path::PathBuf {
    root.join("w2").join(format!("d{d:04}"))
}

/// Write every workload under `root` (the source's `/srv/bench`).
pub fn generate(root: &Path) -> Result<()> {
    let mut rng = Rng::new(2);
    for d in 0..W2_DIRS {
        let dir = w2_dir(root, d);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for f in 0..W2_FILES_PER_DIR {
            fs::write(dir.join(format!("f{f:03}")), small_content(&mut rng))?;
        }
    }
    let w3 = root.join("w3");
    fs::create_dir_all(&w3)?;
    let mut rng = Rng::new(3);
    for i in 0..W3_FILES {
        let path = w3.join(format!(
            "{}{i:02}",
            if i % 2 == 0 { "text" } else { "random" }
        ));
        let mut f = std::io::BufWriter::new(fs::File::create(&path)?);
        let chunk = 8 << 20;
        for _ in 0..W3_FILE_BYTES / chunk {
            let data = if i % 2 == 0 {
                text(&mut rng, chunk)
            } else {
                random(&mut rng, chunk)
            };
            f.write_all(&data)?;
        }
        f.flush()?;
    }
    for (part, count) in W4_PARTS {
        for d in 0..count / 1000 {
            let dir = root.join(part).join(format!("d{d:04}"));
            fs::create_dir_all(&dir)?;
            for f in 0..1000 {
                fs::File::create(dir.join(format!("e{f:03}")))?;
            }
        }
    }
    Ok(())
}

/// What [`churn`] did, and what [`Churned::restore`] needs to undo it.
#[derive(Debug, Default)]
pub struct Churned {
    pub rewritten: usize,
    pub created: usize,
    pub deleted: usize,
    root: PathBuf,
    /// The originals of the rewritten and deleted files (a tar).
    saved: PathBuf,
    new_files: Vec<PathBuf>,
}

/// Change 1 % of W2 under `root`: rewrite 1,000 files, delete 500 and
/// create 500. `seed` picks which; the same seed picks the same files.
/// The originals go to the tar `saved` first, for [`Churned::restore`].
pub fn churn(root: &Path, seed: u64, saved: &Path) -> Result<Churned> {
    let total = W2_DIRS * W2_FILES_PER_DIR;
    let mut rng = Rng::new(seed);
    let mut picked = Vec::new();
    let mut touched = std::collections::HashSet::new();
    while picked.len() < 1_500 {
        let n = rng.below(total as u64) as usize;
        if touched.insert(n) {
            picked.push(format!(
                "w2/d{:04}/f{:03}",
                n / W2_FILES_PER_DIR,
                n % W2_FILES_PER_DIR
            ));
        }
    }
    crate::sh::cmd("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(saved)
        .args(&picked)
        .run()
        .context("saving the files the churn changes")?;
    let mut done = Churned {
        root: root.to_path_buf(),
        saved: saved.to_path_buf(),
        ..Churned::default()
    };
    for (i, rel) in picked.iter().enumerate() {
        let path = root.join(rel);
        if i < 1_000 {
            fs::write(&path, small_content(&mut rng))
                .with_context(|| format!("rewriting {}", path.display()))?;
            done.rewritten += 1;
        } else {
            fs::remove_file(&path).with_context(|| format!("deleting {}", path.display()))?;
            done.deleted += 1;
        }
    }
    for i in 0..500 {
        let dir = w2_dir(root, rng.below(W2_DIRS as u64) as usize);
        let path = dir.join(format!("new-{seed}-{i:03}"));
        fs::write(&path, small_content(&mut rng))?;
        done.new_files.push(path);
        done.created += 1;
    }
    Ok(done)
}

impl Churned {
    /// Put W2 back as it was: the new files removed, the originals (with
    /// their times) restored.
    pub fn restore(&self) -> Result<()> {
        for p in &self.new_files {
            fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
        }
        crate::sh::cmd("tar")
            .arg("-C")
            .arg(&self.root)
            .arg("-xpf")
            .arg(&self.saved)
            .run()
            .context("restoring the files the churn changed")?;
        let _ = fs::remove_file(&self.saved);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generators_are_fixed_by_their_seed() {
        assert_eq!(text(&mut Rng::new(7), 64), text(&mut Rng::new(7), 64));
        assert_ne!(random(&mut Rng::new(7), 64), random(&mut Rng::new(8), 64));
        assert_eq!(Rng::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn churn_changes_one_percent_of_w2() {
        let tmp = std::env::temp_dir().join(format!("hc-bench-churn-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        for d in 0..W2_DIRS {
            fs::create_dir_all(w2_dir(&tmp, d)).unwrap();
            for f in 0..W2_FILES_PER_DIR {
                fs::write(w2_dir(&tmp, d).join(format!("f{f:03}")), b"x").unwrap();
            }
        }
        let count = |root: &Path| {
            let (mut files, mut unchanged) = (0, 0);
            for d in 0..W2_DIRS {
                for e in fs::read_dir(w2_dir(root, d)).unwrap() {
                    files += 1;
                    unchanged += usize::from(fs::read(e.unwrap().path()).unwrap() == b"x");
                }
            }
            (files, unchanged)
        };
        let saved = tmp.with_extension("tar");
        let done = churn(&tmp, 9, &saved).unwrap();
        let (files, unchanged) = count(&tmp);
        done.restore().unwrap();
        let restored = count(&tmp);
        fs::remove_dir_all(&tmp).unwrap();
        assert_eq!(
            (done.rewritten, done.deleted, done.created),
            (1_000, 500, 500)
        );
        assert_eq!(files, 200_000);
        assert_eq!(restored, (200_000, 200_000), "restore puts W2 back");
        assert_eq!(
            unchanged,
            200_000 - 1_000 - 500,
            "all but the rewritten and deleted"
        );
    }
}
