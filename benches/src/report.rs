//! Results for people and programs: the text summary (with a small latency histogram), the JSON
//! object (with the per-second series), the CSV rows and the HDR interval log of `--csv` and
//! `--hdr-log`, the whole-run totals in a registrar's terms, the comparison of a scenario with the
//! echo ceiling, the two op streams of a churn run, the times of a resync run (and of its
//! restart), and those of a takeover run.

use std::fmt::Write as _;
use std::io;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use serde_json::{Value, json};

pub use crate::chaos::ChaosReport;
use crate::hostile::HostileReport;
use crate::load::Outcome;
use crate::series::Timeline;
use crate::workload::{Totals, cause_name};

/// The columns of `--csv`, in order: one row per run (two for `--compare-echo` and `churn`).
/// Latencies are in microseconds; `rate` is empty in the closed loop.
pub const CSV_COLUMNS: [&str; 22] = [
    "scenario",
    "target",
    "connections",
    "pipeline",
    "threads",
    "rate",
    "duration_s",
    "ops",
    "ops_per_s",
    "errors",
    "rejections",
    "keep_alives",
    "mean_request_bytes",
    "mean_reply_bytes",
    "latency_min_us",
    "latency_mean_us",
    "latency_stdev_us",
    "latency_p50_us",
    "latency_p90_us",
    "latency_p99_us",
    "latency_p99_9_us",
    "latency_max_us",
];

/// The most buckets of the text summary's latency histogram.
const MAX_BUCKETS: usize = 12;
/// The width of the fullest bucket's bar.
const BAR: u64 = 40;

/// Latency statistics in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
}

impl Latency {
    /// The statistics of a histogram of nanoseconds (all 0 when it is empty).
    pub fn from_nanos(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            min: us(h.min()),
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
            stdev: h.stdev() / 1000.0,
        }
    }
}

/// One bar of the text summary's latency histogram: ops of `from_ns` up to `to_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// The bucket's lower bound in nanoseconds (inclusive).
    pub from_ns: u64,
    /// Its upper bound in nanoseconds (exclusive).
    pub to_ns: u64,
    /// Ops whose latency falls in it.
    pub count: u64,
}

/// The histogram `h` of nanoseconds in a few log-spaced buckets from its smallest to its largest
/// value: bounds of 1, 2 and 5 times a power of ten, or of powers of ten when those would make
/// more than 12 buckets. Empty for an empty histogram.
pub fn latency_buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    let (min, max) = (h.min(), h.max());
    let bounds = |steps: &[u64]| -> Vec<u64> {
        let mut all = Vec::new();
        let mut decade = 1u64;
        'out: loop {
            for &m in steps {
                let b = m.saturating_mul(decade);
                all.push(b);
                if b > max || b == u64::MAX {
                    break 'out;
                }
            }
            decade = decade.saturating_mul(10);
        }
        let first = all.iter().rposition(|&b| b <= min).unwrap_or(0);
        all.split_off(first)
    };
    let mut edges = bounds(&[1, 2, 5]);
    if edges.len() > MAX_BUCKETS + 1 {
        edges = bounds(&[1]);
    }
    let mut buckets: Vec<Bucket> = edges
        .windows(2)
        .map(|w| Bucket {
            from_ns: w[0],
            to_ns: w[1],
            count: 0,
        })
        .collect();
    for v in h.iter_recorded() {
        let value = v.value_iterated_to();
        let k = buckets
            .iter()
            .position(|b| value < b.to_ns)
            .unwrap_or(buckets.len() - 1);
        buckets[k].count += v.count_at_value();
    }
    buckets
}

/// A latency bound for people: `500 ns`, `20 us`, `5 ms`, `2 s`.
fn bound(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{} us", ns / 1_000),
        1_000_000..1_000_000_000 => format!("{} ms", ns / 1_000_000),
        _ => format!("{} s", ns / 1_000_000_000),
    }
}

/// One CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// One run, ready to print.
#[derive(Clone, Debug)]
pub struct Summary {
    /// `echo`, `resolve` or `register`.
    pub scenario: String,
    /// The server's URL, with "(spawned)" or "(built-in)" where it applies.
    pub target: String,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection at most.
    pub pipeline: usize,
    /// Client threads.
    pub threads: usize,
    /// Open-loop rate, requests per second.
    pub rate: Option<f64>,
    /// Measured seconds.
    pub duration_s: f64,
    /// Ops in the measured window.
    pub ops: u64,
    /// Ops per second.
    pub ops_per_s: f64,
    /// Errors over the whole run.
    pub errors: u64,
    /// Rejected registrations.
    pub rejections: u64,
    /// Keep-alives answered by the timed connections (the measured ones for `keepalive`).
    pub keep_alives: u64,
    /// Mean request size in bytes.
    pub mean_request_bytes: f64,
    /// Mean reply size in bytes.
    pub mean_reply_bytes: f64,
    /// Per-request latency (`keepalive`: from reading a keep-alive to sending its ack).
    pub latency: Latency,
    /// What the timed connections sent and were answered over the whole run.
    pub totals: Totals,
    /// What the setup connections (the PEs registered before the timed phase) sent and were
    /// answered, when there were any.
    pub setup: Option<Totals>,
    /// The `keepalive` scenario's population and the registrar's view.
    pub keep_alive: Option<KeepAliveInfo>,
    /// Rejected registrations by error cause, in the measured window.
    pub refusals: Vec<(u16, u64)>,
    /// `register --population` and `storm`: the population, its tenths and the registrar's
    /// memory.
    pub population: Option<PopulationInfo>,
    /// Every op's latency in nanoseconds.
    pub histogram: Histogram<u64>,
    /// Ops and latency per second of the measured window, and when it began.
    pub timeline: Timeline,
}

/// A population run (`register --population`, `storm`): what was registered, how long it took,
/// the rate per tenth, and a spawned registrar's memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PopulationInfo {
    /// New PEs to register.
    pub population: u64,
    /// Pools they go to.
    pub pools: usize,
    /// PEs per pool at most (`--pool-elements`).
    pub pool_elements: usize,
    /// The PEs' policy (`--policy`).
    pub policy: String,
    /// Whether each association wrote all its registrations at once (`storm`).
    pub all_at_once: bool,
    /// Registrations answered (accepted or refused).
    pub answered: u64,
    /// Seconds from the first write to the last answer, or to the end of the time allowed.
    pub seconds: f64,
    /// Whether every registration was answered in time.
    pub completed: bool,
    /// The option that bounded the time, as in reports: `--duration 60 s`.
    pub limit: String,
    /// Per tenth of the population: (its registrations, seconds), `None` when not completed.
    pub bands: Vec<(u64, Option<f64>)>,
    /// A spawned registrar's VmRSS in bytes before the first registration and after the last
    /// answer (and a second to settle).
    pub rss: Option<(u64, u64)>,
    /// A spawned registrar's PE count (`rserpool_pool_elements`) then.
    pub registrar_pes: Option<u64>,
}

impl PopulationInfo {
    /// Registrations not answered.
    pub fn unanswered(&self) -> u64 {
        self.population.saturating_sub(self.answered)
    }

    /// How the run ended.
    pub fn ended(&self) -> String {
        if self.completed {
            "all answered".to_owned()
        } else {
            format!("{} ran out", self.limit)
        }
    }

    /// The registrar's RSS growth per accepted registration, in bytes.
    pub fn rss_per_pe(&self, accepted: u64) -> Option<f64> {
        self.rss
            .filter(|_| accepted > 0)
            .map(|(before, after)| (after as f64 - before as f64) / accepted as f64)
    }

    /// Registrations per second of each tenth.
    pub fn band_rates(&self) -> Vec<Option<f64>> {
        self.bands
            .iter()
            .map(|&(pes, seconds)| seconds.map(|s| pes as f64 / s.max(1e-9)))
            .collect()
    }
}

/// The population of a `keepalive` run and what the registrar said it sent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KeepAliveInfo {
    /// PEs registered.
    pub population: usize,
    /// The registrar's keep-alive interval, when this run configured it (`--spawn`).
    pub interval_ms: Option<u64>,
    /// ENDPOINT_KEEP_ALIVEs the registrar counted as sent in the measured window, when its
    /// metrics were known.
    pub registrar_sent: Option<u64>,
}

impl KeepAliveInfo {
    /// The keep-alive rate the interval implies: the population over the interval (the registrar
    /// jitters each interval by ±12.5 % and starts it at the ack, so a window sees about this).
    pub fn expected_per_s(&self) -> Option<f64> {
        self.interval_ms
            .map(|ms| self.population as f64 * 1000.0 / ms.max(1) as f64)
    }
}

/// Refusals by cause as a JSON object: `{"0x0006": n}`.
fn refusals_json(refusals: &[(u16, u64)]) -> Value {
    refusals
        .iter()
        .map(|(code, n)| (format!("{code:#06x}"), json!(n)))
        .collect::<serde_json::Map<String, Value>>()
        .into()
}

/// [`Totals`] as a JSON object.
fn totals_json(t: &Totals) -> Value {
    json!({
        "requests": t.requests,
        "registrations_accepted": t.registrations_accepted,
        "registrations_rejected": t.registrations_rejected,
        "deregistrations": t.deregistrations,
        "resolutions_found": t.resolutions_found,
        "resolutions_failed": t.resolutions_failed,
        "keep_alive_acks": t.keep_alive_acks,
    })
}

impl Summary {
    /// A summary of `outcome`; the caller names scenario and target and gives the load shape.
    pub fn new(
        scenario: &str,
        target: String,
        (connections, pipeline, threads): (usize, usize, usize),
        rate: Option<f64>,
        outcome: &Outcome,
    ) -> Self {
        let s = &outcome.stats;
        Self {
            scenario: scenario.to_owned(),
            target,
            connections,
            pipeline,
            threads,
            rate,
            duration_s: outcome.elapsed.as_secs_f64(),
            ops: s.ops,
            ops_per_s: outcome.ops_per_sec(),
            errors: s.errors,
            rejections: s.rejections,
            keep_alives: s.totals.keep_alive_acks,
            mean_request_bytes: s.mean_request_bytes(),
            mean_reply_bytes: s.mean_reply_bytes(),
            latency: Latency::from_nanos(&s.histogram),
            totals: s.totals,
            setup: None,
            keep_alive: None,
            refusals: s.refusals.iter().map(|(c, n)| (*c, *n)).collect(),
            population: None,
            histogram: s.histogram.clone(),
            timeline: outcome.timeline.clone(),
        }
    }

    /// The JSON object.
    pub fn to_json(&self) -> Value {
        let l = &self.latency;
        let keep_alive = self.keep_alive.map(|k| {
            json!({
                "population": k.population,
                "interval_ms": k.interval_ms,
                "expected_per_s": k.expected_per_s(),
                "registrar_sent": k.registrar_sent,
            })
        });
        json!({
            "scenario": self.scenario,
            "target": self.target,
            "connections": self.connections,
            "pipeline": self.pipeline,
            "threads": self.threads,
            "rate": self.rate,
            "duration_s": self.duration_s,
            "ops": self.ops,
            "ops_per_s": self.ops_per_s,
            "errors": self.errors,
            "rejections": self.rejections,
            "keep_alives": self.keep_alives,
            "mean_request_bytes": self.mean_request_bytes,
            "mean_reply_bytes": self.mean_reply_bytes,
            "latency_us": {
                "min": l.min,
                "stdev": l.stdev,
                "p50": l.p50,
                "p90": l.p90,
                "p99": l.p99,
                "p99_9": l.p99_9,
                "max": l.max,
                "mean": l.mean,
            },
            "totals": totals_json(&self.totals),
            "setup": self.setup.as_ref().map(totals_json),
            "keep_alive": keep_alive,
            "refusals": refusals_json(&self.refusals),
            "population": self.population.as_ref().map(|p| self.population_json(p)),
            "per_second": self.timeline.seconds.iter().map(|s| json!({
                "t": s.t,
                "ops": s.ops,
                "p50_us": s.p50_us,
                "p99_us": s.p99_us,
            })).collect::<Vec<_>>(),
        })
    }

    /// The CSV row, fields as [`CSV_COLUMNS`] names them, without a line break.
    pub fn csv_row(&self) -> String {
        let l = &self.latency;
        let rate = self.rate.map_or_else(String::new, |r| r.to_string());
        let mut fields = vec![
            csv_field(&self.scenario),
            csv_field(&self.target),
            self.connections.to_string(),
            self.pipeline.to_string(),
            self.threads.to_string(),
            rate,
            format!("{:.3}", self.duration_s),
            self.ops.to_string(),
            format!("{:.3}", self.ops_per_s),
            self.errors.to_string(),
            self.rejections.to_string(),
            self.keep_alives.to_string(),
            format!("{:.3}", self.mean_request_bytes),
            format!("{:.3}", self.mean_reply_bytes),
        ];
        fields.extend(
            [l.min, l.mean, l.stdev, l.p50, l.p90, l.p99, l.p99_9, l.max]
                .map(|us| format!("{us:.3}")),
        );
        fields.join(",")
    }

    /// The lines of the latency histogram, a bar per bucket.
    fn histogram_text(&self, s: &mut String) {
        let buckets = latency_buckets(&self.histogram);
        let most = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
        for (k, b) in buckets.iter().enumerate() {
            let bar = if b.count == 0 {
                0
            } else {
                (b.count * BAR).div_ceil(most)
            };
            let _ = writeln!(
                s,
                "  {:<10}  {:>6} - {:<6} {:>12}  {}",
                if k == 0 { "histogram" } else { "" },
                bound(b.from_ns),
                bound(b.to_ns),
                b.count,
                "#".repeat(bar as usize)
            );
        }
    }

    fn population_json(&self, p: &PopulationInfo) -> Value {
        let bands: Vec<Value> = p
            .bands
            .iter()
            .zip(p.band_rates())
            .enumerate()
            .map(|(k, (&(pes, seconds), rate))| {
                json!({
                    "from_percent": k * 10,
                    "to_percent": (k + 1) * 10,
                    "pes": pes,
                    "seconds": seconds,
                    "per_s": rate,
                })
            })
            .collect();
        let rss = p.rss.map(|(before, after)| {
            json!({
                "before_bytes": before,
                "after_bytes": after,
                "growth_bytes": after as i64 - before as i64,
                "per_pe_bytes": p.rss_per_pe(self.ops),
            })
        });
        json!({
            "population": p.population,
            "pools": p.pools,
            "pool_elements": p.pool_elements,
            "policy": p.policy,
            "all_at_once": p.all_at_once,
            "answered": p.answered,
            "unanswered": p.unanswered(),
            "seconds": p.seconds,
            "completed": p.completed,
            "ended": p.ended(),
            "bands": bands,
            "rss": rss,
            "registrar_pes": p.registrar_pes,
        })
    }

    /// The lines of a population run.
    fn population_text(&self, p: &PopulationInfo, s: &mut String) {
        let _ = writeln!(
            s,
            "  population  {} PEs in {} pools of up to {} (policy {}): {} answered, {} refused, {} \
             unanswered in {:.3} s ({})",
            p.population,
            p.pools,
            p.pool_elements,
            p.policy,
            p.answered,
            self.rejections,
            p.unanswered(),
            p.seconds,
            p.ended()
        );
        let tenths: Vec<String> = p
            .band_rates()
            .iter()
            .enumerate()
            .map(|(k, rate)| {
                let rate = rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
                format!("{}-{}% {rate}", k * 10, (k + 1) * 10)
            })
            .collect();
        let _ = writeln!(
            s,
            "  by tenth    registrations/s while the registrar's PE count (the pools' fill) went \
             through each tenth:\n              {}",
            tenths.join("  ")
        );
        if let Some((before, after)) = p.rss {
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            let _ = write!(
                s,
                "  registrar   VmRSS {:.1} MiB before, {:.1} MiB after: {:+.0} bytes per \
                 registered PE",
                mib(before),
                mib(after),
                p.rss_per_pe(self.ops).unwrap_or(0.0)
            );
            if let Some(pes) = p.registrar_pes {
                let _ = write!(s, "; it holds {pes} PEs");
            }
            s.push('\n');
        }
    }

    /// The text summary, several lines.
    pub fn text(&self) -> String {
        let l = &self.latency;
        let mut s = String::new();
        let mode = self.rate.map_or_else(
            || "closed loop".to_owned(),
            |r| format!("open loop at {r:.0}/s"),
        );
        let _ = match (&self.keep_alive, &self.population) {
            (_, Some(p)) if p.all_at_once => writeln!(
                s,
                "{} against {}: {} associations, all registrations written at once, {} client \
                 thread(s)",
                self.scenario, self.target, self.connections, self.threads
            ),
            (_, Some(_)) => writeln!(
                s,
                "{} against {}: {} connections x {} in flight, {} client thread(s), new PEs",
                self.scenario, self.target, self.connections, self.pipeline, self.threads
            ),
            (Some(k), None) => writeln!(
                s,
                "{} against {}: {} PEs over {} associations, 1 client thread, {:.1} s",
                self.scenario, self.target, k.population, self.connections, self.duration_s
            ),
            (None, None) => writeln!(
                s,
                "{} against {}: {} connections x {} in flight, {} client thread(s), {mode}, {:.1} s",
                self.scenario,
                self.target,
                self.connections,
                self.pipeline,
                self.threads,
                self.duration_s
            ),
        };
        let _ = writeln!(
            s,
            "  ops/s       {:.0}  ({} ops, {} errors, {} rejections, {} keep-alives answered)",
            self.ops_per_s, self.ops, self.errors, self.rejections, self.keep_alives
        );
        let _ = writeln!(
            s,
            "  bytes       request {:.1}, reply {:.1}",
            self.mean_request_bytes, self.mean_reply_bytes
        );
        let _ = writeln!(
            s,
            "  latency us  min {:.1}  mean {:.1}  stdev {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  \
             p99.9 {:.1}  max {:.1}",
            l.min, l.mean, l.stdev, l.p50, l.p90, l.p99, l.p99_9, l.max
        );
        self.histogram_text(&mut s);
        if !self.refusals.is_empty() {
            let causes: Vec<String> = self
                .refusals
                .iter()
                .map(|(code, n)| format!("{code:#06x} {} {n}", cause_name(*code)))
                .collect();
            let _ = writeln!(s, "  refusals    by cause: {}", causes.join(", "));
        }
        if let Some(p) = &self.population {
            self.population_text(p, &mut s);
        }
        if let Some(k) = self.keep_alive {
            s.push_str("  registrar  ");
            match (k.interval_ms, k.expected_per_s()) {
                (Some(ms), Some(rate)) => {
                    let _ = write!(s, " keep-alive interval {ms} ms (about {rate:.0}/s)");
                }
                _ => s.push_str(" keep-alive interval not set by this run"),
            }
            if let Some(sent) = k.registrar_sent {
                let _ = write!(s, ", sent {sent} keep-alives in the window");
            }
            s.push('\n');
        }
        let t = &self.totals;
        let _ = writeln!(
            s,
            "  whole run   {} requests; answers: {} registrations accepted, {} rejected, {} \
             deregistrations, {} resolutions found, {} failed; {} keep-alive acks",
            t.requests,
            t.registrations_accepted,
            t.registrations_rejected,
            t.deregistrations,
            t.resolutions_found,
            t.resolutions_failed,
            t.keep_alive_acks
        );
        if let Some(t) = &self.setup {
            let _ = writeln!(
                s,
                "  setup       {} registrations accepted, {} deregistrations, {} keep-alive acks",
                t.registrations_accepted, t.deregistrations, t.keep_alive_acks
            );
        }
        s
    }
}

/// A `resync` run: a registrar holding the population brings a new one in sync over ENRP.
#[derive(Clone, Debug, PartialEq)]
pub struct ResyncSummary {
    /// The first registrar (the mentor) by its ASAP and ENRP URLs.
    pub mentor: String,
    /// The second registrar (started empty) by its ENRP URL.
    pub newcomer: String,
    /// Worker threads of each registrar.
    pub workers: usize,
    /// `rfc` or `ng`: the wire format of the ENRP endpoints.
    pub enrp_generation: String,
    /// The most PEs per handle table page (`enrp.max_pes_per_table_response`).
    pub page: usize,
    /// PEs registered at the mentor.
    pub population: usize,
    /// Pools they are spread over.
    pub pools: usize,
    /// Associations they were registered over.
    pub connections: usize,
    /// Seconds the registration of the population at the mentor took.
    pub register_s: f64,
    /// Seconds from starting the second registrar's process to its `listening` lines.
    pub start_s: f64,
    /// Seconds from starting the second registrar's process to its metrics showing the whole
    /// population (the figure; within one poll of the metrics).
    pub sync_s: f64,
    /// ENRP_HANDLE_TABLE_RESPONSEs the mentor counted as sent meanwhile (the pages).
    pub pages: u64,
    /// Seconds the mentor's workers were busy meanwhile (`rserpool_worker_busy_seconds_total`).
    pub mentor_busy_s: f64,
    /// Seconds the new registrar's workers were busy from its start to the sync.
    pub newcomer_busy_s: f64,
    /// With `--restart`: `same-id` or `new-id`, and the seconds from the restarted process's
    /// start to its metrics showing the whole population again.
    pub restart: Option<(String, f64)>,
}

impl ResyncSummary {
    /// PEs brought over per second, process start included.
    pub fn pes_per_s(&self) -> f64 {
        self.population as f64 / self.sync_s.max(f64::MIN_POSITIVE)
    }

    /// The JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "scenario": "resync",
            "mentor": self.mentor,
            "newcomer": self.newcomer,
            "workers": self.workers,
            "enrp_generation": self.enrp_generation,
            "page": self.page,
            "population": self.population,
            "pools": self.pools,
            "connections": self.connections,
            "register_s": self.register_s,
            "start_s": self.start_s,
            "sync_s": self.sync_s,
            "sync_after_start_s": self.sync_s - self.start_s,
            "pes_per_s": self.pes_per_s(),
            "pages": self.pages,
            "mentor_busy_s": self.mentor_busy_s,
            "newcomer_busy_s": self.newcomer_busy_s,
            "restart": self.restart.as_ref().map(|(kind, _)| kind),
            "restart_s": self.restart.as_ref().map(|(_, s)| s),
        })
    }

    /// The text summary, several lines.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "resync from {} to {} ({} workers each), ENRP {}, pages of at most {} PEs",
            self.mentor, self.newcomer, self.workers, self.enrp_generation, self.page
        );
        let _ = writeln!(
            s,
            "  register    {} PEs in {} pools over {} associations in {:.2} s ({:.0}/s)",
            self.population,
            self.pools,
            self.connections,
            self.register_s,
            self.population as f64 / self.register_s.max(f64::MIN_POSITIVE)
        );
        let _ = writeln!(
            s,
            "  sync        {:.3} s from the new registrar's start to all {} PEs ({:.3} s after its \
             listening lines, {:.0} PEs/s)",
            self.sync_s,
            self.population,
            self.sync_s - self.start_s,
            self.pes_per_s()
        );
        let per_page = self.population as f64 / self.pages.max(1) as f64;
        let _ = writeln!(
            s,
            "  pages       {} handle table responses sent by the mentor ({per_page:.0} PEs each on \
             average)",
            self.pages
        );
        let _ = writeln!(
            s,
            "  busy        workers of the mentor {:.3} s, of the new registrar {:.3} s",
            self.mentor_busy_s, self.newcomer_busy_s
        );
        if let Some((kind, seconds)) = &self.restart {
            let _ = writeln!(
                s,
                "  restart     {seconds:.3} s from the restarted new registrar's start ({kind}, \
                 SIGKILL and the same command line) to all {} PEs",
                self.population
            );
        }
        s
    }
}

/// A `takeover` run: three registrars, the PEs' home killed or stopped, the survivors taking
/// its PEs over.
#[derive(Clone, Debug, PartialEq)]
pub struct TakeoverSummary {
    /// The registrars by PR ID, ASAP and ENRP URL; the first is the PEs' home, the one faulted.
    pub registrars: Vec<(u64, String)>,
    /// `--profile`.
    pub profile: String,
    /// `--workers` of each registrar; `None`: the profile's (one per core).
    pub workers: Option<usize>,
    /// `rfc` or `ng`: the wire format of the ENRP endpoints.
    pub enrp_generation: String,
    /// The signal sent: `SIGKILL` or `SIGSTOP`.
    pub signal: String,
    /// PEs registered at the first registrar.
    pub population: usize,
    /// Pools they are spread over.
    pub pools: usize,
    /// Associations they were registered over.
    pub connections: usize,
    /// Seconds the registration at the first registrar took.
    pub register_s: f64,
    /// Seconds from the end of the registration to both others holding every PE.
    pub replicate_s: f64,
    /// The profile's `enrp.heartbeat_interval_ms`, `enrp.max_time_last_heard_ms` and
    /// `enrp.max_time_no_response_ms`.
    pub timers_ms: (u64, u64, u64),
    /// Seconds from the signal to the last survivor resolving every PE with a survivor as its
    /// home PR (the figure; within one round of resolutions).
    pub takeover_s: f64,
    /// PEs by their home PR ID at the last survivor's final round.
    pub homes: Vec<(u64, usize)>,
    /// Each survivor's PR ID and its `rserpool_enrp_takeovers_total` at the end.
    pub takeovers: Vec<(u64, u64)>,
}

impl TakeoverSummary {
    /// The bound the profile sets: MAX-TIME-LAST-HEARD + MAX-TIME-NO-RESPONSE + a heartbeat, in
    /// seconds.
    pub fn bound_s(&self) -> f64 {
        let (heartbeat, last_heard, no_response) = self.timers_ms;
        (heartbeat + last_heard + no_response) as f64 / 1000.0
    }

    /// The JSON object.
    pub fn to_json(&self) -> Value {
        let (heartbeat, last_heard, no_response) = self.timers_ms;
        let by_id = |pairs: &[(u64, u64)]| -> serde_json::Map<String, Value> {
            pairs
                .iter()
                .map(|(id, n)| (id.to_string(), json!(n)))
                .collect()
        };
        let homes: Vec<(u64, u64)> = self.homes.iter().map(|&(id, n)| (id, n as u64)).collect();
        json!({
            "scenario": "takeover",
            "registrars": self.registrars.iter().map(|(id, url)| json!({"id": id, "url": url})).collect::<Vec<_>>(),
            "profile": self.profile,
            "workers": self.workers,
            "enrp_generation": self.enrp_generation,
            "signal": self.signal,
            "population": self.population,
            "pools": self.pools,
            "connections": self.connections,
            "register_s": self.register_s,
            "replicate_s": self.replicate_s,
            "timers_ms": {
                "heartbeat_interval": heartbeat,
                "max_time_last_heard": last_heard,
                "max_time_no_response": no_response,
            },
            "bound_s": self.bound_s(),
            "takeover_s": self.takeover_s,
            "homes": by_id(&homes),
            "takeovers": by_id(&self.takeovers),
        })
    }

    /// The text summary, several lines.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let workers = self
            .workers
            .map_or_else(|| "the profile's".to_owned(), |w| w.to_string());
        let _ = writeln!(
            s,
            "takeover on profile {}, {workers} workers each, ENRP {}, {} to the PEs' home",
            self.profile, self.enrp_generation, self.signal
        );
        for (n, (id, url)) in self.registrars.iter().enumerate() {
            let role = if n == 0 { "home" } else { "survivor" };
            let _ = writeln!(s, "  PR {id:<9} {role:<8} {url}");
        }
        let _ = writeln!(
            s,
            "  register    {} PEs in {} pools over {} associations in {:.2} s; at both others \
             {:.2} s later",
            self.population, self.pools, self.connections, self.register_s, self.replicate_s
        );
        let (heartbeat, last_heard, no_response) = self.timers_ms;
        let _ = writeln!(
            s,
            "  takeover    {:.3} s from {} to every PE homed at a survivor at both survivors \
             (bound {:.3} s: max_time_last_heard {last_heard} + max_time_no_response \
             {no_response} + heartbeat {heartbeat} ms)",
            self.takeover_s,
            self.signal,
            self.bound_s()
        );
        let homes: Vec<String> = self
            .homes
            .iter()
            .map(|(id, n)| format!("PR {id}: {n} PEs"))
            .collect();
        let _ = writeln!(s, "  homes       {}", homes.join(", "));
        let takeovers: Vec<String> = self
            .takeovers
            .iter()
            .map(|(id, n)| format!("PR {id}: {n}"))
            .collect();
        let _ = writeln!(
            s,
            "  takeovers   rserpool_enrp_takeovers_total {}",
            takeovers.join(", ")
        );
        s
    }
}

/// A `subscribe` run: subscriptions, the changes made to their pools and the pushes that
/// reported them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubscribeSummary {
    /// Pools watched (one PE each).
    pub pools: usize,
    /// Subscriber associations.
    pub connections: usize,
    /// Subscriptions asked for.
    pub subscribers: usize,
    /// Answered with the A bit.
    pub accepted: usize,
    /// Answered without it (limits, or a registrar that pushes nothing).
    pub refused: usize,
    /// Changes per second asked for.
    pub rate: f64,
    /// Changes sent (warm-up included).
    pub changes: usize,
    /// Seconds measured.
    pub duration_s: f64,
    /// Pushes received, warm-up included.
    pub pushes: u64,
    /// Pushes timed (the first report of a change, after the warm-up).
    pub measured_pushes: u64,
    /// Subscriptions whose last push missed their pool's last change: must be 0.
    pub stale: usize,
    /// Push latency from the change's send to the push's arrival.
    pub latency: Latency,
}

impl SubscribeSummary {
    /// Sets the latency statistics from a histogram of nanoseconds.
    pub fn fill_latency(&mut self, h: &Histogram<u64>) {
        self.latency = Latency::from_nanos(h);
    }

    /// Pushes timed per measured second.
    pub fn pushes_per_s(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.measured_pushes as f64 / self.duration_s
        } else {
            0.0
        }
    }

    /// The JSON object.
    pub fn to_json(&self) -> Value {
        let l = &self.latency;
        json!({
            "scenario": "subscribe",
            "pools": self.pools,
            "connections": self.connections,
            "subscribers": self.subscribers,
            "accepted": self.accepted,
            "refused": self.refused,
            "rate": self.rate,
            "changes": self.changes,
            "duration_s": self.duration_s,
            "pushes": self.pushes,
            "measured_pushes": self.measured_pushes,
            "pushes_per_s": self.pushes_per_s(),
            "stale": self.stale,
            "latency_us": {
                "min": l.min, "p50": l.p50, "p90": l.p90, "p99": l.p99,
                "p99_9": l.p99_9, "max": l.max, "mean": l.mean,
            },
        })
    }

    /// The text summary, several lines.
    pub fn text(&self) -> String {
        let l = &self.latency;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "subscribe   {} subscriptions over {} associations to {} pools: {} accepted, {} \
             refused",
            self.subscribers, self.connections, self.pools, self.accepted, self.refused
        );
        let _ = writeln!(
            s,
            "  changes   {} sent at {:.0}/s; pushes {} received, {} timed in {:.1} s ({:.0}/s)",
            self.changes,
            self.rate,
            self.pushes,
            self.measured_pushes,
            self.duration_s,
            self.pushes_per_s()
        );
        let _ = writeln!(
            s,
            "  latency   change to push, us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            l.p50, l.p90, l.p99, l.p99_9, l.max
        );
        let _ = writeln!(
            s,
            "  stale     {} subscriptions missed their pool's last change{}",
            self.stale,
            if self.stale == 0 { "" } else { " (FAILED)" }
        );
        s
    }
}

/// What a run produced: one summary, or a scenario and the echo ceiling measured right after.
#[derive(Clone, Debug)]
pub enum RunReport {
    /// A single scenario.
    Single(Summary),
    /// `--compare-echo`.
    Compared {
        /// The scenario against the registrar.
        scenario: Summary,
        /// The echo server under the same load.
        echo: Summary,
    },
    /// `churn`: the PEs' register, re-register, deregister stream and the PUs' resolutions, run
    /// at the same time.
    Churn {
        /// The churning PEs.
        churn: Summary,
        /// The resolving PUs.
        resolve: Summary,
    },
    /// `resync`: the times of an ENRP start-up synchronisation.
    Resync(ResyncSummary),
    /// `takeover`: the time the survivors of a scope took to take over a dead registrar's PEs.
    Takeover(TakeoverSummary),
    /// `chaos`: the faults injected and the violations the checker found.
    Chaos(Box<ChaosReport>),
    /// `hostile`: the hostile messages sent and what the checks found.
    Hostile(Box<HostileReport>),
    /// `subscribe`: the push latency of pool subscriptions.
    Subscribe(SubscribeSummary),
}

impl RunReport {
    /// Scenario ops/s over echo ops/s, for a comparison.
    pub fn ratio(&self) -> Option<f64> {
        match self {
            Self::Single(_)
            | Self::Churn { .. }
            | Self::Resync(_)
            | Self::Takeover(_)
            | Self::Chaos(_)
            | Self::Hostile(_)
            | Self::Subscribe(_) => None,
            Self::Compared { scenario, echo } if echo.ops_per_s > 0.0 => {
                Some(scenario.ops_per_s / echo.ops_per_s)
            }
            Self::Compared { .. } => Some(0.0),
        }
    }

    /// The report as text or as one JSON object (one line).
    pub fn render(&self, json: bool) -> String {
        match (self, json) {
            (Self::Single(s), false) => s.text(),
            (Self::Single(s), true) => s.to_json().to_string(),
            (Self::Compared { scenario, echo }, false) => format!(
                "{}{}ratio {}/echo: {:.3} (ops/s)\n",
                scenario.text(),
                echo.text(),
                scenario.scenario,
                self.ratio().unwrap_or(0.0)
            ),
            (Self::Compared { scenario, echo }, true) => json!({
                "scenario": scenario.to_json(),
                "echo": echo.to_json(),
                "ratio": self.ratio(),
            })
            .to_string(),
            (Self::Churn { churn, resolve }, false) => {
                format!("{}{}", churn.text(), resolve.text())
            }
            (Self::Churn { churn, resolve }, true) => json!({
                "churn": churn.to_json(),
                "resolve": resolve.to_json(),
            })
            .to_string(),
            (Self::Resync(r), false) => r.text(),
            (Self::Resync(r), true) => r.to_json().to_string(),
            (Self::Takeover(r), false) => r.text(),
            (Self::Takeover(r), true) => r.to_json().to_string(),
            (Self::Chaos(r), false) => r.text(),
            (Self::Chaos(r), true) => r.to_json().to_string(),
            (Self::Hostile(r), false) => r.text(),
            (Self::Hostile(r), true) => r.to_json().to_string(),
            (Self::Subscribe(r), false) => r.text(),
            (Self::Subscribe(r), true) => r.to_json().to_string(),
        }
    }

    /// The summaries with latencies: one, or two for a comparison and a churn run; none for
    /// `resync`, `takeover`, `chaos` and `hostile`.
    pub fn summaries(&self) -> Vec<&Summary> {
        match self {
            Self::Single(s) => vec![s],
            Self::Compared { scenario, echo } => vec![scenario, echo],
            Self::Churn { churn, resolve } => vec![churn, resolve],
            Self::Resync(_)
            | Self::Takeover(_)
            | Self::Chaos(_)
            | Self::Hostile(_)
            | Self::Subscribe(_) => Vec::new(),
        }
    }

    /// The CSV text of `--csv`: the [`CSV_COLUMNS`] header and a row per summary.
    pub fn csv(&self) -> String {
        let mut text = CSV_COLUMNS.join(",");
        text.push('\n');
        for s in self.summaries() {
            text.push_str(&s.csv_row());
            text.push('\n');
        }
        text
    }

    /// Writes the HDR interval log of `--hdr-log` to `out`: each summary's latency histogram (in
    /// nanoseconds) as one interval, V2-compressed, its timestamp the seconds from the first
    /// measured window's start (the log's StartTime and BaseTime), the interval maximum in
    /// milliseconds as HdrHistogram's own logs write it. The first interval is untagged (the
    /// one HdrHistogram's tools read by default), a second one (the echo ceiling, a churn run's
    /// pool users) tagged with its scenario.
    pub fn write_hdr_log(&self, out: &mut impl io::Write) -> io::Result<()> {
        let summaries = self.summaries();
        let base = summaries
            .iter()
            .map(|s| s.timeline.started)
            .min()
            .unwrap_or_else(SystemTime::now);
        let mut serializer = V2DeflateSerializer::new();
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment("rserpool-bench latencies in nanoseconds, one interval per run")
            .with_start_time(base)
            .with_base_time(base)
            .with_max_value_divisor(1e6)
            .begin_log_with(out, &mut serializer)?;
        for (k, s) in summaries.into_iter().enumerate() {
            let start = s.timeline.started.duration_since(base).unwrap_or_default();
            log.write_histogram(
                &s.histogram,
                start,
                Duration::from_secs_f64(s.duration_s),
                Tag::new(&s.scenario).filter(|_| k > 0),
            )
            .map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(())
    }

    /// Whether the run passed: false for a `chaos` run that found a violation, a `hostile` soak
    /// that lost a PE or a `subscribe` run with a subscription that missed its pool's last change.
    pub fn passed(&self) -> bool {
        match self {
            Self::Chaos(r) => r.passed(),
            Self::Hostile(r) => r.passed(),
            Self::Subscribe(r) => r.stale == 0,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Stats;
    use crate::series::Second;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    /// A run of 2 s whose ops took `latencies_us`, all in its first second.
    fn outcome(latencies_us: &[u64]) -> Outcome {
        let mut stats = Stats::new();
        for &us in latencies_us {
            stats.histogram.record(us * 1000).unwrap();
        }
        stats.ops = latencies_us.len() as u64;
        stats.replies = stats.ops;
        stats.reply_bytes = 64 * stats.ops;
        let first = Second {
            t: 1,
            ops: stats.ops,
            p50_us: 1.0,
            p99_us: 2.0,
        };
        Outcome {
            stats,
            elapsed: Duration::from_secs(2),
            timeline: Timeline {
                started: SystemTime::now(),
                seconds: vec![first, Second { t: 2, ..first }],
            },
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let values: Vec<u64> = (1..=1000).collect();
        let l = Latency::from_nanos(&outcome(&values).stats.histogram);
        assert!((l.p50 - 500.0).abs() <= 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() <= 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() <= 1.0, "{l:?}");
        assert!((l.min - 1.0).abs() <= 0.01, "{l:?}");
        assert!((l.mean - 500.5).abs() <= 1.0, "{l:?}");
        // The standard deviation of 1..=1000 is about 288.7.
        assert!((l.stdev - 288.7).abs() <= 1.0, "{l:?}");
        assert_eq!(
            Latency::from_nanos(&Stats::new().histogram),
            Latency::default()
        );
    }

    #[test]
    fn text_and_json_carry_every_percentile() {
        let s = Summary::new(
            "echo",
            "tcp://x".into(),
            (4, 8, 1),
            None,
            &outcome(&[10, 20, 30]),
        );
        assert_eq!(s.ops_per_s, 1.5);
        assert_eq!(s.mean_reply_bytes, 64.0);
        let text = s.text();
        for field in [
            "min 10.0",
            "mean 20.0",
            "stdev 8.2",
            "p50",
            "p90",
            "p99 ",
            "p99.9",
            "max",
            "ops/s",
            "errors",
        ] {
            assert!(text.contains(field), "{field} missing in {text}");
        }
        // 10 us in the bucket 10 to 20 us, 20 and 30 us in the next, 20 to 50 us: the fuller
        // one gets the whole bar.
        assert!(
            text.contains(&format!(
                "10 us - 20 us             1  {}\n",
                "#".repeat(20)
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "20 us - 50 us             2  {}\n",
                "#".repeat(40)
            )),
            "{text}"
        );
        let v: Value = serde_json::from_str(&RunReport::Single(s).render(true)).unwrap();
        for field in ["min", "mean", "stdev", "p50", "p90", "p99", "p99_9", "max"] {
            assert!(v["latency_us"][field].is_f64(), "{field} missing in {v}");
        }
        assert_eq!(v["ops"], 3);
        assert_eq!(
            v["per_second"],
            json!([
                {"t": 1, "ops": 3, "p50_us": 1.0, "p99_us": 2.0},
                {"t": 2, "ops": 3, "p50_us": 1.0, "p99_us": 2.0},
            ])
        );
    }

    #[test]
    fn latency_buckets_are_log_spaced_and_count_every_op() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for (us, n) in [(15, 10), (30, 5), (120, 1)] {
            h.record_n(us * 1000, n).unwrap();
        }
        let buckets: Vec<(u64, u64, u64)> = latency_buckets(&h)
            .iter()
            .map(|b| (b.from_ns / 1000, b.to_ns / 1000, b.count))
            .collect();
        assert_eq!(
            buckets,
            [(10, 20, 10), (20, 50, 5), (50, 100, 0), (100, 200, 1)]
        );
        // From 1 us to 10 s the 1-2-5 steps would make 21 buckets: decades instead.
        h.record(1000).unwrap();
        h.record(10_000_000_000).unwrap();
        let decades = latency_buckets(&h);
        assert_eq!(decades.len(), 8, "{decades:?}");
        assert!(
            decades.iter().all(|b| b.to_ns == b.from_ns * 10),
            "{decades:?}"
        );
        assert_eq!(decades.iter().map(|b| b.count).sum::<u64>(), h.len());
        assert!(latency_buckets(&Stats::new().histogram).is_empty());
    }

    #[test]
    fn csv_has_a_header_and_a_row_per_run() {
        let mut a = Summary::new(
            "resolve",
            "tcp://127.0.0.1:1 (spawned, 1 workers)".into(),
            (2, 4, 1),
            Some(500.0),
            &outcome(&[10, 20]),
        );
        a.errors = 1;
        let b = Summary::new("echo", "e".into(), (2, 4, 1), None, &outcome(&[5]));
        let csv = RunReport::Compared {
            scenario: a,
            echo: b,
        }
        .csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3, "{csv}");
        assert_eq!(lines[0], CSV_COLUMNS.join(","));
        assert!(
            lines[1].starts_with("resolve,\"tcp://127.0.0.1:1 (spawned, 1 workers)\",2,4,1,500,"),
            "{csv}"
        );
        assert!(
            lines[2].starts_with("echo,e,2,4,1,,2.000,1,0.500,0,"),
            "{csv}"
        );
        // The quoted target holds one comma: one field more than columns when split naively.
        assert_eq!(lines[1].split(',').count(), CSV_COLUMNS.len() + 1);
        assert_eq!(lines[2].split(',').count(), CSV_COLUMNS.len());
        assert!(
            lines[2].ends_with(",5.003"),
            "max 5 us (its bucket's top): {csv}"
        );
    }

    #[test]
    fn the_hdr_log_has_an_interval_per_run_the_second_tagged() {
        let churn = RunReport::Churn {
            churn: Summary::new("churn", "t".into(), (1, 1, 1), None, &outcome(&[1, 2])),
            resolve: Summary::new("resolve", "t".into(), (1, 1, 1), None, &outcome(&[3])),
        };
        let mut log = Vec::new();
        churn.write_hdr_log(&mut log).unwrap();
        let entries: Vec<LogEntry<'_>> = IntervalLogIterator::new(&log)
            .collect::<Result<_, _>>()
            .unwrap();
        let intervals: Vec<(String, f64)> = entries
            .iter()
            .filter_map(|e| match e {
                LogEntry::Interval(i) => Some((
                    i.tag().map(|t| t.as_str().to_owned()).unwrap_or_default(),
                    i.duration().as_secs_f64(),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            intervals,
            [(String::new(), 2.0), ("resolve".to_owned(), 2.0)]
        );
        assert!(matches!(entries[0], LogEntry::StartTime(_)), "{entries:?}");
    }

    #[test]
    fn a_comparison_reports_the_ratio() {
        let a = Summary::new("resolve", "r".into(), (1, 1, 1), None, &outcome(&[1]));
        let b = Summary::new("echo", "e".into(), (1, 1, 1), None, &outcome(&[1, 2, 3, 4]));
        let report = RunReport::Compared {
            scenario: a,
            echo: b,
        };
        assert_eq!(report.ratio(), Some(0.25));
        assert!(report.render(false).contains("ratio resolve/echo: 0.250"));
        let v: Value = serde_json::from_str(&report.render(true)).unwrap();
        assert_eq!(v["ratio"], 0.25);
        assert_eq!(v["echo"]["ops"], 4);
    }

    #[test]
    fn a_resync_reports_its_times_and_pages() {
        let r = RunReport::Resync(ResyncSummary {
            mentor: "tcp://a".into(),
            newcomer: "tcp://b".into(),
            workers: 1,
            enrp_generation: "ng".into(),
            page: 1024,
            population: 2048,
            pools: 4,
            connections: 2,
            register_s: 0.5,
            start_s: 0.25,
            sync_s: 2.0,
            pages: 2,
            mentor_busy_s: 0.5,
            newcomer_busy_s: 1.25,
            restart: None,
        });
        assert_eq!(r.ratio(), None);
        assert_eq!(
            r.csv(),
            CSV_COLUMNS.join(",") + "\n",
            "no latencies: no rows"
        );
        let text = r.render(false);
        for part in [
            "2048 PEs in 4 pools over 2 associations in 0.50 s (4096/s)",
            "2.000 s from the new registrar's start",
            "1.750 s after its listening lines, 1024 PEs/s",
            "2 handle table responses sent by the mentor (1024 PEs each",
            "mentor 0.500 s, of the new registrar 1.250 s",
        ] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
        let v: Value = serde_json::from_str(&r.render(true)).unwrap();
        assert_eq!(v["scenario"], "resync");
        assert_eq!(v["sync_s"], 2.0);
        assert_eq!(v["sync_after_start_s"], 1.75);
        assert_eq!(v["pes_per_s"], 1024.0);
        assert_eq!(v["pages"], 2);
        assert_eq!(v["newcomer_busy_s"], 1.25);
        assert!(!text.contains("restart"), "{text}");
        assert!(v["restart"].is_null() && v["restart_s"].is_null(), "{v}");
    }

    #[test]
    fn a_resync_with_a_restart_reports_its_time() {
        let r = ResyncSummary {
            mentor: "tcp://a".into(),
            newcomer: "tcp://b".into(),
            workers: 1,
            enrp_generation: "ng".into(),
            page: 1024,
            population: 2048,
            pools: 4,
            connections: 2,
            register_s: 0.5,
            start_s: 0.25,
            sync_s: 2.0,
            pages: 2,
            mentor_busy_s: 0.5,
            newcomer_busy_s: 1.25,
            restart: Some(("new-id".into(), 1.5)),
        };
        let text = r.text();
        assert!(
            text.contains("restart     1.500 s from the restarted new registrar's start (new-id"),
            "{text}"
        );
        let v = r.to_json();
        assert_eq!(
            (v["restart"].clone(), v["restart_s"].clone()),
            ("new-id".into(), 1.5.into())
        );
    }

    #[test]
    fn a_takeover_reports_its_time_bound_homes_and_counters() {
        let r = RunReport::Takeover(TakeoverSummary {
            registrars: vec![
                (1, "tcp://a".into()),
                (2, "tcp://b".into()),
                (3, "tcp://c".into()),
            ],
            profile: "carrier".into(),
            workers: None,
            enrp_generation: "ng".into(),
            signal: "SIGKILL".into(),
            population: 1000,
            pools: 100,
            connections: 16,
            register_s: 0.25,
            replicate_s: 0.5,
            timers_ms: (200, 400, 300),
            takeover_s: 0.75,
            homes: vec![(2, 1000)],
            takeovers: vec![(2, 1), (3, 0)],
        });
        assert_eq!(r.ratio(), None);
        let text = r.render(false);
        for part in [
            "profile carrier, the profile's workers each, ENRP ng, SIGKILL",
            "0.750 s from SIGKILL",
            "(bound 0.900 s: max_time_last_heard 400 + max_time_no_response 300 + heartbeat 200",
            "homes       PR 2: 1000 PEs",
            "rserpool_enrp_takeovers_total PR 2: 1, PR 3: 0",
        ] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
        let v: Value = serde_json::from_str(&r.render(true)).unwrap();
        assert_eq!(v["scenario"], "takeover");
        assert_eq!(v["bound_s"], 0.9);
        assert_eq!(v["takeover_s"], 0.75);
        assert_eq!(v["homes"]["2"], 1000);
        assert_eq!(v["takeovers"]["3"], 0);
        assert_eq!(v["timers_ms"]["max_time_no_response"], 300);
        assert!(v["workers"].is_null());
        assert_eq!(v["registrars"][0]["id"], 1);
    }

    #[test]
    fn totals_setup_and_keep_alive_figures_are_printed() {
        let mut o = outcome(&[5, 6]);
        o.stats.totals = Totals {
            requests: 7,
            resolutions_found: 6,
            keep_alive_acks: 2,
            ..Totals::default()
        };
        let mut s = Summary::new("keepalive", "t".into(), (2, 1, 1), None, &o);
        assert_eq!(s.keep_alives, 2);
        s.setup = Some(Totals {
            registrations_accepted: 10,
            deregistrations: 10,
            ..Totals::default()
        });
        s.keep_alive = Some(KeepAliveInfo {
            population: 500,
            interval_ms: Some(250),
            registrar_sent: Some(1999),
        });
        let text = s.text();
        assert!(text.contains("7 requests"), "{text}");
        assert!(text.contains("6 resolutions found"), "{text}");
        assert!(
            text.contains("10 registrations accepted, 10 deregistrations"),
            "{text}"
        );
        assert!(text.contains("about 2000/s"), "{text}");
        assert!(text.contains("sent 1999 keep-alives"), "{text}");
        assert!(text.contains("500 PEs over 2 associations"), "{text}");
        let v = s.to_json();
        assert_eq!(v["totals"]["resolutions_found"], 6);
        assert_eq!(v["setup"]["deregistrations"], 10);
        assert_eq!(v["keep_alive"]["expected_per_s"], 2000.0);
        assert_eq!(v["keep_alive"]["registrar_sent"], 1999);
        let churn = RunReport::Churn {
            churn: s.clone(),
            resolve: Summary::new("resolve", "t".into(), (1, 1, 1), None, &outcome(&[1])),
        };
        assert_eq!(churn.ratio(), None);
        let v: Value = serde_json::from_str(&churn.render(true)).unwrap();
        assert_eq!(v["churn"]["scenario"], "keepalive");
        assert_eq!(v["resolve"]["ops"], 1);
        assert!(v["resolve"]["setup"].is_null());
    }
}
