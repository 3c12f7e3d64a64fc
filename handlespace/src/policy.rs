//! Pool member selection: the engine that picks which PEs a handle resolution returns.
//!
//! # Model
//!
//! A pool's members (PEs) live in a persistent tree (the crate's `tree` module) in the order the pool's
//! policy needs: by static key for the ordered policies (priority, least used and their
//! variants), in registration order otherwise. The tree counts the members and sums their selection
//! values below every node, so each step of a selection is one descent, O(log n) in the pool
//! size, and a registration changes only the members on one path. What each member contributes
//! (`member_key`):
//!
//! * the static key of the ordered policies, computed once, when it registers, and the value of
//!   the weighted ones (weight, or the value of a randomized least-used policy at degradation
//!   0), derived from its policy where needed (`member_value`);
//! * its degradation counter ("times returned since the PE's last (re-)registration",
//!   RFC 5356 §5.2.2), an atomic the resolutions advance;
//! * [`SelectionState`], per published version of the pool, holds the pool-wide round-robin
//!   cursor (`AtomicU64`, relaxed `fetch_add`); the writer carries its value over.
//!
//! Each reader thread owns a [`Rng`] for the random policies. `select` writes up to `n`
//! distinct member ranks (positions in the tree's order) into a caller-provided buffer, in the
//! order the PU should use them. It never allocates: scratch space is bounded stack arrays sized
//! by [`MAX_SELECTION`], the protocol's cap on returned items (procedures.md §7).
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
//! `select`. Values and keys follow the formulas of policies.md §2 (RSPLIB's
//! `poolpolicy-template_impl.h`).

use std::sync::atomic::{AtomicU64, Ordering};

use rserpool_protocol::{Policy, policy_type as pt};

use crate::pool::Member;
use crate::rng::Rng;
use crate::tree::{Located, Tree};

/// The most PEs one selection returns: handle resolutions are capped at 128 entries (RSPLIB's
/// registrar, procedures.md §7). Larger requests are clamped.
pub const MAX_SELECTION: usize = 128;

/// Full load / maximum weight on the u32 scale.
const MAX: u32 = u32::MAX;

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
/// LUD-DPF, PLUD-DPF, RLUD and RPLUD; the other types leave them alone.
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

/// Registrar-wide selection settings, passed to every selection.
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

/// The selection state that resolutions advance, in each published version of a pool; the next one
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

/// How a policy type selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// RR: members in identifier order, the cursor's rank first.
    RoundRobin,
    /// WRR: a golden-ratio walk over the members' weight intervals.
    WeightedRoundRobin,
    /// RAND, WRAND, RLU, RPLU, WRAND-DPF: weighted draws by the members' static values.
    Weighted,
    /// RLUD, RPLUD: weighted draws by values that shrink with the degradation counters.
    DegradedWeighted,
    /// PRIO, LU, PLU, LU-DPF, PLU-DPF: ascending static key, ties rotated.
    Sorted,
    /// LUD, PLUD, LUD-DPF, PLUD-DPF: ascending static key plus degradation, ties rotated.
    DegradedSorted,
}

fn family(ty: u32) -> Family {
    match ty {
        pt::ROUND_ROBIN => Family::RoundRobin,
        pt::WEIGHTED_ROUND_ROBIN => Family::WeightedRoundRobin,
        pt::RANDOM
        | pt::WEIGHTED_RANDOM
        | pt::RANDOMIZED_LEAST_USED
        | pt::RANDOMIZED_PRIORITY_LEAST_USED
        | pt::WEIGHTED_RANDOM_DPF => Family::Weighted,
        pt::RANDOMIZED_LEAST_USED_DEGRADATION | pt::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION => {
            Family::DegradedWeighted
        }
        pt::LEAST_USED_DEGRADATION
        | pt::PRIORITY_LEAST_USED_DEGRADATION
        | pt::LEAST_USED_DEGRADATION_DPF
        | pt::PRIORITY_LEAST_USED_DEGRADATION_DPF => Family::DegradedSorted,
        // PRIO, LU, PLU, LU-DPF, PLU-DPF (every policy type the codec knows is covered above or
        // here).
        _ => Family::Sorted,
    }
}

/// Whether pools of `policy_type` keep their PEs ordered by a static key (priority, least used
/// and their variants) rather than by PE identifier.
pub(crate) fn is_ordered(policy_type: u32) -> bool {
    matches!(family(policy_type), Family::Sorted | Family::DegradedSorted)
}

/// What a PE with `policy` contributes to selection in a pool of `policy_type` (the first PE's,
/// RFC 5352 §3.1): its static key (ordered policies; 0 for the others, which keep identifier
/// order) and its selection value (the share of weighted draws: weight, or the value at
/// degradation 0 of a randomized least-used policy; 1 for the others).
///
/// All PEs of a pool have the same policy type (the pool enforces it); should a PE of another
/// type slip in, its fields are taken from its own variant where they exist (weight 1 and 0 for
/// everything else otherwise).
pub(crate) fn member_key(policy_type: u32, policy: &Policy) -> (u32, u32) {
    let value = value_of(policy_type, policy);
    match family(policy_type) {
        Family::Sorted | Family::DegradedSorted => {
            (static_key(policy_type, &Params::of(policy)), value)
        }
        _ => (0, value),
    }
}

/// A member's selection value ([`member_key`]'s second part) in a pool of its own policy's type,
/// the type of every PE of its pool: not stored in the member (4 bytes per PE) but derived
/// where the tree sums values or a weighted draw scans a leaf. The common types are read off the
/// variant here (the same values as [`value_of`] of the variant's type, which the others take).
#[inline]
pub(crate) fn member_value(policy: &Policy) -> u32 {
    match *policy {
        Policy::WeightedRandom { weight } | Policy::WeightedRoundRobin { weight } => weight,
        Policy::RoundRobin
        | Policy::Random
        | Policy::Priority { .. }
        | Policy::LeastUsed { .. }
        | Policy::LeastUsedDegradation { .. } => 1,
        _ => value_of(policy.policy_type(), policy),
    }
}

#[inline]
fn value_of(policy_type: u32, policy: &Policy) -> u32 {
    match family(policy_type) {
        Family::RoundRobin | Family::Sorted | Family::DegradedSorted => 1,
        Family::WeightedRoundRobin => Params::of(policy).weight,
        Family::Weighted | Family::DegradedWeighted => {
            sat32(random_value(policy_type, &Params::of(policy)))
        }
    }
}

/// The step of the weighted round-robin walk over a pool whose weights sum to `total`:
/// resolution `c` takes the point `c × stride mod total`, so with a stride coprime to `total`
/// every point of `[0, total)` comes once per `total` resolutions. A PE owns consecutive points;
/// point `x + 1` comes `stride⁻¹` resolutions after point `x`, so the stride is the inverse of
/// the integer nearest to `total / φ` that is coprime to `total`: a PE's turns are then spread
/// over the round like the points of a golden-ratio sequence (three-gap theorem).
pub(crate) fn wrr_stride(total: u64) -> u64 {
    if total <= 1 {
        return 1;
    }
    let mut spacing = ((total as f64) * 0.618_033_988_749_895).round().max(1.0) as u64 % total;
    while gcd(spacing, total) != 1 {
        spacing = spacing % total + 1;
    }
    inverse(spacing, total)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The inverse of `a` modulo `m` (coprime, `m > 1`), by the extended Euclidean algorithm.
fn inverse(a: u64, m: u64) -> u64 {
    let (mut r0, mut r1) = (i128::from(m), i128::from(a));
    let (mut t0, mut t1) = (0i128, 1i128);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    t0.rem_euclid(i128::from(m)) as u64
}

/// Selects up to `n` distinct PEs of `members` (a pool of `policy_type`) for one handle
/// resolution and writes their ranks to `out`, best first (the order the PU should try them);
/// returns how many were written. `stride` is [`wrr_stride`] of the members' total value.
///
/// The count is at most `min(n, out.len(), MAX_SELECTION, members.len())`, and smaller only
/// when the policy cannot offer more PEs (weight 0). `n = 0` or an empty pool returns 0 and
/// changes no state. Does not allocate.
///
/// "Cursor" below is the value this resolution takes from `state` (`fetch_add(1)`), so it
/// advances by exactly one per resolution; "ties rotated" means each group of equal keys, in a
/// fixed order (PE identifier), is rotated left by `cursor % group size` (round robin among
/// equals, RFC 5356 §5.1.2). RSPLIB gets the same effect by giving the first returned PE a new
/// sequence number (`MaxIncrement` = 1); the two agree for the first group, while we also
/// rotate lower groups, which RSPLIB leaves in sequence order.
///
/// * **RR** (RFC 5356 §4.1.2): PEs of ranks `cursor % len`, `+1`, … (wrapping), i.e. the head
///   of the circular list (in registration order) advances by one per resolution (RSPLIB: the
///   first returned PE gets a new sequence number; identical).
/// * **WRR** (§4.2.2): each PE owns an interval of its weight's width on `[0, W)`, W the sum
///   of the weights; resolution `cursor` takes the PE at `cursor × stride mod W` ([`wrr_stride`]:
///   coprime to W, the inverse of ≈ W / φ), so over every W consecutive resolutions each PE
///   comes first exactly weight times, its turns spread over the round (the gaps between them
///   take at most three lengths); weight 0 is never selected. Further PEs continue the walk over the
///   weights not chosen yet. Equal weights give a fixed cyclic order, i.e. round robin. RSPLIB
///   serves the lighter PEs first and then each PE's copies back to back (2/1/1: `B C A A`);
///   an exact smooth schedule (`A B A C`) costs O(W) to rebuild on every change, which a
///   registration must not (O(log n)); the golden walk gives `A C B A`.
/// * **RAND** (§4.3.2), **WRAND** (§4.4.2), **RLU** (§5.4.2), RSPLIB's **RPLU**, **RLUD**,
///   **RPLUD** and **WRAND-DPF**: successive weighted draws without replacement using `rng`,
///   value 1 (RAND), `weight` (WRAND; 0 never), `max(1, MAX − load)` (RLU),
///   `max(1, MAX − load − load_deg)` (RPLU), `max(1, MAX − load − D)` (RLUD),
///   `max(1, MAX − load − load_deg − D)` (RPLUD) and `weight − round(weight × distance × wdpf
///   / MAX)` (WRAND-DPF; weight 0 never, otherwise at least 1: RSPLIB gives 0 in the single case
///   where the penalty equals the weight exactly and 1 when it exceeds it, we give 1 in both).
///   D = counter × load_deg, saturating at MAX. The RFC's RLU value `MAX − load` becomes 0 at
///   full load; we keep RSPLIB's `max(1, …)` so a fully loaded PE keeps a tiny chance. RLUD and
///   RPLUD draw by the value at D = 0 and accept with probability value / that (rejection,
///   exact); after [`REJECTION_TRIES`] rejections (a heavily degraded pool) the candidate with
///   the best acceptance ratio among the tries is taken, which keeps the cost O(log n) at the
///   price of an approximate draw there. No cursor use.
/// * **PRIO** (§4.5.2): highest priority first, ties rotated.
/// * **LU** (§5.1.2): ascending load, ties rotated.
/// * **PLU** (§5.3.2): ascending `load + load_deg` (saturating), ties rotated.
/// * **LU-DPF**, **PLU-DPF** (RSPLIB): ascending `load (+ load_deg) + distance × ldpf`
///   (saturating, exact integer arithmetic where RSPLIB rounds a double), ties rotated.
/// * **LUD** (§5.2.2), RSPLIB's **PLUD**, **LUD-DPF**, **PLUD-DPF**: ascending
///   `static key + D` (saturating), static key as for LU, PLU, LU-DPF, PLU-DPF; ties rotated;
///   then the counter of each of the first `config.max_increment` returned PEs is incremented
///   by 1 (saturating). RSPLIB's code also grows D on re-linking into its tree (policies.md
///   §2.1 caveat); we count returns only.
/// * **RLUD**, **RPLUD** increment the counters of their first `max_increment` results the
///   same way, so D means "times returned" as for LUD. (RSPLIB's update hook for these two
///   only recomputes the value and never grows D, which would make them equal to RLU and
///   RPLU; we follow the evident intent of the degradation term.)
///
/// Cost per call (n = items, `len` = pool size): RR O(n + log len); WRR and the random
/// policies O(n² + n log len); the static sorted policies O(n + groups × log len); the LUD
/// family one scan of the PEs whose static key is below the n-th best key plus the boundary
/// group (the live keys change with every resolution, so no index orders them; up to the whole
/// pool when most PEs share one static key and some are degraded).
#[allow(clippy::too_many_arguments)]
pub(crate) fn select(
    members: &Tree<Member>,
    policy_type: u32,
    stride: u64,
    config: SelectionConfig,
    state: &SelectionState,
    n: usize,
    rng: &mut Rng,
    out: &mut [u32],
) -> usize {
    let len = members.len();
    let n = n.min(out.len()).min(MAX_SELECTION).min(len);
    if n == 0 {
        return 0;
    }
    let out = &mut out[..n];
    match family(policy_type) {
        Family::RoundRobin => {
            // One division for the start; the rest wraps by comparison.
            let mut i = (state.advance() % len as u64) as usize;
            for o in out.iter_mut() {
                *o = i as u32;
                i += 1;
                if i == len {
                    i = 0;
                }
            }
            n
        }
        Family::WeightedRoundRobin => select_wrr(members, stride, state.advance(), out),
        Family::Weighted => draw(members, rng, out),
        Family::DegradedWeighted => {
            let k = draw_degraded(members, policy_type, rng, out);
            increment(members, &out[..k], config.max_increment);
            k
        }
        Family::Sorted => select_sorted(members, state.advance(), out),
        Family::DegradedSorted => {
            let k = select_degraded_sorted(members, state.advance(), out);
            increment(members, &out[..k], config.max_increment);
            k
        }
    }
}

/// Reads ahead, without changing anything, the members a selection of `n` PEs and the encoding
/// of its result will read, so that a batch of resolutions can overlap their cache misses: for
/// round robin the `n` members from the cursor on (one descent to the leaf of the cursor's rank,
/// and one to the next leaves when the selection goes on or wraps); for the policies ordered by
/// a key, whose selection starts at the lowest keys, the first leaf (the whole pool up to
/// [`crate::tree::LEAF_MAX`] PEs); for the weighted draws and weighted round robin, which land
/// anywhere in the pool, the members of a pool of one leaf and nothing of a larger one (its first
/// leaf would mostly be loaded in vain). Returns a value folded from what it read, which the caller
/// must consume so that the loads are kept: stable Rust has no prefetch instruction without
/// `unsafe` (`core::arch::x86_64::_mm_prefetch` needs it; `std::hint::prefetch_read` is
/// unstable), so the read-ahead consists of real loads whose results no later load depends on.
#[inline]
pub(crate) fn read_ahead(
    members: &Tree<Member>,
    policy_type: u32,
    state: &SelectionState,
    n: usize,
) -> u64 {
    let len = members.len();
    if len == 0 {
        return 0;
    }
    let family = family(policy_type);
    let round_robin = family == Family::RoundRobin;
    let (start, count) = match family {
        Family::RoundRobin => ((state.cursor() % len as u64) as usize, n.min(len)),
        Family::Sorted | Family::DegradedSorted => (0, crate::tree::LEAF_MAX),
        _ if len <= crate::tree::LEAF_MAX => (0, crate::tree::LEAF_MAX),
        _ => return 0,
    };
    // The cache lines of a member that a resolution and its encoder read: its first 80 bytes,
    // from the key parts at its start to the registration life (the entry's fields before its
    // ASAP transport); a member of 160 bytes spans three or four lines, of which these are two
    // or three.
    let touch =
        |m: &Member| u64::from(m.order()) ^ (m.entry().registration.registration_life as u64);
    let mut acc = 0u64;
    let (mut rank, mut left) = (start, count);
    loop {
        let run = members.leaf_from(rank);
        for m in run.iter().take(left) {
            acc = acc.wrapping_add(touch(m));
        }
        if !round_robin || run.is_empty() || run.len() >= left {
            return acc;
        }
        left -= run.len();
        rank = (rank + run.len()) % len;
    }
}

/// Increments the counters of the first `max_increment` selected PEs, saturating at u32::MAX.
fn increment(members: &Tree<Member>, selected: &[u32], max_increment: usize) {
    for &rank in selected.iter().take(max_increment) {
        members.at(rank as usize).degrade();
    }
}

/// The intervals of the members chosen so far in a draw without replacement, sorted by start.
struct Chosen<'b> {
    /// (interval start, interval width), ascending by start, in `intervals[..len]`; room for
    /// the whole selection.
    intervals: &'b mut [(u64, u64)],
    len: usize,
    /// Sum of the chosen widths.
    mass: u64,
}

impl Chosen<'_> {
    /// Maps a point of the mass not chosen yet (`[0, total − mass)`) to a point of the whole
    /// `[0, total)` by skipping the chosen intervals.
    fn skip(&self, mut x: u64) -> u64 {
        for &(start, width) in &self.intervals[..self.len] {
            if start <= x {
                x += width;
            } else {
                break;
            }
        }
        x
    }

    fn insert(&mut self, start: u64, width: u64) {
        // Insertion from the end: a selection's few intervals, not worth a `memmove` call.
        let mut at = self.len;
        while at > 0 && self.intervals[at - 1].0 >= start {
            self.intervals[at] = self.intervals[at - 1];
            at -= 1;
        }
        self.intervals[at] = (start, width);
        self.len += 1;
        self.mass += width;
    }
}

/// Draws up to `out.len()` distinct members without replacement: `pick(j, remaining, chosen)`
/// picks the `j`-th, by a point of the `remaining` values not chosen yet (`chosen.skip` maps it
/// onto the whole sum for [`Tree::locate`]). Stops early when nothing of value is left.
fn without_replacement<'m>(
    members: &'m Tree<Member>,
    out: &mut [u32],
    pick: impl FnMut(usize, u64, &Chosen<'_>) -> Located<'m, Member>,
) -> usize {
    /// Selections of up to this many PEs (the usual few) keep their intervals in a small
    /// array: zeroing room for [`MAX_SELECTION`] (2 KiB) cost more than drawing three PEs.
    const SMALL: usize = 8;
    if out.len() <= SMALL {
        draw_without_replacement(members, out, &mut [(0, 0); SMALL], pick)
    } else {
        draw_without_replacement(members, out, &mut [(0, 0); MAX_SELECTION], pick)
    }
}

/// [`without_replacement`] with room for the chosen intervals.
fn draw_without_replacement<'m>(
    members: &'m Tree<Member>,
    out: &mut [u32],
    intervals: &mut [(u64, u64)],
    mut pick: impl FnMut(usize, u64, &Chosen<'_>) -> Located<'m, Member>,
) -> usize {
    let total = members.total();
    let mut chosen = Chosen {
        intervals,
        len: 0,
        mass: 0,
    };
    for (j, o) in out.iter_mut().enumerate() {
        let remaining = total - chosen.mass;
        if remaining == 0 {
            return j;
        }
        let found = pick(j, remaining, &chosen);
        chosen.insert(found.start, u64::from(found.value));
        *o = found.rank as u32;
    }
    out.len()
}

/// WRR: the golden walk (see [`select`]). Later PEs take the walk's next points, scaled onto
/// the weights not chosen yet.
fn select_wrr(members: &Tree<Member>, stride: u64, cursor: u64, out: &mut [u32]) -> usize {
    let total = u128::from(members.total());
    without_replacement(members, out, |j, remaining, chosen| {
        let step = u128::from(cursor.wrapping_add(j as u64)) % total;
        let point = step * u128::from(stride) % total;
        let x = (point * u128::from(remaining) / total) as u64;
        members.locate(chosen.skip(x))
    })
}

/// Static weighted draws without replacement: each draw is uniform over the values not chosen
/// yet.
fn draw(members: &Tree<Member>, rng: &mut Rng, out: &mut [u32]) -> usize {
    without_replacement(members, out, |_, remaining, chosen| {
        members.locate(chosen.skip(rng.below(remaining)))
    })
}

/// RLUD/RPLUD: weighted draws without replacement with live values
/// `max(1, MAX − subtrahend − D)`, by rejection against the values at D = 0 (see [`select`]).
fn draw_degraded(
    members: &Tree<Member>,
    policy_type: u32,
    rng: &mut Rng,
    out: &mut [u32],
) -> usize {
    let with_ld = policy_type == pt::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION;
    let live = |member: &Member| -> u64 {
        let p = Params::of(&member.entry().registration.policy);
        let subtrahend = u64::from(p.load)
            + if with_ld {
                u64::from(p.load_degradation)
            } else {
                0
            };
        let d = degradation_amount(member.degradation(), p.load_degradation);
        u64::from(MAX)
            .saturating_sub(subtrahend.saturating_add(d))
            .max(1)
    };
    without_replacement(members, out, |_, remaining, chosen| {
        // The accepted candidate, else the one with the best acceptance ratio (live / bound).
        let mut best = None;
        let mut best_ratio = -1.0;
        for _ in 0..REJECTION_TRIES {
            let candidate = members.locate(chosen.skip(rng.below(remaining)));
            let bound = u64::from(candidate.value).max(1);
            let v = live(candidate.item);
            if v >= bound || rng.below(bound) < v {
                return candidate;
            }
            let ratio = v as f64 / bound as f64;
            if ratio > best_ratio {
                best_ratio = ratio;
                best = Some(candidate);
            }
        }
        best.expect("REJECTION_TRIES > 0")
    })
}

/// Static sorted policies: walks the groups of equal static keys in order, each rotated by the
/// cursor. A group's end is found by looking at the next few members, or by one descent for a
/// larger group.
fn select_sorted(members: &Tree<Member>, cursor: u64, out: &mut [u32]) -> usize {
    /// Members looked at before a group's end is searched for instead.
    const SCAN: usize = 8;
    let n = out.len();
    let len = members.len();
    let mut w = 0;
    let mut start = 0usize;
    // The members from `start` on, walked (one descent per leaf) while groups are small.
    let mut walk = members.walk_from(0);
    let mut first = walk.next();
    while w < n
        && let Some(member) = first
    {
        let key = member.order();
        let mut end = start + 1;
        first = walk.next();
        while let Some(next) = first
            && next.order() == key
        {
            end += 1;
            if end - start > SCAN {
                end = match key.checked_add(1) {
                    Some(after) => members.rank_of((after, 0)),
                    None => len,
                };
                walk = members.walk_from(end);
                first = walk.next();
                break;
            }
            first = walk.next();
        }
        let g = end - start;
        let mut r = (cursor % g as u64) as usize;
        let take = g.min(n - w);
        for o in out[w..w + take].iter_mut() {
            *o = (start + r) as u32;
            r += 1;
            if r == g {
                r = 0;
            }
        }
        w += take;
        start = end;
    }
    w
}

/// Dynamic sorted policies (LUD family): the `out.len()` smallest `static key + D`, groups of
/// equal keys rotated by the cursor, without allocation.
///
/// Pass 1 keeps the best `(key, rank)` pairs in a bounded sorted buffer, scanning ranks in
/// static-key order and stopping once the static key alone reaches the buffer's worst key
/// (D ≥ 0). Groups below the worst key are complete in the buffer. If the worst key's group has
/// members outside the buffer, pass 2 counts it and pass 3 picks the rotated window of it.
/// Concurrent counter changes between passes are tolerated: the result stays distinct and full.
fn select_degraded_sorted(members: &Tree<Member>, cursor: u64, out: &mut [u32]) -> usize {
    let n = out.len();
    let live_key = |member: &Member| -> u32 {
        let step = Params::of(&member.entry().registration.policy).load_degradation;
        let d = degradation_amount(member.degradation(), step);
        sat32(u64::from(member.order()) + d)
    };

    // Pass 1: bounded top-n buffer of (key, rank), sorted ascending.
    let mut buf = [(0u32, 0u32); MAX_SELECTION];
    let mut m = 0usize;
    for (rank, member) in members.iter().enumerate() {
        let skey = member.order();
        if m == n && skey >= buf[n - 1].0 {
            break;
        }
        let key = live_key(member);
        if m == n && key >= buf[n - 1].0 {
            continue;
        }
        // Ranks ascend, so an equal key goes after the existing ones.
        let at = buf[..m].partition_point(|e| e.0 <= key);
        let last = if m == n { n - 1 } else { m };
        buf.copy_within(at..last, at + 1);
        buf[at] = (key, rank as u32);
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
            out[w + j] = buf[s + (r + j) % g].1;
        }
        w += g;
        s = e;
    }
    let boundary = &buf[s..];
    let kb = boundary.len();

    // Ranks already output (sorted), to skip in passes 2 and 3 should a counter have moved one
    // of them onto the worst key meanwhile.
    let mut lower = [0u32; MAX_SELECTION];
    for (l, e) in lower.iter_mut().zip(&buf[..s]) {
        *l = e.1;
    }
    lower[..s].sort_unstable();
    let lower = &lower[..s];

    // Pass 2: size of the worst key's group over the whole pool.
    let scan = |visit: &mut dyn FnMut(usize) -> bool| {
        let mut li = 0;
        for (rank, member) in members.iter().enumerate() {
            if member.order() > worst {
                break;
            }
            while li < lower.len() && (lower[li] as usize) < rank {
                li += 1;
            }
            if li < lower.len() && lower[li] as usize == rank {
                continue;
            }
            if live_key(member) == worst && !visit(rank) {
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
            out[w + j] = boundary[(r + j) % kb].1;
        }
        return w + kb;
    }

    // Pass 3: the members at ranks r, r + 1, … (mod g) of the group, in that order.
    let r = (cursor % g as u64) as usize;
    let mut picked = [u32::MAX; MAX_SELECTION];
    let mut nth = 0usize;
    scan(&mut |rank| {
        let slot = (nth + g - r) % g;
        if slot < kb {
            picked[slot] = rank as u32;
        }
        nth += 1;
        nth < g
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
        if !out[w..w + got].contains(&e.1) {
            out[w + got] = e.1;
            got += 1;
        }
    }
    w + got
}

#[cfg(test)]
mod tests;
