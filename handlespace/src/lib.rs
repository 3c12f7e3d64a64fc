//! `rserpool-handlespace` owns the RSerPool handlespace: pools keyed by pool handle, their pool
//! elements (PEs) keyed by PE ID, the member-selection policies of RFC 5356 and RSPLIB, registration
//! lifetimes, ownership by home PR with takeover, and the per-owner audit checksums (Internet-16
//! and the NG digest). No I/O and no clock: time comes in as an argument.
//!
//! The handlespace is split into shards by a hash of the pool handle ([`Handlespace::shard_of`]);
//! each shard has one writer. Handle resolutions read a pool's published [`PoolSnapshot`]; the
//! selection state a resolution advances is atomic.

pub mod entry;
pub mod error;
pub mod idmap;
pub mod mailbox;
pub mod policy;
mod pool;
pub mod rng;
pub mod shard;
pub mod timer;
pub mod token_bucket;
mod tree;

use std::sync::Arc;

pub use entry::{
    Addresses, AssociationId, Millis, OwnedTransport, OwnedUserTransport, PeRegistration,
    PoolElementEntry, TransportShape,
};
pub use error::RegistrationError;
pub use pool::PoolSnapshot;
pub use rng::Rng;
pub use rserpool_protocol::{Generation, PeId, PrId};
pub use shard::{
    Limits, OwnerChecksums, PinnedShard, Registered, Removed, Shard, ShardView, TableCursor,
    TablePage,
};
pub use token_bucket::TokenBucket;

/// A `HashMap` with foldhash's fast hasher, randomly seeded per map: the map of the handlespace's
/// and the registrar's hot paths, whose keys (pool handles, PE, PR and association IDs) are short.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with the hasher of [`FastMap`].
pub type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// The shard that owns a pool handle among `shards`: XXH3-64 of the handle modulo the shard
/// count, so every thread routes a handle the same way.
pub fn shard_index(pool_handle: &[u8], shards: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(pool_handle) % shards.max(1) as u64) as usize
}

/// How many PEs a handle resolution returns (procedures.md §7): the request's handle-resolution
/// option (RSPLIB's 0x803f) if present, else a configured default; never more than a configured
/// maximum (at most [`policy::MAX_SELECTION`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemCount {
    /// Items returned when the request carries no option (RSPLIB: 3).
    pub default: usize,
    /// Most items returned (RSPLIB: 128).
    pub max: usize,
}

impl Default for ItemCount {
    fn default() -> Self {
        Self {
            default: 3,
            max: policy::MAX_SELECTION,
        }
    }
}

impl ItemCount {
    /// The number of PEs to select for a request asking for `requested` items. `0xffffffff`
    /// means "as many as possible"; 0 is read as 1, since a resolution answers with at least one
    /// PE (RFC 5352 §2.2.6).
    pub fn for_request(&self, requested: Option<u32>) -> usize {
        let max = self.max.clamp(1, policy::MAX_SELECTION);
        match requested {
            None => self.default.clamp(1, max),
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX).clamp(1, max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_count_follows_the_option_the_default_and_the_cap() {
        let c = ItemCount::default();
        assert_eq!(c.for_request(None), 3);
        assert_eq!(c.for_request(Some(5)), 5);
        assert_eq!(c.for_request(Some(0)), 1);
        assert_eq!(c.for_request(Some(500)), 128);
        assert_eq!(c.for_request(Some(u32::MAX)), 128);
        let tight = ItemCount {
            default: 10,
            max: 4,
        };
        assert_eq!(tight.for_request(None), 4);
        assert_eq!(tight.for_request(Some(2)), 2);
    }
}

/// The read side of a whole handlespace: cheap to clone, `Send + Sync`, for handle resolution on
/// any thread without locks.
#[derive(Clone, Debug)]
pub struct HandlespaceReader {
    views: Arc<[Arc<ShardView>]>,
}

impl HandlespaceReader {
    fn view(&self, pool_handle: &[u8]) -> &ShardView {
        &self.views[shard_index(pool_handle, self.views.len())]
    }

    /// The current snapshot of a pool (a counted reference; see [`ShardView::snapshot`]).
    pub fn snapshot(&self, pool_handle: &[u8]) -> Option<Arc<PoolSnapshot>> {
        self.view(pool_handle).snapshot(pool_handle)
    }

    /// Calls `f` with the current snapshot of a pool, read in place (see [`ShardView::read`]);
    /// `None` for an unknown pool.
    pub fn read<R>(&self, pool_handle: &[u8], f: impl FnOnce(&PoolSnapshot) -> R) -> Option<R> {
        self.view(pool_handle)
            .read(pool_handle, |snapshot| f(snapshot))
    }

    /// Handle resolution (RFC 5352 §3.3): selects up to `selection.len()` PEs of the pool by its
    /// policy and calls `f` with the snapshot and the indices of the selected PEs into its
    /// entries, while the snapshot is read in place (see [`ShardView::read`]); `None` for an
    /// unknown pool.
    pub fn resolve<R>(
        &self,
        pool_handle: &[u8],
        rng: &mut Rng,
        selection: &mut [u32],
        f: impl FnOnce(&PoolSnapshot, &[u32]) -> R,
    ) -> Option<R> {
        self.read(pool_handle, |snapshot| select(snapshot, rng, selection, f))
    }

    /// Handle resolution of a batch of requests with every shard pinned meanwhile (see
    /// [`PinnedReader::resolve_batch`]).
    pub fn resolve_batch(
        &self,
        requests: &[ResolveRequest<'_>],
        rng: &mut Rng,
        f: impl FnMut(usize, Option<&PoolSnapshot>, &[u32]),
    ) {
        self.pin().resolve_batch(requests, rng, f);
    }

    /// This read side with every shard's epoch held on the calling thread until dropped
    /// ([`ShardView::pin`]), for a batch of reads (one loop turn).
    pub fn pin(&self) -> PinnedReader<'_> {
        PinnedReader {
            shards: self.views.iter().map(|v| v.pin()).collect(),
        }
    }

    /// The shards' read sides.
    pub fn shards(&self) -> &[Arc<ShardView>] {
        &self.views
    }
}

/// A [`HandlespaceReader`] holding every shard's epoch on this thread
/// ([`HandlespaceReader::pin`]): its reads enter and leave no epoch of their own, which saves
/// the fences of one per read. Snapshots replaced meanwhile are freed only after it is dropped:
/// hold it for a short batch of work, never while blocking.
#[derive(Debug)]
pub struct PinnedReader<'r> {
    shards: Box<[PinnedShard<'r>]>,
}

impl PinnedReader<'_> {
    /// Calls `f` with the current snapshot of a pool, read in place (see [`ShardView::read`]);
    /// `None` for an unknown pool.
    pub fn read<R>(&self, pool_handle: &[u8], f: impl FnOnce(&PoolSnapshot) -> R) -> Option<R> {
        self.shards[shard_index(pool_handle, self.shards.len())].read(pool_handle, |s| f(s))
    }

    /// Handle resolution (see [`HandlespaceReader::resolve`]).
    pub fn resolve<R>(
        &self,
        pool_handle: &[u8],
        rng: &mut Rng,
        selection: &mut [u32],
        f: impl FnOnce(&PoolSnapshot, &[u32]) -> R,
    ) -> Option<R> {
        self.read(pool_handle, |snapshot| select(snapshot, rng, selection, f))
    }
}

/// One request of a batch of handle resolutions ([`PinnedReader::resolve_batch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolveRequest<'h> {
    /// The pool to resolve.
    pub pool_handle: &'h [u8],
    /// How many PEs to select ([`ItemCount::for_request`]; at most [`policy::MAX_SELECTION`]).
    pub items: usize,
}

/// Requests of a batch whose cache misses overlap: each stage runs over a whole group before the
/// next stage starts.
const GROUP: usize = 16;

impl PinnedReader<'_> {
    /// Handle resolution of a batch of requests (one loop turn's): calls `f` once per request,
    /// in order, with its index in `requests`, the pool's snapshot (`None` for an unknown pool)
    /// and the indices of the selected PEs into its entries. The same as calling
    /// [`Self::resolve`] for each request in order (same random draws, same cursor advances).
    ///
    /// Faster on pools not in the cache (docs/performance.md: about 0.8× the time of resolving
    /// one by one through the same pinned reader at 100 000 pools): a cold resolution is a chain
    /// of dependent cache misses (the map's bucket, its entry, the snapshot, the members), so
    /// one at a time it costs about the sum of their latencies. Here the requests go in groups
    /// of 16, and each step of the chain is taken for the whole group before the next: (1) the
    /// map lookups, back to back (they depend on nothing in each other, so the core overlaps
    /// their misses as far as its out-of-order window reaches); (2) the snapshots' heads (size,
    /// policy, cursor, tree root); (3) the members the selection and the encoder will read;
    /// (4) the selections, on data now in the cache, and `f`. Steps 2 and 3 are real loads
    /// whose results nothing waits for (stable Rust has no prefetch instruction without
    /// `unsafe`), short enough that a whole group's misses are in flight at once.
    pub fn resolve_batch(
        &self,
        requests: &[ResolveRequest<'_>],
        rng: &mut Rng,
        mut f: impl FnMut(usize, Option<&PoolSnapshot>, &[u32]),
    ) {
        let mut selection = [0u32; policy::MAX_SELECTION];
        let shards = self.shards.len();
        for (g, group) in requests.chunks(GROUP).enumerate() {
            // 1: the pools' snapshots (references only: nothing of a snapshot is read yet).
            let mut found: [Option<&PoolSnapshot>; GROUP] = [None; GROUP];
            for (slot, r) in found.iter_mut().zip(group) {
                *slot = self.shards[shard_index(r.pool_handle, shards)].get(r.pool_handle);
            }
            // 2, 3: read ahead; `black_box` keeps the loads, whose values nothing else uses.
            let mut ahead = 0u64;
            for s in found.iter().flatten() {
                ahead = ahead.wrapping_add(s.read_ahead_head());
            }
            for (s, r) in found.iter().zip(group) {
                if let Some(s) = s {
                    ahead = ahead.wrapping_add(s.read_ahead(r.items));
                }
            }
            std::hint::black_box(ahead);
            // 4: select, in request order (the random draws and cursor advances of `resolve`).
            for (j, (s, r)) in found.iter().zip(group).enumerate() {
                let index = g * GROUP + j;
                match s {
                    Some(s) => {
                        let out = &mut selection[..r.items.min(policy::MAX_SELECTION)];
                        let n = s.select(rng, out);
                        f(index, Some(s), &out[..n]);
                    }
                    None => f(index, None, &[]),
                }
            }
        }
    }
}

/// Selects up to `selection.len()` PEs of `snapshot` by its policy and calls `f` with the indices
/// of the selected ones.
fn select<R>(
    snapshot: &PoolSnapshot,
    rng: &mut Rng,
    selection: &mut [u32],
    f: impl FnOnce(&PoolSnapshot, &[u32]) -> R,
) -> R {
    let n = snapshot.select(rng, selection);
    f(snapshot, &selection[..n])
}

/// The whole handlespace of one PR: `N` shards by hash of the pool handle. This type drives all
/// shards from one thread (tests, simulation); a multi-threaded registrar splits it with
/// [`Handlespace::into_shards`] so that each worker owns one shard.
#[derive(Debug)]
pub struct Handlespace {
    shards: Vec<Shard>,
    reader: HandlespaceReader,
}

impl Handlespace {
    /// A handlespace of `shards` shards (at least 1) with the given limits per shard.
    pub fn new(shards: usize, limits: Limits) -> Self {
        let shards: Vec<Shard> = (0..shards.max(1)).map(|_| Shard::new(limits)).collect();
        let reader = HandlespaceReader {
            views: shards.iter().map(|s| Arc::clone(s.view())).collect(),
        };
        Self { shards, reader }
    }

    /// Splits into the shards, one per writer thread (route with [`shard_index`]), and the read
    /// side.
    pub fn into_shards(self) -> (Vec<Shard>, HandlespaceReader) {
        (self.shards, self.reader)
    }

    /// The read side.
    pub fn reader(&self) -> &HandlespaceReader {
        &self.reader
    }

    /// The shard that owns a pool handle ([`shard_index`]).
    pub fn shard_of(&self, pool_handle: &[u8]) -> usize {
        shard_index(pool_handle, self.shards.len())
    }
    /// The shards.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The shard owning `pool_handle`, for its writer.
    pub fn shard_mut(&mut self, pool_handle: &[u8]) -> &mut Shard {
        let i = self.shard_of(pool_handle);
        &mut self.shards[i]
    }

    /// The shard owning `pool_handle`, for readers.
    pub fn shard(&self, pool_handle: &[u8]) -> &Shard {
        &self.shards[self.shard_of(pool_handle)]
    }

    /// See [`Shard::register`].
    pub fn register(
        &mut self,
        pool_handle: &[u8],
        registration: PeRegistration,
        home_pr: PrId,
        association: Option<AssociationId>,
        now: Millis,
    ) -> Result<Registered, RegistrationError> {
        self.shard_mut(pool_handle)
            .register(pool_handle, registration, home_pr, association, now)
    }

    /// See [`Shard::deregister`].
    pub fn deregister(
        &mut self,
        pool_handle: &[u8],
        id: PeId,
        association: Option<AssociationId>,
    ) -> Result<Option<Removed>, RegistrationError> {
        self.shard_mut(pool_handle)
            .deregister(pool_handle, id, association)
    }

    /// Runs `f` as one batch on every shard (see [`Shard::batch`]): each pool it changes is
    /// republished once, at the end.
    pub fn batch<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        for shard in &mut self.shards {
            shard.begin_batch();
        }
        let result = f(self);
        for shard in &mut self.shards {
            shard.end_batch();
        }
        result
    }

    /// Handle resolution through the read side (see [`HandlespaceReader::resolve`]).
    pub fn resolve<R>(
        &self,
        pool_handle: &[u8],
        rng: &mut Rng,
        selection: &mut [u32],
        f: impl FnOnce(&PoolSnapshot, &[u32]) -> R,
    ) -> Option<R> {
        self.reader.resolve(pool_handle, rng, selection, f)
    }

    /// Removes every PE whose registration life ran out, in every shard.
    pub fn expire(&mut self, now: Millis) -> Vec<Removed> {
        self.shards.iter_mut().flat_map(|s| s.expire(now)).collect()
    }

    /// Moves every PE of `dead` to `new_home` in every shard (RFC 5353 §3.5).
    pub fn take_over(&mut self, dead: PrId, new_home: PrId) -> Vec<(Arc<[u8]>, PoolElementEntry)> {
        self.shards
            .iter_mut()
            .flat_map(|s| s.take_over(dead, new_home))
            .collect()
    }

    /// The audit checksums of everything `owner` owns (RFC 5353 §3.6).
    pub fn checksums(&self, owner: PrId) -> OwnerChecksums {
        let mut c = OwnerChecksums::default();
        for s in &self.shards {
            c.merge(&s.checksums(owner));
        }
        c
    }

    /// Number of pools.
    pub fn pool_count(&self) -> usize {
        self.shards.iter().map(Shard::pool_count).sum()
    }

    /// Number of PEs.
    pub fn pe_count(&self) -> usize {
        self.shards.iter().map(Shard::pe_count).sum()
    }
}
