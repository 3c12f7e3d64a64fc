//! The ASAP server side against the acceptance checklist (`acceptance-checklist.md` §2.1-2.2:
//! C-04..C-09, PA-01..PA-20), on a PR of one and of several workers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rserpool_handlespace::{Limits, PeId, PrId};
use rserpool_protocol::asap::message_type as mt;
use rserpool_protocol::{
    AsapMessage, Generation, Policy, PoolElementParam, PoolHandle, Resolution, Seq, TransportKind,
    TransportParam, UserTransport, cause,
};

use super::in_memory::{InMemoryPr, Sent};
use super::{AssociationInfo, CoreConfig, Target};
use crate::url::{Transport as UrlTransport, TransportUrl};

const PR: PrId = PrId(0x1234_5678);
const PE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const PE_IP2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

fn config() -> CoreConfig {
    CoreConfig::new(PR)
}

fn cluster(workers: usize) -> InMemoryPr {
    InMemoryPr::new(workers, config(), Limits::default(), 7)
}

fn info(generation: Generation) -> AssociationInfo {
    AssociationInfo {
        transport: UrlTransport::Sctp,
        generation,
        peer_addresses: vec![
            SocketAddr::new(PE_IP, 40_000),
            SocketAddr::new(PE_IP2, 40_000),
        ],
        protocol: crate::metrics::Protocol::Asap,
    }
}

fn encode(msg: &AsapMessage<'_>, generation: Generation) -> Vec<u8> {
    let mut buf = vec![0; 65_536];
    let n = msg.encode(generation, &mut buf).expect("encodable");
    buf.truncate(n);
    buf
}

/// An ASAP_REGISTRATION for a PE reachable at `ips` over `kind` with `transport_use`.
#[allow(clippy::too_many_arguments)]
fn registration_with(
    handle: &[u8],
    id: u64,
    policy: Policy,
    kind: TransportKind,
    transport_use: u16,
    ips: &[IpAddr],
    life: i32,
    generation: Generation,
) -> Vec<u8> {
    let transport = TransportParam {
        kind,
        port: 7,
        transport_use,
        service_code: 0,
        addresses: Seq::from_items(ips),
    };
    encode(
        &AsapMessage::Registration {
            pool_handle: PoolHandle(handle),
            pool_element: PoolElementParam {
                id: PeId(id),
                home_pr: PrId(0),
                registration_life: life,
                user_transport: UserTransport::Transport(transport),
                policy,
                asap_transport: None,
            },
        },
        generation,
    )
}

fn registration(handle: &[u8], id: u64, policy: Policy) -> Vec<u8> {
    registration_with(
        handle,
        id,
        policy,
        TransportKind::Sctp,
        0,
        &[PE_IP],
        30_000,
        Generation::Rfc,
    )
}

fn resolution(handle: &[u8], items: Option<u32>) -> Vec<u8> {
    encode(
        &AsapMessage::HandleResolution {
            subscribe: false,
            pool_handle: PoolHandle(handle),
            items,
        },
        Generation::Rfc,
    )
}

fn only(sent: &[Sent]) -> AsapMessage<'_> {
    assert_eq!(sent.len(), 1, "expected one message, got {sent:?}");
    AsapMessage::decode(&sent[0].bytes, Generation::Rfc)
        .expect("the PR sends decodable messages")
        .message
}

/// (rejected, cause) of a registration response.
fn registration_outcome(sent: &[Sent]) -> (bool, Option<u16>) {
    registration_outcome_in(sent, Generation::Rfc)
}

/// The PE IDs and policy of a resolution response; `Err(cause)` for a failure.
fn resolved(sent: &[Sent]) -> Result<(Vec<u64>, Option<Policy>), u16> {
    match only(sent) {
        AsapMessage::HandleResolutionResponse {
            resolution:
                Resolution::Found {
                    policy,
                    pool_elements,
                },
            ..
        } => Ok((pool_elements.iter().map(|p| p.id.0).collect(), policy)),
        AsapMessage::HandleResolutionResponse {
            resolution: Resolution::Failed(e),
            ..
        } => Err(e.iter().next().map_or(0, |c| c.code)),
        other => panic!("expected a resolution response, got {other:?}"),
    }
}

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
fn pa13_pa14_item_count_follows_the_option_the_default_and_the_cap() {
    let mut pr = cluster(2);
    let a = pr.open(0, info(Generation::Rfc), 0);
    for id in 1..=200 {
        pr.message(a, &registration(b"big", id, Policy::RoundRobin), 0);
    }
    let count = |pr: &mut InMemoryPr, items| {
        resolved(&pr.message(a, &resolution(b"big", items), 0))
            .unwrap()
            .0
            .len()
    };
    assert_eq!(count(&mut pr, None), 3, "RSPLIB's default");
    assert_eq!(count(&mut pr, Some(7)), 7);
    assert_eq!(count(&mut pr, Some(1)), 1);
    assert_eq!(count(&mut pr, Some(u32::MAX)), 128, "capped at 128");
    assert_eq!(
        resolved(&pr.message(a, &resolution(b"nothing", None), 0)),
        Err(cause::UNKNOWN_POOL_HANDLE)
    );
}

#[test]
fn round_robin_resolutions_rotate_through_the_pool() {
    let mut pr = cluster(1);
    let a = pr.open(0, info(Generation::Rfc), 0);
    for id in 1..=3 {
        pr.message(a, &registration(b"rr", id, Policy::RoundRobin), 0);
    }
    let firsts: Vec<u64> = (0..6)
        .map(|_| {
            resolved(&pr.message(a, &resolution(b"rr", Some(1)), 0))
                .unwrap()
                .0[0]
        })
        .collect();
    assert_eq!(firsts[..3], firsts[3..], "a cycle of three");
    let mut cycle = firsts[..3].to_vec();
    cycle.sort_unstable();
    assert_eq!(cycle, [1, 2, 3], "every PE once per cycle");
}

/// The keep-alives among `sent`: (association, PE ID, H flag, server ID).
fn keep_alives(sent: &[Sent]) -> Vec<(Target, u64, bool, PrId)> {
    sent.iter()
        .filter_map(
            |s| match AsapMessage::decode(&s.bytes, Generation::Rfc).ok()?.message {
                AsapMessage::EndpointKeepAlive {
                    home,
                    server_id,
                    pe_id,
                    ..
                } => Some((s.target, pe_id?.0, home, server_id)),
                _ => None,
            },
        )
        .collect()
}

fn ack(handle: &[u8], id: u64) -> Vec<u8> {
    encode(
        &AsapMessage::EndpointKeepAliveAck {
            pool_handle: PoolHandle(handle),
            pe_id: PeId(id),
        },
        Generation::Rfc,
    )
}

/// Runs the PR's timers millisecond by millisecond from `from` to `to`, collecting what it sent.
fn run(pr: &mut InMemoryPr, from: u64, to: u64) -> Vec<(u64, Sent)> {
    let mut sent = Vec::new();
    for now in from..=to {
        sent.extend(pr.on_timer(now).into_iter().map(|s| (now, s)));
    }
    sent
}

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

/// The PEs the cluster's workers counted as removed for `reason`, from the metrics exposition.
fn removals(pr: &InMemoryPr, reason: &str) -> f64 {
    let info = crate::metrics::ProcessInfo {
        pr_id: PR.0,
        version: "test",
        started_unix_secs: 0,
        driver: "epoll",
    };
    let mut text = String::new();
    crate::metrics::render(pr.metrics(), &info, &mut text);
    let series = format!("rserpool_pe_removals_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("no {series}in\n{text}"))
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
            removals(&pr, "keep_alive_timeout"),
            1.0,
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
fn pa19_server_announce_every_interval_with_the_server_id_and_listeners() {
    let mut config = config();
    let target: TransportUrl = "udp://239.0.0.50:3863".parse().unwrap();
    config.announce_targets = vec![target];
    config.listeners = vec![
        "tcp://127.0.0.1:3863".parse().unwrap(),
        "sctp://127.0.0.1:3863".parse().unwrap(),
        "tcp://127.0.0.1:13863?generation=ng".parse().unwrap(),
        "udp://127.0.0.1:3863".parse().unwrap(),
    ];
    let mut pr = InMemoryPr::new(2, config, Limits::default(), 1);
    let mut sent: Vec<(u64, Sent)> = pr.start(0).into_iter().map(|s| (0, s)).collect();
    sent.extend(run(&mut pr, 1, 10_000));
    assert!(
        (9..=12).contains(&sent.len()),
        "about one per second: {}",
        sent.len()
    );
    for (_, s) in &sent {
        assert_eq!(s.target, Target::UdpSend(target.address));
        let AsapMessage::ServerAnnounce {
            server_id,
            transports,
        } = AsapMessage::decode(&s.bytes, Generation::Rfc)
            .unwrap()
            .message
        else {
            panic!()
        };
        assert_eq!(server_id, PR);
        let kinds: Vec<_> = transports.iter().map(|t| (t.kind, t.port)).collect();
        assert_eq!(
            kinds,
            [(TransportKind::Tcp, 3863), (TransportKind::Sctp, 3863)],
            "RFC listeners only"
        );
    }
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

#[test]
fn udp_serves_resolutions_and_refuses_registrations() {
    let mut pr = cluster(2);
    let pe = pr.open(0, info(Generation::Rfc), 0);
    pr.message(pe, &registration(b"udp", 1, Policy::RoundRobin), 0);
    let from: SocketAddr = "127.0.0.1:5555".parse().unwrap();
    let sent = pr.datagram(1, Generation::Rfc, from, &resolution(b"udp", None), 0);
    assert_eq!(
        sent[0].target,
        Target::UdpReply {
            listener: 0,
            to: from
        }
    );
    assert_eq!(resolved(&sent), Ok((vec![1], Some(Policy::RoundRobin))));
    let sent = pr.datagram(
        1,
        Generation::Rfc,
        from,
        &registration(b"udp", 2, Policy::RoundRobin),
        0,
    );
    assert_eq!(
        registration_outcome(&sent),
        (true, Some(cause::REJECTED_SECURITY))
    );
}

#[test]
fn ng_pes_with_wide_ids_are_invisible_to_rfc_pus() {
    let mut pr = cluster(2);
    let ng = pr.open(0, info(Generation::Ng), 0);
    let rfc = pr.open(1, info(Generation::Rfc), 0);
    let wide = 0x1_0000_0001;
    let reg = registration_with(
        b"g",
        wide,
        Policy::Random,
        TransportKind::Sctp,
        0,
        &[PE_IP],
        30_000,
        Generation::Ng,
    );
    let sent = pr.message(ng, &reg, 0);
    let AsapMessage::RegistrationResponse {
        rejected, pe_id, ..
    } = AsapMessage::decode(&sent[0].bytes, Generation::Ng)
        .unwrap()
        .message
    else {
        panic!()
    };
    assert_eq!((rejected, pe_id), (false, PeId(wide)));
    assert_eq!(
        resolved(&pr.message(rfc, &resolution(b"g", None), 0)),
        Err(cause::UNKNOWN_POOL_HANDLE)
    );
    let ng_request = encode(
        &AsapMessage::HandleResolution {
            subscribe: false,
            pool_handle: PoolHandle(b"g"),
            items: None,
        },
        Generation::Ng,
    );
    let sent = pr.message(ng, &ng_request, 0);
    let AsapMessage::HandleResolutionResponse {
        resolution: Resolution::Found { pool_elements, .. },
        ..
    } = AsapMessage::decode(&sent[0].bytes, Generation::Ng)
        .unwrap()
        .message
    else {
        panic!()
    };
    assert_eq!(pool_elements.iter().next().unwrap().id, PeId(wide));
    // An RFC pool handle is at most 32 bytes.
    let long = registration(&[b'h'; 33], 1, Policy::Random);
    assert_eq!(
        registration_outcome(&pr.message(rfc, &long, 0)),
        (true, Some(cause::INVALID_VALUES))
    );
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
    let mut out = super::Output::default();
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
        w1.on_forward(f, 1, &mut super::Output::default());
    }
    assert_eq!(w1.shard().pe_count(), 0, "undone");
}

/// The two workers of a two-worker cluster, mutably.
fn split(c: &mut InMemoryPr) -> (&mut super::Worker, &mut super::Worker) {
    let [a, b] = c.workers_mut() else {
        panic!("two workers")
    };
    (a, b)
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
                protocol: crate::metrics::Protocol::Asap,
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
fn csp_reports_reach_the_monitor_every_interval() {
    use rserpool_protocol::csp::{CSP_GROUP_REGISTRAR, CspReport, component_id};
    let monitor: SocketAddr = "127.0.0.1:2960".parse().unwrap();
    let mut config = config();
    config.csp = Some((monitor, 1_000));
    let mut pr = InMemoryPr::new(2, config, Limits::default(), 5);
    let pe = pr.open(1, info(Generation::Rfc), 0);
    pr.message(pe, &registration(b"csp", 1, Policy::RoundRobin), 0);
    let mut sent: Vec<(u64, Sent)> = pr.start(0).into_iter().map(|s| (0, s)).collect();
    sent.extend(run(&mut pr, 1, 3_000));
    let reports: Vec<_> = sent
        .iter()
        .filter(|(_, s)| s.target == Target::UdpSend(monitor))
        .collect();
    assert_eq!(
        reports.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        [0, 1_000, 2_000, 3_000]
    );
    for (t, s) in reports {
        let report = CspReport::decode(&s.bytes).expect("RSPLIB's CSP format");
        assert_eq!(report.sender_id, component_id(CSP_GROUP_REGISTRAR, PR.0));
        assert_eq!(report.report_interval_us, 1_000_000);
        assert_eq!(report.timestamp_us, t * 1_000);
        assert!(!report.final_report);
    }
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
                protocol: crate::metrics::Protocol::Asap,
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

/// The response a PU gets, decoded and encoded again by the codec: it must come back the same
/// bytes, whether the worker assembled it from encoded PEs or encoded it whole.
fn assert_canonical(sent: &[Sent], generation: Generation) -> Vec<(u64, Vec<IpAddr>)> {
    assert_eq!(sent.len(), 1, "one response: {sent:?}");
    let bytes = &sent[0].bytes;
    let message = AsapMessage::decode(bytes, generation)
        .expect("decodable")
        .message;
    assert_eq!(&encode(&message, generation), bytes, "the encoder's bytes");
    let AsapMessage::HandleResolutionResponse {
        resolution: Resolution::Found {
            policy,
            pool_elements,
        },
        ..
    } = message
    else {
        panic!("expected PEs, got {message:?}");
    };
    let pool_elements: Vec<_> = pool_elements.iter().collect();
    assert_eq!(
        policy,
        Some(pool_elements[0].policy),
        "the first PE's policy"
    );
    pool_elements
        .iter()
        .map(|pe| match &pe.user_transport {
            UserTransport::Transport(t) => (pe.id.0, t.addresses.iter().collect()),
            UserTransport::Opaque(_) => (pe.id.0, Vec::new()),
        })
        .collect()
}

#[test]
fn resolution_responses_are_the_encoders_bytes_and_follow_changes() {
    // Small pools are answered from the worker's encoded PEs, pools beyond
    // `encoded::MAX_CACHED_PES` are encoded per response: both must give the same bytes.
    for (pool_size, generation) in [
        (3u64, Generation::Rfc),
        (3, Generation::Ng),
        (super::encoded::MAX_CACHED_PES as u64 + 2, Generation::Rfc),
    ] {
        let mut pr = cluster(2);
        let a = pr.open(0, info(generation), 0);
        let handle = b"bytes";
        let register = |id: u64, weight: u32, ip: IpAddr| {
            let policy = Policy::WeightedRoundRobin { weight };
            registration_with(
                handle,
                id,
                policy,
                TransportKind::Sctp,
                0,
                &[ip],
                30_000,
                generation,
            )
        };
        for id in 1..=pool_size {
            let sent = pr.message(a, &register(id, id as u32, PE_IP), 0);
            assert_eq!(registration_outcome_in(&sent, generation), (false, None));
        }
        let resolve = encode(
            &AsapMessage::HandleResolution {
                subscribe: false,
                pool_handle: PoolHandle(handle),
                items: Some(pool_size as u32),
            },
            generation,
        );
        let before = assert_canonical(&pr.message(a, &resolve, 0), generation);
        assert_eq!(before.len() as u64, pool_size.min(128));
        assert!(before.iter().all(|(_, ips)| ips == &[PE_IP]));
        // PE 2 moves to another address: no response may show the old one.
        pr.message(a, &register(2, 9, PE_IP2), 0);
        for _ in 0..3 {
            let after = assert_canonical(&pr.message(a, &resolve, 0), generation);
            for (id, ips) in after {
                let want = if id == 2 { PE_IP2 } else { PE_IP };
                assert_eq!(ips, [want], "PE {id} of a pool of {pool_size}");
            }
        }
    }
}

/// (rejected, cause) of a registration response in `generation`.
fn registration_outcome_in(sent: &[Sent], generation: Generation) -> (bool, Option<u16>) {
    assert_eq!(sent.len(), 1, "expected one message, got {sent:?}");
    match AsapMessage::decode(&sent[0].bytes, generation)
        .expect("decodable")
        .message
    {
        AsapMessage::RegistrationResponse {
            rejected, error, ..
        } => (
            rejected,
            error.and_then(|e| e.iter().next()).map(|c| c.code),
        ),
        other => panic!("expected a registration response, got {other:?}"),
    }
}

mod enrp;

#[test]
fn output_runs_group_consecutive_messages_to_one_target() {
    use super::{AssociationId, Output};
    let a = Target::Association(AssociationId::new(1).expect("not 0"));
    let b = Target::Association(AssociationId::new(2).expect("not 0"));
    let mut out = Output::default();
    for (target, fill, len) in [(a, 1u8, 8), (a, 2, 12), (b, 3, 4), (a, 4, 16)] {
        out.transmit(target, |buf| {
            buf[..len].fill(fill);
            Ok(len)
        })
        .expect("encoded");
    }
    let runs: Vec<_> = out.runs().collect();
    let shape: Vec<(Target, usize, Vec<usize>)> = runs
        .iter()
        .map(|r| {
            (
                r.target,
                r.bytes().len(),
                r.messages().map(<[u8]>::len).collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [(a, 20, vec![8, 12]), (b, 4, vec![4]), (a, 16, vec![16])]
    );
    assert_eq!(runs[0].bytes(), [[1u8; 8].as_slice(), &[2; 12]].concat());
    let flat: Vec<&[u8]> = runs
        .iter()
        .flat_map(|r| r.messages().collect::<Vec<_>>())
        .collect();
    let transmits: Vec<&[u8]> = out.transmits().map(|(_, m)| m).collect();
    assert_eq!(flat, transmits, "the same messages in the same order");
}
