//! The PE core against the checklist (EP-01..EP-08, EP-11) with simulated time and connections.

use std::net::{IpAddr, SocketAddr};

use rserpool_protocol::{
    AsapMessage, ErrorCause, Generation, PeId, Policy, PoolHandle, PrId, Seq, TransportKind,
    UserTransport, cause,
};

use super::*;
use crate::{Action, Cause, ConnId, Error, Registrar};

const HANDLE: &[u8] = b"echo";

fn reg(port: u16) -> Registrar {
    Registrar::tcp(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn local() -> Option<SocketAddr> {
    Some("127.0.0.5:40000".parse().unwrap())
}

fn config(registrars: &[Registrar]) -> Config {
    let mut c = Config::new(registrars.to_vec(), HANDLE);
    c.transport.port = 7;
    c
}

/// A PE, the actions it produced, and helpers to look at them.
struct Sim {
    pe: PoolElement,
    actions: Vec<Action<PeEvent>>,
}

impl Sim {
    fn new(config: Config) -> Self {
        Self {
            pe: PoolElement::new(config, 42).unwrap(),
            actions: Vec::new(),
        }
    }

    fn take(&mut self) -> Vec<Action<PeEvent>> {
        while let Some(a) = self.pe.poll_action() {
            self.actions.push(a);
        }
        std::mem::take(&mut self.actions)
    }

    /// The connection attempts among the pending actions, in order.
    fn connects(&mut self) -> Vec<(ConnId, Registrar)> {
        self.take()
            .into_iter()
            .filter_map(|a| match a {
                Action::Connect { conn, registrar } => Some((conn, registrar)),
                _ => None,
            })
            .collect()
    }

    /// Starts the PE and connects to the first registrar it tries.
    fn connected(config: Config) -> (Self, ConnId) {
        let mut sim = Self::new(config);
        sim.pe.start(0);
        let (conn, _) = sim.connects()[0];
        sim.pe.on_connected(conn, local(), 0);
        (sim, conn)
    }

    /// A registered PE on its connection, with the actions so far consumed.
    fn registered(config: Config) -> (Self, ConnId) {
        let (mut sim, conn) = Self::connected(config);
        sim.take();
        let id = sim.pe.id();
        sim.pe.on_message(conn, &response(id, None), 10);
        sim.take();
        assert_eq!(sim.pe.state(), PeState::Registered);
        (sim, conn)
    }
}

fn events(actions: &[Action<PeEvent>]) -> Vec<PeEvent> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn sends(actions: &[Action<PeEvent>]) -> Vec<(ConnId, Vec<u8>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { conn, message } => Some((*conn, message.clone())),
            _ => None,
        })
        .collect()
}

fn closes(actions: &[Action<PeEvent>]) -> Vec<ConnId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Close { conn } => Some(*conn),
            _ => None,
        })
        .collect()
}

fn decode(bytes: &[u8]) -> AsapMessage<'_> {
    AsapMessage::decode(bytes, Generation::Rfc).unwrap().message
}

/// The registration's PE ID and policy, or a panic if `bytes` is another message.
fn registration(bytes: &[u8]) -> (PeId, Policy) {
    match decode(bytes) {
        AsapMessage::Registration { pool_element, .. } => (pool_element.id, pool_element.policy),
        other => panic!("not a registration: {other:?}"),
    }
}

fn response(id: PeId, refusal: Option<u16>) -> Vec<u8> {
    let causes = refusal.map(|code| [ErrorCause { code, info: &[] }]);
    crate::encode(
        &AsapMessage::RegistrationResponse {
            rejected: refusal.is_some(),
            pool_handle: PoolHandle(HANDLE),
            pe_id: id,
            error: causes.as_ref().map(|c| Seq::from_items(c)),
        },
        Generation::Rfc,
    )
    .unwrap()
}

fn keep_alive(home: bool, server: u64, handle: &[u8], pe_id: Option<PeId>) -> Vec<u8> {
    crate::encode(
        &AsapMessage::EndpointKeepAlive {
            home,
            server_id: PrId(server),
            pool_handle: PoolHandle(handle),
            pe_id,
        },
        Generation::Rfc,
    )
    .unwrap()
}

fn deregistration_response(id: PeId, refusal: Option<u16>) -> Vec<u8> {
    let causes = refusal.map(|code| [ErrorCause { code, info: &[] }]);
    crate::encode(
        &AsapMessage::DeregistrationResponse {
            pool_handle: PoolHandle(HANDLE),
            pe_id: id,
            error: causes.as_ref().map(|c| Seq::from_items(c)),
        },
        Generation::Rfc,
    )
    .unwrap()
}

/// Checklist EP-01 (and EP-02 as far as TCP goes: the registered address is the connection's).
#[test]
fn ep01_the_registration_carries_handle_random_id_home_zero_life_one_transport_and_policy() {
    let mut c = config(&[reg(1)]);
    c.registration_life = 45_000;
    c.policy = Policy::WeightedRoundRobin { weight: 3 };
    let (mut sim, conn) = Sim::connected(c);
    let actions = sim.take();
    let sent = sends(&actions);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, conn);
    let AsapMessage::Registration {
        pool_handle,
        pool_element,
    } = decode(&sent[0].1)
    else {
        panic!("not a registration")
    };
    assert_eq!(pool_handle.0, HANDLE);
    assert_ne!(pool_element.id.0, 0);
    assert_eq!(pool_element.id, sim.pe.id());
    assert_eq!(pool_element.home_pr, PrId(0));
    assert_eq!(pool_element.registration_life, 45_000);
    let UserTransport::Transport(t) = pool_element.user_transport else {
        panic!("opaque transport")
    };
    assert_eq!(t.kind, TransportKind::Tcp);
    assert_eq!(t.port, 7);
    assert_eq!(
        t.addresses.iter().collect::<Vec<_>>(),
        [IpAddr::from([127, 0, 0, 5])],
        "the connection's local address"
    );
    assert_eq!(
        pool_element.policy,
        Policy::WeightedRoundRobin { weight: 3 }
    );
    assert_eq!(pool_element.asap_transport, None);
    assert_eq!(sim.pe.state(), PeState::Registering);
}

#[test]
fn pe_ids_are_random_non_zero_and_as_wide_as_the_generation() {
    let mut wide = false;
    for seed in 0..32 {
        let rfc = PoolElement::new(config(&[reg(1)]), seed).unwrap().id();
        assert!(rfc.0 != 0 && rfc.0 <= u64::from(u32::MAX));
        let mut ng = config(&[reg(1)]);
        ng.generation = Generation::Ng;
        let id = PoolElement::new(ng, seed).unwrap().id();
        assert_ne!(id.0, 0);
        wide |= id.0 > u64::from(u32::MAX);
    }
    assert!(wide, "NG identifiers use 64 bits");
    assert_eq!(
        PoolElement::new(config(&[reg(1)]), 9).unwrap().id(),
        PoolElement::new(config(&[reg(1)]), 9).unwrap().id(),
        "the caller's seed decides"
    );
    let mut fixed = config(&[reg(1)]);
    fixed.pe_id = Some(PeId(0x1_0000_0000));
    assert!(matches!(
        PoolElement::new(fixed.clone(), 1),
        Err(Error::Config(_))
    ));
    fixed.generation = Generation::Ng;
    assert_eq!(
        PoolElement::new(fixed.clone(), 1).unwrap().id(),
        PeId(0x1_0000_0000)
    );
    fixed.pe_id = Some(PeId(0));
    assert!(PoolElement::new(fixed, 1).is_err());
    assert!(PoolElement::new(config(&[]), 1).is_ok());
    let mut empty = config(&[reg(1)]);
    empty.pool_handle.clear();
    assert!(PoolElement::new(empty, 1).is_err());
}

/// Checklist EP-03: no answer within T2 → server hunt, registration repeated at the next PR.
#[test]
fn ep03_t2_expiry_hunts_and_registers_at_the_next_registrar() {
    let mut c = config(&[reg(1), reg(2)]);
    c.timers.max_parallel_connects = 1;
    let mut sim = Sim::new(c);
    sim.pe.start(0);
    let attempts = sim.connects();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].1, reg(1));
    sim.pe.on_connected(attempts[0].0, local(), 5);
    let first = sends(&sim.take());
    let (id, _) = registration(&first[0].1);
    assert_eq!(sim.pe.poll_timeout(), Some(5 + 30_000), "T2 runs");
    sim.pe.handle_timeout(30_005);
    let actions = sim.take();
    assert_eq!(
        closes(&actions),
        [attempts[0].0],
        "the silent PR's connection goes"
    );
    let Some(Action::Connect {
        conn: second,
        registrar,
    }) = actions
        .iter()
        .find(|a| matches!(a, Action::Connect { .. }))
        .cloned()
    else {
        panic!("no server hunt: {actions:?}")
    };
    assert_eq!(registrar, reg(2), "the next registrar of the list");
    sim.pe.on_connected(second, local(), 30_010);
    let again = sends(&sim.take());
    assert_eq!(again[0].0, second);
    assert_eq!(registration(&again[0].1).0, id, "same PE ID");
    sim.pe.on_message(second, &response(id, None), 30_020);
    assert_eq!(
        events(&sim.take()),
        [PeEvent::Registered {
            registrar: reg(2),
            reregistration: false
        }]
    );
    assert_eq!(sim.pe.registrar(), Some(reg(2)));
}

/// RFC 5352 §3.1: beyond MAX-REG-ATTEMPT the PE reports to the upper layer and stops.
#[test]
fn after_max_reg_attempt_unanswered_registrations_the_pe_reports_and_stops() {
    let (mut sim, _) = Sim::connected(config(&[reg(1)]));
    sim.take();
    sim.pe.handle_timeout(30_000);
    let (conn, _) = sim.connects()[0];
    sim.pe.on_connected(conn, local(), 30_001);
    sim.take();
    sim.pe.handle_timeout(60_001);
    let actions = sim.take();
    assert_eq!(
        events(&actions),
        [PeEvent::Failed(Error::Timeout {
            request: "registration",
            attempts: 2
        })]
    );
    assert_eq!(closes(&actions), [conn]);
    assert_eq!(sim.pe.state(), PeState::Failed);
    assert_eq!(sim.pe.poll_timeout(), None);
}

/// Checklist EP-04: R=1 → the error with its cause reaches the application; no blind retry.
#[test]
fn ep04_a_rejection_is_surfaced_with_its_cause_and_never_retried() {
    let (mut sim, conn) = Sim::connected(config(&[reg(1), reg(2)]));
    sim.take();
    let id = sim.pe.id();
    sim.pe
        .on_message(conn, &response(id, Some(cause::INCONSISTENT_POLICY)), 10);
    let actions = sim.take();
    assert_eq!(
        events(&actions),
        [PeEvent::Rejected {
            error: Error::Rejected {
                cause: Cause(cause::INCONSISTENT_POLICY)
            },
            kept: false
        }]
    );
    assert_eq!(closes(&actions), [conn]);
    assert_eq!(sim.pe.state(), PeState::Failed);
    assert_eq!(sim.pe.poll_timeout(), None, "nothing left to retry");
    sim.pe.handle_timeout(10_000_000);
    sim.pe.set_policy(Policy::RoundRobin, 10_000_001);
    assert!(sim.take().is_empty(), "no registration is sent again");
}

/// An ASAP_ERROR answering a registration counts as its rejection.
#[test]
fn an_asap_error_answering_the_registration_rejects_it() {
    let (mut sim, conn) = Sim::connected(config(&[reg(1)]));
    sim.take();
    let causes = [ErrorCause {
        code: cause::INVALID_VALUES,
        info: &[],
    }];
    let error = crate::encode(
        &AsapMessage::Error(Seq::from_items(&causes)),
        Generation::Rfc,
    )
    .unwrap();
    sim.pe.on_message(conn, &error, 5);
    assert!(matches!(
        &events(&sim.take())[..],
        [PeEvent::Rejected {
            error: Error::Rejected { cause: Cause(3) },
            ..
        }]
    ));
}

/// Checklist EP-05: re-registration before the life runs out, with the same PE ID; T4 =
/// min(10 min, life − 20 s).
#[test]
fn ep05_reregistration_at_t4_keeps_the_pe_id() {
    assert_eq!(rfc_reregistration_interval(3_600_000), 600_000);
    assert_eq!(rfc_reregistration_interval(60_000), 40_000);
    assert_eq!(
        rfc_reregistration_interval(21_000),
        7_000,
        "a third of a short life"
    );
    let (mut sim, conn) = Sim::registered(config(&[reg(1)]));
    assert_eq!(sim.pe.reregistration_interval(), 40_000);
    assert_eq!(sim.pe.poll_timeout(), Some(10 + 40_000));
    sim.pe.handle_timeout(20_000);
    assert!(sends(&sim.take()).is_empty(), "not before T4");
    sim.pe.handle_timeout(40_010);
    let sent = sends(&sim.take());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, conn);
    assert_eq!(registration(&sent[0].1).0, sim.pe.id());
    sim.pe
        .on_message(conn, &response(sim.pe.id(), None), 40_020);
    assert_eq!(
        events(&sim.take()),
        [PeEvent::Registered {
            registrar: reg(1),
            reregistration: true
        }]
    );
    assert_eq!(sim.pe.poll_timeout(), Some(80_020), "T4 restarts");
    let mut c = config(&[reg(1)]);
    c.reregistration_interval = Some(1_500);
    assert_eq!(Sim::new(c).pe.reregistration_interval(), 1_500);
}

/// Checklist EP-06: every keep-alive with the PE's handle is acked on its association with the
/// PE's ID; a keep-alive for another handle or another PE is dropped silently (KA1).
#[test]
fn ep06_keep_alives_are_acked_and_foreign_ones_ignored() {
    let (mut sim, conn) = Sim::registered(config(&[reg(1)]));
    let id = sim.pe.id();
    for ka in [
        keep_alive(false, 7, HANDLE, Some(id)),
        keep_alive(false, 7, HANDLE, None),
    ] {
        sim.pe.on_message(conn, &ka, 100);
        let sent = sends(&sim.take());
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, conn);
        assert_eq!(
            decode(&sent[0].1),
            AsapMessage::EndpointKeepAliveAck {
                pool_handle: PoolHandle(HANDLE),
                pe_id: id
            }
        );
    }
    for ka in [
        keep_alive(false, 7, b"other", Some(id)),
        keep_alive(true, 8, HANDLE, Some(PeId(id.0 ^ 1))),
    ] {
        sim.pe.on_message(conn, &ka, 200);
        assert!(sim.take().is_empty(), "dropped silently");
    }
    assert_eq!(sim.pe.home_pr(), Some(PrId(7)), "learnt from H=0");
    sim.pe
        .on_message(ConnId(999), &keep_alive(false, 7, HANDLE, None), 300);
    assert!(sim.take().is_empty(), "not from the PE's association");
}

/// Checklist EP-07: H=1 from another registrar makes it the home PR.
#[test]
fn ep07_a_keep_alive_with_h_from_another_server_makes_it_home() {
    let (mut sim, conn) = Sim::registered(config(&[reg(1)]));
    sim.pe
        .on_message(conn, &keep_alive(false, 7, HANDLE, None), 100);
    assert!(events(&sim.take()).is_empty());
    sim.pe
        .on_message(conn, &keep_alive(true, 9, HANDLE, None), 200);
    let actions = sim.take();
    assert_eq!(sends(&actions).len(), 1, "acked");
    assert_eq!(
        events(&actions),
        [PeEvent::HomeChanged { server_id: PrId(9) }]
    );
    assert_eq!(sim.pe.home_pr(), Some(PrId(9)));
    sim.pe
        .on_message(conn, &keep_alive(true, 9, HANDLE, None), 300);
    assert!(events(&sim.take()).is_empty(), "already home");
    // Later requests go to the association the home PR speaks on.
    sim.pe.set_policy(Policy::RoundRobin, 400);
    sim.pe.handle_timeout(40_010);
    let sent = sends(&sim.take());
    assert_eq!(sent[0].0, conn);
}

/// Checklist EP-08: same handle and PE ID; the PE waits for the answer (T3).
#[test]
fn ep08_deregistration_uses_handle_and_id_and_waits_for_the_answer() {
    let (mut sim, conn) = Sim::registered(config(&[reg(1)]));
    let id = sim.pe.id();
    sim.pe.deregister(1_000);
    let sent = sends(&sim.take());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, conn);
    assert_eq!(
        decode(&sent[0].1),
        AsapMessage::Deregistration {
            pool_handle: PoolHandle(HANDLE),
            pe_id: id
        }
    );
    assert_eq!(sim.pe.state(), PeState::Deregistering);
    assert_eq!(sim.pe.poll_timeout(), Some(1_000 + 30_000), "T3 runs");
    sim.pe
        .on_message(conn, &keep_alive(false, 7, HANDLE, None), 1_100);
    assert_eq!(sends(&sim.take()).len(), 1, "still acks keep-alives");
    sim.pe
        .on_message(conn, &deregistration_response(id, None), 1_200);
    let actions = sim.take();
    assert_eq!(events(&actions), [PeEvent::Deregistered]);
    assert_eq!(closes(&actions), [conn]);
    assert_eq!(sim.pe.state(), PeState::Deregistered);
    assert_eq!(sim.pe.poll_timeout(), None);
}

/// RFC 5352 §3.2: T3 expiry → server hunt and retry; beyond MAX-REG-ATTEMPT the PE gives up.
#[test]
fn t3_expiry_retries_at_another_registrar_then_gives_up() {
    let mut c = config(&[reg(1), reg(2)]);
    c.timers.max_parallel_connects = 1;
    let (mut sim, _) = Sim::registered(c);
    sim.pe.deregister(0);
    sim.take();
    sim.pe.handle_timeout(30_000);
    let (conn, registrar) = sim.connects()[0];
    assert_eq!(registrar, reg(2));
    sim.pe.on_connected(conn, local(), 30_001);
    let sent = sends(&sim.take());
    assert!(matches!(
        decode(&sent[0].1),
        AsapMessage::Deregistration { .. }
    ));
    sim.pe.handle_timeout(60_001);
    assert_eq!(
        events(&sim.take()),
        [PeEvent::Failed(Error::Timeout {
            request: "deregistration",
            attempts: 2
        })]
    );
    assert_eq!(sim.pe.state(), PeState::Deregistered);
}

#[test]
fn a_refused_deregistration_is_reported_and_a_never_registered_pe_just_stops() {
    let (mut sim, conn) = Sim::registered(config(&[reg(1)]));
    sim.pe.deregister(0);
    sim.take();
    sim.pe.on_message(
        conn,
        &deregistration_response(sim.pe.id(), Some(cause::REJECTED_SECURITY)),
        5,
    );
    assert_eq!(
        events(&sim.take()),
        [PeEvent::Failed(Error::Operation {
            request: "deregistration",
            cause: Cause(cause::REJECTED_SECURITY)
        })]
    );
    let mut idle = Sim::new(config(&[reg(1)]));
    idle.pe.start(0);
    idle.take();
    idle.pe.deregister(1);
    let actions = idle.take();
    assert_eq!(events(&actions), [PeEvent::Deregistered]);
    assert_eq!(closes(&actions).len(), 1, "the hunt's attempt is abandoned");
}

/// Checklist EP-11: a new load reaches the registrar by re-registration, at once.
#[test]
fn ep11_a_load_update_is_pushed_by_reregistration() {
    let mut c = config(&[reg(1)]);
    c.policy = Policy::LeastUsed { load: 0 };
    let (mut sim, conn) = Sim::registered(c);
    sim.pe
        .set_policy(Policy::LeastUsed { load: 0x8000_0000 }, 500);
    let sent = sends(&sim.take());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, conn);
    assert_eq!(
        registration(&sent[0].1),
        (sim.pe.id(), Policy::LeastUsed { load: 0x8000_0000 })
    );
    // A second update while the first is in flight waits for its answer.
    sim.pe.set_policy(Policy::LeastUsed { load: 1 }, 510);
    assert!(sends(&sim.take()).is_empty());
    sim.pe.on_message(conn, &response(sim.pe.id(), None), 520);
    let sent = sends(&sim.take());
    assert_eq!(registration(&sent[0].1).1, Policy::LeastUsed { load: 1 });
    sim.pe.on_message(conn, &response(sim.pe.id(), None), 530);
    assert!(sends(&sim.take()).is_empty(), "nothing more to send");
}

/// A refused update of the values keeps the registration with the accepted ones (never retried
/// unchanged); a refused refresh of unchanged values stops the PE.
#[test]
fn a_refused_load_update_keeps_the_accepted_values() {
    let mut c = config(&[reg(1)]);
    c.policy = Policy::LeastUsed { load: 0 };
    let (mut sim, conn) = Sim::registered(c);
    sim.pe.set_policy(Policy::RoundRobin, 100);
    sim.take();
    sim.pe.on_message(
        conn,
        &response(sim.pe.id(), Some(cause::INCONSISTENT_POLICY)),
        110,
    );
    let actions = sim.take();
    assert_eq!(
        events(&actions),
        [PeEvent::Rejected {
            error: Error::Rejected { cause: Cause(5) },
            kept: true
        }]
    );
    assert!(sends(&actions).is_empty());
    assert_eq!(sim.pe.policy(), Policy::LeastUsed { load: 0 });
    assert_eq!(sim.pe.state(), PeState::Registered);
    sim.pe.handle_timeout(40_110);
    let sent = sends(&sim.take());
    assert_eq!(registration(&sent[0].1).1, Policy::LeastUsed { load: 0 });
    sim.pe.on_message(
        conn,
        &response(sim.pe.id(), Some(cause::LACK_OF_RESOURCES)),
        40_120,
    );
    assert!(matches!(
        &events(&sim.take())[..],
        [PeEvent::Rejected { kept: false, .. }]
    ));
    assert_eq!(sim.pe.state(), PeState::Failed);
}

/// The association to the PR dies: the PE fails over to the next registrar of its list and
/// registers there with the same PE ID.
#[test]
fn a_dead_association_fails_over_to_the_next_registrar() {
    let mut c = config(&[reg(1), reg(2), reg(3)]);
    c.timers.max_parallel_connects = 1;
    let (mut sim, conn) = Sim::registered(c);
    let id = sim.pe.id();
    sim.pe.on_closed(conn, 1_000);
    let actions = sim.take();
    assert_eq!(
        events(&actions),
        [PeEvent::RegistrationLost {
            registrar: reg(1),
            reason: LossReason::ConnectionClosed
        }]
    );
    let Some(Action::Connect {
        conn: next,
        registrar,
    }) = actions.last().cloned()
    else {
        panic!("no hunt: {actions:?}")
    };
    assert_eq!(registrar, reg(2));
    assert_eq!(sim.pe.registrar(), None);
    sim.pe
        .on_connect_failed(next, "Connection refused (os error 111)".into());
    let actions = sim.take();
    assert!(matches!(
        &events(&actions)[..],
        [PeEvent::ConnectFailed(f)] if f.registrar == reg(2)
    ));
    let Some(Action::Connect {
        conn: third,
        registrar,
    }) = actions
        .iter()
        .find(|a| matches!(a, Action::Connect { .. }))
        .cloned()
    else {
        panic!("SH4: no other attempt")
    };
    assert_eq!(registrar, reg(3));
    sim.pe.on_connected(third, local(), 1_002);
    let sent = sends(&sim.take());
    assert_eq!(registration(&sent[0].1).0, id);
    sim.pe.on_message(third, &response(id, None), 1_003);
    assert_eq!(
        events(&sim.take()),
        [PeEvent::Registered {
            registrar: reg(3),
            reregistration: true
        }]
    );
}

#[test]
fn an_unsolicited_deregistration_response_means_expiry_and_the_pe_registers_again() {
    let (mut sim, conn) = Sim::registered(config(&[reg(1)]));
    sim.pe
        .on_message(conn, &deregistration_response(sim.pe.id(), None), 100);
    let actions = sim.take();
    assert_eq!(
        events(&actions),
        [PeEvent::RegistrationLost {
            registrar: reg(1),
            reason: LossReason::Expired
        }]
    );
    assert_eq!(registration(&sends(&actions)[0].1).0, sim.pe.id());
}

#[test]
fn a_round_of_failed_connections_is_reported_with_every_error() {
    let mut sim = Sim::new(config(&[reg(1), reg(2)]));
    sim.pe.start(0);
    let attempts = sim.connects();
    assert_eq!(attempts.len(), 2, "both at once (SH1 allows three)");
    for (conn, _) in &attempts {
        sim.pe.on_connect_failed(*conn, "refused".into());
    }
    let ev = events(&sim.take());
    assert_eq!(ev.len(), 3);
    let PeEvent::ServerHuntFailed(failures) = &ev[2] else {
        panic!("{ev:?}")
    };
    assert_eq!(failures.len(), 2);
    assert_eq!(sim.pe.state(), PeState::Registering, "the hunt goes on");
    assert_eq!(sim.pe.poll_timeout(), Some(10_000), "after T5");
    sim.pe.handle_timeout(10_000);
    assert_eq!(sim.connects().len(), 2);
}
