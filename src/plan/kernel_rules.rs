//! Whether the kernel a clone keeps can boot as a KVM guest at all: a Xen
//! paravirtual-only kernel cannot, and a kernel without virtio drivers
//! cannot see the VM's disk and NIC. One table of rules, pure functions of
//! the family and the `uname -r` string, used by the plan (which refuses
//! before anything is copied) and by conversion (which refuses before
//! anything is written, for plans made by an older hotclone).
//!
//! Decision for kernels without virtio (2.4, 2.6 before 2.6.25 without a
//! distro backport): refuse at conversion, naming the kernel and the update
//! that brings virtio; the plan notes it (it cannot see the kernel's
//! modules), and a kernel whose own module lists have `virtio_blk` (a
//! backport this table does not know) is converted. The VMs hotclone defines have virtio disks and NICs only; an
//! emulated IDE disk and e1000 NIC would need a second VM definition, a
//! second initramfs driver set and its own boot test, for kernels the
//! distros themselves stopped updating. RHEL 4.8 and RHEL 5.3 backported
//! virtio, so every maintained RHEL 4/5 converts.

use super::fs_rules::KernelVersion;
use crate::probe::DistroFamily;

/// Whether `kernel` (`uname -r`) is a Xen paravirtual kernel that cannot
/// boot on bare hardware or under KVM: RHEL 5's `el5xen`, SUSE's `-xen`
/// flavour (xenlinux through SLES 12), and the pre-pvops `-xen` flavours
/// of Debian 5 (`2.6.26-2-xen-amd64`) and Ubuntu 8.04 (`2.6.24-*-xen`).
/// Debian 6's `2.6.32-5-xen-amd64` is a pvops kernel that boots natively,
/// so it is not one.
pub fn xen_pv_only(family: DistroFamily, kernel: &str) -> bool {
    let lower = kernel.to_ascii_lowercase();
    if !lower.contains("xen") {
        return false;
    }
    if family == DistroFamily::Suse {
        return true;
    }
    match KernelVersion::parse(kernel) {
        Some(v) => v < KernelVersion(2, 6, 32),
        None => true,
    }
}

/// The package to install on the source in place of a Xen PV kernel.
pub fn non_xen_kernel_package(family: DistroFamily, kernel: &str) -> String {
    match family {
        DistroFamily::RedHat => {
            "kernel (yum install kernel; kernel-PAE on i686 with more than 4 GiB)".into()
        }
        DistroFamily::Suse => {
            "kernel-default (zypper install kernel-default, or yast -i kernel-default on SLES 10)"
                .into()
        }
        DistroFamily::Debian => {
            // 2.6.26-2-xen-amd64 -> linux-image-2.6.26-2-amd64;
            // 2.6.24-32-xen (Ubuntu) -> linux-image-server.
            if let Some((base, arch)) = kernel.split_once("-xen-") {
                format!("linux-image-{base}-{arch} (apt-get install linux-image-{base}-{arch})")
            } else {
                "linux-image-server or linux-image-generic (apt-get install linux-image-server)"
                    .into()
            }
        }
        DistroFamily::Unknown => "the distribution's non-Xen kernel package".into(),
    }
}

/// Whether a kernel has virtio drivers for the VM's disk and NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Virtio {
    /// Mainline since 2.6.25 (virtio_pci).
    Mainline,
    /// A distro backport: RHEL 5.3+ (2.6.18-128 and later), RHEL 4.8+
    /// (2.6.9-89 and later).
    Backported(&'static str),
    /// No virtio; the text says what would bring it.
    Missing(&'static str),
}

/// The virtio support of `kernel` (`uname -r`).
pub fn virtio_support(kernel: &str) -> Virtio {
    let Some(v) = KernelVersion::parse(kernel) else {
        // Unreadable: the plan refuses those already; do not guess here.
        return Virtio::Mainline;
    };
    if v >= KernelVersion(2, 6, 25) {
        return Virtio::Mainline;
    }
    // "2.6.18-128.el5" -> release 128 of the RHEL 5 kernel.
    let release = kernel
        .split_once('-')
        .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|r| r.parse::<u32>().ok());
    let el = |tag: &str| kernel.contains(tag);
    match (v, release) {
        (KernelVersion(2, 6, 18), Some(r)) if el(".el5") => {
            if r >= 128 {
                Virtio::Backported("RHEL 5.3 and later (2.6.18-128+) carry virtio")
            } else {
                Virtio::Missing("update to RHEL/CentOS 5.3 or later (yum update kernel): 2.6.18-128 and later carry virtio")
            }
        }
        (KernelVersion(2, 6, 9), Some(r)) if el(".EL") || el(".el4") => {
            if r >= 89 {
                Virtio::Backported("RHEL 4.8 and later (2.6.9-89+) carry virtio")
            } else {
                Virtio::Missing("update to RHEL/CentOS 4.8 or later (up2date/yum update kernel): 2.6.9-89 and later carry virtio")
            }
        }
        (KernelVersion(2, 4, _), _) | (KernelVersion(2, 2, _), _) => Virtio::Missing(
            "a 2.4 kernel has no virtio at all; hotclone cannot convert it (its VMs have virtio disks and NICs only)",
        ),
        _ => Virtio::Missing(
            "virtio came with Linux 2.6.25; install a newer kernel from the distribution on the source",
        ),
    }
}

/// Why `kernel` cannot boot the VM, and what to do; `None` when it can.
pub fn unbootable(family: DistroFamily, kernel: &str) -> Option<(String, String)> {
    if xen_pv_only(family, kernel) {
        return Some((
            format!("the Xen paravirtual kernel {kernel} (it cannot boot under KVM)"),
            format!(
                "install the non-Xen kernel on the source: {}; then plan again (or pick an installed non-Xen kernel with --kernel)",
                non_xen_kernel_package(family, kernel)
            ),
        ));
    }
    if let Virtio::Missing(hint) = virtio_support(kernel) {
        return Some((
            format!("kernel {kernel} without virtio drivers (the VM's disk and NIC are virtio)"),
            hint.to_string(),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xen_pv_kernels_of_each_family_are_named() {
        assert!(xen_pv_only(DistroFamily::RedHat, "2.6.18-398.el5xen"));
        assert!(xen_pv_only(DistroFamily::Suse, "2.6.16.60-0.21-xen"));
        assert!(xen_pv_only(DistroFamily::Suse, "3.0.101-63-xen"));
        assert!(xen_pv_only(DistroFamily::Debian, "2.6.26-2-xen-amd64"));
        assert!(xen_pv_only(DistroFamily::Debian, "2.6.24-32-xen"));
        // pvops: boots natively.
        assert!(!xen_pv_only(DistroFamily::Debian, "2.6.32-5-xen-amd64"));
        assert!(!xen_pv_only(DistroFamily::RedHat, "2.6.18-398.el5"));
        assert!(!xen_pv_only(DistroFamily::Suse, "3.0.101-63-default"));
    }

    #[test]
    fn the_non_xen_package_is_named_per_family() {
        assert!(
            non_xen_kernel_package(DistroFamily::Debian, "2.6.26-2-xen-amd64")
                .starts_with("linux-image-2.6.26-2-amd64")
        );
        assert!(
            non_xen_kernel_package(DistroFamily::Suse, "2.6.16.60-0.21-xen")
                .starts_with("kernel-default")
        );
        assert!(
            non_xen_kernel_package(DistroFamily::RedHat, "2.6.18-398.el5xen")
                .starts_with("kernel ")
        );
    }

    #[test]
    fn virtio_by_version_and_backport() {
        assert_eq!(virtio_support("2.6.26-2-amd64"), Virtio::Mainline);
        assert_eq!(virtio_support("2.6.25.4-10-default"), Virtio::Mainline);
        assert!(matches!(
            virtio_support("2.6.18-128.el5"),
            Virtio::Backported(_)
        ));
        assert!(matches!(
            virtio_support("2.6.18-398.el5PAE"),
            Virtio::Backported(_)
        ));
        assert!(matches!(
            virtio_support("2.6.18-92.el5"),
            Virtio::Missing(_)
        ));
        assert!(matches!(
            virtio_support("2.6.9-89.ELsmp"),
            Virtio::Backported(_)
        ));
        assert!(matches!(
            virtio_support("2.6.9-78.ELsmp"),
            Virtio::Missing(_)
        ));
        assert!(matches!(virtio_support("2.4.21-63.EL"), Virtio::Missing(_)));
        // SLES 10's 2.6.16 and Debian 4's 2.6.18 have no virtio.
        assert!(matches!(
            virtio_support("2.6.16.60-0.21-smp"),
            Virtio::Missing(_)
        ));
        assert!(matches!(virtio_support("2.6.18-6-686"), Virtio::Missing(_)));
    }
}
