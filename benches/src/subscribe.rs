//! `rserpool-bench subscribe`: the push latency of pool subscriptions (RFC 5352 §2.2.5-6, the S
//! and A bits). `--pools` pools of one Least Used PE each; `--subscribers` subscriptions dealt
//! out over `--connections` associations (each association subscribes to distinct pools by
//! sending HANDLE_RESOLUTION with the S bit); then a changer association re-registers the pools'
//! PEs, one pool after the other, at `--rate` changes per second, each re-registration carrying
//! a load value one higher than the last over all pools. A push names the change it reflects by
//! that load value, so its latency runs from the send of that change's re-registration to the
//! push's arrival. Changes the registrar coalesced into a later push (one push per subscriber per
//! `subscriptions.min_push_interval_ms`) are counted, not timed. After the changes stop, every
//! subscription must have received the last change of its pool (`stale` counts those that did
//! not: a failure).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rserpool_protocol::asap::{AsapMessage, Resolution};
use rserpool_protocol::framing::{Frame, next_frame};
use rserpool_protocol::{Generation, Policy, PoolHandle};

use crate::cli::{Cli, SUBSCRIBE_RATE};
use crate::error::{Context, Error, Result};
use crate::load::latency_histogram;
use crate::net::{self, Endpoint};
use crate::report::SubscribeSummary;
use crate::workload::{self, MAX_FRAME, PeIds, PeRecord, Table};

/// How long a subscriber's read waits before it looks at the stop flag.
const READ_TIMEOUT: Duration = Duration::from_millis(20);
/// How long the subscribers wait for the last pushes after the changes stop.
const SETTLE: Duration = Duration::from_millis(500);
/// How long the setup (registrations, subscription answers) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The port the PEs advertise (nothing listens there).
const PE_PORT: u16 = 9;

/// Runs the scenario against `endpoint`.
pub fn run(cli: &Cli, endpoint: &Endpoint) -> Result<SubscribeSummary> {
    let pools = cli.pools;
    let connections = cli.connections;
    let subscribers = cli.subscribers;
    let rate = cli.rate.unwrap_or(SUBSCRIBE_RATE);
    if endpoint.tls {
        return Err(Error::new(
            "subscribe runs over tcp:// or mptcp://, not TLS",
        ));
    }
    net::raise_open_files(connections + 1)?;
    let generation = endpoint.generation;
    let handles: Vec<Vec<u8>> = (0..pools).map(workload::pool_handle).collect();
    let mut ids = PeIds::new();
    let pes: Vec<PeRecord> = handles
        .iter()
        .map(|pool| PeRecord {
            pool: pool.clone(),
            id: ids.fresh(),
            policy: Policy::LeastUsed { load: 0 },
        })
        .collect();

    let mut changer = Changer::connect(endpoint, pes, generation)?;
    changer.register_all()?;

    // Subscriptions: association c subscribes to pools (c * per + j) mod pools.
    let per = subscribers.div_ceil(connections);
    let mut subscribed = Vec::with_capacity(connections);
    let mut left = subscribers;
    for c in 0..connections {
        let n = per.min(left);
        left -= n;
        let pools_of: Vec<usize> = (0..n).map(|j| (c * per + j) % pools).collect();
        subscribed.push(Subscriber::connect(
            endpoint, &handles, pools_of, generation,
        )?);
    }
    let mut accepted = 0;
    let mut refused = 0;
    for s in &mut subscribed {
        let (a, r) = s.await_answers(&handles)?;
        accepted += a;
        refused += r;
    }

    // Send times of the changes by load value (1-based), in nanoseconds from `start`.
    let warmup = Duration::from_secs_f64(cli.warmup);
    let duration = Duration::from_secs_f64(cli.duration);
    let capacity = ((warmup + duration).as_secs_f64() * rate).ceil() as usize + 1;
    let sent: Arc<[AtomicU64]> = (0..=capacity).map(|_| AtomicU64::new(0)).collect();
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop = Arc::new(AtomicBool::new(false));
    // Associations dealt out over the client threads, each polling its share without sleeping.
    let mut shares: Vec<Vec<Subscriber>> = (0..cli.threads).map(|_| Vec::new()).collect();
    for (i, s) in subscribed.into_iter().enumerate() {
        shares[i % cli.threads].push(s);
    }
    let threads: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let sent = Arc::clone(&sent);
            let stop = Arc::clone(&stop);
            let index = handles.clone();
            thread::spawn(move || receive(share, &index, &sent, start, measure_from, &stop))
        })
        .collect();
    let changes = changer.change(rate, capacity - 1, &sent, start, warmup + duration)?;
    thread::sleep(SETTLE);
    stop.store(true, Ordering::Relaxed);
    // The last load value each pool got.
    let mut last = vec![0u64; pools];
    for load in 1..=changes as u64 {
        last[(load as usize - 1) % pools] = load;
    }
    let mut latency = latency_histogram();
    let mut summary = SubscribeSummary {
        pools,
        connections,
        subscribers,
        accepted,
        refused,
        rate,
        changes,
        duration_s: duration.as_secs_f64(),
        ..SubscribeSummary::default()
    };
    for t in threads {
        let seen = t
            .join()
            .map_err(|_| Error::new("a subscriber thread panicked"))??;
        latency
            .add(&seen.latency)
            .map_err(|e| Error::new(format!("cannot merge latencies: {e}")))?;
        summary.pushes += seen.pushes;
        summary.measured_pushes += seen.measured_pushes;
        summary.stale += seen
            .last
            .iter()
            .filter(|(pool, load)| *load < last[*pool])
            .count();
    }
    changer.close();
    summary.fill_latency(&latency);
    Ok(summary)
}

/// The association whose PEs change: registers one PE per pool, then re-registers them at the
/// rate asked, answering keep-alives meanwhile.
struct Changer {
    stream: TcpStream,
    pes: Vec<PeRecord>,
    generation: Generation,
    input: Vec<u8>,
    filled: usize,
    acks: Vec<u8>,
}

impl Changer {
    fn connect(endpoint: &Endpoint, pes: Vec<PeRecord>, generation: Generation) -> Result<Self> {
        let stream = net::connect(endpoint).context(|| format!("cannot connect to {endpoint}"))?;
        Ok(Self {
            stream,
            pes,
            generation,
            input: vec![0; 4 * MAX_FRAME],
            filled: 0,
            acks: Vec::new(),
        })
    }

    /// Registers every PE with load 0 and waits for every answer.
    fn register_all(&mut self) -> Result<()> {
        let mut table = Table::default();
        for pe in &self.pes {
            workload::push_registration(
                &mut table,
                pe,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                PE_PORT,
                self.generation,
            )?;
        }
        self.stream
            .write_all(table.all())
            .context(|| "cannot send the registrations".to_owned())?;
        self.stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .context(|| "cannot set a read timeout".to_owned())?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        let mut answered = 0;
        while answered < self.pes.len() {
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "{answered} of {} registrations answered in {SETUP_TIMEOUT:?}",
                    self.pes.len()
                )));
            }
            for frame in self.read()? {
                if frame.first()
                    == Some(&rserpool_protocol::asap::message_type::REGISTRATION_RESPONSE)
                {
                    let cause = workload::rejection_cause(&frame, self.generation);
                    if cause != 0 {
                        return Err(Error::new(format!(
                            "the registrar refused a PE: {}",
                            workload::cause_name(cause)
                        )));
                    }
                    answered += 1;
                }
            }
        }
        Ok(())
    }

    /// Re-registers the PEs in turn at `rate` per second for `length`, at most `most` changes,
    /// each with the next load value, writing the send time of load value `n` to `sent[n]`.
    /// Returns the number of changes sent.
    fn change(
        &mut self,
        rate: f64,
        most: usize,
        sent: &[AtomicU64],
        start: Instant,
        length: Duration,
    ) -> Result<usize> {
        let mut done = 0usize;
        let mut table = Table::default();
        loop {
            let elapsed = start.elapsed();
            if elapsed >= length || done >= most {
                return Ok(done);
            }
            let due = ((elapsed.as_secs_f64() * rate) as usize + 1).min(most);
            table.clear();
            for n in done..due {
                let load = n as u64 + 1;
                let pe = &self.pes[n % self.pes.len()];
                let record = PeRecord {
                    policy: Policy::LeastUsed { load: load as u32 },
                    ..pe.clone()
                };
                workload::push_registration(
                    &mut table,
                    &record,
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    PE_PORT,
                    self.generation,
                )?;
            }
            if due > done {
                let at = start.elapsed().as_nanos() as u64;
                for slot in &sent[done + 1..=due] {
                    slot.store(at.max(1), Ordering::Release);
                }
                self.stream
                    .write_all(table.all())
                    .context(|| "cannot send re-registrations".to_owned())?;
                done = due;
            }
            // Answers and keep-alives; the read waits at most until the next change is due.
            self.stream
                .set_read_timeout(Some(
                    Duration::from_secs_f64(1.0 / rate).max(Duration::from_micros(100)),
                ))
                .context(|| "cannot set a read timeout".to_owned())?;
            for frame in self.read()? {
                workload::answer_keep_alive(&frame, &self.pes, self.generation, &mut self.acks);
            }
            if !self.acks.is_empty() {
                self.stream
                    .write_all(&self.acks)
                    .context(|| "cannot answer keep-alives".to_owned())?;
                self.acks.clear();
            }
        }
    }

    /// The whole frames one read brought (none on a timeout).
    fn read(&mut self) -> Result<Vec<Vec<u8>>> {
        read_frames(&mut self.stream, &mut self.input, &mut self.filled)
    }

    /// Deregisters the PEs (no answer awaited) and closes.
    fn close(mut self) {
        let mut table = Table::default();
        for pe in &self.pes {
            if workload::push_deregistration(&mut table, pe, self.generation).is_err() {
                return;
            }
        }
        let _ = self.stream.write_all(table.all());
    }
}

/// What one subscriber association saw.
struct Seen {
    latency: Histogram<u64>,
    pushes: u64,
    measured_pushes: u64,
    /// The last load value received per subscribed pool (pool index, load).
    last: Vec<(usize, u64)>,
}

/// One subscriber association and the pools it subscribed to.
struct Subscriber {
    stream: TcpStream,
    pools: Vec<usize>,
    generation: Generation,
    input: Vec<u8>,
    filled: usize,
}

impl Subscriber {
    /// Connects and sends one HANDLE_RESOLUTION with the S bit per pool.
    fn connect(
        endpoint: &Endpoint,
        handles: &[Vec<u8>],
        pools: Vec<usize>,
        generation: Generation,
    ) -> Result<Self> {
        let mut stream =
            net::connect(endpoint).context(|| format!("cannot connect to {endpoint}"))?;
        let mut table = Table::default();
        for &p in &pools {
            table.push(
                &AsapMessage::HandleResolution {
                    subscribe: true,
                    pool_handle: PoolHandle(&handles[p]),
                    items: None,
                },
                generation,
            )?;
        }
        stream
            .write_all(table.all())
            .context(|| "cannot send the subscriptions".to_owned())?;
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .context(|| "cannot set a read timeout".to_owned())?;
        Ok(Self {
            stream,
            pools,
            generation,
            input: vec![0; 4 * MAX_FRAME],
            filled: 0,
        })
    }

    /// Waits for the answer to each subscription: (accepted, refused).
    fn await_answers(&mut self, handles: &[Vec<u8>]) -> Result<(usize, usize)> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        let (mut accepted, mut refused) = (0, 0);
        while accepted + refused < self.pools.len() {
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "{} of {} subscriptions answered in {SETUP_TIMEOUT:?}",
                    accepted + refused,
                    self.pools.len()
                )));
            }
            for frame in read_frames(&mut self.stream, &mut self.input, &mut self.filled)? {
                match push_of(&frame, self.generation, handles) {
                    Some((_, _, true)) => accepted += 1,
                    Some((_, _, false)) => refused += 1,
                    None => {}
                }
            }
        }
        Ok((accepted, refused))
    }
}

/// Reads the pushes of `subscribers` until `stop`, polling their non-blocking sockets in turn
/// and yielding the core when a pass read nothing; times each push against the send of the
/// newest change it reflects. Returns what all of them saw.
fn receive(
    mut subscribers: Vec<Subscriber>,
    handles: &[Vec<u8>],
    sent: &[AtomicU64],
    start: Instant,
    measure_from: Instant,
    stop: &AtomicBool,
) -> Result<Seen> {
    let mut seen = Seen {
        latency: latency_histogram(),
        pushes: 0,
        measured_pushes: 0,
        last: Vec::new(),
    };
    // The last load value per subscription, by subscriber and pool.
    let mut last: Vec<std::collections::HashMap<usize, u64>> = subscribers
        .iter()
        .map(|s| s.pools.iter().map(|&p| (p, 0)).collect())
        .collect();
    for s in &subscribers {
        s.stream
            .set_nonblocking(true)
            .map_err(|e| Error::new(format!("cannot make a socket non-blocking: {e}")))?;
    }
    while !stop.load(Ordering::Relaxed) {
        let mut moved = false;
        for (s, last) in subscribers.iter_mut().zip(&mut last) {
            for frame in read_frames(&mut s.stream, &mut s.input, &mut s.filled)? {
                moved = true;
                let Some((pool, load, true)) = push_of(&frame, s.generation, handles) else {
                    continue;
                };
                let now = Instant::now();
                seen.pushes += 1;
                let Some(newest) = last.get_mut(&pool) else {
                    continue;
                };
                if load <= *newest {
                    continue;
                }
                *newest = load;
                let at = sent
                    .get(load as usize)
                    .map_or(0, |s| s.load(Ordering::Acquire));
                if at == 0 || now < measure_from {
                    continue;
                }
                let sent_at = start + Duration::from_nanos(at);
                let nanos = now.saturating_duration_since(sent_at).as_nanos() as u64;
                seen.latency.saturating_record(nanos.max(1));
                seen.measured_pushes += 1;
            }
        }
        if !moved {
            thread::yield_now();
        }
    }
    seen.last = last.into_iter().flatten().collect();
    Ok(seen)
}

/// A HANDLE_RESOLUTION_RESPONSE's pool index, the load value of its first PE (0 for an error
/// answer) and its A bit; `None` for anything else.
fn push_of(
    frame: &[u8],
    generation: Generation,
    handles: &[Vec<u8>],
) -> Option<(usize, u64, bool)> {
    let decoded = AsapMessage::decode(frame, generation).ok()?;
    let AsapMessage::HandleResolutionResponse {
        accepted,
        pool_handle,
        resolution,
    } = decoded.message
    else {
        return None;
    };
    let pool = pool_index(pool_handle.0, handles)?;
    let load = match resolution {
        Resolution::Found { pool_elements, .. } => pool_elements
            .iter()
            .map(|pe| match pe.policy {
                Policy::LeastUsed { load } => u64::from(load),
                _ => 0,
            })
            .max()
            .unwrap_or(0),
        Resolution::Failed(_) => 0,
    };
    Some((pool, load, accepted))
}

/// The index of `handle` among the bench's pool handles (`pool000042` is 42).
fn pool_index(handle: &[u8], handles: &[Vec<u8>]) -> Option<usize> {
    let digits = std::str::from_utf8(handle.strip_prefix(b"pool")?).ok()?;
    let i: usize = digits.parse().ok()?;
    (handles.get(i)?.as_slice() == handle).then_some(i)
}

/// Reads once into `input` (after `filled` bytes kept from before) and returns the whole frames;
/// a timeout gives none, a closed or broken stream an error.
fn read_frames(
    stream: &mut TcpStream,
    input: &mut [u8],
    filled: &mut usize,
) -> Result<Vec<Vec<u8>>> {
    let n = match stream.read(&mut input[*filled..]) {
        Ok(0) => return Err(Error::new("the registrar closed the association")),
        Ok(n) => n,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => 0,
        Err(e) if e.kind() == ErrorKind::Interrupted => 0,
        Err(e) => return Err(Error::new(format!("cannot read from the registrar: {e}"))),
    };
    *filled += n;
    let mut frames = Vec::new();
    let mut pos = 0;
    while let Ok(Frame::Complete { len }) = next_frame(&input[pos..*filled], MAX_FRAME) {
        frames.push(input[pos..pos + len].to_vec());
        pos += len;
    }
    if let Err(e) = next_frame(&input[pos..*filled], MAX_FRAME) {
        return Err(Error::new(format!(
            "the registrar's stream cannot be framed: {e}"
        )));
    }
    input.copy_within(pos..*filled, 0);
    *filled -= pos;
    Ok(frames)
}
