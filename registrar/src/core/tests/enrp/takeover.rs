//! Takeover of a dead PR (RFC 5353 §3.4.3, §3.5; checklist PE-09, PE-14..PE-16, PE-20): a
//! silent peer probed, declared dead and taken over; ENRP_TAKEOVER_SERVER from a peer; concurrent
//! takeovers; a takeover aimed at this PR; keep-alives with the H bit; the takeover suggestion; a
//! takeover acknowledged to a peer that never finishes it.

use rserpool_handlespace::{PeId, PrId};
use rserpool_protocol::enrp::message_type as et;
use rserpool_protocol::{
    EnrpBody, Generation, Policy, PoolHandle, Seq, TransportKind, TransportParam, UpdateAction,
};

use super::super::{PE_IP, info, next_time, registration};
use super::{
    PEER, PEER2, PR, checksum_of, encode, enrp_info, homes, join, pe_element, presence,
    resolve_ids, scope_config, scope_pr, table_response, to, types, update,
};
use crate::core::Target;
use crate::core::in_memory::InMemoryPr;

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
    let sent = pr.message(pu, &super::super::resolution(b"even", Some(10)), now);
    match super::super::only(&sent) {
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
        now = next_time(pr.next_timeout(), now, 6_000);
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
