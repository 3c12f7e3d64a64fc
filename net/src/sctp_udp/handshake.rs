//! The passive side of SCTP association setup, without state until the handshake completes
//! (RFC 4960 §5.1, §5.1.3, §5.2): an INIT is answered with an INIT ACK whose State Cookie
//! carries everything the association needs, signed with HMAC-SHA256 under a key only this
//! process knows; only a COOKIE ECHO whose signature, lifetime, tags, ports and address check
//! yields an [`Established`] association. An INIT flood therefore costs a reply each and no
//! memory. A sans-I/O function of the packet, the source address and the time.

use std::net::{IpAddr, SocketAddr};

use ring::hmac;

use super::packet::{
    InitChunk, InitFields, InitParameter, SctpBuildError, SctpChunkBody, SctpErrorCause,
    SctpPacket, SctpPacketBuilder, SctpPacketError,
};

/// The version byte of this module's cookie layout.
const COOKIE_VERSION: u8 = 2;
/// The signed fields of a cookie, before the signature.
const COOKIE_FIELDS: usize = 1 + 1 + 2 + 8 + 4 + 4 + 4 + 4 + 4 + 2 + 2 + 4 + 2 + 17 + 2;
/// The HMAC-SHA256 signature at a cookie's end.
const COOKIE_MAC: usize = 32;
/// A State Cookie's length.
pub const COOKIE_LEN: usize = COOKIE_FIELDS + COOKIE_MAC;
/// The Stale Cookie error cause (§3.3.10.3).
const STALE_COOKIE: u16 = 3;

/// The keys cookies are signed with: the current one, and the one before the last
/// [`CookieKeys::rotate`], so that a cookie signed just before a rotation still checks.
pub struct CookieKeys {
    current: hmac::Key,
    previous: Option<hmac::Key>,
}

impl std::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieKeys").finish_non_exhaustive()
    }
}

impl CookieKeys {
    /// A key from 32 random bytes (from the system's random source: `ring::rand`).
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            current: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            previous: None,
        }
    }

    /// Signs new cookies with a key from `secret`; cookies signed with the key before it still
    /// check until the next rotation.
    pub fn rotate(&mut self, secret: [u8; 32]) {
        let next = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        self.previous = Some(std::mem::replace(&mut self.current, next));
    }

    fn verify(&self, fields: &[u8], mac: &[u8]) -> bool {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|key| hmac::verify(key, fields, mac).is_ok())
    }
}

/// What this end offers every association it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveConfig {
    /// The SCTP port it answers on (ASAP's 3863, ENRP's 9901); INITs to another are not
    /// answered.
    pub local_port: u16,
    /// The receiver window credit advertised in the INIT ACK, in bytes.
    pub a_rwnd: u32,
    /// The outbound streams asked for.
    pub outbound_streams: u16,
    /// The most inbound streams allowed.
    pub inbound_streams: u16,
    /// How long a cookie stays valid, in milliseconds (§5.1.3 suggests the RTO.Initial-scale
    /// 60 s "Valid.Cookie.Life").
    pub cookie_lifespan_ms: u32,
}

/// An association the handshake completed: what the state machine of the association starts
/// from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Established {
    /// The peer's address and port (SCTP port inside the UDP datagram: `peer_port`).
    pub peer: SocketAddr,
    /// The peer's SCTP port.
    pub peer_port: u16,
    /// This end's SCTP port.
    pub local_port: u16,
    /// The tag the peer puts in packets to this end (this end's Initiate Tag).
    pub local_tag: u32,
    /// The tag this end puts in packets to the peer (the peer's Initiate Tag).
    pub peer_tag: u32,
    /// The TSN of this end's first DATA chunk.
    pub local_initial_tsn: u32,
    /// The TSN of the peer's first DATA chunk.
    pub peer_initial_tsn: u32,
    /// The peer's receiver window credit.
    pub peer_a_rwnd: u32,
    /// Streams from this end to the peer: the fewer of this end's wish and the peer's limit
    /// (§5.1.1).
    pub outbound_streams: u16,
    /// Streams from the peer: the fewer of the peer's wish and this end's limit.
    pub inbound_streams: u16,
}

/// What [`respond`] made of a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Send the `usize` bytes written to the output: an INIT ACK, an ABORT for an INIT the RFC
    /// rejects, or an ERROR for a stale cookie.
    Reply(usize),
    /// A valid COOKIE ECHO: the association is up; send the COOKIE ACK written to the output
    /// (`usize` bytes). Chunks bundled after the COOKIE ECHO (DATA, §5.1) are the new
    /// association's.
    Established(Established, usize),
    /// Nothing to send.
    Ignored(Ignored),
}

/// Why a packet got no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Its checksum or framing is wrong (§6.8: discarded silently).
    Malformed(SctpPacketError),
    /// Its first chunk is neither INIT nor COOKIE ECHO: not a handshake (the caller gives
    /// packets of known associations to them, and this function the rest).
    NotHandshake,
    /// It is addressed to another SCTP port.
    OtherPort,
    /// An INIT with a non-zero verification tag (§8.5.1) or bundled with other chunks (§6.10).
    InvalidInit,
    /// A COOKIE ECHO whose cookie is not one of ours: a bad signature or length, tags, ports or
    /// address that do not match (§5.1.5).
    BadCookie,
    /// No room in the output for the answer.
    NoRoom(SctpBuildError),
}

/// Answers one packet of the handshake's passive side (§5.1): `packet` from `from` at
/// `now_ms` (any monotonic millisecond clock, the same for every call); `random` gives the
/// tags and initial TSNs; the answer is written into `out` (1 500 bytes suffice).
pub fn respond(
    packet: &[u8],
    from: SocketAddr,
    now_ms: u64,
    config: &PassiveConfig,
    keys: &CookieKeys,
    random: &mut impl FnMut() -> u32,
    out: &mut [u8],
) -> Handshake {
    let parsed = match SctpPacket::parse(packet).and_then(|p| p.verify_checksum().map(|()| p)) {
        Ok(p) => p,
        Err(e) => return Handshake::Ignored(Ignored::Malformed(e)),
    };
    if parsed.destination_port() != config.local_port {
        return Handshake::Ignored(Ignored::OtherPort);
    }
    let mut chunks = parsed.chunks();
    let Some(first) = chunks.next() else {
        return Handshake::Ignored(Ignored::NotHandshake);
    };
    let first = match first.body() {
        Ok(body) => body,
        Err(e) => return Handshake::Ignored(Ignored::Malformed(e)),
    };
    match first {
        SctpChunkBody::Init(init) => {
            // §8.5.1 (a): an INIT's verification tag is 0; §6.10: an INIT is never bundled.
            if parsed.verification_tag() != 0 || chunks.next().is_some() {
                return Handshake::Ignored(Ignored::InvalidInit);
            }
            answer_init(&parsed, &init, from, now_ms, config, keys, random, out)
        }
        SctpChunkBody::CookieEcho { cookie } => {
            answer_cookie_echo(&parsed, cookie, from, now_ms, config, keys, out)
        }
        _ => Handshake::Ignored(Ignored::NotHandshake),
    }
}

/// §5.1 B: an INIT ACK with a signed cookie; nothing is kept.
#[allow(clippy::too_many_arguments)]
fn answer_init(
    packet: &SctpPacket<'_>,
    init: &InitChunk<'_>,
    from: SocketAddr,
    now_ms: u64,
    config: &PassiveConfig,
    keys: &CookieKeys,
    random: &mut impl FnMut() -> u32,
    out: &mut [u8],
) -> Handshake {
    let peer = init.fields;
    // §3.3.2: an Initiate Tag of 0, or no inbound or outbound streams, is an error the
    // receiver answers with an ABORT (the T bit set: the INIT's own tag, 0, reflected).
    if peer.initiate_tag == 0 || peer.outbound_streams == 0 || peer.inbound_streams == 0 {
        return reply(out, packet, 0, |b| b.push_abort(true, &[]));
    }
    // §5.3.1: a tag is random and never 0.
    let local_tag = loop {
        let tag = random();
        if tag != 0 {
            break tag;
        }
    };
    let local_initial_tsn = random();
    let cookie = CookieFields {
        created_ms: now_ms,
        lifespan_ms: config.cookie_lifespan_ms,
        local_tag,
        local_initial_tsn,
        peer,
        local_port: config.local_port,
        peer_port: packet.source_port(),
        peer_addr: from.ip(),
        peer_udp_port: from.port(),
    }
    .signed(keys);
    let fields = InitFields {
        initiate_tag: local_tag,
        a_rwnd: config.a_rwnd,
        outbound_streams: config.outbound_streams,
        inbound_streams: config.inbound_streams,
        initial_tsn: local_initial_tsn,
    };
    reply(out, packet, peer.initiate_tag, |b| {
        b.push_init_ack(&fields, &[InitParameter::StateCookie(&cookie)])
    })
}

/// §5.1 D and §5.1.5: a COOKIE ECHO whose cookie is ours, fresh, and for this peer completes
/// the association; a stale one gets an ERROR with the Stale Cookie cause.
fn answer_cookie_echo(
    packet: &SctpPacket<'_>,
    cookie: &[u8],
    from: SocketAddr,
    now_ms: u64,
    config: &PassiveConfig,
    keys: &CookieKeys,
    out: &mut [u8],
) -> Handshake {
    // §5.1.5 steps 1-2: the signature over the cookie's fields.
    let Some(fields) = CookieFields::verified(cookie, keys) else {
        return Handshake::Ignored(Ignored::BadCookie);
    };
    // §5.1.5 and §8.5: the packet carries this end's tag; the cookie was given to this
    // address and these ports.
    if packet.verification_tag() != fields.local_tag
        || fields.peer_addr != from.ip()
        // SCTP in UDP: the peer's UDP port is part of its address (RFC 6951 §5.4).
        || fields.peer_udp_port != from.port()
        || fields.peer_port != packet.source_port()
        || fields.local_port != config.local_port
    {
        return Handshake::Ignored(Ignored::BadCookie);
    }
    // §5.1.5 step 3: past its life, a Stale Cookie error telling by how much, in
    // microseconds.
    let expires = fields
        .created_ms
        .saturating_add(u64::from(fields.lifespan_ms));
    if now_ms > expires {
        let late_us = (now_ms - expires)
            .saturating_mul(1_000)
            .min(u64::from(u32::MAX)) as u32;
        let staleness = late_us.to_be_bytes();
        let cause = SctpErrorCause {
            code: STALE_COOKIE,
            info: &staleness,
        };
        return reply(out, packet, fields.peer.initiate_tag, |b| {
            b.push_error(&[cause])
        });
    }
    let established = Established {
        peer: from,
        peer_port: fields.peer_port,
        local_port: fields.local_port,
        local_tag: fields.local_tag,
        peer_tag: fields.peer.initiate_tag,
        local_initial_tsn: fields.local_initial_tsn,
        peer_initial_tsn: fields.peer.initial_tsn,
        peer_a_rwnd: fields.peer.a_rwnd,
        outbound_streams: config.outbound_streams.min(fields.peer.inbound_streams),
        inbound_streams: config.inbound_streams.min(fields.peer.outbound_streams),
    };
    match reply(out, packet, established.peer_tag, |b| b.push_cookie_ack()) {
        Handshake::Reply(len) => Handshake::Established(established, len),
        other => other,
    }
}

/// Writes a packet to the sender of `to` (ports swapped) with verification tag `tag` and the
/// chunk `push` adds.
fn reply(
    out: &mut [u8],
    to: &SctpPacket<'_>,
    tag: u32,
    push: impl FnOnce(&mut SctpPacketBuilder<'_>) -> Result<(), SctpBuildError>,
) -> Handshake {
    let built = SctpPacketBuilder::new(out, to.destination_port(), to.source_port(), tag)
        .and_then(|mut b| push(&mut b).map(|()| b.finish().len()));
    match built {
        Ok(len) => Handshake::Reply(len),
        Err(e) => Handshake::Ignored(Ignored::NoRoom(e)),
    }
}

/// What a State Cookie carries (this module's own layout; only this end reads it):
/// version, reserved, ports, the creation time and lifespan, this end's tag and initial TSN,
/// the peer's INIT fields, its IP address and UDP port; then the HMAC-SHA256 over all of that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CookieFields {
    created_ms: u64,
    lifespan_ms: u32,
    local_tag: u32,
    local_initial_tsn: u32,
    peer: InitFields,
    local_port: u16,
    peer_port: u16,
    peer_addr: IpAddr,
    /// The UDP port the INIT came from (SCTP in UDP, RFC 6951): a COOKIE ECHO from another port
    /// of the same address is not the peer's.
    peer_udp_port: u16,
}

impl CookieFields {
    /// The fields as bytes, then their signature.
    fn signed(&self, keys: &CookieKeys) -> [u8; COOKIE_LEN] {
        let mut c = [0; COOKIE_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            c[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&[COOKIE_VERSION, 0]);
        put(&self.local_port.to_be_bytes());
        put(&self.created_ms.to_be_bytes());
        put(&self.lifespan_ms.to_be_bytes());
        put(&self.local_tag.to_be_bytes());
        put(&self.local_initial_tsn.to_be_bytes());
        put(&self.peer.initiate_tag.to_be_bytes());
        put(&self.peer.a_rwnd.to_be_bytes());
        put(&self.peer.outbound_streams.to_be_bytes());
        put(&self.peer.inbound_streams.to_be_bytes());
        put(&self.peer.initial_tsn.to_be_bytes());
        put(&self.peer_port.to_be_bytes());
        match self.peer_addr {
            IpAddr::V4(a) => {
                put(&[4]);
                put(&a.to_ipv6_mapped().octets());
            }
            IpAddr::V6(a) => {
                put(&[6]);
                put(&a.octets());
            }
        }
        put(&self.peer_udp_port.to_be_bytes());
        debug_assert_eq!(at, COOKIE_FIELDS);
        let mac = hmac::sign(&keys.current, &c[..COOKIE_FIELDS]);
        c[COOKIE_FIELDS..].copy_from_slice(mac.as_ref());
        c
    }

    /// The fields of `cookie` if it is one of this end's, its signature checked; `None` for
    /// anything else (any length, any content).
    fn verified(cookie: &[u8], keys: &CookieKeys) -> Option<Self> {
        let (fields, mac) = cookie.split_first_chunk::<COOKIE_FIELDS>()?;
        if mac.len() != COOKIE_MAC || !keys.verify(fields, mac) || fields[0] != COOKIE_VERSION {
            return None;
        }
        let mut at = 2;
        let mut take = |n: usize| {
            let bytes = &fields[at..at + n];
            at += n;
            bytes
        };
        let u16_at = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
        let u32_at = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let local_port = u16_at(take(2));
        let created_ms = u64::from_be_bytes(take(8).try_into().ok()?);
        let lifespan_ms = u32_at(take(4));
        let local_tag = u32_at(take(4));
        let local_initial_tsn = u32_at(take(4));
        let peer = InitFields {
            initiate_tag: u32_at(take(4)),
            a_rwnd: u32_at(take(4)),
            outbound_streams: u16_at(take(2)),
            inbound_streams: u16_at(take(2)),
            initial_tsn: u32_at(take(4)),
        };
        let peer_port = u16_at(take(2));
        let family = take(1)[0];
        let octets: [u8; 16] = take(16).try_into().ok()?;
        let v6 = std::net::Ipv6Addr::from(octets);
        let peer_addr = match family {
            4 => IpAddr::V4(v6.to_ipv4_mapped()?),
            6 => IpAddr::V6(v6),
            _ => return None,
        };
        let peer_udp_port = u16_at(take(2));
        Some(Self {
            created_ms,
            lifespan_ms,
            local_tag,
            local_initial_tsn,
            peer,
            local_port,
            peer_port,
            peer_addr,
            peer_udp_port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sctp_udp::SctpPacketBuilder;

    const PORT: u16 = 3863;
    const CONFIG: PassiveConfig = PassiveConfig {
        local_port: PORT,
        a_rwnd: 1 << 20,
        outbound_streams: 16,
        inbound_streams: 16,
        cookie_lifespan_ms: 60_000,
    };

    fn peer() -> SocketAddr {
        "192.0.2.7:40000".parse().unwrap()
    }

    /// A deterministic source of tags (xorshift).
    fn random() -> impl FnMut() -> u32 {
        let mut x = 0x2545_f491_u32;
        move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        }
    }

    fn init(tag: u32, streams: u16) -> Vec<u8> {
        let mut buf = vec![0; 256];
        let mut b = SctpPacketBuilder::new(&mut buf, 5000, PORT, 0).unwrap();
        let fields = InitFields {
            initiate_tag: tag,
            a_rwnd: 65_536,
            outbound_streams: streams,
            inbound_streams: 32,
            initial_tsn: 1000,
        };
        b.push_init(&fields, &[]).unwrap();
        b.finish().to_vec()
    }

    fn cookie_echo(tag: u32, cookie: &[u8]) -> Vec<u8> {
        let mut buf = vec![0; 256];
        let mut b = SctpPacketBuilder::new(&mut buf, 5000, PORT, tag).unwrap();
        b.push_cookie_echo(cookie).unwrap();
        b.finish().to_vec()
    }

    /// The INIT ACK's tag and cookie for an INIT from `peer()` at `now`.
    fn init_ack(keys: &CookieKeys, now: u64) -> (u32, Vec<u8>) {
        let mut out = [0; 1500];
        let Handshake::Reply(n) = respond(
            &init(77, 8),
            peer(),
            now,
            &CONFIG,
            keys,
            &mut random(),
            &mut out,
        ) else {
            panic!("no INIT ACK");
        };
        let p = SctpPacket::parse(&out[..n]).unwrap();
        p.verify_checksum().unwrap();
        assert_eq!((p.source_port(), p.destination_port()), (PORT, 5000));
        assert_eq!(p.verification_tag(), 77, "§8.5: the peer's tag");
        let chunk = p.chunks().next().unwrap();
        let SctpChunkBody::InitAck(mut ack) = chunk.body().unwrap() else {
            panic!("not an INIT ACK");
        };
        let cookie = ack
            .params
            .find_map(|p| match p {
                Ok(InitParameter::StateCookie(c)) => Some(c.to_vec()),
                _ => None,
            })
            .expect("a State Cookie");
        assert_eq!(cookie.len(), COOKIE_LEN);
        (ack.fields.initiate_tag, cookie)
    }

    fn echo(keys: &CookieKeys, tag: u32, cookie: &[u8], from: SocketAddr, now: u64) -> Handshake {
        let mut out = [0; 1500];
        respond(
            &cookie_echo(tag, cookie),
            from,
            now,
            &CONFIG,
            keys,
            &mut random(),
            &mut out,
        )
    }

    #[test]
    fn a_valid_cookie_echo_establishes_the_association() {
        let keys = CookieKeys::new([1; 32]);
        let (tag, cookie) = init_ack(&keys, 1_000);
        let Handshake::Established(e, _) = echo(&keys, tag, &cookie, peer(), 2_000) else {
            panic!("not established");
        };
        assert_eq!(e.peer, peer());
        assert_eq!((e.local_tag, e.peer_tag), (tag, 77));
        assert_eq!(e.peer_initial_tsn, 1000);
        assert_eq!(
            (e.outbound_streams, e.inbound_streams),
            (16, 8),
            "§5.1.1: the fewer"
        );
    }

    #[test]
    fn a_cookie_that_is_not_ours_or_not_for_this_peer_is_ignored() {
        let keys = CookieKeys::new([1; 32]);
        let (tag, cookie) = init_ack(&keys, 1_000);
        let bad = Handshake::Ignored(Ignored::BadCookie);
        for i in 0..cookie.len() {
            let mut forged = cookie.clone();
            forged[i] ^= 0x40;
            assert_eq!(
                echo(&keys, tag, &forged, peer(), 2_000),
                bad,
                "byte {i} changed"
            );
        }
        assert_eq!(echo(&keys, tag, &cookie[..20], peer(), 2_000), bad);
        assert_eq!(
            echo(&keys, tag ^ 1, &cookie, peer(), 2_000),
            bad,
            "§8.5 tag"
        );
        let elsewhere = "192.0.2.8:40000".parse().unwrap();
        assert_eq!(
            echo(&keys, tag, &cookie, elsewhere, 2_000),
            bad,
            "another address"
        );
        // The same IP address, another UDP port: another peer over SCTP in UDP.
        let other_port = SocketAddr::new(peer().ip(), peer().port() ^ 1);
        assert_eq!(
            echo(&keys, tag, &cookie, other_port, 2_000),
            bad,
            "another UDP port"
        );
        let other_keys = CookieKeys::new([2; 32]);
        assert_eq!(
            echo(&other_keys, tag, &cookie, peer(), 2_000),
            bad,
            "another key"
        );
    }

    #[test]
    fn a_cookie_survives_one_key_rotation_not_two() {
        let mut keys = CookieKeys::new([1; 32]);
        let (tag, cookie) = init_ack(&keys, 1_000);
        keys.rotate([2; 32]);
        assert!(matches!(
            echo(&keys, tag, &cookie, peer(), 2_000),
            Handshake::Established(..)
        ));
        keys.rotate([3; 32]);
        assert_eq!(
            echo(&keys, tag, &cookie, peer(), 2_000),
            Handshake::Ignored(Ignored::BadCookie)
        );
    }

    #[test]
    fn a_stale_cookie_gets_a_stale_cookie_error() {
        let keys = CookieKeys::new([1; 32]);
        let (tag, cookie) = init_ack(&keys, 1_000);
        let mut out = [0; 1500];
        let late = 1_000 + u64::from(CONFIG.cookie_lifespan_ms) + 5;
        let Handshake::Reply(n) = respond(
            &cookie_echo(tag, &cookie),
            peer(),
            late,
            &CONFIG,
            &keys,
            &mut random(),
            &mut out,
        ) else {
            panic!("no ERROR");
        };
        let p = SctpPacket::parse(&out[..n]).unwrap();
        assert_eq!(p.verification_tag(), 77);
        let SctpChunkBody::Error { mut causes } = p.chunks().next().unwrap().body().unwrap() else {
            panic!("not an ERROR");
        };
        let cause = causes.next().unwrap().unwrap();
        assert_eq!(cause.code, 3, "§3.3.10.3 Stale Cookie");
        assert_eq!(cause.info, &5_000_u32.to_be_bytes(), "5 ms late, in µs");
    }

    #[test]
    fn inits_the_rfc_rejects_get_no_state_and_no_ack() {
        let keys = CookieKeys::new([1; 32]);
        let go = |packet: &[u8]| {
            let mut out = [0; 1500];
            let answer = respond(packet, peer(), 0, &CONFIG, &keys, &mut random(), &mut out);
            (answer, out)
        };
        // §8.5.1: an INIT's verification tag is 0.
        let mut tagged = init(77, 8);
        tagged[4..8].copy_from_slice(&9_u32.to_be_bytes());
        let crc = SctpPacket::parse(&tagged).unwrap().computed_checksum();
        tagged[8..12].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(go(&tagged).0, Handshake::Ignored(Ignored::InvalidInit));
        // §6.10: never bundled.
        let mut buf = vec![0; 256];
        let mut b = SctpPacketBuilder::new(&mut buf, 5000, PORT, 0).unwrap();
        let fields = InitFields {
            initiate_tag: 77,
            a_rwnd: 65_536,
            outbound_streams: 8,
            inbound_streams: 8,
            initial_tsn: 1,
        };
        b.push_init(&fields, &[]).unwrap();
        b.push_cookie_ack().unwrap();
        let bundled = b.finish().to_vec();
        assert_eq!(go(&bundled).0, Handshake::Ignored(Ignored::InvalidInit));
        // §6.8: a bad checksum is dropped silently.
        let mut corrupt = init(77, 8);
        corrupt[20] ^= 1;
        assert!(matches!(
            go(&corrupt).0,
            Handshake::Ignored(Ignored::Malformed(_))
        ));
        // Another port.
        let mut buf = vec![0; 256];
        let mut b = SctpPacketBuilder::new(&mut buf, 5000, 9901, 0).unwrap();
        b.push_init(&fields, &[]).unwrap();
        let other = b.finish().to_vec();
        assert_eq!(go(&other).0, Handshake::Ignored(Ignored::OtherPort));
        // §3.3.2: tag 0 or no streams: an ABORT with the T bit.
        for packet in [init(0, 8), init(77, 0)] {
            let (Handshake::Reply(n), out) = go(&packet) else {
                panic!("no ABORT");
            };
            let p = SctpPacket::parse(&out[..n]).unwrap();
            let body = p.chunks().next().unwrap().body().unwrap();
            assert!(matches!(
                body,
                SctpChunkBody::Abort {
                    tag_reflected: true,
                    ..
                }
            ));
        }
    }

    /// An INIT flood leaves nothing behind: `respond` keeps no state (it borrows the keys and
    /// the configuration), so the first of 100 000 INITs' cookies still completes.
    #[test]
    fn an_init_flood_keeps_nothing_and_the_first_cookie_still_works() {
        let keys = CookieKeys::new([1; 32]);
        let (tag, cookie) = init_ack(&keys, 1_000);
        let mut out = [0; 1500];
        let mut rng = random();
        let packet = init(99, 8);
        for i in 0..100_000_u32 {
            let from = SocketAddr::from((
                [198, 51, (i >> 8) as u8, i as u8],
                1024 + (i % 60_000) as u16,
            ));
            assert!(matches!(
                respond(&packet, from, 1_500, &CONFIG, &keys, &mut rng, &mut out),
                Handshake::Reply(_)
            ));
        }
        assert!(matches!(
            echo(&keys, tag, &cookie, peer(), 2_000),
            Handshake::Established(..)
        ));
    }

    /// Another implementation (the `sctp-proto` crate, docs/sctp-over-udp.md) completes the
    /// handshake against `respond`: its INIT, our INIT ACK, its COOKIE ECHO, our COOKIE ACK.
    #[test]
    fn sctp_proto_as_the_client_completes_the_handshake() {
        use sctp_proto::{
            ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event, Payload, TransportConfig,
        };
        use std::sync::Arc;
        use std::time::Instant;
        let server: SocketAddr = "192.0.2.1:9899".parse().unwrap();
        let client_addr = peer();
        let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::new()), None);
        let transport = TransportConfig::default()
            .with_local_port(40_000)
            .with_remote_port(PORT);
        let mut config = ClientConfig::new();
        config.transport = Arc::new(transport);
        let (_, mut client) = endpoint.connect(config, server).unwrap();
        let keys = CookieKeys::new([5; 32]);
        let mut rng = random();
        let mut established = None;
        let mut connected = false;
        for _ in 0..10 {
            let now = Instant::now();
            while let Some(t) = client.poll_transmit(now) {
                let Payload::RawEncode(parts) = t.payload else {
                    panic!("not an encoded packet");
                };
                let packet: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
                let mut out = [0; 1500];
                let answer = respond(&packet, client_addr, 10, &CONFIG, &keys, &mut rng, &mut out);
                let n = match answer {
                    Handshake::Reply(n) => n,
                    Handshake::Established(e, n) => {
                        established = Some(e);
                        n
                    }
                    Handshake::Ignored(why) => panic!("{why:?}"),
                };
                let datagram = bytes::Bytes::copy_from_slice(&out[..n]);
                if let Some((_, DatagramEvent::AssociationEvent(e))) =
                    endpoint.handle(now, server, None, None, datagram)
                {
                    client.handle_event(e);
                }
            }
            while let Some(event) = client.poll() {
                connected |= matches!(event, Event::Connected);
            }
        }
        assert!(connected, "sctp-proto reports the association up");
        let e = established.expect("established on this side");
        assert_eq!((e.peer_port, e.local_port), (40_000, PORT));
    }
}
