//! The body of the criterion benchmarks (`handlespace.rs`, `handlespace_mimalloc.rs`): handle
//! resolution over 100k pools (cold) and 1k pools (hot), one by one (each pinning the read side,
//! or through a reader pinned per batch as the registrar's loop turn) and batched
//! (`resolve_batch`), a plain `std::collections::HashMap` baseline doing the same lookups and
//! touches, and registrations (new PEs, re-registrations).

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use rserpool_handlespace::{AssociationId, PeId, PeRegistration, ResolveRequest, Rng, Shard};
use rserpool_protocol::Policy;

use crate::common::{
    HOME, Handle, PolicyKind, age_handlespace, bench_limits, build_handlespace, is_cargo_bench,
    lookup_sequence, pe_id, random_handles, registration, touch,
};

/// PEs per pool in every workload.
const PES_PER_POOL: usize = 10;
/// Items per handle resolution (RSPLIB's default).
const ITEMS: usize = 3;
/// Shards of the handlespace (one per core of this machine, as the registrar runs).
const SHARDS: usize = 2;

/// Pool counts: (cold, hot), shrunk outside `cargo bench`.
fn pool_counts() -> (usize, usize) {
    if is_cargo_bench() {
        (100_000, 1_000)
    } else {
        (2_000, 100)
    }
}

/// Length of a pre-drawn lookup sequence (32 MiB of handles under `cargo bench`).
fn sequence_len() -> usize {
    if is_cargo_bench() { 1 << 20 } else { 1 << 10 }
}

/// Cycles through a pre-drawn lookup sequence.
struct Lookups {
    seq: Vec<Handle>,
    next: usize,
}

impl Lookups {
    fn new(handles: &[Handle], seed: u64) -> Self {
        Self {
            seq: lookup_sequence(handles, sequence_len(), &mut Rng::seed(seed)),
            next: 0,
        }
    }

    #[inline]
    fn next(&mut self) -> &Handle {
        let h = &self.seq[self.next];
        self.next += 1;
        if self.next == self.seq.len() {
            self.next = 0;
        }
        h
    }
}

/// How much of a resolution a benchmark does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    /// `HandlespaceReader::resolve` and touching the selected PEs like an encoder.
    Full,
    /// `HandlespaceReader::resolve` only (for the breakdown).
    NoTouch,
    /// `HandlespaceReader::snapshot` only: the pool lookup (for the breakdown).
    LookupOnly,
    /// `PinnedReader::resolve` one request after another through a reader pinned for [`BATCH`]
    /// requests (as the registrar's loop turn), touching the selected PEs like an encoder.
    Pinned,
    /// `PinnedReader::read` only, one request after another through a reader pinned for
    /// [`BATCH`] requests: the pool lookups back to back (for the breakdown).
    LookupOnlyPinned,
    /// `HandlespaceReader::resolve_batch` over [`BATCH`] requests at a time, touching the
    /// selected PEs like an encoder; timed per resolution.
    Batch,
}

/// Requests per `resolve_batch` call in the batched benchmarks (one loop turn's resolutions).
const BATCH: usize = 32;

/// Benchmarks resolutions over `pools` pools of 10 PEs, one benchmark per `(name, depth)`, all
/// on one handlespace, freshly built or `aged` (see `age_handlespace`).
fn bench_resolve_case(
    c: &mut Criterion,
    prefix: &str,
    pools: usize,
    kind: PolicyKind,
    aged: bool,
    cases: &[(&str, Depth)],
) {
    let handles = random_handles(pools, &mut Rng::seed(pools as u64));
    let mut hs = build_handlespace(SHARDS, &handles, PES_PER_POOL, kind, false);
    if aged {
        age_handlespace(&mut hs, &handles, PES_PER_POOL, kind, false);
    }
    assert_eq!(hs.pe_count(), pools * PES_PER_POOL);
    let reader = hs.reader().clone();
    let mut lookups = Lookups::new(&handles, 7);
    let mut rng = Rng::seed(1);
    let mut out = [0u32; ITEMS];
    let mut g = c.benchmark_group(format!("{prefix}resolve"));
    g.throughput(Throughput::Elements(1));
    for &(name, depth) in cases {
        g.bench_function(name, |b| match depth {
            Depth::Full => b.iter(|| {
                let h = lookups.next();
                reader
                    .resolve(h, &mut rng, &mut out, touch)
                    .expect("known pool")
            }),
            Depth::NoTouch => b.iter(|| {
                let h = lookups.next();
                reader
                    .resolve(h, &mut rng, &mut out, |snapshot, picked| {
                        black_box(snapshot);
                        picked.len()
                    })
                    .expect("known pool")
            }),
            Depth::LookupOnly => b.iter(|| {
                let h = lookups.next();
                reader
                    .read(h, |snapshot| black_box(snapshot).len())
                    .expect("known pool")
            }),
            Depth::Pinned => b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters;
                let mut acc = 0u64;
                while left > 0 {
                    let k = left.min(BATCH as u64);
                    let pinned = reader.pin();
                    for _ in 0..k {
                        let h = lookups.next();
                        acc = acc.wrapping_add(
                            pinned
                                .resolve(h, &mut rng, &mut out, touch)
                                .expect("known pool"),
                        );
                    }
                    left -= k;
                }
                black_box(acc);
                start.elapsed()
            }),
            Depth::LookupOnlyPinned => b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters;
                let mut acc = 0usize;
                while left > 0 {
                    let k = left.min(BATCH as u64);
                    let pinned = reader.pin();
                    for _ in 0..k {
                        let h = lookups.next();
                        acc = acc.wrapping_add(
                            pinned
                                .read(h, |snapshot| black_box(snapshot).len())
                                .expect("known pool"),
                        );
                    }
                    left -= k;
                }
                black_box(acc);
                start.elapsed()
            }),
            Depth::Batch => b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters;
                let mut acc = 0u64;
                while left > 0 {
                    let k = left.min(BATCH as u64) as usize;
                    let handles: [Handle; BATCH] = std::array::from_fn(|_| *lookups.next());
                    let requests: [ResolveRequest<'_>; BATCH] =
                        std::array::from_fn(|j| ResolveRequest {
                            pool_handle: &handles[j],
                            items: ITEMS,
                        });
                    reader.resolve_batch(&requests[..k], &mut rng, |_, snapshot, picked| {
                        let snapshot = snapshot.expect("known pool");
                        acc = acc.wrapping_add(touch(snapshot, picked));
                    });
                    left -= k as u64;
                }
                black_box(acc);
                start.elapsed()
            }),
        });
    }
    g.finish();
    drop(hs);
}

/// The baseline's PE: the same data as a handlespace entry, in plain owned form.
struct SimplePe {
    id: u64,
    home: u64,
    life: i32,
    port: u16,
    addresses: Vec<IpAddr>,
    policy: Policy,
}

/// The baseline's pool: its PEs and a round-robin cursor.
struct SimplePool {
    cursor: u64,
    pes: Vec<SimplePe>,
}

fn bench_baseline(c: &mut Criterion, prefix: &str, name: &str, pools: usize) {
    let handles = random_handles(pools, &mut Rng::seed(pools as u64));
    let mut map: HashMap<Vec<u8>, SimplePool> = HashMap::new();
    for (p, h) in handles.iter().enumerate() {
        let pes = (0..PES_PER_POOL)
            .map(|j| {
                let id = pe_id(p, PES_PER_POOL, j);
                SimplePe {
                    id: id.0,
                    home: HOME.0,
                    life: crate::common::LIFE_MS,
                    port: 9000 + (id.0 % 1000) as u16,
                    addresses: vec![crate::common::address(id)],
                    policy: Policy::RoundRobin,
                }
            })
            .collect();
        map.insert(h.to_vec(), SimplePool { cursor: 0, pes });
    }
    let mut lookups = Lookups::new(&handles, 7);
    let mut out = [0u32; ITEMS];
    let mut g = c.benchmark_group(format!("{prefix}baseline"));
    g.throughput(Throughput::Elements(1));
    g.bench_function(name, |b| {
        b.iter(|| {
            let h = lookups.next();
            let pool = map.get_mut(&h[..]).expect("known pool");
            let len = pool.pes.len() as u64;
            let start = pool.cursor % len;
            pool.cursor += 1;
            let n = ITEMS.min(pool.pes.len());
            for (j, o) in out[..n].iter_mut().enumerate() {
                *o = ((start + j as u64) % len) as u32;
            }
            let mut acc = 0u64;
            for &i in &out[..n] {
                let e = &pool.pes[i as usize];
                acc = acc.wrapping_add(e.id ^ e.home.rotate_left(17));
                acc = acc.wrapping_add(u64::from(e.port));
                if let Some(IpAddr::V4(a)) = e.addresses.first() {
                    acc = acc.wrapping_add(u64::from(u32::from(*a)));
                }
                // Read like the handlespace entry would be (life and policy are encoded too).
                acc = acc.wrapping_add(e.life as u64);
                if let Policy::RoundRobin = e.policy {
                    acc = acc.wrapping_add(1);
                }
            }
            acc
        });
    });
    g.finish();
}

/// The resolution benchmarks and their baseline; group names start with `prefix`.
pub fn resolve(c: &mut Criterion, prefix: &str) {
    let (cold, hot) = pool_counts();
    bench_resolve_case(
        c,
        prefix,
        cold,
        PolicyKind::RoundRobin,
        false,
        &[
            ("cold_100k_pools_x10", Depth::Full),
            ("cold_100k_pools_x10_pinned", Depth::Pinned),
            ("cold_100k_pools_x10_batch", Depth::Batch),
            ("cold_100k_pools_x10_no_touch", Depth::NoTouch),
            ("cold_100k_pools_x10_lookup_only", Depth::LookupOnly),
            (
                "cold_100k_pools_x10_lookup_only_pinned",
                Depth::LookupOnlyPinned,
            ),
        ],
    );
    bench_resolve_case(
        c,
        prefix,
        cold,
        PolicyKind::RoundRobin,
        true,
        &[
            ("cold_100k_pools_x10_aged", Depth::Full),
            ("cold_100k_pools_x10_aged_batch", Depth::Batch),
            ("cold_100k_pools_x10_aged_no_touch", Depth::NoTouch),
        ],
    );
    bench_resolve_case(
        c,
        prefix,
        cold,
        PolicyKind::LeastUsed,
        false,
        &[
            ("cold_100k_pools_x10_least_used", Depth::Full),
            ("cold_100k_pools_x10_least_used_batch", Depth::Batch),
        ],
    );
    bench_resolve_case(
        c,
        prefix,
        hot,
        PolicyKind::RoundRobin,
        false,
        &[
            ("hot_1k_pools_x10", Depth::Full),
            ("hot_1k_pools_x10_batch", Depth::Batch),
            ("hot_1k_pools_x10_no_touch", Depth::NoTouch),
            ("hot_1k_pools_x10_lookup_only", Depth::LookupOnly),
        ],
    );
    bench_baseline(c, prefix, "std_hashmap_100k_pools_x10", cold);
    bench_baseline(c, prefix, "std_hashmap_1k_pools_x10", hot);
}

/// A planned sequence of registrations into one shard, refilled (outside the timed region) when
/// it runs out.
struct Plan {
    shard: Shard,
    /// (pool index, registration), consumed front to back.
    items: std::vec::IntoIter<(u32, PeRegistration)>,
    now: u64,
}

/// Times `iters` registrations from `plan`, refilling it with `refill` whenever it runs dry;
/// only the `Shard::register` calls are timed.
fn run_plan(
    iters: u64,
    plan: &mut Plan,
    handles: &[Handle],
    mut refill: impl FnMut(&mut Plan),
) -> Duration {
    let mut left = iters;
    let mut total = Duration::ZERO;
    while left > 0 {
        if plan.items.len() == 0 {
            refill(plan);
        }
        let k = left.min(plan.items.len() as u64);
        let shard = &mut plan.shard;
        let items = &mut plan.items;
        let now = plan.now;
        let start = Instant::now();
        for _ in 0..k {
            let (p, reg) = items.next().expect("planned");
            let assoc = AssociationId::new(reg.id.0);
            black_box(
                shard
                    .register(&handles[p as usize], reg, HOME, assoc, now)
                    .expect("benchmark registration is valid"),
            );
        }
        total += start.elapsed();
        plan.now += 1;
        left -= k;
    }
    total
}

fn empty_plan(now: u64) -> Plan {
    Plan {
        shard: Shard::new(bench_limits()),
        items: Vec::new().into_iter(),
        now,
    }
}

/// The registration benchmarks; group names start with `prefix`.
pub fn register(c: &mut Criterion, prefix: &str) {
    let (pools, _) = pool_counts();
    let handles = random_handles(pools, &mut Rng::seed(99));
    let new_handles = random_handles(pools * 2, &mut Rng::seed(98));
    // Criterion calls each routine many times (warm-up, every sample); the plans and their
    // refills live outside the routines so that set-up happens only when a plan runs dry.

    // New PEs, each creating a new pool, into a shard that grows from 0 to 2 x `pools` pools.
    let mut new_pool_plan = empty_plan(0);
    let mut new_pool_refill = |plan: &mut Plan| {
        plan.shard = Shard::new(bench_limits());
        plan.items = (0..new_handles.len())
            .map(|p| {
                let id = pe_id(p, 1, 0);
                (p as u32, registration(id, Policy::RoundRobin, false))
            })
            .collect::<Vec<_>>()
            .into_iter();
    };

    // New PEs into existing pools: `pools` pools start with 1 PE each (untimed); the timed
    // registrations add PEs 2..=10 round over the pools (so pools grow from 1 to 10 PEs).
    let mut existing_plan = empty_plan(0);
    let mut existing_refill = |plan: &mut Plan| {
        let mut shard = Shard::new(bench_limits());
        for (p, h) in handles.iter().enumerate() {
            let id = pe_id(p, PES_PER_POOL, 0);
            shard
                .register(
                    h,
                    registration(id, Policy::RoundRobin, false),
                    HOME,
                    None,
                    0,
                )
                .expect("valid");
        }
        plan.shard = shard;
        plan.items = (1..PES_PER_POOL)
            .flat_map(|j| (0..handles.len()).map(move |p| (p, j)))
            .map(|(p, j)| {
                let id = pe_id(p, PES_PER_POOL, j);
                (p as u32, registration(id, Policy::RoundRobin, false))
            })
            .collect::<Vec<_>>()
            .into_iter();
    };

    // Re-registrations of existing PEs (same ID, same association) in random order, in a shard
    // of `pools` pools x 10 PEs built once.
    let mut update_plan = empty_plan(1);
    for (p, h) in handles.iter().enumerate() {
        for j in 0..PES_PER_POOL {
            let id = pe_id(p, PES_PER_POOL, j);
            update_plan
                .shard
                .register(
                    h,
                    registration(id, Policy::RoundRobin, false),
                    HOME,
                    AssociationId::new(id.0),
                    0,
                )
                .expect("valid");
        }
    }
    let mut update_rng = Rng::seed(5);
    let batch = handles.len() * PES_PER_POOL;
    let mut update_refill = |plan: &mut Plan| {
        plan.items = (0..batch)
            .map(|_| {
                let p = update_rng.below(handles.len() as u64) as usize;
                let j = update_rng.below(PES_PER_POOL as u64) as usize;
                let id: PeId = pe_id(p, PES_PER_POOL, j);
                (p as u32, registration(id, Policy::RoundRobin, false))
            })
            .collect::<Vec<_>>()
            .into_iter();
    };

    // Re-registrations that change an attribute (here the registration life), so that the pool's
    // snapshot is rebuilt; `update` above re-registers unchanged PEs.
    let mut changed_plan = empty_plan(1);
    let mut changed_rng = Rng::seed(6);
    let mut changed_refill = |plan: &mut Plan| {
        plan.items = (0..batch)
            .map(|_| {
                let p = changed_rng.below(handles.len() as u64) as usize;
                let j = changed_rng.below(PES_PER_POOL as u64) as usize;
                let id: PeId = pe_id(p, PES_PER_POOL, j);
                let mut r = registration(id, Policy::RoundRobin, false);
                r.registration_life += 1 + changed_rng.below(1000) as i32;
                (p as u32, r)
            })
            .collect::<Vec<_>>()
            .into_iter();
    };

    let mut g = c.benchmark_group(format!("{prefix}register"));
    g.throughput(Throughput::Elements(1));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(20);
    g.bench_function("new/new_pool", |b| {
        b.iter_custom(|iters| {
            run_plan(
                iters,
                &mut new_pool_plan,
                &new_handles,
                &mut new_pool_refill,
            )
        });
    });
    g.bench_function("new/existing_pool", |b| {
        b.iter_custom(|iters| run_plan(iters, &mut existing_plan, &handles, &mut existing_refill));
    });
    g.bench_function("update", |b| {
        b.iter_custom(|iters| run_plan(iters, &mut update_plan, &handles, &mut update_refill));
    });
    g.bench_function("update_changed", |b| {
        b.iter_custom(|iters| run_plan(iters, &mut changed_plan, &handles, &mut changed_refill));
    });
    g.finish();
}

/// Pool sizes of the `pool_size` benchmarks, shrunk outside `cargo bench`.
fn pool_sizes() -> &'static [usize] {
    if is_cargo_bench() {
        &[10, 1_000, 10_000]
    } else {
        &[10, 100]
    }
}

/// Changes of one loop turn of the registrar in the batched `pool_size` benchmarks.
const TURN: usize = 32;

/// Registration cost against pool size: one pool of N PEs; each timed operation registers a new
/// PE (a fresh PE ID) and deregisters the oldest, so the pool stays at N. `unbatched` publishes
/// the pool after every change, `turn` runs [`TURN`] operations per shard batch as the
/// registrar's loop turns do. Also resolutions of 3 PEs from that pool by round robin, weighted
/// random and least used.
pub fn pool_size(c: &mut Criterion, prefix: &str) {
    let handle = random_handles(1, &mut Rng::seed(97)).remove(0);
    let mut g = c.benchmark_group(format!("{prefix}pool_size"));
    g.throughput(Throughput::Elements(1));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(20);
    for &n in pool_sizes() {
        for batched in [false, true] {
            let mut shard = Shard::new(bench_limits());
            let mut rng = Rng::seed(n as u64);
            let mut fresh = || PeId(1 + rng.below(u64::from(u32::MAX - 1)));
            let mut live = std::collections::VecDeque::new();
            while live.len() < n {
                let id = fresh();
                if shard
                    .register(
                        &handle,
                        registration(id, Policy::RoundRobin, false),
                        HOME,
                        None,
                        0,
                    )
                    .expect("valid")
                    .added
                {
                    live.push_back(id);
                }
            }
            let name = format!("{}/{n}", if batched { "turn" } else { "unbatched" });
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    let mut left = iters;
                    while left > 0 {
                        let k = if batched { left.min(TURN as u64) } else { 1 };
                        shard.batch(|shard| {
                            for _ in 0..k {
                                let id = fresh();
                                let r = registration(id, Policy::RoundRobin, false);
                                if shard
                                    .register(&handle, r, HOME, None, 0)
                                    .expect("valid")
                                    .added
                                {
                                    live.push_back(id);
                                    let old = live.pop_front().expect("a PE");
                                    black_box(shard.deregister(&handle, old, None).expect("ok"));
                                }
                            }
                        });
                        left -= k;
                    }
                    start.elapsed()
                });
            });
        }
        for (kind, policy) in [
            ("rr", Policy::RoundRobin),
            ("wrand", Policy::WeightedRandom { weight: 0 }),
            ("lu", Policy::LeastUsed { load: 0 }),
        ] {
            let mut hs = rserpool_handlespace::Handlespace::new(1, bench_limits());
            let mut rng = Rng::seed(3);
            for j in 0..n {
                let policy = match policy {
                    Policy::WeightedRandom { .. } => Policy::WeightedRandom {
                        weight: 1 + rng.below(10) as u32,
                    },
                    Policy::LeastUsed { .. } => Policy::LeastUsed {
                        load: rng.below(u64::from(u32::MAX)) as u32,
                    },
                    p => p,
                };
                hs.register(
                    &handle,
                    registration(pe_id(0, n, j), policy, false),
                    HOME,
                    None,
                    0,
                )
                .expect("valid");
            }
            let reader = hs.reader().clone();
            let mut out = [0u32; ITEMS];
            g.bench_function(format!("resolve_{kind}/{n}"), |b| {
                b.iter(|| black_box(reader.resolve(&handle, &mut rng, &mut out, touch)));
            });
        }
    }
    g.finish();
}
