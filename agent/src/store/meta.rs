//! The `meta` tree, through typed accessors: nothing outside the store names a meta key or
//! parses a meta value.
//!
//! | key             | value                                                  |
//! |-----------------|--------------------------------------------------------|
//! | `schema`        | the on-disk format version ([`super::SCHEMA`])         |
//! | `paused`        | `1` while the person has paused all sharing, else `0`  |
//! | `agent_url`     | where the last `optin serve` listened                  |
//! | `cert_sha256`   | hex SHA-256 of the certificate it served               |
//! | `abandon_after` | its cart abandonment delay, like `24h`                 |
//! | `audit_head`    | `SEQ:HEX`, the last audit record and its hash          |
//! | `audit_head_mac`| hex MAC of the head (see [`super::seal`])              |
//! | `audit_checkpoint` | what the records pruned leave behind ([`super::audit`]) |
//! | `audit_checkpoint_mac` | its hex MAC                                    |
//! | `extension_day` | `YYYY-MM-DD COUNT`: signals the browser extension stored that UTC day |
//! | `never_share`   | the person's never-share list, `{"v":1,"included":[…],"categories":[…]}` |
//!
//! `never_share` absent is the shipped default: every sensitive topic withheld, no
//! category of the person's own. A value that does not read is refused, never taken as
//! the default, so a damaged list withholds rather than shares.
//!
//! `audit_head` and its MAC are written with each audit record, in its transaction (see
//! `append_audit`), so `optin audit --verify` notices a changed or missing last record, and
//! a head rebuilt over a shortened log. `agent_url`,
//! `cert_sha256` and `abandon_after` let commands run without an agent (the offline CLI, the native host)
//! print the same bundles and derive the same cart states as the agent would.
//! `extension_day` is written in the transaction that stores the signals it counts (see
//! `insert_signals_metered`), so a crash cannot store signals the quota did not count.

use optin_protocol::sensitive::NeverShare;
use optin_protocol::span::Span;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use time::Date;

use super::{corrupt, Result, Store, StoreError};

/// The `meta` key of the extension's count of the day.
const EXTENSION_DAY: &str = "extension_day";

/// The `meta` key of the person's never-share list.
const NEVER_SHARE: &str = "never_share";

/// The never-share list as stored: versioned, so a later format is refused, not misread.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NeverShareRecord {
    v: u32,
    #[serde(default)]
    included: std::collections::BTreeSet<String>,
    #[serde(default)]
    categories: std::collections::BTreeSet<String>,
}

fn decode_never_share(bytes: &[u8]) -> Result<NeverShare> {
    match serde_json::from_slice::<NeverShareRecord>(bytes) {
        Ok(r) if r.v == 1 => Ok(NeverShare { included: r.included, categories: r.categories }),
        Ok(r) => Err(corrupt("meta", format!("`{NEVER_SHARE}` has version {}, this optin reads 1", r.v))),
        Err(e) => Err(corrupt("meta", format!("`{NEVER_SHARE}`: {e}"))),
    }
}

/// Where the agent was last reachable, for bundles made while it does not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// Its HTTPS URL.
    pub url: String,
    /// Hex SHA-256 of its certificate.
    pub cert_sha256: String,
}

impl Store {
    fn meta(&self, name: &str) -> Result<Option<String>> {
        self.meta.get(name)?.map(|v| String::from_utf8(v.to_vec()).map_err(|_| corrupt("meta", format!("`{name}` is not UTF-8")))).transpose()
    }

    fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        self.meta.insert(name, value)?;
        self.flush()
    }

    /// Whether the person has paused all sharing.
    pub fn paused(&self) -> Result<bool> {
        match self.meta("paused")?.as_deref() {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(other) => Err(corrupt("meta", format!("`paused` is {other:?}, not 0 or 1"))),
        }
    }

    /// Pauses or resumes all sharing. Durable on return.
    pub fn set_paused(&self, paused: bool) -> Result<()> {
        self.set_meta("paused", if paused { "1" } else { "0" })
    }

    /// Where the agent last listened, if it ever ran on this store.
    pub fn address(&self) -> Result<Option<Address>> {
        Ok(self.meta("agent_url")?.zip(self.meta("cert_sha256")?).map(|(url, cert_sha256)| Address { url, cert_sha256 }))
    }

    /// Records where the agent listens. Durable on return.
    pub fn set_address(&self, address: &Address) -> Result<()> {
        self.meta.insert("agent_url", address.url.as_str())?;
        self.set_meta("cert_sha256", &address.cert_sha256)
    }

    /// The cart abandonment delay the agent last ran with.
    pub fn abandon_after(&self) -> Result<Option<Span>> {
        self.meta("abandon_after")?.map(|text| text.parse().map_err(|_| corrupt("meta", format!("`abandon_after` is {text:?}, not a span")))).transpose()
    }

    /// Records the cart abandonment delay. Durable on return.
    pub fn set_abandon_after(&self, delay: Span) -> Result<()> {
        self.set_meta("abandon_after", &delay.to_string())
    }

    /// The person's never-share list; the shipped default when they never changed it.
    pub fn never_share(&self) -> Result<NeverShare> {
        self.meta.get(NEVER_SHARE)?.map_or_else(|| Ok(NeverShare::default()), |v| decode_never_share(&v))
    }

    /// Changes the never-share list by `change`, atomically against other changes, and
    /// returns the list before and after. Durable on return.
    pub fn update_never_share(&self, change: impl Fn(&mut NeverShare)) -> Result<(NeverShare, NeverShare)> {
        loop {
            let current = self.meta.get(NEVER_SHARE)?;
            let before = current.as_deref().map_or_else(|| Ok(NeverShare::default()), decode_never_share)?;
            let mut after = before.clone();
            change(&mut after);
            let record = NeverShareRecord { v: 1, included: after.included.clone(), categories: after.categories.clone() };
            let bytes = serde_json::to_vec(&record).map_err(|e| corrupt("meta", e))?;
            if self.meta.compare_and_swap(NEVER_SHARE, current, Some(bytes))?.is_ok() {
                self.flush()?;
                return Ok((before, after));
            }
        }
    }
}

/// A feeder's daily allowance: at most `per_day` new signals on the UTC day `day`. Duplicates
/// of stored signals are not counted, since they store nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The UTC day being counted.
    pub day: Date,
    /// How many new signals that day may bring.
    pub per_day: u64,
}

/// Signals counted on one UTC day, as `meta/extension_day` holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DayCount {
    day: Date,
    count: u64,
}

impl DayCount {
    fn encode(self) -> String {
        format!("{} {}", self.day, self.count)
    }

    fn decode(bytes: &[u8]) -> Result<DayCount> {
        let damaged = || corrupt("meta", format!("`{EXTENSION_DAY}` is not `YYYY-MM-DD COUNT`"));
        let text = std::str::from_utf8(bytes).map_err(|_| damaged())?;
        let (day, count) = text.split_once(' ').ok_or_else(damaged)?;
        let day = Date::parse(day, time::macros::format_description!("[year]-[month]-[day]")).map_err(|_| damaged())?;
        Ok(DayCount { day, count: count.parse().map_err(|_| damaged())? })
    }

    /// The count for `day`: a count of another day is of no day that matters any more.
    fn on(self, day: Date) -> u64 {
        if self.day == day {
            self.count
        } else {
            0
        }
    }
}

impl Quota {
    /// Signals already counted on the quota's day, read inside a transaction.
    pub(super) fn used(&self, meta: &TransactionalTree) -> std::result::Result<u64, ConflictableTransactionError<StoreError>> {
        match meta.get(EXTENSION_DAY)? {
            Some(value) => Ok(DayCount::decode(&value).map_err(ConflictableTransactionError::Abort)?.on(self.day)),
            None => Ok(0),
        }
    }

    /// Records `count` signals on the quota's day, inside the transaction that stores them.
    pub(super) fn record(&self, meta: &TransactionalTree, count: u64) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
        meta.insert(EXTENSION_DAY, DayCount { day: self.day, count }.encode().as_str())?;
        Ok(())
    }
}

impl Store {
    /// Signals the browser extension stored on the UTC day `day`.
    pub fn extension_signals(&self, day: Date) -> Result<u64> {
        Ok(self.meta.get(EXTENSION_DAY)?.map(|value| DayCount::decode(&value)).transpose()?.map_or(0, |c| c.on(day)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        let address = Address { url: "https://127.0.0.1:7676".into(), cert_sha256: "ab".repeat(32) };
        let delay: Span = "36h".parse().expect("span");
        {
            let store = Store::open(&path).expect("open");
            assert!(!store.paused().expect("paused"), "a new store shares");
            assert_eq!(store.address().expect("address"), None);
            assert_eq!(store.abandon_after().expect("delay"), None);
            store.set_paused(true).expect("pause");
            store.set_address(&address).expect("address");
            store.set_abandon_after(delay).expect("delay");
        }
        let store = Store::open_waiting(&path, std::time::Duration::from_secs(10)).expect("reopen");
        assert!(store.paused().expect("paused"));
        assert_eq!(store.address().expect("address"), Some(address));
        assert_eq!(store.abandon_after().expect("delay"), Some(delay));
        store.set_paused(false).expect("resume");
        assert!(!store.paused().expect("paused"));
    }

    #[test]
    fn the_day_count_round_trips_and_starts_again_each_day() {
        let day = time::macros::date!(2026 - 11 - 20);
        for count in [0, 1, 2000, u64::MAX] {
            let text = DayCount { day, count }.encode();
            assert_eq!(DayCount::decode(text.as_bytes()).expect(&text), DayCount { day, count });
        }
        let counted = DayCount { day, count: 7 };
        assert_eq!(counted.on(day), 7);
        assert_eq!(counted.on(day.next_day().expect("a next day")), 0, "a new day starts from nothing");
        for damaged in ["", "2026-11-20", "2026-11-20 -1", "2026-13-01 5", "5 2026-11-20", "2026-11-20  5"] {
            assert!(matches!(DayCount::decode(damaged.as_bytes()), Err(crate::store::StoreError::Corrupt { tree: "meta", .. })), "{damaged:?}");
        }
    }

    #[test]
    fn rejects_damaged_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("open");
        store.set_meta("paused", "yes").expect("write");
        assert!(matches!(store.paused(), Err(crate::store::StoreError::Corrupt { tree: "meta", .. })));
        store.set_meta("abandon_after", "soon").expect("write");
        assert!(matches!(store.abandon_after(), Err(crate::store::StoreError::Corrupt { tree: "meta", .. })));
        store.set_meta(EXTENSION_DAY, "many").expect("write");
        assert!(matches!(store.extension_signals(time::macros::date!(2026 - 11 - 20)), Err(crate::store::StoreError::Corrupt { tree: "meta", .. })));
    }

    #[test]
    fn the_never_share_list_is_the_default_until_changed_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).expect("open");
            assert_eq!(store.never_share().expect("list"), NeverShare::default(), "every topic withheld, no path of one's own");
            let (before, after) = store
                .update_never_share(|list| {
                    list.included.insert("health".into());
                    list.categories.insert("Toys > Dolls".into());
                })
                .expect("changed");
            assert_eq!(before, NeverShare::default());
            assert_eq!((after.included.len(), after.categories.len()), (1, 1));
        }
        let store = Store::open_waiting(&path, std::time::Duration::from_secs(10)).expect("reopen");
        let list = store.never_share().expect("list");
        assert!(list.included.contains("health") && list.categories.contains("Toys > Dolls"), "{list:?}");
    }

    #[test]
    fn rejects_a_damaged_never_share_list_rather_than_reading_the_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("open");
        for damaged in ["", "[]", r#"{"v":2,"included":[]}"#, r#"{"v":1,"included":"health"}"#, r#"{"v":1,"excluded":[]}"#] {
            store.set_meta(NEVER_SHARE, damaged).expect("write");
            assert!(matches!(store.never_share(), Err(crate::store::StoreError::Corrupt { tree: "meta", .. })), "{damaged:?}");
            // Nor is a change made over it: what the person meant by the rest is unknown.
            assert!(store.update_never_share(|list| list.categories.clear()).is_err(), "{damaged:?}");
        }
    }
}
