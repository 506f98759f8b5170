//! Statistical tests of the released noise against the exact discrete Laplace distribution.
//!
//! * Through the stage: thousands of releases of one fixed count at several ε, each checked
//!   against the error bound it states at alpha. The release must state scale 1/ε; the exact
//!   probability p that discrete Laplace noise of that scale exceeds the bound must be at most
//!   alpha (and the bound the least such integer); and the number of exceedances must fit
//!   Binomial(N, p) by a two-sided exact binomial test.
//! * On the mechanism: 200 000 draws per ε binned into integers with merged tails, Pearson's
//!   chi-square against the exact probability mass function.
//!
//! Each test rejects when a p-value falls below 10⁻⁶ divided by the number of ε values it
//! checks (Bonferroni), so a correct implementation fails either test with probability at
//! most 10⁻⁶ (the binomial test, with its doubled smaller tail, is conservative). Both test
//! the noise against the scale ε-differential privacy takes, 1/ε at sensitivity 1, and fail
//! if it is off by 20% either way: the first with probability above 1 − 10⁻⁸ (above 99% at
//! each ε alone), the second in practice always (the χ² statistic's mean grows by about
//! 8 000). A stated bound one smaller fails the first test every time: the exact probability
//! of exceeding it is above alpha at every ε here.

use std::collections::BTreeMap;

use crate::noise::Mechanism;
use crate::tests::{driver, flush, query, rejected, release, tenant};
use std::time::Instant;

use pavilion_schemas::{RejectionReason, ReleaseStatus};
use statrs::distribution::{Binomial, ChiSquared, ContinuousCDF, DiscreteCDF};

/// A correct implementation fails a test with probability at most this.
const FALSE_FAILURE: f64 = 1e-6;
/// The alpha of `tests::query`.
const ALPHA: f64 = 0.05;

/// The discrete Laplace distribution of scale `s`: P(X = k) ∝ e^{-|k|/s}.
struct DiscreteLaplace {
    /// e^{-1/s}.
    q: f64,
}

impl DiscreteLaplace {
    fn new(scale: f64) -> Self {
        DiscreteLaplace {
            q: (-1.0 / scale).exp(),
        }
    }

    /// P(X = k) = (1 - q) / (1 + q) · q^|k|.
    fn pmf(&self, k: i64) -> f64 {
        (1.0 - self.q) / (1.0 + self.q) * self.q.powf(k.unsigned_abs() as f64)
    }

    /// P(X ≥ m) = q^m / (1 + q), for m ≥ 1.
    fn upper_tail(&self, m: i64) -> f64 {
        assert!(m >= 1);
        self.q.powf(m as f64) / (1.0 + self.q)
    }

    /// P(|X| > b) = 2 q^{b+1} / (1 + q), for b ≥ 0.
    fn beyond(&self, b: i64) -> f64 {
        2.0 * self.upper_tail(b + 1)
    }
}

/// Two-sided exact binomial test of `k` successes in `n` trials of probability `p`: twice the
/// smaller tail, at most 1.
fn binomial_test(k: u64, n: u64, p: f64) -> f64 {
    let b = Binomial::new(p, n).expect("binomial parameters");
    let lower = b.cdf(k);
    let upper = if k == 0 { 1.0 } else { b.sf(k - 1) };
    (2.0 * lower.min(upper)).min(1.0)
}

/// 1000 requests of tenant `acme`; releases of their count at ε 0.1, 0.5 and 1, N each.
#[test]
fn errors_beyond_the_stated_bound_are_as_rare_as_alpha_says() {
    const TRUE_COUNT: i64 = 1000;
    const N: u64 = 4000;
    const EPSILONS: [f64; 3] = [0.1, 0.5, 1.0];
    let started = Instant::now();
    let mut d = driver("      max_release_epsilon: 2");
    d.send("tenants", "acme", &tenant("acme", Some(1 << 50)));
    for i in 0..TRUE_COUNT {
        let id = format!("r{i}");
        d.send(
            "rejected",
            &id,
            &rejected("acme", &id, RejectionReason::RateLimited),
        );
    }
    flush(&mut d);

    let threshold = FALSE_FAILURE / EPSILONS.len() as f64;
    let mut failures = Vec::new();
    for epsilon in EPSILONS {
        let mut stated = None;
        let mut exceedances = 0u64;
        for i in 0..N {
            let r = release(
                &mut d,
                &query(
                    "acme",
                    &format!("eps{epsilon}-{i}"),
                    "requests",
                    &[],
                    epsilon,
                ),
            );
            assert_eq!(r.status, ReleaseStatus::Released, "{:?}", r.refusal);
            assert_eq!((r.sensitivity, r.cells.len()), (1, 1));
            let cell = &r.cells[0];
            let this = (r.scale, cell.bound);
            assert_eq!(
                *stated.get_or_insert(this),
                this,
                "one scale and bound per ε"
            );
            if (cell.value - TRUE_COUNT).abs() > cell.bound {
                exceedances += 1;
            }
        }
        let (scale, bound) = stated.expect("N > 0");
        // The requests metric has sensitivity 1: ε-differential privacy takes scale 1/ε.
        let exact_scale = 1.0 / epsilon;
        if scale != exact_scale {
            failures.push(format!("ε {epsilon}: scale {scale}, not {exact_scale}"));
        }
        let noise = DiscreteLaplace::new(exact_scale);
        let p = noise.beyond(bound);
        let p_value = binomial_test(exceedances, N, p);
        println!(
            "ε {epsilon}: scale {scale}, bound {bound}, P(|X| > bound) = {p:.5}, \
             P(|X| > bound - 1) = {:.5}, exceedances {exceedances}/{N} = {:.5}, p-value {p_value:.3e}",
            if bound > 0 { noise.beyond(bound - 1) } else { 1.0 },
            exceedances as f64 / N as f64,
        );
        if p.is_nan() || p > ALPHA {
            failures.push(format!(
                "ε {epsilon}: bound {bound} is exceeded with probability {p} > alpha {ALPHA}"
            ));
        }
        if bound > 0 && noise.beyond(bound - 1) <= ALPHA {
            failures.push(format!(
                "ε {epsilon}: bound {bound} is not the least: {} would do",
                bound - 1
            ));
        }
        if p_value < threshold {
            failures.push(format!(
                "ε {epsilon}: {exceedances} of {N} beyond the bound, expected {:.1}: p-value {p_value:e} < {threshold:e}",
                p * N as f64
            ));
        }
    }
    println!("{:.1?} for {} releases", started.elapsed(), N * 3);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// 200 000 draws of `Mechanism::new(1, ε)` at ε 0.1, 0.5 and 1 against the exact pmf.
#[test]
fn the_noise_is_the_exact_discrete_laplace_distribution() {
    const SAMPLES: usize = 200_000;
    const CHUNK: usize = 10_000;
    const EPSILONS: [f64; 3] = [0.1, 0.5, 1.0];
    let threshold = FALSE_FAILURE / EPSILONS.len() as f64;
    let mut failures = Vec::new();
    for epsilon in EPSILONS {
        let started = Instant::now();
        let mechanism = Mechanism::new(1, epsilon).expect("mechanism");
        let exact_scale = 1.0 / epsilon;
        if mechanism.scale != exact_scale {
            failures.push(format!(
                "ε {epsilon}: scale {}, not {exact_scale}",
                mechanism.scale
            ));
        }
        let noise = DiscreteLaplace::new(exact_scale);
        let n = SAMPLES as f64;
        // The largest B with every bin, and each merged tail, expecting at least 5 draws.
        let mut b = 0;
        while n * noise.pmf(b + 1) >= 5.0 && n * noise.upper_tail(b + 2) >= 5.0 {
            b += 1;
        }
        let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
        for _ in 0..SAMPLES / CHUNK {
            for x in mechanism.noisy(&[0; CHUNK]).expect("noise") {
                *counts.entry(x.clamp(-b - 1, b + 1)).or_default() += 1;
            }
        }
        // Bins -B..=B, and the tails below -B and above B in bins -B-1 and B+1.
        let expected = |bin: i64| {
            n * if bin.abs() > b {
                noise.upper_tail(b + 1)
            } else {
                noise.pmf(bin)
            }
        };
        let statistic: f64 = (-b - 1..=b + 1)
            .map(|bin| {
                let observed = counts.get(&bin).copied().unwrap_or(0) as f64;
                (observed - expected(bin)).powi(2) / expected(bin)
            })
            .sum();
        let dof = 2 * b as u64 + 2;
        let p_value = ChiSquared::new(dof as f64)
            .expect("degrees of freedom")
            .sf(statistic);
        println!(
            "ε {epsilon}: scale {}, {SAMPLES} draws in {} bins (|x| ≤ {b} and two tails), \
             χ² {statistic:.1}, dof {dof}, p-value {p_value:.3e} ({:.1?})",
            mechanism.scale,
            2 * b + 3,
            started.elapsed()
        );
        if p_value < threshold {
            failures.push(format!(
                "ε {epsilon}: χ² {statistic} with {dof} dof: p-value {p_value:e} < {threshold:e}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
