//! Booting a disk image under QEMU (TCG) on an isolated segment of its own,
//! so a clone can take its source's IP address while the source keeps
//! running in the main lab. The segment: namespace `hc-boot` with bridge
//! `br0`, a client namespace `hc-bootcli` (198.51.100.3) and the VM's tap.
//! Everything is removed when the `BootedVm` is dropped; the VM's serial
//! console is kept in a log file and printed when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BOOT_NS: &str = "hc-boot";
pub const BOOT_CLIENT_NS: &str = "hc-bootcli";
pub const BOOT_CLIENT_IP: &str = "198.51.100.3/24";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct BootedVm {
    child: Child,
    pub console: PathBuf,
}

impl BootedVm {
    /// Boot `image` (qcow2 or raw; never written: -snapshot) with 1 GiB
    /// and 2 vCPUs, a virtio disk and a virtio NIC on the boot segment.
    pub fn boot(image: &Path, format: &str, console: &Path) -> BootedVm {
        teardown();
        ip(&["netns", "add", BOOT_NS]);
        ip(&["netns", "add", BOOT_CLIENT_NS]);
        ip(&["-n", BOOT_NS, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", BOOT_NS, "link", "set", "br0", "up"]);
        ip(&["-n", BOOT_NS, "link", "set", "lo", "up"]);
        ip(&["-n", BOOT_CLIENT_NS, "link", "set", "lo", "up"]);
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            BOOT_CLIENT_NS,
            "type",
            "veth",
            "peer",
            "name",
            "v-bootcli",
            "netns",
            BOOT_NS,
        ]);
        ip(&[
            "-n",
            BOOT_NS,
            "link",
            "set",
            "v-bootcli",
            "master",
            "br0",
            "up",
        ]);
        ip(&[
            "-n",
            BOOT_CLIENT_NS,
            "addr",
            "add",
            BOOT_CLIENT_IP,
            "dev",
            "eth0",
        ]);
        ip(&["-n", BOOT_CLIENT_NS, "link", "set", "eth0", "up"]);
        ip(&["-n", BOOT_NS, "tuntap", "add", "tapvm", "mode", "tap"]);
        ip(&["-n", BOOT_NS, "link", "set", "tapvm", "master", "br0", "up"]);
        let _ = std::fs::remove_file(console);
        let child = Command::new("ip")
            .args(["netns", "exec", BOOT_NS, "qemu-system-x86_64", "-machine", "pc", "-m", "1024", "-smp", "2"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot", "-snapshot"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-drive")
            .arg(format!("file={},if=virtio,format={format}", image.display()))
            .args(["-netdev", "tap,id=n0,ifname=tapvm,script=no,downscript=no"])
            .args(["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:c1:0e:01"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-x86_64 (apt-get install qemu-system-x86; cargo xtask test installs it)");
        BootedVm {
            child,
            console: console.to_path_buf(),
        }
    }

    pub fn console_text(&self) -> String {
        console_text(&self.console)
    }

    /// Wait until the console shows `marker`; panics with the console log.
    pub fn wait_for_console(&mut self, marker: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.console_text().contains(marker) {
                return start.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "QEMU exited ({status}) before {marker:?}. Console:\n{}",
                    self.console_text()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "no {marker:?} on the console after {timeout:?}. Console:\n{}",
            self.console_text()
        );
    }

    /// A command run in the boot segment's client namespace.
    pub fn client_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", BOOT_CLIENT_NS]).arg(program);
        cmd
    }
}

impl Drop for BootedVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- VM console ({}) ---\n{}",
                self.console.display(),
                self.console_text()
            );
        }
        teardown();
    }
}

/// A serial console log as text (empty while there is none).
fn console_text(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

fn teardown() {
    for ns in [BOOT_CLIENT_NS, BOOT_NS] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

/// A lab source that runs as a VM (`vm_disks` in lab.json), booted from
/// its own disks' MBR on the lab bridge with the source's MAC, so it
/// answers on its address as the chroot sources do. `-snapshot`: the
/// disks are the lab cache's. Stopped, and its tap removed, when dropped.
pub struct SourceVm {
    child: Child,
    ns: String,
    tap: String,
    pub console: PathBuf,
}

impl SourceVm {
    pub fn boot(source: &super::LabSource, console: &Path) -> SourceVm {
        assert!(
            !source.vm_disks.is_empty(),
            "{} is not a VM source (no vm_disks in lab.json)",
            source.name
        );
        let tap = format!("tap-{}", source.name.replace('-', ""));
        let _ = Command::new("ip")
            .args(["-n", &source.ns, "link", "del", &tap])
            .output();
        ip(&["-n", &source.ns, "tuntap", "add", &tap, "mode", "tap"]);
        ip(&["-n", &source.ns, "link", "set", &tap, "master", "br0", "up"]);
        let _ = std::fs::remove_file(console);
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &source.ns,
            "qemu-system-x86_64",
            "-machine",
            "pc",
            "-m",
            "1024",
            "-smp",
            "2",
        ])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-snapshot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()));
        for disk in &source.vm_disks {
            cmd.arg("-drive")
                .arg(format!("file={},if=virtio,format=raw", disk.display()));
        }
        let child = cmd
            .args([
                "-netdev",
                &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            ])
            .args([
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={}", source.mac),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-x86_64");
        SourceVm {
            child,
            ns: source.ns.clone(),
            tap,
            console: console.to_path_buf(),
        }
    }

    pub fn console_text(&self) -> String {
        console_text(&self.console)
    }

    /// Wait until `ready` (e.g. an SSH command) succeeds; panics with the
    /// console log when the VM exits or `timeout` passes.
    pub fn wait_until(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if ready() {
                return start.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the source VM exited ({status}). Console:\n{}",
                    self.console_text()
                );
            }
            std::thread::sleep(Duration::from_secs(3));
        }
        panic!(
            "the source VM was not ready after {timeout:?}. Console:\n{}",
            self.console_text()
        );
    }
}

impl Drop for SourceVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- source VM console ({}) ---\n{}",
                self.console.display(),
                self.console_text()
            );
        }
        let _ = Command::new("ip")
            .args(["-n", &self.ns, "link", "del", &self.tap])
            .output();
    }
}
