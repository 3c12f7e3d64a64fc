//! SCTP over UDP (RFC 6951, `sctp+udp://`) for the load generator: a [`Hub`] is one
//! non-blocking UDP socket per client thread carrying all its associations, each an
//! [`SctpUdpLink`] that [`crate::tls::SecureStream`] reads and writes like a byte stream of ASAP
//! messages (each received message padded to 4 bytes as stream framing has it; each whole frame
//! written sent as one message with PPID 11). Reading or writing on any link of a hub moves the
//! whole hub: every datagram that waits is taken, the timers run (once a millisecond), and what
//! is due is sent.
//!
//! Two SCTP endpoints have one association between a pair of ports, so each association of a
//! hub has an endpoint (`rserpool_net::sctp_udp::SctpUdpEndpoint`) of its own on a local SCTP
//! port of its own, and the hub hands each datagram to the endpoint of its destination port.
//!
//! Blocking links (the setup's and the end of a run's reads and writes) wait on the socket
//! itself, holding the hub: a hub serves one thread at a time.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rserpool_net::sctp_udp::{
    AssociationHandle, CloseReason, EndpointConfig, EndpointError, EndpointEvent, LossReason,
    SctpUdpEndpoint, SendError, destination_port, random_secret,
};
use rserpool_protocol::{ASAP_PORT, PPID_ASAP};

use crate::tls::whole_frame;

/// Datagrams one move of a hub takes at most.
const DATAGRAMS_PER_MOVE: usize = 256;
/// How long a handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a blocking wait sleeps on the socket before it looks at the timers again.
const MAX_WAIT: Duration = Duration::from_millis(20);
/// Room for one datagram to send: a packet of any MTU (1 200 bytes by default, 8 KiB to a
/// loopback peer).
const TRANSMIT_ROOM: usize = 65_536;

/// One UDP socket and the associations on it; cloned handles share them.
#[derive(Clone, Debug)]
pub struct Hub {
    state: Arc<Mutex<HubState>>,
}

/// The socket, and each association by its local SCTP port.
#[derive(Debug)]
struct HubState {
    socket: UdpSocket,
    /// The zero of the endpoints' milliseconds.
    epoch: Instant,
    links: HashMap<u16, LinkState>,
    /// Local ports whose endpoints may have datagrams or events.
    touched: Vec<u16>,
    /// When the timers last ran.
    timers_ran: u64,
    /// The local SCTP port the next association tries.
    next_port: u16,
    datagram: Box<[u8]>,
    transmit: Box<[u8]>,
    /// A datagram the socket had no room for, to send first.
    pending: Option<(SocketAddr, Vec<u8>)>,
}

/// One association: its endpoint and what it received.
#[derive(Debug)]
struct LinkState {
    endpoint: SctpUdpEndpoint,
    handle: AssociationHandle,
    /// Received messages, each padded to 4 bytes, not yet read from `read` on.
    inbox: Vec<u8>,
    read: usize,
    connected: bool,
    /// Why the association ended, once it has.
    end: Option<CloseReason>,
    /// A message shorter than its ASAP header says arrived.
    broken: bool,
}

/// One association of a [`Hub`], read and written as a byte stream of ASAP messages.
#[derive(Debug)]
pub struct SctpUdpLink {
    hub: Hub,
    /// Its local SCTP port, which names it in the hub.
    port: u16,
    peer: SocketAddr,
    blocking: Cell<bool>,
    read_timeout: Cell<Option<Duration>>,
    write_timeout: Cell<Option<Duration>>,
}

/// Appends `message` to `inbox` padded to its frame's length (the header's, rounded up to 4);
/// false when its header disagrees with it.
fn push_frame(inbox: &mut Vec<u8>, message: &[u8]) -> bool {
    let Some(&[high, low]) = message.get(2..4) else {
        return false;
    };
    let length = usize::from(u16::from_be_bytes([high, low]));
    if length < 4 || length > message.len() {
        return false;
    }
    inbox.extend_from_slice(&message[..length]);
    inbox.resize(inbox.len() + length.next_multiple_of(4) - length, 0);
    true
}

impl LinkState {
    /// Takes the endpoint's events: the handshake's end, messages into the inbox, the end.
    fn take_events(&mut self) {
        let Self {
            endpoint,
            inbox,
            connected,
            end,
            broken,
            ..
        } = self;
        endpoint.poll_events(|_, event| match event {
            EndpointEvent::Connected => *connected = true,
            EndpointEvent::Message { bytes, .. } => {
                if !push_frame(inbox, bytes) {
                    *broken = true;
                }
            }
            EndpointEvent::Closed(reason) => *end = Some(reason),
            EndpointEvent::Accepted { .. } => {}
        });
    }
}

impl HubState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The state of the link on local port `port`.
    fn link(&mut self, port: u16) -> &mut LinkState {
        self.links
            .get_mut(&port)
            .expect("a link's state lives as long as the link")
    }

    /// Hands the `len` bytes received from `from` to the endpoint of their destination port.
    fn take_datagram(&mut self, len: usize, from: SocketAddr, now: u64) {
        let packet = &self.datagram[..len];
        let Some(port) = destination_port(packet) else {
            return;
        };
        if let Some(link) = self.links.get_mut(&port) {
            link.endpoint.handle_datagram(from, packet, now);
            self.touched.push(port);
        }
    }

    /// Takes every datagram that waits, runs the timers due (once a millisecond), sends what
    /// is due and takes the events; returns whether anything moved.
    fn pump(&mut self) -> bool {
        let mut moved = false;
        let now = self.now_ms();
        for _ in 0..DATAGRAMS_PER_MOVE {
            match self.socket.recv_from(&mut self.datagram) {
                Ok((n, from)) => {
                    self.take_datagram(n, from, now);
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Nothing more now (or an ICMP error the associations' timers deal with).
                Err(_) => break,
            }
        }
        if now != self.timers_ran {
            self.timers_ran = now;
            for (port, link) in &mut self.links {
                if link.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                    link.endpoint.handle_timeouts(now);
                    self.touched.push(*port);
                }
            }
        }
        self.flush() || moved
    }

    /// Sends the datagrams of the touched endpoints and takes their events, until the socket
    /// has no room; returns whether any datagram left.
    fn flush(&mut self) -> bool {
        let mut moved = false;
        if let Some((to, bytes)) = &self.pending {
            match self.socket.send_to(bytes, to) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                // Sent, or lost as on the wire: the association retransmits.
                _ => self.pending = None,
            }
            moved = true;
        }
        while let Some(port) = self.touched.pop() {
            let Some(link) = self.links.get_mut(&port) else {
                continue;
            };
            link.take_events();
            while let Some((to, len)) = link.endpoint.poll_transmit(&mut self.transmit) {
                moved = true;
                if let Err(e) = self.socket.send_to(&self.transmit[..len], to)
                    && e.kind() == ErrorKind::WouldBlock
                {
                    self.pending = Some((to, self.transmit[..len].to_vec()));
                    // The rest of this endpoint's datagrams next time.
                    self.touched.push(port);
                    return moved;
                }
            }
        }
        moved
    }

    /// Waits on the socket for a datagram, at most `timeout` and until the next timer, then
    /// moves the hub.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        let now = self.now_ms();
        let timer = self
            .links
            .values()
            .filter_map(|l| l.endpoint.poll_timeout())
            .min()
            .map_or(MAX_WAIT, |t| Duration::from_millis(t.saturating_sub(now)));
        let wait = timeout
            .min(timer)
            .min(MAX_WAIT)
            .max(Duration::from_millis(1));
        self.socket.set_nonblocking(false)?;
        self.socket.set_read_timeout(Some(wait))?;
        let received = self.socket.recv_from(&mut self.datagram);
        self.socket.set_nonblocking(true)?;
        if let Ok((n, from)) = received {
            let now = self.now_ms();
            self.take_datagram(n, from, now);
        }
        self.pump();
        Ok(())
    }

    /// A local SCTP port no association of the hub uses.
    fn free_port(&mut self) -> io::Result<u16> {
        for _ in 0..=u16::MAX {
            let port = self.next_port;
            self.next_port = self.next_port.checked_add(1).unwrap_or(1);
            if port != 0 && !self.links.contains_key(&port) {
                return Ok(port);
            }
        }
        Err(io::Error::new(
            ErrorKind::AddrInUse,
            "every SCTP port of the hub's UDP socket holds an association: use more --threads",
        ))
    }
}

impl Hub {
    /// A non-blocking UDP socket on the local address towards `target` (the address PEs
    /// advertise), port 0.
    pub fn new(target: SocketAddr) -> io::Result<Self> {
        let ip = rserpool_net::local_ip_towards(target)?;
        let socket = UdpSocket::bind((ip, 0))?;
        socket.set_nonblocking(true)?;
        // As the registrar's: Don't Fragment, no shared IP identification counter.
        rserpool_net::set_dont_fragment(std::os::fd::AsFd::as_fd(&socket), ip.is_ipv6())?;
        let next_port = socket.local_addr()?.port();
        Ok(Self {
            state: Arc::new(Mutex::new(HubState {
                socket,
                epoch: Instant::now(),
                links: HashMap::new(),
                touched: Vec::new(),
                timers_ran: 0,
                next_port,
                datagram: vec![0; 65_536].into_boxed_slice(),
                transmit: vec![0; TRANSMIT_ROOM].into_boxed_slice(),
                pending: None,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens an association with the ASAP port (SCTP port 3863) at the UDP address `peer`
    /// from a local SCTP port of its own (an endpoint keyed from the system's random source),
    /// waiting for its handshake; the link is blocking.
    pub fn connect(&self, peer: SocketAddr) -> io::Result<SctpUdpLink> {
        let mut hub = self.lock();
        let now = hub.now_ms();
        let port = hub.free_port()?;
        let mut endpoint = SctpUdpEndpoint::new(EndpointConfig::client(port), random_secret()?);
        let handle = endpoint
            .connect(peer, ASAP_PORT, now)
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e.to_string()))?;
        hub.links.insert(
            port,
            LinkState {
                endpoint,
                handle,
                inbox: Vec::new(),
                read: 0,
                connected: false,
                end: None,
                broken: false,
            },
        );
        hub.touched.push(port);
        let link = SctpUdpLink {
            hub: self.clone(),
            port,
            peer,
            blocking: Cell::new(true),
            read_timeout: Cell::new(None),
            write_timeout: Cell::new(None),
        };
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        hub.pump();
        loop {
            let state = hub.link(port);
            if state.connected {
                return Ok(link);
            }
            if let Some(reason) = state.end {
                return Err(io::Error::new(
                    ErrorKind::ConnectionRefused,
                    format!(
                        "the SCTP handshake over UDP port {} failed ({reason:?}): is an \
                         sctp+udp listener there?",
                        peer.port()
                    ),
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "nothing answered on UDP port {} of {} within {CONNECT_TIMEOUT:?}: is \
                         an sctp+udp listener there?",
                        peer.port(),
                        peer.ip()
                    ),
                ));
            }
            hub.wait(left)?;
        }
    }
}

impl SctpUdpLink {
    /// The error of an association that ended, or `None` when it was shut down (the end of
    /// the stream).
    fn ended(&self, state: &LinkState) -> Option<io::Error> {
        if state.broken {
            return Some(io::Error::new(
                ErrorKind::InvalidData,
                "an SCTP message whose length field disagrees with it",
            ));
        }
        let (kind, why) = match state.end? {
            CloseReason::ShutDown | CloseReason::Lost(LossReason::Aborted) => return None,
            CloseReason::Lost(LossReason::PeerAborted) => (
                ErrorKind::ConnectionReset,
                "the peer aborted the association".to_owned(),
            ),
            CloseReason::Lost(LossReason::Unreachable) => (
                ErrorKind::ConnectionAborted,
                "the peer stopped answering".to_owned(),
            ),
            other => (
                ErrorKind::ConnectionAborted,
                format!("the association ended ({other:?})"),
            ),
        };
        Some(io::Error::new(
            kind,
            format!("sctp+udp://{}: {why}", self.peer),
        ))
    }

    /// Sets whether reads and writes wait.
    pub fn set_nonblocking(&self, nonblocking: bool) {
        self.blocking.set(!nonblocking);
    }

    /// Bounds how long a blocking read waits.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        self.read_timeout.set(timeout);
    }

    /// Bounds how long a blocking write waits for room in the send buffer.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) {
        self.write_timeout.set(timeout);
    }

    /// The hub's UDP socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.hub.lock().socket.local_addr()
    }

    /// Reads received messages (padded frames) into `buf`: what waits, else what the hub
    /// takes now; 0 at the end of a shut-down association; `WouldBlock` when nothing came (a
    /// blocking link waits up to its read time-out first).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = self.read_timeout.get().map(|t| Instant::now() + t);
        let mut hub = self.hub.lock();
        let mut pumped = false;
        loop {
            let state = hub.link(self.port);
            if state.read < state.inbox.len() {
                let n = buf.len().min(state.inbox.len() - state.read);
                buf[..n].copy_from_slice(&state.inbox[state.read..state.read + n]);
                state.read += n;
                if state.read == state.inbox.len() {
                    state.inbox.clear();
                    state.read = 0;
                }
                return Ok(n);
            }
            if state.broken || state.end.is_some() {
                return self.ended(state).map_or(Ok(0), Err);
            }
            if !pumped {
                hub.pump();
                pumped = true;
                continue;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !self.blocking.get() || left.is_some_and(|l| l.is_zero()) {
                return Err(ErrorKind::WouldBlock.into());
            }
            hub.wait(left.unwrap_or(MAX_WAIT))?;
        }
    }

    /// Sends the whole frames at the start of `buf`, each as one message with PPID 11, as far
    /// as the send buffer has room; returns the bytes of those taken (`WouldBlock` if none
    /// were, after the write time-out on a blocking link).
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let deadline = self.write_timeout.get().map(|t| Instant::now() + t);
        let mut hub = self.hub.lock();
        loop {
            let now = hub.now_ms();
            let state = hub.link(self.port);
            let mut taken = 0;
            let mut refused = None;
            while let Some(len) = whole_frame(&buf[taken..]) {
                let frame = &buf[taken..taken + len];
                match state.endpoint.send(state.handle, 0, PPID_ASAP, frame, now) {
                    Ok(()) => taken += len,
                    Err(EndpointError::Send(SendError::BufferFull { .. })) => break,
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
            hub.touched.push(self.port);
            hub.pump();
            if taken > 0 || buf.is_empty() {
                return Ok(taken);
            }
            if let Some(e) = refused {
                let state = hub.link(self.port);
                return Err(self.ended(state).unwrap_or_else(|| {
                    io::Error::new(
                        ErrorKind::BrokenPipe,
                        format!("sctp+udp://{}: {e}", self.peer),
                    )
                }));
            }
            if whole_frame(buf).is_none() {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    "bytes that are not a whole ASAP message cannot go out over SCTP",
                ));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !self.blocking.get() || left.is_some_and(|l| l.is_zero()) {
                return Err(ErrorKind::WouldBlock.into());
            }
            hub.wait(left.unwrap_or(MAX_WAIT))?;
        }
    }
}

impl Drop for SctpUdpLink {
    /// Aborts the association (the registrar drops it at once) and forgets it.
    fn drop(&mut self) {
        let mut hub = self.hub.lock();
        let state = hub.link(self.port);
        let handle = state.handle;
        state.endpoint.abort(handle);
        hub.touched.push(self.port);
        hub.flush();
        hub.links.remove(&self.port);
    }
}
