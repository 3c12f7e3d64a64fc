//! The scope's peers and their presences (RFC 5353 §3.2.2.2, §3.4; checklist PE-06..PE-08): an
//! unknown peer is admitted, answered and asked for its list; list responses; a restarted static
//! peer; an association a peer never accepts; heartbeats; peers announced by presence datagrams.

use rserpool_protocol::enrp::message_type as et;
use rserpool_protocol::{
    EnrpBody, EnrpMessage, Generation, Policy, Seq, ServerInformation, TransportKind,
    TransportParam, UpdateAction,
};

use super::super::{info, next_time, registration};
use super::{
    PEER, PEER2, PR, checksum_of, encode, enrp_info, homes, join, pe_element, presence, scope_pr,
    tcp, to, types, update, with_static_peer,
};
use crate::core::in_memory::InMemoryPr;
use crate::core::{AssociationInfo, Output};
use rserpool_protocol::url::TransportUrl;

/// Where the test's presence datagrams come from.
const FROM: std::net::SocketAddr = std::net::SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9)),
    9901,
);

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
        now = w
            .next_timeout()
            .expect("the ENRP tick is armed")
            .max(now + 1);
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
        now = next_time(w.next_timeout(), now, 5_000);
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
    w.on_enrp_datagram(Generation::Rfc, FROM, &datagram, 10, &mut out);
    let connects: Vec<TransportUrl> = out.connects().iter().map(|c| c.url).collect();
    assert_eq!(connects, [tcp("127.0.0.9:9909")]);
    out.clear();
    // The same presence again: already connecting, no second association.
    w.on_enrp_datagram(Generation::Rfc, FROM, &datagram, 20, &mut out);
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
    w.on_enrp_datagram(Generation::Rfc, FROM, &own, 30, &mut out);
    w.on_enrp_datagram(
        Generation::Rfc,
        FROM,
        &presence(PEER2, false, 0xffff),
        30,
        &mut out,
    );
    assert!(out.connects().is_empty());
    assert!(out.transmits().next().is_none());
}

/// A one-worker scope PR admitting only PEER, from 127.0.0.2 (where [`enrp_info`] associations
/// come from).
fn allowlisted_pr() -> InMemoryPr {
    let mut config = super::scope_config(Vec::new());
    config.enrp.allowed_peers = vec!["0x22220001@127.0.0.2".parse().unwrap()];
    let mut pr = InMemoryPr::new(1, config, rserpool_handlespace::Limits::default(), 7);
    pr.start(0);
    pr
}

fn enrp_peer_refusals(pr: &InMemoryPr) -> u64 {
    pr.metrics()
        .iter()
        .map(|m| {
            m.counters.limit_refusals[crate::core::counters::Limit::EnrpPeer as usize]
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum()
}

#[test]
fn a_pr_not_on_the_allowlist_is_refused_with_cause_0xa_and_never_enters_the_handlespace() {
    // RFC 5355 §2.5: a malicious ENRP server joining the group of legitimate ones.
    let mut pr = allowlisted_pr();
    let a = join(&mut pr, PEER, 0);
    assert_eq!(
        pr.workers()[0].enrp_peers(),
        [PEER],
        "the listed peer joins"
    );
    pr.take_aborts();

    let intruder = pr.open(0, enrp_info(), 10);
    let sent = pr.message(intruder, &presence(PEER2, true, 0xffff), 10);
    let errors = to(&sent, intruder, |m| match m.body {
        EnrpBody::Error(causes) => causes.iter().map(|c| c.code).collect::<Vec<_>>(),
        _ => vec![0xffff],
    });
    assert_eq!(errors, [[rserpool_protocol::cause::REJECTED_SECURITY]]);
    assert_eq!(pr.take_aborts(), [intruder]);
    // Whatever it sends next finds no association: its PE never enters the handlespace.
    pr.message(
        intruder,
        &update(PEER2, UpdateAction::AddPe, b"stolen", pe_element(66, PEER2)),
        11,
    );
    assert_eq!(
        super::resolve_ids(&mut pr, b"stolen", 12),
        Err(rserpool_protocol::cause::UNKNOWN_POOL_HANDLE)
    );
    assert_eq!(pr.workers()[0].enrp_peers(), [PEER]);

    // The listed ID from outside its subnet is refused too.
    let elsewhere = pr.open(
        0,
        AssociationInfo {
            peer_addresses: vec!["127.0.0.3:9901".parse().unwrap()],
            ..enrp_info()
        },
        20,
    );
    pr.message(elsewhere, &presence(PEER, false, 0xffff), 20);
    assert_eq!(pr.take_aborts(), [elsewhere]);

    // A presence datagram from an unlisted PR introduces nothing.
    let ips: [std::net::IpAddr; 1] = ["127.0.0.2".parse().unwrap()];
    let info = ServerInformation {
        server_id: PEER2,
        transport: TransportParam {
            kind: TransportKind::Tcp,
            port: 9909,
            transport_use: 0,
            service_code: 0,
            addresses: Seq::from_items(&ips),
        },
    };
    let datagram = encode(
        PEER2,
        EnrpBody::Presence {
            reply_required: false,
            checksum: Some(0xffff),
            server_information: Some(info),
        },
    );
    let mut out = Output::default();
    pr.workers_mut()[0].on_enrp_datagram(
        Generation::Rfc,
        "127.0.0.2:9901".parse().unwrap(),
        &datagram,
        30,
        &mut out,
    );
    assert!(out.connects().is_empty());
    assert_eq!(enrp_peer_refusals(&pr), 3);
    // The listed peer still takes part: its update is applied.
    pr.message(
        a,
        &update(PEER, UpdateAction::AddPe, b"theirs", pe_element(7, PEER)),
        40,
    );
    assert_eq!(super::resolve_ids(&mut pr, b"theirs", 41), Ok(vec![7]));
}
