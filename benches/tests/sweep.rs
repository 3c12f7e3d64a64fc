//! `rserpool-bench sweep` against the real registrar: a tiny sweep whose JSON lists every point,
//! whose written profile carries the figures in its comments and is accepted by
//! `rserpool-registrar --config FILE --check-config`. No speed is asserted.

mod common;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// A file in the temporary directory for this test process.
fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rserpool-sweep-{}-{name}", std::process::id()))
}

#[test]
fn a_tiny_sweep_writes_a_profile_the_registrar_accepts() {
    let registrar = common::registrar_bin();
    let profile = temp_file("tuned.toml");
    let path = profile.to_str().expect("a UTF-8 temporary path");
    let args = [
        "sweep",
        "--points",
        "3",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--connections",
        "4",
        "--pipeline",
        "4",
        "--pools",
        "10",
        "--pool-elements",
        "2",
        "--verify",
        "--write-profile",
        path,
    ];
    let v = common::report(&args);
    let context = serde_json::to_string_pretty(&v).unwrap_or_default();

    // Every point measured, with its figures; the base first; what --points cut named.
    let points = v["points"].as_array().expect("points");
    assert_eq!(points.len(), 3, "{context}");
    assert_eq!(points[0]["kind"], "base", "{context}");
    assert_eq!(points[0]["name"], "base", "{context}");
    for p in points {
        assert!(p["ops_per_s"].as_f64().is_some_and(|x| x > 0.0), "{p}");
        assert!(p["p99_us"].as_f64().is_some_and(|x| x > 0.0), "{p}");
        assert_eq!(p["errors"], 0, "{p}");
    }
    // Two knobs varied alone, each with one key changed.
    for p in &points[1..] {
        assert_eq!(p["kind"], "knob", "{p}");
        assert_eq!(p["changed"].as_object().map(|m| m.len()), Some(1), "{p}");
    }
    assert!(
        !v["left_out"].as_array().expect("left_out").is_empty(),
        "{context}"
    );
    assert_eq!(v["profile_written"], path, "{context}");

    // The chosen point, and its verification whenever it is not the base.
    let n = v["chosen"]["n"].as_u64().expect("the chosen point") as usize;
    let chosen = &points[n];
    assert_eq!(v["chosen"]["is_base"], n == 0, "{context}");
    // What the file holds: the chosen point, or the base when the choice did not hold.
    let adopted = if n == 0 {
        assert!(v["verify"].is_null(), "{context}");
        &points[0]
    } else {
        let holds = v["verify"]["holds"].as_bool().expect("verify.holds");
        assert!(v["verify"]["base"]["ops_per_s"].is_number(), "{context}");
        assert!(v["verify"]["chosen"]["ops_per_s"].is_number(), "{context}");
        if holds { chosen } else { &points[0] }
    };
    assert_eq!(v["adopted"], adopted["name"], "{context}");

    // The file: the host, the command, the figures of the chosen point and the base, and the
    // chosen keys changed.
    let text = std::fs::read_to_string(&profile).expect("the written profile");
    let figures = |p: &Value| {
        let number = |key: &str| p[key].as_f64().expect("a measured point");
        format!(
            "{:.0} ops/s, p99 {:.1} us",
            number("ops_per_s"),
            number("p99_us")
        )
    };
    let cores = v["host"]["cores"].as_u64().expect("cores");
    let cpu = v["host"]["cpu"].as_str().expect("cpu");
    for line in [
        format!("# Host: {cpu}, {cores} usable cores"),
        "# Command: rserpool-bench sweep --points 3".to_owned(),
        format!("Base profile: {}", figures(&points[0])),
    ] {
        assert!(text.contains(&line), "{line:?} missing in:\n{text}");
    }
    if n == 0 {
        assert!(text.contains("the base profile `default` itself"), "{text}");
    } else {
        assert!(
            text.contains(&format!("Chosen point: {}", figures(chosen))),
            "{text}"
        );
        assert!(text.contains("Measured in the same run: "), "{text}");
        assert!(text.contains("# Verified: base again "), "{text}");
    }
    let changed = adopted["changed"].as_object().expect("changed");
    for (key, value) in changed {
        let key = key.rsplit('.').next().expect("section.key");
        let line = format!("\n{key} = {value} # sweep: profile `default` has ");
        assert!(text.contains(&line), "{line:?} missing in:\n{text}");
    }
    assert_eq!(text.matches("# sweep: ").count(), changed.len(), "{text}");

    // The registrar takes it as a configuration file of every key.
    let check = Command::new(&registrar)
        .arg("--config")
        .arg(&profile)
        .arg("--check-config")
        .output()
        .expect("run rserpool-registrar --check-config");
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let max_batch = adopted["changed"]["io.max_batch"]
        .as_u64()
        .or(v["base"]["io.max_batch"].as_u64())
        .expect("the base's io.max_batch");
    assert!(
        printed.contains(&format!("max_batch = {max_batch}  # from {path}:")),
        "the registrar read the file's io.max_batch: {printed}"
    );
    std::fs::remove_file(&profile).expect("remove the written profile");
}

#[test]
fn a_profile_path_that_cannot_be_written_fails_before_any_point() {
    let path = temp_file("missing-dir").join("tuned.toml");
    let args = [
        "sweep",
        "--points",
        "2",
        "--write-profile",
        path.to_str().expect("a UTF-8 temporary path"),
    ];
    let out = common::run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--write-profile"), "{stderr}");
    // It failed before the base profile was read, let alone measured.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
