//! Kernel, init system, bootloader, hardware and running services.

use crate::probe::inventory::{Bootloader, BootloaderKind, Hardware, InitKind, InitSystem};

/// Non-empty lines, trimmed.
pub fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Kernel images in a `ls -1 /boot` listing: `vmlinuz-2.6.26-2-686` etc.
pub fn boot_images(ls_boot: &str) -> Vec<String> {
    lines(ls_boot)
        .into_iter()
        .filter(|f| f.starts_with("vmlinuz") || f.starts_with("vmlinux"))
        .collect()
}

/// `present` is the list of paths that exist (see `script::PRESENCE_GLOBS`).
pub fn detect_init(init_link: Option<&str>, present: &[&str], pid1: Option<&str>) -> InitSystem {
    let has = |p: &str| present.contains(&p);
    let link = init_link.map(str::trim).filter(|l| !l.is_empty());
    let systemd_running = has("/run/systemd/system");
    let (kind, evidence) = match link {
        Some(l) if l.contains("systemd") => (InitKind::Systemd, format!("/sbin/init -> {l}")),
        Some(l) if l.contains("busybox") => (InitKind::Busybox, format!("/sbin/init -> {l}")),
        Some(l) if l.contains("upstart") => (InitKind::Upstart, format!("/sbin/init -> {l}")),
        _ if systemd_running => (InitKind::Systemd, "/run/systemd/system exists".to_string()),
        _ if has("/sbin/initctl") => (
            InitKind::Upstart,
            "/sbin/initctl exists (upstart)".to_string(),
        ),
        _ if has("/etc/inittab") => (InitKind::Sysvinit, "/etc/inittab exists".to_string()),
        Some(l) => (InitKind::Unknown, format!("/sbin/init -> {l}")),
        None => (
            InitKind::Unknown,
            "no /sbin/init link, no /etc/inittab".to_string(),
        ),
    };
    let active = match kind {
        InitKind::Systemd => systemd_running,
        InitKind::Unknown => false,
        _ => pid1.is_some_and(|p| p == "init" || p == "busybox"),
    };
    InitSystem {
        kind,
        active,
        evidence,
    }
}

pub fn detect_bootloader(present: &[&str], grub_version: Option<&str>) -> Bootloader {
    let first = |paths: &[&str]| {
        paths
            .iter()
            .find(|p| present.contains(p))
            .map(|p| p.to_string())
    };
    let version = grub_version
        .and_then(|v| v.lines().next())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let grub2_config = first(&["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"]);
    let legacy_config = first(&[
        "/boot/grub/menu.lst",
        "/boot/grub/grub.conf",
        "/etc/grub.conf",
    ]);
    let installer = first(&[
        "/usr/sbin/grub-install",
        "/usr/sbin/grub2-install",
        "/sbin/grub-install",
    ]);
    let legacy_version = version.as_deref().is_some_and(|v| v.contains("0.9"));
    let (kind, config) = if grub2_config.is_some() {
        (BootloaderKind::Grub2, grub2_config)
    } else if legacy_config.is_some() {
        (BootloaderKind::GrubLegacy, legacy_config)
    } else if let Some(lilo) = first(&["/etc/lilo.conf"]) {
        (BootloaderKind::Lilo, Some(lilo))
    } else if let Some(ext) = first(&[
        "/boot/extlinux/extlinux.conf",
        "/boot/extlinux.conf",
        "/extlinux.conf",
        "/boot/syslinux/syslinux.cfg",
    ]) {
        (BootloaderKind::Extlinux, Some(ext))
    } else if installer.is_some() && legacy_version {
        (BootloaderKind::GrubLegacy, None)
    } else if installer.is_some() {
        (BootloaderKind::Grub2, None)
    } else {
        (BootloaderKind::None, None)
    };
    Bootloader {
        kind,
        config,
        version,
        uefi: present.contains(&"/sys/firmware/efi"),
    }
}

pub fn parse_hardware(cpuinfo: Option<&str>, meminfo: Option<&str>) -> Hardware {
    let cpus = cpuinfo
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count() as u32)
        .unwrap_or(0);
    let memory_bytes = meminfo
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    Hardware {
        cpus: cpus.max(1),
        memory_bytes,
    }
}

/// One process from a /proc/PID/stat line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub name: String,
}

/// Concatenated /proc/PID/stat lines. The name sits in parentheses and may
/// itself contain spaces and parentheses, so it ends at the last ')'.
pub fn parse_proc_stats(text: &str) -> Vec<Process> {
    text.lines()
        .filter_map(|line| {
            let open = line.find('(')?;
            let close = line.rfind(')')?;
            let pid = line[..open].trim().parse().ok()?;
            let name = line.get(open + 1..close)?.to_string();
            let mut rest = line.get(close + 1..)?.split_whitespace();
            let _state = rest.next()?;
            let ppid = rest.next()?.parse().ok()?;
            Some(Process { pid, ppid, name })
        })
        .collect()
}

/// Distinct user-space process names (kernel threads, children of pid 2, dropped).
pub fn process_names(procs: &[Process]) -> Vec<String> {
    let mut names: Vec<String> = procs
        .iter()
        .filter(|p| p.pid != 2 && p.ppid != 2 && p.pid != 0)
        .map(|p| p.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Running units from `systemctl list-units --type=service --state=running --no-legend --plain`.
pub fn parse_systemd_units(text: &str) -> Vec<String> {
    let mut units: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|u| u.strip_suffix(".service"))
        .map(str::to_string)
        .collect();
    units.sort();
    units
}

/// Init scripts whose daemon is running: `ssh` matches `sshd`, `mysql`
/// matches `mysqld`, `apache2` matches `apache2`. A heuristic for sysvinit
/// and busybox systems, which have no service manager to ask.
pub fn sysv_running(init_scripts: &[String], processes: &[String]) -> Vec<String> {
    let matches = |script: &str, process: &str| {
        process == script
            || process.strip_suffix('d') == Some(script)
            || (script.len() >= 4 && process.starts_with(script))
    };
    init_scripts
        .iter()
        .filter(|s| !s.contains('.') && s.as_str() != "README" && s.as_str() != "skeleton")
        .filter(|s| processes.iter().any(|p| matches(s, p)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_detection_systemd_sysv_busybox_upstart() {
        assert_eq!(
            detect_init(Some("/lib/systemd/systemd\n"), &[], Some("sshd")).kind,
            InitKind::Systemd
        );
        let sysv = detect_init(None, &["/etc/inittab"], Some("init"));
        assert_eq!((sysv.kind, sysv.active), (InitKind::Sysvinit, true));
        assert_eq!(
            detect_init(Some("/bin/busybox"), &[], None).kind,
            InitKind::Busybox
        );
        assert_eq!(
            detect_init(None, &["/sbin/initctl", "/etc/inittab"], None).kind,
            InitKind::Upstart
        );
        let running = detect_init(None, &["/run/systemd/system"], Some("systemd"));
        assert_eq!((running.kind, running.active), (InitKind::Systemd, true));
    }

    #[test]
    fn bootloaders_legacy_and_modern() {
        let legacy = detect_bootloader(
            &["/boot/grub/menu.lst", "/usr/sbin/grub-install"],
            Some("grub-install (GNU GRUB 0.97)\n"),
        );
        assert_eq!(
            (legacy.kind, legacy.config.as_deref()),
            (BootloaderKind::GrubLegacy, Some("/boot/grub/menu.lst"))
        );
        let rhel = detect_bootloader(&["/boot/grub/grub.conf", "/sbin/grub-install"], None);
        assert_eq!(rhel.kind, BootloaderKind::GrubLegacy);
        let g2 = detect_bootloader(
            &["/boot/grub/grub.cfg", "/boot/grub/menu.lst"],
            Some("grub-install (GRUB) 2.06-13\n"),
        );
        assert_eq!(
            (g2.kind, g2.version.as_deref()),
            (BootloaderKind::Grub2, Some("grub-install (GRUB) 2.06-13"))
        );
        let unconfigured = detect_bootloader(
            &["/usr/sbin/grub-install"],
            Some("grub-install (GRUB) 2.06-13\n"),
        );
        assert_eq!(
            (unconfigured.kind, unconfigured.config),
            (BootloaderKind::Grub2, None)
        );
        assert_eq!(
            detect_bootloader(&["/etc/lilo.conf"], None).kind,
            BootloaderKind::Lilo
        );
        assert_eq!(detect_bootloader(&[], None).kind, BootloaderKind::None);
    }

    #[test]
    fn proc_stat_names_with_spaces_and_kernel_threads() {
        let procs = parse_proc_stats(
            "1 (init) S 0 1 1 0\n2 (kthreadd) S 0 0 0 0\n7 (ksoftirqd/0) S 2 0 0 0\n812 (sshd) S 1 812 812 0\n900 (my (odd) daemon) S 1 900 900 0\n",
        );
        assert_eq!(
            procs[4],
            Process {
                pid: 900,
                ppid: 1,
                name: "my (odd) daemon".into()
            }
        );
        assert_eq!(
            process_names(&procs),
            vec!["init", "my (odd) daemon", "sshd"]
        );
    }

    #[test]
    fn sysv_services_match_their_daemons() {
        let scripts: Vec<String> = [
            "ssh",
            "mysql",
            "apache2",
            "cron",
            "rc",
            "hostname.sh",
            "nfs-common",
        ]
        .map(String::from)
        .to_vec();
        let procs: Vec<String> = ["sshd", "mysqld", "apache2", "rcu_sched", "init"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            sysv_running(&scripts, &procs),
            vec!["ssh", "mysql", "apache2"]
        );
    }

    #[test]
    fn hardware_from_proc() {
        let hw = parse_hardware(
            Some("processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\n"),
            Some("MemTotal:        2048000 kB\nMemFree: 1 kB\n"),
        );
        assert_eq!((hw.cpus, hw.memory_bytes), (2, 2048000 * 1024));
    }
}
