//! Where the clone goes, as the user writes it on the command line:
//! `image:PATH[,size=SIZE][,format=raw|qcow2]` for a disk image here, or
//! `ssh://[USER@]HOST[:PORT][,disk=DEVICE]` for the disk of a VM booted
//! from the rescue image (`hotclone launch` makes one).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::units::parse_size;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

impl ImageFormat {
    /// The name QEMU, qemu-img and libvirt use.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetSpec {
    /// A local disk image file.
    Image {
        path: PathBuf,
        format: ImageFormat,
        /// `None`: sized from the plan.
        size_bytes: Option<u64>,
    },
    /// The whole disk of a rescue VM, reached over SSH.
    Live {
        /// `[user@]host[:port]`, as for the source.
        destination: String,
        /// The disk to write (`None`: the only free disk it has; the plan
        /// always names one).
        disk: Option<PathBuf>,
        /// The disk's size, read from the target when planning.
        size_bytes: Option<u64>,
    },
}

impl TargetSpec {
    /// How the user would write it again.
    pub fn display(&self) -> String {
        match self {
            TargetSpec::Image { path, .. } => format!("image:{}", path.display()),
            TargetSpec::Live {
                destination, disk, ..
            } => match disk {
                Some(d) => format!("ssh://{destination},disk={}", d.display()),
                None => format!("ssh://{destination}"),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetSpecError {
    #[error("target {spec:?}: expected image:PATH[,size=SIZE][,format=raw|qcow2] (e.g. image:/var/lib/vm/web01.qcow2,size=40G) or ssh://[USER@]HOST[:PORT][,disk=DEVICE] (e.g. ssh://root@192.0.2.50)")]
    Shape { spec: String },
    #[error("target {spec:?}: {message}")]
    Option { spec: String, message: String },
}

impl std::str::FromStr for TargetSpec {
    type Err = TargetSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = spec.strip_prefix("ssh://") {
            let mut parts = rest.split(',');
            let destination = parts
                .next()
                .filter(|d| !d.is_empty() && !d.contains('/'))
                .ok_or_else(|| TargetSpecError::Shape { spec: spec.into() })?;
            let mut disk = None;
            for opt in parts {
                match opt.split_once('=') {
                    Some(("disk", d)) if d.starts_with("/dev/") => disk = Some(PathBuf::from(d)),
                    _ => {
                        return Err(TargetSpecError::Option {
                            spec: spec.into(),
                            message: format!("unknown option {opt:?} (disk=/dev/NAME)"),
                        })
                    }
                }
            }
            return Ok(TargetSpec::Live {
                destination: destination.into(),
                disk,
                size_bytes: None,
            });
        }
        let rest = spec
            .strip_prefix("image:")
            .ok_or_else(|| TargetSpecError::Shape { spec: spec.into() })?;
        let mut parts = rest.split(',');
        let path = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| TargetSpecError::Shape { spec: spec.into() })?;
        let mut size_bytes = None;
        let mut format = None;
        for opt in parts {
            let err = |message: String| TargetSpecError::Option {
                spec: spec.into(),
                message,
            };
            match opt.split_once('=') {
                Some(("size", v)) => size_bytes = Some(parse_size(v).map_err(err)?),
                Some(("format", "raw")) => format = Some(ImageFormat::Raw),
                Some(("format", "qcow2")) => format = Some(ImageFormat::Qcow2),
                Some(("format", other)) => {
                    return Err(err(format!("format {other:?}: use raw or qcow2")))
                }
                _ => {
                    return Err(err(format!(
                        "unknown option {opt:?} (size=SIZE, format=raw|qcow2)"
                    )))
                }
            }
        }
        let format = format.unwrap_or(if path.ends_with(".qcow2") {
            ImageFormat::Qcow2
        } else {
            ImageFormat::Raw
        });
        Ok(TargetSpec::Image {
            path: PathBuf::from(path),
            format,
            size_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_targets_with_options_and_defaults() {
        let t: TargetSpec = "image:/vm/web01.qcow2,size=40G".parse().unwrap();
        assert_eq!(
            t,
            TargetSpec::Image {
                path: "/vm/web01.qcow2".into(),
                format: ImageFormat::Qcow2,
                size_bytes: Some(40 << 30)
            }
        );
        let t: TargetSpec = "image:disk.img,format=qcow2".parse().unwrap();
        assert!(matches!(
            t,
            TargetSpec::Image {
                format: ImageFormat::Qcow2,
                size_bytes: None,
                ..
            }
        ));
        let t: TargetSpec = "image:disk.img".parse().unwrap();
        assert!(matches!(
            t,
            TargetSpec::Image {
                format: ImageFormat::Raw,
                ..
            }
        ));
    }

    #[test]
    fn bad_targets_say_what_is_expected() {
        assert!(matches!(
            "disk.img".parse::<TargetSpec>(),
            Err(TargetSpecError::Shape { .. })
        ));
        assert!(matches!(
            "image:".parse::<TargetSpec>(),
            Err(TargetSpecError::Shape { .. })
        ));
        assert_eq!(
            "ssh://root@198.51.100.50".parse::<TargetSpec>().unwrap(),
            TargetSpec::Live {
                destination: "root@198.51.100.50".into(),
                disk: None,
                size_bytes: None
            }
        );
        let t: TargetSpec = "ssh://vm:2222,disk=/dev/vdb".parse().unwrap();
        assert_eq!(t.display(), "ssh://vm:2222,disk=/dev/vdb");
        assert!("ssh://".parse::<TargetSpec>().is_err());
        let e = "ssh://vm,disk=vdb"
            .parse::<TargetSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("disk=/dev/NAME"), "{e}");
        let e = "image:d.img,format=vmdk"
            .parse::<TargetSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("raw or qcow2"), "{e}");
        let e = "image:d.img,size=huge"
            .parse::<TargetSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown unit"), "{e}");
    }
}
