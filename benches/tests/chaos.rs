//! `rserpool-bench chaos` end to end: three real registrars on the `carrier` profile (ENRP timers
//! of 200/400/300 ms), PEs and PUs on them, 45 s of seeded faults (registrars killed and
//! restarted, stopped and continued, restarted with a new ID; PEs deregistering, killed, hung,
//! joining). Passes only if the checker found no violation, every fault kind was injected and
//! enough resolutions were judged. Needs the registrar and the `rserpool` command line next to
//! the test (`cargo build -p rserpool-registrar -p rserpool-endpoint`, or `cargo test
//! --workspace`, in the same profile).

use serde_json::Value;

mod common;

/// The seed of the fault schedule (a failure names it; `--seed` replays the schedule, not the
/// timing).
const SEED: &str = "13";
/// Seconds of faults.
const DURATION: &str = "45";
/// Resolutions the checker must at least have judged: 3 registrars × 3 pools every 150 ms for
/// 45 s make about 2700; faults make some unsettled.
const MIN_JUDGED: u64 = 1000;

#[test]
fn a_scope_under_faults_keeps_every_bound() {
    common::registrar_bin();
    common::rserpool_bin();
    let logs = std::env::temp_dir().join(format!("rserpool-chaos-test-{}", std::process::id()));
    let out = common::run(&[
        "chaos",
        "--profile",
        "carrier",
        "--duration",
        DURATION,
        "--pool-elements",
        "4",
        "--seed",
        SEED,
        "--logs",
        logs.to_str().expect("a UTF-8 temporary directory"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout: {stdout}\nstderr: {stderr}"));
    let context = format!(
        "seed {SEED}, logs in {}:\n{}",
        logs.display(),
        serde_json::to_string_pretty(&v).unwrap_or_default()
    );
    for (kind, n) in v["faults"].as_object().expect("faults by kind") {
        assert!(n.as_u64() > Some(0), "no {kind} fault injected; {context}");
    }
    assert_eq!(
        v["faults"].as_object().map(|f| f.len()),
        Some(7),
        "{context}"
    );
    let judged = v["resolutions_judged"].as_u64().unwrap_or(0);
    assert!(
        judged >= MIN_JUDGED,
        "only {judged} resolutions judged; {context}"
    );
    assert_eq!(
        v["violations"].as_array().map(Vec::len),
        Some(0),
        "{context}"
    );
    // A registrar restarted at once gets its ports back by itself (it retries a port the
    // killed one's io_uring teardown still holds): the bench never has to start it again.
    assert_eq!(v["start_retries"].as_u64(), Some(0), "{context}");
    assert!(out.status.success(), "exit {}; {context}", out.status);
    let _ = std::fs::remove_dir_all(&logs);
}
