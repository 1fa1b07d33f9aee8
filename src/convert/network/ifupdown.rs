//! Debian's ifupdown (`/etc/network/interfaces` and `interfaces.d/`):
//! interface names the plan maps elsewhere are renamed wherever they
//! appear (`auto`, `allow-hotplug`, `iface`, `bridge_ports`, `up ... dev`),
//! and `hwaddress` lines are dropped. A bridge or bond keeps its name; a
//! mapping of it moves to its port (`bridge_ports`, `bond-slaves`), see
//! [`super::file_context`]. `inet6` stanzas are kept, addresses and all.

use super::{rename_token, NetworkConfig};
use crate::convert::{
    join_keep_gaps, map_lines, split_keep_gaps, ConvertContext, FileAction, FilePattern,
    FileRewriter,
};

pub struct Ifupdown;

impl FileRewriter for Ifupdown {
    fn name(&self) -> &'static str {
        "ifupdown"
    }
    fn files(&self) -> &'static [FilePattern] {
        &[
            FilePattern {
                pattern: "etc/network/interfaces",
                create: false,
            },
            FilePattern {
                pattern: "etc/network/interfaces.d/*",
                create: false,
            },
        ]
    }
    fn rewrite(&self, _path: &str, text: &str, ctx: &ConvertContext) -> FileAction {
        FileAction::from_text(text, rewrite(text, ctx))
    }
}

impl NetworkConfig for Ifupdown {
    fn as_rewriter(&self) -> &dyn FileRewriter {
        self
    }
}

/// The (master, port) pairs of the file: `bridge_ports`/`bridge-ports`
/// and `bond-slaves`/`slaves` under an `iface` stanza.
pub fn ports(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut iface: Option<String> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.first().copied() {
            Some("iface") => iface = f.get(1).map(|s| s.to_string()),
            Some("bridge_ports" | "bridge-ports" | "bond-slaves" | "slaves") => {
                if let Some(m) = &iface {
                    for p in &f[1..] {
                        if *p != "none" && !p.starts_with('#') {
                            out.push((m.clone(), p.to_string()));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

pub fn rewrite(text: &str, ctx: &ConvertContext) -> String {
    let ctx = &super::file_context(ctx, &ports(text));
    map_lines(text, |line| {
        let t = line.trim_start();
        if t.starts_with('#') || t.is_empty() {
            return vec![line.to_string()];
        }
        let (fields, gaps) = split_keep_gaps(line);
        if fields.first().is_some_and(|f| f == "hwaddress") {
            return vec![];
        }
        let new: Vec<String> = fields
            .iter()
            .map(|f| rename_token(f, ctx).unwrap_or_else(|| f.clone()))
            .collect();
        if new == fields {
            return vec![line.to_string()];
        }
        vec![join_keep_gaps(&fields, &new, &gaps)]
    })
}
