//! One pool: its members (PEs) in a persistent tree that the single writer changes and publishes,
//! and the published, immutable version that handle resolutions read (RFC 5352 §3.1 pool rules,
//! RFC 5356 selection through [`crate::policy`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rserpool_protocol::PeId;

use crate::entry::{Millis, PoolElementEntry, TransportShape};
use crate::idmap::IdMap;
use crate::policy::{self, SelectionConfig, SelectionState};
use crate::rng::Rng;
use crate::shard::ShardView;
use crate::timer::TimerId;
use crate::tree::{Item, Iter, Key, Tree};

/// What the writer keeps per PE beside the published entry: the fields that change without a
/// re-registration (expiry), so that a sign of life never republishes, and the TLS identity the
/// PE ID is bound to. (Its unreachable reports, rare and transient, are counted in the shard.)
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeMeta {
    /// When the registration life runs out (`Millis::MAX`: never).
    pub deadline: Millis,
    /// The expiry timer's slab index ([`TimerId::index`]; the shard finds the timer with
    /// [`crate::timer::TimerWheel::at`] and knows it as this PE's by its payload). It may be
    /// armed earlier than `deadline` (a re-registration moves only the deadline; the timer
    /// re-arms itself when it fires early), never later.
    pub expiry: Option<u32>,
    /// The index of the TLS identity the PE registered with in its shard's table of identity
    /// digests (0: none, or learnt via ENRP): no other identity may re-register it (RFC 5355
    /// §2.3: registration by an unauthorized PE).
    pub identity: u32,
}

/// `Member::expiry` of a PE without an expiry timer (no slab index: the wheel never gives a
/// timer this one).
const NO_TIMER: u32 = u32::MAX;

/// A PE as its pool holds it: the entry resolutions return, its place in selection, its
/// degradation counter, and the writer's bookkeeping ([`PeMeta`]).
///
/// Members sit in tree leaves that published versions share, so the fields that change without
/// a re-registration are atomics: the writer updates them in place (relaxed: only it reads them,
/// except the degradation counter, which resolutions advance) instead of copying the leaf.
///
/// Laid out in declaration order: the key's parts (`order`, then the entry's identifier), the
/// degradation counter and what a handle resolution reads share the first cache line or two.
///
/// 152 bytes (a unit test holds it there), so that 20 fill a tree leaf in mimalloc's 3 072-byte
/// size class ([`crate::tree::LEAF_MAX`]): the selection value is not stored but derived from
/// the entry's policy ([`policy::member_value`]), the expiry timer is kept as its slab index
/// and the TLS identity as an index into the shard's table of digests (4 bytes each instead of
/// 8), and unreachable reports are counted in the shard, for the few PEs that have any.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Member {
    /// Static key of ordered policies ([`policy::member_key`]), else the sequence number of
    /// its registration in its pool.
    order: u32,
    degradation: AtomicU32,
    entry: PoolElementEntry,
    /// The expiry timer's slab index, or [`NO_TIMER`].
    expiry: AtomicU32,
    /// [`PeMeta::identity`].
    identity: AtomicU32,
    deadline: AtomicU64,
}

impl Clone for Member {
    fn clone(&self) -> Self {
        Self {
            entry: self.entry.clone(),
            order: self.order,
            degradation: AtomicU32::new(self.degradation()),
            expiry: AtomicU32::new(self.expiry.load(Ordering::Relaxed)),
            identity: AtomicU32::new(self.identity.load(Ordering::Relaxed)),
            deadline: AtomicU64::new(self.deadline.load(Ordering::Relaxed)),
        }
    }
}

impl Item for Member {
    #[inline]
    fn key(&self) -> Key {
        (self.order, self.entry.id().0)
    }

    #[inline]
    fn value(&self) -> u32 {
        policy::member_value(&self.entry.registration.policy)
    }
}

impl Member {
    pub(crate) fn new(entry: PoolElementEntry, policy_type: u32, meta: PeMeta) -> Self {
        let (order, _) = policy::member_key(policy_type, &entry.registration.policy);
        let member = Self {
            entry,
            order,
            degradation: AtomicU32::new(0),
            expiry: AtomicU32::new(NO_TIMER),
            identity: AtomicU32::new(0),
            deadline: AtomicU64::new(0),
        };
        member.set_meta(meta);
        member
    }

    /// The entry, taken out of a member removed from its pool.
    pub(crate) fn into_entry(self) -> PoolElementEntry {
        self.entry
    }

    /// The entry handle resolutions return.
    #[inline]
    pub(crate) fn entry(&self) -> &PoolElementEntry {
        &self.entry
    }

    /// The static key of ordered policies (the registration sequence number for the others).
    #[inline]
    pub(crate) fn order(&self) -> u32 {
        self.order
    }

    /// Selections since the last registration (degradation policies only).
    #[inline]
    pub(crate) fn degradation(&self) -> u32 {
        self.degradation.load(Ordering::Relaxed)
    }

    /// Sets the degradation counter (0 on re-registration).
    pub(crate) fn set_degradation(&self, count: u32) {
        self.degradation.store(count, Ordering::Relaxed);
    }

    /// Counts one more selection, saturating.
    pub(crate) fn degrade(&self) {
        // Err only when already saturated: nothing to do then.
        let _ = self
            .degradation
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_add(1));
    }

    /// The writer's bookkeeping.
    pub(crate) fn meta(&self) -> PeMeta {
        let expiry = self.expiry.load(Ordering::Relaxed);
        PeMeta {
            deadline: self.deadline.load(Ordering::Relaxed),
            expiry: (expiry != NO_TIMER).then_some(expiry),
            identity: self.identity.load(Ordering::Relaxed),
        }
    }

    /// Replaces the writer's bookkeeping.
    pub(crate) fn set_meta(&self, meta: PeMeta) {
        self.deadline.store(meta.deadline, Ordering::Relaxed);
        self.expiry
            .store(meta.expiry.unwrap_or(NO_TIMER), Ordering::Relaxed);
        self.identity.store(meta.identity, Ordering::Relaxed);
    }

    /// Sets the expiry timer.
    pub(crate) fn set_expiry(&self, expiry: Option<TimerId>) {
        self.expiry
            .store(expiry.map_or(NO_TIMER, TimerId::index), Ordering::Relaxed);
    }
}

#[cfg(test)]
impl Member {
    /// A member with PE ID `id` and `policy` in a pool of `policy_type`, for selection tests.
    pub(crate) fn for_test(id: u64, policy: rserpool_protocol::Policy, policy_type: u32) -> Self {
        use crate::entry::{OwnedTransport, OwnedUserTransport, PeRegistration};
        let entry = PoolElementEntry {
            registration: PeRegistration {
                id: PeId(id),
                registration_life: -1,
                user_transport: OwnedUserTransport::Transport(OwnedTransport {
                    kind: rserpool_protocol::TransportKind::Tcp,
                    port: 80,
                    transport_use: 0,
                    service_code: 0,
                    addresses: vec![std::net::IpAddr::from([192, 0, 2, 1])].into(),
                }),
                policy,
                asap_transport: None,
            },
            home_pr: rserpool_protocol::PrId(1),
            association: None,
        };
        let meta = PeMeta {
            deadline: Millis::MAX,
            expiry: None,
            identity: 0,
        };
        Self::new(entry, policy_type, meta)
    }
}

/// A published, immutable version of a pool that handle resolutions read without locks. The
/// selection state a resolution advances (round-robin cursor, degradation counters) is atomic.
#[derive(Debug)]
pub struct PoolSnapshot {
    /// Unique among all snapshots this process builds ([`PoolSnapshot::serial`]).
    serial: u64,
    policy_type: u32,
    /// [`policy::wrr_stride`] of the members' total value (weighted round robin).
    stride: u64,
    members: Tree<Member>,
    state: SelectionState,
}

/// The serial of the next snapshot built, in any shard.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

impl PoolSnapshot {
    fn new(policy_type: u32, members: Tree<Member>, cursor: u64) -> Self {
        let stride = if policy_type == rserpool_protocol::policy_type::WEIGHTED_ROUND_ROBIN {
            policy::wrr_stride(members.total())
        } else {
            1
        };
        Self {
            // Relaxed: only uniqueness matters. 64 bits do not wrap in the life of a process.
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            policy_type,
            stride,
            members,
            state: SelectionState::with_cursor(cursor),
        }
    }

    /// Identifies this snapshot among every snapshot of every pool built in this process (never
    /// reused, never 0): a reader may key data derived from a snapshot's entries by it, such
    /// as their encoded form.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The pool's PE at `rank` (0-based, in the pool's selection order): O(log n).
    ///
    /// # Panics
    ///
    /// If `rank >= self.len()`.
    #[inline]
    pub fn entry(&self, rank: usize) -> &PoolElementEntry {
        self.members.at(rank).entry()
    }

    /// The PEs at `ranks`, in that order: runs of consecutive ranks (round robin, tie groups)
    /// are walked along their leaves instead of searched for one by one; any other rank takes
    /// one descent (no iterator with a stack of the tree's levels to set up for it).
    ///
    /// # Panics
    ///
    /// If a rank is not below [`Self::len`].
    pub fn entries_at<'s>(
        &'s self,
        ranks: &'s [u32],
    ) -> impl Iterator<Item = &'s PoolElementEntry> + 's {
        // The rest of the leaf after the previous rank, and that rank + 1.
        let mut run: (&'s [Member], usize) = (&[], usize::MAX);
        ranks.iter().map(move |&rank| {
            let rank = rank as usize;
            if run.1 != rank || run.0.is_empty() {
                run.0 = self.members.leaf_from(rank);
            }
            let (member, rest) = run.0.split_first().expect("rank within the pool");
            run = (rest, rank + 1);
            member.entry()
        })
    }

    /// The pool's PEs in rank order.
    pub fn entries(&self) -> impl Iterator<Item = &PoolElementEntry> + '_ {
        self.members.iter().map(Member::entry)
    }

    /// Number of PEs.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the pool has no PE (only transiently, while it is being removed).
    pub fn is_empty(&self) -> bool {
        self.members.len() == 0
    }

    /// Selects up to `out.len()` distinct PEs by the pool's policy (RFC 5356; see
    /// [`crate::policy`]) and writes their ranks (see [`Self::entry`]); returns how many.
    #[inline]
    pub fn select(&self, rng: &mut Rng, out: &mut [u32]) -> usize {
        let n = out.len();
        policy::select(
            &self.members,
            self.policy_type,
            self.stride,
            SelectionConfig::default(),
            &self.state,
            n,
            rng,
            out,
        )
    }

    /// Reads the snapshot's own fields a selection starts with (size, policy, cursor); returns
    /// a value the caller must consume.
    #[inline]
    pub(crate) fn read_ahead_head(&self) -> u64 {
        (self.members.len() as u64) ^ u64::from(self.policy_type) ^ self.state.cursor()
    }

    /// Reads ahead what [`Self::select`] of `n` PEs and the encoding of its result will read
    /// (see [`policy::read_ahead`]); returns a value the caller must consume.
    #[inline]
    pub(crate) fn read_ahead(&self, n: usize) -> u64 {
        policy::read_ahead(&self.members, self.policy_type, &self.state, n)
    }

    /// The degradation counter of the PE at `rank` (selections since its last registration;
    /// always 0 for policies without degradation).
    pub fn degradation(&self, rank: usize) -> u32 {
        if rank < self.len() {
            self.members.at(rank).degradation()
        } else {
            0
        }
    }
}

/// A PE ID as the pool's index keeps it: in two halves, so that a slot with its 4-byte value
/// takes 12 bytes, not 16 (hashed as the ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IndexKey([u32; 2]);

impl IndexKey {
    fn of(id: PeId) -> Self {
        Self([id.0 as u32, (id.0 >> 32) as u32])
    }
}

impl std::hash::Hash for IndexKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.0[0]) | (u64::from(self.0[1]) << 32));
    }
}

impl crate::idmap::IdKey for IndexKey {
    const EMPTY: Self = Self([0, 0]);
}

/// A pool as its writer holds it: the members as changed so far, and the version published last.
#[derive(Debug)]
pub(crate) struct Pool {
    pub handle: Arc<[u8]>,
    /// Policy type and transport shape fixed by the first PE (RFC 5352 §3.1 rule 1).
    pub policy_type: u32,
    pub shape: TransportShape,
    members: Tree<Member>,
    /// PE ID to the first part of its key ([`Member::order`]), to find a member by its ID; kept
    /// only while the pool is larger than one leaf (`indexed`): a pool of one leaf is scanned
    /// (its members' IDs sit in their first cache lines), which saves an index of ~17 bytes per
    /// PE in the many small pools.
    keys: IdMap<IndexKey, u32>,
    indexed: bool,
    /// Pools not ordered by a static key keep their PEs in registration order: the next PE's
    /// sequence number (its `order`). A new PE then goes to the tree's end, whose path the
    /// writer has at hand, and a registration storm copies no other leaf.
    next_seq: Option<u32>,
    /// The version published last (readers find it in the shard's view).
    snapshot: Arc<PoolSnapshot>,
    /// In a batch of changes ([`Pool::stage`]): changes wait for [`Pool::publish_staged`].
    staged: bool,
    /// Changed since the last publication.
    dirty: bool,
    /// Someone watches its changes ([`crate::Shard::watch`]): the shard notes each change.
    pub watched: bool,
}

impl Pool {
    pub fn new(handle: Arc<[u8]>, policy_type: u32, shape: TransportShape) -> Self {
        let ordered = policy::is_ordered(policy_type);
        Self {
            handle,
            policy_type,
            shape,
            members: Tree::default(),
            keys: IdMap::default(),
            indexed: false,
            next_seq: (!ordered).then_some(0),
            snapshot: Arc::new(PoolSnapshot::new(policy_type, Tree::default(), 0)),
            staged: false,
            dirty: false,
            watched: false,
        }
    }

    /// Whether changes wait for [`Pool::publish_staged`] (made in a batch, not yet published).
    pub fn unpublished(&self) -> bool {
        self.dirty
    }

    /// The version published last.
    pub fn snapshot(&self) -> &Arc<PoolSnapshot> {
        &self.snapshot
    }

    /// Starts a batch: changes until [`Pool::publish_staged`] are published once, at its end;
    /// readers keep the last version meanwhile. Returns `false` if the pool was already staged.
    pub fn stage(&mut self) -> bool {
        !std::mem::replace(&mut self.staged, true)
    }

    /// Ends a batch: publishes the changes made in it (if the pool still has PEs).
    pub fn publish_staged(&mut self, view: &ShardView) {
        self.staged = false;
        if self.dirty && self.len() > 0 {
            self.publish(view);
        }
    }

    /// Number of PEs.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The members in the pool's order.
    pub fn members(&self) -> Iter<'_, Member> {
        self.members.iter()
    }

    /// Any one member (the pool's first), for the pool's consistency rules.
    pub fn first(&self) -> Option<&Member> {
        (self.len() > 0).then(|| self.members.at(0))
    }

    fn key_of(&self, id: PeId) -> Option<Key> {
        if self.indexed {
            return self.keys.get(&IndexKey::of(id)).map(|&order| (order, id.0));
        }
        self.members
            .iter()
            .find(|m| m.entry.id() == id)
            .map(Item::key)
    }

    /// Keeps the PE ID index while the pool is larger than one leaf: builds it when the pool
    /// grows past one, drops it when the pool shrinks to half of one (so that a pool around the
    /// size does not build and drop it on every change).
    fn index_for_size(&mut self) {
        let len = self.len();
        if !self.indexed && len > crate::tree::LEAF_MAX {
            for member in self.members.iter() {
                self.keys
                    .insert(IndexKey::of(member.entry.id()), member.order);
            }
            self.indexed = true;
        } else if self.indexed && len <= crate::tree::LEAF_MAX / 2 {
            self.keys.clear();
            self.indexed = false;
        }
    }

    /// The member with PE ID `id`.
    pub fn get(&self, id: PeId) -> Option<&Member> {
        self.members.get(self.key_of(id)?)
    }

    /// Adds a PE (not in the pool yet) and publishes in `view`.
    pub fn insert(&mut self, entry: PoolElementEntry, meta: PeMeta, view: &ShardView) {
        let mut member = Member::new(entry, self.policy_type, meta);
        if let Some(seq) = self.next_seq {
            let seq = if seq == u32::MAX {
                self.renumber()
            } else {
                seq
            };
            member.order = seq;
            self.next_seq = Some(seq + 1);
        }
        if self.indexed {
            self.keys
                .insert(IndexKey::of(member.entry.id()), member.order);
        }
        self.members.insert(member);
        self.index_for_size();
        self.changed(view);
    }

    /// Numbers the PEs of a pool in registration order from 0 again (once in 2^32
    /// registrations); returns the next sequence number.
    fn renumber(&mut self) -> u32 {
        let members: Vec<Member> = self.members.iter().cloned().collect();
        let next = members.len() as u32;
        self.members = Tree::default();
        self.keys.clear();
        for (seq, mut member) in members.into_iter().enumerate() {
            member.order = seq as u32;
            if self.indexed {
                self.keys
                    .insert(IndexKey::of(member.entry.id()), member.order);
            }
            self.members.insert(member);
        }
        next
    }

    /// A re-registration of PE `id` with unchanged attributes: new writer state, degradation
    /// counter back to 0 (RFC 5356 §5.2.2), nothing republished.
    pub fn reregister_unchanged(&mut self, id: PeId, meta: PeMeta) {
        if let Some(member) = self.get(id) {
            member.set_meta(meta);
            member.set_degradation(0);
        }
    }

    /// Replaces the entry of PE `entry.id()` (a re-registration with changed attributes: its
    /// degradation counter restarts, RFC 5356 §5.2.2) and publishes in `view`.
    pub fn replace(&mut self, entry: PoolElementEntry, meta: PeMeta, view: &ShardView) {
        let id = entry.id();
        let mut member = Member::new(entry, self.policy_type, meta);
        let Some(old_key) = self.key_of(id) else {
            return;
        };
        if self.next_seq.is_some() {
            // Registration order: it keeps its place.
            member.order = old_key.0;
        }
        if member.key() == old_key {
            self.members.update(old_key, |m| *m = member);
        } else {
            self.members.remove(old_key);
            if self.indexed {
                self.keys.insert(IndexKey::of(id), member.order);
            }
            self.members.insert(member);
        }
        self.changed(view);
    }

    /// Removes PE `id`, which the caller found in the pool, and publishes in `view`, unless the
    /// pool became empty (the caller drops it).
    pub fn remove(&mut self, id: PeId, view: &ShardView) -> Option<Member> {
        let key = self.key_of(id)?;
        let member = self.members.remove(key)?;
        if self.indexed {
            self.keys.remove(&IndexKey::of(id));
        }
        self.index_for_size();
        if self.len() > 0 {
            self.changed(view);
        }
        Some(member)
    }

    /// Applies `f` to the entry of every PE for which `wanted` holds and publishes in `view` if
    /// any; returns the changed entries. `f` must not change what selection reads (identifier,
    /// policy).
    pub fn update_where(
        &mut self,
        wanted: impl Fn(&PoolElementEntry) -> bool,
        mut f: impl FnMut(&mut PoolElementEntry),
        view: &ShardView,
    ) -> Vec<PoolElementEntry> {
        let mut changed = Vec::new();
        self.members.update_where(
            |m| wanted(&m.entry),
            |m| {
                f(&mut m.entry);
                changed.push(m.entry.clone());
            },
        );
        if !changed.is_empty() {
            self.changed(view);
        }
        changed
    }

    /// Publishes now, or at the end of the batch.
    fn changed(&mut self, view: &ShardView) {
        self.dirty = true;
        if !self.staged {
            self.publish(view);
        }
    }

    /// Publishes the members as the pool's next version in `view`, the round-robin cursor
    /// carried over.
    fn publish(&mut self, view: &ShardView) {
        self.snapshot = Arc::new(PoolSnapshot::new(
            self.policy_type,
            self.members.clone(),
            self.snapshot.state.cursor(),
        ));
        self.dirty = false;
        view.publish(&self.handle, &self.snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaf size is chosen for this member size (`tree::LEAF_MAX`): a full leaf fills
    /// mimalloc's 3 072-byte size class.
    #[test]
    fn a_full_leaf_of_members_fits_the_allocator_size_class_it_was_chosen_for() {
        let leaf = crate::tree::LEAF_MAX * std::mem::size_of::<Member>() + 16;
        assert!((3_000..=3_072).contains(&leaf), "{leaf} bytes");
    }

    /// A member's size, to the byte: every PE of a carrier-scale handlespace pays it (1 M PEs
    /// per GB of it), and `tree::LEAF_MAX` is chosen for it. A new field shows up here; see
    /// the memory budget in docs/performance.md before changing the figures.
    #[test]
    fn a_member_takes_152_bytes_its_entry_128() {
        assert_eq!(std::mem::size_of::<PoolElementEntry>(), 128);
        assert_eq!(std::mem::size_of::<Member>(), 152);
        assert_eq!(std::mem::align_of::<Member>(), 8);
    }

    /// A pool whose registration sequence numbers run out numbers its PEs again, in the same
    /// order, and finds every one of them.
    #[test]
    fn sequence_numbers_wrap_by_renumbering_in_order() {
        let view = ShardView::default();
        let ty = rserpool_protocol::policy_type::ROUND_ROBIN;
        let handle: Arc<[u8]> = (*b"pool").into();
        let mut pool = Pool::new(
            Arc::clone(&handle),
            ty,
            TransportShape {
                parameter_type: 0,
                transport_use: 0,
            },
        );
        pool.next_seq = Some(u32::MAX - 2);
        let ids: Vec<u64> = vec![9, 3, 7, 1, 5];
        for &id in &ids {
            let member = Member::for_test(id, rserpool_protocol::Policy::RoundRobin, ty);
            pool.insert(member.entry.clone(), member.meta(), &view);
        }
        let order: Vec<u64> = pool.members().map(|m| m.entry().id().0).collect();
        assert_eq!(order, ids, "registration order kept across the renumbering");
        for &id in &ids {
            assert_eq!(pool.get(PeId(id)).map(|m| m.entry().id().0), Some(id));
        }
        assert!(
            pool.next_seq.is_some_and(|s| s < 10),
            "numbered from 0 again"
        );
    }
}
