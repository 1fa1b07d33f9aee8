//! Finalize the clone's identity on its (mounted) disk, just before it
//! boots with the production addresses. Runs where the disk is: in the
//! rescue VM (`hotclone target finalize`).
//!
//! The copy already carries the source's own network configuration,
//! hostname and resolv.conf (the final sync brought them, conversion kept
//! them without MAC pinning). This step checks that the production
//! addresses are in it, makes the clone announce its addresses when its
//! interfaces come up (`arp_notify`, so neighbours drop the source's MAC
//! at once), and removes everything of ours from the disk: the target's
//! state directory (journal copy, plan, inventory, the conversion's
//! interface-rename record) and the rename marker older versions left in
//! `/var/lib/hotclone`.
//!
//! On failure nothing was removed unless the checks passed; the disk is
//! left mounted by the caller's handle and unmounted by it.

use std::path::Path;

use crate::probe::addresses::ProdAddr;
use crate::probe::Inventory;

/// Makes the kernel send gratuitous ARP when an interface comes up. The
/// client removes it once the clone is healthy (the running kernel keeps
/// the setting until the next boot).
pub const ANNOUNCE_SYSCTL: &str = "etc/sysctl.d/99-hotclone-announce.conf";

const ANNOUNCE: &str =
    "# hotclone cutover: announce addresses (gratuitous ARP) when interfaces come up.\n\
# Removed by hotclone once the clone is healthy.\n\
net.ipv4.conf.all.arp_notify = 1\n\
net.ipv4.conf.default.arp_notify = 1\n";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the clone's network configuration ({files}) does not carry the production address {addr}; the source configures it some other way. Add it to the source's configuration (or give the clone's config by hand on the disk) and run the cutover again")]
    AddressMissing { addr: String, files: String },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Whether `text` (a network config file) configures `ip`, or leaves the
/// address to DHCP.
fn mentions(text: &str, ip: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .any(|w| w == ip)
}

/// Check the copy's network identity and clean our traces off `root`.
/// Returns notes for the report.
pub fn finalize(
    root: &Path,
    inventory: &Inventory,
    addresses: &[ProdAddr],
) -> Result<Vec<String>, IdentityError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityError::Io { path, source }
    };
    let mut notes = Vec::new();
    let files: Vec<(String, String)> = inventory
        .network
        .config_files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(root.join(f.trim_start_matches('/'))).ok()?;
            Some((f.clone(), text))
        })
        .collect();
    for a in addresses {
        if files.iter().any(|(_, t)| mentions(t, a.ip())) {
            continue;
        }
        if files.iter().any(|(_, t)| t.contains("dhcp")) {
            notes.push(format!(
                "{} comes from DHCP on the source, and will on the clone: have the DHCP server give it to the VM's MAC",
                a.ip()
            ));
            continue;
        }
        return Err(IdentityError::AddressMissing {
            addr: a.cidr.clone(),
            files: if files.is_empty() {
                "no config file found".into()
            } else {
                files
                    .iter()
                    .map(|(f, _)| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    }
    let hostname = root.join("etc/hostname");
    if let Ok(h) = std::fs::read_to_string(&hostname) {
        if h.trim() != inventory.hostname && !inventory.hostname.is_empty() {
            std::fs::write(&hostname, format!("{}\n", inventory.hostname))
                .map_err(io(&hostname))?;
            notes.push(format!("/etc/hostname set to {}", inventory.hostname));
        }
    }
    let sysctl = root.join(ANNOUNCE_SYSCTL);
    if let Some(dir) = sysctl.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::write(&sysctl, ANNOUNCE).map_err(io(&sysctl))?;
    for ours in [
        crate::migration::target_state(root),
        root.join("var/lib/hotclone"),
    ] {
        match std::fs::remove_dir_all(&ours) {
            Ok(()) => notes.push(format!(
                "removed /{}",
                ours.strip_prefix(root).unwrap_or(&ours).display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&ours)(e)),
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian5() -> Inventory {
        crate::probe::fixture("debian5")
    }

    fn root(tag: &str, interfaces: &str) -> std::path::PathBuf {
        let root =
            std::env::temp_dir().join(format!("hotclone-identity-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["etc/network", ".hotclone", "var/lib/hotclone"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/network/interfaces"), interfaces).unwrap();
        std::fs::write(root.join("etc/hostname"), "web01\n").unwrap();
        std::fs::write(root.join(".hotclone/journal.sqlite"), "x").unwrap();
        std::fs::write(crate::convert::renamed_record(&root), "x").unwrap();
        root
    }

    #[test]
    fn finalize_checks_the_addresses_and_removes_our_files() {
        let inv = debian5();
        let (addrs, _) = crate::probe::addresses::production(&inv.network);
        let r = root(
            "ok",
            "auto eth0\niface eth0 inet static\n  address 198.51.100.10\n  netmask 255.255.255.0\n\
             auto eth0:1\niface eth0:1 inet static\n  address 198.51.100.20/25\n",
        );
        let notes = finalize(&r, &inv, &addrs).unwrap();
        assert!(!r.join(".hotclone").exists());
        assert!(!crate::convert::renamed_record(&r).exists());
        assert!(!r.join("var/lib/hotclone").exists());
        let sysctl = std::fs::read_to_string(r.join(ANNOUNCE_SYSCTL)).unwrap();
        assert!(
            sysctl.contains("net.ipv4.conf.all.arp_notify = 1"),
            "{sysctl}"
        );
        assert!(notes.iter().any(|n| n == "removed /.hotclone"), "{notes:?}");
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn an_address_the_clone_does_not_configure_is_refused_before_anything_is_removed() {
        let inv = debian5();
        let (addrs, _) = crate::probe::addresses::production(&inv.network);
        let r = root(
            "missing",
            "auto eth0\niface eth0 inet static\n  address 198.51.100.10/24\n",
        );
        let e = finalize(&r, &inv, &addrs).unwrap_err().to_string();
        assert!(e.contains("198.51.100.20/25"), "{e}");
        assert!(r.join(".hotclone/journal.sqlite").exists());
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn addresses_are_whole_words() {
        assert!(mentions(
            "iface eth0 inet static\n  address 198.51.100.11/24\n",
            "198.51.100.11"
        ));
        assert!(mentions("IPADDR=198.51.100.11\n", "198.51.100.11"));
        assert!(!mentions("address 198.51.100.110/24\n", "198.51.100.11"));
        assert!(!mentions("address 1198.51.100.11/24\n", "198.51.100.11"));
    }
}
