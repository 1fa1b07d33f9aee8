//! Golden files for tests: compare with `fixtures/DIR/NAME`, or rewrite
//! it when `HOTCLONE_BLESS=1` is set (then review the diff).

use std::path::PathBuf;

pub fn path(dir: &str, name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))
        .join(dir)
        .join(name)
}

/// Compare `actual` with the golden file, or rewrite it when blessing.
pub fn assert_golden(dir: &str, name: &str, actual: &str) {
    let path = path(dir, name);
    if std::env::var_os("HOTCLONE_BLESS").is_some() {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (create it with HOTCLONE_BLESS=1)", path.display()));
    pretty_assertions::assert_eq!(
        expected,
        actual,
        "golden {} differs (HOTCLONE_BLESS=1 rewrites it)",
        path.display()
    );
}
