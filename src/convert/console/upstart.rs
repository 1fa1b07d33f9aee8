//! upstart's getty jobs (Ubuntu 6.10-14.10): a Xen guest has
//! `/etc/init/hvc0.conf` (`exec /sbin/getty -8 38400 hvc0`) and often no
//! `tty1.conf`. When the guest has getty jobs in `/etc/init` (upstart
//! 0.6+, Ubuntu 9.10 on) or `/etc/event.d` (Ubuntu 6.10-9.04), the jobs
//! for tty1 and ttyS0 that are missing are created in the same directory
//! and syntax. Existing jobs are never changed; the Xen console's job is
//! left as it is (upstart stops respawning it when the device is missing).

use super::SERIAL_BAUD;
use crate::convert::{ConvertContext, FileAction, FilePattern, FileRewriter};

pub struct Upstart;

/// Where each upstart era keeps its jobs, and the job file name for a tty.
const DIRS: &[(&str, &str)] = &[("etc/init", ".conf"), ("etc/event.d", "")];

/// Getty jobs whose presence says the guest's upstart runs its gettys from
/// that directory.
const MARKERS: &[&str] = &["hvc0", "xvc0", "tty1", "tty2", "ttyS0", "console"];

impl FileRewriter for Upstart {
    fn name(&self) -> &'static str {
        "upstart gettys"
    }
    fn files(&self) -> &'static [FilePattern] {
        &[]
    }
    fn creates(&self, exists: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        for (dir, ext) in DIRS {
            let job = |tty: &str| format!("{dir}/{tty}{ext}");
            if !MARKERS.iter().any(|m| exists(&job(m))) {
                continue;
            }
            for tty in ["tty1", "ttyS0"] {
                if !exists(&job(tty)) {
                    out.push(job(tty));
                }
            }
        }
        out
    }
    /// Every job in the two directories: the guest's own ones are read
    /// (and kept) so the golden tests see them handled.
    fn handles(&self, path: &str) -> bool {
        DIRS.iter().any(|(dir, _)| {
            path.strip_prefix(dir)
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|r| !r.is_empty() && !r.contains('/'))
        })
    }
    fn rewrite(&self, path: &str, text: &str, _ctx: &ConvertContext) -> FileAction {
        if !text.is_empty() {
            return FileAction::Keep;
        }
        match job_tty(path) {
            Some((tty, legacy)) => FileAction::Write(job(tty, legacy)),
            None => FileAction::Keep,
        }
    }
}

/// The tty of one of our job paths, and whether it is an `/etc/event.d` one.
fn job_tty(path: &str) -> Option<(&'static str, bool)> {
    for tty in ["tty1", "ttyS0"] {
        if path == format!("etc/init/{tty}.conf") {
            return Some((tty, false));
        }
        if path == format!("etc/event.d/{tty}") {
            return Some((tty, true));
        }
    }
    None
}

/// The job text, as Ubuntu writes its own tty jobs.
pub fn job(tty: &str, legacy: bool) -> String {
    let exec = if tty.starts_with("ttyS") {
        format!("exec /sbin/getty -L {SERIAL_BAUD} {tty} vt102")
    } else {
        format!("exec /sbin/getty -8 38400 {tty}")
    };
    let head = format!(
        "# {tty} - getty\n#\n# Written by hotclone: a getty on the VM's {}.\n\n",
        if tty.starts_with("ttyS") {
            "serial console"
        } else {
            "first virtual console"
        }
    );
    if legacy {
        format!(
            "{head}start on runlevel 2\nstart on runlevel 3\nstart on runlevel 4\nstart on runlevel 5\n\nstop on runlevel 0\nstop on runlevel 1\nstop on runlevel 6\n\nrespawn\n{exec}\n"
        )
    } else {
        format!("{head}start on stopped rc RUNLEVEL=[2345]\nstop on runlevel [!2345]\n\nrespawn\n{exec}\n")
    }
}
