//! SUSE's `/etc/sysconfig/bootloader`: `DEFAULT_APPEND`,
//! `FAILSAFE_APPEND` and `XEN_KERNEL_APPEND` hold the kernel options
//! perl-Bootloader writes into the entry of every kernel installed later.
//! Their `root=`/`resume=` get the same device rewrite as the bootloader's
//! kernel lines ([`edit_cmdline`]: the new UUIDs, a `resume=` of a swap
//! the VM does not have is dropped), and `DEFAULT_APPEND` also gets the
//! clone's kernel options (serial console, `net.ifnames=0`), so the next
//! kernel update still boots the VM with a console.

use super::assignment;
use crate::convert::bootloader::edit_cmdline;
use crate::convert::{map_lines, ConvertContext};

pub struct SuseSysconfigBootloader;

pub const PATH: &str = "etc/sysconfig/bootloader";

one_file_rewriter!(
    SuseSysconfigBootloader,
    "SUSE sysconfig/bootloader",
    PATH,
    false,
    rewrite
);

/// The pure rewrite.
pub fn rewrite(text: &str, ctx: &ConvertContext) -> String {
    map_lines(text, |line| {
        let Some((key, q, value)) = assignment(line) else {
            return vec![line.to_string()];
        };
        let add = match key {
            "DEFAULT_APPEND" => true,
            "FAILSAFE_APPEND" | "XEN_KERNEL_APPEND" => false,
            _ => return vec![line.to_string()],
        };
        // An empty value means "perl-Bootloader's defaults": leave it.
        if value.trim().is_empty() {
            return vec![line.to_string()];
        }
        let tokens: Vec<String> = value.split_whitespace().map(str::to_string).collect();
        let new = edit_cmdline(&tokens, ctx, add);
        if new == tokens {
            return vec![line.to_string()];
        }
        let q = if q.is_empty() { "\"" } else { q };
        vec![format!("{key}={q}{}{q}", new.join(" "))]
    })
}
