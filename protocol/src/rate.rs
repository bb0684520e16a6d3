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

    /// How many answers the rate allows in one UTC day at most.
    pub fn per_day(self) -> u64 {
        u64::from(self.count) * (Per::Day.seconds() / self.per.seconds())
    }

    /// The widest single rate that keeps both `self` and `other` in every UTC clock hour and
    /// every UTC day. Periods are fixed (a clock hour, a day from midnight), and a day holds
    /// exactly 24 clock hours, so:
    ///
    /// - same period: the smaller count;
    /// - `a/hour` and `b/day`: of `min(a, ⌊b/24⌋)/hour` (when at least 1) and `min(a, b)/day`,
    ///   the one allowing more per day, the daily one on a tie (it allows the same per day and
    ///   more within an hour of it, still within both).
    ///
    /// So `1/hour` and `24/day` come to `1/hour`, `1/hour` and `10/day` to `1/day` (ten in
    /// one hour would break `1/hour`, and no hourly rate fits within `10/day`), `10/hour` and
    /// `100/day` to `4/hour`. The result is never wider than either, in any hour or day.
    pub fn narrowest(self, other: Rate) -> Rate {
        let (hourly, daily) = match (self.per, other.per) {
            (Per::Hour, Per::Hour) | (Per::Day, Per::Day) => return Rate { count: self.count.min(other.count), per: self.per },
            (Per::Hour, Per::Day) => (self.count, other.count),
            (Per::Day, Per::Hour) => (other.count, self.count),
        };
        let by_day = Rate { count: hourly.min(daily), per: Per::Day };
        match hourly.min(daily / 24) {
            0 => by_day,
            n => {
                let by_hour = Rate { count: n, per: Per::Hour };
                if by_hour.per_day() > by_day.per_day() {
                    by_hour
                } else {
                    by_day
                }
            }
        }
    }

    /// Whether `self` allows nothing `other` does not, in any hour or day.
    pub fn is_within(self, other: Rate) -> bool {
        self.narrowest(other) == self
    }

    /// The start of the period that `unix` (seconds since the epoch) falls in, and the
    /// seconds left until the next one begins.
    pub fn period(self, unix: i64) -> (i64, u64) {
        let len = self.per.seconds() as i64;
        let start = unix.div_euclid(len) * len;
        (start, (start + len - unix) as u64)
    }
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

    fn rate(text: &str) -> Rate {
        text.parse().unwrap()
    }

    #[test]
    fn the_narrowest_rate_keeps_both_in_every_hour_and_day() {
        for (a, b, narrowest) in [
            ("2/day", "5/day", "2/day"),
            ("7/hour", "3/hour", "3/hour"),
            ("1/hour", "24/day", "1/hour"),
            ("1/hour", "10/day", "1/day"),
            ("1/hour", "48/day", "1/hour"),
            ("2/hour", "24/day", "1/hour"),
            ("10/hour", "100/day", "4/hour"),
            ("3/hour", "2/day", "2/day"),
            ("24/day", "100/hour", "24/day"),
            ("48/day", "1/hour", "1/hour"),
            ("100000/hour", "100000/day", "100000/day"),
        ] {
            let (a, b) = (rate(a), rate(b));
            assert_eq!(a.narrowest(b).to_string(), narrowest, "{a} and {b}");
            assert_eq!(b.narrowest(a).to_string(), narrowest, "{b} and {a}, in the other order");
        }
    }

    #[test]
    fn the_narrowest_rate_never_widens() {
        let rates: Vec<Rate> =
            [1, 2, 3, 10, 23, 24, 25, 48, 100, 1000].into_iter().flat_map(|count| [Rate { count, per: Per::Hour }, Rate { count, per: Per::Day }]).collect();
        for &a in &rates {
            for &b in &rates {
                let n = a.narrowest(b);
                // Most in one hour and most in one day, for each rate.
                let most = |r: Rate| match r.per {
                    Per::Hour => (u64::from(r.count), r.per_day()),
                    Per::Day => (u64::from(r.count), u64::from(r.count)),
                };
                let (nh, nd) = most(n);
                for r in [a, b] {
                    let (h, d) = most(r);
                    assert!(nh <= h && nd <= d, "{a} and {b} gave {n}, wider than {r}");
                }
                assert!(n.is_within(a) && n.is_within(b), "{a} and {b} gave {n}");
            }
        }
    }

    #[test]
    fn periods_are_utc_clock_hours_and_days() {
        let midnight = 1_795_392_000; // 2026-11-23T00:00:00Z
        let at = midnight + 3_600 * 13 + 125;
        assert_eq!(rate("1/hour").period(at), (midnight + 3_600 * 13, 3_600 - 125));
        assert_eq!(rate("1/day").period(at), (midnight, 86_400 - 3_600 * 13 - 125));
        assert_eq!(rate("1/day").period(midnight), (midnight, 86_400));
    }
}
