//! Handle table transfer (RFC 5353 §3.2.3 for the start-up download from a mentor, §3.6.3 for an
//! audit repair): ENRP_HANDLE_TABLE_REQUEST answered page by page, each page built by one shard's
//! owner; ENRP_HANDLE_TABLE_RESPONSE applied to the shards, more asked for while M=1; transfers
//! whose next page does not come are given up.

use std::sync::Arc;

use rserpool_handlespace::{
    AssociationId, Millis, PeRegistration, PoolElementEntry, PrId, TableCursor,
};
use rserpool_protocol::enrp::message_type;
use rserpool_protocol::{EnrpBody, EnrpMessage, Generation, PoolEntry, PoolHandle, Seq};

use super::update::PeerAdd;
use super::{Outbound, Phase};
use crate::core::Protocol;
use crate::core::{Output, Replication, Target, Worker, encode_into, handle_hash};

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

impl Worker {
    /// Gives up handle table transfers from peers whose next page did not come in time (a lost
    /// request or response): an audit repair waits for none, and a start-up download lets the
    /// next peer heard be the mentor (RFC 5353 §3.2.2).
    pub(super) fn abandon_transfers(&mut self, now: Millis) {
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

    /// ENRP_HANDLE_TABLE_REQUEST (RFC 5353 §3.2.3, §3.6.3): the next page of the handlespace (or
    /// of the PEs we own, W=1), built by the shard the transfer is at. Rejected while starting
    /// (PE-05) and for peers unknown before this message (PE-17).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_handle_table_request(
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
    pub(in crate::core) fn answer_table_page(
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
    pub(in crate::core) fn table_page_done(
        &mut self,
        done: TablePageDone,
        now: Millis,
        out: &mut Output,
    ) {
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
    pub(super) fn on_handle_table_response(
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
        if p.inbound
            .as_ref()
            .is_some_and(|i| i.association != association)
        {
            // A page of another exchange with the peer, over its other association: asking
            // for more there would restart the peer's transfer of this one (it keeps one per
            // peer), and the two would restart each other for ever.
            tracing::debug!(peer = %sender, "ENRP handle table page on another association than the request's; ignored");
            return;
        }
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
