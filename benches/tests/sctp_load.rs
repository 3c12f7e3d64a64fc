//! `rserpool-bench` over kernel SCTP (issue 16): short `resolve`, `register`, `churn` and
//! `keepalive` runs over one-to-one SCTP associations against a registrar spawned with an SCTP
//! listener (default profile, one worker), `resolve` and `register` with `--compare-echo`
//! against the SCTP echo server (one one-to-many socket), and `echo --transport sctp`. Each
//! checks the answers, not the speed: no errors, ops counted, and the totals the report gives
//! (every request answered as it should be).
//!
//! The build host has no kernel SCTP, so this target is `test = false` and CI runs it in
//! user-mode Linux like `hostile_sctp`:
//! `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/uml-run.sh cargo test -p rserpool-bench --test sctp_load`.
//! Without kernel SCTP the runs cannot connect and the tests fail with the reason.

mod common;

use serde_json::Value;

/// The load shape every run shares: short, a few associations, a few requests in flight.
const SHAPE: [&str; 8] = [
    "--duration",
    "1",
    "--warmup",
    "0.2",
    "--connections",
    "4",
    "--pipeline",
    "8",
];

/// The JSON report of `rserpool-bench SCENARIO --spawn --transport sctp SHAPE ARGS`.
fn run(scenario: &str, args: &[&str]) -> Value {
    common::registrar_bin();
    let mut all = vec![scenario, "--spawn", "--transport", "sctp"];
    all.extend(SHAPE);
    all.extend(args);
    let v = common::report(&all);
    eprintln!("{all:?}: {v}");
    v
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing: {v}"))
}

/// A run of the echo server: ops, no errors, every reply of the size asked.
fn assert_echo(echo: &Value, scenario: &Value) {
    assert!(u(echo, "ops") > 0, "{echo}");
    assert_eq!(u(echo, "errors"), 0, "{echo}");
    assert!(
        echo["target"].as_str().unwrap().starts_with("sctp://"),
        "{echo}"
    );
    let want = scenario["mean_reply_bytes"].as_f64().unwrap();
    let got = echo["mean_reply_bytes"].as_f64().unwrap();
    assert!((got - want).abs() <= 4.0, "echo {got} B for {want} B");
}

#[test]
fn resolutions_over_sctp_are_answered_with_pes_and_compared_with_the_echo() {
    let v = run(
        "resolve",
        &["--pools", "10", "--pool-elements", "3", "--compare-echo"],
    );
    let r = &v["scenario"];
    assert!(r["target"].as_str().unwrap().starts_with("sctp://"), "{r}");
    assert!(u(r, "ops") > 0, "{r}");
    assert_eq!(u(r, "errors"), 0, "{r}");
    let t = &r["totals"];
    // Every resolution sent, warm-up and the answers after the window included, found PEs.
    assert!(u(t, "requests") >= u(r, "ops"), "{t}");
    assert_eq!(u(t, "resolutions_found"), u(t, "requests"), "{t}");
    assert_eq!(u(t, "resolutions_failed"), 0, "{t}");
    // Setup registered 30 PEs and deregistered them, every answer an acceptance.
    let s = &r["setup"];
    assert_eq!(u(s, "registrations_accepted"), 30, "{s}");
    assert_eq!(u(s, "registrations_rejected"), 0, "{s}");
    assert_eq!(u(s, "deregistrations"), 30, "{s}");
    assert_eq!(u(s, "requests"), 60, "{s}");
    // Three PEs per answer: the replies have their size.
    assert!(r["mean_reply_bytes"].as_f64().unwrap() > 60.0, "{r}");
    assert_echo(&v["echo"], r);
    assert!(v["ratio"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn re_registrations_over_sctp_are_accepted_and_compared_with_the_echo() {
    let v = run("register", &["--pes-per-connection", "2", "--compare-echo"]);
    let r = &v["scenario"];
    assert!(u(r, "ops") > 0, "{r}");
    assert_eq!(u(r, "errors"), 0, "{r}");
    assert_eq!(u(r, "rejections"), 0, "{r}");
    let t = &r["totals"];
    // Every request answered: the registrations accepted, then the 8 PEs deregistered.
    assert_eq!(u(t, "registrations_rejected"), 0, "{t}");
    assert_eq!(u(t, "deregistrations"), 8, "{t}");
    assert_eq!(
        u(t, "registrations_accepted") + u(t, "deregistrations"),
        u(t, "requests"),
        "{t}"
    );
    assert!(u(t, "registrations_accepted") >= u(r, "ops"), "{t}");
    assert_echo(&v["echo"], r);
}

#[test]
fn churn_over_sctp_registers_and_deregisters_while_pools_resolve() {
    let v = run(
        "churn",
        &[
            "--pools",
            "4",
            "--pool-elements",
            "2",
            "--churners",
            "2",
            "--rate",
            "50",
        ],
    );
    let (churn, resolve) = (&v["churn"], &v["resolve"]);
    for s in [churn, resolve] {
        assert!(u(s, "ops") > 0, "{s}");
        assert_eq!(u(s, "errors"), 0, "{s}");
    }
    let t = &resolve["totals"];
    assert_eq!(u(t, "resolutions_found"), u(t, "requests"), "{t}");
    let c = &churn["totals"];
    assert_eq!(u(c, "registrations_rejected"), 0, "{c}");
}

#[test]
fn keep_alives_over_sctp_are_acked() {
    common::registrar_bin();
    let args = [
        "keepalive",
        "--spawn",
        "--transport",
        "sctp",
        "--population",
        "40",
        "--pools",
        "4",
        "--connections",
        "4",
        "--keep-alive-interval",
        "100",
        "--duration",
        "1",
        "--warmup",
        "0.3",
    ];
    let v = common::report(&args);
    eprintln!("{args:?}: {v}");
    assert!(u(&v, "ops") > 0, "{v}");
    assert_eq!(u(&v, "errors"), 0, "{v}");
    let t = &v["totals"];
    assert_eq!(u(t, "registrations_accepted"), 40, "{t}");
    assert_eq!(u(t, "deregistrations"), 40, "{t}");
    assert!(u(t, "keep_alive_acks") >= u(&v, "ops"), "{t}");
}

#[test]
fn the_sctp_echo_server_mirrors_every_request() {
    let args = [
        "echo",
        "--transport",
        "sctp",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
        "--connections",
        "4",
        "--pipeline",
        "8",
    ];
    let v = common::report(&args);
    assert!(u(&v, "ops") > 0, "{v}");
    assert_eq!(u(&v, "errors"), 0, "{v}");
    assert_eq!(v["mean_reply_bytes"], 20.0, "mirrored: {v}");
}
