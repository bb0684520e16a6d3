//! Storing signals, two ways.
//!
//! The owner's batches ([`Request::Ingest`](super::command::Request::Ingest): `optin ingest`,
//! `POST /v1/signals`) are all or nothing. The person or their script wrote the file; the
//! error names its line and field, they fix it and feed the same file again, and nothing of
//! a half-stored file is left to explain. Nothing limits how much they store: it is theirs.
//!
//! What the browser extension captured ([`Request::ExtensionSignals`](super::command::Request::ExtensionSignals))
//! comes from pages, which nobody fixes and anyone can write. Each signal stands alone: a bad
//! one is rejected by its place in the request and the rest are stored, and the new ones
//! count against a daily quota kept in the store, so that a page feeding signals cannot
//! fill the disk. Duplicates store nothing and count nothing.

use optin_protocol::signal::{self, limits, Signal, SignalError, SignalId};
use time::{OffsetDateTime, UtcOffset};

use super::command::{Rejection, RejectionReason, Response};
use super::{Core, CoreError};
use crate::store::{Outcome, Quota};

/// New signals the browser extension may store in one UTC day: `agent.extension_signals_per_day`
/// in `extension/limits.json`, which the extension reads too. A constant rather than the file
/// read at run time, so that the agent has no failure path for a setting fixed at build; a
/// test holds the two equal.
pub const EXTENSION_SIGNALS_PER_DAY: u64 = 2000;

impl Core {
    /// Stores an owner's NDJSON batch, all or nothing. Durable on return.
    pub(super) fn ingest(&self, ndjson: &str) -> Result<Response, CoreError> {
        let mut batch = signal::parse_batch(ndjson, &crate::merchant::registrable)?;
        super::never_share::mark(&mut batch);
        let (stored, duplicates) = self.store.insert_signals(&batch)?;
        Ok(Response::Ingested { stored, duplicates })
    }

    /// What [`Core::ingest`] would store, storing nothing.
    pub(super) fn ingest_dry_run(&self, ndjson: &str) -> Result<Response, CoreError> {
        let batch = signal::parse_batch(ndjson, &crate::merchant::registrable)?;
        let (stored, duplicates) = self.store.count_new(&batch)?;
        Ok(Response::Ingested { stored, duplicates })
    }

    /// Stores the valid, new signals the extension sent, within the day's quota, and names
    /// the others. Durable on return. Only a failure of the store fails the whole request.
    pub(super) fn ingest_extension(&self, texts: &[String], now: OffsetDateTime) -> Result<Response, CoreError> {
        if texts.len() > limits::BATCH_SIGNALS {
            return Err(CoreError::Invalid(format!("signals: at most {} at a time", limits::BATCH_SIGNALS)));
        }
        let (valid, mut rejected) = read_each(texts);
        let (places, mut signals): (Vec<usize>, Vec<Signal>) = valid.into_iter().unzip();
        super::never_share::mark(&mut signals);
        let quota = Quota { day: now.to_offset(UtcOffset::UTC).date(), per_day: EXTENSION_SIGNALS_PER_DAY };
        let outcomes = self.store.insert_signals_metered(&signals, quota)?;
        let (mut stored, mut duplicates) = (0, 0);
        for (index, outcome) in places.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Stored => stored += 1,
                Outcome::Duplicate => duplicates += 1,
                Outcome::OverQuota => rejected.push(Rejection {
                    index,
                    id: texts.get(index).and_then(|t| given_id(t)),
                    reason: RejectionReason::Quota { per_day: quota.per_day },
                }),
            }
        }
        rejected.sort_by_key(|r| r.index);
        Ok(Response::Accepted { stored, duplicates, rejected })
    }
}

/// Reads each of the extension's signals on its own: the valid ones with their place in the
/// request, and a rejection for each of the others. The agent stores by it, and the native
/// host answers by it when no signal is valid, which needs no store.
pub fn read_each(texts: &[String]) -> (Vec<(usize, Signal)>, Vec<Rejection>) {
    let mut rejected = Vec::new();
    let mut valid = Vec::with_capacity(texts.len());
    for (index, text) in texts.iter().enumerate() {
        match signal::parse_line(text, &crate::merchant::registrable) {
            Ok(signal) => valid.push((index, signal)),
            Err(SignalError { field, reason }) => {
                rejected.push(Rejection { index, id: given_id(text), reason: RejectionReason::Invalid { field, error: reason } })
            }
        }
    }
    (valid, rejected)
}

/// The id a signal was sent with, if it is a valid one, read even when the rest of the signal
/// is not (a lone surrogate in an item name is skipped unread): the extension matches a
/// rejection to what it sent by this id.
fn given_id(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Given {
        id: Option<String>,
    }
    // A derived struct would also read a list as its fields in order.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let id = serde_json::from_str::<Given>(text).ok()?.id?;
    SignalId::parse(id.trim()).map(|id| id.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::{given_id, EXTENSION_SIGNALS_PER_DAY};

    #[test]
    fn the_quota_is_the_one_in_the_shared_limits_file() {
        let limits: Value = serde_json::from_str(include_str!("../../../extension/limits.json")).expect("limits.json is JSON");
        assert_eq!(limits["agent"]["extension_signals_per_day"], json!(EXTENSION_SIGNALS_PER_DAY));
    }

    #[test]
    fn the_given_id_is_read_from_signals_that_are_not_valid() {
        for (text, id) in [
            (r#"{"id":"x-1","kind":"walk"}"#, Some("x-1")),
            (r#"{"kind":"cart","items":[{"name":"\udc00"}],"id":"x-2"}"#, Some("x-2")),
            (r#"{"id":" x-3 ","kind":"search"}"#, Some("x-3")),
            (r#"{"id":"has space"}"#, None),
            (r#"{"id":7}"#, None),
            (r#"{"id":"\udc00"}"#, None),
            (r#"{"id":"a","id":"b"}"#, None),
            (r#"["x-4"]"#, None),
            (r#"{"id":"x-5""#, None),
            ("", None),
        ] {
            assert_eq!(given_id(text).as_deref(), id, "{text}");
        }
    }
}
