//! ENRP start-up synchronisation in the state machine alone: a PR holding `N` PEs (mentor) brings
//! a PR with no state in sync over an in-memory link, page by page (RFC 5353 §3.2.3). Prints the
//! time from the new PR's first presence to its last page applied, and the pages exchanged.
//! No sockets: this is the core's share of a resync; the real-process figure adds the kernel.
//!
//! `cargo bench -p rserpool-registrar --bench resync -- [PES] [ng|rfc]` (default 1 000 000, ng;
//! 2 000 when `cargo test` runs it as a check).

use std::collections::VecDeque;
use std::time::Instant;

use rserpool_handlespace::{AssociationId, Limits, PeId, PrId};
use rserpool_protocol::url::{Transport as UrlTransport, TransportUrl};
use rserpool_protocol::{
    AsapMessage, Generation, Policy, PoolElementParam, PoolHandle, Seq, TransportKind,
    TransportParam, UserTransport,
};
use rserpool_registrar::core::in_memory::InMemoryPr;
use rserpool_registrar::core::{AssociationInfo, CoreConfig, EnrpConfig, Output, Target};
use rserpool_registrar::metrics::Protocol;

fn url(address: &str, generation: Generation) -> TransportUrl {
    TransportUrl {
        transport: UrlTransport::Tcp,
        address: address.parse().expect("address"),
        generation,
        tls: None,
    }
}

fn config(id: u64, own: TransportUrl, peers: Vec<TransportUrl>) -> CoreConfig {
    CoreConfig {
        enrp: EnrpConfig {
            local: vec![own],
            peers,
            max_pes_per_table_response: 512,
            ..EnrpConfig::default()
        },
        ..CoreConfig::new(PrId(id))
    }
}

fn info(protocol: Protocol, generation: Generation) -> AssociationInfo {
    AssociationInfo {
        transport: UrlTransport::Tcp,
        generation,
        peer_addresses: vec!["127.0.0.1:40000".parse().expect("address")],
        protocol,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this as a quick check.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let default = if benchmarking { 1_000_000 } else { 2_000 };
    let pes: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(default);
    let generation = match args.get(1).map(String::as_str) {
        Some("rfc") => Generation::Rfc,
        _ => Generation::Ng,
    };
    let mentor_url = url("127.0.0.1:9901", generation);
    let limits = Limits {
        max_pool_handle_len: 64,
        max_pools: 1 << 22,
        max_pes_per_pool: 1 << 16,
    };
    let mut mentor = InMemoryPr::new(1, config(1, mentor_url, Vec::new()), limits, 1);
    mentor.start(0);
    // 10 PEs per pool; a new association every 50 000 PEs (the per-association limit).
    let fill = Instant::now();
    let mut pe = mentor.open(0, info(Protocol::Asap, generation), 0);
    let ip = [std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1))];
    let mut buf = vec![0; 1024];
    for i in 0..pes {
        if i > 0 && i % 50_000 == 0 {
            pe = mentor.open(0, info(Protocol::Asap, generation), 0);
        }
        let handle = format!("pool-{:07}", i / 10);
        let message = AsapMessage::Registration {
            pool_handle: PoolHandle(handle.as_bytes()),
            pool_element: PoolElementParam {
                id: PeId(i + 1),
                home_pr: PrId(0),
                registration_life: -1,
                user_transport: UserTransport::Transport(TransportParam {
                    kind: TransportKind::Tcp,
                    port: 7000,
                    transport_use: 0,
                    service_code: 0,
                    addresses: Seq::from_items(&ip),
                }),
                policy: Policy::RoundRobin,
                asap_transport: None,
            },
        };
        let n = message.encode(generation, &mut buf).expect("encodable");
        mentor.message(pe, &buf[..n], 0);
    }
    eprintln!("mentor filled with {pes} PEs in {:?}", fill.elapsed());

    let mut fresh = InMemoryPr::new(
        1,
        config(2, url("127.0.0.1:9902", generation), vec![mentor_url]),
        limits,
        2,
    );
    let mut out = Output::default();
    let worker = &mut fresh.workers_mut()[0];
    worker.start(0);
    worker.on_timer(0, &mut out);
    let connect = out.connects()[0];
    out.clear();
    let at_fresh: AssociationId = connect.association;
    let at_mentor = mentor.open(0, info(Protocol::Enrp, generation), 0);

    let started = Instant::now();
    let mut to_mentor: VecDeque<Vec<u8>> = VecDeque::new();
    let mut pages = 0u64;
    // The longest time the mentor's worker 0 spent on one request: how long its other
    // associations (handle resolutions) waited at worst.
    let mut longest = std::time::Duration::ZERO;
    fresh.workers_mut()[0].connected(at_fresh, vec![mentor_url.address], 1, &mut out);
    loop {
        for (target, bytes) in out.transmits() {
            assert_eq!(target, Target::Association(at_fresh));
            to_mentor.push_back(bytes.to_vec());
        }
        out.clear();
        let Some(message) = to_mentor.pop_front() else {
            break;
        };
        let one = Instant::now();
        let replies = mentor.message(at_mentor, &message, 1);
        longest = longest.max(one.elapsed());
        for sent in replies {
            if sent.target != Target::Association(at_mentor) {
                continue;
            }
            if sent.bytes[0] == rserpool_protocol::enrp::message_type::HANDLE_TABLE_RESPONSE {
                pages += 1;
            }
            fresh.workers_mut()[0].on_message(at_fresh, &sent.bytes, 1, &mut out);
        }
    }
    let elapsed = started.elapsed();
    let synced = fresh.workers()[0].shard().pe_count();
    assert!(
        fresh.workers()[0].enrp_live(),
        "the new PR finished start-up"
    );
    assert_eq!(synced as u64, pes, "every PE arrived");
    println!(
        "resync of {pes} PEs ({generation:?}): {elapsed:?} in {pages} pages, {:.0} PEs/s; \
         longest request at the mentor: {longest:?}",
        pes as f64 / elapsed.as_secs_f64()
    );
}
