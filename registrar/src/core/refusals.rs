//! Logging refusals (access rules, TLS identities, the ENRP allowlist) once per peer and minute:
//! every refusal is counted in the metrics, but a peer that keeps trying (RFC 5355 §2.1-2.2:
//! floods) must not flood the log as well. The memory is bounded: beyond [`MAX_PEERS`] peers
//! remembered at once, those not logged within the minute are forgotten, and if none is, the
//! refusal goes unlogged (it is still counted).

use rserpool_handlespace::{FastMap, Millis};

/// How long after logging a peer's refusal the next one of the same peer is logged again.
const INTERVAL: Millis = 60_000;
/// Most peers remembered at once.
const MAX_PEERS: usize = 4096;

/// When each peer's refusal was last logged.
#[derive(Debug, Default)]
pub struct RefusalLog {
    last: FastMap<u64, Millis>,
}

impl RefusalLog {
    /// Whether a refusal of the peer `key` (a digest of its address, certificate name or PR ID)
    /// is to be logged at `now`; notes it if so.
    pub fn should_log(&mut self, key: u64, now: Millis) -> bool {
        if let Some(&at) = self.last.get(&key)
            && now.saturating_sub(at) < INTERVAL
        {
            return false;
        }
        if self.last.len() >= MAX_PEERS && !self.last.contains_key(&key) {
            self.last.retain(|_, at| now.saturating_sub(*at) < INTERVAL);
            if self.last.len() >= MAX_PEERS {
                return false;
            }
        }
        self.last.insert(key, now);
        true
    }
}

/// The key of a peer for [`RefusalLog::should_log`]: a digest of what names it.
pub fn peer_key(name: impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_logged_once_a_minute_and_memory_stays_bounded() {
        let mut log = RefusalLog::default();
        assert!(log.should_log(1, 0));
        assert!(!log.should_log(1, 59_999));
        assert!(log.should_log(2, 100), "another peer");
        assert!(log.should_log(1, 60_000));
        for key in 10..10 + MAX_PEERS as u64 {
            log.should_log(key, 61_000);
        }
        assert!(log.last.len() <= MAX_PEERS);
        assert!(!log.should_log(u64::MAX, 61_001), "full of recent peers");
        assert!(log.should_log(u64::MAX, 200_000), "old ones forgotten");
        assert!(log.last.len() <= MAX_PEERS);
    }
}
