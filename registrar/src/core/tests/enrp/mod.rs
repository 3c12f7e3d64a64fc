//! The ENRP peer side against the acceptance checklist (`acceptance-checklist.md` §2.3:
//! PE-02..PE-20): a PR under test and peers played by the test, which encodes their messages and
//! decodes the PR's.
//!
//! This module holds the fixtures the ENRP tests share, and the tests of the dispatch of a
//! received message (PE-18, PE-19); the procedures are tested in [`startup`], [`scope`],
//! [`transfer`], [`update`], [`audit`] and [`takeover`].

mod audit;
mod scope;
mod startup;
mod takeover;
mod transfer;
mod update;

use rserpool_handlespace::{AssociationId, PeId, PrId};
use rserpool_protocol::checksum::Internet16;
use rserpool_protocol::{
    EnrpBody, EnrpMessage, Generation, Policy, PoolElementParam, PoolEntry, PoolHandle, Seq,
    TransportKind, TransportParam, UpdateAction, UserTransport,
};

use super::super::in_memory::{InMemoryPr, Sent};
use super::super::{AssociationInfo, CoreConfig, EnrpConfig, Output, Target};
use super::{PE_IP, info, resolved};
use crate::core::Protocol;
use rserpool_protocol::url::{Transport as UrlTransport, TransportUrl};

const PR: PrId = super::PR;
pub(super) const PEER: PrId = PrId(0x2222_0001);
pub(super) const PEER2: PrId = PrId(0x2222_0002);

fn tcp(address: &str) -> TransportUrl {
    TransportUrl {
        transport: UrlTransport::Tcp,
        address: address.parse().unwrap(),
        generation: Generation::Rfc,
        tls: None,
    }
}

pub(super) fn scope_config(peers: Vec<TransportUrl>) -> CoreConfig {
    CoreConfig {
        enrp: EnrpConfig {
            local: vec![tcp("127.0.0.1:9901")],
            peers,
            heartbeat_interval: 1_000,
            max_time_last_heard: 2_000,
            max_time_no_response: 1_000,
            mentor_discovery_timeout: 3_000,
            takeover_expiry: 2_000,
            ..EnrpConfig::default()
        },
        ..super::config()
    }
}

/// A started PR of `workers` workers in an operating scope without static peers.
fn scope_pr(workers: usize) -> InMemoryPr {
    scope_pr_with(workers, scope_config(Vec::new()))
}

/// A started PR of `workers` workers with `config`.
pub(super) fn scope_pr_with(workers: usize, config: CoreConfig) -> InMemoryPr {
    let mut pr = InMemoryPr::new(workers, config, rserpool_handlespace::Limits::default(), 7);
    pr.start(0);
    pr
}

fn enrp_info() -> AssociationInfo {
    AssociationInfo {
        transport: UrlTransport::Tcp,
        generation: Generation::Rfc,
        peer_addresses: vec!["127.0.0.2:9901".parse().unwrap()],
        protocol: Protocol::Enrp,
    }
}

pub(super) fn encode(sender: PrId, body: EnrpBody<'_>) -> Vec<u8> {
    let mut buf = vec![0; 65_536];
    let n = EnrpMessage {
        sender,
        receiver: PR,
        body,
    }
    .encode(Generation::Rfc, &mut buf)
    .expect("encodable");
    buf.truncate(n);
    buf
}

fn presence(sender: PrId, reply_required: bool, checksum: u16) -> Vec<u8> {
    encode(
        sender,
        EnrpBody::Presence {
            reply_required,
            checksum: Some(u64::from(checksum)),
            server_information: None,
        },
    )
}

/// The ENRP messages among `sent` that go to `association`, decoded: (type, flags-relevant
/// summary) via a closure over the decoded message.
fn to<T>(
    sent: &[Sent],
    association: AssociationId,
    mut f: impl FnMut(&EnrpMessage<'_>) -> T,
) -> Vec<T> {
    sent.iter()
        .filter(|s| s.target == Target::Association(association))
        .map(|s| {
            let m = EnrpMessage::decode(&s.bytes, Generation::Rfc)
                .expect("the PR sends decodable ENRP")
                .message;
            assert_eq!(m.sender, PR, "every ENRP message carries our ID");
            f(&m)
        })
        .collect()
}

fn types(sent: &[Sent], association: AssociationId) -> Vec<u8> {
    to(sent, association, |m| m.body.message_type())
}

/// A peer introduced with a presence (and the PR's answers drained).
pub(super) fn join(pr: &mut InMemoryPr, id: PrId, now: u64) -> AssociationId {
    let a = pr.open(0, enrp_info(), now);
    pr.message(a, &presence(id, false, 0xffff), now);
    a
}

pub(super) fn pe_element(id: u64, home: PrId) -> PoolElementParam<'static> {
    const IPS: &[std::net::IpAddr] = &[PE_IP];
    PoolElementParam {
        id: PeId(id),
        home_pr: home,
        registration_life: 30_000,
        user_transport: UserTransport::Transport(TransportParam {
            kind: TransportKind::Sctp,
            port: 7,
            transport_use: 0,
            service_code: 0,
            addresses: Seq::from_items(IPS),
        }),
        policy: Policy::RoundRobin,
        asap_transport: None,
    }
}

pub(super) fn update(
    sender: PrId,
    action: UpdateAction,
    handle: &[u8],
    pe: PoolElementParam<'_>,
) -> Vec<u8> {
    encode(
        sender,
        EnrpBody::HandleUpdate {
            takeover_suggested: false,
            action,
            pool_handle: PoolHandle(handle),
            pool_element: pe,
        },
    )
}

pub(super) fn resolve_ids(pr: &mut InMemoryPr, handle: &[u8], now: u64) -> Result<Vec<u64>, u16> {
    let pu = pr.open(0, info(Generation::Rfc), now);
    let sent = pr.message(pu, &super::resolution(handle, Some(128)), now);
    pr.close(pu, now);
    resolved(&sent).map(|(mut ids, _)| {
        ids.sort_unstable();
        ids
    })
}

/// A started PR of one worker whose only static peer is `peer`, and the association its first
/// tick asked the driver to open there (not yet connected).
fn with_static_peer(peer: TransportUrl) -> (InMemoryPr, AssociationId) {
    let mut pr = InMemoryPr::new(
        1,
        scope_config(vec![peer]),
        rserpool_handlespace::Limits::default(),
        7,
    );
    let mut out = Output::default();
    let w = &mut pr.workers_mut()[0];
    w.start(0);
    w.on_timer(0, &mut out);
    assert_eq!(out.connects().len(), 1, "one connect to the static peer");
    assert_eq!(out.connects()[0].url, peer);
    let association = out.connects()[0].association;
    (pr, association)
}

/// The home PRs of the PEs a resolution of `handle` returns.
fn homes(pr: &mut InMemoryPr, handle: &[u8], now: u64) -> Vec<PrId> {
    let pu = pr.open(0, info(Generation::Rfc), now);
    let sent = pr.message(pu, &super::resolution(handle, Some(128)), now);
    pr.close(pu, now);
    match super::only(&sent) {
        rserpool_protocol::AsapMessage::HandleResolutionResponse {
            resolution: rserpool_protocol::Resolution::Found { pool_elements, .. },
            ..
        } => pool_elements.iter().map(|p| p.home_pr).collect(),
        other => panic!("{other:?}"),
    }
}

fn checksum_of(entries: &[(&[u8], u32)]) -> u16 {
    let mut c = Internet16::new();
    for (h, id) in entries {
        c.add(h, *id);
    }
    c.value()
}

#[test]
fn pe18_messages_with_our_own_id_are_ignored() {
    let mut pr = scope_pr(1);
    let a = pr.open(0, enrp_info(), 0);
    let sent = pr.message(a, &presence(PR, true, 0xffff), 0);
    assert!(sent.is_empty(), "{sent:?}");
    assert!(pr.workers()[0].enrp_peers().is_empty());
}

#[test]
fn pe19_a_malformed_enrp_message_gets_an_enrp_error() {
    let mut pr = scope_pr(1);
    let a = pr.open(0, enrp_info(), 0);
    let mut bad = presence(PEER, false, 0xffff);
    // An unknown message type whose upper bits ask for a report (RFC 5354 §4: 01).
    bad[0] = 0x4b;
    let sent = pr.message(a, &bad, 0);
    let errors = to(&sent, a, |m| match m.body {
        EnrpBody::Error(causes) => causes.iter().map(|c| c.code).collect::<Vec<_>>(),
        _ => Vec::new(),
    });
    assert_eq!(
        errors,
        [[rserpool_protocol::cause::UNRECOGNIZED_MESSAGE]],
        "{sent:?}"
    );
}

pub(super) fn table_response(
    sender: PrId,
    handle: &[u8],
    pes: &[PoolElementParam<'_>],
    more: bool,
) -> Vec<u8> {
    let entries = [PoolEntry {
        pool_handle: PoolHandle(handle),
        pool_elements: Seq::from_items(pes),
    }];
    encode(
        sender,
        EnrpBody::HandleTableResponse {
            reject: false,
            more_to_send: more,
            entries: Seq::from_items(&entries),
        },
    )
}
