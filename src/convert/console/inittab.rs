//! sysvinit's `/etc/inittab`: the getty lines. Only an inittab that runs
//! gettys (a `respawn` line naming a getty, active or commented) is
//! touched, so the leftover inittab of an upstart or systemd guest stays
//! as it is.
//! - A getty on a Xen console (`co:2345:respawn:/sbin/agetty xvc0 9600
//!   vt100-nav`) is commented out with `# hotclone: no Xen console in the
//!   VM: `.
//! - tty1 gets a getty unless one runs there: a commented-out tty1 line
//!   is enabled again, else the family's line is added.
//! - ttyS0 gets a getty at 115200 unless one runs there.

use super::{is_xen_console, SERIAL_BAUD};
use crate::convert::{map_lines, ConvertContext};
use crate::probe::DistroFamily;

pub struct Inittab;

pub const PATH: &str = "etc/inittab";
pub const XEN_COMMENT: &str = "# hotclone: no Xen console in the VM: ";

one_file_rewriter!(Inittab, "inittab", PATH, false, rewrite);

/// An inittab entry `id:runlevels:action:process`.
struct Entry<'a> {
    id: &'a str,
    action: &'a str,
    process: &'a str,
}

fn entry(line: &str) -> Option<Entry<'_>> {
    let mut f = line.trim().splitn(4, ':');
    let id = f.next()?;
    let _levels = f.next()?;
    let action = f.next()?;
    let process = f.next()?;
    Some(Entry {
        id,
        action,
        process,
    })
}

/// The tty a getty entry serves: the argument naming a device.
fn getty_tty(e: &Entry<'_>) -> Option<String> {
    if !matches!(e.action, "respawn" | "once") {
        return None;
    }
    let mut words = e.process.split_whitespace();
    let prog = words.next()?;
    if !prog.contains("getty") {
        return None;
    }
    words
        .filter(|w| !w.starts_with('-'))
        .map(|w| w.trim_start_matches("/dev/"))
        .find(|w| {
            w.starts_with("tty") || w.starts_with("hvc") || w.starts_with("xvc") || *w == "console"
        })
        .map(str::to_string)
}

/// The lines the family writes for a getty.
fn getty_line(family: DistroFamily, id: &str, tty: &str) -> String {
    let serial = tty.starts_with("ttyS");
    match (family, serial) {
        (DistroFamily::Debian, false) => format!("{id}:2345:respawn:/sbin/getty 38400 {tty}"),
        (DistroFamily::Debian, true) => {
            format!("{id}:2345:respawn:/sbin/getty -L {tty} {SERIAL_BAUD} vt100")
        }
        (DistroFamily::Suse, false) => format!("{id}:2345:respawn:/sbin/mingetty {tty}"),
        (DistroFamily::Suse, true) => {
            format!("{id}:12345:respawn:/sbin/agetty -L {SERIAL_BAUD} {tty} vt102")
        }
        (_, false) => format!("{id}:2345:respawn:/sbin/mingetty {tty}"),
        (_, true) => format!("{id}:2345:respawn:/sbin/agetty -L {tty} {SERIAL_BAUD} vt100"),
    }
}

/// A commented-out line's text after the `#`.
fn commented(l: &str) -> Option<&str> {
    l.trim_start().strip_prefix('#').map(str::trim_start)
}

/// The pure rewrite.
pub fn rewrite(text: &str, ctx: &ConvertContext) -> String {
    let runs_gettys = text.lines().any(|l| {
        let l = commented(l).unwrap_or(l);
        entry(l).and_then(|e| getty_tty(&e)).is_some()
    });
    if !runs_gettys {
        return text.to_string();
    }
    let active: Vec<String> = text
        .lines()
        .filter(|l| commented(l).is_none())
        .filter_map(|l| entry(l).and_then(|e| getty_tty(&e)))
        .collect();
    let ids: Vec<String> = text
        .lines()
        .filter_map(|l| entry(commented(l).unwrap_or(l)).map(|e| e.id.to_string()))
        .collect();
    let need_tty1 = !active.iter().any(|t| t == "tty1");
    let need_serial = !active.iter().any(|t| t == "ttyS0");
    let mut tty1_done = !need_tty1;
    let mut out = map_lines(text, |line| {
        if let Some(inner) = commented(line) {
            // Enable the source's own tty1 line again, once.
            if !tty1_done
                && !inner.starts_with("hotclone")
                && entry(inner)
                    .and_then(|e| getty_tty(&e))
                    .is_some_and(|t| t == "tty1")
            {
                tty1_done = true;
                return vec![inner.to_string()];
            }
            return vec![line.to_string()];
        }
        match entry(line).and_then(|e| getty_tty(&e)) {
            Some(t) if is_xen_console(&t) => vec![format!("{XEN_COMMENT}{}", line.trim_start())],
            _ => vec![line.to_string()],
        }
    });
    let free_id = |want: &[&str]| {
        want.iter()
            .find(|w| !ids.iter().any(|i| i == *w))
            .copied()
            .unwrap_or("hc")
            .to_string()
    };
    let mut added = Vec::new();
    if !tty1_done {
        added.push(getty_line(
            ctx.guest.family,
            &free_id(&["1", "hc1"]),
            "tty1",
        ));
    }
    if need_serial {
        added.push(getty_line(
            ctx.guest.family,
            &free_id(&["S0", "T0", "hcS0"]),
            "ttyS0",
        ));
    }
    if !added.is_empty() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("# hotclone: gettys on the VM's console and serial port\n");
        for a in added {
            out.push_str(&a);
            out.push('\n');
        }
    }
    out
}
