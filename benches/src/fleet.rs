//! The PEs the `resolve` scenario resolves: registered over a few setup connections before the
//! timed phase, kept alive by a background thread that answers the registrar's keep-alives for
//! the whole run, deregistered at the end.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rserpool_protocol::asap::message_type as mt;
use rserpool_protocol::framing::Frames;
use rserpool_protocol::{AsapMessage, Generation};

use crate::error::{Context, Error, Result};
use crate::net::{self, Endpoint};
use crate::workload::{self, MAX_FRAME, PeIds, PeRecord, Table};

/// Setup connections at most; PEs are dealt out over them.
const SETUP_CONNECTIONS: usize = 16;
/// Registrations sent before their answers are awaited.
const CHUNK: usize = 256;
/// How long setup waits for an answer.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the keep-alive thread polls its connections.
const POLL: Duration = Duration::from_millis(5);

/// One setup connection: an association carrying several PEs.
struct SetupConn {
    stream: TcpStream,
    pes: Vec<PeRecord>,
    inbuf: Vec<u8>,
    in_len: usize,
    out: Vec<u8>,
    open: bool,
}

impl SetupConn {
    /// Reads at least once (blocking, or not, as the socket is set) and hands every whole frame
    /// that is not a keep-alive to `on_frame`; keep-alives are answered into `out`. Returns the
    /// keep-alives answered.
    fn read_frames(
        &mut self,
        generation: Generation,
        mut on_frame: impl FnMut(&[u8]),
    ) -> io::Result<u64> {
        let n = self.stream.read(&mut self.inbuf[self.in_len..])?;
        if n == 0 {
            self.open = false;
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the registrar closed a setup connection",
            ));
        }
        self.in_len += n;
        let mut answered = 0;
        let mut frames = Frames::new(&self.inbuf[..self.in_len], MAX_FRAME);
        for frame in frames.by_ref() {
            if frame[0] == mt::ENDPOINT_KEEP_ALIVE {
                answered +=
                    workload::answer_keep_alive(frame, &self.pes, generation, &mut self.out) as u64;
            } else {
                on_frame(frame);
            }
        }
        if let Some(e) = frames.error() {
            self.open = false;
            return Err(io::Error::new(ErrorKind::InvalidData, e));
        }
        let consumed = frames.consumed();
        self.inbuf.copy_within(consumed..self.in_len, 0);
        self.in_len -= consumed;
        Ok(answered)
    }

    /// Sends `messages` in chunks and awaits one answer per message (blocking). Returns the
    /// answers that were rejections, as (PE, cause).
    fn exchange(&mut self, messages: &Table, generation: Generation) -> Result<Vec<String>> {
        let mut refused = Vec::new();
        for first in (0..messages.len()).step_by(CHUNK) {
            let last = (first + CHUNK).min(messages.len());
            for i in first..last {
                self.out.extend_from_slice(messages.get(i));
            }
            self.stream.write_all(&self.out)?;
            self.out.clear();
            let mut answered = first;
            while answered < last {
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
                if !self.out.is_empty() {
                    self.stream.write_all(&self.out)?;
                    self.out.clear();
                }
            }
        }
        Ok(refused)
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
    pes: usize,
    generation: Generation,
}

impl Fleet {
    /// Registers `per_pool` PEs in each of `pools` pools (named by [`workload::pool_handle`]) at
    /// `endpoint` and starts answering keep-alives. Fails if any registration is rejected.
    pub fn register(
        endpoint: &Endpoint,
        pools: usize,
        per_pool: usize,
        ids: &mut PeIds,
    ) -> Result<Self> {
        let total = pools * per_pool;
        let count = total.clamp(1, SETUP_CONNECTIONS);
        let mut conns = Vec::with_capacity(count);
        for _ in 0..count {
            let stream = net::connect(endpoint).context(|| format!("connect to {endpoint}"))?;
            stream.set_read_timeout(Some(SETUP_TIMEOUT))?;
            conns.push(SetupConn {
                stream,
                pes: Vec::new(),
                inbuf: vec![0; 4 * MAX_FRAME],
                in_len: 0,
                out: Vec::new(),
                open: true,
            });
        }
        for n in 0..total {
            conns[n % count].pes.push(PeRecord {
                pool: workload::pool_handle(n / per_pool),
                id: ids.fresh(),
            });
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
                            let port = workload::pe_port(i * SETUP_CONNECTIONS + c);
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
        for conn in &conns {
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
            pes: total,
            generation,
        })
    }

    /// PEs registered.
    pub fn pes(&self) -> usize {
        self.pes
    }

    /// Keep-alives answered so far.
    pub fn keep_alives(&self) -> u64 {
        self.keep_alives.load(Ordering::Relaxed)
    }

    /// Stops answering keep-alives and deregisters every PE. Best effort: failures are ignored,
    /// as a registrar drops the PEs with their associations anyway.
    pub fn close(mut self) {
        let conns = self.halt();
        let generation = self.generation;
        thread::scope(|scope| {
            for mut conn in conns.into_iter().filter(|c| c.open) {
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
    }

    fn halt(&mut self) -> Vec<SetupConn> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
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
                Ok(n) => {
                    count.fetch_add(n, Ordering::Relaxed);
                }
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("warning: {e}; its {} PEs are gone", conn.pes.len());
                    conn.open = false;
                }
            }
            if !conn.out.is_empty() {
                match conn.stream.write(&conn.out) {
                    Ok(n) => {
                        conn.out.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => {
                        eprintln!("warning: setup connection: {e}");
                        conn.open = false;
                    }
                }
            }
        }
        thread::sleep(POLL.saturating_sub(started.elapsed()));
    }
    conns
}
