//! User authentication, in this order: key files (`-i`, then ssh_config
//! IdentityFile, then the default `~/.ssh/id_{ed25519,ecdsa,rsa}` that
//! exist), agent keys, then a password from the [`PasswordProvider`] (also
//! used to answer a keyboard-interactive password prompt).
//!
//! RSA keys sign with the best hash the server announces in `server-sig-algs`
//! (plain `ssh-rsa` when it announces nothing, like OpenSSH 5). If the server
//! refuses an `rsa-sha2-*` signature, the same key is retried once with
//! `ssh-rsa` (SHA-1): servers restricted to the OpenSSH 5 set need that.
//!
//! Encrypted key files are not decrypted (the library never prompts): they are
//! skipped with a note telling the user to load them into ssh-agent.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};

use super::{PasswordProvider, SshError};

pub(crate) struct AuthRequest<'a> {
    pub addr: &'a str,
    pub user: &'a str,
    /// Host name given to the password provider.
    pub host: &'a str,
    /// Explicit files (from -i and ssh_config): a missing one is noted.
    pub explicit_keys: Vec<PathBuf>,
    /// Default files: used only when they exist.
    pub default_keys: Vec<PathBuf>,
    pub use_agent: bool,
    pub password: Option<Arc<dyn PasswordProvider>>,
}

struct State<'a, H: russh::client::Handler> {
    handle: &'a mut Handle<H>,
    req: &'a AuthRequest<'a>,
    tried: Vec<String>,
    server_methods: Option<Vec<String>>,
    rsa_hash: Option<Option<HashAlg>>,
    tried_keys: Vec<PublicKey>,
}

fn method_names(m: &russh::MethodSet) -> Vec<String> {
    m.iter()
        .map(|k| <&'static str>::from(k).to_string())
        .collect()
}

impl<'a, H: russh::client::Handler> State<'a, H> {
    fn lost(&self, e: impl std::fmt::Display) -> SshError {
        SshError::Disconnected {
            addr: self.req.addr.to_string(),
            detail: format!("during authentication: {e}"),
        }
    }

    fn server_allows(&self, method: &str) -> bool {
        match &self.server_methods {
            Some(m) => m.iter().any(|x| x == method),
            None => true,
        }
    }

    fn record_failure(&mut self, r: &AuthResult) {
        if let AuthResult::Failure {
            remaining_methods, ..
        } = r
        {
            if !remaining_methods.is_empty() {
                self.server_methods = Some(method_names(remaining_methods));
            }
        }
    }

    /// The RSA hash the server announced (`None` = plain ssh-rsa), asked once.
    async fn rsa_hash(&mut self) -> Option<HashAlg> {
        if self.rsa_hash.is_none() {
            let best = self
                .handle
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten();
            tracing::debug!("{}: server-sig-algs gives RSA hash {best:?}", self.req.addr);
            self.rsa_hash = Some(best);
        }
        self.rsa_hash.flatten()
    }

    async fn hashes_for(&mut self, key: &PublicKey) -> Vec<Option<HashAlg>> {
        if key.algorithm().is_rsa() {
            match self.rsa_hash().await {
                Some(h) => vec![Some(h), None],
                None => vec![None],
            }
        } else {
            vec![None]
        }
    }

    async fn try_file(&mut self, path: &Path) -> Result<Option<String>, SshError> {
        let name = path.display().to_string();
        let key = match russh::keys::load_secret_key(path, None) {
            Ok(k) => k,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                self.tried.push(format!(
                    "{name} (encrypted; load it into ssh-agent with ssh-add)"
                ));
                return Ok(None);
            }
            Err(e) => {
                self.tried.push(format!("{name} (unreadable: {e})"));
                return Ok(None);
            }
        };
        let public = key.public_key().clone();
        if self.tried_keys.contains(&public) {
            return Ok(None);
        }
        self.tried_keys.push(public.clone());
        let key = Arc::new(key);
        for hash in self.hashes_for(&public).await {
            let label = sig_label(&public, hash);
            let r = self
                .handle
                .authenticate_publickey(
                    self.req.user,
                    PrivateKeyWithHashAlg::new(key.clone(), hash),
                )
                .await
                .map_err(|e| self.lost(e))?;
            if r.success() {
                return Ok(Some(format!("publickey {name}")));
            }
            self.record_failure(&r);
            self.tried.push(format!("publickey {name} ({label})"));
            tracing::debug!("{}: key {name} refused with {label}", self.req.addr);
        }
        Ok(None)
    }

    async fn try_agent(&mut self) -> Result<Option<String>, SshError> {
        let mut agent = match AgentClient::connect_env().await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!("{}: no ssh-agent: {e}", self.req.addr);
                if std::env::var_os("SSH_AUTH_SOCK").is_some() {
                    self.tried.push(format!("agent (cannot connect: {e})"));
                }
                return Ok(None);
            }
        };
        let identities = match agent.request_identities().await {
            Ok(ids) => ids,
            Err(e) => {
                self.tried.push(format!("agent (cannot list keys: {e})"));
                return Ok(None);
            }
        };
        if identities.is_empty() {
            self.tried.push("agent (no keys loaded)".into());
        }
        for identity in identities {
            let AgentIdentity::PublicKey { key, comment } = identity else {
                continue;
            };
            if self.tried_keys.contains(&key) {
                continue;
            }
            self.tried_keys.push(key.clone());
            for hash in self.hashes_for(&key).await {
                let label = sig_label(&key, hash);
                match self
                    .handle
                    .authenticate_publickey_with(self.req.user, key.clone(), hash, &mut agent)
                    .await
                {
                    Ok(r) if r.success() => return Ok(Some(format!("agent ({comment})"))),
                    Ok(r) => {
                        self.record_failure(&r);
                        self.tried.push(format!("agent key {comment:?} ({label})"));
                    }
                    Err(e) => {
                        self.tried
                            .push(format!("agent key {comment:?} ({label}: {e})"));
                        if self.handle.is_closed() {
                            return Err(self.lost(e));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    async fn try_password(
        &mut self,
        provider: Arc<dyn PasswordProvider>,
    ) -> Result<Option<String>, SshError> {
        let (user, host) = (self.req.user, self.req.host);
        if self.server_allows("password") {
            let Some(password) = provider.password(user, host) else {
                self.tried.push("password (none given)".into());
                return Ok(None);
            };
            let r = self
                .handle
                .authenticate_password(user, password)
                .await
                .map_err(|e| self.lost(e))?;
            if r.success() {
                return Ok(Some("password".into()));
            }
            self.record_failure(&r);
            self.tried.push("password (refused)".into());
            return Ok(None);
        }
        if self.server_allows("keyboard-interactive") {
            let Some(password) = provider.password(user, host) else {
                self.tried
                    .push("keyboard-interactive (no password given)".into());
                return Ok(None);
            };
            let mut resp = self
                .handle
                .authenticate_keyboard_interactive_start(user, None)
                .await
                .map_err(|e| self.lost(e))?;
            // Answer at most a few rounds: one hidden prompt gets the password,
            // empty rounds get empty answers.
            for _ in 0..4 {
                match resp {
                    KeyboardInteractiveAuthResponse::Success => {
                        return Ok(Some("keyboard-interactive password".into()))
                    }
                    KeyboardInteractiveAuthResponse::Failure {
                        remaining_methods, ..
                    } => {
                        if !remaining_methods.is_empty() {
                            self.server_methods = Some(method_names(&remaining_methods));
                        }
                        break;
                    }
                    KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                        let answers = prompts
                            .iter()
                            .map(|p| {
                                if p.echo {
                                    String::new()
                                } else {
                                    password.clone()
                                }
                            })
                            .collect();
                        resp = self
                            .handle
                            .authenticate_keyboard_interactive_respond(answers)
                            .await
                            .map_err(|e| self.lost(e))?;
                    }
                }
            }
            self.tried
                .push("keyboard-interactive password (refused)".into());
        }
        Ok(None)
    }
}

fn sig_label(key: &PublicKey, hash: Option<HashAlg>) -> String {
    if key.algorithm().is_rsa() {
        match hash {
            Some(HashAlg::Sha512) => "rsa-sha2-512".to_string(),
            Some(HashAlg::Sha256) => "rsa-sha2-256".to_string(),
            _ => "ssh-rsa".to_string(),
        }
    } else {
        key.algorithm().to_string()
    }
}

/// Authenticate; returns a description of the method that worked.
pub(crate) async fn authenticate<H: russh::client::Handler>(
    handle: &mut Handle<H>,
    req: &AuthRequest<'_>,
) -> Result<String, SshError> {
    let mut st = State {
        handle,
        req,
        tried: Vec::new(),
        server_methods: None,
        rsa_hash: None,
        tried_keys: Vec::new(),
    };

    // "none" first, like OpenSSH: it tells which methods the server accepts.
    let r = st
        .handle
        .authenticate_none(req.user)
        .await
        .map_err(|e| st.lost(e))?;
    if r.success() {
        return Ok("none".into());
    }
    st.record_failure(&r);
    tracing::debug!("{}: server accepts {:?}", req.addr, st.server_methods);

    if st.server_allows("publickey") {
        let mut seen: Vec<&Path> = Vec::new();
        for path in &req.explicit_keys {
            if seen.contains(&path.as_path()) {
                continue;
            }
            seen.push(path);
            if !path.exists() {
                st.tried.push(format!("{} (not found)", path.display()));
                continue;
            }
            if let Some(m) = st.try_file(path).await? {
                return Ok(m);
            }
        }
        for path in &req.default_keys {
            if seen.contains(&path.as_path()) || !path.exists() {
                continue;
            }
            seen.push(path);
            if let Some(m) = st.try_file(path).await? {
                return Ok(m);
            }
        }
        if req.use_agent {
            if let Some(m) = st.try_agent().await? {
                return Ok(m);
            }
        }
    }
    if let Some(provider) = req.password.clone() {
        if let Some(m) = st.try_password(provider).await? {
            return Ok(m);
        }
    }
    Err(SshError::AuthFailed {
        addr: req.addr.to_string(),
        user: req.user.to_string(),
        tried: st.tried,
        server_methods: st.server_methods.unwrap_or_default(),
    })
}
