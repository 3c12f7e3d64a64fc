//! One pool: its PEs as the single writer holds them, and the immutable snapshot that handle
//! resolutions read (RFC 5352 §3.1 pool rules, RFC 5356 selection through [`crate::policy`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rserpool_protocol::{PeId, Policy};

use crate::entry::{Millis, PoolElementEntry, TransportShape};
use crate::policy::{SelectionIndex, SelectionState};
use crate::rng::Rng;
use crate::shard::ShardView;
use crate::timer::TimerId;

/// What the writer keeps per PE beside the published entry: the fields that change without a
/// re-registration (refresh time, expiry timer, reports), so that refreshing never republishes.
/// `Pool::meta[i]` belongs to `snapshot.entries[i]`.
#[derive(Debug)]
pub(crate) struct PeMeta {
    pub last_refresh: Millis,
    /// When the registration life runs out (`Millis::MAX`: never).
    pub deadline: Millis,
    /// The expiry timer. It may be armed earlier than `deadline` (a re-registration moves only
    /// the deadline; the timer re-arms itself when it fires early), never later.
    pub expiry: Option<TimerId>,
    pub unreachable_reports: u32,
}

/// The published, immutable state of a pool that handle resolutions read without locks. Selection
/// state that a resolution advances (round-robin cursor, degradation counters) is atomic.
#[derive(Debug)]
pub struct PoolSnapshot {
    /// Unique among all snapshots this process builds ([`PoolSnapshot::serial`]).
    serial: u64,
    entries: Box<[PoolElementEntry]>,
    index: SelectionIndex,
    degradation: Box<[AtomicU32]>,
    state: SelectionState,
}

/// The serial of the next snapshot built, in any shard.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

impl PoolSnapshot {
    fn new(
        entries: Box<[PoolElementEntry]>,
        index: SelectionIndex,
        degradation: Box<[AtomicU32]>,
        state: SelectionState,
    ) -> Self {
        Self {
            // Relaxed: only uniqueness matters. 64 bits do not wrap in the life of a process.
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            entries,
            index,
            degradation,
            state,
        }
    }

    /// Identifies this snapshot among every snapshot of every pool built in this process (never
    /// reused, never 0): a reader may key data derived from a snapshot's entries by it, such
    /// as their encoded form.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// The pool's PEs, stored contiguously in the writer's slot order.
    pub fn entries(&self) -> &[PoolElementEntry] {
        &self.entries
    }

    /// Number of PEs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the pool has no PE (only transiently, while it is being removed).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Selects up to `out.len()` distinct PEs by the pool's policy (RFC 5356; see
    /// [`crate::policy`]) and writes their indices into [`Self::entries`]; returns how many.
    #[inline]
    pub fn select(&self, rng: &mut Rng, out: &mut [u32]) -> usize {
        let n = out.len();
        self.index
            .select(&self.degradation, &self.state, n, rng, out)
    }

    /// The degradation counter of PE `i` (selections since its last registration; always 0 for
    /// policies without degradation, which keep no counters).
    pub fn degradation(&self, i: usize) -> u32 {
        self.degradation
            .get(i)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// How the entries changed since the last snapshot, to carry the degradation counters over.
#[derive(Clone, Copy)]
enum Change<'a> {
    /// A PE was appended.
    Added,
    /// PE `i` re-registered: its counter restarts at 0 (RFC 5356 §5.2.2).
    Replaced(usize),
    /// PE `i` was removed by `swap_remove`.
    Removed(usize),
    /// Only entry data changed (e.g. home PR): counters stay.
    Kept,
    /// A batch: each PE's counter by its ID (0 for a PE not in the map).
    ById(&'a HashMap<PeId, u32, foldhash::fast::RandomState>),
}

/// Pools with at most this many PEs find a PE by scanning instead of through an ID map.
const SCAN_LIMIT: usize = 16;

/// A pool as its writer holds it. The PEs themselves live only in the published snapshot; a
/// change builds the next snapshot from the current one.
#[derive(Debug)]
pub(crate) struct Pool {
    pub handle: Arc<[u8]>,
    /// Policy type and transport shape fixed by the first PE (RFC 5352 §3.1 rule 1).
    pub policy_type: u32,
    pub shape: TransportShape,
    /// Writer-only state of each PE, parallel to the snapshot's entries.
    pub meta: Vec<PeMeta>,
    /// PE ID to position, kept only for pools larger than [`SCAN_LIMIT`]; smaller pools are
    /// scanned (a hash map costs ~200 bytes per pool, 20 per PE in a pool of 10).
    by_id: Option<HashMap<PeId, u32, foldhash::fast::RandomState>>,
    /// The writer's copy of the snapshot published in the shard's view.
    pub snapshot: Arc<PoolSnapshot>,
    /// During a batch of changes ([`Pool::stage`]): the entries as changed so far, published
    /// once by [`Pool::publish_staged`] instead of once per change.
    staged: Option<Box<Staged>>,
}

/// The entries of a pool in a batch of changes, not yet published.
#[derive(Debug)]
struct Staged {
    entries: Vec<PoolElementEntry>,
    /// PEs re-registered in the batch: their degradation counters restart (RFC 5356 §5.2.2).
    reset: Vec<PeId>,
}

impl Pool {
    pub fn new(handle: Arc<[u8]>, policy_type: u32, shape: TransportShape) -> Self {
        let snapshot = Arc::new(PoolSnapshot::new(
            Box::new([]),
            SelectionIndex::build(&[]),
            Box::new([]),
            SelectionState::default(),
        ));
        Self {
            handle,
            policy_type,
            shape,
            meta: Vec::new(),
            by_id: None,
            snapshot,
            staged: None,
        }
    }

    /// The current entries (the staged ones during a batch).
    pub fn entries(&self) -> &[PoolElementEntry] {
        match &self.staged {
            Some(staged) => &staged.entries,
            None => &self.snapshot.entries,
        }
    }

    /// Starts a batch: changes until [`Pool::publish_staged`] edit a private copy of the entries
    /// (one copy for the whole batch, not one per change); readers keep the last snapshot.
    /// Returns `false` if the pool was already staged.
    pub fn stage(&mut self) -> bool {
        if self.staged.is_some() {
            return false;
        }
        self.staged = Some(Box::new(Staged {
            entries: self.snapshot.entries.to_vec(),
            reset: Vec::new(),
        }));
        true
    }

    /// Ends a batch: publishes the staged entries in `view` (if any are left), degradation
    /// counters carried over by PE ID.
    pub fn publish_staged(&mut self, view: &ShardView) {
        let Some(staged) = self.staged.take() else {
            return;
        };
        let Staged { entries, reset } = *staged;
        if entries.is_empty() {
            return;
        }
        let counters: HashMap<PeId, u32, foldhash::fast::RandomState> =
            if crate::policy::uses_degradation(self.policy_type) {
                self.snapshot
                    .entries
                    .iter()
                    .zip(self.snapshot.degradation.iter())
                    .filter(|(e, _)| !reset.contains(&e.id()))
                    .map(|(e, c)| (e.id(), c.load(Ordering::Relaxed)))
                    .collect()
            } else {
                HashMap::default()
            };
        self.publish(entries, Change::ById(&counters), view);
    }

    pub fn slot(&self, id: PeId) -> Option<usize> {
        match &self.by_id {
            Some(map) => map.get(&id).map(|&i| i as usize),
            None => self.entries().iter().position(|e| e.id() == id),
        }
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Appends a PE and publishes in `view`.
    pub fn push(&mut self, entry: PoolElementEntry, meta: PeMeta, view: &ShardView) {
        if let Some(map) = &mut self.by_id {
            map.insert(entry.id(), self.meta.len() as u32);
        }
        if self.meta.len() < SCAN_LIMIT {
            // Small pools grow one PE at a time without slack capacity (memory per PE).
            self.meta.reserve_exact(1);
        }
        self.meta.push(meta);
        if let Some(staged) = &mut self.staged {
            staged.entries.push(entry);
        } else {
            let mut entries = Vec::with_capacity(self.meta.len());
            entries.extend_from_slice(self.entries());
            entries.push(entry);
            self.publish(entries, Change::Added, view);
        }
        if self.by_id.is_none() && self.len() > SCAN_LIMIT {
            self.by_id = Some(
                self.entries()
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (e.id(), i as u32))
                    .collect(),
            );
        }
    }

    /// Re-registration of PE `i` with unchanged attributes: new writer state, degradation counter
    /// back to 0 (RFC 5356 §5.2.2), nothing republished.
    pub fn reregister_unchanged(&mut self, i: usize, meta: PeMeta) {
        self.meta[i] = meta;
        if let Some(staged) = &mut self.staged {
            let id = staged.entries[i].id();
            staged.reset.push(id);
        } else if let Some(c) = self.snapshot.degradation.get(i) {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Replaces PE `i` (a re-registration) and publishes in `view`; returns the old writer state.
    pub fn replace(
        &mut self,
        i: usize,
        entry: PoolElementEntry,
        meta: PeMeta,
        view: &ShardView,
    ) -> PeMeta {
        let old = std::mem::replace(&mut self.meta[i], meta);
        if let Some(staged) = &mut self.staged {
            staged.reset.push(entry.id());
            staged.entries[i] = entry;
        } else {
            let mut entries = self.entries().to_vec();
            entries[i] = entry;
            self.publish(entries, Change::Replaced(i), view);
        }
        old
    }

    /// Removes PE `i` (the last one moves into its place) and publishes in `view`, unless the
    /// pool became empty (the caller drops it).
    pub fn swap_remove(&mut self, i: usize, view: &ShardView) -> (PoolElementEntry, PeMeta) {
        let meta = self.meta.swap_remove(i);
        if let Some(staged) = &mut self.staged {
            let entry = staged.entries.swap_remove(i);
            if let Some(map) = &mut self.by_id {
                map.remove(&entry.id());
                if let Some(moved) = staged.entries.get(i) {
                    map.insert(moved.id(), i as u32);
                }
            }
            return (entry, meta);
        }
        let mut entries = self.entries().to_vec();
        let entry = entries.swap_remove(i);
        if let Some(map) = &mut self.by_id {
            map.remove(&entry.id());
            if let Some(moved) = entries.get(i) {
                map.insert(moved.id(), i as u32);
            }
        }
        if !entries.is_empty() {
            self.publish(entries, Change::Removed(i), view);
        }
        (entry, meta)
    }

    /// Applies `f` to every entry; publishes in `view` if it changed any. Returns the changed
    /// entries.
    pub fn update_all(
        &mut self,
        mut f: impl FnMut(&mut PoolElementEntry) -> bool,
        view: &ShardView,
    ) -> Vec<PoolElementEntry> {
        if let Some(staged) = &mut self.staged {
            return staged
                .entries
                .iter_mut()
                .filter_map(|e| f(e).then(|| e.clone()))
                .collect();
        }
        let mut entries = self.entries().to_vec();
        let changed: Vec<PoolElementEntry> = entries
            .iter_mut()
            .filter_map(|e| f(e).then(|| e.clone()))
            .collect();
        if !changed.is_empty() {
            self.publish(entries, Change::Kept, view);
        }
        changed
    }

    /// Publishes `entries` in `view` as the next snapshot after `change`, carrying degradation
    /// counters over.
    fn publish(&mut self, entries: Vec<PoolElementEntry>, change: Change<'_>, view: &ShardView) {
        let old = &self.snapshot;
        let counter = |i: usize| {
            old.degradation
                .get(i)
                .map_or(0, |c| c.load(Ordering::Relaxed))
        };
        let n = entries.len();
        let counted = crate::policy::uses_degradation(self.policy_type);
        let degradation: Box<[AtomicU32]> = (0..if counted { n } else { 0 })
            .map(|i| {
                let v = match change {
                    Change::Added | Change::Kept => counter(i),
                    Change::Replaced(r) if r == i => 0,
                    Change::Replaced(_) => counter(i),
                    // The entry that moved into `r` was the old last one.
                    Change::Removed(r) if r == i => counter(n),
                    Change::Removed(_) => counter(i),
                    Change::ById(counters) => counters.get(&entries[i].id()).copied().unwrap_or(0),
                };
                AtomicU32::new(v)
            })
            .collect();
        let policies: Vec<Policy> = entries.iter().map(|e| e.registration.policy).collect();
        let index = SelectionIndex::build(&policies);
        self.snapshot = Arc::new(PoolSnapshot::new(
            entries.into_boxed_slice(),
            index,
            degradation,
            SelectionState::with_cursor(old.state.cursor()),
        ));
        view.publish(&self.handle, &self.snapshot);
    }
}
