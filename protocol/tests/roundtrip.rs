//! Property tests of the codec: every ASAP message type (14), every ENRP message type (10) and the
//! CSP report, with arbitrary field values, encode and decode back to an equal message in both wire
//! generations; the encoding has the layout of RFC 5354 (lengths, zero padding, parameter order);
//! re-encoding a decoded message gives identical bytes; identifiers too wide for the RFC generation
//! and buffers too small are typed errors; decoding in the wrong generation never panics.

#[path = "common/gen.rs"]
mod wiregen;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::net::IpAddr;

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{TestCaseError, TestRunner};
use rserpool_protocol::csp::CspReport;
use rserpool_protocol::framing;
use rserpool_protocol::*;
use wiregen::*;

/// Cases per message type and generation (14 + 10 types, 2 generations: 12288 messages).
const CASES_PER_TYPE: u32 = 256;
/// Cases of the other properties.
const CASES: u32 = 512;

const GENERATIONS: [Generation; 2] = [Generation::Rfc, Generation::Ng];

/// Runs `check` over every strategy of `variants` and reports every variant that fails.
fn run_variants<T: Debug>(
    name: &str,
    variants: Vec<BoxedStrategy<T>>,
    check: impl Fn(&T) -> Result<(), TestCaseError>,
) {
    let mut failures = Vec::new();
    for (i, s) in variants.iter().enumerate() {
        let mut runner = TestRunner::new(config(CASES_PER_TYPE));
        if let Err(e) = runner.run(s, |m| check(&m)) {
            failures.push(format!("{name}, message type {:#04x}: {e}", i + 1));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Expected wire facts, derived from the model independently of the codec
// ---------------------------------------------------------------------------------------------

fn asap_type_and_flags(m: &OAsap) -> (u8, u8) {
    let b = |x: &bool| u8::from(*x);
    match m {
        OAsap::Registration { .. } => (0x01, 0),
        OAsap::Deregistration { .. } => (0x02, 0),
        OAsap::RegistrationResponse { rejected, .. } => (0x03, b(rejected)),
        OAsap::DeregistrationResponse { .. } => (0x04, 0),
        OAsap::HandleResolution { subscribe, .. } => (0x05, b(subscribe)),
        OAsap::HandleResolutionResponse { accepted, .. } => (0x06, b(accepted)),
        OAsap::EndpointKeepAlive { home, .. } => (0x07, b(home)),
        OAsap::EndpointKeepAliveAck { .. } => (0x08, 0),
        OAsap::EndpointUnreachable { .. } => (0x09, 0),
        OAsap::ServerAnnounce { .. } => (0x0a, 0),
        OAsap::Cookie(_) => (0x0b, 0),
        OAsap::CookieEcho(_) => (0x0c, 0),
        OAsap::BusinessCard { .. } => (0x0d, 0),
        OAsap::Error(_) => (0x0e, 0),
    }
}

fn enrp_type_and_flags(m: &OEnrp) -> (u8, u8) {
    let b = |x: &bool| u8::from(*x);
    match &m.body {
        OEnrpBody::Presence { reply_required, .. } => (0x01, b(reply_required)),
        OEnrpBody::HandleTableRequest { own_children_only } => (0x02, b(own_children_only)),
        OEnrpBody::HandleTableResponse {
            reject,
            more_to_send,
            ..
        } => (0x03, b(reject) | b(more_to_send) << 1),
        OEnrpBody::HandleUpdate {
            takeover_suggested, ..
        } => (0x04, b(takeover_suggested)),
        OEnrpBody::ListRequest => (0x05, 0),
        OEnrpBody::ListResponse { reject, .. } => (0x06, b(reject)),
        OEnrpBody::InitTakeover { .. } => (0x07, 0),
        OEnrpBody::InitTakeoverAck { .. } => (0x08, 0),
        OEnrpBody::TakeoverServer { .. } => (0x09, 0),
        OEnrpBody::Error(_) => (0x0a, 0),
    }
}

/// The nesting of parameter types (and cause codes) a message must have on the wire, in order
/// (wire-format.md §3-§5; checklist C-14).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Shape(u16, Vec<Shape>);

fn leaf(ty: u16) -> Shape {
    Shape(ty, vec![])
}

fn transport_shape(t: &OTransport) -> Shape {
    Shape(
        t.kind.parameter_type(),
        t.addresses
            .iter()
            .map(|a| match a {
                IpAddr::V4(_) => leaf(param_type::IPV4_ADDRESS),
                IpAddr::V6(_) => leaf(param_type::IPV6_ADDRESS),
            })
            .collect(),
    )
}

fn pe_shape(pe: &OPoolElement) -> Shape {
    let mut inner = vec![match &pe.user_transport {
        OUserTransport::Transport(t) => transport_shape(t),
        OUserTransport::Opaque(_) => leaf(param_type::OPAQUE_TRANSPORT),
    }];
    inner.push(leaf(param_type::POOL_POLICY));
    inner.extend(pe.asap_transport.as_ref().map(transport_shape));
    Shape(param_type::POOL_ELEMENT, inner)
}

fn causes_shape(c: &[OCause]) -> Shape {
    Shape(
        param_type::OPERATION_ERROR,
        c.iter().map(|c| leaf(c.code)).collect(),
    )
}

fn server_shape(s: &OServerInfo) -> Shape {
    Shape(
        param_type::SERVER_INFORMATION,
        vec![transport_shape(&s.transport)],
    )
}

fn asap_shape(m: &OAsap) -> Vec<Shape> {
    use param_type as p;
    let h = leaf(p::POOL_HANDLE);
    let id = leaf(p::PE_IDENTIFIER);
    match m {
        OAsap::Registration { pool_element, .. } => vec![h, pe_shape(pool_element)],
        OAsap::Deregistration { .. }
        | OAsap::EndpointKeepAliveAck { .. }
        | OAsap::EndpointUnreachable { .. } => vec![h, id],
        OAsap::RegistrationResponse { error, .. } | OAsap::DeregistrationResponse { error, .. } => {
            let mut v = vec![h, id];
            v.extend(error.as_deref().map(causes_shape));
            v
        }
        OAsap::HandleResolution { items, .. } => {
            let mut v = vec![h];
            v.extend(items.map(|_| leaf(p::HANDLE_RESOLUTION_OPTION)));
            v
        }
        OAsap::HandleResolutionResponse { resolution, .. } => match resolution {
            OResolution::Found {
                policy,
                pool_elements,
            } => {
                let mut v = vec![h];
                v.extend(policy.map(|_| leaf(p::POOL_POLICY)));
                v.extend(pool_elements.iter().map(pe_shape));
                v
            }
            OResolution::Failed(c) => vec![h, causes_shape(c)],
        },
        OAsap::EndpointKeepAlive { pe_id, .. } => {
            let mut v = vec![h];
            v.extend(pe_id.map(|_| id));
            v
        }
        OAsap::ServerAnnounce { transports, .. } => {
            transports.iter().map(transport_shape).collect()
        }
        OAsap::Cookie(_) | OAsap::CookieEcho(_) => vec![leaf(p::COOKIE)],
        OAsap::BusinessCard {
            policy,
            pool_elements,
            ..
        } => {
            let mut v = vec![h];
            v.extend(policy.map(|_| leaf(p::POOL_POLICY)));
            v.extend(pool_elements.iter().map(pe_shape));
            v
        }
        OAsap::Error(c) => vec![causes_shape(c)],
    }
}

fn enrp_shape(m: &OEnrp) -> Vec<Shape> {
    use param_type as p;
    match &m.body {
        OEnrpBody::Presence {
            checksum,
            server_information,
            ..
        } => {
            let mut v: Vec<Shape> = checksum.iter().map(|_| leaf(p::PE_CHECKSUM)).collect();
            v.extend(server_information.as_ref().map(server_shape));
            v
        }
        OEnrpBody::HandleTableResponse { entries, .. } => entries
            .iter()
            .flat_map(|(_, pes)| {
                std::iter::once(leaf(p::POOL_HANDLE)).chain(pes.iter().map(pe_shape))
            })
            .collect(),
        OEnrpBody::HandleUpdate { pool_element, .. } => {
            vec![leaf(p::POOL_HANDLE), pe_shape(pool_element)]
        }
        OEnrpBody::ListResponse { servers, .. } => servers.iter().map(server_shape).collect(),
        OEnrpBody::Error(c) => vec![causes_shape(c)],
        OEnrpBody::HandleTableRequest { .. }
        | OEnrpBody::ListRequest
        | OEnrpBody::InitTakeover { .. }
        | OEnrpBody::InitTakeoverAck { .. }
        | OEnrpBody::TakeoverServer { .. } => vec![],
    }
}

fn shape_of(nodes: &[Node]) -> Vec<Shape> {
    nodes
        .iter()
        .map(|n| Shape(n.ty, shape_of(&n.children)))
        .collect()
}

/// The length a parameter of fixed layout must have (RFC 5354 §3; nextgen.md for NG).
fn fixed_len(node: &Node, msg: &[u8], g: Generation) -> Option<usize> {
    use param_type as p;
    if node.is_cause {
        return None;
    }
    match node.ty {
        p::IPV4_ADDRESS => Some(8),
        p::IPV6_ADDRESS => Some(20),
        p::PE_IDENTIFIER => Some(4 + id_width(g)),
        p::PE_CHECKSUM => Some(match g {
            Generation::Rfc => 6,
            Generation::Ng => 12,
        }),
        p::HANDLE_RESOLUTION_OPTION => Some(8),
        p::POOL_POLICY => {
            let v = &msg[node.start + 4..node.start + 8];
            let code = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
            Some(8 + 4 * Policy::field_count(code).expect("known policy"))
        }
        _ => None,
    }
}

/// The parameters in `first..end` follow each other with zero padding to 4 bytes, tile the region
/// exactly, and have their fixed lengths (checklist C-01 to C-03, C-12).
fn check_tiling(
    msg: &[u8],
    nodes: &[Node],
    first: usize,
    end: usize,
    g: Generation,
) -> Result<(), TestCaseError> {
    let mut pos = first;
    for n in nodes {
        prop_assert_eq!(
            n.start,
            pos,
            "gap or overlap before parameter {:#06x}",
            n.ty
        );
        let padded = n.start + n.len.next_multiple_of(4);
        prop_assert!(padded <= end, "parameter {:#06x} overruns its region", n.ty);
        prop_assert!(
            msg[n.end()..padded].iter().all(|&b| b == 0),
            "non-zero padding after {:#06x}",
            n.ty
        );
        if let Some(l) = fixed_len(n, msg, g) {
            prop_assert_eq!(n.len, l, "length of parameter {:#06x}", n.ty);
        }
        if !n.is_cause {
            match content_of(n.ty, g) {
                Content::Params { prefix } => {
                    check_tiling(msg, &n.children, n.start + 4 + prefix, n.end(), g)?
                }
                Content::Causes => check_tiling(msg, &n.children, n.start + 4, n.end(), g)?,
                Content::Leaf => {}
            }
        }
        pos = padded;
    }
    prop_assert_eq!(pos, end, "parameters do not fill their region");
    Ok(())
}

/// Header and layout of an encoding: type, flags, length = bytes = multiple of 4, parameters as
/// `shape` says.
fn check_encoding(
    bytes: &[u8],
    proto: Proto,
    g: Generation,
    (ty, flags): (u8, u8),
    shape: Vec<Shape>,
) -> Result<(), TestCaseError> {
    let n = bytes.len();
    prop_assert_eq!(n % 4, 0, "encoded length {} is not a multiple of 4", n);
    prop_assert_eq!(len_at(bytes, 0), n, "header length field");
    prop_assert_eq!(bytes[0], ty, "message type");
    prop_assert_eq!(bytes[1], flags, "flags");
    let nodes = parse_message(bytes, proto, g);
    check_tiling(bytes, &nodes, fixed_prefix(proto, ty, g), n, g)?;
    prop_assert_eq!(shape_of(&nodes), shape, "parameter order and nesting");
    Ok(())
}

/// Encoding into any buffer shorter than the message fails with `BufferTooSmall` whose `needed`
/// exceeds the buffer and does not exceed the message.
fn check_short_buffers(
    n: usize,
    cut: prop::sample::Index,
    encode: impl Fn(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), TestCaseError> {
    for len in [n - 1, cut.index(n)] {
        let mut buf = vec![0u8; len];
        match encode(&mut buf) {
            Err(EncodeError::BufferTooSmall { needed }) => {
                prop_assert!(
                    needed > len && needed <= n,
                    "needed {} for {}/{}",
                    needed,
                    len,
                    n
                );
            }
            other => prop_assert!(false, "{} of {} bytes: {:?}", len, n, other),
        }
    }
    let mut exact = vec![0u8; n];
    prop_assert_eq!(encode(&mut exact)?, n, "exact-size buffer");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

fn roundtrip_asap(m: &OAsap, g: Generation, cut: prop::sample::Index) -> Result<(), TestCaseError> {
    m.with_view(|msg| {
        let bytes = encode_asap(&msg, g)?;
        check_encoding(
            &bytes,
            Proto::Asap,
            g,
            asap_type_and_flags(m),
            asap_shape(m),
        )?;
        let d = AsapMessage::decode(&bytes, g)?;
        prop_assert_eq!(d.message, msg);
        prop_assert!(d.unrecognized.is_empty());
        prop_assert_eq!(touch_asap(&d.message), touch_asap(&msg));
        // A dirty buffer: every byte of a message, padding included, must be written.
        let mut again = vec![0xa5u8; bytes.len()];
        let n = d.message.encode(g, &mut again)?;
        prop_assert_eq!(&again[..n], &bytes[..], "re-encoding differs");
        check_short_buffers(bytes.len(), cut, |buf| msg.encode(g, buf))?;
        // The other generation's decoder must not panic, and whatever it accepts must be
        // consistent.
        deep_check_asap(&bytes, other(g));
        Ok(())
    })
}

fn roundtrip_enrp(m: &OEnrp, g: Generation, cut: prop::sample::Index) -> Result<(), TestCaseError> {
    m.with_view(|msg| {
        let bytes = encode_enrp(&msg, g)?;
        check_encoding(
            &bytes,
            Proto::Enrp,
            g,
            enrp_type_and_flags(m),
            enrp_shape(m),
        )?;
        let w = id_width(g);
        let id = |at: usize| -> u64 {
            bytes[at..at + w]
                .iter()
                .fold(0, |acc, &b| acc << 8 | u64::from(b))
        };
        prop_assert_eq!((id(4), id(4 + w)), (m.sender, m.receiver), "PR IDs");
        let d = EnrpMessage::decode(&bytes, g)?;
        prop_assert_eq!(d.message, msg);
        prop_assert!(d.unrecognized.is_empty());
        prop_assert_eq!(touch_enrp(&d.message), touch_enrp(&msg));
        // A dirty buffer: every byte of a message, padding included, must be written.
        let mut again = vec![0xa5u8; bytes.len()];
        let n = d.message.encode(g, &mut again)?;
        prop_assert_eq!(&again[..n], &bytes[..], "re-encoding differs");
        check_short_buffers(bytes.len(), cut, |buf| msg.encode(g, buf))?;
        deep_check_enrp(&bytes, other(g));
        Ok(())
    })
}

#[test]
fn every_asap_message_type_round_trips_in_both_generations() {
    for g in GENERATIONS {
        let variants = asap_variants(g)
            .into_iter()
            .map(|s| (s, any::<prop::sample::Index>()).boxed())
            .collect();
        run_variants(&format!("ASAP {g:?}"), variants, |(m, cut)| {
            roundtrip_asap(m, g, *cut)
        });
    }
}

#[test]
fn every_enrp_message_type_round_trips_in_both_generations() {
    for g in GENERATIONS {
        let variants = enrp_variants(g)
            .into_iter()
            .map(|s| (s, any::<prop::sample::Index>()).boxed())
            .collect();
        run_variants(&format!("ENRP {g:?}"), variants, |(m, cut)| {
            roundtrip_enrp(m, g, *cut)
        });
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    /// CSP reports round-trip; texts come back cut to 127 bytes without trailing NULs.
    #[test]
    fn csp_reports_round_trip(m in csp(), cut in any::<prop::sample::Index>()) {
        let msg = m.view();
        let bytes = encode_csp(&msg)?;
        let n = bytes.len();
        let want = csp::CSP_REPORT_FIXED_LEN + csp::CSP_ASSOCIATION_LEN * m.associations.len();
        prop_assert_eq!(n, want);
        prop_assert_eq!(len_at(&bytes, 0), n);
        prop_assert_eq!(n % 4, 0);
        prop_assert_eq!(&bytes[..2], &[csp::CSP_REPORT, u8::from(m.final_report)]);
        // Both texts are NUL-terminated in their 128-byte fields.
        prop_assert_eq!(bytes[28 + 127], 0);
        prop_assert_eq!(bytes[156 + 127], 0);
        let d = CspReport::decode(&bytes)?;
        let expected = m.as_received();
        prop_assert_eq!(d, expected.view());
        prop_assert_eq!(touch_csp(&d), 1 + m.associations.len());
        let mut again = vec![0xa5u8; n];
        prop_assert_eq!(d.encode(&mut again)?, n);
        prop_assert_eq!(&again, &bytes);
        check_short_buffers(n, cut, |buf| msg.encode(buf))?;
        prop_assert!(deep_check_csp(&bytes));
        // CSP bytes are not ASAP or ENRP of either generation in any way that panics.
        for g in GENERATIONS {
            deep_check_asap(&bytes, g);
            deep_check_enrp(&bytes, g);
        }
    }

    /// An identifier beyond 32 bits anywhere in an ASAP message is `IdTooWide` in the RFC
    /// generation and round-trips in NG.
    #[test]
    fn wide_asap_ids_are_rejected_by_the_rfc_generation(
        mut m in asap(Generation::Rfc),
        slot in any::<prop::sample::Index>(),
        wide in wide_id(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut slots = m.id_slots();
        if !slots.is_empty() {
            let i = slot.index(slots.len());
            *slots[i] = wide;
            let r = m.with_view(|msg| encode_asap(&msg, Generation::Rfc));
            prop_assert!(
                matches!(r, Err(EncodeError::IdTooWide { id, .. }) if id == wide),
                "{:?}", r
            );
        }
        roundtrip_asap(&m, Generation::Ng, cut)?;
    }

    /// As above for ENRP.
    #[test]
    fn wide_enrp_ids_are_rejected_by_the_rfc_generation(
        mut m in enrp(Generation::Rfc),
        slot in any::<prop::sample::Index>(),
        wide in wide_id(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut slots = m.id_slots();
        let i = slot.index(slots.len());
        *slots[i] = wide;
        let r = m.with_view(|msg| encode_enrp(&msg, Generation::Rfc));
        prop_assert!(
            matches!(r, Err(EncodeError::IdTooWide { id, .. }) if id == wide),
            "{:?}", r
        );
        roundtrip_enrp(&m, Generation::Ng, cut)?;
    }

    /// The RFC generation's PE checksum is 16 bits: a wider one is refused, NG carries it.
    #[test]
    fn wide_presence_checksums_are_rejected_by_the_rfc_generation(
        sender in id(Generation::Rfc),
        checksum in 0x1_0000u64..=u64::MAX,
        cut in any::<prop::sample::Index>(),
    ) {
        let m = OEnrp {
            sender,
            receiver: 0,
            body: OEnrpBody::Presence {
                reply_required: false,
                checksum: Some(checksum),
                server_information: None,
            },
        };
        let r = m.with_view(|msg| encode_enrp(&msg, Generation::Rfc));
        prop_assert!(matches!(r, Err(EncodeError::InvalidValue { .. })), "{:?}", r);
        roundtrip_enrp(&m, Generation::Ng, cut)?;
    }

    /// Mixed messages of both protocols decoded with the wrong protocol or generation never panic.
    #[test]
    fn foreign_bytes_never_panic(a in asap(Generation::Ng), e in enrp(Generation::Ng)) {
        let ab = a.with_view(|m| encode_asap(&m, Generation::Ng))?;
        let eb = e.with_view(|m| encode_enrp(&m, Generation::Ng))?;
        for g in GENERATIONS {
            deep_check_enrp(&ab, g);
            deep_check_asap(&eb, g);
            deep_check_asap(&ab, g);
            deep_check_enrp(&eb, g);
            deep_check_csp(&ab);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The generators cover what they claim to
// ---------------------------------------------------------------------------------------------

#[test]
fn generators_cover_every_policy_transport_and_message_type() {
    let policies: BTreeSet<u32> = samples(&policy(), 2000)
        .iter()
        .map(Policy::policy_type)
        .collect();
    assert_eq!(policies.len(), 18, "{policies:x?}");

    let transports = samples(&transport(), 2000);
    let kinds: BTreeSet<u16> = transports.iter().map(|t| t.kind.parameter_type()).collect();
    assert_eq!(kinds.len(), 5);
    assert!(transports.iter().all(|t| {
        (t.kind == TransportKind::Sctp && (1..=8).contains(&t.addresses.len()))
            || t.addresses.len() == 1
    }));
    assert!(transports.iter().any(|t| {
        t.addresses.iter().any(IpAddr::is_ipv4) && t.addresses.iter().any(IpAddr::is_ipv6)
    }));
    assert!(transports.iter().any(|t| t.addresses.len() == 8));

    let pes = samples(&pool_element(Generation::Ng), 500);
    assert!(
        pes.iter()
            .any(|p| matches!(p.user_transport, OUserTransport::Opaque(_)))
    );
    assert!(pes.iter().any(|p| p.asap_transport.is_some()));
    assert!(pes.iter().any(|p| p.id > u64::from(u32::MAX)));

    for g in GENERATIONS {
        for (i, s) in asap_variants(g).iter().enumerate() {
            for m in samples(s, 4) {
                assert_eq!(usize::from(asap_type_and_flags(&m).0), i + 1);
            }
        }
        for (i, s) in enrp_variants(g).iter().enumerate() {
            for m in samples(s, 4) {
                assert_eq!(usize::from(enrp_type_and_flags(&m).0), i + 1);
            }
        }
    }
    let rfc_ids = samples(&id(Generation::Rfc), 1000);
    assert!(rfc_ids.iter().all(|&i| i <= u64::from(u32::MAX)));
    assert!(rfc_ids.contains(&u64::from(u32::MAX)));
}

/// The model and the shape checker agree with the hand-built golden vector (so the properties
/// above check real wire facts, not just codec self-consistency).
#[test]
fn model_encodes_the_golden_registration_vector() {
    let m = OAsap::Registration {
        pool_handle: b"EchoPool".to_vec(),
        pool_element: OPoolElement {
            id: 0x1234_5678,
            home_pr: 0,
            registration_life: 300_000,
            user_transport: OUserTransport::Transport(OTransport {
                kind: TransportKind::Sctp,
                port: 7,
                transport_use: 0,
                service_code: 0,
                addresses: vec![IpAddr::from([192, 0, 2, 1])],
            }),
            policy: Policy::RoundRobin,
            asap_transport: None,
        },
    };
    let bytes = m
        .with_view(|msg| encode_asap(&msg, Generation::Rfc))
        .unwrap();
    let golden = [
        0x01, 0x00, 0x00, 0x38, 0x00, 0x09, 0x00, 0x0c, 0x45, 0x63, 0x68, 0x6f, 0x50, 0x6f, 0x6f,
        0x6c, 0x00, 0x0a, 0x00, 0x28, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04,
        0x93, 0xe0, 0x00, 0x04, 0x00, 0x10, 0x00, 0x07, 0x00, 0x00, 0x00, 0x01, 0x00, 0x08, 0xc0,
        0x00, 0x02, 0x01, 0x00, 0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x01,
    ];
    assert_eq!(bytes, golden);
    check_encoding(
        &bytes,
        Proto::Asap,
        Generation::Rfc,
        asap_type_and_flags(&m),
        asap_shape(&m),
    )
    .unwrap();
    // In NG the PE's fixed part is 20 bytes: 8 more than in the RFC generation.
    let ng = m
        .with_view(|msg| encode_asap(&msg, Generation::Ng))
        .unwrap();
    assert_eq!(ng.len(), golden.len() + 8);
    assert_eq!(len_at(&ng, 16), 0x28 + 8);
    assert_eq!(&ng[20..28], &[0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
}

// ---------------------------------------------------------------------------------------------
// Alternative valid encodings and invalid messages
// ---------------------------------------------------------------------------------------------

/// The length `n` has when it does not count the padding after its last inner parameter
/// (RFC 5354 §2), applied bottom-up; writes the new lengths of `n`'s descendants into `msg`.
fn unpadded_len(n: &Node, msg: &mut [u8]) -> usize {
    let mut last_len = None;
    for c in &n.children {
        let l = unpadded_len(c, msg);
        set_len_at(msg, c.start, l);
        last_len = Some((c, l));
    }
    match last_len {
        Some((c, l)) if c.start + c.len.next_multiple_of(4) == n.end() => c.start - n.start + l,
        _ => n.len,
    }
}

/// Rewrites every length (header, nested parameters, operation errors) to exclude the padding
/// after the last inner parameter, as RFC 5354 §2 and §4 describe; returns whether anything
/// changed.
fn to_rfc_padding_convention(msg: &mut [u8], proto: Proto, g: Generation) -> bool {
    let before = msg.to_vec();
    let nodes = parse_message(msg, proto, g);
    let mut last = None;
    for n in &nodes {
        let l = unpadded_len(n, msg);
        set_len_at(msg, n.start, l);
        last = Some((n, l));
    }
    if let Some((n, l)) = last
        && n.start + n.len.next_multiple_of(4) == msg.len()
    {
        set_len_at(msg, 0, n.start + l);
    }
    *msg != before[..]
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Lengths that exclude the final padding of a message or of a nested parameter (the RFC's
    /// convention; RSPLIB's encoder counts it) decode to the same message, and the stream framer
    /// still finds the message's full extent (checklist C-01 to C-03).
    #[test]
    fn rfc_padding_convention_is_accepted(
        g in prop::sample::select(&GENERATIONS[..]),
        a in asap(Generation::Rfc),
        e in enrp(Generation::Rfc),
    ) {
        for (proto, bytes) in [
            (Proto::Asap, a.with_view(|m| encode_asap(&m, g))?),
            (Proto::Enrp, e.with_view(|m| encode_enrp(&m, g))?),
        ] {
            let mut rfc = bytes.clone();
            to_rfc_padding_convention(&mut rfc, proto, g);
            prop_assert!(len_at(&rfc, 0) <= bytes.len() && len_at(&rfc, 0) + 3 >= bytes.len());
            prop_assert_eq!(
                framing::next_frame(&rfc, MAX_MESSAGE_LEN),
                Ok(framing::Frame::Complete { len: bytes.len() })
            );
            match proto {
                Proto::Asap => {
                    let d = AsapMessage::decode(&rfc, g)?;
                    prop_assert_eq!(d.message, AsapMessage::decode(&bytes, g)?.message);
                    prop_assert!(d.unrecognized.is_empty());
                    prop_assert_eq!(encode_asap(&d.message, g)?, bytes);
                }
                Proto::Enrp => {
                    let d = EnrpMessage::decode(&rfc, g)?;
                    prop_assert_eq!(d.message, EnrpMessage::decode(&bytes, g)?.message);
                    prop_assert!(d.unrecognized.is_empty());
                    prop_assert_eq!(encode_enrp(&d.message, g)?, bytes);
                }
            }
        }
    }
}

#[test]
fn the_rfc_padding_convention_rewrite_changes_real_messages() {
    // A cookie of 5 bytes: RSPLIB length 16, RFC length 13; an error cause with 1 byte of info.
    let m = OAsap::Cookie(b"hello".to_vec());
    let mut b = m.with_view(|v| encode_asap(&v, Generation::Rfc)).unwrap();
    assert_eq!(len_at(&b, 0), 16);
    assert!(to_rfc_padding_convention(
        &mut b,
        Proto::Asap,
        Generation::Rfc
    ));
    assert_eq!((len_at(&b, 0), len_at(&b, 4)), (13, 9));
    let m = OAsap::Error(vec![OCause {
        code: cause::UNSPECIFIED,
        info: vec![7],
    }]);
    let mut b = m.with_view(|v| encode_asap(&v, Generation::Ng)).unwrap();
    assert_eq!((len_at(&b, 0), len_at(&b, 4), len_at(&b, 8)), (16, 12, 5));
    assert!(to_rfc_padding_convention(
        &mut b,
        Proto::Asap,
        Generation::Ng
    ));
    assert_eq!((len_at(&b, 0), len_at(&b, 4), len_at(&b, 8)), (13, 9, 5));
    let d = AsapMessage::decode(&b, Generation::Ng).unwrap();
    m.with_view(|v| assert_eq!(d.message, v));
}

/// Whatever the encoder accepts, its own decoder accepts: messages the wire format forbids are
/// refused when encoding, as they are when decoding.
#[test]
fn the_encoder_refuses_what_the_decoder_rejects() {
    let pe = samples(&pool_element(Generation::Rfc), 1).remove(0);
    let refused = |m: &OAsap| {
        for g in GENERATIONS {
            let r = m.with_view(|v| encode_asap(&v, g));
            let decoded = r
                .as_ref()
                .map(|b| AsapMessage::decode(b, g).map(|d| d.message));
            assert!(
                matches!(r, Err(EncodeError::InvalidValue { .. })),
                "{g:?}: {m:?} encoded as {r:02x?}, which its own decoder answers with {decoded:?}"
            );
        }
    };
    // Spec: a pool handle has at least one byte; an operation error at least one cause; a
    // transport at least one address and only SCTP more than one; a positive handle resolution
    // and a business card at least one pool element (wire-format.md §3.2, §4).
    refused(&OAsap::Deregistration {
        pool_handle: vec![],
        pe_id: 1,
    });
    refused(&OAsap::Error(vec![]));
    let mut no_address = pe.clone();
    no_address.user_transport = OUserTransport::Transport(OTransport {
        kind: TransportKind::Sctp,
        port: 1,
        transport_use: 0,
        service_code: 0,
        addresses: vec![],
    });
    let mut two_udp = pe.clone();
    two_udp.user_transport = OUserTransport::Transport(OTransport {
        kind: TransportKind::Udp,
        port: 1,
        transport_use: 0,
        service_code: 0,
        addresses: vec![IpAddr::from([192, 0, 2, 1]), IpAddr::from([192, 0, 2, 2])],
    });
    for bad in [no_address, two_udp] {
        refused(&OAsap::Registration {
            pool_handle: b"P".to_vec(),
            pool_element: bad,
        });
    }
    refused(&OAsap::HandleResolutionResponse {
        accepted: false,
        pool_handle: b"P".to_vec(),
        resolution: OResolution::Found {
            policy: None,
            pool_elements: vec![],
        },
    });
    refused(&OAsap::BusinessCard {
        pool_handle: b"P".to_vec(),
        policy: Some(Policy::RoundRobin),
        pool_elements: vec![],
    });
    let htr = OEnrp {
        sender: 1,
        receiver: 2,
        body: OEnrpBody::HandleTableResponse {
            reject: false,
            more_to_send: false,
            entries: vec![(b"P".to_vec(), vec![])],
        },
    };
    for g in GENERATIONS {
        let r = htr.with_view(|v| encode_enrp(&v, g));
        assert!(matches!(r, Err(EncodeError::InvalidValue { .. })), "{r:?}");
    }
}

/// Encodes into a 128 KiB buffer (room for more than any legal message) and into a 64 KiB one
/// (room for any legal message): both agree on legal messages; an illegal one is `TooLong` in the
/// large buffer and an error in the small one (where the encoder may run out of room before it
/// sees that the length field overflows).
fn encode_big(
    encode: impl Fn(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<Vec<u8>, EncodeError> {
    let mut big = vec![0u8; 2 * 65536];
    let r = encode(&mut big).map(|n| big[..n].to_vec());
    let mut small = vec![0u8; 65536];
    let s = encode(&mut small).map(|n| small[..n].to_vec());
    match (&r, &s) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(EncodeError::TooLong { .. }), Err(EncodeError::TooLong { .. })) => {}
        (Err(EncodeError::TooLong { .. }), Err(EncodeError::BufferTooSmall { needed })) => {
            assert!(*needed > 65536)
        }
        other => panic!("{other:?}"),
    }
    r
}

/// Messages beyond the 16-bit length field are `TooLong`, never a truncated length field; the
/// largest ones that fit round-trip.
#[test]
fn oversized_messages_are_too_long() {
    for n in 65_490..=65_535usize {
        let cookie = vec![0xc5; n];
        for g in GENERATIONS {
            let r = encode_big(|buf| AsapMessage::Cookie(&cookie).encode(g, buf));
            if 4 + (4 + n).next_multiple_of(4) <= MAX_MESSAGE_LEN {
                let b = r.unwrap();
                assert_eq!(len_at(&b, 0), b.len());
                let d = AsapMessage::decode(&b, g).unwrap();
                assert_eq!(d.message, AsapMessage::Cookie(&cookie));
            } else {
                assert!(matches!(r, Err(EncodeError::TooLong { .. })), "{n}: {r:?}");
            }
        }
        let cause = [ErrorCause {
            code: cause::UNSPECIFIED,
            info: &cookie,
        }];
        let m = EnrpMessage {
            sender: PrId(1),
            receiver: PrId(2),
            body: EnrpBody::Error(Seq::from_items(&cause)),
        };
        let r = encode_big(|buf| m.encode(Generation::Rfc, buf));
        if 12 + 4 + (4 + n).next_multiple_of(4) <= MAX_MESSAGE_LEN {
            let b = r.unwrap();
            assert_eq!(len_at(&b, 0), b.len());
            assert_eq!(EnrpMessage::decode(&b, Generation::Rfc).unwrap().message, m);
        } else {
            assert!(matches!(r, Err(EncodeError::TooLong { .. })), "{n}: {r:?}");
        }
    }
    // Many small parameters add up past the limit too.
    let addr = [IpAddr::from([192, 0, 2, 1])];
    let t = TransportParam {
        kind: TransportKind::Tcp,
        port: 1,
        transport_use: 0,
        service_code: 0,
        addresses: Seq::from_items(&addr),
    };
    let ts = vec![t; 4096];
    let fits = (65_535 - 8) / 16;
    for (count, ok) in [(fits, true), (fits + 1, false), (4096, false)] {
        let m = AsapMessage::ServerAnnounce {
            server_id: PrId(7),
            transports: Seq::from_items(&ts[..count]),
        };
        let r = encode_big(|buf| m.encode(Generation::Rfc, buf));
        assert_eq!(r.is_ok(), ok, "{count} transports: {:?}", r.as_ref().err());
        if let Ok(b) = r {
            assert_eq!(AsapMessage::decode(&b, Generation::Rfc).unwrap().message, m);
        } else {
            assert!(matches!(r, Err(EncodeError::TooLong { .. })));
        }
    }
    // CSP: at most (65535 - 288) / 24 associations.
    let a = samples(&csp_association(), 1)[0];
    let assocs = vec![a; 2720];
    let max = (65_535 - csp::CSP_REPORT_FIXED_LEN) / csp::CSP_ASSOCIATION_LEN;
    for (count, ok) in [(max, true), (max + 1, false)] {
        let r = CspReport {
            final_report: false,
            sender_id: 1,
            timestamp_us: 2,
            report_interval_us: 3,
            location: b"here",
            status: b"fine",
            workload: 0xffff,
            associations: Seq::from_items(&assocs[..count]),
        };
        let e = encode_big(|buf| r.encode(buf));
        assert_eq!(e.is_ok(), ok);
        if let Ok(b) = e {
            assert_eq!(CspReport::decode(&b).unwrap(), r);
        } else {
            assert!(matches!(e, Err(EncodeError::TooLong { .. })));
        }
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    /// The policy and transport parameters encoded on their own (the info of causes 0x5 and 0x7)
    /// have the layout of the parameter inside a message, and an "Inconsistent Pooling Policy"
    /// cause gives its policy back.
    #[test]
    fn standalone_parameters_match_the_embedded_ones(
        p in policy(),
        t in transport(),
        code in any::<u16>(),
    ) {
        let mut buf = [0u8; 64];
        let n = encode_policy_parameter(&p, &mut buf)?;
        prop_assert_eq!(n, 8 + 4 * Policy::field_count(p.policy_type()).unwrap());
        prop_assert_eq!(len_at(&buf, 0), n);
        let info = &buf[..n];
        let c = ErrorCause { code, info };
        prop_assert_eq!(c.policy(), (code == cause::INCONSISTENT_POLICY).then_some(p));
        prop_assert!(encode_policy_parameter(&p, &mut buf[..n - 1]).is_err());

        let mut tb = [0u8; 512];
        let tn = encode_transport_parameter(&t.view(), &mut tb)?;
        prop_assert_eq!(len_at(&tb, 0), tn);
        let parsed = parse_params(&tb, 0, tn, Generation::Rfc, false);
        prop_assert_eq!(shape_of(&parsed), vec![transport_shape(&t)]);
        let no_policy = ErrorCause { code: cause::INCONSISTENT_POLICY, info: &tb[..tn] };
        prop_assert_eq!(no_policy.policy(), None);
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    /// A handle resolution response assembled from PE parameters encoded one by one is the
    /// response the message encoder writes, with the first PE's policy as the overall policy.
    #[test]
    fn resolution_responses_from_encoded_parts_match_the_encoder(
        g in prop::sample::select(GENERATIONS.to_vec()),
        accepted in any::<bool>(),
        pool_handle in pool_handle(),
        pool_elements in pool_elements(Generation::Ng),
    ) {
        let views: Vec<PoolElementParam<'_>> = pool_elements.iter().map(OPoolElement::view).collect();
        let message = AsapMessage::HandleResolutionResponse {
            accepted,
            pool_handle: PoolHandle(&pool_handle),
            resolution: Resolution::Found {
                policy: Some(views[0].policy),
                pool_elements: Seq::from_items(&views),
            },
        };
        let mut parts = Vec::new();
        let mut policy = None;
        for pe in &views {
            let mut buf = vec![0xa5u8; 4096];
            match asap::encode_pool_element_parameter(pe, g, &mut buf) {
                Ok((n, p)) => {
                    prop_assert_eq!(n % 4, 0);
                    prop_assert_eq!(len_at(&buf, 0), n);
                    policy.get_or_insert_with(|| buf[p].to_vec());
                    buf.truncate(n);
                    parts.push(buf);
                }
                Err(e) => {
                    // Only identifiers beyond 32 bits fail, and only in the RFC generation.
                    prop_assert!(matches!(e, EncodeError::IdTooWide { .. }), "{e}");
                    prop_assert_eq!(g, Generation::Rfc);
                    prop_assert!(encode_asap(&message, g).is_err());
                    return Ok(());
                }
            }
        }
        let want = encode_asap(&message, g)?;
        let mut got = vec![0x5au8; want.len()];
        let policy = policy.expect("at least one PE");
        let mut handle = vec![0xa5u8; pool_handle.len() + 8];
        let handle_len = encode_pool_handle_parameter(PoolHandle(&pool_handle), &mut handle)?;
        handle.truncate(handle_len);
        let n = asap::encode_resolution_response(
            accepted,
            &handle,
            &policy,
            parts.iter().map(Vec::as_slice),
            &mut got,
        )?;
        prop_assert_eq!(n, want.len());
        prop_assert_eq!(&got, &want);
        // One byte short is a typed error, not a panic.
        let short = asap::encode_resolution_response(
            accepted,
            &handle,
            &policy,
            parts.iter().map(Vec::as_slice),
            &mut got[..n - 1],
        );
        prop_assert!(matches!(short, Err(EncodeError::BufferTooSmall { .. })), "{short:?}");
    }
}

/// What the general decoder makes of `bytes` if [`asap::decode_plain_handle_resolution`]
/// accepts them: it must be the same request, with nothing to report.
fn plain_agrees_with_the_decoder(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let Some(plain) = asap::decode_plain_handle_resolution(bytes) else {
        return Ok(false);
    };
    for g in GENERATIONS {
        let decoded = AsapMessage::decode(bytes, g);
        let Ok(Decoded {
            message:
                AsapMessage::HandleResolution {
                    subscribe,
                    pool_handle,
                    items,
                },
            unrecognized,
        }) = decoded
        else {
            return Err(TestCaseError::fail(format!(
                "plain {plain:?}, decoder {decoded:?} for {bytes:02x?}"
            )));
        };
        prop_assert!(unrecognized.is_empty());
        prop_assert_eq!(
            plain,
            asap::HandleResolutionRequest {
                subscribe,
                pool_handle,
                items
            }
        );
    }
    Ok(true)
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Every handle resolution the encoder writes is read by the plain decoder, as the general
    /// decoder reads it; mutated, cut or extended ones are read alike or left to the general
    /// decoder.
    #[test]
    fn plain_handle_resolutions_decode_as_the_decoder_does(
        g in prop::sample::select(GENERATIONS.to_vec()),
        subscribe in any::<bool>(),
        pool_handle in pool_handle(),
        items in prop::option::of(any::<u32>()),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        tail in bytes(0, 12),
    ) {
        let message = AsapMessage::HandleResolution {
            subscribe,
            pool_handle: PoolHandle(&pool_handle),
            items,
        };
        let bytes = encode_asap(&message, g)?;
        prop_assert_eq!(
            asap::decode_plain_handle_resolution(&bytes),
            Some(asap::HandleResolutionRequest {
                subscribe,
                pool_handle: PoolHandle(&pool_handle),
                items
            })
        );
        prop_assert!(plain_agrees_with_the_decoder(&bytes)?);
        let mut mutated = bytes.clone();
        for (at, value) in &flips {
            let i = at.index(mutated.len());
            mutated[i] = *value;
        }
        plain_agrees_with_the_decoder(&mutated)?;
        plain_agrees_with_the_decoder(&mutated[..cut.index(mutated.len() + 1)])?;
        let mut extended = mutated;
        extended.extend_from_slice(&tail);
        let len = extended.len().min(0xffff) as u16;
        extended[2..4].copy_from_slice(&len.to_be_bytes());
        plain_agrees_with_the_decoder(&extended)?;
    }

    /// Arbitrary bytes with a handle resolution's type: the plain decoder never disagrees.
    #[test]
    fn plain_handle_resolutions_of_arbitrary_bytes(mut raw in bytes(0, 40), fix_length in any::<bool>()) {
        if raw.len() >= 4 {
            raw[0] = asap::message_type::HANDLE_RESOLUTION;
            if fix_length {
                let len = raw.len() as u16;
                raw[2..4].copy_from_slice(&len.to_be_bytes());
            }
        }
        plain_agrees_with_the_decoder(&raw)?;
    }
}
