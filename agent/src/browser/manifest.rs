//! `optin browser install|status|uninstall`: the native-messaging manifests that let the
//! extension start `optin native-host`.
//!
//! Browsers start the host with no arguments of ours, so the manifest points at a small
//! launcher script in the home that runs this binary with this home. Where each browser
//! looks (Linux): Chromium `~/.config/chromium/NativeMessagingHosts/`, Chrome
//! `~/.config/google-chrome/NativeMessagingHosts/`, Firefox `~/.mozilla/native-messaging-hosts/`.
//! A browser started with its own `--user-data-dir=X` reads `X/NativeMessagingHosts/`:
//! pass that as `--manifest-dir`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use super::native_host::{chromium_origin, FIREFOX_EXTENSION_ID};
use super::{Browser, LastConnection, LastSeen};
use crate::home::{write_private, Home};

/// The native-messaging host name the extension connects to.
pub const HOST_NAME: &str = "dev.optin.agent";

/// Where a browser reads host manifests by default.
pub fn default_dir(browser: Browser, user_home: &Path) -> PathBuf {
    match browser {
        Browser::Chromium => user_home.join(".config/chromium/NativeMessagingHosts"),
        Browser::Chrome => user_home.join(".config/google-chrome/NativeMessagingHosts"),
        Browser::Firefox => user_home.join(".mozilla/native-messaging-hosts"),
    }
}

fn user_home() -> Result<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from).context("HOME is not set")
}

/// The manifest files to act on: one per browser, in `dir` when given.
fn targets(browser: Option<Browser>, dir: Option<&Path>) -> Result<Vec<(Browser, PathBuf)>> {
    let browsers: Vec<Browser> = match browser {
        Some(b) => vec![b],
        None => Browser::ALL.to_vec(),
    };
    let home = if dir.is_none() { Some(user_home()?) } else { None };
    Ok(browsers
        .into_iter()
        .map(|b| {
            let d = dir.map(Path::to_path_buf).or_else(|| home.as_ref().map(|h| default_dir(b, h))).unwrap_or_default();
            (b, d.join(format!("{HOST_NAME}.json")))
        })
        .collect())
}

fn launcher(home: &Home) -> PathBuf {
    home.root().join("browser/native-host")
}

/// Writes the launcher and the manifests; returns the manifest paths written.
pub fn install(home: &Home, browser: Option<Browser>, dir: Option<&Path>) -> Result<Vec<PathBuf>> {
    let exe = std::env::current_exe().context("cannot find the optin binary")?;
    let root = std::fs::canonicalize(home.root())?;
    let script = format!(
        "#!/bin/sh\n# Started by the browser for the optin extension (native messaging).\nexec {} --home {} native-host \"$@\"\n",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&root.to_string_lossy())
    );
    let launcher = launcher(home);
    write_private(&launcher, script.as_bytes())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&launcher, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut written = Vec::new();
    for (b, path) in targets(browser, dir)? {
        let mut manifest = json!({
            "name": HOST_NAME,
            "description": "optin agent: stores the browsing signals you choose to share",
            "path": launcher,
            "type": "stdio",
        });
        match b {
            Browser::Firefox => manifest["allowed_extensions"] = json!([FIREFOX_EXTENSION_ID]),
            _ => manifest["allowed_origins"] = json!([chromium_origin()]),
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&manifest)?).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Removes the manifests that point at this home's launcher; returns those removed.
pub fn uninstall(home: &Home, browser: Option<Browser>, dir: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for (_, path) in targets(browser, dir)? {
        if manifest_launcher(&path).is_some_and(|l| l == launcher(home) || !l.exists()) {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

fn manifest_launcher(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["path"].as_str().map(PathBuf::from)
}

/// One line per browser, and the extension's last connection.
pub fn status(home: &Home, dir: Option<&Path>) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (b, path) in targets(None, dir)? {
        let line = match manifest_launcher(&path) {
            None if path.exists() => format!("{b}: {} is not a valid manifest", path.display()),
            None => format!("{b}: not installed"),
            Some(l) if !l.exists() => format!("{b}: installed at {}, but its launcher {} is missing", path.display(), l.display()),
            Some(_) => format!("{b}: installed at {}", path.display()),
        };
        lines.push(line);
    }
    lines.push(match LastConnection::read(home) {
        LastSeen::At(last) => format!("extension last connected: {} ({})", optin_protocol::timestamp::format(last.at), last.browser),
        LastSeen::Never => "extension has never connected".to_owned(),
        LastSeen::Unknown => format!("extension last connected: unknown ({} cannot be read)", home.last_connection().display()),
    });
    Ok(lines)
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
