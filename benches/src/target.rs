//! The registrar under test: one given by URL, or a `rserpool-registrar` process this run starts
//! (found next to the bench binary or given by path) with a generated configuration file and,
//! for `resync` and `takeover`, an ENRP endpoint, peers, a PR ID and fixed ports, waits for,
//! restarts with the same command line when asked, and kills at the end; and reading counters
//! from its Prometheus metrics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::net::{Endpoint, StreamTransport};
use rserpool_protocol::url::{Transport as UrlTransport, TransportUrl};

/// The registrar binary's file name.
pub const REGISTRAR_BIN: &str = "rserpool-registrar";
/// How long a spawned registrar may take to print its listener.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The registrar's ASAP endpoint, and the process behind it if this run started it.
#[derive(Debug)]
pub struct Target {
    endpoint: Endpoint,
    child: Option<Child>,
    metrics: Option<String>,
    enrp: Option<String>,
    config: Option<PathBuf>,
    /// When the process was started and when it printed its last awaited `listening` line.
    started: Option<(Instant, Instant)>,
    /// The command line of a spawned registrar, kept for [`Target::restart`].
    launch: Option<Launch>,
    /// The UDP listener a registrar spawned by [`Target::spawn_with_udp`] printed.
    udp: Option<SocketAddr>,
}

/// The ENRP side of a spawned registrar: where it listens, the peers it starts with, its PR ID,
/// and the ports of its ASAP and metrics listeners.
#[derive(Clone, Debug, Default)]
pub struct EnrpSpawn {
    /// The `--enrp` URL (`tcp://127.0.0.1:0?generation=ng`: a free port).
    pub listen: String,
    /// The `--peer` URLs: the registrars it downloads the handlespace from at start-up.
    pub peers: Vec<String>,
    /// `--id`: its PR ID (`None`: the registrar draws one).
    pub id: Option<u64>,
    /// The port of its ASAP listener on 127.0.0.1 (0: a free port the registrar picks). A
    /// registrar to be restarted needs fixed ports, so that its command line stays the same.
    pub asap_port: u16,
    /// The port of its metrics endpoint on 127.0.0.1 (0: a free port the registrar picks).
    pub metrics_port: u16,
}

/// The command line of a spawned registrar (but for its configuration file's path).
#[derive(Debug)]
struct Launch {
    bin: PathBuf,
    workers: usize,
    profile: String,
    transport: StreamTransport,
    /// The ASAP listener is a TLS one (`tcp+tls://`; the configuration has the `[tls]` keys).
    tls: bool,
    enrp: Option<EnrpSpawn>,
    /// Whether it gets a UDP listener besides (`--asap udp://127.0.0.1:0`).
    udp: bool,
}

/// What a spawned registrar printed on stdout that the bench looks for.
enum Announced {
    Asap(Endpoint),
    Udp(SocketAddr),
    Enrp(String),
    Metrics(String),
}

impl Target {
    /// A registrar that runs elsewhere.
    pub fn external(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            child: None,
            metrics: None,
            enrp: None,
            config: None,
            started: None,
            launch: None,
            udp: None,
        }
    }

    /// Writes `config` (TOML) to a temporary file and starts `bin` with `--workers workers
    /// --profile PROFILE --asap SCHEME://127.0.0.1:0 --metrics 127.0.0.1:0 --config FILE` (the
    /// scheme with `+tls` when `tls`, and then `config` has the `[tls]` keys), and
    /// with `enrp` also `--enrp LISTEN`, a `--peer` per peer, `--id` if it has one, and its ASAP
    /// and metrics ports instead of 0; waits for its `listening asap` line (and with `enrp` its
    /// `listening enrp` line) and notes its `metrics` line. Its stderr goes to ours.
    pub fn spawn(
        bin: &Path,
        workers: usize,
        profile: &str,
        transport: StreamTransport,
        tls: bool,
        config: &str,
        enrp: Option<&EnrpSpawn>,
    ) -> Result<Self> {
        let launch = Launch {
            bin: bin.to_owned(),
            workers,
            profile: profile.to_owned(),
            transport,
            tls,
            enrp: enrp.cloned(),
            udp: false,
        };
        Self::spawn_launch(launch, config)
    }

    /// Like [`Target::spawn`] without ENRP, with a UDP listener besides the ASAP listener
    /// (`--asap udp://127.0.0.1:0`), whose address [`Target::udp`] then tells.
    pub fn spawn_with_udp(
        bin: &Path,
        workers: usize,
        profile: &str,
        transport: StreamTransport,
        config: &str,
    ) -> Result<Self> {
        let launch = Launch {
            bin: bin.to_owned(),
            workers,
            profile: profile.to_owned(),
            transport,
            tls: false,
            enrp: None,
            udp: true,
        };
        Self::spawn_launch(launch, config)
    }

    /// Writes `config` to a temporary file and starts the registrar `launch` describes.
    fn spawn_launch(launch: Launch, config: &str) -> Result<Self> {
        let bin = &launch.bin;
        if !bin.is_file() {
            return Err(Error::new(format!(
                "registrar binary {} not found: build it (cargo build --release -p \
                 rserpool-registrar) or pass --registrar-bin PATH",
                bin.display()
            )));
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "rserpool-bench-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, config)
            .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))?;
        let mut target = Self {
            endpoint: Endpoint::new(launch.transport, ([127, 0, 0, 1], 0).into()),
            child: None,
            metrics: None,
            enrp: None,
            config: Some(path),
            started: None,
            launch: Some(launch),
            udp: None,
        };
        target.start()?;
        Ok(target)
    }

    /// SIGKILLs the spawned registrar, waits for it to exit (as a supervisor does), and starts
    /// it again at once with the same command line, but `--id id` when `id` is given; returns
    /// when it printed its `listening` lines again ([`Target::started`] then tells the new
    /// process's times). The same command line has the same ports only if the registrar was
    /// spawned with an [`EnrpSpawn`] whose ports are fixed (not 0).
    pub fn restart(&mut self, id: Option<u64>) -> Result<()> {
        let launch = self.launch.as_mut().ok_or_else(|| {
            Error::new("only a registrar this run started can be restarted: use --spawn")
        })?;
        if let Some(id) = id {
            let enrp = launch.enrp.as_mut().ok_or_else(|| {
                Error::new("a registrar without an ENRP endpoint has no PR ID to change")
            })?;
            enrp.id = Some(id);
        }
        self.kill();
        self.start()
    }

    /// SIGKILLs a spawned registrar and waits for its process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // It may have exited already; either way it must be reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process ID of a spawned registrar that is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process `self.launch` describes and waits for its listeners.
    fn start(&mut self) -> Result<()> {
        let launch = self.launch.as_ref().expect("a spawned registrar");
        let config = self
            .config
            .as_ref()
            .expect("a spawned registrar's configuration");
        let bin = launch.bin.clone();
        let enrp = launch.enrp.as_ref();
        let mut command = Command::new(&bin);
        command
            .arg("--workers")
            .arg(launch.workers.to_string())
            .args(["--profile", &launch.profile, "--asap"])
            .arg(format!(
                "{}{}://127.0.0.1:{}",
                launch.transport.scheme(),
                if launch.tls { "+tls" } else { "" },
                enrp.map_or(0, |e| e.asap_port)
            ))
            .arg("--metrics")
            .arg(format!("127.0.0.1:{}", enrp.map_or(0, |e| e.metrics_port)))
            .arg("--config")
            .arg(config);
        if launch.udp {
            command.args(["--asap", "udp://127.0.0.1:0"]);
        }
        if let Some(enrp) = enrp {
            command.args(["--enrp", &enrp.listen]);
            for peer in &enrp.peers {
                command.args(["--peer", peer]);
            }
            if let Some(id) = enrp.id {
                command.arg("--id").arg(id.to_string());
            }
        }
        let awaits_enrp = enrp.is_some();
        let awaits_udp = launch.udp;
        self.metrics = None;
        self.udp = None;
        self.enrp = None;
        self.started = None;
        let started = Instant::now();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::new(format!("cannot start {}: {e}", bin.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        // Reads stdout to its end so the registrar never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                let announced = match (parse_listening(&line), line.strip_prefix("metrics ")) {
                    (Some(endpoint), _) => Announced::Asap(endpoint),
                    (None, Some(url)) => Announced::Metrics(url.trim().to_owned()),
                    (None, None) => match (
                        line.trim().strip_prefix("listening enrp "),
                        parse_udp_listening(&line),
                    ) {
                        (Some(url), _) => Announced::Enrp(url.trim().to_owned()),
                        (None, Some(addr)) => Announced::Udp(addr),
                        (None, None) => continue,
                    },
                };
                // The receiver is gone after the listeners; later lines are only drained.
                let _ = tx.send(announced);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut asap = None;
        // The registrar prints its ASAP listeners before its ENRP ones.
        let found = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Announced::Metrics(url)) => self.metrics = Some(url),
                Ok(Announced::Enrp(url)) => {
                    self.enrp.get_or_insert(url);
                }
                Ok(Announced::Asap(endpoint)) => {
                    asap.get_or_insert(endpoint);
                }
                Ok(Announced::Udp(addr)) => {
                    self.udp.get_or_insert(addr);
                }
                Err(e) => break Err(e),
            }
            if let Some(endpoint) = asap
                && (!awaits_enrp || self.enrp.is_some())
                && (!awaits_udp || self.udp.is_some())
            {
                break Ok(endpoint);
            }
        };
        let wanted = match (awaits_enrp, awaits_udp) {
            (true, _) => "`listening asap` and `listening enrp`",
            (false, true) => "`listening asap` for its stream and UDP listeners",
            (false, false) => "`listening asap`",
        };
        match found {
            Ok(endpoint) => {
                self.endpoint = endpoint;
                self.started = Some((started, Instant::now()));
                Ok(())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.wait().ok())
                    .map_or_else(|| "unknown status".to_owned(), |s| s.to_string());
                Err(Error::new(format!(
                    "{} exited ({status}) without printing {wanted}",
                    bin.display()
                )))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::new(format!(
                "{} printed no {wanted} line within {START_TIMEOUT:?}",
                bin.display()
            ))),
        }
    }

    /// Where to send ASAP.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The UDP listener of a registrar spawned by [`Target::spawn_with_udp`].
    pub fn udp(&self) -> Option<SocketAddr> {
        self.udp
    }

    /// Whether this run started the registrar.
    pub fn is_spawned(&self) -> bool {
        self.child.is_some()
    }

    /// The metrics URL a spawned registrar printed.
    pub fn metrics_url(&self) -> Option<&str> {
        self.metrics.as_deref()
    }

    /// The ENRP URL a registrar spawned with [`EnrpSpawn`] printed (`listening enrp URL`).
    pub fn enrp_url(&self) -> Option<&str> {
        self.enrp.as_deref()
    }

    /// For a spawned registrar: when its process was started, and when it had printed the
    /// `listening` lines waited for.
    pub fn started(&self) -> Option<(Instant, Instant)> {
        self.started
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.kill();
        if let Some(path) = self.config.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The Prometheus text a registrar serves at `url` (`http://HOST:PORT/metrics`), over plain
/// HTTP/1.1.
pub fn scrape(url: &str) -> Result<String> {
    let bad = |why: String| Error::new(format!("cannot read the metrics at {url}: {why}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("not an http:// URL".into()))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, "metrics"));
    let mut stream = TcpStream::connect(authority).map_err(|e| bad(e.to_string()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .and_then(|()| {
            write!(
                stream,
                "GET /{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
            )
        })
        .map_err(|e| bad(e.to_string()))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| bad(e.to_string()))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no HTTP answer".into()))?;
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(bad(head.lines().next().unwrap_or_default().to_owned()));
    }
    Ok(body.to_owned())
}

/// The sum of the samples whose line starts with `prefix` (a metric name, with labels to pick
/// some), as they appear in `text`.
pub fn sample_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The resident set size of process `pid` in bytes (`VmRSS` in `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|e| Error::new(format!("cannot read {path}: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| Error::new(format!("{path} has no VmRSS line in kB")))
}

/// `rserpool-registrar` next to the running executable (for `cargo test` executables in
/// `target/*/deps`, one directory up as well); the path looked at first if none exists.
pub fn default_registrar_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::new(format!("cannot locate the bench executable: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mut candidates = vec![dir.join(REGISTRAR_BIN)];
    if dir.ends_with("deps") {
        candidates.extend(dir.parent().map(|d| d.join(REGISTRAR_BIN)));
    }
    Ok(candidates
        .iter()
        .find(|p| p.is_file())
        .unwrap_or(&candidates[0])
        .clone())
}

/// The address of a `listening asap udp://127.0.0.1:PORT` line.
pub fn parse_udp_listening(line: &str) -> Option<SocketAddr> {
    let url = line.trim().strip_prefix("listening asap ")?.trim();
    TransportUrl::parse(url, &[UrlTransport::Udp])
        .ok()
        .map(|u| u.address)
}

/// The endpoint of a `listening asap tcp://127.0.0.1:PORT` line.
pub fn parse_listening(line: &str) -> Option<Endpoint> {
    line.trim()
        .strip_prefix("listening asap ")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_name_the_endpoint() {
        let e = parse_listening("listening asap tcp://127.0.0.1:40123").unwrap();
        assert_eq!(e.addr.port(), 40123);
        assert_eq!(e.transport, StreamTransport::Tcp);
        let m = parse_listening("listening asap mptcp://127.0.0.1:7\n").unwrap();
        assert_eq!(m.transport, StreamTransport::Mptcp);
        assert_eq!(parse_listening("metrics http://127.0.0.1:9/metrics"), None);
        let sctp = parse_listening("listening asap sctp://127.0.0.1:7").unwrap();
        assert_eq!(sctp.transport, StreamTransport::Sctp);
        assert_eq!(parse_listening("listening asap udp://127.0.0.1:7"), None);
        assert_eq!(
            parse_udp_listening("listening asap udp://127.0.0.1:7"),
            Some(([127, 0, 0, 1], 7).into())
        );
        assert_eq!(
            parse_udp_listening("listening asap tcp://127.0.0.1:7"),
            None
        );
    }

    #[test]
    fn the_resident_set_of_this_process_is_read() {
        let rss = rss_bytes(std::process::id()).unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
        assert!(
            rss_bytes(u32::MAX)
                .unwrap_err()
                .message()
                .contains("cannot read")
        );
    }

    #[test]
    fn samples_are_summed_by_prefix() {
        let text = "# HELP x\nrserpool_deregistrations_total{result=\"accepted\"} 4\n\
                    rserpool_deregistrations_total{result=\"0x000a\"} 1\n\
                    rserpool_deregistrations_total_other 9\n";
        assert_eq!(sample_sum(text, "rserpool_deregistrations_total{"), 5.0);
        assert_eq!(
            sample_sum(text, "rserpool_deregistrations_total{result=\"accepted\"}"),
            4.0
        );
        assert_eq!(sample_sum(text, "rserpool_pools"), 0.0);
    }
}
