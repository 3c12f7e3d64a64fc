//! Per-shard timer wheel: owns the registration-expiry and keep-alive deadlines of a shard's pool
//! elements.
//!
//! [`TimerWheel`] is a hierarchical timing wheel (11 levels of 64 slots, level `L` slots spanning
//! `64^L` ticks, so every `u64` deadline fits without an overflow list). It never reads a clock:
//! the caller passes times in as [`Millis`] (milliseconds since an epoch of its choosing) to
//! [`TimerWheel::arm`], [`TimerWheel::rearm`] and [`TimerWheel::expire`], and sleeps until
//! [`TimerWheel::next_deadline`].
//!
//! # Design
//!
//! * Timers live in a slab (`Vec`) of entries addressed by `u32` index; freed entries are chained
//!   into a free list and reused, so after warm-up arming does not allocate. Each entry is
//!   24 bytes plus the payload `T`, aligned to 4 bytes (the deadline is kept in two halves), so
//!   that a payload of 4-byte fields packs in without padding.
//! * Every slot is the head of an intrusive doubly linked list threaded through the slab by index,
//!   so [`arm`](TimerWheel::arm), [`cancel`](TimerWheel::cancel) and
//!   [`rearm`](TimerWheel::rearm) are O(1).
//! * A [`TimerId`] carries the entry's generation, bumped whenever the entry is freed, so a stale
//!   id (already fired, cancelled, or reused) is recognised and ignored.
//! * Each level keeps a 64-bit occupancy bitmap. The wheel's current tick is `elapsed`; a timer
//!   with tick `t >= elapsed` lives at the level of the highest 6-bit digit in which `t` and
//!   `elapsed` differ, in the slot given by that digit of `t`. Lower levels therefore always hold
//!   earlier timers than higher levels, and the next slot to process is found with one
//!   `trailing_zeros` per level. [`expire`](TimerWheel::expire) jumps straight from one occupied
//!   slot to the next, firing level-0 slots and cascading higher-level slots one or more levels
//!   down, so its cost is O(fired + cascaded + occupied slots visited × levels) no matter how far
//!   `now` jumps. Every timer cascades at most 10 times over its whole life.

/// A point in time: milliseconds since an arbitrary epoch chosen by the caller.
///
/// The wheel only compares and subtracts these values; it never reads a clock.
pub use crate::entry::Millis;

/// Bits of a tick consumed by one wheel level.
const LEVEL_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << LEVEL_BITS;
/// Levels needed so that every `u64` tick has a home: `ceil(64 / 6)`.
const LEVELS: usize = 64_usize.div_ceil(LEVEL_BITS as usize);
/// "No entry" sentinel for slab indices.
const NIL: u32 = u32::MAX;
/// `Entry::location` of an entry that is on the free list.
const FREE: u32 = u32::MAX;

/// Handle to an armed timer, returned by [`TimerWheel::arm`].
///
/// The handle stays valid until the timer fires or is cancelled. Afterwards it is *stale*:
/// [`TimerWheel::cancel`], [`TimerWheel::rearm`] and the accessors treat it as absent even after
/// its slab entry has been reused for another timer (the entry's generation counter is part of
/// the id; it is 32 bits wide, so a stale id could only be confused with a live one after 2^32
/// reuses of the same entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId {
    /// Slab index of the entry.
    index: u32,
    /// Generation of the entry when the timer was armed.
    generation: u32,
}

impl TimerId {
    /// The slab index of the timer's entry: what a holder short of room may keep instead of
    /// the id, finding the timer again with [`TimerWheel::at`].
    pub fn index(self) -> u32 {
        self.index
    }

    /// The id as one number, to keep in an atomic ([`TimerId::from_bits`] reverses it).
    pub fn to_bits(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// The id [`TimerId::to_bits`] gave `bits`.
    pub fn from_bits(bits: u64) -> Self {
        Self {
            index: bits as u32,
            generation: (bits >> 32) as u32,
        }
    }
}

/// One slab entry: a live timer linked into a slot list, or a free entry on the free list.
#[derive(Clone, Debug)]
struct Entry<T> {
    /// Deadline as passed by the caller, low half first: two `u32`s rather than a `u64`, so
    /// that the entry is aligned to 4 bytes (a shard's expiry payload, 12 bytes, then makes a
    /// 36-byte entry instead of 40).
    deadline: [u32; 2],
    /// Previous entry in the slot list (`NIL` at the head). Unused while free.
    prev: u32,
    /// Next entry in the slot list, or next free entry while free.
    next: u32,
    /// Bumped every time the entry is freed.
    generation: u32,
    /// `level * SLOTS + slot` while linked in a slot, `FREE` while on the free list.
    location: u32,
    /// The caller's key. Left in place (stale) while the entry is free; `T: Copy` needs no drop.
    payload: T,
}

impl<T> Entry<T> {
    fn deadline(&self) -> Millis {
        u64::from(self.deadline[0]) | (u64::from(self.deadline[1]) << 32)
    }
}

/// A deadline as [`Entry::deadline`] keeps it.
fn split(deadline: Millis) -> [u32; 2] {
    [deadline as u32, (deadline >> 32) as u32]
}

/// A hierarchical timer wheel holding timers with payload `T`.
///
/// Time is supplied by the caller in [`Millis`]; the wheel works in *ticks* of a configurable
/// number of milliseconds (1 ms by default, see [`TimerWheel::with_tick_ms`]). A deadline `d` is
/// rounded *up* to a tick and the `now` passed to [`expire`](TimerWheel::expire) is rounded
/// *down*, so a timer never fires before its deadline and fires at the latest on the first
/// `expire` whose `now` reaches the end of the deadline's tick. With 1 ms ticks a timer fires on
/// exactly the first `expire(now)` call with `now >= deadline`.
///
/// The wheel's *current time* starts at 0 and is the (tick-rounded) largest `now` passed to
/// [`expire`](TimerWheel::expire) so far; timers armed for a deadline at or before it are due on
/// the next `expire` call.
///
/// See the [module documentation](self) for the data structure and costs.
///
/// # Examples
///
/// ```
/// use rserpool_handlespace::timer::TimerWheel;
///
/// let mut wheel = TimerWheel::new();
/// let a = wheel.arm(1_000, "registration lifetime");
/// let b = wheel.arm(500, "keep-alive");
/// assert_eq!(wheel.cancel(b), Some("keep-alive"));
/// // A lower bound: the wheel may wake the driver early to cascade far timers.
/// assert!(wheel.next_deadline().is_some_and(|t| t <= 1_000));
/// let mut fired = Vec::new();
/// wheel.expire(999, |id, key| fired.push((id, key)));
/// assert!(fired.is_empty());
/// wheel.expire(1_000, |id, key| fired.push((id, key)));
/// assert_eq!(fired, [(a, "registration lifetime")]);
/// ```
#[derive(Clone, Debug)]
pub struct TimerWheel<T> {
    /// Slab of entries, live and free.
    entries: Vec<Entry<T>>,
    /// Head of the free list (`NIL` when empty).
    free_head: u32,
    /// Number of live timers.
    len: usize,
    /// Tick length in milliseconds (at least 1).
    tick_ms: u64,
    /// The wheel's current tick: every live timer's effective tick is `>= elapsed`.
    elapsed: u64,
    /// Head entry of every slot list, by level then slot.
    heads: [[u32; SLOTS]; LEVELS],
    /// Per level, bit `s` is set iff slot `s` is non-empty.
    occupied: [u64; LEVELS],
}

impl<T: Copy> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy> TimerWheel<T> {
    /// Creates an empty wheel with 1 ms ticks and its current time at 0.
    #[must_use]
    pub fn new() -> Self {
        Self::with_tick_ms(1)
    }

    /// Creates an empty wheel whose ticks are `tick_ms` milliseconds long (0 is treated as 1).
    ///
    /// Coarser ticks make timers fire up to `tick_ms - 1` ms late (never early) in exchange for
    /// fewer slot visits per second of `now` advance.
    #[must_use]
    pub fn with_tick_ms(tick_ms: u64) -> Self {
        Self {
            entries: Vec::new(),
            free_head: NIL,
            len: 0,
            tick_ms: tick_ms.max(1),
            elapsed: 0,
            heads: [[NIL; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
        }
    }

    /// Reserves slab room for at least `additional` more timers beyond the live ones, so that
    /// arming them does not allocate.
    pub fn reserve(&mut self, additional: usize) {
        let spare = self.entries.len() - self.len;
        self.entries.reserve(additional.saturating_sub(spare));
    }

    /// The tick length in milliseconds.
    #[must_use]
    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// Number of armed (not yet fired or cancelled) timers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when no timer is armed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Arms a timer that fires with `payload` once `expire` is called with `now >= deadline`.
    ///
    /// A deadline at or before the wheel's current time fires on the next
    /// [`expire`](Self::expire). Any `u64` deadline is accepted. O(1); allocates only when the
    /// slab has no free entry.
    ///
    /// # Panics
    ///
    /// Panics if `u32::MAX - 1` timers are already armed.
    pub fn arm(&mut self, deadline: Millis, payload: T) -> TimerId {
        let index = if self.free_head == NIL {
            let index = u32::try_from(self.entries.len())
                .ok()
                .filter(|&i| i != NIL)
                .expect("TimerWheel: too many timers armed");
            self.entries.push(Entry {
                deadline: split(deadline),
                prev: NIL,
                next: NIL,
                generation: 0,
                location: FREE,
                payload,
            });
            index
        } else {
            let index = self.free_head;
            let entry = &mut self.entries[index as usize];
            self.free_head = entry.next;
            entry.deadline = split(deadline);
            entry.payload = payload;
            index
        };
        self.link(index);
        self.len += 1;
        TimerId {
            index,
            generation: self.entries[index as usize].generation,
        }
    }

    /// Cancels a timer, returning its payload, or `None` if `id` is stale (the timer already
    /// fired or was cancelled). O(1).
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let index = self.live_index(id)?;
        self.unlink(index);
        Some(self.release(index))
    }

    /// Moves a live timer to `new_deadline`, keeping its payload and id.
    ///
    /// Returns the (unchanged) id, or `None` if `id` is stale, in which case nothing is armed.
    /// The same rules as for [`arm`](Self::arm) apply to `new_deadline`. O(1), never allocates.
    pub fn rearm(&mut self, id: TimerId, new_deadline: Millis) -> Option<TimerId> {
        let index = self.live_index(id)?;
        self.unlink(index);
        self.entries[index as usize].deadline = split(new_deadline);
        self.link(index);
        Some(id)
    }

    /// `true` if `id` refers to an armed timer.
    #[must_use]
    pub fn contains(&self, id: TimerId) -> bool {
        self.live_index(id).is_some()
    }

    /// The deadline of an armed timer, as passed to [`arm`](Self::arm) or
    /// [`rearm`](Self::rearm); `None` if `id` is stale.
    #[must_use]
    pub fn deadline(&self, id: TimerId) -> Option<Millis> {
        self.live_index(id)
            .map(|index| self.entries[index as usize].deadline())
    }

    /// The armed timer in slab entry `index` ([`TimerId::index`]) and its payload; `None` if the
    /// entry is free. A holder that keeps only its timer's index recognises the timer as its own
    /// by the payload (the index alone may have been reused by another timer since).
    #[must_use]
    pub fn at(&self, index: u32) -> Option<(TimerId, &T)> {
        let entry = self.entries.get(index as usize)?;
        (entry.location != FREE).then_some((
            TimerId {
                index,
                generation: entry.generation,
            },
            &entry.payload,
        ))
    }

    /// The payload of an armed timer; `None` if `id` is stale.
    #[must_use]
    pub fn payload(&self, id: TimerId) -> Option<&T> {
        self.live_index(id)
            .map(|index| &self.entries[index as usize].payload)
    }

    /// Fires every timer whose deadline is `<= now`, calling `out(id, payload)` exactly once for
    /// each, and returns how many fired. The order in which they are delivered is unspecified.
    ///
    /// The wheel's current time advances to `now` (rounded down to a tick); a `now` earlier than
    /// a previous one is treated as that previous time. Cost is O(fired + cascaded + visited
    /// non-empty slots × 11); empty slots are skipped with bitmaps, so a jump of hours or days
    /// costs no more than a jump of one tick over the same timers. `out` cannot touch the wheel;
    /// collect ids to re-arm and do it after `expire` returns.
    pub fn expire(&mut self, now: Millis, mut out: impl FnMut(TimerId, T)) -> usize {
        let now_tick = (now / self.tick_ms).max(self.elapsed);
        let mut fired = 0;
        while let Some((level, slot, start)) = self.next_expiration() {
            if start > now_tick {
                break;
            }
            // No non-empty slot starts before `start`, so the current time may jump to it
            // without breaking the level invariant.
            self.elapsed = start;
            let mut cursor = std::mem::replace(&mut self.heads[level][slot], NIL);
            self.occupied[level] &= !(1 << slot);
            while cursor != NIL {
                let index = cursor;
                cursor = self.entries[index as usize].next;
                if level == 0 {
                    let generation = self.entries[index as usize].generation;
                    let payload = self.release(index);
                    fired += 1;
                    out(TimerId { index, generation }, payload);
                } else {
                    // Every timer of this slot has tick in [start, start + 64^level): it lands
                    // on a lower level (or the current level-0 slot, processed next round).
                    self.link(index);
                }
            }
        }
        // Every remaining timer has tick > now_tick (see above), so moving time keeps every
        // timer in a slot strictly after the current one on its level.
        self.elapsed = now_tick;
        fired
    }

    /// The earliest time at which [`expire`](Self::expire) may have something to do, or `None`
    /// when the wheel is empty.
    ///
    /// This is a lower bound suitable for a sleeping driver: nothing fires before it, and the
    /// returned value is exact (the first time at which a timer fires) when the earliest timer
    /// is on the wheel's lowest level, i.e. within 64 ticks of the current time. Otherwise it is
    /// the start of the earliest occupied higher-level slot, where `expire` cascades timers to
    /// lower levels; call `next_deadline` again after that `expire` for a tighter value. A
    /// timer due at or before the wheel's current time makes this return a time `<=` the last
    /// `now` passed to `expire`. O(11).
    #[must_use]
    pub fn next_deadline(&self) -> Option<Millis> {
        self.next_expiration()
            .map(|(_, _, start)| start.saturating_mul(self.tick_ms))
    }

    /// Level, slot and start tick of the earliest non-empty slot.
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        (0..LEVELS).find_map(|level| {
            let shift = level as u32 * LEVEL_BITS;
            let current = (self.elapsed >> shift) as usize % SLOTS;
            debug_assert_eq!(
                self.occupied[level] & ((1 << current) - 1),
                0,
                "slot behind the current time on level {level}"
            );
            let ahead = self.occupied[level] & (u64::MAX << current);
            (ahead != 0).then(|| {
                let slot = ahead.trailing_zeros() as usize;
                let block_start = self.elapsed & !block_offset_mask(level);
                (level, slot, block_start + ((slot as u64) << shift))
            })
        })
    }

    /// Slab index of `id` if it is live.
    fn live_index(&self, id: TimerId) -> Option<u32> {
        let entry = self.entries.get(id.index as usize)?;
        (entry.generation == id.generation && entry.location != FREE).then_some(id.index)
    }

    /// Links entry `index` (not currently in any slot) into the slot its deadline belongs to.
    fn link(&mut self, index: u32) {
        let tick = self.entries[index as usize]
            .deadline()
            .div_ceil(self.tick_ms)
            .max(self.elapsed);
        let significant = ((tick ^ self.elapsed) | (SLOTS as u64 - 1)).ilog2();
        let level = (significant / LEVEL_BITS) as usize;
        let slot = (tick >> (level as u32 * LEVEL_BITS)) as usize % SLOTS;
        let head = self.heads[level][slot];
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        let entry = &mut self.entries[index as usize];
        entry.prev = NIL;
        entry.next = head;
        entry.location = (level * SLOTS + slot) as u32;
        self.heads[level][slot] = index;
        self.occupied[level] |= 1 << slot;
    }

    /// Unlinks live entry `index` from its slot list.
    fn unlink(&mut self, index: u32) {
        let Entry {
            prev,
            next,
            location,
            ..
        } = self.entries[index as usize];
        let (level, slot) = (location as usize / SLOTS, location as usize % SLOTS);
        if prev == NIL {
            self.heads[level][slot] = next;
            if next == NIL {
                self.occupied[level] &= !(1 << slot);
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    /// Puts unlinked entry `index` on the free list, invalidating its id; returns its payload.
    fn release(&mut self, index: u32) -> T {
        let entry = &mut self.entries[index as usize];
        entry.generation = entry.generation.wrapping_add(1);
        entry.location = FREE;
        entry.next = self.free_head;
        self.free_head = index;
        self.len -= 1;
        entry.payload
    }
}

/// Mask of the tick bits below level `level + 1`: a tick's offset within its block of 64 slots
/// of `level`.
fn block_offset_mask(level: usize) -> u64 {
    let bits = (level as u32 + 1) * LEVEL_BITS;
    if bits >= u64::BITS {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    /// Deterministic PRNG for the randomized tests.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn drain(wheel: &mut TimerWheel<u32>, now: Millis) -> Vec<(TimerId, u32)> {
        let mut fired = Vec::new();
        let count = wheel.expire(now, |id, key| fired.push((id, key)));
        assert_eq!(count, fired.len());
        fired
    }

    fn keys(mut fired: Vec<(TimerId, u32)>) -> Vec<u32> {
        fired.sort_by_key(|&(_, key)| key);
        fired.into_iter().map(|(_, key)| key).collect()
    }

    #[test]
    fn entry_is_small() {
        assert_eq!(std::mem::size_of::<Entry<()>>(), 24);
        assert_eq!(std::mem::size_of::<Entry<(u32, u32)>>(), 32);
        assert_eq!(std::mem::size_of::<TimerId>(), 8);
        // A shard's expiry payload: pool slot and PE ID in 4-byte halves.
        assert_eq!(std::mem::size_of::<Entry<(u32, [u32; 2])>>(), 36);
    }

    #[test]
    fn arm_cancel_rearm() {
        let mut wheel = TimerWheel::new();
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
        let a = wheel.arm(10, 1);
        let b = wheel.arm(20, 2);
        let c = wheel.arm(30, 3);
        assert_eq!(wheel.len(), 3);
        assert_eq!(wheel.next_deadline(), Some(10));
        assert_eq!(wheel.deadline(b), Some(20));
        assert_eq!(wheel.payload(c), Some(&3));

        assert_eq!(wheel.cancel(a), Some(1));
        assert_eq!(wheel.len(), 2);
        assert!(!wheel.contains(a));
        assert_eq!(wheel.next_deadline(), Some(20));

        assert_eq!(wheel.rearm(c, 5), Some(c));
        assert_eq!(wheel.deadline(c), Some(5));
        assert_eq!(wheel.next_deadline(), Some(5));
        assert_eq!(wheel.rearm(b, 100_000), Some(b));

        assert_eq!(keys(drain(&mut wheel, 4)), Vec::<u32>::new());
        assert_eq!(drain(&mut wheel, 5), vec![(c, 3)]);
        assert_eq!(keys(drain(&mut wheel, 99_999)), Vec::<u32>::new());
        assert_eq!(drain(&mut wheel, 100_000), vec![(b, 2)]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn stale_ids_are_ignored() {
        let mut wheel = TimerWheel::new();
        let a = wheel.arm(10, 1);
        assert_eq!(wheel.cancel(a), Some(1));
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(wheel.rearm(a, 50), None);
        assert!(wheel.is_empty());

        // The entry is reused: the old id must not reach the new timer.
        let b = wheel.arm(20, 2);
        assert_eq!(b.index, a.index);
        assert_ne!(b, a);
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(wheel.rearm(a, 1), None);
        assert_eq!(wheel.deadline(a), None);
        assert_eq!(wheel.payload(a), None);
        assert_eq!(wheel.deadline(b), Some(20));

        // Fired ids are stale too.
        assert_eq!(drain(&mut wheel, 20), vec![(b, 2)]);
        assert_eq!(wheel.cancel(b), None);
        let c = wheel.arm(30, 3);
        assert_eq!(wheel.cancel(b), None);
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.cancel(c), Some(3));

        // Ids beyond the slab are harmless.
        let bogus = TimerId {
            index: 1_000,
            generation: 0,
        };
        assert_eq!(wheel.cancel(bogus), None);
    }

    #[test]
    fn fires_exactly_at_deadline_never_before() {
        for deadline in [0, 1, 63, 64, 65, 4_095, 4_096, 4_097, 262_144, 1_000_003] {
            let mut wheel = TimerWheel::new();
            let id = wheel.arm(deadline, 7);
            let mut now = 0;
            while now < deadline {
                assert!(drain(&mut wheel, now).is_empty(), "fired early at {now}");
                assert!(wheel.next_deadline().unwrap() <= deadline);
                now = (now + 1 + now / 3).min(deadline - 1).max(now + 1);
            }
            assert_eq!(drain(&mut wheel, deadline), vec![(id, 7)], "at {deadline}");
            assert!(wheel.is_empty());
        }
    }

    #[test]
    fn past_deadlines_fire_on_next_expire() {
        let mut wheel = TimerWheel::new();
        assert!(drain(&mut wheel, 1_000_000).is_empty());
        let a = wheel.arm(5, 1);
        let b = wheel.arm(1_000_000, 2);
        let c = wheel.arm(1_000_001, 3);
        assert!(wheel.next_deadline().unwrap() <= 1_000_000);
        assert_eq!(keys(drain(&mut wheel, 1_000_000)), [1, 2]);
        assert!(!wheel.contains(a) && !wheel.contains(b));
        // Time going backwards is ignored.
        assert!(drain(&mut wheel, 3).is_empty());
        let d = wheel.arm(999_999, 4);
        assert_eq!(drain(&mut wheel, 10), vec![(d, 4)]);
        assert_eq!(drain(&mut wheel, 1_000_001), vec![(c, 3)]);
    }

    #[test]
    fn large_jumps_and_far_future() {
        const HOUR: u64 = 3_600_000;
        const DAY: u64 = 24 * HOUR;
        let mut wheel = TimerWheel::new();
        let start = 1_700_000_000_000; // a wall-clock-like epoch offset
        assert!(drain(&mut wheel, start).is_empty());
        let soon = wheel.arm(start + 30_000, 1);
        let hour = wheel.arm(start + HOUR, 2);
        let week = wheel.arm(start + 7 * DAY, 3);
        let eon = wheel.arm(u64::MAX - 1, 4);
        let end = wheel.arm(u64::MAX, 5);
        assert_eq!(wheel.len(), 5);

        assert_eq!(drain(&mut wheel, start + HOUR - 1), vec![(soon, 1)]);
        assert_eq!(drain(&mut wheel, start + HOUR), vec![(hour, 2)]);
        assert!(drain(&mut wheel, start + 7 * DAY - 1).is_empty());
        assert!(wheel.next_deadline().unwrap() <= start + 7 * DAY);
        assert_eq!(drain(&mut wheel, start + 7 * DAY), vec![(week, 3)]);
        assert!(drain(&mut wheel, u64::MAX - 2).is_empty());
        assert_eq!(drain(&mut wheel, u64::MAX - 1), vec![(eon, 4)]);
        assert_eq!(wheel.next_deadline(), Some(u64::MAX));
        assert_eq!(drain(&mut wheel, u64::MAX), vec![(end, 5)]);
        assert!(wheel.is_empty());
        // At the end of time everything is due immediately.
        let f = wheel.arm(0, 6);
        assert_eq!(drain(&mut wheel, u64::MAX), vec![(f, 6)]);
    }

    #[test]
    fn cascades_through_every_level() {
        // One timer per level boundary; advance one boundary at a time so every level's slots
        // are cascaded down, and check nothing fires early or late.
        let mut wheel = TimerWheel::new();
        let mut deadlines: Vec<u64> = (0..LEVELS as u32)
            .flat_map(|level| {
                let unit = 1u64 << (level * LEVEL_BITS).min(63);
                [unit - 1, unit, unit + 1, unit.saturating_mul(3) + 7]
            })
            .collect();
        deadlines.sort_unstable();
        deadlines.dedup();
        for (key, &deadline) in deadlines.iter().enumerate() {
            wheel.arm(deadline, key as u32);
        }
        for (key, &deadline) in deadlines.iter().enumerate() {
            if deadline > 0 {
                let early = drain(&mut wheel, deadline - 1);
                assert!(early.is_empty(), "early at {deadline}: {early:?}");
            }
            let bound = wheel.next_deadline().unwrap();
            assert!(bound <= deadline, "bound {bound} > {deadline}");
            assert_eq!(keys(drain(&mut wheel, deadline)), [key as u32]);
        }
        assert!(wheel.is_empty());
    }

    #[test]
    fn next_deadline_converges_by_cascading() {
        let mut wheel = TimerWheel::new();
        let deadline = 5 * 4_096 + 3 * 64 + 9;
        wheel.arm(deadline, 1);
        let mut wakeups = 0;
        loop {
            let next = wheel.next_deadline().unwrap();
            assert!(next <= deadline);
            wakeups += 1;
            if !drain(&mut wheel, next).is_empty() {
                assert_eq!(next, deadline);
                break;
            }
        }
        assert!(wakeups <= 3, "{wakeups} wakeups");
    }

    #[test]
    fn coarse_ticks_fire_late_never_early() {
        let mut wheel = TimerWheel::with_tick_ms(10);
        assert_eq!(wheel.tick_ms(), 10);
        let a = wheel.arm(25, 1);
        let b = wheel.arm(30, 2);
        assert_eq!(wheel.next_deadline(), Some(30));
        assert!(drain(&mut wheel, 29).is_empty());
        assert_eq!(keys(drain(&mut wheel, 30)), [1, 2]);
        assert!(!wheel.contains(a) && !wheel.contains(b));
        let c = wheel.arm(31, 3);
        assert!(drain(&mut wheel, 39).is_empty());
        assert_eq!(drain(&mut wheel, 40), vec![(c, 3)]);
        // A zero tick is clamped to one millisecond.
        assert_eq!(TimerWheel::<u32>::with_tick_ms(0).tick_ms(), 1);
    }

    #[test]
    fn slab_entries_are_reused() {
        let mut wheel = TimerWheel::new();
        wheel.reserve(100);
        for round in 0..10u64 {
            let ids: Vec<_> = (0..100).map(|i| wheel.arm(round * 1_000 + i, 0)).collect();
            assert_eq!(wheel.len(), 100);
            for id in &ids[..50] {
                assert_eq!(wheel.cancel(*id), Some(0));
            }
            assert_eq!(drain(&mut wheel, round * 1_000 + 999).len(), 50);
        }
        assert_eq!(wheel.entries.len(), 100);
    }

    /// Reference model: live timers by key plus an index ordered by deadline.
    #[derive(Default)]
    struct Model {
        by_key: HashMap<u32, (TimerId, Millis)>,
        by_deadline: BTreeSet<(Millis, u32)>,
        live: Vec<u32>,
        position: HashMap<u32, usize>,
    }

    impl Model {
        fn insert(&mut self, key: u32, id: TimerId, deadline: Millis) {
            self.by_key.insert(key, (id, deadline));
            self.by_deadline.insert((deadline, key));
            self.position.insert(key, self.live.len());
            self.live.push(key);
        }

        fn remove(&mut self, key: u32) -> (TimerId, Millis) {
            let (id, deadline) = self.by_key.remove(&key).expect("key not live in model");
            assert!(self.by_deadline.remove(&(deadline, key)));
            let position = self.position.remove(&key).unwrap();
            self.live.swap_remove(position);
            if let Some(&moved) = self.live.get(position) {
                self.position.insert(moved, position);
            }
            (id, deadline)
        }

        fn min_deadline(&self) -> Option<Millis> {
            self.by_deadline.first().map(|&(deadline, _)| deadline)
        }
    }

    fn random_deadline(rng: &mut SplitMix64, now: Millis) -> Millis {
        match rng.below(100) {
            0..=2 => now.saturating_sub(rng.below(1_000)), // in the past or now
            3..=12 => now + rng.below(64),
            13..=32 => now + rng.below(5_000),
            33..=72 => now + rng.below(200_000),
            73..=92 => now + rng.below(10_000_000),
            _ => now + rng.below(1 << 40), // decades away
        }
    }

    /// Runs `steps` random operations against a [`Model`], checking after every step; starts by
    /// arming `target_live` timers and keeps the population near that size. Ordinary `expire`
    /// calls advance time by less than `max_advance` ms, rarer ones by up to 500 times that or
    /// an hour and more, or straight to `next_deadline`.
    fn run_against_model(
        seed: u64,
        tick_ms: u64,
        target_live: usize,
        steps: usize,
        max_advance: u64,
    ) {
        // One `expire` in this many jumps an hour or more ahead, firing most timers.
        let hour_odds = (target_live as u64).max(2_000);
        let mut rng = SplitMix64(seed);
        let mut wheel = TimerWheel::with_tick_ms(tick_ms);
        let mut model = Model::default();
        let mut stale = Vec::new();
        let mut now: Millis = rng.below(1 << 42);
        let mut next_key = 0u32;
        let mut total_fired = 0usize;
        let mut max_live = 0;
        let mut live_sum = 0;
        // Time from which a timer with this deadline is due.
        let due = |deadline: Millis| deadline.div_ceil(tick_ms) * tick_ms;

        wheel.expire(now, |_, _| panic!("empty wheel fired"));
        wheel.reserve(target_live);
        for _ in 0..target_live {
            let deadline = random_deadline(&mut rng, now);
            let id = wheel.arm(deadline, next_key);
            model.insert(next_key, id, deadline);
            next_key += 1;
        }
        max_live = max_live.max(model.live.len());

        for step in 0..steps {
            let filling = model.live.len() < target_live;
            match rng.below(100) {
                0..=49 if filling || rng.below(5) == 0 => {
                    let deadline = random_deadline(&mut rng, now);
                    let key = next_key;
                    next_key += 1;
                    let id = wheel.arm(deadline, key);
                    model.insert(key, id, deadline);
                }
                0..=59 if !model.live.is_empty() => {
                    let key = model.live[rng.below(model.live.len() as u64) as usize];
                    let (id, _) = model.remove(key);
                    assert_eq!(wheel.cancel(id), Some(key));
                    stale.push(id);
                }
                60..=69 if !model.live.is_empty() => {
                    let key = model.live[rng.below(model.live.len() as u64) as usize];
                    let (id, _) = model.remove(key);
                    let deadline = random_deadline(&mut rng, now);
                    assert_eq!(wheel.rearm(id, deadline), Some(id));
                    model.insert(key, id, deadline);
                }
                70..=74 if !stale.is_empty() => {
                    let id = stale[rng.below(stale.len() as u64) as usize];
                    assert_eq!(wheel.cancel(id), None);
                    assert_eq!(wheel.rearm(id, now), None);
                }
                _ => {
                    let advance = match rng.below(1_000) {
                        _ if rng.below(hour_odds) == 0 => 3_600_000 + rng.below(3_600_000),
                        0..=9 => rng.below(500 * max_advance),
                        10..=299 => 0,
                        _ => rng.below(max_advance),
                    };
                    if rng.below(50) == 0 {
                        // Jump straight to the driver's wake-up time.
                        if let Some(next) = wheel.next_deadline() {
                            now = now.max(next);
                        }
                    } else {
                        now += advance;
                    }
                    let mut fired = Vec::new();
                    let count = wheel.expire(now, |id, key| fired.push((id, key)));
                    assert_eq!(count, fired.len());
                    for (id, key) in fired {
                        let (model_id, deadline) = model.remove(key);
                        assert_eq!(model_id, id, "step {step}: wrong id for key {key}");
                        assert!(due(deadline) <= now, "step {step}: {key} fired early");
                        stale.push(id);
                        total_fired += 1;
                    }
                    if let Some(min) = model.min_deadline() {
                        assert!(due(min) > now, "step {step}: {min} not fired at {now}");
                    }
                }
            }
            assert_eq!(wheel.len(), model.live.len());
            max_live = max_live.max(model.live.len());
            live_sum += model.live.len();
            match (wheel.next_deadline(), model.min_deadline()) {
                (None, None) => {}
                (Some(bound), Some(min)) => {
                    // Timers armed behind the wheel's time are due from the last `now` on.
                    let limit = due(min).max(now);
                    assert!(bound <= limit, "step {step}: bound {bound} > {min}");
                }
                other => panic!("step {step}: next_deadline mismatch {other:?}"),
            }
            if stale.len() > 10_000 {
                stale.drain(..5_000);
            }
        }

        // Drain everything left: each timer is delivered exactly once.
        let remaining = model.live.len();
        let mut seen = BTreeSet::new();
        let count = wheel.expire(u64::MAX, |id, key| {
            assert!(seen.insert(key), "{key} delivered twice");
            assert_eq!(model.by_key[&key].0, id);
        });
        assert_eq!(count, remaining);
        assert_eq!(seen.len(), remaining);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
        assert!(total_fired > target_live / 2, "only {total_fired} fired");
        assert!(max_live >= target_live, "only {max_live} live");
        let mean_live = live_sum / steps;
        assert!(
            mean_live >= target_live / 4,
            "only {mean_live} live on average"
        );
    }

    #[test]
    fn random_against_model_small() {
        for seed in 0..20 {
            run_against_model(seed, 1, 50, 5_000, 20);
        }
    }

    #[test]
    fn random_against_model_100k() {
        run_against_model(0xDEAD_BEEF, 1, 100_000, 400_000, 2);
    }

    #[test]
    fn random_against_model_coarse_ticks() {
        run_against_model(42, 10, 5_000, 100_000, 20);
        run_against_model(43, 7, 500, 50_000, 20);
    }

    #[test]
    fn million_timers_one_hour_jump() {
        let mut wheel = TimerWheel::new();
        let mut rng = SplitMix64(7);
        let start = 1_000_000_000;
        wheel.expire(start, |_, _: u32| {});
        for key in 0..1_000_000 {
            wheel.arm(start + rng.below(3_600_000), key);
        }
        let mut seen = vec![false; 1_000_000];
        let fired = wheel.expire(start + 3_600_000, |_, key| {
            assert!(!std::mem::replace(&mut seen[key as usize], true));
        });
        assert_eq!(fired, 1_000_000);
        assert!(wheel.is_empty());
    }
}
