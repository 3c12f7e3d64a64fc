//! The daemon: from a validated configuration to running workers. Picks the PR identifier, opens
//! every ASAP listener on every worker (`SO_REUSEPORT`) and the ENRP endpoints on worker 0, splits the handlespace into one shard per
//! worker, starts the worker threads and the metrics endpoint, then waits for signals: SIGTERM
//! or SIGINT drain and stop, SIGHUP reloads what can change live.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rserpool_handlespace::{Handlespace, ItemCount, Limits, PrId, Rng};
use rserpool_net::{self as net, NetError, PortClaim, SctpSocket, Transport, TransportUrl};
use rserpool_protocol::Generation;

use crate::config::{Config, DriverChoice};
use crate::core::{CoreConfig, PrShared, Worker};
use crate::driver::{
    Driver, IoSettings, Listener, Shared, TlsContext, WorkerSetup, io_uring_support, sys,
};
use crate::metrics::{MetricsServer, ProcessInfo, Protocol, WorkerMetrics};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug)]
pub enum DaemonError {
    /// A listener or socket could not be opened.
    Net(NetError),
    /// The configuration cannot work on this machine.
    Config(String),
    /// A system call of the daemon itself failed.
    Io(&'static str, std::io::Error),
    /// A worker thread ended with an error or a panic.
    Worker(usize, String),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Net(e) => write!(f, "{e}"),
            Self::Config(e) => write!(f, "{e}"),
            Self::Io(what, e) => write!(f, "{what}: {e}"),
            Self::Worker(i, e) => write!(f, "worker {i} failed: {e}"),
        }
    }
}

impl std::error::Error for DaemonError {}

impl From<NetError> for DaemonError {
    fn from(e: NetError) -> Self {
        Self::Net(e)
    }
}

/// Logs what `--check-host` finds for this configuration: warnings as warnings, notes that give
/// a reason (pinned workers on every core, say) as information; not the transports and io_uring,
/// which the start-up reports itself when it skips a listener or falls back to epoll (and errors
/// stop the start with their own message).
fn warn_about_the_host(config: &Config) {
    use crate::host_check::{self, Host, Severity};
    const REPORTED_BY_THE_START: [&str; 3] = ["kernel SCTP", "kernel MPTCP", "io_uring"];
    for f in host_check::check(config, &Host::this_unprobed()) {
        if REPORTED_BY_THE_START.contains(&f.check) {
            continue;
        }
        match f.severity {
            Severity::Warning => tracing::warn!(
                check = f.check,
                current = %f.current,
                fix = %f.fix,
                "{} (rserpool-registrar --check-host lists every check)",
                f.why
            ),
            Severity::Note if !f.why.is_empty() => tracing::info!(
                check = f.check,
                current = %f.current,
                fix = %f.fix,
                "{} (rserpool-registrar --check-host lists every check)",
                f.why
            ),
            _ => {}
        }
    }
}

/// Raises the soft open-file limit to the hard one: each TCP connection and SCTP association
/// needs a descriptor (`--check-host` warns when even the hard limit is too low).
fn raise_open_file_limit() {
    match net::raise_open_file_limit() {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(%e, "cannot read the open-file limit"),
    }
}

/// Reloads the configuration on SIGHUP (the same layers as at start-up).
pub type Reload = Box<dyn Fn() -> Result<Config, String> + Send>;

/// Applies a new log filter on SIGHUP.
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send>;

/// Runs the registrar until SIGTERM or SIGINT. `reload` and `set_log_level` serve SIGHUP.
pub fn run(config: Config, reload: Reload, set_log_level: SetLogLevel) -> Result<(), DaemonError> {
    let pr_id = pr_id(&config)?;
    let workers = match config.registrar.workers {
        0 => net::usable_cores(),
        n => n,
    };
    let driver = choose_driver(config.registrar.driver)?;
    raise_open_file_limit();
    warn_about_the_host(&config);
    let io = IoSettings {
        max_message_size: config.limits.max_message_size,
        max_connections: config.limits.max_connections,
        max_buffered_bytes: config.limits.max_buffered_bytes_per_connection,
        buffer_size: config.io.buffer_size,
        buffer_count: config.io.buffer_count,
        ring_entries: config.io.ring_entries,
        max_batch: config.io.max_batch,
        busy_poll_us: config.registrar.busy_poll_us,
    };
    // Held until `run` returns: the listeners' ports stay this process's alone.
    let mut claims = Vec::new();
    let (mut listeners, bound) = open_listeners(&config, workers, &mut claims)?;
    let enrp_bound = open_enrp_listeners(&config, &mut listeners[0])?;
    let mut sender = announce_sender(&config, &listeners[0], &bound)?;
    let core_config = Arc::new(core_config(&config, pr_id, &bound, &enrp_bound));
    let limits = Limits {
        max_pool_handle_len: config.limits.max_pool_handle_len.max(32),
        max_pools: config.limits.max_pools.div_ceil(workers).max(1),
        max_pes_per_pool: config.limits.max_pes_per_pool,
    };
    let (shards, reader) = Handlespace::new(workers, limits).into_shards();
    let metrics: Vec<Arc<WorkerMetrics>> = (0..workers)
        .map(|i| Arc::new(WorkerMetrics::new(i)))
        .collect();
    let shared = Arc::new(
        Shared::new(
            workers,
            1 << 16,
            Arc::clone(&core_config),
            config.limits.max_connections_per_source,
        )
        .map_err(|e| DaemonError::Io("cannot create the workers' wake-up eventfds", e))?,
    );
    let tls = TlsContext::load(&config.tls.files())
        .map_err(|e| DaemonError::Config(format!("{e}; fix the [tls] keys")))?;
    shared.tls.store(tls.map(Arc::new));
    let started_unix_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Before the first thread starts (the metrics endpoint's too): threads inherit the mask, and
    // a signal the kernel hands to a thread that does not block it takes its default action
    // (ending the process).
    sys::block_signals().map_err(|e| DaemonError::Io("cannot block signals", e))?;
    let token = metrics_token(&config)?;
    let metrics_server = match config.metrics.address {
        Some(address) => {
            let server = MetricsServer::start(
                address,
                metrics.clone(),
                ProcessInfo {
                    pr_id: pr_id.0,
                    version: env!("CARGO_PKG_VERSION"),
                    started_unix_secs,
                    driver: driver.name(),
                },
                token,
            )
            .map_err(|e| {
                DaemonError::Config(format!(
                    "cannot serve metrics on {address}: {e}; choose another `metrics.address` \
                     or `--metrics` address"
                ))
            })?;
            stdout_line(format_args!(
                "metrics http://{}/metrics",
                server.local_addr()
            ));
            Some(server)
        }
        None => None,
    };
    let mut threads = Vec::with_capacity(workers);
    let pr = Arc::new(PrShared::default());
    // Worker i is pinned to the i-th core this process may run on (taskset, cpuset), not to CPU i.
    let cores = net::allowed_cores();
    for (index, shard) in shards.into_iter().enumerate() {
        let worker = Worker::new(
            index,
            workers,
            Arc::clone(&core_config),
            shard,
            reader.clone(),
            Arc::clone(&metrics[index]),
            Rng::from_entropy().next_u64(),
            Arc::clone(&pr),
        );
        let setup = WorkerSetup {
            worker,
            metrics: Arc::clone(&metrics[index]),
            shared: Arc::clone(&shared),
            listeners: std::mem::take(&mut listeners[index]),
            sender: if index == 0 { sender.take() } else { None },
            io,
        };
        let pin = config
            .registrar
            .pin_workers
            .then(|| cores[index % cores.len()]);
        let thread = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                if let Some(core) = pin
                    && let Err(e) = net::pin_current_thread(core)
                {
                    tracing::warn!(worker = index, %e, "cannot pin the worker to its core");
                }
                driver.run(setup)
            })
            .map_err(|e| DaemonError::Io("cannot start a worker thread", e))?;
        threads.push(thread);
    }
    for url in &bound {
        stdout_line(format_args!("listening asap {url}"));
    }
    for url in &enrp_bound {
        stdout_line(format_args!("listening enrp {url}"));
    }
    tracing::info!(
        pr_id = format_args!("{:#x}", pr_id.0),
        workers,
        driver = driver.name(),
        listeners = bound.len(),
        "registrar ready"
    );
    let bound = Bound {
        asap: bound,
        enrp: enrp_bound,
    };
    let result = supervise(
        &shared,
        &threads,
        Supervision {
            pr_id,
            bound: &bound,
            started: &config,
            metrics: &metrics,
        },
        reload,
        set_log_level,
    );
    shared.request_stop();
    let mut failure = result.err();
    for (i, t) in threads.into_iter().enumerate() {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(DaemonError::Worker(i, e.to_string()))),
            Err(_) => failure = failure.or(Some(DaemonError::Worker(i, "panicked".into()))),
        }
    }
    if let Some(server) = metrics_server {
        server.stop();
    }
    tracing::info!("registrar stopped");
    failure.map_or(Ok(()), Err)
}

/// The bearer token of the metrics endpoint, from `metrics.bearer_token_file`.
fn metrics_token(config: &Config) -> Result<Option<String>, DaemonError> {
    let file = &config.metrics.bearer_token_file;
    if file.is_empty() {
        return Ok(None);
    }
    let token = std::fs::read_to_string(file).map_err(|e| {
        DaemonError::Config(format!(
            "cannot read the metrics bearer token from `{file}`: {e}; fix \
             metrics.bearer_token_file"
        ))
    })?;
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(DaemonError::Config(format!(
            "`{file}` must hold one bearer token (no spaces); fix metrics.bearer_token_file"
        )));
    }
    Ok(Some(token.to_owned()))
}

/// The endpoints the daemon opened, with the ports the kernel chose for port 0.
struct Bound {
    asap: Vec<TransportUrl>,
    enrp: Vec<TransportUrl>,
}

/// What the supervisor needs to apply a reload.
struct Supervision<'a> {
    pr_id: PrId,
    bound: &'a Bound,
    /// The configuration the process started with: a reload names the keys whose change needs
    /// a restart against it.
    started: &'a Config,
    /// Every worker's metrics: readiness and loop turns; reloads are counted in worker 0's.
    metrics: &'a [Arc<WorkerMetrics>],
}

/// Feeds the service manager's watchdog while every worker's loop keeps turning: a worker wakes
/// at least once a second, so one whose turn count has not moved over a whole interval is stuck,
/// and the manager, not fed, restarts the service.
struct Watchdog {
    interval: Duration,
    last: std::time::Instant,
    turns: Vec<u64>,
}

impl Watchdog {
    fn new(interval: Duration, workers: &[Arc<WorkerMetrics>]) -> Self {
        Self {
            interval: interval.max(Duration::from_millis(1100)),
            last: std::time::Instant::now(),
            turns: workers.iter().map(|w| w.turns()).collect(),
        }
    }

    /// Whether to send `WATCHDOG=1` now: an interval passed and every worker turned in it.
    fn due(&mut self, workers: &[Arc<WorkerMetrics>]) -> bool {
        if self.last.elapsed() < self.interval {
            return false;
        }
        let turns: Vec<u64> = workers.iter().map(|w| w.turns()).collect();
        let alive = turns.iter().zip(&self.turns).all(|(now, then)| now != then);
        self.turns = turns;
        self.last = std::time::Instant::now();
        if !alive {
            tracing::error!(
                "a worker's event loop has not turned for {:?}: not feeding the watchdog",
                self.interval
            );
        }
        alive
    }
}

/// Waits for signals and watches the workers.
fn supervise(
    shared: &Shared,
    threads: &[std::thread::JoinHandle<std::io::Result<()>>],
    s: Supervision<'_>,
    reload: Reload,
    set_log_level: SetLogLevel,
) -> Result<(), DaemonError> {
    let Supervision {
        pr_id,
        bound,
        started,
        metrics: workers,
    } = s;
    let metrics = &workers[0];
    let notifier = crate::notify::Notifier::from_env();
    let mut watchdog = notifier
        .as_ref()
        .and_then(|n| n.watchdog_interval())
        .map(|interval| Watchdog::new(interval, workers));
    let mut notified_ready = false;
    loop {
        if let Some(notifier) = &notifier {
            if !notified_ready && workers.iter().all(|w| w.ready()) {
                notifier.send("READY=1\nSTATUS=serving");
                notified_ready = true;
            }
            if let Some(watchdog) = &mut watchdog
                && watchdog.due(workers)
            {
                notifier.send("WATCHDOG=1");
            }
        }
        match sys::wait_signal(Duration::from_millis(200)) {
            Ok(Some(sys::Signal::Stop)) => {
                tracing::info!("stop requested: draining");
                if let Some(notifier) = &notifier {
                    notifier.send("STOPPING=1");
                }
                return Ok(());
            }
            Ok(Some(sys::Signal::Reload)) => match reload() {
                Ok(config) => {
                    match TlsContext::load(&config.tls.files()) {
                        Ok(tls) => shared.tls.store(tls.map(Arc::new)),
                        Err(e) => {
                            tracing::error!("TLS certificates not reloaded, the old ones stay: {e}")
                        }
                    }
                    let live = core_config(&config, pr_id, &bound.asap, &bound.enrp);
                    shared.reconfigure(Arc::new(live));
                    if let Err(e) = set_log_level(&config.log.level) {
                        tracing::warn!(%e, "log level not changed");
                    }
                    metrics.config_reloaded(true);
                    let restart = started.changes_needing_restart(&config);
                    if restart.is_empty() {
                        tracing::info!("configuration reloaded");
                    } else {
                        tracing::warn!(
                            "configuration reloaded; changed keys that need a restart keep their \
                             running values until then: {}",
                            restart.join(", ")
                        );
                    }
                }
                Err(e) => {
                    metrics.config_reloaded(false);
                    tracing::error!("configuration not reloaded, the old one stays: {e}");
                }
            },
            Ok(None) => {}
            Err(e) => return Err(DaemonError::Io("waiting for signals failed", e)),
        }
        if let Some(i) = threads.iter().position(|t| t.is_finished()) {
            return Err(DaemonError::Worker(i, "stopped unexpectedly".into()));
        }
    }
}

/// The configured PR ID, or a random non-zero 32-bit one (RFC 5353 §3.2.1).
fn pr_id(config: &Config) -> Result<PrId, DaemonError> {
    let rfc = config
        .asap
        .listen
        .iter()
        .chain(&config.announce.targets)
        .chain(&config.enrp.listen)
        .chain(&config.enrp.peers)
        .any(|u| u.generation == Generation::Rfc);
    match config.registrar.id {
        Some(id) if rfc && id > u64::from(u32::MAX) => Err(DaemonError::Config(format!(
            "registrar.id {id:#x} does not fit the 32 bits of the RFC generation, which a \
             listener uses; choose an ID below 2^32 or serve only ?generation=ng"
        ))),
        Some(0) => Err(DaemonError::Config(
            "registrar.id must not be 0 (0 means \"no PR\" on the wire)".into(),
        )),
        Some(id) => Ok(PrId(id)),
        None => {
            let mut rng = Rng::from_entropy();
            Ok(PrId(1 + rng.below(u64::from(u32::MAX))))
        }
    }
}

/// The driver for `choice`: io_uring where the kernel allows it (`auto` falls back to epoll with
/// a warning naming why it cannot be used; `io-uring` fails with that reason), or epoll.
fn choose_driver(choice: DriverChoice) -> Result<Driver, DaemonError> {
    match choice {
        DriverChoice::Epoll => Ok(Driver::Epoll),
        DriverChoice::Auto => match io_uring_support() {
            Ok(()) => Ok(Driver::IoUring),
            Err(e) => {
                tracing::warn!("using the epoll driver: {e}");
                Ok(Driver::Epoll)
            }
        },
        DriverChoice::IoUring => io_uring_support().map(|()| Driver::IoUring).map_err(|e| {
            DaemonError::Config(format!(
                "registrar.driver = \"io-uring\" cannot be used: {e}"
            ))
        }),
    }
}

/// Prints one line of the start-up report on standard output (what scripts and tests read to
/// find the bound ports). A closed or broken standard output is ignored: a registrar keeps
/// serving when whoever started it stops reading (`println!` would panic on `EPIPE`).
fn stdout_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// The UDP socket worker 0 sends announces, ENRP presence datagrams and CSP reports from. Announces leave from the ASAP
/// port, so that a PU reaches the PR at their source address and port when they list no transport
/// (wildcard listeners; RSPLIB's PUs read the source port, RFC 5352 §3.6): through worker 0's UDP
/// listener on that port if there is one, else from a socket bound to it.
fn announce_sender(
    config: &Config,
    worker0: &[Listener],
    bound: &[TransportUrl],
) -> Result<Option<std::net::UdpSocket>, DaemonError> {
    let mut targets: Vec<_> = config
        .announce
        .targets
        .iter()
        .chain(&config.enrp.presence_targets)
        .map(|u| u.address)
        .collect();
    if targets.is_empty() {
        match config.csp.monitor {
            Some(monitor) => targets.push(monitor),
            None => return Ok(None),
        }
    }
    let Some(asap) = bound.iter().find(|u| u.transport != Transport::Udp) else {
        return Ok(Some(
            net::announce_socket(&targets, config.announce.ttl, 0)?.into(),
        ));
    };
    let port = asap.address.port();
    let family_fits = |a: std::net::SocketAddr| targets.iter().all(|t| t.is_ipv4() == a.is_ipv4());
    let udp = worker0.iter().find_map(|l| match l {
        Listener::Udp {
            socket,
            url,
            protocol: Protocol::Asap,
        } if url.address.port() == port && family_fits(url.address) => Some(socket),
        _ => None,
    });
    if let Some(listener) = udp {
        let sender = listener
            .try_clone()
            .map_err(|e| DaemonError::Io("cannot share the UDP listener for announces", e))?;
        let s = socket2::SockRef::from(&sender);
        let ttl = config.announce.ttl;
        let set = if asap.address.is_ipv4() {
            s.set_multicast_ttl_v4(ttl)
                .and(s.set_multicast_loop_v4(true))
        } else {
            s.set_multicast_hops_v6(ttl)
                .and(s.set_multicast_loop_v6(true))
        };
        set.map_err(|e| DaemonError::Io("cannot set the multicast TTL for announces", e))?;
        return Ok(Some(sender));
    }
    match net::announce_socket(&targets, config.announce.ttl, port) {
        Ok(s) => Ok(Some(s.into())),
        Err(e) => {
            tracing::warn!("announces leave from an ephemeral port: {e}");
            Ok(Some(
                net::announce_socket(&targets, config.announce.ttl, 0)?.into(),
            ))
        }
    }
}

/// Opens every ASAP listener once per worker (`SO_REUSEPORT` spreads associations over them),
/// after claiming its port for this process ([`PortClaim`]; the claims are pushed to `claims`
/// and must be kept while the listeners are open). A port of 0 is chosen by the kernel for
/// worker 0 and reused for the others. Returns the listeners per worker and the bound URLs.
fn open_listeners(
    config: &Config,
    workers: usize,
    claims: &mut Vec<PortClaim>,
) -> Result<(Vec<Vec<Listener>>, Vec<TransportUrl>), DaemonError> {
    let mut per_worker: Vec<Vec<Listener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    let skip = config.asap.skip_unavailable;
    let buffer = config.io.socket_buffer_bytes;
    let backlog = config.io.listen_backlog;
    for url in &config.asap.listen {
        let mut url = *url;
        if url.address.port() != 0 {
            // Port ownership: a second registrar or another process on the port is refused
            // here, before SO_REUSEPORT would silently split the traffic with it.
            claims.push(while_in_use(&url, || PortClaim::acquire(&url))?);
        }
        match url.transport {
            Transport::Sctp => {
                if let Err(e) = net::sctp_support() {
                    if skip {
                        tracing::warn!("skipping {url}: {e}");
                        continue;
                    }
                    return Err(e.into());
                }
                // SO_REUSEPORT spreads SCTP associations over the workers' one-to-many
                // sockets as it does TCP connections (checked in user-mode Linux).
                for listeners in per_worker.iter_mut() {
                    let socket = while_in_use(&url, || {
                        SctpSocket::listen(&[url.address], true, backlog, buffer)
                    })?;
                    if url.address.port() == 0 {
                        url.address = local_addr(socket.socket())?;
                    }
                    listeners.push(Listener::Sctp {
                        socket,
                        url,
                        protocol: Protocol::Asap,
                    });
                }
            }
            Transport::Tcp | Transport::Mptcp => {
                let mut skipped = false;
                for (i, listeners) in per_worker.iter_mut().enumerate() {
                    let socket = match while_in_use(&url, || {
                        net::listen_stream(&url, true, backlog, buffer)
                    }) {
                        Ok(s) => s,
                        Err(e @ NetError::MptcpUnavailable { .. }) if skip && i == 0 => {
                            tracing::warn!("skipping {url}: {e}");
                            skipped = true;
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    if url.address.port() == 0 {
                        url.address = local_addr(&socket)?;
                    }
                    listeners.push(Listener::Stream {
                        socket,
                        url,
                        protocol: Protocol::Asap,
                    });
                }
                if skipped {
                    continue;
                }
            }
            // SCTP in UDP: each worker's socket has its own SCTP endpoint; SO_REUSEPORT keeps
            // a peer's datagrams (one 4-tuple) on one of them.
            Transport::Udp | Transport::SctpUdp => {
                for listeners in per_worker.iter_mut() {
                    let socket = while_in_use(&url, || net::bind_udp(url.address, true, buffer))?;
                    if url.transport == Transport::SctpUdp {
                        dont_fragment(&socket, &url)?;
                    }
                    if url.address.port() == 0 {
                        url.address = local_addr(&socket)?;
                    }
                    listeners.push(Listener::Udp {
                        socket: socket.into(),
                        url,
                        protocol: Protocol::Asap,
                    });
                }
            }
        }
        bound.push(url);
    }
    if bound.is_empty() {
        return Err(DaemonError::Config(
            "no ASAP listener could be opened; give at least one with --asap \
             (e.g. --asap tcp://127.0.0.1:3863)"
                .into(),
        ));
    }
    Ok((per_worker, bound))
}

/// Opens the ENRP endpoints on worker 0 alone (one socket each, no `SO_REUSEPORT`: the
/// operating scope lives on worker 0). With `enrp.skip_unavailable`, an endpoint whose transport
/// the kernel lacks or whose port is taken is skipped with a warning. Returns the bound URLs.
fn open_enrp_listeners(
    config: &Config,
    worker0: &mut Vec<Listener>,
) -> Result<Vec<TransportUrl>, DaemonError> {
    let skip = config.enrp.skip_unavailable;
    let buffer = config.io.socket_buffer_bytes;
    let backlog = config.io.listen_backlog;
    let protocol = Protocol::Enrp;
    let mut bound = Vec::new();
    for url in &config.enrp.listen {
        let mut url = *url;
        let opened = match url.transport {
            Transport::Sctp => net::sctp_support()
                .and_then(|()| {
                    while_in_use(&url, || {
                        SctpSocket::listen(&[url.address], false, backlog, buffer)
                    })
                })
                .and_then(|socket| {
                    if url.address.port() == 0 {
                        url.address = local_addr_of(socket.socket(), &url)?;
                    }
                    Ok(Listener::Sctp {
                        socket,
                        url,
                        protocol,
                    })
                }),
            Transport::Tcp | Transport::Mptcp => {
                while_in_use(&url, || net::listen_stream(&url, false, backlog, buffer)).and_then(
                    |socket| {
                        if url.address.port() == 0 {
                            url.address = local_addr_of(&socket, &url)?;
                        }
                        Ok(Listener::Stream {
                            socket,
                            url,
                            protocol,
                        })
                    },
                )
            }
            Transport::Udp | Transport::SctpUdp => {
                while_in_use(&url, || net::bind_udp(url.address, false, buffer)).and_then(
                    |socket| {
                        if url.transport == Transport::SctpUdp {
                            dont_fragment(&socket, &url)?;
                        }
                        if url.address.port() == 0 {
                            url.address = local_addr_of(&socket, &url)?;
                        }
                        Ok(Listener::Udp {
                            socket: socket.into(),
                            url,
                            protocol,
                        })
                    },
                )
            }
        };
        match opened {
            Ok(listener) => {
                worker0.push(listener);
                bound.push(url);
            }
            Err(e) if skip && e.unavailable_or_in_use() => {
                tracing::warn!("skipping the ENRP endpoint {url} (enrp.skip_unavailable): {e}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    if bound.is_empty() && !config.enrp.listen.is_empty() {
        tracing::warn!(
            "no ENRP endpoint could be opened: peers cannot connect to this registrar (it still \
             connects to `enrp.peers`); free a port of `enrp.listen` or give one with --enrp"
        );
    }
    Ok(bound)
}

/// SCTP in UDP: packets leave with the Don't Fragment bit ([`net::set_dont_fragment`]).
fn dont_fragment(socket: &socket2::Socket, url: &TransportUrl) -> Result<(), NetError> {
    use std::os::fd::AsFd;
    net::set_dont_fragment(socket.as_fd(), url.address.is_ipv6())
        .map_err(|e| NetError::io(format!("set IP_MTU_DISCOVER on {url}"), e))
}

/// How long a listener's address may be in use at start-up before that is an error.
const BIND_RETRY: Duration = Duration::from_secs(3);

/// Runs `bind` again while its address and port are in use, for up to [`BIND_RETRY`]: a
/// registrar restarted at once by its supervisor finds its ports still held by the killed one
/// for a few milliseconds (the kernel tears an io_uring instance down, and closes the sockets
/// its requests hold, after the process is gone). A port still taken after that belongs to
/// another process, and the error says so.
fn while_in_use<T>(
    url: &TransportUrl,
    mut bind: impl FnMut() -> Result<T, NetError>,
) -> Result<T, NetError> {
    let deadline = Instant::now() + BIND_RETRY;
    let mut warned = false;
    loop {
        match bind() {
            Err(e) if e.in_use() && Instant::now() < deadline => {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(
                        "{url} is in use; trying again for {BIND_RETRY:?} (a registrar that just \
                         exited may still be releasing it)"
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The local address of an ENRP socket bound to port 0.
fn local_addr_of(
    socket: &socket2::Socket,
    url: &TransportUrl,
) -> Result<std::net::SocketAddr, NetError> {
    socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| {
            NetError::io(
                format!("find the port the kernel chose for {url}"),
                std::io::Error::other("getsockname gave no IP address"),
            )
        })
}

fn local_addr(socket: &socket2::Socket) -> Result<std::net::SocketAddr, DaemonError> {
    socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| DaemonError::Io("getsockname", std::io::Error::other("no address")))
}

/// The state machine's configuration from the daemon's: `listeners` are the bound ASAP
/// listeners, `enrp` the bound ENRP endpoints.
fn core_config(
    config: &Config,
    pr_id: PrId,
    listeners: &[TransportUrl],
    enrp: &[TransportUrl],
) -> CoreConfig {
    let e = &config.enrp;
    CoreConfig {
        pr_id,
        keep_alive_interval: config.timers.keep_alive_interval_ms,
        keep_alive_timeout: config.timers.keep_alive_timeout_ms,
        max_bad_pe_reports: config.timers.max_bad_pe_reports,
        items: ItemCount {
            default: config.resolution.default_items,
            max: config.resolution.max_items,
        },
        max_pes_per_association: config.limits.max_pes_per_association,
        max_requests_per_second: config.limits.max_requests_per_second,
        max_registrations_per_second_per_identity: config
            .limits
            .max_registrations_per_second_per_identity,
        idle_timeout: config.limits.idle_timeout_ms,
        access_rules: config.access.rules.clone(),
        allowed_identities: config.tls.allowed_identities.clone(),
        max_pool_handle_len_ng: config.limits.max_pool_handle_len,
        announce_targets: config.announce.targets.clone(),
        announce_interval: config.announce.interval_ms,
        listeners: listeners.to_vec(),
        csp: config.csp.monitor.map(|m| (m, config.csp.interval_ms)),
        enrp: crate::core::EnrpConfig {
            local: enrp.to_vec(),
            peers: e.peers.clone(),
            presence_targets: e.presence_targets.clone(),
            heartbeat_interval: e.heartbeat_interval_ms,
            max_time_last_heard: e.max_time_last_heard_ms,
            max_time_no_response: e.max_time_no_response_ms,
            mentor_discovery_timeout: e.mentor_discovery_timeout_ms,
            takeover_expiry: e.takeover_expiry_ms,
            reconnect_interval: e.reconnect_interval_ms,
            max_pes_per_table_response: e.max_pes_per_table_response,
            takeover_suggestion: e.takeover_suggestion,
            allowed_peers: e.allowed_peers.clone(),
        },
        subscriptions: crate::core::SubscriptionConfig {
            max_per_association: config.subscriptions.max_per_association,
            max_total: config.subscriptions.max_total,
            min_push_interval: config.subscriptions.min_push_interval_ms,
        },
    }
}
