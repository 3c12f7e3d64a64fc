//! One established SCTP association (RFC 4960 §6 to §9), sans-I/O in the quinn-proto and smoltcp
//! manner: packets (already demultiplexed to this association by the caller) and the time in
//! milliseconds go in; packets to send, delivered messages, the next timer and the association's
//! end come out. Nothing here reads a clock, opens a socket or spawns a thread.
//!
//! What it does: ordered user messages on each outbound stream (an SSN per stream), fragmented
//! to the configured packet size and reassembled up to the configured message size (§6.9);
//! TSNs, duplicate detection, cumulative and gap-block SACKs, delayed SACKs (§6.2); RTO (§6.3),
//! T3-rtx with back-off, fast retransmit (§7.2.4), congestion control (§7.2: cwnd, ssthresh,
//! slow start, congestion avoidance) and the peer's window (§6.1 A/B, with one chunk in flight
//! as a zero-window probe); HEARTBEAT on the idle path (§8.3); Association.Max.Retrans (§8.1);
//! SHUTDOWN (§9.2) and ABORT (§9.1); the action bits of unknown chunk types (§3.2).
//!
//! Memory: every buffer is bounded by [`AssociationConfig`]. Outgoing messages are copied once
//! into one byte buffer (a `Vec` reused for the association's life) and sent from there; received
//! DATA that arrives in order is copied straight into the delivery buffer (also reused), where
//! messages are reassembled and from which [`Association::poll_event`] lends them as slices. So
//! the steady state allocates nothing per packet or message; a chunk that arrives out of order is
//! kept in its own allocation until the gap before it fills (at most
//! `max_out_of_order_chunks` of them, and within `receive_buffer` bytes).
//!
//! Delivery is in TSN order: a message waits for every TSN before it, on all streams (order per
//! stream is what §6.6 requires; delivering complete messages of other streams past a gap is an
//! optimisation not made here). Unordered DATA (U bit) is accepted and delivered the same way.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;

use super::handshake::Established;
use super::packet::{
    DataChunk, GapAckBlock, GapAckBlocks, SctpBuildError, SctpChunkBody, SctpErrorCause,
    SctpPacket, SctpPacketBuilder, SctpPacketError,
};

/// The common header (§3.1).
const COMMON_HEADER_LEN: usize = 12;
/// A chunk's type, flags and length (§3.2).
const CHUNK_HEADER_LEN: usize = 4;
/// A DATA chunk's header and fixed fields (§3.3.1).
const DATA_HEADER_LEN: usize = 16;
/// A SACK chunk without gap blocks or duplicate TSNs (§3.3.4).
const SACK_HEADER_LEN: usize = 16;
/// The ERROR chunk type (§3.3.10).
const ERROR_CHUNK: u8 = 9;
/// The most duplicate TSNs one SACK reports.
const MAX_REPORTED_DUPLICATES: usize = 16;
/// This end's Heartbeat Info: a nonce and the sending time, 8 bytes each.
const HEARTBEAT_INFO_LEN: usize = 16;
/// The smallest packet size accepted in the configuration: room for a SACK and some data.
const MIN_MTU: usize = 128;
/// The largest SCTP packet a UDP datagram over IPv4 carries (65 535 - 20 - 8).
const MAX_MTU: usize = 65_507;

// Error cause codes (§3.3.10).
const CAUSE_INVALID_STREAM: u16 = 1;
const CAUSE_UNRECOGNIZED_CHUNK: u16 = 6;
const CAUSE_NO_USER_DATA: u16 = 9;
const CAUSE_USER_INITIATED_ABORT: u16 = 12;
const CAUSE_PROTOCOL_VIOLATION: u16 = 13;

/// Whether TSN `a` comes after TSN `b` in serial number arithmetic (§1.6, RFC 1982).
fn tsn_after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

/// `len` rounded up to a multiple of 4 (§3.2).
const fn padded(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// The limits and protocol parameters of an association (§15 of RFC 4960, §16 of RFC 9260).
/// Out-of-range values are brought into range when the association is made: see each field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssociationConfig {
    /// The largest SCTP packet sent, in bytes (it rides in UDP, so the path MTU less the IP and
    /// UDP headers); messages are fragmented to it. 128 to 65 507; default 1 200.
    pub mtu: usize,
    /// The largest user message sent or accepted, in bytes; a peer whose fragments exceed it is
    /// aborted. Default 65 536 (ENRP's largest message).
    pub max_message_size: usize,
    /// The bytes of outgoing messages (with 16 bytes of DATA header per fragment) held until
    /// acknowledged; [`Association::send`] refuses what does not fit. At least what one message
    /// of `max_message_size` needs; default 262 144.
    pub send_buffer: usize,
    /// The received bytes held (out of order, being reassembled, or delivered but not yet taken
    /// by [`Association::poll_event`]); the window advertised to the peer is what is left. At
    /// least `max_message_size`; default 262 144.
    pub receive_buffer: usize,
    /// The most DATA chunks held beyond a gap (the TSN distance from the cumulative ack point);
    /// later ones are dropped. 1 to 65 535; default 4 096.
    pub max_out_of_order_chunks: usize,
    /// RTO.Initial in milliseconds (§6.3.1); default 1 000.
    pub rto_initial_ms: u64,
    /// RTO.Min in milliseconds; at least 1; default 200 (RFC 4960 says 1 000: a registrar on a
    /// LAN wants less).
    pub rto_min_ms: u64,
    /// RTO.Max in milliseconds; at least `rto_min_ms`; default 60 000.
    pub rto_max_ms: u64,
    /// Association.Max.Retrans (§8.1): consecutive T3-rtx, T2-shutdown or unanswered HEARTBEAT
    /// timeouts beyond this lose the association. Default 10.
    pub max_retransmissions: u32,
    /// HB.interval in milliseconds (§8.3): an idle path gets a HEARTBEAT after this plus the
    /// RTO; `None` sends none. Default 30 000.
    pub heartbeat_interval_ms: Option<u64>,
    /// The longest a SACK waits (§6.2: at most 500 ms); default 200.
    pub sack_delay_ms: u64,
    /// A SACK goes out at the latest for this many packets with DATA (§6.2: at least every
    /// second); at least 1; default 2.
    pub sack_every_packets: u32,
}

impl Default for AssociationConfig {
    fn default() -> Self {
        Self {
            mtu: 1_200,
            max_message_size: 65_536,
            send_buffer: 262_144,
            receive_buffer: 262_144,
            max_out_of_order_chunks: 4_096,
            rto_initial_ms: 1_000,
            rto_min_ms: 200,
            rto_max_ms: 60_000,
            max_retransmissions: 10,
            heartbeat_interval_ms: Some(30_000),
            sack_delay_ms: 200,
            sack_every_packets: 2,
        }
    }
}

impl AssociationConfig {
    /// The configuration with every field brought into its documented range.
    fn normalized(mut self) -> Self {
        self.mtu = self.mtu.clamp(MIN_MTU, MAX_MTU);
        self.max_message_size = self.max_message_size.max(1);
        self.receive_buffer = self.receive_buffer.max(self.max_message_size);
        self.send_buffer = self
            .send_buffer
            .max(send_cost(self.max_message_size, max_fragment(self.mtu)));
        self.max_out_of_order_chunks = self.max_out_of_order_chunks.clamp(1, 65_535);
        self.rto_min_ms = self.rto_min_ms.max(1);
        self.rto_max_ms = self.rto_max_ms.max(self.rto_min_ms);
        self.rto_initial_ms = self.rto_initial_ms.clamp(self.rto_min_ms, self.rto_max_ms);
        self.sack_every_packets = self.sack_every_packets.max(1);
        self
    }
}

/// The most user data in one DATA chunk of a packet of `mtu` bytes (§6.9), a multiple of 4.
fn max_fragment(mtu: usize) -> usize {
    (mtu - COMMON_HEADER_LEN - DATA_HEADER_LEN) & !3
}

/// What a message of `len` bytes costs in the send buffer: its bytes and a DATA header for each
/// fragment.
fn send_cost(len: usize, fragment: usize) -> usize {
    len + len.div_ceil(fragment) * DATA_HEADER_LEN
}

/// Why [`Association::send`] refused a message; nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// An empty message: DATA chunks carry at least one byte (§3.3.1, §6.2).
    Empty,
    /// Longer than the configured `max_message_size`.
    TooLarge {
        /// The message's length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// No such outbound stream (§6.5): the handshake agreed on `streams`.
    StreamOutOfRange {
        /// The stream asked for.
        stream: u16,
        /// The number of outbound streams.
        streams: u16,
    },
    /// The association is shutting down or gone.
    Closed,
    /// The send buffer has no room for it until the peer acknowledges more.
    BufferFull {
        /// The bytes the message needs (with its DATA headers).
        needed: usize,
        /// The bytes free.
        free: usize,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Empty => write!(f, "an SCTP message needs at least one byte"),
            Self::TooLarge { len, max } => {
                write!(
                    f,
                    "an SCTP message of {len} bytes is over the {max}-byte limit"
                )
            }
            Self::StreamOutOfRange { stream, streams } => write!(
                f,
                "SCTP stream {stream} does not exist: the association has {streams} outbound"
            ),
            Self::Closed => write!(f, "the SCTP association is closing or closed"),
            Self::BufferFull { needed, free } => write!(
                f,
                "the SCTP send buffer has {free} bytes free, the message needs {needed}"
            ),
        }
    }
}

impl std::error::Error for SendError {}

/// What happened on the association, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A user message arrived complete. `bytes` is lent from the association's delivery buffer
    /// until the next call that takes it mutably.
    Message {
        /// The stream it came on.
        stream: u16,
        /// Its payload protocol identifier (ASAP 11, ENRP 12).
        ppid: u32,
        /// The message.
        bytes: &'a [u8],
    },
    /// The association is gone; nothing more is sent or delivered.
    Lost(LossReason),
    /// The SHUTDOWN sequence completed (§9.2): everything sent was acknowledged.
    ShutDown,
}

/// Why an association was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// The peer sent an ABORT (§9.1).
    PeerAborted,
    /// [`Association::abort`] was called (an ABORT went to the peer).
    Aborted,
    /// More than Association.Max.Retrans consecutive timeouts (§8.1, §8.3, §9.2).
    Unreachable,
    /// The peer broke the protocol; this end sent an ABORT (§9.1).
    ProtocolViolation(Violation),
}

/// How the peer broke the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A DATA chunk without user data (§6.2).
    NoUserData,
    /// A fragmented message longer than the configured `max_message_size`.
    MessageTooLarge,
    /// Fragments out of sequence: a middle or end fragment without a beginning, a beginning
    /// inside another message, or a fragment of another stream or SSN (§6.9).
    BrokenFragments,
}

/// What [`Association::handle_packet`] made of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Taken (some chunks may have been dropped on their own terms).
    Processed,
    /// An INIT, or a COOKIE ECHO with another verification tag (the peer restarted, §5.2.2,
    /// §5.2.4): for `handshake::respond`. An `Established` from it for this peer means the
    /// peer restarted: replace this association with a new one.
    ForHandshake,
    /// Dropped whole.
    Dropped(DropReason),
}

/// Why a whole packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Bad checksum or framing, or a chunk whose fields do not fit its length (§6.8, §3.2).
    Malformed(SctpPacketError),
    /// Other SCTP ports than the association's.
    OtherPorts,
    /// The verification tag is not the association's (§8.5, §8.5.1).
    WrongTag,
    /// The association is closed.
    Closed,
}

/// Counters of an association's traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AssociationStats {
    /// Packets written by [`Association::poll_transmit`].
    pub packets_sent: u64,
    /// Packets taken by [`Association::handle_packet`].
    pub packets_received: u64,
    /// Packets dropped whole.
    pub packets_dropped: u64,
    /// DATA chunks sent for the first time.
    pub data_chunks_sent: u64,
    /// DATA chunks sent again (T3-rtx, fast retransmit, reneging).
    pub retransmitted_chunks: u64,
    /// DATA chunks marked for fast retransmit (§7.2.4).
    pub fast_retransmits: u64,
    /// T3-rtx expiries (§6.3.3).
    pub t3_expiries: u64,
    /// DATA chunks received again (§6.2).
    pub duplicate_tsns: u64,
    /// DATA chunks dropped for lack of room (window or out-of-order limit).
    pub chunks_dropped: u64,
    /// Out-of-order chunks given up to make room for in-order data (reneging, §6.2).
    pub reneged_chunks: u64,
    /// Messages delivered complete.
    pub messages_delivered: u64,
}

/// The association's state (§4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Established,
    /// `close` was called; waiting for outstanding data to be acknowledged.
    ShutdownPending,
    /// The peer's SHUTDOWN arrived; waiting for outstanding data to be acknowledged.
    ShutdownReceived,
    ShutdownSent,
    ShutdownAckSent,
    Closed,
}

/// Where an outgoing DATA chunk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Never sent.
    Unsent,
    /// Sent and neither acknowledged nor given up for lost.
    InFlight,
    /// Acknowledged by a gap block, not yet by the cumulative ack.
    GapAcked,
    /// To be sent again (T3-rtx, fast retransmit, reneged).
    Retransmit,
}

/// An outgoing DATA chunk; its bytes are in the send buffer.
#[derive(Clone, Copy, Debug)]
struct OutChunk {
    tsn: u32,
    stream: u16,
    ssn: u16,
    ppid: u32,
    beginning: bool,
    ending: bool,
    /// Where its bytes start, counted from the association's first byte sent.
    start: u64,
    /// Its user data's length.
    len: u16,
    state: ChunkState,
    /// Miss indications so far (§7.2.4).
    misses: u8,
    /// Fast-retransmitted once already (§7.2.4: at most once).
    fast_retransmitted: bool,
}

impl OutChunk {
    /// The bytes it counts for in the flight size, the peer's window and the send buffer.
    fn size(&self) -> usize {
        DATA_HEADER_LEN + usize::from(self.len)
    }
}

/// A received DATA chunk beyond a gap, kept until the gap fills.
#[derive(Debug)]
struct Held {
    stream: u16,
    ssn: u16,
    ppid: u32,
    beginning: bool,
    ending: bool,
    data: Box<[u8]>,
}

/// A received DATA chunk's fields that reassembly uses.
#[derive(Clone, Copy, Debug)]
struct Fragment<'d> {
    stream: u16,
    ssn: u16,
    ppid: u32,
    beginning: bool,
    ending: bool,
    data: &'d [u8],
}

/// The message being reassembled at the end of the delivery buffer.
#[derive(Clone, Copy, Debug)]
struct Reassembly {
    stream: u16,
    ssn: u16,
    ppid: u32,
    /// Where its bytes start in the delivery buffer.
    start: usize,
}

/// An event not yet taken; a message's bytes are in the delivery buffer.
#[derive(Clone, Copy, Debug)]
enum Pending {
    Message {
        stream: u16,
        ppid: u32,
        start: usize,
        len: usize,
    },
    Lost(LossReason),
    ShutDown,
}

/// One established SCTP association: see the module documentation.
#[derive(Debug)]
pub struct Association {
    config: AssociationConfig,
    peer: SocketAddr,
    local_port: u16,
    peer_port: u16,
    /// The tag the peer's packets carry.
    local_tag: u32,
    /// The tag this end's packets carry.
    peer_tag: u32,
    outbound_streams: u16,
    inbound_streams: u16,
    state: State,
    /// The latest time given to any method.
    now_ms: u64,

    // Sending.
    /// The next SSN of each outbound stream.
    next_ssn: Vec<u16>,
    /// The TSN of the next chunk queued.
    next_tsn: u32,
    /// The peer's cumulative TSN ack: the chunk before the queue's first.
    peer_cum_ack: u32,
    /// Chunks not yet acknowledged cumulatively, in TSN order (consecutive TSNs).
    queue: VecDeque<OutChunk>,
    /// The index in `queue` of the first chunk never sent.
    unsent_from: usize,
    /// The bytes of the queued chunks.
    send_bytes: Vec<u8>,
    /// The position of `send_bytes[0]` among all bytes ever queued.
    send_base: u64,
    /// The send buffer used, in [`send_cost`] terms.
    send_queued: usize,
    /// Chunks in the `Retransmit` state.
    to_retransmit: usize,
    /// Chunks in the `GapAcked` state.
    gap_acked: usize,
    /// Bytes in flight (§6.1).
    flight_size: usize,
    /// The peer's receiver window as last computed (§6.2.1).
    peer_rwnd: usize,
    cwnd: usize,
    ssthresh: usize,
    partial_bytes_acked: usize,
    /// The exit point of fast recovery, while in it (§7.2.4).
    fast_recovery_exit: Option<u32>,
    /// A fast retransmission may go out regardless of cwnd (§7.2.4 step 3).
    fast_retransmit_now: bool,
    /// A SACK arrived since the last T3-rtx expiry (RFC 9260 §6.1 A: zero window probes).
    sack_since_t3: bool,

    // Timers and RTT (§6.3).
    srtt_ms: Option<u64>,
    rttvar_ms: u64,
    rto_ms: u64,
    /// The chunk being timed for an RTT measurement and when it went out.
    rtt_probe: Option<(u32, u64)>,
    t3_deadline: Option<u64>,
    t2_deadline: Option<u64>,
    heartbeat_deadline: Option<u64>,
    /// The HEARTBEAT awaiting its ACK: nonce and sending time.
    heartbeat_sent: Option<(u64, u64)>,
    heartbeat_nonce: u64,
    /// Consecutive timeouts (§8.1).
    error_count: u32,

    // Receiving.
    /// The last TSN received in sequence.
    cum_tsn: u32,
    /// Chunks beyond the gap: index `i` holds TSN `cum_tsn + 1 + i`; never ends in `None`.
    out_of_order: VecDeque<Option<Held>>,
    /// The user data bytes in `out_of_order`.
    out_of_order_bytes: usize,
    /// The chunks in `out_of_order`.
    out_of_order_chunks: usize,
    /// Delivered messages not yet taken, then the message being reassembled.
    delivery: Vec<u8>,
    /// The bytes of `delivery` already lent out by `poll_event`.
    delivery_read: usize,
    reassembly: Option<Reassembly>,
    events: VecDeque<Pending>,
    /// Duplicate TSNs for the next SACK.
    duplicates: Vec<u32>,
    /// Gap blocks of the SACK being written (kept for its capacity).
    gap_scratch: Vec<GapAckBlock>,
    /// A SACK is due now.
    sack_now: bool,
    /// A SACK is due at this time (the delayed ack, §6.2).
    sack_deadline: Option<u64>,
    /// Packets with DATA since the last SACK.
    packets_since_sack: u32,

    // Control chunks due.
    cookie_ack_due: bool,
    heartbeat_due: bool,
    heartbeat_ack_due: bool,
    /// The Heartbeat Info to echo (kept for its capacity).
    heartbeat_ack_info: Vec<u8>,
    /// Error causes for an ERROR chunk, each padded but the last.
    error_causes: Vec<u8>,
    shutdown_due: bool,
    shutdown_ack_due: bool,
    shutdown_complete_due: bool,
    /// An ABORT with this cause code is due.
    abort_due: Option<u16>,

    stats: AssociationStats,
}

impl Association {
    /// The association that a handshake completed (passive: `handshake::respond`; active:
    /// [`super::Connector`]), at `now_ms`. A COOKIE ECHO packet may carry DATA after the
    /// cookie: give that packet to [`Association::handle_packet`] as well (it answers the
    /// COOKIE ECHO with a COOKIE ACK again, §5.2.4 D, so `respond`'s may be left unsent).
    pub fn new(established: &Established, config: AssociationConfig, now_ms: u64) -> Self {
        let config = config.normalized();
        let mtu = config.mtu;
        let peer_rwnd = usize::try_from(established.peer_a_rwnd).unwrap_or(usize::MAX);
        let rto_ms = config.rto_initial_ms;
        Self {
            peer: established.peer,
            local_port: established.local_port,
            peer_port: established.peer_port,
            local_tag: established.local_tag,
            peer_tag: established.peer_tag,
            outbound_streams: established.outbound_streams,
            inbound_streams: established.inbound_streams,
            state: State::Established,
            now_ms,
            next_ssn: vec![0; usize::from(established.outbound_streams)],
            next_tsn: established.local_initial_tsn,
            peer_cum_ack: established.local_initial_tsn.wrapping_sub(1),
            queue: VecDeque::new(),
            unsent_from: 0,
            send_bytes: Vec::new(),
            send_base: 0,
            send_queued: 0,
            to_retransmit: 0,
            gap_acked: 0,
            flight_size: 0,
            peer_rwnd,
            // §7.2.1: the initial cwnd, and ssthresh the peer's window.
            cwnd: (4 * mtu).min((2 * mtu).max(4_380)),
            ssthresh: peer_rwnd,
            partial_bytes_acked: 0,
            fast_recovery_exit: None,
            fast_retransmit_now: false,
            sack_since_t3: false,
            srtt_ms: None,
            rttvar_ms: 0,
            rto_ms,
            rtt_probe: None,
            t3_deadline: None,
            t2_deadline: None,
            heartbeat_deadline: config
                .heartbeat_interval_ms
                .map(|hb| now_ms.saturating_add(hb).saturating_add(rto_ms)),
            heartbeat_sent: None,
            heartbeat_nonce: 0,
            error_count: 0,
            cum_tsn: established.peer_initial_tsn.wrapping_sub(1),
            out_of_order: VecDeque::new(),
            out_of_order_bytes: 0,
            out_of_order_chunks: 0,
            delivery: Vec::new(),
            delivery_read: 0,
            reassembly: None,
            events: VecDeque::new(),
            duplicates: Vec::new(),
            gap_scratch: Vec::new(),
            sack_now: false,
            sack_deadline: None,
            packets_since_sack: 0,
            cookie_ack_due: false,
            heartbeat_due: false,
            heartbeat_ack_due: false,
            heartbeat_ack_info: Vec::new(),
            error_causes: Vec::new(),
            shutdown_due: false,
            shutdown_ack_due: false,
            shutdown_complete_due: false,
            abort_due: None,
            stats: AssociationStats::default(),
            config,
        }
    }

    /// The peer's address, as the handshake saw it.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The configuration in force (after [`AssociationConfig`]'s ranges were applied).
    pub fn config(&self) -> &AssociationConfig {
        &self.config
    }

    /// The traffic counters.
    pub fn stats(&self) -> AssociationStats {
        self.stats
    }

    /// Whether the association is gone (lost, aborted or shut down); the last packets (ABORT,
    /// SHUTDOWN COMPLETE) may still wait in [`Association::poll_transmit`].
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The received bytes held: out of order, being reassembled, or delivered but not taken.
    /// Never more than the configured `receive_buffer`.
    pub fn receive_buffered(&self) -> usize {
        self.unread_bytes() + self.out_of_order_bytes
    }

    /// The DATA chunks held beyond a gap; never more than `max_out_of_order_chunks`.
    pub fn out_of_order_chunks(&self) -> usize {
        self.out_of_order_chunks
    }

    /// The send buffer used: queued and unacknowledged messages with their DATA headers.
    pub fn send_buffered(&self) -> usize {
        self.send_queued
    }

    /// The current retransmission timeout (§6.3.1), in milliseconds.
    pub fn rto_ms(&self) -> u64 {
        self.rto_ms
    }

    /// The congestion window (§7.2), in bytes.
    pub fn cwnd(&self) -> usize {
        self.cwnd
    }

    /// Queues a user message for `stream` with payload protocol identifier `ppid` (§6.1, §6.6,
    /// §6.9: fragmented to the packet size, one SSN for all its fragments).
    pub fn send(
        &mut self,
        stream: u16,
        ppid: u32,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<(), SendError> {
        self.advance_clock(now_ms);
        if self.state != State::Established {
            return Err(SendError::Closed);
        }
        if bytes.is_empty() {
            return Err(SendError::Empty);
        }
        let max = self.config.max_message_size;
        if bytes.len() > max {
            return Err(SendError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        let Some(ssn) = self.next_ssn.get_mut(usize::from(stream)) else {
            return Err(SendError::StreamOutOfRange {
                stream,
                streams: self.outbound_streams,
            });
        };
        let fragment = max_fragment(self.config.mtu);
        let needed = send_cost(bytes.len(), fragment);
        let free = self.config.send_buffer.saturating_sub(self.send_queued);
        if needed > free {
            return Err(SendError::BufferFull { needed, free });
        }
        let this_ssn = *ssn;
        *ssn = ssn.wrapping_add(1);
        let mut start = self.send_base + self.send_bytes.len() as u64;
        self.send_bytes.extend_from_slice(bytes);
        let count = bytes.len().div_ceil(fragment);
        for (i, piece) in bytes.chunks(fragment).enumerate() {
            self.queue.push_back(OutChunk {
                tsn: self.next_tsn,
                stream,
                ssn: this_ssn,
                ppid,
                beginning: i == 0,
                ending: i + 1 == count,
                start,
                // A fragment is shorter than the MTU, which is below 65 536.
                len: u16::try_from(piece.len()).unwrap_or(u16::MAX),
                state: ChunkState::Unsent,
                misses: 0,
                fast_retransmitted: false,
            });
            self.next_tsn = self.next_tsn.wrapping_add(1);
            start += piece.len() as u64;
        }
        self.send_queued += needed;
        Ok(())
    }

    /// Starts the SHUTDOWN sequence (§9.2): no more messages are taken; what is queued is sent
    /// and acknowledged, then SHUTDOWN, SHUTDOWN ACK, SHUTDOWN COMPLETE, and
    /// [`Event::ShutDown`].
    pub fn close(&mut self) {
        if self.state == State::Established {
            self.state = State::ShutdownPending;
            self.shutdown_when_acknowledged();
        }
    }

    /// Ends the association at once (§9.1): an ABORT with the User-Initiated Abort cause goes
    /// out with the next [`Association::poll_transmit`]; queued data is dropped;
    /// [`Event::Lost`] with [`LossReason::Aborted`] follows the events before it.
    pub fn abort(&mut self) {
        if self.state != State::Closed {
            self.abort_due = Some(CAUSE_USER_INITIATED_ABORT);
            self.close_with(Pending::Lost(LossReason::Aborted));
        }
    }

    /// The next event, if any. A message's bytes are lent from the delivery buffer; they count
    /// against the receive window until the next call to this method.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.compact_delivery();
        Some(match self.events.pop_front()? {
            Pending::Message {
                stream,
                ppid,
                start,
                len,
            } => {
                self.delivery_read = start + len;
                Event::Message {
                    stream,
                    ppid,
                    bytes: self.delivery.get(start..start + len).unwrap_or_default(),
                }
            }
            Pending::Lost(reason) => Event::Lost(reason),
            Pending::ShutDown => Event::ShutDown,
        })
    }

    /// When [`Association::handle_timeout`] is next due (the earliest of T3-rtx, T2-shutdown,
    /// the delayed SACK and the heartbeat), in the caller's milliseconds.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.state == State::Closed {
            return None;
        }
        [
            self.t3_deadline,
            self.t2_deadline,
            self.sack_deadline,
            self.heartbeat_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers due at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.advance_clock(now_ms);
        let now = self.now_ms;
        let due = |deadline: Option<u64>| deadline.is_some_and(|d| d <= now);
        if due(self.sack_deadline) {
            self.sack_deadline = None;
            self.sack_now = true;
        }
        if due(self.t3_deadline) {
            self.on_t3_expiry();
        }
        if due(self.t2_deadline) {
            self.on_t2_expiry();
        }
        if due(self.heartbeat_deadline) {
            self.on_heartbeat_timer();
        }
    }

    /// Takes a packet from the peer at `now_ms` (one the caller matched to this association by
    /// address and ports).
    pub fn handle_packet(&mut self, packet: &[u8], now_ms: u64) -> Received {
        self.advance_clock(now_ms);
        // §6.8: a bad checksum drops the packet silently.
        let parsed = match SctpPacket::parse(packet).and_then(|p| p.verify_checksum().map(|()| p)) {
            Ok(p) => p,
            Err(e) => return self.dropped(DropReason::Malformed(e)),
        };
        if parsed.source_port() != self.peer_port || parsed.destination_port() != self.local_port {
            return self.dropped(DropReason::OtherPorts);
        }
        if self.state == State::Closed {
            // §8.4 item 5: a SHUTDOWN ACK after the end (the SHUTDOWN COMPLETE was lost) is
            // answered with a SHUTDOWN COMPLETE, so that the peer's T2-shutdown stops too.
            let first = parsed.chunks().next().map(|c| c.body());
            if parsed.verification_tag() == self.local_tag
                && matches!(first, Some(Ok(SctpChunkBody::ShutdownAck)))
            {
                self.shutdown_complete_due = true;
                return Received::Processed;
            }
            return self.dropped(DropReason::Closed);
        }
        // Every chunk's fields are checked before any is acted on: a packet with a lie in it
        // is dropped whole.
        let mut first = None;
        for chunk in parsed.chunks() {
            match chunk.body() {
                Ok(body) => {
                    first.get_or_insert(body);
                }
                Err(e) => return self.dropped(DropReason::Malformed(e)),
            }
        }
        let Some(first) = first else {
            return Received::Processed;
        };
        // §5.2.2, §8.5.1 A: an INIT (tag 0) is for the handshake, which answers it.
        if matches!(first, SctpChunkBody::Init(_)) {
            return Received::ForHandshake;
        }
        let tag = parsed.verification_tag();
        // §8.5: our tag; §8.5.1 B, C: or the peer's in an ABORT or SHUTDOWN COMPLETE with the
        // T bit, of which only those chunks count.
        let reflected_only = if tag == self.local_tag {
            false
        } else if tag == self.peer_tag
            && parsed.chunks().any(|c| {
                matches!(
                    c.body(),
                    Ok(SctpChunkBody::Abort {
                        tag_reflected: true,
                        ..
                    } | SctpChunkBody::ShutdownComplete {
                        tag_reflected: true
                    })
                )
            })
        {
            true
        } else if matches!(first, SctpChunkBody::CookieEcho { .. }) {
            // §5.2.4: a COOKIE ECHO with another tag: the peer restarted (or collided).
            return Received::ForHandshake;
        } else {
            return self.dropped(DropReason::WrongTag);
        };
        self.stats.packets_received += 1;
        let had_gaps = !self.out_of_order.is_empty();
        let (mut data_seen, mut immediate) = (false, false);
        for chunk in parsed.chunks() {
            if self.state == State::Closed {
                break;
            }
            let Ok(body) = chunk.body() else { break };
            if reflected_only {
                match body {
                    SctpChunkBody::Abort {
                        tag_reflected: true,
                        ..
                    } => self.on_abort(),
                    SctpChunkBody::ShutdownComplete {
                        tag_reflected: true,
                    } => self.on_shutdown_complete(),
                    _ => {}
                }
                continue;
            }
            match body {
                SctpChunkBody::Data(data) => {
                    data_seen = true;
                    immediate |= data.immediate;
                    self.on_data(&data);
                }
                SctpChunkBody::Sack(sack) => {
                    self.sack_since_t3 = true;
                    self.process_ack(
                        sack.cumulative_tsn_ack,
                        Some(sack.a_rwnd),
                        Some(sack.gap_blocks),
                    );
                }
                // §8.3: a HEARTBEAT is answered with its info.
                SctpChunkBody::Heartbeat { info } => {
                    self.heartbeat_ack_info.clear();
                    self.heartbeat_ack_info.extend_from_slice(info);
                    self.heartbeat_ack_due = true;
                }
                SctpChunkBody::HeartbeatAck { info } => self.on_heartbeat_ack(info),
                // §8.5.1 B: an ABORT with our tag has the T bit clear; one with it set is
                // ignored.
                SctpChunkBody::Abort {
                    tag_reflected: false,
                    ..
                } => self.on_abort(),
                SctpChunkBody::Shutdown { cumulative_tsn_ack } => {
                    self.on_shutdown(cumulative_tsn_ack)
                }
                SctpChunkBody::ShutdownAck => self.on_shutdown_ack(),
                // §8.5.1 C: as the ABORT.
                SctpChunkBody::ShutdownComplete {
                    tag_reflected: false,
                } => self.on_shutdown_complete(),
                // §5.2.4 D: a COOKIE ECHO with both tags ours is a duplicate of the one that
                // made the association (its COOKIE ACK was lost): answer it again. Its
                // signature is not checked here (the keys are the handshake's), as nothing
                // changes but another COOKIE ACK.
                SctpChunkBody::CookieEcho { .. } => self.cookie_ack_due = true,
                // §3.2: an unrecognized chunk type's two high bits say what to do.
                SctpChunkBody::Unknown(unknown) => {
                    let action = unknown.action();
                    if action.reports() {
                        self.report_cause(CAUSE_UNRECOGNIZED_CHUNK, chunk.as_bytes());
                    }
                    if !action.skips() {
                        break;
                    }
                }
                // §5.2.3 (INIT ACK), §5.2.5 (COOKIE ACK): nothing to do once established;
                // an ERROR's causes ask for nothing here; the T-bit chunks with our tag are
                // ignored (§8.5.1 B, C).
                SctpChunkBody::Init(_)
                | SctpChunkBody::InitAck(_)
                | SctpChunkBody::CookieAck
                | SctpChunkBody::Error { .. }
                | SctpChunkBody::Abort { .. }
                | SctpChunkBody::ShutdownComplete { .. } => {}
            }
        }
        if data_seen && self.state != State::Closed {
            self.schedule_sack(immediate, had_gaps);
        }
        Received::Processed
    }

    /// Writes the next packet to send into `buf` (at least the configured `mtu` long, or it is
    /// the limit) and gives its length; `None` when nothing is due. Control chunks first, then a
    /// SACK, then DATA (retransmissions before new data) bundled as far as they fit (§6.10).
    /// The time is the latest any method was given.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<usize> {
        let limit = buf.len().min(self.config.mtu);
        let mut b = SctpPacketBuilder::new(
            &mut buf[..limit],
            self.local_port,
            self.peer_port,
            self.peer_tag,
        )
        .ok()?;
        // §9.1: the ABORT goes alone, with the peer's tag and the T bit clear.
        if let Some(code) = self.abort_due.take() {
            b.push_abort(false, &[SctpErrorCause { code, info: &[] }])
                .ok()?;
            return Some(self.sent(b));
        }
        // §9.2: the SHUTDOWN COMPLETE, the last packet.
        if std::mem::take(&mut self.shutdown_complete_due) {
            b.push_shutdown_complete(false).ok()?;
            return Some(self.sent(b));
        }
        if self.state == State::Closed {
            return None;
        }
        if self.cookie_ack_due {
            let pushed = b.push_cookie_ack();
            self.cookie_ack_due = !done(&b, pushed);
        }
        if self.heartbeat_ack_due {
            let pushed = b.push_heartbeat_ack(&self.heartbeat_ack_info);
            self.heartbeat_ack_due = !done(&b, pushed);
        }
        if !self.error_causes.is_empty() {
            let pushed = b.push_raw(ERROR_CHUNK, 0, &self.error_causes);
            if done(&b, pushed) {
                self.error_causes.clear();
            }
        }
        if self.shutdown_ack_due {
            let pushed = b.push_shutdown_ack();
            self.shutdown_ack_due = !done(&b, pushed);
        }
        if self.shutdown_due {
            let pushed = b.push_shutdown(self.cum_tsn);
            self.shutdown_due = !done(&b, pushed);
        }
        if self.heartbeat_due
            && let Some((nonce, sent_ms)) = self.heartbeat_sent
        {
            let mut info = [0; HEARTBEAT_INFO_LEN];
            info[..8].copy_from_slice(&nonce.to_be_bytes());
            info[8..].copy_from_slice(&sent_ms.to_be_bytes());
            let pushed = b.push_heartbeat(&info);
            self.heartbeat_due = !done(&b, pushed);
        }
        let data_ready = self.data_sendable();
        // §6.2: a SACK when one is due, or bundled with DATA when one is owed.
        if (self.sack_now || (self.sack_deadline.is_some() && data_ready)) && self.push_sack(&mut b)
        {
            self.sack_now = false;
            self.sack_deadline = None;
            self.packets_since_sack = 0;
        }
        if data_ready {
            self.push_data(&mut b);
        }
        if b.written() == COMMON_HEADER_LEN {
            return None;
        }
        Some(self.sent(b))
    }

    /// Finishes a packet and counts it.
    fn sent(&mut self, b: SctpPacketBuilder<'_>) -> usize {
        self.stats.packets_sent += 1;
        b.finish().len()
    }

    /// Counts a dropped packet.
    fn dropped(&mut self, reason: DropReason) -> Received {
        self.stats.packets_dropped += 1;
        Received::Dropped(reason)
    }

    /// Keeps the latest time seen.
    fn advance_clock(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// Ends the association with `event` after the events before it.
    fn close_with(&mut self, event: Pending) {
        self.state = State::Closed;
        self.t3_deadline = None;
        self.t2_deadline = None;
        self.sack_deadline = None;
        self.heartbeat_deadline = None;
        self.events.push_back(event);
    }

    /// §9.1: the peer broke the protocol: ABORT with a cause, and the association is lost.
    fn violation(&mut self, violation: Violation) {
        self.abort_due = Some(match violation {
            Violation::NoUserData => CAUSE_NO_USER_DATA,
            Violation::MessageTooLarge | Violation::BrokenFragments => CAUSE_PROTOCOL_VIOLATION,
        });
        self.close_with(Pending::Lost(LossReason::ProtocolViolation(violation)));
    }

    /// §8.1: one more consecutive timeout; beyond Association.Max.Retrans the peer is
    /// unreachable and the association lost (no ABORT: nobody would hear it). Whether it was.
    fn count_error(&mut self) -> bool {
        self.error_count += 1;
        if self.error_count > self.config.max_retransmissions {
            self.close_with(Pending::Lost(LossReason::Unreachable));
            return true;
        }
        false
    }

    /// Adds an error cause to the next ERROR chunk, if it fits in one packet.
    fn report_cause(&mut self, code: u16, info: &[u8]) {
        let at = padded(self.error_causes.len());
        let len = CHUNK_HEADER_LEN + info.len();
        let budget = self.config.mtu - COMMON_HEADER_LEN - CHUNK_HEADER_LEN;
        let Ok(length) = u16::try_from(len) else {
            return;
        };
        if at + len > budget {
            return;
        }
        self.error_causes.resize(at, 0);
        self.error_causes.extend_from_slice(&code.to_be_bytes());
        self.error_causes.extend_from_slice(&length.to_be_bytes());
        self.error_causes.extend_from_slice(info);
    }

    // Receiving DATA (§6.2, §6.5, §6.9).

    /// Bytes in the delivery buffer not yet lent out.
    fn unread_bytes(&self) -> usize {
        self.delivery.len() - self.delivery_read
    }

    /// The window this end advertises (§6.2): the receive buffer less what it holds.
    fn a_rwnd(&self) -> u32 {
        let free = self
            .config
            .receive_buffer
            .saturating_sub(self.receive_buffered());
        u32::try_from(free).unwrap_or(u32::MAX)
    }

    /// One received DATA chunk.
    fn on_data(&mut self, data: &DataChunk<'_>) {
        // §6.2: a DATA chunk without user data: ABORT with the No User Data cause.
        if data.user_data.is_empty() {
            self.violation(Violation::NoUserData);
            return;
        }
        let offset = data.tsn.wrapping_sub(self.cum_tsn);
        let len = data.user_data.len();
        // §6.2: at or below the cumulative TSN: a duplicate, reported in the next SACK, which
        // goes at once.
        if offset == 0 || offset >= 1 << 31 {
            self.duplicate(data.tsn);
            return;
        }
        let index = offset as usize - 1;
        if index >= self.config.max_out_of_order_chunks {
            self.stats.chunks_dropped += 1;
            self.sack_now = true;
            return;
        }
        if matches!(self.out_of_order.get(index), Some(Some(_))) {
            self.duplicate(data.tsn);
            return;
        }
        let fragment = Fragment {
            stream: data.stream_id,
            ssn: data.stream_seq,
            ppid: data.ppid,
            beginning: data.beginning,
            ending: data.ending,
            data: data.user_data,
        };
        let room = self.config.receive_buffer;
        if index > 0 {
            // §6.2: beyond a gap, kept if the window has room; a SACK with the gap goes at once.
            if self.receive_buffered() + len > room {
                self.stats.chunks_dropped += 1;
                self.sack_now = true;
                return;
            }
            if self.out_of_order.len() <= index {
                self.out_of_order.resize_with(index + 1, || None);
            }
            self.out_of_order[index] = Some(Held {
                stream: fragment.stream,
                ssn: fragment.ssn,
                ppid: fragment.ppid,
                beginning: fragment.beginning,
                ending: fragment.ending,
                data: fragment.data.into(),
            });
            self.out_of_order_bytes += len;
            self.out_of_order_chunks += 1;
            return;
        }
        // The next TSN in sequence. §6.2: with no room among the undelivered bytes it is
        // dropped; room held by chunks beyond the gap is taken back from the highest down
        // (reneging: the peer keeps gap-acked data until the cumulative ack passes it).
        if self.unread_bytes() + len > room {
            self.stats.chunks_dropped += 1;
            self.sack_now = true;
            return;
        }
        while self.receive_buffered() + len > room && self.renege_highest() {}
        self.out_of_order.pop_front();
        self.cum_tsn = data.tsn;
        self.accept(fragment);
        while self.state != State::Closed && matches!(self.out_of_order.front(), Some(Some(_))) {
            let Some(Some(held)) = self.out_of_order.pop_front() else {
                break;
            };
            self.out_of_order_bytes -= held.data.len();
            self.out_of_order_chunks -= 1;
            self.cum_tsn = self.cum_tsn.wrapping_add(1);
            self.accept(Fragment {
                stream: held.stream,
                ssn: held.ssn,
                ppid: held.ppid,
                beginning: held.beginning,
                ending: held.ending,
                data: &held.data,
            });
        }
    }

    /// Notes a duplicate TSN for the next SACK, which goes at once (§6.2).
    fn duplicate(&mut self, tsn: u32) {
        self.stats.duplicate_tsns += 1;
        if self.duplicates.len() < MAX_REPORTED_DUPLICATES {
            self.duplicates.push(tsn);
        }
        self.sack_now = true;
    }

    /// Gives up the highest chunk held beyond a gap; whether there was one.
    fn renege_highest(&mut self) -> bool {
        let Some(slot) = self.out_of_order.pop_back() else {
            return false;
        };
        if let Some(held) = slot {
            self.out_of_order_bytes -= held.data.len();
            self.out_of_order_chunks -= 1;
            self.stats.reneged_chunks += 1;
        }
        while matches!(self.out_of_order.back(), Some(None)) {
            self.out_of_order.pop_back();
        }
        true
    }

    /// A chunk whose TSN is now in sequence: reassembled into the delivery buffer (§6.9), the
    /// message queued for delivery at its end fragment.
    fn accept(&mut self, fragment: Fragment<'_>) {
        // §6.5: a stream the handshake did not agree on: reported in an ERROR, the chunk
        // discarded (its TSN still counts as received).
        if fragment.stream >= self.inbound_streams {
            if self.reassembly.is_some() {
                self.violation(Violation::BrokenFragments);
            } else {
                let [s0, s1] = fragment.stream.to_be_bytes();
                self.report_cause(CAUSE_INVALID_STREAM, &[s0, s1, 0, 0]);
            }
            return;
        }
        // §6.9: a message's fragments have consecutive TSNs, B first, E last, one stream and
        // SSN.
        let message = match (self.reassembly, fragment.beginning) {
            (None, true) => Reassembly {
                stream: fragment.stream,
                ssn: fragment.ssn,
                ppid: fragment.ppid,
                start: self.delivery.len(),
            },
            (Some(r), false) if r.stream == fragment.stream && r.ssn == fragment.ssn => r,
            _ => {
                self.violation(Violation::BrokenFragments);
                return;
            }
        };
        let len = self.delivery.len() - message.start + fragment.data.len();
        if len > self.config.max_message_size {
            self.violation(Violation::MessageTooLarge);
            return;
        }
        self.delivery.extend_from_slice(fragment.data);
        if fragment.ending {
            self.reassembly = None;
            self.stats.messages_delivered += 1;
            self.events.push_back(Pending::Message {
                stream: message.stream,
                ppid: message.ppid,
                start: message.start,
                len,
            });
        } else {
            self.reassembly = Some(message);
        }
    }

    /// Drops the delivery buffer's bytes already lent out: all of them when nothing else is
    /// left, else once they are half of it (so the copying stays linear).
    fn compact_delivery(&mut self) {
        let read = self.delivery_read;
        if read == 0 || (read < self.delivery.len() && read < self.delivery.len() / 2) {
            return;
        }
        self.delivery.drain(..read);
        self.delivery_read = 0;
        for event in &mut self.events {
            if let Pending::Message { start, .. } = event {
                *start -= read;
            }
        }
        if let Some(r) = &mut self.reassembly {
            r.start -= read;
        }
    }

    /// §6.2: after a packet with DATA, a SACK at once when there are gaps (or one was just
    /// filled), duplicates, the I bit (RFC 7053), or enough packets unacknowledged; else within
    /// the delay. §9.2: in SHUTDOWN-SENT, every packet with DATA gets a SHUTDOWN too.
    fn schedule_sack(&mut self, immediate: bool, had_gaps: bool) {
        self.packets_since_sack += 1;
        if had_gaps
            || immediate
            || !self.out_of_order.is_empty()
            || self.packets_since_sack >= self.config.sack_every_packets
        {
            self.sack_now = true;
        } else if self.sack_deadline.is_none() {
            self.sack_deadline = Some(self.now_ms.saturating_add(self.config.sack_delay_ms));
        }
        if self.state == State::ShutdownSent {
            self.shutdown_due = true;
            self.t2_deadline = Some(self.now_ms.saturating_add(self.rto_ms));
        }
    }

    /// Writes a SACK (§3.3.4, §6.2) with as many gap blocks and duplicates as fit; whether it
    /// did.
    fn push_sack(&mut self, b: &mut SctpPacketBuilder<'_>) -> bool {
        let Some(room) = b.remaining().checked_sub(SACK_HEADER_LEN) else {
            return false;
        };
        let duplicates = self.duplicates.len().min(room / 4);
        let max_gaps = (room - 4 * duplicates) / 4;
        let mut gaps = std::mem::take(&mut self.gap_scratch);
        gaps.clear();
        // Index i holds TSN cum + 1 + i: offset i + 1 (below 65 536: the window's limit).
        let offset = |i: usize| u16::try_from(i + 1).unwrap_or(u16::MAX);
        let mut run: Option<usize> = None;
        for (i, slot) in self.out_of_order.iter().enumerate() {
            if gaps.len() == max_gaps {
                break;
            }
            match (slot.is_some(), run) {
                (true, None) => run = Some(i),
                (false, Some(start)) => {
                    gaps.push(GapAckBlock {
                        start: offset(start),
                        end: offset(i - 1),
                    });
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run
            && gaps.len() < max_gaps
        {
            gaps.push(GapAckBlock {
                start: offset(start),
                end: offset(self.out_of_order.len() - 1),
            });
        }
        let pushed = b
            .push_sack(
                self.cum_tsn,
                self.a_rwnd(),
                &gaps,
                &self.duplicates[..duplicates],
            )
            .is_ok();
        self.gap_scratch = gaps;
        if pushed {
            self.duplicates.clear();
        }
        pushed
    }

    // Sending DATA (§6.1, §6.3, §7.2).

    /// Whether DATA may go out now: retransmissions within cwnd (or the one fast-retransmit
    /// packet), or new data within cwnd and the peer's window (§6.1 A, B).
    fn data_sendable(&self) -> bool {
        if self.to_retransmit > 0 {
            return self.fast_retransmit_now || self.flight_size < self.cwnd;
        }
        self.queue.get(self.unsent_from).is_some_and(|c| {
            self.flight_size < self.cwnd && (self.flight_size == 0 || c.size() <= self.peer_rwnd)
        })
    }

    /// Bundles DATA chunks into `b`: first those marked for retransmission (§6.1 C), in TSN
    /// order, then new ones.
    fn push_data(&mut self, b: &mut SctpPacketBuilder<'_>) {
        let now = self.now_ms;
        let mut sent_any = false;
        if self.to_retransmit > 0 {
            // §7.2.4 step 3: the first fast-retransmit packet goes regardless of cwnd.
            let ignore_cwnd = std::mem::take(&mut self.fast_retransmit_now);
            for i in 0..self.unsent_from {
                if self.to_retransmit == 0 || (!ignore_cwnd && self.flight_size >= self.cwnd) {
                    break;
                }
                let chunk = self.queue[i];
                if chunk.state != ChunkState::Retransmit {
                    continue;
                }
                if push_chunk(b, &chunk, &self.send_bytes, self.send_base).is_err() {
                    break;
                }
                self.queue[i].state = ChunkState::InFlight;
                self.to_retransmit -= 1;
                self.flight_size += chunk.size();
                self.stats.retransmitted_chunks += 1;
                sent_any = true;
                // §6.3.1 C5 (Karn): no RTT from a retransmitted chunk.
                if self.rtt_probe.is_some_and(|(tsn, _)| tsn == chunk.tsn) {
                    self.rtt_probe = None;
                }
            }
        }
        if self.to_retransmit == 0 {
            while let Some(&chunk) = self.queue.get(self.unsent_from) {
                // §6.1 B: not with cwnd or more in flight. §6.1 A: not beyond the peer's
                // window, except one chunk when nothing is in flight (zero window probe).
                if self.flight_size >= self.cwnd
                    || (self.flight_size > 0 && chunk.size() > self.peer_rwnd)
                {
                    break;
                }
                if push_chunk(b, &chunk, &self.send_bytes, self.send_base).is_err() {
                    break;
                }
                self.queue[self.unsent_from].state = ChunkState::InFlight;
                self.unsent_from += 1;
                self.flight_size += chunk.size();
                self.peer_rwnd = self.peer_rwnd.saturating_sub(chunk.size());
                self.stats.data_chunks_sent += 1;
                sent_any = true;
                // §6.3.1: one RTT measurement per round trip.
                self.rtt_probe.get_or_insert((chunk.tsn, now));
            }
        }
        if sent_any {
            // §6.3.2 R1: T3-rtx runs while data is outstanding.
            self.t3_deadline
                .get_or_insert(now.saturating_add(self.rto_ms));
            // §8.3: the path is not idle.
            if let Some(interval) = self.config.heartbeat_interval_ms {
                self.heartbeat_deadline =
                    Some(now.saturating_add(interval).saturating_add(self.rto_ms));
            }
        }
    }

    /// A SACK (`a_rwnd` and `gaps` given) or the cumulative ack of a SHUTDOWN (neither):
    /// §6.2.1 (cumulative ack, gap blocks, the peer's window), §7.2.1-2 (cwnd), §7.2.4 (fast
    /// retransmit), §6.3.2 (T3-rtx), §6.3.1 (RTT).
    fn process_ack(&mut self, cum: u32, a_rwnd: Option<u32>, gaps: Option<GapAckBlocks<'_>>) {
        let now = self.now_ms;
        let advance = cum.wrapping_sub(self.peer_cum_ack);
        // §6.2.1 D i: older than the cumulative ack point: dropped. One acknowledging TSNs
        // never sent is dropped too (RFC 9260 §6.2.1 allows an ABORT).
        if advance >= 1 << 31 || advance as usize > self.unsent_from {
            return;
        }
        let advance = advance as usize;
        let highest_sent = self.peer_cum_ack.wrapping_add(self.unsent_from as u32);
        let flight_before = self.flight_size;
        let mut bytes_acked = 0;
        for _ in 0..advance {
            let Some(chunk) = self.queue.pop_front() else {
                break;
            };
            self.unsent_from -= 1;
            match chunk.state {
                ChunkState::InFlight => self.flight_size -= chunk.size(),
                ChunkState::Retransmit => self.to_retransmit -= 1,
                ChunkState::GapAcked => self.gap_acked -= 1,
                ChunkState::Unsent => {}
            }
            if chunk.state != ChunkState::GapAcked {
                bytes_acked += chunk.size();
            }
            self.send_queued -= chunk.size();
        }
        self.peer_cum_ack = cum;
        self.release_send_bytes();
        // §6.2.1: gap blocks ascending, not overlapping, within 1..; others are ignored.
        let gaps = gaps.filter(|blocks| {
            let mut after = 0;
            blocks.clone().all(|g| {
                let ok = g.start > after && g.start <= g.end;
                after = g.end;
                ok
            })
        });
        let mut highest_newly_acked = None;
        if gaps.is_some() || self.gap_acked > 0 {
            let mut blocks = gaps.into_iter().flatten();
            let mut block = blocks.next();
            for i in 0..self.unsent_from {
                let offset = i + 1;
                while let Some(g) = block
                    && usize::from(g.end) < offset
                {
                    block = blocks.next();
                }
                if block.is_none() && self.gap_acked == 0 {
                    break;
                }
                let acked = block.is_some_and(|g| usize::from(g.start) <= offset);
                let chunk = &mut self.queue[i];
                match (acked, chunk.state) {
                    (true, ChunkState::GapAcked) | (false, ChunkState::Unsent) => {}
                    (true, state) => {
                        match state {
                            ChunkState::InFlight => self.flight_size -= chunk.size(),
                            ChunkState::Retransmit => self.to_retransmit -= 1,
                            _ => {}
                        }
                        chunk.state = ChunkState::GapAcked;
                        self.gap_acked += 1;
                        bytes_acked += chunk.size();
                        highest_newly_acked = Some(i);
                    }
                    // §6.2.1 (reneging): gap-acked before, not now: to be sent again.
                    (false, ChunkState::GapAcked) => {
                        chunk.state = ChunkState::Retransmit;
                        self.gap_acked -= 1;
                        self.to_retransmit += 1;
                    }
                    (false, _) => {}
                }
            }
        }
        // §7.2.4: a miss indication for every chunk in flight below the highest TSN newly
        // acknowledged (HTNA); the third marks it for fast retransmit, once.
        let mut marked = 0;
        for chunk in self.queue.iter_mut().take(highest_newly_acked.unwrap_or(0)) {
            if chunk.state == ChunkState::InFlight && !chunk.fast_retransmitted {
                chunk.misses += 1;
                if chunk.misses >= 3 {
                    chunk.state = ChunkState::Retransmit;
                    chunk.fast_retransmitted = true;
                    self.flight_size -= chunk.size();
                    self.to_retransmit += 1;
                    marked += 1;
                }
            }
        }
        // §7.2.4 step 5: fast recovery ends when its exit point is acknowledged.
        if self
            .fast_recovery_exit
            .is_some_and(|exit| !tsn_after(exit, cum))
        {
            self.fast_recovery_exit = None;
        }
        let mtu = self.config.mtu;
        if marked > 0 {
            self.stats.fast_retransmits += marked;
            self.fast_retransmit_now = true;
            // §7.2.4 step 2 (and §7.2.3): halve the window once per fast recovery.
            if self.fast_recovery_exit.is_none() {
                self.ssthresh = (self.cwnd / 2).max(4 * mtu);
                self.cwnd = self.ssthresh;
                self.partial_bytes_acked = 0;
                self.fast_recovery_exit = Some(highest_sent);
            }
        }
        if advance > 0 && self.fast_recovery_exit.is_none() {
            if self.cwnd <= self.ssthresh {
                // §7.2.1: slow start, when the window was in use.
                if flight_before >= self.cwnd {
                    self.cwnd += bytes_acked.min(mtu);
                }
            } else {
                // §7.2.2: congestion avoidance, one MTU per window acknowledged.
                self.partial_bytes_acked += bytes_acked;
                if self.partial_bytes_acked >= self.cwnd && flight_before >= self.cwnd {
                    self.partial_bytes_acked -= self.cwnd;
                    self.cwnd += mtu;
                }
            }
        }
        if self.flight_size == 0 {
            self.partial_bytes_acked = 0;
        }
        // §6.2.1 D iv: the peer's window less what is still in flight.
        if let Some(a_rwnd) = a_rwnd {
            self.peer_rwnd = usize::try_from(a_rwnd)
                .unwrap_or(usize::MAX)
                .saturating_sub(self.flight_size);
        }
        if advance > 0 {
            // §8.1: acknowledged data clears the error count.
            self.error_count = 0;
            // §6.3.1 C2-C3: the timed chunk is acknowledged.
            if let Some((tsn, sent_ms)) = self.rtt_probe
                && !tsn_after(tsn, cum)
            {
                self.rtt_probe = None;
                self.measure_rtt(now.saturating_sub(sent_ms));
            }
        }
        // §6.3.2 R2, R3: stop T3-rtx when nothing is outstanding, restart it when the earliest
        // outstanding TSN is acknowledged.
        if self.unsent_from == 0 {
            self.t3_deadline = None;
        } else if advance > 0 {
            self.t3_deadline = Some(now.saturating_add(self.rto_ms));
        }
        self.shutdown_when_acknowledged();
    }

    /// Drops the send buffer's bytes of acknowledged chunks: all of them when nothing is
    /// queued, else once they are half of it.
    fn release_send_bytes(&mut self) {
        let end = self.send_base + self.send_bytes.len() as u64;
        let keep_from = self.queue.front().map_or(end, |c| c.start);
        let release = (keep_from - self.send_base) as usize;
        if release > 0 && (release == self.send_bytes.len() || release >= self.send_bytes.len() / 2)
        {
            self.send_bytes.drain(..release);
            self.send_base = keep_from;
        }
    }

    /// §6.3.1: a new RTT measurement updates SRTT, RTTVAR and the RTO (α = 1/8, β = 1/4, G =
    /// 1 ms), kept within RTO.Min and RTO.Max.
    fn measure_rtt(&mut self, r: u64) {
        match self.srtt_ms {
            // C2: the first measurement.
            None => {
                self.srtt_ms = Some(r);
                self.rttvar_ms = r / 2;
            }
            // C3: the later ones.
            Some(srtt) => {
                self.rttvar_ms = (3 * self.rttvar_ms + srtt.abs_diff(r)) / 4;
                self.srtt_ms = Some((7 * srtt + r) / 8);
            }
        }
        // C4: RTTVAR at least the clock granularity.
        self.rttvar_ms = self.rttvar_ms.max(1);
        let srtt = self.srtt_ms.unwrap_or(r);
        // C6, C7.
        self.rto_ms = srtt
            .saturating_add(4 * self.rttvar_ms)
            .clamp(self.config.rto_min_ms, self.config.rto_max_ms);
    }

    // Timers.

    /// §6.3.3: T3-rtx expired.
    fn on_t3_expiry(&mut self) {
        let now = self.now_ms;
        self.stats.t3_expiries += 1;
        // §8.1, and RFC 9260 §6.1 A: a zero window probe the peer keeps answering with SACKs
        // is no error.
        let probing = self.peer_rwnd == 0 && self.sack_since_t3;
        self.sack_since_t3 = false;
        if !probing && self.count_error() {
            return;
        }
        // E1: the window to one MTU.
        let mtu = self.config.mtu;
        self.ssthresh = (self.cwnd / 2).max(4 * mtu);
        self.cwnd = mtu;
        self.partial_bytes_acked = 0;
        // E2: back off the timer.
        self.rto_ms = self.rto_ms.saturating_mul(2).min(self.config.rto_max_ms);
        // E3: everything in flight is to be sent again, as cwnd allows.
        for chunk in self.queue.iter_mut().take(self.unsent_from) {
            if chunk.state == ChunkState::InFlight {
                chunk.state = ChunkState::Retransmit;
                self.to_retransmit += 1;
            }
        }
        self.flight_size = 0;
        self.fast_recovery_exit = None;
        self.rtt_probe = None;
        self.t3_deadline = Some(now.saturating_add(self.rto_ms));
    }

    /// §9.2: T2-shutdown expired: send the SHUTDOWN or SHUTDOWN ACK again, with the timer
    /// backed off, up to Association.Max.Retrans.
    fn on_t2_expiry(&mut self) {
        if self.count_error() {
            return;
        }
        self.rto_ms = self.rto_ms.saturating_mul(2).min(self.config.rto_max_ms);
        match self.state {
            State::ShutdownSent => self.shutdown_due = true,
            State::ShutdownAckSent => self.shutdown_ack_due = true,
            _ => {
                self.t2_deadline = None;
                return;
            }
        }
        self.t2_deadline = Some(self.now_ms.saturating_add(self.rto_ms));
    }

    /// §8.3: the heartbeat timer: an idle path gets a HEARTBEAT every RTO + HB.interval; one
    /// unanswered by then counts as an error (§8.1).
    fn on_heartbeat_timer(&mut self) {
        let now = self.now_ms;
        let Some(interval) = self.config.heartbeat_interval_ms else {
            self.heartbeat_deadline = None;
            return;
        };
        self.heartbeat_deadline = Some(now.saturating_add(interval).saturating_add(self.rto_ms));
        // With data outstanding T3-rtx watches the path.
        if self.unsent_from > 0 {
            return;
        }
        if self.heartbeat_sent.is_some() && self.count_error() {
            return;
        }
        self.heartbeat_nonce += 1;
        self.heartbeat_sent = Some((self.heartbeat_nonce, now));
        self.heartbeat_due = true;
    }

    /// §8.3: a HEARTBEAT ACK with the info of the HEARTBEAT awaiting one: an RTT measurement,
    /// and the error count cleared (§8.1).
    fn on_heartbeat_ack(&mut self, info: &[u8]) {
        let Some((nonce, sent_ms)) = self.heartbeat_sent else {
            return;
        };
        let Some((echoed, rest)) = info.split_first_chunk::<8>() else {
            return;
        };
        if u64::from_be_bytes(*echoed) != nonce || rest != sent_ms.to_be_bytes() {
            return;
        }
        self.heartbeat_sent = None;
        self.error_count = 0;
        self.measure_rtt(self.now_ms.saturating_sub(sent_ms));
    }

    // Ending (§9).

    /// §9.1: the peer aborted.
    fn on_abort(&mut self) {
        self.close_with(Pending::Lost(LossReason::PeerAborted));
    }

    /// §9.2: once nothing is outstanding, a pending close sends the SHUTDOWN and a received
    /// SHUTDOWN gets its SHUTDOWN ACK, each on T2-shutdown.
    fn shutdown_when_acknowledged(&mut self) {
        if !self.queue.is_empty() {
            return;
        }
        match self.state {
            State::ShutdownPending => {
                self.state = State::ShutdownSent;
                self.shutdown_due = true;
            }
            State::ShutdownReceived => {
                self.state = State::ShutdownAckSent;
                self.shutdown_ack_due = true;
            }
            _ => return,
        }
        self.t3_deadline = None;
        self.t2_deadline = Some(self.now_ms.saturating_add(self.rto_ms));
    }

    /// §9.2: the peer's SHUTDOWN: its cumulative ack counts as a SACK's; no more messages are
    /// taken; the SHUTDOWN ACK goes when everything is acknowledged. In SHUTDOWN-SENT (both
    /// ends closing) the SHUTDOWN ACK goes at once.
    fn on_shutdown(&mut self, cumulative_tsn_ack: u32) {
        match self.state {
            State::Established | State::ShutdownPending | State::ShutdownReceived => {
                self.state = State::ShutdownReceived;
                self.process_ack(cumulative_tsn_ack, None, None);
                self.shutdown_when_acknowledged();
            }
            State::ShutdownSent => {
                self.process_ack(cumulative_tsn_ack, None, None);
                self.state = State::ShutdownAckSent;
                self.shutdown_due = false;
                self.shutdown_ack_due = true;
                self.t2_deadline = Some(self.now_ms.saturating_add(self.rto_ms));
            }
            State::ShutdownAckSent | State::Closed => {}
        }
    }

    /// §9.2: the SHUTDOWN ACK: answered with SHUTDOWN COMPLETE; the association is shut down.
    fn on_shutdown_ack(&mut self) {
        if matches!(self.state, State::ShutdownSent | State::ShutdownAckSent) {
            self.shutdown_complete_due = true;
            self.close_with(Pending::ShutDown);
        }
    }

    /// §9.2: the SHUTDOWN COMPLETE: the association is shut down.
    fn on_shutdown_complete(&mut self) {
        if self.state == State::ShutdownAckSent {
            self.close_with(Pending::ShutDown);
        }
    }
}

/// Whether a control chunk is done with: written, or too large even for an empty packet.
fn done(b: &SctpPacketBuilder<'_>, pushed: Result<(), SctpBuildError>) -> bool {
    pushed.is_ok() || b.written() == COMMON_HEADER_LEN
}

/// Writes an outgoing DATA chunk whose bytes are in `bytes`, which start at position `base`.
fn push_chunk(
    b: &mut SctpPacketBuilder<'_>,
    chunk: &OutChunk,
    bytes: &[u8],
    base: u64,
) -> Result<(), SctpBuildError> {
    let at = usize::try_from(chunk.start - base).unwrap_or(usize::MAX);
    let user_data = bytes
        .get(at..at.saturating_add(usize::from(chunk.len)))
        .unwrap_or_default();
    b.push_data(&DataChunk {
        tsn: chunk.tsn,
        stream_id: chunk.stream,
        stream_seq: chunk.ssn,
        ppid: chunk.ppid,
        unordered: false,
        beginning: chunk.beginning,
        ending: chunk.ending,
        immediate: false,
        user_data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsn_serial_arithmetic() {
        assert!(tsn_after(1, 0));
        assert!(tsn_after(0, u32::MAX));
        assert!(!tsn_after(5, 5));
        assert!(!tsn_after(u32::MAX, 0));
        assert!(tsn_after(0x8000_0000 - 1, 0));
        assert!(!tsn_after(0x8000_0000, 0));
    }

    #[test]
    fn configuration_is_brought_into_range() {
        let c = AssociationConfig {
            mtu: 10,
            max_message_size: 100_000,
            send_buffer: 0,
            receive_buffer: 0,
            max_out_of_order_chunks: 1 << 20,
            rto_initial_ms: 0,
            rto_min_ms: 0,
            rto_max_ms: 0,
            sack_every_packets: 0,
            ..AssociationConfig::default()
        }
        .normalized();
        assert_eq!(c.mtu, MIN_MTU);
        assert_eq!(c.receive_buffer, 100_000);
        assert!(c.send_buffer >= 100_000);
        assert_eq!(c.max_out_of_order_chunks, 65_535);
        assert_eq!((c.rto_min_ms, c.rto_initial_ms, c.rto_max_ms), (1, 1, 1));
        assert_eq!(c.sack_every_packets, 1);
        assert_eq!(max_fragment(1_200), 1_172);
        assert_eq!(send_cost(1_172 * 2 + 1, 1_172), 1_172 * 2 + 1 + 48);
    }

    fn association() -> Association {
        let established = Established {
            peer: "192.0.2.1:9899".parse().unwrap(),
            peer_port: 3863,
            local_port: 5000,
            local_tag: 1,
            peer_tag: 2,
            local_initial_tsn: 10,
            peer_initial_tsn: 20,
            peer_a_rwnd: 65_536,
            outbound_streams: 4,
            inbound_streams: 4,
        };
        Association::new(&established, AssociationConfig::default(), 0)
    }

    /// §6.3.1: the first measurement sets SRTT and RTTVAR, the RTO is SRTT + 4 RTTVAR within
    /// RTO.Min and RTO.Max, later ones smooth it.
    #[test]
    fn rto_follows_the_measurements() {
        let mut a = association();
        assert_eq!(a.rto_ms(), 1_000, "RTO.Initial");
        a.measure_rtt(100);
        assert_eq!((a.srtt_ms, a.rttvar_ms, a.rto_ms), (Some(100), 50, 300));
        a.measure_rtt(100);
        assert_eq!((a.srtt_ms, a.rttvar_ms, a.rto_ms), (Some(100), 37, 248));
        for _ in 0..50 {
            a.measure_rtt(1);
        }
        assert_eq!(a.rto_ms, 200, "RTO.Min");
        a.measure_rtt(1_000_000);
        assert_eq!(a.rto_ms, 60_000, "RTO.Max");
    }

    #[test]
    fn send_checks_its_arguments() {
        let mut a = association();
        assert_eq!(a.send(0, 11, b"", 0), Err(SendError::Empty));
        assert_eq!(
            a.send(4, 11, b"x", 0),
            Err(SendError::StreamOutOfRange {
                stream: 4,
                streams: 4
            })
        );
        assert_eq!(
            a.send(0, 11, &[0; 65_537], 0),
            Err(SendError::TooLarge {
                len: 65_537,
                max: 65_536
            })
        );
        let big = [7; 65_536];
        let mut queued = 0;
        let full = loop {
            match a.send(1, 11, &big, 0) {
                Ok(()) => queued += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(
            queued, 3,
            "three 64 KiB messages fit in 256 KiB with headers"
        );
        assert!(matches!(full, SendError::BufferFull { .. }));
        // Fragments: 56 of 1 172 bytes, the last shorter; one SSN; B on the first, E on the last.
        let first: Vec<_> = a.queue.iter().take(56).collect();
        assert!(first.iter().all(|c| c.ssn == 0 && c.stream == 1));
        assert!(first[0].beginning && !first[0].ending);
        assert!(first[55].ending && !first[55].beginning);
        assert_eq!(a.queue[56].ssn, 1);
        assert_eq!(a.queue[0].tsn, 10);
        a.close();
        assert_eq!(a.send(0, 11, b"x", 0), Err(SendError::Closed));
    }
}
