//! The ENRP peer side against the acceptance checklist (`acceptance-checklist.md` §2.3:
//! PE-02..PE-19): a PR under test and peers played by the test, which encodes their messages and
//! decodes the PR's.

use rserpool_handlespace::{AssociationId, PeId, PrId};
use rserpool_protocol::checksum::Internet16;
use rserpool_protocol::enrp::message_type as et;
use rserpool_protocol::{
    EnrpBody, EnrpMessage, Generation, Policy, PoolElementParam, PoolEntry, PoolHandle, Seq,
    ServerInformation, TransportKind, TransportParam, UpdateAction, UserTransport,
};

use super::super::in_memory::{InMemoryPr, Sent};
use super::super::{AssociationInfo, CoreConfig, EnrpConfig, Output, Target};
use super::{PE_IP, info, registration, resolved};
use crate::metrics::Protocol;
use crate::url::{Transport as UrlTransport, TransportUrl};

const PR: PrId = super::PR;
const PEER: PrId = PrId(0x2222_0001);
const PEER2: PrId = PrId(0x2222_0002);

fn tcp(address: &str) -> TransportUrl {
    TransportUrl {
        transport: UrlTransport::Tcp,
        address: address.parse().unwrap(),
        generation: Generation::Rfc,
    }
}

fn scope_config(peers: Vec<TransportUrl>) -> CoreConfig {
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
    let mut pr = InMemoryPr::new(
        workers,
        scope_config(Vec::new()),
        rserpool_handlespace::Limits::default(),
        7,
    );
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

fn encode(sender: PrId, body: EnrpBody<'_>) -> Vec<u8> {
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
fn join(pr: &mut InMemoryPr, id: PrId, now: u64) -> AssociationId {
    let a = pr.open(0, enrp_info(), now);
    pr.message(a, &presence(id, false, 0xffff), now);
    a
}

fn pe_element(id: u64, home: PrId) -> PoolElementParam<'static> {
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

fn update(sender: PrId, action: UpdateAction, handle: &[u8], pe: PoolElementParam<'_>) -> Vec<u8> {
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

fn resolve_ids(pr: &mut InMemoryPr, handle: &[u8], now: u64) -> Result<Vec<u64>, u16> {
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
fn pe02_without_peers_the_pr_serves_at_once_and_sends_no_enrp() {
    let mut pr = scope_pr(1);
    assert!(pr.workers()[0].enrp_live());
    let pe = pr.open(0, info(Generation::Rfc), 0);
    let sent = pr.message(pe, &registration(b"echo", 1, Policy::RoundRobin), 0);
    assert_eq!(sent.len(), 1, "only the registration response: {sent:?}");
}

#[test]
fn pe07_pe08_an_unknown_peer_is_added_answered_and_asked_for_its_list() {
    let mut pr = scope_pr(1);
    let a = pr.open(0, enrp_info(), 0);
    let sent = pr.message(a, &presence(PEER, true, 0xffff), 0);
    let presences = to(&sent, a, |m| match m.body {
        EnrpBody::Presence {
            reply_required,
            checksum,
            server_information,
        } => Some((
            reply_required,
            checksum,
            server_information.map(|s| s.server_id),
            m.receiver,
        )),
        _ => None,
    });
    // PE-07: a reply-required presence to the new peer; PE-08: an answer with server info.
    assert!(presences.contains(&Some((true, Some(0xffff), Some(PR), PEER))));
    assert!(presences.contains(&Some((false, Some(0xffff), Some(PR), PEER))));
    assert!(types(&sent, a).contains(&et::LIST_REQUEST));
    assert_eq!(pr.workers()[0].enrp_peers(), [PEER]);
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

#[test]
fn pe10_pe11_registrations_and_removals_are_replicated_from_every_shard() {
    for workers in [1, 3] {
        let mut pr = scope_pr(workers);
        let peer = join(&mut pr, PEER, 0);
        let pe = pr.open(workers - 1, info(Generation::Rfc), 0);
        let mut adds = Vec::new();
        for (i, handle) in [&b"a"[..], b"b", b"c", b"d"].iter().enumerate() {
            let sent = pr.message(
                pe,
                &registration(handle, 10 + i as u64, Policy::RoundRobin),
                0,
            );
            adds.extend(to(&sent, peer, |m| match m.body {
                EnrpBody::HandleUpdate {
                    action: UpdateAction::AddPe,
                    pool_handle,
                    pool_element,
                    ..
                } => {
                    assert_eq!(pool_element.home_pr, PR);
                    assert_eq!(m.receiver, PEER);
                    assert!(
                        pool_element.asap_transport.is_some(),
                        "PA-07: ENRP carries the ASAP transport"
                    );
                    (pool_handle.0.to_vec(), pool_element.id.0)
                }
                _ => panic!("expected ADD_PE, got {m:?}"),
            }));
        }
        assert_eq!(adds.len(), 4, "{workers} workers");
        let sent = pr.message(
            pe,
            &super::encode(
                &rserpool_protocol::AsapMessage::Deregistration {
                    pool_handle: PoolHandle(b"a"),
                    pe_id: PeId(10),
                },
                Generation::Rfc,
            ),
            0,
        );
        let dels = to(
            &sent,
            peer,
            |m| matches!(m.body, EnrpBody::HandleUpdate { action: UpdateAction::DelPe, pool_element, .. } if pool_element.id == PeId(10)),
        );
        assert_eq!(dels, [true]);
        // The PE's association closes: its three other PEs are deleted at the peers too.
        let sent = pr.close(pe, 0);
        assert_eq!(
            to(&sent, peer, |m| matches!(
                m.body,
                EnrpBody::HandleUpdate {
                    action: UpdateAction::DelPe,
                    ..
                }
            ))
            .len(),
            3
        );
    }
}

#[test]
fn pe10_pe11_updates_from_the_home_pr_are_applied_and_others_ignored() {
    for workers in [1, 2] {
        let mut pr = scope_pr(workers);
        let peer = join(&mut pr, PEER, 0);
        let other = join(&mut pr, PEER2, 0);
        pr.message(
            peer,
            &update(PEER, UpdateAction::AddPe, b"pool", pe_element(1, PEER)),
            0,
        );
        pr.message(
            peer,
            &update(PEER, UpdateAction::AddPe, b"pool", pe_element(2, PEER)),
            0,
        );
        // Not the PE's home PR: ignored.
        pr.message(
            other,
            &update(PEER2, UpdateAction::AddPe, b"pool", pe_element(3, PEER)),
            0,
        );
        assert_eq!(resolve_ids(&mut pr, b"pool", 0), Ok(vec![1, 2]));
        pr.message(
            other,
            &update(PEER2, UpdateAction::DelPe, b"pool", pe_element(1, PEER)),
            0,
        );
        assert_eq!(resolve_ids(&mut pr, b"pool", 0), Ok(vec![1, 2]));
        pr.message(
            peer,
            &update(PEER, UpdateAction::DelPe, b"pool", pe_element(1, PEER)),
            0,
        );
        pr.message(
            peer,
            &update(PEER, UpdateAction::DelPe, b"pool", pe_element(2, PEER)),
            0,
        );
        assert_eq!(
            resolve_ids(&mut pr, b"pool", 0),
            Err(rserpool_protocol::cause::UNKNOWN_POOL_HANDLE),
            "PE-11: the empty pool is gone"
        );
    }
}

#[test]
fn pa20_a_pe_learnt_from_a_peer_expires_by_its_registration_life() {
    let mut pr = scope_pr(1);
    let peer = join(&mut pr, PEER, 0);
    let mut pe = pe_element(1, PEER);
    pe.registration_life = 3_000;
    pr.message(peer, &update(PEER, UpdateAction::AddPe, b"pool", pe), 0);
    assert_eq!(resolve_ids(&mut pr, b"pool", 100), Ok(vec![1]));
    // Keep the peer alive meanwhile.
    pr.message(
        peer,
        &presence(PEER, false, checksum_of(&[(b"pool", 1)])),
        2_000,
    );
    pr.on_timer(3_100);
    assert!(resolve_ids(&mut pr, b"pool", 3_100).is_err());
}

#[test]
fn pe12_pe13_a_checksum_mismatch_resynchronises_only_that_peers_pes() {
    for workers in [1, 3] {
        let mut pr = scope_pr(workers);
        let peer = join(&mut pr, PEER, 0);
        let other = join(&mut pr, PEER2, 0);
        for id in 1..=3 {
            pr.message(
                peer,
                &update(PEER, UpdateAction::AddPe, b"p", pe_element(id, PEER)),
                0,
            );
        }
        pr.message(
            other,
            &update(PEER2, UpdateAction::AddPe, b"q", pe_element(9, PEER2)),
            0,
        );
        // PE-12: the same checksum -> nothing to do.
        let agreed = checksum_of(&[(b"p", 1), (b"p", 2), (b"p", 3)]);
        let sent = pr.message(peer, &presence(PEER, false, agreed), 10);
        assert!(
            !types(&sent, peer).contains(&et::HANDLE_TABLE_REQUEST),
            "{sent:?}"
        );
        // PE-13: the peer lost PE 2 and has PE 4 we never heard of.
        let theirs = checksum_of(&[(b"p", 1), (b"p", 3), (b"p", 4)]);
        let sent = pr.message(peer, &presence(PEER, false, theirs), 20);
        let requests = to(&sent, peer, |m| match m.body {
            EnrpBody::HandleTableRequest { own_children_only } => Some(own_children_only),
            _ => None,
        });
        assert!(requests.contains(&Some(true)), "W=1 request: {sent:?}");
        // The answer in two pages: the PR asks again after M=1.
        let page1 = [pe_element(1, PEER), pe_element(3, PEER)];
        let page2 = [pe_element(4, PEER)];
        let sent = pr.message(peer, &table_response(PEER, b"p", &page1, true), 30);
        assert_eq!(types(&sent, peer), [et::HANDLE_TABLE_REQUEST]);
        pr.message(peer, &table_response(PEER, b"p", &page2, false), 40);
        assert_eq!(resolve_ids(&mut pr, b"p", 50), Ok(vec![1, 3, 4]));
        assert_eq!(
            resolve_ids(&mut pr, b"q", 50),
            Ok(vec![9]),
            "other owners untouched"
        );
        // Now they agree.
        let sent = pr.message(peer, &presence(PEER, false, theirs), 60);
        assert!(!types(&sent, peer).contains(&et::HANDLE_TABLE_REQUEST));
    }
}

fn table_response(
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

#[test]
fn pe04_pe17_handle_table_pages_until_everything_is_sent_and_strangers_are_rejected() {
    let mut pr = scope_pr(2);
    let pe = pr.open(0, info(Generation::Rfc), 0);
    for id in 1..=300u64 {
        let handle = format!("pool-{}", id % 7);
        pr.message(
            pe,
            &registration(handle.as_bytes(), id, Policy::RoundRobin),
            0,
        );
    }
    // PE-17: a request is the first message of an unknown PR: rejected.
    let stranger = pr.open(0, enrp_info(), 0);
    let sent = pr.message(
        stranger,
        &encode(
            PEER2,
            EnrpBody::HandleTableRequest {
                own_children_only: false,
            },
        ),
        0,
    );
    let rejects = to(&sent, stranger, |m| {
        matches!(m.body, EnrpBody::HandleTableResponse { reject: true, .. })
    });
    assert!(rejects.contains(&true), "{sent:?}");

    let peer = join(&mut pr, PEER, 0);
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    loop {
        let sent = pr.message(
            peer,
            &encode(
                PEER,
                EnrpBody::HandleTableRequest {
                    own_children_only: false,
                },
            ),
            1,
        );
        let page = to(&sent, peer, |m| match m.body {
            EnrpBody::HandleTableResponse {
                reject,
                more_to_send,
                entries,
            } => {
                assert!(!reject);
                let pes: Vec<(Vec<u8>, u64)> = entries
                    .iter()
                    .flat_map(|e| {
                        e.pool_elements
                            .iter()
                            .map(move |p| (e.pool_handle.0.to_vec(), p.id.0))
                    })
                    .collect();
                Some((more_to_send, pes))
            }
            _ => None,
        });
        let (more, pes) = page.into_iter().flatten().next().expect("a response");
        assert!(pes.len() <= 128, "RSPLIB's page size");
        for p in pes {
            assert!(seen.insert(p), "no PE twice");
        }
        pages += 1;
        if !more {
            break;
        }
        assert!(pages < 10);
    }
    assert_eq!(seen.len(), 300);
    // Pages end at shard boundaries: 300 PEs in two shards take three or four pages.
    assert!((3..=4).contains(&pages), "{pages}");
}

#[test]
fn pe09_pe14_a_silent_peer_is_probed_declared_dead_and_taken_over() {
    let mut pr = scope_pr(2);
    let dying = join(&mut pr, PEER, 0);
    let witness = join(&mut pr, PEER2, 0);
    for id in 1..=4 {
        let handle = if id % 2 == 0 { &b"even"[..] } else { b"odd" };
        pr.message(
            dying,
            &update(PEER, UpdateAction::AddPe, handle, pe_element(id, PEER)),
            0,
        );
    }
    // The witness keeps talking; the dying peer falls silent.
    let mut probed = false;
    let mut init = false;
    let mut now = 0;
    while now < 6_000 && !init {
        now += 100;
        if now % 500 == 0 {
            pr.message(witness, &presence(PEER2, false, 0xffff), now);
        }
        let sent = pr.on_timer(now);
        probed |= to(&sent, dying, |m| {
            matches!(
                m.body,
                EnrpBody::Presence {
                    reply_required: true,
                    ..
                }
            )
        })
        .contains(&true);
        init = to(
            &sent,
            witness,
            |m| matches!(m.body, EnrpBody::InitTakeover { target } if target == PEER),
        )
        .contains(&true);
    }
    assert!(probed, "PE-09: a reply-required probe first");
    assert!(init, "INIT_TAKEOVER to the other peers");
    // Not before MAX-TIME-LAST-HEARD + MAX-TIME-NO-RESPONSE.
    assert!(now >= 3_000, "{now}");
    let sent = pr.message(
        witness,
        &encode(PEER2, EnrpBody::InitTakeoverAck { target: PEER }),
        now,
    );
    assert!(
        to(
            &sent,
            witness,
            |m| matches!(m.body, EnrpBody::TakeoverServer { target } if target == PEER)
        )
        .contains(&true)
    );
    // The PEs now belong to this PR.
    let pu = pr.open(1, info(Generation::Rfc), now);
    let sent = pr.message(pu, &super::resolution(b"even", Some(10)), now);
    match super::only(&sent) {
        rserpool_protocol::AsapMessage::HandleResolutionResponse {
            resolution: rserpool_protocol::Resolution::Found { pool_elements, .. },
            ..
        } => {
            assert_eq!(pool_elements.len(), 2);
            assert!(pool_elements.iter().all(|p| p.home_pr == PR));
        }
        other => panic!("{other:?}"),
    }
    assert!(!pr.workers()[0].enrp_peers().contains(&PEER));

    // Issue 13: the peer was hung, not dead. It wakes up and a PE still registered there
    // deregisters: its DEL_PE reaches this PR, the PE's home now, which deletes it and tells
    // the other peers (they would ignore the DEL_PE of a PR that is not the PE's home).
    let woke = pr.open(0, enrp_info(), now);
    let sent = pr.message(woke, &presence(PEER, false, 0xffff), now);
    // A PR this one took over is heard again: its PEs are repaired whatever its checksum.
    assert!(
        to(&sent, woke, |m| matches!(
            m.body,
            EnrpBody::HandleTableRequest {
                own_children_only: true
            }
        ))
        .contains(&true),
        "a W=1 handle table request to the PR taken over: {sent:?}"
    );
    let sent = pr.message(
        woke,
        &update(PEER, UpdateAction::DelPe, b"even", pe_element(2, PEER)),
        now + 10,
    );
    assert_eq!(
        to(&sent, witness, |m| match m.body {
            EnrpBody::HandleUpdate {
                action: UpdateAction::DelPe,
                pool_element,
                ..
            } => Some((pool_element.id, pool_element.home_pr)),
            _ => None,
        })
        .into_iter()
        .flatten()
        .collect::<Vec<_>>(),
        [(PeId(2), PR)],
        "the DEL_PE is passed on as the PE's home"
    );
    assert_eq!(resolve_ids(&mut pr, b"even", now + 10), Ok(vec![4]));
    // Its table: PEs 1 and 3 are still registered there, PE 4 deregistered while it was hung
    // (its DEL_PE reached no one). 1 and 3 go back to it; 4 is deleted and the peers told.
    let sent = pr.message(
        woke,
        &table_response(
            PEER,
            b"odd",
            &[pe_element(1, PEER), pe_element(3, PEER)],
            false,
        ),
        now + 20,
    );
    assert_eq!(
        to(&sent, witness, |m| match m.body {
            EnrpBody::HandleUpdate {
                action: UpdateAction::DelPe,
                pool_element,
                ..
            } => Some(pool_element.id),
            _ => None,
        })
        .into_iter()
        .flatten()
        .collect::<Vec<_>>(),
        [PeId(4)]
    );
    assert_eq!(
        resolve_ids(&mut pr, b"even", now + 30),
        Err(rserpool_protocol::cause::UNKNOWN_POOL_HANDLE)
    );
    assert_eq!(homes(&mut pr, b"odd", now + 30), [PEER, PEER]);
}

#[test]
fn pe14_takeover_server_from_a_peer_moves_the_pes_to_it() {
    let mut pr = scope_pr(2);
    let dead = join(&mut pr, PEER, 0);
    let winner = join(&mut pr, PEER2, 0);
    pr.message(
        dead,
        &update(PEER, UpdateAction::AddPe, b"x", pe_element(5, PEER)),
        0,
    );
    let sent = pr.message(
        winner,
        &encode(PEER2, EnrpBody::InitTakeover { target: PEER }),
        10,
    );
    assert!(
        to(
            &sent,
            winner,
            |m| matches!(m.body, EnrpBody::InitTakeoverAck { target } if target == PEER)
        )
        .contains(&true)
    );
    pr.message(
        winner,
        &encode(PEER2, EnrpBody::TakeoverServer { target: PEER }),
        20,
    );
    // Our checksum for PEER2 now covers the PE: PEER2 announcing it agrees, no resync.
    let sent = pr.message(
        winner,
        &presence(PEER2, false, checksum_of(&[(b"x", 5)])),
        30,
    );
    assert!(
        !types(&sent, winner).contains(&et::HANDLE_TABLE_REQUEST),
        "{sent:?}"
    );
}

#[test]
fn pe15_of_two_concurrent_takeovers_the_smaller_id_yields() {
    for (rival, yields) in [(PrId(PR.0 + 1), true), (PrId(PR.0 - 1), false)] {
        let mut pr = scope_pr(1);
        let target = join(&mut pr, PEER, 0);
        let r = join(&mut pr, rival, 0);
        pr.message(
            target,
            &update(PEER, UpdateAction::AddPe, b"x", pe_element(5, PEER)),
            0,
        );
        // Keep the rival alive, let the target go silent until our own takeover starts.
        let mut now = 0;
        let mut started = false;
        while !started && now < 6_000 {
            now += 100;
            pr.message(r, &presence(rival, false, 0xffff), now);
            let sent = pr.on_timer(now);
            started = to(&sent, r, |m| {
                matches!(m.body, EnrpBody::InitTakeover { .. })
            })
            .contains(&true);
        }
        assert!(started);
        let sent = pr.message(
            r,
            &encode(rival, EnrpBody::InitTakeover { target: PEER }),
            now,
        );
        let acked = to(&sent, r, |m| {
            matches!(m.body, EnrpBody::InitTakeoverAck { .. })
        })
        .contains(&true);
        assert_eq!(acked, yields, "rival {rival}");
    }
}

#[test]
fn pe16_an_init_takeover_aimed_at_us_is_answered_with_presence() {
    let mut pr = scope_pr(1);
    let peer = join(&mut pr, PEER, 0);
    let other = join(&mut pr, PEER2, 0);
    let sent = pr.message(
        peer,
        &encode(PEER, EnrpBody::InitTakeover { target: PR }),
        10,
    );
    for a in [peer, other] {
        assert!(
            types(&sent, a).contains(&et::PRESENCE),
            "a presence to every peer: {sent:?}"
        );
    }
    assert!(!types(&sent, peer).contains(&et::INIT_TAKEOVER_ACK));
}

#[test]
fn pe03_pe05_a_pr_with_a_mentor_loads_the_handlespace_before_serving_peers() {
    let mentor_url = tcp("127.0.0.2:9901");
    let (mut pr, a) = with_static_peer(mentor_url);
    let mut out = Output::default();
    let w = &mut pr.workers_mut()[0];
    assert!(!w.enrp_live(), "starting");
    w.connected(a, vec![mentor_url.address], 10, &mut out);
    let intro: Vec<u8> = out.transmits().map(|(_, b)| b[0]).collect();
    assert_eq!(intro, [et::PRESENCE]);
    out.clear();
    // PE-05: while starting, a peer's requests are rejected.
    w.on_message(a, &presence(PEER, false, 0xffff), 20, &mut out);
    let asked: Vec<u8> = out.transmits().map(|(_, b)| b[0]).collect();
    assert!(asked.contains(&et::LIST_REQUEST), "{asked:?}");
    assert!(
        asked.contains(&et::HANDLE_TABLE_REQUEST),
        "PE-03: W=0 download: {asked:?}"
    );
    out.clear();
    w.on_message(a, &encode(PEER, EnrpBody::ListRequest), 25, &mut out);
    let rejected = out.transmits().any(|(_, b)| {
        matches!(
            EnrpMessage::decode(b, Generation::Rfc)
                .unwrap()
                .message
                .body,
            EnrpBody::ListResponse { reject: true, .. }
        )
    });
    assert!(rejected, "PE-05");
    out.clear();
    let pes = [pe_element(1, PEER), pe_element(2, PEER2)];
    w.on_message(a, &table_response(PEER, b"m", &pes, false), 30, &mut out);
    assert!(w.enrp_live(), "the last page ends start-up");
    out.clear();
    let sent = pr.message(a, &encode(PEER, EnrpBody::ListRequest), 40);
    let lists = to(&sent, a, |m| match m.body {
        EnrpBody::ListResponse { reject, servers } => Some((reject, servers.len())),
        _ => None,
    });
    assert!(lists.contains(&Some((false, 0))), "{sent:?}");
    assert_eq!(resolve_ids(&mut pr, b"m", 50), Ok(vec![1, 2]));
}

#[test]
fn pe02_a_pr_whose_mentor_never_answers_serves_alone_after_the_discovery_timeout() {
    let mut pr = InMemoryPr::new(
        1,
        scope_config(vec![tcp("127.0.0.2:9901")]),
        rserpool_handlespace::Limits::default(),
        7,
    );
    pr.start(0);
    assert!(!pr.workers()[0].enrp_live());
    pr.on_timer(2_900);
    assert!(!pr.workers()[0].enrp_live());
    // Within one housekeeping tick (a quarter of the shortest ENRP timer) of the timeout.
    pr.on_timer(3_250);
    assert!(pr.workers()[0].enrp_live());
}

#[test]
fn list_response_names_known_peers_with_their_transport() {
    let mut pr = scope_pr(1);
    let a = pr.open(0, enrp_info(), 0);
    const IP: &[std::net::IpAddr] = &[std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3))];
    let info = ServerInformation {
        server_id: PEER2,
        transport: TransportParam {
            kind: TransportKind::Tcp,
            port: 9902,
            transport_use: 0,
            service_code: 0,
            addresses: Seq::from_items(IP),
        },
    };
    let b = pr.open(0, enrp_info(), 0);
    pr.message(
        b,
        &encode(
            PEER2,
            EnrpBody::Presence {
                reply_required: false,
                checksum: Some(0xffff),
                server_information: Some(info),
            },
        ),
        0,
    );
    pr.message(a, &presence(PEER, false, 0xffff), 0);
    let sent = pr.message(a, &encode(PEER, EnrpBody::ListRequest), 1);
    let listed = to(&sent, a, |m| match m.body {
        EnrpBody::ListResponse { servers, .. } => servers
            .iter()
            .map(|s| (s.server_id, s.transport.port))
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    });
    assert_eq!(listed.concat(), [(PEER2, 9902)]);
}

#[test]
fn a_peers_copy_never_takes_a_pe_from_a_live_association() {
    let mut pr = scope_pr(2);
    let peer = join(&mut pr, PEER, 0);
    let pe = pr.open(1, info(Generation::Rfc), 0);
    pr.message(pe, &registration(b"live", 7, Policy::RoundRobin), 0);
    // The peer took this PR over during a partition and resends the PE as its own.
    pr.message(
        peer,
        &presence(PEER, false, checksum_of(&[(b"live", 7)])),
        10,
    );
    pr.message(
        peer,
        &table_response(PEER, b"live", &[pe_element(7, PEER)], false),
        20,
    );
    assert_eq!(
        homes(&mut pr, b"live", 30),
        [PR],
        "still ours: its association is alive here"
    );
    // A handle update neither (issue 13: a registrar that hung replays the PE's last
    // re-registration there, from before the PE came here, and then deletes it).
    pr.message(
        peer,
        &update(PEER, UpdateAction::AddPe, b"live", pe_element(7, PEER)),
        40,
    );
    pr.message(
        peer,
        &update(PEER, UpdateAction::DelPe, b"live", pe_element(7, PEER)),
        41,
    );
    assert_eq!(homes(&mut pr, b"live", 45), [PR]);
    // A PE that really moved closes its association here: gone, until the peer's audit
    // brings the peer's copy.
    pr.close(pe, 50);
    assert_eq!(
        resolve_ids(&mut pr, b"live", 60),
        Err(rserpool_protocol::cause::UNKNOWN_POOL_HANDLE)
    );
    pr.message(
        peer,
        &update(PEER, UpdateAction::AddPe, b"live", pe_element(7, PEER)),
        70,
    );
    assert_eq!(homes(&mut pr, b"live", 80), [PEER]);
}

#[test]
fn a_restarted_static_peer_with_a_new_id_leaves_its_old_id_to_be_taken_over() {
    let peer_url = tcp("127.0.0.2:9901");
    let (mut pr, first) = with_static_peer(peer_url);
    let mut out = Output::default();
    let w = &mut pr.workers_mut()[0];
    w.connected(first, vec![peer_url.address], 0, &mut out);
    w.on_message(first, &presence(PEER, false, 0xffff), 0, &mut out);
    w.on_message(
        first,
        &update(PEER, UpdateAction::AddPe, b"old", pe_element(3, PEER)),
        0,
        &mut out,
    );
    out.clear();
    // The peer restarts: its connection closes, ours reconnects at once (the last attempt was
    // longer ago than the reconnect interval), and it has a new ID.
    w.close_association(first, 1_500, &mut out);
    let mut now = 1_500;
    let second = loop {
        now += 100;
        w.on_timer(now, &mut out);
        if let Some(c) = out.connects().first() {
            break c.association;
        }
        out.clear();
    };
    out.clear();
    w.connected(second, vec![peer_url.address], now, &mut out);
    w.on_message(second, &presence(PEER2, false, 0xffff), now, &mut out);
    out.clear();
    assert!(w.enrp_peers().contains(&PEER2));
    // The old ID owned a PE and answers nothing: it is declared dead and, the new instance
    // agreeing, taken over.
    let mut init = false;
    while !init && now < 10_000 {
        now += 100;
        w.on_message(second, &presence(PEER2, false, 0xffff), now, &mut out);
        w.on_timer(now, &mut out);
        init = out.transmits().any(|(_, b)| {
            matches!(
                EnrpMessage::decode(b, Generation::Rfc).unwrap().message.body,
                EnrpBody::InitTakeover { target } if target == PEER
            )
        });
        out.clear();
    }
    assert!(init, "the old identity is taken over");
    w.on_message(
        second,
        &encode(PEER2, EnrpBody::InitTakeoverAck { target: PEER }),
        now,
        &mut out,
    );
    out.clear();
    assert_eq!(homes(&mut pr, b"old", now), [PR]);
}

#[test]
fn an_association_a_peer_never_accepts_is_given_up_and_tried_again() {
    let (mut pr, first) = with_static_peer(tcp("127.0.0.2:9901"));
    let mut out = Output::default();
    let w = &mut pr.workers_mut()[0];
    // Reconnect interval (1 s) plus MAX-TIME-NO-RESPONSE (1 s).
    let mut now = 0;
    let mut aborted_at = None;
    while now < 5_000 {
        now += 50;
        w.on_timer(now, &mut out);
        if aborted_at.is_none() && out.aborts().contains(&first) {
            aborted_at = Some(now);
            assert!(!w.has_association(first));
        }
        if let Some(c) = out.connects().first() {
            assert_ne!(c.association, first);
            assert!(
                aborted_at.is_some(),
                "a new attempt only after the first was given up"
            );
            break;
        }
        out.clear();
    }
    let aborted_at = aborted_at.expect("given up");
    assert!((2_000..2_400).contains(&aborted_at), "{aborted_at}");
}

#[test]
fn pe14_the_winner_sends_each_taken_over_sctp_pe_a_keep_alive_with_the_h_bit() {
    let mut pr = scope_pr(2);
    let dying = join(&mut pr, PEER, 0);
    const ASAP_IPS: &[std::net::IpAddr] = &[PE_IP];
    let mut sctp_pe = pe_element(21, PEER);
    sctp_pe.asap_transport = Some(TransportParam {
        kind: TransportKind::Sctp,
        port: 4711,
        transport_use: 0,
        service_code: 0,
        addresses: Seq::from_items(ASAP_IPS),
    });
    pr.message(dying, &update(PEER, UpdateAction::AddPe, b"s", sctp_pe), 0);
    // A TCP PE (no ASAP transport recorded) cannot be reached: no keep-alive for it.
    pr.message(
        dying,
        &update(PEER, UpdateAction::AddPe, b"s", pe_element(22, PEER)),
        0,
    );
    let mut keep_alives = Vec::new();
    let mut now = 0;
    while keep_alives.is_empty() && now < 6_000 {
        now += 100;
        for sent in pr.on_timer(now) {
            if let Target::SctpAddress(to, generation) = sent.target {
                let message = rserpool_protocol::AsapMessage::decode(&sent.bytes, generation)
                    .unwrap()
                    .message;
                keep_alives.push((to, format!("{message:?}")));
            }
        }
    }
    assert_eq!(keep_alives.len(), 1, "{keep_alives:?}");
    let (to, message) = &keep_alives[0];
    assert_eq!(*to, std::net::SocketAddr::new(PE_IP, 4711));
    assert!(message.contains("EndpointKeepAlive"), "{message}");
    assert!(message.contains("home: true"), "{message}");
    assert!(message.contains("PeId(21)"), "{message}");
}

#[test]
fn pe20_takeover_suggestion_goes_to_the_farthest_peer_and_is_honoured() {
    let mut config = scope_config(Vec::new());
    config.enrp.takeover_suggestion = true;
    let mut pr = InMemoryPr::new(1, config, rserpool_handlespace::Limits::default(), 7);
    pr.start(0);
    let near = join(&mut pr, PrId(PR.0 ^ 1), 0);
    let far = join(&mut pr, PrId(!PR.0 & 0xffff_ffff), 0);
    let pe = pr.open(0, info(Generation::Rfc), 0);
    let sent = pr.message(pe, &registration(b"t", 1, Policy::RoundRobin), 0);
    let flags = |a| {
        to(&sent, a, |m| match m.body {
            EnrpBody::HandleUpdate {
                takeover_suggested, ..
            } => takeover_suggested,
            _ => panic!("{m:?}"),
        })
    };
    assert_eq!(flags(near), [false]);
    assert_eq!(flags(far), [false, true], "the extra copy with T=1");
    // Received with T=1: this PR claims the PE with a keep-alive with the H bit.
    const ASAP_IPS: &[std::net::IpAddr] = &[PE_IP];
    let mut suggested = pe_element(9, PrId(PR.0 ^ 1));
    suggested.asap_transport = Some(TransportParam {
        kind: TransportKind::Sctp,
        port: 4712,
        transport_use: 0,
        service_code: 0,
        addresses: Seq::from_items(ASAP_IPS),
    });
    let sent = pr.message(
        near,
        &encode(
            PrId(PR.0 ^ 1),
            EnrpBody::HandleUpdate {
                takeover_suggested: true,
                action: UpdateAction::AddPe,
                pool_handle: PoolHandle(b"t"),
                pool_element: suggested,
            },
        ),
        10,
    );
    assert!(
        sent.iter().any(|s| s.target
            == Target::SctpAddress(std::net::SocketAddr::new(PE_IP, 4712), Generation::Rfc)),
        "{sent:?}"
    );
}

#[test]
fn an_ng_peer_gets_64_bit_pes_and_an_rfc_peer_is_not_told_about_them() {
    let mut pr = scope_pr(1);
    let rfc_peer = join(&mut pr, PEER, 0);
    let ng_peer = pr.open(
        0,
        AssociationInfo {
            generation: Generation::Ng,
            ..enrp_info()
        },
        0,
    );
    let mut buf = vec![0; 1024];
    let n = EnrpMessage {
        sender: PrId(0x1_0000_0001),
        receiver: PR,
        body: EnrpBody::Presence {
            reply_required: false,
            checksum: Some(0),
            server_information: None,
        },
    }
    .encode(Generation::Ng, &mut buf)
    .unwrap();
    pr.message(ng_peer, &buf[..n], 0);
    let pe = pr.open(0, info(Generation::Ng), 0);
    let wide = super::registration_with(
        b"ng",
        0x7_0000_0001,
        Policy::RoundRobin,
        TransportKind::Tcp,
        0,
        &[PE_IP],
        30_000,
        Generation::Ng,
    );
    let sent = pr.message(pe, &wide, 0);
    assert!(types(&sent, rfc_peer).is_empty(), "{sent:?}");
    let to_ng: Vec<u64> = sent
        .iter()
        .filter(|s| s.target == Target::Association(ng_peer))
        .map(|s| {
            match EnrpMessage::decode(&s.bytes, Generation::Ng)
                .unwrap()
                .message
                .body
            {
                EnrpBody::HandleUpdate { pool_element, .. } => pool_element.id.0,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(to_ng, [0x7_0000_0001]);
    let mut text = String::new();
    let process = crate::metrics::ProcessInfo {
        pr_id: PR.0,
        version: "test",
        started_unix_secs: 0,
        driver: "none",
    };
    crate::metrics::render(pr.metrics(), &process, &mut text);
    assert!(
        text.lines().any(|l| l == "rserpool_enrp_withheld_total 1"),
        "{text}"
    );
}

#[test]
fn pe06_every_peer_gets_a_presence_with_our_checksum_every_heartbeat() {
    let mut pr = scope_pr(2);
    let a = join(&mut pr, PEER, 0);
    let b = join(&mut pr, PEER2, 0);
    let pe = pr.open(1, info(Generation::Rfc), 0);
    pr.message(pe, &registration(b"own", 5, Policy::RoundRobin), 0);
    let ours = checksum_of(&[(b"own", 5)]);
    let mut counts = [0; 2];
    for now in (100..=10_000).step_by(100) {
        // Both peers stay alive.
        pr.message(a, &presence(PEER, false, 0xffff), now);
        pr.message(b, &presence(PEER2, false, 0xffff), now);
        let sent = pr.on_timer(now);
        for (i, peer) in [a, b].into_iter().enumerate() {
            for checksum in to(&sent, peer, |m| match m.body {
                EnrpBody::Presence {
                    reply_required: false,
                    checksum,
                    server_information,
                } => {
                    assert_eq!(
                        server_information.map(|s| s.server_id),
                        Some(PR),
                        "with server information"
                    );
                    checksum
                }
                _ => None,
            })
            .into_iter()
            .flatten()
            {
                assert_eq!(checksum, u64::from(ours));
                counts[i] += 1;
            }
        }
    }
    // 10 s at 1 s ± 12.5 %: 9 to 11 heartbeats.
    for c in counts {
        assert!((9..=11).contains(&c), "{counts:?}");
    }
}

#[test]
fn a_takeover_acknowledged_to_a_peer_that_never_finishes_it_is_run_by_us() {
    let mut pr = scope_pr(1);
    let target = join(&mut pr, PEER, 0);
    let rival = join(&mut pr, PEER2, 0);
    pr.message(
        target,
        &update(PEER, UpdateAction::AddPe, b"x", pe_element(5, PEER)),
        0,
    );
    let sent = pr.message(
        rival,
        &encode(PEER2, EnrpBody::InitTakeover { target: PEER }),
        100,
    );
    assert!(types(&sent, rival).contains(&et::INIT_TAKEOVER_ACK));
    // The rival stays alive but never sends TAKEOVER_SERVER (it died in the real case): after
    // the takeover expiry plus MAX-TIME-NO-RESPONSE (2 s + 1 s), this PR takes over itself.
    let mut started = None;
    for now in (200..=6_000).step_by(100) {
        pr.message(rival, &presence(PEER2, false, 0xffff), now);
        let sent = pr.on_timer(now);
        if to(
            &sent,
            rival,
            |m| matches!(m.body, EnrpBody::InitTakeover { target } if target == PEER),
        )
        .contains(&true)
        {
            started = Some(now);
            break;
        }
    }
    let started = started.expect("our own takeover");
    assert!((3_100..3_600).contains(&started), "{started}");
}

#[test]
fn a_presence_datagram_introduces_a_peer_that_is_then_connected_to() {
    let mut pr = scope_pr(1);
    const IP: &[std::net::IpAddr] = &[std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9))];
    let info = ServerInformation {
        server_id: PEER,
        transport: TransportParam {
            kind: TransportKind::Tcp,
            port: 9909,
            transport_use: 0,
            service_code: 0,
            addresses: Seq::from_items(IP),
        },
    };
    let datagram = encode(
        PEER,
        EnrpBody::Presence {
            reply_required: false,
            checksum: Some(0xffff),
            server_information: Some(info),
        },
    );
    let mut out = Output::default();
    let w = &mut pr.workers_mut()[0];
    w.on_enrp_datagram(Generation::Rfc, &datagram, 10, &mut out);
    let connects: Vec<TransportUrl> = out.connects().iter().map(|c| c.url).collect();
    assert_eq!(connects, [tcp("127.0.0.9:9909")]);
    out.clear();
    // The same presence again: already connecting, no second association.
    w.on_enrp_datagram(Generation::Rfc, &datagram, 20, &mut out);
    assert!(out.connects().is_empty());
    // Our own presence (a multicast loop) and one without server information are ignored.
    let own = encode(
        PR,
        EnrpBody::Presence {
            reply_required: false,
            checksum: Some(0xffff),
            server_information: Some(info),
        },
    );
    w.on_enrp_datagram(Generation::Rfc, &own, 30, &mut out);
    w.on_enrp_datagram(
        Generation::Rfc,
        &presence(PEER2, false, 0xffff),
        30,
        &mut out,
    );
    assert!(out.connects().is_empty());
    assert!(out.transmits().next().is_none());
}

/// Issue 13: two PRs that both connect hold two associations, and a restarted PR asks for the
/// handle table on whichever one its mentor's presence came over. A page built for a request
/// went out only over the peer's first association, so a request on the other was never
/// answered: the restarted PR waited for its mentor until the discovery timeout, served an
/// empty handlespace, and its audit repair (which waits for that transfer) never ran.
#[test]
fn a_handle_table_request_is_answered_on_the_association_it_came_over() {
    for workers in 1..=4 {
        let mut pr = scope_pr(workers);
        let pe = pr.open(0, info(Generation::Rfc), 0);
        for id in 1..=40u64 {
            let handle = format!("pool-{}", id % 5);
            pr.message(
                pe,
                &registration(handle.as_bytes(), id, Policy::RoundRobin),
                0,
            );
        }
        let first = join(&mut pr, PEER, 0);
        let second = join(&mut pr, PEER, 0);
        let mut seen = std::collections::BTreeSet::new();
        for own_children_only in [false, true] {
            seen.clear();
            let mut pages = 0;
            loop {
                let sent = pr.message(
                    second,
                    &encode(PEER, EnrpBody::HandleTableRequest { own_children_only }),
                    1,
                );
                assert!(
                    types(&sent, first).is_empty(),
                    "{workers} workers: nothing for the second association goes over the first"
                );
                let page = to(&sent, second, |m| match m.body {
                    EnrpBody::HandleTableResponse {
                        reject,
                        more_to_send,
                        entries,
                    } => {
                        assert!(!reject);
                        let ids: Vec<u64> = entries
                            .iter()
                            .flat_map(|e| e.pool_elements.iter().map(|p| p.id.0))
                            .collect();
                        Some((more_to_send, ids))
                    }
                    _ => None,
                });
                let (more, ids) = page.into_iter().flatten().next().unwrap_or_else(|| {
                    panic!("{workers} workers: a response on the association asked over")
                });
                seen.extend(ids);
                pages += 1;
                if !more {
                    break;
                }
                assert!(pages < 10);
            }
            assert_eq!(
                seen.len(),
                40,
                "{workers} workers, W={own_children_only}: every PE"
            );
        }
        // The first association still carries a transfer of its own.
        let sent = pr.message(
            first,
            &encode(
                PEER,
                EnrpBody::HandleTableRequest {
                    own_children_only: true,
                },
            ),
            2,
        );
        assert!(
            to(&sent, first, |m| m.body.message_type()).contains(&et::HANDLE_TABLE_RESPONSE),
            "{workers} workers: {sent:?}"
        );
    }
}

/// Issue 13: registrars started together (or one restarted while the others still start)
/// rejected each other's start-up downloads until their discovery timeouts ran out. Of two
/// starting PRs, the one with the smaller ID serves and becomes the other's mentor; a greater
/// ID's request is still rejected (PE-05).
#[test]
fn of_two_starting_prs_the_smaller_id_becomes_the_mentor() {
    let (mut pr, a) = with_static_peer(tcp("127.0.0.2:9901"));
    pr.connected(a, vec!["127.0.0.2:9901".parse().unwrap()], 10);
    assert!(!pr.workers()[0].enrp_live(), "starting");
    let smaller = PrId(0x1000);
    let b = pr.open(0, enrp_info(), 20);
    pr.message(b, &presence(smaller, false, 0xffff), 20);
    let sent = pr.message(
        b,
        &encode(
            smaller,
            EnrpBody::HandleTableRequest {
                own_children_only: false,
            },
        ),
        30,
    );
    assert!(
        to(&sent, b, |m| matches!(
            m.body,
            EnrpBody::HandleTableResponse { reject: true, .. }
        ))
        .contains(&true),
        "a smaller ID's download is rejected while starting: {sent:?}"
    );
    assert!(!pr.workers()[0].enrp_live());
    // PEER's ID is greater than ours.
    assert!(PEER > PR);
    pr.message(a, &presence(PEER, false, 0xffff), 40);
    let sent = pr.message(
        a,
        &encode(
            PEER,
            EnrpBody::HandleTableRequest {
                own_children_only: false,
            },
        ),
        50,
    );
    assert!(
        to(&sent, a, |m| matches!(
            m.body,
            EnrpBody::HandleTableResponse { reject: false, .. }
        ))
        .contains(&true),
        "a greater ID's download is served: {sent:?}"
    );
    assert!(pr.workers()[0].enrp_live(), "serving from then on");
}

/// A handle table transfer whose next page never comes is given up after the transfer
/// patience, so that the next audit mismatch asks again (it used to wait for ever).
#[test]
fn a_transfer_whose_page_never_comes_is_given_up() {
    let mut pr = scope_pr(2);
    let peer = join(&mut pr, PEER, 0);
    pr.message(
        peer,
        &update(PEER, UpdateAction::AddPe, b"p", pe_element(1, PEER)),
        0,
    );
    let asks = |sent: &[Sent]| {
        to(sent, peer, |m| {
            matches!(
                m.body,
                EnrpBody::HandleTableRequest {
                    own_children_only: true
                }
            )
        })
        .contains(&true)
    };
    // The peer's checksum says it owns nothing: a repair request, never answered.
    let sent = pr.message(peer, &presence(PEER, false, 0xffff), 100);
    assert!(asks(&sent), "{sent:?}");
    let sent = pr.message(peer, &presence(PEER, false, 0xffff), 1_000);
    assert!(!asks(&sent), "one transfer at a time");
    let patience = scope_config(Vec::new()).enrp.transfer_patience();
    let mut now = 1_000;
    while now < 100 + patience + 600 {
        now += 100;
        pr.message(peer, &presence(PEER, false, checksum_of(&[(b"p", 1)])), now);
        pr.on_timer(now);
    }
    let sent = pr.message(peer, &presence(PEER, false, 0xffff), now);
    assert!(asks(&sent), "asked again after {patience} ms: {sent:?}");
}
