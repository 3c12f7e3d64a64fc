//! The hostile messages of the soak: bases (the RSPLIB corpus's ASAP and ENRP messages, and
//! freshly encoded valid ASAP messages naming the legitimate pools and the attackers' own) and
//! the mutations applied to them ([`MutationKind`]), all drawn from a seeded [`Rng`].
//!
//! Fresh messages never name a legitimate PE in an ASAP_ENDPOINT_UNREACHABLE or
//! ASAP_ENDPOINT_KEEP_ALIVE_ACK: MAX-BAD-PE-REPORT unreachable reports from anyone remove a PE
//! (RFC 5352 §3.5), which is the protocol working, not the registrar failing; and an ack is
//! one bit flip from a report. Attacker PE identifiers start with the byte 0xa5, legitimate ones
//! with 0x5a, so no bit flip turns one into the other.

use std::net::IpAddr;

use rserpool_handlespace::Rng;
use rserpool_protocol::asap::message_type as mt;
use rserpool_protocol::param_type as pt;
use rserpool_protocol::{
    AsapMessage, Generation, PeId, Policy, PoolElementParam, PoolHandle, PrId, Seq, TransportKind,
    TransportParam, UserTransport,
};

/// The RSPLIB corpus (`N proto transport HEX` per line), built into the binary.
const CORPUS: &str = rserpool_protocol::corpus::RSPLIB_MESSAGES;
/// The first byte of every attacker PE identifier.
pub const ATTACKER_ID_BYTE: u32 = 0xa5;
/// The first byte of every legitimate PE identifier.
pub const LEGIT_ID_BYTE: u32 = 0x5a;
/// Pool handles the attackers register their own PEs in.
const ATTACKER_POOLS: u64 = 16;
/// How deep the parameter walker descends into nested parameters.
const MAX_DEPTH: usize = 4;
/// Room for any message the forge encodes.
const ENCODE_ROOM: usize = 4096;

/// How a hostile message was made from its base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutationKind {
    /// One to three bits flipped anywhere (the header's length included).
    BitFlip,
    /// Cut short, the header's length set to the cut (parameters then run past the end).
    Truncation,
    /// The header's length or a parameter's length set wrong, longer or shorter.
    LengthLie,
    /// A parameter of an unknown type inserted at the top or in a nested parameter, with one of
    /// the four patterns of the type's two high "action" bits (RFC 5354 §3).
    UnknownParameter,
    /// Random parameters (random or known types, random content, some nested again) inside a
    /// Pool Element, transport or server parameter.
    NestedGarbage,
    /// Random bytes, half of them behind a plausible header.
    RandomBytes,
}

impl MutationKind {
    /// Every kind, in report order.
    pub const ALL: [Self; 6] = [
        Self::BitFlip,
        Self::Truncation,
        Self::LengthLie,
        Self::UnknownParameter,
        Self::NestedGarbage,
        Self::RandomBytes,
    ];

    /// Its name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::BitFlip => "bit_flip",
            Self::Truncation => "truncation",
            Self::LengthLie => "length_lie",
            Self::UnknownParameter => "unknown_parameter",
            Self::NestedGarbage => "nested_garbage",
            Self::RandomBytes => "random_bytes",
        }
    }

    /// Its index in [`MutationKind::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One message of the RSPLIB corpus.
#[derive(Clone, Debug)]
pub struct CorpusMessage {
    /// Whether it is an ENRP message (two server identifiers before its parameters).
    pub enrp: bool,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// The corpus's ASAP and ENRP messages (its CSP messages are left out).
pub fn corpus() -> Result<Vec<CorpusMessage>, String> {
    let mut messages = Vec::new();
    for (n, line) in CORPUS.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, proto, _, hex] = fields[..] else {
            return Err(format!(
                "corpus line {}: not `N proto transport HEX`",
                n + 1
            ));
        };
        let enrp = match proto {
            "asap" => false,
            "enrp" => true,
            _ => continue,
        };
        let bytes = decode_hex(hex).ok_or_else(|| format!("corpus line {}: bad hex", n + 1))?;
        messages.push(CorpusMessage { enrp, bytes });
    }
    Ok(messages)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What fresh messages name: the legitimate pools and PEs.
#[derive(Clone, Debug)]
pub struct Targets {
    /// The legitimate pools' handles.
    pub pools: Vec<Vec<u8>>,
    /// Each legitimate PE: its pool's index in `pools` and its identifier.
    pub pes: Vec<(usize, PeId)>,
}

/// One hostile message.
#[derive(Clone, Debug)]
pub struct HostileMessage {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// How it was made.
    pub kind: MutationKind,
    /// Whether its base came from the corpus (else it was freshly encoded; random bytes have
    /// neither).
    pub from_corpus: bool,
    /// For an unknown parameter: its type's two high bits (0-3).
    pub action: Option<u8>,
}

impl HostileMessage {
    /// Whether a byte stream stays framed after it: its header's length is at least 4 and its
    /// bytes are that length padded to 4. One that is not leaves the registrar out of step.
    pub fn keeps_framing(&self) -> bool {
        let b = &self.bytes;
        if b.len() < 4 {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        len >= 4 && len.next_multiple_of(4) == b.len()
    }
}

/// Makes hostile messages from a seed.
#[derive(Debug)]
pub struct Forge<'a> {
    corpus: &'a [CorpusMessage],
    targets: &'a Targets,
    generation: Generation,
    /// The address attacker registrations give for their user transport.
    source: IpAddr,
    rng: Rng,
}

impl<'a> Forge<'a> {
    /// A forge drawing from `seed`, mutating `corpus` and fresh messages naming `targets`.
    pub fn new(
        corpus: &'a [CorpusMessage],
        targets: &'a Targets,
        generation: Generation,
        source: IpAddr,
        seed: u64,
    ) -> Self {
        Self {
            corpus,
            targets,
            generation,
            source,
            rng: Rng::seed(seed),
        }
    }

    /// The next hostile message: a kind drawn evenly, a base from the corpus or fresh (half
    /// each), mutated.
    pub fn next_message(&mut self) -> HostileMessage {
        let kind = MutationKind::ALL[self.below(MutationKind::ALL.len())];
        if kind == MutationKind::RandomBytes {
            return HostileMessage {
                bytes: self.random_bytes(),
                kind,
                from_corpus: false,
                action: None,
            };
        }
        let from_corpus = !self.corpus.is_empty() && self.rng.below(2) == 0;
        let (mut bytes, enrp) = if from_corpus {
            let m = &self.corpus[self.below(self.corpus.len())];
            (m.bytes.clone(), m.enrp)
        } else {
            (self.fresh(), false)
        };
        let params_at = params_at(&bytes, enrp, self.generation);
        let mut action = None;
        match kind {
            MutationKind::BitFlip => self.flip_bits(&mut bytes),
            MutationKind::Truncation => self.truncate(&mut bytes),
            MutationKind::LengthLie => self.lie_about_a_length(&mut bytes, params_at),
            MutationKind::UnknownParameter => {
                action = Some(self.insert_unknown(&mut bytes, params_at));
            }
            MutationKind::NestedGarbage => self.insert_garbage(&mut bytes, params_at),
            MutationKind::RandomBytes => unreachable!("returned above"),
        }
        HostileMessage {
            bytes,
            kind,
            from_corpus,
            action,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    fn random_vec(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.rng.next_u64() as u8).collect()
    }

    /// Random bytes, fewer than `max` of them.
    fn random_up_to(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max);
        self.random_vec(len)
    }

    /// A freshly encoded valid ASAP message: a registration of an attacker PE in an attacker
    /// pool, a resolution of a legitimate or attacker pool, a deregistration of a legitimate PE
    /// (which must be refused) or an attacker's, an ack or unreachable report of an attacker PE,
    /// a server announce, a cookie.
    fn fresh(&mut self) -> Vec<u8> {
        let attacker_pool = format!("hostile-attack-{:02}", self.rng.below(ATTACKER_POOLS));
        let attacker_id = PeId(u64::from(
            (ATTACKER_ID_BYTE << 24) | (self.rng.next_u64() as u32 & 0x00ff_ffff),
        ));
        let targets = self.targets;
        let legit = match targets.pes.len() {
            0 => None,
            n => Some(targets.pes[self.below(n)]),
        };
        let addresses = [self.source, IpAddr::from([127, 0, 0, 1])];
        let transport = |kind, count: usize, port: u16| TransportParam {
            kind,
            port,
            transport_use: 0,
            service_code: 0,
            addresses: Seq::from_items(&addresses[..count]),
        };
        let policy = match self.rng.below(4) {
            0 => Policy::RoundRobin,
            1 => Policy::WeightedRoundRobin {
                weight: 1 + self.rng.below(10) as u32,
            },
            2 => Policy::LeastUsed {
                load: self.rng.next_u64() as u32,
            },
            _ => Policy::Priority {
                priority: self.rng.below(10) as u32,
            },
        };
        let port = 1 + self.rng.below(65_000) as u16;
        let announced = [transport(TransportKind::Tcp, 1, port)];
        let cookie = self.random_up_to(48);
        let message = match self.rng.below(8) {
            0 | 1 => AsapMessage::Registration {
                pool_handle: PoolHandle(attacker_pool.as_bytes()),
                pool_element: PoolElementParam {
                    id: attacker_id,
                    home_pr: PrId(0),
                    registration_life: 1 + self.rng.below(600_000) as i32,
                    user_transport: UserTransport::Transport(transport(
                        TransportKind::Tcp,
                        1,
                        port,
                    )),
                    policy,
                    asap_transport: (self.rng.below(2) == 0)
                        .then(|| transport(TransportKind::Sctp, 2, port)),
                },
            },
            2 | 3 => {
                let handle = match legit {
                    Some((pool, _)) if self.rng.below(2) == 0 => &targets.pools[pool][..],
                    _ => attacker_pool.as_bytes(),
                };
                AsapMessage::HandleResolution {
                    subscribe: false,
                    pool_handle: PoolHandle(handle),
                    items: (self.rng.below(2) == 0).then(|| self.rng.below(300) as u32),
                }
            }
            4 => match legit {
                Some((pool, id)) => AsapMessage::Deregistration {
                    pool_handle: PoolHandle(&targets.pools[pool]),
                    pe_id: id,
                },
                None => AsapMessage::Deregistration {
                    pool_handle: PoolHandle(attacker_pool.as_bytes()),
                    pe_id: attacker_id,
                },
            },
            5 => AsapMessage::EndpointKeepAliveAck {
                pool_handle: PoolHandle(attacker_pool.as_bytes()),
                pe_id: attacker_id,
            },
            6 => AsapMessage::EndpointUnreachable {
                pool_handle: PoolHandle(attacker_pool.as_bytes()),
                pe_id: attacker_id,
            },
            _ if self.rng.below(2) == 0 => AsapMessage::ServerAnnounce {
                server_id: PrId(u64::from(self.rng.next_u64() as u32)),
                transports: Seq::from_items(&announced),
            },
            _ => AsapMessage::Cookie(&cookie),
        };
        let mut buf = vec![0; ENCODE_ROOM];
        // Every message above is within the codec's rules; an encoding error would be a bug of
        // this forge, and random bytes still make a hostile message.
        match message.encode(self.generation, &mut buf) {
            Ok(len) => {
                buf.truncate(len);
                buf
            }
            Err(_) => self.random_bytes(),
        }
    }

    fn flip_bits(&mut self, m: &mut [u8]) {
        if m.is_empty() {
            return;
        }
        for _ in 0..1 + self.rng.below(3) {
            let at = self.below(m.len());
            m[at] ^= 1 << self.rng.below(8);
        }
    }

    /// Cuts the message short and sets its header's length to the cut, padded to 4; one in eight
    /// cuts inside the header (never to nothing: an SCTP message has at least one byte).
    fn truncate(&mut self, m: &mut Vec<u8>) {
        if m.len() <= 1 {
            return;
        }
        if m.len() <= 4 || self.rng.below(8) == 0 {
            m.truncate(1 + self.below(3.min(m.len() - 1)));
            return;
        }
        let cut = 4 + self.below(m.len() - 4);
        m.truncate(cut);
        set_u16(m, 2, cut as u16);
        m.resize(cut.next_multiple_of(4), 0);
    }

    /// Sets the header's length (one time in three, or when there is no parameter) or a
    /// parameter's length to a lie: a little longer, a little shorter, below the minimum of 4,
    /// or near 65 535.
    fn lie_about_a_length(&mut self, m: &mut Vec<u8>, params_at: usize) {
        if m.len() < 4 {
            m.resize(4, 0);
        }
        let tlvs = walk(m, params_at).tlvs;
        let at = if tlvs.is_empty() || self.rng.below(3) == 0 {
            2
        } else {
            tlvs[self.below(tlvs.len())] + 2
        };
        let truth = u16::from_be_bytes([m[at], m[at + 1]]);
        let mut lie = match self.rng.below(4) {
            0 => truth.saturating_add(1 + self.rng.below(16) as u16),
            1 => truth.saturating_sub(1 + self.rng.below(16) as u16),
            2 => self.rng.below(4) as u16,
            _ => u16::MAX - self.rng.below(16) as u16,
        };
        if lie == truth {
            lie = truth ^ 0x0100;
        }
        set_u16(m, at, lie);
    }

    /// Inserts a parameter of an unknown type (action bits drawn) at a parameter boundary of the
    /// message or of a nested parameter, every enclosing length grown to hold it; returns the
    /// action bits.
    fn insert_unknown(&mut self, m: &mut Vec<u8>, params_at: usize) -> u8 {
        let action = self.rng.below(4) as u16;
        // Unknown low bits: above the known 0x01-0x10, and not 0x3f (the known 0x803f).
        let mut low = 0x11 + self.rng.below(0x3fff - 0x11) as u16;
        if low == 0x3f {
            low = 0x40;
        }
        let value = self.random_up_to(24);
        let tlv = encode_tlv((action << 14) | low, &value);
        let containers = walk(m, params_at).containers;
        let container = &containers[self.below(containers.len())];
        let at = self.boundary(m, container);
        insert(m, at, &tlv, &container.parents);
        action as u8
    }

    /// Inserts one to three random parameters (random types, known ones among them, some holding
    /// random parameters again) into a nested parameter if the message has one, else at its top.
    fn insert_garbage(&mut self, m: &mut Vec<u8>, params_at: usize) {
        let containers = walk(m, params_at).containers;
        let nested: Vec<&Container> = containers
            .iter()
            .filter(|c| !c.parents.is_empty())
            .collect();
        let container = if nested.is_empty() {
            &containers[0]
        } else {
            nested[self.below(nested.len())]
        };
        let mut garbage = Vec::new();
        for _ in 0..1 + self.rng.below(3) {
            let ty = if self.rng.below(2) == 0 {
                1 + self.rng.below(u64::from(pt::OPAQUE_TRANSPORT)) as u16
            } else {
                self.rng.next_u64() as u16
            };
            let value = if self.rng.below(3) == 0 {
                let inner_ty = self.rng.next_u64() as u16;
                let inner = self.random_up_to(16);
                encode_tlv(inner_ty, &inner)
            } else {
                self.random_up_to(32)
            };
            garbage.extend_from_slice(&encode_tlv(ty, &value));
        }
        let at = self.boundary(m, container);
        insert(m, at, &garbage, &container.parents);
    }

    /// A parameter boundary of `container` to insert at: before one of its parameters, or at
    /// its end if that is aligned.
    fn boundary(&mut self, m: &[u8], container: &Container) -> usize {
        let mut points = child_offsets(m, container.start, container.end);
        if (container.end - container.start).is_multiple_of(4) {
            points.push(container.end);
        }
        if points.is_empty() {
            return container.start;
        }
        points[self.below(points.len())]
    }

    /// 1 to 200 random bytes; half of them behind a plausible header (an ASAP type, the true
    /// length, padded to 4).
    fn random_bytes(&mut self) -> Vec<u8> {
        let len = 1 + self.below(200);
        let mut m = self.random_vec(len);
        if self.rng.below(2) == 0 && m.len() >= 4 {
            m.truncate(m.len() / 4 * 4);
            m[0] = 1 + self.rng.below(14) as u8;
            let len = m.len() as u16;
            set_u16(&mut m, 2, len);
        }
        m
    }
}

/// Where the parameters of message `m` start: after the header and the server identifiers an
/// ENRP message (two), an ASAP_ENDPOINT_KEEP_ALIVE or an ASAP_SERVER_ANNOUNCE (one) carries.
fn params_at(m: &[u8], enrp: bool, generation: Generation) -> usize {
    let id = match generation {
        Generation::Rfc => 4,
        Generation::Ng => 8,
    };
    match m.first() {
        _ if enrp => 4 + 2 * id,
        Some(&mt::ENDPOINT_KEEP_ALIVE | &mt::SERVER_ANNOUNCE) => 4 + id,
        _ => 4,
    }
}

/// A parameter list inside a message: where its parameters start and end, and the header
/// offsets of the parameters around it, outermost first (none for the message's own list).
#[derive(Clone, Debug)]
struct Container {
    start: usize,
    end: usize,
    parents: Vec<usize>,
}

/// What [`walk`] found: every parameter list and every parameter's header offset.
struct Walked {
    containers: Vec<Container>,
    tlvs: Vec<usize>,
}

/// Walks the parameters of `m` from `params_at` down into the nested ones (Pool Element,
/// transports, server information, operation error), as long as their lengths hold.
fn walk(m: &[u8], params_at: usize) -> Walked {
    let mut walked = Walked {
        containers: vec![Container {
            start: params_at.min(m.len()),
            end: m.len(),
            parents: Vec::new(),
        }],
        tlvs: Vec::new(),
    };
    walk_list(m, params_at.min(m.len()), m.len(), &[], &mut walked);
    walked
}

fn walk_list(m: &[u8], start: usize, end: usize, parents: &[usize], walked: &mut Walked) {
    if parents.len() >= MAX_DEPTH {
        return;
    }
    for at in child_offsets(m, start, end) {
        walked.tlvs.push(at);
        let ty = u16::from_be_bytes([m[at], m[at + 1]]);
        let len = usize::from(u16::from_be_bytes([m[at + 2], m[at + 3]]));
        let Some(skip) = nested_at(ty & 0x3fff) else {
            continue;
        };
        if 4 + skip <= len {
            let mut inner = parents.to_vec();
            inner.push(at);
            walked.containers.push(Container {
                start: at + 4 + skip,
                end: at + len,
                parents: inner.clone(),
            });
            walk_list(m, at + 4 + skip, at + len, &inner, walked);
        }
    }
}

/// The header offsets of the well-formed parameters from `start` to `end` (stops at the first
/// whose length does not fit).
fn child_offsets(m: &[u8], start: usize, end: usize) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = start;
    while at + 4 <= end {
        let len = usize::from(u16::from_be_bytes([m[at + 2], m[at + 3]]));
        if len < 4 || at + len > end {
            break;
        }
        offsets.push(at);
        at += len.next_multiple_of(4);
    }
    offsets
}

/// Where the nested parameters of a parameter of type `ty` start, after its header (RFC
/// generation's fixed fields; an NG message's longer ones only shift where garbage lands).
fn nested_at(ty: u16) -> Option<usize> {
    match ty {
        pt::POOL_ELEMENT => Some(12),
        pt::SCTP_TRANSPORT | pt::TCP_TRANSPORT | pt::UDP_TRANSPORT | pt::UDP_LITE_TRANSPORT => {
            Some(4)
        }
        pt::DCCP_TRANSPORT => Some(8),
        pt::SERVER_INFORMATION => Some(4),
        pt::OPERATION_ERROR => Some(0),
        _ => None,
    }
}

/// A parameter: type, length, value, padding to 4.
fn encode_tlv(ty: u16, value: &[u8]) -> Vec<u8> {
    let mut tlv = Vec::with_capacity(4 + value.len() + 3);
    tlv.extend_from_slice(&ty.to_be_bytes());
    tlv.extend_from_slice(&((4 + value.len()) as u16).to_be_bytes());
    tlv.extend_from_slice(value);
    tlv.resize(tlv.len().next_multiple_of(4), 0);
    tlv
}

/// Inserts `bytes` at `at` and grows the length of every parameter in `parents` and of the
/// header by their count.
fn insert(m: &mut Vec<u8>, at: usize, bytes: &[u8], parents: &[usize]) {
    m.splice(at..at, bytes.iter().copied());
    for &p in parents.iter().chain(std::iter::once(&0)) {
        let len = u16::from_be_bytes([m[p + 2], m[p + 3]]);
        set_u16(m, p + 2, len.saturating_add(bytes.len() as u16));
    }
}

fn set_u16(m: &mut [u8], at: usize, value: u16) {
    m[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use rserpool_protocol::AsapMessage;

    fn targets() -> Targets {
        Targets {
            pools: vec![b"legit".to_vec()],
            pes: vec![(0, PeId(u64::from(LEGIT_ID_BYTE << 24 | 7)))],
        }
    }

    #[test]
    fn the_corpus_has_asap_and_enrp_messages() {
        let corpus = corpus().unwrap();
        assert!(corpus.iter().filter(|m| m.enrp).count() > 400);
        assert!(corpus.iter().filter(|m| !m.enrp).count() > 500);
        assert!(corpus.iter().all(|m| m.bytes.len() >= 4));
    }

    #[test]
    fn unknown_parameters_keep_the_message_framed_and_grow_every_length() {
        let corpus = corpus().unwrap();
        let targets = targets();
        let mut forge = Forge::new(&corpus, &targets, Generation::Rfc, [127, 0, 0, 2].into(), 1);
        let mut actions = [0; 4];
        let mut nested = 0;
        for _ in 0..2000 {
            let base = forge.fresh();
            let at = params_at(&base, false, Generation::Rfc);
            let before = walk(&base, at);
            let mut m = base.clone();
            let action = forge.insert_unknown(&mut m, at);
            actions[usize::from(action)] += 1;
            let msg = HostileMessage {
                bytes: m.clone(),
                kind: MutationKind::UnknownParameter,
                from_corpus: false,
                action: Some(action),
            };
            assert!(msg.keeps_framing(), "{base:02x?} -> {m:02x?}");
            let after = walk(&m, at);
            assert_eq!(after.tlvs.len(), before.tlvs.len() + 1, "{m:02x?}");
            nested += usize::from(after.containers.len() > 1);
        }
        assert!(actions.iter().all(|&n| n > 300), "{actions:?}");
        assert!(nested > 500, "{nested}");
    }

    #[test]
    fn nested_garbage_lands_inside_a_pool_element() {
        let corpus = corpus().unwrap();
        let targets = targets();
        let mut forge = Forge::new(&corpus, &targets, Generation::Rfc, [127, 0, 0, 2].into(), 2);
        let mut inside = 0;
        for _ in 0..500 {
            let mut m = forge.fresh();
            if m[0] != mt::REGISTRATION {
                continue;
            }
            let pe_len = |m: &[u8]| {
                let pe = walk(m, 4)
                    .tlvs
                    .into_iter()
                    .find(|&at| u16::from_be_bytes([m[at], m[at + 1]]) == pt::POOL_ELEMENT)
                    .unwrap();
                u16::from_be_bytes([m[pe + 2], m[pe + 3]])
            };
            let before = pe_len(&m);
            forge.insert_garbage(&mut m, 4);
            inside += usize::from(pe_len(&m) > before);
        }
        assert!(inside > 50, "{inside}");
    }

    #[test]
    fn fresh_messages_decode_and_never_report_a_legitimate_pe() {
        let targets = targets();
        let mut forge = Forge::new(&[], &targets, Generation::Rfc, [127, 0, 0, 2].into(), 3);
        for _ in 0..2000 {
            let m = forge.fresh();
            let decoded = AsapMessage::decode(&m, Generation::Rfc).unwrap().message;
            match decoded {
                AsapMessage::EndpointUnreachable { pe_id, .. }
                | AsapMessage::EndpointKeepAliveAck { pe_id, .. } => {
                    assert_eq!(pe_id.0 >> 24, u64::from(ATTACKER_ID_BYTE));
                }
                AsapMessage::Registration { pool_element, .. } => {
                    assert_eq!(pool_element.id.0 >> 24, u64::from(ATTACKER_ID_BYTE));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn every_kind_is_drawn_and_length_lies_lie() {
        let corpus = corpus().unwrap();
        let targets = targets();
        let mut forge = Forge::new(&corpus, &targets, Generation::Rfc, [127, 0, 0, 2].into(), 4);
        let mut kinds = [0; 6];
        let mut corpus_bases = 0;
        for _ in 0..6000 {
            let m = forge.next_message();
            kinds[m.kind.index()] += 1;
            corpus_bases += usize::from(m.from_corpus);
            assert_eq!(m.action.is_some(), m.kind == MutationKind::UnknownParameter);
        }
        assert!(kinds.iter().all(|&n| n > 800), "{kinds:?}");
        assert!(corpus_bases > 2000, "{corpus_bases}");
        for _ in 0..200 {
            let mut m = forge.fresh();
            let before = m.clone();
            forge.lie_about_a_length(&mut m, 4);
            assert_eq!(m.len(), before.len());
            assert_ne!(m, before, "a lie changes a length field");
        }
    }
}
