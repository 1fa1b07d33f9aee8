//! `cargo xtask demo`: the whole story on the lab, step by step, with
//! hotclone's own progress on screen:
//!
//! 1. the lab and the rescue image (both cached),
//! 2. `hotclone launch`: a QEMU (TCG) VM on the lab bridge, booted from the
//!    rescue image with an empty disk,
//! 3. `hotclone clone debian12`: live, over SSH, into that VM, converted,
//! 4. the source goes off the network, the VM boots its own disk,
//! 5. `hotclone probe` of the source's address answers with the source's
//!    host key (the lab's known_hosts is strict), hostname and the marker
//!    written on the source just before the clone.
//!
//! At the end the source comes back and the VM is stopped; its disk and
//! state stay in `<labdir>/demo` for a look.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{apt, lab, rescue, suite};

const NAME: &str = "demo";
const VM_IP: &str = "198.51.100.50";

fn step(text: &str) {
    println!("\n=== {text} ===");
}

fn must(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

pub fn run() -> Result<()> {
    let started = Instant::now();
    apt::ensure_packages(&suite::packages())?;
    let opts = lab::LabOptions::from_env();
    step("the lab: network namespaces with real Debian sources");
    let info = lab::up(&opts)?;
    step("the rescue image (cached by recipe)");
    let rescue_dir = rescue::ensure(&opts)?;
    let root = lab::workspace_root();
    let hotclone = root.join("target/debug/hotclone");
    let work = opts.lab_dir.join("demo");
    let home = work.join("home");
    let client = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &info.client_ns])
            .arg(&hotclone)
            .args(args)
            .env("HOTCLONE_HOME", &home)
            .env("HOTCLONE_RESCUE_DIR", &rescue_dir);
        c
    };
    // A fresh start: an earlier demo's VM stopped, its state removed.
    if home.join(NAME).exists() {
        let _ = client(&["launch", NAME, "--stop"]).status();
    }
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let ssh_config = info.ssh_config.display().to_string();
    let source = info
        .sources
        .iter()
        .find(|s| s.name == "debian12")
        .context("the lab has no debian12 source")?;

    let marker = format!("hotclone demo {}", std::process::id());
    must(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &info.client_ns,
                "ssh",
                "-F",
                &ssh_config,
                "debian12",
            ])
            .arg(format!("echo '{marker}' > /root/hotclone-demo-marker")),
        "writing the marker on the source",
    )?;

    step("hotclone launch: the target VM, booted from the rescue image");
    let disk = work.join("disk.raw");
    must(
        &mut client(&[
            "launch",
            NAME,
            "--disk",
            &format!("{},size=4G", disk.display()),
            "--net",
            "bridge:br0,netns=hc-lan",
            "--ip",
            &format!("{VM_IP}/24"),
        ]),
        "hotclone launch",
    )?;

    step("hotclone clone debian12: live, over SSH, into the VM (conversion runs in the VM under TCG: minutes)");
    must(
        &mut client(&[
            "clone",
            "--batch",
            "-F",
            &ssh_config,
            "debian12",
            "--name",
            NAME,
        ]),
        "hotclone clone",
    )?;

    step("the source leaves the network; the VM boots the clone from its own disk");
    let link = |state: &str| {
        Command::new("ip")
            .args([
                "netns", "exec", &source.ns, "ip", "link", "set", "eth0", state,
            ])
            .status()
    };
    link("down")?;
    let shown = boot_and_show(&client, &ssh_config, source, &marker, &home);
    let _ = client(&["launch", NAME, "--stop"]).status();
    link("up")?;
    // The client still has the clone's MAC for the source's address.
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            &info.client_ns,
            "ip",
            "neigh",
            "flush",
            "all",
        ])
        .status();
    let shown = shown?;
    println!("{shown}");
    println!(
        "\nDone in {:.0} s. The source is back, the VM is stopped; its disk is {} and its state {}.",
        started.elapsed().as_secs_f64(),
        disk.display(),
        home.join(NAME).display()
    );
    Ok(())
}

fn boot_and_show(
    client: &dyn Fn(&[&str]) -> Command,
    ssh_config: &str,
    source: &lab::SourceInfo,
    marker: &str,
    home: &Path,
) -> Result<String> {
    must(
        &mut client(&["launch", NAME, "--boot-disk"]),
        "hotclone launch --boot-disk",
    )?;
    let booted = Instant::now();
    step(&format!(
        "waiting for {} to answer SSH with the source's host key (lab known_hosts is strict)",
        source.ip
    ));
    loop {
        let out = client(&["probe", "--batch", "-F", ssh_config, "debian12"]).output()?;
        if out.status.success() {
            println!("{}", String::from_utf8_lossy(&out.stdout));
            break;
        }
        if booted.elapsed() > Duration::from_secs(420) {
            let console = home.join(NAME).join("vm/console-disk.log");
            bail!(
                "the clone did not answer in time; its console ({}):\n{}",
                console.display(),
                std::fs::read_to_string(&console).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let out = Command::new("ip")
        .args(["netns", "exec", "hc-client", "ssh", "-F", ssh_config, "debian12"])
        .arg("hostname; ip -br addr show eth0; ip -br link show eth0; cat /root/hotclone-demo-marker")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !text.contains(marker) {
        bail!("the clone does not hold the marker written on the source:\n{text}");
    }
    Ok(format!(
        "The clone answers at {} as {} (booted in {:.0} s):\n{text}",
        source.ip,
        source.hostname,
        booted.elapsed().as_secs_f64()
    ))
}
