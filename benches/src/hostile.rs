//! `rserpool-bench hostile`, the hostile-input soak (issue 17): legitimate PEs registered over
//! their own associations from 127.0.0.1 and kept alive; attacker connections from 127.2.0.0
//! and up, each from an address of its own (other hosts as far as the registrar can tell; and
//! no local port runs out however many connections close), and UDP datagrams, sending `--messages`
//! mutated and random messages ([`mutate`]); every `--check-every` messages and at the end, the
//! checks that the registrar process runs, that each legitimate pool resolves to its legitimate
//! PEs (at the end, after the attackers left, to exactly them), that no legitimate association
//! was closed, and that the registrar's VmRSS grew by at most `--max-rss-growth-mib`.

pub mod mutate;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rserpool_handlespace::Rng;
use rserpool_net::Connection;
use rserpool_protocol::asap::message_type as mt;
use rserpool_protocol::framing::Frames;
use rserpool_protocol::{AsapMessage, PeId, Policy, PoolHandle, Resolution};
use serde_json::{Value, json};

use crate::cli::{CHAOS_MAX_POOL, Cli};
use crate::error::{Error, Result};
use crate::net::Endpoint;
use crate::target::{self, Target};
use crate::workload::{self, MAX_FRAME, PeRecord, Table};
use mutate::{CorpusMessage, Forge, LEGIT_ID_BYTE, MutationKind, Targets};

/// How long connecting, registering and one resolution may take.
const WAIT: Duration = Duration::from_secs(10);
/// Attacker `i` connects from 127.(2 + i mod this).x.y.
const ATTACKER_NETS: usize = 250;
/// With a UDP port, every this many messages of an attacker one goes there as a datagram.
const UDP_EVERY: u64 = 4;
/// One stream in this many goes on after a wrong header length.
const DESYNC_KEPT: u64 = 8;
/// Messages sent on such a stream before the attacker closes it, if the registrar did not.
const OUT_OF_STEP_MESSAGES: u32 = 4;
/// How long the attackers' own PEs may take to leave the legitimate pools after they left.
const SETTLE: Duration = Duration::from_secs(10);
/// How often the main thread looks at the attackers' progress.
const POLL: Duration = Duration::from_millis(20);
/// Failures listed in a report at most (the count is always complete).
const MAX_FAILURES: usize = 20;
/// Spreads the attackers' seeds.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The registrar's resident memory over the run, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RssFigures {
    /// Before the attack, with the legitimate PEs registered.
    pub start: u64,
    /// The highest reading (at every check).
    pub peak: u64,
    /// After the attackers left and their PEs were gone.
    pub end: u64,
}

/// What a hostile soak sent and found.
#[derive(Clone, Debug, Default)]
pub struct HostileReport {
    /// The registrar, as in reports.
    pub target: String,
    /// The seed (`--seed` replays the messages, not the timing).
    pub seed: u64,
    /// Hostile messages sent (over connections and UDP).
    pub messages: u64,
    /// Messages by [`MutationKind`], in its order.
    pub by_kind: [u64; 6],
    /// Unknown parameters by their type's two high bits (00, 01, 10, 11).
    pub unknown_by_action: [u64; 4],
    /// Messages whose base came from the RSPLIB corpus.
    pub from_corpus: u64,
    /// Messages sent as UDP datagrams.
    pub over_udp: u64,
    /// Messages (or datagrams) the registrar sent back to the attackers, read and discarded.
    pub replies: u64,
    /// Attacker connections opened.
    pub connections: u64,
    /// Attacker connections the registrar closed (a stream it could not frame, for one).
    pub closed_by_registrar: u64,
    /// Attacker streams closed by the attacker after a message that left the stream out of
    /// step (a wrong header length); one time in eight the attacker goes on sending instead.
    pub framing_resets: u64,
    /// Attacker connection attempts that failed.
    pub connect_failures: u64,
    /// Legitimate PEs and their pools.
    pub legit_pes: usize,
    /// Pools of the legitimate PEs.
    pub pools: usize,
    /// Keep-alives the legitimate PEs answered.
    pub keep_alives_answered: u64,
    /// The longest a legitimate PE's answer to a keep-alive took to send, in ms (an association
    /// whose peer's window is closed blocks it).
    pub slowest_ack_ms: f64,
    /// Checks run (every `--check-every` messages, and the final one).
    pub checks: u64,
    /// Checks that found nothing wrong.
    pub checks_passed: u64,
    /// What the failed checks found (at most 20 listed).
    pub failures: Vec<String>,
    /// All failures found, listed or not.
    pub failure_count: u64,
    /// The registrar's VmRSS, when its process is known (spawned, or `--pid`).
    pub rss: Option<RssFigures>,
    /// `--max-rss-growth-mib`.
    pub max_rss_growth_mib: u64,
    /// Seconds from the first hostile message to the last.
    pub seconds: f64,
    /// The registrar's `rserpool_messages_received_total` and `rserpool_decode_errors_total`
    /// at the end, when its metrics are known (spawned).
    pub registrar_counts: Option<(f64, f64)>,
    /// The registrar's `rserpool_keep_alives_sent_total` at the end, when its metrics are known:
    /// set against the keep-alives the legitimate PEs answered.
    pub registrar_keep_alives_sent: Option<f64>,
    /// The registrar's `rserpool_keep_alive_acks_total` at the end, when its metrics are known.
    pub registrar_keep_alive_acks: Option<f64>,
    /// The registrar's `rserpool_connections_open` at the end (the attackers and the
    /// legitimate PEs have gone; the pool user's association may still count).
    pub registrar_connections_open: Option<f64>,
    /// The registrar's PE removals (`rserpool_pe_removals_total`) and refusals by a limit
    /// (`rserpool_limit_refusals_total`) at the end, by label, the ones above 0.
    pub registrar_removals: Vec<(String, f64)>,
    /// See [`HostileReport::registrar_removals`].
    pub registrar_refusals: Vec<(String, f64)>,
}

impl HostileReport {
    /// Whether every check passed and none failed.
    pub fn passed(&self) -> bool {
        self.failure_count == 0 && self.checks > 0 && self.checks == self.checks_passed
    }

    /// Hostile messages per second.
    pub fn messages_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.messages as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The report as text.
    pub fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "hostile soak against {} (seed {})",
            self.target, self.seed
        );
        let _ = writeln!(
            t,
            "  messages {} in {:.1} s ({:.0}/s): {} from the corpus, {} fresh, {} over UDP",
            self.messages,
            self.seconds,
            self.messages_per_s(),
            self.from_corpus,
            self.messages - self.from_corpus - self.by_kind[MutationKind::RandomBytes.index()],
            self.over_udp
        );
        let kinds: Vec<String> = MutationKind::ALL
            .iter()
            .map(|k| format!("{} {}", k.name(), self.by_kind[k.index()]))
            .collect();
        let _ = writeln!(t, "  by kind: {}", kinds.join(", "));
        let [a, b, c, d] = self.unknown_by_action;
        let _ = writeln!(
            t,
            "  unknown parameters by action bits: 00 {a}, 01 {b}, 10 {c}, 11 {d}"
        );
        let _ = writeln!(
            t,
            "  replies read {}; attacker connections {} (closed by the registrar {}, after a \
             framing lie {}, failed to connect {})",
            self.replies,
            self.connections,
            self.closed_by_registrar,
            self.framing_resets,
            self.connect_failures
        );
        if let Some((received, errors)) = self.registrar_counts {
            let _ = writeln!(
                t,
                "  registrar counted {received:.0} messages received, {errors:.0} decode errors"
            );
            let labelled = |counts: &[(String, f64)]| {
                let all: Vec<String> = counts.iter().map(|(l, n)| format!("{l} {n:.0}")).collect();
                if all.is_empty() {
                    "none".to_owned()
                } else {
                    all.join(", ")
                }
            };
            let _ = writeln!(
                t,
                "  registrar PE removals: {}; refusals by a limit: {}; connections open at the \
                 end: {:.0}",
                labelled(&self.registrar_removals),
                labelled(&self.registrar_refusals),
                self.registrar_connections_open.unwrap_or_default()
            );
        }
        let _ = writeln!(
            t,
            "  legitimate PEs {} in {} pools, {} keep-alives answered (the slowest answer took \
             {:.1} ms to send)",
            self.legit_pes, self.pools, self.keep_alives_answered, self.slowest_ack_ms
        );
        if let (Some(sent), Some(acks)) = (
            self.registrar_keep_alives_sent,
            self.registrar_keep_alive_acks,
        ) {
            let _ = writeln!(
                t,
                "  registrar counted {sent:.0} keep-alives sent, {acks:.0} acks received"
            );
        }
        match self.rss {
            Some(r) => {
                let _ = writeln!(
                    t,
                    "  registrar VmRSS start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB (growth \
                     bound {} MiB)",
                    mib(r.start),
                    mib(r.peak),
                    mib(r.end),
                    self.max_rss_growth_mib
                );
            }
            None => {
                let _ = writeln!(t, "  registrar VmRSS not read (no process: give --pid)");
            }
        }
        let _ = writeln!(
            t,
            "  checks {} passed of {}: {}",
            self.checks_passed,
            self.checks,
            if self.passed() { "PASS" } else { "FAIL" }
        );
        for f in &self.failures {
            let _ = writeln!(t, "  failure: {f}");
        }
        if self.failure_count > self.failures.len() as u64 {
            let _ = writeln!(
                t,
                "  ... and {} more failures",
                self.failure_count - self.failures.len() as u64
            );
        }
        t
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let kinds: serde_json::Map<String, Value> = MutationKind::ALL
            .iter()
            .map(|k| (k.name().to_owned(), json!(self.by_kind[k.index()])))
            .collect();
        json!({
            "scenario": "hostile",
            "target": self.target,
            "seed": self.seed,
            "messages": self.messages,
            "by_kind": kinds,
            "unknown_by_action": self.unknown_by_action,
            "from_corpus": self.from_corpus,
            "over_udp": self.over_udp,
            "replies": self.replies,
            "connections": self.connections,
            "closed_by_registrar": self.closed_by_registrar,
            "framing_resets": self.framing_resets,
            "connect_failures": self.connect_failures,
            "legit_pes": self.legit_pes,
            "pools": self.pools,
            "keep_alives_answered": self.keep_alives_answered,
            "slowest_ack_ms": self.slowest_ack_ms,
            "registrar_keep_alives_sent": self.registrar_keep_alives_sent,
            "registrar_keep_alive_acks": self.registrar_keep_alive_acks,
            "registrar_connections_open": self.registrar_connections_open,
            "checks": self.checks,
            "checks_passed": self.checks_passed,
            "failures": self.failures,
            "failure_count": self.failure_count,
            "rss": self.rss.map(|r| json!({"start": r.start, "peak": r.peak, "end": r.end})),
            "max_rss_growth_mib": self.max_rss_growth_mib,
            "seconds": self.seconds,
            "messages_per_s": self.messages_per_s(),
            "registrar_messages_received": self.registrar_counts.map(|c| c.0),
            "registrar_decode_errors": self.registrar_counts.map(|c| c.1),
            "registrar_pe_removals": labelled_json(&self.registrar_removals),
            "registrar_limit_refusals": labelled_json(&self.registrar_refusals),
            "passed": self.passed(),
        })
    }
}

/// Counts by label as one JSON object.
fn labelled_json(counts: &[(String, f64)]) -> Value {
    Value::Object(counts.iter().map(|(l, n)| (l.clone(), json!(n))).collect())
}

/// The samples of `metric` in the Prometheus text `text` above 0, summed by the value of their
/// first label.
fn by_label(text: &str, metric: &str) -> Vec<(String, f64)> {
    let mut counts: Vec<(String, f64)> = Vec::new();
    let prefix = format!("{metric}{{");
    for line in text.lines().filter_map(|l| l.strip_prefix(&prefix)) {
        let label = line.split('"').nth(1).unwrap_or_default();
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        match counts.iter_mut().find(|(l, _)| l == label) {
            Some((_, n)) => *n += value,
            None => counts.push((label.to_owned(), value)),
        }
    }
    counts.retain(|(_, n)| *n > 0.0);
    counts
}

/// Counters the attacker threads share.
#[derive(Debug, Default)]
struct Tally {
    /// Message numbers handed out (may pass the total by one per attacker at the end).
    taken: AtomicU64,
    sent: AtomicU64,
    by_kind: [AtomicU64; 6],
    unknown_by_action: [AtomicU64; 4],
    from_corpus: AtomicU64,
    over_udp: AtomicU64,
    replies: Arc<AtomicU64>,
    connections: AtomicU64,
    closed_by_registrar: AtomicU64,
    framing_resets: AtomicU64,
    connect_failures: AtomicU64,
    finished: AtomicU64,
    stop: AtomicBool,
}

/// What every attacker needs.
struct Attack<'a> {
    corpus: &'a [CorpusMessage],
    targets: &'a Targets,
    endpoint: Endpoint,
    udp: Option<SocketAddr>,
    total: u64,
    seed: u64,
    tally: &'a Tally,
}

/// Runs the soak as `cli` says.
pub fn run(cli: &Cli) -> Result<HostileReport> {
    let seed = cli
        .seed
        .unwrap_or_else(|| Rng::from_entropy().next_u64() >> 16);
    note(
        cli,
        &format!("hostile: seed {seed} (--seed {seed} replays the messages)"),
    );
    let target = match cli.registrar {
        Some(endpoint) => Target::external(endpoint),
        None => {
            let bin = match &cli.registrar_bin {
                Some(path) => path.clone(),
                None => target::default_registrar_bin()?,
            };
            // `--workers 0` is the registrar's "one per online core", the profiles' setting.
            let workers = if cli.was_given("workers") {
                cli.workers
            } else {
                0
            };
            // The profile as it is, but for the keep-alive interval if one was asked for.
            let config = cli.keep_alive_interval.map_or_else(String::new, |ms| {
                format!("[timers]\nkeep_alive_interval_ms = {ms}\n")
            });
            let t = Target::spawn_with_udp(&bin, workers, &cli.profile, cli.transport, &config)?;
            note(
                cli,
                &format!(
                    "started {} at {} and {} (metrics {})",
                    bin.display(),
                    t.endpoint(),
                    t.udp().map_or_else(String::new, |u| format!("udp://{u}")),
                    t.metrics_url().unwrap_or("unknown")
                ),
            );
            t
        }
    };
    let endpoint = target.endpoint();
    let pid = target.pid().or(cli.pid);
    let udp = target.udp().or(cli.udp);
    let corpus = mutate::corpus().map_err(Error::new)?;
    let targets = legit_targets(cli, seed);
    let legit = Legit::register(&endpoint, &targets)?;
    note(
        cli,
        &format!(
            "registered {} legitimate PEs in {} pools",
            targets.pes.len(),
            targets.pools.len()
        ),
    );
    let mut checker = Checker::new(endpoint, pid, &targets, &legit, cli.max_rss_growth_mib)?;
    let total = cli.messages;
    let tally = Tally::default();
    let attack = Attack {
        corpus: &corpus,
        targets: &targets,
        endpoint,
        udp,
        total,
        seed,
        tally: &tally,
    };
    let attackers = cli.hostile_attackers();
    let started = Instant::now();
    thread::scope(|scope| {
        for i in 0..attackers {
            let attack = &attack;
            scope.spawn(move || attacker(attack, i));
        }
        let mut next_check = cli.check_every;
        let mut next_note = started + Duration::from_secs(1);
        while tally.finished.load(Ordering::Acquire) < attackers as u64 {
            thread::sleep(POLL);
            let sent = tally.sent.load(Ordering::Relaxed);
            if sent >= next_check {
                checker.check(&format!("after {sent} messages"), false);
                next_check = (sent / cli.check_every + 1) * cli.check_every;
                if checker.dead {
                    tally.stop.store(true, Ordering::Relaxed);
                }
            }
            if Instant::now() >= next_note {
                let rss = checker
                    .rss
                    .map_or_else(String::new, |r| format!(", VmRSS {:.1} MiB", mib(r.end)));
                note(
                    cli,
                    &format!(
                        "hostile {:>5.1}s {sent} messages, {} checks passed of {}{rss}",
                        started.elapsed().as_secs_f64(),
                        checker.passed,
                        checker.checks
                    ),
                );
                next_note += Duration::from_secs(1);
            }
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    // The attackers have closed their connections: only the legitimate PEs may stay.
    checker.final_check();
    let Checker {
        checks,
        passed,
        failures,
        rss,
        ..
    } = checker;
    let (keep_alives_answered, slowest_ack_us) = legit.stop();
    let metrics = target
        .metrics_url()
        .and_then(|url| target::scrape(url).ok());
    let registrar_counts = metrics.as_deref().map(|text| {
        (
            target::sample_sum(text, "rserpool_messages_received_total"),
            target::sample_sum(text, "rserpool_decode_errors_total"),
        )
    });
    let registrar_keep_alives_sent = metrics
        .as_deref()
        .map(|text| target::sample_sum(text, "rserpool_keep_alives_sent_total"));
    let registrar_keep_alive_acks = metrics
        .as_deref()
        .map(|text| target::sample_sum(text, "rserpool_keep_alive_acks_total"));
    let registrar_connections_open = metrics
        .as_deref()
        .map(|text| target::sample_sum(text, "rserpool_connections_open{"));
    let text = metrics.unwrap_or_default();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(HostileReport {
        target: match target.is_spawned() {
            true => format!("{endpoint} (spawned)"),
            false => endpoint.to_string(),
        },
        seed,
        messages: load(&tally.sent),
        by_kind: tally.by_kind.each_ref().map(load),
        unknown_by_action: tally.unknown_by_action.each_ref().map(load),
        from_corpus: load(&tally.from_corpus),
        over_udp: load(&tally.over_udp),
        replies: load(&tally.replies),
        connections: load(&tally.connections),
        closed_by_registrar: load(&tally.closed_by_registrar),
        framing_resets: load(&tally.framing_resets),
        connect_failures: load(&tally.connect_failures),
        legit_pes: targets.pes.len(),
        pools: targets.pools.len(),
        keep_alives_answered,
        slowest_ack_ms: slowest_ack_us as f64 / 1000.0,
        checks,
        checks_passed: passed,
        failure_count: failures.len() as u64,
        failures: failures.into_iter().take(MAX_FAILURES).collect(),
        rss,
        max_rss_growth_mib: cli.max_rss_growth_mib,
        seconds,
        registrar_counts,
        registrar_keep_alives_sent,
        registrar_keep_alive_acks,
        registrar_connections_open,
        registrar_removals: by_label(&text, "rserpool_pe_removals_total"),
        registrar_refusals: by_label(&text, "rserpool_limit_refusals_total"),
    })
}

/// Bytes in MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn note(cli: &Cli, line: &str) {
    if !cli.quiet {
        eprintln!("{line}");
    }
}

/// The legitimate pools (`hostile-legit-00` …) and PEs: identifiers 0x5a……, consecutive from
/// a seeded start.
fn legit_targets(cli: &Cli, seed: u64) -> Targets {
    let pools = cli.hostile_pools();
    let per_pool = cli.hostile_pool_elements();
    let base = Rng::seed(seed ^ GOLDEN).next_u64() as u32;
    Targets {
        pools: (0..pools)
            .map(|p| format!("hostile-legit-{p:02}").into_bytes())
            .collect(),
        pes: (0..pools * per_pool)
            .map(|n| {
                let low = base.wrapping_add(n as u32) & 0x00ff_ffff;
                (n % pools, PeId(u64::from((LEGIT_ID_BYTE << 24) | low)))
            })
            .collect(),
    }
}

/// The legitimate PEs: one association per pool from 127.0.0.1, each with a thread that reads
/// the registration answers and answers every keep-alive.
struct Legit {
    connections: Vec<Connection>,
    keepers: Vec<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
    /// Why a legitimate association ended or a registration was refused.
    lost: Arc<Mutex<Vec<String>>>,
    keep_alives: Arc<AtomicU64>,
    /// The longest a keep-alive's answer took to send, in microseconds.
    slowest_ack: Arc<AtomicU64>,
}

impl Legit {
    /// Registers every PE of `targets` and returns once all are accepted.
    fn register(endpoint: &Endpoint, targets: &Targets) -> Result<Self> {
        let generation = endpoint.generation;
        let mut legit = Self {
            connections: Vec::new(),
            keepers: Vec::new(),
            stopping: Arc::new(AtomicBool::new(false)),
            lost: Arc::new(Mutex::new(Vec::new())),
            keep_alives: Arc::new(AtomicU64::new(0)),
            slowest_ack: Arc::new(AtomicU64::new(0)),
        };
        let accepted = Arc::new(AtomicU64::new(0));
        for (p, handle) in targets.pools.iter().enumerate() {
            let connection =
                Connection::open(endpoint.transport.url_transport(), endpoint.addr, WAIT)
                    .map_err(|e| Error::new(format!("legitimate PEs cannot connect: {e}")))?;
            connection.set_write_timeout(Some(WAIT))?;
            let ip = connection.local_addr()?.ip();
            let pes: Vec<PeRecord> = targets
                .pes
                .iter()
                .filter(|(pool, _)| *pool == p)
                .map(|&(_, id)| PeRecord {
                    pool: handle.clone(),
                    id,
                    policy: Policy::RoundRobin,
                })
                .collect();
            let mut table = Table::default();
            for (n, pe) in pes.iter().enumerate() {
                workload::push_registration(&mut table, pe, ip, workload::pe_port(n), generation)?;
            }
            let reader = connection.try_clone()?;
            let writer = connection.try_clone()?;
            let (stopping, lost, keep_alives, slowest, accepted) = (
                Arc::clone(&legit.stopping),
                Arc::clone(&legit.lost),
                Arc::clone(&legit.keep_alives),
                Arc::clone(&legit.slowest_ack),
                Arc::clone(&accepted),
            );
            let name = String::from_utf8_lossy(handle).into_owned();
            legit.keepers.push(thread::spawn(move || {
                let mut acks = Vec::new();
                let mut why = None;
                let end = reader.read_messages(|frame| {
                    match frame.first() {
                        Some(&mt::ENDPOINT_KEEP_ALIVE) => {
                            acks.clear();
                            let n = workload::answer_keep_alive(frame, &pes, generation, &mut acks);
                            let sending = Instant::now();
                            for ack in Frames::new(&acks, MAX_FRAME) {
                                if let Err(e) = writer.send(ack) {
                                    why = Some(format!("cannot answer a keep-alive: {e}"));
                                    return false;
                                }
                            }
                            slowest
                                .fetch_max(sending.elapsed().as_micros() as u64, Ordering::Relaxed);
                            keep_alives.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Some(&mt::REGISTRATION_RESPONSE) => {
                            match AsapMessage::decode(frame, generation).map(|d| d.message) {
                                Ok(AsapMessage::RegistrationResponse {
                                    rejected: false, ..
                                }) => {
                                    accepted.fetch_add(1, Ordering::Relaxed);
                                }
                                other => {
                                    why = Some(format!("a registration was refused: {other:?}"));
                                    return false;
                                }
                            }
                        }
                        _ => {}
                    }
                    true
                });
                if !stopping.load(Ordering::Relaxed) {
                    let why = why.unwrap_or_else(|| match end {
                        Ok(()) => "the registrar closed it".to_owned(),
                        Err(e) => e.to_string(),
                    });
                    lost.lock()
                        .expect("no panics while held")
                        .push(format!("legitimate pool {name}'s association ended: {why}"));
                }
            }));
            for i in 0..table.len() {
                connection.send(table.get(i))?;
            }
            legit.connections.push(connection);
        }
        let deadline = Instant::now() + WAIT;
        while accepted.load(Ordering::Relaxed) < targets.pes.len() as u64 {
            if let Some(why) = legit.lost.lock().expect("no panics while held").first() {
                return Err(Error::new(why.clone()));
            }
            if Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "{} of {} legitimate PEs accepted within {WAIT:?}",
                    accepted.load(Ordering::Relaxed),
                    targets.pes.len()
                )));
            }
            thread::sleep(Duration::from_millis(1));
        }
        Ok(legit)
    }

    /// Why legitimate associations ended so far.
    fn lost(&self) -> Vec<String> {
        self.lost.lock().expect("no panics while held").clone()
    }

    /// Closes the associations (the PEs leave with them) and returns the keep-alives answered
    /// and the longest an answer took to send (µs).
    fn stop(self) -> (u64, u64) {
        self.stopping.store(true, Ordering::Relaxed);
        for c in &self.connections {
            let _ = c.shutdown();
        }
        for k in self.keepers {
            let _ = k.join();
        }
        (
            self.keep_alives.load(Ordering::Relaxed),
            self.slowest_ack.load(Ordering::Relaxed),
        )
    }
}

/// The checks: the registrar's process, the legitimate pools through a pool user's association
/// from 127.0.0.1, the legitimate associations, the registrar's memory.
struct Checker<'a> {
    endpoint: Endpoint,
    pid: Option<u32>,
    targets: &'a Targets,
    legit: &'a Legit,
    pu: Option<Connection>,
    max_growth: u64,
    rss: Option<RssFigures>,
    checks: u64,
    passed: u64,
    failures: Vec<String>,
    /// Legitimate association losses already reported.
    lost_reported: usize,
    /// The registrar's process is gone.
    dead: bool,
}

impl<'a> Checker<'a> {
    /// A checker; reads the registrar's VmRSS before the attack.
    fn new(
        endpoint: Endpoint,
        pid: Option<u32>,
        targets: &'a Targets,
        legit: &'a Legit,
        max_rss_growth_mib: u64,
    ) -> Result<Self> {
        let rss = pid
            .map(target::rss_bytes)
            .transpose()?
            .map(|start| RssFigures {
                start,
                peak: start,
                end: start,
            });
        Ok(Self {
            endpoint,
            pid,
            targets,
            legit,
            pu: None,
            max_growth: max_rss_growth_mib * 1024 * 1024,
            rss,
            checks: 0,
            passed: 0,
            failures: Vec::new(),
            lost_reported: 0,
            dead: false,
        })
    }

    /// One check `when`; with `exact`, a legitimate pool must hold nothing but its legitimate
    /// PEs. Returns whether it passed, and records what it found.
    fn check(&mut self, when: &str, exact: bool) -> bool {
        let found = self.findings(exact);
        self.checks += 1;
        if found.is_empty() {
            self.passed += 1;
        }
        let ok = found.is_empty();
        self.failures
            .extend(found.into_iter().map(|f| format!("{when}: {f}")));
        ok
    }

    /// What is wrong now.
    fn findings(&mut self, exact: bool) -> Vec<String> {
        let mut found = Vec::new();
        if let Some(pid) = self.pid {
            if let Err(why) = alive(pid) {
                self.dead = true;
                found.push(format!("the registrar (pid {pid}) is gone: {why}"));
                return found;
            }
            match target::rss_bytes(pid) {
                Ok(now) => {
                    if let Some(r) = self.rss.as_mut() {
                        r.peak = r.peak.max(now);
                        r.end = now;
                        if r.peak.saturating_sub(r.start) > self.max_growth {
                            found.push(format!(
                                "VmRSS grew from {} to {} bytes, more than {} MiB",
                                r.start,
                                r.peak,
                                self.max_growth / (1024 * 1024)
                            ));
                        }
                    }
                }
                Err(e) => found.push(e.to_string()),
            }
        }
        let lost = self.legit.lost();
        found.extend(lost[self.lost_reported..].iter().cloned());
        self.lost_reported = lost.len();
        for (p, handle) in self.targets.pools.iter().enumerate() {
            let name = String::from_utf8_lossy(handle);
            let legit: Vec<u64> = self
                .targets
                .pes
                .iter()
                .filter(|(pool, _)| *pool == p)
                .map(|(_, id)| id.0)
                .collect();
            match self.resolve(handle) {
                Ok(ids) => {
                    let missing: Vec<String> = legit
                        .iter()
                        .filter(|id| !ids.contains(id))
                        .map(|id| format!("{id:#x}"))
                        .collect();
                    if !missing.is_empty() {
                        found.push(format!(
                            "pool {name} lost legitimate PEs {}",
                            missing.join(", ")
                        ));
                    }
                    let extra: Vec<String> = ids
                        .iter()
                        .filter(|id| !legit.contains(id))
                        .map(|id| format!("{id:#x}"))
                        .collect();
                    if exact && !extra.is_empty() {
                        found.push(format!(
                            "pool {name} still holds PEs that are not legitimate: {}",
                            extra.join(", ")
                        ));
                    }
                }
                Err(why) => found.push(format!("pool {name} does not resolve: {why}")),
            }
        }
        found
    }

    /// The final check: as soon as every legitimate pool holds exactly its legitimate PEs (the
    /// attackers' own PEs leave with their connections), at most [`SETTLE`] after the attack.
    fn final_check(&mut self) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let found = self.findings(true);
            let settled = found.iter().all(|f| !f.contains("not legitimate"));
            if found.is_empty() || self.dead || settled || Instant::now() >= deadline {
                self.checks += 1;
                if found.is_empty() {
                    self.passed += 1;
                }
                self.failures
                    .extend(found.into_iter().map(|f| format!("at the end: {f}")));
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The PE identifiers a resolution of `handle` returns (up to 128), over the pool user's
    /// association (opened again if it broke).
    fn resolve(&mut self, handle: &[u8]) -> std::result::Result<Vec<u64>, String> {
        let generation = self.endpoint.generation;
        if self.pu.is_none() {
            let pu = Connection::open(
                self.endpoint.transport.url_transport(),
                self.endpoint.addr,
                WAIT,
            )
            .map_err(|e| format!("the pool user cannot connect: {e}"))?;
            pu.set_read_timeout(Some(WAIT))
                .and_then(|()| pu.set_write_timeout(Some(WAIT)))
                .map_err(|e| e.to_string())?;
            self.pu = Some(pu);
        }
        let pu = self.pu.as_ref().expect("opened above");
        let mut request = vec![0; MAX_FRAME];
        let len = AsapMessage::HandleResolution {
            subscribe: false,
            pool_handle: PoolHandle(handle),
            items: Some(CHAOS_MAX_POOL as u32),
        }
        .encode(generation, &mut request)
        .map_err(|e| e.to_string())?;
        let mut answer = None;
        let read = pu.send(&request[..len]).and_then(|()| {
            pu.read_messages(|frame| {
                answer = Some(frame.to_vec());
                false
            })
        });
        let Some(answer) = answer else {
            self.pu = None;
            return Err(match read {
                Ok(()) => "the registrar closed the pool user's association".to_owned(),
                Err(e) => format!("no answer: {e}"),
            });
        };
        match AsapMessage::decode(&answer, generation).map(|d| d.message) {
            Ok(AsapMessage::HandleResolutionResponse {
                resolution: Resolution::Found { pool_elements, .. },
                ..
            }) => Ok(pool_elements.iter().map(|pe| pe.id.0).collect()),
            other => Err(format!("the answer was {other:?}")),
        }
    }
}

/// Whether process `pid` runs (exists and is no zombie).
fn alive(pid: u32) -> std::result::Result<(), String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The state follows the command name in parentheses, which may hold anything.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("?");
    match state {
        "Z" | "X" | "x" => Err(format!("its state is {state} (exited)")),
        _ => Ok(()),
    }
}

/// One attacker connection and the thread that reads and discards what comes back.
struct AttackConnection {
    connection: Connection,
    closed: Arc<AtomicBool>,
    reader: JoinHandle<()>,
    /// Messages sent since a wrong header length that was left on the stream (for the
    /// registrar to find and close it), if one was.
    out_of_step: Option<u32>,
}

impl AttackConnection {
    fn open(attack: &Attack<'_>, source: IpAddr) -> std::io::Result<Self> {
        let connection = Connection::open_from(
            attack.endpoint.transport.url_transport(),
            attack.endpoint.addr,
            Some(source),
            WAIT,
        )?;
        connection.set_write_timeout(Some(WAIT))?;
        let reader = connection.try_clone()?;
        let closed = Arc::new(AtomicBool::new(false));
        let (done, replies) = (Arc::clone(&closed), Arc::clone(&attack.tally.replies));
        let reader = thread::spawn(move || {
            let _ = reader.read_messages(|_| {
                replies.fetch_add(1, Ordering::Relaxed);
                true
            });
            done.store(true, Ordering::Release);
        });
        Ok(Self {
            connection,
            closed,
            reader,
            out_of_step: None,
        })
    }

    /// Shuts the connection down and waits for its reader; true if the registrar had ended it
    /// before.
    fn close(self) -> bool {
        let ended = self.closed.load(Ordering::Acquire);
        let _ = self.connection.shutdown();
        let _ = self.reader.join();
        ended
    }
}

/// Attacker `index`: sends its share of the hostile messages over its connection, opened again
/// whenever it ends, the `k`th from 127.(2 + index mod 250).(k / 256 mod 256).(k mod 256), and
/// every fourth message as a UDP datagram from 127.(2 + index mod 250).255.254.
fn attacker(attack: &Attack<'_>, index: usize) {
    let tally = attack.tally;
    let net = 2 + (index % ATTACKER_NETS) as u8;
    let source = IpAddr::from([127, net, 255, 254]);
    let mut opened = 0u16;
    let seed = attack.seed ^ (index as u64 + 1).wrapping_mul(GOLDEN);
    let generation = attack.endpoint.generation;
    let mut forge = Forge::new(attack.corpus, attack.targets, generation, source, seed);
    let stream = attack.endpoint.transport.is_stream();
    let udp = attack.udp.and_then(|to| {
        let socket = UdpSocket::bind((source, 0)).ok()?;
        socket.set_nonblocking(true).ok()?;
        Some((socket, to))
    });
    let mut connection: Option<AttackConnection> = None;
    let mut own = 0u64;
    // Messages with a wrong header length sent on a stream still in step.
    let mut lies = 0u64;
    let mut datagram = [0u8; 2048];
    while !tally.stop.load(Ordering::Relaxed)
        && tally.taken.fetch_add(1, Ordering::Relaxed) < attack.total
    {
        let m = forge.next_message();
        own += 1;
        if let Some((socket, to)) = &udp
            && own.is_multiple_of(UDP_EVERY)
        {
            if socket.send_to(&m.bytes, to).is_ok() {
                count(tally, &m);
                tally.over_udp.fetch_add(1, Ordering::Relaxed);
            }
            while socket.recv(&mut datagram).is_ok() {
                tally.replies.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        // Twice at most: a send that finds the connection closed goes again over a new one.
        for _ in 0..2 {
            if connection
                .as_ref()
                .is_some_and(|c| c.closed.load(Ordering::Acquire))
                && let Some(c) = connection.take()
            {
                c.close();
                tally.closed_by_registrar.fetch_add(1, Ordering::Relaxed);
            }
            let c = match connection.take() {
                Some(c) => c,
                None => match AttackConnection::open(attack, {
                    let [high, low] = opened.to_be_bytes();
                    opened = opened.wrapping_add(1);
                    IpAddr::from([127, net, high, low])
                }) {
                    Ok(c) => {
                        tally.connections.fetch_add(1, Ordering::Relaxed);
                        c
                    }
                    Err(_) => {
                        tally.connect_failures.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                },
            };
            match c.connection.send(&m.bytes) {
                Ok(()) => {
                    count(tally, &m);
                    connection = Some(c);
                    break;
                }
                Err(_) => {
                    c.close();
                    tally.closed_by_registrar.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // A wrong header length leaves a stream out of step for good: start a new one, but one
        // time in eight send four more messages on it first, for the registrar to find out and
        // close it itself.
        let Some(c) = connection.as_mut().filter(|_| stream) else {
            continue;
        };
        let reset = match c.out_of_step.as_mut() {
            Some(after) => {
                *after += 1;
                *after > OUT_OF_STEP_MESSAGES
            }
            None if m.keeps_framing() => false,
            None => {
                lies += 1;
                if lies.is_multiple_of(DESYNC_KEPT) {
                    c.out_of_step = Some(0);
                }
                c.out_of_step.is_none()
            }
        };
        if reset && let Some(c) = connection.take() {
            let counter = match c.close() {
                true => &tally.closed_by_registrar,
                false => &tally.framing_resets,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Some(c) = connection
        && c.close()
    {
        tally.closed_by_registrar.fetch_add(1, Ordering::Relaxed);
    }
    tally.finished.fetch_add(1, Ordering::Release);
}

/// Counts a message sent.
fn count(tally: &Tally, m: &mutate::HostileMessage) {
    tally.sent.fetch_add(1, Ordering::Relaxed);
    tally.by_kind[m.kind.index()].fetch_add(1, Ordering::Relaxed);
    if let Some(action) = m.action {
        tally.unknown_by_action[usize::from(action)].fetch_add(1, Ordering::Relaxed);
    }
    if m.from_corpus {
        tally.from_corpus.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_missing_one_is_not() {
        assert_eq!(alive(std::process::id()), Ok(()));
        assert!(alive(u32::MAX).unwrap_err().contains("/proc/"));
    }

    #[test]
    fn legitimate_pes_are_distinct_and_marked() {
        let cli = Cli::from_args(&["hostile", "--spawn", "--pools", "3"]).unwrap();
        let t = legit_targets(&cli, 5);
        assert_eq!(t.pools.len(), 3);
        assert_eq!(t.pes.len(), 24);
        let mut ids: Vec<u64> = t.pes.iter().map(|(_, id)| id.0).collect();
        assert!(ids.iter().all(|id| id >> 24 == u64::from(LEGIT_ID_BYTE)));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 24);
    }

    #[test]
    fn metrics_are_summed_by_their_first_label() {
        let text = "rserpool_pe_removals_total{reason=\"deregistered\"} 3\n\
                    rserpool_pe_removals_total{reason=\"expired\"} 0\n\
                    rserpool_pe_removals_total{reason=\"deregistered\",worker=\"1\"} 2\n\
                    rserpool_pe_removals_totalx{reason=\"a\"} 9\n";
        assert_eq!(
            by_label(text, "rserpool_pe_removals_total"),
            [("deregistered".to_owned(), 5.0)]
        );
    }

    #[test]
    fn a_report_fails_on_any_failure_or_a_missing_check() {
        let mut r = HostileReport {
            checks: 3,
            checks_passed: 3,
            ..HostileReport::default()
        };
        assert!(r.passed());
        r.checks_passed = 2;
        assert!(!r.passed());
        r.checks_passed = 3;
        r.failure_count = 1;
        assert!(!r.passed());
        assert!(!HostileReport::default().passed(), "no check is no pass");
        let json = r.to_json();
        assert_eq!(json["passed"], false);
        assert!(r.text().contains("FAIL"));
    }
}
