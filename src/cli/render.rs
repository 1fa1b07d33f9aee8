//! Human-readable rendering. Pure: data in, text out, so it is testable.

use std::fmt::Write;

use hotclone::plan::{self, PartitionRole, Plan, TargetSpec};
use hotclone::probe::{Inventory, MountKind, TarFlavour};

use hotclone::units::format_bytes as bytes;

/// An enum's serde name ("grub-legacy", "network-manager").
fn name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn opt(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn table(out: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from("  ");
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

pub fn inventory(inv: &Inventory) -> String {
    let mut o = String::new();
    let os = &inv.os;
    let _ = writeln!(o, "{} ({})", inv.hostname, inv.source);
    let version = os
        .version
        .as_deref()
        .map(|v| format!(", version {v}"))
        .unwrap_or_default();
    let family = name(&os.family);
    let k = &inv.kernel;
    let installed = if k.installed.is_empty() {
        "none".to_string()
    } else {
        k.installed.join(", ")
    };
    let init_state = if inv.init.active {
        "running"
    } else {
        "installed"
    };
    let boot_config = inv
        .bootloader
        .config
        .as_deref()
        .map(|c| format!(", config {c}"))
        .unwrap_or_else(|| ", no config file".into());
    let boot_version = inv
        .bootloader
        .version
        .as_deref()
        .map(|v| format!(" ({v})"))
        .unwrap_or_default();
    let firmware = if inv.bootloader.uefi { "UEFI" } else { "BIOS" };
    table(
        &mut o,
        &[
            vec![
                "OS".into(),
                format!("{}{version} [{family} family]", os.pretty_name),
            ],
            vec![
                "Kernel".into(),
                format!("running {} {}; installed: {installed}", k.running, k.arch),
            ],
            vec![
                "Init".into(),
                format!(
                    "{} ({init_state}; {})",
                    name(&inv.init.kind),
                    inv.init.evidence
                ),
            ],
            vec![
                "Boot".into(),
                format!(
                    "{}{boot_config}{boot_version}, {firmware}",
                    name(&inv.bootloader.kind)
                ),
            ],
            vec![
                "Hardware".into(),
                format!(
                    "{} CPU, {} RAM",
                    inv.hardware.cpus,
                    bytes(inv.hardware.memory_bytes)
                ),
            ],
        ],
    );

    o.push_str("\nFilesystems\n");
    let mut rows = vec![[
        "DEVICE",
        "MOUNT",
        "TYPE",
        "SIZE",
        "USED",
        "INODES USED",
        "UUID",
    ]
    .map(String::from)
    .to_vec()];
    let mut hidden = 0;
    for m in &inv.storage.mounts {
        if !matches!(m.kind, MountKind::Disk) {
            hidden += 1;
            continue;
        }
        rows.push(vec![
            m.device.clone(),
            m.mount_point.clone(),
            m.fs_type.clone(),
            m.bytes_total.map(bytes).unwrap_or_else(|| "-".into()),
            m.bytes_used.map(bytes).unwrap_or_else(|| "-".into()),
            match (m.inodes_used, m.inodes_total) {
                (Some(u), Some(t)) => format!("{u}/{t}"),
                _ => "-".into(),
            },
            opt(&m.uuid).to_string(),
        ]);
    }
    table(&mut o, &rows);
    if hidden > 0 {
        let _ = writeln!(
            o,
            "  ({hidden} pseudo, network or bind mounts not shown; --json lists them)"
        );
    }

    let disks: Vec<_> = inv
        .storage
        .block_devices
        .iter()
        .filter(|d| d.kind != "loop" || d.mount_point.is_some())
        .collect();
    if !disks.is_empty() {
        o.push_str("\nBlock devices\n");
        let mut rows = vec![["NAME", "KIND", "SIZE", "TABLE", "FS", "PARENT"]
            .map(String::from)
            .to_vec()];
        for d in disks {
            rows.push(vec![
                d.name.clone(),
                d.kind.clone(),
                bytes(d.size_bytes),
                opt(&d.partition_table).into(),
                opt(&d.fs_type).into(),
                opt(&d.parent).into(),
            ]);
        }
        table(&mut o, &rows);
    }
    for lv in &inv.storage.logical_volumes {
        let _ = writeln!(o, "  LVM {} ({})", lv.path, bytes(lv.size_bytes));
    }
    for md in &inv.storage.md_arrays {
        let _ = writeln!(
            o,
            "  MD {} {} [{}]{}",
            md.name,
            md.level,
            md.members.join(" "),
            if md.active { "" } else { " inactive" }
        );
    }

    o.push_str("\nNetwork\n");
    let mut rows = Vec::new();
    for i in &inv.network.interfaces {
        rows.push(vec![
            i.name.clone(),
            opt(&i.mac).into(),
            if i.up { "up".into() } else { "down".into() },
            if i.addresses.is_empty() {
                "-".into()
            } else {
                i.addresses.join(" ")
            },
        ]);
    }
    table(&mut o, &rows);
    for r in &inv.network.routes {
        let via = r
            .gateway
            .as_deref()
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        let dev = r
            .device
            .as_deref()
            .map(|d| format!(" dev {d}"))
            .unwrap_or_default();
        let _ = writeln!(o, "  route {}{via}{dev}", r.destination);
    }
    let dns = &inv.network.dns;
    if !dns.nameservers.is_empty() {
        let _ = writeln!(
            o,
            "  dns {}{}",
            dns.nameservers.join(" "),
            if dns.search.is_empty() {
                String::new()
            } else {
                format!(" (search {})", dns.search.join(" "))
            }
        );
    }
    let styles: Vec<String> = inv.network.config_styles.iter().map(name).collect();
    let _ = writeln!(
        o,
        "  config {}: {}",
        if styles.is_empty() {
            "none found".into()
        } else {
            styles.join(", ")
        },
        inv.network.config_files.join(" ")
    );

    let svc = &inv.services;
    let _ = writeln!(
        o,
        "\nServices ({})\n  {}",
        if svc.source == "systemd" {
            "systemd units"
        } else {
            "init scripts with a running daemon"
        },
        if svc.running.is_empty() {
            "none recognised".into()
        } else {
            svc.running.join(" ")
        }
    );
    let _ = writeln!(o, "  processes: {}", svc.processes.join(" "));

    let c = &inv.capabilities;
    let tar = match c.tar.flavour {
        TarFlavour::Missing => "missing".to_string(),
        flavour => {
            let features: Vec<&str> = [
                ("xattrs", c.tar.xattrs),
                ("acls", c.tar.acls),
                ("selinux", c.tar.selinux),
            ]
            .iter()
            .filter(|f| f.1)
            .map(|f| f.0)
            .collect();
            format!(
                "{} {}{}",
                name(&flavour),
                opt(&c.tar.version),
                if features.is_empty() {
                    " (no xattrs/acls/selinux)".into()
                } else {
                    format!(" ({})", features.join(", "))
                }
            )
        }
    };
    o.push_str("\nSource tools\n");
    table(
        &mut o,
        &[
            vec!["tar".into(), tar],
            vec!["find -printf".into(), yes_no(c.find_printf).into()],
            vec!["stat -c".into(), yes_no(c.stat_format).into()],
            vec!["busybox".into(), opt(&c.busybox).into()],
            vec!["compressors".into(), c.compressors.join(" ")],
            vec!["hashers".into(), c.hashers.join(" ")],
            vec!["rsync".into(), yes_no(c.rsync).into()],
        ],
    );
    if !inv.warnings.is_empty() {
        o.push_str("\nWarnings\n");
        for w in &inv.warnings {
            let _ = writeln!(o, "  - {w}");
        }
    }
    o
}

pub fn plan(p: &Plan) -> String {
    let mut o = String::new();
    let s = &p.source;
    let _ = writeln!(
        o,
        "Plan for {} ({}): {}, kernel {}, {}",
        s.hostname,
        s.name,
        s.distro,
        s.kernel,
        name(&s.bootloader)
    );
    let what = match &p.target {
        TargetSpec::Image { path, format, .. } => {
            format!("image {} ({})", path.display(), name(format))
        }
        TargetSpec::Live { .. } => format!("live {}", p.target.display()),
    };
    let _ = writeln!(
        o,
        "Target: {what}, {}, {} partition table\n",
        bytes(p.disk.size_bytes),
        name(&p.disk.partition_table)
    );
    let mut rows = vec![[
        "#",
        "ROLE",
        "SIZE",
        "MOUNT",
        "FS",
        "MKFS OPTIONS",
        "COPY OF (DATA)",
    ]
    .map(String::from)
    .to_vec()];
    for part in &p.disk.partitions {
        let fs = part.fs.as_ref();
        let mut mkfs = fs.map(plan::fs_rules::mkfs_args).unwrap_or_default();
        if let Some(n) = part.inodes {
            mkfs.extend(["-N".to_string(), n.to_string()]);
        }
        rows.push(vec![
            part.number.to_string(),
            name(&part.role),
            if part.role == PartitionRole::Extended {
                "-".into()
            } else {
                bytes(part.size_bytes)
            },
            part.mount_point.clone().unwrap_or_else(|| "-".into()),
            fs.map(|f| f.fs_type.name().to_string()).unwrap_or_else(|| {
                if part.role == PartitionRole::Swap {
                    "swap".into()
                } else {
                    "-".into()
                }
            }),
            if mkfs.is_empty() {
                "-".into()
            } else {
                mkfs.join(" ")
            },
            match (&part.source_device, part.source_used_bytes) {
                (Some(d), Some(u)) => format!("{d} ({})", bytes(u)),
                (Some(d), None) => d.clone(),
                _ => "-".into(),
            },
        ]);
    }
    table(&mut o, &rows);
    o.push_str("\nNot copied\n");
    let rows: Vec<Vec<String>> = p
        .excludes
        .iter()
        .map(|e| {
            vec![
                if e.contents_only {
                    format!("{}/*", e.path.trim_end_matches('/'))
                } else {
                    e.path.clone()
                },
                e.reason.clone(),
            ]
        })
        .collect();
    table(&mut o, &rows);
    if !p.network.is_empty() {
        o.push_str("\nNetwork\n");
        for n in &p.network {
            let _ = writeln!(
                o,
                "  {} ({}) {} -> VM NIC {}",
                n.source_interface,
                opt(&n.source_mac),
                n.addresses.join(" "),
                n.target_nic
            );
        }
    }
    if !p.notes.is_empty() {
        o.push_str("\nNotes\n");
        for n in &p.notes {
            let _ = writeln!(o, "  - {n}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_summary_shows_layout_mkfs_options_and_excludes() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/plan/debian5.plan.toml"
        ))
        .unwrap();
        let p = Plan::from_toml(&text).unwrap();
        let out = plan(&p);
        for needle in [
            "mbr partition table",
            "ext3",
            "-I 128",
            "/dev/hda1 (2.9 GiB)",
            "/proc/*",
            "/home/*",
            "eth0 (00:16:3e:2a:7c:01)",
            "swap",
        ] {
            assert!(
                out.contains(needle),
                "plan summary lacks {needle:?}:\n{out}"
            );
        }
    }

    #[test]
    fn debian5_summary_names_the_facts_a_sysadmin_looks_for() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/probe/debian5/inventory.json"
        ))
        .unwrap();
        let inv: Inventory = serde_json::from_str(&text).unwrap();
        let out = inventory(&inv);
        for needle in [
            "web01 (root@web01)",
            "Debian GNU/Linux 5.0.10, version 5.0.10 [debian family]",
            "running 2.6.26-2-686 i686",
            "grub-legacy, config /boot/grub/menu.lst",
            "/dev/hda1",
            "/srv/my data",
            "00:16:3e:2a:7c:01",
            "route default via 198.51.100.1 dev eth0",
            "apache2 cron mysql ssh",
            "gnu 1.20 (no xattrs/acls/selinux)",
        ] {
            assert!(out.contains(needle), "summary lacks {needle:?}:\n{out}");
        }
    }
}
