//! Batched handle resolution (`PinnedReader::resolve_batch`): it must select exactly what
//! `PinnedReader::resolve` selects for each request in order, with the same random draws and the
//! same cursor and degradation advances (a property test over two handlespaces built alike), and
//! it must stay within each snapshot it reads while a writer changes the pools (a stress test).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rserpool_handlespace::policy::MAX_SELECTION;
use rserpool_handlespace::{
    Handlespace, Limits, OwnedTransport, OwnedUserTransport, PeId, PeRegistration, PrId,
    ResolveRequest, Rng,
};
use rserpool_protocol::{Policy, TransportKind};

/// Longest the stress test may run before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(30);

/// Raises `flag` when dropped, also by a panicking thread, so the other threads stop.
struct RaiseOnDrop<'a>(&'a AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A policy of family `kind` (one per pool: its first PE fixes the policy type) with per-PE
/// parameters drawn from `a` and `b`.
fn policy(kind: u8, a: u32, b: u32) -> Policy {
    match kind % 13 {
        0 => Policy::RoundRobin,
        1 => Policy::WeightedRoundRobin { weight: a % 4 },
        2 => Policy::Random,
        3 => Policy::WeightedRandom { weight: a % 4 },
        4 => Policy::Priority { priority: a % 3 },
        5 => Policy::LeastUsed { load: a % 3 * 1000 },
        6 => Policy::LeastUsedDegradation {
            load: a % 3 * 1000,
            load_degradation: b % 700,
        },
        7 => Policy::PriorityLeastUsed {
            load: a % 3 * 1000,
            load_degradation: b % 700,
        },
        8 => Policy::RandomizedLeastUsed { load: a },
        9 => Policy::RandomizedLeastUsedDegradation {
            load: a,
            load_degradation: b,
        },
        10 => Policy::WeightedRandomDpf {
            weight: a % 5,
            weight_dpf: b,
            distance: a % 50,
        },
        11 => Policy::LeastUsedDpf {
            load: a % 3 * 1000,
            load_dpf: b % 100,
            distance: a % 50,
        },
        _ => Policy::LeastUsedDegradationDpf {
            load: a % 3 * 1000,
            load_degradation: b % 700,
            load_dpf: b % 100,
            distance: a % 50,
        },
    }
}

fn registration(id: u64, policy: Policy) -> PeRegistration {
    PeRegistration {
        id: PeId(id),
        registration_life: -1,
        user_transport: OwnedUserTransport::Transport(OwnedTransport {
            kind: TransportKind::Sctp,
            port: 1024 + (id % 50_000) as u16,
            transport_use: 0,
            service_code: 0,
            addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, (id % 250) as u8))].into(),
        }),
        policy,
        asap_transport: None,
    }
}

/// The handle of pool `i` (short ones are stored inline in the read side's map, long ones not).
fn handle(i: usize) -> Vec<u8> {
    let mut h = format!("pool-{i}").into_bytes();
    if i % 2 == 1 {
        h.resize(32, b'.');
    }
    h
}

/// A handlespace with pool `i` of `pools[i] = (policy kind, PEs)`, its PEs' parameters drawn
/// from `seed`: the same arguments build the same handlespace.
fn build(pools: &[(u8, usize)], shards: usize, seed: u64) -> Handlespace {
    let mut hs = Handlespace::new(shards, Limits::default());
    let mut rng = Rng::seed(seed);
    for (i, &(kind, pes)) in pools.iter().enumerate() {
        for j in 0..pes {
            let id = (i as u64) * 1000 + j as u64 + 1;
            let p = policy(kind, rng.next_u64() as u32, rng.next_u64() as u32);
            hs.register(&handle(i), registration(id, p), PrId(1), None, 0)
                .expect("valid registration");
        }
    }
    hs
}

/// What a resolution gave: `None` for an unknown pool, else the selected PEs' identifiers.
type Outcome = Option<Vec<PeId>>;

/// The pools' selection state as later resolutions see it: every PE's degradation counter, and
/// what one more resolution of every pool (all PEs, fixed draws) selects, which depends on the
/// cursor.
fn state_of(hs: &Handlespace, pools: usize) -> Vec<(Vec<u32>, Outcome)> {
    let pinned = hs.reader().pin();
    let mut rng = Rng::seed(99);
    let mut selection = [0u32; MAX_SELECTION];
    (0..pools)
        .map(|i| {
            let h = handle(i);
            let degradation = pinned
                .read(&h, |s| {
                    (0..s.len()).map(|r| s.degradation(r)).collect::<Vec<u32>>()
                })
                .unwrap_or_default();
            let next = pinned.resolve(&h, &mut rng, &mut selection, |s, picked| {
                picked.iter().map(|&r| s.entry(r as usize).id()).collect()
            });
            (degradation, next)
        })
        .collect()
}

fn pool_size() -> impl Strategy<Value = usize> {
    // Mostly one leaf (up to 19 PEs), sometimes a deeper tree, and more PEs than one
    // resolution returns.
    prop_oneof![4 => 1usize..20, 2 => 20usize..60, 1 => 100usize..200]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// `resolve_batch` = `resolve` per request, in order: same selections, same random draws,
    /// same cursor and degradation advances; unknown pools included; items from 0 to
    /// `MAX_SELECTION`; batches shorter and longer than its group of 16.
    #[test]
    fn batch_resolves_as_one_by_one(
        pools in prop::collection::vec((0u8..13, pool_size()), 1..10),
        requests in prop::collection::vec((0usize..12, prop_oneof![0usize..=5, 0usize..=MAX_SELECTION]), 0..70),
        shards in 1usize..4,
        seed: u64,
    ) {
        let one_by_one = build(&pools, shards, seed);
        let batched = build(&pools, shards, seed);
        let handles: Vec<Vec<u8>> = requests.iter().map(|&(p, _)| handle(p)).collect();

        let mut rng_one = Rng::seed(seed ^ 0x5eed);
        let mut expected: Vec<Outcome> = Vec::new();
        {
            let pinned = one_by_one.reader().pin();
            let mut selection = [0u32; MAX_SELECTION];
            for (h, &(_, items)) in handles.iter().zip(&requests) {
                expected.push(pinned.resolve(h, &mut rng_one, &mut selection[..items], |s, picked| {
                    picked.iter().map(|&r| s.entry(r as usize).id()).collect()
                }));
            }
        }

        let mut rng_batch = Rng::seed(seed ^ 0x5eed);
        let batch: Vec<ResolveRequest<'_>> = handles
            .iter()
            .zip(&requests)
            .map(|(h, &(_, items))| ResolveRequest { pool_handle: h, items })
            .collect();
        let mut got: Vec<Outcome> = Vec::new();
        batched.reader().pin().resolve_batch(&batch, &mut rng_batch, |index, s, picked| {
            assert_eq!(index, got.len(), "requests answered in order");
            got.push(s.map(|s| picked.iter().map(|&r| s.entry(r as usize).id()).collect()));
        });

        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(&rng_batch, &rng_one);
        prop_assert_eq!(state_of(&batched, pools.len()), state_of(&one_by_one, pools.len()));
    }
}

/// One writer registers and deregisters PEs (pools come and go) while readers resolve batches:
/// no panic, every batch answers each request once and in order, and every selected index lies
/// within the entries of the snapshot it was selected from, without repeats.
#[test]
fn batches_stay_within_their_snapshots_while_a_writer_changes_the_pools() {
    const POOLS: usize = 24;
    const WRITES: u64 = 60_000;
    let mut hs = Handlespace::new(2, Limits::default());
    let reader = hs.reader().clone();
    let stop = AtomicBool::new(false);
    let resolved = AtomicU64::new(0);
    let start = Instant::now();
    thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let _done = RaiseOnDrop(&stop);
            let mut rng = Rng::seed(1);
            for step in 0..WRITES {
                let pool = rng.below(POOLS as u64) as usize;
                // Pool `pool`'s policy family is fixed by its index; PE IDs 1..=40 per pool.
                let id = PeId(pool as u64 * 1000 + rng.below(40) + 1);
                if rng.below(3) == 0 {
                    hs.deregister(&handle(pool), id, None)
                        .expect("valid deregistration");
                } else {
                    let p = policy(pool as u8, rng.next_u64() as u32, rng.next_u64() as u32);
                    hs.register(&handle(pool), registration(id.0, p), PrId(1), None, step)
                        .expect("valid registration");
                }
                if start.elapsed() > DEADLINE {
                    break;
                }
            }
        });
        let readers: Vec<_> = (0..2u64)
            .map(|t| {
                let reader = reader.clone();
                let (stop, resolved) = (&stop, &resolved);
                scope.spawn(move || {
                    let mut rng = Rng::seed(100 + t);
                    let mut batches = 0u64;
                    // At least a few batches even if the writer is done first.
                    while !stop.load(Ordering::SeqCst) || batches < 50 {
                        assert!(start.elapsed() < DEADLINE + DEADLINE, "reader hung");
                        let n = rng.below(40) as usize;
                        // Pools beyond POOLS are never created: unknown handles.
                        let pools: Vec<usize> = (0..n)
                            .map(|_| rng.below(POOLS as u64 + 2) as usize)
                            .collect();
                        let handles: Vec<Vec<u8>> = pools.iter().map(|&p| handle(p)).collect();
                        let items: Vec<usize> = (0..n)
                            .map(|_| rng.below(MAX_SELECTION as u64 + 1) as usize)
                            .collect();
                        let requests: Vec<ResolveRequest<'_>> = handles
                            .iter()
                            .zip(&items)
                            .map(|(h, &items)| ResolveRequest {
                                pool_handle: h,
                                items,
                            })
                            .collect();
                        let mut next = 0;
                        reader.resolve_batch(&requests, &mut rng, |index, s, picked| {
                            assert_eq!(index, next, "requests answered in order");
                            next += 1;
                            assert!(picked.len() <= items[index]);
                            let Some(s) = s else {
                                assert!(picked.is_empty());
                                return;
                            };
                            assert!(picked.len() <= s.len());
                            let mut seen = vec![false; s.len()];
                            for &r in picked {
                                let r = r as usize;
                                assert!(r < s.len(), "index {r} beyond {} entries", s.len());
                                assert!(!seen[r], "index {r} selected twice");
                                seen[r] = true;
                                // Reads the entry as an encoder would: a PE of that pool.
                                assert_eq!(s.entry(r).id().0 / 1000, pools[index] as u64);
                            }
                        });
                        assert_eq!(next, n, "every request answered");
                        batches += 1;
                        resolved.fetch_add(n as u64, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let results: Vec<thread::Result<()>> = std::iter::once(writer.join())
            .chain(readers.into_iter().map(|r| r.join()))
            .collect();
        for r in results {
            r.unwrap_or_else(|p| std::panic::resume_unwind(p));
        }
    });
    assert!(resolved.load(Ordering::Relaxed) > 0);
}
