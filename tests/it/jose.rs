//! Interoperability: a slice verifies with an independent JOSE library (Python's jwcrypto),
//! using nothing but the bundle's JWK.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use optin_tests::{fixture, now, Agent};

fn verify_py() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("jose").join("verify.py")
}

/// Runs verify.py; returns the exit code, stdout and stderr.
fn run(python: &PathBuf, bundle: &str, jws: &str, dir: &optin_tests::Home) -> (Option<i32>, String, String) {
    let bundle_file = dir.scratch(&format!("bundle-{}.json", jws.len()));
    let jws_file = dir.scratch(&format!("slice-{}.jws", jws.len()));
    std::fs::write(&bundle_file, bundle).expect("write bundle");
    std::fs::write(&jws_file, jws).expect("write jws");
    let out = Command::new(python)
        .arg(verify_py())
        .arg(&bundle_file)
        .arg(&jws_file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {}", python.display(), optin_tests::PYTHON_SETUP));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_verify_with_jwcrypto() {
    let Some(python) = optin_tests::python("the jwcrypto test") else { return };
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let mut bundles = Vec::new();
    for (marketer, granularity) in [("acme.example", "raw"), ("globex.example", "category")] {
        let out = agent
            .cli(&[
                "grant",
                marketer,
                "--kinds",
                "search,cart",
                "--granularity",
                granularity,
                "--window",
                "30d",
                "--expires",
                "90d",
                "--purpose",
                "p",
                "--json",
            ])
            .await;
        let text = out.ok().to_owned();
        let bundle = optin_protocol::bundle::GrantBundle::parse(&text).expect("bundle");
        let jws = agent.get("/v1/slice", Some(&bundle.token)).await.text();
        bundles.push((text, bundle, jws));
    }
    for (text, bundle, jws) in &bundles {
        let (code, stdout, stderr) = run(&python, text, jws, agent.home());
        assert_eq!(code, Some(0), "jwcrypto refused a {} slice: {stderr}", bundle.terms.granularity);
        let theirs: Value = serde_json::from_str(&stdout).expect("verify.py prints JSON");
        let ours: Value = serde_json::from_slice(&optin_protocol::jws::verify(jws, &bundle.jwk).expect("verifies")).expect("JSON");
        assert_eq!(theirs, ours, "both libraries read the same payload");
    }

    // And jwcrypto refuses what it should: a changed signature, another grant's slice.
    let (text, _, jws) = &bundles[0];
    let (head, signature) = jws.rsplit_once('.').expect("three parts");
    let flipped = if signature.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{head}.{flipped}{}", &signature[1..]);
    let (code, _, stderr) = run(&python, text, &tampered, agent.home());
    assert_eq!(code, Some(1), "a tampered slice must not verify: {stderr}");
    let (code, _, stderr) = run(&python, text, &bundles[1].2, agent.home());
    assert_eq!(code, Some(1), "another grant's slice must not verify: {stderr}");
}
