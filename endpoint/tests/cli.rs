//! The `rserpool` command line as processes against the real registrar: register until SIGTERM,
//! resolve as a table and as JSON, watch changes, status from the metrics, and its error
//! messages and exit codes.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;
use rserpool_endpoint::driver::Pe;
use rserpool_endpoint::pe;

const WAIT: Duration = Duration::from_secs(20);

fn rserpool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rserpool"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rserpool")
}

fn spawn(args: &[&str]) -> (Child, Lines, Lines) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rserpool"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rserpool");
    let out = Lines::new(child.stdout.take().expect("stdout"));
    let err = Lines::new(child.stderr.take().expect("stderr"));
    (child, out, err)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Sends SIGTERM to a child and waits for it with a generous timeout.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rserpool did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json_ids(o: &Output) -> Vec<u64> {
    let v: serde_json::Value = serde_json::from_str(&stdout(o)).expect("JSON output");
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|pe| pe["id"].as_u64().expect("numeric id"))
        .collect()
}

#[test]
fn register_runs_a_pe_until_sigterm_then_deregisters() {
    let d = Daemon::start(300, &["tcp://127.0.0.1:0"]);
    let tcp = d.url("tcp://", false);
    let (mut child, mut out, _err) = spawn(&[
        "register",
        "--registrar",
        &tcp,
        "--pool",
        "cli",
        "--policy",
        "wrr:2",
        "--port",
        "9999",
        "--life",
        "30000",
    ]);
    let line = out.wait_for(WAIT, |l| l.starts_with("registered PE "));
    assert!(line.ends_with(&format!("in pool cli at {tcp}")), "{line}");
    let id = line
        .split_whitespace()
        .nth(2)
        .expect("the PE ID")
        .to_owned();

    let o = rserpool(&["resolve", "--registrar", &tcp, "--pool", "cli", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(format!("{:#010x}", v[0]["id"].as_u64().unwrap()), id);
    assert_eq!(v[0]["port"], 9999);
    assert_eq!(v[0]["policy"], "wrr:2");
    assert_eq!(v[0]["addresses"][0], "127.0.0.1");

    let o = rserpool(&["resolve", "--registrar", &tcp, "--pool", "cli"]);
    let table = stdout(&o);
    assert!(table.starts_with("PE ID"), "{table}");
    assert!(
        table.contains(&id) && table.contains("127.0.0.1:9999"),
        "{table}"
    );

    // Keep-alives every 300 ms are answered while the process runs.
    assert!(eventually(WAIT, || d
        .metric("rserpool_keep_alive_acks_total")
        >= 2.0));

    let status = terminate(&mut child);
    assert!(status.success(), "{status:?}");
    let rest = out.rest();
    assert!(
        rest.iter().any(|l| l == &format!("deregistered PE {id}")),
        "{rest:?}"
    );
    assert_eq!(
        d.metric("rserpool_pe_removals_total{reason=\"deregistered\"}"),
        1.0
    );
    let o = rserpool(&["resolve", "--registrar", &tcp, "--pool", "cli"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown pool `cli` (cause 0x0009)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn register_without_a_port_serves_echo_and_works_over_mptcp_ng() {
    let d = Daemon::start(60_000, &["mptcp://127.0.0.1:0?generation=ng"]);
    let ng = d.url("mptcp://", true);
    let id = 0x0123_4567_89ab_cdef_u64;
    let (mut child, mut out, _err) = spawn(&[
        "register",
        "--registrar",
        &ng,
        "--pool",
        "wide",
        "--id",
        &id.to_string(),
    ]);
    let echo = out.wait_for(WAIT, |l| l.starts_with("serving echo on port "));
    let port: u16 = echo.rsplit(' ').next().unwrap().parse().unwrap();
    out.wait_for(WAIT, |l| l.starts_with("registered PE 0x123456789abcdef "));
    let o = rserpool(&["resolve", "--registrar", &ng, "--pool", "wide", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_ids(&o), [id]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["port"], port);
    // The echo service answers.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("echo service");
    s.set_read_timeout(Some(WAIT)).unwrap();
    std::io::Write::write_all(&mut s, b"ping").unwrap();
    let mut buf = [0u8; 4];
    std::io::Read::read_exact(&mut s, &mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    assert!(terminate(&mut child).success());
}

#[test]
fn a_refused_registration_names_the_cause_and_fails() {
    let d = Daemon::start(60_000, &["tcp://127.0.0.1:0"]);
    let tcp = d.url("tcp://", false);
    let o = rserpool(&["resolve", "--registrar", &tcp, "--pool", "mixed"]);
    assert_eq!(o.status.code(), Some(1), "no pool yet");
    let (mut first, mut out, _err) = spawn(&[
        "register",
        "--registrar",
        &tcp,
        "--pool",
        "mixed",
        "--port",
        "1",
    ]);
    out.wait_for(WAIT, |l| l.starts_with("registered PE "));
    let o = rserpool(&[
        "register",
        "--registrar",
        &tcp,
        "--pool",
        "mixed",
        "--port",
        "2",
        "--policy",
        "lu:25%",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(
            "registration refused by the registrar: Inconsistent Pooling Policy (cause 0x0005)"
        ),
        "{}",
        stderr(&o)
    );
    assert!(terminate(&mut first).success());
}

#[test]
fn an_unreachable_registrar_is_named_with_the_os_error() {
    let port = closed_port();
    let url = format!("tcp://127.0.0.1:{port}");
    for args in [
        vec!["resolve", "--registrar", &url, "--pool", "x"],
        vec![
            "register",
            "--registrar",
            &url,
            "--pool",
            "x",
            "--port",
            "1",
        ],
    ] {
        let o = rserpool(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let e = stderr(&o);
        assert!(
            e.contains(&format!(
                "no registrar reachable: {url}: Connection refused"
            )),
            "{e}"
        );
        assert!(e.contains("os error"), "{e}");
    }
}

/// An sctp:// registrar is accepted; on a kernel without SCTP the error says so, on one with SCTP
/// the closed port refuses the association.
#[test]
fn an_sctp_registrar_is_tried_and_a_kernel_without_sctp_is_named() {
    let url = format!("sctp://127.0.0.1:{}", closed_port());
    let o = rserpool(&["resolve", "--registrar", &url, "--pool", "x"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("no registrar reachable: {url}: ")),
        "{e}"
    );
    let sctp = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::SCTP),
    );
    if sctp.is_ok() {
        assert!(e.contains("Connection refused"), "{e}");
    } else {
        assert!(e.contains("SCTP is not available"), "{e}");
        assert!(e.contains("modprobe sctp"), "{e}");
    }
}

#[test]
fn bad_command_lines_are_refused_with_the_reason() {
    let o = rserpool(&[
        "resolve",
        "--registrar",
        "udp://127.0.0.1:3863",
        "--pool",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown scheme `udp`"),
        "{}",
        stderr(&o)
    );
    let o = rserpool(&[
        "register",
        "--registrar",
        "tcp://127.0.0.1:1",
        "--pool",
        "x",
        "--policy",
        "fifo",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown policy `fifo`"),
        "{}",
        stderr(&o)
    );
    let o = rserpool(&[
        "resolve",
        "--registrar",
        "tcp://127.0.0.1:1",
        "--registrar",
        "tcp://127.0.0.1:2?generation=ng",
        "--pool",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2), "a usage error");
    assert!(stderr(&o).contains("same generation"), "{}", stderr(&o));
    // An empty pool handle is refused before the echo service starts.
    let o = rserpool(&["register", "--registrar", "tcp://127.0.0.1:1", "--pool", ""]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--pool must name"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("serving echo"), "{}", stdout(&o));
}

#[test]
fn watch_prints_pes_as_they_come_and_go() {
    let d = Daemon::start(60_000, &["tcp://127.0.0.1:0"]);
    let tcp = d.url("tcp://", false);
    let (mut child, mut out, _err) = spawn(&[
        "watch",
        "--registrar",
        &tcp,
        "--pool",
        "w",
        "--interval",
        "100",
    ]);
    out.wait_for(WAIT, |l| l.contains("unknown pool `w`"));
    let mut config = pe::Config::new(vec![tcp.parse().unwrap()], "w");
    config.transport.port = 4242;
    let pe = Pe::register(config).expect("registered");
    let id = pe.pe_id().to_string();
    out.wait_for(WAIT, |l| l.contains("pool w: 1 PE(s)"));
    let added = out.wait_for(WAIT, |l| l.contains(" + "));
    assert!(
        added.contains(&id) && added.contains("127.0.0.1:4242"),
        "{added}"
    );
    drop(pe);
    out.wait_for(WAIT, |l| l.contains("unknown pool `w`"));
    assert!(terminate(&mut child).success());

    let o = rserpool(&[
        "watch",
        "--registrar",
        &tcp,
        "--pool",
        "w",
        "--interval",
        "10",
        "--count",
        "2",
    ]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o).lines().count(),
        1,
        "an unchanged error is printed once: {}",
        stdout(&o)
    );
}

#[test]
fn status_summarises_the_registrars_metrics() {
    let d = Daemon::start(60_000, &["tcp://127.0.0.1:0"]);
    let tcp = d.url("tcp://", false);
    let mut config = pe::Config::new(vec![tcp.parse().unwrap()], "st");
    config.transport.port = 7;
    let _pe = Pe::register(config).expect("registered");
    assert!(
        rserpool(&["resolve", "--registrar", &tcp, "--pool", "st"])
            .status
            .success()
    );
    let metrics = d.metrics.clone().expect("metrics");
    assert!(eventually(WAIT, || {
        let o = rserpool(&["status", "--metrics", &metrics]);
        let text = stdout(&o);
        o.status.success()
            && text.contains("pools:             1")
            && text.contains("pool elements:     1")
    }));
    let o = rserpool(&["status", "--metrics", &metrics]);
    let text = stdout(&o);
    assert!(text.starts_with("registrar 0x"), "{text}");
    assert!(
        text.contains("registrations:     1 accepted, 0 refused"),
        "{text}"
    );
    assert!(
        text.contains("resolutions:       1 found, 0 unknown pool"),
        "{text}"
    );
    assert!(text.contains("connections open:"), "{text}");
    let port = closed_port();
    let o = rserpool(&[
        "status",
        "--metrics",
        &format!("http://127.0.0.1:{port}/metrics"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Connection refused"), "{}", stderr(&o));
}

/// TLS (issue 17): a registrar whose only listener is `tcp+tls://` and requires client
/// certificates; `rserpool register` and `resolve` with `--tls-ca`, `--tls-certificate` and
/// `--tls-key` work as over TCP, and without the CA bundle or without a certificate they fail
/// with the reason.
#[test]
fn register_and_resolve_over_tls_with_client_certificates() {
    let dir = std::env::temp_dir().join(format!("rserpool-cli-tls-{}", std::process::id()));
    let pki = rserpool_net::TestPki::new(&dir, "cli-ca").unwrap();
    let server = pki
        .issue("registrar.example.net", &["127.0.0.1"], "registrar")
        .unwrap();
    let pe = pki
        .issue("pe.example.net", &["pe.example.net"], "pe")
        .unwrap();
    let config = dir.join("registrar.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncertificate = {:?}\nprivate_key = {:?}\nca = {:?}\n",
            server.certificate, server.private_key, server.ca
        ),
    )
    .unwrap();
    let d = Daemon::with_args(
        &[
            "--config".into(),
            config.display().to_string(),
            "--workers".into(),
            "1".into(),
            "--metrics".into(),
            "127.0.0.1:0".into(),
            "--asap".into(),
            "tcp+tls://127.0.0.1:0".into(),
        ],
        1,
    );
    let url = d.url("tcp+tls://", false);
    let (ca, cert, key) = (
        pe.ca.to_str().unwrap(),
        pe.certificate.to_str().unwrap(),
        pe.private_key.to_str().unwrap(),
    );
    let tls = ["--tls-ca", ca, "--tls-certificate", cert, "--tls-key", key];
    let (mut child, mut out, _err) = spawn(
        &[
            &[
                "register",
                "--registrar",
                &url,
                "--pool",
                "secure",
                "--port",
                "7",
            ][..],
            &tls,
        ]
        .concat(),
    );
    let line = out.wait_for(WAIT, |l| l.starts_with("registered PE "));
    assert!(
        line.ends_with(&format!("in pool secure at {url}")),
        "{line}"
    );
    let o = rserpool(
        &[
            &["resolve", "--registrar", &url, "--pool", "secure", "--json"][..],
            &tls,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_ids(&o).len(), 1);

    // Without the CA bundle: refused at once, with what to give. (Without a client
    // certificate the registrar refuses the handshake: registrar/tests/tls.rs.)
    let o = rserpool(&["resolve", "--registrar", &url, "--pool", "secure"]);
    assert_eq!(o.status.code(), Some(2), "a usage error");
    assert!(stderr(&o).contains("--tls-ca FILE"), "{}", stderr(&o));
    // The registrar from the environment, as scripts set it once.
    let o = Command::new(env!("CARGO_BIN_EXE_rserpool"))
        .args(["resolve", "--pool", "secure", "--json"])
        .args(tls)
        .env("RSERPOOL_REGISTRAR", &url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_ids(&o).len(), 1);
    let status = terminate(&mut child);
    assert!(status.success(), "{status:?}");
    assert!(out.rest().iter().any(|l| l.starts_with("deregistered PE ")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `rserpool completions SHELL` and `rserpool man-page` print what shells and `man` read, made
/// from the command line's own definition.
#[test]
fn completions_and_the_manual_page_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let o = rserpool(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        for word in ["register", "resolve", "--registrar", "--tls-ca"] {
            let name = word.trim_start_matches('-');
            assert!(script.contains(name), "{shell} lacks {word}");
        }
    }
    let o = rserpool(&["man-page"]);
    let page = stdout(&o);
    assert!(
        page.starts_with(".ie") && page.contains(".TH rserpool 1"),
        "{page}"
    );
    assert!(
        page.contains("register") && page.contains("resolve"),
        "{page}"
    );
}
