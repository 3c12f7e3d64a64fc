//! Keep-alives and the removal of PEs (RFC 5352 §3.4-3.5; checklist PA-15..PA-18, PA-20): the
//! keep-alive cycle and its timeout, unreachable reports, an association's close, and the end of a
//! registration's life.

use rserpool_handlespace::PeId;
use rserpool_protocol::{AsapMessage, Generation, Policy, PoolHandle, TransportKind, cause};

use super::{
    PE_IP, PR, ack, cluster, encode, info, keep_alives, registration, registration_outcome,
    registration_with, resolution, resolved, run,
};
use crate::core::Target;
use crate::core::counters::RemovalReason;
use crate::core::in_memory::{InMemoryPr, Sent};
use std::sync::atomic::Ordering::Relaxed;

#[test]
fn pa15_pa16_keep_alive_cycle_keeps_answering_pes_and_removes_silent_ones() {
    for workers in [1, 3] {
        let mut pr = cluster(workers);
        let live = pr.open(0, info(Generation::Rfc), 0);
        let silent = pr.open(workers - 1, info(Generation::Rfc), 0);
        let life = 3_600_000;
        let reg = |id| {
            registration_with(
                b"ka",
                id,
                Policy::RoundRobin,
                TransportKind::Sctp,
                0,
                &[PE_IP],
                life,
                Generation::Rfc,
            )
        };
        pr.message(live, &reg(1), 0);
        pr.message(silent, &reg(2), 0);
        let mut now = 0;
        let mut live_keep_alives = Vec::new();
        let mut silent_keep_alives = Vec::new();
        while now < 30_000 {
            let next = now + 100;
            for (t, s) in run(&mut pr, now + 1, next) {
                for (target, pe, home, server) in keep_alives(std::slice::from_ref(&s)) {
                    assert!(!home, "H=0 from the home PR");
                    assert_eq!(server, PR);
                    if target == Target::Association(live) {
                        assert_eq!(pe, 1);
                        live_keep_alives.push(t);
                        pr.message(live, &ack(b"ka", 1), t);
                    } else {
                        assert_eq!((target, pe), (Target::Association(silent), 2));
                        silent_keep_alives.push(t);
                    }
                }
            }
            now = next;
        }
        // RSPLIB's 5 s cycle with ±12.5 % jitter.
        assert!(live_keep_alives.len() >= 5, "{live_keep_alives:?}");
        for gap in live_keep_alives.windows(2).map(|w| w[1] - w[0]) {
            assert!((4_375..=5_725).contains(&gap), "gap {gap}");
        }
        assert_eq!(
            silent_keep_alives.len(),
            1,
            "one outstanding keep-alive, then removal"
        );
        let (ids, _) = resolved(&pr.message(live, &resolution(b"ka", Some(10)), now)).unwrap();
        assert_eq!(ids, [1], "the silent PE is gone, the answering one stays");
    }
}

#[test]
fn re_registrations_postpone_the_keep_alive_and_answer_an_outstanding_one() {
    // RSPLIB's 5 s keep-alive interval with ±12.5 % jitter: 4 375-5 625 ms.
    for workers in [1, 2] {
        let mut pr = cluster(workers);
        let a = pr.open(workers - 1, info(Generation::Rfc), 0);
        let reg = registration(b"again", 1, Policy::RoundRobin);
        pr.message(a, &reg, 0);
        // Re-registering every 3 s: no keep-alive is ever due.
        let mut now = 0;
        while now < 20_000 {
            let sent = run(&mut pr, now + 1, now + 3_000);
            assert!(
                keep_alives(&sent.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>()).is_empty()
            );
            now += 3_000;
            pr.message(a, &reg, now);
        }
        // Silent from 21 s: the first keep-alive comes one interval after the last
        // re-registration, not one after the first timer.
        let sent: Vec<(u64, Sent)> = run(&mut pr, now + 1, now + 6_000);
        let first = sent
            .iter()
            .find(|(_, s)| !keep_alives(std::slice::from_ref(s)).is_empty())
            .map(|(t, _)| t - now)
            .expect("a keep-alive once silent");
        assert!((4_375..=5_625).contains(&first), "after {first} ms");
        // A re-registration while the keep-alive waits for its ack is a sign of life too: no
        // removal at the ack timeout.
        let outstanding = now + first;
        pr.message(a, &reg, outstanding + 10);
        run(&mut pr, outstanding + 1, outstanding + 6_000);
        let (ids, _) =
            resolved(&pr.message(a, &resolution(b"again", None), outstanding + 6_000)).unwrap();
        assert_eq!(ids, [1], "still registered");
    }
}

/// The PEs the PR's workers counted as removed for `reason`.
fn removals(pr: &InMemoryPr, reason: RemovalReason) -> u64 {
    pr.metrics()
        .iter()
        .map(|m| m.counters.pe_removals[reason as usize].load(Relaxed))
        .sum()
}

#[test]
fn a_keep_alive_timeout_is_counted_once() {
    // It was counted twice, by the association's worker and by the shard owner (seen over
    // kernel SCTP in registrar/tests/kernel_sctp.rs).
    for workers in [1, 3] {
        let mut pr = cluster(workers);
        let silent = pr.open(workers - 1, info(Generation::Rfc), 0);
        pr.message(silent, &registration(b"ka-count", 1, Policy::RoundRobin), 0);
        let sent = run(&mut pr, 1, 12_000);
        assert_eq!(
            keep_alives(&sent.into_iter().map(|(_, s)| s).collect::<Vec<_>>()).len(),
            1
        );
        assert_eq!(
            resolved(&pr.message(silent, &resolution(b"ka-count", None), 12_000)),
            Err(cause::UNKNOWN_POOL_HANDLE)
        );
        assert_eq!(
            removals(&pr, RemovalReason::KeepAliveTimeout),
            1,
            "{workers} workers"
        );
    }
}

#[test]
fn pa17_unreachable_reports_remove_the_pe_at_the_threshold() {
    let mut pr = cluster(2);
    let pe = pr.open(0, info(Generation::Rfc), 0);
    let pu = pr.open(1, info(Generation::Rfc), 0);
    pr.message(pe, &registration(b"u", 1, Policy::RoundRobin), 0);
    pr.message(pe, &registration(b"u", 2, Policy::RoundRobin), 0);
    let report = encode(
        &AsapMessage::EndpointUnreachable {
            pool_handle: PoolHandle(b"u"),
            pe_id: PeId(1),
        },
        Generation::Rfc,
    );
    for _ in 0..2 {
        assert!(
            pr.message(pu, &report, 1).is_empty(),
            "no answer to a report"
        );
    }
    assert_eq!(
        resolved(&pr.message(pu, &resolution(b"u", Some(9)), 1))
            .unwrap()
            .0
            .len(),
        2
    );
    pr.message(pu, &report, 1);
    assert_eq!(
        resolved(&pr.message(pu, &resolution(b"u", Some(9)), 1))
            .unwrap()
            .0,
        [2]
    );
    assert_eq!(
        pr.workers()[0].monitored_pes(),
        1,
        "the removed PE is no longer monitored"
    );
}

/// A keep-alive ack clears a PE's unreachable reports, also when the PE's shard and its
/// association are on different workers (the shard owner tells the association's worker, whose
/// next ack of that PE, and only that one, goes back).
#[test]
fn pa17_a_keep_alive_ack_clears_the_unreachable_reports() {
    for workers in [1, 3] {
        let mut pr = cluster(workers);
        let pe = pr.open(0, info(Generation::Rfc), 0);
        let pu = pr.open(workers - 1, info(Generation::Rfc), 0);
        pr.message(pe, &registration(b"u", 1, Policy::RoundRobin), 0);
        let report = encode(
            &AsapMessage::EndpointUnreachable {
                pool_handle: PoolHandle(b"u"),
                pe_id: PeId(1),
            },
            Generation::Rfc,
        );
        let found = |pr: &mut InMemoryPr| {
            resolved(&pr.message(pu, &resolution(b"u", Some(9)), 1)).map_or(0, |r| r.0.len())
        };
        for _ in 0..2 {
            pr.message(pu, &report, 1);
        }
        pr.message(pe, &ack(b"u", 1), 1);
        for _ in 0..2 {
            pr.message(pu, &report, 1);
        }
        assert_eq!(
            found(&mut pr),
            1,
            "{workers} workers: the ack cleared the count"
        );
        pr.message(pu, &report, 1);
        assert_eq!(
            found(&mut pr),
            0,
            "{workers} workers: the third report since the ack"
        );
    }
}

#[test]
fn pa18_closing_an_association_removes_its_pes_in_every_shard() {
    let mut pr = cluster(4);
    let pe = pr.open(1, info(Generation::Rfc), 0);
    let pu = pr.open(2, info(Generation::Rfc), 0);
    let handles: Vec<Vec<u8>> = (0..40).map(|i| format!("pool-{i}").into_bytes()).collect();
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(
            registration_outcome(&pr.message(
                pe,
                &registration(h, i as u64 + 1, Policy::Random),
                0
            )),
            (false, None)
        );
    }
    let shards_used = pr
        .workers()
        .iter()
        .filter(|w| w.shard().pool_count() > 0)
        .count();
    assert_eq!(shards_used, 4, "the pools spread over every shard");
    assert_eq!(pr.workers()[1].monitored_pes(), 40);
    pr.close(pe, 1);
    for h in &handles {
        assert_eq!(
            resolved(&pr.message(pu, &resolution(h, None), 1)),
            Err(cause::UNKNOWN_POOL_HANDLE)
        );
    }
    assert_eq!(pr.workers()[1].monitored_pes(), 0);
}

#[test]
fn pa20_registration_life_expiry_removes_the_pe_and_tells_it() {
    let mut pr = cluster(3);
    let pe = pr.open(2, info(Generation::Rfc), 0);
    let reg = registration_with(
        b"life",
        3,
        Policy::RoundRobin,
        TransportKind::Sctp,
        0,
        &[PE_IP],
        2_000,
        Generation::Rfc,
    );
    pr.message(pe, &reg, 0);
    // Keep-alives answered: expiry by registration life still applies.
    let mut told = None;
    for (t, s) in run(&mut pr, 1, 2_500) {
        match AsapMessage::decode(&s.bytes, Generation::Rfc)
            .unwrap()
            .message
        {
            AsapMessage::DeregistrationResponse { pe_id, error, .. } => {
                assert_eq!((pe_id, error), (PeId(3), None));
                assert_eq!(s.target, Target::Association(pe));
                told = Some(t);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        told,
        Some(2_000),
        "unsolicited deregistration response at expiry"
    );
    assert_eq!(
        resolved(&pr.message(pe, &resolution(b"life", None), 2_500)),
        Err(cause::UNKNOWN_POOL_HANDLE)
    );
    assert_eq!(pr.workers()[2].monitored_pes(), 0);
}
