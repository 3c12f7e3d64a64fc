//! ENRP messages (RFC 5353 §2, SCTP PPID 12): decode into borrowed views, encode into a caller's
//! buffer. Every message starts with the sending and receiving PR IDs (32-bit RFC, 64-bit NG).

use crate::error::{DecodeError, EncodeError};
use crate::param::{
    OperationError, PoolElementParam, PoolHandle, ServerInformation, decode_operation_error,
    decode_pool_element, decode_pool_handle, decode_server_information, encode_operation_error,
    encode_pool_element, encode_pool_elements, encode_pool_handle, encode_server_information,
};
use crate::wire::{Cursor, Seq, Unrecognized, Writer};
use crate::{Decoded, Generation, PrId, param_type as pt};

/// ENRP message type codes (RFC 5353 §2, §5.1).
pub mod message_type {
    /// ENRP_PRESENCE.
    pub const PRESENCE: u8 = 0x01;
    /// ENRP_HANDLE_TABLE_REQUEST.
    pub const HANDLE_TABLE_REQUEST: u8 = 0x02;
    /// ENRP_HANDLE_TABLE_RESPONSE.
    pub const HANDLE_TABLE_RESPONSE: u8 = 0x03;
    /// ENRP_HANDLE_UPDATE.
    pub const HANDLE_UPDATE: u8 = 0x04;
    /// ENRP_LIST_REQUEST.
    pub const LIST_REQUEST: u8 = 0x05;
    /// ENRP_LIST_RESPONSE.
    pub const LIST_RESPONSE: u8 = 0x06;
    /// ENRP_INIT_TAKEOVER.
    pub const INIT_TAKEOVER: u8 = 0x07;
    /// ENRP_INIT_TAKEOVER_ACK.
    pub const INIT_TAKEOVER_ACK: u8 = 0x08;
    /// ENRP_TAKEOVER_SERVER.
    pub const TAKEOVER_SERVER: u8 = 0x09;
    /// ENRP_ERROR (0x0a; the IANA page's "0x10" is a typo).
    pub const ERROR: u8 = 0x0a;
}

/// The update action of an ENRP_HANDLE_UPDATE (RFC 5353 §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpdateAction {
    /// ADD_PE (0x0000): add or update the PE.
    AddPe,
    /// DEL_PE (0x0001): delete the PE.
    DelPe,
}

/// One pool of an ENRP_HANDLE_TABLE_RESPONSE: a pool handle and its PEs (at least one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolEntry<'a> {
    /// The pool.
    pub pool_handle: PoolHandle<'a>,
    /// Its PEs.
    pub pool_elements: Seq<'a, PoolElementParam<'a>>,
}

/// The body of an ENRP message, after the two PR IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrpBody<'a> {
    /// ENRP_PRESENCE (§2.1). RSPLIB sends and requires both optional parameters.
    Presence {
        /// R flag: the receiver must answer with a presence of its own.
        reply_required: bool,
        /// The sender's handlespace checksum over the PEs it owns: Internet-16 (RFC) or the NG
        /// 64-bit digest.
        checksum: Option<u64>,
        /// The sender's ENRP transport.
        server_information: Option<ServerInformation<'a>>,
    },
    /// ENRP_HANDLE_TABLE_REQUEST (§2.2).
    HandleTableRequest {
        /// W flag: only the PEs the receiver owns.
        own_children_only: bool,
    },
    /// ENRP_HANDLE_TABLE_RESPONSE (§2.3).
    HandleTableResponse {
        /// R flag: the request is rejected (no entries).
        reject: bool,
        /// M flag: more entries follow in later responses.
        more_to_send: bool,
        /// Pools with their PEs.
        entries: Seq<'a, PoolEntry<'a>>,
    },
    /// ENRP_HANDLE_UPDATE (§2.4).
    HandleUpdate {
        /// T flag: takeover suggested (draft-dreibholz-rserpool-enrp-takeover, RSPLIB).
        takeover_suggested: bool,
        /// Add or delete.
        action: UpdateAction,
        /// The pool.
        pool_handle: PoolHandle<'a>,
        /// The PE, with its ASAP transport and home PR.
        pool_element: PoolElementParam<'a>,
    },
    /// ENRP_LIST_REQUEST (§2.5).
    ListRequest,
    /// ENRP_LIST_RESPONSE (§2.6).
    ListResponse {
        /// R flag: rejected (no servers).
        reject: bool,
        /// The peers the sender knows.
        servers: Seq<'a, ServerInformation<'a>>,
    },
    /// ENRP_INIT_TAKEOVER (§2.7).
    InitTakeover {
        /// The PR to be taken over.
        target: PrId,
    },
    /// ENRP_INIT_TAKEOVER_ACK (§2.8).
    InitTakeoverAck {
        /// The PR to be taken over.
        target: PrId,
    },
    /// ENRP_TAKEOVER_SERVER (§2.9).
    TakeoverServer {
        /// The PR taken over.
        target: PrId,
    },
    /// ENRP_ERROR (§2.10).
    Error(OperationError<'a>),
}

/// An ENRP message (RFC 5353 §2) as a borrowed view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnrpMessage<'a> {
    /// The sending PR's ID.
    pub sender: PrId,
    /// The receiving PR's ID (0 when sent to a group, or unknown).
    pub receiver: PrId,
    /// The message itself.
    pub body: EnrpBody<'a>,
}

const FLAG_BIT0: u8 = 0x01;
const FLAG_BIT1: u8 = 0x02;

impl<'a> EnrpBody<'a> {
    /// The message type code.
    pub const fn message_type(&self) -> u8 {
        use message_type as t;
        match self {
            Self::Presence { .. } => t::PRESENCE,
            Self::HandleTableRequest { .. } => t::HANDLE_TABLE_REQUEST,
            Self::HandleTableResponse { .. } => t::HANDLE_TABLE_RESPONSE,
            Self::HandleUpdate { .. } => t::HANDLE_UPDATE,
            Self::ListRequest => t::LIST_REQUEST,
            Self::ListResponse { .. } => t::LIST_RESPONSE,
            Self::InitTakeover { .. } => t::INIT_TAKEOVER,
            Self::InitTakeoverAck { .. } => t::INIT_TAKEOVER_ACK,
            Self::TakeoverServer { .. } => t::TAKEOVER_SERVER,
            Self::Error(_) => t::ERROR,
        }
    }

    /// The flags byte.
    pub const fn flags(&self) -> u8 {
        const fn bit(b: bool, f: u8) -> u8 {
            if b { f } else { 0 }
        }
        match self {
            Self::Presence { reply_required, .. } => bit(*reply_required, FLAG_BIT0),
            Self::HandleTableRequest { own_children_only } => bit(*own_children_only, FLAG_BIT0),
            Self::HandleTableResponse {
                reject,
                more_to_send,
                ..
            } => bit(*reject, FLAG_BIT0) | bit(*more_to_send, FLAG_BIT1),
            Self::HandleUpdate {
                takeover_suggested, ..
            } => bit(*takeover_suggested, FLAG_BIT0),
            Self::ListResponse { reject, .. } => bit(*reject, FLAG_BIT0),
            _ => 0,
        }
    }
}

impl<'a> EnrpMessage<'a> {
    /// Decodes one ENRP message (`msg` as for [`crate::AsapMessage::decode`]).
    pub fn decode(msg: &'a [u8], generation: Generation) -> Result<Decoded<Self>, DecodeError> {
        let (ty, flags, mut cur) = crate::header(msg)?;
        if !(message_type::PRESENCE..=message_type::ERROR).contains(&ty) {
            return Err(crate::unknown_message(ty));
        }
        let sender = PrId(cur.id(generation, "sending server's identifier")?);
        let receiver = PrId(cur.id(generation, "receiving server's identifier")?);
        let mut unrecognized = Unrecognized::default();
        let u = &mut unrecognized;
        let bit0 = flags & FLAG_BIT0 != 0;
        use message_type as t;
        let body = match ty {
            t::PRESENCE => {
                let checksum = match cur.optional(pt::PE_CHECKSUM, u)? {
                    Some(tlv) => Some(match (generation, tlv.value) {
                        (Generation::Rfc, &[a, b]) => u64::from(u16::from_be_bytes([a, b])),
                        (Generation::Ng, v) if v.len() == 8 => {
                            let mut a = [0u8; 8];
                            a.copy_from_slice(v);
                            u64::from_be_bytes(a)
                        }
                        _ => {
                            return Err(
                                tlv.invalid("PE checksum", "wrong length for the wire generation")
                            );
                        }
                    }),
                    None => None,
                };
                let server_information = match cur.optional(pt::SERVER_INFORMATION, u)? {
                    Some(tlv) => Some(decode_server_information(&tlv, msg, generation, u)?),
                    None => None,
                };
                EnrpBody::Presence {
                    reply_required: bit0,
                    checksum,
                    server_information,
                }
            }
            t::HANDLE_TABLE_REQUEST => EnrpBody::HandleTableRequest {
                own_children_only: bit0,
            },
            t::HANDLE_TABLE_RESPONSE => {
                let entries = Seq::decode(&mut cur, generation, u)?;
                EnrpBody::HandleTableResponse {
                    reject: bit0,
                    more_to_send: flags & FLAG_BIT1 != 0,
                    entries,
                }
            }
            t::HANDLE_UPDATE => {
                const W: &str = "ENRP_HANDLE_UPDATE";
                let action_at = cur.pos;
                let action = match cur.u16("update action")? {
                    0 => UpdateAction::AddPe,
                    1 => UpdateAction::DelPe,
                    _ => {
                        return Err(DecodeError::InvalidValue {
                            what: "update action",
                            reason: "neither ADD_PE nor DEL_PE",
                            // A fixed field, not a TLV: the cause carries no info.
                            tlv: action_at..action_at,
                        });
                    }
                };
                cur.u16("reserved")?;
                let h = cur.expect(pt::POOL_HANDLE, W, "pool handle", u)?;
                let pool_handle = decode_pool_handle(&h)?;
                let pe = cur.expect(pt::POOL_ELEMENT, W, "pool element", u)?;
                let pool_element = decode_pool_element(&pe, msg, generation, u)?;
                EnrpBody::HandleUpdate {
                    takeover_suggested: bit0,
                    action,
                    pool_handle,
                    pool_element,
                }
            }
            t::LIST_REQUEST => EnrpBody::ListRequest,
            t::LIST_RESPONSE => {
                let servers = Seq::decode(&mut cur, generation, u)?;
                EnrpBody::ListResponse {
                    reject: bit0,
                    servers,
                }
            }
            t::INIT_TAKEOVER => EnrpBody::InitTakeover {
                target: PrId(cur.id(generation, "target server's identifier")?),
            },
            t::INIT_TAKEOVER_ACK => EnrpBody::InitTakeoverAck {
                target: PrId(cur.id(generation, "target server's identifier")?),
            },
            t::TAKEOVER_SERVER => EnrpBody::TakeoverServer {
                target: PrId(cur.id(generation, "target server's identifier")?),
            },
            _ => {
                let e = cur.expect(pt::OPERATION_ERROR, "ENRP_ERROR", "operation error", u)?;
                EnrpBody::Error(decode_operation_error(&e, msg)?)
            }
        };
        cur.finish(message_name(ty), u)?;
        Ok(Decoded {
            message: EnrpMessage {
                sender,
                receiver,
                body,
            },
            unrecognized,
        })
    }

    /// Encodes the message into `buf` and returns its length (a multiple of 4).
    pub fn encode(&self, generation: Generation, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        w.u8(self.body.message_type())?;
        w.u8(self.body.flags())?;
        w.u16(0)?;
        w.id(generation, self.sender.0, "sending server's identifier")?;
        w.id(generation, self.receiver.0, "receiving server's identifier")?;
        match &self.body {
            EnrpBody::Presence {
                checksum,
                server_information,
                ..
            } => {
                if let Some(c) = *checksum {
                    let mark = w.begin_tlv(pt::PE_CHECKSUM)?;
                    match generation {
                        Generation::Rfc => {
                            w.u16(u16::try_from(c).map_err(|_| EncodeError::InvalidValue {
                                what: "PE checksum",
                                reason: "the RFC generation carries a 16-bit checksum",
                            })?)?
                        }
                        Generation::Ng => w.u64(c)?,
                    }
                    w.end_tlv(mark, "PE checksum")?;
                }
                if let Some(s) = server_information {
                    encode_server_information(&mut w, s, generation)?;
                }
            }
            EnrpBody::HandleTableRequest { .. } | EnrpBody::ListRequest => {}
            EnrpBody::HandleTableResponse { entries, .. } => {
                for e in entries.iter() {
                    if e.pool_elements.is_empty() {
                        return Err(EncodeError::InvalidValue {
                            what: "handle table entry",
                            reason: "every pool handle needs at least one PE",
                        });
                    }
                    encode_pool_handle(&mut w, e.pool_handle)?;
                    encode_pool_elements(&mut w, &e.pool_elements, generation)?;
                }
            }
            EnrpBody::HandleUpdate {
                action,
                pool_handle,
                pool_element,
                ..
            } => {
                w.u16(match action {
                    UpdateAction::AddPe => 0,
                    UpdateAction::DelPe => 1,
                })?;
                w.u16(0)?;
                encode_pool_handle(&mut w, *pool_handle)?;
                encode_pool_element(&mut w, pool_element, generation)?;
            }
            EnrpBody::ListResponse { servers, .. } => {
                for s in servers.iter() {
                    encode_server_information(&mut w, &s, generation)?;
                }
            }
            EnrpBody::InitTakeover { target }
            | EnrpBody::InitTakeoverAck { target }
            | EnrpBody::TakeoverServer { target } => {
                w.id(generation, target.0, "target server's identifier")?;
            }
            EnrpBody::Error(e) => encode_operation_error(&mut w, e)?,
        }
        let len = w.pos();
        w.set_len(0, len, "ENRP message")?;
        Ok(len)
    }
}

/// The RFC name of an ENRP message type, for errors and logs.
pub const fn message_name(ty: u8) -> &'static str {
    use message_type as t;
    match ty {
        t::PRESENCE => "ENRP_PRESENCE",
        t::HANDLE_TABLE_REQUEST => "ENRP_HANDLE_TABLE_REQUEST",
        t::HANDLE_TABLE_RESPONSE => "ENRP_HANDLE_TABLE_RESPONSE",
        t::HANDLE_UPDATE => "ENRP_HANDLE_UPDATE",
        t::LIST_REQUEST => "ENRP_LIST_REQUEST",
        t::LIST_RESPONSE => "ENRP_LIST_RESPONSE",
        t::INIT_TAKEOVER => "ENRP_INIT_TAKEOVER",
        t::INIT_TAKEOVER_ACK => "ENRP_INIT_TAKEOVER_ACK",
        t::TAKEOVER_SERVER => "ENRP_TAKEOVER_SERVER",
        t::ERROR => "ENRP_ERROR",
        _ => "unknown ENRP message",
    }
}

/// The next pool of a handle table: a Pool Handle followed by at least one Pool Element.
fn next_pool_entry<'a>(
    cur: &mut Cursor<'a>,
    generation: Generation,
    u: &mut Unrecognized,
) -> Result<Option<PoolEntry<'a>>, DecodeError> {
    const W: &str = "ENRP_HANDLE_TABLE_RESPONSE";
    let Some(h) = cur.list_item(pt::POOL_HANDLE, W, "pool handle", u)? else {
        return Ok(None);
    };
    let pool_handle = decode_pool_handle(&h)?;
    let start = cur.pos;
    let mut count = 0usize;
    while let Some(tlv) = cur.optional(pt::POOL_ELEMENT, u)? {
        decode_pool_element(&tlv, cur.msg, generation, u)?;
        count += 1;
    }
    if count == 0 {
        return Err(DecodeError::MissingParameter {
            within: W,
            expected: "pool element after a pool handle",
        });
    }
    let region = Cursor::new(cur.msg, start, cur.pos);
    let pool_elements = Seq::validated(region, count, generation);
    Ok(Some(PoolEntry {
        pool_handle,
        pool_elements,
    }))
}

crate::wire::seq_item!('a, PoolEntry<'a>, next_pool_entry);
