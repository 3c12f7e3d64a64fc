//! The PEs a scenario keeps registered for its whole length: registered over setup connections
//! (several PEs each) before the timed phase, kept alive by a background thread that answers the
//! registrar's keep-alives, or measured in the foreground by the `keepalive` scenario (keep-alives
//! received, acks sent and the time to ack), and deregistered at the end. Every request, answer
//! and ack is tallied in the registrar's terms ([`Totals`]).

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rserpool_protocol::asap::message_type as mt;
use rserpool_protocol::framing::Frames;
use rserpool_protocol::{AsapMessage, Generation};

use crate::error::{Context, Error, Result};
use crate::load::{LoadSpec, Outcome, Poll, Stats};
use crate::net::Endpoint;
use crate::series::Series;
use crate::tls::{self, SecureStream};
use crate::workload::{self, MAX_FRAME, PeIds, PeRecord, PolicyKind, Table, Totals};

/// Setup connections at most for [`Fleet::register`]; PEs are dealt out over them.
const SETUP_CONNECTIONS: usize = 16;
/// Registrations (or deregistrations) in flight per setup connection at most: the answers to a
/// window fit in a socket's receive buffer, so blocking writes cannot stall both sides.
const WINDOW: usize = 1024;
/// How long setup waits for an answer.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the keep-alive thread polls its connections.
const POLL: Duration = Duration::from_millis(5);
/// How long a measuring pass that moved nothing sleeps with `--poll block`.
const IDLE_SLEEP: Duration = Duration::from_millis(1);

/// What one read of a setup connection brought.
#[derive(Clone, Copy, Debug, Default)]
struct Batch {
    /// Keep-alive acks appended to `out`.
    acks: u64,
    /// Bytes of the keep-alives answered.
    keep_alive_bytes: u64,
    /// Bytes of their acks.
    ack_bytes: u64,
}

/// One setup connection: an association carrying several PEs.
struct SetupConn {
    stream: SecureStream,
    pes: Vec<PeRecord>,
    inbuf: Vec<u8>,
    in_len: usize,
    out: Vec<u8>,
    open: bool,
    totals: Totals,
    /// While measuring: when the keep-alives whose acks wait in `out` were read, and how many.
    waiting: Vec<(Instant, u64)>,
}

impl SetupConn {
    /// Reads at least once (blocking, or not, as the socket is set) and hands every whole frame
    /// that is not a keep-alive to `on_frame`, tallied; keep-alives are answered into `out`.
    fn read_frames(
        &mut self,
        generation: Generation,
        mut on_frame: impl FnMut(&[u8]),
    ) -> io::Result<Batch> {
        let n = self.stream.read(&mut self.inbuf[self.in_len..])?;
        if n == 0 {
            self.open = false;
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the registrar closed a setup connection",
            ));
        }
        self.in_len += n;
        let mut read = Batch::default();
        let mut frames = Frames::new(&self.inbuf[..self.in_len], MAX_FRAME);
        for frame in frames.by_ref() {
            if frame[0] == mt::ENDPOINT_KEEP_ALIVE {
                let before = self.out.len();
                read.acks +=
                    workload::answer_keep_alive(frame, &self.pes, generation, &mut self.out) as u64;
                read.keep_alive_bytes += frame.len() as u64;
                read.ack_bytes += (self.out.len() - before) as u64;
            } else {
                self.totals.tally(frame);
                on_frame(frame);
            }
        }
        self.totals.keep_alive_acks += read.acks;
        if let Some(e) = frames.error() {
            self.open = false;
            return Err(io::Error::new(ErrorKind::InvalidData, e));
        }
        let consumed = frames.consumed();
        self.inbuf.copy_within(consumed..self.in_len, 0);
        self.in_len -= consumed;
        Ok(read)
    }

    /// Sends `messages` pipelined, at most [`WINDOW`] unanswered, and awaits one answer per
    /// message (blocking); keep-alives that come meanwhile are answered with the next write.
    /// Returns the answers that were rejections, as (PE, cause).
    fn exchange(&mut self, messages: &Table, generation: Generation) -> Result<Vec<String>> {
        let mut refused = Vec::new();
        let (mut sent, mut answered) = (0, 0);
        while answered < messages.len() {
            let upto = (answered + WINDOW).min(messages.len());
            if upto > sent {
                self.out.extend_from_slice(messages.range(sent..upto));
                self.totals.requests += (upto - sent) as u64;
                sent = upto;
            }
            if !self.out.is_empty() {
                self.stream.write_all(&self.out)?;
                self.out.clear();
            }
            self.read_frames(generation, |frame| {
                answered += 1;
                if let Some(why) = refusal(frame, generation) {
                    refused.push(why);
                }
            })
            .map_err(|e| match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut => Error::new(format!(
                    "no answer from the registrar within {SETUP_TIMEOUT:?} during setup"
                )),
                _ => Error::new(format!("setup connection: {e}")),
            })?;
        }
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(refused)
    }

    /// Writes what `out` holds without blocking; returns whether it is all out. A broken
    /// connection is closed with a warning.
    fn flush(&mut self) -> bool {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) => {
                    eprintln!("warning: setup connection: {e}");
                    self.open = false;
                    return false;
                }
            }
        }
        true
    }
}

/// Why a registration or deregistration answer is a refusal, if it is one.
fn refusal(frame: &[u8], generation: Generation) -> Option<String> {
    match AsapMessage::decode(frame, generation).map(|d| d.message) {
        Ok(
            AsapMessage::RegistrationResponse {
                rejected: false, ..
            }
            | AsapMessage::DeregistrationResponse { error: None, .. },
        ) => None,
        Ok(AsapMessage::RegistrationResponse { pe_id, error, .. }) => Some(format!(
            "registration of PE {pe_id} rejected, cause {:#06x}",
            error.and_then(|e| e.first()).map_or(0, |c| c.code)
        )),
        Ok(AsapMessage::DeregistrationResponse { pe_id, error, .. }) => Some(format!(
            "deregistration of PE {pe_id} refused, cause {:#06x}",
            error.and_then(|e| e.first()).map_or(0, |c| c.code)
        )),
        Ok(other) => Some(format!(
            "unexpected {}",
            rserpool_protocol::asap::message_name(other.message_type())
        )),
        Err(e) => Some(format!("undecodable answer: {e}")),
    }
}

/// Registered PEs kept alive in the background.
pub struct Fleet {
    stop: Arc<AtomicBool>,
    keep_alives: Arc<AtomicU64>,
    thread: Option<JoinHandle<Vec<SetupConn>>>,
    /// The connections while no thread answers on them (after [`Fleet::measure_keep_alives`]).
    idle: Vec<SetupConn>,
    pes: usize,
    connections: usize,
    generation: Generation,
}

impl Fleet {
    /// Registers `per_pool` PEs in each of `pools` pools (named by [`workload::pool_handle`]) at
    /// `endpoint` over at most 16 connections, with `policy` (PE `n`'s parameters drawn from
    /// `n`), and starts answering keep-alives. Fails if any registration is rejected.
    pub fn register(
        endpoint: &Endpoint,
        pools: usize,
        per_pool: usize,
        policy: PolicyKind,
        ids: &mut PeIds,
    ) -> Result<Self> {
        let pes: Vec<PeRecord> = (0..pools * per_pool)
            .map(|n| PeRecord {
                pool: workload::pool_handle(n / per_pool),
                id: ids.fresh(),
                policy: policy.for_pe(n),
            })
            .collect();
        let connections = pes.len().clamp(1, SETUP_CONNECTIONS);
        Self::start(endpoint, connections, pes)
    }

    /// Registers `pes` at `endpoint`, dealt out round robin over `connections` associations,
    /// and starts answering keep-alives. Fails if any registration is rejected.
    pub fn start(endpoint: &Endpoint, connections: usize, pes: Vec<PeRecord>) -> Result<Self> {
        let total = pes.len();
        let count = connections.clamp(1, total.max(1));
        let mut conns = Vec::with_capacity(count);
        for _ in 0..count {
            let stream = tls::connect(endpoint).context(|| format!("connect to {endpoint}"))?;
            stream.set_read_timeout(Some(SETUP_TIMEOUT))?;
            conns.push(SetupConn {
                stream,
                pes: Vec::new(),
                inbuf: vec![0; 4 * MAX_FRAME],
                in_len: 0,
                out: Vec::new(),
                open: true,
                totals: Totals::default(),
                waiting: Vec::new(),
            });
        }
        for (n, pe) in pes.into_iter().enumerate() {
            conns[n % count].pes.push(pe);
        }
        let generation = endpoint.generation;
        let refused = thread::scope(|scope| {
            let jobs: Vec<_> = conns
                .iter_mut()
                .enumerate()
                .map(|(c, conn)| {
                    scope.spawn(move || {
                        let ip = conn.stream.local_addr()?.ip();
                        let mut table = Table::default();
                        for (i, pe) in conn.pes.iter().enumerate() {
                            let port = workload::pe_port(i * count + c);
                            workload::push_registration(&mut table, pe, ip, port, generation)?;
                        }
                        conn.exchange(&table, generation)
                    })
                })
                .collect();
            let mut refused = Vec::new();
            for job in jobs {
                refused.extend(
                    job.join()
                        .map_err(|_| Error::new("setup thread panicked"))??,
                );
            }
            Ok::<_, Error>(refused)
        })?;
        if let Some(first) = refused.first() {
            return Err(Error::new(format!(
                "the registrar refused {} of {total} registrations during setup (first: {first})",
                refused.len()
            )));
        }
        for conn in &mut conns {
            conn.stream.set_nonblocking(true)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let keep_alives = Arc::new(AtomicU64::new(0));
        let thread = {
            let stop = Arc::clone(&stop);
            let keep_alives = Arc::clone(&keep_alives);
            thread::Builder::new()
                .name("keep-alive".into())
                .spawn(move || keep_alive(conns, generation, &stop, &keep_alives))?
        };
        Ok(Self {
            stop,
            keep_alives,
            thread: Some(thread),
            idle: Vec::new(),
            pes: total,
            connections: count,
            generation,
        })
    }

    /// PEs registered.
    pub fn pes(&self) -> usize {
        self.pes
    }

    /// Associations the PEs are registered over.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Keep-alives the background thread answered so far.
    pub fn keep_alives(&self) -> u64 {
        self.keep_alives.load(Ordering::Relaxed)
    }

    /// The `keepalive` scenario's measurement: stops the background thread and answers the
    /// keep-alives on this thread for `spec.warmup` plus `spec.duration`. In the measured window
    /// a keep-alive counts as a reply and its ack as an op, whose latency runs from the read that
    /// brought the keep-alive to the write that sent the ack out. `at_window` is called when the
    /// window opens and when it closes.
    pub fn measure_keep_alives(&mut self, spec: &LoadSpec, mut at_window: impl FnMut()) -> Outcome {
        let mut conns = self.halt();
        let mut stats = Stats::new();
        let start = Instant::now();
        let measure = start + spec.warmup;
        let end = measure + spec.duration;
        let series = Series::new(measure, Some(spec.duration));
        let mut seconds = series.recorders(1).pop().expect("one recorder");
        let mut window_open = false;
        let mut tick = start + Duration::from_secs(1);
        let (mut second, mut this_second) = (1, 0u64);
        loop {
            let now = Instant::now();
            if !window_open && now >= measure {
                at_window();
                window_open = true;
            }
            if now >= end {
                break;
            }
            seconds.advance(now);
            if spec.progress && now >= tick {
                let phase = if tick <= measure {
                    "warm-up"
                } else {
                    "measure"
                };
                eprintln!(
                    "{} {second:>4}s {phase} {this_second:>12} keep-alives/s",
                    spec.label
                );
                (second, this_second) = (second + 1, 0);
                tick += Duration::from_secs(1);
            }
            let mut moved = false;
            for conn in conns.iter_mut().filter(|c| c.open) {
                match conn.read_frames(self.generation, |_| {}) {
                    Ok(read) => {
                        let at = Instant::now();
                        moved = true;
                        this_second += read.acks;
                        if (measure..end).contains(&at) && read.acks > 0 {
                            stats.replies += read.acks;
                            stats.reply_bytes += read.keep_alive_bytes;
                            stats.requests += read.acks;
                            stats.request_bytes += read.ack_bytes;
                            conn.waiting.push((at, read.acks));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("warning: {e}; its {} PEs are gone", conn.pes.len());
                        stats.errors += 1;
                        conn.open = false;
                    }
                }
                if conn.flush() {
                    let sent = Instant::now();
                    for (at, acks) in conn.waiting.drain(..) {
                        stats.ops += acks;
                        let nanos = sent.saturating_duration_since(at).as_nanos() as u64;
                        let _ = stats.histogram.record_n(nanos.max(1), acks);
                        seconds.record(sent, nanos, acks);
                    }
                }
            }
            if !moved {
                match spec.poll {
                    Poll::Spin => thread::yield_now(),
                    Poll::Block => thread::sleep(IDLE_SLEEP),
                }
            }
        }
        at_window();
        for conn in &mut conns {
            conn.waiting.clear();
        }
        self.idle = conns;
        drop(seconds);
        Outcome {
            stats,
            elapsed: spec.duration,
            timeline: series.finish(spec.duration),
        }
    }

    /// Stops answering keep-alives and deregisters every PE. Best effort: failures are ignored,
    /// as a registrar drops the PEs with their associations anyway. Returns what the fleet sent
    /// and was answered over its whole life.
    pub fn close(mut self) -> Totals {
        let mut conns = self.halt();
        let generation = self.generation;
        thread::scope(|scope| {
            for conn in conns.iter_mut().filter(|c| c.open) {
                scope.spawn(move || {
                    let mut table = Table::default();
                    for pe in &conn.pes {
                        workload::push_deregistration(&mut table, pe, generation)?;
                    }
                    conn.stream.set_nonblocking(false)?;
                    conn.exchange(&table, generation).map(drop)
                });
            }
        });
        let mut totals = Totals::default();
        for conn in &conns {
            totals.add(&conn.totals);
        }
        totals
    }

    fn halt(&mut self) -> Vec<SetupConn> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(conns)) => conns,
            Some(Err(_)) => Vec::new(),
            None => std::mem::take(&mut self.idle),
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The keep-alive thread: polls every setup connection, answers keep-alives, until `stop`.
fn keep_alive(
    mut conns: Vec<SetupConn>,
    generation: Generation,
    stop: &AtomicBool,
    count: &AtomicU64,
) -> Vec<SetupConn> {
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        for conn in conns.iter_mut().filter(|c| c.open) {
            match conn.read_frames(generation, |_| {}) {
                Ok(read) => {
                    count.fetch_add(read.acks, Ordering::Relaxed);
                }
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("warning: {e}; its {} PEs are gone", conn.pes.len());
                    conn.open = false;
                }
            }
            conn.flush();
        }
        thread::sleep(POLL.saturating_sub(started.elapsed()));
    }
    conns
}
