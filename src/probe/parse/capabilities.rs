//! What the source's own tools can do: tar flavour and features, GNU find's
//! -printf, stat -c, busybox, compressors and hashers. The data path chooses
//! its commands from this record instead of guessing on the wire.

use crate::probe::inventory::{Capabilities, TarFlavour, TarInfo};

#[derive(Default)]
pub struct ToolOutputs<'a> {
    pub tar_version: Option<&'a str>,
    pub tar_help: Option<&'a str>,
    pub find_printf: Option<&'a str>,
    pub stat_format: Option<&'a str>,
    pub busybox: Option<&'a str>,
    /// "name path" lines for the tools found with `command -v`.
    pub tools: Option<&'a str>,
}

const COMPRESSORS: &[&str] = &["zstd", "xz", "gzip", "bzip2", "lz4", "pigz", "lzop"];
const HASHERS: &[&str] = &["md5sum", "sha1sum", "sha256sum", "b2sum"];

/// "BusyBox v1.35.0 (Debian 1:1.35.0-4+b3) multi-call binary." -> "1.35.0".
pub fn busybox_version(text: &str) -> Option<String> {
    let start = text.find("BusyBox v")? + "BusyBox v".len();
    let version: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    (!version.is_empty()).then_some(version)
}

pub fn parse_tar(version: Option<&str>, help: Option<&str>) -> TarInfo {
    let version_text = version.unwrap_or("");
    let help = help.unwrap_or("");
    let first = version_text.lines().next().unwrap_or("").trim();
    let (flavour, version) = if first.contains("GNU tar") {
        (
            TarFlavour::Gnu,
            first.rsplit(' ').next().map(str::to_string),
        )
    } else if first.starts_with("bsdtar") {
        (
            TarFlavour::Bsd,
            first.split_whitespace().nth(1).map(str::to_string),
        )
    } else if let Some(v) = busybox_version(version_text).or_else(|| busybox_version(help)) {
        (TarFlavour::Busybox, Some(v))
    } else if version.is_none() || version_text.contains("not found") {
        (TarFlavour::Missing, None)
    } else {
        (TarFlavour::Unknown, None)
    };
    let gnu = flavour == TarFlavour::Gnu;
    TarInfo {
        flavour,
        version,
        xattrs: gnu && help.contains("--xattrs"),
        acls: gnu && help.contains("--acls"),
        selinux: gnu && help.contains("--selinux"),
    }
}

pub fn parse(out: ToolOutputs<'_>) -> Capabilities {
    let found: Vec<&str> = out
        .tools
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let pick = |set: &[&str]| {
        set.iter()
            .filter(|t| found.contains(t))
            .map(|t| t.to_string())
            .collect()
    };
    Capabilities {
        tar: parse_tar(out.tar_version, out.tar_help),
        find_printf: out.find_printf.is_some_and(|o| o.contains("printf-ok")),
        stat_format: out.stat_format.is_some_and(|o| o.contains("stat-ok")),
        busybox: out.busybox.and_then(busybox_version),
        compressors: pick(COMPRESSORS),
        hashers: pick(HASHERS),
        rsync: found.contains(&"rsync"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_tar_with_xattrs() {
        let t = parse_tar(
            Some("tar (GNU tar) 1.34\nCopyright (C) 2021\n"),
            Some("  --acls   Enable POSIX ACLs\n  --selinux  x\n  --xattrs  y\n"),
        );
        assert_eq!(
            (t.flavour, t.version.as_deref(), t.xattrs, t.acls, t.selinux),
            (TarFlavour::Gnu, Some("1.34"), true, true, true)
        );
    }

    #[test]
    fn old_gnu_tar_without_xattrs() {
        // Debian 5's tar 1.20 has no --xattrs.
        let t = parse_tar(
            Some("tar (GNU tar) 1.20\n"),
            Some("  -z, --gzip  filter through gzip\n"),
        );
        assert_eq!(
            (t.flavour, t.xattrs, t.acls),
            (TarFlavour::Gnu, false, false)
        );
    }

    #[test]
    fn busybox_tar_rejects_version_flag() {
        let banner = "tar: unrecognized option '--version'\nBusyBox v1.35.0 (Debian 1:1.35.0-4+b3) multi-call binary.\n\nUsage: tar c|x|t [-ZzJjahmvokO]";
        let t = parse_tar(Some(banner), Some(banner));
        assert_eq!(
            (t.flavour, t.version.as_deref(), t.xattrs),
            (TarFlavour::Busybox, Some("1.35.0"), false)
        );
    }

    #[test]
    fn missing_tar() {
        assert_eq!(
            parse_tar(Some("sh: tar: not found\n"), None).flavour,
            TarFlavour::Missing
        );
    }

    #[test]
    fn tools_split_into_compressors_and_hashers() {
        let caps = parse(ToolOutputs {
            tar_version: None,
            tar_help: None,
            find_printf: Some("find: unrecognized: -printf\n"),
            stat_format: Some("stat-ok 2\n"),
            busybox: Some("BusyBox v1.30.1 (Ubuntu) multi-call binary.\n"),
            tools: Some(
                "gzip /bin/gzip\nxz /usr/bin/xz\nmd5sum /usr/bin/md5sum\nrsync /usr/bin/rsync\n",
            ),
        });
        assert!(!caps.find_printf);
        assert!(caps.stat_format);
        assert_eq!(caps.busybox.as_deref(), Some("1.30.1"));
        assert_eq!(caps.compressors, vec!["xz", "gzip"]);
        assert_eq!(caps.hashers, vec!["md5sum"]);
        assert!(caps.rsync);
    }
}
