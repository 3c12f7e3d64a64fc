//! The socket layer's SCTP against a real kernel SCTP stack: the registrar's one-to-many listener
//! with a one-to-one client acting as a PE (PPID 11), notifications, peer addresses, abort,
//! multihomed binding, and SO_REUSEPORT over several one-to-many sockets. Then the daemon itself
//! serving PEs and PUs over SCTP on each I/O driver.
//!
//! The build host has no kernel SCTP, so this target is `test = false` (a plain `cargo test` does
//! not run it) and CI runs it in user-mode Linux:
//! `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/uml-run.sh cargo test -p rserpool-registrar --test kernel_sctp`.
//! Without kernel SCTP every test fails with the reason; none skips.

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rserpool_registrar::net::{
    AssocState, SctpAssocId, SctpRecv, SctpSocket, recv_ppid, sctp_nodelay, sctp_support, send_ppid,
};
use socket2::Socket;

/// ASAP's payload protocol identifier.
const PPID_ASAP: u32 = 11;
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

fn connect(addr: String) -> Socket {
    SctpSocket::connect_one_to_one(addr.parse().unwrap(), WAIT).unwrap_or_else(|e| panic!("{e}"))
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
    assert_eq!(send_ppid(&pe, PPID_ASAP, 0, b"registration").unwrap(), 12);
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
    let (len, ppid) = wait_for("the PE to receive", || recv_ppid(&pe, &mut reply)).unwrap();
    assert_eq!((&reply[..len], ppid), (&b"response"[..], PPID_ASAP));

    let pe_port = local_port(&pe);
    assert_eq!(
        server.peer_addresses(assoc).unwrap(),
        vec![
            format!("127.0.0.1:{pe_port}")
                .parse::<SocketAddr>()
                .unwrap()
        ]
    );

    // the second address of the multihomed listener takes associations too
    let second = connect(format!("127.0.0.2:{port}"));
    let assoc2 = comm_up(&server, &mut buf);
    assert_ne!(assoc2, assoc);
    send_ppid(&second, PPID_ASAP, 3, b"x").unwrap();
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
    assert_eq!(peers, [("::1".parse().unwrap(), local_port(&pe))]);

    server.abort(assoc).unwrap();
    assert_eq!(
        next(&server, &mut buf),
        SctpRecv::AssocChange {
            assoc,
            state: AssocState::CommLost
        }
    );
    let mut reply = [0; 16];
    let e = wait_for("the abort to reach the PE", || recv_ppid(&pe, &mut reply)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    assert!(server.send(assoc, PPID_ASAP, 0, b"late").is_err());
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
    let pes: Vec<Socket> = (0..16)
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
                .any(|p| p.ip().to_string() == ip && p.port() == local_port(&pe)),
            "{addr}: {peers:?}"
        );
        assert!(
            peers.iter().all(|p| p.port() == local_port(&pe)),
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

/// The daemon on `driver` (two workers) registers a PE over SCTP, resolves for a PU over SCTP and
/// UDP, aborts an association that sends ENRP's PPID to the ASAP port (checklist PA-21), and
/// removes the PE when its association closes (PA-18).
fn daemon_serves_sctp(driver: &str) {
    use common::{Daemon, accepted, eventually, registration, resolution, resolve_udp, resolved};
    use rserpool_protocol::{Generation, cause};
    const RFC: Generation = Generation::Rfc;
    let d = Daemon::start(&[
        "--driver",
        driver,
        "--workers",
        "2",
        "--asap",
        "sctp://127.0.0.1:0",
        "--asap",
        "udp://127.0.0.1:0",
        "--metrics",
        "off",
    ]);
    let sctp = d.address("sctp://", false);
    let udp = d.address("udp://", false);
    let mut buf = [0; 4096];
    let request = |socket: &Socket, message: &[u8], buf: &mut [u8]| {
        send_ppid(socket, PPID_ASAP, 0, message).unwrap();
        let (len, ppid) = wait_for("the registrar to answer", || recv_ppid(socket, buf)).unwrap();
        assert_eq!(ppid, PPID_ASAP);
        len
    };
    let pe = connect(sctp.to_string());
    let len = request(&pe, &registration(b"sctp", 5, 60_000, RFC), &mut buf);
    assert!(accepted(&buf[..len], RFC));
    let pu = connect(sctp.to_string());
    let len = request(&pu, &resolution(b"sctp", None, RFC), &mut buf);
    assert_eq!(resolved(&buf[..len], RFC), Ok(vec![5]));
    assert_eq!(resolve_udp(udp, b"sctp", RFC), Ok(vec![5]));

    send_ppid(&pu, 12, 0, &resolution(b"sctp", None, RFC)).unwrap();
    let e = wait_for("the abort", || recv_ppid(&pu, &mut buf)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");

    drop(pe);
    assert!(eventually(WAIT, || resolve_udp(udp, b"sctp", RFC)
        == Err(cause::UNKNOWN_POOL_HANDLE)));
}

#[test]
fn daemon_serves_sctp_on_io_uring() {
    daemon_serves_sctp("io-uring");
}

#[test]
fn daemon_serves_sctp_on_epoll() {
    daemon_serves_sctp("epoll");
}
