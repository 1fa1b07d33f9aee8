//! Distribution settings outside the bootloader's own files that name the
//! source's devices or kernels, and that the guest's tools read when the
//! next kernel is installed:
//! - SUSE's `/etc/sysconfig/bootloader` ([`suse_bootloader`]): the
//!   options perl-Bootloader gives new boot entries;
//! - Red Hat's `/etc/sysconfig/kernel` ([`redhat_kernel`]): which kernel
//!   flavour new-kernel-pkg makes the default.
//!
//! Both are rewritten line by line (comments and layout kept) and only
//! when they exist; a file without the variables is left as it is.

pub mod redhat_kernel;
pub mod suse_bootloader;

/// A shell assignment `KEY="value"`: the key, the quote used ("" when
/// none) and the value inside the quotes; `None` for comments and other
/// lines.
pub(crate) fn assignment(line: &str) -> Option<(&str, &'static str, &str)> {
    let t = line.trim_start();
    if t.starts_with('#') {
        return None;
    }
    let (key, value) = t.split_once('=')?;
    if key.is_empty() || key.contains(char::is_whitespace) {
        return None;
    }
    let v = value.trim_end();
    for (q, qs) in [('"', "\""), ('\'', "'")] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return Some((key, qs, &v[1..v.len() - 1]));
        }
    }
    Some((key, "", v))
}
