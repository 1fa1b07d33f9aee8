//! `hotclone probe` against the lab's real sources, through the real binary.
//! Every test asserts values read independently from the lab (lab.json,
//! which `cargo xtask lab up` reads from each source's image), not just
//! success. These tests never skip: without the lab they fail and say how
//! to bring it up.

mod common;

use common::{lab, run, run_ok, Lab, LabSource};
use hotclone::probe::{DistroFamily, Inventory, MountKind, NetConfigStyle, TarFlavour};

fn probe_json(lab: &Lab, source: &str) -> Inventory {
    let out = run_ok(
        lab.hotclone()
            .args(["probe", "--json", "--batch", "-F"])
            .arg(&lab.ssh_config)
            .arg(source),
    );
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("probe --json printed no inventory: {e}\n{out}"))
}

/// What every lab source must report, whatever its userland.
fn assert_common(inv: &Inventory, src: &LabSource) {
    assert_eq!(inv.hostname, src.hostname);
    let root = inv.root_mount().expect("a root mount");
    assert_eq!(root.fs_type, src.root_fstype, "root mount: {root:?}");
    assert_eq!(root.kind, MountKind::Disk);
    assert!(
        root.device.starts_with("/dev/loop"),
        "the source's root is its own disk, got {root:?}"
    );
    let total = root.bytes_total.expect("df sizes for /");
    let used = root.bytes_used.expect("df usage for /");
    assert!(
        total > used && used > 1 << 20,
        "df for / is implausible: {used} of {total}"
    );
    let eth0 = inv.interface("eth0").expect("eth0");
    assert_eq!(eth0.mac.as_deref(), Some(src.mac.as_str()));
    assert!(
        eth0.addresses
            .contains(&format!("{}/{}", src.ip, src.prefix)),
        "{eth0:?}"
    );
    assert!(eth0.up);
    assert!(inv
        .network
        .config_styles
        .contains(&NetConfigStyle::Ifupdown));
    assert!(inv
        .network
        .config_files
        .contains(&"/etc/network/interfaces".to_string()));
    let host_kernel = String::from_utf8(
        std::process::Command::new("uname")
            .arg("-r")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    // In the lab the source runs the host's kernel (a chroot), so the running
    // kernel is the host's while the installed one is the rootfs's.
    assert_eq!(inv.kernel.running, host_kernel.trim());
    let daemon = if src.sshd == "dropbear" {
        "dropbear"
    } else {
        "sshd"
    };
    assert!(
        inv.services.processes.iter().any(|p| p == daemon),
        "{:?}",
        inv.services.processes
    );
}

fn assert_debian(inv: &Inventory, src: &LabSource) {
    assert_common(inv, src);
    let root = inv.root_mount().unwrap();
    assert_eq!(
        root.uuid.as_deref(),
        Some(common::image_uuid(&src.image).as_str()),
        "root UUID (from blkid on the source)"
    );
    assert_eq!(inv.os.family, DistroFamily::Debian);
    assert_eq!(inv.os.id, "debian");
    assert_eq!(inv.os.version.as_deref(), src.debian_version.as_deref());
    assert_eq!(inv.os.codename.as_deref(), src.suite.as_deref());
    let installed = src
        .kernel_installed
        .as_deref()
        .expect("lab.json names the installed kernel");
    assert_eq!(inv.kernel.installed, vec![installed.to_string()]);
    assert!(
        inv.kernel
            .boot_images
            .contains(&format!("vmlinuz-{installed}")),
        "{:?}",
        inv.kernel.boot_images
    );
    assert_eq!(inv.capabilities.tar.flavour, TarFlavour::Gnu);
    assert!(inv.capabilities.tar.xattrs && inv.capabilities.tar.acls);
    assert!(inv.capabilities.find_printf && inv.capabilities.stat_format);
    assert!(inv.capabilities.compressors.contains(&"gzip".to_string()));
    assert!(
        inv.services.running.contains(&"ssh".to_string()),
        "{:?}",
        inv.services
    );
    assert_eq!(inv.init.kind, hotclone::probe::InitKind::Systemd);
    assert_eq!(inv.bootloader.kind, hotclone::probe::BootloaderKind::Grub2);
    let fstab_root = inv.fstab_entry("/").expect("fstab has /");
    assert_eq!(
        fstab_root.spec, "/dev/sda1",
        "the lab fstab names a device the VM will not have"
    );
}

#[test]
fn probe_debian12() {
    let lab = lab();
    let src = lab.source("debian12");
    assert_debian(&probe_json(&lab, "debian12"), src);
}

#[test]
fn probe_debian11() {
    let lab = lab();
    let src = lab.source("debian11");
    assert_debian(&probe_json(&lab, "debian11"), src);
}

/// Debian 13 with NetworkManager in place of ifupdown (issue 14, shape 9).
/// Its address is in a keyfile.
#[test]
fn probe_debian13() {
    let lab = lab();
    let src = lab.source("debian13");
    let inv = probe_json(&lab, "debian13");
    assert_debian(&inv, src);
    // (trixie's packages leave an /etc/network/interfaces that only
    // sources interfaces.d: it configures nothing, but it is there.)
    assert!(
        inv.network
            .config_styles
            .contains(&hotclone::probe::NetConfigStyle::NetworkManager),
        "{:?}",
        inv.network.config_styles
    );
}

#[test]
fn probe_legacy_ssh_source_falls_back_and_says_so() {
    let lab = lab();
    let src = lab.source("legacy-ssh");
    let out = run(lab
        .hotclone()
        .args(["probe", "--json", "--batch", "-F"])
        .arg(&lab.ssh_config)
        .arg("legacy-ssh"));
    assert!(out.status.success());
    let inv: Inventory = serde_json::from_slice(&out.stdout).unwrap();
    assert_debian(&inv, src);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("legacy"),
        "the fallback to legacy algorithms must be logged, got:\n{log}"
    );
}

#[test]
fn probe_busybox_source_falls_back_to_busybox_tools() {
    let lab = lab();
    let src = lab.source("busybox");
    let inv = probe_json(&lab, "busybox");
    assert_common(&inv, src);
    assert_eq!(inv.os.family, DistroFamily::Unknown);
    assert_eq!(inv.capabilities.tar.flavour, TarFlavour::Busybox);
    assert!(inv.capabilities.busybox.is_some());
    assert!(!inv.capabilities.find_printf, "busybox find has no -printf");
    assert!(!inv.capabilities.tar.xattrs);
    assert!(
        inv.warnings.iter().any(|w| w.contains("busybox tar")),
        "{:?}",
        inv.warnings
    );
    let fstab_root = inv.fstab_entry("/").expect("fstab has /");
    assert_eq!(fstab_root.spec, "/dev/hda1");
    // busybox-static has no blkid applet: the UUID is unknown, not invented.
    let root = inv.root_mount().unwrap();
    assert_eq!(root.uuid, None);
}

#[test]
fn human_summary_shows_identity_and_tools() {
    let lab = lab();
    let src = lab.source("debian12");
    let out = run_ok(
        lab.hotclone()
            .args(["probe", "--batch", "-F"])
            .arg(&lab.ssh_config)
            .arg("debian12"),
    );
    for needle in [
        format!("{} (debian12)", src.hostname),
        format!("{}/{}", src.ip, src.prefix),
        src.mac.clone(),
        "Source tools".to_string(),
        "gnu 1.".to_string(),
    ] {
        assert!(out.contains(&needle), "summary lacks {needle:?}");
    }
}

#[test]
fn probe_by_address_with_identity_and_known_hosts_flags() {
    let lab = lab();
    let src = lab.source("debian11");
    let out = run_ok(
        lab.hotclone()
            .args(["probe", "--json", "--batch", "-i"])
            .arg(&lab.id_ed25519)
            .arg("--known-hosts")
            .arg(&lab.known_hosts)
            .arg(format!("root@{}:22", src.ip)),
    );
    let inv: Inventory = serde_json::from_str(&out).unwrap();
    assert_eq!(inv.hostname, src.hostname);
    assert_eq!(inv.source, format!("root@{}:22", src.ip));
}

#[test]
fn password_from_file_descriptor_never_from_argv() {
    let lab = lab();
    let src = lab.source("debian12");
    let empty = tempdir("pwfd");
    let known = empty.join("known_hosts");
    std::fs::copy(&lab.known_hosts, &known).unwrap();
    // No key anywhere (HOME is empty, no agent), so only the password can work.
    let script = format!(
        "exec {} probe --json --batch --no-agent --known-hosts {} --password-fd 3 root@{} 3<{}",
        env!("CARGO_BIN_EXE_hotclone"),
        known.display(),
        src.ip,
        lab.password_file.display()
    );
    let out = run(lab
        .client_command("sh")
        .arg("-c")
        .arg(&script)
        .env("HOME", &empty)
        .env_remove("SSH_AUTH_SOCK"));
    assert!(
        out.status.success(),
        "password auth via --password-fd failed"
    );
    let inv: Inventory = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inv.hostname, src.hostname);
    let password = std::fs::read_to_string(&lab.password_file).unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(password.trim()),
        "the password leaked into the log"
    );
}

#[test]
fn unknown_host_is_refused_by_default_and_named() {
    let lab = lab();
    let src = lab.source("debian12");
    let dir = tempdir("unknown");
    let known = dir.join("known_hosts");
    let out = run(lab
        .hotclone()
        .args(["probe", "--batch", "-i"])
        .arg(&lab.id_ed25519)
        .arg("--known-hosts")
        .arg(&known)
        .arg(format!("root@{}", src.ip)));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--accept-new") && err.contains("SHA256:"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing is probed from an unverified host"
    );
    assert!(
        !known.exists() || std::fs::read_to_string(&known).unwrap().is_empty(),
        "strict mode must not write known_hosts"
    );
}

#[test]
fn unreachable_host_fails_fast_with_a_clear_error() {
    let lab = lab();
    let started = std::time::Instant::now();
    let out = run(lab.hotclone().args([
        "probe",
        "--batch",
        "--connect-timeout",
        "3",
        "root@198.51.100.99",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("198.51.100.99"),
        "the error names the host: {err}"
    );
    // Not a timing assertion on speed, only that the timeout flag is honoured at all.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "--connect-timeout 3 was not honoured"
    );
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hotclone-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
