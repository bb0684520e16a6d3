//! How many slices each grant with a rate served in the current UTC clock hour and day
//! (SPEC.md, "Rate").
//!
//! | tree    | key      | value                                                          |
//! |---------|----------|----------------------------------------------------------------|
//! | `rates` | grant id | hour start (8) · slices that hour (8) · day start (8) · slices that day (8) |
//!
//! Starts are seconds since the Unix epoch, every number big-endian. A slice is counted
//! before it is signed, and the count is flushed first, so neither a restart nor a SIGKILL
//! gives a grant back slices it has had. Both periods are counted whatever the grant's own
//! rate, since a token's `rate` caveat may narrow a daily rate to an hourly one.

use optin_protocol::rate::{Per, Rate};
use optin_protocol::scope::GrantId;
use sled::transaction::ConflictableTransactionError;

use super::{corrupt, tx_error, Result, Store};

/// What [`Store::take_slice`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// The slice is counted: it may be served.
    Taken,
    /// The rate is used up until the period ends, this many seconds from now.
    Limited {
        /// Seconds until the next period begins.
        retry_after: u64,
    },
}

/// The slices of one grant in the current hour and day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Used {
    hour: (i64, u64),
    day: (i64, u64),
}

impl Used {
    fn decode(bytes: &[u8]) -> Option<Used> {
        let n = |i: usize| bytes.get(i * 8..i * 8 + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
        (bytes.len() == 32).then_some(())?;
        Some(Used { hour: (n(0)? as i64, n(1)?), day: (n(2)? as i64, n(3)?) })
    }

    fn encode(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, v) in [self.hour.0 as u64, self.hour.1, self.day.0 as u64, self.day.1].into_iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
        }
        out
    }

    /// The count of the period starting at `start`: the one kept if it is that period's, else
    /// none yet.
    fn in_period(kept: (i64, u64), start: i64) -> u64 {
        if kept.0 == start {
            kept.1
        } else {
            0
        }
    }
}

impl Store {
    fn rates(&self) -> Result<sled::Tree> {
        Ok(self.db.open_tree("rates")?)
    }

    /// Counts one slice of `grant` at `unix` (seconds since the epoch) against `rate`, or
    /// says when the next one may be served. The count is on disk when this returns
    /// [`Take::Taken`].
    pub fn take_slice(&self, grant: &GrantId, rate: Rate, unix: i64) -> Result<Take> {
        let tree = self.rates()?;
        let hour = Rate { count: 1, per: Per::Hour }.period(unix);
        let day = Rate { count: 1, per: Per::Day }.period(unix);
        let taken = tree.transaction(|t| {
            let used = match t.get(grant.as_str())? {
                None => Used::default(),
                // A damaged count is never read as a smaller one: the grant is refused.
                Some(v) => Used::decode(&v).ok_or_else(|| ConflictableTransactionError::Abort(corrupt("rates", "a count that is not 32 bytes")))?,
            };
            let now = Used { hour: (hour.0, Used::in_period(used.hour, hour.0)), day: (day.0, Used::in_period(used.day, day.0)) };
            let (count, left) = match rate.per {
                Per::Hour => (now.hour.1, hour.1),
                Per::Day => (now.day.1, day.1),
            };
            if count >= u64::from(rate.count) {
                return Ok(Take::Limited { retry_after: left });
            }
            let next = Used { hour: (now.hour.0, now.hour.1 + 1), day: (now.day.0, now.day.1 + 1) };
            t.insert(grant.as_str(), &next.encode()[..])?;
            Ok(Take::Taken)
        });
        let taken = taken.map_err(tx_error)?;
        if taken == Take::Taken {
            tree.flush()?;
        }
        Ok(taken)
    }

    /// Slices `grant` served in the UTC hour and the UTC day of `unix`.
    pub fn slices_used(&self, grant: &GrantId, unix: i64) -> Result<(u64, u64)> {
        let Some(v) = self.rates()?.get(grant.as_str())? else { return Ok((0, 0)) };
        let used = Used::decode(&v).ok_or_else(|| corrupt("rates", "a count that is not 32 bytes"))?;
        let hour = Rate { count: 1, per: Per::Hour }.period(unix).0;
        let day = Rate { count: 1, per: Per::Day }.period(unix).0;
        Ok((Used::in_period(used.hour, hour), Used::in_period(used.day, day)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("store")).expect("store opens");
        (dir, store)
    }

    const MIDNIGHT: i64 = 1_795_392_000; // 2026-11-23T00:00:00Z

    #[test]
    fn a_rate_counts_slices_per_clock_hour_and_day() {
        let (_dir, store) = store();
        let g = GrantId::parse("g_000102030405060708090a0b").expect("grant id");
        let two_a_day: Rate = "2/day".parse().expect("rate");
        let one_an_hour: Rate = "1/hour".parse().expect("rate");
        // (rate, seconds after midnight, what the store answers)
        let steps = [
            (two_a_day, 60, Take::Taken),
            (two_a_day, 120, Take::Taken),
            (two_a_day, 180, Take::Limited { retry_after: 86_400 - 180 }),
            (two_a_day, 86_399, Take::Limited { retry_after: 1 }),
            (two_a_day, 86_400, Take::Taken),
            // The day's count goes on under another rate; the hour's too.
            (one_an_hour, 86_400 + 10, Take::Limited { retry_after: 3_590 }),
            (one_an_hour, 86_400 + 3_600, Take::Taken),
            (two_a_day, 86_400 + 3_601, Take::Limited { retry_after: 86_400 - 3_601 }),
        ];
        for (i, (rate, at, expected)) in steps.into_iter().enumerate() {
            assert_eq!(store.take_slice(&g, rate, MIDNIGHT + at).expect("take"), expected, "step {i}: {rate} at +{at}s");
        }
        assert_eq!(store.slices_used(&g, MIDNIGHT + 86_400 + 3_601).expect("used"), (1, 2));
    }

    #[test]
    fn counts_outlive_the_store_being_closed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let g = GrantId::parse("g_000102030405060708090a0b").expect("grant id");
        let rate: Rate = "1/day".parse().expect("rate");
        {
            let store = Store::open(&dir.path().join("store")).expect("store opens");
            assert_eq!(store.take_slice(&g, rate, MIDNIGHT).expect("take"), Take::Taken);
        }
        let store = Store::open_waiting(&dir.path().join("store"), std::time::Duration::from_secs(10)).expect("store opens again");
        assert_eq!(store.take_slice(&g, rate, MIDNIGHT + 1).expect("take"), Take::Limited { retry_after: 86_399 });
    }
}
