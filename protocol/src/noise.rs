//! Differential privacy for `aggregate` slices: the privacy-loss parameter a grant spends, and
//! the noise terms it was granted with.
//!
//! Epsilon is kept as a whole number of thousandths, never a float: it is compared, summed
//! into a budget and written into receipts and slices, and every one of those must come out
//! the same on every machine and after every restart.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A privacy-loss parameter ε, in thousandths: `0.5` is `Epsilon(500)`. Written as a decimal
/// with at most three places, from 0.001 to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Epsilon(u32);

impl Epsilon {
    /// The largest epsilon accepted, in thousandths (100).
    pub const MAX_MILLI: u32 = 100_000;

    /// An epsilon of `milli` thousandths, if within 0.001..=100.
    pub const fn from_milli(milli: u32) -> Option<Epsilon> {
        if milli >= 1 && milli <= Self::MAX_MILLI {
            Some(Epsilon(milli))
        } else {
            None
        }
    }

    /// Thousandths.
    pub fn milli(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Epsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 1000, self.0 % 1000);
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            // Shortest form: 0.5, not 0.500, so one value has one spelling.
            let digits = format!("{frac:03}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// Why an epsilon was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an epsilon: write a decimal from 0.001 to 100 with at most three places, like 0.5")]
pub struct EpsilonError(pub String);

impl FromStr for Epsilon {
    type Err = EpsilonError;
    fn from_str(text: &str) -> Result<Epsilon, EpsilonError> {
        let err = || EpsilonError(text.chars().take(32).collect());
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 3 || frac.len() > 3 || !digits(whole) || !digits(frac) || (text.contains('.') && frac.is_empty()) {
            return Err(err());
        }
        let whole: u32 = whole.parse().map_err(|_| err())?;
        let frac: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<3}").parse().map_err(|_| err())? };
        Epsilon::from_milli(whole * 1000 + frac).ok_or_else(err)
    }
}

impl TryFrom<String> for Epsilon {
    type Error = EpsilonError;
    fn try_from(text: String) -> Result<Epsilon, EpsilonError> {
        text.parse()
    }
}

impl From<Epsilon> for String {
    fn from(e: Epsilon) -> String {
        e.to_string()
    }
}

/// The noise an `aggregate` grant was granted with: each count gets two-sided geometric noise
/// of parameter `epsilon`, buckets below `min_count` after noise are left out, and the grant
/// answers until the epsilons it spent reach `budget`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noise {
    /// The epsilon each noisy answer spends.
    pub epsilon: Epsilon,
    /// Buckets whose noisy count is below this are left out.
    pub min_count: u32,
    /// The total the grant may spend, ever.
    pub budget: Epsilon,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsilons_have_one_spelling() {
        for (text, milli) in [("0.5", Some(500)), ("1", Some(1000)), ("0.001", Some(1)), ("100", Some(100_000)), ("2.25", Some(2250))] {
            assert_eq!(text.parse::<Epsilon>().ok().map(Epsilon::milli), milli, "{text}");
            assert_eq!(text.parse::<Epsilon>().unwrap().to_string(), text);
        }
        for bad in ["", "0", "0.0", "0.0001", "100.001", "1.", ".5", "-1", "+1", "1e3", "NaN", "1,5", "1000"] {
            assert!(bad.parse::<Epsilon>().is_err(), "{bad:?} accepted");
        }
    }
}
