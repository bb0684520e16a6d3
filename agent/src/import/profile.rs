//! Where a browser keeps its default profile: fixed paths for Chromium and Chrome, and
//! Firefox's `profiles.ini`.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::HistoryError;
use crate::browser::Browser;

/// Where the browser keeps its default profile on Linux, for a user whose home is `home`.
///
/// For Firefox this reads `profiles.ini` (in `~/.mozilla/firefox`, or in
/// `~/.config/mozilla/firefox` where newer releases put new profiles) and picks the profile
/// the installed Firefox uses: the `Default=` of the first `[Install…]` section, else the
/// profile marked `Default=1`, else the only profile.
pub fn default_profile(browser: Browser, home: &Path) -> Result<PathBuf, HistoryError> {
    let profile = match browser {
        Browser::Chromium => home.join(".config/chromium/Default"),
        Browser::Chrome => home.join(".config/google-chrome/Default"),
        Browser::Firefox => firefox_default_profile(home)?,
    };
    if !profile.is_dir() {
        return Err(HistoryError::ProfileNotFound { path: profile });
    }
    Ok(profile)
}

fn firefox_default_profile(home: &Path) -> Result<PathBuf, HistoryError> {
    // The legacy location wins when both exist, as it does for Firefox itself: a profile
    // created before the move to XDG directories stays where it is.
    let roots = [home.join(".mozilla/firefox"), home.join(".config/mozilla/firefox")];
    let Some(root) = roots.iter().find(|r| r.join("profiles.ini").is_file()) else {
        return Err(HistoryError::FirefoxProfiles {
            path: roots[0].join("profiles.ini"),
            problem: "file not found (is Firefox installed? pass --profile)".into(),
        });
    };
    let ini_path = root.join("profiles.ini");
    let text = fs::read(&ini_path).map_err(|source| HistoryError::Io { path: ini_path.clone(), source })?;
    let problem = |problem: &str| HistoryError::FirefoxProfiles { path: ini_path.clone(), problem: problem.to_owned() };
    let sections = parse_ini(&String::from_utf8_lossy(&text));

    let profiles: Vec<&IniSection> = sections
        .iter()
        .filter(|s| s.name.strip_prefix("Profile").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|s| s.get("Path").is_some_and(|p| !p.is_empty()))
        .collect();
    let resolve = |path: &str, relative: bool| {
        if relative {
            root.join(path)
        } else {
            PathBuf::from(path)
        }
    };
    let is_relative = |s: &IniSection| s.get("IsRelative").is_some_and(|v| v.trim() == "1");

    let install_default = sections.iter().filter(|s| s.name.starts_with("Install")).find_map(|s| s.get("Default").filter(|d| !d.is_empty()));
    if let Some(path) = install_default {
        // The install section names a profile by its Path; the matching profile section says
        // whether that path is relative. Without one, relative unless it is absolute.
        let relative = profiles.iter().find(|p| p.get("Path") == Some(path)).map_or(!Path::new(path).is_absolute(), |p| is_relative(p));
        return Ok(resolve(path, relative));
    }
    let chosen = match profiles.iter().find(|p| p.get("Default").is_some_and(|v| v.trim() == "1")) {
        Some(p) => p,
        None => match profiles.as_slice() {
            [only] => only,
            [] => return Err(problem("it lists no profiles")),
            _ => return Err(problem("several profiles and none is the default; pass --profile")),
        },
    };
    // `profiles` only holds sections with a Path, so this lookup cannot fail; fall back to
    // an error rather than assume it.
    let path = chosen.get("Path").ok_or_else(|| problem("profile without Path"))?;
    Ok(resolve(path, is_relative(chosen)))
}

struct IniSection {
    name: String,
    entries: Vec<(String, String)>,
}

impl IniSection {
    fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A forgiving INI reader: enough for `profiles.ini`, never failing on odd lines.
fn parse_ini(text: &str) -> Vec<IniSection> {
    let mut sections: Vec<IniSection> = Vec::new();
    for line in text.trim_start_matches('\u{FEFF}').lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push(IniSection { name: name.trim().to_owned(), entries: Vec::new() });
        } else if let (Some(section), Some((k, v))) = (sections.last_mut(), line.split_once('=')) {
            section.entries.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    sections
}
