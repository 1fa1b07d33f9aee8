//! Running external commands with error messages that show the command line
//! and its stderr.
use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A command being built. Create with [`cmd`] or [`netns`].
pub struct Cmd {
    inner: Command,
    shown: String,
    stdin: Option<Vec<u8>>,
}

/// Start building a command.
pub fn cmd(program: &str) -> Cmd {
    Cmd {
        inner: Command::new(program),
        shown: program.to_string(),
        stdin: None,
    }
}

/// A command run inside network namespace `ns` (`ip netns exec NS PROGRAM`).
pub fn netns(ns: &str, program: &str) -> Cmd {
    cmd("ip").args(["netns", "exec", ns, program])
}

/// `sh -c SCRIPT NAME` in a private mount namespace of its own
/// (`unshare --mount`), so the mounts it makes cannot outlive it; add the
/// script's positional arguments with [`Cmd::arg`].
pub fn private_mounts(script: &str, name: &str) -> Cmd {
    cmd("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        name,
    ])
}

/// Run `program args...`, return its stdout; fail with its stderr.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    cmd(program).args(args).output()
}

/// Run a `sh -c SCRIPT` with positional args; return stdout.
pub fn sh<S: AsRef<OsStr>>(script: &str, args: &[S]) -> Result<String> {
    cmd("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .output()
}

impl Cmd {
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        let a = a.as_ref();
        self.shown.push(' ');
        self.shown.push_str(&quote(&abbrev(&a.to_string_lossy())));
        self.inner.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Self {
        self.inner.env(k, v);
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// The command line, shell-quoted, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Run and collect output; no check of the exit status.
    pub fn raw_output(mut self) -> Result<Output> {
        let shown = self.shown.clone();
        self.inner.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.inner.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = self
            .inner
            .spawn()
            .with_context(|| format!("cannot start `{shown}` (is it installed and on PATH?)"))?;
        if let Some(data) = self.stdin.take() {
            let mut pipe = child.stdin.take().context("child stdin missing")?;
            pipe.write_all(&data)
                .with_context(|| format!("writing stdin of `{shown}`"))?;
        }
        child
            .wait_with_output()
            .with_context(|| format!("waiting for `{shown}`"))
    }

    /// Run; return stdout. On a non-zero exit, the error names the command
    /// and includes its stderr.
    pub fn output(self) -> Result<String> {
        let shown = self.shown.clone();
        let out = self.raw_output()?;
        if !out.status.success() {
            bail!(
                "command failed ({}): {}\n--- stderr ---\n{}{}",
                out.status,
                shown,
                tail(&String::from_utf8_lossy(&out.stderr), 40),
                stdout_note(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run, discarding stdout; fail like [`Cmd::output`].
    pub fn run(self) -> Result<()> {
        self.output().map(|_| ())
    }

    /// True if the command ran and exited 0. Output is discarded.
    pub fn succeeds(self) -> bool {
        matches!(self.raw_output(), Ok(o) if o.status.success())
    }

    /// Run with stdout+stderr appended to `log`; on failure show the log tail.
    pub fn run_logged(mut self, log: &Path) -> Result<()> {
        let shown = self.shown.clone();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let f2 = f.try_clone()?;
        self.inner.stdin(Stdio::null()).stdout(f).stderr(f2);
        let status = self
            .inner
            .status()
            .with_context(|| format!("cannot start `{shown}`"))?;
        if !status.success() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!(
                "command failed ({status}): {shown}\n--- last lines of {} ---\n{}",
                log.display(),
                tail(&text, 30)
            );
        }
        Ok(())
    }

    /// Access to the underlying std Command (for spawning daemons).
    pub fn into_command(self) -> (Command, String) {
        (self.inner, self.shown)
    }
}

fn stdout_note(stdout: &[u8]) -> String {
    if stdout.is_empty() {
        String::new()
    } else {
        format!(
            "--- stdout ---\n{}",
            tail(&String::from_utf8_lossy(stdout), 20)
        )
    }
}

/// Last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut s = lines[start..].join("\n");
    s.push('\n');
    s
}

/// Shorten long arguments (inline scripts) for messages.
fn abbrev(s: &str) -> String {
    let first = s
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with("#!"))
        .unwrap_or("");
    if s.len() <= 120 && !s.contains('\n') {
        s.to_string()
    } else {
        format!(
            "{}... [{} bytes]",
            first.chars().take(60).collect::<String>(),
            s.len()
        )
    }
}

/// Quote a word for display (and for use in `sh -c`).
pub fn quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
