//! Typed errors of decoding and encoding, and the RFC 5354 error cause each decode error maps to.

use core::fmt;
use core::ops::Range;

/// Operation Error cause codes (RFC 5354 §3.12).
pub mod cause {
    /// Unspecified Error (RFC 5354 §3.12.1).
    pub const UNSPECIFIED: u16 = 0x0000;
    /// Unrecognized Parameter; the info is the whole TLV (RFC 5354 §3.12.2).
    pub const UNRECOGNIZED_PARAMETER: u16 = 0x0001;
    /// Unrecognized Message; the info is the message (RFC 5354 §3.12.3).
    pub const UNRECOGNIZED_MESSAGE: u16 = 0x0002;
    /// Invalid Values; the info is the offending TLV (RFC 5354 §3.12.4).
    pub const INVALID_VALUES: u16 = 0x0003;
    /// Non-unique PE Identifier (RFC 5354 §3.12.5).
    pub const NON_UNIQUE_PE_ID: u16 = 0x0004;
    /// Inconsistent Pooling Policy; the info is the pool's policy TLV (RFC 5354 §3.12.6).
    pub const INCONSISTENT_POLICY: u16 = 0x0005;
    /// Lack of Resources (RFC 5354 §3.12.7).
    pub const LACK_OF_RESOURCES: u16 = 0x0006;
    /// Inconsistent Transport Type; the info is the pool's transport TLV (RFC 5354 §3.12.8).
    pub const INCONSISTENT_TRANSPORT: u16 = 0x0007;
    /// Inconsistent Data/Control Configuration (RFC 5354 §3.12.9).
    pub const INCONSISTENT_DATA_CONTROL: u16 = 0x0008;
    /// Unknown Pool Handle (RFC 5354 §3.12.11).
    pub const UNKNOWN_POOL_HANDLE: u16 = 0x0009;
    /// Rejected due to security considerations (RFC 5354 §3.12.10).
    pub const REJECTED_SECURITY: u16 = 0x000a;
}

/// What RFC 5354 §3 tells a receiver to do with an unrecognized parameter (upper two type bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParameterAction {
    /// `00`: stop processing the message and discard it.
    Stop,
    /// `01`: stop, discard, and report "Unrecognized Parameter".
    StopAndReport,
    /// `10`: skip this parameter and continue.
    Skip,
    /// `11`: skip, continue, and report "Unrecognized Parameter".
    SkipAndReport,
}

impl ParameterAction {
    /// The action encoded in the upper two bits of a parameter type.
    pub const fn of(parameter_type: u16) -> Self {
        match parameter_type >> 14 {
            0 => Self::Stop,
            1 => Self::StopAndReport,
            2 => Self::Skip,
            _ => Self::SkipAndReport,
        }
    }

    /// Whether the receiver continues with the rest of the message.
    pub const fn skips(self) -> bool {
        matches!(self, Self::Skip | Self::SkipAndReport)
    }

    /// Whether the receiver reports the parameter back with cause 0x1.
    pub const fn reports(self) -> bool {
        matches!(self, Self::StopAndReport | Self::SkipAndReport)
    }
}

/// Why a message could not be decoded. Offsets and ranges count from the first byte of the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ends before `what` is complete.
    Truncated {
        /// The field or parameter being read.
        what: &'static str,
        /// Offset where the missing bytes start.
        offset: usize,
    },
    /// A length field is impossible (below its minimum, or not matching the bytes given).
    BadLength {
        /// The message or parameter whose length is wrong.
        what: &'static str,
        /// The length the field claims.
        length: usize,
        /// Offset of the length's TLV or message.
        offset: usize,
    },
    /// The message type is not one this protocol defines (RFC 5354 §4).
    UnknownMessageType {
        /// The type byte.
        message_type: u8,
        /// Whether the upper two bits ask for an "Unrecognized Message" report (`01`).
        report: bool,
    },
    /// A parameter this codec does not know, whose upper two bits say "stop" (RFC 5354 §3).
    UnrecognizedParameter {
        /// The parameter type.
        parameter_type: u16,
        /// The TLV's bytes within the message (for the cause 0x1 info).
        tlv: Range<usize>,
        /// `Stop` or `StopAndReport`.
        action: ParameterAction,
    },
    /// A mandatory parameter is absent.
    MissingParameter {
        /// The message or parameter that needs it.
        within: &'static str,
        /// The parameter that is missing.
        expected: &'static str,
    },
    /// A known parameter stands where the message layout does not allow it.
    UnexpectedParameter {
        /// The message or parameter being decoded.
        within: &'static str,
        /// The parameter type found.
        parameter_type: u16,
        /// The TLV's bytes within the message.
        tlv: Range<usize>,
    },
    /// A parameter has a value the protocol does not allow.
    InvalidValue {
        /// The parameter or field.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
        /// The TLV's bytes within the message (for the cause 0x3 info).
        tlv: Range<usize>,
    },
    /// A member-selection policy type this codec does not know (RSPLIB answers 0x100b).
    UnsupportedPolicy {
        /// The policy type code.
        policy_type: u32,
        /// The policy TLV's bytes within the message.
        tlv: Range<usize>,
    },
}

impl DecodeError {
    /// The RFC 5354 §3.12 cause a receiver replies with, or `None` where the RFC says drop silently.
    pub fn reply_cause(&self) -> Option<u16> {
        match self {
            Self::UnknownMessageType { report, .. } => {
                report.then_some(cause::UNRECOGNIZED_MESSAGE)
            }
            Self::UnrecognizedParameter { action, .. } => {
                action.reports().then_some(cause::UNRECOGNIZED_PARAMETER)
            }
            Self::InvalidValue { .. } | Self::UnsupportedPolicy { .. } => {
                Some(cause::INVALID_VALUES)
            }
            Self::Truncated { .. }
            | Self::BadLength { .. }
            | Self::MissingParameter { .. }
            | Self::UnexpectedParameter { .. } => None,
        }
    }

    /// The bytes a reply carries as cause info: the offending TLV, or for an unknown message the
    /// whole message. `message` must be the buffer that was decoded.
    pub fn cause_info<'m>(&self, message: &'m [u8]) -> &'m [u8] {
        let range = match self {
            // The message without its padding: the header's length when it is plausible.
            Self::UnknownMessageType { .. } => match message {
                [_, _, hi, lo, ..] => {
                    0..usize::from(u16::from_be_bytes([*hi, *lo])).min(message.len())
                }
                _ => 0..message.len(),
            },
            Self::UnrecognizedParameter { tlv, .. }
            | Self::UnexpectedParameter { tlv, .. }
            | Self::InvalidValue { tlv, .. }
            | Self::UnsupportedPolicy { tlv, .. } => tlv.clone(),
            Self::Truncated { .. } | Self::BadLength { .. } | Self::MissingParameter { .. } => 0..0,
        };
        message.get(range).unwrap_or_default()
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { what, offset } => {
                write!(f, "message ends inside {what} (at byte {offset})")
            }
            Self::BadLength {
                what,
                length,
                offset,
            } => write!(f, "{what} at byte {offset} has impossible length {length}"),
            Self::UnknownMessageType {
                message_type,
                report,
            } => write!(
                f,
                "unknown message type {message_type:#04x} ({})",
                if *report { "drop and report" } else { "drop" }
            ),
            Self::UnrecognizedParameter {
                parameter_type,
                tlv,
                action,
            } => write!(
                f,
                "unrecognized parameter type {parameter_type:#06x} at byte {} ({action:?})",
                tlv.start
            ),
            Self::MissingParameter { within, expected } => {
                write!(f, "{within} lacks its mandatory {expected} parameter")
            }
            Self::UnexpectedParameter {
                within,
                parameter_type,
                tlv,
            } => write!(
                f,
                "parameter type {parameter_type:#06x} at byte {} is out of place in {within}",
                tlv.start
            ),
            Self::InvalidValue { what, reason, tlv } => {
                write!(f, "invalid {what} at byte {}: {reason}", tlv.start)
            }
            Self::UnsupportedPolicy { policy_type, tlv } => write!(
                f,
                "unsupported member selection policy {policy_type:#010x} at byte {}",
                tlv.start
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The caller's buffer is too small; `needed` is a lower bound of the size required.
    BufferTooSmall {
        /// Bytes the encoder needed so far.
        needed: usize,
    },
    /// The message or a parameter would exceed the 16-bit length field.
    TooLong {
        /// The message or parameter.
        what: &'static str,
    },
    /// A PE or PR identifier does not fit the generation's 32-bit field (RFC generation).
    IdTooWide {
        /// The identifier's field.
        what: &'static str,
        /// Its value.
        id: u64,
    },
    /// A value the wire format cannot carry.
    InvalidValue {
        /// The field.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall { needed } => {
                write!(f, "encode buffer too small: at least {needed} bytes needed")
            }
            Self::TooLong { what } => write!(f, "{what} exceeds the 65535-byte length field"),
            Self::IdTooWide { what, id } => write!(
                f,
                "{what} {id:#x} does not fit in 32 bits; use the NG generation for 64-bit identifiers"
            ),
            Self::InvalidValue { what, reason } => write!(f, "cannot encode {what}: {reason}"),
        }
    }
}

impl std::error::Error for EncodeError {}
