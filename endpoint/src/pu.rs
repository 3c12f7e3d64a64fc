//! The pool user's ASAP procedures (RFC 5352 §3.3, §3.5-§3.7) as a sans-I/O state machine:
//! handle resolution with T1, MAX-REQUEST-RETRANSMIT and a parallel server hunt, a cache with a
//! stale time (C1-C4), member selection from the cached list by the pool's overall policy (RFC
//! 5356), rate-limited ASAP_ENDPOINT_UNREACHABLE reports and failover to the next PE; and
//! subscriptions to a pool's changes (RFC 5352 §2.2.5-§2.2.6, the S and A bits), pushed by a
//! registrar that accepts them and polled from one that declines.
//!
//! A subscription ([`PoolUser::subscribe`]) sends ASAP_HANDLE_RESOLUTION with the S bit. A
//! registrar that answers with the A bit pushes a new ASAP_HANDLE_RESOLUTION_RESPONSE (A set)
//! whenever the pool changes, for the life of the association, with the Unknown Pool Handle cause
//! when the pool vanished (the subscription stays: the pool may come back). A registrar that
//! answers without it (RSPLIB's, or any that declines) is asked again every
//! [`Config::poll_interval`]. When the association is lost the PU subscribes again at the next
//! registrar of the server hunt. Each answer, pushed or polled, is compared with the previous
//! one and the difference reported as a [`PuEvent::Subscription`] ([`PoolChange`]).
//!
//! RFC 5352 has no message to end a subscription: [`PoolUser::unsubscribe`] makes the PU ignore
//! the pool's pushes, and closes the association when it carried the last accepted subscription
//! and nothing else is outstanding, so that the registrar stops pushing.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use rserpool_protocol::{
    AsapMessage, Generation, PeId, Policy, PoolHandle, Resolution, cause as codes,
};

use rserpool_handlespace::TokenBucket;

use crate::servers::{AnnounceSettings, Hunt, HuntOutcome, ServerList};
use crate::{
    Action, Cause, ConnId, ConnectFailure, Error, Millis, PeInfo, Registrar, Rng, StreamTransport,
    Timers,
};

/// Unreachable reports waiting for a registrar connection, at most.
const MAX_QUEUED_REPORTS: usize = 32;

/// A pool user's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The configured registrars, in order of preference.
    pub registrars: Vec<Registrar>,
    /// The wire generation of the registrars.
    pub generation: Generation,
    /// RFC 5352 §7 timers.
    pub timers: Timers,
    /// stale_cache_value: how long a resolution answers later ones without a request (C2);
    /// 0 = no cache.
    pub cache_stale: Millis,
    /// Least time between two unreachable reports of the same PE (RFC 5355 §2.13 threat 8).
    pub report_interval: Millis,
    /// Most unreachable reports per second over all PEs.
    pub max_reports_per_second: u32,
    /// How to reach registrars learnt from announces.
    pub announce_transport: StreamTransport,
    /// Port of an announce without transport parameters (`None` = its source port).
    pub announce_default_port: Option<u16>,
    /// How often a subscribed pool is resolved again when the registrar declined the
    /// subscription (A bit clear, RFC 5352 §2.2.6), and how long after a failed attempt a
    /// subscription is tried again.
    pub poll_interval: Millis,
}

impl Config {
    /// A PU of the RFC generation with RFC timers, a 1 s cache, at most one report per PE per
    /// second and 10 reports per second, and subscriptions polled every second where the
    /// registrar declines them.
    pub fn new(registrars: Vec<Registrar>) -> Self {
        Self {
            registrars,
            generation: Generation::Rfc,
            timers: Timers::default(),
            cache_stale: 1_000,
            report_interval: 1_000,
            max_reports_per_second: 10,
            announce_transport: StreamTransport::Tcp,
            announce_default_port: None,
            poll_interval: 1_000,
        }
    }
}

/// Names one [`PoolUser::resolve`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// What a PU tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PuEvent {
    /// A resolution succeeded.
    Resolved {
        /// The request.
        request: RequestId,
        /// The pool.
        pool_handle: Vec<u8>,
        /// The PEs, in the registrar's order.
        pool_elements: Vec<PeInfo>,
        /// The overall pool policy (Round Robin when the response had none, RFC 5352 §2.2.6).
        policy: Policy,
        /// Answered from the cache without a request (C4).
        cached: bool,
    },
    /// A resolution failed.
    Failed {
        /// The request.
        request: RequestId,
        /// The pool.
        pool_handle: Vec<u8>,
        /// Why.
        error: Error,
    },
    /// A connection to a registrar is up and is the PU's home PR now.
    Connected {
        /// The registrar.
        registrar: Registrar,
    },
    /// A connection attempt of the server hunt failed.
    ConnectFailed(ConnectFailure),
    /// Something happened to a subscribed pool ([`PoolUser::subscribe`]).
    Subscription {
        /// The pool.
        pool_handle: Vec<u8>,
        /// What happened.
        change: PoolChange,
    },
}

/// How a subscribed pool is kept current.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscriptionMode {
    /// The registrar accepted the subscription (A bit, RFC 5352 §2.2.6) and pushes every change
    /// of the pool for the life of the association.
    Pushed,
    /// The registrar declined it (A bit clear, as RSPLIB's registrar answers): the PU resolves
    /// the pool again every [`Config::poll_interval`].
    Polling,
}

/// What happened to a subscribed pool, as [`PuEvent::Subscription`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolChange {
    /// The registrar answered the subscription request, and this is how the pool is followed
    /// now; reported on the first answer and whenever it differs from the previous registrar's.
    Mode(SubscriptionMode),
    /// The pool's PEs differ from the last answer (on the first answer, or when the pool came
    /// back, every PE is added).
    Elements {
        /// PEs that were not in the pool, in the registrar's order.
        added: Vec<PeInfo>,
        /// PEs that left the pool.
        removed: Vec<PeInfo>,
        /// PEs still in the pool with another transport or policy (weight, load), with their
        /// new values.
        changed: Vec<PeInfo>,
        /// The pool's PEs now, in the registrar's order.
        elements: Vec<PeInfo>,
    },
    /// The registrar does not know the pool (Unknown Pool Handle, cause 0x9): it has no PE left,
    /// or never had one. The subscription stays: the pool may come back.
    Gone {
        /// The PEs the pool had at the last answer.
        removed: Vec<PeInfo>,
    },
    /// An attempt to learn the pool failed (no registrar reachable, no answer within T1, a
    /// refusal other than Unknown Pool Handle); the PU tries again. Reported once until the
    /// error differs or an answer arrives.
    Failed(Error),
}

/// Follows the answers for one pool and tells what changed from one to the next: the PU core
/// keeps one per subscription; a caller that resolves by itself (stateless resolution over UDP,
/// [`crate::driver::resolve_udp`]) can use it the same way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolTracker {
    /// The last answer: `Some(list)`, or `None` for Unknown Pool Handle; `None` before one.
    known: Option<Option<Vec<PeInfo>>>,
    /// The last failure, until an answer arrives.
    error: Option<Error>,
    updates: u64,
}

impl PoolTracker {
    /// A tracker that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the outcome of one resolution (or push) of the pool and returns what changed:
    /// nothing when the PEs are the same as before (same IDs, transports and policies) or the
    /// error the same as the last one. [`Error::UnknownPool`] is [`PoolChange::Gone`].
    pub fn update(&mut self, outcome: Result<Vec<PeInfo>, Error>) -> Option<PoolChange> {
        self.updates += 1;
        match outcome {
            Ok(elements) => {
                self.error = None;
                let first = !matches!(self.known, Some(Some(_)));
                let old = match self.known.take() {
                    Some(Some(old)) => old,
                    _ => Vec::new(),
                };
                let (added, removed, changed) = diff(&old, &elements);
                let any = first || !added.is_empty() || !removed.is_empty() || !changed.is_empty();
                self.known = Some(Some(elements.clone()));
                any.then_some(PoolChange::Elements {
                    added,
                    removed,
                    changed,
                    elements,
                })
            }
            Err(Error::UnknownPool { .. }) => {
                self.error = None;
                match self.known.replace(None) {
                    Some(None) => None,
                    Some(Some(removed)) => Some(PoolChange::Gone { removed }),
                    None => Some(PoolChange::Gone {
                        removed: Vec::new(),
                    }),
                }
            }
            Err(error) => {
                if self.error.as_ref() == Some(&error) {
                    return None;
                }
                self.error = Some(error.clone());
                Some(PoolChange::Failed(error))
            }
        }
    }

    /// The pool's PEs at the last answer; `None` before one or when the pool is unknown.
    pub fn elements(&self) -> Option<&[PeInfo]> {
        self.known.as_ref().and_then(Option::as_deref)
    }

    /// How many outcomes [`Self::update`] took, changes or not.
    pub fn updates(&self) -> u64 {
        self.updates
    }
}

/// The PEs of `new` not in `old`, of `old` not in `new`, and of `new` whose transport or policy
/// differs from `old`'s (by PE ID).
fn diff(old: &[PeInfo], new: &[PeInfo]) -> (Vec<PeInfo>, Vec<PeInfo>, Vec<PeInfo>) {
    let before: HashMap<PeId, &PeInfo> = old.iter().map(|p| (p.id, p)).collect();
    let after: HashMap<PeId, &PeInfo> = new.iter().map(|p| (p.id, p)).collect();
    let added = new
        .iter()
        .filter(|p| !before.contains_key(&p.id))
        .cloned()
        .collect();
    let removed = old
        .iter()
        .filter(|p| !after.contains_key(&p.id))
        .cloned()
        .collect();
    let changed = new
        .iter()
        .filter(|p| {
            before
                .get(&p.id)
                .is_some_and(|o| o.transport != p.transport || o.policy != p.policy)
        })
        .cloned()
        .collect();
    (added, removed, changed)
}

/// What a handle resolution on the wire is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A [`PoolUser::resolve`] call (S bit clear).
    Resolve(RequestId),
    /// A subscription, asked for the first time, again on a new registrar, or polled (S bit set:
    /// a registrar that declined may accept the next time).
    Subscribe,
}

#[derive(Clone, Debug)]
struct Pending {
    kind: Kind,
    handle: Vec<u8>,
    items: Option<u32>,
    deadline: Millis,
    retransmits: u32,
    sent: bool,
}

#[derive(Clone, Debug)]
struct CacheEntry {
    pool_elements: Vec<PeInfo>,
    policy: Policy,
    fetched: Millis,
    cursor: usize,
}

/// One subscribed pool.
#[derive(Clone, Debug)]
struct Subscription {
    items: Option<u32>,
    /// How the current registrar answered; `None` before its answer.
    mode: Option<SubscriptionMode>,
    /// The mode last reported, so that a new registrar answering the same way says nothing.
    reported: Option<SubscriptionMode>,
    /// When to ask again (polling, or a retry after a failure).
    next_request: Option<Millis>,
    tracker: PoolTracker,
}

/// The sans-I/O pool user.
#[derive(Debug)]
pub struct PoolUser {
    config: Config,
    hunt: Hunt,
    conn: Option<(ConnId, Registrar)>,
    pending: Vec<Pending>,
    cache: HashMap<Vec<u8>, CacheEntry>,
    subscriptions: HashMap<Vec<u8>, Subscription>,
    reports: VecDeque<(Vec<u8>, PeId)>,
    reported: HashMap<(Vec<u8>, PeId), Millis>,
    /// Unreachable reports per second (RFC 5355 §2.13 threat 8).
    report_rate: TokenBucket,
    rng: Rng,
    next_request: u64,
    /// The latest time an input carried: what a failure without one (a failed connection
    /// attempt) schedules the next subscription attempt from.
    clock: Millis,
    out: VecDeque<Action<PuEvent>>,
}

impl PoolUser {
    /// A PU for `config`; `seed` drives random member selection.
    pub fn new(config: Config, seed: u64) -> Self {
        Self {
            hunt: Hunt::new(ServerList::configured(&config.registrars), config.timers),
            conn: None,
            pending: Vec::new(),
            cache: HashMap::new(),
            subscriptions: HashMap::new(),
            reports: VecDeque::new(),
            reported: HashMap::new(),
            report_rate: TokenBucket::full(config.max_reports_per_second, 0),
            rng: Rng::seed(seed),
            next_request: 0,
            clock: 0,
            out: VecDeque::new(),
            config,
        }
    }

    /// The home PR, when connected.
    pub fn registrar(&self) -> Option<Registrar> {
        self.conn.map(|(_, r)| r)
    }

    /// The registrars known (configured and learnt).
    pub fn servers(&self) -> &ServerList {
        self.hunt.list()
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action<PuEvent>> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let t1 = self.pending.iter().map(|p| p.deadline).min();
        let polls = self
            .subscriptions
            .values()
            .filter_map(|s| s.next_request)
            .min();
        [self.hunt.poll_timeout(), t1, polls]
            .into_iter()
            .flatten()
            .min()
    }

    /// RFC 5352 §3.3: resolves `pool_handle` (`items`: how many PEs to ask for, RSPLIB's
    /// handle-resolution option). A fresh cache entry answers at once without a request (C1,
    /// C4); otherwise NR1-NR4: the request goes to the home PR, after a server hunt if there is
    /// none. The outcome is a [`PuEvent::Resolved`] or [`PuEvent::Failed`] with the returned ID.
    pub fn resolve(&mut self, pool_handle: &[u8], items: Option<u32>, now: Millis) -> RequestId {
        self.clock = self.clock.max(now);
        self.next_request += 1;
        let id = RequestId(self.next_request);
        if let Some(e) = self.fresh(pool_handle, now) {
            let event = PuEvent::Resolved {
                request: id,
                pool_handle: pool_handle.to_vec(),
                pool_elements: e.pool_elements.clone(),
                policy: e.policy,
                cached: true,
            };
            self.out.push_back(Action::Event(event));
            return id;
        }
        self.request(Kind::Resolve(id), pool_handle.to_vec(), items, now);
        id
    }

    /// RFC 5352 §2.2.5: subscribes to the changes of `pool_handle` (`items` as for
    /// [`Self::resolve`]): a handle resolution with the S bit goes to the home PR, after a server
    /// hunt if there is none. What follows comes as [`PuEvent::Subscription`] events: the mode
    /// once the registrar answered ([`PoolChange::Mode`]: pushed when it set the A bit, polled
    /// every [`Config::poll_interval`] when not), then every change of the pool. While pushed,
    /// the pool's cache entry does not go stale. Subscribing to a pool already subscribed does
    /// nothing.
    pub fn subscribe(&mut self, pool_handle: &[u8], items: Option<u32>, now: Millis) {
        self.clock = self.clock.max(now);
        if self.subscriptions.contains_key(pool_handle) {
            return;
        }
        let subscription = Subscription {
            items,
            mode: None,
            reported: None,
            next_request: None,
            tracker: PoolTracker::new(),
        };
        self.subscriptions
            .insert(pool_handle.to_vec(), subscription);
        self.request(Kind::Subscribe, pool_handle.to_vec(), items, now);
    }

    /// Ends the subscription to `pool_handle`. RFC 5352 has no message for it: the PU ignores
    /// the pool's pushes from now on, and when this was the last subscription the registrar
    /// accepted and no request is outstanding it closes the association, so that the registrar
    /// stops pushing (the next request hunts for a registrar again). Returns whether the pool
    /// was subscribed.
    pub fn unsubscribe(&mut self, pool_handle: &[u8]) -> bool {
        let Some(gone) = self.subscriptions.remove(pool_handle) else {
            return false;
        };
        let pushed = |s: &Subscription| s.mode == Some(SubscriptionMode::Pushed);
        if pushed(&gone)
            && !self.subscriptions.values().any(pushed)
            && self.pending.is_empty()
            && let Some((conn, _)) = self.conn.take()
        {
            self.out.push_back(Action::Close { conn });
        }
        true
    }

    /// How a subscribed pool is followed: `None` when it is not subscribed or the registrar has
    /// not answered the subscription yet.
    pub fn subscription_mode(&self, pool_handle: &[u8]) -> Option<SubscriptionMode> {
        self.subscriptions.get(pool_handle).and_then(|s| s.mode)
    }

    /// What the PU knows of a subscribed pool: its PEs at the last answer and how many answers
    /// (and failed attempts) it had; `None` when the pool is not subscribed.
    pub fn subscription(&self, pool_handle: &[u8]) -> Option<&PoolTracker> {
        self.subscriptions.get(pool_handle).map(|s| &s.tracker)
    }

    /// Queues one handle resolution (NR1-NR4): to the home PR, after a server hunt if there is
    /// none.
    fn request(&mut self, kind: Kind, handle: Vec<u8>, items: Option<u32>, now: Millis) {
        self.pending.push(Pending {
            kind,
            handle,
            items,
            deadline: now + self.config.timers.t1_request.max(1),
            retransmits: 0,
            sent: false,
        });
        match self.conn {
            Some((conn, _)) => self.send_pending(conn),
            None => self.start_hunt(now),
        }
    }

    /// The cached PEs of a pool while the entry is fresh (C2).
    pub fn cached(&self, pool_handle: &[u8], now: Millis) -> Option<&[PeInfo]> {
        self.fresh(pool_handle, now)
            .map(|e| e.pool_elements.as_slice())
    }

    /// The cache entry while it is fresh (C2); an entry of a pool whose subscription the home
    /// PR accepted stays fresh, since every change is pushed (RFC 5352 §2.2.5).
    fn fresh(&self, pool_handle: &[u8], now: Millis) -> Option<&CacheEntry> {
        let pushed = self.subscription_mode(pool_handle) == Some(SubscriptionMode::Pushed);
        self.cache
            .get(pool_handle)
            .filter(|e| pushed || now < e.fetched.saturating_add(self.config.cache_stale))
    }

    /// Picks the PE to use from the cached list (fresh or stale) by the pool's overall policy,
    /// ignoring the policy parameters inside each PE (RFC 5352 §2.2.6; checklist PU-05): round
    /// robin and weighted round robin rotate, random and weighted random draw uniformly, every
    /// other policy (priority, least used and their variants) takes the registrar's order.
    pub fn select(&mut self, pool_handle: &[u8]) -> Option<PeInfo> {
        let e = self.cache.get_mut(pool_handle)?;
        let n = e.pool_elements.len();
        if n == 0 {
            return None;
        }
        let i = match e.policy {
            Policy::RoundRobin | Policy::WeightedRoundRobin { .. } => {
                let i = e.cursor % n;
                e.cursor = (i + 1) % n;
                i
            }
            Policy::Random | Policy::WeightedRandom { .. } => self.rng.below(n as u64) as usize,
            _ => 0,
        };
        Some(e.pool_elements[i].clone())
    }

    /// The PE `pe_id` of `pool_handle` failed the application: report it (at most once for this
    /// failure, rate limited), drop it from the cached list and pick the next PE by the policy.
    pub fn pe_failed(&mut self, pool_handle: &[u8], pe_id: PeId, now: Millis) -> Option<PeInfo> {
        self.report_unreachable(pool_handle, pe_id, now);
        if let Some(e) = self.cache.get_mut(pool_handle)
            && let Some(i) = e.pool_elements.iter().position(|p| p.id == pe_id)
        {
            e.pool_elements.remove(i);
            if e.cursor > i {
                e.cursor -= 1;
            }
        }
        self.select(pool_handle)
    }

    /// RFC 5352 §3.5: sends ASAP_ENDPOINT_UNREACHABLE for a PE that failed the application. Only
    /// PEs this PU got from a resolution are reported; at most one report per PE per
    /// `report_interval` and `max_reports_per_second` in all (RFC 5355 §2.13). Returns whether a
    /// report was sent or queued for the next registrar connection.
    pub fn report_unreachable(&mut self, pool_handle: &[u8], pe_id: PeId, now: Millis) -> bool {
        let known = self
            .cache
            .get(pool_handle)
            .is_some_and(|e| e.pool_elements.iter().any(|p| p.id == pe_id));
        if !known {
            return false;
        }
        let interval = self.config.report_interval;
        self.reported
            .retain(|_, at| now < at.saturating_add(interval));
        let key = (pool_handle.to_vec(), pe_id);
        if self.reported.contains_key(&key) {
            return false;
        }
        if !self
            .report_rate
            .take(self.config.max_reports_per_second, now)
        {
            return false;
        }
        self.reported.insert(key.clone(), now);
        match self.conn {
            Some((conn, _)) => self.send_report(conn, &key.0, key.1),
            None => {
                if self.reports.len() >= MAX_QUEUED_REPORTS {
                    self.reports.pop_front();
                }
                self.reports.push_back(key);
                self.start_hunt(now);
            }
        }
        true
    }

    /// A connection the PU asked for is up: it becomes the home PR (RFC 5352 §3.6 SH6; after a
    /// parallel hunt, §3.7.2), every unanswered request goes there, and every subscription is
    /// asked for there again (the old registrar's acceptance ended with its association).
    pub fn on_connected(&mut self, conn: ConnId, _local: Option<SocketAddr>, now: Millis) {
        self.clock = self.clock.max(now);
        match self.hunt.on_connected(conn, &mut self.out) {
            HuntOutcome::Found(registrar) => {
                if let Some((old, _)) = self.conn.replace((conn, registrar)) {
                    self.out.push_back(Action::Close { conn: old });
                }
                self.out
                    .push_back(Action::Event(PuEvent::Connected { registrar }));
                for p in &mut self.pending {
                    p.sent = false;
                }
                self.resubscribe(now);
                self.send_pending(conn);
                while let Some((handle, pe_id)) = self.reports.pop_front() {
                    self.send_report(conn, &handle, pe_id);
                }
            }
            _ if self.conn.is_some_and(|(c, _)| c == conn) => {}
            _ => self.out.push_back(Action::Close { conn }),
        }
    }

    /// A connection attempt failed (`error`: the OS error as text).
    pub fn on_connect_failed(&mut self, conn: ConnId, error: String) {
        if let Some((failure, outcome)) = self.hunt.on_connect_failed(conn, error, &mut self.out) {
            self.out
                .push_back(Action::Event(PuEvent::ConnectFailed(failure)));
            self.on_hunt(outcome);
        }
    }

    /// A connection closed or a send failed: RFC 5352 §3.7.1, no resend to the same registrar;
    /// server hunt, then resend; subscriptions are asked for again at the registrar found.
    pub fn on_closed(&mut self, conn: ConnId, now: Millis) {
        self.clock = self.clock.max(now);
        let Some((_, registrar)) = self.conn.filter(|(c, _)| *c == conn) else {
            return;
        };
        self.conn = None;
        for p in &mut self.pending {
            p.sent = false;
        }
        self.resubscribe(now);
        if !self.pending.is_empty() || !self.reports.is_empty() {
            let outcome = self.hunt.start(now, Some(registrar), &mut self.out);
            self.on_hunt(outcome);
        }
    }

    /// An ASAP_SERVER_ANNOUNCE datagram from `from` (RFC 5352 §3.6).
    pub fn on_announce(&mut self, from: SocketAddr, datagram: &[u8], now: Millis) {
        self.clock = self.clock.max(now);
        let settings = AnnounceSettings {
            generation: self.config.generation,
            transport: self.config.announce_transport,
            default_port: self.config.announce_default_port,
        };
        let outcome = self
            .hunt
            .on_announce(from, datagram, now, &settings, &mut self.out);
        self.on_hunt(outcome);
    }

    /// Timers: T1 (RFC 5352 §3.7.2: resend, restart T1 and hunt in parallel, up to
    /// MAX-REQUEST-RETRANSMIT times, then an error), T5, T7, and the next request of a polled
    /// or failed subscription.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.clock = self.clock.max(now);
        let due: Vec<(Vec<u8>, Option<u32>)> = self
            .subscriptions
            .iter_mut()
            .filter(|(_, s)| s.next_request.is_some_and(|t| t <= now))
            .map(|(handle, s)| {
                s.next_request = None;
                (handle.clone(), s.items)
            })
            .collect();
        for (handle, items) in due {
            self.request(Kind::Subscribe, handle, items, now);
        }
        let outcome = self.hunt.on_timeout(now, &mut self.out);
        self.on_hunt(outcome);
        let max = self.config.timers.max_request_retransmit;
        let mut hunt = false;
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].deadline > now {
                i += 1;
                continue;
            }
            let p = &mut self.pending[i];
            if p.retransmits < max {
                p.retransmits += 1;
                p.deadline = now + self.config.timers.t1_request.max(1);
                p.sent = false;
                hunt = true;
                i += 1;
            } else {
                let p = self.pending.remove(i);
                let error = Error::Timeout {
                    request: "handle resolution",
                    attempts: p.retransmits + 1,
                };
                self.fail(p, error, now);
            }
        }
        if let Some((conn, _)) = self.conn {
            self.send_pending(conn);
        }
        if hunt {
            let after = self.conn.map(|(_, r)| r);
            let outcome = self.hunt.start(now, after, &mut self.out);
            self.on_hunt(outcome);
        }
    }

    /// One complete ASAP message received on `conn`. A handle resolution response with the A
    /// bit answers the pool's outstanding subscription request, or else is a push (RFC 5352
    /// §2.2.6); one without it answers the pool's oldest outstanding request, and a subscription
    /// request answered so was declined.
    pub fn on_message(&mut self, conn: ConnId, message: &[u8], now: Millis) {
        self.clock = self.clock.max(now);
        if self.conn.is_none_or(|(c, _)| c != conn) {
            return;
        }
        let Ok(decoded) = AsapMessage::decode(message, self.config.generation) else {
            return;
        };
        let AsapMessage::HandleResolutionResponse {
            accepted,
            pool_handle,
            resolution,
        } = decoded.message
        else {
            return;
        };
        let handle = pool_handle.0;
        let outcome = resolution_outcome(handle, resolution);
        // A push carries the A bit and answers no request: a PU only sends the S bit on
        // subscription requests, so a response with it is never the answer to a resolve call.
        let answered = self
            .pending
            .iter()
            .position(|p| p.sent && p.handle == handle && (!accepted || p.kind == Kind::Subscribe));
        let kind = answered.map(|i| self.pending.remove(i).kind);
        if kind.is_none() && !(accepted && self.subscriptions.contains_key(handle)) {
            return;
        }
        match &outcome {
            Ok((pool_elements, policy)) => {
                let cursor = self.cache.get(handle).map_or(0, |e| e.cursor);
                let entry = CacheEntry {
                    pool_elements: pool_elements.clone(),
                    policy: *policy,
                    fetched: now,
                    cursor,
                };
                self.cache.insert(handle.to_vec(), entry);
            }
            Err(_) => {
                self.cache.remove(handle);
            }
        }
        if let Some(Kind::Resolve(id)) = kind {
            let event = match outcome {
                Ok((pool_elements, policy)) => PuEvent::Resolved {
                    request: id,
                    pool_handle: handle.to_vec(),
                    pool_elements,
                    policy,
                    cached: false,
                },
                Err(error) => PuEvent::Failed {
                    request: id,
                    pool_handle: handle.to_vec(),
                    error,
                },
            };
            self.out.push_back(Action::Event(event));
            // A resolve call's answer may select other PEs (another `items`, a random policy):
            // only the subscription's own answers and pushes are compared with each other.
            return;
        }
        let Some(s) = self.subscriptions.get_mut(handle) else {
            return;
        };
        if kind == Some(Kind::Subscribe) {
            // RFC 5352 §2.2.6: the A bit says whether the registrar accepted; without it, poll.
            let mode = if accepted {
                SubscriptionMode::Pushed
            } else {
                SubscriptionMode::Polling
            };
            s.mode = Some(mode);
            s.next_request = (!accepted).then(|| now + self.config.poll_interval.max(1));
            if s.reported != Some(mode) {
                s.reported = Some(mode);
                self.out.push_back(Action::Event(PuEvent::Subscription {
                    pool_handle: handle.to_vec(),
                    change: PoolChange::Mode(mode),
                }));
            }
        }
        // Every answer to the subscription, pushed or polled, is the pool's latest state.
        let change = s
            .tracker
            .update(outcome.map(|(pool_elements, _)| pool_elements));
        if let Some(change) = change {
            self.out.push_back(Action::Event(PuEvent::Subscription {
                pool_handle: handle.to_vec(),
                change,
            }));
        }
    }

    /// A request is given up: a resolve call fails; a subscription reports the failure and is
    /// tried again after the poll interval.
    fn fail(&mut self, p: Pending, error: Error, now: Millis) {
        match p.kind {
            Kind::Resolve(request) => {
                let event = PuEvent::Failed {
                    request,
                    pool_handle: p.handle,
                    error,
                };
                self.out.push_back(Action::Event(event));
            }
            Kind::Subscribe => {
                let Some(s) = self.subscriptions.get_mut(&p.handle) else {
                    return;
                };
                s.next_request = Some(now + self.config.poll_interval.max(1));
                if let Some(change) = s.tracker.update(Err(error)) {
                    self.out.push_back(Action::Event(PuEvent::Subscription {
                        pool_handle: p.handle,
                        change,
                    }));
                }
            }
        }
    }

    /// The association that carried the subscriptions is gone or replaced: every subscription
    /// without an outstanding request is asked for again (on the home PR, or after the hunt).
    fn resubscribe(&mut self, now: Millis) {
        let mut again = Vec::new();
        for (handle, s) in &mut self.subscriptions {
            s.mode = None;
            let asking = self
                .pending
                .iter()
                .any(|p| p.kind == Kind::Subscribe && p.handle == *handle);
            if !asking {
                s.next_request = None;
                again.push((handle.clone(), s.items));
            }
        }
        for (handle, items) in again {
            self.pending.push(Pending {
                kind: Kind::Subscribe,
                handle,
                items,
                deadline: now + self.config.timers.t1_request.max(1),
                retransmits: 0,
                sent: false,
            });
        }
    }

    fn start_hunt(&mut self, now: Millis) {
        let outcome = self.hunt.start(now, None, &mut self.out);
        self.on_hunt(outcome);
    }

    /// Every registrar failed in a hunt round: requests that have no registrar to go to fail
    /// now, and the hunt stops until the next request.
    fn on_hunt(&mut self, outcome: HuntOutcome) {
        let HuntOutcome::RoundFailed(failures) = outcome else {
            return;
        };
        if self.conn.is_none() {
            let now = self.clock;
            for p in std::mem::take(&mut self.pending) {
                self.fail(p, Error::Unreachable(failures.clone()), now);
            }
            self.reports.clear();
        }
        self.hunt.stop(&mut self.out);
    }

    /// NR3: sends every request not yet sent on `conn`; a subscription's with the S bit (RFC
    /// 5352 §2.2.5).
    fn send_pending(&mut self, conn: ConnId) {
        let generation = self.config.generation;
        for p in self.pending.iter_mut().filter(|p| !p.sent) {
            let message = AsapMessage::HandleResolution {
                subscribe: p.kind == Kind::Subscribe,
                pool_handle: PoolHandle(&p.handle),
                items: p.items,
            };
            if let Ok(message) = crate::encode(&message, generation) {
                p.sent = true;
                self.out.push_back(Action::Send { conn, message });
            }
        }
    }

    fn send_report(&mut self, conn: ConnId, pool_handle: &[u8], pe_id: PeId) {
        let message = AsapMessage::EndpointUnreachable {
            pool_handle: PoolHandle(pool_handle),
            pe_id,
        };
        if let Ok(message) = crate::encode(&message, self.config.generation) {
            self.out.push_back(Action::Send { conn, message });
        }
    }
}

/// What an ASAP_HANDLE_RESOLUTION_RESPONSE for `pool_handle` says (RFC 5352 §3.3): the PEs with
/// the pool's overall policy (Round Robin when the response had none, checklist PU-08), or the
/// registrar's refusal (cause 0x9 as [`Error::UnknownPool`]). The PU core and the stateless UDP
/// resolution ([`crate::driver::resolve_udp`]) read responses with it.
pub(crate) fn resolution_outcome(
    pool_handle: &[u8],
    resolution: Resolution<'_>,
) -> Result<(Vec<PeInfo>, Policy), Error> {
    match resolution {
        Resolution::Found {
            policy,
            pool_elements,
        } => {
            let pool_elements = pool_elements
                .iter()
                .map(|pe| PeInfo::from_view(&pe))
                .collect();
            Ok((pool_elements, policy.unwrap_or(Policy::RoundRobin)))
        }
        Resolution::Failed(causes) => {
            let code = causes.first().map_or(codes::UNSPECIFIED, |c| c.code);
            Err(if code == codes::UNKNOWN_POOL_HANDLE {
                Error::UnknownPool {
                    pool_handle: PoolHandle(pool_handle).to_string(),
                }
            } else {
                Error::Operation {
                    request: "handle resolution",
                    cause: Cause(code),
                }
            })
        }
    }
}

#[cfg(test)]
mod tests;
