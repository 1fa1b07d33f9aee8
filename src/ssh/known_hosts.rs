//! known_hosts checks, on top of russh's reader (which handles
//! `[host]:port` entries for non-22 ports, comma-separated host lists and
//! hashed `|1|salt|hash` entries). A recorded key of another *type* for the
//! same host is not a change: the server picked one algorithm, and the
//! host simply is not known under that type yet.
//!
//! Limits (russh 0.65): fields must be separated by single spaces; `@revoked`
//! and `@cert-authority` lines are ignored (never match); a line for *this*
//! host whose key russh cannot parse makes the check fail with an error
//! naming the file. russh numbers lines without counting `#` comments, so
//! [`check`] converts its number into the real line number.

use std::path::Path;

use russh::keys::{Algorithm, HashAlg, PublicKey};

/// The outcome of checking a server key against a known_hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A line records exactly this key.
    Known,
    /// No line records a key of this type for this host.
    Unknown,
    /// A line (1-based) records a different key of the same type.
    Changed { line: usize },
    /// The file could not be read or has a line russh cannot parse.
    Error(String),
}

pub(crate) fn check(host: &str, port: u16, key: &PublicKey, path: &Path) -> Verdict {
    match russh::keys::check_known_hosts_path(host, port, key, path) {
        Ok(true) => Verdict::Known,
        Ok(false) => Verdict::Unknown,
        Err(russh::keys::Error::KeyChanged { line }) => Verdict::Changed {
            line: real_line(path, line),
        },
        Err(e) => Verdict::Error(e.to_string()),
    }
}

/// Key algorithms recorded for this host (to prefer them in negotiation).
pub(crate) fn known_algorithms(host: &str, port: u16, path: &Path) -> Vec<Algorithm> {
    match russh::keys::known_hosts::known_host_keys_path(host, port, path) {
        Ok(keys) => keys.into_iter().map(|(_, k)| k.algorithm()).collect(),
        Err(e) => {
            tracing::debug!("cannot read {}: {e}", path.display());
            Vec::new()
        }
    }
}

/// russh 0.65 numbers lines without counting `#` comment lines; turn its
/// number into the file's real 1-based line number.
fn real_line(path: &Path, russh_line: usize) -> usize {
    let Ok(text) = std::fs::read_to_string(path) else {
        return russh_line;
    };
    let mut seen = 0;
    for (i, l) in text.split('\n').enumerate() {
        if !l.starts_with('#') {
            seen += 1;
            if seen == russh_line {
                return i + 1;
            }
        }
    }
    russh_line
}

/// Append the key for this host (as `host` or `[host]:port`), creating the
/// file (mode 0600) and its directory if needed. (russh's own
/// `learn_known_hosts_path` starts a new file with an empty line.)
pub(crate) fn learn(host: &str, port: u16, key: &PublicKey, path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let existing = std::fs::read(path).unwrap_or_default();
    let mut line = String::new();
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        line.push('\n');
    }
    if port == 22 {
        line.push_str(host);
    } else {
        line.push_str(&format!("[{host}]:{port}"));
    }
    line.push(' ');
    line.push_str(&key.to_openssh().map_err(|e| e.to_string())?);
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot open for writing: {e}"))?;
    f.write_all(line.as_bytes())
        .map_err(|e| format!("cannot write: {e}"))
}

/// `SHA256:...` as `ssh-keygen -l` prints it.
pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIEnaiyH3mtxkcdWcmtklh6Ng40Eq9V7RjgrLhDS/tLZt";
    const ED_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIDV+Fbb+6x65kaMnBJIv4/6JXxzQ8mnmcsHlPec3wDYw";
    const RSA_A: &str = "AAAAB3NzaC1yc2EAAAADAQABAAAAgQDZW0puIlLe5TS9SzqbndzB5i6vwC24fqLJFaO/hv+rqaxsNfdvPQwqf6aA61nU63WMfsLmGNJahXCLLb17l3wx2tcuSnTV99Ratwy5hPzLVhnICsRHRkk8ooZOx5f6da0kCTBCbM4f9c+YbLWuXmFa4WDgFbpOM8a4AQxqVA0n0Q==";
    // `ssh-keygen -H` of "198.51.100.11 ED_A" and "[198.51.100.12]:2222 ED_A".
    const HASHED: &str = "|1|xk3iLgZJZ1YMDgucU3UpcPjRhsE=|pPJheGy7q6lWQiz+eHnzgYFP4cc= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEnaiyH3mtxkcdWcmtklh6Ng40Eq9V7RjgrLhDS/tLZt \n|1|NksIA+EJWLIGCZhCV7D20231Ppw=|WZuHU/TvRME0tCTfHApWeyCDVAQ= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEnaiyH3mtxkcdWcmtklh6Ng40Eq9V7RjgrLhDS/tLZt \n";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).expect("test key")
    }

    fn file(text: &str) -> (tempdir::Dir, std::path::PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("known_hosts");
        std::fs::write(&path, text).expect("write known_hosts");
        (dir, path)
    }

    /// A tiny self-deleting temp dir (no extra dependency).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let p =
                    std::env::temp_dir().join(format!("hotclone-kh-{}-{n}", std::process::id()));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).expect("temp dir");
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn plain_entries() {
        let text = format!(
            "# comment\nother.example ssh-ed25519 {ED_B}\n198.51.100.11,web1 ssh-ed25519 {ED_A}\n[198.51.100.12]:2222 ssh-ed25519 {ED_A}\n"
        );
        let (_d, p) = file(&text);
        assert_eq!(check("198.51.100.11", 22, &key(ED_A), &p), Verdict::Known);
        assert_eq!(check("web1", 22, &key(ED_A), &p), Verdict::Known);
        // Same type, other key: changed, naming the line (comments count).
        assert_eq!(
            check("198.51.100.11", 22, &key(ED_B), &p),
            Verdict::Changed { line: 3 }
        );
        // Non-22 port uses [host]:port.
        assert_eq!(check("198.51.100.12", 2222, &key(ED_A), &p), Verdict::Known);
        assert_eq!(check("198.51.100.12", 22, &key(ED_A), &p), Verdict::Unknown);
        assert_eq!(check("198.51.100.13", 22, &key(ED_A), &p), Verdict::Unknown);
        // Another key type for a known host is not a change.
        assert_eq!(
            check("198.51.100.11", 22, &key(RSA_A), &p),
            Verdict::Unknown
        );
        assert_eq!(
            known_algorithms("198.51.100.11", 22, &p),
            vec![Algorithm::Ed25519]
        );
    }

    #[test]
    fn hashed_entries() {
        let (_d, p) = file(HASHED);
        assert_eq!(check("198.51.100.11", 22, &key(ED_A), &p), Verdict::Known);
        assert_eq!(
            check("198.51.100.11", 22, &key(ED_B), &p),
            Verdict::Changed { line: 1 }
        );
        assert_eq!(check("198.51.100.12", 2222, &key(ED_A), &p), Verdict::Known);
        assert_eq!(
            check("198.51.100.12", 2222, &key(ED_B), &p),
            Verdict::Changed { line: 2 }
        );
        assert_eq!(check("198.51.100.13", 22, &key(ED_B), &p), Verdict::Unknown);
    }

    #[test]
    fn learn_then_known_and_missing_file() {
        let d = tempdir::Dir::new();
        let p = d.0.join("sub/known_hosts");
        assert_eq!(check("h", 2222, &key(ED_A), &p), Verdict::Unknown);
        learn("h", 2222, &key(ED_A), &p).expect("learn");
        learn("h", 22, &key(RSA_A), &p).expect("learn");
        assert_eq!(check("h", 2222, &key(ED_A), &p), Verdict::Known);
        assert_eq!(check("h", 22, &key(RSA_A), &p), Verdict::Known);
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(text.starts_with("[h]:2222 ssh-ed25519 "), "{text}");
        assert!(fingerprint(&key(ED_A)).starts_with("SHA256:"));
    }
}
