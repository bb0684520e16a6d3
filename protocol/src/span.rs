//! Durations as people write them: `90d`, `12h`, `30m`, `2w`, `45s`.

use std::fmt;
use std::str::FromStr;

/// A positive duration of whole seconds, at most ten years.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(u64);

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration: write a positive number followed by s, m, h, d or w (at most 10 years), like 30d")]
pub struct SpanError(pub String);

impl Span {
    /// The longest span accepted: ten years of 365 days.
    pub const MAX_SECONDS: u64 = 10 * 365 * 86_400;

    /// A span of `seconds`, if positive and within [`Span::MAX_SECONDS`].
    pub const fn from_seconds(seconds: u64) -> Option<Span> {
        if seconds >= 1 && seconds <= Self::MAX_SECONDS {
            Some(Span(seconds))
        } else {
            None
        }
    }

    /// Whole seconds.
    pub fn seconds(self) -> u64 {
        self.0
    }

    /// As a `time::Duration`.
    pub fn duration(self) -> time::Duration {
        // MAX_SECONDS fits in i64.
        time::Duration::seconds(self.0 as i64)
    }
}

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(text: &str) -> Result<Span, SpanError> {
        let err = || SpanError(text.chars().take(64).collect());
        // Split off the last character, not the last byte: input may be any UTF-8.
        let mut chars = text.chars();
        let unit = chars.next_back().ok_or_else(err)?;
        let digits = chars.as_str();
        if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let n: u64 = digits.parse().map_err(|_| err())?;
        let scale = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(err()),
        };
        n.checked_mul(scale).and_then(Span::from_seconds).ok_or_else(err)
    }
}

impl fmt::Display for Span {
    /// The largest unit that divides the span exactly, so `30d` prints as `30d`.
    #[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs a newer Rust than we require
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, scale) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3_600), ("m", 60)] {
            if self.0 % scale == 0 {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}s", self.0)
    }
}

impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (text, seconds, printed) in
            [("30d", 30 * 86_400, "30d"), ("14d", 14 * 86_400, "2w"), ("90m", 5_400, "90m"), ("1h", 3_600, "1h"), ("45s", 45, "45s"), ("2w", 14 * 86_400, "2w")]
        {
            let span: Span = text.parse().unwrap();
            assert_eq!(span.seconds(), seconds, "{text}");
            assert_eq!(span.to_string(), printed, "{text}");
        }
    }

    #[test]
    fn rejects_bad_spans() {
        for text in ["", "d", "0d", "-1d", "1.5d", "10y", "3651d", "99999999999999d", "1 d", "１d", "1é", "é", "1\u{10FFFF}"] {
            assert!(text.parse::<Span>().is_err(), "{text:?} should be refused");
        }
    }
}
