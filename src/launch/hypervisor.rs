//! The hypervisor behind one trait (virt-v2v's `output.mli` is the
//! model): what `launch`, `cutover`'s boot and rollback, and `rehearse`
//! need of whatever runs the VM. [`for_spec`] is the one place a backend
//! is chosen, from `--hypervisor` at launch and from the VM's record
//! after ([`for_vm`]):
//! - [`QemuDirect`], a QEMU process hotclone starts itself (TCG or KVM,
//!   whatever QEMU picks), recorded by its pidfile; the default;
//! - [`Libvirt`], a libvirt domain `hotclone-NAME` (see [`libvirt`]).
//!
//! On failure a backend returns the command it ran and what it printed
//! ([`LaunchError::Command`]), or the package that provides a missing
//! command ([`LaunchError::Missing`]); a VM it could not start is left
//! stopped.

use std::path::{Path, PathBuf};

use super::export::ExportOptions;
use super::libvirt::{self, Libvirt};
use super::{export, qemu, BootMode, HypervisorSpec, LaunchError, VmFiles, VmState};
use crate::plan::ImageFormat;
use crate::rescue::RescueImage;

pub trait Hypervisor {
    /// The backend's name, as `--hypervisor` and reports spell it.
    fn name(&self) -> &'static str;
    /// Make the VM's disk, empty, of `size` bytes (qemu-img, for both
    /// backends: the disk is a file on this host).
    fn create_disk(&self, path: &Path, format: ImageFormat, size: u64) -> Result<(), LaunchError> {
        qemu::create_disk(path, format, size)
    }
    /// Start the VM `state` describes: the rescue image by direct kernel
    /// boot when `rescue` is given, else its own disk. Records in `state`
    /// how to find it again.
    fn start(
        &self,
        state: &mut VmState,
        files: &VmFiles,
        rescue: Option<&RescueImage>,
    ) -> Result<(), LaunchError>;
    /// Stop it; a VM already stopped is not an error.
    fn stop(&self, state: &mut VmState) -> Result<(), LaunchError>;
    /// Whether the VM `state` describes runs now.
    fn running(&self, state: &VmState) -> bool;
    /// A copy-on-write overlay over `backing`, which stays unchanged (a
    /// rehearsal boots the overlay); qemu-img, as for the disk.
    fn overlay(
        &self,
        backing: &Path,
        backing_format: ImageFormat,
        overlay: &Path,
    ) -> Result<(), LaunchError> {
        qemu::create_overlay(backing, backing_format, overlay)
    }
    /// Where the serial console of the VM booted in `mode` is logged.
    fn console_log(&self, files: &VmFiles, mode: BootMode) -> PathBuf;
    /// The VM as a libvirt domain definition (`virsh define` loads it).
    fn export(&self, state: &VmState, opts: &ExportOptions) -> String;
}

/// A QEMU process of hotclone's own, daemonized, found by its pidfile.
pub struct QemuDirect;

impl Hypervisor for QemuDirect {
    fn name(&self) -> &'static str {
        "qemu"
    }
    fn start(
        &self,
        state: &mut VmState,
        files: &VmFiles,
        rescue: Option<&RescueImage>,
    ) -> Result<(), LaunchError> {
        qemu::start(state, files, rescue)
    }
    fn stop(&self, state: &mut VmState) -> Result<(), LaunchError> {
        qemu::stop(state)
    }
    fn running(&self, state: &VmState) -> bool {
        state
            .pid
            .is_some_and(|pid| qemu::is_our_qemu(pid, &state.disk))
    }
    fn console_log(&self, files: &VmFiles, mode: BootMode) -> PathBuf {
        files.console(mode)
    }
    fn export(&self, state: &VmState, opts: &ExportOptions) -> String {
        export::libvirt_xml(state, opts)
    }
}

impl Hypervisor for Libvirt {
    fn name(&self) -> &'static str {
        "libvirt"
    }
    fn start(
        &self,
        state: &mut VmState,
        files: &VmFiles,
        rescue: Option<&RescueImage>,
    ) -> Result<(), LaunchError> {
        Libvirt::start(self, state, files, rescue)
    }
    fn stop(&self, state: &mut VmState) -> Result<(), LaunchError> {
        Libvirt::stop(self, state)
    }
    fn running(&self, state: &VmState) -> bool {
        Libvirt::running(self, state)
    }
    fn console_log(&self, files: &VmFiles, mode: BootMode) -> PathBuf {
        libvirt::console_log(files, mode)
    }
    fn export(&self, state: &VmState, opts: &ExportOptions) -> String {
        export::libvirt_xml(state, opts)
    }
}

/// The backend `spec` names: the one place a backend is chosen.
pub fn for_spec(spec: &HypervisorSpec) -> Box<dyn Hypervisor> {
    match spec {
        HypervisorSpec::Qemu => Box::new(QemuDirect),
        HypervisorSpec::Libvirt { uri, domain_type } => Box::new(Libvirt {
            uri: uri.clone(),
            domain_type: domain_type.clone(),
        }),
    }
}

/// The backend that runs `state`'s VM: the one it was launched with.
pub fn for_vm(state: &VmState) -> Box<dyn Hypervisor> {
    for_spec(&state.hypervisor)
}
