//! systemd-networkd (`/etc/systemd/network/`): `.network` files choose
//! their interface in `[Match]` by `MACAddress=`/`PermanentMACAddress=`
//! or `Name=`, and `.link` files rename a NIC found by its MAC
//! (`[Match] MACAddress=` + `[Link] Name=lan0`). The VM's NIC has another
//! MAC, so both would match nothing.
//! - A MAC of a mapped NIC is replaced by its name: `Name=<VM name>` in a
//!   `.network`, `OriginalName=<VM name>` in a `.link` (the kernel's name
//!   with `net.ifnames=0`), unless the section names it already.
//! - A MAC of a NIC the plan does not map is dropped only when `[Match]`
//!   also has a name (else the file would match every NIC).
//! - `Name=` (in `[Match]` and a `.link`'s `[Link]`) follows the renames,
//!   word by word; globs (`en*`) and virtual devices are kept, as are
//!   `.netdev` files, `Bridge=`/`Bond=`/`VLAN=` and addresses (IPv6 too).

use super::{rename_token, NetworkConfig};
use crate::convert::{ConvertContext, FileAction, FilePattern, FileRewriter};

pub struct Networkd;

impl FileRewriter for Networkd {
    fn name(&self) -> &'static str {
        "systemd-networkd"
    }
    fn files(&self) -> &'static [FilePattern] {
        &[FilePattern {
            pattern: "etc/systemd/network/*",
            create: false,
        }]
    }
    fn rewrite(&self, path: &str, text: &str, ctx: &ConvertContext) -> FileAction {
        let link = path.ends_with(".link");
        if !(link || path.ends_with(".network")) {
            return FileAction::Keep;
        }
        FileAction::from_text(text, rewrite(text, link, ctx))
    }
}

impl NetworkConfig for Networkd {
    fn as_rewriter(&self) -> &dyn FileRewriter {
        self
    }
}

fn section_of(line: &str) -> Option<String> {
    line.trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .map(str::to_string)
}

fn key_value(line: &str) -> Option<(&str, &str)> {
    let t = line.trim();
    if t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let (k, v) = t.split_once('=')?;
    Some((k.trim(), v.trim()))
}

/// The (master, port) pair of a port's `.network`: `[Match] Name=eth0`
/// with `[Network] Bridge=br0` (or `Bond=`).
pub fn ports(text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let (mut names, mut masters) = (Vec::new(), Vec::new());
    for line in text.lines() {
        if let Some(s) = section_of(line) {
            section = s;
            continue;
        }
        match (section.as_str(), key_value(line)) {
            ("Match", Some(("Name", v))) => names.extend(v.split_whitespace().map(str::to_string)),
            ("Network", Some(("Bridge" | "Bond", v))) => masters.push(v.to_string()),
            _ => {}
        }
    }
    masters
        .iter()
        .flat_map(|m| names.iter().map(move |n| (m.clone(), n.clone())))
        .collect()
}

fn rename_words(v: &str, ctx: &ConvertContext) -> Option<String> {
    let words: Vec<&str> = v.split_whitespace().collect();
    let renamed: Vec<String> = words
        .iter()
        .map(|w| rename_token(w, ctx).unwrap_or_else(|| w.to_string()))
        .collect();
    (renamed.iter().zip(&words).any(|(a, b)| a != b)).then(|| renamed.join(" "))
}

/// The pure rewrite of a `.network` (`link` false) or `.link` file.
pub fn rewrite(text: &str, link: bool, ctx: &ConvertContext) -> String {
    let ctx = &super::file_context(ctx, &ports(text));
    let name_key = if link { "OriginalName" } else { "Name" };
    // What [Match] holds: its MACs and whether it names the interface.
    let mut section = String::new();
    let (mut macs, mut named) = (Vec::new(), false);
    for line in text.lines() {
        if let Some(s) = section_of(line) {
            section = s;
        } else if section == "Match" {
            match key_value(line) {
                Some(("MACAddress" | "PermanentMACAddress", v)) => {
                    macs.extend(v.split_whitespace().map(str::to_string))
                }
                Some(("Name" | "OriginalName", _)) => named = true,
                _ => {}
            }
        }
    }
    let mapped: Vec<String> = macs
        .iter()
        .filter_map(|m| ctx.nic_by_mac(m))
        .map(|n| n.target.clone())
        .collect();
    let drop_macs = !macs.is_empty() && (!mapped.is_empty() || named);

    let mut out = String::with_capacity(text.len() + 32);
    let mut section = String::new();
    let mut replaced = false;
    for chunk in text.split_inclusive('\n') {
        let line = chunk.trim_end_matches('\n');
        let nl = if chunk.ends_with('\n') { "\n" } else { "" };
        if let Some(s) = section_of(line) {
            section = s;
            out.push_str(chunk);
            continue;
        }
        let kv = key_value(line);
        match (section.as_str(), kv) {
            ("Match", Some(("MACAddress" | "PermanentMACAddress", _))) if drop_macs => {
                if !named && !replaced {
                    replaced = true;
                    out.push_str(&format!("{name_key}={}{nl}", mapped.join(" ")));
                }
            }
            ("Match", Some(("Name", v))) | ("Link", Some(("Name", v))) => {
                let key = kv.map(|x| x.0).unwrap_or("Name");
                match rename_words(v, ctx) {
                    Some(new) => out.push_str(&format!("{key}={new}{nl}")),
                    None => out.push_str(chunk),
                }
            }
            _ => out.push_str(chunk),
        }
    }
    out
}
