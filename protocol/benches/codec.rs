//! Codec benchmarks: decode and encode of the messages on the registrar's hot path (registration,
//! handle resolution, handle resolution response with 3 PEs), RFC and NG generations. Targets on
//! one core: ≥ 20 M handle-resolution decodes/s, ≥ 5 M encodes/s of a 3-PE response.
//!
//! Each message is also copied as raw bytes (`copy/...`), the floor the codec is compared with in
//! the same run.
//!
//! Run: `cargo bench -p rserpool-protocol --bench codec`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rserpool_protocol::*;

const ADDRS: [[IpAddr; 1]; 3] = [
    [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))],
    [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))],
    [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3))],
];

fn pe(i: usize, home: u64) -> PoolElementParam<'static> {
    PoolElementParam {
        id: PeId(0x1000 + i as u64),
        home_pr: PrId(home),
        registration_life: 300_000,
        user_transport: UserTransport::Transport(TransportParam {
            kind: TransportKind::Sctp,
            port: 7,
            transport_use: TRANSPORT_USE_DATA_ONLY,
            service_code: 0,
            addresses: Seq::from_items(&ADDRS[i]),
        }),
        policy: Policy::LeastUsed { load: 0x1000 },
        asap_transport: None,
    }
}

fn messages<'a>(pes: &'a [PoolElementParam<'a>]) -> [(&'static str, AsapMessage<'a>); 3] {
    let handle = PoolHandle(b"EchoPool");
    [
        (
            "registration",
            AsapMessage::Registration {
                pool_handle: handle,
                pool_element: PoolElementParam {
                    home_pr: PrId(0),
                    ..pes[0]
                },
            },
        ),
        (
            "handle_resolution",
            AsapMessage::HandleResolution {
                subscribe: false,
                pool_handle: handle,
                items: Some(3),
            },
        ),
        (
            "handle_resolution_response_3pe",
            AsapMessage::HandleResolutionResponse {
                accepted: false,
                pool_handle: handle,
                resolution: Resolution::Found {
                    policy: Some(Policy::LeastUsed { load: 0x1000 }),
                    pool_elements: Seq::from_items(pes),
                },
            },
        ),
    ]
}

/// Touches every field a registrar reads, so the benchmark includes walking the lazy lists.
fn consume(m: &AsapMessage<'_>) -> u64 {
    match m {
        AsapMessage::Registration {
            pool_handle,
            pool_element,
        } => {
            let UserTransport::Transport(t) = pool_element.user_transport else {
                return 0;
            };
            pool_handle.0.len() as u64
                + pool_element.id.0
                + t.addresses
                    .iter()
                    .map(|a| matches!(a, IpAddr::V4(_)) as u64)
                    .sum::<u64>()
        }
        AsapMessage::HandleResolution {
            pool_handle, items, ..
        } => pool_handle.0.len() as u64 + u64::from(items.unwrap_or(0)),
        AsapMessage::HandleResolutionResponse {
            resolution: Resolution::Found { pool_elements, .. },
            ..
        } => pool_elements.iter().map(|p| p.id.0).sum(),
        _ => 0,
    }
}

fn bench(c: &mut Criterion) {
    let pes = [pe(0, 0x0a0b_0c0d), pe(1, 0x0a0b_0c0d), pe(2, 0x0a0b_0c0d)];
    for generation in [Generation::Rfc, Generation::Ng] {
        let tag = match generation {
            Generation::Rfc => "rfc",
            Generation::Ng => "ng",
        };
        let mut group = c.benchmark_group(format!("codec_{tag}"));
        group.throughput(Throughput::Elements(1));
        for (name, msg) in messages(&pes) {
            let mut buf = [0u8; 512];
            let len = msg.encode(generation, &mut buf).unwrap();
            let wire = buf[..len].to_vec();
            group.bench_function(format!("decode/{name}"), |b| {
                b.iter(|| {
                    let d = AsapMessage::decode(black_box(&wire), generation).unwrap();
                    consume(&d.message)
                })
            });
            // The floor both are measured against in the same run: copying the message's bytes.
            group.bench_function(format!("copy/{name}"), |b| {
                let mut out = [0u8; 512];
                b.iter(|| {
                    let src = black_box(&wire[..]);
                    out[..src.len()].copy_from_slice(src);
                    black_box(&out);
                })
            });
            group.bench_function(format!("encode/{name}"), |b| {
                let mut out = [0u8; 512];
                b.iter(|| {
                    black_box(&msg)
                        .encode(generation, black_box(&mut out))
                        .unwrap()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
