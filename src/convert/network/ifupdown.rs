//! Debian's ifupdown (`/etc/network/interfaces` and `interfaces.d/`):
//! interface names the plan maps elsewhere are renamed wherever they
//! appear (`auto`, `allow-hotplug`, `iface`, `bridge_ports`, `up ... dev`),
//! and `hwaddress` lines are dropped.

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

pub fn rewrite(text: &str, ctx: &ConvertContext) -> String {
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
