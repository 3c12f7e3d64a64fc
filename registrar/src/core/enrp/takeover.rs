//! Takeover of a dead PR (RFC 5353 §3.5): a dead peer that owns PEs here is taken over,
//! ENRP_INIT_TAKEOVER, ENRP_INIT_TAKEOVER_ACK and ENRP_TAKEOVER_SERVER as the initiator (§3.5.1)
//! and as a peer (§3.5.2), the dead PR's PEs moved to their new home at each shard and claimed with
//! an ENDPOINT_KEEP_ALIVE with the H bit, and the PEs taken over remembered for a PR that comes
//! back ([`TakenOver`]).

use std::net::SocketAddr;
use std::sync::Arc;

use rserpool_handlespace::{AssociationId, Millis, PeId, PrId};
use rserpool_protocol::{EnrpBody, Generation, PoolHandle, TransportKind};

use super::audit::AuditWork;
use super::{Peer, Takeover};
use crate::core::Protocol;
use crate::core::{Output, Replication, Target, Worker};

/// The PEs a shard moved to this PR when it took over another PR (RFC 5353 §3.5), kept for
/// [`TAKEN_OVER_MEMORY`]: a PR taken over while hung (SIGSTOP, a stalled host) comes back still
/// holding the PEs whose associations survived, and forgets those that deregistered meanwhile;
/// its DEL_PE reached no one (its associations were gone). The audit repair of that PR ends by
/// deleting those it did not send ([`Worker::apply_purge`]).
#[derive(Debug)]
pub(in crate::core) struct TakenOver {
    at: Millis,
    pub(super) pes: Vec<(Arc<[u8]>, PeId)>,
}

/// How long a PR remembers which PEs it took over from whom (longer than any registration life
/// a PE that cannot be reached keeps them for).
const TAKEN_OVER_MEMORY: Millis = 10 * 60 * 1_000;

impl Worker {
    /// A dead peer that owns PEs here is taken over (RSPLIB), one that owns none forgotten.
    pub(super) fn dead_peer_counted(&mut self, id: PrId, now: Millis, out: &mut Output) {
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
    pub(super) fn on_init_takeover(
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
    pub(super) fn on_init_takeover_ack(
        &mut self,
        sender: PrId,
        target: PrId,
        now: Millis,
        out: &mut Output,
    ) {
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
    pub(super) fn on_takeover_server(
        &mut self,
        sender: PrId,
        target: PrId,
        now: Millis,
        out: &mut Output,
    ) {
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
    pub(in crate::core) fn apply_take_over(
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
    pub(super) fn claim_pe(
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
}
