//! The user-space SCTP association ([`Association`]) and the active handshake ([`Connector`]):
//! two of ours over a simulated lossy link, interoperation with `sctp-proto` in both roles,
//! SHUTDOWN and ABORT, a dead peer, hostile packets and memory bounds. Everything runs in one
//! thread on simulated time with a seeded xorshift, so every run is the same.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rserpool_net::sctp_udp::{
    Association, AssociationConfig, ConnectConfig, ConnectProgress, Connector, CookieKeys,
    DataChunk, DropReason, Established, Event, Handshake, LossReason, PassiveConfig, Received,
    SctpChunkBody, SctpPacket, SctpPacketBuilder, SctpPacketError, SendError, Violation, respond,
};

const CLIENT_PORT: u16 = 40_000;
const SERVER_PORT: u16 = 3863;

fn client_addr() -> SocketAddr {
    "192.0.2.7:40000".parse().unwrap()
}

fn server_addr() -> SocketAddr {
    "192.0.2.1:9899".parse().unwrap()
}

/// xorshift64*: a seeded, dependency-free PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A configuration for simulated time: short timers, so that loss costs few simulated seconds.
fn fast_config() -> AssociationConfig {
    AssociationConfig {
        rto_initial_ms: 200,
        rto_min_ms: 100,
        rto_max_ms: 2_000,
        heartbeat_interval_ms: Some(2_000),
        sack_delay_ms: 50,
        ..AssociationConfig::default()
    }
}

/// The passive side's offer.
const PASSIVE: PassiveConfig = PassiveConfig {
    local_port: SERVER_PORT,
    a_rwnd: 262_144,
    outbound_streams: 8,
    inbound_streams: 8,
    cookie_lifespan_ms: 60_000,
};

/// A handshake between our [`Connector`] and `handshake::respond` over a lossless link: the
/// two ends' [`Established`] and the COOKIE ECHO packet.
fn handshake(rng: &mut Rng, now: u64) -> (Established, Established, Vec<u8>) {
    let keys = CookieKeys::new([9; 32]);
    let mut random = || rng.next() as u32;
    let mut connector = Connector::new(
        ConnectConfig {
            outbound_streams: 8,
            inbound_streams: 8,
            ..ConnectConfig::new(CLIENT_PORT, SERVER_PORT)
        },
        server_addr(),
        &mut random,
        now,
    );
    let (mut buf, mut out) = ([0; 1500], [0; 1500]);
    let mut server = None;
    let mut cookie_echo = Vec::new();
    for _ in 0..4 {
        let Some(n) = connector.poll_transmit(&mut buf) else {
            break;
        };
        let reply = match respond(
            &buf[..n],
            client_addr(),
            now,
            &PASSIVE,
            &keys,
            &mut random,
            &mut out,
        ) {
            Handshake::Reply(len) => len,
            Handshake::Established(e, len) => {
                server = Some(e);
                cookie_echo = buf[..n].to_vec();
                len
            }
            Handshake::Ignored(why) => panic!("{why:?}"),
        };
        connector.handle_packet(&out[..reply], now).unwrap();
    }
    let ConnectProgress::Established(client) = connector.progress() else {
        panic!("the client is not established: {:?}", connector.progress());
    };
    let server = server.expect("the server is established");
    assert_eq!(client.local_tag, server.peer_tag);
    assert_eq!(client.peer_tag, server.local_tag);
    assert_eq!(client.local_initial_tsn, server.peer_initial_tsn);
    assert_eq!((client.outbound_streams, server.inbound_streams), (8, 8));
    (client, server, cookie_echo)
}

/// Two associations over a simulated link: loss, duplication and delay (random delays reorder).
struct Link {
    now: u64,
    rng: Rng,
    ends: [Association; 2],
    /// Packets on the way: arrival time, receiving end, bytes.
    on_the_way: Vec<(u64, usize, Vec<u8>)>,
    loss_percent: u64,
    duplicate_percent: u64,
    base_delay_ms: u64,
    jitter_ms: u64,
    /// Every packet sent, with its sender, when `capture` is on.
    captured: Vec<(usize, Vec<u8>)>,
    capture: bool,
    /// The link drops everything when cut.
    cut: bool,
}

impl Link {
    fn new(rng: Rng, ends: [Association; 2], loss: u64, duplicate: u64, jitter: u64) -> Self {
        Self {
            now: 0,
            rng,
            ends,
            on_the_way: Vec::new(),
            loss_percent: loss,
            duplicate_percent: duplicate,
            base_delay_ms: 10,
            jitter_ms: jitter,
            captured: Vec::new(),
            capture: false,
            cut: false,
        }
    }

    /// A link between the two ends of a fresh handshake.
    fn pair(seed: u64, config: AssociationConfig, loss: u64, duplicate: u64, jitter: u64) -> Self {
        let mut rng = Rng(seed);
        let (client, server, _) = handshake(&mut rng, 0);
        let ends = [
            Association::new(&client, config, 0),
            Association::new(&server, config, 0),
        ];
        Self::new(rng, ends, loss, duplicate, jitter)
    }

    /// Sends whatever both ends have to send.
    fn flush(&mut self) {
        let mut buf = [0; 1500];
        for from in 0..2 {
            while let Some(n) = self.ends[from].poll_transmit(&mut buf) {
                let packet = &buf[..n];
                if self.capture {
                    self.captured.push((from, packet.to_vec()));
                }
                if self.cut || self.rng.percent(self.loss_percent) {
                    continue;
                }
                let copies = 1 + u64::from(self.rng.percent(self.duplicate_percent));
                for _ in 0..copies {
                    let delay = self.base_delay_ms + self.rng.below(self.jitter_ms.max(1));
                    self.on_the_way
                        .push((self.now + delay, 1 - from, packet.to_vec()));
                }
            }
        }
    }

    /// Advances to the next arrival or timer, handles it, and gives every event to `on_event`;
    /// false when nothing is left to happen.
    fn step(&mut self, mut on_event: impl FnMut(usize, Event<'_>)) -> bool {
        self.flush();
        let next_packet = self.on_the_way.iter().map(|p| p.0).min();
        let next_timer = self.ends.iter().filter_map(Association::poll_timeout).min();
        let Some(next) = next_packet.into_iter().chain(next_timer).min() else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        let mut due: Vec<_> = Vec::new();
        self.on_the_way.retain(|p| {
            if p.0 <= now {
                due.push(p.clone());
                false
            } else {
                true
            }
        });
        due.sort_by_key(|p| p.0);
        for (_, to, packet) in due {
            self.ends[to].handle_packet(&packet, now);
        }
        for end in &mut self.ends {
            if end.poll_timeout().is_some_and(|t| t <= now) {
                end.handle_timeout(now);
            }
        }
        for (i, end) in self.ends.iter_mut().enumerate() {
            while let Some(event) = end.poll_event() {
                on_event(i, event);
            }
        }
        self.flush();
        true
    }
}

/// A message size from 1 byte to 64 KiB, small ones most often.
fn message_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=1 => [1, 65_536][rng.below(2) as usize],
        2..=59 => 1 + rng.below(64) as usize,
        60..=86 => 65 + rng.below(2_000) as usize,
        87..=96 => 2_065 + rng.below(14_000) as usize,
        _ => 16_385 + rng.below(65_536 - 16_384) as usize,
    }
}

/// Messages go both ways on several streams; each end checks what it gets against what the
/// other sent on that stream, in order.
struct Traffic {
    /// Per sending end: the messages to send (stream, bytes), and how many went.
    plans: [Vec<(u16, Vec<u8>)>; 2],
    next: [usize; 2],
    /// Per sending end and stream: the messages sent and not yet delivered, in order.
    expected: [Vec<VecDeque<Vec<u8>>>; 2],
    delivered: usize,
}

const STREAMS: u16 = 4;

impl Traffic {
    fn new(rng: &mut Rng, per_end: usize) -> Self {
        let mut plan = || {
            (0..per_end)
                .map(|_| {
                    let size = message_size(rng);
                    (rng.below(u64::from(STREAMS)) as u16, rng.bytes(size))
                })
                .collect::<Vec<_>>()
        };
        let plans = [plan(), plan()];
        let streams = || vec![VecDeque::new(); usize::from(STREAMS)];
        Self {
            plans,
            next: [0, 0],
            expected: [streams(), streams()],
            delivered: 0,
        }
    }

    fn ppid(stream: u16) -> u32 {
        11 + u32::from(stream % 2)
    }

    /// Queues messages on each end until its send buffer is full.
    fn send(&mut self, link: &mut Link) {
        for end in 0..2 {
            while let Some((stream, bytes)) = self.plans[end].get(self.next[end]) {
                match link.ends[end].send(*stream, Self::ppid(*stream), bytes, link.now) {
                    Ok(()) => {
                        self.expected[end][usize::from(*stream)].push_back(bytes.clone());
                        self.next[end] += 1;
                    }
                    Err(SendError::BufferFull { .. }) => break,
                    Err(e) => panic!("end {end}: {e}"),
                }
            }
        }
    }

    /// Checks a message end `to` got.
    fn check(&mut self, to: usize, event: Event<'_>) {
        match event {
            Event::Message {
                stream,
                ppid,
                bytes,
            } => {
                let from = 1 - to;
                let expected = self.expected[from][usize::from(stream)]
                    .pop_front()
                    .unwrap_or_else(|| panic!("end {to}: a message on stream {stream} not sent"));
                assert_eq!(ppid, Self::ppid(stream));
                assert!(
                    bytes == expected,
                    "end {to}, stream {stream}: {} bytes delivered, {} expected, or other bytes",
                    bytes.len(),
                    expected.len()
                );
                self.delivered += 1;
            }
            other => panic!("end {to}: {other:?} during the transfer"),
        }
    }

    fn done(&self) -> bool {
        (0..2).all(|e| {
            self.next[e] == self.plans[e].len() && self.expected[e].iter().all(VecDeque::is_empty)
        })
    }
}

/// Runs `traffic` over `link` to its end, then shuts the association down from end 0; gives the
/// simulated time the transfer took.
fn transfer_and_shut_down(link: &mut Link, traffic: &mut Traffic) -> u64 {
    let mut steps = 0;
    while !traffic.done() {
        traffic.send(link);
        assert!(
            link.step(|to, e| traffic.check(to, e)),
            "stalled at {} ms: {}/{} and {}/{} sent, {} delivered; {:?} {:?}",
            link.now,
            traffic.next[0],
            traffic.plans[0].len(),
            traffic.next[1],
            traffic.plans[1].len(),
            traffic.delivered,
            link.ends[0].stats(),
            link.ends[1].stats(),
        );
        steps += 1;
        assert!(steps < 2_000_000, "no end after {steps} steps");
    }
    let took = link.now;
    link.ends[0].close();
    let mut shut_down = [false; 2];
    while link.step(|end, e| {
        assert_eq!(e, Event::ShutDown, "end {end}");
        shut_down[end] = true;
    }) {
        steps += 1;
        assert!(steps < 2_000_000, "no shutdown");
    }
    assert_eq!(shut_down, [true, true], "both ends shut down");
    assert!(link.ends.iter().all(Association::is_closed));
    took
}

/// Thousands of messages of 1 byte to 64 KiB on four streams both ways, through 10 % loss, 5 %
/// duplication and reordering (10 to 40 ms of random delay): every message arrives once, in
/// order on its stream, with its bytes and PPID; retransmissions (T3-rtx and fast) happened; the
/// SHUTDOWN at the end completes on both ends through the same link.
#[test]
fn two_associations_deliver_everything_in_order_through_loss_duplication_and_reordering() {
    let mut link = Link::pair(0x5eed_0001, fast_config(), 10, 5, 30);
    let mut traffic = Traffic::new(&mut link.rng, 1_500);
    transfer_and_shut_down(&mut link, &mut traffic);
    assert_eq!(traffic.delivered, 3_000);
    for (end, a) in link.ends.iter().enumerate() {
        let s = a.stats();
        assert!(s.retransmitted_chunks > 0, "end {end}: {s:?}");
        assert!(s.t3_expiries > 0, "end {end}: {s:?}");
        assert!(s.duplicate_tsns > 0, "end {end}: {s:?}");
        assert_eq!(s.messages_delivered, 1_500, "end {end}");
    }
    let fast: u64 = link.ends.iter().map(|a| a.stats().fast_retransmits).sum();
    assert!(fast > 0, "fast retransmit (§7.2.4) happened");
}

/// Without loss the same traffic needs no retransmission, and the window grows past its start.
#[test]
fn a_clean_link_needs_no_retransmission() {
    let mut link = Link::pair(0x5eed_0002, fast_config(), 0, 0, 1);
    let mut traffic = Traffic::new(&mut link.rng, 300);
    let initial_cwnd = link.ends[0].cwnd();
    transfer_and_shut_down(&mut link, &mut traffic);
    for a in &link.ends {
        assert_eq!(a.stats().retransmitted_chunks, 0);
        assert_eq!(a.stats().t3_expiries, 0);
        assert!(a.cwnd() > initial_cwnd, "slow start (§7.2.1)");
    }
}

/// Drives a lossless exchange until `until` or `max_steps`, events to `on_event`.
fn run(link: &mut Link, max_steps: usize, mut on_event: impl FnMut(usize, Event<'_>) -> bool) {
    let mut stop = false;
    for _ in 0..max_steps {
        if stop || !link.step(|end, e| stop |= on_event(end, e)) {
            return;
        }
    }
}

/// Either end closes with messages still queued: they are all delivered first, then both ends
/// report the shutdown; neither takes messages after `close`.
#[test]
fn shutdown_from_either_end_delivers_what_was_queued() {
    for closer in 0..2 {
        let mut link = Link::pair(0x5eed_0010 + closer as u64, fast_config(), 0, 0, 5);
        for i in 0..50u32 {
            link.ends[closer]
                .send(0, 11, &i.to_be_bytes().repeat(700), 0)
                .unwrap();
        }
        link.ends[closer].close();
        assert_eq!(
            link.ends[closer].send(0, 11, b"late", 0),
            Err(SendError::Closed)
        );
        let (mut got, mut shut_down) = (0u32, [false; 2]);
        run(&mut link, 100_000, |end, e| {
            match e {
                Event::Message { bytes, .. } => {
                    assert_eq!(end, 1 - closer);
                    assert_eq!(bytes, got.to_be_bytes().repeat(700));
                    got += 1;
                }
                Event::ShutDown => shut_down[end] = true,
                Event::Lost(r) => panic!("{r:?}"),
            }
            false
        });
        assert_eq!(got, 50);
        assert_eq!(shut_down, [true, true], "closer {closer}");
        assert_eq!(
            link.ends[1 - closer].send(0, 11, b"x", 0),
            Err(SendError::Closed)
        );
    }
}

/// SHUTDOWN through 30 % loss: T2-shutdown resends it until the sequence completes.
#[test]
fn shutdown_survives_loss() {
    let mut link = Link::pair(0x5eed_0020, fast_config(), 30, 0, 5);
    link.ends[0].send(1, 12, b"last words", 0).unwrap();
    link.ends[0].close();
    let mut shut_down = [false; 2];
    let mut lost = None;
    run(&mut link, 100_000, |end, e| {
        match e {
            Event::ShutDown => shut_down[end] = true,
            Event::Lost(r) => lost = Some((end, r)),
            Event::Message { .. } => {}
        }
        false
    });
    // With a lost SHUTDOWN COMPLETE the peer's T2 gives up after Max.Retrans: both ends
    // still end, the closer always with ShutDown.
    assert!(shut_down[0], "{lost:?}");
    assert!(shut_down[1] || lost == Some((1, LossReason::Unreachable)));
}

/// `abort` from either end: an ABORT goes out, the aborting end reports `Aborted`, the other
/// `PeerAborted`, and both are closed.
#[test]
fn abort_from_either_end() {
    for aborter in 0..2 {
        let mut link = Link::pair(0x5eed_0030 + aborter as u64, fast_config(), 0, 0, 5);
        link.ends[1 - aborter].send(0, 11, b"in flight", 0).unwrap();
        link.ends[aborter].abort();
        assert_eq!(
            link.ends[aborter].poll_event(),
            Some(Event::Lost(LossReason::Aborted))
        );
        let mut lost = None;
        run(&mut link, 1_000, |end, e| {
            if let Event::Lost(r) = e {
                lost = Some((end, r));
                return true;
            }
            false
        });
        assert_eq!(lost, Some((1 - aborter, LossReason::PeerAborted)));
        assert!(link.ends.iter().all(Association::is_closed));
        assert_eq!(link.ends[0].poll_timeout(), None);
    }
}

/// A dead peer (every packet dropped): T3-rtx backs off 100, 200, 400, 800, then 1 000 ms
/// (RTO.Max) and the association is lost at the 11th expiry (Association.Max.Retrans 10, §8.1):
/// 100+200+400+800+7×1000 = 8 500 ms after the message went out, after 1 + 10 transmissions.
#[test]
fn a_dead_peer_is_lost_after_max_retrans_with_backed_off_timeouts() {
    let config = AssociationConfig {
        rto_initial_ms: 100,
        rto_min_ms: 100,
        rto_max_ms: 1_000,
        heartbeat_interval_ms: None,
        ..AssociationConfig::default()
    };
    let mut link = Link::pair(0x5eed_0040, config, 0, 0, 1);
    link.cut = true;
    link.now = 1_000;
    link.ends[0].send(0, 11, b"anyone?", 1_000).unwrap();
    let (mut expiries, mut lost_at) = (Vec::new(), None);
    loop {
        let before = link.ends[0].stats().t3_expiries;
        let mut lost = false;
        if !link.step(|end, e| {
            assert_eq!((end, e), (0, Event::Lost(LossReason::Unreachable)));
            lost = true;
        }) {
            break;
        }
        if link.ends[0].stats().t3_expiries > before {
            expiries.push(link.now - 1_000);
        }
        if lost {
            lost_at = Some(link.now - 1_000);
        }
    }
    assert_eq!(
        expiries,
        [
            100, 300, 700, 1_500, 2_500, 3_500, 4_500, 5_500, 6_500, 7_500, 8_500
        ]
    );
    assert_eq!(lost_at, Some(8_500), "lost at the 11th expiry");
    let s = link.ends[0].stats();
    assert_eq!((s.data_chunks_sent, s.retransmitted_chunks), (1, 10));
}

/// An idle association whose peer died: HEARTBEATs every RTO + HB.interval go unanswered; the
/// 11th unanswered one loses it. A live peer answers them and the association stays.
#[test]
fn heartbeats_find_a_dead_peer_and_keep_a_live_one() {
    let config = AssociationConfig {
        rto_initial_ms: 100,
        rto_min_ms: 100,
        rto_max_ms: 1_000,
        heartbeat_interval_ms: Some(900),
        ..AssociationConfig::default()
    };
    let mut live = Link::pair(0x5eed_0050, config, 0, 0, 1);
    run(&mut live, 200, |_, e| panic!("{e:?}"));
    assert!(live.now >= 20_000, "{} ms of heartbeats", live.now);
    assert!(!live.ends[0].is_closed() && !live.ends[1].is_closed());
    let mut dead = Link::pair(0x5eed_0051, config, 0, 0, 1);
    dead.cut = true;
    let mut lost = Vec::new();
    run(&mut dead, 200, |end, e| {
        lost.push((end, e == Event::Lost(LossReason::Unreachable)));
        true
    });
    assert_eq!(lost, [(0, true), (1, true)], "both ends unreachable");
    // Both ends' timers run alike: the 12th timer, 12 × (900 + 100) ms, loses them.
    assert_eq!(dead.now, 12_000);
}

/// Packets of a hand-written peer to one of our associations.
struct RawPeer {
    /// What the association was made from.
    established: Established,
    next_tsn: u32,
}

impl RawPeer {
    fn new(config: AssociationConfig) -> (Self, Association) {
        let established = Established {
            peer: client_addr(),
            peer_port: CLIENT_PORT,
            local_port: SERVER_PORT,
            local_tag: 0x1111_1111,
            peer_tag: 0x2222_2222,
            local_initial_tsn: 500,
            peer_initial_tsn: u32::MAX - 5,
            peer_a_rwnd: 65_536,
            outbound_streams: 4,
            inbound_streams: 4,
        };
        let association = Association::new(&established, config, 0);
        (
            Self {
                established,
                next_tsn: established.peer_initial_tsn,
            },
            association,
        )
    }

    /// A packet with the association's tag and the chunks `push` writes.
    fn packet(&self, push: impl FnOnce(&mut SctpPacketBuilder<'_>)) -> Vec<u8> {
        self.packet_with_tag(self.established.local_tag, push)
    }

    fn packet_with_tag(&self, tag: u32, push: impl FnOnce(&mut SctpPacketBuilder<'_>)) -> Vec<u8> {
        let mut buf = vec![0; 1500];
        let mut b = SctpPacketBuilder::new(&mut buf, CLIENT_PORT, SERVER_PORT, tag).unwrap();
        push(&mut b);
        b.finish().to_vec()
    }

    /// A DATA chunk at `tsn`.
    fn data(tsn: u32, ssn: u16, beginning: bool, ending: bool, user_data: &[u8]) -> DataChunk<'_> {
        DataChunk {
            tsn,
            stream_id: 1,
            stream_seq: ssn,
            ppid: 11,
            unordered: false,
            beginning,
            ending,
            immediate: false,
            user_data,
        }
    }
}

/// The chunk types of every packet `association` has to send.
fn sent_chunk_types(association: &mut Association) -> Vec<u8> {
    let mut buf = [0; 1500];
    let mut types = Vec::new();
    while let Some(n) = association.poll_transmit(&mut buf) {
        let p = SctpPacket::parse(&buf[..n]).unwrap();
        p.verify_checksum().unwrap();
        types.extend(p.chunks().map(|c| c.chunk_type()));
    }
    types
}

/// A peer that sends fragments that never end, beyond gaps: the association holds at most
/// `receive_buffer` bytes and `max_out_of_order_chunks` chunks, whatever it is sent.
#[test]
fn out_of_order_fragments_stay_within_the_bounds() {
    let config = AssociationConfig {
        max_message_size: 16_384,
        receive_buffer: 32_768,
        max_out_of_order_chunks: 64,
        ..AssociationConfig::default()
    };
    let (peer, mut a) = RawPeer::new(config);
    let first = peer.next_tsn;
    let payload = [0xab; 1_000];
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        // TSNs after a gap at `first`, up to far beyond the window, beginnings only.
        let tsn = first.wrapping_add(1 + rng.below(200) as u32);
        let ssn = rng.below(5) as u16;
        let packet = peer.packet(|b| {
            b.push_data(&RawPeer::data(tsn, ssn, true, false, &payload))
                .unwrap()
        });
        assert_eq!(a.handle_packet(&packet, 0), Received::Processed);
        assert!(a.receive_buffered() <= 32_768, "{}", a.receive_buffered());
        assert!(a.out_of_order_chunks() <= 64);
        sent_chunk_types(&mut a);
    }
    assert_eq!(a.poll_event(), None);
    assert_eq!(a.out_of_order_chunks(), 32, "32 KiB of 1 000-byte chunks");
    assert!(a.stats().chunks_dropped > 0);
}

/// A message whose fragments go on past `max_message_size` is a protocol violation: ABORT.
#[test]
fn a_message_longer_than_the_limit_aborts_the_association() {
    let config = AssociationConfig {
        max_message_size: 16_384,
        ..AssociationConfig::default()
    };
    let (peer, mut a) = RawPeer::new(config);
    let payload = [1; 1_000];
    let mut tsn = peer.next_tsn;
    for i in 0..17 {
        let packet = peer.packet(|b| {
            b.push_data(&RawPeer::data(tsn, 0, i == 0, false, &payload))
                .unwrap()
        });
        a.handle_packet(&packet, 0);
        tsn = tsn.wrapping_add(1);
        assert!(a.receive_buffered() <= 16_384);
    }
    assert_eq!(
        a.poll_event(),
        Some(Event::Lost(LossReason::ProtocolViolation(
            Violation::MessageTooLarge
        )))
    );
    assert_eq!(sent_chunk_types(&mut a), [6], "an ABORT");
    assert!(a.is_closed());
}

/// Fragments out of sequence (an end without a beginning) and DATA without user data end the
/// association with an ABORT (§6.9, §6.2).
#[test]
fn broken_fragments_and_empty_data_abort() {
    for (chunk, violation) in [
        ((false, true, &b"x"[..]), Violation::BrokenFragments),
        ((true, true, &b""[..]), Violation::NoUserData),
    ] {
        let (peer, mut a) = RawPeer::new(AssociationConfig::default());
        let (beginning, ending, bytes) = chunk;
        let packet = peer.packet(|b| {
            b.push_data(&RawPeer::data(peer.next_tsn, 0, beginning, ending, bytes))
                .unwrap()
        });
        a.handle_packet(&packet, 0);
        assert_eq!(
            a.poll_event(),
            Some(Event::Lost(LossReason::ProtocolViolation(violation)))
        );
        assert_eq!(sent_chunk_types(&mut a), [6]);
    }
}

/// Reassembly in TSN order, a duplicate reported in the SACK, an invalid stream reported in an
/// ERROR (§6.5) and a gap answered with an immediate SACK carrying the gap block.
#[test]
fn data_sack_duplicates_gaps_and_invalid_streams() {
    let (peer, mut a) = RawPeer::new(AssociationConfig::default());
    let t = peer.next_tsn;
    // TSN t+1 (the end) before t (the beginning): a gap, SACKed at once with block 2-2.
    let end = peer.packet(|b| {
        b.push_data(&RawPeer::data(t.wrapping_add(1), 0, false, true, b"world"))
            .unwrap()
    });
    a.handle_packet(&end, 0);
    let mut buf = [0; 1500];
    let n = a.poll_transmit(&mut buf).expect("an immediate SACK");
    let p = SctpPacket::parse(&buf[..n]).unwrap();
    let Ok(SctpChunkBody::Sack(sack)) = p.chunks().next().unwrap().body() else {
        panic!("not a SACK");
    };
    assert_eq!(sack.cumulative_tsn_ack, t.wrapping_sub(1));
    let gaps: Vec<_> = sack.gap_blocks.map(|g| (g.start, g.end)).collect();
    assert_eq!(gaps, [(2, 2)]);
    let begin = peer.packet(|b| {
        b.push_data(&RawPeer::data(t, 0, true, false, b"hello "))
            .unwrap()
    });
    a.handle_packet(&begin, 0);
    assert_eq!(
        a.poll_event(),
        Some(Event::Message {
            stream: 1,
            ppid: 11,
            bytes: b"hello world"
        })
    );
    // The same again: a duplicate, reported.
    a.handle_packet(&begin, 5);
    let n = a.poll_transmit(&mut buf).expect("an immediate SACK");
    let p = SctpPacket::parse(&buf[..n]).unwrap();
    let Ok(SctpChunkBody::Sack(sack)) = p.chunks().next().unwrap().body() else {
        panic!("not a SACK");
    };
    assert_eq!(sack.cumulative_tsn_ack, t.wrapping_add(1));
    assert_eq!(sack.duplicate_tsns.collect::<Vec<_>>(), [t]);
    assert_eq!(a.stats().duplicate_tsns, 1);
    // Stream 9 does not exist: an ERROR with Invalid Stream Identifier, the TSN still acked.
    let invalid = peer.packet(|b| {
        b.push_data(&DataChunk {
            stream_id: 9,
            ..RawPeer::data(t.wrapping_add(2), 0, true, true, b"?")
        })
        .unwrap()
    });
    a.handle_packet(&invalid, 10);
    a.handle_timeout(10 + 200);
    let n = a.poll_transmit(&mut buf).unwrap();
    let p = SctpPacket::parse(&buf[..n]).unwrap();
    let bodies: Vec<_> = p.chunks().map(|c| c.body().unwrap()).collect();
    let SctpChunkBody::Error { mut causes } = bodies[0].clone() else {
        panic!("not an ERROR: {bodies:?}");
    };
    assert_eq!(causes.next().unwrap().unwrap().code, 1);
    let SctpChunkBody::Sack(sack) = bodies[1].clone() else {
        panic!("not a SACK: {bodies:?}");
    };
    assert_eq!(sack.cumulative_tsn_ack, t.wrapping_add(2));
    assert_eq!(a.poll_event(), None);
}

/// §6.2: one packet of DATA is SACKed after the delay, the second at once.
#[test]
fn delayed_sack_every_second_packet_or_after_the_delay() {
    let (peer, mut a) = RawPeer::new(AssociationConfig::default());
    let t = peer.next_tsn;
    let one = peer.packet(|b| b.push_data(&RawPeer::data(t, 0, true, true, b"1")).unwrap());
    a.handle_packet(&one, 1_000);
    assert_eq!(sent_chunk_types(&mut a), [] as [u8; 0]);
    assert_eq!(a.poll_timeout(), Some(1_200), "the 200 ms delay");
    a.handle_timeout(1_200);
    assert_eq!(sent_chunk_types(&mut a), [3]);
    let two = |tsn| {
        peer.packet(|b| {
            b.push_data(&RawPeer::data(tsn, 0, true, true, b"2"))
                .unwrap()
        })
    };
    a.handle_packet(&two(t.wrapping_add(1)), 2_000);
    a.handle_packet(&two(t.wrapping_add(2)), 2_001);
    assert_eq!(sent_chunk_types(&mut a), [3], "after the second packet");
}

/// §3.2: unknown chunk types by their action bits: 00 stops silently, 01 stops and reports,
/// 10 skips silently, 11 skips and reports; the DATA after them is taken only when skipped.
#[test]
fn unknown_chunks_follow_their_action_bits() {
    for (chunk_type, skips, reports) in [
        (0x3f, false, false),
        (0x40, false, true),
        (0x80, true, false),
        (0xc0, true, true),
    ] {
        let (peer, mut a) = RawPeer::new(AssociationConfig::default());
        let packet = peer.packet(|b| {
            b.push_raw(chunk_type, 0, b"?!").unwrap();
            b.push_data(&RawPeer::data(peer.next_tsn, 0, true, true, b"after"))
                .unwrap();
        });
        assert_eq!(a.handle_packet(&packet, 0), Received::Processed);
        a.handle_timeout(1_000);
        let mut buf = [0; 1500];
        let mut error = None;
        while let Some(n) = a.poll_transmit(&mut buf) {
            let p = SctpPacket::parse(&buf[..n]).unwrap();
            for c in p.chunks() {
                if let Ok(SctpChunkBody::Error { mut causes }) = c.body() {
                    let cause = causes.next().unwrap().unwrap();
                    error = Some((cause.code, cause.info.to_vec()));
                }
            }
        }
        let reported = error.map(|(code, info)| {
            assert_eq!(code, 6, "Unrecognized Chunk Type");
            assert_eq!(info, [chunk_type, 0, 0, 6, b'?', b'!']);
        });
        assert_eq!(reported.is_some(), reports, "type {chunk_type:#x}");
        assert_eq!(
            a.poll_event().is_some(),
            skips,
            "type {chunk_type:#x}: DATA after it"
        );
    }
}

/// §8.5, §8.5.1, §6.8: a wrong tag or a bad checksum drops the packet; an ABORT counts with our
/// tag and the T bit clear, or with the peer's tag and the T bit set, not otherwise.
#[test]
fn verification_tags_and_checksums() {
    let (peer, mut a) = RawPeer::new(AssociationConfig::default());
    let data = |tag| {
        peer.packet_with_tag(tag, |b| {
            b.push_data(&RawPeer::data(peer.next_tsn, 0, true, true, b"x"))
                .unwrap()
        })
    };
    assert_eq!(
        a.handle_packet(&data(0x3333_3333), 0),
        Received::Dropped(DropReason::WrongTag)
    );
    assert_eq!(
        a.handle_packet(&data(peer.established.peer_tag), 0),
        Received::Dropped(DropReason::WrongTag)
    );
    let mut corrupt = data(peer.established.local_tag);
    corrupt[20] ^= 1;
    assert!(matches!(
        a.handle_packet(&corrupt, 0),
        Received::Dropped(DropReason::Malformed(
            SctpPacketError::ChecksumMismatch { .. }
        ))
    ));
    assert_eq!(a.poll_event(), None);
    assert_eq!(a.stats().packets_dropped, 3);
    // An INIT, and a COOKIE ECHO with another tag, are the handshake's.
    let init = peer.packet_with_tag(0, |b| {
        b.push_init(
            &rserpool_net::sctp_udp::InitFields {
                initiate_tag: 5,
                a_rwnd: 1_000,
                outbound_streams: 1,
                inbound_streams: 1,
                initial_tsn: 1,
            },
            &[],
        )
        .unwrap()
    });
    assert_eq!(a.handle_packet(&init, 0), Received::ForHandshake);
    let echo = peer.packet_with_tag(77, |b| b.push_cookie_echo(&[1; 20]).unwrap());
    assert_eq!(a.handle_packet(&echo, 0), Received::ForHandshake);
    // ABORTs: with the T bit and our tag, ignored; with the T bit and the peer's tag, taken.
    let reflected_ours = peer.packet(|b| b.push_abort(true, &[]).unwrap());
    a.handle_packet(&reflected_ours, 0);
    assert_eq!(a.poll_event(), None);
    let reflected = peer.packet_with_tag(peer.established.peer_tag, |b| {
        b.push_abort(true, &[]).unwrap()
    });
    a.handle_packet(&reflected, 0);
    assert_eq!(a.poll_event(), Some(Event::Lost(LossReason::PeerAborted)));
    assert_eq!(
        a.handle_packet(&data(peer.established.local_tag), 0),
        Received::Dropped(DropReason::Closed)
    );
}

/// §5.2.4 D: the COOKIE ECHO that made the association, again (its COOKIE ACK was lost): a
/// COOKIE ACK again, and DATA bundled after it taken. §8.3: a HEARTBEAT gets its ACK.
#[test]
fn duplicate_cookie_echo_and_heartbeat_are_answered() {
    let mut rng = Rng(0x5eed_0060);
    let (_, server, cookie_echo) = handshake(&mut rng, 0);
    let mut a = Association::new(&server, AssociationConfig::default(), 0);
    assert_eq!(a.handle_packet(&cookie_echo, 5), Received::Processed);
    assert_eq!(sent_chunk_types(&mut a), [11], "COOKIE ACK");
    let mut buf = [0; 1500];
    let mut b =
        SctpPacketBuilder::new(&mut buf, CLIENT_PORT, SERVER_PORT, server.local_tag).unwrap();
    b.push_heartbeat(b"probe 1").unwrap();
    b.push_data(&DataChunk {
        stream_id: 2,
        ..RawPeer::data(server.peer_initial_tsn, 0, true, true, b"bundled")
    })
    .unwrap();
    let packet = b.finish().to_vec();
    a.handle_packet(&packet, 6);
    let n = a.poll_transmit(&mut buf).unwrap();
    let p = SctpPacket::parse(&buf[..n]).unwrap();
    assert_eq!(p.verification_tag(), server.peer_tag);
    let bodies: Vec<_> = p.chunks().map(|c| c.body().unwrap()).collect();
    assert_eq!(bodies[0], SctpChunkBody::HeartbeatAck { info: b"probe 1" });
    assert!(matches!(
        a.poll_event(),
        Some(Event::Message {
            stream: 2,
            bytes: b"bundled",
            ..
        })
    ));
}

/// Real packets of a transfer (both directions), mutated: flipped bytes, truncations, inserted
/// bytes. With the checksum left as it was, every one is dropped and nothing changes; with the
/// checksum recomputed (a peer that knows the tag), nothing panics and the bounds hold.
#[test]
fn mutated_packets_never_panic_and_with_a_stale_checksum_change_nothing() {
    let config = AssociationConfig {
        receive_buffer: 131_072,
        max_out_of_order_chunks: 256,
        ..fast_config()
    };
    let mut link = Link::pair(0x5eed_0070, config, 5, 2, 20);
    link.capture = true;
    let mut traffic = Traffic::new(&mut link.rng, 150);
    while !traffic.done() {
        traffic.send(&mut link);
        assert!(link.step(|to, e| traffic.check(to, e)));
    }
    let captured = std::mem::take(&mut link.captured);
    assert!(captured.len() > 300, "{} packets", captured.len());
    let mut rng = Rng(0x5eed_0071);
    let mutate = |packet: &[u8], rng: &mut Rng| {
        let mut m = packet.to_vec();
        for _ in 0..1 + rng.below(3) {
            match rng.below(4) {
                0 | 1 => {
                    let at = rng.below(m.len() as u64) as usize;
                    m[at] ^= 1 + rng.below(255) as u8;
                }
                2 => m.truncate(rng.below(m.len() as u64 + 1) as usize),
                _ => {
                    let at = rng.below(m.len() as u64 + 1) as usize;
                    m.insert(at, rng.next() as u8);
                }
            }
            if m.is_empty() {
                m.push(0);
            }
        }
        m
    };
    // The checksum as it was: all dropped, no event, no reply.
    let [client, server] = &mut link.ends;
    let before = (client.stats(), server.stats());
    let mut buf = [0; 1500];
    for i in 0..100_000 {
        let (from, packet) = &captured[i % captured.len()];
        let m = mutate(packet, &mut rng);
        if m == *packet {
            continue;
        }
        let to = if *from == 0 {
            &mut *server
        } else {
            &mut *client
        };
        assert!(
            matches!(to.handle_packet(&m, link.now), Received::Dropped(_)),
            "mutation {i} taken"
        );
        assert_eq!(to.poll_event(), None);
        assert_eq!(to.poll_transmit(&mut buf), None);
    }
    assert_eq!(client.stats().packets_received, before.0.packets_received);
    assert_eq!(server.stats().packets_received, before.1.packets_received);
    // The checksum recomputed, into fresh associations of the same handshake (whose TSNs the
    // captured DATA carries), each replaced when a mutation ends it.
    let mut rng2 = Rng(0x5eed_0072);
    let (client_e, server_e, _) = handshake(&mut Rng(0x5eed_0070), 0);
    let fresh = |e: &Established| Association::new(e, config, 0);
    let mut ends = [fresh(&client_e), fresh(&server_e)];
    let (mut processed, mut delivered, mut replaced) = (0, 0, 0);
    for i in 0..100_000u64 {
        let (from, packet) = &captured[i as usize % captured.len()];
        let mut m = mutate(packet, &mut rng2);
        if m.len() >= 12 {
            let crc = crc32c_of(&m);
            m[8..12].copy_from_slice(&crc.to_le_bytes());
        }
        let to = 1 - from;
        if ends[to].handle_packet(&m, i) == Received::Processed {
            processed += 1;
        }
        ends[to].handle_timeout(i);
        while ends[to].poll_transmit(&mut buf).is_some() {}
        while let Some(e) = ends[to].poll_event() {
            if let Event::Message { bytes, .. } = e {
                assert!(bytes.len() <= config.max_message_size);
                delivered += 1;
            }
        }
        assert!(ends[to].receive_buffered() <= config.receive_buffer);
        assert!(ends[to].out_of_order_chunks() <= config.max_out_of_order_chunks);
        if ends[to].is_closed() {
            ends[to] = fresh(if to == 0 { &client_e } else { &server_e });
            replaced += 1;
        }
    }
    assert!(
        processed > 10_000,
        "{processed} mutated packets got past the checks"
    );
    assert!(delivered > 0 && replaced > 0, "{delivered} {replaced}");
}

/// The CRC32c of a packet with its checksum field as zero (RFC 4960 Appendix B).
fn crc32c_of(packet: &[u8]) -> u32 {
    let mut zeroed = packet.to_vec();
    zeroed[8..12].fill(0);
    crc32c::crc32c(&zeroed)
}

mod interop {
    //! Against `sctp-proto` 0.10.8 over a lossless in-memory link. It maps PPIDs other than
    //! WebRTC's to an unknown value, so the messages here use PPID 53 (WebRTC Binary).

    use super::*;
    use bytes::Bytes;
    use sctp_proto::{
        ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Payload, PayloadProtocolIdentifier,
        ServerConfig, TransportConfig,
    };
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const BINARY: u32 = 53;

    /// The SCTP packets of a transmit (one per part).
    fn packets(t: sctp_proto::Transmit) -> impl Iterator<Item = Vec<u8>> {
        let Payload::RawEncode(parts) = t.payload else {
            panic!("not an encoded packet");
        };
        parts.into_iter().map(|b| b.to_vec())
    }

    /// Reads every complete message of `stream` from an `sctp-proto` association.
    fn read_all(a: &mut sctp_proto::Association, stream: u16, into: &mut Vec<Vec<u8>>) {
        while a.accept_stream().is_some() {}
        let Ok(mut s) = a.stream(stream) else {
            return;
        };
        while let Ok(Some(chunks)) = s.read_sctp() {
            assert_eq!(chunks.ppi, PayloadProtocolIdentifier::Binary);
            let mut buf = vec![0; chunks.len()];
            chunks.read(&mut buf).unwrap();
            into.push(buf);
        }
    }

    fn messages(rng: &mut Rng, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                let len = 1 + rng.below(6_000) as usize;
                rng.bytes(len)
            })
            .collect()
    }

    /// `sctp-proto` connects to `handshake::respond`; the association made from its COOKIE
    /// ECHO (which answers it with the COOKIE ACK) exchanges 200 messages each way with it.
    #[test]
    fn sctp_proto_client_with_our_passive_side() {
        let base = Instant::now();
        let mut rng = Rng(0x5eed_0100);
        let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::new()), None);
        let transport = TransportConfig::default()
            .with_local_port(CLIENT_PORT)
            .with_remote_port(SERVER_PORT);
        let mut config = ClientConfig::new();
        config.transport = Arc::new(transport);
        let (_, mut client) = endpoint.connect(config, server_addr()).unwrap();
        let keys = CookieKeys::new([5; 32]);
        let mut ours: Option<Association> = None;
        let to_them = messages(&mut rng, 200);
        let to_us = messages(&mut rng, 200);
        let (mut got_them, mut got_us) = (Vec::new(), Vec::new());
        let (mut sent_them, mut sent_us) = (0, 0);
        let mut stream_open = false;
        let mut buf = [0; 1500];
        for step in 0..20_000u64 {
            let now_ms = step * 5;
            let now = base + Duration::from_millis(now_ms);
            let mut to_server = Vec::new();
            while let Some(t) = client.poll_transmit(now) {
                to_server.extend(packets(t));
            }
            for packet in to_server {
                if let Some(a) = ours.as_mut() {
                    a.handle_packet(&packet, now_ms);
                } else {
                    {
                        let mut out = [0; 1500];
                        let mut random = || rng.next() as u32;
                        let answer = respond(
                            &packet,
                            client_addr(),
                            now_ms,
                            &PASSIVE,
                            &keys,
                            &mut random,
                            &mut out,
                        );
                        match answer {
                            Handshake::Reply(n) => {
                                let d = Bytes::copy_from_slice(&out[..n]);
                                if let Some((_, DatagramEvent::AssociationEvent(e))) =
                                    endpoint.handle(now, server_addr(), None, None, d)
                                {
                                    client.handle_event(e);
                                }
                            }
                            Handshake::Established(e, _) => {
                                let mut a =
                                    Association::new(&e, AssociationConfig::default(), now_ms);
                                assert_eq!(a.handle_packet(&packet, now_ms), Received::Processed);
                                ours = Some(a);
                            }
                            Handshake::Ignored(why) => panic!("{why:?}"),
                        }
                    }
                }
            }
            if let Some(a) = &mut ours {
                while sent_us < to_them.len()
                    && a.send(1, BINARY, &to_them[sent_us], now_ms).is_ok()
                {
                    sent_us += 1;
                }
                if a.poll_timeout().is_some_and(|t| t <= now_ms) {
                    a.handle_timeout(now_ms);
                }
                while let Some(n) = a.poll_transmit(&mut buf) {
                    let d = Bytes::copy_from_slice(&buf[..n]);
                    if let Some((_, DatagramEvent::AssociationEvent(e))) =
                        endpoint.handle(now, server_addr(), None, None, d)
                    {
                        client.handle_event(e);
                    }
                }
                while let Some(e) = a.poll_event() {
                    match e {
                        Event::Message {
                            stream,
                            ppid,
                            bytes,
                        } => {
                            assert_eq!((stream, ppid), (2, BINARY));
                            got_us.push(bytes.to_vec());
                        }
                        other => panic!("{other:?}"),
                    }
                }
            }
            while client.poll().is_some() {}
            if !client.is_handshaking() {
                if !stream_open {
                    client
                        .open_stream(2, PayloadProtocolIdentifier::Binary)
                        .unwrap();
                    stream_open = true;
                }
                let mut s = client.stream(2).unwrap();
                while sent_them < to_us.len() {
                    let m = &to_us[sent_them];
                    match s.write_with_ppi(m, PayloadProtocolIdentifier::Binary) {
                        Ok(n) if n == m.len() => sent_them += 1,
                        _ => break,
                    }
                }
                read_all(&mut client, 1, &mut got_them);
            }
            if client.poll_timeout().is_some_and(|t| t <= now) {
                client.handle_timeout(now);
            }
            if got_them.len() == to_them.len() && got_us.len() == to_us.len() {
                break;
            }
        }
        assert!(
            got_them == to_them,
            "{} of {} to sctp-proto",
            got_them.len(),
            to_them.len()
        );
        assert!(
            got_us == to_us,
            "{} of {} from sctp-proto",
            got_us.len(),
            to_us.len()
        );
    }

    /// Our [`Connector`] connects to an `sctp-proto` server, which echoes every message back on
    /// the same stream: 200 messages there and back.
    #[test]
    fn our_client_with_sctp_proto_server() {
        let base = Instant::now();
        let mut rng = Rng(0x5eed_0200);
        let server_transport = TransportConfig::default()
            .with_local_port(SERVER_PORT)
            .with_remote_port(CLIENT_PORT);
        let mut server_config = ServerConfig::new();
        server_config.transport = Arc::new(server_transport);
        let mut endpoint = Endpoint::new(
            Arc::new(EndpointConfig::new()),
            Some(Arc::new(server_config)),
        );
        let mut server: Option<sctp_proto::Association> = None;
        let mut random = || rng.next() as u32;
        let mut connector = Connector::new(
            ConnectConfig::new(CLIENT_PORT, SERVER_PORT),
            server_addr(),
            &mut random,
            0,
        );
        let mut ours: Option<Association> = None;
        let to_them = messages(&mut rng, 200);
        let mut echoed = Vec::new();
        let mut sent = 0;
        let mut buf = [0; 1500];
        for step in 0..20_000u64 {
            let now_ms = step * 5;
            let now = base + Duration::from_millis(now_ms);
            // Ours to the server.
            let mut to_server = Vec::new();
            match &mut ours {
                None => {
                    connector.handle_timeout(now_ms);
                    while let Some(n) = connector.poll_transmit(&mut buf) {
                        to_server.push(buf[..n].to_vec());
                    }
                }
                Some(a) => {
                    while sent < to_them.len() && a.send(3, BINARY, &to_them[sent], now_ms).is_ok()
                    {
                        sent += 1;
                    }
                    if a.poll_timeout().is_some_and(|t| t <= now_ms) {
                        a.handle_timeout(now_ms);
                    }
                    while let Some(n) = a.poll_transmit(&mut buf) {
                        to_server.push(buf[..n].to_vec());
                    }
                }
            }
            for packet in to_server {
                let d = Bytes::from(packet);
                match endpoint.handle(now, client_addr(), None, None, d) {
                    Some((_, DatagramEvent::NewAssociation(a))) => server = Some(a),
                    Some((_, DatagramEvent::AssociationEvent(e))) => {
                        server.as_mut().unwrap().handle_event(e)
                    }
                    _ => {}
                }
            }
            // The server echoes, and answers.
            let mut to_client = Vec::new();
            if let Some(s) = &mut server {
                while s.poll().is_some() {}
                let mut got = Vec::new();
                read_all(s, 3, &mut got);
                for m in got {
                    let mut st = s.stream(3).unwrap();
                    assert_eq!(
                        st.write_with_ppi(&m, PayloadProtocolIdentifier::Binary)
                            .unwrap(),
                        m.len()
                    );
                }
                if s.poll_timeout().is_some_and(|t| t <= now) {
                    s.handle_timeout(now);
                }
                while let Some(t) = s.poll_transmit(now) {
                    to_client.extend(packets(t));
                }
            }
            for packet in to_client {
                if let Some(a) = ours.as_mut() {
                    a.handle_packet(&packet, now_ms);
                } else {
                    {
                        if let Ok(ConnectProgress::Established(e)) =
                            connector.handle_packet(&packet, now_ms)
                        {
                            let mut a = Association::new(&e, AssociationConfig::default(), now_ms);
                            a.handle_packet(&packet, now_ms);
                            ours = Some(a);
                        }
                    }
                }
            }
            if let Some(a) = &mut ours {
                while let Some(e) = a.poll_event() {
                    match e {
                        Event::Message {
                            stream,
                            ppid,
                            bytes,
                        } => {
                            assert_eq!((stream, ppid), (3, BINARY));
                            echoed.push(bytes.to_vec());
                        }
                        other => panic!("{other:?}"),
                    }
                }
            }
            if echoed.len() == to_them.len() {
                break;
            }
        }
        assert!(
            ours.is_some(),
            "the handshake completed: {:?}",
            connector.progress()
        );
        assert!(
            echoed == to_them,
            "{} of {} echoed",
            echoed.len(),
            to_them.len()
        );
    }
}
