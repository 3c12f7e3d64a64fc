//! The endpoint library against the real `rserpool-registrar` process over loopback TCP, MPTCP
//! and SCTP in UDP: registration, resolution, keep-alives, load updates, deregistration on drop,
//! refusal, failover between two registrars, a registrar killed and restarted at once, the NG
//! generation, announces.

mod common;

use std::time::Duration;

use common::*;
use rserpool_endpoint::driver::{Options, Pe, Pu};
use rserpool_endpoint::pe::{PeEvent, PeState};
use rserpool_endpoint::{Cause, Error, Registrar, pu};
use rserpool_protocol::{Generation, PeId, Policy};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn pes_register_over_tcp_and_mptcp_and_pus_resolve_them() {
    let d = Daemon::start(60_000, &["tcp://127.0.0.1:0", "mptcp://127.0.0.1:0"]);
    let tcp = d.url("tcp://", false);
    let mptcp = d.url("mptcp://", false);
    let mut c1 = pe_config(&[&tcp], "echo", 7001);
    c1.policy = Policy::LeastUsed { load: 10 };
    let pe1 = Pe::register(c1).expect("registered over TCP");
    let mut c2 = pe_config(&[&mptcp], "echo", 7002);
    c2.policy = Policy::LeastUsed { load: 20 };
    let pe2 = Pe::register(c2).expect("registered over MPTCP");
    assert_eq!(pe1.state(), PeState::Registered);
    assert_eq!(pe2.registrar(), Some(url(&mptcp).registrar));
    let mut expected = vec![pe1.pe_id().0, pe2.pe_id().0];
    expected.sort_unstable();
    for registrar in [&tcp, &mptcp] {
        let mut pu = pool_user(registrar);
        let pes = pu.resolve_items("echo", Some(10)).expect("resolved");
        assert_eq!(ids(&pes), expected, "at {registrar}");
        let first = &pes[0];
        assert_eq!(first.id, pe1.pe_id(), "least used first");
        assert_eq!(first.port(), 7001);
        assert_eq!(
            first.addresses(),
            ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(first.policy, Policy::LeastUsed { load: 10 });
        assert_eq!(
            pu.select("echo").unwrap().id,
            pe1.pe_id(),
            "cached, in order"
        );
    }
    assert_eq!(
        pool_user(&tcp).resolve("nothing"),
        Err(Error::UnknownPool {
            pool_handle: "nothing".into()
        })
    );
}

#[test]
fn keep_alives_are_answered_and_the_pe_stays_registered() {
    let d = Daemon::start(300, &["tcp://127.0.0.1:0"]);
    let tcp = d.url("tcp://", false);
    let pe = Pe::register(pe_config(&[&tcp], "ka", 7)).expect("registered");
    assert!(
        eventually(WAIT, || d.metric("rserpool_keep_alive_acks_total") >= 4.0),
        "keep-alives every 300 ms are acked"
    );
    assert_eq!(
        d.metric("rserpool_pe_removals_total{reason=\"keep_alive_timeout\"}"),
        0.0
    );
    let pes = pool_user(&tcp).resolve("ka").expect("still registered");
    assert_eq!(ids(&pes), [pe.pe_id().0]);
    assert!(pe.home_pr().is_some(), "the keep-alives named the home PR");
    assert_eq!(pe.home_pr().map(|p| p.0), Some(pes[0].home_pr.0));
}

#[test]
fn dropping_the_handle_deregisters_the_pe() {
    let d = Daemon::start(60_000, &["tcp://127.0.0.1:0"]);
    let tcp = d.url("tcp://", false);
    let pe = Pe::register(pe_config(&[&tcp], "bye", 7)).expect("registered");
    assert!(pool_user(&tcp).resolve("bye").is_ok());
    drop(pe);
    assert!(matches!(
        pool_user(&tcp).resolve("bye"),
        Err(Error::UnknownPool { .. })
    ));
    assert_eq!(
        d.metric("rserpool_pe_removals_total{reason=\"deregistered\"}"),
        1.0,
        "removed by ASAP_DEREGISTRATION, not by the closed connection"
    );
    let pe = Pe::register(pe_config(&[&tcp], "bye", 7)).expect("registered again");
    assert_eq!(pe.deregister(), Ok(()));
    assert_eq!(
        d.metric("rserpool_deregistrations_total{result=\"accepted\"}"),
        2.0
    );
}

#[test]
fn a_load_update_reaches_the_registrar_by_reregistration() {
    let d = Daemon::start(60_000, &["tcp://127.0.0.1:0"]);
    let tcp = d.url("tcp://", false);
    let mut c = pe_config(&[&tcp], "load", 7);
    c.policy = Policy::LeastUsed { load: 0 };
    let pe = Pe::register(c).expect("registered");
    pe.set_policy(Policy::LeastUsed { load: 0x1234 });
    let mut pu = pool_user(&tcp);
    assert!(eventually(WAIT, || {
        pu.resolve("load").unwrap()[0].policy == Policy::LeastUsed { load: 0x1234 }
    }));
    assert_eq!(pe.policy(), Policy::LeastUsed { load: 0x1234 });
    assert_eq!(
        d.metric("rserpool_registrations_total{result=\"accepted\"}"),
        2.0
    );
}

#[test]
fn a_refused_registration_reports_the_registrars_cause() {
    let d = Daemon::start(60_000, &["tcp://127.0.0.1:0"]);
    let tcp = d.url("tcp://", false);
    let _rr = Pe::register(pe_config(&[&tcp], "mixed", 7)).expect("registered");
    let mut lu = pe_config(&[&tcp], "mixed", 8);
    lu.policy = Policy::LeastUsed { load: 1 };
    let error = Pe::register(lu).expect_err("another policy type is refused");
    assert_eq!(error, Error::Rejected { cause: Cause(0x5) });
    assert!(error.to_string().contains("Inconsistent Pooling Policy"));
}

#[test]
fn an_unreachable_registrar_is_named_with_the_os_error() {
    let port = closed_port();
    let registrar = format!("tcp://127.0.0.1:{port}");
    let error = pool_user(&registrar)
        .resolve("x")
        .expect_err("nobody listens");
    let Error::Unreachable(failures) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].registrar.to_string(), registrar);
    assert!(error.to_string().contains(&registrar));
    assert!(error.to_string().contains("refused"), "{error}");
    let e = Pe::register(pe_config(&[&registrar], "x", 7)).expect_err("nobody listens");
    assert!(matches!(e, Error::Unreachable(_)), "{e:?}");
}

/// The PE registers at one of two registrars; that one is killed (SIGKILL); the PE fails over to
/// the other, where a PU finds it.
#[test]
fn the_pe_fails_over_to_the_other_registrar_when_its_registrar_dies() {
    let mut a = Daemon::start(60_000, &["tcp://127.0.0.1:0"]);
    let mut b = Daemon::start(60_000, &["tcp://127.0.0.1:0"]);
    let (ua, ub) = (a.url("tcp://", false), b.url("tcp://", false));
    let pe = Pe::register(pe_config(&[&ua, &ub], "fo", 7)).expect("registered");
    let first = pe.registrar().expect("registered somewhere");
    let (dying, surviving, other_url) = if first == url(&ua).registrar {
        (&mut a, url(&ub).registrar, ub.clone())
    } else {
        (&mut b, url(&ua).registrar, ua.clone())
    };
    while pe.events().try_recv().is_ok() {}
    dying.child.kill().expect("SIGKILL");
    dying.child.wait().expect("reaped");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match pe.events().recv_timeout(left) {
            Ok(PeEvent::Registered {
                registrar,
                reregistration: true,
            }) => {
                assert_eq!(registrar, surviving);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("no failover: {e}"),
        }
    }
    assert_eq!(pe.registrar(), Some(surviving));
    let pes = pool_user(&other_url)
        .resolve("fo")
        .expect("found at the survivor");
    assert_eq!(ids(&pes), [pe.pe_id().0]);
}

/// A UDP port below the kernel's ephemeral range, free now (a restarted registrar binds it
/// again); each call of this process tries another.
fn fixed_udp_port() -> u16 {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let first = (std::process::id() as usize * 17 + call * 101) % 10_000;
    (0..10_000)
        .map(|i| 20_000 + ((first + i * 7) % 10_000) as u16)
        .find(|&port| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok())
        .expect("a free UDP port")
}

/// A PE of the library over `sctp+udp://` whose registrar is killed (SIGKILL) and started again
/// at once with the same command line: the PE's next re-registration meets a registrar that does
/// not know its association (answered with an ABORT, RFC 4960 §8.4), it associates again and
/// registers, and a PU over `sctp+udp://` finds it.
#[test]
fn a_pe_over_sctp_in_udp_registers_again_with_a_registrar_restarted_at_once() {
    let listen = format!("sctp+udp://127.0.0.1:{}", fixed_udp_port());
    let mut first = Daemon::start(60_000, &[&listen]);
    let registrar = first.url("sctp+udp://", false);
    let mut config = pe_config(&[&registrar], "restarted", 7);
    config.reregistration_interval = Some(500);
    let pe = Pe::register(config).expect("registered over SCTP in UDP");
    while pe.events().try_recv().is_ok() {}
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reaped");
    let _second = Daemon::start(60_000, &[&listen]);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match pe.events().recv_timeout(left) {
            Ok(PeEvent::Registered { .. }) => {
                let found = pool_user(&registrar).resolve("restarted");
                if found.as_ref().is_ok_and(|pes| ids(pes) == [pe.pe_id().0]) {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("not registered again at the restarted registrar: {e}"),
        }
    }
}

#[test]
fn the_ng_generation_carries_64_bit_pe_ids() {
    let d = Daemon::start(
        300,
        &["tcp://127.0.0.1:0", "mptcp://127.0.0.1:0?generation=ng"],
    );
    let ng = d.url("mptcp://", true);
    let mut fixed = pe_config(&[&ng], "wide", 7);
    fixed.pe_id = Some(PeId(0x0123_4567_89ab_cdef));
    let wide = Pe::register(fixed).expect("registered with a 64-bit ID");
    let random = Pe::register(pe_config(&[&ng], "wide", 8)).expect("registered");
    assert_ne!(random.pe_id().0, 0);
    let mut pu = pool_user(&ng);
    let pes = pu.resolve_items("wide", Some(10)).expect("resolved");
    let mut expected = vec![0x0123_4567_89ab_cdef, random.pe_id().0];
    expected.sort_unstable();
    assert_eq!(ids(&pes), expected);
    assert!(
        eventually(WAIT, || d.metric("rserpool_keep_alive_acks_total") >= 2.0),
        "NG keep-alives are acked"
    );
    assert_eq!(wide.state(), PeState::Registered);
    // An RFC pool user cannot be told about the 64-bit PE.
    let rfc = pool_user(&d.url("tcp://", false))
        .resolve_items("wide", Some(10))
        .map(|p| ids(&p));
    match rfc {
        Ok(seen) => assert!(!seen.contains(&0x0123_4567_89ab_cdef)),
        Err(e) => assert!(matches!(e, Error::UnknownPool { .. }), "{e:?}"),
    }
    let mut rfc_pe = pe_config(&[&d.url("tcp://", false)], "x", 7);
    rfc_pe.pe_id = Some(PeId(0x1_0000_0000));
    assert!(matches!(Pe::register(rfc_pe), Err(Error::Config(_))));
}

/// Checklist PU-02 end to end: a PU without configured registrars learns one from the
/// registrar's ASAP_SERVER_ANNOUNCEs and resolves there.
#[test]
fn a_pu_finds_a_registrar_by_its_announces() {
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let config = config_file(60_000);
    let args: Vec<String> = [
        "--config",
        &config.display().to_string(),
        "--workers",
        "1",
        "--metrics",
        "127.0.0.1:0",
        "--asap",
        "tcp://127.0.0.1:0",
        "--announce",
        &format!("udp://127.0.0.1:{port}"),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let d = Daemon::with_args(&args, 1);
    let tcp = d.url("tcp://", false);
    let pe = Pe::register(pe_config(&[&tcp], "ann", 7)).expect("registered");
    let options = Options {
        announce_listen: Some(([127, 0, 0, 1], port).into()),
        ..Options::default()
    };
    let mut config = pu::Config::new(vec![]);
    config.generation = Generation::Rfc;
    let mut pu = Pu::with_options(config, options).expect("announce socket");
    assert!(
        eventually(WAIT, || pu
            .resolve("ann")
            .is_ok_and(|p| ids(&p) == [pe.pe_id().0])),
        "resolved through an announced registrar"
    );
    let expected: Registrar = tcp.parse().unwrap();
    assert_eq!(pu.registrar(), Some(expected));
    assert!(pu.core().servers().contains(&expected));
}
