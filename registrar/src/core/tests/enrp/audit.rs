//! The handlespace audit (RFC 5353 §3.6; checklist PE-12, PE-13): a checksum mismatch
//! resynchronises only that peer's PEs.

use rserpool_protocol::enrp::message_type as et;
use rserpool_protocol::{EnrpBody, UpdateAction};

use super::{
    PEER, PEER2, checksum_of, join, pe_element, presence, resolve_ids, scope_pr, table_response,
    to, types, update,
};

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
