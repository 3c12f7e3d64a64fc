//! The session layer end to end over TCP (RFC 5352 §3.8-3.9; checklist EP-09, EP-10, PU-07):
//! the real `rserpool-registrar` on its default profile, two counter PEs (the `counter_pe`
//! example binary that `cargo test` builds, `target/<profile>/examples/counter_pe`), a PU
//! counting through a session; then SIGKILL of the PE it talks to, and the count goes on at the
//! other PE from the cookie. Then the PE side's driver on its own: the idle timeout, the
//! session cap, handles that send from other threads, and TLS with mutual authentication.

mod common;

#[allow(dead_code)] // Only the cookie helpers are used here.
#[path = "../examples/counter_pe.rs"]
mod counter_pe;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use rserpool_endpoint::driver::session::{
    CloseReason, PeerSession, Received, SessionHandle, SessionHandler, SessionOptions, SessionTls,
};
use rserpool_endpoint::driver::{Pe, Session, SessionServer, TlsOptions};
use rserpool_endpoint::session::{
    PeSessionConfig, PuSession, PuSessionConfig, PuSessionEvent, SessionAction, SessionError,
};
use rserpool_endpoint::{ConnId, PeInfo, PeTransport};
use rserpool_net::{ClientTls, ServerTls, TestPki, TlsFiles, Transport};
use rserpool_protocol::{PeId, Policy, PrId, TransportKind};

const WAIT: Duration = Duration::from_secs(20);

/// The `counter_pe` example binary: target/<profile>/examples/counter_pe, beside
/// target/<profile>/deps where this test runs.
fn counter_pe_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps")
        .join("examples")
        .join(format!("counter_pe{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p rserpool-endpoint --examples` before this test \
         (.ci/run does)",
        binary.display()
    );
    binary
}

/// A counter PE in a child process, killed on drop.
struct CounterPe {
    child: Child,
    id: PeId,
    lines: Lines,
}

impl Drop for CounterPe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_pe(registrar: &str) -> CounterPe {
    let mut child = Command::new(counter_pe_binary())
        .args(["--registrar", registrar, "--pool", "counter"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a counter PE");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    let mut pe = CounterPe {
        child,
        id: PeId(0),
        lines,
    };
    let line = pe
        .lines
        .wait_for(WAIT, |l| l.starts_with("pe ") && l.contains(" port "));
    pe.id = line
        .strip_prefix("pe ")
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .map(PeId)
        .expect("pe <id> port <port>");
    pe
}

const PPID: u32 = counter_pe::COUNTER_PPID;

/// Adds `step`, returns the total; repeats the request after a failover and counts those.
fn add(session: &mut Session, step: u64, failovers: &mut Vec<(PeId, PeId)>) -> u64 {
    session.send(PPID, &step.to_be_bytes()).expect("send");
    loop {
        match session.recv(WAIT).expect("receive") {
            Some(Received::Data { ppid, payload }) => {
                assert_eq!(ppid, PPID);
                return u64::from_be_bytes(payload.try_into().expect("an 8-byte total"));
            }
            Some(Received::FailedOver { from, to }) => {
                failovers.push((from.id, to.id));
                session.send(PPID, &step.to_be_bytes()).expect("resend");
            }
            None => panic!("no total within {WAIT:?}"),
        }
    }
}

#[test]
fn the_count_survives_a_pe_kill_through_the_cookie() {
    let d = Daemon::with_args(
        &[
            "--profile".into(),
            "default".into(),
            "--asap".into(),
            "tcp://127.0.0.1:0".into(),
            // The profile's ENRP port (9901) may be taken by another test's registrar.
            "--enrp".into(),
            "tcp://127.0.0.1:0".into(),
            "--metrics".into(),
            "127.0.0.1:0".into(),
            "--workers".into(),
            "1".into(),
        ],
        1,
    );
    let tcp = d.url("tcp://", false);
    let mut pes = vec![spawn_pe(&tcp), spawn_pe(&tcp)];
    let mut resolver = pool_user(&tcp);
    assert!(
        eventually(WAIT, || resolver
            .resolve_items("counter", Some(10))
            .is_ok_and(|p| p.len() == 2)),
        "both counter PEs registered"
    );
    let mut session = Session::open(
        pool_user(&tcp),
        PuSessionConfig::new("counter"),
        SessionOptions::default(),
    )
    .expect("session opened");
    let mut failovers = Vec::new();
    const N: u64 = 5;
    for i in 1..=N {
        assert_eq!(add(&mut session, 1, &mut failovers), i);
    }
    let first = session.current_pe().expect("a PE").id;
    let other = pes.iter().find(|p| p.id != first).expect("the other PE").id;
    // EP-10: the PE's business card named the pool's other PE.
    let card: Vec<PeId> = session.business_card().iter().map(|p| p.id).collect();
    assert_eq!(card, [other]);
    // EP-09: the latest cookie holds the total N, signed.
    let key = counter_pe::derive_key("rserpool counter example");
    assert_eq!(
        counter_pe::open_cookie(&key, session.cookie().expect("a cookie")),
        Some(N)
    );
    let i = pes.iter().position(|p| p.id == first).expect("ours");
    let mut victim = pes.remove(i);
    victim.child.kill().expect("SIGKILL the PE");
    victim.child.wait().expect("reaped");
    // PU-07: the next PE gets the cookie echo first and goes on from N.
    for i in N + 1..=2 * N {
        assert_eq!(add(&mut session, 1, &mut failovers), i);
    }
    assert_eq!(failovers, [(first, other)]);
    assert_eq!(session.current_pe().map(|p| p.id), Some(other));
    pes[0]
        .lines
        .wait_for(WAIT, |l| l.ends_with(&format!("restored {N}")));
    assert_eq!(session.dropped(), 0);
}

#[test]
fn cookies_are_signed() {
    let k = counter_pe::derive_key("secret");
    let mut c = counter_pe::cookie(&k, 42);
    assert_eq!(c.len(), 4 + 8 + 32, "CNT1, the total, HMAC-SHA256");
    assert_eq!(counter_pe::open_cookie(&k, &c), Some(42));
    assert_eq!(
        counter_pe::open_cookie(&counter_pe::derive_key("other"), &c),
        None
    );
    for i in [3, 11, 12, 43] {
        c[i] ^= 1;
        assert_eq!(counter_pe::open_cookie(&k, &c), None, "byte {i} flipped");
        c[i] ^= 1;
    }
    assert_eq!(counter_pe::open_cookie(&k, &c[..43]), None);
    assert_eq!(counter_pe::open_cookie(&k, b"short"), None);
}

/// Echoes data back after a cookie naming how many messages it saw.
struct Echo {
    seen: u64,
}

impl SessionHandler for Echo {
    fn on_cookie_echo(&mut self, _session: &mut PeerSession<'_>, _cookie: &[u8]) {}

    fn on_data(&mut self, session: &mut PeerSession<'_>, ppid: u32, payload: &[u8]) {
        self.seen += 1;
        session
            .send_cookie(self.seen.to_string().as_bytes())
            .expect("cookie");
        session.send_data(ppid, payload).expect("echo");
    }
}

#[test]
fn sessions_run_over_mptcp_and_a_length_lie_ends_only_its_connection() {
    let d = Daemon::start(60_000, &["tcp://127.0.0.1:0"]);
    let tcp = d.url("tcp://", false);
    let options = SessionOptions {
        transport: Transport::Mptcp,
        ..SessionOptions::default()
    };
    let server = SessionServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        PeSessionConfig::new("echo-session"),
        options.clone(),
    )
    .expect("listening");
    let address = server.local_addr().unwrap();
    let _server = server.spawn(|_| Echo { seen: 0 }).expect("serving");
    let mut config = pe_config(&[&tcp], "echo-session", address.port());
    config.transport.transport_use = rserpool_protocol::TRANSPORT_USE_DATA_PLUS_CONTROL;
    let _pe = Pe::register(config).expect("registered");
    // A record claiming 4 GiB: the PE closes that connection without reading on.
    let mut raw = TcpStream::connect(address).expect("connect");
    raw.set_read_timeout(Some(WAIT)).unwrap();
    raw.write_all(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .unwrap();
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest)
        .expect("closed by the PE, not timed out");
    assert!(
        rest.is_empty(),
        "no card without alternatives, nothing else"
    );
    // Meanwhile sessions go on, here over MPTCP.
    let mut session = Session::open(
        pool_user(&tcp),
        PuSessionConfig::new("echo-session"),
        options,
    )
    .expect("session opened");
    for i in 1..=3u64 {
        session.send(7, b"hello").unwrap();
        assert_eq!(
            session.recv(WAIT).unwrap(),
            Some(Received::Data {
                ppid: 7,
                payload: b"hello".to_vec()
            })
        );
        assert_eq!(session.cookie(), Some(i.to_string().as_bytes()));
    }
    assert!(session.business_card().is_empty());
    assert_eq!(
        session.send(11, b"x"),
        Err(rserpool_endpoint::session::SessionError::ReservedPpid)
    );
}

/// A PE session handler for the driver's own tests: echoes data, hands its [`SessionHandle`]
/// out as the session starts and reports how the session ended.
struct Probe {
    handles: mpsc::Sender<SessionHandle>,
    closed: mpsc::Sender<CloseReason>,
}

impl SessionHandler for Probe {
    fn on_start(&mut self, session: &mut PeerSession<'_>) {
        let _ = self.handles.send(session.handle());
    }

    fn on_cookie_echo(&mut self, _session: &mut PeerSession<'_>, _cookie: &[u8]) {}

    fn on_data(&mut self, session: &mut PeerSession<'_>, ppid: u32, payload: &[u8]) {
        session.send_data(ppid, payload).expect("echo");
    }

    fn on_closed(&mut self, reason: &CloseReason) {
        let _ = self.closed.send(reason.clone());
    }
}

/// A TCP session server of Probes on the loopback; its handles and close reasons arrive on the
/// receivers.
fn probe_server(
    options: SessionOptions,
) -> (
    rserpool_endpoint::driver::session::ServerHandle,
    mpsc::Receiver<SessionHandle>,
    mpsc::Receiver<CloseReason>,
) {
    let server = SessionServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        PeSessionConfig::new("probe"),
        options,
    )
    .expect("listening");
    let (handles_tx, handles) = mpsc::channel();
    let (closed_tx, closed) = mpsc::channel();
    let server = server
        .spawn(move |_| Probe {
            handles: handles_tx.clone(),
            closed: closed_tx.clone(),
        })
        .expect("serving");
    (server, handles, closed)
}

/// A PU session core (RFC 5352 §3.8-3.9) run by hand over a TCP connection to a PE.
struct CorePu {
    core: PuSession,
    conn: ConnId,
    stream: TcpStream,
    data: Vec<(u32, Vec<u8>)>,
    closed: bool,
}

impl CorePu {
    fn connect(address: SocketAddr) -> Self {
        let mut core = PuSession::new(PuSessionConfig::new("probe"));
        let conn = core.start(PeInfo {
            id: PeId(1),
            home_pr: PrId(1),
            registration_life: 30_000,
            transport: PeTransport::Transport {
                kind: TransportKind::Tcp,
                port: address.port(),
                addresses: vec![address.ip()],
                transport_use: rserpool_protocol::TRANSPORT_USE_DATA_PLUS_CONTROL,
            },
            policy: Policy::RoundRobin,
        });
        assert!(matches!(
            core.poll_action(),
            Some(SessionAction::Connect { .. })
        ));
        let stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        core.on_connected(conn);
        Self {
            core,
            conn,
            stream,
            data: Vec::new(),
            closed: false,
        }
    }

    fn send(&mut self, ppid: u32, payload: &[u8]) {
        self.core.send_data(ppid, payload).expect("queued");
        while let Some(action) = self.core.poll_action() {
            if let SessionAction::Transmit { transmit, .. } = action {
                self.stream
                    .write_all(&transmit.framed().unwrap())
                    .expect("sent");
            }
        }
    }

    /// Reads into the core until `done` holds (true) or `WAIT` passes (false).
    fn pump_until(&mut self, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        while !done(self) {
            if self.closed || Instant::now() >= deadline {
                return false;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => self.closed = true,
                Ok(n) => self
                    .core
                    .on_stream_bytes(self.conn, &buf[..n])
                    .expect("framed"),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => self.closed = true,
            }
            while let Some(event) = self.core.poll_event() {
                if let PuSessionEvent::Data { ppid, payload } = event {
                    self.data.push((ppid, payload));
                }
            }
        }
        true
    }

    /// Sends one message and waits for its echo.
    fn echo(&mut self, payload: &[u8]) {
        let before = self.data.len();
        self.send(7, payload);
        assert!(
            self.pump_until(|pu| pu.data.len() > before),
            "an echo of {payload:?}"
        );
        assert_eq!(self.data[before], (7, payload.to_vec()));
    }

    /// Whether the PE closes the connection within `WAIT`.
    fn closed_by_pe(&mut self) -> bool {
        self.pump_until(|pu| pu.closed) || self.closed
    }
}

/// Reads until the peer closes the connection; the time that took.
fn time_to_close(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("closed by the PE, not timed out");
    start.elapsed()
}

#[test]
fn idle_pus_are_closed_after_the_idle_timeout_and_busy_ones_kept() {
    const IDLE: Duration = Duration::from_millis(300);
    let (server, _handles, closed) = probe_server(SessionOptions {
        idle_timeout: IDLE,
        ..SessionOptions::default()
    });
    let address = server.local_addr();
    // A PU that connects and sends nothing.
    let mut silent = TcpStream::connect(address).expect("connect");
    let took = time_to_close(&mut silent);
    assert!(
        took >= IDLE,
        "closed after {took:?}, before the idle timeout"
    );
    assert_eq!(closed.recv_timeout(WAIT), Ok(CloseReason::Idle(IDLE)));
    // One that trickles a record a byte at a time: parts of a message are no activity.
    let mut trickle = TcpStream::connect(address).expect("connect");
    trickle
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let start = Instant::now();
    // A data record of 4 096 bytes (PPID 7) that would take minutes.
    let header = [0, 0, 0, 7, 0, 0, 0x10, 0];
    let mut sent = 0;
    let closed_after = loop {
        assert!(start.elapsed() < WAIT, "no close within {WAIT:?}");
        let byte = header.get(sent).copied().unwrap_or(0);
        if trickle.write_all(&[byte]).is_err() {
            break start.elapsed();
        }
        sent += 1;
        match trickle.read(&mut [0u8; 16]) {
            Ok(0) => break start.elapsed(),
            Ok(n) => panic!("{n} bytes to a PU without a card"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break start.elapsed(),
        }
    };
    assert!(closed_after >= IDLE && closed_after < WAIT);
    assert_eq!(closed.recv_timeout(WAIT), Ok(CloseReason::Idle(IDLE)));
    // A PU that sends a message more often than the timeout stays, for several timeouts.
    let mut busy = CorePu::connect(address);
    for i in 0..12u8 {
        busy.echo(&[i]);
        std::thread::sleep(IDLE / 3);
    }
    assert!(!busy.closed);
    assert_eq!(closed.try_recv(), Err(mpsc::TryRecvError::Empty));
}

#[test]
fn at_the_session_cap_further_connections_are_closed_at_once() {
    let (server, _handles, closed) = probe_server(SessionOptions {
        max_sessions: 2,
        ..SessionOptions::default()
    });
    let address = server.local_addr();
    let mut first = CorePu::connect(address);
    first.echo(b"one");
    let mut second = CorePu::connect(address);
    second.echo(b"two");
    let mut third = TcpStream::connect(address).expect("the kernel accepts");
    let took = time_to_close(&mut third);
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    assert_eq!(
        closed.recv_timeout(WAIT),
        Ok(CloseReason::TooManySessions { max: 2 })
    );
    first.echo(b"one again");
    second.echo(b"two again");
    // A session that ends makes room.
    drop(first);
    assert_eq!(closed.recv_timeout(WAIT), Ok(CloseReason::PeerClosed));
    let mut fourth = CorePu::connect(address);
    fourth.echo(b"four");
    second.echo(b"two still");
}

#[test]
fn a_handle_sends_from_other_threads_until_the_session_ends() {
    let (server, handles, closed) = probe_server(SessionOptions::default());
    let mut pu = CorePu::connect(server.local_addr());
    let handle = handles.recv_timeout(WAIT).expect("the session's handle");
    fn shareable<T: Clone + Send + Sync>(_: &T) {}
    shareable(&handle);
    assert_eq!(handle.peer_addr(), pu.stream.local_addr().unwrap());
    assert_eq!(handle.peer_names(), None, "no TLS");
    // RFC 5352 §3.8: a cookie from a background thread reaches the PU's core.
    let background = handle.clone();
    std::thread::spawn(move || background.send_cookie(b"state 1"))
        .join()
        .unwrap()
        .expect("cookie sent");
    assert!(pu.pump_until(|pu| pu.core.cookie() == Some(&b"state 1"[..])));
    // Four threads at once: every message arrives whole, each thread's in its order.
    let senders: Vec<_> = (0..4u8)
        .map(|t| {
            let h = handle.clone();
            std::thread::spawn(move || {
                for i in 0..50u8 {
                    h.send_data(100 + u32::from(t), &[t, i]).expect("data sent");
                    h.send_cookie(&[t, i]).expect("cookie sent");
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    assert!(pu.pump_until(|pu| pu.data.len() == 200));
    for t in 0..4u8 {
        let of_t: Vec<Vec<u8>> = pu
            .data
            .iter()
            .filter(|(ppid, _)| *ppid == 100 + u32::from(t))
            .map(|(_, p)| p.clone())
            .collect();
        assert_eq!(of_t, (0..50u8).map(|i| vec![t, i]).collect::<Vec<_>>());
    }
    // Callbacks and handles share the connection.
    pu.echo(b"still there");
    // Closing through the handle ends the session: the PU sees the connection close, the
    // handler the reason, every handle the end.
    handle.close();
    assert!(pu.closed_by_pe());
    assert_eq!(closed.recv_timeout(WAIT), Ok(CloseReason::Application));
    assert!(handle.is_closed());
    let error = handle.send_cookie(b"state 2").unwrap_err();
    assert!(
        matches!(&error, SessionError::Ended { reason } if reason.contains("application")),
        "{error}"
    );
    assert!(error.to_string().contains("nothing more can be sent"));
    // A PU that closes ends the session for its handles too.
    let mut pu = CorePu::connect(server.local_addr());
    let handle = handles.recv_timeout(WAIT).expect("the session's handle");
    pu.echo(b"hello");
    drop(pu);
    assert_eq!(closed.recv_timeout(WAIT), Ok(CloseReason::PeerClosed));
    assert!(matches!(
        handle.send_data(7, b"late"),
        Err(SessionError::Ended { reason }) if reason.contains("PU closed")
    ));
}

/// Echoes data after a cookie naming the PU by its TLS certificate; reports how sessions end.
struct NamedEcho {
    closed: mpsc::Sender<CloseReason>,
}

impl SessionHandler for NamedEcho {
    fn on_cookie_echo(&mut self, _session: &mut PeerSession<'_>, _cookie: &[u8]) {}

    fn on_data(&mut self, session: &mut PeerSession<'_>, ppid: u32, payload: &[u8]) {
        let names = session.peer_names().expect("a TLS session").join(",");
        session.send_cookie(names.as_bytes()).expect("cookie");
        session.send_data(ppid, payload).expect("echo");
    }

    fn on_closed(&mut self, reason: &CloseReason) {
        let _ = self.closed.send(reason.clone());
    }
}

/// A TLS handshake with the PE at `address` as a PU with `files`, then reads until the PE
/// closes: the plaintext that came, or the error that ended it.
fn raw_tls_pu(address: SocketAddr, files: &TlsFiles) -> Result<Vec<u8>, String> {
    let client = ClientTls::load(files).map_err(|e| e.to_string())?;
    let name = rserpool_net::server_name(None, address.ip()).map_err(|e| e.to_string())?;
    let mut tls = client.connect(name).map_err(|e| e.to_string())?;
    let stream = TcpStream::connect(address).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut plain =
        rserpool_net::handshake_blocking(&mut tls, &stream).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    loop {
        match (&stream).read(&mut buf) {
            Ok(0) => return Ok(plain),
            Ok(n) => {
                tls.receive(&buf[..n], &mut plain)
                    .map_err(|e| e.to_string())?;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[test]
fn sessions_run_over_tls_with_both_sides_authenticated() {
    let dir = std::env::temp_dir().join(format!("rserpool-session-tls-{}", std::process::id()));
    let pki = TestPki::new(&dir, "session-ca").unwrap();
    let pe_files = pki.issue("pe-1", &["127.0.0.1"], "pe").unwrap();
    let pu_files = pki.issue("pu-1", &["pu-1.example"], "pu").unwrap();
    let other = TestPki::new(&dir, "other-ca").unwrap();
    let stranger = TlsFiles {
        ca: pki.ca_file(),
        ..other.issue("pu-x", &["pu-x.example"], "stranger").unwrap()
    };
    let d = Daemon::start(60_000, &["tcp://127.0.0.1:0"]);
    let tcp = d.url("tcp://", false);
    let server = SessionServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        PeSessionConfig::new("tls-session"),
        SessionOptions {
            tls: Some(SessionTls::Pe(ServerTls::load(&pe_files).unwrap())),
            ..SessionOptions::default()
        },
    )
    .expect("listening");
    let address = server.local_addr().unwrap();
    let (closed_tx, closed) = mpsc::channel();
    let _server = server
        .spawn(move |_| NamedEcho {
            closed: closed_tx.clone(),
        })
        .expect("serving");
    let mut config = pe_config(&[&tcp], "tls-session", address.port());
    config.transport.transport_use = rserpool_protocol::TRANSPORT_USE_DATA_PLUS_CONTROL;
    let _pe = Pe::register(config).expect("registered");
    let pu_options = |files: &TlsFiles| SessionOptions {
        tls: Some(SessionTls::Pu(TlsOptions {
            client: ClientTls::load(files).unwrap(),
            server_name: None,
        })),
        ..SessionOptions::default()
    };
    // A PU with a certificate of the pool's CA: the session runs, the PE knows the PU's names.
    let mut session = Session::open(
        pool_user(&tcp),
        PuSessionConfig::new("tls-session"),
        pu_options(&pu_files),
    )
    .expect("session opened over TLS");
    for _ in 0..3 {
        session.send(7, b"sealed").unwrap();
        assert_eq!(
            session.recv(WAIT).unwrap(),
            Some(Received::Data {
                ppid: 7,
                payload: b"sealed".to_vec()
            })
        );
    }
    assert_eq!(session.cookie(), Some(&b"pu-1,pu-1.example"[..]));
    session.close();
    assert_eq!(closed.recv_timeout(WAIT), Ok(CloseReason::PeerClosed));
    // A PU whose certificate another CA signed, and one without a certificate, are refused.
    let no_certificate = TlsFiles {
        ca: pki.ca_file(),
        ..TlsFiles::default()
    };
    for files in [&stranger, &no_certificate] {
        let got = raw_tls_pu(address, files);
        assert!(
            got.as_ref().is_err_and(|e| e.contains("alert")) || got == Ok(Vec::new()),
            "{got:?}"
        );
        match closed.recv_timeout(WAIT) {
            Ok(CloseReason::Failed(e)) => assert!(e.contains("TLS handshake"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
    // A plain TCP PU gets nothing.
    let mut plain = CorePu::connect(address);
    plain.send(7, b"in the clear");
    assert!(plain.closed_by_pe());
    assert!(plain.data.is_empty());
    assert!(matches!(
        closed.recv_timeout(WAIT),
        Ok(CloseReason::Failed(_))
    ));
    // A PU that does not trust the PE's CA does not talk to it.
    let distrusting = TlsFiles {
        ca: other.ca_file(),
        ..pu_files.clone()
    };
    assert!(
        Session::open(
            pool_user(&tcp),
            PuSessionConfig::new("tls-session"),
            pu_options(&distrusting),
        )
        .is_err()
    );
    // TLS does not run over SCTP; a server needs the PE's side of TLS.
    let sctp = SessionOptions {
        transport: Transport::Sctp,
        ..pu_options(&pu_files)
    };
    let refused = SessionServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        PeSessionConfig::new("tls-session"),
        sctp,
    )
    .unwrap_err();
    assert!(refused.to_string().contains("not sctp://"), "{refused}");
    let refused = SessionServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        PeSessionConfig::new("tls-session"),
        pu_options(&pu_files),
    )
    .unwrap_err();
    assert!(refused.to_string().contains("SessionTls::Pe"), "{refused}");
    let _ = std::fs::remove_dir_all(&dir);
}
