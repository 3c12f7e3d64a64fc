//! Tests of the selection policies: each policy against its RFC 5356 or RSPLIB definition
//! (frequencies, ties, degradation, distance penalties, overflow), and concurrent resolutions.

use super::*;
use std::sync::Arc;

const HALF: u32 = MAX / 2;
const QUARTER: u32 = MAX / 4;

/// A pool under test: members (PE `i` of the policy list has PE ID `i + 1`), shared state
/// and a seeded generator. Picks are reported as list indices.
struct Pool {
    members: Tree<Member>,
    policy_type: u32,
    config: SelectionConfig,
    state: SelectionState,
    rng: Rng,
}

/// The members of a pool whose PE `i` has policy `policies[i]` and PE ID `i + 1`.
fn members_of(policies: &[Policy]) -> (Tree<Member>, u32) {
    let ty = policies
        .first()
        .map_or(pt::ROUND_ROBIN, Policy::policy_type);
    let mut members = Tree::default();
    for (i, &policy) in policies.iter().enumerate() {
        members.insert(Member::for_test(i as u64 + 1, policy, ty));
    }
    (members, ty)
}

impl Pool {
    fn new(policies: &[Policy]) -> Self {
        Self::with_config(policies, SelectionConfig::default())
    }

    fn with_config(policies: &[Policy], config: SelectionConfig) -> Self {
        let (members, policy_type) = members_of(policies);
        Self {
            members,
            policy_type,
            config,
            state: SelectionState::new(),
            rng: Rng::seed(0x5eed),
        }
    }

    fn len(&self) -> usize {
        self.members.len()
    }

    /// Total weight (weighted round robin: the length of a round).
    fn total(&self) -> usize {
        self.members.total() as usize
    }

    /// PE `i` of the policy list.
    fn member(&self, i: usize) -> &Member {
        let id = i as u64 + 1;
        self.members
            .iter()
            .find(|m| m.entry().id().0 == id)
            .expect("a PE of the list")
    }

    fn set_counters(&self, values: &[u32]) {
        for (i, &v) in values.iter().enumerate() {
            self.member(i).set_degradation(v);
        }
    }

    fn counters(&self) -> Vec<u32> {
        (0..self.len())
            .map(|i| self.member(i).degradation())
            .collect()
    }

    /// Ranks selected, mapped to list indices.
    fn select_into(&mut self, n: usize, out: &mut [u32]) -> usize {
        let k = select(
            &self.members,
            self.policy_type,
            wrr_stride(self.members.total()),
            self.config,
            &self.state,
            n,
            &mut self.rng,
            out,
        );
        for o in &mut out[..k] {
            *o = (self.members.at(*o as usize).entry().id().0 - 1) as u32;
        }
        k
    }

    fn pick(&mut self, n: usize) -> Vec<u32> {
        let mut out = [0u32; MAX_SELECTION];
        let k = self.select_into(n, &mut out);
        let v = out[..k].to_vec();
        assert_distinct_valid(&v, self.len());
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
        let mut counts = vec![0usize; self.len()];
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
    let state = SelectionState::new();
    let mut rng = Rng::seed(1);
    let mut out = [0u32; 4];
    let config = SelectionConfig::default();
    let (small, ty) = members_of(&[Policy::RoundRobin; 3]);
    for _ in 0..2 {
        select(&small, ty, 1, config, &state, 1, &mut rng, &mut out);
    }
    let (big, _) = members_of(&[Policy::RoundRobin; 5]);
    assert_eq!(
        select(&big, ty, 1, config, &state, 2, &mut rng, &mut out),
        2
    );
    assert_eq!(out[..2], [2, 3]);
}

// ----- Weighted Round Robin -----

/// The gaps (in resolutions) between the turns of PE `pe` as first choice over `firsts`,
/// cyclically.
fn gaps(firsts: &[u32], pe: u32) -> Vec<usize> {
    let at: Vec<usize> = (0..firsts.len()).filter(|&c| firsts[c] == pe).collect();
    (0..at.len())
        .map(|j| (at[(j + 1) % at.len()] + firsts.len() - at[j] - 1) % firsts.len() + 1)
        .collect()
}

#[test]
fn wrr_3_1_proportions_and_spread() {
    let mut p = Pool::new(&wrr(&[3, 1]));
    // A round of 4: three turns of A, one of B, B never next to itself.
    let round = p.firsts(4);
    assert_eq!(round, [0, 1, 0, 0]);
    assert_eq!(p.firsts(8), [round.clone(), round].concat());
}

#[test]
fn wrr_2_1_1_exact_per_round_and_spread() {
    let mut p = Pool::new(&wrr(&[2, 1, 1]));
    let round = p.firsts(4);
    let mut counts = [0; 3];
    for &i in &round {
        counts[i as usize] += 1;
    }
    assert_eq!(counts, [2, 1, 1]);
    // The same cyclic order every round; A's two turns are not back to back within it.
    assert_eq!(p.firsts(4), round);
    assert_eq!(round, [0, 2, 1, 0]);
}

#[test]
fn wrr_n2_collects_distinct() {
    let mut p = Pool::new(&wrr(&[3, 1]));
    for v in p.picks(2, 8) {
        let mut s = v.clone();
        s.sort_unstable();
        assert_eq!(s, [0, 1], "{v:?}");
    }
}

#[test]
fn wrr_weights_of_one_are_round_robin() {
    // Every PE once per round, in the same cyclic order every round.
    let mut p = Pool::new(&wrr(&[1; 5]));
    let rounds = p.firsts(15);
    let mut first = rounds[..5].to_vec();
    assert_eq!(
        rounds,
        [first.clone(), first.clone(), first.clone()].concat()
    );
    first.sort_unstable();
    assert_eq!(first, [0, 1, 2, 3, 4]);
}

#[test]
fn wrr_equal_weights_share_equally_and_spread() {
    let mut p = Pool::new(&wrr(&[7; 5]));
    let round = p.firsts(35);
    let mut counts = [0; 5];
    for &i in &round {
        counts[i as usize] += 1;
    }
    assert_eq!(counts, [7; 5]);
    for pe in 0..5 {
        assert!(
            gaps(&round, pe).iter().all(|&g| (2..=15).contains(&g)),
            "{round:?}"
        );
    }
}

#[test]
fn wrr_weight_zero_never_selected() {
    let mut p = Pool::new(&wrr(&[0, 2, 0, 1]));
    for v in p.picks(4, 12) {
        assert_eq!(v.len(), 2);
        assert!(!v.contains(&0) && !v.contains(&2));
    }
    let mut zero = Pool::new(&wrr(&[0, 0]));
    assert_eq!(zero.picks(3, 2), [Vec::<u32>::new(), Vec::new()]);
}

#[test]
fn wrr_light_pes_are_staggered() {
    // The PE that follows the heavy one varies with the cursor instead of always being PE 1.
    let mut p = Pool::new(&wrr(&[1000, 1, 1, 1]));
    let round = p.total();
    let mut seconds = [0u32; 4];
    for v in p.picks(2, round) {
        seconds[v[1] as usize] += 1;
    }
    assert!(
        seconds[1..].iter().all(|&c| c > round as u32 / 5),
        "{seconds:?}"
    );
}

#[test]
fn wrr_exact_counts_and_spread_over_a_round() {
    let weights: Vec<u32> = (0..1000).map(|i| i % 5).collect();
    let mut p = Pool::new(&wrr(&weights));
    let round = p.total();
    assert_eq!(round, 2000);
    let firsts = p.firsts(round);
    let mut counts = vec![0u32; 1000];
    for &i in &firsts {
        counts[i as usize] += 1;
    }
    assert_eq!(counts, weights);
    // A PE of weight w comes back after about round / w resolutions: never sooner than a
    // third of that, never later than three times (three-gap theorem, golden stride).
    for pe in (0..1000u32).filter(|&i| weights[i as usize] > 1) {
        let w = weights[pe as usize] as usize;
        for g in gaps(&firsts, pe) {
            assert!(
                g * 3 >= round / w && g <= 3 * round / w,
                "PE {pe} weight {w}: gap {g}"
            );
        }
    }
}

#[test]
fn wrr_huge_weights_do_not_overflow_and_keep_every_pe() {
    let mut p = Pool::new(&wrr(&[MAX, HALF, 1]));
    for v in p.picks(3, 100) {
        assert_eq!(v.len(), 3);
    }
    let f = p.frequencies(30_000);
    assert_close(&f, &[2.0 / 3.0, 1.0 / 3.0, 0.0], 0.01);
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
            // The static order: by load, then by index (PE ID).
            let mut order: Vec<u32> = (0..loads.len() as u32).collect();
            order.sort_by_key(|&i| loads[i as usize]);
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
fn rlud_fully_degraded_takes_the_best_try() {
    // D saturates: every value is 1, so rejection against the D = 0 bounds (≈ MAX) fails
    // and the best try decides (all equal: the first): uniform, without replacement.
    let mut p = Pool::with_config(&rlud(&[0, 0, 0], MAX), SelectionConfig { max_increment: 0 });
    p.set_counters(&[1, 1, 1]);
    assert_close(&p.frequencies(60_000), &[1.0 / 3.0; 3], 0.01);
    for v in p.picks(3, 200) {
        assert_eq!(v.len(), 3);
    }
    // One degraded PE among fresh ones is practically never chosen first.
    p.set_counters(&[1, 0, 0]);
    // (Only when all REJECTION_TRIES draws hit it: (1/3)^8 per draw.)
    let f = p.frequencies(20_000);
    assert!(f[0] < 0.001, "{f:?}");
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
    assert_eq!(e.len(), 0);
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
        assert_eq!(p.policy_type, ty);
        for v in p.picks(50, 20) {
            assert_eq!(v.len(), 5, "{ty:#x}");
        }
        // n = 1 always yields one PE.
        assert_eq!(p.pick(1).len(), 1, "{ty:#x}");
    }
}

#[test]
fn output_buffer_and_protocol_cap_bound_the_count() {
    let mut p = Pool::new(&[Policy::RoundRobin; 300]);
    let mut small = [0u32; 2];
    assert_eq!(p.select_into(5, &mut small), 2);
    let mut big = [0u32; 1000];
    assert_eq!(p.select_into(1000, &mut big), MAX_SELECTION);
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

/// A member's value read off its policy's variant is the value of the variant's type, for every
/// type, with its fields at the extremes.
#[test]
fn member_values_read_off_the_variant_are_the_values_of_its_type() {
    for scale in [0, 1, 2, QUARTER, HALF, MAX - 1, MAX] {
        for policy in one_of_each() {
            for fields in [[scale; 4], [scale, 1, scale, 1], [1, scale, 1, scale]] {
                let policy = with_fields(policy, fields);
                let ty = policy.policy_type();
                assert_eq!(member_value(&policy), value_of(ty, &policy), "{policy:?}");
            }
        }
    }
}

/// `policy`'s variant with its fields (in wire order) set to `f`.
fn with_fields(policy: Policy, f: [u32; 4]) -> Policy {
    match policy {
        Policy::RoundRobin | Policy::Random => policy,
        Policy::WeightedRoundRobin { .. } => Policy::WeightedRoundRobin { weight: f[0] },
        Policy::WeightedRandom { .. } => Policy::WeightedRandom { weight: f[0] },
        Policy::Priority { .. } => Policy::Priority { priority: f[0] },
        Policy::LeastUsed { .. } => Policy::LeastUsed { load: f[0] },
        Policy::RandomizedLeastUsed { .. } => Policy::RandomizedLeastUsed { load: f[0] },
        Policy::LeastUsedDegradation { .. } => Policy::LeastUsedDegradation {
            load: f[0],
            load_degradation: f[1],
        },
        Policy::PriorityLeastUsed { .. } => Policy::PriorityLeastUsed {
            load: f[0],
            load_degradation: f[1],
        },
        Policy::RandomizedPriorityLeastUsed { .. } => Policy::RandomizedPriorityLeastUsed {
            load: f[0],
            load_degradation: f[1],
        },
        Policy::RandomizedLeastUsedDegradation { .. } => Policy::RandomizedLeastUsedDegradation {
            load: f[0],
            load_degradation: f[1],
        },
        Policy::PriorityLeastUsedDegradation { .. } => Policy::PriorityLeastUsedDegradation {
            load: f[0],
            load_degradation: f[1],
        },
        Policy::RandomizedPriorityLeastUsedDegradation { .. } => {
            Policy::RandomizedPriorityLeastUsedDegradation {
                load: f[0],
                load_degradation: f[1],
            }
        }
        Policy::WeightedRandomDpf { .. } => Policy::WeightedRandomDpf {
            weight: f[0],
            weight_dpf: f[1],
            distance: f[2],
        },
        Policy::LeastUsedDpf { .. } => Policy::LeastUsedDpf {
            load: f[0],
            load_dpf: f[1],
            distance: f[2],
        },
        Policy::LeastUsedDegradationDpf { .. } => Policy::LeastUsedDegradationDpf {
            load: f[0],
            load_degradation: f[1],
            load_dpf: f[2],
            distance: f[3],
        },
        Policy::PriorityLeastUsedDpf { .. } => Policy::PriorityLeastUsedDpf {
            load: f[0],
            load_degradation: f[1],
            load_dpf: f[2],
            distance: f[3],
        },
        Policy::PriorityLeastUsedDegradationDpf { .. } => Policy::PriorityLeastUsedDegradationDpf {
            load: f[0],
            load_degradation: f[1],
            load_dpf: f[2],
            distance: f[3],
        },
    }
}

// ----- Concurrency -----

#[test]
fn rr_concurrent_resolutions() {
    let (members, ty) = members_of(&[Policy::RoundRobin; 7]);
    let state = Arc::new(SelectionState::new());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let members = members.clone();
            let state = Arc::clone(&state);
            std::thread::spawn(move || {
                let mut rng = Rng::seed(t);
                let mut starts = [0u32; 7];
                let mut out = [0u32; 3];
                let config = SelectionConfig::default();
                for _ in 0..10_000 {
                    let k = select(&members, ty, 1, config, &state, 3, &mut rng, &mut out);
                    assert_eq!(k, 3);
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
    let (members, ty) = members_of(&lud(&loads, 7));
    let state = Arc::new(SelectionState::new());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (members, state) = (members.clone(), Arc::clone(&state));
            std::thread::spawn(move || {
                let mut rng = Rng::seed(t);
                let mut out = [0u32; 5];
                let config = SelectionConfig::default();
                for _ in 0..5_000 {
                    let k = select(&members, ty, 1, config, &state, 5, &mut rng, &mut out);
                    assert_eq!(k, 5);
                    assert_distinct_valid(&out, 50);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let total: u32 = members.iter().map(Member::degradation).sum();
    assert_eq!(total, 4 * 5_000 * 5);
}
