//! What `rserpool-bench` says it did, checked against what the real `rserpool-registrar` counted:
//! `resolve`, `register` and `churn` runs of about a second each, every one against a daemon of its
//! own (one worker, keep-alives every 200 ms), whose Prometheus counters are read before and after
//! the run. The bench's `totals` and `setup` hold every request it sent and every answer it got
//! over the whole run; each must equal the registrar's count of the same thing.
//!
//! Keep-alive acks are the exception: the registrar counts an ack only while its PE is registered,
//! so an ack that crosses the PE's deregistration at the end is the bench's alone. The registrar's
//! count lies between the bench's minus one per PE and the bench's.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rserpool_bench::target::{sample_sum, scrape};
use serde_json::Value;

mod common;

/// The daemon under test, killed on drop.
struct Registrar {
    child: Child,
    asap: String,
    metrics: String,
}

impl Registrar {
    /// Starts `rserpool-registrar` (built next to this test by `cargo test --workspace`) with one
    /// worker, a TCP listener, metrics on a free port and keep-alives every 200 ms.
    fn start() -> Self {
        let bin = common::registrar_bin();
        let config = std::env::temp_dir().join(format!(
            "rserpool-bench-crosscheck-{}-{:?}.toml",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(
            &config,
            "[timers]\nkeep_alive_interval_ms = 200\nkeep_alive_timeout_ms = 2000\n",
        )
        .expect("write the registrar configuration");
        let mut child = Command::new(&bin)
            .args(["--workers", "1", "--asap", "tcp://127.0.0.1:0"])
            .args(["--metrics", "127.0.0.1:0", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rserpool-registrar");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut asap, mut metrics) = (None, None);
        while asap.is_none() || metrics.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the registrar prints its listener and metrics lines");
            if let Some(url) = line.strip_prefix("listening asap ") {
                asap = Some(url.trim().to_owned());
            } else if let Some(url) = line.strip_prefix("metrics ") {
                metrics = Some(url.trim().to_owned());
            }
        }
        let _ = std::fs::remove_file(config);
        Self {
            child,
            asap: asap.unwrap(),
            metrics: metrics.unwrap(),
        }
    }

    /// The registrar's counters now.
    fn counters(&self) -> Counters {
        let text = scrape(&self.metrics).expect("the registrar serves its metrics");
        let count = |prefix: &str| sample_sum(&text, prefix) as u64;
        Counters {
            registrations_accepted: count("rserpool_registrations_total{result=\"accepted\"}"),
            registrations: count("rserpool_registrations_total{"),
            deregistrations: count("rserpool_deregistrations_total{"),
            found: count("rserpool_resolutions_total{result=\"found\"}"),
            unknown_pool: count("rserpool_resolutions_total{result=\"unknown_pool\"}"),
            keep_alive_acks: count("rserpool_keep_alive_acks_total"),
        }
    }

    /// Runs the bench binary against this registrar with `args`, `--json` and `--quiet`; returns
    /// its report and what the registrar counted meanwhile.
    fn bench(&self, args: &[&str]) -> (Value, Counters) {
        let before = self.counters();
        let target = [
            "--registrar",
            &self.asap,
            "--duration",
            "1",
            "--warmup",
            "0.2",
        ];
        let report = common::report(&[args, &target].concat());
        (report, self.counters().since(&before))
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The registrar counters the bench's totals name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    registrations_accepted: u64,
    /// Every result.
    registrations: u64,
    /// Every result.
    deregistrations: u64,
    found: u64,
    unknown_pool: u64,
    keep_alive_acks: u64,
}

impl Counters {
    fn since(&self, before: &Self) -> Self {
        Self {
            registrations_accepted: self.registrations_accepted - before.registrations_accepted,
            registrations: self.registrations - before.registrations,
            deregistrations: self.deregistrations - before.deregistrations,
            found: self.found - before.found,
            unknown_pool: self.unknown_pool - before.unknown_pool,
            keep_alive_acks: self.keep_alive_acks - before.keep_alive_acks,
        }
    }
}

/// A field of a `totals` or `setup` object.
fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no number `{field}` in {v}"))
}

/// The bench's totals as the registrar's counters, summed over `parts`.
fn said(parts: &[&Value]) -> Counters {
    let sum = |field: &str| parts.iter().map(|p| n(p, field)).sum::<u64>();
    Counters {
        registrations_accepted: sum("registrations_accepted"),
        registrations: sum("registrations_accepted") + sum("registrations_rejected"),
        deregistrations: sum("deregistrations"),
        found: sum("resolutions_found"),
        unknown_pool: sum("resolutions_failed"),
        keep_alive_acks: sum("keep_alive_acks"),
    }
}

/// Every counter equal but the keep-alive acks, which lie within `pes` below the bench's.
fn assert_consistent(said: Counters, saw: Counters, pes: u64) {
    assert_eq!(
        Counters {
            keep_alive_acks: 0,
            ..said
        },
        Counters {
            keep_alive_acks: 0,
            ..saw
        },
        "the bench said (left) against the registrar saw (right)"
    );
    assert!(
        saw.keep_alive_acks <= said.keep_alive_acks
            && saw.keep_alive_acks + pes >= said.keep_alive_acks,
        "keep-alive acks: the bench sent {}, the registrar counted {}, {pes} PEs",
        said.keep_alive_acks,
        saw.keep_alive_acks
    );
}

#[test]
fn resolve_reports_what_the_registrar_counted() {
    let r = Registrar::start();
    let (v, saw) = r.bench(&[
        "resolve",
        "--pools",
        "4",
        "--pool-elements",
        "3",
        "--connections",
        "2",
        "--pipeline",
        "4",
    ]);
    let (totals, setup) = (&v["totals"], &v["setup"]);
    assert_consistent(said(&[totals, setup]), saw, 12);
    assert_eq!(n(setup, "registrations_accepted"), 12, "{v}");
    assert_eq!(n(setup, "deregistrations"), 12, "{v}");
    assert!(
        n(setup, "keep_alive_acks") > 0,
        "1.2 s of 200 ms keep-alives: {v}"
    );
    let ops = v["ops"].as_u64().unwrap();
    assert!(ops > 0 && ops <= saw.found, "{v}");
    assert_eq!(saw.unknown_pool, 0, "every pool has PEs: {v}");
    assert_eq!(n(totals, "requests"), saw.found, "every request answered");
}

#[test]
fn register_reports_what_the_registrar_counted() {
    let r = Registrar::start();
    let (v, saw) = r.bench(&[
        "register",
        "--connections",
        "2",
        "--pipeline",
        "4",
        "--pes-per-connection",
        "2",
    ]);
    let totals = &v["totals"];
    assert!(v["setup"].is_null(), "{v}");
    assert_consistent(said(&[totals]), saw, 4);
    assert_eq!(
        n(totals, "deregistrations"),
        4,
        "each PE once at the end: {v}"
    );
    assert_eq!(
        n(totals, "requests"),
        saw.registrations + saw.deregistrations,
        "every request answered"
    );
    let ops = v["ops"].as_u64().unwrap();
    assert!(ops > 0 && ops <= saw.registrations_accepted, "{v}");
}

#[test]
fn churn_reports_both_streams_as_the_registrar_counted_them() {
    let r = Registrar::start();
    let (v, saw) = r.bench(&[
        "churn",
        "--rate",
        "400",
        "--churners",
        "4",
        "--reregistrations",
        "2",
        "--connections",
        "2",
        "--pipeline",
        "4",
        "--pools",
        "4",
        "--pool-elements",
        "2",
    ]);
    let (churn, resolve) = (&v["churn"], &v["resolve"]);
    let setup = &resolve["setup"];
    assert_consistent(
        said(&[&churn["totals"], &resolve["totals"], setup]),
        saw,
        4 + 8,
    );
    assert_eq!(n(setup, "registrations_accepted"), 8, "{v}");
    // Churn answers: complete cycles of three registrations and a deregistration, each churner's
    // cycle under way at the end, and one deregistration per churner at the end.
    let (regs, deregs) = (
        n(&churn["totals"], "registrations_accepted"),
        n(&churn["totals"], "deregistrations"),
    );
    assert!(deregs >= 4, "{v}");
    let cycles = deregs - 4;
    assert!(
        regs >= 3 * cycles && regs <= 3 * cycles + 3 * 4,
        "{regs} registrations and {cycles} whole cycles: {v}"
    );
    assert_eq!(n(&churn["totals"], "requests"), regs + deregs, "{v}");
    // The schedule allows 480 operations up to the end (0.2 s of warm-up and 1 s at 400/s).
    let churn_ops = churn["ops"].as_u64().unwrap();
    assert!(churn_ops > 0 && churn_ops <= 480, "{v}");
    assert_eq!(churn["rate"], 400.0);
    assert_eq!(n(&resolve["totals"], "resolutions_found"), saw.found);
    assert!(resolve["ops"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn keepalive_reports_what_the_registrar_counted() {
    let r = Registrar::start();
    let (v, saw) = r.bench(&["keepalive", "--population", "40", "--connections", "2"]);
    let totals = &v["totals"];
    assert_consistent(said(&[totals]), saw, 40);
    assert_eq!(n(totals, "registrations_accepted"), 40, "{v}");
    assert_eq!(n(totals, "deregistrations"), 40, "{v}");
    // 40 PEs, keep-alives every 200 ms (±12.5 %) after each ack: about 200/s.
    let ops = v["ops"].as_u64().unwrap();
    assert!((100..=300).contains(&ops), "{v}");
    assert!(n(totals, "keep_alive_acks") >= ops, "{v}");
    assert_eq!(v["keep_alive"]["population"], 40);
    assert!(
        v["keep_alive"]["registrar_sent"].is_null(),
        "no metrics URL given"
    );
}

/// A spawned registrar gets the keep-alive interval asked for, and its own count of keep-alives
/// sent in the window comes with the report.
#[test]
fn keepalive_configures_a_spawned_registrar_and_reads_its_count() {
    common::registrar_bin();
    let v = common::report(&[
        "keepalive",
        "--spawn",
        "--keep-alive-interval",
        "100",
        "--population",
        "20",
        "--connections",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0.3",
    ]);
    let k = &v["keep_alive"];
    assert_eq!(k["interval_ms"], 100);
    assert_eq!(k["expected_per_s"], 200.0);
    let ops = v["ops"].as_u64().unwrap();
    let sent = k["registrar_sent"]
        .as_u64()
        .expect("the spawned registrar's count");
    assert!((100..=260).contains(&ops), "about 200/s: {v}");
    assert!(
        sent.abs_diff(ops) <= 2 * 20,
        "the registrar sent {sent}, the bench acked {ops} in the window"
    );
}
