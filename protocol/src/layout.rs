//! The crate's invariants, checked on its own sources and manifest: its modules depend on
//! each other without cycles, and it depends on no crate that does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn source_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Each module (file stem) and the sibling modules its code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let files: Vec<_> = std::fs::read_dir(source_dir())
        .expect("the source directory")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    let names: Vec<String> = files.iter().map(|p| p.file_stem().expect("a name").to_string_lossy().into_owned()).filter(|n| n != "lib").collect();
    let mut graph = BTreeMap::new();
    for (path, name) in files.iter().zip(files.iter().map(|p| p.file_stem().expect("a name").to_string_lossy().into_owned())) {
        if name == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("a readable source");
        let code: Vec<&str> = text.lines().map(str::trim_start).filter(|l| !l.starts_with("//")).collect();
        let uses = names
            .iter()
            .filter(|other| **other != name && code.iter().any(|l| l.contains(&format!("crate::{other}::")) || l.contains(&format!("super::{other}::"))))
            .cloned()
            .collect();
        graph.insert(name, uses);
    }
    graph
}

#[test]
fn modules_depend_without_cycles() {
    let graph = graph();
    // Repeatedly remove modules that use no remaining module; what cannot be removed is a cycle.
    let mut left = graph.clone();
    while let Some(leaf) = left.iter().find(|(_, uses)| uses.is_empty()).map(|(n, _)| n.clone()) {
        left.remove(&leaf);
        for uses in left.values_mut() {
            uses.remove(&leaf);
        }
    }
    assert!(left.is_empty(), "modules in a cycle: {left:?}");
    assert!(graph["bundle"].contains("slice") && !graph["slice"].contains("bundle"), "bundle builds on slice, never back: {graph:?}");
}

#[test]
fn depends_on_no_crate_that_does_io() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).expect("the manifest");
    let dependencies = manifest.split("[dependencies]").nth(1).expect("a dependencies table");
    let dependencies = dependencies.split("\n[").next().unwrap_or(dependencies);
    for io in ["tokio", "hyper", "sled", "rustls", "axum", "rusqlite", "reqwest"] {
        assert!(!dependencies.lines().any(|l| l.trim_start().starts_with(io)), "protocol must not depend on {io}");
    }
}
