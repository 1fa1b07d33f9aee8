//! Inspect a running source once and record what it is: an [`Inventory`].
//!
//! The probe sends one read-only shell script (see [`script`]) over SSH,
//! collects its framed output, and turns it into plain data with pure
//! parsers ([`parse`]). Nothing is written on the source.
//!
//! On failure: an SSH problem is returned as [`ProbeError::Ssh`] with the
//! host; a script that produced no output at all (no usable `/bin/sh`) is
//! [`ProbeError::NoOutput`] with the remote stderr. Anything less (a missing
//! command, an unreadable file) is not an error: the inventory carries a
//! warning saying what is unknown and what that means.

pub mod addresses;
pub mod inventory;
pub mod parse;
pub mod script;
pub mod sections;

pub use inventory::*;

use parse::{block, capabilities, mounts, net, os_release, system};
use sections::Sections;

use crate::ssh::{Session, SshError};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probing {source_name}: {error}")]
    Ssh {
        source_name: String,
        #[source]
        error: SshError,
    },
    #[error(
        "probing {source_name}: the probe script printed nothing (exit status {status}); \
         the source needs a working /bin/sh. Its stderr: {stderr}"
    )]
    NoOutput {
        source_name: String,
        status: String,
        stderr: String,
    },
}

/// Probe a connected source. `source_name` is what the user called it.
pub async fn probe(session: &Session, source_name: &str) -> Result<Inventory, ProbeError> {
    let out = session
        .run("/bin/sh -s", script::script().as_bytes())
        .await
        .map_err(|error| ProbeError::Ssh {
            source_name: source_name.to_string(),
            error,
        })?;
    if out.stdout.is_empty() {
        return Err(ProbeError::NoOutput {
            source_name: source_name.to_string(),
            status: format!("{:?}", out.status),
            stderr: String::from_utf8_lossy(&out.stderr)
                .trim()
                .chars()
                .take(2000)
                .collect(),
        });
    }
    let mut inventory = from_output(source_name, &out.stdout);
    let key = &session.info().host_key_fingerprint;
    inventory.host_key = (!key.is_empty()).then(|| key.clone());
    Ok(inventory)
}

/// Build the inventory from the probe script's raw output. Pure.
pub fn from_output(source_name: &str, output: &[u8]) -> Inventory {
    assemble(source_name, &sections::split(output))
}

fn assemble(source_name: &str, s: &Sections) -> Inventory {
    let mut warnings = Vec::new();
    let first_line = |name: &str| {
        s.cmd_ok(name)
            .and_then(|t| t.lines().next())
            .map(|l| l.trim().to_string())
    };
    let present_text = s.cmd_any("present").unwrap_or("");
    let present: Vec<&str> = present_text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .collect();

    let os = os_release::parse(os_release::ReleaseFiles {
        os_release: s
            .file("/etc/os-release")
            .or_else(|| s.file("/usr/lib/os-release")),
        debian_version: s.file("/etc/debian_version"),
        redhat_release: s.file("/etc/redhat-release"),
        suse_release: s.file("/etc/SuSE-release"),
        lsb_release: s.file("/etc/lsb-release"),
    });
    if os.family == DistroFamily::Unknown {
        warnings.push(
            "distribution unknown: no /etc/os-release, debian_version, redhat-release, SuSE-release \
             or lsb-release; conversion will need the family named explicitly"
                .to_string(),
        );
    }

    let hostname = first_line("uname-n")
        .or_else(|| {
            s.file("/etc/hostname")
                .and_then(|h| h.lines().next())
                .map(|h| h.trim().to_string())
        })
        .or_else(|| {
            s.file("/etc/HOSTNAME")
                .and_then(|h| h.lines().next())
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_default();

    let kernel = KernelInfo {
        running: first_line("uname-r").unwrap_or_default(),
        arch: first_line("uname-m").unwrap_or_default(),
        installed: s.cmd_ok("modules").map(system::lines).unwrap_or_default(),
        boot_images: s
            .cmd_ok("boot")
            .map(system::boot_images)
            .unwrap_or_default(),
    };
    if kernel.installed.is_empty() {
        warnings.push(
            "no kernel modules under /lib/modules: the clone may have no kernel to boot".into(),
        );
    } else if !kernel.installed.contains(&kernel.running) {
        warnings.push(format!(
            "the running kernel {} is not installed (installed: {}); the clone will boot an installed one",
            kernel.running,
            kernel.installed.join(", ")
        ));
    }

    // Processes may exit between the glob and the read; what was read is good.
    let procs = s
        .cmd_any("procs")
        .map(system::parse_proc_stats)
        .unwrap_or_default();
    let pid1 = procs.iter().find(|p| p.pid == 1).map(|p| p.name.as_str());
    let init = system::detect_init(s.cmd_ok("init-link"), &present, pid1);
    let bootloader = system::detect_bootloader(&present, s.cmd_ok("grub-version"));
    if bootloader.kind == BootloaderKind::None {
        warnings.push("no bootloader found (grub2, grub-legacy, lilo, extlinux); the conversion installs GRUB 2 from the converting host if the source has its kernel in /boot".into());
    }
    let hardware = system::parse_hardware(s.file("/proc/cpuinfo"), s.file("/proc/meminfo"));

    let storage = storage(s, &mut warnings);
    let network = network(s, &present, &mut warnings);

    let processes = system::process_names(&procs);
    let services = match s
        .cmd_ok("systemd-units")
        .filter(|_| init.active && init.kind == InitKind::Systemd)
    {
        Some(units) => Services {
            source: "systemd".into(),
            running: system::parse_systemd_units(units),
            processes,
        },
        None => {
            let scripts = s.cmd_ok("initd").map(system::lines).unwrap_or_default();
            Services {
                source: "processes".into(),
                running: system::sysv_running(&scripts, &processes),
                processes,
            }
        }
    };

    let capabilities = capabilities::parse(capabilities::ToolOutputs {
        tar_version: s.cmd_any("tar-version"),
        tar_help: s.cmd_any("tar-help"),
        find_printf: s.cmd_any("find-printf"),
        stat_format: s.cmd_any("stat-format"),
        busybox: s.cmd_any("busybox"),
        tools: s.cmd_ok("tools"),
    });
    match capabilities.tar.flavour {
        TarFlavour::Missing => warnings.push("the source has no tar: hotclone cannot copy from it".into()),
        TarFlavour::Gnu if !capabilities.tar.xattrs => warnings.push(
            "the source's GNU tar has no --xattrs: xattrs, ACLs and SELinux labels will not be copied".into(),
        ),
        TarFlavour::Busybox => warnings.push(
            "busybox tar: no xattrs, ACLs or SELinux labels, and no hot-file warnings from tar".into(),
        ),
        _ => {}
    }

    let selinux = s
        .file("/etc/selinux/config")
        .and_then(|t| os_release::parse_key_values(t).get("SELINUX").cloned())
        .map(|m| m.to_ascii_lowercase());
    Inventory {
        selinux,
        host_key: None,
        source: source_name.to_string(),
        hostname,
        os,
        kernel,
        init,
        bootloader,
        hardware,
        storage,
        network,
        services,
        capabilities,
        warnings,
    }
}

fn storage(s: &Sections, warnings: &mut Vec<String>) -> Storage {
    let df_bytes = s
        .cmd_ok("df-k")
        .map(|t| mounts::parse_df(t, 1024))
        .unwrap_or_default();
    let df_inodes = s
        .cmd_ok("df-i")
        .map(|t| mounts::parse_df(t, 1))
        .unwrap_or_default();
    if df_bytes.is_empty() {
        warnings.push(
            "`df -P -k` failed: filesystem usage unknown, disk sizes cannot be planned".into(),
        );
    }
    let blkid = s
        .cmd_ok("blkid")
        .map(mounts::parse_blkid)
        .unwrap_or_default();
    let mounts = s
        .file("/proc/mounts")
        .map(|m| mounts::parse_mounts(m, &df_bytes, &df_inodes, &blkid))
        .unwrap_or_default();
    if mounts.is_empty() {
        warnings.push("/proc/mounts unreadable: mounted filesystems unknown".into());
    }
    let mut block_devices = match s
        .cmd_ok("lsblk")
        .map(block::parse_lsblk)
        .filter(|d| !d.is_empty())
    {
        Some(devices) => devices,
        None => s
            .file("/proc/partitions")
            .map(block::parse_proc_partitions)
            .unwrap_or_default(),
    };
    for dev in &mut block_devices {
        if let Some(tags) = blkid.get(&format!("/dev/{}", dev.name)) {
            dev.fs_type = dev.fs_type.take().or_else(|| tags.get("TYPE").cloned());
            dev.uuid = dev.uuid.take().or_else(|| tags.get("UUID").cloned());
            dev.label = dev.label.take().or_else(|| tags.get("LABEL").cloned());
            dev.partition_table = dev
                .partition_table
                .take()
                .or_else(|| tags.get("PTTYPE").cloned());
        }
    }
    Storage {
        mounts,
        block_devices,
        logical_volumes: s.cmd_ok("lvs").map(block::parse_lvs).unwrap_or_default(),
        md_arrays: s
            .file("/proc/mdstat")
            .map(block::parse_mdstat)
            .unwrap_or_default(),
        fstab: s
            .file("/etc/fstab")
            .map(mounts::parse_fstab)
            .unwrap_or_default(),
        swaps: s
            .file("/proc/swaps")
            .map(mounts::parse_swaps)
            .unwrap_or_default(),
    }
}

fn network(s: &Sections, present: &[&str], warnings: &mut Vec<String>) -> Network {
    let interfaces = match (s.cmd_ok("ip-link"), s.cmd_ok("ip-addr")) {
        (Some(link), Some(addr)) => net::parse_ip(link, addr),
        _ => s
            .cmd_ok("ifconfig")
            .map(net::parse_ifconfig)
            .unwrap_or_default(),
    };
    if interfaces.is_empty() {
        warnings.push("neither `ip` nor `ifconfig` answered: network interfaces unknown".into());
    }
    let routes = match s.cmd_ok("ip-route") {
        Some(r) => net::parse_ip_route(r),
        None => s
            .cmd_ok("route")
            .map(net::parse_route_n)
            .unwrap_or_default(),
    };
    let (config_styles, config_files) = net::config_styles(present);
    Network {
        interfaces,
        routes,
        dns: s
            .file("/etc/resolv.conf")
            .map(net::parse_resolv_conf)
            .unwrap_or_default(),
        config_styles,
        config_files,
    }
}

#[cfg(test)]
mod tests;

/// The inventory fixture `fixtures/probe/NAME/inventory.json`, for the
/// library's tests.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> Inventory {
    let path = format!(
        "{}/fixtures/probe/{name}/inventory.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}
