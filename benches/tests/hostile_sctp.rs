//! `rserpool-bench hostile` over kernel SCTP (issue 17): the registrar spawned with an SCTP and a
//! UDP listener on its default worker count, 64 legitimate PEs on SCTP associations answering
//! keep-alives every 200 ms, and 100 000 hostile messages from the scenario's 8 attacker
//! associations (each from an address of its own in 127.2.0.0/16 … 127.9.0.0/16) and over UDP.
//! Passes only if every check of the soak passed (see `common::assert_hostile_soak_passed`).
//!
//! Eight attackers that send as fast as they can used to get legitimate PEs removed by keep-alive
//! timeout while they shared the registrar's one-to-many socket with them: the kernel dropped
//! the PEs' acks from the full shared buffer (`docs/hostile-soak.md`, "SCTP under overload").
//! Each association now has a socket of its own.
//!
//! The build host has no kernel SCTP, so this target is `test = false` and CI runs it in
//! user-mode Linux like `registrar/tests/kernel_sctp.rs`:
//! `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/ci/uml-run.sh cargo test -p rserpool-bench --test hostile_sctp`.
//! Without kernel SCTP the soak cannot connect and the test fails with the reason.

mod common;

/// Hostile messages: the bound for CI.
const MESSAGES: u64 = 100_000;

#[test]
fn a_hundred_thousand_hostile_messages_over_sctp_and_udp_leave_every_legitimate_pe() {
    let started = std::time::Instant::now();
    let v = common::hostile_soak("sctp", MESSAGES, "20");
    eprintln!(
        "{MESSAGES} hostile messages over SCTP in {:?}: {v}",
        started.elapsed()
    );
    common::assert_hostile_soak_passed(MESSAGES, &v);
}
