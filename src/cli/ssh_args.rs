//! SSH flags shared by every command that talks to a host.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use hotclone::ssh::{ConnectOptions, HostKeyPolicy};

use super::password;

#[derive(Debug, Args)]
#[command(next_help_heading = "SSH options")]
pub struct SshArgs {
    /// Private key to authenticate with (repeatable). Tried before the
    /// IdentityFile entries of ssh_config, ~/.ssh/id_* and the agent.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,
    /// ssh_config file to read instead of ~/.ssh/config (Host, HostName,
    /// User, Port, IdentityFile and UserKnownHostsFile are honoured).
    #[arg(short = 'F', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// known_hosts file to check host keys against (default: ssh_config's
    /// UserKnownHostsFile, else ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Trust an unknown host's key on first use and record it. A key that
    /// differs from a recorded one is still refused.
    #[arg(long)]
    pub accept_new: bool,
    /// Read the SSH password from this file descriptor (first line), e.g.
    /// `--password-fd 3 3<secret-file`. Passwords are never taken from argv.
    #[arg(long, value_name = "FD")]
    pub password_fd: Option<i32>,
    /// Never prompt for a password, even on a terminal.
    #[arg(long)]
    pub batch: bool,
    /// Do not use ssh-agent (SSH_AUTH_SOCK).
    #[arg(long)]
    pub no_agent: bool,
    /// Seconds allowed for connecting, the handshake and authentication.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub connect_timeout: u64,
    /// Send a keepalive after this many seconds of silence from the
    /// server; three unanswered ones end the connection (a dead link is
    /// noticed after about four times this).
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub keepalive: u64,
}

impl SshArgs {
    pub fn to_options(&self) -> anyhow::Result<ConnectOptions> {
        let password = match self.password_fd {
            Some(fd) => {
                Some(Arc::new(password::from_fd(fd)?) as Arc<dyn hotclone::ssh::PasswordProvider>)
            }
            None if !self.batch && password::have_terminal() => {
                Some(Arc::new(password::Prompt) as Arc<dyn hotclone::ssh::PasswordProvider>)
            }
            None => None,
        };
        Ok(ConnectOptions {
            ssh_config: self.config.clone(),
            identity_files: self.identity.clone(),
            known_hosts: self.known_hosts.clone(),
            host_key_policy: if self.accept_new {
                HostKeyPolicy::AcceptNew
            } else {
                HostKeyPolicy::Strict
            },
            use_agent: !self.no_agent,
            password,
            connect_timeout: Duration::from_secs(self.connect_timeout.max(1)),
            keepalive_interval: Duration::from_secs(self.keepalive.max(1)),
            pinned_host_key: None,
            address: None,
            netns: None,
        })
    }
}
