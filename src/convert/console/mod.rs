//! Login consoles: the VM has a VGA console (`tty1`) and a serial one
//! (`ttyS0` at 115200, where the kernel's `console=ttyS0,115200` points),
//! and no Xen console (`hvc0`, `xvc0`). A Xen guest often runs its only
//! getty on the Xen console, so the clone would boot to a login prompt
//! nobody can reach. Each init system's getty configuration gains what it
//! lacks:
//! - sysvinit's `/etc/inittab` ([`inittab`]): getty lines for tty1 and
//!   ttyS0; Xen console lines are commented out (init would respawn them
//!   forever on a device that does not exist);
//! - upstart's job files ([`upstart`], Ubuntu): `tty1.conf`/`ttyS0.conf`
//!   in `/etc/init` (or `/etc/event.d` before Ubuntu 9.10) are created
//!   when the guest has getty jobs there;
//! - systemd ([`systemd`]): `getty@tty1` and `serial-getty@ttyS0` are
//!   enabled by their symlinks in `getty.target.wants`;
//! - `/etc/securetty` ([`securetty`]) lists ttyS0 (and tty1), so root can
//!   log in there (RHEL 5 refuses root on a console it does not list).
//!
//! What exists is never removed: a getty the source had on tty1 or ttyS0
//! stays as it was. On failure (a file that cannot be written) conversion
//! stops with the path, like every other rewrite.

pub mod inittab;
pub mod securetty;
pub mod systemd;
pub mod upstart;

/// The serial console's speed, as on the kernel command line.
pub const SERIAL_BAUD: u32 = 115_200;

/// Whether a device name is a Xen console.
pub fn is_xen_console(dev: &str) -> bool {
    let d = dev.trim_start_matches("/dev/");
    d.starts_with("hvc") || d.starts_with("xvc")
}
