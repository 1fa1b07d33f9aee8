//! What a killed client leaves of an image target, released by the next
//! run (`hotclone::target::image::release_stale`), with real loop devices
//! and mounts. Needs root; fails saying so without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hotclone::target::image::{release_stale, LoopDisk};

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

/// A 64 MiB image with an MBR of two 20 MiB partitions.
fn two_partition_image(raw: &Path) {
    let mut mbr = [0u8; 512];
    for (slot, start) in [(0usize, 2048u32), (1, 43008)] {
        let e = &mut mbr[446 + 16 * slot..462 + 16 * slot];
        e[4] = 0x83;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&40960u32.to_le_bytes());
    }
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    std::fs::write(raw, mbr).unwrap();
    sh(&format!("truncate -s 64M {}", raw.display()));
}

/// clone_lab's failure in a full `cargo xtask test` on a fresh machine:
/// "`partx -a /dev/loop7` failed: partx: /dev/loop7: error adding
/// partition 2". An earlier user of /dev/loop7 detached it while its
/// partition 2 was busy: `partx -d` failed, and `losetup -d` keeps the
/// partition. Here that is made by holding partition 2 open; the next
/// attach of that loop device must still give both partitions.
#[test]
fn regression_a_partition_left_on_a_loop_device_does_not_fail_its_next_attach() {
    require_root();
    let dir = std::env::temp_dir().join(format!("hc-stale-part-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("disk.raw");
    let _cleanup = Cleanup {
        raw: raw.clone(),
        staging: dir.join("staging"),
    };
    two_partition_image(&raw);
    // `losetup -f` takes the lowest free device; another test may take it
    // in between, so the stale state is made again until the attach lands
    // on it.
    for _ in 0..5 {
        let dev = sh(&format!("losetup -f --show {}", raw.display()));
        sh(&format!("partx -a {dev}"));
        let busy = std::fs::File::open(format!("{dev}p2")).unwrap();
        let _ = Command::new("partx").args(["-d", &dev]).status();
        sh(&format!("losetup -d {dev}"));
        drop(busy);
        let stale = Path::new(&format!("/dev/{}p2", dev.trim_start_matches("/dev/"))).exists();
        assert!(
            stale,
            "{dev}p2 did not stay after losetup -d: the test made nothing stale"
        );
        let disk = LoopDisk::attach(&raw).unwrap_or_else(|e| panic!("attach refused: {e}"));
        if disk.device != Path::new(&dev) {
            drop(disk);
            sh(&format!("partx -d {dev} || true"));
            continue;
        }
        for n in [1, 2] {
            let part = disk.partition(n).unwrap();
            assert!(part.exists(), "{} is missing", part.display());
        }
        // Issue 16: a writable image is written around the page cache.
        assert!(
            disk.direct_io(),
            "{dev} does buffered I/O to {}, not direct I/O",
            raw.display()
        );
        drop(disk);
        assert!(
            !Path::new(&format!("{dev}p1")).exists() && !Path::new(&format!("{dev}p2")).exists(),
            "detaching left {dev}'s partitions"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        return;
    }
    panic!("five attaches in a row landed on another loop device than the stale one");
}
