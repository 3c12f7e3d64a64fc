//! `rserpool`: the RSerPool endpoint on the command line. `register` runs a pool element until
//! Ctrl-C or SIGTERM and then deregisters; `resolve` prints a pool's elements; `watch` resolves
//! repeatedly and prints the changes; `status` summarises a registrar's metrics; `completions`
//! and `man-page` print a shell completion script and the manual page.
//!
//! Signals: SIGINT and SIGTERM only set a flag (signal-hook's safe `flag::register`, no code of
//! ours runs in the handler); the main loop looks at it every 100 ms and then deregisters.
//!
//! Exit status: 0 on success, 1 when the operation failed (unreachable registrar, unknown pool,
//! refused registration), 2 for a bad command line.

mod output;
mod policy;
mod status;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use rserpool_endpoint::driver::{Options, Pe, Pu, TlsOptions};
use rserpool_endpoint::pe::{self, PeEvent, PeState};
use rserpool_endpoint::{Error, PeInfo, RegistrarUrl, pu};
use rserpool_net::{ClientTls, TlsFiles};
use rserpool_protocol::{Generation, PeId, Policy};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "rserpool",
    version,
    about = "RSerPool endpoint: run a pool element, resolve and watch pools, summarise a registrar",
    after_help = "Registrar URLs: sctp://HOST:PORT, tcp://HOST:PORT or mptcp://HOST:PORT, with \
                  ?generation=ng for the NG wire generation (64-bit identifiers); \
                  tcp+tls://HOST:PORT or mptcp+tls://HOST:PORT for TLS 1.3 (with --tls-ca, and \
                  --tls-certificate and --tls-key where the registrar asks for a client \
                  certificate)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pool element until Ctrl-C or SIGTERM, then deregister it.
    Register(RegisterArgs),
    /// Resolve a pool handle and print the pool elements.
    Resolve(ResolveArgs),
    /// Resolve a pool handle repeatedly and print what changes.
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
struct Registrars {
    /// A registrar, e.g. sctp://127.0.0.1:3863, tcp://127.0.0.1:3863 or (TLS)
    /// tcp+tls://127.0.0.1:3864; repeat (or separate with commas) for failover, all of one
    /// generation. Taken from $RSERPOOL_REGISTRAR when not given.
    #[arg(
        long = "registrar",
        value_name = "URL",
        required = true,
        env = "RSERPOOL_REGISTRAR",
        value_delimiter = ','
    )]
    registrars: Vec<RegistrarUrl>,
    /// The CA bundle (PEM) that vouches for tcp+tls:// and mptcp+tls:// registrars.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The certificate chain (PEM) to present to TLS registrars (a PE needs one where the
    /// registrar requires client certificates).
    #[arg(long, value_name = "FILE", requires = "tls_key", requires = "tls_ca")]
    tls_certificate: Option<PathBuf>,
    /// The private key (PEM) of --tls-certificate.
    #[arg(long, value_name = "FILE", requires = "tls_certificate")]
    tls_key: Option<PathBuf>,
    /// The name the registrar's certificate must have (default: the address connected to).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
}

impl Registrars {
    /// The driver options: TLS with the files given.
    fn options(&self) -> Result<Options, String> {
        let tls = match &self.tls_ca {
            None => {
                if let Some(url) = self.registrars.iter().find(|u| u.registrar.tls) {
                    return Err(format!(
                        "{url} speaks TLS: give the CA bundle that vouches for it with --tls-ca \
                         FILE (and --tls-certificate and --tls-key where it asks for a client \
                         certificate)"
                    ));
                }
                None
            }
            Some(ca) => {
                let files = TlsFiles {
                    certificate: self.tls_certificate.clone().unwrap_or_default(),
                    private_key: self.tls_key.clone().unwrap_or_default(),
                    ca: ca.clone(),
                };
                Some(TlsOptions {
                    client: ClientTls::load(&files).map_err(|e| e.to_string())?,
                    server_name: self.tls_server_name.clone(),
                })
            }
        };
        Ok(Options {
            tls,
            ..Options::default()
        })
    }
}

#[derive(Debug, Args)]
struct RegisterArgs {
    #[command(flatten)]
    registrars: Registrars,
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
    /// The address to register; by default the local address of the connection to the
    /// registrar (the registrar accepts only addresses of the connection).
    #[arg(long, value_name = "IP")]
    address: Option<IpAddr>,
    /// The registration life in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    life: u64,
    /// The re-registration interval in milliseconds (default: RFC 5352 T4 from the life).
    #[arg(long, value_name = "MS")]
    reregister: Option<u64>,
    /// A fixed PE identifier (default: random, 32 bits for RFC, 64 for NG).
    #[arg(long, value_name = "ID")]
    id: Option<u64>,
}

#[derive(Debug, Args)]
struct ResolveArgs {
    #[command(flatten)]
    registrars: Registrars,
    /// The pool handle.
    #[arg(long, value_name = "HANDLE")]
    pool: String,
    /// How many PEs to ask for (the registrar's default otherwise).
    #[arg(long, value_name = "N")]
    items: Option<u32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    registrars: Registrars,
    /// The pool handle.
    #[arg(long, value_name = "HANDLE")]
    pool: String,
    /// How many PEs to ask for (default: all).
    #[arg(long, value_name = "N", default_value_t = u32::MAX)]
    items: u32,
    /// Time between two resolutions in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    interval: u64,
    /// Stop after this many resolutions (default: until Ctrl-C).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The registrar's metrics URL, e.g. http://127.0.0.1:9863/metrics.
    #[arg(long, value_name = "URL")]
    metrics: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A command line that cannot work is a usage error (exit 2), before anything starts.
    if let Err(e) = cli.command.check() {
        eprintln!("rserpool: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Register(args) => register(args),
        Command::Resolve(args) => resolve(args),
        Command::Watch(args) => watch(args),
        Command::Status(args) => status(&args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "rserpool", &mut std::io::stdout());
            Ok(())
        }
        Command::ManPage => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|e| format!("cannot write the manual page: {e}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rserpool: {e}");
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// What clap cannot check: one generation over all registrars, loadable TLS files, a
    /// non-empty pool handle.
    fn check(&self) -> Result<(), String> {
        let (registrars, pool) = match self {
            Self::Register(a) => (&a.registrars, Some(&a.pool)),
            Self::Resolve(a) => (&a.registrars, Some(&a.pool)),
            Self::Watch(a) => (&a.registrars, Some(&a.pool)),
            Self::Status(_) | Self::Completions { .. } | Self::ManPage => return Ok(()),
        };
        generation(registrars)?;
        registrars.options()?;
        if pool.is_some_and(String::is_empty) {
            return Err(
                "--pool must name a pool handle (1 to 32 bytes over the RFC generation)".into(),
            );
        }
        Ok(())
    }
}

/// The generation all registrars speak, or an error if they disagree.
fn generation(registrars: &Registrars) -> Result<Generation, String> {
    let first = registrars.registrars[0].generation;
    if registrars.registrars.iter().any(|r| r.generation != first) {
        return Err("all --registrar URLs must use the same generation".into());
    }
    Ok(first)
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

fn register(args: RegisterArgs) -> Result<(), String> {
    let generation = generation(&args.registrars)?;
    let options = args.registrars.options()?;
    let stop = stop_flag()?;
    let registrars = args
        .registrars
        .registrars
        .iter()
        .map(|u| u.registrar)
        .collect();
    let mut config = pe::Config::new(registrars, args.pool.as_bytes());
    config.generation = generation;
    config.policy = args.policy;
    config.registration_life = args.life;
    config.reregistration_interval = args.reregister;
    config.pe_id = args.id.map(PeId);
    config.transport.addresses = args.address.into_iter().collect();
    config.transport.port = match args.port {
        Some(port) => port,
        None => {
            let port = echo_service(args.address)?;
            println!("serving echo on port {port}");
            port
        }
    };
    let handle = Pe::register_with(config, options).map_err(|e| e.to_string())?;
    println!(
        "registered PE {} in pool {} at {}",
        handle.pe_id(),
        args.pool,
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

fn pool_user(registrars: &Registrars, cache_stale: u64) -> Result<Pu, String> {
    let mut config = pu::Config::new(registrars.registrars.iter().map(|u| u.registrar).collect());
    config.generation = generation(registrars)?;
    config.cache_stale = cache_stale;
    Pu::with_options(config, registrars.options()?).map_err(|e| e.to_string())
}

fn resolve(args: ResolveArgs) -> Result<(), String> {
    let mut pu = pool_user(&args.registrars, 0)?;
    let pes = pu
        .resolve_items(args.pool.as_bytes(), args.items)
        .map_err(|e| e.to_string())?;
    if args.json {
        let list: Vec<_> = pes.iter().map(output::json).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        print!("{}", output::table(&pes));
    }
    Ok(())
}

fn watch(args: WatchArgs) -> Result<(), String> {
    let stop = stop_flag()?;
    let mut pu = pool_user(&args.registrars, 0)?;
    let started = Instant::now();
    let mut last: Option<Result<Vec<PeInfo>, Error>> = None;
    let mut done = 0;
    while !stop.load(Ordering::Relaxed) && args.count.is_none_or(|c| done < c) {
        let next = pu.resolve_items(args.pool.as_bytes(), Some(args.items));
        done += 1;
        let t = started.elapsed().as_secs_f64();
        match (&last, &next) {
            (Some(Ok(old)), Ok(new)) => {
                for pe in new.iter().filter(|p| !old.iter().any(|o| o.id == p.id)) {
                    println!("[{t:8.3}] + {}", output::line(pe));
                }
                for pe in old.iter().filter(|p| !new.iter().any(|n| n.id == p.id)) {
                    println!("[{t:8.3}] - {}", output::line(pe));
                }
                for pe in new
                    .iter()
                    .filter(|p| old.iter().any(|o| o.id == p.id && o != *p))
                {
                    println!("[{t:8.3}] ~ {}", output::line(pe));
                }
            }
            (_, Ok(new)) => {
                println!("[{t:8.3}] pool {}: {} PE(s)", args.pool, new.len());
                for pe in new {
                    println!("[{t:8.3}] + {}", output::line(pe));
                }
            }
            (Some(Err(old)), Err(e)) if old == e => {}
            (_, Err(e)) => println!("[{t:8.3}] {e}"),
        }
        last = Some(next);
        let until = Instant::now() + Duration::from_millis(args.interval);
        while args.count.is_none_or(|c| done < c) && !stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
    Ok(())
}

fn status(args: &StatusArgs) -> Result<(), String> {
    let body = status::fetch(&args.metrics)?;
    let samples = status::parse(&body);
    if samples.is_empty() {
        return Err(format!("{} served no metrics", args.metrics));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    print!("{}", status::summary(&samples, now));
    Ok(())
}
