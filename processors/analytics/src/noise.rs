//! The noise: OpenDP's discrete Laplace mechanism over a vector of integer aggregates, its
//! privacy loss by OpenDP's own privacy map, and its error bound by OpenDP's accuracy function.
//! Nothing here samples or bounds by itself.

use opendp::core::Measurement;
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_laplace;
use opendp::measures::MaxDivergence;
use opendp::metrics::L1Distance;

/// Why a mechanism could not be built or run.
#[derive(Debug, thiserror::Error)]
#[error("OpenDP: {0}")]
pub struct NoiseError(String);

impl From<opendp::error::Error> for NoiseError {
    fn from(e: opendp::error::Error) -> Self {
        NoiseError(e.to_string())
    }
}

type Laplace = Measurement<VectorDomain<AtomDomain<i64>>, L1Distance<i64>, MaxDivergence, Vec<i64>>;

/// Discrete Laplace noise for vectors of L1 sensitivity `sensitivity`, spending about ε.
pub struct Mechanism {
    measurement: Laplace,
    /// Noise scale, `sensitivity / ε`.
    pub scale: f64,
    /// The privacy loss in millionths of ε, rounded up ([`micro_loss`]); never less than
    /// OpenDP's privacy map gives, rounded to the millionth.
    pub epsilon_micro: i64,
}

impl Mechanism {
    /// The mechanism that spends `epsilon` on vectors of L1 sensitivity `sensitivity`.
    pub fn new(sensitivity: i64, epsilon: f64) -> Result<Mechanism, NoiseError> {
        if !(epsilon.is_finite() && epsilon > 0.0) || sensitivity < 1 {
            return Err(NoiseError(format!(
                "ε must be positive and finite and the sensitivity at least 1 (ε {epsilon}, sensitivity {sensitivity})"
            )));
        }
        let scale = sensitivity as f64 / epsilon;
        let measurement = make_laplace(
            VectorDomain::new(AtomDomain::<i64>::default()),
            L1Distance::<i64>::default(),
            scale,
            None,
        )?;
        let mapped = measurement.map(&sensitivity)?;
        let epsilon_micro = micro_loss(sensitivity, scale)
            .filter(|&micro| micro as f64 >= (mapped * 1e6).round())
            .ok_or_else(|| {
                NoiseError(format!(
                    "no exact privacy loss for scale {scale} (OpenDP's map: ε {mapped})"
                ))
            })?;
        Ok(Mechanism {
            measurement,
            scale,
            epsilon_micro,
        })
    }

    /// The values with fresh noise, from OpenDP's cryptographically secure sampler.
    pub fn noisy(&self, values: &[i64]) -> Result<Vec<i64>, NoiseError> {
        Ok(self.measurement.invoke(&values.to_vec())?)
    }

    /// The least integer `b` such that each noisy value is within `b` of the true one with
    /// probability at least `1 - alpha`: OpenDP's accuracy `a` has P(|noise| ≥ a) ≤ alpha,
    /// and noise is an integer, so |noise| ≤ ⌈a⌉ - 1 with that probability.
    pub fn bound(&self, alpha: f64) -> Result<i64, NoiseError> {
        let a = opendp::accuracy::discrete_laplacian_scale_to_accuracy(self.scale, alpha)?;
        Ok((a.ceil() as i64).saturating_sub(1).max(0))
    }
}

/// The mechanism's privacy loss in millionths of ε, rounded up: discrete Laplace noise of
/// scale `s` on vectors of L1 sensitivity Δ is (Δ/s)-differentially private, and Δ·10⁶/s is
/// computed exactly from the double `s` (ε = 0.01 costs 10 000, not the 10 001 that the
/// double nearest 0.01, a little above it, would). `None` where that overflows 128 bits.
pub fn micro_loss(sensitivity: i64, scale: f64) -> Option<i64> {
    if !(scale.is_finite() && scale > 0.0) || sensitivity < 0 {
        return None;
    }
    // scale = mantissa · 2^exponent exactly.
    let bits = scale.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, exponent) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    let numerator = u128::try_from(sensitivity).ok()?.checked_mul(1_000_000)?;
    // Shifts that would push bits out of the u128 are refused, not wrapped.
    let shift = |n: u128, by: u32| (n.leading_zeros() > by).then(|| n << by);
    let (numerator, denominator) = if exponent >= 0 {
        (numerator, shift(u128::from(mantissa), exponent as u32)?)
    } else {
        (
            shift(numerator, exponent.unsigned_abs())?,
            u128::from(mantissa),
        )
    };
    i64::try_from(numerator.div_ceil(denominator)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_are_the_exact_loss_rounded_up_to_the_millionth() {
        let micro =
            |sensitivity, epsilon| Mechanism::new(sensitivity, epsilon).unwrap().epsilon_micro;
        assert_eq!(micro(1, 0.5), 500_000);
        assert_eq!(micro(1, 0.01), 10_000);
        assert_eq!(micro(1, 0.3), 300_000);
        assert_eq!(micro(8, 0.3), 300_000);
        assert_eq!(micro(1, 1.0 / 3.0), 333_334);
        assert_eq!(micro(1, 1e-9), 1, "a loss below a millionth costs one");
        // The exact loss of a scale that is not a round number: 1/3 = 0.333… → 333 334.
        assert_eq!(micro_loss(1, 3.0), Some(333_334));
        assert_eq!(micro_loss(2, 1.0), Some(2_000_000));
        assert_eq!(micro_loss(1, f64::INFINITY), None);
        assert_eq!(micro_loss(1, 1e-30), None);
        assert_eq!(micro_loss(1, 1e-5), Some(100_000_000_000));
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Mechanism::new(1, 0.0).is_err());
        assert!(Mechanism::new(1, f64::NAN).is_err());
        assert!(Mechanism::new(0, 1.0).is_err());
    }
}
