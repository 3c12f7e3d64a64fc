//! A small, fast, seedable pseudo-random number generator for member selection.
//!
//! [`Rng`] is xoshiro256++ (Blackman and Vigna, 2019) seeded through splitmix64. It is not
//! cryptographically secure and does not need to be: it only drives the weighted draws of the
//! random selection policies (RFC 5356 §4.3, §4.4, §5.4 and RSPLIB's randomized policies). Each
//! reader thread owns one generator, so drawing needs no synchronisation; tests seed them for
//! reproducible sequences.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// The splitmix64 increment (the golden ratio scaled to 64 bits).
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// One step of splitmix64: advances `state` and returns the next output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(GOLDEN_GAMMA);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A xoshiro256++ generator: 256 bits of state, period 2^256 - 1, passes BigCrush.
///
/// Create it with [`Rng::seed`] (reproducible) or [`Rng::from_entropy`] (per process and
/// thread). `Clone` copies the state, so a clone repeats the original's future sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose state is expanded from `seed` by splitmix64, as the xoshiro authors
    /// recommend. Equal seeds give equal sequences; any seed (0 included) is fine.
    pub fn seed(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        // splitmix64 is a bijection of its counter, so four consecutive outputs are never all 0
        // (the one state xoshiro cannot leave).
        Self { s }
    }

    /// A generator seeded from the process's hash keys (std's `RandomState`, which the OS
    /// seeds), the current time and the calling thread's id: different on every call.
    pub fn from_entropy() -> Self {
        let mut h = RandomState::new().build_hasher();
        if let Ok(t) = SystemTime::now().duration_since(UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        std::thread::current().id().hash(&mut h);
        Self::seed(h.finish())
    }

    /// The next 64 uniformly distributed bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = self.s;
        let result = s0.wrapping_add(s3).rotate_left(23).wrapping_add(s0);
        let t = s1 << 17;
        let s2 = s2 ^ s0;
        let s3 = s3 ^ s1;
        let s1 = s1 ^ s2;
        let s0 = s0 ^ s3;
        let s2 = s2 ^ t;
        let s3 = s3.rotate_left(45);
        self.s = [s0, s1, s2, s3];
        result
    }

    /// A uniformly distributed value in `0..n`, without modulo bias (Lemire's multiply-and-reject
    /// method: one multiplication, a division only in the rare rejection case). Returns 0 when
    /// `n` is 0 or 1 (and then draws nothing).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        // Truncation intended: the low 64 bits of the 128-bit product.
        let mut low = m as u64;
        if low < n {
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// A generator with this exact internal state (for reference-vector tests).
    #[cfg(test)]
    fn from_state(s: [u64; 4]) -> Self {
        Self { s }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro256pp_reference_vector() {
        // State {1, 2, 3, 4}: the reference C implementation's first outputs (also the test
        // vector of the `rand_xoshiro` crate).
        let mut r = Rng::from_state([1, 2, 3, 4]);
        assert_eq!(r.next_u64(), 41_943_041);
        assert_eq!(r.next_u64(), 58_720_359);
        assert_eq!(r.next_u64(), 3_588_806_011_781_223);
        assert_eq!(r.next_u64(), 3_591_011_842_654_386);
    }

    #[test]
    fn splitmix64_reference_vector() {
        // splitmix64 seeded with 0: well-known first outputs.
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(&mut s), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::seed(42);
        let mut b = Rng::seed(42);
        let mut c = Rng::seed(43);
        let va: Vec<u64> = (0..64).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..64).map(|_| b.next_u64()).collect();
        let vc: Vec<u64> = (0..64).map(|_| c.next_u64()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
    }

    #[test]
    fn below_bounds_and_degenerate() {
        let mut r = Rng::seed(7);
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
        for n in [2u64, 3, 7, 1000, u64::MAX / 3 * 2, u64::MAX] {
            for _ in 0..1000 {
                assert!(r.below(n) < n);
            }
        }
    }

    #[test]
    fn below_is_uniform() {
        let mut r = Rng::seed(1);
        let mut counts = [0u32; 6];
        let draws = 600_000;
        for _ in 0..draws {
            counts[r.below(6) as usize] += 1;
        }
        for &c in &counts {
            let expected = draws as f64 / 6.0;
            assert!(
                (f64::from(c) - expected).abs() < expected * 0.02,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn below_unbiased_for_awkward_bound() {
        // n = 3 * 2^62: a plain `next_u64() % n` would land in the lowest third with probability
        // 1/2 (the top quarter of u64 wraps onto it); an unbiased draw gives 1/3.
        let mut r = Rng::seed(3);
        let n = 3u64 << 62;
        let draws = 200_000;
        let low = (0..draws).filter(|_| r.below(n) < 1u64 << 62).count();
        let frac = low as f64 / f64::from(draws);
        assert!((frac - 1.0 / 3.0).abs() < 0.01, "{frac}");
    }

    #[test]
    fn from_entropy_differs() {
        let a = Rng::from_entropy();
        let b = Rng::from_entropy();
        assert_ne!(a, b);
    }
}
