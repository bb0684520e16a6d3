//! Differential privacy for `aggregate` slices: the privacy-loss parameter a grant spends, and
//! the noise terms it was granted with.
//!
//! Epsilon is kept as a whole number of thousandths, never a float: it is compared, summed
//! into a budget and written into receipts and slices, and every one of those must come out
//! the same on every machine and after every restart.
//!
//! The noise itself ([`two_sided_geometric`]) is sampled with integer arithmetic only, from
//! uniformly random bytes the caller supplies ([`Randomness`]): floating-point sampling of
//! Laplace noise leaks the true value through which doubles it can and cannot produce
//! (Mironov, "On Significance of the Least Significant Bits for Differential Privacy"),
//! and an integer sampler has no such gaps.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A privacy-loss parameter ε, in thousandths: `0.5` is `Epsilon(500)`. Written as a decimal
/// with at most three places, from 0.001 to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Epsilon(u32);

impl Epsilon {
    /// The largest epsilon accepted, in thousandths (100).
    pub const MAX_MILLI: u32 = 100_000;

    /// An epsilon of `milli` thousandths, if within 0.001..=100.
    pub const fn from_milli(milli: u32) -> Option<Epsilon> {
        if milli >= 1 && milli <= Self::MAX_MILLI {
            Some(Epsilon(milli))
        } else {
            None
        }
    }

    /// Thousandths.
    pub fn milli(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Epsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 1000, self.0 % 1000);
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            // Shortest form: 0.5, not 0.500, so one value has one spelling.
            let digits = format!("{frac:03}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// Why an epsilon was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an epsilon: write a decimal from 0.001 to 100 with at most three places, like 0.5")]
pub struct EpsilonError(pub String);

impl FromStr for Epsilon {
    type Err = EpsilonError;
    fn from_str(text: &str) -> Result<Epsilon, EpsilonError> {
        let err = || EpsilonError(text.chars().take(32).collect());
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 3 || frac.len() > 3 || !digits(whole) || !digits(frac) || (text.contains('.') && frac.is_empty()) {
            return Err(err());
        }
        // One spelling per value, the one Display writes: `0.5`, never `0.50` or `00.5`, so
        // that terms, slices and receipts stating an epsilon compare as text.
        if (whole.len() > 1 && whole.starts_with('0')) || frac.ends_with('0') {
            return Err(err());
        }
        let whole: u32 = whole.parse().map_err(|_| err())?;
        let frac: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<3}").parse().map_err(|_| err())? };
        Epsilon::from_milli(whole * 1000 + frac).ok_or_else(err)
    }
}

impl TryFrom<String> for Epsilon {
    type Error = EpsilonError;
    fn try_from(text: String) -> Result<Epsilon, EpsilonError> {
        text.parse()
    }
}

impl From<Epsilon> for String {
    fn from(e: Epsilon) -> String {
        e.to_string()
    }
}

/// The noise an `aggregate` grant was granted with: each count gets two-sided geometric noise
/// of parameter `epsilon`, buckets below `min_count` after noise are left out, and the grant
/// answers until the epsilons it spent reach `budget`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noise {
    /// The epsilon each noisy answer spends.
    pub epsilon: Epsilon,
    /// Buckets whose noisy count is below this are left out.
    pub min_count: u32,
    /// The total the grant may spend, ever.
    pub budget: Epsilon,
}

impl Noise {
    /// The wire form of the mechanism's name, as a slice states it.
    pub const MECHANISM: &'static str = "two-sided-geometric";

    /// Whether the terms hold together: each answer's epsilon within the budget. The caller
    /// names the flag or member at fault.
    pub fn check(&self) -> Result<(), NoiseError> {
        if self.epsilon > self.budget {
            return Err(NoiseError::EpsilonOverBudget { epsilon: self.epsilon, budget: self.budget });
        }
        if self.min_count > Self::MAX_MIN_COUNT {
            return Err(NoiseError::MinCount(self.min_count));
        }
        Ok(())
    }

    /// The largest `min_count` accepted.
    pub const MAX_MIN_COUNT: u32 = 1_000_000;
}

/// Why noise terms were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// One answer would spend more than the whole budget.
    #[error("epsilon {epsilon} is more than the budget {budget}: the grant could never answer")]
    EpsilonOverBudget {
        /// Each answer's epsilon.
        epsilon: Epsilon,
        /// The grant's budget.
        budget: Epsilon,
    },
    /// A minimum count beyond [`Noise::MAX_MIN_COUNT`].
    #[error("min count {0} is more than {max}", max = Noise::MAX_MIN_COUNT)]
    MinCount(u32),
}

/// What a grant has spent of its budget, in thousandths of epsilon, and what one more answer
/// would leave. Sums are of integers, so no rounding ever refunds or overcharges a spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spent(pub u64);

impl Spent {
    /// The total after one more answer under `noise`, or `None` when it would exceed the
    /// budget.
    pub fn after(self, noise: &Noise) -> Option<Spent> {
        let total = self.0.checked_add(u64::from(noise.epsilon.milli()))?;
        (total <= u64::from(noise.budget.milli())).then_some(Spent(total))
    }

    /// What is left of `budget`, in thousandths (0 when spent beyond it).
    pub fn left(self, budget: Epsilon) -> u64 {
        u64::from(budget.milli()).saturating_sub(self.0)
    }

    /// `milli` thousandths written as an epsilon is (`0`, `0.5`, `2.25`): amounts left and
    /// spent may be zero, which no [`Epsilon`] is.
    pub fn format_milli(milli: u64) -> String {
        let (whole, frac) = (milli / 1000, milli % 1000);
        if frac == 0 {
            whole.to_string()
        } else {
            format!("{whole}.{}", format!("{frac:03}").trim_end_matches('0'))
        }
    }
}

/// The randomness could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no randomness")]
pub struct NoRandomness;

/// A source of uniformly random bytes: the operating system's in the agent, a seeded
/// generator in tests.
pub trait Randomness {
    /// Fills `dest` with uniformly random bytes.
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), NoRandomness>;
}

fn next_u64(rng: &mut dyn Randomness) -> Result<u64, NoRandomness> {
    let mut bytes = [0u8; 8];
    rng.fill(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

/// A uniform integer in `0..n` (`n ≥ 1`), by rejection: draws that fall in the last partial
/// run of `n` are drawn again, so every value is equally likely.
fn uniform_below(rng: &mut dyn Randomness, n: u64) -> Result<u64, NoRandomness> {
    debug_assert!(n >= 1);
    let zone = u64::MAX - u64::MAX % n;
    loop {
        let x = next_u64(rng)?;
        if x < zone {
            return Ok(x % n);
        }
    }
}

/// True with probability `num/den` exactly (`num ≤ den`, `den ≥ 1`).
fn bernoulli(rng: &mut dyn Randomness, num: u64, den: u64) -> Result<bool, NoRandomness> {
    Ok(uniform_below(rng, den)? < num)
}

/// True with probability `exp(-num/den)` exactly, for `0 ≤ num/den ≤ 1`: Canonne, Kamath and
/// Steinke, "The Discrete Gaussian for Differential Privacy", Algorithm 1. The loop stops at
/// the first `k` where a Bernoulli(γ/k) fails, and the chance that `k` is odd is the series
/// of `exp(-γ)`.
fn bernoulli_exp_at_most_one(rng: &mut dyn Randomness, num: u64, den: u64) -> Result<bool, NoRandomness> {
    let mut k: u64 = 1;
    loop {
        // k grows past a handful with vanishing probability; saturating keeps it exact
        // for every k reached in practice and total for the rest.
        if !bernoulli(rng, num, den.saturating_mul(k))? {
            return Ok(k % 2 == 1);
        }
        k = k.saturating_add(1);
    }
}

/// True with probability `exp(-num/den)` exactly, for any `num/den ≥ 0`: one trial of
/// `exp(-1)` per whole unit, then the fraction.
fn bernoulli_exp(rng: &mut dyn Randomness, num: u64, den: u64) -> Result<bool, NoRandomness> {
    for _ in 0..num / den {
        if !bernoulli_exp_at_most_one(rng, 1, 1)? {
            return Ok(false);
        }
    }
    bernoulli_exp_at_most_one(rng, num % den, den)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One draw of the two-sided geometric (discrete Laplace) distribution for `epsilon`:
/// `P(z) = (1-α)/(1+α) · α^|z|` over all integers, with `α = exp(-ε)`. Added to a count of
/// sensitivity 1, it makes that count ε-differentially private.
///
/// Sampled exactly, with integers only: Canonne, Kamath and Steinke, "The Discrete Gaussian
/// for Differential Privacy", Algorithm 2, for the rational `ε = s/t` with `t = 1000`. A
/// geometric `X` of parameter `exp(-1/t)` is built from a uniform remainder `U < t` (kept
/// with probability `exp(-U/t)`) and a geometric count `V` of `exp(-1)` trials; `⌊X/s⌋` is
/// then geometric of parameter `exp(-s/t) = α`, and a fair sign (drawn again on a negative
/// zero) makes it two-sided.
pub fn two_sided_geometric(epsilon: Epsilon, rng: &mut dyn Randomness) -> Result<i64, NoRandomness> {
    let (s, t) = (u64::from(epsilon.milli()), 1000u64);
    let g = gcd(s, t);
    let (s, t) = (s / g, t / g);
    loop {
        let u = uniform_below(rng, t)?;
        if !bernoulli_exp(rng, u, t)? {
            continue;
        }
        let mut v: u64 = 0;
        while bernoulli_exp_at_most_one(rng, 1, 1)? {
            v = v.saturating_add(1);
        }
        let x = u.saturating_add(t.saturating_mul(v));
        let y = i64::try_from(x / s).unwrap_or(i64::MAX);
        let negative = bernoulli(rng, 1, 2)?;
        if negative && y == 0 {
            continue;
        }
        return Ok(if negative { -y } else { y });
    }
}

/// A true count with noise for `epsilon` added, clamped at zero (a count is never negative;
/// clamping is done after the noise, so it costs no privacy).
pub fn noisy_count(count: u64, epsilon: Epsilon, rng: &mut dyn Randomness) -> Result<u64, NoRandomness> {
    let z = two_sided_geometric(epsilon, rng)?;
    Ok(if z < 0 { count.saturating_sub(z.unsigned_abs()) } else { count.saturating_add(z.unsigned_abs()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsilons_have_one_spelling() {
        for (text, milli) in [("0.5", Some(500)), ("1", Some(1000)), ("0.001", Some(1)), ("100", Some(100_000)), ("2.25", Some(2250))] {
            assert_eq!(text.parse::<Epsilon>().ok().map(Epsilon::milli), milli, "{text}");
            assert_eq!(text.parse::<Epsilon>().unwrap().to_string(), text);
        }
        for bad in ["", "0", "0.0", "0.0001", "100.001", "1.", ".5", "-1", "+1", "1e3", "NaN", "1,5", "1000"] {
            assert!(bad.parse::<Epsilon>().is_err(), "{bad:?} accepted");
        }
        // Other spellings of values that have one: a leading zero, a trailing one.
        for bad in ["0.50", "00.5", "01", "1.0", "2.250", "100.000", "007.5"] {
            assert!(bad.parse::<Epsilon>().is_err(), "{bad:?} accepted");
        }
    }

    /// SplitMix64: a fixed, seeded stream of bytes, so the statistical tests below come out
    /// the same on every run.
    struct SplitMix(u64);

    impl Randomness for SplitMix {
        fn fill(&mut self, dest: &mut [u8]) -> Result<(), NoRandomness> {
            for chunk in dest.chunks_mut(8) {
                self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
            }
            Ok(())
        }
    }

    struct System(ring::rand::SystemRandom);

    impl Randomness for System {
        fn fill(&mut self, dest: &mut [u8]) -> Result<(), NoRandomness> {
            ring::rand::SecureRandom::fill(&self.0, dest).map_err(|_| NoRandomness)
        }
    }

    /// Mean, variance and the share of zeros of `n` draws for `epsilon`.
    fn moments(epsilon: &str, n: u32, rng: &mut dyn Randomness) -> (f64, f64, f64) {
        let epsilon: Epsilon = epsilon.parse().unwrap();
        let (mut sum, mut squares, mut zeros) = (0i64, 0i128, 0u32);
        for _ in 0..n {
            let z = two_sided_geometric(epsilon, rng).unwrap();
            sum += z;
            squares += i128::from(z) * i128::from(z);
            zeros += u32::from(z == 0);
        }
        let n = f64::from(n);
        let mean = sum as f64 / n;
        (mean, squares as f64 / n - mean * mean, f64::from(zeros) / n)
    }

    /// What the mechanism says: variance `2α/(1-α)²` and `P(0) = (1-α)/(1+α)`, `α = e^-ε`.
    fn stated(epsilon: f64) -> (f64, f64) {
        let a = (-epsilon).exp();
        (2.0 * a / ((1.0 - a) * (1.0 - a)), (1.0 - a) / (1.0 + a))
    }

    #[test]
    fn the_sampler_has_the_stated_mean_spread_and_zeros() {
        // 200k seeded draws per epsilon. The bounds are about eight standard errors of each
        // estimate (the mean's σ/√n, the variance's √(5/n)·σ² for a distribution with
        // Laplace-like tails, P(0)'s √(p(1-p)/n)): a wrong α, a lost sign or a biased
        // uniform moves them by far more.
        for (epsilon, value) in [("0.5", 0.5), ("1", 1.0), ("0.1", 0.1), ("2.25", 2.25)] {
            let n = 200_000;
            let (mean, var, zero) = moments(epsilon, n, &mut SplitMix(0x5eed));
            let (want_var, want_zero) = stated(value);
            let root_n = f64::from(n).sqrt();
            assert!(mean.abs() < 8.0 * want_var.sqrt() / root_n, "ε={epsilon}: mean {mean}");
            assert!((var - want_var).abs() < 8.0 * 5f64.sqrt() * want_var / root_n, "ε={epsilon}: variance {var}, stated {want_var}");
            assert!((zero - want_zero).abs() < 8.0 * (want_zero * (1.0 - want_zero)).sqrt() / root_n, "ε={epsilon}: P(0) {zero}, stated {want_zero}");
        }
    }

    #[test]
    fn the_sampler_fed_by_the_system_has_the_stated_spread() {
        // The operating system's randomness, as the agent draws it: no seed, so the bounds
        // are twelve standard errors wide, beyond any chance of a spurious failure.
        let n = 40_000;
        let (mean, var, zero) = moments("0.5", n, &mut System(ring::rand::SystemRandom::new()));
        let (want_var, want_zero) = stated(0.5);
        let root_n = f64::from(n).sqrt();
        assert!(mean.abs() < 12.0 * want_var.sqrt() / root_n, "mean {mean}");
        assert!((var - want_var).abs() < 12.0 * 5f64.sqrt() * want_var / root_n, "variance {var}, stated {want_var}");
        assert!((zero - want_zero).abs() < 12.0 * (want_zero * (1.0 - want_zero)).sqrt() / root_n, "P(0) {zero}");
    }

    #[test]
    fn the_exact_bernoulli_has_the_stated_probability() {
        let mut rng = SplitMix(7);
        for (num, den) in [(1u64, 1u64), (1, 2), (3, 1), (999, 1000), (0, 5)] {
            let n = 100_000u32;
            let hits = (0..n).filter(|_| bernoulli_exp(&mut rng, num, den).unwrap()).count();
            let p = (-(num as f64) / den as f64).exp();
            let got = hits as f64 / f64::from(n);
            assert!((got - p).abs() < 8.0 * (p * (1.0 - p)).sqrt() / f64::from(n).sqrt() + 1e-12, "exp(-{num}/{den}): {got}, stated {p}");
        }
    }

    #[test]
    fn noisy_counts_are_never_negative() {
        let mut rng = SplitMix(1);
        let epsilon: Epsilon = "0.1".parse().unwrap();
        let counts: Vec<u64> = (0..10_000).map(|_| noisy_count(0, epsilon, &mut rng).unwrap()).collect();
        assert!(counts.iter().any(|&c| c > 0), "noise reached the counts");
        assert!(counts.iter().filter(|&&c| c == 0).count() > 4000, "at least the negative half clamps to 0");
    }

    #[test]
    fn a_failing_source_fails_the_draw() {
        struct Broken;
        impl Randomness for Broken {
            fn fill(&mut self, _: &mut [u8]) -> Result<(), NoRandomness> {
                Err(NoRandomness)
            }
        }
        assert_eq!(two_sided_geometric(Epsilon::from_milli(500).unwrap(), &mut Broken), Err(NoRandomness));
    }

    #[test]
    fn the_budget_spends_whole_thousandths_and_never_past_its_end() {
        let noise = |e: &str, b: &str| Noise { epsilon: e.parse().unwrap(), min_count: 0, budget: b.parse().unwrap() };
        let n = noise("0.3", "1");
        let mut spent = Spent(0);
        let mut answers = 0;
        while let Some(next) = spent.after(&n) {
            spent = next;
            answers += 1;
        }
        // 0.3 three times is 0.9 exactly; a fourth would be 1.2.
        assert_eq!((answers, spent, spent.left(n.budget)), (3, Spent(900), 100));
        assert_eq!(Spent(0).after(&noise("1", "1")), Some(Spent(1000)), "an answer may spend the budget to its end");
        assert_eq!(Spent(u64::MAX).after(&n), None);
        assert_eq!(Spent(2000).left(n.budget), 0);
        assert_eq!([0, 500, 1000, 2250, 100].map(Spent::format_milli), ["0", "0.5", "1", "2.25", "0.1"]);
    }

    #[test]
    fn rejects_an_epsilon_over_its_budget() {
        let noise = Noise { epsilon: "2".parse().unwrap(), min_count: 5, budget: "1".parse().unwrap() };
        assert!(matches!(noise.check(), Err(NoiseError::EpsilonOverBudget { .. })));
        assert_eq!(Noise { budget: "2".parse().unwrap(), ..noise }.check(), Ok(()));
    }
}
