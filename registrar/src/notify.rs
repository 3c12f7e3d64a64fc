//! systemd's service notification (`sd_notify(3)`, `Type=notify` units) without libsystemd: one
//! datagram per state change to the Unix socket `$NOTIFY_SOCKET` names (a path, or an abstract
//! name after `@`). The daemon says `READY=1` once it listens and the ENRP start-up is over,
//! `RELOADING=1` and `READY=1` around a SIGHUP reload, `STOPPING=1` when it drains, and, under
//! `WatchdogSec=`, `WATCHDOG=1` as long as every worker's event loop keeps turning.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The notification socket of the service manager.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The manager's socket from `$NOTIFY_SOCKET`, if the process runs under one; the watchdog
    /// interval from `$WATCHDOG_USEC` when `$WATCHDOG_PID` is absent or this process.
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_str()?;
        let to = match path.strip_prefix('@') {
            Some(name) => <SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
                name.as_bytes(),
            )
            .ok()?,
            None => SocketAddr::from_pathname(path).ok()?,
        };
        let ours =
            std::env::var("WATCHDOG_PID").map_or(true, |pid| pid.parse() == Ok(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|&usec| ours && usec > 0)
            .map(Duration::from_micros);
        Some(Self {
            socket: UnixDatagram::unbound().ok()?,
            to,
            watchdog,
        })
    }

    /// Sends `state` (`KEY=value` lines); a failure is logged, never fatal.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.to) {
            tracing::warn!(%e, "cannot notify the service manager ($NOTIFY_SOCKET)");
        }
    }

    /// How often to send `WATCHDOG=1`: half the manager's `WatchdogSec=`, as sd_watchdog_enabled
    /// recommends; `None` without a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }
}
