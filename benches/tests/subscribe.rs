//! The `subscribe` scenario end to end with the real daemon (built next to this test by `cargo
//! test --workspace`, or `cargo build -p rserpool-registrar`) on its default profile and worker
//! count: subscriptions answered with the A bit, pushes timed, and every subscription holding its
//! pool's last change when the changes stop.

mod common;

#[test]
fn every_subscription_gets_pushes_up_to_its_pools_last_change() {
    common::registrar_bin();
    let v = common::report(&[
        "subscribe",
        "--spawn",
        "--connections",
        "4",
        "--subscribers",
        "200",
        "--pools",
        "60",
        "--rate",
        "600",
        "--duration",
        "1",
        "--warmup",
        "0.2",
    ]);
    assert_eq!(v["scenario"], "subscribe", "{v}");
    assert_eq!(
        (
            v["subscribers"].as_u64(),
            v["accepted"].as_u64(),
            v["refused"].as_u64()
        ),
        (Some(200), Some(200), Some(0)),
        "{v}"
    );
    let changes = v["changes"].as_u64().expect("changes");
    assert!(changes >= 600, "{v}");
    // Each change of a pool reaches its subscribers (about 3.3 per pool), coalesced at most per
    // push interval; at least one push per subscription happened, and each was timed once.
    let pushes = v["measured_pushes"].as_u64().expect("pushes");
    assert!(pushes >= 200, "{v}");
    assert_eq!(v["stale"].as_u64(), Some(0), "{v}");
    let p99 = v["latency_us"]["p99"].as_f64().expect("p99");
    assert!(p99 > 0.0, "{v}");
}
