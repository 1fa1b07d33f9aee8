//! Red Hat and SUSE `ifcfg-*` files: `HWADDR=` and `MACADDR=` are dropped
//! (initscripts ignore a device whose MAC differs), `DEVICE=`/`NAME=` and
//! the file name follow the plan's renames (`ifcfg-eth1` -> `ifcfg-eth0`).
//! A bridge or bond (`ifcfg-br0`, `TYPE=Bridge`) keeps its name and file,
//! and so do its ports (`BRIDGE=br0`, `MASTER=bond0` in `ifcfg-eth0`): a
//! plan that maps the bridge to the VM's eth0 leaves every file where it
//! is, so the bridge's file is never renamed onto a port's, nor two ports'
//! onto one name. A bridge over `eth1` then has no port in a one-NIC VM,
//! and a note says so. `IPV6ADDR=` and the other keys are kept.

use super::{rename_token, NetworkConfig};
use crate::convert::{map_lines, ConvertContext, FileAction, FilePattern, FileRewriter};

pub struct Ifcfg;

impl FileRewriter for Ifcfg {
    fn name(&self) -> &'static str {
        "ifcfg"
    }
    fn files(&self) -> &'static [FilePattern] {
        &[
            FilePattern {
                pattern: "etc/sysconfig/network-scripts/ifcfg-*",
                create: false,
            },
            FilePattern {
                pattern: "etc/sysconfig/network/ifcfg-*",
                create: false,
            },
        ]
    }
    fn rewrite(&self, path: &str, text: &str, ctx: &ConvertContext) -> FileAction {
        let file = path.rsplit('/').next().unwrap_or(path);
        if file == "ifcfg-lo"
            || file.ends_with('~')
            || file.contains(".bak")
            || file.contains(".rpm")
            || file.ends_with(".orig")
        {
            return FileAction::Keep;
        }
        let (name, content) = rewrite(file, text, ctx);
        if name != file {
            FileAction::Rename { name, content }
        } else {
            FileAction::from_text(text, content)
        }
    }
}

impl NetworkConfig for Ifcfg {
    fn as_rewriter(&self) -> &dyn FileRewriter {
        self
    }
}

/// The pure rewrite: the new file name and content.
pub fn rewrite(file_name: &str, text: &str, ctx: &ConvertContext) -> (String, String) {
    // No port takes a bridge's or bond's NIC here: each port has a file of
    // its own, and with several ports (eth1 and eth2 in bond0) every one
    // would be renamed onto the same ifcfg-ethN.
    let ctx = &super::file_context(ctx, &[]);
    let content = map_lines(text, |line| {
        let t = line.trim_start();
        let Some((key, value)) = t.split_once('=') else {
            return vec![line.to_string()];
        };
        match key.trim() {
            "HWADDR" | "MACADDR" if !t.starts_with('#') => vec![],
            "DEVICE" | "NAME" if !t.starts_with('#') => {
                let (q, v) = unquote(value);
                let renamed: Vec<String> = v
                    .split(' ')
                    .map(|w| rename_token(w, ctx).unwrap_or_else(|| w.to_string()))
                    .collect();
                vec![format!("{}={q}{}{q}", key.trim(), renamed.join(" "))]
            }
            _ => vec![line.to_string()],
        }
    });
    let name = match file_name.strip_prefix("ifcfg-") {
        Some(dev) => match rename_token(dev, ctx) {
            Some(new) => format!("ifcfg-{new}"),
            None => file_name.to_string(),
        },
        None => file_name.to_string(),
    };
    (name, content)
}

fn unquote(v: &str) -> (&'static str, &str) {
    let v = v.trim();
    for q in ["\"", "'"] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return (if q == "\"" { "\"" } else { "'" }, inner);
        }
    }
    ("", v)
}
