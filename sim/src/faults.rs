//! The scenario a seed draws: how many PRs (and workers each), PEs, pools and PUs, whether the
//! workers' mailboxes are asynchronous, which PUs subscribe to which pools and how often the PRs
//! push, and the timeline of faults. A run is a warm-up, then
//! cycles of a fault phase followed by a quiet phase that repairs every fault and ends with the
//! convergence checks. [`Scenario`]'s `Display` is the parameter block a failing seed prints.

use std::fmt;

use rserpool_handlespace::{Millis, Rng};

/// Quiet start: the scope forms and the PEs register.
pub const WARM_UP: Millis = 5_000;
/// Length of a fault phase.
pub const FAULT_PHASE: Millis = 25_000;
/// Length of a quiet phase: long enough for reconnections, dead-peer detection, takeovers,
/// start-up from a mentor, audits and the expiry of orphaned entries (a registration life).
pub const QUIET_PHASE: Millis = 15_000;
/// Fault and quiet phases per run.
pub const CYCLES: u64 = 2;

/// A fault, or a phase change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A PR process dies: its kernel aborts its associations at once (RST/ABORT), its state is
    /// gone.
    Crash(usize),
    /// A PR's host is gone (power loss, blackholed): its state is gone, and nothing tells the
    /// other ends of its associations; they stay half-open until their own timers give up, or
    /// until they send to the host once it is back up (its kernel answers with a RST).
    /// Connection attempts to the host time out.
    Vanish(usize),
    /// A crashed PR starts again with a fresh PR ID, an empty handlespace and its static peers.
    Restart(usize),
    /// A crashed PR starts again with the PR ID it had (a supervisor restarting it with the
    /// same configuration), an empty handlespace and its static peers.
    RestartSameId(usize),
    /// A PR stops processing (SIGSTOP): its associations stay open, what reaches it waits
    /// unread, its timers do not run, it sends nothing.
    Freeze(usize),
    /// A frozen PR goes on (SIGCONT): it reads what waited, in arrival order, then runs its
    /// timers, its clock jumped to now.
    Thaw(usize),
    /// The network splits: PRs on side `true` and side `false` (each side keeps one at least);
    /// endpoints are placed by `salt`. Associations across the cut break; connections across it
    /// fail.
    Partition {
        /// Each PR's side.
        prs: Vec<bool>,
        /// Draws each endpoint's side.
        salt: u64,
    },
    /// The partition ends.
    Heal,
    /// Every message takes up to this much longer.
    Spike(Millis),
    /// The delay spike ends.
    SpikeEnd,
    /// One PR's outgoing messages take up to `extra` longer.
    Slow {
        /// The PR.
        pr: usize,
        /// The most extra delay.
        extra: Millis,
    },
    /// The slow PR is fast again.
    SlowEnd,
    /// ENRP announcements (presence, handle update, takeover messages) are sent twice, as RSPLIB
    /// does, or no more.
    Duplicates(bool),
    /// A PE goes away: deregisters (`graceful`) or dies (its association aborts).
    PeLeave {
        /// The PE's index.
        pe: usize,
        /// Deregister rather than die.
        graceful: bool,
    },
    /// A new PE joins a pool.
    PeJoin {
        /// The pool's index.
        pool: usize,
    },
    /// The fault phase ends: crashed PRs restart, frozen ones go on, partitions heal, delays
    /// return to normal.
    Quiet,
    /// The end of a quiet phase: the convergence invariants are checked.
    Settle,
}

/// What a seed makes of a run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The seed.
    pub seed: u64,
    /// Workers of each PR.
    pub workers: Vec<usize>,
    /// Pools.
    pub pools: usize,
    /// PEs at the start (each in pool `index % pools`).
    pub pes: usize,
    /// PUs.
    pub pus: usize,
    /// Most PEs per ENRP_HANDLE_TABLE_RESPONSE (small, so transfers span pages).
    pub table_page: usize,
    /// The faults and phase changes, by time.
    pub timeline: Vec<(Millis, Fault)>,
    /// The PRs have no static peers and find each other only by ENRP_PRESENCE datagrams
    /// (one seed in three).
    pub discovery: bool,
    /// Percent of presence datagrams lost (0 to 30).
    pub datagram_loss: u64,
    /// Every PE's re-registration interval: 2 s, or (one seed in two) 4 s, longer than a
    /// restarted PR's start-up bound, so that it cannot learn every PE from the re-registrations'
    /// handle updates and needs its handle table transfers. Below the registration life
    /// (`invariants::REGISTRATION_LIFE`) by more than the worst round trip of the fault model.
    pub reregistration: Millis,
    /// Forwards between a PR's workers wait in per-pair FIFO mailboxes and are delivered 0-2 ms
    /// later, interleaved with network events and timers, as between the daemon's worker threads
    /// (one seed in two); otherwise they are delivered inside the call that made them.
    pub async_mailboxes: bool,
    /// The pools each PU subscribes to (RFC 5352 §2.2.5, the S bit), by PU index: none for the
    /// PUs that only resolve; for a subscriber some of the pools, never all of them, so that it
    /// still resolves some pool at its PR and notices a half-open association as the others do.
    pub subscriptions: Vec<Vec<usize>>,
    /// The PRs' `subscriptions.min_push_interval` (RFC 5352 §2.2.6 pushes coalesced to one per
    /// subscriber per interval): 0, 10, 100 or 1 000 ms.
    pub push_interval: Millis,
    /// The end of the run.
    pub end: Millis,
}

impl Scenario {
    /// The PRs, PEs, pools and PUs of `seed` without any fault, until `end` (focused tests
    /// inject their own faults).
    pub fn calm(seed: u64, end: Millis) -> Self {
        Self {
            timeline: Vec::new(),
            end,
            ..Self::draw(seed)
        }
    }

    /// The scenario of `seed`.
    pub fn draw(seed: u64) -> Self {
        let mut rng = Rng::seed(seed ^ 0x5ce7_a210);
        let prs = 3;
        let workers = (0..prs).map(|_| 1 + rng.below(4) as usize).collect();
        let pools = 2 + rng.below(3) as usize;
        let pes = 8 + rng.below(5) as usize;
        let pus = 2 + rng.below(2) as usize;
        let table_page = 2 + rng.below(6) as usize;
        let mut timeline = Vec::new();
        let mut pe_count = pes;
        for cycle in 0..CYCLES {
            let start = WARM_UP + cycle * (FAULT_PHASE + QUIET_PHASE);
            let quiet = start + FAULT_PHASE;
            // Faults start in the first 80 % of the phase; their repairs come by the quiet
            // phase at the latest.
            let faults = 2 + rng.below(6);
            for _ in 0..faults {
                let at = start + rng.below(FAULT_PHASE * 4 / 5);
                let until = |rng: &mut Rng, min: Millis, spread: Millis| {
                    (at + min + rng.below(spread)).min(quiet - 1)
                };
                match rng.below(10) {
                    0 | 1 => {
                        // Killed, with or without RST, and started again 2-12 s later with a
                        // fresh ID.
                        let pr = rng.below(prs as u64) as usize;
                        let back = until(&mut rng, 2_000, 10_000);
                        let kill = if rng.below(3) == 0 {
                            Fault::Vanish(pr)
                        } else {
                            Fault::Crash(pr)
                        };
                        timeline.push((at, kill));
                        timeline.push((back, Fault::Restart(pr)));
                    }
                    7 => {
                        // Killed and restarted at once by its supervisor (within 200 ms), with
                        // the same ID or a new one.
                        let pr = rng.below(prs as u64) as usize;
                        let kill = if rng.below(2) == 0 {
                            Fault::Vanish(pr)
                        } else {
                            Fault::Crash(pr)
                        };
                        let back = until(&mut rng, 0, 200);
                        let restart = if rng.below(2) == 0 {
                            Fault::RestartSameId(pr)
                        } else {
                            Fault::Restart(pr)
                        };
                        timeline.push((at, kill));
                        timeline.push((back, restart));
                    }
                    8 => {
                        // SIGSTOP for 0.3-8 s: shorter and longer than dead-peer detection.
                        let pr = rng.below(prs as u64) as usize;
                        let back = until(&mut rng, 300, 7_700);
                        timeline.push((at, Fault::Freeze(pr)));
                        timeline.push((back, Fault::Thaw(pr)));
                    }
                    2 => {
                        let lone = rng.below(prs as u64) as usize;
                        let sides = (0..prs).map(|i| i == lone).collect();
                        let salt = rng.next_u64();
                        let heal = until(&mut rng, 2_000, 10_000);
                        timeline.push((at, Fault::Partition { prs: sides, salt }));
                        timeline.push((heal, Fault::Heal));
                    }
                    3 => {
                        let extra = 50 + rng.below(350);
                        let end = until(&mut rng, 1_000, 4_000);
                        timeline.push((at, Fault::Spike(extra)));
                        timeline.push((end, Fault::SpikeEnd));
                    }
                    4 => {
                        let pr = rng.below(prs as u64) as usize;
                        let extra = 20 + rng.below(280);
                        let end = until(&mut rng, 3_000, 7_000);
                        timeline.push((at, Fault::Slow { pr, extra }));
                        timeline.push((end, Fault::SlowEnd));
                    }
                    5 => {
                        let end = until(&mut rng, 5_000, 10_000);
                        timeline.push((at, Fault::Duplicates(true)));
                        timeline.push((end, Fault::Duplicates(false)));
                    }
                    6 | 9 => {
                        let pe = rng.below(pe_count as u64) as usize;
                        let graceful = rng.below(2) == 0;
                        let pool = rng.below(pools as u64) as usize;
                        let join = until(&mut rng, 500, 5_000);
                        timeline.push((at, Fault::PeLeave { pe, graceful }));
                        timeline.push((join, Fault::PeJoin { pool }));
                        pe_count += 1;
                    }
                    _ => unreachable!("below(10)"),
                }
            }
            timeline.push((quiet, Fault::Quiet));
            timeline.push((quiet + QUIET_PHASE, Fault::Settle));
        }
        let end = WARM_UP + CYCLES * (FAULT_PHASE + QUIET_PHASE);
        timeline.sort_by_key(|(at, _)| *at);
        let discovery = rng.below(3) == 0;
        let datagram_loss = rng.below(31);
        let async_mailboxes = rng.below(2) == 0;
        let reregistration = if rng.below(2) == 0 { 2_000 } else { 4_000 };
        // The first `subscribers` PUs subscribe, each to a random subset of the pools that leaves
        // one out at least.
        let subscribers = rng.below(pus as u64 + 1) as usize;
        let subscriptions = (0..pus)
            .map(|k| {
                if k >= subscribers {
                    return Vec::new();
                }
                let left_out = rng.below(pools as u64) as usize;
                let mut subscribed: Vec<usize> = (0..pools)
                    .filter(|&p| p != left_out && rng.below(2) == 0)
                    .collect();
                if subscribed.is_empty() {
                    subscribed.push((left_out + 1) % pools);
                }
                subscribed
            })
            .collect();
        let push_interval = [0, 10, 100, 1_000][rng.below(4) as usize];
        Self {
            seed,
            workers,
            pools,
            pes,
            pus,
            table_page,
            timeline,
            discovery,
            datagram_loss,
            async_mailboxes,
            reregistration,
            subscriptions,
            push_interval,
            end,
        }
    }
}

impl fmt::Display for Scenario {
    /// The parameter block: everything the seed drew, one item per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {}", self.seed)?;
        let workers: Vec<String> = self.workers.iter().map(usize::to_string).collect();
        writeln!(
            f,
            "  PRs: {} with {} workers",
            self.workers.len(),
            workers.join("/")
        )?;
        writeln!(
            f,
            "  pools: {}, PEs: {} (re-registering every {} ms), PUs: {}, table page: {} PEs",
            self.pools, self.pes, self.reregistration, self.pus, self.table_page
        )?;
        writeln!(
            f,
            "  peers: {}, presence datagram loss: {} %, mailboxes: {}",
            if self.discovery {
                "multicast discovery"
            } else {
                "static"
            },
            self.datagram_loss,
            if self.async_mailboxes {
                "asynchronous"
            } else {
                "synchronous"
            }
        )?;
        let subscribers: Vec<String> = self
            .subscriptions
            .iter()
            .enumerate()
            .filter(|(_, pools)| !pools.is_empty())
            .map(|(k, pools)| format!("PU {k} to pools {pools:?}"))
            .collect();
        if subscribers.is_empty() {
            writeln!(f, "  subscriptions: none")?;
        } else {
            writeln!(
                f,
                "  subscriptions: {}; pushed at most every {} ms",
                subscribers.join(", "),
                self.push_interval
            )?;
        }
        writeln!(f, "  faults:")?;
        for (at, fault) in &self.timeline {
            writeln!(f, "    {at:>6} ms {fault:?}")?;
        }
        write!(f, "  end: {} ms", self.end)
    }
}
