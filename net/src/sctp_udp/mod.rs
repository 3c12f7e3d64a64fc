//! SCTP in user space, to be carried over UDP (RFC 6951; issue 20, `docs/sctp-over-udp.md`), all
//! sans-I/O: byte slices and the time in milliseconds in, byte slices, events and deadlines out.
//!
//! - `packet` reads and writes SCTP packets (RFC 4960 §3: the common header, chunks, INIT
//!   parameters, error causes) as byte slices without allocating, and computes and checks their
//!   CRC32c (§6.8).
//! - `handshake` is the passive side of association setup: it answers INITs with signed State
//!   Cookies and keeps no state until a valid COOKIE ECHO (§5.1) yields an [`Established`].
//! - `connect` is the active side: [`Connector`] sends the INIT and the COOKIE ECHO and ends in
//!   an [`Established`] as well.
//! - `association` runs an established association ([`Association`]): messages on streams,
//!   TSNs, SACKs, retransmission, congestion and flow control, heartbeats, SHUTDOWN and ABORT
//!   (§6 to §9).
//!
//! The UDP drivers that the design names are not built yet; nothing in the registrar or the
//! endpoint library uses this module.

mod association;
mod connect;
mod endpoint;
mod handshake;
mod packet;

/// The established association: [`Association`] and what it takes and gives.
pub use association::{
    Association, AssociationConfig, AssociationStats, DropReason, Event, LossReason, Received,
    SendError, Violation,
};
/// The active side of the handshake.
pub use connect::{ConnectConfig, ConnectError, ConnectIgnored, ConnectProgress, Connector};
/// Many associations over one UDP socket.
pub use endpoint::{
    AssociationHandle, CloseReason, DEFAULT_LOOPBACK_MTU, EndpointConfig, EndpointError,
    EndpointEvent, EndpointStats, SctpUdpEndpoint, destination_port, random_secret,
};
/// The passive side of the handshake.
pub use handshake::{
    COOKIE_LEN, CookieKeys, Established, Handshake, Ignored, PassiveConfig, respond,
};
/// The packet codec.
pub use packet::{
    AddressTypes, DataChunk, DuplicateTsns, GapAckBlock, GapAckBlocks, InitChunk, InitFields,
    InitParameter, InitParameters, SackChunk, SctpBuildError, SctpChunk, SctpChunkBody, SctpChunks,
    SctpErrorCause, SctpErrorCauses, SctpPacket, SctpPacketBuilder, SctpPacketError, UnknownChunk,
    UnknownParameter, UnrecognizedAction,
};
