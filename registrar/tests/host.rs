//! `rserpool-registrar --check-host` on this machine, as an operator runs it: the low-latency
//! profile's spinning workers take every core the process may use, which it must report with
//! the fix; a bad configuration is a usage error. Each check against faked hosts is in
//! `registrar/src/host_check/tests.rs`.

use std::process::Command;

fn check_host(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rserpool-registrar"))
        .arg("--check-host")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_low_latency_profile_is_told_its_spinning_workers_share_every_core() {
    // workers = 0 takes every usable core, and busy_poll_us = 50 spins on each: on any host.
    let (code, out, err) = check_host(&["--profile", "low-latency"]);
    assert!(
        out.contains("warning  busy polling on shared cores:"),
        "{out}{err}"
    );
    assert!(
        out.contains("fix: give the registrar cores of its own"),
        "{out}"
    );
    // Every check line names a severity, and the summary counts them.
    let summary = out.lines().last().unwrap();
    assert!(summary.ends_with("notes"), "{summary}");
    let errors = out.lines().filter(|l| l.starts_with("error ")).count();
    assert_eq!(code, Some(i32::from(errors > 0)), "{out}");
}

#[test]
fn the_default_profile_does_not_spin() {
    let (_, out, err) = check_host(&["--profile", "default"]);
    assert!(out.contains("workers and cores:"), "{out}{err}");
    assert!(!out.contains("busy polling on shared cores"), "{out}");
}

#[test]
fn a_bad_configuration_is_a_usage_error() {
    let (code, _, err) = check_host(&["--profile", "no-such-profile"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no-such-profile"), "{err}");
}
