//! The active side of SCTP association setup (RFC 4960 §5.1): send an INIT, take the INIT ACK
//! and its State Cookie, send the cookie back in a COOKIE ECHO, take the COOKIE ACK. The INIT and
//! the COOKIE ECHO are retransmitted on the T1-init and T1-cookie timers (§5.1.6) up to
//! Max.Init.Retransmits times. A sans-I/O state machine like [`super::Association`]: packets and
//! the time in, packets and the outcome out. The outcome, [`Established`], is what
//! [`super::Association::new`] starts from, as on the passive side.

use std::net::SocketAddr;

use super::handshake::Established;
use super::packet::{
    InitFields, InitParameter, SctpChunkBody, SctpPacket, SctpPacketBuilder, SctpPacketError,
};

/// The Stale Cookie error cause (§3.3.10.3).
const STALE_COOKIE: u16 = 3;

/// What the active side asks for and how patiently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectConfig {
    /// This end's SCTP port.
    pub local_port: u16,
    /// The peer's SCTP port (ASAP 3863, ENRP 9901).
    pub peer_port: u16,
    /// The receiver window credit advertised in the INIT, in bytes.
    pub a_rwnd: u32,
    /// The outbound streams asked for.
    pub outbound_streams: u16,
    /// The most inbound streams allowed.
    pub inbound_streams: u16,
    /// The first T1 timeout in milliseconds (RTO.Initial, §15: 3 000 ms in RFC 4960, 1 000 ms
    /// in RFC 9260); doubled on each expiry (§5.1.6).
    pub rto_initial_ms: u64,
    /// The most a T1 timeout grows to (RTO.Max).
    pub rto_max_ms: u64,
    /// Max.Init.Retransmits (§15: 8): retransmissions of the INIT or the COOKIE ECHO before
    /// giving up.
    pub max_init_retransmits: u32,
}

impl ConnectConfig {
    /// The RFC's defaults (RFC 9260 §16: RTO.Initial 1 s, RTO.Max 60 s, 8 retransmissions) for
    /// these ports, a 256 KiB window and 16 streams each way.
    pub const fn new(local_port: u16, peer_port: u16) -> Self {
        Self {
            local_port,
            peer_port,
            a_rwnd: 262_144,
            outbound_streams: 16,
            inbound_streams: 16,
            rto_initial_ms: 1_000,
            rto_max_ms: 60_000,
            max_init_retransmits: 8,
        }
    }
}

/// Where the active handshake is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectProgress {
    /// Still waiting for the INIT ACK or the COOKIE ACK.
    Pending,
    /// The COOKIE ACK arrived: the association is up (start [`super::Association`] from it).
    Established(Established),
    /// The handshake failed; nothing more is sent.
    Failed(ConnectError),
}

/// Why the active handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The peer answered with an ABORT (§5.1, §8.5.1 B).
    Aborted,
    /// No answer after Max.Init.Retransmits retransmissions (§5.1.6).
    Timeout,
    /// The INIT ACK is not acceptable: an Initiate Tag of 0, no streams, or no State Cookie
    /// (§3.3.3).
    InvalidInitAck,
}

/// Why [`Connector::handle_packet`] did nothing with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectIgnored {
    /// Bad checksum or framing (§6.8).
    Malformed(SctpPacketError),
    /// Other ports, another verification tag (§8.5), or a chunk the current step does not
    /// expect.
    Unexpected,
}

/// The handshake's step.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// INIT sent (COOKIE-WAIT).
    CookieWait,
    /// COOKIE ECHO sent (COOKIE-ECHOED): the cookie and the association it will give.
    CookieEchoed {
        cookie: Vec<u8>,
        established: Established,
    },
    /// Done, one way or the other.
    Done(ConnectProgress),
}

/// The active side of one association's handshake.
#[derive(Debug)]
pub struct Connector {
    config: ConnectConfig,
    peer: SocketAddr,
    /// This end's Initiate Tag: the tag the peer's packets carry.
    local_tag: u32,
    /// The TSN of this end's first DATA chunk.
    initial_tsn: u32,
    step: Step,
    /// Whether the INIT or COOKIE ECHO of the current step is to be (re)sent.
    transmit: bool,
    /// When the T1 timer expires.
    t1_deadline: u64,
    /// The current T1 timeout.
    rto_ms: u64,
    /// Retransmissions of the current step so far.
    retransmits: u32,
}

impl Connector {
    /// Starts a handshake with `peer` (its address, for the [`Established`] it ends in) at
    /// `now_ms`; `random` gives this end's tag and initial TSN (§5.3.1: use a strong random
    /// source).
    pub fn new(
        config: ConnectConfig,
        peer: SocketAddr,
        random: &mut impl FnMut() -> u32,
        now_ms: u64,
    ) -> Self {
        // §5.3.1: a tag is random and never 0.
        let local_tag = loop {
            let tag = random();
            if tag != 0 {
                break tag;
            }
        };
        let rto_ms = config.rto_initial_ms.max(1);
        Self {
            config,
            peer,
            local_tag,
            initial_tsn: random(),
            step: Step::CookieWait,
            transmit: true,
            t1_deadline: now_ms.saturating_add(rto_ms),
            rto_ms,
            retransmits: 0,
        }
    }

    /// Where the handshake is.
    pub fn progress(&self) -> ConnectProgress {
        match &self.step {
            Step::Done(progress) => progress.clone(),
            _ => ConnectProgress::Pending,
        }
    }

    /// Writes the INIT or COOKIE ECHO that is due into `buf` (at least 1 500 bytes for a large
    /// cookie) and gives its length; `None` when nothing is due.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<usize> {
        if !self.transmit {
            return None;
        }
        let (local_port, peer_port) = (self.config.local_port, self.config.peer_port);
        let len = match &self.step {
            // §5.1 A: the INIT, verification tag 0 (§8.5.1 A).
            Step::CookieWait => {
                let mut b = SctpPacketBuilder::new(buf, local_port, peer_port, 0).ok()?;
                let fields = InitFields {
                    initiate_tag: self.local_tag,
                    a_rwnd: self.config.a_rwnd,
                    outbound_streams: self.config.outbound_streams,
                    inbound_streams: self.config.inbound_streams,
                    initial_tsn: self.initial_tsn,
                };
                b.push_init(&fields, &[]).ok()?;
                b.finish().len()
            }
            // §5.1 C: the cookie back, with the peer's tag.
            Step::CookieEchoed {
                cookie,
                established,
            } => {
                let mut b =
                    SctpPacketBuilder::new(buf, local_port, peer_port, established.peer_tag)
                        .ok()?;
                b.push_cookie_echo(cookie).ok()?;
                b.finish().len()
            }
            Step::Done(_) => return None,
        };
        self.transmit = false;
        Some(len)
    }

    /// Takes a packet from the peer. A packet that completes the handshake may carry DATA
    /// after the COOKIE ACK (§5.1 E): give it to the new association's `handle_packet` too.
    pub fn handle_packet(
        &mut self,
        packet: &[u8],
        now_ms: u64,
    ) -> Result<ConnectProgress, ConnectIgnored> {
        let parsed = SctpPacket::parse(packet)
            .and_then(|p| p.verify_checksum().map(|()| p))
            .map_err(ConnectIgnored::Malformed)?;
        if parsed.source_port() != self.config.peer_port
            || parsed.destination_port() != self.config.local_port
        {
            return Err(ConnectIgnored::Unexpected);
        }
        let tag = parsed.verification_tag();
        let peer_tag = match &self.step {
            Step::CookieEchoed { established, .. } => Some(established.peer_tag),
            _ => None,
        };
        for chunk in parsed.chunks() {
            let body = chunk.body().map_err(ConnectIgnored::Malformed)?;
            match (&self.step, body) {
                (Step::Done(_), _) => break,
                // §8.5.1 B: an ABORT carries our tag, or with the T bit the peer's own.
                (_, SctpChunkBody::Abort { tag_reflected, .. }) => {
                    let ours = !tag_reflected && tag == self.local_tag;
                    let reflected = tag_reflected && Some(tag) == peer_tag;
                    if ours || reflected {
                        self.step = Step::Done(ConnectProgress::Failed(ConnectError::Aborted));
                    }
                }
                _ if tag != self.local_tag => return Err(ConnectIgnored::Unexpected),
                // §5.1 C: the INIT ACK in COOKIE-WAIT.
                (Step::CookieWait, SctpChunkBody::InitAck(ack)) => {
                    let f = ack.fields;
                    let cookie = ack.params.clone().find_map(|p| match p {
                        Ok(InitParameter::StateCookie(c)) => Some(c),
                        _ => None,
                    });
                    // §3.3.3: tag 0 or no streams is an error; without a cookie there is
                    // nothing to echo.
                    let Some(cookie) = cookie.filter(|_| {
                        f.initiate_tag != 0 && f.outbound_streams != 0 && f.inbound_streams != 0
                    }) else {
                        self.step =
                            Step::Done(ConnectProgress::Failed(ConnectError::InvalidInitAck));
                        break;
                    };
                    // §5.1.1: each way, the fewer of the sender's wish and the receiver's limit.
                    let established = Established {
                        peer: self.peer,
                        peer_port: self.config.peer_port,
                        local_port: self.config.local_port,
                        local_tag: self.local_tag,
                        peer_tag: f.initiate_tag,
                        local_initial_tsn: self.initial_tsn,
                        peer_initial_tsn: f.initial_tsn,
                        peer_a_rwnd: f.a_rwnd,
                        outbound_streams: self.config.outbound_streams.min(f.inbound_streams),
                        inbound_streams: self.config.inbound_streams.min(f.outbound_streams),
                    };
                    self.step = Step::CookieEchoed {
                        cookie: cookie.to_vec(),
                        established,
                    };
                    self.restart_t1(now_ms);
                    break;
                }
                // §5.1 E: the COOKIE ACK in COOKIE-ECHOED; what follows it is the
                // association's.
                (Step::CookieEchoed { established, .. }, SctpChunkBody::CookieAck) => {
                    self.step = Step::Done(ConnectProgress::Established(*established));
                    break;
                }
                // §5.2.6: a Stale Cookie error in COOKIE-ECHOED: start over with an INIT.
                (Step::CookieEchoed { .. }, SctpChunkBody::Error { causes })
                    if causes.clone().flatten().any(|c| c.code == STALE_COOKIE) =>
                {
                    self.step = Step::CookieWait;
                    self.restart_t1(now_ms);
                }
                _ => {}
            }
        }
        Ok(self.progress())
    }

    /// Starts the current step's T1 timer afresh and sends its chunk.
    fn restart_t1(&mut self, now_ms: u64) {
        self.rto_ms = self.config.rto_initial_ms.max(1);
        self.retransmits = 0;
        self.t1_deadline = now_ms.saturating_add(self.rto_ms);
        self.transmit = true;
    }

    /// When [`Connector::handle_timeout`] is next due, in the caller's milliseconds.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.step {
            Step::Done(_) => None,
            _ => Some(self.t1_deadline),
        }
    }

    /// §5.1.6: T1-init or T1-cookie expired: send the INIT or COOKIE ECHO again with the timer
    /// doubled, or give up after Max.Init.Retransmits.
    pub fn handle_timeout(&mut self, now_ms: u64) -> ConnectProgress {
        if matches!(self.step, Step::Done(_)) || now_ms < self.t1_deadline {
            return self.progress();
        }
        if self.retransmits >= self.config.max_init_retransmits {
            self.step = Step::Done(ConnectProgress::Failed(ConnectError::Timeout));
            return self.progress();
        }
        self.retransmits += 1;
        self.rto_ms = self
            .rto_ms
            .saturating_mul(2)
            .min(self.config.rto_max_ms.max(1));
        self.t1_deadline = now_ms.saturating_add(self.rto_ms);
        self.transmit = true;
        self.progress()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sctp_udp::SctpErrorCause;

    fn connector() -> Connector {
        let mut n = 0x1234_u32;
        let mut random = || {
            n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            n
        };
        let peer = "192.0.2.1:9899".parse().unwrap();
        Connector::new(ConnectConfig::new(5000, 3863), peer, &mut random, 0)
    }

    fn from_peer(tag: u32, push: impl FnOnce(&mut SctpPacketBuilder<'_>)) -> Vec<u8> {
        let mut buf = vec![0; 256];
        let mut b = SctpPacketBuilder::new(&mut buf, 3863, 5000, tag).unwrap();
        push(&mut b);
        b.finish().to_vec()
    }

    /// §5.1.6: the INIT again on each T1-init expiry, the timeout doubled up to RTO.Max; after
    /// Max.Init.Retransmits the handshake fails.
    #[test]
    fn t1_init_backs_off_then_gives_up() {
        let mut c = connector();
        let mut buf = [0; 1500];
        let n = c.poll_transmit(&mut buf).unwrap();
        let init = SctpPacket::parse(&buf[..n]).unwrap();
        assert_eq!(init.verification_tag(), 0);
        assert!(matches!(
            init.chunks().next().unwrap().body(),
            Ok(SctpChunkBody::Init(_))
        ));
        assert_eq!(c.poll_transmit(&mut buf), None);
        let mut deadlines = Vec::new();
        while let Some(at) = c.poll_timeout() {
            deadlines.push(at);
            if c.handle_timeout(at) == ConnectProgress::Pending {
                assert!(c.poll_transmit(&mut buf).is_some(), "the INIT again");
            }
        }
        assert_eq!(
            deadlines,
            [
                1_000, 3_000, 7_000, 15_000, 31_000, 63_000, 123_000, 183_000, 243_000
            ]
        );
        assert_eq!(c.progress(), ConnectProgress::Failed(ConnectError::Timeout));
    }

    /// An INIT ACK leads to the COOKIE ECHO with the peer's tag; a Stale Cookie error back to
    /// an INIT (§5.2.6); an ABORT with our tag ends it; packets with another tag are ignored.
    #[test]
    fn init_ack_stale_cookie_and_abort() {
        let mut c = connector();
        let mut buf = [0; 1500];
        c.poll_transmit(&mut buf).unwrap();
        let fields = InitFields {
            initiate_tag: 0xfeed,
            a_rwnd: 10_000,
            outbound_streams: 2,
            inbound_streams: 40,
            initial_tsn: 77,
        };
        let ack = |tag| {
            from_peer(tag, |b| {
                b.push_init_ack(&fields, &[InitParameter::StateCookie(b"cookie")])
                    .unwrap()
            })
        };
        assert_eq!(
            c.handle_packet(&ack(c.local_tag ^ 1), 5),
            Err(ConnectIgnored::Unexpected)
        );
        assert_eq!(
            c.handle_packet(&ack(c.local_tag), 5),
            Ok(ConnectProgress::Pending)
        );
        let n = c.poll_transmit(&mut buf).unwrap();
        let echo = SctpPacket::parse(&buf[..n]).unwrap();
        assert_eq!(echo.verification_tag(), 0xfeed);
        assert_eq!(
            echo.chunks().next().unwrap().body(),
            Ok(SctpChunkBody::CookieEcho { cookie: b"cookie" })
        );
        let stale = from_peer(c.local_tag, |b| {
            b.push_error(&[SctpErrorCause {
                code: STALE_COOKIE,
                info: &[0; 4],
            }])
            .unwrap()
        });
        c.handle_packet(&stale, 10).unwrap();
        let n = c.poll_transmit(&mut buf).unwrap();
        let init = SctpPacket::parse(&buf[..n]).unwrap();
        assert!(matches!(
            init.chunks().next().unwrap().body(),
            Ok(SctpChunkBody::Init(_))
        ));
        c.handle_packet(&ack(c.local_tag), 20).unwrap();
        let cookie_ack = from_peer(c.local_tag, |b| b.push_cookie_ack().unwrap());
        let Ok(ConnectProgress::Established(e)) = c.handle_packet(&cookie_ack, 30) else {
            panic!("not established");
        };
        assert_eq!((e.peer_tag, e.local_tag), (0xfeed, c.local_tag));
        assert_eq!((e.outbound_streams, e.inbound_streams), (16, 2), "§5.1.1");
        assert_eq!((e.peer_initial_tsn, e.peer_a_rwnd), (77, 10_000));
        let mut aborted = connector();
        let abort = from_peer(aborted.local_tag, |b| b.push_abort(false, &[]).unwrap());
        assert_eq!(
            aborted.handle_packet(&abort, 1),
            Ok(ConnectProgress::Failed(ConnectError::Aborted))
        );
        assert_eq!(aborted.poll_timeout(), None);
    }
}
