//! The load driver: connections spread over client threads, each thread polling its non-blocking
//! sockets in a loop (over SCTP over UDP, one socket per thread holding all its associations). A connection reads whatever replies arrived in one read, then refills its
//! window of pipelined requests in one write (closed loop), or sends the requests whose intended
//! time has come (open loop, `--rate`). Latency runs from send (closed loop) or intended send
//! (open loop) to reply, into an HDR histogram, and into the thread's histogram of the current
//! second of the [`Series`]. After the run every connection reads the answers still in flight and
//! deregisters its PEs, so that the whole-run [`Totals`] hold every answer the server sent.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use hdrhistogram::Histogram;
use rserpool_handlespace::Rng;
use rserpool_protocol::Generation;
use rserpool_protocol::asap::message_type as mt;
use rserpool_protocol::framing::Frames;

use crate::error::{Context, Error, Result};
use crate::net::{Endpoint, StreamTransport};
use crate::sctp_udp::Hub;
use crate::series::{Recorder, Series, Timeline};
use crate::tls::{self, SecureStream};
use crate::workload::{self, Check, ConnWork, MAX_FRAME, Pick, Reply, Table, Totals};

/// Largest latency the histogram holds (larger ones are clamped).
const MAX_LATENCY: Duration = Duration::from_secs(60);
/// With [`Poll::Block`], the longest a read waits before the thread looks at the clock again.
const BLOCK_TIMEOUT: Duration = Duration::from_millis(20);

/// An empty histogram of latencies in nanoseconds: 1 ns to 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY.as_nanos() as u64, 3)
        .expect("static histogram bounds are valid")
}

/// How a client thread waits for replies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Poll {
    /// Non-blocking sockets polled in a loop, `sched_yield` when a pass moved nothing: never
    /// sleeps on the request path, and keeps its core busy. Needed for the open loop.
    #[default]
    Spin,
    /// Blocking sockets visited in turn: a read waits for that connection's replies (up to 20 ms).
    /// Leaves idle CPU to the server; closed loop only.
    Block,
}

/// The shape of the load.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Requests in flight per connection at most.
    pub pipeline: usize,
    /// Client threads; connections are dealt out among them.
    pub threads: usize,
    /// Time before measuring.
    pub warmup: Duration,
    /// Time measured.
    pub duration: Duration,
    /// Open loop: requests per second over all connections; `None` = closed loop.
    pub rate: Option<f64>,
    /// How threads wait for replies.
    pub poll: Poll,
    /// Print ops/s on stderr every second.
    pub progress: bool,
    /// What the progress lines are prefixed with.
    pub label: String,
}

/// What the clients counted during the measured window.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Replies of the expected kind (rejected registrations included).
    pub ops: u64,
    /// Replies of the wrong kind, replies nothing asked for, broken or closed connections; over the
    /// whole run, warm-up included.
    pub errors: u64,
    /// Registration responses with the R flag.
    pub rejections: u64,
    /// Those rejections by the error cause they carried (0, unspecified, when none).
    pub refusals: BTreeMap<u16, u64>,
    /// Requests sent.
    pub requests: u64,
    /// Bytes of the requests sent.
    pub request_bytes: u64,
    /// Replies received, of any kind.
    pub replies: u64,
    /// Bytes of those replies, padding included.
    pub reply_bytes: u64,
    /// Latency of every op in nanoseconds.
    pub histogram: Histogram<u64>,
    /// What was sent and answered over the whole run, keep-alive acks included.
    pub totals: Totals,
}

impl Stats {
    /// Nothing counted yet.
    pub fn new() -> Self {
        Self {
            ops: 0,
            errors: 0,
            rejections: 0,
            refusals: BTreeMap::new(),
            requests: 0,
            request_bytes: 0,
            replies: 0,
            reply_bytes: 0,
            histogram: latency_histogram(),
            totals: Totals::default(),
        }
    }

    /// Adds another thread's counts.
    pub fn merge(&mut self, other: &Self) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.rejections += other.rejections;
        for (cause, n) in &other.refusals {
            *self.refusals.entry(*cause).or_default() += n;
        }
        self.requests += other.requests;
        self.request_bytes += other.request_bytes;
        self.replies += other.replies;
        self.reply_bytes += other.reply_bytes;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.totals.add(&other.totals);
    }

    /// Mean bytes per request sent, 0 without requests.
    pub fn mean_request_bytes(&self) -> f64 {
        ratio(self.request_bytes, self.requests)
    }

    /// Mean bytes per reply received, 0 without replies.
    pub fn mean_reply_bytes(&self) -> f64 {
        ratio(self.reply_bytes, self.replies)
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// A finished run: the counts, the length of the measured window and its seconds.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Counts of all threads.
    pub stats: Stats,
    /// The measured window.
    pub elapsed: Duration,
    /// Ops and latency per second of the window.
    pub timeline: Timeline,
}

impl Outcome {
    /// Ops per second over the measured window.
    pub fn ops_per_sec(&self) -> f64 {
        self.stats.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The times and rules every thread shares.
#[derive(Clone, Copy)]
struct Plan {
    start: Instant,
    measure: Instant,
    end: Instant,
    pipeline: usize,
    /// Open loop: (requests per second, connections).
    rate: Option<(f64, usize)>,
    check: Check,
    generation: Generation,
    poll: Poll,
}

impl Plan {
    /// Intended send time of request `k` of connection `conn` in open loop: connections are
    /// interleaved so that the whole schedule is evenly spaced.
    fn intended(&self, rate: f64, connections: usize, conn: usize, k: u64) -> Instant {
        let n = conn as f64 + k as f64 * connections as f64;
        self.start + Duration::from_secs_f64(n / rate)
    }
}

/// One client connection.
struct Conn {
    stream: SecureStream,
    work: ConnWork,
    index: usize,
    rng: Rng,
    cursor: usize,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Box<[u8]>,
    in_len: usize,
    sent: VecDeque<Instant>,
    next_seq: u64,
    open: bool,
}

impl Conn {
    fn new(
        mut stream: SecureStream,
        work: ConnWork,
        index: usize,
        spec: &LoadSpec,
    ) -> Result<Self> {
        if work.requests.is_empty() {
            return Err(Error::new("a connection has no request to send"));
        }
        let pipeline = spec.pipeline;
        match spec.poll {
            Poll::Spin => stream.set_nonblocking(true)?,
            Poll::Block => stream.set_read_timeout(Some(BLOCK_TIMEOUT))?,
        }
        Ok(Self {
            stream,
            work,
            index,
            rng: Rng::from_entropy(),
            cursor: 0,
            out: Vec::with_capacity(pipeline * 128 + 4096),
            out_pos: 0,
            inbuf: vec![0; 2 * MAX_FRAME].into_boxed_slice(),
            in_len: 0,
            sent: VecDeque::with_capacity(pipeline),
            next_seq: 0,
            open: true,
        })
    }

    /// One read; every whole frame is accounted, the latencies of the measured ones also into
    /// `seconds` when given. Returns the replies seen (warm-up included), or `None` when nothing
    /// was read.
    fn receive(
        &mut self,
        plan: &Plan,
        stats: &mut Stats,
        mut seconds: Option<&mut Recorder<'_>>,
    ) -> Option<u64> {
        if plan.poll == Poll::Block && self.sent.is_empty() {
            return None;
        }
        let n = match self.stream.read(&mut self.inbuf[self.in_len..]) {
            Ok(0) => {
                self.close(stats);
                return Some(0);
            }
            Ok(n) => n,
            Err(e) if retry(&e) => return None,
            Err(_) => {
                self.close(stats);
                return Some(0);
            }
        };
        let now = Instant::now();
        self.in_len += n;
        let measuring = now >= plan.measure;
        let mut seen = 0;
        let Self {
            inbuf,
            in_len,
            sent,
            out,
            work,
            ..
        } = self;
        let mut frames = Frames::new(&inbuf[..*in_len], MAX_FRAME);
        for frame in frames.by_ref() {
            let reply = workload::classify(frame, plan.check);
            if reply == Reply::KeepAlive {
                stats.totals.keep_alive_acks +=
                    workload::answer_keep_alive(frame, &work.pes, plan.generation, out) as u64;
                continue;
            }
            stats.totals.tally(frame);
            let Some(sent_at) = sent.pop_front() else {
                stats.errors += 1;
                continue;
            };
            seen += 1;
            if !measuring {
                if reply == Reply::Error {
                    stats.errors += 1;
                }
                continue;
            }
            stats.replies += 1;
            stats.reply_bytes += frame.len() as u64;
            match reply {
                Reply::Ok | Reply::Rejected => {
                    stats.ops += 1;
                    if reply == Reply::Rejected {
                        stats.rejections += 1;
                        let cause = workload::rejection_cause(frame, plan.generation);
                        *stats.refusals.entry(cause).or_default() += 1;
                    }
                    let nanos = now.saturating_duration_since(sent_at).as_nanos() as u64;
                    stats.histogram.saturating_record(nanos.max(1));
                    if let Some(r) = seconds.as_deref_mut() {
                        r.record(now, nanos, 1);
                    }
                }
                Reply::Error | Reply::KeepAlive => stats.errors += 1,
            }
        }
        let consumed = frames.consumed();
        let broken = frames.error().is_some();
        inbuf.copy_within(consumed..*in_len, 0);
        *in_len -= consumed;
        if broken {
            self.close(stats);
        }
        Some(seen)
    }

    /// Counts the requests in flight as lost and stops using the connection.
    fn close(&mut self, stats: &mut Stats) {
        stats.errors += 1 + self.sent.len() as u64;
        self.sent.clear();
        self.open = false;
    }

    /// Refills the window (closed loop) or sends what is due (open loop) in one write, together
    /// with any pending keep-alive acks; finishes a partial write first. Returns whether bytes left.
    fn send(&mut self, plan: &Plan, stats: &mut Stats) -> bool {
        // TLS records a full socket held back leave first.
        let mut moved = match self.stream.flush_records() {
            Ok(moved) => moved,
            Err(_) => {
                self.close(stats);
                return true;
            }
        };
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            let now = Instant::now();
            let room = plan.pipeline - self.sent.len();
            let measuring = now >= plan.measure;
            match plan.rate {
                None => {
                    for _ in 0..room {
                        self.push_request(measuring, stats);
                        self.sent.push_back(now);
                    }
                }
                Some((rate, connections)) => {
                    for _ in 0..room {
                        let due = plan.intended(rate, connections, self.index, self.next_seq);
                        if due > now {
                            break;
                        }
                        self.push_request(measuring, stats);
                        self.sent.push_back(due);
                        self.next_seq += 1;
                    }
                }
            }
            if self.out.is_empty() {
                return moved;
            }
        }
        match self.stream.write(&self.out[self.out_pos..]) {
            Ok(n) => {
                self.out_pos += n;
                moved |= n > 0;
                moved
            }
            Err(e) if retry(&e) => moved,
            Err(_) => {
                self.close(stats);
                true
            }
        }
    }

    fn push_request(&mut self, measuring: bool, stats: &mut Stats) {
        let table: &Table = &self.work.requests;
        let i = match self.work.pick {
            Pick::Random => self.rng.below(table.len() as u64) as usize,
            Pick::Cycle => {
                let i = self.cursor;
                self.cursor = (i + 1) % table.len();
                i
            }
        };
        let request = table.get(i);
        self.out.extend_from_slice(request);
        stats.totals.requests += 1;
        if measuring {
            stats.requests += 1;
            stats.request_bytes += request.len() as u64;
        }
    }

    /// After the run: reads the answers to the requests still in flight, until `deadline`, into
    /// `stats` as outside the measured window (their totals and errors only); keep-alives that
    /// come meanwhile are answered.
    fn settle(&mut self, plan: &Plan, deadline: Instant, stats: &mut Stats) {
        if !self.open || self.stream.set_nonblocking(false).is_err() {
            return;
        }
        let after = Plan {
            measure: deadline + MAX_LATENCY,
            poll: Poll::Spin,
            ..*plan
        };
        while self.open && !self.sent.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return;
            }
            self.receive(&after, stats, None);
            if self.out_pos < self.out.len() {
                if self.stream.write_all(&self.out[self.out_pos..]).is_err() {
                    self.close(stats);
                    return;
                }
                self.out_pos = self.out.len();
            }
        }
    }

    /// Best effort: sends what is still queued and the deregistrations of the connection's PEs,
    /// without waiting. Returns how many deregistrations left.
    fn retire(&mut self, generation: Generation, totals: &mut Totals) -> usize {
        if self.work.pes.is_empty() || !self.open {
            return 0;
        }
        let mut table = Table::default();
        for pe in &self.work.pes {
            if workload::push_deregistration(&mut table, pe, generation).is_err() {
                return 0;
            }
        }
        let mut pending = self.out[self.out_pos..].to_vec();
        pending.extend_from_slice(table.all());
        // Failures are ignored: the registrar drops the PEs with the association anyway.
        let sent = self.stream.set_nonblocking(false).is_ok()
            && self
                .stream
                .set_write_timeout(Some(Duration::from_secs(1)))
                .is_ok()
            && self.stream.write_all(&pending).is_ok();
        if !sent {
            return 0;
        }
        totals.requests += table.len() as u64;
        table.len()
    }

    /// After `retire`: reads until the answers to its `deregistrations` came, the registrar
    /// closed, or `deadline`, counting what came into `totals`. The connection closes only then:
    /// a registrar drops the answers still queued for a connection whose peer closed.
    fn drain(&mut self, deadline: Instant, deregistrations: usize, totals: &mut Totals) {
        let mut answered = 0;
        while answered < deregistrations {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match self.stream.read(&mut self.inbuf[self.in_len..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => self.in_len += n,
            }
            let mut frames = Frames::new(&self.inbuf[..self.in_len], MAX_FRAME);
            for frame in frames.by_ref() {
                totals.tally(frame);
                answered += usize::from(frame[0] == mt::DEREGISTRATION_RESPONSE);
            }
            if frames.error().is_some() {
                return;
            }
            let consumed = frames.consumed();
            self.inbuf.copy_within(consumed..self.in_len, 0);
            self.in_len -= consumed;
        }
    }
}

/// Whether an I/O error only means "not now": no data yet, a read timeout, a signal.
fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// Per-thread progress counter on its own cache line.
#[repr(align(64))]
#[derive(Default)]
struct Live(AtomicU64);

fn drive(conns: &mut [Conn], plan: &Plan, live: &Live, mut seconds: Recorder<'_>) -> Stats {
    let mut stats = Stats::new();
    let mut seen_total = 0u64;
    loop {
        let now = Instant::now();
        if now >= plan.end {
            break;
        }
        seconds.advance(now);
        let mut moved = false;
        let before = seen_total;
        for conn in conns.iter_mut().filter(|c| c.open) {
            if let Some(seen) = conn.receive(plan, &mut stats, Some(&mut seconds)) {
                seen_total += seen;
                moved = true;
            }
            if conn.open {
                moved |= conn.send(plan, &mut stats);
            }
        }
        if seen_total != before {
            live.0.store(seen_total, Ordering::Relaxed);
        }
        if !moved {
            if conns.iter().all(|c| !c.open) {
                break;
            }
            thread::yield_now();
        }
    }
    stats
}

/// Runs the load against `endpoint`: one connection per entry of `work`, dealt out over
/// `spec.threads` threads.
pub fn run(
    endpoint: &Endpoint,
    spec: &LoadSpec,
    work: Vec<ConnWork>,
    check: Check,
) -> Result<Outcome> {
    let connections = work.len();
    if spec.rate.is_some() && spec.poll == Poll::Block {
        return Err(Error::new(
            "the open loop (--rate) sends on a schedule: it needs --poll spin",
        ));
    }
    if connections == 0 || spec.pipeline == 0 || spec.threads == 0 || spec.threads > connections {
        return Err(Error::new(format!(
            "need at least one connection, a pipeline of at least 1 and 1..={connections} threads"
        )));
    }
    let mut groups: Vec<Vec<Conn>> = (0..spec.threads).map(|_| Vec::new()).collect();
    // SCTP over UDP: one socket and endpoint per thread, holding all its associations.
    let hubs = match endpoint.transport {
        StreamTransport::SctpUdp => (0..spec.threads)
            .map(|_| Hub::new(endpoint.addr))
            .collect::<io::Result<Vec<_>>>()
            .context(|| format!("open the UDP sockets for {endpoint}"))?,
        _ => Vec::new(),
    };
    for (index, w) in work.into_iter().enumerate() {
        let thread = index % spec.threads;
        let stream = match hubs.get(thread) {
            Some(hub) => hub.connect(endpoint.addr).map(SecureStream::sctp_udp),
            None => tls::connect(endpoint),
        }
        .context(|| format!("connect to {endpoint}"))?;
        groups[thread].push(Conn::new(stream, w, index, spec)?);
    }
    let start = Instant::now();
    let plan = Plan {
        start,
        measure: start + spec.warmup,
        end: start + spec.warmup + spec.duration,
        pipeline: spec.pipeline,
        rate: spec.rate.map(|r| (r, connections)),
        check,
        generation: endpoint.generation,
        poll: spec.poll,
    };
    let lives: Vec<Live> = (0..spec.threads).map(|_| Live::default()).collect();
    let series = Series::new(plan.measure, Some(spec.duration));
    let mut totals = Stats::new();
    thread::scope(|scope| {
        let handles: Vec<_> = groups
            .iter_mut()
            .zip(&lives)
            .zip(series.recorders(spec.threads))
            .map(|((group, live), seconds)| {
                let plan = &plan;
                scope.spawn(move || drive(group, plan, live, seconds))
            })
            .collect();
        if spec.progress {
            report_progress(&plan, &lives, &spec.label);
        }
        for h in handles {
            match h.join() {
                Ok(s) => totals.merge(&s),
                Err(_) => totals.errors += 1,
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    for conn in groups.iter_mut().flatten() {
        conn.settle(&plan, deadline, &mut totals);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let retired: Vec<usize> = groups
        .iter_mut()
        .flatten()
        .map(|c| c.retire(endpoint.generation, &mut totals.totals))
        .collect();
    for (conn, deregistrations) in groups.iter_mut().flatten().zip(retired) {
        conn.drain(deadline, deregistrations, &mut totals.totals);
    }
    Ok(Outcome {
        stats: totals,
        elapsed: spec.duration,
        timeline: series.finish(spec.duration),
    })
}

/// Prints replies per second of the last second on stderr until the run ends.
fn report_progress(plan: &Plan, lives: &[Live], label: &str) {
    let mut last = 0u64;
    let mut tick = plan.start + Duration::from_secs(1);
    let mut second = 1;
    while tick <= plan.end {
        thread::sleep(tick.saturating_duration_since(Instant::now()));
        let total: u64 = lives.iter().map(|l| l.0.load(Ordering::Relaxed)).sum();
        let phase = if tick <= plan.measure {
            "warm-up"
        } else {
            "measure"
        };
        eprintln!(
            "{label} {second:>4}s {phase} {:>12} ops/s",
            total.saturating_sub(last)
        );
        last = total;
        tick += Duration::from_secs(1);
        second += 1;
    }
}
