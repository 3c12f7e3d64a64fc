//! Unknown, malformed and excessive input: unknown parameters and messages by their type's upper
//! two bits (RFC 5354 §3-4; checklist C-04..C-09), resource limits, and random or mutated
//! messages, which never disturb the PEs registered by others.

use rserpool_handlespace::{Limits, PeId};
use rserpool_protocol::asap::message_type as mt;
use rserpool_protocol::{AsapMessage, Generation, Policy, cause};

use super::{
    ack, cluster, config, info, only, registration, registration_outcome, resolution, resolved,
};
use crate::core::in_memory::InMemoryPr;
use crate::core::{AssociationInfo, Received};
use rserpool_protocol::url::Transport as UrlTransport;

#[test]
fn c04_to_c09_unknown_parameters_and_messages_follow_the_upper_two_bits() {
    let mut pr = cluster(1);
    let a = pr.open(0, info(Generation::Rfc), 0);
    let base = resolution(b"x", None);
    // Appends an unknown TLV of `ptype` to the resolution request.
    let with = |ptype: u16| {
        let mut m = base.clone();
        m.extend_from_slice(&ptype.to_be_bytes());
        m.extend_from_slice(&8u16.to_be_bytes());
        m.extend_from_slice(&[1, 2, 3, 4]);
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m
    };
    // 00: drop silently.
    assert!(pr.message(a, &with(0x0123), 0).is_empty());
    // 01: drop and report cause 0x1 with the whole TLV.
    let sent = pr.message(a, &with(0x4123), 0);
    let AsapMessage::Error(e) = only(&sent) else {
        panic!()
    };
    let c = e.iter().next().unwrap();
    assert_eq!(c.code, cause::UNRECOGNIZED_PARAMETER);
    assert_eq!(c.info, [0x41, 0x23, 0, 8, 1, 2, 3, 4]);
    // 10: skip, process the rest (the resolution is answered), no report.
    let sent = pr.message(a, &with(0x8123), 0);
    assert_eq!(resolved(&sent), Err(cause::UNKNOWN_POOL_HANDLE));
    // 11: skip, process, and report.
    let sent = pr.message(a, &with(0xc123), 0);
    assert_eq!(sent.len(), 2);
    let kinds: Vec<u8> = sent.iter().map(|s| s.bytes[0]).collect();
    assert!(kinds.contains(&mt::ERROR) && kinds.contains(&mt::HANDLE_RESOLUTION_RESPONSE));
    // Unknown message types: 0x0f (00) dropped, 0x40 (01) reported with cause 0x2.
    assert!(pr.message(a, &[0x0f, 0, 0, 4], 0).is_empty());
    let sent = pr.message(a, &[0x40, 0, 0, 4], 0);
    let AsapMessage::Error(e) = only(&sent) else {
        panic!()
    };
    let c = e.iter().next().unwrap();
    assert_eq!(
        (c.code, c.info),
        (cause::UNRECOGNIZED_MESSAGE, &[0x40, 0, 0, 4][..])
    );
    // An error is never answered with an error.
    assert!(
        pr.message(a, &[mt::ERROR, 0, 0, 5, 0xff, 0, 0, 0], 0)
            .is_empty()
    );
}

#[test]
fn limits_refuse_with_lack_of_resources() {
    let mut config = config();
    config.max_pes_per_association = 2;
    config.max_requests_per_second = 10;
    let mut pr = InMemoryPr::new(2, config, Limits::default(), 3);
    let a = pr.open(0, info(Generation::Rfc), 0);
    for id in 1..=2 {
        assert_eq!(
            registration_outcome(&pr.message(a, &registration(b"l", id, Policy::Random), 0)),
            (false, None)
        );
    }
    assert_eq!(
        registration_outcome(&pr.message(a, &registration(b"l", 3, Policy::Random), 0)),
        (true, Some(cause::LACK_OF_RESOURCES))
    );
    // A re-registration of a PE it has is not a new PE.
    assert_eq!(
        registration_outcome(&pr.message(a, &registration(b"l", 2, Policy::Random), 0)),
        (false, None)
    );
    // 4 requests so far; 6 more fit the second, the next is refused until tokens refill.
    let b = pr.open(1, info(Generation::Rfc), 0);
    for _ in 0..10 {
        assert!(resolved(&pr.message(b, &resolution(b"l", None), 1_000)).is_ok());
    }
    assert_eq!(
        resolved(&pr.message(b, &resolution(b"l", None), 1_000)),
        Err(cause::LACK_OF_RESOURCES)
    );
    assert!(
        resolved(&pr.message(b, &resolution(b"l", None), 1_100)).is_ok(),
        "refilled"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Network input is hostile: random and mutated messages never panic and never disturb the
    /// PEs registered by others.
    #[test]
    fn hostile_messages_never_disturb_registered_pes(
        garbage in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96), 1..40),
        flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..40),
    ) {
        let mut pr = cluster(2);
        let pe = pr.open(0, info(Generation::Rfc), 0);
        // Another host (a host may move its own PEs between its associations).
        let attacker = pr.open(
            1,
            AssociationInfo {
                transport: UrlTransport::Tcp,
                generation: Generation::Rfc,
                peer_addresses: vec!["203.0.113.66:5000".parse().unwrap()],
                protocol: crate::core::Protocol::Asap,
            },
            0,
        );
        pr.message(pe, &registration(b"safe", 1, Policy::RoundRobin), 0);
        let before = pr
            .workers()
            .iter()
            .find_map(|w| w.shard().entry(b"safe", PeId(1)).cloned());
        proptest::prop_assert!(before.is_some());
        for g in &garbage {
            pr.message(attacker, g, 1);
        }
        let valid = [registration(b"safe", 1, Policy::RoundRobin), resolution(b"safe", None), ack(b"safe", 1)];
        for (i, (at, x)) in flips.iter().enumerate() {
            let mut m = valid[i % valid.len()].clone();
            let n = m.len();
            m[at % n] ^= x | 1;
            pr.message(attacker, &m, 1);
        }
        // Others may join the pool, but PE 1 is still there, unchanged.
        let entry = |pr: &InMemoryPr| {
            pr.workers()
                .iter()
                .find_map(|w| w.shard().entry(b"safe", PeId(1)).cloned())
        };
        proptest::prop_assert_eq!(entry(&pr), before);
        let (ids, _) = resolved(&pr.message(pe, &resolution(b"safe", Some(128)), 2)).unwrap();
        proptest::prop_assert!(ids.contains(&1));
    }
}

#[test]
fn pa21_a_message_with_a_foreign_ppid_aborts_its_association_and_removes_its_pes() {
    // RFC 5352 §5 / RFC 5353 §5: ASAP is PPID 11 and ENRP 12 (checklist PA-21). The core checks
    // the PPID an SCTP driver passes with each message; a stream frame carries none.
    let mut pr = cluster(1);
    let a = pr.open(0, info(Generation::Rfc), 0);
    let registered = pr.message(a, &registration(b"ppid", 1, Policy::RoundRobin), 0);
    assert_eq!(registration_outcome(&registered), (false, None));
    let w = &mut pr.workers_mut()[0];
    let reader = w.reader().clone();
    let mut out = crate::core::Output::default();
    let asap = Received::Message {
        association: a,
        ppid: Some(rserpool_protocol::PPID_ASAP),
        message: &resolution(b"ppid", None),
    };
    w.handle(&reader.pin(), asap, 1, &mut out);
    assert_eq!(out.transmits().count(), 1, "PPID 11 is served");
    assert!(out.aborts().is_empty());
    out.clear();
    let enrp = Received::Message {
        association: a,
        ppid: Some(rserpool_protocol::PPID_ENRP),
        message: &resolution(b"ppid", None),
    };
    w.handle(&reader.pin(), enrp, 2, &mut out);
    assert_eq!(out.aborts(), [a]);
    assert_eq!(out.transmits().count(), 0, "not answered");
    assert!(!w.has_association(a), "closed in the core at once");
    assert_eq!(w.shard().pe_count(), 0, "its PE went with it");
}

#[test]
fn associations_that_neither_register_nor_resolve_are_aborted_after_the_idle_timeout() {
    // Resource exhaustion (RFC 5355 §2.1-2.2 floods): a peer holding an association it does not use. limits.idle_timeout_ms.
    let mut config = config();
    config.idle_timeout = 1_000;
    for workers in [1, 2] {
        let mut pr = InMemoryPr::new(workers, config.clone(), Limits::default(), 7);
        let pe = pr.open(0, info(Generation::Rfc), 0);
        let pu = pr.open(workers - 1, info(Generation::Rfc), 0);
        let silent = pr.open(0, info(Generation::Rfc), 0);
        let noisy = pr.open(workers - 1, info(Generation::Rfc), 0);
        let peer = pr.open(
            0,
            AssociationInfo {
                protocol: crate::core::Protocol::Enrp,
                ..info(Generation::Rfc)
            },
            0,
        );
        let registered = pr.message(pe, &registration(b"idle", 1, Policy::RoundRobin), 10);
        assert_eq!(registration_outcome(&registered), (false, None));
        assert_eq!(
            resolved(&pr.message(pu, &resolution(b"idle", None), 20)),
            Ok((vec![1], Some(Policy::RoundRobin)))
        );
        // Messages that are not requests (an unknown type, a keep-alive ack of nothing) do not
        // count as use.
        pr.message(noisy, &[0x3f, 0, 0, 4], 30);
        pr.message(noisy, &ack(b"idle", 9), 40);
        pr.on_timer(999);
        assert!(pr.take_aborts().is_empty(), "not before the timeout");
        pr.on_timer(1_000);
        let mut aborted = pr.take_aborts();
        aborted.sort();
        let mut idle = vec![silent, noisy];
        idle.sort();
        assert_eq!(aborted, idle, "{workers} workers");
        assert!(
            pr.workers()
                .iter()
                .all(|w| !w.has_association(silent) && !w.has_association(noisy))
        );
        assert!(pr.workers().iter().any(|w| w.has_association(pe)));
        assert!(pr.workers().iter().any(|w| w.has_association(pu)));
        assert!(
            pr.workers().iter().any(|w| w.has_association(peer)),
            "ENRP is exempt"
        );
        let refused: u64 = pr
            .metrics()
            .iter()
            .map(|m| {
                m.counters.limit_refusals[crate::core::counters::Limit::IdleTimeout as usize]
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum();
        assert_eq!(refused, 2);
        assert_eq!(
            resolved(&pr.message(pu, &resolution(b"idle", None), 5_000)),
            Ok((vec![1], Some(Policy::RoundRobin))),
            "the PE and the PU stay"
        );
    }
}

#[test]
fn no_idle_timeout_when_it_is_zero() {
    let mut pr = cluster(1);
    let silent = pr.open(0, info(Generation::Rfc), 0);
    pr.on_timer(10_000_000);
    assert!(pr.take_aborts().is_empty());
    assert!(pr.workers()[0].has_association(silent));
}
