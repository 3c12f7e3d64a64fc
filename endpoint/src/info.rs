//! What a pool user learns about a pool element from a handle resolution (RFC 5352 §2.2.6), as
//! an owned value that outlives the received message, and the names of the member-selection
//! policies (RFC 5356, RSPLIB's private ones).

use std::net::IpAddr;

use rserpool_protocol::{PeId, Policy, PoolElementParam, PrId, TransportKind, UserTransport};

/// A pool element as a handle resolution returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeInfo {
    /// Its identifier.
    pub id: PeId,
    /// Its home registrar's identifier (0 = unknown).
    pub home_pr: PrId,
    /// Its registration life in milliseconds (-1 = infinite).
    pub registration_life: i32,
    /// How users reach it.
    pub transport: PeTransport,
    /// Its own policy parameters. A pool user selects by the response's overall policy and
    /// ignores these (RFC 5352 §2.2.6); they are shown for information.
    pub policy: Policy,
}

/// A pool element's user transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeTransport {
    /// An SCTP, TCP, UDP, UDP-Lite or DCCP transport.
    Transport {
        /// The protocol.
        kind: TransportKind,
        /// The port.
        port: u16,
        /// The addresses (one, except for SCTP).
        addresses: Vec<IpAddr>,
        /// Data only (0) or data plus control channel (1), RFC 5354 §3.4.
        transport_use: u16,
    },
    /// An Opaque Transport (RFC 5354 §3.16).
    Opaque(Vec<u8>),
}

impl PeInfo {
    /// The owned copy of a decoded Pool Element parameter.
    pub fn from_view(pe: &PoolElementParam<'_>) -> Self {
        let transport = match &pe.user_transport {
            UserTransport::Transport(t) => PeTransport::Transport {
                kind: t.kind,
                port: t.port,
                addresses: t.addresses.iter().collect(),
                transport_use: t.transport_use,
            },
            UserTransport::Opaque(bytes) => PeTransport::Opaque(bytes.to_vec()),
        };
        Self {
            id: pe.id,
            home_pr: pe.home_pr,
            registration_life: pe.registration_life,
            transport,
            policy: pe.policy,
        }
    }

    /// The transport's addresses (none for an opaque transport).
    pub fn addresses(&self) -> &[IpAddr] {
        match &self.transport {
            PeTransport::Transport { addresses, .. } => addresses,
            PeTransport::Opaque(_) => &[],
        }
    }

    /// The transport's port (0 for an opaque transport).
    pub fn port(&self) -> u16 {
        match &self.transport {
            PeTransport::Transport { port, .. } => *port,
            PeTransport::Opaque(_) => 0,
        }
    }

    /// The transport protocol's name: "sctp", "tcp", "udp", "udp-lite", "dccp" or "opaque".
    pub fn transport_name(&self) -> &'static str {
        match &self.transport {
            PeTransport::Transport { kind, .. } => match kind {
                TransportKind::Sctp => "sctp",
                TransportKind::Tcp => "tcp",
                TransportKind::Udp => "udp",
                TransportKind::UdpLite => "udp-lite",
                TransportKind::Dccp => "dccp",
            },
            PeTransport::Opaque(_) => "opaque",
        }
    }
}

/// The short name of a policy, as the `rserpool` command line reads and prints it.
pub fn policy_name(policy: &Policy) -> &'static str {
    match policy {
        Policy::RoundRobin => "rr",
        Policy::WeightedRoundRobin { .. } => "wrr",
        Policy::Random => "rand",
        Policy::WeightedRandom { .. } => "wrand",
        Policy::Priority { .. } => "prio",
        Policy::LeastUsed { .. } => "lu",
        Policy::LeastUsedDegradation { .. } => "lud",
        Policy::PriorityLeastUsed { .. } => "plu",
        Policy::RandomizedLeastUsed { .. } => "rlu",
        Policy::RandomizedPriorityLeastUsed { .. } => "rplu",
        Policy::RandomizedLeastUsedDegradation { .. } => "rlud",
        Policy::PriorityLeastUsedDegradation { .. } => "plud",
        Policy::RandomizedPriorityLeastUsedDegradation { .. } => "rplud",
        Policy::WeightedRandomDpf { .. } => "wrand-dpf",
        Policy::LeastUsedDpf { .. } => "lu-dpf",
        Policy::LeastUsedDegradationDpf { .. } => "lud-dpf",
        Policy::PriorityLeastUsedDpf { .. } => "plu-dpf",
        Policy::PriorityLeastUsedDegradationDpf { .. } => "plud-dpf",
    }
}

#[cfg(test)]
mod tests {
    use rserpool_protocol::{Seq, TransportParam};

    use super::*;

    #[test]
    fn copies_a_decoded_pool_element() {
        let ips = [IpAddr::from([127, 0, 0, 1])];
        let view = PoolElementParam {
            id: PeId(5),
            home_pr: PrId(9),
            registration_life: 30_000,
            user_transport: UserTransport::Transport(TransportParam {
                kind: TransportKind::Tcp,
                port: 7,
                transport_use: 0,
                service_code: 0,
                addresses: Seq::from_items(&ips),
            }),
            policy: Policy::LeastUsed { load: 3 },
            asap_transport: None,
        };
        let info = PeInfo::from_view(&view);
        assert_eq!(info.id, PeId(5));
        assert_eq!(info.home_pr, PrId(9));
        assert_eq!(info.addresses(), &ips);
        assert_eq!(info.port(), 7);
        assert_eq!(info.transport_name(), "tcp");
        assert_eq!(policy_name(&info.policy), "lu");
        let opaque = PeInfo::from_view(&PoolElementParam {
            user_transport: UserTransport::Opaque(b"x"),
            ..view
        });
        assert_eq!(opaque.transport, PeTransport::Opaque(b"x".to_vec()));
        assert!(opaque.addresses().is_empty());
        assert_eq!(opaque.port(), 0);
    }
}
