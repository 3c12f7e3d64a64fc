//! `rserpool-sim` owns the deterministic simulation of an ENRP operating scope (design §5.3):
//! PRs ([`rserpool_registrar::core::in_memory::InMemoryPr`]), PEs and PUs (the sans-I/O cores of
//! `rserpool-endpoint`) in one process over a simulated network and clock, with faults drawn from
//! a seed (PR crashes with and without RST, restarts at once with the same or a new ID or
//! seconds later, a PR frozen and resumed (SIGSTOP/SIGCONT), partitions and heals, delay spikes,
//! a slow PR, duplicated ENRP announcements, reordering across associations, PEs leaving and
//! joining; in one seed in three the PRs find each other only by presence datagrams to a
//! multicast group, with up to 30 % of them lost; in one in two the forwards between a PR's 1-4
//! workers wait in asynchronous mailboxes as between the daemon's threads; associations never
//! lose messages, they break or stay half-open; some PUs subscribe to some pools, RFC 5352
//! §2.2.5-6, with pushes coalesced to 0-1 000 ms) and the scope's invariants ([`invariants`])
//! checked after every step (among them: a push only over an association that subscribed,
//! nothing sent to a closed association), at the deadline of each liveness bound a fault
//! starts, and at the end of every quiet phase (among them: each subscriber's latest pushed PEs
//! are what its PR answers).
//!
//! Everything random comes from the seed and every event runs in (time, sequence) order, so a
//! seed replays bit for bit; a failure names its seed and the command that replays it.

pub mod faults;
pub mod invariants;
mod net;
pub mod world;

use std::fmt;

use rserpool_handlespace::Millis;

pub use faults::{Fault, Scenario};
pub use world::{Summary, World};

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The seed that broke it.
    pub seed: u64,
    /// Simulated time of the step that broke it.
    pub at: Millis,
    /// The invariant's function name.
    pub invariant: &'static str,
    /// What is wrong.
    pub detail: String,
}

impl Failure {
    /// The one-line command that replays this failure.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run -p rserpool-sim --release -- --seed {}",
            self.seed
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} at {} ms: {} broken: {}",
            self.seed, self.at, self.invariant, self.detail
        )
    }
}

/// Runs the scenario of `seed` to its end or its first broken invariant.
pub fn run_seed(seed: u64) -> Result<Summary, Failure> {
    World::new(Scenario::draw(seed)).run()
}
