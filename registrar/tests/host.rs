//! `rserpool-registrar --check-host` on this machine, as an operator runs it: workers that spin
//! (`registrar.busy_poll_us`, as the low-latency profile did before it was measured) on every core
//! the process may use must be reported with the fix; no profile as shipped spins; the
//! low-latency profile's pinned workers on every core are said at start; a bad configuration is
//! a usage error. Each check against faked hosts is in
//! `registrar/src/host_check/tests.rs`.

mod common;

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
fn spinning_workers_on_every_core_are_reported_with_the_fix() {
    // workers = 0 takes every usable core, and busy_poll_us = 50 spins on each: on any host.
    let config =
        std::env::temp_dir().join(format!("rserpool-host-spin-{}.toml", std::process::id()));
    std::fs::write(&config, "[registrar]\nbusy_poll_us = 50\n").unwrap();
    let (code, out, err) = check_host(&[
        "--profile",
        "low-latency",
        "--config",
        config.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&config);
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
fn no_profile_as_shipped_spins() {
    for profile in ["default", "carrier", "low-latency"] {
        let (_, out, err) = check_host(&["--profile", profile]);
        assert!(out.contains("workers and cores:"), "{profile}: {out}{err}");
        assert!(
            !out.contains("busy polling on shared cores"),
            "{profile}: {out}"
        );
    }
}

#[test]
fn the_low_latency_profile_says_at_start_that_its_pinned_workers_take_every_core() {
    // One pinned worker per usable core, on any host: the daemon says so when it starts.
    let daemon = common::Daemon::start(&[
        "--profile",
        "low-latency",
        "--asap",
        "tcp://127.0.0.1:0",
        "--enrp",
        "tcp://127.0.0.1:0",
        "--metrics",
        "off",
    ]);
    daemon.signal("TERM");
    let (code, err) = daemon.wait(std::time::Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    let note = err
        .lines()
        .find(|l| l.contains("pinned workers on every usable core"))
        .unwrap_or_else(|| panic!("no note about pinned workers: {err}"));
    assert!(note.contains("INFO"), "{note}");
    assert!(note.contains("registrar.pin_workers = false"), "{note}");
}

#[test]
fn a_bad_configuration_is_a_usage_error() {
    let (code, _, err) = check_host(&["--profile", "no-such-profile"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no-such-profile"), "{err}");
}
