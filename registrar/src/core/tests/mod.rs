//! The state machine's tests. The ASAP server side against the acceptance checklist
//! (`acceptance-checklist.md` §2.1-2.2: C-04..C-09, PA-01..PA-20), on a PR of one and of several
//! workers: registration and deregistration ([`registration`]), handle resolution
//! ([`resolution`]), subscriptions ([`subscriptions`]), keep-alives and the removal of PEs ([`keepalive`]), announces and CSP reports
//! ([`announce`]), hostile and excessive input ([`hostile`]); the ENRP peer side in [`enrp`].
//!
//! This module holds the fixtures they share: the PR under test, PE associations, and ASAP
//! messages encoded and decoded.

mod access;
mod announce;
mod enrp;
mod hostile;
mod identity;
mod keepalive;
mod registration;
mod resolution;
mod subscriptions;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rserpool_handlespace::{Limits, PeId, PrId};
use rserpool_protocol::{
    AsapMessage, Generation, Policy, PoolElementParam, PoolHandle, Resolution, Seq, TransportKind,
    TransportParam, UserTransport,
};

use super::in_memory::{InMemoryPr, Sent};
use super::{AssociationInfo, CoreConfig, Target};
use rserpool_protocol::url::Transport as UrlTransport;

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
        protocol: crate::core::Protocol::Asap,
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

/// Runs the PR's timers from `from` to `to`, collecting what it sent: at `from`, then at each of
/// the PR's next timeouts until `to` ([`next_time`]), so every timer fires when it would if the
/// timers ran every millisecond.
fn run(pr: &mut InMemoryPr, from: u64, to: u64) -> Vec<(u64, Sent)> {
    let mut sent = Vec::new();
    let mut now = from;
    while now <= to {
        sent.extend(pr.on_timer(now).into_iter().map(|s| (now, s)));
        if now == to {
            break;
        }
        now = next_time(pr.next_timeout(), now, to);
    }
    sent
}

/// When to run the timers next after `now`: at the next timeout (a lower bound of the next
/// timer's deadline, so no timer is run late), at least 1 ms after `now` and at most `until`
/// (after `now`).
fn next_time(next_timeout: Option<u64>, now: u64, until: u64) -> u64 {
    next_timeout.map_or(until, |t| t.clamp(now + 1, until))
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
