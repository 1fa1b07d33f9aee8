//! Live targets on the lab: `hotclone launch` boots the rescue image in a
//! QEMU (TCG) VM on the lab bridge, `hotclone clone` streams a source into
//! it over SSH, and the VM then boots the converted clone from its own
//! disk with the source's identity. Refusals (an unexpected host key, a
//! disk not in the plan, a mounted disk, a host that is not the rescue
//! system) are checked against the same VM and lab.
//!
//! Needs the lab (`cargo xtask lab up`) and the rescue image
//! (`cargo xtask rescue-image`; `cargo xtask test` does both and sets
//! HOTCLONE_RESCUE_DIR). Never skips: without them it fails saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{lab, run, run_ok, source_ssh, workdir, Lab};

const VM_IP: &str = "198.51.100.50";

fn rescue_dir() -> PathBuf {
    let dir = std::env::var_os("HOTCLONE_RESCUE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::lab_dir().join("rescue"));
    assert!(
        dir.join("manifest.json").is_file(),
        "no rescue image in {} (HOTCLONE_RESCUE_DIR): build it with `cargo xtask rescue-image` (`cargo xtask test` does)",
        dir.display()
    );
    dir
}

/// A migration home with a launched VM; the VM is stopped and the source
/// link brought back up when dropped, whatever the test did.
struct Launched<'a> {
    lab: &'a Lab,
    home: PathBuf,
    name: String,
    source_ns: Option<String>,
}

impl Launched<'_> {
    fn hotclone(&self) -> Command {
        let mut c = self.lab.hotclone();
        c.env("HOTCLONE_HOME", &self.home)
            .env("HOTCLONE_RESCUE_DIR", rescue_dir());
        c
    }

    fn vm_dir(&self) -> PathBuf {
        self.home.join(&self.name).join("vm")
    }

    fn vm_json(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.vm_dir().join("vm.json")).unwrap())
            .unwrap()
    }

    /// A command on the rescue system, with the keys launch made for it.
    fn rescue_ssh(&self, command: &str) -> std::process::Output {
        let vm = self.vm_dir();
        run(self
            .lab
            .client_command("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                vm.join("known_hosts").display()
            ))
            .arg("-i")
            .arg(vm.join("id_ed25519"))
            .arg(format!("root@{VM_IP}"))
            .arg(command))
    }

    /// `hotclone clone debian12 --name NAME ARGS`, which may fail.
    fn try_clone(&self, args: &[&str]) -> std::process::Output {
        run(self
            .hotclone()
            .args(["clone", "--batch", "-F"])
            .arg(&self.lab.ssh_config)
            .args(["debian12", "--name", &self.name])
            .args(args))
    }

    fn take_source_down(&mut self, ns: &str) {
        run_ok(Command::new("ip").args(["netns", "exec", ns, "ip", "link", "set", "eth0", "down"]));
        self.source_ns = Some(ns.to_string());
    }
}

impl Drop for Launched<'_> {
    fn drop(&mut self) {
        let _ = run(self.hotclone().args(["launch", &self.name, "--stop"]));
        let console = self.vm_dir().join("console-disk.log");
        eprintln!(
            "-- the clone's console ({}):\n{}",
            console.display(),
            std::fs::read_to_string(&console).unwrap_or_default()
        );
        if let Some(ns) = &self.source_ns {
            let _ =
                run(Command::new("ip")
                    .args(["netns", "exec", ns, "ip", "link", "set", "eth0", "up"]));
            // The client still has the clone's MAC for the source's address.
            let _ = run(self
                .lab
                .client_command("ip")
                .args(["neigh", "flush", "all"]));
        }
    }
}

fn launch<'a>(lab: &'a Lab, work: &Path, name: &str) -> Launched<'a> {
    let launched = Launched {
        lab,
        home: work.join("home"),
        name: name.to_string(),
        source_ns: None,
    };
    let disk = work.join("disk.raw");
    let out = run_ok(
        launched
            .hotclone()
            .args(["launch", name, "--json", "--net", "bridge:br0,netns=hc-lan"])
            .arg("--disk")
            .arg(format!("{},size=4G", disk.display()))
            .args(["--ip", &format!("{VM_IP}/24")]),
    );
    let done: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(done["target"], format!("ssh://root@{VM_IP}"));
    launched
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the rescue system's disk holds now (partition table, signatures).
fn disk_signatures(l: &Launched) -> String {
    let out = l.rescue_ssh("wipefs --no-act /dev/vda; echo end");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn live_clone_into_a_launched_vm_boots_with_the_sources_identity() {
    let _one = common::one_at_a_time();
    let lab = lab();
    let source = lab.source("debian12");
    let work = workdir("live");
    let marker = format!("live-marker-{}", std::process::id());
    source_ssh(
        &lab,
        "debian12",
        &format!("echo {marker} > /root/hotclone-marker"),
    );
    let mut l = launch(&lab, &work, "live");
    let vm = l.vm_json();
    assert_eq!(vm["mode"], "rescue");

    // Refused, touching nothing: someone else's host key at the VM's address.
    let known = l.vm_dir().join("known_hosts");
    let real = std::fs::read_to_string(&known).unwrap();
    let impostor = work.join("impostor");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&impostor),
    );
    let impostor_key = std::fs::read_to_string(impostor.with_extension("pub")).unwrap();
    std::fs::write(&known, format!("{VM_IP} {impostor_key}")).unwrap();
    let out = l.try_clone(&[]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("host key"), "{}", stderr_of(&out));
    std::fs::write(&known, real).unwrap();
    assert!(
        !disk_signatures(&l).contains("gpt"),
        "the refused clone wrote to the disk"
    );

    // Refused: a disk the VM does not have.
    let out = l.try_clone(&["--target", &format!("ssh://root@{VM_IP},disk=/dev/vdb")]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("has no disk /dev/vdb"),
        "{}",
        stderr_of(&out)
    );

    // Refused: the disk has a mounted filesystem; it stays as it was.
    let setup = l.rescue_ssh("mkfs.ext4 -q -F /dev/vda && mkdir -p /mnt/x && mount /dev/vda /mnt/x && echo keep > /mnt/x/keep");
    assert!(setup.status.success());
    let out = l.try_clone(&[]);
    assert!(!out.status.success());
    let e = stderr_of(&out);
    assert!(
        e.contains("/dev/vda is in use") && e.contains("mounted on /mnt/x"),
        "{e}"
    );
    let kept = l.rescue_ssh("cat /mnt/x/keep && umount /mnt/x && wipefs -q -a /dev/vda");
    assert_eq!(String::from_utf8_lossy(&kept.stdout).trim(), "keep");

    // The clone, live into the VM.
    let started = Instant::now();
    let out = l.try_clone(&[]);
    assert!(
        out.status.success(),
        "the live clone failed: {}",
        stderr_of(&out)
    );
    eprintln!("live clone took {:.0} s", started.elapsed().as_secs_f64());
    let status = run_ok(l.hotclone().args(["status", "live", "--json"]));
    assert!(status.contains("\"ready\""), "{status}");
    // Re-hashed in the VM against the client's journal: nothing differs.
    let verified = run_ok(
        l.hotclone()
            .args(["verify", "live", "--target-only", "--json"]),
    );
    let verified: serde_json::Value = serde_json::from_str(&verified).unwrap();
    assert!(verified["checked"].as_u64().unwrap() > 10_000, "{verified}");
    assert_eq!(verified["differences"], serde_json::json!([]), "{verified}");

    // A sync pass while the rescue image's own agent is "another version":
    // the client uploads itself, and removes it again afterwards.
    let broken = l.rescue_ssh("printf '#!/bin/sh\\nexit 1\\n' > /usr/bin/hotclone");
    assert!(broken.status.success());
    source_ssh(
        &lab,
        "debian12",
        &format!("echo {marker}-sync > /root/hotclone-sync-marker"),
    );
    let out = run(l
        .hotclone()
        .args(["sync", "live", "--batch", "-F"])
        .arg(&lab.ssh_config));
    assert!(out.status.success(), "sync failed: {}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("uploading this hotclone"),
        "{}",
        stderr_of(&out)
    );
    let left = l.rescue_ssh("ls -A /run/hotclone 2>/dev/null | wc -l; mountpoint -q /mnt/target && echo mounted || echo unmounted");
    assert_eq!(
        String::from_utf8_lossy(&left.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "unmounted"]
    );

    // The VM boots the clone from its disk, the source off the network.
    l.take_source_down(&source.ns);
    run_ok(l.hotclone().args(["launch", "live", "--boot-disk"]));
    let deadline = Instant::now() + Duration::from_secs(420);
    let probe = loop {
        // The lab's strict known_hosts holds the source's host key: only a
        // clone that has it gets past the handshake.
        let out = run(lab
            .hotclone()
            .args(["probe", "--json", "--batch", "-F"])
            .arg(&lab.ssh_config)
            .arg("debian12"));
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the clone did not answer SSH on {} in time",
            source.ip
        );
        std::thread::sleep(Duration::from_secs(3));
    };
    let inv: serde_json::Value = serde_json::from_str(&probe).unwrap();
    assert_eq!(inv["hostname"], source.hostname);
    let eth0 = inv["network"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .expect("eth0 on the clone")
        .clone();
    let vm_mac = l.vm_json()["mac"].as_str().unwrap().to_string();
    assert_eq!(
        eth0["mac"].as_str().unwrap().to_lowercase(),
        vm_mac,
        "{eth0}"
    );
    assert!(eth0.to_string().contains(&source.ip), "{eth0}");
    let on_clone = source_ssh(
        &lab,
        "debian12",
        "cat /root/hotclone-marker /root/hotclone-sync-marker; findmnt -n -o SOURCE /; cat /root/.ssh/authorized_keys; ls /run/hotclone 2>&1 | head -1",
    );
    let lines: Vec<&str> = on_clone.lines().collect();
    assert_eq!(lines[0], marker);
    assert_eq!(lines[1], format!("{marker}-sync"));
    assert_eq!(lines[2], "/dev/vda2");
    assert!(
        !on_clone.contains("hotclone-client"),
        "the rescue login key is in the clone: {on_clone}"
    );
    assert!(on_clone.contains("No such file"), "{on_clone}");
}

#[test]
fn a_target_that_is_not_the_rescue_system_is_refused_and_left_clean() {
    let lab = lab();
    let work = workdir("not-rescue");
    let target = lab.source("debian12");
    let out = run(lab
        .hotclone()
        .env("HOTCLONE_HOME", work.join("home"))
        .args(["clone", "--batch", "-F"])
        .arg(&lab.ssh_config)
        .arg("--known-hosts")
        .arg(&lab.known_hosts)
        .arg("-i")
        .arg(&lab.id_ed25519)
        .args([
            "debian11",
            "--name",
            "not-rescue",
            "--target",
            &format!("ssh://root@{}", target.ip),
        ]));
    assert!(!out.status.success());
    let e = stderr_of(&out);
    assert!(e.contains("not running the hotclone rescue image"), "{e}");
    // Nothing of ours was put there.
    let left = source_ssh(&lab, "debian12", "ls -A /run/hotclone 2>/dev/null | wc -l");
    assert_eq!(left.trim(), "0");
    assert!(!work.join("home/not-rescue").exists());
}

#[test]
fn the_rescue_iso_boots_to_its_ssh_server() {
    let _one = common::one_at_a_time();
    let iso = rescue_dir().join("rescue.iso");
    assert!(
        iso.is_file(),
        "{} is missing (hotclone rescue build makes it unless --no-iso)",
        iso.display()
    );
    let work = workdir("iso");
    let console = work.join("console.log");
    let pidfile = work.join("qemu.pid");
    run_ok(
        Command::new("qemu-system-x86_64")
            .args([
                "-machine", "pc", "-m", "1024", "-display", "none", "-monitor", "none", "-nic",
                "none", "-cdrom",
            ])
            .arg(&iso)
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args(["-daemonize", "-pidfile"])
            .arg(&pidfile),
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let text = loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if text.contains("hotclone-rescue: ready") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    // The QEMU this test started (its pidfile).
    let _ = Command::new("kill").arg(pid.to_string()).status();
    assert!(
        text.contains("hotclone-rescue: ready"),
        "the ISO did not boot to the rescue system:\n{text}"
    );
    assert!(text.contains("hostkey=SHA256:"), "{text}");
}
