//! Command-line parsing and validation of `rserpool-bench`.

use rserpool_bench::cli::EnrpGeneration;
use rserpool_bench::load::Poll;
use rserpool_bench::net::StreamTransport;
use rserpool_bench::{Cli, ScenarioKind};

#[test]
fn defaults_match_the_documentation() {
    let cli = Cli::from_args(&["echo"]).unwrap();
    assert_eq!(cli.scenario, ScenarioKind::Echo);
    assert_eq!((cli.connections, cli.pipeline, cli.threads), (16, 32, 1));
    assert_eq!((cli.duration, cli.warmup), (5.0, 1.0));
    assert_eq!((cli.pools, cli.pool_elements, cli.workers), (100, 10, 1));
    assert_eq!(cli.rate, None);
    assert_eq!(cli.transport, StreamTransport::Tcp);
    assert_eq!(cli.poll, Poll::Spin);
    assert!(!cli.json && !cli.compare_echo && !cli.spawn && !cli.quiet);
}

#[test]
fn every_option_is_read() {
    let cli = Cli::from_args(&[
        "resolve",
        "--connections",
        "64",
        "--pipeline",
        "4",
        "--threads",
        "2",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--rate",
        "50000",
        "--pools",
        "1000",
        "--pool-elements",
        "3",
        "--registrar",
        "mptcp://127.0.0.1:3863",
        "--compare-echo",
        "--json",
        "--quiet",
    ])
    .unwrap();
    assert_eq!(cli.scenario, ScenarioKind::Resolve);
    assert_eq!((cli.connections, cli.pipeline, cli.threads), (64, 4, 2));
    assert_eq!(
        (cli.duration, cli.warmup, cli.rate),
        (0.5, 0.0, Some(50_000.0))
    );
    assert_eq!((cli.pools, cli.pool_elements), (1000, 3));
    let target = cli.registrar.unwrap();
    assert_eq!(target.transport, StreamTransport::Mptcp);
    assert_eq!(target.addr.port(), 3863);
    assert!(cli.compare_echo && cli.json && cli.quiet);

    let spawn = Cli::from_args(&[
        "register",
        "--spawn",
        "--registrar-bin",
        "/opt/pr",
        "--workers",
        "2",
        "--transport",
        "mptcp",
        "--pes-per-connection",
        "5",
        "--poll",
        "block",
        "--profile",
        "low-latency",
    ])
    .unwrap();
    assert!(spawn.spawn);
    assert_eq!(spawn.profile, "low-latency");
    assert_eq!(spawn.registrar_bin.unwrap().to_str(), Some("/opt/pr"));
    assert_eq!((spawn.workers, spawn.pes_per_connection), (2, 5));
    assert_eq!(spawn.transport, StreamTransport::Mptcp);
    assert_eq!(spawn.poll, Poll::Block);

    let echo = Cli::from_args(&["echo", "--reply-size", "197"]).unwrap();
    assert_eq!(echo.echo_reply_size(), Some(200));
}

#[test]
fn contradictions_are_refused_with_a_reason() {
    for (args, why) in [
        (&["resolve"][..], "needs a registrar"),
        (
            &["register", "--pipeline", "0", "--spawn"][..],
            "--pipeline",
        ),
        (
            &["echo", "--threads", "4", "--connections", "2"][..],
            "exceeds",
        ),
        (
            &["echo", "--registrar", "tcp://127.0.0.1:1"][..],
            "built-in",
        ),
        (&["echo", "--compare-echo"][..], "built-in"),
        (&["echo", "--duration", "0"][..], "--duration"),
        (&["echo", "--rate", "0"][..], "--rate"),
        (&["echo", "--reply-size", "8"][..], "--reply-size"),
        (
            &["echo", "--rate", "100", "--poll", "block"][..],
            "--poll spin",
        ),
        (
            &["resolve", "--spawn", "--reply-size", "64"][..],
            "echo scenario only",
        ),
        (
            &["resolve", "--spawn", "--registrar", "tcp://127.0.0.1:1"][..],
            "cannot be used",
        ),
        (
            &[
                "resolve",
                "--registrar-bin",
                "/x",
                "--registrar",
                "tcp://127.0.0.1:1",
            ][..],
            "--spawn",
        ),
        (
            &["resolve", "--registrar", "sctp://127.0.0.1:1"][..],
            "tcp or mptcp",
        ),
        (
            &[
                "resolve",
                "--profile",
                "carrier",
                "--registrar",
                "tcp://127.0.0.1:1",
            ][..],
            "needs --spawn",
        ),
        (&["flood"][..], "invalid value"),
    ] {
        let Err(e) = Cli::from_args(args) else {
            panic!("{args:?} was accepted");
        };
        assert!(e.contains(why), "{args:?}: {e}");
    }
}

#[test]
fn churn_and_keepalive_options_are_read_and_checked() {
    let cli = Cli::from_args(&[
        "churn",
        "--spawn",
        "--rate",
        "500",
        "--churners",
        "8",
        "--reregistrations",
        "5",
        "--poll",
        "block",
    ])
    .unwrap();
    assert_eq!(cli.scenario, ScenarioKind::Churn);
    assert_eq!((cli.churners, cli.reregistrations), (8, 5));
    assert_eq!(
        cli.rate,
        Some(500.0),
        "churn's rate drives its PEs, which spin"
    );
    let cli = Cli::from_args(&[
        "keepalive",
        "--spawn",
        "--population",
        "5000",
        "--connections",
        "50",
        "--keep-alive-interval",
        "250",
    ])
    .unwrap();
    assert_eq!((cli.population(), cli.connections), (5000, 50));
    assert_eq!(cli.keep_alive_interval, Some(250));
    let defaults = Cli::from_args(&["keepalive", "--spawn"]).unwrap();
    assert_eq!(
        (defaults.population(), defaults.keep_alive_interval),
        (1000, None)
    );
    assert_eq!((defaults.churners, defaults.reregistrations), (16, 3));
    let resync = Cli::from_args(&[
        "resync",
        "--profile",
        "carrier",
        "--keep-alive-interval",
        "9000",
    ])
    .unwrap();
    assert_eq!(resync.scenario, ScenarioKind::Resync);
    assert!(resync.spawns(), "resync always starts its registrars");
    assert_eq!((resync.population(), resync.page), (1_000_000, 1024));
    assert_eq!(
        (resync.enrp_generation, resync.timeout),
        (EnrpGeneration::Ng, 60.0)
    );

    for (args, why) in [
        (&["churn", "--spawn"][..], "churn needs --rate"),
        (&["churn", "--rate", "10"][..], "needs a registrar"),
        (&["keepalive", "--spawn", "--rate", "10"][..], "drop --rate"),
        (
            &[
                "keepalive",
                "--spawn",
                "--population",
                "4",
                "--connections",
                "5",
            ][..],
            "exceeds --population 4",
        ),
        (
            &[
                "keepalive",
                "--registrar",
                "tcp://127.0.0.1:1",
                "--keep-alive-interval",
                "100",
            ][..],
            "it needs --spawn",
        ),
        (
            &["keepalive", "--spawn", "--keep-alive-interval", "0"][..],
            "at least 1 ms",
        ),
        (
            &["churn", "--spawn", "--rate", "10", "--compare-echo"][..],
            "--compare-echo applies to resolve, register and storm",
        ),
        (
            &["churn", "--spawn", "--rate", "10", "--churners", "0"][..],
            "--churners must be at least 1",
        ),
        (
            &["resync", "--registrar", "tcp://127.0.0.1:1"][..],
            "resync starts both registrars itself",
        ),
        (&["resync", "--page", "0"][..], "--page must be at least 1"),
        (
            &["resync", "--page", "4097"][..],
            "--page must be from 1 to 4096",
        ),
        (
            &["resync", "--enrp-generation", "rfc", "--page", "129"][..],
            "use --enrp-generation ng or --page 128",
        ),
        (
            &["resync", "--timeout", "0"][..],
            "--timeout must be a positive",
        ),
        (&["resync", "--rate", "5"][..], "resync sends no requests"),
        (&["resync", "--compare-echo"][..], "not resync"),
    ] {
        let e = Cli::from_args(args).unwrap_err();
        assert!(e.contains(why), "{args:?}: {e}");
    }
}

#[test]
fn population_runs_are_read_and_nonsense_is_refused() {
    let register = Cli::from_args(&[
        "register",
        "--spawn",
        "--population",
        "1000000",
        "--pool-elements",
        "1000",
        "--policy",
        "wrand",
    ])
    .unwrap();
    assert!(register.registers_new_pes());
    assert_eq!(register.population_pools(), 1000);
    assert_eq!(
        register.population_limit().as_secs(),
        60,
        "no --duration: 60 s"
    );
    assert!(
        !Cli::from_args(&["register", "--spawn"])
            .unwrap()
            .registers_new_pes()
    );
    let storm = Cli::from_args(&[
        "storm",
        "--spawn",
        "--population",
        "1001",
        "--connections",
        "10",
        "--pool-elements",
        "100",
        "--timeout",
        "5",
    ])
    .unwrap();
    assert_eq!(storm.scenario, ScenarioKind::Storm);
    assert_eq!(storm.population_pools(), 11, "ceil(1001 / 100)");
    assert_eq!(
        storm.population_limit().as_secs(),
        5,
        "storm's limit is --timeout"
    );

    for (args, why) in [
        (
            &["register", "--spawn", "--population", "0"][..],
            "--population must be at least 1",
        ),
        (
            &["storm", "--spawn", "--population", "0"][..],
            "--population must be at least 1",
        ),
        (
            &["storm", "--spawn", "--pool-elements", "0"][..],
            "--pool-elements must be at least 1",
        ),
        (
            &[
                "register",
                "--spawn",
                "--population",
                "10",
                "--pool-elements",
                "0",
            ][..],
            "--pool-elements must be at least 1",
        ),
        (
            &[
                "storm",
                "--spawn",
                "--population",
                "10",
                "--connections",
                "11",
            ][..],
            "--connections 11 exceeds --population 10",
        ),
        (
            &[
                "register",
                "--spawn",
                "--population",
                "3",
                "--connections",
                "4",
            ][..],
            "--connections 4 exceeds --population 3",
        ),
        (&["storm", "--spawn", "--rate", "10"][..], "drop --rate"),
        (
            &["register", "--spawn", "--population", "100", "--rate", "10"][..],
            "drop --rate",
        ),
        (
            &["register", "--spawn", "--population", "100", "--pools", "3"][..],
            "drop --pools",
        ),
        (
            &["storm", "--spawn", "--pes-per-connection", "2"][..],
            "drop --pes-per-connection",
        ),
        (
            &["storm", "--spawn", "--timeout", "0"][..],
            "--timeout must be a positive",
        ),
        (&["storm"][..], "storm needs a registrar"),
        (
            &["keepalive", "--spawn", "--policy", "wrr"][..],
            "--policy applies to the PEs of register, resolve and storm",
        ),
        (
            &["register", "--spawn", "--policy", "fastest"][..],
            "invalid value",
        ),
    ] {
        let e = Cli::from_args(args).unwrap_err();
        assert!(e.contains(why), "{args:?}: {e}");
    }
}
