//! Lab sources that run as QEMU VMs: shapes this host's kernel cannot run
//! as a chroot, such as a root on LVM over MD RAID1 (the host has neither
//! md nor device-mapper).
//!
//! `lab up` prepares the recipe's tree with the lab's files (keys, address,
//! hostname), like any source's, then builds the source's disks in a VM
//! whose PID 1 is [`BUILD_SH`]: it partitions two disks, makes the arrays
//! and the volume group, copies the tree onto them and installs GRUB on
//! both. The disks are cached under a key of everything that went into
//! them. A test boots them itself ([`SourceInfo::vm_disks`], `-snapshot`),
//! from their own MBR.
//!
//! On failure the build's console log is kept next to the disks in the
//! cache and its tail is in the error; nothing half-built is renamed into
//! place.

use super::netns::Host;
use super::recipe;
use super::source::{self, SourceSpec, Sshd};
use crate::sh;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian 12 on LVM over MD RAID1 (issue 14, shape 8). Its QEMU runs in
/// the lab's bridge namespace, its tap on the bridge.
pub const MD_LVM: SourceSpec = SourceSpec {
    name: "md-lvm",
    host: Host {
        ns: super::netns::LAN_NS,
        port: "tap-mdlvm",
        ip: "198.51.100.18",
        mac: "02:48:43:00:00:18",
    },
    hostname: "src-md-lvm",
    recipe: &recipe::MD_LVM,
    sshd: Sshd::OpenSsh,
    legacy: false,
};

pub const VM_SOURCES: [SourceSpec; 1] = [MD_LVM];

/// Size of each of the two disks.
const DISK_BYTES: u64 = 3 << 30;

/// PID 1 of the build VM (root: the prepared tree, read-only, on vdc;
/// vda and vdb: the source's empty disks). The arrays' UUIDs (those of the
/// recipe's mdadm.conf) come on the kernel command line as hc.md0= and
/// hc.md1=. LVM keeps its lock and metadata backups in tmpfs: the root is
/// read-only, and udev does not run (LVM makes its device nodes itself).
const BUILD_SH: &str = r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin DM_DISABLE_UDEV=1 LC_ALL=C
fail() { echo "hc-build: FAILED: $*"; echo o > /proc/sysrq-trigger; sleep 600; }
run() { echo "hc-build: $*"; "$@" || fail "$*"; }
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
echo 1 > /proc/sys/kernel/sysrq
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }
MD0=$(arg hc.md0); MD1=$(arg hc.md1)
[ -n "$MD0" ] && [ -n "$MD1" ] || fail "no hc.md0= or hc.md1= on the command line"
mkdir -p /run/lock /tmp/lvm
cp -a /etc/lvm/. /tmp/lvm/
export LVM_SYSTEM_DIR=/tmp/lvm
run modprobe raid1
run modprobe dm_mod
for d in vda vdb; do
  printf 'label: dos\n1MiB,256MiB,fd,*\n,,fd\n' | run sfdisk -q /dev/$d
done
run mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.0 \
  --uuid="$MD0" --homehost=src-md-lvm --name=0 --assume-clean /dev/vda1 /dev/vdb1
run mdadm --create /dev/md1 --run --level=1 --raid-devices=2 --metadata=1.2 \
  --uuid="$MD1" --homehost=src-md-lvm --name=1 --assume-clean /dev/vda2 /dev/vdb2
run pvcreate -ff -y /dev/md1
run vgcreate vg0 /dev/md1
run lvcreate -y -Wy -Zy -L 256M -n swap vg0
run lvcreate -y -Wy -Zy -l 100%FREE -n root vg0
run mkfs.ext4 -q -L boot /dev/md0
run mkfs.ext4 -q -L root /dev/mapper/vg0-root
run mkswap -L swap /dev/mapper/vg0-swap
run mount /dev/mapper/vg0-root /mnt
mkdir -p /mnt/boot
run mount /dev/md0 /mnt/boot
run cp -ax /. /mnt/
rm -f /mnt/hc-build
for d in dev proc sys; do run mount --bind /$d /mnt/$d; done
run mount -t tmpfs tmpfs /mnt/run
run chroot /mnt grub-install /dev/vda
run chroot /mnt grub-install /dev/vdb
run chroot /mnt update-grub
grep -q 'root=/dev/mapper/vg0-root' /mnt/boot/grub/grub.cfg || fail "grub.cfg does not boot vg0-root"
umount /mnt/run /mnt/sys /mnt/proc /mnt/dev /mnt/boot /mnt
run vgchange -an vg0
run mdadm --stop /dev/md0 /dev/md1
sync
echo "hc-build: ok"
echo o > /proc/sysrq-trigger
sleep 600
"#;

/// Prepare the tree, build (or reuse) the disks; the source's record for
/// lab.json, its `pid` 0 (a test starts it).
pub fn prepare(
    opts: &super::LabOptions,
    spec: &SourceSpec,
    cached: &Path,
    keys: &str,
) -> Result<super::SourceInfo> {
    let dir = &opts.lab_dir;
    let host_keys = source::ensure_own_host_keys(&opts.cache_dir, spec)?;
    let tree = dir.join("disks").join(format!("{}-root.img", spec.name));
    let facts = spec
        .prepare_disk(
            cached,
            &tree,
            &dir.join("stage").join(spec.name),
            keys,
            Some(&host_keys),
        )
        .with_context(|| format!("preparing the tree of {}", spec.name))?;
    let key = disk_key(spec, keys, &host_keys)?;
    let disks = [0, 1].map(|i| {
        opts.cache_dir
            .join(format!("{}-{key}-{}.raw", spec.name, ["a", "b"][i]))
    });
    if !disks.iter().all(|d| d.exists()) {
        eprintln!("building the disks of {} in a VM (minutes)...", spec.name);
        let t = Instant::now();
        build_disks(opts, spec, &tree, &disks)
            .with_context(|| format!("building the disks of {}", spec.name))?;
        eprintln!(
            "built the disks of {} in {}s",
            spec.name,
            t.elapsed().as_secs()
        );
    }
    Ok(super::SourceInfo::new(spec, facts, 0, tree, disks.to_vec()))
}

/// known_hosts lines for a VM source: its own host keys (made here, so
/// there is nothing to scan before a test boots it).
pub fn known_hosts_lines(cache: &Path, spec: &SourceSpec) -> Result<Vec<String>> {
    let keys = source::ensure_own_host_keys(cache, spec)?;
    ["rsa", "ecdsa", "ed25519"]
        .iter()
        .map(|t| {
            let p = keys.join(format!("ssh_host_{t}_key.pub"));
            let text =
                fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            let mut words = text.split_whitespace();
            match (words.next(), words.next()) {
                (Some(kind), Some(key)) => Ok(format!("{} {kind} {key}", spec.host.ip)),
                _ => bail!("{} is not a public key", p.display()),
            }
        })
        .collect()
}

/// The first 12 hex digits of sha256 over everything the disks are made
/// of: the recipe, the build script, the lab's client keys and the
/// source's host keys and address.
fn disk_key(spec: &SourceSpec, keys: &str, host_keys: &Path) -> Result<String> {
    let mut h = Sha256::new();
    h.update(spec.recipe.hash12());
    h.update(BUILD_SH);
    h.update(keys);
    h.update(format!(
        "{} {} {} {DISK_BYTES}",
        spec.host.ip, spec.host.mac, spec.hostname
    ));
    for t in ["rsa", "ecdsa", "ed25519"] {
        let p = host_keys.join(format!("ssh_host_{t}_key.pub"));
        h.update(fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
    }
    Ok(h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Boot the build VM: the tree's own kernel and initrd, the tree as its
/// read-only root with [`BUILD_SH`] as init, the two new disks.
fn build_disks(
    opts: &super::LabOptions,
    spec: &SourceSpec,
    tree: &Path,
    disks: &[PathBuf; 2],
) -> Result<()> {
    let work = opts
        .lab_dir
        .join("disks")
        .join(format!("{}-build", spec.name));
    recipe::remove_tree(&work)?;
    fs::create_dir_all(&work)?;
    // The kernel, the initrd and the init script, in and out of the tree.
    sh::private_mounts(BOOT_FILES_SH, "boot-files")
        .arg(tree)
        .arg(&work)
        .stdin(BUILD_SH)
        .run()
        .context("taking the kernel and initrd out of the tree, putting the build script in")?;
    let tmp: Vec<PathBuf> = disks.iter().map(|d| d.with_extension("raw.tmp")).collect();
    for t in &tmp {
        let _ = fs::remove_file(t);
        fs::File::create(t)
            .and_then(|f| f.set_len(DISK_BYTES))
            .with_context(|| format!("creating {}", t.display()))?;
    }
    let console = disks[0].with_extension("build.log");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "pc", "-m", "1536", "-smp", "2"])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(work.join("vmlinuz"))
        .arg("-initrd")
        .arg(work.join("initrd.img"))
        .arg("-append")
        .arg(format!(
            "root=/dev/vdc ro console=ttyS0 init=/hc-build panic=-1 hc.md0={} hc.md1={}",
            recipe::MD_LVM_UUIDS[0],
            recipe::MD_LVM_UUIDS[1]
        ));
    for t in &tmp {
        cmd.arg("-drive")
            .arg(format!("file={},if=virtio,format=raw", t.display()));
    }
    cmd.arg("-drive").arg(format!(
        "file={},if=virtio,format=raw,readonly=on",
        tree.display()
    ));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            for t in &tmp {
                let _ = fs::remove_file(t);
            }
            bail!(
                "the build VM did not finish in 30 minutes; its console, {}:\n{}",
                console.display(),
                console_tail(&console)
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let log = fs::read_to_string(&console).unwrap_or_default();
    if !log.contains("hc-build: ok") {
        for t in &tmp {
            let _ = fs::remove_file(t);
        }
        bail!(
            "the build VM ended ({status}) without finishing; its console, {}:\n{}",
            console.display(),
            console_tail(&console)
        );
    }
    for (t, d) in tmp.iter().zip(disks) {
        fs::rename(t, d).with_context(|| format!("renaming {} to {}", t.display(), d.display()))?;
    }
    recipe::remove_tree(&work)
}

fn console_tail(console: &Path) -> String {
    sh::tail(&fs::read_to_string(console).unwrap_or_default(), 40)
}

/// $1: the tree's image, $2: the work directory; the init script on stdin.
/// The newest kernel and its initrd are copied out, the script put in as
/// /hc-build (the build removes it from the copy).
const BOOT_FILES_SH: &str = r#"set -eu
M=$(mktemp -d /tmp/hc-bootfiles.XXXXXX)
mount -o loop "$1" "$M"
K=$(ls "$M"/boot/vmlinuz-* | sort -V | tail -n1)
V=${K##*/vmlinuz-}
cp "$K" "$2/vmlinuz"
cp "$M/boot/initrd.img-$V" "$2/initrd.img"
cat > "$M/hc-build"
chmod 755 "$M/hc-build"
sync
umount "$M"
rmdir "$M"
"#;
