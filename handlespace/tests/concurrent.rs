//! Multi-threaded stress tests of the handlespace's concurrency design: one writer per shard (the
//! thread that owns the `Shard`), handle resolutions on any thread through the lock-free read side
//! (`HandlespaceReader`, `ShardView`: papaya map of RCU snapshots, atomic selection
//! state), and writes for a foreign shard forwarded to its owner through `Mailbox`es.
//!
//! Readers check invariants that a torn, stale or half-published state breaks; the forwarding
//! test checks that no request is lost or applied twice and that the final state equals a
//! single-threaded replay of the operations in the order the owners applied them. Every thread
//! seeds its own generator; every test does a fixed amount of work, and [`DEADLINE`] turns a
//! hang (a lost message, a stuck thread) into a failure.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, ScopedJoinHandle};
use std::time::{Duration, Instant};

use rserpool_handlespace::mailbox::Mailbox;
use rserpool_handlespace::{
    AssociationId, Handlespace, Limits, OwnedTransport, OwnedUserTransport, OwnerChecksums, PeId,
    PeRegistration, PoolSnapshot, PrId, Rng, Shard, shard_index,
};
use rserpool_protocol::checksum::{Internet16, NgDigest};
use rserpool_protocol::{Policy, TransportKind, cause};

/// Longest any test may run before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(30);

/// How long the forwarding test's workers may all go without handling a message while requests
/// are outstanding before a message counts as lost.
const STALL: Duration = Duration::from_secs(5);

/// Reader threads: one per core, at least 2.
fn reader_count() -> usize {
    thread::available_parallelism()
        .map_or(2, NonZeroUsize::get)
        .max(2)
}

/// Raises `flag` when dropped by a panicking thread, so the test's other threads stop.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Joins every thread, then re-raises the first panic among them.
fn join_all<T>(handles: Vec<ScopedJoinHandle<'_, T>>) -> Vec<T> {
    let results: Vec<thread::Result<T>> = handles.into_iter().map(|h| h.join()).collect();
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .collect()
}

fn user_transport(id: u64) -> OwnedUserTransport {
    OwnedUserTransport::Transport(OwnedTransport {
        kind: TransportKind::Sctp,
        port: 1024 + (id % 50_000) as u16,
        transport_use: 0,
        service_code: 0,
        addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + (id % 250) as u8))].into(),
    })
}

fn registration(id: u64, policy: Policy) -> PeRegistration {
    PeRegistration {
        id: PeId(id),
        registration_life: -1,
        user_transport: user_transport(id),
        policy,
        asap_transport: None,
    }
}

fn handles(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}-{i:02}").into_bytes())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Churning writers with published low-water marks (tests 1 and 3)
// ---------------------------------------------------------------------------------------------

/// Most PEs a churned pool holds.
const K: usize = 6;

/// The policies churned pools use; all weights are positive, so every resolution returns
/// `min(items, len)` PEs (selection returns fewer only for weight 0).
const POLICIES: usize = 6;

fn churn_policy(kind: usize, value: u32) -> Policy {
    match kind % POLICIES {
        0 => Policy::RoundRobin,
        1 => Policy::LeastUsed { load: value },
        2 => Policy::Priority {
            priority: value % 4,
        },
        3 => Policy::LeastUsedDegradation {
            load: value,
            load_degradation: 1 << 20,
        },
        4 => Policy::WeightedRoundRobin {
            weight: 1 + value % 4,
        },
        _ => Policy::WeightedRandom {
            weight: 1 + value % 4,
        },
    }
}

/// What a churned pool's writer publishes for readers. PE IDs are sequence numbers, strictly
/// increasing per pool (across re-creations too); the writer always deregisters the oldest PE,
/// so the live sequence numbers of a pool are always one contiguous run.
#[derive(Default)]
struct Track {
    /// Smallest sequence number still registered (`next` if the pool is empty); stored after
    /// the deregistration returned.
    low: AtomicU64,
    /// Next sequence number; stored before the registration starts.
    next: AtomicU64,
}

/// PE ID of sequence number `seq` of pool `pool` among `pools` (fits 32 bits, so both audit
/// checksums cover it).
fn pe_id(pools: usize, pool: usize, seq: u64) -> u64 {
    seq * pools as u64 + pool as u64 + 1
}

/// Inverse of [`pe_id`]: (pool, seq).
fn decode(pools: usize, id: u64) -> (usize, u64) {
    let x = id - 1;
    ((x % pools as u64) as usize, x / pools as u64)
}

/// One shard writer's churn over the pools it owns.
struct Churner<'a> {
    handles: &'a [Vec<u8>],
    tracks: &'a [Track],
    owned: Vec<usize>,
    /// Live sequence numbers per pool (indexed by pool number), oldest first.
    live: Vec<VecDeque<u64>>,
    /// Times each pool was created.
    creations: Vec<usize>,
    home: PrId,
    rng: Rng,
}

impl<'a> Churner<'a> {
    fn new(
        handles: &'a [Vec<u8>],
        tracks: &'a [Track],
        owned: Vec<usize>,
        home: PrId,
        seed: u64,
    ) -> Self {
        assert!(!owned.is_empty(), "writer {home:?} owns no pool");
        Self {
            handles,
            tracks,
            owned,
            live: vec![VecDeque::new(); handles.len()],
            creations: vec![0; handles.len()],
            home,
            rng: Rng::seed(seed),
        }
    }

    fn pools(&self) -> usize {
        self.handles.len()
    }

    /// One random change to one owned pool.
    fn step(&mut self, shard: &mut Shard) {
        let p = self.owned[self.rng.below(self.owned.len() as u64) as usize];
        let live = self.live[p].len();
        if live == 0 {
            self.add(shard, p);
            return;
        }
        match self.rng.below(100) {
            0..40 => {
                if live == K {
                    self.remove_oldest(shard, p);
                }
                self.add(shard, p);
            }
            40..70 => {
                if live > 1 {
                    self.remove_oldest(shard, p);
                } else {
                    self.add(shard, p);
                }
            }
            70..94 => self.reregister(shard, p),
            // Let the pool become empty (removed); it is re-created later, possibly with
            // another policy type.
            _ => {
                while !self.live[p].is_empty() {
                    self.remove_oldest(shard, p);
                }
            }
        }
    }

    fn policy(&mut self, p: usize) -> Policy {
        let value = self.rng.below(1000) as u32;
        churn_policy(p + self.creations[p], value)
    }

    fn add(&mut self, shard: &mut Shard, p: usize) {
        let t = &self.tracks[p];
        let seq = t.next.load(Ordering::Relaxed);
        t.next.store(seq + 1, Ordering::Release);
        let created = self.live[p].is_empty();
        if created {
            self.creations[p] += 1;
        }
        let policy = self.policy(p);
        let id = pe_id(self.pools(), p, seq);
        let r = shard
            .register(
                &self.handles[p],
                registration(id, policy),
                self.home,
                None,
                0,
            )
            .unwrap_or_else(|e| panic!("registering PE {id} in pool {p}: {e}"));
        assert!(r.added, "new PE {id} counted as a re-registration");
        assert_eq!(r.pool_created, created, "pool {p} creation flag");
        self.live[p].push_back(seq);
    }

    fn remove_oldest(&mut self, shard: &mut Shard, p: usize) {
        let seq = self.live[p].pop_front().expect("a live PE");
        let id = pe_id(self.pools(), p, seq);
        let removed = shard
            .deregister(&self.handles[p], PeId(id), None)
            .unwrap_or_else(|e| panic!("deregistering PE {id} of pool {p}: {e}"))
            .unwrap_or_else(|| panic!("PE {id} of pool {p} unknown to its writer's shard"));
        assert_eq!(removed.entry.id(), PeId(id));
        assert_eq!(removed.pool_removed, self.live[p].is_empty());
        let t = &self.tracks[p];
        let low = match self.live[p].front() {
            Some(&s) => s,
            None => t.next.load(Ordering::Relaxed),
        };
        // Only now: the deregistration has returned.
        t.low.store(low, Ordering::Release);
    }

    fn reregister(&mut self, shard: &mut Shard, p: usize) {
        let i = self.rng.below(self.live[p].len() as u64) as usize;
        let id = pe_id(self.pools(), p, self.live[p][i]);
        let policy = self.policy(p);
        let r = shard
            .register(
                &self.handles[p],
                registration(id, policy),
                self.home,
                None,
                0,
            )
            .unwrap_or_else(|e| panic!("re-registering PE {id} in pool {p}: {e}"));
        assert!(!r.added && !r.pool_created, "re-registration of PE {id}");
        assert_eq!(r.entry.registration.policy, policy);
    }

    /// After the run: the shard holds exactly what this writer thinks it holds.
    fn verify_final(&self, shard: &Shard) {
        let mut pes = 0;
        let mut pools = 0;
        for &p in &self.owned {
            let expected: Vec<u64> = self.live[p]
                .iter()
                .map(|&s| pe_id(self.pools(), p, s))
                .collect();
            pes += expected.len();
            let Some(snapshot) = shard.snapshot(&self.handles[p]) else {
                assert!(expected.is_empty(), "pool {p} missing at the end");
                assert!(shard.view().snapshot(&self.handles[p]).is_none());
                continue;
            };
            pools += 1;
            let mut got: Vec<u64> = snapshot.entries().map(|e| e.id().0).collect();
            got.sort_unstable();
            assert_eq!(got, expected, "final PEs of pool {p}");
            let published = shard.view().snapshot(&self.handles[p]).expect("published");
            assert!(
                Arc::ptr_eq(&published, &snapshot),
                "pool {p}: readers see another snapshot than the writer's last one"
            );
        }
        assert_eq!(shard.pe_count(), pes);
        assert_eq!(shard.pool_count(), pools);
        assert_eq!(shard.view().len(), pools);
    }
}

/// Checks one snapshot of pool `p` (of `pools`) written by home PR `home`, taken after the
/// pool's low-water mark `low` was loaded and before its next sequence number `high` was loaded.
/// Returns the pool's policy type.
fn check_snapshot(
    pools: usize,
    p: usize,
    home: PrId,
    s: &PoolSnapshot,
    low: u64,
    high: u64,
) -> u32 {
    // The writer publishes a pool once it holds its first PE and removes it from the map when
    // it becomes empty (Shard::register, Shard::remove_at): no reader sees an empty pool.
    assert!(!s.is_empty(), "pool {p}: readers see an empty snapshot");
    assert_eq!(s.entries().count(), s.len(), "pool {p}: entries() vs len()");
    assert!(
        s.len() <= K,
        "pool {p}: {} PEs, the writer keeps <= {K}",
        s.len()
    );
    let ty = s.entry(0).registration.policy.policy_type();
    let mut seqs = [0u64; K];
    for (e, slot) in s.entries().zip(&mut seqs) {
        assert_eq!(
            e.registration.policy.policy_type(),
            ty,
            "pool {p}: snapshot mixes policy types (torn)"
        );
        assert_eq!(e.home_pr, home, "pool {p}: PE {} home PR", e.id().0);
        let (pool, seq) = decode(pools, e.id().0);
        assert_eq!(pool, p, "pool {p}: holds PE {} of pool {pool}", e.id().0);
        assert!(
            seq >= low,
            "pool {p}: PE seq {seq} was deregistered before the read started (low-water {low}) \
             but is still published"
        );
        assert!(
            seq < high,
            "pool {p}: PE seq {seq} published before its registration started (next {high})"
        );
        *slot = seq;
    }
    let seqs = &mut seqs[..s.len()];
    seqs.sort_unstable();
    for w in seqs.windows(2) {
        assert_ne!(
            w[0], w[1],
            "pool {p}: PE seq {} twice in one snapshot",
            w[0]
        );
        // The writer removes the oldest PE and adds the newest, so every state it publishes holds
        // a contiguous run; a gap means a mix of two states.
        assert_eq!(
            w[1],
            w[0] + 1,
            "pool {p}: PEs {seqs:?} not one contiguous run (torn)"
        );
    }
    ty
}

/// Test 1: readers on every core resolve while one writer per shard churns its pools.
#[test]
fn resolutions_during_churn_never_return_deregistered_or_torn_state() {
    const SHARDS: usize = 4;
    const POOLS: usize = 16;
    const OPS_PER_WRITER: usize = 30_000;
    const MIN_READS: u64 = 2_000;

    let handles = handles("churn-pool", POOLS);
    let tracks: Vec<Track> = (0..POOLS).map(|_| Track::default()).collect();
    let (shards, reader) = Handlespace::new(SHARDS, Limits::default()).into_shards();
    assert_eq!(shards.len(), SHARDS);
    let owner: Vec<usize> = handles.iter().map(|h| shard_index(h, SHARDS)).collect();
    let owned: Vec<Vec<usize>> = (0..SHARDS)
        .map(|w| (0..POOLS).filter(|&p| owner[p] == w).collect())
        .collect();
    // Checked before any thread waits at the barrier.
    assert!(
        owned.iter().all(|o| !o.is_empty()),
        "a shard owns no pool: {owner:?}"
    );
    let readers = reader_count();
    let stop = AtomicBool::new(false);
    let start = Barrier::new(SHARDS + readers);

    thread::scope(|s| {
        let writers: Vec<_> = shards
            .into_iter()
            .enumerate()
            .map(|(w, mut shard)| {
                let mut churner = Churner::new(
                    &handles,
                    &tracks,
                    owned[w].clone(),
                    PrId(w as u64 + 1),
                    0xC0FF_EE00 + w as u64,
                );
                let (stop, start) = (&stop, &start);
                s.spawn(move || {
                    let _guard = StopOnPanic(stop);
                    start.wait();
                    for _ in 0..OPS_PER_WRITER {
                        churner.step(&mut shard);
                    }
                    churner.verify_final(&shard);
                    shard
                })
            })
            .collect();
        let reader_threads: Vec<_> = (0..readers)
            .map(|r| {
                let (reader, handles, tracks, owner) = (reader.clone(), &handles, &tracks, &owner);
                let (stop, start) = (&stop, &start);
                s.spawn(move || {
                    let _guard = StopOnPanic(stop);
                    let mut rng = Rng::seed(0x5EED_0000 + r as u64);
                    let mut out = [0u32; 5];
                    let (mut reads, mut found) = (0u64, 0u64);
                    let began = Instant::now();
                    start.wait();
                    while !(stop.load(Ordering::SeqCst) && reads >= MIN_READS) {
                        assert!(began.elapsed() < DEADLINE, "reader {r} ran too long");
                        let p = rng.below(POOLS as u64) as usize;
                        let items = 1 + rng.below(5) as usize;
                        let low = tracks[p].low.load(Ordering::Acquire);
                        // `high` is read after the snapshot, inside the resolution.
                        let resolved = reader.resolve(
                            &handles[p],
                            &mut rng,
                            &mut out[..items],
                            |snapshot, picked| {
                                let high = tracks[p].next.load(Ordering::Acquire);
                                let home = PrId(owner[p] as u64 + 1);
                                check_snapshot(POOLS, p, home, snapshot, low, high);
                                assert_eq!(
                                    picked.len(),
                                    items.min(snapshot.len()),
                                    "pool {p}: resolution for {items} items from {} PEs",
                                    snapshot.len()
                                );
                                for (j, &i) in picked.iter().enumerate() {
                                    assert!(
                                        (i as usize) < snapshot.len(),
                                        "pool {p}: index {i} beyond {} PEs",
                                        snapshot.len()
                                    );
                                    assert!(!picked[..j].contains(&i), "pool {p}: PE {i} twice");
                                    let (_, seq) = decode(POOLS, snapshot.entry(i as usize).id().0);
                                    assert!(seq >= low, "pool {p}: returned deregistered PE {seq}");
                                }
                            },
                        );
                        reads += 1;
                        if resolved.is_some() {
                            found += 1;
                        }
                    }
                    found
                })
            })
            .collect();
        let shards = join_all(writers);
        stop.store(true, Ordering::SeqCst);
        let found = join_all(reader_threads);
        assert!(
            found.iter().all(|&f| f > 0),
            "some reader never found a pool: {found:?}"
        );
        // The shared read side routes every handle to the shard that owns it.
        for (p, h) in handles.iter().enumerate() {
            let own = shards[owner[p]].snapshot(h);
            let read = reader.snapshot(h);
            assert_eq!(own.is_some(), read.is_some(), "pool {p} on the read side");
            if let (Some(own), Some(read)) = (own, read) {
                assert!(
                    Arc::ptr_eq(&own, &read),
                    "pool {p}: reader sees another snapshot"
                );
            }
        }
    });
}

/// Test 3: `ShardView::for_each_pool` concurrent with the shard's writer sees every pool in one
/// consistent state: never an empty, stale, torn or foreign one.
#[test]
fn for_each_pool_during_churn_sees_consistent_pools() {
    const POOLS: usize = 24;
    const OPS: usize = 60_000;
    const MIN_SCANS: u64 = 200;

    let handles = handles("scan-pool", POOLS);
    let index: HashMap<&[u8], usize> = handles
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_slice(), i))
        .collect();
    let tracks: Vec<Track> = (0..POOLS).map(|_| Track::default()).collect();
    let (mut shards, _reader) = Handlespace::new(1, Limits::default()).into_shards();
    let mut shard = shards.pop().expect("one shard");
    let view = Arc::clone(shard.view());
    let home = PrId(7);
    let readers = reader_count();
    let stop = AtomicBool::new(false);
    let start = Barrier::new(1 + readers);

    thread::scope(|s| {
        let mut churner = Churner::new(&handles, &tracks, (0..POOLS).collect(), home, 0xF00D);
        let (stop_ref, start_ref) = (&stop, &start);
        let writer = s.spawn(move || {
            let _guard = StopOnPanic(stop_ref);
            start_ref.wait();
            for _ in 0..OPS {
                churner.step(&mut shard);
            }
            churner.verify_final(&shard);
        });
        let scanners: Vec<_> = (0..readers)
            .map(|r| {
                let (view, tracks, index) = (&view, &tracks, &index);
                let (stop, start) = (&stop, &start);
                s.spawn(move || {
                    let _guard = StopOnPanic(stop);
                    let began = Instant::now();
                    let (mut scans, mut visits) = (0u64, 0u64);
                    start.wait();
                    while !(stop.load(Ordering::SeqCst) && scans >= MIN_SCANS) {
                        assert!(began.elapsed() < DEADLINE, "scanner {r} ran too long");
                        let lows: Vec<u64> = tracks
                            .iter()
                            .map(|t| t.low.load(Ordering::Acquire))
                            .collect();
                        // A pool removed and re-created during the scan may be visited
                        // twice (see `for_each_pool_visits_each_pool_at_most_once`); each
                        // visit must still be consistent.
                        view.for_each_pool(|handle, snapshot| {
                            // `f` runs after the snapshot was loaded.
                            let p = *index.get(handle).unwrap_or_else(|| {
                                panic!("unknown pool handle {:?}", String::from_utf8_lossy(handle))
                            });
                            let high = tracks[p].next.load(Ordering::Acquire);
                            check_snapshot(POOLS, p, home, snapshot, lows[p], high);
                            visits += 1;
                        });
                        scans += 1;
                    }
                    visits
                })
            })
            .collect();
        join_all(vec![writer]);
        stop.store(true, Ordering::SeqCst);
        let visits = join_all(scanners);
        assert!(
            visits.iter().all(|&v| v > 0),
            "some scanner never saw a pool: {visits:?}"
        );
    });
}

/// `ShardView::for_each_pool` promises "each pool is seen in one consistent state". A pool that
/// the writer removes and re-creates while a scan runs must then be reported at most once; the
/// writer's steps are interleaved with the scan on one thread here (exactly what a writer thread
/// may do between two steps of a reader's scan), so the outcome does not depend on scheduling.
#[test]
fn for_each_pool_visits_each_pool_at_most_once() {
    const POOLS: usize = 12;
    const SCANS: u64 = 20;
    let handles = handles("rescan-pool", POOLS);
    let (mut shards, _reader) = Handlespace::new(1, Limits::default()).into_shards();
    let mut shard = shards.pop().expect("one shard");
    let view = Arc::clone(shard.view());
    let home = PrId(1);
    for (p, h) in handles.iter().enumerate() {
        shard
            .register(
                h,
                registration(pe_id(POOLS, p, 0), Policy::RoundRobin),
                home,
                None,
                0,
            )
            .expect("register");
    }
    let mut twice: Vec<(u64, String, Vec<u64>)> = Vec::new();
    for scan in 1..=SCANS {
        let mut visits: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
        view.for_each_pool(|handle, snapshot| {
            let ids: Vec<u64> = snapshot.entries().map(|e| e.id().0).collect();
            let first = !visits.contains_key(handle);
            visits
                .entry(handle.to_vec())
                .or_default()
                .extend(ids.iter().copied());
            if first {
                // The writer empties the pool (removing it) and re-creates it with a new PE.
                let p = handles
                    .iter()
                    .position(|h| h == handle)
                    .expect("known handle");
                for id in ids {
                    let removed = shard
                        .deregister(handle, PeId(id), None)
                        .expect("deregister");
                    assert!(removed.is_some_and(|r| r.pool_removed));
                }
                let id = pe_id(POOLS, p, scan);
                let r = shard
                    .register(handle, registration(id, Policy::RoundRobin), home, None, 0)
                    .expect("re-create");
                assert!(r.pool_created);
            }
        });
        assert_eq!(view.len(), POOLS);
        twice.extend(
            visits
                .into_iter()
                .filter(|(_, ids)| ids.len() > 1)
                .map(|(h, ids)| (scan, String::from_utf8_lossy(&h).into_owned(), ids)),
        );
    }
    assert!(
        twice.is_empty(),
        "for_each_pool reported a pool twice within one scan (once per incarnation) {} times; \
         first cases (scan, handle, PE IDs seen): {:?}",
        twice.len(),
        &twice[..twice.len().min(4)]
    );
}

// ---------------------------------------------------------------------------------------------
// Test 2: cross-shard forwarding through mailboxes
// ---------------------------------------------------------------------------------------------

const FWD_SHARDS: usize = 4;
const FWD_POOLS: usize = 12;
const FWD_REQUESTS: u64 = 3_000;
const FWD_HOMES: u64 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Register {
        pool: usize,
        id: u64,
        policy: Policy,
        home: u64,
        association: Option<u64>,
    },
    Deregister {
        pool: usize,
        id: u64,
        association: Option<u64>,
    },
}

impl Op {
    fn pool(&self) -> usize {
        match *self {
            Self::Register { pool, .. } | Self::Deregister { pool, .. } => pool,
        }
    }

    /// A random operation on a few PE IDs per pool, so that operations from different workers
    /// collide: re-registrations, moves between home PRs, unknown PEs, refusals for another
    /// association or another policy type.
    fn random(rng: &mut Rng) -> Self {
        let pool = rng.below(FWD_POOLS as u64) as usize;
        let id = match rng.below(16) {
            0 => 0x1_0000_0000 + rng.below(2), // NG-only identifier
            _ => 1 + rng.below(8),
        };
        let association = match rng.below(4) {
            0 => Some(1),
            1 => Some(2),
            _ => None,
        };
        if rng.below(100) < 60 {
            let load = rng.below(1000) as u32;
            let policy = match pool % 3 {
                0 if rng.below(8) == 0 => Policy::RoundRobin,
                1 => Policy::Priority { priority: load % 4 },
                _ => Policy::LeastUsed { load },
            };
            Self::Register {
                pool,
                id,
                policy,
                home: 1 + rng.below(FWD_HOMES),
                association,
            }
        } else {
            Self::Deregister {
                pool,
                id,
                association,
            }
        }
    }
}

/// What applying an [`Op`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Registered {
        added: bool,
        pool_created: bool,
        previous_home: Option<u64>,
    },
    /// The removed PE's ID and whether its pool was removed; `None` for an unknown PE.
    Deregistered(Option<(u64, bool)>),
    Refused(u16),
}

fn apply(shard: &mut Shard, handles: &[Vec<u8>], op: &Op) -> Outcome {
    match *op {
        Op::Register {
            pool,
            id,
            policy,
            home,
            association,
        } => match shard.register(
            &handles[pool],
            registration(id, policy),
            PrId(home),
            association.and_then(AssociationId::new),
            0,
        ) {
            Ok(r) => {
                assert_eq!(r.entry.id(), PeId(id));
                assert_eq!(r.entry.home_pr, PrId(home));
                Outcome::Registered {
                    added: r.added,
                    pool_created: r.pool_created,
                    previous_home: r.previous_home.map(|h| h.0),
                }
            }
            Err(e) => Outcome::Refused(e.cause()),
        },
        Op::Deregister {
            pool,
            id,
            association,
        } => match shard.deregister(
            &handles[pool],
            PeId(id),
            association.and_then(AssociationId::new),
        ) {
            Ok(r) => Outcome::Deregistered(r.map(|r| {
                assert_eq!(&*r.pool_handle, handles[pool].as_slice());
                (r.entry.id().0, r.pool_removed)
            })),
            Err(e) => Outcome::Refused(e.cause()),
        },
    }
}

/// A naive single-threaded reference of the registration rules the operations exercise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ModelPe {
    policy: Policy,
    home: u64,
    association: Option<u64>,
}

#[derive(Default)]
struct Model {
    pools: BTreeMap<usize, BTreeMap<u64, ModelPe>>,
}

impl Model {
    fn apply(&mut self, op: &Op) -> Outcome {
        match *op {
            Op::Register {
                pool,
                id,
                policy,
                home,
                association,
            } => {
                let existing = self.pools.get(&pool);
                if let Some(pes) = existing {
                    let any = pes.values().next().expect("no empty pool in the model");
                    if any.policy.policy_type() != policy.policy_type() {
                        return Outcome::Refused(cause::INCONSISTENT_POLICY);
                    }
                    if let Some(pe) = pes.get(&id)
                        && let (Some(owner), Some(asking)) = (pe.association, association)
                        && owner != asking
                    {
                        return Outcome::Refused(cause::REJECTED_SECURITY);
                    }
                }
                let pool_created = existing.is_none();
                let old = self.pools.entry(pool).or_default().insert(
                    id,
                    ModelPe {
                        policy,
                        home,
                        association,
                    },
                );
                Outcome::Registered {
                    added: old.is_none(),
                    pool_created,
                    previous_home: old.map(|o| o.home).filter(|&h| h != home),
                }
            }
            Op::Deregister {
                pool,
                id,
                association,
            } => {
                let Some(pes) = self.pools.get_mut(&pool) else {
                    return Outcome::Deregistered(None);
                };
                let Some(pe) = pes.get(&id) else {
                    return Outcome::Deregistered(None);
                };
                if let (Some(asking), Some(owner)) = (association, pe.association)
                    && asking != owner
                {
                    return Outcome::Refused(cause::REJECTED_SECURITY);
                }
                pes.remove(&id);
                let pool_removed = pes.is_empty();
                if pool_removed {
                    self.pools.remove(&pool);
                }
                Outcome::Deregistered(Some((id, pool_removed)))
            }
        }
    }

    fn checksums(&self, handles: &[Vec<u8>], owner: u64) -> OwnerChecksums {
        let mut internet16 = Internet16::new();
        let mut ng = NgDigest::new();
        let mut pes = 0;
        for (&p, pool) in &self.pools {
            for (&id, pe) in pool {
                if pe.home == owner {
                    if let Ok(narrow) = u32::try_from(id) {
                        internet16.add(&handles[p], narrow);
                    }
                    ng.add(&handles[p], id);
                    pes += 1;
                }
            }
        }
        OwnerChecksums {
            internet16,
            ng,
            pes,
        }
    }
}

/// The PEs of a pool as (ID, home, policy, association), sorted by ID.
fn pool_state(snapshot: Option<Arc<PoolSnapshot>>) -> Vec<(u64, u64, Policy, Option<u64>)> {
    let mut v: Vec<_> = snapshot
        .iter()
        .flat_map(|s| s.entries().cloned().collect::<Vec<_>>())
        .map(|e| {
            (
                e.id().0,
                e.home_pr.0,
                e.registration.policy,
                e.association.map(AssociationId::get),
            )
        })
        .collect();
    v.sort_unstable_by_key(|x| x.0);
    v
}

/// A forwarded request and its completion.
enum Msg {
    Request { id: u64, origin: usize, op: Op },
    Done { id: u64, outcome: Outcome },
}

/// What one worker did.
struct WorkerReport {
    shard: Shard,
    /// The operations this worker applied to its shard, in order: (request id, op, outcome).
    log: Vec<(u64, Op, Outcome)>,
    /// Every request this worker issued, by id.
    issued: HashMap<u64, Op>,
    /// Completions of the requests it forwarded, by id.
    completed: HashMap<u64, Outcome>,
}

/// A worker: owns shard `me`, issues its own random requests (applying those for its shard,
/// forwarding the others to their owners), applies the requests forwarded to it and posts their
/// completions back. Returns `None` if another thread failed.
fn worker(
    me: usize,
    mut shard: Shard,
    mailboxes: &[Mailbox<Msg>],
    handles: &[Vec<u8>],
    finished: &AtomicUsize,
    handled: &AtomicU64,
    stop: &AtomicBool,
) -> Option<WorkerReport> {
    let _guard = StopOnPanic(stop);
    let shards = mailboxes.len();
    let mut rng = Rng::seed(0xF0E1_0000 + me as u64);
    let mut log = Vec::new();
    let mut issued = HashMap::new();
    let mut completed = HashMap::new();
    let mut outstanding: HashMap<u64, Op> = HashMap::new();
    let mut outbox: VecDeque<(usize, Msg)> = VecDeque::new();
    let mut next = 0u64;
    let mut announced = false;
    let began = Instant::now();
    let (mut seen_handled, mut since) = (0, Instant::now());
    loop {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        let now_handled = handled.load(Ordering::SeqCst);
        if now_handled != seen_handled || outstanding.is_empty() {
            (seen_handled, since) = (now_handled, Instant::now());
        }
        assert!(
            since.elapsed() < STALL,
            "worker {me}: no worker handled a message for {STALL:?} while {} of its forwarded \
             requests are outstanding: a message was lost",
            outstanding.len()
        );
        assert!(
            began.elapsed() < DEADLINE,
            "worker {me} stuck: {} forwarded requests outstanding, {} messages unsent",
            outstanding.len(),
            outbox.len()
        );
        let mut progress = false;
        // Issue a few requests per turn, with a bounded number in flight.
        for _ in 0..4 {
            if next == FWD_REQUESTS || outstanding.len() >= 32 {
                break;
            }
            let id = ((me as u64) << 32) | next;
            next += 1;
            let op = Op::random(&mut rng);
            issued.insert(id, op);
            let owner = shard_index(&handles[op.pool()], shards);
            if owner == me {
                let outcome = apply(&mut shard, handles, &op);
                log.push((id, op, outcome));
            } else {
                outstanding.insert(id, op);
                outbox.push_back((owner, Msg::Request { id, origin: me, op }));
            }
            progress = true;
        }
        // Post what waits; a full mailbox keeps the message for the next turn.
        for _ in 0..outbox.len() {
            let (to, msg) = outbox.pop_front().expect("counted");
            match mailboxes[to].post(msg) {
                Ok(()) => progress = true,
                Err(msg) => outbox.push_back((to, msg)),
            }
        }
        let drained = mailboxes[me].drain(16, |msg| match msg {
            Msg::Request { id, origin, op } => {
                assert_eq!(
                    shard_index(&handles[op.pool()], shards),
                    me,
                    "request {id:#x} routed to the wrong shard"
                );
                let outcome = apply(&mut shard, handles, &op);
                log.push((id, op, outcome));
                outbox.push_back((origin, Msg::Done { id, outcome }));
            }
            Msg::Done { id, outcome } => {
                assert_eq!(
                    id >> 32,
                    me as u64,
                    "completion {id:#x} sent to worker {me}"
                );
                assert!(
                    outstanding.remove(&id).is_some(),
                    "completion for request {id:#x}, which is not outstanding (duplicate?)"
                );
                assert!(completed.insert(id, outcome).is_none());
            }
        });
        handled.fetch_add(drained as u64, Ordering::SeqCst);
        progress |= drained > 0;
        if !announced && next == FWD_REQUESTS && outstanding.is_empty() {
            announced = true;
            finished.fetch_add(1, Ordering::SeqCst);
        }
        // Once every worker has all its completions, nothing is in flight any more.
        if announced
            && finished.load(Ordering::SeqCst) == shards
            && outbox.is_empty()
            && mailboxes[me].is_empty()
        {
            break;
        }
        if !progress {
            thread::yield_now();
        }
    }
    Some(WorkerReport {
        shard,
        log,
        issued,
        completed,
    })
}

/// Test 2: writes forwarded to their owning shard through mailboxes are applied exactly once,
/// and the final state equals a single-threaded replay of what the owners applied.
#[test]
fn forwarded_writes_are_applied_once_and_match_a_replay() {
    let handles = handles("fwd-pool", FWD_POOLS);
    let (shards, reader) = Handlespace::new(FWD_SHARDS, Limits::default()).into_shards();
    let mailboxes: Vec<Mailbox<Msg>> = (0..FWD_SHARDS).map(|_| Mailbox::new(8)).collect();
    let finished = AtomicUsize::new(0);
    let handled = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let readers = reader_count();

    let reports: Vec<WorkerReport> = thread::scope(|s| {
        let workers: Vec<_> = shards
            .into_iter()
            .enumerate()
            .map(|(me, shard)| {
                let (mailboxes, handles) = (&mailboxes, &handles);
                let (finished, handled, stop) = (&finished, &handled, &stop);
                s.spawn(move || worker(me, shard, mailboxes, handles, finished, handled, stop))
            })
            .collect();
        // Readers resolve meanwhile: every snapshot is internally consistent.
        let reader_threads: Vec<_> = (0..readers)
            .map(|r| {
                let (reader, handles, stop, finished) =
                    (reader.clone(), &handles, &stop, &finished);
                s.spawn(move || {
                    let _guard = StopOnPanic(stop);
                    let mut rng = Rng::seed(0xAB00 + r as u64);
                    let mut out = [0u32; 4];
                    let out_len = out.len();
                    let began = Instant::now();
                    while finished.load(Ordering::SeqCst) < FWD_SHARDS
                        && !stop.load(Ordering::SeqCst)
                    {
                        assert!(began.elapsed() < DEADLINE, "reader {r} ran too long");
                        let p = rng.below(FWD_POOLS as u64) as usize;
                        reader.resolve(&handles[p], &mut rng, &mut out, |snap, picked| {
                            assert!(!snap.is_empty(), "pool {p}: empty snapshot published");
                            assert_eq!(
                                picked.len(),
                                out_len.min(snap.len()),
                                "pool {p}: resolution count"
                            );
                            let ty = snap.entry(0).registration.policy.policy_type();
                            let mut ids: Vec<u64> = snap.entries().map(|e| e.id().0).collect();
                            assert!(
                                snap.entries()
                                    .all(|e| e.registration.policy.policy_type() == ty),
                                "pool {p}: snapshot mixes policy types"
                            );
                            ids.sort_unstable();
                            ids.dedup();
                            assert_eq!(ids.len(), snap.len(), "pool {p}: duplicate PE IDs");
                            for (j, &i) in picked.iter().enumerate() {
                                assert!((i as usize) < snap.len());
                                assert!(!picked[..j].contains(&i), "pool {p}: PE {i} twice");
                            }
                        });
                    }
                })
            })
            .collect();
        let reports = join_all(workers);
        stop.store(true, Ordering::SeqCst);
        join_all(reader_threads);
        reports
            .into_iter()
            .map(|r| r.expect("every worker finished"))
            .collect()
    });

    // Every request was applied exactly once, by the owner of its pool, as issued; every
    // forwarded request was completed once, with the outcome its owner logged.
    let issued: HashMap<u64, Op> = reports
        .iter()
        .flat_map(|r| r.issued.iter().map(|(&id, &op)| (id, op)))
        .collect();
    assert_eq!(issued.len(), FWD_SHARDS * FWD_REQUESTS as usize);
    let mut applied: HashMap<u64, (usize, Outcome)> = HashMap::new();
    for (s, report) in reports.iter().enumerate() {
        for &(id, op, outcome) in &report.log {
            assert_eq!(
                issued.get(&id),
                Some(&op),
                "request {id:#x} applied as another op"
            );
            assert_eq!(shard_index(&handles[op.pool()], FWD_SHARDS), s);
            assert!(
                applied.insert(id, (s, outcome)).is_none(),
                "request {id:#x} applied twice"
            );
        }
    }
    for &id in issued.keys() {
        assert!(applied.contains_key(&id), "request {id:#x} lost");
    }
    for (w, report) in reports.iter().enumerate() {
        let forwarded = report
            .issued
            .iter()
            .filter(|(_, op)| shard_index(&handles[op.pool()], FWD_SHARDS) != w)
            .count();
        assert!(forwarded > 0, "worker {w} forwarded nothing");
        assert_eq!(report.completed.len(), forwarded, "worker {w} completions");
        for (id, outcome) in &report.completed {
            assert_eq!(&applied[id].1, outcome, "completion of {id:#x}");
        }
    }

    // Replay each shard's log in order (a pool's ops all live in one log) into a fresh
    // single-threaded handlespace and into the naive model; outcomes must agree.
    let mut replay = Handlespace::new(FWD_SHARDS, Limits::default());
    let mut model = Model::default();
    let mut refused = 0;
    for (s, report) in reports.iter().enumerate() {
        for (id, op, outcome) in &report.log {
            let h = &handles[op.pool()];
            assert_eq!(replay.shard_of(h), s);
            let again = apply(replay.shard_mut(h), &handles, op);
            assert_eq!(&again, outcome, "replay of request {id:#x} ({op:?})");
            assert_eq!(
                &model.apply(op),
                outcome,
                "model for request {id:#x} ({op:?})"
            );
            refused += usize::from(matches!(outcome, Outcome::Refused(_)));
        }
    }
    assert!(refused > 0, "the operations never hit a refusal");

    // Final state: per pool, per shard, and the merged audit checksums per owner.
    for (p, h) in handles.iter().enumerate() {
        let s = shard_index(h, FWD_SHARDS);
        let concurrent = pool_state(reports[s].shard.snapshot(h));
        assert_eq!(
            concurrent,
            pool_state(reader.snapshot(h).map(|g| Arc::clone(&g))),
            "pool {p} published"
        );
        assert_eq!(
            concurrent,
            pool_state(replay.shard(h).snapshot(h)),
            "pool {p}"
        );
        let expected: Vec<_> = model
            .pools
            .get(&p)
            .into_iter()
            .flat_map(|pes| {
                pes.iter()
                    .map(|(&id, pe)| (id, pe.home, pe.policy, pe.association))
            })
            .collect();
        assert_eq!(concurrent, expected, "pool {p} against the model");
    }
    for (s, report) in reports.iter().enumerate() {
        assert_eq!(report.shard.pe_count(), replay.shards()[s].pe_count());
        assert_eq!(report.shard.pool_count(), replay.shards()[s].pool_count());
    }
    let pes: usize = reports.iter().map(|r| r.shard.pe_count()).sum();
    assert!(pes > 0, "nothing registered at the end");
    for owner in 0..=FWD_HOMES + 1 {
        let mut merged = OwnerChecksums::default();
        for report in &reports {
            merged.merge(&report.shard.checksums(PrId(owner)));
        }
        assert_eq!(
            merged,
            replay.checksums(PrId(owner)),
            "owner {owner} vs replay"
        );
        assert_eq!(
            merged,
            model.checksums(&handles, owner),
            "owner {owner} vs model"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Test 4: round robin under contention
// ---------------------------------------------------------------------------------------------

/// Many readers resolve one unchanging RR pool with items = 1; the cursor is one atomic
/// `fetch_add` per resolution, so in aggregate every PE is returned equally often (within 1).
#[test]
fn round_robin_stays_exact_under_contention() {
    const PES: usize = 7;
    const RESOLUTIONS: usize = 100_000;
    let handle: &[u8] = b"rr-contended";

    let mut hs = Handlespace::new(2, Limits::default());
    for id in 1..=PES as u64 {
        hs.register(
            handle,
            registration(id, Policy::RoundRobin),
            PrId(1),
            None,
            0,
        )
        .expect("register");
    }
    let reader = hs.reader().clone();
    let published = reader.snapshot(handle).expect("pool");
    let threads = reader_count().max(4);
    let start = Barrier::new(threads);
    let stop = AtomicBool::new(false);

    let counts: Vec<[u64; PES]> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (reader, published, start, stop) = (reader.clone(), &published, &start, &stop);
                s.spawn(move || {
                    let _guard = StopOnPanic(stop);
                    let mut rng = Rng::seed(t as u64);
                    let mut counts = [0u64; PES];
                    let mut out = [0u32; 1];
                    start.wait();
                    for _ in 0..RESOLUTIONS {
                        let id = reader
                            .resolve(handle, &mut rng, &mut out, |snapshot, picked| {
                                assert!(std::ptr::eq(snapshot, &**published), "the pool changed");
                                assert_eq!(picked.len(), 1);
                                snapshot.entry(picked[0] as usize).id().0
                            })
                            .expect("pool");
                        counts[id as usize - 1] += 1;
                    }
                    counts
                })
            })
            .collect();
        join_all(handles)
    });
    let mut total = [0u64; PES];
    for c in &counts {
        for (t, x) in total.iter_mut().zip(c) {
            *t += x;
        }
    }
    assert_eq!(total.iter().sum::<u64>(), (threads * RESOLUTIONS) as u64);
    let (min, max) = (total.iter().min().unwrap(), total.iter().max().unwrap());
    assert!(
        max - min <= 1,
        "round robin uneven under contention: {total:?}"
    );
    assert!(!stop.load(Ordering::SeqCst));
}

// ---------------------------------------------------------------------------------------------
// A pool of thousands growing and shrinking under readers (test 6)
// ---------------------------------------------------------------------------------------------

/// PEs the big pools reach.
const BIG: usize = 10_000;

/// The policy of big pool `kind` for PE `id`: round robin, weighted random (weight from the
/// ID) or least used (load from the ID).
fn big_policy(kind: usize, id: u64) -> Policy {
    match kind {
        0 => Policy::RoundRobin,
        1 => Policy::WeightedRandom {
            weight: 1 + (id % 7) as u32,
        },
        _ => Policy::LeastUsed {
            load: (id % 13) as u32 * 1000,
        },
    }
}

/// Test 6: three pools (round robin, weighted random, least used) grow to [`BIG`] PEs and shrink
/// back to one, twice, in batches of random registrations and deregistrations (the tree's
/// splits, merges and root changes), while readers on every core resolve them and check each
/// version they see: its size, its order, and resolutions of distinct PEs of that version that
/// follow the policy.
#[test]
fn big_pools_grow_and_shrink_under_concurrent_readers() {
    let mut hs = Handlespace::new(1, Limits::default());
    let pools = handles("big", 3);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    thread::scope(|s| {
        let reader = hs.reader().clone();
        let mut threads = Vec::new();
        for t in 0..reader_count() {
            let (reader, pools, stop) = (reader.clone(), &pools, &stop);
            threads.push(s.spawn(move || {
                let _guard = StopOnPanic(stop);
                let mut rng = Rng::seed(t as u64);
                let mut out = [0u32; 4];
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert!(started.elapsed() < DEADLINE, "hung");
                    let kind = rng.below(3) as usize;
                    let checked =
                        reader.resolve(&pools[kind], &mut rng, &mut out, |snap, picked| {
                            check_big_version(kind, snap, picked);
                        });
                    seen += u64::from(checked.is_some());
                }
                seen
            }));
        }
        let writer = {
            let (hs, pools, stop) = (&mut hs, &pools, &stop);
            s.spawn(move || {
                let _guard = StopOnPanic(stop);
                let mut rng = Rng::seed(99);
                let mut live: Vec<Vec<u64>> = vec![Vec::new(); 3];
                let mut largest = 0;
                for _cycle in 0..2 {
                    // Grow: batches of 64 new PEs per pool.
                    while live[0].len() < BIG {
                        hs.batch(|hs| {
                            for (kind, live) in live.iter_mut().enumerate() {
                                for _ in 0..64 {
                                    let id = 1 + rng.below(u64::from(u32::MAX - 1));
                                    let r = registration(id, big_policy(kind, id));
                                    if hs
                                        .register(&pools[kind], r, PrId(1), None, 0)
                                        .expect("valid")
                                        .added
                                    {
                                        live.push(id);
                                    }
                                }
                            }
                        });
                        largest = largest.max(live[0].len());
                    }
                    // Shrink to one PE: batches of 64 random deregistrations per pool.
                    while live[0].len() > 1 {
                        hs.batch(|hs| {
                            for (kind, live) in live.iter_mut().enumerate() {
                                for _ in 0..64.min(live.len() - 1) {
                                    let i = rng.below(live.len() as u64) as usize;
                                    let id = live.swap_remove(i);
                                    let removed = hs.deregister(&pools[kind], PeId(id), None);
                                    assert!(removed.expect("ok").is_some(), "PE {id} was live");
                                }
                            }
                        });
                    }
                }
                for (kind, live) in live.iter().enumerate() {
                    assert_eq!(
                        hs.reader().snapshot(&pools[kind]).expect("pool").len(),
                        live.len()
                    );
                }
                stop.store(true, Ordering::SeqCst);
                largest
            })
        };
        let largest = join_all(vec![writer]);
        assert!(largest[0] >= BIG, "the pools reached {} PEs", largest[0]);
        let seen: u64 = join_all(threads).iter().sum();
        assert!(seen > 0, "readers resolved");
    });
}

/// Checks one version of big pool `kind` as a reader sees it, and a resolution from it.
fn check_big_version(kind: usize, snap: &PoolSnapshot, picked: &[u32]) {
    let len = snap.len();
    assert!((1..=BIG + 3 * 64).contains(&len), "size {len}");
    assert_eq!(picked.len(), len.min(4), "a full resolution");
    for (j, &rank) in picked.iter().enumerate() {
        assert!((rank as usize) < len, "rank {rank} of {len}");
        assert!(!picked[..j].contains(&rank), "rank {rank} twice");
        let e = snap.entry(rank as usize);
        assert_eq!(
            e.registration.policy,
            big_policy(kind, e.id().0),
            "torn entry"
        );
    }
    match kind {
        // Round robin: consecutive ranks from the cursor.
        0 => {
            for w in picked.windows(2) {
                assert_eq!(w[1] as usize, (w[0] as usize + 1) % len);
            }
        }
        // Least used: loads never decrease along the answer.
        2 => {
            let load = |r: u32| match snap.entry(r as usize).registration.policy {
                Policy::LeastUsed { load } => load,
                other => panic!("{other:?}"),
            };
            for w in picked.windows(2) {
                assert!(load(w[0]) <= load(w[1]), "{picked:?}");
            }
        }
        _ => {}
    }
}
