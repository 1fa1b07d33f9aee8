//! Parsing `[user@]host[:port]` destinations.

use std::fmt;
use std::str::FromStr;

use super::SshError;

/// Where to connect, as given on the command line. `host` may be an
/// ssh_config alias (`Host` pattern); it is resolved by [`super::Session::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

fn invalid(input: &str, reason: &str) -> SshError {
    SshError::InvalidDestination {
        input: input.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_port(input: &str, port: &str) -> Result<u16, SshError> {
    match port.parse::<u16>() {
        Ok(0) => Err(invalid(input, "port 0 is not a valid port")),
        Ok(p) => Ok(p),
        Err(_) => Err(invalid(
            input,
            &format!("port {port:?} is not a number from 1 to 65535"),
        )),
    }
}

impl FromStr for Destination {
    type Err = SshError;

    /// Accepts `host`, `user@host`, `host:port`, `user@host:port`,
    /// `[v6addr]`, `[v6addr]:port`, a bare IPv6 address (no port), and an
    /// optional `ssh://` prefix. The user is everything before the last `@`.
    fn from_str(input: &str) -> Result<Self, SshError> {
        let s = input.strip_prefix("ssh://").unwrap_or(input);
        let s = s.strip_suffix('/').unwrap_or(s);
        if s.is_empty() {
            return Err(invalid(input, "it is empty"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(input, "it contains whitespace"));
        }
        let (user, rest) = match s.rfind('@') {
            Some(i) => {
                let user = &s[..i];
                if user.is_empty() {
                    return Err(invalid(input, "the user name before '@' is empty"));
                }
                (Some(user.to_string()), &s[i + 1..])
            }
            None => (None, s),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let Some(close) = inner.find(']') else {
                return Err(invalid(input, "'[' without a closing ']'"));
            };
            let host = &inner[..close];
            let after = &inner[close + 1..];
            let port = if after.is_empty() {
                None
            } else if let Some(p) = after.strip_prefix(':') {
                Some(parse_port(input, p)?)
            } else {
                return Err(invalid(input, "unexpected text after ']' (expected :port)"));
            };
            (host, port)
        } else {
            match rest.matches(':').count() {
                0 => (rest, None),
                1 => {
                    let (h, p) = rest.split_once(':').unwrap_or((rest, ""));
                    (h, Some(parse_port(input, p)?))
                }
                // A bare IPv6 address; a port needs brackets.
                _ => {
                    if rest.parse::<std::net::Ipv6Addr>().is_err() {
                        return Err(invalid(
                            input,
                            "too many ':' (write IPv6 addresses as [addr]:port)",
                        ));
                    }
                    (rest, None)
                }
            }
        };
        if host.is_empty() {
            return Err(invalid(input, "the host is empty"));
        }
        if host.contains(['[', ']', '@', '/']) {
            return Err(invalid(input, "the host contains '[', ']', '@' or '/'"));
        }
        Ok(Destination {
            user,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match (self.host.contains(':'), self.port) {
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (_, None) => write!(f, "{}", self.host),
        }
    }
}

/// `host:port`, with brackets around IPv6 addresses.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Destination {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn plain_forms() {
        assert_eq!(
            d("web1"),
            Destination {
                user: None,
                host: "web1".into(),
                port: None
            }
        );
        assert_eq!(
            d("root@web1"),
            Destination {
                user: Some("root".into()),
                host: "web1".into(),
                port: None
            }
        );
        assert_eq!(
            d("web1:2222"),
            Destination {
                user: None,
                host: "web1".into(),
                port: Some(2222)
            }
        );
        assert_eq!(
            d("admin@198.51.100.11:22"),
            Destination {
                user: Some("admin".into()),
                host: "198.51.100.11".into(),
                port: Some(22)
            }
        );
        assert_eq!(
            d("ssh://u@h:2/"),
            Destination {
                user: Some("u".into()),
                host: "h".into(),
                port: Some(2)
            }
        );
        // The user is everything before the last '@'.
        assert_eq!(d("a@b@h").user.as_deref(), Some("a@b"));
    }

    #[test]
    fn ipv6() {
        assert_eq!(
            d("[2001:db8::1]:2222"),
            Destination {
                user: None,
                host: "2001:db8::1".into(),
                port: Some(2222)
            }
        );
        assert_eq!(
            d("root@[::1]"),
            Destination {
                user: Some("root".into()),
                host: "::1".into(),
                port: None
            }
        );
        assert_eq!(
            d("fe80::1"),
            Destination {
                user: None,
                host: "fe80::1".into(),
                port: None
            }
        );
        assert_eq!(d("[2001:db8::1]:2222").to_string(), "[2001:db8::1]:2222");
        assert_eq!(host_port("::1", 22), "[::1]:22");
        assert_eq!(host_port("h", 22), "h:22");
    }

    #[test]
    fn bad_input() {
        for bad in [
            "",
            "@host",
            "user@",
            "host:",
            "host:0",
            "host:99999",
            "host:ssh",
            "[::1",
            "[::1]x",
            "[]:22",
            "a b",
            "h:1:2",
            "user@:22",
        ] {
            let err = bad.parse::<Destination>().expect_err(bad);
            let msg = err.to_string();
            assert!(msg.contains("invalid destination"), "{bad}: {msg}");
        }
    }
}
