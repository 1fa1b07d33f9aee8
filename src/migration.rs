//! A migration's state on the client: one directory per migration under
//! `$HOTCLONE_HOME` (default `~/.local/state/hotclone`), named by the user
//! (`--name`, default the source's hostname). It holds the inventory and
//! plan the migration acts on, the journal, and the staging mount point.
//! Later commands (`sync`, `status`, `verify`, `cutover`) find everything
//! here by name.

use std::path::{Path, PathBuf};

/// Where a migration is, as its journal records it. The one place its
/// names are spelled ([`crate::journal::Journal::stage`] reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// No target disk yet: probed and planned, or only its VM launched.
    New,
    /// The target disk is being made (partitioned, formatted); a clone
    /// killed now left a disk with no file on it, which the next run makes
    /// again.
    Preparing,
    /// The disk exists and files are being copied; `clone` continues it.
    Copying,
    /// Copied, converted and finished: `sync` keeps it current.
    Ready,
    /// Cut over: the clone serves, and nothing syncs into it again.
    CutOver,
}

impl Stage {
    const ALL: [Stage; 5] = [
        Stage::New,
        Stage::Preparing,
        Stage::Copying,
        Stage::Ready,
        Stage::CutOver,
    ];

    /// The name the journal stores (and `status --json` shows).
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::New => "new",
            Stage::Preparing => "preparing",
            Stage::Copying => "copying",
            Stage::Ready => "ready",
            Stage::CutOver => "cut-over",
        }
    }

    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("{0:?} is not a usable migration name: use letters, digits, '.', '_' and '-' (at most 64), not starting with '.'")]
    BadName(String),
    #[error("a migration named {name:?} already exists in {dir}; continue it with `hotclone sync {name}`, or choose another --name")]
    Exists { name: String, dir: PathBuf },
    #[error("no migration named {name:?} in {home} (HOTCLONE_HOME); `hotclone clone` creates one")]
    NotFound { name: String, home: PathBuf },
    #[error("{path} cannot be read back ({why}); it was changed by hand or written by another hotclone version")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the target keeps its copy of the migration's state, relative to
/// the root of the target's root filesystem. It is not part of the cloned
/// tree: passes never list, send or remove it. Conversion keeps its
/// interface-rename record there too ([`crate::convert::renamed_record`]),
/// so re-conversions after syncs do not rename twice. Cutover removes it.
pub const TARGET_STATE_DIR: &str = ".hotclone";

/// The journal copy, inventory and plan on the target, for `root`.
pub fn target_state(root: &Path) -> PathBuf {
    root.join(TARGET_STATE_DIR)
}

/// Where migrations live: `$HOTCLONE_HOME`, else `~/.local/state/hotclone`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("HOTCLONE_HOME") {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    base.join(".local/state/hotclone")
}

pub fn validate_name(name: &str) -> Result<(), MigrationError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(MigrationError::BadName(name.to_string()))
    }
}

#[derive(Debug, Clone)]
pub struct Migration {
    pub name: String,
    pub dir: PathBuf,
}

impl Migration {
    /// Create a new migration directory; an existing one is never reused.
    pub fn create(home: &Path, name: &str) -> Result<Migration, MigrationError> {
        validate_name(name)?;
        let dir = home.join(name);
        std::fs::create_dir_all(home).map_err(|source| MigrationError::Io {
            path: home.to_path_buf(),
            source,
        })?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(MigrationError::Exists {
                    name: name.to_string(),
                    dir,
                })
            }
            Err(source) => return Err(MigrationError::Io { path: dir, source }),
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| MigrationError::Io {
                path: dir.clone(),
                source,
            },
        )?;
        Ok(Migration {
            name: name.to_string(),
            dir,
        })
    }

    /// The migration `name`, created when it does not exist yet (`launch`
    /// may come before `clone`).
    pub fn open_or_create(home: &Path, name: &str) -> Result<Migration, MigrationError> {
        match Migration::create(home, name) {
            Err(MigrationError::Exists { .. }) => Migration::open(home, name),
            other => other,
        }
    }

    pub fn open(home: &Path, name: &str) -> Result<Migration, MigrationError> {
        validate_name(name)?;
        let dir = home.join(name);
        if !dir.is_dir() {
            return Err(MigrationError::NotFound {
                name: name.to_string(),
                home: home.to_path_buf(),
            });
        }
        Ok(Migration {
            name: name.to_string(),
            dir,
        })
    }

    pub fn inventory_path(&self) -> PathBuf {
        self.dir.join("inventory.json")
    }
    pub fn plan_path(&self) -> PathBuf {
        self.dir.join("plan.toml")
    }
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("journal.sqlite")
    }
    /// Where the target's filesystems are mounted while they are written.
    pub fn staging_dir(&self) -> PathBuf {
        self.dir.join("staging")
    }

    /// The inventory and plan the migration acts on (never re-probed).
    pub fn load(&self) -> Result<(crate::probe::Inventory, crate::plan::Plan), MigrationError> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path)
                .map_err(|source| MigrationError::Io {
                    path: path.clone(),
                    source,
                })
                .map(|text| (path, text))
        };
        let inventory = self.inventory()?;
        let (path, text) = read(self.plan_path())?;
        let plan = crate::plan::Plan::from_toml(&text).map_err(|e| MigrationError::Corrupt {
            path,
            why: e.to_string(),
        })?;
        Ok((inventory, plan))
    }

    /// Only the inventory (a launched VM is sized like the source).
    pub fn inventory(&self) -> Result<crate::probe::Inventory, MigrationError> {
        let path = self.inventory_path();
        let text = std::fs::read_to_string(&path).map_err(|source| MigrationError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| MigrationError::Corrupt {
            path,
            why: e.to_string(),
        })
    }

    pub fn write(&self, path: &Path, text: &str) -> Result<(), MigrationError> {
        std::fs::write(path, text).map_err(|source| MigrationError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("web01.example-2_b").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "sp ace", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn create_refuses_an_existing_migration_and_open_finds_it() {
        let home = std::env::temp_dir().join(format!("hotclone-mig-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let m = Migration::create(&home, "web01").unwrap();
        assert!(m.dir.is_dir());
        let again = Migration::create(&home, "web01").unwrap_err().to_string();
        assert!(again.contains("hotclone sync web01"), "{again}");
        assert_eq!(Migration::open(&home, "web01").unwrap().dir, m.dir);
        assert!(matches!(
            Migration::open(&home, "other"),
            Err(MigrationError::NotFound { .. })
        ));
        std::fs::remove_dir_all(&home).unwrap();
    }
}

#[cfg(test)]
mod stage_tests {
    use super::Stage;

    #[test]
    fn every_stage_reads_back_from_its_name_and_serializes_as_it() {
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(Stage::parse("cut_over"), None);
    }
}
