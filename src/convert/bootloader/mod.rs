//! Bootloaders behind one trait (virt-v2v's `linux_bootloaders.ml`): the
//! config files whose device names and kernel options it rewrites, install
//! into the target disk's boot area, regenerate the config, and check the
//! result points at the new root.

pub mod grub2;
pub mod grub_legacy;

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

/// Kernel command-line edits shared by every bootloader:
/// - `root=` (when present) names the new root filesystem's UUID;
/// - `resume=` names the new swap, or is dropped when it named a device
///   the VM will not have;
/// - each option of `ctx.cmdline_add` is added once. An option with the
///   same key replaces the old value (`net.ifnames=1` becomes `=0`), except
///   `console=`, of which several may coexist; when the line names a
///   console already, ours are not added.
pub fn edit_cmdline(tokens: &[String], ctx: &ConvertContext, add: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tokens {
        if let Some(v) = t.strip_prefix("root=") {
            // Kernel lines always name the root filesystem.
            let fs = ctx.filesystem_for(v).or_else(|| ctx.root());
            match fs {
                Some(fs) if !v.starts_with('$') => out.push(format!("root=UUID={}", fs.uuid)),
                _ => out.push(t.clone()),
            }
        } else if let Some(v) = t.strip_prefix("resume=") {
            if let Some(s) = ctx.swap_for(v) {
                out.push(format!("resume=UUID={}", s.uuid));
            }
        } else {
            out.push(t.clone());
        }
    }
    if add {
        // A source that names its consoles already keeps its choice.
        let had_console = out.iter().any(|t| t.starts_with("console="));
        for a in &ctx.cmdline_add {
            let key = a.split('=').next().unwrap_or(a);
            if key == "console" && had_console {
                continue;
            }
            if key == "console" || !a.contains('=') {
                if !out.iter().any(|t| t == a) {
                    out.push(a.clone());
                }
                continue;
            }
            let same_key = |t: &String| t.split('=').next() == Some(key) && t.contains('=');
            match out.iter().position(same_key) {
                Some(i) => {
                    out[i] = a.clone();
                    let mut seen = false;
                    out.retain(|t| {
                        if same_key(t) {
                            let keep = !seen;
                            seen = true;
                            keep
                        } else {
                            true
                        }
                    });
                }
                None => out.push(a.clone()),
            }
        }
    }
    out
}

/// Run a command in the chroot, send its output to the progress notes, and
/// fail with the command and its output when it fails.
pub(crate) fn run_noted(
    exec: &mut dyn ChrootExec,
    argv: &[&str],
    progress: &mut dyn Progress,
) -> Result<String, ConvertError> {
    let cmd = argv.join(" ");
    progress.note(&format!("running in the target: {cmd}"));
    let out = exec.run(argv)?;
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
