//! Handle updates (RFC 5353 §3.3): each shard hands the changes of the PEs this PR owns to worker
//! 0, which sends ENRP_HANDLE_UPDATE (ADD_PE, DEL_PE) to every peer that can carry them (with
//! RSPLIB's takeover suggestion); peers' updates are applied at the pools' shard owners.

use std::sync::Arc;

use rserpool_handlespace::{
    AssociationId, Millis, OwnerChecksums, PeId, PeRegistration, PoolElementEntry, PrId,
};
use rserpool_protocol::{EnrpBody, Generation, PoolHandle, UpdateAction};

use crate::core::counters::RemovalReason;
use crate::core::{Output, Replication, Worker};

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

impl Worker {
    /// ENRP_HANDLE_UPDATE (RFC 5353 §3.3): only the PE's home PR may add or delete it
    /// (procedures §17, check 3); a PE we own is never changed by a peer's stale copy
    /// (RSPLIB).
    pub(super) fn on_handle_update(
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
    pub(in crate::core) fn apply_peer_adds(&mut self, adds: Vec<PeerAdd>, now: Millis) {
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
    pub(in crate::core) fn apply_peer_delete(
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

    /// At the shard owner: a PE this PR owns changed; tell the peers (RFC 5353 §3.3).
    pub(in crate::core) fn replicate(
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
    pub(in crate::core) fn send_update(&mut self, update: &Replicate, out: &mut Output) {
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
}
