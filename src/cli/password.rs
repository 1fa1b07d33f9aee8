//! Where a password comes from: a file descriptor or the terminal. Never
//! argv, never the environment, never a log line.

use std::fs::File;
use std::io::{IsTerminal, Read};

use anyhow::{bail, Context};
use hotclone::ssh::PasswordProvider;

/// A password read once, at startup, from a file descriptor.
pub struct FromFd(String);

impl std::fmt::Debug for FromFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FromFd(<redacted>)")
    }
}

pub fn from_fd(fd: i32) -> anyhow::Result<FromFd> {
    if fd <= 2 {
        bail!("--password-fd {fd}: use a descriptor of its own (3 or above), e.g. `--password-fd 3 3<file`");
    }
    // Reopening through /proc keeps this safe: a closed descriptor is a
    // plain "No such file" error instead of undefined ownership.
    let mut file = File::open(format!("/proc/self/fd/{fd}")).with_context(|| {
        format!("--password-fd {fd}: that file descriptor is not open in hotclone's process")
    })?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("reading the password from fd {fd}"))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        bail!("--password-fd {fd}: nothing to read (an empty first line)");
    }
    Ok(FromFd(line))
}

impl PasswordProvider for FromFd {
    fn password(&self, _user: &str, _host: &str) -> Option<String> {
        Some(self.0.clone())
    }
}

/// Asks on the terminal, only when a password is actually needed.
pub struct Prompt;

pub fn have_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

impl PasswordProvider for Prompt {
    fn password(&self, user: &str, host: &str) -> Option<String> {
        rpassword::prompt_password(format!("{user}@{host}'s password: "))
            .ok()
            .filter(|p| !p.is_empty())
    }
}
