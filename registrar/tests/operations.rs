//! Operations around the ASAP service, with the daemon as a real process: server announces to a
//! configured UDP target, RSPLIB component status reports, the metrics an operator reads, and
//! `--check-config` for every profile.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use rserpool_protocol::csp::CspReport;
use rserpool_protocol::{AsapMessage, Generation, TransportKind};

const RFC: Generation = Generation::Rfc;

#[test]
fn announces_and_csp_reports_reach_their_udp_targets() {
    let announce = UdpSocket::bind("127.0.0.1:0").unwrap();
    let monitor = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&announce, &monitor] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let config = std::env::temp_dir().join(format!("rserpool-ops-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[announce]\ninterval_ms = 200\n\n[csp]\nmonitor = \"{}\"\ninterval_ms = 200\n",
            monitor.local_addr().unwrap()
        ),
    )
    .unwrap();
    let target = format!("udp://{}", announce.local_addr().unwrap());
    let d = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--id",
        "305419896",
        "--workers",
        "2",
        "--asap",
        "tcp://127.0.0.1:0",
        "--announce",
        &target,
    ]);
    let tcp = d.address("tcp://", false);
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut announces = 0;
    while announces < 3 {
        let (n, from) = match announce.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) => {
                d.signal("TERM");
                let (_, stderr) = d.wait(Duration::from_secs(5));
                panic!("no announce ({e}) after {announces}; the daemon printed:\n{stderr}");
            }
        };
        assert_eq!(
            from.port(),
            tcp.port(),
            "announces leave from the ASAP port"
        );
        let AsapMessage::ServerAnnounce {
            server_id,
            transports,
        } = AsapMessage::decode(&buf[..n], RFC).unwrap().message
        else {
            panic!("not an announce")
        };
        assert_eq!(server_id.0, 305_419_896);
        let listed: Vec<_> = transports
            .iter()
            .map(|t| (t.kind, t.port, t.addresses.iter().next().unwrap()))
            .collect();
        assert_eq!(listed, [(TransportKind::Tcp, tcp.port(), tcp.ip())]);
        announces += 1;
    }
    // Three announces 200 ms (±12.5 %) apart, the first at start-up.
    assert!(start.elapsed() < Duration::from_secs(3));
    drop(d);
    // With a UDP listener on the ASAP port, announces leave through it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--asap",
        &format!("tcp://127.0.0.1:{port}"),
        "--asap",
        &format!("udp://127.0.0.1:{port}"),
        "--announce",
        &target,
    ]);
    let udp = d.address("udp://", false);
    let (_, from) = announce.recv_from(&mut buf).expect("an announce");
    assert_eq!(from, udp);
    let (n, _) = monitor.recv_from(&mut buf).expect("a CSP report");
    let report = CspReport::decode(&buf[..n]).expect("RSPLIB's CSP format");
    assert_eq!(report.report_interval_us, 200_000);
    assert_eq!(report.sender_id & 0x00ff_ffff_ffff_ffff, 305_419_896);
}

#[test]
fn metrics_show_what_happened() {
    let d = Daemon::start(&[
        "--workers",
        "2",
        "--asap",
        "tcp://127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let tcp = d.address("tcp://", false);
    let mut pe = StreamClient::tcp(tcp, RFC);
    pe.send_raw(&registration(b"m", 1, 60_000, RFC));
    assert!(accepted(&pe.recv_answering_keep_alives(), RFC));
    let mut pu = StreamClient::tcp(tcp, RFC);
    for _ in 0..5 {
        pu.send_raw(&resolution(b"m", None, RFC));
        assert_eq!(resolved(&pu.recv_bytes(), RFC), Ok(vec![1]));
    }
    pu.send_raw(&resolution(b"none", None, RFC));
    assert!(resolved(&pu.recv_bytes(), RFC).is_err());
    let text = d.scrape();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(value("rserpool_resolutions_total{result=\"found\"}"), 5.0);
    assert_eq!(
        value("rserpool_resolutions_total{result=\"unknown_pool\"}"),
        1.0
    );
    assert_eq!(
        value("rserpool_registrations_total{result=\"accepted\"}"),
        1.0
    );
    assert_eq!(value("rserpool_pools"), 1.0);
    assert_eq!(value("rserpool_pool_elements"), 1.0);
    assert_eq!(value("rserpool_connections_open{transport=\"tcp\"}"), 2.0);
    assert_eq!(
        value("rserpool_messages_received_total{protocol=\"asap\",type=\"handle_resolution\"}"),
        6.0
    );
    assert!(value("rserpool_request_duration_seconds_count{kind=\"resolution\"}") >= 6.0);
    assert!(text.contains("rserpool_registrar_info{"));
}

#[test]
fn every_profile_checks_and_prints_a_complete_configuration() {
    for profile in ["default", "carrier", "low-latency"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rserpool-registrar"))
            .args(["--profile", profile, "--check-config"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{profile}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for key in [
            "[registrar]",
            "[asap]",
            "[timers]",
            "[limits]",
            "[io]",
            "keep_alive_interval_ms",
        ] {
            assert!(text.contains(key), "{profile} lacks {key}");
        }
    }
}
