//! SSH sessions to source and target hosts, on russh.
//!
//! * [`Session::connect`] resolves the destination through ssh_config
//!   ([`config`]), checks the host key against known_hosts (strict by
//!   default, see [`HostKeyPolicy`]), negotiates russh's modern algorithms
//!   first and falls back once to a legacy set for OpenSSH 4/5-era servers
//!   ([`algorithms`]), then authenticates (key files, agent, password; see
//!   [`auth`](self) module docs).
//! * [`Session::exec`] runs one command per channel with streamed,
//!   flow-controlled stdin/stdout/stderr ([`RemoteChild`]);
//!   [`Session::run`] collects everything.
//!
//! Notes on russh 0.65 (measured against the lab):
//! * The first handshake with a legacy-only server fails with
//!   `NoCommonAlgo { kind: Kex, .. }`; that (or a host key / cipher / MAC
//!   mismatch) is the only trigger for the legacy retry, so modern servers
//!   never pay for it. The retry opens a new TCP connection within the same
//!   connect timeout.
//! * `best_supported_rsa_hash()` waits up to 1 s for `server-sig-algs` when
//!   the server sends no EXT_INFO (real OpenSSH 5): RSA key auth to such a
//!   server costs that second once per connection.
//! * A connect timeout during the handshake drops our future, but russh's
//!   session task (already spawned) lives until the server closes the socket.
//!
//! The library never prompts and never prints; it logs with `tracing`
//! (`info` for the legacy fallback and newly learned host keys, `debug` for
//! detail). Secrets never appear in logs or errors.

pub mod algorithms;
mod auth;
pub mod config;
mod destination;
mod error;
mod exec;
mod known_hosts;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, Handle};
use russh::keys::PublicKey;
use russh::keys::PublicKeyOrCertificate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use config::HostConfig;
pub use destination::Destination;
pub use error::SshError;
pub use exec::{ChildOutput, ChildStdin, ExitStatus, Output, RemoteChild, PIPE_CAPACITY};

/// What to do with a host key that is not in known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Refuse unknown hosts (the error shows the fingerprint to verify).
    #[default]
    Strict,
    /// Record an unknown host's key and continue (`--accept-new`). A
    /// changed key is still refused.
    AcceptNew,
}

/// Supplies passwords. The CLI prompts or reads a file descriptor; the
/// library never prompts.
pub trait PasswordProvider: Send + Sync {
    fn password(&self, user: &str, host: &str) -> Option<String>;
}

/// How to connect. See the field docs for defaults.
#[derive(Clone)]
pub struct ConnectOptions {
    /// `None`: `~/.ssh/config` if it exists (`$HOME`).
    pub ssh_config: Option<PathBuf>,
    /// `-i`: tried before IdentityFile from config and the default keys.
    pub identity_files: Vec<PathBuf>,
    /// `None`: UserKnownHostsFile from config, else `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    pub host_key_policy: HostKeyPolicy,
    /// Use the agent at `SSH_AUTH_SOCK`.
    pub use_agent: bool,
    pub password: Option<Arc<dyn PasswordProvider>>,
    /// Covers TCP connect + handshake + authentication. Default 15 s.
    pub connect_timeout: Duration,
    /// Keepalive after this much silence; the connection is dropped after 3
    /// unanswered keepalives. Default 15 s.
    pub keepalive_interval: Duration,
    /// Accept only the host key with this fingerprint (`SHA256:...`),
    /// whatever known_hosts says: to reach a server already verified under
    /// another address (cutover's fallback address for the source).
    pub pinned_host_key: Option<String>,
    /// Connect to this address instead of the destination's (its
    /// ssh_config still applies: user, keys, algorithms). With
    /// `pinned_host_key`: the same server at another address.
    pub address: Option<String>,
    /// Make the TCP connection from inside this network namespace (its
    /// file, `/run/netns/NAME`): the rehearsal's isolated network.
    pub netns: Option<PathBuf>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            ssh_config: None,
            identity_files: Vec::new(),
            known_hosts: None,
            host_key_policy: HostKeyPolicy::Strict,
            use_agent: true,
            password: None,
            connect_timeout: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(15),
            pinned_host_key: None,
            address: None,
            netns: None,
        }
    }
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("ssh_config", &self.ssh_config)
            .field("identity_files", &self.identity_files)
            .field("known_hosts", &self.known_hosts)
            .field("host_key_policy", &self.host_key_policy)
            .field("use_agent", &self.use_agent)
            .field("password", &self.password.as_ref().map(|_| "<provider>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("pinned_host_key", &self.pinned_host_key)
            .field("address", &self.address)
            .field("netns", &self.netns)
            .finish()
    }
}

/// What a connection turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The host name connected to (after ssh_config HostName).
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The name given on the command line when it differs from `host`.
    pub alias: Option<String>,
    /// Negotiated algorithms (from russh's `kex_done`).
    pub kex: String,
    pub host_key_algorithm: String,
    pub cipher: String,
    pub mac: String,
    /// True when the legacy algorithm set was needed.
    pub legacy: bool,
    /// `SHA256:...` of the server's host key.
    pub host_key_fingerprint: String,
    /// "publickey FILE", "agent (COMMENT)", "password", ...
    pub auth_method: String,
    pub known_hosts: PathBuf,
}

impl ConnectionInfo {
    /// `host:port`.
    pub fn addr(&self) -> String {
        destination::host_port(&self.host, self.port)
    }
}

/// An authenticated SSH connection.
pub struct Session {
    handle: Handle<Client>,
    info: ConnectionInfo,
}

/// Host key problems found in the handler, reported after russh gives up.
#[derive(Debug, Clone)]
enum HostKeyProblem {
    Unknown {
        key_type: String,
        fingerprint: String,
    },
    Changed {
        key_type: String,
        fingerprint: String,
        line: usize,
    },
    File(String),
    NotPinned {
        fingerprint: String,
        expected: String,
    },
}

#[derive(Debug, Default)]
struct Shared {
    problem: Option<HostKeyProblem>,
    fingerprint: Option<String>,
    names: Option<(String, String, String, String)>,
}

struct Client {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    policy: HostKeyPolicy,
    pinned: Option<String>,
    shared: Arc<Mutex<Shared>>,
}

impl Client {
    fn set(&self, f: impl FnOnce(&mut Shared)) {
        if let Ok(mut s) = self.shared.lock() {
            f(&mut s)
        }
    }

    fn check_key(&self, key: &PublicKey) -> bool {
        let fingerprint = known_hosts::fingerprint(key);
        let key_type = key.algorithm().to_string();
        let addr = destination::host_port(&self.host, self.port);
        self.set(|s| s.fingerprint = Some(fingerprint.clone()));
        if let Some(expected) = &self.pinned {
            let ok = *expected == fingerprint;
            if !ok {
                self.set(|s| {
                    s.problem = Some(HostKeyProblem::NotPinned {
                        fingerprint,
                        expected: expected.clone(),
                    })
                });
            }
            return ok;
        }
        match known_hosts::check(&self.host, self.port, key, &self.known_hosts) {
            known_hosts::Verdict::Known => true,
            known_hosts::Verdict::Changed { line } => {
                self.set(|s| {
                    s.problem = Some(HostKeyProblem::Changed {
                        key_type,
                        fingerprint,
                        line,
                    })
                });
                false
            }
            known_hosts::Verdict::Error(e) => {
                self.set(|s| s.problem = Some(HostKeyProblem::File(e)));
                false
            }
            known_hosts::Verdict::Unknown => match self.policy {
                HostKeyPolicy::Strict => {
                    self.set(|s| {
                        s.problem = Some(HostKeyProblem::Unknown {
                            key_type,
                            fingerprint,
                        })
                    });
                    false
                }
                HostKeyPolicy::AcceptNew => {
                    match known_hosts::learn(&self.host, self.port, key, &self.known_hosts) {
                        Ok(()) => {
                            tracing::info!(
                                "{addr}: new host key {key_type} {fingerprint} added to {}",
                                self.known_hosts.display()
                            );
                            true
                        }
                        Err(e) => {
                            self.set(|s| {
                                s.problem = Some(HostKeyProblem::File(format!(
                                    "cannot add the host key: {e}"
                                )))
                            });
                            false
                        }
                    }
                }
            },
        }
    }
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => Ok(self.check_key(key)),
            PublicKeyOrCertificate::Certificate(cert) => {
                // We never advertise certificate algorithms; check the bare key.
                let key = PublicKey::new(cert.public_key().clone(), "");
                Ok(self.check_key(&key))
            }
        }
    }

    async fn kex_done(
        &mut self,
        _shared_secret: Option<&[u8]>,
        names: &russh::Names,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let cipher = names.cipher.as_ref().to_string();
        // russh reports a negotiated MAC even for AEAD ciphers, which ignore it.
        let mac = if cipher.contains("poly1305") || cipher.contains("gcm") {
            "implicit (AEAD cipher)".to_string()
        } else {
            names.client_mac.as_ref().to_string()
        };
        let n = (
            names.kex.as_ref().to_string(),
            names.key.to_string(),
            cipher,
            mac,
        );
        self.set(|s| {
            if s.names.is_none() {
                s.names = Some(n)
            }
        });
        Ok(())
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(dirs::home_dir)
}

/// The connection target after ssh_config and defaults.
struct Resolved {
    alias: String,
    host: String,
    port: u16,
    user: String,
    explicit_keys: Vec<PathBuf>,
    default_keys: Vec<PathBuf>,
    known_hosts: PathBuf,
}

fn resolve(destination: &str, opts: &ConnectOptions) -> Result<Resolved, SshError> {
    let dest: Destination = destination.parse()?;
    let home = home();
    let config_path = match &opts.ssh_config {
        Some(p) => Some(p.clone()),
        None => home
            .as_ref()
            .map(|h| h.join(".ssh/config"))
            .filter(|p| p.is_file()),
    };
    let cfg = match config_path {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|source| SshError::Config {
                path: path.clone(),
                source,
            })?;
            config::resolve_with_home(&text, &dest.host, home.as_deref())
        }
        None => HostConfig::default(),
    };
    let host = opts
        .address
        .clone()
        .or_else(|| cfg.hostname.clone())
        .unwrap_or_else(|| dest.host.clone());
    let port = dest.port.or(cfg.port).unwrap_or(22);
    let user = dest
        .user
        .clone()
        .or(cfg.user.clone())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "root".to_string());
    let mut explicit_keys = opts.identity_files.clone();
    explicit_keys.extend(cfg.identity_files.iter().cloned());
    let default_keys = match &home {
        Some(h) => ["id_ed25519", "id_ecdsa", "id_rsa"]
            .iter()
            .map(|n| h.join(".ssh").join(n))
            .collect(),
        None => Vec::new(),
    };
    let known_hosts = opts
        .known_hosts
        .clone()
        .or(cfg.user_known_hosts_file.clone())
        .or_else(|| home.as_ref().map(|h| h.join(".ssh/known_hosts")))
        .unwrap_or_else(|| PathBuf::from(".ssh/known_hosts"));
    Ok(Resolved {
        alias: dest.host,
        host,
        port,
        user,
        explicit_keys,
        default_keys,
        known_hosts,
    })
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// TCP connect to every resolved address in turn, within the deadline.
async fn tcp_connect(
    r: &Resolved,
    addr: &str,
    deadline: Instant,
    total: Duration,
    netns: Option<&Path>,
) -> Result<tokio::net::TcpStream, SshError> {
    let timeout = |phase| SshError::Timeout {
        addr: addr.to_string(),
        phase,
        after: total,
    };
    let addrs: Vec<std::net::SocketAddr> = match tokio::time::timeout(
        remaining(deadline),
        tokio::net::lookup_host((r.host.as_str(), r.port)),
    )
    .await
    {
        Err(_) => return Err(timeout("DNS resolution")),
        Ok(Err(e)) => {
            return Err(SshError::Resolve {
                addr: addr.to_string(),
                detail: e.to_string(),
            })
        }
        Ok(Ok(a)) => a.collect(),
    };
    if addrs.is_empty() {
        return Err(SshError::Resolve {
            addr: addr.to_string(),
            detail: "no addresses".into(),
        });
    }
    let mut last = None;
    for sa in addrs {
        let connect = async {
            match netns {
                Some(ns) => crate::netns::connect_async(ns, sa, remaining(deadline)).await,
                None => tokio::net::TcpStream::connect(sa).await,
            }
        };
        match tokio::time::timeout(remaining(deadline), connect).await {
            Err(_) => return Err(timeout("TCP connect")),
            Ok(Ok(s)) => {
                if let Err(e) = s.set_nodelay(true) {
                    tracing::debug!("{addr}: set_nodelay: {e}");
                }
                return Ok(s);
            }
            Ok(Err(e)) => {
                tracing::debug!("{addr}: connect to {sa}: {e}");
                last = Some(e);
            }
        }
    }
    Err(SshError::Connect {
        addr: addr.to_string(),
        source: last.unwrap_or_else(|| std::io::Error::other("no address could be reached")),
    })
}

fn client_config(preferred: russh::Preferred, opts: &ConnectOptions) -> Arc<client::Config> {
    Arc::new(client::Config {
        preferred,
        window_size: 16 * 1024 * 1024,
        maximum_packet_size: 65535,
        nodelay: true,
        keepalive_interval: Some(opts.keepalive_interval),
        keepalive_max: 3,
        inactivity_timeout: None,
        ..Default::default()
    })
}

enum HandshakeError {
    Algorithms(algorithms::AlgorithmMismatch),
    Fatal(SshError),
}

async fn handshake(
    r: &Resolved,
    addr: &str,
    opts: &ConnectOptions,
    preferred: russh::Preferred,
    deadline: Instant,
) -> Result<(Handle<Client>, Arc<Mutex<Shared>>), HandshakeError> {
    let stream = tcp_connect(
        r,
        addr,
        deadline,
        opts.connect_timeout,
        opts.netns.as_deref(),
    )
    .await
    .map_err(HandshakeError::Fatal)?;
    let shared = Arc::new(Mutex::new(Shared::default()));
    let handler = Client {
        host: r.host.clone(),
        port: r.port,
        known_hosts: r.known_hosts.clone(),
        policy: opts.host_key_policy,
        pinned: opts.pinned_host_key.clone(),
        shared: shared.clone(),
    };
    let config = client_config(preferred, opts);
    let result = tokio::time::timeout(
        remaining(deadline),
        client::connect_stream(config, stream, handler),
    )
    .await;
    let err = match result {
        Err(_) => {
            return Err(HandshakeError::Fatal(SshError::Timeout {
                addr: addr.to_string(),
                phase: "the SSH handshake (version exchange, key exchange)",
                after: opts.connect_timeout,
            }))
        }
        Ok(Ok(handle)) => return Ok((handle, shared)),
        Ok(Err(e)) => e,
    };
    // A host key problem recorded by the handler explains the failure best.
    let problem = shared.lock().ok().and_then(|s| s.problem.clone());
    if let Some(p) = problem {
        let known_hosts = r.known_hosts.clone();
        let addr = addr.to_string();
        return Err(HandshakeError::Fatal(match p {
            HostKeyProblem::Unknown {
                key_type,
                fingerprint,
            } => SshError::UnknownHostKey {
                addr,
                key_type,
                fingerprint,
                known_hosts,
            },
            HostKeyProblem::Changed {
                key_type,
                fingerprint,
                line,
            } => SshError::HostKeyChanged {
                addr,
                key_type,
                fingerprint,
                known_hosts,
                line,
            },
            HostKeyProblem::NotPinned {
                fingerprint,
                expected,
            } => SshError::HostKeyNotPinned {
                addr,
                fingerprint,
                expected,
            },
            HostKeyProblem::File(detail) => SshError::KnownHosts {
                addr,
                path: known_hosts,
                detail,
            },
        }));
    }
    if let Some(m) = algorithms::classify(&err) {
        return Err(HandshakeError::Algorithms(m));
    }
    let detail = match &err {
        russh::Error::IO(e) => format!("I/O error: {e}"),
        russh::Error::Disconnect | russh::Error::HUP => {
            "the server closed the connection".to_string()
        }
        e => e.to_string(),
    };
    Err(HandshakeError::Fatal(SshError::Handshake {
        addr: addr.to_string(),
        detail,
    }))
}

impl Session {
    /// Connect and authenticate. `destination` is `[user@]host[:port]` (or
    /// an ssh_config alias); command-line user/port beat ssh_config, which
    /// beats the defaults (`$USER` or root, port 22).
    pub async fn connect(destination: &str, opts: &ConnectOptions) -> Result<Session, SshError> {
        let start = Instant::now();
        let deadline = start + opts.connect_timeout;
        let r = resolve(destination, opts)?;
        let addr = destination::host_port(&r.host, r.port);
        let known = known_hosts::known_algorithms(&r.host, r.port, &r.known_hosts);

        let modern = algorithms::modern(&known);
        let (mut handle, shared, legacy) = match handshake(&r, &addr, opts, modern, deadline).await
        {
            Ok((h, s)) => (h, s, false),
            Err(HandshakeError::Fatal(e)) => return Err(e),
            Err(HandshakeError::Algorithms(m)) => {
                let preferred = algorithms::legacy(&known);
                tracing::info!(
                    "host {addr} offers only legacy SSH algorithms (no common {} algorithm among {}); \
                     retrying with diffie-hellman-group14-sha1, diffie-hellman-group-exchange-sha1, \
                     diffie-hellman-group1-sha1, aes128-cbc, 3des-cbc, hmac-sha1 added",
                    m.kind,
                    m.theirs.join(",")
                );
                match handshake(&r, &addr, opts, preferred, deadline).await {
                    Ok((h, s)) => (h, s, true),
                    Err(HandshakeError::Fatal(e)) => return Err(e),
                    Err(HandshakeError::Algorithms(m)) => {
                        return Err(SshError::NoCommonAlgorithm {
                            addr,
                            kind: m.kind,
                            ours: m.ours,
                            theirs: m.theirs,
                        })
                    }
                }
            }
        };
        tracing::debug!(
            "{addr}: handshake done after {:?} (legacy: {legacy})",
            start.elapsed()
        );

        let req = auth::AuthRequest {
            addr: &addr,
            user: &r.user,
            host: &r.host,
            explicit_keys: r.explicit_keys.clone(),
            default_keys: r.default_keys.clone(),
            use_agent: opts.use_agent,
            password: opts.password.clone(),
        };
        let auth_method =
            match tokio::time::timeout(remaining(deadline), auth::authenticate(&mut handle, &req))
                .await
            {
                Ok(r) => r?,
                Err(_) => {
                    return Err(SshError::Timeout {
                        addr,
                        phase: "authentication",
                        after: opts.connect_timeout,
                    });
                }
            };
        tracing::debug!(
            "{addr}: authenticated as {} by {auth_method} after {:?}",
            r.user,
            start.elapsed()
        );

        let (names, fingerprint) = match shared.lock() {
            Ok(s) => (s.names.clone(), s.fingerprint.clone()),
            Err(_) => (None, None),
        };
        let (kex, host_key_algorithm, cipher, mac) =
            names.unwrap_or_else(|| ("?".into(), "?".into(), "?".into(), "?".into()));
        let info = ConnectionInfo {
            alias: (r.alias != r.host).then(|| r.alias.clone()),
            host: r.host,
            port: r.port,
            user: r.user,
            kex,
            host_key_algorithm,
            cipher,
            mac,
            legacy,
            host_key_fingerprint: fingerprint.unwrap_or_default(),
            auth_method,
            known_hosts: r.known_hosts,
        };
        Ok(Session { handle, info })
    }

    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// Start `command` (interpreted by the remote user's shell) on a new channel.
    pub async fn exec(&self, command: &str) -> Result<RemoteChild, SshError> {
        let addr = self.info.addr();
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.channel_error(e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| self.channel_error(e))?;
        let (read, write) = channel.split();
        Ok(RemoteChild::spawn(addr, read, write))
    }

    /// One round trip to the server (a keepalive request, and its
    /// answer): everything sent before, a channel's close among them, has
    /// been read by then.
    pub async fn ping(&self) -> Result<(), SshError> {
        self.handle
            .send_ping()
            .await
            .map_err(|e| self.channel_error(e))
    }

    fn channel_error(&self, e: russh::Error) -> SshError {
        let addr = self.info.addr();
        if self.handle.is_closed() {
            SshError::Disconnected {
                addr,
                detail: e.to_string(),
            }
        } else {
            SshError::Channel {
                addr,
                detail: e.to_string(),
            }
        }
    }

    /// Run `command`, feed it `stdin` and EOF, and collect its output.
    pub async fn run(&self, command: &str, stdin: &[u8]) -> Result<Output, SshError> {
        let mut stdout = Vec::new();
        let mut out = self
            .run_streamed(command, stdin, &mut |chunk| stdout.extend_from_slice(chunk))
            .await?;
        out.stdout = stdout;
        Ok(out)
    }

    /// Run `command` as [`Session::run`] does, but hand its stdout to
    /// `sink` as it arrives instead of collecting it (the returned
    /// `stdout` is empty): a large output is never held whole.
    pub async fn run_streamed(
        &self,
        command: &str,
        stdin: &[u8],
        sink: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<Output, SshError> {
        let addr = self.info.addr();
        let mut child = self.exec(command).await?;
        let mut input = child.take_stdin();
        let mut out = child.take_stdout();
        let mut err = child.take_stderr();
        let writer = async {
            if let Some(w) = input.as_mut() {
                // The command may exit without reading; that is its business.
                if let Err(e) = w.write_all(stdin).await {
                    tracing::debug!("{addr}: stdin: {e}");
                }
                let _ = w.shutdown().await;
            }
        };
        let readers = async {
            let mut e = Vec::new();
            let ro = async {
                let Some(r) = out.as_mut() else {
                    return Ok(());
                };
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match r.read(&mut buf).await? {
                        0 => return Ok(()),
                        n => sink(&buf[..n]),
                    }
                }
            };
            let re = async {
                match err.as_mut() {
                    Some(r) => r.read_to_end(&mut e).await.map(drop),
                    None => Ok(()),
                }
            };
            let (a, b) = tokio::join!(ro, re);
            a.and(b).map(|_| e)
        };
        tokio::pin!(writer);
        tokio::pin!(readers);
        let mut writer_done = false;
        let collected = loop {
            tokio::select! {
                _ = &mut writer, if !writer_done => writer_done = true,
                r = &mut readers => break r,
            }
        };
        let stderr = collected.map_err(|source: std::io::Error| SshError::Io {
            addr: addr.clone(),
            source,
        })?;
        let status = child.wait().await?;
        Ok(Output {
            status,
            stdout: Vec::new(),
            stderr,
        })
    }

    /// Close the connection politely.
    pub async fn disconnect(self) -> Result<(), SshError> {
        let addr = self.info.addr();
        self.handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await
            .map_err(|e| SshError::Disconnected {
                addr,
                detail: e.to_string(),
            })
    }
}

/// Compile-time checks: sessions and children move between tasks, and
/// `connect` can be spawned.
#[allow(dead_code)]
fn _assert_send_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Session>();
    send_sync::<ConnectionInfo>();
    send_sync::<SshError>();
    fn child_send<T: Send>() {}
    child_send::<RemoteChild>();
    let opts = ConnectOptions::default();
    send(&Session::connect("h", &opts));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts_with_config(text: &str, name: &str) -> (ConnectOptions, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "hotclone-ssh-resolve-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("config");
        std::fs::write(&path, text).expect("write config");
        let opts = ConnectOptions {
            ssh_config: Some(path),
            identity_files: vec![PathBuf::from("/cli/key")],
            ..Default::default()
        };
        (opts, dir)
    }

    #[test]
    fn precedence_command_line_then_config_then_defaults() {
        let text = "Host old\n HostName 198.51.100.13\n User admin\n Port 2222\n IdentityFile /cfg/key\n UserKnownHostsFile /cfg/kh\n";
        let (opts, dir) = opts_with_config(text, "prec");
        let r = resolve("old", &opts).expect("resolve");
        assert_eq!(
            (r.host.as_str(), r.port, r.user.as_str()),
            ("198.51.100.13", 2222, "admin")
        );
        assert_eq!(r.alias, "old");
        assert_eq!(
            r.explicit_keys,
            vec![PathBuf::from("/cli/key"), PathBuf::from("/cfg/key")]
        );
        assert_eq!(r.known_hosts, PathBuf::from("/cfg/kh"));

        let r = resolve("root@old:22", &opts).expect("resolve");
        assert_eq!(
            (r.host.as_str(), r.port, r.user.as_str()),
            ("198.51.100.13", 22, "root")
        );

        let explicit = ConnectOptions {
            known_hosts: Some(PathBuf::from("/cli/kh")),
            ..opts.clone()
        };
        assert_eq!(
            resolve("old", &explicit).expect("resolve").known_hosts,
            PathBuf::from("/cli/kh")
        );

        let r = resolve("other", &opts).expect("resolve");
        assert_eq!((r.host.as_str(), r.port), ("other", 22));
        let expected_user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".into());
        assert_eq!(r.user, expected_user);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_explicit_config_and_bad_destination_are_errors() {
        let opts = ConnectOptions {
            ssh_config: Some(PathBuf::from("/nonexistent/ssh_config")),
            ..Default::default()
        };
        let err = resolve("h", &opts).err().expect("missing config");
        assert!(err.to_string().contains("/nonexistent/ssh_config"), "{err}");
        let err = resolve("h:notaport", &ConnectOptions::default())
            .err()
            .expect("bad port");
        assert!(matches!(err, SshError::InvalidDestination { .. }), "{err}");
    }

    #[test]
    fn debug_never_shows_the_password_provider() {
        struct P;
        impl PasswordProvider for P {
            fn password(&self, _: &str, _: &str) -> Option<String> {
                Some("hunter2".into())
            }
        }
        let opts = ConnectOptions {
            password: Some(Arc::new(P)),
            ..Default::default()
        };
        let s = format!("{opts:?}");
        assert!(!s.contains("hunter2") && s.contains("<provider>"), "{s}");
    }
}
