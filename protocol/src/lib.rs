//! `rserpool-protocol` owns the RSerPool wire format: every ASAP (RFC 5352) and ENRP (RFC 5353)
//! message and every parameter of RFC 5354 with the member-selection policies of RFC 5356 and
//! RSPLIB's private ones, RSPLIB's extensions and Component Status report, in two wire generations
//! (RFC and NG, `docs/wire-format.md`); framing for byte streams; the Internet-16 and NG
//! handlespace checksums; transport URLs ([`url`]). No sockets and no clock; the one
//! I/O is name resolution when a URL names a host rather than an address (std's `ToSocketAddrs`).
//!
//! Decoding returns borrowed views over the input and never allocates; encoding writes into a
//! caller's buffer. Every decode path returns a typed [`DecodeError`] and never panics.
//!
//! ```
//! use rserpool_protocol::{AsapMessage, Generation, PoolHandle};
//!
//! let request = AsapMessage::HandleResolution {
//!     subscribe: false,
//!     pool_handle: PoolHandle(b"EchoPool"),
//!     items: Some(5),
//! };
//! let mut buf = [0u8; 64];
//! let len = request.encode(Generation::Rfc, &mut buf).unwrap();
//! let decoded = AsapMessage::decode(&buf[..len], Generation::Rfc).unwrap();
//! assert_eq!(decoded.message, request);
//! ```

pub mod asap;
pub mod checksum;
#[cfg(feature = "corpus")]
pub mod corpus;
pub mod csp;
pub mod enrp;
mod error;
pub mod framing;
mod param;
pub mod url;
mod wire;

use core::fmt;

pub use asap::{AsapMessage, Resolution};
pub use enrp::{EnrpBody, EnrpMessage, PoolEntry, UpdateAction};
pub use error::{DecodeError, EncodeError, ParameterAction, cause};
pub use param::{
    ErrorCause, OperationError, Policy, PoolElementParam, PoolHandle, REGISTRATION_LIFE_INFINITE,
    ServerInformation, TRANSPORT_USE_DATA_ONLY, TRANSPORT_USE_DATA_PLUS_CONTROL, TransportKind,
    TransportParam, UserTransport, encode_policy_parameter, encode_pool_handle_parameter,
    encode_transport_parameter, policy_type,
};
pub use wire::{MAX_REPORTED, Seq, SeqIter, Unrecognized};

/// SCTP payload protocol identifier of ASAP (RFC 5352 §8.3).
pub const PPID_ASAP: u32 = 11;
/// SCTP payload protocol identifier of ENRP (RFC 5353 §5.4).
pub const PPID_ENRP: u32 = 12;
/// IANA port of ASAP over SCTP, TCP and UDP (RFC 5352 §8.2).
pub const ASAP_PORT: u16 = 3863;
/// IANA port of ENRP over SCTP and UDP (RFC 5353 §5.3).
pub const ENRP_PORT: u16 = 9901;
/// Largest message the 16-bit length field allows.
pub const MAX_MESSAGE_LEN: usize = 65535;

/// The wire generation a conversation speaks (`docs/wire-format.md`). There is no version
/// field on the wire: the listener or peer configuration decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Generation {
    /// RFC 5352-5356 as RSPLIB speaks them: 32-bit PE and PR identifiers, Internet-16 checksum.
    #[default]
    Rfc,
    /// RSerPool NG: 64-bit PE and PR identifiers, 64-bit NG digest.
    Ng,
}

/// A pool element identifier. 0 means "none"; the RFC generation carries only 32 bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeId(pub u64);

/// A pool registrar (ENRP server) identifier. 0 means "none"; the RFC generation carries only 32
/// bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrId(pub u64);

impl fmt::Display for PeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

impl fmt::Display for PrId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// Parameter type codes (RFC 5354 §3, §5.1; RSPLIB's handle-resolution option).
pub mod param_type {
    /// IPv4 Address.
    pub const IPV4_ADDRESS: u16 = 0x0001;
    /// IPv6 Address.
    pub const IPV6_ADDRESS: u16 = 0x0002;
    /// DCCP Transport.
    pub const DCCP_TRANSPORT: u16 = 0x0003;
    /// SCTP Transport.
    pub const SCTP_TRANSPORT: u16 = 0x0004;
    /// TCP Transport.
    pub const TCP_TRANSPORT: u16 = 0x0005;
    /// UDP Transport.
    pub const UDP_TRANSPORT: u16 = 0x0006;
    /// UDP-Lite Transport.
    pub const UDP_LITE_TRANSPORT: u16 = 0x0007;
    /// Pool Member Selection Policy.
    pub const POOL_POLICY: u16 = 0x0008;
    /// Pool Handle.
    pub const POOL_HANDLE: u16 = 0x0009;
    /// Pool Element.
    pub const POOL_ELEMENT: u16 = 0x000a;
    /// Server Information.
    pub const SERVER_INFORMATION: u16 = 0x000b;
    /// Operation Error.
    pub const OPERATION_ERROR: u16 = 0x000c;
    /// Cookie.
    pub const COOKIE: u16 = 0x000d;
    /// PE Identifier.
    pub const PE_IDENTIFIER: u16 = 0x000e;
    /// PE Checksum.
    pub const PE_CHECKSUM: u16 = 0x000f;
    /// Opaque Transport.
    pub const OPAQUE_TRANSPORT: u16 = 0x0010;
    /// Handle Resolution Option (draft-dreibholz-rserpool-asap-hropt; upper bits `10`: skip if
    /// unknown).
    pub const HANDLE_RESOLUTION_OPTION: u16 = 0x803f;

    /// Whether this codec knows the parameter type.
    pub const fn is_known(ty: u16) -> bool {
        matches!(
            ty,
            IPV4_ADDRESS..=OPAQUE_TRANSPORT | HANDLE_RESOLUTION_OPTION
        )
    }
}

/// A decoded message and the parameters it carried that the RFC 5354 §3 `11` rule skipped but
/// asks to report (cause 0x1, one cause per TLV).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded<M> {
    /// The message.
    pub message: M,
    /// Skipped parameters to report back.
    pub unrecognized: Unrecognized,
}

/// Validates the common header (RFC 5354 §4) and returns type, flags and a cursor over the value.
fn header(msg: &[u8]) -> Result<(u8, u8, wire::Cursor<'_>), DecodeError> {
    if msg.len() < 4 {
        return Err(DecodeError::Truncated {
            what: "message header",
            offset: msg.len(),
        });
    }
    let length = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    if length < 4 || length > msg.len() || msg.len() - length > 3 {
        return Err(DecodeError::BadLength {
            what: "message",
            length,
            offset: 0,
        });
    }
    Ok((msg[0], msg[1], wire::Cursor::new(msg, 4, length)))
}

/// The error for an unknown message type, by its upper two bits (RFC 5354 §4: `01` = report).
fn unknown_message(ty: u8) -> DecodeError {
    DecodeError::UnknownMessageType {
        message_type: ty,
        report: ty >> 6 == 0b01,
    }
}
