//! How often a grant may be answered: `N/day` or `N/hour`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The period a [`Rate`] counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Per {
    /// An hour.
    Hour,
    /// A day.
    Day,
}

impl Per {
    /// The period in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Per::Hour => 3_600,
            Per::Day => 86_400,
        }
    }
}

/// At most `count` answers per period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rate {
    /// Answers allowed in one period, at least 1.
    pub count: u32,
    /// The period.
    pub per: Per,
}

impl Rate {
    /// The most answers a rate allows per period.
    pub const MAX_COUNT: u32 = 100_000;
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = match self.per {
            Per::Hour => "hour",
            Per::Day => "day",
        };
        write!(f, "{}/{per}", self.count)
    }
}

/// Why a rate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a rate: write a whole number from 1 to 100000, a slash and day or hour, like 4/day")]
pub struct RateError(pub String);

impl FromStr for Rate {
    type Err = RateError;
    fn from_str(text: &str) -> Result<Rate, RateError> {
        let err = || RateError(text.chars().take(32).collect());
        let (count, per) = text.split_once('/').ok_or_else(err)?;
        if count.is_empty() || count.len() > 6 || !count.bytes().all(|b| b.is_ascii_digit()) || count.starts_with('0') {
            return Err(err());
        }
        let count: u32 = count.parse().map_err(|_| err())?;
        let per = match per {
            "hour" => Per::Hour,
            "day" => Per::Day,
            _ => return Err(err()),
        };
        (count <= Rate::MAX_COUNT).then_some(Rate { count, per }).ok_or_else(err)
    }
}

impl TryFrom<String> for Rate {
    type Error = RateError;
    fn try_from(text: String) -> Result<Rate, RateError> {
        text.parse()
    }
}

impl From<Rate> for String {
    fn from(r: Rate) -> String {
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_have_one_spelling() {
        for (text, rate) in [("1/day", Rate { count: 1, per: Per::Day }), ("24/hour", Rate { count: 24, per: Per::Hour })] {
            assert_eq!(text.parse::<Rate>(), Ok(rate));
            assert_eq!(rate.to_string(), text);
        }
        for bad in ["", "0/day", "01/day", "1/week", "1/Day", "1 /day", "-1/day", "1", "/day", "100001/day", "1/day/day"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} accepted");
        }
    }
}
