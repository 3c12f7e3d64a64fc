//! Registrations per second per identity (`limits.max_registrations_per_second_per_identity`;
//! RFC 5355 §2.1-2.2: a PE, or a host, flooding the registrar with registrations): one token
//! bucket per identity, a TLS certificate name or, without TLS, a source address. The buckets
//! are shared by every worker of the PR, since one identity's associations may land on several
//! workers (SO_REUSEPORT spreads them by address and port); 16 locks split the contention.
//!
//! Memory is bounded: a table holds at most [`MAX_IDENTITIES`] buckets; beyond that, buckets
//! untouched for a second (full again by then) are dropped, and if every one is in use the
//! request passes unmetered (the connection limits bound how many identities can be active).

use std::sync::Mutex;

use rserpool_handlespace::{FastMap, Millis, TokenBucket};

/// Buckets per lock at most.
const MAX_IDENTITIES: usize = 4096;
/// Locks.
const SHARDS: usize = 16;

/// One lock's buckets: each identity's, with when it was last used.
type Buckets = FastMap<u64, (TokenBucket, Millis)>;

/// The registration rate of each identity.
#[derive(Debug)]
pub struct IdentityRates {
    shards: Box<[Mutex<Buckets>]>,
}

impl Default for IdentityRates {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl IdentityRates {
    /// Takes one registration of the identity `key` (a digest) at `rate` per second; `false`
    /// when its bucket is empty.
    pub fn take(&self, key: u64, rate: u32, now: Millis) -> bool {
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut table = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if table.len() >= MAX_IDENTITIES && !table.contains_key(&key) {
            table.retain(|_, (_, used)| now.saturating_sub(*used) < 1_000);
            if table.len() >= MAX_IDENTITIES {
                return true;
            }
        }
        let (bucket, used) = table
            .entry(key)
            .or_insert_with(|| (TokenBucket::full(rate, now), now));
        *used = now;
        bucket.take(rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_has_its_own_bucket_and_memory_stays_bounded() {
        let rates = IdentityRates::default();
        let taken = (0..25).filter(|_| rates.take(7, 10, 0)).count();
        assert_eq!(taken, 10, "a second's worth at once");
        assert!(rates.take(8, 10, 0), "another identity");
        assert!(!rates.take(7, 10, 50));
        assert!(rates.take(7, 10, 1_000), "refilled");
        for key in 0..(SHARDS * MAX_IDENTITIES) as u64 * 2 {
            rates.take(key, 10, 2_000);
        }
        let held: usize = rates.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= SHARDS * MAX_IDENTITIES, "{held}");
    }
}
