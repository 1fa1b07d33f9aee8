//! Red Hat's `/etc/sysconfig/kernel`: `DEFAULTKERNEL` names the kernel
//! package whose updates become the default boot entry. A Xen guest has
//! `DEFAULTKERNEL=kernel-xen` (RHEL 5, Fedora 8), so the next `yum update`
//! would make a Xen kernel the default and the VM would stop booting. It
//! becomes the flavour the clone boots: `kernel-PAE` when that kernel is a
//! PAE one (`2.6.18-398.el5PAE`), else `kernel`. RHEL 5 had no
//! `kernel-PAE-xen` (its i686 kernel-xen was PAE already), and old
//! `kernel-xen0`/`kernel-xenU` spellings map the same way.

use super::assignment;
use crate::convert::{map_lines, ConvertContext};

pub struct RedHatSysconfigKernel;

pub const PATH: &str = "etc/sysconfig/kernel";

one_file_rewriter!(
    RedHatSysconfigKernel,
    "Red Hat sysconfig/kernel",
    PATH,
    false,
    rewrite
);

/// The package flavour of the kernel the clone boots.
pub fn default_kernel_package(kernel: &str) -> &'static str {
    if kernel.ends_with("PAE") {
        "kernel-PAE"
    } else {
        "kernel"
    }
}

/// The pure rewrite.
pub fn rewrite(text: &str, ctx: &ConvertContext) -> String {
    map_lines(text, |line| match assignment(line) {
        Some(("DEFAULTKERNEL", q, value)) if value.starts_with("kernel-xen") => {
            let indent = &line[..line.len() - line.trim_start().len()];
            vec![format!(
                "{indent}DEFAULTKERNEL={q}{}{q}",
                default_kernel_package(&ctx.guest.kernel)
            )]
        }
        _ => vec![line.to_string()],
    })
}
