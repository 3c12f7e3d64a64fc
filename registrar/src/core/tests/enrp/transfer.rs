//! Handle table transfer (RFC 5353 §3.2.3, §3.6.3; checklist PE-04, PE-17): pages until
//! everything is sent, strangers rejected, pages on the association the request came over, and a
//! transfer whose page never comes.

use rserpool_protocol::enrp::message_type as et;
use rserpool_protocol::{EnrpBody, Generation, Policy, UpdateAction};

use super::super::{info, registration};
use super::{
    PEER, PEER2, checksum_of, encode, enrp_info, join, pe_element, presence, resolve_ids,
    scope_config, scope_pr, table_response, to, types, update,
};
use crate::core::in_memory::Sent;

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

/// Two PRs that both connect hold two associations. A handle table page arriving on the one the
/// request did not go over belongs to another exchange: it is not applied and no request follows
/// it there. (Simulation seed 2996: two request chains, one per association, restarted the
/// peer's one transfer per peer in turn for ever, and a stale page re-added a deregistered PE.)
#[test]
fn a_table_page_on_another_association_than_the_requests_is_ignored() {
    for workers in [1, 3] {
        let mut pr = scope_pr(workers);
        let first = join(&mut pr, PEER, 0);
        let second = join(&mut pr, PEER, 0);
        let is_request = |sent: &[Sent], a| {
            to(sent, a, |m| {
                matches!(m.body, EnrpBody::HandleTableRequest { .. })
            })
            .contains(&true)
        };
        // An audit mismatch (we hold a PE of the peer's, its checksum says it owns none): a
        // repair request (W=1) over one of the two.
        pr.message(
            first,
            &update(PEER, UpdateAction::AddPe, b"p", pe_element(1, PEER)),
            0,
        );
        let sent = pr.message(first, &presence(PEER, false, 0xffff), 100);
        let asked_on = [first, second]
            .into_iter()
            .find(|&a| is_request(&sent, a))
            .unwrap_or_else(|| panic!("{workers} workers: a repair request: {sent:?}"));
        let other = if asked_on == first { second } else { first };
        let stale = table_response(PEER, b"stale", &[pe_element(7, PEER)], true);
        let sent = pr.message(other, &stale, 110);
        assert!(
            !is_request(&sent, other) && !is_request(&sent, asked_on),
            "{workers} workers: no request follows a page of another exchange: {sent:?}"
        );
        assert_eq!(
            resolve_ids(&mut pr, b"stale", 111),
            Err(rserpool_protocol::cause::UNKNOWN_POOL_HANDLE),
            "{workers} workers: its PEs are not applied"
        );
        // The transfer itself goes on over its own association.
        let page = table_response(PEER, b"p", &[pe_element(8, PEER)], true);
        let sent = pr.message(asked_on, &page, 120);
        assert!(
            is_request(&sent, asked_on),
            "{workers} workers: the next page is asked for: {sent:?}"
        );
        let last = table_response(PEER, b"p", &[pe_element(9, PEER)], false);
        pr.message(asked_on, &last, 130);
        assert_eq!(resolve_ids(&mut pr, b"p", 131), Ok(vec![8, 9]));
    }
}
