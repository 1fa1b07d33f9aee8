//! [`SshError`]: every failure names `host:port` and says what to do next.
//! No variant ever carries a password, a key's contents or a passphrase.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in the `ssh` layer.
///
/// `addr` is always `host:port` of the server we were talking to (after
/// ssh_config resolution), so that a user of the CLI knows which machine the
/// message is about.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The destination string could not be parsed.
    #[error("invalid destination {input:?}: {reason}. Expected [user@]host[:port] or [user@][ipv6]:port")]
    InvalidDestination { input: String, reason: String },

    /// The ssh_config file could not be read.
    #[error("cannot read ssh config {}: {source}. Fix the file or pass another one", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// DNS resolution failed.
    #[error("{addr}: cannot resolve host name: {detail}. Check the name (or the HostName in your ssh config) and your DNS")]
    Resolve { addr: String, detail: String },

    /// TCP connect failed (refused, no route, ...).
    #[error("{addr}: cannot connect: {source}. Check that the host is up, that sshd listens on that port and that no firewall blocks it")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// A connection phase exceeded the connect timeout.
    #[error("{addr}: timed out after {after:?} during {phase}. Check that the host is reachable and sshd answers, or raise the connect timeout")]
    Timeout {
        addr: String,
        phase: &'static str,
        after: Duration,
    },

    /// No algorithm in common, even with the legacy set.
    #[error("{addr}: no common {kind} algorithm even with the legacy set. We offer {ours:?}; the server offers {theirs:?}")]
    NoCommonAlgorithm {
        addr: String,
        kind: &'static str,
        ours: Vec<String>,
        theirs: Vec<String>,
    },

    /// The SSH handshake failed for another reason.
    #[error(
        "{addr}: SSH handshake failed: {detail}. Check that this port talks SSH (try `ssh -v`)"
    )]
    Handshake { addr: String, detail: String },

    /// The host is not in known_hosts and the policy is strict.
    #[error(
        "{addr}: host key unknown: the server presents a {key_type} key with fingerprint {fingerprint}, \
         which is not in {}. Verify this fingerprint out of band (e.g. `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` \
         on the console), then rerun with --accept-new (or add it with `ssh-keyscan -p PORT HOST >> KNOWN_HOSTS`)",
        known_hosts.display()
    )]
    UnknownHostKey {
        addr: String,
        key_type: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },

    /// The host's key differs from the recorded one. Always refused.
    #[error(
        "{addr}: REFUSED: the host key has CHANGED. The server now presents a {key_type} key with fingerprint \
         {fingerprint}, but {} line {line} records a different {key_type} key for this host. This can be a \
         man-in-the-middle attack, or the host was reinstalled. If you know why it changed, remove line {line} \
         from that file (`ssh-keygen -R HOST -f FILE`) and verify the new fingerprint",
        known_hosts.display()
    )]
    HostKeyChanged {
        addr: String,
        key_type: String,
        fingerprint: String,
        known_hosts: PathBuf,
        line: usize,
    },

    /// The host's key is not the one this connection was pinned to.
    #[error(
        "{addr}: REFUSED: the host key is not the expected one. It presents {fingerprint}; this address was \
         expected to be the server whose key is {expected} (hotclone reaches a server it already verified at a \
         new address). Another machine answers at {addr}"
    )]
    HostKeyNotPinned {
        addr: String,
        fingerprint: String,
        expected: String,
    },

    /// known_hosts could not be read or written.
    #[error("{addr}: known_hosts file {}: {detail}. Fix or remove the offending line", path.display())]
    KnownHosts {
        addr: String,
        path: PathBuf,
        detail: String,
    },

    /// Every authentication method failed.
    #[error(
        "{addr}: authentication failed for user {user:?}. Tried: {}. The server accepts: {}. \
         Add a key with -i, load one into ssh-agent, or allow password authentication",
        if tried.is_empty() { "nothing (no key files, no agent, no password)".to_string() } else { tried.join("; ") },
        if server_methods.is_empty() { "(unknown)".to_string() } else { server_methods.join(", ") }
    )]
    AuthFailed {
        addr: String,
        user: String,
        tried: Vec<String>,
        server_methods: Vec<String>,
    },

    /// Opening a channel or starting the command failed.
    #[error("{addr}: cannot run a command: {detail}. The server may limit sessions (MaxSessions) or forbid exec")]
    Channel { addr: String, detail: String },

    /// The channel closed without an exit status or signal.
    #[error("{addr}: the remote command ended without an exit status (channel closed early); the connection may have dropped or sshd killed the session")]
    NoExitStatus { addr: String },

    /// The connection broke.
    #[error("{addr}: connection lost: {detail}. Reconnect and retry")]
    Disconnected { addr: String, detail: String },

    /// Local I/O error while streaming.
    #[error("{addr}: I/O error while streaming: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}
