//! Part of the boot check: every interface the converted network config
//! brings up at boot must exist under that name in the VM. A clone whose
//! `auto eth5` names a NIC the VM does not have boots without its network,
//! which nothing else in the conversion would notice.
//!
//! What counts as brought up: ifupdown's `auto` and `allow-hotplug`
//! stanzas (`/etc/network/interfaces` and `interfaces.d/*`), and ifcfg
//! files with `ONBOOT=yes` (their `DEVICE=`, else the file's name). Only
//! names of physical NICs are checked (`ethN`, `enoN`, `ensN`, `enpXsY`,
//! `emN`, `pXpY`); a VLAN (`eth0.100`) or alias (`eth0:1`) needs its base
//! NIC. Bridges, bonds, loopback and the like are the guest's own.
//!
//! Pure functions over text; the caller reads the files.

/// `(line number, interface)` of every interface `text` brings up at
/// boot, in ifupdown's format.
pub fn ifupdown_brought_up(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("auto") | Some("allow-hotplug") | Some("allow-auto") => {
                for w in words {
                    out.push((i + 1, w.to_string()));
                }
            }
            _ => {}
        }
    }
    out
}

/// The interface an ifcfg file brings up at boot (`ONBOOT=yes`), with
/// the line that says so; `file_device` is the name from `ifcfg-NAME`.
pub fn ifcfg_brought_up(text: &str, file_device: &str) -> Option<(usize, String)> {
    let mut device = None;
    let mut onboot = None;
    for (i, line) in text.lines().enumerate() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
        match k.trim() {
            "DEVICE" => device = Some(v.to_string()),
            "ONBOOT" => onboot = Some((i + 1, v.eq_ignore_ascii_case("yes"))),
            // SUSE's ifcfg.
            "STARTMODE" => {
                let up = ["auto", "onboot", "hotplug", "nfsroot"].contains(&v);
                onboot = Some((i + 1, up));
            }
            _ => {}
        }
    }
    match onboot {
        Some((line, true)) => Some((line, device.unwrap_or_else(|| file_device.to_string()))),
        _ => None,
    }
}

/// The physical NIC an interface name needs, if it names one: `eth0.100`
/// and `eth0:1` need `eth0`; `br0`, `bond0`, `lo` need none.
pub fn physical_base(name: &str) -> Option<String> {
    let base = name.split(['.', ':']).next().unwrap_or(name);
    let digits_after = |p: &str| {
        base.strip_prefix(p)
            .is_some_and(|r| !r.is_empty() && r.chars().next().is_some_and(|c| c.is_ascii_digit()))
    };
    let physical = digits_after("eth")
        || digits_after("em")
        || digits_after("eno")
        || digits_after("ens")
        || digits_after("enp")
        || (base.starts_with('p') && base[1..].contains('p') && digits_after("p"));
    physical.then(|| base.to_string())
}

/// The first interface brought up at boot that the VM will not have:
/// `(line, interface, the NIC it needs)`.
pub fn first_missing(
    brought_up: &[(usize, String)],
    vm_nics: &[String],
) -> Option<(usize, String, String)> {
    brought_up.iter().find_map(|(line, name)| {
        let base = physical_base(name)?;
        (!vm_nics.contains(&base)).then(|| (*line, name.clone(), base))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifupdown_auto_and_hotplug_stanzas_are_brought_up() {
        let text = "auto lo\niface lo inet loopback\n\nallow-hotplug eth0 eth1\niface eth0 inet dhcp\n# auto eth9\n";
        assert_eq!(
            ifupdown_brought_up(text),
            vec![(1, "lo".into()), (4, "eth0".into()), (4, "eth1".into())]
        );
    }

    #[test]
    fn ifcfg_onboot_names_its_device() {
        let t = "DEVICE=\"eth1\"\nBOOTPROTO=static\nONBOOT=\"yes\"\n";
        assert_eq!(ifcfg_brought_up(t, "eth1"), Some((3, "eth1".into())));
        assert_eq!(ifcfg_brought_up("ONBOOT=no\n", "eth1"), None);
        assert_eq!(
            ifcfg_brought_up("ONBOOT=yes\n", "eth2"),
            Some((1, "eth2".into()))
        );
        assert_eq!(
            ifcfg_brought_up("BOOTPROTO='dhcp'\nSTARTMODE='auto'\n", "eth0"),
            Some((2, "eth0".into()))
        );
        assert_eq!(ifcfg_brought_up("STARTMODE='manual'\n", "eth0"), None);
    }

    #[test]
    fn only_physical_nics_are_needed() {
        assert_eq!(physical_base("eth0.100"), Some("eth0".into()));
        assert_eq!(physical_base("eth1:0"), Some("eth1".into()));
        assert_eq!(physical_base("enp0s3"), Some("enp0s3".into()));
        assert_eq!(physical_base("p2p1"), Some("p2p1".into()));
        for virtual_ in ["lo", "br0", "bond0", "docker0", "virbr0", "vlan100", "ethx"] {
            assert_eq!(physical_base(virtual_), None, "{virtual_}");
        }
    }

    #[test]
    fn regression_a_config_naming_a_nic_the_vm_lacks_is_found() {
        let up = ifupdown_brought_up("auto lo\nauto eth5\niface eth5 inet static\n");
        assert_eq!(
            first_missing(&up, &["eth0".into()]),
            Some((2, "eth5".into(), "eth5".into()))
        );
        let up = ifupdown_brought_up("auto eth0 eth0.100 br0\n");
        assert_eq!(first_missing(&up, &["eth0".into()]), None);
    }
}
