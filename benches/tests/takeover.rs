//! The `takeover` scenario end to end with the real daemon (built next to this test by `cargo
//! test --workspace`, or `cargo build -p rserpool-registrar`): three registrars on the `carrier`
//! profile over loopback TCP, PEs registered at the first, the first killed; the survivors must
//! answer every PE homed at one of them within the profile's takeover bound and a second.

use serde_json::Value;

mod common;

#[test]
fn the_survivors_take_a_killed_registrars_pes_over_within_the_bound() {
    common::registrar_bin();
    let v = common::report(&[
        "takeover",
        "--profile",
        "carrier",
        "--population",
        "200",
        "--connections",
        "4",
    ]);
    assert_eq!(v["scenario"], "takeover");
    assert_eq!(v["signal"], "SIGKILL");
    assert_eq!(
        (v["population"].clone(), v["pools"].clone()),
        (200.into(), 20.into())
    );
    // The carrier profile's timers, as the registrar itself reports them.
    let timers = &v["timers_ms"];
    let ms = |key: &str| {
        timers[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {v}"))
    };
    assert_eq!(
        (
            ms("heartbeat_interval"),
            ms("max_time_last_heard"),
            ms("max_time_no_response")
        ),
        (200, 400, 300),
        "{v}"
    );
    let bound = (ms("max_time_last_heard") + ms("max_time_no_response") + ms("heartbeat_interval"))
        as f64
        / 1000.0;
    let took = v["takeover_s"].as_f64().expect("a takeover time");
    assert!(0.0 < took && took < bound + 1.0, "{v}");
    // Every PE moved to a survivor (PR IDs 2 and 3), and a survivor counted the takeover.
    let homes = v["homes"].as_object().expect("homes by PR ID");
    assert!(homes.keys().all(|id| id == "2" || id == "3"), "{v}");
    assert_eq!(
        homes.values().filter_map(Value::as_u64).sum::<u64>(),
        200,
        "{v}"
    );
    let takeovers = v["takeovers"].as_object().expect("takeovers by PR ID");
    assert!(
        takeovers.values().filter_map(Value::as_u64).sum::<u64>() >= 1,
        "{v}"
    );
}
