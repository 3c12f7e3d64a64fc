//! SCTP in user space, to be carried over UDP (RFC 6951; issue 20, `docs/sctp-over-udp.md`): so
//! far only its packet layer, `packet`, which reads and writes SCTP packets (RFC 4960 §3: the
//! common header, chunks, INIT parameters, error causes) as byte slices without allocating, and
//! computes and checks their CRC32c (§6.8). The association (handshake with a stateless cookie,
//! TSNs, SACKs, retransmission, congestion control) and the UDP drivers that the design names
//! are not built yet; nothing in the registrar or the endpoint library uses this module.

mod packet;

pub use packet::{
    AddressTypes, DataChunk, DuplicateTsns, GapAckBlock, GapAckBlocks, InitChunk, InitFields,
    InitParameter, InitParameters, SackChunk, SctpBuildError, SctpChunk, SctpChunkBody, SctpChunks,
    SctpErrorCause, SctpErrorCauses, SctpPacket, SctpPacketBuilder, SctpPacketError, UnknownChunk,
    UnknownParameter, UnrecognizedAction,
};
