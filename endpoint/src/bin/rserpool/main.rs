//! `rserpool`: the RSerPool endpoint on the command line. `register` runs a pool element until
//! Ctrl-C or SIGTERM and then deregisters; `resolve` prints a pool's elements (over a connection
//! or one UDP datagram); `watch` subscribes to a pool (RFC 5352 §2.2.5) and prints its changes
//! as the registrar pushes them, polling where it declines or over UDP; `status` summarises
//! a registrar's metrics; `completions` and `man-page` print a shell completion script and the
//! manual page.
//!
//! Registrars come from `--registrar`, else `$RSERPOOL_REGISTRAR`, else the configuration file
//! ([`config`]), else from their announces ([`discovery`]); [`reach`] merges them.
//!
//! Every argument is checked before anything is bound, connected or started: a command line
//! that cannot work changes nothing.
//!
//! Signals: SIGINT and SIGTERM only set a flag (signal-hook's safe `flag::register`, no code of
//! ours runs in the handler); the main loop looks at it every 100 ms and then deregisters.
//!
//! Exit status: 0 on success, 1 when the operation failed (unreachable registrar, unknown pool,
//! refused registration, no announce heard), 2 for a bad command line or configuration file.

mod config;
mod discovery;
mod output;
mod policy;
mod reach;
mod status;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, Parser, Subcommand};
use rserpool_endpoint::driver::{Pe, Pu, resolve_udp};
use rserpool_endpoint::pe::{self, PeEvent, PeState};
use rserpool_endpoint::pu::{PoolChange, PoolTracker, SubscriptionMode};
use rserpool_endpoint::{Error, PeInfo, Registrar, Timers, pu};
use rserpool_protocol::{
    AsapMessage, Generation, MAX_MESSAGE_LEN, PeId, Policy, PoolElementParam, PoolHandle, PrId,
    Seq, TransportParam, UserTransport,
};

use crate::reach::{Reach, ReachArgs, Registrars};

/// The longest pool handle of the RFC generation: RSPLIB's `MAX_POOLHANDLESIZE`, which
/// registrars enforce on RFC listeners.
const RFC_MAX_POOL_HANDLE: usize = 32;
/// The shortest time between two resolutions of `watch`.
const MIN_WATCH_INTERVAL_MS: u64 = 10;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "rserpool",
    version,
    about = "RSerPool endpoint: run a pool element, resolve and watch pools, summarise a registrar",
    after_help = "Registrar URLs: sctp://HOST:PORT, tcp://HOST:PORT, mptcp://HOST:PORT or \
                  sctp+udp://HOST:UDP-PORT (SCTP over UDP, RFC 6951: the registrar's UDP port, \
                  9899 by default), with ?generation=ng for the NG wire generation (64-bit identifiers); \
                  tcp+tls://HOST:PORT or mptcp+tls://HOST:PORT for TLS 1.3 (with --tls-ca, and \
                  --tls-certificate and --tls-key where the registrar asks for a client \
                  certificate); udp://HOST:PORT for resolve and watch without a connection.\n\n\
                  Where the registrars come from, first found first: --registrar (or \
                  --discover), $RSERPOOL_REGISTRAR, `registrar` in the configuration file \
                  ($XDG_CONFIG_HOME/rserpool/config.toml, else ~/.config/rserpool/config.toml, \
                  or --config FILE), else their announces on udp://239.0.0.50:3863."
)]
struct Cli {
    /// The configuration file: registrars, discovery and TLS settings, overridden by the
    /// command line and $RSERPOOL_REGISTRAR [default: $XDG_CONFIG_HOME/rserpool/config.toml,
    /// else ~/.config/rserpool/config.toml, if it exists].
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pool element until Ctrl-C or SIGTERM, then deregister it.
    Register(RegisterArgs),
    /// Resolve a pool handle and print the pool elements.
    Resolve(ResolveArgs),
    /// Follow a pool and print its changes as they happen: subscribed at the registrar, which
    /// pushes every change (RFC 5352 §2.2.5); polled at --interval where the registrar declines
    /// (RSPLIB's does) and over udp://.
    Watch(WatchArgs),
    /// Summarise a registrar's Prometheus metrics.
    Status(StatusArgs),
    /// Print a shell completion script for rserpool (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page of rserpool (roff, section 1).
    ManPage,
}

#[derive(Debug, Args)]
struct RegisterArgs {
    #[command(flatten)]
    reach: ReachArgs,
    /// The pool handle.
    #[arg(long, value_name = "HANDLE")]
    pool: String,
    /// The member-selection policy: rr, wrr:W, rand, wrand:W, prio:P, lu:L, lud:L:D, plu:L:D,
    /// rlu:L (loads as numbers or percentages, e.g. lu:25%).
    #[arg(long, value_name = "POLICY", default_value = "rr", value_parser = policy::parse)]
    policy: Policy,
    /// The TCP port users reach the PE at. Without it, rserpool serves an echo service on a free
    /// port and registers that.
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// The address to register, one of this host's; by default the local address of the
    /// connection to the registrar (the registrar accepts only addresses of the connection).
    #[arg(long, value_name = "IP")]
    address: Option<IpAddr>,
    /// The registration life in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    life: u64,
    /// The re-registration interval in milliseconds, at most the life (default: RFC 5352 T4
    /// from the life).
    #[arg(long, value_name = "MS")]
    reregister: Option<u64>,
    /// A fixed PE identifier, decimal or 0x hex (default: random, 32 bits for RFC, 64 for NG).
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    id: Option<u64>,
}

#[derive(Debug, Args)]
struct ResolveArgs {
    #[command(flatten)]
    reach: ReachArgs,
    /// The pool handle.
    #[arg(long, value_name = "HANDLE")]
    pool: String,
    /// How many PEs to ask for, at least 1 (the registrar's default otherwise).
    #[arg(long, value_name = "N")]
    items: Option<u32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    reach: ReachArgs,
    /// The pool handle.
    #[arg(long, value_name = "HANDLE")]
    pool: String,
    /// How many PEs to ask for, at least 1 (default: all).
    #[arg(long, value_name = "N", default_value_t = u32::MAX)]
    items: u32,
    /// Time between two resolutions in milliseconds when polling (a registrar that declines
    /// the subscription, udp://), and before another attempt after a failure; at least 10.
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    interval: u64,
    /// Stop after this many resolutions, at least 1 (default: until Ctrl-C). When the
    /// registrar pushes: after this many answers (the first, then each push) or N-1 intervals
    /// after the first, whichever comes first.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Print one JSON object per line: event (added, removed, changed, gone, error), time,
    /// pool, and the PE's id, home_pr, transport, addresses, port, policy, policy_type and
    /// registration_life_ms (or the error).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The registrar's metrics URL, e.g. http://127.0.0.1:9863/metrics.
    #[arg(long, value_name = "URL")]
    metrics: String,
}

/// A checked command, ready to run.
enum Job {
    Register(Register),
    Resolve(Resolve),
    Watch(Watch),
    Status(String),
    Completions(clap_complete::Shell),
    ManPage,
}

/// `register`, checked: the PE's configuration without its registrars, which may still have to
/// be discovered.
struct Register {
    reach: Reach,
    config: pe::Config,
    /// Serve echo on a free port and register that port.
    echo: bool,
    pool: String,
}

/// `resolve`, checked.
struct Resolve {
    reach: Reach,
    pool: String,
    items: Option<u32>,
    json: bool,
}

/// `watch`, checked.
struct Watch {
    reach: Reach,
    pool: String,
    items: u32,
    interval: u64,
    count: Option<u64>,
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A command line that cannot work is a usage error (exit 2), before anything starts.
    let job = match Job::check(cli) {
        Ok(job) => job,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    let result = match job {
        Job::Register(job) => register(job),
        Job::Resolve(job) => resolve(job),
        Job::Watch(job) => watch(job),
        Job::Status(url) => status(&url),
        Job::Completions(shell) => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "rserpool", &mut std::io::stdout());
            Ok(())
        }
        Job::ManPage => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|e| format!("cannot write the manual page: {e}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// Prints an error, each of its lines prefixed with the program's name.
fn report(error: &str) {
    for line in error.lines() {
        eprintln!("rserpool: {line}");
    }
}

impl Job {
    /// Reads the configuration file and checks every argument of the command; opens nothing.
    fn check(cli: Cli) -> Result<Self, String> {
        let file = || config::load(cli.config.as_deref());
        Ok(match cli.command {
            Command::Register(a) => Self::Register(check_register(a, &file()?)?),
            Command::Resolve(a) => {
                let reach = a.reach.reach(&file()?)?;
                check_pool(&a.pool, reach.generation, a.items)?;
                check_items(a.items)?;
                Self::Resolve(Resolve {
                    reach,
                    pool: a.pool,
                    items: a.items,
                    json: a.json,
                })
            }
            Command::Watch(a) => {
                let reach = a.reach.reach(&file()?)?;
                check_pool(&a.pool, reach.generation, Some(a.items))?;
                check_items(Some(a.items))?;
                if a.interval < MIN_WATCH_INTERVAL_MS {
                    return Err(format!(
                        "--interval must be at least {MIN_WATCH_INTERVAL_MS} ms, not {}",
                        a.interval
                    ));
                }
                if a.count == Some(0) {
                    return Err("--count must be at least 1 (leave it out to watch until \
                                Ctrl-C)"
                        .into());
                }
                Self::Watch(Watch {
                    reach,
                    pool: a.pool,
                    items: a.items,
                    interval: a.interval,
                    count: a.count,
                    json: a.json,
                })
            }
            Command::Status(a) => {
                status::check_url(&a.metrics)?;
                Self::Status(a.metrics)
            }
            Command::Completions { shell } => Self::Completions(shell),
            Command::ManPage => Self::ManPage,
        })
    }
}

/// Reads a PE identifier: decimal or 0x hex.
fn parse_id(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| {
        format!("`{text}` is not a PE identifier: give a decimal or 0x hex number, e.g. 0x1a2b3c4d")
    })
}

/// Checks `register`'s arguments and builds the PE's configuration.
fn check_register(a: RegisterArgs, file: &config::FileConfig) -> Result<Register, String> {
    let reach = a.reach.reach(file)?;
    if let Registrars::Udp(_) = reach.registrars {
        return Err(
            "register needs a connection to the registrar (RFC 5352 §3.1): a udp:// \
                    listener answers handle resolutions only; give an sctp://, tcp://, \
                    mptcp:// or sctp+udp:// registrar"
                .into(),
        );
    }
    let generation = reach.generation;
    if a.port == Some(0) {
        return Err(
            "--port 0 is no port users can reach: give the PE's port, or leave --port \
                    out to serve echo on a free port"
                .into(),
        );
    }
    if let Some(ip) = a.address {
        check_address(ip)?;
    }
    if a.life == 0 || a.life > i32::MAX as u64 {
        return Err(format!(
            "--life must be 1 to {} ms (what the wire carries), not {}",
            i32::MAX,
            a.life
        ));
    }
    match a.reregister {
        Some(0) => return Err("--reregister must be at least 1 ms".into()),
        Some(r) if r > a.life => {
            return Err(format!(
                "--reregister {r} is longer than --life {}: the registration would expire \
                 before it is renewed; re-register within the life",
                a.life
            ));
        }
        _ => {}
    }
    match a.id {
        Some(0) => return Err("--id 0 means \"no PE\" on the wire: give a non-zero ID".into()),
        Some(id) if generation == Generation::Rfc && id > u64::from(u32::MAX) => {
            return Err(format!(
                "--id {id:#x} does not fit the RFC generation's 32 bits: give one up to \
                 0xffffffff, or use NG registrars (?generation=ng)"
            ));
        }
        _ => {}
    }
    let mut config = pe::Config::new(Vec::new(), a.pool.as_bytes());
    config.generation = generation;
    config.policy = a.policy;
    config.registration_life = a.life;
    config.reregistration_interval = a.reregister;
    config.pe_id = a.id.map(PeId);
    config.transport.addresses = a.address.into_iter().collect();
    config.transport.port = a.port.unwrap_or(0);
    check_pool(&a.pool, generation, None)?;
    check_registration_fits(&config)?;
    Ok(Register {
        reach,
        config,
        echo: a.port.is_none(),
        pool: a.pool,
    })
}

/// A pool handle is 1 to 32 bytes over the RFC generation; over NG a handle resolution for it
/// (asking for `items`) must fit one message.
fn check_pool(pool: &str, generation: Generation, items: Option<u32>) -> Result<(), String> {
    if pool.is_empty() {
        return Err(format!(
            "--pool must name a pool handle (1 to {RFC_MAX_POOL_HANDLE} bytes over the RFC \
             generation)"
        ));
    }
    if generation == Generation::Rfc && pool.len() > RFC_MAX_POOL_HANDLE {
        return Err(format!(
            "--pool is {} bytes long; the RFC generation carries pool handles of at most \
             {RFC_MAX_POOL_HANDLE} bytes (RSPLIB's limit, which registrars enforce on RFC \
             listeners): use a shorter one, or NG registrars (?generation=ng)",
            pool.len()
        ));
    }
    let request = AsapMessage::HandleResolution {
        subscribe: false,
        pool_handle: PoolHandle(pool.as_bytes()),
        items,
    };
    fits(&request, generation, pool)
}

/// The registration of `config` fits one message (with the longest address the PE could
/// register when none is given).
fn check_registration_fits(config: &pe::Config) -> Result<(), String> {
    let placeholder = [IpAddr::V6(Ipv6Addr::UNSPECIFIED)];
    let addresses: &[IpAddr] = if config.transport.addresses.is_empty() {
        &placeholder
    } else {
        &config.transport.addresses
    };
    let registration = AsapMessage::Registration {
        pool_handle: PoolHandle(&config.pool_handle),
        pool_element: PoolElementParam {
            id: config.pe_id.unwrap_or(PeId(1)),
            home_pr: PrId(0),
            registration_life: i32::try_from(config.registration_life).unwrap_or(i32::MAX),
            user_transport: UserTransport::Transport(TransportParam {
                kind: config.transport.kind,
                port: config.transport.port,
                transport_use: config.transport.transport_use,
                service_code: 0,
                addresses: Seq::from_items(addresses),
            }),
            policy: config.policy,
            asap_transport: None,
        },
    };
    let pool = String::from_utf8_lossy(&config.pool_handle);
    fits(&registration, config.generation, &pool)
}

/// `message` about `pool` encodes into one ASAP message.
fn fits(message: &AsapMessage<'_>, generation: Generation, pool: &str) -> Result<(), String> {
    let mut buf = vec![0; MAX_MESSAGE_LEN + 4];
    match message.encode(generation, &mut buf) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "--pool is {} bytes long, more than one ASAP message carries ({e}); registrars \
             accept pool handles up to their `limits.max_pool_handle_len` (128 bytes by \
             default): use a shorter one",
            pool.len()
        )),
    }
}

/// `--items`, when given, asks for at least one PE.
fn check_items(items: Option<u32>) -> Result<(), String> {
    if items == Some(0) {
        return Err("--items must be at least 1 (leave it out for the default)".into());
    }
    Ok(())
}

/// `--address` must be a unicast address of this host: the registrar accepts only addresses of
/// the PE's connection (RFC 5352 §2.2.1). A UDP socket bound to it on a free port, and closed
/// at once without sending, tells whether it is one of ours.
fn check_address(ip: IpAddr) -> Result<(), String> {
    if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Err(format!(
            "--address {ip} is not an address users can reach: give one unicast address of \
             this host, or leave --address out to register the one the registrar sees"
        ));
    }
    UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(|e| {
        format!(
            "--address {ip} is not an address of this host ({e}): the registrar accepts only \
             addresses of the PE's connection; give one of this host's, or leave --address out"
        )
    })?;
    Ok(())
}

/// The registrars to connect to: the given ones, or the announced ones.
fn streams(reach: &Reach) -> Result<Vec<Registrar>, String> {
    match &reach.registrars {
        Registrars::Streams(registrars) => Ok(registrars.clone()),
        Registrars::Discover(discovery) => discovery::discover(discovery),
        Registrars::Udp(_) => Err("udp:// registrars answer handle resolutions only".into()),
    }
}

/// A flag that SIGINT and SIGTERM set.
fn stop_flag() -> Result<Arc<AtomicBool>, String> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .map_err(|e| format!("cannot handle signal {signal}: {e}"))?;
    }
    Ok(flag)
}

/// A trivial echo service on a free port, so that a PE registered without `--port` serves
/// something. Returns the port.
fn echo_service(address: Option<IpAddr>) -> Result<u16, String> {
    let ip = match address {
        Some(IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .map_err(|e| format!("cannot open the echo service: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("cannot open the echo service: {e}"))?
        .port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(port)
}

fn register(job: Register) -> Result<(), String> {
    let Register {
        reach,
        mut config,
        echo,
        pool,
    } = job;
    config.registrars = streams(&reach)?;
    let stop = stop_flag()?;
    if echo {
        let port = echo_service(config.transport.addresses.first().copied())?;
        println!("serving echo on port {port}");
        config.transport.port = port;
    }
    let handle = Pe::register_with(config, reach.options).map_err(|e| e.to_string())?;
    println!(
        "registered PE {} in pool {pool} at {}",
        handle.pe_id(),
        handle.registrar().map_or("?".into(), |r| r.to_string())
    );
    while !stop.load(Ordering::Relaxed) {
        let Ok(event) = handle.events().recv_timeout(Duration::from_millis(100)) else {
            if handle.state() == PeState::Failed {
                break;
            }
            continue;
        };
        match event {
            PeEvent::Registered {
                registrar,
                reregistration: true,
            } => println!("re-registered at {registrar}"),
            PeEvent::Registered { .. } => {}
            PeEvent::RegistrationLost { registrar, reason } => {
                println!("registration at {registrar} lost ({reason:?}); registering again");
            }
            PeEvent::HomeChanged { server_id } => println!("home registrar is now {server_id}"),
            PeEvent::ConnectFailed(failure) => eprintln!("rserpool: {failure}"),
            PeEvent::ServerHuntFailed(_) => eprintln!("rserpool: no registrar reachable, retrying"),
            PeEvent::Rejected { error, kept } => {
                eprintln!("rserpool: {error}");
                if !kept {
                    return Err("the pool element stopped".into());
                }
            }
            PeEvent::Failed(error) => return Err(error.to_string()),
            PeEvent::Deregistered => {}
        }
    }
    if let Some(error) = handle
        .last_error()
        .filter(|_| handle.state() == PeState::Failed)
    {
        return Err(error.to_string());
    }
    let id = handle.pe_id();
    handle.deregister().map_err(|e| e.to_string())?;
    println!("deregistered PE {id}");
    Ok(())
}

/// Resolves over a connection (a pool user without a cache) or with UDP datagrams.
enum Resolver {
    Connected(Box<Pu>),
    Udp {
        registrars: Vec<SocketAddr>,
        generation: Generation,
    },
}

impl Resolver {
    /// A resolver for the registrars of `reach`, discovered first if none were given.
    fn new(reach: Reach) -> Result<Self, String> {
        if let Registrars::Udp(registrars) = reach.registrars {
            return Ok(Self::Udp {
                registrars,
                generation: reach.generation,
            });
        }
        let mut config = pu::Config::new(streams(&reach)?);
        config.generation = reach.generation;
        config.cache_stale = 0;
        let pu = Pu::with_options(config, reach.options).map_err(|e| e.to_string())?;
        Ok(Self::Connected(Box::new(pu)))
    }

    fn resolve(&mut self, pool: &str, items: Option<u32>) -> Result<Vec<PeInfo>, Error> {
        match self {
            Self::Connected(pu) => pu.resolve_items(pool.as_bytes(), items),
            Self::Udp {
                registrars,
                generation,
            } => resolve_udp(
                registrars,
                *generation,
                pool.as_bytes(),
                items,
                &Timers::default(),
            ),
        }
    }
}

fn resolve(job: Resolve) -> Result<(), String> {
    let mut resolver = Resolver::new(job.reach)?;
    let pes = resolver
        .resolve(&job.pool, job.items)
        .map_err(|e| e.to_string())?;
    if job.json {
        let list: Vec<_> = pes.iter().map(output::json).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        print!("{}", output::table(&pes));
    }
    Ok(())
}

/// Prints the lines of one change with the current time.
fn print_change(printer: &mut output::WatchPrinter, change: &PoolChange) {
    let time = output::rfc3339(SystemTime::now());
    for line in printer.lines(change, &time) {
        println!("{line}");
    }
}

fn watch(job: Watch) -> Result<(), String> {
    let stop = stop_flag()?;
    let mut printer = output::WatchPrinter::new(&job.pool, job.json);
    if let Registrars::Udp(registrars) = &job.reach.registrars {
        return watch_udp(&job, registrars, &stop, &mut printer);
    }
    let mut config = pu::Config::new(streams(&job.reach)?);
    config.generation = job.reach.generation;
    config.cache_stale = 0;
    config.poll_interval = job.interval;
    let mut pu = Pu::with_options(config, job.reach.options.clone()).map_err(|e| e.to_string())?;
    let mut subscription = pu
        .subscribe(job.pool.as_bytes(), Some(job.items))
        .map_err(|e| e.to_string())?;
    let mut polling = false;
    // --count N: N answers; when pushed, at most N-1 intervals after the first answer (as long
    // as N polls take), since an unchanged pool pushes nothing.
    let window = job
        .count
        .map(|c| Duration::from_millis(job.interval.saturating_mul(c - 1)));
    let mut first: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let updates = subscription.updates();
        if updates > 0 {
            first.get_or_insert_with(Instant::now);
        }
        let pushed = subscription.mode() == Some(SubscriptionMode::Pushed);
        let left = match (first, window) {
            (Some(t), Some(w)) if pushed => w.saturating_sub(t.elapsed()),
            _ => Duration::MAX,
        };
        if job.count.is_some_and(|c| updates >= c) || left.is_zero() {
            break;
        }
        let wait = left.min(Duration::from_millis(100));
        if let Some(change) = subscription.next_change(wait) {
            match change {
                // RFC 5352 §2.2.6: the A bit clear, the registrar does not push.
                PoolChange::Mode(SubscriptionMode::Polling) if !polling => {
                    polling = true;
                    eprintln!(
                        "rserpool: the registrar declined the subscription (RFC 5352 §2.2.6): \
                         polling every {} ms (--interval)",
                        job.interval
                    );
                }
                PoolChange::Mode(SubscriptionMode::Pushed) if polling => {
                    polling = false;
                    eprintln!(
                        "rserpool: the registrar accepted the subscription: changes are pushed"
                    );
                }
                change => print_change(&mut printer, &change),
            }
        }
    }
    // The answer that ended the watch may have brought more than one change.
    while let Some(change) = subscription.next_change(Duration::ZERO) {
        print_change(&mut printer, &change);
    }
    Ok(())
}

/// `watch` over `udp://`: no association to push on, so one datagram resolution every
/// interval.
fn watch_udp(
    job: &Watch,
    registrars: &[SocketAddr],
    stop: &AtomicBool,
    printer: &mut output::WatchPrinter,
) -> Result<(), String> {
    let mut tracker = PoolTracker::new();
    while !stop.load(Ordering::Relaxed) && job.count.is_none_or(|c| tracker.updates() < c) {
        let outcome = resolve_udp(
            registrars,
            job.reach.generation,
            job.pool.as_bytes(),
            Some(job.items),
            &Timers::default(),
        );
        if let Some(change) = tracker.update(outcome) {
            print_change(printer, &change);
        }
        let until = Instant::now() + Duration::from_millis(job.interval);
        while job.count.is_none_or(|c| tracker.updates() < c) && !stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
    Ok(())
}

fn status(url: &str) -> Result<(), String> {
    let body = status::fetch(url)?;
    let samples = status::parse(&body);
    if samples.is_empty() {
        return Err(format!("{url} served no metrics"));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    print!("{}", status::summary(&samples, now));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_decimal_or_hex() {
        assert_eq!(parse_id("42"), Ok(42));
        assert_eq!(parse_id("0x2a"), Ok(42));
        assert_eq!(parse_id("0XFFFFFFFFFFFFFFFF"), Ok(u64::MAX));
        assert!(parse_id("0x").unwrap_err().contains("decimal or 0x hex"));
        assert!(parse_id("-1").is_err());
    }

    #[test]
    fn pool_handles_are_checked_against_the_generation() {
        assert!(check_pool("", Generation::Ng, None).is_err());
        assert!(check_pool(&"a".repeat(32), Generation::Rfc, None).is_ok());
        let e = check_pool(&"a".repeat(33), Generation::Rfc, None).unwrap_err();
        assert!(e.contains("at most 32 bytes"), "{e}");
        assert!(check_pool(&"a".repeat(1000), Generation::Ng, Some(1)).is_ok());
        let e = check_pool(&"a".repeat(MAX_MESSAGE_LEN), Generation::Ng, None).unwrap_err();
        assert!(e.contains("more than one ASAP message carries"), "{e}");
        let mut config = pe::Config::new(Vec::new(), "a".repeat(MAX_MESSAGE_LEN - 40));
        config.generation = Generation::Ng;
        assert!(check_pool(&"a".repeat(MAX_MESSAGE_LEN - 40), Generation::Ng, None).is_ok());
        assert!(
            check_registration_fits(&config).is_err(),
            "a registration is longer"
        );
    }

    #[test]
    fn addresses_must_be_unicast_and_local() {
        assert!(check_address("127.0.0.1".parse().unwrap()).is_ok());
        for bad in ["0.0.0.0", "::", "239.0.0.50", "255.255.255.255"] {
            let e = check_address(bad.parse().unwrap()).unwrap_err();
            assert!(e.contains("not an address users can reach"), "{e}");
        }
        // TEST-NET-3 (RFC 5737) is nobody's address.
        let e = check_address("203.0.113.7".parse().unwrap()).unwrap_err();
        assert!(e.contains("not an address of this host"), "{e}");
    }
}
