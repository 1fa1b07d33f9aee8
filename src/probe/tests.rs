//! Whole-probe tests: the real script run locally, and golden inventories
//! from recorded transcripts of phony sources. Regenerate goldens with
//! `HOTCLONE_BLESS=1 cargo test -p hotclone probe::` and review the diff.

use std::path::Path;
use std::process::{Command, Stdio};

use super::*;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/probe"))
}

/// Compare `actual` with the golden file, or rewrite it when blessing.
fn assert_golden(name: &str, actual: &str) {
    crate::golden::assert_golden("probe", name, actual);
}

#[test]
fn debian5_transcript_matches_golden_inventory() {
    let transcript = std::fs::read(fixtures().join("debian5/transcript")).unwrap();
    let inv = from_output("root@web01", &transcript);
    // The facts a Debian 5 server must yield, spelled out before the golden.
    assert_eq!(inv.os.codename.as_deref(), Some("lenny"));
    assert_eq!(inv.kernel.running, "2.6.26-2-686");
    assert_eq!(inv.bootloader.kind, BootloaderKind::GrubLegacy);
    assert_eq!(
        inv.bootloader.config.as_deref(),
        Some("/boot/grub/menu.lst")
    );
    assert_eq!(inv.init.kind, InitKind::Sysvinit);
    assert!(inv.init.active);
    assert_eq!(
        inv.network.interfaces[0].mac.as_deref(),
        Some("00:16:3e:2a:7c:01")
    );
    assert_eq!(
        inv.network.routes[1].gateway.as_deref(),
        Some("198.51.100.1")
    );
    assert_eq!(
        inv.services.running,
        vec!["apache2", "cron", "mysql", "ssh"]
    );
    assert_eq!(
        inv.storage
            .block_devices
            .iter()
            .find(|d| d.name == "hda1")
            .unwrap()
            .uuid
            .as_deref(),
        Some("3e6be9de-8139-11d1-9106-a43f08d823a6")
    );
    assert!(
        inv.warnings.iter().any(|w| w.contains("no --xattrs")),
        "{:?}",
        inv.warnings
    );
    let json = serde_json::to_string_pretty(&inv).unwrap() + "\n";
    assert_golden("debian5/inventory.json", &json);
}

#[test]
fn golden_inventory_round_trips_through_json() {
    let text = std::fs::read_to_string(fixtures().join("debian5/inventory.json")).unwrap();
    let inv: Inventory = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_string_pretty(&inv).unwrap() + "\n", text);
}

/// Run the probe script under `program args` (a shell reading stdin) on
/// this machine; returns its stdout.
fn run_script_locally(program: &str, args: &[&str]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script::script().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.stdout.is_empty(),
        "script printed nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn local(cmd: &str, args: &[&str]) -> String {
    String::from_utf8(Command::new(cmd).args(args).output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// The script is valid POSIX sh and its output parses: run it on this
/// machine under dash and compare with what this machine says directly.
#[test]
fn script_runs_under_dash_and_reports_this_machine() {
    let inv = from_output("local", &run_script_locally("/bin/sh", &["-s"]));
    assert_eq!(inv.kernel.running, local("uname", &["-r"]));
    assert_eq!(inv.kernel.arch, local("uname", &["-m"]));
    assert_eq!(inv.hostname, local("uname", &["-n"]));
    let root = inv.root_mount().expect("a root mount");
    assert_eq!(
        root.fs_type,
        local("findmnt", &["-n", "-o", "FSTYPE", "/"])
            .lines()
            .last()
            .unwrap()
    );
    assert!(root.bytes_total.unwrap_or(0) > 0, "{root:?}");
    assert_eq!(inv.capabilities.tar.flavour, TarFlavour::Gnu);
    assert!(inv.capabilities.find_printf);
    assert!(inv.hardware.memory_bytes > 0);
}

/// Under busybox ash the same script must run to the end (every section).
#[test]
fn script_runs_to_the_end_under_busybox_ash() {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists())
        .expect("busybox is needed for this test (apt-get install busybox-static; cargo xtask test installs it)");
    let out = run_script_locally(busybox, &["sh", "-s"]);
    let s = sections::split(&out);
    assert_eq!(
        s.cmds["tools"].status,
        Some(0),
        "the script did not reach its last section"
    );
    assert!(s.cmd_ok("uname-r").is_some());
}

/// Found in the lab: a process exiting while `cat /proc/[0-9]*/stat` ran
/// made cat fail, and the whole process list (and with it every service)
/// came back empty.
#[test]
fn regression_vanished_process_does_not_empty_the_process_list() {
    let out = b"@@hotclone@@ cmd procs\n1 (sshd) S 0 1 1 0\n77 (cron) S 1 77 77 0\n@@hotclone@@ status 1\n\
@@hotclone@@ cmd initd\ncron\nssh\n@@hotclone@@ status 0\n";
    let inv = from_output("x", out);
    assert_eq!(inv.services.processes, vec!["cron", "sshd"]);
    assert_eq!(inv.services.running, vec!["cron", "ssh"]);
}

#[test]
fn selinux_mode_comes_from_its_config_file() {
    let inv = from_output("x", b"@@hotclone@@ file /etc/selinux/config\n# comment\nSELINUX=Enforcing\nSELINUXTYPE=targeted\n\n");
    assert_eq!(inv.selinux.as_deref(), Some("enforcing"));
    assert_eq!(from_output("x", b"").selinux, None);
}
