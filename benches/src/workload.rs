//! What the load generator sends and expects: pool names, request frames encoded once before the
//! run, PE registrations and deregistrations, keep-alive answers, the cheap classification of
//! replies that keeps the client off the critical path, and the whole-run tally of what was sent
//! and answered in the terms of a registrar's own counters.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use rserpool_handlespace::Rng;
use rserpool_protocol::asap::message_type as mt;
use rserpool_protocol::{
    AsapMessage, Generation, PeId, Policy, PoolElementParam, PoolHandle, PrId,
    REGISTRATION_LIFE_INFINITE, Seq, TRANSPORT_USE_DATA_ONLY, TransportKind,
    TransportParam as WireTransport, UserTransport, param_type,
};

use clap::ValueEnum;
use rserpool_protocol::EncodeError;

use crate::error::{Error, Result};

/// The largest frame the client accepts (the length field's range).
pub const MAX_FRAME: usize = rserpool_protocol::MAX_MESSAGE_LEN;
/// Room that holds any request the bench builds (a registration is under 100 bytes).
const USUAL_FRAME: usize = 256;

/// The handle of pool number `i`: `pool000042` (10 bytes; a resolution request is 20 bytes).
pub fn pool_handle(i: usize) -> Vec<u8> {
    format!("pool{i:06}").into_bytes()
}

/// Encoded messages stored back to back, each picked by index.
#[derive(Clone, Debug, Default)]
pub struct Table {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl Table {
    /// Encodes `message` and appends it. The encoder gets room for a usual message first and
    /// the largest frame only if that was too small, so that a table of a million registrations
    /// is not a million zeroed 64 KiB buffers.
    pub fn push(&mut self, message: &AsapMessage<'_>, generation: Generation) -> Result<()> {
        let start = self.bytes.len();
        let mut encoded = Err(EncodeError::BufferTooSmall { needed: 0 });
        for room in [USUAL_FRAME, MAX_FRAME] {
            self.bytes.resize(start + room, 0);
            encoded = message.encode(generation, &mut self.bytes[start..]);
            if !matches!(encoded, Err(EncodeError::BufferTooSmall { .. })) {
                break;
            }
        }
        let len = encoded.map_err(|e| {
            self.bytes.truncate(start);
            Error::new(format!("cannot encode a request: {e}"))
        })?;
        self.bytes.truncate(start + len);
        self.spans.push((start, len));
        Ok(())
    }

    /// Forgets every message, keeping the allocation.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the table holds no message.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Message `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        let (start, len) = self.spans[i];
        &self.bytes[start..start + len]
    }

    /// Every message back to back.
    pub fn all(&self) -> &[u8] {
        &self.bytes
    }

    /// Messages `range` back to back.
    pub fn range(&self, range: std::ops::Range<usize>) -> &[u8] {
        if range.is_empty() {
            return &[];
        }
        let from = self.spans[range.start].0;
        let (last, len) = self.spans[range.end - 1];
        &self.bytes[from..last + len]
    }
}

/// How a connection picks its next request from its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Uniformly at random (handle resolutions of random pools).
    Random,
    /// In order, round and round (re-registrations of the connection's PEs).
    Cycle,
}

/// A PE a connection registered: keep-alives for it are answered, and it is deregistered at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeRecord {
    /// Its pool's handle.
    pub pool: Vec<u8>,
    /// Its identifier.
    pub id: PeId,
    /// Its member-selection policy with its parameters.
    pub policy: Policy,
}

/// The member-selection policy the PEs of `register`, `storm` and `resolve`'s setup register
/// with; each PE's parameters are drawn from its index, the same on every run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PolicyKind {
    /// Round Robin.
    #[default]
    Rr,
    /// Weighted Round Robin, weights 1 to 10.
    Wrr,
    /// Random.
    Rand,
    /// Weighted Random, weights 1 to 10.
    Wrand,
    /// Least Used, loads spread over the whole 32-bit range.
    Lu,
    /// Priority, priorities 1 to 10.
    Prio,
}

impl PolicyKind {
    /// Its name on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Rand => "rand",
            Self::Wrand => "wrand",
            Self::Lu => "lu",
            Self::Prio => "prio",
        }
    }

    /// The policy of PE number `n`: weight and priority `1 + n mod 10`, load `n` times the
    /// golden ratio of 2^32 (a permutation of the 32-bit range, so neighbours differ widely).
    pub fn for_pe(self, n: usize) -> Policy {
        let tenth = 1 + (n % 10) as u32;
        match self {
            Self::Rr => Policy::RoundRobin,
            Self::Wrr => Policy::WeightedRoundRobin { weight: tenth },
            Self::Rand => Policy::Random,
            Self::Wrand => Policy::WeightedRandom { weight: tenth },
            Self::Lu => Policy::LeastUsed {
                load: (n as u32).wrapping_mul(0x9e37_79b9),
            },
            Self::Prio => Policy::Priority { priority: tenth },
        }
    }
}

/// What one connection sends and which PEs it speaks for.
#[derive(Clone, Debug)]
pub struct ConnWork {
    /// The requests to draw from.
    pub requests: Arc<Table>,
    /// How to draw them.
    pub pick: Pick,
    /// The PEs registered over this connection.
    pub pes: Vec<PeRecord>,
}

/// Which replies count as successes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The echo server's replies: a HANDLE_RESOLUTION or REGISTRATION frame.
    Echo,
    /// A positive HANDLE_RESOLUTION_RESPONSE.
    Resolution,
    /// A REGISTRATION_RESPONSE (a rejection is counted apart).
    Registration,
    /// A REGISTRATION_RESPONSE or a DEREGISTRATION_RESPONSE (a PE's register, re-register,
    /// deregister cycle).
    Churn,
}

/// What a received frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The expected answer.
    Ok,
    /// A registration response with the R flag.
    Rejected,
    /// Anything else that answers a request.
    Error,
    /// An ENDPOINT_KEEP_ALIVE: answer it, it answers no request.
    KeepAlive,
}

/// Classifies a whole frame by its header and, for resolution responses, its second parameter;
/// replies are not decoded completely (the codec has its own tests; the client must stay cheap).
pub fn classify(frame: &[u8], check: Check) -> Reply {
    let ty = frame[0];
    if ty == mt::ENDPOINT_KEEP_ALIVE {
        return Reply::KeepAlive;
    }
    let ok = match check {
        Check::Echo => ty == mt::HANDLE_RESOLUTION || ty == mt::REGISTRATION,
        Check::Resolution => ty == mt::HANDLE_RESOLUTION_RESPONSE && resolved(frame),
        Check::Registration if ty == mt::REGISTRATION_RESPONSE => {
            return if frame[1] & 1 != 0 {
                Reply::Rejected
            } else {
                Reply::Ok
            };
        }
        Check::Registration => false,
        Check::Churn if ty == mt::REGISTRATION_RESPONSE && frame[1] & 1 != 0 => {
            return Reply::Rejected;
        }
        Check::Churn => ty == mt::REGISTRATION_RESPONSE || ty == mt::DEREGISTRATION_RESPONSE,
    };
    if ok { Reply::Ok } else { Reply::Error }
}

/// The error cause a REGISTRATION_RESPONSE with the R flag carries: the first of its operation
/// error, 0 (unspecified) when it has none or does not decode.
pub fn rejection_cause(frame: &[u8], generation: Generation) -> u16 {
    match AsapMessage::decode(frame, generation).map(|d| d.message) {
        Ok(AsapMessage::RegistrationResponse {
            error: Some(error), ..
        }) => error.first().map_or(0, |c| c.code),
        _ => 0,
    }
}

/// The RFC 5354 name of an error cause, for reports.
pub fn cause_name(code: u16) -> &'static str {
    use rserpool_protocol::cause;
    match code {
        cause::UNSPECIFIED => "unspecified",
        cause::UNRECOGNIZED_PARAMETER => "unrecognized parameter",
        cause::UNRECOGNIZED_MESSAGE => "unrecognized message",
        cause::INVALID_VALUES => "invalid values",
        cause::NON_UNIQUE_PE_ID => "non-unique PE identifier",
        cause::INCONSISTENT_POLICY => "inconsistent pooling policy",
        cause::LACK_OF_RESOURCES => "lack of resources",
        cause::INCONSISTENT_TRANSPORT => "inconsistent transport type",
        cause::INCONSISTENT_DATA_CONTROL => "inconsistent data/control configuration",
        cause::UNKNOWN_POOL_HANDLE => "unknown pool handle",
        cause::REJECTED_SECURITY => "rejected for security",
        _ => "unknown cause",
    }
}

/// Whether a HANDLE_RESOLUTION_RESPONSE carries PEs: after the pool handle comes a policy or a
/// pool element, not an operation error.
fn resolved(frame: &[u8]) -> bool {
    let be16 = |at: usize| usize::from(u16::from_be_bytes([frame[at], frame[at + 1]]));
    let len = be16(2).min(frame.len());
    if len < 8 || be16(4) != usize::from(param_type::POOL_HANDLE) {
        return false;
    }
    let next = 4 + ((be16(6) + 3) & !3);
    if next + 4 > len {
        return false;
    }
    let ty = be16(next) as u16;
    ty == param_type::POOL_POLICY || ty == param_type::POOL_ELEMENT
}

/// What a run sent and which answers came back, counted over its whole length (warm-up, the
/// measured window, the answers still in flight at its end, the deregistrations at its end), in
/// the terms of a registrar's counters: each field has its `rserpool_*_total` series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests sent (registrations, deregistrations, handle resolutions).
    pub requests: u64,
    /// REGISTRATION_RESPONSEs without the R flag (`rserpool_registrations_total{result="accepted"}`).
    pub registrations_accepted: u64,
    /// REGISTRATION_RESPONSEs with the R flag.
    pub registrations_rejected: u64,
    /// DEREGISTRATION_RESPONSEs (`rserpool_deregistrations_total`, every result).
    pub deregistrations: u64,
    /// HANDLE_RESOLUTION_RESPONSEs carrying PEs (`rserpool_resolutions_total{result="found"}`).
    pub resolutions_found: u64,
    /// HANDLE_RESOLUTION_RESPONSEs carrying an error (`{result="unknown_pool"}`).
    pub resolutions_failed: u64,
    /// ENDPOINT_KEEP_ALIVE_ACKs sent (`rserpool_keep_alive_acks_total`).
    pub keep_alive_acks: u64,
}

impl Totals {
    /// Adds another tally.
    pub fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.registrations_accepted += other.registrations_accepted;
        self.registrations_rejected += other.registrations_rejected;
        self.deregistrations += other.deregistrations;
        self.resolutions_found += other.resolutions_found;
        self.resolutions_failed += other.resolutions_failed;
        self.keep_alive_acks += other.keep_alive_acks;
    }

    /// Counts one received frame by its type (other types are not counted).
    pub fn tally(&mut self, frame: &[u8]) {
        match frame[0] {
            mt::REGISTRATION_RESPONSE if frame[1] & 1 != 0 => self.registrations_rejected += 1,
            mt::REGISTRATION_RESPONSE => self.registrations_accepted += 1,
            mt::DEREGISTRATION_RESPONSE => self.deregistrations += 1,
            mt::HANDLE_RESOLUTION_RESPONSE if resolved(frame) => self.resolutions_found += 1,
            mt::HANDLE_RESOLUTION_RESPONSE => self.resolutions_failed += 1,
            _ => {}
        }
    }
}

/// One HANDLE_RESOLUTION per pool, `pools` pools.
pub fn resolution_table(pools: usize, generation: Generation) -> Result<Table> {
    let mut table = Table::default();
    for i in 0..pools {
        let handle = pool_handle(i);
        table.push(
            &AsapMessage::HandleResolution {
                subscribe: false,
                pool_handle: PoolHandle(&handle),
                items: None,
            },
            generation,
        )?;
    }
    Ok(table)
}

/// Appends the ASAP_REGISTRATION of `pe`, reachable over TCP at `ip`:`port`, with its policy and
/// an infinite registration life (the keep-alives decide its life).
pub fn push_registration(
    table: &mut Table,
    pe: &PeRecord,
    ip: IpAddr,
    port: u16,
    generation: Generation,
) -> Result<()> {
    let addresses = [ip];
    table.push(
        &AsapMessage::Registration {
            pool_handle: PoolHandle(&pe.pool),
            pool_element: PoolElementParam {
                id: pe.id,
                home_pr: PrId(0),
                registration_life: REGISTRATION_LIFE_INFINITE,
                user_transport: UserTransport::Transport(WireTransport {
                    kind: TransportKind::Tcp,
                    port,
                    transport_use: TRANSPORT_USE_DATA_ONLY,
                    service_code: 0,
                    addresses: Seq::from_items(&addresses),
                }),
                policy: pe.policy,
                asap_transport: None,
            },
        },
        generation,
    )
}

/// The cycle of a churning PE: its registration, `reregistrations` re-registrations (the same
/// message again) and its deregistration.
pub fn churn_table(
    pe: &PeRecord,
    ip: IpAddr,
    port: u16,
    reregistrations: usize,
    generation: Generation,
) -> Result<Table> {
    let mut table = Table::default();
    for _ in 0..=reregistrations {
        push_registration(&mut table, pe, ip, port, generation)?;
    }
    push_deregistration(&mut table, pe, generation)?;
    Ok(table)
}

/// Appends the ASAP_DEREGISTRATION of `pe`.
pub fn push_deregistration(table: &mut Table, pe: &PeRecord, generation: Generation) -> Result<()> {
    table.push(
        &AsapMessage::Deregistration {
            pool_handle: PoolHandle(&pe.pool),
            pe_id: pe.id,
        },
        generation,
    )
}

/// The user-transport port PE number `n` advertises (nothing listens there; PUs are not run).
pub fn pe_port(n: usize) -> u16 {
    10_000 + (n % 50_000) as u16
}

/// Answers an ENDPOINT_KEEP_ALIVE frame with ENDPOINT_KEEP_ALIVE_ACKs appended to `out`: for the
/// PE it names, or for every PE in `pes` of its pool when it names none. Returns how many acks.
pub fn answer_keep_alive(
    frame: &[u8],
    pes: &[PeRecord],
    generation: Generation,
    out: &mut Vec<u8>,
) -> usize {
    let Ok(decoded) = AsapMessage::decode(frame, generation) else {
        return 0;
    };
    let AsapMessage::EndpointKeepAlive {
        pool_handle, pe_id, ..
    } = decoded.message
    else {
        return 0;
    };
    let mut ack = |id: PeId| {
        let start = out.len();
        out.resize(start + MAX_FRAME, 0);
        let message = AsapMessage::EndpointKeepAliveAck {
            pool_handle,
            pe_id: id,
        };
        let len = message.encode(generation, &mut out[start..]).unwrap_or(0);
        out.truncate(start + len);
        usize::from(len > 0)
    };
    match pe_id {
        Some(id) => ack(id),
        None => pes
            .iter()
            .filter(|pe| pe.pool == pool_handle.0)
            .map(|pe| ack(pe.id))
            .sum(),
    }
}

/// Distinct random non-zero 32-bit PE identifiers (the RFC generation carries 32 bits).
#[derive(Debug)]
pub struct PeIds {
    rng: Rng,
    used: HashSet<u32>,
}

impl PeIds {
    /// A source seeded from the clock.
    pub fn new() -> Self {
        Self {
            rng: Rng::from_entropy(),
            used: HashSet::new(),
        }
    }

    /// An identifier not handed out before.
    pub fn fresh(&mut self) -> PeId {
        loop {
            let id = self.rng.next_u64() as u32;
            if id != 0 && self.used.insert(id) {
                return PeId(u64::from(id));
            }
        }
    }
}

impl Default for PeIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rserpool_protocol::{OperationError, Resolution};

    const GEN: Generation = Generation::Rfc;

    fn encode(message: &AsapMessage<'_>) -> Vec<u8> {
        let mut t = Table::default();
        t.push(message, GEN).unwrap();
        t.all().to_vec()
    }

    fn pe(pool: &[u8], id: u64) -> PeRecord {
        PeRecord {
            pool: pool.to_vec(),
            id: PeId(id),
            policy: Policy::RoundRobin,
        }
    }

    #[test]
    fn a_resolution_request_is_twenty_bytes() {
        let t = resolution_table(3, GEN).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(2).len(), 20);
        let decoded = AsapMessage::decode(t.get(2), GEN).unwrap().message;
        assert!(
            matches!(decoded, AsapMessage::HandleResolution { pool_handle, .. } if pool_handle.0 == b"pool000002")
        );
    }

    #[test]
    fn registrations_round_trip() {
        let mut t = Table::default();
        let p = pe(b"pool000001", 77);
        push_registration(&mut t, &p, [127, 0, 0, 1].into(), 10_001, GEN).unwrap();
        push_deregistration(&mut t, &p, GEN).unwrap();
        match AsapMessage::decode(t.get(0), GEN).unwrap().message {
            AsapMessage::Registration {
                pool_handle,
                pool_element,
            } => {
                assert_eq!(pool_handle.0, b"pool000001");
                assert_eq!(pool_element.id, PeId(77));
                assert_eq!(pool_element.registration_life, REGISTRATION_LIFE_INFINITE);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            AsapMessage::decode(t.get(1), GEN).unwrap().message,
            AsapMessage::Deregistration {
                pe_id: PeId(77),
                ..
            }
        ));
    }

    #[test]
    fn replies_are_classified_by_kind() {
        let ip = [IpAddr::from([127, 0, 0, 1])];
        let tr = WireTransport {
            kind: TransportKind::Tcp,
            port: 1,
            transport_use: 0,
            service_code: 0,
            addresses: Seq::from_items(&ip),
        };
        let element = PoolElementParam {
            id: PeId(1),
            home_pr: PrId(2),
            registration_life: 1000,
            user_transport: UserTransport::Transport(tr),
            policy: Policy::RoundRobin,
            asap_transport: None,
        };
        let elements = [element];
        let found = encode(&AsapMessage::HandleResolutionResponse {
            accepted: false,
            pool_handle: PoolHandle(b"p"),
            resolution: Resolution::Found {
                policy: Some(Policy::RoundRobin),
                pool_elements: Seq::from_items(&elements),
            },
        });
        let causes = [rserpool_protocol::ErrorCause {
            code: rserpool_protocol::cause::UNKNOWN_POOL_HANDLE,
            info: &[],
        }];
        let failed = encode(&AsapMessage::HandleResolutionResponse {
            accepted: false,
            pool_handle: PoolHandle(b"p"),
            resolution: Resolution::Failed(OperationError::from_items(&causes)),
        });
        let accepted = encode(&AsapMessage::RegistrationResponse {
            rejected: false,
            pool_handle: PoolHandle(b"p"),
            pe_id: PeId(1),
            error: None,
        });
        let rejected = encode(&AsapMessage::RegistrationResponse {
            rejected: true,
            pool_handle: PoolHandle(b"p"),
            pe_id: PeId(1),
            error: None,
        });
        let keep_alive = encode(&AsapMessage::EndpointKeepAlive {
            home: false,
            server_id: PrId(9),
            pool_handle: PoolHandle(b"p"),
            pe_id: Some(PeId(1)),
        });
        let request = resolution_table(1, GEN).unwrap().get(0).to_vec();

        assert_eq!(classify(&found, Check::Resolution), Reply::Ok);
        assert_eq!(classify(&failed, Check::Resolution), Reply::Error);
        assert_eq!(classify(&accepted, Check::Resolution), Reply::Error);
        assert_eq!(classify(&accepted, Check::Registration), Reply::Ok);
        assert_eq!(classify(&rejected, Check::Registration), Reply::Rejected);
        assert_eq!(classify(&found, Check::Registration), Reply::Error);
        assert_eq!(classify(&keep_alive, Check::Resolution), Reply::KeepAlive);
        assert_eq!(classify(&request, Check::Echo), Reply::Ok);
        assert_eq!(classify(&found, Check::Echo), Reply::Error);
        let mut totals = Totals::default();
        for frame in [&found, &failed, &failed, &keep_alive, &request] {
            totals.tally(frame);
        }
        assert_eq!(
            (totals.resolutions_found, totals.resolutions_failed),
            (1, 2)
        );
        assert_eq!(
            totals.keep_alive_acks, 0,
            "acks are counted where they are sent"
        );
    }

    #[test]
    fn churn_cycles_register_reregister_deregister_and_totals_count_by_type() {
        let p = pe(b"pool000003", 9);
        let t = churn_table(&p, [127, 0, 0, 1].into(), 10_003, 2, GEN).unwrap();
        let kinds: Vec<u8> = (0..t.len()).map(|i| t.get(i)[0]).collect();
        assert_eq!(
            kinds,
            [
                mt::REGISTRATION,
                mt::REGISTRATION,
                mt::REGISTRATION,
                mt::DEREGISTRATION
            ]
        );
        let accepted = encode(&AsapMessage::RegistrationResponse {
            rejected: false,
            pool_handle: PoolHandle(b"p"),
            pe_id: PeId(9),
            error: None,
        });
        let rejected = encode(&AsapMessage::RegistrationResponse {
            rejected: true,
            pool_handle: PoolHandle(b"p"),
            pe_id: PeId(9),
            error: None,
        });
        let deregistered = encode(&AsapMessage::DeregistrationResponse {
            pool_handle: PoolHandle(b"p"),
            pe_id: PeId(9),
            error: None,
        });
        let resolution = resolution_table(1, GEN).unwrap().get(0).to_vec();
        assert_eq!(classify(&accepted, Check::Churn), Reply::Ok);
        assert_eq!(classify(&rejected, Check::Churn), Reply::Rejected);
        assert_eq!(classify(&deregistered, Check::Churn), Reply::Ok);
        assert_eq!(classify(&resolution, Check::Churn), Reply::Error);
        assert_eq!(classify(&deregistered, Check::Registration), Reply::Error);
        let mut totals = Totals::default();
        for frame in [&accepted, &accepted, &rejected, &deregistered, &resolution] {
            totals.tally(frame);
        }
        assert_eq!(
            totals,
            Totals {
                registrations_accepted: 2,
                registrations_rejected: 1,
                deregistrations: 1,
                ..Totals::default()
            }
        );
        let mut sum = totals;
        sum.add(&Totals {
            requests: 3,
            keep_alive_acks: 4,
            resolutions_found: 5,
            resolutions_failed: 6,
            ..totals
        });
        assert_eq!(
            (
                sum.requests,
                sum.registrations_accepted,
                sum.keep_alive_acks
            ),
            (3, 4, 4)
        );
        assert_eq!((sum.resolutions_found, sum.resolutions_failed), (5, 6));
    }

    #[test]
    fn keep_alives_are_acked_per_pe() {
        let pes = [pe(b"a", 1), pe(b"a", 2), pe(b"b", 3)];
        let named = encode(&AsapMessage::EndpointKeepAlive {
            home: false,
            server_id: PrId(9),
            pool_handle: PoolHandle(b"a"),
            pe_id: Some(PeId(2)),
        });
        let mut out = Vec::new();
        assert_eq!(answer_keep_alive(&named, &pes, GEN, &mut out), 1);
        assert_eq!(
            AsapMessage::decode(&out, GEN).unwrap().message,
            AsapMessage::EndpointKeepAliveAck {
                pool_handle: PoolHandle(b"a"),
                pe_id: PeId(2)
            }
        );

        let whole_pool = encode(&AsapMessage::EndpointKeepAlive {
            home: false,
            server_id: PrId(9),
            pool_handle: PoolHandle(b"a"),
            pe_id: None,
        });
        out.clear();
        assert_eq!(answer_keep_alive(&whole_pool, &pes, GEN, &mut out), 2);
        let ids: Vec<_> = rserpool_protocol::framing::Frames::new(&out, MAX_FRAME)
            .map(|f| match AsapMessage::decode(f, GEN).unwrap().message {
                AsapMessage::EndpointKeepAliveAck { pe_id, .. } => pe_id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, [PeId(1), PeId(2)]);
    }

    #[test]
    fn policies_draw_their_parameters_from_the_pe_number() {
        assert_eq!(PolicyKind::Rr.for_pe(7), Policy::RoundRobin);
        assert_eq!(
            PolicyKind::Wrand.for_pe(0),
            Policy::WeightedRandom { weight: 1 }
        );
        assert_eq!(
            PolicyKind::Wrr.for_pe(19),
            Policy::WeightedRoundRobin { weight: 10 }
        );
        assert_eq!(PolicyKind::Prio.for_pe(3), Policy::Priority { priority: 4 });
        let loads: HashSet<u32> = (0..1000)
            .map(|n| match PolicyKind::Lu.for_pe(n) {
                Policy::LeastUsed { load } => load,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(loads.len(), 1000, "distinct loads");
        assert!(loads.iter().any(|&l| l > u32::MAX / 2) && loads.iter().any(|&l| l < u32::MAX / 4));
    }

    #[test]
    fn a_range_of_a_table_is_its_messages_back_to_back() {
        let t = resolution_table(4, GEN).unwrap();
        assert_eq!(t.range(1..3), [t.get(1), t.get(2)].concat());
        assert!(t.range(2..2).is_empty());
        assert_eq!(t.range(0..4), t.all());
    }

    #[test]
    fn pe_ids_are_distinct_and_fit_32_bits() {
        let mut ids = PeIds::new();
        let all: HashSet<_> = (0..10_000).map(|_| ids.fresh().0).collect();
        assert_eq!(all.len(), 10_000);
        assert!(all.iter().all(|&id| id != 0 && id <= u64::from(u32::MAX)));
    }
}
