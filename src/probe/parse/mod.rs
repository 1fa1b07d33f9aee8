//! Pure parsers: text from the source in, plain data out. Each one accepts
//! the shapes old and new systems print (Debian 5 to 13, RHEL 5 to 9,
//! SLES 10+, busybox) and ignores lines it does not understand rather than
//! failing, because a probe that dies on one odd line helps nobody.

/// `fixture!("debian5/fstab")`: a text fixture under fixtures/probe/, for tests.
#[cfg(test)]
macro_rules! fixture {
    ($path:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/probe/",
            $path
        ))
    };
}

pub mod block;
pub mod capabilities;
pub mod mounts;
pub mod net;
pub mod os_release;
pub mod system;

/// Unquote a shell-style value as found in os-release and ifcfg files:
/// `"a b"`, `'a b'` or a bare word.
pub fn unquote(value: &str) -> String {
    let v = value.trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            let inner = &v[1..v.len() - 1];
            return if q == '"' {
                inner.replace("\\\"", "\"").replace("\\\\", "\\")
            } else {
                inner.to_string()
            };
        }
    }
    v.to_string()
}

/// Undo the octal escapes the kernel uses in /proc/mounts and fstab
/// (`\040` for a space, `\011` tab, `\012` newline, `\134` backslash).
pub fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `KEY="value" KEY2="value 2"` pairs as printed by `blkid` and `lsblk -P`.
pub fn quoted_pairs(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some((value, tail)) = after.split_once('"') else {
            break;
        };
        pairs.push((key.trim().to_string(), value.to_string()));
        rest = tail.trim_start();
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_handles_both_quotes_and_bare_words() {
        assert_eq!(unquote("\"Debian GNU/Linux\""), "Debian GNU/Linux");
        assert_eq!(unquote("'12'"), "12");
        assert_eq!(unquote("debian"), "debian");
        assert_eq!(unquote("\""), "\"");
    }

    #[test]
    fn octal_escapes_in_mount_fields() {
        assert_eq!(unescape_octal("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape_octal("/a\\134b"), "/a\\b");
        assert_eq!(unescape_octal("/trailing\\04"), "/trailing\\04");
    }
}
