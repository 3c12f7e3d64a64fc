//! The `sweep` scenario: a short grid over the registrar's I/O keys (`io.max_batch`,
//! `io.ring_entries`, `registrar.busy_poll_us`, `registrar.workers`, `registrar.pin_workers`)
//! around a base profile, each point the `resolve` load against a registrar spawned for it alone;
//! the rule that picks the best point, the verification of that choice, the report, and the
//! profile file written for the chosen point.
//!
//! The grid: the base profile's own values first, then each key varied alone around its base
//! value (the first alternative of every key, then the second ones), then the combination of each
//! key's best value when more than one key has a better value than the base's. `--points` and
//! `--budget` bound it; what does not fit is left out and named.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::app;
use crate::cli::{Cli, ScenarioKind};
use crate::error::{Error, Result};
use crate::report::Summary;
use crate::target::{self, Target};

/// How much worse than the base's a point's p99 may be for a closed-loop sweep to choose it.
pub const P99_ALLOWANCE: f64 = 1.2;
/// What a point costs besides its warm-up and measured window before one was timed: the spawn,
/// the PEs' registration and the end of the run.
const FIRST_POINT_OVERHEAD: Duration = Duration::from_secs(1);

/// A key the sweep varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Knob {
    /// `io.max_batch`: completions or events a worker handles per loop turn.
    MaxBatch,
    /// `io.ring_entries`: entries of each worker's io_uring submission queue (a power of two).
    RingEntries,
    /// `registrar.busy_poll_us`: how long an idle worker spins before it sleeps.
    BusyPollUs,
    /// `registrar.workers`: worker threads (0: one per usable core).
    Workers,
    /// `registrar.pin_workers`: a worker per core of its own (0 false, 1 true here).
    PinWorkers,
}

impl Knob {
    /// Every knob, in the order the grid varies them.
    pub const ALL: [Self; 5] = [
        Self::MaxBatch,
        Self::RingEntries,
        Self::BusyPollUs,
        Self::Workers,
        Self::PinWorkers,
    ];

    /// Its section in the configuration.
    pub const fn section(self) -> &'static str {
        match self {
            Self::MaxBatch | Self::RingEntries => "io",
            Self::BusyPollUs | Self::Workers | Self::PinWorkers => "registrar",
        }
    }

    /// Its key in the section.
    pub const fn key(self) -> &'static str {
        match self {
            Self::MaxBatch => "max_batch",
            Self::RingEntries => "ring_entries",
            Self::BusyPollUs => "busy_poll_us",
            Self::Workers => "workers",
            Self::PinWorkers => "pin_workers",
        }
    }

    /// `section.key`, as the documentation names it.
    pub fn name(self) -> String {
        format!("{}.{}", self.section(), self.key())
    }

    /// `value` as a TOML literal (`true`/`false` for `pin_workers`).
    pub fn literal(self, value: u64) -> String {
        match self {
            Self::PinWorkers => (value != 0).to_string(),
            _ => value.to_string(),
        }
    }

    /// The value of a TOML literal as [`Knob::literal`] writes it.
    fn parse(self, literal: &str) -> Option<u64> {
        match (self, literal) {
            (Self::PinWorkers, "true") => Some(1),
            (Self::PinWorkers, "false") => Some(0),
            (Self::PinWorkers, _) => None,
            _ => literal.parse().ok(),
        }
    }

    /// The values the grid tries besides `base` on a host with `cores` usable cores: a quarter
    /// and four times the base's batch and ring (within their ranges); 50 µs of spinning for a
    /// base that does not spin, else none and four times the base's; 1, half the cores and all
    /// of them as workers (0 counting as all); the other `pin_workers`.
    pub fn alternatives(self, base: u64, cores: usize) -> Vec<u64> {
        let cores = cores.max(1) as u64;
        let candidates = match self {
            Self::MaxBatch => vec![(base / 4).max(1), (base * 4).min(65_536)],
            Self::RingEntries => vec![(base / 4).max(8), (base * 4).min(32_768)],
            Self::BusyPollUs if base == 0 => vec![50],
            Self::BusyPollUs => vec![0, (base * 4).min(1_000_000)],
            Self::Workers => vec![1, cores.div_ceil(2), cores],
            Self::PinWorkers => vec![u64::from(base == 0)],
        };
        let same = |v: u64| match self {
            Self::Workers => {
                (if v == 0 { cores } else { v }) == (if base == 0 { cores } else { base })
            }
            _ => v == base,
        };
        let mut values: Vec<u64> = Vec::new();
        for v in candidates {
            if !same(v) && !values.contains(&v) {
                values.push(v);
            }
        }
        values
    }
}

/// The value of every [`Knob`] at one point, in the order of [`Knob::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings(pub [u64; 5]);

impl Settings {
    /// The values of the knobs in `profile`, TOML text that sets them (as `rserpool-registrar
    /// --check-config` prints a profile).
    pub fn from_toml(profile: &str) -> Result<Self> {
        let mut values = [0; 5];
        for (k, knob) in Knob::ALL.into_iter().enumerate() {
            values[k] = toml_value(profile, knob.section(), knob.key())
                .and_then(|v| knob.parse(v))
                .ok_or_else(|| {
                    Error::new(format!(
                        "the base profile sets no {} the sweep can read",
                        knob.name()
                    ))
                })?;
        }
        Ok(Self(values))
    }

    /// The value of `knob`.
    pub fn get(&self, knob: Knob) -> u64 {
        self.0[knob as usize]
    }

    /// These settings with `knob` at `value`.
    pub fn with(mut self, knob: Knob, value: u64) -> Self {
        self.0[knob as usize] = value;
        self
    }

    /// The knobs whose value differs from `base`'s, with their values here.
    pub fn changes(&self, base: &Self) -> Vec<(Knob, u64)> {
        Knob::ALL
            .into_iter()
            .filter(|&k| self.get(k) != base.get(k))
            .map(|k| (k, self.get(k)))
            .collect()
    }

    /// The point's name against `base`: `base`, or its changed keys (`io.max_batch=16 …`).
    pub fn name(&self, base: &Self) -> String {
        let changes = self.changes(base);
        if changes.is_empty() {
            return "base".to_owned();
        }
        changes
            .iter()
            .map(|(k, v)| format!("{}={}", k.name(), k.literal(*v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The configuration file text of every knob but `registrar.workers` (a spawned registrar's
    /// `--workers` flag).
    pub fn config_text(&self) -> String {
        let mut text = String::new();
        for section in ["registrar", "io"] {
            let _ = writeln!(text, "[{section}]");
            for knob in Knob::ALL
                .into_iter()
                .filter(|k| k.section() == section && *k != Knob::Workers)
            {
                let _ = writeln!(text, "{} = {}", knob.key(), knob.literal(self.get(knob)));
            }
        }
        text
    }
}

/// The grid before the combination: the base, then the first alternative of every knob (each
/// varied alone), then the second ones, and so on.
pub fn single_knob_grid(base: Settings, cores: usize) -> Vec<Settings> {
    let alternatives: Vec<Vec<u64>> = Knob::ALL
        .iter()
        .map(|k| k.alternatives(base.get(*k), cores))
        .collect();
    let rounds = alternatives.iter().map(Vec::len).max().unwrap_or(0);
    let mut grid = vec![base];
    for round in 0..rounds {
        for (knob, values) in Knob::ALL.into_iter().zip(&alternatives) {
            if let Some(&v) = values.get(round) {
                grid.push(base.with(knob, v));
            }
        }
    }
    grid
}

/// What one measured point gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    /// Resolutions answered in the measured window.
    pub ops: u64,
    /// Resolutions per second.
    pub ops_per_s: f64,
    /// Errors over the whole run.
    pub errors: u64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// 99.9th percentile latency, µs.
    pub p99_9_us: f64,
}

impl Figures {
    /// The figures of a `resolve` run.
    pub fn of(s: &Summary) -> Self {
        Self {
            ops: s.ops,
            ops_per_s: s.ops_per_s,
            errors: s.errors,
            p50_us: s.latency.p50,
            p99_us: s.latency.p99,
            p99_9_us: s.latency.p99_9,
        }
    }

    /// This point's ops/s and p99 as multiples of `base`'s.
    pub fn ratios(&self, base: &Self) -> (f64, f64) {
        (
            self.ops_per_s / base.ops_per_s.max(f64::MIN_POSITIVE),
            self.p99_us / base.p99_us.max(f64::MIN_POSITIVE),
        )
    }
}

/// How the best point is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Closed loop: the highest ops/s among the points without errors whose p99 is at most
    /// [`P99_ALLOWANCE`] times the base's.
    Closed,
    /// Open loop (`--rate`): the lowest p99 among the points without errors.
    Open,
}

impl Rule {
    /// The rule of a sweep at `rate` (`None`: the closed loop).
    pub fn for_rate(rate: Option<f64>) -> Self {
        if rate.is_some() {
            Self::Open
        } else {
            Self::Closed
        }
    }

    /// The rule in words, with the base's figure it is held to.
    pub fn describe(self, base: &Figures) -> String {
        match self {
            Self::Closed => format!(
                "closed loop: the highest ops/s among the points without errors whose p99 is at \
                 most {P99_ALLOWANCE} x the base's ({:.1} us); the base unless a point beats its \
                 ops/s",
                base.p99_us * P99_ALLOWANCE
            ),
            Self::Open => "open loop: the lowest p99 at the rate among the points without errors; \
                           the base unless a point beats its p99"
                .to_owned(),
        }
    }

    /// Whether `point` may be chosen at all in a sweep whose base gave `base`.
    fn eligible(self, point: &Figures, base: &Figures) -> bool {
        let clean = point.errors == 0 && point.ops > 0;
        match self {
            Self::Closed => clean && point.p99_us <= base.p99_us * P99_ALLOWANCE,
            Self::Open => clean,
        }
    }

    /// Whether `a` is strictly better than `b` by the rule's measure.
    fn better(self, a: &Figures, b: &Figures) -> bool {
        match self {
            Self::Closed => a.ops_per_s > b.ops_per_s,
            Self::Open => a.p99_us < b.p99_us,
        }
    }

    /// Whether `point` beats `base` by the rule.
    pub fn beats(self, point: &Figures, base: &Figures) -> bool {
        self.eligible(point, base) && self.better(point, base)
    }

    /// The best of `candidates` (index and figures), the first of which is the base: the base
    /// unless one beats it, and then the best of those that are eligible.
    pub fn best<'a>(self, mut candidates: impl Iterator<Item = (usize, &'a Figures)>) -> usize {
        let Some((first, base)) = candidates.next() else {
            return 0;
        };
        let mut best = (first, base);
        for (i, f) in candidates {
            if self.eligible(f, base) && self.better(f, best.1) {
                best = (i, f);
            }
        }
        best.0
    }
}

/// What a point is in the sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointKind {
    /// The base profile's own values.
    Base,
    /// One knob varied.
    Knob,
    /// Each knob at its best value.
    Combination,
    /// A run of `--verify`.
    Verify,
}

impl PointKind {
    /// Its name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Knob => "knob",
            Self::Combination => "combination",
            Self::Verify => "verify",
        }
    }
}

/// One registrar spawned and measured.
#[derive(Clone, Debug)]
pub struct Point {
    /// What it is in the sweep.
    pub kind: PointKind,
    /// The knobs' values.
    pub settings: Settings,
    /// Its figures, or why it could not be measured.
    pub outcome: std::result::Result<Figures, String>,
    /// Wall-clock seconds from the spawn to the registrar's end.
    pub seconds: f64,
}

impl Point {
    /// Its figures, if it was measured.
    pub fn figures(&self) -> Option<&Figures> {
        self.outcome.as_ref().ok()
    }

    /// Its JSON object, `n` its number in the table, `base` the base's settings and figures.
    fn to_json(&self, n: usize, base: &Settings, base_figures: &Figures) -> Value {
        let changed: Map<String, Value> = self
            .settings
            .changes(base)
            .into_iter()
            .map(|(k, v)| (k.name(), knob_json(k, v)))
            .collect();
        let mut v = json!({
            "n": n,
            "kind": self.kind.name(),
            "name": self.settings.name(base),
            "changed": changed,
            "seconds": self.seconds,
        });
        match &self.outcome {
            Ok(f) => {
                let (ops_ratio, p99_ratio) = f.ratios(base_figures);
                for (key, value) in [
                    ("ops", json!(f.ops)),
                    ("ops_per_s", json!(f.ops_per_s)),
                    ("errors", json!(f.errors)),
                    ("p50_us", json!(f.p50_us)),
                    ("p99_us", json!(f.p99_us)),
                    ("p99_9_us", json!(f.p99_9_us)),
                    ("ops_ratio", json!(ops_ratio)),
                    ("p99_ratio", json!(p99_ratio)),
                ] {
                    v[key] = value;
                }
            }
            Err(e) => v["error"] = json!(e),
        }
        v
    }
}

/// A knob's value in JSON: a number, or a boolean for `pin_workers`.
fn knob_json(knob: Knob, value: u64) -> Value {
    match knob {
        Knob::PinWorkers => json!(value != 0),
        _ => json!(value),
    }
}

/// The base and the chosen point measured once more, in that order.
#[derive(Clone, Debug)]
pub struct Verification {
    /// The base's rerun.
    pub base: Point,
    /// The chosen point's rerun.
    pub chosen: Point,
}

impl Verification {
    /// The chosen point's ops/s and p99 as multiples of the base's in the reruns.
    pub fn ratios(&self) -> Option<(f64, f64)> {
        Some(self.chosen.figures()?.ratios(self.base.figures()?))
    }

    /// Whether the chosen point still beats the base by `rule` in the reruns.
    pub fn holds(&self, rule: Rule) -> bool {
        match (self.chosen.figures(), self.base.figures()) {
            (Some(c), Some(b)) => rule.beats(c, b),
            _ => false,
        }
    }
}

/// The machine a sweep ran on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The CPU model (`model name` in `/proc/cpuinfo`).
    pub cpu: String,
    /// The cores this process may use (affinity mask and cgroup quota).
    pub cores: usize,
}

impl Host {
    /// This machine.
    pub fn this() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            cpu: cpu_model(&cpuinfo)
                .unwrap_or("unknown CPU model")
                .to_owned(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// `Intel(R) Xeon(R) …, 2 usable cores`.
    pub fn describe(&self) -> String {
        format!("{}, {} usable cores", self.cpu, self.cores)
    }
}

/// The first `model name` of `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<&str> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim())
    })
}

/// A whole sweep: the host, the load, every point, the choice, its verification.
#[derive(Clone, Debug)]
pub struct SweepReport {
    /// Where it ran.
    pub host: Host,
    /// The registrar binary swept.
    pub registrar_bin: PathBuf,
    /// The base profile's name.
    pub profile: String,
    /// The load of every point, in words.
    pub load: String,
    /// The load of every point, as JSON.
    pub load_json: Value,
    /// How the best point is chosen.
    pub rule: Rule,
    /// The base profile's values of the knobs.
    pub base: Settings,
    /// The points measured, the base first.
    pub points: Vec<Point>,
    /// The names of the points the bounds left out.
    pub left_out: Vec<String>,
    /// The index of the chosen point in `points` (0: the base).
    pub chosen: usize,
    /// The reruns of `--verify` (none without it, or when the base is chosen).
    pub verify: Option<Verification>,
    /// `--budget` in seconds.
    pub budget_s: f64,
    /// Seconds the sweep took.
    pub elapsed_s: f64,
    /// The file of `--write-profile`.
    pub written: Option<PathBuf>,
}

impl SweepReport {
    /// The base's figures (the base is always measured).
    pub fn base_figures(&self) -> &Figures {
        self.points[0]
            .figures()
            .expect("a sweep whose base failed has no report")
    }

    /// The chosen point.
    pub fn chosen_point(&self) -> &Point {
        &self.points[self.chosen]
    }

    /// The settings `--write-profile` writes: the chosen point's, or the base's when `--verify`
    /// found that the chosen point no longer beats the base.
    pub fn adopted(&self) -> Settings {
        match &self.verify {
            Some(v) if !v.holds(self.rule) => self.base,
            _ => self.chosen_point().settings,
        }
    }

    /// The report as a table or as one JSON object (one line).
    pub fn render(&self, json: bool) -> String {
        if json {
            self.to_json().to_string()
        } else {
            self.text()
        }
    }

    /// The JSON object.
    pub fn to_json(&self) -> Value {
        let base = self.base_figures();
        let chosen = self.chosen_point();
        let (ops_ratio, p99_ratio) = chosen.figures().unwrap_or(base).ratios(base);
        let base_values: Map<String, Value> = Knob::ALL
            .into_iter()
            .map(|k| (k.name(), knob_json(k, self.base.get(k))))
            .collect();
        let verify = self.verify.as_ref().map(|v| {
            let ratios = v.ratios();
            json!({
                "base": v.base.to_json(0, &self.base, base),
                "chosen": v.chosen.to_json(self.chosen, &self.base, base),
                "ops_ratio": ratios.map(|r| r.0),
                "p99_ratio": ratios.map(|r| r.1),
                "holds": v.holds(self.rule),
            })
        });
        json!({
            "scenario": "sweep",
            "host": {"cpu": self.host.cpu, "cores": self.host.cores},
            "registrar_bin": self.registrar_bin.display().to_string(),
            "profile": self.profile,
            "load": self.load_json,
            "loop": match self.rule { Rule::Closed => "closed", Rule::Open => "open" },
            "rule": self.rule.describe(base),
            "base": base_values,
            "points": self
                .points
                .iter()
                .enumerate()
                .map(|(n, p)| p.to_json(n, &self.base, base))
                .collect::<Vec<_>>(),
            "left_out": self.left_out,
            "chosen": {
                "n": self.chosen,
                "name": chosen.settings.name(&self.base),
                "is_base": self.chosen == 0,
                "ops_ratio": ops_ratio,
                "p99_ratio": p99_ratio,
            },
            "verify": verify,
            "budget_s": self.budget_s,
            "elapsed_s": self.elapsed_s,
            "profile_written": self.written.as_ref().map(|p| p.display().to_string()),
            "adopted": self.adopted().name(&self.base),
        })
    }

    /// The text report: what ran, a table of the points, the rule, the choice and its
    /// verification.
    pub fn text(&self) -> String {
        let base = self.base_figures();
        let open = self.rule == Rule::Open;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "sweep of profile `{}` with {}",
            self.profile,
            self.registrar_bin.display()
        );
        let _ = writeln!(t, "  host      {}", self.host.describe());
        let _ = writeln!(t, "  load      {}", self.load);
        let _ = writeln!(
            t,
            "  points    {} measured{}, {:.1} s in all (budget {} s), {} left out{}",
            self.points.len(),
            if self.verify.is_some() {
                " and 2 reruns of --verify"
            } else {
                ""
            },
            self.elapsed_s,
            self.budget_s,
            self.left_out.len(),
            if self.left_out.is_empty() {
                String::new()
            } else {
                format!(": {}", self.left_out.join(", "))
            }
        );
        let _ = writeln!(
            t,
            "  {:>3}  {:>10}  {:>9}{}  {:>6}  {:>7}  {:>7}  point",
            "#",
            "ops/s",
            "p99 us",
            if open { "  p99.9 us" } else { "" },
            "errors",
            "ops/s x",
            "p99 x"
        );
        for (n, p) in self.points.iter().enumerate() {
            let _ = writeln!(t, "{}", self.row(n, p, base, open));
        }
        let _ = writeln!(t, "  rule      {}", self.rule.describe(base));
        let chosen = self.chosen_point();
        if self.chosen == 0 {
            let _ = writeln!(t, "  chosen    #0, the base: no point beat it by the rule");
        } else if let Some(f) = chosen.figures() {
            let (ops, p99) = f.ratios(base);
            let _ = writeln!(
                t,
                "  chosen    #{} {}: {ops:.3} x the base's ops/s, {p99:.3} x its p99",
                self.chosen,
                chosen.settings.name(&self.base)
            );
        }
        match &self.verify {
            Some(v) => {
                let _ = writeln!(t, "  verify    {}", self.verify_line(v));
            }
            None if self.chosen == 0 => {
                let _ = writeln!(t, "  verify    nothing to verify: the base was chosen");
            }
            None => {
                let _ = writeln!(t, "  verify    not asked for (--verify)");
            }
        }
        if let Some(path) = &self.written {
            let adopted = self.adopted();
            let _ = writeln!(
                t,
                "  profile   written to {}: {}",
                path.display(),
                if adopted != self.base {
                    adopted.name(&self.base)
                } else if self.chosen == 0 {
                    "the base".to_owned()
                } else {
                    "the base (the choice did not hold when verified)".to_owned()
                }
            );
        }
        t
    }

    /// One row of the table.
    fn row(&self, n: usize, p: &Point, base: &Figures, open: bool) -> String {
        let name = match p.kind {
            PointKind::Base => format!("base (profile {})", self.profile),
            PointKind::Combination => format!("{} (combination)", p.settings.name(&self.base)),
            PointKind::Knob | PointKind::Verify => p.settings.name(&self.base),
        };
        let mark = if n == self.chosen { "*" } else { " " };
        match &p.outcome {
            Ok(f) => {
                let (ops, p99) = f.ratios(base);
                format!(
                    " {mark}{n:>3}  {:>10.0}  {:>9.1}{}  {:>6}  {ops:>7.3}  {p99:>7.3}  {name}",
                    f.ops_per_s,
                    f.p99_us,
                    if open {
                        format!("  {:>8.1}", f.p99_9_us)
                    } else {
                        String::new()
                    },
                    f.errors
                )
            }
            Err(e) => format!(" {mark}{n:>3}  failed: {e}  {name}"),
        }
    }

    /// The verification's line: both reruns' figures, their ratio, and whether the choice holds.
    fn verify_line(&self, v: &Verification) -> String {
        let figures = |p: &Point| match &p.outcome {
            Ok(f) => format!("{:.0} ops/s p99 {:.1} us", f.ops_per_s, f.p99_us),
            Err(e) => format!("failed: {e}"),
        };
        let ratios = v
            .ratios()
            .map(|(ops, p99)| format!(" ({ops:.3} x ops/s, {p99:.3} x p99)"))
            .unwrap_or_default();
        format!(
            "base again {}, chosen again {}{ratios}: {}",
            figures(&v.base),
            figures(&v.chosen),
            if v.holds(self.rule) {
                "the chosen point still beats the base"
            } else {
                "the chosen point no longer beats the base"
            }
        )
    }

    /// The profile file for the chosen point: comments on the host, the load, the command, the
    /// date and the figures, then `base_text` (the base profile as the registrar prints it) with
    /// the chosen keys changed and marked.
    pub fn profile_file(&self, base_text: &str, command: &str, date: &str) -> Result<String> {
        let base = self.base_figures();
        let chosen = self.chosen_point();
        let mut head = vec![
            format!(
                "rserpool-registrar configuration written by `rserpool-bench sweep` on {date}."
            ),
            format!("Host: {} (tuned for this host).", self.host.describe()),
            format!("Load: {}.", self.load),
            format!("Command: {command}"),
            format!("Rule: {}.", self.rule.describe(base)),
        ];
        let figures = |f: &Figures| {
            format!(
                "{:.0} ops/s, p99 {:.1} us, p99.9 {:.1} us",
                f.ops_per_s, f.p99_us, f.p99_9_us
            )
        };
        match chosen.figures() {
            Some(f) if self.chosen != 0 => {
                let (ops, p99) = f.ratios(base);
                head.push(format!(
                    "Chosen: point #{} of {}, {}{}, over profile `{}`.",
                    self.chosen,
                    self.points.len(),
                    chosen.settings.name(&self.base),
                    if self.adopted() == self.base {
                        ""
                    } else {
                        " (the lines marked `# sweep:` below)"
                    },
                    self.profile
                ));
                head.push(format!("Chosen point: {}.", figures(f)));
                head.push(format!("Base profile: {}.", figures(base)));
                head.push(format!(
                    "Measured in the same run: {ops:.3} x the base's ops/s, {p99:.3} x its p99."
                ));
                if let Some(v) = &self.verify {
                    head.push(format!("Verified: {}.", self.verify_line(v)));
                }
                if self.adopted() == self.base {
                    head.push(format!(
                        "So this file is the base profile `{}` with no key changed: a choice that \
                         does not hold when verified is not adopted.",
                        self.profile
                    ));
                }
            }
            _ => {
                head.push(format!(
                    "Chosen: the base profile `{}` itself: none of the other {} points beat it by \
                     the rule, so no key is changed.",
                    self.profile,
                    self.points.len() - 1
                ));
                head.push(format!("Base profile: {}.", figures(base)));
            }
        }
        head.push(
            "These are ratios of single short runs: on a shared machine they are noisy; measure \
             again before relying on them."
                .to_owned(),
        );
        head.push(
            "The points ran with the bench's --asap and --metrics on 127.0.0.1 and its [limits] \
             room for the load; this file keeps the base profile's listeners and limits."
                .to_owned(),
        );
        head.push(
            "Use it with `rserpool-registrar --config FILE`: it sets every key, so the profile \
             underneath does not matter."
                .to_owned(),
        );
        let mut text = String::new();
        for line in head {
            // One comment line per line of the text, whatever the command held; the command
            // stays whole, to be copied.
            for part in line.lines() {
                if part.starts_with("Command: ") {
                    let _ = writeln!(text, "# {part}");
                } else {
                    text.push_str(&comment(part));
                }
            }
        }
        text.push('\n');
        // The registrar's own header ("the configuration is valid", its layers) is left out.
        let body = base_text
            .find("\n[")
            .map_or(base_text, |at| &base_text[at + 1..]);
        let mut body = body.to_owned();
        for (knob, value) in self.adopted().changes(&self.base) {
            let was = knob.literal(self.base.get(knob));
            let line = format!(
                "{} = {} # sweep: profile `{}` has {was}",
                knob.key(),
                knob.literal(value),
                self.profile
            );
            body = set_toml_line(&body, knob.section(), knob.key(), &line).ok_or_else(|| {
                Error::new(format!(
                    "the base profile has no {} line to change",
                    knob.name()
                ))
            })?;
        }
        text.push_str(&body);
        Ok(text)
    }
}

/// The widest comment line of a written profile (but for the command).
const COMMENT_WIDTH: usize = 99;

/// `text` as `# ` comment lines of at most [`COMMENT_WIDTH`] characters, broken at spaces (a
/// longer word stays whole), the continuation lines indented by two.
fn comment(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if line.len() > 3 && line.len() + 1 + word.len() > COMMENT_WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#  ");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// The lines of `[section]` in TOML text: from its header to the next one.
fn section_lines<'a>(text: &'a str, section: &str) -> impl Iterator<Item = (usize, &'a str)> {
    let header = format!("[{section}]");
    text.lines()
        .enumerate()
        .skip_while(move |(_, l)| l.trim() != header)
        .skip(1)
        .take_while(|(_, l)| !l.trim_start().starts_with('['))
}

/// Whether `line` sets `key` (`key = value`, spaces and a trailing comment allowed).
fn sets(line: &str, key: &str) -> bool {
    line.split_once('=').is_some_and(|(k, _)| k.trim() == key)
}

/// The value of `key` in `[section]` of TOML text, without a trailing comment: for the plain
/// numbers and booleans of the knobs.
pub fn toml_value<'a>(text: &'a str, section: &str, key: &str) -> Option<&'a str> {
    section_lines(text, section)
        .find(|(_, l)| sets(l, key))
        .and_then(|(_, l)| l.split_once('='))
        .map(|(_, v)| v.split('#').next().unwrap_or(v).trim())
}

/// TOML text with the line that sets `key` in `[section]` replaced by `line`; `None` if there is
/// no such line.
pub fn set_toml_line(text: &str, section: &str, key: &str, line: &str) -> Option<String> {
    let (at, _) = section_lines(text, section).find(|(_, l)| sets(l, key))?;
    let mut out: Vec<&str> = text.lines().collect();
    out[at] = line;
    let mut joined = out.join("\n");
    if text.ends_with('\n') {
        joined.push('\n');
    }
    Some(joined)
}

/// The command line `args` (the program first) as a shell takes it back: the program's file
/// name, then each argument, single-quoted where it holds more than letters, digits and
/// `-_./=:,+@%`.
pub fn command_line<I, A>(args: I) -> String
where
    I: IntoIterator<Item = A>,
    A: AsRef<OsStr>,
{
    let mut args = args.into_iter();
    let program = args
        .next()
        .map(|p| {
            Path::new(p.as_ref())
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let quote = |word: String| {
        let plain = !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
        if plain {
            word
        } else {
            format!("'{}'", word.replace('\'', r"'\''"))
        }
    };
    std::iter::once(program)
        .chain(args.map(|a| quote(a.as_ref().to_string_lossy().into_owned())))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `YYYY-MM-DD HH:MM UTC` of `time`.
pub fn utc_date(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days: days since 1970-01-01 to a proleptic Gregorian date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// The base profile `profile` as `bin --profile PROFILE --check-config` prints it: every key, the
/// values this very binary runs with.
pub fn base_profile(bin: &Path, profile: &str) -> Result<String> {
    let out = Command::new(bin)
        .args(["--profile", profile, "--check-config"])
        .output()
        .map_err(|e| Error::new(format!("cannot run {}: {e}", bin.display())))?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "{} --profile {profile} --check-config failed ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8(out.stdout).map_err(|_| {
        Error::new(format!(
            "{} printed a configuration that is not UTF-8",
            bin.display()
        ))
    })
}

/// The load of every point, in words and as JSON.
fn load_of(cli: &Cli) -> (String, Value) {
    let text = format!(
        "resolve over {}, {} connections x {} in flight, {} client thread(s), {}, poll {}, {} \
         pools x {} PEs ({}), {} s warm-up and {} s measured per point",
        cli.transport.scheme(),
        cli.connections,
        cli.pipeline,
        cli.threads,
        match cli.rate {
            Some(r) => format!("open loop at {r} requests/s"),
            None => "closed loop".to_owned(),
        },
        poll_name(cli),
        cli.pools,
        cli.pool_elements,
        cli.policy.name(),
        cli.warmup,
        cli.sweep_duration()
    );
    let json = json!({
        "scenario": "resolve",
        "transport": cli.transport.scheme(),
        "connections": cli.connections,
        "pipeline": cli.pipeline,
        "threads": cli.threads,
        "rate": cli.rate,
        "poll": poll_name(cli),
        "pools": cli.pools,
        "pool_elements": cli.pool_elements,
        "policy": cli.policy.name(),
        "warmup_s": cli.warmup,
        "duration_s": cli.sweep_duration(),
    });
    (text, json)
}

/// `--poll` as on the command line.
fn poll_name(cli: &Cli) -> String {
    use clap::ValueEnum;
    cli.poll
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

/// Spawns `bin` with the base profile, `settings` (the workers as `--workers`, the other knobs in
/// the configuration file besides the bench's own room for the load) and runs the `resolve` load
/// of `cli` against it once.
fn measure(cli: &Cli, bin: &Path, kind: PointKind, settings: Settings) -> Point {
    let started = Instant::now();
    let mut point_cli = cli.clone();
    point_cli.scenario = ScenarioKind::Resolve;
    point_cli.spawn = true;
    point_cli.workers = settings.get(Knob::Workers) as usize;
    point_cli.duration = cli.sweep_duration();
    point_cli.quiet = true;
    let outcome = (|| {
        let config = app::spawn_config(&point_cli) + &settings.config_text();
        let target = Target::spawn(
            bin,
            point_cli.workers,
            &cli.profile,
            cli.transport,
            false,
            &config,
            None,
        )?;
        let summary = app::run_target(&point_cli, &target)?;
        drop(target);
        Ok::<_, Error>(Figures::of(&summary))
    })()
    .map_err(|e| e.to_string());
    Point {
        kind,
        settings,
        outcome,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Runs the sweep `cli` asks for; `command` is the command line, for the profile's comments.
/// With `--write-profile` the file is created first (so that a path that cannot be written fails
/// at once), written at the end, and removed if the sweep fails.
pub fn run(cli: &Cli, command: &str) -> Result<SweepReport> {
    cli.validate().map_err(Error::new)?;
    if let Some(path) = &cli.write_profile {
        fs::File::create(path)
            .map_err(|e| Error::new(format!("--write-profile {}: {e}", path.display())))?;
    }
    let swept = sweep(cli, command);
    if swept.is_err()
        && let Some(path) = &cli.write_profile
    {
        let _ = fs::remove_file(path);
    }
    swept
}

/// [`run`] once the profile file may be written.
fn sweep(cli: &Cli, command: &str) -> Result<SweepReport> {
    let started = Instant::now();
    let bin = match &cli.registrar_bin {
        Some(path) => path.clone(),
        None => target::default_registrar_bin()?,
    };
    let base_text = base_profile(&bin, &cli.profile)?;
    let base = Settings::from_toml(&base_text)?;
    let host = Host::this();
    let rule = Rule::for_rate(cli.rate);
    let budget = Duration::from_secs_f64(cli.budget);
    let cap = cli.points.unwrap_or(usize::MAX);
    let grid = single_knob_grid(base, host.cores);
    let note = |line: String| {
        if !cli.quiet {
            eprintln!("{line}");
        }
    };
    note(format!(
        "sweep: {} points around profile `{}` and their combination, budget {} s",
        grid.len(),
        cli.profile,
        cli.budget
    ));
    // The slowest point so far stands for the next: a point fits if it and the reruns of
    // --verify still end within the budget.
    let mut estimate =
        Duration::from_secs_f64(cli.warmup + cli.sweep_duration()) + FIRST_POINT_OVERHEAD;
    let reserve = if cli.verify { 2 } else { 0 };
    let mut points: Vec<Point> = Vec::new();
    let mut left_out = Vec::new();
    let mut try_point = |points: &mut Vec<Point>, kind: PointKind, settings: Settings| {
        let fits = started.elapsed() + estimate * (1 + reserve) <= budget;
        if kind != PointKind::Base && (points.len() >= cap || !fits) {
            left_out.push(settings.name(&base));
            return;
        }
        let point = measure(cli, &bin, kind, settings);
        estimate = estimate.max(Duration::from_secs_f64(point.seconds));
        note(format!(
            "sweep point {} {}: {} ({:.1} s)",
            points.len(),
            settings.name(&base),
            match &point.outcome {
                Ok(f) => format!("{:.0} ops/s, p99 {:.1} us", f.ops_per_s, f.p99_us),
                Err(e) => format!("failed: {e}"),
            },
            point.seconds
        ));
        points.push(point);
    };
    for (i, settings) in grid.iter().enumerate() {
        let kind = if i == 0 {
            PointKind::Base
        } else {
            PointKind::Knob
        };
        try_point(&mut points, kind, *settings);
        if let Err(e) = &points[0].outcome {
            return Err(Error::new(format!(
                "the base profile could not be measured: {e}"
            )));
        }
    }
    let base_figures = *points[0].figures().expect("the base was measured");
    if base_figures.ops == 0 {
        return Err(Error::new(
            "the base profile answered no resolution: nothing to compare",
        ));
    }
    // Each knob at the value that won among its own points and the base's; measured when that
    // changes more than one knob (one changed knob is a point measured already).
    let mut combination = base;
    for knob in Knob::ALL {
        let own = points.iter().enumerate().filter_map(|(i, p)| {
            let changes = p.settings.changes(&base);
            let own = changes.is_empty() || (changes.len() == 1 && changes[0].0 == knob);
            own.then_some((i, p.figures()?))
        });
        combination = combination.with(knob, points[rule.best(own)].settings.get(knob));
    }
    if combination.changes(&base).len() > 1 {
        try_point(&mut points, PointKind::Combination, combination);
    }
    let chosen = rule.best(
        points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p.figures()?))),
    );
    let verify = (cli.verify && chosen != 0).then(|| {
        note("sweep: verifying: the base, then the chosen point, once more".to_owned());
        Verification {
            base: measure(cli, &bin, PointKind::Verify, base),
            chosen: measure(cli, &bin, PointKind::Verify, points[chosen].settings),
        }
    });
    let (load, load_json) = load_of(cli);
    let mut report = SweepReport {
        host,
        registrar_bin: bin,
        profile: cli.profile.clone(),
        load,
        load_json,
        rule,
        base,
        points,
        left_out,
        chosen,
        verify,
        budget_s: cli.budget,
        elapsed_s: started.elapsed().as_secs_f64(),
        written: None,
    };
    if let Some(path) = &cli.write_profile {
        let text = report.profile_file(&base_text, command, &utc_date(SystemTime::now()))?;
        fs::write(path, text)
            .map_err(|e| Error::new(format!("--write-profile {}: {e}", path.display())))?;
        report.written = Some(path.clone());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = "# rserpool-registrar: the configuration is valid.\n\
                           # Layers: profile `default`.\n\n\
                           [registrar]\n# id is not set\nworkers = 0\ndriver = \"auto\"\n\
                           pin_workers = false\nbusy_poll_us = 0\n\n\
                           [io]\nring_entries = 256\nbuffer_count = 256\nmax_batch = 64 # set by x\n";

    fn figures(ops_per_s: f64, p99_us: f64) -> Figures {
        Figures {
            ops: 1000,
            ops_per_s,
            errors: 0,
            p50_us: p99_us / 2.0,
            p99_us,
            p99_9_us: p99_us * 2.0,
        }
    }

    #[test]
    fn the_grid_varies_one_knob_at_a_time_around_the_base() {
        let base = Settings::from_toml(PROFILE).unwrap();
        assert_eq!(base, Settings([64, 256, 0, 0, 0]));
        let grid = single_knob_grid(base, 2);
        let names: Vec<String> = grid.iter().map(|s| s.name(&base)).collect();
        assert_eq!(
            names,
            [
                "base",
                "io.max_batch=16",
                "io.ring_entries=64",
                "registrar.busy_poll_us=50",
                "registrar.workers=1",
                "registrar.pin_workers=true",
                "io.max_batch=256",
                "io.ring_entries=1024",
            ]
        );
        // Workers 0 is every core: on 8 cores 1 and 4 are tried, not 8 again.
        assert_eq!(Knob::Workers.alternatives(0, 8), [1, 4]);
        assert_eq!(Knob::Workers.alternatives(2, 8), [1, 4, 8]);
        assert_eq!(Knob::RingEntries.alternatives(32_768, 2), [8192]);
        assert_eq!(Knob::BusyPollUs.alternatives(50, 2), [0, 200]);
        assert_eq!(Knob::MaxBatch.alternatives(1, 2), [4]);
    }

    #[test]
    fn the_rule_keeps_the_base_unless_a_point_beats_it() {
        let base = figures(100.0, 100.0);
        let faster_but_late = figures(150.0, 121.0);
        let faster = figures(110.0, 119.0);
        let points = [base, faster_but_late, faster];
        let all = || points.iter().enumerate();
        assert_eq!(Rule::Closed.best(all()), 2);
        // Open loop: the lowest p99, whatever the throughput.
        assert_eq!(Rule::Open.best(all()), 0);
        let lower = figures(90.0, 80.0);
        assert_eq!(Rule::Open.best([base, lower].iter().enumerate()), 1);
        let failing = Figures { errors: 3, ..lower };
        assert_eq!(Rule::Open.best([base, failing].iter().enumerate()), 0);
        assert!(Rule::Closed.beats(&faster, &base) && !Rule::Closed.beats(&base, &base));
    }

    #[test]
    fn the_profile_gets_the_chosen_keys_and_the_figures() {
        let base = Settings::from_toml(PROFILE).unwrap();
        let point = |kind, settings, f| Point {
            kind,
            settings,
            outcome: Ok(f),
            seconds: 3.0,
        };
        let chosen = base.with(Knob::MaxBatch, 256).with(Knob::PinWorkers, 1);
        let report = SweepReport {
            host: Host {
                cpu: "Test CPU".into(),
                cores: 2,
            },
            registrar_bin: PathBuf::from("rserpool-registrar"),
            profile: "default".into(),
            load: "resolve".into(),
            load_json: json!({}),
            rule: Rule::Closed,
            base,
            points: vec![
                point(PointKind::Base, base, figures(1000.0, 100.0)),
                point(PointKind::Combination, chosen, figures(1250.0, 90.0)),
            ],
            left_out: vec!["io.ring_entries=1024".into()],
            chosen: 1,
            verify: None,
            budget_s: 60.0,
            elapsed_s: 7.0,
            written: None,
        };
        let text = report
            .profile_file(
                PROFILE,
                "rserpool-bench sweep\n--verify",
                "2026-12-07 18:00 UTC",
            )
            .unwrap();
        for line in [
            "# Host: Test CPU, 2 usable cores",
            "# Command: rserpool-bench sweep\n# --verify\n",
            "# Measured in the same run: 1.250 x the base's ops/s, 0.900 x its p99.",
            "max_batch = 256 # sweep: profile `default` has 64\n",
            "pin_workers = true # sweep: profile `default` has false\n",
            "busy_poll_us = 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in:\n{text}");
        }
        assert!(!text.contains("the configuration is valid"), "{text}");
        assert_eq!(Settings::from_toml(&text).unwrap(), chosen);
        let table = report.text();
        assert!(table.contains(" *  1 "), "{table}");
        assert!(
            table.contains("1 left out: io.ring_entries=1024"),
            "{table}"
        );

        // A choice the reruns do not confirm is reported, and the base is written instead.
        let report = SweepReport {
            verify: Some(Verification {
                base: point(PointKind::Verify, base, figures(1000.0, 100.0)),
                chosen: point(PointKind::Verify, chosen, figures(990.0, 90.0)),
            }),
            ..report
        };
        assert_eq!(report.adopted(), base);
        let text = report.profile_file(PROFILE, "x", "y").unwrap();
        assert!(
            text.contains("the chosen point no longer beats the base"),
            "{text}"
        );
        assert!(text.contains("is not adopted"), "{text}");
        assert_eq!(Settings::from_toml(&text).unwrap(), base);
        assert!(!text.contains("# sweep: "), "{text}");
        let json = report.to_json();
        assert_eq!(json["adopted"], "base");
        assert_eq!(json["verify"]["holds"], false);
    }

    #[test]
    fn helpers_read_the_host_the_date_and_the_command() {
        let info = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: x\n";
        assert_eq!(cpu_model(info), Some("Intel(R) Xeon(R) Processor"));
        assert_eq!(cpu_model("processor : 0\n"), None);
        assert_eq!(utc_date(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_660);
        assert_eq!(utc_date(leap), "2000-02-29 01:01 UTC");
        assert_eq!(
            command_line(["/x/rserpool-bench", "sweep", "--budget", "1 m", "it's"]),
            r"rserpool-bench sweep --budget '1 m' 'it'\''s'"
        );
        assert_eq!(toml_value(PROFILE, "io", "max_batch"), Some("64"));
        assert_eq!(toml_value(PROFILE, "registrar", "max_batch"), None);
        assert_eq!(set_toml_line(PROFILE, "io", "absent", "x"), None);
        let long = "word ".repeat(30);
        let wrapped = comment(&long);
        assert_eq!(wrapped.lines().count(), 2, "{wrapped}");
        assert!(
            wrapped.lines().all(|l| l.len() <= COMMENT_WIDTH),
            "{wrapped}"
        );
        assert!(
            wrapped.starts_with("# word") && wrapped.contains("\n#   word"),
            "{wrapped}"
        );
    }
}
