//! Configuration of the registrar: the typed [`Config`], the embedded tuning profiles, loading and
//! layering (profile, then configuration file, then command-line flags), validation with errors
//! that name the key, the file and the line, and printing the effective configuration.
//!
//! Every key is documented in `docs/configuration.md`; the profiles are `registrar/tuning/*.toml`
//! (embedded here, so that the published crate carries them; the top-level `tuning/` links to them).
//!
//! ```
//! use rserpool_registrar::config::{Config, Overrides};
//!
//! let file = "[timers]\nkeep_alive_interval_ms = 2000\n";
//! let overrides = Overrides { workers: Some(2), ..Overrides::default() };
//! let config = Config::from_layers(
//!     "default",
//!     Some((std::path::Path::new("registrar.toml"), file)),
//!     &overrides,
//! )?;
//! assert_eq!(config.timers.keep_alive_interval_ms, 2000);
//! assert_eq!(config.registrar.workers, 2);
//! # Ok::<(), rserpool_registrar::config::ConfigError>(())
//! ```

mod error;
mod keys;
mod layers;
#[cfg(test)]
mod tests;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rserpool_protocol::url::TransportUrl;

pub use error::{ConfigError, Origin, Problem, Source};

/// The embedded tuning profiles, by name, in the order `--help` lists them.
const PROFILES: &[(&str, &str)] = &[
    ("default", include_str!("../../tuning/default.toml")),
    ("carrier", include_str!("../../tuning/carrier.toml")),
    ("low-latency", include_str!("../../tuning/low-latency.toml")),
];

/// The names of [`PROFILES`], for [`profile_names`].
const PROFILE_NAMES: [&str; PROFILES.len()] = {
    let mut names = [""; PROFILES.len()];
    let mut i = 0;
    while i < PROFILES.len() {
        names[i] = PROFILES[i].0;
        i += 1;
    }
    names
};

/// The names of the embedded tuning profiles (`--profile`).
pub fn profile_names() -> &'static [&'static str] {
    &PROFILE_NAMES
}

/// The TOML text of an embedded profile.
fn profile_text(name: &str) -> Option<(&'static str, &'static str)> {
    PROFILES.iter().copied().find(|(n, _)| *n == name)
}

/// The registrar's whole configuration, one field per TOML section.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[registrar]`: identity, threads and the I/O driver.
    pub registrar: RegistrarConfig,
    /// `[asap]`: where PEs and PUs reach the registrar.
    pub asap: AsapConfig,
    /// `[enrp]`: the operating scope: ENRP endpoints, peers and timers.
    pub enrp: EnrpConfig,
    /// `[announce]`: ASAP_SERVER_ANNOUNCE over UDP.
    pub announce: AnnounceConfig,
    /// `[timers]`: PE keep-alive supervision.
    pub timers: TimerConfig,
    /// `[resolution]`: how many PEs a handle resolution returns.
    pub resolution: ResolutionConfig,
    /// `[limits]`: bounds on state and input.
    pub limits: LimitsConfig,
    /// `[subscriptions]`: ASAP subscriptions to pool changes (RFC 5352 §2.2.5-6).
    pub subscriptions: SubscriptionsConfig,
    /// `[access]`: who may register, deregister and resolve in which pools.
    pub access: AccessConfig,
    /// `[tls]`: certificates and identities of the TLS listeners and ENRP peers.
    pub tls: TlsConfig,
    /// `[io]`: rings, buffers and sockets of the I/O drivers.
    pub io: IoConfig,
    /// `[metrics]`: the metrics endpoint.
    pub metrics: MetricsConfig,
    /// `[log]`: log filter and format.
    pub log: LogConfig,
    /// `[csp]`: reports to RSPLIB's component status monitor.
    pub csp: CspConfig,
}

/// `[access]`: who may register, deregister and resolve in which pools.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessConfig {
    /// The rules; empty: everyone may do everything.
    pub rules: Vec<crate::core::access::AccessRule>,
}

/// `[tls]`: TLS 1.3 on the `tcp+tls://` and `mptcp+tls://` listeners and ENRP peers (RFC 5352
/// §9.3, RFC 5353 §6.3). Files are read at start and again on SIGHUP.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// The registrar's certificate chain (PEM); empty: no TLS.
    pub certificate: String,
    /// The certificate's private key (PEM).
    pub private_key: String,
    /// The CA bundle (PEM) that vouches for clients' certificates and ENRP peers'.
    pub ca: String,
    /// The certificate names admitted on TLS connections; empty: any the CA vouches for.
    pub allowed_identities: Vec<crate::core::identity::NamePattern>,
}

impl TlsConfig {
    /// The files as the socket layer takes them.
    pub fn files(&self) -> rserpool_net::TlsFiles {
        rserpool_net::TlsFiles {
            certificate: self.certificate.clone().into(),
            private_key: self.private_key.clone().into(),
            ca: self.ca.clone().into(),
        }
    }
}

/// `[registrar]`: identity, threads and the I/O driver.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrarConfig {
    /// The PR identifier; `None` draws a random non-zero 32-bit id at start. Never 0. RFC peers
    /// only accept ids up to `u32::MAX`, so a larger id needs NG-only listeners.
    pub id: Option<u64>,
    /// Worker threads; 0 = one per core this process may use (affinity mask, cgroup quota).
    pub workers: usize,
    /// The I/O driver.
    pub driver: DriverChoice,
    /// Pin each worker to its own core of the process's affinity mask.
    pub pin_workers: bool,
    /// Microseconds an idle worker spins before it sleeps in the kernel; 0 = sleep at once.
    pub busy_poll_us: u64,
}

/// The I/O driver the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverChoice {
    /// io_uring when the kernel allows it, else epoll.
    Auto,
    /// io_uring only; start fails if the kernel refuses it.
    IoUring,
    /// epoll only.
    Epoll,
}

/// `[asap]`: where PEs and PUs reach the registrar.
#[derive(Debug, Clone, PartialEq)]
pub struct AsapConfig {
    /// ASAP listeners (sctp, tcp, mptcp or udp), each with its wire generation.
    pub listen: Vec<TransportUrl>,
    /// Skip, with a warning, listeners whose transport the kernel lacks (SCTP, MPTCP) instead of
    /// failing at start.
    pub skip_unavailable: bool,
}

/// `[enrp]`: the operating scope (RFC 5353): where peer registrars reach this one, which peers it
/// contacts, and the timers of presence, liveness, start-up and takeover.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrpConfig {
    /// ENRP endpoints (sctp, tcp or mptcp associations with peers; udp receives presence
    /// datagrams), each with its wire generation. Served by worker 0 only.
    pub listen: Vec<TransportUrl>,
    /// Skip, with a warning, ENRP endpoints whose transport the kernel lacks or whose port is
    /// taken instead of failing at start.
    pub skip_unavailable: bool,
    /// Static peer registrars: mentor candidates at start-up, reconnected whenever lost.
    pub peers: Vec<TransportUrl>,
    /// Where ENRP_PRESENCE datagrams go every heartbeat (`udp://`, multicast or unicast).
    pub presence_targets: Vec<TransportUrl>,
    /// PEER-HEARTBEAT-CYCLE in milliseconds (RFC 30000, RSPLIB 2444).
    pub heartbeat_interval_ms: u64,
    /// MAX-TIME-LAST-HEARD in milliseconds: silence after which a peer is probed (RSPLIB 5000).
    pub max_time_last_heard_ms: u64,
    /// MAX-TIME-NO-RESPONSE in milliseconds: time a probe has to be answered (RSPLIB 5000).
    pub max_time_no_response_ms: u64,
    /// Milliseconds to wait for a mentor at start-up before serving alone (RSPLIB 5000).
    pub mentor_discovery_timeout_ms: u64,
    /// Milliseconds a takeover waits for every peer's acknowledgement (RSPLIB 5000).
    pub takeover_expiry_ms: u64,
    /// Milliseconds between connection attempts to a static peer.
    pub reconnect_interval_ms: u64,
    /// Most PEs per ENRP_HANDLE_TABLE_RESPONSE (RSPLIB 128).
    pub max_pes_per_table_response: usize,
    /// RSPLIB's takeover suggestion: send and honour the T flag of ADD_PE (RSPLIB: off).
    pub takeover_suggestion: bool,
    /// The PRs admitted to the operating scope, each optionally bound to a subnet; empty: any.
    pub allowed_peers: Vec<crate::core::AllowedPeer>,
}

/// `[announce]`: ASAP_SERVER_ANNOUNCE over UDP.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnounceConfig {
    /// Where announces go: `udp://` multicast groups or unicast addresses; empty = no announces.
    pub targets: Vec<TransportUrl>,
    /// Milliseconds between announces (T6; RSPLIB 1000).
    pub interval_ms: u64,
    /// Multicast TTL (hops).
    pub ttl: u32,
}

/// `[timers]`: PE keep-alive supervision.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerConfig {
    /// Milliseconds from a PE's last keep-alive ack to the next ENDPOINT_KEEP_ALIVE (RSPLIB 5000).
    pub keep_alive_interval_ms: u64,
    /// Milliseconds a keep-alive may stay unanswered before the PE is removed (RSPLIB 5000).
    pub keep_alive_timeout_ms: u64,
    /// ENDPOINT_UNREACHABLE reports after which a PE is removed (RSPLIB 3).
    pub max_bad_pe_reports: u32,
}

/// `[resolution]`: how many PEs a handle resolution returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolutionConfig {
    /// PEs returned when the request names no count (RSPLIB 3).
    pub default_items: usize,
    /// Most PEs returned, at most 128 (RSPLIB 128).
    pub max_items: usize,
}

/// `[limits]`: bounds on state and input.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Most pools in the handlespace.
    pub max_pools: usize,
    /// Most PEs in one pool.
    pub max_pes_per_pool: usize,
    /// Most PEs registered over one association.
    pub max_pes_per_association: usize,
    /// Longest pool handle on NG listeners, in bytes; RFC listeners always allow 32.
    pub max_pool_handle_len: usize,
    /// Largest message accepted, in bytes.
    pub max_message_size: usize,
    /// Most open associations and connections per worker.
    pub max_connections: usize,
    /// Most open associations from one source address over all workers; 0 = unlimited.
    pub max_connections_per_source: usize,
    /// Unsent reply bytes per stream connection above which it is not read until its peer
    /// catches up.
    pub max_buffered_bytes_per_connection: usize,
    /// Most requests per second on one association; 0 = unlimited.
    pub max_requests_per_second: u32,
    /// Most registrations per second of one identity (a TLS certificate name, else a source
    /// address) over all its associations; 0 = unlimited.
    pub max_registrations_per_second_per_identity: u32,
    /// Milliseconds an ASAP association may stay open without registering, deregistering or
    /// resolving; 0 = unlimited.
    pub idle_timeout_ms: u64,
}

/// `[subscriptions]`: ASAP subscriptions to pool changes (RFC 5352 §2.2.5-6).
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionsConfig {
    /// Most pools one association may subscribe to; 0 = subscriptions off.
    pub max_per_association: usize,
    /// Most subscriptions over all associations and workers; 0 = subscriptions off.
    pub max_total: usize,
    /// Least time between two pushes to one subscriber, in milliseconds; 0 = every change at
    /// once.
    pub min_push_interval_ms: u64,
}

/// `[io]`: rings, buffers and sockets of the I/O drivers.
#[derive(Debug, Clone, PartialEq)]
pub struct IoConfig {
    /// io_uring submission queue entries per worker (a power of two).
    pub ring_entries: u32,
    /// Bytes per receive buffer.
    pub buffer_size: usize,
    /// Receive buffers per worker (a power of two, at most 32768).
    pub buffer_count: u32,
    /// SO_RCVBUF and SO_SNDBUF in bytes; 0 = the kernel's default.
    pub socket_buffer_bytes: usize,
    /// Backlog of stream listeners.
    pub listen_backlog: u32,
    /// Most completions or events handled per loop turn.
    pub max_batch: usize,
}

/// `[metrics]`: the metrics endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Where the HTTP metrics endpoint listens; `None` = no endpoint.
    pub address: Option<SocketAddr>,
    /// A file whose content (trimmed) is the bearer token `GET /metrics` needs; empty: none.
    pub bearer_token_file: String,
}

/// `[log]`: log filter and format.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// The filter, in `tracing_subscriber::EnvFilter` syntax (e.g. `info,rserpool_registrar=debug`).
    pub level: String,
    /// The line format.
    pub format: LogFormat,
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[csp]`: reports to RSPLIB's component status monitor (`cspmonitor`).
#[derive(Debug, Clone, PartialEq)]
pub struct CspConfig {
    /// The monitor's UDP address (usually 127.0.0.1:2960); `None` = no reports.
    pub monitor: Option<SocketAddr>,
    /// Milliseconds between reports.
    pub interval_ms: u64,
}

/// A socket address or `off`: how the configuration and `--metrics` spell an optional address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressOrOff(pub Option<SocketAddr>);

impl FromStr for AddressOrOff {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(Self(None));
        }
        s.parse().map(|a| Self(Some(a))).map_err(|_| {
            format!("`{s}` is not an IP address with a port (e.g. 127.0.0.1:9863) nor `off`")
        })
    }
}

impl fmt::Display for AddressOrOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// Values from the command line, applied over the profile and the file. `None` leaves a key as
/// the lower layers set it; a list, when given, replaces the configured list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--asap`: replaces `asap.listen` and turns `asap.skip_unavailable` off.
    pub asap: Option<Vec<TransportUrl>>,
    /// `--enrp`: replaces `enrp.listen` and turns `enrp.skip_unavailable` off.
    pub enrp: Option<Vec<TransportUrl>>,
    /// `--peer`: replaces `enrp.peers`.
    pub peers: Option<Vec<TransportUrl>>,
    /// `--announce`: replaces `announce.targets`.
    pub announce: Option<Vec<TransportUrl>>,
    /// `--id`: sets `registrar.id`.
    pub id: Option<u64>,
    /// `--workers`: sets `registrar.workers`.
    pub workers: Option<usize>,
    /// `--metrics`: sets `metrics.address` (`off` for none).
    pub metrics: Option<AddressOrOff>,
    /// `--driver`: sets `registrar.driver`.
    pub driver: Option<DriverChoice>,
    /// `--log-level`: sets `log.level`.
    pub log_level: Option<String>,
}

/// What a configuration is layered from: a profile, an optional file and the overrides of the
/// command line (built by [`crate::cli::Cli::layers`]; kept by the daemon to reload on SIGHUP).
#[derive(Debug, Clone, PartialEq)]
pub struct Layers {
    /// The embedded tuning profile underneath everything.
    pub profile: String,
    /// A TOML configuration file, read when the configuration is loaded.
    pub file: Option<PathBuf>,
    /// Values that override the profile and the file.
    pub overrides: Overrides,
}

impl Config {
    /// Loads the configuration of `layers`: its profile, its file (read here) and its
    /// overrides, then validates it.
    pub fn load(layers: &Layers) -> Result<Config, ConfigError> {
        layers::load(layers).map(|(config, _)| config)
    }

    /// Layers a profile, an optional file (its path, for messages, and its contents) and
    /// overrides, then validates the result. Touches no file system.
    pub fn from_layers(
        profile_name: &str,
        file: Option<(&Path, &str)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        layers::build(profile_name, file, overrides).map(|(config, _)| config)
    }

    /// The configuration as complete TOML: every key with its value, so that loading it as a
    /// configuration file over any profile gives this configuration back.
    pub fn to_toml(&self) -> String {
        keys::render(self, None)
    }

    /// The keys whose value differs in `new` but which only take effect at a restart: the keys
    /// that a SIGHUP reload cannot apply (see `docs/configuration.md`).
    pub fn changes_needing_restart(&self, new: &Config) -> Vec<&'static str> {
        keys::changes_needing_restart(self, new)
    }
}

/// The text `--check-config` prints (see [`crate::cli::check_config`]).
pub(crate) fn check(sources: &Layers) -> Result<String, ConfigError> {
    let (config, origins) = layers::load(sources)?;
    let mut layers = format!("profile `{}`", sources.profile);
    if let Some(path) = &sources.file {
        layers.push_str(&format!(", then file {}", path.display()));
    }
    let flags = origins.flags();
    if !flags.is_empty() {
        layers.push_str(&format!(", then flags {}", flags.join(" ")));
    }
    Ok(format!(
        "# rserpool-registrar: the configuration is valid.\n\
         # Layers: {layers}.\n\
         # A value without a comment comes from the profile.\n\n{}",
        keys::render(&config, Some(&origins))
    ))
}
