//! Stopping, starting and checking services by a machine's own init: one
//! [`ServiceManager`] per init, chosen in [`for_source`] / [`for_clone`].
//! Every method returns a shell command for the machine's `sh`; running
//! it is the caller's job, so these are pure and tested as text.
//!
//! Service names are checked ([`valid_name`]) before they reach a command.

use crate::probe::{InitKind, InitSystem};

/// How one init system controls services.
pub trait ServiceManager: Send + Sync {
    fn name(&self) -> &'static str;
    /// Exits 0 when `service` runs.
    fn is_running(&self, service: &str) -> String;
    fn stop(&self, service: &str) -> String;
    fn start(&self, service: &str) -> String;
    /// Prints the running services, one name per line.
    fn list_running(&self) -> String;
}

/// systemd as PID 1.
pub struct Systemd;
/// Upstart (its jobs, and the sysvinit scripts it runs).
pub struct Upstart;
/// sysvinit-style scripts in /etc/init.d (sysvinit, busybox init, and a
/// systemd installation that is not PID 1).
pub struct SysvScripts;

impl ServiceManager for Systemd {
    fn name(&self) -> &'static str {
        "systemd"
    }
    fn is_running(&self, s: &str) -> String {
        format!("systemctl is-active --quiet {s}")
    }
    fn stop(&self, s: &str) -> String {
        format!("systemctl stop {s}")
    }
    fn start(&self, s: &str) -> String {
        format!("systemctl start {s}")
    }
    fn list_running(&self) -> String {
        "systemctl list-units --type=service --state=running --no-legend --plain | awk '{sub(/\\.service$/, \"\", $1); print $1}'".into()
    }
}

impl ServiceManager for Upstart {
    fn name(&self) -> &'static str {
        "upstart"
    }
    fn is_running(&self, s: &str) -> String {
        format!("if [ -e /etc/init/{s}.conf ]; then status {s} 2>/dev/null | grep -q start/running; else /etc/init.d/{s} status >/dev/null 2>&1; fi")
    }
    fn stop(&self, s: &str) -> String {
        format!("if [ -e /etc/init/{s}.conf ]; then stop {s}; else /etc/init.d/{s} stop; fi")
    }
    fn start(&self, s: &str) -> String {
        format!("if [ -e /etc/init/{s}.conf ]; then start {s}; else /etc/init.d/{s} start; fi")
    }
    fn list_running(&self) -> String {
        format!(
            "initctl list 2>/dev/null | awk '/start\\/running/ {{print $1}}'; {}",
            SysvScripts.list_running()
        )
    }
}

impl ServiceManager for SysvScripts {
    fn name(&self) -> &'static str {
        "sysvinit scripts"
    }
    fn is_running(&self, s: &str) -> String {
        format!("/etc/init.d/{s} status >/dev/null 2>&1")
    }
    fn stop(&self, s: &str) -> String {
        format!("/etc/init.d/{s} stop")
    }
    fn start(&self, s: &str) -> String {
        format!("/etc/init.d/{s} start")
    }
    fn list_running(&self) -> String {
        "for f in /etc/init.d/*; do n=${f##*/}; case $n in README|rc|rcS|skeleton|*.sh) continue;; esac; [ -x \"$f\" ] && \"$f\" status >/dev/null 2>&1 && echo \"$n\"; done; true".into()
    }
}

/// The manager for the running source: its init as probed. An installed
/// systemd that is not PID 1 cannot start units; its scripts can.
pub fn for_source(init: &InitSystem) -> Box<dyn ServiceManager> {
    match (init.kind, init.active) {
        (InitKind::Systemd, true) => Box::new(Systemd),
        (InitKind::Upstart, _) => Box::new(Upstart),
        _ => Box::new(SysvScripts),
    }
}

/// The manager on the booted clone: there the installed init is PID 1.
pub fn for_clone(init: &InitSystem) -> Box<dyn ServiceManager> {
    match init.kind {
        InitKind::Systemd => Box::new(Systemd),
        InitKind::Upstart => Box::new(Upstart),
        _ => Box::new(SysvScripts),
    }
}

/// A service name is safe to put in a command: letters, digits and
/// `@ . _ - :`, not starting with `-` or `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '-' | ':'))
}

/// What `--quiesce all` leaves running: the way back in (SSH), the
/// network, and the init's own machinery. Everything else is stopped,
/// cron and syslog too (they write files the final sync would chase).
pub fn keep_running(name: &str) -> bool {
    const KEEP: &[&str] = &[
        "ssh",
        "sshd",
        "dropbear",
        "openssh-server",
        "networking",
        "network",
        "NetworkManager",
        "ifup@",
        "dbus",
        "udev",
        "udevd",
        "getty",
        "serial-getty",
        "console-getty",
        "user@",
        "systemd-",
    ];
    KEEP.iter().any(|k| {
        if k.ends_with(['-', '@']) {
            name.starts_with(k)
        } else {
            name == *k || name.starts_with(&format!("{k}@"))
        }
    })
}

/// `--quiesce all`: the running services to stop, in the order listed
/// (names that are not safe to name in a command are left out).
pub fn quiesce_all(listed: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in listed.lines().map(str::trim) {
        if valid_name(name) && !keep_running(name) && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(kind: InitKind, active: bool) -> InitSystem {
        InitSystem {
            kind,
            active,
            evidence: String::new(),
        }
    }

    #[test]
    fn the_manager_follows_the_init_that_runs() {
        assert_eq!(for_source(&init(InitKind::Systemd, true)).name(), "systemd");
        // Installed but not PID 1 (a chroot, a container): its scripts.
        assert_eq!(
            for_source(&init(InitKind::Systemd, false)).name(),
            "sysvinit scripts"
        );
        assert_eq!(for_source(&init(InitKind::Upstart, true)).name(), "upstart");
        assert_eq!(
            for_source(&init(InitKind::Sysvinit, true)).name(),
            "sysvinit scripts"
        );
        // On the booted clone the installed init is PID 1.
        assert_eq!(for_clone(&init(InitKind::Systemd, false)).name(), "systemd");
    }

    #[test]
    fn commands_name_the_service() {
        assert_eq!(Systemd.stop("apache2"), "systemctl stop apache2");
        assert_eq!(SysvScripts.start("apache2"), "/etc/init.d/apache2 start");
        assert!(Upstart.is_running("mysql").contains("/etc/init/mysql.conf"));
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in ["", "-x", ".x", "a b", "a;b", "$(id)", "a/b", "x`y`"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in ["apache2", "getty@tty1", "php7.4-fpm", "my_svc"] {
            assert!(valid_name(good), "{good:?}");
        }
    }

    #[test]
    fn quiesce_all_keeps_the_way_back_in() {
        let listed = "ssh\napache2\nsystemd-journald\ndbus\nmysql\ngetty@tty1\napache2\ncron\nbad name\nnetworking\n";
        assert_eq!(quiesce_all(listed), vec!["apache2", "mysql", "cron"]);
    }
}
