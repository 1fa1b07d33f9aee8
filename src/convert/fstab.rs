//! `/etc/fstab`: point every copied filesystem at its new UUID.
//!
//! - A line whose spec (or, failing that, mount point) is a copied
//!   filesystem becomes `UUID=<new>` with the new fs type; options, dump
//!   and pass are kept.
//! - A swap line for the source's swap becomes the new swap's UUID; each
//!   source swap maps to its own new swap ([`ConvertContext::from_plan`]),
//!   and when several source swaps share one new swap, the later lines are
//!   commented out with `# hotclone: same swap as a line above: `.
//! - Network mounts, pseudo filesystems, bind mounts, and lines with
//!   `noauto`/`nofail` are kept as they are.
//! - Any other line naming a local device (`/dev/...`, `LABEL=`, `UUID=`,
//!   `PARTUUID=`, `PARTLABEL=`) is commented out with
//!   `# hotclone: not copied: `, so the VM does not stop in emergency mode
//!   waiting for a device it does not have.
//!
//! Comments, blank lines and spacing are preserved.

use super::{join_keep_gaps, map_lines, split_keep_gaps, ConvertContext};

pub const NOT_COPIED: &str = "# hotclone: not copied: ";

pub struct Fstab;

one_file_rewriter!(Fstab, "fstab", "etc/fstab", false, rewrite);

/// The prefix of a swap line whose swap another line already names: the
/// plan made one swap partition for several source swaps, and two lines
/// with the same UUID would swapon it twice.
pub const SAME_SWAP: &str = "# hotclone: same swap as a line above: ";

/// The pure rewrite.
pub fn rewrite(text: &str, ctx: &ConvertContext) -> String {
    let mut swaps_named = std::collections::HashSet::new();
    map_lines(text, |line| {
        let new = rewrite_line(line, ctx);
        let (fields, _) = split_keep_gaps(&new);
        let is_swap = fields.get(2).is_some_and(|t| t == "swap")
            || fields.get(1).is_some_and(|m| m == "swap");
        if is_swap && !new.trim_start().starts_with('#') {
            if let Some(s) = ctx.swap_for(&fields[0]) {
                if !swaps_named.insert(s.uuid.clone()) {
                    return vec![format!("{SAME_SWAP}{}", line.trim_start())];
                }
            }
        }
        vec![new]
    })
}

/// Lines that will be commented out because they name a local device that
/// was not copied (for the report).
pub fn not_copied(text: &str, ctx: &ConvertContext) -> Vec<String> {
    text.lines()
        .filter(|l| {
            !l.trim_start().starts_with('#') && rewrite_line(l, ctx).starts_with(NOT_COPIED)
        })
        .map(|l| l.trim().to_string())
        .collect()
}

fn rewrite_line(line: &str, ctx: &ConvertContext) -> String {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return line.to_string();
    }
    let (fields, gaps) = split_keep_gaps(line);
    if fields.len() < 3 {
        return line.to_string();
    }
    let (spec, mount_point, fs_type) = (&fields[0], &fields[1], &fields[2]);
    let options = fields.get(3).map(String::as_str).unwrap_or("");
    let mut new = fields.clone();
    if fs_type == "swap" || mount_point == "swap" {
        if let Some(s) = ctx.swap_for(spec) {
            new[0] = format!("UUID={}", s.uuid);
            return join_keep_gaps(&fields, &new, &gaps);
        }
    } else {
        let fs = ctx.filesystem_for(spec).or_else(|| {
            // The spec is one we were not told about, but the mount point is
            // a copied filesystem: the line is for it.
            if names_local_device(spec) {
                ctx.filesystems
                    .iter()
                    .find(|f| &f.mount_point == mount_point)
            } else {
                None
            }
        });
        if let Some(fs) = fs {
            new[0] = format!("UUID={}", fs.uuid);
            if !fs.fs_type.is_empty() {
                new[2] = fs.fs_type.clone();
            }
            return join_keep_gaps(&fields, &new, &gaps);
        }
    }
    let optional = options.split(',').any(|o| o == "noauto" || o == "nofail");
    if names_local_device(spec) && !optional {
        return format!("{NOT_COPIED}{}", line.trim_start());
    }
    line.to_string()
}

/// Whether a spec names a block device on this machine (as opposed to a
/// network share, a pseudo filesystem or a bind-mounted directory).
pub fn names_local_device(spec: &str) -> bool {
    let s = spec.trim_matches('"');
    s.starts_with("/dev/")
        || ["UUID=", "LABEL=", "PARTUUID=", "PARTLABEL="]
            .iter()
            .any(|p| s.starts_with(p))
}
