//! Interoperation with RSPLIB (Debian's `rsplib-tools` and `rsplib-registrar`) over SCTP in UDP
//! (RFC 6951): RSPLIB runs on Linux's kernel SCTP with encapsulation on (`net.sctp.udp_port` and
//! `net.sctp.encap_port` = 9899), our registrar serves `sctp+udp://` in user space. Linux sets
//! both per network namespace, so our registrar runs in a namespace of its own (`rsp-ours`,
//! reached over a veth pair: 10.99.0.1 is RSPLIB's side, 10.99.0.2 and 10.99.0.3 ours), where
//! nothing of the kernel's binds UDP 9899. Every scenario once on each I/O driver
//! (`io_uring::*`, `epoll::*`):
//!
//! - `rsplib_pe_and_pu_through_our_registrar_over_udp_encapsulation`: `rspserver` registers at
//!   our `sctp+udp://10.99.0.2:9899` (checked over our TCP listener: an SCTP user transport at
//!   10.99.0.1), acks keep-alives and re-registers; `rspterminal` resolves through our registrar
//!   and echoes lines through the PE (PU to PE is kernel to kernel over UDP 9899); stopped, the
//!   PE leaves the pool.
//! - `rsplib_registrar_and_ours_share_a_scope_over_udp_encapsulation`: `rspregistrar` (kernel
//!   SCTP, encapsulated) and ours (ENRP on `sctp+udp://10.99.0.3:9899`, ASAP on
//!   `sctp+udp://10.99.0.2:9899`: one protocol per UDP address and port) name each other as
//!   peers; an `rspserver` registered at each registrar is resolvable at the other with its home
//!   PR (at ours over TCP; at RSPLIB's by `rspterminal` echoing through the PE registered at
//!   ours). A kernel SCTP association of the test's own registers with 1.4 KB (one datagram
//!   above 1 200 bytes, answered at once) and 3.2 KB (the kernel's GSO super-packet, which veth
//!   delivers unsegmented with CRC32c 0: our registrar drops it, and the kernel's
//!   retransmissions complete the message about a second later). The veth is captured
//!   meanwhile (`tcpdump`), and `tshark` must decode the capture as
//!   SCTP in UDP 9899 with ASAP and ENRP inside, every CRC32c right, nothing malformed and no
//!   expert error; the capture stays in cargo's `CARGO_TARGET_TMPDIR`
//!   (`sctp-udp-interop-DRIVER.pcap`).
//!
//! And once (our registrar takes no part):
//!
//! - `our_pe_and_pu_through_rsplib_registrar_over_udp_encapsulation`: our side in namespace
//!   `rsp-ours` as another host: `rspregistrar` (kernel SCTP, encapsulated) at 10.99.0.1, and
//!   our library's `Connection`s over `sctp+udp://10.99.0.1:9899`: a PE (10.99.0.2) registers
//!   an SCTP user transport, served by a user-space SCTP echo service on UDP 10.99.0.2:9899,
//!   and acks rspregistrar's keep-alives (every 500 ms) for several time-outs; a PU
//!   (10.99.0.3) resolves the pool and finds the PE with its ID, port and address. The CLI
//!   registers too (`rserpool register`, found beside the test binary's directory: built by
//!   `cargo build -p rserpool-endpoint`, or .ci/run's workspace tests), is resolved by our PU,
//!   and deregisters on SIGINT; `rserpool resolve --json` lists our PE; `rspterminal` resolves
//!   the pool at rspregistrar and echoes through our PE. The veth capture
//!   (`sctp-udp-interop-clients.pcap`) must decode as above, with the ASAP our PE and PU send
//!   (registration, resolution, keep-alive ack) and rspregistrar's answers.
//!
//! The build host has no kernel SCTP, so this target is `test = false` and runs in user-mode
//! Linux (as root in the guest), after `cargo build -p rserpool-registrar`:
//! `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/uml-run.sh cargo test -p rserpool-registrar --test sctp_udp_interop -- --test-threads=1`.
//! It needs `ip` (iproute2, with `ip netns`), the veth module (the runner loads it), RSPLIB's
//! tools, `tcpdump` and `tshark` on the host (the guest sees the host's files). Without one of
//! them a test fails with the reason; none skips.

mod common;

use common::tool::Tool;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{StreamClient, accepted, encode, eventually, resolution, sctp_registration};
use rserpool_net::sctp_udp::{EndpointConfig, EndpointEvent, SctpUdpEndpoint};
use rserpool_net::{Connection, SctpClient, Transport, sctp_support};
use rserpool_protocol::{
    AsapMessage, Generation, PPID_ASAP, PeId, Policy, PoolElementParam, PoolHandle, PrId,
    Resolution, Seq, TransportKind, TransportParam, UserTransport,
};

const RFC: Generation = Generation::Rfc;
/// How long a step may take (UML's syscalls cost about 50 µs each).
const WAIT: Duration = Duration::from_secs(10);
/// Our registrar's network namespace.
const NS: &str = "rsp-ours";
/// The default namespace's end of the veth pair: RSPLIB's address.
const RSPLIB: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// Our registrar's ASAP address.
const OUR_ASAP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// Our registrar's ENRP address (a UDP address and port carry one protocol).
const OUR_ENRP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
/// RFC 6951's UDP port, on both sides.
const ENCAP_PORT: u16 = 9899;

common::on_both_drivers!(
    rsplib_pe_and_pu_through_our_registrar_over_udp_encapsulation,
    rsplib_registrar_and_ours_share_a_scope_over_udp_encapsulation,
);

/// Runs `program` with `args`, failing the test with its output unless it succeeds.
fn run(program: &str, args: &[&str]) -> String {
    let what = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sets up the guest's network once per boot: encapsulation on in the default namespace
/// (kernel SCTP sends to UDP 9899 and receives on it), namespace [`NS`] joined to it by the veth
/// pair `rspv0` (10.99.0.1) / `rspv1` (10.99.0.2, 10.99.0.3), with the kernel's encapsulation off
/// there (its UDP port is ours). Refuses to touch any other machine's network.
fn with_test_net() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        assert!(
            cpu.contains("User Mode Linux"),
            "this test adds a network namespace and a veth pair and sets net.sctp sysctls: run \
             it in user-mode Linux (ci/uml-run.sh), not on this machine"
        );
        if let Err(e) = sctp_support() {
            panic!("RSPLIB's side needs kernel SCTP: {e}");
        }
        for sysctl in ["udp_port", "encap_port"] {
            let path = format!("/proc/sys/net/sctp/{sysctl}");
            std::fs::write(&path, ENCAP_PORT.to_string()).unwrap_or_else(|e| {
                panic!("cannot set net.sctp.{sysctl} (Linux 5.11 or later has it): {path}: {e}")
            });
        }
        let rsplib = format!("{RSPLIB}/24");
        let (asap, enrp) = (format!("{OUR_ASAP}/24"), format!("{OUR_ENRP}/24"));
        let steps: [&[&str]; 9] = [
            &["netns", "add", NS],
            &[
                "link", "add", "rspv0", "type", "veth", "peer", "name", "rspv1",
            ],
            &["link", "set", "rspv1", "netns", NS],
            &["addr", "add", &rsplib, "dev", "rspv0"],
            &["link", "set", "rspv0", "up"],
            &["-n", NS, "addr", "add", &asap, "dev", "rspv1"],
            &["-n", NS, "addr", "add", &enrp, "dev", "rspv1"],
            &["-n", NS, "link", "set", "rspv1", "up"],
            &["-n", NS, "link", "set", "lo", "up"],
        ];
        for args in steps {
            run("ip", args);
        }
        let theirs = run(
            "ip",
            &["netns", "exec", NS, "cat", "/proc/sys/net/sctp/udp_port"],
        );
        assert_eq!(
            theirs.trim(),
            "0",
            "the kernel's SCTP in UDP is off in {NS}: our registrar binds UDP {ENCAP_PORT} there"
        );
    });
}

/// Our registrar as a process in namespace [`NS`] (`ip netns exec`, which execs it: the child
/// is the registrar itself), killed on drop.
struct Ours {
    child: Child,
    /// The bound ASAP listeners, as printed.
    listeners: Vec<String>,
    metrics: SocketAddr,
    /// Its standard error so far (the log).
    stderr: Arc<Mutex<String>>,
}

impl Ours {
    /// Starts the registrar on `driver` with one worker, metrics on [`OUR_ASAP`], the
    /// configuration file `config_text` and `args`; waits until it prints its listeners.
    fn start(driver: &str, config_text: &str, args: &[String]) -> Self {
        let config = std::env::temp_dir().join(format!(
            "rserpool-sctp-udp-interop-{}-{driver}.toml",
            std::process::id()
        ));
        std::fs::write(&config, config_text).unwrap();
        let metrics = format!("{OUR_ASAP}:0");
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                NS,
                env!("CARGO_BIN_EXE_rserpool-registrar"),
            ])
            .args(["--config", config.to_str().unwrap(), "--driver", driver])
            .args(["--workers", "1", "--metrics", &metrics])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("ip netns exec {NS} rserpool-registrar: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let log = Arc::clone(&stderr);
        let from = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (tx, rx) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let expected = args.iter().filter(|a| *a == "--asap").count();
        let expected_enrp = args.iter().filter(|a| *a == "--enrp").count();
        let (mut listeners, mut enrp, mut metrics) = (Vec::new(), 0, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while listeners.len() < expected || enrp < expected_enrp || metrics.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "our registrar did not come up in {NS}; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            };
            if let Some(url) = line.strip_prefix("listening asap ") {
                listeners.push(url.to_owned());
            } else if line.starts_with("listening enrp ") {
                enrp += 1;
            } else if let Some(m) = line.strip_prefix("metrics http://") {
                metrics = Some(m.trim_end_matches("/metrics").parse().unwrap());
            }
        }
        Self {
            child,
            listeners,
            metrics: metrics.unwrap(),
            stderr,
        }
    }

    /// The address of the TCP ASAP listener.
    fn tcp_asap(&self) -> SocketAddr {
        self.listeners
            .iter()
            .find_map(|u| u.strip_prefix("tcp://")?.parse().ok())
            .unwrap_or_else(|| panic!("no tcp:// listener in {:?}", self.listeners))
    }

    /// The metrics text.
    fn scrape(&self) -> String {
        let mut s = TcpStream::connect(self.metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        response
    }

    /// The sum of the samples whose line starts with `prefix` (name and labels).
    fn metric(&self, prefix: &str) -> f64 {
        self.scrape()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Its log so far.
    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pool element as a resolution names it.
#[derive(Debug)]
struct Pe {
    id: u64,
    home: u64,
    kind: TransportKind,
    port: u16,
    addresses: Vec<IpAddr>,
}

/// Resolves `handle` over a TCP association with the ASAP listener at `asap`: the PEs sorted
/// by ID, or the error cause.
fn resolve(asap: SocketAddr, handle: &[u8]) -> Result<Vec<Pe>, u16> {
    let mut pu = StreamClient::tcp(asap, RFC);
    pu.send_raw(&resolution(handle, Some(128), RFC));
    pool_elements(&pu.recv_answering_keep_alives())
}

/// The PEs of the handle resolution response `bytes` sorted by ID, or the error cause.
fn pool_elements(bytes: &[u8]) -> Result<Vec<Pe>, u16> {
    let AsapMessage::HandleResolutionResponse { resolution, .. } =
        AsapMessage::decode(bytes, RFC).expect("decodable").message
    else {
        panic!("not a resolution response: {bytes:?}");
    };
    match resolution {
        Resolution::Found {
            policy,
            pool_elements,
        } => {
            assert!(policy.is_some(), "no pool policy (RSPLIB's PUs need it)");
            let mut pes: Vec<Pe> = pool_elements
                .iter()
                .map(|pe| match pe.user_transport {
                    UserTransport::Transport(t) => Pe {
                        id: pe.id.0,
                        home: pe.home_pr.0,
                        kind: t.kind,
                        port: t.port,
                        addresses: t.addresses.iter().collect(),
                    },
                    UserTransport::Opaque(_) => panic!("opaque transport in {bytes:?}"),
                })
                .collect();
            pes.sort_by_key(|p| p.id);
            Ok(pes)
        }
        Resolution::Failed(causes) => Err(causes.iter().next().map_or(0, |c| c.code)),
    }
}

/// Waits up to `limit` for exactly one PE in `handle` at `asap` and returns it.
fn one_pe(
    asap: SocketAddr,
    handle: &str,
    limit: Duration,
    mut diagnose: impl FnMut() -> String,
) -> Pe {
    let mut found = Err(0);
    let registered = eventually(limit, || {
        found = resolve(asap, handle.as_bytes());
        found.as_ref().is_ok_and(|pes| pes.len() == 1)
    });
    assert!(
        registered,
        "{handle} at {asap}: {found:?} within {limit:?}; {}",
        diagnose()
    );
    found.unwrap().remove(0)
}

/// A line through `rspterminal` (PU) and back from the PE `pe_id`, resolved at `registrar`.
fn echo_through(registrar: SocketAddr, pool: &str, pe_id: u64, lines: &[&str]) {
    let mut terminal = Tool::start("rspterminal", &rsplib_common(registrar, pool));
    for line in lines {
        let stdin = terminal.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        let echoed = terminal.wait_for_line(line);
        eprintln!("rspterminal: {echoed}");
        assert!(
            echoed.contains(&format!("from PE ${pe_id:08x}")),
            "{echoed}"
        );
    }
}

/// RSPLIB's options common to its tools here.
fn rsplib_common(registrar: SocketAddr, pool: &str) -> Vec<String> {
    vec![
        format!("-registrar={registrar}"),
        format!("-poolhandle={pool}"),
        "-asapannounce=off".to_owned(),
        "-logcolor=off".to_owned(),
        "-loglevel=2".to_owned(),
    ]
}

/// An echo PE (`rspserver`) registering at `registrar`, re-registering every second.
fn rspserver(registrar: SocketAddr, pool: &str) -> Tool {
    let mut args = vec!["-echo".to_owned(), "-rereginterval=1000".to_owned()];
    args.extend(rsplib_common(registrar, pool));
    Tool::start("rspserver", &args)
}

/// An ASAP_REGISTRATION of PE `id` in `handle` over SCTP at `addresses` addresses: [`RSPLIB`]
/// and the rest of 198.18.0.0/15 (not on the association: the registrar drops them); about 60 +
/// 8 × `addresses` bytes.
fn sized_registration(handle: &[u8], id: u64, addresses: u16) -> Vec<u8> {
    let mut all = vec![IpAddr::V4(RSPLIB)];
    all.extend((1..addresses).map(|i| {
        let [c, d] = i.to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(198, 18, c, d))
    }));
    let addresses = all;
    encode(
        &AsapMessage::Registration {
            pool_handle: PoolHandle(handle),
            pool_element: PoolElementParam {
                id: PeId(id),
                home_pr: PrId(0),
                registration_life: 60_000,
                user_transport: UserTransport::Transport(TransportParam {
                    kind: TransportKind::Sctp,
                    port: 4711,
                    transport_use: 0,
                    service_code: 0,
                    addresses: Seq::from_items(&addresses),
                }),
                policy: Policy::RoundRobin,
                asap_transport: None,
            },
        },
        RFC,
    )
}

/// Keep-alives every 250 ms (1 s to ack them), so that a short test sees some.
const KEEP_ALIVE_CONFIG: &str = "[timers]\n\
    keep_alive_interval_ms = 250\n\
    keep_alive_timeout_ms = 1000\n";

fn rsplib_pe_and_pu_through_our_registrar_over_udp_encapsulation(driver: &str) {
    with_test_net();
    let sctp_udp = format!("sctp+udp://{OUR_ASAP}:{ENCAP_PORT}");
    let ours = Ours::start(
        driver,
        KEEP_ALIVE_CONFIG,
        &[
            "--asap".to_owned(),
            sctp_udp.clone(),
            "--asap".to_owned(),
            format!("tcp://{OUR_ASAP}:0"),
            "--enrp".to_owned(),
            format!("tcp://{OUR_ASAP}:0"),
        ],
    );
    assert!(ours.listeners.contains(&sctp_udp), "{:?}", ours.listeners);
    let tcp = ours.tcp_asap();
    let registrar = SocketAddr::new(OUR_ASAP.into(), rserpool_protocol::ASAP_PORT);
    let mut server = rspserver(registrar, "UdpEncapPool");

    // rspserver's kernel SCTP associates over UDP 9899 and registers an SCTP user transport at
    // its address on the veth.
    let pe = one_pe(tcp, "UdpEncapPool", WAIT, || {
        format!(
            "rspserver printed:\n{}\nour registrar logged:\n{}",
            server.output(),
            ours.log()
        )
    });
    eprintln!("rspserver registered over SCTP in UDP: {pe:?}");
    assert_eq!(pe.kind, TransportKind::Sctp);
    assert_ne!(pe.port, 0);
    assert_eq!(pe.addresses, [IpAddr::V4(RSPLIB)]);
    assert!(ours.metric("rserpool_connections_opened_total{transport=\"sctp_udp\"") >= 1.0);

    // rspterminal resolves through our registrar over SCTP in UDP and echoes through the PE.
    let resolutions = ours.metric("rserpool_resolutions_total{result=\"found\"}");
    echo_through(
        registrar,
        "UdpEncapPool",
        pe.id,
        &["hello over SCTP in UDP", "a second line", "and a third"],
    );
    assert!(ours.metric("rserpool_resolutions_total{result=\"found\"}") > resolutions);

    // rspserver acks keep-alives and re-registers; nothing either side sent was refused or
    // undecodable.
    assert!(
        eventually(WAIT, || {
            ours.metric("rserpool_keep_alive_acks_total") >= 2.0
                && ours.metric("rserpool_registrations_total{result=\"accepted\"}") >= 2.0
        }),
        "{}",
        ours.scrape()
    );
    for series in [
        "rserpool_registrations_total{result=\"accepted\"}",
        "rserpool_keep_alive_acks_total",
        "rserpool_connections_opened_total{transport=\"sctp_udp\"}",
    ] {
        eprintln!("{series} {}", ours.metric(series));
    }
    assert_eq!(
        ours.metric("rserpool_registrations_total"),
        ours.metric("rserpool_registrations_total{result=\"accepted\"}")
    );
    assert_eq!(ours.metric("rserpool_decode_errors_total"), 0.0);
    assert_eq!(
        ours.metric("rserpool_messages_received_total{protocol=\"asap\",type=\"error\""),
        0.0
    );
    assert_eq!(
        ours.metric("rserpool_pe_removals_total{reason=\"keep_alive_timeout\"}"),
        0.0
    );

    // Stopped, rspserver leaves the pool.
    let status = server.stop("INT");
    eprintln!("rspserver exited with {status}");
    assert!(
        eventually(WAIT, || matches!(
            resolve(tcp, b"UdpEncapPool"),
            Err(rserpool_protocol::cause::UNKNOWN_POOL_HANDLE)
        )),
        "rspserver is still in the pool"
    );
    let removed = ours.metric("rserpool_pe_removals_total{reason=\"deregistered\"}")
        + ours.metric("rserpool_pe_removals_total{reason=\"association_closed\"}");
    assert_eq!(removed, 1.0);
}

/// Our scope member's timers: RSPLIB's fast ones below, about.
const SCOPE_CONFIG: &str = "[timers]\n\
    keep_alive_interval_ms = 60000\n\
    [enrp]\n\
    heartbeat_interval_ms = 500\n\
    max_time_last_heard_ms = 1000\n\
    max_time_no_response_ms = 1000\n\
    mentor_discovery_timeout_ms = 1000\n\
    takeover_expiry_ms = 3000\n\
    reconnect_interval_ms = 500\n";

/// RSPLIB's registrar ID in the scope, and ours.
const RSPLIB_ID: u64 = 34;
const OUR_ID: u64 = 17;

fn rsplib_registrar_and_ours_share_a_scope_over_udp_encapsulation(driver: &str) {
    with_test_net();
    let pcap =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sctp-udp-interop-{driver}.pcap"));
    let _ = std::fs::remove_file(&pcap);
    let mut tcpdump = Tool::start(
        "tcpdump",
        &[
            "-i".to_owned(),
            "rspv0".to_owned(),
            "-s".to_owned(),
            "0".to_owned(),
            "-U".to_owned(),
            // Each packet as it comes: a SIGINT loses what the capture buffer holds.
            "--immediate-mode".to_owned(),
            // Writes as root: the target directory is the host user's.
            "-Z".to_owned(),
            "root".to_owned(),
            "-w".to_owned(),
            pcap.to_str().unwrap().to_owned(),
            format!("udp port {ENCAP_PORT}"),
        ],
    );
    tcpdump.wait_for_line("listening on rspv0");

    let ours = Ours::start(
        driver,
        SCOPE_CONFIG,
        &[
            "--id".to_owned(),
            OUR_ID.to_string(),
            "--asap".to_owned(),
            format!("sctp+udp://{OUR_ASAP}:{ENCAP_PORT}"),
            "--asap".to_owned(),
            format!("tcp://{OUR_ASAP}:0"),
            "--enrp".to_owned(),
            format!("sctp+udp://{OUR_ENRP}:{ENCAP_PORT}"),
            "--peer".to_owned(),
            format!("sctp+udp://{RSPLIB}:{ENCAP_PORT}"),
        ],
    );
    let (asap, enrp) = (rserpool_protocol::ASAP_PORT, rserpool_protocol::ENRP_PORT);
    let mut rspregistrar = Tool::start(
        "rspregistrar",
        &[
            format!("-asap={RSPLIB}:{asap}"),
            format!("-enrp={RSPLIB}:{enrp}"),
            format!("-peer={OUR_ENRP}:{enrp}"),
            format!("-identifier={RSPLIB_ID}"),
            "-asapannounce=off".to_owned(),
            "-enrpannounce=off".to_owned(),
            "-logcolor=off".to_owned(),
            "-loglevel=2".to_owned(),
            "-peerheartbeatcycle=1000".to_owned(),
            "-peermaxtimelastheard=2500".to_owned(),
            "-peermaxtimenoresponse=1000".to_owned(),
            "-takeoverexpiryinterval=3000".to_owned(),
            "-mentordiscoverytimeout=1000".to_owned(),
        ],
    );
    assert!(
        eventually(WAIT, || ours.metric("rserpool_enrp_peers") == 1.0),
        "no ENRP peering with rspregistrar over SCTP in UDP; rspregistrar printed:\n{}\nour \
         registrar logged:\n{}",
        rspregistrar.output(),
        ours.log()
    );

    let their_registrar = SocketAddr::new(RSPLIB.into(), asap);
    let our_registrar = SocketAddr::new(OUR_ASAP.into(), asap);
    let mut at_rsplib = rspserver(their_registrar, "AtRsplib");
    let mut at_ours = rspserver(our_registrar, "AtOurs");

    // Ours resolves both, each with its home PR: RSPLIB's PE came over ENRP in UDP.
    let tcp = ours.tcp_asap();
    let limit = Duration::from_secs(20);
    let theirs = one_pe(tcp, "AtRsplib", limit, || {
        format!(
            "rspserver printed:\n{}\nrspregistrar printed:\n{}\nour registrar logged:\n{}",
            at_rsplib.output(),
            rspregistrar.output(),
            ours.log()
        )
    });
    let mine = one_pe(tcp, "AtOurs", limit, || {
        format!("rspserver printed:\n{}", at_ours.output())
    });
    eprintln!("at ours: {theirs:?} and {mine:?}");
    assert_eq!(theirs.home, RSPLIB_ID, "{theirs:?}");
    assert_eq!(mine.home, OUR_ID, "{mine:?}");
    assert_eq!(theirs.addresses, [IpAddr::V4(RSPLIB)]);

    // RSPLIB's registrar has ours: rspterminal resolves there and echoes through the PE that
    // registered at ours (with retries: RSPLIB's handlespace may not have it yet).
    let mut replicated = false;
    for _ in 0..3 {
        let mut terminal = Tool::start("rspterminal", &rsplib_common(their_registrar, "AtOurs"));
        let stdin = terminal.child.stdin.as_mut().unwrap();
        writeln!(stdin, "through RSPLIB's registrar").unwrap();
        let line = terminal.wait_for_line("through RSPLIB's registrar");
        eprintln!("rspterminal at rspregistrar: {line}");
        if line.contains(&format!("from PE ${:08x}", mine.id)) {
            replicated = true;
            break;
        }
    }
    assert!(
        replicated,
        "rspregistrar did not resolve the PE registered at ours; it printed:\n{}",
        rspregistrar.output()
    );
    // And the other way: through ours to the PE registered at RSPLIB's.
    echo_through(our_registrar, "AtRsplib", theirs.id, &["through ours"]);

    // A kernel SCTP PE of the test's own (in the default namespace, so encapsulated) registers
    // with 1.4 KB: one packet of more than 1 200 bytes, which our registrar must take whole;
    // answered before the kernel's retransmission timeout (1 s at least), it was not lost.
    let pe = SctpClient::connect(our_registrar, Some(RSPLIB.into()), WAIT)
        .unwrap_or_else(|e| panic!("a kernel SCTP association with {our_registrar}: {e}"));
    pe.socket().set_read_timeout(Some(WAIT)).unwrap();
    let register = |handle: &str, id: u64, addresses: u16| {
        let message = sized_registration(handle.as_bytes(), id, addresses);
        let sent = Instant::now();
        assert_eq!(pe.send(PPID_ASAP, 0, &message).unwrap(), message.len());
        let mut buf = vec![0; 65_536];
        let (len, ppid) = pe
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no answer to a {}-byte registration: {e}", message.len()));
        let answered = sent.elapsed();
        assert_eq!(ppid, PPID_ASAP);
        assert!(accepted(&buf[..len], RFC), "{:?}", &buf[..len]);
        eprintln!(
            "a {}-byte registration from kernel SCTP answered in {answered:?}",
            message.len()
        );
        let registered = one_pe(tcp, handle, WAIT, String::new);
        assert_eq!(
            (registered.id, registered.addresses.as_slice()),
            (id, &[IpAddr::V4(RSPLIB)][..])
        );
        answered
    };
    let answered = register("OnePacket", 0xb15, 170);
    assert!(
        answered < Duration::from_millis(900),
        "a one-packet registration took {answered:?}: lost and retransmitted"
    );
    // 3.2 KB: the kernel sends the first fragment in a packet of its own and the rest as one
    // GSO super-packet (two packets' chunks behind one common header, CRC32c 0: segmentation
    // computes it, and veth hands it to the other namespace unsegmented); our registrar drops
    // that (RFC 4960 §6.8) and the kernel's retransmissions, a packet each, bring the chunks
    // about a second later. Registered all the same.
    register("GsoBurst", 0xb16, 400);
    drop(pe);

    // Presences both ways, nothing refused or undecodable.
    assert!(
        ours.metric("rserpool_messages_received_total{protocol=\"enrp\",type=\"presence\"") > 0.0
    );
    assert_eq!(
        ours.metric("rserpool_messages_received_total{protocol=\"enrp\",type=\"error\""),
        0.0
    );
    assert_eq!(ours.metric("rserpool_decode_errors_total"), 0.0);
    assert!(ours.metric("rserpool_connections_opened_total{transport=\"sctp_udp\"") >= 2.0);
    drop((at_rsplib, at_ours));
    std::thread::sleep(Duration::from_millis(500));
    drop(rspregistrar);
    drop(ours);

    let status = tcpdump.stop("INT");
    assert!(status.success(), "tcpdump: {status}; {}", tcpdump.output());
    eprintln!(
        "{}",
        tcpdump
            .output()
            .lines()
            .filter(|l| l.contains("packets"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    dissect(&pcap, Capture::Scope);
}

/// What a capture holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// The scope test's: our registrar's ASAP and ENRP with RSPLIB's.
    Scope,
    /// Our PE's and PU's ASAP (from [`OUR_ASAP`] and [`OUR_ENRP`]) with `rspregistrar`.
    Clients,
}

/// Dissects the capture `pcap` with tshark (CRC32c verification on; UDP 9899 decoded as SCTP by
/// Wireshark's default, RFC 6951) and checks it: SCTP in UDP 9899 throughout, every checksum
/// right, nothing malformed and no expert error; for [`Capture::Scope`], ASAP and ENRP messages
/// from and to our registrar's addresses and a datagram of more than 1 200 bytes to our
/// registrar among them, with one exception, counted and printed: the kernel's GSO
/// super-packets to our registrar (beyond the veth's MTU, CRC32c 0), which it drops; for
/// [`Capture::Clients`], the ASAP messages our PEs and PU send (registration, deregistration,
/// keep-alive ack, handle resolution) and those rspregistrar answers with.
fn dissect(pcap: &Path, capture: Capture) {
    let out = Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-o", "sctp.checksum:CRC-32C"])
        .args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a"])
        .args(["-e", "frame.number", "-e", "frame.protocols"])
        .args([
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "udp.srcport",
            "-e",
            "udp.dstport",
        ])
        .args(["-e", "sctp.checksum.status", "-e", "_ws.expert.severity"])
        .args([
            "-e",
            "udp.length",
            "-e",
            "sctp.retransmission",
            "-e",
            "sctp.checksum",
        ])
        .args(["-e", "_ws.expert.message"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run tshark (Debian's tshark): {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark: {stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut frames, mut asap, mut enrp, mut asap_ours, mut enrp_ours) = (0, 0, 0, 0, 0);
    let (mut largest_to_ours, mut retransmissions, mut super_packets) = (0, Vec::new(), 0);
    let mut problems = Vec::new();
    let ours = [OUR_ASAP.to_string(), OUR_ENRP.to_string()];
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let field = |i: usize| f.get(i).copied().unwrap_or("");
        let (protocols, src, dst) = (field(1), field(2), field(3));
        frames += 1;
        if !protocols.contains(":ip:udp:sctp") {
            problems.push(format!("not SCTP in UDP: {line}"));
        }
        if field(4) != "9899" && field(5) != "9899" {
            problems.push(format!("not UDP 9899: {line}"));
        }
        if protocols.contains("_ws.malformed") {
            problems.push(format!("malformed: {line}"));
        }
        let udp_length = field(8).parse::<usize>().unwrap_or(0);
        // The kernel's GSO super-packet to our registrar (see the scope test): larger than
        // the veth's MTU allows a datagram (1 500 - 28 bytes), CRC32c never computed.
        let super_packet = src == RSPLIB.to_string()
            && field(10) == "0x00000000"
            && udp_length > 1_472
            && ours.iter().any(|a| a == dst);
        if super_packet {
            super_packets += 1;
            eprintln!("GSO super-packet of the kernel's, delivered unsegmented: {line}");
        } else {
            if field(6).split(',').any(|s| s != "1") {
                problems.push(format!("CRC32c not verified good: {line}"));
            }
            // PI_ERROR is 0x00800000 (8388608); warnings and notes are below it.
            let error = field(7)
                .split(',')
                .filter_map(|s| s.parse::<u32>().ok())
                .any(|s| s >= 0x0080_0000);
            if error {
                problems.push(format!("expert error: {line}"));
            }
            if ours.iter().any(|a| a == dst) {
                largest_to_ours = largest_to_ours.max(udp_length);
            }
        }
        if !field(9).is_empty() {
            retransmissions.push(format!("frame {} from {src}", field(0)));
        }
        let with_ours = ours.iter().any(|a| a == src || a == dst);
        if protocols.ends_with(":asap") {
            asap += 1;
            asap_ours += usize::from(with_ours && (src == ours[0] || dst == ours[0]));
        }
        if protocols.ends_with(":enrp") {
            enrp += 1;
            enrp_ours += usize::from(with_ours && (src == ours[1] || dst == ours[1]));
        }
    }
    eprintln!(
        "{}: {frames} frames of SCTP in UDP 9899, {asap} with ASAP ({asap_ours} to or from \
         {OUR_ASAP}), {enrp} with ENRP ({enrp_ours} to or from {OUR_ENRP}), {} problems",
        pcap.display(),
        problems.len()
    );
    // Not an error, but worth seeing: SCTP retransmissions (our RTO against the kernel's
    // delayed SACK).
    eprintln!(
        "largest UDP datagram to our registrar: {largest_to_ours} bytes; {super_packets} GSO \
         super-packets; retransmissions: {}",
        if retransmissions.is_empty() {
            "none".to_owned()
        } else {
            retransmissions.join(", ")
        }
    );
    assert!(frames > 0, "tshark read no frames from {}", pcap.display());
    assert!(
        problems.is_empty(),
        "tshark found problems in {}:\n{}",
        pcap.display(),
        problems.join("\n")
    );
    assert!(
        asap_ours > 0,
        "no ASAP to or from {OUR_ASAP} in the capture"
    );
    if capture == Capture::Clients {
        // Registration (1), deregistration (2, the CLI's), handle resolution (5) and
        // keep-alive ack (8) from ours; registration response (3), deregistration response
        // (4), handle resolution response (6) and keep-alive (7) back.
        let ours = format!("(ip.src == {OUR_ASAP} || ip.src == {OUR_ENRP})");
        let theirs = format!("(ip.dst == {OUR_ASAP} || ip.dst == {OUR_ENRP})");
        for (filter, expected) in [(ours, [1, 2, 5, 8]), (theirs, [3, 4, 6, 7])] {
            let types = asap_types(pcap, &filter);
            eprintln!("ASAP message types {filter}: {types:?}");
            for t in expected {
                assert!(
                    types.contains(&t),
                    "no ASAP message type {t} {filter}: {types:?}"
                );
            }
        }
        return;
    }
    assert!(
        enrp_ours > 0,
        "no ENRP to or from {OUR_ENRP} in the capture"
    );
    assert!(
        largest_to_ours > 1_200,
        "the kernel sent our registrar no datagram above 1 200 bytes (largest {largest_to_ours})"
    );
    // Both directions of each: our registrar's packets decode too.
    for (ip, what) in [(OUR_ASAP, "asap"), (OUR_ENRP, "enrp")] {
        let filter = format!("ip.src == {ip} && {what}");
        let out = Command::new("tshark")
            .args(["-r", pcap.to_str().unwrap(), "-Y", &filter])
            .args(["-T", "fields", "-e", "frame.number"])
            .output()
            .unwrap();
        let count = String::from_utf8_lossy(&out.stdout).lines().count();
        eprintln!("tshark -Y '{filter}': {count} frames");
        assert!(count > 0, "no frame matches {filter}");
    }
}

/// The ASAP message types tshark decodes in the frames of `pcap` that match `filter`.
fn asap_types(pcap: &Path, filter: &str) -> BTreeSet<u8> {
    let filter = format!("{filter} && asap");
    let out = Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-Y", &filter])
        .args([
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-e",
            "asap.message_type",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run tshark: {e}"));
    assert!(
        out.status.success(),
        "tshark -Y '{filter}': {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split([',', '\n'])
        .filter_map(|t| t.trim().parse().ok())
        .collect()
}

/// Moves the calling thread into namespace [`NS`] (`setns(2)` moves the thread alone); the
/// sockets it opens stay in [`NS`] whichever thread uses them afterwards.
#[allow(unsafe_code)] // setns(2): no safe wrapper among the dependencies
fn enter_our_namespace() {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{NS}");
    let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: `ns` is an open file for the call's duration; CLONE_NEWNET changes this thread's
    // network namespace and touches no memory of the process.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread of its own in namespace [`NS`] and returns what it returns.
fn in_our_namespace<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        enter_our_namespace();
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Our PE's ID and SCTP port, and the CLI PE's ID (32 bits: the RFC generation).
const OUR_PE_ID: u64 = 0x5ec7_0001;
const OUR_PE_PORT: u16 = 4711;
const CLI_PE_ID: u64 = 0x5ec7_0002;

/// A user-space SCTP echo service over UDP at `address` in namespace [`NS`], SCTP port
/// [`OUR_PE_PORT`]: our PE's user transport, which `rspterminal` reaches from kernel SCTP
/// (encapsulated to UDP 9899). Echoes every message of a PPID other than ASAP's on stream 0
/// until `stop`; returns how many it echoed.
fn sctp_udp_echo(address: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    let (bound, is_bound) = channel();
    let echo = std::thread::spawn(move || {
        enter_our_namespace();
        let socket = UdpSocket::bind(address).unwrap_or_else(|e| panic!("bind {address}: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        bound.send(()).unwrap();
        let mut endpoint = SctpUdpEndpoint::new(EndpointConfig::server(OUR_PE_PORT, 4), [0x5a; 32]);
        let start = Instant::now();
        let (mut buf, mut out) = (vec![0; 65_536], vec![0; 65_536]);
        let mut echoed = 0;
        while !stop.load(Ordering::Relaxed) {
            let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                endpoint.handle_datagram(from, &buf[..n], now);
            }
            endpoint.handle_timeouts(now);
            let mut answers = Vec::new();
            endpoint.poll_events(|handle, event| {
                if let EndpointEvent::Message { ppid, bytes, .. } = event
                    && ppid != PPID_ASAP
                {
                    answers.push((handle, ppid, bytes.to_vec()));
                }
            });
            for (handle, ppid, bytes) in answers {
                if endpoint.send(handle, 0, ppid, &bytes, now).is_ok() {
                    echoed += 1;
                }
            }
            while let Some((to, n)) = endpoint.poll_transmit(&mut out) {
                let _ = socket.send_to(&out[..n], to);
            }
        }
        echoed
    });
    is_bound
        .recv_timeout(WAIT)
        .expect("the echo service's UDP socket");
    echo
}

/// The endpoint crate's CLI, `rserpool`, beside this test's binary's directory (cargo's
/// target/debug; .ci/run's workspace test step builds it). Missing, the test fails.
fn rserpool_cli() -> String {
    let exe = std::env::current_exe().unwrap();
    let cli = exe
        .parent()
        .and_then(Path::parent)
        .map(|debug| debug.join("rserpool"))
        .unwrap();
    assert!(
        cli.is_file(),
        "{} is missing: build the endpoint's CLI first (`cargo build -p rserpool-endpoint` with \
         the same target directory)",
        cli.display()
    );
    cli.to_str().unwrap().to_owned()
}

/// RSPLIB's registrar keep-alive interval and time-out here: a few rounds in a short test.
const RSPLIB_KEEP_ALIVE_MS: u64 = 500;

#[test]
fn our_pe_and_pu_through_rsplib_registrar_over_udp_encapsulation() {
    with_test_net();
    let pcap = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sctp-udp-interop-clients.pcap");
    let _ = std::fs::remove_file(&pcap);
    let mut tcpdump = Tool::start(
        "tcpdump",
        &[
            "-i".to_owned(),
            "rspv0".to_owned(),
            "-s".to_owned(),
            "0".to_owned(),
            "-U".to_owned(),
            // Each packet as it comes: a SIGINT loses what the capture buffer holds (up to a
            // second's worth otherwise: the CLI's deregistration and the shutdowns).
            "--immediate-mode".to_owned(),
            "-Z".to_owned(),
            "root".to_owned(),
            "-w".to_owned(),
            pcap.to_str().unwrap().to_owned(),
            format!("udp port {ENCAP_PORT}"),
        ],
    );
    tcpdump.wait_for_line("listening on rspv0");

    let (asap, enrp) = (rserpool_protocol::ASAP_PORT, rserpool_protocol::ENRP_PORT);
    let mut rspregistrar = Tool::start(
        "rspregistrar",
        &[
            format!("-asap={RSPLIB}:{asap}"),
            format!("-enrp={RSPLIB}:{enrp}"),
            "-asapannounce=off".to_owned(),
            "-enrpannounce=off".to_owned(),
            "-logcolor=off".to_owned(),
            "-loglevel=2".to_owned(),
            format!("-endpointkeepalivetransmissioninterval={RSPLIB_KEEP_ALIVE_MS}"),
            format!("-endpointkeepalivetimeoutinterval={RSPLIB_KEEP_ALIVE_MS}"),
        ],
    );
    // Our side in namespace NS, as another host: the PE at 10.99.0.2, the PU at 10.99.0.3,
    // each over SCTP in UDP to rspregistrar's kernel on UDP 9899.
    let udp = SocketAddr::new(RSPLIB.into(), ENCAP_PORT);
    let open = move |source: Ipv4Addr| {
        in_our_namespace(move || {
            let mut last = None;
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                match Connection::open_from(Transport::SctpUdp, udp, Some(source.into()), WAIT) {
                    Ok(connection) => return Ok(connection),
                    // rspregistrar not listening yet: its kernel aborts the association.
                    Err(e) => last = Some(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(last.unwrap_or_default())
        })
    };
    let pe = open(OUR_ASAP).unwrap_or_else(|e| {
        panic!(
            "our PE's sctp+udp://{udp}: {e}; rspregistrar printed:\n{}",
            rspregistrar.output()
        )
    });
    assert_eq!(pe.local_addr().unwrap().ip(), IpAddr::V4(OUR_ASAP));
    let echo_stop = Arc::new(AtomicBool::new(false));
    let echo = sctp_udp_echo(
        SocketAddr::new(OUR_ASAP.into(), ENCAP_PORT),
        Arc::clone(&echo_stop),
    );

    // The PE's reader: acks rspregistrar's keep-alives for our PE, hands on the rest.
    let keep_alives = Arc::new(AtomicUsize::new(0));
    let (to_pe, from_registrar) = channel();
    let reader = pe.try_clone().unwrap();
    let counted = Arc::clone(&keep_alives);
    let pe_reader = std::thread::spawn(move || {
        reader.read_messages(|bytes| {
            let decoded = AsapMessage::decode(bytes, RFC).map(|d| d.message);
            if let Ok(AsapMessage::EndpointKeepAlive {
                pool_handle, pe_id, ..
            }) = decoded
                && pe_id.is_none_or(|id| id == PeId(OUR_PE_ID))
            {
                let ack = encode(
                    &AsapMessage::EndpointKeepAliveAck {
                        pool_handle,
                        pe_id: PeId(OUR_PE_ID),
                    },
                    RFC,
                );
                if reader.send(&ack).is_ok() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                return true;
            }
            to_pe.send(bytes.to_vec()).is_ok()
        })
    });
    pe.send(&sctp_registration(
        b"OurPool",
        OUR_PE_ID,
        OUR_PE_PORT,
        &[IpAddr::V4(OUR_ASAP)],
    ))
    .unwrap();
    let answer = from_registrar.recv_timeout(WAIT).unwrap_or_else(|_| {
        panic!(
            "rspregistrar did not answer our PE's registration; it printed:\n{}",
            rspregistrar.output()
        )
    });
    match AsapMessage::decode(&answer, RFC)
        .expect("decodable")
        .message
    {
        AsapMessage::RegistrationResponse {
            rejected, pe_id, ..
        } => assert!(
            !rejected && pe_id == PeId(OUR_PE_ID),
            "{answer:?}; rspregistrar printed:\n{}",
            rspregistrar.output()
        ),
        other => panic!("not a registration response: {other:?}"),
    }

    // The CLI as a second PE (its own echo service, a TCP user transport at the address its
    // association comes from), in NS too.
    let cli = rserpool_cli();
    let registrar_url = format!("sctp+udp://{udp}");
    let mut cli_pe = Tool::start(
        "ip",
        &[
            "netns".to_owned(),
            "exec".to_owned(),
            NS.to_owned(),
            cli.clone(),
            "register".to_owned(),
            "--registrar".to_owned(),
            registrar_url.clone(),
            "--pool".to_owned(),
            "OurCliPool".to_owned(),
            "--id".to_owned(),
            format!("{CLI_PE_ID:#x}"),
        ],
    );
    let registered = cli_pe.wait_for_line("registered PE");
    eprintln!("rserpool register: {registered}");

    // Our PU resolves both pools at rspregistrar.
    let pu = open(OUR_ENRP).unwrap_or_else(|e| panic!("our PU's sctp+udp://{udp}: {e}"));
    // A reader thread, as the endpoint library's driver keeps one per connection: the
    // association's SACKs and heartbeats go out while the test does something else.
    let (to_pu, answers) = channel();
    let reader = pu.try_clone().unwrap();
    let pu_reader =
        std::thread::spawn(move || reader.read_messages(|m| to_pu.send(m.to_vec()).is_ok()));
    let resolve_at_rsplib = |pool: &str| {
        pu.send(&resolution(pool.as_bytes(), Some(128), RFC))
            .unwrap();
        let answer = answers.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!("rspregistrar did not answer our PU's resolution of {pool}")
        });
        pool_elements(&answer)
    };
    let check_ours = |pes: Result<Vec<Pe>, u16>| {
        let pes = pes.unwrap_or_else(|e| panic!("OurPool at rspregistrar: cause {e:#x}"));
        assert_eq!(pes.len(), 1, "{pes:?}");
        let pe = &pes[0];
        assert_eq!(
            (pe.id, pe.kind, pe.port, pe.addresses.as_slice()),
            (
                OUR_PE_ID,
                TransportKind::Sctp,
                OUR_PE_PORT,
                &[IpAddr::V4(OUR_ASAP)][..]
            ),
            "{pe:?}"
        );
        assert_ne!(pe.home, 0, "{pe:?}");
    };
    let found = resolve_at_rsplib("OurPool");
    eprintln!("our PU at rspregistrar, OurPool: {found:?}");
    check_ours(found);
    let cli_found = resolve_at_rsplib("OurCliPool");
    eprintln!("our PU at rspregistrar, OurCliPool: {cli_found:?}");
    let cli_pes = cli_found.unwrap_or_else(|e| panic!("OurCliPool: cause {e:#x}"));
    assert_eq!(cli_pes.len(), 1, "{cli_pes:?}");
    assert_eq!(
        (
            cli_pes[0].id,
            cli_pes[0].kind,
            cli_pes[0].addresses.as_slice()
        ),
        (CLI_PE_ID, TransportKind::Tcp, &[IpAddr::V4(OUR_ASAP)][..]),
        "{cli_pes:?}"
    );

    // The CLI as a PU, over SCTP in UDP too.
    let out = Command::new("ip")
        .args(["netns", "exec", NS, &cli, "resolve", "--registrar"])
        .args([&registrar_url, "--pool", "OurPool", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rserpool resolve: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("rserpool resolve at rspregistrar: {}", text.trim());
    let listed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], OUR_PE_ID, "{listed}");
    assert_eq!(listed[0]["transport"], "sctp", "{listed}");
    assert_eq!(listed[0]["port"], OUR_PE_PORT, "{listed}");
    assert_eq!(listed[0]["addresses"][0], OUR_ASAP.to_string(), "{listed}");

    // rspterminal (kernel SCTP, encapsulated) resolves OurPool at rspregistrar and echoes
    // through our PE's user-space SCTP in UDP: rspterminal names the PE it reached.
    let their_registrar = SocketAddr::new(RSPLIB.into(), asap);
    echo_through(
        their_registrar,
        "OurPool",
        OUR_PE_ID,
        &["through our PE over SCTP in UDP"],
    );

    // Keep-alive rounds past rspregistrar's time-out: acked, both PEs stay.
    std::thread::sleep(Duration::from_millis(4 * RSPLIB_KEEP_ALIVE_MS));
    let acked = keep_alives.load(Ordering::Relaxed);
    eprintln!("our PE acked {acked} keep-alives of rspregistrar's");
    assert!(
        acked >= 2,
        "rspregistrar sent our PE {acked} keep-alives in {} ms; it printed:\n{}",
        4 * RSPLIB_KEEP_ALIVE_MS,
        rspregistrar.output()
    );
    check_ours(resolve_at_rsplib("OurPool"));
    let cli_pes = resolve_at_rsplib("OurCliPool").unwrap_or_else(|e| {
        panic!(
            "the CLI's PE is gone after keep-alives: cause {e:#x}; it printed:\n{}",
            cli_pe.output()
        )
    });
    assert_eq!(
        cli_pes.iter().map(|p| p.id).collect::<Vec<_>>(),
        [CLI_PE_ID]
    );
    let unexpected: Vec<Vec<u8>> = from_registrar.try_iter().collect();
    assert!(
        unexpected.is_empty(),
        "rspregistrar sent our PE: {unexpected:?}"
    );

    // The CLI deregisters on SIGINT; our PE and PU shut down gracefully.
    let status = cli_pe.stop("INT");
    let printed = cli_pe.output();
    assert!(status.success(), "rserpool register: {status}; {printed}");
    assert!(printed.contains("deregistered PE"), "{printed}");
    assert!(
        matches!(
            resolve_at_rsplib("OurCliPool"),
            Err(rserpool_protocol::cause::UNKNOWN_POOL_HANDLE)
        ),
        "the CLI's PE is still in OurCliPool"
    );
    pu.shutdown().unwrap();
    pu_reader.join().unwrap().unwrap();
    pe.shutdown().unwrap();
    pe_reader.join().unwrap().unwrap();
    echo_stop.store(true, Ordering::Relaxed);
    let echoed = echo.join().unwrap();
    assert!(echoed >= 1, "our PE's echo service echoed nothing");
    drop(rspregistrar);

    let status = tcpdump.stop("INT");
    assert!(status.success(), "tcpdump: {status}; {}", tcpdump.output());
    dissect(&pcap, Capture::Clients);
}
