//! What a killed client leaves of an image target, released by the next
//! run (`hotclone::target::image::release_stale`), with real loop devices
//! and mounts. Needs root; fails saying so without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hotclone::target::image::release_stale;

fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "stale_mounts needs root (loop devices, mounts); run it as root"
    );
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "`{script}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Undo whatever the test left: mounts at `staging`, loops on `raw`.
struct Cleanup {
    raw: PathBuf,
    staging: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.staging).status();
        let _ = Command::new("sh")
            .args([
                "-c",
                "for d in $(losetup -j \"$1\" -n -O NAME); do losetup -d $d; done",
                "cleanup",
            ])
            .arg(&self.raw)
            .status();
    }
}

fn mounted_at(staging: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(staging.to_str().unwrap()))
}

/// The fault test's failure in CI (round 2 of the host-mount setup): the
/// client was killed while its mount(8) ran. The device was claimed before
/// the mount showed in /proc/self/mountinfo (ext4 replays its journal
/// first), so the next run's look for leftovers under its staging
/// directory found nothing, the device stayed claimed, and the run waited
/// 15 s and refused ("still mounted elsewhere ... in the mount namespace of
/// pid 3", its own namespace).
///
/// Here the image is attached twice. One loop device is held open
/// exclusively for 1.5 s (the mount in progress); the other is mounted at
/// the staging directory after 0.5 s (a mount that lands after the look).
/// release_stale must unmount it and detach both devices.
#[test]
fn regression_a_mount_that_lands_after_the_scan_is_released_too() {
    late_mount_released("late", LateDevice::AttachedSecond);
}

/// The same in the other order. `losetup -j` lists the devices by number,
/// so when the mounted one came first (its number freed by another test
/// meanwhile, as in a full `cargo xtask test`), release_stale detached it
/// before the held one was released, and the late mount failed on a
/// detached device ("can't read superblock"). It now waits for all of the
/// image's devices before detaching any.
#[test]
fn regression_release_stale_detaches_no_device_while_another_is_claimed() {
    late_mount_released("first", LateDevice::AttachedFirst);
}

/// Which of the image's two loop devices the late mount uses.
enum LateDevice {
    AttachedFirst,
    AttachedSecond,
}

fn late_mount_released(name: &str, late_device: LateDevice) {
    use std::os::unix::fs::OpenOptionsExt;
    require_root();
    let dir = std::env::temp_dir().join(format!("hc-stale-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("staging")).unwrap();
    let raw = dir.join("disk.raw");
    let staging = dir.join("staging");
    let _cleanup = Cleanup {
        raw: raw.clone(),
        staging: staging.clone(),
    };
    sh(&format!(
        "truncate -s 64M {0} && mkfs.ext4 -q -F {0}",
        raw.display()
    ));
    let first = sh(&format!("losetup -f --show {}", raw.display()));
    let second = sh(&format!("losetup -f --show {}", raw.display()));
    let (busy, dev) = match late_device {
        LateDevice::AttachedFirst => (second, first),
        LateDevice::AttachedSecond => (first, second),
    };
    let held = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&busy)
        .unwrap();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(held);
    });
    let mut late = Command::new("sh")
        .args(["-c", "sleep 0.5; mount \"$1\" \"$2\"", "late"])
        .arg(&dev)
        .arg(&staging)
        .spawn()
        .unwrap();
    let released = release_stale(&raw, &staging);
    holder.join().unwrap();
    assert!(late.wait().unwrap().success(), "the late mount failed");
    released.unwrap_or_else(|e| panic!("release_stale refused: {e}"));
    assert!(!mounted_at(&staging), "the late mount is still there");
    let loops = sh(&format!("losetup -j {} -n -O NAME", raw.display()));
    assert_eq!(loops, "", "the loop device is still attached");
    std::fs::remove_dir_all(&dir).unwrap();
}
