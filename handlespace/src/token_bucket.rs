//! A token bucket in whole milliseconds: how many requests a peer may send per second (RFC 5355
//! §2.13-2.14 threats: floods of requests or of unreachable reports). Used by the PR per
//! association and by the PU for its unreachable reports.

use crate::Millis;

/// Tokens refilled at `rate` per second up to `rate`, one taken per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    tokens: u32,
    refilled: Millis,
}

impl TokenBucket {
    /// A full bucket for `rate` per second at `now`.
    pub fn full(rate: u32, now: Millis) -> Self {
        Self {
            tokens: rate,
            refilled: now,
        }
    }

    /// Refills the bucket for the time since the last refill at `rate` per second (the rate may
    /// change between calls, on a configuration reload), then takes a token if there is one.
    pub fn take(&mut self, rate: u32, now: Millis) -> bool {
        let refill = now
            .saturating_sub(self.refilled)
            .saturating_mul(u64::from(rate))
            / 1000;
        if refill > 0 {
            self.tokens = u32::try_from(u64::from(self.tokens) + refill)
                .unwrap_or(u32::MAX)
                .min(rate);
            self.refilled = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_admits_the_rate_then_refills_with_time() {
        let mut bucket = TokenBucket::full(3, 0);
        assert_eq!((0..5).filter(|_| bucket.take(3, 0)).count(), 3);
        // A third of a second brings one token back; less than one token's time brings none.
        assert!(!bucket.take(3, 300));
        assert!(bucket.take(3, 334));
        assert!(!bucket.take(3, 334));
        // A long pause refills to the rate, no further.
        assert_eq!((0..10).filter(|_| bucket.take(3, 60_000)).count(), 3);
    }

    #[test]
    fn time_going_backwards_or_a_huge_gap_does_not_overflow() {
        let mut bucket = TokenBucket::full(u32::MAX, u64::MAX);
        assert!(bucket.take(u32::MAX, 0));
        let mut bucket = TokenBucket::full(0, 0);
        assert!(!bucket.take(0, u64::MAX));
        let mut bucket = TokenBucket::full(5, 0);
        (0..5).for_each(|_| assert!(bucket.take(5, 0)));
        assert!(bucket.take(5, u64::MAX));
    }
}
