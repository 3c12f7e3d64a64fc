//! Whole runs in-process against the built-in echo server, and the `--spawn` path with stand-in
//! registrar executables.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use rserpool_bench::net::StreamTransport;
use rserpool_bench::target::Target;
use rserpool_bench::{Cli, RunReport, app};
use serde_json::Value;

fn cli(args: &[&str]) -> Cli {
    Cli::from_args(args).expect("a valid command line")
}

fn single(report: RunReport) -> rserpool_bench::Summary {
    match report {
        RunReport::Single(s) => s,
        other => panic!("expected one summary, got {other:?}"),
    }
}

#[test]
fn a_short_echo_run_counts_ops_without_errors() {
    let args = [
        "echo",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
        "--connections",
        "4",
        "--pipeline",
        "8",
        "--quiet",
    ];
    let s = single(app::run(&cli(&args)).unwrap());
    assert!(s.ops > 0, "{s:?}");
    assert_eq!(s.errors, 0, "{s:?}");
    assert_eq!(s.mean_request_bytes, 20.0);
    assert_eq!(s.mean_reply_bytes, 20.0, "mirrored");
    assert!(
        s.latency.p50 > 0.0 && s.latency.p50 <= s.latency.p99 && s.latency.p99 <= s.latency.max
    );
}

#[test]
fn sized_echo_replies_with_two_threads_and_json() {
    let args = [
        "echo",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--connections",
        "4",
        "--pipeline",
        "4",
        "--threads",
        "2",
        "--reply-size",
        "196",
        "--json",
        "--quiet",
    ];
    let cli = cli(&args);
    let report = app::run(&cli).unwrap();
    let v: Value = serde_json::from_str(&report.render(cli.json)).unwrap();
    assert!(v["ops"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["errors"], 0);
    assert_eq!(v["mean_reply_bytes"], 196.0);
    assert_eq!(v["threads"], 2);
    for field in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(
            v["latency_us"][field].as_f64().unwrap() > 0.0,
            "{field}: {v}"
        );
    }
}

#[test]
fn blocking_clients_complete_the_same_run() {
    let args = [
        "echo",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
        "--connections",
        "6",
        "--pipeline",
        "8",
        "--threads",
        "2",
        "--poll",
        "block",
        "--quiet",
    ];
    let s = single(app::run(&cli(&args)).unwrap());
    assert!(s.ops > 0, "{s:?}");
    assert_eq!(s.errors, 0, "{s:?}");
}

#[test]
fn the_open_loop_keeps_to_its_rate() {
    // 2000/s over 0.5 s measured: about 1000 ops; never more than the schedule allows.
    let args = [
        "echo",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
        "--connections",
        "4",
        "--pipeline",
        "16",
        "--rate",
        "2000",
        "--quiet",
    ];
    let s = single(app::run(&cli(&args)).unwrap());
    // Answers are counted when they arrive: besides the 1000 requests the window schedules,
    // it may count answers to requests the warm-up scheduled and a slow (loaded) machine sent
    // late, at most one full pipeline per connection (4 x 16).
    assert!(s.ops > 0 && s.ops <= 1000 + 4 * 16, "{s:?}");
    assert_eq!(s.errors, 0);
    assert_eq!(s.rate, Some(2000.0));
}

#[test]
fn a_closed_server_is_an_error_not_a_hang() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = app::run(&cli(&["resolve", "--registrar", &url, "--quiet"])).unwrap_err();
    assert!(e.message().contains("connect to"), "{e}");
}

/// A stand-in registrar: a shell script in a fresh directory.
fn script(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rserpool-bench-{}-{name}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rserpool-registrar");
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_missing_registrar_binary_is_named_in_the_error() {
    let e = app::run(&cli(&[
        "resolve",
        "--spawn",
        "--registrar-bin",
        "/nonexistent/rserpool-registrar",
        "--quiet",
    ]))
    .unwrap_err();
    let m = e.message();
    assert!(
        m.contains("/nonexistent/rserpool-registrar") && m.contains("--registrar-bin"),
        "{m}"
    );
}

/// The stand-in answers only if its arguments name the metrics address and a configuration file
/// holding what the bench asked for.
#[test]
fn a_spawned_registrar_is_found_by_its_listening_line() {
    let bin = script(
        "listens",
        "[ \"$8\" = 127.0.0.1:0 ] && [ \"$9\" = --config ] || exit 4\n\
         grep -q '^keep_alive_interval_ms = 250$' \"${10}\" || exit 5\n\
         echo \"metrics http://127.0.0.1:9/metrics\"\n\
         echo \"listening asap $6\" | sed 's/:0$/:4321/'\nexec sleep 30",
    );
    let config = "[timers]\nkeep_alive_interval_ms = 250\n";
    let target = Target::spawn(
        &bin,
        1,
        "default",
        StreamTransport::Tcp,
        false,
        config,
        None,
    )
    .unwrap();
    assert_eq!(target.endpoint().addr, "127.0.0.1:4321".parse().unwrap());
    assert_eq!(target.metrics_url(), Some("http://127.0.0.1:9/metrics"));
    assert!(target.is_spawned());
}

#[test]
fn a_registrar_that_exits_early_is_reported() {
    let bin = script("exits", "echo 'bad option' >&2\nexit 3");
    let e = Target::spawn(&bin, 1, "default", StreamTransport::Tcp, false, "", None).unwrap_err();
    assert!(
        e.message().contains("exited") && e.message().contains('3'),
        "{e}"
    );
}
