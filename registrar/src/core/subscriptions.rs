//! ASAP subscriptions (RFC 5352 §2.2.5-6): a PU sets the S bit on ASAP_HANDLE_RESOLUTION; an
//! accepting PR answers with the A bit set and, for the life of the association, pushes an
//! ASAP_HANDLE_RESOLUTION_RESPONSE (A bit set) whenever the pool changes.
//!
//! Two sides, each in the worker that owns the state (design §3):
//! - the **subscriber side**, in the association's worker: per pool its local subscribers, per
//!   association the pools it subscribed. A push resolves the pool through the worker's own read
//!   side, exactly as a resolution, so no response bytes cross workers;
//! - the **owner side**, in the worker whose shard holds the pool: which workers watch it. A
//!   worker whose first local subscriber of a pool appears sends it
//!   [`SubscriptionNote::Watch`] with the serial of the snapshot it answered from (0: no pool);
//!   the owner compares it with the pool now and notifies at once if it changed in between, so
//!   no change falls between the answer and the watch. The last local subscriber gone,
//!   [`SubscriptionNote::Unwatch`].
//!
//! The shard notes the changes of watched pools ([`rserpool_handlespace::Shard::watch`]; one
//! branch per change while nothing is watched); the owner drains them after publishing
//! ([`Worker::publish_turn`]) and sends [`SubscriptionNote::PoolChanged`] to each watching
//! worker (to itself directly), which pushes to its subscribers at most once per
//! `subscriptions.min_push_interval_ms`: a change within the interval after a push schedules one
//! push at its end, however many changes follow.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rserpool_handlespace::{AssociationId, FastMap, Millis, PinnedReader};
use rserpool_protocol::{Generation, PoolHandle};

use super::counters::SubscriptionRefusal;
use super::{CoreTimer, Output, Target, Worker};

/// Limits and pacing of subscriptions (`[subscriptions]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriptionConfig {
    /// Most pools one association may subscribe to (0: subscriptions are off).
    pub max_per_association: usize,
    /// Most subscriptions over all associations and workers (0: subscriptions are off).
    pub max_total: usize,
    /// Least time between two pushes to one subscriber (0: push every change at once).
    pub min_push_interval: Millis,
}

impl Default for SubscriptionConfig {
    fn default() -> Self {
        Self {
            max_per_association: 64,
            max_total: 100_000,
            min_push_interval: 10,
        }
    }
}

/// Subscription bookkeeping between workers ([`super::Forward::Subscription`]).
#[derive(Debug)]
pub enum SubscriptionNote {
    /// `worker` has subscribers of the pool now; it answered from the snapshot with serial
    /// `seen` (0: no pool). To the pool's shard owner.
    Watch {
        /// The pool.
        pool_handle: Arc<[u8]>,
        /// The subscribers' worker.
        worker: usize,
        /// The serial of the snapshot the subscription was answered from.
        seen: u64,
    },
    /// `worker` has no subscriber of the pool any more. To the pool's shard owner.
    Unwatch {
        /// The pool.
        pool_handle: Arc<[u8]>,
        /// The worker.
        worker: usize,
    },
    /// The pool changed (published). To each watching worker.
    PoolChanged {
        /// The pool.
        pool_handle: Arc<[u8]>,
    },
}

/// The count of subscriptions over every worker of a PR, bounded by `max_total`.
#[derive(Debug, Default)]
pub(super) struct TotalSubscriptions(AtomicUsize);

impl TotalSubscriptions {
    /// Takes one slot if fewer than `max` are taken.
    fn take(&self, max: usize) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }
}

/// One association's subscription to one pool.
#[derive(Debug)]
struct Subscriber {
    association: AssociationId,
    generation: Generation,
    /// The item count of its request (RFC 5352 §3.3), used for every push.
    items: Option<u32>,
    /// When it was last answered or pushed to.
    last_push: Millis,
    /// A push waits for the end of its interval ([`Subscriptions::deferred`]).
    pending: bool,
}

/// A push waiting for the end of its subscriber's interval: the pool and the association.
type Deferred = (Arc<[u8]>, AssociationId);

/// A worker's subscriptions: the subscriber side of its associations and the owner side of its
/// shard's pools.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    /// Subscriber side: pool handle to the local subscribers.
    by_pool: FastMap<Arc<[u8]>, Vec<Subscriber>>,
    /// Subscriber side: association to the pools it subscribed (cleanup on close).
    by_association: FastMap<AssociationId, Vec<Arc<[u8]>>>,
    /// Subscriber side: local subscriptions.
    count: usize,
    /// Subscriber side: pushes waiting for their interval's end, by (due time, sequence).
    deferred: BTreeMap<(Millis, u64), Deferred>,
    sequence: u64,
    /// Owner side: pool handle to the workers watching it.
    watchers: FastMap<Arc<[u8]>, Vec<usize>>,
    /// Owner side: a watcher to notify after the next publication (it watched after a change).
    notes: Vec<(Arc<[u8]>, usize)>,
}

impl Subscriptions {
    /// Local subscriptions.
    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// Owner-side notifications wait for the next publication.
    pub(super) fn has_notes(&self) -> bool {
        !self.notes.is_empty()
    }

    fn is_subscribed(&self, association: AssociationId, pool_handle: &[u8]) -> bool {
        self.by_pool
            .get(pool_handle)
            .is_some_and(|l| l.iter().any(|s| s.association == association))
    }

    fn of_association(&self, association: AssociationId) -> usize {
        self.by_association.get(&association).map_or(0, Vec::len)
    }
}

impl Worker {
    /// RFC 5352 §2.2.5: whether to accept the S bit of `association`'s resolution of
    /// `pool_handle`: a subscription it holds already is renewed; a new one within the limits
    /// per association and in total takes a slot of the total; beyond them it is refused
    /// (counted) and answered as a plain resolution (A bit clear).
    pub(super) fn admit_subscription(
        &mut self,
        association: AssociationId,
        pool_handle: &[u8],
    ) -> bool {
        if self.subscriptions.is_subscribed(association, pool_handle) {
            return true;
        }
        let limits = self.config.subscriptions;
        let refusal =
            if self.subscriptions.of_association(association) >= limits.max_per_association {
                Some(SubscriptionRefusal::PerAssociation)
            } else if !self.pr.subscriptions.take(limits.max_total) {
                Some(SubscriptionRefusal::Total)
            } else {
                None
            };
        if let Some(reason) = refusal {
            self.metrics.subscription_refused(reason);
            tracing::debug!(
                ?association,
                limit = reason.label(),
                "subscription refused by a [subscriptions] limit; answered without the A bit"
            );
            return false;
        }
        true
    }

    /// Records a subscription [`Self::admit_subscription`] accepted, answered from the
    /// snapshot with serial `seen` (0: no pool; a PU may watch for a pool to appear). The same
    /// association subscribing again to the same pool keeps one subscription, with the new item
    /// count. The first local subscriber of a pool makes this worker watch it at the owner.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_subscription(
        &mut self,
        association: AssociationId,
        generation: Generation,
        pool_handle: &[u8],
        items: Option<u32>,
        seen: u64,
        now: Millis,
        out: &mut Output,
    ) {
        let subs = &mut self.subscriptions;
        let subscriber = Subscriber {
            association,
            generation,
            items,
            last_push: now,
            pending: false,
        };
        let (handle, first) = match subs.by_pool.get_key_value(pool_handle) {
            Some((handle, _)) => (Arc::clone(handle), false),
            None => (Arc::<[u8]>::from(pool_handle), true),
        };
        let list = subs.by_pool.entry(Arc::clone(&handle)).or_default();
        if let Some(s) = list.iter_mut().find(|s| s.association == association) {
            // A renewal: the answer just sent counts as a push.
            s.items = items;
            s.last_push = now;
            return;
        }
        list.push(subscriber);
        subs.by_association
            .entry(association)
            .or_default()
            .push(Arc::clone(&handle));
        subs.count += 1;
        self.metrics.subscription_accepted();
        self.metrics.set_subscriptions(subs.count as u64);
        if first {
            let note = SubscriptionNote::Watch {
                pool_handle: handle,
                worker: self.index,
                seen,
            };
            self.route(pool_handle, note, now, out);
        }
    }

    /// Ends every subscription of `association` (closed, aborted, timed out): no push after
    /// this, and the counts go down.
    pub(super) fn drop_subscriptions(
        &mut self,
        association: AssociationId,
        now: Millis,
        out: &mut Output,
    ) {
        let Some(pools) = self.subscriptions.by_association.remove(&association) else {
            return;
        };
        self.subscriptions.count -= pools.len();
        self.pr.subscriptions.release(pools.len());
        self.metrics
            .set_subscriptions(self.subscriptions.count as u64);
        for pool in pools {
            let by_pool = &mut self.subscriptions.by_pool;
            let Some(list) = by_pool.get_mut(&pool) else {
                continue;
            };
            list.retain(|s| s.association != association);
            if list.is_empty() {
                by_pool.remove(&pool);
                let note = SubscriptionNote::Unwatch {
                    pool_handle: Arc::clone(&pool),
                    worker: self.index,
                };
                self.route(&pool, note, now, out);
            }
        }
    }

    /// Handles a [`SubscriptionNote`] from another worker (or this one).
    pub(super) fn on_subscription_note(
        &mut self,
        note: SubscriptionNote,
        now: Millis,
        out: &mut Output,
    ) {
        match note {
            SubscriptionNote::Watch {
                pool_handle,
                worker,
                seen,
            } => {
                let list = self
                    .subscriptions
                    .watchers
                    .entry(Arc::clone(&pool_handle))
                    .or_default();
                if list.is_empty() {
                    self.shard.watch(&pool_handle);
                }
                if !list.contains(&worker) {
                    list.push(worker);
                }
                // A change between the subscriber's answer and this watch: notify after the
                // next publication, which also publishes a change still in this turn's batch.
                if self.shard.changed_since(&pool_handle, seen) {
                    self.subscriptions.notes.push((pool_handle, worker));
                }
            }
            SubscriptionNote::Unwatch {
                pool_handle,
                worker,
            } => {
                let watchers = &mut self.subscriptions.watchers;
                if let Some(list) = watchers.get_mut(&pool_handle) {
                    list.retain(|&w| w != worker);
                    if list.is_empty() {
                        watchers.remove(&pool_handle);
                        self.shard.unwatch(&pool_handle);
                    }
                }
            }
            SubscriptionNote::PoolChanged { pool_handle } => {
                self.pool_changed(pool_handle, now, out);
            }
        }
    }

    /// Owner side, after the shard published: tells each worker watching a changed pool (and
    /// each that watched after a change). Nothing to do costs one check.
    pub(super) fn notify_watchers(&mut self, now: Millis, out: &mut Output) {
        if !self.shard.has_watched_changes() && !self.subscriptions.has_notes() {
            return;
        }
        self.shard.publish_batch();
        let mut notes = std::mem::take(&mut self.subscriptions.notes);
        for pool in self.shard.take_watched_changes() {
            if let Some(workers) = self.subscriptions.watchers.get(&pool) {
                notes.extend(workers.iter().map(|&w| (Arc::clone(&pool), w)));
            }
        }
        notes.sort_unstable();
        notes.dedup();
        for (pool_handle, worker) in notes {
            self.send_to(
                worker,
                SubscriptionNote::PoolChanged { pool_handle },
                now,
                out,
            );
        }
    }

    /// Subscriber side: RFC 5352 §2.2.6, the pool changed: push to each local subscriber now, or
    /// at the end of its interval if it was pushed to within the last
    /// `subscriptions.min_push_interval_ms` (one push, however many changes).
    fn pool_changed(&mut self, handle: Arc<[u8]>, now: Millis, out: &mut Output) {
        let interval = self.config.subscriptions.min_push_interval;
        let subs = &mut self.subscriptions;
        let Some(list) = subs.by_pool.get_mut(&handle[..]) else {
            // Its last subscriber left while the news was on its way.
            return;
        };
        let mut due = Vec::new();
        let mut deferred = Vec::new();
        for s in list.iter_mut().filter(|s| !s.pending) {
            let at = s.last_push.saturating_add(interval);
            if now >= at {
                s.last_push = now;
                due.push((s.association, s.generation, s.items));
            } else {
                s.pending = true;
                deferred.push((at, s.association));
            }
        }
        for (at, association) in deferred {
            subs.sequence += 1;
            subs.deferred
                .insert((at, subs.sequence), (Arc::clone(&handle), association));
            self.timers.arm(at, CoreTimer::SubscriptionPush);
        }
        if !due.is_empty() {
            let reader = self.reader.clone();
            let reads = reader.pin();
            for (association, generation, items) in due {
                self.push(&reads, &handle, association, generation, items, out);
            }
        }
    }

    /// Subscriber side: the pushes whose interval ended by `now`.
    pub(super) fn push_deferred(&mut self, now: Millis, out: &mut Output) {
        let mut due = Vec::new();
        while let Some(entry) = self.subscriptions.deferred.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (pool, association) = entry.remove();
            // Gone if the association closed meanwhile.
            if let Some(s) = self
                .subscriptions
                .by_pool
                .get_mut(&pool)
                .and_then(|l| l.iter_mut().find(|s| s.association == association))
                && s.pending
            {
                s.pending = false;
                s.last_push = now;
                due.push((pool, association, s.generation, s.items));
            }
        }
        if due.is_empty() {
            return;
        }
        let reader = self.reader.clone();
        let reads = reader.pin();
        for (pool, association, generation, items) in due {
            self.push(&reads, &pool, association, generation, items, out);
        }
    }

    /// RFC 5352 §2.2.6: an unsolicited ASAP_HANDLE_RESOLUTION_RESPONSE with the A bit set and
    /// the pool's current selection for the subscriber's item count, exactly as a resolution;
    /// a pool that went away is answered with cause 0x9 (Unknown Pool Handle) and the
    /// subscription stays.
    fn push(
        &mut self,
        reads: &PinnedReader<'_>,
        pool_handle: &[u8],
        association: AssociationId,
        generation: Generation,
        items: Option<u32>,
        out: &mut Output,
    ) {
        self.metrics.subscription_pushed();
        let target = Target::Association(association);
        self.answer(
            reads,
            target,
            generation,
            PoolHandle(pool_handle),
            items,
            true,
            out,
        );
    }
}
