//! Keep-alive monitoring of the PEs registered over this worker's associations (RFC 5352
//! §3.4-3.5, RSPLIB's keep-alive cycle): per PE, when its next keep-alive is due or, while an ack
//! is awaited, when that ack is overdue.
//!
//! Compact, since a carrier's registrar monitors millions of PEs: one map per association from
//! (PE ID, interned pool handle) to a single word of state (an [`IdMap`], 20 bytes a slot, all
//! in 4-byte halves so that nothing is padding, and about 29 per PE), and one sweep
//! timer per association instead of a timer per PE. The worker sweeps an association every
//! [`sweep_period`]; a keep-alive or a timeout is acted on at the first sweep at or after its
//! time, so up to one period late.

use std::sync::Arc;

use rserpool_handlespace::idmap::{IdKey, IdMap};
use rserpool_handlespace::{AssociationId, FastMap, Millis, PeId};

/// How often an association with monitored PEs is swept: an eighth of the shorter of the
/// keep-alive interval and the ack timeout (at least 1 ms), so that keep-alives and timeouts
/// are at most 12.5 % late.
pub(super) fn sweep_period(interval: Millis, timeout: Millis) -> Millis {
    (interval.min(timeout) / 8).max(1)
}

/// Most keep-alives and timeouts one sweep of an association acts on; what is left waits for the
/// next millisecond's sweep, so that an association of tens of thousands of PEs does not put a
/// burst of megabytes in one loop turn's output (which the output buffers would keep).
pub(super) const SWEEP_BUDGET: usize = 1024;

/// When an association needs its next sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NextSweep {
    /// More is due now (the sweep's budget ran out): in a millisecond.
    Soon,
    /// After the sweep period.
    Later,
    /// Never: no PE is monitored on it any more.
    Done,
}

/// A monitored PE: its ID (in two halves, low first, so that the key takes 12 bytes) and its
/// pool handle's index in [`Handles`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    pe: [u32; 2],
    handle: u32,
}

impl Key {
    fn new(pe_id: PeId, handle: u32) -> Self {
        Self {
            pe: [pe_id.0 as u32, (pe_id.0 >> 32) as u32],
            handle,
        }
    }

    fn pe_id(self) -> PeId {
        PeId(u64::from(self.pe[0]) | (u64::from(self.pe[1]) << 32))
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pe_id().hash(state);
        self.handle.hash(state);
    }
}

impl IdKey for Key {
    const EMPTY: Self = Self {
        pe: [0, 0],
        handle: 0,
    };
}

/// The top bit: a keep-alive was sent and its ack is awaited; the next: the shard owner counted
/// unreachable reports of the PE since its last ack; the other bits: the time (ms) the next
/// keep-alive is due or, while awaiting, the ack is overdue. Kept in two halves, low first, so
/// that a map slot (key and state) is 4-byte aligned: 20 bytes instead of 24.
#[derive(Clone, Copy, Debug, Default)]
struct State([u32; 2]);

impl State {
    const AWAITING: u64 = 1 << 63;
    const REPORTED: u64 = 1 << 62;
    const TIME: u64 = Self::REPORTED - 1;

    fn from_bits(bits: u64) -> Self {
        Self([bits as u32, (bits >> 32) as u32])
    }

    fn bits(self) -> u64 {
        u64::from(self.0[0]) | (u64::from(self.0[1]) << 32)
    }

    fn quiet_until(self, at: Millis) -> Self {
        Self::from_bits((at & Self::TIME) | (self.bits() & Self::REPORTED))
    }

    fn awaiting_until(self, at: Millis) -> Self {
        Self::from_bits((at & Self::TIME) | (self.bits() & Self::REPORTED) | Self::AWAITING)
    }

    fn reported_too(self) -> Self {
        Self::from_bits(self.bits() | Self::REPORTED)
    }

    fn at(self) -> Millis {
        self.bits() & Self::TIME
    }

    fn awaiting(self) -> bool {
        self.bits() & Self::AWAITING != 0
    }

    fn reported(self) -> bool {
        self.bits() & Self::REPORTED != 0
    }
}

/// The monitored PEs of one association.
#[derive(Debug, Default)]
struct Monitored {
    pes: IdMap<Key, State>,
    /// A sweep timer is armed (kept while it is, even without PEs, so that one timer runs per
    /// association).
    sweeping: bool,
}

/// The pool handles of monitored PEs, each stored once per worker.
#[derive(Debug, Default)]
struct Handles {
    /// Handle to (index, PEs using it).
    ids: FastMap<Arc<[u8]>, (u32, u32)>,
    by_index: Vec<Option<Arc<[u8]>>>,
    free: Vec<u32>,
}

impl Handles {
    fn find(&self, handle: &[u8]) -> Option<u32> {
        self.ids.get(handle).map(|&(i, _)| i)
    }

    /// The handle's index, with one more user.
    fn acquire(&mut self, handle: &[u8]) -> u32 {
        if let Some((i, users)) = self.ids.get_mut(handle) {
            *users += 1;
            return *i;
        }
        let shared: Arc<[u8]> = handle.into();
        let i = match self.free.pop() {
            Some(i) => {
                self.by_index[i as usize] = Some(Arc::clone(&shared));
                i
            }
            None => {
                self.by_index.push(Some(Arc::clone(&shared)));
                (self.by_index.len() - 1) as u32
            }
        };
        self.ids.insert(shared, (i, 1));
        i
    }

    /// One user less of handle `i`; forgotten at the last.
    fn release(&mut self, i: u32) {
        let Some(handle) = self.by_index.get(i as usize).cloned().flatten() else {
            return;
        };
        if let Some((_, users)) = self.ids.get_mut(&handle[..]) {
            *users -= 1;
            if *users == 0 {
                self.ids.remove(&handle[..]);
                self.by_index[i as usize] = None;
                self.free.push(i);
            }
        }
    }

    fn get(&self, i: u32) -> Arc<[u8]> {
        self.by_index[i as usize]
            .clone()
            .expect("a monitored PE's handle is interned")
    }
}

/// What a sweep found due.
#[derive(Debug)]
pub(super) enum Due {
    /// Send this PE a keep-alive (its ack is now awaited).
    KeepAlive(Arc<[u8]>, PeId),
    /// This PE did not ack in time: it is no longer monitored; remove it.
    TimedOut(Arc<[u8]>, PeId),
}

/// The keep-alive state of every PE registered over this worker's associations.
#[derive(Debug, Default)]
pub(super) struct Monitor {
    associations: FastMap<AssociationId, Monitored>,
    handles: Handles,
    len: usize,
}

impl Monitor {
    fn key(&self, pool_handle: &[u8], pe_id: PeId) -> Option<Key> {
        Some(Key::new(pe_id, self.handles.find(pool_handle)?))
    }

    /// Monitors a PE registered over `association`, or starts its cycle over if monitored
    /// already (a re-registration is a sign of life): no keep-alive before `quiet_until`.
    /// Returns `true` if the association has no sweep timer armed (the caller arms one; the
    /// association counts as swept from now on).
    pub(super) fn track(
        &mut self,
        association: AssociationId,
        pool_handle: &[u8],
        pe_id: PeId,
        quiet_until: Millis,
    ) -> bool {
        if let Some(key) = self.key(pool_handle, pe_id)
            && let Some(state) = self
                .associations
                .get_mut(&association)
                .and_then(|m| m.pes.get_mut(&key))
        {
            *state = state.quiet_until(quiet_until);
            return false;
        }
        let key = Key::new(pe_id, self.handles.acquire(pool_handle));
        let monitored = self.associations.entry(association).or_default();
        monitored
            .pes
            .insert(key, State::default().quiet_until(quiet_until));
        self.len += 1;
        !std::mem::replace(&mut monitored.sweeping, true)
    }

    /// Stops monitoring a PE; returns whether it was monitored.
    pub(super) fn untrack(
        &mut self,
        association: AssociationId,
        pool_handle: &[u8],
        pe_id: PeId,
    ) -> bool {
        let Some(key) = self.key(pool_handle, pe_id) else {
            return false;
        };
        let Some(monitored) = self.associations.get_mut(&association) else {
            return false;
        };
        if monitored.pes.remove(&key).is_none() {
            return false;
        }
        if monitored.pes.is_empty() && !monitored.sweeping {
            self.associations.remove(&association);
        }
        self.handles.release(key.handle);
        self.len -= 1;
        true
    }

    /// Whether a PE is monitored.
    pub(super) fn contains(
        &self,
        association: AssociationId,
        pool_handle: &[u8],
        pe_id: PeId,
    ) -> bool {
        self.key(pool_handle, pe_id).is_some_and(|key| {
            self.associations
                .get(&association)
                .is_some_and(|m| m.pes.get(&key).is_some())
        })
    }

    /// PEs monitored on `association`.
    pub(super) fn count(&self, association: AssociationId) -> usize {
        self.associations
            .get(&association)
            .map_or(0, |m| m.pes.len())
    }

    /// PEs monitored on all associations.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// RFC 5352 §3.4: the PE acked; its next keep-alive is due at `next`. Returns `None` if
    /// the PE is not monitored, else whether unreachable reports were counted since its last
    /// ack (cleared now: the caller tells the shard owner).
    pub(super) fn ack(
        &mut self,
        association: AssociationId,
        pool_handle: &[u8],
        pe_id: PeId,
        next: Millis,
    ) -> Option<bool> {
        let key = self.key(pool_handle, pe_id)?;
        let state = self.associations.get_mut(&association)?.pes.get_mut(&key)?;
        let reported = state.reported();
        *state = State::default().quiet_until(next);
        Some(reported)
    }

    /// The shard owner counted an unreachable report of a monitored PE: its next ack is passed
    /// on ([`Self::ack`]).
    pub(super) fn mark_reported(
        &mut self,
        association: AssociationId,
        pool_handle: &[u8],
        pe_id: PeId,
    ) {
        if let Some(key) = self.key(pool_handle, pe_id)
            && let Some(state) = self
                .associations
                .get_mut(&association)
                .and_then(|m| m.pes.get_mut(&key))
        {
            *state = state.reported_too();
        }
    }

    /// Visits the PEs of `association`: a PE whose keep-alive is due at `now` gets one (its ack
    /// is then awaited until `now + timeout`), a PE whose ack is overdue is no longer monitored;
    /// at most `budget` of them. Returns what is due and when to sweep again.
    pub(super) fn sweep(
        &mut self,
        association: AssociationId,
        now: Millis,
        timeout: Millis,
        budget: usize,
    ) -> (Vec<Due>, NextSweep) {
        let Some(monitored) = self.associations.get_mut(&association) else {
            return (Vec::new(), NextSweep::Done);
        };
        let mut due = Vec::new();
        let mut gone = Vec::new();
        let mut more = false;
        for (key, state) in monitored.pes.iter_mut() {
            if state.at() > now {
                continue;
            }
            if due.len() + gone.len() == budget {
                more = true;
                break;
            }
            if state.awaiting() {
                gone.push(*key);
                continue;
            }
            *state = state.awaiting_until(now + timeout);
            due.push(Due::KeepAlive(self.handles.get(key.handle), key.pe_id()));
        }
        for key in &gone {
            monitored.pes.remove(key);
        }
        let next = if monitored.pes.is_empty() {
            self.associations.remove(&association);
            NextSweep::Done
        } else if more {
            NextSweep::Soon
        } else {
            NextSweep::Later
        };
        for key in gone {
            due.push(Due::TimedOut(self.handles.get(key.handle), key.pe_id()));
            self.handles.release(key.handle);
            self.len -= 1;
        }
        (due, next)
    }

    /// Stops monitoring every PE of a closed association and returns them.
    pub(super) fn close(&mut self, association: AssociationId) -> Vec<(Arc<[u8]>, PeId)> {
        let Some(monitored) = self.associations.remove(&association) else {
            return Vec::new();
        };
        let mut pes = Vec::with_capacity(monitored.pes.len());
        for (&key, _) in monitored.pes.iter() {
            pes.push((self.handles.get(key.handle), key.pe_id()));
            self.handles.release(key.handle);
            self.len -= 1;
        }
        pes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u64) -> AssociationId {
        AssociationId::new(n).unwrap()
    }

    /// A monitored PE's map slot: 20 bytes, nothing padding (about 29 bytes per PE at the
    /// map's fill).
    #[test]
    fn a_slot_takes_20_bytes() {
        assert_eq!(std::mem::size_of::<(Key, State)>(), 20);
    }

    #[test]
    fn the_cycle_sends_when_due_and_times_out_without_an_ack() {
        let mut m = Monitor::default();
        assert!(m.track(a(1), b"pool", PeId(7), 100));
        assert!(
            !m.track(a(1), b"other", PeId(8), 100),
            "the sweep is armed already"
        );
        assert_eq!(m.len(), 2);
        let (due, next) = m.sweep(a(1), 99, 50, SWEEP_BUDGET);
        assert!(due.is_empty() && next == NextSweep::Later);
        // A budget of one: one keep-alive now, the other at the next sweep, soon.
        let (mut due, next) = m.sweep(a(1), 100, 50, 1);
        assert_eq!((due.len(), next), (1, NextSweep::Soon));
        let (rest, next) = m.sweep(a(1), 100, 50, 1);
        assert_eq!((rest.len(), next), (1, NextSweep::Later));
        due.extend(rest);
        assert!(due.iter().all(|d| matches!(d, Due::KeepAlive(..))));
        // PE 7 acks, PE 8 does not.
        assert_eq!(m.ack(a(1), b"pool", PeId(7), 1_000), Some(false));
        let (due, next) = m.sweep(a(1), 150, 50, SWEEP_BUDGET);
        assert_eq!(next, NextSweep::Later);
        assert!(
            matches!(&due[..], [Due::TimedOut(h, PeId(8))] if &h[..] == b"other"),
            "{due:?}"
        );
        assert!(!m.contains(a(1), b"other", PeId(8)));
        assert!(m.contains(a(1), b"pool", PeId(7)));
        assert_eq!((m.len(), m.count(a(1))), (1, 1));
    }

    #[test]
    fn a_re_registration_restarts_the_cycle_and_closing_returns_every_pe() {
        let mut m = Monitor::default();
        m.track(a(1), b"pool", PeId(7), 100);
        m.sweep(a(1), 100, 50, SWEEP_BUDGET);
        // Re-registered while the ack was awaited: quiet again, no timeout.
        assert!(!m.track(a(1), b"pool", PeId(7), 500));
        assert!(m.sweep(a(1), 200, 50, SWEEP_BUDGET).0.is_empty());
        m.track(a(2), b"pool", PeId(7), 100);
        assert_eq!(m.ack(a(2), b"pool", PeId(9), 0), None, "unknown PE");
        // A report makes the next ack count, once.
        m.mark_reported(a(2), b"pool", PeId(7));
        assert_eq!(m.ack(a(2), b"pool", PeId(7), 0), Some(true));
        assert_eq!(m.ack(a(2), b"pool", PeId(7), 0), Some(false));
        let mut closed = m.close(a(1));
        closed.extend(m.close(a(2)));
        assert_eq!(closed.len(), 2);
        assert_eq!(m.len(), 0);
        assert!(
            m.handles.ids.is_empty(),
            "handles forgotten with their last PE"
        );
        assert!(!m.untrack(a(1), b"pool", PeId(7)));
    }

    #[test]
    fn one_sweep_timer_per_association_while_pes_come_and_go() {
        let mut m = Monitor::default();
        assert!(m.track(a(1), b"pool", PeId(7), 100));
        assert!(m.untrack(a(1), b"pool", PeId(7)));
        // The armed sweep still runs: a new PE does not ask for a second timer.
        assert!(!m.track(a(1), b"pool", PeId(8), 100));
        assert!(m.untrack(a(1), b"pool", PeId(8)));
        let (due, next) = m.sweep(a(1), 50, 10, SWEEP_BUDGET);
        assert!(
            due.is_empty() && next == NextSweep::Done,
            "no PEs: the sweeps end"
        );
        assert!(
            m.track(a(1), b"pool", PeId(9), 100),
            "a new sweep is needed"
        );
    }
}
