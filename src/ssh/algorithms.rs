//! Algorithm lists: russh's modern defaults first, and a legacy extension
//! for OpenSSH 4/5-era servers, used only after a modern handshake failed
//! for lack of a common algorithm.
//!
//! The legacy set adds key exchange `diffie-hellman-group-exchange-sha1`,
//! `diffie-hellman-group14-sha1`, `diffie-hellman-group1-sha1`; ciphers
//! `aes128-cbc`, `aes192-cbc`, `aes256-cbc`, `3des-cbc`; MAC `hmac-sha1`
//! (and its ETM form). russh has no `hmac-md5`: a server offering only MD5
//! MACs cannot be reached (OpenSSH 5 always also offers hmac-sha1). `ssh-rsa`
//! (SHA-1) host keys are already in russh's default host-key list.

use std::borrow::Cow;

use russh::keys::Algorithm;
use russh::{cipher, kex, mac, Preferred};

/// Which negotiation failed for lack of a common algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlgorithmMismatch {
    pub kind: &'static str,
    pub ours: Vec<String>,
    pub theirs: Vec<String>,
}

/// Is this handshake error "no common kex / host key / cipher / MAC"
/// (the kind the legacy set can cure)? Compression mismatches and every
/// other error return `None`.
pub fn classify(err: &russh::Error) -> Option<AlgorithmMismatch> {
    match err {
        russh::Error::NoCommonAlgo { kind, ours, theirs } => {
            let kind = match kind {
                russh::AlgorithmKind::Kex => "key exchange",
                russh::AlgorithmKind::Key => "host key",
                russh::AlgorithmKind::Cipher => "cipher",
                russh::AlgorithmKind::Mac => "MAC",
                russh::AlgorithmKind::Compression => return None,
            };
            Some(AlgorithmMismatch {
                kind,
                ours: ours.clone(),
                theirs: theirs.clone(),
            })
        }
        _ => None,
    }
}

const LEGACY_KEX: &[kex::Name] = &[kex::DH_G14_SHA1, kex::DH_GEX_SHA1, kex::DH_G1_SHA1];
const LEGACY_CIPHERS: &[cipher::Name] = &[
    cipher::AES_128_CTR,
    cipher::AES_128_CBC,
    cipher::AES_192_CBC,
    cipher::AES_256_CBC,
    cipher::TRIPLE_DES_CBC,
];
const LEGACY_MACS: &[mac::Name] = &[mac::HMAC_SHA1_ETM, mac::HMAC_SHA1];

/// russh's modern defaults. `known_key_algorithms` (the types recorded in
/// known_hosts for this host) are moved to the front of the host-key list,
/// as OpenSSH does, so a host known by its RSA key is not reported as
/// unknown because it also has an ed25519 key.
pub fn modern(known_key_algorithms: &[Algorithm]) -> Preferred {
    let mut p = Preferred::default();
    p.key = Cow::Owned(prefer_known(&p.key, known_key_algorithms));
    if aes_in_hardware() {
        p.cipher = Cow::Owned(gcm_first(&p.cipher));
    }
    p
}

/// Whether this CPU has AES and carry-less multiply instructions, with
/// which AES-GCM costs a fraction of ChaCha20-Poly1305's CPU, on both
/// ends of the connection (issue 16: the copy shares its cores with the
/// decryption).
fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `ciphers` with AES-256-GCM moved to the front (when offered at all).
fn gcm_first(ciphers: &[cipher::Name]) -> Vec<cipher::Name> {
    let (mut front, back): (Vec<cipher::Name>, Vec<cipher::Name>) =
        ciphers.iter().partition(|c| **c == cipher::AES_256_GCM);
    front.extend(back);
    front
}

/// The modern lists with the legacy algorithms appended (modern ones stay
/// preferred, legacy ones only used when nothing else matches).
pub fn legacy(known_key_algorithms: &[Algorithm]) -> Preferred {
    let mut p = modern(known_key_algorithms);
    // Real algorithms go before the ext-info / strict-kex markers.
    let (real, markers): (Vec<kex::Name>, Vec<kex::Name>) = p.kex.iter().copied().partition(|k| {
        !k.as_ref().starts_with("ext-info") && !k.as_ref().starts_with("kex-strict")
    });
    let mut kexes = real;
    kexes.extend(LEGACY_KEX.iter().copied());
    kexes.extend(markers);
    p.kex = Cow::Owned(kexes);
    let mut ciphers = p.cipher.to_vec();
    for c in LEGACY_CIPHERS {
        if !ciphers.contains(c) {
            ciphers.push(*c);
        }
    }
    p.cipher = Cow::Owned(ciphers);
    let mut macs = p.mac.to_vec();
    macs.extend(LEGACY_MACS.iter().copied());
    p.mac = Cow::Owned(macs);
    p
}

fn same_family(a: &Algorithm, b: &Algorithm) -> bool {
    match (a, b) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
        _ => a == b,
    }
}

fn prefer_known(list: &[Algorithm], known: &[Algorithm]) -> Vec<Algorithm> {
    let (mut front, back): (Vec<Algorithm>, Vec<Algorithm>) = list
        .iter()
        .cloned()
        .partition(|a| known.iter().any(|k| same_family(a, k)));
    front.extend(back);
    front
}

/// Names of the algorithms offered in `p` (for [`super::ConnectionInfo`]).
pub fn names(p: &Preferred) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
    (
        p.kex.iter().map(|k| k.as_ref().to_string()).collect(),
        p.key.iter().map(|k| k.to_string()).collect(),
        p.cipher.iter().map(|c| c.as_ref().to_string()).collect(),
        p.mac.iter().map(|m| m.as_ref().to_string()).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_is_offered_first_and_nothing_is_dropped() {
        let order = gcm_first(&Preferred::default().cipher);
        assert_eq!(order[0], cipher::AES_256_GCM);
        assert_eq!(order.len(), Preferred::default().cipher.len());
        assert!(order.contains(&cipher::CHACHA20_POLY1305));
        assert!(gcm_first(&[cipher::AES_128_CBC]) == vec![cipher::AES_128_CBC]);
    }

    #[test]
    fn classify_no_common_algorithms() {
        let err = russh::Error::NoCommonAlgo {
            kind: russh::AlgorithmKind::Kex,
            ours: vec!["curve25519-sha256".into()],
            theirs: vec!["diffie-hellman-group14-sha1".into()],
        };
        let m = classify(&err).expect("kex mismatch");
        assert_eq!(m.kind, "key exchange");
        assert_eq!(m.theirs, vec!["diffie-hellman-group14-sha1".to_string()]);
        for (kind, name) in [
            (russh::AlgorithmKind::Key, "host key"),
            (russh::AlgorithmKind::Cipher, "cipher"),
            (russh::AlgorithmKind::Mac, "MAC"),
        ] {
            let err = russh::Error::NoCommonAlgo {
                kind,
                ours: vec![],
                theirs: vec![],
            };
            assert_eq!(classify(&err).map(|m| m.kind), Some(name));
        }
        let err = russh::Error::NoCommonAlgo {
            kind: russh::AlgorithmKind::Compression,
            ours: vec![],
            theirs: vec![],
        };
        assert_eq!(classify(&err), None);
        assert_eq!(classify(&russh::Error::Disconnect), None);
        assert_eq!(classify(&russh::Error::UnknownKey), None);
    }

    #[test]
    fn legacy_extends_modern() {
        let m = modern(&[]);
        let l = legacy(&[]);
        let (mk, _, mc, mm) = names(&m);
        let (lk, _, lc, lm) = names(&l);
        assert!(!mk.iter().any(|k| k.ends_with("sha1")), "{mk:?}");
        assert!(!mm.contains(&"hmac-sha1".to_string()));
        // Modern first, in order, then legacy.
        assert_eq!(
            &lk[..mk
                .iter()
                .filter(|k| !k.starts_with("ext-") && !k.starts_with("kex-"))
                .count()],
            &mk[..mk
                .iter()
                .filter(|k| !k.starts_with("ext-") && !k.starts_with("kex-"))
                .count()]
        );
        for k in [
            "diffie-hellman-group14-sha1",
            "diffie-hellman-group-exchange-sha1",
            "diffie-hellman-group1-sha1",
            "ext-info-c",
        ] {
            assert!(lk.contains(&k.to_string()), "{k} in {lk:?}");
        }
        assert!(
            lk.iter().position(|k| k == "diffie-hellman-group1-sha1")
                < lk.iter().position(|k| k == "ext-info-c")
        );
        for c in ["aes128-ctr", "aes128-cbc", "3des-cbc"] {
            assert!(lc.contains(&c.to_string()), "{c} in {lc:?}");
        }
        assert_eq!(lc.iter().filter(|c| *c == "aes128-ctr").count(), 1);
        assert_eq!(&lc[..mc.len()], &mc[..]);
        assert!(lm.contains(&"hmac-sha1".to_string()));
        assert!(l.key.contains(&Algorithm::Rsa { hash: None }));
    }

    #[test]
    fn known_key_types_go_first() {
        let p = modern(&[Algorithm::Rsa { hash: None }]);
        assert!(matches!(p.key[0], Algorithm::Rsa { .. }));
        assert!(matches!(p.key[1], Algorithm::Rsa { .. }));
        assert!(matches!(p.key[2], Algorithm::Rsa { .. }));
        assert_eq!(p.key[3], Algorithm::Ed25519);
        let p = modern(&[]);
        assert_eq!(p.key[0], Algorithm::Ed25519);
    }
}
