//! The `resync` scenario end to end with the real daemon (built next to this test by `cargo test
//! --workspace`, or `cargo build -p rserpool-registrar`): two registrars over loopback TCP, a
//! population registered at the first, the second started with it as ENRP peer until it holds
//! every PE; the same with `--restart same-id` and `--restart new-id`, the second registrar then
//! killed and restarted until it holds every PE again; and the error when it does not within
//! `--timeout`.

use std::process::Output;

mod common;

/// Runs `rserpool-bench resync` with `args` (see [`common::run`]).
fn resync(args: &[&str]) -> Output {
    common::registrar_bin();
    common::run(&[&["resync"], args].concat())
}

#[test]
fn a_new_registrar_receives_every_pe_of_its_mentor() {
    let args = ["--population", "20000", "--connections", "4"];
    let v = common::parse(&args, &resync(&args));
    assert_eq!(v["scenario"], "resync");
    assert_eq!(v["population"], 20000);
    assert_eq!(v["pools"], 2000, "pools of 10 PEs: {v}");
    assert_eq!(v["connections"], 4);
    assert_eq!(
        (v["enrp_generation"].clone(), v["page"].clone()),
        ("ng".into(), 1024.into())
    );
    let (start, sync) = (
        v["start_s"].as_f64().unwrap(),
        v["sync_s"].as_f64().unwrap(),
    );
    assert!(0.0 < start && start < sync && sync < 60.0, "{v}");
    // At most 1024 PEs a page, and a page stops at about 48 KiB: at least 20 pages.
    let pages = v["pages"].as_u64().unwrap();
    assert!((20..=20_000).contains(&pages), "{v}");
    assert!(v["newcomer_busy_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["mentor"].as_str().unwrap().contains("generation=ng"),
        "{v}"
    );
}

#[test]
fn a_registrar_not_in_sync_in_time_is_an_error() {
    let out = resync(&[
        "--population",
        "20000",
        "--connections",
        "4",
        "--page",
        "16",
        "--timeout",
        "0.001",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "no report without a sync");
    assert!(
        stderr.contains("of 20000 PEs") && stderr.contains("not in sync within --timeout 0.001"),
        "{stderr}"
    );
}

/// Runs a 20 000-PE resync with `--restart kind` and checks that the restarted registrar held
/// the whole population again.
fn restarted_registrar_gets_the_population_back(kind: &str) {
    let args = [
        "--population",
        "20000",
        "--connections",
        "4",
        "--restart",
        kind,
    ];
    let v = common::parse(&args, &resync(&args));
    assert_eq!(v["population"], 20000);
    assert_eq!(v["restart"], kind, "{v}");
    // The run reports a restart time only once the restarted registrar held all 20000 PEs.
    let restart = v["restart_s"].as_f64().expect("a restart time");
    assert!(0.0 < restart && restart < 60.0, "{v}");
}

#[test]
fn a_registrar_restarted_with_its_id_gets_every_pe_back() {
    restarted_registrar_gets_the_population_back("same-id");
}

#[test]
fn a_registrar_restarted_with_a_new_id_gets_every_pe_back() {
    restarted_registrar_gets_the_population_back("new-id");
}
