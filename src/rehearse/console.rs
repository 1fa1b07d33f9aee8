//! Reading a booting clone's serial console: how far the boot got, and
//! whether it stopped somewhere it will not leave by itself (an initramfs
//! or emergency shell, a kernel panic, GRUB's rescue prompt). Pure
//! functions over the log's text, so the markers are tested on real
//! console output.

use serde::{Deserialize, Serialize};

/// How far a boot got, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reached {
    /// Nothing on the console yet (firmware, or a bootloader that does not
    /// write to the serial port).
    Nothing,
    /// The kernel prints.
    Kernel,
    /// The kernel started init: userspace runs.
    Userspace,
    /// A login prompt.
    Login,
}

impl Reached {
    pub fn describe(self) -> &'static str {
        match self {
            Reached::Nothing => "nothing on the serial console",
            Reached::Kernel => "the kernel started",
            Reached::Userspace => "userspace started",
            Reached::Login => "a login prompt",
        }
    }
}

/// Lines that mean the boot stopped and waits for a person, with what
/// each means for the user.
const STUCK: &[(&str, &str)] = &[
    ("Kernel panic - not syncing", "the kernel panicked"),
    ("VFS: Unable to mount root fs", "the kernel could not mount the root filesystem (its driver or the root= device is missing)"),
    ("Gave up waiting for root", "the initramfs did not find the root device (virtio_blk missing from the initrd, or root= names a device the VM lacks)"),
    ("Dropping to a shell", "the initramfs dropped to a shell"),
    ("(initramfs)", "the initramfs dropped to a shell"),
    ("dracut-initqueue[", "dracut waits for a device (see the lines above it)"),
    ("Entering emergency mode", "the clone's init entered emergency mode"),
    ("You are in emergency mode", "the clone's init entered emergency mode"),
    ("Give root password for maintenance", "the clone's init asks for the root password (emergency mode)"),
    ("dracut:/#", "dracut dropped to its emergency shell"),
    ("grub rescue>", "GRUB could not find its files (grub rescue prompt)"),
];

/// dracut's queue prints while it waits; only its timeout means stuck.
const DRACUT_TIMEOUT: &str = "Could not boot";

/// What the console shows so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub reached: Reached,
    /// The boot stopped: what it means, and the console line that says so.
    pub stuck: Option<(String, String)>,
}

/// Read a console log.
pub fn read(text: &str) -> Reading {
    let mut reached = Reached::Nothing;
    let mut stuck = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if reached < Reached::Kernel && (line.contains("Linux version ") || line.starts_with('[')) {
            reached = Reached::Kernel;
        }
        if reached < Reached::Userspace && is_userspace(line) {
            reached = Reached::Userspace;
        }
        if line.trim_end().ends_with("login:") {
            reached = Reached::Login;
        }
        if stuck.is_none() {
            for (marker, meaning) in STUCK {
                let hit = line.contains(marker)
                    && (*marker != "dracut-initqueue[" || line.contains(DRACUT_TIMEOUT));
                if hit {
                    stuck = Some((meaning.to_string(), line.trim().to_string()));
                    break;
                }
            }
        }
    }
    Reading { reached, stuck }
}

fn is_userspace(line: &str) -> bool {
    [
        "Run /sbin/init as init process",
        "Run /init as init process",
        "INIT: version",
        "Welcome to ",
        "systemd[1]:",
        "[  OK  ]",
        "Starting ",
        "Reached target",
    ]
    .iter()
    .any(|m| line.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Excerpts of real serial consoles: a bookworm clone booting under
    // QEMU (from this lab), and the shapes Debian's initramfs-tools and
    // systemd print when they stop.
    const BOOKWORM_OK: &str = "\
[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org)
[    2.114181] Run /init as init process
Loading, please wait...
Starting systemd-udevd version 252.39-1~deb12u1
[    9.482263] systemd[1]: systemd 252.39-1~deb12u1 running in system mode
Welcome to Debian GNU/Linux 12 (bookworm)!
[  OK  ] Reached target network.target - Network.

Debian GNU/Linux 12 web01 ttyS0

web01 login: ";

    const NO_VIRTIO: &str = "\
[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org)
[    2.114181] Run /init as init process
Loading, please wait...
Begin: Waiting for root file system ... Begin: Running /scripts/local-block ... done.
done.
Gave up waiting for root file system device.  Common problems:
 - Boot args (cat /proc/cmdline)
ALERT!  UUID=3f1c8a2e-5b7d-4e1a-9c3f-2a6b8d0e4f11 does not exist.  Dropping to a shell!
(initramfs) ";

    #[test]
    fn a_good_boot_reaches_the_login_prompt_and_is_not_stuck() {
        let r = read(BOOKWORM_OK);
        assert_eq!(r.reached, Reached::Login);
        assert_eq!(r.stuck, None);
    }

    #[test]
    fn an_initrd_without_virtio_is_stuck_in_the_initramfs_and_says_why() {
        let r = read(NO_VIRTIO);
        assert_eq!(r.reached, Reached::Userspace);
        let (why, line) = r.stuck.expect("stuck");
        assert!(why.contains("virtio_blk"), "{why}");
        assert!(line.starts_with("Gave up waiting"), "{line}");
    }

    #[test]
    fn emergency_mode_and_panics_are_stuck_dracut_waiting_is_not() {
        let r = read("[  OK  ] Reached target sysinit.target\nYou are in emergency mode. After logging in, type \"journalctl -xb\"\nGive root password for maintenance\n");
        assert!(r.stuck.unwrap().0.contains("emergency mode"));
        let r = read("[    3.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n");
        assert!(r.stuck.unwrap().0.contains("panicked"));
        let waiting =
            "[    4.2] dracut-initqueue[301]: Scanning devices vda1  for LVM logical volumes\n";
        assert_eq!(read(waiting).stuck, None);
        let timeout = "[  185.1] dracut-initqueue[301]: Warning: Could not boot.\n";
        assert!(read(timeout).stuck.is_some());
    }

    #[test]
    fn an_empty_console_reached_nothing() {
        assert_eq!(read("").reached, Reached::Nothing);
        assert_eq!(read("SeaBIOS (version 1.16.3)\n").reached, Reached::Nothing);
    }
}
