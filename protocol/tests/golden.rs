//! Golden bytes: the test vectors of `shared/spec/wire-format.md` §7 encode byte-exactly and decode
//! back, and every message RSPLIB 3.4.4 sent in the captured corpus decodes and re-encodes to the
//! same bytes.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::{corpus, hex};
use rserpool_protocol::csp::CspReport;
use rserpool_protocol::*;

const ADDR: [IpAddr; 1] = [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))];

fn echo_pe() -> PoolElementParam<'static> {
    PoolElementParam {
        id: PeId(0x1234_5678),
        home_pr: PrId(0),
        registration_life: 300_000,
        user_transport: UserTransport::Transport(TransportParam {
            kind: TransportKind::Sctp,
            port: 7,
            transport_use: TRANSPORT_USE_DATA_ONLY,
            service_code: 0,
            addresses: Seq::from_items(&ADDR),
        }),
        policy: Policy::RoundRobin,
        asap_transport: None,
    }
}

fn check_asap(msg: AsapMessage<'_>, golden: &str) {
    let want = hex(golden);
    let mut buf = [0u8; 256];
    let n = msg.encode(Generation::Rfc, &mut buf).unwrap();
    assert_eq!(&buf[..n], &want[..], "encoding of {msg:?}");
    let back = AsapMessage::decode(&want, Generation::Rfc).unwrap();
    assert_eq!(back.message, msg);
    assert!(back.unrecognized.is_empty());
}

#[test]
fn registration_vector() {
    check_asap(
        AsapMessage::Registration {
            pool_handle: PoolHandle(b"EchoPool"),
            pool_element: echo_pe(),
        },
        "01 00 00 38 00 09 00 0c 45 63 68 6f 50 6f 6f 6c
         00 0a 00 28 12 34 56 78 00 00 00 00 00 04 93 e0
         00 04 00 10 00 07 00 00 00 01 00 08 c0 00 02 01
         00 08 00 08 00 00 00 01",
    );
}

#[test]
fn handle_resolution_vector() {
    check_asap(
        AsapMessage::HandleResolution {
            subscribe: false,
            pool_handle: PoolHandle(b"EchoPool"),
            items: Some(5),
        },
        "05 00 00 18 00 09 00 0c 45 63 68 6f 50 6f 6f 6c
         80 3f 00 08 00 00 00 05",
    );
}

#[test]
fn keep_alive_vector() {
    check_asap(
        AsapMessage::EndpointKeepAlive {
            home: true,
            server_id: PrId(0x0a0b_0c0d),
            pool_handle: PoolHandle(b"EchoPool"),
            pe_id: Some(PeId(0x1234_5678)),
        },
        "07 01 00 1c 0a 0b 0c 0d 00 09 00 0c 45 63 68 6f
         50 6f 6f 6c 00 0e 00 08 12 34 56 78",
    );
}

#[test]
fn presence_vector() {
    let msg = EnrpMessage {
        sender: PrId(0x0a0b_0c0d),
        receiver: PrId(0),
        body: EnrpBody::Presence {
            reply_required: true,
            checksum: Some(0x29a5),
            server_information: Some(ServerInformation {
                server_id: PrId(0x0a0b_0c0d),
                transport: TransportParam {
                    kind: TransportKind::Sctp,
                    port: 9901,
                    transport_use: TRANSPORT_USE_DATA_ONLY,
                    service_code: 0,
                    addresses: Seq::from_items(&ADDR),
                },
            }),
        },
    };
    let want = hex("01 01 00 2c 0a 0b 0c 0d 00 00 00 00 00 0f 00 06
         29 a5 00 00 00 0b 00 18 0a 0b 0c 0d 00 04 00 10
         26 ad 00 00 00 01 00 08 c0 00 02 01");
    let mut buf = [0u8; 256];
    let n = msg.encode(Generation::Rfc, &mut buf).unwrap();
    assert_eq!(&buf[..n], &want[..]);
    assert_eq!(
        EnrpMessage::decode(&want, Generation::Rfc).unwrap().message,
        msg
    );
}

#[test]
fn presence_checksum_matches_handlespace_checksum() {
    let mut c = checksum::Internet16::new();
    c.add(b"EchoPool", 0x1234_5678);
    assert_eq!(c.value(), 0x29a5);
}

/// Re-encodes a decoded corpus message and compares with the original bytes.
fn reencode(m: &common::CorpusMessage) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let n = match m.protocol.as_str() {
        "asap" => {
            let d = AsapMessage::decode(&m.bytes, Generation::Rfc)
                .unwrap_or_else(|e| panic!("frame {}: {e}", m.frame));
            assert!(d.unrecognized.is_empty());
            d.message.encode(Generation::Rfc, &mut buf).unwrap()
        }
        "enrp" => {
            let d = EnrpMessage::decode(&m.bytes, Generation::Rfc)
                .unwrap_or_else(|e| panic!("frame {}: {e}", m.frame));
            assert!(d.unrecognized.is_empty());
            d.message.encode(Generation::Rfc, &mut buf).unwrap()
        }
        "csp" => CspReport::decode(&m.bytes)
            .unwrap_or_else(|e| panic!("frame {}: {e}", m.frame))
            .encode(&mut buf)
            .unwrap(),
        other => panic!("unknown protocol {other}"),
    };
    buf.truncate(n);
    buf
}

#[test]
fn rsplib_corpus_round_trips_byte_exactly() {
    let corpus = corpus();
    assert!(corpus.len() > 1000, "corpus too small: {}", corpus.len());
    let mut seen = std::collections::BTreeSet::new();
    for m in &corpus {
        assert_eq!(reencode(m), m.bytes, "frame {} ({})", m.frame, m.protocol);
        seen.insert((m.protocol.clone(), m.bytes[0]));
    }
    // Every message type the capture holds was exercised (see shared/corpus/README.md).
    assert_eq!(seen.len(), 8 + 1 + 8 + 1, "{seen:?}");
}

#[test]
fn rsplib_corpus_fields_decode_as_captured() {
    let corpus = corpus();
    let find = |frame: u32| corpus.iter().find(|m| m.frame == frame).unwrap();

    // Frame 10: a PE registers in EchoPool over SCTP, data+control, registration life 9000 ms.
    let reg = AsapMessage::decode(&find(10).bytes, Generation::Rfc)
        .unwrap()
        .message;
    let AsapMessage::Registration {
        pool_handle,
        pool_element,
    } = reg
    else {
        panic!("frame 10 is not a registration: {reg:?}")
    };
    assert_eq!(pool_handle, PoolHandle(b"EchoPool"));
    assert_eq!(pool_element.id, PeId(0xe001));
    assert_eq!(pool_element.registration_life, 9000);
    assert_eq!(pool_element.policy, Policy::RoundRobin);
    let UserTransport::Transport(t) = pool_element.user_transport else {
        panic!("opaque user transport")
    };
    assert_eq!(
        (t.kind, t.port, t.transport_use),
        (TransportKind::Sctp, 0xe07d, 1)
    );
    assert_eq!(
        t.addresses.first(),
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)))
    );

    // Frame 84: RSPLIB refuses an inconsistent policy with cause 0x5 and no cause info.
    let rsp = AsapMessage::decode(&find(84).bytes, Generation::Rfc)
        .unwrap()
        .message;
    let AsapMessage::RegistrationResponse {
        rejected: true,
        error: Some(e),
        ..
    } = rsp
    else {
        panic!("frame 84 is not a rejection: {rsp:?}")
    };
    let c = e.first().unwrap();
    assert_eq!((c.code, c.info.len()), (cause::INCONSISTENT_POLICY, 0));
    assert_eq!(c.policy(), None);

    // Frame 14: a handle update carries the home PR and the PE's 9-address ASAP transport.
    let upd = EnrpMessage::decode(&find(14).bytes, Generation::Rfc)
        .unwrap()
        .message;
    assert_eq!(upd.sender, PrId(0x1111_aaaa));
    let EnrpBody::HandleUpdate {
        action: UpdateAction::AddPe,
        pool_element,
        ..
    } = upd.body
    else {
        panic!("frame 14 is not ADD_PE: {upd:?}")
    };
    assert_eq!(pool_element.home_pr, PrId(0x1111_aaaa));
    assert_eq!(pool_element.asap_transport.unwrap().addresses.len(), 9);

    // Frame 108: a handle table response with several pools, each with its PEs.
    let ht = EnrpMessage::decode(&find(108).bytes, Generation::Rfc)
        .unwrap()
        .message;
    let EnrpBody::HandleTableResponse {
        entries,
        more_to_send,
        ..
    } = ht.body
    else {
        panic!("frame 108 is not a handle table response")
    };
    assert!(!more_to_send, "RSPLIB sent the whole table in one response");
    let pools: Vec<_> = entries
        .iter()
        .map(|e| (e.pool_handle.0.to_vec(), e.pool_elements.len()))
        .collect();
    assert_eq!(
        pools,
        vec![
            (b"LUPool".to_vec(), 1),
            (b"EchoPool".to_vec(), 2),
            (b"PrioPool".to_vec(), 1),
            (b"WeightedPool".to_vec(), 2)
        ]
    );

    // Frame 1: a CSP report of registrar 0x2222bbbb with two associations.
    let csp = CspReport::decode(&find(1).bytes).unwrap();
    assert_eq!(
        csp.sender_id,
        csp::component_id(csp::CSP_GROUP_REGISTRAR, 0x2222_bbbb)
    );
    assert_eq!(csp.location, b"(none): 192.0.2.2:3863");
    assert_eq!(csp.associations.len(), 2);
    assert_eq!(csp.workload, 0xffff);
}
