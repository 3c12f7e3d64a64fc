//! Command-line parsing and validation of `rserpool-bench`: each scenario's own options and
//! help, usage errors, and the CSV, HDR log and per-second JSON outputs of short echo runs.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use clap::error::ErrorKind;
use clap::{CommandFactory, ValueEnum};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use rserpool_bench::cli::EnrpGeneration;
use rserpool_bench::load::Poll;
use rserpool_bench::net::StreamTransport;
use rserpool_bench::report::CSV_COLUMNS;
use rserpool_bench::{Cli, ScenarioKind};
use serde_json::Value;

#[test]
fn defaults_match_the_documentation() {
    let cli = Cli::from_args(&["echo"]).unwrap();
    assert_eq!(cli.scenario, ScenarioKind::Echo);
    assert_eq!((cli.connections, cli.pipeline, cli.threads), (16, 32, 1));
    assert_eq!((cli.duration, cli.warmup), (5.0, 1.0));
    assert_eq!((cli.pools, cli.pool_elements, cli.workers), (100, 10, 1));
    assert_eq!(cli.rate, None);
    assert_eq!(cli.transport, StreamTransport::Tcp);
    assert_eq!(cli.poll, Poll::Spin);
    assert!(!cli.json && !cli.compare_echo && !cli.spawn && !cli.quiet);
}

#[test]
fn every_option_is_read() {
    let cli = Cli::from_args(&[
        "resolve",
        "--connections",
        "64",
        "--pipeline",
        "4",
        "--threads",
        "2",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--rate",
        "50000",
        "--pools",
        "1000",
        "--pool-elements",
        "3",
        "--registrar",
        "mptcp://127.0.0.1:3863",
        "--compare-echo",
        "--json",
        "--quiet",
    ])
    .unwrap();
    assert_eq!(cli.scenario, ScenarioKind::Resolve);
    assert_eq!((cli.connections, cli.pipeline, cli.threads), (64, 4, 2));
    assert_eq!(
        (cli.duration, cli.warmup, cli.rate),
        (0.5, 0.0, Some(50_000.0))
    );
    assert_eq!((cli.pools, cli.pool_elements), (1000, 3));
    let target = cli.registrar.unwrap();
    assert_eq!(target.transport, StreamTransport::Mptcp);
    assert_eq!(target.addr.port(), 3863);
    assert!(cli.compare_echo && cli.json && cli.quiet);

    let spawn = Cli::from_args(&[
        "register",
        "--spawn",
        "--registrar-bin",
        "/opt/pr",
        "--workers",
        "2",
        "--transport",
        "mptcp",
        "--pes-per-connection",
        "5",
        "--poll",
        "block",
        "--profile",
        "low-latency",
    ])
    .unwrap();
    assert!(spawn.spawn);
    assert_eq!(spawn.profile, "low-latency");
    assert_eq!(spawn.registrar_bin.unwrap().to_str(), Some("/opt/pr"));
    assert_eq!((spawn.workers, spawn.pes_per_connection), (2, 5));
    assert_eq!(spawn.transport, StreamTransport::Mptcp);
    assert_eq!(spawn.poll, Poll::Block);

    let echo = Cli::from_args(&["echo", "--reply-size", "197"]).unwrap();
    assert_eq!(echo.echo_reply_size(), Some(200));
}

#[test]
fn contradictions_are_refused_with_a_reason() {
    for (args, why) in [
        (&["resolve"][..], "needs a registrar"),
        (
            &["register", "--pipeline", "0", "--spawn"][..],
            "--pipeline",
        ),
        (
            &["echo", "--threads", "4", "--connections", "2"][..],
            "exceeds",
        ),
        (
            &["echo", "--registrar", "tcp://127.0.0.1:1"][..],
            "unexpected argument '--registrar'",
        ),
        (
            &["echo", "--compare-echo"][..],
            "unexpected argument '--compare-echo'",
        ),
        (&["echo", "--duration", "0"][..], "--duration"),
        (&["echo", "--rate", "0"][..], "--rate"),
        (&["echo", "--reply-size", "8"][..], "--reply-size"),
        (
            &["echo", "--rate", "100", "--poll", "block"][..],
            "--poll spin",
        ),
        (
            &["resolve", "--spawn", "--reply-size", "64"][..],
            "unexpected argument '--reply-size'",
        ),
        (
            &["resolve", "--spawn", "--registrar", "tcp://127.0.0.1:1"][..],
            "cannot be used",
        ),
        (
            &[
                "resolve",
                "--registrar-bin",
                "/x",
                "--registrar",
                "tcp://127.0.0.1:1",
            ][..],
            "--spawn",
        ),
        (
            &["storm", "--registrar", "sctp://127.0.0.1:1"][..],
            "tcp or mptcp",
        ),
        (
            &[
                "resolve",
                "--profile",
                "carrier",
                "--registrar",
                "tcp://127.0.0.1:1",
            ][..],
            "needs --spawn",
        ),
        (&["flood"][..], "unrecognized subcommand 'flood'"),
        (
            &[
                "subscribe",
                "--spawn",
                "-c",
                "4",
                "--pools",
                "10",
                "--subscribers",
                "41",
            ][..],
            "--subscribers 41 exceeds --connections 4 x --pools 10",
        ),
        (&["subscribe", "--spawn", "--rate", "0"][..], "--rate"),
        (
            &["subscribe", "--spawn", "--pipeline", "2"][..],
            "unexpected argument '--pipeline'",
        ),
    ] {
        let Err(e) = Cli::from_args(args) else {
            panic!("{args:?} was accepted");
        };
        assert!(e.contains(why), "{args:?}: {e}");
    }
}

#[test]
fn churn_and_keepalive_options_are_read_and_checked() {
    let cli = Cli::from_args(&[
        "churn",
        "--spawn",
        "--rate",
        "500",
        "--churners",
        "8",
        "--reregistrations",
        "5",
        "--poll",
        "block",
    ])
    .unwrap();
    assert_eq!(cli.scenario, ScenarioKind::Churn);
    assert_eq!((cli.churners, cli.reregistrations), (8, 5));
    assert_eq!(
        cli.rate,
        Some(500.0),
        "churn's rate drives its PEs, which spin"
    );
    let cli = Cli::from_args(&[
        "keepalive",
        "--spawn",
        "--population",
        "5000",
        "--connections",
        "50",
        "--keep-alive-interval",
        "250",
    ])
    .unwrap();
    assert_eq!((cli.population(), cli.connections), (5000, 50));
    assert_eq!(cli.keep_alive_interval, Some(250));
    let defaults = Cli::from_args(&["keepalive", "--spawn"]).unwrap();
    assert_eq!(
        (defaults.population(), defaults.keep_alive_interval),
        (1000, None)
    );
    assert_eq!((defaults.churners, defaults.reregistrations), (16, 3));
    let resync = Cli::from_args(&[
        "resync",
        "--profile",
        "carrier",
        "--keep-alive-interval",
        "9000",
    ])
    .unwrap();
    assert_eq!(resync.scenario, ScenarioKind::Resync);
    assert!(resync.spawns(), "resync always starts its registrars");
    assert_eq!((resync.population(), resync.page), (1_000_000, 1024));
    assert_eq!(
        (resync.enrp_generation, resync.timeout),
        (EnrpGeneration::Ng, 60.0)
    );

    for (args, why) in [
        (&["churn", "--spawn"][..], "churn needs --rate"),
        (&["churn", "--rate", "10"][..], "needs a registrar"),
        (
            &["keepalive", "--spawn", "--rate", "10"][..],
            "unexpected argument '--rate'",
        ),
        (
            &[
                "keepalive",
                "--spawn",
                "--population",
                "4",
                "--connections",
                "5",
            ][..],
            "exceeds --population 4",
        ),
        (
            &[
                "keepalive",
                "--registrar",
                "tcp://127.0.0.1:1",
                "--keep-alive-interval",
                "100",
            ][..],
            "it needs --spawn",
        ),
        (
            &["keepalive", "--spawn", "--keep-alive-interval", "0"][..],
            "at least 1 ms",
        ),
        (
            &["churn", "--spawn", "--rate", "10", "--compare-echo"][..],
            "unexpected argument '--compare-echo'",
        ),
        (
            &["churn", "--spawn", "--rate", "10", "--churners", "0"][..],
            "--churners must be at least 1",
        ),
        (
            &["resync", "--registrar", "tcp://127.0.0.1:1"][..],
            "unexpected argument '--registrar'",
        ),
        (&["resync", "--page", "0"][..], "--page must be at least 1"),
        (
            &["resync", "--page", "4097"][..],
            "--page must be from 1 to 4096",
        ),
        (
            &["resync", "--enrp-generation", "rfc", "--page", "129"][..],
            "use --enrp-generation ng or --page 128",
        ),
        (
            &["resync", "--timeout", "0"][..],
            "--timeout must be a positive",
        ),
        (
            &["resync", "--rate", "5"][..],
            "unexpected argument '--rate'",
        ),
        (
            &["resync", "--compare-echo"][..],
            "unexpected argument '--compare-echo'",
        ),
    ] {
        let e = Cli::from_args(args).unwrap_err();
        assert!(e.contains(why), "{args:?}: {e}");
    }
}

#[test]
fn population_runs_are_read_and_nonsense_is_refused() {
    let register = Cli::from_args(&[
        "register",
        "--spawn",
        "--population",
        "1000000",
        "--pool-elements",
        "1000",
        "--policy",
        "wrand",
    ])
    .unwrap();
    assert!(register.registers_new_pes());
    assert_eq!(register.population_pools(), 1000);
    assert_eq!(
        register.population_limit().as_secs(),
        60,
        "no --duration: 60 s"
    );
    assert!(
        !Cli::from_args(&["register", "--spawn"])
            .unwrap()
            .registers_new_pes()
    );
    let storm = Cli::from_args(&[
        "storm",
        "--spawn",
        "--population",
        "1001",
        "--connections",
        "10",
        "--pool-elements",
        "100",
        "--timeout",
        "5",
    ])
    .unwrap();
    assert_eq!(storm.scenario, ScenarioKind::Storm);
    assert_eq!(storm.population_pools(), 11, "ceil(1001 / 100)");
    assert_eq!(
        storm.population_limit().as_secs(),
        5,
        "storm's limit is --timeout"
    );

    for (args, why) in [
        (
            &["register", "--spawn", "--population", "0"][..],
            "--population must be at least 1",
        ),
        (
            &["storm", "--spawn", "--population", "0"][..],
            "--population must be at least 1",
        ),
        (
            &["storm", "--spawn", "--pool-elements", "0"][..],
            "--pool-elements must be at least 1",
        ),
        (
            &[
                "register",
                "--spawn",
                "--population",
                "10",
                "--pool-elements",
                "0",
            ][..],
            "--pool-elements must be at least 1",
        ),
        (
            &[
                "storm",
                "--spawn",
                "--population",
                "10",
                "--connections",
                "11",
            ][..],
            "--connections 11 exceeds --population 10",
        ),
        (
            &[
                "register",
                "--spawn",
                "--population",
                "3",
                "--connections",
                "4",
            ][..],
            "--connections 4 exceeds --population 3",
        ),
        (
            &["storm", "--spawn", "--rate", "10"][..],
            "unexpected argument '--rate'",
        ),
        (
            &["register", "--spawn", "--population", "100", "--rate", "10"][..],
            "drop --rate",
        ),
        (
            &["register", "--spawn", "--population", "100", "--pools", "3"][..],
            "drop --pools",
        ),
        (
            &["storm", "--spawn", "--pes-per-connection", "2"][..],
            "unexpected argument '--pes-per-connection'",
        ),
        (
            &[
                "register",
                "--spawn",
                "--population",
                "100",
                "--warmup",
                "1",
            ][..],
            "drop --warmup",
        ),
        (
            &["register", "--spawn", "--population", "100", "--tls"][..],
            "drop --tls",
        ),
        (
            &["register", "--spawn", "--pool-elements", "5"][..],
            "register without --population re-registers",
        ),
        (
            &["storm", "--spawn", "--timeout", "0"][..],
            "--timeout must be a positive",
        ),
        (&["storm"][..], "storm needs a registrar"),
        (
            &["keepalive", "--spawn", "--policy", "wrr"][..],
            "unexpected argument '--policy'",
        ),
        (
            &["register", "--spawn", "--policy", "fastest"][..],
            "invalid value",
        ),
    ] {
        let e = Cli::from_args(args).unwrap_err();
        assert!(e.contains(why), "{args:?}: {e}");
    }
}

/// Runs `rserpool-bench` with `args`, standard error captured.
fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rserpool-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run rserpool-bench")
}

/// The standard output of `out`, a run of `args` that must have succeeded.
fn stdout(args: &[&str], out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The long options (and `-h`'s `--help`) a help text lists, each from the start of its line.
fn listed_options(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .map(|line| match line.split_once(", ") {
            Some((short, rest)) if short.len() == 2 && short.starts_with('-') => rest,
            _ => line,
        })
        .filter(|line| line.starts_with("--"))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn each_scenario_help_lists_its_own_options_under_headings() {
    let every: BTreeSet<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .map(|long| format!("--{long}"))
        .collect();
    for kind in ScenarioKind::value_variants() {
        let args = [kind.name(), "-h"];
        let help = stdout(&args, &bench(&args));
        let mut expected: BTreeSet<String> = kind
            .options()
            .iter()
            .map(|id| format!("--{}", id.replace('_', "-")))
            .collect();
        assert!(expected.is_subset(&every), "{kind:?}: {expected:?}");
        expected.insert("--help".into());
        assert_eq!(listed_options(&help), expected, "{kind:?}:\n{help}");
        let headings: Vec<usize> = ["Target:", "Load shape:", "Scenario options:", "Output:"]
            .iter()
            .filter_map(|h| help.find(&format!("\n{h}\n")))
            .collect();
        assert!(
            headings.is_sorted(),
            "{kind:?}: headings out of order:\n{help}"
        );
        assert_eq!(headings.len(), 4, "{kind:?}: headings missing:\n{help}");
    }
    let args = ["resync", "--help"];
    let resync = stdout(&args, &bench(&args));
    let output = &resync[resync.find("\nOutput:\n").expect("an Output heading")..];
    assert!(
        output.contains("--json") && !output.contains("--csv"),
        "{resync}"
    );
    assert!(
        resync.contains("so that no keep-alive competes with the transfer"),
        "resync's own help of --keep-alive-interval: {resync}"
    );
    let args = ["hostile", "-h"];
    let hostile = stdout(&args, &bench(&args));
    assert!(
        hostile.contains("Attacker connections [default: 8]") && !hostile.contains("[default: 16]"),
        "hostile's own default of --connections: {hostile}"
    );
}

#[test]
fn options_foreign_to_a_scenario_are_usage_errors() {
    let every: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .map(str::to_owned)
        .collect();
    let mut refused = 0;
    for kind in ScenarioKind::value_variants() {
        let own = kind.options();
        for long in every
            .iter()
            .filter(|long| !own.contains(&long.replace('-', "_").as_str()))
        {
            let flag = format!("--{long}");
            let e = Cli::parse_noting_given(["rserpool-bench", kind.name(), flag.as_str()])
                .expect_err(&format!("{} {flag} was accepted", kind.name()));
            assert_eq!(
                e.kind(),
                ErrorKind::UnknownArgument,
                "{} {flag}",
                kind.name()
            );
            assert_eq!(e.exit_code(), 2);
            refused += 1;
        }
    }
    assert!(refused > 150, "only {refused} refusals");
    // The real exit code and message, and a contradiction as a usage error too.
    for (args, why) in [
        (
            &["resync", "--pipeline", "4"][..],
            "unexpected argument '--pipeline'",
        ),
        (
            &["echo", "--threads", "4", "--connections", "2"][..],
            "--threads 4 exceeds --connections 2",
        ),
        (&["echo", "--csv", "--json"][..], "cannot be used with"),
    ] {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert!(stderr.contains("Usage: rserpool-bench"), "{stderr}");
    }
}

#[test]
fn durations_take_units_after_the_short_flag() {
    let cli = Cli::from_args(&["echo", "-d", "10s", "--warmup", "500ms"]).unwrap();
    assert_eq!((cli.duration, cli.warmup), (10.0, 0.5));
    assert_eq!(
        Cli::from_args(&["echo", "-d", "2m"]).unwrap().duration,
        120.0
    );
    let e = Cli::from_args(&["echo", "-d", "ten"]).unwrap_err();
    assert!(e.contains("is not a duration"), "{e}");
}

/// The fields of one CSV line (RFC 4180: quoted fields may hold commas and doubled quotes).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[test]
fn csv_is_a_header_and_a_row_that_parse() {
    let args = [
        "echo", "-d", "1", "--warmup", "0", "-c", "2", "-p", "4", "--csv", "--quiet",
    ];
    let text = stdout(&args, &bench(&args));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(csv_fields(lines[0]), CSV_COLUMNS);
    let row = csv_fields(lines[1]);
    assert_eq!(row.len(), CSV_COLUMNS.len(), "{text}");
    let field = |name: &str| &row[CSV_COLUMNS.iter().position(|c| *c == name).unwrap()];
    let number = |name: &str| -> f64 {
        field(name)
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {text}"))
    };
    assert_eq!(field("scenario"), "echo");
    assert!(
        field("target").contains("(built-in echo, replies mirrored)"),
        "{text}"
    );
    assert_eq!(
        (field("connections"), field("pipeline")),
        (&"2".into(), &"4".into())
    );
    assert_eq!(field("rate"), "", "closed loop");
    assert!(number("ops") > 0.0 && number("ops_per_s") > 0.0, "{text}");
    assert_eq!(number("errors"), 0.0);
    let latencies = [
        "latency_min_us",
        "latency_p50_us",
        "latency_p90_us",
        "latency_p99_us",
        "latency_p99_9_us",
        "latency_max_us",
    ]
    .map(number);
    assert!(latencies[0] > 0.0 && latencies.is_sorted(), "{text}");
    assert!(number("latency_stdev_us") >= 0.0);
}

/// The bytes of base64 `text` (standard alphabet, padded), as the HDR log encodes histograms.
fn base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextets: Vec<u32> = text
        .bytes()
        .filter(|&b| b != b'=')
        .map(|b| ALPHABET.iter().position(|&a| a == b).expect("base64") as u32)
        .collect();
    let mut bytes = Vec::new();
    for chunk in sextets.chunks(4) {
        let bits = chunk.iter().fold(0u32, |acc, &s| acc << 6 | s) << (6 * (4 - chunk.len()));
        bytes.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    bytes
}

#[test]
fn the_hdr_log_reads_back_with_every_op() {
    let path: PathBuf =
        std::env::temp_dir().join(format!("rserpool-bench-{}.hlog", std::process::id()));
    let file = path.to_str().unwrap();
    let args = [
        "echo",
        "-d",
        "1",
        "--warmup",
        "0",
        "-c",
        "2",
        "-p",
        "4",
        "--hdr-log",
        file,
        "--json",
        "--quiet",
    ];
    let report: Value = serde_json::from_str(&stdout(&args, &bench(&args))).unwrap();
    let log = std::fs::read(&path).expect("the HDR log");
    std::fs::remove_file(&path).unwrap();
    let intervals: Vec<_> = IntervalLogIterator::new(&log)
        .map(|e| e.expect("a well-formed log"))
        .filter_map(|e| match e {
            LogEntry::Interval(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(intervals.len(), 1, "{}", String::from_utf8_lossy(&log));
    let interval = &intervals[0];
    assert_eq!(interval.tag(), None, "a single run's interval is untagged");
    assert_eq!(interval.duration().as_secs_f64(), 1.0);
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut base64(interval.encoded_histogram()).as_slice())
        .expect("a V2 histogram");
    assert!(!h.is_empty());
    assert_eq!(Some(h.len()), report["ops"].as_u64(), "every op: {report}");
    let max_us = report["latency_us"]["max"].as_f64().unwrap();
    assert!((h.max() as f64 / 1000.0 - max_us).abs() < 0.01, "{report}");
    // The interval's max is in milliseconds, as HdrHistogram's logs have it.
    assert!((interval.max() - max_us / 1000.0).abs() < 0.001);
}

#[test]
fn json_has_a_second_per_second_of_the_run_whose_ops_add_up() {
    let args = [
        "echo", "-d", "3", "--warmup", "0.2", "-c", "2", "-p", "4", "--json", "--quiet",
    ];
    let report: Value = serde_json::from_str(&stdout(&args, &bench(&args))).unwrap();
    let seconds = report["per_second"].as_array().expect("per_second");
    assert_eq!(seconds.len(), 3, "{report}");
    let mut sum = 0;
    for (k, second) in seconds.iter().enumerate() {
        assert_eq!(second["t"], k + 1, "{second}");
        let ops = second["ops"].as_u64().unwrap();
        assert!(ops > 0, "{second}");
        let (p50, p99) = (
            second["p50_us"].as_f64().unwrap(),
            second["p99_us"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99, "{second}");
        sum += ops;
    }
    assert_eq!(Some(sum), report["ops"].as_u64(), "{report}");
}
