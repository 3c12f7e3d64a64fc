//! The faults operators cause to an operating scope, against the registrar as a real process on
//! the default profile, over TCP, with 1, 2 and 4 workers on both drivers (issue 13):
//! - a peer that stays connected but falls silent (SIGSTOP, a hung process) is taken over
//!   within MAX-TIME-LAST-HEARD + MAX-TIME-NO-RESPONSE + one heartbeat;
//! - a reply to a reply-required presence carries the checksum of every PE the registrar owns,
//!   including one registered just before (no stale sum from another worker's shard).
//!
//! The peer is played by the test: it speaks ENRP from the codec, not from our registrar.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use rserpool_protocol::checksum::Internet16;
use rserpool_protocol::enrp::message_type as et;
use rserpool_protocol::framing::{Frame, next_frame};
use rserpool_protocol::{
    EnrpBody, EnrpMessage, Generation, PeId, Policy, PoolElement, PoolHandle, PrId, Seq, Transport,
    TransportKind, UpdateAction, UserTransport,
};

const RFC: Generation = Generation::Rfc;
/// The ID the test's peer speaks with.
const FAKE: PrId = PrId(0x0fa4_e001);

/// Short ENRP timers (the `carrier` profile's) so that a takeover is due within about a second;
/// everything else is the default profile.
const FAST_ENRP: &str = "[enrp]\n\
    heartbeat_interval_ms = 200\n\
    max_time_last_heard_ms = 400\n\
    max_time_no_response_ms = 300\n\
    mentor_discovery_timeout_ms = 1000\n\
    takeover_expiry_ms = 1000\n\
    reconnect_interval_ms = 200\n";

/// A registrar on the default profile with `workers` workers (0: the default, one per core) on
/// `driver`, with the short ENRP timers, an ENRP endpoint on an ephemeral TCP port and no static
/// peers.
fn registrar(driver: &str, workers: usize, tag: &str) -> Daemon {
    let config = std::env::temp_dir().join(format!(
        "rserpool-scope-faults-{}-{driver}-{workers}-{tag}.toml",
        std::process::id()
    ));
    std::fs::write(&config, FAST_ENRP).unwrap();
    let workers = workers.to_string();
    let mut args = vec![
        "--profile",
        "default",
        "--config",
        config.to_str().unwrap(),
        "--driver",
        driver,
        "--id",
        "1",
        "--asap",
        "tcp://127.0.0.1:0",
        "--enrp",
        "tcp://127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ];
    if workers != "0" {
        args.extend(["--workers", &workers]);
    }
    Daemon::start(&args)
}

/// The peer played by the test: one ENRP association over TCP.
struct FakePeer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl FakePeer {
    fn connect(enrp: &str) -> Self {
        let address: SocketAddr = enrp.trim_start_matches("tcp://").parse().unwrap();
        let stream = TcpStream::connect(address).unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, body: EnrpBody<'_>) {
        let mut buf = vec![0; 65_536];
        let n = EnrpMessage {
            sender: FAKE,
            receiver: PrId(1),
            body,
        }
        .encode(RFC, &mut buf)
        .unwrap();
        self.stream.write_all(&buf[..n]).unwrap();
    }

    /// Introduces the peer and waits until the registrar answers (it knows the peer then).
    fn introduce(&mut self) {
        self.presence(true);
        let answered = self.until(Duration::from_secs(5), |m| {
            (m.body.message_type() == et::PRESENCE).then_some(())
        });
        assert!(
            answered.is_some(),
            "the registrar answers a new peer's presence"
        );
    }

    fn presence(&mut self, reply_required: bool) {
        self.send(EnrpBody::Presence {
            reply_required,
            checksum: Some(0xffff),
            server_information: None,
        });
    }

    /// The next ENRP message within `timeout`: (type, decoded summary of interest), or `None`.
    fn next(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            match next_frame(&self.buf, 65_535) {
                Ok(Frame::Complete { len: n }) => {
                    let msg = self.buf[..n].to_vec();
                    self.buf.drain(..n);
                    return Some(msg);
                }
                Ok(Frame::Incomplete { .. }) => {}
                Err(e) => panic!("the registrar sent a bad frame: {e:?}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65_536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("reading from the registrar: {e}"),
            }
        }
    }

    /// Reads until a message satisfies `f` (within `timeout`); returns its value.
    fn until<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&EnrpMessage<'_>) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        while let Some(msg) = self.next(deadline.saturating_duration_since(Instant::now())) {
            let m = EnrpMessage::decode(&msg, RFC)
                .expect("the registrar sends decodable ENRP")
                .message;
            if let Some(t) = f(&m) {
                return Some(t);
            }
        }
        None
    }
}

fn owned_pe(id: u64) -> PoolElement<'static> {
    const IPS: &[std::net::IpAddr] = &[std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)];
    PoolElement {
        id: PeId(id),
        home_pr: FAKE,
        registration_life: 60_000,
        user_transport: UserTransport::Transport(Transport {
            kind: TransportKind::Tcp,
            port: 7,
            transport_use: 0,
            service_code: 0,
            addresses: Seq::from_items(IPS),
        }),
        policy: Policy::RoundRobin,
        asap_transport: None,
    }
}

/// Issue 13, case 2: a peer that says one presence and one ADD_PE, keeps its association open
/// and falls silent is taken over (ENRP_INIT_TAKEOVER for it) within
/// MAX-TIME-LAST-HEARD + MAX-TIME-NO-RESPONSE + one heartbeat (+ a margin for the process).
fn silent_peer_is_taken_over(driver: &str, workers: usize) {
    let r = registrar(driver, workers, "silent");
    let mut peer = FakePeer::connect(&r.enrp[0]);
    peer.introduce();
    peer.send(EnrpBody::HandleUpdate {
        takeover_suggested: false,
        action: UpdateAction::AddPe,
        pool_handle: PoolHandle(b"silent"),
        pool_element: owned_pe(0x51),
    });
    let silent_since = Instant::now();
    // 400 + 300 + 200 ms by the timers; the process gets a second on top.
    let bound = Duration::from_millis(400 + 300 + 200 + 1_000);
    let target = peer.until(bound + Duration::from_secs(2), |m| match m.body {
        EnrpBody::InitTakeover { target } => Some(target),
        _ => None,
    });
    let took = silent_since.elapsed();
    if target.is_none() {
        r.signal("TERM");
        let (_, stderr) = r.wait(Duration::from_secs(5));
        eprintln!("the registrar's log:\n{stderr}");
    }
    assert_eq!(
        target,
        Some(FAKE),
        "[{driver}, {workers} workers] no ENRP_INIT_TAKEOVER for the silent peer within {:?}",
        bound + Duration::from_secs(2)
    );
    assert!(
        took <= bound,
        "[{driver}, {workers} workers] takeover started after {took:?}, bound {bound:?}"
    );
    println!("[{driver}, {workers} workers] silent peer taken over after {took:?}");
}

/// Issue 13, case 3: right after a PE registers over ASAP and its ADD_PE reached the peer, the
/// answer to a reply-required presence carries that PE in its checksum.
fn presence_reply_counts_a_fresh_registration(driver: &str, workers: usize) {
    let r = registrar(driver, workers, "checksum");
    let mut peer = FakePeer::connect(&r.enrp[0]);
    peer.introduce();
    let mut pe = StreamClient::tcp(r.address("tcp://", false), RFC);
    let mut expected = Internet16::new();
    for id in 1..=40u32 {
        // Pools on every shard.
        let handle = format!("fresh-{id}");
        pe.send_raw(&registration(handle.as_bytes(), u64::from(id), 60_000, RFC));
        assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
        expected.add(handle.as_bytes(), id);
        let added = peer.until(Duration::from_secs(5), |m| match m.body {
            EnrpBody::HandleUpdate {
                action: UpdateAction::AddPe,
                pool_element,
                ..
            } if pool_element.id == PeId(u64::from(id)) => Some(()),
            _ => None,
        });
        assert!(added.is_some(), "ADD_PE of PE {id} reached the peer");
        peer.presence(true);
        let checksum = peer.until(Duration::from_secs(5), |m| match m.body {
            EnrpBody::Presence { checksum, .. } if m.body.message_type() == et::PRESENCE => {
                checksum
            }
            _ => None,
        });
        assert_eq!(
            checksum,
            Some(u64::from(expected.value())),
            "[{driver}, {workers} workers] the presence after PE {id}'s ADD_PE sums every PE \
             registered so far"
        );
    }
}

macro_rules! per_worker_count {
    ($($scenario:ident),* $(,)?) => {
        $(mod $scenario {
            #[test]
            fn io_uring_1() { super::$scenario("io-uring", 1); }
            #[test]
            fn io_uring_2() { super::$scenario("io-uring", 2); }
            #[test]
            fn io_uring_4() { super::$scenario("io-uring", 4); }
            #[test]
            fn io_uring_default() { super::$scenario("io-uring", 0); }
            #[test]
            fn epoll_1() { super::$scenario("epoll", 1); }
            #[test]
            fn epoll_2() { super::$scenario("epoll", 2); }
            #[test]
            fn epoll_4() { super::$scenario("epoll", 4); }
            #[test]
            fn epoll_default() { super::$scenario("epoll", 0); }
        })*
    };
}

per_worker_count!(
    silent_peer_is_taken_over,
    presence_reply_counts_a_fresh_registration,
);
