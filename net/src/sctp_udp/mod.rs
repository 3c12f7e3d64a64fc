//! SCTP in user space, to be carried over UDP (RFC 6951; issue 20, `docs/sctp-over-udp.md`). So
//! far: its packet layer, `packet`, which reads and writes SCTP packets (RFC 4960 §3: the common
//! header, chunks, INIT parameters, error causes) as byte slices without allocating, and computes
//! and checks their CRC32c (§6.8); and the passive side of the handshake, `handshake`, which
//! answers INITs with signed State Cookies and keeps no state until a valid COOKIE ECHO (§5.1).
//! The association (TSNs, SACKs, retransmission, congestion control) and the UDP drivers that the
//! design names are not built yet; nothing in the registrar or the endpoint library uses this
//! module.

mod handshake;
mod packet;

pub use handshake::{
    COOKIE_LEN, CookieKeys, Established, Handshake, Ignored, PassiveConfig, respond,
};
pub use packet::{
    AddressTypes, DataChunk, DuplicateTsns, GapAckBlock, GapAckBlocks, InitChunk, InitFields,
    InitParameter, InitParameters, SackChunk, SctpBuildError, SctpChunk, SctpChunkBody, SctpChunks,
    SctpErrorCause, SctpErrorCauses, SctpPacket, SctpPacketBuilder, SctpPacketError, UnknownChunk,
    UnknownParameter, UnrecognizedAction,
};
