//! `hotclone rehearse` on the lab (issue 13): an image clone of debian12,
//! rehearsed on its isolated network while the production bridge is
//! captured, then broken three ways behind hotclone's back (a network
//! config naming an interface the VM lacks, an initrd without virtio, a
//! service that does not start). Each rehearsal must name its cause, and
//! the image must hash the same before and after each one.
//!
//! The good rehearsal is also this suite's boot of a debian12 image clone:
//! its `--check`s prove the identity (hostname, address on eth0, root on
//! the virtio disk, the marker written just before the clone).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::image::MountedImage;
use common::{lab, run, run_ok, source_ssh, Lab};

const PROD_IP: [u8; 4] = [198, 51, 100, 11];

/// The source's lab service and marker, removed when dropped.
struct Installed<'a> {
    lab: &'a Lab,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let _ = run(self
            .lab
            .client_command("ssh")
            .arg("-F")
            .arg(&self.lab.ssh_config)
            .args([
                "debian12",
                &format!("{}; rm -f /root/hotclone-marker", common::HC_ECHO_REMOVE),
            ]));
    }
}

fn sha256(path: &Path) -> String {
    run_ok(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

struct Clone<'a> {
    lab: &'a Lab,
    dir: PathBuf,
    image: PathBuf,
    name: String,
}

impl Clone<'_> {
    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    fn rehearse(&self, extra: &[&str]) -> Output {
        run(self
            .lab
            .hotclone()
            .env("HOTCLONE_HOME", self.home())
            .args(["rehearse", &self.name, "--json", "-F"])
            .arg(&self.lab.ssh_config)
            .args(extra))
    }

    fn status(&self) -> serde_json::Value {
        let out = run_ok(
            self.lab
                .hotclone()
                .env("HOTCLONE_HOME", self.home())
                .args(["status", &self.name, "--json"]),
        );
        serde_json::from_str(&out).unwrap()
    }

    /// Run `edit` in the clone's root (mounted read-write on the host),
    /// rehearse with `extra`, and check the rehearsal fails with every
    /// one of `expect` in its report and leaves the image byte for byte as
    /// it was. Then `restore` puts the clone back.
    fn broken(&self, case: &str, edit: &str, restore: &str, extra: &[&str], expect: &[&str]) {
        self.in_root(edit);
        let before = sha256(&self.image);
        let out = self.rehearse(extra);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{case}: the rehearsal must fail"
        );
        let rec = common::rehearsal_record(&out);
        assert_eq!(rec["passed"], false, "{case}: {rec}");
        let failed: Vec<String> = rec["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["passed"] == false)
            .map(|c| format!("{}: {}", c["name"], c["detail"]))
            .collect();
        eprintln!("{case}: failed checks {failed:#?}");
        let first = failed.first().cloned().unwrap_or_default();
        for e in expect {
            assert!(
                first.contains(e),
                "{case}: {e:?} not in the first failure {first:?}"
            );
        }
        assert_eq!(sha256(&self.image), before, "{case}: the image changed");
        let md = std::fs::read_to_string(self.home().join(&self.name).join("rehearsal-report.md"))
            .unwrap();
        assert!(md.contains("FAILED") && md.contains("FAIL |"), "{md}");
        self.in_root(restore);
    }

    fn in_root(&self, script: &str) {
        let mnt = self.dir.join("mnt");
        let mounted = MountedImage::mount_writable(&self.image, 2, &mnt);
        run_ok(
            Command::new("sh")
                .args(["-ec", script])
                .env("WORK", &self.dir)
                .current_dir(&mounted.mount_point),
        );
        drop(mounted);
    }
}

#[test]
fn rehearsal_passes_a_good_clone_without_a_frame_on_production_and_names_the_cause_on_broken_ones()
{
    let _one = common::one_at_a_time();
    let lab = lab();
    let src = lab.source("debian12");
    let dir = common::workdir("rehearse");
    let _installed = Installed { lab: &lab };
    common::install_hc_echo(&lab, "debian12");
    let marker = format!("marker-rehearse-{}", std::process::id());
    source_ssh(
        &lab,
        "debian12",
        &format!("echo {marker} > /root/hotclone-marker"),
    );
    let image = dir.join("debian12.raw");
    let out = run(lab
        .hotclone()
        .env("HOTCLONE_HOME", dir.join("home"))
        .args(["clone", "--batch", "-F"])
        .arg(&lab.ssh_config)
        .arg("debian12")
        .arg("--target")
        .arg(format!("image:{}", image.display())));
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "the clone failed"
    );
    let c = Clone {
        lab: &lab,
        dir: dir.clone(),
        image: image.clone(),
        name: src.hostname.clone(),
    };
    let verified = run_ok(lab.hotclone().env("HOTCLONE_HOME", c.home()).args([
        "verify",
        "--target-only",
        &c.name,
    ]));
    assert!(verified.contains(" 0 difference(s)"), "{verified}");
    // Never rehearsed: status holds the cutover for it.
    let st = c.status();
    assert!(
        st["rehearsal_gate"]
            .as_str()
            .is_some_and(|g| g.contains(&format!("hotclone rehearse {}", c.name))),
        "{st}"
    );

    // 1. The good clone, with the production bridge captured throughout.
    let before = sha256(&image);
    let pcap = dir.join("rehearsal.pcap");
    let capture = common::pcap::Capture::production(&pcap, None);
    let identity = [
        format!("cmd:test \"$(hostname)\" = {}", src.hostname),
        format!("cmd:grep -qx {marker} /root/hotclone-marker"),
        "cmd:findmnt -no SOURCE / | grep -q '^/dev/vda'".to_string(),
        format!(
            "cmd:ip -o -4 addr show eth0 | grep -q ' {}/{} '",
            src.ip, src.prefix
        ),
    ];
    let mut args: Vec<&str> = vec!["--check", "tcp:8080"];
    for i in &identity {
        args.extend(["--check", i]);
    }
    let out = c.rehearse(&args);
    let captured = capture.stop(Duration::from_secs(1));
    assert!(out.status.success(), "the good clone's rehearsal failed");
    let rec = common::rehearsal_record(&out);
    assert_eq!(rec["passed"], true, "{rec}");
    let names: Vec<&str> = rec["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in [
        "the console reaches userspace",
        "198.51.100.11 answers",
        "hc-echo runs",
        "tcp 198.51.100.11:8080",
    ] {
        assert!(names.contains(&want), "{want} not checked: {names:?}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("SSH answers with the source's host key SHA256:")),
        "{names:?}"
    );
    let t = &rec["timings"];
    eprintln!(
        "rehearsal timings (ms): overlay {} boot {} checks {} teardown {} total {}",
        t["overlay_ms"], t["boot_ms"], t["checks_ms"], t["teardown_ms"], t["total_ms"]
    );
    assert_eq!(
        sha256(&image),
        before,
        "the good rehearsal changed the image"
    );
    assert!(
        !c.home()
            .join(&c.name)
            .join("rehearsal/overlay.qcow2")
            .exists(),
        "the overlay was not discarded"
    );
    // Nothing of the rehearsal reached production: no frame from the
    // clone's NIC, nothing to or from the production address.
    let mac = rec["mac"].as_str().unwrap();
    eprintln!(
        "production bridge during the rehearsal: {} frame(s)",
        common::pcap::frames(&captured).len()
    );
    assert_eq!(
        common::pcap::frames_from(&captured, mac),
        0,
        "frames from {mac}"
    );
    assert_eq!(
        common::pcap::frames_naming(&captured, PROD_IP),
        0,
        "frames for the production address during the rehearsal"
    );
    let st = c.status();
    assert_eq!(st["last_rehearsal"]["passed"], true, "{st}");
    assert!(st["rehearsal_gate"].is_null(), "{st}");
    // The isolated network is gone.
    let namespaces = run_ok(Command::new("ip").args(["netns", "list"]));
    assert!(!namespaces.contains("hcr-"), "{namespaces}");

    // 2. Broken: the network config names an interface the VM lacks.
    c.broken(
        "interface",
        "sed -i 's/eth0/eth5/' etc/network/interfaces",
        "sed -i 's/eth5/eth0/' etc/network/interfaces",
        &["--network-grace", "30", "--boot-timeout", "400"],
        &["198.51.100.11", "network did not come up"],
    );

    // 3. Broken: an initrd without virtio (and a short rootdelay, so the
    // initramfs gives up in seconds instead of 180).
    c.broken(
        "initrd",
        r#"f=$(ls boot/initrd.img-*); cp -a "$f" "$WORK/initrd.orig"; cp -a boot/grub/grub.cfg "$WORK/grub.cfg.orig"
           rm -rf "$WORK/x"; mkdir "$WORK/x"; (cd "$WORK/x" && { zstd -dc "$OLDPWD/$f" 2>/dev/null || gzip -dc "$OLDPWD/$f"; } | cpio -id --quiet)
           n=$(find "$WORK/x" -name 'virtio_blk.ko*' -o -name 'virtio_pci.ko*' | wc -l); test "$n" -ge 2
           find "$WORK/x" \( -name 'virtio_blk.ko*' -o -name 'virtio_pci.ko*' \) -delete
           (cd "$WORK/x" && find . | cpio -o -H newc --quiet | zstd -q -c) > "$f"
           sed -i -E 's/^(\s*linux\s.*)$/\1 rootdelay=5/' boot/grub/grub.cfg; grep -q rootdelay=5 boot/grub/grub.cfg"#,
        r#"f=$(ls boot/initrd.img-*); cp -a "$WORK/initrd.orig" "$f"; cp -a "$WORK/grub.cfg.orig" boot/grub/grub.cfg"#,
        &["--boot-timeout", "400"],
        &["console reaches userspace", "virtio_blk"],
    );

    // 4. Broken: a service that does not start on the clone.
    c.broken(
        "service",
        "touch etc/hc-echo.broken",
        "rm -f etc/hc-echo.broken",
        &["--health-timeout", "20"],
        &["hc-echo runs", "hc-echo does not run on the clone"],
    );
    let st = c.status();
    assert_eq!(st["last_rehearsal"]["passed"], false, "{st}");
    assert!(
        st["rehearsal_gate"]
            .as_str()
            .is_some_and(|g| g.contains("hc-echo")),
        "{st}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
