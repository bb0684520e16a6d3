//! The stored times of visits.
//!
//! Browsers store a visit's time as microseconds from an epoch of their own: Chromium counts
//! from 1601-01-01, Firefox from 1970-01-01. Each reader passes its epoch's distance from
//! 1970 to the functions here.

use time::OffsetDateTime;

/// The instant of a stored visit time, counted in microseconds from an epoch `epoch_us`
/// microseconds before 1970; `None` for values no real visit has.
pub(super) fn instant(raw: i64, epoch_us: i64) -> Option<OffsetDateTime> {
    let unix_us = raw.checked_sub(epoch_us)?;
    if unix_us <= 0 {
        return None;
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_us) * 1000).ok()
}

/// `since` as a stored time with the same epoch, for filtering in SQL; the lowest value
/// when there is no bound.
pub(super) fn stored_since(since: Option<OffsetDateTime>, epoch_us: i64) -> i64 {
    let Some(since) = since else { return i64::MIN };
    let raw = since.unix_timestamp_nanos().div_euclid(1000).saturating_add(i128::from(epoch_us));
    i64::try_from(raw).unwrap_or(if raw < 0 { i64::MIN } else { i64::MAX })
}
