//! The command line of `rserpool-registrar` ([`Cli`]) and `--check-config`.
//!
//! ```no_run
//! use clap::Parser;
//! use rserpool_registrar::cli::{self, Cli};
//! use rserpool_registrar::config::Config;
//!
//! let cli = Cli::parse();
//! if cli.check_config {
//!     match cli::check_config(&cli) {
//!         Ok(text) => print!("{text}"),
//!         Err(e) => {
//!             eprintln!("{e}");
//!             std::process::exit(2);
//!         }
//!     }
//!     return;
//! }
//! let config = Config::load(&cli.layers()).unwrap_or_else(|e| {
//!     eprintln!("{e}");
//!     std::process::exit(2);
//! });
//! ```

use std::path::PathBuf;

use clap::Parser;
use clap::builder::PossibleValuesParser;
use rserpool_protocol::url::TransportUrl;

use crate::config::{self, AddressOrOff, ConfigError, DriverChoice, Layers, Overrides};

/// The command line. Flags override the configuration file, which overrides the profile.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "rserpool-registrar",
    version,
    about = "RSerPool Pool Registrar (PR)",
    after_help = "Every key is documented in docs/configuration.md; print the effective \
                  configuration with --check-config."
)]
pub struct Cli {
    /// The embedded tuning profile underneath everything.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "default",
        value_parser = PossibleValuesParser::new(config::profile_names())
    )]
    pub profile: String,

    /// A TOML configuration file; the keys it sets override the profile's.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// An ASAP listener, e.g. sctp://0.0.0.0:3863 or mptcp://127.0.0.1:13863?generation=ng. Repeat
    /// for several; replaces `asap.listen` and turns `asap.skip_unavailable` off.
    #[arg(long = "asap", value_name = "URL")]
    pub asap: Vec<TransportUrl>,

    /// An ENRP endpoint, e.g. sctp://0.0.0.0:9901 or tcp://127.0.0.1:19901?generation=ng.
    /// Repeat for several; replaces `enrp.listen` and turns `enrp.skip_unavailable` off.
    #[arg(long = "enrp", value_name = "URL")]
    pub enrp: Vec<TransportUrl>,

    /// A peer registrar's ENRP endpoint, e.g. tcp://192.0.2.7:9901. Repeat for several; replaces
    /// `enrp.peers`.
    #[arg(long = "peer", value_name = "URL")]
    pub peers: Vec<TransportUrl>,

    /// An announce target, e.g. udp://239.0.0.50:3863. Repeat for several; replaces
    /// `announce.targets`.
    #[arg(long = "announce", value_name = "URL")]
    pub announce: Vec<TransportUrl>,

    /// The registrar identifier (non-zero; at most 0xffffffff with RFC listeners), decimal or
    /// hexadecimal with 0x as the logs print it.
    #[arg(long, value_name = "N", value_parser = parse_id)]
    pub id: Option<u64>,

    /// Worker threads; 0 = one per online core.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// The metrics endpoint's address, e.g. 127.0.0.1:9863, or `off`.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<AddressOrOff>,

    /// The I/O driver.
    #[arg(long, value_name = "DRIVER")]
    pub driver: Option<DriverChoice>,

    /// The log filter, e.g. info or info,rserpool_registrar=debug.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Validate the configuration, print it with where each value came from, and exit.
    #[arg(long)]
    pub check_config: bool,

    /// Check this host against the configuration (kernel SCTP and MPTCP, io_uring, sysctls,
    /// open-file limit, cores, busy polling, CPU governor, NIC interrupts), print each finding
    /// with why it matters and the fix, and exit (1 if any would stop the registrar).
    #[arg(long, conflicts_with = "check_config")]
    pub check_host: bool,

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<clap_complete::Shell>,

    /// Print the manual page (roff, section 8) and exit.
    #[arg(long, exclusive = true)]
    pub man_page: bool,
}

impl Cli {
    /// The flags that override the profile and the file.
    pub fn overrides(&self) -> Overrides {
        let list = |urls: &Vec<TransportUrl>| (!urls.is_empty()).then(|| urls.clone());
        Overrides {
            asap: list(&self.asap),
            enrp: list(&self.enrp),
            peers: list(&self.peers),
            announce: list(&self.announce),
            id: self.id,
            workers: self.workers,
            metrics: self.metrics,
            driver: self.driver,
            log_level: self.log_level.clone(),
        }
    }

    /// What the configuration is layered from: `--profile`, `--config` and the flags.
    pub fn layers(&self) -> Layers {
        Layers {
            profile: self.profile.clone(),
            file: self.config.clone(),
            overrides: self.overrides(),
        }
    }
}

/// `--check-config`: loads the configuration `cli` asks for and returns it as TOML to print,
/// each value a file or a flag set marked with where; or the errors.
pub fn check_config(cli: &Cli) -> Result<String, ConfigError> {
    config::check(&cli.layers())
}

/// `--check-host`: the findings on this host for the configuration `cli` asks for, as text, and
/// whether any is an error; or the configuration's errors.
pub fn check_host(cli: &Cli) -> Result<(String, bool), ConfigError> {
    use crate::host_check::{self, Host, Severity};
    let config = crate::config::Config::load(&cli.layers())?;
    let findings = host_check::check(&config, &Host::this());
    let failed = findings.iter().any(|f| f.severity == Severity::Error);
    Ok((host_check::render(&findings), failed))
}

/// What `--completions` and `--man-page` print: the shell completion script or the manual page
/// made from this command line's definition; `None` when neither was asked for.
pub fn generated(cli: &Cli) -> Option<Vec<u8>> {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let mut out = Vec::new();
    if let Some(shell) = cli.completions {
        clap_complete::generate(shell, &mut command, "rserpool-registrar", &mut out);
        return Some(out);
    }
    if cli.man_page {
        let man = clap_mangen::Man::new(command).section("8");
        man.render(&mut out).ok()?;
        return Some(out);
    }
    None
}

/// A PR ID as `--id` takes it: decimal, or hexadecimal after `0x`.
fn parse_id(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("`{text}` is not a PR ID: give a number, decimal or 0x-hexadecimal"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("rserpool-registrar").chain(args.iter().copied()))
    }

    fn url(s: &str) -> TransportUrl {
        s.parse().unwrap()
    }

    #[test]
    fn no_flags_mean_the_default_profile_and_no_overrides() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.profile, "default");
        assert_eq!(cli.config, None);
        assert!(!cli.check_config);
        assert_eq!(cli.overrides(), Overrides::default());
        assert_eq!(
            Config::load(&cli.layers()).unwrap(),
            Config::from_layers("default", None, &Overrides::default()).unwrap()
        );
    }

    #[test]
    fn every_flag_parses() {
        let cli = parse(&[
            "--profile",
            "carrier",
            "--config",
            "/etc/rserpool/registrar.toml",
            "--asap",
            "sctp://0.0.0.0:3863",
            "--asap",
            "tcp://[::1]:13863?generation=ng",
            "--enrp",
            "sctp://0.0.0.0:9901",
            "--peer",
            "tcp://192.0.2.7:9901",
            "--announce",
            "udp://239.0.0.50:3863",
            "--id",
            "4294967296",
            "--workers",
            "4",
            "--metrics",
            "127.0.0.1:9000",
            "--driver",
            "io-uring",
            "--log-level",
            "info,rserpool_registrar=debug",
            "--check-config",
        ])
        .unwrap();
        assert_eq!(cli.profile, "carrier");
        assert_eq!(
            cli.config.as_deref(),
            Some(std::path::Path::new("/etc/rserpool/registrar.toml"))
        );
        assert!(cli.check_config);
        let expected = Overrides {
            asap: Some(vec![
                url("sctp://0.0.0.0:3863"),
                url("tcp://[::1]:13863?generation=ng"),
            ]),
            enrp: Some(vec![url("sctp://0.0.0.0:9901")]),
            peers: Some(vec![url("tcp://192.0.2.7:9901")]),
            announce: Some(vec![url("udp://239.0.0.50:3863")]),
            id: Some(4_294_967_296),
            workers: Some(4),
            metrics: Some(AddressOrOff(Some("127.0.0.1:9000".parse().unwrap()))),
            driver: Some(DriverChoice::IoUring),
            log_level: Some("info,rserpool_registrar=debug".to_owned()),
        };
        assert_eq!(cli.overrides(), expected);
        let cli = parse(&["--metrics", "off", "--driver", "epoll"]).unwrap();
        assert_eq!(cli.metrics, Some(AddressOrOff(None)));
        assert_eq!(cli.driver, Some(DriverChoice::Epoll));
    }

    #[test]
    fn ids_are_taken_in_hexadecimal_as_the_logs_print_them() {
        assert_eq!(parse(&["--id", "0x2A"]).unwrap().id, Some(42));
        assert_eq!(parse(&["--id", "42"]).unwrap().id, Some(42));
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        for (args, reason) in [
            (
                &["--profile", "fast"][..],
                "[possible values: default, carrier, low-latency]",
            ),
            (&["--asap", "tcp://127.0.0.1"], "missing `:port`"),
            (&["--asap", "http://127.0.0.1:1"], "unknown scheme"),
            (&["--id=-1"], "invalid value '-1' for '--id <N>'"),
            (&["--id", "18446744073709551616"], "is not a PR ID"),
            (&["--id", "0xzz"], "is not a PR ID"),
            (&["--workers", "many"], "invalid digit"),
            (&["--metrics", "localhost"], "nor `off`"),
            (
                &["--driver", "uring"],
                "[possible values: auto, io-uring, epoll]",
            ),
            (&["--verbose"], "unexpected argument"),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(reason), "{args:?}: {e}");
        }
    }

    #[test]
    fn flags_reach_the_configuration() {
        let cli = parse(&[
            "--asap",
            "tcp://127.0.0.1:5000",
            "--workers",
            "2",
            "--id",
            "9",
        ])
        .unwrap();
        let config = Config::load(&cli.layers()).unwrap();
        assert_eq!(config.asap.listen, vec![url("tcp://127.0.0.1:5000")]);
        assert!(!config.asap.skip_unavailable);
        assert_eq!(config.registrar.workers, 2);
        assert_eq!(config.registrar.id, Some(9));
    }

    #[test]
    fn check_config_prints_a_loadable_configuration_marking_the_flags() {
        let cli = parse(&["--profile", "carrier", "--workers", "3", "--metrics", "off"]).unwrap();
        let text = check_config(&cli).unwrap();
        assert!(
            text.starts_with(
                "# rserpool-registrar: the configuration is valid.\n\
                 # Layers: profile `carrier`, then flags --metrics --workers.\n"
            ),
            "{text}"
        );
        assert!(text.contains("\nworkers = 3  # from --workers\n"), "{text}");
        assert!(
            text.contains("\naddress = \"off\"  # from --metrics\n"),
            "{text}"
        );
        assert!(text.contains("\npin_workers = true\n"), "{text}");
        let back = Config::from_layers(
            "default",
            Some((std::path::Path::new("printed.toml"), &text)),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(back, Config::load(&cli.layers()).unwrap());
        let bad = parse(&["--workers", "5000"]).unwrap();
        let e = check_config(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with("--workers: `registrar.workers` must be between 0 and 1024"),
            "{e}"
        );
    }
}
