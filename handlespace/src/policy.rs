//! Pool member selection: the engine that picks which PEs a handle resolution returns.
//!
//! # Model
//!
//! The handlespace keeps each pool as an immutable snapshot that the single writer rebuilds on
//! every change (registration, re-registration, deregistration) and many reader threads use
//! lock-free for handle resolution. Selection is split accordingly:
//!
//! * [`SelectionIndex`] is built once per snapshot from the PEs' policies
//!   ([`SelectionIndex::build`]) and never changes: sorted orders with tie groups, the weighted
//!   round-robin schedule, prefix sums of the random policies' values, static key parts.
//! * [`SelectionState`] holds what a resolution must advance pool-wide: one round-robin cursor
//!   (`AtomicU64`, relaxed `fetch_add`). The caller carries its value over on rebuild.
//! * The per-PE degradation counters ("times returned since the PE's last (re-)registration",
//!   RFC 5356 §5.2.2) are a caller-owned `&[AtomicU32]` parallel to the policies slice; the
//!   caller carries the values over on rebuild and resets a PE's counter when it re-registers.
//! * Each reader thread owns a [`Rng`] for the random policies.
//!
//! [`SelectionIndex::select`] writes up to `n` distinct PE indices (positions in the snapshot's
//! policies slice) into a caller-provided buffer, in the order the PU should use them. It never
//! allocates: scratch space is bounded stack arrays sized by [`MAX_SELECTION`], the protocol's cap
//! on returned items (procedures.md §7).
//!
//! # Concurrency
//!
//! Readers never block each other. Two resolutions racing on the same pool may read the same
//! degradation counters before either increments them and so both return the same "least used"
//! PE; each result is still a list of distinct, valid PEs. Every cursor value is taken by exactly
//! one resolution, so round robin stays exact in aggregate.
//!
//! # Policies
//!
//! The per-policy semantics, with the choices between RFC 5356 and RSPLIB, are listed on
//! [`SelectionIndex::select`]. Values and keys follow the formulas of policies.md §2 (RSPLIB's
//! `poolpolicy-template_impl.h`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rserpool_protocol::{Policy, policy_type as pt};

use crate::rng::Rng;

/// The most PEs one selection returns: handle resolutions are capped at 128 entries (RSPLIB's
/// registrar, procedures.md §7). Larger requests are clamped.
pub const MAX_SELECTION: usize = 128;

/// Full load / maximum weight on the u32 scale.
const MAX: u32 = u32::MAX;

/// The weighted round-robin schedule holds at most this many slots per PE (plus one per PE for
/// the "every positive weight keeps a slot" rule); larger weight sums are scaled down.
const WRR_SLOTS_PER_PE: u64 = 64;

/// Rejection-sampling attempts per draw for RLUD/RPLUD before falling back to an exact scan.
const REJECTION_TRIES: usize = 8;

/// Whether a policy type is adaptive (its PEs must re-register when their load changes,
/// RFC 5352 §6.5.2), per RSPLIB's explicit `PPT_IS_ADAPTIVE` list (`rserpool-policytypes.h`):
/// LU, LU-DPF, LUD, LUD-DPF, PLU, PLUD, PLU-DPF, PLUD-DPF, RLU, RLUD, RPLU and RPLUD.
///
/// The A bit (bit 30) is not used: RSPLIB's private 0xb000xxxx codes are adaptive with A = 0
/// (policies.md §1). WRAND-DPF is not in RSPLIB's list (its distance is maintained by the PR, not
/// by load updates), and neither are RR, WRR, RAND, WRAND and PRIO.
pub const fn is_adaptive(policy_type: u32) -> bool {
    matches!(
        policy_type,
        pt::LEAST_USED
            | pt::LEAST_USED_DPF
            | pt::LEAST_USED_DEGRADATION
            | pt::LEAST_USED_DEGRADATION_DPF
            | pt::PRIORITY_LEAST_USED
            | pt::PRIORITY_LEAST_USED_DEGRADATION
            | pt::PRIORITY_LEAST_USED_DPF
            | pt::PRIORITY_LEAST_USED_DEGRADATION_DPF
            | pt::RANDOMIZED_LEAST_USED
            | pt::RANDOMIZED_LEAST_USED_DEGRADATION
            | pt::RANDOMIZED_PRIORITY_LEAST_USED
            | pt::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION
    )
}

/// Whether a policy type reads and advances the per-PE degradation counters: LUD, PLUD,
/// LUD-DPF, PLUD-DPF, RLUD and RPLUD. For all other types [`SelectionIndex::select`] ignores the
/// `degradation` slice (an empty slice is fine).
pub const fn uses_degradation(policy_type: u32) -> bool {
    matches!(
        policy_type,
        pt::LEAST_USED_DEGRADATION
            | pt::PRIORITY_LEAST_USED_DEGRADATION
            | pt::LEAST_USED_DEGRADATION_DPF
            | pt::PRIORITY_LEAST_USED_DEGRADATION_DPF
            | pt::RANDOMIZED_LEAST_USED_DEGRADATION
            | pt::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION
    )
}

/// Registrar-wide selection settings, fixed when a [`SelectionIndex`] is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SelectionConfig {
    /// How many of the returned PEs (the first ones, in result order) get their degradation
    /// counter incremented by a resolution, for the policies where [`uses_degradation`] is true.
    ///
    /// RFC 5356 §5.2.2: each time a PE is returned to a PU its counter goes up, i.e. every
    /// returned PE ([`SelectionConfig::RFC`], `usize::MAX`, the default). RSPLIB's registrar
    /// setting `MaxIncrement` defaults to 1 for these policies: only the first returned PE, the
    /// one a PU will actually use ([`SelectionConfig::RSPLIB`]). 0 increments nothing (unlike
    /// RSPLIB, where 0 means "policy default").
    pub max_increment: usize,
}

impl SelectionConfig {
    /// RFC 5356 §5.2.2: every returned PE counts as returned.
    pub const RFC: Self = Self {
        max_increment: usize::MAX,
    };
    /// RSPLIB's default `MaxIncrement` of 1: only the first returned PE counts.
    pub const RSPLIB: Self = Self { max_increment: 1 };
}

impl Default for SelectionConfig {
    fn default() -> Self {
        Self::RFC
    }
}

/// The selection state that resolutions advance, in each snapshot of a pool; the next snapshot
/// starts where the current one's cursor stands (resolutions still reading the old snapshot
/// meanwhile advance the old one: the rotation may repeat a step when the pool changes, as
/// the degradation counters may lose an increment).
///
/// Only a round-robin cursor: each resolution of a cursor-using policy (RR, WRR, PRIO and the
/// least-used family, for their tie rotation) takes the next value with a relaxed `fetch_add`.
/// The random policies do not touch it. Not cache-line aligned: padding every pool's cursor to
/// 64 bytes cost ~10 bytes per PE in pools of 10, and resolutions of different pools rarely hit
/// neighbouring cursors at the same time.
#[derive(Debug, Default)]
pub struct SelectionState {
    cursor: AtomicU64,
}

impl SelectionState {
    /// A fresh state, cursor at 0.
    pub const fn new() -> Self {
        Self::with_cursor(0)
    }

    /// A state whose cursor starts at `cursor` (e.g. to restore or to randomise the start).
    pub const fn with_cursor(cursor: u64) -> Self {
        Self {
            cursor: AtomicU64::new(cursor),
        }
    }

    /// The cursor value the next resolution will use.
    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Relaxed)
    }

    /// Takes the next cursor value.
    #[inline]
    fn advance(&self) -> u64 {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }
}

/// What one snapshot of a pool precomputes for selection.
///
/// Built by the writer from the PEs' policies ([`SelectionIndex::build`]); read by any number of
/// threads ([`SelectionIndex::select`]). PE `i` of the index is `policies[i]` of the build call.
#[derive(Clone, Debug)]
pub struct SelectionIndex {
    policy_type: Option<u32>,
    len: u32,
    config: SelectionConfig,
    kind: Kind,
}

/// The precomputed data per policy family.
#[derive(Clone, Debug)]
enum Kind {
    /// No PEs.
    Empty,
    /// RR: the natural order 0..len.
    RoundRobin,
    /// WRR: the smooth schedule (PE index per slot) and the number of PEs with weight > 0.
    Schedule { slots: Box<[u32]>, distinct: u32 },
    /// PRIO, LU, PLU, LU-DPF, PLU-DPF: PE indices sorted by (key, index), and the end position
    /// (exclusive) of each group of equal keys.
    Sorted {
        order: Box<[u32]>,
        group_ends: Box<[u32]>,
    },
    /// RAND, WRAND, RLU, RPLU, WRAND-DPF: `prefix[i]` = sum of the values of PEs `0..i`
    /// (`len + 1` entries), and the number of PEs with value > 0.
    Weighted { prefix: Box<[u64]>, positive: u32 },
    /// RLUD, RPLUD: prefix sums of the values at degradation 0 (upper bounds of the live
    /// values), and per PE the static subtrahend (`load`, or `load + load_degradation`) and the
    /// load degradation.
    DegradedWeighted {
        prefix: Box<[u64]>,
        subtrahend: Box<[u64]>,
        step: Box<[u32]>,
    },
    /// LUD, PLUD, LUD-DPF, PLUD-DPF: PE indices sorted by (static key, index); per sorted
    /// position the static key and the load degradation.
    DegradedSorted {
        order: Box<[u32]>,
        static_key: Box<[u32]>,
        step: Box<[u32]>,
    },
}

/// A PE's policy fields, whichever variant carries them (absent fields: weight 1, others 0).
#[derive(Clone, Copy)]
struct Params {
    weight: u32,
    priority: u32,
    load: u32,
    load_degradation: u32,
    dpf: u32,
    distance: u32,
}

impl Params {
    fn of(p: &Policy) -> Self {
        let mut r = Self {
            weight: 1,
            priority: 0,
            load: 0,
            load_degradation: 0,
            dpf: 0,
            distance: 0,
        };
        match *p {
            Policy::RoundRobin | Policy::Random => {}
            Policy::WeightedRoundRobin { weight } | Policy::WeightedRandom { weight } => {
                r.weight = weight;
            }
            Policy::Priority { priority } => r.priority = priority,
            Policy::LeastUsed { load } | Policy::RandomizedLeastUsed { load } => r.load = load,
            Policy::LeastUsedDegradation {
                load,
                load_degradation,
            }
            | Policy::PriorityLeastUsed {
                load,
                load_degradation,
            }
            | Policy::RandomizedPriorityLeastUsed {
                load,
                load_degradation,
            }
            | Policy::RandomizedLeastUsedDegradation {
                load,
                load_degradation,
            }
            | Policy::PriorityLeastUsedDegradation {
                load,
                load_degradation,
            }
            | Policy::RandomizedPriorityLeastUsedDegradation {
                load,
                load_degradation,
            } => {
                r.load = load;
                r.load_degradation = load_degradation;
            }
            Policy::WeightedRandomDpf {
                weight,
                weight_dpf,
                distance,
            } => {
                r.weight = weight;
                r.dpf = weight_dpf;
                r.distance = distance;
            }
            Policy::LeastUsedDpf {
                load,
                load_dpf,
                distance,
            } => {
                r.load = load;
                r.dpf = load_dpf;
                r.distance = distance;
            }
            Policy::LeastUsedDegradationDpf {
                load,
                load_degradation,
                load_dpf,
                distance,
            }
            | Policy::PriorityLeastUsedDpf {
                load,
                load_degradation,
                load_dpf,
                distance,
            }
            | Policy::PriorityLeastUsedDegradationDpf {
                load,
                load_degradation,
                load_dpf,
                distance,
            } => {
                r.load = load;
                r.load_degradation = load_degradation;
                r.dpf = load_dpf;
                r.distance = distance;
            }
        }
        r
    }

    /// The distance penalty on the load scale: `distance × load_dpf` (load DPF is a fraction of
    /// full load per millisecond, so `distance × (ldpf / MAX) × MAX`), exact in u64.
    fn load_penalty(&self) -> u64 {
        u64::from(self.distance) * u64::from(self.dpf)
    }
}

/// Clamps to the u32 load scale.
#[inline]
fn sat32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(MAX)
}

/// The degradation amount D = counter × load degradation, saturating at full load.
#[inline]
fn degradation_amount(counter: u32, step: u32) -> u64 {
    u64::from(counter)
        .saturating_mul(u64::from(step))
        .min(u64::from(MAX))
}

/// The static (build-time) sort key of a sorted policy; ascending = preferred.
fn static_key(ty: u32, p: &Params) -> u32 {
    let load = u64::from(p.load);
    let ld = u64::from(p.load_degradation);
    match ty {
        pt::PRIORITY => MAX - p.priority,
        pt::LEAST_USED | pt::LEAST_USED_DEGRADATION => p.load,
        pt::PRIORITY_LEAST_USED | pt::PRIORITY_LEAST_USED_DEGRADATION => sat32(load + ld),
        pt::LEAST_USED_DPF | pt::LEAST_USED_DEGRADATION_DPF => {
            sat32(load.saturating_add(p.load_penalty()))
        }
        pt::PRIORITY_LEAST_USED_DPF | pt::PRIORITY_LEAST_USED_DEGRADATION_DPF => {
            sat32((load + ld).saturating_add(p.load_penalty()))
        }
        _ => 0,
    }
}

/// The draw value of a random policy at degradation 0 (policies.md §2.1, §2.2).
fn random_value(ty: u32, p: &Params) -> u64 {
    let max = u64::from(MAX);
    let load = u64::from(p.load);
    let ld = u64::from(p.load_degradation);
    match ty {
        pt::RANDOM => 1,
        pt::WEIGHTED_RANDOM => u64::from(p.weight),
        pt::RANDOMIZED_LEAST_USED | pt::RANDOMIZED_LEAST_USED_DEGRADATION => {
            max.saturating_sub(load).max(1)
        }
        pt::RANDOMIZED_PRIORITY_LEAST_USED | pt::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION => {
            max.saturating_sub(load + ld).max(1)
        }
        pt::WEIGHTED_RANDOM_DPF => {
            if p.weight == 0 {
                return 0;
            }
            // weight × distance × (wdpf / MAX), rounded to nearest, exact in u128.
            let x = u128::from(p.weight) * u128::from(p.distance) * u128::from(p.dpf);
            let m = u128::from(MAX);
            let penalty = (x + m / 2) / m;
            u64::try_from(u128::from(p.weight).saturating_sub(penalty))
                .unwrap_or(max)
                .max(1)
        }
        _ => 0,
    }
}

/// Builds the smooth WRR schedule. Each PE gets slots proportional to its weight (scaled so the
/// schedule has at most `WRR_SLOTS_PER_PE × len` slots plus one per PE; a positive weight keeps
/// at least one slot, weight 0 gets none). PE `i`'s `w` copies sit at the cycle positions
/// `(k + φᵢ) / w`, `k < w`, so each PE's copies are evenly spaced. The phase staggers PEs of
/// equal (scaled) weight: the `r`-th of `m` such PEs (by index) gets `φ = (r + ½) / m`, so they
/// are spread over the cycle rather than clustered (and the distinct PEs a walk collects vary
/// with its start); equal weights give plain round robin in index order. Equal positions go to
/// the lower index.
///
/// Positions are uniformly dense over the cycle, so a bucket sort (one bucket per slot) orders
/// them in O(slots).
fn wrr_schedule(weights: &[u32]) -> (Box<[u32]>, u32) {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let distinct = weights.iter().filter(|&&w| w > 0).count() as u32;
    let bound = WRR_SLOTS_PER_PE * weights.len() as u64;
    let copies: Vec<usize> = weights
        .iter()
        .map(|&w| {
            if w == 0 || total <= bound {
                w as usize
            } else {
                let scaled =
                    (u128::from(w) * u128::from(bound) + u128::from(total / 2)) / u128::from(total);
                usize::try_from(scaled).unwrap_or(usize::MAX).max(1)
            }
        })
        .collect();
    let slots: usize = copies.iter().sum();
    if slots == 0 {
        return (Box::new([]), distinct);
    }
    // Rank and size of each PE's class of equal copy counts.
    let mut by_class: Vec<u32> = (0..copies.len() as u32).collect();
    by_class.sort_by_key(|&i| copies[i as usize]);
    let mut phase = vec![0.0f64; copies.len()];
    for class in by_class.chunk_by(|&a, &b| copies[a as usize] == copies[b as usize]) {
        let m = class.len() as f64;
        for (r, &i) in class.iter().enumerate() {
            phase[i as usize] = (r as f64 + 0.5) / m;
        }
    }
    // Bucket sort in two passes over the (recomputed) positions: count, then place.
    let positions = || {
        copies.iter().enumerate().flat_map(|(i, &w)| {
            let ph = phase[i];
            (0..w).map(move |k| ((k as f64 + ph) / w as f64, i as u32))
        })
    };
    let bucket = |pos: f64| ((pos * slots as f64) as usize).min(slots - 1);
    let mut start = vec![0u32; slots + 1];
    for (pos, _) in positions() {
        start[bucket(pos) + 1] += 1;
    }
    for b in 0..slots {
        start[b + 1] += start[b];
    }
    let mut fill = start.clone();
    let mut sorted = vec![(0.0, 0u32); slots];
    for e in positions() {
        let b = bucket(e.0);
        sorted[fill[b] as usize] = e;
        fill[b] += 1;
    }
    drop(fill);
    for b in start.windows(2) {
        let (lo, hi) = (b[0] as usize, b[1] as usize);
        if hi - lo > 1 {
            sorted[lo..hi].sort_unstable_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        }
    }
    (sorted.into_iter().map(|e| e.1).collect(), distinct)
}

/// Prefix sums (`len + 1` entries, starting at 0).
fn prefix_sums(values: impl Iterator<Item = u64>) -> Box<[u64]> {
    let mut acc = 0u64;
    std::iter::once(0)
        .chain(values.map(|v| {
            acc += v;
            acc
        }))
        .collect()
}

/// PE indices sorted by (key, index).
fn sorted_order(keys: &[u32]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    order.sort_by_key(|&i| keys[i as usize]); // stable: ties stay in index order
    order
}

impl SelectionIndex {
    /// Precomputes selection for a snapshot whose PE `i` has policy `policies[i]`, with the
    /// default [`SelectionConfig`] (RFC behaviour).
    ///
    /// All PEs of a pool have the same policy type (the pool enforces it, RFC 5352 §3.1); the
    /// first PE's type drives the pool. Should a PE of another type slip in, its fields are taken
    /// from its own variant where they exist (weight 1 and 0 for everything else otherwise).
    ///
    /// # Panics
    ///
    /// If the pool has more than `u32::MAX` PEs.
    pub fn build(policies: &[Policy]) -> Self {
        Self::build_with_config(policies, SelectionConfig::default())
    }

    /// [`SelectionIndex::build`] with explicit settings.
    ///
    /// # Panics
    ///
    /// If the pool has more than `u32::MAX` PEs.
    pub fn build_with_config(policies: &[Policy], config: SelectionConfig) -> Self {
        let len = u32::try_from(policies.len()).expect("a pool holds at most u32::MAX PEs");
        let Some(first) = policies.first() else {
            return Self {
                policy_type: None,
                len: 0,
                config,
                kind: Kind::Empty,
            };
        };
        let ty = first.policy_type();
        let params: Vec<Params> = policies.iter().map(Params::of).collect();
        let kind = match ty {
            pt::ROUND_ROBIN => Kind::RoundRobin,
            pt::WEIGHTED_ROUND_ROBIN => {
                let weights: Vec<u32> = params.iter().map(|p| p.weight).collect();
                let (slots, distinct) = wrr_schedule(&weights);
                Kind::Schedule { slots, distinct }
            }
            pt::RANDOM
            | pt::WEIGHTED_RANDOM
            | pt::RANDOMIZED_LEAST_USED
            | pt::RANDOMIZED_PRIORITY_LEAST_USED
            | pt::WEIGHTED_RANDOM_DPF => {
                let values: Vec<u64> = params.iter().map(|p| random_value(ty, p)).collect();
                let positive = values.iter().filter(|&&v| v > 0).count() as u32;
                Kind::Weighted {
                    prefix: prefix_sums(values.into_iter()),
                    positive,
                }
            }
            pt::RANDOMIZED_LEAST_USED_DEGRADATION
            | pt::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION => {
                let with_ld = ty == pt::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION;
                Kind::DegradedWeighted {
                    prefix: prefix_sums(params.iter().map(|p| random_value(ty, p))),
                    subtrahend: params
                        .iter()
                        .map(|p| {
                            u64::from(p.load)
                                + if with_ld {
                                    u64::from(p.load_degradation)
                                } else {
                                    0
                                }
                        })
                        .collect(),
                    step: params.iter().map(|p| p.load_degradation).collect(),
                }
            }
            pt::LEAST_USED_DEGRADATION
            | pt::PRIORITY_LEAST_USED_DEGRADATION
            | pt::LEAST_USED_DEGRADATION_DPF
            | pt::PRIORITY_LEAST_USED_DEGRADATION_DPF => {
                let keys: Vec<u32> = params.iter().map(|p| static_key(ty, p)).collect();
                let order = sorted_order(&keys);
                Kind::DegradedSorted {
                    static_key: order.iter().map(|&i| keys[i as usize]).collect(),
                    step: order
                        .iter()
                        .map(|&i| params[i as usize].load_degradation)
                        .collect(),
                    order: order.into_boxed_slice(),
                }
            }
            // PRIO, LU, PLU, LU-DPF, PLU-DPF (every policy type the codec knows is covered
            // above or here).
            _ => {
                let keys: Vec<u32> = params.iter().map(|p| static_key(ty, p)).collect();
                let order = sorted_order(&keys);
                let mut group_ends = Vec::new();
                for pos in 1..order.len() {
                    if keys[order[pos] as usize] != keys[order[pos - 1] as usize] {
                        group_ends.push(pos as u32);
                    }
                }
                group_ends.push(len);
                Kind::Sorted {
                    order: order.into_boxed_slice(),
                    group_ends: group_ends.into_boxed_slice(),
                }
            }
        };
        Self {
            policy_type: Some(ty),
            len,
            config,
            kind,
        }
    }

    /// The pool's policy type (the first PE's), or `None` for an empty pool.
    pub fn policy_type(&self) -> Option<u32> {
        self.policy_type
    }

    /// Number of PEs.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the pool has no PEs.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The settings this index was built with.
    pub fn config(&self) -> SelectionConfig {
        self.config
    }

    /// Selects up to `n` distinct PEs for one handle resolution and writes their indices to
    /// `out`, best first (the order the PU should try them); returns how many were written.
    ///
    /// The count is at most `min(n, out.len(), MAX_SELECTION, self.len())`, and smaller only
    /// when the policy cannot offer more PEs (weight 0). `n = 0` or an empty pool returns 0 and
    /// changes no state. `degradation[i]` is PE `i`'s degradation counter (only read and
    /// incremented for the policies of [`uses_degradation`]; a missing entry counts as 0 and
    /// is not incremented). Does not allocate.
    ///
    /// "Cursor" below is the value this resolution takes from `state` (`fetch_add(1)`), so it
    /// advances by exactly one per resolution; "ties rotated" means each group of equal keys,
    /// in a fixed order (PE index; for the LUD family static key, then PE index), is rotated
    /// left by `cursor % group size` (round robin among equals, RFC 5356 §5.1.2). RSPLIB gets
    /// the same effect by giving the first returned PE a new sequence number (`MaxIncrement` =
    /// 1); the two agree for the first group, while we also rotate lower groups, which RSPLIB
    /// leaves in sequence order.
    ///
    /// * **RR** (RFC 5356 §4.1.2): PEs `cursor % len`, `+1`, … (wrapping), i.e. the head of the
    ///   circular list advances by one per resolution (RSPLIB: the first returned PE gets a new
    ///   sequence number; identical).
    /// * **WRR** (§4.2.2): a precomputed smooth schedule in which each PE appears in proportion
    ///   to weight / sum, its copies evenly spread; the walk starts at slot `cursor % slots` and
    ///   collects distinct PEs. Weight 0 is never selected. Weight sums above 64 × pool size are
    ///   scaled down (each positive weight keeps at least one slot), so proportions are then
    ///   approximate. RSPLIB's round and virtual counters serve the lighter PEs first and then
    ///   each PE's copies back to back (2/1/1: `B C A A`); we follow the RFC's "spread as evenly
    ///   as possible" (2/1/1: `A B A C`; 3/1: `A A B A`).
    /// * **RAND** (§4.3.2), **WRAND** (§4.4.2), **RLU** (§5.4.2), RSPLIB's **RPLU**, **RLUD**,
    ///   **RPLUD** and **WRAND-DPF**: successive weighted draws without replacement using
    ///   `rng`, value 1 (RAND), `weight` (WRAND; 0 never), `max(1, MAX − load)` (RLU),
    ///   `max(1, MAX − load − load_deg)` (RPLU), `max(1, MAX − load − D)` (RLUD),
    ///   `max(1, MAX − load − load_deg − D)` (RPLUD) and `weight − round(weight × distance ×
    ///   wdpf / MAX)` (WRAND-DPF; weight 0 never, otherwise at least 1: RSPLIB gives 0 in the
    ///   single case where the penalty equals the weight exactly and 1 when it exceeds it, we
    ///   give 1 in both). D = counter × load_deg, saturating at MAX. The RFC's RLU value
    ///   `MAX − load` becomes 0 at full load; we keep RSPLIB's `max(1, …)` so a fully loaded
    ///   PE keeps a tiny chance. No cursor use.
    /// * **PRIO** (§4.5.2): highest priority first, ties rotated.
    /// * **LU** (§5.1.2): ascending load, ties rotated.
    /// * **PLU** (§5.3.2): ascending `load + load_deg` (saturating), ties rotated.
    /// * **LU-DPF**, **PLU-DPF** (RSPLIB): ascending `load (+ load_deg) + distance × ldpf`
    ///   (saturating, exact integer arithmetic where RSPLIB rounds a double), ties rotated.
    /// * **LUD** (§5.2.2), RSPLIB's **PLUD**, **LUD-DPF**, **PLUD-DPF**: ascending
    ///   `static key + D` (saturating), static key as for LU, PLU, LU-DPF, PLU-DPF; ties
    ///   rotated; then the counter of each of the first `config.max_increment` returned PEs is
    ///   incremented by 1 (saturating). RSPLIB's code also grows D on re-linking into its tree
    ///   (policies.md §2.1 caveat); we count returns only.
    /// * **RLUD**, **RPLUD** increment the counters of their first `max_increment` results the
    ///   same way, so D means "times returned" as for LUD. (RSPLIB's update hook for these two
    ///   only recomputes the value and never grows D, which would make them equal to RLU and
    ///   RPLU; we follow the evident intent of the degradation term.)
    ///
    /// Cost per call (`len` = pool size): RR and the static sorted policies O(n); WRR the walk
    /// from the cursor until `n` distinct PEs are seen (at most the schedule length, ≤ 65 ×
    /// len); static random policies O(n² + n log len); RLUD/RPLUD the same while rejection
    /// succeeds, O(n · len) for heavily degraded pools; the LUD family one scan of the PEs
    /// whose static key is below the n-th best key (up to 3 × len when a tie group straddles
    /// the cut).
    pub fn select(
        &self,
        degradation: &[AtomicU32],
        state: &SelectionState,
        n: usize,
        rng: &mut Rng,
        out: &mut [u32],
    ) -> usize {
        let n = n.min(out.len()).min(MAX_SELECTION).min(self.len as usize);
        if n == 0 {
            return 0;
        }
        let out = &mut out[..n];
        match &self.kind {
            Kind::Empty => 0,
            Kind::RoundRobin => {
                // One division for the start; the rest wraps by comparison.
                let mut i = (state.advance() % u64::from(self.len)) as u32;
                for o in out.iter_mut() {
                    *o = i;
                    i += 1;
                    if i == self.len {
                        i = 0;
                    }
                }
                n
            }
            Kind::Schedule { slots, distinct } => {
                select_schedule(slots, *distinct as usize, state, out)
            }
            Kind::Sorted { order, group_ends } => {
                select_sorted(order, group_ends, state.advance(), out)
            }
            Kind::Weighted { prefix, positive } => {
                let k = n.min(*positive as usize);
                draw_static(prefix, rng, &mut out[..k])
            }
            Kind::DegradedWeighted {
                prefix,
                subtrahend,
                step,
            } => {
                let k = draw_degraded(prefix, subtrahend, step, degradation, rng, out);
                increment(degradation, &out[..k], self.config.max_increment);
                k
            }
            Kind::DegradedSorted {
                order,
                static_key,
                step,
            } => {
                let k = select_degraded_sorted(
                    order,
                    static_key,
                    step,
                    degradation,
                    state.advance(),
                    out,
                );
                increment(degradation, &out[..k], self.config.max_increment);
                k
            }
        }
    }
}

/// Reads PE `i`'s degradation counter (0 if the caller's slice has no entry).
#[inline]
fn counter(degradation: &[AtomicU32], i: u32) -> u32 {
    degradation
        .get(i as usize)
        .map_or(0, |c| c.load(Ordering::Relaxed))
}

/// Increments the counters of the first `max_increment` selected PEs, saturating at u32::MAX.
fn increment(degradation: &[AtomicU32], selected: &[u32], max_increment: usize) {
    for &i in selected.iter().take(max_increment) {
        if let Some(c) = degradation.get(i as usize) {
            // Err only when already saturated: nothing to do then.
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_add(1));
        }
    }
}

/// A fixed-capacity set of PE indices on the stack (open addressing, ≤ 50 % full for
/// `MAX_SELECTION` entries).
struct SeenSet {
    slots: [u32; 2 * MAX_SELECTION],
}

impl SeenSet {
    const EMPTY: u32 = u32::MAX;

    fn new() -> Self {
        Self {
            slots: [Self::EMPTY; 2 * MAX_SELECTION],
        }
    }

    /// Inserts `v` (never `u32::MAX`, which is no PE index); false if it was present. At most
    /// `MAX_SELECTION` values may be inserted.
    fn insert(&mut self, v: u32) -> bool {
        let mask = self.slots.len() - 1;
        let mut h = (v.wrapping_mul(0x9e37_79b9) >> 23) as usize & mask;
        loop {
            match self.slots[h] {
                Self::EMPTY => {
                    self.slots[h] = v;
                    return true;
                }
                x if x == v => return false,
                _ => h = (h + 1) & mask,
            }
        }
    }
}

/// WRR: walks the schedule from the cursor's slot, collecting distinct PEs.
fn select_schedule(
    slots: &[u32],
    distinct: usize,
    state: &SelectionState,
    out: &mut [u32],
) -> usize {
    let k = out.len().min(distinct);
    if k == 0 || slots.is_empty() {
        return 0;
    }
    let mut pos = (state.advance() % slots.len() as u64) as usize;
    if k == 1 {
        out[0] = slots[pos];
        return 1;
    }
    let mut seen = SeenSet::new();
    let mut w = 0;
    for _ in 0..slots.len() {
        let pe = slots[pos];
        if seen.insert(pe) {
            out[w] = pe;
            w += 1;
            if w == k {
                break;
            }
        }
        pos += 1;
        if pos == slots.len() {
            pos = 0;
        }
    }
    w
}

/// Static sorted policies: walks the groups of equal keys in order, each rotated by the cursor.
fn select_sorted(order: &[u32], group_ends: &[u32], cursor: u64, out: &mut [u32]) -> usize {
    let n = out.len();
    let mut w = 0;
    let mut start = 0usize;
    for &end in group_ends {
        let end = end as usize;
        let g = end - start;
        let mut r = (cursor % g as u64) as usize;
        let take = g.min(n - w);
        for o in out[w..w + take].iter_mut() {
            *o = order[start + r];
            r += 1;
            if r == g {
                r = 0;
            }
        }
        w += take;
        if w == n {
            break;
        }
        start = end;
    }
    w
}

/// Dynamic sorted policies (LUD family): the `out.len()` smallest `static key + D`, groups of
/// equal keys rotated by the cursor, without allocation.
///
/// Pass 1 keeps the best `(key, position)` pairs in a bounded sorted buffer, scanning positions
/// in static-key order and stopping once the static key alone reaches the buffer's worst key
/// (D ≥ 0). Groups below the worst key are complete in the buffer. If the worst key's group has
/// members outside the buffer, pass 2 counts it and pass 3 picks the rotated window of it.
/// Concurrent counter changes between passes are tolerated: the result stays distinct and full.
fn select_degraded_sorted(
    order: &[u32],
    static_key: &[u32],
    step: &[u32],
    degradation: &[AtomicU32],
    cursor: u64,
    out: &mut [u32],
) -> usize {
    let n = out.len();
    let key_at = |pos: usize| -> u32 {
        let d = degradation_amount(counter(degradation, order[pos]), step[pos]);
        sat32(u64::from(static_key[pos]) + d)
    };

    // Pass 1: bounded top-n buffer of (key, position), sorted ascending.
    let mut buf = [(0u32, 0u32); MAX_SELECTION];
    let mut m = 0usize;
    for (pos, &skey) in static_key.iter().enumerate() {
        if m == n && skey >= buf[n - 1].0 {
            break;
        }
        let key = key_at(pos);
        if m == n && key >= buf[n - 1].0 {
            continue;
        }
        // Positions ascend, so an equal key goes after the existing ones.
        let at = buf[..m].partition_point(|e| e.0 <= key);
        let last = if m == n { n - 1 } else { m };
        buf.copy_within(at..last, at + 1);
        buf[at] = (key, pos as u32);
        if m < n {
            m += 1;
        }
    }
    let buf = &buf[..m];
    let worst = buf[m - 1].0;

    // Complete groups below the worst key, rotated.
    let mut w = 0;
    let mut s = 0;
    while s < m && buf[s].0 < worst {
        let mut e = s;
        while e < m && buf[e].0 == buf[s].0 {
            e += 1;
        }
        let g = e - s;
        let r = (cursor % g as u64) as usize;
        for j in 0..g {
            out[w + j] = order[buf[s + (r + j) % g].1 as usize];
        }
        w += g;
        s = e;
    }
    let boundary = &buf[s..];
    let kb = boundary.len();

    // Positions already output (sorted), to skip in passes 2 and 3 should a counter have moved
    // one of them onto the worst key meanwhile.
    let mut lower = [0u32; MAX_SELECTION];
    for (l, e) in lower.iter_mut().zip(&buf[..s]) {
        *l = e.1;
    }
    lower[..s].sort_unstable();
    let lower = &lower[..s];

    // Pass 2: size of the worst key's group over the whole pool.
    let scan = |visit: &mut dyn FnMut(usize) -> bool| {
        let mut li = 0;
        for (pos, &skey) in static_key.iter().enumerate() {
            if skey > worst {
                break;
            }
            while li < lower.len() && (lower[li] as usize) < pos {
                li += 1;
            }
            if li < lower.len() && lower[li] as usize == pos {
                continue;
            }
            if key_at(pos) == worst && !visit(pos) {
                break;
            }
        }
    };
    let mut g = 0usize;
    scan(&mut |_| {
        g += 1;
        true
    });

    if g <= kb {
        // The whole group is in the buffer: rotate it like the others.
        let r = (cursor % kb as u64) as usize;
        for j in 0..kb {
            out[w + j] = order[boundary[(r + j) % kb].1 as usize];
        }
        return w + kb;
    }

    // Pass 3: the members at ranks r, r + 1, … (mod g) of the group, in that order.
    let r = (cursor % g as u64) as usize;
    let mut picked = [u32::MAX; MAX_SELECTION];
    let mut rank = 0usize;
    scan(&mut |pos| {
        let slot = (rank + g - r) % g;
        if slot < kb {
            picked[slot] = order[pos];
        }
        rank += 1;
        rank < g
    });
    let mut got = 0;
    for &pe in &picked[..kb] {
        if pe != u32::MAX {
            out[w + got] = pe;
            got += 1;
        }
    }
    // Only under concurrent counter changes: top up from the buffer's members of the group.
    for e in boundary {
        if got == kb {
            break;
        }
        let pe = order[e.1 as usize];
        if !out[w..w + got].contains(&pe) {
            out[w + got] = pe;
            got += 1;
        }
    }
    w + got
}

/// Maps a draw `r` over the values not yet chosen to a PE index: skips the chosen PEs'
/// intervals (`chosen` sorted by index, so by interval start), then binary-searches the prefix
/// sums. Zero-width intervals are never hit.
fn locate(prefix: &[u64], chosen: &[u32], r: u64) -> u32 {
    let mut x = r;
    for &c in chosen {
        let start = prefix[c as usize];
        if start <= x {
            x += prefix[c as usize + 1] - start;
        } else {
            break;
        }
    }
    (prefix.partition_point(|&p| p <= x) - 1) as u32
}

/// Inserts `i` into the sorted prefix `chosen[..len]`.
fn insert_sorted(chosen: &mut [u32; MAX_SELECTION], len: usize, i: u32) {
    let at = chosen[..len].partition_point(|&c| c < i);
    chosen.copy_within(at..len, at + 1);
    chosen[at] = i;
}

/// Static random policies: `out.len()` successive weighted draws without replacement
/// (`out.len()` ≤ number of PEs with a positive value).
fn draw_static(prefix: &[u64], rng: &mut Rng, out: &mut [u32]) -> usize {
    let mut chosen = [0u32; MAX_SELECTION];
    let mut remaining = prefix[prefix.len() - 1];
    for (k, o) in out.iter_mut().enumerate() {
        if remaining == 0 {
            return k;
        }
        let i = locate(prefix, &chosen[..k], rng.below(remaining));
        remaining -= prefix[i as usize + 1] - prefix[i as usize];
        insert_sorted(&mut chosen, k, i);
        *o = i;
    }
    out.len()
}

/// RLUD/RPLUD: weighted draws without replacement with live values
/// `max(1, MAX − subtrahend − D)`. Each draw first tries rejection sampling against the static
/// upper bounds (value at D = 0, whose prefix sums are precomputed): draw by bound, accept with
/// probability value / bound; this is exact and O(log len). After `REJECTION_TRIES` rejections
/// (heavily degraded pools) it falls back to an exact two-pass scan over the live values.
fn draw_degraded(
    prefix: &[u64],
    subtrahend: &[u64],
    step: &[u32],
    degradation: &[AtomicU32],
    rng: &mut Rng,
    out: &mut [u32],
) -> usize {
    let value = |i: usize| -> u64 {
        let d = degradation_amount(counter(degradation, i as u32), step[i]);
        u64::from(MAX)
            .saturating_sub(subtrahend[i].saturating_add(d))
            .max(1)
    };
    let mut chosen = [0u32; MAX_SELECTION];
    let mut remaining = prefix[prefix.len() - 1];
    for k in 0..out.len() {
        let mut pick = None;
        for _ in 0..REJECTION_TRIES {
            let i = locate(prefix, &chosen[..k], rng.below(remaining)) as usize;
            let bound = prefix[i + 1] - prefix[i];
            let v = value(i);
            if v >= bound || rng.below(bound) < v {
                pick = Some(i);
                break;
            }
        }
        let i = match pick {
            Some(i) => i,
            None => scan_draw(&chosen[..k], subtrahend.len(), &value, rng),
        };
        remaining -= prefix[i + 1] - prefix[i];
        insert_sorted(&mut chosen, k, i as u32);
        out[k] = i as u32;
    }
    out.len()
}

/// Exact weighted draw over the PEs not in `chosen` (sorted): one pass for the sum, one to find
/// the drawn PE. Every live value is ≥ 1, so the sum is positive while a PE remains. Should
/// values shrink between the passes (concurrent increments), the last candidate is taken.
fn scan_draw(chosen: &[u32], len: usize, value: &dyn Fn(usize) -> u64, rng: &mut Rng) -> usize {
    let candidates = || {
        let mut ci = 0;
        (0..len).filter(move |&i| {
            if ci < chosen.len() && chosen[ci] as usize == i {
                ci += 1;
                false
            } else {
                true
            }
        })
    };
    let total: u64 = candidates().map(value).sum();
    let r = rng.below(total);
    let mut acc = 0u64;
    let mut last = 0;
    for i in candidates() {
        acc += value(i);
        last = i;
        if acc > r {
            break;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const HALF: u32 = MAX / 2;
    const QUARTER: u32 = MAX / 4;

    /// A pool under test: index, counters, shared state and a seeded generator.
    struct Pool {
        index: SelectionIndex,
        deg: Vec<AtomicU32>,
        state: SelectionState,
        rng: Rng,
    }

    impl Pool {
        fn new(policies: &[Policy]) -> Self {
            Self::with_config(policies, SelectionConfig::default())
        }

        fn with_config(policies: &[Policy], config: SelectionConfig) -> Self {
            Self {
                index: SelectionIndex::build_with_config(policies, config),
                deg: (0..policies.len()).map(|_| AtomicU32::new(0)).collect(),
                state: SelectionState::new(),
                rng: Rng::seed(0x5eed),
            }
        }

        fn set_counters(&self, values: &[u32]) {
            for (c, &v) in self.deg.iter().zip(values) {
                c.store(v, Ordering::Relaxed);
            }
        }

        fn counters(&self) -> Vec<u32> {
            self.deg.iter().map(|c| c.load(Ordering::Relaxed)).collect()
        }

        fn pick(&mut self, n: usize) -> Vec<u32> {
            let mut out = [0u32; MAX_SELECTION];
            let k = self
                .index
                .select(&self.deg, &self.state, n, &mut self.rng, &mut out);
            let v = out[..k].to_vec();
            assert_distinct_valid(&v, self.index.len());
            v
        }

        fn picks(&mut self, n: usize, times: usize) -> Vec<Vec<u32>> {
            (0..times).map(|_| self.pick(n)).collect()
        }

        /// The single PE of each of `times` resolutions with n = 1.
        fn firsts(&mut self, times: usize) -> Vec<u32> {
            (0..times)
                .map(|_| {
                    let v = self.pick(1);
                    assert_eq!(v.len(), 1);
                    v[0]
                })
                .collect()
        }

        /// Selection frequencies over `draws` resolutions with n = 1.
        fn frequencies(&mut self, draws: usize) -> Vec<f64> {
            let mut counts = vec![0usize; self.index.len()];
            for _ in 0..draws {
                for i in self.pick(1) {
                    counts[i as usize] += 1;
                }
            }
            counts.iter().map(|&c| c as f64 / draws as f64).collect()
        }
    }

    fn assert_distinct_valid(v: &[u32], len: usize) {
        for (j, &i) in v.iter().enumerate() {
            assert!((i as usize) < len, "index {i} out of range in {v:?}");
            assert!(!v[..j].contains(&i), "duplicate {i} in {v:?}");
        }
    }

    fn assert_close(got: &[f64], expected: &[f64], tolerance: f64) {
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(expected) {
            assert!(
                (g - e).abs() <= tolerance,
                "frequencies {got:?}, expected {expected:?}"
            );
        }
    }

    fn wrr(weights: &[u32]) -> Vec<Policy> {
        weights
            .iter()
            .map(|&weight| Policy::WeightedRoundRobin { weight })
            .collect()
    }

    fn wrand(weights: &[u32]) -> Vec<Policy> {
        weights
            .iter()
            .map(|&weight| Policy::WeightedRandom { weight })
            .collect()
    }

    fn prio(priorities: &[u32]) -> Vec<Policy> {
        priorities
            .iter()
            .map(|&priority| Policy::Priority { priority })
            .collect()
    }

    fn lu(loads: &[u32]) -> Vec<Policy> {
        loads
            .iter()
            .map(|&load| Policy::LeastUsed { load })
            .collect()
    }

    fn lud(loads: &[u32], ld: u32) -> Vec<Policy> {
        loads
            .iter()
            .map(|&load| Policy::LeastUsedDegradation {
                load,
                load_degradation: ld,
            })
            .collect()
    }

    fn schedule_len(index: &SelectionIndex) -> usize {
        match &index.kind {
            Kind::Schedule { slots, .. } => slots.len(),
            other => panic!("not a schedule: {other:?}"),
        }
    }

    /// One policy of each of the 18 types, with a positive field set.
    fn one_of_each() -> Vec<Policy> {
        vec![
            Policy::RoundRobin,
            Policy::WeightedRoundRobin { weight: 3 },
            Policy::Random,
            Policy::WeightedRandom { weight: 3 },
            Policy::Priority { priority: 3 },
            Policy::LeastUsed { load: 3 },
            Policy::LeastUsedDegradation {
                load: 3,
                load_degradation: 1,
            },
            Policy::PriorityLeastUsed {
                load: 3,
                load_degradation: 1,
            },
            Policy::RandomizedLeastUsed { load: 3 },
            Policy::RandomizedPriorityLeastUsed {
                load: 3,
                load_degradation: 1,
            },
            Policy::RandomizedLeastUsedDegradation {
                load: 3,
                load_degradation: 1,
            },
            Policy::PriorityLeastUsedDegradation {
                load: 3,
                load_degradation: 1,
            },
            Policy::RandomizedPriorityLeastUsedDegradation {
                load: 3,
                load_degradation: 1,
            },
            Policy::WeightedRandomDpf {
                weight: 3,
                weight_dpf: 1,
                distance: 1,
            },
            Policy::LeastUsedDpf {
                load: 3,
                load_dpf: 1,
                distance: 1,
            },
            Policy::LeastUsedDegradationDpf {
                load: 3,
                load_degradation: 1,
                load_dpf: 1,
                distance: 1,
            },
            Policy::PriorityLeastUsedDpf {
                load: 3,
                load_degradation: 1,
                load_dpf: 1,
                distance: 1,
            },
            Policy::PriorityLeastUsedDegradationDpf {
                load: 3,
                load_degradation: 1,
                load_dpf: 1,
                distance: 1,
            },
        ]
    }

    // ----- Round Robin -----

    #[test]
    fn rr_three_pes_n2() {
        let mut p = Pool::new(&[Policy::RoundRobin; 3]);
        assert_eq!(
            p.picks(2, 4),
            [vec![0, 1], vec![1, 2], vec![2, 0], vec![0, 1]]
        );
        assert_eq!(p.state.cursor(), 4);
    }

    #[test]
    fn rr_n1_cycles_and_n_exceeds_pool() {
        let mut p = Pool::new(&[Policy::RoundRobin; 4]);
        assert_eq!(p.firsts(6), [0, 1, 2, 3, 0, 1]);
        assert_eq!(p.picks(10, 2), [vec![2, 3, 0, 1], vec![3, 0, 1, 2]]);
    }

    #[test]
    fn rr_cursor_survives_rebuild() {
        let state = Arc::new(SelectionState::new());
        let mut rng = Rng::seed(1);
        let mut out = [0u32; 4];
        let small = SelectionIndex::build(&[Policy::RoundRobin; 3]);
        for _ in 0..2 {
            small.select(&[], &state, 1, &mut rng, &mut out);
        }
        let big = SelectionIndex::build(&[Policy::RoundRobin; 5]);
        assert_eq!(big.select(&[], &state, 2, &mut rng, &mut out), 2);
        assert_eq!(out[..2], [2, 3]);
    }

    // ----- Weighted Round Robin -----

    #[test]
    fn wrr_3_1_proportions_and_spread() {
        let mut p = Pool::new(&wrr(&[3, 1]));
        // Copies spread over the cycle: A A B A, not A A A B.
        assert_eq!(p.firsts(8), [0, 0, 1, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn wrr_2_1_1_spread() {
        let mut p = Pool::new(&wrr(&[2, 1, 1]));
        assert_eq!(p.firsts(8), [0, 1, 0, 2, 0, 1, 0, 2]);
    }

    #[test]
    fn wrr_n2_collects_distinct() {
        let mut p = Pool::new(&wrr(&[3, 1]));
        assert_eq!(
            p.picks(2, 4),
            [vec![0, 1], vec![0, 1], vec![1, 0], vec![0, 1]]
        );
    }

    #[test]
    fn wrr_equal_weights_is_rr() {
        let mut p = Pool::new(&wrr(&[7, 7, 7]));
        assert_eq!(p.picks(2, 3), [vec![0, 1], vec![1, 2], vec![2, 0]]);
    }

    #[test]
    fn wrr_weight_zero_never_selected() {
        let mut p = Pool::new(&wrr(&[0, 2, 0, 1]));
        for v in p.picks(4, 12) {
            assert_eq!(v.len(), 2);
            assert!(!v.contains(&0) && !v.contains(&2));
        }
        let mut zero = Pool::new(&wrr(&[0, 0]));
        assert_eq!(zero.picks(3, 2), [vec![], vec![]]);
    }

    #[test]
    fn wrr_light_pes_are_staggered() {
        // Weight-1 PEs sit at different points of the cycle, so the PE that follows the heavy
        // one varies with the cursor instead of always being PE 1.
        let mut p = Pool::new(&wrr(&[1000, 1, 1, 1]));
        let cycle = schedule_len(&p.index);
        let mut seconds = [0u32; 4];
        for v in p.picks(2, cycle) {
            seconds[v[1] as usize] += 1;
        }
        assert!(
            seconds[1..].iter().all(|&c| c > cycle as u32 / 5),
            "{seconds:?}"
        );
    }

    #[test]
    fn wrr_exact_counts_over_a_cycle() {
        let weights: Vec<u32> = (0..1000).map(|i| i % 5).collect();
        let mut p = Pool::new(&wrr(&weights));
        let cycle = schedule_len(&p.index);
        assert_eq!(cycle, 2000);
        let mut counts = vec![0u32; 1000];
        for i in p.firsts(cycle) {
            counts[i as usize] += 1;
        }
        assert_eq!(counts, weights);
    }

    #[test]
    fn wrr_huge_weights_are_scaled_but_keep_every_pe() {
        let mut p = Pool::new(&wrr(&[MAX, HALF, 1]));
        let cycle = schedule_len(&p.index);
        assert!(cycle <= 65 * 3, "{cycle}");
        let mut counts = [0u32; 3];
        for i in p.firsts(cycle) {
            counts[i as usize] += 1;
        }
        assert_eq!(counts, [128, 64, 1]);
    }

    // ----- Random -----

    #[test]
    fn rand_uniform() {
        let mut p = Pool::new(&[Policy::Random; 4]);
        assert_close(&p.frequencies(100_000), &[0.25; 4], 0.01);
        assert_eq!(
            p.state.cursor(),
            0,
            "random policies leave the cursor alone"
        );
    }

    #[test]
    fn rand_without_replacement() {
        let mut p = Pool::new(&[Policy::Random; 4]);
        for v in p.picks(4, 1000) {
            let mut s = v.clone();
            s.sort_unstable();
            assert_eq!(s, [0, 1, 2, 3]);
        }
        assert_eq!(p.pick(10).len(), 4);
    }

    #[test]
    fn random_policies_reproducible() {
        for policy in one_of_each() {
            let ty = policy.policy_type();
            let policies = vec![policy; 6];
            let mut a = Pool::new(&policies);
            let mut b = Pool::new(&policies);
            assert_eq!(a.picks(3, 50), b.picks(3, 50), "{ty:#x}");
            assert_eq!(a.counters(), b.counters(), "{ty:#x}");
        }
        let mut a = Pool::new(&[Policy::Random; 6]);
        let mut b = Pool::new(&[Policy::Random; 6]);
        b.rng = Rng::seed(99);
        assert_ne!(a.picks(3, 50), b.picks(3, 50));
    }

    // ----- Weighted Random -----

    #[test]
    fn wrand_frequencies_and_weight_zero() {
        let mut p = Pool::new(&wrand(&[1, 2, 3, 0]));
        let f = p.frequencies(100_000);
        assert_close(&f, &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0, 0.0], 0.01);
        assert_eq!(f[3], 0.0);
        for v in p.picks(4, 1000) {
            assert_eq!(v.len(), 3);
            assert!(!v.contains(&3));
        }
    }

    #[test]
    fn wrand_successive_draws_without_replacement() {
        // Weights 1, 1, 2: P([0, 1]) = 1/4 · 1/3, P([0, 2]) = 1/4 · 2/3, P([2, 0]) = 1/2 · 1/2.
        let mut p = Pool::new(&wrand(&[1, 1, 2]));
        let draws = 120_000;
        let (mut a, mut b, mut c) = (0, 0, 0);
        for v in p.picks(2, draws) {
            match v[..] {
                [0, 1] => a += 1,
                [0, 2] => b += 1,
                [2, 0] => c += 1,
                _ => {}
            }
        }
        let f = |x: usize| x as f64 / draws as f64;
        assert_close(&[f(a), f(b), f(c)], &[1.0 / 12.0, 1.0 / 6.0, 0.25], 0.01);
    }

    #[test]
    fn wrand_all_zero_returns_nothing() {
        let mut p = Pool::new(&wrand(&[0, 0, 0]));
        assert!(p.pick(3).is_empty());
        assert!(p.pick(1).is_empty());
    }

    #[test]
    fn wrand_max_weights_do_not_overflow() {
        let mut p = Pool::new(&wrand(&[MAX, MAX, MAX]));
        assert_close(&p.frequencies(60_000), &[1.0 / 3.0; 3], 0.01);
    }

    #[test]
    fn wrand_large_pool_n128() {
        let weights: Vec<u32> = (0..5000).map(|i| i % 7).collect();
        let mut p = Pool::new(&wrand(&weights));
        for v in p.picks(500, 50) {
            assert_eq!(v.len(), MAX_SELECTION);
            assert!(v.iter().all(|&i| weights[i as usize] > 0));
        }
    }

    // ----- Priority -----

    #[test]
    fn prio_highest_first_ties_rotate() {
        let mut p = Pool::new(&prio(&[5, 10, 10, 1]));
        assert_eq!(p.firsts(4), [1, 2, 1, 2]);
        assert_eq!(p.picks(4, 2), [vec![1, 2, 0, 3], vec![2, 1, 0, 3]]);
    }

    #[test]
    fn prio_extremes() {
        let mut p = Pool::new(&prio(&[0, MAX, 7]));
        assert_eq!(p.picks(3, 2), [vec![1, 2, 0], vec![1, 2, 0]]);
    }

    // ----- Least Used -----

    #[test]
    fn lu_ascending_ties_rotate() {
        let mut p = Pool::new(&lu(&[30, 10, 10, 20]));
        assert_eq!(p.firsts(4), [1, 2, 1, 2]);
        assert_eq!(p.picks(4, 2), [vec![1, 2, 3, 0], vec![2, 1, 3, 0]]);
    }

    #[test]
    fn lu_partial_tie_group_rotates() {
        let mut p = Pool::new(&lu(&[0, 5, 5, 5]));
        assert_eq!(
            p.picks(2, 4),
            [vec![0, 1], vec![0, 2], vec![0, 3], vec![0, 1]]
        );
    }

    #[test]
    fn lu_full_load() {
        let mut p = Pool::new(&lu(&[MAX, MAX - 1, MAX]));
        assert_eq!(p.picks(3, 2), [vec![1, 0, 2], vec![1, 2, 0]]);
    }

    // ----- Least Used with Degradation -----

    #[test]
    fn lud_degradation_reorders() {
        let mut p = Pool::new(&lud(&[0, 25], 10));
        assert_eq!(p.firsts(8), [0, 0, 0, 1, 0, 1, 0, 1]);
        assert_eq!(p.counters(), [5, 3]);
    }

    #[test]
    fn lud_ties_rotate_and_share_equally() {
        let mut p = Pool::new(&lud(&[0, 0, 0], 10));
        assert_eq!(p.firsts(6), [0, 2, 1, 0, 1, 2]);
        assert_eq!(p.counters(), [2, 2, 2]);
    }

    #[test]
    fn lud_boundary_group_window_wraps() {
        // No degradation: behaves as LU over one tie group of 4, n = 2.
        let mut p = Pool::new(&lud(&[0, 0, 0, 0], 0));
        assert_eq!(
            p.picks(2, 5),
            [vec![0, 1], vec![1, 2], vec![2, 3], vec![3, 0], vec![0, 1]]
        );
    }

    #[test]
    fn lud_all_returned_incremented_rfc() {
        let mut p = Pool::new(&lud(&[0, 5, 100], 10));
        assert_eq!(p.pick(2), [0, 1]);
        assert_eq!(p.counters(), [1, 1, 0]);
        // Keys now 10, 15, 100.
        assert_eq!(p.pick(2), [0, 1]);
        assert_eq!(p.counters(), [2, 2, 0]);
        // Keys 20, 25, 100.
        assert_eq!(p.pick(3), [0, 1, 2]);
        assert_eq!(p.counters(), [3, 3, 1]);
    }

    #[test]
    fn lud_max_increment_rsplib() {
        let mut p = Pool::with_config(&lud(&[0, 5, 100], 10), SelectionConfig::RSPLIB);
        assert_eq!(p.pick(2), [0, 1]);
        assert_eq!(p.counters(), [1, 0, 0]);
        // Keys 10, 5, 100.
        assert_eq!(p.pick(2), [1, 0]);
        assert_eq!(p.counters(), [1, 1, 0]);
        let mut none = Pool::with_config(&lud(&[0, 0], 10), SelectionConfig { max_increment: 0 });
        none.picks(2, 3);
        assert_eq!(none.counters(), [0, 0]);
    }

    #[test]
    fn lud_saturation() {
        let mut p = Pool::new(&lud(&[MAX - 5, MAX, 0], MAX));
        p.set_counters(&[u32::MAX, 3, 0]);
        // Keys MAX, MAX, 0: PE 2 first, then the saturated pair in static-key order. One return
        // saturates PE 2 (D = MAX), so all three tie and rotate (tie order: static key, index).
        assert_eq!(p.picks(3, 2), [vec![2, 0, 1], vec![0, 1, 2]]);
        assert_eq!(p.counters(), [u32::MAX, 5, 2]);
    }

    #[test]
    fn lud_missing_counters_act_as_zero() {
        let index = SelectionIndex::build(&lud(&[20, 10, 30], 10));
        let state = SelectionState::new();
        let mut rng = Rng::seed(1);
        let mut out = [0u32; 3];
        assert_eq!(index.select(&[], &state, 3, &mut rng, &mut out), 3);
        assert_eq!(out, [1, 0, 2]);
        assert_eq!(index.select(&[], &state, 3, &mut rng, &mut out), 3);
        assert_eq!(out, [1, 0, 2]);
    }

    #[test]
    fn lud_large_pool_matches_reference() {
        // 2000 PEs, loads in 8 levels, degradation on: compare with a brute-force sort.
        let loads: Vec<u32> = (0..2000u32).map(|i| (i * 7919) % 8 * 3).collect();
        let policies = lud(&loads, 2);
        let mut p = Pool::with_config(&policies, SelectionConfig { max_increment: 0 });
        let mut rng = Rng::seed(5);
        for round in 0..200u64 {
            let counters: Vec<u32> = (0..2000).map(|_| rng.below(6) as u32).collect();
            p.set_counters(&counters);
            let keys: Vec<u32> = (0..2000).map(|i| loads[i] + 2 * counters[i]).collect();
            let got = p.pick(10);
            // Same multiset of keys as the 10 smallest.
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            let got_keys: Vec<u32> = got.iter().map(|&i| keys[i as usize]).collect();
            assert_eq!(got_keys, sorted[..10], "round {round}");
            // Within the boundary group, the window starts at rank cursor % group size.
            let worst = sorted[9];
            let group: Vec<u32> = {
                let order = sorted_order(&loads);
                order
                    .into_iter()
                    .filter(|&i| keys[i as usize] == worst)
                    .collect()
            };
            let k = got_keys.iter().filter(|&&k| k == worst).count();
            if group.len() > k {
                let r = (round % group.len() as u64) as usize;
                let expected: Vec<u32> = (0..k).map(|j| group[(r + j) % group.len()]).collect();
                assert_eq!(got[10 - k..], expected[..], "round {round}");
            }
        }
    }

    // ----- Priority Least Used -----

    #[test]
    fn plu_rfc_example() {
        // RFC 5356 §5.3: A at 50 % adding 10 % beats B at 50 % adding 50 %.
        let mut p = Pool::new(&[
            Policy::PriorityLeastUsed {
                load: HALF,
                load_degradation: MAX / 2 / 5,
            },
            Policy::PriorityLeastUsed {
                load: HALF,
                load_degradation: HALF,
            },
        ]);
        assert_eq!(p.picks(2, 3), [vec![0, 1], vec![0, 1], vec![0, 1]]);
    }

    #[test]
    fn plu_ties_rotate_and_saturate() {
        let pl = |load, load_degradation| Policy::PriorityLeastUsed {
            load,
            load_degradation,
        };
        let mut p = Pool::new(&[pl(40, 10), pl(30, 20), pl(0, 50)]);
        assert_eq!(p.firsts(4), [0, 1, 2, 0]);
        let mut s = Pool::new(&[pl(MAX, MAX), pl(MAX, 0), pl(MAX - 1, 0)]);
        assert_eq!(s.picks(3, 2), [vec![2, 0, 1], vec![2, 1, 0]]);
    }

    // ----- Randomized Least Used -----

    #[test]
    fn rlu_frequencies() {
        let mut p = Pool::new(&[
            Policy::RandomizedLeastUsed { load: 0 },
            Policy::RandomizedLeastUsed { load: HALF },
            Policy::RandomizedLeastUsed { load: MAX },
        ]);
        let f = p.frequencies(100_000);
        assert_close(&f, &[2.0 / 3.0, 1.0 / 3.0, 0.0], 0.01);
        // Full load: value 1, still selectable.
        for v in p.picks(3, 100) {
            assert_eq!(v.len(), 3);
        }
        assert_eq!(p.counters(), [0, 0, 0], "RLU has no degradation");
    }

    // ----- Randomized Priority Least Used -----

    #[test]
    fn rplu_frequencies() {
        let rp = |load, load_degradation| Policy::RandomizedPriorityLeastUsed {
            load,
            load_degradation,
        };
        let mut p = Pool::new(&[rp(0, 0), rp(QUARTER, QUARTER), rp(HALF, MAX)]);
        let f = p.frequencies(100_000);
        assert_close(&f, &[2.0 / 3.0, 1.0 / 3.0, 0.0], 0.01);
        assert_eq!(p.pick(3).len(), 3);
    }

    // ----- Randomized Least Used with Degradation -----

    fn rlud(loads: &[u32], ld: u32) -> Vec<Policy> {
        loads
            .iter()
            .map(|&load| Policy::RandomizedLeastUsedDegradation {
                load,
                load_degradation: ld,
            })
            .collect()
    }

    #[test]
    fn rlud_counters_shift_distribution() {
        let mut p = Pool::with_config(
            &rlud(&[0, 0], QUARTER),
            SelectionConfig { max_increment: 0 },
        );
        p.set_counters(&[0, 2]);
        // Values MAX and MAX − 2·MAX/4 ≈ MAX/2.
        assert_close(&p.frequencies(100_000), &[2.0 / 3.0, 1.0 / 3.0], 0.01);
        assert_eq!(p.counters(), [0, 2]);
    }

    #[test]
    fn rlud_increments_returned() {
        let mut p = Pool::new(&rlud(&[0, 0, 0], 1));
        p.picks(2, 10);
        assert_eq!(p.counters().iter().sum::<u32>(), 20);
        let mut r = Pool::with_config(&rlud(&[0, 0, 0], 1), SelectionConfig::RSPLIB);
        r.picks(2, 10);
        assert_eq!(r.counters().iter().sum::<u32>(), 10);
    }

    #[test]
    fn rlud_fully_degraded_uses_exact_fallback() {
        // D saturates: every value is 1, so rejection against the D = 0 bounds (≈ MAX) fails
        // and the exact scan decides: uniform, without replacement.
        let mut p = Pool::with_config(&rlud(&[0, 0, 0], MAX), SelectionConfig { max_increment: 0 });
        p.set_counters(&[1, 1, 1]);
        assert_close(&p.frequencies(60_000), &[1.0 / 3.0; 3], 0.01);
        for v in p.picks(3, 200) {
            assert_eq!(v.len(), 3);
        }
        // One degraded PE among fresh ones is practically never chosen first.
        p.set_counters(&[1, 0, 0]);
        let f = p.frequencies(20_000);
        assert_eq!(f[0], 0.0);
    }

    // ----- Priority Least Used with Degradation -----

    #[test]
    fn plud_degradation_reorders() {
        let pl = |load_degradation| Policy::PriorityLeastUsedDegradation {
            load: 0,
            load_degradation,
        };
        let mut p = Pool::new(&[pl(10), pl(30)]);
        // Keys 10 + 10·c0 and 30 + 30·c1: PE 0 three times as often.
        assert_eq!(p.firsts(8), [0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(p.counters(), [6, 2]);
    }

    // ----- Randomized Priority Least Used with Degradation -----

    #[test]
    fn rplud_frequencies() {
        let rp = Policy::RandomizedPriorityLeastUsedDegradation {
            load: 0,
            load_degradation: QUARTER,
        };
        let mut p = Pool::with_config(&[rp; 2], SelectionConfig { max_increment: 0 });
        p.set_counters(&[0, 1]);
        // Values MAX − MAX/4 and MAX − MAX/2: 3 : 2.
        assert_close(&p.frequencies(100_000), &[0.6, 0.4], 0.01);
        let mut q = Pool::new(&[rp; 2]);
        q.picks(1, 10);
        assert_eq!(q.counters().iter().sum::<u32>(), 10);
    }

    // ----- Weighted Random with DPF -----

    fn wdpf(weight: u32, distance: u32) -> Policy {
        Policy::WeightedRandomDpf {
            weight,
            weight_dpf: HALF,
            distance,
        }
    }

    #[test]
    fn wrand_dpf_distance_penalty() {
        // Half the weight removed per millisecond: values 100 and 50.
        let mut p = Pool::new(&[wdpf(100, 0), wdpf(100, 1)]);
        assert_close(&p.frequencies(100_000), &[2.0 / 3.0, 1.0 / 3.0], 0.01);
    }

    #[test]
    fn wrand_dpf_penalty_beyond_weight_and_zero_weight() {
        // Penalty 500 > weight 100: value 1. Weight 0: never.
        let mut p = Pool::new(&[wdpf(100, 0), wdpf(100, 10), wdpf(0, 0)]);
        let f = p.frequencies(100_000);
        assert_close(&f, &[100.0 / 101.0, 1.0 / 101.0, 0.0], 0.005);
        assert!(f[1] > 0.0);
        for v in p.picks(3, 100) {
            assert_eq!(v.len(), 2);
            assert!(!v.contains(&2));
        }
    }

    // ----- Least Used with DPF -----

    fn ludpf(load: u32, load_dpf: u32, distance: u32) -> Policy {
        Policy::LeastUsedDpf {
            load,
            load_dpf,
            distance,
        }
    }

    #[test]
    fn lu_dpf_distance_changes_order() {
        // Keys load + distance × ldpf: 10 and 15, then 10 and 5.
        let mut near = Pool::new(&[ludpf(10, 5, 0), ludpf(0, 5, 3)]);
        assert_eq!(near.picks(2, 2), [vec![0, 1], vec![0, 1]]);
        let mut far = Pool::new(&[ludpf(10, 5, 0), ludpf(0, 5, 1)]);
        assert_eq!(far.picks(2, 2), [vec![1, 0], vec![1, 0]]);
        // Equal keys rotate.
        let mut tie = Pool::new(&[ludpf(10, 5, 0), ludpf(0, 5, 2)]);
        assert_eq!(tie.firsts(4), [0, 1, 0, 1]);
    }

    #[test]
    fn lu_dpf_saturation() {
        let mut p = Pool::new(&[ludpf(1, MAX, MAX), ludpf(MAX, 0, 0), ludpf(MAX - 1, 0, 0)]);
        assert_eq!(p.picks(3, 2), [vec![2, 0, 1], vec![2, 1, 0]]);
    }

    // ----- Least Used with Degradation and DPF -----

    #[test]
    fn lud_dpf_degradation_and_distance() {
        let l = |distance| Policy::LeastUsedDegradationDpf {
            load: 0,
            load_degradation: 10,
            load_dpf: 1,
            distance,
        };
        // Static keys 0 and 15; each return adds 10.
        let mut p = Pool::new(&[l(0), l(15)]);
        assert_eq!(p.firsts(6), [0, 0, 1, 0, 1, 0]);
        assert_eq!(p.counters(), [4, 2]);
    }

    // ----- Priority Least Used with DPF -----

    #[test]
    fn plu_dpf_ties_and_distance() {
        let pl = |load_degradation, distance| Policy::PriorityLeastUsedDpf {
            load: 0,
            load_degradation,
            load_dpf: 1,
            distance,
        };
        // Keys 10, 10, 10: rotate.
        let mut p = Pool::new(&[pl(10, 0), pl(0, 10), pl(5, 5)]);
        assert_eq!(p.firsts(4), [0, 1, 2, 0]);
        // Keys 10, 20, 10: the pair rotates ahead of PE 1.
        let mut q = Pool::new(&[pl(10, 0), pl(0, 20), pl(5, 5)]);
        assert_eq!(q.picks(3, 2), [vec![0, 2, 1], vec![2, 0, 1]]);
        assert_eq!(q.counters(), [0, 0, 0], "PLU-DPF has no degradation");
    }

    // ----- Priority Least Used with Degradation and DPF -----

    #[test]
    fn plud_dpf_degradation_and_distance() {
        let pl = |distance| Policy::PriorityLeastUsedDegradationDpf {
            load: 0,
            load_degradation: 10,
            load_dpf: 1,
            distance,
        };
        // Static keys 10 and 35; each return adds 10.
        let mut p = Pool::new(&[pl(0), pl(25)]);
        assert_eq!(p.firsts(6), [0, 0, 0, 1, 0, 1]);
    }

    // ----- Edge cases -----

    #[test]
    fn empty_pool_and_n_zero() {
        let mut e = Pool::new(&[]);
        assert!(e.index.is_empty());
        assert_eq!(e.index.policy_type(), None);
        assert!(e.pick(3).is_empty());
        for policy in one_of_each() {
            let mut p = Pool::new(&[policy; 3]);
            assert!(p.pick(0).is_empty());
            assert_eq!(p.state.cursor(), 0);
            assert_eq!(p.counters(), [0, 0, 0]);
        }
    }

    #[test]
    fn every_policy_returns_whole_pool_when_n_exceeds_it() {
        for policy in one_of_each() {
            let ty = policy.policy_type();
            let mut p = Pool::new(&[policy; 5]);
            assert_eq!(p.index.policy_type(), Some(ty));
            for v in p.picks(50, 20) {
                assert_eq!(v.len(), 5, "{ty:#x}");
            }
            // n = 1 always yields one PE.
            assert_eq!(p.pick(1).len(), 1, "{ty:#x}");
        }
    }

    #[test]
    fn output_buffer_and_protocol_cap_bound_the_count() {
        let index = SelectionIndex::build(&[Policy::RoundRobin; 300]);
        let state = SelectionState::new();
        let mut rng = Rng::seed(1);
        let mut small = [0u32; 2];
        assert_eq!(index.select(&[], &state, 5, &mut rng, &mut small), 2);
        let mut big = [0u32; 1000];
        assert_eq!(
            index.select(&[], &state, 1000, &mut rng, &mut big),
            MAX_SELECTION
        );
        assert_distinct_valid(&big[..MAX_SELECTION], 300);
    }

    #[test]
    fn adaptive_list_matches_rsplib() {
        use pt::*;
        let adaptive = [
            LEAST_USED,
            LEAST_USED_DEGRADATION,
            PRIORITY_LEAST_USED,
            RANDOMIZED_LEAST_USED,
            RANDOMIZED_PRIORITY_LEAST_USED,
            RANDOMIZED_LEAST_USED_DEGRADATION,
            PRIORITY_LEAST_USED_DEGRADATION,
            RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION,
            LEAST_USED_DPF,
            LEAST_USED_DEGRADATION_DPF,
            PRIORITY_LEAST_USED_DPF,
            PRIORITY_LEAST_USED_DEGRADATION_DPF,
        ];
        let not = [
            ROUND_ROBIN,
            WEIGHTED_ROUND_ROBIN,
            RANDOM,
            WEIGHTED_RANDOM,
            PRIORITY,
            WEIGHTED_RANDOM_DPF,
            0,
            0x4000_0000,
            0x4000_0005,
        ];
        assert!(adaptive.iter().all(|&t| is_adaptive(t)));
        assert!(not.iter().all(|&t| !is_adaptive(t)));
        let degrading = one_of_each()
            .iter()
            .filter(|p| uses_degradation(p.policy_type()))
            .count();
        assert_eq!(degrading, 6);
    }

    // ----- Concurrency -----

    #[test]
    fn rr_concurrent_resolutions() {
        let index = Arc::new(SelectionIndex::build(&[Policy::RoundRobin; 7]));
        let state = Arc::new(SelectionState::new());
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let index = Arc::clone(&index);
                let state = Arc::clone(&state);
                std::thread::spawn(move || {
                    let mut rng = Rng::seed(t);
                    let mut starts = [0u32; 7];
                    let mut out = [0u32; 3];
                    for _ in 0..10_000 {
                        assert_eq!(index.select(&[], &state, 3, &mut rng, &mut out), 3);
                        assert_distinct_valid(&out, 7);
                        assert_eq!(out[1], (out[0] + 1) % 7);
                        assert_eq!(out[2], (out[0] + 2) % 7);
                        starts[out[0] as usize] += 1;
                    }
                    starts
                })
            })
            .collect();
        let mut starts = [0u32; 7];
        for h in handles {
            for (s, x) in starts.iter_mut().zip(h.join().unwrap()) {
                *s += x;
            }
        }
        // Every cursor value 0..40000 used exactly once.
        assert_eq!(state.cursor(), 40_000);
        assert_eq!(starts, [5715, 5715, 5714, 5714, 5714, 5714, 5714]);
    }

    #[test]
    fn lud_concurrent_resolutions() {
        let loads: Vec<u32> = (0..50).map(|i| (i % 5) * 100).collect();
        let index = Arc::new(SelectionIndex::build(&lud(&loads, 7)));
        let state = Arc::new(SelectionState::new());
        let deg: Arc<Vec<AtomicU32>> = Arc::new((0..50).map(|_| AtomicU32::new(0)).collect());
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (index, state, deg) =
                    (Arc::clone(&index), Arc::clone(&state), Arc::clone(&deg));
                std::thread::spawn(move || {
                    let mut rng = Rng::seed(t);
                    let mut out = [0u32; 5];
                    for _ in 0..5_000 {
                        assert_eq!(index.select(&deg, &state, 5, &mut rng, &mut out), 5);
                        assert_distinct_valid(&out, 50);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let total: u32 = deg.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 4 * 5_000 * 5);
    }
}
