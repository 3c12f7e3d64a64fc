//! Test harness: the real `rserpool-registrar` daemon as a process on loopback, found next to the
//! test binary in the target directory, and helpers to read a child's output with timeouts.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// The registrar binary: target/<profile>/rserpool-registrar, beside target/<profile>/deps where
/// this test runs.
pub fn registrar_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let binary = profile_dir.join(format!(
        "rserpool-registrar{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p rserpool-registrar` (or `cargo test --workspace`) \
         before these tests",
        binary.display()
    );
    binary
}

/// Lines of a child's output stream, read by a thread.
pub struct Lines {
    rx: Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    /// Reads `stream` line by line in the background.
    pub fn new(stream: impl Read + Send + 'static) -> Self {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            // The stream stays drained when no one listens any more: a process writing to it
            // must not find its pipe closed.
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line that satisfies `f`, waiting at most `timeout`; panics with everything seen
    /// otherwise.
    pub fn wait_for(&mut self, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if f(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no matching line within {timeout:?}; seen: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Everything read so far plus what arrives until the stream closes.
    pub fn rest(mut self) -> Vec<String> {
        self.seen.extend(self.rx.iter());
        self.seen
    }
}

/// A running `rserpool-registrar`, killed on drop.
pub struct Daemon {
    pub child: Child,
    /// The ASAP listeners as printed by the daemon (`tcp://127.0.0.1:40000?generation=ng`).
    pub listeners: Vec<String>,
    /// The metrics URL (`http://127.0.0.1:port/metrics`).
    pub metrics: Option<String>,
}

/// A configuration file with keep-alives every `keep_alive_ms` and as long to answer.
pub fn config_file(keep_alive_ms: u64) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "rserpool-endpoint-test-{}-{n}.toml",
        std::process::id()
    ));
    std::fs::write(
        &path,
        format!(
            "[timers]\nkeep_alive_interval_ms = {keep_alive_ms}\nkeep_alive_timeout_ms = {keep_alive_ms}\n"
        ),
    )
    .expect("write the registrar configuration");
    path
}

impl Daemon {
    /// Starts the daemon with one worker, keep-alives every `keep_alive_ms`, metrics, and these
    /// ASAP listener URLs; waits until it printed them all.
    pub fn start(keep_alive_ms: u64, asap: &[&str]) -> Self {
        let config = config_file(keep_alive_ms);
        let mut args = vec![
            "--config".to_owned(),
            config.display().to_string(),
            "--workers".into(),
            "1".into(),
            "--metrics".into(),
            "127.0.0.1:0".into(),
        ];
        for url in asap {
            args.push("--asap".into());
            args.push((*url).to_owned());
        }
        Self::with_args(&args, asap.len())
    }

    /// Starts the daemon with `args`, expecting `listeners` ASAP listener lines.
    pub fn with_args(args: &[String], listeners: usize) -> Self {
        let mut child = Command::new(registrar_binary())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rserpool-registrar");
        let mut lines = Lines::new(child.stdout.take().expect("stdout"));
        let mut found = Vec::new();
        let mut metrics = None;
        while found.len() < listeners || metrics.is_none() {
            let line = lines.wait_for(Duration::from_secs(20), |l| {
                l.starts_with("listening asap ") || l.starts_with("metrics ")
            });
            if let Some(url) = line.strip_prefix("listening asap ") {
                found.push(url.to_owned());
            } else if let Some(url) = line.strip_prefix("metrics ") {
                metrics = Some(url.to_owned());
            }
        }
        Self {
            child,
            listeners: found,
            metrics,
        }
    }

    /// The first listener URL starting with `scheme` (e.g. `tcp://`) of the given generation.
    pub fn url(&self, scheme: &str, ng: bool) -> String {
        self.listeners
            .iter()
            .find(|u| u.starts_with(scheme) && u.ends_with("?generation=ng") == ng)
            .unwrap_or_else(|| panic!("no {scheme} listener in {:?}", self.listeners))
            .clone()
    }

    /// The metrics text.
    pub fn scrape(&self) -> String {
        let url = self.metrics.as_deref().expect("metrics enabled");
        let authority = url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics");
        let mut s = TcpStream::connect(authority).expect("connect to the metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("send the metrics request");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("read the metrics");
        body
    }

    /// Sums the samples of a metric whose line starts with `prefix` (name and labels).
    pub fn metric(&self, prefix: &str) -> f64 {
        self.scrape()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A TCP port on loopback that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// A registrar URL from text.
pub fn url(s: &str) -> rserpool_endpoint::RegistrarUrl {
    s.parse().unwrap()
}

/// A PE configuration for `pool` at the `registrars` (the first one's generation), serving on
/// `port`.
pub fn pe_config(registrars: &[&str], pool: &str, port: u16) -> rserpool_endpoint::pe::Config {
    let urls: Vec<rserpool_endpoint::RegistrarUrl> = registrars.iter().map(|s| url(s)).collect();
    let mut c =
        rserpool_endpoint::pe::Config::new(urls.iter().map(|u| u.registrar).collect(), pool);
    c.generation = urls[0].generation;
    c.transport.port = port;
    c
}

/// A pool user of `registrar` without a cache, so every resolution asks the registrar.
pub fn pool_user(registrar: &str) -> rserpool_endpoint::driver::Pu {
    let u = url(registrar);
    let mut c = rserpool_endpoint::pu::Config::new(vec![u.registrar]);
    c.generation = u.generation;
    c.cache_stale = 0;
    rserpool_endpoint::driver::Pu::new(c)
}

/// The PE IDs of a resolution, sorted.
pub fn ids(pes: &[rserpool_endpoint::PeInfo]) -> Vec<u64> {
    let mut ids: Vec<u64> = pes.iter().map(|p| p.id.0).collect();
    ids.sort_unstable();
    ids
}
