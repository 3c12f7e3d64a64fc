//! The benchmarks of `handlespace.rs` with mimalloc as the global allocator, as the registrar
//! binary runs (design.md §3); group names start with `mimalloc_`. Registration allocates (new
//! entries, snapshot rebuilds), resolution does not.
//!
//! Run with `cargo bench -p rserpool-handlespace --bench handlespace_mimalloc`.

mod common;
mod suite;

use criterion::{Criterion, criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn resolve(c: &mut Criterion) {
    suite::resolve(c, "mimalloc_");
}

fn register(c: &mut Criterion) {
    suite::register(c, "mimalloc_");
}

fn pool_size(c: &mut Criterion) {
    suite::pool_size(c, "mimalloc_");
}

criterion_group!(benches, resolve, register, pool_size);
criterion_main!(benches);
