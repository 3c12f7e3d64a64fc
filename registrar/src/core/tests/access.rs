//! Access rules per pool handle (`access.rules`; RFC 5355 §2.2-2.4, §2.7): refused
//! registrations, deregistrations and resolutions get cause 0xa and are counted; allowed ones
//! are served as without rules.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use rserpool_handlespace::{Limits, PeId};
use rserpool_protocol::{AsapMessage, Generation, Policy, PoolHandle, cause};

use super::{config, encode, info, only, registration, registration_outcome, resolution, resolved};
use crate::core::AssociationInfo;
use crate::core::counters::Limit;
use crate::core::in_memory::InMemoryPr;

const RFC: Generation = Generation::Rfc;

/// A PR whose rules let 192.0.2.0/24 (where [`info`]'s associations come from) register and
/// deregister in `acl*`, and anyone resolve `open*`.
fn guarded(workers: usize) -> InMemoryPr {
    let mut config = config();
    config.access_rules = ["acl* register,deregister 192.0.2.0/24", "open* resolve any"]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
    InMemoryPr::new(workers, config, Limits::default(), 7)
}

fn from(address: &str) -> AssociationInfo {
    AssociationInfo {
        peer_addresses: vec![address.parse().unwrap()],
        ..info(RFC)
    }
}

fn refusals(pr: &InMemoryPr) -> u64 {
    pr.metrics()
        .iter()
        .map(|m| m.counters.limit_refusals[Limit::Access as usize].load(Relaxed))
        .sum()
}

#[test]
fn requests_no_rule_allows_get_cause_0xa_and_allowed_ones_are_served() {
    for workers in [1, 2] {
        let mut pr = guarded(workers);
        let pe = pr.open(0, info(RFC), 0);
        let outsider = pr.open(workers - 1, from("198.51.100.7:4000"), 0);
        let accepted = (false, None);
        let rejected = (true, Some(cause::REJECTED_SECURITY));
        assert_eq!(
            registration_outcome(&pr.message(
                pe,
                &registration(b"acl-1", 1, Policy::RoundRobin),
                1
            )),
            accepted
        );
        assert_eq!(
            registration_outcome(&pr.message(
                pe,
                &registration(b"other", 2, Policy::RoundRobin),
                2
            )),
            rejected,
            "a pool no rule covers"
        );
        assert_eq!(
            registration_outcome(&pr.message(
                outsider,
                &registration(b"acl-2", 3, Policy::RoundRobin),
                3
            )),
            rejected,
            "a source no rule covers"
        );
        // Resolving: allowed in open*, refused in acl* (no resolve rule), from anywhere.
        assert_eq!(
            resolved(&pr.message(outsider, &resolution(b"acl-1", None), 4)),
            Err(cause::REJECTED_SECURITY)
        );
        assert_eq!(
            resolved(&pr.message(outsider, &resolution(b"open-x", None), 5)),
            Err(cause::UNKNOWN_POOL_HANDLE),
            "allowed: answered as without rules"
        );
        let udp: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let sent = pr.datagram(0, RFC, udp, &resolution(b"acl-1", None), 6);
        assert_eq!(
            resolved(&sent),
            Err(cause::REJECTED_SECURITY),
            "over UDP too"
        );
        // Deregistering: the outsider's refused with 0xa, the PE's own allowed.
        let dereg = encode(
            &AsapMessage::Deregistration {
                pool_handle: PoolHandle(b"acl-1"),
                pe_id: PeId(1),
            },
            RFC,
        );
        let refused = pr.message(outsider, &dereg, 7);
        let AsapMessage::DeregistrationResponse { error, .. } = only(&refused) else {
            panic!("{refused:?}")
        };
        assert_eq!(
            error.and_then(|e| e.iter().next()).map(|c| c.code),
            Some(cause::REJECTED_SECURITY)
        );
        assert!(
            pr.workers()
                .iter()
                .map(|w| w.shard().pe_count())
                .sum::<usize>()
                == 1
        );
        let done = pr.message(pe, &dereg, 8);
        let AsapMessage::DeregistrationResponse { error, .. } = only(&done) else {
            panic!("{done:?}")
        };
        assert!(error.is_none());
        assert_eq!(refusals(&pr), 5, "{workers} workers");
    }
}
