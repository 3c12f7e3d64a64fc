//! `--tls`: a spawned `rserpool-registrar` (built next to this test) on a `tcp+tls://` listener
//! with the run's throwaway certificates, resolutions over TLS against it, and the TLS echo
//! server under the same load (`--compare-echo`): both answer every request, and the report
//! names the TLS endpoints.

mod common;

#[test]
fn resolutions_over_tls_and_the_tls_echo_are_compared_in_one_run() {
    let bin = common::registrar_bin();
    let args = [
        "resolve",
        "--spawn",
        "--tls",
        "--registrar-bin",
        bin.to_str().unwrap(),
        "--workers",
        "1",
        "--connections",
        "4",
        "--pipeline",
        "4",
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
        "--pools",
        "10",
        "--compare-echo",
    ];
    let v = common::report(&args);
    for side in ["scenario", "echo"] {
        let s = &v[side];
        assert!(
            s["target"]
                .as_str()
                .unwrap()
                .starts_with("tcp+tls://127.0.0.1:"),
            "{side}: {v}"
        );
        assert!(s["ops"].as_u64().unwrap() > 100, "{side}: {v}");
        assert_eq!(s["errors"], 0, "{side}: {v}");
    }
    assert_eq!(
        v["scenario"]["totals"]["resolutions_failed"], 0,
        "every resolution found its pool: {v}"
    );
    assert!(v["ratio"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn tls_is_refused_where_it_does_not_apply() {
    for (args, why) in [
        (
            &["resolve", "--tls", "--registrar", "tcp+tls://127.0.0.1:1"][..],
            "use --spawn",
        ),
        (
            &["storm", "--spawn", "--tls"][..],
            "unexpected argument '--tls'",
        ),
    ] {
        let out = common::run(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}
