//! The owned form of what the handlespace stores per pool element (PE): identity, transports,
//! policy parameters, registration life, home PR, timestamps and counters; converted from and to
//! the codec's borrowed views.

use std::net::IpAddr;
use std::num::NonZeroU64;

use rserpool_protocol::{
    Generation, PeId, Policy, PoolElementParam, PrId, Seq, TransportKind, TransportParam,
    UserTransport,
};

/// Milliseconds since an epoch the caller chooses; the handlespace never reads a clock.
pub type Millis = u64;

/// Identifies the transport association (SCTP association, TCP connection) a local PE registered
/// over. Only that association may change or deregister the PE (RFC 5352 §2.2.2, RFC 5355 §2.3.3).
/// Never 0, so that `Option<AssociationId>` takes no more room than the ID. IDs grow in the
/// order associations open (the registrar numbers them so): of two, the greater is the newer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssociationId(NonZeroU64);

impl AssociationId {
    /// The association with this raw ID; `None` for 0.
    pub const fn new(raw: u64) -> Option<Self> {
        match NonZeroU64::new(raw) {
            Some(id) => Some(Self(id)),
            None => None,
        }
    }

    /// The raw ID.
    pub const fn get(self) -> u64 {
        self.0.get()
    }
}

/// The addresses of a transport: one address (the common case) is stored inline, so copying a
/// PE into a new pool snapshot allocates nothing; more (SCTP multi-homing) are boxed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addresses {
    /// Exactly one address, inline.
    One(IpAddr),
    /// Zero or several addresses.
    Many(Box<[IpAddr]>),
}

impl std::ops::Deref for Addresses {
    type Target = [IpAddr];

    fn deref(&self) -> &[IpAddr] {
        match self {
            Self::One(a) => std::slice::from_ref(a),
            Self::Many(b) => b,
        }
    }
}

impl FromIterator<IpAddr> for Addresses {
    fn from_iter<I: IntoIterator<Item = IpAddr>>(iter: I) -> Self {
        let mut iter = iter.into_iter();
        match (iter.next(), iter.next()) {
            (Some(a), None) => Self::One(a),
            (None, _) => Self::Many(Box::new([])),
            (Some(a), Some(b)) => Self::Many([a, b].into_iter().chain(iter).collect()),
        }
    }
}

impl From<Vec<IpAddr>> for Addresses {
    fn from(v: Vec<IpAddr>) -> Self {
        v.into_iter().collect()
    }
}

impl From<Box<[IpAddr]>> for Addresses {
    fn from(b: Box<[IpAddr]>) -> Self {
        match *b {
            [a] => Self::One(a),
            _ => Self::Many(b),
        }
    }
}

/// An owned transport parameter (RFC 5354 §3.3-§3.7).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnedTransport {
    /// The transport protocol.
    pub kind: TransportKind,
    /// The port.
    pub port: u16,
    /// Transport use (SCTP, TCP as RSPLIB reads it) or the reserved word.
    pub transport_use: u16,
    /// DCCP service code (0 otherwise).
    pub service_code: u32,
    /// The addresses.
    pub addresses: Addresses,
}

impl OwnedTransport {
    /// Copies a decoded transport.
    pub fn from_view(t: &TransportParam<'_>) -> Self {
        Self {
            kind: t.kind,
            port: t.port,
            transport_use: t.transport_use,
            service_code: t.service_code,
            addresses: t.addresses.iter().collect(),
        }
    }

    /// A view to encode.
    #[inline]
    pub fn view(&self) -> TransportParam<'_> {
        TransportParam {
            kind: self.kind,
            port: self.port,
            transport_use: self.transport_use,
            service_code: self.service_code,
            addresses: Seq::from_items(&self.addresses),
        }
    }
}

/// An owned user transport: a transport parameter or opaque bytes (RFC 5354 §3.16).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OwnedUserTransport {
    /// SCTP, TCP, UDP, UDP-Lite or DCCP.
    Transport(OwnedTransport),
    /// Opaque Transport.
    Opaque(Box<[u8]>),
}

impl OwnedUserTransport {
    /// Copies a decoded user transport.
    pub fn from_view(t: &UserTransport<'_>) -> Self {
        match t {
            UserTransport::Transport(t) => Self::Transport(OwnedTransport::from_view(t)),
            UserTransport::Opaque(b) => Self::Opaque((*b).into()),
        }
    }

    /// A view to encode.
    #[inline]
    pub fn view(&self) -> UserTransport<'_> {
        match self {
            Self::Transport(t) => UserTransport::Transport(t.view()),
            Self::Opaque(b) => UserTransport::Opaque(b),
        }
    }

    /// What must agree among the PEs of a pool (RFC 5352 §3.1 rules 1-2): the transport type and
    /// whether it carries data only or data plus control.
    pub fn shape(&self) -> TransportShape {
        match self {
            Self::Transport(t) => TransportShape {
                parameter_type: t.kind.parameter_type(),
                transport_use: if t.kind == TransportKind::Sctp || t.kind == TransportKind::Tcp {
                    t.transport_use
                } else {
                    0
                },
            },
            Self::Opaque(_) => TransportShape {
                parameter_type: rserpool_protocol::param_type::OPAQUE_TRANSPORT,
                transport_use: 0,
            },
        }
    }
}

/// The transport type and data/control use a pool's first PE fixes (RFC 5352 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransportShape {
    /// The user transport's parameter type.
    pub parameter_type: u16,
    /// Data only (0) or data plus control (1).
    pub transport_use: u16,
}

/// What a PE (over ASAP) or a peer PR (over ENRP) asks the handlespace to store.
///
/// Laid out in declaration order (no padding): what a handle resolution response carries
/// first, the ASAP transport (ENRP only) last, so that a pool's tree, which compares
/// identifiers while it searches, and a resolution read as few cache lines as possible.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct PeRegistration {
    /// The PE identifier (never 0).
    pub id: PeId,
    /// Where PUs reach the PE.
    pub user_transport: OwnedUserTransport,
    /// Its policy and policy parameters.
    pub policy: Policy,
    /// Registration life in milliseconds; -1 = infinite.
    pub registration_life: i32,
    /// Its ASAP transport: the association's addresses as the home PR saw them.
    pub asap_transport: Option<OwnedTransport>,
}

impl PeRegistration {
    /// Copies a decoded Pool Element parameter.
    pub fn from_view(pe: &PoolElementParam<'_>) -> Self {
        Self {
            id: pe.id,
            registration_life: pe.registration_life,
            user_transport: OwnedUserTransport::from_view(&pe.user_transport),
            policy: pe.policy,
            asap_transport: pe.asap_transport.as_ref().map(OwnedTransport::from_view),
        }
    }
}

/// A PE as the handlespace publishes it to readers: immutable once published (the writer replaces
/// it on re-registration), shared between the writer and the pool snapshots.
///
/// Laid out in declaration order, the fields a handle resolution reads first.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct PoolElementEntry {
    /// The home PR, which owns the PE (RFC 5353 §1.1).
    pub home_pr: PrId,
    /// What was registered.
    pub registration: PeRegistration,
    /// The local association the PE registered over; `None` for PEs learnt via ENRP.
    pub association: Option<AssociationId>,
}

impl PoolElementEntry {
    /// The PE identifier.
    pub fn id(&self) -> PeId {
        self.registration.id
    }

    /// A Pool Element view for encoding; `with_asap_transport` as ENRP needs it (RSPLIB's
    /// `includeRegistratorTransport`: yes in ENRP updates and table responses, no in ASAP).
    #[inline]
    pub fn view(&self, with_asap_transport: bool) -> PoolElementParam<'_> {
        let r = &self.registration;
        PoolElementParam {
            id: r.id,
            home_pr: self.home_pr,
            registration_life: r.registration_life,
            user_transport: r.user_transport.view(),
            policy: r.policy,
            asap_transport: if with_asap_transport {
                r.asap_transport.as_ref().map(OwnedTransport::view)
            } else {
                None
            },
        }
    }

    /// Whether the entry can be told to a peer of `generation` (identifiers fit its width).
    pub fn fits(&self, generation: Generation) -> bool {
        generation == Generation::Ng
            || (self.registration.id.0 <= u64::from(u32::MAX)
                && self.home_pr.0 <= u64::from(u32::MAX))
    }
}
