//! Test harness: the registrar daemon as a real process, and a minimal ASAP client over TCP, MPTCP
//! and UDP built on the codec.

#![allow(dead_code)]

pub mod tool;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rserpool_protocol::framing::{Frame, next_frame};
use rserpool_protocol::{
    AsapMessage, Generation, PeId, Policy, PoolElementParam, PoolHandle, PrId, Resolution, Seq,
    TransportKind, TransportParam, UserTransport,
};

/// A running `rserpool-registrar`, killed on drop.
pub struct Daemon {
    pub child: Child,
    /// The bound ASAP listeners, as printed by the daemon.
    pub listeners: Vec<String>,
    /// The bound ENRP endpoints, as printed by the daemon.
    pub enrp: Vec<String>,
    /// The metrics address.
    pub metrics: Option<SocketAddr>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Daemon {
    /// Starts the daemon with `args` and waits until it prints its listeners.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rserpool-registrar"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rserpool-registrar");
        let stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            s
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        // Reads the daemon's standard output for its whole life: lines after start-up are
        // dropped, but the pipe stays open.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut listeners = Vec::new();
        let mut enrp = Vec::new();
        let mut metrics = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        let expected = args.iter().filter(|a| a.as_ref() == "--asap").count();
        let expected_enrp = args.iter().filter(|a| a.as_ref() == "--enrp").count();
        while listeners.len() < expected.max(1) || enrp.len() < expected_enrp {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let err = stderr.join().unwrap_or_default();
                panic!("the daemon did not come up; stderr:\n{err}");
            };
            if let Some(url) = line.strip_prefix("listening asap ") {
                listeners.push(url.to_owned());
            } else if let Some(url) = line.strip_prefix("listening enrp ") {
                enrp.push(url.to_owned());
            } else if let Some(m) = line.strip_prefix("metrics http://") {
                metrics = Some(m.trim_end_matches("/metrics").parse().unwrap());
            }
        }
        Self {
            child,
            listeners,
            enrp,
            metrics,
            stderr: Some(stderr),
        }
    }

    /// The address of the first listener with this scheme prefix (e.g. `tcp://`, or
    /// `tcp://` + `?generation=ng` suffix).
    pub fn address(&self, scheme: &str, ng: bool) -> SocketAddr {
        self.listeners
            .iter()
            .find(|u| u.starts_with(scheme) && u.ends_with("?generation=ng") == ng)
            .unwrap_or_else(|| panic!("no {scheme} listener in {:?}", self.listeners))
            .trim_start_matches(scheme)
            .trim_end_matches("?generation=ng")
            .parse()
            .unwrap()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the daemon to exit; returns its exit code and stderr.
    pub fn wait(mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let err = self.stderr.take().unwrap().join().unwrap_or_default();
                return (status.code(), err);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let err = self.stderr.take().unwrap().join().unwrap_or_default();
                panic!("the daemon did not exit in time; stderr:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The metrics text.
    pub fn scrape(&self) -> String {
        self.http("GET /metrics", "")
    }

    /// The whole response of the metrics endpoint to `request` (`METHOD /path`) with the
    /// header lines `headers` (each ending in CRLF).
    pub fn http(&self, request: &str, headers: &str) -> String {
        let addr = self.metrics.expect("metrics enabled");
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            format!("{request} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        response
    }

    /// Sums the samples of a metric whose line starts with `prefix` (name and labels).
    pub fn metric(&self, prefix: &str) -> f64 {
        self.scrape()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `carrier` profile's ENRP timers, short enough for a test: a broken association means a
/// dead peer after 300 ms, a silent one after 400 + 300 ms; a start-up waits 1 s at most for its
/// mentor. Everything else stays as the profile the test starts with.
pub const CARRIER_ENRP: &str = "[enrp]\n\
    heartbeat_interval_ms = 200\n\
    max_time_last_heard_ms = 400\n\
    max_time_no_response_ms = 300\n\
    mentor_discovery_timeout_ms = 1000\n\
    takeover_expiry_ms = 1000\n\
    reconnect_interval_ms = 200\n";

/// IPPROTO_MPTCP.
pub const MPTCP: i32 = 262;

/// A stream ASAP client (TCP or MPTCP).
pub struct StreamClient {
    pub stream: TcpStream,
    pub generation: Generation,
    buf: Vec<u8>,
}

impl StreamClient {
    /// Connects over TCP.
    pub fn tcp(addr: SocketAddr, generation: Generation) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        Self::from(stream, generation)
    }

    /// Connects over TCP; `None` if nothing listens there (a registrar still starting).
    pub fn try_tcp(addr: SocketAddr, generation: Generation) -> Option<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        Some(Self::from(stream, generation))
    }

    /// Connects over TCP with `SO_RCVBUF` and `SO_SNDBUF` of `bytes` (no autotuning).
    pub fn tcp_with_buffers(addr: SocketAddr, generation: Generation, bytes: usize) -> Self {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("TCP socket");
        socket.set_recv_buffer_size(bytes).unwrap();
        socket.set_send_buffer_size(bytes).unwrap();
        socket.connect(&addr.into()).expect("connect");
        Self::from(socket.into(), generation)
    }

    /// Connects over MPTCP.
    pub fn mptcp(addr: SocketAddr, generation: Generation) -> Self {
        Self::connect_from(addr, None, MPTCP, generation)
    }

    /// Connects over TCP (`protocol` 6) or MPTCP (262) from `source` (e.g. 127.0.0.2: another
    /// host as far as the registrar can tell).
    pub fn connect_from(
        addr: SocketAddr,
        source: Option<IpAddr>,
        protocol: i32,
        generation: Generation,
    ) -> Self {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::from(protocol)),
        )
        .expect("stream socket");
        if let Some(ip) = source {
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .expect("bind the source address");
        }
        socket.connect(&addr.into()).expect("connect");
        Self::from(socket.into(), generation)
    }

    fn from(stream: TcpStream, generation: Generation) -> Self {
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            stream,
            generation,
            buf: Vec::new(),
        }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends a message.
    pub fn send(&mut self, msg: &AsapMessage<'_>) {
        let bytes = encode(msg, self.generation);
        self.send_raw(&bytes);
    }

    /// Receives one message's bytes (panics on timeout).
    pub fn recv_bytes(&mut self) -> Vec<u8> {
        loop {
            if let Ok(Frame::Complete { len }) = next_frame(&self.buf, 65_536) {
                return self.buf.drain(..len).collect();
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("receive");
            assert!(n > 0, "the registrar closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a request and receives the next message that is not a keep-alive (answering
    /// keep-alives meanwhile).
    pub fn request(&mut self, msg: &AsapMessage<'_>) -> Vec<u8> {
        self.send(msg);
        self.recv_answering_keep_alives()
    }

    /// Receives the next message that is not a keep-alive, acking keep-alives.
    pub fn recv_answering_keep_alives(&mut self) -> Vec<u8> {
        loop {
            let bytes = self.recv_bytes();
            let generation = self.generation;
            let msg = AsapMessage::decode(&bytes, generation).unwrap().message;
            if let AsapMessage::EndpointKeepAlive {
                pool_handle,
                pe_id: Some(pe_id),
                ..
            } = msg
            {
                let ack = encode(
                    &AsapMessage::EndpointKeepAliveAck { pool_handle, pe_id },
                    generation,
                );
                self.send_raw(&ack);
                continue;
            }
            return bytes;
        }
    }
}

/// Encodes a message.
pub fn encode(msg: &AsapMessage<'_>, generation: Generation) -> Vec<u8> {
    let mut buf = vec![0; 65_536];
    let n = msg.encode(generation, &mut buf).expect("encodable");
    buf.truncate(n);
    buf
}

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An ASAP_REGISTRATION of a PE at 127.0.0.1 over TCP, round robin.
pub fn registration(handle: &[u8], id: u64, life_ms: i32, generation: Generation) -> Vec<u8> {
    let ips = [LOOPBACK];
    encode(
        &AsapMessage::Registration {
            pool_handle: PoolHandle(handle),
            pool_element: PoolElementParam {
                id: PeId(id),
                home_pr: PrId(0),
                registration_life: life_ms,
                user_transport: UserTransport::Transport(TransportParam {
                    kind: TransportKind::Tcp,
                    port: 9,
                    transport_use: 0,
                    service_code: 0,
                    addresses: Seq::from_items(&ips),
                }),
                policy: Policy::RoundRobin,
                asap_transport: None,
            },
        },
        generation,
    )
}

/// An ASAP_REGISTRATION of PE `id` in `handle`, reachable over SCTP on `port` at `addresses`,
/// round robin, living 60 s (in milliseconds, as RSPLIB counts).
pub fn sctp_registration(handle: &[u8], id: u64, port: u16, addresses: &[IpAddr]) -> Vec<u8> {
    encode(
        &AsapMessage::Registration {
            pool_handle: PoolHandle(handle),
            pool_element: PoolElementParam {
                id: PeId(id),
                home_pr: PrId(0),
                registration_life: 60_000,
                user_transport: UserTransport::Transport(TransportParam {
                    kind: TransportKind::Sctp,
                    port,
                    transport_use: 0,
                    service_code: 0,
                    addresses: Seq::from_items(addresses),
                }),
                policy: Policy::RoundRobin,
                asap_transport: None,
            },
        },
        Generation::Rfc,
    )
}

/// An ASAP_HANDLE_RESOLUTION.
pub fn resolution(handle: &[u8], items: Option<u32>, generation: Generation) -> Vec<u8> {
    encode(
        &AsapMessage::HandleResolution {
            subscribe: false,
            pool_handle: PoolHandle(handle),
            items,
        },
        generation,
    )
}

/// The PE IDs of a handle resolution response, or the error cause.
pub fn resolved(bytes: &[u8], generation: Generation) -> Result<Vec<u64>, u16> {
    match AsapMessage::decode(bytes, generation)
        .expect("decodable")
        .message
    {
        AsapMessage::HandleResolutionResponse {
            resolution: Resolution::Found { pool_elements, .. },
            ..
        } => {
            let mut ids: Vec<u64> = pool_elements.iter().map(|p| p.id.0).collect();
            ids.sort_unstable();
            Ok(ids)
        }
        AsapMessage::HandleResolutionResponse {
            resolution: Resolution::Failed(e),
            ..
        } => Err(e.iter().next().map_or(0, |c| c.code)),
        other => panic!("not a resolution response: {other:?}"),
    }
}

/// Whether a registration response accepted the PE.
pub fn accepted(bytes: &[u8], generation: Generation) -> bool {
    match AsapMessage::decode(bytes, generation)
        .expect("decodable")
        .message
    {
        AsapMessage::RegistrationResponse { rejected, .. } => !rejected,
        other => panic!("not a registration response: {other:?}"),
    }
}

/// Resolves over UDP, sending the request again every half second for up to 5 s (UDP is best
/// effort: a registrar still working through a flood may have dropped it).
pub fn resolve_udp(
    addr: SocketAddr,
    handle: &[u8],
    generation: Generation,
) -> Result<Vec<u64>, u16> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let request = resolution(handle, Some(128), generation);
    let mut buf = [0u8; 65_536];
    for _ in 0..10 {
        socket.send_to(&request, addr).unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => return resolved(&buf[..n], generation),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("UDP answer: {e}"),
        }
    }
    panic!("no UDP answer from {addr} in 5 s");
}

/// A PE that the ENRP peer `home` (played by a test) owns: user transport `kind` on loopback
/// port 7, registration life 60 s.
pub fn peer_owned_pe(id: u64, home: PrId, kind: TransportKind) -> PoolElementParam<'static> {
    const IPS: &[IpAddr] = &[IpAddr::V4(Ipv4Addr::LOCALHOST)];
    PoolElementParam {
        id: PeId(id),
        home_pr: home,
        registration_life: 60_000,
        user_transport: UserTransport::Transport(TransportParam {
            kind,
            port: 7,
            transport_use: 0,
            service_code: 0,
            addresses: Seq::from_items(IPS),
        }),
        policy: Policy::RoundRobin,
        asap_transport: None,
    }
}

/// An RFC-generation ENRP message from `sender` to PR 1 (the ID the tests give the registrar
/// under test), encoded.
pub fn enrp_message(sender: PrId, body: rserpool_protocol::EnrpBody<'_>) -> Vec<u8> {
    let mut buf = vec![0; 65_536];
    let n = rserpool_protocol::EnrpMessage {
        sender,
        receiver: PrId(1),
        body,
    }
    .encode(Generation::Rfc, &mut buf)
    .expect("encodable");
    buf.truncate(n);
    buf
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Runs each scenario (a function of the `--driver` value) as one test per driver.
#[allow(unused_macros)]
macro_rules! on_both_drivers {
    ($($scenario:ident),* $(,)?) => {
        mod io_uring {
            $(#[test]
            fn $scenario() {
                super::$scenario("io-uring");
            })*
        }
        mod epoll {
            $(#[test]
            fn $scenario() {
                super::$scenario("epoll");
            })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_drivers;
