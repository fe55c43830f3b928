//! A token bucket for rate limits (SPEC §1: messages per minute per user and per channel).
//! Time comes in as an argument; nothing here reads the clock.
//!
//! The bucket holds at most `capacity` tokens and refills continuously at `capacity` per
//! `window_ms`, so a burst of `capacity` is allowed at once and the long-run rate is
//! `capacity` per window — the N-th request within a fresh window passes, the N+1-th is
//! refused with the time until a token is back.

/// A bucket of `capacity` tokens per `window_ms`. Tokens are counted in units of
/// 1/`window_ms` of a token, so refilling is `elapsed_ms × capacity` — exact integer
/// arithmetic with no rounding lost between calls.
///
/// The bucket stores what has been *used* (drained continuously), not what is left, so the
/// capacity can change between calls and takes effect at once: a channel whose wedding day
/// starts gets its 3× capacity immediately (SPEC §1), not after a refill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    used: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket (nothing used).
    pub fn full(_capacity: u32, _window_ms: u64, now_ms: u64) -> Self {
        TokenBucket {
            used: 0,
            last_ms: now_ms,
        }
    }

    fn drained(&self, capacity: u32, now_ms: u64) -> u64 {
        let add = now_ms
            .saturating_sub(self.last_ms)
            .saturating_mul(u64::from(capacity));
        self.used.saturating_sub(add)
    }

    /// Whether the bucket would be full at `now_ms` (O(1); changes nothing).
    pub fn is_full(&self, capacity: u32, _window_ms: u64, now_ms: u64) -> bool {
        self.drained(capacity, now_ms) == 0
    }

    /// Takes one token, or says how many milliseconds until one is available.
    pub fn try_take(&mut self, capacity: u32, window_ms: u64, now_ms: u64) -> Result<(), u64> {
        let window_ms = window_ms.max(1);
        if capacity == 0 {
            return Err(window_ms);
        }
        let cap = u64::from(capacity);
        let full = cap.saturating_mul(window_ms);
        if now_ms > self.last_ms {
            self.used = self.drained(capacity, now_ms);
            self.last_ms = now_ms;
        }
        // One token is `window_ms` units.
        let need = self.used.saturating_add(window_ms);
        if need <= full {
            self.used = need;
            return Ok(());
        }
        Err((need - full).div_ceil(cap).max(1))
    }
}

/// Seconds to tell a client in `retry_after` for a wait of `ms` (at least 1).
pub fn retry_after_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nth_passes_and_n_plus_first_waits() {
        let mut b = TokenBucket::full(10, 60_000, 0);
        for _ in 0..10 {
            b.try_take(10, 60_000, 0).unwrap();
        }
        let wait = b.try_take(10, 60_000, 0).unwrap_err();
        assert_eq!(wait, 6_000, "one token every 6 s at 10/min");
        assert_eq!(retry_after_secs(wait), 6);
        assert!(b.try_take(10, 60_000, 5_999).is_err());
        b.try_take(10, 60_000, 6_000).unwrap();
        // Never more than the capacity after a long pause.
        let mut b = TokenBucket::full(3, 1000, 0);
        for _ in 0..3 {
            b.try_take(3, 1000, 0).unwrap();
        }
        for _ in 0..3 {
            b.try_take(3, 1000, 1_000_000).unwrap();
        }
        assert!(b.try_take(3, 1000, 1_000_000).is_err());
        assert!(!b.is_full(3, 1000, 1_000_000));
        assert!(!b.is_full(3, 1000, 1_000_999));
        assert!(b.is_full(3, 1000, 1_001_000));
        assert!(TokenBucket::full(u32::MAX, 60_000, 0).is_full(u32::MAX, 60_000, 0));
    }

    #[test]
    fn a_larger_capacity_applies_at_once() {
        let mut b = TokenBucket::full(2, 60_000, 0);
        for _ in 0..2 {
            b.try_take(2, 60_000, 0).unwrap();
        }
        assert!(b.try_take(2, 60_000, 0).is_err());
        // Tripled (a wedding day): four more pass at once, then the seventh waits.
        for _ in 0..4 {
            b.try_take(6, 60_000, 0).unwrap();
        }
        assert_eq!(b.try_take(6, 60_000, 0).unwrap_err(), 10_000);
        // Back to 2: over capacity until the excess drains.
        assert_eq!(b.try_take(2, 60_000, 0).unwrap_err(), 150_000);
    }

    proptest! {
        /// Over any span, at most capacity + span × rate requests pass.
        #[test]
        fn never_exceeds_the_rate(cap in 1u32..50, steps in prop::collection::vec(0u64..5_000, 1..300)) {
            let window = 60_000;
            let mut b = TokenBucket::full(cap, window, 0);
            let mut now = 0;
            let mut passed = 0u64;
            for s in steps {
                now += s;
                if b.try_take(cap, window, now).is_ok() { passed += 1; }
            }
            let allowed = u64::from(cap) + now * u64::from(cap) / window;
            prop_assert!(passed <= allowed, "{passed} > {allowed}");
        }
    }
}
