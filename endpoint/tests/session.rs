//! The session layer end to end over TCP (RFC 5352 §3.8-3.9; checklist EP-09, EP-10, PU-07):
//! the real `rserpool-registrar` on its default profile, two counter PEs (the `counter_pe`
//! example binary that `cargo test` builds, `target/<profile>/examples/counter_pe`), a PU
//! counting through a session; then SIGKILL of the PE it talks to, and the count goes on at the
//! other PE from the cookie.

mod common;

#[allow(dead_code)] // Only the cookie helpers are used here.
#[path = "../examples/counter_pe.rs"]
mod counter_pe;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use rserpool_endpoint::driver::session::{PeerSession, Received, SessionHandler, SessionOptions};
use rserpool_endpoint::driver::{Pe, Session, SessionServer};
use rserpool_endpoint::session::{PeSessionConfig, PuSessionConfig};
use rserpool_net::Transport;
use rserpool_protocol::PeId;

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
        "{} is missing: run `cargo build -p rserpool-endpoint --examples` (a plain `cargo test` \
         builds it too) before this test",
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
