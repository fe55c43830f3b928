//! Reconnect delays: exponential growth capped at a maximum, with full jitter.
//!
//! [`Backoff::delay`] is pure: the attempt number and the random source come in as
//! arguments, so tests are deterministic. It does not sleep and does not count attempts;
//! the driver does both.
//!
//! Full jitter ("Exponential Backoff And Jitter", AWS architecture blog, 2015): the delay
//! is uniform in `[0, min(max, initial × multiplier^attempt)]`, which spreads a crowd of
//! clients that lost the same server (e.g. on a `1001` shutdown) across the whole window
//! instead of letting them reconnect in lock-step.

use rand::Rng;
use std::time::Duration;

/// How the computed ceiling is turned into a delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Uniform in `[0, ceiling]` (the default).
    #[default]
    Full,
    /// Exactly the ceiling. Deterministic; for tests. DANGEROUS in production: every
    /// client that lost the same server reconnects at the same instants.
    None,
}

/// Exponential backoff with a cap and jitter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Ceiling of attempt 0. Default 100 ms.
    pub initial: Duration,
    /// No delay is ever longer than this. Default 5 s.
    pub max: Duration,
    /// Growth of the ceiling per attempt; at least 1.0. Default 2.0.
    pub multiplier: f64,
    /// Default [`Jitter::Full`].
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// Checks how the fields relate: `multiplier` finite and ≥ 1, `initial` ≤ `max`.
    pub fn validate(&self) -> Result<(), String> {
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(format!(
                "backoff multiplier {} must be finite and >= 1",
                self.multiplier
            ));
        }
        if self.initial > self.max {
            return Err(format!(
                "backoff initial {:?} is above backoff max {:?}",
                self.initial, self.max
            ));
        }
        Ok(())
    }

    /// The un-jittered ceiling of `attempt` (0-based): `min(max, initial × multiplier^attempt)`.
    /// Non-decreasing in `attempt` and never above `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let max_s = self.max.as_secs_f64();
        // powi takes i32; attempts past i32::MAX are all at the cap anyway.
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let grown = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        if !grown.is_finite() || grown >= max_s {
            self.max
        } else {
            // grown < max_s, so this cannot overflow; max() keeps rounding from going below.
            Duration::from_secs_f64(grown).max(self.initial.min(self.max))
        }
    }

    /// The delay before reconnect attempt `attempt` (0-based): the ceiling, jittered.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(attempt);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => {
                // u64 nanoseconds cover 584 years; a larger max saturates.
                let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.gen_range(0..=nanos))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn defaults() {
        let b = Backoff::default();
        assert_eq!(b.initial, Duration::from_millis(100));
        assert_eq!(b.max, Duration::from_secs(5));
        assert_eq!(b.multiplier, 2.0);
        assert_eq!(b.jitter, Jitter::Full);
        assert!(b.validate().is_ok());
    }

    #[test]
    fn ceiling_grows_exponentially_then_caps() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(2), Duration::from_millis(400));
        assert_eq!(b.ceiling(5), Duration::from_millis(3200));
        assert_eq!(b.ceiling(6), Duration::from_secs(5));
        assert_eq!(b.ceiling(1000), Duration::from_secs(5));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn ceiling_is_monotone_and_capped() {
        for mult in [1.0, 1.1, 1.5, 2.0, 3.0, 10.0] {
            let b = Backoff {
                multiplier: mult,
                ..Backoff::default()
            };
            let mut prev = Duration::ZERO;
            for attempt in (0..300).chain([u32::MAX - 1, u32::MAX]) {
                let c = b.ceiling(attempt);
                assert!(c >= prev, "mult {mult} attempt {attempt}: {c:?} < {prev:?}");
                assert!(c <= b.max);
                assert!(c >= b.initial);
                prev = c;
            }
        }
    }

    #[test]
    fn multiplier_one_is_constant() {
        let b = Backoff {
            multiplier: 1.0,
            jitter: Jitter::None,
            ..Backoff::default()
        };
        for attempt in [0, 1, 10, 10_000] {
            assert_eq!(b.delay(attempt, &mut StdRng::seed_from_u64(1)), b.initial);
        }
    }

    #[test]
    fn full_jitter_stays_in_zero_to_ceiling() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..40 {
            let ceiling = b.ceiling(attempt);
            for _ in 0..200 {
                let d = b.delay(attempt, &mut rng);
                assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
                assert!(d <= b.max);
            }
        }
    }

    #[test]
    fn full_jitter_spreads() {
        // Over many draws at the cap, both halves of [0, max] are hit: the jitter is real.
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(42);
        let half = b.max / 2;
        let draws: Vec<_> = (0..1000).map(|_| b.delay(100, &mut rng)).collect();
        assert!(draws.iter().any(|d| *d < half));
        assert!(draws.iter().any(|d| *d > half));
    }

    #[test]
    fn no_jitter_is_the_ceiling() {
        let b = Backoff {
            jitter: Jitter::None,
            ..Backoff::default()
        };
        let mut rng = StdRng::seed_from_u64(0);
        for attempt in 0..20 {
            assert_eq!(b.delay(attempt, &mut rng), b.ceiling(attempt));
        }
    }

    #[test]
    fn zero_initial_is_allowed_and_stays_zero() {
        let b = Backoff {
            initial: Duration::ZERO,
            ..Backoff::default()
        };
        assert!(b.validate().is_ok());
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(b.delay(0, &mut rng), Duration::ZERO);
        assert_eq!(b.delay(50, &mut rng), Duration::ZERO);
    }

    #[test]
    fn validate_rejects_bad_relations() {
        let shrinking = Backoff {
            multiplier: 0.5,
            ..Backoff::default()
        };
        assert!(shrinking.validate().is_err());
        let nan = Backoff {
            multiplier: f64::NAN,
            ..Backoff::default()
        };
        assert!(nan.validate().is_err());
        let inf = Backoff {
            multiplier: f64::INFINITY,
            ..Backoff::default()
        };
        assert!(inf.validate().is_err());
        let inverted = Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(1),
            ..Backoff::default()
        };
        assert!(inverted.validate().is_err());
    }
}
