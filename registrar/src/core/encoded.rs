//! The worker's cache of encoded Pool Element parameters: a handle resolution response of a
//! pool this worker resolved before is assembled by copying the selected PEs' parameters
//! (RFC 5354 §3.10) instead of encoding them again.
//!
//! Entries are keyed by the snapshot they were encoded from ([`PoolSnapshot::serial`], never
//! reused), so a pool that changes simply stops matching: nothing is invalidated. Each PE is
//! encoded on its first selection. The cache is bounded: [`SLOTS`] pools of at most
//! [`MAX_CACHED_PES`] PEs and at most [`SLOT_BYTES`] of encoded parameters each, and
//! [`LARGE_SLOTS`] larger pools of at most [`MAX_LARGE_PES`] PEs and [`LARGE_SLOT_BYTES`] each
//! (two ways per set, the least recently used of a set makes room; about 10 MiB and 2.5 MiB per
//! worker at most, whatever PEs register; a PE with one address takes about 40 bytes); what
//! does not fit is encoded per response. The memory lives beside the handlespace, not in it,
//! so the handlespace's bytes per PE do not grow.
//!
//! A slot taken over by another snapshot costs O(1), whatever the pool's size: its PEs are
//! marked stale by the slot's epoch, not cleared, so that a large pool that changes every loop
//! turn does not clear its slot's thousands of entries each time.

use std::ops::Range;

use rserpool_handlespace::PoolSnapshot;
use rserpool_protocol::{EncodeError, Generation, PoolHandle, asap, encode_pool_handle_parameter};

/// Pools held at once.
pub(crate) const SLOTS: usize = 1024;
/// Larger pools go to the large slots.
pub(crate) const MAX_CACHED_PES: usize = 128;
/// Encoded bytes kept per pool (its handle and its PEs); PEs beyond are encoded per response.
const SLOT_BYTES: usize = 8 * 1024;
/// Large pools held at once (one set of two ways): resolutions from a pool of thousands of PEs
/// return each of its PEs many times within a snapshot's life too (a round robin over 10 000
/// PEs, 3 a resolution, comes round in 3 334 resolutions, about a millisecond), and encoding
/// the PEs per response took a third of such a resolution's time in user space.
pub(crate) const LARGE_SLOTS: usize = 2;
/// Larger pools are encoded per response.
pub(crate) const MAX_LARGE_PES: usize = 16 * 1024;
/// Encoded bytes kept per large pool: 16 384 PEs of 64 bytes.
const LARGE_SLOT_BYTES: usize = 1024 * 1024;
/// The longest PE parameter kept: longer ones (PEs with many addresses) are encoded per response.
const MAX_PE_BYTES: usize = 1024;

/// Where one PE's parameter lies in its slot's bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    /// The slot's epoch it was encoded in ([`Slot::epoch`]); another: not encoded yet.
    epoch: u32,
    start: u32,
    len: u16,
    /// The PE's Member Selection Policy parameter, relative to `start`.
    policy_start: u16,
    policy_len: u16,
    /// The PE cannot be cached (too long) or cannot be sent in this generation (a 64-bit
    /// identifier to an RFC peer).
    unusable: bool,
}

/// One pool's encoded PEs, for one generation.
#[derive(Debug, Default)]
struct Slot {
    /// The snapshot the PEs were encoded from; 0: empty.
    serial: u64,
    generation: Option<Generation>,
    /// The turn of the last use, for replacement.
    used: u64,
    /// Counts the snapshots the slot held; the spans of earlier ones are stale (0: none yet).
    epoch: u32,
    /// Per PE of the snapshot (at least as many as it has; those of an earlier epoch are stale).
    spans: Vec<Span>,
    /// The pool's Pool Handle parameter (`bytes[..handle_len]`), then the PEs' parameters.
    bytes: Vec<u8>,
    handle_len: usize,
    /// The most bytes kept.
    budget: usize,
}

impl Slot {
    /// Takes the slot over for `snapshot` of `pool_handle` in `generation`: O(1) but for the
    /// handle's encoding (and, the first time, growing the spans to the pool's size).
    fn take_over(
        &mut self,
        snapshot: &PoolSnapshot,
        generation: Generation,
        pool_handle: PoolHandle<'_>,
    ) -> Option<()> {
        self.serial = 0;
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // Once in 2^32 take-overs: no span may be taken for one of this epoch.
            self.spans.clear();
            self.epoch = 1;
        }
        if self.spans.len() < snapshot.len() {
            self.spans.resize(snapshot.len(), Span::default());
        }
        self.bytes.clear();
        self.bytes.resize(pool_handle.0.len() + 8, 0);
        let n = encode_pool_handle_parameter(pool_handle, &mut self.bytes).ok()?;
        self.bytes.truncate(n);
        self.handle_len = n;
        self.serial = snapshot.serial();
        self.generation = Some(generation);
        Some(())
    }
}

/// What a selected PE contributes to a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Its encoded parameter, and its policy parameter, as ranges of [`EncodedPools::bytes`].
    Encoded { pe: (u32, u32), policy: (u32, u32) },
    /// It cannot go into this generation's messages (a 64-bit identifier to an RFC peer).
    Unfit,
    /// It is not cached: the caller encodes it.
    Uncached,
}

/// The cache: see the module documentation.
#[derive(Debug)]
pub(crate) struct EncodedPools {
    slots: Box<[Slot]>,
    large: Box<[Slot]>,
    clock: u64,
}

impl Default for EncodedPools {
    fn default() -> Self {
        let slots = |n: usize, budget: usize| {
            (0..n)
                .map(|_| Slot {
                    budget,
                    ..Slot::default()
                })
                .collect()
        };
        Self {
            slots: slots(SLOTS, SLOT_BYTES),
            large: slots(LARGE_SLOTS, LARGE_SLOT_BYTES),
            clock: 0,
        }
    }
}

/// A snapshot's slot in the cache, for the PEs of one response.
pub(crate) struct PoolParts<'c> {
    slot: &'c mut Slot,
}

impl EncodedPools {
    /// The slot of `snapshot`'s PEs in `generation`, taken over from the least recently used
    /// pool of its set on a miss; `None` for pools too large to cache. `pool_handle` is the
    /// snapshot's pool's handle.
    pub(crate) fn pool(
        &mut self,
        snapshot: &PoolSnapshot,
        generation: Generation,
        pool_handle: PoolHandle<'_>,
    ) -> Option<PoolParts<'_>> {
        let len = snapshot.len();
        let slots = if len <= MAX_CACHED_PES {
            &mut self.slots
        } else if len <= MAX_LARGE_PES {
            &mut self.large
        } else {
            return None;
        };
        self.clock += 1;
        let serial = snapshot.serial();
        // Sets are a power of two of each kind: a mask, not a division by a length known only
        // at run time.
        const { assert!(SLOTS.is_power_of_two() && LARGE_SLOTS.is_power_of_two()) };
        let set = (mix(serial, generation) as usize & (slots.len() / 2 - 1)) * 2;
        let hit = (set..set + 2)
            .find(|&i| slots[i].serial == serial && slots[i].generation == Some(generation));
        let i = hit.unwrap_or_else(|| {
            if slots[set].used <= slots[set + 1].used {
                set
            } else {
                set + 1
            }
        });
        let slot = &mut slots[i];
        if hit.is_none() {
            slot.take_over(snapshot, generation, pool_handle)?;
        }
        slot.used = self.clock;
        Some(PoolParts { slot })
    }
}

impl PoolParts<'_> {
    /// PE `i` of the snapshot this slot caches, encoded from `snapshot` on its first use.
    pub(crate) fn part(
        &mut self,
        snapshot: &PoolSnapshot,
        i: usize,
        generation: Generation,
    ) -> Part {
        let slot = &mut *self.slot;
        let Some(span) = slot.spans.get(i).copied() else {
            return Part::Uncached;
        };
        let span = if span.epoch == slot.epoch {
            span
        } else {
            let span = Span {
                epoch: slot.epoch,
                ..encode_pe(&mut slot.bytes, slot.budget, snapshot, i, generation)
            };
            slot.spans[i] = span;
            span
        };
        if span.unusable {
            return if snapshot.entry(i).fits(generation) {
                Part::Uncached
            } else {
                Part::Unfit
            };
        }
        let pe_start = span.start;
        let policy_start = pe_start + u32::from(span.policy_start);
        Part::Encoded {
            pe: (pe_start, pe_start + u32::from(span.len)),
            policy: (policy_start, policy_start + u32::from(span.policy_len)),
        }
    }

    /// The encoded bytes that [`Part::Encoded`] ranges index.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.slot.bytes
    }

    /// The pool's Pool Handle parameter.
    pub(crate) fn pool_handle(&self) -> &[u8] {
        &self.slot.bytes[..self.slot.handle_len]
    }
}

/// Appends PE `i`'s parameter to `bytes` (which keep at most `budget` bytes); its span
/// (unusable when it does not fit), of no epoch yet.
fn encode_pe(
    bytes: &mut Vec<u8>,
    budget: usize,
    snapshot: &PoolSnapshot,
    i: usize,
    generation: Generation,
) -> Span {
    /// Room offered first: nearly every PE fits (one with one address takes about 40 bytes),
    /// and room is zeroed before the encoder writes to it.
    const FIRST_TRY: usize = 256;
    let unusable = Span {
        unusable: true,
        ..Span::default()
    };
    let entry = snapshot.entry(i);
    if !entry.fits(generation) {
        return unusable;
    }
    let start = bytes.len();
    let Ok(start32) = u32::try_from(start) else {
        return unusable;
    };
    let most = budget.saturating_sub(start).min(MAX_PE_BYTES);
    let mut room = most.min(FIRST_TRY);
    while room > 0 {
        bytes.resize(start + room, 0);
        let view = entry.view(false);
        match asap::encode_pool_element_parameter(&view, generation, &mut bytes[start..]) {
            Ok((len, policy)) => {
                if let Some(span) = span(start32, len, policy) {
                    bytes.truncate(start + len);
                    return span;
                }
                break;
            }
            Err(EncodeError::BufferTooSmall { .. }) if room < most => room = most,
            Err(EncodeError::BufferTooSmall { .. }) => break,
            Err(e) => {
                tracing::warn!(%e, "cannot encode a PE for a handle resolution response; left out");
                break;
            }
        }
    }
    bytes.truncate(start);
    unusable
}

fn span(start: u32, len: usize, policy: Range<usize>) -> Option<Span> {
    Some(Span {
        epoch: 0,
        start,
        len: u16::try_from(len).ok()?,
        policy_start: u16::try_from(policy.start).ok()?,
        policy_len: u16::try_from(policy.len()).ok()?,
        unusable: false,
    })
}

/// Spreads serials (consecutive for consecutive snapshots) over the sets.
fn mix(serial: u64, generation: Generation) -> u64 {
    let g = match generation {
        Generation::Rfc => 0,
        Generation::Ng => 1,
    };
    ((serial << 1) | g).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use rserpool_handlespace::{
        Limits, OwnedTransport, OwnedUserTransport, PeId, PeRegistration, PrId, Shard,
    };
    use rserpool_protocol::{Policy, TransportKind};

    use super::*;

    fn registration(id: u64, weight: u32, addresses: Vec<IpAddr>) -> PeRegistration {
        PeRegistration {
            id: PeId(id),
            registration_life: 30_000,
            user_transport: OwnedUserTransport::Transport(OwnedTransport {
                kind: TransportKind::Sctp,
                port: 7,
                transport_use: 0,
                service_code: 0,
                addresses: addresses.into(),
            }),
            policy: Policy::WeightedRoundRobin { weight },
            asap_transport: None,
        }
    }

    /// Every PE of `snapshot` (of the pool `handle`) through the cache: its part is its encoding
    /// now, or `Unfit`; the pool handle parameter is the handle's.
    fn check_pool(
        cache: &mut EncodedPools,
        snapshot: &PoolSnapshot,
        generation: Generation,
        handle: &[u8],
    ) {
        let mut pool = cache
            .pool(snapshot, generation, PoolHandle(handle))
            .expect("a cached pool");
        let mut want = vec![0; handle.len() + 8];
        let n = encode_pool_handle_parameter(PoolHandle(handle), &mut want).expect("encodable");
        assert_eq!(pool.pool_handle(), &want[..n]);
        for (i, entry) in snapshot.entries().enumerate() {
            let mut want = vec![0; MAX_PE_BYTES];
            let direct =
                asap::encode_pool_element_parameter(&entry.view(false), generation, &mut want);
            match (pool.part(snapshot, i, generation), direct) {
                (Part::Encoded { pe, policy }, Ok((n, p))) => {
                    let bytes = pool.bytes();
                    assert_eq!(&bytes[pe.0 as usize..pe.1 as usize], &want[..n]);
                    assert_eq!(&bytes[policy.0 as usize..policy.1 as usize], &want[p]);
                }
                (Part::Unfit, Err(EncodeError::IdTooWide { .. })) => {
                    assert_eq!(generation, Generation::Rfc);
                }
                (part, direct) => panic!("PE {i}: cached {part:?}, encoded {direct:?}"),
            }
        }
    }

    #[test]
    fn cached_pes_are_their_current_encoding_through_changes_and_evictions() {
        let mut shard = Shard::new(Limits::default());
        let pools = SLOTS * 2;
        let handle = |p: usize| format!("pool-{p}").into_bytes();
        for p in 0..pools {
            for id in 1..=3u64 {
                // Every other pool holds a PE with a 64-bit identifier and one with IPv6.
                let id = if p % 2 == 1 && id == 3 {
                    u64::MAX - 1
                } else {
                    id
                };
                let ip = if p % 2 == 1 && id == 2 {
                    IpAddr::V6(Ipv6Addr::LOCALHOST)
                } else {
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, p as u8))
                };
                let r = registration(id, id as u32, vec![ip]);
                shard
                    .register(&handle(p), r, PrId(1), None, 0)
                    .expect("registered");
            }
        }
        let mut cache = EncodedPools::default();
        // Twice the slots, both generations, twice over: every slot is taken over repeatedly.
        for _ in 0..2 {
            for p in 0..pools {
                let snapshot = shard.snapshot(&handle(p)).expect("pool");
                check_pool(&mut cache, &snapshot, Generation::Rfc, &handle(p));
                check_pool(&mut cache, &snapshot, Generation::Ng, &handle(p));
            }
        }
        // A PE re-registering with another address and weight: the next snapshot's PEs are
        // encoded again, never served from the old one's.
        let snapshot = shard.snapshot(&handle(0)).expect("pool");
        check_pool(&mut cache, &snapshot, Generation::Rfc, &handle(0));
        let moved = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
        shard
            .register(
                &handle(0),
                registration(2, 77, vec![moved]),
                PrId(1),
                None,
                1,
            )
            .expect("re-registered");
        let changed = shard.snapshot(&handle(0)).expect("pool");
        assert_ne!(changed.serial(), snapshot.serial());
        check_pool(&mut cache, &changed, Generation::Rfc, &handle(0));
    }

    #[test]
    fn a_pool_keeps_at_most_its_byte_budget_and_leaves_the_rest_uncached() {
        let mut shard = Shard::new(Limits::default());
        // PEs with eight IPv6 addresses each: about 200 bytes encoded, so the budget holds some.
        let addresses: Vec<IpAddr> = (1..=8)
            .map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)))
            .collect();
        for id in 1..=MAX_CACHED_PES as u64 {
            let r = registration(id, 1, addresses.clone());
            shard
                .register(b"wide", r, PrId(1), None, 0)
                .expect("registered");
        }
        let snapshot = shard.snapshot(b"wide").expect("pool");
        let mut cache = EncodedPools::default();
        let mut pool = cache
            .pool(&snapshot, Generation::Rfc, PoolHandle(b"wide"))
            .expect("cached");
        let (mut encoded, mut uncached) = (0, 0);
        for (i, entry) in snapshot.entries().enumerate() {
            match pool.part(&snapshot, i, Generation::Rfc) {
                Part::Encoded { pe, .. } => {
                    let mut want = vec![0; MAX_PE_BYTES];
                    let (n, _) = asap::encode_pool_element_parameter(
                        &entry.view(false),
                        Generation::Rfc,
                        &mut want,
                    )
                    .expect("encodable");
                    assert_eq!(&pool.bytes()[pe.0 as usize..pe.1 as usize], &want[..n]);
                    encoded += 1;
                }
                Part::Uncached => uncached += 1,
                Part::Unfit => panic!("every PE fits"),
            }
        }
        assert!(
            pool.bytes().len() <= SLOT_BYTES,
            "{} bytes",
            pool.bytes().len()
        );
        assert!(
            encoded > 10 && uncached > 10,
            "{encoded} encoded, {uncached} left out"
        );
    }

    /// Pools beyond [`MAX_CACHED_PES`] take the large slots: three of them in turn, changing,
    /// take the two slots over from each other, and every PE served is its current encoding.
    #[test]
    fn large_pools_are_cached_in_their_own_slots_through_changes_and_take_overs() {
        let mut shard = Shard::new(Limits::default());
        let handle = |p: usize| format!("large-{p}").into_bytes();
        let ip = |p: usize| IpAddr::V4(Ipv4Addr::new(192, 0, 2, p as u8));
        for p in 0..3 {
            for id in 1..=(MAX_CACHED_PES + 40) as u64 {
                let r = registration(id, 1 + id as u32 % 7, vec![ip(p)]);
                shard
                    .register(&handle(p), r, PrId(1), None, 0)
                    .expect("registered");
            }
        }
        let mut cache = EncodedPools::default();
        for round in 0..4u64 {
            for p in 0..3 {
                let snapshot = shard.snapshot(&handle(p)).expect("pool");
                check_pool(&mut cache, &snapshot, Generation::Rfc, &handle(p));
                check_pool(&mut cache, &snapshot, Generation::Ng, &handle(p));
                // A PE moves: the next snapshot's PEs are encoded again.
                let moved = IpAddr::V4(Ipv4Addr::new(198, 51, 100, round as u8));
                let r = registration(round + 1, 3, vec![moved]);
                shard
                    .register(&handle(p), r, PrId(1), None, 1)
                    .expect("re-registered");
            }
        }
        assert!(cache.large.iter().all(|slot| slot.epoch > 1), "taken over");
    }

    #[test]
    fn a_hot_set_stays_cached_and_large_pools_are_not_cached() {
        let mut shard = Shard::new(Limits::default());
        for id in 1..=3 {
            let r = registration(id, 1, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
            shard
                .register(b"hot", r, PrId(1), None, 0)
                .expect("registered");
        }
        for id in 1..=MAX_LARGE_PES as u64 + 1 {
            let r = registration(id, 1, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
            shard
                .register(b"large", r, PrId(1), None, 0)
                .expect("registered");
        }
        let mut cache = EncodedPools::default();
        let hot = shard.snapshot(b"hot").expect("pool");
        let first = cache
            .pool(&hot, Generation::Rfc, PoolHandle(b"hot"))
            .expect("cached")
            .part(&hot, 0, Generation::Rfc);
        let Part::Encoded { pe: (_, end), .. } = first else {
            panic!("encodable: {first:?}");
        };
        // Other pools come and go; the hot pool keeps its slot (least recently used goes).
        for p in 0..SLOTS {
            let handle = format!("cold-{p}").into_bytes();
            let r = registration(1, 1, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
            shard
                .register(&handle, r, PrId(1), None, 0)
                .expect("registered");
            let cold = shard.snapshot(&handle).expect("pool");
            cache
                .pool(&cold, Generation::Rfc, PoolHandle(&handle))
                .expect("cached")
                .part(&cold, 0, Generation::Rfc);
            let mut pool = cache
                .pool(&hot, Generation::Rfc, PoolHandle(b"hot"))
                .expect("cached");
            assert_eq!(
                pool.bytes().len(),
                end as usize,
                "still cached, not encoded again"
            );
            assert_eq!(pool.part(&hot, 0, Generation::Rfc), first);
        }
        let large = shard.snapshot(b"large").expect("pool");
        assert!(
            cache
                .pool(&large, Generation::Rfc, PoolHandle(b"large"))
                .is_none()
        );
    }
}
