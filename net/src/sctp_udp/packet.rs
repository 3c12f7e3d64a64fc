//! SCTP packets as bytes (RFC 4960 §3, §6.8): the common header and the chunks of a received
//! packet read in place ([`SctpPacket`], [`SctpChunk`], [`SctpChunkBody`]), a packet written
//! chunk by chunk into the caller's buffer ([`SctpPacketBuilder`]), and the CRC32c over both.
//! Nothing here allocates: views borrow the packet, iterators walk it, the builder writes into the
//! slice it is given. Every length field is checked before it is used, and a lie is a typed
//! [`SctpPacketError`], never a panic or a read past the end.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The common header's size: ports, verification tag, checksum (§3.1).
const HEADER_LEN: usize = 12;
/// Where the checksum is in the common header (§3.1).
const CHECKSUM_AT: usize = 8;
/// A chunk's type, flags and length (§3.2); also the size of a parameter's type and length
/// (§3.2.1) and of an error cause's code and length (§3.3.10).
const TLV_HEADER_LEN: usize = 4;

// Chunk types (§3.2).
const DATA: u8 = 0;
const INIT: u8 = 1;
const INIT_ACK: u8 = 2;
const SACK: u8 = 3;
const HEARTBEAT: u8 = 4;
const HEARTBEAT_ACK: u8 = 5;
const ABORT: u8 = 6;
const SHUTDOWN: u8 = 7;
const SHUTDOWN_ACK: u8 = 8;
const ERROR: u8 = 9;
const COOKIE_ECHO: u8 = 10;
const COOKIE_ACK: u8 = 11;
const SHUTDOWN_COMPLETE: u8 = 14;

// Parameter types (§3.3.2.1, §3.3.3.1, §3.3.5).
const HEARTBEAT_INFO: u16 = 1;
const IPV4_ADDRESS: u16 = 5;
const IPV6_ADDRESS: u16 = 6;
const STATE_COOKIE: u16 = 7;
const COOKIE_PRESERVATIVE: u16 = 9;
const SUPPORTED_ADDRESS_TYPES: u16 = 12;

// DATA chunk flags (§3.3.1; I from RFC 7053 §4.1).
const FLAG_ENDING: u8 = 0x01;
const FLAG_BEGINNING: u8 = 0x02;
const FLAG_UNORDERED: u8 = 0x04;
const FLAG_IMMEDIATE: u8 = 0x08;
/// The T bit of ABORT and SHUTDOWN COMPLETE (§3.3.7, §3.3.13).
const FLAG_TAG_REFLECTED: u8 = 0x01;

/// The DATA chunk's fixed fields: TSN, stream identifier, stream sequence number, PPID (§3.3.1).
const DATA_FIXED_LEN: usize = 12;
/// The fixed fields of INIT and INIT ACK (§3.3.2, §3.3.3).
const INIT_FIXED_LEN: usize = 16;
/// The SACK chunk's fixed fields, before the gap ack blocks (§3.3.4).
const SACK_FIXED_LEN: usize = 12;

/// `len` rounded up to a multiple of 4: chunks and parameters are padded so (§3.2, §3.2.1).
const fn padded(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// The CRC32c of `packet` with its checksum field taken as zero (§6.8, Appendix B): the value
/// whose bytes the field holds least significant first.
fn packet_crc32c(packet: &[u8]) -> u32 {
    let (head, rest) = packet.split_at(CHECKSUM_AT.min(packet.len()));
    let (field, tail) = rest.split_at(4.min(rest.len()));
    let crc = crc32c::crc32c(head);
    let crc = crc32c::crc32c_append(crc, &[0; 4][..field.len()]);
    crc32c::crc32c_append(crc, tail)
}

/// Why a packet, or one of its chunks, parameters or error causes, was refused.
///
/// Offsets count bytes from the start of the packet (chunk framing) or of the chunk (parameters
/// and error causes, so the first parameter of an INIT is at 20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SctpPacketError {
    /// Shorter than the 12-byte common header (§3.1).
    TooShort {
        /// The packet's length.
        len: usize,
    },
    /// 1 to 3 bytes are left after the last chunk: too few for a chunk header (§3.2).
    ChunkHeaderTruncated {
        /// Where the stray bytes start.
        offset: usize,
    },
    /// A chunk's length field is below 4, the size of its own header (§3.2).
    ChunkLengthTooSmall {
        /// Where the chunk starts.
        offset: usize,
        /// Its length field.
        length: u16,
    },
    /// A chunk's length field runs past the end of the packet (§3.2).
    ChunkPastEnd {
        /// Where the chunk starts.
        offset: usize,
        /// Its length field.
        length: u16,
        /// The bytes left in the packet from `offset` on.
        remaining: usize,
    },
    /// The packet ends inside the zero padding that takes a chunk to a multiple of 4 bytes (§3.2).
    ChunkPaddingMissing {
        /// Where the chunk starts.
        offset: usize,
        /// Its length field.
        length: u16,
    },
    /// The checksum field does not hold the packet's CRC32c (§6.8).
    ChecksumMismatch {
        /// The CRC32c the field holds.
        stored: u32,
        /// The CRC32c of the packet.
        computed: u32,
    },
    /// A chunk's length does not fit its type: shorter than its fixed fields, other than the one
    /// size a fixed-size chunk has, or (SACK) not what its counts of gap blocks and duplicate
    /// TSNs make (§3.3).
    ChunkValueLength {
        /// The chunk type.
        chunk_type: u8,
        /// Its length field.
        length: u16,
    },
    /// 1 to 3 bytes are left in a chunk after its last parameter or error cause: too few for a
    /// parameter header (§3.2.1).
    ParameterHeaderTruncated {
        /// Where the stray bytes start, from the start of the chunk.
        offset: usize,
    },
    /// A parameter's or error cause's length is below 4, runs past the end of its chunk, or
    /// leaves part of its padding out of the chunk although another parameter follows (§3.2.1).
    ParameterLength {
        /// Where the parameter starts, from the start of the chunk.
        offset: usize,
        /// Its length field.
        length: u16,
        /// The bytes left in the chunk from `offset` on.
        remaining: usize,
    },
    /// A parameter of a fixed size (IPv4 or IPv6 address, Cookie Preservative) with another
    /// length, or a Supported Address Types parameter with half an address type (§3.3.2.1).
    ParameterValueLength {
        /// The parameter type.
        param_type: u16,
        /// Its length field.
        length: u16,
    },
    /// A chunk that carries exactly one parameter of one type (HEARTBEAT and HEARTBEAT ACK: the
    /// Heartbeat Info parameter, type 1, §3.3.5-6) carries another type, or more than one.
    UnexpectedParameter {
        /// The chunk type.
        chunk_type: u8,
        /// The type of the parameter found.
        param_type: u16,
    },
}

impl fmt::Display for SctpPacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len } => write!(
                f,
                "SCTP packet of {len} bytes is shorter than the 12-byte common header (RFC 4960 \
                 §3.1)"
            ),
            Self::ChunkHeaderTruncated { offset } => write!(
                f,
                "SCTP packet has stray bytes at {offset}, too few for a chunk header (RFC 4960 \
                 §3.2)"
            ),
            Self::ChunkLengthTooSmall { offset, length } => write!(
                f,
                "SCTP chunk at {offset} has length {length}, below its 4-byte header (RFC 4960 \
                 §3.2)"
            ),
            Self::ChunkPastEnd {
                offset,
                length,
                remaining,
            } => write!(
                f,
                "SCTP chunk at {offset} has length {length}, but only {remaining} bytes are left \
                 in the packet (RFC 4960 §3.2)"
            ),
            Self::ChunkPaddingMissing { offset, length } => write!(
                f,
                "SCTP chunk at {offset} of length {length} lacks the padding to a multiple of 4 \
                 bytes (RFC 4960 §3.2)"
            ),
            Self::ChecksumMismatch { stored, computed } => write!(
                f,
                "SCTP packet's checksum is {stored:#010x}, its CRC32c {computed:#010x} (RFC 4960 \
                 §6.8)"
            ),
            Self::ChunkValueLength { chunk_type, length } => write!(
                f,
                "SCTP chunk of type {chunk_type} cannot have length {length} (RFC 4960 §3.3)"
            ),
            Self::ParameterHeaderTruncated { offset } => write!(
                f,
                "SCTP chunk has stray bytes at {offset}, too few for a parameter header (RFC \
                 4960 §3.2.1)"
            ),
            Self::ParameterLength {
                offset,
                length,
                remaining,
            } => write!(
                f,
                "SCTP parameter at {offset} of its chunk has length {length}, with {remaining} \
                 bytes left in the chunk (RFC 4960 §3.2.1)"
            ),
            Self::ParameterValueLength { param_type, length } => write!(
                f,
                "SCTP parameter of type {param_type} cannot have length {length} (RFC 4960 \
                 §3.3.2.1)"
            ),
            Self::UnexpectedParameter {
                chunk_type,
                param_type,
            } => write!(
                f,
                "SCTP chunk of type {chunk_type} carries a parameter of type {param_type} where \
                 one Heartbeat Info parameter belongs (RFC 4960 §3.3.5)"
            ),
        }
    }
}

impl std::error::Error for SctpPacketError {}

/// Why [`SctpPacketBuilder`] could not write a packet or a chunk; the packet written so far is
/// left as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SctpBuildError {
    /// The buffer has no room for the common header or for the chunk, padding included.
    NoRoom {
        /// The bytes the header or chunk needs.
        needed: usize,
        /// The bytes left in the buffer.
        available: usize,
    },
    /// The chunk is longer than its 16-bit length field can say (§3.2).
    TooLong {
        /// The chunk's length, header included, padding not.
        length: usize,
    },
}

impl fmt::Display for SctpBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoRoom { needed, available } => write!(
                f,
                "no room for an SCTP chunk of {needed} bytes: {available} bytes are left in the \
                 packet buffer"
            ),
            Self::TooLong { length } => write!(
                f,
                "an SCTP chunk of {length} bytes is longer than its length field can say (RFC \
                 4960 §3.2)"
            ),
        }
    }
}

impl std::error::Error for SctpBuildError {}

/// What to do with a chunk or parameter of an unrecognized type: the two high bits of the type
/// say (§3.2 for chunks, §3.2.1 for parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnrecognizedAction {
    /// `00`: stop; a chunk discards the packet, a parameter the rest of its chunk's parameters.
    Stop,
    /// `01`: stop as [`UnrecognizedAction::Stop`] and report it (an ERROR chunk with an
    /// Unrecognized Chunk Type cause, or an Unrecognized Parameter).
    StopAndReport,
    /// `10`: skip it and go on with the next.
    Skip,
    /// `11`: skip it, go on, and report it.
    SkipAndReport,
}

impl UnrecognizedAction {
    /// The action the two high bits `bits` (0 to 3) of a type name.
    const fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0b00 => Self::Stop,
            0b01 => Self::StopAndReport,
            0b10 => Self::Skip,
            _ => Self::SkipAndReport,
        }
    }

    /// Whether processing goes on after the chunk or parameter.
    pub const fn skips(self) -> bool {
        matches!(self, Self::Skip | Self::SkipAndReport)
    }

    /// Whether the peer is to be told about it.
    pub const fn reports(self) -> bool {
        matches!(self, Self::StopAndReport | Self::SkipAndReport)
    }
}

/// A received SCTP packet, read in place: the common header (§3.1) and the chunks after it,
/// whose framing (every chunk's length and padding, §3.2) [`SctpPacket::parse`] has checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SctpPacket<'a> {
    /// The common header.
    header: &'a [u8; HEADER_LEN],
    /// The whole packet, header included.
    bytes: &'a [u8],
}

impl<'a> SctpPacket<'a> {
    /// Reads `bytes` as one SCTP packet and checks the framing of all its chunks; the chunks'
    /// values are read later, by [`SctpChunk::body`], and the checksum by
    /// [`SctpPacket::verify_checksum`]. A packet without chunks is framed correctly.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, SctpPacketError> {
        let Some((header, _)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(SctpPacketError::TooShort { len: bytes.len() });
        };
        let mut offset = HEADER_LEN;
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            let &[_, _, l0, l1, ..] = rest else {
                return Err(SctpPacketError::ChunkHeaderTruncated { offset });
            };
            let length = u16::from_be_bytes([l0, l1]);
            let len = usize::from(length);
            // §3.2: the length counts the chunk's header and value, not its padding.
            if len < TLV_HEADER_LEN {
                return Err(SctpPacketError::ChunkLengthTooSmall { offset, length });
            }
            if len > rest.len() {
                return Err(SctpPacketError::ChunkPastEnd {
                    offset,
                    length,
                    remaining: rest.len(),
                });
            }
            // §3.2: every chunk, the last included, is padded to a multiple of 4 bytes.
            if padded(len) > rest.len() {
                return Err(SctpPacketError::ChunkPaddingMissing { offset, length });
            }
            offset += padded(len);
        }
        Ok(Self { header, bytes })
    }

    /// The sender's SCTP port.
    pub fn source_port(&self) -> u16 {
        let h = self.header;
        u16::from_be_bytes([h[0], h[1]])
    }

    /// The receiver's SCTP port.
    pub fn destination_port(&self) -> u16 {
        let h = self.header;
        u16::from_be_bytes([h[2], h[3]])
    }

    /// The verification tag (§8.5: the receiver's own tag, except in the packets of §8.5.1).
    pub fn verification_tag(&self) -> u32 {
        let h = self.header;
        u32::from_be_bytes([h[4], h[5], h[6], h[7]])
    }

    /// The CRC32c the checksum field holds, as [`SctpPacket::computed_checksum`] gives it: the
    /// field's bytes least significant first (Appendix B). Tools that print the field as a
    /// number in network byte order (tshark) show it byte-swapped.
    pub fn checksum(&self) -> u32 {
        let h = self.header;
        u32::from_le_bytes([h[8], h[9], h[10], h[11]])
    }

    /// The packet's CRC32c, over all of it with the checksum field taken as zero (§6.8).
    pub fn computed_checksum(&self) -> u32 {
        packet_crc32c(self.bytes)
    }

    /// Checks the checksum field against the packet's CRC32c (§6.8: a packet that fails is
    /// discarded silently).
    pub fn verify_checksum(&self) -> Result<(), SctpPacketError> {
        let (stored, computed) = (self.checksum(), self.computed_checksum());
        if stored == computed {
            Ok(())
        } else {
            Err(SctpPacketError::ChecksumMismatch { stored, computed })
        }
    }

    /// The chunks, in the order of the packet.
    pub fn chunks(&self) -> SctpChunks<'a> {
        SctpChunks {
            rest: self.bytes.get(HEADER_LEN..).unwrap_or_default(),
        }
    }

    /// The packet's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// The chunks of an [`SctpPacket`], in order.
#[derive(Clone, Debug)]
pub struct SctpChunks<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SctpChunks<'a> {
    type Item = SctpChunk<'a>;

    fn next(&mut self) -> Option<SctpChunk<'a>> {
        let &[_, _, l0, l1, ..] = self.rest else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let bytes = self.rest.get(..len)?;
        self.rest = self.rest.get(padded(len)..).unwrap_or_default();
        Some(SctpChunk { bytes })
    }
}

/// One chunk of a packet: type, flags and value (§3.2), the padding left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SctpChunk<'a> {
    /// Header and value (at least the 4 bytes of the header: `SctpPacket::parse` checked).
    bytes: &'a [u8],
}

impl<'a> SctpChunk<'a> {
    /// The chunk type.
    pub fn chunk_type(&self) -> u8 {
        self.bytes.first().copied().unwrap_or_default()
    }

    /// The chunk flags.
    pub fn flags(&self) -> u8 {
        self.bytes.get(1).copied().unwrap_or_default()
    }

    /// The chunk value: what follows the 4-byte header, without the padding.
    pub fn value(&self) -> &'a [u8] {
        self.bytes.get(TLV_HEADER_LEN..).unwrap_or_default()
    }

    /// The chunk's bytes, header and value, without the padding.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The chunk's fields by its type (§3.3), every length in it checked; a type without a view
    /// here is [`SctpChunkBody::Unknown`]. The parameters and error causes inside are checked as
    /// their iterators reach them.
    pub fn body(&self) -> Result<SctpChunkBody<'a>, SctpPacketError> {
        let (chunk_type, flags, value) = (self.chunk_type(), self.flags(), self.value());
        let wrong_length = SctpPacketError::ChunkValueLength {
            chunk_type,
            length: u16::try_from(self.bytes.len()).unwrap_or(u16::MAX),
        };
        let exactly = |len: usize| {
            if value.len() == len {
                Ok(())
            } else {
                Err(wrong_length)
            }
        };
        Ok(match chunk_type {
            // §3.3.1. A DATA chunk without user data parses: answering it with an ABORT (the
            // "No User Data" cause, §6.2) is the association's.
            DATA => {
                let Some((f, user_data)) = value.split_first_chunk::<DATA_FIXED_LEN>() else {
                    return Err(wrong_length);
                };
                SctpChunkBody::Data(DataChunk {
                    tsn: u32::from_be_bytes([f[0], f[1], f[2], f[3]]),
                    stream_id: u16::from_be_bytes([f[4], f[5]]),
                    stream_seq: u16::from_be_bytes([f[6], f[7]]),
                    ppid: u32::from_be_bytes([f[8], f[9], f[10], f[11]]),
                    unordered: flags & FLAG_UNORDERED != 0,
                    beginning: flags & FLAG_BEGINNING != 0,
                    ending: flags & FLAG_ENDING != 0,
                    immediate: flags & FLAG_IMMEDIATE != 0,
                    user_data,
                })
            }
            // §3.3.2, §3.3.3: the same fixed fields, then parameters.
            INIT | INIT_ACK => {
                let chunk = InitChunk::parse(value).ok_or(wrong_length)?;
                if chunk_type == INIT {
                    SctpChunkBody::Init(chunk)
                } else {
                    SctpChunkBody::InitAck(chunk)
                }
            }
            // §3.3.4: the counts of gap ack blocks and duplicate TSNs must fill the chunk.
            SACK => {
                let Some((f, rest)) = value.split_first_chunk::<SACK_FIXED_LEN>() else {
                    return Err(wrong_length);
                };
                let gaps = 4 * usize::from(u16::from_be_bytes([f[8], f[9]]));
                let dups = 4 * usize::from(u16::from_be_bytes([f[10], f[11]]));
                if rest.len() != gaps + dups {
                    return Err(wrong_length);
                }
                let (gap_blocks, duplicate_tsns) = rest.split_at(gaps);
                SctpChunkBody::Sack(SackChunk {
                    cumulative_tsn_ack: u32::from_be_bytes([f[0], f[1], f[2], f[3]]),
                    a_rwnd: u32::from_be_bytes([f[4], f[5], f[6], f[7]]),
                    gap_blocks: GapAckBlocks { bytes: gap_blocks },
                    duplicate_tsns: DuplicateTsns {
                        bytes: duplicate_tsns,
                    },
                })
            }
            // §3.3.5, §3.3.6: one Heartbeat Info parameter, echoed by the ACK as it came.
            HEARTBEAT | HEARTBEAT_ACK => {
                let info = heartbeat_info(chunk_type, value, wrong_length)?;
                if chunk_type == HEARTBEAT {
                    SctpChunkBody::Heartbeat { info }
                } else {
                    SctpChunkBody::HeartbeatAck { info }
                }
            }
            // §3.3.7: the T bit, then zero or more error causes.
            ABORT => SctpChunkBody::Abort {
                tag_reflected: flags & FLAG_TAG_REFLECTED != 0,
                causes: SctpErrorCauses::new(value),
            },
            // §3.3.8.
            SHUTDOWN => {
                let &[c0, c1, c2, c3] = value else {
                    return Err(wrong_length);
                };
                SctpChunkBody::Shutdown {
                    cumulative_tsn_ack: u32::from_be_bytes([c0, c1, c2, c3]),
                }
            }
            // §3.3.9.
            SHUTDOWN_ACK => exactly(0).map(|()| SctpChunkBody::ShutdownAck)?,
            // §3.3.10: one or more error causes (none is left to the association to judge).
            ERROR => SctpChunkBody::Error {
                causes: SctpErrorCauses::new(value),
            },
            // §3.3.11: the cookie as the INIT ACK's State Cookie parameter carried it.
            COOKIE_ECHO => SctpChunkBody::CookieEcho { cookie: value },
            // §3.3.12.
            COOKIE_ACK => exactly(0).map(|()| SctpChunkBody::CookieAck)?,
            // §3.3.13: the T bit only.
            SHUTDOWN_COMPLETE => exactly(0).map(|()| SctpChunkBody::ShutdownComplete {
                tag_reflected: flags & FLAG_TAG_REFLECTED != 0,
            })?,
            _ => SctpChunkBody::Unknown(UnknownChunk {
                chunk_type,
                flags,
                value,
            }),
        })
    }
}

/// The Heartbeat Info parameter's value: the chunk's one parameter, of type 1 (§3.3.5).
fn heartbeat_info(
    chunk_type: u8,
    value: &[u8],
    wrong_length: SctpPacketError,
) -> Result<&[u8], SctpPacketError> {
    let mut params = Tlvs::new(value, TLV_HEADER_LEN);
    let (param_type, info) = params.next().ok_or(wrong_length)??;
    if param_type != HEARTBEAT_INFO {
        return Err(SctpPacketError::UnexpectedParameter {
            chunk_type,
            param_type,
        });
    }
    match params.next() {
        None => Ok(info),
        Some(Ok((param_type, _))) => Err(SctpPacketError::UnexpectedParameter {
            chunk_type,
            param_type,
        }),
        Some(Err(e)) => Err(e),
    }
}

/// A chunk's fields by its type (§3.3), as [`SctpChunk::body`] reads them and
/// [`SctpPacketBuilder::push`] writes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SctpChunkBody<'a> {
    /// DATA (§3.3.1).
    Data(DataChunk<'a>),
    /// INIT (§3.3.2).
    Init(InitChunk<'a>),
    /// INIT ACK (§3.3.3).
    InitAck(InitChunk<'a>),
    /// SACK (§3.3.4).
    Sack(SackChunk<'a>),
    /// HEARTBEAT (§3.3.5).
    Heartbeat {
        /// The Heartbeat Info parameter's value (sender-specific; the ACK carries it back).
        info: &'a [u8],
    },
    /// HEARTBEAT ACK (§3.3.6).
    HeartbeatAck {
        /// The Heartbeat Info parameter's value, as the HEARTBEAT carried it.
        info: &'a [u8],
    },
    /// ABORT (§3.3.7).
    Abort {
        /// The T bit: the verification tag is the sender's own, reflected (§8.4, §8.5.1).
        tag_reflected: bool,
        /// The error causes, if any.
        causes: SctpErrorCauses<'a>,
    },
    /// SHUTDOWN (§3.3.8).
    Shutdown {
        /// The last TSN received in sequence.
        cumulative_tsn_ack: u32,
    },
    /// SHUTDOWN ACK (§3.3.9).
    ShutdownAck,
    /// ERROR (§3.3.10).
    Error {
        /// The error causes.
        causes: SctpErrorCauses<'a>,
    },
    /// COOKIE ECHO (§3.3.11).
    CookieEcho {
        /// The State Cookie of the INIT ACK.
        cookie: &'a [u8],
    },
    /// COOKIE ACK (§3.3.12).
    CookieAck,
    /// SHUTDOWN COMPLETE (§3.3.13).
    ShutdownComplete {
        /// The T bit, as in ABORT.
        tag_reflected: bool,
    },
    /// A chunk type without a view here (ECN's, AUTH, ASCONF, FORWARD TSN, RE-CONFIG, ...).
    Unknown(UnknownChunk<'a>),
}

/// A DATA chunk (§3.3.1): one user message, or a fragment of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataChunk<'a> {
    /// The transmission sequence number.
    pub tsn: u32,
    /// The stream identifier.
    pub stream_id: u16,
    /// The stream sequence number (the same for all fragments of a message).
    pub stream_seq: u16,
    /// The payload protocol identifier (ASAP 11, ENRP 12).
    pub ppid: u32,
    /// U: unordered, delivered without regard to the stream sequence number.
    pub unordered: bool,
    /// B: the first fragment of a message.
    pub beginning: bool,
    /// E: the last fragment of a message.
    pub ending: bool,
    /// I: the sender asks for a SACK without delay (RFC 7053 §4.1).
    pub immediate: bool,
    /// The user data.
    pub user_data: &'a [u8],
}

impl DataChunk<'_> {
    /// The chunk flags for U, B, E and I.
    fn flags(&self) -> u8 {
        let bit = |set: bool, bit: u8| if set { bit } else { 0 };
        bit(self.unordered, FLAG_UNORDERED)
            | bit(self.beginning, FLAG_BEGINNING)
            | bit(self.ending, FLAG_ENDING)
            | bit(self.immediate, FLAG_IMMEDIATE)
    }
}

/// The fixed fields of an INIT or INIT ACK (§3.3.2, §3.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitFields {
    /// The tag the sender wants in the verification tag of every packet sent to it (0 is an
    /// error the association answers with an ABORT).
    pub initiate_tag: u32,
    /// The sender's advertised receiver window credit, in bytes.
    pub a_rwnd: u32,
    /// The number of outbound streams the sender wants.
    pub outbound_streams: u16,
    /// The most inbound streams the sender allows.
    pub inbound_streams: u16,
    /// The TSN of the sender's first DATA chunk.
    pub initial_tsn: u32,
}

impl InitFields {
    /// Writes the fields in wire order.
    fn write(&self, w: &mut Writer<'_>) {
        w.put(&self.initiate_tag.to_be_bytes());
        w.put(&self.a_rwnd.to_be_bytes());
        w.put(&self.outbound_streams.to_be_bytes());
        w.put(&self.inbound_streams.to_be_bytes());
        w.put(&self.initial_tsn.to_be_bytes());
    }
}

/// An INIT or INIT ACK (§3.3.2, §3.3.3): the fixed fields and the variable parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitChunk<'a> {
    /// Tag, window, streams and initial TSN.
    pub fields: InitFields,
    /// The parameters after the fixed fields.
    pub params: InitParameters<'a>,
}

impl<'a> InitChunk<'a> {
    /// The fields of an INIT or INIT ACK whose value is `value`, or `None` if it is too short.
    fn parse(value: &'a [u8]) -> Option<Self> {
        let (f, params) = value.split_first_chunk::<INIT_FIXED_LEN>()?;
        Some(Self {
            fields: InitFields {
                initiate_tag: u32::from_be_bytes([f[0], f[1], f[2], f[3]]),
                a_rwnd: u32::from_be_bytes([f[4], f[5], f[6], f[7]]),
                outbound_streams: u16::from_be_bytes([f[8], f[9]]),
                inbound_streams: u16::from_be_bytes([f[10], f[11]]),
                initial_tsn: u32::from_be_bytes([f[12], f[13], f[14], f[15]]),
            },
            params: InitParameters {
                tlvs: Tlvs::new(params, TLV_HEADER_LEN + INIT_FIXED_LEN),
            },
        })
    }
}

/// A parameter of an INIT or INIT ACK (§3.3.2.1, §3.3.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitParameter<'a> {
    /// An IPv4 address of the sender (type 5).
    Ipv4Address(Ipv4Addr),
    /// An IPv6 address of the sender (type 6).
    Ipv6Address(Ipv6Addr),
    /// The State Cookie of an INIT ACK (type 7).
    StateCookie(&'a [u8]),
    /// The Cookie Preservative of an INIT (type 9): the cookie life-span increment asked for,
    /// in milliseconds.
    CookiePreservative(u32),
    /// The address types the sender of an INIT supports (type 12).
    SupportedAddressTypes(AddressTypes<'a>),
    /// Any other parameter type, as it came (ECN Capable, Forward-TSN Supported, Supported
    /// Extensions, Unrecognized Parameter, AUTH's, ...).
    Unknown(UnknownParameter<'a>),
}

impl InitParameter<'_> {
    /// The parameter type.
    pub fn param_type(&self) -> u16 {
        match self {
            Self::Ipv4Address(_) => IPV4_ADDRESS,
            Self::Ipv6Address(_) => IPV6_ADDRESS,
            Self::StateCookie(_) => STATE_COOKIE,
            Self::CookiePreservative(_) => COOKIE_PRESERVATIVE,
            Self::SupportedAddressTypes(_) => SUPPORTED_ADDRESS_TYPES,
            Self::Unknown(p) => p.param_type,
        }
    }

    /// The parameter value's length.
    fn value_len(&self) -> usize {
        match self {
            Self::Ipv4Address(_) | Self::CookiePreservative(_) => 4,
            Self::Ipv6Address(_) => 16,
            Self::StateCookie(cookie) => cookie.len(),
            Self::SupportedAddressTypes(types) => types.bytes.len(),
            Self::Unknown(p) => p.value.len(),
        }
    }

    /// Writes the parameter value.
    fn write_value(&self, w: &mut Writer<'_>) {
        match self {
            Self::Ipv4Address(addr) => w.put(&addr.octets()),
            Self::Ipv6Address(addr) => w.put(&addr.octets()),
            Self::StateCookie(cookie) => w.put(cookie),
            Self::CookiePreservative(increment) => w.put(&increment.to_be_bytes()),
            Self::SupportedAddressTypes(types) => w.put(types.bytes),
            Self::Unknown(p) => w.put(p.value),
        }
    }
}

/// The parameters of an INIT or INIT ACK, in order; a length lie ends the iteration with its
/// error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitParameters<'a> {
    tlvs: Tlvs<'a>,
}

impl<'a> InitParameters<'a> {
    /// The parameters' bytes not iterated yet, padding between them included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.tlvs.rest
    }

    /// Ends the iteration with `e`.
    fn fail(&mut self, e: SctpPacketError) -> Option<Result<InitParameter<'a>, SctpPacketError>> {
        self.tlvs.rest = &[];
        Some(Err(e))
    }
}

impl<'a> Iterator for InitParameters<'a> {
    type Item = Result<InitParameter<'a>, SctpPacketError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (param_type, value) = match self.tlvs.next()? {
            Ok(tlv) => tlv,
            Err(e) => return Some(Err(e)),
        };
        let wrong_length = SctpPacketError::ParameterValueLength {
            param_type,
            length: u16::try_from(TLV_HEADER_LEN + value.len()).unwrap_or(u16::MAX),
        };
        let param = match (param_type, value) {
            (IPV4_ADDRESS, &[a, b, c, d]) => InitParameter::Ipv4Address(Ipv4Addr::new(a, b, c, d)),
            (IPV6_ADDRESS, _) => match <[u8; 16]>::try_from(value) {
                Ok(octets) => InitParameter::Ipv6Address(Ipv6Addr::from(octets)),
                Err(_) => return self.fail(wrong_length),
            },
            (STATE_COOKIE, _) => InitParameter::StateCookie(value),
            (COOKIE_PRESERVATIVE, &[a, b, c, d]) => {
                InitParameter::CookiePreservative(u32::from_be_bytes([a, b, c, d]))
            }
            (SUPPORTED_ADDRESS_TYPES, _) => match AddressTypes::new(value) {
                Some(types) => InitParameter::SupportedAddressTypes(types),
                None => return self.fail(wrong_length),
            },
            (IPV4_ADDRESS | COOKIE_PRESERVATIVE, _) => return self.fail(wrong_length),
            _ => InitParameter::Unknown(UnknownParameter { param_type, value }),
        };
        Some(Ok(param))
    }
}

/// The value of a Supported Address Types parameter (§3.3.2.1): address types of 16 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressTypes<'a> {
    /// An even number of bytes.
    bytes: &'a [u8],
}

impl<'a> AddressTypes<'a> {
    /// IPv4 (type 5) and IPv6 (type 6).
    pub const IPV4_AND_IPV6: AddressTypes<'static> = AddressTypes {
        bytes: &[0, 5, 0, 6],
    };

    /// The address types in `bytes` (16 bits each, network byte order), or `None` for an odd
    /// number of bytes.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        bytes.len().is_multiple_of(2).then_some(Self { bytes })
    }

    /// The address types (5 IPv4, 6 IPv6, 11 host name).
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        self.bytes
            .chunks_exact(2)
            .map(|t| u16::from_be_bytes([t[0], t[1]]))
    }
}

/// A parameter of a type without a view here, kept as it came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownParameter<'a> {
    /// The parameter type.
    pub param_type: u16,
    /// The parameter value, without padding.
    pub value: &'a [u8],
}

impl UnknownParameter<'_> {
    /// What the receiver of an unrecognized parameter of this type does (§3.2.1).
    pub fn action(&self) -> UnrecognizedAction {
        UnrecognizedAction::from_bits((self.param_type >> 14) as u8)
    }
}

/// A SACK chunk (§3.3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SackChunk<'a> {
    /// The last TSN received in sequence.
    pub cumulative_tsn_ack: u32,
    /// The sender's advertised receiver window credit, in bytes.
    pub a_rwnd: u32,
    /// The blocks of TSNs received beyond the cumulative ack.
    pub gap_blocks: GapAckBlocks<'a>,
    /// The TSNs received more than once since the last SACK.
    pub duplicate_tsns: DuplicateTsns<'a>,
}

/// A gap ack block (§3.3.4): the TSNs from `cumulative_tsn_ack + start` to
/// `cumulative_tsn_ack + end` were received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GapAckBlock {
    /// The block's first TSN, as an offset from the cumulative TSN ack.
    pub start: u16,
    /// The block's last TSN, as an offset from the cumulative TSN ack.
    pub end: u16,
}

/// The gap ack blocks of a SACK, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GapAckBlocks<'a> {
    /// A multiple of 4 bytes.
    bytes: &'a [u8],
}

impl Iterator for GapAckBlocks<'_> {
    type Item = GapAckBlock;

    fn next(&mut self) -> Option<GapAckBlock> {
        let (&[s0, s1, e0, e1], rest) = self.bytes.split_first_chunk::<4>()?;
        self.bytes = rest;
        Some(GapAckBlock {
            start: u16::from_be_bytes([s0, s1]),
            end: u16::from_be_bytes([e0, e1]),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.bytes.len() / 4, Some(self.bytes.len() / 4))
    }
}

impl ExactSizeIterator for GapAckBlocks<'_> {}

/// The duplicate TSNs of a SACK, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateTsns<'a> {
    /// A multiple of 4 bytes.
    bytes: &'a [u8],
}

impl Iterator for DuplicateTsns<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let (tsn, rest) = self.bytes.split_first_chunk::<4>()?;
        self.bytes = rest;
        Some(u32::from_be_bytes(*tsn))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.bytes.len() / 4, Some(self.bytes.len() / 4))
    }
}

impl ExactSizeIterator for DuplicateTsns<'_> {}

/// An error cause of an ABORT or ERROR chunk (§3.3.10), its information kept as it came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SctpErrorCause<'a> {
    /// The cause code (§3.3.10.1-13: 1 invalid stream identifier, ... 13 protocol violation).
    pub code: u16,
    /// The cause-specific information, without padding.
    pub info: &'a [u8],
}

/// The error causes of an ABORT or ERROR chunk, in order; a length lie ends the iteration with
/// its error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SctpErrorCauses<'a> {
    tlvs: Tlvs<'a>,
}

impl<'a> SctpErrorCauses<'a> {
    /// The causes of a chunk whose value is `value`.
    fn new(value: &'a [u8]) -> Self {
        Self {
            tlvs: Tlvs::new(value, TLV_HEADER_LEN),
        }
    }

    /// The causes' bytes not iterated yet, padding between them included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.tlvs.rest
    }
}

impl<'a> Iterator for SctpErrorCauses<'a> {
    type Item = Result<SctpErrorCause<'a>, SctpPacketError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(
            self.tlvs
                .next()?
                .map(|(code, info)| SctpErrorCause { code, info }),
        )
    }
}

/// A chunk of a type without a view here, kept as it came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownChunk<'a> {
    /// The chunk type.
    pub chunk_type: u8,
    /// The chunk flags.
    pub flags: u8,
    /// The chunk value, without padding.
    pub value: &'a [u8],
}

impl UnknownChunk<'_> {
    /// What the receiver of an unrecognized chunk of this type does (§3.2).
    pub fn action(&self) -> UnrecognizedAction {
        UnrecognizedAction::from_bits(self.chunk_type >> 6)
    }
}

/// Type-length-value items (parameters §3.2.1, error causes §3.3.10): each padded to 4 bytes,
/// the last one's padding being the chunk's, outside the chunk's length. A length lie ends the
/// iteration with its error.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tlvs<'a> {
    rest: &'a [u8],
    /// Where `rest` starts in its chunk, for errors.
    offset: usize,
}

impl<'a> Tlvs<'a> {
    /// The items in `bytes`, which start at `offset` in their chunk.
    fn new(bytes: &'a [u8], offset: usize) -> Self {
        Self {
            rest: bytes,
            offset,
        }
    }
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Result<(u16, &'a [u8]), SctpPacketError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let (offset, remaining) = (self.offset, self.rest.len());
        let result = match *self.rest {
            [t0, t1, l0, l1, ..] => {
                let length = u16::from_be_bytes([l0, l1]);
                let len = usize::from(length);
                // §3.2.1: the length counts type, length and value, not the padding; the
                // padding is there unless this is the chunk's last item.
                let next = if len == remaining { len } else { padded(len) };
                match (self.rest.get(TLV_HEADER_LEN..len), self.rest.get(next..)) {
                    (Some(value), Some(rest)) if len >= TLV_HEADER_LEN => {
                        self.rest = rest;
                        self.offset += next;
                        return Some(Ok((u16::from_be_bytes([t0, t1]), value)));
                    }
                    _ => SctpPacketError::ParameterLength {
                        offset,
                        length,
                        remaining,
                    },
                }
            }
            _ => SctpPacketError::ParameterHeaderTruncated { offset },
        };
        self.rest = &[];
        Some(Err(result))
    }
}

/// Writes bytes one after another into a slice the caller sized; never past its end.
struct Writer<'w> {
    out: &'w mut [u8],
    at: usize,
}

impl<'w> Writer<'w> {
    /// A writer at the start of `out`.
    fn new(out: &'w mut [u8]) -> Self {
        Self { out, at: 0 }
    }

    /// Appends `bytes` (dropped past the end of the slice, which the callers size to fit).
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at.saturating_add(bytes.len());
        if let Some(dst) = self.out.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
        }
        debug_assert!(end <= self.out.len(), "chunk writer past its slice");
        self.at = end;
    }

    /// Appends zeros up to the next multiple of 4 bytes (§3.2: padding is all zero).
    fn pad(&mut self) {
        let zeros = padded(self.at) - self.at;
        self.put(&[0; 3][..zeros]);
    }

    /// Appends a parameter or error cause (§3.2.1): type, length, the value of `value_len`
    /// bytes that `write_value` puts, padding. The chunk's length leaves out the last one's
    /// padding ([`tlvs_len`]), which is the chunk's then.
    fn put_tlv(&mut self, tlv_type: u16, value_len: usize, write_value: impl FnOnce(&mut Self)) {
        // The chunk that holds it is at most 65 535 bytes long, so its length fits.
        let length = u16::try_from(TLV_HEADER_LEN + value_len).unwrap_or(u16::MAX);
        self.put(&tlv_type.to_be_bytes());
        self.put(&length.to_be_bytes());
        write_value(self);
        self.pad();
    }
}

/// The length that parameters or error causes of `value_lens` add to a chunk: each with its
/// header and padded to 4 bytes, except that the last one's padding is the chunk's (§3.2).
fn tlvs_len(value_lens: impl Iterator<Item = usize>) -> usize {
    let (total, last_padding) = value_lens.fold((0usize, 0), |(total, _), len| {
        let len = TLV_HEADER_LEN.saturating_add(len);
        (total.saturating_add(padded(len)), padded(len) - len)
    });
    total - last_padding
}

/// Writes an SCTP packet into the caller's buffer: the common header, then chunks one by one,
/// each padded (§3.2), and at last the CRC32c (§6.8). A chunk that does not fit is refused and
/// the packet stays as it was, so a sender bundles chunks until one is refused.
#[derive(Debug)]
pub struct SctpPacketBuilder<'b> {
    buf: &'b mut [u8],
    /// The bytes written, header included; never more than `buf.len()`.
    len: usize,
}

impl<'b> SctpPacketBuilder<'b> {
    /// Starts a packet in `buf` with the common header (§3.1); the checksum is written by
    /// [`SctpPacketBuilder::finish`].
    pub fn new(
        buf: &'b mut [u8],
        source_port: u16,
        destination_port: u16,
        verification_tag: u32,
    ) -> Result<Self, SctpBuildError> {
        let Some(header) = buf.get_mut(..HEADER_LEN) else {
            return Err(SctpBuildError::NoRoom {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        };
        let mut w = Writer::new(header);
        w.put(&source_port.to_be_bytes());
        w.put(&destination_port.to_be_bytes());
        w.put(&verification_tag.to_be_bytes());
        w.put(&[0; 4]);
        Ok(Self {
            buf,
            len: HEADER_LEN,
        })
    }

    /// The bytes written so far, header included.
    pub fn written(&self) -> usize {
        self.len
    }

    /// The bytes left in the buffer for chunks.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.len)
    }

    /// Appends a chunk of `chunk_type` with `flags` and a value of `value_len` bytes that
    /// `write` puts after the header; then the padding.
    fn chunk(
        &mut self,
        chunk_type: u8,
        flags: u8,
        value_len: usize,
        write: impl FnOnce(&mut Writer<'_>),
    ) -> Result<(), SctpBuildError> {
        let length = TLV_HEADER_LEN.saturating_add(value_len);
        let Ok(length_field) = u16::try_from(length) else {
            return Err(SctpBuildError::TooLong { length });
        };
        let needed = padded(length);
        let available = self.remaining();
        let Some(out) = self.buf.get_mut(self.len..self.len.saturating_add(needed)) else {
            return Err(SctpBuildError::NoRoom { needed, available });
        };
        let mut w = Writer::new(out);
        w.put(&[chunk_type, flags]);
        w.put(&length_field.to_be_bytes());
        write(&mut w);
        w.pad();
        debug_assert_eq!(
            w.at, needed,
            "chunk written with another length than computed"
        );
        self.len += needed;
        Ok(())
    }

    /// Appends a chunk as it is given: any type, flags and value.
    pub fn push_raw(
        &mut self,
        chunk_type: u8,
        flags: u8,
        value: &[u8],
    ) -> Result<(), SctpBuildError> {
        self.chunk(chunk_type, flags, value.len(), |w| w.put(value))
    }

    /// Appends a chunk from its fields, as [`SctpChunk::body`] gives them; the parameters and
    /// error causes that their iterators have not passed yet are copied as they came.
    pub fn push(&mut self, body: &SctpChunkBody<'_>) -> Result<(), SctpBuildError> {
        match body {
            SctpChunkBody::Data(data) => self.push_data(data),
            SctpChunkBody::Init(init) => self.init_raw(INIT, init),
            SctpChunkBody::InitAck(init) => self.init_raw(INIT_ACK, init),
            SctpChunkBody::Sack(sack) => {
                let (gaps, dups) = (sack.gap_blocks.bytes, sack.duplicate_tsns.bytes);
                self.sack(
                    sack.cumulative_tsn_ack,
                    sack.a_rwnd,
                    (sack.gap_blocks.len(), sack.duplicate_tsns.len()),
                    |w| {
                        w.put(gaps);
                        w.put(dups);
                    },
                )
            }
            SctpChunkBody::Heartbeat { info } => self.push_heartbeat(info),
            SctpChunkBody::HeartbeatAck { info } => self.push_heartbeat_ack(info),
            SctpChunkBody::Abort {
                tag_reflected,
                causes,
            } => self.push_raw(ABORT, t_flag(*tag_reflected), causes.as_bytes()),
            SctpChunkBody::Shutdown { cumulative_tsn_ack } => {
                self.push_shutdown(*cumulative_tsn_ack)
            }
            SctpChunkBody::ShutdownAck => self.push_shutdown_ack(),
            SctpChunkBody::Error { causes } => self.push_raw(ERROR, 0, causes.as_bytes()),
            SctpChunkBody::CookieEcho { cookie } => self.push_cookie_echo(cookie),
            SctpChunkBody::CookieAck => self.push_cookie_ack(),
            SctpChunkBody::ShutdownComplete { tag_reflected } => {
                self.push_shutdown_complete(*tag_reflected)
            }
            SctpChunkBody::Unknown(chunk) => {
                self.push_raw(chunk.chunk_type, chunk.flags, chunk.value)
            }
        }
    }

    /// Appends a DATA chunk (§3.3.1).
    pub fn push_data(&mut self, data: &DataChunk<'_>) -> Result<(), SctpBuildError> {
        let value_len = DATA_FIXED_LEN.saturating_add(data.user_data.len());
        self.chunk(DATA, data.flags(), value_len, |w| {
            w.put(&data.tsn.to_be_bytes());
            w.put(&data.stream_id.to_be_bytes());
            w.put(&data.stream_seq.to_be_bytes());
            w.put(&data.ppid.to_be_bytes());
            w.put(data.user_data);
        })
    }

    /// Appends an INIT (§3.3.2) with `params` in their order.
    pub fn push_init(
        &mut self,
        fields: &InitFields,
        params: &[InitParameter<'_>],
    ) -> Result<(), SctpBuildError> {
        self.init(INIT, fields, params)
    }

    /// Appends an INIT ACK (§3.3.3) with `params` in their order (the State Cookie among them).
    pub fn push_init_ack(
        &mut self,
        fields: &InitFields,
        params: &[InitParameter<'_>],
    ) -> Result<(), SctpBuildError> {
        self.init(INIT_ACK, fields, params)
    }

    /// Appends an INIT or INIT ACK with typed parameters.
    fn init(
        &mut self,
        chunk_type: u8,
        fields: &InitFields,
        params: &[InitParameter<'_>],
    ) -> Result<(), SctpBuildError> {
        let params_len = tlvs_len(params.iter().map(InitParameter::value_len));
        let value_len = INIT_FIXED_LEN.saturating_add(params_len);
        self.chunk(chunk_type, 0, value_len, |w| {
            fields.write(w);
            for param in params {
                w.put_tlv(param.param_type(), param.value_len(), |w| {
                    param.write_value(w);
                });
            }
        })
    }

    /// Appends an INIT or INIT ACK whose parameters are copied as they came.
    fn init_raw(&mut self, chunk_type: u8, init: &InitChunk<'_>) -> Result<(), SctpBuildError> {
        let params = init.params.as_bytes();
        let value_len = INIT_FIXED_LEN.saturating_add(params.len());
        self.chunk(chunk_type, 0, value_len, |w| {
            init.fields.write(w);
            w.put(params);
        })
    }

    /// Appends a SACK (§3.3.4).
    pub fn push_sack(
        &mut self,
        cumulative_tsn_ack: u32,
        a_rwnd: u32,
        gap_blocks: &[GapAckBlock],
        duplicate_tsns: &[u32],
    ) -> Result<(), SctpBuildError> {
        self.sack(
            cumulative_tsn_ack,
            a_rwnd,
            (gap_blocks.len(), duplicate_tsns.len()),
            |w| {
                for block in gap_blocks {
                    w.put(&block.start.to_be_bytes());
                    w.put(&block.end.to_be_bytes());
                }
                for tsn in duplicate_tsns {
                    w.put(&tsn.to_be_bytes());
                }
            },
        )
    }

    /// Appends a SACK with `counts` gap ack blocks and duplicate TSNs that `write` puts.
    fn sack(
        &mut self,
        cumulative_tsn_ack: u32,
        a_rwnd: u32,
        (gaps, dups): (usize, usize),
        write: impl FnOnce(&mut Writer<'_>),
    ) -> Result<(), SctpBuildError> {
        let value_len = gaps
            .saturating_add(dups)
            .saturating_mul(4)
            .saturating_add(SACK_FIXED_LEN);
        // Counts of more than 65 535 make the chunk too long before their fields overflow.
        let count = |n: usize| u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes();
        self.chunk(SACK, 0, value_len, |w| {
            w.put(&cumulative_tsn_ack.to_be_bytes());
            w.put(&a_rwnd.to_be_bytes());
            w.put(&count(gaps));
            w.put(&count(dups));
            write(w);
        })
    }

    /// Appends a HEARTBEAT (§3.3.5) whose Heartbeat Info parameter carries `info`.
    pub fn push_heartbeat(&mut self, info: &[u8]) -> Result<(), SctpBuildError> {
        self.heartbeat(HEARTBEAT, info)
    }

    /// Appends a HEARTBEAT ACK (§3.3.6) that carries back the `info` of a HEARTBEAT.
    pub fn push_heartbeat_ack(&mut self, info: &[u8]) -> Result<(), SctpBuildError> {
        self.heartbeat(HEARTBEAT_ACK, info)
    }

    /// Appends a HEARTBEAT or HEARTBEAT ACK.
    fn heartbeat(&mut self, chunk_type: u8, info: &[u8]) -> Result<(), SctpBuildError> {
        let value_len = tlvs_len([info.len()].into_iter());
        self.chunk(chunk_type, 0, value_len, |w| {
            w.put_tlv(HEARTBEAT_INFO, info.len(), |w| w.put(info));
        })
    }

    /// Appends an ABORT (§3.3.7) with `causes`; `tag_reflected` sets the T bit.
    pub fn push_abort(
        &mut self,
        tag_reflected: bool,
        causes: &[SctpErrorCause<'_>],
    ) -> Result<(), SctpBuildError> {
        self.causes(ABORT, t_flag(tag_reflected), causes)
    }

    /// Appends an ERROR (§3.3.10) with `causes`.
    pub fn push_error(&mut self, causes: &[SctpErrorCause<'_>]) -> Result<(), SctpBuildError> {
        self.causes(ERROR, 0, causes)
    }

    /// Appends an ABORT or ERROR.
    fn causes(
        &mut self,
        chunk_type: u8,
        flags: u8,
        causes: &[SctpErrorCause<'_>],
    ) -> Result<(), SctpBuildError> {
        let value_len = tlvs_len(causes.iter().map(|c| c.info.len()));
        self.chunk(chunk_type, flags, value_len, |w| {
            for cause in causes {
                w.put_tlv(cause.code, cause.info.len(), |w| w.put(cause.info));
            }
        })
    }

    /// Appends a SHUTDOWN (§3.3.8).
    pub fn push_shutdown(&mut self, cumulative_tsn_ack: u32) -> Result<(), SctpBuildError> {
        self.push_raw(SHUTDOWN, 0, &cumulative_tsn_ack.to_be_bytes())
    }

    /// Appends a SHUTDOWN ACK (§3.3.9).
    pub fn push_shutdown_ack(&mut self) -> Result<(), SctpBuildError> {
        self.push_raw(SHUTDOWN_ACK, 0, &[])
    }

    /// Appends a COOKIE ECHO (§3.3.11) with the State Cookie of the INIT ACK.
    pub fn push_cookie_echo(&mut self, cookie: &[u8]) -> Result<(), SctpBuildError> {
        self.push_raw(COOKIE_ECHO, 0, cookie)
    }

    /// Appends a COOKIE ACK (§3.3.12).
    pub fn push_cookie_ack(&mut self) -> Result<(), SctpBuildError> {
        self.push_raw(COOKIE_ACK, 0, &[])
    }

    /// Appends a SHUTDOWN COMPLETE (§3.3.13); `tag_reflected` sets the T bit.
    pub fn push_shutdown_complete(&mut self, tag_reflected: bool) -> Result<(), SctpBuildError> {
        self.push_raw(SHUTDOWN_COMPLETE, t_flag(tag_reflected), &[])
    }

    /// Writes the CRC32c into the common header (§6.8, Appendix B: its bytes least significant
    /// first) and gives the packet.
    pub fn finish(self) -> &'b [u8] {
        let packet = self.buf.get_mut(..self.len).unwrap_or_default();
        let crc = packet_crc32c(packet);
        if let Some(field) = packet.get_mut(CHECKSUM_AT..HEADER_LEN) {
            field.copy_from_slice(&crc.to_le_bytes());
        }
        packet
    }
}

/// The flags of a chunk whose only flag is the T bit.
fn t_flag(tag_reflected: bool) -> u8 {
    if tag_reflected { FLAG_TAG_REFLECTED } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a packet from `from` 5000 to 3863 with tag 0x01020304 by `push`, parses it back,
    /// checks its checksum and gives its one chunk's body and bytes (header and value).
    fn one_chunk(
        push: impl FnOnce(&mut SctpPacketBuilder<'_>) -> Result<(), SctpBuildError>,
        check: impl FnOnce(SctpChunkBody<'_>, &[u8]),
    ) {
        let mut buf = [0xee; 512];
        let mut b = SctpPacketBuilder::new(&mut buf, 5000, 3863, 0x0102_0304).unwrap();
        push(&mut b).unwrap();
        let bytes = b.finish();
        assert_eq!(bytes.len() % 4, 0, "packets are padded to 4 bytes");
        let packet = SctpPacket::parse(bytes).unwrap();
        packet.verify_checksum().unwrap();
        assert_eq!(
            (packet.source_port(), packet.destination_port()),
            (5000, 3863)
        );
        assert_eq!(packet.verification_tag(), 0x0102_0304);
        let mut chunks = packet.chunks();
        let chunk = chunks.next().unwrap();
        assert_eq!(chunks.next(), None);
        // Padding is zero however dirty the buffer was.
        assert!(
            bytes[HEADER_LEN + chunk.as_bytes().len()..]
                .iter()
                .all(|&b| b == 0)
        );
        // Building again from the parsed body gives the same bytes.
        let mut again = [0; 512];
        let mut b = SctpPacketBuilder::new(&mut again, 5000, 3863, 0x0102_0304).unwrap();
        b.push(&chunk.body().unwrap()).unwrap();
        assert_eq!(b.finish(), bytes);
        check(chunk.body().unwrap(), chunk.as_bytes());
    }

    /// RFC 3720 §B.4: the iSCSI examples of CRC32c (the values here as Appendix B of RFC 4960
    /// computes them; RFC 3720 lists the bytes as sent, least significant first).
    #[test]
    fn crc32c_vectors_of_rfc_3720() {
        let ascending: Vec<u8> = (0..32).collect();
        let descending: Vec<u8> = (0..32).rev().collect();
        let read_pdu = [
            0x01, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14, 0, 0, 0, 0, 0, 0x04, 0, 0,
            0, 0, 0x14, 0, 0, 0, 0x18, 0x28, 0, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(crc32c::crc32c(&[0; 32]), 0x8a91_36aa);
        assert_eq!(crc32c::crc32c(&[0xff; 32]), 0x62a8_ab43);
        assert_eq!(crc32c::crc32c(&ascending), 0x46dd_794e);
        assert_eq!(crc32c::crc32c(&descending), 0x113f_db5c);
        assert_eq!(crc32c::crc32c(&read_pdu), 0xd996_3a56);
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        // The checksum field counts as zero whatever it holds.
        let mut dirty = [0xff; 32];
        assert_eq!(
            packet_crc32c(&dirty),
            crc32c::crc32c(&{
                let mut d = dirty;
                d[8..12].fill(0);
                d
            })
        );
        dirty[8..12].copy_from_slice(&[1, 2, 3, 4]);
        let zeroed = packet_crc32c(&dirty);
        dirty[8..12].fill(0);
        assert_eq!(zeroed, crc32c::crc32c(&dirty));
        // Short inputs do not panic.
        for len in 0..HEADER_LEN {
            let _ = packet_crc32c(&read_pdu[..len]);
        }
    }

    /// A whole packet, byte by byte: the header in network byte order, the CRC32c least
    /// significant byte first (RFC 4960 Appendix B).
    #[test]
    fn cookie_ack_packet_bytes() {
        let mut buf = [0; 64];
        let mut b = SctpPacketBuilder::new(&mut buf, 0x1234, 3863, 0xdead_beef).unwrap();
        b.push_cookie_ack().unwrap();
        assert_eq!(b.written(), 16);
        assert_eq!(b.remaining(), 48);
        let bytes = b.finish();
        let crc = crc32c::crc32c(&[
            0x12, 0x34, 0x0f, 0x17, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 11, 0, 0, 4,
        ]);
        let mut expected = vec![0x12, 0x34, 0x0f, 0x17, 0xde, 0xad, 0xbe, 0xef];
        expected.extend_from_slice(&crc.to_le_bytes());
        expected.extend_from_slice(&[11, 0, 0, 4]);
        assert_eq!(bytes, expected);
        let packet = SctpPacket::parse(bytes).unwrap();
        assert_eq!(packet.checksum(), crc);
        assert_eq!(packet.computed_checksum(), crc);
        assert_eq!(packet.as_bytes(), bytes);
    }

    #[test]
    fn data() {
        let data = DataChunk {
            tsn: 0x8000_0001,
            stream_id: 3,
            stream_seq: 0xfffe,
            ppid: 11,
            unordered: false,
            beginning: true,
            ending: true,
            immediate: false,
            user_data: b"hello",
        };
        one_chunk(
            |b| b.push_data(&data),
            |body, bytes| {
                assert_eq!(body, SctpChunkBody::Data(data));
                assert_eq!(
                    bytes,
                    [
                        0, 0x03, 0, 21, 0x80, 0, 0, 1, 0, 3, 0xff, 0xfe, 0, 0, 0, 11, b'h', b'e',
                        b'l', b'l', b'o'
                    ]
                );
            },
        );
        for flags in 0..16u8 {
            let data = DataChunk {
                unordered: flags & 4 != 0,
                beginning: flags & 2 != 0,
                ending: flags & 1 != 0,
                immediate: flags & 8 != 0,
                user_data: &[],
                ..data
            };
            one_chunk(
                |b| b.push_data(&data),
                |body, bytes| {
                    assert_eq!(bytes[1], flags);
                    assert_eq!(body, SctpChunkBody::Data(data));
                },
            );
        }
    }

    #[test]
    fn init_and_init_ack() {
        let fields = InitFields {
            initiate_tag: 0xcafe_f00d,
            a_rwnd: 106_496,
            outbound_streams: 10,
            inbound_streams: 65_535,
            initial_tsn: 0xffff_fff0,
        };
        let params = [
            InitParameter::Ipv4Address(Ipv4Addr::new(192, 0, 2, 1)),
            InitParameter::Ipv6Address("2001:db8::1".parse().unwrap()),
            InitParameter::CookiePreservative(30_000),
            InitParameter::SupportedAddressTypes(AddressTypes::IPV4_AND_IPV6),
            // ECN Capable, type 0x8000: skip it if unknown.
            InitParameter::Unknown(UnknownParameter {
                param_type: 0x8000,
                value: &[],
            }),
            InitParameter::SupportedAddressTypes(AddressTypes::new(&[0, 5]).unwrap()),
        ];
        one_chunk(
            |b| b.push_init(&fields, &params),
            |body, bytes| {
                let SctpChunkBody::Init(init) = body else {
                    panic!("not an INIT: {body:?}")
                };
                assert_eq!(init.fields, fields);
                let got: Vec<_> = init.params.map(Result::unwrap).collect();
                assert_eq!(got, params);
                // The last parameter (6 bytes) is not padded within the chunk's length.
                let params_len = 8 + 20 + 8 + 8 + 4 + 6;
                assert_eq!(
                    usize::from(u16::from_be_bytes([bytes[2], bytes[3]])),
                    20 + params_len
                );
            },
        );
        let cookie = [7u8; 33];
        let params = [
            InitParameter::StateCookie(&cookie),
            InitParameter::Ipv4Address(Ipv4Addr::new(192, 0, 2, 2)),
        ];
        one_chunk(
            |b| b.push_init_ack(&fields, &params),
            |body, bytes| {
                let SctpChunkBody::InitAck(init) = body else {
                    panic!("not an INIT ACK: {body:?}")
                };
                assert_eq!(init.fields, fields);
                let got: Vec<_> = init.params.map(Result::unwrap).collect();
                assert_eq!(got, params);
                // The cookie's padding (3 bytes) sits between it and the next parameter.
                assert_eq!(bytes.len(), 20 + 40 + 8);
                assert_eq!(&bytes[20 + 37..20 + 40], [0, 0, 0]);
            },
        );
        // No parameters at all.
        one_chunk(
            |b| b.push_init(&fields, &[]),
            |body, bytes| {
                assert_eq!(bytes.len(), 20);
                let SctpChunkBody::Init(mut init) = body else {
                    panic!("not an INIT: {body:?}")
                };
                assert_eq!(init.params.next(), None);
            },
        );
        assert_eq!(
            AddressTypes::IPV4_AND_IPV6.iter().collect::<Vec<_>>(),
            [5, 6]
        );
        assert_eq!(AddressTypes::new(&[0, 5, 0]), None);
    }

    #[test]
    fn sack() {
        let gaps = [
            GapAckBlock { start: 2, end: 3 },
            GapAckBlock {
                start: 5,
                end: 0xffff,
            },
        ];
        let dups = [7, 0xffff_ffff, 9];
        one_chunk(
            |b| b.push_sack(41, 65_536, &gaps, &dups),
            |body, bytes| {
                let SctpChunkBody::Sack(sack) = body else {
                    panic!("not a SACK: {body:?}")
                };
                assert_eq!(sack.cumulative_tsn_ack, 41);
                assert_eq!(sack.a_rwnd, 65_536);
                assert_eq!(sack.gap_blocks.len(), 2);
                assert_eq!(sack.duplicate_tsns.len(), 3);
                assert_eq!(sack.gap_blocks.collect::<Vec<_>>(), gaps);
                assert_eq!(sack.duplicate_tsns.collect::<Vec<_>>(), dups);
                assert_eq!(bytes.len(), 16 + 8 + 12);
            },
        );
        one_chunk(
            |b| b.push_sack(0, 0, &[], &[]),
            |body, _| {
                let SctpChunkBody::Sack(mut sack) = body else {
                    panic!("not a SACK: {body:?}")
                };
                assert_eq!(
                    (sack.gap_blocks.next(), sack.duplicate_tsns.next()),
                    (None, None)
                );
            },
        );
    }

    #[test]
    fn heartbeat_and_ack() {
        let info = b"sender specific, 29 bytes....";
        one_chunk(
            |b| b.push_heartbeat(info),
            |body, bytes| {
                assert_eq!(body, SctpChunkBody::Heartbeat { info });
                assert_eq!(&bytes[..8], [4, 0, 0, 37, 0, 1, 0, 33]);
            },
        );
        one_chunk(
            |b| b.push_heartbeat_ack(info),
            |body, _| assert_eq!(body, SctpChunkBody::HeartbeatAck { info }),
        );
        one_chunk(
            |b| b.push_heartbeat(&[]),
            |body, _| assert_eq!(body, SctpChunkBody::Heartbeat { info: &[] }),
        );
    }

    #[test]
    fn abort_and_error() {
        // Protocol violation (13) with odd-length text, then user-initiated abort (12), empty.
        let causes = [
            SctpErrorCause {
                code: 13,
                info: b"wrong PPID",
            },
            SctpErrorCause {
                code: 12,
                info: &[],
            },
        ];
        for reflected in [false, true] {
            one_chunk(
                |b| b.push_abort(reflected, &causes),
                |body, bytes| {
                    let SctpChunkBody::Abort {
                        tag_reflected,
                        causes: got,
                    } = body
                    else {
                        panic!("not an ABORT: {body:?}")
                    };
                    assert_eq!(tag_reflected, reflected);
                    assert_eq!(bytes[1], u8::from(reflected));
                    assert_eq!(got.map(Result::unwrap).collect::<Vec<_>>(), causes);
                    assert_eq!(bytes.len(), 4 + 16 + 4);
                },
            );
        }
        one_chunk(
            |b| b.push_abort(false, &[]),
            |body, _| {
                let SctpChunkBody::Abort { mut causes, .. } = body else {
                    panic!("not an ABORT: {body:?}")
                };
                assert_eq!(causes.next(), None);
            },
        );
        one_chunk(
            |b| b.push_error(&causes[..1]),
            |body, bytes| {
                let SctpChunkBody::Error { causes: got } = body else {
                    panic!("not an ERROR: {body:?}")
                };
                assert_eq!(got.map(Result::unwrap).collect::<Vec<_>>(), causes[..1]);
                // The last cause's padding is outside the chunk's length.
                assert_eq!(u16::from_be_bytes([bytes[2], bytes[3]]), 4 + 14);
            },
        );
    }

    #[test]
    fn shutdown_cookie_and_the_rest() {
        one_chunk(
            |b| b.push_shutdown(0xabcd_ef01),
            |body, bytes| {
                assert_eq!(
                    body,
                    SctpChunkBody::Shutdown {
                        cumulative_tsn_ack: 0xabcd_ef01
                    }
                );
                assert_eq!(bytes, [7, 0, 0, 8, 0xab, 0xcd, 0xef, 0x01]);
            },
        );
        one_chunk(
            |b| b.push_shutdown_ack(),
            |body, bytes| {
                assert_eq!(body, SctpChunkBody::ShutdownAck);
                assert_eq!(bytes, [8, 0, 0, 4]);
            },
        );
        for reflected in [false, true] {
            one_chunk(
                |b| b.push_shutdown_complete(reflected),
                |body, bytes| {
                    assert_eq!(
                        body,
                        SctpChunkBody::ShutdownComplete {
                            tag_reflected: reflected
                        }
                    );
                    assert_eq!(bytes, [14, u8::from(reflected), 0, 4]);
                },
            );
        }
        let cookie = [0x5a; 13];
        one_chunk(
            |b| b.push_cookie_echo(&cookie),
            |body, bytes| {
                assert_eq!(body, SctpChunkBody::CookieEcho { cookie: &cookie });
                assert_eq!(bytes.len(), 17);
            },
        );
        one_chunk(
            |b| b.push_cookie_ack(),
            |body, _| assert_eq!(body, SctpChunkBody::CookieAck),
        );
    }

    #[test]
    fn unknown_chunks_keep_type_flags_value_and_action() {
        let cases = [
            (0x0f, UnrecognizedAction::Stop),
            (0x40, UnrecognizedAction::StopAndReport),
            (0x80, UnrecognizedAction::Skip),
            (0xc0, UnrecognizedAction::SkipAndReport),
        ];
        for (chunk_type, action) in cases {
            one_chunk(
                |b| b.push_raw(chunk_type, 0xa5, b"xyz"),
                |body, _| {
                    let SctpChunkBody::Unknown(chunk) = body else {
                        panic!("not unknown: {body:?}")
                    };
                    assert_eq!(
                        chunk,
                        UnknownChunk {
                            chunk_type,
                            flags: 0xa5,
                            value: b"xyz"
                        }
                    );
                    assert_eq!(chunk.action(), action);
                },
            );
        }
        assert!(!UnrecognizedAction::Stop.skips() && !UnrecognizedAction::Stop.reports());
        assert!(!UnrecognizedAction::StopAndReport.skips());
        assert!(UnrecognizedAction::StopAndReport.reports());
        assert!(UnrecognizedAction::Skip.skips() && !UnrecognizedAction::Skip.reports());
        assert!(UnrecognizedAction::SkipAndReport.skips());
        assert!(UnrecognizedAction::SkipAndReport.reports());
        for (param_type, action) in [
            (0x0003, UnrecognizedAction::Stop),
            (0x4001, UnrecognizedAction::StopAndReport),
            (0x8000, UnrecognizedAction::Skip),
            (0xc000, UnrecognizedAction::SkipAndReport),
        ] {
            let param = UnknownParameter {
                param_type,
                value: &[],
            };
            assert_eq!(param.action(), action);
        }
    }

    /// Several chunks in one packet (bundling, §6.10), until the buffer refuses one; a refused
    /// chunk leaves the packet as it was.
    #[test]
    fn bundling_until_full() {
        let mut buf = [0; 64];
        let mut b = SctpPacketBuilder::new(&mut buf, 1, 2, 3).unwrap();
        b.push_cookie_ack().unwrap();
        let data = DataChunk {
            tsn: 1,
            stream_id: 0,
            stream_seq: 0,
            ppid: 12,
            unordered: true,
            beginning: true,
            ending: true,
            immediate: true,
            user_data: b"abcde",
        };
        b.push_data(&data).unwrap();
        assert_eq!(b.written(), 12 + 4 + 24);
        assert_eq!(
            b.push_data(&DataChunk {
                user_data: &[1; 9],
                ..data
            }),
            Err(SctpBuildError::NoRoom {
                needed: 28,
                available: 24
            })
        );
        assert_eq!(b.written(), 40);
        b.push_sack(1, 2, &[], &[]).unwrap();
        assert_eq!(b.remaining(), 8);
        b.push_shutdown(9).unwrap();
        assert_eq!(b.remaining(), 0);
        let bytes = b.finish();
        let packet = SctpPacket::parse(bytes).unwrap();
        packet.verify_checksum().unwrap();
        let types: Vec<_> = packet.chunks().map(|c| c.chunk_type()).collect();
        assert_eq!(types, [COOKIE_ACK, DATA, SACK, SHUTDOWN]);
        let SctpChunkBody::Data(got) = packet.chunks().nth(1).unwrap().body().unwrap() else {
            panic!("not DATA")
        };
        assert_eq!(got, data);
    }

    #[test]
    fn builder_limits() {
        let mut small = [0; 11];
        assert_eq!(
            SctpPacketBuilder::new(&mut small, 1, 2, 3).unwrap_err(),
            SctpBuildError::NoRoom {
                needed: 12,
                available: 11
            }
        );
        let mut big = vec![0; 70_000];
        let mut b = SctpPacketBuilder::new(&mut big, 1, 2, 3).unwrap();
        assert_eq!(
            b.push_cookie_echo(&[0; 65_532]),
            Err(SctpBuildError::TooLong { length: 65_536 })
        );
        b.push_cookie_echo(&[0; 65_531]).unwrap();
        assert_eq!(b.written(), 12 + 65_536);
        let cookie = [1; 65_520];
        let fields = InitFields {
            initiate_tag: 1,
            a_rwnd: 1,
            outbound_streams: 1,
            inbound_streams: 1,
            initial_tsn: 1,
        };
        let mut b = SctpPacketBuilder::new(&mut big, 1, 2, 3).unwrap();
        assert!(matches!(
            b.push_init_ack(&fields, &[InitParameter::StateCookie(&cookie)]),
            Err(SctpBuildError::TooLong { .. })
        ));
        let gaps = vec![GapAckBlock { start: 1, end: 1 }; 70_000];
        assert!(matches!(
            b.push_sack(0, 0, &gaps, &[]),
            Err(SctpBuildError::TooLong { .. })
        ));
        assert_eq!(b.written(), 12);
        let e = SctpBuildError::NoRoom {
            needed: 8,
            available: 4,
        };
        assert!(e.to_string().contains("8 bytes"));
    }
}
