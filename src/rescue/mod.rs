//! The rescue image that target VMs boot: a Debian kernel and an
//! initramfs holding an SSH server (dropbear), busybox, the disk, network
//! and boot tools hotclone's target side needs, and the `hotclone` binary
//! itself (agent mode). Built from Debian packages only, by the recipe in
//! `rescue-image/` (embedded here).
//!
//! The build has two parts:
//! - the **base** (debootstrap, pruning, kernel modules, packed as a
//!   zstd-compressed cpio), slow and cached under the cache directory by a
//!   hash of the recipe, so it is built once per recipe;
//! - the **layers** appended to it (the hotclone binary now; a migration's
//!   keys at launch), cheap and made every time.
//!
//! Outputs in the output directory: `vmlinuz`, `initrd.img` (base +
//! hotclone layer), `rescue.iso` (BIOS and UEFI, via grub-mkrescue) and
//! `manifest.json`. A failed base build leaves only its `.tmp` directory
//! and log (removed by the next build); the outputs are replaced only
//! when everything is built.

pub mod cpio;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::progress::Progress;

/// The recipe, as it is in the repository.
pub mod recipe {
    pub const PACKAGES: &str = include_str!("../../rescue-image/packages.txt");
    pub const MODULES: &str = include_str!("../../rescue-image/modules.txt");
    pub const BUILD_TREE: &str = include_str!("../../rescue-image/build-tree.sh");
    pub const RC: &str = include_str!("../../rescue-image/rc");
    pub const INITTAB: &str = include_str!("../../rescue-image/inittab");
    pub const UDHCPC: &str = include_str!("../../rescue-image/udhcpc");
    pub const GRUB_CFG: &str = include_str!("../../rescue-image/grub.cfg");
    /// Bump when the build logic here (not the files above) changes.
    pub const VERSION: u32 = 1;
    pub const SUITE: &str = "bookworm";
}

/// Where hotclone sits inside the rescue system.
pub const AGENT_PATH: &str = "/usr/bin/hotclone";
/// The mark of the rescue system: which recipe it was built from. Only a
/// host that has it gets its disks partitioned by a live clone.
pub const MARK_PATH: &str = "/etc/hotclone/rescue.json";

/// This binary's build id (a hash of its sources; see build.rs).
pub const BUILD_ID: &str = env!("HOTCLONE_BUILD_ID");

#[derive(Debug, thiserror::Error)]
pub enum RescueError {
    #[error("`{command}` could not start: {source}. Install {package}")]
    Missing {
        command: String,
        package: &'static str,
        source: std::io::Error,
    },
    #[error(
        "building the rescue base failed ({status}); the log is {log}. Its last lines:\n{tail}"
    )]
    Build {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("no rescue image in {dir}: build one with `hotclone rescue build` (or `cargo xtask rescue-image`){detail}")]
    NotBuilt { dir: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RescueError + '_ {
    move |source| RescueError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The recipe's lines that matter (comments and blanks dropped).
pub fn words(list: &str) -> Vec<&str> {
    list.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Everything that shapes the base, as one text: its hash is the cache key.
pub fn recipe_text() -> String {
    format!(
        "version={}\nsuite={}\npackages={}\nmodules={}\n--- build-tree.sh\n{}\n--- rc\n{}\n--- inittab\n{}\n--- udhcpc\n{}",
        recipe::VERSION,
        recipe::SUITE,
        words(recipe::PACKAGES).join(","),
        words(recipe::MODULES).join(" "),
        recipe::BUILD_TREE,
        recipe::RC,
        recipe::INITTAB,
        recipe::UDHCPC
    )
}

/// First 12 hex digits of BLAKE3(recipe text).
pub fn recipe_hash() -> String {
    blake3::hash(recipe_text().as_bytes()).to_hex()[..12].to_string()
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Where the base is cached (`rescue-<hash>/` inside).
    pub cache: PathBuf,
    /// Where the outputs go.
    pub out: PathBuf,
    pub mirror: String,
    /// The hotclone binary to put inside (normally the running one).
    pub agent: PathBuf,
    /// Also make the ISO (needs grub-mkrescue, xorriso, mtools).
    pub iso: bool,
}

/// What the outputs are, written as `manifest.json` beside them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub recipe_hash: String,
    pub kernel_release: String,
    /// The build id of the hotclone inside.
    pub agent_build: String,
    pub kernel_bytes: u64,
    pub initrd_bytes: u64,
    pub iso_bytes: Option<u64>,
    /// Seconds the base took when it was built (0: from the cache).
    pub base_build_seconds: u64,
}

/// A built rescue image.
#[derive(Debug, Clone)]
pub struct RescueImage {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl RescueImage {
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
    pub fn iso(&self) -> Option<PathBuf> {
        self.manifest.iso_bytes.map(|_| self.dir.join("rescue.iso"))
    }

    /// The image built into `dir` by [`build`].
    pub fn open(dir: &Path) -> Result<RescueImage, RescueError> {
        let manifest_path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| RescueError::NotBuilt {
            dir: dir.to_path_buf(),
            detail: format!(" ({}: {e})", manifest_path.display()),
        })?;
        let manifest = serde_json::from_str(&text).map_err(|e| RescueError::NotBuilt {
            dir: dir.to_path_buf(),
            detail: format!(" ({} is unreadable: {e})", manifest_path.display()),
        })?;
        let image = RescueImage {
            dir: dir.to_path_buf(),
            manifest,
        };
        for f in [image.kernel(), image.initrd()] {
            if !f.is_file() {
                return Err(RescueError::NotBuilt {
                    dir: dir.to_path_buf(),
                    detail: format!(" ({} is missing)", f.display()),
                });
            }
        }
        Ok(image)
    }
}

/// The default output directory: `$HOTCLONE_RESCUE_DIR`, else
/// `~/.local/share/hotclone/rescue`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HOTCLONE_RESCUE_DIR") {
        return PathBuf::from(d);
    }
    home().join(".local/share/hotclone/rescue")
}

/// The default cache: `$HOTCLONE_RESCUE_CACHE`, else `~/.cache/hotclone`.
pub fn default_cache() -> PathBuf {
    if let Some(d) = std::env::var_os("HOTCLONE_RESCUE_CACHE") {
        return PathBuf::from(d);
    }
    home().join(".cache/hotclone")
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// Build (or reuse) the base, then write the outputs. Outputs already made
/// from this recipe with this very hotclone are left as they are.
pub fn build(opts: &BuildOptions, progress: &mut dyn Progress) -> Result<RescueImage, RescueError> {
    let running = std::env::current_exe().ok();
    if running.as_deref() == Some(opts.agent.as_path()) {
        if let Ok(built) = RescueImage::open(&opts.out) {
            let m = &built.manifest;
            if m.recipe_hash == recipe_hash()
                && m.agent_build == BUILD_ID
                && (!opts.iso || built.iso().is_some_and(|i| i.is_file()))
            {
                progress.note(&format!(
                    "the rescue image in {} is up to date",
                    opts.out.display()
                ));
                return Ok(built);
            }
        }
    }
    let (base, seconds) = ensure_base(opts, progress)?;
    progress.phase("adding the hotclone layer");
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let staging = opts.out.join(".building");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;

    let kernel = staging.join("vmlinuz");
    std::fs::copy(base.join("vmlinuz"), &kernel).map_err(io(&kernel))?;
    let initrd = staging.join("initrd.img");
    let mut out = std::fs::File::create(&initrd).map_err(io(&initrd))?;
    let mut base_cpio = std::fs::File::open(base.join("base.cpio.zst")).map_err(io(&base))?;
    std::io::copy(&mut base_cpio, &mut out).map_err(io(&initrd))?;
    let agent = stripped_agent(&opts.agent, &staging)?;
    let mark = serde_json::json!({"recipe": recipe_hash(), "agent_build": BUILD_ID}).to_string();
    let layer = agent_layer(&agent, &mark)?;
    out.write_all(&layer).map_err(io(&initrd))?;
    out.sync_all().map_err(io(&initrd))?;
    drop(out);
    let _ = std::fs::remove_file(&agent);

    let iso_bytes = if opts.iso {
        progress.phase("making the ISO");
        let iso = staging.join("rescue.iso");
        make_iso(&kernel, &initrd, &iso, &staging)?;
        Some(size(&iso)?)
    } else {
        None
    };
    let kernel_release = std::fs::read_to_string(base.join("kernel-release"))
        .map_err(io(&base))?
        .trim()
        .to_string();
    let manifest = Manifest {
        recipe_hash: recipe_hash(),
        kernel_release,
        agent_build: BUILD_ID.to_string(),
        kernel_bytes: size(&kernel)?,
        initrd_bytes: size(&initrd)?,
        iso_bytes,
        base_build_seconds: seconds,
    };
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
    std::fs::write(staging.join("manifest.json"), text).map_err(io(&staging))?;
    // Replace the outputs only now, each by a rename.
    for name in ["vmlinuz", "initrd.img", "rescue.iso", "manifest.json"] {
        let from = staging.join(name);
        let to = opts.out.join(name);
        if from.exists() {
            std::fs::rename(&from, &to).map_err(io(&to))?;
        } else {
            let _ = std::fs::remove_file(&to);
        }
    }
    let _ = std::fs::remove_dir_all(&staging);
    RescueImage::open(&opts.out)
}

fn size(path: &Path) -> Result<u64, RescueError> {
    Ok(std::fs::metadata(path).map_err(io(path))?.len())
}

/// The cached base for this recipe (built first when missing), and the
/// seconds its build took (0 from the cache).
fn ensure_base(
    opts: &BuildOptions,
    progress: &mut dyn Progress,
) -> Result<(PathBuf, u64), RescueError> {
    let hash = recipe_hash();
    let base = opts.cache.join(format!("rescue-{hash}"));
    if base.join("base.cpio.zst").is_file() {
        progress.note(&format!(
            "rescue base {hash} is cached in {}",
            base.display()
        ));
        return Ok((base, 0));
    }
    let started = Instant::now();
    remove_other_bases(&opts.cache, &hash);
    progress.phase("building the rescue base (debootstrap, a few minutes)");
    let work = opts.cache.join(format!("rescue-{hash}.tmp"));
    remove_tree(&work)?;
    // debootstrap output is cached apart, by package set only, so a change
    // to the rest of the recipe costs seconds.
    let packages = words(recipe::PACKAGES).join(",");
    let pristine_key =
        blake3::hash(format!("{}\n{packages}\n{}", recipe::SUITE, opts.mirror).as_bytes());
    let pristine = opts.cache.join(format!(
        "rescue-debootstrap-{}",
        &pristine_key.to_hex()[..12]
    ));
    let files = work.join("files");
    std::fs::create_dir_all(&files).map_err(io(&files))?;
    for (name, text) in [
        ("build-tree.sh", recipe::BUILD_TREE),
        ("rc", recipe::RC),
        ("inittab", recipe::INITTAB),
        ("udhcpc", recipe::UDHCPC),
    ] {
        std::fs::write(files.join(name), text).map_err(io(&files))?;
    }
    let tree = work.join("tree");
    let log_path = work.join("build.log");
    let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
    let log2 = log.try_clone().map_err(io(&log_path))?;
    // A private mount namespace: debootstrap's mounts die with it.
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh"])
        .arg(files.join("build-tree.sh"))
        .env("TREE", &tree)
        .env("OUT", &work)
        .env("SUITE", recipe::SUITE)
        .env("MIRROR", &opts.mirror)
        .env("PACKAGES", &packages)
        .env("PRISTINE", &pristine)
        .env("MODULES", words(recipe::MODULES).join(" "))
        .env("FILES", &files)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .status()
        .map_err(|source| RescueError::Missing {
            command: "unshare".into(),
            package: "util-linux",
            source,
        })?;
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        return Err(RescueError::Build {
            status: status.to_string(),
            log: log_path,
            tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    progress.phase("packing the rescue base");
    let packed = work.join("base.cpio.zst");
    let file = std::fs::File::create(&packed).map_err(io(&packed))?;
    let mut z = zstd::Encoder::new(file, 12).map_err(io(&packed))?;
    let _ = z.multithread(2);
    let mut archive = cpio::Cpio::new(z);
    archive.tree(&tree).map_err(io(&tree))?;
    archive
        .finish()
        .and_then(|z| z.finish())
        .and_then(|f| f.sync_all())
        .map_err(io(&packed))?;
    remove_tree(&tree)?;
    remove_tree(&base)?;
    std::fs::rename(&work, &base).map_err(io(&base))?;
    Ok((base, started.elapsed().as_secs()))
}

/// Bases (and unfinished builds) of other recipes: replaced by this one.
fn remove_other_bases(cache: &Path, hash: &str) {
    let Ok(rd) = std::fs::read_dir(cache) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let other = name
            .strip_prefix("rescue-")
            .is_some_and(|rest| !rest.starts_with("debootstrap-") && !rest.starts_with(hash));
        if other {
            let _ = remove_tree(&e.path());
        }
    }
}

/// A copy of the agent binary without debug info (`strip` from binutils;
/// the binary as it is when strip is not there).
fn stripped_agent(agent: &Path, dir: &Path) -> Result<PathBuf, RescueError> {
    let out = dir.join("hotclone");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(agent)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !stripped {
        std::fs::copy(agent, &out).map_err(io(agent))?;
    }
    Ok(out)
}

/// The layer that puts `agent` at [`AGENT_PATH`] and `mark` at
/// [`MARK_PATH`] (zstd-compressed cpio).
pub fn agent_layer(agent: &Path, mark: &str) -> Result<Vec<u8>, RescueError> {
    let data = std::fs::read(agent).map_err(io(agent))?;
    let files = [
        ("usr/bin/hotclone", 0o755, data.as_slice()),
        ("etc/hotclone/rescue.json", 0o644, mark.as_bytes()),
    ];
    layer(&["usr", "usr/bin", "etc", "etc/hotclone"], &files)
}

/// A zstd-compressed cpio of directories and `(name, mode, data)` files.
pub fn layer(dirs: &[&str], files: &[(&str, u32, &[u8])]) -> Result<Vec<u8>, RescueError> {
    let make = || -> std::io::Result<Vec<u8>> {
        let mut c = cpio::Cpio::new(zstd::Encoder::new(Vec::new(), 3)?);
        for d in dirs {
            c.dir(d, 0o755)?;
        }
        for (name, mode, data) in files {
            c.file(name, *mode, data)?;
        }
        c.finish()?.finish()
    };
    make().map_err(io(Path::new("<initramfs layer>")))
}

fn make_iso(kernel: &Path, initrd: &Path, iso: &Path, staging: &Path) -> Result<(), RescueError> {
    let root = staging.join("iso");
    let grub = root.join("boot/grub");
    std::fs::create_dir_all(&grub).map_err(io(&grub))?;
    std::fs::copy(kernel, root.join("boot/vmlinuz")).map_err(io(kernel))?;
    std::fs::copy(initrd, root.join("boot/initrd.img")).map_err(io(initrd))?;
    std::fs::write(grub.join("grub.cfg"), recipe::GRUB_CFG).map_err(io(&grub))?;
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(iso)
        .arg(&root)
        .output()
        .map_err(|source| RescueError::Missing {
            command: "grub-mkrescue".into(),
            package: "grub-common, grub-pc-bin, grub-efi-amd64-bin, xorriso and mtools (or build with --no-iso)",
            source,
        })?;
    let _ = std::fs::remove_dir_all(&root);
    if !out.status.success() || !iso.is_file() {
        return Err(RescueError::Command {
            command: "grub-mkrescue".into(),
            output: format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        });
    }
    Ok(())
}

/// rm -rf that never crosses into another filesystem.
fn remove_tree(p: &Path) -> Result<(), RescueError> {
    if p.exists() {
        let _ = Command::new("rm")
            .args(["-rf", "--one-file-system"])
            .arg(p)
            .status();
    }
    if p.exists() {
        return Err(RescueError::Command {
            command: format!("rm -rf {}", p.display()),
            output: "it is still there (something mounted inside?)".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_lists_what_the_target_side_needs() {
        let packages = words(recipe::PACKAGES);
        for p in [
            "linux-image-amd64",
            "dropbear-bin",
            "busybox-static",
            "e2fsprogs",
            "xfsprogs",
            "dosfstools",
            "lvm2",
            "mdadm",
            "iproute2",
            "iputils-arping",
            "grub-pc-bin",
            "grub-efi-amd64-bin",
        ] {
            assert!(packages.contains(&p), "{p} is not in packages.txt");
        }
        let modules = words(recipe::MODULES);
        for m in [
            "virtio_blk",
            "virtio_net",
            "ext4",
            "xen_blkfront",
            "ata_piix",
        ] {
            assert!(modules.contains(&m), "{m} is not in modules.txt");
        }
        assert!(recipe::GRUB_CFG.contains("vsyscall=emulate"));
    }

    #[test]
    fn the_cache_key_follows_the_recipe() {
        assert_eq!(recipe_hash(), recipe_hash());
        assert_eq!(recipe_hash().len(), 12);
        assert!(recipe_text().contains(recipe::RC));
        assert_eq!(words("a # x\n\n# c\n b \n"), vec!["a", "b"]);
    }

    #[test]
    fn layers_are_compressed_cpio_archives() {
        let bytes = layer(&["etc"], &[("etc/k", 0o600, b"secret")]).unwrap();
        let plain = zstd::decode_all(bytes.as_slice()).unwrap();
        let text = String::from_utf8_lossy(&plain);
        assert!(text.starts_with("070701"));
        assert!(text.contains("etc/k\0"));
        assert!(text.contains("TRAILER!!!"));
    }
}
