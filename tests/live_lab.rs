//! Live targets on the lab: `hotclone launch` boots the rescue image in a
//! VM on the lab bridge, a libvirt domain of the lab's libvirtd (type
//! `qemu`, TCG; `HOTCLONE_LIVE_HYPERVISOR=qemu` runs the same test on
//! QEMU direct, which fault_lab and rehearse_lab use), and the domain is
//! checked in `virsh` at every step. `hotclone clone` streams a source into
//! it over SSH, sync passes under churn keep it current, and `hotclone
//! cutover` moves the source's service and address to the clone: refused
//! and rolled back when a stranger takes the address, rolled back when the
//! clone's service is broken, then done, with a packet capture of the
//! bridge showing the address pass from one MAC to the other once.
//! Refusals (an unexpected host key, a disk not in the plan, a mounted
//! disk, a host that is not the rescue system) are checked against the
//! same VM and lab.
//!
//! Needs the lab (`cargo xtask lab up`) and the rescue image
//! (`cargo xtask rescue-image`; `cargo xtask test` does both and sets
//! HOTCLONE_RESCUE_DIR). Never skips: without them it fails saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{lab, run, run_ok, source_ssh, workdir, Lab};

/// The rescue VM's address (fault_lab's, which may run beside this
/// binary, is .50).
const VM_IP: &str = "198.51.100.51";

/// The source every test here clones and cuts over: the lab's second
/// debian12, this binary's alone (`cargo xtask test` runs it beside the
/// others, which use debian12).
const SOURCE: &str = "debian12-live";
/// Its address: the production address the cutover moves.
const PROD_IP: &str = "198.51.100.17";
const PROD_OCTETS: [u8; 4] = [198, 51, 100, 17];
/// What its lab service answers.
const SERVICE: &str = "hc-echo on src-live12";

/// The hypervisor `launch` is given: the lab's libvirtd, unless
/// HOTCLONE_LIVE_HYPERVISOR says `qemu`.
fn hypervisor() -> Hypervisor {
    match std::env::var("HOTCLONE_LIVE_HYPERVISOR").as_deref() {
        Ok("qemu") => Hypervisor::Qemu,
        Ok("libvirt") | Err(_) => Hypervisor::Libvirt,
        Ok(other) => panic!("HOTCLONE_LIVE_HYPERVISOR={other}: expected libvirt or qemu"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hypervisor {
    Libvirt,
    Qemu,
}

/// The lab's libvirtd (xtask/src/lab/libvirtd.rs): its domains are TCG.
const LIBVIRT: &str = "libvirt:qemu:///system,type=qemu";

fn virsh(args: &[&str]) -> std::process::Output {
    run(Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args))
}

/// A migration home with a launched VM; the VM is stopped (its libvirt
/// domain undefined) and the source link brought back up when dropped,
/// whatever the test did.
struct Launched<'a> {
    lab: &'a Lab,
    home: PathBuf,
    name: String,
    /// A source whose production address a cutover moved: put back.
    source_moved: Option<String>,
}

impl Launched<'_> {
    fn hotclone(&self) -> Command {
        let mut c = self.lab.hotclone();
        c.env("HOTCLONE_HOME", &self.home)
            .env("HOTCLONE_RESCUE_DIR", common::rescue_dir());
        c
    }

    fn vm_dir(&self) -> PathBuf {
        self.home.join(&self.name).join("vm")
    }

    fn vm_json(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.vm_dir().join("vm.json")).unwrap())
            .unwrap()
    }

    /// Under libvirt: the domain is defined, in `state` (virsh's word:
    /// running, shut off), and boots what vm.json says. Under QEMU direct:
    /// vm.json's mode only.
    fn assert_vm(&self, state: &str, mode: &str) {
        assert_eq!(self.vm_json()["mode"], mode);
        if hypervisor() == Hypervisor::Qemu {
            return;
        }
        let domain = format!("hotclone-{}", self.name);
        let out = virsh(&["domstate", &domain]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            state,
            "{domain}"
        );
        let listed = virsh(&["list", "--all", "--name"]);
        assert!(
            String::from_utf8_lossy(&listed.stdout)
                .lines()
                .any(|l| l == domain),
            "{domain} is not in `virsh list --all`"
        );
        let xml = String::from_utf8_lossy(&virsh(&["dumpxml", &domain]).stdout).into_owned();
        let mac = self.vm_json()["mac"].as_str().unwrap().to_string();
        assert!(xml.contains(&format!("<mac address='{mac}'/>")), "{xml}");
        assert!(xml.contains("<source bridge='br0'/>"), "{xml}");
        assert_eq!(xml.contains("<kernel>"), mode == "rescue", "{xml}");
    }

    /// A command on the rescue system, with the keys launch made for it.
    fn rescue_ssh(&self, command: &str) -> std::process::Output {
        common::rescue_ssh(self.lab, &self.vm_dir(), VM_IP, command)
    }

    /// `hotclone sync NAME`; exit 3 (files changed while read) is fine
    /// under churn.
    fn sync(&self) -> std::process::Output {
        let out = run(self
            .hotclone()
            .args(["sync", &self.name, "--batch", "-F"])
            .arg(&self.lab.ssh_config));
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "sync failed: {}",
            stderr_of(&out)
        );
        out
    }

    /// `hotclone clone debian12 --name NAME ARGS`, which may fail.
    fn try_clone(&self, args: &[&str]) -> std::process::Output {
        run(self
            .hotclone()
            .args(["clone", "--batch", "-F"])
            .arg(&self.lab.ssh_config)
            .args([SOURCE, "--name", &self.name])
            .args(args))
    }
}

impl Drop for Launched<'_> {
    fn drop(&mut self) {
        let _ = run(self.hotclone().args(["launch", &self.name, "--stop"]));
        if hypervisor() == Hypervisor::Libvirt {
            let _ = virsh(&["undefine", &format!("hotclone-{}", self.name)]);
        }
        let console = self.vm_dir().join("console-disk.log");
        eprintln!(
            "-- the clone's console ({}):\n{}",
            console.display(),
            std::fs::read_to_string(&console).unwrap_or_default()
        );
        if let Some(ns) = &self.source_moved {
            let _ = run(Command::new("ip").args([
                "-n",
                ns,
                "addr",
                "add",
                &format!("{PROD_IP}/24"),
                "dev",
                "eth0",
            ]));
            let _ =
                run(Command::new("ip").args(["-n", ns, "addr", "del", FALLBACK, "dev", "eth0"]));
            let _ = run(self
                .lab
                .client_command("ip")
                .args(["neigh", "flush", "all"]));
        }
        // The lab service and the churn leave the source as it was.
        let _ = run(self.lab.client_command("ssh").arg("-F").arg(&self.lab.ssh_config).args([
            SOURCE,
            &format!(
                "{}; touch /tmp/churn.stop; sleep 1; rm -rf /srv/churn /tmp/churn.stop /root/future-dated",
                common::HC_ECHO_REMOVE
            ),
        ]));
    }
}

fn launch<'a>(lab: &'a Lab, work: &Path, name: &str) -> Launched<'a> {
    let launched = Launched {
        lab,
        home: work.join("home"),
        name: name.to_string(),
        source_moved: None,
    };
    let disk = work.join("disk.raw");
    // libvirtd runs in hc-lan, where br0 is: no netns= with libvirt.
    let (hypervisor, net) = match hypervisor() {
        Hypervisor::Libvirt => (LIBVIRT, "bridge:br0"),
        Hypervisor::Qemu => ("qemu", "bridge:br0,netns=hc-lan"),
    };
    let out = run_ok(
        launched
            .hotclone()
            .args(["launch", name, "--json", "--net", net])
            .args(["--hypervisor", hypervisor])
            .arg("--disk")
            .arg(format!("{},size=4G", disk.display()))
            .args(["--ip", &format!("{VM_IP}/24")]),
    );
    let done: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(done["target"], format!("ssh://root@{VM_IP}"));
    launched
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the rescue system's disk holds now (partition table, signatures).
fn disk_signatures(l: &Launched) -> String {
    let out = l.rescue_ssh("wipefs --no-act /dev/vda; echo end");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn live_clone_syncs_under_churn_and_cuts_over_with_no_ip_conflict() {
    let _one = common::one_at_a_time();
    let lab = lab();
    let source = lab.source(SOURCE);
    let work = workdir("live");
    let marker = format!("live-marker-{}", std::process::id());
    // Issue 12: a file dated in the future (a server with a skewed clock
    // has them) must not keep the final sync from settling: the cutover
    // below must succeed with it on the source.
    source_ssh(
        &lab,
        SOURCE,
        &format!(
            "echo {marker} > /root/hotclone-marker && echo skewed > /root/future-dated && touch -d 2100-01-01 /root/future-dated"
        ),
    );
    common::install_hc_echo(&lab, SOURCE);
    wait_for_service(&lab);
    let mut l = launch(&lab, &work, "live");
    l.assert_vm("running", "rescue");

    // Refused, touching nothing: someone else's host key at the VM's address.
    let known = l.vm_dir().join("known_hosts");
    let real = std::fs::read_to_string(&known).unwrap();
    let impostor = work.join("impostor");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&impostor),
    );
    let impostor_key = std::fs::read_to_string(impostor.with_extension("pub")).unwrap();
    std::fs::write(&known, format!("{VM_IP} {impostor_key}")).unwrap();
    let out = l.try_clone(&[]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("host key"), "{}", stderr_of(&out));
    std::fs::write(&known, real).unwrap();
    assert!(
        !disk_signatures(&l).contains("gpt"),
        "the refused clone wrote to the disk"
    );

    // Refused: a disk the VM does not have.
    let out = l.try_clone(&["--target", &format!("ssh://root@{VM_IP},disk=/dev/vdb")]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("has no disk /dev/vdb"),
        "{}",
        stderr_of(&out)
    );

    // Refused: the disk has a mounted filesystem; it stays as it was.
    let setup = l.rescue_ssh("mkfs.ext4 -q -F /dev/vda && mkdir -p /mnt/x && mount /dev/vda /mnt/x && echo keep > /mnt/x/keep");
    assert!(setup.status.success());
    let out = l.try_clone(&[]);
    assert!(!out.status.success());
    let e = stderr_of(&out);
    assert!(
        e.contains("/dev/vda is in use") && e.contains("mounted on /mnt/x"),
        "{e}"
    );
    let kept = l.rescue_ssh("cat /mnt/x/keep && umount /mnt/x && wipefs -q -a /dev/vda");
    assert_eq!(String::from_utf8_lossy(&kept.stdout).trim(), "keep");

    // The clone, live into the VM.
    let started = Instant::now();
    let out = l.try_clone(&[]);
    assert!(
        out.status.success(),
        "the live clone failed: {}",
        stderr_of(&out)
    );
    eprintln!("live clone took {:.0} s", started.elapsed().as_secs_f64());
    l.assert_vm("running", "rescue");
    let status = run_ok(l.hotclone().args(["status", "live", "--json"]));
    assert!(status.contains("\"ready\""), "{status}");
    // Re-hashed in the VM against the client's journal: nothing differs.
    let verified = run_ok(
        l.hotclone()
            .args(["verify", "live", "--target-only", "--json"]),
    );
    let verified: serde_json::Value = serde_json::from_str(&verified).unwrap();
    assert!(verified["checked"].as_u64().unwrap() > 10_000, "{verified}");
    assert_eq!(verified["differences"], serde_json::json!([]), "{verified}");

    // Sync passes under churn. The first while the rescue image's own
    // agent is "another version":
    // the client uploads itself, and removes it again afterwards.
    let churn = Churn::start(&lab);
    // (An agent a client uploaded earlier, when the image's build was not
    // the client's, is removed too, so this pass has to upload.)
    let broken = l.rescue_ssh(
        "printf '#!/bin/sh\\nexit 1\\n' > /usr/bin/hotclone && rm -rf /run/hotclone-agent",
    );
    assert!(broken.status.success());
    source_ssh(
        &lab,
        SOURCE,
        &format!("echo {marker}-sync > /root/hotclone-sync-marker"),
    );
    let out = l.sync();
    assert!(
        stderr_of(&out).contains("uploading this hotclone"),
        "{}",
        stderr_of(&out)
    );
    let left = l.rescue_ssh("ls -A /run/hotclone 2>/dev/null | wc -l; mountpoint -q /mnt/target && echo mounted || echo unmounted");
    assert_eq!(
        String::from_utf8_lossy(&left.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "unmounted"]
    );

    // A second pass under churn (exit 3: files changed while read), then
    // a quiet one.
    l.sync();
    churn.stop();
    l.sync();
    l.assert_vm("running", "rescue");

    cutovers(&lab, &mut l, source);

    // The clone serves as the source did: its hostname, the source's IP on
    // the VM's own MAC. The lab's strict known_hosts holds the source's
    // host key: only a clone that has it gets past the handshake.
    let probe = run_ok(
        lab.hotclone()
            .args(["probe", "--json", "--batch", "-F"])
            .arg(&lab.ssh_config)
            .arg(SOURCE),
    );
    let inv: serde_json::Value = serde_json::from_str(&probe).unwrap();
    assert_eq!(inv["hostname"], source.hostname);
    let eth0 = inv["network"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .expect("eth0 on the clone")
        .clone();
    let vm_mac = l.vm_json()["mac"].as_str().unwrap().to_string();
    assert_eq!(
        eth0["mac"].as_str().unwrap().to_lowercase(),
        vm_mac,
        "{eth0}"
    );
    assert!(eth0.to_string().contains(&source.ip), "{eth0}");
    let on_clone = source_ssh(
        &lab,
        SOURCE,
        "cat /root/hotclone-marker /root/hotclone-sync-marker; findmnt -n -o SOURCE /; cat /root/.ssh/authorized_keys; ls -d /run/hotclone /.hotclone /var/lib/hotclone /etc/sysctl.d/99-hotclone-announce.conf 2>&1; true",
    );
    let lines: Vec<&str> = on_clone.lines().collect();
    assert_eq!(lines[0], marker);
    assert_eq!(lines[1], format!("{marker}-sync"));
    assert_eq!(lines[2], "/dev/vda2");
    assert!(
        !on_clone.contains("hotclone-client"),
        "the rescue login key is in the clone: {on_clone}"
    );
    // Nothing of ours is left on the clone.
    assert_eq!(on_clone.matches("No such file").count(), 4, "{on_clone}");

    // `export` writes a domain the lab's libvirtd defines (as TCG: the
    // lab has no KVM), with the clone's disk and the VM's MAC.
    let exported = work.join("export");
    run_ok(
        l.hotclone()
            .args(["export", "live", "--libvirt-type", "qemu", "-o"])
            .arg(&exported),
    );
    let defined = virsh(&["define", &exported.join("live.xml").display().to_string()]);
    assert!(defined.status.success(), "virsh define refused the export");
    let xml = String::from_utf8_lossy(&virsh(&["dumpxml", "live"]).stdout).into_owned();
    let undefined = virsh(&["undefine", "live"]);
    assert!(xml.contains(&format!("<mac address='{vm_mac}'/>")), "{xml}");
    assert!(
        xml.contains(&format!(
            "<source file='{}'/>",
            l.vm_json()["disk"].as_str().unwrap()
        )),
        "{xml}"
    );
    assert!(undefined.status.success());
}

const FALLBACK: &str = "198.51.100.61/24";

/// A churn generator on the source, writing, renaming and deleting files
/// under /srv/churn until stopped.
struct Churn<'a> {
    lab: &'a Lab,
}

impl<'a> Churn<'a> {
    fn start(lab: &'a Lab) -> Churn<'a> {
        source_ssh(
            lab,
            SOURCE,
            "rm -f /tmp/churn.stop; mkdir -p /srv/churn; cat > /tmp/churn.sh <<'EOF'\n\
             n=0; while [ ! -e /tmp/churn.stop ]; do n=$((n+1)); \
             head -c $(( (n % 5 + 1) * 30000 )) /dev/urandom > /srv/churn/f$((n % 40)); \
             [ $((n % 3)) -eq 0 ] && mv -f /srv/churn/f$((n % 40)) /srv/churn/r$((n % 7)); \
             [ $((n % 4)) -eq 0 ] && rm -f /srv/churn/r$((n % 5)); \
             echo line $n >> /srv/churn/app.log; sleep 0.2; done; rm -f /tmp/churn.sh\nEOF\n\
             setsid sh /tmp/churn.sh </dev/null >/dev/null 2>&1 &",
        );
        Churn { lab }
    }
    fn stop(&self) {
        source_ssh(
            self.lab,
            SOURCE,
            "touch /tmp/churn.stop; while [ -e /tmp/churn.sh ]; do sleep 0.2; done; rm -f /tmp/churn.stop",
        );
        std::thread::sleep(Duration::from_millis(1100));
    }
}

/// What port 8080 on the production address answers (None: nothing).
fn service_answer(lab: &Lab) -> Option<String> {
    let out = run(lab.client_command("bash").arg("-c").arg(format!(
        "exec 3<>/dev/tcp/{PROD_IP}/8080 && timeout 5 cat <&3"
    )));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Wait until the service answers on the production address (it starts
/// in the background; after a rollback the client may still hold the
/// clone's MAC for a moment).
fn wait_for_service(lab: &Lab) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while service_answer(lab).as_deref() != Some(SERVICE) {
        assert!(
            Instant::now() < deadline,
            "the source's service does not answer on {PROD_IP}:8080"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// What the source namespace itself holds (read on the host: no SSH).
fn source_addresses(source: &common::LabSource) -> String {
    run_ok(Command::new("ip").args(["-n", &source.ns, "-o", "-4", "addr", "show", "dev", "eth0"]))
}

/// Another machine on the lab bridge holding the production address.
struct Stranger;

impl Stranger {
    fn start() -> Stranger {
        let _ = Stranger::remove();
        run_ok(Command::new("ip").args(["netns", "add", "hc-stranger"]));
        run_ok(Command::new("ip").args([
            "link",
            "add",
            "eth0",
            "netns",
            "hc-stranger",
            "type",
            "veth",
            "peer",
            "name",
            "v-stranger",
            "netns",
            "hc-lan",
        ]));
        run_ok(Command::new("ip").args([
            "-n",
            "hc-lan",
            "link",
            "set",
            "v-stranger",
            "master",
            "br0",
            "up",
        ]));
        run_ok(Command::new("ip").args([
            "-n",
            "hc-stranger",
            "addr",
            "add",
            &format!("{PROD_IP}/24"),
            "dev",
            "eth0",
        ]));
        run_ok(Command::new("ip").args(["-n", "hc-stranger", "link", "set", "eth0", "up"]));
        std::thread::sleep(Duration::from_secs(2));
        Stranger
    }
    fn remove() -> std::process::Output {
        run(Command::new("ip").args(["netns", "del", "hc-stranger"]))
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = Stranger::remove();
    }
}

/// Wait until the cutover holds before `step` (HOTCLONE_CUTOVER_HOLD).
fn wait_hold(l: &Launched, step: &str, child: &mut std::process::Child) {
    let hold = l.home.join(&l.name).join("cutover.hold");
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if std::fs::read_to_string(&hold).is_ok_and(|s| s == step) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the cutover ended ({status}) before {step}");
        }
        assert!(
            Instant::now() < deadline,
            "the cutover never reached {step}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn release_hold(l: &Launched) {
    std::fs::remove_file(l.home.join(&l.name).join("cutover.hold")).unwrap();
}

fn cutover_cmd(l: &Launched, extra: &[&str]) -> Command {
    let mut c = l.hotclone();
    c.args(["cutover", "live", "--batch", "-F"])
        .arg(&l.lab.ssh_config)
        .args([
            "--fallback-ip",
            FALLBACK,
            "--stop",
            "hc-echo",
            "--check",
            "tcp:8080",
        ])
        .args(extra);
    c
}

fn record(l: &Launched) -> serde_json::Value {
    let path = l.home.join(&l.name).join("cutover-report.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The source serves again after a rollback: its address, its service,
/// the fallback address gone.
fn assert_source_serves(lab: &Lab, source: &common::LabSource) {
    let held = source_addresses(source);
    assert!(held.contains(&format!("{PROD_IP}/24")), "{held}");
    assert!(!held.contains(FALLBACK), "{held}");
    wait_for_service(lab);
}

/// The gate: a cutover of a clone never rehearsed is refused, touching
/// nothing. Then the live target's rehearsal: it passes, the VM's disk is
/// the same byte for byte afterwards, the rescue system still runs, and a
/// capture of the production bridge holds no frame of the rehearsal.
fn rehearsal_gate(l: &Launched, source: &common::LabSource) {
    let before = source_addresses(source);
    let out = run(&mut cutover_cmd(l, &[]));
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("never rehearsed") && err.contains("hotclone rehearse live"),
        "{err}"
    );
    assert_eq!(source_addresses(source), before);
    l.assert_vm("running", "rescue");

    let disk = PathBuf::from(l.vm_json()["disk"].as_str().unwrap());
    let sha = |p: &Path| run_ok(Command::new("sha256sum").arg(p));
    let disk_before = sha(&disk);
    let pcap = l.home.join("rehearsal.pcap");
    let capture = common::pcap::Capture::production(&pcap, None);
    let out = run(l
        .hotclone()
        .args(["rehearse", "live", "--json", "-F"])
        .arg(&l.lab.ssh_config)
        .args([
            "--check",
            "tcp:8080",
            "--check",
            "cmd:test -s /etc/hostname",
        ]));
    let captured = capture.stop(Duration::from_secs(1));
    assert!(
        out.status.success(),
        "the live rehearsal failed: {}",
        stderr_of(&out)
    );
    let rec = &common::rehearsal_record(&out);
    assert_eq!(rec["passed"], true, "{rec}");
    let t = &rec["timings"];
    eprintln!(
        "live rehearsal timings (ms): overlay {} boot {} checks {} teardown {} total {}",
        t["overlay_ms"], t["boot_ms"], t["checks_ms"], t["teardown_ms"], t["total_ms"]
    );
    assert_eq!(
        sha(&disk),
        disk_before,
        "the rehearsal changed the VM's disk"
    );
    l.assert_vm("running", "rescue");
    let parked = l.rescue_ssh("ls -A /run/hotclone 2>/dev/null | wc -l; mountpoint -q /mnt/target && echo mounted || echo unmounted");
    assert_eq!(
        String::from_utf8_lossy(&parked.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "unmounted"],
        "the rescue system runs, with nothing of the rehearsal left"
    );
    let mac = rec["mac"].as_str().unwrap();
    assert_ne!(mac, l.vm_json()["mac"].as_str().unwrap());
    assert_eq!(
        common::pcap::frames_from(&captured, mac),
        0,
        "frames from {mac}"
    );
    assert_eq!(
        common::pcap::frames_naming(&captured, PROD_OCTETS),
        0,
        "frames for the production address during the rehearsal"
    );
}

/// Three cutovers of the same migration: a stranger takes the production
/// address after the source let go (refused, rolled back); the clone's
/// service is broken (its health check fails, rolled back); then the
/// real one, under a packet capture of the bridge.
fn cutovers(lab: &Lab, l: &mut Launched, source: &common::LabSource) {
    l.source_moved = Some(source.ns.clone());
    rehearsal_gate(l, source);
    // A dry run names every step and changes nothing.
    let before = source_addresses(source);
    let dry = run_ok(&mut cutover_cmd(l, &["--dry-run"]));
    for step in [
        "preflight",
        "quiesce",
        "final-sync",
        "verify",
        "release-source-ip",
        "probe-ip",
        "finalize-identity",
        "boot-clone",
        "announce",
        "health-check",
    ] {
        assert!(dry.contains(step), "{dry}");
    }
    assert!(dry.contains("stop hc-echo"), "{dry}");
    assert_eq!(source_addresses(source), before);
    assert_eq!(service_answer(lab).as_deref(), Some(SERVICE));
    l.assert_vm("running", "rescue");

    // 1. A stranger on the production address once the source let go of it.
    let mut child = cutover_cmd(l, &[])
        .env("HOTCLONE_CUTOVER_HOLD", "probe-ip,rollback")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_hold(l, "probe-ip", &mut child);
    assert!(!source_addresses(source).contains(&format!("{PROD_IP}/24")));
    let stranger = Stranger::start();
    release_hold(l);
    wait_hold(l, "rollback", &mut child);
    drop(stranger);
    release_hold(l);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert!(!out.status.success());
    assert!(err.contains(&format!("answers ARP for {PROD_IP}")), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(record(l)["outcome"]["state"], "rolled-back");
    assert_source_serves(lab, source);
    l.assert_vm("running", "rescue");

    // 2. The clone's service is broken: the health check fails, rollback.
    source_ssh(lab, SOURCE, "touch /etc/hc-echo.broken");
    let out = run(&mut cutover_cmd(l, &["--health-timeout", "30"]));
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(err.contains("hc-echo does not run on the clone"), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    let rec = record(l);
    assert_eq!(rec["outcome"]["state"], "rolled-back", "{rec}");
    assert_eq!(rec["clone_booted"], false, "{rec}");
    assert_source_serves(lab, source);
    // The clone is off the network: the VM runs its rescue system again.
    l.assert_vm("running", "rescue");
    let seen = l.rescue_ssh(&format!(
        "arping -c 2 -w 3 -I $(ip -o -4 route get {PROD_IP} | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p') {PROD_IP}"
    ));
    let seen = String::from_utf8_lossy(&seen.stdout).to_lowercase();
    assert!(
        !seen.contains(&l.vm_json()["mac"].as_str().unwrap().to_lowercase()),
        "{seen}"
    );
    source_ssh(lab, SOURCE, "rm -f /etc/hc-echo.broken");
    // What the clone's boot changed was marked dirty: a pass sends it.
    l.sync();

    // 3. The real cutover, the bridge captured throughout.
    let pcap = l.home.join("cutover.pcap");
    let capture = common::pcap::Capture::production(&pcap, Some("arp"));
    let out = run(&mut cutover_cmd(
        l,
        &["--check", "cmd:test -s /etc/hostname", "--json"],
    ));
    let captured = capture.stop(Duration::from_secs(3));
    assert!(
        out.status.success(),
        "the cutover failed: {}",
        stderr_of(&out)
    );
    let rec = record(l);
    eprintln!(
        "cutover report:\n{}",
        std::fs::read_to_string(l.home.join(&l.name).join("cutover-report.md")).unwrap()
    );
    assert_eq!(rec["outcome"]["state"], "done", "{rec}");
    assert!(
        rec["rehearsal"].as_str().unwrap().starts_with("passed"),
        "the report names the rehearsal it relied on: {rec}"
    );
    assert!(rec["downtime_ms"].as_u64().unwrap() > 0, "{rec}");
    l.assert_vm("running", "disk");

    // The service answers on the production address from the clone; the
    // source no longer holds it and stays reachable at its fallback.
    assert_eq!(service_answer(lab).as_deref(), Some(SERVICE));
    let held = source_addresses(source);
    assert!(!held.contains(&format!("{PROD_IP}/24")), "{held}");
    assert!(held.contains(FALLBACK), "{held}");
    let vm_mac = l.vm_json()["mac"].as_str().unwrap().to_lowercase();
    let neigh = run_ok(lab.client_command("ip").args(["neigh", "show", PROD_IP]));
    assert!(neigh.to_lowercase().contains(&vm_mac), "{neigh}");

    // Never two MACs for the production address: in the capture, the
    // source's claims all come before the clone's.
    let source_mac =
        run_ok(Command::new("ip").args(["-n", &source.ns, "-o", "link", "show", "eth0"]));
    let source_mac = source_mac
        .split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_lowercase();
    let claims = common::pcap::arp_claims(&captured, PROD_OCTETS);
    eprintln!("ARP claims for {PROD_IP}: {claims:?}");
    assert_eq!(
        common::pcap::turns(&claims),
        vec![source_mac, vm_mac],
        "the production address must pass from the source to the clone once, never both: {claims:?}"
    );
}

#[test]
fn a_target_that_is_not_the_rescue_system_is_refused_and_left_clean() {
    let lab = lab();
    let work = workdir("not-rescue");
    let target = lab.source(SOURCE);
    let out = run(lab
        .hotclone()
        .env("HOTCLONE_HOME", work.join("home"))
        .args(["clone", "--batch", "-F"])
        .arg(&lab.ssh_config)
        .arg("--known-hosts")
        .arg(&lab.known_hosts)
        .arg("-i")
        .arg(&lab.id_ed25519)
        .args([
            "debian11",
            "--name",
            "not-rescue",
            "--target",
            &format!("ssh://root@{}", target.ip),
        ]));
    assert!(!out.status.success());
    let e = stderr_of(&out);
    assert!(e.contains("not running the hotclone rescue image"), "{e}");
    // Nothing of ours was put there.
    let left = source_ssh(&lab, SOURCE, "ls -A /run/hotclone 2>/dev/null | wc -l");
    assert_eq!(left.trim(), "0");
    assert!(!work.join("home/not-rescue").exists());
}

#[test]
fn the_rescue_iso_boots_to_its_ssh_server() {
    let _one = common::one_at_a_time();
    let iso = common::rescue_dir().join("rescue.iso");
    assert!(
        iso.is_file(),
        "{} is missing (hotclone rescue build makes it unless --no-iso)",
        iso.display()
    );
    let work = workdir("iso");
    let console = work.join("console.log");
    let pidfile = work.join("qemu.pid");
    run_ok(
        Command::new("qemu-system-x86_64")
            .args([
                "-machine", "pc", "-m", "1024", "-display", "none", "-monitor", "none", "-nic",
                "none", "-cdrom",
            ])
            .arg(&iso)
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args(["-daemonize", "-pidfile"])
            .arg(&pidfile),
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // A liveness bound: the other lane of `cargo xtask test` shares the cores.
    let deadline = Instant::now() + Duration::from_secs(600);
    let text = loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if text.contains("hotclone-rescue: ready") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    // The QEMU this test started (its pidfile).
    let _ = Command::new("kill").arg(pid.to_string()).status();
    assert!(
        text.contains("hotclone-rescue: ready"),
        "the ISO did not boot to the rescue system:\n{text}"
    );
    assert!(text.contains("hostkey=SHA256:"), "{text}");
}
