//! Loading the configuration from real files, as the daemon does: `--config` paths, unreadable
//! files, and `--check-config` naming the file and line of each value it set.

use std::path::PathBuf;

use clap::Parser;
use rserpool_registrar::cli::{Cli, check_config};
use rserpool_registrar::config::{Config, ConfigError};

/// Writes `text` to a file of this test's own in Cargo's scratch directory.
fn write(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("rserpool-registrar").chain(args.iter().copied())).unwrap()
}

#[test]
fn a_file_given_with_config_is_layered_over_the_profile_and_under_the_flags() {
    let path = write(
        "config-layers.toml",
        "[registrar]\nworkers = 2\n\n[timers]\nkeep_alive_interval_ms = 700\n",
    );
    let path_text = path.to_str().unwrap();
    let config =
        Config::load(&cli(&["--profile", "carrier", "--config", path_text]).layers()).unwrap();
    assert_eq!(config.registrar.workers, 2);
    assert_eq!(config.timers.keep_alive_interval_ms, 700);
    assert_eq!(
        config.timers.keep_alive_timeout_ms, 300,
        "the carrier profile's"
    );
    let config = Config::load(&cli(&["--config", path_text, "--workers", "5"]).layers()).unwrap();
    assert_eq!(config.registrar.workers, 5);
    assert_eq!(
        config.timers.keep_alive_timeout_ms, 5000,
        "the default profile's"
    );
}

#[test]
fn errors_in_a_file_name_its_path_and_line() {
    let path = write(
        "config-errors.toml",
        "[timers]\n\nkeep_alive_interval_ms = 0\n",
    );
    let e = Config::load(&cli(&["--config", path.to_str().unwrap()]).layers()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:3: `timers.keep_alive_interval_ms` must be between 10 and 86400000 \
             milliseconds, not 0",
            path.display()
        )
    );
}

#[test]
fn a_missing_file_is_named_with_the_reason() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-config.toml");
    let e = Config::load(&cli(&["--config", path.to_str().unwrap()]).layers()).unwrap_err();
    assert!(
        matches!(e, ConfigError::Unreadable { ref path, .. } if path.ends_with("no-such-config.toml"))
    );
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot read the configuration file `{}`: No such file or directory",
            path.display()
        )),
        "{text}"
    );
    assert!(text.ends_with("check the path given to --config"), "{text}");
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn check_config_names_the_file_and_line_of_each_value_it_set() {
    let path = write("config-check.toml", "# ours\n[log]\nformat = \"json\"\n");
    let shown = path.display().to_string();
    let text = check_config(&cli(&["--config", path.to_str().unwrap(), "--id", "42"])).unwrap();
    assert!(
        text.contains(&format!(
            "# Layers: profile `default`, then file {shown}, then flags --id.\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("\nformat = \"json\"  # from {shown}:3\n")),
        "{text}"
    );
    assert!(text.contains("\nid = 42  # from --id\n"), "{text}");
    assert!(text.contains("\nlevel = \"info\"\n"), "{text}");
}

#[test]
fn every_profile_keeps_the_unauthenticated_metrics_endpoint_on_loopback() {
    for profile in ["default", "carrier", "low-latency"] {
        let config = Config::load(&cli(&["--profile", profile]).layers()).unwrap();
        let address = config.metrics.address.expect("metrics on");
        assert!(address.ip().is_loopback(), "{profile}: {address}");
    }
}

/// `--completions SHELL` and `--man-page` print what shells and `man` read, made from the command
/// line's own definition, and start nothing.
#[test]
fn completions_and_the_manual_page_come_from_the_command_line() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rserpool-registrar"))
            .args(args)
            .output()
            .unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&["--completions", shell]);
        assert!(o.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&o.stdout);
        for flag in ["--profile", "--check-config", "--asap"] {
            let name = flag.trim_start_matches('-');
            assert!(script.contains(name), "{shell} lacks {flag}");
        }
    }
    let o = run(&["--man-page"]);
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(page.contains(".TH rserpool-registrar 8"), "{page}");
    assert!(page.contains("check\\-config"), "{page}");
    let o = run(&["--man-page", "--profile", "carrier"]);
    assert_eq!(o.status.code(), Some(2), "exclusive");
}
