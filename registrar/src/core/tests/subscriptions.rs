//! ASAP subscriptions (RFC 5352 §2.2.5-6): the S bit answered with the A bit, pushes on every
//! change of the pool (from ASAP, timers and ENRP), coalesced per interval, limits, and the end
//! of a subscription with its association; on PRs of one and of several workers, the pool in
//! another worker's shard than the subscriber's association.

use rserpool_handlespace::{AssociationId, Limits, PeId, shard_index};
use rserpool_protocol::{
    AsapMessage, Generation, Policy, PoolHandle, Resolution, TransportKind, UpdateAction, cause,
};

use super::{PE_IP, config, encode, info, registration, registration_with, resolution, run};
use crate::core::counters::SubscriptionRefusal;
use crate::core::in_memory::{InMemoryPr, Sent};
use crate::core::{CoreConfig, SubscriptionConfig, Target};
use std::sync::atomic::Ordering::Relaxed;

/// A resolution response as a subscriber sees it: the A bit, and the PE IDs (sorted) or the
/// cause.
type Response = (bool, Result<Vec<u64>, u16>);

fn subscribe(handle: &[u8], items: Option<u32>) -> Vec<u8> {
    encode(
        &AsapMessage::HandleResolution {
            subscribe: true,
            pool_handle: PoolHandle(handle),
            items,
        },
        Generation::Rfc,
    )
}

/// The handle resolution responses among `sent` that go to `pu`, in order.
fn responses(sent: &[Sent], pu: AssociationId) -> Vec<Response> {
    sent.iter()
        .filter(|s| s.target == Target::Association(pu))
        .filter_map(|s| {
            match AsapMessage::decode(&s.bytes, Generation::Rfc)
                .expect("decodable")
                .message
            {
                AsapMessage::HandleResolutionResponse {
                    accepted,
                    resolution,
                    ..
                } => Some((
                    accepted,
                    match resolution {
                        Resolution::Found { pool_elements, .. } => {
                            let mut ids: Vec<u64> = pool_elements.iter().map(|p| p.id.0).collect();
                            ids.sort_unstable();
                            Ok(ids)
                        }
                        Resolution::Failed(e) => Err(e.iter().next().map_or(0, |c| c.code)),
                    },
                )),
                _ => None,
            }
        })
        .collect()
}

fn deregistration(handle: &[u8], id: u64) -> Vec<u8> {
    encode(
        &AsapMessage::Deregistration {
            pool_handle: PoolHandle(handle),
            pe_id: PeId(id),
        },
        Generation::Rfc,
    )
}

/// A handle in a shard other than `worker`'s when there are several workers.
fn handle_away_from(worker: usize, workers: usize, name: &str) -> Vec<u8> {
    (0..)
        .map(|i| format!("{name}-{i}").into_bytes())
        .find(|h| workers == 1 || shard_index(h, workers) != worker)
        .expect("some handle")
}

fn pr_with(workers: usize, subscriptions: SubscriptionConfig) -> InMemoryPr {
    let config = CoreConfig {
        subscriptions,
        ..config()
    };
    InMemoryPr::new(workers, config, Limits::default(), 7)
}

/// Subscriptions pushing every change at once.
fn immediate() -> SubscriptionConfig {
    SubscriptionConfig {
        min_push_interval: 0,
        ..SubscriptionConfig::default()
    }
}

fn held(pr: &InMemoryPr) -> usize {
    pr.workers().iter().map(|w| w.subscription_count()).sum()
}

fn metric(pr: &InMemoryPr, f: impl Fn(&crate::core::counters::Counters) -> u64) -> u64 {
    pr.metrics().iter().map(|m| f(&m.counters)).sum()
}

const OK: fn(&[u64]) -> Response = |ids| (true, Ok(ids.to_vec()));
const GONE: Response = (true, Err(cause::UNKNOWN_POOL_HANDLE));

#[test]
fn the_s_bit_is_answered_with_the_a_bit_and_every_change_is_pushed() {
    for workers in [1, 3] {
        let mut pr = pr_with(workers, immediate());
        let pu = pr.open(0, info(Generation::Rfc), 0);
        let pe = pr.open(workers - 1, info(Generation::Rfc), 0);
        let h = handle_away_from(0, workers, "pool");
        pr.message(pe, &registration(&h, 1, Policy::RoundRobin), 0);
        let sent = pr.message(pu, &subscribe(&h, Some(8)), 1);
        assert_eq!(responses(&sent, pu), [OK(&[1])], "{workers} workers");
        assert_eq!(held(&pr), 1);
        assert_eq!(metric(&pr, |c| c.subscriptions.load(Relaxed)), 1);
        assert_eq!(metric(&pr, |c| c.subscriptions_accepted.load(Relaxed)), 1);

        // Added.
        let sent = pr.message(pe, &registration(&h, 2, Policy::RoundRobin), 2);
        assert_eq!(
            responses(&sent, pu),
            [OK(&[1, 2])],
            "add, {workers} workers"
        );
        // Re-registered unchanged: nothing changed, nothing pushed.
        let sent = pr.message(pe, &registration(&h, 2, Policy::RoundRobin), 3);
        assert_eq!(responses(&sent, pu), [], "unchanged re-registration");
        // Re-registered with another attribute (its life).
        let changed = registration_with(
            &h,
            2,
            Policy::RoundRobin,
            TransportKind::Sctp,
            0,
            &[PE_IP],
            60_000,
            Generation::Rfc,
        );
        let sent = pr.message(pe, &changed, 4);
        assert_eq!(responses(&sent, pu), [OK(&[1, 2])], "attribute change");
        // Deregistered, then the pool's last PE: unknown pool, the subscription stays.
        let sent = pr.message(pe, &deregistration(&h, 1), 5);
        assert_eq!(responses(&sent, pu), [OK(&[2])], "deregistration");
        let sent = pr.message(pe, &deregistration(&h, 2), 6);
        assert_eq!(responses(&sent, pu), [GONE], "the pool went away");
        let sent = pr.message(pe, &registration(&h, 3, Policy::RoundRobin), 7);
        assert_eq!(responses(&sent, pu), [OK(&[3])], "the pool is back");
        // Another pool's changes are not pushed.
        let sent = pr.message(pe, &registration(b"other", 9, Policy::RoundRobin), 8);
        assert_eq!(responses(&sent, pu), []);
        // The PE's association closes: its PE leaves, pushed.
        let sent = pr.close(pe, 9);
        assert_eq!(responses(&sent, pu), [GONE], "association closed");
        assert_eq!(metric(&pr, |c| c.subscription_pushes.load(Relaxed)), 6);
    }
}

#[test]
fn a_subscription_ends_with_its_association() {
    for workers in [1, 2, 3] {
        let mut pr = pr_with(workers, immediate());
        let pu = pr.open(0, info(Generation::Rfc), 0);
        let pe = pr.open(workers - 1, info(Generation::Rfc), 0);
        let h = handle_away_from(0, workers, "closing");
        pr.message(pe, &registration(&h, 1, Policy::RoundRobin), 0);
        pr.message(pu, &subscribe(&h, None), 0);
        pr.message(pu, &subscribe(b"nothing-yet", None), 0);
        assert_eq!(held(&pr), 2);
        pr.close(pu, 1);
        assert_eq!(held(&pr), 0, "{workers} workers");
        assert_eq!(metric(&pr, |c| c.subscriptions.load(Relaxed)), 0);
        let sent = pr.message(pe, &registration(&h, 2, Policy::RoundRobin), 2);
        assert_eq!(responses(&sent, pu), [], "no push after the close");
        assert!(sent.iter().all(|s| s.target != Target::Association(pu)));
        // The total is free again: another PU subscribes under a total limit of 1.
        let mut pr = pr_with(
            workers,
            SubscriptionConfig {
                max_total: 1,
                ..immediate()
            },
        );
        let a = pr.open(0, info(Generation::Rfc), 0);
        let b = pr.open(workers - 1, info(Generation::Rfc), 0);
        let a_bit = |pr: &mut InMemoryPr, pu, now| {
            responses(&pr.message(pu, &subscribe(&h, None), now), pu)[0].0
        };
        assert!(a_bit(&mut pr, a, 0));
        assert!(!a_bit(&mut pr, b, 0), "the total is taken");
        pr.close(a, 1);
        assert!(a_bit(&mut pr, b, 2), "the total is free again");
    }
}

#[test]
fn expiry_and_keep_alive_failures_are_pushed() {
    for workers in [1, 3] {
        let mut pr = pr_with(workers, immediate());
        let pu = pr.open(0, info(Generation::Rfc), 0);
        let pe = pr.open(workers - 1, info(Generation::Rfc), 0);
        let expiring = handle_away_from(0, workers, "expiring");
        let silent = handle_away_from(0, workers, "silent");
        let short_life = registration_with(
            &expiring,
            1,
            Policy::RoundRobin,
            TransportKind::Sctp,
            0,
            &[PE_IP],
            1_000,
            Generation::Rfc,
        );
        pr.message(pe, &short_life, 0);
        let long_life = registration_with(
            &silent,
            2,
            Policy::RoundRobin,
            TransportKind::Sctp,
            0,
            &[PE_IP],
            3_600_000,
            Generation::Rfc,
        );
        pr.message(pe, &long_life, 0);
        pr.message(pu, &subscribe(&expiring, None), 0);
        pr.message(pu, &subscribe(&silent, None), 0);
        // The life runs out at 1 s; the keep-alive (5 s ± 12.5 %) goes unanswered for 5 s.
        let sent: Vec<Sent> = run(&mut pr, 1, 12_000)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        let pushed = responses(&sent, pu);
        assert_eq!(pushed, [GONE, GONE], "{workers} workers: {pushed:?}");
        let removals = |reason| metric(&pr, |c| c.pe_removals[reason as usize].load(Relaxed));
        use crate::core::counters::RemovalReason;
        assert_eq!(removals(RemovalReason::Expired), 1);
        assert_eq!(removals(RemovalReason::KeepAliveTimeout), 1);
    }
}

#[test]
fn pushes_are_coalesced_to_one_per_interval() {
    for workers in [1, 3] {
        let mut pr = pr_with(
            workers,
            SubscriptionConfig {
                min_push_interval: 10,
                ..SubscriptionConfig::default()
            },
        );
        let pu = pr.open(0, info(Generation::Rfc), 0);
        let pe = pr.open(workers - 1, info(Generation::Rfc), 0);
        let h = handle_away_from(0, workers, "burst");
        pr.message(pe, &registration(&h, 1, Policy::RoundRobin), 0);
        pr.message(pu, &subscribe(&h, Some(16)), 0);
        // Three changes within the interval after the answer: nothing yet, one push at 10.
        let mut sent = Vec::new();
        for (id, now) in [(2, 1), (3, 2), (4, 9)] {
            sent.extend(pr.message(pe, &registration(&h, id, Policy::RoundRobin), now));
        }
        assert_eq!(responses(&sent, pu), [], "{workers} workers");
        assert_eq!(pr.next_timeout(), Some(10));
        let sent: Vec<Sent> = run(&mut pr, 9, 10).into_iter().map(|(_, s)| s).collect();
        assert_eq!(responses(&sent, pu), [OK(&[1, 2, 3, 4])]);
        // A change 5 ms after that push waits for 20; a change after the interval goes at once.
        let sent = pr.message(pe, &deregistration(&h, 4), 15);
        assert_eq!(responses(&sent, pu), []);
        let sent: Vec<(u64, Sent)> = run(&mut pr, 16, 25);
        let at: Vec<u64> = sent
            .iter()
            .filter(|(_, s)| s.target == Target::Association(pu))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(at, [20], "one push at the interval's end");
        let sent = pr.message(pe, &deregistration(&h, 3), 40);
        assert_eq!(
            responses(&sent, pu),
            [OK(&[1, 2])],
            "after the interval: at once"
        );
        assert_eq!(metric(&pr, |c| c.subscription_pushes.load(Relaxed)), 3);
    }
}

#[test]
fn beyond_each_limit_the_answer_has_no_a_bit_and_the_refusal_is_counted() {
    for workers in [1, 2] {
        let mut pr = pr_with(
            workers,
            SubscriptionConfig {
                max_per_association: 2,
                max_total: 3,
                min_push_interval: 0,
            },
        );
        let one = pr.open(0, info(Generation::Rfc), 0);
        let two = pr.open(workers - 1, info(Generation::Rfc), 0);
        let a_bit = |pr: &mut InMemoryPr, pu, h: &[u8]| {
            let r = responses(&pr.message(pu, &subscribe(h, None), 0), pu);
            assert_eq!(r.len(), 1);
            r[0].0
        };
        assert!(a_bit(&mut pr, one, b"a"));
        assert!(a_bit(&mut pr, one, b"b"));
        assert!(!a_bit(&mut pr, one, b"c"), "per association");
        assert!(a_bit(&mut pr, one, b"a"), "a renewal is within the limit");
        assert!(a_bit(&mut pr, two, b"a"));
        assert!(!a_bit(&mut pr, two, b"b"), "in total, {workers} workers");
        assert_eq!(held(&pr), 3);
        let refused = |reason: SubscriptionRefusal| {
            metric(&pr, |c| {
                c.subscription_refusals[reason as usize].load(Relaxed)
            })
        };
        assert_eq!(refused(SubscriptionRefusal::PerAssociation), 1);
        assert_eq!(refused(SubscriptionRefusal::Total), 1);
        // The refused one gets no push.
        let pe = pr.open(0, info(Generation::Rfc), 0);
        let sent = pr.message(pe, &registration(b"c", 1, Policy::RoundRobin), 1);
        assert_eq!(responses(&sent, one), []);
        // 0 turns subscriptions off.
        let mut off = pr_with(
            workers,
            SubscriptionConfig {
                max_per_association: 0,
                ..immediate()
            },
        );
        let pu = off.open(0, info(Generation::Rfc), 0);
        assert!(!a_bit(&mut off, pu, b"a"));
        assert_eq!(held(&off), 0);
    }
}

#[test]
fn subscribing_again_keeps_one_subscription_with_the_new_item_count() {
    for workers in [1, 3] {
        let mut pr = pr_with(workers, immediate());
        let pu = pr.open(0, info(Generation::Rfc), 0);
        let pe = pr.open(workers - 1, info(Generation::Rfc), 0);
        let h = handle_away_from(0, workers, "again");
        for id in 1..=4 {
            pr.message(pe, &registration(&h, id, Policy::RoundRobin), 0);
        }
        let sent = pr.message(pu, &subscribe(&h, Some(1)), 0);
        assert_eq!(responses(&sent, pu)[0].1.as_ref().map(Vec::len), Ok(1));
        let sent = pr.message(pu, &subscribe(&h, Some(3)), 0);
        assert_eq!(responses(&sent, pu)[0].1.as_ref().map(Vec::len), Ok(3));
        assert_eq!(held(&pr), 1, "{workers} workers");
        assert_eq!(metric(&pr, |c| c.subscriptions_accepted.load(Relaxed)), 1);
        let sent = pr.message(pe, &registration(&h, 5, Policy::RoundRobin), 1);
        let pushed = responses(&sent, pu);
        assert_eq!(pushed.len(), 1, "one push per change: {pushed:?}");
        assert_eq!(
            pushed[0].1.as_ref().map(Vec::len),
            Ok(3),
            "the new item count"
        );
        assert!(pushed[0].0);
    }
}

#[test]
fn a_pool_that_does_not_exist_yet_is_watched_until_it_appears() {
    for workers in [1, 3] {
        let mut pr = pr_with(workers, immediate());
        let pu = pr.open(0, info(Generation::Rfc), 0);
        let pe = pr.open(workers - 1, info(Generation::Rfc), 0);
        let h = handle_away_from(0, workers, "later");
        let sent = pr.message(pu, &subscribe(&h, None), 0);
        assert_eq!(responses(&sent, pu), [GONE], "{workers} workers");
        assert_eq!(held(&pr), 1);
        let sent = pr.message(pe, &registration(&h, 7, Policy::RoundRobin), 1);
        assert_eq!(responses(&sent, pu), [OK(&[7])]);
    }
}

#[test]
fn over_udp_the_s_bit_is_answered_without_the_a_bit() {
    let mut pr = pr_with(2, immediate());
    let pe = pr.open(0, info(Generation::Rfc), 0);
    pr.message(pe, &registration(b"udp", 1, Policy::RoundRobin), 0);
    let from = "127.0.0.1:5555".parse().unwrap();
    let sent = pr.datagram(1, Generation::Rfc, from, &subscribe(b"udp", None), 0);
    match super::only(&sent) {
        AsapMessage::HandleResolutionResponse { accepted, .. } => assert!(!accepted),
        other => panic!("expected a resolution response, got {other:?}"),
    }
    assert_eq!(held(&pr), 0);
    // A plain resolution over an association keeps the A bit clear too.
    let pu = pr.open(1, info(Generation::Rfc), 0);
    let sent = pr.message(pu, &resolution(b"udp", None), 0);
    assert_eq!(responses(&sent, pu), [(false, Ok(vec![1]))]);
}

/// The owner notifies a watcher whose answer predates a change that reached the shard before its
/// watch did (mailboxes delivered a loop turn later).
#[test]
fn a_change_between_the_answer_and_the_watch_is_pushed() {
    let mut pr = pr_with(2, immediate());
    pr.set_asynchronous(true);
    let pu = pr.open(0, info(Generation::Rfc), 0);
    let pe = pr.open(1, info(Generation::Rfc), 0);
    let h = handle_away_from(0, 2, "race");
    pr.message(pe, &registration(&h, 1, Policy::RoundRobin), 0);
    let sent = pr.message(pu, &subscribe(&h, None), 0);
    assert_eq!(responses(&sent, pu), [OK(&[1])]);
    // The watch waits in worker 0's mailbox to worker 1; the PE registers first.
    pr.message(pe, &registration(&h, 2, Policy::RoundRobin), 1);
    let mut sent = pr.deliver_forwards(2);
    while pr.pending_forwards() {
        sent.extend(pr.deliver_forwards(2));
    }
    assert_eq!(responses(&sent, pu), [OK(&[1, 2])]);
}

#[test]
fn a_change_from_a_peer_over_enrp_is_pushed() {
    use super::enrp::{PEER, join, pe_element, scope_pr_with, update};
    for workers in [1, 3] {
        let mut config = super::enrp::scope_config(Vec::new());
        config.subscriptions = immediate();
        let mut pr = scope_pr_with(workers, config);
        let peer = join(&mut pr, PEER, 0);
        let pu = pr.open(0, info(Generation::Rfc), 0);
        let h = handle_away_from(0, workers, "enrp");
        let sent = pr.message(pu, &subscribe(&h, None), 0);
        assert_eq!(responses(&sent, pu), [GONE]);
        let sent = pr.message(
            peer,
            &update(PEER, UpdateAction::AddPe, &h, pe_element(5, PEER)),
            1,
        );
        assert_eq!(responses(&sent, pu), [OK(&[5])], "{workers} workers");
        let sent = pr.message(
            peer,
            &update(PEER, UpdateAction::DelPe, &h, pe_element(5, PEER)),
            2,
        );
        assert_eq!(responses(&sent, pu), [GONE]);
    }
}

/// RFC 5353 §3.5 takeover: the PEs of a dead PR get a new home PR, which the PE parameters of
/// a resolution carry; each subscriber of their pools gets a push naming the new home.
#[test]
fn a_takeover_of_the_pes_home_pr_is_pushed() {
    use super::enrp::{PEER, PEER2, join, pe_element, scope_pr_with, update};
    use rserpool_protocol::EnrpBody;
    for workers in [1, 3] {
        let mut config = super::enrp::scope_config(Vec::new());
        config.subscriptions = immediate();
        let mut pr = scope_pr_with(workers, config);
        let dead = join(&mut pr, PEER, 0);
        let winner = join(&mut pr, PEER2, 0);
        let h = handle_away_from(0, workers, "takeover");
        pr.message(
            dead,
            &update(PEER, UpdateAction::AddPe, &h, pe_element(5, PEER)),
            0,
        );
        let pu = pr.open(0, info(Generation::Rfc), 0);
        let sent = pr.message(pu, &subscribe(&h, None), 1);
        assert_eq!(responses(&sent, pu), [OK(&[5])]);
        assert_eq!(homes(&sent, pu), [vec![PEER.0]]);
        pr.message(
            winner,
            &super::enrp::encode(PEER2, EnrpBody::InitTakeover { target: PEER }),
            10,
        );
        let sent = pr.message(
            winner,
            &super::enrp::encode(PEER2, EnrpBody::TakeoverServer { target: PEER }),
            20,
        );
        assert_eq!(responses(&sent, pu), [OK(&[5])], "{workers} workers");
        assert_eq!(homes(&sent, pu), [vec![PEER2.0]], "{workers} workers");
    }
}

/// The home PR IDs of the PEs of each handle resolution response among `sent` to `pu`.
fn homes(sent: &[Sent], pu: AssociationId) -> Vec<Vec<u64>> {
    sent.iter()
        .filter(|s| s.target == Target::Association(pu))
        .filter_map(
            |s| match AsapMessage::decode(&s.bytes, Generation::Rfc).ok()?.message {
                AsapMessage::HandleResolutionResponse {
                    resolution: Resolution::Found { pool_elements, .. },
                    ..
                } => Some(pool_elements.iter().map(|p| p.home_pr.0).collect()),
                _ => None,
            },
        )
        .collect()
}
