//! Cached source root filesystems. Each recipe becomes one sparse ext4 image
//! `<cache>/<name>-<hash12>.img`, where the hash covers everything that
//! shapes the tree. Builds go to temporary names and are renamed when done.
use crate::sh;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bump when the build logic (not captured by the script text) changes.
const RECIPE_VERSION: u32 = 1;

/// The fixed lab root password (also written to `<labdir>/password`).
pub const LAB_PASSWORD: &str = "hotclone-lab-pw";

const DEBIAN_SH: &str = include_str!("scripts/debian.sh");
const BUSYBOX_SH: &str = include_str!("scripts/busybox.sh");
const DEBIAN_INCLUDE: &str = "openssh-server,ifupdown,iproute2,linux-image-amd64,grub-pc,\
initramfs-tools,systemd-sysv,udev,procps,kmod";

/// What configures a source's network: the lab writes the source's
/// address in this stack's own files when it starts the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkStack {
    /// `/etc/network/interfaces`.
    Ifupdown,
    /// A keyfile in `/etc/NetworkManager/system-connections`.
    NetworkManager,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub name: &'static str,
    /// Debian suite for debootstrap, or None for the busybox root.
    pub suite: Option<&'static str>,
    pub hostname: &'static str,
    /// Address with prefix, as written into /etc/network/interfaces.
    pub addr: &'static str,
    /// Packages debootstrap adds beyond [`DEBIAN_INCLUDE`] (comma-separated).
    pub extra: &'static str,
    /// Shell run after debootstrap, with the tree at `$DIR`, the host's
    /// resolver, /proc, /sys and /dev in it: what reshapes the root beyond
    /// the base (another initramfs tool, another network stack). Part of
    /// the cache key.
    pub post: &'static str,
    pub network: NetworkStack,
}

pub const DEBIAN12: Recipe = Recipe {
    name: "debian12",
    suite: Some("bookworm"),
    hostname: "src-debian12",
    addr: "198.51.100.11/24",
    extra: "",
    post: "",
    network: NetworkStack::Ifupdown,
};
pub const DEBIAN11: Recipe = Recipe {
    name: "debian11",
    suite: Some("bullseye"),
    hostname: "src-debian11",
    addr: "198.51.100.12/24",
    // ifupdown's bridge_ports: the bridge shape (issue 14).
    extra: "bridge-utils",
    post: "",
    network: NetworkStack::Ifupdown,
};
/// Debian 13 as a server set up the Red Hat way: dracut instead of
/// initramfs-tools and NetworkManager instead of ifupdown (issue 14's
/// shapes 4, 5 and 9). debootstrap resolves the kernel's initramfs
/// dependency to initramfs-tools, so dracut replaces it afterwards.
pub const DEBIAN13: Recipe = Recipe {
    name: "debian13",
    suite: Some("trixie"),
    hostname: "src-debian13",
    addr: "198.51.100.15/24",
    extra: "",
    post: DEBIAN13_POST,
    network: NetworkStack::NetworkManager,
};
/// Debian 12 booting with grub-legacy (GRUB 0.97, bookworm's last real
/// one) in place of GRUB 2: the menu.lst era of Debian 4-6 and RHEL 3-5
/// (issue 14, shape 2). The kernel's hook runs grub-legacy's update-grub,
/// which fails without /boot/grub: debootstrap installs GRUB 2, and
/// grub-legacy replaces it afterwards, writing its own menu.lst.
pub const GRUB_LEGACY: Recipe = Recipe {
    name: "grub-legacy",
    suite: Some("bookworm"),
    hostname: "src-grub-legacy",
    addr: "198.51.100.16/24",
    extra: "",
    post: GRUB_LEGACY_POST,
    network: NetworkStack::Ifupdown,
};
const GRUB_LEGACY_POST: &str = r#"
chroot "$DIR" apt-get -q update
mkdir -p "$DIR/boot/grub"
chroot "$DIR" apt-get -q -y --no-install-recommends install grub-legacy grub-pc-
chroot "$DIR" apt-get -q -y purge grub-pc-bin grub2-common
chroot "$DIR" apt-get -q -y autoremove --purge
chroot "$DIR" update-grub
# What grub-install leaves in /boot/grub on a server.
cp "$DIR"/usr/lib/grub/x86_64-pc/*stage* "$DIR/boot/grub/"
test -s "$DIR/boot/grub/menu.lst" && test -s "$DIR/boot/grub/stage2"
test ! -e "$DIR/usr/lib/grub/i386-pc/normal.mod"
"#;
const DEBIAN13_POST: &str = r#"
chroot "$DIR" apt-get -q update
chroot "$DIR" apt-get -q -y --no-install-recommends install dracut network-manager
chroot "$DIR" apt-get -q -y purge ifupdown initramfs-tools initramfs-tools-core
# What an install with NetworkManager leaves: a file that configures nothing.
printf '# interfaces(5) file used by ifup(8) and ifdown(8)\n# Include files from /etc/network/interfaces.d:\nsource /etc/network/interfaces.d/*\n' > "$DIR/etc/network/interfaces"
ls "$DIR"/boot/initrd.img-* >/dev/null
test -x "$DIR/usr/bin/dracut" && test ! -e "$DIR/usr/sbin/update-initramfs"
"#;
/// Debian 12 with its root on LVM over MD RAID1 and /boot on MD (issue 14,
/// shape 8). This host's kernel has neither md nor device-mapper, so the
/// tree is built here, and its two disks in a VM ([`super::vm_source`]).
/// The arrays' and volume group's names and UUIDs are fixed here, in the
/// files the initrd is built from, and the disk build creates them to
/// match: the initrd the source boots with is built at native speed.
pub const MD_LVM: Recipe = Recipe {
    name: "md-lvm",
    suite: Some("bookworm"),
    hostname: "src-md-lvm",
    addr: "198.51.100.18/24",
    // fdisk: sfdisk, which the disk build partitions with.
    extra: "mdadm,lvm2,fdisk,e2fsprogs",
    post: MD_LVM_POST,
    network: NetworkStack::Ifupdown,
};
/// The md arrays' UUIDs (mdadm's notation), which the disk build gives them.
pub const MD_LVM_UUIDS: [&str; 2] = [
    "5d0c7a61:2b9e4f38:8a1c6d02:7e3b9f15",
    "9f4e2a17:c3d85b60:1e7a9c24:6b0f3d81",
];
const MD_LVM_POST: &str = r#"
cat > "$DIR/etc/mdadm/mdadm.conf" <<'CONF'
HOMEHOST <system>
MAILADDR root
ARRAY /dev/md0 metadata=1.0 UUID=5d0c7a61:2b9e4f38:8a1c6d02:7e3b9f15
ARRAY /dev/md1 metadata=1.2 UUID=9f4e2a17:c3d85b60:1e7a9c24:6b0f3d81
CONF
cat > "$DIR/etc/fstab" <<'FSTAB'
# <file system> <mount point> <type> <options> <dump> <pass>
/dev/mapper/vg0-root	/	ext4	errors=remount-ro	0	1
/dev/md0	/boot	ext4	defaults	0	2
/dev/mapper/vg0-swap	none	swap	sw	0	0
FSTAB
mkdir -p "$DIR/etc/default"
cat > "$DIR/etc/default/grub" <<'GRUB'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200 net.ifnames=0"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB
# The initrd, with mdadm's and lvm2's hooks and this mdadm.conf.
chroot "$DIR" update-initramfs -u -k all
test -x "$DIR/sbin/mdadm" && test -x "$DIR/sbin/lvm" && test -x "$DIR/sbin/sfdisk"
"#;
pub const BUSYBOX: Recipe = Recipe {
    name: "busybox",
    suite: None,
    hostname: "src-busybox",
    addr: "198.51.100.14/24",
    extra: "",
    post: "",
    network: NetworkStack::Ifupdown,
};

/// The benchmark's source (`cargo xtask bench`): debian12 plus what the
/// baselines run on the source (rsync, zstd). Not a lab source: built only
/// when the bench runs.
pub const BENCH: Recipe = Recipe {
    name: "bench",
    suite: Some("bookworm"),
    hostname: "src-bench",
    addr: "198.51.100.41/24",
    extra: "rsync,zstd",
    post: "",
    network: NetworkStack::Ifupdown,
};

/// All recipes, in build order.
pub const ALL: [&Recipe; 6] = [
    &DEBIAN12,
    &DEBIAN11,
    &DEBIAN13,
    &GRUB_LEGACY,
    &MD_LVM,
    &BUSYBOX,
];

/// Look up a recipe by name.
pub fn by_name(name: &str) -> Result<&'static Recipe> {
    ALL.iter()
        .copied()
        .find(|r| r.name == name)
        .with_context(|| format!("no recipe named {name}"))
}

impl Recipe {
    fn script(&self) -> &'static str {
        if self.suite.is_some() {
            DEBIAN_SH
        } else {
            BUSYBOX_SH
        }
    }

    /// The text the cache key is computed from.
    pub fn recipe_text(&self) -> String {
        format!(
            "version={RECIPE_VERSION}\nname={}\nsuite={}\ninclude={}\nhostname={}\naddr={}\npassword={LAB_PASSWORD}\n---\n{}{}",
            self.name,
            self.suite.unwrap_or("-"),
            if self.suite.is_some() { self.include() } else { "busybox-static,dropbear-bin(host)".to_string() },
            self.hostname,
            self.addr,
            self.script(),
            self.post,
        )
    }

    /// debootstrap's `--include`: the base packages and this recipe's own.
    fn include(&self) -> String {
        if self.extra.is_empty() {
            DEBIAN_INCLUDE.to_string()
        } else {
            format!("{DEBIAN_INCLUDE},{}", self.extra)
        }
    }

    /// First 12 hex digits of sha256(recipe text).
    pub fn hash12(&self) -> String {
        let digest = Sha256::digest(self.recipe_text().as_bytes());
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    pub fn image_path(&self, cache: &Path) -> PathBuf {
        cache.join(format!("{}-{}.img", self.name, self.hash12()))
    }

    /// Return the cached image, building it first if it is missing.
    pub fn ensure(&self, cache: &Path) -> Result<PathBuf> {
        let img = self.image_path(cache);
        if img.exists() {
            return Ok(img);
        }
        std::fs::create_dir_all(cache)
            .with_context(|| format!("cannot create cache dir {}", cache.display()))?;
        let what = match self.suite {
            Some(s) => format!("debootstrap {s}, minutes"),
            None => "busybox + dropbear, seconds".to_string(),
        };
        eprintln!("building {} rootfs ({what})...", self.name);
        let t = Instant::now();
        self.build(cache, &img)
            .with_context(|| format!("building the {} rootfs failed", self.name))?;
        eprintln!(
            "built {} rootfs in {}s ({})",
            self.name,
            t.elapsed().as_secs(),
            img.display()
        );
        Ok(img)
    }

    fn build(&self, cache: &Path, img: &Path) -> Result<()> {
        let stem = format!("{}-{}", self.name, self.hash12());
        let work = cache.join(format!("{stem}.tmp"));
        let tmp_img = cache.join(format!("{stem}.img.tmp"));
        let log = cache.join(format!("{stem}.log"));
        remove_tree(&work)?;
        let _ = std::fs::remove_file(&tmp_img);
        let _ = std::fs::remove_file(&log);
        std::fs::create_dir_all(&work)?;
        let tree = work.join("root");
        self.run_script(&tree, &log)?;
        make_ext4(&tree, &tmp_img, self.name, &log)?;
        std::fs::rename(&tmp_img, img)
            .with_context(|| format!("renaming {} to {}", tmp_img.display(), img.display()))?;
        remove_tree(&work)
    }

    /// Run the build script in a private mount namespace, so mounts made by
    /// debootstrap cannot outlive a killed build.
    fn run_script(&self, tree: &Path, log: &Path) -> Result<()> {
        sh::private_mounts(self.script(), "build")
            .env("DIR", tree)
            .env("SUITE", self.suite.unwrap_or(""))
            .env("MIRROR", host_mirror())
            .env("INCLUDE", self.include())
            .env("POST", self.post)
            .env("HC_HOSTNAME", self.hostname)
            .env("HC_ADDR", self.addr)
            .env("HC_PASSWORD", LAB_PASSWORD)
            .run_logged(log)
    }
}

/// The Debian mirror the host itself uses (falls back to deb.debian.org).
pub fn host_mirror() -> String {
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            texts.push(std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    for text in texts {
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let url = match words.as_slice() {
                ["URIs:", u, ..] => *u,
                ["deb", rest @ ..] => rest
                    .iter()
                    .find(|w| w.starts_with("http"))
                    .copied()
                    .unwrap_or(""),
                _ => "",
            };
            if url.trim_end_matches('/').ends_with("/debian") {
                return url.to_string();
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// `mkfs.ext4 -d TREE` into a sparse image sized tree + 30 % (min 256 MiB).
fn make_ext4(tree: &Path, img: &Path, label: &str, log: &Path) -> Result<()> {
    let du = sh::cmd("du")
        .args(["-sk", "--one-file-system"])
        .arg(tree)
        .output()?;
    let kib: u64 = du
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("cannot parse du output {du:?}"))?;
    let mib = ((kib * 13 / 10) / 1024 + 64).max(256);
    std::fs::File::create(img)
        .and_then(|f| f.set_len(mib * 1024 * 1024))
        .with_context(|| format!("creating sparse image {}", img.display()))?;
    sh::cmd("mkfs.ext4")
        .args(["-q", "-F", "-L", label, "-d"])
        .arg(tree)
        .arg(img)
        .run_logged(log)
}

/// rm -rf that never crosses into other filesystems.
pub fn remove_tree(p: &Path) -> Result<()> {
    if p.exists() {
        sh::cmd("rm")
            .args(["-rf", "--one-file-system"])
            .arg(p)
            .run()?;
    }
    if p.exists() {
        bail!(
            "could not remove {} (something mounted inside it?)",
            p.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_are_stable_and_distinct_per_recipe() {
        assert_eq!(DEBIAN12.hash12(), DEBIAN12.hash12());
        assert_eq!(DEBIAN12.hash12().len(), 12);
        let keys: Vec<String> = ALL.iter().map(|r| r.hash12()).collect();
        assert!(
            keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k)),
            "{keys:?}"
        );
    }

    #[test]
    fn any_change_to_a_recipe_changes_its_key() {
        let changed = Recipe {
            addr: "198.51.100.99/24",
            ..DEBIAN12
        };
        assert_ne!(changed.hash12(), DEBIAN12.hash12());
        let path = DEBIAN12.image_path(Path::new("/cache"));
        assert_eq!(
            path,
            PathBuf::from(format!("/cache/debian12-{}.img", DEBIAN12.hash12()))
        );
    }
}
