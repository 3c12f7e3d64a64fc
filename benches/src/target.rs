//! The registrar under test: one given by URL, or a `rserpool-registrar` process this run starts
//! (found next to the bench binary or given by path), waits for, and kills at the end.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::net::{Endpoint, Transport};

/// The registrar binary's file name.
pub const REGISTRAR_BIN: &str = "rserpool-registrar";
/// How long a spawned registrar may take to print its listener.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The registrar's ASAP endpoint, and the process behind it if this run started it.
#[derive(Debug)]
pub struct Target {
    endpoint: Endpoint,
    child: Option<Child>,
}

impl Target {
    /// A registrar that runs elsewhere.
    pub fn external(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            child: None,
        }
    }

    /// Starts `bin` with `--workers workers --profile default --asap SCHEME://127.0.0.1:0` and
    /// waits for its `listening asap` line. Its stderr goes to ours.
    pub fn spawn(bin: &Path, workers: usize, transport: Transport) -> Result<Self> {
        if !bin.is_file() {
            return Err(Error::new(format!(
                "registrar binary {} not found: build it (cargo build --release -p \
                 rserpool-registrar) or pass --registrar-bin PATH",
                bin.display()
            )));
        }
        let mut child = Command::new(bin)
            .arg("--workers")
            .arg(workers.to_string())
            .args(["--profile", "default", "--asap"])
            .arg(format!("{}://127.0.0.1:0", transport.scheme()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::new(format!("cannot start {}: {e}", bin.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        // Reads stdout to its end so the registrar never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if let Some(endpoint) = parse_listening(&line) {
                    // The receiver is gone after the first listener; later lines are only drained.
                    let _ = tx.send(endpoint);
                }
            }
        });
        let found = rx.recv_timeout(START_TIMEOUT);
        let mut target = Self {
            endpoint: Endpoint::new(transport, ([127, 0, 0, 1], 0).into()),
            child: Some(child),
        };
        match found {
            Ok(endpoint) => {
                target.endpoint = endpoint;
                Ok(target)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = target
                    .child
                    .as_mut()
                    .and_then(|c| c.wait().ok())
                    .map_or_else(|| "unknown status".to_owned(), |s| s.to_string());
                Err(Error::new(format!(
                    "{} exited ({status}) without printing `listening asap`",
                    bin.display()
                )))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::new(format!(
                "{} printed no `listening asap` line within {START_TIMEOUT:?}",
                bin.display()
            ))),
        }
    }

    /// Where to send ASAP.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// Whether this run started the registrar.
    pub fn is_spawned(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // It may have exited already; either way it must be reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
        assert_eq!(e.transport, Transport::Tcp);
        let m = parse_listening("listening asap mptcp://127.0.0.1:7\n").unwrap();
        assert_eq!(m.transport, Transport::Mptcp);
        assert_eq!(parse_listening("metrics http://127.0.0.1:9/metrics"), None);
        assert_eq!(parse_listening("listening asap sctp://127.0.0.1:7"), None);
    }
}
