//! The PU core against the checklist (PU-02..PU-06, PU-08, PU-09) with simulated time and
//! connections.

use std::net::{IpAddr, SocketAddr};

use rserpool_protocol::{
    AsapMessage, ErrorCause, Generation, PeId, Policy, PoolElementParam, PoolHandle, PrId,
    Resolution, Seq, TransportKind, TransportParam, UserTransport, cause,
};

use super::*;
use crate::{Action, Cause, ConnId, Error, Registrar};

const HANDLE: &[u8] = b"echo";
const IPS: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)];

fn reg(port: u16) -> Registrar {
    Registrar::tcp(SocketAddr::from(([127, 0, 0, 1], port)))
}

struct Sim {
    pu: PoolUser,
}

impl Sim {
    fn new(config: Config) -> Self {
        Self {
            pu: PoolUser::new(config, 7),
        }
    }

    fn take(&mut self) -> Vec<Action<PuEvent>> {
        std::iter::from_fn(|| self.pu.poll_action()).collect()
    }

    /// A PU connected to its first registrar, with the actions so far consumed.
    fn connected(config: Config) -> (Self, ConnId) {
        let mut sim = Self::new(config);
        sim.pu.resolve(b"warm-up", None, 0);
        let (conn, _) = connects(&sim.take())[0];
        sim.pu.on_connected(conn, None, 0);
        sim.pu
            .on_message(conn, &failed(b"warm-up", cause::UNKNOWN_POOL_HANDLE), 0);
        sim.take();
        (sim, conn)
    }
}

fn connects(actions: &[Action<PuEvent>]) -> Vec<(ConnId, Registrar)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Connect { conn, registrar } => Some((*conn, *registrar)),
            _ => None,
        })
        .collect()
}

fn sends(actions: &[Action<PuEvent>]) -> Vec<(ConnId, Vec<u8>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { conn, message } => Some((*conn, message.clone())),
            _ => None,
        })
        .collect()
}

fn events(actions: &[Action<PuEvent>]) -> Vec<PuEvent> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn decode(bytes: &[u8]) -> AsapMessage<'_> {
    AsapMessage::decode(bytes, Generation::Rfc).unwrap().message
}

fn pe(id: u64, policy: Policy) -> PoolElementParam<'static> {
    PoolElementParam {
        id: PeId(id),
        home_pr: PrId(1),
        registration_life: 30_000,
        user_transport: UserTransport::Transport(TransportParam {
            kind: TransportKind::Tcp,
            port: 7,
            transport_use: 0,
            service_code: 0,
            addresses: Seq::from_items(&IPS),
        }),
        policy,
        asap_transport: None,
    }
}

fn found(handle: &[u8], policy: Option<Policy>, pes: &[PoolElementParam<'_>]) -> Vec<u8> {
    crate::encode(
        &AsapMessage::HandleResolutionResponse {
            accepted: false,
            pool_handle: PoolHandle(handle),
            resolution: Resolution::Found {
                policy,
                pool_elements: Seq::from_items(pes),
            },
        },
        Generation::Rfc,
    )
    .unwrap()
}

fn failed(handle: &[u8], code: u16) -> Vec<u8> {
    let causes = [ErrorCause { code, info: &[] }];
    crate::encode(
        &AsapMessage::HandleResolutionResponse {
            accepted: false,
            pool_handle: PoolHandle(handle),
            resolution: Resolution::Failed(Seq::from_items(&causes)),
        },
        Generation::Rfc,
    )
    .unwrap()
}

fn resolved_ids(event: &PuEvent) -> Vec<u64> {
    match event {
        PuEvent::Resolved { pool_elements, .. } => pool_elements.iter().map(|p| p.id.0).collect(),
        other => panic!("not resolved: {other:?}"),
    }
}

/// A PU with a cached pool of three PEs under `policy` (each PE carrying `pe_policy`).
fn cached(policy: Option<Policy>, pe_policy: Policy) -> (Sim, ConnId) {
    let (mut sim, conn) = Sim::connected(Config::new(vec![reg(1)]));
    sim.pu.resolve(HANDLE, Some(3), 10);
    sim.take();
    let pes = [pe(1, pe_policy), pe(2, pe_policy), pe(3, pe_policy)];
    sim.pu.on_message(conn, &found(HANDLE, policy, &pes), 20);
    sim.take();
    (sim, conn)
}

#[test]
fn a_resolution_goes_to_the_home_pr_after_a_server_hunt() {
    let mut sim = Sim::new(Config::new(vec![reg(1)]));
    let id = sim.pu.resolve(HANDLE, Some(5), 0);
    let actions = sim.take();
    assert_eq!(connects(&actions).len(), 1, "NR2: no home PR, hunt");
    assert!(sends(&actions).is_empty());
    let conn = connects(&actions)[0].0;
    sim.pu.on_connected(conn, None, 1);
    let actions = sim.take();
    assert_eq!(events(&actions), [PuEvent::Connected { registrar: reg(1) }]);
    let sent = sends(&actions);
    assert_eq!(
        decode(&sent[0].1),
        AsapMessage::HandleResolution {
            subscribe: false,
            pool_handle: PoolHandle(HANDLE),
            items: Some(5)
        }
    );
    sim.pu.on_message(
        conn,
        &found(HANDLE, Some(Policy::Random), &[pe(9, Policy::Random)]),
        2,
    );
    let ev = events(&sim.take());
    assert!(matches!(
        &ev[..],
        [PuEvent::Resolved { request, policy: Policy::Random, cached: false, .. }] if *request == id
    ));
    assert_eq!(resolved_ids(&ev[0]), [9]);
    assert_eq!(sim.pu.registrar(), Some(reg(1)));
}

/// Checklist PU-02 at the core: announced registrars are used; they expire after T7.
#[test]
fn pu02_an_announced_registrar_is_used_and_expires_after_t7() {
    let mut sim = Sim::new(Config::new(vec![]));
    sim.pu.resolve(HANDLE, None, 0);
    let ev = events(&sim.take());
    assert!(
        matches!(&ev[..], [PuEvent::Failed { error: Error::Unreachable(f), .. }] if f.is_empty()),
        "{ev:?}"
    );
    let announce = crate::encode(
        &AsapMessage::ServerAnnounce {
            server_id: PrId(77),
            transports: Seq::from_items(&[]),
        },
        Generation::Rfc,
    )
    .unwrap();
    let from: SocketAddr = "127.0.0.3:3863".parse().unwrap();
    sim.pu.on_announce(from, &announce, 100);
    assert_eq!(sim.pu.servers().entries().len(), 1);
    assert_eq!(sim.pu.servers().entries()[0].server_id, Some(PrId(77)));
    sim.pu.resolve(HANDLE, None, 200);
    assert_eq!(connects(&sim.take()), [(ConnId(1), Registrar::tcp(from))]);
    assert!(sim.pu.poll_timeout().unwrap() <= 5_100);
    sim.pu.handle_timeout(5_100);
    assert!(sim.pu.servers().entries().is_empty(), "T7 ran out");
}

/// Checklist PU-03: T1 expiry → resend and hunt in parallel, at most MAX-REQUEST-RETRANSMIT
/// times, then an error.
#[test]
fn pu03_t1_expiry_resends_with_a_parallel_hunt_then_fails() {
    let (mut sim, conn) = Sim::connected(Config::new(vec![reg(1), reg(2)]));
    let id = sim.pu.resolve(HANDLE, None, 1_000);
    assert_eq!(sends(&sim.take()).len(), 1);
    assert_eq!(sim.pu.poll_timeout(), Some(16_000), "T1");
    sim.pu.handle_timeout(16_000);
    let actions = sim.take();
    let resent = sends(&actions);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].0, conn, "resent to the home PR");
    assert!(!connects(&actions).is_empty(), "a server hunt in parallel");
    sim.pu.on_connect_failed(ConnId(99), "unrelated".into());
    for (c, _) in connects(&actions) {
        sim.pu.on_connect_failed(c, "refused".into());
    }
    sim.take();
    sim.pu.handle_timeout(31_000);
    assert_eq!(sends(&sim.take()).len(), 1, "second retransmission");
    sim.pu.handle_timeout(46_000);
    let ev = events(&sim.take());
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, PuEvent::Failed { request, error: Error::Timeout { attempts: 3, .. }, .. } if *request == id))
            .count(),
        1,
        "{ev:?}"
    );
}

/// RFC 5352 §3.7.2: another PR answering the parallel hunt becomes the home PR and gets the
/// request.
#[test]
fn the_parallel_hunt_adopts_the_registrar_that_answers() {
    let mut c = Config::new(vec![reg(1), reg(2)]);
    c.timers.max_parallel_connects = 1;
    let (mut sim, old) = Sim::connected(c);
    sim.pu.resolve(HANDLE, None, 0);
    sim.take();
    sim.pu.handle_timeout(15_000);
    let actions = sim.take();
    let (new, registrar) = connects(&actions)[0];
    assert_eq!(registrar, reg(2), "the next registrar");
    sim.pu.on_connected(new, None, 15_001);
    let actions = sim.take();
    assert!(actions.contains(&Action::Close { conn: old }));
    assert_eq!(
        sends(&actions).iter().filter(|(c, _)| *c == new).count(),
        1,
        "the unanswered request goes to the new home PR"
    );
    assert_eq!(sim.pu.registrar(), Some(reg(2)));
}

/// RFC 5352 §3.7.1: after the association fails the request goes to another PR.
#[test]
fn a_closed_connection_hunts_and_resends_elsewhere() {
    let mut c = Config::new(vec![reg(1), reg(2)]);
    c.timers.max_parallel_connects = 1;
    let (mut sim, conn) = Sim::connected(c);
    sim.pu.resolve(HANDLE, None, 0);
    sim.take();
    sim.pu.on_closed(conn, 5);
    let (next, registrar) = connects(&sim.take())[0];
    assert_eq!(registrar, reg(2));
    sim.pu.on_connected(next, None, 6);
    let sent = sends(&sim.take());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, next);
    assert_eq!(sim.pu.poll_timeout(), Some(15_000), "T1 keeps running");
}

/// Checklist PU-04: a fresh cache entry answers without a request; a stale one does not.
#[test]
fn pu04_fresh_cache_entries_answer_without_a_request() {
    let mut c = Config::new(vec![reg(1)]);
    c.cache_stale = 2_000;
    let (mut sim, conn) = Sim::connected(c);
    sim.pu.resolve(HANDLE, None, 10);
    sim.take();
    sim.pu
        .on_message(conn, &found(HANDLE, None, &[pe(1, Policy::RoundRobin)]), 20);
    sim.take();
    assert_eq!(sim.pu.cached(HANDLE, 20).map(<[_]>::len), Some(1));
    let id = sim.pu.resolve(HANDLE, None, 2_019);
    let actions = sim.take();
    assert!(sends(&actions).is_empty(), "C4: no request");
    assert!(matches!(
        &events(&actions)[..],
        [PuEvent::Resolved { request, cached: true, .. }] if *request == id
    ));
    assert!(sim.pu.cached(HANDLE, 2_020).is_none(), "stale");
    sim.pu.resolve(HANDLE, None, 2_020);
    let actions = sim.take();
    assert_eq!(
        sends(&actions).len(),
        1,
        "C3: a stale entry is resolved again"
    );
    assert!(events(&actions).is_empty());
    let mut none = Config::new(vec![reg(1)]);
    none.cache_stale = 0;
    let (mut sim, conn) = Sim::connected(none);
    sim.pu.resolve(HANDLE, None, 10);
    sim.pu
        .on_message(conn, &found(HANDLE, None, &[pe(1, Policy::RoundRobin)]), 20);
    sim.take();
    sim.pu.resolve(HANDLE, None, 20);
    assert_eq!(sends(&sim.take()).len(), 1, "no cache");
}

/// Checklist PU-05: the overall policy decides; the PE policy TLVs are ignored.
#[test]
fn pu05_selection_follows_the_overall_policy_and_ignores_pe_policies() {
    let (mut sim, _) = cached(Some(Policy::RoundRobin), Policy::Random);
    let picks: Vec<u64> = (0..4)
        .map(|_| sim.pu.select(HANDLE).unwrap().id.0)
        .collect();
    assert_eq!(picks, [1, 2, 3, 1], "round robin rotates");

    let (mut sim, _) = cached(
        Some(Policy::WeightedRoundRobin { weight: 1 }),
        Policy::LeastUsed { load: 0 },
    );
    let picks: Vec<u64> = (0..3)
        .map(|_| sim.pu.select(HANDLE).unwrap().id.0)
        .collect();
    assert_eq!(picks, [1, 2, 3]);

    let (mut sim, _) = cached(Some(Policy::Random), Policy::RoundRobin);
    let mut seen = [false; 3];
    for _ in 0..200 {
        let id = sim.pu.select(HANDLE).unwrap().id.0;
        seen[usize::try_from(id).unwrap() - 1] = true;
    }
    assert_eq!(seen, [true; 3], "random draws from the whole list");

    let (mut sim, _) = cached(Some(Policy::LeastUsed { load: 5 }), Policy::RoundRobin);
    assert!(
        (0..5).all(|_| sim.pu.select(HANDLE).unwrap().id.0 == 1),
        "in order"
    );
    assert_eq!(
        sim.pu.pe_failed(HANDLE, PeId(1), 100).unwrap().id,
        PeId(2),
        "the next in order after a failure"
    );

    let (mut sim, _) = cached(Some(Policy::Priority { priority: 1 }), Policy::Random);
    assert_eq!(sim.pu.select(HANDLE).unwrap().id, PeId(1));
    assert!(sim.pu.select(b"unknown").is_none());
}

/// Checklist PU-08: a positive response without the overall policy is round robin.
#[test]
fn pu08_a_response_without_overall_policy_is_round_robin() {
    let (mut sim, conn) = Sim::connected(Config::new(vec![reg(1)]));
    sim.pu.resolve(HANDLE, None, 10);
    sim.take();
    let pes = [
        pe(1, Policy::LeastUsed { load: 9 }),
        pe(2, Policy::LeastUsed { load: 1 }),
    ];
    sim.pu.on_message(conn, &found(HANDLE, None, &pes), 20);
    assert!(matches!(
        &events(&sim.take())[..],
        [PuEvent::Resolved {
            policy: Policy::RoundRobin,
            ..
        }]
    ));
    let picks: Vec<u64> = (0..3)
        .map(|_| sim.pu.select(HANDLE).unwrap().id.0)
        .collect();
    assert_eq!(picks, [1, 2, 1]);
}

/// Checklist PU-09: an Operation Error is surfaced; unknown causes are a generic failure.
#[test]
fn pu09_error_responses_become_typed_errors() {
    let (mut sim, conn) = Sim::connected(Config::new(vec![reg(1)]));
    sim.pu.resolve(b"nothing", None, 10);
    sim.take();
    sim.pu
        .on_message(conn, &failed(b"nothing", cause::UNKNOWN_POOL_HANDLE), 20);
    assert_eq!(
        events(&sim.take()),
        [PuEvent::Failed {
            request: RequestId(2),
            pool_handle: b"nothing".to_vec(),
            error: Error::UnknownPool {
                pool_handle: "nothing".into()
            }
        }]
    );
    for code in [0xf005, cause::LACK_OF_RESOURCES] {
        sim.pu.resolve(HANDLE, None, 30);
        sim.take();
        sim.pu.on_message(conn, &failed(HANDLE, code), 40);
        let ev = events(&sim.take());
        assert!(
            matches!(&ev[..], [PuEvent::Failed { error: Error::Operation { cause: Cause(c), .. }, .. }] if *c == code),
            "{ev:?}"
        );
    }
    // An answer for nothing asked is ignored.
    sim.pu.on_message(conn, &failed(b"other", 9), 50);
    assert!(sim.take().is_empty());
}

/// Checklist PU-06: one ENDPOINT_UNREACHABLE per failure, only for PEs the PU got, rate
/// limited per PE and overall.
#[test]
fn pu06_unreachable_reports_are_single_and_rate_limited() {
    let (mut sim, conn) = cached(Some(Policy::RoundRobin), Policy::RoundRobin);
    assert!(
        !sim.pu.report_unreachable(HANDLE, PeId(42), 100),
        "never used"
    );
    assert!(sim.pu.report_unreachable(HANDLE, PeId(1), 100));
    let sent = sends(&sim.take());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, conn);
    assert_eq!(
        decode(&sent[0].1),
        AsapMessage::EndpointUnreachable {
            pool_handle: PoolHandle(HANDLE),
            pe_id: PeId(1)
        }
    );
    assert!(
        !sim.pu.report_unreachable(HANDLE, PeId(1), 500),
        "same PE within the interval"
    );
    assert!(sim.pu.report_unreachable(HANDLE, PeId(1), 1_100));
    sim.take();

    let mut c = Config::new(vec![reg(1)]);
    c.max_reports_per_second = 2;
    let (mut sim, conn) = Sim::connected(c);
    sim.pu.resolve(HANDLE, None, 10);
    let pes = [
        pe(1, Policy::RoundRobin),
        pe(2, Policy::RoundRobin),
        pe(3, Policy::RoundRobin),
    ];
    sim.pu
        .on_message(conn, &found(HANDLE, Some(Policy::RoundRobin), &pes), 20);
    sim.take();
    let sent: Vec<bool> = (1..=3)
        .map(|id| sim.pu.report_unreachable(HANDLE, PeId(id), 30))
        .collect();
    assert_eq!(sent, [true, true, false], "two per second in all");
    assert!(sim.pu.report_unreachable(HANDLE, PeId(3), 1_030));
}

#[test]
fn pe_failed_reports_once_and_moves_to_the_next_pe() {
    let (mut sim, _) = cached(Some(Policy::RoundRobin), Policy::RoundRobin);
    assert_eq!(sim.pu.select(HANDLE).unwrap().id, PeId(1));
    assert_eq!(sim.pu.select(HANDLE).unwrap().id, PeId(2));
    let next = sim.pu.pe_failed(HANDLE, PeId(2), 100).unwrap();
    assert_eq!(next.id, PeId(3), "the rotation goes on past the failed PE");
    assert_eq!(sends(&sim.take()).len(), 1);
    let rest: Vec<u64> = (0..2)
        .map(|_| sim.pu.select(HANDLE).unwrap().id.0)
        .collect();
    assert_eq!(rest, [1, 3]);
    assert_eq!(sim.pu.pe_failed(HANDLE, PeId(1), 110).unwrap().id, PeId(3));
    assert!(sim.pu.pe_failed(HANDLE, PeId(3), 120).is_none());
}

#[test]
fn without_a_registrar_connection_a_report_waits_for_the_hunt() {
    let (mut sim, conn) = cached(Some(Policy::RoundRobin), Policy::RoundRobin);
    sim.pu.on_closed(conn, 50);
    assert!(sim.take().is_empty(), "nothing pending: no hunt");
    assert!(sim.pu.report_unreachable(HANDLE, PeId(2), 60));
    let actions = sim.take();
    assert!(sends(&actions).is_empty());
    let (next, _) = connects(&actions)[0];
    sim.pu.on_connected(next, None, 70);
    let sent = sends(&sim.take());
    assert_eq!(sent.len(), 1);
    assert!(matches!(
        decode(&sent[0].1),
        AsapMessage::EndpointUnreachable { pe_id: PeId(2), .. }
    ));
}

// Subscriptions (RFC 5352 §2.2.5-§2.2.6: the S and A bits).

/// A handle resolution response with the A bit as given.
fn answer(handle: &[u8], accepted: bool, pes: &[PoolElementParam<'_>]) -> Vec<u8> {
    crate::encode(
        &AsapMessage::HandleResolutionResponse {
            accepted,
            pool_handle: PoolHandle(handle),
            resolution: Resolution::Found {
                policy: Some(Policy::RoundRobin),
                pool_elements: Seq::from_items(pes),
            },
        },
        Generation::Rfc,
    )
    .unwrap()
}

/// An Unknown Pool Handle response with the A bit as given.
fn unknown(handle: &[u8], accepted: bool) -> Vec<u8> {
    let causes = [ErrorCause {
        code: cause::UNKNOWN_POOL_HANDLE,
        info: &[],
    }];
    crate::encode(
        &AsapMessage::HandleResolutionResponse {
            accepted,
            pool_handle: PoolHandle(handle),
            resolution: Resolution::Failed(Seq::from_items(&causes)),
        },
        Generation::Rfc,
    )
    .unwrap()
}

/// The changes of subscribed pools among `actions`.
fn changes(actions: &[Action<PuEvent>]) -> Vec<PoolChange> {
    events(actions)
        .into_iter()
        .filter_map(|e| match e {
            PuEvent::Subscription {
                pool_handle,
                change,
            } => {
                assert_eq!(pool_handle, HANDLE);
                Some(change)
            }
            _ => None,
        })
        .collect()
}

fn ids(pes: &[PeInfo]) -> Vec<u64> {
    pes.iter().map(|p| p.id.0).collect()
}

/// `(added, removed, changed, elements)` of an Elements change, as PE IDs.
fn diff_ids(change: &PoolChange) -> [Vec<u64>; 4] {
    match change {
        PoolChange::Elements {
            added,
            removed,
            changed,
            elements,
        } => [ids(added), ids(removed), ids(changed), ids(elements)],
        other => panic!("not an Elements change: {other:?}"),
    }
}

/// A PU connected to its first registrar with `HANDLE` subscribed and the subscription request
/// sent (returned).
fn subscribing(config: Config) -> (Sim, ConnId, Vec<u8>) {
    let (mut sim, conn) = Sim::connected(config);
    sim.pu.subscribe(HANDLE, Some(10), 100);
    let sent = sends(&sim.take());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, conn);
    (sim, conn, sent[0].1.clone())
}

#[test]
fn a_subscription_sets_the_s_bit_and_pushes_keep_the_pool_current() {
    let mut c = Config::new(vec![reg(1)]);
    c.cache_stale = 1_000;
    let (mut sim, conn, request) = subscribing(c);
    assert_eq!(
        decode(&request),
        AsapMessage::HandleResolution {
            subscribe: true,
            pool_handle: PoolHandle(HANDLE),
            items: Some(10)
        },
        "RFC 5352 §2.2.5: the S bit"
    );
    assert_eq!(sim.pu.subscription_mode(HANDLE), None, "not answered yet");
    let lu = |load| Policy::LeastUsed { load };
    sim.pu.on_message(
        conn,
        &answer(HANDLE, true, &[pe(1, lu(1)), pe(2, lu(2))]),
        110,
    );
    let ch = changes(&sim.take());
    assert_eq!(ch.len(), 2, "{ch:?}");
    assert_eq!(ch[0], PoolChange::Mode(SubscriptionMode::Pushed));
    assert_eq!(diff_ids(&ch[1]), [vec![1, 2], vec![], vec![], vec![1, 2]]);
    assert_eq!(
        sim.pu.subscription_mode(HANDLE),
        Some(SubscriptionMode::Pushed)
    );
    assert_eq!(sim.pu.poll_timeout(), None, "pushed: no polling");

    // A push: PE 1 left, PE 2's load changed, PE 3 joined.
    sim.pu.on_message(
        conn,
        &answer(HANDLE, true, &[pe(2, lu(7)), pe(3, lu(3))]),
        500_000,
    );
    let ch = changes(&sim.take());
    assert_eq!(ch.len(), 1, "{ch:?}");
    assert_eq!(diff_ids(&ch[0]), [vec![3], vec![1], vec![2], vec![2, 3]]);
    let PoolChange::Elements { changed, .. } = &ch[0] else {
        unreachable!()
    };
    assert_eq!(changed[0].policy, lu(7), "the new values");
    // The same PEs again (a home PR that changed is no change for the user): nothing.
    sim.pu.on_message(
        conn,
        &answer(HANDLE, true, &[pe(2, lu(7)), pe(3, lu(3))]),
        500_001,
    );
    assert!(sim.take().is_empty());
    assert_eq!(sim.pu.subscription(HANDLE).unwrap().updates(), 3);

    // The entry never goes stale while pushed: a resolution long after is answered from it.
    assert_eq!(sim.pu.cached(HANDLE, 10_000_000).map(ids), Some(vec![2, 3]));
    let id = sim.pu.resolve(HANDLE, None, 10_000_000);
    let actions = sim.take();
    assert!(sends(&actions).is_empty(), "no request while pushed");
    assert!(matches!(
        &events(&actions)[..],
        [PuEvent::Resolved { request, cached: true, .. }] if *request == id
    ));
}

#[test]
fn a_push_for_a_vanished_pool_says_gone_and_the_subscription_stays() {
    let (mut sim, conn, _) = subscribing(Config::new(vec![reg(1)]));
    let rr = Policy::RoundRobin;
    sim.pu
        .on_message(conn, &answer(HANDLE, true, &[pe(1, rr), pe(2, rr)]), 110);
    sim.take();
    sim.pu.on_message(conn, &unknown(HANDLE, true), 200);
    let ch = changes(&sim.take());
    assert!(
        matches!(&ch[..], [PoolChange::Gone { removed }] if ids(removed) == [1, 2]),
        "{ch:?}"
    );
    assert!(sim.pu.cached(HANDLE, 200).is_none(), "nothing to select");
    assert_eq!(
        sim.pu.subscription_mode(HANDLE),
        Some(SubscriptionMode::Pushed)
    );
    assert!(sim.pu.subscription(HANDLE).unwrap().elements().is_none());
    sim.pu.on_message(conn, &unknown(HANDLE, true), 210);
    assert!(changes(&sim.take()).is_empty(), "still gone: said once");
    sim.pu
        .on_message(conn, &answer(HANDLE, true, &[pe(4, rr)]), 300);
    let ch = changes(&sim.take());
    assert_eq!(diff_ids(&ch[0]), [vec![4], vec![], vec![], vec![4]], "back");

    // A pool unknown at the first answer is gone from the start, with nothing removed.
    let (mut sim, conn, _) = subscribing(Config::new(vec![reg(1)]));
    sim.pu.on_message(conn, &unknown(HANDLE, true), 110);
    let ch = changes(&sim.take());
    assert_eq!(
        ch,
        [
            PoolChange::Mode(SubscriptionMode::Pushed),
            PoolChange::Gone { removed: vec![] }
        ]
    );
}

#[test]
fn pushes_do_not_answer_outstanding_resolutions() {
    let mut c = Config::new(vec![reg(1)]);
    c.cache_stale = 0;
    let (mut sim, conn, _) = subscribing(c);
    let rr = Policy::RoundRobin;
    sim.pu
        .on_message(conn, &answer(HANDLE, true, &[pe(1, rr)]), 110);
    sim.take();
    let id = sim.pu.resolve(b"other", None, 120);
    assert_eq!(sends(&sim.take()).len(), 1);
    // A push for the subscribed pool, then one for a pool nobody subscribed: neither is the
    // answer to the outstanding resolution of `other`.
    sim.pu
        .on_message(conn, &answer(HANDLE, true, &[pe(1, rr), pe(2, rr)]), 130);
    sim.pu
        .on_message(conn, &answer(b"other", true, &[pe(8, rr)]), 131);
    let actions = sim.take();
    assert!(
        !events(&actions)
            .iter()
            .any(|e| matches!(e, PuEvent::Resolved { .. } | PuEvent::Failed { .. })),
        "{actions:?}"
    );
    assert_eq!(diff_ids(&changes(&actions)[0])[0], [2]);
    sim.pu
        .on_message(conn, &answer(b"other", false, &[pe(9, rr)]), 140);
    let ev = events(&sim.take());
    assert!(
        matches!(&ev[..], [PuEvent::Resolved { request, .. }] if *request == id),
        "{ev:?}"
    );
    assert_eq!(resolved_ids(&ev[0]), [9], "the answer, not the push");
}

#[test]
fn a_declined_subscription_is_polled_at_the_interval() {
    let mut c = Config::new(vec![reg(1)]);
    c.poll_interval = 250;
    c.cache_stale = 100;
    let (mut sim, conn, _) = subscribing(c);
    let rr = Policy::RoundRobin;
    // RSPLIB's registrar: the answer without the A bit.
    sim.pu
        .on_message(conn, &answer(HANDLE, false, &[pe(1, rr)]), 110);
    let ch = changes(&sim.take());
    assert_eq!(ch[0], PoolChange::Mode(SubscriptionMode::Polling));
    assert_eq!(diff_ids(&ch[1])[0], [1]);
    assert_eq!(sim.pu.poll_timeout(), Some(360), "the next poll");
    assert!(
        sim.pu.cached(HANDLE, 210).is_none(),
        "polled entries go stale"
    );
    // A resolve call of the pool between two polls: its answer (another selection) is the
    // call's, not a change of the subscription.
    let id = sim.pu.resolve(HANDLE, Some(1), 210);
    assert_eq!(sends(&sim.take()).len(), 1);
    sim.pu
        .on_message(conn, &answer(HANDLE, false, &[pe(5, rr)]), 220);
    let actions = sim.take();
    assert!(changes(&actions).is_empty(), "{actions:?}");
    assert!(matches!(
        &events(&actions)[..],
        [PuEvent::Resolved { request, .. }] if *request == id
    ));
    sim.pu.handle_timeout(359);
    assert!(sends(&sim.take()).is_empty(), "not yet");
    sim.pu.handle_timeout(360);
    let sent = sends(&sim.take());
    assert_eq!(sent.len(), 1);
    assert!(
        matches!(
            decode(&sent[0].1),
            AsapMessage::HandleResolution {
                subscribe: true,
                ..
            }
        ),
        "each poll asks again: a registrar may accept later"
    );
    assert_eq!(
        sim.pu.poll_timeout(),
        Some(360 + 15_000),
        "T1 only while asking"
    );
    sim.pu
        .on_message(conn, &answer(HANDLE, false, &[pe(1, rr), pe(2, rr)]), 370);
    let ch = changes(&sim.take());
    assert_eq!(ch.len(), 1, "the mode is said once: {ch:?}");
    assert_eq!(diff_ids(&ch[0])[0], [2]);
    assert_eq!(sim.pu.poll_timeout(), Some(620));
    sim.pu.handle_timeout(620);
    sim.take();
    sim.pu.on_message(conn, &unknown(HANDLE, false), 630);
    let ch = changes(&sim.take());
    assert!(matches!(&ch[..], [PoolChange::Gone { removed }] if removed.len() == 2));
    assert_eq!(sim.pu.subscription(HANDLE).unwrap().updates(), 3);
    assert_eq!(sim.pu.poll_timeout(), Some(880), "polling goes on");
}

#[test]
fn a_lost_registrar_is_replaced_and_the_subscription_asked_for_again() {
    let mut c = Config::new(vec![reg(1), reg(2)]);
    c.timers.max_parallel_connects = 1;
    c.cache_stale = 1_000;
    let (mut sim, conn, _) = subscribing(c);
    let rr = Policy::RoundRobin;
    sim.pu
        .on_message(conn, &answer(HANDLE, true, &[pe(1, rr)]), 110);
    sim.take();
    sim.pu.on_closed(conn, 5_000);
    assert_eq!(
        sim.pu.subscription_mode(HANDLE),
        None,
        "no acceptance any more"
    );
    assert!(
        sim.pu.cached(HANDLE, 5_000).is_none(),
        "without pushes the entry is stale again"
    );
    let (next, registrar) = connects(&sim.take())[0];
    assert_eq!(registrar, reg(2), "the next registrar");
    sim.pu.on_connected(next, None, 5_010);
    let sent = sends(&sim.take());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, next);
    assert!(matches!(
        decode(&sent[0].1),
        AsapMessage::HandleResolution {
            subscribe: true,
            ..
        }
    ));
    // Pushes on the old association no longer count.
    sim.pu
        .on_message(conn, &answer(HANDLE, true, &[pe(7, rr)]), 5_015);
    assert!(sim.take().is_empty());
    sim.pu
        .on_message(next, &answer(HANDLE, true, &[pe(1, rr), pe(2, rr)]), 5_020);
    let ch = changes(&sim.take());
    assert_eq!(ch.len(), 1, "same mode as before: only the change: {ch:?}");
    assert_eq!(diff_ids(&ch[0])[0], [2]);
    assert_eq!(
        sim.pu.subscription_mode(HANDLE),
        Some(SubscriptionMode::Pushed)
    );

    // The new registrar declines: the mode changes to polling.
    sim.pu.on_closed(next, 6_000);
    let (third, registrar) = connects(&sim.take())[0];
    assert_eq!(registrar, reg(1));
    sim.pu.on_connected(third, None, 6_010);
    sim.take();
    sim.pu.on_message(
        third,
        &answer(HANDLE, false, &[pe(1, rr), pe(2, rr)]),
        6_020,
    );
    assert_eq!(
        changes(&sim.take()),
        [PoolChange::Mode(SubscriptionMode::Polling)]
    );
}

#[test]
fn failed_attempts_are_reported_once_and_retried() {
    let mut c = Config::new(vec![reg(1)]);
    c.poll_interval = 500;
    let mut sim = Sim::new(c);
    sim.pu.subscribe(HANDLE, None, 0);
    let (conn, _) = connects(&sim.take())[0];
    sim.pu.on_connect_failed(conn, "refused".into());
    let ch = changes(&sim.take());
    assert!(
        matches!(&ch[..], [PoolChange::Failed(Error::Unreachable(f))] if f.len() == 1),
        "{ch:?}"
    );
    assert_eq!(
        sim.pu.poll_timeout(),
        Some(500),
        "tried again after the interval"
    );
    sim.pu.handle_timeout(500);
    let (conn, _) = connects(&sim.take())[0];
    sim.pu.on_connect_failed(conn, "refused".into());
    assert!(changes(&sim.take()).is_empty(), "the same error: said once");
    sim.pu.handle_timeout(1_000);
    let (conn, _) = connects(&sim.take())[0];
    sim.pu.on_connected(conn, None, 1_001);
    sim.take();
    // No answer within T1, twice retransmitted: a timeout, then the next attempt.
    for t in [16_001, 31_001] {
        sim.pu.handle_timeout(t);
        sim.take();
    }
    sim.pu.handle_timeout(46_001);
    let ch = changes(&sim.take());
    assert!(
        matches!(
            &ch[..],
            [PoolChange::Failed(Error::Timeout { attempts: 3, .. })]
        ),
        "{ch:?}"
    );
    assert_eq!(sim.pu.poll_timeout(), Some(46_501));
    sim.pu.handle_timeout(46_501);
    let sent = sends(&sim.take());
    assert_eq!(sent.len(), 1);
    sim.pu
        .on_message(conn, &failed(HANDLE, cause::LACK_OF_RESOURCES), 46_502);
    let ch = changes(&sim.take());
    assert!(
        matches!(&ch[..], [PoolChange::Mode(SubscriptionMode::Polling), PoolChange::Failed(Error::Operation { cause: Cause(c), .. })] if *c == cause::LACK_OF_RESOURCES),
        "{ch:?}"
    );
}

#[test]
fn unsubscribing_ignores_pushes_and_closes_an_association_left_unused() {
    let (mut sim, conn, _) = subscribing(Config::new(vec![reg(1)]));
    let rr = Policy::RoundRobin;
    sim.pu
        .on_message(conn, &answer(HANDLE, true, &[pe(1, rr)]), 110);
    sim.take();
    assert!(sim.pu.unsubscribe(HANDLE));
    assert!(!sim.pu.unsubscribe(HANDLE), "once");
    assert_eq!(
        sim.take(),
        [Action::Close { conn }],
        "no unsubscribe message in RFC 5352: the association goes"
    );
    assert_eq!(sim.pu.registrar(), None);
    assert_eq!(sim.pu.subscription_mode(HANDLE), None);

    // With a resolution outstanding the association stays; the pool's pushes are ignored.
    let (mut sim, conn, _) = subscribing(Config::new(vec![reg(1)]));
    sim.pu
        .on_message(conn, &answer(HANDLE, true, &[pe(1, rr)]), 110);
    sim.take();
    sim.pu.resolve(b"other", None, 120);
    sim.take();
    sim.pu.unsubscribe(HANDLE);
    assert!(sim.take().is_empty(), "still needed");
    sim.pu
        .on_message(conn, &answer(HANDLE, true, &[pe(2, rr)]), 130);
    assert!(sim.take().is_empty(), "ignored");
}

#[test]
fn a_tracker_reports_what_changed_between_answers() {
    let info = |id, load| PeInfo::from_view(&pe(id, Policy::LeastUsed { load }));
    let mut t = PoolTracker::new();
    assert_eq!(t.elements(), None);
    let c = t.update(Ok(vec![])).unwrap();
    assert_eq!(
        diff_ids(&c),
        [vec![], vec![], vec![], vec![]],
        "an empty pool is news"
    );
    assert!(t.update(Ok(vec![])).is_none());
    let c = t.update(Ok(vec![info(1, 0), info(2, 0)])).unwrap();
    assert_eq!(diff_ids(&c), [vec![1, 2], vec![], vec![], vec![1, 2]]);
    assert!(
        t.update(Ok(vec![info(2, 0), info(1, 0)])).is_none(),
        "order is no change"
    );
    let c = t.update(Ok(vec![info(2, 5)])).unwrap();
    assert_eq!(diff_ids(&c), [vec![], vec![1], vec![2], vec![2]]);
    let refused = Error::Operation {
        request: "handle resolution",
        cause: Cause(cause::LACK_OF_RESOURCES),
    };
    assert_eq!(
        t.update(Err(refused.clone())),
        Some(PoolChange::Failed(refused.clone()))
    );
    assert!(t.update(Err(refused)).is_none());
    assert_eq!(
        t.elements().map(ids),
        Some(vec![2]),
        "a failure forgets nothing"
    );
    assert!(
        t.update(Ok(vec![info(2, 5)])).is_none(),
        "same PEs after the failure"
    );
    assert_eq!(t.updates(), 8);
}
