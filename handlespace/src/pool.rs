//! One pool: its PEs as the single writer holds them, and the immutable snapshot that handle
//! resolutions read (RFC 5352 §3.1 pool rules, RFC 5356 selection through [`crate::policy`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arc_swap::ArcSwap;

use rserpool_protocol::{PeId, Policy};

use crate::entry::{Millis, PoolElementEntry, TransportShape};
use crate::policy::{SelectionIndex, SelectionState};
use crate::rng::Rng;
use crate::timer::TimerId;

/// What the writer keeps per PE beside the published entry: the fields that change without a
/// re-registration (refresh time, expiry timer, reports), so that refreshing never copies the entry.
#[derive(Debug)]
pub(crate) struct PeSlot {
    pub entry: Arc<PoolElementEntry>,
    pub last_refresh: Millis,
    pub expiry: Option<TimerId>,
    pub unreachable_reports: u32,
}

/// The published, immutable state of a pool that handle resolutions read without locks. Selection
/// state that a resolution advances (round-robin cursor, degradation counters) is atomic.
#[derive(Debug)]
pub struct PoolSnapshot {
    entries: Box<[Arc<PoolElementEntry>]>,
    policies: Box<[Policy]>,
    index: SelectionIndex,
    degradation: Box<[AtomicU32]>,
    state: Arc<SelectionState>,
}

impl PoolSnapshot {
    /// The pool's PEs, in the writer's slot order.
    pub fn entries(&self) -> &[Arc<PoolElementEntry>] {
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
    pub fn select(&self, rng: &mut Rng, out: &mut [u32]) -> usize {
        let n = out.len();
        crate::policy::select(
            &self.index,
            &self.policies,
            &self.degradation,
            &self.state,
            n,
            rng,
            out,
        )
    }

    /// The degradation counter of PE `i` (selections since its last registration).
    pub fn degradation(&self, i: usize) -> u32 {
        self.degradation[i].load(Ordering::Relaxed)
    }
}

/// Where a pool's current snapshot is published: readers on any thread load it without locks
/// (RCU through `arc-swap`), the pool's writer replaces it.
#[derive(Debug)]
pub struct PoolCell(ArcSwap<PoolSnapshot>);

impl PoolCell {
    /// The current snapshot.
    pub fn load(&self) -> Arc<PoolSnapshot> {
        self.0.load_full()
    }
}

/// How the slots changed since the last snapshot, to carry the degradation counters over.
pub(crate) enum Change {
    /// A PE was appended.
    Added,
    /// PE `i` re-registered: its counter restarts at 0 (RFC 5356 §5.2.2).
    Replaced(usize),
    /// PE `i` was removed by `swap_remove`.
    Removed(usize),
    /// Only entry data changed (e.g. home PR): counters stay.
    Kept,
}

/// A pool as its writer holds it.
#[derive(Debug)]
pub(crate) struct Pool {
    pub handle: Arc<[u8]>,
    /// Policy type and transport shape fixed by the first PE (RFC 5352 §3.1 rule 1).
    pub policy_type: u32,
    pub shape: TransportShape,
    pub slots: Vec<PeSlot>,
    pub by_id: HashMap<PeId, u32, foldhash::fast::RandomState>,
    /// The writer's copy of the published snapshot.
    pub snapshot: Arc<PoolSnapshot>,
    /// Where readers find it.
    pub cell: Arc<PoolCell>,
}

impl Pool {
    pub fn new(handle: Arc<[u8]>, policy_type: u32, shape: TransportShape) -> Self {
        let snapshot = Arc::new(PoolSnapshot {
            entries: Box::new([]),
            policies: Box::new([]),
            index: SelectionIndex::build(&[]),
            degradation: Box::new([]),
            state: Arc::new(SelectionState::default()),
        });
        Self {
            handle,
            policy_type,
            shape,
            slots: Vec::new(),
            by_id: HashMap::default(),
            cell: Arc::new(PoolCell(ArcSwap::new(Arc::clone(&snapshot)))),
            snapshot,
        }
    }

    pub fn slot(&self, id: PeId) -> Option<usize> {
        self.by_id.get(&id).map(|&i| i as usize)
    }

    /// Adds a slot and indexes it.
    pub fn push(&mut self, slot: PeSlot) {
        self.by_id.insert(slot.entry.id(), self.slots.len() as u32);
        self.slots.push(slot);
    }

    /// Removes slot `i` (the last slot moves into its place).
    pub fn swap_remove(&mut self, i: usize) -> PeSlot {
        let slot = self.slots.swap_remove(i);
        self.by_id.remove(&slot.entry.id());
        if let Some(moved) = self.slots.get(i) {
            self.by_id.insert(moved.entry.id(), i as u32);
        }
        slot
    }

    /// Publishes a new snapshot after `change`, carrying degradation counters over.
    pub fn publish(&mut self, change: Change) {
        let old = &self.snapshot;
        let counter = |i: usize| {
            old.degradation
                .get(i)
                .map_or(0, |c| c.load(Ordering::Relaxed))
        };
        let n = self.slots.len();
        let degradation: Box<[AtomicU32]> = (0..n)
            .map(|i| {
                let v = match change {
                    Change::Added | Change::Kept => counter(i),
                    Change::Replaced(r) if r == i => 0,
                    Change::Replaced(_) => counter(i),
                    // The slot that moved into `r` was the old last one.
                    Change::Removed(r) if r == i => counter(n),
                    Change::Removed(_) => counter(i),
                };
                AtomicU32::new(v)
            })
            .collect();
        let entries: Box<[Arc<PoolElementEntry>]> =
            self.slots.iter().map(|s| Arc::clone(&s.entry)).collect();
        let policies: Box<[Policy]> = entries.iter().map(|e| e.registration.policy).collect();
        let index = SelectionIndex::build(&policies);
        self.snapshot = Arc::new(PoolSnapshot {
            entries,
            policies,
            index,
            degradation,
            state: Arc::clone(&old.state),
        });
        self.cell.0.store(Arc::clone(&self.snapshot));
    }
}
