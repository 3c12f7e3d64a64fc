//! An operating scope of three registrar processes peered over ENRP on loopback TCP: PEs
//! registered at one registrar become resolvable at the others; after that registrar is killed
//! (SIGKILL) a survivor takes its PEs over; a registrar started in its place (a new ID) loads
//! the handlespace from a mentor. Prints the takeover and resynchronisation times (for
//! docs/performance.md). Two registrars also peer over MPTCP, and over SCTP in UDP (user space).
//! Runs once on each I/O driver.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use rserpool_protocol::{AsapMessage, Generation, Resolution};

const RFC: Generation = Generation::Rfc;
const POOL: &[u8] = b"scope";
const PES: [u64; 3] = [11, 12, 13];

common::on_both_drivers!(
    a_survivor_takes_over_a_killed_registrar_and_a_new_one_resyncs,
    two_registrars_peer_over_mptcp,
    two_registrars_peer_over_sctp_in_udp,
);

/// A registrar with ID `id` on `driver`, two workers, an ENRP endpoint on an ephemeral TCP port
/// and the static peers `peers`.
fn registrar(driver: &str, id: u32, peers: &[&str]) -> Daemon {
    registrar_on(driver, id, "tcp", peers)
}

/// [`registrar`] with the ENRP endpoint on `scheme` (`tcp` or `mptcp`).
fn registrar_on(driver: &str, id: u32, scheme: &str, peers: &[&str]) -> Daemon {
    registrar_with(driver, id, scheme, peers, "")
}

/// A registrar whose `[enrp]` section (the carrier profile's timers, shortened) ends with
/// `enrp_extra`.
fn registrar_with(driver: &str, id: u32, scheme: &str, peers: &[&str], enrp_extra: &str) -> Daemon {
    let config = std::env::temp_dir().join(format!(
        "rserpool-scope-{}-{driver}-{id}.toml",
        std::process::id()
    ));
    std::fs::write(&config, format!("{CARRIER_ENRP}{enrp_extra}")).unwrap();
    let id = id.to_string();
    let enrp = format!("{scheme}://127.0.0.1:0");
    let mut args = vec![
        "--profile",
        "default",
        "--config",
        config.to_str().unwrap(),
        "--driver",
        driver,
        "--workers",
        "2",
        "--id",
        &id,
        "--asap",
        "tcp://127.0.0.1:0",
        "--enrp",
        &enrp,
        "--metrics",
        "127.0.0.1:0",
    ];
    for peer in peers {
        args.extend(["--peer", peer]);
    }
    Daemon::start(&args)
}

/// The (PE ID, home PR ID) pairs a resolution at `asap` returns, sorted; empty if the pool is
/// unknown.
fn homes(asap: SocketAddr) -> Vec<(u64, u64)> {
    let mut pu = StreamClient::tcp(asap, RFC);
    pu.send_raw(&resolution(POOL, Some(10), RFC));
    let bytes = pu.recv_bytes();
    let AsapMessage::HandleResolutionResponse {
        resolution: Resolution::Found { pool_elements, .. },
        ..
    } = AsapMessage::decode(&bytes, RFC).unwrap().message
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

/// Polls `f` every 10 ms until it holds, for at most `limit`; returns how long it took.
fn time_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// Whether every PE resolves at `asap` with a home PR among `homes_allowed`.
fn all_homed_at(asap: SocketAddr, homes_allowed: &[u64]) -> bool {
    let found = homes(asap);
    found.len() == PES.len()
        && found
            .iter()
            .zip(PES)
            .all(|(&(pe, home), want)| pe == want && homes_allowed.contains(&home))
}

fn a_survivor_takes_over_a_killed_registrar_and_a_new_one_resyncs(driver: &str) {
    let mut a = registrar(driver, 1, &[]);
    let b = registrar(driver, 2, &[&a.enrp[0]]);
    let c = registrar(driver, 3, &[&a.enrp[0], &b.enrp[0]]);
    let (a_asap, b_asap, c_asap) = (
        a.address("tcp://", false),
        b.address("tcp://", false),
        c.address("tcp://", false),
    );

    // Every PE registers at A, over one connection that answers keep-alives in a thread.
    let mut pe = StreamClient::tcp(a_asap, RFC);
    for id in PES {
        pe.send_raw(&registration(POOL, id, 60_000, RFC));
        assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    }
    let keep_alive = std::thread::spawn(move || {
        // Ends with an error once A is killed.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            loop {
                pe.recv_answering_keep_alives();
            }
        }));
    });
    let replicated = time_until(Duration::from_secs(10), "PEs replicated to B and C", || {
        all_homed_at(b_asap, &[1]) && all_homed_at(c_asap, &[1])
    });
    println!(
        "[{driver}] replication of {} PEs to two peers: {replicated:?}",
        PES.len()
    );

    // SIGKILL: no ENRP goodbye; the survivors see their associations break.
    a.child.kill().unwrap();
    let killed = Instant::now();
    a.child.wait().unwrap();
    keep_alive.join().unwrap();
    let mut new_home = 0;
    time_until(Duration::from_secs(10), "takeover at B and C", || {
        let (at_b, at_c) = (homes(b_asap), homes(c_asap));
        let taken = |found: &[(u64, u64)]| {
            found.len() == PES.len() && found.iter().all(|&(_, home)| home == 2 || home == 3)
        };
        if taken(&at_b) && at_b == at_c {
            new_home = at_b[0].1;
            return true;
        }
        false
    });
    let takeover = killed.elapsed();
    println!(
        "[{driver}] takeover: SIGKILL of the home PR -> PEs homed at PR {new_home} at both \
         survivors in {takeover:?}"
    );
    let takeovers =
        b.metric("rserpool_enrp_takeovers_total") + c.metric("rserpool_enrp_takeovers_total");
    assert!(takeovers >= 1.0, "a takeover is counted: {takeovers}");
    let dead =
        b.metric("rserpool_enrp_peers_dead_total") + c.metric("rserpool_enrp_peers_dead_total");
    assert!(dead >= 1.0, "the dead peer is counted: {dead}");

    // A new registrar (new ID) in A's place loads the handlespace from a mentor.
    let started = Instant::now();
    let d = registrar(driver, 4, &[&b.enrp[0], &c.enrp[0]]);
    let d_asap = d.address("tcp://", false);
    time_until(
        Duration::from_secs(10),
        "resync of the new registrar",
        || all_homed_at(d_asap, &[new_home]),
    );
    let resync = started.elapsed();
    println!(
        "[{driver}] restart: new PR process started -> all {} PEs resolvable there in {resync:?} \
         (including process start)",
        PES.len()
    );
    assert!(
        d.metric("rserpool_enrp_peers") >= 2.0,
        "the new registrar knows both peers"
    );
}

/// ENRP over MPTCP: a PE registered at one registrar is resolvable at the other, and both see
/// one peer.
fn two_registrars_peer_over_mptcp(driver: &str) {
    let a = registrar_on(driver, 1, "mptcp", &[]);
    let b = registrar_on(driver, 2, "mptcp", &[&a.enrp[0]]);
    assert!(a.enrp[0].starts_with("mptcp://"), "{:?}", a.enrp);
    let mut pe = StreamClient::tcp(a.address("tcp://", false), RFC);
    pe.send_raw(&registration(POOL, 21, 60_000, RFC));
    assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    let b_asap = b.address("tcp://", false);
    time_until(
        Duration::from_secs(10),
        "the PE replicated over MPTCP",
        || homes(b_asap) == [(21, 1)],
    );
    assert_eq!(a.metric("rserpool_enrp_peers"), 1.0);
    assert_eq!(b.metric("rserpool_enrp_peers"), 1.0);
}

fn two_registrars_peer_over_sctp_in_udp(driver: &str) {
    let mut a = registrar_on(driver, 1, "sctp+udp", &[]);
    assert!(a.enrp[0].starts_with("sctp+udp://"), "{:?}", a.enrp);
    // 300 PEs at A before B starts: B's download of A's handle table is a message of several
    // packets (about 15 KB; 8 KiB packets to a loopback peer), a train the registrar sends with
    // one UDP GSO send where the kernel segments UDP.
    let mut loader = StreamClient::tcp(a.address("tcp://", false), RFC);
    for id in 1_000..1_300u64 {
        loader.send_raw(&registration(b"table", id, 60_000, RFC));
        assert!(accepted(&loader.recv_answering_keep_alives(), RFC));
    }
    let b = registrar_on(driver, 2, "sctp+udp", &[&a.enrp[0]]);
    let b_asap = b.address("tcp://", false);
    time_until(
        Duration::from_secs(10),
        "A's handle table of 300 PEs downloaded by B over SCTP in UDP",
        || {
            let mut pu = StreamClient::tcp(b_asap, RFC);
            pu.send_raw(&resolution(b"table", Some(128), RFC));
            resolved(&pu.recv_bytes(), RFC).is_ok_and(|ids| ids.len() == 128)
        },
    );
    let mut pe = StreamClient::tcp(a.address("tcp://", false), RFC);
    pe.send_raw(&registration(POOL, 22, 60_000, RFC));
    assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    time_until(
        Duration::from_secs(10),
        "the PE replicated over SCTP in UDP",
        || homes(b_asap) == [(22, 1)],
    );
    assert_eq!(a.metric("rserpool_enrp_peers"), 1.0);
    assert_eq!(b.metric("rserpool_enrp_peers"), 1.0);
    // A killed: B's association to it is lost (its heartbeats or data go unanswered, or the
    // restarted A's out-of-the-blue ABORT), and B takes the PE over.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    time_until(
        Duration::from_secs(30),
        "B took the PE over after A died",
        || homes(b_asap) == [(22, 2)],
    );
}

#[test]
fn a_registrar_not_on_the_allowlist_never_joins_the_scope() {
    // RFC 5355 §2.5. A (PR 41) admits PR 43 only; B (PR 42) and C (PR 43) both name A as
    // their peer. (IDs of their own: the configuration file is named after the driver and ID.)
    let a = registrar_with(
        "epoll",
        41,
        "tcp",
        &[],
        "allowed_peers = [\"43@127.0.0.1\"]\n",
    );
    let b = registrar_on("epoll", 42, "tcp", &[&a.enrp[0]]);
    let c = registrar_on("epoll", 43, "tcp", &[&a.enrp[0]]);
    let mut pe = StreamClient::tcp(a.address("tcp://", false), RFC);
    pe.send_raw(&registration(POOL, 31, 60_000, RFC));
    assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    let mut intruder_pe = StreamClient::tcp(b.address("tcp://", false), RFC);
    intruder_pe.send_raw(&registration(POOL, 32, 60_000, RFC));
    assert!(accepted(&intruder_pe.recv_answering_keep_alives(), RFC));
    let c_asap = c.address("tcp://", false);
    time_until(
        Duration::from_secs(10),
        "the PE replicated to the listed peer",
        || homes(c_asap) == [(31, 41)],
    );
    assert!(eventually(Duration::from_secs(5), || {
        a.metric("rserpool_limit_refusals_total{limit=\"enrp_peer\"}") >= 1.0
    }));
    // A few heartbeats later: B is still outside, its PE never reached A, A's never reached B.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(a.metric("rserpool_enrp_peers"), 1.0, "C only");
    assert_eq!(homes(a.address("tcp://", false)), [(31, 41)]);
    assert_eq!(homes(b.address("tcp://", false)), [(32, 42)]);
}
