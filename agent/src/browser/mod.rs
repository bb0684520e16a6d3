//! The browser side of optin: the one [`Browser`] enum (for `optin browser install` and for
//! `optin import`), the native-messaging manifests ([`manifest`]) and the native host the
//! browser starts ([`native_host`]), and the record of the extension's last connection
//! ([`LastConnection`]) that the host writes and `optin status` and `optin browser status`
//! show.

use std::fmt;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::home::Home;

pub mod manifest;
pub mod native_host;

/// A browser family optin knows: where it keeps its history and its native-messaging
/// manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Browser {
    /// Chromium.
    Chromium,
    /// Google Chrome.
    Chrome,
    /// Firefox.
    Firefox,
}

impl Browser {
    /// Every browser, in the order commands list them.
    pub const ALL: [Browser; 3] = [Browser::Chromium, Browser::Chrome, Browser::Firefox];

    /// The name used on the command line, in ids and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Browser::Chromium => "chromium",
            Browser::Chrome => "chrome",
            Browser::Firefox => "firefox",
        }
    }
}

impl fmt::Display for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When the extension last connected to the native host, and from which browser family
/// (Chromium and Chrome name the caller the same way, so both record `chromium`). Kept in
/// [`Home::last_connection`] as `{"at": RFC 3339, "browser": name}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastConnection {
    /// When.
    #[serde(with = "optin_protocol::timestamp::serde")]
    pub at: OffsetDateTime,
    /// Which browser family.
    pub browser: Browser,
}

/// What a home says about the extension's last connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastSeen {
    /// No record: the extension has never connected to this home.
    Never,
    /// The record.
    At(LastConnection),
    /// A record that cannot be read or is damaged. It is only ever shown, so a command
    /// that shows it says "unknown" rather than failing.
    Unknown,
}

impl LastConnection {
    /// Writes the record, replacing the previous one whole.
    pub fn record(&self, home: &Home) -> Result<()> {
        crate::home::write_private(&home.last_connection(), &serde_json::to_vec(self)?)
    }

    /// Reads the record of `home`, which need not exist.
    pub fn read(home: &Home) -> LastSeen {
        match std::fs::read(home.last_connection()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_or(LastSeen::Unknown, LastSeen::At),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LastSeen::Never,
            Err(_) => LastSeen::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::{Browser, LastConnection, LastSeen};
    use crate::home::Home;

    #[test]
    fn command_line_names_are_the_display_names() {
        for browser in Browser::ALL {
            let parsed = Browser::from_str(browser.name(), true).expect("parses");
            assert_eq!(parsed, browser);
            assert_eq!(browser.to_string(), browser.name());
        }
        assert!(Browser::from_str("safari", true).is_err());
    }

    #[test]
    fn records_use_the_display_names() {
        for browser in Browser::ALL {
            assert_eq!(serde_json::to_value(browser).expect("serializes"), browser.name());
        }
    }

    #[test]
    fn the_last_connection_reads_back_and_a_damaged_one_is_unknown() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let home = Home::unopened(dir.path());
        assert_eq!(LastConnection::read(&home), LastSeen::Never);

        let at = optin_protocol::timestamp::parse("2026-11-20T10:00:00Z").expect("a time");
        let record = LastConnection { at, browser: Browser::Firefox };
        record.record(&home).expect("recorded");
        assert_eq!(std::fs::read_to_string(home.last_connection()).expect("read"), r#"{"at":"2026-11-20T10:00:00Z","browser":"firefox"}"#);
        assert_eq!(LastConnection::read(&home), LastSeen::At(record));

        for damaged in ["", "{", "[]", r#"{"at":"yesterday","browser":"firefox"}"#, r#"{"at":"2026-11-20T10:00:00Z","browser":"netscape"}"#] {
            std::fs::write(home.last_connection(), damaged).expect("write");
            assert_eq!(LastConnection::read(&home), LastSeen::Unknown, "{damaged:?}");
        }
    }
}
