//! Group commit: the batches of signals stored at the same moment share one transaction and
//! one flush.
//!
//! A batch is stored in one transaction over six trees, and flushed (an fsync) before it is
//! acknowledged. sled runs one transaction at a time (0.34 holds a lock over the whole
//! database while one runs, so they never conflict, they queue), so batches posted at once
//! were stored one by one, each then paying its own flush, and a flush waited on the log
//! writes of the transactions behind it. So callers hand their batch to a [`Committer`]
//! instead: whoever commits takes every batch waiting (up to [`MAX_GROUP_BATCHES`] and
//! [`MAX_GROUP_SIGNALS`]), stores them in one transaction in the order they came, flushes
//! once, and answers each with its own outcomes. A failure of the transaction or the flush
//! fails every batch of the group: none is acknowledged that the flush did not cover.
//!
//! Leader and followers, with no thread of its own: a caller queues its batch, and whenever
//! no group is being committed and its batch is not yet answered, it commits what is queued
//! itself, oldest first. A batch
//! that comes alone is committed at once, waiting for no company; batches that come while a
//! group commits wait for it, and the next caller free to commit takes them all together. The
//! batching thus follows the disk's pace with no timer to tune, and costs no thread switch
//! when the store is quiet, as a committing thread of its own would on every batch.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::{Result, StoreError};

/// The most batches one group commits: enough to cover every connection of a busy feeder,
/// few enough that a group's transaction stays short.
pub(super) const MAX_GROUP_BATCHES: usize = 8;

/// The most signals one group commits, unless its first batch alone holds more (an owner's
/// batch is stored whole, in one transaction, whatever its size). Small, because what a
/// transaction churns grows with it: sled keeps every page version it replaces until it
/// ends, and the allocator keeps what each committing thread freed for that thread, so the
/// agent's memory while it ingests grows with its largest groups (eight batches of 1,000
/// tripled it).
pub(super) const MAX_GROUP_SIGNALS: usize = 4_000;

/// The most batches queued at once: a caller that finds the queue full waits for room before
/// it queues, so what waits in memory is bounded whatever the number of callers.
pub(super) const MAX_WAITING: usize = 64;

/// Batches waiting to be committed, and the answers of those committed.
pub(super) struct Committer<B, A> {
    queue: Mutex<Queue<B, A>>,
    /// Signalled when a group is answered, and when a full queue has room again.
    changed: Condvar,
}

struct Queue<B, A> {
    /// The ticket of the next batch queued: it names the batch's answer.
    next: u64,
    /// Batches not yet taken into a group, in the order they came.
    waiting: VecDeque<Waiting<B>>,
    /// Whether a caller is committing a group now.
    committing: bool,
    /// Answers not yet taken by their callers: at most one per caller, each of whom waits.
    answers: Vec<(u64, Result<A>)>,
}

struct Waiting<B> {
    ticket: u64,
    signals: usize,
    batch: B,
}

impl<B, A> Queue<B, A> {
    /// The batches at the front, up to the bounds of a group; at least one.
    fn take_group(&mut self) -> Vec<Waiting<B>> {
        let mut group: Vec<Waiting<B>> = Vec::new();
        let mut signals = 0;
        while let Some(next) = self.waiting.front() {
            if !group.is_empty() && (group.len() >= MAX_GROUP_BATCHES || signals + next.signals > MAX_GROUP_SIGNALS) {
                break;
            }
            signals += next.signals;
            group.extend(self.waiting.pop_front());
        }
        group
    }
}

impl<B, A> Committer<B, A> {
    pub(super) fn new() -> Self {
        Committer { queue: Mutex::new(Queue { next: 0, waiting: VecDeque::new(), committing: false, answers: Vec::new() }), changed: Condvar::new() }
    }

    // A poisoned lock means a thread panicked while it held the queue; every change to the
    // queue is whole before the lock is let go (a panicking commit runs without it, and is
    // answered by [`Leading`]), so the queue is still as it should be.
    fn lock(&self) -> MutexGuard<'_, Queue<B, A>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, queue: MutexGuard<'a, Queue<B, A>>) -> MutexGuard<'a, Queue<B, A>> {
        self.changed.wait(queue).unwrap_or_else(|p| p.into_inner())
    }

    /// Commits `batch` (of `signals` signals) with whatever else is queued, through `commit`,
    /// and returns its own answer once the group's commit returned. `commit` is given the
    /// group's batches in the order they came and answers each, in the same order; this
    /// caller may run it for other callers' groups before its own batch's turn comes.
    pub(super) fn submit(&self, batch: B, signals: usize, mut commit: impl FnMut(&[B]) -> Result<Vec<A>>) -> Result<A> {
        let mut queue = self.lock();
        while queue.waiting.len() >= MAX_WAITING {
            queue = self.wait(queue);
        }
        let ticket = queue.next;
        queue.next = queue.next.wrapping_add(1);
        queue.waiting.push_back(Waiting { ticket, signals, batch });
        loop {
            if let Some(at) = queue.answers.iter().position(|(t, _)| *t == ticket) {
                return queue.answers.swap_remove(at).1;
            }
            if queue.committing {
                queue = self.wait(queue);
                continue;
            }
            let was_full = queue.waiting.len() >= MAX_WAITING;
            let group = queue.take_group();
            queue.committing = true;
            drop(queue);
            if was_full {
                self.changed.notify_all();
            }
            let (tickets, batches): (Vec<u64>, Vec<B>) = group.into_iter().map(|w| (w.ticket, w.batch)).unzip();
            let leading = Leading { committer: self, tickets, own: ticket, answered: false };
            let result = commit(&batches);
            drop(batches);
            queue = leading.answer(result);
        }
    }
}

/// The caller committing a group. Its answers go out when it is done, or, should its commit
/// panic, a failure goes to every other caller of the group as the panic unwinds, so that none
/// waits for ever and the next group can be committed.
struct Leading<'a, B, A> {
    committer: &'a Committer<B, A>,
    tickets: Vec<u64>,
    /// The leader's own ticket: a panic unwinds its caller, who takes no answer.
    own: u64,
    answered: bool,
}

impl<'a, B, A> Leading<'a, B, A> {
    fn answer(mut self, result: Result<Vec<A>>) -> MutexGuard<'a, Queue<B, A>> {
        let mut queue = self.committer.lock();
        let tickets = std::mem::take(&mut self.tickets);
        match result {
            Ok(answers) if answers.len() == tickets.len() => queue.answers.extend(tickets.into_iter().zip(answers.into_iter().map(Ok))),
            // A commit that does not answer each batch acknowledges none.
            Ok(_) => queue.answers.extend(tickets.into_iter().map(|t| (t, Err(StoreError::Abandoned)))),
            Err(e) => queue.answers.extend(tickets.into_iter().map(|t| (t, Err(e.clone())))),
        }
        queue.committing = false;
        self.answered = true;
        self.committer.changed.notify_all();
        queue
    }
}

impl<B, A> Drop for Leading<'_, B, A> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut queue = self.committer.lock();
        let own = self.own;
        let failed = self.tickets.iter().filter(|t| **t != own).map(|t| (*t, Err(StoreError::Abandoned)));
        queue.answers.extend(failed);
        queue.committing = false;
        self.committer.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use optin_protocol::signal::Signal;
    use time::macros::date;

    use super::super::{Outcome, Quota, Store, StoreError};
    use super::*;

    /// A committer whose commits answer each batch with itself and record the groups.
    type Groups = Arc<Mutex<Vec<Vec<u32>>>>;

    fn recording(groups: &Groups) -> impl FnMut(&[u32]) -> Result<Vec<u32>> + '_ {
        move |batches| {
            groups.lock().expect("in a test").push(batches.to_vec());
            Ok(batches.to_vec())
        }
    }

    #[test]
    fn a_batch_alone_is_committed_at_once_by_its_caller() {
        let committer = Committer::new();
        let groups = Groups::default();
        for n in 0..3 {
            assert_eq!(committer.submit(n, 1, recording(&groups)).expect("committed"), n);
        }
        assert_eq!(*groups.lock().expect("in a test"), [vec![0], vec![1], vec![2]], "each alone, none waited for another");
    }

    /// Holds the first commit until `callers` more batches are queued behind it, and returns
    /// the groups committed.
    fn groups_behind_a_slow_commit(callers: u32, signals: usize, fail_second: bool) -> (Vec<Vec<u32>>, Vec<Result<u32>>) {
        let committer = Arc::new(Committer::<u32, u32>::new());
        let groups = Groups::default();
        let first_committing = Arc::new(Barrier::new(2));
        let first = {
            let (committer, groups, first_committing) = (committer.clone(), groups.clone(), first_committing.clone());
            std::thread::spawn(move || {
                committer.submit(0, signals, |batches| {
                    first_committing.wait();
                    // Until every other caller has queued its batch.
                    while committer.lock().waiting.len() < callers as usize {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    recording(&groups)(batches)
                })
            })
        };
        first_committing.wait();
        let others: Vec<_> = (1..=callers)
            .map(|n| {
                let (committer, groups) = (committer.clone(), groups.clone());
                std::thread::spawn(move || {
                    committer.submit(n, signals, |batches| {
                        let answers = recording(&groups)(batches)?;
                        if fail_second {
                            return Err(StoreError::Corrupt { tree: "signals", detail: "a failing disk".into() });
                        }
                        Ok(answers)
                    })
                })
            })
            .collect();
        let mut answers = vec![first.join().expect("the first caller")];
        answers.extend(others.into_iter().map(|t| t.join().expect("a caller")));
        let mut groups = groups.lock().expect("in a test").clone();
        for g in &mut groups {
            g.sort_unstable();
        }
        (groups, answers)
    }

    #[test]
    fn batches_queued_while_a_group_commits_are_committed_together_next_within_the_bounds() {
        // (callers queued behind the first, signals in each, the groups after the first's)
        let cases: &[(u32, usize, &[usize])] = &[(3, 1, &[3]), (8, 1, &[8]), (10, 1, &[8, 2]), (4, 1_500, &[2, 2]), (2, 20_000, &[1, 1])];
        for &(callers, signals, sizes) in cases {
            let (groups, answers) = groups_behind_a_slow_commit(callers, signals, false);
            assert_eq!(groups[0], [0], "{callers} callers of {signals}: the first went alone");
            let found: Vec<usize> = groups[1..].iter().map(Vec::len).collect();
            assert_eq!(found, sizes, "{callers} callers of {signals}: {groups:?}");
            for (n, answer) in answers.into_iter().enumerate() {
                assert_eq!(answer.expect("committed"), n as u32, "each caller gets its own answer");
            }
        }
    }

    #[test]
    fn a_failed_commit_fails_every_batch_of_its_group_and_only_those() {
        let (groups, answers) = groups_behind_a_slow_commit(3, 1, true);
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(*answers[0].as_ref().expect("the first group committed"), 0);
        for answer in &answers[1..] {
            assert!(matches!(answer, Err(StoreError::Corrupt { .. })), "{answer:?}");
        }
    }

    #[test]
    fn a_commit_that_panics_fails_the_rest_of_its_group_and_the_next_group_commits() {
        let committer = Arc::new(Committer::<u32, u32>::new());
        // As if another group were being committed, so that both batches queue behind it.
        committer.lock().committing = true;
        let callers: Vec<_> = (0..2)
            .map(|n| {
                let committer = committer.clone();
                std::thread::spawn(move || committer.submit(n, 1, |_| -> Result<Vec<u32>> { panic!("a commit that panics") }))
            })
            .collect();
        while committer.lock().waiting.len() < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        committer.lock().committing = false;
        committer.changed.notify_all();
        let ends: Vec<_> = callers.into_iter().map(|t| t.join()).collect();
        let panicked = ends.iter().filter(|e| e.is_err()).count();
        let abandoned = ends.iter().filter(|e| matches!(e, Ok(Err(StoreError::Abandoned)))).count();
        assert_eq!((panicked, abandoned), (1, 1), "the leader's caller sees its panic; the other is failed, not left waiting");
        assert_eq!(committer.submit(2, 1, |b| Ok(b.to_vec())).expect("the next group commits"), 2);
    }

    fn search(id: &str) -> Signal {
        let line = format!(r#"{{"id":"{id}","kind":"search","at":"2026-11-20T10:00:00Z","query":"shoes","engine":"duckduckgo.com"}}"#);
        optin_protocol::signal::parse_line(&line, &optin_protocol::signal::plain_domain).expect("a signal")
    }

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().expect("in a test");
        let store = Store::open(&dir.path().join("db")).expect("in a test");
        (dir, Arc::new(store))
    }

    /// Stores `batches` from a thread each, all at once; each thread's outcomes.
    fn at_once(store: &Arc<Store>, batches: Vec<Vec<Signal>>, quota: Option<Quota>) -> Vec<Vec<Outcome>> {
        let start = Arc::new(Barrier::new(batches.len()));
        let threads: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                let (store, start) = (store.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let before = store.signals_version();
                    let outcomes = match quota {
                        Some(q) => store.insert_signals_metered(&batch, q).expect("stored"),
                        None => store.insert(&batch, None).expect("stored"),
                    };
                    if outcomes.contains(&Outcome::Stored) {
                        assert!(store.signals_version() > before, "the version moved before the batch was acknowledged");
                    }
                    outcomes
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("a caller")).collect()
    }

    fn ids(from: usize, to: usize) -> Vec<Signal> {
        (from..to).map(|n| search(&format!("s{n}"))).collect()
    }

    #[test]
    fn disjoint_batches_stored_at_once_are_all_stored_each_with_its_own_arrival_number() {
        // (threads, signals in each batch)
        for (threads, size) in [(2, 1), (8, 300), (16, 40), (4, 4_000)] {
            let (_dir, store) = store();
            let batches = (0..threads).map(|t| ids(t * size, (t + 1) * size)).collect();
            let outcomes = at_once(&store, batches, None);
            for o in &outcomes {
                assert_eq!(o, &vec![Outcome::Stored; size], "{threads} x {size}");
            }
            let total = threads * size;
            assert_eq!(store.all_signals(None).count(), total, "{threads} x {size}");
            let numbers: Vec<u64> = store.arrived_after(None).map(|a| a.expect("an arrival").number).collect();
            assert_eq!(numbers, (0..total as u64).collect::<Vec<_>>(), "{threads} x {size}: each its own number, none skipped");
        }
    }

    #[test]
    fn an_id_in_batches_stored_at_once_is_stored_once() {
        // (threads, the ids of each thread's batch as a range, shifted by `step` per thread)
        for (threads, size, step) in [(8, 200, 0), (8, 200, 50), (6, 1_000, 500), (3, 10, 1)] {
            let (_dir, store) = store();
            let batches = (0..threads).map(|t| ids(t * step, t * step + size)).collect();
            let outcomes = at_once(&store, batches, None);
            let distinct = (threads - 1) * step + size;
            let mut stored_by_id = vec![0; distinct];
            for (t, o) in outcomes.iter().enumerate() {
                for (i, outcome) in o.iter().enumerate() {
                    match outcome {
                        Outcome::Stored => stored_by_id[t * step + i] += 1,
                        Outcome::Duplicate => {}
                        Outcome::OverQuota => panic!("no quota was given"),
                    }
                }
            }
            assert!(stored_by_id.iter().all(|n| *n == 1), "{threads} x {size} by {step}: each id stored exactly once");
            assert_eq!(store.all_signals(None).count(), distinct, "{threads} x {size} by {step}");
        }
    }

    #[test]
    fn the_extension_quota_holds_across_batches_stored_at_once() {
        let day = date!(2026 - 11 - 20);
        // (threads, signals in each batch, the day's quota)
        for (threads, size, per_day) in [(8, 300, 1_000), (4, 100, 1_000), (6, 500, 2_999), (8, 50, 0)] {
            let (_dir, store) = store();
            let batches = (0..threads).map(|t| ids(t * size, (t + 1) * size)).collect();
            let outcomes = at_once(&store, batches, Some(Quota { day, per_day }));
            let stored = outcomes.iter().flatten().filter(|o| **o == Outcome::Stored).count();
            let expected = (threads * size).min(per_day as usize);
            assert_eq!(stored, expected, "{threads} x {size} within {per_day}");
            assert_eq!(store.extension_signals(day).expect("the count"), expected as u64, "{threads} x {size} within {per_day}");
            assert_eq!(store.all_signals(None).count(), expected, "{threads} x {size} within {per_day}");
            for o in &outcomes {
                // Counted in order within each batch: once over, the rest of it is over too.
                let first_over = o.iter().position(|o| *o == Outcome::OverQuota).unwrap_or(o.len());
                assert!(o[first_over..].iter().all(|o| *o == Outcome::OverQuota), "{threads} x {size} within {per_day}");
            }
        }
    }

    #[test]
    fn one_group_sees_its_earlier_batches_duplicates_and_quota_in_order() {
        let (_dir, store) = store();
        let day = date!(2026 - 11 - 20);
        let quota = Some(Quota { day, per_day: 3 });
        let group = [
            store.prepare(&ids(0, 2), None).expect("prepared"),
            store.prepare(&ids(1, 4), quota).expect("prepared"),
            store.prepare(&[search("s0"), search("s4"), search("s5")], quota).expect("prepared"),
            store.prepare(&ids(5, 7), None).expect("prepared"),
        ];
        use Outcome::{Duplicate as D, OverQuota as Q, Stored as S};
        // s5, over the quota in the third batch, was not stored: the fourth stores it.
        assert_eq!(store.store_group(&group).expect("committed"), [vec![S, S], vec![D, S, S], vec![D, S, Q], vec![S, S]]);
        assert_eq!(store.extension_signals(day).expect("the count"), 3, "the owner's batches count nothing");
        let numbers: Vec<(u64, String)> =
            store.arrived_after(None).map(|a| a.map(|a| (a.number, a.signal.id.as_str().to_owned())).expect("an arrival")).collect();
        let expected: Vec<(u64, String)> = ["s0", "s1", "s2", "s3", "s4", "s5", "s6"].iter().enumerate().map(|(n, id)| (n as u64, (*id).to_owned())).collect();
        assert_eq!(numbers, expected, "numbered in the group's order");
    }
}
