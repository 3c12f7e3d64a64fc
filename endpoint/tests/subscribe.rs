//! Subscriptions (RFC 5352 §2.2.5-§2.2.6) over TCP against a scripted fake registrar: a TCP
//! listener in the test that decodes each ASAP_HANDLE_RESOLUTION and answers with hand-encoded
//! responses, so that these tests depend on no registrar's support for subscriptions. One
//! registrar accepts (the A bit) and pushes, one declines (as RSPLIB's does) and is polled; the
//! `rserpool watch` command follows the pushes. Then end to end: `rserpool watch --json` against
//! the real registrar on its default profile while PEs come, change and go.

mod common;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, Lines, pe_config};
use rserpool_endpoint::PeInfo;
use rserpool_endpoint::driver::{Pe, Pu};
use rserpool_endpoint::pu::{Config, PoolChange, SubscriptionMode};
use rserpool_protocol::{
    AsapMessage, ErrorCause, Generation, MAX_MESSAGE_LEN, PeId, Policy, PoolElementParam,
    PoolHandle, PrId, Resolution, Seq, TransportKind, TransportParam, UserTransport, cause,
};

const WAIT: Duration = Duration::from_secs(10);
const POOL: &[u8] = b"sub";
const IPS: [IpAddr; 1] = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
/// Time before each push of the fake registrar.
const PUSH_GAP: Duration = Duration::from_millis(200);

/// PEs as `(id, load)`; none: Unknown Pool Handle.
type Pes = Vec<(u64, u32)>;

/// How the fake registrar answers one handle resolution.
struct Step {
    /// The A bit.
    accepted: bool,
    /// The answer.
    answer: Pes,
    /// Pushed after the answer, in order, [`PUSH_GAP`] apart (A bit as `accepted`).
    pushes: Vec<Pes>,
    /// Close the connection this long after the pushes.
    close_after: Option<Duration>,
}

/// A request the fake registrar received.
#[derive(Debug)]
struct Request {
    at: Instant,
    subscribe: bool,
    pool_handle: Vec<u8>,
}

/// A scripted registrar on a loopback TCP port: answers the handle resolutions, on whatever
/// connection they arrive, with the steps of its script in turn (and nothing once it ran out);
/// reports each request and each connection the pool user closed.
struct Fake {
    url: String,
    requests: Receiver<Request>,
    closed: Receiver<()>,
}

impl Fake {
    fn start(script: Vec<Step>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("tcp://{}", listener.local_addr().expect("address"));
        let (requests_tx, requests) = channel();
        let (closed_tx, closed) = channel();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (requests, closed) = (requests_tx.clone(), closed_tx.clone());
                let script = Arc::clone(&script);
                std::thread::spawn(move || serve(stream, &script, &requests, &closed));
            }
        });
        Self {
            url,
            requests,
            closed,
        }
    }
}

/// Serves one pool user's connection: reads whole messages (each as long as its header says,
/// padded to 4 bytes), answers each handle resolution with the script's next step.
fn serve(
    mut stream: TcpStream,
    script: &Mutex<VecDeque<Step>>,
    requests: &Sender<Request>,
    closed: &Sender<()>,
) {
    loop {
        let mut header = [0u8; 4];
        if stream.read_exact(&mut header).is_err() {
            let _ = closed.send(());
            return;
        }
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let mut message = vec![0u8; len.div_ceil(4) * 4];
        message[..4].copy_from_slice(&header);
        if stream.read_exact(&mut message[4..]).is_err() {
            let _ = closed.send(());
            return;
        }
        let decoded = AsapMessage::decode(&message, Generation::Rfc).expect("an ASAP message");
        let AsapMessage::HandleResolution {
            subscribe,
            pool_handle,
            ..
        } = decoded.message
        else {
            continue;
        };
        let _ = requests.send(Request {
            at: Instant::now(),
            subscribe,
            pool_handle: pool_handle.0.to_vec(),
        });
        let Some(step) = script.lock().unwrap().pop_front() else {
            continue;
        };
        respond(&mut stream, step.accepted, &step.answer);
        for push in &step.pushes {
            std::thread::sleep(PUSH_GAP);
            respond(&mut stream, step.accepted, push);
        }
        if let Some(pause) = step.close_after {
            std::thread::sleep(pause);
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pe(id: u64, load: u32) -> PoolElementParam<'static> {
    PoolElementParam {
        id: PeId(id),
        home_pr: PrId(1),
        registration_life: 30_000,
        user_transport: UserTransport::Transport(TransportParam {
            kind: TransportKind::Tcp,
            port: 7000 + u16::try_from(id).unwrap(),
            transport_use: 0,
            service_code: 0,
            addresses: Seq::from_items(&IPS),
        }),
        policy: Policy::LeastUsed { load },
        asap_transport: None,
    }
}

/// Writes a handle resolution response with the A bit as given: the PEs, or Unknown Pool
/// Handle when there are none.
fn respond(conn: &mut TcpStream, accepted: bool, pes: &[(u64, u32)]) {
    let pes: Vec<PoolElementParam<'_>> = pes.iter().map(|&(id, load)| pe(id, load)).collect();
    let causes = [ErrorCause {
        code: cause::UNKNOWN_POOL_HANDLE,
        info: &[],
    }];
    let resolution = if pes.is_empty() {
        Resolution::Failed(Seq::from_items(&causes))
    } else {
        Resolution::Found {
            policy: Some(Policy::LeastUsed { load: 0 }),
            pool_elements: Seq::from_items(&pes),
        }
    };
    let message = AsapMessage::HandleResolutionResponse {
        accepted,
        pool_handle: PoolHandle(POOL),
        resolution,
    };
    let mut buf = vec![0u8; MAX_MESSAGE_LEN + 4];
    let len = message.encode(Generation::Rfc, &mut buf).expect("encode");
    conn.write_all(&buf[..len]).expect("write the response");
}

fn ids(pes: &[PeInfo]) -> Vec<u64> {
    pes.iter().map(|p| p.id.0).collect()
}

/// `(added, removed, changed)` of an Elements change, as PE IDs.
fn diff(change: Option<PoolChange>) -> [Vec<u64>; 3] {
    match change {
        Some(PoolChange::Elements {
            added,
            removed,
            changed,
            ..
        }) => [ids(&added), ids(&removed), ids(&changed)],
        other => panic!("not an Elements change: {other:?}"),
    }
}

/// `rserpool watch` with `args`, no configuration file and no `$RSERPOOL_REGISTRAR`.
fn watch(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rserpool"));
    c.arg("watch")
        .args(args)
        .env(
            "XDG_CONFIG_HOME",
            std::env::temp_dir().join("rserpool-subscribe-no-config"),
        )
        .env_remove("RSERPOOL_REGISTRAR")
        .stdin(Stdio::null());
    c
}

fn step(accepted: bool, answer: Pes) -> Step {
    Step {
        accepted,
        answer,
        pushes: Vec::new(),
        close_after: None,
    }
}

#[test]
fn an_accepting_registrar_pushes_every_change() {
    let quiet = Duration::from_millis(500);
    let fake = Fake::start(vec![
        Step {
            // PE 1's load changes and PE 2 joins; then the pool vanishes; then the registrar
            // breaks the association.
            pushes: vec![vec![(1, 20), (2, 0)], vec![]],
            close_after: Some(quiet),
            ..step(true, vec![(1, 10)])
        },
        step(true, vec![(3, 0)]),
    ]);
    let mut config = Config::new(vec![fake.url.parse().unwrap()]);
    config.poll_interval = 50;
    config.cache_stale = 0;
    let mut pu = Pu::new(config);
    let mut sub = pu.subscribe(POOL, None).expect("subscribed");
    assert_eq!(sub.mode(), None, "no answer yet");
    assert_eq!(
        sub.next_change(WAIT),
        Some(PoolChange::Mode(SubscriptionMode::Pushed))
    );
    assert_eq!(diff(sub.next_change(WAIT)), [vec![1], vec![], vec![]]);
    assert_eq!(sub.mode(), Some(SubscriptionMode::Pushed));
    // Pushed: the cache is current without a stale time; selecting sends no request (the
    // first push is PUSH_GAP away).
    assert_eq!(sub.pu().select(POOL).map(|p| p.id.0).ok(), Some(1));
    assert_eq!(diff(sub.next_change(WAIT)), [vec![2], vec![], vec![1]]);
    match sub.next_change(WAIT) {
        Some(PoolChange::Gone { removed }) => assert_eq!(ids(&removed), [1, 2]),
        other => panic!("not gone: {other:?}"),
    }
    assert_eq!(sub.updates(), 3);
    assert_eq!(sub.elements(), None);
    // The association breaks: the PU subscribes again (at the same registrar, the only one).
    assert_eq!(
        diff(sub.next_change(WAIT)),
        [vec![3], vec![], vec![]],
        "the pool is back; the same mode is not reported again"
    );
    assert_eq!(sub.mode(), Some(SubscriptionMode::Pushed));
    let requests: Vec<Request> = fake.requests.try_iter().collect();
    assert_eq!(requests.len(), 2, "no polling while pushed: {requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.subscribe && r.pool_handle == POOL)
    );
    assert!(
        requests[1].at - requests[0].at >= quiet,
        "the second request is the re-subscription"
    );
    // Dropping the subscription closes the association: RFC 5352 has no unsubscribe message.
    let _ = fake.closed.try_iter().count();
    drop(sub);
    assert!(fake.closed.recv_timeout(WAIT).is_ok(), "closed by the PU");
}

#[test]
fn a_declining_registrar_is_polled() {
    let interval = Duration::from_millis(100);
    // RSPLIB's answers: the PEs, the A bit clear.
    let fake = Fake::start(vec![
        step(false, vec![(1, 0)]),
        step(false, vec![(1, 0)]),
        step(false, vec![(1, 0), (2, 0)]),
        step(false, vec![(2, 5)]),
        step(false, vec![]),
    ]);
    let mut config = Config::new(vec![fake.url.parse().unwrap()]);
    config.poll_interval = interval.as_millis() as u64;
    let mut pu = Pu::new(config);
    let mut sub = pu.subscribe(POOL, Some(5)).expect("subscribed");
    assert_eq!(
        sub.next_change(WAIT),
        Some(PoolChange::Mode(SubscriptionMode::Polling))
    );
    assert_eq!(diff(sub.next_change(WAIT)), [vec![1], vec![], vec![]]);
    assert_eq!(sub.mode(), Some(SubscriptionMode::Polling));
    // The second answer changed nothing: the next change is the third's.
    assert_eq!(diff(sub.next_change(WAIT)), [vec![2], vec![], vec![]]);
    assert_eq!(diff(sub.next_change(WAIT)), [vec![], vec![1], vec![2]]);
    assert!(matches!(
        sub.next_change(WAIT),
        Some(PoolChange::Gone { removed }) if ids(&removed) == [2]
    ));
    assert_eq!(sub.updates(), 5, "every answer counts, changed or not");
    assert_eq!(sub.mode(), Some(SubscriptionMode::Polling), "still polling");
    let requests: Vec<Request> = fake.requests.try_iter().collect();
    assert_eq!(requests.len(), 5, "{requests:?}");
    assert!(requests.iter().all(|r| r.subscribe), "each poll asks again");
    for pair in requests.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= interval - Duration::from_millis(5),
            "polled after {gap:?}"
        );
    }
}

/// `rserpool watch --json` follows a registrar's pushes: one JSON line per change, with an
/// RFC 3339 time; nothing on stderr about polling; `--count 3` ends it at the third answer,
/// before the two intervals it would wait for pushes.
#[test]
fn watch_prints_pushed_changes_as_json_lines() {
    let fake = Fake::start(vec![Step {
        pushes: vec![vec![(1, 9), (2, 0)], vec![]],
        ..step(true, vec![(1, 0)])
    }]);
    let started = Instant::now();
    let output = watch(&[
        "--registrar",
        &fake.url,
        "--pool",
        "sub",
        "--json",
        "--interval",
        "2000",
        "--count",
        "3",
    ])
    .output()
    .expect("run rserpool");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("polling"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "ended by the count, not the time: {:?}",
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary: Vec<(&str, u64)> = lines
        .iter()
        .map(|v| (v["event"].as_str().unwrap(), v["id"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(
        summary,
        [
            ("added", 1),
            ("added", 2),
            ("changed", 1),
            ("removed", 1),
            ("removed", 2),
            ("gone", 0)
        ],
        "{stdout}"
    );
    assert_eq!(lines[2]["policy"], "lu:9");
    assert_eq!(lines[1]["port"], 7002);
    assert_eq!(lines[1]["addresses"][0], "127.0.0.1");
    for v in &lines {
        assert_eq!(v["pool"], "sub");
        // 2026-12-07T20:36:16.123Z
        let time = v["time"].as_str().unwrap().as_bytes();
        assert_eq!(time.len(), 24, "{v}");
        assert_eq!((time[10], time[19], time[23]), (b'T', b'.', b'Z'), "{v}");
    }
}

/// End to end: the registrar on its default profile accepts the subscription of `rserpool watch
/// --json` and pushes each change: the pool unknown at first, two PEs joining, a load changing
/// by re-registration, both PEs leaving and the pool gone; the watch never falls back to polling.
#[test]
fn watch_follows_the_real_registrars_pushes() {
    let d = Daemon::with_args(
        &[
            "--profile".into(),
            "default".into(),
            "--asap".into(),
            "tcp://127.0.0.1:0".into(),
            "--metrics".into(),
            "127.0.0.1:0".into(),
            "--workers".into(),
            "1".into(),
            // ENRP on a free port: the profile's 9901 may be another test's.
            "--enrp".into(),
            "tcp://127.0.0.1:0".into(),
        ],
        1,
    );
    let tcp = d.url("tcp://", false);
    // A long interval: a change seen within it was pushed, not polled.
    let mut child = watch(&[
        "--registrar",
        &tcp,
        "--pool",
        "e2e",
        "--json",
        "--interval",
        "60000",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start rserpool watch");
    let mut out = Lines::new(child.stdout.take().expect("stdout"));
    let err = Lines::new(child.stderr.take().expect("stderr"));
    let event = |line: &str| -> (String, u64) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["pool"], "e2e", "{line}");
        let name = v["event"].as_str().expect("an event").to_owned();
        (name, v["id"].as_u64().unwrap_or(0))
    };
    out.wait_for(WAIT, |l| event(l).0 == "gone");

    let config = |port| {
        let mut c = pe_config(&[&tcp], "e2e", port);
        c.policy = Policy::LeastUsed { load: 10 };
        c
    };
    let first = Pe::register(config(4242)).expect("registered");
    let line = out.wait_for(WAIT, |l| event(l).0 == "added");
    assert_eq!(event(&line).1, first.pe_id().0);
    assert!(line.contains("4242"), "{line}");
    let second = Pe::register(config(4343)).expect("registered");
    let line = out.wait_for(WAIT, |l| event(l).0 == "added");
    assert_eq!(event(&line).1, second.pe_id().0);

    first.set_policy(Policy::LeastUsed { load: 77 });
    let line = out.wait_for(WAIT, |l| event(l).0 == "changed");
    assert_eq!(event(&line).1, first.pe_id().0);
    assert!(line.contains("\"lu:77\""), "{line}");

    let (first_id, second_id) = (first.pe_id().0, second.pe_id().0);
    second.deregister().expect("deregistered");
    let line = out.wait_for(WAIT, |l| event(l).0 == "removed");
    assert_eq!(event(&line).1, second_id);
    first.deregister().expect("deregistered");
    let line = out.wait_for(WAIT, |l| event(l).0 == "removed");
    assert_eq!(event(&line).1, first_id);
    out.wait_for(WAIT, |l| event(l).0 == "gone");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(
        child.wait().expect("wait").success(),
        "SIGTERM ends the watch"
    );
    let stderr = err.rest();
    assert!(
        !stderr.iter().any(|l| l.contains("polling")),
        "pushed, not polled: {stderr:?}"
    );
}
