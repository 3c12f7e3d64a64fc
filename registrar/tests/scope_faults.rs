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
    EnrpBody, EnrpMessage, Generation, PeId, PoolHandle, PrId, TransportKind, UpdateAction,
};

const RFC: Generation = Generation::Rfc;
/// The ID the test's peer speaks with.
const FAKE: PrId = PrId(0x0fa4_e001);

/// A registrar on the default profile with `workers` workers (0: the default, one per core) on
/// `driver`, with the short ENRP timers, an ENRP endpoint on an ephemeral TCP port and no static
/// peers.
fn registrar(driver: &str, workers: usize, tag: &str) -> Daemon {
    let config = std::env::temp_dir().join(format!(
        "rserpool-scope-faults-{}-{driver}-{workers}-{tag}.toml",
        std::process::id()
    ));
    std::fs::write(&config, CARRIER_ENRP).unwrap();
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
        self.stream.write_all(&enrp_message(FAKE, body)).unwrap();
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
        pool_element: peer_owned_pe(0x51, FAKE, TransportKind::Tcp),
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

/// `N` distinct free TCP ports on loopback (bound together, read and released: a restarted
/// registrar must get the same command line, so ports cannot be ephemeral), drawn below the
/// kernel's ephemeral range: a port from that range can be taken between a kill and the
/// restart as the local port of any connection on the machine, and the restart then cannot
/// bind it (seen once in CI).
fn free_ports<const N: usize>() -> [u16; N] {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000_u16, ephemeral_start.max(10_001));
    let mut seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        low + (seed % u64::from(high - low)) as u16
    };
    loop {
        let listeners: Vec<std::net::TcpListener> = (0..N)
            .filter_map(|_| std::net::TcpListener::bind(("127.0.0.1", next())).ok())
            .collect();
        let mut ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        if let Ok(ports) = <[u16; N]>::try_from(ports) {
            return ports;
        }
    }
}

/// One registrar of a scope of three with fixed ports, restartable with the same command line.
struct Member {
    id: u32,
    asap: u16,
    enrp: u16,
}

/// Three registrars on the default profile and worker count, with the short ENRP timers when
/// `fast`, each with the other two as static peers.
struct Trio {
    driver: &'static str,
    config: std::path::PathBuf,
    members: [Member; 3],
    daemons: [Option<Daemon>; 3],
}

impl Trio {
    fn start(driver: &'static str, fast: bool, tag: &str) -> Self {
        let config = std::env::temp_dir().join(format!(
            "rserpool-scope-faults-trio-{}-{driver}-{tag}.toml",
            std::process::id()
        ));
        std::fs::write(&config, if fast { CARRIER_ENRP } else { "" }).unwrap();
        let ports = free_ports::<6>();
        let members = [0, 1, 2].map(|i| Member {
            id: i as u32 + 1,
            asap: ports[2 * i],
            enrp: ports[2 * i + 1],
        });
        let mut trio = Self {
            driver,
            config,
            members,
            daemons: [None, None, None],
        };
        for i in 0..3 {
            trio.daemons[i] = Some(trio.spawn(i));
        }
        trio
    }

    fn spawn(&self, i: usize) -> Daemon {
        let m = &self.members[i];
        let mut args: Vec<String> = [
            "--profile",
            "default",
            "--config",
            self.config.to_str().unwrap(),
            "--driver",
            self.driver,
            "--metrics",
            "127.0.0.1:0",
        ]
        .map(String::from)
        .to_vec();
        args.extend(["--id".into(), m.id.to_string()]);
        args.extend(["--asap".into(), format!("tcp://127.0.0.1:{}", m.asap)]);
        args.extend(["--enrp".into(), format!("tcp://127.0.0.1:{}", m.enrp)]);
        for (j, other) in self.members.iter().enumerate() {
            if j != i {
                args.extend(["--peer".into(), format!("tcp://127.0.0.1:{}", other.enrp)]);
            }
        }
        Daemon::start(&args)
    }

    fn asap(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].asap))
    }

    /// SIGKILL, wait for the exit (as a supervisor does), start again with the same command
    /// line (`new_id`: another `--id`); returns when the new process was spawned.
    fn kill_and_restart(&mut self, i: usize, new_id: Option<u32>) -> Instant {
        let mut old = self.daemons[i].take().expect("running");
        old.child.kill().unwrap();
        old.child.wait().unwrap();
        if let Some(id) = new_id {
            self.members[i].id = id;
        }
        let started = Instant::now();
        self.daemons[i] = Some(self.spawn(i));
        started
    }

    fn signal(&self, i: usize, signal: &str) {
        self.daemons[i].as_ref().expect("running").signal(signal);
    }
}

/// PEs `ids` in pools spread over the shards, registered at `asap` over one TCP connection
/// that a thread keeps answering keep-alives on (until the registrar goes away).
fn register_pes(asap: SocketAddr, ids: std::ops::RangeInclusive<u64>) {
    let mut pe = StreamClient::tcp(asap, RFC);
    for id in ids {
        pe.send_raw(&registration(pool_of(id).as_bytes(), id, 60_000, RFC));
        assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    }
    std::thread::spawn(move || {
        // Ends with an error once the registrar is gone.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            loop {
                pe.recv_answering_keep_alives();
            }
        }));
    });
}

fn pool_of(id: u64) -> String {
    format!("trio-{}", id % 5)
}

/// Every (PE ID, home PR ID) a registrar resolves in the five pools, sorted; `None` if it
/// cannot be reached.
fn view(asap: SocketAddr) -> Option<Vec<(u64, u64)>> {
    use rserpool_protocol::{AsapMessage, Resolution};
    let mut all = Vec::new();
    let mut pu = StreamClient::try_tcp(asap, RFC)?;
    for pool in 0..5 {
        pu.send_raw(&resolution(
            format!("trio-{pool}").as_bytes(),
            Some(128),
            RFC,
        ));
        let bytes = pu.recv_bytes();
        if let AsapMessage::HandleResolutionResponse {
            resolution: Resolution::Found { pool_elements, .. },
            ..
        } = AsapMessage::decode(&bytes, RFC).unwrap().message
        {
            all.extend(pool_elements.iter().map(|p| (p.id.0, p.home_pr.0)));
        }
    }
    all.sort_unstable();
    Some(all)
}

fn ids_of(view: &[(u64, u64)]) -> Vec<u64> {
    view.iter().map(|&(id, _)| id).collect()
}

/// Issue 13, case 1: a registrar killed and restarted at once by its supervisor, with the same
/// command line or a new `--id`, serves every live PE within 5 s on the default profile's ENRP
/// timers and 1 s on the carrier profile's.
fn restarted_registrar_serves_every_pe(driver: &'static str, fast: bool, new_id: bool) {
    let tag = format!("restart-{fast}-{new_id}");
    let mut trio = Trio::start(driver, fast, &tag);
    register_pes(trio.asap(0), 1..=10);
    register_pes(trio.asap(2), 11..=20);
    let everyone: Vec<u64> = (1..=20).collect();
    // The scope forms (all three start together: the first mentor finishes after the
    // discovery timeout) and replicates.
    let formed = eventually(Duration::from_secs(20), || {
        (0..3).all(|i| view(trio.asap(i)).is_some_and(|v| ids_of(&v) == everyone))
    });
    assert!(
        formed,
        "[{driver}] every registrar serves all 20 PEs before the fault"
    );
    let bound = if fast {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    for round in 0..3 {
        let started = trio.kill_and_restart(1, new_id.then_some(20 + round));
        let mut last = None;
        let served = eventually(bound + Duration::from_secs(10), || {
            last = view(trio.asap(1));
            last.as_ref().is_some_and(|v| ids_of(v) == everyone)
        });
        let took = started.elapsed();
        if !served || took > bound {
            for (i, d) in trio.daemons.iter_mut().enumerate() {
                let d = d.take().expect("running");
                d.signal("TERM");
                let (_, log) = d.wait(Duration::from_secs(5));
                eprintln!("registrar {i}'s log:\n{log}");
            }
        }
        assert!(
            served,
            "[{driver}, fast {fast}, new id {new_id}] restart {round}: the restarted registrar \
             never served all 20 PEs; it serves {last:?}"
        );
        assert!(
            took <= bound,
            "[{driver}, fast {fast}, new id {new_id}] restart {round}: all PEs served after \
             {took:?}, bound {bound:?}"
        );
        // And keeps serving them (no purge after a late audit).
        std::thread::sleep(Duration::from_millis(if fast { 1_000 } else { 6_000 }));
        let later = view(trio.asap(1));
        assert_eq!(
            later.as_ref().map(|v| ids_of(v)),
            Some(everyone.clone()),
            "[{driver}, fast {fast}, new id {new_id}] restart {round}: PEs lost after the restart"
        );
        println!(
            "[{driver}, fast {fast}, new id {new_id}] restart {round}: all PEs served {took:?} \
             after the restart"
        );
    }
}

/// Issue 13, case 2 with real registrars: one stopped by SIGSTOP (hung, its associations open)
/// has its PEs taken over by the others within MAX-TIME-LAST-HEARD + MAX-TIME-NO-RESPONSE + one
/// heartbeat (+ 1 s for the processes); after SIGCONT the three agree on one home per PE.
fn stopped_registrar_is_taken_over_and_rejoins(driver: &'static str) {
    let trio = Trio::start(driver, true, "stop");
    register_pes(trio.asap(0), 1..=10);
    let everyone: Vec<u64> = (1..=10).collect();
    let formed = eventually(Duration::from_secs(20), || {
        (0..3).all(|i| view(trio.asap(i)).is_some_and(|v| ids_of(&v) == everyone))
    });
    assert!(
        formed,
        "[{driver}] every registrar serves the PEs before the fault"
    );
    trio.signal(0, "STOP");
    let stopped = Instant::now();
    let bound = Duration::from_millis(400 + 300 + 200 + 1_000);
    let taken = eventually(bound + Duration::from_secs(5), || {
        [1, 2].iter().all(|&i| {
            view(trio.asap(i)).is_some_and(|v| {
                ids_of(&v) == everyone && v.iter().all(|&(_, home)| home == 2 || home == 3)
            })
        })
    });
    let took = stopped.elapsed();
    trio.signal(0, "CONT");
    assert!(
        taken,
        "[{driver}] the stopped registrar's PEs were not taken over: B {:?}, C {:?}",
        view(trio.asap(1)),
        view(trio.asap(2))
    );
    assert!(
        took <= bound,
        "[{driver}] takeover after {took:?}, bound {bound:?}"
    );
    println!("[{driver}] SIGSTOPped registrar taken over after {took:?}");
    // Once it runs again, the scope settles on one home per PE.
    let mut views = Vec::new();
    let settled = eventually(Duration::from_secs(10), || {
        views = (0..3).map(|i| view(trio.asap(i))).collect();
        views[0].as_ref().is_some_and(|v| ids_of(v) == everyone)
            && views.iter().all(|v| v == &views[0])
    });
    assert!(
        settled,
        "[{driver}] after SIGCONT the registrars disagree on the PEs' homes: {views:?}"
    );
}

mod restart {
    #[test]
    fn io_uring_same_id() {
        super::restarted_registrar_serves_every_pe("io-uring", false, false);
    }
    #[test]
    fn io_uring_new_id() {
        super::restarted_registrar_serves_every_pe("io-uring", false, true);
    }
    #[test]
    fn epoll_same_id() {
        super::restarted_registrar_serves_every_pe("epoll", false, false);
    }
    #[test]
    fn epoll_new_id() {
        super::restarted_registrar_serves_every_pe("epoll", false, true);
    }
    #[test]
    fn io_uring_same_id_carrier_timers() {
        super::restarted_registrar_serves_every_pe("io-uring", true, false);
    }
    #[test]
    fn io_uring_new_id_carrier_timers() {
        super::restarted_registrar_serves_every_pe("io-uring", true, true);
    }
    #[test]
    fn epoll_same_id_carrier_timers() {
        super::restarted_registrar_serves_every_pe("epoll", true, false);
    }
    #[test]
    fn epoll_new_id_carrier_timers() {
        super::restarted_registrar_serves_every_pe("epoll", true, true);
    }
}

mod stop {
    #[test]
    fn io_uring() {
        super::stopped_registrar_is_taken_over_and_rejoins("io-uring");
    }
    #[test]
    fn epoll() {
        super::stopped_registrar_is_taken_over_and_rejoins("epoll");
    }
}
