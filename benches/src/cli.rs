//! The command line of `rserpool-bench`: scenario, load shape, target and output, and the checks
//! that reject contradictory options before anything connects.

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::echo::{MAX_REPLY, MIN_REPLY};
use crate::load::{LoadSpec, Poll};
use crate::net::{Endpoint, StreamTransport};
use crate::workload::PolicyKind;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScenarioKind {
    /// The built-in echo server under the `resolve` request mix: the ceiling of this client and
    /// this machine's loopback.
    Echo,
    /// HANDLE_RESOLUTION of random pools whose PEs were registered before the timed phase.
    Resolve,
    /// Re-registration of each connection's own PEs as fast as the window allows; with
    /// `--population`, that many new PEs, each registered once, into pools of
    /// `--pool-elements`.
    Register,
    /// PEs that register, re-register and deregister at `--rate` operations per second while
    /// `--connections` pool users resolve.
    Churn,
    /// A steady population of PEs: the keep-alives the registrar sends and the time to ack them.
    Keepalive,
    /// `--population` new PEs over `--connections` associations, every association writing all
    /// its registrations at once (as after a registrar restart): the time until the last is
    /// answered.
    Storm,
    /// Two spawned registrars: `--population` PEs registered at the first, then the time until a
    /// second one, started with the first as its ENRP peer and no state, holds them all (with
    /// `--restart`, also the time until it holds them again after a SIGKILL and a restart).
    Resync,
    /// Three spawned registrars in one operating scope: `--population` PEs registered at the
    /// first and replicated to the others, then the first killed (`--fault`) and the time until
    /// both survivors resolve every PE with a survivor as its home PR.
    Takeover,
    /// `--registrars` spawned registrars in one operating scope, PEs and PUs on them, and faults
    /// injected for `--duration` (registrars killed, stopped, restarted with a new ID; PEs
    /// leaving, dying, hanging, joining) while a checker holds every resolution to the bounds
    /// the profile's timers imply; fails on any violation.
    Chaos,
    /// The hostile-input soak: legitimate PEs registered and kept alive while attacker
    /// connections (and UDP datagrams) send `--messages` mutated and random messages; checks
    /// every `--check-every` messages that the registrar runs, that every legitimate PE stays
    /// resolvable and that its memory stays within `--max-rss-growth-mib`; fails on any miss.
    Hostile,
}

impl ScenarioKind {
    /// The scenario's name on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Resolve => "resolve",
            Self::Register => "register",
            Self::Churn => "churn",
            Self::Keepalive => "keepalive",
            Self::Storm => "storm",
            Self::Resync => "resync",
            Self::Takeover => "takeover",
            Self::Chaos => "chaos",
            Self::Hostile => "hostile",
        }
    }
}

/// The wire format of the ENRP endpoints of a `resync` run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EnrpGeneration {
    /// RFC 5353 (32-bit identifiers; pages of at most 128 PEs, RSPLIB's limit).
    Rfc,
    /// NG (64-bit identifiers; pages up to `enrp.max_pes_per_table_response`).
    Ng,
}

impl EnrpGeneration {
    /// Its name on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rfc => "rfc",
            Self::Ng => "ng",
        }
    }
}

/// How a `resync` run restarts the new registrar once it holds the population.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RestartKind {
    /// The same command line: the same ports and the same `--id`.
    SameId,
    /// The same command line but for another `--id`.
    NewId,
}

impl RestartKind {
    /// Its name on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::SameId => "same-id",
            Self::NewId => "new-id",
        }
    }
}

/// What a `takeover` run does to the registrar the PEs registered at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TakeoverFault {
    /// SIGKILL: the process is gone, its associations close.
    Kill,
    /// SIGSTOP (SIGCONT at the end of the run): the process hangs with its associations open.
    Stop,
}

impl TakeoverFault {
    /// The signal it sends, as in reports: `SIGKILL`, `SIGSTOP`.
    pub const fn signal(self) -> &'static str {
        match self {
            Self::Kill => "SIGKILL",
            Self::Stop => "SIGSTOP",
        }
    }
}

/// The default population of `keepalive`.
pub const KEEPALIVE_POPULATION: usize = 1000;
/// The default population of `resync`: the figure of the design's target.
pub const RESYNC_POPULATION: usize = 1_000_000;
/// The default population of `storm`: the figure of the design's target.
pub const STORM_POPULATION: usize = 1_000_000;
/// The default time `register --population` may take when `--duration` is not given.
pub const POPULATION_DURATION: f64 = 60.0;
/// The default population of `takeover`: few enough to resolve every pool every 10 ms.
pub const TAKEOVER_POPULATION: usize = 1000;
/// The default population of `chaos`: PEs alive at any time.
pub const CHAOS_POPULATION: usize = 12;
/// The shortest `--duration` of a `chaos` run, and its default.
pub const CHAOS_MIN_DURATION: f64 = 10.0;
/// The default `--duration` of a `chaos` run.
pub const CHAOS_DURATION: f64 = 60.0;
/// The fewest and the most registrars of a `chaos` run (a majority stays alive with one down).
pub const CHAOS_REGISTRARS: std::ops::RangeInclusive<usize> = 3..=5;
/// The most PEs a resolution returns (`resolution.max_items`): a `chaos` pool holds no more.
pub const CHAOS_MAX_POOL: usize = 128;

/// The default number of hostile messages of a `hostile` run.
pub const HOSTILE_MESSAGES: u64 = 1_000_000;
/// The default pools of a `hostile` run's legitimate PEs (`--pools`).
pub const HOSTILE_POOLS: usize = 8;
/// The default legitimate PEs per pool of a `hostile` run (`--pool-elements`).
pub const HOSTILE_POOL_ELEMENTS: usize = 8;
/// The default attacker connections of a `hostile` run (`--connections`).
pub const HOSTILE_ATTACKERS: usize = 8;

/// The most PEs per handle table page the registrar accepts
/// (`enrp.max_pes_per_table_response`).
pub const MAX_PAGE: usize = 4096;
/// The most PEs per page the registrar sends to an RFC peer.
pub const MAX_RFC_PAGE: usize = 128;

/// `rserpool-bench <scenario> [options]`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "rserpool-bench",
    version,
    about = "Load generator for RSerPool pool registrars: ASAP over TCP or MPTCP, closed or open \
             loop, churn, keep-alive populations, ENRP resynchronisation and takeovers"
)]
pub struct Cli {
    /// What to measure.
    #[arg(value_enum)]
    pub scenario: ScenarioKind,

    /// Connections to the server (churn: the resolving pool users; keepalive: the associations
    /// the population is spread over).
    #[arg(long, short = 'c', default_value_t = 16)]
    pub connections: usize,
    /// Requests in flight per connection at most; a connection refills its window in one write.
    #[arg(long, short = 'p', default_value_t = 32)]
    pub pipeline: usize,
    /// Client threads; connections are dealt out among them.
    #[arg(long, short = 't', default_value_t = 1)]
    pub threads: usize,
    /// Seconds measured (chaos: seconds of faults, default 60); a number of seconds, or with
    /// the unit s, m or h (`90s`, `10m`).
    #[arg(long, short = 'd', default_value_t = 5.0, value_parser = parse_seconds)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    pub warmup: f64,
    /// Open loop: requests per second over all connections, latency from the intended send time
    /// (the pipeline still caps what is in flight). Churn: the PEs' operations per second
    /// (required there; the pool users run closed loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How client threads wait for replies: spin (poll non-blocking sockets) or block (read each
    /// connection in turn; closed loop only).
    #[arg(long, value_enum, default_value_t = Poll::Spin)]
    pub poll: Poll,

    /// Pools (resolve: registered and resolved; register: the connections' PEs spread over them;
    /// keepalive: the population spread over them; not used by resync and takeover).
    #[arg(long, default_value_t = 100)]
    pub pools: usize,
    /// PEs registered per pool before a resolve run; resync, takeover and chaos: PEs per pool of
    /// the population.
    #[arg(long, default_value_t = 10)]
    pub pool_elements: usize,
    /// PEs each connection of a register run registers over and over.
    #[arg(long, default_value_t = 1)]
    pub pes_per_connection: usize,
    /// The member-selection policy of the PEs that register, resolve and storm register, with
    /// per-PE parameters drawn from the PE's number (weights and priorities 1 to 10, loads
    /// spread over the 32-bit range).
    #[arg(long, value_enum, default_value_t = PolicyKind::Rr)]
    pub policy: PolicyKind,
    /// Churn: PE associations, one PE each, cycling register, re-register, deregister.
    #[arg(long, default_value_t = 16)]
    pub churners: usize,
    /// Churn: re-registrations between a PE's registration and its deregistration.
    #[arg(long, default_value_t = 3)]
    pub reregistrations: usize,
    /// Keepalive, resync, takeover and storm: PEs registered over the `--connections`
    /// associations (default: 1000 for keepalive and takeover, 1000000 for resync and storm).
    /// Register: that many new PEs, each registered once, in pools of `--pool-elements`.
    /// Chaos: PEs alive at any time (default 12), in pools of `--pool-elements`.
    #[arg(long, value_name = "N")]
    pub population: Option<usize>,
    /// Keepalive: the spawned registrar's keep-alive interval in milliseconds (default: its
    /// profile's, 5000). Resync: the first registrar's (default: one hour, so that keep-alives
    /// do not load it during the transfer).
    #[arg(long, value_name = "MS")]
    pub keep_alive_interval: Option<u64>,
    /// Resync: the most PEs per ENRP handle table page (`enrp.max_pes_per_table_response`).
    #[arg(long, value_name = "PES", default_value_t = 1024)]
    pub page: usize,
    /// Resync and takeover: the wire format of the registrars' ENRP endpoints.
    #[arg(long, value_enum, default_value_t = EnrpGeneration::Ng)]
    pub enrp_generation: EnrpGeneration,
    /// Resync: seconds the second registrar may take to hold the whole population (and again
    /// after `--restart`). Takeover: seconds the survivors may take to hold every PE, before
    /// and after the fault. Storm: seconds from the first write the answers may take.
    #[arg(long, value_name = "S", default_value_t = 60.0, value_parser = parse_seconds)]
    pub timeout: f64,
    /// Resync: once the new registrar holds the population, SIGKILL it, wait for its exit and
    /// start it again at once with the same command line (same ports) and the same `--id`
    /// (`same-id`) or another (`new-id`); report the time until it holds the population again.
    #[arg(long, value_enum, value_name = "KIND")]
    pub restart: Option<RestartKind>,
    /// Takeover: what happens to the registrar the PEs are registered at: `kill` (SIGKILL,
    /// default) or `stop` (SIGSTOP, SIGCONT at the end).
    #[arg(long, value_enum, value_name = "FAULT")]
    pub fault: Option<TakeoverFault>,
    /// Chaos: registrars in the operating scope (3 to 5).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub registrars: usize,
    /// Chaos: the seed of the fault schedule and the PE identifiers; hostile: of the messages,
    /// their mutations and the PE identifiers (default: from the clock; the run prints it).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Chaos: the directory for the registrars' and PEs' logs (default: a new directory in the
    /// temporary directory; the run prints it).
    #[arg(long, value_name = "DIR")]
    pub logs: Option<PathBuf>,
    /// Chaos: the `rserpool` command line the PEs run as (default: next to this binary).
    #[arg(long, value_name = "PATH")]
    pub rserpool_bin: Option<PathBuf>,
    /// Echo: answer each request with a frame of this many bytes (rounded up to 4) instead of
    /// the request itself.
    #[arg(long)]
    pub reply_size: Option<usize>,
    /// After the scenario, run the echo server under the same load and reply size and print the
    /// ratio scenario/echo.
    #[arg(long)]
    pub compare_echo: bool,

    /// The registrar to load: tcp://HOST:PORT or mptcp://HOST:PORT (hostile: also
    /// sctp://HOST:PORT), optional ?generation=ng.
    #[arg(long, value_name = "URL")]
    pub registrar: Option<Endpoint>,
    /// Start rserpool-registrar for the run and stop it afterwards (resync always starts two,
    /// takeover three).
    #[arg(long, conflicts_with = "registrar")]
    pub spawn: bool,
    /// The registrar binary for --spawn (default: next to this binary).
    #[arg(long, value_name = "PATH")]
    pub registrar_bin: Option<PathBuf>,
    /// Worker threads of a spawned registrar (chaos and takeover: passed on only when given; the
    /// profile's one per core otherwise).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// The tuning profile of a spawned registrar (default, carrier, low-latency).
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub profile: String,
    /// Transport of the echo server and of a spawned registrar (a --registrar URL names its own);
    /// sctp for `hostile` only.
    #[arg(long, value_enum, default_value_t = StreamTransport::Tcp)]
    pub transport: StreamTransport,
    /// TLS 1.3 with client certificates (resolve and register, with --spawn, and echo): the run
    /// makes a throwaway CA, the registrar's and the echo server's certificate and the
    /// clients', and the spawned registrar listens on tcp+tls:// (or mptcp+tls://).
    #[arg(long)]
    pub tls: bool,

    /// Hostile: the hostile messages to send (over the attacker connections and UDP).
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,
    /// Hostile: check the registrar (alive, every legitimate PE resolvable, memory) every this
    /// many messages, and at the end.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub check_every: u64,
    /// Hostile: fail when the registrar's resident memory (VmRSS) grows by more than this many
    /// MiB over its figure before the attack.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub max_rss_growth_mib: u64,
    /// Hostile: the UDP port of a --registrar to send every fourth message to as a datagram (a
    /// spawned registrar gets a UDP listener of its own).
    #[arg(long, value_name = "HOST:PORT")]
    pub udp: Option<std::net::SocketAddr>,
    /// Hostile: the process ID of a --registrar, whose life and memory are checked.
    #[arg(long, value_name = "PID", conflicts_with = "spawn")]
    pub pid: Option<u32>,

    /// Print one JSON object on stdout instead of the text summary.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// The options given on the command line rather than defaulted, by their long names
    /// (`workers`, `duration`); filled by [`Cli::parse_noting_given`].
    #[arg(skip)]
    pub given: Vec<String>,
}

/// Seconds from `90`, `1.5`, `90s`, `10m` or `1h`.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let (number, unit) = match trimmed.strip_suffix("ms") {
        Some(ms) => (ms, 0.001),
        None => match trimmed.char_indices().last() {
            Some((i, 's')) => (&trimmed[..i], 1.0),
            Some((i, 'm')) => (&trimmed[..i], 60.0),
            Some((i, 'h')) => (&trimmed[..i], 3600.0),
            _ => (trimmed, 1.0),
        },
    };
    number.trim().parse::<f64>().map(|n| n * unit).map_err(|_| {
        format!("`{text}` is not a duration: give seconds (90, 1.5) or 500ms, 90s, 10m, 1h")
    })
}

impl Cli {
    /// Parses `args` (the program name first) like [`Parser::try_parse_from`], and notes in
    /// [`Cli::given`] which options the command line set.
    pub fn parse_noting_given<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let mut cli = Self::from_arg_matches(&matches)?;
        cli.given = matches
            .ids()
            .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.as_str().to_owned())
            .collect();
        Ok(cli)
    }

    /// The command line `rserpool-bench args…` parsed as `main` parses it and validated, or the
    /// error it would print.
    pub fn from_args(args: &[&str]) -> Result<Self, String> {
        let cli =
            Self::parse_noting_given(std::iter::once("rserpool-bench").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        cli.validate()?;
        Ok(cli)
    }

    /// Whether the command line set the option `name` (its long name).
    pub fn was_given(&self, name: &str) -> bool {
        self.given.iter().any(|g| g == name)
    }

    /// The seconds of faults of a `chaos` run: `--duration` if given, else 60.
    pub fn chaos_duration(&self) -> f64 {
        if self.was_given("duration") {
            self.duration
        } else {
            CHAOS_DURATION
        }
    }

    /// The PEs of a `keepalive`, `resync`, `takeover` or `chaos` run: `--population` or the
    /// scenario's default.
    pub fn population(&self) -> usize {
        self.population.unwrap_or(match self.scenario {
            ScenarioKind::Resync => RESYNC_POPULATION,
            ScenarioKind::Storm => STORM_POPULATION,
            ScenarioKind::Takeover => TAKEOVER_POPULATION,
            ScenarioKind::Chaos => CHAOS_POPULATION,
            _ => KEEPALIVE_POPULATION,
        })
    }

    /// The pools the population of `keepalive` (`--pools`) or `resync`, `takeover`, `chaos`,
    /// `storm` and `register --population` (pools of `--pool-elements` PEs) is spread over.
    pub fn population_pools(&self) -> usize {
        match self.scenario {
            ScenarioKind::Resync
            | ScenarioKind::Takeover
            | ScenarioKind::Chaos
            | ScenarioKind::Storm => self.population().div_ceil(self.pool_elements.max(1)),
            ScenarioKind::Register if self.registers_new_pes() => {
                self.population().div_ceil(self.pool_elements.max(1))
            }
            _ => self.pools,
        }
    }

    /// Whether this is a population run: `register --population` (new PEs, each registered
    /// once) rather than re-registration.
    pub fn registers_new_pes(&self) -> bool {
        self.scenario == ScenarioKind::Register && self.population.is_some()
    }

    /// How long the registrations of a population run may take: `--timeout` for `storm`,
    /// `--duration` if given for `register --population`, else 60 s.
    pub fn population_limit(&self) -> Duration {
        let seconds = match self.scenario {
            ScenarioKind::Storm => self.timeout,
            _ if self.was_given("duration") => self.duration,
            _ => POPULATION_DURATION,
        };
        Duration::from_secs_f64(seconds)
    }

    /// Whether this run starts its registrar(s): `--spawn`, or always for `resync`, `takeover`
    /// and `chaos`.
    pub fn spawns(&self) -> bool {
        self.spawn
            || matches!(
                self.scenario,
                ScenarioKind::Resync | ScenarioKind::Takeover | ScenarioKind::Chaos
            )
    }

    /// The fault of a `takeover` run: `--fault`, or SIGKILL.
    pub fn takeover_fault(&self) -> TakeoverFault {
        self.fault.unwrap_or(TakeoverFault::Kill)
    }

    /// Rejects values and combinations that cannot run.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--connections", self.connections),
            ("--pipeline", self.pipeline),
            ("--threads", self.threads),
            ("--pools", self.pools),
            ("--pool-elements", self.pool_elements),
            ("--pes-per-connection", self.pes_per_connection),
            ("--churners", self.churners),
            ("--population", self.population()),
            ("--workers", self.workers),
            ("--page", self.page),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.threads > self.connections {
            return Err(format!(
                "--threads {} exceeds --connections {}: every thread needs a connection",
                self.threads, self.connections
            ));
        }
        if !(self.duration.is_finite() && self.duration > 0.0) {
            return Err("--duration must be a positive number of seconds".into());
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            return Err("--warmup must be zero or a positive number of seconds".into());
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err("--rate must be a positive number of requests per second".into());
            }
            // Churn's rate drives its PEs, which always spin; --poll is for its pool users.
            if self.poll == Poll::Block && self.scenario != ScenarioKind::Churn {
                return Err("--rate sends on a schedule: it needs --poll spin".into());
            }
        }
        match self.scenario {
            ScenarioKind::Churn if self.rate.is_none() => {
                return Err(
                    "churn needs --rate R: the PEs' register, re-register and deregister \
                     operations per second"
                        .into(),
                );
            }
            ScenarioKind::Keepalive | ScenarioKind::Resync | ScenarioKind::Takeover
                if self.rate.is_some() =>
            {
                return Err(format!(
                    "{} sends no requests: drop --rate",
                    self.scenario.name()
                ));
            }
            ScenarioKind::Storm if self.rate.is_some() => {
                return Err(
                    "storm writes every registration at once: drop --rate (register \
                     --population sends them in a window of --pipeline)"
                        .into(),
                );
            }
            ScenarioKind::Keepalive
            | ScenarioKind::Resync
            | ScenarioKind::Takeover
            | ScenarioKind::Storm
                if self.connections > self.population() =>
            {
                return Err(format!(
                    "--connections {} exceeds --population {}: every association needs a PE",
                    self.connections,
                    self.population()
                ));
            }
            ScenarioKind::Churn
            | ScenarioKind::Keepalive
            | ScenarioKind::Resync
            | ScenarioKind::Takeover
                if self.compare_echo =>
            {
                return Err(format!(
                    "--compare-echo applies to resolve, register and storm, not {}",
                    self.scenario.name()
                ));
            }
            _ => {}
        }
        if self.scenario == ScenarioKind::Chaos {
            self.validate_chaos()?;
        }
        self.validate_hostile()?;
        if self.registers_new_pes() || self.scenario == ScenarioKind::Storm {
            self.validate_population()?;
        }
        if self.was_given("policy")
            && !matches!(
                self.scenario,
                ScenarioKind::Register | ScenarioKind::Resolve | ScenarioKind::Storm
            )
        {
            return Err(format!(
                "--policy applies to the PEs of register, resolve and storm, not {}",
                self.scenario.name()
            ));
        }
        if self.keep_alive_interval == Some(0) {
            return Err("--keep-alive-interval must be at least 1 ms".into());
        }
        if self.page > MAX_PAGE {
            return Err(format!("--page must be from 1 to {MAX_PAGE} PEs"));
        }
        if self.restart.is_some() && self.scenario != ScenarioKind::Resync {
            return Err("--restart applies to resync only".into());
        }
        if self.fault.is_some() && self.scenario != ScenarioKind::Takeover {
            return Err("--fault applies to takeover only".into());
        }
        if self.scenario == ScenarioKind::Takeover {
            self.validate_takeover()?;
        }
        if self.scenario == ScenarioKind::Resync {
            if self.enrp_generation == EnrpGeneration::Rfc && self.page > MAX_RFC_PAGE {
                return Err(format!(
                    "--page {} exceeds the {MAX_RFC_PAGE} PEs a registrar sends an RFC peer per \
                     page: use --enrp-generation ng or --page {MAX_RFC_PAGE}",
                    self.page
                ));
            }
            if !(self.timeout.is_finite() && self.timeout > 0.0) {
                return Err("--timeout must be a positive number of seconds".into());
            }
            if self.registrar.is_some() {
                return Err(
                    "resync starts both registrars itself: drop --registrar (--registrar-bin \
                     names the binary)"
                        .into(),
                );
            }
        }
        if self.keep_alive_interval.is_some() && !self.spawns() {
            return Err(
                "--keep-alive-interval configures a registrar this run starts: it needs --spawn"
                    .into(),
            );
        }
        if let Some(size) = self.reply_size {
            if self.scenario != ScenarioKind::Echo {
                return Err("--reply-size applies to the echo scenario only".into());
            }
            if !(MIN_REPLY..=MAX_REPLY).contains(&size) {
                return Err(format!(
                    "--reply-size must be from {MIN_REPLY} to {MAX_REPLY} bytes"
                ));
            }
        }
        if self.registrar_bin.is_some() && !self.spawns() {
            return Err("--registrar-bin needs --spawn".into());
        }
        if self.tls
            && !(matches!(self.scenario, ScenarioKind::Resolve | ScenarioKind::Echo)
                || (self.scenario == ScenarioKind::Register && !self.registers_new_pes()))
        {
            return Err(format!(
                "--tls applies to resolve, register (re-registrations) and echo, not {}",
                if self.registers_new_pes() {
                    "register --population"
                } else {
                    self.scenario.name()
                }
            ));
        }
        if self.tls && self.registrar.is_some() {
            return Err(
                "--tls makes the certificates of a registrar this run starts: use --spawn (the \
                 bench has no flags for another CA's files)"
                    .into(),
            );
        }
        if self.profile != "default" && !self.spawns() {
            return Err(
                "--profile chooses the profile of a registrar this run starts: it needs --spawn"
                    .into(),
            );
        }
        let has_target = self.registrar.is_some() || self.spawns();
        match self.scenario {
            ScenarioKind::Echo if has_target || self.compare_echo => Err(
                "echo runs against its built-in server: drop --registrar, --spawn and --compare-echo"
                    .into(),
            ),
            ScenarioKind::Echo => Ok(()),
            _ if !has_target => Err(format!(
                "{} needs a registrar: --registrar URL or --spawn",
                self.scenario.name()
            )),
            _ => Ok(()),
        }
    }

    /// The checks only `storm` and `register --population` need.
    fn validate_population(&self) -> Result<(), String> {
        let name = if self.scenario == ScenarioKind::Storm {
            "storm"
        } else {
            "register --population"
        };
        if self.connections > self.population() {
            return Err(format!(
                "--connections {} exceeds --population {}: every association needs a PE",
                self.connections,
                self.population()
            ));
        }
        if self.rate.is_some() {
            return Err(format!(
                "{name} registers every PE once, as fast as the registrar answers: drop --rate"
            ));
        }
        if self.was_given("pools") {
            return Err(format!(
                "{name} makes pools of --pool-elements PEs (population / pool-elements of them): \
                 drop --pools"
            ));
        }
        if self.was_given("pes_per_connection") {
            return Err(format!(
                "{name} deals the population out over --connections: drop --pes-per-connection"
            ));
        }
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err("--timeout must be a positive number of seconds".into());
        }
        Ok(())
    }

    /// The checks only a `takeover` run needs.
    fn validate_takeover(&self) -> Result<(), String> {
        if self.registrar.is_some() {
            return Err(
                "takeover starts its three registrars itself: drop --registrar (--registrar-bin \
                 names the binary)"
                    .into(),
            );
        }
        if self.pool_elements > CHAOS_MAX_POOL {
            return Err(format!(
                "--pool-elements {} exceeds the {CHAOS_MAX_POOL} PEs one resolution returns: the \
                 survivors' homes are read from whole pools",
                self.pool_elements
            ));
        }
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err("--timeout must be a positive number of seconds".into());
        }
        Ok(())
    }

    /// The checks of the `hostile` options: its own options only there, SCTP only there.
    fn validate_hostile(&self) -> Result<(), String> {
        let hostile = self.scenario == ScenarioKind::Hostile;
        let sctp = self.transport == StreamTransport::Sctp
            || self
                .registrar
                .is_some_and(|r| r.transport == StreamTransport::Sctp);
        if !hostile {
            let own = [
                "messages",
                "check_every",
                "max_rss_growth_mib",
                "udp",
                "pid",
            ];
            if let Some(name) = own.iter().find(|n| self.was_given(n)) {
                return Err(format!(
                    "--{} applies to hostile only",
                    name.replace('_', "-")
                ));
            }
            if sctp {
                return Err(format!(
                    "{} frames byte streams: SCTP is for hostile only (use tcp or mptcp)",
                    self.scenario.name()
                ));
            }
            return Ok(());
        }
        if self.messages == Some(0) || self.check_every == 0 {
            return Err("--messages and --check-every must be at least 1".into());
        }
        if self.hostile_pool_elements() > CHAOS_MAX_POOL {
            return Err(format!(
                "--pool-elements {} exceeds the {CHAOS_MAX_POOL} PEs one resolution returns: \
                 the soak checks whole pools",
                self.pool_elements
            ));
        }
        if self.rate.is_some() || self.compare_echo {
            return Err("hostile sends as fast as it can: drop --rate and --compare-echo".into());
        }
        if self.udp.is_some() && self.spawns() {
            return Err(
                "--udp names an external registrar's UDP port: a spawned one gets its own".into(),
            );
        }
        if let Some(r) = self.registrar
            && r.addr.ip() != std::net::IpAddr::from([127, 0, 0, 1])
        {
            return Err(format!(
                "hostile needs a registrar on 127.0.0.1 (its attackers connect from 127.2.0.0 \
                 and up, other hosts as far as the registrar can tell), not {}",
                r.addr
            ));
        }
        Ok(())
    }

    /// The hostile messages of a `hostile` run: `--messages` or 1 000 000.
    pub fn hostile_messages(&self) -> u64 {
        self.messages.unwrap_or(HOSTILE_MESSAGES)
    }

    /// The pools of a `hostile` run's legitimate PEs: `--pools` if given, else 8.
    pub fn hostile_pools(&self) -> usize {
        if self.was_given("pools") {
            self.pools
        } else {
            HOSTILE_POOLS
        }
    }

    /// The legitimate PEs per pool of a `hostile` run: `--pool-elements` if given, else 8.
    pub fn hostile_pool_elements(&self) -> usize {
        if self.was_given("pool_elements") {
            self.pool_elements
        } else {
            HOSTILE_POOL_ELEMENTS
        }
    }

    /// The attacker connections of a `hostile` run: `--connections` if given, else 8.
    pub fn hostile_attackers(&self) -> usize {
        if self.was_given("connections") {
            self.connections
        } else {
            HOSTILE_ATTACKERS
        }
    }

    /// The checks only a `chaos` run needs.
    fn validate_chaos(&self) -> Result<(), String> {
        if self.registrar.is_some() {
            return Err(
                "chaos starts its registrars itself: drop --registrar (--registrar-bin names the \
                 binary)"
                    .into(),
            );
        }
        if !CHAOS_REGISTRARS.contains(&self.registrars) {
            return Err(format!(
                "--registrars {} is out of range: chaos runs {} to {} registrars",
                self.registrars,
                CHAOS_REGISTRARS.start(),
                CHAOS_REGISTRARS.end()
            ));
        }
        let duration = self.chaos_duration();
        if !(duration.is_finite() && duration >= CHAOS_MIN_DURATION) {
            return Err(format!(
                "chaos injects faults for --duration: give at least {CHAOS_MIN_DURATION} s (e.g. \
                 --duration 60 or --duration 10m)"
            ));
        }
        if self.pool_elements > CHAOS_MAX_POOL {
            return Err(format!(
                "--pool-elements {} exceeds the {CHAOS_MAX_POOL} PEs one resolution returns: the \
                 checker must see whole pools",
                self.pool_elements
            ));
        }
        if self.rate.is_some() || self.compare_echo || self.keep_alive_interval.is_some() {
            return Err(
                "chaos runs its own PEs and PUs: drop --rate, --compare-echo and \
                 --keep-alive-interval"
                    .into(),
            );
        }
        Ok(())
    }

    /// The echo server's reply: the size asked, rounded up to 4.
    pub fn echo_reply_size(&self) -> Option<usize> {
        self.reply_size.map(|s| (s + 3) & !3)
    }

    /// The load shape for a run labelled `label` in progress lines.
    pub fn load_spec(&self, label: &str) -> LoadSpec {
        LoadSpec {
            pipeline: self.pipeline,
            threads: self.threads,
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
            rate: self.rate,
            poll: self.poll,
            progress: !self.quiet,
            label: label.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, RestartKind, TakeoverFault, parse_seconds};
    use crate::ScenarioKind;

    #[test]
    fn restart_and_fault_belong_to_their_scenarios() {
        let resync = Cli::from_args(&["resync", "--restart", "new-id"]).unwrap();
        assert_eq!(resync.restart, Some(RestartKind::NewId));
        assert_eq!(Cli::from_args(&["resync"]).unwrap().restart, None);
        let takeover = Cli::from_args(&["takeover"]).unwrap();
        assert_eq!(takeover.takeover_fault(), TakeoverFault::Kill);
        assert_eq!(
            (takeover.population(), takeover.population_pools()),
            (1000, 100)
        );
        assert!(takeover.spawns() && !takeover.was_given("workers"));
        let stopped = Cli::from_args(&["takeover", "--fault", "stop", "--workers", "2"]).unwrap();
        assert_eq!(stopped.takeover_fault(), TakeoverFault::Stop);
        assert_eq!(stopped.scenario, ScenarioKind::Takeover);
        assert!(stopped.was_given("workers"));
        for (args, why) in [
            (
                &["takeover", "--restart", "same-id"][..],
                "--restart applies to resync only",
            ),
            (
                &["resync", "--fault", "kill"][..],
                "--fault applies to takeover only",
            ),
            (
                &["takeover", "--registrar", "tcp://127.0.0.1:1"][..],
                "drop --registrar",
            ),
            (
                &["takeover", "--pool-elements", "129"][..],
                "exceeds the 128 PEs",
            ),
            (
                &["takeover", "--timeout", "0"][..],
                "--timeout must be a positive",
            ),
            (&["takeover", "--rate", "5"][..], "sends no requests"),
        ] {
            let e = Cli::from_args(args).unwrap_err();
            assert!(e.contains(why), "{args:?}: {e}");
        }
    }

    #[test]
    fn hostile_options_belong_to_hostile_and_sctp_too() {
        let soak = Cli::from_args(&["hostile", "--spawn", "--transport", "sctp"]).unwrap();
        assert_eq!(soak.hostile_messages(), 1_000_000);
        assert_eq!(
            (
                soak.hostile_pools(),
                soak.hostile_pool_elements(),
                soak.hostile_attackers()
            ),
            (8, 8, 8)
        );
        let given = Cli::from_args(&["hostile", "--spawn", "-c", "3", "--messages", "5"]).unwrap();
        assert_eq!(
            (given.hostile_attackers(), given.hostile_messages()),
            (3, 5)
        );
        for (args, why) in [
            (
                &["resolve", "--spawn", "--messages", "5"][..],
                "--messages applies to hostile only",
            ),
            (
                &["resolve", "--spawn", "--transport", "sctp"][..],
                "SCTP is for hostile only",
            ),
            (
                &["echo", "--transport", "sctp"][..],
                "SCTP is for hostile only",
            ),
            (&["hostile", "--spawn", "--messages", "0"][..], "at least 1"),
            (
                &["hostile", "--spawn", "--udp", "127.0.0.1:1"][..],
                "a spawned one gets its own",
            ),
            (
                &["hostile", "--registrar", "tcp://10.0.0.1:1"][..],
                "needs a registrar on 127.0.0.1",
            ),
            (
                &["hostile", "--spawn", "--pool-elements", "129"][..],
                "exceeds the 128 PEs",
            ),
            (&["hostile"][..], "hostile needs a registrar"),
        ] {
            let e = Cli::from_args(args).unwrap_err();
            assert!(e.contains(why), "{args:?}: {e}");
        }
        assert!(Cli::from_args(&["hostile", "--spawn", "--pid", "1"]).is_err());
        let external =
            Cli::from_args(&["hostile", "--registrar", "sctp://127.0.0.1:3863"]).unwrap();
        assert!(external.registrar.is_some_and(|r| !r.transport.is_stream()));
    }

    #[test]
    fn durations_take_seconds_minutes_and_hours() {
        assert_eq!(parse_seconds("90"), Ok(90.0));
        assert_eq!(parse_seconds("1.5"), Ok(1.5));
        assert_eq!(parse_seconds("90s"), Ok(90.0));
        assert_eq!(parse_seconds("10m"), Ok(600.0));
        assert_eq!(parse_seconds("1h"), Ok(3600.0));
        assert_eq!(parse_seconds("500ms"), Ok(0.5));
        assert!(parse_seconds("5xms").is_err());
        assert!(parse_seconds("ten").unwrap_err().contains("10m"));
    }
}
