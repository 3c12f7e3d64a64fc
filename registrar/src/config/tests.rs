//! Tests of loading, layering, validation and printing.

use std::path::Path;

use rserpool_protocol::Generation;

use super::keys::{KEYS, Reload};
use super::layers::build;
use super::*;

fn url(s: &str) -> TransportUrl {
    s.parse().unwrap()
}

/// The `default` profile alone.
fn base() -> Config {
    Config::from_layers("default", None, &Overrides::default()).unwrap()
}

/// The `default` profile under `file`, named `config.toml`.
fn with_file(file: &str) -> Result<Config, ConfigError> {
    with(file, &Overrides::default())
}

/// The `default` profile under `file` and `overrides`.
fn with(file: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::from_layers("default", Some((Path::new("config.toml"), file)), overrides)
}

/// The error text for `file` over the `default` profile.
fn error(file: &str) -> String {
    match with_file(file) {
        Ok(_) => panic!("accepted:\n{file}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_profile_loads_and_round_trips_through_to_toml() {
    for &name in profile_names() {
        let config = Config::from_layers(name, None, &Overrides::default())
            .unwrap_or_else(|e| panic!("profile {name}: {e}"));
        let text = config.to_toml();
        for under in profile_names() {
            let back = Config::from_layers(
                under,
                Some((Path::new("effective.toml"), &text)),
                &Overrides::default(),
            )
            .unwrap_or_else(|e| panic!("profile {name} printed, loaded over {under}: {e}"));
            assert_eq!(back, config, "profile {name} printed, loaded over {under}");
        }
    }
}

#[test]
fn every_profile_sets_every_key_but_the_id() {
    for &name in profile_names() {
        let (_, origins) = build(name, None, &Overrides::default()).unwrap();
        for key in KEYS {
            let origin = origins.of(key.path);
            assert_eq!(origin.source, Source::Profile(name), "{name}: {}", key.path);
            assert_eq!(
                origin.line.is_some(),
                key.path != "registrar.id",
                "{name}: {}",
                key.path
            );
        }
    }
}

#[test]
fn the_profiles_differ_where_they_say() {
    let default = base();
    assert_eq!(default.registrar.id, None);
    assert_eq!(default.asap.listen.len(), 5);
    assert!(
        default
            .asap
            .listen
            .iter()
            .all(|u| u.address.ip().is_loopback())
    );
    assert!(default.asap.skip_unavailable);
    assert_eq!(
        default.asap.listen[3],
        url("sctp://127.0.0.1:13863?generation=ng")
    );
    assert_eq!(default.timers.keep_alive_interval_ms, 5000);
    assert_eq!(
        default.metrics.address,
        Some("127.0.0.1:9863".parse().unwrap())
    );
    let carrier = Config::from_layers("carrier", None, &Overrides::default()).unwrap();
    assert!(carrier.registrar.pin_workers);
    assert!(!carrier.asap.skip_unavailable);
    assert!(
        carrier
            .asap
            .listen
            .iter()
            .all(|u| u.address.ip().is_unspecified())
    );
    assert!(carrier.timers.keep_alive_interval_ms + carrier.timers.keep_alive_timeout_ms < 1000);
    assert_eq!(carrier.log.format, LogFormat::Json);
    assert_ne!(carrier.limits.max_requests_per_second, 0);
    let fast = Config::from_layers("low-latency", None, &Overrides::default()).unwrap();
    // Spinning measured slower than sleeping (docs/performance.md, "Profiles"): no profile spins.
    assert_eq!(fast.registrar.busy_poll_us, 0);
    assert!(fast.registrar.pin_workers);
    assert!(fast.io.max_batch < default.io.max_batch);
}

#[test]
fn an_unknown_profile_lists_the_known_ones() {
    let e = Config::from_layers("fast", None, &Overrides::default()).unwrap_err();
    assert!(matches!(e, ConfigError::UnknownProfile { ref name } if name == "fast"));
    assert_eq!(
        e.to_string(),
        "--profile: unknown profile `fast` (known profiles: default, carrier, low-latency)"
    );
}

#[test]
fn a_file_changes_only_the_keys_it_sets() {
    let config = with_file("[timers]\nkeep_alive_interval_ms = 2000\n").unwrap();
    let mut expected = base();
    expected.timers.keep_alive_interval_ms = 2000;
    assert_eq!(config, expected);

    let config = with_file("[asap]\nlisten = [\"tcp://127.0.0.1:5000\"]\n").unwrap();
    let mut expected = base();
    expected.asap.listen = vec![url("tcp://127.0.0.1:5000")];
    assert_eq!(config, expected, "a list in a file replaces the list");

    let config = with_file("registrar.id = 7\nmetrics = { address = \"off\" }\n").unwrap();
    let mut expected = base();
    expected.registrar.id = Some(7);
    expected.metrics.address = None;
    assert_eq!(config, expected, "dotted keys and inline tables");
}

#[test]
fn flags_override_the_file() {
    let file = "[registrar]\nworkers = 2\nid = 9\n[log]\nlevel = \"debug\"\n";
    let overrides = Overrides {
        workers: Some(3),
        log_level: Some("warn".to_owned()),
        driver: Some(DriverChoice::Epoll),
        metrics: Some(AddressOrOff(None)),
        announce: Some(vec![url("udp://239.0.0.50:3863")]),
        enrp: Some(vec![url("tcp://127.0.0.1:9901")]),
        ..Overrides::default()
    };
    let config = with(file, &overrides).unwrap();
    assert_eq!(config.registrar.workers, 3);
    assert_eq!(config.registrar.id, Some(9), "the file's id stays: no --id");
    assert_eq!(config.log.level, "warn");
    assert_eq!(config.registrar.driver, DriverChoice::Epoll);
    assert_eq!(config.metrics.address, None);
    assert_eq!(config.announce.targets, vec![url("udp://239.0.0.50:3863")]);
    assert_eq!(config.enrp.listen, vec![url("tcp://127.0.0.1:9901")]);
    let config = with(
        file,
        &Overrides {
            id: Some(11),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(config.registrar.id, Some(11));
}

#[test]
fn asap_flags_replace_the_listeners_and_require_them() {
    let overrides = Overrides {
        asap: Some(vec![
            url("tcp://127.0.0.1:5000"),
            url("udp://127.0.0.1:5000"),
        ]),
        ..Overrides::default()
    };
    let config = with("[asap]\nskip_unavailable = true\n", &overrides).unwrap();
    assert_eq!(
        config.asap.listen,
        vec![url("tcp://127.0.0.1:5000"), url("udp://127.0.0.1:5000")]
    );
    assert!(!config.asap.skip_unavailable);
    let conflict = Overrides {
        asap: Some(vec![
            url("tcp://127.0.0.1:5000"),
            url("mptcp://127.0.0.1:5000"),
        ]),
        ..Overrides::default()
    };
    let e = with("", &conflict).unwrap_err().to_string();
    assert!(
        e.starts_with("--asap: `asap.listen` mptcp://127.0.0.1:5000 conflicts"),
        "{e}"
    );
}

#[test]
fn an_unknown_key_names_the_key_the_file_the_line_and_the_known_keys() {
    let file = "# tuning\n[limits]\nmax_pools = 10\nmax_poolz = 20\n";
    assert_eq!(
        error(file),
        "config.toml:4: unknown key `limits.max_poolz` (known keys in [limits]: max_pools, \
         max_pes_per_pool, max_pes_per_association, max_pool_handle_len, max_message_size, \
         max_connections, max_connections_per_source, max_buffered_bytes_per_connection, \
         max_requests_per_second, max_registrations_per_second_per_identity, idle_timeout_ms)"
    );
    let e = error("[limits]\nmax_items = 20\n");
    assert!(
        e.starts_with("config.toml:2: unknown key `limits.max_items`; `max_items` belongs under `[resolution]`"),
        "{e}"
    );
    let e = error("\n\n[limit]\nmax_pools = 1\n");
    assert!(
        e.starts_with("config.toml:3: unknown section `[limit]` (known sections: registrar, asap,"),
        "{e}"
    );
    let e = error("workers = 4\n[registrar]\n");
    assert_eq!(
        e,
        "config.toml:1: `workers` is outside any section; it belongs under `[registrar]`"
    );
    let e = error("listen = []\n");
    assert!(e.contains("belongs under `[asap]` or `[enrp]`"), "{e}");
}

#[test]
fn every_problem_of_a_file_is_reported_by_line() {
    let file = "[timers]\nkeep_alive_timeout_ms = \"5s\"\nnope = 1\n[io]\nring_entries = -1\n";
    let e = with_file(file).unwrap_err();
    let ConfigError::Invalid(problems) = &e else {
        panic!("{e:?}");
    };
    let lines: Vec<Option<usize>> = problems.iter().map(|p| p.origin.line).collect();
    assert_eq!(lines, [Some(2), Some(3), Some(5)], "{e}");
}

#[test]
fn type_errors_name_the_key_and_the_line() {
    for (file, expected) in [
        (
            "[timers]\n\nkeep_alive_interval_ms = \"5s\"\n",
            "config.toml:3: `timers.keep_alive_interval_ms` must be a whole number without \
             quotes, not the string \"5s\"",
        ),
        (
            "[registrar]\npin_workers = \"yes\"\n",
            "config.toml:2: `registrar.pin_workers` must be true or false without quotes, not \
             the string \"yes\"",
        ),
        (
            "[registrar]\ndriver = \"uring\"\n",
            "config.toml:2: `registrar.driver` must be one of \"auto\", \"io-uring\", \"epoll\", \
             not \"uring\"",
        ),
        (
            "[registrar]\nworkers = -2\n",
            "config.toml:2: `registrar.workers` must not be negative, not -2",
        ),
        (
            "[announce]\nttl = 4294967296\n",
            "config.toml:2: `announce.ttl` must be at most 4294967295, not 4294967296",
        ),
        (
            "[resolution]\nmax_items = 1.5\n",
            "config.toml:2: `resolution.max_items` must be a whole number without quotes, not \
             the number 1.5",
        ),
        (
            "[asap]\nlisten = \"tcp://127.0.0.1:3863\"\n",
            "config.toml:2: `asap.listen` must be a list in brackets, e.g. \
             [\"tcp://127.0.0.1:3863\"], not the string \"tcp://127.0.0.1:3863\"",
        ),
        (
            "[log]\nformat = \"xml\"\n",
            "config.toml:2: `log.format` must be one of \"text\", \"json\", not \"xml\"",
        ),
        (
            "[log]\nlevel = 3\n",
            "config.toml:2: `log.level` must be a string in quotes, e.g. \"info\", not the \
             integer 3",
        ),
        (
            "[timers]\n[timers]\n",
            "config.toml:2: not valid TOML: duplicate key",
        ),
    ] {
        assert_eq!(error(file), expected, "{file}");
    }
}

#[test]
fn a_bad_item_of_a_list_names_its_own_line() {
    let file = "[asap]\nlisten = [\n  \"tcp://127.0.0.1:1\",\n  \"tcp://127.0.0.1\",\n]\n";
    let e = error(file);
    assert!(
        e.starts_with("config.toml:4: `asap.listen` has a bad item: bad transport URL `tcp://127.0.0.1`: missing `:port`"),
        "{e}"
    );
    let e = error("[metrics]\naddress = \"localhost:80\"\n");
    assert!(
        e.starts_with(
            "config.toml:2: `metrics.address` must be an address or \"off\": `localhost:80` is not"
        ),
        "{e}"
    );
}

#[test]
fn bad_values_name_the_key_and_the_line() {
    for (file, expected) in [
        (
            "[timers]\nkeep_alive_interval_ms = 0\n",
            "config.toml:2: `timers.keep_alive_interval_ms` must be between 10 and 86400000 \
             milliseconds, not 0",
        ),
        (
            "[timers]\n\nkeep_alive_timeout_ms = 5\n",
            "config.toml:3: `timers.keep_alive_timeout_ms` must be between 10 and 86400000 \
             milliseconds, not 5",
        ),
        (
            "[announce]\ninterval_ms = 0\n",
            "config.toml:2: `announce.interval_ms` must be between 10 and 86400000 \
             milliseconds, not 0",
        ),
        (
            "[timers]\nmax_bad_pe_reports = 0\n",
            "config.toml:2: `timers.max_bad_pe_reports` must be between 1 and 4294967295, not 0",
        ),
        (
            "[resolution]\nmax_items = 200\n",
            "config.toml:2: `resolution.max_items` must be between 1 and 128 PEs, not 200",
        ),
        (
            "[resolution]\nmax_items = 4\ndefault_items = 5\n",
            "config.toml:3: `resolution.default_items` must be between 1 and \
             `resolution.max_items` (4, set at config.toml:2), not 5",
        ),
        (
            "[io]\nring_entries = 1000\n",
            "config.toml:2: `io.ring_entries` must be a power of two between 8 and 32768 (e.g. \
             1024), not 1000",
        ),
        (
            "[io]\nbuffer_count = 65536\n",
            "config.toml:2: `io.buffer_count` must be a power of two between 1 and 32768 (e.g. \
             32768), not 65536",
        ),
        (
            "[io]\nbuffer_size = 4096\n",
            "config.toml:2: `io.buffer_size` 4096 bytes is smaller than \
             `limits.max_message_size` 16384 bytes (set at profile default:{LINE}): a UDP or SCTP \
             message that large would be cut short; raise the one or lower the other",
        ),
        (
            "[limits]\nmax_message_size = 70000\n",
            "config.toml:2: `limits.max_message_size` must be between 64 and 65536 bytes, not \
             70000",
        ),
        (
            "[limits]\nmax_pool_handle_len = 16\n",
            "config.toml:2: `limits.max_pool_handle_len` must be at least 32 bytes, the length \
             RFC listeners accept, not 16",
        ),
        (
            "[limits]\nmax_pes_per_association = 0\n",
            "config.toml:2: `limits.max_pes_per_association` must be at least 1, not 0",
        ),
        (
            "[subscriptions]\nmin_push_interval_ms = 120000\n",
            "config.toml:2: `subscriptions.min_push_interval_ms` must be between 0 and 60000 ms \
             (0 = push every change at once), not 120000",
        ),
        (
            "[subscriptions]\nmax_total = 10\nmax_per_association = 20\n",
            "config.toml:3: `subscriptions.max_per_association` 20 exceeds \
             `subscriptions.max_total` 10 (set at config.toml:2): no association could reach \
             it; lower the one or raise the other (0 in either turns subscriptions off)",
        ),
        (
            "[registrar]\nworkers = 5000\n",
            "config.toml:2: `registrar.workers` must be between 0 and 1024 (0 = one per core), \
             not 5000",
        ),
        (
            "[registrar]\nid = 0\n",
            "config.toml:2: `registrar.id` must not be 0 (on the wire 0 means \"no \
             registrar\"); leave the key out to draw a random id at start",
        ),
        (
            "[asap]\nlisten = []\n",
            "config.toml:2: `asap.listen` is empty: no PE or PU could reach the registrar; list \
             at least one listener, e.g. [\"sctp://0.0.0.0:3863\"]",
        ),
        (
            "[csp]\nmonitor = \"0.0.0.0:2960\"\n",
            "config.toml:2: `csp.monitor` 0.0.0.0:2960 has the wildcard address; give the \
             address to send to; the monitor usually listens on 127.0.0.1:2960",
        ),
        (
            "[log]\nlevel = \"warning\"\n",
            "config.toml:2: `log.level` has `warning`, which is no level (off, error, warn, \
             info, debug, trace): the filter would read it as the name of a log target; to filter \
             one target write `warning=debug`, else write e.g. \"info\" or \
             \"info,rserpool_registrar=debug\"",
        ),
    ] {
        // The line of the default profile that sets `limits.max_message_size`.
        let line = include_str!("../../tuning/default.toml")
            .lines()
            .position(|l| l.starts_with("max_message_size"))
            .expect("the default profile sets it")
            + 1;
        let expected = expected.replace("{LINE}", &line.to_string());
        assert_eq!(error(file), expected, "{file}");
    }
    let e = error("[log]\nlevel = \"info,foo=loud\"\n");
    assert!(
        e.starts_with("config.toml:2: `log.level` \"info,foo=loud\" is not a valid filter"),
        "{e}"
    );
    assert!(with_file("[log]\nlevel = \"warn,rserpool_registrar=trace,[span]=debug\"\n").is_ok());
}

#[test]
fn announce_targets_must_be_udp_destinations() {
    let e = error("[announce]\ntargets = [\"tcp://239.0.0.50:3863\"]\n");
    assert_eq!(
        e,
        "config.toml:2: `announce.targets` has tcp://239.0.0.50:3863, but announces travel over \
         UDP only; write udp://239.0.0.50:3863"
    );
    let e = error("[announce]\ntargets = [\"udp://239.0.0.50:0\"]\n");
    assert!(e.contains("has port 0"), "{e}");
    let e =
        error("[announce]\ntargets = [\n\"udp://10.0.0.1:3863\",\n\"udp://10.0.0.1:3863\",\n]\n");
    assert!(e.starts_with("config.toml:4: `announce.targets` lists udp://10.0.0.1:3863 twice (also at config.toml:3)"), "{e}");
    let ok =
        with_file("[announce]\ntargets = [\"udp://239.0.0.50:3863\", \"udp://10.0.0.1:3863\"]\n");
    assert_eq!(ok.unwrap().announce.targets.len(), 2);
}

#[test]
fn listeners_that_would_share_a_socket_conflict() {
    let listen = |items: &str| format!("[asap]\nlisten = [\n{items}\n]\n");
    let e = error(&listen(
        "\"tcp://127.0.0.1:4000\",\n\"mptcp://127.0.0.1:4000\",",
    ));
    assert_eq!(
        e,
        "config.toml:4: `asap.listen` mptcp://127.0.0.1:4000 conflicts with `asap.listen` \
         tcp://127.0.0.1:4000 (at config.toml:3): an MPTCP listener also accepts plain TCP \
         clients, so a TCP and an MPTCP listener cannot share an address and port; keep only the \
         mptcp:// one"
    );
    for (items, reason) in [
        (
            "\"udp://0.0.0.0:4000\",\n\"udp://127.0.0.1:4000\",",
            "a wildcard address",
        ),
        (
            "\"sctp://127.0.0.1:4000\",\n\"sctp://127.0.0.1:4000\",",
            "is listed twice",
        ),
        (
            "\"sctp://127.0.0.1:4000\",\n\"sctp://127.0.0.1:4000?generation=ng\",",
            "one socket speaks one wire generation",
        ),
    ] {
        let e = error(&listen(items));
        assert!(e.starts_with("config.toml:4: "), "{e}");
        assert!(e.contains(reason), "{items}: {e}");
    }
    let e = error("[asap]\nlisten = [\"tcp://127.0.0.1:9863\"]\n");
    assert!(
        e.starts_with(
            "config.toml:2: `asap.listen` tcp://127.0.0.1:9863 conflicts with `metrics.address` \
             127.0.0.1:9863 (at profile default:"
        ) && e.contains("): the metrics endpoint needs a TCP port of its own"),
        "{e}"
    );
    let e = error("[enrp]\nlisten = [\"sctp://127.0.0.1:3863\"]\n");
    assert!(e.contains("ASAP and ENRP need a port each"), "{e}");
    let fine = "\"tcp://127.0.0.1:4000\",\n\"sctp://127.0.0.1:4000\",\n\"udp://127.0.0.1:4000\",\n\
                \"tcp://127.0.0.2:4000\",\n\"tcp://[::]:4000\",\n\"tcp://127.0.0.1:0\",\n\
                \"mptcp://127.0.0.1:0\",";
    assert_eq!(with_file(&listen(fine)).unwrap().asap.listen.len(), 7);
}

#[test]
fn a_large_id_needs_ng_endpoints_only() {
    let big = u64::from(u32::MAX) + 1;
    let overrides = Overrides {
        id: Some(big),
        ..Overrides::default()
    };
    let e = with("", &overrides).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "--id: `registrar.id` {big} does not fit the 32-bit identifier of the RFC \
             generation, and `asap.listen` has the RFC endpoint sctp://127.0.0.1:3863 (profile \
             default:15)"
        )),
        "{e}"
    );
    let ng = "[asap]\nlisten = [\"tcp://127.0.0.1:13863?generation=ng\"]\n\
              [enrp]\nlisten = [\"tcp://127.0.0.1:19901?generation=ng\"]\n";
    let config = with(ng, &overrides).unwrap();
    assert_eq!(config.registrar.id, Some(big));
    assert_eq!(config.asap.listen[0].generation, Generation::Ng);
    let e = with(
        ng,
        &Overrides {
            id: Some(0),
            ..Overrides::default()
        },
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--id: `registrar.id` must not be 0"),
        "{e}"
    );
}

#[test]
fn flag_errors_name_the_flag() {
    let overrides = Overrides {
        workers: Some(5000),
        log_level: Some(String::new()),
        announce: Some(vec![url("sctp://239.0.0.50:3863")]),
        ..Overrides::default()
    };
    let e = with("", &overrides).unwrap_err().to_string();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 3, "{e}");
    assert!(
        lines[0].starts_with("--workers: `registrar.workers` must be between"),
        "{e}"
    );
    assert!(
        lines[1].starts_with("--announce: `announce.targets` has sctp://"),
        "{e}"
    );
    assert!(
        lines[2].starts_with("--log-level: `log.level` is empty"),
        "{e}"
    );
}

#[test]
fn values_of_every_type_print_and_load_back() {
    let mut config = base();
    config.registrar.id = Some(u64::MAX);
    config.asap.listen = vec![url("tcp://[::1]:13863?generation=ng")];
    config.enrp.listen = vec![url("tcp://[::1]:19901?generation=ng")];
    config.enrp.peers = vec![url("sctp://192.0.2.1:19901?generation=ng")];
    config.enrp.presence_targets = vec![url("udp://239.0.0.51:19901?generation=ng")];
    config.registrar.driver = DriverChoice::IoUring;
    config.log.level = "info,[conn{peer=\"a b\"}]=trace".to_owned();
    config.log.format = LogFormat::Json;
    config.csp.monitor = Some("127.0.0.1:2960".parse().unwrap());
    config.metrics.address = None;
    let text = config.to_toml();
    assert!(text.contains("id = 18446744073709551615\n"), "{text}");
    assert!(text.contains("driver = \"io-uring\"\n"), "{text}");
    assert!(text.contains("address = \"off\"\n"), "{text}");
    let back = with_file(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, config);
    assert!(base().to_toml().contains("# id is not set\n"));
}

#[test]
fn restart_is_needed_only_for_keys_sighup_cannot_apply() {
    let old = base();
    let mut new = old.clone();
    new.timers.keep_alive_interval_ms = 1000;
    new.log.level = "debug".to_owned();
    assert!(old.changes_needing_restart(&new).is_empty());
    new.registrar.workers = 2;
    new.asap.listen.pop();
    new.io.max_batch = 8;
    assert_eq!(
        old.changes_needing_restart(&new),
        ["registrar.workers", "asap.listen", "io.max_batch"]
    );
}

/// `docs/configuration.md` documents every key under a heading of its own, with each profile's
/// value as `to_toml` prints it and with whether SIGHUP applies it.
#[test]
fn the_documentation_matches_the_keys_and_the_profiles() {
    let docs = include_str!("../../../docs/configuration.md");
    let profiles: Vec<(&str, Config)> = profile_names()
        .iter()
        .map(|&n| {
            (
                n,
                Config::from_layers(n, None, &Overrides::default()).unwrap(),
            )
        })
        .collect();
    for key in KEYS {
        let heading = format!("#### `{}`\n", key.path);
        let start = docs
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/configuration.md lacks the heading {heading}"));
        let block = &docs[start + heading.len()..];
        let block = &block[..block.find("\n#").unwrap_or(block.len())];
        let values: Vec<String> = profiles
            .iter()
            .map(|(name, config)| {
                let value = (key.get)(config).map_or("not set".to_owned(), |v| v.inline());
                format!("{name} `{value}`")
            })
            .collect();
        let line = format!("- Profiles: {}\n", values.join(", "));
        assert!(
            block.contains(&line),
            "{}: expected the line\n{line}",
            key.path
        );
        let reload = match key.reload {
            Reload::Sighup => "- SIGHUP: reloads",
            Reload::Restart => "- SIGHUP: restart needed",
        };
        assert!(block.contains(reload), "{}: expected {reload}", key.path);
    }
}

#[test]
fn enrp_keys_are_checked_and_the_flags_replace_endpoints_and_peers() {
    for (file, expected) in [
        (
            "[enrp]\npeers = [\"udp://127.0.0.1:9902\"]\n",
            "config.toml:2: `enrp.peers` has udp://127.0.0.1:9902, but peers are reached over \
             associations; write sctp://127.0.0.1:9902 or tcp://127.0.0.1:9902 (presence \
             datagrams go to `enrp.presence_targets`)",
        ),
        (
            "[enrp]\npresence_targets = [\"tcp://239.0.0.51:9901\"]\n",
            "config.toml:2: `enrp.presence_targets` has tcp://239.0.0.51:9901, but presence \
             datagrams travel over UDP only; write udp://239.0.0.51:9901 (peers reached over \
             associations belong in `enrp.peers`)",
        ),
        (
            "[enrp]\nheartbeat_interval_ms = 5\n",
            "config.toml:2: `enrp.heartbeat_interval_ms` must be between 10 and 86400000 \
             milliseconds, not 5",
        ),
        (
            "[enrp]\nheartbeat_interval_ms = 1000\nmax_time_last_heard_ms = 500\n",
            "config.toml:3: `enrp.max_time_last_heard_ms` 500 is shorter than \
             `enrp.heartbeat_interval_ms` 1000 (set at config.toml:2): every peer would be \
             probed before its next presence; make it at least the heartbeat interval (the RFC \
             uses about twice: 61 s against 30 s)",
        ),
        (
            "[enrp]\nmax_pes_per_table_response = 0\n",
            "config.toml:2: `enrp.max_pes_per_table_response` must be between 1 and 4096 PEs, \
             not 0",
        ),
    ] {
        assert_eq!(error(file), expected, "{file}");
    }
    let overrides = Overrides {
        enrp: Some(vec![url("tcp://127.0.0.1:9911")]),
        peers: Some(vec![
            url("tcp://127.0.0.1:9912"),
            url("tcp://127.0.0.1:9913"),
        ]),
        ..Overrides::default()
    };
    let config = with("[enrp]\npeers = [\"tcp://127.0.0.1:9914\"]\n", &overrides).unwrap();
    assert_eq!(config.enrp.listen, vec![url("tcp://127.0.0.1:9911")]);
    assert!(
        !config.enrp.skip_unavailable,
        "an endpoint asked for on the command line must open"
    );
    assert_eq!(
        config.enrp.peers,
        vec![url("tcp://127.0.0.1:9912"), url("tcp://127.0.0.1:9913")]
    );
    let carrier = Config::from_layers("carrier", None, &Overrides::default()).unwrap();
    let e = &carrier.enrp;
    assert!(
        e.max_time_last_heard_ms + e.max_time_no_response_ms < 1000,
        "carrier declares a silent peer dead in under a second"
    );
}

#[test]
fn the_reply_buffer_per_connection_must_hold_at_least_64_kib() {
    let e = error("[limits]\nmax_buffered_bytes_per_connection = 1000\n");
    assert!(e.contains("max_buffered_bytes_per_connection"), "{e}");
    assert!(e.contains("65536"), "{e}");
}
