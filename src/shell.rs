//! Quoting for POSIX `sh`, in one place: the remote commands hotclone runs
//! on a source (its own sh), in the rescue system and in a chroot, and the
//! commands it shows a user to paste. Single quotes keep every byte but
//! NUL as it is; a `'` inside becomes `'\''`. Nothing here fails.

/// `raw` as one single-quoted word, byte for byte (paths need not be
/// UTF-8).
pub fn quote_bytes(raw: &[u8]) -> Vec<u8> {
    let mut q = Vec::with_capacity(raw.len() + 2);
    q.push(b'\'');
    for &b in raw {
        if b == b'\'' {
            q.extend_from_slice(b"'\\''");
        } else {
            q.push(b);
        }
    }
    q.push(b'\'');
    q
}

/// `s` as one single-quoted word.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `s` as a word a user reads and pastes: bare when it holds only
/// characters no shell treats specially, else [`quote`]d.
pub fn quote_for_paste(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        quote(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_round_trip_through_sh() {
        for word in ["/srv/it's", "a b", "$(rm -rf /)", "", "tab\there", "'"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(word)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }
        let raw = b"/srv/\xff\xfe'x";
        let mut cmd = b"printf %s ".to_vec();
        cmd.extend_from_slice(&quote_bytes(raw));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(std::ffi::OsStr::from_bytes(&cmd))
            .output()
            .unwrap();
        assert_eq!(out.stdout, raw);
    }

    #[test]
    fn paste_quoting_leaves_plain_paths_bare() {
        assert_eq!(quote_for_paste("/var"), "/var");
        assert_eq!(quote_for_paste("/srv/my data"), "'/srv/my data'");
        assert_eq!(quote_for_paste("/it's"), "'/it'\\''s'");
        assert_eq!(quote_for_paste(""), "''");
    }

    use std::os::unix::ffi::OsStrExt;
}
