//! The clone's health: the user's checks (`--check`), parsed once before
//! anything is touched: `tcp:PORT` (a TCP connect to the first production
//! address), `tcp:HOST:PORT`, and `cmd:COMMAND` (run on the clone over SSH,
//! exit 0 passes); and the services that must run on it, asked of its own
//! init. [`check_once`] is the one judgement both `rehearse` and `cutover`
//! make, so a rehearsal that passes means the cutover's check passes too.

use std::path::Path;
use std::time::Duration;

use super::services::ServiceManager;
use crate::ssh::Session;

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

    /// Every `--check` given, parsed; the first bad one is the error.
    pub fn parse_all(texts: &[String]) -> Result<Vec<Check>, String> {
        texts.iter().map(|t| Check::parse(t)).collect()
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

/// A TCP connect to `host:port` within `timeout` (from inside `netns`
/// when given: the rehearsal's isolated network).
pub async fn tcp(
    host: &str,
    port: u16,
    timeout: Duration,
    netns: Option<&Path>,
) -> Result<(), String> {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let connect = async {
        match netns {
            Some(ns) => {
                let sa = addr
                    .parse()
                    .map_err(|_| std::io::Error::other("not an IP address"))?;
                crate::netns::connect_async(ns, sa, timeout).await
            }
            None => tokio::net::TcpStream::connect(&addr).await,
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: no answer within {timeout:?}")),
    }
}

/// What the clone must show to be healthy.
pub struct Expected<'a> {
    /// Services that must run, asked of the clone's own init.
    pub services: &'a [String],
    pub checks: &'a [Check],
    /// The address `tcp:PORT` checks connect to (the first production one).
    pub first_address: &'a str,
    /// Where TCP checks connect from (`None`: here).
    pub netns: Option<&'a Path>,
}

/// One health check's outcome: its name (`cron runs`, `tcp ADDR:80`) and,
/// when it failed, a sentence that says so (`cron does not run on the
/// clone`, `tcp ADDR:80: connection refused`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    pub failure: Option<String>,
}

impl Verdict {
    /// The report's line: the name, or the failure.
    pub fn line(&self) -> String {
        self.failure.clone().unwrap_or_else(|| self.name.clone())
    }
}

/// One round of the health checks on the clone over `session`, in order:
/// every service, then every check.
pub async fn check_once(
    session: &Session,
    manager: &dyn ServiceManager,
    expected: &Expected<'_>,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    let first = expected.first_address;
    for s in expected.services {
        let failure = match session.run(&manager.is_running(s), b"").await {
            Ok(o) if o.status.success() => None,
            Ok(_) => Some(format!("{s} does not run on the clone")),
            Err(e) => Some(format!("{s}: cannot ask the clone ({e})")),
        };
        out.push(Verdict {
            name: format!("{s} runs"),
            failure,
        });
    }
    for c in expected.checks {
        let result = match c {
            Check::Tcp { host, port } => {
                tcp(
                    host.as_deref().unwrap_or(first),
                    *port,
                    Duration::from_secs(5),
                    expected.netns,
                )
                .await
            }
            Check::Cmd { command } => match session.run(command, b"").await {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(format!(
                    "exit {}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => Err(e.to_string()),
            },
        };
        let name = c.describe(first);
        out.push(Verdict {
            failure: result.err().map(|e| format!("{name}: {e}")),
            name,
        });
    }
    out
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
