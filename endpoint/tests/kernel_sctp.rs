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
