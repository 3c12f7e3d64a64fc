//! The blocking driver: runs a sans-I/O core over SCTP, TCP or MPTCP connections with plain
//! threads. The sockets are `rserpool-net`'s: [`Connection`] to a registrar, and the UDP socket
//! announces arrive on.
//! One thread per connection attempt and one reader per open connection turn socket events into
//! inputs on a channel; the thread that owns the core waits on that channel until the core's
//! next timeout, feeds it, and carries out its actions (connect, send, close). [`Pe`] runs a pool
//! element on a background thread; [`Pu`] runs a pool user on the caller's thread.
//! [`resolve_udp`] resolves without a connection, one datagram to a registrar's UDP listener.

mod pe;
mod pu;
pub mod session;
mod udp;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use rserpool_net::NetError;
use rserpool_protocol::{MAX_MESSAGE_LEN, Policy};

pub use pe::{Pe, PeHandle};
pub use pu::Pu;
pub use pu::Subscription;
pub use rserpool_net::Connection;
pub use session::{Session, SessionServer};
pub use udp::resolve_udp;

use crate::pe::PoolElement;
use crate::pu::PoolUser;
use crate::{Action, ConnId, Millis, Registrar};

/// How the driver does its I/O.
#[derive(Clone, Debug)]
pub struct Options {
    /// Longest wait for one connection attempt.
    pub connect_timeout: Duration,
    /// Longest wait for a blocked send before the connection counts as failed.
    pub send_timeout: Duration,
    /// A UDP address to receive ASAP_SERVER_ANNOUNCEs on (a multicast group is joined on every
    /// interface); `None` = configured registrars only.
    pub announce_listen: Option<SocketAddr>,
    /// How long dropping a [`PeHandle`] waits for the deregistration before it closes the
    /// connection instead (the registrar then removes the PE with its association).
    pub drop_timeout: Duration,
    /// TLS to registrars named `tcp+tls://` or `mptcp+tls://`: the CA bundle that vouches for
    /// them, the certificate to present, the name to expect; `None`: such registrars are
    /// unreachable.
    pub tls: Option<TlsOptions>,
}

/// The client side of TLS to registrars.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// CA bundle and, if the registrar asks for one (PEs: it does), the client certificate.
    pub client: rserpool_net::ClientTls,
    /// The name the registrar's certificate must have; `None`: the address connected to (an IP
    /// address subject alternative name).
    pub server_name: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(5),
            announce_listen: None,
            drop_timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// Opens a connection to a registrar over its transport, waiting at most `timeout` (see
/// [`Connection::open`]). A failed socket call gives the kernel's answer alone (the caller names
/// the registrar); a kernel without SCTP or MPTCP gives what to do about it.
pub fn connect(registrar: &Registrar, options: &Options) -> io::Result<Connection> {
    let timeout = options.connect_timeout;
    if !registrar.tls {
        return Connection::open(registrar.transport.into(), registrar.address, timeout)
            .map_err(NetError::into_kernel_error);
    }
    let tls = options.tls.as_ref().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{registrar} speaks TLS: give the CA bundle that vouches for it (--tls-ca)"),
        )
    })?;
    Connection::open_tls(
        registrar.transport.into(),
        registrar.address,
        timeout,
        &tls.client,
        tls.server_name.as_deref(),
    )
    .map_err(NetError::into_kernel_error)
}

/// A command from the application to a driver thread.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Command {
    SetPolicy(Policy),
    Deregister,
    Abort,
}

/// Something that happened, delivered to the thread that owns the core.
#[derive(Debug)]
enum Input {
    Connected { conn: ConnId, stream: Connection },
    ConnectFailed { conn: ConnId, error: io::Error },
    Message { conn: ConnId, bytes: Vec<u8> },
    Closed { conn: ConnId },
    Announce { from: SocketAddr, bytes: Vec<u8> },
    Command(Command),
}

/// The calls a driver makes into a core; the PE and the PU implement it.
trait Core {
    type Event;
    fn poll_action(&mut self) -> Option<Action<Self::Event>>;
    fn poll_timeout(&self) -> Option<Millis>;
    fn handle_timeout(&mut self, now: Millis);
    fn on_connected(&mut self, conn: ConnId, local: Option<SocketAddr>, now: Millis);
    fn on_connect_failed(&mut self, conn: ConnId, error: String);
    fn on_message(&mut self, conn: ConnId, message: &[u8], now: Millis);
    fn on_closed(&mut self, conn: ConnId, now: Millis);
    fn on_announce(&mut self, from: SocketAddr, datagram: &[u8], now: Millis);
}

macro_rules! core_impl {
    ($ty:ty, $event:ty) => {
        impl Core for $ty {
            type Event = $event;
            fn poll_action(&mut self) -> Option<Action<$event>> {
                <$ty>::poll_action(self)
            }
            fn poll_timeout(&self) -> Option<Millis> {
                <$ty>::poll_timeout(self)
            }
            fn handle_timeout(&mut self, now: Millis) {
                <$ty>::handle_timeout(self, now)
            }
            fn on_connected(&mut self, conn: ConnId, local: Option<SocketAddr>, now: Millis) {
                <$ty>::on_connected(self, conn, local, now)
            }
            fn on_connect_failed(&mut self, conn: ConnId, error: String) {
                <$ty>::on_connect_failed(self, conn, error)
            }
            fn on_message(&mut self, conn: ConnId, message: &[u8], now: Millis) {
                <$ty>::on_message(self, conn, message, now)
            }
            fn on_closed(&mut self, conn: ConnId, now: Millis) {
                <$ty>::on_closed(self, conn, now)
            }
            fn on_announce(&mut self, from: SocketAddr, datagram: &[u8], now: Millis) {
                <$ty>::on_announce(self, from, datagram, now)
            }
        }
    };
}

core_impl!(PoolElement, crate::pe::PeEvent);
core_impl!(PoolUser, crate::pu::PuEvent);

/// The I/O side of one core: its connections, the input channel, the clock.
struct Runner {
    tx: Sender<Input>,
    rx: Receiver<Input>,
    streams: HashMap<ConnId, Connection>,
    /// Connection attempts the core abandoned while they were under way.
    cancelled: HashSet<ConnId>,
    base: Instant,
    options: Options,
    stop: Arc<AtomicBool>,
}

impl Runner {
    /// A runner; it listens for announces once [`Self::listen_announces`] is called.
    fn new(options: Options) -> Self {
        let (tx, rx) = channel();
        Self {
            tx,
            rx,
            streams: HashMap::new(),
            cancelled: HashSet::new(),
            base: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
            options,
        }
    }

    /// A runner that listens for announces where the options say.
    fn with_announces(options: Options) -> io::Result<Self> {
        let runner = Self::new(options);
        if let Some(address) = runner.options.announce_listen {
            runner.listen_announces(address)?;
        }
        Ok(runner)
    }

    /// Milliseconds since the runner started.
    fn now(&self) -> Millis {
        self.base.elapsed().as_millis() as Millis
    }

    fn commands(&self) -> Sender<Input> {
        self.tx.clone()
    }

    /// Waits for one input or the core's next timeout, feeds it to the core, carries out the
    /// core's actions and collects its events. Returns a command for the caller.
    fn turn<C: Core>(&mut self, core: &mut C, events: &mut Vec<C::Event>) -> Option<Command> {
        self.flush(core, events);
        let now = self.now();
        let due = core.poll_timeout();
        if due.is_some_and(|t| t <= now) {
            core.handle_timeout(now);
            self.flush(core, events);
            return None;
        }
        // Without a timer the core waits for input only; an hour is as good as forever.
        let wait = due.map_or(Duration::from_secs(3600), |t| {
            Duration::from_millis(t - now)
        });
        let command = match self.rx.recv_timeout(wait) {
            Ok(input) => self.dispatch(core, input),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        };
        let now = self.now();
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
        self.flush(core, events);
        command
    }

    /// Feeds the core every input that is already waiting (announces, closed connections that
    /// arrived while nobody was turning), without blocking.
    fn drain<C: Core>(&mut self, core: &mut C, events: &mut Vec<C::Event>) {
        while let Ok(input) = self.rx.try_recv() {
            // Only a PE thread receives commands; a pool user has none to act on.
            let _ = self.dispatch(core, input);
        }
        self.flush(core, events);
    }

    fn dispatch<C: Core>(&mut self, core: &mut C, input: Input) -> Option<Command> {
        let now = self.now();
        match input {
            Input::Connected { conn, stream } => {
                if self.cancelled.remove(&conn) {
                    let _ = stream.shutdown();
                    return None;
                }
                match stream.try_clone() {
                    Ok(reading) => {
                        let _ = stream.set_write_timeout(Some(self.options.send_timeout));
                        let local = stream.local_addr().ok();
                        let tx = self.tx.clone();
                        std::thread::spawn(move || read_messages(conn, &reading, &tx));
                        self.streams.insert(conn, stream);
                        core.on_connected(conn, local, now);
                    }
                    Err(e) => core.on_connect_failed(conn, e.to_string()),
                }
            }
            Input::ConnectFailed { conn, error } => {
                if !self.cancelled.remove(&conn) {
                    core.on_connect_failed(conn, error.to_string());
                }
            }
            Input::Message { conn, bytes } => {
                if self.streams.contains_key(&conn) {
                    core.on_message(conn, &bytes, now);
                }
            }
            Input::Closed { conn } => {
                if self.streams.remove(&conn).is_some() {
                    core.on_closed(conn, now);
                }
            }
            Input::Announce { from, bytes } => core.on_announce(from, &bytes, now),
            Input::Command(command) => return Some(command),
        }
        None
    }

    /// Carries out the core's actions until it has none.
    fn flush<C: Core>(&mut self, core: &mut C, events: &mut Vec<C::Event>) {
        while let Some(action) = core.poll_action() {
            match action {
                Action::Connect { conn, registrar } => {
                    let tx = self.tx.clone();
                    let options = self.options.clone();
                    std::thread::spawn(move || {
                        let input = match connect(&registrar, &options) {
                            Ok(stream) => Input::Connected { conn, stream },
                            Err(error) => Input::ConnectFailed { conn, error },
                        };
                        let _ = tx.send(input);
                    });
                }
                Action::Send { conn, message } => {
                    let Some(stream) = self.streams.get(&conn) else {
                        continue;
                    };
                    if stream.send(&message).is_err() {
                        let _ = stream.shutdown();
                        self.streams.remove(&conn);
                        core.on_closed(conn, self.now());
                    }
                }
                Action::Close { conn } => match self.streams.remove(&conn) {
                    Some(stream) => {
                        let _ = stream.shutdown();
                    }
                    None => {
                        self.cancelled.insert(conn);
                    }
                },
                Action::Event(event) => events.push(event),
            }
        }
    }

    /// Receives announces on a UDP socket bound to `address`, joining it if it is a multicast
    /// group ([`rserpool_net::announce_receiver`]).
    fn listen_announces(&self, address: SocketAddr) -> io::Result<()> {
        let socket = rserpool_net::announce_receiver(address)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let tx = self.tx.clone();
        let stop = Arc::clone(&self.stop);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX_MESSAGE_LEN];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let bytes = buf[..n].to_vec();
                    if tx.send(Input::Announce { from, bytes }).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(())
    }
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("connections", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for stream in self.streams.values() {
            let _ = stream.shutdown();
        }
    }
}

/// A connection's reader: passes each whole message to the core's thread until the connection
/// closes or breaks, then reports it closed.
fn read_messages(conn: ConnId, stream: &Connection, tx: &Sender<Input>) {
    let _ = stream.read_messages(|message| {
        let bytes = message.to_vec();
        tx.send(Input::Message { conn, bytes }).is_ok()
    });
    let _ = tx.send(Input::Closed { conn });
}
