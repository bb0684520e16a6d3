//! The order in which signals arrived, which a pushed slice follows (SPEC.md, "How the agent
//! pushes").
//!
//! A push grant's slices hold the signals new since the inbox last took one. "New" cannot be
//! read from a signal's own time: a signal the extension held for review, or an older visit
//! imported from a browser's history, arrives after younger ones were pushed, and a time
//! watermark would pass over it for good. So every stored signal gets the next arrival number,
//! in the transaction that stores it, and a grant's watermark is the number of the last
//! signal its inbox took.
//!
//! Numbers are taken from a counter in `meta` inside that transaction: two batches stored at
//! once both touch the counter, so sled runs one after the other, and a number is committed
//! only after every smaller one. A watermark therefore never passes a number still to come.
//! Forgetting a signal removes its numbers with it, so nothing of it stays behind.

use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use super::{corrupt, decode_signal, Result, Store, StoreError};
use optin_protocol::signal::Signal;

/// The `meta` key of the next arrival number.
pub(super) const NEXT: &str = "arrival_next";

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<StoreError>>;

/// Reads the next arrival number inside a transaction.
pub(super) fn next(meta: &TransactionalTree) -> TxResult<u64> {
    match meta.get(NEXT)? {
        None => Ok(0),
        Some(v) => {
            Ok(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| ConflictableTransactionError::Abort(corrupt("meta", "arrival_next is not 8 bytes")))?))
        }
    }
}

/// Writes the next arrival number inside a transaction.
pub(super) fn set_next(meta: &TransactionalTree, next: u64) -> TxResult<()> {
    meta.insert(NEXT, &next.to_be_bytes())?;
    Ok(())
}

/// Numbers a stored signal: `arrivals` maps the number to its key, `arrival_of` back.
pub(super) fn record(arrivals: &TransactionalTree, arrival_of: &TransactionalTree, number: u64, key: &[u8]) -> TxResult<()> {
    arrivals.insert(&number.to_be_bytes(), key)?;
    arrival_of.insert(key, &number.to_be_bytes())?;
    Ok(())
}

/// Removes a forgotten signal's numbers.
pub(super) fn forget(arrivals: &TransactionalTree, arrival_of: &TransactionalTree, key: &[u8]) -> TxResult<()> {
    if let Some(number) = arrival_of.remove(key)? {
        arrivals.remove(number)?;
    }
    Ok(())
}

/// A stored signal with its arrival number.
#[derive(Debug)]
pub struct Arrived {
    /// Its arrival number.
    pub number: u64,
    /// The signal.
    pub signal: Signal,
}

impl Store {
    /// Stored signals that arrived after the number `after` (all of them when `None`), in the
    /// order they arrived.
    pub fn arrived_after(&self, after: Option<u64>) -> impl Iterator<Item = Result<Arrived>> + '_ {
        let start = after.map_or(0, |n| n.saturating_add(1));
        let rows = if after == Some(u64::MAX) { None } else { Some(self.arrivals.range(start.to_be_bytes()..)) };
        rows.into_iter().flatten().filter_map(move |row| {
            let read = || -> Result<Option<Arrived>> {
                let (number, key) = row?;
                let number = u64::from_be_bytes(number.as_ref().try_into().map_err(|_| corrupt("arrivals", "a key that is not 8 bytes"))?);
                // Forgotten in the same transaction as its number, so a missing signal means
                // only that the two were read a moment apart.
                Ok(self.signals.get(&key)?.map(|v| decode_signal(&v)).transpose()?.map(|signal| Arrived { number, signal }))
            };
            read().transpose()
        })
    }

    /// Numbers, once, the signals of a store written before arrivals were numbered, in the
    /// order of their keys (kind, then time): they all arrived before any signal stored from
    /// now on. Run when the store opens.
    pub(super) fn number_unnumbered(&self) -> Result<()> {
        if self.meta.get(NEXT)?.is_some() {
            return Ok(());
        }
        let keys: Vec<sled::IVec> = self.signals.iter().keys().collect::<std::result::Result<_, _>>()?;
        let total = keys.len() as u64;
        for (chunk_start, chunk) in keys.chunks(1000).enumerate() {
            let first = (chunk_start * 1000) as u64;
            (&self.arrivals, &self.arrival_of)
                .transaction(|(arrivals, arrival_of)| {
                    for (offset, key) in chunk.iter().enumerate() {
                        record(arrivals, arrival_of, first + offset as u64, key)?;
                    }
                    Ok::<_, ConflictableTransactionError<StoreError>>(())
                })
                .map_err(super::tx_error)?;
        }
        // Written last: a store killed midway numbers everything again on the next open,
        // over the same numbers.
        self.meta.insert(NEXT, &total.to_be_bytes())?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use optin_protocol::signal::Signal;

    use super::super::Store;

    fn search(id: &str, at: &str) -> Signal {
        let line = format!(r#"{{"id":"{id}","kind":"search","at":"{at}","query":"shoes","engine":"duckduckgo.com"}}"#);
        optin_protocol::signal::parse_line(&line, &optin_protocol::signal::plain_domain).expect("a signal")
    }

    fn arrived(store: &Store, after: Option<u64>) -> Vec<(u64, String)> {
        store.arrived_after(after).map(|a| a.map(|a| (a.number, a.signal.id.as_str().to_owned()))).collect::<Result<_, _>>().expect("arrivals")
    }

    #[test]
    fn signals_are_numbered_as_they_arrive_whatever_their_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("a store");
        store.insert_signals(&[search("b", "2026-11-20T10:00:00Z"), search("a", "2026-11-20T09:00:00Z")]).expect("stored");
        // Older, but later: it comes after, and a duplicate takes no number.
        store.insert_signals(&[search("old", "2026-01-01T00:00:00Z"), search("a", "2026-11-20T09:00:00Z")]).expect("stored");
        assert_eq!(arrived(&store, None), [(0, "b".into()), (1, "a".into()), (2, "old".into())]);
        assert_eq!(arrived(&store, Some(1)), [(2, "old".into())]);
        assert_eq!(arrived(&store, Some(u64::MAX)), []);
        store.forget(&crate::store::Forget::Id("a".into())).expect("forgotten");
        assert_eq!(arrived(&store, None), [(0, "b".into()), (2, "old".into())]);
        assert_eq!(store.arrival_of.len(), 2, "nothing of the forgotten signal is left");
        // Numbers are not reused after a forget or a reopen.
        drop(store);
        let store = Store::open_waiting(dir.path(), std::time::Duration::from_secs(10)).expect("reopened");
        store.insert_signals(&[search("c", "2026-11-21T00:00:00Z")]).expect("stored");
        assert_eq!(arrived(&store, Some(2)), [(3, "c".into())]);
    }

    #[test]
    fn a_store_from_before_arrivals_is_numbered_once_when_it_opens() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("a store");
        store.insert_signals(&[search("b", "2026-11-20T10:00:00Z"), search("a", "2026-11-20T09:00:00Z")]).expect("stored");
        // As an older optin left it: signals, and no arrivals.
        store.arrivals.clear().expect("cleared");
        store.arrival_of.clear().expect("cleared");
        store.meta.remove(super::NEXT).expect("removed");
        store.flush().expect("flushed");
        drop(store);
        let store = Store::open_waiting(dir.path(), std::time::Duration::from_secs(10)).expect("reopened");
        assert_eq!(arrived(&store, None), [(0, "a".into()), (1, "b".into())], "in key order, that is time order");
        store.insert_signals(&[search("c", "2026-11-19T00:00:00Z")]).expect("stored");
        assert_eq!(arrived(&store, Some(1)), [(2, "c".into())]);
    }
}
