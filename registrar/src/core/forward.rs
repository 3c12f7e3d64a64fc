//! What workers send each other through their mailboxes (design §3): writes to a pool's shard
//! owner ([`ShardWrite`]), completions back to the worker holding an association
//! ([`Completion`]), ENRP work between worker 0 and the shards ([`Replication`]), and ASAP
//! subscription bookkeeping ([`SubscriptionNote`]).

use std::sync::Arc;

use rserpool_handlespace::{AssociationId, FastSet, PeId, PeRegistration, PrId};
use rserpool_protocol::Generation;

use super::counters::RemovalReason;
use super::enrp::{PeerAdd, Replicate, TablePageDone, TablePageRequest};
use super::subscriptions::SubscriptionNote;

/// A message one worker passes to another through its mailbox (design §3 mailboxes): writes to a
/// pool's shard owner, completions back to the worker holding the association, and ENRP work
/// between the scope's worker and the shards.
#[derive(Debug)]
pub enum Forward {
    /// To a pool's shard owner.
    ShardWrite(ShardWrite),
    /// To the worker holding an association.
    Completion(Completion),
    /// Between worker 0 (the scope) and the shards.
    Replication(Replication),
    /// ASAP subscriptions: between a pool's shard owner and the workers of its subscribers.
    Subscription(SubscriptionNote),
}

impl From<SubscriptionNote> for Forward {
    fn from(note: SubscriptionNote) -> Self {
        Self::Subscription(note)
    }
}

/// A write to the worker owning a pool's shard (design §3): ASAP registrations and
/// deregistrations received by another worker, and the removals and reports of PEs monitored on
/// another worker's associations.
#[derive(Debug)]
pub enum ShardWrite {
    /// Apply a registration (to the shard owner).
    Register(Box<RegisterRequest>),
    /// Apply a deregistration (to the shard owner).
    Deregister {
        /// The PE's association.
        association: AssociationId,
        /// Its generation, for the response.
        generation: Generation,
        /// The pool.
        pool_handle: Box<[u8]>,
        /// The PE.
        pe_id: PeId,
    },
    /// Remove a PE because its association closed or it missed a keep-alive (to the shard
    /// owner; only if it is still bound to `association`).
    Remove {
        /// The association the PE registered over.
        association: AssociationId,
        /// The pool.
        pool_handle: Box<[u8]>,
        /// The PE.
        pe_id: PeId,
        /// Why.
        reason: RemovalReason,
    },
    /// A PE with unreachable reports answered a keep-alive (to the shard owner, which clears
    /// the reports).
    Refresh {
        /// The pool.
        pool_handle: Box<[u8]>,
        /// The PE.
        pe_id: PeId,
    },
    /// A PU reported a PE unreachable (to the shard owner).
    Unreachable {
        /// The pool.
        pool_handle: Box<[u8]>,
        /// The PE.
        pe_id: PeId,
    },
}

impl From<ShardWrite> for Forward {
    fn from(forward: ShardWrite) -> Self {
        Self::ShardWrite(forward)
    }
}

/// News for the worker holding a PE's association, from the pool's shard owner: the outcome of a
/// registration or deregistration (with the encoded response to send), or a PE the shard
/// removed or counted a report against.
#[derive(Debug)]
pub enum Completion {
    /// The shard owner counted an unreachable report of a PE registered over `association`
    /// (to the association's worker, whose next keep-alive ack of the PE then clears it).
    Reported {
        /// The PE's association.
        association: AssociationId,
        /// The pool.
        pool_handle: Box<[u8]>,
        /// The PE.
        pe_id: PeId,
    },
    /// The outcome of a registration (to the association's worker).
    Registered {
        /// The PE's association.
        association: AssociationId,
        /// The pool.
        pool_handle: Box<[u8]>,
        /// The PE.
        pe_id: PeId,
        /// Whether the handlespace took it.
        accepted: bool,
        /// The encoded ASAP_REGISTRATION_RESPONSE.
        response: Box<[u8]>,
    },
    /// The outcome of a deregistration (to the association's worker).
    Deregistered {
        /// The PE's association.
        association: AssociationId,
        /// The pool.
        pool_handle: Box<[u8]>,
        /// The PE.
        pe_id: PeId,
        /// The encoded ASAP_DEREGISTRATION_RESPONSE.
        response: Box<[u8]>,
    },
    /// The shard removed a PE bound to `association` (expiry, unreachable reports): stop
    /// monitoring it (to the association's worker).
    Forget {
        /// The PE's association.
        association: AssociationId,
        /// The pool.
        pool_handle: Box<[u8]>,
        /// The PE.
        pe_id: PeId,
        /// Why it was removed.
        reason: RemovalReason,
    },
}

impl From<Completion> for Forward {
    fn from(forward: Completion) -> Self {
        Self::Completion(forward)
    }
}

/// ENRP work between worker 0, which holds the operating scope, and the shards (RFC 5353): PEs
/// learnt from or to be sent to peer PRs, handle table pages, audit checksums, takeovers.
#[derive(Debug)]
pub enum Replication {
    /// Store PEs learnt from a peer PR (to the shard owner; ENRP ADD_PE, or a handle table
    /// page's entries of that shard, applied as one batch).
    PeerAdds(Vec<PeerAdd>),
    /// Delete a PE on behalf of its home PR (to the shard owner; ENRP DEL_PE).
    PeerDelete {
        /// The PR that sent the DEL_PE.
        sender: PrId,
        /// The pool.
        pool_handle: Box<[u8]>,
        /// The PE.
        pe_id: PeId,
    },
    /// Delete the PEs `owner` owns except those in `keep` (to every shard; end of an audit
    /// repair): (hash of the pool handle, PE ID).
    Purge {
        /// The peer whose PEs were resynchronised.
        owner: PrId,
        /// The PEs it sent.
        keep: Arc<FastSet<(u64, PeId)>>,
    },
    /// Make `new_home` the home PR of every PE `dead` owned (to every shard; takeover).
    TakeOver {
        /// The dead PR.
        dead: PrId,
        /// Its successor.
        new_home: PrId,
    },
    /// Build the next page of a handle table transfer (to the shard the transfer is at).
    TablePage(Box<TablePageRequest>),
    /// A page built (to worker 0, which sends it).
    TablePageDone(Box<TablePageDone>),
    /// A PE this PR owns changed (to worker 0, for ENRP_HANDLE_UPDATE).
    Replicate(Box<Replicate>),
    /// Report the per-owner audit checksums (to every shard).
    ChecksumQuery {
        /// The round this answers.
        round: u64,
    },
    /// A shard's per-owner audit checksums (to worker 0).
    ChecksumReply {
        /// The round.
        round: u64,
        /// The shard that answers.
        shard: usize,
        /// Checksums by home PR.
        owners: Vec<(PrId, rserpool_handlespace::OwnerChecksums)>,
    },
}

impl From<Replication> for Forward {
    fn from(forward: Replication) -> Self {
        Self::Replication(forward)
    }
}

impl Completion {
    /// The association whose worker it goes to.
    pub(super) fn association(&self) -> AssociationId {
        match self {
            Self::Registered { association, .. }
            | Self::Deregistered { association, .. }
            | Self::Forget { association, .. }
            | Self::Reported { association, .. } => *association,
        }
    }
}

/// A registration on its way to the pool's shard owner.
#[derive(Debug)]
pub struct RegisterRequest {
    /// The association it came over.
    pub association: AssociationId,
    /// Its generation, for the response.
    pub generation: Generation,
    /// The pool.
    pub pool_handle: Box<[u8]>,
    /// What to store (ASAP transport filled in).
    pub registration: PeRegistration,
    /// The digest of the association's TLS identity (0: none), which the PE ID is bound to.
    pub identity: u64,
}
