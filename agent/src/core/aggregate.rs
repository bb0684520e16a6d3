//! `aggregate` slices: counts per kind and category over a scope, never a signal, and for a
//! grant made at `aggregate` the noise and the privacy budget behind them (SPEC.md,
//! "Aggregate slices").
//!
//! A marketer's aggregate answer is cut here, not page by page in [`super::slicer`]: every
//! signal the scope admits ([`Applied::admits`], so filters and exclusions hold) is counted
//! into its bucket, each count gets two-sided geometric noise, buckets below the grant's
//! `min_count` are left out, and the answer is kept with its spend ([`Store::spend`]) before
//! it is signed. The same query (the same applied scope) is answered from what was kept.

use std::collections::BTreeMap;

use optin_protocol::noise::{self, Epsilon, NoRandomness, Noise, NoiseError, Randomness, Spent};
use optin_protocol::scope::{Applied, GrantId, Granularity, SliceQuery, Terms};
use optin_protocol::signal::Kind;
use optin_protocol::slice::{Count, NoiseClaim, SliceClaims};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::marketer::{slice_claims, Refusal};
use super::{Core, CoreError};
use crate::keys::GrantKeys;
use crate::store::budget::{Answer, Spend};
use crate::store::{GrantRecord, Store, StoreError};

/// The noise an aggregate grant gets when the person does not choose: each answer spends
/// 0.5, the budget pays for six answers in the grant's life, and buckets below 5 after noise
/// are left out. SPEC.md ("Aggregate slices") says why.
pub const DEFAULT_NOISE: Noise = Noise {
    epsilon: match Epsilon::from_milli(500) {
        Some(e) => e,
        None => panic!("0.5 is an epsilon"),
    },
    min_count: 5,
    budget: match Epsilon::from_milli(3000) {
        Some(e) => e,
        None => panic!("3 is an epsilon"),
    },
};

/// The person's choice of noise for an aggregate grant (`--epsilon`, `--budget`,
/// `--min-count`); what is not chosen takes [`DEFAULT_NOISE`]'s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseChoice {
    /// What each answer spends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<Epsilon>,
    /// What the grant may spend in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Epsilon>,
    /// Buckets below this after noise are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<u32>,
}

impl NoiseChoice {
    /// Whether nothing was chosen.
    pub fn is_empty(&self) -> bool {
        *self == NoiseChoice::default()
    }

    /// The noise a grant at `granularity` gets, or why it cannot be made: only an aggregate
    /// grant has noise (and always has), an answer may not cost more than the whole budget,
    /// and an aggregate grant is never pushed (`pushed`), since each push would spend on a
    /// schedule the marketer's inbox, not the person, would set.
    pub fn decide(self, granularity: Granularity, pushed: bool) -> Result<Option<Noise>, CoreError> {
        if granularity != Granularity::Aggregate {
            if !self.is_empty() {
                return Err(CoreError::Invalid(format!(
                    "epsilon, budget and min count (--epsilon, --budget, --min-count) apply only to granularity aggregate, not {granularity}"
                )));
            }
            return Ok(None);
        }
        if pushed {
            return Err(CoreError::Invalid(
                "push (--push): an aggregate grant is not pushed, since every push would spend its budget on a schedule; its marketer pulls answers".into(),
            ));
        }
        let noise = Noise {
            epsilon: self.epsilon.unwrap_or(DEFAULT_NOISE.epsilon),
            min_count: self.min_count.unwrap_or(DEFAULT_NOISE.min_count),
            budget: self.budget.unwrap_or(DEFAULT_NOISE.budget),
        };
        noise.check().map_err(|e| {
            CoreError::Invalid(match e {
                NoiseError::EpsilonOverBudget { epsilon, budget } => {
                    format!("epsilon (--epsilon) {epsilon} is more than the budget (--budget) {budget}: the grant could never answer")
                }
                other => format!("min count (--min-count): {other}"),
            })
        })?;
        Ok(Some(noise))
    }
}

/// An aggregate grant's privacy budget as `optin grants` shows it: amounts in epsilon,
/// written as epsilons are (`2.5`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetView {
    /// What each new answer spends.
    pub epsilon: Epsilon,
    /// What the grant may spend in all.
    pub total: Epsilon,
    /// What it has spent.
    pub spent: String,
    /// What is left.
    pub left: String,
    /// How many more new answers that pays for.
    pub answers_left: u64,
}

/// The operating system's randomness, as the noise draws it.
struct SystemRandomness(SystemRandom);

impl Randomness for SystemRandomness {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), NoRandomness> {
        self.0.fill(dest).map_err(|_| NoRandomness)
    }
}

/// The exact count of every bucket the scope admits a signal into, in kind order, then
/// category order (signals without a category first).
pub fn count(store: &Store, applied: &Applied) -> Result<Vec<Count>, StoreError> {
    let mut buckets: BTreeMap<(u8, Option<String>), (Kind, u64)> = BTreeMap::new();
    for kind in applied.kinds.iter() {
        for row in store.scan(kind, applied.since, applied.until, None) {
            let (_, signal) = row?;
            if applied.admits(&signal) {
                buckets.entry((kind.tag(), signal.category.clone())).or_insert((kind, 0)).1 += 1;
            }
        }
    }
    Ok(buckets.into_iter().map(|((_, category), (kind, count))| Count { kind, category, count }).collect())
}

/// `exact` with noise for `noise` added to each count, and the buckets below its minimum
/// left out.
pub fn add_noise(exact: &[Count], noise: &Noise, rng: &mut dyn Randomness) -> Result<Vec<Count>, NoRandomness> {
    let mut noisy = Vec::with_capacity(exact.len());
    for bucket in exact {
        let count = noise::noisy_count(bucket.count, noise.epsilon, rng)?;
        if count >= u64::from(noise.min_count) {
            noisy.push(Count { count, ..bucket.clone() });
        }
    }
    Ok(noisy)
}

/// What identifies a query for its kept answer: the SHA-256 of the applied scope as JSON,
/// without its page size, which counts do not have, and of the person's never-share list,
/// which the scope applies but does not state. Kinds, bounds, filters and the list are in it,
/// so any change to what would be counted is a new query: a topic excluded after an answer
/// is not served again inside the kept one.
fn query_key(applied: &Applied) -> Result<[u8; 32], Refusal> {
    let scope = Applied { limit: 0, ..applied.clone() };
    let list = (&applied.never_share.included, &applied.never_share.categories);
    let json = serde_json::to_vec(&(scope, list)).map_err(|e| Refusal::Internal(e.to_string()))?;
    Ok(optin_protocol::sha256(&json))
}

impl Core {
    /// The claims of a slice a marketer is served: an aggregate answer when the scope is
    /// `aggregate`, spending the grant's budget when it has noise, or the page of items
    /// [`Core::claims`] cuts otherwise.
    pub(super) fn served_claims(
        &self,
        record: &GrantRecord,
        terms: &Terms,
        keys: &GrantKeys,
        query: &SliceQuery,
        now: OffsetDateTime,
    ) -> Result<SliceClaims, Refusal> {
        let applied = self.applied(terms, query, now)?;
        if applied.granularity != Granularity::Aggregate {
            return self.claims(record, terms, keys, query, now);
        }
        if query.cursor.is_some() {
            return Err(Refusal::Invalid { field: "cursor".into(), reason: "an aggregate slice is one answer, never paged".into() });
        }
        // The grant's own noise, whatever the token: a caveat cannot change it.
        let Some(noise) = record.terms.noise else {
            // A grant that allows items (raw or category) asked at aggregate: exact counts
            // tell less than the items it would serve.
            return self.exact_aggregate_claims(record, terms, keys, applied, now);
        };
        let key = query_key(&applied)?;
        let internal = |e: StoreError| Refusal::Internal(e.to_string());
        let answer = match self.store.answer(&record.id, &key).map_err(internal)? {
            Some(kept) => kept,
            None => {
                let exact = count(&self.store, &applied).map_err(internal)?;
                let counts = add_noise(&exact, &noise, &mut SystemRandomness(SystemRandom::new())).map_err(|_| Refusal::Internal("no randomness".into()))?;
                let drawn = Answer { v: 1, counts, noise: NoiseClaim::of(&noise) };
                match self.store.spend(&record.id, &key, &drawn, &noise).map_err(internal)? {
                    Spend::Spent(total) => {
                        tracing::info!(grant = %record.id, spent_milli = total.0, "aggregate answer spent its epsilon");
                        drawn
                    }
                    // Another request for the same query got there first: its answer.
                    Spend::Cached(kept) => kept,
                    Spend::Exhausted(_) => return Err(Refusal::BudgetExhausted),
                }
            }
        };
        let claims = slice_claims(record, terms, keys, applied, Vec::new(), None, now)?;
        Ok(SliceClaims { counts: Some(answer.counts), noise: Some(answer.noise), ..claims })
    }

    /// Refuses, before the rate counts the request, a new aggregate question that the
    /// grant's budget cannot pay for: refused for what it asks, it is no slice (SPEC.md,
    /// "Rate"). [`Store::spend`] decides again, atomically, when the answer is kept; two
    /// requests racing for the last epsilon may both pass here, and the one refused there
    /// has taken a slice of the rate, never the other way round.
    pub(super) fn refuse_unaffordable(&self, record: &GrantRecord, applied: &Applied) -> Result<(), Refusal> {
        let Some(noise) = record.terms.noise else { return Ok(()) };
        if applied.granularity != Granularity::Aggregate {
            return Ok(());
        }
        let internal = |e: StoreError| Refusal::Internal(e.to_string());
        if self.store.answer(&record.id, &query_key(applied)?).map_err(internal)?.is_some() {
            return Ok(());
        }
        match self.store.spent(&record.id).map_err(internal)?.after(&noise) {
            Some(_) => Ok(()),
            None => Err(Refusal::BudgetExhausted),
        }
    }

    /// What `optin grants` shows of a grant's budget: `None` for a grant without noise.
    pub(super) fn budget_view(&self, grant: &GrantId, terms: &Terms) -> Result<Option<BudgetView>, CoreError> {
        let Some(noise) = terms.noise else { return Ok(None) };
        let spent = self.store.spent(grant)?;
        let left = spent.left(noise.budget);
        Ok(Some(BudgetView {
            epsilon: noise.epsilon,
            total: noise.budget,
            spent: Spent::format_milli(spent.0),
            left: Spent::format_milli(left),
            answers_left: left / u64::from(noise.epsilon.milli()),
        }))
    }

    /// The exact counts of an aggregate scope, with no noise: for a grant that allows items,
    /// and for the person's own preview, which is never served and spends nothing.
    pub(super) fn exact_aggregate_claims(
        &self,
        record: &GrantRecord,
        terms: &Terms,
        keys: &GrantKeys,
        applied: Applied,
        now: OffsetDateTime,
    ) -> Result<SliceClaims, Refusal> {
        let counts = count(&self.store, &applied).map_err(|e| Refusal::Internal(e.to_string()))?;
        let claims = slice_claims(record, terms, keys, applied, Vec::new(), None, now)?;
        Ok(SliceClaims { counts: Some(counts), noise: None, ..claims })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u8);

    impl Randomness for Counter {
        fn fill(&mut self, dest: &mut [u8]) -> Result<(), NoRandomness> {
            for b in dest {
                self.0 = self.0.wrapping_mul(37).wrapping_add(11);
                *b = self.0;
            }
            Ok(())
        }
    }

    #[test]
    fn noise_is_chosen_only_for_aggregate_grants_and_within_its_budget() {
        let e = |t: &str| Some(t.parse::<Epsilon>().expect("in a test"));
        let invalid = |choice: NoiseChoice, g, pushed| match choice.decide(g, pushed) {
            Err(CoreError::Invalid(message)) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(NoiseChoice::default().decide(Granularity::Aggregate, false).expect("in a test"), Some(DEFAULT_NOISE));
        assert_eq!(NoiseChoice::default().decide(Granularity::Raw, false).expect("in a test"), None);
        let chosen = NoiseChoice { epsilon: e("1"), budget: e("1"), min_count: Some(0) };
        assert_eq!(
            chosen.decide(Granularity::Aggregate, false).expect("in a test"),
            Some(Noise { epsilon: "1".parse().expect("in a test"), min_count: 0, budget: "1".parse().expect("in a test") })
        );
        assert!(invalid(NoiseChoice { epsilon: e("2"), budget: e("1"), min_count: None }, Granularity::Aggregate, false).contains("--epsilon"));
        assert!(
            invalid(NoiseChoice { epsilon: e("4"), ..NoiseChoice::default() }, Granularity::Aggregate, false).contains("more than the budget (--budget) 3"),
            "the default budget counts"
        );
        assert!(invalid(NoiseChoice { min_count: Some(2_000_000), ..NoiseChoice::default() }, Granularity::Aggregate, false).contains("--min-count"));
        assert!(invalid(NoiseChoice { epsilon: e("1"), ..NoiseChoice::default() }, Granularity::Category, false).contains("only to granularity aggregate"));
        assert!(invalid(NoiseChoice::default(), Granularity::Aggregate, true).contains("--push"));
    }

    #[test]
    fn buckets_below_the_minimum_after_noise_are_left_out() {
        let bucket = |category: &str, count| Count { kind: Kind::Search, category: Some(category.into()), count };
        let exact = [bucket("A", 1000), bucket("B", 0), bucket("C", 3)];
        let noise = Noise { epsilon: "100".parse().expect("in a test"), min_count: 500, budget: "100".parse().expect("in a test") };
        // At epsilon 100 the noise is zero but for a chance of e^-100: the counts stay.
        let noisy = add_noise(&exact, &noise, &mut Counter(0)).expect("in a test");
        assert_eq!(noisy, [bucket("A", 1000)]);
        let none = Noise { min_count: 0, ..noise };
        assert_eq!(add_noise(&exact, &none, &mut Counter(0)).expect("in a test"), exact, "a minimum of 0 keeps every bucket, zero counts too");
    }
}
