//! The prober: from inside the rehearsal's isolated network, watch the
//! clone boot and check it as the cutover will, in this order:
//! 1. the console reaches userspace, and does not stop in a shell;
//! 2. every production address answers (a TCP connect to port 22 that
//!    connects or is refused: either way the address is up);
//! 3. SSH answers on the first address with the source's host key;
//! 4. the health checks ([`crate::cutover::health::check_once`]): the
//!    services that ran on the source run, started by the clone's own
//!    init, and every `--check` passes.
//!
//! Each step yields a [`CheckResult`]; the first that fails ends the
//! probing (later steps are listed as not run), so the report names the
//! cause, not its consequences.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::console::{self, Reached};
use crate::cutover::health::{self, Check};
use crate::cutover::services::ServiceManager;
use crate::ssh::{ConnectOptions, Session, SshError};

/// One check and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    /// `None`: not run (an earlier check failed).
    pub passed: Option<bool>,
    pub detail: String,
    /// Since the VM started.
    pub after_ms: u64,
}

/// What to probe.
pub struct Probe<'a> {
    /// The production IPv4 addresses (no prefix), the first one for SSH.
    pub addresses: Vec<String>,
    /// The source's name as the user gave it (its ssh_config applies).
    pub source: &'a str,
    /// How to reach the source: the prober adds the namespace, the address
    /// and the pinned host key.
    pub connect: ConnectOptions,
    pub host_key: &'a str,
    pub netns: PathBuf,
    pub services: Vec<String>,
    pub checks: Vec<Check>,
    pub console: PathBuf,
    pub boot_timeout: Duration,
    pub health_timeout: Duration,
    /// After the login prompt shows, how long the addresses have to come up.
    pub network_grace: Duration,
}

/// What probing found.
pub struct Outcome {
    pub checks: Vec<CheckResult>,
    pub reached: Reached,
    /// VM start to SSH answering.
    pub boot_ms: Option<u64>,
    /// SSH answering to the last health check.
    pub checks_ms: Option<u64>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed == Some(true))
    }
}

fn read_console(path: &Path) -> console::Reading {
    let bytes = std::fs::read(path).unwrap_or_default();
    console::read(&String::from_utf8_lossy(&bytes))
}

/// Whether `ip:22` answers from inside `netns`: a connection, or a
/// refusal (the host is up and said no).
async fn answers(netns: &Path, ip: &str) -> bool {
    let Ok(sa) = format!("{ip}:22").parse() else {
        return false;
    };
    match crate::netns::connect_async(netns, sa, Duration::from_secs(2)).await {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

/// Probe the clone; `alive` says whether its VM still runs.
pub async fn run(p: &Probe<'_>, manager: &dyn ServiceManager, alive: &dyn Fn() -> bool) -> Outcome {
    let started = Instant::now();
    let ms = |i: Instant| i.duration_since(started).as_millis() as u64;
    let mut checks = Vec::new();
    let mut out = Outcome {
        checks: Vec::new(),
        reached: Reached::Nothing,
        boot_ms: None,
        checks_ms: None,
    };
    let deadline = started + p.boot_timeout;

    // 1 and 2: the console and the addresses, watched together.
    let mut up: Vec<bool> = vec![false; p.addresses.len()];
    let mut login_at: Option<Instant> = None;
    let mut userspace_at: Option<Instant> = None;
    // Where watching stopped: the boot itself (stuck, or no userspace in
    // time), or the network after it.
    let stop: Option<(bool, String)> = loop {
        let reading = read_console(&p.console);
        out.reached = reading.reached;
        if reading.reached >= Reached::Userspace && userspace_at.is_none() {
            userspace_at = Some(Instant::now());
        }
        if reading.reached == Reached::Login && login_at.is_none() {
            login_at = Some(Instant::now());
        }
        if let Some((why, line)) = reading.stuck {
            break Some((true, format!("{why}: the console says {line:?}")));
        }
        for (i, ip) in p.addresses.iter().enumerate() {
            if !up[i] && answers(&p.netns, ip).await {
                up[i] = true;
            }
        }
        if up.iter().all(|u| *u) {
            break None;
        }
        if !alive() {
            let boot = reading.reached < Reached::Userspace && !up.iter().any(|u| *u);
            break Some((boot, "the VM stopped (QEMU exited)".into()));
        }
        let now = Instant::now();
        if login_at.is_some_and(|t| now.duration_since(t) > p.network_grace) {
            break Some((false, format!(
                "the console shows a login prompt but {} did not answer within {} s of it: the clone's network did not come up (its network config names an interface the VM does not have, or the address is not configured)",
                missing(&p.addresses, &up),
                p.network_grace.as_secs()
            )));
        }
        if now >= deadline {
            let boot = reading.reached < Reached::Userspace && !up.iter().any(|u| *u);
            break Some((
                boot,
                format!(
                    "{} within {} s (the console shows {})",
                    if boot {
                        "the boot did not reach userspace".to_string()
                    } else {
                        format!("{} did not answer", missing(&p.addresses, &up))
                    },
                    p.boot_timeout.as_secs(),
                    reading.reached.describe()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // A kernel booted with `quiet` may print nothing on the serial port
    // before its getty; addresses that answer prove userspace as well.
    let network_up = up.iter().any(|u| *u);
    let console_ok =
        (out.reached >= Reached::Userspace || network_up) && !stop.as_ref().is_some_and(|s| s.0);
    let failure: Option<String> = stop.map(|s| s.1);
    checks.push(CheckResult {
        name: "the console reaches userspace".into(),
        passed: Some(console_ok),
        detail: match (console_ok, out.reached >= Reached::Userspace) {
            (true, true) => out.reached.describe().to_string(),
            (true, false) => {
                "userspace runs: its addresses answer (the serial console is quiet so far)".into()
            }
            (false, _) => failure.clone().unwrap_or_default(),
        },
        after_ms: userspace_at.map(ms).unwrap_or(ms(Instant::now())),
    });
    for (i, ip) in p.addresses.iter().enumerate() {
        let passed = if !console_ok { None } else { Some(up[i]) };
        checks.push(CheckResult {
            name: format!("{ip} answers"),
            passed,
            detail: match passed {
                Some(true) => "it answers on the isolated network".into(),
                Some(false) => failure.clone().unwrap_or_default(),
                None => String::new(),
            },
            after_ms: ms(Instant::now()),
        });
    }
    let ssh_name = format!("SSH answers with the source's host key {}", p.host_key);
    let health_names: Vec<String> = p
        .services
        .iter()
        .map(|s| format!("{s} runs"))
        .chain(p.checks.iter().map(|c| c.describe(&p.addresses[0])))
        .collect();
    let not_run = |checks: &mut Vec<CheckResult>, names: &[String]| {
        for n in names {
            checks.push(CheckResult {
                name: n.clone(),
                passed: None,
                detail: String::new(),
                after_ms: 0,
            });
        }
    };
    if failure.is_some() {
        not_run(&mut checks, std::slice::from_ref(&ssh_name));
        not_run(&mut checks, &health_names);
        out.checks = checks;
        return out;
    }

    // 3: SSH with the source's host key, on the first address.
    let opts = ConnectOptions {
        pinned_host_key: Some(p.host_key.to_string()),
        address: Some(p.addresses[0].clone()),
        netns: Some(p.netns.clone()),
        connect_timeout: Duration::from_secs(10),
        ..p.connect.clone()
    };
    let session = loop {
        match Session::connect(p.source, &opts).await {
            Ok(s) => break Ok(s),
            Err(e @ SshError::HostKeyNotPinned { .. }) => break Err(e.to_string()),
            Err(e) if Instant::now() >= deadline => break Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    let ssh_at = Instant::now();
    out.boot_ms = Some(ms(ssh_at));
    let session = match session {
        Ok(s) => {
            checks.push(CheckResult {
                name: ssh_name,
                passed: Some(true),
                detail: format!("at {}", p.addresses[0]),
                after_ms: ms(ssh_at),
            });
            s
        }
        Err(e) => {
            checks.push(CheckResult {
                name: ssh_name,
                passed: Some(false),
                detail: e,
                after_ms: ms(ssh_at),
            });
            not_run(&mut checks, &health_names);
            out.checks = checks;
            return out;
        }
    };

    // 4: the health checks, the cutover's judgement.
    let expected = health::Expected {
        services: &p.services,
        checks: &p.checks,
        first_address: &p.addresses[0],
        netns: Some(&p.netns),
    };
    let verdicts = loop {
        let verdicts = health::check_once(&session, manager, &expected).await;
        if verdicts.iter().all(|v| v.failure.is_none()) || ssh_at.elapsed() > p.health_timeout {
            break verdicts;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let _ = session.disconnect().await;
    let done = Instant::now();
    out.checks_ms = Some(done.duration_since(ssh_at).as_millis() as u64);
    for v in verdicts {
        checks.push(CheckResult {
            passed: Some(v.failure.is_none()),
            detail: v.failure.unwrap_or_else(|| "passed".into()),
            name: v.name,
            after_ms: ms(done),
        });
    }
    out.checks = checks;
    out.reached = out.reached.max(read_console(&p.console).reached);
    out
}

fn missing(addresses: &[String], up: &[bool]) -> String {
    let m: Vec<&str> = addresses
        .iter()
        .zip(up)
        .filter(|(_, u)| !**u)
        .map(|(a, _)| a.as_str())
        .collect();
    m.join(", ")
}
