//! `hotclone sync` and resume on the lab: delta passes that follow every
//! kind of change, a quiet pass that sends nothing, a migration taken over
//! from the journal copy on the target, and a fault-injection run that
//! interrupts clone and sync passes at random points (link down, client,
//! agent and the source's tar killed) while a churn generator writes,
//! renames and deletes on the source. The busybox source is used: no
//! conversion, so the target must equal the source file for file.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::image::MountedImage;
use common::{children, lab, run, run_ok, Lab, Lcg};

fn on_source(lab: &Lab, command: &str) -> String {
    common::source_ssh(lab, "busybox", command)
}

/// `hotclone status bb --json`.
fn status_json(lab: &Lab, home: &Path) -> serde_json::Value {
    let mut c = lab.hotclone();
    c.env("HOTCLONE_HOME", home)
        .args(["status", "bb", "--json"]);
    serde_json::from_str(&run_ok(&mut c)).unwrap()
}

/// Content bytes the journal records as written, over all passes (0
/// before the migration exists).
fn committed_bytes(lab: &Lab, home: &Path) -> u64 {
    let mut c = lab.hotclone();
    c.env("HOTCLONE_HOME", home)
        .args(["status", "bb", "--json"]);
    let out = c.output().unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|s| {
            s["passes"]
                .as_array()
                .map(|p| p.iter().filter_map(|p| p["bytes"].as_u64()).sum())
        })
        .unwrap_or(0)
}

/// `hotclone ARGS --batch -F ssh_config` with its own state directory.
fn hotclone(lab: &Lab, home: &Path, args: &[&str]) -> Command {
    common::hotclone_in(lab, common::Namespaces::OwnMounts, home, args)
}

/// The first JSON event named `name` in a run's stdout.
fn event(stdout: &str, name: &str) -> serde_json::Value {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event in:\n{stdout}"))
}

/// The JSON `pass` event of a sync run's stdout.
fn pass_event(stdout: &str) -> serde_json::Value {
    event(stdout, "pass")
}

fn source_tree(lab: &Lab, dirs: &str) -> Vec<String> {
    common::source_tree(lab, "busybox", dirs)
}

fn target_tree(root: &Path, dirs: &str) -> Vec<String> {
    common::host_tree(root, dirs)
}

fn clone_busybox(lab: &Lab, home: &Path, image: &Path) {
    let out = run(&mut hotclone(
        lab,
        home,
        &[
            "clone",
            "busybox",
            "--name",
            "bb",
            "--target",
            &format!("image:{},format=raw", image.display()),
        ],
    ));
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "the clone failed"
    );
}

fn sync_json(lab: &Lab, home: &Path) -> serde_json::Value {
    let out = run(&mut hotclone(lab, home, &["sync", "bb", "--json"]));
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "the sync failed"
    );
    pass_event(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn sync_applies_every_kind_of_change_and_a_quiet_pass_sends_nothing() {
    let _one = common::one_at_a_time();
    let lab = lab();
    let dir = common::workdir("sync-kinds");
    let home = dir.join("home");
    let image = dir.join("bb.img");
    on_source(
        &lab,
        "rm -rf /srv/t && mkdir -p /srv/t/dir/sub /srv/t/todir/inner && cd /srv/t && \
         echo a > keep && echo b > chmod && echo c > del && echo d > dir/sub/x && \
         echo e > tolink && echo f > todir/inner/y && echo g > hl1 && ln hl1 hl2 && \
         echo i > other && mkdir wasdir-now-link",
    );
    clone_busybox(&lab, &home, &image);

    // Every kind of change a pass must carry. mtimes move a second on.
    std::thread::sleep(Duration::from_millis(1100));
    on_source(
        &lab,
        "cd /srv/t && chmod 600 chmod && chown 7:7 chmod && rm del && rm -r dir && \
         rm tolink && ln -s keep tolink && rm -r todir && echo now-a-file > todir && \
         echo grown >> keep && rm hl2 && ln other hl2 && echo new > new && \
         rmdir wasdir-now-link && ln -s /srv wasdir-now-link && mkdir -p fresh/deep && \
         echo deep > fresh/deep/z",
    );
    // Older than the listing's one-second granularity, so the pass can
    // trust them (younger ones go again next pass).
    std::thread::sleep(Duration::from_millis(1100));
    let pass = sync_json(&lab, &home);
    assert!(pass["removed"].as_u64().unwrap() >= 5, "{pass}");
    assert!(
        pass["attrs"].as_u64().unwrap() >= 1,
        "chmod is metadata-only: {pass}"
    );
    assert!(pass["sent_files"].as_u64().unwrap() >= 4, "{pass}");

    {
        let mounted = MountedImage::mount(&image, 2, &dir.join("mnt"));
        let dirs = "bin sbin usr etc root srv";
        common::assert_same_entries(
            &source_tree(&lab, dirs),
            &target_tree(&mounted.mount_point, dirs),
            "the target after every kind of change",
        );
        // The hardlink moved: hl2 now shares other's inode on the target.
        let inode = |p: &str| {
            std::os::unix::fs::MetadataExt::ino(
                &std::fs::metadata(mounted.mount_point.join(p)).unwrap(),
            )
        };
        assert_eq!(inode("srv/t/hl2"), inode("srv/t/other"));
        assert_ne!(inode("srv/t/hl2"), inode("srv/t/hl1"));
    }

    // Nothing changed: no file data moves.
    let quiet = sync_json(&lab, &home);
    assert_eq!(quiet["sent_files"], 0, "{quiet}");
    assert_eq!(quiet["sent_bytes"], 0, "{quiet}");
    assert_eq!(quiet["removed"], 0, "{quiet}");
    assert_eq!(quiet["dirty"], 0, "{quiet}");

    let status = status_json(&lab, &home);
    assert_eq!(status["stage"], "ready");
    assert_eq!(status["passes"].as_array().unwrap().len(), 3);
    // Synced and quiet, so the one thing holding the cutover is the
    // rehearsal gate (a busybox clone is never converted, so never
    // rehearsed): `not_ready` names that and nothing else.
    assert_eq!(status["ready_for_cutover"], false, "{status}");
    let gate = status["rehearsal_gate"]
        .as_str()
        .expect("the rehearsal gate holds");
    assert!(gate.contains("never rehearsed"), "{status}");
    assert_eq!(status["not_ready"], serde_json::json!([gate]), "{status}");

    on_source(&lab, "rm -rf /srv/t");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sync_sends_only_the_tail_of_a_grown_log_and_a_log_rewritten_larger_whole() {
    let _one = common::one_at_a_time();
    let lab = lab();
    let dir = common::workdir("sync-grown");
    let home = dir.join("home");
    let image = dir.join("bb.img");
    on_source(
        &lab,
        "rm -rf /srv/logs && mkdir -p /srv/logs && cd /srv/logs && \
         head -c 2097152 /dev/urandom > app.log && head -c 1048576 /dev/urandom > rewritten.log",
    );
    clone_busybox(&lab, &home, &image);

    std::thread::sleep(Duration::from_millis(1100));
    // app.log grows by 10000 bytes; rewritten.log is rewritten in place
    // (same inode) with other contents, 5000 bytes longer: its prefix
    // check fails, so it goes whole.
    on_source(
        &lab,
        "cd /srv/logs && head -c 10000 /dev/urandom >> app.log && \
         head -c 1053576 /dev/urandom > rewritten.log",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let pass = sync_json(&lab, &home);
    assert_eq!(pass["sent_files"], 2, "{pass}");
    assert_eq!(pass["tails"], 1, "{pass}");
    assert_eq!(pass["sent_bytes"], 10000 + 1053576, "{pass}");
    assert!(
        pass["wire_bytes"].as_u64().unwrap() < 1_200_000,
        "the 2 MiB log went whole: {pass}"
    );

    {
        let mounted = MountedImage::mount(&image, 2, &dir.join("mnt"));
        common::assert_same_entries(
            &source_tree(&lab, "srv/logs"),
            &target_tree(&mounted.mount_point, "srv/logs"),
            "the grown and the rewritten log",
        );
    }
    // The journal holds the digest of the whole grown file: a verify
    // finds nothing to report, and the next pass sends nothing.
    let quiet = sync_json(&lab, &home);
    assert_eq!(quiet["sent_files"], 0, "{quiet}");
    let mut verify = hotclone(&lab, &home, &["verify", "bb"]);
    let out = run(&mut verify);
    assert_eq!(out.status.code(), Some(0), "verify after a tail send");

    on_source(&lab, "rm -rf /srv/logs");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sync_resumes_a_big_file_cut_off_midway_from_its_partial_copy() {
    let _one = common::one_at_a_time();
    let lab = lab();
    let dir = common::workdir("sync-resume");
    let home = dir.join("home");
    let image = dir.join("bb.img");
    let log = dir.join("hotclone.log");
    on_source(&lab, "rm -rf /srv/big && mkdir -p /srv/big");
    clone_busybox(&lab, &home, &image);
    let size: u64 = 96 << 20;
    on_source(
        &lab,
        &format!("head -c {size} /dev/urandom > /srv/big/blob"),
    );
    // Older than the listing's second, so its partial copy can be trusted.
    std::thread::sleep(Duration::from_millis(1100));

    // The link goes down 196 ms into the file (the first draw of this seed).
    let before = committed_bytes(&lab, &home);
    let mut rng = Lcg(11);
    let cut = attempt(
        &lab,
        &home,
        &["sync", "bb"],
        Fault::LinkDown,
        300,
        &mut rng,
        &log,
    );
    assert!(cut.faulted, "the link went down after the transfer ended");
    let kept = committed_bytes(&lab, &home) - before;
    assert!(
        kept > 0 && kept < size,
        "the partial copy's checkpoints: {kept} of {size} bytes"
    );

    let pass = sync_json(&lab, &home);
    assert_eq!(pass["resumed"], 1, "{pass}");
    assert_eq!(
        pass["sent_bytes"].as_u64().unwrap(),
        size - kept,
        "only what the partial copy lacked is sent: {pass}"
    );
    {
        let mounted = MountedImage::mount(&image, 2, &dir.join("mnt"));
        common::assert_same_entries(
            &source_tree(&lab, "srv/big"),
            &target_tree(&mounted.mount_point, "srv/big"),
            "the resumed file",
        );
        let strays = run_ok(Command::new("sh").arg("-c").arg(format!(
            "find {} -name '*hotclone-tmp*'",
            mounted.mount_point.display()
        )));
        assert_eq!(strays.trim(), "", "temporary files left on the target");
    }
    on_source(&lab, "rm -rf /srv/big");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The four ways a pass gets interrupted.
#[derive(Debug, Clone, Copy)]
enum Fault {
    LinkDown,
    KillClient,
    KillAgent,
    KillSourceTar,
}

const FAULTS: [Fault; 4] = [
    Fault::LinkDown,
    Fault::KillClient,
    Fault::KillAgent,
    Fault::KillSourceTar,
];

/// How one attempt ended.
struct Attempt {
    /// Content bytes the client started sending (from its JSON `file` events).
    started_bytes: u64,
    finished_ok: bool,
    faulted: bool,
}

/// Run `args` once; once it sends file data, wait a random moment and
/// inject `fault` (unless it finished first).
fn attempt(
    lab: &Lab,
    home: &Path,
    args: &[&str],
    fault: Fault,
    max_delay_ms: u64,
    rng: &mut Lcg,
    log: &Path,
) -> Attempt {
    let mut cmd = hotclone(lab, home, args);
    cmd.args(["--json", "--keepalive", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::options()
                .append(true)
                .create(true)
                .open(log)
                .unwrap(),
        ));
    let mut child: Child = cmd.spawn().unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut started_bytes = 0u64;
    let count = |line: &str, started: &mut u64| {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if v["event"] == "file" {
                *started += v["bytes"].as_u64().unwrap_or(0);
                return true;
            }
        }
        false
    };
    // Wait for the first file, then a random moment more.
    let mut sending = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    let hard_deadline = Instant::now() + Duration::from_secs(300);
    while !sending && Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => sending |= count(&line, &mut started_bytes),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(_) => {}
        }
    }
    let fire_at = Instant::now() + Duration::from_millis(rng.below(max_delay_ms));
    while Instant::now() < fire_at {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(10)) {
            count(&line, &mut started_bytes);
        }
    }
    let mut faulted = false;
    if sending && child.try_wait().unwrap().is_none() {
        faulted = true;
        eprintln!("fault: {fault:?} into pid {pid}");
        match fault {
            Fault::LinkDown => {
                run_ok(Command::new("ip").args([
                    "-n",
                    "hc-busybox",
                    "link",
                    "set",
                    "eth0",
                    "down",
                ]));
            }
            Fault::KillClient => {
                let _ = child.kill();
            }
            Fault::KillAgent => {
                for c in children(pid) {
                    let cmdline = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
                    if cmdline.split(|b| *b == 0).any(|a| a == b"agent") {
                        unsafe { libc::kill(c as i32, libc::SIGKILL) };
                    }
                }
            }
            Fault::KillSourceTar => {
                on_source(lab, "for p in $(pidof tar); do kill -9 $p; done; true");
            }
        }
    }
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(20)) {
            count(&line, &mut started_bytes);
        }
        if Instant::now() > hard_deadline {
            let _ = child.kill();
        }
    };
    let _ = reader.join();
    for line in rx.try_iter() {
        count(&line, &mut started_bytes);
    }
    if matches!(fault, Fault::LinkDown) {
        run_ok(Command::new("ip").args(["-n", "hc-busybox", "link", "set", "eth0", "up"]));
        std::thread::sleep(Duration::from_millis(300));
    }
    let finished_ok = matches!(status.code(), Some(0) | Some(3));
    Attempt {
        started_bytes,
        finished_ok,
        // A fault that hit after the work was done does not count.
        faulted: faulted && !finished_ok,
    }
}

/// What a churn generator on the source does until /tmp/churn.stop exists:
/// new files, rewrites of data files, renames, deletions, appends.
const CHURN: &str = r#"
mkdir -p /srv/data/churn; n=0
while [ ! -e /tmp/churn.stop ]; do
  n=$((n+1))
  head -c $(( (n % 7 + 1) * 20000 )) /dev/urandom > /srv/data/churn/new$n
  [ $((n % 3)) -eq 0 ] && mv /srv/data/churn/new$((n-1)) /srv/data/churn/renamed$n 2>/dev/null
  [ $((n % 4)) -eq 0 ] && rm -f /srv/data/churn/new$((n-2))
  [ $((n % 5)) -eq 0 ] && head -c 200000 /dev/urandom > /srv/data/f$((n % 170))
  echo "line $n" >> /srv/data/churn/app.log
  sleep 0.1
done
rm -f /tmp/churn.running
"#;

#[test]
fn sync_resumes_after_twenty_random_interruptions_under_churn() {
    let _one = common::one_at_a_time();
    let lab = lab();
    let dir = common::workdir("sync-faults");
    let home = dir.join("home");
    let image = dir.join("bb.img");
    let log = dir.join("hotclone.log");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("fault seed {seed}");
    let mut rng = Lcg(seed);

    // About 170 MiB of incompressible data in 1040 files, so every byte
    // resent shows up.
    on_source(
        &lab,
        "rm -rf /srv/data /tmp/churn.stop /tmp/churn.running && mkdir -p /srv/data && i=0; \
         while [ $i -lt 260 ]; do head -c 524288 /dev/urandom > /srv/data/f$i; \
         head -c 131072 /dev/urandom > /srv/data/g$i; head -c 4096 /dev/urandom > /srv/data/h$i; \
         head -c 100 /dev/urandom > /srv/data/s$i; i=$((i+1)); done",
    );

    let clone_args = [
        "clone",
        "busybox",
        "--name",
        "bb",
        "--tar-batch-files",
        "50",
        "--target",
        &format!("image:{},format=raw", image.display()),
    ];
    let clone_args: Vec<&str> = clone_args.iter().map(|s| &**s).collect();
    let sync_args = ["sync", "bb", "--tar-batch-files", "50"];
    let (mut faults, mut started_bytes) = (0usize, 0u64);
    let mut kinds = [0usize; 4];
    // Started but not recorded, by the kind of fault that hit the attempt.
    let mut lost_by_kind = [0u64; 4];

    // The clone, interrupted until it gets through.
    loop {
        let fault = FAULTS[faults % 4];
        let before = committed_bytes(&lab, &home);
        let a = attempt(&lab, &home, &clone_args, fault, 400, &mut rng, &log);
        started_bytes += a.started_bytes;
        if a.faulted {
            let lost = a
                .started_bytes
                .saturating_sub(committed_bytes(&lab, &home) - before);
            lost_by_kind[faults % 4] += lost;
            kinds[faults % 4] += 1;
            faults += 1;
        }
        if a.finished_ok {
            break;
        }
        assert!(faults < 200, "the clone never finished");
    }
    eprintln!("clone done after {faults} interruptions");

    // Churn, and sync passes interrupted until there were at least 24
    // interruptions in all, including the clone's.
    on_source(
        &lab,
        &format!(
            "cat > /tmp/churn.sh <<'EOF'\n{CHURN}\nEOF\ntouch /tmp/churn.running; setsid sh /tmp/churn.sh >/dev/null 2>&1 </dev/null &"
        ),
    );
    let (mut passes_done, mut tries) = (0, 0);
    while faults < 24 || passes_done < 2 {
        tries += 1;
        assert!(
            tries < 200,
            "only {faults} interruptions hit a sync pass in {tries} tries"
        );
        // A burst of rewrites on top of the churn, so every pass has
        // several MiB to send and the fault lands inside it.
        let first = rng.below(150);
        on_source(
            &lab,
            &format!(
                "i={first}; while [ $i -lt {} ]; do head -c 524288 /dev/urandom > /srv/data/f$i; i=$((i+1)); done",
                first + 16
            ),
        );
        if faults >= 24 {
            // Enough interruptions: the remaining passes run to the end
            // (what they send counts as started too).
            started_bytes += sync_json(&lab, &home)["sent_bytes"].as_u64().unwrap();
            passes_done += 1;
            continue;
        }
        let fault = FAULTS[faults % 4];
        let before = committed_bytes(&lab, &home);
        let a = attempt(&lab, &home, &sync_args, fault, 150, &mut rng, &log);
        started_bytes += a.started_bytes;
        if a.faulted {
            let lost = a
                .started_bytes
                .saturating_sub(committed_bytes(&lab, &home) - before);
            lost_by_kind[faults % 4] += lost;
            kinds[faults % 4] += 1;
            faults += 1;
        }
        if a.finished_ok {
            passes_done += 1;
        }
    }

    // Stop the churn, then one clean pass.
    on_source(
        &lab,
        "touch /tmp/churn.stop; while [ -e /tmp/churn.running ]; do sleep 0.2; done",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let final_pass = run(&mut hotclone(&lab, &home, &["sync", "bb", "--json"]));
    assert_eq!(
        final_pass.status.code(),
        Some(0),
        "the final pass must be clean"
    );
    for line in String::from_utf8_lossy(&final_pass.stdout).lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if v["event"] == "file" {
                started_bytes += v["bytes"].as_u64().unwrap_or(0);
            }
        }
    }
    eprintln!("faults by kind (link, client, agent, tar): {kinds:?}; bytes started but not recorded: {lost_by_kind:?}");
    assert!(faults >= 20, "only {faults} interruptions");
    assert!(
        kinds.iter().all(|k| *k >= 3),
        "every kind of fault, several times: {kinds:?}"
    );

    // The target equals the source exactly: content, metadata, links,
    // deletions (whatever the churn deleted is gone).
    {
        let mounted = MountedImage::mount(&image, 2, &dir.join("mnt"));
        let dirs = "bin sbin usr etc root srv";
        let source = source_tree(&lab, dirs);
        assert!(source.len() > 900, "{}", source.len());
        common::assert_same_entries(
            &source,
            &target_tree(&mounted.mount_point, dirs),
            "the target after the final pass",
        );
        let strays = run_ok(Command::new("sh").arg("-c").arg(format!(
            "find {} -name '*hotclone-tmp*'",
            mounted.mount_point.display()
        )));
        assert_eq!(strays.trim(), "", "temporary files left on the target");
    }

    // Bytes re-sent: what the client started sending but the journal never
    // recorded as written (from the last checkpoint of a big file, or the
    // whole of a small one, even when only part of it went).
    let status = status_json(&lab, &home);
    let committed: u64 = status["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes"].as_u64().unwrap())
        .sum();
    let data: u64 = on_source(
        &lab,
        "find / -xdev -type f -exec stat -c %s {} + | awk '{s+=$1} END {print s}'",
    )
    .trim()
    .parse()
    .unwrap();
    let resent = started_bytes.saturating_sub(committed);
    eprintln!(
        "data {data} B; started {started_bytes} B; committed {committed} B; re-sent {resent} B ({:.2} %) over {faults} interruptions",
        resent as f64 * 100.0 / data as f64
    );
    assert!(
        started_bytes >= committed,
        "the journal records more than was sent"
    );
    // Issue 5: under 10 %. Measured over 24 interruptions (the in-flight
    // remainder of a file counted whole): 3.4-5.8 % in six runs, since big
    // files resume from their partial copy's last checkpoint.
    assert!(
        resent * 100 < data * 10,
        "re-sent {resent} B of {data} B: 10 % or more"
    );

    on_source(&lab, "rm -rf /srv/data /tmp/churn.stop /tmp/churn.sh");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `clone --copy-only` copies every file and stops before converting: the
/// disk stays as its partial raw file, detached, and the migration is
/// still copying (so `sync` refuses it). The same clone run again without
/// the option sends only what changed meanwhile and finishes the disk.
#[test]
fn a_clone_that_only_copies_is_finished_by_running_it_again() {
    let _one = common::one_at_a_time();
    let lab = lab();
    let dir = common::workdir("copy-only");
    let home = dir.join("home");
    let image = dir.join("bb.img");
    let partial = image.with_extension("raw.partial");
    on_source(
        &lab,
        "rm -rf /srv/seed && mkdir -p /srv/seed && echo first > /srv/seed/a",
    );
    let target = format!("image:{},format=raw", image.display());
    let seeded = run(&mut hotclone(
        &lab,
        &home,
        &[
            "clone",
            "busybox",
            "--name",
            "bb",
            "--copy-only",
            "--json",
            "--target",
            &target,
        ],
    ));
    assert!(
        matches!(seeded.status.code(), Some(0) | Some(3)),
        "the copy-only clone failed"
    );
    let done = |out: &std::process::Output| event(&String::from_utf8_lossy(&out.stdout), "done");
    let first = done(&seeded);
    assert_eq!(first["converted"], false, "{first}");
    assert!(first["files"].as_u64().unwrap() > 100, "{first}");
    assert!(!image.exists(), "a copy-only clone made the finished image");
    assert!(partial.exists(), "the copied disk was not kept");
    let attached = run_ok(Command::new("losetup").arg("-j").arg(&partial));
    assert_eq!(attached.trim(), "", "the copied disk is still attached");
    // What was closed is a clean filesystem holding the copy (e2fsck -fn,
    // then the tree against the source's).
    let dirs = "bin sbin usr etc root srv";
    common::assert_same_entries(
        &source_tree(&lab, dirs),
        &common::image::check_image(&partial, &dir, dirs),
        "the disk a copy-only clone closed",
    );
    assert_eq!(status_json(&lab, &home)["stage"], "copying");
    let refused = run(&mut hotclone(&lab, &home, &["sync", "bb"]));
    assert!(!refused.status.success(), "sync took an unfinished clone");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("did not finish"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Older than the listing's one-second granularity.
    on_source(&lab, "echo second > /srv/seed/b");
    std::thread::sleep(Duration::from_millis(1100));
    let finished = run(&mut hotclone(
        &lab,
        &home,
        &["clone", "busybox", "--name", "bb", "--json"],
    ));
    assert!(
        matches!(finished.status.code(), Some(0) | Some(3)),
        "finishing the clone failed"
    );
    assert_eq!(done(&finished)["converted"], true);
    assert!(image.exists() && !partial.exists());
    let status = status_json(&lab, &home);
    assert_eq!(status["stage"], "ready", "{status}");
    let passes = status["passes"].as_array().unwrap();
    assert_eq!(passes.len(), 2, "{status}");
    // The second pass sent what changed, not the copy again.
    let bytes = |p: &serde_json::Value| p["bytes"].as_u64().unwrap();
    assert!(bytes(&passes[1]) * 100 < bytes(&passes[0]), "{status}");
    common::assert_same_entries(
        &source_tree(&lab, dirs),
        &common::image::check_image(&image, &dir, dirs),
        "the clone finished after a copy-only run",
    );
    on_source(&lab, "rm -rf /srv/seed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client machine that lost the state (a new HOTCLONE_HOME) takes the
/// migration over from the journal copy on the target and continues.
#[test]
fn sync_takes_over_from_the_journal_copy_on_the_target() {
    let _one = common::one_at_a_time();
    let lab = lab();
    let dir = common::workdir("sync-adopt");
    let image = dir.join("bb.img");
    clone_busybox(&lab, &dir.join("home"), &image);
    on_source(
        &lab,
        "mkdir -p /srv/adopt && echo moved-machines > /srv/adopt/marker",
    );
    std::thread::sleep(Duration::from_millis(1100));

    let elsewhere = dir.join("other-home");
    let out = run(&mut hotclone(
        &lab,
        &elsewhere,
        &[
            "sync",
            "bb",
            "--json",
            "--from-target",
            &image.to_string_lossy(),
        ],
    ));
    assert_eq!(out.status.code(), Some(0));
    let pass = pass_event(&String::from_utf8_lossy(&out.stdout));
    // Only the change goes: the rest is known from the target's journal.
    assert_eq!(pass["sent_files"], 1, "{pass}");
    let status = status_json(&lab, &elsewhere);
    assert_eq!(status["passes"].as_array().unwrap().len(), 2, "{status}");
    {
        let mounted = MountedImage::mount(&image, 2, &dir.join("mnt"));
        assert_eq!(
            std::fs::read_to_string(mounted.mount_point.join("srv/adopt/marker")).unwrap(),
            "moved-machines\n"
        );
    }
    // Taking over twice is refused: the state exists now.
    let again = run(&mut hotclone(
        &lab,
        &elsewhere,
        &["sync", "bb", "--from-target", &image.to_string_lossy()],
    ));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    on_source(&lab, "rm -rf /srv/adopt");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--checksum` finds a file whose contents differ with the same size and
/// mtime (here: changed behind hotclone's back on the target), which a
/// metadata pass cannot see, and sends it again.
#[test]
fn sync_checksum_finds_contents_that_metadata_does_not_show() {
    let _one = common::one_at_a_time();
    let lab = lab();
    let dir = common::workdir("sync-checksum");
    let home = dir.join("home");
    let image = dir.join("bb.img");
    on_source(
        &lab,
        "rm -rf /srv/ck && mkdir -p /srv/ck && head -c 4096 /dev/urandom > /srv/ck/data && touch -d @1600000000 /srv/ck/data",
    );
    clone_busybox(&lab, &home, &image);
    let source_md5 = on_source(&lab, "md5sum /srv/ck/data | cut -d' ' -f1");
    {
        let mounted = MountedImage::mount_writable(&image, 2, &dir.join("mnt"));
        let file = mounted.mount_point.join("srv/ck/data");
        std::fs::write(&file, vec![0u8; 4096]).unwrap();
        run_ok(Command::new("touch").args(["-d", "@1600000000"]).arg(&file));
    }
    let plain = sync_json(&lab, &home);
    assert_eq!(
        plain["sent_files"], 0,
        "metadata alone cannot see it: {plain}"
    );
    let out = run(&mut hotclone(
        &lab,
        &home,
        &["sync", "bb", "--json", "--checksum"],
    ));
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "the sync failed"
    );
    let checked = pass_event(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(checked["checksum_differ"], 1, "{checked}");
    assert_eq!(checked["sent_files"], 1, "{checked}");
    {
        let mounted = MountedImage::mount(&image, 2, &dir.join("mnt"));
        let md5 = run_ok(Command::new("md5sum").arg(mounted.mount_point.join("srv/ck/data")));
        assert_eq!(md5.split_whitespace().next(), Some(source_md5.trim()));
    }
    // Nothing differs any more.
    let out = run(&mut hotclone(
        &lab,
        &home,
        &["sync", "bb", "--json", "--checksum"],
    ));
    let again = pass_event(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(again["checksum_differ"], 0, "{again}");
    assert_eq!(again["sent_files"], 0, "{again}");
    on_source(&lab, "rm -rf /srv/ck");
    let _ = std::fs::remove_dir_all(&dir);
}
