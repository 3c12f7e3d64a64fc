//! Many SCTP associations over one UDP socket (RFC 6951): [`SctpUdpEndpoint`] takes the
//! datagrams a socket receives and hands each to its association, found by the peer's UDP
//! address and SCTP port; it answers handshakes without keeping state (`handshake::respond`)
//! and out-of-the-blue packets (RFC 4960 §8.4), runs this end's own handshakes ([`Connector`]),
//! and gives back the datagrams to send with their destinations, the associations' events and
//! the next deadline. Sans-I/O like the rest of the module: the driver owns the socket and the
//! clock, and calls in with the time in milliseconds.
//!
//! One endpoint is one local SCTP port (ASAP 3863, ENRP 9901); a UDP socket that carries several
//! gives each packet to the endpoint of its destination port ([`destination_port`]).
//!
//! Bounds: at most `max_associations` associations (a COOKIE ECHO beyond gets an ABORT with
//! "Out of Resource", §3.3.10.4); the answers to handshakes and out-of-the-blue packets wait in
//! a queue of at most `max_pending_replies` (more are dropped, so an INIT flood costs a bounded
//! queue and no association); each association's buffers are bounded by its
//! [`AssociationConfig`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;

use ring::hmac;

use super::association::{Association, AssociationConfig, Event, LossReason, Received, SendError};
use super::connect::{ConnectConfig, ConnectError, ConnectProgress, Connector};
use super::handshake::{CookieKeys, Handshake, Ignored, PassiveConfig, respond};
use super::packet::{SctpChunkBody, SctpErrorCause, SctpPacket, SctpPacketBuilder};

/// Room for one handshake or out-of-the-blue answer (an INIT ACK with its cookie and
/// addresses fits easily).
const REPLY_ROOM: usize = 1_500;
/// The "Out of Resource" error cause (§3.3.10.4).
const CAUSE_OUT_OF_RESOURCE: u16 = 4;
/// The "Stale Cookie" error cause (§3.3.10.3).
const CAUSE_STALE_COOKIE: u16 = 3;
/// [`EndpointConfig::loopback_mtu`] by default: 8 KiB, well within a 16 KiB receive buffer.
pub const DEFAULT_LOOPBACK_MTU: usize = 8_192;

/// The SCTP destination port of a packet (bytes 2-3 of the common header, §3.1), to pick the
/// endpoint of a UDP socket that carries several; `None` for fewer than 12 bytes.
pub fn destination_port(packet: &[u8]) -> Option<u16> {
    (packet.len() >= 12).then(|| u16::from_be_bytes([packet[2], packet[3]]))
}

/// 32 bytes from the system's random source (`ring::rand`), for [`SctpUdpEndpoint::new`] and
/// [`SctpUdpEndpoint::rotate_keys`].
pub fn random_secret() -> std::io::Result<[u8; 32]> {
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).map_err(
        |_| std::io::Error::other("the system's random source failed: cannot key SCTP cookies"),
    )?;
    Ok(secret)
}

/// What an endpoint serves and how much it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    /// This end's SCTP port.
    pub local_port: u16,
    /// What the passive handshake offers, or `None` for an endpoint that only opens
    /// associations itself (a client): INITs are then dropped. Its `local_port` must be
    /// [`EndpointConfig::local_port`] (the endpoint sets it).
    pub passive: Option<PassiveConfig>,
    /// The parameters of every association.
    pub association: AssociationConfig,
    /// The most associations at once, opening ones included.
    pub max_associations: usize,
    /// The most answers to handshakes and out-of-the-blue packets waiting to be sent.
    pub max_pending_replies: usize,
    /// The packet size towards peers on a loopback address (0: the association's `mtu`): the
    /// path is the loopback interface (MTU 65 536), so packets may be as large as the peer
    /// receives, and fewer of them carry the same messages. Kept below what the receiver's
    /// buffers take whole (the registrar's io_uring buffers are `io.buffer_size`).
    pub loopback_mtu: usize,
}

impl EndpointConfig {
    /// A client's endpoint on `local_port`: opens associations, accepts none; 1 024 at most.
    pub fn client(local_port: u16) -> Self {
        Self {
            local_port,
            passive: None,
            association: AssociationConfig::default(),
            max_associations: 1_024,
            max_pending_replies: 64,
            loopback_mtu: DEFAULT_LOOPBACK_MTU,
        }
    }

    /// A server's endpoint on `local_port`: accepts associations (a 256 KiB window, 16 streams
    /// each way, cookies valid for 60 s) up to `max_associations`.
    pub fn server(local_port: u16, max_associations: usize) -> Self {
        Self {
            passive: Some(PassiveConfig {
                local_port,
                a_rwnd: 262_144,
                outbound_streams: 16,
                inbound_streams: 16,
                cookie_lifespan_ms: 60_000,
            }),
            max_associations,
            max_pending_replies: 1_024,
            ..Self::client(local_port)
        }
    }

    /// The association parameters towards `peer`: a loopback peer gets `loopback_mtu`.
    fn association_for(&self, peer: SocketAddr) -> AssociationConfig {
        let mut association = self.association;
        if peer.ip().is_loopback() && self.loopback_mtu > 0 {
            association.mtu = self.loopback_mtu;
        }
        association
    }
}

/// Names one association of an endpoint; never names another after it closed (a slot's
/// generation changes when it is reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssociationHandle {
    index: u32,
    generation: u32,
}

/// What happened at an endpoint, per association, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointEvent<'a> {
    /// A peer opened an association (its COOKIE ECHO checked, §5.1 D).
    Accepted {
        /// The peer's UDP address.
        peer: SocketAddr,
        /// The peer's SCTP port.
        peer_port: u16,
    },
    /// An association this end opened ([`SctpUdpEndpoint::connect`]) is up.
    Connected,
    /// A user message arrived (lent until the callback returns).
    Message {
        /// The stream it came on.
        stream: u16,
        /// Its payload protocol identifier (ASAP 11, ENRP 12).
        ppid: u32,
        /// The message.
        bytes: &'a [u8],
    },
    /// The association is gone; its handle names nothing from now on.
    Closed(CloseReason),
}

/// Why an association closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The association was lost or aborted.
    Lost(LossReason),
    /// The SHUTDOWN sequence completed.
    ShutDown,
    /// This end's handshake failed.
    ConnectFailed(ConnectError),
    /// The peer restarted (a new handshake from the same address and port, §5.2.4): a new
    /// association replaces this one (its `Accepted` follows).
    PeerRestarted,
    /// [`SctpUdpEndpoint::abort`] ended a handshake this end had started.
    Cancelled,
}

/// Why [`SctpUdpEndpoint::send`], [`SctpUdpEndpoint::connect`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointError {
    /// The handle names no association (it closed).
    NoSuchAssociation,
    /// The association's handshake has not completed.
    NotConnected,
    /// The association refused the message.
    Send(SendError),
    /// `max_associations` are open.
    TooManyAssociations {
        /// The configured limit.
        max: usize,
    },
    /// An association with this peer address and port exists.
    AlreadyAssociated,
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchAssociation => write!(f, "the SCTP association is closed"),
            Self::NotConnected => write!(f, "the SCTP association's handshake is not complete"),
            Self::Send(e) => e.fmt(f),
            Self::TooManyAssociations { max } => write!(
                f,
                "{max} SCTP associations are open, the most this endpoint holds; close one or \
                 raise the limit"
            ),
            Self::AlreadyAssociated => {
                write!(
                    f,
                    "an SCTP association with this peer address and port exists"
                )
            }
        }
    }
}

impl std::error::Error for EndpointError {}

/// Counters of what an endpoint did with packets that no association took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Handshake answers queued (INIT ACK, COOKIE ACK, Stale Cookie errors, ABORTs to INITs).
    pub handshake_replies: u64,
    /// Out-of-the-blue packets answered with an ABORT or SHUTDOWN COMPLETE (§8.4).
    pub out_of_the_blue_answered: u64,
    /// Packets dropped: malformed, bad checksum, another port, invalid handshakes, cookies
    /// not ours, out of the blue and not to be answered (§8.4).
    pub dropped: u64,
    /// Answers dropped because `max_pending_replies` were waiting.
    pub replies_dropped: u64,
    /// COOKIE ECHOs refused because `max_associations` were open.
    pub refused_full: u64,
    /// Associations accepted.
    pub accepted: u64,
    /// Peers that restarted (§5.2.4).
    pub restarts: u64,
}

/// (the peer's UDP address, its SCTP port)
type PeerKey = (SocketAddr, u16);

enum SlotState {
    Vacant,
    Connecting(Box<Connector>),
    Up(Box<Association>),
}

struct Slot {
    generation: u32,
    state: SlotState,
    key: PeerKey,
    /// The deadline of this slot's live entry in the timer heap.
    scheduled: Option<u64>,
    /// Whether the slot is in the transmit queue.
    transmit_queued: bool,
    /// Whether the slot is in the event queue.
    events_queued: bool,
    /// Whether its `Closed` event was given: freed once its last packets are sent.
    closed: bool,
}

impl Slot {
    fn vacant() -> Self {
        Self {
            generation: 0,
            state: SlotState::Vacant,
            key: (SocketAddr::from(([0, 0, 0, 0], 0)), 0),
            scheduled: None,
            transmit_queued: false,
            events_queued: false,
            closed: false,
        }
    }

    fn timeout(&self) -> Option<u64> {
        match &self.state {
            SlotState::Vacant => None,
            SlotState::Connecting(c) => c.poll_timeout(),
            SlotState::Up(a) => a.poll_timeout(),
        }
    }
}

/// Tags and initial TSNs (§5.3.1: unpredictable): HMAC-SHA256 of a counter under a random key,
/// eight values a signature.
struct Random {
    key: hmac::Key,
    counter: u64,
    values: [u32; 8],
    left: usize,
}

impl Random {
    fn new(secret: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            counter: 0,
            values: [0; 8],
            left: 0,
        }
    }

    fn next(&mut self) -> u32 {
        if self.left == 0 {
            self.counter += 1;
            let tag = hmac::sign(&self.key, &self.counter.to_be_bytes());
            for (value, bytes) in self.values.iter_mut().zip(tag.as_ref().chunks_exact(4)) {
                *value = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            }
            self.left = self.values.len();
        }
        self.left -= 1;
        self.values[self.left]
    }
}

/// The SCTP associations of one local port over one UDP socket; see the module documentation.
///
/// Method map (as in quinn-proto): inputs [`Self::handle_datagram`], [`Self::handle_timeouts`],
/// [`Self::connect`], [`Self::send`], [`Self::close`], [`Self::abort`]; outputs
/// [`Self::poll_transmit`] (datagrams with their destination), [`Self::poll_events`] (per
/// association), [`Self::poll_timeout`] (when to call [`Self::handle_timeouts`]).
pub struct SctpUdpEndpoint {
    config: EndpointConfig,
    keys: CookieKeys,
    random: Random,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_peer: HashMap<PeerKey, u32, foldhash::fast::RandomState>,
    /// (deadline, slot, generation), earliest first; entries that no longer match their slot's
    /// `scheduled` are stale and skipped.
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Slots that may have packets to send.
    transmit: VecDeque<AssociationHandle>,
    /// Slots that may have events.
    ready: VecDeque<AssociationHandle>,
    /// Events the endpoint itself raised (accepted, connected, failed, restarted), before the
    /// associations' own.
    notices: VecDeque<(AssociationHandle, EndpointEvent<'static>)>,
    /// Answers to handshakes and out-of-the-blue packets: destination and bytes in
    /// `reply_bytes`.
    replies: VecDeque<(SocketAddr, Range<usize>)>,
    reply_bytes: Vec<u8>,
    stats: EndpointStats,
}

impl fmt::Debug for SctpUdpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SctpUdpEndpoint")
            .field("local_port", &self.config.local_port)
            .field("associations", &self.by_peer.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SctpUdpEndpoint {
    /// An endpoint with `config`; `secret` (32 random bytes, e.g. from `ring::rand`) keys its
    /// State Cookies and its tags. Endpoints that should accept each other's cookies (workers
    /// sharing a port) take the same secret.
    pub fn new(mut config: EndpointConfig, secret: [u8; 32]) -> Self {
        if let Some(passive) = &mut config.passive {
            passive.local_port = config.local_port;
        }
        config.max_associations = config.max_associations.min(u32::MAX as usize);
        // Tags come from another key than cookies: a tag shows nothing of the cookie key.
        let mut tag_secret = secret;
        tag_secret.iter_mut().for_each(|b| *b ^= 0x5c);
        Self {
            config,
            keys: CookieKeys::new(secret),
            random: Random::new(&tag_secret),
            slots: Vec::new(),
            free: Vec::new(),
            by_peer: HashMap::default(),
            timers: BinaryHeap::new(),
            transmit: VecDeque::new(),
            ready: VecDeque::new(),
            notices: VecDeque::new(),
            replies: VecDeque::new(),
            reply_bytes: Vec::new(),
            stats: EndpointStats::default(),
        }
    }

    /// An endpoint with `config` and a secret from the system's random source.
    pub fn with_random_secret(config: EndpointConfig) -> std::io::Result<Self> {
        Ok(Self::new(config, random_secret()?))
    }

    /// Signs new cookies with a key from `secret`; the previous key's cookies still check until
    /// the next rotation.
    pub fn rotate_keys(&mut self, secret: [u8; 32]) {
        self.keys.rotate(secret);
    }

    /// This end's SCTP port.
    pub fn local_port(&self) -> u16 {
        self.config.local_port
    }

    /// The associations open or opening.
    pub fn associations(&self) -> usize {
        self.by_peer.len()
    }

    /// What the endpoint did with packets no association took.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// The association with `handle`, if it is up (for its counters and state).
    pub fn association(&self, handle: AssociationHandle) -> Option<&Association> {
        match &self.slot(handle)?.state {
            SlotState::Up(a) => Some(a),
            _ => None,
        }
    }

    /// The peer of `handle`: its UDP address and SCTP port.
    pub fn peer(&self, handle: AssociationHandle) -> Option<(SocketAddr, u16)> {
        self.slot(handle)
            .filter(|s| !matches!(s.state, SlotState::Vacant))
            .map(|s| s.key)
    }

    /// Takes a datagram's payload `packet` that arrived from `from` at `now_ms`.
    pub fn handle_datagram(&mut self, from: SocketAddr, packet: &[u8], now_ms: u64) {
        let Some(port) = destination_port(packet) else {
            self.stats.dropped += 1;
            return;
        };
        if port != self.config.local_port {
            self.stats.dropped += 1;
            return;
        }
        let source_port = u16::from_be_bytes([packet[0], packet[1]]);
        match self.by_peer.get(&(from, source_port)).copied() {
            Some(index) => self.on_associated_packet(index, from, packet, now_ms),
            None => self.on_unassociated_packet(from, packet, now_ms),
        }
    }

    /// A packet for the association in slot `index`.
    fn on_associated_packet(&mut self, index: u32, from: SocketAddr, packet: &[u8], now_ms: u64) {
        let handle = self.handle_of(index);
        let slot = &mut self.slots[index as usize];
        match &mut slot.state {
            SlotState::Up(association) => {
                if association.handle_packet(packet, now_ms) == Received::ForHandshake {
                    // An INIT or a COOKIE ECHO of a new association from the same peer.
                    self.on_unassociated_packet(from, packet, now_ms);
                }
            }
            SlotState::Connecting(connector) => match connector.handle_packet(packet, now_ms) {
                Ok(ConnectProgress::Established(established)) => {
                    let mut association = Box::new(Association::new(
                        &established,
                        self.config.association_for(established.peer),
                        now_ms,
                    ));
                    // DATA bundled after the COOKIE ACK (§5.1 E) is the association's.
                    association.handle_packet(packet, now_ms);
                    slot.state = SlotState::Up(association);
                    self.notices.push_back((handle, EndpointEvent::Connected));
                }
                Ok(ConnectProgress::Failed(e)) => {
                    self.close_slot(index, CloseReason::ConnectFailed(e));
                    return;
                }
                Ok(ConnectProgress::Pending) | Err(_) => {}
            },
            SlotState::Vacant => return,
        }
        self.touched(index);
    }

    /// A packet of no association: a handshake (§5.1), or out of the blue (§8.4).
    fn on_unassociated_packet(&mut self, from: SocketAddr, packet: &[u8], now_ms: u64) {
        let Some(passive) = self.config.passive else {
            self.out_of_the_blue(from, packet);
            return;
        };
        let Self {
            keys,
            random,
            reply_bytes,
            ..
        } = self;
        let start = reply_bytes.len();
        reply_bytes.resize(start + REPLY_ROOM, 0);
        let answer = respond(
            packet,
            from,
            now_ms,
            &passive,
            keys,
            &mut || random.next(),
            &mut reply_bytes[start..],
        );
        match answer {
            Handshake::Reply(len) => {
                self.stats.handshake_replies += 1;
                self.keep_reply(from, start, len);
            }
            Handshake::Established(established, len) => {
                let key = (from, established.peer_port);
                if let Some(old) = self.by_peer.get(&key).copied() {
                    // §5.2.4 A: the peer restarted; its old association ends.
                    self.stats.restarts += 1;
                    self.close_slot(old, CloseReason::PeerRestarted);
                }
                if self.by_peer.len() >= self.config.max_associations {
                    self.reply_bytes.truncate(start);
                    self.stats.refused_full += 1;
                    self.refuse(from, packet, established.peer_tag);
                    return;
                }
                // The association answers the COOKIE ECHO itself (and takes bundled DATA).
                let _ = len;
                self.reply_bytes.truncate(start);
                let mut association = Box::new(Association::new(
                    &established,
                    self.config.association_for(established.peer),
                    now_ms,
                ));
                association.handle_packet(packet, now_ms);
                let index = self.occupy(key, SlotState::Up(association));
                self.stats.accepted += 1;
                let handle = self.handle_of(index);
                self.notices.push_back((
                    handle,
                    EndpointEvent::Accepted {
                        peer: from,
                        peer_port: established.peer_port,
                    },
                ));
                self.touched(index);
            }
            Handshake::Ignored(Ignored::NotHandshake) => {
                self.reply_bytes.truncate(start);
                self.out_of_the_blue(from, packet);
            }
            Handshake::Ignored(_) => {
                self.reply_bytes.truncate(start);
                self.stats.dropped += 1;
            }
        }
    }

    /// §8.4: an out-of-the-blue packet with a valid checksum gets an ABORT with its own tag
    /// reflected (rule 8), a SHUTDOWN ACK a SHUTDOWN COMPLETE (rule 5); ABORT, SHUTDOWN
    /// COMPLETE, COOKIE ACK, a Stale Cookie ERROR (rules 2, 6, 7) and anything else this end
    /// cannot parse are dropped. INITs reach this only on an endpoint that accepts none: §8.4
    /// rule 3 leaves the answer open, and it is dropped.
    fn out_of_the_blue(&mut self, from: SocketAddr, packet: &[u8]) {
        let Ok(parsed) = SctpPacket::parse(packet).and_then(|p| p.verify_checksum().map(|()| p))
        else {
            self.stats.dropped += 1;
            return;
        };
        let mut shutdown_ack = false;
        for chunk in parsed.chunks() {
            match chunk.body() {
                Ok(
                    SctpChunkBody::Abort { .. }
                    | SctpChunkBody::ShutdownComplete { .. }
                    | SctpChunkBody::CookieAck
                    | SctpChunkBody::Init(_),
                )
                | Err(_) => {
                    self.stats.dropped += 1;
                    return;
                }
                Ok(SctpChunkBody::Error { causes }) => {
                    if causes
                        .clone()
                        .any(|c| c.is_ok_and(|c| c.code == CAUSE_STALE_COOKIE))
                    {
                        self.stats.dropped += 1;
                        return;
                    }
                }
                Ok(SctpChunkBody::ShutdownAck) => shutdown_ack = true,
                Ok(_) => {}
            }
        }
        let tag = parsed.verification_tag();
        let start = self.reply_bytes.len();
        self.reply_bytes.resize(start + REPLY_ROOM, 0);
        let built = SctpPacketBuilder::new(
            &mut self.reply_bytes[start..],
            parsed.destination_port(),
            parsed.source_port(),
            tag,
        )
        .and_then(|mut b| {
            if shutdown_ack {
                b.push_shutdown_complete(true)?;
            } else {
                b.push_abort(true, &[])?;
            }
            Ok(b.finish().len())
        });
        match built {
            Ok(len) => {
                self.stats.out_of_the_blue_answered += 1;
                self.keep_reply(from, start, len);
            }
            Err(_) => self.reply_bytes.truncate(start),
        }
    }

    /// An ABORT with "Out of Resource" for a COOKIE ECHO that would pass the limit, in the tag
    /// of the peer's INIT (§5.1: the association is not made).
    fn refuse(&mut self, from: SocketAddr, packet: &[u8], peer_tag: u32) {
        let Ok(parsed) = SctpPacket::parse(packet) else {
            return;
        };
        let start = self.reply_bytes.len();
        self.reply_bytes.resize(start + REPLY_ROOM, 0);
        let built = SctpPacketBuilder::new(
            &mut self.reply_bytes[start..],
            parsed.destination_port(),
            parsed.source_port(),
            peer_tag,
        )
        .and_then(|mut b| {
            b.push_abort(
                false,
                &[SctpErrorCause {
                    code: CAUSE_OUT_OF_RESOURCE,
                    info: &[],
                }],
            )?;
            Ok(b.finish().len())
        });
        match built {
            Ok(len) => self.keep_reply(from, start, len),
            Err(_) => self.reply_bytes.truncate(start),
        }
    }

    /// Keeps the `len` bytes written at `start` of the reply bytes as an answer to `to`, or
    /// drops them when `max_pending_replies` wait.
    fn keep_reply(&mut self, to: SocketAddr, start: usize, len: usize) {
        if self.replies.len() >= self.config.max_pending_replies {
            self.reply_bytes.truncate(start);
            self.stats.replies_dropped += 1;
            return;
        }
        self.reply_bytes.truncate(start + len);
        self.replies.push_back((to, start..start + len));
    }

    /// Opens an association with the SCTP port `peer_port` at the UDP address `peer`
    /// (§5.1 A: the INIT goes out with the next [`Self::poll_transmit`]). Its
    /// [`EndpointEvent::Connected`] or [`EndpointEvent::Closed`] tells how it went.
    pub fn connect(
        &mut self,
        peer: SocketAddr,
        peer_port: u16,
        now_ms: u64,
    ) -> Result<AssociationHandle, EndpointError> {
        let key = (peer, peer_port);
        if self.by_peer.contains_key(&key) {
            return Err(EndpointError::AlreadyAssociated);
        }
        if self.by_peer.len() >= self.config.max_associations {
            return Err(EndpointError::TooManyAssociations {
                max: self.config.max_associations,
            });
        }
        let association = &self.config.association;
        let connect = ConnectConfig {
            a_rwnd: u32::try_from(association.receive_buffer).unwrap_or(u32::MAX),
            rto_initial_ms: association.rto_initial_ms,
            rto_max_ms: association.rto_max_ms,
            ..ConnectConfig::new(self.config.local_port, peer_port)
        };
        let random = &mut self.random;
        let connector = Box::new(Connector::new(connect, peer, &mut || random.next(), now_ms));
        let index = self.occupy(key, SlotState::Connecting(connector));
        self.touched(index);
        Ok(self.handle_of(index))
    }

    /// Queues a message on association `handle` (§6.1).
    pub fn send(
        &mut self,
        handle: AssociationHandle,
        stream: u16,
        ppid: u32,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<(), EndpointError> {
        let slot = self
            .slot_mut(handle)
            .ok_or(EndpointError::NoSuchAssociation)?;
        match &mut slot.state {
            SlotState::Up(a) => a
                .send(stream, ppid, bytes, now_ms)
                .map_err(EndpointError::Send)?,
            SlotState::Connecting(_) => return Err(EndpointError::NotConnected),
            SlotState::Vacant => return Err(EndpointError::NoSuchAssociation),
        }
        self.touched(handle.index);
        Ok(())
    }

    /// Starts the SHUTDOWN of association `handle` once what it sent is acknowledged (§9.2);
    /// its [`EndpointEvent::Closed`] follows.
    pub fn close(&mut self, handle: AssociationHandle) {
        self.end(handle, Association::close);
    }

    /// Aborts association `handle` (§9.1: an ABORT goes to the peer); its
    /// [`EndpointEvent::Closed`] follows.
    pub fn abort(&mut self, handle: AssociationHandle) {
        self.end(handle, Association::abort);
    }

    /// Ends association `handle` with `how` (close or abort) if it is up; a handshake this end
    /// started is cancelled at once.
    fn end(&mut self, handle: AssociationHandle, how: fn(&mut Association)) {
        let Some(slot) = self.slot_mut(handle) else {
            return;
        };
        match &mut slot.state {
            SlotState::Up(a) => how(a),
            SlotState::Connecting(_) => {
                self.close_slot(handle.index, CloseReason::Cancelled);
                return;
            }
            SlotState::Vacant => return,
        }
        self.touched(handle.index);
    }

    /// When [`Self::handle_timeouts`] is next due (it may find nothing due yet: a deadline that
    /// moved later is rechecked then).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.peek().map(|Reverse((deadline, ..))| *deadline)
    }

    /// Runs the timers due at `now_ms`: retransmissions, SACK delays, heartbeats, handshake
    /// retries (§5.1.6, §6.2, §6.3.3, §8.3).
    pub fn handle_timeouts(&mut self, now_ms: u64) {
        while let Some(&Reverse((deadline, index, generation))) = self.timers.peek() {
            if deadline > now_ms {
                break;
            }
            self.timers.pop();
            let slot = &mut self.slots[index as usize];
            if slot.generation != generation || slot.scheduled != Some(deadline) {
                continue;
            }
            slot.scheduled = None;
            match &mut slot.state {
                SlotState::Up(a) => a.handle_timeout(now_ms),
                SlotState::Connecting(c) => {
                    if let ConnectProgress::Failed(e) = c.handle_timeout(now_ms) {
                        self.close_slot(index, CloseReason::ConnectFailed(e));
                        continue;
                    }
                }
                SlotState::Vacant => continue,
            }
            self.touched(index);
        }
    }

    /// Writes the next datagram to send into `buf` and gives its destination and length; `None`
    /// when nothing is due. `buf` holds at least the largest packet: the associations' `mtu`,
    /// `loopback_mtu` if a peer is on loopback, and 1 500 bytes (65 536 always suffice); a
    /// smaller one cannot carry a full DATA chunk, which then waits.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        if let Some((to, range)) = self.replies.pop_front() {
            let len = range.len();
            if buf.len() >= len {
                buf[..len].copy_from_slice(&self.reply_bytes[range]);
            }
            if self.replies.is_empty() {
                self.reply_bytes.clear();
            }
            if buf.len() >= len {
                return Some((to, len));
            }
        }
        while let Some(&handle) = self.transmit.front() {
            let Some(slot) = self.slot_mut(handle) else {
                self.transmit.pop_front();
                continue;
            };
            let sent = match &mut slot.state {
                SlotState::Up(a) => a.poll_transmit(buf).map(|n| (a.peer(), n)),
                SlotState::Connecting(c) => c.poll_transmit(buf).map(|n| (slot.key.0, n)),
                SlotState::Vacant => None,
            };
            if sent.is_some() {
                return sent;
            }
            slot.transmit_queued = false;
            let done = slot.closed;
            self.transmit.pop_front();
            if done {
                self.free_slot(handle.index);
            }
        }
        None
    }

    /// Gives every event since the last call to `f`, per association in order: the
    /// endpoint's (accepted, connected, failed, restarted) first, then the associations'
    /// messages and ends.
    pub fn poll_events(&mut self, mut f: impl FnMut(AssociationHandle, EndpointEvent<'_>)) {
        while let Some((handle, event)) = self.notices.pop_front() {
            f(handle, event);
        }
        while let Some(handle) = self.ready.pop_front() {
            let Some(slot) = self.slot_mut(handle) else {
                continue;
            };
            slot.events_queued = false;
            let SlotState::Up(association) = &mut slot.state else {
                continue;
            };
            let mut ended = None;
            while let Some(event) = association.poll_event() {
                match event {
                    Event::Message {
                        stream,
                        ppid,
                        bytes,
                    } => f(
                        handle,
                        EndpointEvent::Message {
                            stream,
                            ppid,
                            bytes,
                        },
                    ),
                    Event::Lost(reason) => ended = Some(CloseReason::Lost(reason)),
                    Event::ShutDown => ended = Some(CloseReason::ShutDown),
                }
            }
            if let Some(reason) = ended.filter(|_| !slot.closed) {
                slot.closed = true;
                let key = slot.key;
                self.by_peer.remove(&key);
                f(handle, EndpointEvent::Closed(reason));
                // Freed once its last packets (ABORT, SHUTDOWN COMPLETE) are sent.
                self.queue_transmit(handle);
            }
        }
    }

    /// After an input to slot `index`: it may have packets, events and a new deadline.
    fn touched(&mut self, index: u32) {
        let handle = self.handle_of(index);
        self.queue_transmit(handle);
        let slot = &mut self.slots[index as usize];
        if !slot.events_queued && matches!(slot.state, SlotState::Up(_)) {
            slot.events_queued = true;
            self.ready.push_back(handle);
        }
        self.schedule(index);
    }

    fn queue_transmit(&mut self, handle: AssociationHandle) {
        let slot = &mut self.slots[handle.index as usize];
        if !slot.transmit_queued {
            slot.transmit_queued = true;
            self.transmit.push_back(handle);
        }
    }

    /// Puts slot `index`'s deadline in the timer heap if it is earlier than the one there.
    fn schedule(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        let Some(deadline) = slot.timeout() else {
            return;
        };
        if slot.scheduled.is_some_and(|s| s <= deadline) {
            return;
        }
        slot.scheduled = Some(deadline);
        self.timers
            .push(Reverse((deadline, index, slot.generation)));
        // Stale entries pile up when deadlines keep moving earlier: rebuild from the slots.
        if self.timers.len() > 4 * self.slots.len() + 64 {
            self.timers = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.scheduled.map(|d| Reverse((d, i as u32, s.generation))))
                .collect();
        }
    }

    /// Ends slot `index` with `reason` at once (restart, failed or cancelled handshake): the
    /// event is raised, nothing more is sent for it.
    fn close_slot(&mut self, index: u32, reason: CloseReason) {
        let handle = self.handle_of(index);
        let key = self.slots[index as usize].key;
        self.by_peer.remove(&key);
        self.notices
            .push_back((handle, EndpointEvent::Closed(reason)));
        self.free_slot(index);
    }

    fn occupy(&mut self, key: PeerKey, state: SlotState) -> u32 {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::vacant());
            (self.slots.len() - 1) as u32
        });
        let slot = &mut self.slots[index as usize];
        slot.state = state;
        slot.key = key;
        self.by_peer.insert(key, index);
        index
    }

    fn free_slot(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        if matches!(slot.state, SlotState::Vacant) {
            return;
        }
        *slot = Slot {
            generation: slot.generation.wrapping_add(1),
            ..Slot::vacant()
        };
        self.free.push(index);
    }

    fn handle_of(&self, index: u32) -> AssociationHandle {
        AssociationHandle {
            index,
            generation: self.slots[index as usize].generation,
        }
    }

    fn slot(&self, handle: AssociationHandle) -> Option<&Slot> {
        self.slots
            .get(handle.index as usize)
            .filter(|s| s.generation == handle.generation)
    }

    fn slot_mut(&mut self, handle: AssociationHandle) -> Option<&mut Slot> {
        self.slots
            .get_mut(handle.index as usize)
            .filter(|s| s.generation == handle.generation)
    }
}
