//! Runs many seeds of the whole scenario (faults, quiet phases, every invariant). A failing seed
//! prints the one line that replays it.
//!
//! 4 × 200 = 800 seeds, the four tests in parallel, in the default (debug) test profile: about
//! 80 ms of CPU per seed. Measured: 64 s of CPU for the 800, 89 s wall on two cores shared with
//! other builds (load average 4.5), so about 32 s on two free cores. Run many more in release,
//! about 20 ms per seed: `cargo run -p rserpool-sim --release -- --seeds 0..10000`.

const SEEDS_PER_TEST: u64 = 200;

fn run(shard: u64) {
    let first = shard * SEEDS_PER_TEST;
    let mut failures = Vec::new();
    for seed in first..first + SEEDS_PER_TEST {
        if let Err(failure) = rserpool_sim::run_seed(seed) {
            eprintln!("{failure}");
            println!("{}", failure.replay_command());
            failures.push(seed);
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

#[test]
fn seeds_0() {
    run(0);
}

#[test]
fn seeds_1() {
    run(1);
}

#[test]
fn seeds_2() {
    run(2);
}

#[test]
fn seeds_3() {
    run(3);
}
