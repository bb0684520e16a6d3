//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same invariant
//! functions the fuzz targets call (`optin_protocol::fuzz`), on stable Rust and on every
//! test run: each crash the fuzzer found was committed there, and stays fixed.

use std::path::Path;

#[test]
fn replays_the_fuzz_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, check) in optin_protocol::fuzz::TARGETS {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut replayed = 0;
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Printed before the check so that a failure names the input at fault.
            println!("{target}: {}", path.display());
            check(&bytes);
            replayed += 1;
        }
        assert!(replayed > 0, "{target}: the corpus is empty");
    }
}
