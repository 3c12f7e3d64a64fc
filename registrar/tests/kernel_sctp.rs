//! Kernel SCTP, in two parts. The SCTP of the socket layer (`rserpool-net`): the registrar's
//! one-to-many listener with the one-to-one client (`SctpClient`) acting as a PE (PPID 11),
//! notifications, peer addresses, abort, multihomed binding, a peer's receive window, peeling
//! an association off onto its own socket, and SO_REUSEPORT over several one-to-many sockets. Then the
//! registrar daemon as a process serving ASAP over SCTP, every scenario once on each I/O driver
//! (`io_uring::*` and `epoll::*`): registration, resolution over SCTP and UDP, keep-alives and
//! removal with the association; PA-21 (ENRP's PPID on the ASAP port); hostile input; a peer that
//! stops reading; two workers sharing the port; and interoperation with RSPLIB's `rspserver` and
//! `rspterminal` (Debian's `rsplib-tools`).
//!
//! The build host has no kernel SCTP, so this target is `test = false` (a plain `cargo test` does
//! not run it) and CI runs it in user-mode Linux, as root in the guest:
//! `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/uml-run.sh cargo test -p rserpool-registrar --test kernel_sctp`.
//! Without kernel SCTP, `ip` or RSPLIB's tools the tests that need them fail with the reason;
//! none skips.

mod common;

use common::tool::Tool;

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, encode, eventually, resolution, resolve_udp, resolved, sctp_registration};
use rserpool_net::{
    AssocState, SctpAssocId, SctpClient, SctpRecv, SctpSocket, sctp_nodelay, sctp_support,
};
use rserpool_protocol::{
    AsapMessage, EnrpBody, EnrpMessage, Generation, PPID_ASAP, PPID_ENRP, PeId, PoolHandle, PrId,
    Resolution, TransportKind, UserTransport, cause,
};
use socket2::Socket;

/// The wire generation of `sctp://` listeners without `?generation=ng`.
const RFC: Generation = Generation::Rfc;
/// How long anything may take; UML's syscalls cost about 50 µs, a loopback association far less.
const WAIT: Duration = Duration::from_secs(10);

/// Runs the non-blocking `op` until it stops saying `WouldBlock`, for up to [`WAIT`].
fn wait_for<T>(what: &str, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(1));
            }
            r => return r,
        }
    }
}

/// A one-to-many listener on `addrs`, failing the test with the reason if the kernel has no SCTP.
fn listener(addrs: &[&str], reuse_port: bool) -> SctpSocket {
    if let Err(e) = sctp_support() {
        panic!("these tests need kernel SCTP: {e}");
    }
    let addrs: Vec<SocketAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    SctpSocket::listen(&addrs, reuse_port, 16, 1 << 16).unwrap_or_else(|e| panic!("{e}"))
}

fn local_port(sock: &Socket) -> u16 {
    sock.local_addr().unwrap().as_socket().unwrap().port()
}

/// A one-to-one association to `addr` from `source` if given (else from every local address),
/// made non-blocking for [`wait_for`].
fn connect_from(addr: SocketAddr, source: Option<IpAddr>) -> SctpClient {
    let client = SctpClient::connect(addr, source, WAIT).unwrap_or_else(|e| panic!("{e}"));
    client.socket().set_nonblocking(true).unwrap();
    client
}

fn connect(addr: String) -> SctpClient {
    connect_from(addr.parse().unwrap(), None)
}

/// The next message or notification on `server`, with the data in `buf`.
fn next(server: &SctpSocket, buf: &mut [u8]) -> SctpRecv {
    wait_for("the server to receive", || server.recv(buf)).unwrap()
}

/// Expects `CommUp` on `server` and returns the new association.
fn comm_up(server: &SctpSocket, buf: &mut [u8]) -> SctpAssocId {
    match next(server, buf) {
        SctpRecv::AssocChange {
            assoc,
            state: AssocState::CommUp,
        } => assoc,
        other => panic!("expected CommUp, got {other:?}"),
    }
}

#[test]
fn kernel_has_sctp() {
    if let Err(e) = sctp_support() {
        panic!("{e}");
    }
}

#[test]
fn one_to_many_listener_serves_a_one_to_one_pe() {
    with_test_net();
    // multihomed: 127.0.0.2 is added with sctp_bindx, on the port the kernel chose for the first
    let server = listener(&["127.0.0.1:0", "127.0.0.2:0"], false);
    assert!(
        sctp_nodelay(&server).unwrap(),
        "SCTP_NODELAY on the listener"
    );
    let port = local_port(server.socket());
    let mut buf = [0; 2048];

    let pe = connect(format!("127.0.0.1:{port}"));
    assert!(sctp_nodelay(&pe).unwrap(), "SCTP_NODELAY on the client");
    let assoc = comm_up(&server, &mut buf);
    assert_eq!(pe.send(PPID_ASAP, 0, b"registration").unwrap(), 12);
    assert_eq!(
        next(&server, &mut buf),
        SctpRecv::Data {
            assoc,
            ppid: PPID_ASAP,
            stream: 0,
            len: 12,
            complete: true
        }
    );
    assert_eq!(&buf[..12], b"registration");

    assert_eq!(server.send(assoc, PPID_ASAP, 0, b"response").unwrap(), 8);
    let mut reply = [0; 64];
    let (len, ppid) = wait_for("the PE to receive", || pe.recv(&mut reply)).unwrap();
    assert_eq!((&reply[..len], ppid), (&b"response"[..], PPID_ASAP));

    // the unbound client lists each of its IPv4 addresses, all on its port
    let pe_port = local_port(pe.socket());
    let mut peers = server.peer_addresses(assoc).unwrap();
    peers.sort();
    assert_eq!(
        peers,
        [
            SocketAddr::new(LOOPBACK, pe_port),
            SocketAddr::new(TEST_NET, pe_port)
        ]
    );

    // the second address of the multihomed listener takes associations too
    let second = connect(format!("127.0.0.2:{port}"));
    let assoc2 = comm_up(&server, &mut buf);
    assert_ne!(assoc2, assoc);
    second.send(PPID_ASAP, 3, b"x").unwrap();
    assert!(matches!(
        next(&server, &mut buf),
        SctpRecv::Data { assoc: a, stream: 3, len: 1, .. } if a == assoc2
    ));

    // the PE closes: a graceful shutdown
    drop(pe);
    assert_eq!(next(&server, &mut buf), SctpRecv::Shutdown { assoc });
    assert_eq!(
        next(&server, &mut buf),
        SctpRecv::AssocChange {
            assoc,
            state: AssocState::ShutdownComplete
        }
    );
    assert!(
        server.peer_addresses(assoc).is_err(),
        "the association is gone"
    );
}

#[test]
fn abort_ends_an_association_at_once() {
    let server = listener(&["[::1]:0"], false);
    let port = local_port(server.socket());
    let mut buf = [0; 256];
    let pe = connect(format!("[::1]:{port}"));
    let assoc = comm_up(&server, &mut buf);
    // the kernel gives ::1 (interface-local scope) the loopback's interface index as scope id
    let peers: Vec<(std::net::IpAddr, u16)> = server
        .peer_addresses(assoc)
        .unwrap()
        .iter()
        .map(|a| (a.ip(), a.port()))
        .collect();
    assert_eq!(peers, [("::1".parse().unwrap(), local_port(pe.socket()))]);

    server.abort(assoc).unwrap();
    assert_eq!(
        next(&server, &mut buf),
        SctpRecv::AssocChange {
            assoc,
            state: AssocState::CommLost
        }
    );
    let mut reply = [0; 16];
    let e = wait_for("the abort to reach the PE", || pe.recv(&mut reply)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    assert!(server.send(assoc, PPID_ASAP, 0, b"late").is_err());
}

#[test]
fn peer_window_closes_when_the_peer_stops_reading() {
    let server = listener(&["127.0.0.1:0"], false);
    let port = local_port(server.socket());
    let mut buf = [0; 256];
    // a peer that nothing is sent to keeps its window open
    let _idle_peer = connect(format!("127.0.0.1:{port}"));
    let idle = comm_up(&server, &mut buf);
    let _sleeping_peer = connect(format!("127.0.0.1:{port}"));
    let sleeping = comm_up(&server, &mut buf);
    assert!(server.peer_window(sleeping).unwrap() > 0, "a fresh window");
    // messages the sleeping peer never reads fill its window, then the server's send buffer
    let message = [0x5a; 1024];
    let mut sent = 0;
    let full = loop {
        match server.send(sleeping, PPID_ASAP, 0, &message) {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100_000, "the send buffer never filled");
    };
    assert_eq!(full.kind(), io::ErrorKind::WouldBlock, "{full}");
    wait_for("the window to close", || {
        match server.peer_window(sleeping) {
            Ok(0) => Ok(()),
            Ok(_) => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => Err(e),
        }
    })
    .unwrap();
    assert!(server.peer_window(idle).unwrap() > 0);
}

#[test]
fn peel_off_moves_an_association_and_what_waits_for_it_onto_its_own_socket() {
    let server = listener(&["127.0.0.1:0"], false);
    let port = local_port(server.socket());
    let mut buf = [0; 256];
    let pe = connect(format!("127.0.0.1:{port}"));
    let assoc = comm_up(&server, &mut buf);
    let stays = connect(format!("127.0.0.1:{port}"));
    let stays_assoc = comm_up(&server, &mut buf);
    // Sent before the peel-off: it waits on the listener and moves with the association.
    pe.send(PPID_ASAP, 0, b"before").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let own = server.peel_off(assoc).unwrap();
    assert!(own.socket().nonblocking().unwrap(), "non-blocking");
    assert!(close_on_exec(&own), "close-on-exec");
    assert!(
        sctp_nodelay(own.socket()).unwrap(),
        "SCTP_NODELAY is inherited"
    );
    match next(&own, &mut buf) {
        SctpRecv::Data {
            assoc: a,
            ppid,
            len,
            complete: true,
            ..
        } => assert_eq!((a, ppid, &buf[..len]), (assoc, PPID_ASAP, &b"before"[..])),
        other => panic!("expected the waiting message, got {other:?}"),
    }
    pe.send(PPID_ASAP, 0, b"after").unwrap();
    match next(&own, &mut buf) {
        SctpRecv::Data { assoc: a, len, .. } => {
            assert_eq!((a, &buf[..len]), (assoc, &b"after"[..]));
        }
        other => panic!("expected the next message, got {other:?}"),
    }
    // The association's id works on its socket; the listener keeps serving the other one.
    let peers = own.peer_addresses(assoc).unwrap();
    assert_eq!(peers[0].port(), local_port(pe.socket()));
    own.send(assoc, PPID_ASAP, 0, b"reply").unwrap();
    let mut reply = [0; 16];
    let (n, ppid) = wait_for("the reply", || pe.recv(&mut reply)).unwrap();
    assert_eq!((&reply[..n], ppid), (&b"reply"[..], PPID_ASAP));
    stays.send(PPID_ASAP, 0, b"other").unwrap();
    match next(&server, &mut buf) {
        SctpRecv::Data { assoc: a, len, .. } => {
            assert_eq!((a, &buf[..len]), (stays_assoc, &b"other"[..]));
        }
        other => panic!("expected the other association's message, got {other:?}"),
    }
    // The peer closes: the notifications come on the association's socket.
    drop(pe);
    let mut seen = Vec::new();
    while !seen.contains(&SctpRecv::AssocChange {
        assoc,
        state: AssocState::ShutdownComplete,
    }) {
        seen.push(next(&own, &mut buf));
        assert!(seen.len() < 5, "no SCTP_SHUTDOWN_COMP: {seen:?}");
    }
    assert!(seen.contains(&SctpRecv::Shutdown { assoc }), "{seen:?}");
    assert_eq!(
        server.recv(&mut buf).unwrap_err().kind(),
        io::ErrorKind::WouldBlock,
        "nothing of the peeled association comes on the listener"
    );
}

/// Whether a socket is close-on-exec (the `flags` line of its `/proc/self/fdinfo`, in octal).
fn close_on_exec(socket: &SctpSocket) -> bool {
    use std::os::fd::AsRawFd;
    let fd = socket.socket().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| i64::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    flags & i64::from(libc::O_CLOEXEC) != 0
}

#[test]
fn reuse_port_spreads_associations_over_one_to_many_sockets() {
    let first = listener(&["127.0.0.1:0"], true);
    let port = local_port(first.socket());
    let second = listener(&[&format!("127.0.0.1:{port}")], true);
    // a listener on the port with another set of addresses is refused, and told why
    let e = SctpSocket::listen(
        &[
            format!("127.0.0.1:{port}").parse().unwrap(),
            format!("127.0.0.2:{port}").parse().unwrap(),
        ],
        true,
        16,
        0,
    )
    .unwrap_err();
    assert!(e.to_string().contains("same set of addresses"), "{e}");
    let servers = [&first, &second];
    let mut per_server = [0; 2];
    let pes: Vec<SctpClient> = (0..16)
        .map(|_| connect(format!("127.0.0.1:{port}")))
        .collect();
    let mut buf = [0; 256];
    let deadline = Instant::now() + WAIT;
    while per_server.iter().sum::<usize>() < pes.len() {
        assert!(
            Instant::now() < deadline,
            "associations seen: {per_server:?}"
        );
        for (n, server) in servers.iter().enumerate() {
            match server.recv(&mut buf) {
                Ok(SctpRecv::AssocChange {
                    state: AssocState::CommUp,
                    ..
                }) => per_server[n] += 1,
                Ok(other) => panic!("expected CommUp, got {other:?}"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // the kernel hashes each new association's addresses and ports onto one of the sockets: 16
    // associations all on one socket would happen by chance once in 32768 runs
    assert!(
        per_server.iter().all(|&n| n > 0),
        "one socket took every association: {per_server:?}"
    );
}

#[test]
fn mixed_family_listener_takes_ipv6_and_ipv4_associations() {
    // an IPv6 socket, IPV6_V6ONLY off, with ::1 bound and 127.0.0.1 added by sctp_bindx
    let server = listener(&["[::1]:0", "127.0.0.1:0"], false);
    let port = local_port(server.socket());
    let mut buf = [0; 256];
    let mut pes = Vec::new();
    for (ip, addr) in [
        ("::1", format!("[::1]:{port}")),
        ("127.0.0.1", format!("127.0.0.1:{port}")),
    ] {
        let pe = connect(addr.clone());
        let assoc = comm_up(&server, &mut buf);
        // an unbound client offers all its addresses (an IPv6 one both families), each on its port
        let peers = server.peer_addresses(assoc).unwrap();
        assert!(
            peers
                .iter()
                .any(|p| p.ip().to_string() == ip && p.port() == local_port(pe.socket())),
            "{addr}: {peers:?}"
        );
        assert!(
            peers.iter().all(|p| p.port() == local_port(pe.socket())),
            "{peers:?}"
        );
        // IPv4 peers come as IPv4 addresses, not as IPv4-mapped IPv6 ones
        assert!(
            peers.iter().all(|p| match p {
                SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_none(),
                SocketAddr::V4(_) => true,
            }),
            "{peers:?}"
        );
        // kept open, so that its shutdown does not come before the next association
        pes.push(pe);
    }
}

// The registrar daemon as a process, over kernel SCTP.

common::on_both_drivers!(
    daemon_registers_resolves_keeps_alive_and_drops_pes_over_sctp,
    enrp_ppid_on_the_asap_port_aborts_only_that_association,
    hostile_messages_over_sctp_leave_the_daemon_serving_and_pes_intact,
    two_workers_share_the_sctp_port_and_the_handlespace,
    rsplib_pe_and_pu_interoperate_through_the_registrar,
    a_peer_that_stops_reading_is_aborted_before_it_starves_the_others,
    two_registrars_replicate_and_take_over_over_sctp_enrp,
    rsplib_registrar_and_ours_share_an_operating_scope,
    a_silent_sctp_peer_is_taken_over_with_any_worker_count,
    a_presence_over_sctp_counts_every_pe_already_replicated,
    a_registrar_restarted_at_once_serves_every_pe_over_sctp,
    each_association_gets_a_socket_of_its_own_and_gives_it_back,
    a_subscriber_over_sctp_gets_pushes_until_its_association_ends,
    an_sctp_message_beyond_the_limit_is_dropped_whole_and_the_next_served,
);

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The guest's non-loopback address (TEST-NET-1), on a dummy interface: RSPLIB's PEs register
/// only non-loopback addresses, and an unbound client lists it in its associations too.
const TEST_NET: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
/// Another host as far as the registrar can tell: a host may move its own PEs between its
/// associations, another cannot touch them.
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Puts [`TEST_NET`] on a dummy interface `rsp0`, once per boot (the guest runs as root; the
/// runner loads the `dummy` module). Refuses to touch any other machine's network.
fn with_test_net() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if let Err(e) = sctp_support() {
            panic!("these tests need kernel SCTP: {e}");
        }
        let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        assert!(
            cpu.contains("User Mode Linux"),
            "this test adds a dummy interface with {TEST_NET}: run it in user-mode Linux \
             (ci/uml-run.sh), not on this machine"
        );
        let steps: [&[&str]; 3] = [
            &["link", "add", "rsp0", "type", "dummy"],
            &["addr", "add", "192.0.2.1/24", "dev", "rsp0"],
            &["link", "set", "rsp0", "up"],
        ];
        for args in steps {
            let what = format!("ip {}", args.join(" "));
            let out = Command::new("ip")
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
}

/// The daemon on `driver` with an SCTP and a UDP ASAP listener on ephemeral loopback ports,
/// `workers` workers and metrics. A PE gets a keep-alive `keep_alive_ms` after registering or
/// acking, and has `timeout_ms` to ack it. Returns the daemon and the SCTP listener's address.
fn sctp_daemon(
    driver: &str,
    workers: usize,
    keep_alive_ms: u64,
    timeout_ms: u64,
) -> (Daemon, SocketAddr) {
    if let Err(e) = sctp_support() {
        panic!("these tests need kernel SCTP: {e}");
    }
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let config = std::env::temp_dir().join(format!(
        "rserpool-sctp-{}-{}.toml",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(
        &config,
        format!(
            "[timers]\nkeep_alive_interval_ms = {keep_alive_ms}\nkeep_alive_timeout_ms = {timeout_ms}\n"
        ),
    )
    .unwrap();
    let workers = workers.to_string();
    let d = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--driver",
        driver,
        "--workers",
        &workers,
        "--asap",
        "sctp://127.0.0.1:0",
        "--asap",
        "udp://127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let addr = d.address("sctp://", false);
    (d, addr)
}

/// A PE's or PU's association with the registrar: a one-to-one SCTP socket speaking ASAP.
struct Asap(SctpClient);

impl Asap {
    fn connect(addr: SocketAddr) -> Self {
        Self(connect(addr.to_string()))
    }

    /// An association from `source` only.
    fn connect_from(addr: SocketAddr, source: IpAddr) -> Self {
        Self(connect_from(addr, Some(source)))
    }

    /// Sends one ASAP message (PPID 11).
    fn send(&self, msg: &[u8]) {
        self.send_with_ppid(PPID_ASAP, msg);
    }

    fn send_with_ppid(&self, ppid: u32, msg: &[u8]) {
        let sent = wait_for("room to send", || self.0.send(ppid, 0, msg));
        assert_eq!(sent.unwrap_or_else(|e| panic!("send: {e}")), msg.len());
    }

    /// The next message; fails the test if none comes in time, the association ends, or the
    /// PPID is not ASAP's.
    fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0; 1 << 16];
        let (len, ppid) = wait_for("a message from the registrar", || self.0.recv(&mut buf))
            .unwrap_or_else(|e| panic!("receive: {e}"));
        assert_ne!(
            (len, ppid),
            (0, 0),
            "the registrar shut the association down"
        );
        assert_eq!(ppid, PPID_ASAP);
        buf.truncate(len);
        buf
    }

    /// Acks `bytes` if it is an ASAP_ENDPOINT_KEEP_ALIVE; returns whether it was one.
    fn ack_keep_alive(&self, bytes: &[u8]) -> bool {
        let message = AsapMessage::decode(bytes, RFC).expect("decodable").message;
        let AsapMessage::EndpointKeepAlive {
            pool_handle, pe_id, ..
        } = message
        else {
            return false;
        };
        let pe_id = pe_id.expect("the registrar names the PE in keep-alives, as RSPLIB's does");
        self.send(&encode(
            &AsapMessage::EndpointKeepAliveAck { pool_handle, pe_id },
            RFC,
        ));
        true
    }

    /// Acks the keep-alives that have arrived, without waiting; anything else fails the test.
    fn ack_waiting_keep_alives(&self) {
        let mut buf = vec![0; 1 << 16];
        while let Ok((len, ppid)) = self.0.recv(&mut buf) {
            assert_ne!(
                (len, ppid),
                (0, 0),
                "the registrar shut the association down"
            );
            assert!(self.ack_keep_alive(&buf[..len]), "{:?}", &buf[..len]);
        }
    }

    /// Sends a request and returns the answer, acking keep-alives meanwhile.
    fn request(&self, msg: &[u8]) -> Vec<u8> {
        self.send(msg);
        loop {
            let bytes = self.recv();
            if !self.ack_keep_alive(&bytes) {
                return bytes;
            }
        }
    }
}

/// Registers PE `id` in `handle` at 127.0.0.1 over `pe` and checks that it was accepted.
fn register(pe: &Asap, handle: &[u8], id: u64) {
    let bytes = pe.request(&sctp_registration(handle, id, 4711, &[LOOPBACK]));
    assert!(
        common::accepted(&bytes, RFC),
        "PE {id} refused: {:?}",
        AsapMessage::decode(&bytes, RFC)
    );
}

/// Resolves `handle` over `pu`: the PE IDs, sorted, or the error cause.
fn resolve(pu: &Asap, handle: &[u8]) -> Result<Vec<u64>, u16> {
    resolved(&pu.request(&resolution(handle, Some(128), RFC)), RFC)
}

/// A resolved PE: its ID and the kind, port and addresses of its user transport.
type ResolvedPe = (u64, TransportKind, u16, Vec<IpAddr>);

/// Resolves `handle` over `pu` with the PEs' user transports, or the error cause; checks that
/// the pool policy is there (RSPLIB's PUs drop answers without it).
fn resolve_transports(pu: &Asap, handle: &[u8]) -> Result<Vec<ResolvedPe>, u16> {
    let bytes = pu.request(&resolution(handle, Some(128), RFC));
    let AsapMessage::HandleResolutionResponse { resolution, .. } =
        AsapMessage::decode(&bytes, RFC).expect("decodable").message
    else {
        panic!("not a resolution response: {bytes:?}");
    };
    match resolution {
        Resolution::Found {
            policy,
            pool_elements,
        } => {
            assert!(policy.is_some(), "no pool policy in {bytes:?}");
            Ok(pool_elements
                .iter()
                .map(|pe| match pe.user_transport {
                    UserTransport::Transport(t) => {
                        (pe.id.0, t.kind, t.port, t.addresses.iter().collect())
                    }
                    UserTransport::Opaque(_) => panic!("opaque transport in {bytes:?}"),
                })
                .collect())
        }
        Resolution::Failed(causes) => Err(causes.iter().next().map_or(0, |c| c.code)),
    }
}

/// The value of the sample `series` (name and labels) in a metrics text.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in the metrics"))
}

fn daemon_registers_resolves_keeps_alive_and_drops_pes_over_sctp(driver: &str) {
    with_test_net();
    let (d, addr) = sctp_daemon(driver, 1, 300, 1_000);
    let pe = Asap::connect(addr);
    // The PE offers one address its association does not have: the registrar keeps those the
    // kernel reports for the association, 127.0.0.1 and the 192.0.2.1 the client's INIT lists.
    let offered = [
        LOOPBACK,
        TEST_NET,
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
    ];
    let bytes = pe.request(&sctp_registration(b"sctp-pool", 0x1234, 4711, &offered));
    match AsapMessage::decode(&bytes, RFC).unwrap().message {
        AsapMessage::RegistrationResponse {
            rejected,
            pool_handle,
            pe_id,
            error,
        } => {
            assert!(!rejected && error.is_none(), "rejected: {error:?}");
            assert_eq!(pool_handle.0, b"sctp-pool");
            assert_eq!(pe_id, PeId(0x1234));
        }
        other => panic!("not a registration response: {other:?}"),
    }
    let pu = Asap::connect(addr);
    assert_eq!(
        resolve_transports(&pu, b"sctp-pool"),
        Ok(vec![(
            0x1234,
            TransportKind::Sctp,
            4711,
            vec![LOOPBACK, TEST_NET]
        )])
    );
    let udp = d.address("udp://", false);
    assert_eq!(resolve_udp(udp, b"sctp-pool", RFC), Ok(vec![0x1234]));

    // A second PE that never answers keep-alives.
    let silent = Asap::connect(addr);
    register(&silent, b"sctp-pool", 0x5678);
    assert_eq!(resolve(&pu, b"sctp-pool"), Ok(vec![0x1234, 0x5678]));

    // Keep-alives come every ~300 ms and name the PE; the first PE acks three of them.
    for _ in 0..3 {
        let bytes = pe.recv();
        match AsapMessage::decode(&bytes, RFC).unwrap().message {
            AsapMessage::EndpointKeepAlive {
                home,
                server_id,
                pool_handle,
                pe_id,
            } => {
                assert!(!home, "the registrar is already the home PR");
                assert_ne!(server_id, PrId(0));
                assert_eq!(pool_handle.0, b"sctp-pool");
                assert_eq!(pe_id, Some(PeId(0x1234)));
            }
            other => panic!("expected a keep-alive, got {other:?}"),
        }
        assert!(pe.ack_keep_alive(&bytes));
    }
    // The silent PE is gone after ~300 ms + 1 s; the one that acks stays.
    assert!(eventually(WAIT, || {
        pe.ack_waiting_keep_alives();
        resolve(&pu, b"sctp-pool") == Ok(vec![0x1234])
    }));
    pe.ack_waiting_keep_alives();
    let metrics = d.scrape();
    assert!(sample(&metrics, "rserpool_keep_alive_acks_total") >= 3.0);
    assert_eq!(
        sample(
            &metrics,
            "rserpool_pe_removals_total{reason=\"keep_alive_timeout\"}"
        ),
        1.0
    );

    // Closing the PE's association removes it (checklist PA-18).
    drop(pe);
    assert!(eventually(WAIT, || resolve(&pu, b"sctp-pool")
        == Err(cause::UNKNOWN_POOL_HANDLE)));
    assert_eq!(
        resolve_udp(udp, b"sctp-pool", RFC),
        Err(cause::UNKNOWN_POOL_HANDLE)
    );
    assert_eq!(
        d.metric("rserpool_pe_removals_total{reason=\"association_closed\"}"),
        1.0
    );
    drop(silent);
}

fn enrp_ppid_on_the_asap_port_aborts_only_that_association(driver: &str) {
    // Checklist PA-21.
    let (d, addr) = sctp_daemon(driver, 1, 60_000, 60_000);
    let pe = Asap::connect(addr);
    register(&pe, b"pa21", 1);
    let intruder = Asap::connect(addr);
    register(&intruder, b"pa21", 2);
    let presence = EnrpMessage {
        sender: PrId(0x77),
        receiver: PrId(0),
        body: EnrpBody::Presence {
            reply_required: true,
            checksum: Some(0xffff),
            server_information: None,
        },
    };
    let mut buf = [0; 256];
    let n = presence.encode(RFC, &mut buf).unwrap();
    intruder.send_with_ppid(PPID_ENRP, &buf[..n]);
    let mut reply = [0; 256];
    let e = wait_for("the abort to reach the intruder", || {
        intruder.0.recv(&mut reply)
    })
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    // Its PE left with it; the other PE and new associations are served as before.
    let pu = Asap::connect(addr);
    assert!(eventually(WAIT, || resolve(&pu, b"pa21") == Ok(vec![1])));
    assert_eq!(resolve(&pe, b"pa21"), Ok(vec![1]));
    assert_eq!(
        d.metric("rserpool_pe_removals_total{reason=\"association_closed\"}"),
        1.0
    );
    assert_eq!(
        d.metric("rserpool_messages_received_total{protocol=\"enrp\""),
        0.0,
        "the ENRP message was not processed"
    );
}

/// RFC 5352 §2.2.5-6 over SCTP (a peeled-off association): the S bit is answered with the A
/// bit, a change of the pool is pushed with it, and the subscription ends with the association.
fn a_subscriber_over_sctp_gets_pushes_until_its_association_ends(driver: &str) {
    let (d, addr) = sctp_daemon(driver, 2, 60_000, 60_000);
    let pe = Asap::connect(addr);
    register(&pe, b"watched", 1);
    let pu = Asap::connect(addr);
    let subscribe = encode(
        &AsapMessage::HandleResolution {
            subscribe: true,
            pool_handle: PoolHandle(b"watched"),
            items: None,
        },
        RFC,
    );
    let a_bit = |bytes: &[u8]| match AsapMessage::decode(bytes, RFC).expect("decodable").message {
        AsapMessage::HandleResolutionResponse { accepted, .. } => accepted,
        other => panic!("not a resolution response: {other:?}"),
    };
    let answer = pu.request(&subscribe);
    assert!(a_bit(&answer), "the A bit answers the S bit");
    assert_eq!(resolved(&answer, RFC), Ok(vec![1]));
    register(&pe, b"watched", 2);
    let push = pu.recv();
    assert!(a_bit(&push), "a push carries the A bit");
    assert_eq!(resolved(&push, RFC), Ok(vec![1, 2]));
    assert_eq!(d.metric("rserpool_subscriptions "), 1.0);
    drop(pu);
    assert!(
        eventually(WAIT, || d.metric("rserpool_subscriptions ") == 0.0),
        "the subscription ends with its association"
    );
}

fn hostile_messages_over_sctp_leave_the_daemon_serving_and_pes_intact(driver: &str) {
    let (d, addr) = sctp_daemon(driver, 1, 60_000, 60_000);
    let pe = Asap::connect(addr);
    register(&pe, b"victim", 7);
    let valid = [
        sctp_registration(b"victim", 7, 4711, &[LOOPBACK]),
        resolution(b"victim", None, RFC),
        encode(
            &AsapMessage::Deregistration {
                pool_handle: PoolHandle(b"victim"),
                pe_id: PeId(7),
            },
            RFC,
        ),
        encode(
            &AsapMessage::EndpointKeepAliveAck {
                pool_handle: PoolHandle(b"victim"),
                pe_id: PeId(7),
            },
            RFC,
        ),
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Mutated and random messages on one association from another host, which reads what comes
    // back now and then (a peer that stops reading is another test's subject).
    let attacker = Asap::connect_from(addr, ATTACKER);
    let mut answers = 0;
    let mut buf = vec![0; 1 << 16];
    let started = Instant::now();
    for i in 0..2_000 {
        let mut m = valid[i % valid.len()].clone();
        match next() % 4 {
            0 => {
                let at = (next() as usize) % m.len();
                m[at] ^= (next() as u8) | 1;
            }
            1 => m.truncate(1 + (next() as usize) % (m.len() - 1)),
            2 => m = (0..1 + next() % 80).map(|_| next() as u8).collect(),
            _ => {
                // A framed message of a random type with random content.
                let len = 4 + (next() % 60) as usize;
                m = (0..len).map(|_| next() as u8).collect();
                m[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            }
        }
        attacker.send(&m);
        if i % 50 == 49 {
            while let Ok((n, ppid)) = attacker.0.recv(&mut buf) {
                assert_eq!(ppid, PPID_ASAP, "{:?}", &buf[..n]);
                answers += 1;
            }
        }
    }
    eprintln!(
        "2000 hostile messages sent in {:?}, {answers} answers read",
        started.elapsed()
    );
    assert!(answers > 100, "errors are answered: {answers}");
    std::thread::sleep(Duration::from_millis(100));
    let mut d = d;
    if let Ok(Some(status)) = d.child.try_wait() {
        let (_, stderr) = d.wait(Duration::from_secs(1));
        panic!("the daemon exited ({status}) under hostile input; it printed:\n{stderr}");
    }
    // Still answering, and the PE registered by its owner is still there (next to PEs the
    // attacker's mutated registrations may have added, which leave with its association).
    let pu = Asap::connect(addr);
    let pes = resolve(&pu, b"victim").expect("the pool is still there");
    assert!(pes.contains(&7), "{pes:?}");
    drop(attacker);
    assert!(eventually(WAIT, || resolve(&pu, b"victim") == Ok(vec![7])));
    assert_eq!(resolve(&pe, b"victim"), Ok(vec![7]));
    assert!(d.metric("rserpool_decode_errors_total") > 100.0);
}

/// A message longer than `limits.max_message_size` (and than an io_uring receive buffer) comes
/// in parts: it is counted once and dropped whole, none of its parts taken for a message, and
/// the association's next messages are served. Registered right after the association came up,
/// the PE's first message also tests that nothing received ahead on the listener is lost when
/// the association moves to a socket of its own.
fn an_sctp_message_beyond_the_limit_is_dropped_whole_and_the_next_served(driver: &str) {
    let (d, addr) = sctp_daemon(driver, 1, 60_000, 60_000);
    for round in 0..3_u64 {
        let pe = Asap::connect(addr);
        register(&pe, b"big", 100 + round);
        // 40 000 bytes with registrations where the drivers' parts start (epoll: every
        // 16 448 bytes, its receive buffer; io_uring: every 16 400, a ring buffer less the
        // kernel's header and control messages): taken for a message, a part would register
        // PE 9.
        let decoy = sctp_registration(b"big", 9, 4711, &[LOOPBACK]);
        let mut big = sctp_registration(b"big", 1, 4711, &[LOOPBACK]);
        big.resize(40_000, 0);
        let len = big.len() as u16;
        big[2..4].copy_from_slice(&len.to_be_bytes());
        for at in [16_400, 16_448, 32_800, 32_896] {
            big[at..at + decoy.len()].copy_from_slice(&decoy);
        }
        pe.send(&big);
        register(&pe, b"big", 200 + round);
        let pes = resolve(&pe, b"big").expect("the pool");
        assert!(!pes.contains(&9) && !pes.contains(&1), "{pes:?}");
        assert!(pes.contains(&(200 + round)), "{pes:?}");
        assert_eq!(
            d.metric("rserpool_limit_refusals_total{limit=\"message_size\"}"),
            (round + 1) as f64,
            "one refusal per message, not per part"
        );
    }
}

/// The events each of two workers has handled, from the metrics.
fn worker_events(d: &Daemon) -> [f64; 2] {
    let metrics = d.scrape();
    [0, 1].map(|w| {
        sample(
            &metrics,
            &format!("rserpool_worker_events_total{{worker=\"{w}\"}}"),
        )
    })
}

/// [`worker_events`] once it has stopped moving: a worker counts a loop turn's events after it
/// has sent the turn's answers.
fn settled_worker_events(d: &Daemon) -> [f64; 2] {
    let mut last = worker_events(d);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = worker_events(d);
        if now == last {
            return now;
        }
        last = now;
    }
}

fn two_workers_share_the_sctp_port_and_the_handlespace(driver: &str) {
    let (d, addr) = sctp_daemon(driver, 2, 60_000, 60_000);
    let pe = Asap::connect(addr);
    register(&pe, b"spread", 1);
    // Associations one at a time, each resolving once: the worker whose event count moves is
    // the one SO_REUSEPORT gave it to (resolutions are answered where they arrive).
    let mut pus: Vec<(Asap, usize)> = Vec::new();
    while pus.len() < 8 || !(pus.iter().any(|p| p.1 == 0) && pus.iter().any(|p| p.1 == 1)) {
        assert!(
            pus.len() < 32,
            "32 associations, all on worker {}: SO_REUSEPORT did not spread them",
            pus[0].1
        );
        let before = settled_worker_events(&d);
        let pu = Asap::connect(addr);
        assert_eq!(resolve(&pu, b"spread"), Ok(vec![1]));
        let mut moved = Vec::new();
        assert!(eventually(Duration::from_secs(2), || {
            let after = worker_events(&d);
            moved = (0..2).filter(|&w| after[w] > before[w]).collect();
            !moved.is_empty()
        }));
        assert_eq!(moved.len(), 1, "both workers handled one association");
        pus.push((pu, moved[0]));
    }
    // One PE registered through an association on each worker: the pool's shard lives on one
    // of them, so one registration and its answer cross the mailboxes.
    let owner = rserpool_handlespace::shard_index(b"spread", 2);
    let forwards = d.metric("rserpool_mailbox_forwards_total");
    let on = |w: usize| pus.iter().position(|p| p.1 == w).unwrap();
    let (on_owner, on_other) = (on(owner), on(1 - owner));
    register(&pus[on_owner].0, b"spread", 10);
    register(&pus[on_other].0, b"spread", 11);
    assert!(d.metric("rserpool_mailbox_forwards_total") >= forwards + 2.0);
    for (pu, _) in &pus {
        assert_eq!(resolve(pu, b"spread"), Ok(vec![1, 10, 11]));
    }
    // The PE of the association on the other worker leaves with it, across the mailboxes.
    drop(pus.remove(on_other));
    for (pu, _) in &pus {
        assert!(eventually(WAIT, || resolve(pu, b"spread") == Ok(vec![1, 10])));
    }
    assert_eq!(resolve(&pe, b"spread"), Ok(vec![1, 10]));
}

fn rsplib_pe_and_pu_interoperate_through_the_registrar(driver: &str) {
    with_test_net();
    let (d, addr) = sctp_daemon(driver, 1, 250, 1_000);
    let rsplib = [
        format!("-registrar={addr}"),
        "-asapannounce=off".to_owned(),
        "-logcolor=off".to_owned(),
        "-loglevel=2".to_owned(),
        "-poolhandle=InteropPool".to_owned(),
    ];
    let mut args = vec!["-echo".to_owned(), "-rereginterval=1000".to_owned()];
    args.extend(rsplib.iter().cloned());
    let mut server = Tool::start("rspserver", &args);

    // rspserver registers over SCTP; its user transport is SCTP at its non-loopback address.
    let pu = Asap::connect(addr);
    let mut found = Err(0);
    let registered = eventually(WAIT, || {
        found = resolve_transports(&pu, b"InteropPool");
        found.is_ok()
    });
    assert!(
        registered,
        "rspserver did not register: {found:?}; it printed:\n{}",
        server.output()
    );
    let pes = found.unwrap();
    assert_eq!(pes.len(), 1, "{pes:?}");
    let (pe_id, kind, port, addresses) = &pes[0];
    assert_eq!(*kind, TransportKind::Sctp);
    assert_ne!(*port, 0);
    assert!(addresses.contains(&TEST_NET), "{addresses:?}");

    // rspterminal resolves the pool through the registrar and echoes a line through the PE.
    let resolutions = d.metric("rserpool_resolutions_total{result=\"found\"}");
    let mut terminal = Tool::start("rspterminal", &rsplib);
    let stdin = terminal.child.stdin.as_mut().unwrap();
    writeln!(stdin, "hello over RSerPool NG").unwrap();
    let echoed = terminal.wait_for_line("hello over RSerPool NG");
    assert!(
        echoed.contains(&format!("from PE ${pe_id:08x}")),
        "{echoed}"
    );
    drop(terminal);
    assert!(d.metric("rserpool_resolutions_total{result=\"found\"}") > resolutions);

    // rspserver acks keep-alives and re-registers (every second); nothing either side sent was
    // refused or undecodable.
    assert!(
        eventually(WAIT, || {
            let m = d.scrape();
            sample(&m, "rserpool_keep_alive_acks_total") >= 2.0
                && sample(&m, "rserpool_registrations_total{result=\"accepted\"}") >= 2.0
        }),
        "{}",
        d.scrape()
    );
    let metrics = d.scrape();
    for series in [
        "rserpool_registrations_total{result=\"accepted\"}",
        "rserpool_keep_alive_acks_total",
        "rserpool_keep_alives_sent_total",
    ] {
        eprintln!("{series} {}", sample(&metrics, series));
    }
    assert_eq!(
        d.metric("rserpool_registrations_total"),
        d.metric("rserpool_registrations_total{result=\"accepted\"}")
    );
    assert_eq!(d.metric("rserpool_decode_errors_total"), 0.0);
    assert_eq!(
        d.metric("rserpool_messages_received_total{protocol=\"asap\",type=\"error\""),
        0.0
    );
    assert_eq!(
        d.metric("rserpool_pe_removals_total{reason=\"keep_alive_timeout\"}"),
        0.0
    );

    // Stopped, rspserver leaves the pool.
    let status = server.stop("INT");
    eprintln!("rspserver exited with {status}");
    assert!(eventually(WAIT, || resolve(&pu, b"InteropPool")
        == Err(cause::UNKNOWN_POOL_HANDLE)));
    let deregistered = d.metric("rserpool_pe_removals_total{reason=\"deregistered\"}");
    let lost = d.metric("rserpool_pe_removals_total{reason=\"association_closed\"}");
    eprintln!("rspserver removed by deregistration: {deregistered}, by association loss: {lost}");
    assert_eq!(deregistered + lost, 1.0);
}

fn a_peer_that_stops_reading_is_aborted_before_it_starves_the_others(driver: &str) {
    // Answers a peer does not read fill its association's send buffer (its own since it was
    // peeled off; on a shared one-to-many socket every other association's answers would be
    // dropped too): the peer is aborted, the others are served.
    let (d, addr) = sctp_daemon(driver, 1, 60_000, 60_000);
    let pe = Asap::connect(addr);
    register(&pe, b"victim", 7);
    let pu = Asap::connect(addr);
    let flooder = Asap::connect(addr);
    let request = resolution(b"victim", None, RFC);
    let started = Instant::now();
    let mut sent = 0;
    let aborted = loop {
        assert!(
            started.elapsed() < 3 * WAIT,
            "{sent} requests sent, the flooder is still there"
        );
        match flooder.0.send(PPID_ASAP, 0, &request) {
            Ok(_) => {
                sent += 1;
                if sent % 200 == 0 {
                    assert_eq!(resolve(&pu, b"victim"), Ok(vec![7]), "after {sent}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            aborted.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "{aborted}"
    );
    eprintln!(
        "the flooder was aborted after {sent} unread requests, {:?}",
        started.elapsed()
    );
    assert_eq!(
        d.metric("rserpool_limit_refusals_total{limit=\"send_buffer\"}"),
        1.0
    );
    assert_eq!(resolve(&pu, b"victim"), Ok(vec![7]));
    assert_eq!(resolve(&pe, b"victim"), Ok(vec![7]));
}

/// The registrar's open file descriptors.
fn open_fds(d: &Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", d.child.id()))
        .unwrap()
        .count()
}

fn each_association_gets_a_socket_of_its_own_and_gives_it_back(driver: &str) {
    // Incoming associations are peeled off the one-to-many listener (a flood on one then fills
    // only its own buffers): one more descriptor each while it lasts, none after it ends,
    // whether the peer closes it or the registrar aborts it.
    let (d, addr) = sctp_daemon(driver, 1, 60_000, 60_000);
    let pu = Asap::connect(addr);
    assert_eq!(resolve(&pu, b"nothing"), Err(cause::UNKNOWN_POOL_HANDLE));
    let before = open_fds(&d);
    let pes: Vec<Asap> = (0..20).map(|_| Asap::connect(addr)).collect();
    for (i, pe) in pes.iter().enumerate() {
        register(pe, b"peeled", 100 + i as u64);
    }
    assert_eq!(open_fds(&d), before + 20);
    assert_eq!(resolve(&pu, b"peeled").unwrap().len(), 20);
    drop(pes);
    assert!(
        eventually(WAIT, || open_fds(&d) == before),
        "{} descriptors after the PEs closed, {before} before",
        open_fds(&d)
    );
    assert!(eventually(WAIT, || resolve(&pu, b"peeled")
        == Err(cause::UNKNOWN_POOL_HANDLE)));
    // Aborted by the registrar (PA-21: ENRP's PPID on the ASAP port).
    let intruder = Asap::connect(addr);
    register(&intruder, b"peeled", 7);
    assert_eq!(open_fds(&d), before + 1);
    intruder.send_with_ppid(PPID_ENRP, b"not ASAP");
    let mut reply = [0; 64];
    let e = wait_for("the abort", || intruder.0.recv(&mut reply)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    assert!(
        eventually(WAIT, || open_fds(&d) == before),
        "{} descriptors after the abort, {before} before",
        open_fds(&d)
    );
    // The slots are reused and served as before.
    let again = Asap::connect(addr);
    register(&again, b"peeled", 8);
    assert_eq!(resolve(&pu, b"peeled"), Ok(vec![8]));
    assert_eq!(
        d.metric("rserpool_connections_open{transport=\"sctp\"}"),
        2.0
    );
}

// ENRP over kernel SCTP: two of our registrars, then ours with RSPLIB's `rspregistrar`.

/// ENRP timers for the scope tests (RSPLIB's `rspregistrar` is given the same), and keep-alives
/// rare enough that a test PE need not answer them.
const SCOPE_CONFIG: &str = "[timers]\n\
    keep_alive_interval_ms = 60000\n\
    [enrp]\n\
    heartbeat_interval_ms = 500\n\
    max_time_last_heard_ms = 1000\n\
    max_time_no_response_ms = 1000\n\
    mentor_discovery_timeout_ms = 1000\n\
    takeover_expiry_ms = 3000\n\
    reconnect_interval_ms = 500\n";

/// The same with peers declared dead four times later: a registrar that leaves the takeover of
/// a dead peer to a faster one.
const SLOW_SCOPE_CONFIG: &str = "[timers]\n\
    keep_alive_interval_ms = 60000\n\
    [enrp]\n\
    heartbeat_interval_ms = 500\n\
    max_time_last_heard_ms = 4000\n\
    max_time_no_response_ms = 4000\n\
    mentor_discovery_timeout_ms = 1000\n\
    takeover_expiry_ms = 3000\n\
    reconnect_interval_ms = 500\n";

/// A registrar on `driver` with ID `id`, one worker, SCTP ASAP (ephemeral port) and ENRP
/// (`enrp_port`, 0 for any) endpoints at `ip`, and the static ENRP peers `peers`.
fn scope_member(driver: &str, id: u32, ip: IpAddr, enrp_port: u16, peers: &[String]) -> Daemon {
    scope_member_with(driver, id, ip, enrp_port, peers, SCOPE_CONFIG)
}

/// [`scope_member`] with the configuration file `config`.
fn scope_member_with(
    driver: &str,
    id: u32,
    ip: IpAddr,
    enrp_port: u16,
    peers: &[String],
    config_text: &str,
) -> Daemon {
    member(driver, 1, id, ip, (0, enrp_port), peers, config_text)
}

/// A registrar on `driver` with `workers` workers, ID `id`, SCTP ASAP and ENRP endpoints at `ip`
/// (`ports`: ASAP and ENRP, 0 for any), the static ENRP peers `peers` and the configuration
/// file `config_text`.
fn member(
    driver: &str,
    workers: usize,
    id: u32,
    ip: IpAddr,
    ports: (u16, u16),
    peers: &[String],
    config_text: &str,
) -> Daemon {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let config = std::env::temp_dir().join(format!(
        "rserpool-sctp-scope-{}-{}.toml",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&config, config_text).unwrap();
    let (workers, id) = (workers.to_string(), id.to_string());
    let asap = format!("sctp://{ip}:{}", ports.0);
    let enrp = format!("sctp://{ip}:{}", ports.1);
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--driver",
        driver,
        "--workers",
        &workers,
        "--id",
        &id,
        "--asap",
        &asap,
        "--enrp",
        &enrp,
        "--metrics",
        "127.0.0.1:0",
    ];
    for peer in peers {
        args.extend(["--peer", peer.as_str()]);
    }
    Daemon::start(&args)
}

/// The (PE ID, home PR ID) pairs of a resolution of `handle` over `pu`, sorted; empty when the
/// pool is unknown.
fn resolve_homes(pu: &Asap, handle: &[u8]) -> Vec<(u64, u64)> {
    let bytes = pu.request(&resolution(handle, Some(128), RFC));
    let AsapMessage::HandleResolutionResponse {
        resolution: Resolution::Found { pool_elements, .. },
        ..
    } = AsapMessage::decode(&bytes, RFC).expect("decodable").message
    else {
        return Vec::new();
    };
    let mut pes: Vec<(u64, u64)> = pool_elements
        .iter()
        .map(|p| (p.id.0, p.home_pr.0))
        .collect();
    pes.sort_unstable();
    pes
}

fn two_registrars_replicate_and_take_over_over_sctp_enrp(driver: &str) {
    let mut a = scope_member(driver, 1, LOOPBACK, 0, &[]);
    let b = scope_member(driver, 2, LOOPBACK, 0, std::slice::from_ref(&a.enrp[0]));
    let (a_asap, b_asap) = (a.address("sctp://", false), b.address("sctp://", false));
    let pe = Asap::connect(a_asap);
    register(&pe, b"scope", 7);
    let pu = Asap::connect(b_asap);
    let mut found = Vec::new();
    assert!(
        eventually(WAIT, || {
            found = resolve_homes(&pu, b"scope");
            found == [(7, 1)]
        }),
        "the PE registered at A is resolvable at B with home A: {found:?}"
    );
    assert_eq!(b.metric("rserpool_enrp_peers"), 1.0);
    assert!(
        b.metric("rserpool_messages_received_total{protocol=\"enrp\",type=\"presence\"") > 0.0,
        "presences over SCTP (PPID 12)"
    );
    // SIGKILL: the association breaks, B declares A dead and takes its PE over.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            found = resolve_homes(&pu, b"scope");
            found == [(7, 2)]
        }),
        "B took the PE over: {found:?}; B's ENRP metrics:\n{}",
        b.scrape()
            .lines()
            .filter(|l| l.contains("enrp") && !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(b.metric("rserpool_enrp_takeovers_total"), 1.0);
}

/// RSPLIB's registrar in an operating scope with two of ours, over SCTP on the guest's
/// non-loopback address (checklist I-03). A (ours) and R (RSPLIB) peer with each other; PEs
/// (RSPLIB's `rspserver`) register at either and are resolvable at the other with their home PR;
/// the audit checksums agree (no resynchronisation once settled, no ENRP_ERROR). C (ours) starts
/// with R as its only peer and loads the handlespace from R as its mentor. A is killed: R takes
/// its PE over (C, slower to declare A dead, acknowledges), and the PE follows R's keep-alive with
/// the H bit. R is killed: C takes every PE over, and the PEs follow C's keep-alives.
fn rsplib_registrar_and_ours_share_an_operating_scope(driver: &str) {
    with_test_net();
    let base: u16 = if driver == "epoll" { 21_000 } else { 22_000 };
    let (r_asap, r_enrp, a_enrp, c_enrp) = (base + 1, base + 2, base + 3, base + 4);
    let r_enrp_url = format!("sctp://{TEST_NET}:{r_enrp}");
    let a = scope_member(
        driver,
        0x11,
        TEST_NET,
        a_enrp,
        std::slice::from_ref(&r_enrp_url),
    );
    let a_asap = a.address("sctp://", false);
    let mut r = Tool::start(
        "rspregistrar",
        &[
            format!("-asap={TEST_NET}:{r_asap}"),
            format!("-enrp={TEST_NET}:{r_enrp}"),
            format!("-peer={TEST_NET}:{a_enrp}"),
            "-identifier=34".to_owned(),
            "-logcolor=off".to_owned(),
            "-loglevel=2".to_owned(),
            "-peerheartbeatcycle=500".to_owned(),
            "-peermaxtimelastheard=1000".to_owned(),
            "-peermaxtimenoresponse=1000".to_owned(),
            "-takeoverexpiryinterval=3000".to_owned(),
            "-mentordiscoverytimeout=1000".to_owned(),
        ],
    );
    assert!(
        eventually(WAIT, || a.metric("rserpool_enrp_peers") == 1.0),
        "no ENRP peering with rspregistrar; it printed:\n{}",
        r.output()
    );
    let pe_args = |registrar: SocketAddr, pool: &str| {
        vec![
            "-echo".to_owned(),
            "-rereginterval=5000".to_owned(),
            format!("-registrar={registrar}"),
            "-asapannounce=off".to_owned(),
            "-logcolor=off".to_owned(),
            "-loglevel=2".to_owned(),
            format!("-poolhandle={pool}"),
        ]
    };
    let r_asap = SocketAddr::new(TEST_NET, r_asap);
    let _at_rsplib = Tool::start("rspserver", &pe_args(r_asap, "AtRsplib"));
    let _at_ours = Tool::start("rspserver", &pe_args(a_asap, "AtOurs"));

    // Both ways: each registrar resolves the other's PE, with the other as its home PR.
    let at_a = Asap::connect(a_asap);
    let at_r = Asap::connect_from(r_asap, TEST_NET);
    let (mut theirs, mut ours) = (Vec::new(), Vec::new());
    assert!(
        eventually(Duration::from_secs(20), || {
            theirs = resolve_homes(&at_a, b"AtRsplib");
            ours = resolve_homes(&at_r, b"AtOurs");
            theirs.len() == 1 && ours.len() == 1
        }),
        "A resolves {theirs:?}, rspregistrar resolves {ours:?}; rspregistrar printed:\n{}",
        r.output()
    );
    let r_id = theirs[0].1;
    assert_eq!(r_id, 34, "{theirs:?}");
    assert_eq!(ours[0].1, 0x11, "{ours:?}");

    // Settled, the audits agree: no resynchronisation over six heartbeats, and RSPLIB answered
    // nothing with ENRP_ERROR.
    let resyncs = a.metric("rserpool_enrp_resyncs_total");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a.metric("rserpool_enrp_resyncs_total"), resyncs);
    assert_eq!(
        a.metric("rserpool_messages_received_total{protocol=\"enrp\",type=\"error\""),
        0.0
    );
    assert_eq!(a.metric("rserpool_decode_errors_total"), 0.0);

    // C knows only R: R is its mentor, its list names A.
    let c = scope_member_with(
        driver,
        0x13,
        TEST_NET,
        c_enrp,
        std::slice::from_ref(&r_enrp_url),
        SLOW_SCOPE_CONFIG,
    );
    let at_c = Asap::connect(c.address("sctp://", false));
    let pes_at = |pu: &Asap| -> Vec<(u64, u64)> {
        [b"AtRsplib".as_slice(), b"AtOurs"]
            .iter()
            .flat_map(|pool| resolve_homes(pu, pool))
            .collect()
    };
    let mut at_c_now = Vec::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            at_c_now = pes_at(&at_c);
            at_c_now.len() == 2 && c.metric("rserpool_enrp_peers") == 2.0
        }),
        "C loaded {at_c_now:?} and knows {} peers; rspregistrar printed:\n{}",
        c.metric("rserpool_enrp_peers"),
        r.output()
    );

    // A killed: R takes its PE over, and the PE (RSPLIB's) follows R's keep-alive.
    drop(at_a);
    drop(a);
    let mut after = Vec::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            after = resolve_homes(&at_r, b"AtOurs");
            after.len() == 1 && after[0].1 == r_id && resolve_homes(&at_c, b"AtOurs") == after
        }),
        "rspregistrar did not take A's PE over: {after:?} at R, {:?} at C; it printed:\n{}",
        resolve_homes(&at_c, b"AtOurs"),
        r.output()
    );

    // R killed: C takes every PE over.
    let status = r.stop("KILL");
    eprintln!("rspregistrar: {status}");
    let mut homes = Vec::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            homes = pes_at(&at_c);
            homes.len() == 2 && homes.iter().all(|&(_, home)| home == 0x13)
        }),
        "C did not take RSPLIB's PEs over: {homes:?}"
    );
    assert_eq!(c.metric("rserpool_enrp_takeovers_total"), 1.0);
    // C's keep-alives with the H bit make both PEs (RSPLIB's) adopt C and re-register there.
    assert!(
        eventually(Duration::from_secs(20), || c
            .metric("rserpool_registrations_total{result=\"accepted\"}")
            >= 2.0),
        "the PEs did not re-register at C: {}",
        c.scrape()
            .lines()
            .filter(|l| l.contains("registrations") || l.contains("keep_alive"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// Issue 13's faults over kernel SCTP: a silent peer, a presence after an update, a restart.

/// A registrar with `workers` workers, SCTP ASAP and ENRP endpoints on loopback (`ports`: ASAP
/// and ENRP, 0 for any), ID `id`, static peers `peers` and the scope tests' timers (a silent
/// peer is due for takeover after 1000 + 1000 + 500 ms).
fn fault_member(
    driver: &str,
    workers: usize,
    id: u32,
    ports: (u16, u16),
    peers: &[String],
) -> Daemon {
    member(driver, workers, id, LOOPBACK, ports, peers, SCOPE_CONFIG)
}

/// An ENRP peer played by the test over a one-to-one SCTP association (PPID 12).
struct EnrpPeer(SctpClient);

/// The test peer's PR ID.
const FAKE_PR: PrId = PrId(0x0fa4_e5c7);

impl EnrpPeer {
    fn connect(enrp: &str) -> Self {
        Self(connect(enrp.trim_start_matches("sctp://").to_owned()))
    }

    fn send(&self, body: EnrpBody<'_>) {
        let msg = common::enrp_message(FAKE_PR, body);
        let sent = wait_for("room to send", || self.0.send(PPID_ENRP, 0, &msg));
        assert_eq!(sent.unwrap(), msg.len());
    }

    fn presence(&self, reply_required: bool) {
        self.send(EnrpBody::Presence {
            reply_required,
            checksum: Some(0xffff),
            server_information: None,
        });
    }

    /// Reads ENRP messages until `f` returns something, for up to `limit`; `None` on time-out
    /// or when the association ends.
    fn until<T>(
        &self,
        limit: Duration,
        mut f: impl FnMut(&EnrpMessage<'_>) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0; 1 << 16];
        while Instant::now() < deadline {
            match self.0.recv(&mut buf) {
                Ok((0, 0)) => return None,
                Ok((len, ppid)) => {
                    assert_eq!(ppid, PPID_ENRP, "ENRP messages carry PPID 12");
                    let m = EnrpMessage::decode(&buf[..len], RFC)
                        .expect("the registrar sends decodable ENRP")
                        .message;
                    if let Some(t) = f(&m) {
                        return Some(t);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Introduces the peer and waits for the registrar's answer.
    fn introduce(&self) {
        self.presence(true);
        let answered = self.until(WAIT, |m| {
            matches!(m.body, EnrpBody::Presence { .. }).then_some(())
        });
        assert!(answered.is_some(), "the registrar answers a new peer");
    }
}

/// A peer that says one presence and one ADD_PE and then falls silent, its association open,
/// gets ENRP_INIT_TAKEOVER within MAX-TIME-LAST-HEARD + MAX-TIME-NO-RESPONSE + one heartbeat
/// (+ 1.5 s for UML), with 1, 2 and 4 workers (with more than one it never got it: its
/// association was aborted before the takeover's first message).
fn a_silent_sctp_peer_is_taken_over_with_any_worker_count(driver: &str) {
    for workers in [1, 2, 4] {
        let r = fault_member(driver, workers, 1, (0, 0), &[]);
        let peer = EnrpPeer::connect(&r.enrp[0]);
        peer.introduce();
        peer.send(EnrpBody::HandleUpdate {
            takeover_suggested: false,
            action: rserpool_protocol::UpdateAction::AddPe,
            pool_handle: PoolHandle(b"silent"),
            pool_element: common::peer_owned_pe(0x51, FAKE_PR, TransportKind::Sctp),
        });
        let silent = Instant::now();
        let bound = Duration::from_millis(1_000 + 1_000 + 500 + 1_500);
        let target = peer.until(bound + WAIT, |m| match m.body {
            EnrpBody::InitTakeover { target } => Some(target),
            _ => None,
        });
        let took = silent.elapsed();
        assert_eq!(
            target,
            Some(FAKE_PR),
            "{workers} workers: no ENRP_INIT_TAKEOVER for the silent peer"
        );
        assert!(
            took <= bound,
            "{workers} workers: after {took:?}, bound {bound:?}"
        );
        println!("[{driver}] {workers} workers: silent SCTP peer taken over after {took:?}");
    }
}

/// After each PE registered over SCTP ASAP and its ADD_PE reached the peer, the next presence
/// the registrar sends carries that PE in its checksum, with 1, 2 and 4 workers.
fn a_presence_over_sctp_counts_every_pe_already_replicated(driver: &str) {
    use rserpool_protocol::checksum::Internet16;
    for workers in [1, 2, 4] {
        let r = fault_member(driver, workers, 1, (0, 0), &[]);
        let peer = EnrpPeer::connect(&r.enrp[0]);
        peer.introduce();
        let pe = Asap::connect(r.address("sctp://", false));
        let mut expected = Internet16::new();
        for id in 1..=12u32 {
            let handle = format!("fresh-{id}");
            register(&pe, handle.as_bytes(), u64::from(id));
            expected.add(handle.as_bytes(), id);
            let added = peer.until(WAIT, |m| match m.body {
                EnrpBody::HandleUpdate { pool_element, .. }
                    if pool_element.id == PeId(u64::from(id)) =>
                {
                    Some(())
                }
                _ => None,
            });
            assert!(added.is_some(), "{workers} workers: ADD_PE of PE {id}");
            peer.presence(true);
            let checksum = peer.until(WAIT, |m| match m.body {
                EnrpBody::Presence { checksum, .. } => checksum,
                _ => None,
            });
            assert_eq!(
                checksum,
                Some(u64::from(expected.value())),
                "[{driver}] {workers} workers: the presence after PE {id}'s ADD_PE counts it"
            );
        }
    }
}

/// Three registrars with two workers each over SCTP ENRP; PEs at A; B is killed (SIGKILL) and
/// started again at once with the same command line, then with a new ID: each time it serves
/// every PE within 5 s (the default profile's promise) and still does a few heartbeats later.
fn a_registrar_restarted_at_once_serves_every_pe_over_sctp(driver: &str) {
    let base: u16 = if driver == "epoll" { 23_000 } else { 24_000 };
    let ports = [(base, base + 1), (base + 2, base + 3), (base + 4, base + 5)];
    let peers_of = |i: usize| -> Vec<String> {
        (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("sctp://127.0.0.1:{}", ports[j].1))
            .collect()
    };
    let a = fault_member(driver, 2, 1, ports[0], &peers_of(0));
    let mut b = fault_member(driver, 2, 2, ports[1], &peers_of(1));
    let _c = fault_member(driver, 2, 3, ports[2], &peers_of(2));
    let pe = Asap::connect(a.address("sctp://", false));
    for id in 1..=8 {
        register(&pe, format!("restart-{}", id % 4).as_bytes(), id);
    }
    let all = |asap: SocketAddr| -> Vec<u64> {
        let Ok(pu) = std::panic::catch_unwind(|| Asap::connect(asap)) else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = (0..4)
            .flat_map(|p| resolve(&pu, format!("restart-{p}").as_bytes()).unwrap_or_default())
            .collect();
        ids.sort_unstable();
        ids
    };
    let everyone: Vec<u64> = (1..=8).collect();
    let b_asap = SocketAddr::from(([127, 0, 0, 1], ports[1].0));
    assert!(
        eventually(Duration::from_secs(20), || all(b_asap) == everyone),
        "B serves the PEs before the fault"
    );
    for new_id in [None, Some(22)] {
        b.child.kill().unwrap();
        b.child.wait().unwrap();
        let started = Instant::now();
        b = fault_member(driver, 2, new_id.unwrap_or(2), ports[1], &peers_of(1));
        let mut last = Vec::new();
        let served = eventually(Duration::from_secs(15), || {
            last = all(b_asap);
            last == everyone
        });
        let took = started.elapsed();
        assert!(
            served,
            "[{driver}] new id {new_id:?}: the restarted B serves {last:?}"
        );
        assert!(
            took <= Duration::from_secs(5),
            "[{driver}] new id {new_id:?}: all PEs after {took:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            all(b_asap),
            everyone,
            "[{driver}] new id {new_id:?}: PEs lost later"
        );
        println!("[{driver}] new id {new_id:?}: restarted B serves every PE after {took:?}");
    }
}
