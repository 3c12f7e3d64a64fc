//! The blocking driver of the session layer (RFC 5352 §3.8-3.9) over kernel SCTP (one-to-one
//! associations, each message whole with its PPID: 11 for the ASAP control channel, any other
//! for data) and over TCP and MPTCP with the record framing of `docs/session.md`:
//! [`SessionServer`] runs the PE side (an accept loop, a thread per PU connection, a
//! [`SessionHandler`] per session), [`Session`] the PU side (a session with a pool through a
//! [`Pu`] resolver, failing over with the cookie echo when its PE fails).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The transports a session runs over ([`SessionOptions::transport`]): SCTP, TCP or MPTCP.
pub use rserpool_net::Transport;
use rserpool_net::{SctpClient, SctpListener, TransportUrl};
use rserpool_protocol::{MAX_MESSAGE_LEN, PeId, TransportKind};

use super::Pu;
use crate::session::{
    PPID_CONTROL, PeSession, PeSessionConfig, PeSessionEvent, PuSession, PuSessionConfig,
    PuSessionEvent, SessionAction, SessionError, Transmit,
};
use crate::{ConnId, PeInfo};

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Chunks a connection's reader may hold for the session before it waits (backpressure).
const READ_BACKLOG: usize = 64;
/// Failed accepts in a row, [`ACCEPT_POLL`] apart, before a server gives up.
const MAX_ACCEPT_FAILURES: u32 = 100;
/// How often a stopped server's accept loop notices.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// How the session driver does its I/O.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// SCTP (needs kernel SCTP), TCP, or MPTCP (which falls back to TCP with a plain peer).
    pub transport: Transport,
    /// Longest wait for a connection to a PE.
    pub connect_timeout: Duration,
    /// Longest wait for a blocked send before the connection counts as failed.
    pub send_timeout: Duration,
    /// Sessions a [`SessionServer`] serves at once; further connections are closed at once.
    pub max_sessions: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            transport: Transport::Tcp,
            connect_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(5),
            max_sessions: 256,
        }
    }
}

fn io_error(what: impl Into<String>, e: impl std::fmt::Display) -> SessionError {
    SessionError::Io {
        what: what.into(),
        error: e.to_string(),
    }
}

/// The error for a transport sessions do not run over.
fn no_session_transport(transport: Transport) -> String {
    format!(
        "sessions run over sctp://, tcp:// or mptcp://, not {}://",
        transport.scheme()
    )
}

/// The transport kind a PE registers for a session listener of `transport`, and that a PU's
/// session reaches PEs over: SCTP, or TCP (MPTCP endpoints advertise TCP, RFC 5354 has no
/// MPTCP transport parameter).
pub fn transport_kind(transport: Transport) -> TransportKind {
    match transport {
        Transport::Sctp => TransportKind::Sctp,
        Transport::Tcp | Transport::Mptcp | Transport::Udp => TransportKind::Tcp,
    }
}

/// One session's connection: an SCTP association (each message whole with its PPID) or a byte
/// stream carrying the record framing.
#[derive(Debug)]
enum Conn {
    Stream(TcpStream),
    Sctp(SctpClient),
}

/// What a connection's reader got.
enum Incoming {
    /// Bytes of the stream framing.
    Bytes(Vec<u8>),
    /// One whole SCTP message.
    Record { ppid: u32, payload: Vec<u8> },
}

impl Conn {
    /// Sends each message: on SCTP one message with its PPID on stream 0, on a stream the
    /// records in one write.
    fn write(&self, transmits: &[Transmit]) -> io::Result<()> {
        match self {
            Self::Stream(stream) => {
                let mut out = Vec::new();
                for t in transmits {
                    let record = t
                        .framed()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                    out.extend_from_slice(&record);
                }
                (&*stream).write_all(&out)
            }
            Self::Sctp(assoc) => {
                for t in transmits {
                    let sent = assoc.send(t.ppid, 0, &t.payload)?;
                    if sent != t.payload.len() {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("sent {sent} of a {}-byte SCTP message", t.payload.len()),
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Self::Stream(stream) => stream.shutdown(Shutdown::Both),
            Self::Sctp(assoc) => assoc.socket().shutdown(Shutdown::Both),
        };
    }

    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Stream(stream) => Self::Stream(stream.try_clone()?),
            Self::Sctp(assoc) => Self::Sctp(assoc.try_clone()?),
        })
    }

    /// Blocking I/O, sends waiting at most `send_timeout`, no Nagle on TCP.
    fn set_up(&self, send_timeout: Duration) -> io::Result<()> {
        match self {
            Self::Stream(stream) => {
                stream.set_nonblocking(false)?;
                stream.set_nodelay(true)?;
                stream.set_write_timeout(Some(send_timeout))
            }
            Self::Sctp(assoc) => {
                assoc.socket().set_nonblocking(false)?;
                assoc.socket().set_write_timeout(Some(send_timeout))
            }
        }
    }
}

/// Reads a connection: stream bytes as they come, SCTP messages whole (their parts joined, a
/// message longer than its limit breaks the connection: control messages one ASAP message,
/// data `max_data_len`).
struct Reader {
    conn: Conn,
    buf: Vec<u8>,
    max_data_len: usize,
}

impl Reader {
    fn new(conn: Conn, max_data_len: usize) -> Self {
        Self {
            conn,
            buf: vec![0u8; READ_CHUNK],
            max_data_len,
        }
    }

    /// The next input; `None` when the peer closed the connection.
    fn next(&mut self) -> io::Result<Option<Incoming>> {
        match &self.conn {
            Conn::Stream(stream) => loop {
                match (&*stream).read(&mut self.buf) {
                    Ok(0) => return Ok(None),
                    Ok(n) => return Ok(Some(Incoming::Bytes(self.buf[..n].to_vec()))),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            },
            Conn::Sctp(assoc) => {
                let mut message = Vec::new();
                loop {
                    let Some(part) = assoc.recv_part(&mut self.buf)? else {
                        return Ok(None);
                    };
                    let max = if part.ppid == PPID_CONTROL {
                        MAX_MESSAGE_LEN
                    } else {
                        self.max_data_len
                    };
                    if message.len() + part.len > max {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "an SCTP message with PPID {} longer than the limit of {max} bytes",
                                part.ppid
                            ),
                        ));
                    }
                    message.extend_from_slice(&self.buf[..part.len]);
                    if part.complete {
                        return Ok(Some(Incoming::Record {
                            ppid: part.ppid,
                            payload: message,
                        }));
                    }
                }
            }
        }
    }
}

/// A session server's listener.
#[derive(Debug)]
enum Listener {
    Stream(TcpListener),
    Sctp(SctpListener),
}

impl Listener {
    fn accept(&self) -> io::Result<(Conn, SocketAddr)> {
        match self {
            Self::Stream(l) => l.accept().map(|(s, peer)| (Conn::Stream(s), peer)),
            Self::Sctp(l) => l.accept().map(|(a, peer)| (Conn::Sctp(a), peer)),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Stream(l) => l.local_addr(),
            Self::Sctp(l) => l.local_addr(),
        }
    }
}

/// What a PE's application does with one session; [`SessionServer`] calls it on the session's
/// thread.
pub trait SessionHandler: Send + 'static {
    /// The PE's preferred failover alternatives, sent in ASAP_BUSINESS_CARD as the session
    /// starts (RFC 5352 §3.9); empty: no card.
    fn business_card(&mut self) -> Vec<PeInfo> {
        Vec::new()
    }

    /// The PU failed over to this PE and echoed the previous PE's cookie (RFC 5352 §3.8):
    /// restore the state from it.
    fn on_cookie_echo(&mut self, session: &mut PeerSession<'_>, cookie: &[u8]);

    /// Application data from the PU.
    fn on_data(&mut self, session: &mut PeerSession<'_>, ppid: u32, payload: &[u8]);

    /// The PU is also a PE and named its failover alternatives (RFC 5352 §3.9).
    fn on_business_card(&mut self, _session: &mut PeerSession<'_>, _pool_elements: &[PeInfo]) {}

    /// A received message was dropped (the session goes on), or the stream broke (it ends).
    fn on_error(&mut self, _error: &SessionError) {}

    /// The session ended.
    fn on_closed(&mut self) {}
}

/// One session as a [`SessionHandler`] sees it: what it sends goes out when the callback
/// returns.
#[derive(Debug)]
pub struct PeerSession<'a> {
    core: &'a mut PeSession,
    peer: SocketAddr,
    close: &'a mut bool,
}

impl PeerSession<'_> {
    /// The PU's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// RFC 5352 §3.8: sends the session state as ASAP_COOKIE (the PU keeps the latest).
    pub fn send_cookie(&mut self, cookie: &[u8]) -> Result<(), SessionError> {
        self.core.send_cookie(cookie)
    }

    /// Sends application data.
    pub fn send_data(&mut self, ppid: u32, payload: &[u8]) -> Result<(), SessionError> {
        self.core.send_data(ppid, payload)
    }

    /// RFC 5352 §3.9: re-sends the business card with a new failover order.
    pub fn send_business_card(&mut self, pool_elements: &[PeInfo]) -> Result<(), SessionError> {
        self.core.send_business_card(pool_elements)
    }

    /// Ends the session once what was sent has gone out (the PU fails over to another PE with
    /// the latest cookie, as after a failure).
    pub fn close(&mut self) {
        *self.close = true;
    }
}

/// The PE side: accepts PU connections and runs a session on each.
#[derive(Debug)]
pub struct SessionServer {
    listener: Listener,
    config: PeSessionConfig,
    options: SessionOptions,
}

/// A [`SessionServer`] running on a background thread; dropping it stops accepting (sessions
/// under way run to their end).
#[derive(Debug)]
pub struct ServerHandle {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl SessionServer {
    /// Listens on `address` over the options' transport (SCTP, TCP or MPTCP; port 0 = any free
    /// port). The PE registers this address's port as its user transport, of the kind
    /// [`transport_kind`] names, with `transport_use` data plus control (RFC 5354 §3.4).
    pub fn bind(
        address: SocketAddr,
        config: PeSessionConfig,
        options: SessionOptions,
    ) -> Result<Self, SessionError> {
        let url = TransportUrl::new(options.transport, address);
        let listener = match options.transport {
            Transport::Sctp => Listener::Sctp(
                SctpListener::bind(address, 128)
                    .map_err(|e| io_error(format!("listen on {url}"), e))?,
            ),
            Transport::Tcp | Transport::Mptcp => {
                let socket = rserpool_net::listen_stream(&url, false, 128, 0)
                    .map_err(|e| io_error(format!("listen on {url}"), e))?;
                socket
                    .set_nonblocking(true)
                    .map_err(|e| io_error(format!("set up {url}"), e))?;
                Listener::Stream(TcpListener::from(socket))
            }
            Transport::Udp => {
                return Err(io_error(
                    format!("listen on {url}"),
                    no_session_transport(options.transport),
                ));
            }
        };
        Ok(Self {
            listener,
            config,
            options,
        })
    }

    /// Where the server listens.
    pub fn local_addr(&self) -> Result<SocketAddr, SessionError> {
        self.listener
            .local_addr()
            .map_err(|e| io_error("read the listener's address", e))
    }

    /// Serves on a background thread; `new_handler` makes each session's handler from the PU's
    /// address.
    pub fn spawn<H, F>(self, new_handler: F) -> Result<ServerHandle, SessionError>
    where
        H: SessionHandler,
        F: FnMut(SocketAddr) -> H + Send + 'static,
    {
        let address = self.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("rserpool-session-accept".into())
            .spawn(move || {
                // A listener that fails ends the server; the handle's owner sees it stop.
                let _ = self.accept_loop(new_handler, &flag);
            })
            .map_err(|e| io_error("start the accept thread", e))?;
        Ok(ServerHandle {
            address,
            stop,
            thread: Some(thread),
        })
    }

    /// Serves on the caller's thread; returns only when accepting fails 100 times in a row,
    /// 0.1 s apart (a connection that went away before it was accepted is no failure; running
    /// out of descriptors is waited out that long).
    pub fn run<H, F>(self, new_handler: F) -> Result<(), SessionError>
    where
        H: SessionHandler,
        F: FnMut(SocketAddr) -> H + Send + 'static,
    {
        self.accept_loop(new_handler, &AtomicBool::new(false))
    }

    fn accept_loop<H, F>(self, mut new_handler: F, stop: &AtomicBool) -> Result<(), SessionError>
    where
        H: SessionHandler,
        F: FnMut(SocketAddr) -> H,
    {
        let active = Arc::new(AtomicUsize::new(0));
        let mut failures = 0;
        while !stop.load(Ordering::Relaxed) {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(ACCEPT_POLL);
                    continue;
                }
                // A connection that went away before it was accepted.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue;
                }
                // Out of descriptors or memory: wait for sessions to end, for a while.
                Err(e) => {
                    failures += 1;
                    if failures >= MAX_ACCEPT_FAILURES {
                        let address = self.listener.local_addr().ok();
                        return Err(io_error(
                            format!("accept on {address:?} ({failures} failures in a row)"),
                            e,
                        ));
                    }
                    std::thread::sleep(ACCEPT_POLL);
                    continue;
                }
            };
            failures = 0;
            if active.load(Ordering::Relaxed) >= self.options.max_sessions {
                stream.shutdown();
                continue;
            }
            let handler = new_handler(peer);
            let config = self.config.clone();
            let send_timeout = self.options.send_timeout;
            let count = Arc::clone(&active);
            count.fetch_add(1, Ordering::Relaxed);
            let spawned = std::thread::Builder::new()
                .name(format!("rserpool-session-{peer}"))
                .spawn(move || {
                    serve(stream, peer, config, send_timeout, handler);
                    count.fetch_sub(1, Ordering::Relaxed);
                });
            if spawned.is_err() {
                active.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// One PE session on its thread: business card first, then records in, handler calls, records
/// out, until the PU closes or the stream breaks.
fn serve<H: SessionHandler>(
    stream: Conn,
    peer: SocketAddr,
    config: PeSessionConfig,
    send_timeout: Duration,
    mut handler: H,
) {
    if stream.set_up(send_timeout).is_err() {
        stream.shutdown();
        handler.on_closed();
        return;
    }
    let reading = match stream.try_clone() {
        Ok(reading) => reading,
        Err(_) => {
            stream.shutdown();
            handler.on_closed();
            return;
        }
    };
    let mut reader = Reader::new(reading, config.max_data_len);
    let card = handler.business_card();
    let mut core = match PeSession::new(config.clone(), &card) {
        Ok(core) => core,
        Err(e) => {
            handler.on_error(&e);
            match PeSession::new(config, &[]) {
                Ok(core) => core,
                Err(_) => return,
            }
        }
    };
    let mut close = false;
    loop {
        let mut transmits = Vec::new();
        while let Some(event) = core.poll_event() {
            let mut session = PeerSession {
                core: &mut core,
                peer,
                close: &mut close,
            };
            match event {
                PeSessionEvent::CookieEcho(cookie) => handler.on_cookie_echo(&mut session, &cookie),
                PeSessionEvent::Data { ppid, payload } => {
                    handler.on_data(&mut session, ppid, &payload);
                }
                PeSessionEvent::BusinessCard { pool_elements } => {
                    handler.on_business_card(&mut session, &pool_elements);
                }
                PeSessionEvent::Dropped(e) => handler.on_error(&e),
            }
        }
        transmits.extend(std::iter::from_fn(|| core.poll_transmit()));
        if (!transmits.is_empty() && stream.write(&transmits).is_err()) || close {
            break;
        }
        match reader.next() {
            Ok(Some(Incoming::Bytes(bytes))) => {
                if let Err(e) = core.on_stream_bytes(&bytes) {
                    handler.on_error(&e);
                    break;
                }
            }
            // A dropped message: the session goes on.
            Ok(Some(Incoming::Record { ppid, payload })) => {
                if let Err(e) = core.on_record(ppid, &payload) {
                    handler.on_error(&e);
                }
            }
            Ok(None) => break,
            Err(e) => {
                handler.on_error(&io_error("receive from the PU", e));
                break;
            }
        }
    }
    stream.shutdown();
    handler.on_closed();
}

/// What [`Session::recv`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Application data from the PE.
    Data {
        /// Its PPID.
        ppid: u32,
        /// The message.
        payload: Vec<u8>,
    },
    /// The PE failed and the session moved to another one, with the cookie echo first (RFC 5352
    /// §3.8). Messages sent to the failed PE may be lost: repeat what is unanswered.
    FailedOver {
        /// The PE that failed.
        from: PeInfo,
        /// The PE now in use.
        to: PeInfo,
    },
}

enum Input {
    Bytes {
        conn: ConnId,
        bytes: Vec<u8>,
    },
    Record {
        conn: ConnId,
        ppid: u32,
        payload: Vec<u8>,
    },
    Closed {
        conn: ConnId,
        error: String,
    },
}

/// The PU side: a session with a pool on the caller's thread.
#[derive(Debug)]
pub struct Session {
    pu: Pu,
    core: PuSession,
    pool_handle: Vec<u8>,
    options: SessionOptions,
    live: Option<(ConnId, Conn)>,
    tx: SyncSender<Input>,
    rx: Receiver<Input>,
    received: VecDeque<Received>,
    /// The PE whose failure started the failover under way.
    failing: Option<PeInfo>,
    /// Received messages dropped so far.
    dropped: u64,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes { conn, bytes } => write!(f, "Bytes({conn:?}, {})", bytes.len()),
            Self::Record {
                conn,
                ppid,
                payload,
            } => write!(f, "Record({conn:?}, {ppid}, {})", payload.len()),
            Self::Closed { conn, error } => write!(f, "Closed({conn:?}, {error})"),
        }
    }
}

impl Session {
    /// Opens a session with the pool `config.pool_handle`: `pu` picks the PE by the pool's
    /// policy (resolving the handle if its cache has no fresh entry) and the session connects
    /// to it over `options.transport`, failing over to the next PE while connections fail.
    /// `config.transport` is set to the options' transport ([`transport_kind`]).
    pub fn open(
        mut pu: Pu,
        mut config: PuSessionConfig,
        options: SessionOptions,
    ) -> Result<Self, SessionError> {
        if options.transport == Transport::Udp {
            return Err(io_error(
                "open a session",
                no_session_transport(options.transport),
            ));
        }
        config.transport = transport_kind(options.transport);
        let pool_handle = config.pool_handle.clone();
        let first = pu.select(&pool_handle).map_err(SessionError::Resolution)?;
        let (tx, rx) = sync_channel(READ_BACKLOG);
        let mut session = Self {
            pu,
            core: PuSession::new(config),
            pool_handle,
            options,
            live: None,
            tx,
            rx,
            received: VecDeque::new(),
            failing: None,
            dropped: 0,
        };
        session.core.start(first);
        session.process()?;
        // A failover while opening is no news for the application.
        session.received.clear();
        Ok(session)
    }

    /// The PE in use.
    pub fn current_pe(&self) -> Option<&PeInfo> {
        self.core.current()
    }

    /// The latest cookie of the session (RFC 5352 §3.8).
    pub fn cookie(&self) -> Option<&[u8]> {
        self.core.cookie()
    }

    /// The latest business card's PEs, the preferred failover order (RFC 5352 §3.9).
    pub fn business_card(&self) -> &[PeInfo] {
        self.core.business_card()
    }

    /// Received control messages dropped so far (undecodable, unexpected, too long).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The pool user that resolves the pool.
    pub fn pu(&mut self) -> &mut Pu {
        &mut self.pu
    }

    /// Sends application data with `ppid` (any but 11); a PE that fails on the way is failed
    /// over (the data then goes to the new PE after the cookie echo).
    pub fn send(&mut self, ppid: u32, payload: &[u8]) -> Result<(), SessionError> {
        self.ensure_open()?;
        self.core.send_data(ppid, payload)?;
        self.process()
    }

    /// Waits at most `timeout` for data or a failover; `Ok(None)` when nothing came.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Received>, SessionError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.process()?;
            if let Some(r) = self.received.pop_front() {
                return Ok(Some(r));
            }
            self.ensure_open()?;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Input::Bytes { conn, bytes }) => {
                    // A stream that cannot be framed fails the PE inside the core.
                    let _ = self.core.on_stream_bytes(conn, &bytes);
                }
                Ok(Input::Record {
                    conn,
                    ppid,
                    payload,
                }) => {
                    // A message that does not belong is dropped; the session goes on.
                    if self.core.on_record(conn, ppid, &payload).is_err() {
                        self.dropped += 1;
                    }
                }
                Ok(Input::Closed { conn, error }) => {
                    if self.live.as_ref().is_some_and(|(c, _)| *c == conn) {
                        self.live = None;
                        self.core.on_closed(conn, error);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Err(SessionError::Closed),
            }
        }
    }

    /// A session whose failover failed has no PE any more.
    fn ensure_open(&self) -> Result<(), SessionError> {
        match self.core.current() {
            Some(_) => Ok(()),
            None => Err(SessionError::Closed),
        }
    }

    /// Ends the session.
    pub fn close(mut self) {
        if let Some((_, stream)) = self.live.take() {
            stream.shutdown();
        }
    }

    /// Carries out the core's actions and handles its events until it has none.
    fn process(&mut self) -> Result<(), SessionError> {
        loop {
            let mut busy = false;
            while let Some(action) = self.core.poll_action() {
                busy = true;
                self.act(action);
            }
            while let Some(event) = self.core.poll_event() {
                busy = true;
                match event {
                    PuSessionEvent::PeFailed { pe, error: _ } => {
                        let next = self.policy_choice(pe.id);
                        self.failing.get_or_insert(pe);
                        self.core.fail_over(next)?;
                    }
                    PuSessionEvent::Connected { pe, failover } => {
                        if let Some(from) = self.failing.take().filter(|_| failover) {
                            self.received
                                .push_back(Received::FailedOver { from, to: pe });
                        }
                    }
                    PuSessionEvent::Data { ppid, payload } => {
                        self.received.push_back(Received::Data { ppid, payload });
                    }
                    PuSessionEvent::BusinessCard { .. } => {}
                    PuSessionEvent::Dropped(_) => self.dropped += 1,
                }
            }
            if !busy {
                return Ok(());
            }
        }
    }

    /// The pool policy's next PE after `failed` failed: [`Pu::pe_failed`] reports it to the
    /// registrar (RFC 5352 §3.5) and picks from the cached list; PEs that failed in this session
    /// are dropped from the list too; an empty or stale list is resolved again.
    fn policy_choice(&mut self, failed: PeId) -> Option<PeInfo> {
        let mut next = self.pu.pe_failed(&self.pool_handle, failed);
        for _ in 0..8 {
            match next {
                Some(pe) if !self.core.has_failed(pe.id) => return Some(pe),
                Some(pe) => next = self.pu.pe_failed(&self.pool_handle, pe.id),
                None => next = self.pu.select(&self.pool_handle).ok(),
            }
        }
        None
    }

    fn act(&mut self, action: SessionAction) {
        match action {
            SessionAction::Connect { conn, pe } => match self.connect(&pe) {
                Ok(stream) => match stream.try_clone() {
                    Ok(reading) => {
                        let tx = self.tx.clone();
                        let reader = Reader::new(reading, self.core_max_data_len());
                        std::thread::spawn(move || read_stream(conn, reader, &tx));
                        self.live = Some((conn, stream));
                        self.core.on_connected(conn);
                    }
                    Err(e) => self.core.on_connect_failed(conn, e.to_string()),
                },
                Err(e) => self.core.on_connect_failed(conn, e),
            },
            SessionAction::Transmit { conn, transmit } => {
                let Some((_, stream)) = self.live.as_ref().filter(|(c, _)| *c == conn) else {
                    return;
                };
                if let Err(e) = stream.write(&[transmit]) {
                    stream.shutdown();
                    self.live = None;
                    self.core.on_closed(conn, format!("send failed: {e}"));
                }
            }
            SessionAction::Close { conn } => {
                if let Some((_, stream)) = self.live.take_if(|(c, _)| *c == conn) {
                    stream.shutdown();
                }
            }
        }
    }

    /// The longest application message the session accepts.
    fn core_max_data_len(&self) -> usize {
        self.core.config().max_data_len
    }

    /// Connects to a PE's user transport (its first address).
    fn connect(&self, pe: &PeInfo) -> Result<Conn, String> {
        let Some(ip) = pe.addresses().first() else {
            return Err(format!("PE {} has no address", pe.id));
        };
        let address = SocketAddr::new(*ip, pe.port());
        let url = TransportUrl::new(self.options.transport, address);
        let timeout = self.options.connect_timeout;
        let conn = if self.options.transport == Transport::Sctp {
            Conn::Sctp(SctpClient::connect(address, None, timeout).map_err(|e| e.to_string())?)
        } else {
            let socket = rserpool_net::connect_stream_blocking(&url, Some(timeout))
                .map_err(|e| e.to_string())?;
            Conn::Stream(TcpStream::from(socket))
        };
        conn.set_up(self.options.send_timeout)
            .map_err(|e| format!("set up {url}: {e}"))?;
        Ok(conn)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some((_, stream)) = self.live.take() {
            stream.shutdown();
        }
    }
}

/// A connection's reader: passes what arrives to the session until the connection ends.
fn read_stream(conn: ConnId, mut reader: Reader, tx: &SyncSender<Input>) {
    let error = loop {
        let input = match reader.next() {
            Ok(Some(Incoming::Bytes(bytes))) => Input::Bytes { conn, bytes },
            Ok(Some(Incoming::Record { ppid, payload })) => Input::Record {
                conn,
                ppid,
                payload,
            },
            Ok(None) => break "the PE closed the connection".to_owned(),
            Err(e) => break e.to_string(),
        };
        if tx.send(input).is_err() {
            return;
        }
    };
    let _ = tx.send(Input::Closed { conn, error });
}
