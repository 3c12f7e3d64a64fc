//! One shard of the handlespace: the pools whose handles hash to it, the audit checksums of the
//! PEs each home PR owns in it, and its timer wheel. Exactly one writer (the owning worker) calls
//! the `&mut self` operations; handle resolutions read published pool snapshots through `&self`.

use std::sync::Arc;

use rserpool_protocol::checksum::{Internet16, NgDigest};
use rserpool_protocol::{PeId, PrId};

use crate::entry::{AssociationId, Millis, PeRegistration, PoolElementEntry};
use crate::error::RegistrationError;
use crate::pool::{Member, PeMeta, Pool, PoolSnapshot};
use crate::timer::{TimerId, TimerWheel};
use crate::{FastMap, FastSet};

/// The read side of a shard, shared with every thread: pool handle to the pool's published
/// snapshot, in a lock-free hash map (`papaya`); the writer replaces a pool's snapshot by
/// inserting the next one, and the map's epochs keep the old one alive for readers still holding
/// it (RCU). Readers never wait for the writer and the writer never waits for readers.
#[derive(Debug, Default)]
pub struct ShardView {
    pools: papaya::HashMap<PoolKey, Arc<PoolSnapshot>, foldhash::fast::RandomState>,
}

/// A shard's read side pinned on the calling thread ([`ShardView::pin`]).
pub struct PinnedShard<'v> {
    pools: papaya::HashMapRef<
        'v,
        PoolKey,
        Arc<PoolSnapshot>,
        foldhash::fast::RandomState,
        papaya::LocalGuard<'v>,
    >,
}

impl std::fmt::Debug for PinnedShard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedShard")
            .field("pools", &self.pools.len())
            .finish()
    }
}

impl PinnedShard<'_> {
    /// The current snapshot of a pool, borrowed from the pinned map (a batch of resolutions
    /// looks up a group of pools before it reads any of them).
    pub(crate) fn get(&self, pool_handle: &[u8]) -> Option<&PoolSnapshot> {
        self.pools.get(pool_handle).map(|s| &**s)
    }

    /// Calls `f` with the current snapshot of a pool, read in place; `None` for an unknown
    /// pool.
    pub fn read<R>(
        &self,
        pool_handle: &[u8],
        f: impl FnOnce(&Arc<PoolSnapshot>) -> R,
    ) -> Option<R> {
        self.pools.get(pool_handle).map(f)
    }
}

/// A pool handle as the read side's map key: up to [`PoolKey::INLINE`] bytes (nearly every
/// handle) stored in the map's entry itself, so that a lookup compares the handle without
/// following another pointer (a cache miss per resolution); longer handles share the pool's
/// allocation.
#[derive(Clone, Debug)]
enum PoolKey {
    Inline {
        len: u8,
        bytes: [u8; PoolKey::INLINE],
    },
    Shared(Arc<[u8]>),
}

impl PoolKey {
    /// The longest handle stored inline (the key is as large as a shared one with its tag).
    const INLINE: usize = 22;

    fn new(pool_handle: &Arc<[u8]>) -> Self {
        match u8::try_from(pool_handle.len()) {
            Ok(len) if pool_handle.len() <= Self::INLINE => {
                let mut bytes = [0; Self::INLINE];
                bytes[..pool_handle.len()].copy_from_slice(pool_handle);
                Self::Inline { len, bytes }
            }
            _ => Self::Shared(Arc::clone(pool_handle)),
        }
    }

    fn handle(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Shared(h) => h,
        }
    }
}

// Hashing and equality are the handle's, as `Borrow<[u8]>` requires: lookups take `&[u8]`.
impl std::borrow::Borrow<[u8]> for PoolKey {
    fn borrow(&self) -> &[u8] {
        self.handle()
    }
}

impl std::hash::Hash for PoolKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.handle().hash(state);
    }
}

impl PartialEq for PoolKey {
    fn eq(&self, other: &Self) -> bool {
        self.handle() == other.handle()
    }
}

impl Eq for PoolKey {}

impl ShardView {
    /// The current snapshot of a pool, as a counted reference for callers that keep it (a
    /// handle resolution reads it in place with [`Self::read`]).
    pub fn snapshot(&self, pool_handle: &[u8]) -> Option<Arc<PoolSnapshot>> {
        self.read(pool_handle, Arc::clone)
    }

    /// Calls `f` with the current snapshot of a pool, read under the map's epoch guard without
    /// touching the snapshot's reference count (readers on many cores do not contend on one
    /// counter); `None` for an unknown pool.
    pub fn read<R>(
        &self,
        pool_handle: &[u8],
        f: impl FnOnce(&Arc<PoolSnapshot>) -> R,
    ) -> Option<R> {
        self.pools.pin().get(pool_handle).map(f)
    }

    /// This shard's read side with its epoch held on the calling thread until dropped: reads
    /// through it enter no epoch of their own. Snapshots replaced meanwhile are freed only after
    /// it is dropped: hold it for a short batch of work (one loop turn), never while blocking.
    pub fn pin(&self) -> PinnedShard<'_> {
        PinnedShard {
            pools: self.pools.pin(),
        }
    }

    /// Publishes `snapshot` as the pool's current one (the pool's writer only).
    pub(crate) fn publish(&self, pool_handle: &Arc<[u8]>, snapshot: &Arc<PoolSnapshot>) {
        self.pools
            .pin()
            .insert(PoolKey::new(pool_handle), Arc::clone(snapshot));
    }

    /// Number of pools.
    pub fn len(&self) -> usize {
        self.pools.len()
    }

    /// Whether the shard has no pool.
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// Calls `f` once for every pool with its current snapshot (ENRP handle table transfer). Runs
    /// concurrently with the writer: each pool is seen once, in one consistent state; pools
    /// created or removed meanwhile may or may not be seen. (A pool removed and created again
    /// during the scan sits in a new slot of the lock-free map, where the iterator could meet it a
    /// second time; the scan skips handles it has already reported.)
    pub fn for_each_pool(&self, mut f: impl FnMut(&[u8], &PoolSnapshot)) {
        let mut seen: FastSet<PoolKey> = FastSet::default();
        for (key, snapshot) in self.pools.pin().iter() {
            if seen.insert(key.clone()) {
                f(key.handle(), snapshot);
            }
        }
    }
}

/// Limits the handlespace enforces (answered with "lack of resources", RFC 5354 §3.12.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest pool handle accepted, in bytes: the NG maximum. The RFC generation's 32 bytes
    /// (RSPLIB's `MAX_POOLHANDLESIZE`) are enforced by the registrar on RFC listeners.
    pub max_pool_handle_len: usize,
    /// Most pools per shard.
    pub max_pools: usize,
    /// Most PEs per pool.
    pub max_pes_per_pool: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pool_handle_len: 32,
            max_pools: 1 << 20,
            max_pes_per_pool: 1 << 16,
        }
    }
}

/// The audit checksums of the PEs one home PR owns (RFC 5353 §3.6; NG digest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnerChecksums {
    /// Internet-16 over the owned PEs whose identifiers fit the RFC generation.
    pub internet16: Internet16,
    /// NG digest over all owned PEs.
    pub ng: NgDigest,
    /// Number of owned PEs.
    pub pes: u64,
}

impl OwnerChecksums {
    fn add(&mut self, handle: &[u8], id: PeId) {
        if let Ok(narrow) = u32::try_from(id.0) {
            self.internet16.add(handle, narrow);
        }
        self.ng.add(handle, id.0);
        self.pes += 1;
    }

    fn remove(&mut self, handle: &[u8], id: PeId) {
        if let Ok(narrow) = u32::try_from(id.0) {
            self.internet16.remove(handle, narrow);
        }
        self.ng.remove(handle, id.0);
        self.pes -= 1;
    }

    /// Combines the checksums of two disjoint sets (used to sum shards).
    pub fn merge(&mut self, other: &Self) {
        self.internet16.merge(&other.internet16);
        self.ng.merge(&other.ng);
        self.pes += other.pes;
    }
}

/// What a granted registration did (RFC 5352 §3.1 rules 1-4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The stored entry (to announce with ENRP ADD_PE).
    pub entry: PoolElementEntry,
    /// `false` for a re-registration or update of a known PE.
    pub added: bool,
    /// The pool was created by this registration.
    pub pool_created: bool,
    /// The home PR before, when ownership moved.
    pub previous_home: Option<PrId>,
}

/// A PE removed from the handlespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The pool handle.
    pub pool_handle: Arc<[u8]>,
    /// The removed entry (to announce with ENRP DEL_PE).
    pub entry: PoolElementEntry,
    /// The pool became empty and was removed.
    pub pool_removed: bool,
}

/// Where a handle table transfer continues in a shard: a pool slot, and within that pool the
/// PEs after a PE ID (PEs go in ID order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCursor {
    /// The pool slot.
    pub slot: u32,
    /// The last PE ID sent of that pool, when the pool spans pages.
    pub after: Option<PeId>,
}

/// A page of a handle table transfer: pools and their PEs, borrowed from the shard.
pub type TablePage<'a> = Vec<(&'a Arc<[u8]>, Vec<&'a PoolElementEntry>)>;

/// What a registration of a known PE needs to know of it.
struct Existing {
    home_pr: PrId,
    meta: PeMeta,
    /// The digest of the TLS identity it is bound to (0: none).
    identity: u64,
    /// The registration repeats the stored entry exactly.
    unchanged: bool,
}

/// Timer payload: which PE's registration life runs out. The PE ID in two halves, so that the
/// payload (12 bytes) makes a timer entry of 36 bytes, not 40 (one per PE with a finite
/// registration life).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Expiry {
    pool: u32,
    pe: [u32; 2],
}

impl Expiry {
    fn new(pool: u32, pe: PeId) -> Self {
        Self {
            pool,
            pe: [pe.0 as u32, (pe.0 >> 32) as u32],
        }
    }

    fn pe(self) -> PeId {
        PeId(u64::from(self.pe[0]) | (u64::from(self.pe[1]) << 32))
    }
}

/// The expiry timer of PE `pe` of pool slot `pool`, whose member keeps the timer's slab index
/// (`index`): the timer armed there if its payload names this PE. (A member keeps only the
/// index, 4 bytes; the payload check stands in for the id's generation, so that a PE could
/// never cancel another PE's timer.)
fn expiry_timer(
    timers: &TimerWheel<Expiry>,
    index: Option<u32>,
    pool: u32,
    pe: PeId,
) -> Option<TimerId> {
    let (id, payload) = timers.at(index?)?;
    (*payload == Expiry::new(pool, pe)).then_some(id)
}

/// The TLS identity digests PEs are bound to (RFC 5355 §2.3), each stored once: a member keeps
/// its identity's index here (4 bytes instead of the 8-byte digest). Index 0 is no identity
/// (digest 0) and is not counted; the others count their members and are forgotten with the last.
#[derive(Debug, Default)]
struct Identities {
    /// Digest and members of index `i + 1`; a free slot has no members.
    slots: Vec<(u64, u32)>,
    by_digest: FastMap<u64, u32>,
    free: Vec<u32>,
}

impl Identities {
    /// The digest of index `index` (0 for 0).
    fn digest(&self, index: u32) -> u64 {
        match index {
            0 => 0,
            i => self.slots[i as usize - 1].0,
        }
    }

    /// The index of `digest`, with one more member.
    fn acquire(&mut self, digest: u64) -> u32 {
        if digest == 0 {
            return 0;
        }
        if let Some(&i) = self.by_digest.get(&digest) {
            self.slots[i as usize - 1].1 += 1;
            return i;
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize - 1] = (digest, 1);
                i
            }
            None => {
                self.slots.push((digest, 1));
                // Fewer identities than PEs, which a tree counts in a u32.
                self.slots.len() as u32
            }
        };
        self.by_digest.insert(digest, i);
        i
    }

    /// One member less of index `index`.
    fn release(&mut self, index: u32) {
        if index == 0 {
            return;
        }
        let slot = &mut self.slots[index as usize - 1];
        slot.1 -= 1;
        if slot.1 == 0 {
            self.by_digest.remove(&slot.0);
            *slot = (0, 0);
            self.free.push(index);
        }
    }

    /// Identities with members.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_digest.len()
    }
}

/// One shard of the handlespace.
#[derive(Debug)]
pub struct Shard {
    limits: Limits,
    index: FastMap<Arc<[u8]>, u32>,
    pools: Vec<Option<Pool>>,
    free: Vec<u32>,
    /// Number of PEs in all pools, kept up to date by every insert and removal.
    pes: usize,
    owners: FastMap<PrId, OwnerChecksums>,
    timers: TimerWheel<Expiry>,
    /// The TLS identities PEs are bound to.
    identities: Identities,
    /// Unreachable reports (RFC 5352 §3.5) per (pool slot, PE) counted since the PE's last
    /// sign of life or registration: only PEs with reports have an entry.
    reports: FastMap<(u32, PeId), u32>,
    view: Arc<ShardView>,
    /// Inside [`Shard::batch`]: the slots of the pools staged so far (`None` outside a batch).
    batched: Option<Vec<u32>>,
    /// How many batches are open (they nest; the outermost one publishes).
    batch_depth: u32,
    /// Handles of the pools whose changes someone watches ([`Shard::watch`]; ASAP
    /// subscriptions, RFC 5352 §2.2.5), whether the pool exists or not.
    watched: FastSet<Arc<[u8]>>,
    /// Watched pools changed since [`Shard::take_watched_changes`] (may repeat a handle).
    watched_changes: Vec<Arc<[u8]>>,
}

impl Shard {
    /// An empty shard.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            index: FastMap::default(),
            pools: Vec::new(),
            free: Vec::new(),
            pes: 0,
            owners: FastMap::default(),
            timers: TimerWheel::new(),
            identities: Identities::default(),
            reports: FastMap::default(),
            view: Arc::new(ShardView::default()),
            batched: None,
            batch_depth: 0,
            watched: FastSet::default(),
            watched_changes: Vec::new(),
        }
    }

    /// Starts watching pool `handle` (which need not exist yet): from now on each change of it
    /// (a PE added, changed or removed, the pool created or removed, a takeover) is noted for
    /// [`Shard::take_watched_changes`]. With no pool watched, noting a change costs one branch.
    pub fn watch(&mut self, handle: &[u8]) {
        if !self.watched.contains(handle) {
            self.watched.insert(handle.into());
        }
        if let Some(&slot) = self.index.get(handle)
            && let Some(Some(pool)) = self.pools.get_mut(slot as usize)
        {
            pool.watched = true;
        }
    }

    /// Stops watching pool `handle`.
    pub fn unwatch(&mut self, handle: &[u8]) {
        self.watched.remove(handle);
        if let Some(&slot) = self.index.get(handle)
            && let Some(Some(pool)) = self.pools.get_mut(slot as usize)
        {
            pool.watched = false;
        }
    }

    /// Whether pool `handle` differs from the snapshot with serial `seen` a reader saw (0: the
    /// reader found no pool): another snapshot is published, or changes wait for the batch's
    /// publication, or the pool appeared or went away.
    pub fn changed_since(&self, handle: &[u8], seen: u64) -> bool {
        match self.pool(handle) {
            Some(pool) => pool.snapshot().serial() != seen || pool.unpublished(),
            None => seen != 0,
        }
    }

    /// Whether a watched pool changed since the last [`Shard::take_watched_changes`].
    pub fn has_watched_changes(&self) -> bool {
        !self.watched_changes.is_empty()
    }

    /// The watched pools changed since the last call, each once. Call it after publishing
    /// ([`Shard::publish_batch`]), so that readers see what the changes made.
    pub fn take_watched_changes(&mut self) -> Vec<Arc<[u8]>> {
        let mut changed = std::mem::take(&mut self.watched_changes);
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    /// Runs `f` as one batch: each pool it changes is republished to readers once, at the end,
    /// instead of once per change (applying a handle table page: a pool of `n` PEs that gets
    /// `k` of them costs O(n + k), not O(n · k)). Readers see the pools as they were until then;
    /// a pool created in the batch is visible from its first PE.
    pub fn batch<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        self.begin_batch();
        let result = f(self);
        self.end_batch();
        result
    }

    /// Starts a batch (see [`Shard::batch`]); batches nest, and the outermost one publishes.
    pub fn begin_batch(&mut self) {
        self.batch_depth += 1;
        if self.batched.is_none() {
            self.batched = Some(Vec::new());
        }
    }

    /// Ends a batch; the outermost one publishes every pool changed since its
    /// [`Shard::begin_batch`]. Unbalanced calls are ignored.
    pub fn end_batch(&mut self) {
        if self.batch_depth == 0 {
            return;
        }
        self.batch_depth -= 1;
        if self.batch_depth > 0 {
            return;
        }
        self.publish_batch();
        self.batched = None;
    }

    /// Publishes the pools changed so far in the open batches, which go on.
    pub fn publish_batch(&mut self) {
        let Some(batched) = &mut self.batched else {
            return;
        };
        for slot in std::mem::take(batched) {
            if let Some(Some(pool)) = self.pools.get_mut(slot as usize) {
                pool.publish_staged(&self.view);
            }
        }
    }

    /// Inside a batch: stages pool `slot` before its first change.
    fn stage(&mut self, slot: u32) {
        if let Some(batched) = &mut self.batched
            && let Some(Some(pool)) = self.pools.get_mut(slot as usize)
            && pool.stage()
        {
            batched.push(slot);
        }
    }

    /// The read side, to hand to reader threads.
    pub fn view(&self) -> &Arc<ShardView> {
        &self.view
    }

    fn pool(&self, handle: &[u8]) -> Option<&Pool> {
        let &slot = self.index.get(handle)?;
        self.pools[slot as usize].as_ref()
    }

    /// Number of pools.
    pub fn pool_count(&self) -> usize {
        self.index.len()
    }

    /// Number of PEs (O(1)).
    pub fn pe_count(&self) -> usize {
        self.pes
    }

    /// The published snapshot of a pool, for handle resolution.
    pub fn snapshot(&self, handle: &[u8]) -> Option<Arc<PoolSnapshot>> {
        self.pool(handle).map(|p| Arc::clone(p.snapshot()))
    }

    /// The entry of one PE, as changed so far (also inside a batch).
    pub fn entry(&self, handle: &[u8], id: PeId) -> Option<&PoolElementEntry> {
        self.pool(handle)?.get(id).map(Member::entry)
    }

    /// Every pool with its published snapshot (ENRP handle table transfer, audits).
    pub fn pools(&self) -> impl Iterator<Item = (&Arc<[u8]>, &Arc<PoolSnapshot>)> {
        self.pools
            .iter()
            .flatten()
            .map(|p| (&p.handle, p.snapshot()))
    }

    /// The audit checksums of the PEs `owner` owns in this shard.
    pub fn checksums(&self, owner: PrId) -> OwnerChecksums {
        self.owners.get(&owner).copied().unwrap_or_default()
    }

    /// The shard's shared copy of a pool handle (to pass a PE's pool along without copying it).
    pub fn pool_handle(&self, handle: &[u8]) -> Option<Arc<[u8]>> {
        self.pool(handle).map(|p| Arc::clone(&p.handle))
    }

    /// The audit checksums of every home PR owning PEs in this shard (ENRP audits, RFC 5353
    /// §3.6.1).
    pub fn owner_checksums(&self) -> impl Iterator<Item = (PrId, OwnerChecksums)> + '_ {
        self.owners.iter().map(|(&owner, &c)| (owner, c))
    }

    /// Registers or re-registers a PE (RFC 5352 §3.1; RFC 5353 §3.3.1 for ENRP ADD_PE with
    /// `association = None`).
    ///
    /// Rules: the first PE of a pool fixes its policy type, transport type and data/control use;
    /// later PEs must match (causes 0x5, 0x7, 0x8). A known PE ID is a re-registration: its
    /// attributes are replaced, its degradation counter restarts, it keeps its first registration
    /// time. A PE registered over an association can only be changed over that association, or
    /// over a newer one from the same host (its ASAP transports share an address: a PE
    /// re-registering after its association broke), else cause 0xa: a registration still in
    /// flight over the old association, reaching the shard after the new one's, must not take
    /// the PE back (it would leave with the old association's close). One learnt via ENRP may
    /// re-register locally, and its ownership moves to `home_pr` (rule 4).
    pub fn register(
        &mut self,
        pool_handle: &[u8],
        registration: PeRegistration,
        home_pr: PrId,
        association: Option<AssociationId>,
        now: Millis,
    ) -> Result<Registered, RegistrationError> {
        self.register_as(pool_handle, registration, home_pr, association, 0, now)
    }

    /// [`Self::register`] by a PE whose association has the TLS identity digest `identity` (0:
    /// none). A PE registered with an identity stays bound to it: another identity's
    /// registration of its ID is refused, even from the same host (cause 0xa, RFC 5355 §2.3).
    pub fn register_as(
        &mut self,
        pool_handle: &[u8],
        registration: PeRegistration,
        home_pr: PrId,
        association: Option<AssociationId>,
        identity: u64,
        now: Millis,
    ) -> Result<Registered, RegistrationError> {
        if registration.id.0 == 0 {
            return Err(RegistrationError::InvalidValue {
                reason: "PE identifier 0",
            });
        }
        if pool_handle.is_empty() || pool_handle.len() > self.limits.max_pool_handle_len {
            return Err(RegistrationError::InvalidValue {
                reason: "pool handle empty or longer than the configured maximum",
            });
        }
        let shape = registration.user_transport.shape();
        let policy_type = registration.policy.policy_type();
        let (slot_index, pool_created) = match self.index.get(pool_handle) {
            Some(&s) => (s, false),
            None => {
                if self.index.len() >= self.limits.max_pools {
                    return Err(RegistrationError::LackOfResources {
                        limit: "pools per shard",
                    });
                }
                (u32::MAX, true)
            }
        };
        // The PE's position if it is already in the pool (a re-registration).
        let mut existing = None;
        if !pool_created {
            let pool = self.pools[slot_index as usize]
                .as_ref()
                .expect("indexed pool");
            check_consistency(pool, &registration)?;
            match pool.get(registration.id) {
                Some(member) => {
                    let old = member.entry();
                    let meta = member.meta();
                    let old_identity = self.identities.digest(meta.identity);
                    if association.is_some() && old_identity != 0 && old_identity != identity {
                        return Err(RegistrationError::BoundToAnotherIdentity);
                    }
                    if let Some(owner) = old.association
                        && association.is_some_and(|a| {
                            a != owner
                                && !(a > owner && same_host(&old.registration, &registration))
                        })
                    {
                        return Err(RegistrationError::NotOwner);
                    }
                    existing = Some(Existing {
                        home_pr: old.home_pr,
                        meta,
                        identity: old_identity,
                        unchanged: old.registration == registration
                            && old.home_pr == home_pr
                            && old.association == association
                            && old_identity == identity,
                    });
                }
                None if pool.len() >= self.limits.max_pes_per_pool => {
                    return Err(RegistrationError::LackOfResources {
                        limit: "PEs per pool",
                    });
                }
                None => {}
            }
        }
        let slot_index = if pool_created {
            let handle: Arc<[u8]> = pool_handle.into();
            let mut pool = Pool::new(Arc::clone(&handle), policy_type, shape);
            pool.watched = !self.watched.is_empty() && self.watched.contains(pool_handle);
            let s = match self.free.pop() {
                Some(s) => {
                    self.pools[s as usize] = Some(pool);
                    s
                }
                None => {
                    self.pools.push(Some(pool));
                    (self.pools.len() - 1) as u32
                }
            };
            self.index.insert(handle, s);
            s
        } else {
            self.stage(slot_index);
            slot_index
        };
        let pool = self.pools[slot_index as usize].as_mut().expect("live pool");
        let id = registration.id;
        let deadline = expiry_deadline(&registration, now);
        let new_deadline = deadline.unwrap_or(Millis::MAX);
        let (previous, kept_timer) = match &existing {
            Some(Existing { home_pr, meta, .. }) => {
                // Lazy expiry: a timer armed no later than the new deadline stays; it re-arms
                // itself at the real deadline when it fires (see `expire`).
                let kept = match meta.expiry {
                    Some(t) if deadline.is_some() && new_deadline >= meta.deadline => Some(t),
                    Some(t) => {
                        if let Some(t) = expiry_timer(&self.timers, Some(t), slot_index, id) {
                            self.timers.cancel(t);
                        }
                        None
                    }
                    None => None,
                };
                (Some(*home_pr), kept)
            }
            None => (None, None),
        };
        let entry = PoolElementEntry {
            registration,
            home_pr,
            association,
        };
        let identity = match &existing {
            Some(e) if e.identity == identity => e.meta.identity,
            Some(e) => {
                let new = self.identities.acquire(identity);
                self.identities.release(e.meta.identity);
                new
            }
            None => self.identities.acquire(identity),
        };
        if existing.is_some() && !self.reports.is_empty() {
            // A registration is a sign of life.
            self.reports.remove(&(slot_index, id));
        }
        let expiry = kept_timer
            .or_else(|| deadline.map(|d| self.timers.arm(d, Expiry::new(slot_index, id)).index()));
        let meta = PeMeta {
            deadline: new_deadline,
            expiry,
            identity,
        };
        match &existing {
            // A periodic re-registration with nothing changed (the common case) publishes
            // nothing: readers already see this entry; only its degradation counter restarts
            // (RFC 5356 §5.2.2).
            Some(e) if e.unchanged => pool.reregister_unchanged(id, meta),
            Some(_) => pool.replace(entry.clone(), meta, &self.view),
            // Readers see a new pool once it holds its first PE.
            None => {
                pool.insert(entry.clone(), meta, &self.view);
                self.pes += 1;
            }
        }
        if pool.watched && !existing.as_ref().is_some_and(|e| e.unchanged) {
            self.watched_changes.push(Arc::clone(&pool.handle));
        }
        // The checksums cover (pool handle, PE ID) per owner: only a new PE or a change of home
        // PR changes them.
        if previous != Some(home_pr) {
            if let Some(old_home) = previous {
                self.owners
                    .entry(old_home)
                    .or_default()
                    .remove(&pool.handle, id);
            }
            self.owners
                .entry(home_pr)
                .or_default()
                .add(&pool.handle, id);
            self.drop_empty_owner(previous);
        }
        Ok(Registered {
            entry,
            added: existing.is_none(),
            pool_created,
            previous_home: previous.filter(|&p| p != home_pr),
        })
    }

    /// Deregisters a PE (RFC 5352 §3.2; RFC 5353 §3.3.2 for ENRP DEL_PE with
    /// `association = None`). An unknown PE is not an error (`Ok(None)`). A PE registered over an
    /// association can only be deregistered over it (cause 0xa; no deregistration by proxy).
    pub fn deregister(
        &mut self,
        pool_handle: &[u8],
        id: PeId,
        association: Option<AssociationId>,
    ) -> Result<Option<Removed>, RegistrationError> {
        let Some(&slot_index) = self.index.get(pool_handle) else {
            return Ok(None);
        };
        let pool = self.pools[slot_index as usize].as_ref().expect("live pool");
        let Some(member) = pool.get(id) else {
            return Ok(None);
        };
        if let (Some(asking), Some(owner)) = (association, member.entry().association)
            && asking != owner
        {
            return Err(RegistrationError::NotOwner);
        }
        Ok(self.remove_pe(slot_index, id))
    }

    /// Removes PE `id` of pool `slot_index`, its timer and checksum contribution, and the pool
    /// if it became empty.
    fn remove_pe(&mut self, slot_index: u32, id: PeId) -> Option<Removed> {
        self.stage(slot_index);
        let pool = self.pools[slot_index as usize].as_mut().expect("live pool");
        let member = pool.remove(id, &self.view)?;
        let meta = member.meta();
        let entry = member.into_entry();
        self.pes -= 1;
        if let Some(t) = expiry_timer(&self.timers, meta.expiry, slot_index, id) {
            self.timers.cancel(t);
        }
        self.identities.release(meta.identity);
        if !self.reports.is_empty() {
            self.reports.remove(&(slot_index, id));
        }
        let home = entry.home_pr;
        self.owners
            .entry(home)
            .or_default()
            .remove(&pool.handle, entry.id());
        let pool_handle = Arc::clone(&pool.handle);
        if pool.watched {
            self.watched_changes.push(Arc::clone(&pool_handle));
        }
        let pool_removed = pool.len() == 0;
        if pool_removed {
            self.index.remove(&pool_handle);
            self.view.pools.pin().remove(&pool_handle[..]);
            self.pools[slot_index as usize] = None;
            self.free.push(slot_index);
        }
        self.drop_empty_owner(Some(home));
        Some(Removed {
            pool_handle,
            entry,
            pool_removed,
        })
    }

    fn drop_empty_owner(&mut self, owner: Option<PrId>) {
        if let Some(o) = owner
            && self.owners.get(&o).is_some_and(|c| c.pes == 0)
        {
            self.owners.remove(&o);
        }
    }

    /// Removes every PE whose registration life ran out by `now` (RFC 5352 §3.2; RSPLIB's expiry
    /// of PEs learnt via ENRP) and returns them.
    pub fn expire(&mut self, now: Millis) -> Vec<Removed> {
        let mut due = Vec::new();
        self.timers.expire(now, |id, e| due.push((id, e)));
        let mut removed = Vec::new();
        for (id, expiry) in due {
            let (pool, pe) = (expiry.pool, expiry.pe());
            let Some(p) = self.pools.get_mut(pool as usize).and_then(Option::as_mut) else {
                continue;
            };
            let Some(member) = p.get(pe) else { continue };
            let meta = member.meta();
            if meta.expiry != Some(id.index()) {
                continue;
            }
            if meta.deadline > now {
                // Re-registered since the timer was armed: wait for the real deadline.
                let deadline = meta.deadline;
                member.set_expiry(
                    (deadline != Millis::MAX).then(|| self.timers.arm(deadline, expiry)),
                );
                continue;
            }
            // The timer fired, so it is no longer armed.
            member.set_expiry(None);
            removed.extend(self.remove_pe(pool, pe));
        }
        removed
    }

    /// The earliest time [`Self::expire`] may remove something.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timers.next_deadline()
    }

    /// Notes a keep-alive ack (or another sign of life) from a PE: clears its unreachable
    /// reports (RFC 5352 §3.5). Returns `false` if the PE is unknown.
    pub fn refresh(&mut self, pool_handle: &[u8], id: PeId) -> bool {
        let Some(&s) = self.index.get(pool_handle) else {
            return false;
        };
        let pool = self.pools[s as usize].as_ref().expect("live pool");
        if pool.get(id).is_none() {
            return false;
        }
        if !self.reports.is_empty() {
            self.reports.remove(&(s, id));
        }
        true
    }

    /// Counts an ASAP_ENDPOINT_UNREACHABLE report (RFC 5352 §3.5) and removes the PE once
    /// `max_reports` (MAX-BAD-PE-REPORT; RSPLIB: 3) reports arrived.
    pub fn report_unreachable(
        &mut self,
        pool_handle: &[u8],
        id: PeId,
        max_reports: u32,
    ) -> Option<Removed> {
        let &s = self.index.get(pool_handle)?;
        let pool = self.pools[s as usize].as_ref().expect("live pool");
        pool.get(id)?;
        let count = self.reports.entry((s, id)).or_insert(0);
        *count = count.saturating_add(1);
        let reports = *count;
        if reports >= max_reports {
            self.remove_pe(s, id)
        } else {
            None
        }
    }

    /// Moves every PE owned by `dead` to `new_home` (RFC 5353 §3.5 takeover) and returns the
    /// moved entries.
    pub fn take_over(&mut self, dead: PrId, new_home: PrId) -> Vec<(Arc<[u8]>, PoolElementEntry)> {
        let mut moved = Vec::new();
        if dead == new_home {
            return moved;
        }
        let batched = self.batched.is_some();
        for (slot, pool) in self.pools.iter_mut().enumerate() {
            let Some(pool) = pool else { continue };
            if batched && pool.stage() {
                self.batched.as_mut().expect("in a batch").push(slot as u32);
            }
            let changed =
                pool.update_where(|e| e.home_pr == dead, |e| e.home_pr = new_home, &self.view);
            if pool.watched && !changed.is_empty() {
                self.watched_changes.push(Arc::clone(&pool.handle));
            }
            moved.extend(changed.into_iter().map(|e| (Arc::clone(&pool.handle), e)));
        }
        if let Some(c) = self.owners.remove(&dead) {
            self.owners.entry(new_home).or_default().merge(&c);
        }
        moved
    }

    /// One page of a handle table transfer (RFC 5353 §3.2.3, §3.6.3) from `from` on: the pools
    /// in slot order with their PEs accepted by `wanted`, in PE ID order, at most `max_pes` PEs
    /// and about `max_bytes` by `size`. Returns the page and where the next one starts (`None`:
    /// this shard is done). The cursor survives changes between pages: a pool created in a slot
    /// already passed, or PEs added to a pool already sent, are not in the transfer (ENRP handle
    /// updates carry them).
    pub fn table_page(
        &self,
        from: TableCursor,
        max_pes: usize,
        max_bytes: usize,
        mut wanted: impl FnMut(&PoolElementEntry) -> bool,
        mut size: impl FnMut(&PoolElementEntry) -> usize,
    ) -> (TablePage<'_>, Option<TableCursor>) {
        let mut page = Vec::new();
        let (mut pes, mut bytes) = (0, 0);
        let mut slot = from.slot as usize;
        let mut after = from.after;
        while slot < self.pools.len() {
            let Some(pool) = &self.pools[slot] else {
                slot += 1;
                after = None;
                continue;
            };
            let mut entries: Vec<&PoolElementEntry> = pool
                .members()
                .map(Member::entry)
                .filter(|e| after.is_none_or(|a| e.id() > a) && wanted(e))
                .collect();
            entries.sort_unstable_by_key(|e| e.id());
            let mut taken = 0;
            for e in &entries {
                if pes == max_pes || bytes >= max_bytes {
                    break;
                }
                pes += 1;
                bytes += size(e);
                taken += 1;
            }
            let complete = taken == entries.len();
            let last = entries[..taken].last().map(|e| e.id());
            if taken > 0 {
                entries.truncate(taken);
                page.push((&pool.handle, entries));
            }
            if !complete {
                let next = TableCursor {
                    slot: slot as u32,
                    after: last.or(after),
                };
                return (page, Some(next));
            }
            slot += 1;
            after = None;
            if pes == max_pes || bytes >= max_bytes {
                break;
            }
        }
        let next = (slot < self.pools.len()).then_some(TableCursor {
            slot: slot as u32,
            after: None,
        });
        (page, next)
    }

    /// The PEs `owner` owns, with their pool handles (ENRP handle table request with W = 1).
    pub fn owned_by(&self, owner: PrId) -> impl Iterator<Item = (&Arc<[u8]>, &PoolElementEntry)> {
        self.pools
            .iter()
            .flatten()
            .flat_map(|p| p.members().map(move |m| (&p.handle, m.entry())))
            .filter(move |(_, e)| e.home_pr == owner)
    }
}

/// Whether two registrations of one PE came from the same host: their ASAP transports (the
/// addresses of the associations they arrived over) share an address. A PE whose association
/// broke re-registers over a new one from the same host (RFC 5352 §3.1 rules 3-4 move the PE to
/// it); another host cannot take it over (RFC 5352 §2.2.2, RFC 5355 §2.3.3).
fn same_host(old: &PeRegistration, new: &PeRegistration) -> bool {
    match (&old.asap_transport, &new.asap_transport) {
        (Some(a), Some(b)) => a.addresses.iter().any(|x| b.addresses.contains(x)),
        _ => false,
    }
}

/// The time a PE's registration life runs out, or `None` for an infinite life (-1).
fn expiry_deadline(registration: &PeRegistration, now: Millis) -> Option<Millis> {
    u64::try_from(registration.registration_life)
        .ok()
        .map(|life| now.saturating_add(life))
}

/// RFC 5352 §3.1 rule 2: the PE must use the pool's policy type, transport type and
/// data/control configuration.
fn check_consistency(pool: &Pool, r: &PeRegistration) -> Result<(), RegistrationError> {
    let first = &pool.first().expect("a pool has PEs").entry().registration;
    if r.policy.policy_type() != pool.policy_type {
        return Err(RegistrationError::InconsistentPolicy {
            pool_policy: first.policy,
        });
    }
    let shape = r.user_transport.shape();
    if shape.parameter_type != pool.shape.parameter_type {
        return Err(RegistrationError::InconsistentTransport {
            pool_transport: first.user_transport.clone(),
        });
    }
    if shape.transport_use != pool.shape.transport_use {
        return Err(RegistrationError::InconsistentDataControl);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use rserpool_protocol::{Policy, TransportKind};

    use super::*;
    use crate::entry::{OwnedTransport, OwnedUserTransport};

    fn pe(id: u64, load: u32) -> PeRegistration {
        PeRegistration {
            id: PeId(id),
            registration_life: -1,
            user_transport: OwnedUserTransport::Transport(OwnedTransport {
                kind: TransportKind::Tcp,
                port: 80,
                transport_use: 0,
                service_code: 0,
                addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))].into(),
            }),
            policy: Policy::LeastUsed { load },
            asap_transport: None,
        }
    }

    /// A pool past one tree leaf (20 PEs): lookups, updates, removals and the unreachable
    /// count stay right while it splits and merges leaves.
    #[test]
    fn lookups_stay_right_when_a_pool_grows_past_one_leaf() {
        let mut shard = Shard::new(Limits::default());
        let h = b"big";
        for id in 1..=40 {
            shard.register(h, pe(id, 0), PrId(1), None, 0).unwrap();
        }
        // Remove every third PE (the last one moves into each hole), then update the rest.
        for id in (1..=40).step_by(3) {
            assert!(shard.deregister(h, PeId(id), None).unwrap().is_some());
        }
        for id in 1..=40u64 {
            let present = (id - 1) % 3 != 0;
            assert_eq!(shard.entry(h, PeId(id)).is_some(), present, "PE {id}");
            if present {
                let r = shard
                    .register(h, pe(id, id as u32), PrId(2), None, 1)
                    .unwrap();
                assert!(!r.added, "PE {id} re-registered");
                assert_eq!(shard.entry(h, PeId(id)).unwrap().home_pr, PrId(2));
            }
        }
        // Two reports, a sign of life, two more: still there (the count restarted).
        for _ in 0..2 {
            assert!(shard.report_unreachable(h, PeId(2), 3).is_none());
        }
        assert!(shard.refresh(h, PeId(2)));
        assert!(!shard.refresh(h, PeId(1)), "PE 1 was deregistered");
        for _ in 0..2 {
            assert!(shard.report_unreachable(h, PeId(2), 3).is_none());
        }
        assert!(shard.report_unreachable(h, PeId(2), 3).is_some());
        assert!(shard.register(h, pe(2, 2), PrId(2), None, 1).unwrap().added);
        let snapshot = shard.snapshot(h).unwrap();
        assert_eq!(snapshot.len(), 26);
        assert_eq!(shard.checksums(PrId(2)).pes, 26);
        assert_eq!(shard.checksums(PrId(1)).pes, 0);
        // Shrink back below the limit: every remaining PE is still found.
        for id in (2..=40).filter(|id| (id - 1) % 3 != 0).take(20) {
            assert!(
                shard.deregister(h, PeId(id), None).unwrap().is_some(),
                "PE {id}"
            );
        }
        assert_eq!(shard.snapshot(h).unwrap().len(), 6);
        for e in shard.snapshot(h).unwrap().entries() {
            assert_eq!(
                shard.entry(h, e.id()).map(PoolElementEntry::id),
                Some(e.id())
            );
        }
    }

    /// Watched pools (ASAP subscriptions): every change that republishes a pool is noted once
    /// per take, an unchanged re-registration is not, a pool is watched before it exists and
    /// after it went away, and an unwatched pool is not noted.
    #[test]
    fn watched_pools_note_their_changes() {
        let mut shard = Shard::new(Limits::default());
        let h: &[u8] = b"w";
        let taken = |shard: &mut Shard| -> Vec<Vec<u8>> {
            shard
                .take_watched_changes()
                .iter()
                .map(|h| h.to_vec())
                .collect()
        };
        shard
            .register(b"other", pe(9, 0), PrId(1), None, 0)
            .unwrap();
        assert!(!shard.has_watched_changes(), "nothing watched");
        assert!(!shard.changed_since(h, 0), "no pool, none seen");
        shard.watch(h);
        shard.register(h, pe(1, 0), PrId(1), None, 0).unwrap();
        shard.register(h, pe(2, 0), PrId(1), None, 0).unwrap();
        shard
            .register(b"other", pe(8, 0), PrId(1), None, 0)
            .unwrap();
        assert_eq!(taken(&mut shard), [h.to_vec()], "created and added: once");
        let serial = shard.snapshot(h).unwrap().serial();
        assert!(!shard.changed_since(h, serial));
        assert!(shard.changed_since(h, serial - 1));
        shard.register(h, pe(2, 0), PrId(1), None, 1).unwrap();
        assert!(!shard.has_watched_changes(), "unchanged re-registration");
        shard.register(h, pe(2, 5), PrId(1), None, 1).unwrap();
        assert_eq!(taken(&mut shard), [h.to_vec()], "changed attributes");
        shard.take_over(PrId(1), PrId(2));
        assert_eq!(taken(&mut shard), [h.to_vec()], "takeover");
        shard.begin_batch();
        shard.deregister(h, PeId(1), None).unwrap();
        let serial = shard.snapshot(h).unwrap().serial();
        assert!(
            shard.changed_since(h, serial),
            "a change waits for the batch"
        );
        shard.end_batch();
        assert_eq!(taken(&mut shard), [h.to_vec()], "removal");
        shard.deregister(h, PeId(2), None).unwrap();
        assert_eq!(taken(&mut shard), [h.to_vec()], "the pool went away");
        assert!(shard.changed_since(h, serial) && !shard.changed_since(h, 0));
        shard.register(h, pe(3, 0), PrId(1), None, 0).unwrap();
        assert_eq!(
            taken(&mut shard),
            [h.to_vec()],
            "still watched: created again"
        );
        shard.unwatch(h);
        shard.register(h, pe(4, 0), PrId(1), None, 0).unwrap();
        assert!(!shard.has_watched_changes(), "unwatched");
    }

    /// Identity digests are stored once per identity and forgotten with their last PE; a PE's
    /// unreachable reports go with it, and with a re-registration; its expiry timer with it.
    #[test]
    fn identities_reports_and_timers_are_forgotten_with_their_pe() {
        let mut shard = Shard::new(Limits::default());
        let h = b"pool";
        let a = AssociationId::new;
        let life = |id| PeRegistration {
            registration_life: 60_000,
            ..pe(id, 0)
        };
        let (alice, bob) = (0xa11ce, 0xb0b);
        for id in 1..=3 {
            shard
                .register_as(h, life(id), PrId(1), a(1), alice, 0)
                .unwrap();
        }
        shard
            .register_as(h, life(4), PrId(1), a(2), bob, 0)
            .unwrap();
        shard.register_as(h, life(5), PrId(1), a(2), 0, 0).unwrap();
        assert_eq!((shard.identities.len(), shard.timers.len()), (2, 5));
        assert!(matches!(
            shard.register_as(h, life(1), PrId(1), a(2), bob, 1),
            Err(RegistrationError::BoundToAnotherIdentity)
        ));
        assert!(
            !shard
                .register_as(h, life(1), PrId(1), a(1), alice, 1)
                .unwrap()
                .added
        );
        // PE 5 had no identity: it takes bob's, and is bound to it from then on.
        shard
            .register_as(h, life(5), PrId(1), a(2), bob, 1)
            .unwrap();
        assert!(matches!(
            shard.register_as(h, life(5), PrId(1), a(2), alice, 2),
            Err(RegistrationError::BoundToAnotherIdentity)
        ));
        for id in 1..=2 {
            shard.deregister(h, PeId(id), a(1)).unwrap().unwrap();
        }
        assert_eq!(shard.identities.len(), 2);
        shard.deregister(h, PeId(3), a(1)).unwrap().unwrap();
        assert_eq!(shard.identities.len(), 1, "alice's last PE is gone");
        shard
            .register_as(h, life(6), PrId(1), a(3), 0xca201, 2)
            .unwrap();
        assert_eq!(shard.identities.slots.len(), 2, "alice's slot reused");
        assert!(shard.report_unreachable(h, PeId(4), 3).is_none());
        assert!(shard.report_unreachable(h, PeId(5), 3).is_none());
        assert!(shard.report_unreachable(h, PeId(6), 3).is_none());
        assert_eq!(shard.reports.len(), 3);
        assert!(shard.refresh(h, PeId(6)));
        shard
            .register_as(h, life(4), PrId(1), a(2), bob, 3)
            .unwrap();
        assert_eq!(shard.reports.len(), 1, "a registration is a sign of life");
        shard.deregister(h, PeId(5), a(2)).unwrap().unwrap();
        assert!(shard.reports.is_empty());
        shard.deregister(h, PeId(4), a(2)).unwrap().unwrap();
        assert_eq!(shard.timers.len(), 1);
        shard.deregister(h, PeId(6), a(3)).unwrap().unwrap();
        assert_eq!((shard.identities.len(), shard.timers.len()), (0, 0));
    }
}
