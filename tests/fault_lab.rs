//! Issue 12: interrupted clones and syncs must never corrupt the target.
//!
//! Each round, on the busybox source (no conversion, so the target must
//! equal the source file for file):
//! 1. a first clone is killed (SIGKILL) twice at random points while it
//!    copies three big files and 300 small ones, then run to the end;
//! 2. a big file is rewritten in place on the source, and `sync` is killed
//!    twice at random points inside it, then run to the end.
//!
//! After each, checked independently of hotclone's own verify: the tree
//! (md5 per file, mode, owner, size, mtime, links) equals the source's,
//! `e2fsck -fn` finds the target filesystem clean, and no temporary file
//! is left. The client runs the two ways users run it: under `ip netns
//! exec` (a mount namespace of its own, which a killed client's agent
//! keeps alive) and in the host's mount namespace (`nsenter --net`).
//!
//! Rounds per setup: `HOTCLONE_FAULT_ROUNDS` for the image target (3 in
//! the suite) and `HOTCLONE_FAULT_LIVE_ROUNDS` for the live target (1 in
//! the suite: a round in the TCG VM takes about 2.5 minutes). The issue's
//! acceptance (20 rounds in a row per setup) is run by hand with those
//! variables. The seed is printed; `HOTCLONE_FAULT_SEED` replays one.
//!
//! Also here: a second pass while the first one's agent still runs is
//! refused naming it (the one-writer lock), a damaged target is refused
//! before anything is written, and a file dated in the future syncs once
//! and then stays clean.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{hotclone_in, lab, run, run_ok, Lab, Lcg, Namespaces};

fn on_source(lab: &Lab, command: &str) -> String {
    common::source_ssh(lab, "busybox", command)
}

/// The sizes in MiB of the three big files: large enough that a kill
/// lands inside one (the image target writes about 30 MB/s through the
/// shaped link, the live target in the TCG VM about 3 MB/s).
const IMAGE_BIG_MIB: [u64; 3] = [48, 56, 64];
const LIVE_BIG_MIB: [u64; 3] = [8, 12, 16];

/// The data this test copies, made on the source: three big files and 300
/// small ones, plus one dated in the future.
fn make_data(lab: &Lab, big_mib: [u64; 3]) {
    let big: Vec<String> = big_mib
        .iter()
        .enumerate()
        .map(|(i, mib)| {
            format!("dd if=/dev/urandom of=/srv/faults/big{i} bs=1048576 count={mib} 2>/dev/null")
        })
        .collect();
    on_source(
        lab,
        &format!(
            "rm -rf /srv/faults && mkdir -p /srv/faults/small && {} && \
             i=0; while [ $i -lt 300 ]; do head -c $((i * 37 + 1)) /dev/urandom > /srv/faults/small/s$i; i=$((i+1)); done && \
             echo from-the-future > /srv/faults/future && touch -d 2100-01-01 /srv/faults/future",
            big.join(" && ")
        ),
    );
}

/// Rewrite one of the big files in place with new content (same size,
/// same inode), as a database or VM image on the source would be.
fn rewrite_big_file(lab: &Lab, big_mib: [u64; 3], rng: &mut Lcg) {
    let i = rng.below(3) as usize;
    on_source(
        lab,
        &format!(
            "dd if=/dev/urandom of=/srv/faults/big{i} bs=1048576 count={} conv=notrunc 2>/dev/null",
            big_mib[i]
        ),
    );
    // Older than the next listing's second.
    std::thread::sleep(Duration::from_millis(1100));
}

/// How a run that was to be killed ended.
struct Killed {
    /// The kill hit a running client.
    hit: bool,
    /// It had completed (exit 0 or 3) before the kill.
    completed: bool,
}

/// Run `cmd`; once it reports its first file, wait `delay` more and kill
/// it with SIGKILL.
fn kill_during(mut cmd: Command, delay: Duration, log: &Path) -> Killed {
    cmd.arg("--json").stdout(Stdio::piped()).stderr(Stdio::from(
        std::fs::File::options()
            .append(true)
            .create(true)
            .open(log)
            .unwrap(),
    ));
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("\"event\":\"file\"") {
                let _ = tx.send(());
            }
        }
    });
    let started = rx.recv_timeout(Duration::from_secs(120)).is_ok();
    std::thread::sleep(delay);
    let hit = started && child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let status = child.wait().unwrap();
    let _ = reader.join();
    eprintln!(
        "killed {} ms after the first file: {} ({status})",
        delay.as_millis(),
        if hit { "hit" } else { "it had ended" }
    );
    Killed {
        hit,
        completed: !hit && matches!(status.code(), Some(0 | 3)),
    }
}

/// Run `make()` killed twice (up to `max_delay` after its first file),
/// then once more to the end unless a run already completed. Returns the
/// kills that hit, and the last run's output when there was one.
fn killed_twice_then_completed(
    make: impl Fn() -> Command,
    max_delay_ms: u64,
    rng: &mut Lcg,
    log: &Path,
    what: &str,
) -> usize {
    let (mut hits, mut window) = (0, max_delay_ms);
    for _ in 0..2 {
        let delay = rng.below(window);
        let k = kill_during(make(), Duration::from_millis(delay), log);
        hits += usize::from(k.hit);
        if k.completed {
            return hits;
        }
        // What the first run copied is not copied again: the second one
        // is shorter, and so is the moment to kill it in.
        window = (window - delay).max(300);
    }
    let out = run(&mut make());
    assert_done(&out, what);
    hits
}

fn source_tree(lab: &Lab, dirs: &str) -> Vec<String> {
    common::source_tree(lab, "busybox", dirs)
}

fn seed() -> u64 {
    std::env::var("HOTCLONE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Rounds per setup: `var`'s value, else `default` (the suite's share).
fn rounds(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A command's exit, which must be 0 (or 3: files changed while read).
fn assert_done(out: &std::process::Output, what: &str) {
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{what} did not complete after two interruptions ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The busybox source's link shaped to `rate` (tbf), so that a pass lasts
/// long enough for kills to land inside its big files; unshaped on drop.
struct Shaped(&'static str);

impl Shaped {
    fn source_link(rate: &str) -> Shaped {
        let ns = "hc-busybox";
        let _ = run(Command::new("ip").args([
            "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root",
        ]));
        run_ok(Command::new("ip").args([
            "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate,
            "burst", "256kb", "latency", "50ms",
        ]));
        Shaped(ns)
    }
}

impl Drop for Shaped {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args([
            "netns", "exec", self.0, "tc", "qdisc", "del", "dev", "eth0", "root",
        ]));
    }
}

fn rounds_killed_twice(ns: Namespaces) {
    let _one = common::one_at_a_time();
    let lab = lab();
    // About 30 MB/s: the clone's 176 MB take some 6 s, a rewritten big
    // file's sync about 2 s.
    let _shaped = Shaped::source_link("240mbit");
    let seed = seed();
    eprintln!("fault seed {seed} ({ns:?})");
    let mut rng = Lcg(seed);
    make_data(&lab, IMAGE_BIG_MIB);
    let dirs = "bin sbin etc srv";
    let (mut hits, rounds) = (0usize, rounds("HOTCLONE_FAULT_ROUNDS", 3));
    let started = Instant::now();
    for round in 0..rounds {
        let dir = common::workdir(&format!("faults-{ns:?}-{round}"));
        let home = dir.join("home");
        let image = dir.join("bb.img");
        let log = dir.join("hotclone.log");
        let target = format!("image:{},format=raw", image.display());
        let clone_args = ["clone", "busybox", "--name", "bb", "--target", &target];

        // 1. The first clone, killed twice, then to the end.
        hits += killed_twice_then_completed(
            || hotclone_in(&lab, ns, &home, &clone_args),
            5000,
            &mut rng,
            &log,
            &format!("round {round}: the clone"),
        );
        let source = source_tree(&lab, dirs);
        common::assert_same_entries(
            &source,
            &common::image::check_image(&image, &dir, dirs),
            &format!("round {round}: the clone killed twice"),
        );

        // 2. A big file rewritten in place; sync killed twice inside it.
        rewrite_big_file(&lab, IMAGE_BIG_MIB, &mut rng);
        hits += killed_twice_then_completed(
            || hotclone_in(&lab, ns, &home, &["sync", "bb"]),
            1500,
            &mut rng,
            &log,
            &format!("round {round}: the sync"),
        );
        common::assert_same_entries(
            &source_tree(&lab, dirs),
            &common::image::check_image(&image, &dir, dirs),
            &format!("round {round}: the sync killed twice"),
        );
        // The future-dated file went once and stays clean: a quiet pass
        // sends nothing, and verify agrees.
        let quiet = run(&mut hotclone_in(&lab, ns, &home, &["sync", "bb", "--json"]));
        assert_eq!(quiet.status.code(), Some(0), "round {round}: a quiet pass");
        let pass = String::from_utf8_lossy(&quiet.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "pass")
            .expect("a pass event");
        assert_eq!(pass["sent_files"], 0, "round {round}: {pass}");
        let verify = run(&mut hotclone_in(&lab, ns, &home, &["verify", "bb"]));
        assert_eq!(
            verify.status.code(),
            Some(0),
            "round {round}: verify after the quiet pass"
        );
        eprintln!(
            "round {round} of {rounds} ({ns:?}) passed; {hits} kills hit a running client so far; {:.0}s",
            started.elapsed().as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        hits >= rounds * 2,
        "only {hits} of {} kills hit a running client, fewer than the {} sequences: the test did not interrupt enough",
        rounds * 4,
        rounds * 2
    );
    on_source(&lab, "rm -rf /srv/faults");
}

#[test]
fn clone_and_sync_killed_twice_complete_intact_client_in_its_own_mount_namespace() {
    rounds_killed_twice(Namespaces::OwnMounts);
}

#[test]
fn clone_and_sync_killed_twice_complete_intact_client_in_the_host_mount_namespace() {
    rounds_killed_twice(Namespaces::HostMounts);
}

/// The lock file of an image target (see `hotclone::target::lock`).
fn lock_file(image: &Path) -> PathBuf {
    image.with_file_name(format!(
        ".{}.hotclone-lock",
        image.file_name().unwrap().to_string_lossy()
    ))
}

/// Regression (issue 12): a killed client's agent, still alive, was
/// joined by the next pass's agent on the same disk. Now the next pass is
/// refused while that agent lives, naming it, and goes ahead once it
/// stopped; the agent stops by itself when it finds its client gone.
#[test]
fn a_second_sync_while_the_first_ones_agent_still_runs_is_refused() {
    let _one = common::one_at_a_time();
    let lab = lab();
    let dir = common::workdir("faults-second-writer");
    let home = dir.join("home");
    let image = dir.join("bb.img");
    let ns = Namespaces::OwnMounts;
    on_source(
        &lab,
        "rm -rf /srv/faults && mkdir -p /srv/faults && dd if=/dev/urandom of=/srv/faults/big1 bs=1048576 count=96 2>/dev/null",
    );
    let target = format!("image:{},format=raw", image.display());
    let out = run(&mut hotclone_in(
        &lab,
        ns,
        &home,
        &["clone", "busybox", "--name", "bb", "--target", &target],
    ));
    assert_done(&out, "the clone");
    on_source(
        &lab,
        "dd if=/dev/urandom of=/srv/faults/big1 bs=1048576 count=96 2>/dev/null",
    );
    std::thread::sleep(Duration::from_millis(1100));

    // The first sync: once it sends, freeze its agent and kill the client.
    let mut first = hotclone_in(&lab, ns, &home, &["sync", "bb", "--json"]);
    first.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = first.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(l)) if l.contains("\"event\":\"file\"") => break,
            Some(_) => {}
            None => panic!("the first sync ended before it sent a file"),
        }
    }
    let agent = agent_of(child.id()).expect("the first sync's agent");
    unsafe { libc::kill(agent as i32, libc::SIGSTOP) };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        Path::new(&format!("/proc/{agent}")).exists(),
        "the frozen agent outlives its client"
    );

    // The second sync: refused, naming the agent still holding the disk.
    let out = run(hotclone_in(&lab, ns, &home, &["sync", "bb"]).env("HOTCLONE_LOCK_WAIT", "2"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second writer was let in: {err}");
    assert!(err.contains("in use by another hotclone"), "{err}");
    assert!(err.contains(&format!("agent pid {agent}")), "{err}");

    // Let the agent go: it finds its client gone and stops by itself.
    unsafe { libc::kill(agent as i32, libc::SIGCONT) };
    let gone = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{agent}")).exists() && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !Path::new(&format!("/proc/{agent}")).exists()
            || std::fs::read_to_string(format!("/proc/{agent}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the orphaned agent kept running"
    );
    // Its holder died while holding the disk: the next pass checks the
    // filesystem fully before it writes, then completes.
    let out = run(&mut hotclone_in(&lab, ns, &home, &["sync", "bb", "-v"]));
    assert_done(&out, "the sync after the orphaned agent stopped");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("e2fsck -fn found no damage"),
        "the pass after a dead holder did not check the filesystem"
    );
    common::assert_same_entries(
        &source_tree(&lab, "srv"),
        &common::image::check_image(&image, &dir, "srv"),
        "the target after the second writer was refused",
    );
    assert_eq!(
        std::fs::read_to_string(lock_file(&image)).unwrap().trim(),
        "",
        "a clean release empties the holder note"
    );

    // A damaged target is refused before anything is written into it.
    corrupt_root_directory(&image);
    std::fs::write(lock_file(&image), "sync of bb: pid 1 on elsewhere\n").unwrap();
    let before = run_ok(Command::new("md5sum").arg(&image));
    let out = run(&mut hotclone_in(&lab, ns, &home, &["sync", "bb"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is damaged, so hotclone will not write into it"),
        "{err}"
    );
    assert_eq!(
        run_ok(Command::new("md5sum").arg(&image)),
        before,
        "the damaged target was written to"
    );
    on_source(&lab, "rm -rf /srv/faults");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The agent among the children of `client` (a local image target's
/// agent is the client's child).
fn agent_of(client: u32) -> Option<u32> {
    common::children(client).into_iter().find(|c| {
        std::fs::read(format!("/proc/{c}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .any(|a| a == b"agent")
    })
}

/// Damage the root filesystem of `image` the way a second writer does:
/// the root directory's inode cleared behind the filesystem's back.
fn corrupt_root_directory(image: &Path) {
    let dev = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(image))
        .trim()
        .to_string();
    run_ok(Command::new("partx").args(["-a", &dev]));
    std::thread::sleep(Duration::from_millis(200));
    let out = run(Command::new("debugfs").args(["-w", "-R", "clri /srv", &format!("{dev}p2")]));
    let _ = run(Command::new("partx").args(["-d", &dev]));
    let _ = run(Command::new("losetup").args(["-d", &dev]));
    assert!(out.status.success(), "debugfs could not damage the image");
}

const VM_IP: &str = "198.51.100.50";

/// A rescue VM launched for migration `name` (its disk the live target);
/// stopped when dropped.
struct RescueVm<'a> {
    lab: &'a Lab,
    home: PathBuf,
    name: &'static str,
}

impl<'a> RescueVm<'a> {
    fn launch(lab: &'a Lab, work: &Path, name: &'static str) -> RescueVm<'a> {
        let vm = RescueVm {
            lab,
            home: work.join("home"),
            name,
        };
        let rescue = common::rescue_dir();
        run_ok(
            lab.hotclone()
                .env("HOTCLONE_HOME", &vm.home)
                .env("HOTCLONE_RESCUE_DIR", &rescue)
                .args(["launch", name, "--json", "--net", "bridge:br0,netns=hc-lan"])
                .arg("--disk")
                .arg(format!("{},size=1G", work.join("disk.raw").display()))
                .args(["--ip", &format!("{VM_IP}/24")]),
        );
        vm
    }

    /// Run `command` on the rescue system (with the keys launch made);
    /// its stdout. It must succeed.
    fn ssh(&self, command: &str) -> String {
        let out = common::rescue_ssh(
            self.lab,
            &self.home.join(self.name).join("vm"),
            VM_IP,
            command,
        );
        assert!(out.status.success(), "on the rescue VM: {command}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Forget the clone (its journal, plan and inventory), keeping the
    /// VM: the next `clone` makes a new one on the VM's disk.
    fn forget_clone(&self) {
        for f in [
            "inventory.json",
            "plan.toml",
            "journal.sqlite",
            "journal.sqlite-wal",
            "journal.sqlite-shm",
        ] {
            let _ = std::fs::remove_file(self.home.join(self.name).join(f));
        }
    }

    /// `e2fsck -fn` of the clone's root filesystem in the VM, then its
    /// tree under `dirs`, mounted read-only there.
    fn check(&self, dirs: &str) -> Vec<String> {
        let fsck =
            self.ssh("e2fsck -f -n /dev/vda2 >/tmp/fsck.out 2>&1; echo $?; cat /tmp/fsck.out");
        assert!(
            fsck.starts_with("0\n"),
            "e2fsck -fn found the live target damaged:\n{fsck}"
        );
        common::sorted_lines(&self.ssh(&format!(
            "mkdir -p /mnt/check && mount -o ro /dev/vda2 /mnt/check && ( {} ); \
             find /mnt/check -name '*hotclone-tmp*' | sed 's/^/STRAY /'; cd / && umount /mnt/check",
            common::tree_command("/mnt/check", dirs)
        )))
    }
}

impl Drop for RescueVm<'_> {
    fn drop(&mut self) {
        let _ = run(self
            .lab
            .hotclone()
            .env("HOTCLONE_HOME", &self.home)
            .args(["launch", self.name, "--stop"]));
    }
}

/// The live target's rounds, for each namespace setup in turn, on one
/// boot of the rescue VM (a TCG boot is the slow part).
#[test]
fn live_clone_and_sync_killed_twice_complete_intact_in_both_namespace_setups() {
    let _one = common::one_at_a_time();
    let lab = lab();
    let _shaped = Shaped::source_link("240mbit");
    let seed = seed();
    eprintln!("fault seed {seed} (live target)");
    let mut rng = Lcg(seed);
    make_data(&lab, LIVE_BIG_MIB);
    let dirs = "bin sbin etc srv";
    let work = common::workdir("faults-live");
    let vm = RescueVm::launch(&lab, &work, "fault-live");
    let log = work.join("hotclone.log");
    // At least one: the closing check needs a clone to sync.
    let rounds = rounds("HOTCLONE_FAULT_LIVE_ROUNDS", 1).max(1);
    let started = Instant::now();
    for ns in [Namespaces::OwnMounts, Namespaces::HostMounts] {
        let mut hits = 0usize;
        for round in 0..rounds {
            vm.forget_clone();
            hits += killed_twice_then_completed(
                || hotclone_in(&lab, ns, &vm.home, &["clone", "busybox", "--name", vm.name]),
                10000,
                &mut rng,
                &log,
                &format!("round {round} ({ns:?}): the live clone"),
            );
            common::assert_same_entries(
                &source_tree(&lab, dirs),
                &vm.check(dirs),
                &format!("round {round} ({ns:?}): the live clone killed twice"),
            );
            rewrite_big_file(&lab, LIVE_BIG_MIB, &mut rng);
            hits += killed_twice_then_completed(
                || hotclone_in(&lab, ns, &vm.home, &["sync", vm.name]),
                3000,
                &mut rng,
                &log,
                &format!("round {round} ({ns:?}): the live sync"),
            );
            common::assert_same_entries(
                &source_tree(&lab, dirs),
                &vm.check(dirs),
                &format!("round {round} ({ns:?}): the live sync killed twice"),
            );
            eprintln!(
                "round {round} of {rounds} (live, {ns:?}) passed; {hits} kills hit a running client so far; {:.0}s",
                started.elapsed().as_secs_f64()
            );
        }
        assert!(
            hits >= rounds * 2,
            "{ns:?}: only {hits} of {} kills hit a running client, fewer than the {} sequences: the test did not interrupt enough",
            rounds * 4,
            rounds * 2
        );
    }

    // The agent in the VM stops by itself once its client is gone: the
    // SSH server's session ends with the killed client's connection, and
    // the orphaned agent exits.
    rewrite_big_file(&lab, LIVE_BIG_MIB, &mut rng);
    let k = kill_during(
        hotclone_in(&lab, Namespaces::OwnMounts, &vm.home, &["sync", vm.name]),
        Duration::from_millis(800),
        &log,
    );
    assert!(k.hit, "the sync ended before the kill");
    let killed = Instant::now();
    let agents = || {
        vm.ssh("ps | grep -c '[h]otclone.* agent' || true")
            .trim()
            .to_string()
    };
    while agents() != "0" && killed.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(agents(), "0", "the agent in the VM outlived its client");
    eprintln!(
        "the VM's agent stopped {:.1}s after its client was killed",
        killed.elapsed().as_secs_f64()
    );
    on_source(&lab, "rm -rf /srv/faults");
}
