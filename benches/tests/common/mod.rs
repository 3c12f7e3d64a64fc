//! What the end-to-end tests of `rserpool-bench` share: the daemon binaries they need (built next
//! to the test by `cargo test --workspace`), running `rserpool-bench` itself for its JSON
//! report, and the checks of a `hostile` soak's report.

// Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use rserpool_bench::target::default_registrar_bin;
use serde_json::Value;

/// The `rserpool-registrar` binary next to this test; fails the test with what to build when it
/// is missing.
pub fn registrar_bin() -> PathBuf {
    let bin = default_registrar_bin().expect("the test's own path");
    require(&bin, "rserpool-registrar");
    bin
}

/// The `rserpool` command line next to this test (see [`registrar_bin`]).
pub fn rserpool_bin() -> PathBuf {
    let bin = registrar_bin().with_file_name("rserpool");
    require(&bin, "rserpool-endpoint");
    bin
}

fn require(bin: &std::path::Path, package: &str) {
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p {package}` (with --release for a release test), or \
         `cargo test --workspace`, before this test",
        bin.display()
    );
}

/// Runs `rserpool-bench` with `args`, `--json` and `--quiet`, its standard error captured.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rserpool-bench"))
        .args(args)
        .args(["--json", "--quiet"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run rserpool-bench")
}

/// The JSON report of a run that must succeed (see [`run`]).
pub fn report(args: &[&str]) -> Value {
    parse(args, &run(args))
}

/// The JSON report of `out`, a run of `args` that must have succeeded.
pub fn parse(args: &[&str], out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).expect("one JSON object")
}

/// Asserts the JSON report `v` of a `hostile` soak of `messages` messages with the legitimate
/// The `hostile` soak of `messages` over `transport` with `seed` against a spawned registrar on
/// its default worker count, the legitimate PEs' keep-alives every 200 ms, checks every 10 000
/// messages: its JSON report.
pub fn hostile_soak(transport: &str, messages: u64, seed: &str) -> Value {
    registrar_bin();
    let messages = messages.to_string();
    report(&[
        "hostile",
        "--spawn",
        "--transport",
        transport,
        "--messages",
        &messages,
        "--check-every",
        "10000",
        "--keep-alive-interval",
        "200",
        "--seed",
        seed,
    ])
}

/// PEs' keep-alives every 200 ms and a spawned registrar: every check passed, every mutation
/// kind and action-bit pattern was sent, the legitimate PEs answered keep-alives throughout, and
/// the registrar counted the garbage it received.
pub fn assert_hostile_soak_passed(messages: u64, v: &Value) {
    let context = serde_json::to_string_pretty(v).unwrap_or_default();
    let n = |key: &str| {
        v[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key}; {context}"))
    };
    assert_eq!(v["passed"], true, "{context}");
    assert_eq!(n("failure_count"), 0, "{context}");
    assert_eq!(n("messages"), messages, "{context}");
    // One check per 10 000 messages (some may pass together under load) and the final one.
    assert!(n("checks") > messages / 20_000, "{context}");
    assert_eq!(n("checks"), n("checks_passed"), "{context}");
    for (kind, count) in v["by_kind"].as_object().expect("kinds") {
        assert!(
            count.as_u64() > Some(messages / 10),
            "few {kind}; {context}"
        );
    }
    assert_eq!(v["by_kind"].as_object().map(|k| k.len()), Some(6));
    for count in v["unknown_by_action"].as_array().expect("four patterns") {
        assert!(count.as_u64() > Some(messages / 50), "{context}");
    }
    assert!(n("from_corpus") > messages / 4, "{context}");
    assert!(n("over_udp") > messages / 5, "{context}");
    assert_eq!(n("legit_pes"), 64, "{context}");
    assert!(
        n("keep_alives_answered") >= 64,
        "the legitimate PEs answered keep-alives during the attack; {context}"
    );
    let rss = &v["rss"];
    let (start, peak) = (rss["start"].as_u64(), rss["peak"].as_u64());
    assert!(start > Some(0) && peak >= start, "{context}");
    // The registrar saw the messages and refused most: it counts what it received.
    let received = v["registrar_messages_received"].as_f64().unwrap_or(0.0);
    let errors = v["registrar_decode_errors"].as_f64().unwrap_or(0.0);
    assert!(received > 0.7 * messages as f64, "{context}");
    assert!(errors > 0.5 * messages as f64, "{context}");
}
