//! What each `aggregate` grant has spent of its privacy budget, and the noisy answers it gave
//! (SPEC.md, "Aggregate slices").
//!
//! | tree          | key                                  | value                          |
//! |---------------|--------------------------------------|--------------------------------|
//! | `budgets`     | grant id                             | thousandths of epsilon spent (8) |
//! | `answers`     | grant id · 0x00 · query hash (32)    | [`Answer`] JSON                |
//!
//! A spend and the answer it bought are one transaction, flushed before the caller signs the
//! slice: once any of an answer could have left, its epsilon is on disk, so neither a restart
//! nor a SIGKILL refunds it. Nothing here ever lowers a spend. An answer is kept for as long
//! as its grant is stored, so the same query is answered the same, for free, instead of with
//! fresh noise that averaging would strip away.

use optin_protocol::noise::{Noise, Spent};
use optin_protocol::scope::GrantId;
use optin_protocol::slice::{Count, NoiseClaim};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::{corrupt, key, tx_error, Result, Store, StoreError};

/// A noisy answer as kept: what the slice stated, so that asking again states it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// Record version, 1.
    pub v: u32,
    /// The noisy counts, buckets below the minimum already left out.
    pub counts: Vec<Count>,
    /// The noise they carry.
    pub noise: NoiseClaim,
}

/// What [`Store::spend`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spend {
    /// The answer was kept and its epsilon spent; the total spent now.
    Spent(Spent),
    /// The same query was answered before: that answer, and nothing spent.
    Cached(Answer),
    /// One more answer would go past the budget: nothing was kept or spent.
    Exhausted(Spent),
}

fn read_spent(value: Option<sled::IVec>) -> std::result::Result<Spent, ConflictableTransactionError<StoreError>> {
    match value {
        None => Ok(Spent(0)),
        Some(v) => {
            // A damaged spend is never read as a smaller one: the grant stops answering.
            let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| ConflictableTransactionError::Abort(corrupt("budgets", "a spend that is not 8 bytes")))?;
            Ok(Spent(u64::from_be_bytes(bytes)))
        }
    }
}

fn decode_answer(bytes: &[u8]) -> Result<Answer> {
    serde_json::from_slice(bytes).map_err(|e| corrupt("answers", e))
}

impl Store {
    fn budget_trees(&self) -> Result<(sled::Tree, sled::Tree)> {
        Ok((self.db.open_tree("budgets")?, self.db.open_tree("answers")?))
    }

    /// How much `grant` has spent, in thousandths of epsilon.
    pub fn spent(&self, grant: &GrantId) -> Result<Spent> {
        let (budgets, _) = self.budget_trees()?;
        let value = budgets.get(grant.as_str())?;
        read_spent(value).map_err(|e| match e {
            ConflictableTransactionError::Abort(e) => e,
            _ => corrupt("budgets", "unreadable"),
        })
    }

    /// The answer `grant` gave to the query hashed `query`, if it gave one, durable before
    /// it is returned.
    pub fn answer(&self, grant: &GrantId, query: &[u8; 32]) -> Result<Option<Answer>> {
        let (_, answers) = self.budget_trees()?;
        let Some(kept) = answers.get(key::answer(grant.as_str(), query))? else { return Ok(None) };
        // The answer may be one another request kept a moment ago and is still flushing: it
        // must be on disk before it is served, or a crash would forget its spend while the
        // marketer holds it, and the same question would be answered with fresh noise.
        self.flush()?;
        decode_answer(&kept).map(Some)
    }

    /// Keeps `answer` as `grant`'s answer to the query hashed `query` and spends `noise`'s
    /// epsilon, in one transaction, unless the query was answered before (that answer comes
    /// back, nothing spent) or the spend would pass the budget (nothing changes). Durable on
    /// return.
    pub fn spend(&self, grant: &GrantId, query: &[u8; 32], answer: &Answer, noise: &Noise) -> Result<Spend> {
        let (budgets, answers) = self.budget_trees()?;
        let answer_key = key::answer(grant.as_str(), query);
        let bytes = serde_json::to_vec(answer).map_err(|e| corrupt("answers", e))?;
        let outcome = (&budgets, &answers)
            .transaction(|(budgets, answers)| {
                if let Some(kept) = answers.get(&answer_key)? {
                    return Ok(Err(kept));
                }
                let spent = read_spent(budgets.get(grant.as_str())?)?;
                let Some(after) = spent.after(noise) else { return Ok(Ok(Spend::Exhausted(spent))) };
                budgets.insert(grant.as_str(), &after.0.to_be_bytes()[..])?;
                answers.insert(answer_key.as_slice(), bytes.as_slice())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(Ok(Spend::Spent(after)))
            })
            .map_err(tx_error)?;
        match outcome {
            Ok(Spend::Spent(after)) => {
                self.flush()?;
                Ok(Spend::Spent(after))
            }
            Ok(other) => Ok(other),
            Err(kept) => {
                // As in `answer`: kept by a request that may not have flushed yet.
                self.flush()?;
                Ok(Spend::Cached(decode_answer(&kept)?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use optin_protocol::signal::Kind;
    use optin_protocol::slice::Mechanism;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("in a test");
        let store = Store::open(&dir.path().join("db")).expect("in a test");
        (dir, store)
    }

    fn noise(epsilon: &str, budget: &str) -> Noise {
        Noise { epsilon: epsilon.parse().expect("in a test"), min_count: 0, budget: budget.parse().expect("in a test") }
    }

    fn answer(count: u64, noise: &Noise) -> Answer {
        Answer { v: 1, counts: vec![Count { kind: Kind::Search, category: None, count }], noise: NoiseClaim::of(noise) }
    }

    #[test]
    fn a_new_query_spends_a_repeated_one_gets_its_answer_back_and_the_budget_ends() {
        let (_dir, store) = store();
        let grant = GrantId::from_bytes([1; 12]);
        let n = noise("0.4", "1");
        assert_eq!(store.spend(&grant, &[1; 32], &answer(10, &n), &n).expect("in a test"), Spend::Spent(Spent(400)));
        assert_eq!(store.spend(&grant, &[1; 32], &answer(99, &n), &n).expect("in a test"), Spend::Cached(answer(10, &n)), "the first answer, not the new draw");
        assert_eq!(store.spend(&grant, &[2; 32], &answer(11, &n), &n).expect("in a test"), Spend::Spent(Spent(800)));
        assert_eq!(store.spend(&grant, &[3; 32], &answer(12, &n), &n).expect("in a test"), Spend::Exhausted(Spent(800)));
        assert_eq!(store.answer(&grant, &[3; 32]).expect("in a test"), None, "an answer refused is not kept");
        assert_eq!(store.spend(&grant, &[2; 32], &answer(13, &n), &n).expect("in a test"), Spend::Cached(answer(11, &n)), "answers given stay free");
        assert_eq!(store.spent(&grant).expect("in a test"), Spent(800));
        assert_eq!(store.spent(&GrantId::from_bytes([2; 12])).expect("in a test"), Spent(0), "each grant has its own budget");
        assert_eq!(answer(1, &n).noise.mechanism, Mechanism::TwoSidedGeometric);
    }

    #[test]
    fn a_spend_outlives_the_store_being_opened_again() {
        let dir = tempfile::tempdir().expect("in a test");
        let grant = GrantId::from_bytes([1; 12]);
        let n = noise("0.5", "1");
        {
            let store = Store::open(&dir.path().join("db")).expect("in a test");
            store.spend(&grant, &[1; 32], &answer(10, &n), &n).expect("in a test");
        }
        let store = Store::open_waiting(&dir.path().join("db"), std::time::Duration::from_secs(10)).expect("in a test");
        assert_eq!(store.spent(&grant).expect("in a test"), Spent(500));
        assert_eq!(store.answer(&grant, &[1; 32]).expect("in a test"), Some(answer(10, &n)));
    }

    #[test]
    fn rejects_a_damaged_spend_rather_than_reading_it_as_less() {
        let (_dir, store) = store();
        let grant = GrantId::from_bytes([1; 12]);
        store.db.open_tree("budgets").expect("in a test").insert(grant.as_str(), &[1u8, 2][..]).expect("in a test");
        let n = noise("0.5", "1");
        assert!(matches!(store.spend(&grant, &[1; 32], &answer(1, &n), &n), Err(StoreError::Corrupt { tree: "budgets", .. })));
        assert!(matches!(store.spent(&grant), Err(StoreError::Corrupt { tree: "budgets", .. })));
    }
}
