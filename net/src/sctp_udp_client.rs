//! The blocking client of SCTP over UDP (RFC 6951, `sctp+udp://`): one association to a
//! registrar's ASAP port (SCTP port 3863) inside one UDP socket, run by the user-space SCTP of
//! [`crate::sctp_udp`], with the API of the kernel-SCTP [`crate::SctpClient`] that a PE or PU
//! holds its registrar with.
//!
//! There is no thread of its own: the threads that call in drive the association. One of them
//! at a time waits on the socket (the "pumping" thread, whichever needs something: a reader for
//! a message, a sender for room in the send buffer, `connect` and `shutdown` for their ends);
//! the others wait until it has taken what arrived. The pumping thread wakes at least every
//! 100 ms and at the association's next deadline, so retransmissions, delayed SACKs and
//! heartbeats are on time while a thread waits; while none waits, timers run at the next call.
//! Messages that arrive while a sender pumps wait in an inbox that the next receive drains.
//!
//! Every handle of [`SctpUdpClient::try_clone`] shares one association; when the last one is
//! dropped with the association still up, it is aborted (the registrar drops its PEs at once).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rserpool_protocol::{ASAP_PORT, MAX_MESSAGE_LEN};

use crate::error::NetError;
use crate::sctp_udp::{
    AssociationHandle, CloseReason, ConnectError, EndpointConfig, EndpointError, EndpointEvent,
    LossReason, SctpUdpEndpoint, SendError,
};
use crate::sys;

/// The longest the pumping thread waits on the socket before it looks at the timers again.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How long [`SctpUdpClient::shutdown`] waits for the SHUTDOWN sequence to complete.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);
/// Datagrams taken in one round of pumping at most (the first waited for, the rest waiting).
const DATAGRAMS_PER_ROUND: usize = 64;
/// Room for the largest UDP payload.
const DATAGRAM_ROOM: usize = 65_536;
/// Room for one datagram to send: a packet of any MTU (1 200 bytes by default, 8 KiB to a
/// loopback peer, `EndpointConfig::loopback_mtu`).
const TRANSMIT_ROOM: usize = 65_536;

/// A blocking SCTP association over UDP to one peer; see the module documentation.
#[derive(Debug)]
pub struct SctpUdpClient {
    shared: Arc<Shared>,
}

/// What the handles of one association share.
#[derive(Debug)]
struct Shared {
    /// Connected to the peer's UDP address: only its datagrams arrive.
    socket: UdpSocket,
    /// The peer's UDP address.
    peer: SocketAddr,
    /// The zero of the endpoint's milliseconds.
    epoch: Instant,
    state: Mutex<State>,
    /// Signalled when the pumping thread has taken what arrived, or stopped pumping.
    progress: Condvar,
    /// The pumping thread's receive buffer.
    datagram: Mutex<Box<[u8]>>,
}

/// The association and what it gave that no caller has taken yet.
#[derive(Debug)]
struct State {
    endpoint: SctpUdpEndpoint,
    association: AssociationHandle,
    /// The handshake completed.
    up: bool,
    /// Messages (PPID, bytes) not yet received.
    inbox: VecDeque<(u32, Vec<u8>)>,
    /// Why the association ended, once it has.
    end: Option<CloseReason>,
    /// The UDP port answered with ICMP port unreachable (a closed port).
    refused: bool,
    /// A thread waits on the socket.
    pumping: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    transmit: Box<[u8]>,
}

impl State {
    /// Sends every datagram the endpoint has due. A datagram the kernel refuses is lost, as on
    /// the wire: the association retransmits.
    fn flush(&mut self, socket: &UdpSocket) {
        while let Some((_, len)) = self.endpoint.poll_transmit(&mut self.transmit) {
            if let Err(e) = socket.send(&self.transmit[..len])
                && e.kind() == io::ErrorKind::ConnectionRefused
            {
                self.refused = true;
            }
        }
    }

    /// Takes the endpoint's events: the handshake's end, messages into the inbox, the
    /// association's end.
    fn take_events(&mut self) {
        let Self {
            endpoint,
            up,
            inbox,
            end,
            ..
        } = self;
        endpoint.poll_events(|_, event| match event {
            EndpointEvent::Connected => *up = true,
            EndpointEvent::Message { ppid, bytes, .. } => inbox.push_back((ppid, bytes.to_vec())),
            EndpointEvent::Closed(reason) => *end = Some(reason),
            EndpointEvent::Accepted { .. } => {}
        });
    }
}

/// A time-out as the socket options take it: zero is refused, as `std` does.
fn check_timeout(timeout: Option<Duration>) -> io::Result<()> {
    if timeout == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a zero time-out is not allowed: give None to wait for ever",
        ));
    }
    Ok(())
}

impl Shared {
    /// Milliseconds since the epoch, the endpoint's clock.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The peer as a URL, for messages.
    fn url(&self) -> String {
        format!("sctp+udp://{}", self.peer)
    }

    /// Waits once for progress, at most until `until` and [`MAX_WAIT`]: on the socket when no
    /// other thread does (taking what arrives, running the timers, sending what is due), else
    /// until the thread that does has taken something. Returns with the state locked again.
    fn wait_once<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        let now = Instant::now();
        let mut wait = until.map_or(MAX_WAIT, |u| u.saturating_duration_since(now).min(MAX_WAIT));
        if state.pumping {
            return self
                .progress
                .wait_timeout(state, wait.max(Duration::from_millis(1)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let now_ms = self.now_ms();
        if let Some(deadline) = state.endpoint.poll_timeout() {
            wait = wait.min(Duration::from_millis(deadline.saturating_sub(now_ms)));
        }
        state.pumping = true;
        drop(state);
        let mut buf = self.datagram.lock().unwrap_or_else(PoisonError::into_inner);
        let first = self
            .socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .and_then(|()| sys::recv_msg(self.socket.as_fd(), &mut buf, &mut [], 0));
        let mut state = self.lock();
        state.pumping = false;
        let now_ms = self.now_ms();
        match first {
            Ok(received) => {
                state
                    .endpoint
                    .handle_datagram(self.peer, &buf[..received.len], now_ms);
                // What else waits, without waiting.
                for _ in 1..DATAGRAMS_PER_ROUND {
                    match sys::recv_msg(self.socket.as_fd(), &mut buf, &mut [], libc::MSG_DONTWAIT)
                    {
                        Ok(received) => {
                            state
                                .endpoint
                                .handle_datagram(self.peer, &buf[..received.len], now_ms);
                        }
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                            state.refused = true;
                        }
                        Err(_) => break,
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => state.refused = true,
            // Nothing arrived in time, or the socket failed: the timers below decide.
            Err(_) => {}
        }
        drop(buf);
        state.endpoint.handle_timeouts(now_ms);
        state.flush(&self.socket);
        state.take_events();
        self.progress.notify_all();
        state
    }

    /// The error of an association that ended with `reason`, or `None` when it ended as this
    /// end asked (SHUTDOWN completed, or aborted by this end): a reader then sees the end.
    fn ended(&self, reason: CloseReason) -> Option<io::Error> {
        let url = self.url();
        let (kind, text) = match reason {
            CloseReason::ShutDown | CloseReason::Lost(LossReason::Aborted) => return None,
            CloseReason::Lost(LossReason::PeerAborted) => (
                io::ErrorKind::ConnectionReset,
                format!(
                    "{url} aborted the SCTP association (it restarted, or refused what was \
                     sent): connect again"
                ),
            ),
            CloseReason::PeerRestarted => (
                io::ErrorKind::ConnectionReset,
                format!("{url} restarted the SCTP association: connect again"),
            ),
            CloseReason::Lost(LossReason::Unreachable) => (
                io::ErrorKind::ConnectionAborted,
                format!(
                    "{url} stopped answering: SCTP gave up after its retransmissions went \
                     unacknowledged; connect again, or to another registrar"
                ),
            ),
            CloseReason::Lost(LossReason::ProtocolViolation(violation)) => (
                io::ErrorKind::ConnectionAborted,
                format!(
                    "{url} broke the SCTP protocol ({violation:?}), so this end aborted the \
                     association; connect again"
                ),
            ),
            CloseReason::ConnectFailed(_) | CloseReason::Cancelled => (
                io::ErrorKind::NotConnected,
                format!("the SCTP association with {url} never came up: connect again"),
            ),
        };
        Some(io::Error::new(kind, text))
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if state.end.is_none() {
            state.endpoint.abort(state.association);
            state.flush(&self.socket);
        }
    }
}

impl SctpUdpClient {
    /// Opens an association with the ASAP port (SCTP port 3863) of the registrar at the UDP
    /// address `address`, waiting at most `timeout` for the handshake. The UDP socket is bound
    /// to `source` if given (on loopback, 127.0.0.2 is another host as far as the registrar can
    /// tell), else to the unspecified address, on a port the kernel picks, which is also this
    /// end's SCTP port; it is connected to `address`, so only the registrar's datagrams arrive.
    pub fn connect(
        address: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Self, NetError> {
        let url = format!("sctp+udp://{address}");
        let fail = |what: String, e| NetError::io(format!("{what} for {url}"), e);
        let local_ip = source.unwrap_or(if address.is_ipv6() {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
        let socket = UdpSocket::bind((local_ip, 0))
            .map_err(|e| fail(format!("bind a UDP socket to {local_ip}"), e))?;
        socket
            .connect(address)
            .map_err(|e| fail("connect the UDP socket".to_owned(), e))?;
        crate::udp::set_dont_fragment(socket.as_fd(), address.is_ipv6())
            .map_err(|e| fail("set IP_MTU_DISCOVER on the UDP socket".to_owned(), e))?;
        let local_port = socket
            .local_addr()
            .map_err(|e| fail("read the UDP socket's address".to_owned(), e))?
            .port();
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).map_err(
            |_| {
                NetError::io(
                    format!("key the SCTP cookies and tags for {url}"),
                    io::Error::other("the system's random source failed"),
                )
            },
        )?;
        let mut config = EndpointConfig::client(local_port);
        config.association.max_message_size = MAX_MESSAGE_LEN;
        config.max_associations = 1;
        let mut endpoint = SctpUdpEndpoint::new(config, secret);
        let association = endpoint
            .connect(address, ASAP_PORT, 0)
            .map_err(|e| fail("open an SCTP association".to_owned(), io::Error::other(e)))?;
        let shared = Arc::new(Shared {
            socket,
            peer: address,
            epoch: Instant::now(),
            state: Mutex::new(State {
                endpoint,
                association,
                up: false,
                inbox: VecDeque::new(),
                end: None,
                refused: false,
                pumping: false,
                read_timeout: None,
                write_timeout: None,
                transmit: vec![0; TRANSMIT_ROOM].into_boxed_slice(),
            }),
            progress: Condvar::new(),
            datagram: Mutex::new(vec![0; DATAGRAM_ROOM].into_boxed_slice()),
        });
        let deadline = Instant::now() + timeout;
        let mut state = shared.lock();
        state.flush(&shared.socket);
        let port = address.port();
        let failure = loop {
            if state.up {
                break None;
            }
            if state.refused {
                break Some((
                    io::ErrorKind::ConnectionRefused,
                    format!(
                        "UDP port {port} of {} is closed (ICMP port unreachable): nothing serves \
                         SCTP over UDP there; give the UDP port of the registrar's sctp+udp \
                         listener (9899 by default), or, for a kernel-SCTP registrar, turn on its \
                         encapsulation with `sysctl -w net.sctp.udp_port={port}` and \
                         `net.sctp.encap_port={port}`",
                        address.ip()
                    ),
                ));
            }
            match state.end {
                Some(CloseReason::ConnectFailed(ConnectError::Aborted)) => {
                    break Some((
                        io::ErrorKind::ConnectionRefused,
                        format!(
                            "the peer at UDP port {port} refused the association (ABORT): it \
                             serves no SCTP port {ASAP_PORT} (ASAP) there; give the registrar's \
                             sctp+udp:// address"
                        ),
                    ));
                }
                Some(CloseReason::ConnectFailed(ConnectError::InvalidInitAck)) => {
                    break Some((
                        io::ErrorKind::InvalidData,
                        format!(
                            "the peer at UDP port {port} answered with an invalid INIT ACK (no \
                             tag, streams or cookie): it is not an SCTP endpoint this client \
                             can use"
                        ),
                    ));
                }
                Some(_) => {
                    break Some((
                        io::ErrorKind::TimedOut,
                        format!("the SCTP handshake over UDP port {port} gave up"),
                    ));
                }
                None => {}
            }
            if Instant::now() >= deadline {
                break Some((
                    io::ErrorKind::TimedOut,
                    format!(
                        "nothing answered on UDP port {port} of {} within {timeout:?}: is a \
                         registrar's sctp+udp listener there (a firewall may drop UDP)? A \
                         kernel-SCTP registrar answers over UDP only with `sysctl -w \
                         net.sctp.udp_port={port}` and `net.sctp.encap_port={port}`",
                        address.ip()
                    ),
                ));
            }
            state = shared.wait_once(state, Some(deadline));
        };
        drop(state);
        match failure {
            None => Ok(Self { shared }),
            Some((kind, text)) => Err(NetError::io(
                format!("connect to {url}"),
                io::Error::new(kind, text),
            )),
        }
    }

    /// Sends `message` as one SCTP message with PPID `ppid` on stream 0. It leaves at once when
    /// the congestion window allows; while the send buffer is full, this thread takes the
    /// peer's acknowledgements itself until there is room, or fails with `WouldBlock` when the
    /// write time-out passes first.
    pub fn send(&self, ppid: u32, message: &[u8]) -> io::Result<()> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        let deadline = state.write_timeout.map(|t| Instant::now() + t);
        loop {
            let now_ms = shared.now_ms();
            state.endpoint.handle_timeouts(now_ms);
            let association = state.association;
            let sent = state.endpoint.send(association, 0, ppid, message, now_ms);
            match sent {
                Ok(()) => {
                    state.flush(&shared.socket);
                    return Ok(());
                }
                Err(EndpointError::Send(SendError::BufferFull { needed, free })) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(io::Error::new(
                            io::ErrorKind::WouldBlock,
                            format!(
                                "the SCTP send buffer towards {} stayed full for the write \
                                 time-out ({free} bytes free, the message needs {needed}): the \
                                 peer acknowledges too slowly; try again later",
                                shared.url()
                            ),
                        ));
                    }
                    state = shared.wait_once(state, deadline);
                }
                Err(EndpointError::Send(SendError::Closed) | EndpointError::NoSuchAssociation) => {
                    state.take_events();
                    return Err(state
                        .end
                        .and_then(|reason| shared.ended(reason))
                        .unwrap_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::BrokenPipe,
                                format!(
                                    "the SCTP association with {} is shut down: connect again \
                                     to send",
                                    shared.url()
                                ),
                            )
                        }));
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string())),
            }
        }
    }

    /// Receives the next message with its PPID; `None` once the association is shut down (by
    /// either side, after every message that came before). Waits at most the read time-out
    /// (`WouldBlock` then); a peer's ABORT gives `ConnectionReset`, a peer that stopped
    /// answering or broke the protocol `ConnectionAborted`, each saying why.
    pub fn recv(&self) -> io::Result<Option<(u32, Vec<u8>)>> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        let deadline = state.read_timeout.map(|t| Instant::now() + t);
        loop {
            state.take_events();
            if let Some(message) = state.inbox.pop_front() {
                return Ok(Some(message));
            }
            if let Some(reason) = state.end {
                return shared.ended(reason).map_or(Ok(None), Err);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("no message from {} within the read time-out", shared.url()),
                ));
            }
            state = shared.wait_once(state, deadline);
        }
    }

    /// A second handle on the same association (a reader thread and senders at once).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            shared: Arc::clone(&self.shared),
        })
    }

    /// Bounds how long [`Self::recv`] waits (`None`: for ever), for every handle.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.shared.lock().read_timeout = timeout;
        Ok(())
    }

    /// Bounds how long [`Self::send`] waits for room in the send buffer (`None`: for ever), for
    /// every handle.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.shared.lock().write_timeout = timeout;
        Ok(())
    }

    /// Shuts the association down gracefully (RFC 4960 §9.2): what was sent is acknowledged,
    /// then SHUTDOWN, SHUTDOWN ACK, SHUTDOWN COMPLETE; a reader then sees the end. Waits at most
    /// 3 s for the peer, then aborts the association and fails with `TimedOut`.
    pub fn shutdown(&self) -> io::Result<()> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        let association = state.association;
        state.endpoint.close(association);
        state.flush(&shared.socket);
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        loop {
            state.take_events();
            if state.end.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                state.endpoint.abort(association);
                state.flush(&shared.socket);
                state.take_events();
                shared.progress.notify_all();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not complete the SCTP SHUTDOWN within {SHUTDOWN_WAIT:?}: the \
                         association was aborted",
                        shared.url()
                    ),
                ));
            }
            state = shared.wait_once(state, Some(deadline));
        }
    }

    /// The UDP socket's local address (its port is also this end's SCTP port).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.socket.local_addr()
    }

    /// The peer's UDP address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }
}
