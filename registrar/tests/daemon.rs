//! The registrar daemon as a real process over TCP, MPTCP and UDP on loopback: registration,
//! resolution on every transport and generation, keep-alives, removal on connection loss,
//! metrics, hostile input, a client that never reads its replies, reload and clean stop. Every
//! scenario runs once on each I/O driver (`io_uring::*` and `epoll::*`).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use rserpool_protocol::{AsapMessage, Generation, PeId, PoolHandle, cause};

const RFC: Generation = Generation::Rfc;
const NG: Generation = Generation::Ng;
const ATTACKER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

common::on_both_drivers!(
    pes_register_over_tcp_and_mptcp_and_resolve_everywhere,
    pes_that_stop_answering_keep_alives_are_removed,
    hostile_input_on_every_transport_leaves_the_daemon_serving_and_pes_intact,
    a_client_that_never_reads_its_replies_does_not_hold_up_others,
    metrics_name_the_driver,
    busy_polling_workers_answer,
    sigterm_stops_cleanly_and_sighup_reloads,
    a_client_that_half_closes_gets_every_answer,
    idle_connections_are_closed_and_used_ones_kept,
    one_source_address_gets_at_most_its_share_of_connections,
    a_plain_tcp_client_of_an_mptcp_listener_is_counted_as_tcp,
);

/// A daemon on `driver` with two workers, on ephemeral loopback ports with every transport,
/// sending keep-alives every `keep_alive_ms` and waiting as long for the ack.
fn daemon(driver: &str, keep_alive_ms: u64) -> Daemon {
    daemon_with(
        driver,
        2,
        &format!(
            "[timers]\nkeep_alive_interval_ms = {keep_alive_ms}\nkeep_alive_timeout_ms = {keep_alive_ms}\n"
        ),
    )
}

/// A daemon on `driver` with `workers` workers and the configuration file `config`.
fn daemon_with(driver: &str, workers: usize, config_file: &str) -> Daemon {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let config =
        std::env::temp_dir().join(format!("rserpool-test-{}-{n}.toml", std::process::id()));
    std::fs::write(&config, config_file).unwrap();
    let workers = workers.to_string();
    let args = vec![
        "--profile",
        "default",
        "--config",
        config.to_str().unwrap(),
        "--driver",
        driver,
        "--workers",
        &workers,
        "--asap",
        "tcp://127.0.0.1:0",
        "--asap",
        "mptcp://127.0.0.1:0",
        "--asap",
        "udp://127.0.0.1:0",
        "--asap",
        "tcp://127.0.0.1:0?generation=ng",
        "--metrics",
        "127.0.0.1:0",
    ];
    Daemon::start(&args)
}

fn pes_register_over_tcp_and_mptcp_and_resolve_everywhere(driver: &str) {
    let d = daemon(driver, 300);
    let tcp = d.address("tcp://", false);
    let mptcp = d.address("mptcp://", false);
    let udp = d.address("udp://", false);
    let ng = d.address("tcp://", true);

    let mut pe1 = StreamClient::tcp(tcp, RFC);
    pe1.send_raw(&registration(b"echo", 1, 60_000, RFC));
    assert!(accepted(&pe1.recv_answering_keep_alives(), RFC));
    let mut pe2 = StreamClient::mptcp(mptcp, RFC);
    pe2.send_raw(&registration(b"echo", 2, 60_000, RFC));
    assert!(accepted(&pe2.recv_answering_keep_alives(), RFC));
    let mut pe3 = StreamClient::tcp(ng, NG);
    pe3.send_raw(&registration(b"echo", 0x1_0000_0003, 60_000, NG));
    assert!(accepted(&pe3.recv_answering_keep_alives(), NG));

    // Many PU connections, spread by SO_REUSEPORT over both workers: all see the same pool.
    for _ in 0..8 {
        let mut pu = StreamClient::tcp(tcp, RFC);
        pu.send_raw(&resolution(b"echo", Some(10), RFC));
        assert_eq!(
            resolved(&pu.recv_bytes(), RFC),
            Ok(vec![1, 2]),
            "RFC PUs do not see 64-bit PE IDs"
        );
    }
    let mut pu = StreamClient::mptcp(mptcp, RFC);
    pu.send_raw(&resolution(b"echo", Some(10), RFC));
    assert_eq!(resolved(&pu.recv_bytes(), RFC), Ok(vec![1, 2]));
    let mut pu = StreamClient::tcp(ng, NG);
    pu.send_raw(&resolution(b"echo", Some(10), NG));
    assert_eq!(
        resolved(&pu.recv_bytes(), NG),
        Ok(vec![1, 2, 0x1_0000_0003])
    );
    assert_eq!(resolve_udp(udp, b"echo", RFC), Ok(vec![1, 2]));
    assert_eq!(
        resolve_udp(udp, b"nothing", RFC),
        Err(cause::UNKNOWN_POOL_HANDLE)
    );

    // Pipelined requests on one connection are all answered, in order.
    let mut batch = Vec::new();
    for _ in 0..100 {
        batch.extend_from_slice(&resolution(b"echo", None, RFC));
    }
    pu = StreamClient::tcp(tcp, RFC);
    pu.send_raw(&batch);
    for _ in 0..100 {
        assert_eq!(resolved(&pu.recv_bytes(), RFC), Ok(vec![1, 2]));
    }

    // Deregistration.
    let dereg = encode(
        &AsapMessage::Deregistration {
            pool_handle: PoolHandle(b"echo"),
            pe_id: PeId(2),
        },
        RFC,
    );
    pe2.send_raw(&dereg);
    let bytes = pe2.recv_answering_keep_alives();
    assert!(matches!(
        AsapMessage::decode(&bytes, RFC).unwrap().message,
        AsapMessage::DeregistrationResponse { error: None, .. }
    ));
    assert_eq!(resolve_udp(udp, b"echo", RFC), Ok(vec![1]));

    // Closing a PE's connection removes it (checklist PA-18).
    drop(pe1);
    assert!(eventually(Duration::from_secs(5), || resolve_udp(
        udp, b"echo", RFC
    ) == Err(
        cause::UNKNOWN_POOL_HANDLE
    )));

    let registrations = d.metric("rserpool_registrations_total{result=\"accepted\"}");
    assert_eq!(registrations, 3.0);
    assert!(d.metric("rserpool_resolutions_total") >= 112.0);
    drop(pe3);
}

fn pes_that_stop_answering_keep_alives_are_removed(driver: &str) {
    let d = daemon(driver, 300);
    let tcp = d.address("tcp://", false);
    let udp = d.address("udp://", false);
    let mut live = StreamClient::tcp(tcp, RFC);
    live.send_raw(&registration(b"ka", 1, 60_000, RFC));
    assert!(accepted(&live.recv_answering_keep_alives(), RFC));
    let mut silent = StreamClient::tcp(tcp, RFC);
    silent.send_raw(&registration(b"ka", 2, 60_000, RFC));
    assert!(accepted(&silent.recv_bytes(), RFC));
    // The live PE answers keep-alives in the background.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop);
    let keeper = std::thread::spawn(move || {
        live.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut acks = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let mut buf = [0u8; 4096];
            if let Ok(n) = std::io::Read::read(&mut live.stream, &mut buf)
                && n > 0
            {
                let msg = AsapMessage::decode(&buf[..n], RFC).unwrap().message;
                if let AsapMessage::EndpointKeepAlive {
                    pe_id: Some(id), ..
                } = msg
                {
                    live.send_raw(&encode(
                        &AsapMessage::EndpointKeepAliveAck {
                            pool_handle: PoolHandle(b"ka"),
                            pe_id: id,
                        },
                        RFC,
                    ));
                    acks += 1;
                }
            }
        }
        acks
    });
    assert!(eventually(Duration::from_secs(5), || resolve_udp(
        udp, b"ka", RFC
    ) == Ok(vec![1])));
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(
        resolve_udp(udp, b"ka", RFC),
        Ok(vec![1]),
        "the answering PE stays"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        keeper.join().unwrap() >= 2,
        "keep-alives every ~300 ms were answered"
    );
    assert_eq!(
        d.metric("rserpool_pe_removals_total{reason=\"keep_alive_timeout\"}"),
        1.0
    );
}

fn hostile_input_on_every_transport_leaves_the_daemon_serving_and_pes_intact(driver: &str) {
    let d = daemon(driver, 60_000);
    let tcp = d.address("tcp://", false);
    let mptcp = d.address("mptcp://", false);
    let udp = d.address("udp://", false);
    let mut pe = StreamClient::tcp(tcp, RFC);
    pe.send_raw(&registration(b"victim", 7, 600_000, RFC));
    assert!(accepted(&pe.recv_answering_keep_alives(), RFC));

    let valid = [
        registration(b"victim", 7, 600_000, RFC),
        resolution(b"victim", None, RFC),
        encode(
            &AsapMessage::Deregistration {
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
    // Mutated and random messages: one connection per burst, a fresh one when the registrar
    // closes a connection whose stream cannot be framed.
    let mut sent = 0;
    for round in 0..60 {
        // From another host (127.0.0.2): a host may move its own PEs between its associations,
        // another cannot touch them.
        let mut stream = if round % 2 == 0 {
            StreamClient::connect_from(tcp, Some(ATTACKER), 6, RFC)
        } else {
            StreamClient::connect_from(mptcp, Some(ATTACKER), MPTCP, RFC)
        };
        let udp_socket = std::net::UdpSocket::bind((ATTACKER, 0)).unwrap();
        for i in 0..50 {
            let mut m = valid[(i + round) % valid.len()].clone();
            match next() % 4 {
                0 => {
                    let at = (next() as usize) % m.len();
                    m[at] ^= (next() as u8) | 1;
                }
                1 => m.truncate((next() as usize) % m.len()),
                2 => {
                    m = (0..(next() % 80) as usize).map(|_| next() as u8).collect();
                }
                _ => {
                    // A syntactically framed message of a random type with random content.
                    let len = 4 + (next() % 60) as usize;
                    m = (0..len).map(|_| next() as u8).collect();
                    m[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                }
            }
            let _ = udp_socket.send_to(&m, udp);
            let _ = stream.stream.write_all(&m);
            sent += 2;
        }
    }
    assert_eq!(sent, 6_000);
    // Alive, answering, and the PE registered by its owner is still there (PEs the attackers'
    // mutated registrations added leave with their connections).
    assert!(eventually(Duration::from_secs(5), || resolve_udp(
        udp, b"victim", RFC
    ) == Ok(vec![7])));
    let mut pu = StreamClient::tcp(tcp, RFC);
    pu.send_raw(&resolution(b"victim", Some(128), RFC));
    assert_eq!(resolved(&pu.recv_bytes(), RFC), Ok(vec![7]));
    pe.send_raw(&resolution(b"victim", Some(128), RFC));
    assert_eq!(resolved(&pe.recv_answering_keep_alives(), RFC), Ok(vec![7]));
    assert!(d.metric("rserpool_decode_errors_total") > 100.0);
}

fn sigterm_stops_cleanly_and_sighup_reloads(driver: &str) {
    let d = daemon(driver, 5_000);
    let tcp = d.address("tcp://", false);
    d.signal("HUP");
    // Still serving after the reload.
    let mut pu = StreamClient::tcp(tcp, RFC);
    pu.send_raw(&resolution(b"x", None, RFC));
    assert_eq!(
        resolved(&pu.recv_bytes(), RFC),
        Err(cause::UNKNOWN_POOL_HANDLE)
    );
    d.signal("TERM");
    let (code, stderr) = d.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains("configuration reloaded"),
        "stderr:\n{stderr}"
    );
    assert!(stderr.contains("registrar stopped"), "stderr:\n{stderr}");
}

/// A client that pipelines 20,000 resolutions and never reads the replies (about 1.6 KB each,
/// 32 MB in all) does not hold up another client on the same worker, and the registrar stops
/// reading it once the replies pass the high-water mark instead of buffering them all. When the
/// client reads at last, every request is answered. Socket buffers are small on both ends, so
/// that what the kernel absorbs does not depend on the host's TCP autotuning.
fn a_client_that_never_reads_its_replies_does_not_hold_up_others(driver: &str) {
    const FLOOD: usize = 20_000;
    let d = daemon_with(
        driver,
        1,
        "[io]\nsocket_buffer_bytes = 65536\n\n[timers]\nkeep_alive_interval_ms = 600000\n",
    );
    let tcp = d.address("tcp://", false);
    let mut pe = StreamClient::tcp(tcp, RFC);
    for id in 1..=32 {
        pe.send_raw(&registration(b"big", id, 600_000, RFC));
        assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    }
    let one = resolution(b"big", Some(32), RFC);
    let flood: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * FLOOD)
        .collect();
    let mut flooder = StreamClient::tcp_with_buffers(tcp, RFC, 65_536);
    let mut writer = flooder.stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || writer.write_all(&flood).is_ok());

    // The registrar handles what fits under the high-water mark and the kernel's buffers, then
    // stops: wait until the count of resolutions holds still for half a second.
    let mut samples = Vec::new();
    let settled = eventually(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(80));
        samples.push(d.metric("rserpool_resolutions_total"));
        let n = samples.len();
        n > 6 && samples[n - 6..].iter().all(|&v| v == samples[n - 1])
    });
    assert!(settled, "the resolutions never settled: {samples:?}");
    let handled = samples.last().copied().unwrap();
    assert!(
        handled > 0.0 && handled < FLOOD as f64 / 2.0,
        "the registrar handled {handled} of {FLOOD} requests from a client that does not read"
    );

    let start = std::time::Instant::now();
    let mut other = StreamClient::tcp(tcp, RFC);
    other.send_raw(&resolution(b"big", Some(3), RFC));
    assert_eq!(
        resolved(&other.recv_bytes(), RFC).map(|ids| ids.len()),
        Ok(3)
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "another client waited {:?}",
        start.elapsed()
    );

    for i in 0..FLOOD {
        let ids =
            resolved(&flooder.recv_bytes(), RFC).unwrap_or_else(|e| panic!("reply {i}: cause {e}"));
        assert_eq!(ids.len(), 32, "reply {i}");
    }
    assert!(writing.join().unwrap(), "the whole flood was written");
    assert!(d.metric("rserpool_resolutions_total") >= (FLOOD + 1) as f64);
}

/// Workers that spin before they sleep (`registrar.busy_poll_us`) answer over TCP and UDP, also
/// after idling.
fn busy_polling_workers_answer(driver: &str) {
    let d = daemon_with(driver, 2, "[registrar]\nbusy_poll_us = 300\n");
    let tcp = d.address("tcp://", false);
    let udp = d.address("udp://", false);
    let mut pe = StreamClient::tcp(tcp, RFC);
    pe.send_raw(&registration(b"spin", 4, 60_000, RFC));
    assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    for _ in 0..3 {
        assert_eq!(resolve_udp(udp, b"spin", RFC), Ok(vec![4]));
        let mut pu = StreamClient::tcp(tcp, RFC);
        pu.send_raw(&resolution(b"spin", None, RFC));
        assert_eq!(resolved(&pu.recv_bytes(), RFC), Ok(vec![4]));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client that sends its last requests and shuts its sending side down in the same write still
/// gets every answer; then the registrar closes the connection.
fn a_client_that_half_closes_gets_every_answer(driver: &str) {
    let d = daemon(driver, 5_000);
    let tcp = d.address("tcp://", false);
    let mut pe = StreamClient::tcp(tcp, RFC);
    pe.send_raw(&registration(b"fin", 3, 60_000, RFC));
    assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    for round in 0..5 {
        let mut pu = StreamClient::tcp(tcp, RFC);
        let mut batch = Vec::new();
        for _ in 0..50 {
            batch.extend_from_slice(&resolution(b"fin", None, RFC));
        }
        pu.send_raw(&batch);
        pu.stream.shutdown(std::net::Shutdown::Write).unwrap();
        for i in 0..50 {
            assert_eq!(
                resolved(&pu.recv_bytes(), RFC),
                Ok(vec![3]),
                "round {round}, answer {i}"
            );
        }
        let mut rest = [0u8; 16];
        let n = std::io::Read::read(&mut pu.stream, &mut rest).expect("an orderly close");
        assert_eq!(n, 0, "the registrar closes once everything is answered");
    }
}

/// The metrics name the driver the registrar runs on.
fn metrics_name_the_driver(driver: &str) {
    let d = daemon(driver, 60_000);
    let name = driver.replace('-', "_");
    let info = d.scrape();
    let line = info
        .lines()
        .find(|l| l.starts_with("rserpool_registrar_info{"))
        .unwrap_or_else(|| panic!("no info line in:\n{info}"));
    assert!(line.contains(&format!("driver=\"{name}\"")), "{line}");
}

#[test]
fn bad_configuration_is_refused_with_the_key_file_and_line() {
    let path = std::env::temp_dir().join(format!("rserpool-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "[timers]\n\nkeep_alive_intervall_ms = 5\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rserpool-registrar"))
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keep_alive_intervall_ms"), "{err}");
    assert!(err.contains(&format!("{}:3", path.display())), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rserpool-registrar"))
        .args(["--profile", "carrier", "--check-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("keep_alive_interval_ms"));
}

/// A loopback port of `ty` nobody holds right now (the kernel's choice, released again).
fn free_port(ty: socket2::Type) -> u16 {
    let probe = socket2::Socket::new(socket2::Domain::IPV4, ty, None).unwrap();
    probe
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    probe.local_addr().unwrap().as_socket().unwrap().port()
}

/// Runs `rserpool-registrar` with `args` to its exit (it must exit within 10 s); returns the
/// exit code and stderr.
fn run_to_exit(args: &[String]) -> (Option<i32>, String) {
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rserpool-registrar"))
        .args(args)
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_second_registrar_on_the_same_ports_is_refused_and_a_killed_one_restarts_at_once() {
    let tcp = format!("tcp://127.0.0.1:{}", free_port(socket2::Type::STREAM));
    let udp = format!("udp://127.0.0.1:{}", free_port(socket2::Type::DGRAM));
    let args: Vec<String> = [
        "--profile",
        "default",
        "--asap",
        &tcp,
        "--asap",
        &udp,
        "--enrp",
        "tcp://127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let first = Daemon::start(&args);
    let address = first.address("tcp://", false);
    let mut pe = StreamClient::tcp(address, RFC);
    pe.send_raw(&registration(b"owned", 1, 60_000, RFC));
    assert!(accepted(&pe.recv_answering_keep_alives(), RFC));

    // The same command line again: refused after the bind retry, naming the listener.
    let (code, err) = run_to_exit(&args);
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "{tcp} is already served by another rserpool-registrar"
        )),
        "{err}"
    );
    // The first one still has every connection: nothing was split off.
    for _ in 0..8 {
        let mut pu = StreamClient::tcp(address, RFC);
        pu.send_raw(&resolution(b"owned", None, RFC));
        assert_eq!(resolved(&pu.recv_bytes(), RFC), Ok(vec![1]));
    }
    assert_eq!(
        resolve_udp(first.address("udp://", false), b"owned", RFC),
        Ok(vec![1])
    );

    // Killed by its supervisor and started again with the same command line at once: it
    // comes up (the claim died with the process).
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let again = Daemon::start(&args);
    let mut pe = StreamClient::tcp(again.address("tcp://", false), RFC);
    pe.send_raw(&registration(b"owned", 1, 60_000, RFC));
    assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
}

#[test]
fn a_port_another_process_holds_is_refused_even_if_it_set_so_reuseport() {
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    other
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    other.listen(8).unwrap();
    let port = other.local_addr().unwrap().as_socket().unwrap().port();
    let tcp = format!("tcp://127.0.0.1:{port}");
    let args: Vec<String> = [
        "--profile",
        "default",
        "--asap",
        &tcp,
        "--metrics",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let (code, err) = run_to_exit(&args);
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!("{tcp} is in use by another process")),
        "{err}"
    );
}

#[test]
fn the_default_profile_started_twice_refuses_the_second() {
    // The defaults as shipped (port 3863 and the profile's listeners), only the metrics moved off
    // their fixed port so that the test does not depend on it.
    let args: Vec<String> = ["--metrics", "127.0.0.1:0"].map(String::from).to_vec();
    let first = Daemon::start(&args);
    let (code, err) = run_to_exit(&args);
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("127.0.0.1:3863 is already served by another rserpool-registrar"),
        "{err}"
    );
    drop(first);
}

fn idle_connections_are_closed_and_used_ones_kept(driver: &str) {
    let d = daemon_with(driver, 2, "[limits]\nidle_timeout_ms = 300\n");
    let tcp = d.address("tcp://", false);
    let mut pe = StreamClient::tcp(tcp, RFC);
    pe.send_raw(&registration(b"kept", 1, 60_000, RFC));
    assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    let idle: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(tcp).unwrap())
        .collect();
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut byte = [0u8; 1];
        let started = Instant::now();
        // The registrar closes it (EOF or reset) after the timeout, not before.
        let n = std::io::Read::read(&mut s, &mut byte).unwrap_or(0);
        assert_eq!(n, 0, "closed, not answered");
        assert!(started.elapsed() < Duration::from_secs(4), "closed in time");
    }
    assert!(eventually(Duration::from_secs(2), || {
        d.metric("rserpool_limit_refusals_total{limit=\"idle_timeout\"}") == 4.0
    }));
    let mut pu = StreamClient::tcp(tcp, RFC);
    pu.send_raw(&resolution(b"kept", None, RFC));
    assert_eq!(
        resolved(&pu.recv_bytes(), RFC),
        Ok(vec![1]),
        "the PE that registered stays"
    );
}

fn one_source_address_gets_at_most_its_share_of_connections(driver: &str) {
    // Two workers: the count is over all of them, wherever SO_REUSEPORT puts a connection.
    let d = daemon_with(driver, 2, "[limits]\nmax_connections_per_source = 3\n");
    let tcp = d.address("tcp://", false);
    let local = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    let mut held: Vec<StreamClient> = (0..3)
        .map(|_| StreamClient::connect_from(tcp, local, 6, RFC))
        .collect();
    for c in &mut held {
        c.send_raw(&resolution(b"nothing", None, RFC));
        assert_eq!(
            resolved(&c.recv_bytes(), RFC),
            Err(cause::UNKNOWN_POOL_HANDLE)
        );
    }
    // The fourth from the same address is closed unanswered.
    let mut fourth = StreamClient::connect_from(tcp, local, 6, RFC);
    fourth.send_raw(&resolution(b"nothing", None, RFC));
    let mut byte = [0u8; 1];
    let n = std::io::Read::read(&mut fourth.stream, &mut byte).unwrap_or(0);
    assert_eq!(n, 0, "refused");
    // Another address has its own share.
    let mut other = StreamClient::connect_from(tcp, Some(ATTACKER), 6, RFC);
    other.send_raw(&resolution(b"nothing", None, RFC));
    assert_eq!(
        resolved(&other.recv_bytes(), RFC),
        Err(cause::UNKNOWN_POOL_HANDLE)
    );
    assert!(eventually(Duration::from_secs(2), || {
        d.metric("rserpool_limit_refusals_total{limit=\"connections_per_source\"}") == 1.0
    }));
    // A closed connection gives its place back.
    drop(held.pop());
    assert!(eventually(Duration::from_secs(5), || {
        let mut again = StreamClient::connect_from(tcp, local, 6, RFC);
        again.send_raw(&resolution(b"nothing", None, RFC));
        let mut buf = [0u8; 64];
        std::io::Read::read(&mut again.stream, &mut buf).unwrap_or(0) > 0
    }));
}

#[test]
fn access_rules_from_the_configuration_refuse_with_cause_0xa() {
    let d = daemon_with(
        "epoll",
        2,
        "[access]\nrules = [\"ok* register 127.0.0.1\", \"* resolve any\"]\n",
    );
    let tcp = d.address("tcp://", false);
    let mut pe = StreamClient::tcp(tcp, RFC);
    pe.send_raw(&registration(b"ok-1", 1, 60_000, RFC));
    assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    let mut other = StreamClient::tcp(tcp, RFC);
    other.send_raw(&registration(b"elsewhere", 2, 60_000, RFC));
    let answer = other.recv_answering_keep_alives();
    assert!(!accepted(&answer, RFC));
    let AsapMessage::RegistrationResponse { error, .. } =
        AsapMessage::decode(&answer, RFC).unwrap().message
    else {
        panic!("a registration response");
    };
    assert_eq!(
        error.and_then(|e| e.iter().next()).map(|c| c.code),
        Some(cause::REJECTED_SECURITY)
    );
    let mut pu = StreamClient::tcp(tcp, RFC);
    pu.send_raw(&resolution(b"ok-1", None, RFC));
    assert_eq!(resolved(&pu.recv_bytes(), RFC), Ok(vec![1]));
    assert_eq!(
        d.metric("rserpool_limit_refusals_total{limit=\"access\"}"),
        1.0
    );
}

/// `metrics.bearer_token_file`: the metrics need the token from the file; a missing file fails
/// the start with its name.
#[test]
fn the_metrics_endpoint_asks_for_the_bearer_token_of_its_file() {
    let dir = std::env::temp_dir();
    let token_file = dir.join(format!("rserpool-metrics-token-{}", std::process::id()));
    std::fs::write(&token_file, "  t0ken-from-a-file\n").unwrap();
    let config = dir.join(format!(
        "rserpool-metrics-token-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &config,
        format!("[metrics]\nbearer_token_file = {:?}\n", token_file),
    )
    .unwrap();
    let args = |config: &std::path::Path| {
        vec![
            "--profile".to_owned(),
            "default".into(),
            "--config".into(),
            config.display().to_string(),
            "--asap".into(),
            "tcp://127.0.0.1:0".into(),
            "--metrics".into(),
            "127.0.0.1:0".into(),
        ]
    };
    let d = Daemon::start(&args(&config));
    assert!(d.http("GET /metrics", "").starts_with("HTTP/1.1 401"));
    let ok = d.http(
        "GET /metrics",
        "Authorization: Bearer t0ken-from-a-file\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("rserpool_registrar_info"), "{ok}");
    drop(d);

    std::fs::remove_file(&token_file).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rserpool-registrar"))
        .args(args(&config))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("metrics.bearer_token_file") && stderr.contains("rserpool-metrics-token"),
        "{stderr}"
    );
    // One line for the error, and no terminal colours in a pipe.
    assert_eq!(
        stderr
            .matches("cannot read the metrics bearer token")
            .count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains('\x1b'), "{stderr}");
}

/// The default worker count is one per core the process may use: under `taskset -c <one CPU>`
/// the default profile starts one worker (it used to count every online CPU).
#[test]
fn the_default_worker_count_honours_the_affinity_mask() {
    let cpu = rserpool_net::allowed_cores()[0].to_string();
    let mut child = std::process::Command::new("taskset")
        .args(["-c", &cpu])
        .arg(env!("CARGO_BIN_EXE_rserpool-registrar"))
        .args([
            "--profile",
            "default",
            "--asap",
            "tcp://127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--log-level",
            "info",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("taskset (util-linux) runs the registrar");
    let stderr = child.stderr.take().unwrap();
    let ready = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("registrar ready"));
    let _ = child.kill();
    let _ = child.wait();
    let ready = ready.expect("a `registrar ready` line");
    assert!(ready.contains("workers=1"), "{ready}");
}

/// `/healthz` answers while the process serves; `/readyz` only once every worker runs and the
/// ENRP start-up is over (here: a configured peer that never answers, so the registrar waits
/// out `enrp.mentor_discovery_timeout_ms` before serving alone); `HEAD` gets the headers of
/// `GET` without the body.
#[test]
fn readyz_waits_for_the_enrp_start_up_and_healthz_and_head_answer() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = format!("tcp://{}", closed.local_addr().unwrap());
    drop(closed);
    let config = std::env::temp_dir().join(format!("rserpool-readyz-{}.toml", std::process::id()));
    std::fs::write(&config, "[enrp]\nmentor_discovery_timeout_ms = 2000\n").unwrap();
    let started = std::time::Instant::now();
    let d = Daemon::start(&[
        "--profile",
        "default",
        "--config",
        config.to_str().unwrap(),
        "--asap",
        "tcp://127.0.0.1:0",
        "--enrp",
        "tcp://127.0.0.1:0",
        "--peer",
        &peer,
        "--metrics",
        "127.0.0.1:0",
    ]);
    let request = |line: &str| d.http(line, "");
    assert!(request("GET /healthz").starts_with("HTTP/1.1 200"));
    let early = request("GET /readyz");
    assert!(
        early.starts_with("HTTP/1.1 503") || started.elapsed() >= Duration::from_millis(2000),
        "{early}"
    );
    assert!(eventually(Duration::from_secs(10), || request(
        "GET /readyz"
    )
    .starts_with("HTTP/1.1 200")));
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "ready only after the start-up"
    );
    assert_eq!(d.metric("rserpool_enrp_starting"), 0.0);
    let head = request("HEAD /metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (headers, body) = head.split_once("\r\n\r\n").unwrap();
    assert!(headers.contains("Content-Length: "), "{headers}");
    assert!(body.is_empty(), "{body}");
}

/// SIGHUP names each changed key that needs a restart, and counts applied and refused reloads
/// in the metrics.
#[test]
fn sighup_names_the_keys_that_need_a_restart_and_counts_reloads() {
    let config = std::env::temp_dir().join(format!("rserpool-sighup-{}.toml", std::process::id()));
    std::fs::write(&config, "[timers]\nkeep_alive_interval_ms = 5000\n").unwrap();
    let d = Daemon::start(&[
        "--profile",
        "default",
        "--config",
        config.to_str().unwrap(),
        "--asap",
        "tcp://127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    std::fs::write(
        &config,
        "[timers]\nkeep_alive_interval_ms = 6000\n\n[io]\nmax_batch = 7\n\n[limits]\nmax_pools = 12345\n",
    )
    .unwrap();
    d.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || d
        .metric("rserpool_config_reloads_total")
        == 1.0));
    std::fs::write(&config, "[timers]\nkeep_alive_interval_ms = \"soon\"\n").unwrap();
    d.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || d
        .metric("rserpool_config_reload_failures_total")
        == 1.0));
    d.signal("TERM");
    let (code, stderr) = d.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
    let named = stderr
        .lines()
        .find(|l| l.contains("need a restart"))
        .unwrap_or_else(|| panic!("no line naming restart keys:\n{stderr}"));
    assert!(
        named.contains("limits.max_pools") && named.contains("io.max_batch"),
        "{named}"
    );
    assert!(
        !named.contains("keep_alive_interval_ms"),
        "that one reloads: {named}"
    );
    assert!(stderr.contains("configuration not reloaded"), "{stderr}");
}

/// An MPTCP listener takes plain TCP clients too (they fall back to TCP): those are counted as
/// `transport="tcp"`, MPTCP clients as `transport="mptcp"` (where the kernel says which, Linux
/// 5.16 and later; this machine's does).
fn a_plain_tcp_client_of_an_mptcp_listener_is_counted_as_tcp(driver: &str) {
    let d = daemon(driver, 60_000);
    let mptcp = d.address("mptcp://", false);
    let opened = |t: &str| {
        d.metric(&format!(
            "rserpool_connections_opened_total{{transport=\"{t}\"}}"
        ))
    };
    let mut plain = StreamClient::tcp(mptcp, RFC);
    plain.send_raw(&resolution(b"x", None, RFC));
    let _ = plain.recv_bytes();
    assert_eq!((opened("tcp"), opened("mptcp")), (1.0, 0.0));
    let mut multipath = StreamClient::mptcp(mptcp, RFC);
    multipath.send_raw(&resolution(b"x", None, RFC));
    let _ = multipath.recv_bytes();
    assert_eq!((opened("tcp"), opened("mptcp")), (1.0, 1.0));
}

/// Under a service manager (`Type=notify`): `READY=1` once the registrar listens and its ENRP
/// start-up is over, `WATCHDOG=1` while the workers turn (`WatchdogSec=`), `STOPPING=1` on
/// SIGTERM, on the socket `$NOTIFY_SOCKET` names.
#[test]
fn the_service_manager_is_told_ready_fed_the_watchdog_and_told_stopping() {
    use std::os::unix::net::UnixDatagram;
    let path = std::env::temp_dir().join(format!("rserpool-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let manager = UnixDatagram::bind(&path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rserpool-registrar"))
        .args([
            "--profile",
            "default",
            "--asap",
            "tcp://127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "2400000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = manager.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = next();
    assert!(first.starts_with("READY=1"), "{first}");
    let second = next();
    assert_eq!(second, "WATCHDOG=1");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut last = next();
    while last == "WATCHDOG=1" {
        last = next();
    }
    assert_eq!(last, "STOPPING=1");
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_file(&path);
}
