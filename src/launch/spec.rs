//! The launch options as the user writes them: `--disk
//! PATH[,size=SIZE][,format=raw|qcow2]`, `--net bridge:BR|tap:TAP` (with
//! `,netns=NS` when the bridge or tap lives in another network namespace,
//! as in the lab) and `--ip ADDR/PREFIX`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::plan::ImageFormat;
use crate::units::parse_size;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub size_bytes: Option<u64>,
    pub format: ImageFormat,
}

impl std::str::FromStr for DiskSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let shape = || {
            format!("disk {spec:?}: expected PATH[,size=SIZE][,format=raw|qcow2], e.g. /var/lib/vm/web01.qcow2,size=40G")
        };
        let mut parts = spec.split(',');
        let path = parts.next().filter(|p| !p.is_empty()).ok_or_else(shape)?;
        let (mut size_bytes, mut format) = (None, None);
        for opt in parts {
            match opt.split_once('=') {
                Some(("size", v)) => {
                    size_bytes = Some(parse_size(v).map_err(|e| format!("disk {spec:?}: {e}"))?)
                }
                Some(("format", "raw")) => format = Some(ImageFormat::Raw),
                Some(("format", "qcow2")) => format = Some(ImageFormat::Qcow2),
                _ => {
                    return Err(format!(
                        "disk {spec:?}: unknown option {opt:?} (size=SIZE, format=raw|qcow2)"
                    ))
                }
            }
        }
        Ok(DiskSpec {
            path: PathBuf::from(path),
            size_bytes,
            format: format.unwrap_or(if path.ends_with(".qcow2") {
                ImageFormat::Qcow2
            } else {
                ImageFormat::Raw
            }),
        })
    }
}

/// Where the VM's NIC goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NetSpec {
    /// A new tap device enslaved to this bridge (removed when the VM stops).
    Bridge {
        bridge: String,
        netns: Option<String>,
    },
    /// An existing tap device, used as it is.
    Tap { tap: String, netns: Option<String> },
}

impl NetSpec {
    pub fn netns(&self) -> Option<&str> {
        match self {
            NetSpec::Bridge { netns, .. } | NetSpec::Tap { netns, .. } => netns.as_deref(),
        }
    }
}

fn is_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl std::str::FromStr for NetSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let shape = || {
            format!("net {spec:?}: expected bridge:BRIDGE or tap:TAP, optionally with ,netns=NAMESPACE (e.g. bridge:br0)")
        };
        let (kind, rest) = spec.split_once(':').ok_or_else(shape)?;
        let mut parts = rest.split(',');
        let name = parts.next().filter(|n| is_ifname(n)).ok_or_else(shape)?;
        let mut netns = None;
        for opt in parts {
            match opt.split_once('=') {
                Some(("netns", ns))
                    if is_ifname(ns) || (!ns.is_empty() && ns.len() <= 64 && !ns.contains('/')) =>
                {
                    netns = Some(ns.to_string())
                }
                _ => {
                    return Err(format!(
                        "net {spec:?}: unknown option {opt:?} (netns=NAMESPACE)"
                    ))
                }
            }
        }
        match kind {
            "bridge" => Ok(NetSpec::Bridge {
                bridge: name.into(),
                netns,
            }),
            "tap" => Ok(NetSpec::Tap {
                tap: name.into(),
                netns,
            }),
            _ => Err(shape()),
        }
    }
}

/// Which hypervisor runs the VM, as `--hypervisor` spells it: `qemu`
/// (a QEMU process of hotclone's own, the default) or
/// `libvirt[:URI][,type=kvm|qemu]` (a libvirt domain; URI defaults to
/// `qemu:///system`, the domain type to `kvm` when libvirt offers it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HypervisorSpec {
    #[default]
    Qemu,
    Libvirt {
        uri: String,
        /// `kvm` or `qemu` (TCG); `None`: `kvm` when libvirt offers it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain_type: Option<String>,
    },
}

pub const LIBVIRT_DEFAULT_URI: &str = "qemu:///system";

impl std::fmt::Display for HypervisorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HypervisorSpec::Qemu => write!(f, "qemu"),
            HypervisorSpec::Libvirt { uri, domain_type } => {
                write!(f, "libvirt:{uri}")?;
                match domain_type {
                    Some(t) => write!(f, ",type={t}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// `DRIVER:///PATH`, a libvirt URI without a host.
fn is_local_uri(uri: &str) -> bool {
    uri.split_once(":///").is_some_and(|(driver, path)| {
        !driver.is_empty()
            && driver
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
            && !path.is_empty()
            && !path.contains(char::is_whitespace)
    })
}

impl std::str::FromStr for HypervisorSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let shape = || {
            format!("hypervisor {spec:?}: expected qemu or libvirt[:URI][,type=kvm|qemu] with a libvirt on this host, e.g. libvirt:qemu:///system")
        };
        let (head, domain_type) = match spec.rsplit_once(",type=") {
            Some((head, t @ ("kvm" | "qemu"))) => (head, Some(t.to_string())),
            Some(_) => return Err(shape()),
            None => (spec, None),
        };
        match head.split_once(':') {
            None if head == "qemu" && domain_type.is_none() => Ok(HypervisorSpec::Qemu),
            None if head == "libvirt" => Ok(HypervisorSpec::Libvirt {
                uri: LIBVIRT_DEFAULT_URI.into(),
                domain_type,
            }),
            // A libvirtd on this host (no host part): the disk, kernel
            // and console log are files here.
            Some(("libvirt", uri)) if is_local_uri(uri) => Ok(HypervisorSpec::Libvirt {
                uri: uri.into(),
                domain_type,
            }),
            _ => Err(shape()),
        }
    }
}

/// The rescue system's static address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingIp {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

impl StagingIp {
    /// `hotclone.ip=A/P [hotclone.gw=G]` for the rescue kernel.
    pub fn cmdline(&self) -> String {
        let mut s = format!("hotclone.ip={}/{}", self.addr, self.prefix);
        if let Some(g) = self.gateway {
            s.push_str(&format!(" hotclone.gw={g}"));
        }
        s
    }
}

impl std::str::FromStr for StagingIp {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let shape = || format!("ip {spec:?}: expected ADDRESS/PREFIX, e.g. 192.0.2.50/24");
        let (a, p) = spec.split_once('/').ok_or_else(shape)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| shape())?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(shape)?;
        Ok(StagingIp {
            addr,
            prefix,
            gateway: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_nets_and_addresses_parse_with_their_defaults() {
        let d: DiskSpec = "/vm/a.qcow2,size=8G".parse().unwrap();
        assert_eq!(d.format, ImageFormat::Qcow2);
        assert_eq!(d.size_bytes, Some(8 << 30));
        let d: DiskSpec = "/vm/a.img".parse().unwrap();
        assert_eq!((d.format, d.size_bytes), (ImageFormat::Raw, None));
        assert_eq!(
            "bridge:br0,netns=hc-lan".parse::<NetSpec>().unwrap(),
            NetSpec::Bridge {
                bridge: "br0".into(),
                netns: Some("hc-lan".into())
            }
        );
        assert_eq!(
            "tap:tap7".parse::<NetSpec>().unwrap(),
            NetSpec::Tap {
                tap: "tap7".into(),
                netns: None
            }
        );
        let ip: StagingIp = "198.51.100.50/24".parse().unwrap();
        assert_eq!(ip.cmdline(), "hotclone.ip=198.51.100.50/24");
    }

    #[test]
    fn hypervisors_parse_with_their_defaults_and_print_back() {
        assert_eq!("qemu".parse::<HypervisorSpec>(), Ok(HypervisorSpec::Qemu));
        let lv: HypervisorSpec = "libvirt".parse().unwrap();
        assert_eq!(lv.to_string(), "libvirt:qemu:///system");
        let lv: HypervisorSpec = "libvirt:qemu:///session,type=qemu".parse().unwrap();
        assert_eq!(
            lv,
            HypervisorSpec::Libvirt {
                uri: "qemu:///session".into(),
                domain_type: Some("qemu".into())
            }
        );
        assert_eq!(lv.to_string().parse::<HypervisorSpec>(), Ok(lv));
        for bad in [
            "",
            "kvm",
            "libvirt:",
            "libvirt,type=xen",
            "qemu,type=kvm",
            "libvirt:nouri",
            // Another host's libvirtd cannot open this host's files.
            "libvirt:qemu+ssh://root@kvm1/system",
        ] {
            let e = bad.parse::<HypervisorSpec>().unwrap_err();
            assert!(e.contains("expected qemu or libvirt"), "{bad}: {e}");
        }
        // A VM recorded before there was a choice ran under QEMU direct.
        #[derive(serde::Deserialize)]
        struct Old {
            #[serde(default)]
            h: HypervisorSpec,
        }
        let old: Old = serde_json::from_str("{}").unwrap();
        assert_eq!(old.h, HypervisorSpec::Qemu);
    }

    #[test]
    fn bad_specs_say_what_is_expected() {
        for (bad, says) in [
            ("", "expected PATH"),
            ("/a.img,size=lots", "unknown unit"),
            ("/a.img,format=vmdk", "unknown option"),
        ] {
            let e = bad.parse::<DiskSpec>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        for bad in [
            "br0",
            "bridge:",
            "vde:x",
            "bridge:a-name-far-too-long",
            "bridge:br0,x=1",
        ] {
            assert!(bad.parse::<NetSpec>().is_err(), "{bad}");
        }
        for bad in [
            "198.51.100.50",
            "198.51.100.500/24",
            "198.51.100.5/33",
            "x/24",
        ] {
            assert!(bad.parse::<StagingIp>().is_err(), "{bad}");
        }
    }
}
