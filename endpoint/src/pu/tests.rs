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
