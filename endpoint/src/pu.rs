//! The pool user's ASAP procedures (RFC 5352 §3.3, §3.5-§3.7) as a sans-I/O state machine:
//! handle resolution with T1, MAX-REQUEST-RETRANSMIT and a parallel server hunt, a cache with a
//! stale time (C1-C4), member selection from the cached list by the pool's overall policy (RFC
//! 5356), rate-limited ASAP_ENDPOINT_UNREACHABLE reports and failover to the next PE.

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
}

impl Config {
    /// A PU of the RFC generation with RFC timers, a 1 s cache, and at most one report per PE
    /// per second and 10 reports per second.
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
}

#[derive(Clone, Debug)]
struct Pending {
    id: RequestId,
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

/// The sans-I/O pool user.
#[derive(Debug)]
pub struct PoolUser {
    config: Config,
    hunt: Hunt,
    conn: Option<(ConnId, Registrar)>,
    pending: Vec<Pending>,
    cache: HashMap<Vec<u8>, CacheEntry>,
    reports: VecDeque<(Vec<u8>, PeId)>,
    reported: HashMap<(Vec<u8>, PeId), Millis>,
    /// Unreachable reports per second (RFC 5355 §2.13 threat 8).
    report_rate: TokenBucket,
    rng: Rng,
    next_request: u64,
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
            reports: VecDeque::new(),
            reported: HashMap::new(),
            report_rate: TokenBucket::full(config.max_reports_per_second, 0),
            rng: Rng::seed(seed),
            next_request: 0,
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
        [self.hunt.poll_timeout(), t1].into_iter().flatten().min()
    }

    /// RFC 5352 §3.3: resolves `pool_handle` (`items`: how many PEs to ask for, RSPLIB's
    /// handle-resolution option). A fresh cache entry answers at once without a request (C1,
    /// C4); otherwise NR1-NR4: the request goes to the home PR, after a server hunt if there is
    /// none. The outcome is a [`PuEvent::Resolved`] or [`PuEvent::Failed`] with the returned ID.
    pub fn resolve(&mut self, pool_handle: &[u8], items: Option<u32>, now: Millis) -> RequestId {
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
        self.pending.push(Pending {
            id,
            handle: pool_handle.to_vec(),
            items,
            deadline: now + self.config.timers.t1_request.max(1),
            retransmits: 0,
            sent: false,
        });
        match self.conn {
            Some((conn, _)) => self.send_pending(conn),
            None => self.start_hunt(now),
        }
        id
    }

    /// The cached PEs of a pool while the entry is fresh (C2).
    pub fn cached(&self, pool_handle: &[u8], now: Millis) -> Option<&[PeInfo]> {
        self.fresh(pool_handle, now)
            .map(|e| e.pool_elements.as_slice())
    }

    fn fresh(&self, pool_handle: &[u8], now: Millis) -> Option<&CacheEntry> {
        self.cache
            .get(pool_handle)
            .filter(|e| now < e.fetched.saturating_add(self.config.cache_stale))
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
    /// parallel hunt, §3.7.2) and every unanswered request goes there.
    pub fn on_connected(&mut self, conn: ConnId, _local: Option<SocketAddr>, _now: Millis) {
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
    /// server hunt, then resend.
    pub fn on_closed(&mut self, conn: ConnId, now: Millis) {
        let Some((_, registrar)) = self.conn.filter(|(c, _)| *c == conn) else {
            return;
        };
        self.conn = None;
        for p in &mut self.pending {
            p.sent = false;
        }
        if !self.pending.is_empty() || !self.reports.is_empty() {
            let outcome = self.hunt.start(now, Some(registrar), &mut self.out);
            self.on_hunt(outcome);
        }
    }

    /// An ASAP_SERVER_ANNOUNCE datagram from `from` (RFC 5352 §3.6).
    pub fn on_announce(&mut self, from: SocketAddr, datagram: &[u8], now: Millis) {
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
    /// MAX-REQUEST-RETRANSMIT times, then an error), T5, T7.
    pub fn handle_timeout(&mut self, now: Millis) {
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
                self.fail(p, error);
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

    /// One complete ASAP message received on `conn`.
    pub fn on_message(&mut self, conn: ConnId, message: &[u8], now: Millis) {
        if self.conn.is_none_or(|(c, _)| c != conn) {
            return;
        }
        let Ok(decoded) = AsapMessage::decode(message, self.config.generation) else {
            return;
        };
        let AsapMessage::HandleResolutionResponse {
            pool_handle,
            resolution,
            ..
        } = decoded.message
        else {
            return;
        };
        let Some(i) = self
            .pending
            .iter()
            .position(|p| p.sent && p.handle == pool_handle.0)
        else {
            return;
        };
        let p = self.pending.remove(i);
        match resolution_outcome(&p.handle, resolution) {
            Ok((pool_elements, policy)) => {
                self.cache.insert(
                    p.handle.clone(),
                    CacheEntry {
                        pool_elements: pool_elements.clone(),
                        policy,
                        fetched: now,
                        cursor: 0,
                    },
                );
                let event = PuEvent::Resolved {
                    request: p.id,
                    pool_handle: p.handle,
                    pool_elements,
                    policy,
                    cached: false,
                };
                self.out.push_back(Action::Event(event));
            }
            Err(error) => {
                self.cache.remove(pool_handle.0);
                self.fail(p, error);
            }
        }
    }

    fn fail(&mut self, p: Pending, error: Error) {
        let event = PuEvent::Failed {
            request: p.id,
            pool_handle: p.handle,
            error,
        };
        self.out.push_back(Action::Event(event));
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
            for p in std::mem::take(&mut self.pending) {
                self.fail(p, Error::Unreachable(failures.clone()));
            }
            self.reports.clear();
        }
        self.hunt.stop(&mut self.out);
    }

    /// NR3: sends every request not yet sent on `conn`.
    fn send_pending(&mut self, conn: ConnId) {
        let generation = self.config.generation;
        for p in self.pending.iter_mut().filter(|p| !p.sent) {
            let message = AsapMessage::HandleResolution {
                subscribe: false,
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
