//! A small, pure `ssh_config(5)` reader: just what hotclone needs to find a
//! host the way `ssh` would.
//!
//! Honoured: `Host` blocks (several patterns per line, `*`, `?`, `!negation`),
//! `HostName` (with `%h` and `%%`), `User`, `Port`, `IdentityFile` (several;
//! `~`, `%d`, `%h`, `%r`, `%u`, `%%`), `UserKnownHostsFile` (the first file).
//! Keywords are case-insensitive; `Key Value` and `Key=Value` both work, and
//! double quotes group words. Like OpenSSH, the first value obtained for each
//! keyword wins (IdentityFile accumulates).
//!
//! Not honoured: `Include` is ignored (put what hotclone needs in the main
//! file, or pass `--ssh-config`), and `Match` blocks are skipped entirely
//! (never applied). Every other keyword is ignored.

use std::path::{Path, PathBuf};

/// What ssh_config says about one host alias.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    pub user_known_hosts_file: Option<PathBuf>,
}

/// Resolve `alias` against config `text`, expanding `~` with `$HOME`.
pub fn resolve(text: &str, alias: &str) -> HostConfig {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    resolve_with_home(text, alias, home.as_deref())
}

/// Does `host` match one glob `pattern` (`*` any run, `?` one character)?
/// Case-insensitive, like OpenSSH's host matching.
pub fn glob_match(pattern: &str, host: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let h: Vec<char> = host.to_lowercase().chars().collect();
    // Iterative matcher with backtracking to the last '*'.
    let (mut pi, mut hi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while hi < h.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == h[hi]) {
            pi += 1;
            hi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, hi));
            pi += 1;
        } else if let Some((sp, sh)) = star {
            pi = sp + 1;
            hi = sh + 1;
            star = Some((sp, sh + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A `Host` line's patterns match when at least one positive pattern
/// matches and no negated one does.
fn host_line_matches(patterns: &[String], alias: &str) -> bool {
    let mut positive = false;
    for pat in patterns {
        if let Some(neg) = pat.strip_prefix('!') {
            if glob_match(neg, alias) {
                return false;
            }
        } else if glob_match(pat, alias) {
            positive = true;
        }
    }
    positive
}

/// Split a config line into keyword and arguments.
fn split_line(line: &str) -> Option<(String, Vec<String>)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // The keyword ends at whitespace or '='.
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let keyword = line[..end].to_ascii_lowercase();
    let mut rest = line[end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has = false;
    for c in rest.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has {
                    args.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has {
        args.push(cur);
    }
    Some((keyword, args))
}

fn expand_tokens(s: &str, alias: &str, remote_user: Option<&str>, home: Option<&Path>) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(alias),
            Some('d') => out.push_str(&home.map(|h| h.display().to_string()).unwrap_or_default()),
            Some('r') => out.push_str(remote_user.unwrap_or("")),
            Some('u') => out.push_str(&std::env::var("USER").unwrap_or_default()),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn expand_path(s: &str, alias: &str, user: Option<&str>, home: Option<&Path>) -> PathBuf {
    let s = expand_tokens(s, alias, user, home);
    match (s.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ if s == "~" => home
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(s)),
        _ => PathBuf::from(s),
    }
}

/// [`resolve`] with an explicit home directory (for tests).
pub fn resolve_with_home(text: &str, alias: &str, home: Option<&Path>) -> HostConfig {
    let mut cfg = HostConfig::default();
    let mut raw_identity: Vec<String> = Vec::new();
    let mut raw_known_hosts: Option<String> = None;
    // Lines before the first Host apply to every host.
    let mut active = true;
    for line in text.lines() {
        let Some((keyword, args)) = split_line(line) else {
            continue;
        };
        match keyword.as_str() {
            "host" => {
                active = host_line_matches(&args, alias);
                continue;
            }
            "match" => {
                active = false;
                continue;
            }
            _ => {}
        }
        if !active {
            continue;
        }
        let Some(first) = args.first() else { continue };
        match keyword.as_str() {
            "hostname" if cfg.hostname.is_none() => {
                cfg.hostname = Some(expand_tokens(first, alias, None, home));
            }
            "user" if cfg.user.is_none() => cfg.user = Some(first.clone()),
            "port" if cfg.port.is_none() => match first.parse::<u16>() {
                Ok(p) if p != 0 => cfg.port = Some(p),
                _ => tracing::warn!("ssh config: ignoring invalid Port {first:?}"),
            },
            "identityfile" => raw_identity.push(first.clone()),
            "userknownhostsfile" if raw_known_hosts.is_none() => {
                raw_known_hosts = Some(first.clone())
            }
            "include" => {
                tracing::debug!("ssh config: Include is not supported; ignoring {first:?}")
            }
            _ => {}
        }
    }
    // %h in paths is the real host name, %r the remote user: expand after
    // everything is known, as OpenSSH does.
    let host = cfg.hostname.clone().unwrap_or_else(|| alias.to_string());
    let user = cfg.user.clone();
    cfg.identity_files = raw_identity
        .iter()
        .map(|s| expand_path(s, &host, user.as_deref(), home))
        .collect();
    cfg.user_known_hosts_file = raw_known_hosts
        .filter(|s| !s.eq_ignore_ascii_case("none"))
        .map(|s| expand_path(&s, &host, user.as_deref(), home));
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "/home/op";

    fn r(text: &str, alias: &str) -> HostConfig {
        resolve_with_home(text, alias, Some(Path::new(HOME)))
    }

    #[test]
    fn globbing() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("web?", "web1"));
        assert!(!glob_match("web?", "web12"));
        assert!(glob_match("*.example.com", "a.b.example.com"));
        assert!(!glob_match("*.example.com", "example.com"));
        assert!(glob_match("198.51.100.*", "198.51.100.13"));
        assert!(glob_match("W*B", "web"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn first_match_wins_and_defaults() {
        let text = "\
# global
Port 2200
Host old-*  !old-skip
  HostName %h.lab.example
  User admin
  IdentityFile ~/.ssh/id_rsa_old
Host old-db
  User root
  Port 22
  IdentityFile=/etc/keys/%h_%r
Host *
  User nobody
  IdentityFile ~/.ssh/id_ed25519
  UserKnownHostsFile ~/lab/known_hosts ~/.ssh/known_hosts2
";
        let c = r(text, "old-db");
        assert_eq!(c.hostname.as_deref(), Some("old-db.lab.example"));
        assert_eq!(c.user.as_deref(), Some("admin"));
        // The global Port line comes first.
        assert_eq!(c.port, Some(2200));
        assert_eq!(
            c.identity_files,
            vec![
                PathBuf::from("/home/op/.ssh/id_rsa_old"),
                PathBuf::from("/etc/keys/old-db.lab.example_admin"),
                PathBuf::from("/home/op/.ssh/id_ed25519"),
            ]
        );
        assert_eq!(
            c.user_known_hosts_file,
            Some(PathBuf::from("/home/op/lab/known_hosts"))
        );

        // Negation excludes the host from the first block.
        let c = r(text, "old-skip");
        assert_eq!(c.hostname, None);
        assert_eq!(c.user.as_deref(), Some("nobody"));

        let c = r(text, "other");
        assert_eq!(c.user.as_deref(), Some("nobody"));
        assert_eq!(
            c.identity_files,
            vec![PathBuf::from("/home/op/.ssh/id_ed25519")]
        );
    }

    #[test]
    fn several_patterns_case_and_equals() {
        let text =
            "HOST a b  c\n\thostname=10.0.0.1\n  PORT = 2222\nhost d\nHostName \"with space\"\n";
        for alias in ["a", "b", "c"] {
            let c = r(text, alias);
            assert_eq!(c.hostname.as_deref(), Some("10.0.0.1"), "{alias}");
            assert_eq!(c.port, Some(2222));
        }
        assert_eq!(r(text, "d").hostname.as_deref(), Some("with space"));
        assert_eq!(r(text, "e"), HostConfig::default());
    }

    #[test]
    fn negation_only_never_matches_and_match_blocks_are_skipped() {
        let text = "Host !x\n User u\nMatch all\n User m\nHost *\n Port 7\n";
        let c = r(text, "y");
        assert_eq!(c.user, None);
        assert_eq!(c.port, Some(7));
    }

    #[test]
    fn bad_port_ignored_and_percent_escapes() {
        let text = "Host h\n Port abc\n Port 23\n HostName 100%%.%h\n UserKnownHostsFile none\n";
        let c = r(text, "h");
        // "Port abc" is ignored, so the next Port applies.
        assert_eq!(c.port, Some(23));
        assert_eq!(c.hostname.as_deref(), Some("100%.h"));
        assert_eq!(c.user_known_hosts_file, None);
    }
}
