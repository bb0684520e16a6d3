//! The one codec of store keys: every key the store writes is encoded here, and every key
//! that comes back from outside (a cursor's position) is decoded here.
//!
//! Integers are big-endian so that byte order is numeric order. Time is microseconds since
//! the Unix epoch with the sign bit flipped, so signals of one kind range-scan in time order
//! and times before 1970 still sort first.

use optin_protocol::signal::Kind;
use time::OffsetDateTime;

/// Bytes of an encoded time.
const TIME_LEN: usize = 8;

/// A decoded `signals` key: kind tag (1) · time (8) · signal id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalKey {
    /// The signal's kind.
    pub kind: Kind,
    /// When it happened, to the microsecond.
    pub at: OffsetDateTime,
    /// Its id (non-empty).
    pub id: String,
}

/// A place in the `signals` tree: the key of one signal, as a cursor carries it between
/// pages. Only this module looks inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    kind: Kind,
    bytes: Vec<u8>,
}

impl Position {
    /// A position from bytes that came back from outside (an opened cursor); `None` unless
    /// they are a `signals` key.
    pub fn from_bytes(bytes: Vec<u8>) -> Option<Position> {
        let kind = decode_signal(&bytes)?.kind;
        Some(Position { kind, bytes })
    }

    /// A position from a key the store itself read from the `signals` tree.
    pub(super) fn stored(bytes: &[u8]) -> Option<Position> {
        Position::from_bytes(bytes.to_vec())
    }

    /// The kind of the signal there.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The key bytes, to seal into a cursor.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The first key that sorts after this one.
    pub(super) fn successor(&self) -> Vec<u8> {
        let mut next = self.bytes.clone();
        next.push(0);
        next
    }
}

/// The first `signals` key of `kind`; every key of the kind starts with it.
pub fn kind_prefix(kind: Kind) -> [u8; 1] {
    [kind.tag()]
}

/// The `signals` key of a signal.
pub fn signal(kind: Kind, at: OffsetDateTime, id: &str) -> Vec<u8> {
    let mut key = signal_prefix(kind, at);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The first `signals` key of `kind` at or after `at`.
pub fn signal_prefix(kind: Kind, at: OffsetDateTime) -> Vec<u8> {
    let mut key = Vec::with_capacity(48);
    key.push(kind.tag());
    key.extend_from_slice(&time(at));
    key
}

/// Decodes a `signals` key; `None` if it is not one.
pub fn decode_signal(key: &[u8]) -> Option<SignalKey> {
    let (&tag, rest) = key.split_first()?;
    let kind = Kind::from_tag(tag)?;
    let (at, id) = rest.split_at_checked(TIME_LEN)?;
    let at = decode_time(at)?;
    let id = std::str::from_utf8(id).ok().filter(|id| !id.is_empty())?;
    Some(SignalKey { kind, at, id: id.to_owned() })
}

/// The first `purchases` key at `merchant`: merchant · 0x00. Merchants are domain names,
/// which hold no NUL, so one merchant's keys never run into another's.
pub fn purchase_prefix(merchant: &str) -> Vec<u8> {
    let mut key = merchant.as_bytes().to_vec();
    key.push(0);
    key
}

/// The `purchases` key of a purchase: merchant · 0x00 · time (8) · signal id.
pub fn purchase(merchant: &str, at: OffsetDateTime, id: &str) -> Vec<u8> {
    let mut key = purchase_at(merchant, at);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The first `purchases` key at `merchant` at or after `at`.
pub fn purchase_at(merchant: &str, at: OffsetDateTime) -> Vec<u8> {
    let mut key = purchase_prefix(merchant);
    key.extend_from_slice(&time(at));
    key
}

/// The first `purchases` key at `merchant` after every purchase at `at`: signal ids are
/// ASCII, so `time · 0xFF` sorts after every key at that time, which makes ranges that
/// exclude or include a time exactly without arithmetic on times at the edge of the calendar.
pub fn purchase_after(merchant: &str, at: OffsetDateTime) -> Vec<u8> {
    let mut key = purchase_at(merchant, at);
    key.push(0xFF);
    key
}

/// The `refusal_counts` key of a grant's refusals for one reason: grant id · 0x00 · reason.
pub fn refusal_count(grant: &str, reason: &str) -> Vec<u8> {
    [grant.as_bytes(), &[0], reason.as_bytes()].concat()
}

/// The `answers` key of an aggregate grant's answer to one query: grant id · 0x00 · the
/// query's SHA-256.
pub fn answer(grant: &str, query: &[u8; 32]) -> Vec<u8> {
    [grant.as_bytes(), &[0], query].concat()
}

/// The `requests` key of a consent request: marketer domain · 0x00 · request id. A request is
/// named by both, since two marketers may choose the same id.
pub fn request(marketer: &str, id: &str) -> Vec<u8> {
    [marketer.as_bytes(), &[0], id.as_bytes()].concat()
}

/// The `push_queue` key of a pending event: due time (8) · event id, so the queue
/// range-scans in the order events fall due.
pub fn push(at: OffsetDateTime, event_id: &str) -> Vec<u8> {
    let mut key = time(at).to_vec();
    key.extend_from_slice(event_id.as_bytes());
    key
}

/// The first `push_queue` key after every event due at or before `at`.
pub fn push_after(at: OffsetDateTime) -> Vec<u8> {
    let mut key = time(at).to_vec();
    key.push(0xFF);
    key
}

/// The `audit` key of a sequence number.
pub fn audit(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Decodes an `audit` key.
pub fn decode_audit(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

fn time(at: OffsetDateTime) -> [u8; TIME_LEN] {
    // Microseconds fit i64 for years 1970..=9999 and well before, the only ones timestamps
    // admit (protocol::timestamp refuses the rest), so the cast loses nothing.
    let micros = (at.unix_timestamp_nanos() / 1_000) as i64;
    ((micros as u64) ^ (1 << 63)).to_be_bytes()
}

fn decode_time(bytes: &[u8]) -> Option<OffsetDateTime> {
    let micros = (u64::from_be_bytes(bytes.try_into().ok()?) ^ (1 << 63)) as i64;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn signal_keys_round_trip() {
        let table = [
            (Kind::Search, datetime!(2026-11-20 10:00:00.123456 UTC), "s-1"),
            (Kind::Cart, datetime!(1969-12-31 23:59:59 UTC), "c"),
            (Kind::Purchase, datetime!(9999-12-31 23:59:59.999999 UTC), "p-long-id-0123456789"),
            (Kind::Purchase, datetime!(0001-01-01 0:00 UTC), "p"),
        ];
        for (kind, at, id) in table {
            let key = signal(kind, at, id);
            assert_eq!(decode_signal(&key), Some(SignalKey { kind, at, id: id.to_owned() }), "{kind} {at} {id}");
        }
    }

    #[test]
    fn keys_sort_by_time_within_a_kind() {
        let times = [datetime!(0001-01-01 0:00 UTC), datetime!(1969-12-31 23:59:59 UTC), datetime!(1970-01-01 0:00 UTC), datetime!(2026-11-20 10:00 UTC)];
        let keys: Vec<Vec<u8>> = times.iter().map(|&at| signal(Kind::Search, at, "x")).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(signal(Kind::Search, times[3], "x") < signal_prefix(Kind::Cart, times[0]), "kinds do not interleave");
    }

    #[test]
    fn rejects_what_is_not_a_signal_key() {
        let at = datetime!(2026-11-20 10:00 UTC);
        let good = signal(Kind::Cart, at, "c-1");
        let table: &[(&str, Vec<u8>)] = &[
            ("empty", vec![]),
            ("unknown kind tag", [&[0xEE][..], &good[1..]].concat()),
            ("time cut short", good[..5].to_vec()),
            ("no id", good[..9].to_vec()),
            ("id not UTF-8", [&good[..9], &[0xFF, 0xFE][..]].concat()),
        ];
        for (what, key) in table {
            assert_eq!(decode_signal(key), None, "{what}");
        }
    }

    #[test]
    fn positions_are_signal_keys_only() {
        let at = datetime!(2026-11-20 10:00 UTC);
        let key = signal(Kind::Cart, at, "c-1");
        let position = Position::from_bytes(key.clone()).expect("a signals key");
        assert_eq!((position.kind(), position.as_bytes()), (Kind::Cart, key.as_slice()));
        assert!(position.successor() > key && position.successor() < signal(Kind::Cart, at, "c-10"));
        assert_eq!(Position::from_bytes(audit(7).to_vec()), None, "an audit key is no position");
        assert_eq!(Position::from_bytes(kind_prefix(Kind::Cart).to_vec()), None, "a bare prefix is no position");
    }

    #[test]
    fn purchase_after_sorts_after_every_purchase_at_that_time() {
        let at = datetime!(2026-11-20 10:00 UTC);
        let after = purchase_after("shop.example", at);
        assert!(purchase("shop.example", at, "p-zzzz") < after);
        assert!(after < purchase("shop.example", at + time::Duration::microseconds(1), "p"));
    }

    #[test]
    fn audit_keys_round_trip() {
        for seq in [1, 2, 255, 256, u64::MAX] {
            assert_eq!(decode_audit(&audit(seq)), Some(seq));
        }
        assert_eq!(decode_audit(&[1, 2, 3]), None);
    }

    #[test]
    fn purchases_of_one_merchant_stay_together() {
        let at = datetime!(2026-11-20 10:00 UTC);
        let a = purchase("shop.example", at, "p");
        assert!(a.starts_with(&purchase_prefix("shop.example")));
        assert!(!a.starts_with(&purchase_prefix("shop.ex")));
        assert!(purchase_at("shop.example", at) <= a);
    }
}
