//! Handle resolution throughput while a writer changes the handlespace.
//!
//! 100k pools x 10 PEs (Round Robin, SCTP with one IPv4 address), 2 shards, aged (every PE
//! re-registered once after the build, so entries are scattered as in a running registrar;
//! ratios are against the first "alone" run with the same reader count). Reader threads
//! resolve 3 items over uniformly drawn handles (pre-drawn per reader from `Rng::seed(i)`, which
//! then also drives selection) and touch the selected PEs like an encoder. The writer thread owns
//! the handlespace and does, per 10 registrations, 9 re-registrations of random existing PEs
//! (readers' pools) and 1 registration of a new PE creating a pool in a ring of 10k extra pools;
//! once the ring wrapped, the ring pool's previous PE is deregistered first (removing the pool),
//! so the handlespace stays the same size. The writer builds each registration as the registrar
//! would (one allocation for the address list), and runs either paced at 100k registrations/s
//! or as fast as it can.
//!
//! `cargo bench -p rserpool-handlespace --bench concurrent`: 5 s per scenario. Without `--bench`
//! (`cargo test --benches`): 1 s per scenario and 2k pools.

mod common;

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rserpool_handlespace::{Handlespace, HandlespaceReader, PeId, Rng};
use rserpool_protocol::Policy;

use common::{
    HOME, Handle, PolicyKind, age_handlespace, build_handlespace, is_cargo_bench, lookup_sequence,
    pe_id, random_handles, registration, touch,
};

const PES_PER_POOL: usize = 10;
const ITEMS: usize = 3;
const SHARDS: usize = 2;
/// Pools in the writer's ring of pools it creates and removes.
const RING: usize = 10_000;
/// Paced writer rate (registrations per second).
const PACED_RATE: u64 = 100_000;
/// Registrations between two pacing checks.
const WRITER_BATCH: u64 = 50;
/// Resolutions between two checks of the stop flag.
const READER_BATCH: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum WriterMode {
    Off,
    Paced(u64),
    FlatOut,
}

struct Scenario {
    name: &'static str,
    readers: usize,
    writer: WriterMode,
}

#[derive(Default)]
struct Outcome {
    /// Per reader: (resolutions, elapsed).
    readers: Vec<(u64, Duration)>,
    /// Writer: (registrations, deregistrations, elapsed).
    writer: Option<(u64, u64, Duration)>,
}

impl Outcome {
    fn reader_rates(&self) -> Vec<f64> {
        self.readers
            .iter()
            .map(|&(n, d)| n as f64 / d.as_secs_f64())
            .collect()
    }

    fn reader_total(&self) -> f64 {
        self.reader_rates().iter().sum()
    }
}

/// One reader: resolves until `stop`, returns (resolutions, elapsed).
fn read_loop(
    reader: &HandlespaceReader,
    seq: &[Handle],
    rng: &mut Rng,
    barrier: &Barrier,
    stop: &AtomicBool,
) -> (u64, Duration) {
    let mut out = [0u32; ITEMS];
    let mut acc = 0u64;
    let mut ops = 0u64;
    let mut k = 0usize;
    barrier.wait();
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..READER_BATCH {
            let h = &seq[k];
            k += 1;
            if k == seq.len() {
                k = 0;
            }
            let touched = reader.resolve(h, rng, &mut out, touch).expect("known pool");
            acc = acc.wrapping_add(touched);
        }
        ops += READER_BATCH as u64;
    }
    let elapsed = start.elapsed();
    black_box(acc);
    (ops, elapsed)
}

/// The writer's state that persists across scenarios.
struct WriterState {
    rng: Rng,
    /// Ring registrations so far (the next ring slot is `ring_next % RING`).
    ring_next: u64,
}

fn ring_handle(slot: usize) -> Handle {
    let mut h = [0xeeu8; 32];
    h[..8].copy_from_slice(&(slot as u64).to_le_bytes());
    h
}

fn ring_pe(round: u64) -> PeId {
    PeId((1 << 40) + round)
}

/// The writer: registers until `stop`, paced if asked; returns (registrations,
/// deregistrations, elapsed).
fn write_loop(
    hs: &mut Handlespace,
    handles: &[Handle],
    state: &mut WriterState,
    mode: WriterMode,
    barrier: &Barrier,
    stop: &AtomicBool,
) -> (u64, u64, Duration) {
    let mut regs = 0u64;
    let mut deregs = 0u64;
    let clock = Instant::now();
    barrier.wait();
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..WRITER_BATCH {
            let now = clock.elapsed().as_millis() as u64;
            if regs % 10 == 9 {
                let round = state.ring_next;
                let slot = (round % RING as u64) as usize;
                let h = ring_handle(slot);
                if round >= RING as u64 {
                    hs.deregister(&h, ring_pe(round - RING as u64), None)
                        .expect("deregistration")
                        .expect("ring PE present");
                    deregs += 1;
                }
                hs.register(
                    &h,
                    registration(ring_pe(round), Policy::RoundRobin, false),
                    HOME,
                    None,
                    now,
                )
                .expect("registration");
                state.ring_next += 1;
            } else {
                let p = state.rng.below(handles.len() as u64) as usize;
                let j = state.rng.below(PES_PER_POOL as u64) as usize;
                let id = pe_id(p, PES_PER_POOL, j);
                hs.register(
                    &handles[p],
                    registration(id, Policy::RoundRobin, false),
                    HOME,
                    None,
                    now,
                )
                .expect("re-registration");
            }
            regs += 1;
        }
        if let WriterMode::Paced(rate) = mode {
            let due = Duration::from_secs_f64(regs as f64 / rate as f64);
            let elapsed = start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
    (regs, deregs, start.elapsed())
}

fn run(
    scenario: &Scenario,
    hs: &mut Handlespace,
    handles: &[Handle],
    sequences: &[Vec<Handle>],
    reader_rngs: &mut [Rng],
    writer_state: &mut WriterState,
    duration: Duration,
) -> Outcome {
    let reader = hs.reader().clone();
    let stop = AtomicBool::new(false);
    let with_writer = scenario.writer != WriterMode::Off;
    let barrier = Barrier::new(scenario.readers + usize::from(with_writer) + 1);
    std::thread::scope(|s| {
        let readers: Vec<_> = sequences
            .iter()
            .zip(reader_rngs.iter_mut())
            .take(scenario.readers)
            .map(|(seq, rng)| {
                let reader = &reader;
                let (barrier, stop) = (&barrier, &stop);
                s.spawn(move || read_loop(reader, seq, rng, barrier, stop))
            })
            .collect();
        let writer = with_writer.then(|| {
            let (barrier, stop) = (&barrier, &stop);
            let mode = scenario.writer;
            s.spawn(move || write_loop(hs, handles, writer_state, mode, barrier, stop))
        });
        barrier.wait();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        Outcome {
            readers: readers
                .into_iter()
                .map(|t| t.join().expect("reader"))
                .collect(),
            writer: writer.map(|t| t.join().expect("writer")),
        }
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let bench = is_cargo_bench();
    let (pools, duration, seq_len) = if bench {
        (100_000, Duration::from_secs(5), 1 << 20)
    } else {
        (2_000, Duration::from_secs(1), 1 << 12)
    };
    let handles = random_handles(pools, &mut Rng::seed(42));
    let mut hs = build_handlespace(
        SHARDS,
        &handles,
        PES_PER_POOL,
        PolicyKind::RoundRobin,
        false,
    );
    // Steady state of a running registrar: every PE re-registered once, so that entries are
    // scattered over the heap as after hours of periodic re-registrations (a fresh build has
    // each pool's entries side by side, which the writer scenarios would then destroy).
    age_handlespace(
        &mut hs,
        &handles,
        PES_PER_POOL,
        PolicyKind::RoundRobin,
        false,
    );
    // Each reader owns Rng::seed(i): it draws the reader's lookup sequence and then drives its
    // selections.
    let mut reader_rngs: Vec<Rng> = (0..2).map(Rng::seed).collect();
    let sequences: Vec<Vec<Handle>> = reader_rngs
        .iter_mut()
        .map(|rng| lookup_sequence(&handles, seq_len, rng))
        .collect();
    let mut writer_state = WriterState {
        rng: Rng::seed(1000),
        ring_next: 0,
    };
    let scenarios = [
        Scenario {
            name: "2 readers alone",
            readers: 2,
            writer: WriterMode::Off,
        },
        Scenario {
            name: "2 readers + writer paced 100k/s",
            readers: 2,
            writer: WriterMode::Paced(PACED_RATE),
        },
        Scenario {
            name: "2 readers + writer flat out",
            readers: 2,
            writer: WriterMode::FlatOut,
        },
        Scenario {
            name: "1 reader alone",
            readers: 1,
            writer: WriterMode::Off,
        },
        Scenario {
            name: "1 reader + writer paced 100k/s",
            readers: 1,
            writer: WriterMode::Paced(PACED_RATE),
        },
        Scenario {
            name: "1 reader + writer flat out",
            readers: 1,
            writer: WriterMode::FlatOut,
        },
        Scenario {
            name: "writer alone, flat out",
            readers: 0,
            writer: WriterMode::FlatOut,
        },
        Scenario {
            name: "2 readers alone again (drift)",
            readers: 2,
            writer: WriterMode::Off,
        },
    ];
    println!(
        "concurrent resolution: {pools} pools x {PES_PER_POOL} PEs, {SHARDS} shards, \
         {ITEMS} items, {:.0} s per scenario, loadavg before {}",
        duration.as_secs_f64(),
        loadavg()
    );
    println!(
        "{:<34} | {:>12} | {:>17} | {:>8} | {:>14}",
        "scenario", "reads M/s", "per reader M/s", "vs alone", "writer reg/s"
    );
    let mut alone = [0.0f64; 3];
    for sc in &scenarios {
        let o = run(
            sc,
            &mut hs,
            &handles,
            &sequences,
            &mut reader_rngs,
            &mut writer_state,
            duration,
        );
        let total = o.reader_total();
        if sc.writer == WriterMode::Off && alone[sc.readers] == 0.0 {
            alone[sc.readers] = total;
        }
        let per = o
            .reader_rates()
            .iter()
            .map(|r| format!("{:.2}", r / 1e6))
            .collect::<Vec<_>>()
            .join(" / ");
        let ratio = if sc.readers > 0 && alone[sc.readers] > 0.0 {
            format!("{:.2}", total / alone[sc.readers])
        } else {
            "-".to_owned()
        };
        let writer = o.writer.map_or("-".to_owned(), |(r, _, d)| {
            format!("{:.0}", r as f64 / d.as_secs_f64())
        });
        let total_text = if sc.readers > 0 {
            format!("{:.2}", total / 1e6)
        } else {
            "-".to_owned()
        };
        println!(
            "{:<34} | {:>12} | {:>17} | {:>8} | {:>14}",
            sc.name,
            total_text,
            if per.is_empty() { "-".to_owned() } else { per },
            ratio,
            writer
        );
    }
    assert_eq!(
        hs.pe_count(),
        pools * PES_PER_POOL + RING.min(writer_state.ring_next as usize)
    );
    println!("loadavg after {}", loadavg());
}
