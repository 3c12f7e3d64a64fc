//! The `rserpool` command line as processes against the real registrar: register until SIGTERM,
//! resolve as a table and as JSON (over TCP and UDP), watch changes (pushed, or polled where the
//! registrar declines the subscription), status from the metrics, the configuration file and its
//! precedence, discovery by announces, and its error messages and exit codes, with every bad
//! command line refused before anything is bound or connected.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rserpool_endpoint::driver::Pe;
use rserpool_endpoint::pe;

const WAIT: Duration = Duration::from_secs(20);

/// `rserpool` with `args`, no configuration file and no `$RSERPOOL_REGISTRAR`: the tests see
/// only what they give.
fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rserpool"));
    c.args(args)
        .env("XDG_CONFIG_HOME", scratch("no-config"))
        .env_remove("RSERPOOL_REGISTRAR")
        .stdin(Stdio::null());
    c
}

fn rserpool(args: &[&str]) -> Output {
    command(args).output().expect("run rserpool")
}

fn spawn(args: &[&str]) -> (Child, Lines, Lines) {
    let mut child = command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rserpool");
    let out = Lines::new(child.stdout.take().expect("stdout"));
    let err = Lines::new(child.stderr.take().expect("stderr"));
    (child, out, err)
}

/// A directory of this test process named `name` (not created).
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rserpool-cli-{}-{name}", std::process::id()))
}

/// Writes `text` as `file` under a fresh scratch directory `dir`; returns the file's path.
fn write_config(dir: &str, file: &str, text: &str) -> PathBuf {
    let path = scratch(dir).join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

/// A UDP port on loopback that nothing listens on (bound, then released).
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("address").port()
}

/// A registrar with a TCP and a UDP ASAP listener and metrics, announcing itself to the
/// `announce` targets.
fn announcing_daemon(announce: &[String]) -> Daemon {
    let mut args = vec![
        "--config".to_owned(),
        config_file(60_000).display().to_string(),
        "--workers".into(),
        "1".into(),
        "--metrics".into(),
        "127.0.0.1:0".into(),
        "--asap".into(),
        "tcp://127.0.0.1:0".into(),
        "--asap".into(),
        "udp://127.0.0.1:0".into(),
    ];
    for target in announce {
        args.push("--announce".into());
        args.push(target.clone());
    }
    Daemon::with_args(&args, 2)
}

/// Registers a PE of `pool` at `registrar` (a `tcp://` URL) serving on `port`.
fn register_pe(registrar: &str, pool: &str, port: u16) -> rserpool_endpoint::driver::PeHandle {
    let mut config = pe::Config::new(vec![registrar.parse().unwrap()], pool);
    config.transport.port = port;
    Pe::register(config).expect("registered")
}

/// `head` followed by `tail`.
fn with<'a>(head: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    [head, tail].concat()
}

/// The ports of the PEs a `--json` resolution printed.
fn json_ports(o: &Output) -> Vec<u64> {
    let v: serde_json::Value = serde_json::from_str(&stdout(o)).expect("JSON output");
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|pe| pe["port"].as_u64().expect("numeric port"))
        .collect()
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
        &format!("{id:#x}"),
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
        "http://127.0.0.1:3863",
        "--pool",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown scheme `http`")
            && stderr(&o).contains("the scheme sctp, tcp, mptcp, udp or sctp+udp"),
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
    assert!(
        stderr(&o).contains("mix wire generations") && stderr(&o).contains("must use the same"),
        "{}",
        stderr(&o)
    );
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

/// A registrar with subscriptions turned off answers the S bit without the A bit (RFC 5352
/// §2.2.6), as RSPLIB's does: `watch` says once on stderr that it polls, and polling at
/// `--interval` prints the same lines as pushes.
#[test]
fn watch_polls_a_registrar_that_declines_the_subscription() {
    let config = write_config(
        "no-subscriptions",
        "registrar.toml",
        "[subscriptions]\nmax_per_association = 0\n",
    );
    let d = Daemon::with_args(
        &[
            "--config".into(),
            config.display().to_string(),
            "--workers".into(),
            "1".into(),
            "--metrics".into(),
            "127.0.0.1:0".into(),
            "--asap".into(),
            "tcp://127.0.0.1:0".into(),
        ],
        1,
    );
    let tcp = d.url("tcp://", false);
    let (mut child, mut out, mut err) = spawn(&[
        "watch",
        "--registrar",
        &tcp,
        "--pool",
        "polled",
        "--interval",
        "50",
    ]);
    let note = err.wait_for(WAIT, |l| l.contains("declined the subscription"));
    assert!(note.contains("polling every 50 ms"), "{note}");
    out.wait_for(WAIT, |l| l.contains("unknown pool `polled`"));
    let pe = register_pe(&tcp, "polled", 4545);
    let added = out.wait_for(WAIT, |l| l.contains(" + "));
    assert!(
        added.contains(&pe.pe_id().to_string()) && added.contains("127.0.0.1:4545"),
        "{added}"
    );
    drop(pe);
    out.wait_for(WAIT, |l| l.contains(" - "));
    out.wait_for(WAIT, |l| l.contains("unknown pool `polled`"));
    assert!(terminate(&mut child).success());
    let notes = err.rest();
    assert_eq!(
        notes.iter().filter(|l| l.contains("declined")).count(),
        1,
        "said once: {notes:?}"
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
    let o = command(&[&["resolve", "--pool", "secure", "--json"][..], &tls].concat())
        .env("RSERPOOL_REGISTRAR", &url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_ids(&o).len(), 1);

    // The registrar and the TLS files from a configuration file, the file names relative to its
    // directory; a flag replaces the file's value.
    let file = dir.join("rserpool.toml");
    std::fs::write(
        &file,
        format!(
            "registrar = {url:?}\n\n[tls]\nca = \"cli-ca.pem\"\ncertificate = \"pe.pem\"\n\
             key = \"pe.key\"\n"
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let o = rserpool(&["resolve", "--config", config, "--pool", "secure", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_ids(&o).len(), 1);
    let o = rserpool(&[
        "resolve",
        "--config",
        config,
        "--pool",
        "secure",
        "--tls-ca",
        "/nonexistent/ca.pem",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read /nonexistent/ca.pem (from --tls-ca)"),
        "{}",
        stderr(&o)
    );
    // A file that names a missing certificate is named with the line.
    std::fs::write(
        &file,
        "[tls]\nca = \"cli-ca.pem\"\ncertificate = \"missing.pem\"\nkey = \"pe.key\"\n",
    )
    .unwrap();
    let o = rserpool(&[
        "resolve",
        "--config",
        config,
        "--registrar",
        &url,
        "--pool",
        "secure",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("(from `tls.certificate` at {config}:3)")),
        "{}",
        stderr(&o)
    );

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

/// `resolve` and `watch` over `udp://`: one datagram to the registrar's UDP listener, printing
/// exactly what the same resolution over TCP prints; its errors are the TCP ones; `register`
/// needs a connection and refuses a `udp://` registrar.
#[test]
fn resolve_over_udp_prints_what_tcp_prints() {
    let d = announcing_daemon(&[]);
    let (tcp, udp) = (d.url("tcp://", false), d.url("udp://", false));
    let _a = register_pe(&tcp, "dgram", 1111);
    for extra in [&[][..], &["--json"], &["--items", "1", "--json"]] {
        let over = |registrar: &str| {
            let o = rserpool(
                &[
                    &["resolve", "--registrar", registrar, "--pool", "dgram"],
                    extra,
                ]
                .concat(),
            );
            assert!(o.status.success(), "{registrar} {extra:?}: {}", stderr(&o));
            stdout(&o)
        };
        let (by_tcp, by_udp) = (over(&tcp), over(&udp));
        assert_eq!(by_udp, by_tcp, "{extra:?}");
        assert!(by_udp.contains("1111"), "{by_udp}");
    }
    let _b = register_pe(&tcp, "dgram", 2222);
    let o = rserpool(&["resolve", "--registrar", &udp, "--pool", "dgram", "--json"]);
    let mut ports = json_ports(&o);
    ports.sort_unstable();
    assert_eq!(ports, [1111, 2222]);
    // Over UDP only: the registrar counts the datagram resolutions with the TCP ones.
    assert_eq!(
        d.metric("rserpool_resolutions_total{result=\"found\"}"),
        7.0
    );

    let o = rserpool(&["resolve", "--registrar", &udp, "--pool", "none"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown pool `none` (cause 0x0009)"),
        "{}",
        stderr(&o)
    );
    let closed = format!("udp://127.0.0.1:{}", free_udp_port());
    let o = rserpool(&["resolve", "--registrar", &closed, "--pool", "dgram"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "no registrar reachable: {closed}: Connection refused"
        )),
        "{}",
        stderr(&o)
    );
    // Failover: the closed listener first, then the registrar's.
    let o = rserpool(&[
        "resolve",
        "--registrar",
        &format!("{closed},{udp}"),
        "--pool",
        "dgram",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_ports(&o).len(), 2);

    let o = rserpool(&[
        "watch",
        "--registrar",
        &udp,
        "--pool",
        "dgram",
        "--interval",
        "10",
        "--count",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("pool dgram: 2 PE(s)"), "{text}");
    assert_eq!(text.lines().count(), 3, "unchanged: nothing more: {text}");
}

/// The configuration file names the registrar; `$RSERPOOL_REGISTRAR` overrides it and
/// `--registrar` overrides both; the default file is `$XDG_CONFIG_HOME/rserpool/config.toml`,
/// `--config` replaces it; a bad file is a usage error naming file and line.
#[test]
fn the_configuration_file_and_its_precedence() {
    let a = announcing_daemon(&[]);
    let b = announcing_daemon(&[]);
    let (tcp_a, tcp_b) = (a.url("tcp://", false), b.url("tcp://", false));
    let _in_a = register_pe(&tcp_a, "prec", 1111);
    let _in_b = register_pe(&tcp_b, "prec", 2222);
    let home = scratch("xdg");
    write_config(
        "xdg",
        "rserpool/config.toml",
        &format!("# where the registrar is\nregistrar = [{tcp_a:?}]\n"),
    );
    let resolve = |config: Option<&Path>, env: Option<&str>, flag: Option<&str>| {
        let mut args = vec!["resolve", "--pool", "prec", "--json"];
        if let Some(registrar) = flag {
            args.extend(["--registrar", registrar]);
        }
        let mut c = command(&args);
        if let Some(config) = config {
            c.arg("--config").arg(config);
        }
        c.env("XDG_CONFIG_HOME", &home);
        if let Some(env) = env {
            c.env("RSERPOOL_REGISTRAR", env);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        json_ports(&o)
    };
    assert_eq!(resolve(None, None, None), [1111], "the default file");
    assert_eq!(
        resolve(None, Some(&tcp_b), None),
        [2222],
        "environment > file"
    );
    assert_eq!(
        resolve(None, Some(&tcp_b), Some(&tcp_a)),
        [1111],
        "flag > environment"
    );
    let other = write_config("other", "b.toml", &format!("registrar = {tcp_b:?}\n"));
    assert_eq!(
        resolve(Some(&other), None, None),
        [2222],
        "--config > default"
    );

    // Every problem of a bad file, by line; nothing is connected.
    let bad = write_config(
        "bad",
        "config.toml",
        "registrar = [\"tcp://127.0.0.1:1\",\n  \"htp://127.0.0.1:2\"]\ndiscover_timeout = 5\n\
         [tls]\nca = 7\n",
    );
    let o = rserpool(&[
        "resolve",
        "--config",
        bad.to_str().unwrap(),
        "--registrar",
        &tcp_a,
        "--pool",
        "prec",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    let file = bad.display();
    for expected in [
        format!(
            "rserpool: {file}:2: `registrar` has a bad URL: bad transport URL `htp://127.0.0.1:2`: unknown scheme `htp`"
        ),
        format!(
            "rserpool: {file}:3: unknown key `discover_timeout` (known keys: registrar, discover, discover_timeout_ms"
        ),
        format!("rserpool: {file}:5: `tls.ca` must be a string in quotes"),
    ] {
        assert!(e.contains(&expected), "missing `{expected}` in\n{e}");
    }
    assert_eq!(e.lines().count(), 3, "{e}");
    assert!(stdout(&o).is_empty());
    let broken = write_config("broken", "config.toml", "registrar = \"tcp://127.0.0.1:1\n");
    let o = rserpool(&[
        "resolve",
        "--config",
        broken.to_str().unwrap(),
        "--pool",
        "p",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("{}:1: not valid TOML", broken.display())),
        "{}",
        stderr(&o)
    );
    let o = rserpool(&[
        "resolve",
        "--config",
        "/nonexistent/rserpool.toml",
        "--pool",
        "p",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read the configuration file /nonexistent/rserpool.toml"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        a.metric("rserpool_connections_opened_total"),
        3.0,
        "the three good runs"
    );
    for dir in ["xdg", "other", "bad", "broken"] {
        let _ = std::fs::remove_dir_all(scratch(dir));
    }
}

/// Without any registrar given, `rserpool` listens for the registrars' announces: here a
/// registrar announcing to a loopback port, named by `--discover` or by `discover` in the
/// configuration file; `register` and `resolve` then use the registrar announced.
#[test]
fn discovery_finds_the_registrar_by_its_announces() {
    let port = free_udp_port();
    let group = format!("udp://127.0.0.1:{port}");
    let d = announcing_daemon(std::slice::from_ref(&group));
    let tcp = d.url("tcp://", false);
    let _pe = register_pe(&tcp, "found", 4242);

    let o = rserpool(&["resolve", "--discover", &group, "--pool", "found"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("127.0.0.1:4242"), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(e.starts_with("rserpool: using registrar 0x"), "{e}");
    assert!(
        e.contains(&format!("at {tcp}, announced on {group}")),
        "{e}"
    );

    // From the configuration file, for a PE that then runs until SIGTERM.
    let config = write_config(
        "discover",
        "config.toml",
        &format!("discover = {group:?}\n"),
    );
    let (mut child, mut out, _err) = spawn(&[
        "register",
        "--config",
        config.to_str().unwrap(),
        "--pool",
        "found",
        "--port",
        "4343",
    ]);
    let line = out.wait_for(WAIT, |l| l.starts_with("registered PE "));
    assert!(line.ends_with(&format!("in pool found at {tcp}")), "{line}");
    assert_eq!(d.metric("rserpool_pool_elements"), 2.0);
    assert!(terminate(&mut child).success());
    let _ = std::fs::remove_dir_all(scratch("discover"));
}

/// Nothing announced within the timeout: exit 1 with where `rserpool` listened, for how long,
/// and where a registrar could have been given.
#[test]
fn no_announcement_heard_is_a_clear_error() {
    let group = format!("udp://127.0.0.1:{}", free_udp_port());
    let config = write_config(
        "silent",
        "config.toml",
        &format!("discover = {group:?}\ndiscover_timeout_ms = 300\n"),
    );
    let started = Instant::now();
    let o = rserpool(&[
        "resolve",
        "--config",
        config.to_str().unwrap(),
        "--pool",
        "p",
    ]);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(o.status.code(), Some(1));
    let expected = format!(
        "rserpool: no registrar given (--registrar, $RSERPOOL_REGISTRAR, `registrar` in {}) and \
         no announcement heard on {group} within 0.3 s: give a registrar with --registrar URL",
        config.display()
    );
    assert!(stderr(&o).starts_with(&expected), "{}", stderr(&o));

    let o = rserpool(&[
        "register",
        "--discover",
        &group,
        "--discover-timeout",
        "200",
        "--pool",
        "p",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "no announcement heard on {group} within 0.2 s (--discover)"
        )),
        "{}",
        stderr(&o)
    );
    assert!(
        !stdout(&o).contains("serving echo"),
        "nothing served before a registrar is known"
    );

    // With nothing configured at all: RSPLIB's announce group (joining it may fail where
    // multicast has no route; the error then says so and names the group too).
    let o = rserpool(&["resolve", "--pool", "p", "--discover-timeout", "200"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("udp://239.0.0.50:3863"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(scratch("silent"));
}

/// Every argument is checked before anything is bound, connected or started: each bad command
/// line exits with 2 and the reason, prints nothing (no echo service), and the registrar sees
/// no connection, no datagram and no registration.
#[test]
fn bad_arguments_are_refused_before_anything_starts() {
    // Nothing announces here: a command that listened before checking would wait 10 s.
    let group = format!("udp://127.0.0.1:{}", free_udp_port());
    let d = announcing_daemon(&[]);
    let (tcp, udp) = (d.url("tcp://", false), d.url("udp://", false));
    let long = "x".repeat(33);
    let register = ["register", "--registrar", tcp.as_str()];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            with(&register, &["--pool", ""]),
            "--pool must name a pool handle",
        ),
        (
            with(&register, &["--pool", &long]),
            "--pool is 33 bytes long",
        ),
        (
            with(&register, &["--pool", "p", "--port", "0"]),
            "--port 0 is no port",
        ),
        (
            with(&register, &["--pool", "p", "--address", "0.0.0.0"]),
            "not an address users can reach",
        ),
        (
            with(&register, &["--pool", "p", "--address", "203.0.113.7"]),
            "not an address of this host",
        ),
        (
            with(&register, &["--pool", "p", "--life", "0"]),
            "--life must be 1 to 2147483647 ms",
        ),
        (
            with(&register, &["--pool", "p", "--reregister", "90000"]),
            "longer than --life 60000",
        ),
        (
            with(&register, &["--pool", "p", "--id", "0"]),
            "--id 0 means",
        ),
        (
            with(&register, &["--pool", "p", "--id", "0x100000000"]),
            "does not fit the RFC generation",
        ),
        (
            with(&register, &["--pool", "p", "--id", "12z"]),
            "decimal or 0x hex",
        ),
        (
            with(&register, &["--pool", "p", "--policy", "lu:101%"]),
            "between 0% and 100%",
        ),
        (
            with(&register, &["--pool", "p", "--policy", "wrr"]),
            "takes 1 value",
        ),
        (
            with(&register, &["--pool", "p", "--tls-key", "/k.pem"]),
            "needs its certificate",
        ),
        (
            vec!["register", "--registrar", &udp, "--pool", "p"],
            "register needs a connection",
        ),
        (
            vec![
                "register",
                "--discover",
                &group,
                "--discover-timeout",
                "10000",
                "--pool",
                "",
            ],
            "--pool must name",
        ),
        (
            vec!["resolve", "--registrar", &udp, "--pool", &long],
            "--pool is 33 bytes long",
        ),
        (
            vec![
                "resolve",
                "--registrar",
                &udp,
                "--pool",
                "p",
                "--items",
                "0",
            ],
            "--items must be at least 1",
        ),
        (
            vec![
                "resolve",
                "--registrar",
                &tcp,
                "--registrar",
                &udp,
                "--pool",
                "p",
            ],
            "mix udp:// with connections",
        ),
        (
            vec![
                "watch",
                "--registrar",
                &tcp,
                "--pool",
                "p",
                "--interval",
                "0",
            ],
            "--interval must be at least 10 ms",
        ),
        (
            vec!["watch", "--registrar", &udp, "--pool", "p", "--count", "0"],
            "--count must be at least 1",
        ),
        (
            vec!["status", "--metrics", "http://localhost/metrics"],
            "needs a host and a port",
        ),
    ];
    for (args, reason) in &cases {
        let started = Instant::now();
        let o = rserpool(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(reason), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?} printed {}", stdout(&o));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?} waited (for announces?)"
        );
    }
    for metric in [
        "rserpool_connections_opened_total",
        "rserpool_messages_received_total",
        "rserpool_registrations_total",
    ] {
        assert_eq!(d.metric(metric), 0.0, "{metric}");
    }
}
