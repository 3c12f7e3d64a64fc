//! ASAP registration and deregistration (RFC 5352 §3.1-3.2; checklist PA-01..PA-12): a
//! registration creates its pool, inconsistent PEs are refused, a re-registration replaces the
//! PE's attributes, addresses must belong to the association, only the PE itself deregisters, and
//! a PE moving to a new association of its host takes its registration along.

use std::net::{IpAddr, SocketAddr};

use rserpool_handlespace::PeId;
use rserpool_protocol::{
    AsapMessage, Generation, Policy, PoolHandle, Resolution, TransportKind, cause,
};

use super::{
    PE_IP, PE_IP2, PR, cluster, encode, info, only, registration, registration_outcome,
    registration_with, resolution, resolved,
};
use crate::core::in_memory::InMemoryPr;
use crate::core::{AssociationInfo, Target};
use rserpool_protocol::url::Transport as UrlTransport;

#[test]
fn pa01_pa02_pa12_registration_creates_the_pool_and_resolution_returns_it() {
    for workers in [1, 3] {
        let mut pr = cluster(workers);
        let pe1 = pr.open(0, info(Generation::Rfc), 0);
        let pe2 = pr.open(workers - 1, info(Generation::Rfc), 0);
        let pu = pr.open(workers / 2, info(Generation::Rfc), 0);
        let sent = pr.message(pe1, &registration(b"echo", 1, Policy::RoundRobin), 0);
        assert_eq!(sent[0].target, Target::Association(pe1));
        match only(&sent) {
            AsapMessage::RegistrationResponse {
                rejected,
                pool_handle,
                pe_id,
                error,
            } => {
                assert!(!rejected);
                assert_eq!(pool_handle.0, b"echo");
                assert_eq!(pe_id, PeId(1));
                assert!(error.is_none());
            }
            other => panic!("{other:?}"),
        }
        let sent = pr.message(pe2, &registration(b"echo", 2, Policy::RoundRobin), 0);
        assert_eq!(registration_outcome(&sent), (false, None));
        let sent = pr.message(pu, &resolution(b"echo", None), 0);
        assert_eq!(sent[0].target, Target::Association(pu));
        let AsapMessage::HandleResolutionResponse {
            pool_handle,
            resolution:
                Resolution::Found {
                    policy,
                    pool_elements,
                },
            ..
        } = only(&sent)
        else {
            panic!("not found")
        };
        assert_eq!(pool_handle.0, b"echo");
        assert_eq!(
            policy,
            Some(Policy::RoundRobin),
            "policy TLV always included"
        );
        let mut ids: Vec<_> = pool_elements.iter().map(|p| p.id.0).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2]);
        for pe in pool_elements.iter() {
            assert!(pe.asap_transport.is_none(), "no ASAP transport towards PUs");
            assert_eq!(pe.home_pr, PR, "home PR filled in");
        }
    }
}

#[test]
fn pa03_pa04_pa05_inconsistent_pes_are_refused_with_the_rfc_cause() {
    let mut pr = cluster(2);
    let a = pr.open(0, info(Generation::Rfc), 0);
    let first = registration(b"pool", 1, Policy::LeastUsed { load: 5 });
    assert_eq!(
        registration_outcome(&pr.message(a, &first, 0)),
        (false, None)
    );
    let sent = pr.message(a, &registration(b"pool", 2, Policy::RoundRobin), 0);
    let AsapMessage::RegistrationResponse {
        rejected: true,
        error: Some(error),
        ..
    } = only(&sent)
    else {
        panic!("accepted")
    };
    let c = error.iter().next().unwrap();
    assert_eq!(c.code, cause::INCONSISTENT_POLICY);
    assert_eq!(
        c.policy(),
        Some(Policy::LeastUsed { load: 5 }),
        "pool policy as cause info"
    );
    let tcp = registration_with(
        b"pool",
        3,
        Policy::LeastUsed { load: 1 },
        TransportKind::Tcp,
        0,
        &[PE_IP],
        30_000,
        Generation::Rfc,
    );
    assert_eq!(
        registration_outcome(&pr.message(a, &tcp, 0)),
        (true, Some(cause::INCONSISTENT_TRANSPORT))
    );
    let control = registration_with(
        b"pool",
        4,
        Policy::LeastUsed { load: 1 },
        TransportKind::Sctp,
        rserpool_protocol::TRANSPORT_USE_DATA_PLUS_CONTROL,
        &[PE_IP],
        30_000,
        Generation::Rfc,
    );
    assert_eq!(
        registration_outcome(&pr.message(a, &control, 0)),
        (true, Some(cause::INCONSISTENT_DATA_CONTROL))
    );
    let pu = pr.open(1, info(Generation::Rfc), 0);
    assert_eq!(
        resolved(&pr.message(pu, &resolution(b"pool", Some(10)), 0)),
        Ok((vec![1], Some(Policy::LeastUsed { load: 5 })))
    );
}

#[test]
fn pa06_pa07_reregistration_replaces_attributes_and_records_the_asap_transport() {
    let mut pr = cluster(1);
    let a = pr.open(0, info(Generation::Rfc), 0);
    pr.message(
        a,
        &registration(b"lu", 9, Policy::LeastUsed { load: 10 }),
        0,
    );
    let sent = pr.message(
        a,
        &registration(b"lu", 9, Policy::LeastUsed { load: 99 }),
        5,
    );
    assert_eq!(registration_outcome(&sent), (false, None));
    let entry = pr.workers()[0]
        .shard()
        .entry(b"lu", PeId(9))
        .unwrap()
        .clone();
    assert_eq!(entry.registration.policy, Policy::LeastUsed { load: 99 });
    let asap = entry
        .registration
        .asap_transport
        .expect("ASAP transport recorded");
    assert_eq!(asap.kind, TransportKind::Sctp);
    assert_eq!(asap.port, 40_000);
    assert_eq!(
        &*asap.addresses,
        &[PE_IP, PE_IP2],
        "the association's addresses"
    );
}

#[test]
fn pa08_addresses_must_belong_to_the_association() {
    let mut pr = cluster(1);
    let a = pr.open(0, info(Generation::Rfc), 0);
    let foreign: IpAddr = "198.51.100.7".parse().unwrap();
    let reg = |id, ips: &[IpAddr]| {
        registration_with(
            b"p",
            id,
            Policy::Random,
            TransportKind::Sctp,
            0,
            ips,
            30_000,
            Generation::Rfc,
        )
    };
    assert_eq!(
        registration_outcome(&pr.message(a, &reg(1, &[foreign]), 0)),
        (true, Some(cause::REJECTED_SECURITY))
    );
    assert_eq!(
        registration_outcome(&pr.message(a, &reg(2, &[foreign, PE_IP]), 0)),
        (false, None)
    );
    let entry = pr.workers()[0].shard().entry(b"p", PeId(2)).unwrap();
    let rserpool_handlespace::OwnedUserTransport::Transport(t) = &entry.registration.user_transport
    else {
        panic!()
    };
    assert_eq!(&*t.addresses, &[PE_IP], "foreign address filtered out");
}

#[test]
fn pa09_pa10_pa11_deregistration_only_by_the_pe_itself() {
    for workers in [1, 4] {
        let mut pr = cluster(workers);
        let pe = pr.open(0, info(Generation::Rfc), 0);
        let other = pr.open(workers - 1, info(Generation::Rfc), 0);
        pr.message(pe, &registration(b"d", 5, Policy::RoundRobin), 0);
        let dereg = |id| {
            encode(
                &AsapMessage::Deregistration {
                    pool_handle: PoolHandle(b"d"),
                    pe_id: PeId(id),
                },
                Generation::Rfc,
            )
        };
        let sent = pr.message(other, &dereg(5), 1);
        assert_eq!(sent[0].target, Target::Association(other));
        let AsapMessage::DeregistrationResponse { error: Some(e), .. } = only(&sent) else {
            panic!("proxy deregistration accepted")
        };
        assert_eq!(e.iter().next().unwrap().code, cause::REJECTED_SECURITY);
        assert_eq!(
            resolved(&pr.message(other, &resolution(b"d", None), 1)),
            Ok((vec![5], Some(Policy::RoundRobin)))
        );
        let sent = pr.message(pe, &dereg(5), 2);
        let AsapMessage::DeregistrationResponse { error, pe_id, .. } = only(&sent) else {
            panic!()
        };
        assert!(error.is_none());
        assert_eq!(pe_id, PeId(5));
        assert_eq!(
            resolved(&pr.message(other, &resolution(b"d", None), 2)),
            Err(cause::UNKNOWN_POOL_HANDLE),
            "empty pool deleted"
        );
        let sent = pr.message(pe, &dereg(77), 3);
        let AsapMessage::DeregistrationResponse { error, .. } = only(&sent) else {
            panic!()
        };
        assert!(error.is_none(), "unknown PE: success");
        assert_eq!(
            pr.workers()
                .iter()
                .map(|w| w.monitored_pes())
                .sum::<usize>(),
            0
        );
    }
}

#[test]
fn a_registration_racing_its_association_close_is_undone() {
    // Worker 0 holds the association; the pool lives in another shard, so the registration is
    // forwarded. Close the association before the owner answers.
    let mut pr = cluster(2);
    let a = pr.open(0, info(Generation::Rfc), 0);
    let handle = (0..)
        .map(|i| format!("race-{i}").into_bytes())
        .find(|h| rserpool_handlespace::shard_index(h, 2) == 1)
        .unwrap();
    let mut out = crate::core::Output::default();
    // Drive the two workers by hand to interleave the close.
    let (w0, w1) = split(&mut pr);
    w0.on_message(a, &registration(&handle, 1, Policy::Random), 0, &mut out);
    let forwards: Vec<_> = out.take_forwards().collect();
    out.clear();
    assert_eq!(forwards.len(), 1);
    w0.close_association(a, 1, &mut out);
    assert!(out.is_empty());
    for (to, f) in forwards {
        assert_eq!(to, 1);
        w1.on_forward(f, 1, &mut out);
    }
    assert_eq!(w1.shard().pe_count(), 1, "the owner registered it");
    let completions: Vec<_> = out.take_forwards().collect();
    out.clear();
    for (to, f) in completions {
        assert_eq!(to, 0);
        w0.on_forward(f, 1, &mut out);
    }
    assert!(
        out.transmits().next().is_none(),
        "nothing sent to a closed association"
    );
    for (to, f) in out.take_forwards().collect::<Vec<_>>() {
        assert_eq!(to, 1);
        w1.on_forward(f, 1, &mut crate::core::Output::default());
    }
    assert_eq!(w1.shard().pe_count(), 0, "undone");
}

/// The two workers of a two-worker cluster, mutably.
fn split(c: &mut InMemoryPr) -> (&mut crate::core::Worker, &mut crate::core::Worker) {
    let [a, b] = c.workers_mut() else {
        panic!("two workers")
    };
    (a, b)
}

#[test]
fn a_pe_reconnecting_from_its_host_takes_its_registration_along_and_others_cannot() {
    for workers in [1, 3] {
        let mut pr = cluster(workers);
        let old = pr.open(0, info(Generation::Rfc), 0);
        let new = pr.open(workers - 1, info(Generation::Rfc), 0);
        pr.message(old, &registration(b"move", 4, Policy::RoundRobin), 0);
        // The PE's association broke; it re-registers over a new one before the registrar has
        // noticed (RFC 5352 §3.1 rules 3-4).
        assert_eq!(
            registration_outcome(&pr.message(
                new,
                &registration(b"move", 4, Policy::RoundRobin),
                1
            )),
            (false, None)
        );
        pr.close(old, 2);
        assert_eq!(
            resolved(&pr.message(new, &resolution(b"move", None), 2)),
            Ok((vec![4], Some(Policy::RoundRobin))),
            "the old association's close does not remove the moved PE"
        );
        // Another host, even one that lists itself as the PE's address, cannot take it.
        let stranger_ip: IpAddr = "203.0.113.9".parse().unwrap();
        let stranger = pr.open(
            0,
            AssociationInfo {
                transport: UrlTransport::Tcp,
                generation: Generation::Rfc,
                peer_addresses: vec![SocketAddr::new(stranger_ip, 1)],
                protocol: crate::core::Protocol::Asap,
            },
            3,
        );
        let hijack = registration_with(
            b"move",
            4,
            Policy::RoundRobin,
            TransportKind::Sctp,
            0,
            &[stranger_ip],
            30_000,
            Generation::Rfc,
        );
        assert_eq!(
            registration_outcome(&pr.message(stranger, &hijack, 3)),
            (true, Some(cause::REJECTED_SECURITY))
        );
        pr.close(new, 4);
        assert_eq!(
            resolved(&pr.message(stranger, &resolution(b"move", None), 4)),
            Err(cause::UNKNOWN_POOL_HANDLE),
            "the new association's close removes it"
        );
    }
}

/// Issue 13 (found by the simulation with asynchronous mailboxes): a PE reconnects while its
/// old association's last re-registration is still on its way; with several workers the new
/// association's registration can reach the pool's shard first. The stale one, over the older
/// association, must not take the PE back, or the old association's close removes a PE that is
/// registered over the new one.
#[test]
fn a_stale_registration_over_the_old_association_does_not_take_the_pe_back() {
    for workers in [1, 3] {
        let mut pr = cluster(workers);
        let old = pr.open(0, info(Generation::Rfc), 0);
        pr.message(old, &registration(b"late", 4, Policy::RoundRobin), 0);
        let new = pr.open(workers - 1, info(Generation::Rfc), 1);
        assert_eq!(
            registration_outcome(&pr.message(
                new,
                &registration(b"late", 4, Policy::RoundRobin),
                1
            )),
            (false, None)
        );
        // The old association's re-registration arrives after the new one's, then its close.
        assert_eq!(
            registration_outcome(&pr.message(
                old,
                &registration(b"late", 4, Policy::RoundRobin),
                2
            )),
            (true, Some(cause::REJECTED_SECURITY))
        );
        pr.close(old, 3);
        assert_eq!(
            resolved(&pr.message(new, &resolution(b"late", None), 4)),
            Ok((vec![4], Some(Policy::RoundRobin))),
            "{workers} workers: the PE stays with its new association"
        );
    }
}

#[test]
fn registrations_beyond_the_shard_limits_are_counted_by_limit() {
    use crate::core::counters::Limit;
    use std::sync::atomic::Ordering::Relaxed;
    let limits = rserpool_handlespace::Limits {
        max_pools: 1,
        max_pes_per_pool: 1,
        ..rserpool_handlespace::Limits::default()
    };
    let mut pr = InMemoryPr::new(1, super::config(), limits, 7);
    let pe = pr.open(0, info(Generation::Rfc), 0);
    let full = (true, Some(cause::LACK_OF_RESOURCES));
    let outcome = |pr: &mut InMemoryPr, handle: &[u8], id| {
        registration_outcome(&pr.message(pe, &registration(handle, id, Policy::RoundRobin), 1))
    };
    assert_eq!(outcome(&mut pr, b"one", 1), (false, None));
    assert_eq!(outcome(&mut pr, b"one", 2), full, "a second PE in the pool");
    assert_eq!(outcome(&mut pr, b"two", 3), full, "a second pool");
    assert_eq!(outcome(&mut pr, b"two", 4), full, "still no second pool");
    let refusals = |limit: Limit| -> u64 {
        pr.metrics()
            .iter()
            .map(|m| m.counters.limit_refusals[limit as usize].load(Relaxed))
            .sum()
    };
    assert_eq!(refusals(Limit::PesPerPool), 1);
    assert_eq!(refusals(Limit::Pools), 2);
}
