//! Workload pieces shared by the handlespace benchmarks: random pool handles, PE registrations
//! shaped like the ones a registrar stores, pre-built handlespaces, pre-drawn lookup sequences and
//! the "touch like an encoder" step that reads the selected PEs.

// Each bench binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};

use rserpool_handlespace::{
    Handlespace, Limits, OwnedTransport, OwnedUserTransport, PeId, PeRegistration, PoolSnapshot,
    PrId, Rng,
};
use rserpool_protocol::{Policy, TransportKind};

/// Length of every pool handle in the benchmarks (RSPLIB's maximum).
pub const HANDLE_LEN: usize = 32;

/// A pool handle.
pub type Handle = [u8; HANDLE_LEN];

/// Registration life of the benchmark PEs (ms): finite, so every registration arms a timer.
pub const LIFE_MS: i32 = 30_000;

/// The home PR of every benchmark PE.
pub const HOME: PrId = PrId(1);

/// Whether the binary runs under `cargo bench` (which passes `--bench`). `cargo test
/// --all-targets` / `--benches` runs bench binaries without it; then the benchmarks shrink their
/// workloads so that CI stays fast.
pub fn is_cargo_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Limits that admit every benchmark workload (several 100k pools per shard).
pub fn bench_limits() -> Limits {
    Limits {
        max_pools: 1 << 24,
        ..Limits::default()
    }
}

/// `n` random 32-byte pool handles (distinct with overwhelming probability; checked).
pub fn random_handles(n: usize, rng: &mut Rng) -> Vec<Handle> {
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut h = [0u8; HANDLE_LEN];
        for chunk in h.chunks_exact_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        if seen.insert(h) {
            out.push(h);
        }
    }
    out
}

/// The PE ID of PE `j` of pool `pool` (never 0).
pub fn pe_id(pool: usize, pes_per_pool: usize, j: usize) -> PeId {
    PeId((pool * pes_per_pool + j + 1) as u64)
}

/// An IPv4 address derived from the PE ID (10.x.y.z).
pub fn address(id: PeId) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(id.0 as u32)))
}

/// An SCTP transport with one IPv4 address, data only.
pub fn sctp_transport(id: PeId) -> OwnedTransport {
    OwnedTransport {
        kind: TransportKind::Sctp,
        port: 9000 + (id.0 % 1000) as u16,
        transport_use: 0,
        service_code: 0,
        addresses: rserpool_handlespace::Addresses::One(address(id)),
    }
}

/// A PE registration: SCTP user transport with one IPv4 address, the given policy, a finite
/// life, and (as PEs learnt via ENRP carry it) an ASAP transport with one address if
/// `with_asap_transport`.
pub fn registration(id: PeId, policy: Policy, with_asap_transport: bool) -> PeRegistration {
    PeRegistration {
        id,
        registration_life: LIFE_MS,
        user_transport: OwnedUserTransport::Transport(sctp_transport(id)),
        policy,
        asap_transport: with_asap_transport.then(|| sctp_transport(id)),
    }
}

/// The policies the benchmarks use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    /// Round Robin.
    RoundRobin,
    /// Least Used with loads drawn from 5 levels (so some pools have ties).
    LeastUsed,
}

impl PolicyKind {
    /// A policy of this kind for one PE.
    pub fn policy(self, rng: &mut Rng) -> Policy {
        match self {
            Self::RoundRobin => Policy::RoundRobin,
            Self::LeastUsed => Policy::LeastUsed {
                load: rng.below(5) as u32 * (u32::MAX / 5),
            },
        }
    }
}

/// A handlespace of `shards` shards holding `handles.len()` pools of `pes_per_pool` PEs, built
/// pool after pool.
pub fn build_handlespace(
    shards: usize,
    handles: &[Handle],
    pes_per_pool: usize,
    kind: PolicyKind,
    with_asap_transport: bool,
) -> Handlespace {
    let mut hs = Handlespace::new(shards, bench_limits());
    let mut rng = Rng::seed(0xb0b);
    for (p, h) in handles.iter().enumerate() {
        for j in 0..pes_per_pool {
            let id = pe_id(p, pes_per_pool, j);
            let reg = registration(id, kind.policy(&mut rng), with_asap_transport);
            hs.register(h, reg, HOME, None, 0)
                .expect("benchmark registration is valid");
        }
    }
    hs
}

/// Re-registers every PE of a handlespace built by [`build_handlespace`] once, in random order,
/// as the periodic re-registrations of a running registrar do. A freshly built handlespace has
/// each pool's entries allocated next to each other; afterwards they are scattered over the heap
/// as in a registrar that has run for a while ("aged" layout).
pub fn age_handlespace(
    hs: &mut Handlespace,
    handles: &[Handle],
    pes_per_pool: usize,
    kind: PolicyKind,
    with_asap_transport: bool,
) {
    let mut rng = Rng::seed(0xa9e);
    let mut order: Vec<(u32, u32)> = (0..handles.len() as u32)
        .flat_map(|p| (0..pes_per_pool as u32).map(move |j| (p, j)))
        .collect();
    for i in (1..order.len()).rev() {
        let k = rng.below(i as u64 + 1) as usize;
        order.swap(i, k);
    }
    for (p, j) in order {
        let id = pe_id(p as usize, pes_per_pool, j as usize);
        let reg = registration(id, kind.policy(&mut rng), with_asap_transport);
        hs.register(&handles[p as usize], reg, HOME, None, 1)
            .expect("benchmark re-registration is valid");
    }
}

/// `len` pool handles drawn uniformly (with replacement) from `handles`, copied into one flat
/// vector so that a benchmark walks it sequentially and never runs the RNG.
pub fn lookup_sequence(handles: &[Handle], len: usize, rng: &mut Rng) -> Vec<Handle> {
    (0..len)
        .map(|_| handles[rng.below(handles.len() as u64) as usize])
        .collect()
}

/// Reads what an encoder of a handle resolution response reads of each selected PE (ID, home
/// PR, the user transport's port and first address) and folds it into a value the optimiser
/// cannot drop.
#[inline]
pub fn touch(snapshot: &PoolSnapshot, selected: &[u32]) -> u64 {
    let mut acc = 0u64;
    for &i in selected {
        let e = snapshot.entry(i as usize);
        acc = acc.wrapping_add(e.id().0 ^ e.home_pr.0.rotate_left(17));
        if let OwnedUserTransport::Transport(t) = &e.registration.user_transport {
            acc = acc.wrapping_add(u64::from(t.port));
            if let Some(IpAddr::V4(a)) = t.addresses.first() {
                acc = acc.wrapping_add(u64::from(u32::from(*a)));
            }
        }
    }
    acc
}
