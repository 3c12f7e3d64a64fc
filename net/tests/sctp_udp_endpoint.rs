//! `rserpool_net::sctp_udp::SctpUdpEndpoint`: many associations over one UDP socket, over an
//! in-memory network whose time the test advances. Covers the handshake through the endpoint,
//! messages both ways, many clients, the association limit, an INIT flood, a registrar that
//! restarts (out-of-the-blue packets answered with an ABORT, RFC 4960 §8.4), a peer that
//! restarts (§5.2.4), silent peers, and garbage.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use rserpool_net::sctp_udp::{
    AssociationHandle, CloseReason, ConnectError, EndpointConfig, EndpointError, EndpointEvent,
    LossReason, SctpUdpEndpoint,
};

const ASAP_PPID: u32 = 11;
const ASAP_PORT: u16 = 3863;

/// A small deterministic generator (xorshift64*).
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
}

fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, host], port))
}

fn secret(seed: u8) -> [u8; 32] {
    [seed; 32]
}

/// What an endpoint's events were, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Accepted(SocketAddr, u16),
    Connected,
    Message(u16, u32, Vec<u8>),
    Closed(CloseReason),
}

/// Endpoints at UDP addresses; datagrams in flight; the time.
struct Net {
    endpoints: HashMap<SocketAddr, SctpUdpEndpoint>,
    seen: HashMap<SocketAddr, Vec<(AssociationHandle, Seen)>>,
    in_flight: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Every datagram delivered, for the garbage test.
    captured: Vec<Vec<u8>>,
    /// Addresses whose datagrams vanish (both ways).
    silent: Vec<SocketAddr>,
    now: u64,
}

impl Net {
    fn new() -> Self {
        Self {
            endpoints: HashMap::new(),
            seen: HashMap::new(),
            in_flight: VecDeque::new(),
            captured: Vec::new(),
            silent: Vec::new(),
            now: 1_000,
        }
    }

    fn add(&mut self, at: SocketAddr, endpoint: SctpUdpEndpoint) {
        self.endpoints.insert(at, endpoint);
        self.seen.entry(at).or_default();
    }

    fn server(&mut self, at: SocketAddr, max: usize) {
        self.add(
            at,
            SctpUdpEndpoint::new(EndpointConfig::server(ASAP_PORT, max), secret(1)),
        );
    }

    fn client(&mut self, at: SocketAddr, seed: u8) {
        self.add(
            at,
            SctpUdpEndpoint::new(EndpointConfig::client(40_000), secret(seed)),
        );
    }

    fn ep(&mut self, at: SocketAddr) -> &mut SctpUdpEndpoint {
        self.endpoints.get_mut(&at).expect("an endpoint there")
    }

    /// Moves datagrams and events until nothing moves, then runs due timers; `rounds` times.
    fn run(&mut self, rounds: usize) {
        let mut buf = vec![0u8; 2_048];
        for _ in 0..rounds {
            loop {
                let mut moved = false;
                let addresses: Vec<SocketAddr> = self.endpoints.keys().copied().collect();
                for from in &addresses {
                    let endpoint = self.endpoints.get_mut(from).expect("listed");
                    while let Some((to, len)) = endpoint.poll_transmit(&mut buf) {
                        self.in_flight.push_back((*from, to, buf[..len].to_vec()));
                        moved = true;
                    }
                    let seen = self.seen.get_mut(from).expect("listed");
                    endpoint.poll_events(|h, e| {
                        seen.push((
                            h,
                            match e {
                                EndpointEvent::Accepted { peer, peer_port } => {
                                    Seen::Accepted(peer, peer_port)
                                }
                                EndpointEvent::Connected => Seen::Connected,
                                EndpointEvent::Message {
                                    stream,
                                    ppid,
                                    bytes,
                                } => Seen::Message(stream, ppid, bytes.to_vec()),
                                EndpointEvent::Closed(r) => Seen::Closed(r),
                            },
                        ))
                    });
                }
                while let Some((from, to, bytes)) = self.in_flight.pop_front() {
                    moved = true;
                    if self.silent.contains(&from) || self.silent.contains(&to) {
                        continue;
                    }
                    self.captured.push(bytes.clone());
                    if let Some(endpoint) = self.endpoints.get_mut(&to) {
                        endpoint.handle_datagram(from, &bytes, self.now);
                    }
                }
                if !moved {
                    break;
                }
            }
            let next = self
                .endpoints
                .values()
                .filter_map(SctpUdpEndpoint::poll_timeout)
                .min();
            match next {
                Some(t) => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.endpoints
                        .values_mut()
                        .for_each(|e| e.handle_timeouts(now));
                }
                None => return,
            }
        }
    }

    /// Moves everything that is due now, without advancing the time.
    fn settle(&mut self) {
        let before = self.now;
        self.run(1);
        assert!(self.now >= before);
    }

    fn take_seen(&mut self, at: SocketAddr) -> Vec<(AssociationHandle, Seen)> {
        std::mem::take(self.seen.get_mut(&at).expect("an endpoint there"))
    }
}

fn messages(seen: &[(AssociationHandle, Seen)]) -> Vec<Vec<u8>> {
    seen.iter()
        .filter_map(|(_, s)| match s {
            Seen::Message(_, _, b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

/// Opens an association from `client` to `server`; the handles at both ends.
fn associate(
    net: &mut Net,
    client: SocketAddr,
    server: SocketAddr,
) -> (AssociationHandle, AssociationHandle) {
    let now = net.now;
    let c = net
        .ep(client)
        .connect(server, ASAP_PORT, now)
        .expect("connect");
    net.settle();
    let seen = net.take_seen(client);
    assert!(seen.contains(&(c, Seen::Connected)), "{seen:?}");
    let accepted: Vec<_> = net
        .take_seen(server)
        .into_iter()
        .filter(|(_, s)| *s == Seen::Accepted(client, 40_000))
        .collect();
    assert_eq!(accepted.len(), 1);
    (c, accepted[0].0)
}

#[test]
fn a_client_opens_an_association_and_messages_flow_both_ways() {
    let mut net = Net::new();
    let (server, client) = (addr(1, 9899), addr(2, 5000));
    net.server(server, 16);
    net.client(client, 2);
    let (c, s) = associate(&mut net, client, server);
    let mut rng = Rng(7);
    let mut sent_up = Vec::new();
    let mut sent_down = Vec::new();
    for i in 0..200u32 {
        let len = 1 + rng.below(if i % 10 == 0 { 20_000 } else { 300 }) as usize;
        let up: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
        let down: Vec<u8> = up.iter().map(|b| b ^ 0xff).collect();
        let now = net.now;
        net.ep(client)
            .send(c, 0, ASAP_PPID, &up, now)
            .expect("sent");
        net.ep(server)
            .send(s, 0, ASAP_PPID, &down, now)
            .expect("sent");
        sent_up.push(up);
        sent_down.push(down);
        net.settle();
    }
    net.run(3);
    assert_eq!(messages(&net.take_seen(server)), sent_up);
    assert_eq!(messages(&net.take_seen(client)), sent_down);
    // A graceful close ends both sides and frees both slots.
    net.ep(client).close(c);
    net.run(3);
    assert!(
        net.take_seen(client)
            .contains(&(c, Seen::Closed(CloseReason::ShutDown)))
    );
    assert!(
        net.take_seen(server)
            .contains(&(s, Seen::Closed(CloseReason::ShutDown)))
    );
    assert_eq!(net.ep(server).associations(), 0);
    assert_eq!(net.ep(client).associations(), 0);
    let now = net.now;
    assert_eq!(
        net.ep(server).send(s, 0, ASAP_PPID, b"late", now),
        Err(EndpointError::NoSuchAssociation)
    );
}

#[test]
fn many_clients_share_one_endpoint_up_to_its_limit() {
    let mut net = Net::new();
    let server = addr(1, 9899);
    net.server(server, 100);
    let clients: Vec<SocketAddr> = (0..101u16)
        .map(|i| addr(2 + (i % 200) as u8, 6000 + i))
        .collect();
    let mut handles = Vec::new();
    for (i, &client) in clients.iter().enumerate() {
        net.client(client, 10 + i as u8);
        let now = net.now;
        handles.push(
            net.ep(client)
                .connect(server, ASAP_PORT, now)
                .expect("connect"),
        );
    }
    net.settle();
    // Which COOKIE ECHO comes last is the network's choice: exactly one is refused, with an
    // ABORT (Out of Resource), and nothing is kept for it.
    let mut up = Vec::new();
    for (i, &client) in clients.iter().enumerate() {
        match net.take_seen(client).as_slice() {
            [(h, Seen::Connected)] if *h == handles[i] => up.push(i),
            [(h, Seen::Closed(CloseReason::ConnectFailed(ConnectError::Aborted)))]
                if *h == handles[i] => {}
            other => panic!("client {i}: {other:?}"),
        }
    }
    assert_eq!(up.len(), 100);
    assert_eq!(net.ep(server).stats().refused_full, 1);
    assert_eq!(net.ep(server).associations(), 100);
    for &i in &up {
        let now = net.now;
        let msg = format!("hello from {i}").into_bytes();
        net.ep(clients[i])
            .send(handles[i], 0, ASAP_PPID, &msg, now)
            .expect("sent");
    }
    net.run(2);
    // The server answers every client on its own association.
    let seen = net.take_seen(server);
    let mut answered = 0;
    for (h, s) in &seen {
        if let Seen::Message(_, ppid, bytes) = s {
            assert_eq!(*ppid, ASAP_PPID);
            let now = net.now;
            let reply = [b"re: ".as_slice(), bytes].concat();
            net.ep(server)
                .send(*h, 0, ASAP_PPID, &reply, now)
                .expect("reply");
            answered += 1;
        }
    }
    assert_eq!(answered, 100);
    net.run(2);
    for &i in &up {
        assert_eq!(
            messages(&net.take_seen(clients[i])),
            vec![format!("re: hello from {i}").into_bytes()]
        );
    }
}

#[test]
fn an_init_flood_keeps_no_association_and_a_bounded_queue() {
    let mut net = Net::new();
    let server = addr(1, 9899);
    net.server(server, 16);
    // INITs from 100 000 sources, none of which ever answers: each a Connector's first packet.
    let mut buf = vec![0u8; 2_048];
    let mut init = None;
    for i in 0..100_000u32 {
        let from = SocketAddr::from(([10, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8], 7000));
        let mut flooder =
            SctpUdpEndpoint::new(EndpointConfig::client(40_000), secret((i % 251) as u8));
        if i % 1_000 == 0 || init.is_none() {
            flooder.connect(server, ASAP_PORT, 0).expect("connect");
            let (_, len) = flooder.poll_transmit(&mut buf).expect("an INIT");
            init = Some(buf[..len].to_vec());
        }
        let now = net.now;
        net.ep(server)
            .handle_datagram(from, init.as_deref().expect("built"), now);
    }
    let stats = net.ep(server).stats();
    assert_eq!(net.ep(server).associations(), 0);
    assert_eq!(stats.handshake_replies, 100_000);
    assert_eq!(stats.replies_dropped, 100_000 - 1_024, "{stats:?}");
    // The queue drains to 1 024 INIT ACKs, and a real client still gets in.
    let mut replies = 0;
    while net.ep(server).poll_transmit(&mut buf).is_some() {
        replies += 1;
    }
    assert_eq!(replies, 1_024);
    let client = addr(2, 5000);
    net.client(client, 2);
    associate(&mut net, client, server);
}

#[test]
fn a_restarted_server_aborts_the_old_associations_and_clients_reconnect() {
    let mut net = Net::new();
    let (server, client) = (addr(1, 9899), addr(2, 5000));
    net.server(server, 16);
    net.client(client, 2);
    let (c, _) = associate(&mut net, client, server);
    // Killed and restarted at once: a new endpoint (another key) on the same address.
    net.endpoints.remove(&server);
    net.add(
        server,
        SctpUdpEndpoint::new(EndpointConfig::server(ASAP_PORT, 16), secret(99)),
    );
    let now = net.now;
    net.ep(client)
        .send(c, 0, ASAP_PPID, b"registration", now)
        .expect("sent");
    net.settle();
    // §8.4 rule 8: the DATA is out of the blue; the ABORT reflects the client's tag.
    assert_eq!(net.ep(server).stats().out_of_the_blue_answered, 1);
    assert_eq!(net.ep(server).associations(), 0);
    assert_eq!(
        net.take_seen(client),
        vec![(c, Seen::Closed(CloseReason::Lost(LossReason::PeerAborted)))]
    );
    assert_eq!(net.ep(client).associations(), 0);
    let (c, s) = associate(&mut net, client, server);
    let now = net.now;
    net.ep(client)
        .send(c, 0, ASAP_PPID, b"again", now)
        .expect("sent");
    net.settle();
    assert_eq!(
        net.take_seen(server),
        vec![(s, Seen::Message(0, ASAP_PPID, b"again".to_vec()))]
    );
}

#[test]
fn a_restarted_peer_replaces_its_association() {
    let mut net = Net::new();
    let (server, client) = (addr(1, 9899), addr(2, 5000));
    net.server(server, 16);
    net.client(client, 2);
    let (_, old) = associate(&mut net, client, server);
    // The client restarts on the same address and port and associates again (§5.2.4 A).
    net.endpoints.remove(&client);
    net.client(client, 3);
    let now = net.now;
    let c = net
        .ep(client)
        .connect(server, ASAP_PORT, now)
        .expect("connect");
    net.settle();
    assert_eq!(net.take_seen(client), vec![(c, Seen::Connected)]);
    let seen = net.take_seen(server);
    assert_eq!(seen[0], (old, Seen::Closed(CloseReason::PeerRestarted)));
    assert_eq!(seen[1].1, Seen::Accepted(client, 40_000));
    assert_eq!(seen.len(), 2);
    assert_eq!(net.ep(server).associations(), 1);
    assert_eq!(net.ep(server).stats().restarts, 1);
    let now = net.now;
    assert_eq!(
        net.ep(server).send(old, 0, ASAP_PPID, b"x", now),
        Err(EndpointError::NoSuchAssociation)
    );
    net.ep(server)
        .send(seen[1].0, 0, ASAP_PPID, b"to the new one", now)
        .expect("sent");
    net.settle();
    assert_eq!(
        messages(&net.take_seen(client)),
        vec![b"to the new one".to_vec()]
    );
}

#[test]
fn silent_peers_are_given_up() {
    let mut net = Net::new();
    let (server, client, nobody) = (addr(1, 9899), addr(2, 5000), addr(3, 9899));
    net.server(server, 16);
    net.client(client, 2);
    // A handshake with no one there: Max.Init.Retransmits (8) retries, doubling from 1 s.
    net.silent.push(nobody);
    let start = net.now;
    let h = net
        .ep(client)
        .connect(nobody, ASAP_PORT, start)
        .expect("connect");
    net.run(20);
    assert_eq!(
        net.take_seen(client),
        vec![(
            h,
            Seen::Closed(CloseReason::ConnectFailed(ConnectError::Timeout))
        )]
    );
    let waited = net.now - start;
    assert!((200_000..=600_000).contains(&waited), "{waited} ms");
    assert_eq!(net.ep(client).associations(), 0);
    // An established association whose peer goes silent is lost after Association.Max.Retrans.
    let (c, s) = associate(&mut net, client, server);
    net.silent.push(client);
    let now = net.now;
    net.ep(server)
        .send(s, 0, ASAP_PPID, b"anyone?", now)
        .expect("sent");
    net.run(40);
    assert!(
        net.take_seen(server)
            .contains(&(s, Seen::Closed(CloseReason::Lost(LossReason::Unreachable))))
    );
    assert_eq!(net.ep(server).associations(), 0);
    let _ = c;
}

#[test]
fn garbage_and_forged_packets_leave_the_endpoint_serving() {
    let mut net = Net::new();
    let (server, client) = (addr(1, 9899), addr(2, 5000));
    net.server(server, 16);
    net.client(client, 2);
    let (c, s) = associate(&mut net, client, server);
    for i in 0..50u8 {
        let now = net.now;
        net.ep(client)
            .send(c, 0, ASAP_PPID, &vec![i; 1 + 40 * i as usize], now)
            .expect("sent");
        net.settle();
    }
    let captured = std::mem::take(&mut net.captured);
    assert!(captured.len() > 50);
    net.take_seen(server);
    let mut rng = Rng(42);
    // Two thirds first (cut short, bytes changed under a stale checksum: every one dropped),
    // then a third with the checksum made right.
    for round in (0..100_000u32).map(|r| if r < 66_667 { r % 2 } else { 2 } + 3 * (r / 3)) {
        if round % 3 == 2 && round / 3 == 22_222 {
            assert_no_forged_messages(net.take_seen(server));
        }
        let mut p = captured[rng.below(captured.len() as u64) as usize].clone();
        match round % 3 {
            // Cut short.
            0 => p.truncate(rng.below(p.len() as u64) as usize),
            // Bytes changed (the checksum catches it).
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(p.len() as u64) as usize;
                    p[at] = rng.next() as u8;
                }
            }
            // Bytes changed past the common header, checksum made right: the chunk parsers
            // see the lies.
            _ => {
                if p.len() > 12 {
                    for _ in 0..1 + rng.below(4) {
                        let at = 12 + rng.below(p.len() as u64 - 12) as usize;
                        p[at] = rng.next() as u8;
                    }
                    p[8..12].fill(0);
                    let crc = crc32c::crc32c(&p);
                    p[8..12].copy_from_slice(&crc.to_le_bytes());
                }
            }
        }
        // From the real client half the time, from strangers otherwise.
        let from = if round % 2 == 0 {
            client
        } else {
            SocketAddr::from(([192, 0, 2, (round % 251) as u8], 9899))
        };
        let now = net.now;
        net.ep(server).handle_datagram(from, &p, now);
        if round % 1_000 == 0 {
            let mut buf = vec![0u8; 2_048];
            while net.ep(server).poll_transmit(&mut buf).is_some() {}
        }
    }
    // Forged chunks with the right checksum and tag may have aborted the real association or
    // delivered what the forger wrote (whoever knows the tag may); whatever happened, the
    // endpoint still serves.
    let mut buf = vec![0u8; 2_048];
    while net.ep(server).poll_transmit(&mut buf).is_some() {}
    net.run(1);
    let _ = s;
    let fresh = addr(9, 5000);
    net.client(fresh, 9);
    let (f, fs) = associate(&mut net, fresh, server);
    let now = net.now;
    net.ep(fresh)
        .send(f, 0, ASAP_PPID, b"still serving", now)
        .expect("sent");
    net.settle();
    assert!(
        net.take_seen(server)
            .contains(&(fs, Seen::Message(0, ASAP_PPID, b"still serving".to_vec())))
    );
}

/// No message among `seen` but those the garbage test's client sent (`i` repeated `1 + 40 i`
/// times).
fn assert_no_forged_messages(seen: Vec<(AssociationHandle, Seen)>) {
    for (_, seen) in seen {
        if let Seen::Message(_, _, bytes) = seen {
            assert!(
                bytes.iter().all(|&b| b == bytes[0]) && bytes.len() == 1 + 40 * bytes[0] as usize,
                "a forged message"
            );
        }
    }
}
