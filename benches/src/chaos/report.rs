//! The summary of a chaos run: what it ran, the faults injected by kind, the resolutions
//! judged, what the registrars' metrics said at the end, and the violations by kind with the
//! first examples; as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::FaultKind;
use super::checker::{Violation, ViolationKind};
use crate::workload::pool_handle;

/// Examples printed per violation kind.
const EXAMPLES: usize = 5;

/// One registrar at the end of the run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegistrarEnd {
    /// `PR0 (id 21)`.
    pub name: String,
    /// Processes started in the slot.
    pub starts: u64,
    /// `rserpool_pool_elements`, `rserpool_enrp_takeovers_total`,
    /// `rserpool_enrp_peers_dead_total`, `rserpool_enrp_resyncs_total` of the last process
    /// (none if its metrics could not be read).
    pub metrics: Option<[f64; 4]>,
}

/// What a chaos run did and found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChaosReport {
    /// The seed of the run.
    pub seed: u64,
    /// The registrars' profile.
    pub profile: String,
    /// `--workers` passed to the registrars, if any.
    pub workers: Option<usize>,
    /// PEs alive at any time, and their pools.
    pub population: (usize, usize),
    /// Seconds of faults.
    pub duration_s: f64,
    /// Where the logs are.
    pub logs: String,
    /// The bounds, as printed at the start.
    pub bounds: Vec<String>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Resolutions answered, judged, and not judged (their registrar was not settled).
    pub resolutions: (u64, u64, u64),
    /// Resolution rounds without a (complete) answer.
    pub unanswered: u64,
    /// Registrar starts tried again because the process exited before listening (a restart
    /// right after SIGKILL finding its port still held).
    pub start_retries: u64,
    /// PEs started, registrations they reported, failovers (a registration at another registrar
    /// than the previous one), and PEs that exited without being told to.
    pub pes: (u64, u64, u64, u64),
    /// Every registrar at the end.
    pub registrars: Vec<RegistrarEnd>,
    /// Every violation found.
    pub violations: Vec<Violation>,
}

impl ChaosReport {
    /// Whether the run found no violation.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    fn of_kind(&self, kind: ViolationKind) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(move |v| v.kind == kind)
    }

    /// The report as text.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let workers = self
            .workers
            .map_or_else(|| "default workers".to_owned(), |w| format!("{w} workers"));
        let _ = writeln!(
            s,
            "chaos: {} registrars (profile {}, {workers}), {} PEs in {} pools, {:.0} s of faults, \
             seed {}",
            self.registrars.len(),
            self.profile,
            self.population.0,
            self.population.1,
            self.duration_s,
            self.seed
        );
        let _ = writeln!(s, "  logs        {}", self.logs);
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        let _ = writeln!(s, "  faults      {}", faults.join(", "));
        let (answered, judged, unsettled) = self.resolutions;
        let _ = writeln!(
            s,
            "  resolutions {answered} answered, {judged} judged, {unsettled} from registrars not \
             settled; {} rounds unanswered",
            self.unanswered
        );
        let (started, registrations, failovers, exited) = self.pes;
        let _ = writeln!(
            s,
            "  PEs         {started} started, {registrations} registrations, {failovers} \
             failovers, {exited} exited by themselves"
        );
        if self.start_retries > 0 {
            let _ = writeln!(
                s,
                "  restarts    {} tried again: the process exited before listening (see the \
                 pr*.log files)",
                self.start_retries
            );
        }
        for r in &self.registrars {
            let metrics = r.metrics.map_or_else(
                || "metrics unreadable".to_owned(),
                |[pes, takeovers, dead, resyncs]| {
                    format!(
                        "{pes} PEs, {takeovers} takeovers won, {dead} peers declared dead, \
                         {resyncs} audit resyncs"
                    )
                },
            );
            let _ = writeln!(
                s,
                "  registrar   {}: {} starts; at the end {metrics}",
                r.name, r.starts
            );
        }
        let counts: Vec<String> = ViolationKind::ALL
            .iter()
            .map(|&k| format!("{} {}", k.name(), self.of_kind(k).count()))
            .collect();
        let _ = writeln!(
            s,
            "  violations  {} ({})",
            self.violations.len(),
            counts.join(", ")
        );
        for kind in ViolationKind::ALL {
            let all: Vec<&Violation> = self.of_kind(kind).collect();
            if all.is_empty() {
                continue;
            }
            let resolutions: u64 = all.iter().map(|v| v.resolutions).sum();
            let _ = writeln!(
                s,
                "  {}: {} ({resolutions} resolutions)",
                kind.name(),
                all.len()
            );
            for v in all.iter().take(EXAMPLES) {
                let _ = writeln!(s, "    {}", describe(v));
            }
        }
        s
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let violations: Vec<Value> = self.violations.iter().map(violation_json).collect();
        let by_kind: BTreeMap<&str, usize> = ViolationKind::ALL
            .iter()
            .map(|&k| (k.name(), self.of_kind(k).count()))
            .collect();
        let faults: BTreeMap<&str, u64> = self.faults.iter().map(|(k, n)| (k.name(), *n)).collect();
        let registrars: Vec<Value> = self
            .registrars
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "starts": r.starts,
                    "pool_elements": r.metrics.map(|m| m[0]),
                    "takeovers": r.metrics.map(|m| m[1]),
                    "peers_dead": r.metrics.map(|m| m[2]),
                    "resyncs": r.metrics.map(|m| m[3]),
                })
            })
            .collect();
        json!({
            "scenario": "chaos",
            "seed": self.seed,
            "profile": self.profile,
            "workers": self.workers,
            "population": self.population.0,
            "pools": self.population.1,
            "duration_s": self.duration_s,
            "logs": self.logs,
            "bounds": self.bounds,
            "faults": faults,
            "resolutions_answered": self.resolutions.0,
            "resolutions_judged": self.resolutions.1,
            "resolutions_unsettled": self.resolutions.2,
            "rounds_unanswered": self.unanswered,
            "start_retries": self.start_retries,
            "pes_started": self.pes.0,
            "pe_registrations": self.pes.1,
            "pe_failovers": self.pes.2,
            "pes_exited": self.pes.3,
            "registrars": registrars,
            "violation_counts": by_kind,
            "violations": violations,
            "passed": self.passed(),
        })
    }
}

/// One violation in a line: when, where, which PE, for how long, why, after which fault.
pub fn describe(v: &Violation) -> String {
    let mut s = format!("{:>8.3} s", v.first as f64 / 1000.0);
    if let Some((slot, id)) = v.registrar {
        let _ = write!(s, "  PR{slot} (id {id})");
    }
    if let Some(pool) = v.pool {
        let _ = write!(
            s,
            "  {}",
            String::from_utf8_lossy(&pool_handle(pool)).into_owned()
        );
    }
    if v.pe != 0 {
        let _ = write!(s, "  PE {:#010x}", v.pe);
    }
    if v.resolutions > 0 {
        let _ = write!(
            s,
            "  for {:.2} s ({} resolutions)",
            (v.last - v.first) as f64 / 1000.0,
            v.resolutions
        );
    }
    let _ = write!(s, ": {}", v.detail);
    if let Some(fault) = &v.after_fault {
        let _ = write!(s, "; after {fault}");
    }
    s
}

fn violation_json(v: &Violation) -> Value {
    json!({
        "kind": v.kind.name(),
        "first_s": v.first as f64 / 1000.0,
        "last_s": v.last as f64 / 1000.0,
        "resolutions": v.resolutions,
        "slot": v.registrar.map(|r| r.0),
        "registrar_id": v.registrar.map(|r| r.1),
        "pool": v.pool.map(|p| String::from_utf8_lossy(&pool_handle(p)).into_owned()),
        "pe": v.pe,
        "detail": v.detail,
        "after_fault": v.after_fault,
    })
}
