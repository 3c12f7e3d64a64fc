//! Criterion benchmarks of the handlespace on one core, with the system allocator: handle
//! resolution over 100k pools (cold) and 1k pools (hot), a plain `std::collections::HashMap`
//! baseline doing the same lookups and touches in the same run, and registrations (new PEs,
//! re-registrations). The benchmarks themselves are in `suite/mod.rs`.
//!
//! Run with `cargo bench -p rserpool-handlespace --bench handlespace`. Under `cargo test
//! --benches` (no `--bench` argument) the workloads shrink so that the test run stays fast.

mod common;
mod suite;

use criterion::{Criterion, criterion_group, criterion_main};

fn resolve(c: &mut Criterion) {
    suite::resolve(c, "");
}

fn register(c: &mut Criterion) {
    suite::register(c, "");
}

fn pool_size(c: &mut Criterion) {
    suite::pool_size(c, "");
}

criterion_group!(benches, resolve, register, pool_size);
criterion_main!(benches);
