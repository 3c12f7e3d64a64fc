//! ASAP messages (RFC 5352 §2.2, SCTP PPID 11): decode into borrowed views, encode into a caller's
//! buffer, parameters in exactly the order of the RFC (RSPLIB parses order-strictly).

use crate::error::{DecodeError, EncodeError};
use crate::param::{
    OperationError, Policy, PoolElementParam, PoolHandle, TransportParam, decode_operation_error,
    decode_pe_id, decode_policy, decode_pool_element, decode_pool_handle, encode_operation_error,
    encode_pe_id, encode_policy, encode_pool_element, encode_pool_elements, encode_pool_handle,
    encode_transport,
};
use core::ops::Range;

use crate::wire::{Cursor, Seq, Unrecognized, Writer, padded};
use crate::{Decoded, Generation, PeId, PrId, param_type as pt};

/// ASAP message type codes (RFC 5352 §2.2).
pub mod message_type {
    /// ASAP_REGISTRATION.
    pub const REGISTRATION: u8 = 0x01;
    /// ASAP_DEREGISTRATION.
    pub const DEREGISTRATION: u8 = 0x02;
    /// ASAP_REGISTRATION_RESPONSE.
    pub const REGISTRATION_RESPONSE: u8 = 0x03;
    /// ASAP_DEREGISTRATION_RESPONSE.
    pub const DEREGISTRATION_RESPONSE: u8 = 0x04;
    /// ASAP_HANDLE_RESOLUTION.
    pub const HANDLE_RESOLUTION: u8 = 0x05;
    /// ASAP_HANDLE_RESOLUTION_RESPONSE.
    pub const HANDLE_RESOLUTION_RESPONSE: u8 = 0x06;
    /// ASAP_ENDPOINT_KEEP_ALIVE.
    pub const ENDPOINT_KEEP_ALIVE: u8 = 0x07;
    /// ASAP_ENDPOINT_KEEP_ALIVE_ACK.
    pub const ENDPOINT_KEEP_ALIVE_ACK: u8 = 0x08;
    /// ASAP_ENDPOINT_UNREACHABLE.
    pub const ENDPOINT_UNREACHABLE: u8 = 0x09;
    /// ASAP_SERVER_ANNOUNCE.
    pub const SERVER_ANNOUNCE: u8 = 0x0a;
    /// ASAP_COOKIE.
    pub const COOKIE: u8 = 0x0b;
    /// ASAP_COOKIE_ECHO.
    pub const COOKIE_ECHO: u8 = 0x0c;
    /// ASAP_BUSINESS_CARD.
    pub const BUSINESS_CARD: u8 = 0x0d;
    /// ASAP_ERROR.
    pub const ERROR: u8 = 0x0e;
}

/// The result part of an ASAP_HANDLE_RESOLUTION_RESPONSE (RFC 5352 §2.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution<'a> {
    /// The pool's PEs (at least one) with the overall pool policy. RSPLIB's PUs need the policy,
    /// so encoders always send it; the RFC lets it be absent for Round Robin pools.
    Found {
        /// The overall pool policy.
        policy: Option<Policy>,
        /// The selected PEs.
        pool_elements: Seq<'a, PoolElementParam<'a>>,
    },
    /// The resolution failed (e.g. cause 0x9 Unknown Pool Handle).
    Failed(OperationError<'a>),
}

/// An ASAP message (RFC 5352 §2.2) as a borrowed view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsapMessage<'a> {
    /// ASAP_REGISTRATION (§2.2.1): a PE registers or re-registers.
    Registration {
        /// The pool to join.
        pool_handle: PoolHandle<'a>,
        /// The PE (home PR 0 and no ASAP transport when sent by a PE).
        pool_element: PoolElementParam<'a>,
    },
    /// ASAP_DEREGISTRATION (§2.2.2).
    Deregistration {
        /// The pool.
        pool_handle: PoolHandle<'a>,
        /// The PE leaving it.
        pe_id: PeId,
    },
    /// ASAP_REGISTRATION_RESPONSE (§2.2.3).
    RegistrationResponse {
        /// R flag: the registration was rejected.
        rejected: bool,
        /// The pool.
        pool_handle: PoolHandle<'a>,
        /// The PE.
        pe_id: PeId,
        /// Why it was rejected.
        error: Option<OperationError<'a>>,
    },
    /// ASAP_DEREGISTRATION_RESPONSE (§2.2.4); an error means it was rejected.
    DeregistrationResponse {
        /// The pool.
        pool_handle: PoolHandle<'a>,
        /// The PE.
        pe_id: PeId,
        /// Why it was rejected.
        error: Option<OperationError<'a>>,
    },
    /// ASAP_HANDLE_RESOLUTION (§2.2.5), with RSPLIB's handle-resolution option.
    HandleResolution {
        /// S flag: subscribe to dynamic updates.
        subscribe: bool,
        /// The pool to resolve.
        pool_handle: PoolHandle<'a>,
        /// Handle-resolution option 0x803f: how many PEs the PU wants (0xffffffff = all).
        items: Option<u32>,
    },
    /// ASAP_HANDLE_RESOLUTION_RESPONSE (§2.2.6).
    HandleResolutionResponse {
        /// A flag: dynamic updates accepted.
        accepted: bool,
        /// The pool.
        pool_handle: PoolHandle<'a>,
        /// The PEs or the error.
        resolution: Resolution<'a>,
    },
    /// ASAP_ENDPOINT_KEEP_ALIVE (§2.2.7), with RSPLIB's PE identifier extension.
    EndpointKeepAlive {
        /// H flag: the sender wants to become the PE's home PR.
        home: bool,
        /// The sending PR.
        server_id: PrId,
        /// The pool.
        pool_handle: PoolHandle<'a>,
        /// The PE asked (RSPLIB extension; absent = every PE of the association).
        pe_id: Option<PeId>,
    },
    /// ASAP_ENDPOINT_KEEP_ALIVE_ACK (§2.2.8).
    EndpointKeepAliveAck {
        /// The pool.
        pool_handle: PoolHandle<'a>,
        /// The PE answering.
        pe_id: PeId,
    },
    /// ASAP_ENDPOINT_UNREACHABLE (§2.2.9).
    EndpointUnreachable {
        /// The pool.
        pool_handle: PoolHandle<'a>,
        /// The PE the PU could not reach.
        pe_id: PeId,
    },
    /// ASAP_SERVER_ANNOUNCE (§2.2.10).
    ServerAnnounce {
        /// The announcing PR.
        server_id: PrId,
        /// Where to reach it (SCTP or TCP); empty = the packet's source address.
        transports: Seq<'a, TransportParam<'a>>,
    },
    /// ASAP_COOKIE (§2.2.11): opaque state from a PE to its PU.
    Cookie(&'a [u8]),
    /// ASAP_COOKIE_ECHO (§2.2.12): the last cookie, sent back on failover.
    CookieEcho(&'a [u8]),
    /// ASAP_BUSINESS_CARD (§2.2.13).
    BusinessCard {
        /// The pool.
        pool_handle: PoolHandle<'a>,
        /// A policy, as RSPLIB inserts one (decoded leniently; not in the RFC).
        policy: Option<Policy>,
        /// The PEs in preferred failover order.
        pool_elements: Seq<'a, PoolElementParam<'a>>,
    },
    /// ASAP_ERROR (§2.2.14).
    Error(OperationError<'a>),
}

const FLAG_BIT0: u8 = 0x01;

impl<'a> AsapMessage<'a> {
    /// The message type code.
    pub const fn message_type(&self) -> u8 {
        use message_type as t;
        match self {
            Self::Registration { .. } => t::REGISTRATION,
            Self::Deregistration { .. } => t::DEREGISTRATION,
            Self::RegistrationResponse { .. } => t::REGISTRATION_RESPONSE,
            Self::DeregistrationResponse { .. } => t::DEREGISTRATION_RESPONSE,
            Self::HandleResolution { .. } => t::HANDLE_RESOLUTION,
            Self::HandleResolutionResponse { .. } => t::HANDLE_RESOLUTION_RESPONSE,
            Self::EndpointKeepAlive { .. } => t::ENDPOINT_KEEP_ALIVE,
            Self::EndpointKeepAliveAck { .. } => t::ENDPOINT_KEEP_ALIVE_ACK,
            Self::EndpointUnreachable { .. } => t::ENDPOINT_UNREACHABLE,
            Self::ServerAnnounce { .. } => t::SERVER_ANNOUNCE,
            Self::Cookie(_) => t::COOKIE,
            Self::CookieEcho(_) => t::COOKIE_ECHO,
            Self::BusinessCard { .. } => t::BUSINESS_CARD,
            Self::Error(_) => t::ERROR,
        }
    }

    /// The flags byte.
    pub const fn flags(&self) -> u8 {
        let bit = match self {
            Self::RegistrationResponse { rejected, .. } => *rejected,
            Self::HandleResolution { subscribe, .. } => *subscribe,
            Self::HandleResolutionResponse { accepted, .. } => *accepted,
            Self::EndpointKeepAlive { home, .. } => *home,
            _ => false,
        };
        if bit { FLAG_BIT0 } else { 0 }
    }

    /// Decodes one ASAP message. `msg` holds exactly one message, optionally followed by up to
    /// three padding bytes (an SCTP user message or one frame of a byte stream).
    pub fn decode(msg: &'a [u8], generation: Generation) -> Result<Decoded<Self>, DecodeError> {
        let (ty, flags, mut cur) = crate::header(msg)?;
        let mut unrecognized = Unrecognized::default();
        let u = &mut unrecognized;
        let bit0 = flags & FLAG_BIT0 != 0;
        use message_type as t;
        let message = match ty {
            t::REGISTRATION => {
                const W: &str = "ASAP_REGISTRATION";
                let pool_handle = handle(&mut cur, W, u)?;
                let tlv = cur.expect(pt::POOL_ELEMENT, W, "pool element", u)?;
                let pool_element = decode_pool_element(&tlv, msg, generation, u)?;
                Self::Registration {
                    pool_handle,
                    pool_element,
                }
            }
            t::DEREGISTRATION => {
                const W: &str = "ASAP_DEREGISTRATION";
                let pool_handle = handle(&mut cur, W, u)?;
                let pe_id = pe_id(&mut cur, W, generation, u)?;
                Self::Deregistration { pool_handle, pe_id }
            }
            t::REGISTRATION_RESPONSE => {
                const W: &str = "ASAP_REGISTRATION_RESPONSE";
                let pool_handle = handle(&mut cur, W, u)?;
                let pe_id = pe_id(&mut cur, W, generation, u)?;
                let error = optional_error(&mut cur, u)?;
                Self::RegistrationResponse {
                    rejected: bit0,
                    pool_handle,
                    pe_id,
                    error,
                }
            }
            t::DEREGISTRATION_RESPONSE => {
                const W: &str = "ASAP_DEREGISTRATION_RESPONSE";
                let pool_handle = handle(&mut cur, W, u)?;
                let pe_id = pe_id(&mut cur, W, generation, u)?;
                let error = optional_error(&mut cur, u)?;
                Self::DeregistrationResponse {
                    pool_handle,
                    pe_id,
                    error,
                }
            }
            t::HANDLE_RESOLUTION => {
                const W: &str = "ASAP_HANDLE_RESOLUTION";
                let pool_handle = handle(&mut cur, W, u)?;
                let items = match cur.optional(pt::HANDLE_RESOLUTION_OPTION, u)? {
                    Some(tlv) => {
                        let v = tlv.value;
                        if v.len() != 4 {
                            return Err(tlv.invalid("handle resolution option", "length is not 8"));
                        }
                        Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
                    }
                    None => None,
                };
                Self::HandleResolution {
                    subscribe: bit0,
                    pool_handle,
                    items,
                }
            }
            t::HANDLE_RESOLUTION_RESPONSE => {
                const W: &str = "ASAP_HANDLE_RESOLUTION_RESPONSE";
                let pool_handle = handle(&mut cur, W, u)?;
                let resolution = match optional_error(&mut cur, u)? {
                    Some(e) => Resolution::Failed(e),
                    None => {
                        let policy = match cur.optional(pt::POOL_POLICY, u)? {
                            Some(tlv) => Some(decode_policy(&tlv)?),
                            None => None,
                        };
                        let pool_elements = pool_elements(&mut cur, W, generation, u)?;
                        Resolution::Found {
                            policy,
                            pool_elements,
                        }
                    }
                };
                Self::HandleResolutionResponse {
                    accepted: bit0,
                    pool_handle,
                    resolution,
                }
            }
            t::ENDPOINT_KEEP_ALIVE => {
                const W: &str = "ASAP_ENDPOINT_KEEP_ALIVE";
                let server_id = PrId(cur.id(generation, "server identifier")?);
                let pool_handle = handle(&mut cur, W, u)?;
                let pe_id = match cur.optional(pt::PE_IDENTIFIER, u)? {
                    Some(tlv) => Some(decode_pe_id(&tlv, generation)?),
                    None => None,
                };
                Self::EndpointKeepAlive {
                    home: bit0,
                    server_id,
                    pool_handle,
                    pe_id,
                }
            }
            t::ENDPOINT_KEEP_ALIVE_ACK => {
                const W: &str = "ASAP_ENDPOINT_KEEP_ALIVE_ACK";
                let pool_handle = handle(&mut cur, W, u)?;
                let pe_id = pe_id(&mut cur, W, generation, u)?;
                Self::EndpointKeepAliveAck { pool_handle, pe_id }
            }
            t::ENDPOINT_UNREACHABLE => {
                const W: &str = "ASAP_ENDPOINT_UNREACHABLE";
                let pool_handle = handle(&mut cur, W, u)?;
                let pe_id = pe_id(&mut cur, W, generation, u)?;
                Self::EndpointUnreachable { pool_handle, pe_id }
            }
            t::SERVER_ANNOUNCE => {
                let server_id = PrId(cur.id(generation, "server identifier")?);
                let transports = Seq::decode(&mut cur, generation, u)?;
                Self::ServerAnnounce {
                    server_id,
                    transports,
                }
            }
            t::COOKIE => Self::Cookie(cookie(&mut cur, "ASAP_COOKIE", u)?),
            t::COOKIE_ECHO => Self::CookieEcho(cookie(&mut cur, "ASAP_COOKIE_ECHO", u)?),
            t::BUSINESS_CARD => {
                const W: &str = "ASAP_BUSINESS_CARD";
                let pool_handle = handle(&mut cur, W, u)?;
                let policy = match cur.optional(pt::POOL_POLICY, u)? {
                    Some(tlv) => Some(decode_policy(&tlv)?),
                    None => None,
                };
                let pool_elements = pool_elements(&mut cur, W, generation, u)?;
                Self::BusinessCard {
                    pool_handle,
                    policy,
                    pool_elements,
                }
            }
            t::ERROR => {
                const W: &str = "ASAP_ERROR";
                let tlv = cur.expect(pt::OPERATION_ERROR, W, "operation error", u)?;
                Self::Error(decode_operation_error(&tlv, msg)?)
            }
            _ => return Err(crate::unknown_message(ty)),
        };
        cur.finish(message_name(ty), u)?;
        Ok(Decoded {
            message,
            unrecognized,
        })
    }

    /// Encodes the message into `buf` and returns its length (a multiple of 4: like RSPLIB, the
    /// length field counts the last parameter's padding).
    pub fn encode(&self, generation: Generation, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        // Type, flags and a length placeholder.
        *w.array()? = [self.message_type(), self.flags(), 0, 0];
        match self {
            Self::Registration {
                pool_handle,
                pool_element,
            } => {
                encode_pool_handle(&mut w, *pool_handle)?;
                encode_pool_element(&mut w, pool_element, generation)?;
            }
            Self::Deregistration { pool_handle, pe_id }
            | Self::EndpointKeepAliveAck { pool_handle, pe_id }
            | Self::EndpointUnreachable { pool_handle, pe_id } => {
                encode_pool_handle(&mut w, *pool_handle)?;
                encode_pe_id(&mut w, *pe_id, generation)?;
            }
            Self::RegistrationResponse {
                pool_handle,
                pe_id,
                error,
                ..
            }
            | Self::DeregistrationResponse {
                pool_handle,
                pe_id,
                error,
            } => {
                encode_pool_handle(&mut w, *pool_handle)?;
                encode_pe_id(&mut w, *pe_id, generation)?;
                if let Some(e) = error {
                    encode_operation_error(&mut w, e)?;
                }
            }
            Self::HandleResolution {
                pool_handle, items, ..
            } => {
                encode_pool_handle(&mut w, *pool_handle)?;
                if let Some(n) = items {
                    w.tlv(pt::HANDLE_RESOLUTION_OPTION, &n.to_be_bytes(), "option")?;
                }
            }
            Self::HandleResolutionResponse {
                pool_handle,
                resolution,
                ..
            } => {
                encode_pool_handle(&mut w, *pool_handle)?;
                match resolution {
                    Resolution::Found {
                        policy,
                        pool_elements,
                    } => {
                        if pool_elements.is_empty() {
                            return Err(EncodeError::InvalidValue {
                                what: "handle resolution response",
                                reason: "a positive response needs at least one PE",
                            });
                        }
                        if let Some(p) = policy {
                            encode_policy(&mut w, p)?;
                        }
                        encode_pool_elements(&mut w, pool_elements, generation)?;
                    }
                    Resolution::Failed(e) => encode_operation_error(&mut w, e)?,
                }
            }
            Self::EndpointKeepAlive {
                server_id,
                pool_handle,
                pe_id,
                ..
            } => {
                w.id(generation, server_id.0, "server identifier")?;
                encode_pool_handle(&mut w, *pool_handle)?;
                if let Some(id) = pe_id {
                    encode_pe_id(&mut w, *id, generation)?;
                }
            }
            Self::ServerAnnounce {
                server_id,
                transports,
            } => {
                w.id(generation, server_id.0, "server identifier")?;
                for t in transports.iter() {
                    encode_transport(&mut w, &t)?;
                }
            }
            Self::Cookie(c) | Self::CookieEcho(c) => w.tlv(pt::COOKIE, c, "cookie")?,
            Self::BusinessCard {
                pool_handle,
                policy,
                pool_elements,
            } => {
                if pool_elements.is_empty() {
                    return Err(EncodeError::InvalidValue {
                        what: "business card",
                        reason: "a business card needs at least one PE",
                    });
                }
                encode_pool_handle(&mut w, *pool_handle)?;
                if let Some(p) = policy {
                    encode_policy(&mut w, p)?;
                }
                encode_pool_elements(&mut w, pool_elements, generation)?;
            }
            Self::Error(e) => encode_operation_error(&mut w, e)?,
        }
        let len = w.pos();
        w.set_len(0, len, "ASAP message")?;
        Ok(len)
    }
}

/// An ASAP_HANDLE_RESOLUTION's fields (RFC 5352 §2.2.5), as
/// [`decode_plain_handle_resolution`] reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleResolutionRequest<'a> {
    /// The subscription flag (RSPLIB's "S" bit).
    pub subscribe: bool,
    /// The pool to resolve.
    pub pool_handle: PoolHandle<'a>,
    /// The number of PEs asked for (RFC 5352 §2.2.5's Handle Resolution Option), if sent.
    pub items: Option<u32>,
}

/// An ASAP_HANDLE_RESOLUTION in its plain form, read without the general decoder's
/// bookkeeping: the header's length is the message's, a non-empty pool handle parameter, at
/// most a Handle Resolution Option after it, nothing else. `None` for every other message and
/// for anything unusual or malformed, which [`AsapMessage::decode`] then handles (with the
/// RFC's error or report); where this returns a request, that decoder returns the same one.
/// Both generations encode this message alike.
pub fn decode_plain_handle_resolution(msg: &[u8]) -> Option<HandleResolutionRequest<'_>> {
    let tlv_at = |at: usize| -> Option<(u16, usize)> {
        let h = msg.get(at..at + 4)?;
        Some((
            u16::from_be_bytes([h[0], h[1]]),
            usize::from(u16::from_be_bytes([h[2], h[3]])),
        ))
    };
    let (ty_flags, length) = tlv_at(0)?;
    let [ty, flags] = ty_flags.to_be_bytes();
    if ty != message_type::HANDLE_RESOLUTION || length != msg.len() {
        return None;
    }
    let (handle_type, handle_len) = tlv_at(4)?;
    if handle_type != pt::POOL_HANDLE || handle_len <= 4 || 4 + handle_len > length {
        return None;
    }
    let pool_handle = PoolHandle(&msg[8..4 + handle_len]);
    let next = (4 + padded(handle_len)).min(length);
    let items = if next == length {
        None
    } else {
        let (option_type, option_len) = tlv_at(next)?;
        if option_type != pt::HANDLE_RESOLUTION_OPTION || option_len != 8 || next + 8 != length {
            return None;
        }
        let v = &msg[next + 4..next + 8];
        Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    };
    Some(HandleResolutionRequest {
        subscribe: flags & FLAG_BIT0 != 0,
        pool_handle,
        items,
    })
}

/// One Pool Element parameter on its own (RFC 5354 §3.10), for a caller that copies the same PE
/// into many handle resolution responses ([`encode_resolution_response`]). Returns the
/// parameter's length (a multiple of 4) and where its Member Selection Policy parameter lies
/// within it.
pub fn encode_pool_element_parameter(
    pe: &PoolElementParam<'_>,
    generation: Generation,
    buf: &mut [u8],
) -> Result<(usize, Range<usize>), EncodeError> {
    let mut w = Writer::new(buf);
    let policy = encode_pool_element(&mut w, pe, generation)?;
    Ok((w.pos(), policy))
}

/// ASAP_HANDLE_RESOLUTION_RESPONSE (RFC 5352 §2.2.6) assembled from parameters encoded earlier:
/// `pool_handle` is an encoded Pool Handle parameter
/// ([`crate::encode_pool_handle_parameter`]), `policy` an encoded Overall PE Selection Policy
/// parameter and each item of `pool_elements` an encoded Pool Element parameter
/// ([`encode_pool_element_parameter`]). The same bytes as encoding
/// [`AsapMessage::HandleResolutionResponse`] with the decoded values.
pub fn encode_resolution_response<'p>(
    accepted: bool,
    pool_handle: &[u8],
    policy: &[u8],
    pool_elements: impl IntoIterator<Item = &'p [u8]>,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut w = Writer::new(buf);
    let flags = if accepted { FLAG_BIT0 } else { 0 };
    *w.array()? = [message_type::HANDLE_RESOLUTION_RESPONSE, flags, 0, 0];
    w.bytes(pool_handle)?;
    w.bytes(policy)?;
    let first = w.pos();
    for pe in pool_elements {
        w.bytes(pe)?;
    }
    if w.pos() == first {
        return Err(EncodeError::InvalidValue {
            what: "handle resolution response",
            reason: "a positive response needs at least one PE",
        });
    }
    let len = w.pos();
    w.set_len(0, len, "ASAP message")?;
    Ok(len)
}

/// The RFC name of an ASAP message type, for errors and logs.
pub const fn message_name(ty: u8) -> &'static str {
    use message_type as t;
    match ty {
        t::REGISTRATION => "ASAP_REGISTRATION",
        t::DEREGISTRATION => "ASAP_DEREGISTRATION",
        t::REGISTRATION_RESPONSE => "ASAP_REGISTRATION_RESPONSE",
        t::DEREGISTRATION_RESPONSE => "ASAP_DEREGISTRATION_RESPONSE",
        t::HANDLE_RESOLUTION => "ASAP_HANDLE_RESOLUTION",
        t::HANDLE_RESOLUTION_RESPONSE => "ASAP_HANDLE_RESOLUTION_RESPONSE",
        t::ENDPOINT_KEEP_ALIVE => "ASAP_ENDPOINT_KEEP_ALIVE",
        t::ENDPOINT_KEEP_ALIVE_ACK => "ASAP_ENDPOINT_KEEP_ALIVE_ACK",
        t::ENDPOINT_UNREACHABLE => "ASAP_ENDPOINT_UNREACHABLE",
        t::SERVER_ANNOUNCE => "ASAP_SERVER_ANNOUNCE",
        t::COOKIE => "ASAP_COOKIE",
        t::COOKIE_ECHO => "ASAP_COOKIE_ECHO",
        t::BUSINESS_CARD => "ASAP_BUSINESS_CARD",
        t::ERROR => "ASAP_ERROR",
        _ => "unknown ASAP message",
    }
}

fn handle<'a>(
    cur: &mut Cursor<'a>,
    within: &'static str,
    u: &mut Unrecognized,
) -> Result<PoolHandle<'a>, DecodeError> {
    decode_pool_handle(&cur.expect(pt::POOL_HANDLE, within, "pool handle", u)?)
}

fn pe_id(
    cur: &mut Cursor<'_>,
    within: &'static str,
    generation: Generation,
    u: &mut Unrecognized,
) -> Result<PeId, DecodeError> {
    decode_pe_id(
        &cur.expect(pt::PE_IDENTIFIER, within, "PE identifier", u)?,
        generation,
    )
}

fn cookie<'a>(
    cur: &mut Cursor<'a>,
    within: &'static str,
    u: &mut Unrecognized,
) -> Result<&'a [u8], DecodeError> {
    Ok(cur.expect(pt::COOKIE, within, "cookie", u)?.value)
}

pub(crate) fn optional_error<'a>(
    cur: &mut Cursor<'a>,
    u: &mut Unrecognized,
) -> Result<Option<OperationError<'a>>, DecodeError> {
    match cur.optional(pt::OPERATION_ERROR, u)? {
        Some(tlv) => decode_operation_error(&tlv, cur.msg).map(Some),
        None => Ok(None),
    }
}

/// The remaining Pool Element parameters of a message: at least one.
fn pool_elements<'a>(
    cur: &mut Cursor<'a>,
    within: &'static str,
    generation: Generation,
    u: &mut Unrecognized,
) -> Result<Seq<'a, PoolElementParam<'a>>, DecodeError> {
    let pes = Seq::decode(cur, generation, u)?;
    if pes.is_empty() {
        return Err(DecodeError::MissingParameter {
            within,
            expected: "pool element",
        });
    }
    Ok(pes)
}
