//! The ephemeral key pairs of a migration's rescue VM, made by the client
//! at launch: the VM's SSH host key (so the client knows it before it
//! first connects, and a different answer is refused) and the client's
//! login key. Both live only in the migration's state directory (mode
//! 0600) and in the VM's RAM; nothing of them is written into the clone.

use std::path::{Path, PathBuf};

use russh::keys::ssh_key::{private::Ed25519Keypair, LineEnding, PrivateKey};
use russh::keys::HashAlg;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("making a key: {0}")]
    Make(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A fresh Ed25519 key pair.
pub struct KeyPair {
    key: PrivateKey,
}

impl KeyPair {
    pub fn generate() -> Result<KeyPair, KeyError> {
        let seed = crate::random::bytes::<32>().map_err(|source| KeyError::Io {
            path: "/dev/urandom".into(),
            source,
        })?;
        Ok(KeyPair {
            key: PrivateKey::from(Ed25519Keypair::from_seed(&seed)),
        })
    }

    /// The private key in OpenSSH format.
    pub fn private_openssh(&self) -> Result<String, KeyError> {
        self.key
            .to_openssh(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| KeyError::Make(e.to_string()))
    }

    /// `ssh-ed25519 AAAA... comment`.
    pub fn public_openssh(&self, comment: &str) -> Result<String, KeyError> {
        let text = self
            .key
            .public_key()
            .to_openssh()
            .map_err(|e| KeyError::Make(e.to_string()))?;
        Ok(format!("{text} {comment}"))
    }

    /// `SHA256:...`, as ssh and dropbear show it.
    pub fn fingerprint(&self) -> String {
        self.key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }
}

/// Write `text` to `path` readable by the owner only (created that way, so
/// there is no moment when others could read it).
pub fn write_private(path: &Path, text: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fresh_and_in_openssh_form() {
        let a = KeyPair::generate().unwrap();
        let b = KeyPair::generate().unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        let private = a.private_openssh().unwrap();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let public = a.public_openssh("hotclone-rescue").unwrap();
        assert!(public.starts_with("ssh-ed25519 AAAA"), "{public}");
        assert!(public.ends_with(" hotclone-rescue"));
        // Parsed back, the private key is the same key.
        let back = russh::keys::decode_secret_key(&private, None).unwrap();
        assert_eq!(
            back.public_key().fingerprint(HashAlg::Sha256).to_string(),
            a.fingerprint()
        );
        assert!(a.fingerprint().starts_with("SHA256:"));
    }

    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!("hotclone-key-{}", std::process::id()));
        write_private(&p, b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_file(&p).unwrap();
    }
}
