//! The io_uring driver: one ring per worker thread (`SINGLE_ISSUER | DEFER_TASKRUN`), with the
//! same contract as the epoll driver. It owns how each socket is served on the ring:
//!
//! - TCP and MPTCP listeners: a multishot accept, submitted again when a completion comes without
//!   `F_MORE`.
//! - Connections: a multishot receive into the worker's provided-buffer ring (`io.buffer_count`
//!   buffers of `io.buffer_size` bytes); every buffer goes back to the ring as soon as its bytes
//!   are framed or copied, and a receive that ran out of buffers (`ENOBUFS`) is submitted again.
//!   The replies of a loop turn leave in one send per connection, from the connection's write
//!   buffer lent to the kernel until the send completes; at most one send per connection is in
//!   flight, and what a short send leaves goes first in the next.
//! - Backpressure: a connection whose replies pass ``limits.max_buffered_bytes_per_connection`` has its receive
//!   cancelled and its remaining messages held until the replies drain, then it is read again.
//! - UDP listeners: a multishot `recvmsg` into the same buffer ring; replies are io_uring sends
//!   with a destination address, batched into the loop's one `io_uring_enter` (rather than one
//!   `sendto` system call each), and dropped when the socket buffer is full, as epoll's
//!   non-blocking `sendto` drops them. Announces and CSP reports (a few a second) keep `sendto`.
//! - SCTP listeners and the associations peeled off them: a multishot `recvmsg` into the same
//!   buffer ring, so that a completion brings each message or notification with its `msg_flags`
//!   and `SCTP_RCVINFO` and no system call reads them (a message larger than a buffer comes in
//!   parts, joined in `state`). A turn's SCTP messages are submitted at its end, in order, as
//!   non-waiting sends (`MSG_DONTWAIT`) that leave with the turn's one `io_uring_enter`: a plain
//!   `send` on a peeled-off association (its default PPID is set once, when it is peeled off), a
//!   `sendmsg` with `SCTP_SNDINFO` on a listener. Sends on one socket are issued in order; one
//!   that finds the send buffer full comes back and waits, with every later one of its socket,
//!   for the end of the next turn, when peers that stopped reading are aborted and the messages
//!   tried once more (`state`, as with epoll). Should a later message of the socket have left
//!   meanwhile (the peer acknowledged between the two), the waiting one is dropped rather than
//!   sent out of order.
//! - The worker's eventfd (woken by other workers' mailbox posts) and the stop flag: a multishot
//!   poll. Timers: the wait's timeout (`IORING_ENTER_EXT_ARG`), at most one second.
//!
//! A connection that closes leaves the core at once (as with epoll); its slot and socket are kept
//! until the kernel reported the last completion of its operations, so a descriptor number is
//! never reused while an operation may still name it.

mod ring;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rserpool_handlespace::{FastMap, Millis, PinnedReader};
use rserpool_net::{
    NetError, SctpAssocId, Transport, configure_accepted, connect_outcome, connect_stream,
    sctp_send_control,
};

use super::conn::{Closed, StreamConn};
use super::state::{LoopState, Transmitter};
use super::{Listener, WorkerSetup};
use crate::core::Connect;
use crate::metrics::Protocol;
use ring::{Completion, Ring, SendId};

/// The token of the poll on the worker's eventfd (listeners and connections use their index).
const WAKE: u64 = ring::MAX_TOKEN;
/// Room in each receive buffer for the `recvmsg` header and the source address of a datagram
/// or the control messages of an SCTP message.
const RECVMSG_HEADROOM: usize = 128;
/// SCTP send tokens: the socket index in the low 32 bits, the send's sequence number in its
/// socket above them (24 bits, within the ring's 56-bit tokens).
const SCTP_SEQ_SHIFT: u32 = 32;
const SCTP_SEQ_MASK: u32 = (1 << 24) - 1;

/// Where a connection's multishot receive stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Receiving {
    Armed,
    Cancelling,
    Off,
}

struct Conn {
    stream: StreamConn<socket2::Socket>,
    transport: Transport,
    recv: Receiving,
    send: Option<SendId>,
    /// An outgoing connection (ENRP) whose writability poll is in flight: not established yet.
    connecting: bool,
    /// Closed in the core; the slot waits for the last completions.
    closed: bool,
}

struct Loop {
    ring: Ring,
    state: LoopState,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections with replies queued this turn.
    dirty: Vec<usize>,
    /// Associations the core asked to abort, after this turn's replies.
    /// Per SCTP socket, its sends on the ring not completed yet.
    sctp_flights: FastMap<usize, SctpFlight>,
    /// Loop turns so far.
    turn: u64,
    stopping: bool,
}

/// The SCTP sends of one socket on the ring, in the order they were issued.
#[derive(Debug, Default)]
struct SctpFlight {
    /// (sequence number, association) of each send not completed yet.
    sends: VecDeque<(u32, SctpAssocId)>,
    /// The next send's sequence number.
    next: u32,
    /// The turn that last submitted sends.
    turn: u64,
    /// Sends that found the send buffer full, in order, until the flight's last completion.
    full: Vec<(SctpAssocId, Vec<u8>)>,
}

/// Runs one worker on io_uring until a stop is requested and the replies are flushed.
pub fn run(setup: WorkerSetup) -> io::Result<()> {
    let io = setup.io;
    let mut ring = Ring::new(
        io.ring_entries,
        io.buffer_count,
        io.buffer_size.max(io.max_message_size) + RECVMSG_HEADROOM,
    )?;
    if !ring.deferred_taskrun() {
        tracing::info!(
            worker = setup.worker.index(),
            "the kernel refuses IORING_SETUP_DEFER_TASKRUN; the ring uses COOP_TASKRUN"
        );
    }
    ring.poll_readable(setup.shared.wakers[setup.worker.index()].as_fd(), WAKE)?;
    for (i, l) in setup.listeners.iter().enumerate() {
        arm_listener(&mut ring, l, i)?;
    }
    let mut l = Loop {
        ring,
        state: LoopState::start(setup),
        conns: Vec::new(),
        free: Vec::new(),
        dirty: Vec::new(),
        sctp_flights: FastMap::default(),
        turn: 0,
        stopping: false,
    };
    l.run()
}

/// Submits the multishot operation that serves listener `i`.
fn arm_listener(ring: &mut Ring, listener: &Listener, i: usize) -> io::Result<()> {
    match listener {
        Listener::Stream { socket, .. } => ring.accept(socket.as_fd(), i as u64),
        Listener::Udp { socket, .. } => ring.recv_datagrams(socket.as_fd(), i as u64),
        Listener::Sctp { socket, .. } => ring.recv_sctp(socket.as_fd(), i as u64),
    }
}

/// Whether an error only says that an operation ended (cancelled, or out of buffers): it is
/// submitted again if still wanted.
fn ended(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ECANCELED | libc::ENOBUFS))
}

impl Loop {
    fn run(&mut self) -> io::Result<()> {
        let reader = self.state.worker.reader().clone();
        loop {
            if self.state.shared.stopping() {
                return self.drain_and_stop();
            }
            self.state.reload_config();
            self.turn += 1;
            let idle_start = self.state.idle_since();
            self.wait(idle_start)?;
            let busy_start = Instant::now();
            let now = self.state.shared.millis_at(busy_start);
            // Every shard's map is pinned for the turn: its resolutions read through the pin
            // instead of entering and leaving the map's epoch each.
            let reads = reader.pin();
            self.state.begin_turn(now);
            let mut events = 0;
            while events < self.state.io.max_batch.max(1) {
                let Some(c) = self.ring.next() else {
                    break;
                };
                self.complete(c, now, &reads)?;
                events += 1;
            }
            self.state.drain_mailbox(now);
            self.state.run_timers(now);
            self.state.run_sctp_udp_timers(now, &reads);
            self.route_output()?;
            self.finish_output(now)?;
            self.watch_peeled_sctp()?;
            self.state.worker.end_turn();
            drop(reads);
            self.state.finish_turn(idle_start, busy_start, events);
        }
    }

    /// Submits this turn's operations and waits for completions: not at all when some wait,
    /// spinning first when busy polling is on, else until the next timer.
    fn wait(&mut self, idle_start: Instant) -> io::Result<()> {
        if self.ring.has_completions() {
            return self.ring.submit();
        }
        let timeout = self.state.timeout();
        let spin = Duration::from_micros(self.state.io.busy_poll_us).min(timeout);
        while !spin.is_zero() && idle_start.elapsed() < spin {
            self.ring.submit_and_wait(Duration::ZERO)?;
            if self.ring.has_completions() {
                return Ok(());
            }
        }
        self.ring.submit_and_wait(timeout)
    }

    fn complete(&mut self, c: Completion, now: Millis, reads: &PinnedReader<'_>) -> io::Result<()> {
        match c {
            Completion::Accept {
                token,
                result,
                more,
            } => {
                let i = token as usize;
                if !more && !self.stopping {
                    arm_listener(&mut self.ring, &self.state.listeners[i], i)?;
                }
                match result {
                    Ok(fd) => self.accepted(i, fd, now)?,
                    Err(e) if ended(&e) => {}
                    Err(e) => {
                        if let Listener::Stream { url, .. } = &self.state.listeners[i] {
                            tracing::warn!(listener = %url, %e, "accept failed");
                        }
                    }
                }
            }
            Completion::Recv {
                token,
                result,
                more,
            } => self.received(token as usize, result, more, now, reads)?,
            Completion::Datagram {
                token,
                result,
                more,
            } => {
                let i = token as usize;
                if !more && !self.stopping {
                    arm_listener(&mut self.ring, &self.state.listeners[i], i)?;
                }
                match result {
                    Ok(buf) => {
                        if let Some((from, payload)) = self.ring.datagram(&buf) {
                            self.state.on_datagram(i, from, payload, now, reads);
                        }
                        self.ring.recycle(buf);
                        self.route_output()?;
                    }
                    Err(e) if ended(&e) => {}
                    Err(e) => tracing::debug!(%e, "UDP receive failed"),
                }
            }
            Completion::Poll {
                token,
                result,
                more,
            } => {
                if token == WAKE {
                    let index = self.state.worker.index();
                    self.state.shared.wakers[index].reset();
                    if !more {
                        self.ring
                            .poll_readable(self.state.shared.wakers[index].as_fd(), WAKE)?;
                    }
                } else if let Err(e) = result {
                    tracing::debug!(token, %e, "poll failed");
                }
            }
            Completion::SctpMessage {
                token,
                result,
                more,
            } => self.sctp_received(token as usize, result, more, now, reads)?,
            Completion::SctpSent { token, result, buf } => self.sctp_sent(token, result, buf),
            Completion::Sent {
                token,
                result,
                buf,
                from,
            } => self.sent(token as usize, result, buf, from, now, reads)?,
            Completion::SentTo { result } => {
                if let Err(e) = result {
                    tracing::debug!(%e, "datagram not sent");
                }
            }
            Completion::Writable { token } => self.connect_done(token as usize, now)?,
        }
        Ok(())
    }

    fn free_slot(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        })
    }

    /// Starts the outgoing ENRP connections the worker asked for (TCP and MPTCP).
    fn start_connects(&mut self, now: Millis) -> io::Result<()> {
        for connect in self.state.take_connects() {
            if let Err(e) = self.start_connect(&connect)? {
                self.state.connect_failed(&connect, &e, now);
            }
        }
        Ok(())
    }

    /// Starts one connection; the outer error is the ring's, the inner one the connection's.
    fn start_connect(&mut self, connect: &Connect) -> io::Result<Result<(), NetError>> {
        match connect.url.transport {
            Transport::Sctp => return Ok(self.state.start_sctp_connect(connect)),
            Transport::SctpUdp => return Ok(self.state.start_sctp_udp_connect(connect)),
            Transport::Tcp | Transport::Mptcp | Transport::Udp => {}
        }
        let tls = match self.state.tls_session(&connect.url, true) {
            Ok(tls) => tls,
            Err(e) => return Ok(Err(e)),
        };
        let socket = match connect_stream(&connect.url) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let slot = self.free_slot();
        self.ring.poll_writable(socket.as_fd(), slot as u64)?;
        self.state
            .connecting(connect.association, connect.url.transport, slot);
        self.conns[slot] = Some(Conn {
            stream: self
                .state
                .stream_conn(socket, connect.association, Protocol::Enrp, tls),
            transport: connect.url.transport,
            recv: Receiving::Off,
            send: None,
            connecting: true,
            closed: false,
        });
        Ok(Ok(()))
    }

    /// An outgoing connection's writability poll ended: it is up (receive on it, tell the
    /// worker) or it failed.
    fn connect_done(&mut self, slot: usize, now: Millis) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        conn.connecting = false;
        if conn.closed {
            self.release_if_done(slot);
            return Ok(());
        }
        match connect_outcome(&conn.stream.socket) {
            Ok(peer) => {
                let association = conn.stream.association;
                if conn.stream.wants_write() {
                    // A TLS client speaks first.
                    self.dirty.push(slot);
                }
                self.rearm_recv(slot)?;
                self.state.connected(association, peer, now);
                self.route_output()
            }
            Err(e) => self.close_conn(slot, Closed::Io(e), now),
        }
    }

    fn accepted(&mut self, i: usize, fd: OwnedFd, now: Millis) -> io::Result<()> {
        let socket = socket2::Socket::from(fd);
        let Listener::Stream { url, .. } = &self.state.listeners[i] else {
            return Ok(());
        };
        let (url, protocol) = (*url, self.state.listeners[i].protocol());
        let Some(peer) = socket.peer_addr().ok().and_then(|a| a.as_socket()) else {
            return Ok(());
        };
        let Some(ticket) = self.state.admit(peer.ip()) else {
            return Ok(());
        };
        if let Err(e) = configure_accepted(&socket) {
            tracing::debug!(%e, "cannot set up an accepted connection");
            return Ok(());
        }
        // A plain TCP client of an MPTCP listener is a TCP connection.
        let url = rserpool_net::TransportUrl {
            transport: rserpool_net::negotiated_transport(&socket, url.transport),
            ..url
        };
        let tls = match self.state.tls_session(&url, false) {
            Ok(tls) => tls,
            Err(e) => {
                tracing::warn!(listener = %url, %e, "connection refused");
                return Ok(());
            }
        };
        let slot = self.free_slot();
        self.ring.recv(socket.as_fd(), slot as u64)?;
        let association = self
            .state
            .open_stream(url, protocol, peer, slot, ticket, now);
        self.conns[slot] = Some(Conn {
            stream: self.state.stream_conn(socket, association, protocol, tls),
            transport: url.transport,
            recv: Receiving::Armed,
            send: None,
            connecting: false,
            closed: false,
        });
        Ok(())
    }

    fn received(
        &mut self,
        slot: usize,
        result: io::Result<Option<ring::Buf>>,
        more: bool,
        now: Millis,
        reads: &PinnedReader<'_>,
    ) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            if let Ok(Some(buf)) = result {
                self.ring.recycle(buf);
            }
            return Ok(());
        };
        if !more {
            conn.recv = Receiving::Off;
        }
        match result {
            Ok(Some(buf)) => {
                let handled = if conn.closed {
                    Ok(0)
                } else {
                    conn.stream
                        .receive(self.ring.bytes(&buf), &mut self.state.dispatch(now, reads))
                };
                self.ring.recycle(buf);
                match handled {
                    Ok(_) => {
                        if self.conns[slot]
                            .as_ref()
                            .is_some_and(|c| c.stream.wants_write())
                        {
                            // A TLS handshake's answer, with no reply from the worker to
                            // carry it.
                            self.dirty.push(slot);
                        }
                        self.route_output()?;
                        self.hold_back(slot)?;
                    }
                    Err(closed) => self.close_conn(slot, closed, now)?,
                }
            }
            Ok(None) => {
                // The peer finished sending: answer what it sent, then close.
                if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
                    conn.stream.finish();
                }
                self.close_if_done(slot, now)?;
            }
            Err(e) if ended(&e) => {}
            Err(e) => self.close_conn(slot, Closed::Io(e), now)?,
        }
        self.rearm_recv(slot)?;
        self.release_if_done(slot);
        Ok(())
    }

    fn sent(
        &mut self,
        slot: usize,
        result: io::Result<usize>,
        buf: Vec<u8>,
        from: usize,
        now: Millis,
        reads: &PinnedReader<'_>,
    ) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        conn.send = None;
        conn.stream
            .give_back(buf, from, *result.as_ref().unwrap_or(&0));
        if conn.closed {
            self.release_if_done(slot);
            return Ok(());
        }
        if let Err(e) = result {
            return self.close_conn(slot, Closed::Io(e), now);
        }
        if conn.stream.wants_write() {
            self.dirty.push(slot);
        }
        if conn.stream.holds_input() && !conn.stream.paused() {
            // The replies drained: handle the messages held back, then read again.
            let handled = conn
                .stream
                .dispatch_buffered(&mut self.state.dispatch(now, reads));
            if let Err(closed) = handled {
                return self.close_conn(slot, closed, now);
            }
            self.route_output()?;
        }
        self.close_if_done(slot, now)?;
        self.rearm_recv(slot)
    }

    /// Closes a connection whose peer finished sending once its replies are written.
    fn close_if_done(&mut self, slot: usize, now: Millis) -> io::Result<()> {
        let done = self
            .conns
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| !c.closed && c.send.is_none() && c.stream.done());
        if done {
            self.close_conn(slot, Closed::Eof, now)?;
        }
        Ok(())
    }

    /// Stops receiving on a connection whose replies passed the high-water mark.
    fn hold_back(&mut self, slot: usize) -> io::Result<()> {
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut)
            && conn.recv == Receiving::Armed
            && !conn.closed
            && (conn.stream.paused() || conn.stream.holds_input())
        {
            self.ring.cancel_recv(slot as u64)?;
            conn.recv = Receiving::Cancelling;
        }
        Ok(())
    }

    /// Receives again on a connection whose receive ended, unless it is closed or held back.
    fn rearm_recv(&mut self, slot: usize) -> io::Result<()> {
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut)
            && conn.recv == Receiving::Off
            && !conn.closed
            && !conn.connecting
            && !conn.stream.peer_finished()
            && !self.stopping
            && !conn.stream.paused()
            && !conn.stream.holds_input()
        {
            self.ring.recv(conn.stream.socket.as_fd(), slot as u64)?;
            conn.recv = Receiving::Armed;
        }
        Ok(())
    }

    /// Closes the association in the core and cancels the connection's operations; the slot is
    /// released once they completed.
    fn close_conn(&mut self, slot: usize, why: Closed, now: Millis) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        if conn.closed {
            return Ok(());
        }
        conn.closed = true;
        if matches!(why, Closed::Tls(_))
            && conn.send.is_none()
            && let Some(alert) = conn.stream.tls_alert()
        {
            // Best effort: a few bytes into an empty send buffer.
            let _ = conn
                .stream
                .socket
                .send_with_flags(&alert, libc::MSG_DONTWAIT);
        }
        if conn.recv == Receiving::Armed {
            self.ring.cancel_recv(slot as u64)?;
            conn.recv = Receiving::Cancelling;
        }
        if let Some(id) = conn.send {
            self.ring.cancel_send(id)?;
        }
        if conn.connecting {
            self.ring.cancel_fd(conn.stream.socket.as_fd())?;
        }
        let (association, transport) = (conn.stream.association, conn.transport);
        self.state.close_stream(association, transport, &why, now);
        self.release_if_done(slot);
        Ok(())
    }

    fn release_if_done(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get(slot).and_then(Option::as_ref)
            && conn.closed
            && conn.recv == Receiving::Off
            && conn.send.is_none()
            && !conn.connecting
        {
            self.conns[slot] = None;
            self.free.push(slot);
        }
    }

    /// Carries out what the worker asked for so far: replies queued on their connections (sent
    /// at the end of the turn), datagrams submitted, SCTP messages sent, forwards kept for the
    /// end of the turn, aborts noted.
    fn route_output(&mut self) -> io::Result<()> {
        if self.state.out.is_empty() {
            return Ok(());
        }
        // What the output confirms is visible to readers before the output leaves.
        self.state.publish_turn();
        self.state.keep_forwards();
        let mut streams = Streams {
            conns: &mut self.conns,
            dirty: &mut self.dirty,
            ring: &mut self.ring,
        };
        self.state.route_output(&mut streams)
    }

    /// A multishot receive on SCTP socket `s` (a listener, or an association peeled off one)
    /// completed: the message or notification is handled; the receive is submitted again if it
    /// ended, unless the peeled-off association has ended (its slot is then released).
    fn sctp_received(
        &mut self,
        s: usize,
        result: io::Result<Option<ring::Buf>>,
        more: bool,
        now: Millis,
        reads: &PinnedReader<'_>,
    ) -> io::Result<()> {
        let peeled = self.state.sctp_sockets.is_peeled(s);
        match result {
            Ok(Some(buf)) => {
                if let Some(m) = self.ring.sctp_message(&buf)
                    && let Some((socket, ..)) =
                        self.state.sctp_sockets.get(&self.state.listeners, s)
                {
                    let received = socket.received(m.flags, m.control, m.payload);
                    self.state.sctp_received(s, received, m.payload, now, reads);
                }
                self.ring.recycle(buf);
            }
            Ok(None) if peeled => {
                // The end of a peeled-off association's stream: its association has ended.
                if let Some(assoc) = self.state.sctp_sockets.association(s) {
                    self.state.abort_sctp(s, assoc, now);
                }
            }
            Ok(None) => {}
            Err(e) if ended(&e) => {}
            Err(e) => tracing::debug!(%e, "SCTP receive failed"),
        }
        if !more {
            if !peeled {
                if !self.stopping {
                    arm_listener(&mut self.ring, &self.state.listeners[s], s)?;
                }
            } else {
                self.state.sctp_sockets.set_armed(s, false);
                if self.state.sctp_sockets.closing(s) {
                    self.release_peeled(s);
                } else if !self.stopping {
                    self.arm_peeled(s)?;
                }
            }
        }
        self.route_output()
    }

    /// Releases the closed peeled-off slot `s` once no operation on its socket is left.
    fn release_peeled(&mut self, s: usize) {
        let sockets = &mut self.state.sctp_sockets;
        if sockets.closing(s)
            && !sockets.armed(s)
            && self.sctp_flights.get(&s).is_none_or(|f| f.sends.is_empty())
        {
            self.sctp_flights.remove(&s);
            sockets.release(s);
        }
    }

    /// Arms the multishot receive on the SCTP association peeled off into slot `s`.
    fn arm_peeled(&mut self, s: usize) -> io::Result<()> {
        if let Some(socket) = self.state.sctp_sockets.peeled_socket(s) {
            self.ring.recv_sctp(socket.as_fd(), s as u64)?;
            self.state.sctp_sockets.set_armed(s, true);
        }
        Ok(())
    }

    /// Watches the SCTP associations peeled off this turn, and stops watching those that ended:
    /// their receive is cancelled, and the slot released when its last completion comes (the
    /// socket stays open until then, so that the cancellation finds it).
    fn watch_peeled_sctp(&mut self) -> io::Result<()> {
        for s in self.state.sctp_sockets.take_opened() {
            self.arm_peeled(s)?;
        }
        for s in self.state.sctp_sockets.take_closed() {
            let sockets = &mut self.state.sctp_sockets;
            match sockets.peeled_socket(s) {
                Some(socket) if sockets.armed(s) => self.ring.cancel_fd(socket.as_fd())?,
                _ => self.release_peeled(s),
            }
        }
        Ok(())
    }

    /// Submits the turn's SCTP messages as sends on the ring, in order. A socket whose sends of
    /// an earlier turn have not all completed keeps its messages for the next turn (their order
    /// would not be certain otherwise); those of a socket with blocked messages joined them
    /// ([`super::sctp::SctpOut::take_queued`]).
    fn flush_sctp(&mut self) -> io::Result<()> {
        let mut queued = self.state.sctp_out.take_queued();
        if queued.is_empty() {
            self.state.sctp_out.return_queue(queued);
            return Ok(());
        }
        let busy: Vec<usize> = self
            .sctp_flights
            .iter()
            .filter(|(_, f)| !f.sends.is_empty() && f.turn != self.turn)
            .map(|(&s, _)| s)
            .collect();
        for (s, assoc, message) in queued.drain(..) {
            let sockets = &self.state.sctp_sockets;
            let Some((socket, _, protocol)) = sockets
                .get(&self.state.listeners, s)
                .filter(|_| sockets.carries(s, assoc))
            else {
                self.state.sctp_out.reuse(message);
                continue;
            };
            if busy.contains(&s) {
                self.state.sctp_out.hold(s, assoc, message);
                continue;
            }
            let control = self
                .state
                .sctp_sockets
                .needs_send_info(s)
                .then(|| sctp_send_control(assoc, protocol.ppid()));
            let flight = self.sctp_flights.entry(s).or_default();
            flight.turn = self.turn;
            let seq = flight.next;
            flight.next = (seq + 1) & SCTP_SEQ_MASK;
            flight.sends.push_back((seq, assoc));
            let token = ((seq as u64) << SCTP_SEQ_SHIFT) | s as u64;
            self.ring
                .send_sctp(socket.as_fd(), control, message, token)?;
        }
        self.state.sctp_out.return_queue(queued);
        Ok(())
    }

    /// An SCTP send completed. One that found the send buffer full waits for the rest of its
    /// socket's sends; after the last, those waiting join the blocked messages, which are tried
    /// again at the end of the turn. One that waits while a later send of its socket left is
    /// dropped: sent now, it would arrive out of order.
    fn sctp_sent(&mut self, token: u64, result: io::Result<usize>, buf: Vec<u8>) {
        let s = (token & u64::from(u32::MAX)) as usize;
        let seq = (token >> SCTP_SEQ_SHIFT) as u32;
        let Some(flight) = self.sctp_flights.get_mut(&s) else {
            self.state.sctp_out.reuse(buf);
            return;
        };
        let Some(assoc) = flight
            .sends
            .iter()
            .position(|&(q, _)| q == seq)
            .and_then(|i| flight.sends.remove(i))
            .map(|(_, assoc)| assoc)
        else {
            self.state.sctp_out.reuse(buf);
            return;
        };
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => flight.full.push((assoc, buf)),
            Ok(_) => {
                if !flight.full.is_empty() {
                    tracing::debug!(
                        dropped = flight.full.len(),
                        "SCTP send buffer full, then a later message left: dropping the \
                         earlier ones to keep the order"
                    );
                    for (_, dropped) in flight.full.drain(..) {
                        self.state.sctp_out.reuse(dropped);
                    }
                }
                self.state.sctp_out.reuse(buf);
            }
            Err(e) => {
                tracing::debug!(%e, "SCTP send failed");
                self.state.sctp_out.reuse(buf);
            }
        }
        if flight.sends.is_empty() {
            for (assoc, message) in flight.full.drain(..) {
                self.state.sctp_out.blocked.push((s, assoc, message));
            }
            if self.state.sctp_sockets.is_peeled(s) {
                self.release_peeled(s);
            }
        }
    }

    /// Ends a turn's output: forwards into the mailboxes, the SCTP messages a full send buffer
    /// blocked, one send per connection with replies, the aborts, then the connections to ENRP
    /// peers. What closing associations and failed connections produce is carried out too, for
    /// a few rounds.
    fn finish_output(&mut self, now: Millis) -> io::Result<()> {
        for _ in 0..4 {
            self.finish_once(now)?;
            if self.state.out.is_empty() {
                return Ok(());
            }
            self.route_output()?;
        }
        self.state.post_forwards();
        self.state.keep_connects();
        self.state.out.clear();
        Ok(())
    }

    fn finish_once(&mut self, now: Millis) -> io::Result<()> {
        self.state.publish_turn();
        self.state.post_forwards();
        self.state.retry_blocked_sctp(now);
        self.flush_sctp()?;
        if self.state.aborts_pending() {
            // The turn's messages leave before the aborts that may follow them.
            self.ring.submit()?;
        }
        for slot in std::mem::take(&mut self.dirty) {
            self.start_send(slot)?;
            self.hold_back(slot)?;
        }
        for slot in self.state.carry_out_aborts(now) {
            self.close_conn(slot, Closed::Eof, now)?;
        }
        self.start_connects(now)?;
        // SCTP in UDP: data, SACKs, handshake answers and the aborts' ABORTs, submitted with
        // the turn's other operations.
        let mut streams = Streams {
            conns: &mut self.conns,
            dirty: &mut self.dirty,
            ring: &mut self.ring,
        };
        self.state.flush_sctp_udp(&mut streams)
    }

    /// Lends a connection's unsent replies to a send, unless one is in flight.
    fn start_send(&mut self, slot: usize) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        if conn.closed || conn.connecting || conn.send.is_some() {
            return Ok(());
        }
        if let Some((buf, from)) = conn.stream.take_unsent() {
            let id = self
                .ring
                .send(conn.stream.socket.as_fd(), buf, from, slot as u64)?;
            conn.send = Some(id);
        }
        Ok(())
    }

    /// Stop: no new connections or requests; flush what is queued for up to half a second. The
    /// ring cancels and reaps what is left when it is dropped.
    fn drain_and_stop(&mut self) -> io::Result<()> {
        self.stopping = true;
        for l in &self.state.listeners {
            self.ring.cancel_fd(l.as_fd())?;
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            let mut pending = false;
            for slot in 0..self.conns.len() {
                self.start_send(slot)?;
                pending |= self.conns[slot]
                    .as_ref()
                    .is_some_and(|c| !c.closed && c.send.is_some());
            }
            if !pending || Instant::now() >= deadline {
                return Ok(());
            }
            self.ring.submit_and_wait(Duration::from_millis(5))?;
            while let Some(c) = self.ring.next() {
                match c {
                    Completion::Sent {
                        token,
                        result,
                        buf,
                        from,
                    } => {
                        if let Some(conn) =
                            self.conns.get_mut(token as usize).and_then(Option::as_mut)
                        {
                            conn.send = None;
                            conn.stream
                                .give_back(buf, from, *result.as_ref().unwrap_or(&0));
                            conn.closed |= result.is_err();
                        }
                    }
                    Completion::Recv {
                        result: Ok(Some(buf)),
                        ..
                    }
                    | Completion::Datagram {
                        result: Ok(buf), ..
                    }
                    | Completion::SctpMessage {
                        result: Ok(Some(buf)),
                        ..
                    } => self.ring.recycle(buf),
                    _ => {}
                }
            }
        }
    }
}

/// The io_uring driver's side of the output router: replies queue on a connection, sent once per
/// turn; UDP replies are submitted as sends on the ring.
struct Streams<'a> {
    conns: &'a mut [Option<Conn>],
    dirty: &'a mut Vec<usize>,
    ring: &'a mut Ring,
}

impl Transmitter for Streams<'_> {
    fn queue_stream(&mut self, slot: usize, bytes: &[u8]) {
        if let Some(conn) = self.conns[slot].as_mut() {
            if !conn.stream.wants_write() {
                self.dirty.push(slot);
            }
            conn.stream.queue(bytes);
        }
    }

    fn send_datagram(
        &mut self,
        socket: &std::net::UdpSocket,
        to: std::net::SocketAddr,
        bytes: &[u8],
    ) -> io::Result<()> {
        self.ring.send_to(socket.as_fd(), bytes, to)
    }

    fn send_segmented(
        &mut self,
        socket: &std::net::UdpSocket,
        to: std::net::SocketAddr,
        bytes: &[u8],
        segment: usize,
    ) -> io::Result<()> {
        match u16::try_from(segment) {
            Ok(segment) => self
                .ring
                .send_to_segmented(socket.as_fd(), bytes, to, segment),
            Err(_) => self.ring.send_to(socket.as_fd(), bytes, to),
        }
    }
}
