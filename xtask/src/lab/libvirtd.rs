//! The lab's libvirtd, from Debian's packages, run without systemd (LAB.md)
//! in the lab LAN's namespace, so a domain's `<interface type='bridge'>`
//! joins the lab's `br0`. Tests drive it with `virsh -c qemu:///system`.
//!
//! It runs in a private mount namespace of its own (`unshare --mount
//! --fork`, the PID recorded in `pids/libvirtd.pid`), where:
//! - `/etc/libvirt` is a copy in the lab directory, so the domains it
//!   defines are kept there and go with `lab down`; its `qemu.conf` turns
//!   off the private /dev per domain (which cannot carry the mount below)
//!   and virtlogd (QEMU's output goes to files);
//! - `/dev/kvm`, which this host has but cannot use (QEMU aborts under
//!   KVM), is covered by an empty read-only file. Otherwise libvirt sees a
//!   usable /dev/kvm, finds that its cached QEMU capabilities lack KVM,
//!   and probes QEMU again (about 50 s under TCG) at every define and
//!   start. Domains are of type `qemu` (TCG), as libvirt then offers.
//!
//! On failure `up` names the log (`logs/libvirtd.log`); `down` destroys
//! and undefines every `hotclone-*` domain, then stops libvirtd.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{netns, source};
use crate::sh;

pub const URI: &str = "qemu:///system";
const NAME: &str = "libvirtd";

const START_SH: &str = r#"set -e
d="$1"
rm -rf "$d/etc"
cp -a /etc/libvirt "$d/etc"
cat > "$d/etc/qemu.conf" <<'EOF'
# hotclone lab (xtask/src/lab/libvirtd.rs)
namespaces = []
stdio_handler = "file"
EOF
mount --bind "$d/etc" /etc/libvirt
if [ -e /dev/kvm ]; then
    : > "$d/no-kvm"
    mount --bind "$d/no-kvm" /dev/kvm
    mount -o remount,bind,ro /dev/kvm
fi
mkdir -p /var/log/libvirt
exec libvirtd
"#;

/// The user and groups `libvirt-daemon-system` would have made; without
/// `libvirt-qemu` libvirtd exits at start.
fn ensure_accounts() -> Result<()> {
    for group in ["libvirt-qemu", "libvirt", "kvm"] {
        if !sh::cmd("getent").args(["group", group]).succeeds() {
            sh::run("groupadd", &["-r", group])?;
        }
    }
    if !sh::cmd("getent")
        .args(["passwd", "libvirt-qemu"])
        .succeeds()
    {
        sh::run("useradd", &["-r", "-g", "libvirt-qemu", "libvirt-qemu"])?;
    }
    Ok(())
}

fn state_dir(lab: &Path) -> PathBuf {
    lab.join("libvirtd")
}

fn virsh(args: &[&str]) -> Result<String> {
    let mut all = vec!["-c", URI];
    all.extend_from_slice(args);
    sh::run("virsh", &all)
}

/// Start libvirtd and wait until `virsh` answers; returns its PID.
pub fn start(lab: &Path) -> Result<u32> {
    ensure_accounts()?;
    let dir = state_dir(lab);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = lab.join("logs").join(format!("{NAME}.log"));
    let logf = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let (mut cmd, shown) = sh::netns(netns::LAN_NS, "unshare")
        .args([
            "--mount",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c", START_SH, NAME])
        .arg(&dir)
        .into_command();
    cmd.stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .process_group(0);
    let pid = cmd
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?
        .id();
    fs::write(source::pid_file(lab, NAME), format!("{pid}\n"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if virsh(&["version"]).is_ok() {
            return Ok(pid);
        }
        if !source::pid_is_ours(pid) || Instant::now() > deadline {
            bail!(
                "libvirtd did not answer `virsh -c {URI} version`; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Whether the recorded libvirtd runs.
pub fn alive(lab: &Path) -> bool {
    source::read_pid(lab, NAME).is_some_and(source::pid_is_ours)
}

/// Destroy and undefine the domains tests left (`hotclone-*`), then stop
/// libvirtd with the lab's `stop_pid`.
pub fn stop(lab: &Path, stop_pid: impl Fn(u32) -> Result<()>) -> Result<()> {
    if let Some(pid) = source::read_pid(lab, NAME) {
        if source::pid_is_ours(pid) {
            let names = virsh(&["list", "--all", "--name"]).unwrap_or_default();
            for domain in names.lines().filter(|n| n.starts_with("hotclone-")) {
                let _ = virsh(&["destroy", domain]);
                let _ = virsh(&["undefine", domain]);
            }
        }
        stop_pid(pid)?;
    }
    let _ = fs::remove_file(source::pid_file(lab, NAME));
    let _ = fs::remove_dir_all(state_dir(lab));
    Ok(())
}
