//! The counters, gauges and latency histograms of one worker: what its state machine counts as it
//! handles messages (messages by protocol and type, registrations and their outcomes, PE
//! removals, ENRP events) and what its driver adds (connections, loop load, request latency).
//! The `metrics` module renders them for Prometheus.
//!
//! Each worker owns one [`WorkerMetrics`], shared as `Arc` with the exporter thread. An update is
//! a few relaxed loads and stores into the worker's own block (its one writer: no read-modify-write
//! instruction, no bus lock), which is aligned to and
//! padded up to 128 bytes so that no two workers share a cache line: no locks, no allocation. A
//! scrape loads every worker's atomics and sums them; one scrape is not a consistent snapshot
//! across counters, which Prometheus tolerates.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::Protocol;
use rserpool_handlespace::Millis;

/// Adds `n` to a counter that only its worker's thread writes: a relaxed load and store instead of
/// a locked read-modify-write (the exporter only reads; every counter has exactly one writer).
#[inline]
fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

use rserpool_protocol::asap::message_type as asap;
use rserpool_protocol::cause;
use rserpool_protocol::enrp::message_type as enrp;

impl Protocol {
    /// The known message type codes of this protocol and their label values.
    pub(crate) const fn types(self) -> &'static [(u8, &'static str)] {
        match self {
            Self::Asap => &ASAP_TYPES,
            Self::Enrp => &ENRP_TYPES,
        }
    }

    /// The message types of this protocol a PR receives from PEs, PUs or peers: their
    /// `rserpool_messages_received_total` series are exposed from the start, those of other
    /// known types only once one arrived.
    pub(crate) const fn received(self) -> &'static [u8] {
        match self {
            Self::Asap => &ASAP_RECEIVED,
            Self::Enrp => &ENRP_EXCHANGED,
        }
    }

    /// The message types of this protocol a PR sends: their `rserpool_messages_sent_total`
    /// series are exposed from the start, those of other types only once one was counted.
    pub(crate) const fn sent(self) -> &'static [u8] {
        match self {
            Self::Asap => &ASAP_SENT,
            Self::Enrp => &ENRP_EXCHANGED,
        }
    }

    /// The counter slot of a message type code: 0 for unknown codes, else 1 + its index in
    /// [`Self::types`].
    const fn slot(self, message_type: u8) -> usize {
        let slots = match self {
            Self::Asap => &ASAP_SLOTS,
            Self::Enrp => &ENRP_SLOTS,
        };
        slots[message_type as usize] as usize
    }
}

/// Why a pool element left the handlespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemovalReason {
    /// Its registration lifetime ran out.
    Expired,
    /// It did not answer an ASAP_ENDPOINT_KEEP_ALIVE in time.
    KeepAliveTimeout,
    /// Users reported it unreachable (ASAP_ENDPOINT_UNREACHABLE) often enough.
    Unreachable,
    /// The association or connection it registered over closed.
    AssociationClosed,
    /// It deregistered.
    Deregistered,
    /// Its home PR deleted it (ENRP DEL_PE), or an audit repair found it gone there.
    Peer,
}

impl RemovalReason {
    /// Every reason, in exposition order.
    pub const ALL: [Self; 6] = [
        Self::Expired,
        Self::KeepAliveTimeout,
        Self::Unreachable,
        Self::AssociationClosed,
        Self::Deregistered,
        Self::Peer,
    ];

    /// The Prometheus label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::KeepAliveTimeout => "keep_alive_timeout",
            Self::Unreachable => "unreachable",
            Self::AssociationClosed => "association_closed",
            Self::Deregistered => "deregistered",
            Self::Peer => "peer",
        }
    }
}

/// A configured limit that refused a request or a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Number of pools (`limits.max_pools`): a registration that would create one more,
    /// refused (cause 0x6).
    Pools,
    /// Pool elements in one pool (`limits.max_pes_per_pool`): a registration into a full pool,
    /// refused (cause 0x6).
    PesPerPool,
    /// Pool elements registered over one association.
    PesPerAssociation,
    /// Open connections.
    Connections,
    /// Size of one message.
    MessageSize,
    /// The send buffer an SCTP socket's associations share: associations whose peers stopped
    /// reading while it was full, aborted.
    SendBuffer,
    /// Associations from one source address over all workers
    /// (`limits.max_connections_per_source`).
    ConnectionsPerSource,
    /// A request no rule of `access.rules` allows (answered with cause 0xa).
    Access,
    /// A PR not on `enrp.allowed_peers` (or not from its subnet): its association aborted, its
    /// presence datagram or list entry ignored.
    EnrpPeer,
    /// The idle time of an association that neither registered nor resolved
    /// (`limits.idle_timeout_ms`): aborted.
    IdleTimeout,
    /// A TLS handshake that failed: no client certificate where one is required, one the CA
    /// bundle does not vouch for, a broken record. The connection is closed.
    TlsHandshake,
    /// A TLS peer whose certificate names none of `tls.allowed_identities`: aborted.
    Identity,
    /// A PE ID registered over TLS, re-registered or deregistered by another identity (cause
    /// 0xa).
    PeBinding,
    /// Registrations of one identity beyond
    /// `limits.max_registrations_per_second_per_identity` (cause 0x6).
    RegistrationsPerIdentity,
}

impl Limit {
    /// Every limit, in exposition order.
    pub const ALL: [Self; 14] = [
        Self::Pools,
        Self::PesPerPool,
        Self::PesPerAssociation,
        Self::Connections,
        Self::MessageSize,
        Self::SendBuffer,
        Self::ConnectionsPerSource,
        Self::Access,
        Self::EnrpPeer,
        Self::IdleTimeout,
        Self::TlsHandshake,
        Self::Identity,
        Self::PeBinding,
        Self::RegistrationsPerIdentity,
    ];

    /// The Prometheus label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Pools => "pools",
            Self::PesPerPool => "pes_per_pool",
            Self::PesPerAssociation => "pes_per_association",
            Self::Connections => "connections",
            Self::MessageSize => "message_size",
            Self::SendBuffer => "send_buffer",
            Self::ConnectionsPerSource => "connections_per_source",
            Self::Access => "access",
            Self::EnrpPeer => "enrp_peer",
            Self::IdleTimeout => "idle_timeout",
            Self::TlsHandshake => "tls_handshake",
            Self::Identity => "tls_identity",
            Self::PeBinding => "pe_binding",
            Self::RegistrationsPerIdentity => "registrations_per_identity",
        }
    }
}

/// Why a subscription (an ASAP_HANDLE_RESOLUTION with the S bit, RFC 5352 §2.2.5) was
/// refused: answered as a plain resolution, A bit clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscriptionRefusal {
    /// The association holds `subscriptions.max_per_association` subscriptions already.
    PerAssociation,
    /// The registrar holds `subscriptions.max_total` subscriptions already.
    Total,
}

impl SubscriptionRefusal {
    /// Every reason, in exposition order.
    pub const ALL: [Self; 2] = [Self::PerAssociation, Self::Total];

    /// The Prometheus label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::PerAssociation => "per_association",
            Self::Total => "total",
        }
    }
}

/// What an SCTP-in-UDP endpoint did with a packet that no association took, or with its
/// answer (`rserpool_net::sctp_udp::EndpointStats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SctpUdpOutcome {
    /// Handshake answers sent: INIT ACK, Stale Cookie errors, ABORTs to bad INITs.
    HandshakeReply,
    /// Out-of-the-blue packets answered with an ABORT or SHUTDOWN COMPLETE (RFC 4960 §8.4):
    /// peers of associations this registrar does not have (it restarted, or they are stale).
    OutOfTheBlue,
    /// Dropped: malformed, bad checksum, another port, invalid handshakes, forged cookies.
    Dropped,
    /// Answers dropped because too many waited (an INIT flood).
    ReplyDropped,
    /// COOKIE ECHOs refused because the endpoint held `limits.max_connections` associations.
    RefusedFull,
    /// Peers that restarted (a new handshake replaced their association, §5.2.4).
    PeerRestart,
}

impl SctpUdpOutcome {
    /// Every outcome, in exposition order.
    pub const ALL: [Self; 6] = [
        Self::HandshakeReply,
        Self::OutOfTheBlue,
        Self::Dropped,
        Self::ReplyDropped,
        Self::RefusedFull,
        Self::PeerRestart,
    ];

    /// The Prometheus label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::HandshakeReply => "handshake_reply",
            Self::OutOfTheBlue => "out_of_the_blue",
            Self::Dropped => "dropped",
            Self::ReplyDropped => "reply_dropped",
            Self::RefusedFull => "refused_full",
            Self::PeerRestart => "peer_restart",
        }
    }
}

/// The transport of a connection, as a metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportLabel {
    /// SCTP.
    Sctp,
    /// TCP.
    Tcp,
    /// Multipath TCP.
    Mptcp,
    /// UDP.
    Udp,
    /// SCTP in UDP, run in user space (RFC 6951).
    SctpUdp,
}

impl TransportLabel {
    /// Every transport, in exposition order.
    pub const ALL: [Self; 5] = [Self::Sctp, Self::Tcp, Self::Mptcp, Self::Udp, Self::SctpUdp];

    /// Whether this transport has connections or associations: UDP has none, so its
    /// connection series are exposed only should one ever be counted.
    pub const fn has_connections(self) -> bool {
        !matches!(self, Self::Udp)
    }

    /// The Prometheus label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Sctp => "sctp",
            Self::Tcp => "tcp",
            Self::Mptcp => "mptcp",
            Self::Udp => "udp",
            Self::SctpUdp => "sctp_udp",
        }
    }
}

impl From<rserpool_protocol::url::Transport> for TransportLabel {
    fn from(transport: rserpool_protocol::url::Transport) -> Self {
        use rserpool_protocol::url::Transport as T;
        match transport {
            T::Sctp => Self::Sctp,
            T::Tcp => Self::Tcp,
            T::Mptcp => Self::Mptcp,
            T::Udp => Self::Udp,
            T::SctpUdp => Self::SctpUdp,
        }
    }
}

/// The kind of request a latency is recorded for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// ASAP_REGISTRATION.
    Registration,
    /// ASAP_DEREGISTRATION.
    Deregistration,
    /// ASAP_HANDLE_RESOLUTION.
    Resolution,
    /// Any other request.
    Other,
}

impl RequestKind {
    /// Every kind, in exposition order.
    pub const ALL: [Self; 4] = [
        Self::Registration,
        Self::Deregistration,
        Self::Resolution,
        Self::Other,
    ];

    /// The Prometheus label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Registration => "registration",
            Self::Deregistration => "deregistration",
            Self::Resolution => "resolution",
            Self::Other => "other",
        }
    }
}

/// ASAP message type codes and their label values.
const ASAP_TYPES: [(u8, &str); 14] = [
    (asap::REGISTRATION, "registration"),
    (asap::DEREGISTRATION, "deregistration"),
    (asap::REGISTRATION_RESPONSE, "registration_response"),
    (asap::DEREGISTRATION_RESPONSE, "deregistration_response"),
    (asap::HANDLE_RESOLUTION, "handle_resolution"),
    (
        asap::HANDLE_RESOLUTION_RESPONSE,
        "handle_resolution_response",
    ),
    (asap::ENDPOINT_KEEP_ALIVE, "endpoint_keep_alive"),
    (asap::ENDPOINT_KEEP_ALIVE_ACK, "endpoint_keep_alive_ack"),
    (asap::ENDPOINT_UNREACHABLE, "endpoint_unreachable"),
    (asap::SERVER_ANNOUNCE, "server_announce"),
    (asap::COOKIE, "cookie"),
    (asap::COOKIE_ECHO, "cookie_echo"),
    (asap::BUSINESS_CARD, "business_card"),
    (asap::ERROR, "error"),
];

/// ENRP message type codes and their label values.
const ENRP_TYPES: [(u8, &str); 10] = [
    (enrp::PRESENCE, "presence"),
    (enrp::HANDLE_TABLE_REQUEST, "handle_table_request"),
    (enrp::HANDLE_TABLE_RESPONSE, "handle_table_response"),
    (enrp::HANDLE_UPDATE, "handle_update"),
    (enrp::LIST_REQUEST, "list_request"),
    (enrp::LIST_RESPONSE, "list_response"),
    (enrp::INIT_TAKEOVER, "init_takeover"),
    (enrp::INIT_TAKEOVER_ACK, "init_takeover_ack"),
    (enrp::TAKEOVER_SERVER, "takeover_server"),
    (enrp::ERROR, "error"),
];

/// ASAP message types a PR receives (RFC 5352 §3): requests and reports of PEs and PUs, and
/// their errors.
const ASAP_RECEIVED: [u8; 6] = [
    asap::REGISTRATION,
    asap::DEREGISTRATION,
    asap::HANDLE_RESOLUTION,
    asap::ENDPOINT_KEEP_ALIVE_ACK,
    asap::ENDPOINT_UNREACHABLE,
    asap::ERROR,
];

/// ASAP message types a PR sends (RFC 5352 §3): responses, keep-alives, announces, errors.
const ASAP_SENT: [u8; 6] = [
    asap::REGISTRATION_RESPONSE,
    asap::DEREGISTRATION_RESPONSE,
    asap::HANDLE_RESOLUTION_RESPONSE,
    asap::ENDPOINT_KEEP_ALIVE,
    asap::SERVER_ANNOUNCE,
    asap::ERROR,
];

/// ENRP message types: a PR both sends and receives every one (RFC 5353 §3).
const ENRP_EXCHANGED: [u8; 10] = [
    enrp::PRESENCE,
    enrp::HANDLE_TABLE_REQUEST,
    enrp::HANDLE_TABLE_RESPONSE,
    enrp::HANDLE_UPDATE,
    enrp::LIST_REQUEST,
    enrp::LIST_RESPONSE,
    enrp::INIT_TAKEOVER,
    enrp::INIT_TAKEOVER_ACK,
    enrp::TAKEOVER_SERVER,
    enrp::ERROR,
];

/// Label value of message type codes that are not in the tables.
pub(crate) const UNKNOWN_TYPE: &str = "unknown";

/// Counter slots per protocol and direction: one for unknown codes, one per known code.
pub(crate) const MESSAGE_SLOTS: usize = 1 + ASAP_TYPES.len();

/// Slot of every possible ASAP message type code.
const ASAP_SLOTS: [u8; 256] = slot_table(&ASAP_TYPES);
/// Slot of every possible ENRP message type code.
const ENRP_SLOTS: [u8; 256] = slot_table(&ENRP_TYPES);

/// Maps every `u8` to 0, or to 1 + its index in `types`, so the hot path indexes instead of
/// searching.
const fn slot_table(types: &[(u8, &str)]) -> [u8; 256] {
    let mut slots = [0u8; 256];
    let mut i = 0;
    while i < types.len() {
        slots[types[i].0 as usize] = (i + 1) as u8;
        i += 1;
    }
    slots
}

/// RFC 5354 error causes and their label values: the `cause` of
/// `rserpool_decode_errors_total` and the `result` of `rserpool_registrations_total` and
/// `rserpool_deregistrations_total`.
pub(crate) const CAUSES: [(u16, &str); 11] = [
    (cause::UNSPECIFIED, "unspecified"),
    (cause::UNRECOGNIZED_PARAMETER, "unrecognized_parameter"),
    (cause::UNRECOGNIZED_MESSAGE, "unrecognized_message"),
    (cause::INVALID_VALUES, "invalid_values"),
    (cause::NON_UNIQUE_PE_ID, "non_unique_pe_id"),
    (cause::INCONSISTENT_POLICY, "inconsistent_policy"),
    (cause::LACK_OF_RESOURCES, "lack_of_resources"),
    (cause::INCONSISTENT_TRANSPORT, "inconsistent_transport"),
    (
        cause::INCONSISTENT_DATA_CONTROL,
        "inconsistent_data_control",
    ),
    (cause::UNKNOWN_POOL_HANDLE, "unknown_pool_handle"),
    (cause::REJECTED_SECURITY, "rejected_security"),
];

/// Label value of cause codes that are not in [`CAUSES`].
pub(crate) const OTHER_CAUSE: &str = "other";

/// The causes a registration is refused with (RFC 5352 §3.1: the handlespace's checks, the
/// configured limits, rate limits and access rules): the `result` series of
/// `rserpool_registrations_total` exposed from the start; any other only once counted.
pub(crate) const REGISTRATION_CAUSES: [u16; 6] = [
    cause::INVALID_VALUES,
    cause::INCONSISTENT_POLICY,
    cause::LACK_OF_RESOURCES,
    cause::INCONSISTENT_TRANSPORT,
    cause::INCONSISTENT_DATA_CONTROL,
    cause::REJECTED_SECURITY,
];

/// The cause a deregistration is refused with: another association's PE, or an access rule
/// (an unknown PE is a success, RFC 5352 §3.2).
pub(crate) const DEREGISTRATION_CAUSES: [u16; 1] = [cause::REJECTED_SECURITY];

/// The causes an undecodable message is answered with (RFC 5354 §3-4); the others are dropped.
pub(crate) const DECODE_ERROR_CAUSES: [u16; 3] = [
    cause::UNRECOGNIZED_PARAMETER,
    cause::UNRECOGNIZED_MESSAGE,
    cause::INVALID_VALUES,
];

/// Counter slots of an outcome with a cause: slot 0 (accepted, or dropped), one per known cause,
/// one for other causes.
pub(crate) const OUTCOME_SLOTS: usize = 2 + CAUSES.len();

/// The counter slot of an outcome: 0 for `None`, 1 + the cause's index in [`CAUSES`], or the last
/// slot for other causes.
fn outcome_slot(cause: Option<u16>) -> usize {
    match cause {
        None => 0,
        Some(code) => {
            1 + CAUSES
                .iter()
                .position(|&(c, _)| c == code)
                .unwrap_or(CAUSES.len())
        }
    }
}

/// Upper bounds of the latency histogram buckets in nanoseconds (5 µs to 10 s: a request that
/// waits behind a full mailbox or a stalled peer shows where it landed); one more bucket takes
/// everything above.
pub(crate) const LATENCY_BOUNDS_NANOS: [u64; 17] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A latency histogram: per-bucket (not cumulative) counts and the sum of all observations.
#[derive(Default)]
pub(crate) struct Histogram {
    /// Observations per bucket of [`LATENCY_BOUNDS_NANOS`]; the last one counts those above all.
    pub(crate) buckets: [AtomicU64; LATENCY_BOUNDS_NANOS.len() + 1],
    /// Sum of all observations in nanoseconds.
    pub(crate) sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records `count` observations of `nanos` each.
    fn observe(&self, nanos: u64, count: u64) {
        let bucket = LATENCY_BOUNDS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(LATENCY_BOUNDS_NANOS.len());
        add(&self.buckets[bucket], count);
        add(&self.sum_nanos, nanos.saturating_mul(count));
    }
}

/// The atomics of one worker, indexed by the label enums' discriminants and the slot functions.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) messages_in: [[AtomicU64; MESSAGE_SLOTS]; Protocol::ALL.len()],
    pub(crate) messages_out: [[AtomicU64; MESSAGE_SLOTS]; Protocol::ALL.len()],
    /// Slot 0 = dropped silently.
    pub(crate) decode_errors: [AtomicU64; OUTCOME_SLOTS],
    /// Slot 0 = accepted.
    pub(crate) registrations: [AtomicU64; OUTCOME_SLOTS],
    /// Slot 0 = accepted.
    pub(crate) deregistrations: [AtomicU64; OUTCOME_SLOTS],
    /// Found, unknown pool.
    pub(crate) resolutions: [AtomicU64; 2],
    pub(crate) resolution_items: AtomicU64,
    pub(crate) pe_removals: [AtomicU64; RemovalReason::ALL.len()],
    pub(crate) keep_alives_sent: AtomicU64,
    pub(crate) keep_alive_acks: AtomicU64,
    pub(crate) unreachable_reports: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) limit_refusals: [AtomicU64; Limit::ALL.len()],
    pub(crate) connections_opened: [AtomicU64; TransportLabel::ALL.len()],
    pub(crate) connections_closed: [AtomicU64; TransportLabel::ALL.len()],
    pub(crate) mailbox_forwards: AtomicU64,
    /// Totals of the worker's SCTP-in-UDP endpoints (stored, not added: they count already).
    pub(crate) sctp_udp: [AtomicU64; SctpUdpOutcome::ALL.len()],
    /// Subscriptions held by the worker's associations (a gauge).
    pub(crate) subscriptions: AtomicU64,
    pub(crate) subscriptions_accepted: AtomicU64,
    pub(crate) subscription_refusals: [AtomicU64; SubscriptionRefusal::ALL.len()],
    pub(crate) subscription_pushes: AtomicU64,
    pub(crate) enrp_resyncs: AtomicU64,
    pub(crate) enrp_peers_dead: AtomicU64,
    pub(crate) enrp_takeovers: AtomicU64,
    pub(crate) enrp_withheld: AtomicU64,
    pub(crate) enrp_peers: AtomicU64,
    pub(crate) enrp_starting: AtomicU64,
    pub(crate) workers_running: AtomicU64,
    /// Loop turns, for the service manager's watchdog (not exposed).
    pub(crate) turns: AtomicU64,
    pub(crate) config_reloads: AtomicU64,
    pub(crate) config_reload_failures: AtomicU64,
    /// 1 while the last reload was refused.
    pub(crate) config_last_reload_failed: AtomicU64,
    pub(crate) pools: AtomicU64,
    pub(crate) pool_elements: AtomicU64,
    pub(crate) latency: [Histogram; RequestKind::ALL.len()],
    pub(crate) busy_nanos: AtomicU64,
    pub(crate) idle_nanos: AtomicU64,
    pub(crate) events: AtomicU64,
}

/// The metrics of one worker thread. Only the worker's thread updates them (each counter has one
/// writer, which is what lets an update be a plain load and store); the exporter reads them.
#[repr(align(128))]
pub struct WorkerMetrics {
    pub(crate) worker: usize,
    pub(crate) counters: Counters,
    /// The ENRP peers as worker 0 last saw them (its ENRP timer); empty elsewhere.
    pub(crate) peers: std::sync::Mutex<Vec<PeerGauge>>,
}

/// One ENRP peer's state for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerGauge {
    /// The peer's PR ID.
    pub id: u64,
    /// Whether an association to it is up.
    pub connected: bool,
    /// Milliseconds since a message of it last arrived.
    pub heard_ago: Millis,
}

impl fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerMetrics")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl WorkerMetrics {
    /// Zeroed metrics of worker number `worker`.
    pub fn new(worker: usize) -> Self {
        Self {
            worker,
            counters: Counters::default(),
            peers: std::sync::Mutex::default(),
        }
    }

    /// Replaces the ENRP peers' states (worker 0, at its ENRP timer).
    pub fn set_peers(&self, peers: impl Iterator<Item = PeerGauge>) {
        let mut held = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.clear();
        held.extend(peers);
    }

    /// The ENRP peers' states as last set.
    pub fn peers(&self) -> Vec<PeerGauge> {
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The worker number, the `worker` label of the per-worker series.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// A message received: `protocol` is [`Protocol::Asap`] or [`Protocol::Enrp`],
    /// `message_type` its type code (any `u8`; unknown codes are counted as "unknown").
    pub fn message_in(&self, protocol: Protocol, message_type: u8) {
        add(
            &self.counters.messages_in[protocol as usize][protocol.slot(message_type)],
            1,
        );
    }

    /// A message sent, counted like [`Self::message_in`].
    pub fn message_out(&self, protocol: Protocol, message_type: u8) {
        add(
            &self.counters.messages_out[protocol as usize][protocol.slot(message_type)],
            1,
        );
    }

    /// A message that could not be decoded; `cause` = the RFC 5354 cause replied with, `None` =
    /// dropped silently.
    pub fn decode_error(&self, cause: Option<u16>) {
        add(&self.counters.decode_errors[outcome_slot(cause)], 1);
    }

    /// A registration answered: accepted (`None`) or rejected with a cause code (0x0..0xa, others
    /// counted as "other").
    pub fn registration(&self, rejected_cause: Option<u16>) {
        add(
            &self.counters.registrations[outcome_slot(rejected_cause)],
            1,
        );
    }

    /// A deregistration answered, counted like [`Self::registration`].
    pub fn deregistration(&self, rejected_cause: Option<u16>) {
        add(
            &self.counters.deregistrations[outcome_slot(rejected_cause)],
            1,
        );
    }

    /// A handle resolution answered; `found` false = unknown pool handle; `items` PEs returned.
    pub fn resolution(&self, found: bool, items: usize) {
        add(&self.counters.resolutions[usize::from(!found)], 1);
        let items = u64::try_from(items).unwrap_or(u64::MAX);
        add(&self.counters.resolution_items, items);
    }

    /// A pool element removed from the handlespace.
    pub fn pe_removed(&self, reason: RemovalReason) {
        add(&self.counters.pe_removals[reason as usize], 1);
    }

    /// An ASAP_ENDPOINT_KEEP_ALIVE sent to a pool element.
    pub fn keep_alive_sent(&self) {
        add(&self.counters.keep_alives_sent, 1);
    }

    /// An ASAP_ENDPOINT_KEEP_ALIVE_ACK received.
    pub fn keep_alive_ack(&self) {
        add(&self.counters.keep_alive_acks, 1);
    }

    /// An ASAP_ENDPOINT_UNREACHABLE report received.
    pub fn unreachable_report(&self) {
        add(&self.counters.unreachable_reports, 1);
    }

    /// A request refused by rate limiting.
    pub fn rate_limited(&self) {
        add(&self.counters.rate_limited, 1);
    }

    /// A request or connection refused by a configured limit.
    pub fn limit_refused(&self, limit: Limit) {
        add(&self.counters.limit_refusals[limit as usize], 1);
    }

    /// The totals of the worker's SCTP-in-UDP endpoints, by outcome.
    pub fn sctp_udp_totals(&self, totals: [u64; SctpUdpOutcome::ALL.len()]) {
        for (counter, total) in self.counters.sctp_udp.iter().zip(totals) {
            counter.store(total, Relaxed);
        }
    }

    /// A connection or association accepted.
    pub fn connection_opened(&self, transport: TransportLabel) {
        add(&self.counters.connections_opened[transport as usize], 1);
    }

    /// A connection or association closed.
    pub fn connection_closed(&self, transport: TransportLabel) {
        add(&self.counters.connections_closed[transport as usize], 1);
    }

    /// A write passed to another worker's shard.
    pub fn mailbox_forwarded(&self) {
        add(&self.counters.mailbox_forwards, 1);
    }

    /// A new subscription accepted (RFC 5352 §2.2.5, A bit set in the answer).
    pub fn subscription_accepted(&self) {
        add(&self.counters.subscriptions_accepted, 1);
    }

    /// A subscription refused by a limit (answered with the A bit clear).
    pub fn subscription_refused(&self, reason: SubscriptionRefusal) {
        add(&self.counters.subscription_refusals[reason as usize], 1);
    }

    /// An unsolicited ASAP_HANDLE_RESOLUTION_RESPONSE pushed to a subscriber.
    pub fn subscription_pushed(&self) {
        add(&self.counters.subscription_pushes, 1);
    }

    /// The subscriptions the worker's associations hold now.
    pub fn set_subscriptions(&self, subscriptions: u64) {
        self.counters.subscriptions.store(subscriptions, Relaxed);
    }

    /// An ENRP audit found a peer's checksum different and started a repair.
    pub fn enrp_resync(&self) {
        add(&self.counters.enrp_resyncs, 1);
    }

    /// An ENRP peer did not answer its probe and was declared dead.
    pub fn enrp_peer_dead(&self) {
        add(&self.counters.enrp_peers_dead, 1);
    }

    /// This PR won a takeover of a dead peer's PEs.
    pub fn enrp_takeover(&self) {
        add(&self.counters.enrp_takeovers, 1);
    }

    /// `n` PEs were left out of what an RFC-generation peer was sent: their IDs need 64 bits.
    pub fn enrp_withheld(&self, n: u64) {
        add(&self.counters.enrp_withheld, n);
    }

    /// Notes that the worker runs and whether the ENRP start-up (loading the handlespace from a
    /// mentor, RFC 5353 §3.2) is over (`/readyz`, `rserpool_enrp_starting`); set after each
    /// loop turn.
    pub fn set_phase(&self, enrp_live: bool) {
        self.counters.workers_running.store(1, Relaxed);
        self.counters.turns.fetch_add(1, Relaxed);
        self.counters
            .enrp_starting
            .store(u64::from(!enrp_live), Relaxed);
    }

    /// Counts a SIGHUP reload of the configuration, `applied` or refused (worker 0's metrics).
    pub fn config_reloaded(&self, applied: bool) {
        let counter = if applied {
            &self.counters.config_reloads
        } else {
            &self.counters.config_reload_failures
        };
        counter.fetch_add(1, Relaxed);
        self.counters
            .config_last_reload_failed
            .store(u64::from(!applied), Relaxed);
    }

    /// Loop turns so far: a worker whose count stops moving is stuck (the watchdog).
    pub fn turns(&self) -> u64 {
        self.counters.turns.load(Relaxed)
    }

    /// Whether this worker runs and is past the ENRP start-up (see [`Self::set_phase`]).
    pub fn ready(&self) -> bool {
        self.counters.workers_running.load(Relaxed) == 1
            && self.counters.enrp_starting.load(Relaxed) == 0
    }

    /// The number of ENRP peers the operating scope knows (worker 0), set after each loop turn.
    pub fn set_enrp_peers(&self, peers: u64) {
        self.counters.enrp_peers.store(peers, Relaxed);
    }

    /// Gauges of this worker's handlespace shard, set after each loop turn.
    pub fn set_shard(&self, pools: u64, pes: u64) {
        self.counters.pools.store(pools, Relaxed);
        self.counters.pool_elements.store(pes, Relaxed);
    }

    /// `count` requests of one kind, each taking `nanos` from receive to reply queued (the
    /// requests of one loop turn).
    pub fn latencies(&self, kind: RequestKind, nanos: u64, count: u64) {
        self.counters.latency[kind as usize].observe(nanos, count);
    }

    /// Per-worker load: time spent handling events vs waiting, in nanoseconds, per loop turn.
    pub fn loop_turn(&self, busy_nanos: u64, idle_nanos: u64, events: u64) {
        add(&self.counters.busy_nanos, busy_nanos);
        add(&self.counters.idle_nanos, idle_nanos);
        add(&self.counters.events, events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_blocks_do_not_share_cache_lines() {
        assert_eq!(align_of::<WorkerMetrics>(), 128);
        assert_eq!(size_of::<WorkerMetrics>() % 128, 0);
    }

    #[test]
    fn message_type_slots_match_the_tables() {
        for protocol in Protocol::ALL {
            for (i, &(code, _)) in protocol.types().iter().enumerate() {
                assert_eq!(protocol.slot(code), i + 1);
            }
            assert_eq!(protocol.slot(0), 0);
            assert_eq!(protocol.slot(0xff), 0);
        }
        assert_eq!(Protocol::Asap.slot(0x0e), 14);
        assert_eq!(Protocol::Enrp.slot(0x0e), 0);
    }

    #[test]
    fn the_exchanged_message_types_have_slots() {
        for protocol in Protocol::ALL {
            for &code in protocol.received().iter().chain(protocol.sent()) {
                assert_ne!(protocol.slot(code), 0, "{protocol:?} type {code:#04x}");
            }
        }
        assert!(!Protocol::Asap.received().contains(&asap::COOKIE));
        assert!(!Protocol::Asap.sent().contains(&asap::REGISTRATION));
    }

    #[test]
    fn every_decode_error_reply_is_an_exposed_cause() {
        use rserpool_protocol::{DecodeError, ParameterAction};
        let mut errors = vec![
            DecodeError::Truncated {
                what: "x",
                offset: 0,
            },
            DecodeError::BadLength {
                what: "x",
                length: 1,
                offset: 0,
            },
            DecodeError::MissingParameter {
                within: "x",
                expected: "y",
            },
            DecodeError::UnexpectedParameter {
                within: "x",
                parameter_type: 1,
                tlv: 0..4,
            },
            DecodeError::InvalidValue {
                what: "x",
                reason: "y",
                tlv: 0..4,
            },
            DecodeError::UnsupportedPolicy {
                policy_type: 0xff,
                tlv: 0..4,
            },
        ];
        for report in [false, true] {
            errors.push(DecodeError::UnknownMessageType {
                message_type: 0x7f,
                report,
            });
        }
        for action in [
            ParameterAction::Stop,
            ParameterAction::StopAndReport,
            ParameterAction::Skip,
            ParameterAction::SkipAndReport,
        ] {
            errors.push(DecodeError::UnrecognizedParameter {
                parameter_type: 0x7fff,
                tlv: 0..4,
                action,
            });
        }
        let causes: Vec<u16> = errors.iter().filter_map(DecodeError::reply_cause).collect();
        assert!(
            causes.iter().all(|c| DECODE_ERROR_CAUSES.contains(c)),
            "{causes:?}"
        );
        for exposed in DECODE_ERROR_CAUSES {
            assert!(causes.contains(&exposed), "{exposed:#06x} is never replied");
        }
    }

    #[test]
    fn every_registration_refusal_is_an_exposed_cause() {
        use rserpool_handlespace::{OwnedUserTransport, RegistrationError};
        use rserpool_protocol::Policy;
        let errors = [
            RegistrationError::InvalidValue { reason: "x" },
            RegistrationError::InconsistentPolicy {
                pool_policy: Policy::RoundRobin,
            },
            RegistrationError::InconsistentTransport {
                pool_transport: OwnedUserTransport::Opaque(Box::new([])),
            },
            RegistrationError::InconsistentDataControl,
            RegistrationError::LackOfResources { limit: "x" },
            RegistrationError::NotOwner,
            RegistrationError::BoundToAnotherIdentity,
        ];
        let causes: Vec<u16> = errors.iter().map(RegistrationError::cause).collect();
        for code in &causes {
            assert!(REGISTRATION_CAUSES.contains(code), "{code:#06x}");
        }
        for exposed in REGISTRATION_CAUSES {
            assert!(
                causes.contains(&exposed),
                "{exposed:#06x} is never answered"
            );
        }
        assert_eq!(
            RegistrationError::NotOwner.cause(),
            DEREGISTRATION_CAUSES[0],
            "the one refusal of a deregistration by the handlespace"
        );
    }

    #[test]
    fn outcome_slots_cover_every_cause_and_other() {
        assert_eq!(outcome_slot(None), 0);
        assert_eq!(outcome_slot(Some(cause::UNSPECIFIED)), 1);
        assert_eq!(outcome_slot(Some(cause::REJECTED_SECURITY)), 11);
        assert_eq!(outcome_slot(Some(0x000b)), OUTCOME_SLOTS - 1);
        assert_eq!(outcome_slot(Some(u16::MAX)), OUTCOME_SLOTS - 1);
    }

    #[test]
    fn histogram_bounds_are_inclusive() {
        let h = Histogram::default();
        for nanos in [
            0,
            5_000,
            5_001,
            10_000_000,
            3_000_000_000,
            10_000_000_000,
            10_000_000_001,
            u64::MAX / 2,
        ] {
            h.observe(nanos, 1);
        }
        let counts: Vec<u64> = h.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let at = |bound: u64| {
            LATENCY_BOUNDS_NANOS
                .iter()
                .position(|&b| b == bound)
                .unwrap()
        };
        assert_eq!(counts[0], 2);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[at(10_000_000)], 1);
        assert_eq!(counts[at(5_000_000_000)], 1, "3 s");
        assert_eq!(counts[LATENCY_BOUNDS_NANOS.len() - 1], 1, "10 s");
        assert_eq!(counts[LATENCY_BOUNDS_NANOS.len()], 2);
        assert_eq!(counts.iter().sum::<u64>(), 8);
    }

    #[test]
    fn transport_label_follows_the_url_transport() {
        use rserpool_protocol::url::Transport;
        assert_eq!(TransportLabel::from(Transport::Sctp), TransportLabel::Sctp);
        assert_eq!(TransportLabel::from(Transport::Tcp), TransportLabel::Tcp);
        assert_eq!(
            TransportLabel::from(Transport::Mptcp),
            TransportLabel::Mptcp
        );
        assert_eq!(TransportLabel::from(Transport::Udp), TransportLabel::Udp);
    }
}
