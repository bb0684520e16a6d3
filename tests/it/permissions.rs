//! The home and its keys are private to the person: made so, and refused otherwise (as ssh
//! does).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use optin_tests::{Agent, Home};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_home_is_private() {
    let agent = Agent::start().await;
    let home = agent.home().path().to_owned();
    for (path, expected) in
        [(home.clone(), 0o700), (home.join("identity.pk8"), 0o600), (home.join("tls").join("key.pem"), 0o600), (home.join("admin.sock"), 0o600)]
    {
        assert_eq!(mode(&path), expected, "{} is {:o}", path.display(), mode(&path));
    }
    assert!(home.join("tls").join("cert.pem").is_file());
    assert!(home.join("store").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_serving_from_a_home_others_can_read() {
    // Make a home with keys, then loosen one thing at a time.
    let home: Home = Agent::start().await.stop();
    let cases: [(&str, u32, u32); 6] = [
        ("", 0o755, 0o700),
        ("", 0o750, 0o700),
        ("", 0o701, 0o700),
        ("identity.pk8", 0o644, 0o600),
        ("identity.pk8", 0o640, 0o600),
        ("tls/key.pem", 0o604, 0o600),
    ];
    for (relative, loose, strict) in cases {
        let path = if relative.is_empty() { home.path().to_owned() } else { home.path().join(relative) };
        chmod(&path, loose);
        let out = home.cli(&["serve", "--listen", "127.0.0.1:0"]).await;
        let what = format!("{} at {loose:o}", path.display());
        // The message names the path and its mode.
        let name = if relative.is_empty() { home.path().display().to_string() } else { relative.to_owned() };
        let stderr = out.fails(1, &name);
        assert!(stderr.contains(&format!("{loose:o}")), "{what}: the message names the mode: {stderr}");
        assert!(stderr.starts_with("error: "), "{what}: {stderr}");
        assert!(out.stdout.is_empty(), "{what}: no ready line: {}", out.stdout);
        chmod(&path, strict);
    }
    // Put right, it starts again.
    let agent = home.serve(&[]).await;
    assert_eq!(agent.get("/v1/slice", None).await.status.as_u16(), 401);
}
