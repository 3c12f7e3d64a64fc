//! Handle updates (RFC 5353 §3.3; checklist PE-10, PE-11): registrations and removals replicated
//! from every shard, peers' updates applied only from the PE's home PR, PEs learnt from a peer
//! expiring, a peer's copy never taking a PE from a live association, and PEs with 64-bit IDs
//! withheld from RFC peers.

use rserpool_handlespace::{PeId, PrId};
use rserpool_protocol::{
    EnrpBody, EnrpMessage, Generation, Policy, PoolHandle, TransportKind, UpdateAction,
};

use super::super::{PE_IP, info, registration};
use super::{
    PEER, PEER2, PR, checksum_of, enrp_info, homes, join, pe_element, presence, resolve_ids,
    scope_pr, table_response, to, types, update,
};
use crate::core::{AssociationInfo, Target};
use std::sync::atomic::Ordering::Relaxed;

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
            &super::super::encode(
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
    let wide = super::super::registration_with(
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
    let withheld: u64 = pr
        .metrics()
        .iter()
        .map(|m| m.counters.enrp_withheld.load(Relaxed))
        .sum();
    assert_eq!(withheld, 1);
}
