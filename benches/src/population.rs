//! The population driver of `register --population` and `storm`: every association registers its
//! own share of new PEs, each exactly once, and the run lasts until every registration is
//! answered (or its time runs out). `register` keeps a window of `--pipeline` registrations in
//! flight per association; `storm` writes all of an association's registrations at once, as PEs
//! do after a registrar restart. Client threads wait on epoll (edge-triggered, non-blocking
//! sockets): with a thousand associations a pass over every socket would cost more than the
//! answers. Keep-alives the registrar sends meanwhile are answered on the association they came
//! on, before the next registrations. The answers are counted by tenths of the population (the
//! registrar's PE count going from 0 to 10 %, 10 to 20 %, ...), refusals by their error cause,
//! latencies per second too. Afterwards the PEs are deregistered, best effort.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rserpool_protocol::Generation;
use rserpool_protocol::framing::Frames;
use rustix::event::{Timespec, epoll};

use crate::error::{Context, Error, Result};
use crate::load::{Poll, Stats};
use crate::net::{self, Endpoint};
use crate::series::{Recorder, Series, Timeline};
use crate::workload::{self, Check, MAX_FRAME, PeRecord, Reply, Table};

/// The tenths the population's answers are counted in.
pub const BANDS: usize = 10;
/// With [`Poll::Block`], the longest an epoll wait lasts before the thread looks at the clock.
const BLOCK_WAIT: Duration = Duration::from_millis(10);
/// The longest the deregistrations at the end may take: a registrar swamped by the population's
/// keep-alives answers slowly, and drops the PEs with their associations anyway.
const DEREGISTRATION_LIMIT: Duration = Duration::from_secs(10);
/// Events taken from epoll per wait.
const EVENTS: usize = 1024;

/// How the population registers.
#[derive(Clone, Debug)]
pub struct PopulationSpec {
    /// Registrations in flight per association at most; `None`: all of them at once.
    pub window: Option<usize>,
    /// Client threads; associations are dealt out among them.
    pub threads: usize,
    /// How long the registrations may take from the first write.
    pub limit: Duration,
    /// How long the associations stay (answering keep-alives) after the last answer before
    /// `at_end` is called: time for a registrar to settle before its memory is read.
    pub settle: Duration,
    /// Spin (epoll without waiting, `sched_yield` when idle) or block (epoll waits).
    pub poll: Poll,
    /// Print answers per second on stderr every second.
    pub progress: bool,
    /// What the progress lines are prefixed with.
    pub label: String,
}

/// One association's share of the population: its registrations, encoded before the run, and
/// the PEs they register.
#[derive(Clone, Debug, Default)]
pub struct Share {
    /// One ASAP_REGISTRATION per PE, in the order they are sent.
    pub registrations: Table,
    /// The PEs (keep-alives for them are answered, they are deregistered at the end).
    pub pes: Vec<PeRecord>,
}

/// What a population run measured.
#[derive(Clone, Debug)]
pub struct PopulationOutcome {
    /// Counts of all threads: ops are accepted registrations, rejections refused ones; totals
    /// cover the deregistrations at the end too.
    pub stats: Stats,
    /// Registrations of the population.
    pub population: u64,
    /// Registrations answered (accepted or refused).
    pub answered: u64,
    /// Seconds from the first write to the last answer, or to the end of the time allowed.
    pub seconds: f64,
    /// Whether every registration was answered in time.
    pub completed: bool,
    /// Per tenth of the population: (its registrations, the seconds their answers took), `None`
    /// when the tenth was not completed.
    pub bands: Vec<(u64, Option<f64>)>,
    /// Associations used.
    pub connections: usize,
    /// Accepted registrations and their latency per second from the first write.
    pub timeline: Timeline,
}

impl PopulationOutcome {
    /// Registrations not answered.
    pub fn unanswered(&self) -> u64 {
        self.population - self.answered
    }

    /// Accepted registrations per second from the first write to the last answer.
    pub fn per_second(&self) -> f64 {
        self.stats.ops as f64 / self.seconds.max(1e-9)
    }
}

/// What the threads share: the clock, the progress and the end.
struct Shared {
    start: Instant,
    /// Registrations answered, over all threads.
    answered: AtomicU64,
    /// Registrations that will never be answered: in flight or unsent on a closed association.
    lost: AtomicU64,
    /// Nanoseconds after `start` (plus one; 0 = not yet) at which each tenth was complete.
    band_ends: [AtomicU64; BANDS],
    population: u64,
    stop: AtomicBool,
}

impl Shared {
    /// The answer count that completes tenth `k` (1-based).
    fn boundary(&self, k: usize) -> u64 {
        self.population * k as u64 / BANDS as u64
    }

    /// Counts `n` answers that arrived at `now`, noting the tenths they complete.
    fn answered(&self, n: u64, now: Instant) {
        if n == 0 {
            return;
        }
        let before = self.answered.fetch_add(n, Ordering::Relaxed);
        for k in 1..=BANDS {
            let b = self.boundary(k);
            if before < b && b <= before + n {
                let nanos = now.duration_since(self.start).as_nanos() as u64 + 1;
                self.band_ends[k - 1].store(nanos, Ordering::Relaxed);
            }
        }
    }

    fn settled(&self) -> bool {
        self.answered.load(Ordering::Relaxed) + self.lost.load(Ordering::Relaxed) >= self.population
    }
}

/// The rules of one phase (the registrations, or the deregistrations at the end).
#[derive(Clone, Copy)]
struct Phase {
    window: usize,
    check: Check,
    generation: Generation,
    poll: Poll,
    deadline: Instant,
    /// Whether answers count in the stats and the shared progress (the registrations).
    measured: bool,
}

/// One association.
struct Conn {
    stream: TcpStream,
    requests: Table,
    pes: Vec<PeRecord>,
    /// Requests copied to `out` so far.
    sent: usize,
    /// Answers received so far.
    answered: usize,
    out: Vec<u8>,
    out_pos: usize,
    /// Keep-alive acks waiting for the next write.
    acks: Vec<u8>,
    inbuf: Box<[u8]>,
    in_len: usize,
    sent_at: VecDeque<Instant>,
    open: bool,
}

impl Conn {
    fn done(&self) -> bool {
        !self.open || self.answered == self.requests.len()
    }

    /// Reads until the socket is empty, then writes until it is full or nothing is left.
    fn pump(
        &mut self,
        phase: &Phase,
        shared: &Shared,
        stats: &mut Stats,
        mut seconds: Option<&mut Recorder<'_>>,
    ) {
        while self.open {
            match self.stream.read(&mut self.inbuf[self.in_len..]) {
                Ok(0) => self.close(phase, shared, stats),
                Ok(n) => self.receive(n, phase, shared, stats, seconds.as_deref_mut()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.close(phase, shared, stats),
            }
        }
        while self.open {
            if self.out_pos == self.out.len() && !self.refill(phase, stats) {
                break;
            }
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.close(phase, shared, stats),
            }
        }
    }

    /// Accounts the whole frames among `n` new bytes, the latencies also into `seconds` when
    /// given.
    fn receive(
        &mut self,
        n: usize,
        phase: &Phase,
        shared: &Shared,
        stats: &mut Stats,
        mut seconds: Option<&mut Recorder<'_>>,
    ) {
        let now = Instant::now();
        self.in_len += n;
        let mut answers = 0;
        let mut frames = Frames::new(&self.inbuf[..self.in_len], MAX_FRAME);
        for frame in frames.by_ref() {
            let reply = workload::classify(frame, phase.check);
            if reply == Reply::KeepAlive {
                stats.totals.keep_alive_acks +=
                    workload::answer_keep_alive(frame, &self.pes, phase.generation, &mut self.acks)
                        as u64;
                continue;
            }
            stats.totals.tally(frame);
            let Some(sent_at) = self.sent_at.pop_front() else {
                stats.errors += 1;
                continue;
            };
            answers += 1;
            if !phase.measured {
                continue;
            }
            stats.replies += 1;
            stats.reply_bytes += frame.len() as u64;
            match reply {
                Reply::Ok => {
                    stats.ops += 1;
                    let nanos = now.saturating_duration_since(sent_at).as_nanos() as u64;
                    stats.histogram.saturating_record(nanos.max(1));
                    if let Some(r) = seconds.as_deref_mut() {
                        r.record(now, nanos, 1);
                    }
                }
                Reply::Rejected => {
                    stats.rejections += 1;
                    let cause = workload::rejection_cause(frame, phase.generation);
                    *stats.refusals.entry(cause).or_default() += 1;
                }
                Reply::Error | Reply::KeepAlive => stats.errors += 1,
            }
        }
        let consumed = frames.consumed();
        let broken = frames.error().is_some();
        self.inbuf.copy_within(consumed..self.in_len, 0);
        self.in_len -= consumed;
        self.answered += answers;
        if phase.measured {
            shared.answered(answers as u64, now);
        }
        if broken {
            self.close(phase, shared, stats);
        }
    }

    /// Fills `out` with the pending acks and the requests the window allows; returns whether
    /// there is anything to write.
    fn refill(&mut self, phase: &Phase, stats: &mut Stats) -> bool {
        self.out.clear();
        self.out_pos = 0;
        self.out.append(&mut self.acks);
        let upto = (self.answered.saturating_add(phase.window)).min(self.requests.len());
        if upto > self.sent {
            let now = Instant::now();
            let bytes = self.requests.range(self.sent..upto);
            self.out.extend_from_slice(bytes);
            stats.totals.requests += (upto - self.sent) as u64;
            if phase.measured {
                stats.requests += (upto - self.sent) as u64;
                stats.request_bytes += bytes.len() as u64;
            }
            self.sent_at
                .extend(std::iter::repeat_n(now, upto - self.sent));
            self.sent = upto;
        }
        !self.out.is_empty()
    }

    /// Stops using a broken association: its requests in flight and unsent are lost.
    fn close(&mut self, phase: &Phase, shared: &Shared, stats: &mut Stats) {
        self.open = false;
        stats.errors += 1 + self.sent_at.len() as u64;
        if phase.measured {
            let lost = self.requests.len() - self.answered;
            shared.lost.fetch_add(lost as u64, Ordering::Relaxed);
        }
        self.sent_at.clear();
    }
}

/// One client thread's loop over its associations, until the phase is over for them or
/// `shared.stop`; the latencies also into `seconds` when given.
fn drive(
    conns: &mut [Conn],
    phase: &Phase,
    shared: &Shared,
    mut seconds: Option<Recorder<'_>>,
) -> Result<Stats> {
    let mut stats = Stats::new();
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
        .map_err(|e| Error::new(format!("epoll_create: {e}")))?;
    let interest = epoll::EventFlags::IN
        | epoll::EventFlags::OUT
        | epoll::EventFlags::RDHUP
        | epoll::EventFlags::ET;
    for (i, conn) in conns.iter().enumerate().filter(|(_, c)| c.open) {
        epoll::add(
            &epoll,
            &conn.stream,
            epoll::EventData::new_u64(i as u64),
            interest,
        )
        .map_err(|e| Error::new(format!("epoll_ctl: {e}")))?;
    }
    let wait = match phase.poll {
        Poll::Spin => Timespec::default(),
        Poll::Block => Timespec {
            tv_sec: 0,
            tv_nsec: BLOCK_WAIT.as_nanos() as i64,
        },
    };
    let mut events = Vec::with_capacity(EVENTS);
    let mut pending = conns.iter().filter(|c| !c.done()).count();
    loop {
        if let Some(r) = seconds.as_mut() {
            r.advance(Instant::now());
        }
        // The measured phase runs until the main thread says stop, so that the associations
        // answer keep-alives while the registrar settles; the other until it is done.
        let over = if phase.measured {
            shared.stop.load(Ordering::Relaxed)
        } else {
            pending == 0 || Instant::now() >= phase.deadline
        };
        if over {
            break;
        }
        events.clear();
        match epoll::wait(
            &epoll,
            rustix::buffer::spare_capacity(&mut events),
            Some(&wait),
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::new(format!("epoll_wait: {e}"))),
        }
        if events.is_empty() {
            if phase.poll == Poll::Spin {
                thread::yield_now();
            }
            continue;
        }
        for event in &events {
            let conn = &mut conns[event.data.u64() as usize];
            let was_done = conn.done();
            conn.pump(phase, shared, &mut stats, seconds.as_mut());
            if !was_done && conn.done() {
                pending -= 1;
            }
        }
    }
    Ok(stats)
}

/// Runs one phase over `groups` (one thread each) and merges their counts into `stats`, the
/// latencies per second into `series` when given. `main` runs on this thread meanwhile; after
/// it the measured phase is stopped, while the other ends when its associations are done or its
/// deadline passed.
fn run_phase(
    groups: &mut [Vec<Conn>],
    phase: &Phase,
    shared: &Shared,
    stats: &mut Stats,
    series: Option<&Series>,
    main: impl FnOnce(),
) -> Result<()> {
    let mut recorders = series
        .map(|s| s.recorders(groups.len()))
        .unwrap_or_default()
        .into_iter();
    thread::scope(|scope| {
        let handles: Vec<_> = groups
            .iter_mut()
            .map(|group| {
                let seconds = recorders.next();
                scope.spawn(move || drive(group, phase, shared, seconds))
            })
            .collect();
        main();
        if phase.measured {
            shared.stop.store(true, Ordering::Relaxed);
        }
        let mut result = Ok(());
        for handle in handles {
            match handle.join() {
                Ok(Ok(s)) => stats.merge(&s),
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(Error::new("a client thread panicked")),
            }
        }
        result
    })
}

/// Connects one association per share to `endpoint` (all of them before the first write), calls
/// `connected`, registers every share's PEs as `spec` says, waits `spec.settle` with the
/// associations still answering keep-alives, calls `at_end`, and deregisters the PEs (best
/// effort, for as long as the registrations took plus 2 s, and 10 s at most).
pub fn run(
    endpoint: &Endpoint,
    spec: &PopulationSpec,
    shares: Vec<Share>,
    check: Check,
    connected: impl FnOnce(),
    at_end: impl FnOnce(),
) -> Result<PopulationOutcome> {
    let connections = shares.len();
    if connections == 0 || spec.threads == 0 || spec.threads > connections {
        return Err(Error::new(format!(
            "need at least one association and 1..={connections} threads"
        )));
    }
    net::raise_open_files(connections)?;
    let population: usize = shares.iter().map(|s| s.registrations.len()).sum();
    let mut groups: Vec<Vec<Conn>> = (0..spec.threads).map(|_| Vec::new()).collect();
    for (index, share) in shares.into_iter().enumerate() {
        let stream = net::connect(endpoint).context(|| {
            format!(
                "connect association {} of {connections} to {endpoint}",
                index + 1
            )
        })?;
        stream.set_nonblocking(true)?;
        groups[index % spec.threads].push(Conn {
            stream,
            requests: share.registrations,
            pes: share.pes,
            sent: 0,
            answered: 0,
            out: Vec::new(),
            out_pos: 0,
            acks: Vec::new(),
            inbuf: vec![0; 2 * MAX_FRAME].into_boxed_slice(),
            in_len: 0,
            sent_at: VecDeque::new(),
            open: true,
        });
    }
    connected();
    let start = Instant::now();
    let shared = Shared {
        start,
        answered: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        band_ends: Default::default(),
        population: population as u64,
        stop: AtomicBool::new(false),
    };
    let phase = Phase {
        window: spec.window.unwrap_or(usize::MAX),
        check,
        generation: endpoint.generation,
        poll: spec.poll,
        deadline: start + spec.limit,
        measured: true,
    };
    let mut stats = Stats::new();
    let mut finished = start + spec.limit;
    let series = Series::new(start, None);
    run_phase(
        &mut groups,
        &phase,
        &shared,
        &mut stats,
        Some(&series),
        || {
            finished = watch(&shared, spec, phase.deadline);
            thread::sleep(spec.settle);
            at_end();
        },
    )?;
    let answered = shared.answered.load(Ordering::Relaxed);
    let elapsed = finished.duration_since(start);
    let seconds = elapsed.as_secs_f64();
    let bands = bands(&shared);
    deregister(&mut groups, &phase, &shared, &mut stats, seconds)?;
    Ok(PopulationOutcome {
        stats,
        population: population as u64,
        answered,
        seconds,
        completed: answered == population as u64,
        bands,
        connections,
        timeline: series.finish(elapsed),
    })
}

/// The main thread while the registrations run: progress lines, and the end (every
/// registration answered or lost, or the deadline). Returns when the last answer came.
fn watch(shared: &Shared, spec: &PopulationSpec, deadline: Instant) -> Instant {
    let mut tick = shared.start + Duration::from_secs(1);
    let (mut second, mut last) = (1, 0);
    loop {
        let now = Instant::now();
        if shared.settled() {
            // The last tenth ends with the last answer; without it (lost answers) now will do.
            let nanos = shared.band_ends[BANDS - 1].load(Ordering::Relaxed);
            return match nanos {
                0 => now,
                n => shared.start + Duration::from_nanos(n - 1),
            };
        }
        if now >= deadline {
            return deadline;
        }
        if spec.progress && now >= tick {
            let answered = shared.answered.load(Ordering::Relaxed);
            eprintln!(
                "{} {second:>4}s {:>12} answers/s, {answered} of {} answered",
                spec.label,
                answered - last,
                shared.population
            );
            (second, last) = (second + 1, answered);
            tick += Duration::from_secs(1);
        }
        thread::sleep(Duration::from_millis(1).min(deadline.saturating_duration_since(now)));
    }
}

/// Per tenth: its registrations and the seconds from the end of the tenth before (or the first
/// write) to its own end.
fn bands(shared: &Shared) -> Vec<(u64, Option<f64>)> {
    let mut previous = Some(0);
    (1..=BANDS)
        .map(|k| {
            let pes = shared.boundary(k) - shared.boundary(k - 1);
            let end = match shared.band_ends[k - 1].load(Ordering::Relaxed) {
                0 => None,
                n => Some(n - 1),
            };
            // Client threads record the tenths' ends independently, so the end of a tenth may
            // be noted a little before the end of the tenth before it: that counts as no time.
            let seconds = match (previous, end) {
                (Some(from), Some(to)) if pes > 0 => Some(to.saturating_sub(from) as f64 / 1e9),
                _ => None,
            };
            if pes > 0 {
                previous = end;
            }
            (pes, seconds)
        })
        .collect()
}

/// After the measurement: each association whose registrations were all answered sends the
/// deregistrations of its PEs and reads their answers, for at most as long as the registrations
/// took plus 2 s, and 10 s at most; the others are closed. Failures are ignored: a registrar drops the PEs with
/// their associations.
fn deregister(
    groups: &mut [Vec<Conn>],
    registering: &Phase,
    shared: &Shared,
    stats: &mut Stats,
    seconds: f64,
) -> Result<()> {
    let mut any = false;
    for conn in groups.iter_mut().flatten() {
        if !conn.done() {
            // Answers still to come would be taken for the deregistrations' answers.
            conn.open = false;
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
        let mut table = Table::default();
        if conn.open {
            for pe in &conn.pes {
                workload::push_deregistration(&mut table, pe, registering.generation)?;
            }
        }
        any |= !table.is_empty();
        conn.requests = table;
        conn.sent = 0;
        conn.answered = 0;
    }
    if !any {
        return Ok(());
    }
    let phase = Phase {
        check: Check::Churn,
        deadline: Instant::now() + Duration::from_secs_f64(seconds + 2.0).min(DEREGISTRATION_LIMIT),
        measured: false,
        ..*registering
    };
    let mut after = Stats::new();
    let result = run_phase(groups, &phase, shared, &mut after, None, || {});
    stats.totals.add(&after.totals);
    result
}
