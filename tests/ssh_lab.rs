//! The `ssh` layer against the real lab (`cargo xtask lab up`): modern and
//! legacy OpenSSH, dropbear, key / agent / password auth, known_hosts
//! policies and connection failures.
//!
//! The client must live in the lab's client network namespace. Each test runs
//! its async body on a dedicated thread that first `setns`es into
//! `/run/netns/<client_ns>` and then drives a current-thread tokio runtime, so
//! every socket (and russh's tasks) stays in that namespace.

mod common;

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use hotclone::ssh::{
    ConnectOptions, ExitStatus, HostKeyPolicy, PasswordProvider, Session, SshError,
};

use common::Lab;

/// Run `body` inside network namespace `ns` on a fresh thread.
fn in_ns<T, F, Fut>(ns: &str, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)
            .unwrap_or_else(|e| panic!("open {path}: {e} (is the lab up?)"));
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(body())
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Tests must not pick up the caller's ~/.ssh keys, config or agent: HOME
/// points to an empty directory for the whole test process.
fn isolate_home() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let home = scratch("home");
        std::env::set_var("HOME", &home);
        std::env::remove_var("SSH_AUTH_SOCK");
    });
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/ssh-lab")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn key_opts(lab: &Lab) -> ConnectOptions {
    isolate_home();
    ConnectOptions {
        ssh_config: Some(PathBuf::from("/dev/null")),
        identity_files: vec![lab.id_ed25519.clone(), lab.id_rsa.clone()],
        known_hosts: Some(lab.known_hosts.clone()),
        host_key_policy: HostKeyPolicy::Strict,
        use_agent: false,
        password: None,
        connect_timeout: Duration::from_secs(15),
        keepalive_interval: Duration::from_secs(15),
        pinned_host_key: None,
        address: None,
        netns: None,
    }
}

fn dest(lab: &Lab, source: &str) -> String {
    format!("root@{}", lab.source(source).ip)
}

async fn connect(d: &str, opts: &ConnectOptions) -> Session {
    match Session::connect(d, opts).await {
        Ok(s) => s,
        Err(e) => panic!("connect {d}: {e}"),
    }
}

#[test]
fn uname_on_every_source() {
    let lab = common::lab();
    // debian12-live is live_lab's, which `cargo xtask test` runs beside
    // this binary: its cutover moves that source's address. A VM source
    // runs only while a test has booted it.
    for src in lab
        .sources
        .iter()
        .filter(|s| s.name != "debian12-live" && s.vm_disks.is_empty())
    {
        let d = dest(&lab, &src.name);
        let opts = key_opts(&lab);
        let hostname = src.hostname.clone();
        let name = src.name.clone();
        let (out, info) = in_ns(&lab.client_ns, move || async move {
            let s = connect(&d, &opts).await;
            let out = s
                .run("uname -n", b"")
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let info = s.info().clone();
            s.disconnect()
                .await
                .unwrap_or_else(|e| panic!("disconnect: {e}"));
            (out, info)
        });
        eprintln!("{}: {info:?}", src.name);
        assert_eq!(out.status, ExitStatus::Code(0), "{}: {out:?}", src.name);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            hostname,
            "{}",
            src.name
        );
        assert!(info.host_key_fingerprint.starts_with("SHA256:"), "{info:?}");
        assert!(info.auth_method.starts_with("publickey "), "{info:?}");
        assert_eq!(info.user, "root");
        if src.name == "legacy-ssh" {
            // Only ssh-rsa (SHA-1) signatures are accepted there.
            assert!(
                info.auth_method.contains(&*lab.id_rsa.to_string_lossy()),
                "{info:?}"
            );
        }
    }
}

#[test]
fn exit_status_and_signal_propagate() {
    let lab = common::lab();
    let d = dest(&lab, "debian12");
    let opts = key_opts(&lab);
    let (a, b, c) = in_ns(&lab.client_ns, move || async move {
        let s = connect(&d, &opts).await;
        let a = s
            .run("echo out; echo err >&2; exit 3", b"")
            .await
            .expect("run exit 3");
        let b = s.run("kill -9 $$", b"").await.expect("run kill");
        let c = s.run("true", b"").await.expect("run true");
        (a, b, c)
    });
    assert_eq!(a.status, ExitStatus::Code(3));
    assert!(!a.status.success());
    assert_eq!(a.stdout, b"out\n");
    assert_eq!(a.stderr, b"err\n");
    assert_eq!(b.status, ExitStatus::Signal("KILL".into()));
    assert!(c.status.success());
}

#[test]
fn stdin_round_trip_20_mb() {
    let lab = common::lab();
    let d = dest(&lab, "debian12");
    let opts = key_opts(&lab);
    // Not compressible into a pattern that hides reordering.
    let mut data = vec![0u8; 20 * 1024 * 1024];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let sent = data.clone();
    let (out, counted, elapsed) = in_ns(&lab.client_ns, move || async move {
        let s = connect(&d, &opts).await;
        let t = Instant::now();
        let out = s.run("cat", &sent).await.expect("cat");
        let elapsed = t.elapsed();
        let counted = s.run("wc -c", &sent).await.expect("wc");
        (out, counted, elapsed)
    });
    eprintln!("20 MiB through cat and back in {elapsed:?}");
    assert_eq!(out.status, ExitStatus::Code(0));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "echoed bytes differ");
    assert_eq!(
        String::from_utf8_lossy(&counted.stdout).trim(),
        data.len().to_string()
    );
}

#[test]
fn streaming_exec_with_backpressure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let lab = common::lab();
    let d = dest(&lab, "debian12");
    let opts = key_opts(&lab);
    let (total, status) = in_ns(&lab.client_ns, move || async move {
        let s = connect(&d, &opts).await;
        // 64 MiB of output, read slowly at first: memory must stay bounded
        // (the pump blocks) and nothing may be lost.
        let mut child = s.exec("head -c 67108864 /dev/zero").await.expect("exec");
        let mut out = child.take_stdout().expect("stdout");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut buf = vec![0u8; 65536];
        let mut total = 0usize;
        loop {
            let n = out.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            total += n;
        }
        let mut stdin = child.take_stdin().expect("stdin");
        let _ = stdin.shutdown().await;
        (total, child.wait().await.expect("wait"))
    });
    assert_eq!(total, 64 * 1024 * 1024);
    assert!(status.success());
}

/// Collects `tracing` output of the current thread.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

#[test]
fn legacy_server_triggers_fallback_modern_does_not() {
    let lab = common::lab();
    for (source, want_legacy) in [("legacy-ssh", true), ("debian12", false)] {
        let d = dest(&lab, source);
        let opts = key_opts(&lab);
        let logs = LogBuf::default();
        let l2 = logs.clone();
        let info = in_ns(&lab.client_ns, move || async move {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(l2)
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            let _guard = tracing::subscriber::set_default(subscriber);
            let s = connect(&d, &opts).await;
            let out = s.run("echo ok", b"").await.expect("run");
            assert_eq!(out.stdout, b"ok\n");
            s.info().clone()
        });
        let log = String::from_utf8_lossy(&logs.0.lock().map(|v| v.clone()).unwrap_or_default())
            .into_owned();
        eprintln!("{source}: {info:?}\n{log}");
        assert_eq!(info.legacy, want_legacy, "{source}: {info:?}");
        let fallback_logged = log.contains("offers only legacy SSH algorithms");
        assert_eq!(fallback_logged, want_legacy, "{source}: log was:\n{log}");
        if want_legacy {
            assert!(info.kex.ends_with("-sha1"), "{info:?}");
            assert_eq!(info.host_key_algorithm, "ssh-rsa", "{info:?}");
            assert_eq!(
                (info.cipher.as_str(), info.mac.as_str()),
                ("aes128-ctr", "hmac-sha1"),
                "{info:?}"
            );
        } else {
            assert!(!info.kex.ends_with("-sha1"), "{info:?}");
            assert_eq!(info.host_key_algorithm, "ssh-ed25519", "{info:?}");
        }
    }
}

struct FilePassword(PathBuf);

impl PasswordProvider for FilePassword {
    fn password(&self, _user: &str, _host: &str) -> Option<String> {
        std::fs::read_to_string(&self.0)
            .ok()
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
    }
}

#[test]
fn password_auth() {
    let lab = common::lab();
    let d = dest(&lab, "debian12");
    let mut opts = key_opts(&lab);
    opts.identity_files.clear();
    opts.password = Some(Arc::new(FilePassword(lab.password_file.clone())));
    let (info, out) = in_ns(&lab.client_ns, move || async move {
        let s = connect(&d, &opts).await;
        let out = s.run("id -un", b"").await.expect("run");
        (s.info().clone(), out)
    });
    assert_eq!(info.auth_method, "password", "{info:?}");
    assert_eq!(out.stdout, b"root\n");

    // A wrong password: the error lists what was tried, never the password.
    let d = dest(&lab, "debian12");
    let mut opts = key_opts(&lab);
    opts.identity_files = vec![PathBuf::from("/nonexistent/id_test")];
    struct Wrong;
    impl PasswordProvider for Wrong {
        fn password(&self, _: &str, _: &str) -> Option<String> {
            Some("not-the-password-xyzzy".into())
        }
    }
    opts.password = Some(Arc::new(Wrong));
    let err = in_ns(&lab.client_ns, move || async move {
        Session::connect(&d, &opts).await.err()
    });
    let err = err.expect("a wrong password must fail");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, SshError::AuthFailed { .. }), "{msg}");
    assert!(msg.contains("/nonexistent/id_test (not found)"), "{msg}");
    assert!(msg.contains("password (refused)"), "{msg}");
    assert!(msg.contains("publickey"), "{msg}");
    assert!(!msg.contains("xyzzy"), "{msg}");
}

/// An ssh-agent child process, killed by PID on drop.
struct Agent {
    child: std::process::Child,
    sock: PathBuf,
}

impl Agent {
    fn start(keys: &[&Path]) -> Agent {
        let dir = scratch("agent");
        let sock = dir.join("agent.sock");
        let child = std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start ssh-agent");
        let agent = Agent { child, sock };
        let t = Instant::now();
        while !agent.sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "ssh-agent socket did not appear"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for key in keys {
            let st = std::process::Command::new("ssh-add")
                .arg(key)
                .env("SSH_AUTH_SOCK", &agent.sock)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("ssh-add");
            assert!(st.success(), "ssh-add {}", key.display());
        }
        agent
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn agent_auth_modern_and_legacy() {
    let lab = common::lab();
    isolate_home();
    let agent = Agent::start(&[&lab.id_ed25519, &lab.id_rsa]);
    // The only test that uses an agent; the others set use_agent = false.
    std::env::set_var("SSH_AUTH_SOCK", &agent.sock);
    for source in ["debian12", "legacy-ssh"] {
        let d = dest(&lab, source);
        let mut opts = key_opts(&lab);
        opts.identity_files.clear();
        opts.use_agent = true;
        let (info, out) = in_ns(&lab.client_ns, move || async move {
            let s = connect(&d, &opts).await;
            let out = s.run("echo agent-ok", b"").await.expect("run");
            (s.info().clone(), out)
        });
        eprintln!("{source}: {info:?}");
        assert!(info.auth_method.starts_with("agent"), "{source}: {info:?}");
        assert_eq!(out.stdout, b"agent-ok\n");
    }
    std::env::remove_var("SSH_AUTH_SOCK");
    drop(agent);
}

#[test]
fn unknown_host_is_refused_when_strict() {
    let lab = common::lab();
    let d = dest(&lab, "debian12");
    let dir = scratch("strict");
    let kh = dir.join("known_hosts");
    let mut opts = key_opts(&lab);
    opts.known_hosts = Some(kh.clone());
    let err = in_ns(&lab.client_ns, move || async move {
        Session::connect(&d, &opts).await.err()
    });
    let err = err.expect("unknown host must be refused");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, SshError::UnknownHostKey { .. }), "{msg}");
    assert!(msg.contains("--accept-new"), "{msg}");
    assert!(msg.contains("SHA256:"), "{msg}");
    assert!(msg.contains("198.51.100.11:22"), "{msg}");
    assert!(!kh.exists() || std::fs::read_to_string(&kh).unwrap_or_default().is_empty());
}

#[test]
fn accept_new_learns_the_key() {
    let lab = common::lab();
    let d = dest(&lab, "debian12");
    let dir = scratch("accept-new");
    let kh = dir.join("known_hosts");
    std::fs::write(&kh, "").expect("write");
    let mut opts = key_opts(&lab);
    opts.known_hosts = Some(kh.clone());
    opts.host_key_policy = HostKeyPolicy::AcceptNew;
    let strict = ConnectOptions {
        host_key_policy: HostKeyPolicy::Strict,
        ..opts.clone()
    };
    let (first, second) = in_ns(&lab.client_ns, move || async move {
        let a = connect(&d, &opts).await.info().clone();
        // Now known: strict must accept it.
        let b = connect(&d, &strict).await.info().clone();
        (a, b)
    });
    let text = std::fs::read_to_string(&kh).expect("read known_hosts");
    eprintln!("{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("198.51.100.11 "), "{text}");
    assert_eq!(first.host_key_fingerprint, second.host_key_fingerprint);
}

const OTHER_ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIDV+Fbb+6x65kaMnBJIv4/6JXxzQ8mnmcsHlPec3wDYw";
/// `ssh-keygen -H` of "198.51.100.11 ssh-ed25519 OTHER_ED25519".
const OTHER_HASHED: &str = "|1|qvq31ZKQw5acBNwV55j2bVRam2k=|J/MMxicpWTACqgq1w/c0RzqQK4o= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDV+Fbb+6x65kaMnBJIv4/6JXxzQ8mnmcsHlPec3wDYw";

#[test]
fn changed_key_is_refused_plain_and_hashed() {
    let lab = common::lab();
    let plain = format!("# recorded long ago\n198.51.100.11 ssh-ed25519 {OTHER_ED25519}\n");
    let hashed = format!("# hashed\n# by ssh-keygen -H\n{OTHER_HASHED}\n");
    for (name, text, line, policy) in [
        ("plain", plain, 2, HostKeyPolicy::Strict),
        ("hashed", hashed, 3, HostKeyPolicy::AcceptNew),
    ] {
        let dir = scratch(&format!("changed-{name}"));
        let kh = dir.join("known_hosts");
        std::fs::write(&kh, &text).expect("write");
        let d = dest(&lab, "debian12");
        let mut opts = key_opts(&lab);
        opts.known_hosts = Some(kh.clone());
        opts.host_key_policy = policy;
        let err = in_ns(&lab.client_ns, move || async move {
            Session::connect(&d, &opts).await.err()
        });
        let err = err.unwrap_or_else(|| panic!("{name}: a changed key must be refused"));
        let msg = err.to_string();
        eprintln!("{name}: {msg}");
        assert!(
            matches!(err, SshError::HostKeyChanged { line: l, .. } if l == line),
            "{name}: {msg}"
        );
        assert!(msg.contains(&*kh.to_string_lossy()), "{msg}");
        assert!(msg.contains(&format!("line {line}")), "{msg}");
        // Even AcceptNew must not touch the file.
        assert_eq!(std::fs::read_to_string(&kh).expect("read"), text);
    }
}

#[test]
fn connection_refused_and_unreachable_fail_fast() {
    let lab = common::lab();
    let mut opts = key_opts(&lab);
    opts.connect_timeout = Duration::from_secs(3);
    let (refused, unreachable) = in_ns(&lab.client_ns, move || async move {
        let t = Instant::now();
        let a = Session::connect("root@198.51.100.11:2", &opts).await.err();
        let ta = t.elapsed();
        let t = Instant::now();
        let b = Session::connect("root@198.51.100.99", &opts).await.err();
        let tb = t.elapsed();
        ((a, ta), (b, tb))
    });
    let (err, took) = refused;
    let err = err.expect("port 2 must be refused");
    let msg = err.to_string();
    eprintln!("{msg} ({took:?})");
    assert!(matches!(err, SshError::Connect { .. }), "{msg}");
    assert!(
        msg.contains("198.51.100.11:2:") && msg.to_lowercase().contains("refused"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");

    let (err, took) = unreachable;
    let err = err.expect("198.51.100.99 must be unreachable");
    let msg = err.to_string();
    eprintln!("{msg} ({took:?})");
    assert!(
        matches!(err, SshError::Connect { .. } | SshError::Timeout { .. }),
        "{msg}"
    );
    assert!(msg.contains("198.51.100.99:22"), "{msg}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn lab_ssh_config_aliases_resolve() {
    let lab = common::lab();
    for source in ["debian12", "legacy-ssh"] {
        isolate_home();
        let opts = ConnectOptions {
            ssh_config: Some(lab.ssh_config.clone()),
            use_agent: false,
            ..ConnectOptions::default()
        };
        let name = source.to_string();
        let (info, out) = in_ns(&lab.client_ns, move || async move {
            let s = connect(&name, &opts).await;
            let out = s.run("uname -n", b"").await.expect("run");
            (s.info().clone(), out)
        });
        eprintln!("{source}: {info:?}");
        let src = lab.source(source);
        assert_eq!(info.host, src.ip);
        assert_eq!(info.alias.as_deref(), Some(source));
        assert_eq!(info.user, "root");
        assert_eq!(info.known_hosts, lab.known_hosts);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), src.hostname);
    }
}

#[test]
fn silent_and_non_ssh_servers_fail_with_the_phase() {
    use tokio::io::AsyncWriteExt;
    let lab = common::lab();
    let mut opts = key_opts(&lab);
    opts.connect_timeout = Duration::from_secs(2);
    let client_ip = lab.client_ip.clone();
    let (silent, garbage) = in_ns(&lab.client_ns, move || async move {
        // Listeners on the client's own lab address, inside its namespace.
        let quiet = tokio::net::TcpListener::bind((client_ip.as_str(), 0))
            .await
            .expect("bind");
        let noisy = tokio::net::TcpListener::bind((client_ip.as_str(), 0))
            .await
            .expect("bind");
        let (qp, np) = (
            quiet.local_addr().expect("addr").port(),
            noisy.local_addr().expect("addr").port(),
        );
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = quiet.accept().await {
                held.push(s); // accept, never answer
            }
        });
        tokio::spawn(async move {
            while let Ok((mut s, _)) = noisy.accept().await {
                let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").await;
                let _ = s.shutdown().await;
            }
        });
        let t = Instant::now();
        let a = Session::connect(&format!("root@{client_ip}:{qp}"), &opts)
            .await
            .err();
        let ta = t.elapsed();
        let b = Session::connect(&format!("root@{client_ip}:{np}"), &opts)
            .await
            .err();
        ((a, ta), b)
    });
    let (err, took) = silent;
    let err = err.expect("a silent server must time out");
    let msg = err.to_string();
    eprintln!("{msg} ({took:?})");
    assert!(matches!(err, SshError::Timeout { .. }), "{msg}");
    assert!(msg.contains("SSH handshake"), "{msg}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    let err = garbage.expect("a non-SSH server must fail");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, SshError::Handshake { .. }), "{msg}");
}

/// What a listing reported as it went.
#[derive(Default)]
struct Listed(Vec<u64>);

impl hotclone::progress::Progress for Listed {
    fn listed(&mut self, entries: u64) {
        self.0.push(entries);
    }
}

/// issue 16: the source's listing walks with several finds at once over
/// one connection. It lists what one `find -xdev` lists, on a modern
/// OpenSSH and on the legacy one, whose `MaxSessions 2` (as hardened
/// servers set it) refuses the walk's third channel: the walk goes on
/// with fewer.
#[test]
fn the_listing_walk_equals_one_find_even_where_sshd_allows_two_sessions() {
    let lab = common::lab();
    let all = hotclone::pass::FINDS;
    for (source, finds) in [("debian12", all..all + 1), ("legacy-ssh", 1..all)] {
        let d = dest(&lab, source);
        let opts = key_opts(&lab);
        let (walked, one) = in_ns(&lab.client_ns, move || async move {
            let s = connect(&d, &opts).await;
            let roots = ["/usr", "/etc"];
            let mut progress = Listed::default();
            let started = Instant::now();
            let walked = hotclone::pass::walk(&s, &roots, &[], &mut progress)
                .await
                .expect("walk");
            assert_eq!(progress.0.last(), Some(&(walked.files.len() as u64)));
            assert_eq!(progress.0.len(), walked.batches, "one report a find");
            eprintln!("{source}: the walk took {:?}", started.elapsed());
            let started = Instant::now();
            let one = hotclone::stream::listing::gnu_command(&roots, &[]);
            let one = s.run(&one, b"").await.expect("find");
            eprintln!("{source}: one find took {:?}", started.elapsed());
            (walked, one)
        });
        let (one, bad) = hotclone::stream::listing::parse_gnu(&one.stdout);
        assert!(bad.is_empty() && walked.unparsed.is_empty(), "{bad:?}");
        let paths = |files: &[hotclone::stream::listing::ListedFile]| {
            let mut p: Vec<Vec<u8>> = files.iter().map(|f| f.path.clone()).collect();
            p.sort();
            p
        };
        eprintln!(
            "{source}: {} entries, {} finds, {} at once",
            one.len(),
            walked.batches,
            walked.finds
        );
        assert!(one.len() > 5000, "{source}: {} entries", one.len());
        assert_eq!(paths(&walked.files), paths(&one), "{source}");
        // Two at most ran on the legacy server, and the walk went on with
        // fewer than it asked for. (It may settle on one: a channel that
        // just closed still counts on the server for a moment, and a
        // refusal then looks like the limit.)
        assert!(
            finds.contains(&walked.finds),
            "{source}: {} at once",
            walked.finds
        );
        assert!(walked.batches > 8, "{source}: {} finds", walked.batches);
        // Root by root: all of /usr, then all of /etc.
        let first_etc = walked
            .files
            .iter()
            .position(|f| f.path.starts_with(b"/etc"));
        assert!(walked.files[first_etc.unwrap()..]
            .iter()
            .all(|f| f.path.starts_with(b"/etc")));
    }
}
