//! The chaos checker: the ledger of every registrar's life (incarnations with their PR IDs,
//! SIGSTOPs) and every PE's life (registrations by its own output, deregistration or death), and
//! the judgement of each PU resolution against the [`Bounds`]. Pure: fed events and observations
//! with their times, it never reads a clock or a socket.

use std::collections::HashMap;

use super::Millis;
use super::bounds::{Bounds, MARGIN};

/// What a violation broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViolationKind {
    /// A live, registered PE absent from a settled registrar's resolution.
    LiveMissing,
    /// A PE served by a settled registrar after its bound for vanishing.
    DeadServed,
    /// Two settled registrars naming different home PRs for one PE for longer than the update
    /// bound.
    TwoHomes,
    /// A settled registrar naming as home a PR that has been down for longer than the takeover
    /// bound.
    StaleHome,
    /// A registrar process that exited without the bench killing it.
    RegistrarExited,
}

impl ViolationKind {
    /// Every kind, in report order.
    pub const ALL: [Self; 5] = [
        Self::LiveMissing,
        Self::DeadServed,
        Self::TwoHomes,
        Self::StaleHome,
        Self::RegistrarExited,
    ];

    /// Its name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::LiveMissing => "live PE missing",
            Self::DeadServed => "dead PE served",
            Self::TwoHomes => "PE with two homes",
            Self::StaleHome => "home PR down, not taken over",
            Self::RegistrarExited => "registrar exited",
        }
    }
}

/// One violation: a run of failing resolutions of one kind for one PE (at one registrar), from
/// the first to the last, until a resolution passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What was broken.
    pub kind: ViolationKind,
    /// When the first failing resolution was sent (ms into the run).
    pub first: Millis,
    /// When the last failing resolution was sent.
    pub last: Millis,
    /// Failing resolutions.
    pub resolutions: u64,
    /// The registrar that answered (slot and PR ID), if one.
    pub registrar: Option<(usize, u64)>,
    /// The pool (index).
    pub pool: Option<usize>,
    /// The PE identifier (0 for a registrar exit).
    pub pe: u64,
    /// What the ledger says, in words.
    pub detail: String,
    /// The last registrar fault injected before `first`, in words.
    pub after_fault: Option<String>,
}

/// A PU's answer from one registrar for one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The registrar's slot.
    pub slot: usize,
    /// The pool's index.
    pub pool: usize,
    /// When the request was sent.
    pub sent: Millis,
    /// When the answer arrived.
    pub received: Millis,
    /// (PE ID, home PR ID) of every PE returned; empty for an unknown pool.
    pub pes: Vec<(u64, u64)>,
}

/// How a PE's life ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeEnd {
    /// It printed that its registrar confirmed the deregistration.
    Deregistered,
    /// SIGKILL: the association closes without a deregistration.
    Killed,
    /// SIGSTOP: it stops answering keep-alives, the association stays.
    Hung,
    /// It exited by itself, or after SIGTERM without confirming a deregistration.
    Exited,
}

#[derive(Clone, Debug)]
struct Incarnation {
    id: u64,
    started: Millis,
    ended: Option<Millis>,
    /// SIGSTOP and SIGCONT times.
    stops: Vec<(Millis, Option<Millis>)>,
}

#[derive(Clone, Debug)]
struct PeLife {
    id: u64,
    pool: usize,
    /// Closed spans during which the PE's own output said it was registered.
    spans: Vec<(Millis, Millis)>,
    /// The open span's start.
    registered_since: Option<Millis>,
    /// The last (re-)registration: when and at which slot.
    last_registration: Option<(Millis, usize)>,
    end: Option<(Millis, PeEnd)>,
}

impl PeLife {
    /// Whether the PE's own output said it was registered throughout `[from, to]`.
    fn registered_over(&self, from: Millis, to: Millis) -> bool {
        self.registered_since.is_some_and(|s| s <= from)
            || self.spans.iter().any(|&(s, e)| s <= from && e >= to)
    }
}

/// The key of an open violation: kind, slot (or none), PE.
type Key = (ViolationKind, Option<usize>, u64);

/// The ledger and the violations found so far.
#[derive(Debug)]
pub struct Checker {
    bounds: Bounds,
    pool_count: usize,
    slots: Vec<Vec<Incarnation>>,
    pes: Vec<PeLife>,
    by_id: HashMap<u64, usize>,
    faults: Vec<(Millis, String)>,
    violations: Vec<Violation>,
    open: HashMap<Key, usize>,
    latest: HashMap<(usize, usize), Observation>,
    conflict_since: HashMap<u64, Millis>,
    pair_window: Millis,
    /// Resolutions judged.
    pub checked: u64,
    /// Resolutions not judged: their registrar was down, stopped or not settled.
    pub unsettled: u64,
}

impl Checker {
    /// A checker for `registrars` slots and `pools` pools; two registrars' answers are compared
    /// when sent within `pair_window` of each other.
    pub fn new(bounds: Bounds, registrars: usize, pools: usize, pair_window: Millis) -> Self {
        Self {
            bounds,
            pool_count: pools,
            slots: vec![Vec::new(); registrars],
            pes: Vec::new(),
            by_id: HashMap::new(),
            faults: Vec::new(),
            violations: Vec::new(),
            open: HashMap::new(),
            latest: HashMap::new(),
            conflict_since: HashMap::new(),
            pair_window,
            checked: 0,
            unsettled: 0,
        }
    }

    /// The violations found, in the order found.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// A registrar fault was injected at `at` (named in the "after" of later violations).
    pub fn fault(&mut self, at: Millis, what: String) {
        self.faults.push((at, what));
    }

    /// Slot `slot`'s process was (re)started with PR ID `id` at `at`.
    pub fn registrar_started(&mut self, slot: usize, id: u64, at: Millis) {
        self.slots[slot].push(Incarnation {
            id,
            started: at,
            ended: None,
            stops: Vec::new(),
        });
    }

    /// Slot `slot`'s process was killed (or found exited) at `at`.
    pub fn registrar_ended(&mut self, slot: usize, at: Millis) {
        if let Some(i) = self.slots[slot].last_mut() {
            i.ended.get_or_insert(at);
            if let Some(stop) = i.stops.last_mut() {
                stop.1.get_or_insert(at);
            }
        }
    }

    /// Slot `slot`'s process exited without being killed, at `at`: a violation.
    pub fn registrar_exited(&mut self, slot: usize, at: Millis, status: &str) {
        let id = self.slots[slot].last().map_or(0, |i| i.id);
        self.registrar_ended(slot, at);
        self.violations.push(Violation {
            kind: ViolationKind::RegistrarExited,
            first: at,
            last: at,
            resolutions: 0,
            registrar: Some((slot, id)),
            pool: None,
            pe: 0,
            detail: format!("the process exited by itself ({status})"),
            after_fault: self.fault_before(at),
        });
    }

    /// Slot `slot` was sent SIGSTOP at `at`.
    pub fn registrar_stopped(&mut self, slot: usize, at: Millis) {
        if let Some(i) = self.slots[slot].last_mut() {
            i.stops.push((at, None));
        }
    }

    /// Slot `slot` was sent SIGCONT at `at`.
    pub fn registrar_resumed(&mut self, slot: usize, at: Millis) {
        if let Some(stop) = self.slots[slot].last_mut().and_then(|i| i.stops.last_mut()) {
            stop.1.get_or_insert(at);
        }
    }

    /// A PE with identifier `id` in pool `pool` was started.
    pub fn pe_started(&mut self, id: u64, pool: usize) {
        self.by_id.insert(id, self.pes.len());
        self.pes.push(PeLife {
            id,
            pool,
            spans: Vec::new(),
            registered_since: None,
            last_registration: None,
            end: None,
        });
    }

    fn pe_mut(&mut self, id: u64) -> Option<&mut PeLife> {
        let index = *self.by_id.get(&id)?;
        Some(&mut self.pes[index])
    }

    /// The PE said at `at` that slot `slot` accepted its (re-)registration.
    pub fn pe_registered(&mut self, id: u64, slot: usize, at: Millis) {
        if let Some(pe) = self.pe_mut(id)
            && pe.end.is_none()
        {
            pe.registered_since.get_or_insert(at);
            pe.last_registration = Some((at, slot));
        }
    }

    /// The PE's registration ended at `at` in its own view (lost, or it was told to leave):
    /// from then on it need not be served.
    pub fn pe_unregistered(&mut self, id: u64, at: Millis) {
        if let Some(pe) = self.pe_mut(id)
            && let Some(since) = pe.registered_since.take()
        {
            pe.spans.push((since, at));
        }
    }

    /// The PE's life ended at `at`, as `how`.
    pub fn pe_ended(&mut self, id: u64, at: Millis, how: PeEnd) {
        self.pe_unregistered(id, at);
        if let Some(pe) = self.pe_mut(id) {
            pe.end.get_or_insert((at, how));
        }
    }

    /// Whether slot `slot` answered `[sent, received]` settled: one process alive throughout,
    /// started at least the start-up bound before, not stopped meanwhile nor within the resume
    /// bound before.
    pub fn settled(&self, slot: usize, sent: Millis, received: Millis) -> bool {
        let Some(i) = self.slots[slot]
            .iter()
            .find(|i| i.started <= sent && i.ended.is_none_or(|e| e > received))
        else {
            return false;
        };
        i.started + self.bounds.startup <= sent
            && i.stops.iter().all(|&(stop, cont)| {
                stop > received || cont.is_some_and(|c| c + self.bounds.resume <= sent)
            })
    }

    /// The PR ID of slot `slot` at `at`.
    pub fn id_at(&self, slot: usize, at: Millis) -> u64 {
        self.slots[slot]
            .iter()
            .rev()
            .find(|i| i.started <= at)
            .map_or(0, |i| i.id)
    }

    /// Since when the PR with ID `id` has been down (killed or stopped) at `at`; `None` while a
    /// process with that ID runs. An ID no process ever had has been down since the start.
    fn down_since(&self, id: u64, at: Millis) -> Option<Millis> {
        let mut last: Option<(Millis, bool)> = None;
        let mut known = false;
        for i in self.slots.iter().flatten().filter(|i| i.id == id) {
            known = true;
            let mut changes = vec![(i.started, true)];
            for &(stop, cont) in &i.stops {
                changes.push((stop, false));
                changes.extend(cont.map(|c| (c, true)));
            }
            changes.extend(i.ended.map(|e| (e, false)));
            for change in changes.into_iter().filter(|c| c.0 <= at) {
                if last.is_none_or(|l| change.0 >= l.0) {
                    last = Some(change);
                }
            }
        }
        match last {
            Some((_, true)) => None,
            Some((since, false)) => Some(since),
            None if known => None,
            None => Some(0),
        }
    }

    fn fault_before(&self, at: Millis) -> Option<String> {
        self.faults
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .map(|(t, what)| format!("{what} at {:.1} s", *t as f64 / 1000.0))
    }

    /// A failing resolution for `key`: extends its open violation or opens one.
    fn fail(&mut self, key: Key, obs: &Observation, pe: u64, detail: impl FnOnce() -> String) {
        if let Some(&index) = self.open.get(&key) {
            let v = &mut self.violations[index];
            v.last = obs.sent;
            v.resolutions += 1;
            return;
        }
        let violation = Violation {
            kind: key.0,
            first: obs.sent,
            last: obs.sent,
            resolutions: 1,
            registrar: Some((obs.slot, self.id_at(obs.slot, obs.sent))),
            pool: Some(obs.pool),
            pe,
            detail: detail(),
            after_fault: self.fault_before(obs.sent),
        };
        self.open.insert(key, self.violations.len());
        self.violations.push(violation);
    }

    fn pass(&mut self, key: Key) {
        self.open.remove(&key);
    }

    /// When the PE of `life` must be gone from every settled registrar, if it ended.
    fn deadline(&self, life: &PeLife) -> Option<(Millis, String)> {
        let (at, how) = life.end?;
        Some(match how {
            PeEnd::Deregistered => (
                at + self.bounds.update,
                format!("deregistered at {:.1} s", at as f64 / 1000.0),
            ),
            PeEnd::Killed | PeEnd::Hung | PeEnd::Exited => {
                let normal = at + self.bounds.dead_pe(false);
                // Its home went down (killed, or stopped) between its last registration there
                // and the normal deadline.
                let disturbed = life.last_registration.is_some_and(|(since, slot)| {
                    self.slots[slot].iter().any(|i| {
                        let downs = i.ended.into_iter().chain(i.stops.iter().map(|s| s.0));
                        downs.into_iter().any(|d| d >= since && d <= normal)
                    })
                });
                let verb = match how {
                    PeEnd::Killed => "killed",
                    PeEnd::Hung => "hung (SIGSTOP)",
                    _ => "exited",
                };
                (
                    at + self.bounds.dead_pe(disturbed),
                    format!(
                        "{verb} at {:.1} s{}",
                        at as f64 / 1000.0,
                        if disturbed {
                            ", its home registrar down meanwhile"
                        } else {
                            ""
                        }
                    ),
                )
            }
        })
    }

    /// Judges one resolution (to be fed in the order the answers arrived, once every PE event up
    /// to its arrival is in).
    pub fn observe(&mut self, obs: Observation) {
        if !self.settled(obs.slot, obs.sent, obs.received) {
            self.unsettled += 1;
            return;
        }
        self.checked += 1;
        let b = self.bounds;
        let served: HashMap<u64, u64> = obs.pes.iter().copied().collect();
        // Live PEs of the pool that must be there.
        let (from, to) = (obs.sent.saturating_sub(b.update), obs.received + MARGIN);
        let pool: Vec<(u64, bool, (Millis, usize))> = self
            .pes
            .iter()
            .filter(|life| life.pool == obs.pool)
            .map(|life| {
                let registration = life.last_registration.unwrap_or_default();
                (life.id, life.registered_over(from, to), registration)
            })
            .collect();
        for (id, required, (since, home)) in pool {
            let key = (ViolationKind::LiveMissing, Some(obs.slot), id);
            if required && !served.contains_key(&id) {
                self.fail(key, &obs, id, || {
                    format!(
                        "registered since at least {:.1} s, last at slot {home} at {:.1} s",
                        from as f64 / 1000.0,
                        since as f64 / 1000.0
                    )
                });
            } else {
                self.pass(key);
            }
            if !served.contains_key(&id) {
                self.pass((ViolationKind::DeadServed, Some(obs.slot), id));
                self.pass((ViolationKind::StaleHome, Some(obs.slot), id));
            }
        }
        for (&id, &home) in &served {
            // Dead PEs still served.
            let key = (ViolationKind::DeadServed, Some(obs.slot), id);
            let overdue = match self.by_id.get(&id) {
                None => Some("not a PE of this run".to_owned()),
                Some(&index) => {
                    let life = &self.pes[index];
                    let end = life.end.map_or(0, |e| e.0);
                    self.deadline(life)
                        .filter(|(deadline, _)| *deadline < obs.sent)
                        .map(|(deadline, how)| {
                            format!("{how}, bound {} ms; home PR {home}", deadline - end)
                        })
                }
            };
            match overdue {
                Some(detail) => self.fail(key, &obs, id, || detail),
                None => self.pass(key),
            }
            // A home that has been down too long.
            let key = (ViolationKind::StaleHome, Some(obs.slot), id);
            match self.down_since(home, obs.sent) {
                Some(since) if since + b.takeover + b.update <= obs.sent => {
                    self.fail(key, &obs, id, || {
                        format!("home PR {home}, down since {:.1} s", since as f64 / 1000.0)
                    });
                }
                _ => self.pass(key),
            }
        }
        self.compare_homes(&obs, &served);
        self.latest.insert((obs.slot, obs.pool), obs);
    }

    /// The two-homes check: this answer against the latest settled answer of every other
    /// registrar for the same pool sent within the pair window.
    fn compare_homes(&mut self, obs: &Observation, served: &HashMap<u64, u64>) {
        let others: Vec<(usize, HashMap<u64, u64>)> = (0..self.slots.len())
            .filter(|&s| s != obs.slot)
            .filter_map(|s| self.latest.get(&(s, obs.pool)))
            .filter(|o| o.sent.abs_diff(obs.sent) <= self.pair_window)
            .filter(|o| self.settled(o.slot, o.sent, o.received))
            .map(|o| (o.slot, o.pes.iter().copied().collect()))
            .collect();
        for (&id, &home) in served {
            let mut compared = false;
            let mut disagreement = None;
            for (slot, pes) in &others {
                if let Some(&other) = pes.get(&id) {
                    compared = true;
                    if other != home {
                        disagreement = Some((*slot, other));
                    }
                }
            }
            let key = (ViolationKind::TwoHomes, None, id);
            match disagreement {
                Some((slot, other)) => {
                    let since = *self.conflict_since.entry(id).or_insert(obs.sent);
                    if obs.sent >= since + self.bounds.update {
                        let here = self.id_at(obs.slot, obs.sent);
                        let there = self.id_at(slot, obs.sent);
                        self.fail(key, obs, id, || {
                            format!(
                                "PR {here} says home {home}, PR {there} (slot {slot}) says home \
                                 {other}, since {:.1} s",
                                since as f64 / 1000.0
                            )
                        });
                    }
                }
                None if compared => {
                    self.conflict_since.remove(&id);
                    self.pass(key);
                }
                None => {}
            }
        }
    }

    /// Pools of the run.
    pub fn pools(&self) -> usize {
        self.pool_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::bounds::Timers;

    fn bounds() -> Bounds {
        Bounds::new(Timers {
            heartbeat: 200,
            max_time_last_heard: 400,
            max_time_no_response: 300,
            mentor_discovery_timeout: 1000,
            reconnect_interval: 200,
            keep_alive_interval: 300,
            keep_alive_timeout: 300,
        })
    }

    /// Three registrars (IDs 1, 2, 3) started at 0, one PE (7) in pool 0 registered at slot 0
    /// at 100.
    fn scope() -> Checker {
        let mut c = Checker::new(bounds(), 3, 1, 400);
        for slot in 0..3 {
            c.registrar_started(slot, slot as u64 + 1, 0);
        }
        c.pe_started(7, 0);
        c.pe_registered(7, 0, 100);
        c
    }

    fn obs(slot: usize, sent: Millis, pes: &[(u64, u64)]) -> Observation {
        Observation {
            slot,
            pool: 0,
            sent,
            received: sent + 5,
            pes: pes.to_vec(),
        }
    }

    fn kinds(c: &Checker) -> Vec<ViolationKind> {
        c.violations().iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_registered_pe_must_be_served_once_settled() {
        let mut c = scope();
        c.observe(obs(1, 500, &[]));
        assert!(c.violations().is_empty(), "registrar not settled yet");
        c.observe(obs(1, 1500, &[(7, 1)]));
        c.observe(obs(2, 1600, &[]));
        c.observe(obs(2, 1700, &[]));
        c.observe(obs(2, 1800, &[(7, 1)]));
        c.observe(obs(2, 1900, &[]));
        assert_eq!(kinds(&c), [ViolationKind::LiveMissing; 2]);
        assert_eq!(c.violations()[0].resolutions, 2);
        assert_eq!(c.violations()[0].registrar, Some((2, 3)));
    }

    #[test]
    fn a_pe_between_losing_and_regaining_its_registration_may_be_absent() {
        let mut c = scope();
        c.pe_unregistered(7, 2000);
        c.observe(obs(1, 2100, &[]));
        c.pe_registered(7, 1, 2200);
        c.observe(obs(1, 2300, &[]));
        assert!(c.violations().is_empty(), "{:?}", c.violations());
        c.observe(obs(1, 2200 + 700 + 10, &[]));
        assert_eq!(kinds(&c), [ViolationKind::LiveMissing]);
    }

    #[test]
    fn dead_pes_must_vanish_within_their_bound() {
        let mut c = scope();
        c.pe_ended(7, 2000, PeEnd::Deregistered);
        c.observe(obs(1, 2600, &[(7, 1)]));
        assert!(c.violations().is_empty());
        c.observe(obs(1, 2800, &[(7, 1)]));
        assert_eq!(kinds(&c), [ViolationKind::DeadServed]);
        let mut c = scope();
        c.pe_ended(7, 2000, PeEnd::Killed);
        c.observe(obs(2, 2000 + 887 + 650, &[(7, 1)]));
        assert!(c.violations().is_empty());
        c.observe(obs(2, 2000 + 887 + 750, &[(7, 1)]));
        assert_eq!(kinds(&c), [ViolationKind::DeadServed]);
    }

    #[test]
    fn a_pe_whose_home_went_down_may_live_out_its_registration() {
        let mut c = scope();
        c.registrar_ended(0, 1900);
        c.registrar_started(0, 11, 1905);
        c.pe_ended(7, 2000, PeEnd::Hung);
        c.observe(obs(1, 2000 + 5000, &[(7, 2)]));
        assert!(c.violations().is_empty(), "{:?}", c.violations());
        c.observe(obs(1, 2000 + 11_000 + 1050 + 700 + 1, &[(7, 2)]));
        assert_eq!(kinds(&c), [ViolationKind::DeadServed]);
    }

    #[test]
    fn homes_must_agree_after_the_update_bound_and_not_name_a_dead_pr() {
        let mut c = scope();
        c.observe(obs(1, 2000, &[(7, 1)]));
        c.observe(obs(2, 2010, &[(7, 3)]));
        c.observe(obs(1, 2400, &[(7, 1)]));
        assert!(c.violations().is_empty());
        c.observe(obs(2, 2750, &[(7, 3)]));
        assert_eq!(kinds(&c), [ViolationKind::TwoHomes]);
        let mut c = scope();
        c.registrar_stopped(0, 2000);
        c.observe(obs(1, 2000 + 1050 + 690, &[(7, 1)]));
        assert!(c.violations().is_empty());
        c.observe(obs(1, 2000 + 1050 + 710, &[(7, 1)]));
        assert_eq!(kinds(&c), [ViolationKind::StaleHome]);
    }

    #[test]
    fn stopped_and_restarted_registrars_are_judged_only_once_settled() {
        let mut c = scope();
        c.registrar_stopped(1, 2000);
        c.registrar_resumed(1, 4000);
        assert!(!c.settled(1, 1990, 2001));
        assert!(!c.settled(1, 4800, 4810));
        assert!(c.settled(1, 4900, 4910));
        c.registrar_ended(2, 5000);
        c.registrar_started(2, 13, 5001);
        assert!(!c.settled(2, 5900, 5910));
        assert!(c.settled(2, 6001, 6010));
        assert_eq!(c.down_since(3, 6000), Some(5000));
        assert_eq!(c.down_since(13, 6000), None);
        assert_eq!(c.down_since(2, 3000), Some(2000));
        assert_eq!(c.down_since(2, 4000), None);
        assert_eq!(c.down_since(99, 10), Some(0));
    }
}
