//! ASAP subscriptions (RFC 5352 §2.2.5-6) against the real daemon: the shipped `default`
//! profile with its default worker count (one per core), over TCP, with a raw client built on
//! the codec. A subscriber watches pools spread over the workers' shards while a PE connection
//! registers and deregisters PEs in them; every push carries the A bit and the pool's PEs, and
//! closing the subscriber frees its subscriptions.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use rserpool_protocol::{AsapMessage, Generation, PeId, PoolHandle, cause};

const RFC: Generation = Generation::Rfc;

/// The `default` profile as shipped, on ephemeral loopback ports (the profile's fixed ports
/// would collide with other tests), with the profile's worker count and, unless `driver` names
/// one, its I/O driver.
fn daemon(driver: Option<&str>) -> Daemon {
    let mut args = vec![
        "--profile",
        "default",
        "--asap",
        "tcp://127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ];
    if let Some(driver) = driver {
        args.extend(["--driver", driver]);
    }
    Daemon::start(&args)
}

fn subscribe(handle: &[u8]) -> Vec<u8> {
    encode(
        &AsapMessage::HandleResolution {
            subscribe: true,
            pool_handle: PoolHandle(handle),
            items: Some(16),
        },
        RFC,
    )
}

/// The pool, A bit and PE IDs (or cause) of a resolution response.
fn response(bytes: &[u8]) -> (Vec<u8>, bool, Result<Vec<u64>, u16>) {
    let accepted = match AsapMessage::decode(bytes, RFC).expect("decodable").message {
        AsapMessage::HandleResolutionResponse { accepted, .. } => accepted,
        other => panic!("not a resolution response: {other:?}"),
    };
    let pool = match AsapMessage::decode(bytes, RFC).unwrap().message {
        AsapMessage::HandleResolutionResponse { pool_handle, .. } => pool_handle.0.to_vec(),
        _ => unreachable!(),
    };
    (pool, accepted, resolved(bytes, RFC))
}

/// Reads pushes until each pool's latest one is what `expected` says (every push with the A
/// bit); panics with what arrived after 10 s.
fn await_pushes(
    pu: &mut StreamClient,
    latest: &mut BTreeMap<Vec<u8>, Result<Vec<u64>, u16>>,
    expected: &BTreeMap<Vec<u8>, Result<Vec<u64>, u16>>,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pushes = 0;
    while latest != expected {
        assert!(
            Instant::now() < deadline,
            "pushes stopped short: have {latest:?}, want {expected:?}"
        );
        let (pool, accepted, result) = response(&pu.recv_bytes());
        assert!(accepted, "a push without the A bit for {pool:?}");
        latest.insert(pool, result);
        pushes += 1;
    }
    pushes
}

fn scenario(driver: Option<&str>) {
    let d = daemon(driver);
    let tcp = d.address("tcp://", false);
    // One worker per usable core, as the profile says (the registrar's own count).
    let workers = rserpool_net::usable_cores();
    assert!(
        eventually(
            Duration::from_secs(5),
            || d.metric("rserpool_workers_running") as usize == workers
        ),
        "{workers} workers running"
    );
    // Pools in every worker's shard (one per core, as the profile says).
    let pools: Vec<Vec<u8>> = (0..8).map(|i| format!("sub-{i}").into_bytes()).collect();
    let shards: std::collections::BTreeSet<usize> = pools
        .iter()
        .map(|p| rserpool_handlespace::shard_index(p, workers.max(1)))
        .collect();
    assert_eq!(shards.len(), workers.clamp(1, 8), "pools cover the shards");

    let mut pe = StreamClient::tcp(tcp, RFC);
    for (i, pool) in pools.iter().enumerate() {
        pe.send_raw(&registration(pool, 100 + i as u64, 60_000, RFC));
        assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    }

    let mut pu = StreamClient::tcp(tcp, RFC);
    let mut latest = BTreeMap::new();
    for (i, pool) in pools.iter().enumerate() {
        pu.send_raw(&subscribe(pool));
        let (handle, a_bit, result) = response(&pu.recv_bytes());
        assert_eq!(handle, *pool);
        assert!(a_bit, "the A bit answers the S bit");
        assert_eq!(result, Ok(vec![100 + i as u64]));
        latest.insert(handle, result);
    }
    pu.send_raw(&subscribe(b"sub-absent"));
    let (handle, a_bit, result) = response(&pu.recv_bytes());
    assert!(a_bit, "a pool that does not exist yet is subscribed too");
    assert_eq!(result, Err(cause::UNKNOWN_POOL_HANDLE));
    latest.insert(handle, result);
    assert!(eventually(Duration::from_secs(5), || d
        .metric("rserpool_subscriptions ")
        == 9.0));

    // A second PE in every pool, and the absent pool appears.
    let mut expected = latest.clone();
    for (i, pool) in pools.iter().enumerate() {
        pe.send_raw(&registration(pool, 200 + i as u64, 60_000, RFC));
        assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
        expected.insert(pool.clone(), Ok(vec![100 + i as u64, 200 + i as u64]));
    }
    pe.send_raw(&registration(b"sub-absent", 300, 60_000, RFC));
    assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    expected.insert(b"sub-absent".to_vec(), Ok(vec![300]));
    let mut pushes = await_pushes(&mut pu, &mut latest, &expected);

    // The first PEs deregister; the absent pool's PE too (the pool goes away).
    for (i, pool) in pools.iter().enumerate() {
        let id = 100 + i as u64;
        pe.send(&AsapMessage::Deregistration {
            pool_handle: PoolHandle(pool),
            pe_id: PeId(id),
        });
        pe.recv_answering_keep_alives();
        expected.insert(pool.clone(), Ok(vec![200 + i as u64]));
    }
    pe.send(&AsapMessage::Deregistration {
        pool_handle: PoolHandle(b"sub-absent"),
        pe_id: PeId(300),
    });
    pe.recv_answering_keep_alives();
    expected.insert(b"sub-absent".to_vec(), Err(cause::UNKNOWN_POOL_HANDLE));
    pushes += await_pushes(&mut pu, &mut latest, &expected);
    assert!(
        eventually(Duration::from_secs(5), || d
            .metric("rserpool_subscription_pushes_total")
            == pushes as f64),
        "every push counted: {pushes}"
    );
    assert_eq!(d.metric("rserpool_subscriptions_accepted_total"), 9.0);

    // Closing the subscriber frees its subscriptions on every worker.
    drop(pu);
    assert!(
        eventually(Duration::from_secs(5), || d
            .metric("rserpool_subscriptions ")
            == 0.0),
        "subscriptions freed"
    );
    // Changes after the close push nothing (and the daemon keeps serving).
    for (i, pool) in pools.iter().enumerate() {
        pe.send_raw(&registration(pool, 400 + i as u64, 60_000, RFC));
        assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    }
    assert_eq!(
        d.metric("rserpool_subscription_pushes_total"),
        pushes as f64
    );
}

#[test]
fn pushes_follow_pools_on_every_worker_with_the_default_profile() {
    scenario(None);
}

#[test]
fn pushes_follow_pools_on_every_worker_with_epoll() {
    scenario(Some("epoll"));
}
