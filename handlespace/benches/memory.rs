//! Memory per PE of a filled handlespace, measured as heap bytes allocated (a counting global
//! allocator, `cap`), not RSS: the bytes the allocator was asked for after building minus before,
//! divided by the number of PEs. Malloc's own per-block overhead is not included (RSS growth is
//! printed beside it for that).
//!
//! Layouts: 100k pools x 10 PEs and 1k pools x 1k PEs (1 M PEs each), 32-byte handles, one IPv4
//! address per PE, plus an ASAP transport with one address as PEs learnt via ENRP carry it.
//! Each layout is built in a child process of this binary, so that the reported peak belongs to
//! that layout alone.
//!
//! `cargo bench -p rserpool-handlespace --bench memory` measures 1 M PEs per layout; without
//! `--bench` (`cargo test --benches`) it measures 10k PEs per layout.

mod common;

use std::alloc::System;
use std::process::Command;
use std::time::Instant;

use cap::Cap;
use rserpool_handlespace::{
    Handlespace, OwnedTransport, PeRegistration, PoolElementEntry, PoolSnapshot, Rng, ShardView,
};
use rserpool_protocol::Policy;

use common::{HOME, bench_limits, is_cargo_bench, pe_id, random_handles, registration};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Budget from the issue: bytes per PE at 1 M PEs.
const BUDGET: f64 = 256.0;

/// Resident set size in bytes (Linux `/proc/self/statm`), or 0 if unavailable.
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// One layout to measure.
#[derive(Clone, Copy)]
struct Layout {
    pools: usize,
    pes_per_pool: usize,
    /// Store an ASAP transport (one address) with each PE, as ENRP-learnt PEs have.
    asap_transport: bool,
    /// Finite registration life (arms one timer per PE) or infinite (-1, no timer).
    finite_life: bool,
    /// Printed after the result.
    note: &'static str,
}

impl Layout {
    fn args(&self) -> [String; 4] {
        [
            self.pools.to_string(),
            self.pes_per_pool.to_string(),
            u8::from(self.asap_transport).to_string(),
            u8::from(self.finite_life).to_string(),
        ]
    }

    fn from_args(args: &[String]) -> Self {
        let n = |i: usize| args[i].parse::<usize>().expect("layout argument");
        Self {
            pools: n(0),
            pes_per_pool: n(1),
            asap_transport: n(2) != 0,
            finite_life: n(3) != 0,
            note: "",
        }
    }
}

/// Builds one layout and prints one result line (child process).
fn measure(layout: Layout) {
    let Layout {
        pools,
        pes_per_pool,
        asap_transport,
        finite_life,
        ..
    } = layout;
    let handles = random_handles(pools, &mut Rng::seed(1));
    let pes = pools * pes_per_pool;
    let before = ALLOCATOR.allocated();
    let rss_before = rss();
    let start = Instant::now();
    let mut hs = Handlespace::new(1, bench_limits());
    for (p, h) in handles.iter().enumerate() {
        for j in 0..pes_per_pool {
            let mut reg = registration(
                pe_id(p, pes_per_pool, j),
                Policy::RoundRobin,
                asap_transport,
            );
            if !finite_life {
                reg.registration_life = -1;
            }
            hs.register(h, reg, HOME, None, 0)
                .expect("valid registration");
        }
    }
    let build = start.elapsed();
    let after = ALLOCATOR.allocated();
    let rss_after = rss();
    let peak = ALLOCATOR.max_allocated();
    assert_eq!(hs.pe_count(), pes);
    let per_pe = (after - before) as f64 / pes as f64;
    println!(
        "{:>6} pools x {:>4} PEs = {:>7} PEs, ASAP transport {:<3}, life {:<8} | {:>6.1} B/PE \
         allocated ({}) | peak {:>6.1} B/PE | RSS growth {:>6.1} B/PE | build {:>5.2} s \
         ({:.2} M reg/s)",
        pools,
        pes_per_pool,
        pes,
        if asap_transport { "yes" } else { "no" },
        if finite_life { "30 s" } else { "infinite" },
        per_pe,
        if per_pe <= BUDGET {
            "within 256"
        } else {
            "OVER 256"
        },
        (peak - before) as f64 / pes as f64,
        rss_after.saturating_sub(rss_before) as f64 / pes as f64,
        build.as_secs_f64(),
        pes as f64 / build.as_secs_f64() / 1e6,
    );
    std::hint::black_box(&hs);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--layout") {
        measure(Layout::from_args(&args[i + 1..]));
        return;
    }
    let bench = is_cargo_bench();
    let total = if bench { 1_000_000 } else { 10_000 };
    println!(
        "handlespace memory ({} mode): heap bytes allocated per PE after building ({} PEs per \
         layout, 1 shard, Round Robin, SCTP with 1 IPv4 address, 32-byte handles)",
        if bench { "cargo bench" } else { "test" },
        total
    );
    println!(
        "type sizes: PoolElementEntry {} B (inline in the pool tree's leaves), PeRegistration {} B, \
         OwnedTransport {} B, IpAddr {} B, Policy {} B, PoolSnapshot {} B, ShardView {} B",
        size_of::<PoolElementEntry>(),
        size_of::<PeRegistration>(),
        size_of::<OwnedTransport>(),
        size_of::<std::net::IpAddr>(),
        size_of::<Policy>(),
        size_of::<PoolSnapshot>(),
        size_of::<ShardView>(),
    );
    let layout = |pes_per_pool: usize, asap_transport, finite_life, note| Layout {
        pools: total / pes_per_pool,
        pes_per_pool,
        asap_transport,
        finite_life,
        note,
    };
    let layouts = [
        layout(10, true, true, "<- budget layout (ENRP-learnt PEs)"),
        layout(1_000, true, true, "<- budget layout, big pools"),
        layout(10, false, true, "   (for the breakdown: no ASAP transport)"),
        layout(10, true, false, "   (for the breakdown: no timer)"),
    ];
    let exe = std::env::current_exe().expect("own path");
    for l in layouts {
        let out = Command::new(&exe)
            .arg("--layout")
            .args(l.args())
            .output()
            .expect("run layout");
        assert!(
            out.status.success(),
            "layout {} x {} failed: {}",
            l.pools,
            l.pes_per_pool,
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "{} {}",
            String::from_utf8_lossy(&out.stdout).trim_end(),
            l.note
        );
    }
}
