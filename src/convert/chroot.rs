//! Running the guest's own tools inside the target root.
//!
//! [`UnshareChroot`] runs each command in a fresh private mount namespace
//! (`unshare --mount --propagation private`): /dev, /dev/pts, /proc and
//! /sys are mounted into the root there, and vanish with the namespace
//! when the command ends, even if it crashes. Nothing is mounted on the
//! host, so nothing can be left behind.
//!
//! /dev is a private tmpfs holding a copy of the host's device nodes rather
//! than a bind of the host's /dev: grub-mkconfig needs
//! `/dev/disk/by-uuid/<uuid>` links (there is no udev here), and creating
//! them in a bound /dev would create them on the host.
//!
//! [`RecordingChroot`] is the fake for tests: it records the commands and
//! answers from a script.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ConvertContext;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    /// The exit status; -1 when killed by a signal.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChrootError {
    #[error("{root}: not a directory to chroot into (is the target mounted?)")]
    BadRoot { root: PathBuf },
    #[error("could not start `{command}`: {error}. Is util-linux (unshare, chroot) installed on this host?")]
    Spawn {
        command: String,
        #[source]
        error: std::io::Error,
    },
    #[error("`{command}` failed in the target's chroot (exit status {status}):\n{output}")]
    Failed {
        command: String,
        status: i32,
        output: String,
    },
}

/// Run a command inside a target root.
pub trait ChrootExec {
    /// The target root on this host.
    fn root(&self) -> &Path;
    /// Run `argv` chrooted into [`ChrootExec::root`]. A non-zero exit is
    /// not an error here: the caller decides.
    fn run(&mut self, argv: &[&str]) -> Result<CommandOutput, ChrootError>;
    /// Run one of this host's own commands, outside the chroot: the rescue
    /// system's for a live target, the client's for an image. Only a
    /// bootloader the guest has no tools for is installed this way
    /// ([`super::bootloader::host_grub2`]).
    fn run_host(&mut self, argv: &[&str]) -> Result<CommandOutput, ChrootError>;
}

/// The PATH guest tools run with (old and new layouts).
pub const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The real thing: `unshare --mount` + `chroot`, one namespace per command.
#[derive(Debug, Clone)]
pub struct UnshareChroot {
    root: PathBuf,
    /// `/dev/disk/by-uuid/<uuid>` -> device on this host.
    uuid_links: Vec<(String, String)>,
}

impl UnshareChroot {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, ChrootError> {
        let root = root.into();
        let real = std::fs::canonicalize(&root)
            .map_err(|_| ChrootError::BadRoot { root: root.clone() })?;
        if !real.is_dir() || real == Path::new("/") {
            return Err(ChrootError::BadRoot { root });
        }
        Ok(UnshareChroot {
            root: real,
            uuid_links: vec![],
        })
    }

    /// Provide `/dev/disk/by-uuid` links for every new filesystem and swap
    /// of `ctx` that has a device on this host.
    pub fn with_uuid_links(mut self, ctx: &ConvertContext) -> Self {
        for f in &ctx.filesystems {
            if let Some(d) = &f.device {
                self.uuid_links.push((f.uuid.clone(), d.clone()));
            }
        }
        for s in &ctx.swaps {
            if let Some(d) = &s.device {
                self.uuid_links.push((s.uuid.clone(), d.clone()));
            }
        }
        self
    }

    /// The shell script run in the new namespace; `$1` is the root, the
    /// rest is the command.
    pub fn script(&self) -> String {
        let mut s = String::from(
            "set -e\n\
             R=\"$1\"; shift\n\
             mkdir -p \"$R/dev\" \"$R/proc\" \"$R/sys\"\n\
             mount -t tmpfs -o mode=0755,size=64m hotclone-dev \"$R/dev\"\n\
             cp -a --one-file-system /dev/. \"$R/dev/\"\n\
             mkdir -p \"$R/dev/pts\" \"$R/dev/shm\" \"$R/dev/disk/by-uuid\"\n\
             mount --bind /dev/pts \"$R/dev/pts\"\n\
             mount --bind /proc \"$R/proc\"\n\
             mount --bind /sys \"$R/sys\"\n",
        );
        for (uuid, dev) in &self.uuid_links {
            s.push_str(&format!(
                "ln -sf {} \"$R/dev/disk/by-uuid/\"{}\n",
                crate::shell::quote(dev),
                crate::shell::quote(uuid)
            ));
        }
        s.push_str("exec chroot \"$R\" \"$@\"\n");
        s
    }
}

impl ChrootExec for UnshareChroot {
    fn root(&self) -> &Path {
        &self.root
    }

    fn run(&mut self, argv: &[&str]) -> Result<CommandOutput, ChrootError> {
        let command = argv.join(" ");
        let out = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                &self.script(),
                "hotclone-chroot",
            ])
            .arg(&self.root)
            .args(argv)
            .env_clear()
            .env("PATH", GUEST_PATH)
            .env("LC_ALL", "C")
            .env("HOME", "/root")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|error| ChrootError::Spawn { command, error })?;
        Ok(CommandOutput::of(&out))
    }

    fn run_host(&mut self, argv: &[&str]) -> Result<CommandOutput, ChrootError> {
        let command = argv.join(" ");
        // A session's PATH (dropbear's in the rescue system) may lack sbin.
        let path = match std::env::var("PATH") {
            Ok(p) if !p.is_empty() => format!("{GUEST_PATH}:{p}"),
            _ => GUEST_PATH.to_string(),
        };
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .env("PATH", path)
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|error| ChrootError::Spawn { command, error })?;
        Ok(CommandOutput::of(&out))
    }
}

impl CommandOutput {
    fn of(out: &std::process::Output) -> Self {
        CommandOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// How [`RecordingChroot`] marks a command run on the host.
pub const HOST_TAG: &str = "[host]";

/// The fake: records every command; answers success, or what
/// [`RecordingChroot::answer`] set for a command starting with a prefix.
#[derive(Debug, Default)]
pub struct RecordingChroot {
    pub root: PathBuf,
    pub calls: Vec<Vec<String>>,
    answers: Vec<(String, CommandOutput)>,
}

impl RecordingChroot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RecordingChroot {
            root: root.into(),
            ..Default::default()
        }
    }

    /// Commands whose joined argv starts with `prefix` get `output`.
    pub fn answer(mut self, prefix: &str, output: CommandOutput) -> Self {
        self.answers.push((prefix.to_string(), output));
        self
    }

    /// The commands run, each joined with spaces.
    pub fn commands(&self) -> Vec<String> {
        self.calls.iter().map(|c| c.join(" ")).collect()
    }
}

impl ChrootExec for RecordingChroot {
    fn root(&self) -> &Path {
        &self.root
    }
    /// Recorded as `[host] argv...`.
    fn run_host(&mut self, argv: &[&str]) -> Result<CommandOutput, ChrootError> {
        let mut tagged = vec![HOST_TAG];
        tagged.extend_from_slice(argv);
        self.run(&tagged)
    }
    fn run(&mut self, argv: &[&str]) -> Result<CommandOutput, ChrootError> {
        let joined = argv.join(" ");
        self.calls
            .push(argv.iter().map(|s| s.to_string()).collect());
        Ok(self
            .answers
            .iter()
            .find(|(p, _)| joined.starts_with(p.as_str()))
            .map(|(_, o)| o.clone())
            .unwrap_or_default())
    }
}
