//! The push queue and each push grant's state (SPEC.md, "Push events").
//!
//! Every change that makes or ends an event is one transaction with what caused it: a grant
//! approved with its `grant.created`, a revocation with the removal of the grant's queued
//! events and its `grant.revoked`, an answer of the inbox with the event's removal or its
//! next attempt. So a crash, SIGKILL included, leaves the queue as it was before or after a
//! change, never between.
//!
//! The queue is bounded by construction and by count: a grant has at most one slice queued
//! (the next covers the same signals, so it waits until the inbox takes this one), besides
//! its `grant.created` and its end, and new grants are refused at [`MAX_QUEUED`].

use optin_protocol::scope::GrantId;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;
use time::OffsetDateTime;

use super::record::{PendingPush, PushState};
use super::{corrupt, key, tx_error, GrantRecord, Result, Seal, Store, StoreError, StoreMac};

/// Most events queued in all. A new push grant is refused beyond it, with a message; the
/// end of a grant is always queued, since revoking must not fail for want of room.
pub const MAX_QUEUED: usize = 4096;

/// Most events of one grant queued at once: its `grant.created`, one slice and its end.
pub const MAX_QUEUED_PER_GRANT: usize = 3;

/// An event as written into the queue: its MAC (32 bytes), then its JSON.
pub(super) struct Queued {
    pub(super) key: Vec<u8>,
    pub(super) bytes: Vec<u8>,
}

impl Queued {
    pub(super) fn of(mac: &StoreMac, item: &PendingPush) -> Result<Queued> {
        let json = serde_json::to_vec(item).map_err(|e| corrupt("push_queue", e))?;
        let key = key::push(item.next_at, &item.event_id);
        let mut bytes = mac.push(&key, &json).to_vec();
        bytes.extend_from_slice(&json);
        Ok(Queued { key, bytes })
    }
}

/// A queued event, if its MAC holds and it reads; `None` for one changed behind optin's back
/// or written by another version.
fn read_queued(mac: &StoreMac, key: &[u8], value: &[u8]) -> Option<PendingPush> {
    let (tag, json) = value.split_at_checked(32)?;
    if mac.check_push(key, json, Some(tag)) != Seal::Valid {
        return None;
    }
    serde_json::from_slice(json).ok()
}

fn read_state(tree: &TransactionalTree, grant: &GrantId) -> std::result::Result<PushState, ConflictableTransactionError<StoreError>> {
    match tree.get(grant.as_str())? {
        // A damaged state starts again: it holds when the next slice is due and the
        // watermark, and starting over only pushes signals the inbox may have had.
        Some(v) => Ok(serde_json::from_slice(&v).unwrap_or_default()),
        None => Ok(PushState::default()),
    }
}

fn write_state(tree: &TransactionalTree, grant: &GrantId, state: &PushState) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
    let bytes = serde_json::to_vec(state).map_err(|e| ConflictableTransactionError::Abort(corrupt("push_state", e)))?;
    tree.insert(grant.as_str(), bytes)?;
    Ok(())
}

impl Store {
    /// Errs when the queue cannot take one more event.
    pub(super) fn room_for_one(&self) -> Result<()> {
        let len = self.push_queue.len();
        if len >= MAX_QUEUED {
            return Err(StoreError::QueueFull(len));
        }
        Ok(())
    }

    /// How many events wait in all.
    pub fn push_queue_len(&self) -> usize {
        self.push_queue.len()
    }

    /// Events due at `now`, the earliest first, at most `limit`. An event that fails its MAC
    /// or does not read is taken out of the queue and said so in the log: it cannot be sent,
    /// and left in place it would stand before every later event. What it held is not lost:
    /// a slice's signals stay behind the watermark and go in the next one.
    pub fn due_pushes(&self, now: OffsetDateTime, limit: usize) -> Result<Vec<PendingPush>> {
        let mac = self.mac()?;
        let mut due = Vec::new();
        let mut damaged = Vec::new();
        for row in self.push_queue.range(..key::push_after(now)) {
            let (k, v) = row?;
            match read_queued(mac, &k, &v) {
                Some(item) => due.push(item),
                None => damaged.push(k),
            }
            if due.len() == limit {
                break;
            }
        }
        for k in damaged {
            tracing::error!(bytes = k.len(), "a queued push event fails its MAC or cannot be read: it is dropped, not sent");
            self.push_queue.remove(k)?;
        }
        Ok(due)
    }

    /// The events of one grant that wait, the earliest first. The queue is bounded, so a scan
    /// is cheap.
    pub fn queued_pushes(&self, grant: &GrantId) -> Result<Vec<PendingPush>> {
        let mac = self.mac()?;
        let mut found = Vec::new();
        for row in self.push_queue.iter() {
            let (k, v) = row?;
            // A damaged event names no grant it can be trusted for; `due_pushes` drops it.
            if let Some(item) = read_queued(mac, &k, &v).filter(|item| item.grant_id == *grant) {
                found.push(item);
            }
        }
        Ok(found)
    }

    /// Where a grant's pushes stand.
    pub fn push_state(&self, grant: &GrantId) -> Result<PushState> {
        Ok(match self.push_state.get(grant.as_str())? {
            Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
            None => PushState::default(),
        })
    }

    /// Queues an event (a slice, or a grant's expiry) and updates the grant's state with
    /// `edit`, in one transaction. Refused when the grant already has as many events queued
    /// as it may, or the queue is full (an end is always taken).
    pub fn queue_push(&self, item: &PendingPush, edit: impl Fn(&mut PushState)) -> Result<()> {
        let queued = Queued::of(self.mac()?, item)?;
        if !item.ends_grant() {
            self.room_for_one()?;
            if self.queued_pushes(&item.grant_id)?.len() >= MAX_QUEUED_PER_GRANT {
                return Err(StoreError::QueueFull(self.push_queue.len()));
            }
        }
        (&self.push_queue, &self.push_state)
            .transaction(|(queue, states)| {
                queue.insert(queued.key.as_slice(), queued.bytes.as_slice())?;
                let mut state = read_state(states, &item.grant_id)?;
                edit(&mut state);
                write_state(states, &item.grant_id, &state)
            })
            .map_err(tx_error)?;
        self.flush()
    }

    /// Updates a grant's state alone.
    pub fn queue_push_state(&self, grant: &GrantId, edit: impl Fn(&mut PushState)) -> Result<()> {
        self.push_state
            .transaction(|states| {
                let mut state = read_state(states, grant)?;
                edit(&mut state);
                write_state(states, grant, &state)
            })
            .map_err(tx_error)?;
        self.flush()
    }

    /// Stores a grant revoked, drops every event of it still queued and queues its end
    /// (`grant.revoked`, when it pushes), in one transaction: once this returns, nothing
    /// queued before is in the queue to be sent. Durable on return.
    pub fn revoke_grant(&self, grant: &GrantRecord, end: Option<&PendingPush>) -> Result<()> {
        let mac = self.mac()?;
        let value = serde_json::to_vec(grant).map_err(|e| corrupt("grants", e))?;
        let tag = mac.grant(&grant.id, &value);
        let end = end.map(|e| Queued::of(mac, e)).transpose()?;
        let (drop, _) = self.keys_of(&grant.id)?;
        (&self.grants, &self.grant_macs, &self.push_queue, &self.push_state)
            .transaction(|(grants, macs, queue, states)| {
                grants.insert(grant.id.as_str(), value.as_slice())?;
                macs.insert(grant.id.as_str(), &tag[..])?;
                for k in &drop {
                    queue.remove(k.as_slice())?;
                }
                if let Some(end) = &end {
                    queue.insert(end.key.as_slice(), end.bytes.as_slice())?;
                    let mut state = read_state(states, &grant.id)?;
                    state.ended = true;
                    write_state(states, &grant.id, &state)?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_error)?;
        self.flush()
    }

    /// Settles one attempt of `item`: it leaves the queue, `next` (its next attempt) takes
    /// its place if given, with `drop_grant` every other event of its grant leaves too, and
    /// `edit` updates the grant's state; all in one transaction. Does nothing and returns
    /// `false` when `item` is no longer queued (its grant was revoked meanwhile), so an
    /// attempt never puts back what a revocation removed.
    pub fn settle_push(&self, item: &PendingPush, next: Option<&PendingPush>, drop_grant: bool, edit: impl Fn(&mut PushState)) -> Result<bool> {
        let old = key::push(item.next_at, &item.event_id);
        let next = next.map(|n| Queued::of(self.mac()?, n)).transpose()?;
        let others = if drop_grant { self.keys_of(&item.grant_id)?.0 } else { Vec::new() };
        let settled = (&self.push_queue, &self.push_state)
            .transaction(|(queue, states)| {
                if queue.remove(old.as_slice())?.is_none() {
                    return Ok(false);
                }
                for k in &others {
                    queue.remove(k.as_slice())?;
                }
                if let Some(next) = &next {
                    queue.insert(next.key.as_slice(), next.bytes.as_slice())?;
                }
                let mut state = read_state(states, &item.grant_id)?;
                edit(&mut state);
                write_state(states, &item.grant_id, &state)?;
                Ok::<_, ConflictableTransactionError<StoreError>>(true)
            })
            .map_err(tx_error)?;
        self.flush()?;
        Ok(settled)
    }

    /// Drops every queued slice, of every grant: called around a forget, so that no signal
    /// forgotten leaves in a slice cut before. The watermarks did not move, so what else the
    /// slices held is cut again, without what was forgotten. Returns how many went.
    pub(super) fn drop_queued_slices(&self) -> Result<usize> {
        let mac = self.mac()?;
        let mut slices = Vec::new();
        for row in self.push_queue.iter() {
            let (k, v) = row?;
            if read_queued(mac, &k, &v).is_some_and(|item| item.kind == "slice.delivered") {
                slices.push(k);
            }
        }
        let dropped = self
            .push_queue
            .transaction(|queue| {
                let mut dropped = 0;
                for k in &slices {
                    dropped += usize::from(queue.remove(k)?.is_some());
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(dropped)
            })
            .map_err(tx_error)?;
        Ok(dropped)
    }

    /// The queue keys of a grant's events, and how many there are.
    fn keys_of(&self, grant: &GrantId) -> Result<(Vec<Vec<u8>>, usize)> {
        let mac = self.mac()?;
        let mut keys = Vec::new();
        for row in self.push_queue.iter() {
            let (k, v) = row?;
            if read_queued(mac, &k, &v).is_some_and(|item| item.grant_id == *grant) {
                keys.push(k.to_vec());
            }
        }
        let n = keys.len();
        Ok((keys, n))
    }
}

#[cfg(test)]
mod tests {
    use optin_protocol::scope::Terms;
    use time::macros::datetime;

    use super::*;
    use crate::store::StoreMac;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    fn store(dir: &std::path::Path) -> Store {
        Store::open_waiting(dir, std::time::Duration::from_secs(10))
            .expect("test setup")
            .keyed(StoreMac::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7; 32])))
    }

    fn grant(id: &str) -> GrantRecord {
        GrantRecord {
            v: 1,
            id: GrantId::parse(id).expect("test setup"),
            marketer: "acme.example".into(),
            purpose: "offers".into(),
            terms: Terms {
                audience: "acme.example".into(),
                kinds: "cart".parse().expect("test setup"),
                granularity: optin_protocol::scope::Granularity::Category,
                window: "30d".parse().expect("test setup"),
                expires_at: datetime!(2027-02-22 0:00 UTC),
                categories: None,
                merchants: None,
                fields: None,
                rate: None,
                noise: None,
            },
            created_at: NOW,
            revoked_at: None,
            request_id: None,
            purpose_code: None,
            push: None,
            partners_revoked: Vec::new(),
        }
    }

    fn event(grant: &GrantRecord, id: &str, kind: &str, at: OffsetDateTime) -> PendingPush {
        PendingPush { v: 1, grant_id: grant.id.clone(), event_id: id.into(), kind: kind.into(), body: "{}".into(), attempts: 0, next_at: at, through: None }
    }

    #[test]
    fn an_event_changed_or_slipped_into_the_queue_is_dropped_not_sent() {
        let dir = tempfile::tempdir().expect("test setup");
        let s = store(dir.path());
        let g = grant("g_000102030405060708090a0b");
        for (id, at) in [("s_1", NOW), ("s_2", NOW + time::Duration::SECOND), ("s_3", NOW + time::Duration::SECOND * 2)] {
            s.queue_push(&event(&g, id, "grant.expired", at), |_| {}).expect("test setup");
        }
        // One event's body edited behind optin's back; one written in without a MAC, as an
        // attacker with the store would, to have the agent sign and push it.
        let edited_key = key::push(NOW + time::Duration::SECOND, "s_2");
        let mut edited = s.push_queue.get(&edited_key).expect("read").expect("queued").to_vec();
        let at = edited.len() - 3;
        edited[at] ^= 1;
        s.push_queue.insert(&edited_key, edited).expect("edited");
        let forged = event(&g, "s_0", "slice.delivered", NOW - time::Duration::SECOND);
        s.push_queue.insert(key::push(forged.next_at, &forged.event_id), serde_json::to_vec(&forged).expect("JSON")).expect("slipped in");
        let ids = |v: Vec<PendingPush>| v.into_iter().map(|e| e.event_id).collect::<Vec<_>>();
        assert_eq!(ids(s.due_pushes(NOW + time::Duration::HOUR, 10).expect("due")), ["s_1", "s_3"]);
        assert_eq!(s.push_queue_len(), 2, "the damaged events left the queue");
        assert_eq!(ids(s.queued_pushes(&g.id).expect("queued")), ["s_1", "s_3"]);
    }

    #[test]
    fn events_fall_due_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("test setup");
        let g = grant("g_000102030405060708090a0b");
        {
            let s = store(dir.path());
            s.queue_push(&event(&g, "s_2", "slice.delivered", NOW + time::Duration::HOUR), |st| st.next_slice_at = Some(NOW)).expect("test setup");
            s.queue_push(&event(&g, "s_1", "grant.expired", NOW), |_| {}).expect("test setup");
        }
        let s = store(dir.path());
        let ids = |v: Vec<PendingPush>| v.into_iter().map(|e| e.event_id).collect::<Vec<_>>();
        assert_eq!(ids(s.due_pushes(NOW, 10).expect("test setup")), ["s_1"]);
        assert_eq!(ids(s.due_pushes(NOW + time::Duration::HOUR, 10).expect("test setup")), ["s_1", "s_2"]);
        assert_eq!(s.push_state(&g.id).expect("test setup").next_slice_at, Some(NOW));
    }

    #[test]
    fn revoking_drops_what_was_queued_and_queues_the_end() {
        let dir = tempfile::tempdir().expect("test setup");
        let s = store(dir.path());
        let (g, other) = (grant("g_000102030405060708090a0b"), grant("g_ffffffffffffffffffffffff"));
        let slice = event(&g, "s_1", "slice.delivered", NOW);
        s.queue_push(&slice, |_| {}).expect("test setup");
        s.queue_push(&event(&other, "s_2", "slice.delivered", NOW), |_| {}).expect("test setup");
        let mut revoked = g.clone();
        revoked.revoked_at = Some(NOW);
        s.revoke_grant(&revoked, Some(&event(&g, "g-revoked", "grant.revoked", NOW))).expect("test setup");
        let left: Vec<String> = s.due_pushes(NOW, 10).expect("test setup").into_iter().map(|e| e.event_id).collect();
        assert_eq!(left, ["g-revoked", "s_2"]);
        assert!(s.push_state(&g.id).expect("test setup").ended);
        // An attempt that was under way does not put back what the revocation removed.
        let retry = PendingPush { attempts: 1, next_at: NOW + time::Duration::MINUTE, ..slice.clone() };
        assert!(!s.settle_push(&slice, Some(&retry), false, |_| {}).expect("test setup"));
        assert!(s.queued_pushes(&g.id).expect("test setup").iter().all(|e| e.event_id == "g-revoked"));
    }

    #[test]
    fn a_retry_takes_the_place_of_the_attempt() {
        let dir = tempfile::tempdir().expect("test setup");
        let s = store(dir.path());
        let g = grant("g_000102030405060708090a0b");
        let first = event(&g, "s_1", "slice.delivered", NOW);
        s.queue_push(&first, |_| {}).expect("test setup");
        let retry = PendingPush { attempts: 1, next_at: NOW + time::Duration::MINUTE, ..first.clone() };
        assert!(s.settle_push(&first, Some(&retry), false, |st| st.ended = false).expect("test setup"));
        assert!(s.due_pushes(NOW, 10).expect("test setup").is_empty());
        assert_eq!(s.due_pushes(NOW + time::Duration::MINUTE, 10).expect("test setup"), std::slice::from_ref(&retry));
        assert!(s.settle_push(&retry, None, false, |_| {}).expect("test setup"));
        assert_eq!(s.push_queue_len(), 0);
    }

    #[test]
    fn rejects_events_beyond_a_grants_bound_but_never_its_end() {
        let dir = tempfile::tempdir().expect("test setup");
        let s = store(dir.path());
        let g = grant("g_000102030405060708090a0b");
        for i in 0..MAX_QUEUED_PER_GRANT {
            s.queue_push(&event(&g, &format!("s_{i}"), "slice.delivered", NOW), |_| {}).expect("test setup");
        }
        assert!(matches!(s.queue_push(&event(&g, "s_x", "slice.delivered", NOW), |_| {}), Err(StoreError::QueueFull(_))));
        s.queue_push(&event(&g, "g-expired", "grant.expired", NOW), |_| {}).expect("test setup");
    }
}
