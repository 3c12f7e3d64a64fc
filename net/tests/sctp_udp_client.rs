//! `rserpool_net::SctpUdpClient` against a user-space SCTP echo server on a loopback UDP
//! socket: messages of 1 byte to 60 KiB both ways with a reader and two senders at once, read
//! time-outs, a graceful shutdown, a server that restarts (its ABORT reaches the reader), and
//! connecting where nothing serves.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rserpool_net::sctp_udp::{AssociationHandle, EndpointConfig, EndpointEvent, SctpUdpEndpoint};
use rserpool_net::{Connection, SctpUdpClient, Transport};
use rserpool_protocol::{ASAP_PORT, PPID_ASAP};

const WAIT: Duration = Duration::from_secs(5);

/// A user-space SCTP server that echoes every message on its association, in a thread.
struct EchoServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Serves on `address` (port 0: any) with cookies and tags keyed by `secret`.
    fn start(address: SocketAddr, secret: [u8; 32]) -> Self {
        let socket = UdpSocket::bind(address).expect("bind the echo server");
        socket
            .set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        let address = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || serve(&socket, secret, &flag));
        Self {
            address,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops serving and closes the socket: the associations' state is gone.
    fn stop(mut self) -> SocketAddr {
        self.halt();
        self.address
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the echo server ran");
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn serve(socket: &UdpSocket, secret: [u8; 32], stop: &AtomicBool) {
    let mut endpoint = SctpUdpEndpoint::new(EndpointConfig::server(ASAP_PORT, 64), secret);
    let start = Instant::now();
    let (mut buf, mut out) = (vec![0; 65_536], vec![0; 65_536]);
    // Echoes the send buffer had no room for yet, in order.
    let mut backlog: VecDeque<(AssociationHandle, u32, Vec<u8>)> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        let now = start.elapsed().as_millis() as u64;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => endpoint.handle_datagram(from, &buf[..n], now),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("the echo server's socket failed: {e}"),
        }
        endpoint.handle_timeouts(now);
        endpoint.poll_events(|handle, event| {
            if let EndpointEvent::Message { ppid, bytes, .. } = event {
                backlog.push_back((handle, ppid, bytes.to_vec()));
            }
        });
        while let Some((handle, ppid, message)) = backlog.front() {
            match endpoint.send(*handle, 0, *ppid, message, now) {
                Ok(()) => {
                    backlog.pop_front();
                }
                Err(rserpool_net::sctp_udp::EndpointError::Send(
                    rserpool_net::sctp_udp::SendError::BufferFull { .. },
                )) => break,
                // The association is gone: its echoes with it.
                Err(_) => {
                    backlog.pop_front();
                }
            }
        }
        while let Some((to, n)) = endpoint.poll_transmit(&mut out) {
            let _ = socket.send_to(&out[..n], to);
        }
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Message `seq` of sender `sender`: its first byte names both, the rest is a pattern of them;
/// sizes from 1 byte to 60 KiB, mostly small.
fn message(sender: u8, seq: u32) -> Vec<u8> {
    let mut x = (u64::from(seq) + 1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(u64::from(sender));
    x ^= x >> 29;
    let len = match seq {
        0 => 1,
        1 => 60 * 1024,
        _ => 1 + (x % (1 << (x % 17))) as usize % (60 * 1024),
    };
    (0..len)
        .map(|i| {
            if i == 0 {
                (sender << 7) | (seq & 0x7f) as u8
            } else {
                (x as usize).wrapping_add(i * 31) as u8
            }
        })
        .collect()
}

/// A reader and two senders on clones of one client at once: 1 000 messages of 1 byte to
/// 60 KiB come back whole and in each sender's order; then a shutdown ends the reader.
#[test]
fn a_reader_and_two_senders_at_once_get_every_message_back_whole() {
    let server = EchoServer::start(loopback(), [1; 32]);
    let client = SctpUdpClient::connect(server.address, None, WAIT).unwrap();
    assert_eq!(client.peer_addr(), server.address);
    assert_ne!(client.local_addr().unwrap().port(), 0);
    client.set_write_timeout(Some(WAIT)).unwrap();
    const PER_SENDER: u32 = 500;
    let (all_back, all_back_seen) = std::sync::mpsc::channel();
    let reader = {
        let client = client.try_clone().unwrap();
        thread::spawn(move || {
            let mut next = [0u32; 2];
            let mut bytes = 0;
            while next.iter().sum::<u32>() < 2 * PER_SENDER {
                let (ppid, got) = client.recv().unwrap().expect("the association is up");
                assert_eq!(ppid, PPID_ASAP);
                let sender = got[0] >> 7;
                let seq = next[usize::from(sender)];
                assert!(
                    got == message(sender, seq),
                    "sender {sender}, message {seq}: {} bytes differ",
                    got.len()
                );
                next[usize::from(sender)] += 1;
                bytes += got.len();
            }
            all_back.send(()).unwrap();
            // What comes after the shutdown: nothing, and the end.
            (bytes, client.recv().unwrap())
        })
    };
    let senders: Vec<_> = (0..2u8)
        .map(|sender| {
            let client = client.try_clone().unwrap();
            thread::spawn(move || {
                let mut bytes = 0;
                for seq in 0..PER_SENDER {
                    let m = message(sender, seq);
                    client.send(PPID_ASAP, &m).unwrap();
                    bytes += m.len();
                }
                bytes
            })
        })
        .collect();
    let sent: usize = senders.into_iter().map(|s| s.join().unwrap()).sum();
    // Once every echo is back (a peer that took the SHUTDOWN sends nothing new), the
    // shutdown ends the reader.
    all_back_seen
        .recv_timeout(Duration::from_secs(10))
        .expect("every echo within 10 s");
    client.shutdown().unwrap();
    let (received, end) = reader.join().unwrap();
    assert_eq!(received, sent);
    assert_eq!(end, None);
}

/// A read waits at most the read time-out and says so; a message that then arrives is read.
#[test]
fn a_read_time_out_gives_would_block_and_the_next_read_works() {
    let server = EchoServer::start(loopback(), [2; 32]);
    let client = SctpUdpClient::connect(server.address, None, WAIT).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(client.set_read_timeout(Some(Duration::ZERO)).is_err());
    let start = Instant::now();
    let e = client.recv().unwrap_err();
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{e}"
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    client.send(PPID_ASAP, b"ping").unwrap();
    assert_eq!(client.recv().unwrap(), Some((PPID_ASAP, b"ping".to_vec())));
}

/// A shutdown by one handle ends a reader blocked in another with `Ok`, and sending after it
/// fails.
#[test]
fn a_shutdown_ends_the_reader() {
    let server = EchoServer::start(loopback(), [3; 32]);
    let conn = Connection::open(Transport::SctpUdp, server.address, WAIT).unwrap();
    let reader = conn.try_clone().unwrap();
    let reading = thread::spawn(move || {
        let mut count = 0;
        reader
            .read_messages(|_| {
                count += 1;
                true
            })
            .map(|()| count)
    });
    conn.send(b"one").unwrap();
    thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    conn.shutdown().unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(reading.join().unwrap().unwrap(), 1);
    let e = conn.send(b"two").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
}

/// A server that stops and comes back on the same port with new keys knows the association no
/// more: it answers the next DATA with an ABORT, and the reader fails with `ConnectionReset`
/// and says that the peer aborted.
#[test]
fn a_restarted_server_aborts_the_association_and_the_reader_says_so() {
    let server = EchoServer::start(loopback(), [4; 32]);
    let conn = Connection::open(Transport::SctpUdp, server.address, WAIT).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    conn.send(b"before").unwrap();
    let mut got = Vec::new();
    conn.read_messages(|m| {
        got = m.to_vec();
        false
    })
    .unwrap();
    assert_eq!(got, b"before");
    let address = server.stop();
    let _restarted = EchoServer::start(address, [5; 32]);
    conn.send(b"after").unwrap();
    let start = Instant::now();
    let e = conn.read_messages(|_| true).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    assert!(e.to_string().contains("aborted"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

/// Connecting to a UDP port that nothing serves fails within the time-out, and the message
/// names the port: a closed one at once (ICMP port unreachable), a silent one when the time-out
/// passes.
#[test]
fn connecting_where_nothing_serves_names_the_udp_port() {
    let closed = UdpSocket::bind(loopback()).unwrap().local_addr().unwrap();
    let start = Instant::now();
    let e = SctpUdpClient::connect(closed, None, Duration::from_secs(2)).unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(2_500));
    let text = e.to_string();
    assert!(
        text.contains(&format!("UDP port {}", closed.port())),
        "{text}"
    );
    assert!(text.contains("net.sctp.udp_port"), "{text}");

    let silent = UdpSocket::bind(loopback()).unwrap();
    let address = silent.local_addr().unwrap();
    let start = Instant::now();
    let e = io::Error::from(
        Connection::open(Transport::SctpUdp, address, Duration::from_millis(300)).unwrap_err(),
    );
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(
        e.to_string()
            .contains(&format!("nothing answered on UDP port {}", address.port())),
        "{e}"
    );
}
