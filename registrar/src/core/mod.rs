//! The PR as a sans-I/O state machine: ASAP towards PEs and PUs (RFC 5352, `asap`), ENRP towards
//! the other PRs of the operating scope (RFC 5353, `enrp`), one [`Worker`] per core, fed with
//! received messages ([`Worker::handle`]), timer ticks and messages forwarded by other workers;
//! it answers with an [`Output`] of messages to transmit, associations to abort or open and
//! writes to forward to other workers. No clock, no socket, no blocking (design §2, §7). The core
//! imports only `rserpool-protocol`, `rserpool-handlespace` and itself (a test checks it): what
//! it counts lives in [`counters`], and the drivers map their sockets to [`AssociationInfo`]
//! and [`Received`].
//!
//! Ownership (design §3): each worker is the single writer of one handlespace shard; any worker
//! resolves handles lock-free through the shared read side. A registration or deregistration
//! received by one worker for a pool in another worker's shard is forwarded there
//! ([`Forward`]); the owner applies it, encodes the response and forwards it back to the worker
//! holding the association, which sends it. Keep-alive monitoring of a PE lives with its
//! association's worker, expiry by registration life with the pool's shard.

pub mod access;
mod asap;
pub mod counters;
mod encoded;
mod enrp;
mod forward;
pub mod identity;
pub mod in_memory;
mod keepalive;
mod output;
mod rates;
mod refusals;
pub mod subnet;
mod subscriptions;

use std::net::SocketAddr;
use std::sync::Arc;

use rserpool_handlespace::timer::TimerWheel;
use rserpool_handlespace::{
    AssociationId, FastMap, HandlespaceReader, ItemCount, Millis, PeId, PinnedReader, PrId, Rng,
    Shard, TokenBucket,
};
use rserpool_protocol::Generation;
use rserpool_protocol::url::{Transport, TransportUrl};

use self::counters::{Limit, RemovalReason, RequestKind, WorkerMetrics};
pub use self::enrp::{
    AllowedPeer, AllowedPeerError, EnrpConfig, PeerAdd, Replicate, TablePageDone, TablePageRequest,
};
pub use self::forward::{Completion, Forward, RegisterRequest, Replication, ShardWrite};
use self::output::encode_into;
pub use self::output::{Output, Run, Target, Transmit};
pub use self::subscriptions::{SubscriptionConfig, SubscriptionNote};

/// The protocol of an association or a UDP listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// ASAP (RFC 5352): PEs and PUs talking to this registrar.
    Asap,
    /// ENRP (RFC 5353): other registrars.
    Enrp,
}

impl Protocol {
    /// Every protocol, in exposition order.
    pub const ALL: [Self; 2] = [Self::Asap, Self::Enrp];

    /// The Prometheus label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Asap => "asap",
            Self::Enrp => "enrp",
        }
    }

    /// Its SCTP payload protocol identifier (RFC 5352 §5: 11; RFC 5353 §5: 12).
    pub const fn ppid(self) -> u32 {
        match self {
            Self::Asap => rserpool_protocol::PPID_ASAP,
            Self::Enrp => rserpool_protocol::PPID_ENRP,
        }
    }
}

/// Longest pool handle of the RFC generation (RSPLIB's `MAX_POOLHANDLESIZE`).
pub const RFC_MAX_POOL_HANDLE: usize = 32;

/// What the state machine needs to know of the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct CoreConfig {
    /// This PR's identifier (non-zero; at most 32 bits when RFC listeners exist).
    pub pr_id: PrId,
    /// Time from a PE's registration or last keep-alive ack to the next keep-alive
    /// (RSPLIB's EndpointKeepAliveTransmissionInterval, 5 s); jittered by ±12.5 %.
    pub keep_alive_interval: Millis,
    /// Time a PE has to answer a keep-alive before it is removed (RSPLIB: 5 s).
    pub keep_alive_timeout: Millis,
    /// ASAP_ENDPOINT_UNREACHABLE reports that remove a PE (MAX-BAD-PE-REPORT; RSPLIB: 3).
    pub max_bad_pe_reports: u32,
    /// PEs per handle resolution.
    pub items: ItemCount,
    /// Most PEs registered over one association.
    pub max_pes_per_association: usize,
    /// Requests per second one association may send (0 = unlimited); excess requests are
    /// answered with "lack of resources".
    pub max_requests_per_second: u32,
    /// Registrations per second of one identity (a TLS certificate name, else a source
    /// address), over all its associations (0 = unlimited); excess registrations are answered
    /// with "lack of resources".
    pub max_registrations_per_second_per_identity: u32,
    /// Which sources may register, deregister and resolve in which pools (empty: everyone).
    pub access_rules: Vec<access::AccessRule>,
    /// The certificate names admitted on TLS connections (`tls.allowed_identities`; empty: any
    /// certificate the CA bundle vouches for).
    pub allowed_identities: Vec<identity::NamePattern>,
    /// Time an ASAP association may stay open without a registration, deregistration or handle
    /// resolution before it is aborted (resource exhaustion, RFC 5355 §2.1-2.2 floods); 0 = never.
    pub idle_timeout: Millis,
    /// Longest pool handle accepted on NG listeners.
    pub max_pool_handle_len_ng: usize,
    /// Where to send ASAP_SERVER_ANNOUNCE (UDP, multicast or unicast) and in which generation.
    pub announce_targets: Vec<TransportUrl>,
    /// Gap between announces (T6; RSPLIB 1 s, jittered by ±12.5 %).
    pub announce_interval: Millis,
    /// The ASAP listeners, listed in announces (SCTP and TCP; MPTCP as TCP).
    pub listeners: Vec<TransportUrl>,
    /// RSPLIB's component status monitor and the report interval.
    pub csp: Option<(SocketAddr, Millis)>,
    /// The operating scope (ENRP, RFC 5353).
    pub enrp: EnrpConfig,
    /// ASAP subscriptions (RFC 5352 §2.2.5-6): limits and push pacing.
    pub subscriptions: SubscriptionConfig,
}

impl CoreConfig {
    /// RSPLIB's defaults for a PR with this identifier and no announces.
    pub fn new(pr_id: PrId) -> Self {
        Self {
            pr_id,
            keep_alive_interval: 5_000,
            keep_alive_timeout: 5_000,
            max_bad_pe_reports: 3,
            items: ItemCount::default(),
            max_pes_per_association: 1 << 16,
            max_requests_per_second: 0,
            max_registrations_per_second_per_identity: 0,
            idle_timeout: 0,
            access_rules: Vec::new(),
            allowed_identities: Vec::new(),
            max_pool_handle_len_ng: 256,
            announce_targets: Vec::new(),
            announce_interval: 1_000,
            listeners: Vec::new(),
            csp: None,
            enrp: EnrpConfig::default(),
            subscriptions: SubscriptionConfig::default(),
        }
    }
}

/// What the driver tells the core about a new association (SCTP association, TCP or MPTCP
/// connection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssociationInfo {
    /// The transport it runs on.
    pub transport: Transport,
    /// The wire generation of its listener.
    pub generation: Generation,
    /// The peer's transport addresses (several for a multi-homed SCTP peer), with its port: the
    /// ASAP transport recorded for PEs registering over it (RFC 5352 §3.1 rule 4).
    pub peer_addresses: Vec<SocketAddr>,
    /// ASAP (PEs and PUs) or ENRP (other PRs; worker 0 only).
    pub protocol: Protocol,
}

/// One message as a driver received it ([`Worker::handle`]).
#[derive(Clone, Copy, Debug)]
pub enum Received<'m> {
    /// A message on an association: one SCTP user message with its payload protocol identifier,
    /// or one frame of a TCP or MPTCP stream (`ppid: None`).
    Message {
        /// The association.
        association: AssociationId,
        /// The SCTP PPID, checked against the association's protocol.
        ppid: Option<u32>,
        /// The message.
        message: &'m [u8],
    },
    /// A datagram on one of the driver's UDP listeners.
    Datagram {
        /// The listener's index in the driver (replies go back through it, [`Target::UdpReply`]).
        listener: u32,
        /// What the listener serves: ASAP handle resolutions or ENRP presences.
        protocol: Protocol,
        /// The listener's wire generation.
        generation: Generation,
        /// The sender.
        from: SocketAddr,
        /// The datagram.
        message: &'m [u8],
    },
}

/// An ENRP association the driver is asked to open (to a peer PR). The driver reports the
/// outcome with [`Worker::connected`] or [`Worker::close_association`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connect {
    /// The ID the core gave the association.
    pub association: AssociationId,
    /// Where to connect.
    pub url: TransportUrl,
}

/// The worker that holds an association (the driver's worker index is in the ID's top bits).
pub fn worker_of(association: AssociationId) -> usize {
    ((association.get() & ((1 << ASSOCIATION_WORKER_BITS) - 1)) as usize).saturating_sub(1)
}

/// The low bits of an association ID hold its worker's index + 1; the bits above count the
/// associations the PR opened, so IDs grow in opening order across workers (the handlespace
/// lets a PE move only to a newer association of its host).
const ASSOCIATION_WORKER_BITS: u32 = 16;

/// What every worker of one PR shares.
#[derive(Debug, Default)]
pub struct PrShared {
    /// Whether the scope has a peer to replicate to, published by worker 0 for every shard:
    /// without one, registrations skip the replication hand-off (a peer that joins later gets
    /// the handlespace by its table transfer or audit).
    replicating: std::sync::atomic::AtomicBool,
    /// Associations opened so far, on any worker.
    associations_opened: std::sync::atomic::AtomicU64,
    /// Registrations per second of each identity, over all workers.
    registration_rates: rates::IdentityRates,
    /// Subscriptions held, over all workers (`subscriptions.max_total`).
    subscriptions: subscriptions::TotalSubscriptions,
}

#[derive(Clone, Copy, Debug)]
enum CoreTimer {
    /// Sweep the keep-alives of an association's PEs ([`keepalive`]).
    KeepAliveSweep(AssociationId),
    /// Abort an association that has not registered, deregistered or resolved by now.
    IdleCheck(AssociationId),
    Announce,
    Csp,
    Enrp,
    /// Push to the subscribers whose push interval ended ([`subscriptions`]).
    SubscriptionPush,
}

#[derive(Debug)]
struct Association {
    info: AssociationInfo,
    /// Registrations forwarded and not yet answered.
    pending: usize,
    /// Its requests per second (RFC 5355 §2.13-2.14 threats: floods of requests).
    rate: TokenBucket,
    /// Whether it has registered, deregistered or resolved (else it is aborted when
    /// `idle_timeout` runs out).
    active: bool,
    /// The peer's TLS certificate names, once its handshake ended ([`Worker::authenticated`]);
    /// `None` without TLS or without a client certificate.
    identity: Option<identity::Identity>,
}

/// One worker's state machine: the writer of one handlespace shard, the holder of its own
/// associations, and a reader of the whole handlespace.
///
/// # Method map
///
/// A driver feeds the worker inputs and time, and carries out the [`Output`] each call fills:
///
/// - **Inputs**, each with `now` and the output to fill:
///   - [`Worker::open_association`], [`Worker::connected`] (an ENRP association this worker asked
///     for is up), [`Worker::close_association`]: associations come and go;
///   - [`Worker::handle`]: every received message, stream or SCTP message on an association,
///     or UDP datagram, ASAP or ENRP (the one entry point; [`Worker::on_message`] is its
///     shorthand for one message on an association);
///   - [`Worker::on_forward`]: what another worker sent this one (a [`Forward`]).
/// - **Timers**: [`Worker::next_timeout`] says when to call [`Worker::on_timer`] next; the worker
///   keeps no clock.
/// - **Outputs**, in [`Output`]: messages to transmit ([`Output::runs`]), associations to abort,
///   ENRP associations to open, forwards to other workers ([`Output::take_forwards`]).
/// - **Turns**: [`Worker::begin_turn`], [`Worker::publish_turn`] (before any output leaves) and
///   [`Worker::end_turn`] batch the shard's changes of one loop turn.
/// - **Lifecycle and state**: [`Worker::new`], [`Worker::start`], [`Worker::reconfigure`], and
///   read-only accessors (`reader`, `shard`, `association_count`, `enrp_peers`, ...).
#[derive(Debug)]
pub struct Worker {
    index: usize,
    workers: usize,
    config: Arc<CoreConfig>,
    shard: Shard,
    reader: HandlespaceReader,
    associations: FastMap<AssociationId, Association>,
    monitor: keepalive::Monitor,
    timers: TimerWheel<CoreTimer>,
    rng: Rng,
    metrics: Arc<WorkerMetrics>,
    selection: Vec<u32>,
    /// The allocation of a resolution's PE views, kept between resolutions.
    views: Vec<rserpool_protocol::PoolElementParam<'static>>,
    /// Encoded PEs of the pools this worker resolves, for assembling responses.
    encoded: Box<encoded::EncodedPools>,
    /// The ranges of a response's PEs in `encoded`, kept between resolutions.
    parts: Vec<(u32, u32)>,
    started: Option<Millis>,
    /// The operating scope (worker 0, when ENRP is configured).
    scope: Option<Box<enrp::Scope>>,
    /// What every worker of the PR shares: the replication flag and the association counter.
    pr: Arc<PrShared>,
    /// At each shard, the PEs this PR took over, by the PR they were taken from, and when: if
    /// that PR comes back (it was hung, not dead), its audit repair removes those it no longer
    /// has ([`enrp::TakenOver`]).
    taken_over: FastMap<PrId, enrp::TakenOver>,
    /// When each refused peer was last logged (once a minute per peer).
    refusals: refusals::RefusalLog,
    /// ASAP subscriptions of this worker's associations and to its shard's pools.
    subscriptions: subscriptions::Subscriptions,
}

impl Worker {
    /// Worker `index` of `workers`, owning `shard` (shard `index` of a handlespace split with
    /// `into_shards`) and reading through `reader`. `seed` seeds its random source (keep-alive
    /// jitter, random policies). Every worker of a PR shares `pr` (one [`PrShared`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        workers: usize,
        config: Arc<CoreConfig>,
        shard: Shard,
        reader: HandlespaceReader,
        metrics: Arc<WorkerMetrics>,
        seed: u64,
        pr: Arc<PrShared>,
    ) -> Self {
        Self {
            index,
            workers: workers.max(1),
            config,
            shard,
            reader,
            associations: FastMap::default(),
            monitor: keepalive::Monitor::default(),
            timers: TimerWheel::new(),
            rng: Rng::seed(seed),
            metrics,
            selection: vec![0; rserpool_handlespace::policy::MAX_SELECTION],
            views: Vec::with_capacity(rserpool_handlespace::policy::MAX_SELECTION),
            encoded: Box::default(),
            parts: Vec::with_capacity(rserpool_handlespace::policy::MAX_SELECTION),
            started: None,
            scope: None,
            pr,
            taken_over: FastMap::default(),
            refusals: refusals::RefusalLog::default(),
            subscriptions: subscriptions::Subscriptions::default(),
        }
    }

    /// This worker's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The read side of the whole handlespace.
    pub fn reader(&self) -> &HandlespaceReader {
        &self.reader
    }

    /// The shard this worker writes.
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Replaces the configuration (SIGHUP); timers already armed keep their deadlines.
    pub fn reconfigure(&mut self, config: Arc<CoreConfig>) {
        self.config = config;
    }

    /// Whether the association is open (or being opened) in the core.
    pub fn has_association(&self, association: AssociationId) -> bool {
        self.associations.contains_key(&association)
    }

    /// Subscriptions (RFC 5352 §2.2.5) held by this worker's associations.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.count()
    }

    /// Number of open associations.
    pub fn association_count(&self) -> usize {
        self.associations.len()
    }

    /// Number of PEs monitored by keep-alives on this worker's associations.
    pub fn monitored_pes(&self) -> usize {
        self.monitor.len()
    }

    /// Starts the periodic work (announces and CSP reports, on worker 0 only).
    pub fn start(&mut self, now: Millis) {
        self.started = Some(now);
        if self.index != 0 {
            return;
        }
        self.enrp_start(now);
        if !self.config.announce_targets.is_empty() {
            self.timers.arm(now, CoreTimer::Announce);
        }
        if self.config.csp.is_some() {
            self.timers.arm(now, CoreTimer::Csp);
        }
    }

    /// A new association; returns the ID the driver uses for it from now on.
    pub fn open_association(&mut self, info: AssociationInfo, now: Millis) -> AssociationId {
        let info_protocol = info.protocol;
        let opened = self
            .pr
            .associations_opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let raw = (opened << ASSOCIATION_WORKER_BITS) | (self.index as u64 + 1);
        let id = AssociationId::new(raw).expect("worker bits make the ID non-zero");
        self.associations.insert(
            id,
            Association {
                info,
                pending: 0,
                rate: TokenBucket::full(self.config.max_requests_per_second, now),
                active: false,
                identity: None,
            },
        );
        let idle = self.config.idle_timeout;
        if idle > 0 && info_protocol == Protocol::Asap {
            self.timers.arm(now + idle, CoreTimer::IdleCheck(id));
        }
        id
    }

    /// Handles one received message, ASAP or ENRP, whatever it came over: the one way messages
    /// enter the core. `reads` is the handlespace pinned for the driver's batch of messages
    /// (one loop turn). Returns the kind of request, for latency metrics.
    pub fn handle(
        &mut self,
        reads: &PinnedReader<'_>,
        received: Received<'_>,
        now: Millis,
        out: &mut Output,
    ) -> RequestKind {
        match received {
            Received::Message {
                association,
                ppid,
                message,
            } => {
                let Some(a) = self.associations.get(&association) else {
                    return RequestKind::Other;
                };
                let protocol = a.info.protocol;
                if ppid.is_some_and(|ppid| ppid != protocol.ppid()) {
                    // Checklist PA-21 (RFC 5352 §5, RFC 5353 §5): ENRP on the ASAP port, ASAP
                    // on the ENRP port, or anything else: the association is aborted.
                    tracing::debug!(
                        ppid,
                        protocol = protocol.label(),
                        "SCTP message with a foreign PPID; aborting the association"
                    );
                    out.aborts.push(association);
                    self.close_association(association, now, out);
                    return RequestKind::Other;
                }
                match protocol {
                    Protocol::Asap => {
                        let (was_active, generation) = (a.active, a.info.generation);
                        let kind =
                            self.on_asap_message(reads, association, generation, message, now, out);
                        if !was_active && kind != RequestKind::Other {
                            // Its first registration or resolution (one more lookup, once).
                            if let Some(a) = self.associations.get_mut(&association) {
                                a.active = true;
                            }
                        }
                        kind
                    }
                    Protocol::Enrp => {
                        let generation = a.info.generation;
                        self.on_enrp_message(association, generation, message, now, out);
                        RequestKind::Other
                    }
                }
            }
            Received::Datagram {
                listener,
                protocol: Protocol::Asap,
                generation,
                from,
                message,
            } => {
                let target = Target::UdpReply { listener, to: from };
                self.on_asap_datagram(reads, target, generation, message, now, out)
            }
            Received::Datagram {
                protocol: Protocol::Enrp,
                generation,
                from,
                message,
                ..
            } => {
                self.on_enrp_datagram(generation, from, message, now, out);
                RequestKind::Other
            }
        }
    }

    /// [`Worker::handle`] for one message on an association (a stream frame; SCTP's PPID
    /// checked by the caller), reading the handlespace under its own pin: for tests and tools
    /// that deliver messages one by one.
    pub fn on_message(
        &mut self,
        association: AssociationId,
        message: &[u8],
        now: Millis,
        out: &mut Output,
    ) -> RequestKind {
        let reader = self.reader.clone();
        let received = Received::Message {
            association,
            ppid: None,
            message,
        };
        self.handle(&reader.pin(), received, now, out)
    }

    /// The TLS handshake of `association` ended and the peer's certificate names `identity`
    /// (RFC 5355 §2.1-2.5: authentication before any state is created or changed; the driver
    /// hands in no message before this). A peer whose certificate has none of the names of
    /// `tls.allowed_identities` is aborted and counted.
    pub fn authenticated(
        &mut self,
        association: AssociationId,
        identity: identity::Identity,
        now: Millis,
        out: &mut Output,
    ) {
        let allowed = &self.config.allowed_identities;
        if !allowed.is_empty() && !allowed.iter().any(|p| identity.matches(p)) {
            self.metrics.limit_refused(Limit::Identity);
            if self
                .refusals
                .should_log(refusals::peer_key(identity.primary()), now)
            {
                tracing::warn!(
                    identity = identity.primary(),
                    "TLS peer refused: its certificate names none of tls.allowed_identities"
                );
            }
            out.aborts.push(association);
            self.close_association(association, now, out);
            return;
        }
        if let Some(a) = self.associations.get_mut(&association) {
            a.identity = Some(identity);
        }
    }

    /// The association closed (shutdown, abort, connection loss): every PE registered over it is
    /// removed (RSPLIB's behaviour PEs expect; checklist PA-18).
    pub fn close_association(&mut self, association: AssociationId, now: Millis, out: &mut Output) {
        let Some(a) = self.associations.remove(&association) else {
            return;
        };
        if a.info.protocol == Protocol::Enrp {
            self.enrp_association_closed(association, now);
        }
        self.drop_subscriptions(association, now, out);
        for (pool_handle, pe_id) in self.monitor.close(association) {
            self.route(
                &pool_handle,
                ShardWrite::Remove {
                    association,
                    pool_handle: pool_handle[..].into(),
                    pe_id,
                    reason: RemovalReason::AssociationClosed,
                },
                now,
                out,
            );
        }
    }

    /// Aborts `association` if it is still open and has neither registered, deregistered nor
    /// resolved since it opened (resource exhaustion by idle peers, RFC 5355 §2.1-2.2 floods).
    fn idle_check(&mut self, association: AssociationId, now: Millis, out: &mut Output) {
        if self.associations.get(&association).is_none_or(|a| a.active) {
            return;
        }
        tracing::debug!(
            ?association,
            "aborting an association that neither registered nor resolved within limits.idle_timeout_ms"
        );
        self.metrics.limit_refused(Limit::IdleTimeout);
        out.aborts.push(association);
        self.close_association(association, now, out);
    }

    /// The earliest time [`Self::on_timer`] has work (a lower bound). Changes of watched pools
    /// made after the turn's last [`Self::publish_turn`] are due at once (0).
    pub fn next_timeout(&self) -> Option<Millis> {
        if self.shard.has_watched_changes() || self.subscriptions.has_notes() {
            return Some(0);
        }
        match (self.timers.next_deadline(), self.shard.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs every timer due by `now`: registration expiry in this worker's shard, keep-alives
    /// and their timeouts, announces, CSP reports.
    pub fn on_timer(&mut self, now: Millis, out: &mut Output) {
        self.notify_watchers(now, out);
        for removed in self.shard.expire(now) {
            self.metrics.pe_removed(RemovalReason::Expired);
            if let Some(association) = removed.entry.association {
                self.deliver(
                    Completion::Forget {
                        association,
                        pool_handle: removed.pool_handle[..].into(),
                        pe_id: removed.entry.id(),
                        reason: RemovalReason::Expired,
                    },
                    now,
                    out,
                );
            }
            self.replicate_removal(removed, now, out);
        }
        let mut due = Vec::new();
        self.timers.expire(now, |_, t| due.push(t));
        for timer in due {
            match timer {
                CoreTimer::KeepAliveSweep(association) => {
                    self.keep_alive_sweep(association, now, out);
                }
                CoreTimer::IdleCheck(association) => self.idle_check(association, now, out),
                CoreTimer::Announce => self.announce(now, out),
                CoreTimer::Csp => self.csp_report(now, out),
                CoreTimer::Enrp => {
                    self.enrp_tick(now, out);
                    self.publish_peers(now);
                }
                CoreTimer::SubscriptionPush => self.push_deferred(now, out),
            }
        }
        self.publish_gauges();
    }

    /// Starts a loop turn: the shard's changes until [`Worker::end_turn`] are one handlespace
    /// batch, each changed pool republished once. Drivers call [`Worker::publish_turn`] before
    /// any of the turn's output leaves, so a response never confirms what readers cannot see.
    pub fn begin_turn(&mut self) {
        self.shard.begin_batch();
    }

    /// Publishes the pools changed so far in this turn (before output leaves), then tells the
    /// workers watching a changed pool, whose subscribers get their pushes (RFC 5352 §2.2.6;
    /// this worker's own are queued in `out`).
    pub fn publish_turn(&mut self, now: Millis, out: &mut Output) {
        self.shard.publish_batch();
        self.notify_watchers(now, out);
    }

    /// Ends a loop turn: publishes the pools changed in it.
    pub fn end_turn(&mut self) {
        self.shard.end_batch();
    }

    /// Publishes the shard's pool and PE counts, and on worker 0 the number of ENRP peers, to the
    /// metrics (O(1) plus O(peers); drivers call it once per loop turn).
    pub fn publish_gauges(&self) {
        self.metrics
            .set_shard(self.shard.pool_count() as u64, self.shard.pe_count() as u64);
        self.metrics.set_phase(self.enrp_live());
        if self.scope.is_some() {
            self.metrics.set_enrp_peers(self.enrp_peer_count() as u64);
        }
    }

    /// Handles what another worker (or this one) sent through its mailbox.
    pub fn on_forward(&mut self, forward: Forward, now: Millis, out: &mut Output) {
        match forward {
            Forward::ShardWrite(write) => self.apply_shard_write(write, now, out),
            Forward::Completion(completion) => self.complete(completion, now, out),
            Forward::Replication(work) => self.on_replication(work, now, out),
            Forward::Subscription(note) => self.on_subscription_note(note, now, out),
        }
    }

    /// A write to this worker's shard.
    fn apply_shard_write(&mut self, forward: ShardWrite, now: Millis, out: &mut Output) {
        match forward {
            ShardWrite::Register(request) => self.apply_registration(*request, now, out),
            ShardWrite::Deregister {
                association,
                generation,
                pool_handle,
                pe_id,
            } => self.apply_deregistration(association, generation, pool_handle, pe_id, now, out),
            ShardWrite::Remove {
                association,
                pool_handle,
                pe_id,
                reason,
            } => {
                // Only while it is still bound to that association: it may have re-registered
                // over another one, or at a peer, since.
                if self
                    .shard
                    .entry(&pool_handle, pe_id)
                    .is_some_and(|e| e.association == Some(association))
                    && let Ok(Some(removed)) =
                        self.shard
                            .deregister(&pool_handle, pe_id, Some(association))
                {
                    self.metrics.pe_removed(reason);
                    self.replicate_removal(removed, now, out);
                }
            }
            ShardWrite::Refresh { pool_handle, pe_id } => {
                self.shard.refresh(&pool_handle, pe_id);
            }
            ShardWrite::Unreachable { pool_handle, pe_id } => {
                self.apply_unreachable(&pool_handle, pe_id, now, out)
            }
        }
    }

    /// News of a PE registered over one of this worker's associations.
    fn complete(&mut self, forward: Completion, now: Millis, out: &mut Output) {
        match forward {
            Completion::Reported {
                association,
                pool_handle,
                pe_id,
            } => self.monitor.mark_reported(association, &pool_handle, pe_id),
            Completion::Registered {
                association,
                pool_handle,
                pe_id,
                accepted,
                response,
            } => self.registration_done(
                association,
                pool_handle,
                pe_id,
                accepted,
                &response,
                now,
                out,
            ),
            Completion::Deregistered {
                association,
                pool_handle,
                pe_id,
                response,
            } => self.deregistration_done(association, &pool_handle, pe_id, &response, out),
            Completion::Forget {
                association,
                pool_handle,
                pe_id,
                reason,
            } => self.forget(association, &pool_handle, pe_id, reason, out),
        }
    }

    /// Tells the peers that a PE this PR owned is gone (ENRP DEL_PE, RFC 5353 §3.3.2).
    pub(super) fn replicate_removal(
        &mut self,
        removed: rserpool_handlespace::Removed,
        now: Millis,
        out: &mut Output,
    ) {
        self.replicate(
            rserpool_protocol::UpdateAction::DelPe,
            removed.pool_handle,
            removed.entry,
            now,
            out,
        );
    }

    /// Sends a write (an ASAP [`ShardWrite`], or a peer's PE as [`Replication`]) to the worker
    /// owning the shard of `pool_handle`, or applies it here.
    fn route(
        &mut self,
        pool_handle: &[u8],
        write: impl Into<Forward>,
        now: Millis,
        out: &mut Output,
    ) {
        let owner = rserpool_handlespace::shard_index(pool_handle, self.workers);
        self.send_to(owner, write, now, out);
    }

    /// Sends a completion (or news of a PE) to the worker holding its association.
    fn deliver(&mut self, completion: Completion, now: Millis, out: &mut Output) {
        let worker = worker_of(completion.association());
        self.send_to(worker, completion, now, out);
    }

    fn send_to(
        &mut self,
        worker: usize,
        forward: impl Into<Forward>,
        now: Millis,
        out: &mut Output,
    ) {
        let forward = forward.into();
        if worker == self.index {
            self.on_forward(forward, now, out);
        } else {
            self.metrics.mailbox_forwarded();
            out.forwards.push((worker, forward));
        }
    }

    /// Starts monitoring a PE registered over `association` (keep-alive after the interval), or
    /// starts its keep-alive cycle over if monitored already (a re-registration).
    fn track(&mut self, association: AssociationId, pool_handle: &[u8], pe_id: PeId, now: Millis) {
        let delay = self.keep_alive_delay();
        if self
            .monitor
            .track(association, pool_handle, pe_id, now + delay)
        {
            self.arm_keep_alive_sweep(association, now);
        }
    }

    /// The next keep-alive sweep of `association`.
    fn arm_keep_alive_sweep(&mut self, association: AssociationId, now: Millis) {
        let period = keepalive::sweep_period(
            self.config.keep_alive_interval,
            self.config.keep_alive_timeout,
        );
        self.timers
            .arm(now + period, CoreTimer::KeepAliveSweep(association));
    }

    /// The keep-alive interval with RSPLIB's ±12.5 % jitter (RFC 5352 §3.5 asks to spread
    /// keep-alives to avoid bursts).
    fn keep_alive_delay(&mut self) -> Millis {
        jitter(&mut self.rng, self.config.keep_alive_interval)
    }
}

/// The cause to answer an undecodable message with (RFC 5354 §3-4, as the codec maps it), or
/// `None` where the RFC says to drop it silently. An error message is never answered, whatever
/// its protocol's ERROR type code `error_type` (ASAP and ENRP share the rule).
fn decode_error_cause<'m>(
    error: &rserpool_protocol::DecodeError,
    msg: &'m [u8],
    error_type: u8,
) -> Option<rserpool_protocol::ErrorCause<'m>> {
    let code = error.reply_cause()?;
    (msg.first() != Some(&error_type)).then(|| rserpool_protocol::ErrorCause {
        code,
        info: error.cause_info(msg),
    })
}

/// RFC 5354 §3: one "unrecognized parameter" cause per parameter the decoder skipped with type
/// bits `11`; none for an error message (`error_type`).
fn unrecognized_causes<'m>(
    unrecognized: &rserpool_protocol::Unrecognized,
    msg: &'m [u8],
    error_type: u8,
) -> Vec<rserpool_protocol::ErrorCause<'m>> {
    if msg.first() == Some(&error_type) {
        return Vec::new();
    }
    unrecognized
        .ranges()
        .map(|r| rserpool_protocol::ErrorCause {
            code: rserpool_protocol::cause::UNRECOGNIZED_PARAMETER,
            info: &msg[r],
        })
        .collect()
}

/// `interval - 12.5 % + random(0 .. 25 %)`, as RSPLIB's `registrarRandomizeCycle`.
fn jitter(rng: &mut Rng, interval: Millis) -> Millis {
    let spread = interval / 4;
    interval - interval / 8 + rng.below(spread.max(1))
}

fn handle_hash(pool_handle: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(pool_handle)
}

#[cfg(test)]
mod tests;
