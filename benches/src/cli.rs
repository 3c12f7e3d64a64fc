//! The command line of `rserpool-bench`: a subcommand per scenario taking only that scenario's
//! options, under the headings target, load shape, scenario options and output, each option's
//! help as it applies to that scenario; and the checks that reject contradictory options before
//! anything connects. An option a scenario has not, and a contradiction, is a usage error.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValuesParser;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Command, CommandFactory, FromArgMatches, Parser, ValueEnum};

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
    /// The `resolve` load against a freshly spawned registrar per point of a short grid over the
    /// I/O keys (io.max_batch, io.ring_entries, registrar.busy_poll_us, registrar.workers,
    /// registrar.pin_workers) around `--profile`, the base measured too; reports every point and
    /// the best by a stated rule, and can write it as a profile (`--write-profile`).
    Sweep,
    /// `--subscribers` pool subscriptions (the S bit) over `--connections` associations, while
    /// a PE's attributes change at `--rate` per second: the latency from a change to the push
    /// that reports it, pushes/s, and that every subscription saw its pool's last change.
    Subscribe,
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
            Self::Sweep => "sweep",
            Self::Subscribe => "subscribe",
        }
    }

    /// Whether the scenario runs over SCTP (one-to-one associations, whole messages) as well
    /// as over TCP and MPTCP: `hostile`, and the load scenarios whose connections go through
    /// the load driver and the setup fleet (`register --population` does not: it waits on epoll
    /// for TCP sockets, see `Cli::validate_target`).
    pub const fn speaks_sctp(self) -> bool {
        matches!(
            self,
            Self::Echo
                | Self::Resolve
                | Self::Register
                | Self::Churn
                | Self::Keepalive
                | Self::Hostile
        )
    }

    /// Whether the scenario runs over SCTP over UDP (`--transport sctp-udp`, `sctp+udp://`):
    /// those whose connections go through the load driver and the setup fleet, as for SCTP,
    /// without `hostile`.
    pub const fn speaks_sctp_udp(self) -> bool {
        self.speaks_sctp() && !matches!(self, Self::Hostile)
    }

    /// The ids of the scenario's options (long names with `_`).
    pub fn options(self) -> Vec<&'static str> {
        const LOAD: &[&str] = &[
            "connections",
            "pipeline",
            "threads",
            "duration",
            "warmup",
            "rate",
            "poll",
        ];
        // A registrar given by URL or spawned.
        const REGISTRAR: &[&str] = &[
            "registrar",
            "spawn",
            "registrar_bin",
            "workers",
            "profile",
            "transport",
            "keep_alive_interval",
        ];
        // The registrars a scenario always starts itself.
        const SCOPE: &[&str] = &["registrar_bin", "workers", "profile", "transport"];
        // The output of the scenarios that measure latencies.
        const LATENCY_OUTPUT: &[&str] = &["json", "csv", "hdr_log", "quiet"];
        const OUTPUT: &[&str] = &["json", "quiet"];
        let groups: &[&[&str]] = match self {
            Self::Echo => &[
                LOAD,
                &["transport", "tls", "pools", "reply_size"],
                LATENCY_OUTPUT,
            ],
            Self::Resolve => &[
                LOAD,
                REGISTRAR,
                &["tls", "pools", "pool_elements", "policy", "compare_echo"],
                LATENCY_OUTPUT,
            ],
            Self::Register => &[
                LOAD,
                REGISTRAR,
                &[
                    "tls",
                    "pools",
                    "pes_per_connection",
                    "policy",
                    "population",
                    "pool_elements",
                    "compare_echo",
                ],
                LATENCY_OUTPUT,
            ],
            Self::Storm => &[
                &["connections", "threads", "poll"],
                REGISTRAR,
                &[
                    "population",
                    "pool_elements",
                    "policy",
                    "timeout",
                    "compare_echo",
                ],
                LATENCY_OUTPUT,
            ],
            Self::Churn => &[
                LOAD,
                REGISTRAR,
                &["pools", "pool_elements", "churners", "reregistrations"],
                LATENCY_OUTPUT,
            ],
            Self::Keepalive => &[
                &["connections", "duration", "warmup", "poll"],
                REGISTRAR,
                &["pools", "population"],
                LATENCY_OUTPUT,
            ],
            Self::Resync => &[
                &["connections"],
                SCOPE,
                &[
                    "keep_alive_interval",
                    "population",
                    "pool_elements",
                    "page",
                    "enrp_generation",
                    "timeout",
                    "restart",
                ],
                OUTPUT,
            ],
            Self::Takeover => &[
                &["connections"],
                SCOPE,
                &[
                    "keep_alive_interval",
                    "population",
                    "pool_elements",
                    "enrp_generation",
                    "timeout",
                    "fault",
                ],
                OUTPUT,
            ],
            Self::Chaos => &[
                &["duration"],
                SCOPE,
                &[
                    "rserpool_bin",
                    "registrars",
                    "seed",
                    "logs",
                    "population",
                    "pool_elements",
                ],
                OUTPUT,
            ],
            Self::Hostile => &[
                &["connections"],
                REGISTRAR,
                &[
                    "udp",
                    "pid",
                    "pools",
                    "pool_elements",
                    "messages",
                    "check_every",
                    "max_rss_growth_mib",
                    "seed",
                ],
                OUTPUT,
            ],
            // Every point spawns its own registrar; `--workers` is one of the keys swept.
            Self::Sweep => &[
                LOAD,
                &["registrar_bin", "profile", "transport"],
                &[
                    "pools",
                    "pool_elements",
                    "policy",
                    "points",
                    "budget",
                    "verify",
                ],
                &["json", "quiet", "write_profile"],
            ],
            Self::Subscribe => &[
                &["connections", "threads", "duration", "warmup", "rate"],
                REGISTRAR,
                &["pools", "subscribers"],
                OUTPUT,
            ],
        };
        groups.concat()
    }

    /// The scenario's subcommand: its options out of `all` (every option's definition), by
    /// heading, each with its help for this scenario; `--transport sctp` for the scenarios that
    /// [speak SCTP](Self::speaks_sctp) only.
    fn command(self, all: &Command) -> Command {
        let options = self.options();
        let about = self
            .to_possible_value()
            .and_then(|v| v.get_help().cloned())
            .unwrap_or_default();
        let mut command = Command::new(self.name()).about(about);
        for heading in HEADINGS {
            for arg in all.get_arguments().filter(|a| {
                a.get_help_heading() == Some(heading) && options.contains(&a.get_id().as_str())
            }) {
                let id = arg.get_id().as_str();
                let mut arg = arg.clone();
                if id == "transport" && !self.speaks_sctp_udp() {
                    let spoken = StreamTransport::value_variants()
                        .iter()
                        .filter(|t| {
                            t.is_stream() || **t == StreamTransport::Sctp && self.speaks_sctp()
                        })
                        .filter_map(ValueEnum::to_possible_value);
                    arg = arg.value_parser(PossibleValuesParser::new(spoken));
                }
                if let Some((help, own_default)) = self.help_for(id) {
                    arg = arg.help(help).hide_default_value(own_default);
                }
                command = command.arg(arg);
            }
        }
        command
    }

    /// The help of option `id` in this scenario where it differs from the option's own, and
    /// whether the help names the scenario's own default (hiding the option's).
    fn help_for(self, id: &str) -> Option<(String, bool)> {
        use ScenarioKind as S;
        let (help, own_default): (String, bool) = match (self, id) {
            (S::Echo, "pools") => (
                "Pools the requests name (the resolve request mix)".into(),
                false,
            ),
            (S::Echo, "transport") => (
                "Transport of the built-in echo server (sctp: one one-to-many socket; sctp-udp: \
                 one UDP socket and one user-space SCTP endpoint)"
                    .into(),
                false,
            ),
            (S::Echo, "tls") => (
                "TLS 1.3 with client certificates: the run makes a throwaway CA, the echo \
                 server's certificate and the clients'"
                    .into(),
                false,
            ),
            (S::Echo, "connections") => ("Connections to the built-in echo server".into(), false),
            (S::Echo, "reply_size") => (
                format!(
                    "Answer each request with a frame of this many bytes ({MIN_REPLY} to \
                     {MAX_REPLY}, rounded up to 4) instead of the request itself"
                ),
                false,
            ),
            (S::Register, "connections") => (
                "Connections, one PE association each (with --population: the associations \
                 the population is dealt out over)"
                    .into(),
                false,
            ),
            (S::Register, "duration") => (
                "Seconds measured: a number of seconds, or with a unit (500ms, 90s, 10m, 1h); \
                 with --population the time the registrations may take (default 60)"
                    .into(),
                false,
            ),
            (S::Register, "warmup") => (
                "Seconds of load before measuring (units as for --duration; not with \
                 --population)"
                    .into(),
                false,
            ),
            (S::Register, "rate") => (
                "Open loop: registrations per second over all connections, latency from the \
                 intended send time (not with --population)"
                    .into(),
                false,
            ),
            (S::Register, "pools") => (
                "Pools the connections' PEs are spread over (not with --population)".into(),
                false,
            ),
            (S::Register, "pool_elements") => (
                "With --population: PEs per pool (the population fills population / \
                 pool-elements pools)"
                    .into(),
                false,
            ),
            (S::Register, "pes_per_connection") => (
                "PEs each connection re-registers in turn (not with --population)".into(),
                false,
            ),
            (S::Register, "population") => (
                "Register this many new PEs, each once, into pools of --pool-elements (instead \
                 of re-registering)"
                    .into(),
                false,
            ),
            (S::Register | S::Resolve, "tls") => (
                "TLS 1.3 with client certificates, with --spawn: the run makes a throwaway CA, \
                 the registrar's certificate and the clients', and the spawned registrar listens \
                 on tcp+tls:// (or mptcp+tls://)"
                    .into(),
                false,
            ),
            (S::Storm, "connections") => (
                "Associations the population is dealt out over; each writes all its \
                 registrations at once"
                    .into(),
                false,
            ),
            (S::Storm, "population") => (
                format!("New PEs to register [default: {STORM_POPULATION}]"),
                true,
            ),
            (S::Storm | S::Resync, "pool_elements") => {
                ("PEs per pool of the population".into(), false)
            }
            (S::Takeover, "pool_elements") => (
                format!(
                    "PEs per pool of the population (at most {CHAOS_MAX_POOL}: the survivors' \
                     homes are read from whole pools)"
                ),
                false,
            ),
            (S::Storm, "timeout") => (
                "Seconds from the first write the answers may take (units as for --duration)"
                    .into(),
                false,
            ),
            (S::Churn, "connections") => ("Pool users resolving in the closed loop".into(), false),
            (S::Churn, "pipeline") => ("Resolutions in flight per pool user at most".into(), false),
            (S::Churn, "threads") => ("Client threads of the pool users".into(), false),
            (S::Churn, "rate") => (
                "The churning PEs' operations per second (required; the pool users run closed \
                 loop)"
                    .into(),
                false,
            ),
            (S::Churn, "pools") => (
                "Pools registered before the run, resolved by the pool users and churned into"
                    .into(),
                false,
            ),
            (S::Keepalive, "connections") => {
                ("Associations the population is spread over".into(), false)
            }
            (S::Keepalive, "warmup") => (
                "Seconds of keep-alives answered before measuring (units as for --duration)".into(),
                false,
            ),
            (S::Keepalive, "poll") => (
                "How the client waits for keep-alives: spin (yield when a pass moved nothing) \
                 or block (sleep 1 ms)"
                    .into(),
                false,
            ),
            (S::Keepalive, "pools") => ("Pools the population is spread over".into(), false),
            (S::Keepalive, "population") => (
                format!("PEs registered [default: {KEEPALIVE_POPULATION}]"),
                true,
            ),
            (S::Resync | S::Takeover, "connections") => (
                "Associations the population registers over at the first registrar".into(),
                false,
            ),
            (S::Resync, "population") => (
                format!("PEs registered at the first registrar [default: {RESYNC_POPULATION}]"),
                true,
            ),
            (S::Resync, "keep_alive_interval") => (
                format!(
                    "The first registrar's keep-alive interval in milliseconds [default: \
                     {RESYNC_KEEP_ALIVE_MS}, so that no keep-alive competes with the transfer]"
                ),
                true,
            ),
            (S::Resync, "timeout") => (
                "Seconds the second registrar may take to hold the whole population (and again \
                 after --restart)"
                    .into(),
                false,
            ),
            (S::Resync | S::Takeover | S::Chaos, "transport") => (
                "Transport of the registrars' ASAP and ENRP endpoints".into(),
                false,
            ),
            (S::Resync | S::Takeover | S::Chaos, "profile") => (
                "The tuning profile of every registrar (default, carrier, low-latency)".into(),
                false,
            ),
            (S::Resync | S::Takeover | S::Chaos, "registrar_bin") => (
                "The registrar binary to start (default: next to this binary)".into(),
                false,
            ),
            (S::Resync, "workers") => ("Worker threads of each registrar".into(), false),
            (S::Takeover | S::Chaos, "workers") => (
                "Worker threads of each registrar [default: the profile's, one per core]".into(),
                true,
            ),
            (S::Takeover, "population") => (
                format!("PEs registered at the first registrar [default: {TAKEOVER_POPULATION}]"),
                true,
            ),
            (S::Takeover, "keep_alive_interval") => (
                "The registrars' keep-alive interval in milliseconds (default: the profile's)"
                    .into(),
                false,
            ),
            (S::Takeover, "timeout") => (
                "Seconds the survivors may take to hold every PE, before and after the fault"
                    .into(),
                false,
            ),
            (S::Chaos, "duration") => (
                format!(
                    "Seconds of faults, at least {CHAOS_MIN_DURATION} (units as 90s, 10m, 1h) \
                     [default: {CHAOS_DURATION}]"
                ),
                true,
            ),
            (S::Chaos, "population") => (
                format!("PEs alive at any time [default: {CHAOS_POPULATION}]"),
                true,
            ),
            (S::Chaos, "pool_elements") => (
                format!("PEs per pool (at most {CHAOS_MAX_POOL}: the checker sees whole pools)"),
                false,
            ),
            (S::Chaos, "seed") => (
                "The seed of the fault schedule and the PE identifiers (default: from the \
                 clock; the run prints it)"
                    .into(),
                false,
            ),
            (S::Subscribe, "connections") => (
                "Subscriber associations; the subscriptions are dealt out over them".into(),
                false,
            ),
            (S::Subscribe, "threads") => (
                "Client threads reading the pushes; the associations are dealt out among them, \
                 each thread polling its share without sleeping"
                    .into(),
                false,
            ),
            (S::Subscribe, "rate") => (
                format!(
                    "Pool changes per second (re-registrations with a new load value) [default: {SUBSCRIBE_RATE}]"
                ),
                true,
            ),
            (S::Subscribe, "pools") => {
                ("Pools watched, one PE each, changed in turn".into(), false)
            }
            (S::Hostile, "connections") => (
                format!("Attacker connections [default: {HOSTILE_ATTACKERS}]"),
                true,
            ),
            (S::Hostile, "pools") => (
                format!("Pools of the legitimate PEs [default: {HOSTILE_POOLS}]"),
                true,
            ),
            (S::Hostile, "pool_elements") => (
                format!(
                    "Legitimate PEs per pool, at most {CHAOS_MAX_POOL} [default: \
                     {HOSTILE_POOL_ELEMENTS}]"
                ),
                true,
            ),
            (S::Hostile, "seed") => (
                "The seed of the messages, their mutations and the PE identifiers (default: \
                 from the clock; the run prints it)"
                    .into(),
                false,
            ),
            (S::Hostile, "registrar") => (
                "The registrar to attack, on 127.0.0.1: tcp://, mptcp:// or \
                 sctp://127.0.0.1:PORT, optional ?generation=ng"
                    .into(),
                false,
            ),
            (S::Hostile, "transport") => (
                "Transport of a spawned registrar: tcp, mptcp or sctp".into(),
                false,
            ),
            (S::Resolve | S::Churn | S::Keepalive, "registrar") => (
                "The registrar to load: tcp://HOST:PORT, mptcp://HOST:PORT, sctp://HOST:PORT or \
                 sctp+udp://HOST:UDP-PORT, optional ?generation=ng"
                    .into(),
                false,
            ),
            (S::Register, "registrar") => (
                "The registrar to load: tcp://HOST:PORT, mptcp://HOST:PORT, sctp://HOST:PORT or \
                 sctp+udp://HOST:UDP-PORT (sctp, sctp+udp: not with --population), optional \
                 ?generation=ng"
                    .into(),
                false,
            ),
            (S::Resolve | S::Register | S::Churn | S::Keepalive, "transport") => (
                "Transport of a spawned registrar (a --registrar URL names its own); sctp: \
                 one-to-one associations, each ASAP message whole with PPID 11; sctp-udp: the \
                 same over UDP in user space, one UDP socket per client thread"
                    .into(),
                false,
            ),
            (S::Sweep, "duration") => (
                format!(
                    "Seconds measured per point (units as for --duration) [default: \
                     {SWEEP_DURATION}]"
                ),
                true,
            ),
            (S::Sweep, "warmup") => (
                "Seconds of load before each point is measured (units as for --duration)".into(),
                false,
            ),
            (S::Sweep, "rate") => (
                "Open loop: resolutions per second over all connections; the best point is then \
                 the one with the lowest p99 at this rate"
                    .into(),
                false,
            ),
            (S::Sweep, "profile") => (
                "The base profile (default, carrier, low-latency): the grid varies its I/O keys \
                 around its values, and it is measured as a point of its own"
                    .into(),
                false,
            ),
            (S::Sweep, "registrar_bin") => (
                "The registrar binary started for each point (default: next to this binary)".into(),
                false,
            ),
            (S::Sweep, "transport") => ("Transport of the spawned registrars".into(), false),
            (S::Hostile, "workers") => (
                "Worker threads of a spawned registrar [default: the profile's, one per core]"
                    .into(),
                true,
            ),
            _ => return None,
        };
        Some((help, own_default))
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
/// A `resync` mentor's default keep-alive interval: one hour, so that no keep-alive competes
/// with the transfer.
pub const RESYNC_KEEP_ALIVE_MS: u64 = 3_600_000;
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

/// The default changes per second of a `subscribe` run (`--rate`).
pub const SUBSCRIBE_RATE: f64 = 1000.0;

/// The default number of hostile messages of a `hostile` run.
pub const HOSTILE_MESSAGES: u64 = 1_000_000;
/// The default pools of a `hostile` run's legitimate PEs (`--pools`).
pub const HOSTILE_POOLS: usize = 8;
/// The default legitimate PEs per pool of a `hostile` run (`--pool-elements`).
pub const HOSTILE_POOL_ELEMENTS: usize = 8;
/// The default attacker connections of a `hostile` run (`--connections`).
pub const HOSTILE_ATTACKERS: usize = 8;

/// The default seconds measured per point of a `sweep` (`--duration`).
pub const SWEEP_DURATION: f64 = 2.0;
/// The default time bound of a whole `sweep` in seconds (`--budget`).
pub const SWEEP_BUDGET: f64 = 60.0;

/// The most PEs per handle table page the registrar accepts
/// (`enrp.max_pes_per_table_response`).
pub const MAX_PAGE: usize = 4096;
/// The most PEs per page the registrar sends to an RFC peer.
pub const MAX_RFC_PAGE: usize = 128;

/// The help heading of the options that choose, start and configure the registrar(s).
const TARGET: &str = "Target";
/// The help heading of the options that shape the load.
const LOAD: &str = "Load shape";
/// The help heading of the options of one scenario.
const SCENARIO: &str = "Scenario options";
/// The help heading of the options that choose what is printed and written.
const OUTPUT: &str = "Output";
/// The help headings in the order a scenario's help lists them.
const HEADINGS: [&str; 4] = [TARGET, LOAD, SCENARIO, OUTPUT];

/// The options of a run: every option of every scenario, those a scenario has not at their
/// defaults. Read from the command line by [`Cli::parse_noting_given`], which lets each scenario
/// take only its own options (see [`Cli::scenario_commands`]).
#[derive(Clone, Debug, Parser)]
#[command(name = "rserpool-bench", version)]
pub struct Cli {
    /// What to measure.
    #[arg(value_enum)]
    pub scenario: ScenarioKind,

    /// Connections to the server.
    #[arg(long, short = 'c', default_value_t = 16, help_heading = LOAD)]
    pub connections: usize,
    /// Requests in flight per connection at most; a connection refills its window in one write.
    #[arg(long, short = 'p', default_value_t = 32, help_heading = LOAD)]
    pub pipeline: usize,
    /// Client threads; connections are dealt out among them.
    #[arg(long, short = 't', default_value_t = 1, help_heading = LOAD)]
    pub threads: usize,
    /// Seconds measured: a number of seconds, or with a unit (500ms, 90s, 10m, 1h).
    #[arg(long, short = 'd', value_name = "TIME", default_value_t = 5.0,
          value_parser = parse_seconds, help_heading = LOAD)]
    pub duration: f64,
    /// Seconds of load before measuring (units as for --duration).
    #[arg(long, value_name = "TIME", default_value_t = 1.0, value_parser = parse_seconds,
          help_heading = LOAD)]
    pub warmup: f64,
    /// Open loop: requests per second over all connections, latency from the intended send time
    /// (the pipeline still caps what is in flight).
    #[arg(long, value_name = "PER_S", help_heading = LOAD)]
    pub rate: Option<f64>,
    /// How client threads wait for replies: spin (poll non-blocking sockets) or block (read each
    /// connection in turn; closed loop only).
    #[arg(long, value_enum, default_value_t = Poll::Spin, help_heading = LOAD)]
    pub poll: Poll,

    /// Pools registered and resolved.
    #[arg(long, default_value_t = 100, help_heading = SCENARIO)]
    pub pools: usize,
    /// PEs registered per pool before the timed phase.
    #[arg(long, default_value_t = 10, help_heading = SCENARIO)]
    pub pool_elements: usize,
    /// PEs each connection registers over and over.
    #[arg(long, default_value_t = 1, help_heading = SCENARIO)]
    pub pes_per_connection: usize,
    /// The member-selection policy of the PEs, with per-PE parameters drawn from the PE's number
    /// (weights and priorities 1 to 10, loads spread over the 32-bit range).
    #[arg(long, value_enum, default_value_t = PolicyKind::Rr, help_heading = SCENARIO)]
    pub policy: PolicyKind,
    /// PE associations, one PE each, cycling register, re-register, deregister at --rate
    /// operations per second.
    #[arg(long, default_value_t = 16, help_heading = SCENARIO)]
    pub churners: usize,
    /// Re-registrations between a PE's registration and its deregistration.
    #[arg(long, default_value_t = 3, help_heading = SCENARIO)]
    pub reregistrations: usize,
    /// Pool subscriptions (`subscribe`): HANDLE_RESOLUTIONs with the S bit, each association
    /// subscribing to distinct pools.
    #[arg(long, value_name = "N", default_value_t = 10_000, help_heading = SCENARIO)]
    pub subscribers: usize,
    /// PEs registered (each scenario has its own default).
    #[arg(long, value_name = "N", help_heading = SCENARIO)]
    pub population: Option<usize>,
    /// The most PEs per ENRP handle table page (`enrp.max_pes_per_table_response`); at most 128
    /// with --enrp-generation rfc.
    #[arg(long, value_name = "PES", default_value_t = 1024, help_heading = SCENARIO)]
    pub page: usize,
    /// The wire format of the registrars' ENRP endpoints.
    #[arg(long, value_enum, default_value_t = EnrpGeneration::Ng, help_heading = SCENARIO)]
    pub enrp_generation: EnrpGeneration,
    /// Seconds the run waits at most (units as for --duration).
    #[arg(long, value_name = "TIME", default_value_t = 60.0, value_parser = parse_seconds,
          help_heading = SCENARIO)]
    pub timeout: f64,
    /// Once the new registrar holds the population, SIGKILL it, wait for its exit and start it
    /// again at once with the same command line (same ports) and the same --id (same-id) or
    /// another (new-id); report the time until it holds the population again.
    #[arg(long, value_enum, value_name = "KIND", help_heading = SCENARIO)]
    pub restart: Option<RestartKind>,
    /// What happens to the registrar the PEs are registered at: kill (SIGKILL) or stop (SIGSTOP,
    /// SIGCONT at the end) [default: kill].
    #[arg(long, value_enum, value_name = "FAULT", help_heading = SCENARIO)]
    pub fault: Option<TakeoverFault>,
    /// Registrars in the operating scope (3 to 5).
    #[arg(long, value_name = "N", default_value_t = 3, help_heading = SCENARIO)]
    pub registrars: usize,
    /// The seed of the run (default: from the clock; the run prints it).
    #[arg(long, value_name = "N", help_heading = SCENARIO)]
    pub seed: Option<u64>,
    /// The directory for the registrars' and PEs' logs (default: a new directory in the
    /// temporary directory; the run prints it).
    #[arg(long, value_name = "DIR", help_heading = SCENARIO)]
    pub logs: Option<PathBuf>,
    /// The `rserpool` command line the PEs run as (default: next to this binary).
    #[arg(long, value_name = "PATH", help_heading = SCENARIO)]
    pub rserpool_bin: Option<PathBuf>,
    /// Answer each request with a frame of this many bytes (rounded up to 4) instead of the
    /// request itself.
    #[arg(long, value_name = "BYTES", help_heading = SCENARIO)]
    pub reply_size: Option<usize>,
    /// After the scenario, run the echo server under the same load and reply size and print the
    /// ratio scenario/echo.
    #[arg(long, help_heading = SCENARIO)]
    pub compare_echo: bool,

    /// The registrar to load: tcp://HOST:PORT or mptcp://HOST:PORT, optional ?generation=ng.
    #[arg(long, value_name = "URL", help_heading = TARGET)]
    pub registrar: Option<Endpoint>,
    /// Start rserpool-registrar for the run and stop it afterwards.
    #[arg(long, conflicts_with = "registrar", help_heading = TARGET)]
    pub spawn: bool,
    /// The registrar binary to start (default: next to this binary); needs --spawn.
    #[arg(long, value_name = "PATH", help_heading = TARGET)]
    pub registrar_bin: Option<PathBuf>,
    /// Worker threads of a spawned registrar.
    #[arg(long, default_value_t = 1, help_heading = TARGET)]
    pub workers: usize,
    /// The tuning profile of a spawned registrar (default, carrier, low-latency); needs --spawn.
    #[arg(long, value_name = "NAME", default_value = "default", help_heading = TARGET)]
    pub profile: String,
    /// Transport of a spawned registrar (a --registrar URL names its own).
    #[arg(long, value_enum, default_value_t = StreamTransport::Tcp, help_heading = TARGET)]
    pub transport: StreamTransport,
    /// TLS 1.3 with client certificates, with --spawn: the run makes a throwaway CA, the
    /// registrar's and the echo server's certificate and the clients', and the spawned registrar
    /// listens on tcp+tls:// (or mptcp+tls://).
    #[arg(long, help_heading = TARGET)]
    pub tls: bool,
    /// The spawned registrar's keep-alive interval in milliseconds (default: its profile's,
    /// 5000); needs --spawn.
    #[arg(long, value_name = "MS", help_heading = TARGET)]
    pub keep_alive_interval: Option<u64>,
    /// The UDP port of a --registrar to send every fourth message to as a datagram (a spawned
    /// registrar gets a UDP listener of its own).
    #[arg(long, value_name = "HOST:PORT", help_heading = TARGET)]
    pub udp: Option<std::net::SocketAddr>,
    /// The process ID of a --registrar, whose life and memory are checked.
    #[arg(long, value_name = "PID", conflicts_with = "spawn", help_heading = TARGET)]
    pub pid: Option<u32>,

    /// The hostile messages to send (over the attacker connections and UDP).
    #[arg(long, value_name = "N", default_value_t = HOSTILE_MESSAGES, help_heading = SCENARIO)]
    pub messages: u64,
    /// Check the registrar (alive, every legitimate PE resolvable, memory) every this many
    /// messages, and at the end.
    #[arg(long, value_name = "N", default_value_t = 10_000, help_heading = SCENARIO)]
    pub check_every: u64,
    /// Fail when the registrar's resident memory (VmRSS) grows by more than this many MiB over
    /// its figure before the attack.
    #[arg(long, value_name = "MIB", default_value_t = 64, help_heading = SCENARIO)]
    pub max_rss_growth_mib: u64,

    /// Measure at most N points of the grid, the base included (default: the whole grid).
    #[arg(long, value_name = "N", help_heading = SCENARIO)]
    pub points: Option<usize>,
    /// The time the whole sweep may take, verification included (units as for --duration); a
    /// point that would not fit is left out.
    #[arg(long, value_name = "TIME", default_value_t = SWEEP_BUDGET, value_parser = parse_seconds,
          help_heading = SCENARIO)]
    pub budget: f64,
    /// After the grid, run the base and the chosen point once more, alternately, and report
    /// whether the chosen one still beats the base.
    #[arg(long, help_heading = SCENARIO)]
    pub verify: bool,

    /// Print one JSON object on stdout instead of the text summary.
    #[arg(long, help_heading = OUTPUT)]
    pub json: bool,
    /// Print CSV on stdout instead of the text summary: a header line and one row per run.
    #[arg(long, conflicts_with = "json", help_heading = OUTPUT)]
    pub csv: bool,
    /// Also write the latency histogram to FILE as an HdrHistogram V2 interval log (nanoseconds,
    /// one interval per run).
    #[arg(long, value_name = "FILE", help_heading = OUTPUT)]
    pub hdr_log: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long, short = 'q', help_heading = OUTPUT)]
    pub quiet: bool,
    /// Write the chosen point as a profile TOML file: the whole base profile with the chosen keys
    /// changed, and comments on the host, the load, the command and the figures.
    #[arg(long, value_name = "FILE", help_heading = OUTPUT)]
    pub write_profile: Option<PathBuf>,

    /// The options given on the command line rather than defaulted, by their ids (`workers`,
    /// `pool_elements`); filled by [`Cli::parse_noting_given`].
    #[arg(skip)]
    pub given: Vec<String>,
}

/// Seconds from `90`, `1.5`, `90s`, `500ms`, `10m` or `1h`.
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
    /// The command line as people use it: `rserpool-bench <scenario> [options]`, a subcommand
    /// per scenario with only that scenario's options, under the headings target, load shape,
    /// scenario options and output.
    pub fn scenario_commands() -> Command {
        let all = Self::command();
        ScenarioKind::value_variants().iter().fold(
            Command::new("rserpool-bench")
                .version(env!("CARGO_PKG_VERSION"))
                .about(
                    "Load generator for RSerPool pool registrars: ASAP over TCP or MPTCP, closed \
                     or open loop, churn, keep-alive populations, ENRP resynchronisation, \
                     takeovers, fault and hostile-input tests",
                )
                .after_help("`rserpool-bench <scenario> --help` lists a scenario's options.")
                .subcommand_required(true)
                .arg_required_else_help(true),
            |root, kind| root.subcommand(kind.command(&all)),
        )
    }

    /// Parses and validates `args` (the program name first), and notes in [`Cli::given`] which
    /// options the command line set. An option the scenario has not and a contradiction are
    /// usage errors (`clap::Error::exit` exits with 2).
    pub fn parse_noting_given<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let mut commands = Self::scenario_commands();
        let matches = commands.try_get_matches_from_mut(&args)?;
        let (name, own) = matches
            .subcommand()
            .expect("the scenario commands require a scenario");
        // The scenario's command accepted the words; every option's definition reads them, so
        // that the options the scenario has not take their defaults.
        let mut cli = Self::from_arg_matches(&Self::command().try_get_matches_from(&args)?)?;
        cli.given = own
            .ids()
            .filter(|id| own.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.as_str().to_owned())
            .collect();
        cli.validate().map_err(|why| {
            commands
                .find_subcommand_mut(name)
                .expect("the scenario's subcommand")
                .error(ErrorKind::ArgumentConflict, why)
        })?;
        Ok(cli)
    }

    /// The command line `rserpool-bench args…` parsed and validated as `main` does it, or the
    /// error it would print.
    pub fn from_args(args: &[&str]) -> Result<Self, String> {
        Self::parse_noting_given(std::iter::once("rserpool-bench").chain(args.iter().copied()))
            .map_err(|e| e.to_string())
    }

    /// Whether the command line set the option `name` (its id: the long name with `_`).
    pub fn was_given(&self, name: &str) -> bool {
        self.given.iter().any(|g| g == name)
    }

    /// The seconds measured per point of a `sweep`: `--duration` if given, else 2.
    pub fn sweep_duration(&self) -> f64 {
        if self.was_given("duration") {
            self.duration
        } else {
            SWEEP_DURATION
        }
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

    /// Whether this run starts its registrar(s): `--spawn`, or always for `resync`, `takeover`,
    /// `chaos` and `sweep`.
    pub fn spawns(&self) -> bool {
        self.spawn
            || matches!(
                self.scenario,
                ScenarioKind::Resync
                    | ScenarioKind::Takeover
                    | ScenarioKind::Chaos
                    | ScenarioKind::Sweep
            )
    }

    /// The fault of a `takeover` run: `--fault`, or SIGKILL.
    pub fn takeover_fault(&self) -> TakeoverFault {
        self.fault.unwrap_or(TakeoverFault::Kill)
    }

    /// Rejects values and combinations that cannot run (options a scenario has not never come
    /// this far: the scenario's command refuses them).
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
            ("--subscribers", self.subscribers),
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
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err("--timeout must be a positive number of seconds".into());
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
        if self.scenario == ScenarioKind::Churn && self.rate.is_none() {
            return Err(
                "churn needs --rate R: the PEs' register, re-register and deregister operations \
                 per second"
                    .into(),
            );
        }
        let populated = matches!(
            self.scenario,
            ScenarioKind::Keepalive
                | ScenarioKind::Resync
                | ScenarioKind::Takeover
                | ScenarioKind::Storm
        ) || self.registers_new_pes();
        if populated && self.connections > self.population() {
            return Err(format!(
                "--connections {} exceeds --population {}: every association needs a PE",
                self.connections,
                self.population()
            ));
        }
        match self.scenario {
            ScenarioKind::Register => self.validate_register()?,
            ScenarioKind::Resync => self.validate_resync()?,
            ScenarioKind::Takeover | ScenarioKind::Chaos => self.validate_scope()?,
            ScenarioKind::Hostile => self.validate_hostile()?,
            ScenarioKind::Sweep => self.validate_sweep()?,
            ScenarioKind::Subscribe => self.validate_subscribe()?,
            _ => {}
        }
        self.validate_target()
    }

    /// The checks of `subscribe`'s options: each association subscribes to a pool once, and the
    /// changes have a rate.
    fn validate_subscribe(&self) -> Result<(), String> {
        if self.subscribers > self.connections.saturating_mul(self.pools) {
            return Err(format!(
                "--subscribers {} exceeds --connections {} x --pools {}: an association \
                 subscribes to a pool once",
                self.subscribers, self.connections, self.pools
            ));
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err("--rate must be a positive number of changes per second".into());
        }
        Ok(())
    }

    /// The checks of the options that choose and configure the registrar.
    fn validate_target(&self) -> Result<(), String> {
        let sctp = self.transport == StreamTransport::Sctp
            || self
                .registrar
                .is_some_and(|r| r.transport == StreamTransport::Sctp);
        if sctp && !self.scenario.speaks_sctp() {
            return Err(format!(
                "{} frames byte streams: SCTP is for resolve, register, churn, keepalive, echo \
                 and hostile only (use tcp or mptcp)",
                self.scenario.name()
            ));
        }
        if sctp && self.registers_new_pes() {
            return Err(
                "register --population waits for TCP sockets: SCTP is for re-registration only \
                 (use tcp or mptcp)"
                    .into(),
            );
        }
        if sctp && self.tls {
            return Err("--tls runs over tcp and mptcp, not over SCTP (IPsec instead)".into());
        }
        let sctp_udp = self.transport == StreamTransport::SctpUdp
            || self
                .registrar
                .is_some_and(|r| r.transport == StreamTransport::SctpUdp);
        if sctp_udp && !self.scenario.speaks_sctp_udp() {
            return Err(format!(
                "{} does not speak SCTP over UDP: sctp-udp is for resolve, register, churn, \
                 keepalive and echo only (use tcp, mptcp or sctp)",
                self.scenario.name()
            ));
        }
        if sctp_udp && self.registers_new_pes() {
            return Err(
                "register --population waits for TCP sockets: SCTP over UDP is for \
                 re-registration only (use tcp or mptcp)"
                    .into(),
            );
        }
        if sctp_udp && self.tls {
            return Err("--tls runs over tcp and mptcp, not over SCTP over UDP".into());
        }
        if self.keep_alive_interval == Some(0) {
            return Err("--keep-alive-interval must be at least 1 ms".into());
        }
        if self.keep_alive_interval.is_some() && !self.spawns() {
            return Err(
                "--keep-alive-interval configures a registrar this run starts: it needs --spawn"
                    .into(),
            );
        }
        if self.registrar_bin.is_some() && !self.spawns() {
            return Err("--registrar-bin needs --spawn".into());
        }
        if self.profile != "default" && !self.spawns() {
            return Err(
                "--profile chooses the profile of a registrar this run starts: it needs --spawn"
                    .into(),
            );
        }
        if self.tls && self.registrar.is_some() {
            return Err(
                "--tls makes the certificates of a registrar this run starts: use --spawn (the \
                 bench has no flags for another CA's files)"
                    .into(),
            );
        }
        if let Some(size) = self.reply_size
            && !(MIN_REPLY..=MAX_REPLY).contains(&size)
        {
            return Err(format!(
                "--reply-size must be from {MIN_REPLY} to {MAX_REPLY} bytes"
            ));
        }
        if self.scenario != ScenarioKind::Echo && self.registrar.is_none() && !self.spawns() {
            return Err(format!(
                "{} needs a registrar: --registrar URL or --spawn",
                self.scenario.name()
            ));
        }
        Ok(())
    }

    /// The checks of `register`: the options of re-registration and of `--population` apart.
    fn validate_register(&self) -> Result<(), String> {
        let refused: &[(&str, &str)] = if self.registers_new_pes() {
            &[
                (
                    "rate",
                    "registers every PE once, as fast as the registrar answers",
                ),
                ("warmup", "times the registrations from the first write"),
                (
                    "pools",
                    "makes pools of --pool-elements PEs (population / pool-elements of them)",
                ),
                (
                    "pes_per_connection",
                    "deals the population out over --connections",
                ),
                ("tls", "runs over plain TCP or MPTCP"),
            ]
        } else {
            &[(
                "pool_elements",
                "re-registers --pes-per-connection PEs per connection over --pools pools",
            )]
        };
        let mode = if self.registers_new_pes() {
            "register --population"
        } else {
            "register without --population"
        };
        match refused.iter().find(|(id, _)| self.was_given(id)) {
            Some((id, why)) => Err(format!("{mode} {why}: drop --{}", id.replace('_', "-"))),
            None => Ok(()),
        }
    }

    /// The checks of `resync`.
    fn validate_resync(&self) -> Result<(), String> {
        if self.page > MAX_PAGE {
            return Err(format!("--page must be from 1 to {MAX_PAGE} PEs"));
        }
        if self.enrp_generation == EnrpGeneration::Rfc && self.page > MAX_RFC_PAGE {
            return Err(format!(
                "--page {} exceeds the {MAX_RFC_PAGE} PEs a registrar sends an RFC peer per \
                 page: use --enrp-generation ng or --page {MAX_RFC_PAGE}",
                self.page
            ));
        }
        Ok(())
    }

    /// The checks of `takeover` and `chaos`, which read whole pools in one resolution each.
    fn validate_scope(&self) -> Result<(), String> {
        if self.pool_elements > CHAOS_MAX_POOL {
            return Err(format!(
                "--pool-elements {} exceeds the {CHAOS_MAX_POOL} PEs one resolution returns: \
                 {} reads whole pools",
                self.pool_elements,
                self.scenario.name()
            ));
        }
        if self.scenario != ScenarioKind::Chaos {
            return Ok(());
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
        Ok(())
    }

    /// The checks of `sweep`: a points bound that holds the base and another point, and a budget
    /// that holds two points' load (four with `--verify`).
    fn validate_sweep(&self) -> Result<(), String> {
        if self.points.is_some_and(|n| n < 2) {
            return Err(
                "--points must be at least 2: the base and one point to set against it".into(),
            );
        }
        let point = self.warmup + self.sweep_duration();
        let least = point * if self.verify { 4.0 } else { 2.0 };
        if !(self.budget.is_finite() && self.budget >= least) {
            return Err(format!(
                "--budget {} s cannot hold the base and one more point of {point} s each{}: give \
                 at least {least} s",
                self.budget,
                if self.verify {
                    ", and their verification"
                } else {
                    ""
                }
            ));
        }
        Ok(())
    }

    /// The checks of `hostile`.
    fn validate_hostile(&self) -> Result<(), String> {
        if self.messages == 0 || self.check_every == 0 {
            return Err("--messages and --check-every must be at least 1".into());
        }
        if self.hostile_pool_elements() > CHAOS_MAX_POOL {
            return Err(format!(
                "--pool-elements {} exceeds the {CHAOS_MAX_POOL} PEs one resolution returns: \
                 the soak checks whole pools",
                self.pool_elements
            ));
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
                "unexpected argument '--restart'",
            ),
            (
                &["resync", "--fault", "kill"][..],
                "unexpected argument '--fault'",
            ),
            (
                &["takeover", "--registrar", "tcp://127.0.0.1:1"][..],
                "unexpected argument '--registrar'",
            ),
            (
                &["takeover", "--pool-elements", "129"][..],
                "exceeds the 128 PEs",
            ),
            (
                &["takeover", "--timeout", "0"][..],
                "--timeout must be a positive",
            ),
            (
                &["takeover", "--rate", "5"][..],
                "unexpected argument '--rate'",
            ),
        ] {
            let e = Cli::from_args(args).unwrap_err();
            assert!(e.contains(why), "{args:?}: {e}");
        }
    }

    #[test]
    fn hostile_options_belong_to_hostile_and_sctp_too() {
        let soak = Cli::from_args(&["hostile", "--spawn", "--transport", "sctp"]).unwrap();
        assert_eq!(soak.messages, 1_000_000);
        assert_eq!(
            (
                soak.hostile_pools(),
                soak.hostile_pool_elements(),
                soak.hostile_attackers()
            ),
            (8, 8, 8)
        );
        let given = Cli::from_args(&["hostile", "--spawn", "-c", "3", "--messages", "5"]).unwrap();
        assert_eq!((given.hostile_attackers(), given.messages), (3, 5));
        for (args, why) in [
            (
                &["resolve", "--spawn", "--messages", "5"][..],
                "unexpected argument '--messages'",
            ),
            (
                &["storm", "--spawn", "--transport", "sctp"][..],
                "invalid value 'sctp' for '--transport <TRANSPORT>'",
            ),
            (
                &["storm", "--registrar", "sctp://127.0.0.1:1"][..],
                "SCTP is for resolve, register, churn, keepalive, echo and hostile only",
            ),
            (
                &["resync", "--transport", "sctp"][..],
                "[possible values: tcp, mptcp]",
            ),
            (
                &[
                    "register",
                    "--registrar",
                    "sctp://127.0.0.1:1",
                    "--population",
                    "50",
                ][..],
                "SCTP is for re-registration only",
            ),
            (
                &["resolve", "--spawn", "--transport", "sctp", "--tls"][..],
                "not over SCTP",
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
        for args in [
            &[
                "resolve",
                "--spawn",
                "--transport",
                "sctp",
                "--compare-echo",
            ][..],
            &["resolve", "--registrar", "sctp://192.0.2.1:3863"][..],
            &["register", "--spawn", "--transport", "sctp"][..],
            &["churn", "--registrar", "sctp://127.0.0.1:1", "--rate", "10"][..],
            &["keepalive", "--spawn", "--transport", "sctp"][..],
            &["echo", "--transport", "sctp"][..],
        ] {
            let cli = Cli::from_args(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(
                cli.transport == crate::net::StreamTransport::Sctp
                    || cli.registrar.is_some_and(|r| !r.transport.is_stream()),
                "{args:?}"
            );
        }
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
