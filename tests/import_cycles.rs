//! Data flows one way (DESIGN): no import cycle among the top-level
//! modules of `src/`. A module's imports are every `crate::NAME` in its
//! files outside comments, tests included; a cycle fails with its
//! modules and the files that import each step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            rust_files(&e, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The `crate::NAME` prefixes in `text`, comments left out.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            // `$crate::` is a macro's.
            if !rest[..at].ends_with('$') {
                out.extend(names_at(after));
            }
            rest = after;
        }
    }
    out
}

/// The module names a path starting at `after` (what follows `crate::`)
/// names: one, or each of a `{a::X, b::{Y, Z}}` group's.
fn names_at(after: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    match after.strip_prefix('{') {
        None => names.push(ident(after)),
        Some(group) => {
            // Split the group at its top-level commas, up to its closing
            // brace.
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.push(ident(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(ident(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// module -> module it imports -> files that do.
fn graph(src: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let modules: Vec<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    assert!(modules.len() > 10, "lib.rs lists its modules: {modules:?}");
    let mut g = BTreeMap::new();
    for m in &modules {
        let mut files = Vec::new();
        let dir = src.join(m);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        let file = src.join(format!("{m}.rs"));
        if file.is_file() {
            files.push(file);
        }
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for d in crate_paths(&text) {
                if &d != m && modules.contains(&d) {
                    let shown = f.strip_prefix(src).unwrap().display().to_string();
                    edges.entry(d).or_default().insert(shown);
                }
            }
        }
        g.insert(m.clone(), edges);
    }
    g
}

/// A cycle through `start`, if there is one (depth-first).
fn cycle_from(
    g: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    start: &str,
) -> Option<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g[at].keys() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    walk(g, start, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn no_import_cycle_among_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    for m in g.keys() {
        if let Some(cycle) = cycle_from(&g, m) {
            let steps: Vec<String> = cycle
                .iter()
                .zip(cycle.iter().cycle().skip(1))
                .map(|(a, b)| format!("{a} -> {b} ({:?})", g[a][b]))
                .collect();
            panic!("import cycle: {}", steps.join("; "));
        }
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let text = "use crate::b::X; // crate::c in a comment\nfn f() { $crate::d::g() }";
    assert_eq!(
        crate_paths(text),
        BTreeSet::from(["b".to_string()]),
        "comments and macro paths are not imports"
    );
    assert_eq!(
        crate_paths("use crate::{e::X, f::{Y, Z}, g};"),
        BTreeSet::from(["e".to_string(), "f".to_string(), "g".to_string()]),
        "a group names each of its modules"
    );
    let mut g: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let edge = |f: &str| BTreeSet::from([f.to_string()]);
    g.insert(
        "a".into(),
        BTreeMap::from([("b".to_string(), edge("a.rs"))]),
    );
    g.insert(
        "b".into(),
        BTreeMap::from([("c".to_string(), edge("b.rs"))]),
    );
    g.insert(
        "c".into(),
        BTreeMap::from([("a".to_string(), edge("c.rs"))]),
    );
    assert_eq!(
        cycle_from(&g, "a"),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
    g.get_mut("c").unwrap().clear();
    assert_eq!(cycle_from(&g, "a"), None);
}
