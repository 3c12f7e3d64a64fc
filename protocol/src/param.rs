//! The parameters of RFC 5354 §3 (and RSPLIB's handle-resolution option) as borrowed views, with
//! their decoders and encoders: addresses, transports, member-selection policies, pool handle,
//! pool element, server information, operation error.

use core::fmt;
use core::ops::Range;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{DecodeError, EncodeError};
use crate::wire::{Cursor, Seq, Tlv, Unrecognized, Writer, narrow_id, tlv_header};
use crate::{Generation, PeId, PrId, param_type as pt};

/// A pool handle (RFC 5354 §3.9): opaque bytes naming a pool, at least one byte long.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolHandle<'a>(pub &'a [u8]);

impl<'a> PoolHandle<'a> {
    /// The handle's bytes.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

impl fmt::Debug for PoolHandle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PoolHandle(\"{}\")", self.0.escape_ascii())
    }
}

impl fmt::Display for PoolHandle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.escape_ascii())
    }
}

pub(crate) fn decode_pool_handle<'a>(tlv: &Tlv<'a>) -> Result<PoolHandle<'a>, DecodeError> {
    if tlv.value.is_empty() {
        return Err(tlv.invalid("pool handle", "empty handle"));
    }
    Ok(PoolHandle(tlv.value))
}

pub(crate) fn encode_pool_handle(w: &mut Writer<'_>, h: PoolHandle<'_>) -> Result<(), EncodeError> {
    if h.0.is_empty() {
        return Err(EncodeError::InvalidValue {
            what: "pool handle",
            reason: "a pool handle needs at least one byte",
        });
    }
    w.tlv(pt::POOL_HANDLE, h.0, "pool handle")
}

/// The IPv4 or IPv6 address parameter (RFC 5354 §3.1, §3.2) at the cursor, or `None` at the end.
pub(crate) fn next_address(
    cur: &mut Cursor<'_>,
    _: Generation,
    unrecognized: &mut Unrecognized,
) -> Result<Option<IpAddr>, DecodeError> {
    let Some(tlv) = cur.peek(unrecognized)? else {
        return Ok(None);
    };
    let addr = match (tlv.ty, tlv.value.len()) {
        (pt::IPV4_ADDRESS, 4) => IpAddr::V4(Ipv4Addr::new(
            tlv.value[0],
            tlv.value[1],
            tlv.value[2],
            tlv.value[3],
        )),
        (pt::IPV6_ADDRESS, 16) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(tlv.value);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        (pt::IPV4_ADDRESS | pt::IPV6_ADDRESS, _) => {
            return Err(tlv.invalid("address", "wrong length for the address family"));
        }
        _ => {
            return Err(DecodeError::UnexpectedParameter {
                within: "transport address list",
                parameter_type: tlv.ty,
                tlv: tlv.range(),
            });
        }
    };
    cur.pos = tlv.next;
    Ok(Some(addr))
}

#[inline(always)]
fn encode_address(w: &mut Writer<'_>, addr: IpAddr) -> Result<(), EncodeError> {
    // Each address parameter is one fixed-size write (no padding: 8 and 20 bytes).
    match addr {
        IpAddr::V4(a) => {
            let p = w.array::<8>()?;
            p[..4].copy_from_slice(&tlv_header(pt::IPV4_ADDRESS, 8));
            p[4..].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            let p = w.array::<20>()?;
            p[..4].copy_from_slice(&tlv_header(pt::IPV6_ADDRESS, 20));
            p[4..].copy_from_slice(&a.octets());
        }
    }
    Ok(())
}

/// Transport protocol of a transport parameter (RFC 5354 §3.3-§3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// SCTP Transport (0x0004): any number of addresses, data or data+control.
    Sctp,
    /// TCP Transport (0x0005): one address. MPTCP endpoints advertise this too.
    Tcp,
    /// UDP Transport (0x0006): one address.
    Udp,
    /// UDP-Lite Transport (0x0007): one address.
    UdpLite,
    /// DCCP Transport (0x0003): one address and a service code.
    Dccp,
}

impl TransportKind {
    /// The parameter type code.
    pub const fn parameter_type(self) -> u16 {
        match self {
            Self::Sctp => pt::SCTP_TRANSPORT,
            Self::Tcp => pt::TCP_TRANSPORT,
            Self::Udp => pt::UDP_TRANSPORT,
            Self::UdpLite => pt::UDP_LITE_TRANSPORT,
            Self::Dccp => pt::DCCP_TRANSPORT,
        }
    }

    /// The kind of a transport parameter type, if it is one.
    pub const fn from_parameter_type(ty: u16) -> Option<Self> {
        Some(match ty {
            pt::SCTP_TRANSPORT => Self::Sctp,
            pt::TCP_TRANSPORT => Self::Tcp,
            pt::UDP_TRANSPORT => Self::Udp,
            pt::UDP_LITE_TRANSPORT => Self::UdpLite,
            pt::DCCP_TRANSPORT => Self::Dccp,
            _ => return None,
        })
    }
}

/// Transport-use value: data only (RFC 5354 §3.4).
pub const TRANSPORT_USE_DATA_ONLY: u16 = 0x0000;
/// Transport-use value: data plus control channel (RFC 5354 §3.4).
pub const TRANSPORT_USE_DATA_PLUS_CONTROL: u16 = 0x0001;

/// A transport parameter: protocol, port and addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportParam<'a> {
    /// The transport protocol.
    pub kind: TransportKind,
    /// The port.
    pub port: u16,
    /// The second 16-bit word: transport use for SCTP (and for TCP as RSPLIB and Wireshark read
    /// it); reserved (0) for UDP, UDP-Lite and DCCP.
    pub transport_use: u16,
    /// DCCP service code (DCCP only, 0 otherwise).
    pub service_code: u32,
    /// The addresses: at least one; exactly one except for SCTP.
    pub addresses: Seq<'a, IpAddr>,
}

fn decode_transport<'a>(
    tlv: &Tlv<'a>,
    kind: TransportKind,
    msg: &'a [u8],
    generation: Generation,
    unrecognized: &mut Unrecognized,
) -> Result<TransportParam<'a>, DecodeError> {
    let mut cur = tlv.cursor(msg);
    let port = cur.u16("transport port")?;
    let transport_use = cur.u16("transport use")?;
    let service_code = if kind == TransportKind::Dccp {
        cur.u32("DCCP service code")?
    } else {
        0
    };
    let addresses = Seq::decode(&mut cur, generation, unrecognized)?;
    match (kind, addresses.len()) {
        (_, 0) => Err(tlv.invalid("transport", "no address")),
        (TransportKind::Sctp, _) | (_, 1) => Ok(TransportParam {
            kind,
            port,
            transport_use,
            service_code,
            addresses,
        }),
        _ => Err(tlv.invalid("transport", "only SCTP carries more than one address")),
    }
}

/// The transport parameter `tlv` if it is one, else `None`.
pub(crate) fn transport_of<'a>(
    tlv: &Tlv<'a>,
    msg: &'a [u8],
    generation: Generation,
    unrecognized: &mut Unrecognized,
) -> Result<Option<TransportParam<'a>>, DecodeError> {
    match TransportKind::from_parameter_type(tlv.ty) {
        Some(kind) => decode_transport(tlv, kind, msg, generation, unrecognized).map(Some),
        None => Ok(None),
    }
}

/// The next transport parameter in a list of them (ASAP_SERVER_ANNOUNCE), or `None` at the end.
pub(crate) fn next_transport<'a>(
    cur: &mut Cursor<'a>,
    generation: Generation,
    unrecognized: &mut Unrecognized,
) -> Result<Option<TransportParam<'a>>, DecodeError> {
    let Some(tlv) = cur.peek(unrecognized)? else {
        return Ok(None);
    };
    match transport_of(&tlv, cur.msg, generation, unrecognized)? {
        Some(t) => {
            cur.pos = tlv.next;
            Ok(Some(t))
        }
        None => Err(DecodeError::UnexpectedParameter {
            within: "transport list",
            parameter_type: tlv.ty,
            tlv: tlv.range(),
        }),
    }
}

// Forced inline (like the address and policy encoders) into the pool element encoder, the hot
// caller: a call each, with the error-carrying result returned through memory, cost more than
// their few fixed-size writes.
#[inline(always)]
pub(crate) fn encode_transport(
    w: &mut Writer<'_>,
    t: &TransportParam<'_>,
) -> Result<(), EncodeError> {
    match (t.kind, t.addresses.len()) {
        (_, 0) => {
            return Err(EncodeError::InvalidValue {
                what: "transport",
                reason: "a transport needs at least one address",
            });
        }
        (TransportKind::Sctp, _) | (_, 1) => {}
        _ => {
            return Err(EncodeError::InvalidValue {
                what: "transport",
                reason: "only SCTP transports carry more than one address",
            });
        }
    }
    let mark = w.pos();
    let head = w.array::<8>()?;
    head[..4].copy_from_slice(&tlv_header(t.kind.parameter_type(), 0));
    head[4..6].copy_from_slice(&t.port.to_be_bytes());
    head[6..].copy_from_slice(&t.transport_use.to_be_bytes());
    if t.kind == TransportKind::Dccp {
        w.u32(t.service_code)?;
    }
    for addr in t.addresses {
        encode_address(w, addr)?;
    }
    w.end_tlv(mark, "transport")
}

/// A PE's user transport: a transport parameter or an Opaque Transport (RFC 5354 §3.16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserTransport<'a> {
    /// SCTP, TCP, UDP, UDP-Lite or DCCP.
    Transport(TransportParam<'a>),
    /// Opaque Transport (0x0010): application-defined bytes.
    Opaque(&'a [u8]),
}

/// Policy type codes (RFC 5356 §7.1 and RSPLIB's private 0xb000xxxx codes).
pub mod policy_type {
    /// Round Robin (RFC 5356 §4.1).
    pub const ROUND_ROBIN: u32 = 0x0000_0001;
    /// Weighted Round Robin (RFC 5356 §4.2).
    pub const WEIGHTED_ROUND_ROBIN: u32 = 0x0000_0002;
    /// Random (RFC 5356 §4.3).
    pub const RANDOM: u32 = 0x0000_0003;
    /// Weighted Random (RFC 5356 §4.4).
    pub const WEIGHTED_RANDOM: u32 = 0x0000_0004;
    /// Priority (RFC 5356 §4.5).
    pub const PRIORITY: u32 = 0x0000_0005;
    /// Least Used (RFC 5356 §5.1).
    pub const LEAST_USED: u32 = 0x4000_0001;
    /// Least Used with Degradation (RFC 5356 §5.2).
    pub const LEAST_USED_DEGRADATION: u32 = 0x4000_0002;
    /// Priority Least Used (RFC 5356 §5.3).
    pub const PRIORITY_LEAST_USED: u32 = 0x4000_0003;
    /// Randomized Least Used (RFC 5356 §5.4).
    pub const RANDOMIZED_LEAST_USED: u32 = 0x4000_0004;
    /// RSPLIB Randomized Priority Least Used.
    pub const RANDOMIZED_PRIORITY_LEAST_USED: u32 = 0xb000_1001;
    /// RSPLIB Randomized Least Used with Degradation.
    pub const RANDOMIZED_LEAST_USED_DEGRADATION: u32 = 0xb000_1002;
    /// RSPLIB Priority Least Used with Degradation.
    pub const PRIORITY_LEAST_USED_DEGRADATION: u32 = 0xb000_1003;
    /// RSPLIB Randomized Priority Least Used with Degradation.
    pub const RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION: u32 = 0xb000_1004;
    /// RSPLIB Weighted Random with Distance Penalty Factor.
    pub const WEIGHTED_RANDOM_DPF: u32 = 0xb000_2001;
    /// RSPLIB Least Used with Distance Penalty Factor.
    pub const LEAST_USED_DPF: u32 = 0xb000_2002;
    /// RSPLIB Least Used with Degradation and Distance Penalty Factor.
    pub const LEAST_USED_DEGRADATION_DPF: u32 = 0xb000_2003;
    /// RSPLIB Priority Least Used with Distance Penalty Factor.
    pub const PRIORITY_LEAST_USED_DPF: u32 = 0xb000_2004;
    /// RSPLIB Priority Least Used with Degradation and Distance Penalty Factor.
    pub const PRIORITY_LEAST_USED_DEGRADATION_DPF: u32 = 0xb000_2005;
}

/// A member-selection policy with its per-PE parameters (RFC 5356; RSPLIB's private policies).
///
/// Loads, load degradations and DPF factors are fractions scaled to `u32` (0 = 0 %,
/// `0xffffffff` = 100 %); distances are milliseconds. RSPLIB defines 0xb0002004 and 0xb0002005 but
/// has no wire encoding for them; ours carries load, load degradation, load DPF and distance (24
/// bytes), the field set of 0xb0002003.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Round Robin, 0x00000001 (RFC 5356 §4.1).
    RoundRobin,
    /// Weighted Round Robin, 0x00000002 (RFC 5356 §4.2).
    WeightedRoundRobin {
        /// Relative capacity; 0 = cannot serve.
        weight: u32,
    },
    /// Random, 0x00000003 (RFC 5356 §4.3).
    Random,
    /// Weighted Random, 0x00000004 (RFC 5356 §4.4).
    WeightedRandom {
        /// Relative capacity; 0 = cannot serve.
        weight: u32,
    },
    /// Priority, 0x00000005 (RFC 5356 §4.5).
    Priority {
        /// Priority; larger is preferred.
        priority: u32,
    },
    /// Least Used, 0x40000001 (RFC 5356 §5.1).
    LeastUsed {
        /// Current load, 0 = idle to 0xffffffff = full.
        load: u32,
    },
    /// Least Used with Degradation, 0x40000002 (RFC 5356 §5.2).
    LeastUsedDegradation {
        /// Current load, 0 = idle to 0xffffffff = full.
        load: u32,
        /// Load added by each new session, same scale as the load.
        load_degradation: u32,
    },
    /// Priority Least Used, 0x40000003 (RFC 5356 §5.3).
    PriorityLeastUsed {
        /// Current load, 0 = idle to 0xffffffff = full.
        load: u32,
        /// Load added by each new session, same scale as the load.
        load_degradation: u32,
    },
    /// Randomized Least Used, 0x40000004 (RFC 5356 §5.4).
    RandomizedLeastUsed {
        /// Current load, 0 = idle to 0xffffffff = full.
        load: u32,
    },
    /// Randomized Priority Least Used, 0xb0001001 (RSPLIB).
    RandomizedPriorityLeastUsed {
        /// Current load, 0 = idle to 0xffffffff = full.
        load: u32,
        /// Load added by each new session, same scale as the load.
        load_degradation: u32,
    },
    /// Randomized Least Used with Degradation, 0xb0001002 (RSPLIB).
    RandomizedLeastUsedDegradation {
        /// Current load, 0 = idle to 0xffffffff = full.
        load: u32,
        /// Load added by each new session, same scale as the load.
        load_degradation: u32,
    },
    /// Priority Least Used with Degradation, 0xb0001003 (RSPLIB).
    PriorityLeastUsedDegradation {
        /// Current load, 0 = idle to 0xffffffff = full.
        load: u32,
        /// Load added by each new session, same scale as the load.
        load_degradation: u32,
    },
    /// Randomized Priority Least Used with Degradation, 0xb0001004 (RSPLIB).
    RandomizedPriorityLeastUsedDegradation {
        /// Current load, 0 = idle to 0xffffffff = full.
        load: u32,
        /// Load added by each new session, same scale as the load.
        load_degradation: u32,
    },
    /// Weighted Random with Distance Penalty Factor, 0xb0002001 (RSPLIB).
    WeightedRandomDpf {
        /// Relative capacity; 0 = cannot serve.
        weight: u32,
        /// Fraction of the weight removed per millisecond of distance.
        weight_dpf: u32,
        /// Distance in milliseconds (the PR overwrites what the PE sends).
        distance: u32,
    },
    /// Least Used with Distance Penalty Factor, 0xb0002002 (RSPLIB).
    LeastUsedDpf {
        /// Current load, 0 = idle to 0xffffffff = full.
        load: u32,
        /// Load penalty per millisecond of distance, as a fraction of full load.
        load_dpf: u32,
        /// Distance in milliseconds (the PR overwrites what the PE sends).
        distance: u32,
    },
    /// Least Used with Degradation and Distance Penalty Factor, 0xb0002003 (RSPLIB).
    LeastUsedDegradationDpf {
        /// Current load, 0 = idle to 0xffffffff = full.
        load: u32,
        /// Load added by each new session, same scale as the load.
        load_degradation: u32,
        /// Load penalty per millisecond of distance, as a fraction of full load.
        load_dpf: u32,
        /// Distance in milliseconds (the PR overwrites what the PE sends).
        distance: u32,
    },
    /// Priority Least Used with Distance Penalty Factor, 0xb0002004 (RSPLIB code; our encoding).
    PriorityLeastUsedDpf {
        /// Current load, 0 = idle to 0xffffffff = full.
        load: u32,
        /// Load added by each new session, same scale as the load.
        load_degradation: u32,
        /// Load penalty per millisecond of distance, as a fraction of full load.
        load_dpf: u32,
        /// Distance in milliseconds (the PR overwrites what the PE sends).
        distance: u32,
    },
    /// Priority Least Used with Degradation and Distance Penalty Factor, 0xb0002005 (RSPLIB code; our encoding).
    PriorityLeastUsedDegradationDpf {
        /// Current load, 0 = idle to 0xffffffff = full.
        load: u32,
        /// Load added by each new session, same scale as the load.
        load_degradation: u32,
        /// Load penalty per millisecond of distance, as a fraction of full load.
        load_dpf: u32,
        /// Distance in milliseconds (the PR overwrites what the PE sends).
        distance: u32,
    },
}

impl Policy {
    /// The policy type code on the wire.
    pub const fn policy_type(&self) -> u32 {
        use policy_type as p;
        match self {
            Self::RoundRobin => p::ROUND_ROBIN,
            Self::WeightedRoundRobin { .. } => p::WEIGHTED_ROUND_ROBIN,
            Self::Random => p::RANDOM,
            Self::WeightedRandom { .. } => p::WEIGHTED_RANDOM,
            Self::Priority { .. } => p::PRIORITY,
            Self::LeastUsed { .. } => p::LEAST_USED,
            Self::LeastUsedDegradation { .. } => p::LEAST_USED_DEGRADATION,
            Self::PriorityLeastUsed { .. } => p::PRIORITY_LEAST_USED,
            Self::RandomizedLeastUsed { .. } => p::RANDOMIZED_LEAST_USED,
            Self::RandomizedPriorityLeastUsed { .. } => p::RANDOMIZED_PRIORITY_LEAST_USED,
            Self::RandomizedLeastUsedDegradation { .. } => p::RANDOMIZED_LEAST_USED_DEGRADATION,
            Self::PriorityLeastUsedDegradation { .. } => p::PRIORITY_LEAST_USED_DEGRADATION,
            Self::RandomizedPriorityLeastUsedDegradation { .. } => {
                p::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION
            }
            Self::WeightedRandomDpf { .. } => p::WEIGHTED_RANDOM_DPF,
            Self::LeastUsedDpf { .. } => p::LEAST_USED_DPF,
            Self::LeastUsedDegradationDpf { .. } => p::LEAST_USED_DEGRADATION_DPF,
            Self::PriorityLeastUsedDpf { .. } => p::PRIORITY_LEAST_USED_DPF,
            Self::PriorityLeastUsedDegradationDpf { .. } => p::PRIORITY_LEAST_USED_DEGRADATION_DPF,
        }
    }

    /// The policy-specific values after the type (weight, priority, load, degradation, DPF values
    /// and distance, as the policy has them), in wire order: the array and how many are used.
    pub fn fields(&self) -> ([u32; 4], usize) {
        match *self {
            Self::RoundRobin | Self::Random => ([0; 4], 0),
            Self::WeightedRoundRobin { weight } | Self::WeightedRandom { weight } => {
                ([weight, 0, 0, 0], 1)
            }
            Self::Priority { priority } => ([priority, 0, 0, 0], 1),
            Self::LeastUsed { load } | Self::RandomizedLeastUsed { load } => ([load, 0, 0, 0], 1),
            Self::LeastUsedDegradation {
                load,
                load_degradation,
            }
            | Self::PriorityLeastUsed {
                load,
                load_degradation,
            }
            | Self::RandomizedPriorityLeastUsed {
                load,
                load_degradation,
            }
            | Self::RandomizedLeastUsedDegradation {
                load,
                load_degradation,
            }
            | Self::PriorityLeastUsedDegradation {
                load,
                load_degradation,
            }
            | Self::RandomizedPriorityLeastUsedDegradation {
                load,
                load_degradation,
            } => ([load, load_degradation, 0, 0], 2),
            Self::WeightedRandomDpf {
                weight,
                weight_dpf,
                distance,
            } => ([weight, weight_dpf, distance, 0], 3),
            Self::LeastUsedDpf {
                load,
                load_dpf,
                distance,
            } => ([load, load_dpf, distance, 0], 3),
            Self::LeastUsedDegradationDpf {
                load,
                load_degradation,
                load_dpf,
                distance,
            }
            | Self::PriorityLeastUsedDpf {
                load,
                load_degradation,
                load_dpf,
                distance,
            }
            | Self::PriorityLeastUsedDegradationDpf {
                load,
                load_degradation,
                load_dpf,
                distance,
            } => ([load, load_degradation, load_dpf, distance], 4),
        }
    }

    /// Builds a policy from its type code and fields (`f` must hold as many as the type needs).
    fn from_fields(code: u32, f: [u32; 4]) -> Option<Self> {
        use policy_type as p;
        let [a, b, c, d] = f;
        Some(match code {
            p::ROUND_ROBIN => Self::RoundRobin,
            p::WEIGHTED_ROUND_ROBIN => Self::WeightedRoundRobin { weight: a },
            p::RANDOM => Self::Random,
            p::WEIGHTED_RANDOM => Self::WeightedRandom { weight: a },
            p::PRIORITY => Self::Priority { priority: a },
            p::LEAST_USED => Self::LeastUsed { load: a },
            p::LEAST_USED_DEGRADATION => Self::LeastUsedDegradation {
                load: a,
                load_degradation: b,
            },
            p::PRIORITY_LEAST_USED => Self::PriorityLeastUsed {
                load: a,
                load_degradation: b,
            },
            p::RANDOMIZED_LEAST_USED => Self::RandomizedLeastUsed { load: a },
            p::RANDOMIZED_PRIORITY_LEAST_USED => Self::RandomizedPriorityLeastUsed {
                load: a,
                load_degradation: b,
            },
            p::RANDOMIZED_LEAST_USED_DEGRADATION => Self::RandomizedLeastUsedDegradation {
                load: a,
                load_degradation: b,
            },
            p::PRIORITY_LEAST_USED_DEGRADATION => Self::PriorityLeastUsedDegradation {
                load: a,
                load_degradation: b,
            },
            p::RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION => {
                Self::RandomizedPriorityLeastUsedDegradation {
                    load: a,
                    load_degradation: b,
                }
            }
            p::WEIGHTED_RANDOM_DPF => Self::WeightedRandomDpf {
                weight: a,
                weight_dpf: b,
                distance: c,
            },
            p::LEAST_USED_DPF => Self::LeastUsedDpf {
                load: a,
                load_dpf: b,
                distance: c,
            },
            p::LEAST_USED_DEGRADATION_DPF => Self::LeastUsedDegradationDpf {
                load: a,
                load_degradation: b,
                load_dpf: c,
                distance: d,
            },
            p::PRIORITY_LEAST_USED_DPF => Self::PriorityLeastUsedDpf {
                load: a,
                load_degradation: b,
                load_dpf: c,
                distance: d,
            },
            p::PRIORITY_LEAST_USED_DEGRADATION_DPF => Self::PriorityLeastUsedDegradationDpf {
                load: a,
                load_degradation: b,
                load_dpf: c,
                distance: d,
            },
            _ => return None,
        })
    }

    /// Number of u32 fields a policy type carries after its type code, or `None` if unknown.
    pub fn field_count(policy_type: u32) -> Option<usize> {
        Self::from_fields(policy_type, [0; 4]).map(|p| p.fields().1)
    }
}

/// Decodes a Pool Member Selection Policy parameter (RFC 5354 §3.8). Like RSPLIB it accepts a
/// parameter longer than the type needs and ignores the extra bytes.
pub(crate) fn decode_policy(tlv: &Tlv<'_>) -> Result<Policy, DecodeError> {
    let v = tlv.value;
    if v.len() < 4 {
        return Err(tlv.invalid("policy", "no policy type"));
    }
    let code = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    let n = Policy::field_count(code).ok_or(DecodeError::UnsupportedPolicy {
        policy_type: code,
        tlv: tlv.range(),
    })?;
    if v.len() < 4 + 4 * n {
        return Err(tlv.invalid("policy", "too short for the fields of its type"));
    }
    let mut f = [0u32; 4];
    for (i, field) in f.iter_mut().take(n).enumerate() {
        let o = 4 + 4 * i;
        *field = u32::from_be_bytes([v[o], v[o + 1], v[o + 2], v[o + 3]]);
    }
    Policy::from_fields(code, f).ok_or(DecodeError::UnsupportedPolicy {
        policy_type: code,
        tlv: tlv.range(),
    })
}

#[inline(always)]
pub(crate) fn encode_policy(w: &mut Writer<'_>, p: &Policy) -> Result<(), EncodeError> {
    let (fields, n) = p.fields();
    // Type and at most four values: the length is known up front and needs no padding.
    let head = w.array::<8>()?;
    head[..4].copy_from_slice(&tlv_header(pt::POOL_POLICY, 8 + 4 * n as u16));
    head[4..].copy_from_slice(&p.policy_type().to_be_bytes());
    w.u32s(&fields[..n])
}

/// Registration life meaning "infinite" (RFC 5354 §3.10).
pub const REGISTRATION_LIFE_INFINITE: i32 = -1;

/// A Pool Element parameter (RFC 5354 §3.10; NG: 64-bit identifiers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolElementParam<'a> {
    /// The PE identifier.
    pub id: PeId,
    /// The home PR's identifier; 0 = not yet determined (a PE registering sends 0).
    pub home_pr: PrId,
    /// Registration life in milliseconds as RSPLIB and NG use it (the RFC says seconds); -1 =
    /// infinite.
    pub registration_life: i32,
    /// Where PUs reach the PE.
    pub user_transport: UserTransport<'a>,
    /// The PE's member-selection policy and its parameters.
    pub policy: Policy,
    /// The PE's ASAP transport as its home PR saw it; only in ENRP messages.
    pub asap_transport: Option<TransportParam<'a>>,
}

pub(crate) fn decode_pool_element<'a>(
    tlv: &Tlv<'a>,
    msg: &'a [u8],
    generation: Generation,
    unrecognized: &mut Unrecognized,
) -> Result<PoolElementParam<'a>, DecodeError> {
    const WITHIN: &str = "pool element";
    let mut cur = tlv.cursor(msg);
    let id = PeId(cur.id(generation, "PE identifier")?);
    let home_pr = PrId(cur.id(generation, "home PR identifier")?);
    let registration_life = cur.u32("registration life")? as i32;
    let ut = cur
        .peek(unrecognized)?
        .ok_or(DecodeError::MissingParameter {
            within: WITHIN,
            expected: "user transport",
        })?;
    let user_transport = if ut.ty == pt::OPAQUE_TRANSPORT {
        UserTransport::Opaque(ut.value)
    } else {
        let t = transport_of(&ut, msg, generation, unrecognized)?.ok_or(
            DecodeError::UnexpectedParameter {
                within: WITHIN,
                parameter_type: ut.ty,
                tlv: ut.range(),
            },
        )?;
        UserTransport::Transport(t)
    };
    cur.pos = ut.next;
    let policy = decode_policy(&cur.expect(pt::POOL_POLICY, WITHIN, "policy", unrecognized)?)?;
    let asap_transport = match cur.peek(unrecognized)? {
        Some(tlv) => match transport_of(&tlv, msg, generation, unrecognized)? {
            Some(t) => {
                cur.pos = tlv.next;
                Some(t)
            }
            None => None,
        },
        None => None,
    };
    cur.finish(WITHIN, unrecognized)?;
    Ok(PoolElementParam {
        id,
        home_pr,
        registration_life,
        user_transport,
        policy,
        asap_transport,
    })
}

/// The next Pool Element parameter of a list, or `None` at the end of the region.
pub(crate) fn next_pool_element<'a>(
    cur: &mut Cursor<'a>,
    generation: Generation,
    unrecognized: &mut Unrecognized,
) -> Result<Option<PoolElementParam<'a>>, DecodeError> {
    match cur.list_item(
        pt::POOL_ELEMENT,
        "pool element list",
        "pool element",
        unrecognized,
    )? {
        Some(tlv) => decode_pool_element(&tlv, cur.msg, generation, unrecognized).map(Some),
        None => Ok(None),
    }
}

/// A Pool Element parameter; returns where its Member Selection Policy parameter went.
pub(crate) fn encode_pool_element(
    w: &mut Writer<'_>,
    pe: &PoolElementParam<'_>,
    generation: Generation,
) -> Result<Range<usize>, EncodeError> {
    let mark = w.pos();
    let life = (pe.registration_life as u32).to_be_bytes();
    // The fixed part (header, identifiers, life) in one write; the length is set at the end.
    match generation {
        Generation::Rfc => {
            let id = narrow_id(pe.id.0, "PE identifier")?;
            let home_pr = narrow_id(pe.home_pr.0, "home PR identifier")?;
            let head = w.array::<16>()?;
            head[..4].copy_from_slice(&tlv_header(pt::POOL_ELEMENT, 0));
            head[4..8].copy_from_slice(&id.to_be_bytes());
            head[8..12].copy_from_slice(&home_pr.to_be_bytes());
            head[12..].copy_from_slice(&life);
        }
        Generation::Ng => {
            let head = w.array::<24>()?;
            head[..4].copy_from_slice(&tlv_header(pt::POOL_ELEMENT, 0));
            head[4..12].copy_from_slice(&pe.id.0.to_be_bytes());
            head[12..20].copy_from_slice(&pe.home_pr.0.to_be_bytes());
            head[20..].copy_from_slice(&life);
        }
    }
    match &pe.user_transport {
        UserTransport::Transport(t) => encode_transport(w, t)?,
        UserTransport::Opaque(b) => w.tlv(pt::OPAQUE_TRANSPORT, b, "opaque transport")?,
    }
    let policy_start = w.pos();
    encode_policy(w, &pe.policy)?;
    let policy = policy_start..w.pos();
    if let Some(t) = &pe.asap_transport {
        encode_transport(w, t)?;
    }
    w.end_tlv(mark, "pool element")?;
    Ok(policy)
}

/// Pool Element parameters, one after the other.
pub(crate) fn encode_pool_elements(
    w: &mut Writer<'_>,
    pool_elements: &Seq<'_, PoolElementParam<'_>>,
    generation: Generation,
) -> Result<(), EncodeError> {
    match pool_elements.items() {
        Some(items) => items
            .iter()
            .try_for_each(|pe| encode_pool_element(w, pe, generation).map(drop)),
        None => pool_elements
            .iter()
            .try_for_each(|pe| encode_pool_element(w, &pe, generation).map(drop)),
    }
}

/// A PE Identifier parameter (RFC 5354 §3.14: 32 bits; NG: 64 bits).
pub(crate) fn decode_pe_id(tlv: &Tlv<'_>, generation: Generation) -> Result<PeId, DecodeError> {
    let v = tlv.value;
    match (generation, v.len()) {
        (Generation::Rfc, 4) => Ok(PeId(u64::from(u32::from_be_bytes([
            v[0], v[1], v[2], v[3],
        ])))),
        (Generation::Ng, 8) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(v);
            Ok(PeId(u64::from_be_bytes(a)))
        }
        _ => Err(tlv.invalid("PE identifier", "wrong length for the wire generation")),
    }
}

pub(crate) fn encode_pe_id(
    w: &mut Writer<'_>,
    id: PeId,
    generation: Generation,
) -> Result<(), EncodeError> {
    let mark = w.begin_tlv(pt::PE_IDENTIFIER)?;
    w.id(generation, id.0, "PE identifier")?;
    w.end_tlv(mark, "PE identifier")
}

/// A Server Information parameter (RFC 5354 §3.11; NG: 64-bit PR ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerInformation<'a> {
    /// The PR's identifier (RSPLIB sends 0 for peers whose ID it has not learnt yet).
    pub server_id: PrId,
    /// The PR's ENRP transport (SCTP in the RFC; TCP for NG byte-stream peers).
    pub transport: TransportParam<'a>,
}

pub(crate) fn decode_server_information<'a>(
    tlv: &Tlv<'a>,
    msg: &'a [u8],
    generation: Generation,
    unrecognized: &mut Unrecognized,
) -> Result<ServerInformation<'a>, DecodeError> {
    const WITHIN: &str = "server information";
    let mut cur = tlv.cursor(msg);
    let server_id = PrId(cur.id(generation, "server identifier")?);
    let t = cur
        .peek(unrecognized)?
        .ok_or(DecodeError::MissingParameter {
            within: WITHIN,
            expected: "transport",
        })?;
    let transport = transport_of(&t, msg, generation, unrecognized)?.ok_or(
        DecodeError::UnexpectedParameter {
            within: WITHIN,
            parameter_type: t.ty,
            tlv: t.range(),
        },
    )?;
    cur.pos = t.next;
    cur.finish(WITHIN, unrecognized)?;
    Ok(ServerInformation {
        server_id,
        transport,
    })
}

/// The next Server Information parameter of a list, or `None` at the end of the region.
pub(crate) fn next_server_information<'a>(
    cur: &mut Cursor<'a>,
    generation: Generation,
    unrecognized: &mut Unrecognized,
) -> Result<Option<ServerInformation<'a>>, DecodeError> {
    match cur.list_item(
        pt::SERVER_INFORMATION,
        "server information list",
        "server information",
        unrecognized,
    )? {
        Some(tlv) => decode_server_information(&tlv, cur.msg, generation, unrecognized).map(Some),
        None => Ok(None),
    }
}

pub(crate) fn encode_server_information(
    w: &mut Writer<'_>,
    s: &ServerInformation<'_>,
    generation: Generation,
) -> Result<(), EncodeError> {
    let mark = w.begin_tlv(pt::SERVER_INFORMATION)?;
    w.id(generation, s.server_id.0, "server identifier")?;
    encode_transport(w, &s.transport)?;
    w.end_tlv(mark, "server information")
}

/// One error cause of an Operation Error parameter (RFC 5354 §3.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCause<'a> {
    /// The cause code ([`crate::cause`]; RSPLIB also sends its own codes).
    pub code: u16,
    /// Cause-specific info: a TLV, a message, or nothing, as the cause defines.
    pub info: &'a [u8],
}

impl<'a> ErrorCause<'a> {
    /// The policy parameter carried by an "Inconsistent Pooling Policy" cause, if present and
    /// decodable (RSPLIB sends this cause without info).
    pub fn policy(&self) -> Option<Policy> {
        if self.code != crate::cause::INCONSISTENT_POLICY {
            return None;
        }
        let mut cur = Cursor::new(self.info, 0, self.info.len());
        let tlv = cur.peek(&mut Unrecognized::default()).ok()??;
        if tlv.ty != pt::POOL_POLICY {
            return None;
        }
        decode_policy(&tlv).ok()
    }
}

/// The causes of an Operation Error parameter (RFC 5354 §3.12), at least one.
pub type OperationError<'a> = Seq<'a, ErrorCause<'a>>;

/// The next cause of an Operation Error, or `None` at its end. Causes are padded to 4 bytes.
pub(crate) fn next_cause<'a>(
    cur: &mut Cursor<'a>,
    _: Generation,
    _: &mut Unrecognized,
) -> Result<Option<ErrorCause<'a>>, DecodeError> {
    if cur.at_end() {
        return Ok(None);
    }
    let start = cur.pos;
    let code = cur.u16("error cause code")?;
    let len = usize::from(cur.u16("error cause length")?);
    if len < 4 {
        return Err(DecodeError::BadLength {
            what: "error cause",
            length: len,
            offset: start,
        });
    }
    let info = cur.take(len - 4, "error cause info")?;
    cur.pos = (start + crate::wire::padded(len)).min(cur.end);
    Ok(Some(ErrorCause { code, info }))
}

pub(crate) fn decode_operation_error<'a>(
    tlv: &Tlv<'a>,
    msg: &'a [u8],
) -> Result<OperationError<'a>, DecodeError> {
    let seq = Seq::decode(
        &mut tlv.cursor(msg),
        Generation::Rfc,
        &mut Unrecognized::default(),
    )?;
    if seq.is_empty() {
        return Err(tlv.invalid("operation error", "no error cause"));
    }
    Ok(seq)
}

pub(crate) fn encode_operation_error(
    w: &mut Writer<'_>,
    causes: &OperationError<'_>,
) -> Result<(), EncodeError> {
    if causes.is_empty() {
        return Err(EncodeError::InvalidValue {
            what: "operation error",
            reason: "an operation error needs at least one cause",
        });
    }
    let mark = w.begin_tlv(pt::OPERATION_ERROR)?;
    for c in causes.iter() {
        let cm = w.begin_tlv(c.code)?;
        w.bytes(c.info)?;
        w.end_tlv(cm, "error cause")?;
    }
    w.end_tlv(mark, "operation error")
}

/// Encodes a single parameter on its own (e.g. the policy or transport TLV a cause carries as
/// info). Returns the bytes written.
pub fn encode_policy_parameter(policy: &Policy, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let mut w = Writer::new(buf);
    encode_policy(&mut w, policy)?;
    Ok(w.pos())
}

/// Encodes a Pool Handle parameter on its own (RFC 5354 §3.9), padded; returns its length.
pub fn encode_pool_handle_parameter(
    pool_handle: PoolHandle<'_>,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut w = Writer::new(buf);
    encode_pool_handle(&mut w, pool_handle)?;
    Ok(w.pos())
}

/// Encodes a transport parameter on its own (the info of an "Inconsistent Transport Type" cause).
pub fn encode_transport_parameter(
    t: &TransportParam<'_>,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut w = Writer::new(buf);
    encode_transport(&mut w, t)?;
    Ok(w.pos())
}

crate::wire::seq_item!('a, IpAddr, next_address);
crate::wire::seq_item!('a, TransportParam<'a>, next_transport);
crate::wire::seq_item!('a, PoolElementParam<'a>, next_pool_element);
crate::wire::seq_item!('a, ServerInformation<'a>, next_server_information);
crate::wire::seq_item!('a, ErrorCause<'a>, next_cause);
