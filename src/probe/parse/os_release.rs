//! Distribution identity from os-release and the legacy release files that
//! came before it (debian_version, redhat-release, SuSE-release,
//! lsb-release). os-release wins when present; the legacy files fill in
//! what it lacks (Debian's point release lives only in debian_version).

use std::collections::BTreeMap;

use super::unquote;
use crate::probe::inventory::{DistroFamily, OsInfo};

/// The release files as read from the source; `None` where absent.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReleaseFiles<'a> {
    pub os_release: Option<&'a str>,
    pub debian_version: Option<&'a str>,
    pub redhat_release: Option<&'a str>,
    pub suse_release: Option<&'a str>,
    pub lsb_release: Option<&'a str>,
}

/// KEY=value lines, values unquoted; comments and junk ignored.
pub fn parse_key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let (k, v) = line.split_once('=')?;
            let k = k.trim();
            (!k.is_empty() && !k.contains(' ')).then(|| (k.to_string(), unquote(v)))
        })
        .collect()
}

pub fn family_of(id: &str, id_like: &str) -> DistroFamily {
    let words = std::iter::once(id).chain(id_like.split_whitespace());
    for word in words {
        match word.to_ascii_lowercase().as_str() {
            "debian" | "ubuntu" | "raspbian" | "devuan" | "linuxmint" => {
                return DistroFamily::Debian
            }
            "rhel" | "centos" | "fedora" | "rocky" | "almalinux" | "ol" | "scientific" | "amzn"
            | "redhat" => return DistroFamily::RedHat,
            w if w == "sles" || w == "sled" || w == "suse" || w.starts_with("opensuse") => {
                return DistroFamily::Suse
            }
            _ => {}
        }
    }
    DistroFamily::Unknown
}

/// Debian's codename for a debian_version value such as "5.0.10".
pub fn debian_codename(version: &str) -> Option<&'static str> {
    let major: u32 = version.split('.').next()?.trim().parse().ok()?;
    Some(match major {
        3 => "sarge",
        4 => "etch",
        5 => "lenny",
        6 => "squeeze",
        7 => "wheezy",
        8 => "jessie",
        9 => "stretch",
        10 => "buster",
        11 => "bullseye",
        12 => "bookworm",
        13 => "trixie",
        _ => return None,
    })
}

pub fn parse(files: ReleaseFiles<'_>) -> OsInfo {
    let mut info = from_os_release(files.os_release)
        .or_else(|| files.redhat_release.and_then(from_redhat_release))
        .or_else(|| files.suse_release.and_then(from_suse_release))
        .or_else(|| files.lsb_release.and_then(from_lsb_release))
        .or_else(|| files.debian_version.and_then(from_debian_version))
        .unwrap_or_else(unknown);
    // Debian's point release ("12.7", "5.0.10") lives only in debian_version.
    if info.family == DistroFamily::Debian && info.id == "debian" {
        if let Some(dv) = files
            .debian_version
            .map(str::trim)
            .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        {
            info.version = Some(dv.to_string());
            if info.codename.is_none() {
                info.codename = debian_codename(dv).map(str::to_string);
            }
            if !info.sources.iter().any(|s| s == "/etc/debian_version") {
                info.sources.push("/etc/debian_version".into());
            }
        }
    }
    info
}

fn unknown() -> OsInfo {
    OsInfo {
        family: DistroFamily::Unknown,
        id: "unknown".into(),
        name: "unknown".into(),
        version: None,
        codename: None,
        pretty_name: "unknown Linux (no os-release or legacy release file)".into(),
        sources: vec![],
    }
}

fn from_os_release(text: Option<&str>) -> Option<OsInfo> {
    let kv = parse_key_values(text?);
    let id = kv.get("ID")?.to_ascii_lowercase();
    let name = kv.get("NAME").cloned().unwrap_or_else(|| id.clone());
    let version = kv.get("VERSION_ID").cloned();
    let codename = kv
        .get("VERSION_CODENAME")
        .cloned()
        .filter(|c| !c.is_empty());
    let pretty_name = kv.get("PRETTY_NAME").cloned().unwrap_or_else(|| {
        format!("{name} {}", version.as_deref().unwrap_or(""))
            .trim()
            .to_string()
    });
    Some(OsInfo {
        family: family_of(&id, kv.get("ID_LIKE").map(String::as_str).unwrap_or("")),
        id,
        name,
        version,
        codename,
        pretty_name,
        sources: vec!["/etc/os-release".into()],
    })
}

/// "Red Hat Enterprise Linux Server release 5.11 (Tikanga)",
/// "CentOS release 5.11 (Final)", "CentOS Linux release 7.9.2009 (Core)".
fn from_redhat_release(text: &str) -> Option<OsInfo> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let (name, rest) = line.split_once(" release ")?;
    let version = rest.split_whitespace().next().map(str::to_string);
    let codename = rest
        .split_once('(')
        .and_then(|(_, c)| c.split_once(')'))
        .map(|(c, _)| c.trim().to_string());
    let lower = name.to_ascii_lowercase();
    let id = if lower.starts_with("red hat") {
        "rhel"
    } else if lower.starts_with("centos") {
        "centos"
    } else if lower.starts_with("fedora") {
        "fedora"
    } else if lower.starts_with("scientific") {
        "scientific"
    } else if lower.starts_with("oracle") || lower.starts_with("enterprise linux") {
        "ol"
    } else {
        "redhat"
    };
    Some(OsInfo {
        family: DistroFamily::RedHat,
        id: id.into(),
        name: name.trim().to_string(),
        version,
        codename,
        pretty_name: line.to_string(),
        sources: vec!["/etc/redhat-release".into()],
    })
}

/// "SUSE Linux Enterprise Server 10 (x86_64)" + "VERSION = 10" + "PATCHLEVEL = 2".
fn from_suse_release(text: &str) -> Option<OsInfo> {
    let mut lines = text.lines();
    let first = lines.next()?.trim();
    let field = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let name = first.split(" (").next().unwrap_or(first).trim().to_string();
    let version = match (field("VERSION"), field("PATCHLEVEL")) {
        (Some(v), Some(p)) if p != "0" => Some(format!("{v}.{p}")),
        (v, _) => v,
    };
    let id = if first.to_ascii_lowercase().starts_with("opensuse") {
        "opensuse"
    } else if first.contains("Desktop") {
        "sled"
    } else {
        "sles"
    };
    Some(OsInfo {
        family: DistroFamily::Suse,
        id: id.into(),
        name,
        version,
        codename: None,
        pretty_name: first.to_string(),
        sources: vec!["/etc/SuSE-release".into()],
    })
}

fn from_lsb_release(text: &str) -> Option<OsInfo> {
    let kv = parse_key_values(text);
    let name = kv.get("DISTRIB_ID")?.clone();
    let id = name.to_ascii_lowercase();
    Some(OsInfo {
        family: family_of(&id, ""),
        pretty_name: kv
            .get("DISTRIB_DESCRIPTION")
            .cloned()
            .unwrap_or_else(|| name.clone()),
        version: kv.get("DISTRIB_RELEASE").cloned(),
        codename: kv.get("DISTRIB_CODENAME").cloned(),
        id,
        name,
        sources: vec!["/etc/lsb-release".into()],
    })
}

fn from_debian_version(text: &str) -> Option<OsInfo> {
    let version = text.trim();
    if version.is_empty() {
        return None;
    }
    Some(OsInfo {
        family: DistroFamily::Debian,
        id: "debian".into(),
        name: "Debian GNU/Linux".into(),
        version: Some(version.to_string()),
        codename: debian_codename(version).map(str::to_string),
        pretty_name: format!("Debian GNU/Linux {version}"),
        sources: vec!["/etc/debian_version".into()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian5_has_only_debian_version() {
        let os = parse(ReleaseFiles {
            debian_version: Some(fixture!("debian5/debian_version")),
            ..Default::default()
        });
        assert_eq!(os.family, DistroFamily::Debian);
        assert_eq!(os.version.as_deref(), Some("5.0.10"));
        assert_eq!(os.codename.as_deref(), Some("lenny"));
    }

    #[test]
    fn debian12_takes_point_release_from_debian_version() {
        let os = parse(ReleaseFiles {
            os_release: Some(fixture!("debian12/os-release")),
            debian_version: Some(fixture!("debian12/debian_version")),
            ..Default::default()
        });
        assert_eq!(
            (
                os.id.as_str(),
                os.version.as_deref(),
                os.codename.as_deref()
            ),
            ("debian", Some("12.7"), Some("bookworm"))
        );
        assert_eq!(os.pretty_name, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(os.sources, vec!["/etc/os-release", "/etc/debian_version"]);
    }

    #[test]
    fn rhel5_redhat_release() {
        let os = parse(ReleaseFiles {
            redhat_release: Some(fixture!("rhel5/redhat-release")),
            ..Default::default()
        });
        assert_eq!(os.family, DistroFamily::RedHat);
        assert_eq!(os.id, "rhel");
        assert_eq!(os.version.as_deref(), Some("5.11"));
        assert_eq!(os.codename.as_deref(), Some("Tikanga"));
    }

    #[test]
    fn centos7_release_line() {
        let os = parse(ReleaseFiles {
            redhat_release: Some("CentOS Linux release 7.9.2009 (Core)\n"),
            ..Default::default()
        });
        assert_eq!(
            (os.id.as_str(), os.version.as_deref()),
            ("centos", Some("7.9.2009"))
        );
    }

    #[test]
    fn sles10_suse_release_with_patchlevel() {
        let os = parse(ReleaseFiles {
            suse_release: Some(fixture!("sles10/SuSE-release")),
            ..Default::default()
        });
        assert_eq!(os.family, DistroFamily::Suse);
        assert_eq!(os.id, "sles");
        assert_eq!(os.name, "SUSE Linux Enterprise Server 10");
        assert_eq!(os.version.as_deref(), Some("10.2"));
    }

    #[test]
    fn ubuntu804_lsb_release() {
        let os = parse(ReleaseFiles {
            lsb_release: Some(fixture!("ubuntu804/lsb-release")),
            debian_version: Some("lenny/sid\n"),
            ..Default::default()
        });
        assert_eq!(os.family, DistroFamily::Debian);
        assert_eq!(
            (
                os.id.as_str(),
                os.version.as_deref(),
                os.codename.as_deref()
            ),
            ("ubuntu", Some("8.04"), Some("hardy"))
        );
        assert_eq!(os.pretty_name, "Ubuntu 8.04.4 LTS");
    }

    #[test]
    fn nothing_at_all_is_unknown_not_an_error() {
        let os = parse(ReleaseFiles::default());
        assert_eq!(os.family, DistroFamily::Unknown);
        assert!(os.version.is_none());
    }
}
