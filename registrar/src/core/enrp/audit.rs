//! The handlespace audit (RFC 5353 §3.6): checksum rounds that sum every shard's per-owner PE
//! checksums (§3.6.2), the comparison of a peer's checksum with ours for it (§3.6.1), and the
//! repair of a mismatch by a W=1 handle table transfer that ends by purging what the peer did not
//! send (§3.6.3). Work that needs the checksums (presences, audits, dead peers) waits for a round
//! ([`AuditWork`]).

use std::net::SocketAddr;
use std::sync::Arc;

use rserpool_handlespace::{AssociationId, Millis, OwnerChecksums, PeId, PrId};
use rserpool_protocol::{EnrpBody, Generation};

use super::{FastSet, Inbound};
use crate::core::counters::RemovalReason;
use crate::core::{FastMap, Output, Replication, Target, Worker, handle_hash};
use rserpool_protocol::url::Transport;

/// Work that waits for the scope's checksums.
#[derive(Clone, Copy, Debug)]
pub(super) enum AuditWork {
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
pub(super) struct Round {
    id: u64,
    replies: usize,
    sums: FastMap<PrId, OwnerChecksums>,
    work: Vec<AuditWork>,
}

impl Worker {
    /// Queues work that needs the checksums and starts a round if none runs.
    pub(super) fn audit_work(&mut self, work: AuditWork, now: Millis, out: &mut Output) {
        self.scope().queued.push(work);
        self.start_round(now, out);
    }

    pub(super) fn start_round(&mut self, now: Millis, out: &mut Output) {
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
    pub(in crate::core) fn answer_checksum_query(
        &mut self,
        round: u64,
        now: Millis,
        out: &mut Output,
    ) {
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
    pub(in crate::core) fn checksum_reply(
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
    pub(super) fn repair(&mut self, peer: PrId, now: Millis, out: &mut Output) -> bool {
        let Some(p) = self.scope().peer_mut(peer) else {
            return false;
        };
        let Some(association) = p.reachable().filter(|_| p.inbound.is_none()) else {
            return false;
        };
        p.inbound = Some(Inbound {
            association,
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

    /// At the shard owner: end of an audit repair (RFC 5353 §3.6.3 step 5): the peer's PEs it
    /// did not send are deleted.
    /// The PEs this PR took over from `owner` and still holds without an association (none
    /// re-registered here), if `owner` did not send them either, are deleted too, and as their
    /// home this PR tells its peers ([`TakenOver`](super::TakenOver)).
    pub(in crate::core) fn apply_purge(
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
}

/// A checksum as the generation's PE Checksum parameter carries it.
fn checksum_value(c: &OwnerChecksums, generation: Generation) -> u64 {
    match generation {
        Generation::Rfc => u64::from(c.internet16.value()),
        Generation::Ng => c.ng.value(),
    }
}
