//! The layout's invariants, checked on the source tree: module dependencies form no cycle,
//! only `store` names sled, only `serve` (the server) and `outbound` (the client) name the
//! HTTP crates, and only `outbound` names the SOCKS and system trust store crates. A new
//! `use` that breaks one fails here, with the edge that did it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules of the crate.
const MODULES: &[&str] = &["browser", "cli", "core", "home", "import", "keys", "merchant", "outbound", "push", "serve", "session", "site", "store", "tls"];

/// Each top-level module with the Rust sources under it.
fn sources() -> BTreeMap<&'static str, Vec<(PathBuf, String)>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for &module in MODULES {
        let mut files = Vec::new();
        let single = root.join(format!("{module}.rs"));
        if single.is_file() {
            files.push(single);
        }
        collect(&root.join(module), &mut files);
        assert!(!files.is_empty(), "module {module} has no source");
        let read = files.into_iter().map(|f| (f.clone(), std::fs::read_to_string(&f).expect("source is readable"))).collect();
        out.insert(module, read);
    }
    out
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// Code lines only: comments name other modules freely.
fn code(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim_start).filter(|l| !l.starts_with("//"))
}

fn dependencies() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let mut graph = BTreeMap::new();
    for (module, files) in sources() {
        let mut uses = BTreeSet::new();
        for (_, text) in &files {
            for line in code(text) {
                for &other in MODULES {
                    if other != module && line.contains(&format!("crate::{other}")) {
                        uses.insert(other);
                    }
                }
            }
        }
        graph.insert(module, uses);
    }
    graph
}

#[test]
fn modules_depend_without_cycles() {
    let graph = dependencies();
    // Depth-first search; a module met again on the current path closes a cycle.
    fn visit<'a>(node: &'a str, graph: &BTreeMap<&'a str, BTreeSet<&'a str>>, path: &mut Vec<&'a str>, done: &mut BTreeSet<&'a str>) -> Result<(), String> {
        if let Some(start) = path.iter().position(|n| *n == node) {
            return Err(format!("{} -> {node}", path[start..].join(" -> ")));
        }
        if done.contains(node) {
            return Ok(());
        }
        path.push(node);
        for &next in &graph[node] {
            visit(next, graph, path, done)?;
        }
        path.pop();
        done.insert(node);
        Ok(())
    }
    let mut done = BTreeSet::new();
    for &module in MODULES {
        if let Err(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {cycle}\ngraph: {graph:#?}");
        }
    }
}

#[test]
fn the_middle_never_reaches_out() {
    let graph = dependencies();
    // (module, what it must not use): the store is below the core; the core knows no way in
    // and no way out (when to connect is the business of the way in the person asked
    // through); the outbound client knows nothing of the agent; the push sender joins the
    // two.
    let forbidden: &[(&str, &[&str])] = &[
        ("store", &["core", "serve", "session", "cli", "browser", "import", "outbound"]),
        ("core", &["serve", "session", "cli", "browser", "import", "outbound", "push"]),
        ("outbound", &["core", "store", "serve", "session", "cli", "browser", "import", "keys"]),
        ("serve", &["session", "cli", "browser", "import"]),
        // The sender knows the core and the client, and no way in.
        ("push", &["serve", "session", "cli", "browser", "import"]),
        ("session", &["serve", "cli", "browser", "import"]),
        ("tls", &["core", "store", "serve", "session", "cli", "browser", "import"]),
    ];
    for (module, never) in forbidden {
        for other in *never {
            assert!(!graph[module].contains(other), "{module} must not use {other}");
        }
    }
}

#[test]
fn the_io_crates_stay_in_their_modules() {
    // (crate named in code, the only top-level modules allowed to name it)
    let owners: &[(&str, &[&str])] = &[
        ("sled::", &["store"]),
        ("IVec", &["store"]),
        ("axum::", &["serve"]),
        ("hyper::", &["serve", "outbound"]),
        ("hyper_util::", &["serve", "outbound"]),
        ("http_body_util::", &["serve", "outbound"]),
        ("tokio_socks::", &["outbound"]),
        ("rustls_native_certs::", &["outbound"]),
    ];
    for (module, files) in sources() {
        for (path, text) in &files {
            for line in code(text) {
                for (needle, allowed) in owners {
                    assert!(allowed.contains(&module) || !line.contains(needle), "{} names `{needle}`, which only {allowed:?} may: {line}", path.display());
                }
            }
        }
    }
}
