//! Results for people and programs: the text summary, the JSON object, and the comparison of a
//! scenario with the echo ceiling.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::load::Outcome;

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
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
}

impl Latency {
    /// The percentiles of a histogram of nanoseconds (all 0 when it is empty).
    pub fn from_nanos(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
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
    /// Keep-alives answered by the timed connections.
    pub keep_alives: u64,
    /// Mean request size in bytes.
    pub mean_request_bytes: f64,
    /// Mean reply size in bytes.
    pub mean_reply_bytes: f64,
    /// Per-request latency.
    pub latency: Latency,
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
            keep_alives: s.keep_alives,
            mean_request_bytes: s.mean_request_bytes(),
            mean_reply_bytes: s.mean_reply_bytes(),
            latency: Latency::from_nanos(&s.histogram),
        }
    }

    /// The JSON object.
    pub fn to_json(&self) -> Value {
        let l = &self.latency;
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
                "p50": l.p50,
                "p90": l.p90,
                "p99": l.p99,
                "p99_9": l.p99_9,
                "max": l.max,
                "mean": l.mean,
            },
        })
    }

    /// The text summary, several lines.
    pub fn text(&self) -> String {
        let l = &self.latency;
        let mut s = String::new();
        let mode = self.rate.map_or_else(
            || "closed loop".to_owned(),
            |r| format!("open loop at {r:.0}/s"),
        );
        let _ = writeln!(
            s,
            "{} against {}: {} connections x {} in flight, {} client thread(s), {mode}, {:.1} s",
            self.scenario,
            self.target,
            self.connections,
            self.pipeline,
            self.threads,
            self.duration_s
        );
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
            "  latency us  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
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
}

impl RunReport {
    /// Scenario ops/s over echo ops/s, for a comparison.
    pub fn ratio(&self) -> Option<f64> {
        match self {
            Self::Single(_) => None,
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Stats;
    use std::time::Duration;

    fn outcome(latencies_us: &[u64]) -> Outcome {
        let mut stats = Stats::new();
        for &us in latencies_us {
            stats.histogram.record(us * 1000).unwrap();
        }
        stats.ops = latencies_us.len() as u64;
        stats.replies = stats.ops;
        stats.reply_bytes = 64 * stats.ops;
        Outcome {
            stats,
            elapsed: Duration::from_secs(2),
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let values: Vec<u64> = (1..=1000).collect();
        let l = Latency::from_nanos(&outcome(&values).stats.histogram);
        assert!((l.p50 - 500.0).abs() <= 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() <= 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() <= 1.0, "{l:?}");
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
        for field in ["p50", "p90", "p99 ", "p99.9", "max", "ops/s", "errors"] {
            assert!(text.contains(field), "{field} missing in {text}");
        }
        let v: Value = serde_json::from_str(&RunReport::Single(s).render(true)).unwrap();
        for field in ["p50", "p90", "p99", "p99_9", "max"] {
            assert!(v["latency_us"][field].is_f64(), "{field} missing in {v}");
        }
        assert_eq!(v["ops"], 3);
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
}
