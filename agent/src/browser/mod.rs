//! The browser side of optin: the one [`Browser`] enum (for `optin browser install` and for
//! `optin import`), the native-messaging manifests ([`manifest`]) and the native host the
//! browser starts ([`native_host`]).

use std::fmt;

pub mod manifest;
pub mod native_host;

/// A browser family optin knows: where it keeps its history and its native-messaging
/// manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
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

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::Browser;

    #[test]
    fn command_line_names_are_the_display_names() {
        for browser in Browser::ALL {
            let parsed = Browser::from_str(browser.name(), true).expect("parses");
            assert_eq!(parsed, browser);
            assert_eq!(browser.to_string(), browser.name());
        }
        assert!(Browser::from_str("safari", true).is_err());
    }
}
