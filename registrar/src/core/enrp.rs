//! The PR's ENRP peer side (RFC 5353): the operating scope's peers, presence and liveness,
//! handle table transfer (start-up from a mentor, audit repair), handle updates, and takeover of
//! a dead PR.
//!
//! The scope's state ([`Scope`]) lives on worker 0, which holds every ENRP association. Writes
//! go to each pool's shard owner like ASAP writes ([`Forward::PeerAdd`] and friends), and each
//! shard hands the changes of the PEs this PR owns back to worker 0 for replication
//! ([`Replication::Replicate`]). Audit checksums are summed over the shards by a checksum round: a
//! query through every mailbox, so each reply reflects every write worker 0 sent that shard
//! before it, and every replication that shard sent before it has already gone out (design §3).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rserpool_handlespace::{
    AssociationId, Millis, OwnerChecksums, PeId, PeRegistration, PoolElementEntry, PrId,
    TableCursor,
};
use rserpool_protocol::enrp::message_type;
use rserpool_protocol::{
    DecodeError, EnrpBody, EnrpMessage, ErrorCause, Generation, PoolEntry, PoolHandle, Seq,
    ServerInformation, TransportKind, TransportParam as WireTransport, UpdateAction,
};

use super::Protocol;
use super::counters::RemovalReason;
use super::{
    AssociationInfo, CoreTimer, FastMap, Output, Replication, Target, Worker, encode_into,
    handle_hash, jitter,
};
use crate::url::{Transport, TransportUrl};

type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// ENRP settings: the scope's peers and RFC 5353 §4's timers (defaults: RSPLIB's).
#[derive(Clone, Debug, PartialEq)]
pub struct EnrpConfig {
    /// This PR's ENRP endpoints, told to peers in its Server Information.
    pub local: Vec<TransportUrl>,
    /// Static peers: mentor candidates at start-up, reconnected whenever lost.
    pub peers: Vec<TransportUrl>,
    /// Where ENRP_PRESENCE datagrams go every heartbeat (UDP, multicast or unicast).
    pub presence_targets: Vec<TransportUrl>,
    /// PEER-HEARTBEAT-CYCLE: gap between presences to every peer (RSPLIB 2 444 ms, jittered
    /// by ±12.5 %).
    pub heartbeat_interval: Millis,
    /// MAX-TIME-LAST-HEARD: silence after which a peer is probed (RSPLIB 5 s).
    pub max_time_last_heard: Millis,
    /// MAX-TIME-NO-RESPONSE: time a probe has to be answered before the peer is declared dead
    /// (RSPLIB 5 s).
    pub max_time_no_response: Millis,
    /// Time to wait for a mentor at start-up before serving alone (RSPLIB 5 s).
    pub mentor_discovery_timeout: Millis,
    /// Time a takeover waits for every peer's acknowledgement (RSPLIB 5 s).
    pub takeover_expiry: Millis,
    /// Gap between connection attempts to a static peer.
    pub reconnect_interval: Millis,
    /// Most PEs per ENRP_HANDLE_TABLE_RESPONSE (RSPLIB 128).
    pub max_pes_per_table_response: usize,
    /// RSPLIB's takeover suggestion (draft-dreibholz-rserpool-enrp-takeover): each owned PE's
    /// ADD_PE goes once more, with the T flag, to the peer whose ID is farthest from the PE's
    /// by XOR (if farther than ours), and a T flag received makes this PR claim the PE with a
    /// keep-alive with the H bit. Off by default, as in RSPLIB.
    pub takeover_suggestion: bool,
}

impl Default for EnrpConfig {
    fn default() -> Self {
        Self {
            local: Vec::new(),
            peers: Vec::new(),
            presence_targets: Vec::new(),
            heartbeat_interval: 2_444,
            max_time_last_heard: 5_000,
            max_time_no_response: 5_000,
            mentor_discovery_timeout: 5_000,
            takeover_expiry: 5_000,
            reconnect_interval: 1_000,
            max_pes_per_table_response: 128,
            takeover_suggestion: false,
        }
    }
}

impl EnrpConfig {
    /// How long a handle table transfer from a peer waits for its next page before it is given
    /// up: the longer of the mentor discovery timeout and MAX-TIME-NO-RESPONSE.
    pub fn transfer_patience(&self) -> Millis {
        self.mentor_discovery_timeout.max(self.max_time_no_response)
    }

    /// Whether this PR takes part in an operating scope (it has an ENRP endpoint or a peer).
    pub fn enabled(&self) -> bool {
        !self.local.is_empty() || !self.peers.is_empty()
    }

    /// The period of the scope's housekeeping tick: fine enough for the shortest timer.
    fn tick(&self) -> Millis {
        let shortest = self
            .heartbeat_interval
            .min(self.max_time_last_heard)
            .min(self.max_time_no_response);
        (shortest / 4).clamp(10, 500)
    }
}

/// Whether the PR is still loading the handlespace from its mentor (RFC 5353 §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a mentor until `until`; `mentor` once one answered.
    Starting { until: Millis, mentor: Option<PrId> },
    /// Serving.
    Live,
}

/// A handle table transfer a peer is sending us (RFC 5353 §3.2.3, §3.6.3).
#[derive(Debug)]
struct Inbound {
    /// When the last request of the transfer went out: a transfer whose page does not come
    /// within [`EnrpConfig::transfer_patience`] is given up (the audits would wait for it
    /// forever).
    asked: Millis,
    own_children_only: bool,
    /// The start-up download from the mentor.
    mentor: bool,
    /// Audit repair: the (pool handle hash, PE ID) received, to purge the rest afterwards.
    seen: Option<FastSet<(u64, PeId)>>,
}

/// A handle table transfer we are sending a peer, page by page: each page comes from one shard,
/// built by its owner from where the last one ended, so no worker ever walks the whole
/// handlespace in one turn (a resynchronisation never stalls resolutions).
#[derive(Debug)]
struct Outbound {
    /// The association the requests come over, and the pages go back over (two PRs that both
    /// connect hold two).
    association: AssociationId,
    own_children_only: bool,
    shard: usize,
    cursor: TableCursor,
}

#[derive(Debug)]
struct Peer {
    /// 0 until its first message.
    id: PrId,
    /// Where to (re)connect: a static peer, or the Server Information a peer sent.
    url: Option<TransportUrl>,
    is_static: bool,
    /// The association messages to it go over (the first one that worked).
    association: Option<AssociationId>,
    connected: bool,
    generation: Generation,
    last_heard: Millis,
    /// A reply-required presence is outstanding since then (or the association was lost).
    probe_since: Option<Millis>,
    reconnect_at: Millis,
    /// `false` while another PR takes it over (RFC 5353 §3.5.2).
    active: bool,
    /// When this PR acknowledged another PR's takeover of it: if no ENRP_TAKEOVER_SERVER
    /// follows (the other PR died too), this PR declares it dead itself.
    yielded_at: Option<Millis>,
    /// A LIST_REQUEST was sent to it.
    listed: bool,
    /// An RFC-generation peer was told once (in the log) that PEs with 64-bit IDs are withheld.
    withheld_logged: bool,
    inbound: Option<Inbound>,
    outbound: Option<Outbound>,
}

impl Peer {
    fn new(url: Option<TransportUrl>, is_static: bool, now: Millis) -> Self {
        Self {
            id: PrId(0),
            generation: url.as_ref().map_or(Generation::Rfc, |u| u.generation),
            url,
            is_static,
            association: None,
            connected: false,
            last_heard: now,
            probe_since: None,
            reconnect_at: now,
            active: true,
            yielded_at: None,
            listed: false,
            withheld_logged: false,
            inbound: None,
            outbound: None,
        }
    }

    fn reachable(&self) -> Option<AssociationId> {
        self.association.filter(|_| self.connected)
    }
}

/// A takeover this PR runs (RFC 5353 §3.5.1).
#[derive(Debug)]
struct Takeover {
    target: PrId,
    /// Peers whose ENRP_INIT_TAKEOVER_ACK is missing.
    pending: Vec<PrId>,
    expires: Millis,
}

/// Work that waits for the scope's checksums.
#[derive(Clone, Copy, Debug)]
enum AuditWork {
    /// Send an ENRP_PRESENCE with our own checksum.
    Presence {
        association: AssociationId,
        reply_required: bool,
    },
    /// Send an ENRP_PRESENCE datagram.
    PresenceDatagram(SocketAddr, Generation),
    /// Compare a peer's checksum with ours for it (RFC 5353 §3.6.1).
    Audit { peer: PrId, checksum: u64 },
    /// A peer was declared dead: take it over if it owns PEs here (the sums tell).
    Dead(PrId),
}

/// A checksum round: every shard's per-owner checksums, summed.
#[derive(Debug)]
struct Round {
    id: u64,
    replies: usize,
    sums: FastMap<PrId, OwnerChecksums>,
    work: Vec<AuditWork>,
}

/// The operating scope as worker 0 sees it.
#[derive(Debug)]
pub(super) struct Scope {
    phase: Phase,
    peers: Vec<Peer>,
    /// The peer each ENRP association speaks for, bound by its first message.
    bound: FastMap<AssociationId, PrId>,
    takeovers: Vec<Takeover>,
    round: Option<Round>,
    /// Work for the next round.
    queued: Vec<AuditWork>,
    rounds: u64,
    /// The per-owner checksums of the last completed round.
    last_sums: FastMap<PrId, OwnerChecksums>,
    /// Per shard, the checksums of the PEs this PR owns as of the last message worker 0 took
    /// from that shard (a round's reply or a [`Replicate`]): mailboxes are FIFO, so their sum
    /// counts exactly the handle updates sent so far. A round's reply alone can be older than
    /// an update the same shard sent before the round completed.
    own_by_shard: Vec<OwnerChecksums>,
    /// The PRs this PR took over, and when: one heard again gets an audit repair whatever its
    /// checksum (see [`TakenOver`]).
    taken_over: FastMap<PrId, Millis>,
    next_heartbeat: Millis,
}

/// A PE learnt from a peer, on its way to the pool's shard owner.
#[derive(Debug)]
pub struct PeerAdd {
    /// The pool.
    pub pool_handle: Box<[u8]>,
    /// The PE as its home PR announced it.
    pub registration: PeRegistration,
    /// Its home PR.
    pub home_pr: PrId,
}

/// A handle table page to build (to the shard the transfer is at).
#[derive(Debug)]
pub struct TablePageRequest {
    /// The peer's association (on worker 0).
    pub association: AssociationId,
    /// The peer.
    pub peer: PrId,
    /// The peer's generation.
    pub generation: Generation,
    /// W=1: only the PEs this PR owns.
    pub own_children_only: bool,
    /// Where the page starts in the shard.
    pub cursor: TableCursor,
    /// Most PEs in the page.
    pub max_pes: usize,
}

/// A handle table page built by a shard (to worker 0).
#[derive(Debug)]
pub struct TablePageDone {
    /// The peer's association.
    pub association: AssociationId,
    /// The peer.
    pub peer: PrId,
    /// The shard that built it.
    pub shard: usize,
    /// Where that shard's next page starts (`None`: the shard is done).
    pub next: Option<TableCursor>,
    /// The page holds no PE.
    pub empty: bool,
    /// The encoded ENRP_HANDLE_TABLE_RESPONSE (empty if it could not be encoded).
    pub message: Box<[u8]>,
}

/// A change of a PE this PR owns, on its way to worker 0 for ENRP_HANDLE_UPDATE.
#[derive(Debug)]
pub struct Replicate {
    /// ADD_PE or DEL_PE.
    pub action: UpdateAction,
    /// The pool.
    pub pool_handle: Arc<[u8]>,
    /// The PE.
    pub entry: PoolElementEntry,
    /// The shard that made the change.
    pub shard: usize,
    /// The checksums of the PEs this PR owns in that shard, the change included: a presence
    /// sent after this update counts it (RFC 5353 §3.6.1), whatever checksum round is open.
    pub own: OwnerChecksums,
}

/// The PEs a shard moved to this PR when it took over another PR (RFC 5353 §3.5), kept for
/// [`TAKEN_OVER_MEMORY`]: a PR taken over while hung (SIGSTOP, a stalled host) comes back still
/// holding the PEs whose associations survived, and forgets those that deregistered meanwhile;
/// its DEL_PE reached no one (its associations were gone). The audit repair of that PR ends by
/// deleting those it did not send ([`Worker::apply_purge`]).
#[derive(Debug)]
pub(super) struct TakenOver {
    at: Millis,
    pes: Vec<(Arc<[u8]>, PeId)>,
}

/// How long a PR remembers which PEs it took over from whom (longer than any registration life
/// a PE that cannot be reached keeps them for).
const TAKEN_OVER_MEMORY: Millis = 10 * 60 * 1_000;

impl Scope {
    fn new(config: &EnrpConfig, workers: usize, now: Millis) -> Self {
        let peers: Vec<Peer> = config
            .peers
            .iter()
            .map(|url| Peer::new(Some(*url), true, now))
            .collect();
        // RFC 5353 §3.2.2.1: no mentor configured, serve alone at once (checklist PE-02).
        let phase = if peers.is_empty() {
            Phase::Live
        } else {
            Phase::Starting {
                until: now + config.mentor_discovery_timeout,
                mentor: None,
            }
        };
        Self {
            phase,
            peers,
            bound: FastMap::default(),
            takeovers: Vec::new(),
            round: None,
            queued: Vec::new(),
            rounds: 0,
            last_sums: FastMap::default(),
            own_by_shard: vec![OwnerChecksums::default(); workers],
            taken_over: FastMap::default(),
            next_heartbeat: now,
        }
    }

    /// The start-up download broke off: the next peer heard is the mentor (RFC 5353 §3.2.2),
    /// instead of waiting out the discovery timeout.
    fn forget_mentor(&mut self) {
        if let Phase::Starting { until, .. } = self.phase {
            self.phase = Phase::Starting {
                until,
                mentor: None,
            };
        }
    }

    fn peer(&self, id: PrId) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == id && id.0 != 0)
    }

    fn peer_mut(&mut self, id: PrId) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|p| p.id == id && id.0 != 0)
    }

    fn peer_by_association(&mut self, association: AssociationId) -> Option<&mut Peer> {
        self.peers
            .iter_mut()
            .find(|p| p.association == Some(association))
    }

    /// Forgets a dead or taken-over peer; a static one starts over (new connection, new ID).
    /// Its associations, still open if it hung rather than died, go to `aborts`.
    fn drop_peer(
        &mut self,
        id: PrId,
        now: Millis,
        reconnect_interval: Millis,
        aborts: &mut Vec<AssociationId>,
    ) {
        let primary = self.peer(id).and_then(|p| p.association);
        aborts.extend(primary);
        aborts.extend(
            self.bound
                .iter()
                .filter(|&(&a, &p)| p == id && Some(a) != primary)
                .map(|(&a, _)| a),
        );
        self.bound.retain(|_, p| *p != id);
        self.peers.retain(|p| p.id != id || p.is_static);
        for p in self.peers.iter_mut().filter(|p| p.id == id) {
            *p = Peer::new(p.url, true, now);
            p.reconnect_at = now + reconnect_interval;
        }
    }
}

impl Worker {
    fn scope(&mut self) -> &mut Scope {
        self.scope.as_mut().expect("ENRP runs on worker 0")
    }

    fn enrp_config(&self) -> &EnrpConfig {
        &self.config.enrp
    }

    /// Starts the scope on worker 0: connects to the static peers and arms the housekeeping
    /// tick.
    pub(super) fn enrp_start(&mut self, now: Millis) {
        if self.index != 0 || !self.config.enrp.enabled() {
            return;
        }
        self.scope = Some(Box::new(Scope::new(&self.config.enrp, self.workers, now)));
        self.timers.arm(now, CoreTimer::Enrp);
    }

    /// Whether this PR has a peer to replicate to (as worker 0 last published).
    pub(super) fn replicates(&self) -> bool {
        self.pr
            .replicating
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Publishes whether any peer is reachable, for [`Self::replicates`] on every worker.
    fn publish_replicating(&self) {
        let any = self.scope.as_ref().is_some_and(|s| {
            s.peers
                .iter()
                .any(|p| p.id.0 != 0 && p.reachable().is_some())
        });
        if self.replicates() != any {
            self.pr
                .replicating
                .store(any, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether the scope finished its start-up (always `true` without ENRP).
    pub fn enrp_live(&self) -> bool {
        self.scope.as_ref().is_none_or(|s| s.phase == Phase::Live)
    }

    /// How many peers the scope currently knows by ID (worker 0; 0 elsewhere).
    pub(super) fn enrp_peer_count(&self) -> usize {
        self.scope
            .as_ref()
            .map_or(0, |s| s.peers.iter().filter(|p| p.id.0 != 0).count())
    }

    /// The identifiers of the peers the scope currently knows (worker 0).
    pub fn enrp_peers(&self) -> Vec<PrId> {
        self.scope.as_ref().map_or_else(Vec::new, |s| {
            s.peers
                .iter()
                .filter(|p| p.id.0 != 0)
                .map(|p| p.id)
                .collect()
        })
    }

    /// The housekeeping tick (RFC 5353 §3.2, §3.4, §3.5): start-up timeout, reconnections,
    /// heartbeats, probes of silent peers, dead peers, expired takeovers.
    pub(super) fn enrp_tick(&mut self, now: Millis, out: &mut Output) {
        let config = Arc::clone(&self.config);
        let c = &config.enrp;
        if let Phase::Starting { until, .. } = self.scope().phase
            && now >= until
        {
            tracing::info!("ENRP start-up: no mentor finished a handle table transfer; serving");
            self.scope().phase = Phase::Live;
        }
        self.abandon_connects(now, out);
        self.abandon_transfers(now);
        self.enrp_reconnect(now, out);
        if now >= self.scope().next_heartbeat {
            self.scope().next_heartbeat = now + jitter(&mut self.rng, c.heartbeat_interval.max(1));
            self.heartbeat(now, out);
        }
        // RFC 5353 §3.4.3: probe peers silent for MAX-TIME-LAST-HEARD; a probe unanswered for
        // MAX-TIME-NO-RESPONSE means the peer is dead.
        let mut probes = Vec::new();
        let mut dead = Vec::new();
        for p in self
            .scope()
            .peers
            .iter_mut()
            .filter(|p| p.id.0 != 0 && p.active)
        {
            match p.probe_since {
                Some(since) if now.saturating_sub(since) >= c.max_time_no_response => {
                    dead.push(p.id)
                }
                Some(_) => {}
                None if now.saturating_sub(p.last_heard) >= c.max_time_last_heard => {
                    p.probe_since = Some(now);
                    if let Some(a) = p.reachable() {
                        probes.push(a);
                    }
                }
                None => {}
            }
        }
        for association in probes {
            self.audit_work(
                AuditWork::Presence {
                    association,
                    reply_required: true,
                },
                now,
                out,
            );
        }
        // A takeover acknowledged to another PR that never finished it.
        let patience = c.takeover_expiry + c.max_time_no_response;
        for p in self.scope().peers.iter_mut() {
            if p.yielded_at
                .is_some_and(|t| now.saturating_sub(t) >= patience)
            {
                p.yielded_at = None;
                dead.push(p.id);
            }
        }
        for id in dead {
            self.peer_dead(id, now, out);
        }
        let expired: Vec<PrId> = self
            .scope()
            .takeovers
            .iter()
            .filter(|t| now >= t.expires)
            .map(|t| t.target)
            .collect();
        for target in expired {
            // RSPLIB: a takeover without every acknowledgement is dropped with the dead peer;
            // its PEs keep their home PR and expire by their registration life.
            tracing::warn!(target = %target, "ENRP takeover: not every peer acknowledged; dropped");
            self.scope().takeovers.retain(|t| t.target != target);
            let scope = self.scope.as_mut().expect("worker 0");
            scope.drop_peer(target, now, c.reconnect_interval, &mut out.aborts);
        }
        // The next tick, or the next heartbeat if that comes first (heartbeats keep their
        // period instead of waiting for a tick).
        let next = (now + c.tick()).min(self.scope().next_heartbeat.max(now + 1));
        self.timers.arm(next, CoreTimer::Enrp);
        self.publish_replicating();
    }

    /// Gives up outgoing associations that did not come up within the reconnect interval plus
    /// MAX-TIME-NO-RESPONSE (the kernel would keep trying a silent host for minutes): the driver
    /// aborts them, and the next attempt starts at the next tick.
    fn abandon_connects(&mut self, now: Millis, out: &mut Output) {
        let patience = self.enrp_config().max_time_no_response;
        let stale: Vec<AssociationId> = self
            .scope()
            .peers
            .iter()
            .filter(|p| !p.connected && now >= p.reconnect_at.saturating_add(patience))
            .filter_map(|p| p.association)
            .collect();
        for association in stale {
            tracing::debug!(
                ?association,
                "ENRP peer did not accept the association in time"
            );
            out.aborts.push(association);
            self.close_association(association, now, out);
        }
    }

    /// Gives up handle table transfers from peers whose next page did not come in time (a lost
    /// request or response): an audit repair waits for none, and a start-up download lets the
    /// next peer heard be the mentor (RFC 5353 §3.2.2).
    fn abandon_transfers(&mut self, now: Millis) {
        let patience = self.enrp_config().transfer_patience();
        let scope = self.scope.as_mut().expect("worker 0");
        let mut mentor_lost = false;
        for p in scope.peers.iter_mut() {
            if p.inbound
                .as_ref()
                .is_some_and(|i| now.saturating_sub(i.asked) >= patience)
            {
                tracing::debug!(peer = %p.id, "ENRP handle table transfer timed out; given up");
                mentor_lost |= p.inbound.take().is_some_and(|i| i.mentor);
            }
        }
        if mentor_lost {
            scope.forget_mentor();
        }
    }

    /// Connects to static peers that have no association.
    fn enrp_reconnect(&mut self, now: Millis, out: &mut Output) {
        let interval = self.enrp_config().reconnect_interval;
        let due: Vec<usize> = (0..self.scope().peers.len())
            .filter(|&i| {
                let p = &self.scope.as_ref().expect("worker 0").peers[i];
                p.association.is_none() && p.url.is_some() && now >= p.reconnect_at
            })
            .collect();
        for i in due {
            let url = self.scope().peers[i].url.expect("filtered");
            let association = self.open_association(
                AssociationInfo {
                    transport: url.transport,
                    generation: url.generation,
                    peer_addresses: vec![url.address],
                    protocol: Protocol::Enrp,
                },
                now,
            );
            let p = &mut self.scope().peers[i];
            p.association = Some(association);
            p.connected = false;
            p.reconnect_at = now + interval;
            out.connects.push(super::Connect { association, url });
        }
    }

    /// An outgoing ENRP association the driver was asked to open is up: introduce ourselves
    /// with a reply-required presence (RFC 5353 §3.4.1).
    pub fn connected(
        &mut self,
        association: AssociationId,
        peer_addresses: Vec<SocketAddr>,
        now: Millis,
        out: &mut Output,
    ) {
        if let Some(a) = self.associations.get_mut(&association) {
            a.info.peer_addresses = peer_addresses;
        }
        let Some(scope) = self.scope.as_mut() else {
            return;
        };
        let Some(p) = scope.peer_by_association(association) else {
            return;
        };
        p.connected = true;
        self.publish_replicating();
        self.audit_work(
            AuditWork::Presence {
                association,
                reply_required: true,
            },
            now,
            out,
        );
    }

    /// An ENRP association closed (or could not be opened): the peer is suspect until it is
    /// heard again; a static peer is reconnected.
    pub(super) fn enrp_association_closed(&mut self, association: AssociationId, now: Millis) {
        let Some(scope) = self.scope.as_mut() else {
            return;
        };
        scope.bound.remove(&association);
        let mut mentor_lost = false;
        for p in scope
            .peers
            .iter_mut()
            .filter(|p| p.association == Some(association))
        {
            // Reconnected at once, unless the last attempt was less than the reconnect
            // interval ago (`reconnect_at` is set when an attempt starts).
            p.association = None;
            p.connected = false;
            mentor_lost |= p.inbound.take().is_some_and(|i| i.mentor);
            p.outbound = None;
            if p.id.0 != 0 && p.probe_since.is_none() {
                p.probe_since = Some(now);
            }
        }
        if mentor_lost {
            scope.forget_mentor();
        }
        // A peer that never told its ID and has nowhere to reconnect to is gone.
        scope
            .peers
            .retain(|p| p.id.0 != 0 || p.url.is_some() || p.association.is_some());
        self.publish_replicating();
    }

    /// Sends every peer a presence (RFC 5353 §3.4.2, checklist PE-06), and the presence
    /// datagrams.
    fn heartbeat(&mut self, now: Millis, out: &mut Output) {
        let mut work: Vec<AuditWork> = self
            .scope()
            .peers
            .iter()
            .filter_map(Peer::reachable)
            .map(|association| AuditWork::Presence {
                association,
                reply_required: false,
            })
            .collect();
        work.extend(
            self.config
                .enrp
                .presence_targets
                .iter()
                .map(|t| AuditWork::PresenceDatagram(t.address, t.generation)),
        );
        for w in work {
            self.scope().queued.push(w);
        }
        self.start_round(now, out);
    }

    /// Queues work that needs the checksums and starts a round if none runs.
    fn audit_work(&mut self, work: AuditWork, now: Millis, out: &mut Output) {
        self.scope().queued.push(work);
        self.start_round(now, out);
    }

    fn start_round(&mut self, now: Millis, out: &mut Output) {
        let scope = self.scope();
        if scope.round.is_some() || scope.queued.is_empty() {
            return;
        }
        scope.rounds += 1;
        let id = scope.rounds;
        let work = std::mem::take(&mut scope.queued);
        scope.round = Some(Round {
            id,
            replies: 0,
            sums: FastMap::default(),
            work,
        });
        for w in 0..self.workers {
            self.send_to(w, Replication::ChecksumQuery { round: id }, now, out);
        }
    }

    /// At a shard: answer a checksum round.
    pub(super) fn answer_checksum_query(&mut self, round: u64, now: Millis, out: &mut Output) {
        let owners = self.shard.owner_checksums().collect();
        let shard = self.index;
        self.send_to(
            0,
            Replication::ChecksumReply {
                round,
                shard,
                owners,
            },
            now,
            out,
        );
    }

    /// At worker 0: one shard's checksums; the last one completes the round.
    pub(super) fn checksum_reply(
        &mut self,
        round: u64,
        shard: usize,
        owners: Vec<(PrId, OwnerChecksums)>,
        now: Millis,
        out: &mut Output,
    ) {
        let workers = self.workers;
        let own = self.config.pr_id;
        let Some(scope) = self.scope.as_mut() else {
            return;
        };
        let Some(r) = scope.round.as_mut().filter(|r| r.id == round) else {
            return;
        };
        let mut own_here = OwnerChecksums::default();
        for (owner, c) in owners {
            if owner == own {
                own_here = c;
            }
            r.sums.entry(owner).or_default().merge(&c);
        }
        scope.own_by_shard[shard] = own_here;
        r.replies += 1;
        if r.replies < workers {
            return;
        }
        let r = scope.round.take().expect("checked");
        scope.last_sums = r.sums;
        // Our own PEs as the peers were told so far (see `own_by_shard`).
        let mut own_sums = OwnerChecksums::default();
        for c in &scope.own_by_shard {
            own_sums.merge(c);
        }
        scope.last_sums.insert(own, own_sums);
        for work in r.work {
            self.do_audit_work(work, now, out);
        }
        self.start_round(now, out);
    }

    fn own_checksum(&self, generation: Generation) -> u64 {
        let scope = self.scope.as_ref().expect("worker 0");
        checksum_value(
            &scope
                .last_sums
                .get(&self.config.pr_id)
                .copied()
                .unwrap_or_default(),
            generation,
        )
    }

    fn do_audit_work(&mut self, work: AuditWork, now: Millis, out: &mut Output) {
        match work {
            AuditWork::Presence {
                association,
                reply_required,
            } => {
                let Some(a) = self.associations.get(&association) else {
                    return;
                };
                let generation = a.info.generation;
                let transport = a.info.transport;
                let receiver = self
                    .scope()
                    .bound
                    .get(&association)
                    .copied()
                    .unwrap_or(PrId(0));
                let checksum = self.own_checksum(generation);
                self.send_presence(
                    Target::Association(association),
                    generation,
                    transport,
                    receiver,
                    reply_required,
                    checksum,
                    out,
                );
            }
            AuditWork::PresenceDatagram(to, generation) => {
                let checksum = self.own_checksum(generation);
                let transport = self
                    .config
                    .enrp
                    .local
                    .iter()
                    .find(|l| l.transport != Transport::Udp)
                    .map_or(Transport::Sctp, |l| l.transport);
                self.send_presence(
                    Target::UdpSend(to),
                    generation,
                    transport,
                    PrId(0),
                    false,
                    checksum,
                    out,
                );
            }
            AuditWork::Audit { peer, checksum } => self.audit(peer, checksum, now, out),
            AuditWork::Dead(peer) => self.dead_peer_counted(peer, now, out),
        }
    }

    /// RFC 5353 §3.6.1: compare a peer's checksum with ours over the PEs it owns; a mismatch
    /// starts a repair of only that peer's entries (§3.6.3, checklist PE-13).
    fn audit(&mut self, peer: PrId, checksum: u64, now: Millis, out: &mut Output) {
        let scope = self.scope();
        let local = scope.last_sums.get(&peer).copied().unwrap_or_default();
        let Some(p) = scope.peer_mut(peer) else {
            return;
        };
        if p.inbound.is_some() {
            return;
        }
        let ours = checksum_value(&local, p.generation);
        if ours == checksum {
            return;
        }
        tracing::debug!(%peer, ours, theirs = checksum, "ENRP audit mismatch; resynchronising");
        self.repair(peer, now, out);
    }

    /// RFC 5353 §3.6.3: asks `peer` for the PEs it owns (W=1); when the last page is in, its PEs
    /// it did not send are deleted here. Returns whether the request went out (not while
    /// another transfer from the peer runs, or without an association to it).
    fn repair(&mut self, peer: PrId, now: Millis, out: &mut Output) -> bool {
        let Some(p) = self.scope().peer_mut(peer) else {
            return false;
        };
        let Some(association) = p.reachable().filter(|_| p.inbound.is_none()) else {
            return false;
        };
        p.inbound = Some(Inbound {
            asked: now,
            own_children_only: true,
            mentor: false,
            seen: Some(FastSet::default()),
        });
        let generation = p.generation;
        self.metrics.enrp_resync();
        self.send_enrp(
            association,
            generation,
            peer,
            &EnrpBody::HandleTableRequest {
                own_children_only: true,
            },
            out,
        );
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn send_presence(
        &mut self,
        target: Target,
        generation: Generation,
        transport: Transport,
        receiver: PrId,
        reply_required: bool,
        checksum: u64,
        out: &mut Output,
    ) {
        let local = self
            .config
            .enrp
            .local
            .iter()
            .find(|l| l.transport == transport && l.generation == generation)
            .or_else(|| self.config.enrp.local.first())
            .copied();
        let ip = local.map(|l| l.address.ip());
        let ips: Vec<IpAddr> = ip.into_iter().filter(|ip| !ip.is_unspecified()).collect();
        let server_information = local.map(|l| ServerInformation {
            server_id: self.config.pr_id,
            transport: WireTransport {
                kind: match l.transport {
                    Transport::Sctp | Transport::Udp => TransportKind::Sctp,
                    Transport::Tcp | Transport::Mptcp => TransportKind::Tcp,
                },
                port: l.address.port(),
                transport_use: 0,
                service_code: 0,
                addresses: Seq::from_items(&ips),
            },
        });
        // A Transport parameter needs an address: a wildcard listener sends none.
        let server_information = server_information.filter(|_| !ips.is_empty());
        let message = EnrpMessage {
            sender: self.config.pr_id,
            receiver,
            body: EnrpBody::Presence {
                reply_required,
                checksum: Some(checksum),
                server_information,
            },
        };
        self.transmit_enrp(target, generation, &message, out);
    }

    fn send_enrp(
        &mut self,
        association: AssociationId,
        generation: Generation,
        receiver: PrId,
        body: &EnrpBody<'_>,
        out: &mut Output,
    ) {
        let message = EnrpMessage {
            sender: self.config.pr_id,
            receiver,
            body: *body,
        };
        self.transmit_enrp(Target::Association(association), generation, &message, out);
    }

    fn transmit_enrp(
        &mut self,
        target: Target,
        generation: Generation,
        message: &EnrpMessage<'_>,
        out: &mut Output,
    ) {
        match out.transmit(target, |buf| message.encode(generation, buf)) {
            Ok(()) => self
                .metrics
                .message_out(Protocol::Enrp, message.body.message_type()),
            Err(e) => tracing::warn!(?target, %e, "cannot encode an ENRP message; not sent"),
        }
    }

    /// One ENRP message received on an association of worker 0 (RFC 5353 §3).
    pub(super) fn on_enrp_message(
        &mut self,
        association: AssociationId,
        generation: Generation,
        msg: &[u8],
        now: Millis,
        out: &mut Output,
    ) {
        self.metrics
            .message_in(Protocol::Enrp, msg.first().copied().unwrap_or(0));
        if self.scope.is_none() {
            tracing::debug!(
                ?association,
                "ENRP message on a worker without the scope; ignored"
            );
            return;
        }
        let message = match EnrpMessage::decode(msg, generation) {
            Ok(decoded) => {
                let causes =
                    super::unrecognized_causes(&decoded.unrecognized, msg, message_type::ERROR);
                if !causes.is_empty() {
                    self.send_enrp_error(association, generation, &causes, out);
                }
                decoded.message
            }
            Err(e) => {
                self.enrp_decode_error(association, generation, &e, msg, out);
                return;
            }
        };
        let sender = message.sender;
        // Checklist PE-18: our own ID as sender (a loop, or a collision) is ignored.
        if sender == self.config.pr_id || sender.0 == 0 {
            return;
        }
        // An association speaks for one peer: the first sender it carried.
        match self.scope().bound.get(&association) {
            Some(&bound) if bound != sender => {
                tracing::debug!(?association, %sender, %bound, "ENRP sender changed on an association; ignored");
                return;
            }
            Some(_) => {}
            None => {
                self.scope().bound.insert(association, sender);
            }
        }
        let known = self.learn_peer(association, generation, sender, now, out);
        self.publish_replicating();
        match message.body {
            EnrpBody::Presence {
                reply_required,
                checksum,
                server_information,
            } => self.on_presence(
                association,
                sender,
                reply_required,
                checksum,
                server_information,
                now,
                out,
            ),
            EnrpBody::HandleTableRequest { own_children_only } => self.on_handle_table_request(
                association,
                generation,
                sender,
                own_children_only,
                known,
                now,
                out,
            ),
            EnrpBody::HandleTableResponse {
                reject,
                more_to_send,
                entries,
            } => self.on_handle_table_response(
                association,
                generation,
                sender,
                reject,
                more_to_send,
                entries,
                now,
                out,
            ),
            EnrpBody::HandleUpdate {
                takeover_suggested,
                action,
                pool_handle,
                pool_element,
            } => {
                self.on_handle_update(sender, action, pool_handle, &pool_element, now, out);
                if takeover_suggested
                    && action == UpdateAction::AddPe
                    && pool_element.home_pr == sender
                    && self.enrp_config().takeover_suggestion
                {
                    // The PE re-registers here once it follows the keep-alive.
                    let asap = pool_element.asap_transport.as_ref().and_then(|t| {
                        (t.kind == TransportKind::Sctp)
                            .then(|| {
                                t.addresses
                                    .iter()
                                    .next()
                                    .map(|ip| SocketAddr::new(ip, t.port))
                            })
                            .flatten()
                    });
                    let fits_rfc = pool_element.id.0 <= u64::from(u32::MAX);
                    self.claim_pe(pool_handle.0, pool_element.id, fits_rfc, asap, out);
                }
            }
            EnrpBody::ListRequest => self.on_list_request(association, generation, sender, out),
            EnrpBody::ListResponse { reject, servers } => {
                if !reject {
                    self.on_list_response(servers, generation, now);
                }
            }
            EnrpBody::InitTakeover { target } => {
                self.on_init_takeover(association, generation, sender, target, now, out)
            }
            EnrpBody::InitTakeoverAck { target } => {
                self.on_init_takeover_ack(sender, target, now, out)
            }
            EnrpBody::TakeoverServer { target } => {
                self.on_takeover_server(sender, target, now, out)
            }
            EnrpBody::Error(error) => {
                tracing::debug!(%sender, ?error, "ENRP_ERROR received");
            }
        }
    }

    /// Binds a message's sender to a peer, adding unknown peers (RFC 5353 §3.4.1, checklist
    /// PE-07: an unknown peer is sent a reply-required presence). Returns whether the peer was
    /// known before this message.
    fn learn_peer(
        &mut self,
        association: AssociationId,
        generation: Generation,
        sender: PrId,
        now: Millis,
        out: &mut Output,
    ) -> bool {
        let scope = self.scope();
        if let Some(p) = scope.peer_mut(sender) {
            p.last_heard = now;
            if p.association.is_none() {
                p.association = Some(association);
                p.connected = true;
                p.generation = generation;
            }
            return true;
        }
        if let Some(p) = scope.peer_by_association(association) {
            // A peer we connected to, telling its ID for the first time; a restarted static
            // peer tells a new one, and its old identity is left to be declared dead (and its
            // PEs taken over) like any silent peer.
            let old = p.id;
            p.id = sender;
            p.last_heard = now;
            p.connected = true;
            if old.0 != 0 {
                let mut gone = Peer::new(None, false, now);
                gone.id = old;
                gone.probe_since = Some(now);
                scope.peers.push(gone);
            }
            return true;
        }
        let mut p = Peer::new(None, false, now);
        p.id = sender;
        p.association = Some(association);
        p.connected = true;
        p.generation = generation;
        scope.peers.push(p);
        tracing::info!(peer = %sender, "ENRP: new peer");
        self.audit_work(
            AuditWork::Presence {
                association,
                reply_required: true,
            },
            now,
            out,
        );
        false
    }

    /// ENRP_PRESENCE (RFC 5353 §3.4): the peer is alive (a takeover of it stops, §3.5.1); a
    /// reply-required presence is answered (PE-08); its checksum is audited (§3.6.1).
    #[allow(clippy::too_many_arguments)]
    fn on_presence(
        &mut self,
        association: AssociationId,
        sender: PrId,
        reply_required: bool,
        checksum: Option<u64>,
        server_information: Option<ServerInformation<'_>>,
        now: Millis,
        out: &mut Output,
    ) {
        let starting_without_mentor =
            matches!(self.scope().phase, Phase::Starting { mentor: None, .. });
        let scope = self.scope();
        if scope.takeovers.iter().any(|t| t.target == sender) {
            tracing::info!(peer = %sender, "ENRP takeover aborted: the peer is alive");
            scope.takeovers.retain(|t| t.target != sender);
        }
        let Some(p) = scope.peer_mut(sender) else {
            return;
        };
        p.probe_since = None;
        p.active = true;
        p.yielded_at = None;
        if p.url.is_none()
            && let Some(url) = server_information.and_then(|s| url_of(&s, p.generation))
        {
            p.url = Some(url);
        }
        let generation = p.generation;
        let list = !p.listed;
        p.listed = true;
        if reply_required {
            self.audit_work(
                AuditWork::Presence {
                    association,
                    reply_required: false,
                },
                now,
                out,
            );
        }
        // RSPLIB asks every new peer for its peer list once.
        if list {
            self.send_enrp(association, generation, sender, &EnrpBody::ListRequest, out);
        }
        if starting_without_mentor {
            // RFC 5353 §3.2.2-3.2.3 (PE-03): the first peer heard is the mentor; download the
            // whole handlespace from it.
            if let Phase::Starting { until, .. } = self.scope().phase {
                self.scope().phase = Phase::Starting {
                    until,
                    mentor: Some(sender),
                };
            }
            let p = self.scope().peer_mut(sender).expect("known");
            p.inbound = Some(Inbound {
                asked: now,
                own_children_only: false,
                mentor: true,
                seen: None,
            });
            self.send_enrp(
                association,
                generation,
                sender,
                &EnrpBody::HandleTableRequest {
                    own_children_only: false,
                },
                out,
            );
            return;
        }
        if self.scope().taken_over.contains_key(&sender) {
            // A PR we took over is back (it was hung): whatever its checksum says, what it
            // still holds goes back to it and what it lost goes away ([`TakenOver`]).
            if self.repair(sender, now, out) {
                tracing::info!(peer = %sender, "ENRP: a PR taken over by this one is back; repairing its PEs");
                self.scope().taken_over.remove(&sender);
            }
            return;
        }
        if let Some(checksum) = checksum {
            self.audit_work(
                AuditWork::Audit {
                    peer: sender,
                    checksum,
                },
                now,
                out,
            );
        }
    }

    /// ENRP_LIST_REQUEST (RFC 5353 §3.2.2.2): the peers we know, or a reject while starting
    /// (PE-05).
    fn on_list_request(
        &mut self,
        association: AssociationId,
        generation: Generation,
        sender: PrId,
        out: &mut Output,
    ) {
        let reject = self.scope().phase != Phase::Live;
        let listed: Vec<(PrId, TransportUrl)> = if reject {
            Vec::new()
        } else {
            self.scope()
                .peers
                .iter()
                .filter(|p| p.id.0 != 0 && p.id != sender && p.active)
                .filter(|p| generation == Generation::Ng || p.id.0 <= u64::from(u32::MAX))
                .filter_map(|p| p.url.map(|u| (p.id, u)))
                .collect()
        };
        let ips: Vec<IpAddr> = listed.iter().map(|(_, u)| u.address.ip()).collect();
        let servers: Vec<ServerInformation<'_>> = listed
            .iter()
            .zip(&ips)
            .map(|((id, u), ip)| ServerInformation {
                server_id: *id,
                transport: wire_transport(u, ip),
            })
            .collect();
        self.send_enrp(
            association,
            generation,
            sender,
            &EnrpBody::ListResponse {
                reject,
                servers: Seq::from_items(&servers),
            },
            out,
        );
    }

    /// ENRP_LIST_RESPONSE: peers we did not know are connected to (RSPLIB introduces itself to
    /// each).
    fn on_list_response(
        &mut self,
        servers: Seq<'_, ServerInformation<'_>>,
        generation: Generation,
        now: Millis,
    ) {
        let own = self.config.pr_id;
        for s in servers.iter() {
            if s.server_id.0 == 0 || s.server_id == own {
                continue;
            }
            let scope = self.scope();
            if scope.peer(s.server_id).is_some() {
                continue;
            }
            let Some(url) = url_of(&s, generation) else {
                continue;
            };
            if scope.peers.iter().any(|p| p.url == Some(url)) {
                continue;
            }
            scope.peers.push(Peer::new(Some(url), false, now));
        }
    }

    /// ENRP_HANDLE_TABLE_REQUEST (RFC 5353 §3.2.3, §3.6.3): the next page of the handlespace (or
    /// of the PEs we own, W=1), built by the shard the transfer is at. Rejected while starting
    /// (PE-05) and for peers unknown before this message (PE-17).
    #[allow(clippy::too_many_arguments)]
    fn on_handle_table_request(
        &mut self,
        association: AssociationId,
        generation: Generation,
        sender: PrId,
        own_children_only: bool,
        known: bool,
        now: Millis,
        out: &mut Output,
    ) {
        if known
            && !own_children_only
            && sender > self.config.pr_id
            && let Phase::Starting { .. } = self.scope().phase
        {
            // Registrars started together would reject each other's start-up downloads until
            // their discovery timeouts ran out (as would a registrar restarted meanwhile). RFC
            // 5353 §3.2.2 leaves the end of start-up to the implementation: of two starting
            // PRs, the one with the smaller ID serves and becomes the other's mentor. What it
            // has not loaded yet comes with the audits of its peers' presences.
            tracing::info!(peer = %sender, "ENRP start-up: a starting peer with a greater ID asks this PR to be its mentor; serving");
            self.scope().phase = Phase::Live;
        }
        if self.scope().phase != Phase::Live || !known {
            self.send_enrp(
                association,
                generation,
                sender,
                &EnrpBody::HandleTableResponse {
                    reject: true,
                    more_to_send: false,
                    entries: Seq::from_items(&[]),
                },
                out,
            );
            return;
        }
        let transfer = match self
            .scope()
            .peer_mut(sender)
            .and_then(|p| p.outbound.take())
        {
            Some(t) if t.own_children_only == own_children_only && t.association == association => {
                t
            }
            _ => Outbound {
                association,
                own_children_only,
                shard: 0,
                cursor: TableCursor::default(),
            },
        };
        let request = TablePageRequest {
            association,
            peer: sender,
            generation,
            own_children_only,
            cursor: transfer.cursor,
            max_pes: self.page_size(generation),
        };
        let shard = transfer.shard;
        self.scope().peer_mut(sender).expect("known").outbound = Some(transfer);
        self.send_to(shard, Replication::TablePage(Box::new(request)), now, out);
    }

    /// PEs per table page: the configured number, at most RSPLIB's 128 towards RFC peers.
    fn page_size(&self, generation: Generation) -> usize {
        let configured = self.enrp_config().max_pes_per_table_response.max(1);
        match generation {
            Generation::Rfc => configured.min(128),
            Generation::Ng => configured,
        }
    }

    /// At a shard owner: the next page of a transfer from this shard, encoded as the whole
    /// ENRP_HANDLE_TABLE_RESPONSE (M=1 unless it is the last shard's last page), at most about
    /// 48 KiB.
    pub(super) fn answer_table_page(
        &mut self,
        request: TablePageRequest,
        now: Millis,
        out: &mut Output,
    ) {
        const MAX_BYTES: usize = 48 * 1024;
        let own = self.config.pr_id;
        let TablePageRequest {
            association,
            peer,
            generation,
            own_children_only,
            cursor,
            max_pes,
        } = request;
        let mut withheld = 0;
        let (page, next) = self.shard.table_page(
            cursor,
            max_pes,
            MAX_BYTES,
            |e| {
                let wanted = !own_children_only || e.home_pr == own;
                if wanted && !e.fits(generation) {
                    withheld += 1;
                }
                wanted && e.fits(generation)
            },
            approximate_size,
        );
        self.metrics.enrp_withheld(withheld);
        let more = next.is_some() || self.index + 1 < self.workers;
        let empty = page.is_empty();
        let views: Vec<Vec<rserpool_protocol::PoolElementParam<'_>>> = page
            .iter()
            .map(|(_, es)| es.iter().map(|e| e.view(true)).collect())
            .collect();
        let entries: Vec<PoolEntry<'_>> = page
            .iter()
            .zip(&views)
            .map(|((h, _), v)| PoolEntry {
                pool_handle: PoolHandle(h),
                pool_elements: Seq::from_items(v),
            })
            .collect();
        let message = EnrpMessage {
            sender: own,
            receiver: peer,
            body: EnrpBody::HandleTableResponse {
                reject: false,
                more_to_send: more,
                entries: Seq::from_items(&entries),
            },
        };
        let mut bytes = Vec::new();
        if let Err(e) = encode_into(&mut bytes, |buf| message.encode(generation, buf)) {
            tracing::warn!(%peer, %e, "cannot encode a handle table page; the transfer stops");
            bytes.clear();
        }
        let done = TablePageDone {
            association,
            peer,
            shard: self.index,
            next,
            empty,
            message: bytes.into(),
        };
        self.send_to(0, Replication::TablePageDone(Box::new(done)), now, out);
    }

    /// At worker 0: a shard's page; sent, unless it is empty and more shards follow (then the
    /// next shard is asked at once).
    pub(super) fn table_page_done(&mut self, done: TablePageDone, now: Millis, out: &mut Output) {
        let workers = self.workers;
        let Some(scope) = self.scope.as_mut() else {
            return;
        };
        let Some(p) = scope.peer_mut(done.peer) else {
            return;
        };
        let generation = p.generation;
        let association = done.association;
        let Some(t) = p.outbound.as_mut() else {
            return;
        };
        if t.association != association
            || t.shard != done.shard
            || !self.associations.contains_key(&association)
        {
            return;
        }
        match done.next {
            Some(cursor) => t.cursor = cursor,
            None => {
                t.shard += 1;
                t.cursor = TableCursor::default();
            }
        }
        let (shard, cursor, own_children_only) = (t.shard, t.cursor, t.own_children_only);
        if shard >= workers || done.message.is_empty() {
            p.outbound = None;
        }
        if done.message.is_empty() {
            return;
        }
        if done.empty && shard < workers {
            let request = TablePageRequest {
                association,
                peer: done.peer,
                generation,
                own_children_only,
                cursor,
                max_pes: self.page_size(generation),
            };
            self.send_to(shard, Replication::TablePage(Box::new(request)), now, out);
            return;
        }
        self.metrics
            .message_out(Protocol::Enrp, message_type::HANDLE_TABLE_RESPONSE);
        out.transmit_bytes(Target::Association(association), &done.message);
    }

    /// ENRP_HANDLE_TABLE_RESPONSE (RFC 5353 §3.2.3, §3.6.3): apply the entries, ask for more
    /// while M=1; at the end, purge the repaired peer's PEs it did not send, or finish start-up.
    #[allow(clippy::too_many_arguments)]
    fn on_handle_table_response(
        &mut self,
        association: AssociationId,
        generation: Generation,
        sender: PrId,
        reject: bool,
        more_to_send: bool,
        entries: Seq<'_, PoolEntry<'_>>,
        now: Millis,
        out: &mut Output,
    ) {
        let own = self.config.pr_id;
        let Some(p) = self.scope().peer_mut(sender) else {
            return;
        };
        let Some(mut inbound) = p.inbound.take() else {
            // Not asked for: ignored (RSPLIB).
            return;
        };
        if reject {
            tracing::debug!(peer = %sender, "ENRP handle table request rejected");
            if inbound.mentor {
                self.scope().forget_mentor();
            }
            return;
        }
        // One batch per shard: each pool a page touches is republished once per page.
        let mut batches: Vec<Vec<PeerAdd>> = (0..self.workers).map(|_| Vec::new()).collect();
        for pool in entries.iter() {
            let handle = pool.pool_handle.0;
            let shard = rserpool_handlespace::shard_index(handle, self.workers);
            for pe in pool.pool_elements.iter() {
                if pe.home_pr == own || pe.home_pr.0 == 0 {
                    continue;
                }
                if let Some(seen) = inbound.seen.as_mut() {
                    seen.insert((handle_hash(handle), pe.id));
                }
                batches[shard].push(PeerAdd {
                    pool_handle: handle.into(),
                    registration: PeRegistration::from_view(&pe),
                    home_pr: pe.home_pr,
                });
            }
        }
        for (shard, adds) in batches.into_iter().enumerate() {
            if !adds.is_empty() {
                self.send_to(shard, Replication::PeerAdds(adds), now, out);
            }
        }
        if more_to_send {
            inbound.asked = now;
            let own_children_only = inbound.own_children_only;
            self.scope().peer_mut(sender).expect("known").inbound = Some(inbound);
            self.send_enrp(
                association,
                generation,
                sender,
                &EnrpBody::HandleTableRequest { own_children_only },
                out,
            );
            return;
        }
        if let Some(seen) = inbound.seen {
            let keep = Arc::new(seen);
            for w in 0..self.workers {
                self.send_to(
                    w,
                    Replication::Purge {
                        owner: sender,
                        keep: Arc::clone(&keep),
                    },
                    now,
                    out,
                );
            }
        }
        if inbound.mentor {
            tracing::info!(mentor = %sender, "ENRP start-up: handlespace loaded from the mentor");
            self.scope().phase = Phase::Live;
        }
    }

    /// ENRP_HANDLE_UPDATE (RFC 5353 §3.3): only the PE's home PR may add or delete it
    /// (procedures §17, check 3); a PE we own is never changed by a peer's stale copy
    /// (RSPLIB).
    fn on_handle_update(
        &mut self,
        sender: PrId,
        action: UpdateAction,
        pool_handle: PoolHandle<'_>,
        pe: &rserpool_protocol::PoolElementParam<'_>,
        now: Millis,
        out: &mut Output,
    ) {
        let handle = pool_handle.0;
        match action {
            UpdateAction::AddPe => {
                if pe.home_pr != sender {
                    tracing::debug!(%sender, home = %pe.home_pr, "ADD_PE from a PR that is not the PE's home; ignored");
                    return;
                }
                self.route(
                    handle,
                    Replication::PeerAdds(vec![PeerAdd {
                        pool_handle: handle.into(),
                        registration: PeRegistration::from_view(pe),
                        home_pr: sender,
                    }]),
                    now,
                    out,
                );
            }
            UpdateAction::DelPe => self.route(
                handle,
                Replication::PeerDelete {
                    sender,
                    pool_handle: handle.into(),
                    pe_id: pe.id,
                },
                now,
                out,
            ),
        }
    }

    /// At the shard owner: store PEs learnt from a peer, as one handlespace batch (each pool
    /// republished once).
    pub(super) fn apply_peer_adds(&mut self, adds: Vec<PeerAdd>, now: Millis) {
        self.shard.begin_batch();
        for add in adds {
            self.apply_peer_add(add, now);
        }
        self.shard.end_batch();
    }

    /// Stores one PE learnt from a peer. Neither a table entry nor a handle update takes a PE from
    /// a live association of ours: the PE's registration here is what the PE itself said last
    /// over a connection that still stands. A peer that took this PR over during a partition
    /// resends the PEs it took; a registrar that hung replays, when it runs again, the
    /// re-registrations in its backlog from before the PE left it for this PR (its ADD_PE would
    /// hand the PE over, and the DEL_PE that follows would remove it everywhere). A PE that
    /// really moved closes its association here, and the peer's next presence audit brings its
    /// copy here (found by the simulation's SIGSTOP faults).
    fn apply_peer_add(&mut self, add: PeerAdd, now: Millis) {
        let PeerAdd {
            pool_handle,
            registration,
            home_pr,
        } = add;
        let pe_id = registration.id;
        if self
            .shard
            .entry(&pool_handle, pe_id)
            .is_some_and(|e| e.association.is_some())
        {
            tracing::debug!(%home_pr, pe = %pe_id, "a peer's copy of a PE registered here; kept ours");
            return;
        }
        if let Err(e) = self
            .shard
            .register(&pool_handle, registration, home_pr, None, now)
        {
            tracing::debug!(%home_pr, %e, "PE from a peer refused by the handlespace");
        }
    }

    /// At the shard owner: DEL_PE from the PE's home PR. Also from another PR for a PE this PR
    /// took over (ours, with no association here): that PR registered the PE after us or was
    /// the home we took it from, and still held it (it was hung, not dead); the PE is gone, and
    /// as its home we tell every peer (a peer ignores a DEL_PE from a PR that is not the PE's
    /// home, so without this the PE would be served until its registration life runs out).
    pub(super) fn apply_peer_delete(
        &mut self,
        sender: PrId,
        pool_handle: &[u8],
        pe_id: PeId,
        now: Millis,
        out: &mut Output,
    ) {
        let own = self.config.pr_id;
        let Some(home) = self
            .shard
            .entry(pool_handle, pe_id)
            .filter(|e| e.association.is_none())
            .map(|e| e.home_pr)
        else {
            return;
        };
        if home != sender && home != own {
            return;
        }
        if let Ok(Some(removed)) = self.shard.deregister(pool_handle, pe_id, None) {
            self.metrics.pe_removed(RemovalReason::Peer);
            if home == own {
                tracing::debug!(%sender, pe = %pe_id, "DEL_PE for a PE taken over from the sender; deleted and passed on");
                self.replicate_removal(removed, now, out);
            }
        }
    }

    /// At the shard owner: end of an audit repair (RFC 5353 §3.6.3 step 5): the peer's PEs it
    /// did not send are deleted.
    /// The PEs this PR took over from `owner` and still holds without an association (none
    /// re-registered here), if `owner` did not send them either, are deleted too, and as their
    /// home this PR tells its peers ([`TakenOver`]).
    pub(super) fn apply_purge(
        &mut self,
        owner: PrId,
        keep: &FastSet<(u64, PeId)>,
        now: Millis,
        out: &mut Output,
    ) {
        let stale: Vec<(Arc<[u8]>, PeId)> = self
            .shard
            .owned_by(owner)
            .filter(|(h, e)| e.association.is_none() && !keep.contains(&(handle_hash(h), e.id())))
            .map(|(h, e)| (Arc::clone(h), e.id()))
            .collect();
        for (handle, id) in stale {
            if let Ok(Some(_)) = self.shard.deregister(&handle, id, None) {
                self.metrics.pe_removed(RemovalReason::Peer);
            }
        }
        let own = self.config.pr_id;
        let Some(taken) = self.taken_over.remove(&owner) else {
            return;
        };
        for (handle, id) in taken.pes {
            if keep.contains(&(handle_hash(&handle), id))
                || !self
                    .shard
                    .entry(&handle, id)
                    .is_some_and(|e| e.home_pr == own && e.association.is_none())
            {
                continue;
            }
            if let Ok(Some(removed)) = self.shard.deregister(&handle, id, None) {
                self.metrics.pe_removed(RemovalReason::Peer);
                self.replicate_removal(removed, now, out);
            }
        }
    }

    /// At the shard owner: a PE this PR owns changed; tell the peers (RFC 5353 §3.3).
    pub(super) fn replicate(
        &mut self,
        action: UpdateAction,
        pool_handle: Arc<[u8]>,
        entry: PoolElementEntry,
        now: Millis,
        out: &mut Output,
    ) {
        if !self.replicates() || entry.home_pr != self.config.pr_id {
            return;
        }
        let own = self.shard.checksums(self.config.pr_id);
        self.send_to(
            0,
            Replication::Replicate(Box::new(Replicate {
                action,
                pool_handle,
                entry,
                shard: self.index,
                own,
            })),
            now,
            out,
        );
    }

    /// At worker 0: ENRP_HANDLE_UPDATE to every reachable peer that can carry the PE.
    pub(super) fn send_update(&mut self, update: &Replicate, out: &mut Output) {
        let Some(scope) = self.scope.as_mut() else {
            return;
        };
        scope.own_by_shard[update.shard] = update.own;
        // nextgen.md: an RFC peer cannot carry 64-bit IDs; such PEs are withheld from it,
        // counted, and logged once per peer.
        let mut withheld = 0;
        for p in scope
            .peers
            .iter_mut()
            .filter(|p| p.id.0 != 0 && p.active && p.reachable().is_some())
            .filter(|p| !update.entry.fits(p.generation))
        {
            withheld += 1;
            if !p.withheld_logged {
                p.withheld_logged = true;
                tracing::warn!(
                    peer = %p.id,
                    "an RFC-generation ENRP peer is not told about PEs whose IDs need 64 bits \
                     (rserpool_enrp_withheld_total counts them)"
                );
            }
        }
        let targets: Vec<(AssociationId, Generation, PrId)> = scope
            .peers
            .iter()
            .filter(|p| p.id.0 != 0 && p.active)
            .filter(|p| update.entry.fits(p.generation))
            .filter_map(|p| p.reachable().map(|a| (a, p.generation, p.id)))
            .collect();
        self.metrics.enrp_withheld(withheld);
        let body = EnrpBody::HandleUpdate {
            takeover_suggested: false,
            action: update.action,
            pool_handle: PoolHandle(&update.pool_handle),
            pool_element: update.entry.view(true),
        };
        for &(association, generation, receiver) in &targets {
            self.send_enrp(association, generation, receiver, &body, out);
        }
        if update.action != UpdateAction::AddPe || !self.enrp_config().takeover_suggestion {
            return;
        }
        // RSPLIB's choice: the peer whose ID is farthest from the PE's by XOR, if farther
        // than ours.
        let pe = update.entry.id().0;
        let own = self.config.pr_id.0 ^ pe;
        if let Some(&(association, generation, receiver)) = targets
            .iter()
            .filter(|(_, _, id)| id.0 ^ pe > own)
            .max_by_key(|(_, _, id)| id.0 ^ pe)
        {
            let suggestion = EnrpBody::HandleUpdate {
                takeover_suggested: true,
                action: UpdateAction::AddPe,
                pool_handle: PoolHandle(&update.pool_handle),
                pool_element: update.entry.view(true),
            };
            self.send_enrp(association, generation, receiver, &suggestion, out);
        }
    }

    /// A peer did not answer its probe (RFC 5353 §3.4.3): it stops being probed, and a
    /// checksum round tells whether it owns PEs here.
    fn peer_dead(&mut self, id: PrId, now: Millis, out: &mut Output) {
        tracing::warn!(peer = %id, "ENRP peer did not answer; declared dead");
        self.metrics.enrp_peer_dead();
        let scope = self.scope();
        let Some(p) = scope.peer_mut(id) else {
            return;
        };
        // Its association stays open until the takeover ends: a hung peer that wakes up gets
        // the ENRP_INIT_TAKEOVER and can object with a presence (RFC 5353 §3.5.1).
        p.active = false;
        self.audit_work(AuditWork::Dead(id), now, out);
    }

    /// A dead peer that owns PEs here is taken over (RSPLIB), one that owns none forgotten.
    fn dead_peer_counted(&mut self, id: PrId, now: Millis, out: &mut Output) {
        let interval = self.enrp_config().reconnect_interval;
        let scope = self.scope();
        if scope.peer(id).is_none_or(|p| p.active) {
            // Heard again meanwhile.
            return;
        }
        let owns = scope.last_sums.get(&id).is_some_and(|c| c.pes > 0);
        if owns {
            self.start_takeover(id, now, out);
        } else {
            tracing::info!(peer = %id, "the dead ENRP peer owned no PEs here; forgotten");
            scope.drop_peer(id, now, interval, &mut out.aborts);
        }
    }

    /// RFC 5353 §3.5.1 (PE-14): ENRP_INIT_TAKEOVER to every peer, the target included; won once
    /// every other peer acknowledged.
    fn start_takeover(&mut self, target: PrId, now: Millis, out: &mut Output) {
        let expiry = self.enrp_config().takeover_expiry;
        let scope = self.scope();
        if scope.takeovers.iter().any(|t| t.target == target) {
            return;
        }
        if let Some(p) = scope.peer_mut(target) {
            p.active = false;
        }
        let pending: Vec<PrId> = scope
            .peers
            .iter()
            .filter(|p| p.id.0 != 0 && p.id != target && p.reachable().is_some())
            .map(|p| p.id)
            .collect();
        let recipients: Vec<(AssociationId, Generation, PrId)> = scope
            .peers
            .iter()
            .filter(|p| p.id.0 != 0)
            .filter_map(|p| p.reachable().map(|a| (a, p.generation, p.id)))
            .collect();
        tracing::info!(%target, acks_needed = pending.len(), "ENRP takeover started");
        let done = pending.is_empty();
        scope.takeovers.push(Takeover {
            target,
            pending,
            expires: now + expiry,
        });
        for (association, generation, receiver) in recipients {
            self.send_enrp(
                association,
                generation,
                receiver,
                &EnrpBody::InitTakeover { target },
                out,
            );
        }
        if done {
            self.takeover_won(target, now, out);
        }
    }

    /// ENRP_INIT_TAKEOVER (RFC 5353 §3.5.2, PE-15, PE-16).
    fn on_init_takeover(
        &mut self,
        association: AssociationId,
        generation: Generation,
        sender: PrId,
        target: PrId,
        now: Millis,
        out: &mut Output,
    ) {
        let own = self.config.pr_id;
        if target == own {
            // We are alive: a presence to every peer cancels the takeover everywhere.
            tracing::warn!(%sender, "ENRP: a peer tries to take this PR over; answering with presence");
            let all: Vec<AssociationId> = self
                .scope()
                .peers
                .iter()
                .filter_map(Peer::reachable)
                .collect();
            for association in all {
                self.audit_work(
                    AuditWork::Presence {
                        association,
                        reply_required: false,
                    },
                    now,
                    out,
                );
            }
            return;
        }
        let scope = self.scope();
        if scope.takeovers.iter().any(|t| t.target == target) {
            // Both run a takeover of the same target: the smaller ID yields.
            if own.0 > sender.0 {
                return;
            }
            scope.takeovers.retain(|t| t.target != target);
        }
        if let Some(p) = scope.peer_mut(target) {
            p.active = false;
            p.yielded_at = Some(now);
        }
        self.send_enrp(
            association,
            generation,
            sender,
            &EnrpBody::InitTakeoverAck { target },
            out,
        );
    }

    /// ENRP_INIT_TAKEOVER_ACK: one more peer agrees.
    fn on_init_takeover_ack(&mut self, sender: PrId, target: PrId, now: Millis, out: &mut Output) {
        let scope = self.scope();
        let Some(t) = scope.takeovers.iter_mut().find(|t| t.target == target) else {
            return;
        };
        t.pending.retain(|&p| p != sender);
        if t.pending.is_empty() {
            self.takeover_won(target, now, out);
        }
    }

    /// Every peer agreed (RFC 5353 §3.5.1): ENRP_TAKEOVER_SERVER to all, and this PR becomes
    /// the home PR of the target's PEs.
    fn takeover_won(&mut self, target: PrId, now: Millis, out: &mut Output) {
        let own = self.config.pr_id;
        let interval = self.enrp_config().reconnect_interval;
        let scope = self.scope();
        scope.takeovers.retain(|t| t.target != target);
        let recipients: Vec<(AssociationId, Generation, PrId)> = scope
            .peers
            .iter()
            .filter(|p| p.id.0 != 0 && p.id != target)
            .filter_map(|p| p.reachable().map(|a| (a, p.generation, p.id)))
            .collect();
        scope.drop_peer(target, now, interval, &mut out.aborts);
        scope
            .taken_over
            .retain(|_, at| now.saturating_sub(*at) < TAKEN_OVER_MEMORY);
        scope.taken_over.insert(target, now);
        tracing::info!(%target, "ENRP takeover won");
        self.metrics.enrp_takeover();
        for (association, generation, receiver) in recipients {
            self.send_enrp(
                association,
                generation,
                receiver,
                &EnrpBody::TakeoverServer { target },
                out,
            );
        }
        for w in 0..self.workers {
            self.send_to(
                w,
                Replication::TakeOver {
                    dead: target,
                    new_home: own,
                },
                now,
                out,
            );
        }
    }

    /// ENRP_TAKEOVER_SERVER (RFC 5353 §3.5.2): the sender is the new home PR of the target's PEs.
    fn on_takeover_server(&mut self, sender: PrId, target: PrId, now: Millis, out: &mut Output) {
        let interval = self.enrp_config().reconnect_interval;
        if target == self.config.pr_id {
            tracing::warn!(%sender, "ENRP: a peer took this PR over; its audit will resynchronise our PEs");
            return;
        }
        let scope = self.scope();
        scope.takeovers.retain(|t| t.target != target);
        scope.drop_peer(target, now, interval, &mut out.aborts);
        for w in 0..self.workers {
            self.send_to(
                w,
                Replication::TakeOver {
                    dead: target,
                    new_home: sender,
                },
                now,
                out,
            );
        }
    }

    /// At the shard owner: move a dead PR's PEs to their new home PR.
    /// When this PR is the new home, each PE reachable over SCTP is sent an
    /// ENDPOINT_KEEP_ALIVE with the H bit (RFC 5353 §3.5.1): it adopts this PR and re-registers
    /// here. PEs over TCP cannot be reached (they hunt for a new PR themselves when their home
    /// PR's connection breaks); they keep their registration life.
    pub(super) fn apply_take_over(
        &mut self,
        dead: PrId,
        new_home: PrId,
        now: Millis,
        out: &mut Output,
    ) {
        let moved = self.shard.take_over(dead, new_home);
        if moved.is_empty() {
            return;
        }
        tracing::debug!(%dead, %new_home, pes = moved.len(), "PEs taken over");
        if new_home != self.config.pr_id {
            return;
        }
        self.taken_over
            .retain(|_, t| now.saturating_sub(t.at) < TAKEN_OVER_MEMORY);
        let taken = self.taken_over.entry(dead).or_insert_with(|| TakenOver {
            at: now,
            pes: Vec::new(),
        });
        taken.at = now;
        taken
            .pes
            .extend(moved.iter().map(|(h, e)| (Arc::clone(h), e.id())));
        for (pool_handle, entry) in &moved {
            let asap = entry
                .registration
                .asap_transport
                .as_ref()
                .filter(|t| t.kind == TransportKind::Sctp)
                .and_then(|t| t.addresses.first().map(|&ip| SocketAddr::new(ip, t.port)));
            self.claim_pe(
                pool_handle,
                entry.id(),
                entry.fits(Generation::Rfc),
                asap,
                out,
            );
        }
    }

    /// Sends a PE an ENDPOINT_KEEP_ALIVE with the H bit (this PR wants to be its home) at its
    /// SCTP ASAP address, if it has one (a PE over TCP cannot be reached).
    fn claim_pe(
        &mut self,
        pool_handle: &[u8],
        pe_id: PeId,
        fits_rfc: bool,
        asap: Option<SocketAddr>,
        out: &mut Output,
    ) {
        let Some(to) = asap else {
            return;
        };
        // RSPLIB's PEs speak the RFC generation; a PE whose IDs need 64 bits is an NG one.
        let generation = if fits_rfc {
            Generation::Rfc
        } else {
            Generation::Ng
        };
        let message = rserpool_protocol::AsapMessage::EndpointKeepAlive {
            home: true,
            server_id: self.config.pr_id,
            pool_handle: PoolHandle(pool_handle),
            pe_id: Some(pe_id),
        };
        let target = Target::SctpAddress(to, generation);
        match out.transmit(target, |buf| message.encode(generation, buf)) {
            Ok(()) => {
                self.metrics.keep_alive_sent();
                self.metrics.message_out(
                    Protocol::Asap,
                    rserpool_protocol::asap::message_type::ENDPOINT_KEEP_ALIVE,
                );
            }
            Err(e) => tracing::warn!(%e, "cannot encode a keep-alive; not sent"),
        }
    }

    /// A datagram on an ENRP UDP endpoint: presences announce peers (RSPLIB's multicast
    /// discovery); a new one is connected to. Audits only run over associations (RSPLIB).
    pub(in crate::core) fn on_enrp_datagram(
        &mut self,
        generation: Generation,
        msg: &[u8],
        now: Millis,
        out: &mut Output,
    ) {
        self.metrics
            .message_in(Protocol::Enrp, msg.first().copied().unwrap_or(0));
        if self.scope.is_none() {
            return;
        }
        let Ok(decoded) = EnrpMessage::decode(msg, generation) else {
            self.metrics.decode_error(None);
            return;
        };
        let message = decoded.message;
        let EnrpBody::Presence {
            server_information: Some(info),
            ..
        } = message.body
        else {
            return;
        };
        if message.sender == self.config.pr_id || message.sender.0 == 0 {
            return;
        }
        let scope = self.scope();
        if let Some(p) = scope.peer_mut(message.sender) {
            p.last_heard = now;
            return;
        }
        let Some(url) = url_of(&info, generation) else {
            return;
        };
        if scope.peers.iter().any(|p| p.url == Some(url)) {
            return;
        }
        tracing::info!(peer = %message.sender, %url, "ENRP: peer announced by presence datagram");
        scope.peers.push(Peer::new(Some(url), false, now));
        self.enrp_reconnect(now, out);
    }

    fn enrp_decode_error(
        &mut self,
        association: AssociationId,
        generation: Generation,
        error: &DecodeError,
        msg: &[u8],
        out: &mut Output,
    ) {
        self.metrics.decode_error(error.reply_cause());
        tracing::debug!(?association, %error, "undecodable ENRP message");
        if let Some(cause) = super::decode_error_cause(error, msg, message_type::ERROR) {
            self.send_enrp_error(association, generation, &[cause], out);
        }
    }

    /// ENRP_ERROR (RFC 5353 §3.7, checklist PE-19).
    fn send_enrp_error(
        &mut self,
        association: AssociationId,
        generation: Generation,
        causes: &[ErrorCause<'_>],
        out: &mut Output,
    ) {
        let receiver = self
            .scope()
            .bound
            .get(&association)
            .copied()
            .unwrap_or(PrId(0));
        self.send_enrp(
            association,
            generation,
            receiver,
            &EnrpBody::Error(Seq::from_items(causes)),
            out,
        );
    }
}

/// A checksum as the generation's PE Checksum parameter carries it.
fn checksum_value(c: &OwnerChecksums, generation: Generation) -> u64 {
    match generation {
        Generation::Rfc => u64::from(c.internet16.value()),
        Generation::Ng => c.ng.value(),
    }
}

/// Where a peer's Server Information says it listens.
fn url_of(info: &ServerInformation<'_>, generation: Generation) -> Option<TransportUrl> {
    let ip = info.transport.addresses.iter().next()?;
    let transport = match info.transport.kind {
        TransportKind::Sctp => Transport::Sctp,
        TransportKind::Tcp => Transport::Tcp,
        _ => return None,
    };
    Some(TransportUrl {
        transport,
        address: SocketAddr::new(ip, info.transport.port),
        generation,
    })
}

fn wire_transport<'a>(url: &TransportUrl, ip: &'a IpAddr) -> WireTransport<'a> {
    WireTransport {
        kind: match url.transport {
            Transport::Tcp | Transport::Mptcp => TransportKind::Tcp,
            Transport::Sctp | Transport::Udp => TransportKind::Sctp,
        },
        port: url.address.port(),
        transport_use: 0,
        service_code: 0,
        addresses: Seq::from_items(std::slice::from_ref(ip)),
    }
}

/// An upper bound of a PE parameter's encoded size (NG sizes; addresses as IPv6).
fn approximate_size(e: &PoolElementEntry) -> usize {
    let addresses = |n: usize| 8 + 20 * n;
    let user = match &e.registration.user_transport {
        rserpool_handlespace::OwnedUserTransport::Transport(t) => addresses(t.addresses.len()),
        _ => 32,
    };
    let asap = e
        .registration
        .asap_transport
        .as_ref()
        .map_or(0, |t| addresses(t.addresses.len()));
    24 + user + 32 + asap
}
