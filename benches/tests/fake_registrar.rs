//! The `resolve`, `register` and `--compare-echo` paths against a stand-in registrar written
//! here (the real one lives in another crate): it answers registrations, deregistrations and
//! handle resolutions, and sends a keep-alive after each association's first registration.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use rserpool_bench::workload::MAX_FRAME;
use rserpool_bench::{Cli, RunReport, app};
use rserpool_protocol::framing::Frames;
use rserpool_protocol::{
    AsapMessage, ErrorCause, Generation, OperationError, PeId, Policy, PoolElementParam, PrId,
    Resolution, Seq, TransportKind, TransportParam, UserTransport, cause,
};

const GEN: Generation = Generation::Rfc;

#[derive(Default)]
struct Counters {
    registrations: AtomicU64,
    deregistrations: AtomicU64,
    resolutions: AtomicU64,
    acks: AtomicU64,
    /// Pools with at least one PE, by handle.
    pools: Mutex<HashSet<Vec<u8>>>,
    /// Answer every resolution with "unknown pool handle".
    forgetful: AtomicBool,
    /// Refuse every registration into `pool000001` for lack of resources.
    full: AtomicBool,
}

fn encode(message: &AsapMessage<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + MAX_FRAME, 0);
    let n = message.encode(GEN, &mut out[start..]).unwrap();
    out.truncate(start + n);
}

fn serve(mut stream: TcpStream, c: &Counters) {
    let ip = [IpAddr::from([127, 0, 0, 1])];
    let element = [PoolElementParam {
        id: PeId(1),
        home_pr: PrId(7),
        registration_life: -1,
        user_transport: UserTransport::Transport(TransportParam {
            kind: TransportKind::Tcp,
            port: 1,
            transport_use: 0,
            service_code: 0,
            addresses: Seq::from_items(&ip),
        }),
        policy: Policy::RoundRobin,
        asap_transport: None,
    }];
    let unknown = [ErrorCause {
        code: cause::UNKNOWN_POOL_HANDLE,
        info: &[],
    }];
    let lack = [ErrorCause {
        code: cause::LACK_OF_RESOURCES,
        info: &[],
    }];
    let mut pinged = false;
    let mut buf = vec![0; 4 * MAX_FRAME];
    let mut len = 0;
    let mut out = Vec::new();
    let mut sent_ka: HashMap<u64, Vec<u8>> = HashMap::new();
    loop {
        let n = match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        len += n;
        let mut frames = Frames::new(&buf[..len], MAX_FRAME);
        for frame in frames.by_ref() {
            match AsapMessage::decode(frame, GEN).unwrap().message {
                AsapMessage::Registration {
                    pool_handle,
                    pool_element,
                } => {
                    c.registrations.fetch_add(1, Ordering::Relaxed);
                    c.pools.lock().unwrap().insert(pool_handle.0.to_vec());
                    let refused = c.full.load(Ordering::Relaxed) && pool_handle.0 == b"pool000001";
                    encode(
                        &AsapMessage::RegistrationResponse {
                            rejected: refused,
                            pool_handle,
                            pe_id: pool_element.id,
                            error: refused.then(|| OperationError::from_items(&lack)),
                        },
                        &mut out,
                    );
                    if !pinged {
                        pinged = true;
                        sent_ka.insert(pool_element.id.0, pool_handle.0.to_vec());
                        encode(
                            &AsapMessage::EndpointKeepAlive {
                                home: false,
                                server_id: PrId(7),
                                pool_handle,
                                pe_id: Some(pool_element.id),
                            },
                            &mut out,
                        );
                    }
                }
                AsapMessage::Deregistration { pool_handle, pe_id } => {
                    c.deregistrations.fetch_add(1, Ordering::Relaxed);
                    encode(
                        &AsapMessage::DeregistrationResponse {
                            pool_handle,
                            pe_id,
                            error: None,
                        },
                        &mut out,
                    );
                }
                AsapMessage::HandleResolution { pool_handle, .. } => {
                    c.resolutions.fetch_add(1, Ordering::Relaxed);
                    let known = !c.forgetful.load(Ordering::Relaxed)
                        && c.pools.lock().unwrap().contains(pool_handle.0);
                    let resolution = if known {
                        Resolution::Found {
                            policy: Some(Policy::RoundRobin),
                            pool_elements: Seq::from_items(&element),
                        }
                    } else {
                        Resolution::Failed(OperationError::from_items(&unknown))
                    };
                    encode(
                        &AsapMessage::HandleResolutionResponse {
                            accepted: false,
                            pool_handle,
                            resolution,
                        },
                        &mut out,
                    );
                }
                AsapMessage::EndpointKeepAliveAck { pool_handle, pe_id } => {
                    assert_eq!(
                        sent_ka.get(&pe_id.0).map(Vec::as_slice),
                        Some(pool_handle.0),
                        "an ack for the PE asked, in its pool"
                    );
                    c.acks.fetch_add(1, Ordering::Relaxed);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let consumed = frames.consumed();
        buf.copy_within(consumed..len, 0);
        len -= consumed;
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
    }
}

fn start() -> (String, Arc<Counters>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    let counters = Arc::new(Counters::default());
    let c = Arc::clone(&counters);
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            stream.set_nodelay(true).unwrap();
            let c = Arc::clone(&c);
            thread::spawn(move || serve(stream, &c));
        }
    });
    (url, counters)
}

fn cli(args: &[&str]) -> Cli {
    Cli::from_args(args).expect("a valid command line")
}

const SHORT: [&str; 9] = [
    "--duration",
    "0.4",
    "--warmup",
    "0.1",
    "--connections",
    "4",
    "--pipeline",
    "8",
    "--quiet",
];

#[test]
fn resolve_registers_resolves_answers_keep_alives_and_cleans_up() {
    let (url, c) = start();
    let mut args = vec![
        "resolve",
        "--registrar",
        &url,
        "--pools",
        "20",
        "--pool-elements",
        "3",
    ];
    args.extend(SHORT);
    let RunReport::Single(s) = app::run(&cli(&args)).unwrap() else {
        panic!("one summary expected");
    };
    assert!(s.ops > 0, "{s:?}");
    assert_eq!(s.errors, 0, "{s:?}");
    assert!(s.mean_reply_bytes > s.mean_request_bytes, "{s:?}");
    assert_eq!(c.registrations.load(Ordering::Relaxed), 60);
    assert_eq!(
        c.deregistrations.load(Ordering::Relaxed),
        60,
        "PEs deregistered at the end"
    );
    assert!(
        c.acks.load(Ordering::Relaxed) >= 1,
        "keep-alives of setup connections answered"
    );
    assert!(c.resolutions.load(Ordering::Relaxed) >= s.ops);
}

#[test]
fn resolving_unknown_pools_counts_errors() {
    let (url, c) = start();
    // Pools are registered, but the stand-in resolves none of them.
    c.forgetful.store(true, Ordering::Relaxed);
    let mut args = vec![
        "resolve",
        "--registrar",
        &url,
        "--pools",
        "2",
        "--pool-elements",
        "1",
    ];
    args.extend(SHORT);
    let RunReport::Single(s) = app::run(&cli(&args)).unwrap() else {
        panic!("one summary expected");
    };
    assert_eq!(s.ops, 0, "{s:?}");
    assert!(s.errors > 0, "{s:?}");
}

#[test]
fn register_counts_responses_and_answers_keep_alives() {
    let (url, c) = start();
    let mut args = vec![
        "register",
        "--registrar",
        &url,
        "--pes-per-connection",
        "2",
        "--poll",
        "block",
    ];
    args.extend(SHORT);
    let RunReport::Single(s) = app::run(&cli(&args)).unwrap() else {
        panic!("one summary expected");
    };
    assert!(s.ops > 0, "{s:?}");
    assert_eq!((s.errors, s.rejections), (0, 0), "{s:?}");
    assert_eq!(s.keep_alives, 4, "one keep-alive per association, answered");
    assert_eq!(c.acks.load(Ordering::Relaxed), 4);
    assert!(c.registrations.load(Ordering::Relaxed) >= s.ops);
}

#[test]
fn compare_echo_runs_both_and_reports_the_ratio() {
    let (url, _) = start();
    let mut args = vec!["resolve", "--registrar", &url, "--compare-echo", "--json"];
    args.extend(SHORT);
    let cli = cli(&args);
    let report = app::run(&cli).unwrap();
    let RunReport::Compared { scenario, echo } = &report else {
        panic!("a comparison expected");
    };
    assert!(scenario.ops > 0 && echo.ops > 0);
    assert_eq!(echo.errors, 0);
    assert_eq!(
        echo.mean_reply_bytes,
        app::reply_size_for(scenario.mean_reply_bytes) as f64,
        "echo replies sized like the registrar's"
    );
    let v: serde_json::Value = serde_json::from_str(&report.render(true)).unwrap();
    assert!(v["ratio"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["scenario"]["scenario"], "resolve");
    assert_eq!(v["echo"]["scenario"], "echo");
}

#[test]
fn new_pes_are_counted_by_refusal_cause_and_kept_alive_and_compared_with_echo() {
    let (url, c) = start();
    c.full.store(true, Ordering::Relaxed);
    let args = [
        "register",
        "--registrar",
        &url,
        "--population",
        "400",
        "--pool-elements",
        "100",
        "--connections",
        "4",
        "--pipeline",
        "8",
        "--compare-echo",
        "--quiet",
    ];
    let report = app::run(&cli(&args)).unwrap();
    let RunReport::Compared { scenario, echo } = &report else {
        panic!("a comparison expected");
    };
    // 4 pools of 100 PEs each, PE n in pool n mod 4: pool000001 refuses its 100.
    assert_eq!(
        (scenario.ops, scenario.rejections),
        (300, 100),
        "{scenario:?}"
    );
    assert_eq!(scenario.refusals, [(0x0006, 100)]);
    assert_eq!(c.registrations.load(Ordering::Relaxed), 400);
    assert_eq!(
        scenario.keep_alives, 4,
        "one keep-alive per association, answered"
    );
    assert_eq!(c.acks.load(Ordering::Relaxed), 4);
    let p = scenario.population.as_ref().unwrap();
    assert_eq!((p.answered, p.unanswered(), p.completed), (400, 0, true));
    assert_eq!(p.rss, None, "not spawned: no memory figure");
    let text = report.render(false);
    assert!(text.contains("0x0006 lack of resources 100"), "{text}");
    assert!(
        text.contains("400 answered, 100 refused, 0 unanswered"),
        "{text}"
    );
    let e = echo.population.as_ref().unwrap();
    assert_eq!((e.answered, echo.ops, echo.errors), (400, 400, 0));
    assert!(report.ratio().unwrap() > 0.0);
}
