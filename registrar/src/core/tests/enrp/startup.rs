//! Start-up (RFC 5353 §3.2; checklist PE-02, PE-03, PE-05): serving at once without peers,
//! loading the handlespace from a mentor before serving peers, serving alone when no mentor
//! answers, and two PRs starting together.

use rserpool_handlespace::PrId;
use rserpool_protocol::enrp::message_type as et;
use rserpool_protocol::{EnrpBody, EnrpMessage, Generation, Policy};

use super::super::{info, registration};
use super::{
    PEER, PEER2, PR, encode, enrp_info, pe_element, presence, resolve_ids, scope_config, scope_pr,
    table_response, tcp, to, with_static_peer,
};
use crate::core::Output;
use crate::core::in_memory::InMemoryPr;

#[test]
fn pe02_without_peers_the_pr_serves_at_once_and_sends_no_enrp() {
    let mut pr = scope_pr(1);
    assert!(pr.workers()[0].enrp_live());
    let pe = pr.open(0, info(Generation::Rfc), 0);
    let sent = pr.message(pe, &registration(b"echo", 1, Policy::RoundRobin), 0);
    assert_eq!(sent.len(), 1, "only the registration response: {sent:?}");
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
