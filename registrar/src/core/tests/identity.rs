//! TLS identities in the core (RFC 5355 §2.1-2.5): the access rules and `tls.allowed_identities`
//! by certificate name, a PE ID bound to the identity that registered it, and the registration
//! rate of one identity over all its associations and workers
//! (`limits.max_registrations_per_second_per_identity`). Each refusal is counted.

use std::sync::atomic::Ordering::Relaxed;

use rserpool_handlespace::Limits;
use rserpool_protocol::{Generation, Policy, TransportKind, cause};

use super::{config, info, registration, registration_outcome, registration_with};
use crate::core::AssociationInfo;
use crate::core::counters::Limit;
use crate::core::in_memory::InMemoryPr;

const RFC: Generation = Generation::Rfc;

fn refusals(pr: &InMemoryPr, limit: Limit) -> u64 {
    pr.metrics()
        .iter()
        .map(|m| m.counters.limit_refusals[limit as usize].load(Relaxed))
        .sum()
}

fn from(address: &str) -> AssociationInfo {
    AssociationInfo {
        peer_addresses: vec![address.parse().unwrap()],
        ..info(RFC)
    }
}

/// A registration of PE `id` reachable at `ip` (which must be among its association's
/// addresses, RFC 5352 §2.2.1).
fn registration_at(id: u64, ip: &str) -> Vec<u8> {
    registration_with(
        b"pool",
        id,
        Policy::RoundRobin,
        TransportKind::Sctp,
        0,
        &[ip.parse().unwrap()],
        30_000,
        RFC,
    )
}

const ACCEPTED: (bool, Option<u16>) = (false, None);
const REJECTED: (bool, Option<u16>) = (true, Some(cause::REJECTED_SECURITY));

#[test]
fn access_rules_and_allowed_identities_go_by_certificate_name() {
    for workers in [1, 2] {
        let mut c = config();
        c.access_rules = vec![
            "billing register identity:*.billing.example.net"
                .parse()
                .unwrap(),
        ];
        c.allowed_identities = vec![
            "*.billing.example.net".parse().unwrap(),
            "pu".parse().unwrap(),
        ];
        let mut pr = InMemoryPr::new(workers, c, Limits::default(), 3);
        let pe = pr.open(0, info(RFC), 0);
        pr.authenticated(pe, &["pe1.billing.example.net"], 0);
        let plain = pr.open(workers - 1, info(RFC), 0);
        let pu = pr.open(0, info(RFC), 0);
        pr.authenticated(pu, &["pu"], 0);
        let ok = pr.message(pe, &registration(b"billing", 1, Policy::RoundRobin), 1);
        assert_eq!(registration_outcome(&ok), ACCEPTED);
        for who in [plain, pu] {
            let refused = pr.message(who, &registration(b"billing", 2, Policy::RoundRobin), 2);
            assert_eq!(
                registration_outcome(&refused),
                REJECTED,
                "{workers} workers"
            );
        }
        assert_eq!(refusals(&pr, Limit::Access), 2);
        // A certified peer whose name is not allowed is aborted when its handshake ends.
        let intruder = pr.open(0, info(RFC), 3);
        pr.authenticated(intruder, &["intruder.example.net"], 3);
        assert_eq!(pr.take_aborts(), [intruder]);
        assert_eq!(refusals(&pr, Limit::Identity), 1);
    }
}

#[test]
fn a_pe_id_stays_bound_to_the_identity_that_registered_it() {
    for workers in [1, 2] {
        let mut pr = InMemoryPr::new(workers, config(), Limits::default(), 3);
        let alice = pr.open(0, info(RFC), 0);
        pr.authenticated(alice, &["alice"], 0);
        let ok = pr.message(alice, &registration(b"pool", 7, Policy::RoundRobin), 1);
        assert_eq!(registration_outcome(&ok), ACCEPTED);
        // Mallory, from the same host over a newer association, could take PE 7 over without
        // TLS (RFC 5352 §3.1); bound to alice, it stays hers.
        let mallory = pr.open(workers - 1, info(RFC), 2);
        pr.authenticated(mallory, &["mallory"], 2);
        let refused = pr.message(mallory, &registration(b"pool", 7, Policy::RoundRobin), 3);
        assert_eq!(registration_outcome(&refused), REJECTED);
        assert_eq!(refusals(&pr, Limit::PeBinding), 1);
        let alice_again = pr.open(workers - 1, info(RFC), 4);
        pr.authenticated(alice_again, &["ALICE"], 4);
        let ok = pr.message(
            alice_again,
            &registration(b"pool", 7, Policy::RoundRobin),
            5,
        );
        assert_eq!(
            registration_outcome(&ok),
            ACCEPTED,
            "names compare without case"
        );
    }
}

#[test]
fn registrations_per_identity_are_metered_over_all_its_associations() {
    let mut c = config();
    c.max_registrations_per_second_per_identity = 4;
    let mut pr = InMemoryPr::new(2, c, Limits::default(), 3);
    // One identity (a source address) with an association on each worker.
    let a = pr.open(0, info(RFC), 0);
    let b = pr.open(1, info(RFC), 0);
    let other = pr.open(0, from("192.0.2.2:4000"), 0);
    let outcomes: Vec<_> = (1..=8)
        .map(|id| {
            let via = if id % 2 == 0 { a } else { b };
            registration_outcome(&pr.message(
                via,
                &registration(b"pool", id, Policy::RoundRobin),
                10,
            ))
        })
        .collect();
    let accepted = outcomes.iter().filter(|o| **o == ACCEPTED).count();
    assert_eq!(accepted, 4, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| *o == ACCEPTED || *o == (true, Some(cause::LACK_OF_RESOURCES))),
        "{outcomes:?}"
    );
    assert_eq!(refusals(&pr, Limit::RegistrationsPerIdentity), 4);
    let ok = pr.message(other, &registration_at(20, "192.0.2.2"), 10);
    assert_eq!(registration_outcome(&ok), ACCEPTED, "another identity");
    let ok = pr.message(a, &registration(b"pool", 9, Policy::RoundRobin), 1_010);
    assert_eq!(registration_outcome(&ok), ACCEPTED, "a second later");
    // Over TLS the identity is the certificate name, whatever the address.
    let t1 = pr.open(0, from("198.51.100.1:1"), 2_000);
    let t2 = pr.open(1, from("198.51.100.2:1"), 2_000);
    pr.authenticated(t1, &["pe.example.net"], 2_000);
    pr.authenticated(t2, &["pe.example.net"], 2_000);
    let accepted = (30..40)
        .filter(|&id| {
            let (via, ip) = if id % 2 == 0 {
                (t1, "198.51.100.1")
            } else {
                (t2, "198.51.100.2")
            };
            registration_outcome(&pr.message(via, &registration_at(id, ip), 2_000)) == ACCEPTED
        })
        .count();
    assert_eq!(accepted, 4);
}
