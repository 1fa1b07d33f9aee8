//! The bench source's disk: the bench recipe's root (debian12 with rsync
//! and zstd) on an ext4 large enough for the workloads, with
//! [`workload::generate`]'s trees in `/srv/bench`. Built once and cached,
//! keyed by the recipe and [`workload::GENERATOR_VERSION`].
//!
//! The build goes to a temporary name, inside a private mount namespace
//! (`unshare --mount`), so a killed build leaves neither a mount nor a
//! half-made disk under the cached name.
use super::workload;
use crate::lab::recipe;
use crate::sh;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The disk's size (sparse) and inode count: room for the root (1 GB),
/// W2 (1.8 GB), W3 (4 GiB) and W4's million inodes.
const DISK_GIB: u64 = 12;
const INODES: u64 = 1_600_000;

const BUILD_SH: &str = r#"set -eu
img=$1 base=$2 xtask=$3
m=$(mktemp -d /tmp/hc-bench-build.XXXXXX)
mkdir "$m/base" "$m/disk"
mount -o loop,ro "$base" "$m/base"
mount -o loop "$img" "$m/disk"
cp -a "$m/base/." "$m/disk/"
mkdir -p "$m/disk/srv/bench"
"$xtask" bench --generate-into "$m/disk/srv/bench"
umount "$m/base" "$m/disk"
rmdir "$m/base" "$m/disk" "$m"
"#;

pub fn cached_path(cache: &Path) -> PathBuf {
    cache.join(format!(
        "bench-{}-g{}.img",
        recipe::BENCH.hash12(),
        workload::GENERATOR_VERSION
    ))
}

/// The cached bench disk, built first if missing (debootstrap, then about
/// two minutes of writing).
pub fn ensure(cache: &Path) -> Result<PathBuf> {
    let img = cached_path(cache);
    if Dirty::marker(&img).exists() {
        eprintln!("bench: an earlier bench was stopped before it put the workloads back; building the disk again");
        std::fs::remove_file(&img).or_else(ignore_missing)?;
        std::fs::remove_file(Dirty::marker(&img))?;
    }
    if img.exists() {
        return Ok(img);
    }
    let base = recipe::BENCH.ensure(cache)?;
    let tmp = img.with_extension("img.tmp");
    let log = img.with_extension("log");
    let _ = std::fs::remove_file(&tmp);
    eprintln!("bench: writing the workloads into {} ...", img.display());
    let t = Instant::now();
    std::fs::File::create(&tmp)
        .and_then(|f| f.set_len(DISK_GIB << 30))
        .with_context(|| format!("creating {}", tmp.display()))?;
    sh::cmd("mkfs.ext4")
        .args(["-q", "-F", "-L", "bench", "-N", &INODES.to_string()])
        .arg(&tmp)
        .run_logged(&log)?;
    let xtask = std::env::current_exe().context("the path of this xtask binary")?;
    sh::private_mounts(BUILD_SH, "bench-build")
        .arg(&tmp)
        .arg(&base)
        .arg(&xtask)
        .run_logged(&log)
        .context("writing the bench workloads")?;
    std::fs::rename(&tmp, &img)?;
    eprintln!("bench: disk ready in {} s", t.elapsed().as_secs());
    Ok(img)
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// The cached disk is being changed (a churn, zstd hidden): a marker file
/// beside it says so until [`Dirty::clean`], and a disk whose marker
/// outlived its bench is built again by [`ensure`].
pub struct Dirty {
    marker: PathBuf,
}

impl Dirty {
    fn marker(img: &Path) -> PathBuf {
        img.with_extension("img.dirty")
    }

    pub fn mark(img: &Path) -> Result<Dirty> {
        let marker = Self::marker(img);
        std::fs::write(
            &marker,
            "the bench changed this disk and has not put it back\n",
        )?;
        Ok(Dirty { marker })
    }

    /// The disk is as it was built again.
    pub fn clean(self) -> Result<()> {
        Ok(std::fs::remove_file(&self.marker)?)
    }
}
