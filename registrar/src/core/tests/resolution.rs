//! Handle resolution (RFC 5352 §3.3; checklist PA-13, PA-14): item counts, round robin, requests
//! over UDP, NG PEs invisible to RFC PUs, and responses assembled from encoded PEs that are the
//! encoder's bytes.

use std::net::{IpAddr, SocketAddr};

use rserpool_handlespace::PeId;
use rserpool_protocol::{
    AsapMessage, Generation, Policy, PoolHandle, Resolution, TransportKind, UserTransport, cause,
};

use super::{
    PE_IP, PE_IP2, cluster, encode, info, registration, registration_outcome,
    registration_outcome_in, registration_with, resolution, resolved,
};
use crate::core::Target;
use crate::core::in_memory::{InMemoryPr, Sent};

#[test]
fn pa13_pa14_item_count_follows_the_option_the_default_and_the_cap() {
    let mut pr = cluster(2);
    let a = pr.open(0, info(Generation::Rfc), 0);
    for id in 1..=200 {
        pr.message(a, &registration(b"big", id, Policy::RoundRobin), 0);
    }
    let count = |pr: &mut InMemoryPr, items| {
        resolved(&pr.message(a, &resolution(b"big", items), 0))
            .unwrap()
            .0
            .len()
    };
    assert_eq!(count(&mut pr, None), 3, "RSPLIB's default");
    assert_eq!(count(&mut pr, Some(7)), 7);
    assert_eq!(count(&mut pr, Some(1)), 1);
    assert_eq!(count(&mut pr, Some(u32::MAX)), 128, "capped at 128");
    assert_eq!(
        resolved(&pr.message(a, &resolution(b"nothing", None), 0)),
        Err(cause::UNKNOWN_POOL_HANDLE)
    );
}

#[test]
fn round_robin_resolutions_rotate_through_the_pool() {
    let mut pr = cluster(1);
    let a = pr.open(0, info(Generation::Rfc), 0);
    for id in 1..=3 {
        pr.message(a, &registration(b"rr", id, Policy::RoundRobin), 0);
    }
    let firsts: Vec<u64> = (0..6)
        .map(|_| {
            resolved(&pr.message(a, &resolution(b"rr", Some(1)), 0))
                .unwrap()
                .0[0]
        })
        .collect();
    assert_eq!(firsts[..3], firsts[3..], "a cycle of three");
    let mut cycle = firsts[..3].to_vec();
    cycle.sort_unstable();
    assert_eq!(cycle, [1, 2, 3], "every PE once per cycle");
}

#[test]
fn udp_serves_resolutions_and_refuses_registrations() {
    let mut pr = cluster(2);
    let pe = pr.open(0, info(Generation::Rfc), 0);
    pr.message(pe, &registration(b"udp", 1, Policy::RoundRobin), 0);
    let from: SocketAddr = "127.0.0.1:5555".parse().unwrap();
    let sent = pr.datagram(1, Generation::Rfc, from, &resolution(b"udp", None), 0);
    assert_eq!(
        sent[0].target,
        Target::UdpReply {
            listener: 0,
            to: from
        }
    );
    assert_eq!(resolved(&sent), Ok((vec![1], Some(Policy::RoundRobin))));
    let sent = pr.datagram(
        1,
        Generation::Rfc,
        from,
        &registration(b"udp", 2, Policy::RoundRobin),
        0,
    );
    assert_eq!(
        registration_outcome(&sent),
        (true, Some(cause::REJECTED_SECURITY))
    );
}

#[test]
fn ng_pes_with_wide_ids_are_invisible_to_rfc_pus() {
    let mut pr = cluster(2);
    let ng = pr.open(0, info(Generation::Ng), 0);
    let rfc = pr.open(1, info(Generation::Rfc), 0);
    let wide = 0x1_0000_0001;
    let reg = registration_with(
        b"g",
        wide,
        Policy::Random,
        TransportKind::Sctp,
        0,
        &[PE_IP],
        30_000,
        Generation::Ng,
    );
    let sent = pr.message(ng, &reg, 0);
    let AsapMessage::RegistrationResponse {
        rejected, pe_id, ..
    } = AsapMessage::decode(&sent[0].bytes, Generation::Ng)
        .unwrap()
        .message
    else {
        panic!()
    };
    assert_eq!((rejected, pe_id), (false, PeId(wide)));
    assert_eq!(
        resolved(&pr.message(rfc, &resolution(b"g", None), 0)),
        Err(cause::UNKNOWN_POOL_HANDLE)
    );
    let ng_request = encode(
        &AsapMessage::HandleResolution {
            subscribe: false,
            pool_handle: PoolHandle(b"g"),
            items: None,
        },
        Generation::Ng,
    );
    let sent = pr.message(ng, &ng_request, 0);
    let AsapMessage::HandleResolutionResponse {
        resolution: Resolution::Found { pool_elements, .. },
        ..
    } = AsapMessage::decode(&sent[0].bytes, Generation::Ng)
        .unwrap()
        .message
    else {
        panic!()
    };
    assert_eq!(pool_elements.iter().next().unwrap().id, PeId(wide));
    // An RFC pool handle is at most 32 bytes.
    let long = registration(&[b'h'; 33], 1, Policy::Random);
    assert_eq!(
        registration_outcome(&pr.message(rfc, &long, 0)),
        (true, Some(cause::INVALID_VALUES))
    );
}

/// The response a PU gets, decoded and encoded again by the codec: it must come back the same
/// bytes, whether the worker assembled it from encoded PEs or encoded it whole.
fn assert_canonical(sent: &[Sent], generation: Generation) -> Vec<(u64, Vec<IpAddr>)> {
    assert_eq!(sent.len(), 1, "one response: {sent:?}");
    let bytes = &sent[0].bytes;
    let message = AsapMessage::decode(bytes, generation)
        .expect("decodable")
        .message;
    assert_eq!(&encode(&message, generation), bytes, "the encoder's bytes");
    let AsapMessage::HandleResolutionResponse {
        resolution: Resolution::Found {
            policy,
            pool_elements,
        },
        ..
    } = message
    else {
        panic!("expected PEs, got {message:?}");
    };
    let pool_elements: Vec<_> = pool_elements.iter().collect();
    assert_eq!(
        policy,
        Some(pool_elements[0].policy),
        "the first PE's policy"
    );
    pool_elements
        .iter()
        .map(|pe| match &pe.user_transport {
            UserTransport::Transport(t) => (pe.id.0, t.addresses.iter().collect()),
            UserTransport::Opaque(_) => (pe.id.0, Vec::new()),
        })
        .collect()
}

#[test]
fn resolution_responses_are_the_encoders_bytes_and_follow_changes() {
    // Pools up to `encoded::MAX_LARGE_PES` are answered from the worker's encoded PEs (those
    // beyond `encoded::MAX_CACHED_PES` from its large slots), larger pools are encoded per
    // response: all must give the same bytes.
    for (pool_size, generation) in [
        (3u64, Generation::Rfc),
        (3, Generation::Ng),
        (
            crate::core::encoded::MAX_CACHED_PES as u64 + 2,
            Generation::Rfc,
        ),
        (
            crate::core::encoded::MAX_LARGE_PES as u64 + 2,
            Generation::Ng,
        ),
    ] {
        let mut pr = cluster(2);
        let a = pr.open(0, info(generation), 0);
        let handle = b"bytes";
        let register = |id: u64, weight: u32, ip: IpAddr| {
            let policy = Policy::WeightedRoundRobin { weight };
            registration_with(
                handle,
                id,
                policy,
                TransportKind::Sctp,
                0,
                &[ip],
                30_000,
                generation,
            )
        };
        for id in 1..=pool_size {
            let sent = pr.message(a, &register(id, id as u32, PE_IP), 0);
            assert_eq!(registration_outcome_in(&sent, generation), (false, None));
        }
        let resolve = encode(
            &AsapMessage::HandleResolution {
                subscribe: false,
                pool_handle: PoolHandle(handle),
                items: Some(pool_size as u32),
            },
            generation,
        );
        let before = assert_canonical(&pr.message(a, &resolve, 0), generation);
        assert_eq!(before.len() as u64, pool_size.min(128));
        assert!(before.iter().all(|(_, ips)| ips == &[PE_IP]));
        // PE 2 moves to another address: no response may show the old one.
        pr.message(a, &register(2, 9, PE_IP2), 0);
        for _ in 0..3 {
            let after = assert_canonical(&pr.message(a, &resolve, 0), generation);
            for (id, ips) in after {
                let want = if id == 2 { PE_IP2 } else { PE_IP };
                assert_eq!(ips, [want], "PE {id} of a pool of {pool_size}");
            }
        }
    }
}
