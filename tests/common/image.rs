//! Looking inside a finished disk image: attach it read-only, mount one
//! partition, and list its files in the same format the source listing
//! uses, so a test can compare source and copy exactly. Detached on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run, run_ok};

pub struct MountedImage {
    loop_dev: String,
    pub mount_point: PathBuf,
}

impl MountedImage {
    pub fn mount(image: &Path, partition: u32, mount_point: &Path) -> MountedImage {
        MountedImage::attach(image, partition, mount_point, false)
    }

    /// Read-write: for tests that change a target behind hotclone's back.
    pub fn mount_writable(image: &Path, partition: u32, mount_point: &Path) -> MountedImage {
        MountedImage::attach(image, partition, mount_point, true)
    }

    fn attach(image: &Path, partition: u32, mount_point: &Path, writable: bool) -> MountedImage {
        let dev = run_ok(
            Command::new("losetup")
                .args(["-f", "--show"])
                .args((!writable).then_some("-r"))
                .arg(image),
        )
        .trim()
        .to_string();
        run_ok(Command::new("partx").args(["-a", &dev]));
        std::fs::create_dir_all(mount_point).unwrap();
        shared_mount_point(mount_point);
        let part = format!("{dev}p{partition}");
        for _ in 0..50 {
            if Path::new(&part).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        run_ok(
            Command::new("mount")
                .args(["-o", if writable { "rw" } else { "ro" }, &part])
                .arg(mount_point),
        );
        MountedImage {
            loop_dev: dev,
            mount_point: mount_point.to_path_buf(),
        }
    }

    /// `find -printf` over the mounted tree: type, mode, owner, size,
    /// mtime (seconds), link target and path relative to the root, sorted.
    pub fn listing(&self, under: &str) -> Vec<String> {
        let dir = self.mount_point.join(under.trim_start_matches('/'));
        let out = run_ok(
            Command::new("find")
                .arg(&dir)
                .args(["-printf", "%y %m %U %G %s %T@ %l %P\\n"]),
        );
        let mut lines: Vec<String> = out.lines().map(normalize_line).collect();
        lines.sort();
        lines
    }
}

/// Drop sub-second mtime digits and size for directories (filesystem-specific).
pub fn normalize_line(line: &str) -> String {
    let mut f: Vec<String> = line.splitn(8, ' ').map(str::to_string).collect();
    if f.len() == 8 {
        f[5] = f[5].split('.').next().unwrap_or("").to_string();
        if f[0] == "d" {
            f[4] = "-".into();
        }
    }
    f.join(" ")
}

/// Make `mount_point` a shared mount (bound onto itself) before the
/// image is mounted on it. A process that `ip netns exec` starts meanwhile
/// (another test binary's hotclone, in the other lane of `cargo xtask
/// test`) gets a copy of this host's mounts, as a slave: with a private
/// mount point the copy of the image's mount stayed there after the test
/// unmounted it, kept the loop device claimed, and the next hotclone run
/// on the image refused ("still mounted elsewhere ... in the mount
/// namespace of pid N (hotclone)"). Under a shared one, the unmount
/// propagates to those copies.
fn shared_mount_point(mount_point: &Path) {
    run_ok(
        Command::new("mount")
            .arg("--bind")
            .arg(mount_point)
            .arg(mount_point),
    );
    run_ok(Command::new("mount").arg("--make-shared").arg(mount_point));
}

impl Drop for MountedImage {
    fn drop(&mut self) {
        // The image, then the shared bind under it.
        let _ = Command::new("umount").arg(&self.mount_point).output();
        let _ = Command::new("umount").arg(&self.mount_point).output();
        let _ = Command::new("partx").args(["-d", &self.loop_dev]).output();
        let _ = Command::new("losetup")
            .args(["-d", &self.loop_dev])
            .output();
    }
}

/// The target's root filesystem (partition 2 of the busybox plan),
/// checked by e2fsck read-only, and its tree under `dirs`.
pub fn check_image(image: &Path, work: &Path, dirs: &str) -> Vec<String> {
    let dev = run_ok(
        Command::new("losetup")
            .args(["-f", "--show", "-r"])
            .arg(image),
    )
    .trim()
    .to_string();
    run_ok(Command::new("partx").args(["-a", &dev]));
    let part = format!("{dev}p2");
    for _ in 0..50 {
        if Path::new(&part).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let fsck = run(Command::new("e2fsck").args(["-f", "-n", &part]));
    let _ = run(Command::new("partx").args(["-d", &dev]));
    let _ = run(Command::new("losetup").args(["-d", &dev]));
    assert!(
        fsck.status.success(),
        "e2fsck -fn found the target damaged: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let mounted = MountedImage::mount(image, 2, &work.join("mnt"));
    let tree = super::host_tree(&mounted.mount_point, dirs);
    let strays = run_ok(Command::new("sh").arg("-c").arg(format!(
        "find {} -name '*hotclone-tmp*'",
        mounted.mount_point.display()
    )));
    assert_eq!(strays.trim(), "", "temporary files left on the target");
    tree
}
