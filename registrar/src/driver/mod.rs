//! The I/O drivers: one event loop per worker thread that feeds the sans-I/O [`Worker`] with what
//! its sockets receive, the time and the writes other workers forward, and carries out what it
//! answers. The io_uring driver is the default where the kernel allows it; the epoll driver is the
//! portable one. What both share lives here (sockets to listen on, mailboxes, the stop flag,
//! settings), in `state` (the loop work that does not depend on the driver) and in `conn` (stream
//! framing, write buffers and backpressure).

mod admission;
pub mod conn;
mod epoll;
mod sctp;
mod state;
pub mod sys;
mod uring;
mod uring_probe;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use rserpool_handlespace::Millis;
use rserpool_handlespace::mailbox::Mailbox;
use rserpool_net::{ClientTls, NetError, SctpSocket, ServerTls, TlsFiles, TransportUrl};

use self::admission::SourceCounts;
use crate::core::{CoreConfig, Forward, Worker};
use crate::metrics::{Protocol, WorkerMetrics};

pub use uring_probe::io_uring_support;

/// The I/O driver the workers run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// One io_uring per worker: multishot receives into provided buffers, batched sends.
    IoUring,
    /// One level-triggered epoll instance per worker.
    Epoll,
}

impl Driver {
    /// The name metrics and logs use: `"io_uring"` or `"epoll"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::IoUring => "io_uring",
            Self::Epoll => "epoll",
        }
    }

    /// Runs one worker on this driver until a stop is requested and its replies are flushed.
    pub fn run(self, setup: WorkerSetup) -> std::io::Result<()> {
        match self {
            Self::IoUring => uring::run(setup),
            Self::Epoll => epoll::run(setup),
        }
    }
}

/// What all workers share: mailboxes, wake-ups, the stop flag, the live configuration.
#[derive(Debug)]
pub struct Shared {
    /// One mailbox per worker for writes forwarded to its shard and completions back.
    pub mailboxes: Vec<Mailbox<Forward>>,
    /// One eventfd per worker to wake it when its mailbox fills.
    pub wakers: Vec<sys::EventFd>,
    /// Set to drain and stop.
    pub stop: AtomicBool,
    /// The configuration the state machines run with; replaced on SIGHUP.
    pub core_config: ArcSwap<CoreConfig>,
    /// Where time starts for every worker (the state machines count milliseconds from it).
    pub epoch: Instant,
    /// Associations per source address over all workers.
    pub sources: Arc<SourceCounts>,
    /// The TLS certificates in use; replaced on SIGHUP (new connections take the new ones).
    pub tls: ArcSwapOption<TlsContext>,
}

/// The registrar's TLS: the server side of its TLS listeners, and the client side it connects
/// to ENRP peers with (its own certificate as the client certificate).
#[derive(Debug)]
pub struct TlsContext {
    /// For `tcp+tls://` and `mptcp+tls://` listeners; `None` without a certificate.
    pub server: Option<ServerTls>,
    /// For ENRP peers reached over TLS; `None` without a CA bundle.
    pub client: Option<ClientTls>,
}

impl TlsContext {
    /// Loads the files `files` names; `None` when they name none.
    pub fn load(files: &TlsFiles) -> Result<Option<Self>, NetError> {
        let server = if files.certificate.as_os_str().is_empty() {
            None
        } else {
            Some(ServerTls::load(files)?)
        };
        let client = if files.ca.as_os_str().is_empty() {
            None
        } else {
            Some(ClientTls::load(files)?)
        };
        Ok((server.is_some() || client.is_some()).then_some(Self { server, client }))
    }
}

impl Shared {
    /// Shared state for `workers` workers with mailboxes of `mailbox_capacity` messages, at
    /// most `max_connections_per_source` associations per source address (0 = unlimited).
    pub fn new(
        workers: usize,
        mailbox_capacity: usize,
        config: Arc<CoreConfig>,
        max_connections_per_source: usize,
    ) -> std::io::Result<Self> {
        Ok(Self {
            mailboxes: (0..workers)
                .map(|_| Mailbox::new(mailbox_capacity))
                .collect(),
            wakers: (0..workers)
                .map(|_| sys::EventFd::new())
                .collect::<std::io::Result<_>>()?,
            stop: AtomicBool::new(false),
            core_config: ArcSwap::new(config),
            epoch: Instant::now(),
            sources: SourceCounts::new(max_connections_per_source),
            tls: ArcSwapOption::empty(),
        })
    }

    /// Milliseconds since the epoch.
    pub fn now(&self) -> Millis {
        self.millis_at(Instant::now())
    }

    /// Milliseconds from the epoch to `at`.
    pub fn millis_at(&self, at: Instant) -> Millis {
        at.saturating_duration_since(self.epoch).as_millis() as Millis
    }

    /// Asks every worker to drain and stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        for w in &self.wakers {
            w.wake();
        }
    }

    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Publishes a new configuration and wakes the workers to pick it up.
    pub fn reconfigure(&self, config: Arc<CoreConfig>) {
        self.core_config.store(config);
        for w in &self.wakers {
            w.wake();
        }
    }
}

/// A socket a worker serves.
#[derive(Debug)]
pub enum Listener {
    /// TCP or MPTCP: accepts associations.
    Stream {
        /// The listening socket.
        socket: socket2::Socket,
        /// What it listens on.
        url: TransportUrl,
        /// ASAP (PEs and PUs) or ENRP (peer registrars; worker 0 only).
        protocol: Protocol,
    },
    /// UDP: stateless handle resolution (ASAP), or presence datagrams (ENRP).
    Udp {
        /// The bound socket.
        socket: std::net::UdpSocket,
        /// What it listens on.
        url: TransportUrl,
        /// ASAP or ENRP.
        protocol: Protocol,
    },
    /// SCTP one-to-many: every association on one socket.
    Sctp {
        /// The socket.
        socket: SctpSocket,
        /// What it listens on.
        url: TransportUrl,
        /// ASAP (PPID 11) or ENRP (PPID 12).
        protocol: Protocol,
    },
}

impl Listener {
    /// The protocol its associations and datagrams speak.
    pub fn protocol(&self) -> Protocol {
        match self {
            Self::Stream { protocol, .. }
            | Self::Udp { protocol, .. }
            | Self::Sctp { protocol, .. } => *protocol,
        }
    }
}

impl std::os::fd::AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Self::Stream { socket, .. } => socket.as_fd(),
            Self::Udp { socket, .. } => socket.as_fd(),
            Self::Sctp { socket, .. } => socket.as_fd(),
        }
    }
}

/// Driver settings from the configuration's `[io]` and `[limits]` sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoSettings {
    /// Largest ASAP message accepted, in bytes.
    pub max_message_size: usize,
    /// Most open associations per worker.
    pub max_connections: usize,
    /// Unsent reply bytes above which a stream connection is not read until its peer catches up.
    pub max_buffered_bytes: usize,
    /// Read buffer per stream association, and size of each io_uring receive buffer, in bytes.
    pub buffer_size: usize,
    /// io_uring receive buffers per worker (a power of two, at most 32768).
    pub buffer_count: u32,
    /// io_uring submission queue entries per worker (a power of two).
    pub ring_entries: u32,
    /// Most reads (or datagrams) handled per socket per loop turn, so that one busy client
    /// cannot starve the others.
    pub max_batch: usize,
    /// Spin this long before sleeping in the kernel when idle (0 = never spin).
    pub busy_poll_us: u64,
}

/// Everything one worker thread runs with.
#[derive(Debug)]
pub struct WorkerSetup {
    /// The state machine.
    pub worker: Worker,
    /// Its metrics.
    pub metrics: Arc<WorkerMetrics>,
    /// What all workers share.
    pub shared: Arc<Shared>,
    /// The sockets this worker serves.
    pub listeners: Vec<Listener>,
    /// The socket announces and CSP reports leave from (worker 0).
    pub sender: Option<std::net::UdpSocket>,
    /// Driver settings.
    pub io: IoSettings,
}

/// Sends a datagram, counting nothing: UDP is best effort, and a full socket buffer drops it.
fn send_datagram(socket: &std::net::UdpSocket, to: SocketAddr, bytes: &[u8]) {
    if let Err(e) = socket.send_to(bytes, to)
        && e.kind() != std::io::ErrorKind::WouldBlock
    {
        tracing::debug!(%to, %e, "datagram not sent");
    }
}
