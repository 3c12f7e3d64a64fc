//! `rserpool-bench hostile` end to end (issue 17): the registrar built next to the test, spawned
//! on its default worker count with a UDP listener, 64 legitimate PEs in 8 pools answering
//! keep-alives every 200 ms, and 100 000 hostile messages from 8 attacker connections (TCP, or
//! MPTCP) and UDP. Passes only if the soak's checks all passed (the registrar alive, every
//! legitimate PE resolvable, VmRSS growth within 64 MiB), every mutation kind and action-bit
//! pattern was sent and the registrar counted the garbage. A run whose memory bound cannot hold
//! shows that the checks fail. Needs `cargo build -p rserpool-registrar` (or `cargo test
//! --workspace`) in the same profile.

use serde_json::Value;

mod common;

/// Hostile messages per soak: the bound for CI.
const MESSAGES: u64 = 100_000;

#[test]
fn a_hundred_thousand_hostile_messages_over_tcp_and_udp_leave_every_legitimate_pe() {
    common::assert_hostile_soak_passed(MESSAGES, &common::hostile_soak("tcp", MESSAGES, "17"));
}

#[test]
fn a_hundred_thousand_hostile_messages_over_mptcp_and_udp_leave_every_legitimate_pe() {
    common::assert_hostile_soak_passed(MESSAGES, &common::hostile_soak("mptcp", MESSAGES, "18"));
}

/// The checks can fail: a memory bound of 0 MiB does not hold while the registrar takes in
/// 20 000 hostile messages, and the run says so and exits non-zero.
#[test]
fn a_memory_bound_the_registrar_exceeds_fails_the_soak() {
    common::registrar_bin();
    let args = [
        "hostile",
        "--spawn",
        "--messages",
        "20000",
        "--check-every",
        "5000",
        "--max-rss-growth-mib",
        "0",
        "--seed",
        "19",
    ];
    let out = common::run(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let v: Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!(v["passed"], false, "{stdout}");
    let failures = v["failures"].as_array().expect("failures");
    assert!(
        failures
            .iter()
            .any(|f| f.as_str().is_some_and(|f| f.contains("VmRSS grew"))),
        "{stdout}"
    );
    // Nothing else went wrong: every failure is about memory.
    assert!(
        failures
            .iter()
            .all(|f| f.as_str().is_some_and(|f| f.contains("VmRSS"))),
        "{stdout}"
    );
}
