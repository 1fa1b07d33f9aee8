//! Convert a real bookworm copy on a loop-attached GPT disk with the
//! guest's own tools in a chroot: update-initramfs, grub-install,
//! update-grub. Needs root and the cached lab image (`cargo xtask lab up`);
//! fails loudly without either, never skips.
//!
//! Everything it sets up (loop devices, partition devices, mounts, the work
//! directory) is torn down by a guard, also when an assertion fails.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use hotclone::convert::chroot::{ChrootError, ChrootExec, CommandOutput, UnshareChroot};
use hotclone::convert::{self, ConvertContext, FsMapping, Guest};
use hotclone::probe::{BootloaderKind, DistroFamily};
use hotclone::progress::Progress;

/// Run a host command; on failure panic with the command and its output.
fn sh(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        panic!("`{}` failed ({}):\n{text}", argv.join(" "), out.status);
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Best effort, for cleanup: report but do not panic.
fn try_sh(argv: &[&str]) {
    match Command::new(argv[0]).args(&argv[1..]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "cleanup: `{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("cleanup: cannot run {argv:?}: {e}"),
    }
}

/// What was set up, undone in reverse order on drop.
#[derive(Default)]
struct Lab {
    dir: PathBuf,
    mounts: Vec<PathBuf>,
    partitioned: Vec<String>,
    loops: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("sync").status();
        for m in self.mounts.iter().rev() {
            try_sh(&["umount", &m.to_string_lossy()]);
        }
        for l in self.partitioned.iter().rev() {
            try_sh(&["partx", "-d", l]);
        }
        for l in self.loops.iter().rev() {
            try_sh(&["losetup", "-d", l]);
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn cached_image() -> PathBuf {
    let dir = Path::new("/var/cache/hotclone-lab");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("debian12-") && n.ends_with(".img"))
    });
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "no cached bookworm image at {}/debian12-*.img: run cargo xtask lab up first",
            dir.display()
        )
    })
}

/// A GUID string as GPT stores it (first three fields little-endian).
fn guid(s: &str) -> [u8; 16] {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    out[4..6].copy_from_slice(&[b[5], b[4]]);
    out[6..8].copy_from_slice(&[b[7], b[6]]);
    out[8..].copy_from_slice(&b[8..]);
    out
}

/// 2 GiB sparse, GPT: 1 MiB BIOS boot partition + one Linux partition.
fn make_disk(path: &Path) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.set_len(2 << 30).unwrap();
    let mut gpt =
        gptman::GPT::new_from(&mut f, 512, guid("6a5c1f7e-0d3b-4c8a-9e2f-1b7d4c3a2e10")).unwrap();
    let last = gpt.header.last_usable_lba;
    gpt[1] = gptman::GPTPartitionEntry {
        partition_type_guid: guid("21686148-6449-6E6F-744E-656564454649"),
        unique_partition_guid: guid("0c1e2d3f-4a5b-4c6d-8e7f-000000000001"),
        starting_lba: 2048,
        ending_lba: 4095,
        attribute_bits: 0,
        partition_name: "bios-boot".into(),
    };
    gpt[2] = gptman::GPTPartitionEntry {
        partition_type_guid: guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
        unique_partition_guid: guid("0c1e2d3f-4a5b-4c6d-8e7f-000000000002"),
        starting_lba: 4096,
        ending_lba: last / 2048 * 2048 - 1,
        attribute_bits: 0,
        partition_name: "root".into(),
    };
    gpt.write_into(&mut f).unwrap();
    gptman::GPT::write_protective_mbr_into(&mut f, 512).unwrap();
    f.flush().unwrap();
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Delegates to the real chroot and remembers how long each command took
/// and what it printed.
struct Timed {
    inner: UnshareChroot,
    log: Vec<(String, Duration, CommandOutput)>,
}

impl ChrootExec for Timed {
    fn root(&self) -> &Path {
        self.inner.root()
    }
    fn run(&mut self, argv: &[&str]) -> Result<CommandOutput, ChrootError> {
        let t = Instant::now();
        let out = self.inner.run(argv)?;
        self.log.push((argv.join(" "), t.elapsed(), out.clone()));
        Ok(out)
    }
    fn run_host(&mut self, argv: &[&str]) -> Result<CommandOutput, ChrootError> {
        let t = Instant::now();
        let out = self.inner.run_host(argv)?;
        self.log.push((
            format!("[host] {}", argv.join(" ")),
            t.elapsed(),
            out.clone(),
        ));
        Ok(out)
    }
}

#[derive(Default)]
struct Notes(Vec<String>);

impl Progress for Notes {
    fn note(&mut self, m: &str) {
        self.0.push(m.to_string());
    }
}

fn mounted_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|mp| mp == dir || mp.starts_with(&format!("{dir}/")))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn bookworm_copy_converts_and_gets_grub_on_a_loop_disk() {
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root (loop devices, mounts, chroot); run it as root, e.g. cargo xtask test");
    let image = cached_image();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/convert-chroot-{}", std::process::id()));
    let disk = dir.join("disk.img");
    let (mnt, src) = (dir.join("target"), dir.join("source"));
    let mut lab = Lab::default();
    lab.dir = dir.clone();
    {
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::create_dir_all(&src).unwrap();
        make_disk(&disk);
        let t0 = Instant::now();

        let lo = sh(&["losetup", "-f", "--show", &disk.to_string_lossy()]);
        lab.loops.push(lo.clone());
        sh(&["partx", "-a", &lo]);
        lab.partitioned.push(lo.clone());
        let part = format!("{lo}p2");
        assert!(Path::new(&part).exists(), "partx -a {lo} made no {part}");
        sh(&["mkfs.ext4", "-q", "-F", "-L", "root", &part]);
        let uuid = sh(&["blkid", "-s", "UUID", "-o", "value", &part]);
        assert!(!uuid.is_empty(), "blkid gave no UUID for {part}");
        sh(&["mount", &part, &mnt.to_string_lossy()]);
        lab.mounts.push(mnt.clone());

        let src_lo = sh(&["losetup", "-r", "-f", "--show", &image.to_string_lossy()]);
        lab.loops.push(src_lo.clone());
        sh(&["mount", "-o", "ro", &src_lo, &src.to_string_lossy()]);
        lab.mounts.push(src.clone());
        let t_copy = Instant::now();
        sh(&[
            "cp",
            "-a",
            &format!("{}/.", src.display()),
            &format!("{}/", mnt.display()),
        ]);
        eprintln!(
            "copy of {}: {:.1}s",
            image.display(),
            t_copy.elapsed().as_secs_f64()
        );

        let kernel = std::fs::read_dir(mnt.join("lib/modules"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .max()
            .expect("a kernel in /lib/modules of the image");
        let initrd = mnt.join(format!("boot/initrd.img-{kernel}"));
        let initrd_before = mtime(&initrd);
        let version = std::fs::read_to_string(mnt.join("etc/debian_version"))
            .ok()
            .map(|v| v.trim().to_string());

        let guest = Guest {
            family: DistroFamily::Debian,
            id: "debian".into(),
            version,
            bootloader: BootloaderKind::Grub2,
            kernel: kernel.clone(),
            network_styles: vec![],
        };
        let root_fs = FsMapping {
            mount_point: "/".into(),
            old_specs: vec!["/dev/sda1".into()],
            uuid: uuid.clone(),
            fs_type: "ext4".into(),
            device: Some(part.clone()),
            partition: Some(2),
        };
        let mut ctx = ConvertContext::new(guest, vec![root_fs]);
        ctx.disk_device = Some(lo.clone());

        let mut exec = Timed {
            inner: UnshareChroot::new(&mnt).unwrap().with_uuid_links(&ctx),
            log: vec![],
        };
        let mut notes = Notes::default();
        let t_conv = Instant::now();
        let result = convert::convert(&mnt, &ctx, &mut exec, &mut notes);
        for (cmd, took, out) in &exec.log {
            eprintln!(
                "chroot `{cmd}`: {:.1}s, exit {}",
                took.as_secs_f64(),
                out.status
            );
        }
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                for (cmd, _, out) in &exec.log {
                    eprintln!(
                        "--- `{cmd}` (exit {}):\n{}{}",
                        out.status, out.stdout, out.stderr
                    );
                }
                panic!("convert failed: {e}\nnotes:\n{}", notes.0.join("\n"));
            }
        };
        eprintln!(
            "convert: {:.1}s; changed: {:?}; notes: {:?}",
            t_conv.elapsed().as_secs_f64(),
            report.changed,
            report.notes
        );
        let dump = || {
            exec.log
                .iter()
                .map(|(c, _, o)| format!("--- `{c}`:\n{}{}", o.stdout, o.stderr))
                .collect::<Vec<_>>()
                .join("\n")
        };

        let fstab = std::fs::read_to_string(mnt.join("etc/fstab")).unwrap();
        assert!(
            fstab
                .lines()
                .any(|l| l.split_whitespace().take(3).collect::<Vec<_>>()
                    == [format!("UUID={uuid}").as_str(), "/", "ext4"]),
            "fstab does not mount UUID={uuid} on / as ext4:\n{fstab}"
        );
        let grub_default = std::fs::read_to_string(mnt.join("etc/default/grub")).unwrap();
        assert!(
            grub_default.contains("net.ifnames=0"),
            "/etc/default/grub lacks net.ifnames=0:\n{grub_default}"
        );
        let cfg = std::fs::read_to_string(mnt.join("boot/grub/grub.cfg"))
            .unwrap_or_else(|e| panic!("no /boot/grub/grub.cfg ({e}):\n{}", dump()));
        assert!(
            cfg.contains(&format!("root=UUID={uuid}")),
            "grub.cfg does not boot root=UUID={uuid}:\n{}",
            dump()
        );
        assert!(
            cfg.contains("net.ifnames=0"),
            "grub.cfg lacks net.ifnames=0"
        );
        assert!(
            mtime(&initrd) > initrd_before,
            "{} was not rebuilt:\n{}",
            initrd.display(),
            dump()
        );
        assert!(
            mnt.join("boot/grub/i386-pc/core.img").exists(),
            "no /boot/grub/i386-pc/core.img:\n{}",
            dump()
        );

        // Flush, then read the boot sector through the file.
        sh(&["sync"]);
        sh(&["blockdev", "--flushbufs", &lo]);
        let mut mbr = [0u8; 512];
        let mut f = std::fs::File::open(&disk).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_exact(&mut mbr).unwrap();
        assert!(
            mbr[..440].iter().any(|b| *b != 0),
            "the MBR boot code area is empty: grub-install wrote nothing"
        );
        assert!(
            mbr[..440].windows(4).any(|w| w == b"GRUB"),
            "the MBR boot code is not GRUB's"
        );

        // The chroot's mounts lived in their own namespace: none is visible here.
        let leaked: Vec<String> = mounted_under(&mnt)
            .into_iter()
            .filter(|l| l.split(' ').nth(4) != Some(mnt.to_str().unwrap()))
            .collect();
        assert!(
            leaked.is_empty(),
            "mounts left under {}:\n{}",
            mnt.display(),
            leaked.join("\n")
        );
        // The by-uuid links lived in the chroot's private /dev, not the host's.
        assert!(
            !Path::new(&format!("/dev/disk/by-uuid/{uuid}")).exists(),
            "/dev/disk/by-uuid/{uuid} leaked onto the host"
        );
        eprintln!("whole test body: {:.1}s", t0.elapsed().as_secs_f64());
    }
    drop(lab);
    let left = mounted_under(&dir);
    assert!(
        left.is_empty(),
        "still mounted after cleanup:\n{}",
        left.join("\n")
    );
    let attached: Vec<String> = sh(&["losetup", "-a"])
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(str::to_string)
        .collect();
    assert!(
        attached.is_empty(),
        "loop device still attached:\n{}",
        attached.join("\n")
    );
}
