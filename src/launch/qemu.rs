//! QEMU direct: the command line of a migration's VM, starting it in the
//! background (`-daemonize`, with a pidfile), its tap device, and stopping
//! it. Only a process whose command line is QEMU's with this VM's disk is
//! ever signalled.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{io, BootMode, LaunchError, NetSpec, VmFiles, VmState};
use crate::plan::ImageFormat;
use crate::rescue::RescueImage;

pub const QEMU: &str = "qemu-system-x86_64";

/// Run `program args` (inside `netns` when given); its output on failure.
pub(super) fn run(
    netns: Option<&str>,
    program: &str,
    args: &[String],
    package: &'static str,
) -> Result<String, LaunchError> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args);
    let shown = format!(
        "{}{program} {}",
        netns
            .map(|n| format!("ip netns exec {n} "))
            .unwrap_or_default(),
        args.join(" ")
    );
    let out = cmd.output().map_err(|source| LaunchError::Missing {
        command: shown.clone(),
        package,
        source,
    })?;
    if !out.status.success() {
        return Err(LaunchError::Command {
            command: shown,
            output: format!(
                "{}{} ({})",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

pub fn create_disk(path: &Path, format: ImageFormat, size: u64) -> Result<(), LaunchError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    qemu_img_create(&[
        "-f",
        format.name(),
        &path.display().to_string(),
        &size.to_string(),
    ])
}

/// A qcow2 overlay over `backing` (its format given, so qemu-img never
/// probes it).
pub fn create_overlay(
    backing: &Path,
    backing_format: ImageFormat,
    overlay: &Path,
) -> Result<(), LaunchError> {
    qemu_img_create(&[
        "-f",
        "qcow2",
        "-F",
        backing_format.name(),
        "-b",
        &backing.display().to_string(),
        &overlay.display().to_string(),
    ])
}

/// `qemu-img create -q ARGS`.
fn qemu_img_create(args: &[&str]) -> Result<(), LaunchError> {
    let mut all = vec!["create".to_string(), "-q".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    run(None, "qemu-img", &all, "qemu-utils").map(|_| ())
}

/// The tap device name for a migration (IFNAMSIZ allows 15 characters).
pub fn tap_name(migration: &str) -> String {
    format!("hct-{}", &blake3::hash(migration.as_bytes()).to_hex()[..8])
}

/// True when `pid` is a QEMU whose command line names `disk`.
pub fn is_our_qemu(pid: i32, disk: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let disk = disk.as_os_str().as_encoded_bytes();
    args.first().is_some_and(|a| a.ends_with(QEMU.as_bytes()))
        && args
            .iter()
            .any(|a| a.windows(disk.len()).any(|w| w == disk))
}

pub(super) fn boot_mode(rescue: Option<&RescueImage>) -> BootMode {
    match rescue {
        Some(_) => BootMode::Rescue,
        None => BootMode::Disk,
    }
}

/// The rescue kernel's command line: serial console, and the staging
/// address when it is static.
pub(super) fn rescue_cmdline(state: &VmState) -> String {
    let mut cmdline = String::from("console=ttyS0,115200 vsyscall=emulate panic=10 loglevel=4");
    if let Some(ip) = &state.staging_ip {
        cmdline.push(' ');
        cmdline.push_str(&ip.cmdline());
    }
    cmdline
}

/// QEMU's arguments for `state` (rescue boot when `rescue` is given).
pub fn args(state: &VmState, files: &VmFiles, rescue: Option<&RescueImage>) -> Vec<String> {
    let fmt = state.format.name();
    let mode = boot_mode(rescue);
    let mut a = strings(&[
        "-name",
        &format!("hotclone-{}", state.name),
        "-machine",
        "pc",
        "-display",
        "none",
        "-monitor",
        "none",
    ]);
    a.extend(strings(&[
        "-m",
        &state.memory_mib.to_string(),
        "-smp",
        &state.cpus.to_string(),
    ]));
    a.extend(strings(&[
        "-drive",
        &format!(
            "file={},format={fmt},if=virtio,cache=writeback{}",
            state.disk.display(),
            state
                .drive_options
                .iter()
                .map(|o| format!(",{o}"))
                .collect::<String>()
        ),
        "-netdev",
        &format!("tap,id=net0,ifname={},script=no,downscript=no", state.tap),
        "-device",
        &format!("virtio-net-pci,netdev=net0,mac={}", state.mac),
        "-serial",
        &format!("file:{}", files.console(mode).display()),
        "-daemonize",
        "-pidfile",
        &files.pidfile().display().to_string(),
    ]));
    match rescue {
        Some(_) => {
            let cmdline = rescue_cmdline(state);
            a.extend(strings(&[
                "-kernel",
                &rescue
                    .map(|r| r.kernel().display().to_string())
                    .unwrap_or_default(),
                "-initrd",
                &files.initrd().display().to_string(),
                "-append",
                &cmdline,
            ]));
        }
        None => a.extend(strings(&["-boot", "order=c"])),
    }
    a
}

/// Start QEMU for `state` in the background and record its pid.
pub fn start(
    state: &mut VmState,
    files: &VmFiles,
    rescue: Option<&RescueImage>,
) -> Result<(), LaunchError> {
    let netns = state.net.netns().map(str::to_string);
    let ns = netns.as_deref();
    match &state.net {
        NetSpec::Tap { tap, .. } => {
            state.tap = tap.clone();
            state.tap_created = false;
        }
        NetSpec::Bridge { bridge, .. } => {
            let tap = tap_name(&state.name);
            let _ = run(ns, "ip", &strings(&["link", "del", &tap]), "iproute2");
            run(
                ns,
                "ip",
                &strings(&["tuntap", "add", "dev", &tap, "mode", "tap"]),
                "iproute2",
            )?;
            let up = run(
                ns,
                "ip",
                &strings(&["link", "set", &tap, "master", bridge]),
                "iproute2",
            )
            .and_then(|_| run(ns, "ip", &strings(&["link", "set", &tap, "up"]), "iproute2"));
            if let Err(e) = up {
                let _ = run(ns, "ip", &strings(&["link", "del", &tap]), "iproute2");
                return Err(e);
            }
            state.tap = tap;
            state.tap_created = true;
        }
    }
    let mode = boot_mode(rescue);
    let _ = std::fs::remove_file(files.console(mode));
    let _ = std::fs::remove_file(files.pidfile());
    if let Err(e) = run(ns, QEMU, &args(state, files, rescue), "qemu-system-x86") {
        remove_tap(state);
        return Err(e);
    }
    let pid = std::fs::read_to_string(files.pidfile())
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .ok_or_else(|| LaunchError::Command {
            command: QEMU.into(),
            output: format!(
                "it started but wrote no pid to {}",
                files.pidfile().display()
            ),
        })?;
    state.pid = Some(pid);
    state.mode = mode;
    Ok(())
}

fn remove_tap(state: &mut VmState) {
    if state.tap_created {
        let _ = run(
            state.net.netns(),
            "ip",
            &strings(&["link", "del", &state.tap]),
            "iproute2",
        );
        state.tap_created = false;
    }
}

/// Stop the VM: SIGTERM (QEMU exits cleanly, flushing its disk), SIGKILL
/// after 15 s; then remove the tap device if it is ours.
pub fn stop(state: &mut VmState) -> Result<(), LaunchError> {
    if let Some(pid) = state.pid {
        if is_our_qemu(pid, &state.disk) {
            // SAFETY: kill(2) on a pid checked just above to be our QEMU.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let started = Instant::now();
            while is_our_qemu(pid, &state.disk) {
                if started.elapsed() > Duration::from_secs(15) {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    state.pid = None;
    remove_tap(state);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::StagingIp;

    fn state() -> VmState {
        VmState {
            name: "web01".into(),
            disk: "/vm/web01.qcow2".into(),
            format: ImageFormat::Qcow2,
            size_bytes: 8 << 30,
            net: NetSpec::Bridge {
                bridge: "br0".into(),
                netns: None,
            },
            tap: "hct-1".into(),
            tap_created: true,
            mac: "52:54:00:01:02:03".into(),
            staging_ip: Some("192.0.2.50/24".parse::<StagingIp>().unwrap()),
            memory_mib: 2048,
            cpus: 2,
            pid: None,
            mode: BootMode::Rescue,
            rescue_host_key: String::new(),
            rescue_agent_build: String::new(),
            drive_options: Vec::new(),
            hypervisor: Default::default(),
        }
    }

    #[test]
    fn rescue_boot_gets_kernel_initrd_and_address_disk_boot_does_not() {
        let files = VmFiles {
            dir: "/m/web01/vm".into(),
        };
        let rescue = RescueImage {
            dir: "/r".into(),
            manifest: crate::rescue::Manifest {
                recipe_hash: String::new(),
                kernel_release: String::new(),
                agent_build: String::new(),
                kernel_bytes: 0,
                initrd_bytes: 0,
                iso_bytes: None,
                base_build_seconds: 0,
            },
        };
        let a = args(&state(), &files, Some(&rescue)).join(" ");
        assert!(
            a.contains("-kernel /r/vmlinuz -initrd /m/web01/vm/initrd.img"),
            "{a}"
        );
        assert!(a.contains("hotclone.ip=192.0.2.50/24"), "{a}");
        assert!(a.contains("vsyscall=emulate"), "{a}");
        assert!(
            a.contains("file=/vm/web01.qcow2,format=qcow2,if=virtio"),
            "{a}"
        );
        assert!(a.contains("mac=52:54:00:01:02:03"), "{a}");
        assert!(a.contains("file:/m/web01/vm/console-rescue.log"), "{a}");
        let d = args(&state(), &files, None).join(" ");
        assert!(!d.contains("-kernel") && d.contains("-boot order=c"), "{d}");
        assert!(d.contains("console-disk.log"), "{d}");
        // Without a VGA device GRUB on the converted disk stalled before
        // the kernel (nothing on the serial console): keep QEMU's default.
        assert!(
            !a.contains("-vga none") && !d.contains("-nodefaults"),
            "{d}"
        );
        // No secrets on QEMU's command line: keys travel in the initrd file.
        assert!(!a.contains("PRIVATE") && !a.contains("ssh-ed25519"));
    }

    #[test]
    fn tap_names_fit_ifnamsiz_and_macs_are_local() {
        assert!(tap_name("a-very-long-migration-name-indeed").len() <= 15);
        assert_ne!(tap_name("a"), tap_name("b"));
        let mac = crate::launch::random_mac();
        assert!(mac.starts_with("52:54:00:") && mac.len() == 17, "{mac}");
        assert!(!is_our_qemu(std::process::id() as i32, Path::new("/vm/x")));
    }
}
