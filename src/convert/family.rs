//! The one place that knows distro families: which bootloader, initramfs,
//! network, sysconfig and console modules a guest gets. An unsupported
//! combination fails here, before anything is written, and names itself;
//! so does a kernel that cannot boot the VM (a Xen paravirtual kernel, a
//! kernel without virtio: [`crate::plan::kernel_rules`]).
//!
//! The initramfs tool follows the distribution and its version, not the
//! family's major version alone: Fedora 8-11 have Red Hat's mkinitrd and
//! Fedora 12+ dracut; openSUSE up to 13.1 and SLES 10-11 have SUSE's own
//! mkinitrd, openSUSE 13.2+/Leap and SLES 12+ dracut. A guest whose
//! distribution ID is unknown (a context saved before it was recorded) is
//! read as RHEL, or as SLES for a SUSE 12, and a note says so.

use super::bootloader::{grub2::Grub2, grub_legacy::GrubLegacy, host_grub2::HostGrub2, Bootloader};
use super::console::{
    inittab::Inittab, securetty::Securetty, systemd::SystemdGetty, upstart::Upstart,
};
use super::initramfs::{
    dracut::Dracut, initramfs_tools::InitramfsTools, mkinitrd::Mkinitrd,
    suse_mkinitrd::SuseMkinitrd, Initramfs,
};
use super::network::{
    ifcfg::Ifcfg, ifupdown::Ifupdown, netplan::Netplan, networkd::Networkd,
    networkmanager::NetworkManager, udev::UdevPersistentNet, NetworkConfig,
};
use super::sysconfig::{
    redhat_kernel::RedHatSysconfigKernel, suse_bootloader::SuseSysconfigBootloader,
};
use super::{ConvertError, FileRewriter, Guest};
use crate::plan::kernel_rules;
use crate::probe::{BootloaderKind, DistroFamily};

pub struct Modules {
    pub bootloader: Box<dyn Bootloader>,
    pub initramfs: Box<dyn Initramfs>,
    /// Network styles; each touches only files that exist.
    pub network: Vec<Box<dyn NetworkConfig>>,
    /// Distribution settings naming devices or kernels
    /// ([`super::sysconfig`]); each touches only files that exist.
    pub sysconfig: Vec<Box<dyn FileRewriter>>,
    /// Getty configuration for the VM's consoles ([`super::console`]).
    pub console: Vec<Box<dyn FileRewriter>>,
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
            .field(
                "sysconfig",
                &self.sysconfig.iter().map(|n| n.name()).collect::<Vec<_>>(),
            )
            .field(
                "console",
                &self.console.iter().map(|n| n.name()).collect::<Vec<_>>(),
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

/// What the copy itself holds for booting, read from the mounted clone:
/// the probe saw the running source, whose kernel and bootloader may have
/// been its hypervisor's (a Xen PV guest booted by pygrub or by a kernel
/// in dom0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyBoot {
    /// The guest's own GRUB 2: an installer and its i386-pc modules.
    pub grub2: bool,
    /// grub-legacy's `grub` shell, which installs it.
    pub grub_legacy: bool,
    /// The kernel the clone boots is in /boot.
    pub kernel: bool,
    /// dracut is installed.
    pub dracut: bool,
    /// initramfs-tools' `update-initramfs` is installed.
    pub update_initramfs: bool,
}

impl CopyBoot {
    /// Read from the clone mounted at `root`, for kernel `kver`.
    pub fn read(root: &std::path::Path, kver: &str) -> CopyBoot {
        let any = |paths: &[&str]| paths.iter().any(|p| root.join(p).exists());
        CopyBoot {
            grub2: any(&[
                "usr/sbin/grub-install",
                "usr/sbin/grub2-install",
                "sbin/grub-install",
                "sbin/grub2-install",
            ]) && any(&[
                // Debian, Red Hat; SLES 12; openSUSE and SLES 15.
                "usr/lib/grub/i386-pc/normal.mod",
                "usr/lib/grub2/i386-pc/normal.mod",
                "usr/share/grub2/i386-pc/normal.mod",
            ]),
            grub_legacy: any(&["sbin/grub", "usr/sbin/grub"]),
            kernel: any(&[
                &format!("boot/vmlinuz-{kver}"),
                &format!("boot/vmlinux-{kver}"),
            ]),
            dracut: any(&["usr/bin/dracut", "usr/sbin/dracut", "sbin/dracut"]),
            update_initramfs: any(&["usr/sbin/update-initramfs", "sbin/update-initramfs"]),
        }
    }
}

pub fn select(guest: &Guest) -> Result<Modules, ConvertError> {
    select_with(guest, None, None)
}

/// The bootloader module for `guest`. With what the copy holds known
/// (`copy`), the guest's own GRUB is used when its tools are in the copy
/// (GRUB 2's when a `menu.lst` is left over from pygrub but GRUB 2 is what
/// is installed), and this host's GRUB 2 ([`HostGrub2`]) when the copy has
/// no GRUB tools at all but has its kernel. Without `copy` (a config-only
/// conversion), the probe's word is taken.
fn bootloader_for(
    guest: &Guest,
    copy: Option<CopyBoot>,
) -> Result<Box<dyn Bootloader>, ConvertError> {
    let family = family_name(guest.family);
    let unsupported = |what: String, hint: &str| ConvertError::Unsupported {
        what,
        hint: hint.to_string(),
    };
    let kind = guest.bootloader;
    if let (Some(copy), BootloaderKind::Grub2 | BootloaderKind::GrubLegacy | BootloaderKind::None) =
        (copy, kind)
    {
        return match (kind, copy) {
            (BootloaderKind::Grub2, CopyBoot { grub2: true, .. }) => Ok(Box::new(Grub2)),
            (BootloaderKind::GrubLegacy, CopyBoot { grub_legacy: true, .. }) => {
                Ok(Box::new(GrubLegacy))
            }
            (BootloaderKind::GrubLegacy | BootloaderKind::None, CopyBoot { grub2: true, .. }) => {
                Ok(Box::new(Grub2))
            }
            (_, CopyBoot { kernel: true, .. }) => Ok(Box::new(HostGrub2)),
            _ => Err(unsupported(
                format!(
                    "{family} family with no bootloader and no kernel {} in /boot",
                    guest.kernel
                ),
                "the source boots a kernel its hypervisor supplies (a Xen PV guest with a kernel in dom0). Install the distribution's kernel package on the source (linux-image-*, kernel or kernel-default), then run the same clone again (or `hotclone sync` if the clone finished)",
            )),
        };
    }
    match kind {
        BootloaderKind::Grub2 => Ok(Box::new(Grub2)),
        BootloaderKind::GrubLegacy => Ok(Box::new(GrubLegacy)),
        BootloaderKind::None => Err(unsupported(
            format!("{family} family with no bootloader"),
            "the copy has neither grub2 nor grub-legacy; install grub on the source (or boot the clone with an external kernel)",
        )),
        other => Err(unsupported(
            format!("{family} family with {}", bootloader_name(other)),
            "switch the source to grub (grub2 or grub-legacy) before cloning",
        )),
    }
}

/// [`select`], told whether the guest kernel's own module lists name
/// `virtio_blk` (`None` when they cannot be read), and what the copy
/// holds for booting (`None` when not read: see [`bootloader_for`]). A
/// kernel whose version predates virtio but whose modules have it (a
/// distro backport the rules do not know) is converted.
pub fn select_with(
    guest: &Guest,
    kernel_has_virtio: Option<bool>,
    copy: Option<CopyBoot>,
) -> Result<Modules, ConvertError> {
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
    let bootloader = bootloader_for(guest, copy)?;
    if let Some((what, hint)) = kernel_rules::unbootable(family, &guest.kernel) {
        let xen = kernel_rules::xen_pv_only(family, &guest.kernel);
        if xen || kernel_has_virtio != Some(true) {
            return Err(ConvertError::Unsupported { what, hint });
        }
    }
    let initramfs = initramfs_for(guest, copy, &mut notes);
    let network: Vec<Box<dyn NetworkConfig>> = match family {
        DistroFamily::Debian => vec![
            Box::new(Ifupdown),
            Box::new(Netplan),
            Box::new(NetworkManager),
            Box::new(Networkd),
            Box::new(UdevPersistentNet),
        ],
        _ => vec![
            Box::new(Ifcfg),
            Box::new(Netplan),
            Box::new(NetworkManager),
            Box::new(Networkd),
            Box::new(UdevPersistentNet),
        ],
    };
    let sysconfig: Vec<Box<dyn FileRewriter>> = match family {
        DistroFamily::RedHat => vec![Box::new(RedHatSysconfigKernel)],
        DistroFamily::Suse => vec![Box::new(SuseSysconfigBootloader)],
        _ => vec![],
    };
    let mut console: Vec<Box<dyn FileRewriter>> = vec![
        Box::new(Inittab),
        Box::new(SystemdGetty),
        Box::new(Securetty),
    ];
    if family == DistroFamily::Debian {
        // Ubuntu's upstart; RHEL 6's upstart starts a serial getty from
        // console= by itself (/etc/init/serial.conf).
        console.push(Box::new(Upstart));
    }
    Ok(Modules {
        bootloader,
        initramfs,
        network,
        sysconfig,
        console,
        notes,
    })
}

/// Which initramfs tool the guest's distribution and version have,
/// whatever its bootloader (the boot check's rebuild advice names it),
/// and what the copy holds when it was read (`copy`).
pub fn initramfs_tool(guest: &Guest, copy: Option<CopyBoot>) -> Box<dyn Initramfs> {
    initramfs_for(guest, copy, &mut Vec::new())
}

/// [`initramfs_tool`], with notes on what was assumed. A Debian or Ubuntu
/// copy that has dracut in place of initramfs-tools (the two conflict:
/// installing one removes the other) is rebuilt with dracut.
fn initramfs_for(
    guest: &Guest,
    copy: Option<CopyBoot>,
    notes: &mut Vec<String>,
) -> Box<dyn Initramfs> {
    let id = guest.id.to_ascii_lowercase();
    let version = guest.version_pair();
    match guest.family {
        DistroFamily::Debian => match copy {
            Some(CopyBoot {
                dracut: true,
                update_initramfs: false,
                ..
            }) => {
                notes.push(
                    "the copy has dracut in place of initramfs-tools: its initramfs is rebuilt with dracut".into(),
                );
                Box::new(Dracut)
            }
            _ => Box::new(InitramfsTools),
        },
        DistroFamily::Unknown => Box::new(InitramfsTools),
        DistroFamily::RedHat => match (id.as_str(), version) {
            ("fedora", Some((v, _))) if v < 12 => Box::new(Mkinitrd),
            ("fedora", Some(_)) => Box::new(Dracut),
            (_, Some((v, _))) if v < 6 => Box::new(Mkinitrd),
            (_, Some(_)) => Box::new(Dracut),
            (_, None) => {
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
        DistroFamily::Suse => {
            let opensuse = id.starts_with("opensuse");
            let rolling = ["leap", "tumbleweed", "microos", "slowroll"]
                .iter()
                .any(|r| id.contains(r));
            match version {
                _ if rolling => Box::new(Dracut),
                // openSUSE 13.2 switched to dracut; 42.x and 15.x are Leap.
                Some(v) if opensuse || (id.is_empty() && v.0 == 13) => {
                    if v < (13, 2) {
                        Box::new(SuseMkinitrd)
                    } else {
                        Box::new(Dracut)
                    }
                }
                Some((v, _)) if v < 12 => Box::new(SuseMkinitrd),
                Some((v, _)) => {
                    if id.is_empty() && v == 12 {
                        notes.push(
                            "SUSE 12 of unknown distribution: assuming SLES 12 (dracut); an openSUSE 12.x has mkinitrd, probe the source again to tell".into(),
                        );
                    }
                    Box::new(Dracut)
                }
                None => {
                    notes.push(
                        "SUSE version unknown: assuming SUSE's mkinitrd (SLES 10-11 era)".into(),
                    );
                    Box::new(SuseMkinitrd)
                }
            }
        }
    }
}
