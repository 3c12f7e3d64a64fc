//! Cross-checks of `rserpool_protocol::checksum` against second, independent
//! implementations written here:
//!
//! * an XXH3-64 (seed 0, default secret) written from the published algorithm
//!   description (xxHash `doc/xxhash_spec.md`), checked against
//!   `xxhash_rust` and then used to recompute the NG digest from scratch
//!   (nextgen.md, "The NG digest");
//! * a from-scratch RFC 1071 Internet checksum over the concatenated entry
//!   blocks (procedures.md §14.2), for sets too small to wrap rsplib's `u32`
//!   accumulator.

use rserpool_protocol::checksum::{Internet16, NgDigest};

// ---------------------------------------------------------------------------
// Deterministic PRNG (splitmix64).
// ---------------------------------------------------------------------------

struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish value in `lo..=hi` (modulo bias is irrelevant here).
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

// ---------------------------------------------------------------------------
// Independent XXH3-64, seed 0, default 192-byte secret.
// ---------------------------------------------------------------------------

mod ref_xxh3 {
    const PRIME32_1: u64 = 0x9e37_79b1;
    const PRIME32_2: u64 = 0x85eb_ca77;
    const PRIME32_3: u64 = 0xc2b2_ae3d;
    const PRIME64_1: u64 = 0x9e37_79b1_85eb_ca87;
    const PRIME64_2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    const PRIME64_3: u64 = 0x1656_67b1_9e37_79f9;
    const PRIME64_4: u64 = 0x85eb_ca77_c2b2_ae63;
    const PRIME64_5: u64 = 0x27d4_eb2f_1656_67c5;
    const PRIME_MX1: u64 = 0x1656_6791_9e37_79f9;
    const PRIME_MX2: u64 = 0x9fb2_1c65_1e98_df25;

    /// The default secret ("kSecret"), 192 bytes.
    const SECRET: [u8; 192] = [
        0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad,
        0x1c, 0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3,
        0x67, 0x1f, 0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc,
        0xff, 0x72, 0x21, 0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6,
        0x81, 0x3a, 0x26, 0x4c, 0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65,
        0x8b, 0x1b, 0x53, 0x2e, 0xa3, 0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19,
        0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8, 0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9,
        0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d, 0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31,
        0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64, 0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb,
        0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb, 0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0,
        0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e, 0x2b, 0x16, 0xbe, 0x58, 0x7d,
        0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce, 0x45, 0xcb, 0x3a, 0x8f,
        0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
    ];

    const STRIPE: usize = 64;
    const STRIPES_PER_BLOCK: usize = (SECRET.len() - STRIPE) / 8;
    const BLOCK: usize = STRIPE * STRIPES_PER_BLOCK;

    fn le64(b: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(w)
    }

    fn le32(b: &[u8], at: usize) -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[at..at + 4]);
        u32::from_le_bytes(w)
    }

    fn sec64(at: usize) -> u64 {
        le64(&SECRET, at)
    }

    /// 64x64 -> 128 multiply, then low half XOR high half.
    fn fold_mul(a: u64, b: u64) -> u64 {
        let p = u128::from(a) * u128::from(b);
        (p as u64) ^ ((p >> 64) as u64)
    }

    fn avalanche(mut x: u64) -> u64 {
        x ^= x >> 37;
        x = x.wrapping_mul(PRIME_MX1);
        x ^ (x >> 32)
    }

    fn avalanche_xxh64(mut x: u64) -> u64 {
        x ^= x >> 33;
        x = x.wrapping_mul(PRIME64_2);
        x ^= x >> 29;
        x = x.wrapping_mul(PRIME64_3);
        x ^ (x >> 32)
    }

    /// Mixes 16 input bytes at `data[at..]` with 16 secret bytes at `sec`.
    fn mix16(data: &[u8], at: usize, sec: usize) -> u64 {
        fold_mul(
            le64(data, at) ^ sec64(sec),
            le64(data, at + 8) ^ sec64(sec + 8),
        )
    }

    fn len_0() -> u64 {
        avalanche_xxh64(sec64(56) ^ sec64(64))
    }

    fn len_1to3(input: &[u8]) -> u64 {
        let n = input.len();
        let combined = u32::from(input[n - 1])
            | ((n as u32) << 8)
            | (u32::from(input[0]) << 16)
            | (u32::from(input[n >> 1]) << 24);
        let key = u64::from(le32(&SECRET, 0) ^ le32(&SECRET, 4));
        avalanche_xxh64(key ^ u64::from(combined))
    }

    fn len_4to8(input: &[u8]) -> u64 {
        let n = input.len();
        let first = u64::from(le32(input, 0));
        let last = u64::from(le32(input, n - 4));
        let combined = last | (first << 32);
        let mut v = (sec64(8) ^ sec64(16)) ^ combined;
        v ^= v.rotate_left(49) ^ v.rotate_left(24);
        v = v.wrapping_mul(PRIME_MX2);
        v ^= (v >> 35).wrapping_add(n as u64);
        v = v.wrapping_mul(PRIME_MX2);
        v ^ (v >> 28)
    }

    fn len_9to16(input: &[u8]) -> u64 {
        let n = input.len();
        let low = (sec64(24) ^ sec64(32)) ^ le64(input, 0);
        let high = (sec64(40) ^ sec64(48)) ^ le64(input, n - 8);
        let v = (n as u64)
            .wrapping_add(low.swap_bytes())
            .wrapping_add(high)
            .wrapping_add(fold_mul(low, high));
        avalanche(v)
    }

    fn len_17to128(input: &[u8]) -> u64 {
        let n = input.len();
        let mut acc = (n as u64).wrapping_mul(PRIME64_1);
        let rounds = ((n - 1) >> 5) + 1;
        for i in (0..rounds).rev() {
            acc = acc.wrapping_add(mix16(input, i * 16, i * 32));
            acc = acc.wrapping_add(mix16(input, n - i * 16 - 16, i * 32 + 16));
        }
        avalanche(acc)
    }

    fn len_129to240(input: &[u8]) -> u64 {
        let n = input.len();
        let mut acc = (n as u64).wrapping_mul(PRIME64_1);
        for i in 0..8 {
            acc = acc.wrapping_add(mix16(input, i * 16, i * 16));
        }
        acc = avalanche(acc);
        for i in 8..n / 16 {
            acc = acc.wrapping_add(mix16(input, i * 16, (i - 8) * 16 + 3));
        }
        acc = acc.wrapping_add(mix16(input, n - 16, 119));
        avalanche(acc)
    }

    fn accumulate(acc: &mut [u64; 8], stripe: &[u8], sec: usize) {
        for i in 0..8 {
            let data = le64(stripe, i * 8);
            let keyed = data ^ sec64(sec + i * 8);
            acc[i ^ 1] = acc[i ^ 1].wrapping_add(data);
            acc[i] = acc[i].wrapping_add((keyed & 0xffff_ffff).wrapping_mul(keyed >> 32));
        }
    }

    fn scramble(acc: &mut [u64; 8]) {
        let base = SECRET.len() - STRIPE;
        for (i, a) in acc.iter_mut().enumerate() {
            *a ^= *a >> 47;
            *a ^= sec64(base + i * 8);
            *a = a.wrapping_mul(PRIME32_1);
        }
    }

    fn long(input: &[u8]) -> u64 {
        let n = input.len();
        let mut acc = [
            PRIME32_3, PRIME64_1, PRIME64_2, PRIME64_3, PRIME64_4, PRIME32_2, PRIME64_5, PRIME32_1,
        ];
        // Full blocks, always leaving at least one byte for the last block.
        let full_blocks = (n - 1) / BLOCK;
        for b in 0..full_blocks {
            let block = &input[b * BLOCK..(b + 1) * BLOCK];
            for s in 0..STRIPES_PER_BLOCK {
                accumulate(&mut acc, &block[s * STRIPE..], s * 8);
            }
            scramble(&mut acc);
        }
        // Last (partial or full) block: all stripes but the last one ...
        let last = &input[full_blocks * BLOCK..];
        let stripes = (last.len() - 1) / STRIPE;
        for s in 0..stripes {
            accumulate(&mut acc, &last[s * STRIPE..], s * 8);
        }
        // ... then the last 64 bytes of the input (may overlap).
        accumulate(&mut acc, &input[n - STRIPE..], SECRET.len() - STRIPE - 7);
        // Merge.
        let mut result = (n as u64).wrapping_mul(PRIME64_1);
        for i in 0..4 {
            let sec = 11 + i * 16;
            result = result.wrapping_add(fold_mul(
                acc[2 * i] ^ sec64(sec),
                acc[2 * i + 1] ^ sec64(sec + 8),
            ));
        }
        avalanche(result)
    }

    /// XXH3-64 with seed 0 and the default secret.
    pub fn xxh3_64(input: &[u8]) -> u64 {
        match input.len() {
            0 => len_0(),
            1..=3 => len_1to3(input),
            4..=8 => len_4to8(input),
            9..=16 => len_9to16(input),
            17..=128 => len_17to128(input),
            129..=240 => len_129to240(input),
            _ => long(input),
        }
    }
}

/// A set of (pool handle, PE ID) entries for the NG digest.
type NgSet = Vec<(Vec<u8>, u64)>;

/// The NG digest's per-entry term, recomputed with the test's own XXH3.
fn ref_entry_hash(handle: &[u8], pe_id: u64) -> u64 {
    let mut input = handle.to_vec();
    input.extend_from_slice(&pe_id.to_be_bytes());
    ref_xxh3::xxh3_64(&input)
}

/// The NG digest of a set, from scratch: Σ h mod 2^64.
fn ref_ng_digest(set: &[(Vec<u8>, u64)]) -> u64 {
    set.iter().fold(0u64, |acc, (h, id)| {
        acc.wrapping_add(ref_entry_hash(h, *id))
    })
}

/// RFC 1071 over the concatenation of all entry blocks
/// (`handle zero-padded to a multiple of 4 | PE ID big-endian`), summed in a
/// `u64` (no rsplib `u32` wrap), folded, complemented.
fn ref_internet16(set: &[(Vec<u8>, u32)]) -> u16 {
    let mut buf = Vec::new();
    for (h, id) in set {
        buf.extend_from_slice(h);
        buf.resize(buf.len().next_multiple_of(4), 0);
        buf.extend_from_slice(&id.to_be_bytes());
    }
    let mut sum: u64 = buf
        .chunks_exact(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// ---------------------------------------------------------------------------
// (a) The test XXH3 agrees with xxhash_rust.
// ---------------------------------------------------------------------------

#[test]
fn ref_xxh3_known_answer() {
    assert_eq!(ref_xxh3::xxh3_64(b""), 0x2d06_8005_38d3_94c2);
    assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2d06_8005_38d3_94c2);
}

#[test]
fn ref_xxh3_matches_xxhash_rust_all_lengths() {
    let mut rng = SplitMix64(0x5eed_0001);
    let data = rng.bytes(5000);
    for len in 0..=1100 {
        let input = &data[..len];
        assert_eq!(
            ref_xxh3::xxh3_64(input),
            xxhash_rust::xxh3::xxh3_64(input),
            "length {len}"
        );
        // Same lengths at an odd offset, different bytes.
        let input = &data[3777 - len.min(3777)..][..len];
        assert_eq!(
            ref_xxh3::xxh3_64(input),
            xxhash_rust::xxh3::xxh3_64(input),
            "length {len} (second buffer)"
        );
    }
    // Several full blocks (multiple scrambles), around block boundaries.
    for len in [2047, 2048, 2049, 3072, 3073, 4096 + 17, 5000] {
        let input = &data[..len];
        assert_eq!(
            ref_xxh3::xxh3_64(input),
            xxhash_rust::xxh3::xxh3_64(input),
            "length {len}"
        );
    }
}

// ---------------------------------------------------------------------------
// (b) NgDigest, built incrementally, against a from-scratch recomputation.
// ---------------------------------------------------------------------------

#[test]
fn ng_entry_hash_matches_reference() {
    let mut rng = SplitMix64(0x5eed_0002);
    for len in 0..=300 {
        let handle = rng.bytes(len);
        let id = rng.next_u64();
        assert_eq!(
            NgDigest::entry_hash(&handle, id),
            ref_entry_hash(&handle, id),
            "handle length {len}"
        );
    }
}

#[test]
fn ng_digest_incremental_matches_from_scratch() {
    let mut rng = SplitMix64(0x5eed_0003);
    for round in 0..20 {
        let mut digest = NgDigest::new();
        let mut set: NgSet = Vec::new();
        for step in 0..300 {
            // Grow more often than shrink, with some rounds heavier on removes.
            let remove = !set.is_empty() && rng.range(0, 9) < 3 + round % 4;
            if remove {
                let at = rng.range(0, set.len() - 1);
                let (h, id) = set.swap_remove(at);
                digest.remove(&h, id);
            } else {
                let len = rng.range(1, 300);
                // Reuse an existing handle (same pool, another PE) now and then.
                let handle = if !set.is_empty() && rng.range(0, 3) == 0 {
                    set[rng.range(0, set.len() - 1)].0.clone()
                } else {
                    rng.bytes(len)
                };
                let id = rng.next_u64();
                if set.iter().any(|(h, i)| *h == handle && *i == id) {
                    continue;
                }
                digest.add(&handle, id);
                set.push((handle, id));
            }
            if step % 7 == 0 || step == 299 {
                assert_eq!(
                    digest.value(),
                    ref_ng_digest(&set),
                    "round {round} step {step}"
                );
            }
        }
        // Drain in random order back to the empty digest.
        while !set.is_empty() {
            let at = rng.range(0, set.len() - 1);
            let (h, id) = set.swap_remove(at);
            digest.remove(&h, id);
        }
        assert_eq!(digest.value(), 0, "round {round}");
        assert_eq!(digest, NgDigest::new());
    }
}

// ---------------------------------------------------------------------------
// (c) Internet16 against a from-scratch RFC 1071 computation.
// ---------------------------------------------------------------------------

#[test]
fn internet16_matches_rfc1071_from_scratch() {
    let mut rng = SplitMix64(0x5eed_0004);
    for round in 0..40 {
        let mut cksum = Internet16::new();
        let mut set: Vec<(Vec<u8>, u32)> = Vec::new();
        for step in 0..200 {
            let remove = !set.is_empty() && rng.range(0, 9) < 3;
            if remove {
                let at = rng.range(0, set.len() - 1);
                let (h, id) = set.swap_remove(at);
                cksum.remove(&h, id);
            } else {
                let len = rng.range(0, 64);
                let handle = rng.bytes(len);
                let id = rng.next_u64() as u32;
                cksum.add(&handle, id);
                set.push((handle, id));
            }
            // At most 200 entries of at most 34 words each: far below the
            // 2^32 at which rsplib's u32 accumulator wraps.
            let unfolded: u64 = set
                .iter()
                .map(|(h, id)| u64::from(Internet16::entry_sum(h, *id)))
                .sum();
            assert!(unfolded < 1 << 32);
            assert_eq!(
                cksum.value(),
                ref_internet16(&set),
                "round {round} step {step}"
            );
        }
    }
    // The wire-format.md §7 reference values, from scratch.
    let echo = b"EchoPool".to_vec();
    assert_eq!(ref_internet16(&[]), 0xffff);
    assert_eq!(ref_internet16(&[(echo.clone(), 0x1234_5678)]), 0x29a5);
    assert_eq!(
        ref_internet16(&[(echo.clone(), 0x1234_5678), (echo, 0x9abc_def0)]),
        0x4249
    );
}

// ---------------------------------------------------------------------------
// (d) NG digest test vectors, computed by both implementations.
// ---------------------------------------------------------------------------

#[test]
fn ng_digest_test_vectors() {
    let echo = b"EchoPool".to_vec();
    // (set, expected digest)
    let vectors: [(NgSet, u64); 4] = [
        (vec![], 0),
        (vec![(echo.clone(), 0x1234_5678)], 0xff2b_ac89_5417_f813),
        (
            vec![(echo.clone(), 0x1234_5678), (echo.clone(), 0x9abc_def0)],
            0xd666_eec5_ddcd_87c3,
        ),
        // A PE ID that needs all 64 bits.
        (
            vec![(echo.clone(), 0x0123_4567_89ab_cdef)],
            0x3e33_be8b_cbcf_531a,
        ),
    ];
    println!("NG digest test vectors (XXH3-64 seed 0, sum mod 2^64):");
    for (set, expected) in &vectors {
        let mut digest = NgDigest::new();
        for (h, id) in set {
            digest.add(h, *id);
        }
        let reference = ref_ng_digest(set);
        let names: Vec<String> = set
            .iter()
            .map(|(h, id)| format!("(\"{}\", {id:#x})", String::from_utf8_lossy(h)))
            .collect();
        println!(
            "  {{{}}} -> {:#018x} (reference {:#018x})",
            names.join(", "),
            digest.value(),
            reference
        );
        assert_eq!(digest.value(), reference);
        assert_eq!(digest.value(), *expected);
    }
    println!("per-entry terms h(handle, PE ID):");
    for id in [0x1234_5678_u64, 0x9abc_def0, 0x0123_4567_89ab_cdef] {
        let h = NgDigest::entry_hash(&echo, id);
        assert_eq!(h, ref_entry_hash(&echo, id));
        println!("  h(\"EchoPool\", {id:#x}) = {h:#018x}");
    }
}
