//! The blocking driver of the session layer (RFC 5352 §3.8-3.9) over kernel SCTP (one-to-one
//! associations, each message whole with its PPID: 11 for the ASAP control channel, any other
//! for data) and over TCP and MPTCP with the record framing of `docs/session.md`:
//! [`SessionServer`] runs the PE side (an accept loop, a thread per PU connection, a
//! [`SessionHandler`] per session), [`Session`] the PU side (a session with a pool through a
//! [`Pu`] resolver, failing over with the cookie echo when its PE fails).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The transports a session runs over ([`SessionOptions::transport`]): SCTP, TCP or MPTCP.
pub use rserpool_net::Transport;
use rserpool_net::{ClientCertificate, SctpClient, SctpListener, TlsSession, TransportUrl};
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
    /// Sessions a [`SessionServer`] serves at once; further connections are closed at once and
    /// reported as [`CloseReason::TooManySessions`].
    pub max_sessions: usize,
    /// A [`SessionServer`]'s session that receives no whole message and sends none for this
    /// long is closed ([`CloseReason::Idle`]), so that silent or half-open PUs do not hold
    /// session threads; zero: never. Bytes of an unfinished message do not count. It also
    /// bounds a TLS handshake. The PU side ignores it.
    pub idle_timeout: Duration,
    /// TLS over TCP or MPTCP (`tcp+tls://`, `mptcp+tls://`), both sides authenticated; `None`:
    /// plain. Not over SCTP.
    pub tls: Option<SessionTls>,
}

/// TLS 1.3 for sessions over TCP or MPTCP, with mutual authentication (RFC 5352 §9.3, RFC 5355
/// §2: authentication, integrity and confidentiality between PUs and PEs). The record framing
/// of `docs/session.md` runs unchanged inside it. A PE's registration says TCP either way (RFC
/// 5354 has no TLS marker): its PUs must know that the pool speaks TLS.
#[derive(Clone, Debug)]
pub enum SessionTls {
    /// A PE's [`SessionServer`]: its certificate and key, and the CA bundle that vouches for
    /// its PUs' certificates; every PU must present one
    /// ([`rserpool_net::ServerTls::load`] with a CA bundle).
    Pe(rserpool_net::ServerTls),
    /// A PU's [`Session`]: the CA bundle that vouches for the PEs' certificates, the PU's own
    /// certificate, and the name to expect in the PE's (`None`: the PE's IP address).
    Pu(super::TlsOptions),
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            transport: Transport::Tcp,
            connect_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(5),
            max_sessions: 256,
            idle_timeout: Duration::from_secs(60),
            tls: None,
        }
    }
}

/// Why a PE's session ended ([`SessionHandler::on_closed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The PU closed the connection.
    PeerClosed,
    /// The application closed it ([`PeerSession::close`], [`SessionHandle::close`]).
    Application,
    /// Nothing whole arrived and nothing went out for [`SessionOptions::idle_timeout`].
    Idle(Duration),
    /// The server already served [`SessionOptions::max_sessions`] sessions: the connection was
    /// closed as it was accepted, before anything was sent or read.
    TooManySessions {
        /// The bound.
        max: usize,
    },
    /// The connection failed: a read or send failed or timed out, or the stream could not be
    /// framed ([`SessionHandler::on_error`] had the details).
    Failed(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PeerClosed => write!(f, "the PU closed the connection"),
            Self::Application => write!(f, "the application closed the session"),
            Self::Idle(after) => write!(
                f,
                "idle for {after:?}: the PU sent no message and none was sent to it (raise \
                 SessionOptions::idle_timeout, or have the PU send something, if that is normal)"
            ),
            Self::TooManySessions { max } => write!(
                f,
                "refused: {max} sessions were under way (raise SessionOptions::max_sessions or \
                 add PEs to the pool)"
            ),
            Self::Failed(error) => write!(f, "the connection failed: {error}"),
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

/// The TLS options for a session's side (`pe`: the server's), or what is wrong with them.
fn check_tls(options: &SessionOptions, pe: bool) -> Result<(), String> {
    let Some(tls) = &options.tls else {
        return Ok(());
    };
    if options.transport == Transport::Sctp {
        return Err(
            "sessions run TLS over tcp:// or mptcp://, not sctp:// (use IPsec for SCTP, RFC 5355 \
             §3)"
            .into(),
        );
    }
    match (tls, pe) {
        (SessionTls::Pe(server), true) if !server.verifies_clients() => Err(
            "a PE's TLS authenticates its PUs: load its ServerTls with the CA bundle that \
             vouches for their certificates"
                .into(),
        ),
        (SessionTls::Pe(_), true) | (SessionTls::Pu(_), false) => Ok(()),
        (SessionTls::Pu(_), true) => {
            Err("a SessionServer needs SessionTls::Pe (its certificate and key)".into())
        }
        (SessionTls::Pe(_), false) => Err(
            "a PU's Session needs SessionTls::Pu (the CA bundle that vouches for the PEs)".into(),
        ),
    }
}

/// The transport kind a PE registers for a session listener of `transport`, and that a PU's
/// session reaches PEs over: SCTP, or TCP (MPTCP endpoints advertise TCP, RFC 5354 has no
/// MPTCP transport parameter). Sessions refuse UDP and SCTP over UDP before asking.
pub fn transport_kind(transport: Transport) -> TransportKind {
    match transport {
        Transport::Sctp => TransportKind::Sctp,
        Transport::Tcp | Transport::Mptcp | Transport::Udp | Transport::SctpUdp => {
            TransportKind::Tcp
        }
    }
}

/// One session's connection: an SCTP association (each message whole with its PPID), or a byte
/// stream carrying the record framing, plain or inside TLS.
#[derive(Debug)]
enum Conn {
    Stream(TcpStream),
    Sctp(SctpClient),
    /// The TLS session is shared by the reading and the writing copy; it is locked only to
    /// decrypt or encrypt, never across a socket call.
    Tls {
        stream: TcpStream,
        tls: Arc<Mutex<TlsSession>>,
    },
}

/// Runs a TLS handshake over `stream` within `timeout`; the connection and the plaintext that
/// came with the handshake's last records.
fn tls_handshake(
    stream: TcpStream,
    mut tls: TlsSession,
    timeout: Option<Duration>,
) -> io::Result<(Conn, Vec<u8>)> {
    stream.set_read_timeout(timeout)?;
    let early = rserpool_net::handshake_blocking(&mut tls, &stream).map_err(|e| {
        let what = match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                "the peer did not complete it in time".to_owned()
            }
            // (`handshake_blocking`'s own text names a registrar.)
            io::ErrorKind::UnexpectedEof => "the peer closed the connection (does it speak \
                                             TLS, and trust our certificate?)"
                .to_owned(),
            _ => e.to_string(),
        };
        io::Error::new(e.kind(), format!("TLS handshake: {what}"))
    })?;
    stream.set_read_timeout(None)?;
    Ok((
        Conn::Tls {
            stream,
            tls: Arc::new(Mutex::new(tls)),
        },
        early,
    ))
}

/// Locks a connection's TLS session (one that panicked mid-call is broken: its next call
/// fails and the connection closes).
fn lock_tls(tls: &Mutex<TlsSession>) -> MutexGuard<'_, TlsSession> {
    tls.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// records in one write (over TLS, sealed first). Callers write one at a time (TLS records
    /// must go out in the order they were sealed).
    fn write(&self, transmits: &[Transmit]) -> io::Result<()> {
        let framed = || {
            let mut out = Vec::new();
            for t in transmits {
                let record = t
                    .framed()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                out.extend_from_slice(&record);
            }
            io::Result::Ok(out)
        };
        match self {
            Self::Stream(stream) => (&*stream).write_all(&framed()?),
            Self::Tls { stream, tls } => {
                let plain = framed()?;
                let mut out = Vec::new();
                {
                    let mut tls = lock_tls(tls);
                    tls.seal(&plain)?;
                    tls.take_outgoing(&mut out);
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

    /// Closes both directions (over TLS after a `close_notify`, sent as far as the send
    /// timeout lets it), which wakes a read blocked on the connection.
    fn shutdown(&self) {
        let _ = match self {
            Self::Stream(stream) => stream.shutdown(Shutdown::Both),
            Self::Sctp(assoc) => assoc.socket().shutdown(Shutdown::Both),
            Self::Tls { stream, tls } => {
                let mut out = Vec::new();
                {
                    let mut tls = lock_tls(tls);
                    tls.close();
                    tls.take_outgoing(&mut out);
                }
                let _ = (&*stream).write_all(&out);
                stream.shutdown(Shutdown::Both)
            }
        };
    }

    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Stream(stream) => Self::Stream(stream.try_clone()?),
            Self::Sctp(assoc) => Self::Sctp(assoc.try_clone()?),
            Self::Tls { stream, tls } => Self::Tls {
                stream: stream.try_clone()?,
                tls: Arc::clone(tls),
            },
        })
    }

    /// How long a read waits; `None`: for ever.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Self::Stream(stream) | Self::Tls { stream, .. } => stream.set_read_timeout(timeout),
            Self::Sctp(assoc) => assoc.socket().set_read_timeout(timeout),
        }
    }

    /// The names in the peer's verified TLS certificate (`None` without TLS).
    fn peer_names(&self) -> Option<Vec<String>> {
        match self {
            Self::Tls { tls, .. } => lock_tls(tls).peer_names(),
            Self::Stream(_) | Self::Sctp(_) => None,
        }
    }

    /// Blocking I/O, sends waiting at most `send_timeout`, no Nagle on TCP.
    fn set_up(&self, send_timeout: Duration) -> io::Result<()> {
        match self {
            Self::Stream(stream) | Self::Tls { stream, .. } => {
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

/// What one read gave.
enum Step {
    /// An input, or `None`: the peer closed the connection.
    Done(Option<Incoming>),
    /// Nothing whole yet (part of an SCTP message, TLS records without plaintext).
    Part,
}

/// Reads a connection: stream bytes as they come, SCTP messages whole (their parts joined, a
/// message longer than its limit breaks the connection: control messages one ASAP message,
/// data `max_data_len`).
struct Reader {
    conn: Conn,
    buf: Vec<u8>,
    /// The parts of an SCTP message read so far (kept when a read times out between them); on
    /// TLS the plaintext that came with the handshake.
    partial: Vec<u8>,
    max_data_len: usize,
}

impl Reader {
    /// Reads `conn`; `early`: plaintext that came with a TLS handshake, given first.
    fn new(conn: Conn, early: Vec<u8>, max_data_len: usize) -> Self {
        Self {
            conn,
            buf: vec![0u8; READ_CHUNK],
            partial: early,
            max_data_len,
        }
    }

    /// The next input; `None` when the peer closed the connection. With a `deadline`, an error
    /// of kind [`io::ErrorKind::TimedOut`] once it passes with nothing to return (an unfinished
    /// SCTP message is kept for the next call).
    fn next(&mut self, deadline: Option<Instant>) -> io::Result<Option<Incoming>> {
        loop {
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                self.conn.set_read_timeout(Some(left))?;
            }
            match self.read_once() {
                Ok(Step::Done(incoming)) => return Ok(incoming),
                Ok(Step::Part) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // SO_RCVTIMEO expired (EAGAIN).
                Err(e) if deadline.is_some() && e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One read.
    fn read_once(&mut self) -> io::Result<Step> {
        match &self.conn {
            Conn::Stream(stream) => Ok(match (&*stream).read(&mut self.buf)? {
                0 => Step::Done(None),
                n => Step::Done(Some(Incoming::Bytes(self.buf[..n].to_vec()))),
            }),
            Conn::Tls { stream, tls } => {
                if !self.partial.is_empty() {
                    return Ok(Step::Done(Some(Incoming::Bytes(std::mem::take(
                        &mut self.partial,
                    )))));
                }
                let n = (&*stream).read(&mut self.buf)?;
                if n == 0 {
                    return Ok(Step::Done(None));
                }
                let mut plain = Vec::new();
                let closed = lock_tls(tls).receive(&self.buf[..n], &mut plain)?;
                Ok(match (plain.is_empty(), closed) {
                    (false, _) => Step::Done(Some(Incoming::Bytes(plain))),
                    (true, true) => Step::Done(None),
                    (true, false) => Step::Part,
                })
            }
            Conn::Sctp(assoc) => {
                let Some(part) = assoc.recv_part(&mut self.buf)? else {
                    return Ok(Step::Done(None));
                };
                let max = if part.ppid == PPID_CONTROL {
                    MAX_MESSAGE_LEN
                } else {
                    self.max_data_len
                };
                if self.partial.len() + part.len > max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "an SCTP message with PPID {} longer than the limit of {max} bytes",
                            part.ppid
                        ),
                    ));
                }
                self.partial.extend_from_slice(&self.buf[..part.len]);
                if !part.complete {
                    return Ok(Step::Part);
                }
                Ok(Step::Done(Some(Incoming::Record {
                    ppid: part.ppid,
                    payload: std::mem::take(&mut self.partial),
                })))
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

    /// The session started (after [`Self::business_card`], before anything is read): e.g.
    /// keep [`PeerSession::handle`] to send from other threads, or send a first cookie.
    fn on_start(&mut self, _session: &mut PeerSession<'_>) {}

    /// The PU failed over to this PE and echoed the previous PE's cookie (RFC 5352 §3.8):
    /// restore the state from it.
    fn on_cookie_echo(&mut self, session: &mut PeerSession<'_>, cookie: &[u8]);

    /// Application data from the PU.
    fn on_data(&mut self, session: &mut PeerSession<'_>, ppid: u32, payload: &[u8]);

    /// The PU is also a PE and named its failover alternatives (RFC 5352 §3.9).
    fn on_business_card(&mut self, _session: &mut PeerSession<'_>, _pool_elements: &[PeInfo]) {}

    /// A received message was dropped (the session goes on), or the connection broke (it ends,
    /// [`Self::on_closed`] follows with [`CloseReason::Failed`]).
    fn on_error(&mut self, _error: &SessionError) {}

    /// The session ended, and why; its [`SessionHandle`]s now fail with
    /// [`SessionError::Ended`]. Also called, without any other call, on a handler made for a
    /// connection refused because [`SessionOptions::max_sessions`] were under way.
    fn on_closed(&mut self, _reason: &CloseReason) {}
}

/// The sending side of one PE session, shared by its thread and its [`SessionHandle`]s.
///
/// Lock order: `writer`, then `core`. The core is locked only briefly, never across I/O, so
/// that the session's thread can feed it what arrives while another thread's send waits for
/// the socket; the writer is held across a write so that messages go out in the core's order.
#[derive(Debug)]
struct Shared {
    peer: SocketAddr,
    /// The names in the PU's TLS certificate.
    peer_names: Option<Vec<String>>,
    core: Mutex<PeSession>,
    writer: Mutex<Writer>,
    /// When a whole message last came in or went out, in milliseconds since `start`.
    last_activity: AtomicU64,
    start: Instant,
}

/// The sending side's state.
#[derive(Debug)]
enum Writer {
    Open(Conn),
    /// Why the session ended; the connection was shut down and closed (the reader's copy of it
    /// closes when the session's thread ends), nothing is sent any more.
    Ended(CloseReason),
}

impl Writer {
    /// The error for a send after the end.
    fn ended(&self) -> Result<&Conn, SessionError> {
        match self {
            Self::Open(conn) => Ok(conn),
            Self::Ended(reason) => Err(SessionError::Ended {
                reason: reason.to_string(),
            }),
        }
    }
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, PeSession> {
        // A handler that panicked while queueing leaves a usable core (queues only).
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis();
        self.last_activity
            .store(u64::try_from(now).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When the session counts as idle, `idle` after the last whole message either way.
    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_activity.load(Ordering::Relaxed)) + idle
    }

    /// Queues a message with `queue` unless the session ended.
    fn queue(
        &self,
        writer: &Writer,
        queue: impl FnOnce(&mut PeSession) -> Result<(), SessionError>,
    ) -> Result<(), SessionError> {
        writer.ended()?;
        queue(&mut self.core())
    }

    /// Sends what the core has queued, in order. A failed send ends the session: the socket is
    /// shut down, which wakes the session's thread.
    fn flush(&self, writer: &mut Writer) -> Result<(), SessionError> {
        let transmits: Vec<Transmit> = {
            let mut core = self.core();
            std::iter::from_fn(|| core.poll_transmit()).collect()
        };
        let conn = writer.ended()?;
        if transmits.is_empty() {
            return Ok(());
        }
        if let Err(e) = conn.write(&transmits) {
            let error = io_error(format!("send to the PU {}", self.peer), e);
            Self::end_locked(writer, CloseReason::Failed(error.to_string()));
            return Err(error);
        }
        self.touch();
        Ok(())
    }

    /// Ends the session for `reason` unless it ended already, and gives the reason that
    /// holds. Shutting the socket down wakes the session's thread from its read.
    fn end(&self, reason: CloseReason) -> CloseReason {
        Self::end_locked(&mut self.writer(), reason)
    }

    fn end_locked(writer: &mut Writer, reason: CloseReason) -> CloseReason {
        match std::mem::replace(writer, Writer::Ended(reason.clone())) {
            Writer::Open(conn) => {
                conn.shutdown();
                reason
            }
            Writer::Ended(first) => {
                *writer = Writer::Ended(first.clone());
                first
            }
        }
    }

    /// Why the session ended, if it did.
    fn ended(&self) -> Option<CloseReason> {
        match &*self.writer() {
            Writer::Open(_) => None,
            Writer::Ended(reason) => Some(reason.clone()),
        }
    }
}

/// One session as a [`SessionHandler`] sees it in a callback: what it sends goes out together
/// when the callback returns (a send waits while a [`SessionHandle`] of another thread is
/// writing).
#[derive(Debug)]
pub struct PeerSession<'a> {
    shared: &'a Arc<Shared>,
    close: &'a mut bool,
}

impl PeerSession<'_> {
    /// The PU's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }

    /// The names in the PU's verified TLS certificate (its common names, then its subject
    /// alternative names) to authorize it by; `None` without TLS.
    pub fn peer_names(&self) -> Option<&[String]> {
        self.shared.peer_names.as_deref()
    }

    /// RFC 5352 §3.8: sends the session state as ASAP_COOKIE (the PU keeps the latest).
    pub fn send_cookie(&mut self, cookie: &[u8]) -> Result<(), SessionError> {
        let writer = self.shared.writer();
        self.shared.queue(&writer, |core| core.send_cookie(cookie))
    }

    /// Sends application data.
    pub fn send_data(&mut self, ppid: u32, payload: &[u8]) -> Result<(), SessionError> {
        let writer = self.shared.writer();
        self.shared
            .queue(&writer, |core| core.send_data(ppid, payload))
    }

    /// RFC 5352 §3.9: re-sends the business card with a new failover order.
    pub fn send_business_card(&mut self, pool_elements: &[PeInfo]) -> Result<(), SessionError> {
        let writer = self.shared.writer();
        self.shared
            .queue(&writer, |core| core.send_business_card(pool_elements))
    }

    /// Ends the session once what was sent has gone out (the PU fails over to another PE with
    /// the latest cookie, as after a failure).
    pub fn close(&mut self) {
        *self.close = true;
    }

    /// A handle that sends on this session from any thread until it ends.
    pub fn handle(&self) -> SessionHandle {
        SessionHandle {
            shared: Arc::clone(self.shared),
        }
    }
}

/// A live PE session for other threads (timers, background work): clonable, thread-safe.
/// Each call sends at once, after what the session's callbacks queued before it, and waits
/// for the socket at most [`SessionOptions::send_timeout`]; a send that fails ends the
/// session. Once the session ended every call fails with [`SessionError::Ended`].
#[derive(Clone, Debug)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

impl SessionHandle {
    /// The PU's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }

    /// The names in the PU's verified TLS certificate (its common names, then its subject
    /// alternative names) to authorize it by; `None` without TLS.
    pub fn peer_names(&self) -> Option<&[String]> {
        self.shared.peer_names.as_deref()
    }

    /// RFC 5352 §3.8: sends the session state as ASAP_COOKIE (the PU keeps the latest).
    pub fn send_cookie(&self, cookie: &[u8]) -> Result<(), SessionError> {
        self.send(|core| core.send_cookie(cookie))
    }

    /// Sends application data.
    pub fn send_data(&self, ppid: u32, payload: &[u8]) -> Result<(), SessionError> {
        self.send(|core| core.send_data(ppid, payload))
    }

    /// RFC 5352 §3.9: re-sends the business card with a new failover order.
    pub fn send_business_card(&self, pool_elements: &[PeInfo]) -> Result<(), SessionError> {
        self.send(|core| core.send_business_card(pool_elements))
    }

    /// Ends the session once what was sent has gone out (the PU fails over to another PE with
    /// the latest cookie); the handler's `on_closed` gets [`CloseReason::Application`].
    pub fn close(&self) {
        self.shared.end(CloseReason::Application);
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.ended().is_some()
    }

    fn send(
        &self,
        queue: impl FnOnce(&mut PeSession) -> Result<(), SessionError>,
    ) -> Result<(), SessionError> {
        let mut writer = self.shared.writer();
        self.shared.queue(&writer, queue)?;
        self.shared.flush(&mut writer)
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
        check_tls(&options, true).map_err(|e| io_error(format!("listen on {url}"), e))?;
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
            Transport::Udp | Transport::SctpUdp => {
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
            let mut handler = new_handler(peer);
            // At the cap: closed at once, reported, and the loop accepts on.
            if active.load(Ordering::Relaxed) >= self.options.max_sessions {
                stream.shutdown();
                handler.on_closed(&CloseReason::TooManySessions {
                    max: self.options.max_sessions,
                });
                continue;
            }
            let config = self.config.clone();
            let options = self.options.clone();
            let slot = Slot::take(&active);
            // A thread that cannot start drops the closure: the connection closes, the slot is
            // given back.
            let _ = std::thread::Builder::new()
                .name(format!("rserpool-session-{peer}"))
                .spawn(move || serve(stream, peer, config, &options, handler, slot));
        }
        Ok(())
    }
}

/// One of a server's [`SessionOptions::max_sessions`], held while a session runs.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(active))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An accepted connection made ready: blocking, timeouts, the TLS handshake (bounded by the
/// idle timeout); the writing and the reading copy, and plaintext that came with the handshake.
fn set_up_accepted(
    conn: Conn,
    options: &SessionOptions,
    idle: Option<Duration>,
) -> io::Result<(Conn, Conn, Vec<u8>)> {
    // On an error the connection is dropped, which closes it.
    conn.set_up(options.send_timeout)?;
    let (conn, early) = match (conn, &options.tls) {
        (Conn::Stream(stream), Some(SessionTls::Pe(server))) => {
            let tls = server.accept(ClientCertificate::Required).ok_or_else(|| {
                io::Error::other("the PE's TLS has no CA bundle to verify PUs' certificates with")
            })?;
            tls_handshake(stream, tls, idle)?
        }
        (conn, _) => (conn, Vec::new()),
    };
    let reading = conn.try_clone()?;
    Ok((conn, reading, early))
}

/// One PE session on its thread: business card first, then records in, handler calls, records
/// out, until the PU closes, the application closes, the session is idle or the stream breaks.
fn serve<H: SessionHandler>(
    conn: Conn,
    peer: SocketAddr,
    config: PeSessionConfig,
    options: &SessionOptions,
    mut handler: H,
    slot: Slot,
) {
    let idle = Some(options.idle_timeout).filter(|d| !d.is_zero());
    let (conn, reading, early) = match set_up_accepted(conn, options, idle) {
        Ok(set_up) => set_up,
        Err(e) => {
            let error = io_error(format!("set up the connection from {peer}"), e);
            drop(slot);
            handler.on_error(&error);
            handler.on_closed(&CloseReason::Failed(error.to_string()));
            return;
        }
    };
    let peer_names = conn.peer_names();
    let mut reader = Reader::new(reading, early, config.max_data_len);
    // RFC 5352 §3.9: the card is the session's first message.
    let card = handler.business_card();
    let core = match PeSession::new(config.clone(), &card) {
        Ok(core) => core,
        Err(e) => {
            handler.on_error(&e);
            match PeSession::new(config, &[]) {
                Ok(core) => core,
                Err(e) => {
                    conn.shutdown();
                    drop(slot);
                    handler.on_closed(&CloseReason::Failed(e.to_string()));
                    return;
                }
            }
        }
    };
    let shared = Arc::new(Shared {
        peer,
        peer_names,
        core: Mutex::new(core),
        writer: Mutex::new(Writer::Open(conn)),
        last_activity: AtomicU64::new(0),
        start: Instant::now(),
    });
    let mut close = false;
    handler.on_start(&mut PeerSession {
        shared: &shared,
        close: &mut close,
    });
    let reason = loop {
        let events: Vec<PeSessionEvent> = {
            let mut core = shared.core();
            std::iter::from_fn(|| core.poll_event()).collect()
        };
        for event in events {
            let mut session = PeerSession {
                shared: &shared,
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
        if let Err(e) = shared.flush(&mut shared.writer()) {
            // A failed send; a session a handle ended has its reason already.
            if !matches!(e, SessionError::Ended { .. }) {
                handler.on_error(&e);
            }
            break CloseReason::Failed(e.to_string());
        }
        if close {
            break CloseReason::Application;
        }
        match reader.next(idle.map(|idle| shared.idle_deadline(idle))) {
            Ok(Some(Incoming::Bytes(bytes))) => {
                let mut core = shared.core();
                let fed = core.on_stream_bytes(&bytes);
                // Only whole records count as activity: each gives an event.
                if core.has_events() {
                    shared.touch();
                }
                drop(core);
                if let Err(e) = fed {
                    handler.on_error(&e);
                    break CloseReason::Failed(e.to_string());
                }
            }
            Ok(Some(Incoming::Record { ppid, payload })) => {
                shared.touch();
                // A dropped message: the session goes on.
                let dropped = shared.core().on_record(ppid, &payload).err();
                if let Some(e) = dropped {
                    handler.on_error(&e);
                }
            }
            Ok(None) => break CloseReason::PeerClosed,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                // A handle may have sent meanwhile, moving the deadline.
                if let Some(idle) =
                    idle.filter(|&idle| Instant::now() >= shared.idle_deadline(idle))
                {
                    break CloseReason::Idle(idle);
                }
            }
            Err(e) => {
                // A read that fails because a handle ended the session is no error.
                if let Some(reason) = shared.ended() {
                    break reason;
                }
                let error = io_error(format!("receive from the PU {peer}"), e);
                handler.on_error(&error);
                break CloseReason::Failed(error.to_string());
            }
        }
    };
    // The first reason wins: a handle's close or failed send came before what the read saw.
    let reason = shared.end(reason);
    // The server may take another session before the handler hears of this one's end.
    drop(slot);
    handler.on_closed(&reason);
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
        if matches!(options.transport, Transport::Udp | Transport::SctpUdp) {
            return Err(io_error(
                "open a session",
                no_session_transport(options.transport),
            ));
        }
        check_tls(&options, false).map_err(|e| io_error("open a session", e))?;
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
                Ok((stream, early)) => match stream.try_clone() {
                    Ok(reading) => {
                        let tx = self.tx.clone();
                        let reader = Reader::new(reading, early, self.core_max_data_len());
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

    /// Connects to a PE's user transport (its first address), over TLS if the options say;
    /// the connection and plaintext that came with the TLS handshake.
    fn connect(&self, pe: &PeInfo) -> Result<(Conn, Vec<u8>), String> {
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
        match (conn, &self.options.tls) {
            (Conn::Stream(stream), Some(SessionTls::Pu(tls))) => {
                let name = rserpool_net::server_name(tls.server_name.as_deref(), *ip)
                    .map_err(|e| e.to_string())?;
                let session = tls.client.connect(name).map_err(|e| e.to_string())?;
                tls_handshake(stream, session, Some(timeout)).map_err(|e| format!("{url}: {e}"))
            }
            (conn, _) => Ok((conn, Vec::new())),
        }
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
        let input = match reader.next(None) {
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
