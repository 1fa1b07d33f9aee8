//! Bootloaders behind one trait (virt-v2v's `linux_bootloaders.ml`): the
//! config files whose device names and kernel options it rewrites, install
//! into the target disk's boot area, regenerate the config, and check the
//! result points at the new root. What every config's kernel command line
//! needs is in [`cmdline`]; Boot Loader Specification entries (RHEL 8+,
//! Fedora), which GRUB 2 reads when its config says `blscfg`, in [`bls`].

pub mod bls;
pub mod cmdline;
pub mod grub2;
pub mod grub_legacy;
pub mod host_grub2;

pub use cmdline::edit_cmdline;

use std::path::Path;

use super::chroot::ChrootExec;
use super::{ConvertContext, ConvertError, FileRewriter};
use crate::progress::Progress;

pub trait Bootloader: FileRewriter {
    fn as_rewriter(&self) -> &dyn FileRewriter;
    /// Device names in its config that must be remapped (for the reader
    /// and for tests: what the rewrite looks for).
    fn device_patterns(&self) -> &'static [&'static str];
    /// Write the boot code into the target disk (`ctx.disk_device`).
    fn install(
        &self,
        exec: &mut dyn ChrootExec,
        ctx: &ConvertContext,
        progress: &mut dyn Progress,
    ) -> Result<(), ConvertError>;
    /// Regenerate the generated config with the guest's own tool.
    fn update(
        &self,
        exec: &mut dyn ChrootExec,
        ctx: &ConvertContext,
        progress: &mut dyn Progress,
    ) -> Result<(), ConvertError>;
    /// Check the final config boots the new root, and that its default
    /// entry's kernel and initrd are in the clone with the VM's drivers
    /// ([`crate::convert::initrd`]). Ok carries notes: what was assumed or
    /// could not be checked.
    fn verify(&self, root: &Path, ctx: &ConvertContext) -> Result<Vec<String>, ConvertError>;
}

/// The target disk GRUB is installed into (`ctx.disk_device`).
pub(crate) fn install_disk(ctx: &ConvertContext) -> Result<&str, ConvertError> {
    ctx.disk_device
        .as_deref()
        .ok_or_else(|| ConvertError::Context("no target disk device to install GRUB into".into()))
}

/// Run a command in the chroot, send its output to the progress notes, and
/// fail with the command and its output when it fails.
pub(crate) fn run_noted(
    exec: &mut dyn ChrootExec,
    argv: &[&str],
    progress: &mut dyn Progress,
) -> Result<String, ConvertError> {
    progress.note(&format!("running in the target: {}", argv.join(" ")));
    let out = exec.run(argv)?;
    noted(argv, out, progress)
}

/// [`run_noted`] for one of this host's own commands
/// ([`ChrootExec::run_host`]).
pub(crate) fn run_host_noted(
    exec: &mut dyn ChrootExec,
    argv: &[&str],
    progress: &mut dyn Progress,
) -> Result<String, ConvertError> {
    progress.note(&format!("running on this host: {}", argv.join(" ")));
    let out = exec.run_host(argv)?;
    noted(argv, out, progress)
}

/// A command's output to the progress notes; its stdout, or an error with
/// the command and its output when it failed.
fn noted(
    argv: &[&str],
    out: super::chroot::CommandOutput,
    progress: &mut dyn Progress,
) -> Result<String, ConvertError> {
    let cmd = argv.join(" ");
    for line in out.stdout.lines().chain(out.stderr.lines()) {
        if !line.trim().is_empty() {
            progress.note(&format!("{}: {line}", argv[0]));
        }
    }
    if !out.success() {
        return Err(super::chroot::ChrootError::Failed {
            command: cmd,
            status: out.status,
            output: format!("{}{}", out.stdout, out.stderr).trim().to_string(),
        }
        .into());
    }
    Ok(out.stdout)
}
