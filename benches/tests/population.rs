//! `register --population` and `storm` end to end with the real daemon (built next to this test
//! by `cargo test --workspace`, or `cargo build -p rserpool-registrar`): every PE of the
//! population answered and held by the registrar, the ten tenths timed, the registrar's memory
//! read; `resolve`'s setup with a weighted policy; and the population driver alone against the
//! built-in echo server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rserpool_bench::echo::{EchoReply, EchoServer};
use rserpool_bench::load::Poll;
use rserpool_bench::net::StreamTransport;
use rserpool_bench::population::{self, BANDS, PopulationSpec, Share};
use rserpool_bench::workload::{self, Check, PeIds, PeRecord, PolicyKind};
use rserpool_protocol::Generation;
use serde_json::Value;

mod common;

/// Runs `rserpool-bench` with `args` and `--spawn` (see [`common::report`]).
fn bench(args: &[&str]) -> Value {
    common::registrar_bin();
    common::report(&[args, &["--spawn"]].concat())
}

/// Checks that every PE of `population` was answered, accepted and held by the registrar.
fn every_pe_registered(v: &Value, population: u64) {
    let p = &v["population"];
    assert_eq!(p["population"], population, "{v}");
    assert_eq!(p["answered"], population, "{v}");
    assert_eq!(
        (p["unanswered"].clone(), p["completed"].clone()),
        (0.into(), true.into())
    );
    assert_eq!(p["ended"], "all answered");
    assert_eq!(v["ops"], population, "every registration accepted: {v}");
    assert_eq!(
        (v["rejections"].clone(), v["errors"].clone()),
        (0.into(), 0.into())
    );
    assert_eq!(v["totals"]["registrations_accepted"], population);
    assert_eq!(
        v["totals"]["deregistrations"], population,
        "cleaned up: {v}"
    );
    assert_eq!(p["registrar_pes"], population, "the registrar's gauge: {v}");
    let rss = &p["rss"];
    assert!(
        rss["after_bytes"].as_u64().unwrap() > rss["before_bytes"].as_u64().unwrap(),
        "the registrar grew: {v}"
    );
    assert!(rss["per_pe_bytes"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn new_pes_fill_their_pools_and_every_tenth_is_timed() {
    let v = bench(&[
        "register",
        "--population",
        "2000",
        "--pool-elements",
        "500",
        "--connections",
        "4",
        "--pipeline",
        "16",
        "--policy",
        "lu",
    ]);
    every_pe_registered(&v, 2000);
    let p = &v["population"];
    assert_eq!(
        (p["pools"].clone(), p["policy"].clone()),
        (4.into(), "lu".into())
    );
    assert_eq!(p["all_at_once"], false);
    let bands = p["bands"].as_array().unwrap();
    assert_eq!(bands.len(), BANDS);
    for (k, band) in bands.iter().enumerate() {
        assert_eq!(band["from_percent"], k * 10);
        assert_eq!(band["pes"], 200, "{band}");
        assert!(band["per_s"].as_f64().unwrap() > 0.0, "{band}");
    }
    assert!(v["ops_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_storm_of_fifty_associations_is_answered_completely() {
    let v = bench(&[
        "storm",
        "--population",
        "20000",
        "--connections",
        "50",
        "--pool-elements",
        "1000",
    ]);
    every_pe_registered(&v, 20_000);
    let p = &v["population"];
    assert_eq!(
        (p["pools"].clone(), p["all_at_once"].clone()),
        (20.into(), true.into())
    );
    assert_eq!(v["connections"], 50);
    assert_eq!(v["pipeline"], 400, "all of an association's PEs at once");
}

#[test]
fn resolve_preloads_one_pool_with_a_weighted_policy() {
    let v = bench(&[
        "resolve",
        "--pools",
        "1",
        "--pool-elements",
        "3000",
        "--policy",
        "wrand",
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--connections",
        "2",
        "--pipeline",
        "4",
    ]);
    assert_eq!(v["setup"]["registrations_accepted"], 3000, "{v}");
    assert!(v["ops"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["errors"], 0, "every resolution found PEs: {v}");
    // A resolution of a weighted-random pool carries the policy with each PE's weight.
    assert!(v["mean_reply_bytes"].as_f64().unwrap() > 40.0, "{v}");
}

#[test]
fn the_driver_writes_everything_at_once_and_gets_every_echo() {
    let bind = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let server = EchoServer::start(StreamTransport::Tcp, bind, EchoReply::Mirror, None).unwrap();
    let mut ids = PeIds::new();
    let shares: Vec<Share> = (0..8)
        .map(|c| {
            let mut share = Share::default();
            for n in 0..1000 {
                let pe = PeRecord {
                    pool: workload::pool_handle(n % 10),
                    id: ids.fresh(),
                    policy: PolicyKind::Prio.for_pe(n),
                };
                let port = workload::pe_port(c * 1000 + n);
                workload::push_registration(
                    &mut share.registrations,
                    &pe,
                    bind.ip(),
                    port,
                    Generation::Rfc,
                )
                .unwrap();
            }
            share
        })
        .collect();
    let spec = PopulationSpec {
        window: None,
        threads: 2,
        limit: Duration::from_secs(30),
        settle: Duration::ZERO,
        poll: Poll::Block,
        progress: false,
        label: "echo".into(),
    };
    let (mut connected, mut ended) = (false, false);
    let outcome = population::run(
        &server.endpoint(),
        &spec,
        shares,
        Check::Echo,
        || connected = true,
        || ended = true,
    )
    .unwrap();
    assert!(connected && ended);
    assert_eq!((outcome.answered, outcome.unanswered()), (8000, 0));
    assert!(outcome.completed);
    assert_eq!(outcome.stats.ops, 8000);
    assert_eq!(outcome.stats.errors, 0);
    assert_eq!(outcome.bands.len(), BANDS);
    assert!(
        outcome
            .bands
            .iter()
            .all(|&(pes, s)| pes == 800 && s.is_some()),
        "{:?}",
        outcome.bands
    );
    assert!(outcome.seconds > 0.0 && outcome.seconds < 30.0);
    assert_eq!(outcome.connections, 8);
    server.stop().unwrap();
}
