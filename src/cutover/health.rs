//! The user's health checks (`--check`), parsed once before anything is
//! touched: `tcp:PORT` (a TCP connect to the first production address),
//! `tcp:HOST:PORT`, and `cmd:COMMAND` (run on the clone over SSH, exit 0
//! passes).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Check {
    Tcp { host: Option<String>, port: u16 },
    Cmd { command: String },
}

impl Check {
    pub fn parse(text: &str) -> Result<Check, String> {
        let bad = |why: &str| {
            format!("--check {text:?}: {why}; use tcp:PORT, tcp:HOST:PORT or 'cmd:COMMAND'")
        };
        if let Some(rest) = text.strip_prefix("tcp:") {
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() => (Some(h.to_string()), p),
                _ => (None, rest),
            };
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port must be 1-65535"))?;
            return Ok(Check::Tcp { host, port });
        }
        if let Some(command) = text.strip_prefix("cmd:") {
            if command.trim().is_empty() {
                return Err(bad("the command is empty"));
            }
            return Ok(Check::Cmd {
                command: command.to_string(),
            });
        }
        Err(bad("unknown kind"))
    }

    pub fn describe(&self, default_host: &str) -> String {
        match self {
            Check::Tcp { host, port } => {
                format!("tcp {}:{port}", host.as_deref().unwrap_or(default_host))
            }
            Check::Cmd { command } => format!("`{command}` on the clone"),
        }
    }
}

/// A TCP connect to `host:port` within `timeout`.
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_parse() {
        assert_eq!(
            Check::parse("tcp:80").unwrap(),
            Check::Tcp {
                host: None,
                port: 80
            }
        );
        assert_eq!(
            Check::parse("tcp:198.51.100.11:8080").unwrap(),
            Check::Tcp {
                host: Some("198.51.100.11".into()),
                port: 8080
            }
        );
        assert_eq!(
            Check::parse("cmd:curl -fs http://localhost/").unwrap(),
            Check::Cmd {
                command: "curl -fs http://localhost/".into()
            }
        );
        for bad in ["tcp:", "tcp:0", "tcp:x", "cmd:", "http:80", "80"] {
            let e = Check::parse(bad).unwrap_err();
            assert!(e.contains("tcp:PORT"), "{bad}: {e}");
        }
    }
}
