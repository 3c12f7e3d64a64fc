//! The registrar processes of a chaos run: one slot per registrar with its loopback ports
//! (chosen once, kept across restarts so that a restart has the same command line), its PR ID,
//! its process, and its log file; starting, killing, stopping and continuing it; and the time
//! stamped copies of its stdout and stderr in the log.

use std::fs::File;
use std::io::{BufRead, BufReader, LineWriter, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use super::{Clock, Millis};
use crate::error::{Error, Result};
use crate::net::StreamTransport;

/// A log file several threads append whole lines to.
pub type Log = Arc<Mutex<LineWriter<File>>>;

/// Opens (truncates) a log file.
pub fn open_log(path: &Path) -> Result<Log> {
    let file = File::create(path)
        .map_err(|e| Error::new(format!("cannot create the log {}: {e}", path.display())))?;
    Ok(Arc::new(Mutex::new(LineWriter::new(file))))
}

/// Appends `line` to `log`, prefixed with the run time in seconds.
pub fn log_line(log: &Log, at: Millis, line: &str) {
    let mut file = log.lock().unwrap_or_else(PoisonError::into_inner);
    // A log that cannot be written must not stop the run.
    let _ = writeln!(file, "[{:>8.3}] {line}", at as f64 / 1000.0);
}

/// Copies every line of `pipe` to `log` (after `prefix`) until it closes, and calls `on_line`
/// with each; never stops reading early, so the process never blocks on a full pipe.
pub fn drain(
    pipe: impl Read + Send + 'static,
    log: Log,
    clock: Clock,
    prefix: String,
    mut on_line: impl FnMut(&str, Millis) + Send + 'static,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe)
            .lines()
            .map_while(std::result::Result::ok)
        {
            let at = clock.now();
            log_line(&log, at, &format!("{prefix}{line}"));
            on_line(&line, at);
        }
    })
}

/// What all registrars of a run share on their command line.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The registrar binary.
    pub bin: PathBuf,
    /// `--profile`.
    pub profile: String,
    /// `--workers`, only when the bench was given `--workers`.
    pub workers: Option<usize>,
    /// The ASAP and ENRP transport.
    pub transport: StreamTransport,
}

/// Ports on 127.0.0.1 free now: bound to port 0 all at once (so that they differ), then
/// released.
pub fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::new(format!("cannot find free loopback ports: {e}")))?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::new(format!("cannot find free loopback ports: {e}")))
}

/// One registrar of the scope.
#[derive(Debug)]
pub struct Slot {
    /// Its index (PR slot `index` in reports).
    pub index: usize,
    /// Its PR ID now.
    pub id: u64,
    /// Its ASAP port.
    pub asap: u16,
    /// Its ENRP port.
    pub enrp: u16,
    /// Its metrics port.
    pub metrics: u16,
    peers: Vec<u16>,
    launch: Launch,
    log: Log,
    child: Option<Child>,
    listening: Arc<AtomicBool>,
    /// When the running process was started.
    pub started: Millis,
}

impl Slot {
    /// Slot `index` with PR ID `id`, listening on `ports` (ASAP, ENRP, metrics) and peering with
    /// the ENRP ports `peers`, logging to `log_dir/prN.log`.
    pub fn new(
        index: usize,
        id: u64,
        ports: (u16, u16, u16),
        peers: Vec<u16>,
        launch: Launch,
        log_dir: &Path,
    ) -> Result<Self> {
        Ok(Self {
            index,
            id,
            asap: ports.0,
            enrp: ports.1,
            metrics: ports.2,
            peers,
            launch,
            log: open_log(&log_dir.join(format!("pr{index}.log")))?,
            child: None,
            listening: Arc::new(AtomicBool::new(false)),
            started: 0,
        })
    }

    /// The name in reports: `PR0 (id 1)`.
    pub fn name(&self) -> String {
        format!("PR{} (id {})", self.index, self.id)
    }

    /// The ASAP URL PEs are given.
    pub fn asap_url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.launch.transport.scheme(),
            self.asap
        )
    }

    /// The metrics URL.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics)
    }

    /// The command line's arguments: the same on every start but for `--id`.
    pub fn args(&self) -> Vec<String> {
        let scheme = self.launch.transport.scheme();
        let mut args = vec![
            "--profile".to_owned(),
            self.launch.profile.clone(),
            "--id".to_owned(),
            self.id.to_string(),
            "--asap".to_owned(),
            format!("{scheme}://127.0.0.1:{}", self.asap),
            "--enrp".to_owned(),
            format!("{scheme}://127.0.0.1:{}", self.enrp),
            "--metrics".to_owned(),
            format!("127.0.0.1:{}", self.metrics),
        ];
        if let Some(workers) = self.launch.workers {
            args.extend(["--workers".to_owned(), workers.to_string()]);
        }
        for peer in &self.peers {
            args.extend(["--peer".to_owned(), format!("{scheme}://127.0.0.1:{peer}")]);
        }
        args
    }

    /// The registrar's `--check-config` output for this command line.
    pub fn check_config(&self) -> Result<String> {
        let out = Command::new(&self.launch.bin)
            .args(self.args())
            .arg("--check-config")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                Error::new(format!(
                    "cannot run {} --check-config: {e}",
                    self.launch.bin.display()
                ))
            })?;
        if !out.status.success() {
            return Err(Error::new(format!(
                "{} refused the command line {:?}: {}",
                self.launch.bin.display(),
                self.args(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts the process (the previous one must be gone); its output goes to the log, and
    /// [`Slot::is_listening`] turns true at its `listening enrp` line.
    pub fn spawn(&mut self, clock: &Clock) -> Result<()> {
        let args = self.args();
        log_line(
            &self.log,
            clock.now(),
            &format!(
                "=== rserpool-bench: starting {} {}",
                self.launch.bin.display(),
                args.join(" ")
            ),
        );
        let mut child = Command::new(&self.launch.bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::new(format!(
                    "cannot start {}: {e}; build it (cargo build --release -p rserpool-registrar) \
                     or pass --registrar-bin PATH",
                    self.launch.bin.display()
                ))
            })?;
        self.started = clock.now();
        let listening = Arc::new(AtomicBool::new(false));
        self.listening = Arc::clone(&listening);
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = || Arc::clone(&self.log);
        drain(
            stdout,
            log(),
            clock.clone(),
            String::new(),
            move |line, _| {
                if line.trim_start().starts_with("listening enrp ") {
                    listening.store(true, Ordering::Release);
                }
            },
        );
        drain(stderr, log(), clock.clone(), String::new(), |_, _| {});
        self.child = Some(child);
        Ok(())
    }

    /// Whether the running process printed its ENRP listener.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// SIGKILL, then waits for the process to be gone (as a supervisor does before a restart).
    pub fn kill(&mut self, clock: &Clock, why: &str) {
        if let Some(mut child) = self.child.take() {
            // It may have exited already; either way it must be reaped.
            let _ = child.kill();
            let _ = child.wait();
            log_line(
                &self.log,
                clock.now(),
                &format!("=== rserpool-bench: SIGKILL ({why})"),
            );
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`) to the process.
    pub fn signal(&self, signal: &str, clock: &Clock) -> Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| Error::new(format!("{} is not running", self.name())))?;
        send_signal(child.id(), signal)?;
        log_line(
            &self.log,
            clock.now(),
            &format!("=== rserpool-bench: SIG{signal}"),
        );
        Ok(())
    }

    /// The exit status if the process exited by itself (it is then reaped and forgotten).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// SIGTERM, up to 2 s to exit, then SIGKILL.
    pub fn stop(&mut self, clock: &Clock) {
        if let Some(child) = &mut self.child {
            // A stopped process must run to handle SIGTERM.
            let _ = send_signal(child.id(), "CONT");
            let _ = send_signal(child.id(), "TERM");
            let deadline = clock.now() + 2000;
            while clock.now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return;
                }
                thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        self.kill(clock, "end of run, SIGTERM not obeyed within 2 s");
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `signal` (a name without `SIG`) to process `pid` with kill(1): the crate has no unsafe
/// code for kill(2).
pub fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| Error::new(format!("cannot run kill(1) to send SIG{signal}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "kill -{signal} {pid} failed ({status}): the process is gone"
        )))
    }
}
