//! netplan (`/etc/netplan/*.yaml`): `match: macaddress:` (and `driver:`)
//! pin an ethernet to the source's hardware. They become `name: <target>`,
//! `set-name:` follows the same name, and an ethernet keyed by its own
//! interface name is renamed when the plan maps it elsewhere.
//!
//! A bridge or bond (`bridges:`, `bonds:`) keeps its name; a mapping of it
//! moves to its port (see [`super::file_context`]), and the ports named in
//! `interfaces:` (and a VLAN's `link:`, a bond's `primary:`) follow the renames. Addresses,
//! IPv6 ones included, are kept.
//!
//! Line-based on purpose (no YAML round trip), so comments and layout
//! survive. Flow-style `match: {macaddress: ...}` is not handled.

use super::NetworkConfig;
use crate::convert::{ConvertContext, FileAction, FilePattern, FileRewriter};

pub struct Netplan;

impl FileRewriter for Netplan {
    fn name(&self) -> &'static str {
        "netplan"
    }
    fn files(&self) -> &'static [FilePattern] {
        &[FilePattern {
            pattern: "etc/netplan/*",
            create: false,
        }]
    }
    fn rewrite(&self, path: &str, text: &str, ctx: &ConvertContext) -> FileAction {
        if !(path.ends_with(".yaml") || path.ends_with(".yml")) {
            return FileAction::Keep;
        }
        FileAction::from_text(text, rewrite(text, ctx))
    }
}

impl NetworkConfig for Netplan {
    fn as_rewriter(&self) -> &dyn FileRewriter {
        self
    }
}

struct Line {
    text: String,
    indent: usize,
    key: Option<String>,
    value: String,
}

fn parse(line: &str) -> Line {
    let t = line.trim_start_matches(' ');
    let indent = line.len() - t.len();
    let (key, value) = if t.starts_with('#') || t.is_empty() {
        (None, String::new())
    } else {
        match t.split_once(':') {
            Some((k, v)) if !k.contains(' ') || k.starts_with('"') => {
                let v = v
                    .split(" #")
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_string();
                (
                    Some(k.trim_matches(|c| c == '"' || c == '\'').to_string()),
                    v,
                )
            }
            _ => (None, String::new()),
        }
    };
    Line {
        text: line.to_string(),
        indent,
        key,
        value,
    }
}

fn is_structural(l: &Line) -> bool {
    l.key.is_some()
}

/// The virtual devices' sections, whose `interfaces:` name their ports.
const VIRTUAL_SECTIONS: &[&str] = &["bridges", "bonds", "vlans"];

/// The items of a list value: `[eth0, eth1]` or `eth0`.
fn list_items(value: &str) -> Vec<String> {
    value
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|w| w.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The (master, port) pairs of `bridges:` and `bonds:`.
pub fn ports(text: &str) -> Vec<(String, String)> {
    let lines: Vec<Line> = text.lines().map(parse).collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if !matches!(l.key.as_deref(), Some("bridges" | "bonds")) || !l.value.is_empty() {
            continue;
        }
        let end = block_end(&lines, i, l.indent);
        let Some(c) = (i + 1..end)
            .find(|&j| is_structural(&lines[j]))
            .map(|j| lines[j].indent)
        else {
            continue;
        };
        let mut master = None;
        let mut in_list = false;
        for line in &lines[i + 1..end] {
            if is_structural(line) && line.indent == c {
                master = line.key.clone();
                in_list = false;
            } else if line.key.as_deref() == Some("interfaces") {
                in_list = line.value.is_empty();
                for p in list_items(&line.value) {
                    out.extend(master.clone().map(|m| (m, p)));
                }
            } else if is_structural(line) {
                in_list = false;
            } else if in_list {
                if let Some(item) = line.text.trim_start().strip_prefix("- ") {
                    for p in list_items(item.split(" #").next().unwrap_or("")) {
                        out.extend(master.clone().map(|m| (m, p)));
                    }
                }
            }
        }
    }
    out
}

pub fn rewrite(text: &str, ctx: &ConvertContext) -> String {
    let ctx = &super::file_context(ctx, &ports(text));
    let mut lines: Vec<Line> = text.lines().map(parse).collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].key.as_deref() == Some("ethernets") && lines[i].value.is_empty() {
            let e = lines[i].indent;
            let end = block_end(&lines, i, e);
            rewrite_ethernets(&mut lines, i + 1, end, ctx);
            i = block_end(&lines, i, e);
        } else if VIRTUAL_SECTIONS.contains(&lines[i].key.as_deref().unwrap_or(""))
            && lines[i].value.is_empty()
        {
            let e = lines[i].indent;
            let end = block_end(&lines, i, e);
            rename_ports(&mut lines, i + 1, end, ctx);
            i = end;
        } else {
            i += 1;
        }
    }
    let mut out: Vec<String> = lines.into_iter().map(|l| l.text).collect();
    if text.ends_with('\n') {
        out.push(String::new());
    }
    out.join("\n")
}

/// The first line after `start` that is a key at `indent` or less.
fn block_end(lines: &[Line], start: usize, indent: usize) -> usize {
    (start + 1..lines.len())
        .find(|&j| is_structural(&lines[j]) && lines[j].indent <= indent)
        .unwrap_or(lines.len())
}

fn rewrite_ethernets(lines: &mut Vec<Line>, start: usize, end: usize, ctx: &ConvertContext) {
    let Some(c) = (start..end)
        .find(|&j| is_structural(&lines[j]))
        .map(|j| lines[j].indent)
    else {
        return;
    };
    let ids: Vec<usize> = (start..end)
        .filter(|&j| is_structural(&lines[j]) && lines[j].indent == c)
        .collect();
    // Work from the last id up, so indices before stay valid.
    for &id_at in ids.iter().rev() {
        let id_end = block_end(lines, id_at, c);
        rewrite_one(lines, id_at, id_end, ctx);
    }
}

fn rewrite_one(lines: &mut Vec<Line>, id_at: usize, id_end: usize, ctx: &ConvertContext) {
    let id = lines[id_at].key.clone().unwrap_or_default();
    let find = |lines: &Vec<Line>, from: usize, to: usize, key: &str| {
        (from..to).find(|&j| lines[j].key.as_deref() == Some(key))
    };
    let match_at = find(lines, id_at + 1, id_end, "match");
    let set_name_at = find(lines, id_at + 1, id_end, "set-name");
    let (mut mac, mut mname) = (None, None);
    let mut match_children = Vec::new();
    if let Some(m) = match_at {
        let m_end = block_end(lines, m, lines[m].indent);
        for (j, l) in lines.iter().enumerate().take(m_end).skip(m + 1) {
            match l.key.as_deref() {
                Some("macaddress") => {
                    mac = Some(l.value.clone());
                    match_children.push(j)
                }
                Some("driver") => match_children.push(j),
                Some("name") => mname = Some(l.value.clone()),
                _ => {}
            }
        }
    }
    let set_name = set_name_at.map(|j| lines[j].value.clone());
    let mapping = mac
        .as_deref()
        .and_then(|m| ctx.nic_by_mac(m))
        .or_else(|| {
            set_name
                .as_deref()
                .and_then(|s| ctx.nics.iter().find(|n| n.source == s))
        })
        .or_else(|| {
            mname
                .as_deref()
                .and_then(|s| ctx.nics.iter().find(|n| n.source == s))
        })
        .or_else(|| ctx.nics.iter().find(|n| n.source == id))
        .filter(|n| n.source != n.target);
    let target = match mapping {
        Some(n) => n.target.clone(),
        None => set_name
            .clone()
            .or(mname.clone())
            .unwrap_or_else(|| id.clone()),
    };

    if let Some(j) = set_name_at {
        if set_name.as_deref() != Some(target.as_str()) {
            lines[j] = with_value(&lines[j], &target);
        }
    }
    if let Some(m) = match_at {
        if let Some(n) = (m + 1..block_end(lines, m, lines[m].indent))
            .find(|&j| lines[j].key.as_deref() == Some("name"))
        {
            if mname.as_deref() != Some(target.as_str()) && mapping.is_some() {
                lines[n] = with_value(&lines[n], &target);
            }
        }
        if !match_children.is_empty() {
            let child_indent = lines[match_children[0]].indent;
            let first = match_children[0];
            for &j in match_children.iter().rev() {
                lines.remove(j);
            }
            if mname.is_none() {
                lines.insert(
                    first,
                    parse(&format!("{}name: {target}", " ".repeat(child_indent))),
                );
            }
        }
    } else if id != target && mapping.is_some() {
        let l = &lines[id_at];
        let rest = l
            .text
            .trim_start()
            .split_once(':')
            .map(|x| x.1)
            .unwrap_or("")
            .to_string();
        lines[id_at] = parse(&format!("{}{target}:{rest}", " ".repeat(l.indent)));
    }
}

/// Rename the ports a virtual device names: `interfaces: [eth1]`, the
/// `- eth1` items under `interfaces:`, and a VLAN's `link: eth1`.
fn rename_ports(lines: &mut [Line], start: usize, end: usize, ctx: &ConvertContext) {
    let mut in_list = false;
    for l in lines.iter_mut().take(end).skip(start) {
        match l.key.as_deref() {
            Some("interfaces") => {
                in_list = l.value.is_empty();
                if l.value.starts_with('[') {
                    let items = list_items(&l.value);
                    let renamed: Vec<String> = items
                        .iter()
                        .map(|p| super::rename_token(p, ctx).unwrap_or_else(|| p.clone()))
                        .collect();
                    if renamed != items {
                        *l = parse(&format!(
                            "{}interfaces: [{}]",
                            " ".repeat(l.indent),
                            renamed.join(", ")
                        ));
                    }
                }
            }
            Some("link" | "primary") => {
                in_list = false;
                if let Some(new) = super::rename_token(&l.value, ctx) {
                    *l = with_value(l, &new);
                }
            }
            Some(_) => in_list = false,
            None if in_list => {
                let t = l.text.trim_start();
                if let Some(item) = t.strip_prefix("- ") {
                    let name = item.trim();
                    if let Some(new) = super::rename_token(name, ctx) {
                        let indent = l.text.len() - t.len();
                        l.text = format!("{}- {new}", " ".repeat(indent));
                    }
                }
            }
            None => {}
        }
    }
}

fn with_value(l: &Line, value: &str) -> Line {
    let key = l.key.clone().unwrap_or_default();
    parse(&format!("{}{key}: {value}", " ".repeat(l.indent)))
}
