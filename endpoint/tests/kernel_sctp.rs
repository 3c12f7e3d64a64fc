//! The endpoint library and the `rserpool` command line over kernel SCTP against the real
//! `rserpool-registrar` daemon: PEs of both generations register over SCTP, pool users resolve
//! them over SCTP and TCP, keep-alives are answered, dropping a PE deregisters it, and a message
//! that follows one the registrar does not answer is not held back by Nagle.
//!
//! The build host has no kernel SCTP, so this target is `test = false` (a plain `cargo test` does
//! not run it) and CI runs it in user-mode Linux:
//! `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/uml-run.sh cargo test -p rserpool-endpoint --test kernel_sctp`.
//! Without kernel SCTP every test fails with the reason; none skips.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rserpool_endpoint::driver::{Pe, Pu};
use rserpool_endpoint::pe::PeState;
use rserpool_endpoint::{Error, StreamTransport, pu};
use rserpool_protocol::{PeId, Policy};
use socket2::{Domain, Protocol, Socket, Type};

/// How long anything may take; UML's syscalls cost about 50 µs.
const WAIT: Duration = Duration::from_secs(20);

/// Fails the test with the reason when the kernel cannot open an SCTP socket.
fn need_sctp() {
    if let Err(e) = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::SCTP)) {
        panic!("these tests need kernel SCTP: socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP): {e}");
    }
}

/// The daemon with keep-alives every `keep_alive_ms` on SCTP and TCP listeners of the RFC
/// generation and an SCTP listener of the NG generation.
fn daemon(keep_alive_ms: u64) -> Daemon {
    need_sctp();
    Daemon::start(
        keep_alive_ms,
        &[
            "sctp://127.0.0.1:0",
            "tcp://127.0.0.1:0",
            "sctp://127.0.0.1:0?generation=ng",
        ],
    )
}

#[test]
fn kernel_has_sctp() {
    need_sctp();
}

#[test]
fn pes_register_over_sctp_and_pus_resolve_them_over_sctp_and_tcp() {
    let d = daemon(60_000);
    let sctp = d.url("sctp://", false);
    let tcp = d.url("tcp://", false);
    let mut c = pe_config(&[&sctp], "echo", 7001);
    c.policy = Policy::LeastUsed { load: 10 };
    let over_sctp = Pe::register(c).expect("registered over SCTP");
    assert_eq!(over_sctp.state(), PeState::Registered);
    let registrar = over_sctp.registrar().expect("registered");
    assert_eq!(registrar.transport, StreamTransport::Sctp);
    assert_eq!(registrar, url(&sctp).registrar);
    let mut c = pe_config(&[&tcp], "echo", 7002);
    c.policy = Policy::LeastUsed { load: 20 };
    let over_tcp = Pe::register(c).expect("registered over TCP");
    let mut expected = vec![over_sctp.pe_id().0, over_tcp.pe_id().0];
    expected.sort_unstable();
    for registrar in [&sctp, &tcp] {
        let mut pu = pool_user(registrar);
        let pes = pu.resolve_items("echo", Some(10)).expect("resolved");
        assert_eq!(ids(&pes), expected, "at {registrar}");
        let first = &pes[0];
        assert_eq!(first.id, over_sctp.pe_id(), "least used first");
        assert_eq!(first.port(), 7001);
        assert_eq!(
            first.addresses(),
            ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()],
            "the SCTP association's local address"
        );
        assert_eq!(first.policy, Policy::LeastUsed { load: 10 });
        assert_eq!(
            pu.registrar().map(|r| r.transport),
            Some(url(registrar).registrar.transport)
        );
    }
    assert_eq!(
        pool_user(&sctp).resolve("nothing"),
        Err(Error::UnknownPool {
            pool_handle: "nothing".into()
        })
    );
    // A load update travels by re-registration over the association.
    over_sctp.set_policy(Policy::LeastUsed { load: 30 });
    let mut pu = pool_user(&sctp);
    assert!(eventually(WAIT, || {
        pu.resolve_items("echo", Some(10))
            .is_ok_and(|p| p[0].id == over_tcp.pe_id())
    }));
    assert_eq!(
        d.metric("rserpool_registrations_total{result=\"accepted\"}"),
        3.0
    );
}

#[test]
fn the_ng_generation_registers_64_bit_pe_ids_over_sctp() {
    let d = daemon(60_000);
    let ng = d.url("sctp://", true);
    let mut c = pe_config(&[&ng], "wide", 7);
    c.pe_id = Some(PeId(0x0123_4567_89ab_cdef));
    let wide = Pe::register(c).expect("registered with a 64-bit ID");
    let pes = pool_user(&ng)
        .resolve("wide")
        .expect("resolved over NG SCTP");
    assert_eq!(ids(&pes), [0x0123_4567_89ab_cdef]);
    assert_eq!(wide.deregister(), Ok(()));
    assert!(matches!(
        pool_user(&ng).resolve("wide"),
        Err(Error::UnknownPool { .. })
    ));
}

#[test]
fn keep_alives_over_sctp_are_answered_and_dropping_the_pe_deregisters_it() {
    let d = daemon(300);
    let sctp = d.url("sctp://", false);
    let pe = Pe::register(pe_config(&[&sctp], "ka", 7)).expect("registered");
    assert!(
        eventually(WAIT, || d.metric("rserpool_keep_alive_acks_total") >= 4.0),
        "keep-alives every 300 ms are acked"
    );
    assert_eq!(
        d.metric("rserpool_pe_removals_total{reason=\"keep_alive_timeout\"}"),
        0.0
    );
    let pes = pool_user(&sctp).resolve("ka").expect("still registered");
    assert_eq!(ids(&pes), [pe.pe_id().0]);
    assert_eq!(pe.home_pr().map(|p| p.0), Some(pes[0].home_pr.0));
    drop(pe);
    assert!(matches!(
        pool_user(&sctp).resolve("ka"),
        Err(Error::UnknownPool { .. })
    ));
    assert_eq!(
        d.metric("rserpool_pe_removals_total{reason=\"deregistered\"}"),
        1.0,
        "removed by ASAP_DEREGISTRATION, not by the closed association"
    );
}

/// An ENDPOINT_UNREACHABLE gets no answer, so without SCTP_NODELAY the resolution right after it
/// waits for the registrar's delayed SACK (200 ms). The I bit on every message makes the
/// registrar acknowledge at once.
#[test]
fn a_request_after_an_unanswered_report_is_not_held_back() {
    need_sctp();
    let config = std::env::temp_dir().join(format!(
        "rserpool-endpoint-sctp-{}.toml",
        std::process::id()
    ));
    std::fs::write(&config, "[timers]\nmax_bad_pe_reports = 1000\n").unwrap();
    let args: Vec<String> = [
        "--config",
        &config.display().to_string(),
        "--workers",
        "1",
        "--metrics",
        "127.0.0.1:0",
        "--asap",
        "sctp://127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let d = Daemon::with_args(&args, 1);
    let sctp = d.url("sctp://", false);
    let pe = Pe::register(pe_config(&[&sctp], "nagle", 7)).expect("registered");
    let u = url(&sctp);
    let mut c = pu::Config::new(vec![u.registrar]);
    c.cache_stale = 0;
    c.report_interval = 0;
    c.max_reports_per_second = 1000;
    let mut pu = Pu::new(c);
    let mut fastest = Duration::MAX;
    for _ in 0..5 {
        assert_eq!(ids(&pu.resolve("nagle").expect("resolved")), [pe.pe_id().0]);
        assert_eq!(pu.pe_failed("nagle", pe.pe_id()), None, "the only PE");
        let started = Instant::now();
        let pes = pu.resolve("nagle").expect("resolved after the report");
        fastest = fastest.min(started.elapsed());
        assert_eq!(ids(&pes), [pe.pe_id().0]);
    }
    assert!(
        eventually(WAIT, || d.metric("rserpool_unreachable_reports_total")
            == 5.0),
        "every report reached the registrar"
    );
    assert!(
        fastest < Duration::from_millis(100),
        "the fastest resolution after a report took {fastest:?}: held back for a delayed SACK"
    );
    let _ = std::fs::remove_file(config);
}

#[test]
fn the_command_line_resolves_over_sctp() {
    let d = daemon(60_000);
    let sctp = d.url("sctp://", false);
    let pe = Pe::register(pe_config(&[&sctp], "cli", 7)).expect("registered");
    let o = Command::new(env!("CARGO_BIN_EXE_rserpool"))
        .args(["resolve", "--registrar", &sctp, "--pool", "cli", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("run rserpool");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON output");
    let listed: Vec<u64> = v
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|p| p["id"].as_u64().expect("numeric id"))
        .collect();
    assert_eq!(listed, [pe.pe_id().0]);
}

/// A non-loopback address of the guest for RSPLIB's tools, which refuse loopback addresses in
/// registrations; set up once by [`with_test_net`].
const TEST_NET: &str = "192.0.2.1";

/// Adds a dummy interface with [`TEST_NET`] (user-mode Linux only: the guest is ours).
fn with_test_net() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        need_sctp();
        let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        assert!(
            cpu.contains("User Mode Linux"),
            "this test adds a dummy interface with {TEST_NET}: run it in user-mode Linux \
             (ci/uml-run.sh), not on this machine"
        );
        let address = format!("{TEST_NET}/24");
        let steps: [&[&str]; 3] = [
            &["link", "add", "rsp0", "type", "dummy"],
            &["addr", "add", &address, "dev", "rsp0"],
            &["link", "set", "rsp0", "up"],
        ];
        for args in steps {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
}

/// RSPLIB's `rspregistrar` as a child process, killed on drop.
struct RsplibRegistrar(std::process::Child);

impl Drop for RsplibRegistrar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// RSPLIB's registrar never sets the A bit (RFC 5352 §2.2.6 lets a PR decline a subscription):
/// a pool user that subscribes through it learns so from the first answer, polls at its
/// interval instead, and still sees PEs come and go (checklist: subscriptions fall back to
/// polling against a PR that does not push).
#[test]
fn a_subscription_at_rsplibs_registrar_falls_back_to_polling() {
    use rserpool_endpoint::pu::{PoolChange, SubscriptionMode};
    with_test_net();
    let asap = 24_001;
    let child = Command::new("rspregistrar")
        .args([
            format!("-asap={TEST_NET}:{asap}"),
            format!("-enrp={TEST_NET}:24002"),
            "-identifier=35".to_owned(),
            "-logcolor=off".to_owned(),
            "-loglevel=1".to_owned(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start rspregistrar (Debian's rsplib-registrar): {e}"));
    let _r = RsplibRegistrar(child);
    let registrar = format!("sctp://{TEST_NET}:{asap}");
    let mut first = None;
    let mut error = None;
    assert!(
        eventually(WAIT, || {
            match Pe::register(pe_config(&[&registrar], "fallback", 7101)) {
                Ok(pe) => first = Some(pe),
                Err(e) => error = Some(e),
            }
            first.is_some()
        }),
        "no registration at rspregistrar: {error:?}"
    );
    let first = first.unwrap();
    let mut c = pu::Config::new(vec![url(&registrar).registrar]);
    c.cache_stale = 0;
    c.poll_interval = 200;
    let mut pu = Pu::new(c);
    let mut subscription = pu.subscribe(b"fallback", None).expect("subscribed");
    // Collects changes until `done` says so or WAIT passes.
    let mut collect = |done: &dyn Fn(&[PoolChange]) -> bool| {
        let mut changes = Vec::new();
        let deadline = Instant::now() + WAIT;
        while !done(&changes) && Instant::now() < deadline {
            if let Some(change) = subscription.next_change(Duration::from_millis(200)) {
                changes.push(change);
            }
        }
        changes
    };
    let added = |changes: &[PoolChange], id: PeId| {
        changes.iter().any(
            |c| matches!(c, PoolChange::Elements { added, .. } if added.iter().any(|p| p.id == id)),
        )
    };
    let start = collect(&|c| added(c, first.pe_id()));
    assert!(
        start.contains(&PoolChange::Mode(SubscriptionMode::Polling)),
        "{start:?}"
    );
    assert!(added(&start, first.pe_id()), "{start:?}");
    let second = Pe::register(pe_config(&[&registrar], "fallback", 7102)).expect("second PE");
    let later = collect(&|c| added(c, second.pe_id()));
    assert!(added(&later, second.pe_id()), "{later:?}");
    let id = second.pe_id();
    second.deregister().expect("deregistered");
    let removed = collect(&|c| {
        c.iter().any(|c| {
            matches!(c, PoolChange::Elements { removed, .. } if removed.iter().any(|p| p.id == id))
        })
    });
    assert!(!removed.is_empty(), "no removal seen by polling");
    assert_eq!(subscription.mode(), Some(SubscriptionMode::Polling));
}

// ---- The session layer over kernel SCTP (RFC 5352 §3.8-3.9: PPID 11 on the data association) --

use std::path::PathBuf;

use rserpool_endpoint::driver::Session;
use rserpool_endpoint::driver::session::{Received, SessionOptions};
use rserpool_endpoint::session::PuSessionConfig;
use rserpool_net::{SctpClient, SctpListener, Transport, sctp_nodelay};

/// Sessions over kernel SCTP.
fn sctp_session_options() -> SessionOptions {
    SessionOptions {
        transport: Transport::Sctp,
        connect_timeout: WAIT,
        send_timeout: WAIT,
        ..SessionOptions::default()
    }
}

/// Whether the descriptor `fd` of this process is close-on-exec (`/proc/self/fdinfo`).
fn close_on_exec(fd: std::os::fd::RawFd) -> bool {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .expect("a flags line");
    flags & 0o2_000_000 != 0
}

/// `rserpool-net`'s one-to-one SCTP listener: non-blocking and close-on-exec with SCTP_NODELAY;
/// every accepted association blocking, close-on-exec, with SCTP_NODELAY, carrying each message
/// whole with its PPID each way (the control channel's 11 beside data), a message longer than
/// the buffer in marked parts, and the peer's shutdown as the end.
#[test]
fn the_one_to_one_sctp_listener_accepts_associations_with_nodelay() {
    use std::os::fd::AsRawFd;
    need_sctp();
    let listener = SctpListener::bind("127.0.0.1:0".parse().unwrap(), 8).expect("listening");
    assert!(listener.socket().nonblocking().unwrap());
    assert!(sctp_nodelay(&listener).unwrap());
    assert!(close_on_exec(listener.as_raw_fd()));
    let address = listener.local_addr().unwrap();
    assert_ne!(address.port(), 0);
    let mut pairs = Vec::new();
    for _ in 0..3 {
        let client = SctpClient::connect(address, None, WAIT).expect("associated");
        let mut accepted = None;
        assert!(eventually(WAIT, || {
            accepted = listener.accept().ok();
            accepted.is_some()
        }));
        let (server, peer) = accepted.unwrap();
        assert_eq!(
            Some(peer),
            client.socket().local_addr().unwrap().as_socket(),
            "the peer's address"
        );
        assert!(sctp_nodelay(&server).unwrap(), "SCTP_NODELAY accepted");
        assert!(!server.socket().nonblocking().unwrap());
        assert!(close_on_exec(server.as_raw_fd()));
        pairs.push((client, server));
    }
    for (i, (client, server)) in pairs.iter().enumerate() {
        let mut buf = [0u8; 256];
        client.send(11, 0, b"control").unwrap();
        client.send(i as u32 + 100, 3, b"data").unwrap();
        assert_eq!(server.recv(&mut buf).unwrap(), (7, 11));
        assert_eq!(&buf[..7], b"control");
        assert_eq!(server.recv(&mut buf).unwrap(), (4, i as u32 + 100));
        let long = vec![i as u8; 1000];
        server.send(0x4354_4e31, 0, &long).unwrap();
        let mut got = Vec::new();
        loop {
            let part = client.recv_part(&mut buf).unwrap().expect("a message");
            assert_eq!(part.ppid, 0x4354_4e31);
            got.extend_from_slice(&buf[..part.len]);
            if part.complete {
                break;
            }
            assert_eq!(part.len, buf.len());
        }
        assert_eq!(got, long);
    }
    let (client, server) = pairs.pop().unwrap();
    drop(client);
    let mut buf = [0u8; 16];
    assert_eq!(server.recv_part(&mut buf).unwrap(), None, "shut down");
}

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
        "{} is missing: run `cargo build -p rserpool-endpoint --examples` before this test",
        binary.display()
    );
    binary
}

/// A counter PE (the example) in a child process, killed on drop.
struct CounterPe {
    child: std::process::Child,
    id: PeId,
    lines: Lines,
}

impl Drop for CounterPe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a counter PE that registers at `registrar` and serves sessions on `listen`.
fn spawn_counter_pe(registrar: &str, listen: &str) -> CounterPe {
    let mut child = Command::new(counter_pe_binary())
        .args([
            "--registrar",
            registrar,
            "--pool",
            "counter",
            "--listen",
            listen,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a counter PE");
    let mut lines = Lines::new(child.stdout.take().expect("stdout"));
    let line = lines.wait_for(WAIT, |l| l.starts_with("pe ") && l.contains(" port "));
    let id = line
        .strip_prefix("pe ")
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .map(PeId)
        .expect("pe <id> port <port>");
    CounterPe { child, id, lines }
}

/// The counter's application PPID ("CTN1").
const COUNTER_PPID: u32 = 0x4354_4e31;

/// Adds `step` through the session, returns the total; repeats the request after a failover and
/// records it.
fn add(session: &mut Session, step: u64, failovers: &mut Vec<(PeId, PeId)>) -> u64 {
    session
        .send(COUNTER_PPID, &step.to_be_bytes())
        .expect("send");
    loop {
        match session.recv(WAIT).expect("receive") {
            Some(Received::Data { ppid, payload }) => {
                assert_eq!(ppid, COUNTER_PPID);
                return u64::from_be_bytes(payload.try_into().expect("an 8-byte total"));
            }
            Some(Received::FailedOver { from, to }) => {
                failovers.push((from.id, to.id));
                session
                    .send(COUNTER_PPID, &step.to_be_bytes())
                    .expect("resend");
            }
            None => panic!("no total within {WAIT:?}"),
        }
    }
}

/// RFC 5352 §3.8-3.9 over kernel SCTP end to end: two counter PEs (the example binary) listen
/// on SCTP and register their SCTP transport over an SCTP association with the registrar; a PU
/// session over SCTP gets the business card and the signed cookies on PPID 11 of the data
/// association; SIGKILL of its PE, and the next PE gets the cookie echo first and goes on from
/// the total.
#[test]
fn an_sctp_session_survives_a_pe_kill_through_the_cookie() {
    let d = daemon(60_000);
    let sctp = d.url("sctp://", false);
    let mut pes = vec![
        spawn_counter_pe(&sctp, "sctp://127.0.0.1:0"),
        spawn_counter_pe(&sctp, "sctp://127.0.0.1:0"),
    ];
    let mut resolver = pool_user(&sctp);
    let mut listed = Vec::new();
    assert!(
        eventually(WAIT, || {
            listed = resolver
                .resolve_items("counter", Some(10))
                .unwrap_or_default();
            listed.len() == 2
        }),
        "both counter PEs registered"
    );
    for pe in &listed {
        assert!(
            matches!(
                pe.transport,
                rserpool_endpoint::PeTransport::Transport {
                    kind: rserpool_protocol::TransportKind::Sctp,
                    ..
                }
            ),
            "{pe:?} registered its SCTP listener"
        );
    }
    let mut session = Session::open(
        pool_user(&sctp),
        PuSessionConfig::new("counter"),
        sctp_session_options(),
    )
    .expect("session opened over SCTP");
    let mut failovers = Vec::new();
    const N: u64 = 5;
    for i in 1..=N {
        assert_eq!(add(&mut session, 1, &mut failovers), i);
    }
    let first = session.current_pe().expect("a PE").id;
    let other = pes.iter().find(|p| p.id != first).expect("the other PE").id;
    let card: Vec<PeId> = session.business_card().iter().map(|p| p.id).collect();
    assert_eq!(card, [other], "the business card names the other PE");
    let cookie = session.cookie().expect("a cookie").to_vec();
    assert_eq!(cookie.len(), 4 + 8 + 32, "CNT1, the total, HMAC-SHA256");
    assert_eq!(
        &cookie[..12],
        &[&b"CNT1"[..], &N.to_be_bytes()].concat()[..]
    );
    let i = pes.iter().position(|p| p.id == first).expect("ours");
    let mut victim = pes.remove(i);
    victim.child.kill().expect("SIGKILL the PE");
    victim.child.wait().expect("reaped");
    for i in N + 1..=2 * N {
        assert_eq!(add(&mut session, 1, &mut failovers), i);
    }
    assert_eq!(failovers, [(first, other)]);
    assert_eq!(session.current_pe().map(|p| p.id), Some(other));
    pes[0]
        .lines
        .wait_for(WAIT, |l| l == format!("restored {N}"));
    assert_eq!(session.dropped(), 0);
}

/// An RSPLIB tool (Debian's rsplib-tools) as a child process with its output collected; killed
/// on drop.
struct RsplibTool {
    name: &'static str,
    child: std::process::Child,
    lines: Lines,
}

impl RsplibTool {
    fn start(name: &'static str, args: &[String]) -> Self {
        let mut child = Command::new(name)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} (Debian's rsplib-tools): {e}"));
        let lines = Lines::new(child.stdout.take().expect("stdout"));
        Self { name, child, lines }
    }
}

impl RsplibTool {
    /// Stops the tool and returns what it printed, each line under its name.
    fn output(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let lines = std::mem::replace(&mut self.lines, Lines::new(std::io::empty()));
        let name = self.name;
        lines
            .rest()
            .into_iter()
            .map(|l| format!("{name}: {l}"))
            .collect()
    }
}

impl Drop for RsplibTool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our registrar on an SCTP listener at [`TEST_NET`] (RSPLIB's PEs register their non-loopback
/// addresses) and `count` `rspserver`s of `service` in `pool` registered there.
fn rspservers(service: &[&str], pool: &str, count: usize) -> (Daemon, String, Vec<RsplibTool>) {
    with_test_net();
    let d = Daemon::start(60_000, &[&format!("sctp://{TEST_NET}:0")]);
    let sctp = d.url("sctp://", false);
    let registrar = sctp.trim_start_matches("sctp://").to_owned();
    let mut args: Vec<String> = service.iter().map(|s| s.to_string()).collect();
    args.extend([
        format!("-registrar={registrar}"),
        format!("-poolhandle={pool}"),
        "-asapannounce=off".to_owned(),
        "-logcolor=off".to_owned(),
        "-loglevel=2".to_owned(),
        "-rereginterval=1000".to_owned(),
    ]);
    let tools: Vec<RsplibTool> = (0..count)
        .map(|_| RsplibTool::start("rspserver", &args))
        .collect();
    let mut resolver = pool_user(&sctp);
    let mut found = Vec::new();
    let registered = eventually(WAIT, || {
        found = resolver.resolve_items(pool, Some(10)).unwrap_or_default();
        found.len() == count
    });
    if !registered {
        let output: Vec<String> = tools.into_iter().flat_map(RsplibTool::output).collect();
        panic!(
            "{count} rspserver {service:?} did not register at {sctp}: {found:?}; they \
             printed:\n{}",
            output.join("\n")
        );
    }
    (d, sctp, tools)
}

/// Our PU session over SCTP with RSPLIB's `rspserver -echo`: data comes back on its PPID; the
/// echo service sends no cookie and no business card, and nothing we drop.
#[test]
fn an_sctp_session_talks_to_rsplibs_echo_server() {
    let (_d, sctp, _servers) = rspservers(&["-echo"], "SessionEcho", 1);
    let mut session = Session::open(
        pool_user(&sctp),
        PuSessionConfig::new("SessionEcho"),
        sctp_session_options(),
    )
    .expect("session opened with rspserver");
    assert_eq!(
        session
            .current_pe()
            .and_then(|p| p.addresses().first().copied()),
        Some(TEST_NET.parse().unwrap())
    );
    for (ppid, payload) in [
        (0u32, &b"hello RSPLIB"[..]),
        (0x1234_5678, b"second"),
        (7, &[0u8; 3000][..]),
    ] {
        session.send(ppid, payload).expect("send");
        match session.recv(WAIT).expect("receive") {
            Some(Received::Data {
                ppid: p,
                payload: echoed,
            }) => {
                assert_eq!((p, echoed.as_slice()), (ppid, payload), "echoed as sent");
            }
            other => panic!("no echo from rspserver: {other:?}"),
        }
    }
    assert_eq!(session.cookie(), None, "the echo service sends no cookie");
    assert!(
        session.business_card().is_empty(),
        "RSPLIB sends no business card"
    );
    assert_eq!(session.dropped(), 0);
}

/// RSPLIB's ping-pong service (`rspserver -pingpong`, wire layout from RSPLIB's
/// `pingpongpackets.h`): Ping = type 1, flags, 16-bit length of the whole message, 64-bit message
/// number, data; Pong = type 2, flags, length, the ping's message number, the server's 64-bit
/// reply number, the data. All big-endian.
fn ping(message_no: u64, data: &[u8]) -> Vec<u8> {
    let mut m = vec![1, 0];
    m.extend_from_slice(&u16::try_from(12 + data.len()).unwrap().to_be_bytes());
    m.extend_from_slice(&message_no.to_be_bytes());
    m.extend_from_slice(data);
    m
}

/// A pong's message number, reply number and data.
fn pong(m: &[u8]) -> (u64, u64, Vec<u8>) {
    assert!(m.len() >= 20 && m[0] == 2, "not a pong: {m:?}");
    assert_eq!(usize::from(u16::from_be_bytes([m[2], m[3]])), m.len());
    let message_no = u64::from_be_bytes(m[4..12].try_into().unwrap());
    let reply_no = u64::from_be_bytes(m[12..20].try_into().unwrap());
    (message_no, reply_no, m[20..].to_vec())
}

/// RSPLIB's ping-pong cookie: "<PP-TD1>" and the next reply number (64 bits, big-endian).
fn pingpong_cookie(next_reply: u64) -> Vec<u8> {
    [&b"<PP-TD1>"[..], &next_reply.to_be_bytes()].concat()
}

/// The PPIDs RSPLIB's ping-pong service has used: 33 (now) and 0x29097602 (before).
const PINGPONG_PPIDS: [u32; 2] = [33, 0x2909_7602];

/// Our PU session with two `rspserver -pingpong -pppfailureafter=3`: each pong is followed by
/// RSPLIB's ASAP_COOKIE, which we keep; after the third pong the server drops the session, we
/// fail over to the other rspserver and echo the latest cookie as the first message; the other
/// server's reply numbers go on from it.
#[test]
fn an_sctp_session_fails_over_between_rsplib_pingpong_servers_with_their_cookie() {
    let (_d, sctp, _servers) =
        rspservers(&["-pingpong", "-pppfailureafter=3"], "SessionPingPong", 2);
    let mut session = Session::open(
        pool_user(&sctp),
        PuSessionConfig::new("SessionPingPong"),
        sctp_session_options(),
    )
    .expect("session opened with rspserver");
    let first = session.current_pe().expect("a PE").id;
    let mut failovers = Vec::new();
    let mut replies = Vec::new();
    for message_no in 1..=5u64 {
        let data = format!("ping {message_no}");
        session
            .send(PINGPONG_PPIDS[0], &ping(message_no, data.as_bytes()))
            .expect("send");
        let (ppid, payload) = loop {
            match session.recv(WAIT).expect("receive") {
                Some(Received::Data { ppid, payload }) => break (ppid, payload),
                Some(Received::FailedOver { from, to }) => {
                    failovers.push((message_no, from.id, to.id));
                    session
                        .send(PINGPONG_PPIDS[0], &ping(message_no, data.as_bytes()))
                        .expect("resend");
                }
                None => panic!("no pong for message {message_no} within {WAIT:?}"),
            }
        };
        assert!(PINGPONG_PPIDS.contains(&ppid), "pong with PPID {ppid:#x}");
        let (no, reply_no, echoed) = pong(&payload);
        assert_eq!((no, echoed.as_slice()), (message_no, data.as_bytes()));
        replies.push(reply_no);
        eprintln!(
            "pong {message_no}: PPID {ppid:#x}, reply {reply_no} from PE {}; cookie {:?}",
            session.current_pe().map_or(0, |p| p.id.0),
            session.cookie().map(|c| c.escape_ascii().to_string())
        );
        // The cookie after each pong holds the next reply number (the server may drop the
        // session meanwhile: the failover is then already made for the next ping).
        assert!(
            eventually(WAIT, || {
                match session.recv(Duration::from_millis(10)) {
                    Ok(Some(Received::FailedOver { from, to })) => {
                        failovers.push((message_no + 1, from.id, to.id));
                    }
                    Ok(None) => {}
                    other => panic!("between pongs: {other:?}"),
                }
                session.cookie() == Some(&pingpong_cookie(reply_no + 1)[..])
            }),
            "RSPLIB's cookie after reply {reply_no}: {:?}",
            session.cookie()
        );
    }
    assert_eq!(
        replies,
        [1, 2, 3, 4, 5],
        "the reply numbers go on from the cookie"
    );
    let other = session.current_pe().expect("a PE").id;
    assert_ne!(other, first);
    assert_eq!(
        failovers,
        [(4, first, other)],
        "one failover, at the fourth ping"
    );
    assert!(
        session.business_card().is_empty(),
        "RSPLIB sends no business card"
    );
    assert_eq!(session.dropped(), 0);
}

/// What our echo PEs saw of RSPLIB's pool user, shared with the test.
#[derive(Default)]
struct Seen {
    /// (PE port, cookie) of each cookie echo.
    cookie_echoes: Vec<(u16, Vec<u8>)>,
    /// (PE port, message) of each message.
    data: Vec<(u16, Vec<u8>)>,
    /// Business cards RSPLIB's PU sent.
    cards: usize,
}

/// Our echo PE for RSPLIB's `rspterminal`: sends a business card naming the pool's PEs, echoes
/// each message on its PPID after a cookie naming the PE and the count, and ends the session
/// after a message starting "close now".
struct EchoForRsplib {
    port: u16,
    count: u64,
    card: Vec<rserpool_endpoint::PeInfo>,
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
}

impl rserpool_endpoint::driver::session::SessionHandler for EchoForRsplib {
    fn business_card(&mut self) -> Vec<rserpool_endpoint::PeInfo> {
        self.card.clone()
    }

    fn on_cookie_echo(
        &mut self,
        _session: &mut rserpool_endpoint::driver::session::PeerSession<'_>,
        cookie: &[u8],
    ) {
        let seen = &mut self.seen.lock().unwrap().cookie_echoes;
        seen.push((self.port, cookie.to_vec()));
    }

    fn on_data(
        &mut self,
        session: &mut rserpool_endpoint::driver::session::PeerSession<'_>,
        ppid: u32,
        payload: &[u8],
    ) {
        self.count += 1;
        let seen = &mut self.seen.lock().unwrap().data;
        seen.push((self.port, payload.to_vec()));
        let cookie = format!("port {} count {}", self.port, self.count);
        session.send_cookie(cookie.as_bytes()).expect("cookie");
        session.send_data(ppid, payload).expect("echo");
        if payload.starts_with(b"close now") {
            session.close();
        }
    }

    fn on_business_card(
        &mut self,
        _session: &mut rserpool_endpoint::driver::session::PeerSession<'_>,
        _pool_elements: &[rserpool_endpoint::PeInfo],
    ) {
        self.seen.lock().unwrap().cards += 1;
    }
}

/// RSPLIB's pool user (`rspterminal`) with two of our PEs serving sessions over SCTP: it takes
/// our business card without complaint, keeps our cookies, and when our PE ends the session it
/// fails over to a PE of the pool and echoes the latest cookie as its first message there (RFC
/// 5352 §3.8), which our PE's `on_cookie_echo` receives.
#[test]
fn rsplibs_terminal_fails_over_between_our_sctp_pes_with_our_cookie() {
    use rserpool_endpoint::driver::SessionServer;
    use rserpool_endpoint::session::PeSessionConfig;
    use std::io::Write as _;
    use std::sync::{Arc, Mutex};
    with_test_net();
    let d = Daemon::start(60_000, &[&format!("sctp://{TEST_NET}:0")]);
    let sctp = d.url("sctp://", false);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut servers = Vec::new();
    let mut pes = Vec::new();
    for _ in 0..2 {
        let server = SessionServer::bind(
            format!("{TEST_NET}:0").parse().unwrap(),
            PeSessionConfig::new("TermPool"),
            sctp_session_options(),
        )
        .expect("listening on SCTP");
        let port = server.local_addr().unwrap().port();
        let mut c = pe_config(&[&sctp], "TermPool", port);
        c.transport.kind = rserpool_protocol::TransportKind::Sctp;
        c.transport.addresses = vec![TEST_NET.parse().unwrap()];
        c.transport.transport_use = rserpool_protocol::TRANSPORT_USE_DATA_PLUS_CONTROL;
        pes.push(Pe::register(c).expect("registered"));
        servers.push((server, port));
    }
    // Each PE's card names the pool's PEs, the other first.
    let all = pool_user(&sctp)
        .resolve_items("TermPool", Some(10))
        .expect("both registered");
    assert_eq!(all.len(), 2);
    let mut handles = Vec::new();
    for (server, port) in servers {
        let mut card = all.clone();
        card.sort_by_key(|p| p.port() == port);
        let seen = Arc::clone(&seen);
        handles.push(
            server
                .spawn(move |_| EchoForRsplib {
                    port,
                    count: 0,
                    card: card.clone(),
                    seen: Arc::clone(&seen),
                })
                .expect("serving"),
        );
    }
    let registrar = sctp.trim_start_matches("sctp://");
    let mut terminal = RsplibTool::start(
        "rspterminal",
        &[
            format!("-registrar={registrar}"),
            "-poolhandle=TermPool".to_owned(),
            "-asapannounce=off".to_owned(),
            "-logcolor=off".to_owned(),
            "-loglevel=3".to_owned(),
        ],
    );
    let mut stdin = terminal.child.stdin.take().expect("stdin");
    let out = &mut terminal.lines;
    writeln!(stdin, "hello from RSPLIB").unwrap();
    out.wait_for(WAIT, |l| l.contains("hello from RSPLIB"));
    writeln!(stdin, "close now").unwrap();
    out.wait_for(WAIT, |l| l.contains("close now"));
    let (first, latest) = {
        let s = seen.lock().unwrap();
        let first = s.data.first().expect("data").0;
        (first, format!("port {first} count 2").into_bytes())
    };
    // The session is gone; RSPLIB fails over as it sends the next line (which may be lost).
    let mut answered = false;
    for i in 0..20 {
        writeln!(stdin, "after the failure {i}").unwrap();
        if eventually(Duration::from_millis(500), || {
            let s = seen.lock().unwrap();
            !s.cookie_echoes.is_empty()
                && s.data
                    .iter()
                    .any(|(_, d)| d.starts_with(b"after the failure"))
        }) {
            answered = true;
            break;
        }
    }
    let s = seen.lock().unwrap();
    let printable = |v: &[(u16, Vec<u8>)]| {
        v.iter()
            .map(|(p, c)| format!("{p}: {}", c.escape_ascii()))
            .collect::<Vec<_>>()
    };
    eprintln!(
        "first PE port {first}; cookie echoes {:?}; data {:?}; cards from RSPLIB {}",
        printable(&s.cookie_echoes),
        printable(&s.data),
        s.cards
    );
    assert!(answered, "rspterminal did not fail over with a cookie echo");
    drop(s);
    out.wait_for(WAIT, |l| l.contains("after the failure"));
    let s = seen.lock().unwrap();
    assert_eq!(s.cookie_echoes.len(), 1, "one failover, one cookie echo");
    assert_eq!(s.cookie_echoes[0].1, latest, "the latest cookie echoed");
    assert_ne!(s.cookie_echoes[0].0, first, "to the other PE");
    assert_eq!(s.cards, 0, "RSPLIB's PU sends no business card");
    drop(s);
    drop(terminal);
    drop(handles);
    drop(pes);
}
