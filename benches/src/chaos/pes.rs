//! The PEs of a chaos run: `rserpool register` processes (the endpoint library's PE with its
//! blocking driver), each given every registrar for failover, and what their output says about
//! their registration, as time-stamped events.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use super::scope::{Log, drain, log_line, send_signal};
use super::{Clock, Millis};
use crate::error::{Error, Result};

/// What a PE's output said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeSaid {
    /// The registrar at this ASAP port accepted its registration or re-registration.
    Registered {
        /// The registrar's ASAP port.
        port: u16,
    },
    /// Its registration was lost (its registrar's connection closed, or its life ran out).
    Lost,
    /// Its registrar confirmed the deregistration.
    Deregistered,
}

/// A line of a PE's output that matters, with the PE's identifier and when it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeLine {
    /// The PE identifier.
    pub pe: u64,
    /// When the bench read the line.
    pub at: Millis,
    /// What it said.
    pub said: PeSaid,
}

/// What `rserpool register` prints, parsed: `registered PE … at URL`, `re-registered at URL`,
/// `registration at URL lost (…)`, `deregistered PE …`.
pub fn parse_line(line: &str) -> Option<PeSaid> {
    let port_of = |url: &str| url.rsplit(':').next()?.trim().parse::<u16>().ok();
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("registered PE ") {
        let url = rest.rsplit(" at ").next()?;
        return Some(PeSaid::Registered {
            port: port_of(url)?,
        });
    }
    if let Some(url) = line.strip_prefix("re-registered at ") {
        return Some(PeSaid::Registered {
            port: port_of(url)?,
        });
    }
    if line.starts_with("registration at ") && line.contains(" lost") {
        return Some(PeSaid::Lost);
    }
    line.starts_with("deregistered PE ")
        .then_some(PeSaid::Deregistered)
}

/// Where a PE process stands, as the bench made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeFate {
    /// Running.
    Alive,
    /// Sent SIGTERM at this time: deregistering.
    Leaving(Millis),
    /// Sent SIGSTOP: hung until the end of the run.
    Hung,
    /// Exited and reaped.
    Gone,
}

/// One PE process.
#[derive(Debug)]
pub struct PeProcess {
    /// Its identifier (`--id`).
    pub id: u64,
    /// Its pool's index.
    pub pool: usize,
    /// Where it stands.
    pub fate: PeFate,
    child: Child,
    stdout: Option<JoinHandle<()>>,
}

/// How PEs are started.
#[derive(Clone, Debug)]
pub struct PeLaunch {
    /// The `rserpool` binary.
    pub bin: PathBuf,
    /// Every registrar's ASAP URL.
    pub registrars: Vec<String>,
    /// The registration life (`--life`).
    pub life: Millis,
}

/// One PE to start.
#[derive(Clone, Debug)]
pub struct PeSpec {
    /// Its identifier.
    pub id: u64,
    /// Its pool's index.
    pub pool: usize,
    /// Its pool's handle.
    pub pool_handle: String,
    /// The registrar it tries first (the list is rotated, so that PEs spread over them).
    pub first: usize,
    /// The user port it advertises.
    pub port: u16,
}

impl PeProcess {
    /// Starts `rserpool register` for `spec`; its lines go to `log` and its registration events
    /// to `events`.
    pub fn spawn(
        launch: &PeLaunch,
        spec: PeSpec,
        log: &Log,
        clock: &Clock,
        events: &Sender<PeLine>,
    ) -> Result<Self> {
        let PeSpec {
            id,
            pool,
            pool_handle,
            first,
            port,
        } = spec;
        let pool_handle = pool_handle.as_str();
        let mut command = Command::new(&launch.bin);
        command.args(["register", "--pool", pool_handle, "--port"]);
        command.arg(port.to_string());
        command.args(["--life", &launch.life.to_string(), "--id", &id.to_string()]);
        let n = launch.registrars.len();
        for k in 0..n {
            command.args(["--registrar", &launch.registrars[(first + k) % n]]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::new(format!(
                    "cannot start the PE {}: {e}; build it (cargo build --release -p \
                     rserpool-endpoint) or pass --rserpool-bin PATH",
                    launch.bin.display()
                ))
            })?;
        log_line(
            log,
            clock.now(),
            &format!(
                "PE {id:#010x} pool {pool_handle}: started, pid {}",
                child.id()
            ),
        );
        let tag = format!("PE {id:#010x}: ");
        let tx = events.clone();
        let stdout = drain(
            child.stdout.take().expect("stdout is piped"),
            Arc::clone(log),
            clock.clone(),
            tag.clone(),
            move |line, at| {
                if let Some(said) = parse_line(line) {
                    // The run may be over and the receiver gone.
                    let _ = tx.send(PeLine { pe: id, at, said });
                }
            },
        );
        drain(
            child.stderr.take().expect("stderr is piped"),
            Arc::clone(log),
            clock.clone(),
            tag,
            |_, _| {},
        );
        Ok(Self {
            id,
            pool,
            fate: PeFate::Alive,
            child,
            stdout: Some(stdout),
        })
    }

    /// Sends `signal` (`TERM`, `STOP`).
    pub fn signal(&self, signal: &str) -> Result<()> {
        send_signal(self.child.id(), signal)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.fate = PeFate::Gone;
    }

    /// Whether the process exited (then reaped; its output read to the end).
    pub fn exited(&mut self) -> bool {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if let Some(stdout) = self.stdout.take() {
            let _ = stdout.join();
        }
        self.fate = PeFate::Gone;
        true
    }
}

impl Drop for PeProcess {
    fn drop(&mut self) {
        if self.fate != PeFate::Gone {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_register_commands_lines_are_understood() {
        assert_eq!(
            parse_line("registered PE 0x0000abcd in pool pool000001 at tcp://127.0.0.1:4100"),
            Some(PeSaid::Registered { port: 4100 })
        );
        assert_eq!(
            parse_line("re-registered at tcp://127.0.0.1:4101"),
            Some(PeSaid::Registered { port: 4101 })
        );
        assert_eq!(
            parse_line(
                "registration at tcp://127.0.0.1:4101 lost (ConnectionClosed); registering again"
            ),
            Some(PeSaid::Lost)
        );
        assert_eq!(
            parse_line("deregistered PE 0x0000abcd"),
            Some(PeSaid::Deregistered)
        );
        assert_eq!(parse_line("home registrar is now 0x00000002"), None);
    }
}
