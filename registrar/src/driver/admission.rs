//! Admission of incoming associations by source address: how many associations one address holds
//! over all the registrar's workers (`limits.max_connections_per_source`: one host exhausting the
//! connections of all, the resource side of RFC 5355 §2.1-2.2 floods). Counted under a mutex
//! taken once per association opened and once per association closed, never per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Associations per source address, shared by every worker of the registrar.
#[derive(Debug)]
pub struct SourceCounts {
    /// Most associations per address; 0 = unlimited.
    limit: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted association's share of its source's count, given back when dropped (the
/// association closed, or its set-up failed before it opened).
#[derive(Debug)]
pub struct SourceTicket {
    counts: Arc<SourceCounts>,
    source: IpAddr,
}

impl SourceCounts {
    /// Counts with at most `limit` associations per address (0 = unlimited).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Admits one more association from `source` (an IPv4-mapped IPv6 address counts as its
    /// IPv4 address), or `None` when the address holds `limit` already.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Option<SourceTicket> {
        let source = source.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(source).or_insert(0);
        if self.limit > 0 && *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(SourceTicket {
            counts: Arc::clone(self),
            source,
        })
    }

    /// Associations `source` holds now.
    pub fn count(&self, source: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(&source.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for SourceTicket {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn an_address_gets_the_limit_and_a_closed_association_gives_its_place_back() {
        let counts = SourceCounts::new(2);
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let first = counts.admit(a).expect("first");
        let _second = counts.admit(a).expect("second");
        assert!(counts.admit(a).is_none(), "the third from one address");
        let _other = counts.admit(b).expect("another address is counted apart");
        // The same address written as IPv4-mapped IPv6 is the same source.
        assert!(
            counts
                .admit(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()))
                .is_none()
        );
        drop(first);
        assert_eq!(counts.count(a), 1);
        let _again = counts.admit(a).expect("a place came free");
        assert_eq!(counts.count(a), 2);
    }

    #[test]
    fn zero_is_unlimited_and_counts_go_back_to_nothing() {
        let counts = SourceCounts::new(0);
        let a = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let tickets: Vec<_> = (0..1000).map(|_| counts.admit(a).unwrap()).collect();
        assert_eq!(counts.count(a), 1000);
        drop(tickets);
        assert_eq!(counts.count(a), 0);
        assert!(
            counts.counts.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }
}
