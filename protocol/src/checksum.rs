//! Handlespace audit checksums: the RFC generation's Internet-16 PE checksum
//! (RFC 5353 §3.6.2, procedures.md §14.2, emulating rsplib's unfolded `u32`
//! accumulator) and the NG generation's 64-bit digest (nextgen.md, "The NG
//! digest").
//!
//! Both are sums over the set of (pool handle, PE ID) entries a registrar
//! owns, so they are independent of order and are kept up to date in O(1)
//! per registration and deregistration with [`Internet16::add`] /
//! [`Internet16::remove`] and [`NgDigest::add`] / [`NgDigest::remove`].

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// Incremental Internet-16 checksum (RFC 5353 §3.6.2, RFC 1071) of the set of
/// (pool handle, PE ID) entries a registrar owns, as specified in
/// procedures.md §14.2.
///
/// Each entry contributes the block `pool handle zero-padded to a multiple of
/// 4 | PE ID as 4 bytes big-endian`. Like rsplib (`poolhandlespacechecksum.c`,
/// `poolElementNodeComputeChecksum`), each entry's big-endian 16-bit words are
/// summed without folding into a `u32` ([`Internet16::entry_sum`]), and these
/// per-entry sums are added to and subtracted from a `u32` accumulator with
/// wrapping arithmetic. Only [`Internet16::value`] folds (end-around carry)
/// and complements. The empty set has the value `0xffff`.
///
/// Because wrapping `u32` addition and subtraction form a group, the
/// accumulator depends only on the current set, never on the order of
/// additions and removals.
///
/// While the unfolded sum of the set stays below 2^32 the value is the exact
/// RFC 1071 checksum, equal to rsplib's on any host. Once it wraps, this
/// matches rsplib on a big-endian host (off by one from the exact checksum
/// per wrap); rsplib on a little-endian host sums byte-swapped words, so its
/// wrap count can differ and each wrap shows as 0x100 instead of 1.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Internet16 {
    /// `Σ entry_sum(entry) mod 2^32` over the current set (rsplib's
    /// `HandlespaceChecksumAccumulatorType`).
    acc: u32,
}

impl Internet16 {
    /// The checksum of the empty set (procedures.md §14.2; value `0xffff`).
    #[must_use]
    pub const fn new() -> Self {
        Self { acc: 0 }
    }

    /// Unfolded sum of the big-endian 16-bit words of one entry's block
    /// `pool handle zero-padded to a multiple of 4 | PE ID big-endian`
    /// (procedures.md §14.2), computed with `u32` wrapping arithmetic like
    /// rsplib's `handlespaceChecksumCompute`.
    #[must_use]
    #[inline]
    pub fn entry_sum(pool_handle: &[u8], pe_id: u32) -> u32 {
        let mut chunks = pool_handle.chunks_exact(4);
        let mut sum = (pe_id >> 16).wrapping_add(pe_id & 0xffff);
        for chunk in &mut chunks {
            let word = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            sum = sum.wrapping_add(word >> 16).wrapping_add(word & 0xffff);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // Zero padding up to the next multiple of 4.
            let mut last = [0u8; 4];
            last[..rest.len()].copy_from_slice(rest);
            let word = u32::from_be_bytes(last);
            sum = sum.wrapping_add(word >> 16).wrapping_add(word & 0xffff);
        }
        sum
    }

    /// Adds the entry (pool handle, PE ID) to the set (RFC 5353 §3.6.2;
    /// rsplib `handlespaceChecksumAdd`, `u32` wrapping).
    #[inline]
    pub fn add(&mut self, pool_handle: &[u8], pe_id: u32) {
        self.acc = self.acc.wrapping_add(Self::entry_sum(pool_handle, pe_id));
    }

    /// Removes the entry (pool handle, PE ID) from the set (RFC 5353 §3.6.2;
    /// rsplib `handlespaceChecksumSub`, `u32` wrapping). The entry must have
    /// been added before.
    #[inline]
    pub fn remove(&mut self, pool_handle: &[u8], pe_id: u32) {
        self.acc = self.acc.wrapping_sub(Self::entry_sum(pool_handle, pe_id));
    }

    /// Adds all entries of `other`, a set disjoint from this one (e.g. another shard's share of
    /// the same owner's PEs).
    #[inline]
    pub fn merge(&mut self, other: &Self) {
        self.acc = self.acc.wrapping_add(other.acc);
    }

    /// The 16-bit value for the PE Checksum parameter (RFC 5353 §3.6.2,
    /// procedures.md §14.2): the accumulator folded with end-around carry
    /// until it fits 16 bits, then complemented (rsplib
    /// `handlespaceChecksumFinish`). Send it big-endian.
    #[must_use]
    #[inline]
    pub fn value(&self) -> u16 {
        let mut sum = self.acc;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        // The loop leaves `sum <= 0xffff`, so the cast is lossless.
        !(sum as u16)
    }
}

/// Handles up to this length are hashed from a stack buffer by
/// [`NgDigest::entry_hash`]; longer ones go through the streaming hasher.
const NG_STACK_HANDLE_MAX: usize = 248;

/// Incremental NG handlespace digest (nextgen.md, "The NG digest"), carried in
/// the NG PE Checksum parameter (length 12, u64).
///
/// `digest = Σ XXH3-64(seed 0)(pool handle bytes || PE ID as 8 big-endian
/// bytes) mod 2^64` over the set of entries a registrar owns; the empty set
/// has digest 0. Order-independent and updated in O(1) per add and remove.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct NgDigest {
    /// `Σ entry_hash(entry) mod 2^64` over the current set.
    sum: u64,
}

impl NgDigest {
    /// The digest of the empty set (nextgen.md, "The NG digest"; value 0).
    #[must_use]
    pub const fn new() -> Self {
        Self { sum: 0 }
    }

    /// One entry's term `h(pool handle, PE ID)` of the NG digest (nextgen.md,
    /// "The NG digest"): XXH3-64 with seed 0 over the pool handle bytes
    /// followed by the PE ID as 8 big-endian bytes. Does not allocate.
    #[must_use]
    #[inline]
    pub fn entry_hash(pool_handle: &[u8], pe_id: u64) -> u64 {
        let id = pe_id.to_be_bytes();
        let len = pool_handle.len();
        if len <= NG_STACK_HANDLE_MAX {
            let mut buf = [0u8; NG_STACK_HANDLE_MAX + 8];
            buf[..len].copy_from_slice(pool_handle);
            buf[len..len + 8].copy_from_slice(&id);
            xxh3_64(&buf[..len + 8])
        } else {
            let mut hasher = Xxh3::new();
            hasher.update(pool_handle);
            hasher.update(&id);
            hasher.digest()
        }
    }

    /// Adds the entry (pool handle, PE ID) to the set (nextgen.md, "The NG
    /// digest"; wrapping `u64` addition).
    #[inline]
    pub fn add(&mut self, pool_handle: &[u8], pe_id: u64) {
        self.sum = self.sum.wrapping_add(Self::entry_hash(pool_handle, pe_id));
    }

    /// Removes the entry (pool handle, PE ID) from the set (nextgen.md, "The
    /// NG digest"; wrapping `u64` subtraction). The entry must have been added
    /// before.
    #[inline]
    pub fn remove(&mut self, pool_handle: &[u8], pe_id: u64) {
        self.sum = self.sum.wrapping_sub(Self::entry_hash(pool_handle, pe_id));
    }

    /// Adds all entries of `other`, a set disjoint from this one.
    #[inline]
    pub fn merge(&mut self, other: &Self) {
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// The 64-bit digest for the NG PE Checksum parameter (nextgen.md, "The
    /// NG digest"). Send it big-endian.
    #[must_use]
    #[inline]
    pub const fn value(&self) -> u64 {
        self.sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECHO: &[u8] = b"EchoPool";

    #[test]
    fn merge_equals_adding_both_sets() {
        let mut a = Internet16::new();
        let mut b = Internet16::new();
        let mut both = Internet16::new();
        let mut na = NgDigest::new();
        let mut nb = NgDigest::new();
        let mut nboth = NgDigest::new();
        for id in 1..50u32 {
            let (c, n) = if id % 3 == 0 {
                (&mut a, &mut na)
            } else {
                (&mut b, &mut nb)
            };
            c.add(ECHO, id);
            n.add(ECHO, u64::from(id));
            both.add(ECHO, id);
            nboth.add(ECHO, u64::from(id));
        }
        a.merge(&b);
        na.merge(&nb);
        assert_eq!(a.value(), both.value());
        assert_eq!(na.value(), nboth.value());
    }

    /// Straightforward model of rsplib: build each entry's padded block,
    /// sum its big-endian words in a `u32` (wrapping), add the per-entry sums
    /// in a `u32` (wrapping), fold, complement.
    fn model_u32(entries: &[(Vec<u8>, u32)]) -> u16 {
        let mut acc: u32 = 0;
        for (handle, id) in entries {
            let mut block = handle.clone();
            while block.len() % 4 != 0 {
                block.push(0);
            }
            block.extend_from_slice(&id.to_be_bytes());
            let mut entry: u32 = 0;
            for pair in block.chunks_exact(2) {
                entry = entry.wrapping_add(u32::from(u16::from_be_bytes([pair[0], pair[1]])));
            }
            acc = acc.wrapping_add(entry);
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// Exact one's-complement sum (no u32 wrap), for comparison.
    fn model_exact(entries: &[(Vec<u8>, u32)]) -> u16 {
        let mut acc: u64 = 0;
        for (handle, id) in entries {
            let mut block = handle.clone();
            while block.len() % 4 != 0 {
                block.push(0);
            }
            block.extend_from_slice(&id.to_be_bytes());
            for pair in block.chunks_exact(2) {
                acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
            }
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn internet16_reference_values() {
        // wire-format.md §7.
        let mut c = Internet16::new();
        assert_eq!(c.value(), 0xffff);
        assert_eq!(Internet16::default().value(), 0xffff);
        c.add(ECHO, 0x1234_5678);
        assert_eq!(c.value(), 0x29a5);
        c.add(ECHO, 0x9abc_def0);
        assert_eq!(c.value(), 0x4249);
    }

    #[test]
    fn internet16_entry_sum_padding() {
        // Odd and short handles are zero-padded to a multiple of 4.
        assert_eq!(Internet16::entry_sum(b"", 0x0001_0002), 3);
        assert_eq!(Internet16::entry_sum(b"\x01", 0), 0x0100);
        assert_eq!(Internet16::entry_sum(b"\x01\x02\x03", 0), 0x0102 + 0x0300);
        assert_eq!(
            Internet16::entry_sum(b"\x01\x02\x03\x04\x05", 0),
            0x0102 + 0x0304 + 0x0500
        );
        for len in 0..40usize {
            let handle: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let entries = vec![(handle.clone(), 0xdead_beef)];
            let mut c = Internet16::new();
            c.add(&handle, 0xdead_beef);
            assert_eq!(c.value(), model_u32(&entries), "len {len}");
        }
    }

    #[test]
    fn internet16_order_independent_and_remove() {
        let entries: [(&[u8], u32); 4] = [
            (b"EchoPool", 1),
            (b"DiscardPool", 0xffff_ffff),
            (b"X", 0x8000_0000),
            (b"A pool handle of exactly 32 B..", 42),
        ];
        let mut fwd = Internet16::new();
        for (h, id) in entries {
            fwd.add(h, id);
        }
        let mut rev = Internet16::new();
        for (h, id) in entries.iter().rev() {
            rev.add(h, *id);
        }
        assert_eq!(fwd, rev);
        assert_eq!(fwd.value(), rev.value());
        for (h, id) in entries {
            fwd.remove(h, id);
        }
        assert_eq!(fwd, Internet16::new());
        assert_eq!(fwd.value(), 0xffff);
    }

    #[test]
    fn internet16_u32_wrap_matches_rsplib_model() {
        // 32-byte handles of 0xff give the largest per-entry sums
        // (18 words), so a few thousand entries wrap the u32 accumulator.
        let handle = vec![0xffu8; 32];
        let entries: Vec<(Vec<u8>, u32)> = (0..5000u32)
            .map(|i| (handle.clone(), 0xffff_0000 | i))
            .collect();
        let total: u64 = entries
            .iter()
            .map(|(h, id)| u64::from(Internet16::entry_sum(h, *id)))
            .sum();
        assert!(
            total > u64::from(u32::MAX),
            "test set must wrap the accumulator"
        );

        let mut c = Internet16::new();
        for (h, id) in &entries {
            c.add(h, *id);
        }
        assert_eq!(c.value(), model_u32(&entries));
        // rsplib's wrap makes it differ from the exact one's-complement sum.
        assert_ne!(c.value(), model_exact(&entries));

        // Removing entries across the wrap boundary (u32 underflow) comes
        // back to the same values as the model of the remaining set.
        for (h, id) in &entries[..2500] {
            c.remove(h, *id);
        }
        assert_eq!(c.value(), model_u32(&entries[2500..]));
        for (h, id) in &entries[2500..] {
            c.remove(h, *id);
        }
        assert_eq!(c.value(), 0xffff);
        assert_eq!(c, Internet16::new());
    }

    #[test]
    fn ng_reference_values() {
        let mut d = NgDigest::new();
        assert_eq!(d.value(), 0);
        assert_eq!(NgDigest::default().value(), 0);
        d.add(ECHO, 0x1234_5678);
        let one = xxh3_64(b"EchoPool\x00\x00\x00\x00\x12\x34\x56\x78");
        assert_eq!(d.value(), one);
        assert_eq!(d.value(), 0xff2b_ac89_5417_f813);
        d.add(ECHO, 0x9abc_def0);
        let two = one.wrapping_add(xxh3_64(b"EchoPool\x00\x00\x00\x00\x9a\xbc\xde\xf0"));
        assert_eq!(d.value(), two);
        assert_eq!(d.value(), 0xd666_eec5_ddcd_87c3);
    }

    #[test]
    fn ng_stack_and_streaming_paths_agree() {
        for len in [0usize, 1, 7, 200, 247, 248, 249, 250, 300, 1100] {
            let handle: Vec<u8> = (0..len).map(|i| (i * 131 + 7) as u8).collect();
            let id = 0x0123_4567_89ab_cdef_u64;
            let mut input = handle.clone();
            input.extend_from_slice(&id.to_be_bytes());
            assert_eq!(
                NgDigest::entry_hash(&handle, id),
                xxh3_64(&input),
                "len {len}"
            );
        }
    }

    #[test]
    fn ng_order_independent_and_remove() {
        let entries: [(&[u8], u64); 4] = [
            (b"EchoPool", 1),
            (b"DiscardPool", u64::MAX),
            (b"X", 0x8000_0000_0000_0000),
            (&[0xab; 300], 42),
        ];
        let mut fwd = NgDigest::new();
        for (h, id) in entries {
            fwd.add(h, id);
        }
        let mut rev = NgDigest::new();
        for (h, id) in entries.iter().rev() {
            rev.add(h, *id);
        }
        assert_eq!(fwd, rev);
        assert_ne!(fwd.value(), 0);
        fwd.remove(entries[1].0, entries[1].1);
        fwd.remove(entries[3].0, entries[3].1);
        fwd.remove(entries[0].0, entries[0].1);
        fwd.remove(entries[2].0, entries[2].1);
        assert_eq!(fwd, NgDigest::new());
        assert_eq!(fwd.value(), 0);
    }
}
