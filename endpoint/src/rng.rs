//! The endpoint's random source: SplitMix64, seeded by the caller (tests) or from the standard
//! library's per-process random hash keys (the driver). Draws PE identifiers (RFC 5352 §3.1 R2)
//! and random member selection (RFC 5356 §4.3).

use std::hash::{BuildHasher, Hasher};

/// A small deterministic pseudo-random generator (SplitMix64). Not for cryptography.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator that yields the same sequence for the same seed.
    pub const fn seed(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator seeded from the operating system's randomness (through the random keys of
    /// `std`'s hasher), the clock and the process ID.
    pub fn from_entropy() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        Self::seed(h.finish())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n` > 0), without modulo bias worth caring about for these uses.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A non-zero value of `bits` bits (1..=64): a PE identifier (RFC 5352 §3.1 R2; never 0).
    pub fn nonzero(&mut self, bits: u32) -> u64 {
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        loop {
            let v = self.next_u64() & mask;
            if v != 0 {
                return v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_ids_fit_their_width() {
        let mut a = Rng::seed(7);
        let mut b = Rng::seed(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut wide = false;
        for _ in 0..64 {
            let narrow = a.nonzero(32);
            assert!(narrow != 0 && narrow <= u64::from(u32::MAX));
            let id = a.nonzero(64);
            assert_ne!(id, 0);
            wide |= id > u64::from(u32::MAX);
            assert!(a.below(3) < 3);
        }
        assert!(wide, "64-bit draws use the upper half");
        assert_ne!(Rng::from_entropy(), Rng::from_entropy());
    }
}
