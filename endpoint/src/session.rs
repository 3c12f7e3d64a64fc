//! The ASAP session layer between a pool user and a pool element (RFC 5352 §3.8-3.9): the
//! control channel beside the application's data, on which the PE sends its state as
//! ASAP_COOKIE and its preferred failover alternatives as ASAP_BUSINESS_CARD, and on which a PU
//! that failed over sends the latest cookie back in ASAP_COOKIE_ECHO as its first control
//! message to the new PE.
//!
//! Two sans-I/O cores in the style of [`crate::pe`] and [`crate::pu`]: [`PeSession`] (one per
//! accepted PU connection) and [`PuSession`] (one per session of a PU with a pool). Neither reads
//! a clock or touches a socket, and neither needs one: §3.8-3.9 define no timers. They take
//! records, a PPID and its payload, either whole ([`PeSession::on_record`], as an SCTP message
//! arrives) or as stream bytes cut by the [`framing`] of `docs/session.md`
//! ([`PeSession::on_stream_bytes`]), and give [`Transmit`]s to send and events for the
//! application. [`crate::driver::session`] runs them over kernel SCTP, TCP and MPTCP.
//!
//! Hostile input never panics and never allocates without bound: a control message that does not
//! decode, does not belong on the control channel or in this direction, or carries a cookie
//! longer than the limit ([`MAX_COOKIE_LEN`] at most) is dropped with a typed [`SessionError`];
//! a record longer than the limits breaks the stream ([`framing::FramingError`]).

pub mod framing;
mod pe;
mod pu;

use core::fmt;

use rserpool_protocol::{
    AsapMessage, DecodeError, Generation, MAX_MESSAGE_LEN, Policy, PoolElementParam, PoolHandle,
    Seq, TransportParam, UserTransport,
};

pub use pe::{PeSession, PeSessionConfig, PeSessionEvent};
pub use pu::{PuSession, PuSessionConfig, PuSessionEvent, SessionAction};

use crate::{PeInfo, PeTransport};

/// The PPID of the control channel: ASAP (RFC 5352 §3.8; the IANA SCTP PPID of ASAP). Every
/// other PPID is application data.
pub const PPID_CONTROL: u32 = rserpool_protocol::PPID_ASAP;

/// The longest cookie an ASAP message can carry: the 16-bit message length (65 535) less the
/// message header (4) and the cookie parameter's header (4), rounded down to the 4-byte padding.
/// [`PeSessionConfig::max_cookie_len`] and [`PuSessionConfig::max_cookie_len`] may only lower it.
pub const MAX_COOKIE_LEN: usize = 65_524;

/// The default bound on one application data record: 1 MiB.
pub const DEFAULT_MAX_DATA_LEN: usize = 1 << 20;

/// One message to send: on SCTP a user message with this PPID, on a byte stream one record of
/// the [`framing`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// [`PPID_CONTROL`] for an ASAP control message, else the application's PPID.
    pub ppid: u32,
    /// The message.
    pub payload: Vec<u8>,
}

impl Transmit {
    /// The message as one record of the stream framing (header and payload).
    pub fn framed(&self) -> Result<Vec<u8>, framing::FramingError> {
        let mut out = Vec::new();
        framing::encode_record(self.ppid, &self.payload, &mut out)?;
        Ok(out)
    }

    /// Whether this is an ASAP control message.
    pub fn is_control(&self) -> bool {
        self.ppid == PPID_CONTROL
    }
}

/// What went wrong in a session. Errors of received control messages mean the message was
/// dropped and the session goes on; [`SessionError::Framing`] ends the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// The byte stream cannot be framed any more (a length lie or a peer that does not speak
    /// this framing); the connection must be closed.
    Framing(framing::FramingError),
    /// A control message (PPID 11) that does not decode as ASAP.
    BadControl(DecodeError),
    /// An ASAP message that does not belong on the control channel in this direction (RFC 5352
    /// §3.8-3.9: a PE receives ASAP_COOKIE_ECHO and ASAP_BUSINESS_CARD, a PU ASAP_COOKIE and
    /// ASAP_BUSINESS_CARD).
    UnexpectedControl {
        /// The ASAP message type.
        message_type: u8,
        /// Who received it: "PE" or "PU".
        receiver: &'static str,
    },
    /// A cookie longer than the limit (received: dropped; to send: refused).
    CookieTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An application message longer than the limit.
    DataTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The application asked to send data with PPID 11, the control channel's.
    ReservedPpid,
    /// A business card for another pool than the session's.
    ForeignBusinessCard {
        /// The card's pool handle, printable.
        pool_handle: String,
        /// The session's pool handle, printable.
        expected: String,
    },
    /// ASAP_COOKIE_ECHO after other messages of the session: RFC 5352 §3.8 sends it as the
    /// first message to a new PE, so a later one is dropped.
    LateCookieEcho,
    /// A business card needs at least one PE (RFC 5352 §2.2.13).
    EmptyBusinessCard,
    /// A control message could not be encoded (e.g. a 64-bit PE ID on the RFC generation).
    Encode(String),
    /// Application data waiting for a connection exceeds the bound.
    QueueFull {
        /// The bytes that would be queued.
        queued: usize,
        /// The bound.
        max: usize,
    },
    /// No PE left to fail over to: the business card's and the pool's PEs all failed.
    NoPoolElement {
        /// The pool handle, printable.
        pool_handle: String,
        /// PEs that failed in this session.
        failed: usize,
    },
    /// Failovers in a row without a PE answering exceed the bound.
    TooManyFailovers {
        /// Failovers made.
        attempts: u32,
        /// What the last PE's connection did.
        last_error: String,
    },
    /// The pool could not be resolved (the driver's [`crate::driver::Pu`]).
    Resolution(crate::Error),
    /// A socket call failed.
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        error: String,
    },
    /// The session is closed (the peer or the application closed it).
    Closed,
    /// A PE's session ended (the PU closed it, the application did, it was idle, or its
    /// connection broke): nothing more can be sent on it, e.g. through a
    /// [`crate::driver::session::SessionHandle`] kept by another thread.
    Ended {
        /// Why it ended, printable.
        reason: String,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Framing(e) => write!(f, "{e}"),
            Self::BadControl(e) => write!(f, "undecodable ASAP control message dropped: {e}"),
            Self::UnexpectedControl {
                message_type,
                receiver,
            } => write!(
                f,
                "ASAP message type {message_type:#04x} does not belong on the control channel \
                 to a {receiver} (RFC 5352 §3.8-3.9); dropped"
            ),
            Self::CookieTooLong { len, max } => write!(
                f,
                "a cookie of {len} bytes exceeds the limit of {max}: keep the session state \
                 smaller or raise max_cookie_len (at most {MAX_COOKIE_LEN})"
            ),
            Self::DataTooLong { len, max } => write!(
                f,
                "a message of {len} bytes exceeds the limit of {max}: split it or raise \
                 max_data_len"
            ),
            Self::ReservedPpid => write!(
                f,
                "PPID {PPID_CONTROL} is the ASAP control channel's: send application data with \
                 another PPID"
            ),
            Self::ForeignBusinessCard {
                pool_handle,
                expected,
            } => write!(
                f,
                "a business card for pool `{pool_handle}` in a session with pool `{expected}` \
                 was dropped"
            ),
            Self::LateCookieEcho => write!(
                f,
                "ASAP_COOKIE_ECHO after the session's first message was dropped (RFC 5352 §3.8: \
                 it opens the session with a new PE)"
            ),
            Self::EmptyBusinessCard => write!(
                f,
                "a business card needs at least one PE (RFC 5352 §2.2.13): name the preferred \
                 failover alternatives"
            ),
            Self::Encode(e) => write!(f, "cannot encode the control message: {e}"),
            Self::QueueFull { queued, max } => write!(
                f,
                "{queued} bytes would wait for the connection, more than the bound of {max}: \
                 wait for the session to connect"
            ),
            Self::NoPoolElement {
                pool_handle,
                failed,
            } => write!(
                f,
                "no pool element of `{pool_handle}` left to fail over to ({failed} failed in this \
                 session): check that PEs are registered and reachable"
            ),
            Self::TooManyFailovers {
                attempts,
                last_error,
            } => write!(
                f,
                "gave up after {attempts} failovers in a row, the last PE: {last_error}; check \
                 the pool's PEs or raise max_failovers"
            ),
            Self::Resolution(e) => write!(f, "cannot resolve the pool: {e}"),
            Self::Io { what, error } => write!(f, "{what}: {error}"),
            Self::Closed => write!(f, "the session is closed"),
            Self::Ended { reason } => write!(
                f,
                "the session has ended ({reason}): nothing more can be sent on it; drop its \
                 handle (the PU fails over with the latest cookie and its new session brings it \
                 back in ASAP_COOKIE_ECHO, RFC 5352 §3.8)"
            ),
        }
    }
}

impl std::error::Error for SessionError {}

impl From<framing::FramingError> for SessionError {
    fn from(e: framing::FramingError) -> Self {
        Self::Framing(e)
    }
}

/// A control message as a session core uses it (owned, validated).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Control {
    Cookie(Vec<u8>),
    CookieEcho(Vec<u8>),
    BusinessCard {
        pool_handle: Vec<u8>,
        pool_elements: Vec<PeInfo>,
    },
}

/// Application data of `len` bytes, sent or received, within `max`
/// ([`SessionError::DataTooLong`] beyond).
fn check_data_len(len: usize, max: usize) -> Result<(), SessionError> {
    if len > max {
        return Err(SessionError::DataTooLong { len, max });
    }
    Ok(())
}

/// Decodes one control message received by `receiver` ("PE" or "PU"). Cookies longer than
/// `max_cookie` are refused before they are copied.
fn decode_control(
    payload: &[u8],
    generation: Generation,
    max_cookie: usize,
    receiver: &'static str,
) -> Result<Control, SessionError> {
    let decoded = AsapMessage::decode(payload, generation).map_err(SessionError::BadControl)?;
    let cookie = |c: &[u8]| {
        if c.len() > max_cookie {
            Err(SessionError::CookieTooLong {
                len: c.len(),
                max: max_cookie,
            })
        } else {
            Ok(c.to_vec())
        }
    };
    match decoded.message {
        AsapMessage::Cookie(c) => Ok(Control::Cookie(cookie(c)?)),
        AsapMessage::CookieEcho(c) => Ok(Control::CookieEcho(cookie(c)?)),
        AsapMessage::BusinessCard {
            pool_handle,
            pool_elements,
            ..
        } => Ok(Control::BusinessCard {
            pool_handle: pool_handle.as_bytes().to_vec(),
            pool_elements: pool_elements
                .iter()
                .map(|p| PeInfo::from_view(&p))
                .collect(),
        }),
        other => Err(SessionError::UnexpectedControl {
            message_type: other.message_type(),
            receiver,
        }),
    }
}

/// Encodes ASAP_COOKIE or ASAP_COOKIE_ECHO.
fn encode_cookie(
    echo: bool,
    cookie: &[u8],
    generation: Generation,
    max_cookie: usize,
) -> Result<Transmit, SessionError> {
    let max = max_cookie.min(MAX_COOKIE_LEN);
    if cookie.len() > max {
        return Err(SessionError::CookieTooLong {
            len: cookie.len(),
            max,
        });
    }
    let message = if echo {
        AsapMessage::CookieEcho(cookie)
    } else {
        AsapMessage::Cookie(cookie)
    };
    let payload =
        crate::encode(&message, generation).map_err(|e| SessionError::Encode(e.to_string()))?;
    Ok(Transmit {
        ppid: PPID_CONTROL,
        payload,
    })
}

/// Encodes ASAP_BUSINESS_CARD (RFC 5352 §2.2.13) naming `pool_elements` in failover order.
fn encode_business_card(
    pool_handle: &[u8],
    policy: Option<Policy>,
    pool_elements: &[PeInfo],
    generation: Generation,
) -> Result<Transmit, SessionError> {
    if pool_elements.is_empty() {
        return Err(SessionError::EmptyBusinessCard);
    }
    let params: Vec<PoolElementParam<'_>> = pool_elements.iter().map(wire_pe).collect();
    let message = AsapMessage::BusinessCard {
        pool_handle: PoolHandle(pool_handle),
        policy,
        pool_elements: Seq::from_items(&params),
    };
    let payload =
        crate::encode(&message, generation).map_err(|e| SessionError::Encode(e.to_string()))?;
    Ok(Transmit {
        ppid: PPID_CONTROL,
        payload,
    })
}

/// A PE as the wire's Pool Element parameter.
fn wire_pe(pe: &PeInfo) -> PoolElementParam<'_> {
    let user_transport = match &pe.transport {
        PeTransport::Transport {
            kind,
            port,
            addresses,
            transport_use,
        } => UserTransport::Transport(TransportParam {
            kind: *kind,
            port: *port,
            transport_use: *transport_use,
            service_code: 0,
            addresses: Seq::from_items(addresses),
        }),
        PeTransport::Opaque(bytes) => UserTransport::Opaque(bytes),
    };
    PoolElementParam {
        id: pe.id,
        home_pr: pe.home_pr,
        registration_life: pe.registration_life,
        user_transport,
        policy: pe.policy,
        asap_transport: None,
    }
}

/// The longest control record payload: one ASAP message.
const MAX_CONTROL_LEN: usize = MAX_MESSAGE_LEN;

#[cfg(test)]
mod tests;
