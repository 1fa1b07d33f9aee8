//! Build id: a hash of the sources that make the binary, so two builds of
//! the same code agree and any change shows. The client compares it with
//! the agent's in the rescue VM (the version handshake) and uploads itself
//! when they differ.

use std::hash::Hasher;
use std::path::Path;

/// FNV-1a, 64 bit: stable across Rust versions (unlike DefaultHasher).
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, files);
        } else {
            files.push(p);
        }
    }
}

fn main() {
    let mut files = vec!["Cargo.toml".into(), "Cargo.lock".into(), "build.rs".into()];
    walk(Path::new("src"), &mut files);
    walk(Path::new("rescue-image"), &mut files);
    files.sort();
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for f in &files {
        h.write(f.to_string_lossy().as_bytes());
        h.write(&std::fs::read(f).unwrap_or_default());
    }
    println!("cargo:rustc-env=HOTCLONE_BUILD_ID={:016x}", h.finish());
    for watched in [
        "src",
        "rescue-image",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
    ] {
        println!("cargo:rerun-if-changed={watched}");
    }
}
