//! The registrar over SCTP in UDP (`sctp+udp://`, RFC 6951), as shipped: the default profile and
//! worker count, PEs and PUs as user-space SCTP endpoints on UDP sockets (the test's own, from
//! `rserpool_net::sctp_udp`). Registration and resolution, many PEs, a registrar killed and
//! restarted at once with the same command line (its peers' associations are answered with an
//! ABORT, §8.4, and re-register), and 100 000 hostile packets that leave the handlespace and the
//! service as they were.

mod common;

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{Daemon, StreamClient, accepted, registration, resolution, resolved};
use rserpool_net::sctp_udp::{
    AssociationHandle, CloseReason, EndpointConfig, EndpointEvent, SctpUdpEndpoint,
};
use rserpool_protocol::{ASAP_PORT, AsapMessage, Generation, PPID_ASAP};

const RFC: Generation = Generation::Rfc;

/// One association to the registrar's ASAP port over a UDP socket of its own, pumped by the
/// test's thread.
struct UdpAssociation {
    socket: UdpSocket,
    endpoint: SctpUdpEndpoint,
    handle: AssociationHandle,
    start: Instant,
    inbox: VecDeque<Vec<u8>>,
    closed: Option<CloseReason>,
    buf: Vec<u8>,
    /// The last packet sent.
    last_sent: Vec<u8>,
}

impl UdpAssociation {
    /// Associates with the registrar's `sctp+udp` listener at `to` (5 s at most).
    fn connect(to: SocketAddr) -> Self {
        Self::connect_from(to, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// [`Self::connect`] from the local address `source`.
    fn connect_from(to: SocketAddr, source: std::net::IpAddr) -> Self {
        let socket = UdpSocket::bind((source, 0)).unwrap();
        let port = socket.local_addr().unwrap().port();
        let mut endpoint =
            SctpUdpEndpoint::with_random_secret(EndpointConfig::client(port)).unwrap();
        let start = Instant::now();
        let handle = endpoint.connect(to, ASAP_PORT, 0).unwrap();
        let mut a = Self {
            socket,
            endpoint,
            handle,
            start,
            inbox: VecDeque::new(),
            closed: None,
            buf: vec![0; 65_536],
            last_sent: Vec::new(),
        };
        let mut up = false;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !up && Instant::now() < deadline {
            up = a.pump(Duration::from_millis(50));
            assert!(a.closed.is_none(), "association failed: {:?}", a.closed);
        }
        assert!(up, "no association with {to} in 5 s");
        a
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Sends what is due, waits up to `wait` for a datagram, runs the timers, takes the events;
    /// true if the association came up.
    fn pump(&mut self, wait: Duration) -> bool {
        self.flush();
        self.socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .unwrap();
        if let Ok((n, from)) = self.socket.recv_from(&mut self.buf) {
            let now = self.now();
            let packet = self.buf[..n].to_vec();
            self.endpoint.handle_datagram(from, &packet, now);
        }
        let now = self.now();
        self.endpoint.handle_timeouts(now);
        let mut up = false;
        let (inbox, closed) = (&mut self.inbox, &mut self.closed);
        self.endpoint.poll_events(|_, event| match event {
            EndpointEvent::Connected => up = true,
            EndpointEvent::Message { bytes, .. } => inbox.push_back(bytes.to_vec()),
            EndpointEvent::Closed(reason) => *closed = Some(reason),
            EndpointEvent::Accepted { .. } => {}
        });
        self.flush();
        up
    }

    fn flush(&mut self) {
        while let Some((to, n)) = self.endpoint.poll_transmit(&mut self.buf) {
            let _ = self.socket.send_to(&self.buf[..n], to);
            self.last_sent = self.buf[..n].to_vec();
        }
    }

    fn send(&mut self, message: &[u8]) {
        let now = self.now();
        self.endpoint
            .send(self.handle, 0, PPID_ASAP, message, now)
            .unwrap();
        self.flush();
    }

    /// The next message, or `None` if the association closed or 5 s passed.
    fn recv(&mut self) -> Option<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.inbox.is_empty() && self.closed.is_none() && Instant::now() < deadline {
            self.pump(Duration::from_millis(20));
        }
        self.inbox.pop_front()
    }

    /// Sends `request` and gives the answer (keep-alives are answered and skipped).
    fn request(&mut self, request: &[u8]) -> Option<Vec<u8>> {
        self.send(request);
        loop {
            let bytes = self.recv()?;
            match AsapMessage::decode(&bytes, RFC).expect("decodable").message {
                AsapMessage::EndpointKeepAlive {
                    pool_handle,
                    pe_id: Some(pe_id),
                    ..
                } => {
                    let ack = AsapMessage::EndpointKeepAliveAck { pool_handle, pe_id };
                    self.send(&common::encode(&ack, RFC));
                }
                _ => return Some(bytes),
            }
        }
    }
}

/// A UDP port below the kernel's ephemeral range, free now (the restart test binds it twice);
/// each call of this process tries other ports, so tests running at once do not collide.
fn fixed_udp_port() -> u16 {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let first = (std::process::id() as usize * 13 + call * 101) % 10_000;
    for i in 0..10_000 {
        let port = 20_000 + ((first + i * 7) % 10_000) as u16;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP port");
}

/// The datagrams the kernel dropped for want of room on the UDP sockets bound to `port` on
/// 127.0.0.1 (the workers' sockets), from /proc/net/udp.
fn udp_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// The registrar on the default profile and worker count, its ASAP over SCTP in UDP port
/// `udp_port` and over TCP, ENRP over TCP, on the default driver (io_uring where the kernel allows it).
fn start(udp_port: u16) -> Daemon {
    start_on(udp_port, None)
}

fn start_on(udp_port: u16, driver: Option<&str>) -> Daemon {
    let mut args = vec![
        "--asap".to_owned(),
        format!("sctp+udp://127.0.0.1:{udp_port}"),
        "--asap".to_owned(),
        "tcp://127.0.0.1:0".to_owned(),
        // The default ENRP ports are fixed: tests running at once each take their own.
        "--enrp".to_owned(),
        "tcp://127.0.0.1:0".to_owned(),
        "--metrics".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    if let Some(driver) = driver {
        args.extend(["--driver".to_owned(), driver.to_owned()]);
    }
    Daemon::start(&args)
}

fn resolve_tcp(daemon: &Daemon, handle: &[u8]) -> Result<Vec<u64>, u16> {
    let mut pu = StreamClient::tcp(daemon.address("tcp://", false), RFC);
    pu.send_raw(&resolution(handle, Some(128), RFC));
    resolved(&pu.recv_bytes(), RFC)
}

#[test]
fn pes_register_and_pus_resolve_over_sctp_in_udp() {
    for driver in ["io-uring", "epoll"] {
        register_and_resolve(driver);
    }
}

fn register_and_resolve(driver: &str) {
    let port = fixed_udp_port();
    let daemon = start_on(port, Some(driver));
    let registrar = SocketAddr::from(([127, 0, 0, 1], port));
    let mut pes: Vec<UdpAssociation> = (0..20)
        .map(|_| UdpAssociation::connect(registrar))
        .collect();
    for (i, pe) in pes.iter_mut().enumerate() {
        let answer = pe
            .request(&registration(b"udp-pool", 1 + i as u64, 30_000, RFC))
            .expect("a registration response");
        assert!(accepted(&answer, RFC));
    }
    let mut pu = UdpAssociation::connect(registrar);
    let answer = pu
        .request(&resolution(b"udp-pool", Some(128), RFC))
        .expect("a resolution response");
    assert_eq!(resolved(&answer, RFC), Ok((1..=20).collect()));
    // The same handlespace over TCP.
    assert_eq!(resolve_tcp(&daemon, b"udp-pool"), Ok((1..=20).collect()));
    let scraped = daemon.scrape();
    assert!(
        scraped.contains("transport=\"sctp_udp\""),
        "the metrics count SCTP-in-UDP associations:\n{scraped}"
    );
}

#[test]
fn a_registrar_killed_and_restarted_at_once_gets_its_pes_back() {
    let port = fixed_udp_port();
    let registrar = SocketAddr::from(([127, 0, 0, 1], port));
    let mut daemon = start(port);
    let mut pe = UdpAssociation::connect(registrar);
    let answer = pe.request(&registration(b"restart", 7, 30_000, RFC));
    assert!(accepted(&answer.expect("answered"), RFC));
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    drop(daemon);
    let daemon = start(port);
    // The PE's next re-registration reaches a registrar that does not know its association:
    // out of the blue, answered with an ABORT (RFC 4960 §8.4).
    pe.send(&registration(b"restart", 7, 30_000, RFC));
    let deadline = Instant::now() + Duration::from_secs(5);
    while pe.closed.is_none() && Instant::now() < deadline {
        pe.pump(Duration::from_millis(20));
    }
    assert!(
        matches!(pe.closed, Some(CloseReason::Lost(_))),
        "the old association ends: {:?}",
        pe.closed
    );
    assert!(
        daemon.metric("rserpool_sctp_udp_packets_total{outcome=\"out_of_the_blue\"}") >= 1.0,
        "the restarted registrar counts the ABORT it answered with"
    );
    // A new association, a registration, and the handlespace has the PE again.
    let mut pe = UdpAssociation::connect(registrar);
    let answer = pe.request(&registration(b"restart", 7, 30_000, RFC));
    assert!(accepted(&answer.expect("answered"), RFC));
    assert_eq!(resolve_tcp(&daemon, b"restart"), Ok(vec![7]));
}

#[test]
fn hostile_packets_leave_the_handlespace_and_the_service_intact() {
    for driver in ["io-uring", "epoll"] {
        hostile_packets_on(driver);
    }
}

/// The hostile run against a registrar on `driver` (epoll receives with `recvmmsg` and sends
/// with `sendmmsg`, io_uring with its multishot `recvmsg` and submitted sends).
fn hostile_packets_on(driver: &str) {
    let port = fixed_udp_port();
    let registrar = SocketAddr::from(([127, 0, 0, 1], port));
    let daemon = start_on(port, Some(driver));
    let mut pe = UdpAssociation::connect(registrar);
    for id in 1..=5u64 {
        let answer = pe.request(&registration(b"hostile", id, 60_000, RFC));
        assert!(accepted(&answer.expect("answered"), RFC));
    }
    // Real packets to mutate: a handshake and traffic of a second association, captured by
    // building them with a client endpoint of our own.
    let mut samples: Vec<Vec<u8>> = Vec::new();
    let mut client = SctpUdpEndpoint::with_random_secret(EndpointConfig::client(40_000)).unwrap();
    client.connect(registrar, ASAP_PORT, 0).unwrap();
    let mut buf = vec![0u8; 65_536];
    while let Some((_, n)) = client.poll_transmit(&mut buf) {
        samples.push(buf[..n].to_vec());
    }
    // The PE's own packets too (its tag is known to the registrar: a forged chunk may abort it).
    pe.send(&resolution(b"hostile", None, RFC));
    samples.push(pe.last_sent.clone());
    let attackers: Vec<UdpSocket> = (0..8)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // At least 100 000 reach the registrar's sockets: what their receive buffers dropped
    // (/proc/net/udp) does not count.
    let mut round = 0u64;
    while round < 100_000 + udp_drops(port) {
        round += 1;
        let mut p = samples[(next() % samples.len() as u64) as usize].clone();
        p.truncate(12 + (next() % 1_500) as usize);
        let len = p.len();
        match round % 4 {
            // Cut short.
            0 => p.truncate((next() % len as u64) as usize),
            // Bytes changed: the checksum no longer matches.
            1 => {
                for _ in 0..1 + next() % 4 {
                    let at = (next() % len as u64) as usize;
                    p[at] = next() as u8;
                }
            }
            // Chunk fields changed, checksum made right: lengths and types lie.
            2 if len > 12 => {
                for _ in 0..1 + next() % 4 {
                    let at = 12 + (next() % (len as u64 - 12)) as usize;
                    p[at] = next() as u8;
                }
                p[8..12].fill(0);
                let crc = crc32c::crc32c(&p);
                p[8..12].copy_from_slice(&crc.to_le_bytes());
            }
            // A wrong verification tag, checksum right.
            _ if len >= 12 => {
                p[4..8].copy_from_slice(&(next() as u32).to_be_bytes());
                p[8..12].fill(0);
                let crc = crc32c::crc32c(&p);
                p[8..12].copy_from_slice(&crc.to_le_bytes());
            }
            _ => {}
        }
        let _ = attackers[(round % 8) as usize].send_to(&p, registrar);
        if round.is_multiple_of(500) {
            // Pace a little: UDP drops what the socket buffer cannot hold.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let drops = udp_drops(port);
    assert!(round - drops >= 100_000, "{round} sent, {drops} dropped");
    // The registrar still answers, over TCP and over SCTP in UDP, with the same PEs.
    assert_eq!(resolve_tcp(&daemon, b"hostile"), Ok(vec![1, 2, 3, 4, 5]));
    let mut pu = UdpAssociation::connect(registrar);
    let answer = pu.request(&resolution(b"hostile", Some(128), RFC));
    assert_eq!(
        resolved(&answer.expect("answered"), RFC),
        Ok(vec![1, 2, 3, 4, 5])
    );
    // An INIT flood: 20 000 valid INITs from 8 sources, never followed by a COOKIE ECHO. Each is
    // answered (cookie-protected), none leaves an association behind. (Counted against what is
    // open before: other processes on this host may associate with the port.)
    let open = || daemon.metric("rserpool_connections_open{transport=\"sctp_udp\"}");
    let open_before = open();
    let init = samples[0].clone();
    for round in 0..20_000usize {
        let _ = attackers[round % 8].send_to(&init, registrar);
        if round.is_multiple_of(500) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let replies = daemon.metric("rserpool_sctp_udp_packets_total{outcome=\"handshake_reply\"}");
    assert!(replies >= 10_000.0, "{replies} handshake replies");
    assert_eq!(open(), open_before, "the INIT flood left associations open");
    // Most garbage is dropped and counted (the rest answered: INITs, out-of-the-blue packets).
    let dropped = daemon.metric("rserpool_sctp_udp_packets_total{outcome=\"dropped\"}");
    assert!(dropped >= 50_000.0, "{dropped} dropped");
    let (code, stderr) = {
        daemon.signal("TERM");
        daemon.wait(Duration::from_secs(10))
    };
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A resolution answer of 128 PEs (about 6 KB) to a PU on a non-loopback address: 1 200-byte
/// packets, so the answer is a train of equal packets to one peer, which the registrar sends
/// with one UDP GSO send (`UDP_SEGMENT`) where the kernel segments UDP, on either driver. It
/// arrives whole. Needs an IPv4 address other than loopback on this host (the PU's source; its
/// packets to 127.0.0.1 stay in the kernel).
#[test]
fn an_answer_of_several_packets_arrives_whole() {
    let source = rserpool_net::local_ip_towards(SocketAddr::from(([198, 51, 100, 1], 9)))
        .ok()
        .filter(|ip| ip.is_ipv4() && !ip.is_loopback())
        .expect("this test needs an IPv4 address other than loopback and a route (a default one)");
    for driver in ["io-uring", "epoll"] {
        let port = fixed_udp_port();
        let daemon = start_on(port, Some(driver));
        let registrar = SocketAddr::from(([127, 0, 0, 1], port));
        let mut pe = StreamClient::tcp(daemon.address("tcp://", false), RFC);
        for id in 1..=128u64 {
            pe.send_raw(&registration(b"wide", id, 60_000, RFC));
            assert!(
                accepted(&pe.recv_answering_keep_alives(), RFC),
                "[{driver}] PE {id}"
            );
        }
        let mut pu = UdpAssociation::connect_from(registrar, source);
        for _ in 0..3 {
            let answer = pu
                .request(&resolution(b"wide", Some(128), RFC))
                .expect("a resolution response");
            assert!(
                answer.len() > 3 * 1_200,
                "[{driver}] {} bytes",
                answer.len()
            );
            assert_eq!(
                resolved(&answer, RFC),
                Ok((1..=128).collect()),
                "[{driver}]"
            );
        }
        drop(daemon);
    }
}
