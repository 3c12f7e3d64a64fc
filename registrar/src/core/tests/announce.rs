//! Periodic datagrams: ASAP_SERVER_ANNOUNCE (RFC 5352 §3.6; checklist PA-19) and RSPLIB's
//! component status reports.

use std::net::SocketAddr;

use rserpool_handlespace::Limits;
use rserpool_protocol::{AsapMessage, Generation, Policy, TransportKind};

use super::{PR, config, info, registration, run};
use crate::core::Target;
use crate::core::in_memory::{InMemoryPr, Sent};
use rserpool_protocol::url::TransportUrl;

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
