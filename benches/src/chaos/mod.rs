//! `rserpool-bench chaos`: a Jepsen-style fault test of an operating scope of real registrar
//! processes. It owns the run: 3 to 5 `rserpool-registrar` processes peered over ENRP on
//! loopback ([`scope`]), `rserpool register` PEs given every registrar ([`pes`]), one PU per
//! registrar resolving every pool every 150 ms ([`probe`]), faults injected at seeded random
//! times for `--duration` (a registrar killed and restarted, stopped and continued, restarted
//! with a new PR ID; PEs deregistering, killed, hung, joining), and the [`checker`] that judges
//! every answer against the [`bounds`] the profile's timers imply; then the [`report`].

pub mod bounds;
pub mod checker;
pub mod pes;
pub mod probe;
pub mod report;
pub mod scope;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::{Duration, Instant};

use rserpool_handlespace::Rng;

use bounds::{Bounds, Timers};
use checker::{Checker, PeEnd};
use pes::{PeFate, PeLaunch, PeLine, PeProcess, PeSaid, PeSpec};
use probe::Probe;
use scope::{Launch, Log, Slot, log_line};

pub use report::ChaosReport;

use crate::cli::Cli;
use crate::error::{Error, Result};
use crate::net::StreamTransport;
use crate::target;
use crate::workload::pool_handle;

/// Milliseconds since the start of the run.
pub type Millis = u64;

/// The run's clock: milliseconds since its start, shared by every thread.
#[derive(Clone, Debug)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
        }
    }

    /// Milliseconds since the start.
    pub fn now(&self) -> Millis {
        self.base.elapsed().as_millis() as Millis
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// What a chaos run does to the scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL a registrar, wait for it to exit, start it again with the same command line.
    KillRestart,
    /// SIGSTOP a registrar for longer than the takeover bound, then SIGCONT.
    StopCont,
    /// SIGKILL a registrar and start it again with a new PR ID.
    KillNewId,
    /// SIGTERM a PE: it deregisters and exits.
    PeDeregister,
    /// SIGKILL a PE: its association closes without a deregistration.
    PeKill,
    /// SIGSTOP a PE: it stops answering keep-alives, its association stays open.
    PeHang,
    /// Start a new PE.
    PeJoin,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [Self; 7] = [
        Self::KillRestart,
        Self::StopCont,
        Self::KillNewId,
        Self::PeDeregister,
        Self::PeKill,
        Self::PeHang,
        Self::PeJoin,
    ];
    const REGISTRAR: [Self; 3] = [Self::KillRestart, Self::StopCont, Self::KillNewId];
    const PE_LEAVING: [Self; 3] = [Self::PeDeregister, Self::PeKill, Self::PeHang];

    /// Its name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::KillRestart => "kill+restart",
            Self::StopCont => "stop+cont",
            Self::KillNewId => "kill+new id",
            Self::PeDeregister => "PE deregister",
            Self::PeKill => "PE kill",
            Self::PeHang => "PE hang",
            Self::PeJoin => "PE join",
        }
    }
}

/// How often each PU resolves every pool at its registrar.
const PROBE_INTERVAL: Millis = 150;
/// How long an answer waits before it is judged, so that the PE lines read meanwhile by other
/// threads are in the ledger.
const EVALUATION_LAG: Millis = 1000;
/// How long a registrar may take to print its listeners.
const START_TIMEOUT: Millis = 15_000;
/// How long the first PEs may take to register.
const REGISTER_TIMEOUT: Millis = 15_000;
/// How long a PE told to leave (SIGTERM) may take to exit before it is killed.
const LEAVE_TIMEOUT: Millis = 10_000;
/// How long a supervisor waits before it starts a registrar that failed to start again.
const RETRY_DELAY: Millis = 50;
/// Unexpected exits of one registrar after which the run gives up.
const MAX_EXITS: u64 = 3;
/// The user port the first PE advertises (PUs never connect to it).
const PORT_BASE: u16 = 20_000;

/// Runs `rserpool-bench chaos` as `cli` says and reports what it found.
pub fn run(cli: &Cli) -> Result<ChaosReport> {
    let seed = cli
        .seed
        .unwrap_or_else(|| Rng::from_entropy().next_u64() >> 16);
    let logs = match &cli.logs {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("rserpool-chaos-{}-{seed}", std::process::id())),
    };
    std::fs::create_dir_all(&logs).map_err(|e| {
        Error::new(format!(
            "cannot create the log directory {}: {e}",
            logs.display()
        ))
    })?;
    let registrar_bin = match &cli.registrar_bin {
        Some(path) => path.clone(),
        None => target::default_registrar_bin()?,
    };
    let rserpool_bin = match &cli.rserpool_bin {
        Some(path) => path.clone(),
        None => default_rserpool_bin(&registrar_bin),
    };
    for (bin, package, flag) in [
        (&registrar_bin, "rserpool-registrar", "--registrar-bin"),
        (&rserpool_bin, "rserpool-endpoint", "--rserpool-bin"),
    ] {
        if !bin.is_file() {
            return Err(Error::new(format!(
                "{} not found: build it (cargo build --release -p {package}) or pass {flag} PATH",
                bin.display()
            )));
        }
    }
    let launch = Launch {
        bin: registrar_bin,
        profile: cli.profile.clone(),
        workers: cli.was_given("workers").then_some(cli.workers),
        transport: cli.transport,
    };
    let n = cli.registrars;
    let ports = scope::free_ports(3 * n)?;
    let mut slots = Vec::with_capacity(n);
    for i in 0..n {
        let peers = (0..n)
            .filter(|&j| j != i)
            .map(|j| ports[3 * j + 1])
            .collect();
        let own = (ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]);
        slots.push(Slot::new(
            i,
            i as u64 + 1,
            own,
            peers,
            launch.clone(),
            &logs,
        )?);
    }
    let timers = Timers::parse(&slots[0].check_config()?).map_err(Error::new)?;
    let bounds = Bounds::new(timers);
    let pools = cli.population_pools();
    let clock = Clock::new();
    let pe_log = scope::open_log(&logs.join("pes.log"))?;
    let faults_log = scope::open_log(&logs.join("faults.log"))?;
    let (pe_tx, pe_rx) = channel();
    let run = Run {
        quiet: cli.quiet,
        transport: cli.transport,
        population: cli.population(),
        pool_count: pools,
        duration: (cli.chaos_duration() * 1000.0) as Millis,
        rng: Rng::seed(seed),
        checker: Checker::new(bounds, n, pools, PROBE_INTERVAL * 2),
        bounds,
        pe_launch: PeLaunch {
            bin: rserpool_bin,
            registrars: slots.iter().map(Slot::asap_url).collect(),
            life: bounds.pe_life,
        },
        slots,
        pes: Vec::new(),
        pe_index: HashMap::new(),
        pe_homes: HashMap::new(),
        pe_log,
        faults_log,
        answers_log: scope::open_log(&logs.join("answers.log"))?,
        last_answers: HashMap::new(),
        pe_tx,
        pe_rx,
        pending: VecDeque::new(),
        clock,
        report: ChaosReport {
            seed,
            profile: cli.profile.clone(),
            workers: launch.workers,
            population: (cli.population(), pools),
            duration_s: cli.chaos_duration(),
            logs: logs.display().to_string(),
            bounds: bounds.describe(),
            faults: FaultKind::ALL.iter().map(|&k| (k, 0)).collect(),
            ..ChaosReport::default()
        },
        starts: vec![0; n],
        attempt_since: vec![0; n],
        exits: vec![0; n],
        next_id: n as u64 + 1,
        registrar_bag: Vec::new(),
        leaving_bag: Vec::new(),
        reported: 0,
    };
    run.note(&format!(
        "chaos: seed {seed}; logs in {}; {n} registrars, profile {}",
        logs.display(),
        cli.profile
    ));
    for line in &run.report.bounds {
        run.note(&format!("  {line}"));
    }
    run.execute()
}

/// `rserpool` next to the registrar binary (the endpoint's command line, built into the same
/// target directory).
fn default_rserpool_bin(registrar_bin: &std::path::Path) -> PathBuf {
    registrar_bin.with_file_name("rserpool")
}

/// The state of a run.
struct Run {
    quiet: bool,
    transport: StreamTransport,
    population: usize,
    pool_count: usize,
    duration: Millis,
    rng: Rng,
    bounds: Bounds,
    checker: Checker,
    slots: Vec<Slot>,
    pe_launch: PeLaunch,
    pes: Vec<PeProcess>,
    pe_index: HashMap<u64, usize>,
    /// The slot each PE last registered at.
    pe_homes: HashMap<u64, usize>,
    pe_log: Log,
    faults_log: Log,
    /// Every answer that differs from its registrar's previous one for the pool.
    answers_log: Log,
    last_answers: HashMap<(usize, usize), Vec<(u64, u64)>>,
    pe_tx: std::sync::mpsc::Sender<PeLine>,
    pe_rx: Receiver<PeLine>,
    pending: VecDeque<checker::Observation>,
    clock: Clock,
    report: ChaosReport,
    starts: Vec<u64>,
    /// When the bench last started each registrar other than to retry a failed start.
    attempt_since: Vec<Millis>,
    exits: Vec<u64>,
    next_id: u64,
    registrar_bag: Vec<FaultKind>,
    leaving_bag: Vec<FaultKind>,
    reported: usize,
}

impl Run {
    fn note(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// A line in the faults log and on stderr, with the run time.
    fn event(&self, line: &str) {
        let at = self.clock.now();
        log_line(&self.faults_log, at, line);
        self.note(&format!("[{:>7.2}s] {line}", at as f64 / 1000.0));
    }

    fn execute(mut self) -> Result<ChaosReport> {
        for i in 0..self.slots.len() {
            self.start_slot(i)?;
        }
        self.wait_listening()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (probe_tx, probe_rx) = channel();
        let handles: Vec<Vec<u8>> = (0..self.pool_count).map(pool_handle).collect();
        let mut probes = Vec::new();
        for slot in &self.slots {
            let spec = probe::ProbeSpec {
                slot: slot.index,
                transport: self.transport,
                port: slot.asap,
                pools: handles.clone(),
                interval: PROBE_INTERVAL,
            };
            probes.push(probe::spawn(
                spec,
                self.clock.clone(),
                Arc::clone(&stop),
                probe_tx.clone(),
            )?);
        }
        drop(probe_tx);
        for _ in 0..self.population {
            self.join_pe()?;
        }
        self.wait_registered(&probe_rx)?;
        let outcome = self.inject(&probe_rx);
        stop.store(true, Ordering::Relaxed);
        for handle in probes {
            let _ = handle.join();
        }
        // PE lines still in their pipes reach the ledger before the last answers are judged.
        let settle = self.clock.now() + EVALUATION_LAG;
        while self.clock.now() < settle {
            self.pump(&probe_rx, None);
            thread::sleep(Duration::from_millis(20));
        }
        self.pump(&probe_rx, Some(Millis::MAX));
        outcome?;
        self.finish();
        Ok(self.report)
    }

    /// Starts slot `i`'s process and enters it in the ledger.
    fn start_slot(&mut self, i: usize) -> Result<()> {
        self.slots[i].spawn(&self.clock)?;
        self.starts[i] += 1;
        let slot = &self.slots[i];
        self.checker.registrar_started(i, slot.id, slot.started);
        Ok(())
    }

    /// Waits until every registrar printed its listeners.
    fn wait_listening(&mut self) -> Result<()> {
        let deadline = self.clock.now() + START_TIMEOUT;
        while !self.slots.iter().all(Slot::is_listening) {
            for slot in &mut self.slots {
                if let Some(status) = slot.exited() {
                    return Err(Error::new(format!(
                        "{} exited at start-up ({status}): see {}/pr{}.log",
                        slot.name(),
                        self.report.logs,
                        slot.index
                    )));
                }
            }
            if self.clock.now() > deadline {
                return Err(Error::new(format!(
                    "a registrar printed no `listening enrp` line within {START_TIMEOUT} ms: see \
                     the pr*.log files in {}",
                    self.report.logs
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits until every PE said it registered.
    fn wait_registered(&mut self, probes: &Receiver<Probe>) -> Result<()> {
        let deadline = self.clock.now() + REGISTER_TIMEOUT;
        while self.pe_homes.len() < self.pes.len() {
            self.pump(probes, None);
            if self.clock.now() > deadline {
                return Err(Error::new(format!(
                    "{} of {} PEs registered within {REGISTER_TIMEOUT} ms: see {}/pes.log",
                    self.pe_homes.len(),
                    self.pes.len(),
                    self.report.logs
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.event(&format!("{} PEs registered", self.pes.len()));
        Ok(())
    }

    /// The fault schedule: after the scope settled, registrar faults one at a time and PE churn
    /// until `--duration` is over, then a quiet period in which the last faults' bounds pass.
    fn inject(&mut self, probes: &Receiver<Probe>) -> Result<()> {
        let b = self.bounds;
        let start = self.clock.now() + b.startup + b.update;
        let end = start + self.duration;
        let mut next_fault = start;
        let mut next_churn = start + self.between(b.churn_gap);
        let mut stopped: Option<(usize, Millis)> = None;
        let mut quiet_until = None;
        self.event(&format!(
            "faults from {:.1} s to {:.1} s",
            start as f64 / 1000.0,
            end as f64 / 1000.0
        ));
        loop {
            let now = self.clock.now();
            self.pump(probes, Some(now.saturating_sub(EVALUATION_LAG)));
            self.supervise()?;
            if let Some((slot, until)) = stopped
                && now >= until
            {
                self.slots[slot].signal("CONT", &self.clock)?;
                self.checker.registrar_resumed(slot, self.clock.now());
                let what = format!("SIGCONT {}", self.slots[slot].name());
                self.checker.fault(self.clock.now(), what.clone());
                self.event(&what);
                stopped = None;
                next_fault = self.clock.now() + self.between(b.fault_gap);
            }
            if now < end {
                if stopped.is_none() && now >= next_fault {
                    stopped = self.registrar_fault()?;
                    next_fault = self.clock.now() + self.between(b.fault_gap);
                }
                if now >= next_churn {
                    self.churn()?;
                    next_churn = self.clock.now() + self.between(b.churn_gap);
                }
            } else if stopped.is_none() {
                let quiet = *quiet_until.get_or_insert(now + b.startup + 2 * b.update);
                if now >= quiet {
                    return Ok(());
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A duration drawn uniformly from `range`.
    fn between(&mut self, (low, high): (Millis, Millis)) -> Millis {
        low + self.rng.below(high - low + 1)
    }

    /// The next kind from `bag`, refilled with `kinds` in a random order when empty: every kind
    /// comes once in each round of the bag.
    fn draw(rng: &mut Rng, bag: &mut Vec<FaultKind>, kinds: &[FaultKind]) -> FaultKind {
        if bag.is_empty() {
            bag.extend_from_slice(kinds);
            for i in (1..bag.len()).rev() {
                bag.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        bag.pop().expect("refilled")
    }

    fn count(&mut self, kind: FaultKind, what: String) {
        *self.report.faults.entry(kind).or_default() += 1;
        if FaultKind::REGISTRAR.contains(&kind) {
            self.checker.fault(self.clock.now(), what.clone());
        }
        self.event(&what);
    }

    /// One registrar fault on a random registrar; a SIGSTOP returns the slot and when to
    /// continue it.
    fn registrar_fault(&mut self) -> Result<Option<(usize, Millis)>> {
        let kind = Self::draw(
            &mut self.rng,
            &mut self.registrar_bag,
            &FaultKind::REGISTRAR,
        );
        let ready: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].is_listening())
            .collect();
        if ready.len() < self.slots.len() {
            // A registrar is still starting: one fault at a time.
            self.registrar_bag.push(kind);
            return Ok(None);
        }
        let i = ready[self.rng.below(ready.len() as u64) as usize];
        let name = self.slots[i].name();
        match kind {
            FaultKind::StopCont => {
                let length = self.between(self.bounds.stop);
                self.count(kind, format!("SIGSTOP {name} for {length} ms"));
                self.checker.registrar_stopped(i, self.clock.now());
                self.slots[i].signal("STOP", &self.clock)?;
                Ok(Some((i, self.clock.now() + length)))
            }
            _ => {
                let new_id = kind == FaultKind::KillNewId;
                self.checker.registrar_ended(i, self.clock.now());
                self.slots[i].kill(&self.clock, kind.name());
                self.attempt_since[i] = self.clock.now();
                if new_id {
                    self.slots[i].id = i as u64 + 1 + 10 * self.next_id;
                    self.next_id += 1;
                }
                self.start_slot(i)?;
                let what = if new_id {
                    format!("SIGKILL {name}, restarted as {}", self.slots[i].name())
                } else {
                    format!("SIGKILL {name}, restarted")
                };
                self.count(kind, what);
                Ok(None)
            }
        }
    }

    /// One PE churn event: a PE joins while fewer than the population are alive, else one
    /// leaves (deregisters, is killed or hangs).
    fn churn(&mut self) -> Result<()> {
        let alive: Vec<usize> = (0..self.pes.len())
            .filter(|&i| self.pes[i].fate == PeFate::Alive)
            .collect();
        if alive.len() < self.population {
            let id = self.join_pe()?;
            self.count(FaultKind::PeJoin, format!("PE {id:#010x} joins"));
            return Ok(());
        }
        let kind = Self::draw(&mut self.rng, &mut self.leaving_bag, &FaultKind::PE_LEAVING);
        let index = alive[self.rng.below(alive.len() as u64) as usize];
        let id = self.pes[index].id;
        let before = self.clock.now();
        self.checker.pe_unregistered(id, before);
        match kind {
            FaultKind::PeDeregister => {
                self.pes[index].signal("TERM")?;
                self.pes[index].fate = PeFate::Leaving(before);
                self.count(kind, format!("SIGTERM PE {id:#010x} (deregisters)"));
            }
            FaultKind::PeKill => {
                self.pes[index].kill();
                self.checker.pe_ended(id, self.clock.now(), PeEnd::Killed);
                self.count(kind, format!("SIGKILL PE {id:#010x}"));
            }
            _ => {
                self.pes[index].signal("STOP")?;
                self.pes[index].fate = PeFate::Hung;
                self.checker.pe_ended(id, self.clock.now(), PeEnd::Hung);
                self.count(kind, format!("SIGSTOP PE {id:#010x} (hangs)"));
            }
        }
        Ok(())
    }

    /// Starts a new PE in the pool with the fewest PEs alive; returns its identifier.
    fn join_pe(&mut self) -> Result<u64> {
        let mut alive = vec![0usize; self.pool_count];
        for pe in self.pes.iter().filter(|p| p.fate == PeFate::Alive) {
            alive[pe.pool] += 1;
        }
        let pool = (0..self.pool_count)
            .min_by_key(|&p| alive[p])
            .expect("at least one pool");
        let id = loop {
            let id = (self.rng.next_u64() & 0xffff_ffff).max(1);
            if !self.pe_index.contains_key(&id) {
                break id;
            }
        };
        let n = self.pes.len();
        let spec = PeSpec {
            id,
            pool,
            pool_handle: String::from_utf8_lossy(&pool_handle(pool)).into_owned(),
            first: n % self.slots.len(),
            port: PORT_BASE + (n % 10_000) as u16,
        };
        let process = PeProcess::spawn(
            &self.pe_launch,
            spec,
            &self.pe_log,
            &self.clock,
            &self.pe_tx,
        )?;
        self.checker.pe_started(id, pool);
        self.pe_index.insert(id, n);
        self.pes.push(process);
        self.report.pes.0 += 1;
        Ok(id)
    }

    /// Feeds the PE lines and the PUs' answers to the ledger, and judges the answers that
    /// arrived before `judge_until`.
    fn pump(&mut self, probes: &Receiver<Probe>, judge_until: Option<Millis>) {
        while let Ok(line) = self.pe_rx.try_recv() {
            self.pe_line(line);
        }
        while let Ok(probe) = probes.try_recv() {
            match probe {
                Probe::Answer(o) => {
                    self.report.resolutions.0 += 1;
                    self.pending.push_back(o);
                }
                Probe::Unanswered { .. } => self.report.unanswered += 1,
            }
        }
        let Some(until) = judge_until else {
            return;
        };
        while self.pending.front().is_some_and(|o| o.received <= until) {
            let o = self.pending.pop_front().expect("looked at");
            self.log_change(&o);
            self.checker.observe(o);
        }
        let found = self.checker.violations();
        for v in &found[self.reported..] {
            let line = format!("VIOLATION {}: {}", v.kind.name(), report::describe(v));
            if !self.quiet {
                eprintln!("{line}");
            }
            log_line(&self.faults_log, v.first, &line);
        }
        self.reported = found.len();
    }

    /// Logs an answer that differs from the previous one of its registrar for its pool.
    fn log_change(&mut self, o: &checker::Observation) {
        let mut pes = o.pes.clone();
        pes.sort_unstable();
        if self.last_answers.get(&(o.slot, o.pool)) == Some(&pes) {
            return;
        }
        let listed: Vec<String> = pes
            .iter()
            .map(|(pe, home)| format!("{pe:#010x}@{home}"))
            .collect();
        log_line(
            &self.answers_log,
            o.sent,
            &format!(
                "PR{} (id {}) {} (answered at {:.3}): {}",
                o.slot,
                self.checker.id_at(o.slot, o.sent),
                String::from_utf8_lossy(&pool_handle(o.pool)),
                o.received as f64 / 1000.0,
                if listed.is_empty() {
                    "none".to_owned()
                } else {
                    listed.join(" ")
                }
            ),
        );
        self.last_answers.insert((o.slot, o.pool), pes);
    }

    fn pe_line(&mut self, line: PeLine) {
        let Some(&index) = self.pe_index.get(&line.pe) else {
            return;
        };
        // A PE told to leave, killed or hung is no longer expected anywhere.
        let alive = self.pes[index].fate == PeFate::Alive;
        match line.said {
            PeSaid::Registered { port } if alive => {
                let Some(slot) = self.slots.iter().position(|s| s.asap == port) else {
                    return;
                };
                self.report.pes.1 += 1;
                if self
                    .pe_homes
                    .insert(line.pe, slot)
                    .is_some_and(|s| s != slot)
                {
                    self.report.pes.2 += 1;
                }
                self.checker.pe_registered(line.pe, slot, line.at);
            }
            PeSaid::Registered { .. } => {}
            PeSaid::Lost => self.checker.pe_unregistered(line.pe, line.at),
            PeSaid::Deregistered => self.checker.pe_ended(line.pe, line.at, PeEnd::Deregistered),
        }
    }

    /// Registrars that exited by themselves (a violation; restarted as a supervisor would),
    /// restarted registrars that do not come up, PEs that exited.
    fn supervise(&mut self) -> Result<()> {
        let now = self.clock.now();
        for i in 0..self.slots.len() {
            match self.slots[i].exited() {
                // It never came up (a restart finding its port still held): a supervisor tries
                // again, until the start-up timeout of the first attempt.
                Some(status) if !self.slots[i].is_listening() => {
                    self.checker.registrar_ended(i, now);
                    if now > self.attempt_since[i] + START_TIMEOUT {
                        return Err(Error::new(format!(
                            "{} did not start within {START_TIMEOUT} ms ({status}): see \
                             {}/pr{i}.log",
                            self.slots[i].name(),
                            self.report.logs
                        )));
                    }
                    self.report.start_retries += 1;
                    self.event(&format!(
                        "{} failed to start ({status}): starting it again",
                        self.slots[i].name()
                    ));
                    thread::sleep(Duration::from_millis(RETRY_DELAY));
                    self.start_slot(i)?;
                }
                Some(status) => {
                    self.exits[i] += 1;
                    self.checker.registrar_exited(i, now, &status.to_string());
                    self.event(&format!(
                        "{} exited by itself ({status})",
                        self.slots[i].name()
                    ));
                    if self.exits[i] >= MAX_EXITS {
                        return Err(Error::new(format!(
                            "{} exited {MAX_EXITS} times by itself: see {}/pr{i}.log",
                            self.slots[i].name(),
                            self.report.logs
                        )));
                    }
                    self.attempt_since[i] = now;
                    self.start_slot(i)?;
                }
                None if !self.slots[i].is_listening()
                    && now > self.slots[i].started + START_TIMEOUT =>
                {
                    return Err(Error::new(format!(
                        "{} printed no `listening enrp` line within {START_TIMEOUT} ms of its \
                         start: see {}/pr{i}.log",
                        self.slots[i].name(),
                        self.report.logs
                    )));
                }
                None => {}
            }
        }
        for index in 0..self.pes.len() {
            let fate = self.pes[index].fate;
            if !matches!(fate, PeFate::Alive | PeFate::Leaving(_)) {
                continue;
            }
            let id = self.pes[index].id;
            if self.pes[index].exited() {
                // Its last lines (a confirmed deregistration) first.
                while let Ok(line) = self.pe_rx.try_recv() {
                    self.pe_line(line);
                }
                self.checker.pe_ended(id, self.clock.now(), PeEnd::Exited);
                if fate == PeFate::Alive {
                    self.report.pes.3 += 1;
                    self.event(&format!("PE {id:#010x} exited by itself: see pes.log"));
                }
            } else if let PeFate::Leaving(since) = fate
                && now > since + LEAVE_TIMEOUT
            {
                self.pes[index].kill();
                self.checker.pe_ended(id, self.clock.now(), PeEnd::Exited);
                self.event(&format!(
                    "PE {id:#010x} did not exit within {LEAVE_TIMEOUT} ms of SIGTERM: killed"
                ));
            }
        }
        Ok(())
    }

    /// The registrars' metrics at the end, then every process stopped.
    fn finish(&mut self) {
        for (i, slot) in self.slots.iter().enumerate() {
            let metrics = target::scrape(&slot.metrics_url()).ok().map(|text| {
                [
                    "rserpool_pool_elements ",
                    "rserpool_enrp_takeovers_total",
                    "rserpool_enrp_peers_dead_total",
                    "rserpool_enrp_resyncs_total",
                ]
                .map(|name| target::sample_sum(&text, name))
            });
            self.report.registrars.push(report::RegistrarEnd {
                name: slot.name(),
                starts: self.starts[i],
                metrics,
            });
        }
        self.report.resolutions.1 = self.checker.checked;
        self.report.resolutions.2 = self.checker.unsettled;
        self.report.violations = self.checker.violations().to_vec();
        for pe in &mut self.pes {
            if pe.fate != PeFate::Gone {
                pe.kill();
            }
        }
        for slot in &mut self.slots {
            slot.stop(&self.clock);
        }
    }
}
