//! The PR's ENRP peer side (RFC 5353): the operating scope's peers, presence and liveness,
//! handle table transfer (start-up from a mentor, audit repair), handle updates, and takeover of
//! a dead PR.
//!
//! The scope's state ([`Scope`]) lives on worker 0, which holds every ENRP association. Writes
//! go to each pool's shard owner like ASAP writes ([`Replication::PeerAdds`] and friends), and each
//! shard hands the changes of the PEs this PR owns back to worker 0 for replication
//! ([`Replication::Replicate`]). Audit checksums are summed over the shards by a checksum round: a
//! query through every mailbox, so each reply reflects every write worker 0 sent that shard
//! before it, and every replication that shard sent before it has already gone out (design §3).
//!
//! This module owns the configuration ([`EnrpConfig`]), the scope's state (the peer table with
//! each peer's transfers, the takeovers under way), the encoding of ENRP messages, and the
//! dispatch of a received ENRP message to its procedure (RFC 5353 §3), with ENRP_ERROR for what
//! cannot be decoded (§3.7). The procedures live in:
//!
//! - [`scope`]: the peers, their ENRP associations, peer admission and the peer list
//!   (§3.2.2.2, §3.4.1);
//! - [`presence`]: ENRP_PRESENCE, heartbeats and peer liveness, the housekeeping tick (§3.4;
//!   the start-up timeout and the choice of a mentor, §3.2.2);
//! - [`transfer`]: handle table transfer, page by page (§3.2.3, §3.6.3);
//! - [`update`]: handle updates (§3.3);
//! - [`takeover`]: takeover of a dead PR (§3.5);
//! - [`audit`]: checksum rounds, audit and repair (§3.6).
//!
//! [`Replication::PeerAdds`]: super::Replication::PeerAdds
//! [`Replication::Replicate`]: super::Replication::Replicate

mod allowlist;
mod audit;
mod presence;
mod scope;
mod takeover;
mod transfer;
mod update;

use std::net::SocketAddr;

use rserpool_handlespace::{
    AssociationId, FastSet, Millis, OwnerChecksums, PeId, PrId, TableCursor,
};
use rserpool_protocol::enrp::message_type;
use rserpool_protocol::{
    DecodeError, EnrpBody, EnrpMessage, ErrorCause, Generation, Seq, ServerInformation,
    TransportKind, UpdateAction,
};

pub use self::allowlist::{AllowedPeer, AllowedPeerError};
use self::audit::{AuditWork, Round};
pub(super) use self::takeover::TakenOver;
pub use self::transfer::{TablePageDone, TablePageRequest};
pub use self::update::{PeerAdd, Replicate};
use super::{FastMap, Output, Replication, Target, Worker};
use crate::core::Protocol;
use crate::core::counters::Limit;
use rserpool_protocol::url::{Transport, TransportUrl};

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
    /// The peers admitted to the operating scope (RFC 5355 §2.5); empty: every PR that reaches
    /// the ENRP endpoints, as RSPLIB.
    pub allowed_peers: Vec<AllowedPeer>,
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
            allowed_peers: Vec::new(),
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
    /// The association the requests go out on: pages arriving on another one (two PRs that both
    /// connect hold two) belong to another exchange and are ignored, or two request chains on
    /// two associations would restart the peer's transfer in turn for ever.
    association: AssociationId,
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
    /// ENRP work another worker sent: at a shard (peers' PEs, purges, takeovers, table pages,
    /// checksum queries), or at worker 0 (updates to send, pages built, checksum replies).
    pub(in crate::core) fn on_replication(
        &mut self,
        forward: Replication,
        now: Millis,
        out: &mut Output,
    ) {
        match forward {
            Replication::PeerAdds(adds) => self.apply_peer_adds(adds, now),
            Replication::PeerDelete {
                sender,
                pool_handle,
                pe_id,
            } => self.apply_peer_delete(sender, &pool_handle, pe_id, now, out),
            Replication::Purge { owner, keep } => self.apply_purge(owner, &keep, now, out),
            Replication::TakeOver { dead, new_home } => {
                self.apply_take_over(dead, new_home, now, out)
            }
            Replication::Replicate(update) => self.send_update(&update, out),
            Replication::TablePage(request) => self.answer_table_page(*request, now, out),
            Replication::TablePageDone(done) => self.table_page_done(*done, now, out),
            Replication::ChecksumQuery { round } => self.answer_checksum_query(round, now, out),
            Replication::ChecksumReply {
                round,
                shard,
                owners,
            } => self.checksum_reply(round, shard, owners, now, out),
        }
    }

    fn scope(&mut self) -> &mut Scope {
        self.scope.as_mut().expect("ENRP runs on worker 0")
    }

    fn enrp_config(&self) -> &EnrpConfig {
        &self.config.enrp
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
        // RFC 5355 §2.5: a PR not on the allowlist never enters the scope or the handlespace.
        if !self.admits_peer(association, sender) {
            self.refuse_peer(association, generation, sender, now, out);
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
    /// Whether `sender`, speaking over `association`, is on the allowlist.
    fn admits_peer(&self, association: AssociationId, sender: PrId) -> bool {
        let list = &self.config.enrp.allowed_peers;
        list.is_empty()
            || self.associations.get(&association).is_some_and(|a| {
                allowlist::admits(list, sender, &a.info.peer_addresses, a.identity.as_ref())
            })
    }

    /// Refuses a PR not on the allowlist (RFC 5355 §2.5): an ENRP_ERROR with cause 0xa
    /// ("rejected due to security considerations"), then the association is aborted. Counted
    /// every time, logged once a minute per PR.
    fn refuse_peer(
        &mut self,
        association: AssociationId,
        generation: Generation,
        sender: PrId,
        now: Millis,
        out: &mut Output,
    ) {
        self.metrics.limit_refused(Limit::EnrpPeer);
        self.log_refusal(sender, now, "over an ENRP association");
        let causes = [ErrorCause {
            code: rserpool_protocol::cause::REJECTED_SECURITY,
            info: &[],
        }];
        self.send_enrp_error(association, generation, &causes, out);
        out.aborts.push(association);
        self.close_association(association, now, out);
    }

    /// Logs a refused PR at most once a minute.
    pub(super) fn log_refusal(&mut self, sender: PrId, now: Millis, how: &str) {
        // Keyed apart from the ASAP peers' keys (addresses and certificate names).
        if self
            .refusals
            .should_log(super::refusals::peer_key(("enrp", sender.0)), now)
        {
            tracing::warn!(
                peer = %sender,
                "ENRP peer refused {how}: not on enrp.allowed_peers (or not from its subnet)"
            );
        }
    }

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
        tls: None,
    })
}
