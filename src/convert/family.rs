//! The one place that knows distro families: which bootloader, initramfs
//! and network modules a guest gets. An unsupported combination fails here,
//! before anything is written, and names itself.

use super::bootloader::{grub2::Grub2, grub_legacy::GrubLegacy, Bootloader};
use super::initramfs::{
    dracut::Dracut, initramfs_tools::InitramfsTools, mkinitrd::Mkinitrd, Initramfs,
};
use super::network::{
    ifcfg::Ifcfg, ifupdown::Ifupdown, netplan::Netplan, udev::UdevPersistentNet, NetworkConfig,
};
use super::{ConvertError, Guest};
use crate::probe::{BootloaderKind, DistroFamily, NetConfigStyle};

pub struct Modules {
    pub bootloader: Box<dyn Bootloader>,
    pub initramfs: Box<dyn Initramfs>,
    /// Network styles; each touches only files that exist.
    pub network: Vec<Box<dyn NetworkConfig>>,
    /// What was chosen by assumption, or left as it is.
    pub notes: Vec<String>,
}

impl std::fmt::Debug for Modules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Modules")
            .field("bootloader", &self.bootloader.name())
            .field("initramfs", &self.initramfs.name())
            .field(
                "network",
                &self.network.iter().map(|n| n.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

pub fn family_name(f: DistroFamily) -> &'static str {
    match f {
        DistroFamily::Debian => "Debian",
        DistroFamily::RedHat => "Red Hat",
        DistroFamily::Suse => "Suse",
        DistroFamily::Unknown => "Unknown",
    }
}

fn bootloader_name(b: BootloaderKind) -> &'static str {
    match b {
        BootloaderKind::Grub2 => "grub2",
        BootloaderKind::GrubLegacy => "grub-legacy",
        BootloaderKind::Lilo => "lilo",
        BootloaderKind::Extlinux => "extlinux",
        BootloaderKind::None => "no bootloader",
    }
}

pub fn select(guest: &Guest) -> Result<Modules, ConvertError> {
    let family = guest.family;
    let mut notes = Vec::new();
    let unsupported = |what: String, hint: &str| ConvertError::Unsupported {
        what,
        hint: hint.to_string(),
    };
    if family == DistroFamily::Unknown {
        return Err(unsupported(
            "an unknown distribution family".into(),
            "hotclone converts Debian, Red Hat and SUSE families; check the probe's os section",
        ));
    }
    let bootloader: Box<dyn Bootloader> = match guest.bootloader {
        BootloaderKind::Grub2 => Box::new(Grub2),
        BootloaderKind::GrubLegacy => Box::new(GrubLegacy),
        BootloaderKind::None => {
            return Err(unsupported(
                format!("{} family with no bootloader", family_name(family)),
                "the copy has neither grub2 nor grub-legacy; install grub on the source (or boot the clone with an external kernel)",
            ))
        }
        other => {
            return Err(unsupported(
                format!("{} family with {}", family_name(family), bootloader_name(other)),
                "switch the source to grub (grub2 or grub-legacy) before cloning",
            ))
        }
    };
    let major = guest.major_version();
    let initramfs: Box<dyn Initramfs> = match family {
        DistroFamily::Debian => Box::new(InitramfsTools),
        DistroFamily::RedHat => match major {
            Some(v) if v < 6 => Box::new(Mkinitrd),
            Some(_) => Box::new(Dracut),
            None => {
                let legacy = guest.bootloader == BootloaderKind::GrubLegacy;
                notes.push(format!(
                    "Red Hat version unknown: assuming {} from the bootloader",
                    if legacy {
                        "mkinitrd (RHEL 5 era)"
                    } else {
                        "dracut"
                    }
                ));
                if legacy {
                    Box::new(Mkinitrd)
                } else {
                    Box::new(Dracut)
                }
            }
        },
        DistroFamily::Suse => match major {
            Some(v) if v >= 12 => Box::new(Dracut),
            _ => {
                return Err(unsupported(
                    format!(
                        "Suse family before 12 (SUSE's own mkinitrd), version {}",
                        guest.version.as_deref().unwrap_or("unknown")
                    ),
                    "only SUSE 12 and later (dracut) are converted",
                ))
            }
        },
        DistroFamily::Unknown => unreachable!("refused above"),
    };
    let network: Vec<Box<dyn NetworkConfig>> = match family {
        DistroFamily::Debian => vec![
            Box::new(Ifupdown),
            Box::new(Netplan),
            Box::new(UdevPersistentNet),
        ],
        _ => vec![
            Box::new(Ifcfg),
            Box::new(Netplan),
            Box::new(UdevPersistentNet),
        ],
    };
    for style in &guest.network_styles {
        let left = match style {
            NetConfigStyle::NetworkManager => "NetworkManager keyfiles",
            NetConfigStyle::Networkd => "systemd-networkd .network files",
            _ => continue,
        };
        notes.push(format!("{left} are left as they are (not converted yet); check they do not pin the source's MAC"));
    }
    Ok(Modules {
        bootloader,
        initramfs,
        network,
        notes,
    })
}
