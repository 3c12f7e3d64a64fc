//! The session cores against RFC 5352 §3.8-3.9 and checklist EP-09, EP-10, PU-07: the business
//! card at session start, cookies kept latest-only, the cookie echo first after a failover, the
//! card's order used for failover, the stream framing split across reads, hostile records.

use std::net::{IpAddr, Ipv4Addr};

use rserpool_protocol::{
    AsapMessage, Generation, PeId, Policy, PrId, TRANSPORT_USE_DATA_PLUS_CONTROL, TransportKind,
    asap::message_type,
};

use super::framing::{FramingError, HEADER_LEN, RecordDecoder, encode_record};
use super::*;
use crate::{ConnId, PeInfo, PeTransport, Rng};

const POOL: &[u8] = b"counter";

fn pe(id: u64, port: u16) -> PeInfo {
    PeInfo {
        id: PeId(id),
        home_pr: PrId(1),
        registration_life: 30_000,
        transport: PeTransport::Transport {
            kind: TransportKind::Tcp,
            port,
            addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            transport_use: TRANSPORT_USE_DATA_PLUS_CONTROL,
        },
        policy: Policy::RoundRobin,
    }
}

fn asap(message: &AsapMessage<'_>) -> Vec<u8> {
    crate::encode(message, Generation::Rfc).unwrap()
}

fn decode(t: &Transmit) -> AsapMessage<'_> {
    assert_eq!(t.ppid, PPID_CONTROL);
    AsapMessage::decode(&t.payload, Generation::Rfc)
        .unwrap()
        .message
}

fn record(ppid: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(ppid, payload, &mut out).unwrap();
    out
}

fn pe_session(card: &[PeInfo]) -> PeSession {
    PeSession::new(PeSessionConfig::new(POOL), card).unwrap()
}

fn transmits(s: &mut PeSession) -> Vec<Transmit> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn pe_events(s: &mut PeSession) -> Vec<PeSessionEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// A PU session connected to `first`, its actions and events consumed.
fn pu_connected(first: PeInfo) -> (PuSession, ConnId) {
    let mut s = PuSession::new(PuSessionConfig::new(POOL));
    let conn = s.start(first);
    assert!(matches!(s.poll_action(), Some(SessionAction::Connect { conn: c, .. }) if c == conn));
    s.on_connected(conn);
    assert_eq!(s.poll_action(), None, "nothing to echo on the first PE");
    assert!(matches!(
        s.poll_event(),
        Some(PuSessionEvent::Connected {
            failover: false,
            ..
        })
    ));
    (s, conn)
}

fn actions(s: &mut PuSession) -> Vec<SessionAction> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn pu_events(s: &mut PuSession) -> Vec<PuSessionEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn cookie_record(cookie: &[u8]) -> Vec<u8> {
    asap(&AsapMessage::Cookie(cookie))
}

fn card_record(pool: &[u8], pes: &[PeInfo]) -> Vec<u8> {
    encode_business_card(pool, None, pes, Generation::Rfc)
        .unwrap()
        .payload
}

// EP-10: RFC 5352 §3.9, the business card is the session's first message.
#[test]
fn the_pe_sends_its_business_card_first() {
    let mut s = pe_session(&[pe(2, 7002), pe(3, 7003)]);
    s.send_data(1, b"hello").unwrap();
    let out = transmits(&mut s);
    assert_eq!(out.len(), 2);
    let AsapMessage::BusinessCard {
        pool_handle,
        pool_elements,
        ..
    } = decode(&out[0])
    else {
        panic!("not a business card: {:?}", out[0]);
    };
    assert_eq!(pool_handle.as_bytes(), POOL);
    let ids: Vec<PeId> = pool_elements.iter().map(|p| p.id).collect();
    assert_eq!(ids, [PeId(2), PeId(3)], "in the PE's preferred order");
    assert_eq!(
        PeInfo::from_view(&pool_elements.iter().next().unwrap()),
        pe(2, 7002)
    );
    assert_eq!(
        out[1],
        Transmit {
            ppid: 1,
            payload: b"hello".to_vec()
        }
    );
    // Without alternatives there is no card (it needs at least one PE).
    assert!(transmits(&mut pe_session(&[])).is_empty());
    assert_eq!(
        pe_session(&[]).send_business_card(&[]),
        Err(SessionError::EmptyBusinessCard)
    );
}

// EP-09: RFC 5352 §3.8, cookies on the control channel (PPID 11), bounded.
#[test]
fn the_pe_sends_cookies_on_the_control_channel() {
    let mut s = pe_session(&[]);
    s.send_cookie(b"state-1").unwrap();
    let out = transmits(&mut s);
    assert_eq!(decode(&out[0]), AsapMessage::Cookie(b"state-1"));
    let big = vec![0u8; MAX_COOKIE_LEN];
    s.send_cookie(&big).unwrap();
    assert_eq!(transmits(&mut s)[0].payload.len(), 65_532);
    assert_eq!(
        s.send_cookie(&vec![0; MAX_COOKIE_LEN + 1]),
        Err(SessionError::CookieTooLong {
            len: MAX_COOKIE_LEN + 1,
            max: MAX_COOKIE_LEN
        })
    );
    let mut small = PeSession::new(
        PeSessionConfig {
            max_cookie_len: 16,
            ..PeSessionConfig::new(POOL)
        },
        &[],
    )
    .unwrap();
    assert!(matches!(
        small.send_cookie(&[0; 17]),
        Err(SessionError::CookieTooLong { max: 16, .. })
    ));
    assert_eq!(s.send_data(11, b"x"), Err(SessionError::ReservedPpid));
}

// RFC 5352 §3.8: the echo opens the session with the new PE; a later one is dropped.
#[test]
fn the_pe_hands_the_first_cookie_echo_to_the_application() {
    let mut s = pe_session(&[]);
    s.on_record(PPID_CONTROL, &asap(&AsapMessage::CookieEcho(b"total=5")))
        .unwrap();
    s.on_record(7, b"add 1").unwrap();
    assert_eq!(
        s.on_record(PPID_CONTROL, &asap(&AsapMessage::CookieEcho(b"again"))),
        Err(SessionError::LateCookieEcho)
    );
    assert_eq!(
        pe_events(&mut s),
        [
            PeSessionEvent::CookieEcho(b"total=5".to_vec()),
            PeSessionEvent::Data {
                ppid: 7,
                payload: b"add 1".to_vec()
            }
        ]
    );
    // Data first: no echo accepted after it.
    let mut s = pe_session(&[]);
    s.on_record(7, b"x").unwrap();
    assert_eq!(
        s.on_record(PPID_CONTROL, &asap(&AsapMessage::CookieEcho(b"c"))),
        Err(SessionError::LateCookieEcho)
    );
    // A cookie goes from PE to PU only.
    assert_eq!(
        pe_session(&[]).on_record(PPID_CONTROL, &cookie_record(b"c")),
        Err(SessionError::UnexpectedControl {
            message_type: message_type::COOKIE,
            receiver: "PE"
        })
    );
}

// RFC 5352 §3.8: the PU stores only the latest cookie.
#[test]
fn the_pu_keeps_only_the_latest_cookie() {
    let (mut s, conn) = pu_connected(pe(1, 7001));
    assert_eq!(s.cookie(), None);
    for c in [&b"one"[..], b"two", b"three"] {
        s.on_record(conn, PPID_CONTROL, &cookie_record(c)).unwrap();
    }
    assert_eq!(s.cookie(), Some(&b"three"[..]));
    // A cookie on a connection no longer in use is ignored.
    s.on_record(ConnId(99), PPID_CONTROL, &cookie_record(b"stale"))
        .unwrap();
    assert_eq!(s.cookie(), Some(&b"three"[..]));
    // An empty cookie is a cookie.
    s.on_record(conn, PPID_CONTROL, &cookie_record(b""))
        .unwrap();
    assert_eq!(s.cookie(), Some(&b""[..]));
}

// PU-07: RFC 5352 §3.8, after a failover the latest cookie goes first in ASAP_COOKIE_ECHO, then
// the application's data.
#[test]
fn after_a_failover_the_cookie_echo_goes_first() {
    let (mut s, conn) = pu_connected(pe(1, 7001));
    s.on_record(conn, PPID_CONTROL, &cookie_record(b"total=3"))
        .unwrap();
    s.on_record(conn, PPID_CONTROL, &cookie_record(b"total=4"))
        .unwrap();
    s.on_closed(conn, "connection reset".into());
    assert_eq!(actions(&mut s), [SessionAction::Close { conn }]);
    let failed = pu_events(&mut s);
    assert!(
        matches!(&failed[..], [PuSessionEvent::PeFailed { pe, error }] if pe.id == PeId(1) && error == "connection reset"),
        "{failed:?}"
    );
    // Data sent while the failover is under way waits for the new connection.
    s.send_data(5, b"add 1").unwrap();
    let next = s.fail_over(Some(pe(2, 7002))).unwrap();
    assert!(
        matches!(&actions(&mut s)[..], [SessionAction::Connect { conn, pe }] if *conn == next && pe.id == PeId(2))
    );
    s.send_data(5, b"add 2").unwrap();
    s.on_connected(next);
    let out: Vec<Transmit> = actions(&mut s)
        .into_iter()
        .map(|a| match a {
            SessionAction::Transmit { conn, transmit } if conn == next => transmit,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(out.len(), 3);
    assert_eq!(decode(&out[0]), AsapMessage::CookieEcho(b"total=4"));
    assert_eq!(out[1].payload, b"add 1");
    assert_eq!(out[2].payload, b"add 2");
    assert!(matches!(
        &pu_events(&mut s)[..],
        [PuSessionEvent::Connected { pe, failover: true }] if pe.id == PeId(2)
    ));
    // The new PE has not sent a cookie yet: the next failover echoes the same one.
    s.on_closed(next, "gone".into());
    let third = s.fail_over(Some(pe(3, 7003))).unwrap();
    actions(&mut s);
    s.on_connected(third);
    let first = actions(&mut s).remove(0);
    assert!(
        matches!(&first, SessionAction::Transmit { transmit, .. } if decode(transmit) == AsapMessage::CookieEcho(b"total=4"))
    );
}

// RFC 5352 §3.9: the card's order is the failover order; failed PEs are skipped; without a
// usable card entry the pool policy's choice is taken.
#[test]
fn failover_follows_the_business_card() {
    let (mut s, conn) = pu_connected(pe(1, 7001));
    let card = [pe(1, 7001), pe(4, 7004), pe(3, 7003)];
    s.on_record(conn, PPID_CONTROL, &card_record(POOL, &card))
        .unwrap();
    assert_eq!(s.business_card(), card);
    assert!(matches!(
        &pu_events(&mut s)[..],
        [PuSessionEvent::BusinessCard { pool_elements }] if pool_elements == &card
    ));
    s.on_closed(conn, "reset".into());
    // PE 1 failed; the card's next is 4, ahead of the policy's choice 2.
    let c4 = s.fail_over(Some(pe(2, 7002))).unwrap();
    assert_eq!(s.current().map(|p| p.id), Some(PeId(4)));
    s.on_connect_failed(c4, "refused".into());
    let c3 = s.fail_over(Some(pe(2, 7002))).unwrap();
    assert_eq!(s.current().map(|p| p.id), Some(PeId(3)));
    s.on_connect_failed(c3, "refused".into());
    let c2 = s.fail_over(Some(pe(2, 7002))).unwrap();
    assert_eq!(
        s.current().map(|p| p.id),
        Some(PeId(2)),
        "the policy's choice"
    );
    s.on_connect_failed(c2, "refused".into());
    // A failed PE is not taken again, whoever names it.
    assert_eq!(
        s.fail_over(Some(pe(4, 7004))),
        Err(SessionError::NoPoolElement {
            pool_handle: "counter".into(),
            failed: 4
        })
    );
    assert!(s.has_failed(PeId(4)));
    // A re-sent card replaces the order.
    let (mut s, conn) = pu_connected(pe(1, 7001));
    s.on_record(
        conn,
        PPID_CONTROL,
        &card_record(POOL, &[pe(5, 1), pe(6, 1)]),
    )
    .unwrap();
    s.on_record(
        conn,
        PPID_CONTROL,
        &card_record(POOL, &[pe(6, 1), pe(5, 1)]),
    )
    .unwrap();
    s.on_closed(conn, "reset".into());
    s.fail_over(None).unwrap();
    assert_eq!(s.current().map(|p| p.id), Some(PeId(6)));
}

#[test]
fn card_entries_of_another_transport_are_skipped_and_foreign_cards_dropped() {
    let (mut s, conn) = pu_connected(pe(1, 7001));
    let mut sctp = pe(7, 7007);
    if let PeTransport::Transport { kind, .. } = &mut sctp.transport {
        *kind = TransportKind::Sctp;
    }
    s.on_record(conn, PPID_CONTROL, &card_record(POOL, &[sctp, pe(8, 7008)]))
        .unwrap();
    assert_eq!(
        s.on_record(conn, PPID_CONTROL, &card_record(b"other", &[pe(9, 1)])),
        Err(SessionError::ForeignBusinessCard {
            pool_handle: "other".into(),
            expected: "counter".into()
        })
    );
    s.on_closed(conn, "reset".into());
    s.fail_over(None).unwrap();
    assert_eq!(s.current().map(|p| p.id), Some(PeId(8)));
}

#[test]
fn failovers_in_a_row_are_bounded() {
    let (mut s, conn) = pu_connected(pe(1, 7001));
    s.on_closed(conn, "reset".into());
    let mut last = None;
    for id in 2..=5 {
        let c = s.fail_over(Some(pe(id, 7000))).unwrap();
        s.on_connect_failed(c, format!("refused {id}"));
        last = Some(c);
    }
    assert!(last.is_some());
    assert_eq!(
        s.fail_over(Some(pe(6, 7000))),
        Err(SessionError::TooManyFailovers {
            attempts: 4,
            last_error: "refused 5".into()
        })
    );
    // A PE that answers ends the run.
    let (mut s, conn) = pu_connected(pe(1, 7001));
    s.on_closed(conn, "reset".into());
    for id in 2..=10 {
        let c = s.fail_over(Some(pe(id, 7000))).unwrap();
        s.on_connected(c);
        s.on_record(c, 1, b"hi").unwrap();
        s.on_closed(c, "reset".into());
    }
}

#[test]
fn data_waiting_for_a_connection_is_bounded() {
    let mut s = PuSession::new(PuSessionConfig {
        max_queued_bytes: 10,
        max_data_len: 8,
        ..PuSessionConfig::new(POOL)
    });
    s.start(pe(1, 7001));
    s.send_data(1, b"12345678").unwrap();
    assert_eq!(
        s.send_data(1, b"123"),
        Err(SessionError::QueueFull {
            queued: 11,
            max: 10
        })
    );
    assert_eq!(
        s.send_data(1, b"123456789"),
        Err(SessionError::DataTooLong { len: 9, max: 8 })
    );
    assert_eq!(
        s.send_data(PPID_CONTROL, b""),
        Err(SessionError::ReservedPpid)
    );
}

#[test]
fn records_split_across_reads_are_reassembled() {
    let mut stream = Vec::new();
    stream.extend(record(PPID_CONTROL, &card_record(POOL, &[pe(2, 7002)])));
    stream.extend(record(PPID_CONTROL, &cookie_record(b"total=9")));
    stream.extend(record(3, b""));
    stream.extend(record(3, &[0xab; 40_000]));
    // One byte at a time, then in uneven chunks, then all at once: the same records.
    for chunk in [1, 7, 4096, stream.len()] {
        let (mut s, conn) = pu_connected(pe(1, 7001));
        for piece in stream.chunks(chunk) {
            s.on_stream_bytes(conn, piece).unwrap();
        }
        let events = pu_events(&mut s);
        assert_eq!(events.len(), 3, "chunks of {chunk}: {events:?}");
        assert!(matches!(&events[0], PuSessionEvent::BusinessCard { .. }));
        assert_eq!(
            events[1],
            PuSessionEvent::Data {
                ppid: 3,
                payload: vec![]
            }
        );
        assert!(
            matches!(&events[2], PuSessionEvent::Data { ppid: 3, payload } if payload.len() == 40_000)
        );
        assert_eq!(s.cookie(), Some(&b"total=9"[..]));
    }
    // The PE side too, and the decoder keeps only the partial record.
    let mut d = RecordDecoder::new(100, 100);
    let r = record(9, b"abcdef");
    d.push(&r[..HEADER_LEN + 2]);
    assert_eq!(d.next_record(), Ok(None));
    d.push(&r[HEADER_LEN + 2..]);
    d.push(&r[..3]);
    assert_eq!(d.next_record(), Ok(Some((9, b"abcdef".to_vec()))));
    assert_eq!(d.next_record(), Ok(None));
    assert_eq!(d.buffered(), 3);
}

// Hostile input: a length lie ends the stream before any payload is buffered.
#[test]
fn a_record_longer_than_the_limit_breaks_the_stream() {
    let mut d = RecordDecoder::new(MAX_CONTROL_LEN, 1000);
    let mut lie = Vec::new();
    lie.extend_from_slice(&5u32.to_be_bytes());
    lie.extend_from_slice(&u32::MAX.to_be_bytes());
    d.push(&lie);
    let e = FramingError::TooLong {
        ppid: 5,
        length: u64::from(u32::MAX),
        max: 1000,
    };
    assert_eq!(d.next_record(), Err(e));
    d.push(&record(5, b"ok"));
    assert_eq!(d.next_record(), Err(e), "the stream stays broken");
    assert_eq!(d.buffered(), 2 + HEADER_LEN, "nothing of the lie kept");
    // A control record is one ASAP message at most.
    let mut d = RecordDecoder::new(MAX_CONTROL_LEN, 1 << 20);
    let mut big = Vec::new();
    big.extend_from_slice(&PPID_CONTROL.to_be_bytes());
    big.extend_from_slice(&(65_536u32).to_be_bytes());
    d.push(&big);
    assert!(matches!(
        d.next_record(),
        Err(FramingError::TooLong { max: 65_535, .. })
    ));
    // The PU fails the PE over it; the PE side ends the session.
    let (mut s, conn) = pu_connected(pe(1, 7001));
    assert!(matches!(
        s.on_stream_bytes(conn, &big),
        Err(SessionError::Framing(_))
    ));
    assert!(matches!(
        &pu_events(&mut s)[..],
        [PuSessionEvent::PeFailed { .. }]
    ));
    assert_eq!(actions(&mut s), [SessionAction::Close { conn }]);
    assert!(matches!(
        pe_session(&[]).on_stream_bytes(&big),
        Err(SessionError::Framing(_))
    ));
}

// Hostile input: bad control messages are dropped with a typed error, the session goes on.
#[test]
fn bad_control_messages_are_dropped() {
    let (mut s, conn) = pu_connected(pe(1, 7001));
    let small = PuSessionConfig {
        max_cookie_len: 8,
        ..PuSessionConfig::new(POOL)
    };
    let mut limited = PuSession::new(small);
    let lc = limited.start(pe(1, 7001));
    limited.on_connected(lc);
    assert_eq!(
        limited.on_record(lc, PPID_CONTROL, &cookie_record(b"123456789")),
        Err(SessionError::CookieTooLong { len: 9, max: 8 })
    );
    assert_eq!(limited.cookie(), None);
    // An unknown ASAP type, a registration, garbage, a truncated header.
    let unknown = [0x7f, 0, 0, 4];
    assert!(matches!(
        s.on_record(conn, PPID_CONTROL, &unknown),
        Err(SessionError::BadControl(_))
    ));
    let resolution = asap(&AsapMessage::HandleResolution {
        subscribe: false,
        pool_handle: rserpool_protocol::PoolHandle(POOL),
        items: None,
    });
    assert_eq!(
        s.on_record(conn, PPID_CONTROL, &resolution),
        Err(SessionError::UnexpectedControl {
            message_type: message_type::HANDLE_RESOLUTION,
            receiver: "PU"
        })
    );
    assert_eq!(
        s.on_record(conn, PPID_CONTROL, &asap(&AsapMessage::CookieEcho(b"x"))),
        Err(SessionError::UnexpectedControl {
            message_type: message_type::COOKIE_ECHO,
            receiver: "PU"
        })
    );
    assert!(matches!(
        s.on_record(conn, PPID_CONTROL, &[1, 2]),
        Err(SessionError::BadControl(_))
    ));
    // A cookie whose TLV claims more than the message holds.
    let mut lying = cookie_record(b"abcd");
    lying[6] = 0x40;
    assert!(matches!(
        s.on_record(conn, PPID_CONTROL, &lying),
        Err(SessionError::BadControl(_))
    ));
    // Over a stream the same become Dropped events and later records still arrive.
    let mut bytes = record(PPID_CONTROL, &unknown);
    bytes.extend(record(PPID_CONTROL, &cookie_record(b"good")));
    s.on_stream_bytes(conn, &bytes).unwrap();
    assert!(matches!(
        &pu_events(&mut s)[..],
        [PuSessionEvent::Dropped(SessionError::BadControl(_))]
    ));
    assert_eq!(s.cookie(), Some(&b"good"[..]));
    let mut p = pe_session(&[]);
    p.on_stream_bytes(&record(PPID_CONTROL, &unknown)).unwrap();
    assert!(matches!(
        &pe_events(&mut p)[..],
        [PeSessionEvent::Dropped(SessionError::BadControl(_))]
    ));
}

// Hostile input: random bytes and mutated valid streams never panic on either side.
#[test]
fn random_streams_never_panic() {
    let mut rng = Rng::seed(5352);
    let mut valid = record(
        PPID_CONTROL,
        &card_record(POOL, &[pe(2, 7002), pe(3, 7003)]),
    );
    valid.extend(record(PPID_CONTROL, &cookie_record(b"state")));
    valid.extend(record(
        PPID_CONTROL,
        &asap(&AsapMessage::CookieEcho(b"state")),
    ));
    valid.extend(record(1, b"data"));
    for round in 0..2000 {
        let bytes: Vec<u8> = if round % 2 == 0 {
            let len = rng.below(200) as usize;
            (0..len).map(|_| rng.below(256) as u8).collect()
        } else {
            let mut v = valid.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(v.len() as u64) as usize;
                v[i] = rng.below(256) as u8;
            }
            v
        };
        let (mut s, conn) = pu_connected(pe(1, 7001));
        let _ = s.on_stream_bytes(conn, &bytes);
        pu_events(&mut s);
        let mut p = pe_session(&[]);
        let _ = p.on_stream_bytes(&bytes);
        pe_events(&mut p);
    }
}
