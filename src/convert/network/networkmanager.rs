//! NetworkManager keyfiles (`/etc/NetworkManager/system-connections/`,
//! `*.nmconnection` and the older files without an extension). A profile
//! pinned to the source's NIC by `mac-address=` in `[ethernet]` (or
//! `[802-3-ethernet]`) would never activate on the VM's NIC.
//! - A `mac-address=` of a mapped NIC is dropped, and the profile is bound
//!   by name instead: `interface-name=<VM name>` in `[connection]`.
//! - A `mac-address=` of a NIC the plan does not map is dropped only when
//!   the profile names its interface (else the profile would take any
//!   NIC; left pinned, it stays inactive as the NIC is gone).
//! - `interface-name=` and a port's `master=`/`controller=` follow the renames; a bridge
//!   or bond profile keeps its name (see [`super::file_context`]).
//! - `cloned-mac-address=`, addresses (IPv6 too) and everything else are
//!   kept. Backup files (`~`, `.bak`, `.rpmsave`, `.orig`) are left alone.

use super::{rename_token, NetworkConfig};
use crate::convert::{ConvertContext, FileAction, FilePattern, FileRewriter};

pub struct NetworkManager;

pub const DIR: &str = "etc/NetworkManager/system-connections/";

impl FileRewriter for NetworkManager {
    fn name(&self) -> &'static str {
        "NetworkManager keyfile"
    }
    fn files(&self) -> &'static [FilePattern] {
        &[FilePattern {
            pattern: "etc/NetworkManager/system-connections/*",
            create: false,
        }]
    }
    fn rewrite(&self, path: &str, text: &str, ctx: &ConvertContext) -> FileAction {
        let file = path.rsplit('/').next().unwrap_or(path);
        if file.ends_with('~')
            || [".bak", ".rpmsave", ".rpmnew", ".orig", ".dpkg-old"]
                .iter()
                .any(|s| file.contains(s))
        {
            return FileAction::Keep;
        }
        FileAction::from_text(text, rewrite(text, ctx))
    }
}

impl NetworkConfig for NetworkManager {
    fn as_rewriter(&self) -> &dyn FileRewriter {
        self
    }
}

/// A keyfile line: its section (lowercase), key and value.
fn key_value(line: &str) -> Option<(&str, &str)> {
    let t = line.trim();
    if t.starts_with('#') || t.starts_with(';') || t.starts_with('[') {
        return None;
    }
    let (k, v) = t.split_once('=')?;
    Some((k.trim(), v.trim()))
}

/// `[name]` -> `name`, lower-cased.
fn section_header(line: &str) -> Option<String> {
    line.trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .map(str::to_ascii_lowercase)
}

fn is_ethernet(section: &str) -> bool {
    section == "ethernet" || section == "802-3-ethernet"
}

/// The (master, port) pair of a port profile: `master=br0` with
/// `interface-name=eth0`.
pub fn ports(text: &str) -> Vec<(String, String)> {
    let (mut master, mut name) = (None, None);
    let mut section = String::new();
    for line in text.lines() {
        if let Some(s) = section_header(line) {
            section = s;
        } else if section == "connection" {
            match key_value(line) {
                Some(("master" | "controller", v)) => master = Some(v.to_string()),
                Some(("interface-name", v)) => name = Some(v.to_string()),
                _ => {}
            }
        }
    }
    match (master, name) {
        (Some(m), Some(n)) => vec![(m, n)],
        _ => vec![],
    }
}

/// The pure rewrite.
pub fn rewrite(text: &str, ctx: &ConvertContext) -> String {
    let ctx = &super::file_context(ctx, &ports(text));
    let mut section = String::new();
    let mut mac = None;
    let mut name = None;
    for line in text.lines() {
        if let Some(s) = section_header(line) {
            section = s;
        } else {
            match key_value(line) {
                Some(("mac-address", v)) if is_ethernet(&section) && !v.is_empty() => {
                    mac = Some(v.to_string())
                }
                Some(("interface-name", v)) if section == "connection" => {
                    name = Some(v.to_string())
                }
                _ => {}
            }
        }
    }
    let mapped = mac
        .as_deref()
        .and_then(|m| ctx.nic_by_mac(m))
        .map(|n| n.target.clone());
    let drop_mac = mac.is_some() && (mapped.is_some() || name.is_some());
    // The name the profile binds to when its MAC goes and it had none.
    let add_name = if name.is_none() { mapped } else { None };

    let mut out = Vec::new();
    let mut section = String::new();
    let mut added = false;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, chunk) in lines.iter().enumerate() {
        let line = chunk.trim_end_matches('\n');
        let nl = if chunk.ends_with('\n') { "\n" } else { "" };
        if let Some(s) = section_header(line) {
            section = s;
            out.push(format!("{line}{nl}"));
            continue;
        }
        match key_value(line) {
            Some(("mac-address", _)) if drop_mac && is_ethernet(&section) => continue,
            Some(("interface-name", v)) if section == "connection" => match rename_token(v, ctx) {
                Some(new) => out.push(format!("interface-name={new}{nl}")),
                None => out.push(format!("{line}{nl}")),
            },
            Some((key @ ("master" | "controller"), v)) if section == "connection" => {
                match rename_token(v, ctx) {
                    Some(new) => out.push(format!("{key}={new}{nl}")),
                    None => out.push(format!("{line}{nl}")),
                }
            }
            _ => out.push(format!("{line}{nl}")),
        }
        // Bind by name at the end of [connection] (before the next section).
        let next_is_section = lines.get(i + 1).map_or(true, |n| n.trim().starts_with('['));
        if section == "connection" && next_is_section && !added {
            if let Some(n) = &add_name {
                added = true;
                let at = out
                    .iter()
                    .rposition(|l| !l.trim().is_empty())
                    .map_or(out.len(), |p| p + 1);
                let last_nl = out.last().map_or(true, |l| l.ends_with('\n'));
                if !last_nl {
                    if let Some(l) = out.last_mut() {
                        l.push('\n');
                    }
                }
                out.insert(at, format!("interface-name={n}\n"));
            }
        }
    }
    out.concat()
}
