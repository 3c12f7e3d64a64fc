//! The epoll driver: a level-triggered event loop per worker over its listeners, its
//! associations, its mailbox wake-up and its timers. Used where io_uring is unavailable (Docker's
//! default seccomp profile, `kernel.io_uring_disabled`) or when configured.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rserpool_handlespace::{Millis, PinnedReader};
use rserpool_net::{NetError, Transport, configure_accepted, connect_outcome, connect_stream};

use super::conn::{Closed, StreamConn};
use super::state::{LoopState, Transmitter};
use super::sys::{Epoll, Event};
use super::{Listener, WorkerSetup, send_datagram};
use crate::core::Connect;

const TOKEN_WAKE: u64 = 0;
const TAG_LISTENER: u64 = 1 << 60;
const TAG_CONN: u64 = 2 << 60;
const TAG_MASK: u64 = 0xf << 60;

/// A stream association in its slot.
struct Conn {
    stream: StreamConn<socket2::Socket>,
    transport: Transport,
    /// An outgoing connection (ENRP) not yet established: watched for writability only.
    connecting: bool,
    /// What epoll watches the socket for (readable, writable): changed only when it differs
    /// (level-triggered: an unchanged interest needs no system call).
    watched: (bool, bool),
}

struct Loop {
    state: LoopState,
    epoll: Epoll,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    dirty: Vec<usize>,
    /// Connections whose peer finished sending, to close once their replies are written.
    finishing: Vec<usize>,
    /// Connections whose held messages may be handled again (their replies drained).
    resume: Vec<usize>,
}

/// Runs one worker on epoll until a stop is requested and the replies are flushed.
pub fn run(setup: WorkerSetup) -> std::io::Result<()> {
    let epoll = Epoll::new(1024)?;
    let index = setup.worker.index();
    epoll.add(&setup.shared.wakers[index], TOKEN_WAKE, true, false)?;
    for (i, l) in setup.listeners.iter().enumerate() {
        epoll.add(&l.as_fd(), TAG_LISTENER | i as u64, true, false)?;
    }
    let mut l = Loop {
        state: LoopState::start(setup),
        epoll,
        conns: Vec::new(),
        free: Vec::new(),
        dirty: Vec::new(),
        finishing: Vec::new(),
        resume: Vec::new(),
    };
    l.run()
}

impl Loop {
    fn run(&mut self) -> std::io::Result<()> {
        let mut events = Vec::with_capacity(1024);
        let reader = self.state.worker.reader().clone();
        loop {
            if self.state.shared.stopping() {
                self.drain_and_stop();
                return Ok(());
            }
            self.state.reload_config();
            let idle_start = self.state.idle_since();
            let timeout = if self.resume.is_empty() {
                self.state.timeout()
            } else {
                Duration::ZERO
            };
            events.clear();
            let spin = Duration::from_micros(self.state.io.busy_poll_us);
            let mut n = 0;
            if !spin.is_zero() {
                while n == 0 && idle_start.elapsed() < spin.min(timeout) {
                    n = self.epoll.wait(Some(Duration::ZERO), |e| events.push(e))?;
                }
            }
            if n == 0 {
                self.epoll.wait(Some(timeout), |e| events.push(e))?;
            }
            let busy_start = Instant::now();
            let now = self.state.shared.millis_at(busy_start);
            // Every shard's map is pinned for the turn: its resolutions read through the pin
            // instead of entering and leaving the map's epoch each.
            let reads = reader.pin();
            self.state.begin_turn(now);
            for slot in std::mem::take(&mut self.resume) {
                self.dispatch(slot, now, &reads);
            }
            for &e in &events {
                self.handle(e, now, &reads);
            }
            self.state.drain_mailbox(now);
            self.state.run_timers(now);
            self.state.run_sctp_udp_timers(now, &reads);
            self.flush_output(now);
            self.watch_peeled_sctp();
            self.state.worker.end_turn();
            drop(reads);
            self.state.finish_turn(idle_start, busy_start, events.len());
        }
    }

    fn handle(&mut self, e: Event, now: Millis, reads: &PinnedReader<'_>) {
        match e.token & TAG_MASK {
            TAG_LISTENER => self.listener_ready((e.token & !TAG_MASK) as usize, now, reads),
            TAG_CONN => self.conn_ready((e.token & !TAG_MASK) as usize, e, now, reads),
            _ => self.state.shared.wakers[self.state.worker.index()].reset(),
        }
    }

    fn listener_ready(&mut self, i: usize, now: Millis, reads: &PinnedReader<'_>) {
        if self.state.sctp_sockets.is_peeled(i) {
            // An SCTP association on a socket of its own, level-triggered like a listener.
            self.state.receive_sctp(i, now, reads);
            return;
        }
        match &self.state.listeners[i] {
            Listener::Stream { .. } => self.accept(i, now),
            Listener::Udp { .. } => self.state.receive_datagrams(i, now, reads),
            Listener::Sctp { .. } => {
                // Level-triggered: what the budget left is reported again next turn.
                self.state.receive_sctp(i, now, reads);
            }
        }
    }

    fn accept(&mut self, i: usize, now: Millis) {
        for _ in 0..self.state.io.max_batch.max(1) {
            let Listener::Stream {
                socket,
                url,
                protocol,
            } = &self.state.listeners[i]
            else {
                return;
            };
            let (url, protocol, accepted) = (*url, *protocol, socket.accept());
            let (socket, peer) = match accepted {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(listener = %url, %e, "accept failed");
                    return;
                }
            };
            let Some(peer) = peer.as_socket() else {
                continue;
            };
            let Some(ticket) = self.state.admit(peer.ip()) else {
                continue;
            };
            if let Err(e) = configure_accepted(&socket) {
                tracing::debug!(%e, "cannot set up an accepted connection");
                continue;
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
                    continue;
                }
            };
            let slot = self.free_slot();
            if let Err(e) = self.epoll.add(&socket, TAG_CONN | slot as u64, true, false) {
                tracing::warn!(%e, "cannot watch a connection");
                self.free.push(slot);
                continue;
            }
            let association = self
                .state
                .open_stream(url, protocol, peer, slot, ticket, now);
            let stream = self.state.stream_conn(socket, association, protocol, tls);
            self.conns[slot] = Some(Conn {
                stream,
                transport: url.transport,
                connecting: false,
                watched: (true, false),
            });
        }
    }

    fn free_slot(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        })
    }

    /// Starts the outgoing ENRP connections the worker asked for (TCP and MPTCP).
    fn start_connects(&mut self, now: Millis) {
        for connect in self.state.take_connects() {
            if let Err(e) = self.start_connect(&connect) {
                self.state.connect_failed(&connect, &e, now);
            }
        }
    }

    fn start_connect(&mut self, connect: &Connect) -> Result<(), NetError> {
        match connect.url.transport {
            Transport::Sctp => return self.state.start_sctp_connect(connect),
            Transport::SctpUdp => return self.state.start_sctp_udp_connect(connect),
            Transport::Tcp | Transport::Mptcp | Transport::Udp => {}
        }
        let tls = self.state.tls_session(&connect.url, true)?;
        let socket = connect_stream(&connect.url)?;
        let slot = self.free_slot();
        if let Err(e) = self.epoll.add(&socket, TAG_CONN | slot as u64, false, true) {
            self.free.push(slot);
            return Err(NetError::io("watch a connection", e));
        }
        self.state
            .connecting(connect.association, connect.url.transport, slot);
        let stream = self.state.stream_conn(
            socket,
            connect.association,
            crate::metrics::Protocol::Enrp,
            tls,
        );
        self.conns[slot] = Some(Conn {
            stream,
            transport: connect.url.transport,
            connecting: true,
            watched: (false, true),
        });
        Ok(())
    }

    /// An outgoing connection became writable: it is up, or it failed.
    fn connect_done(&mut self, slot: usize, now: Millis) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        conn.connecting = false;
        match connect_outcome(&conn.stream.socket) {
            Ok(peer) => {
                let association = conn.stream.association;
                if conn.stream.wants_write() {
                    // A TLS client speaks first.
                    self.dirty.push(slot);
                }
                self.update_interest(slot);
                self.state.connected(association, peer, now);
            }
            Err(e) => self.close_conn(slot, Closed::Io(e), now),
        }
    }

    fn conn_ready(&mut self, slot: usize, e: Event, now: Millis, reads: &PinnedReader<'_>) {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if c.connecting {
            if e.writable || e.closed {
                self.connect_done(slot, now);
            }
            return;
        }
        let conn = &mut c.stream;
        if e.writable {
            match conn.flush() {
                Ok(_) => {}
                Err(err) => return self.close_conn(slot, Closed::Io(err), now),
            }
            self.update_interest(slot);
        }
        if e.readable || e.closed {
            self.dispatch(slot, now, reads);
        }
        if self
            .conns
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.stream.peer_finished())
        {
            // Closed after this turn's replies are written (see `flush_output`).
            self.finishing.push(slot);
        }
    }

    /// Closes a connection whose peer finished sending once its replies are written.
    fn close_if_done(&mut self, slot: usize, now: Millis) {
        if self
            .conns
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.stream.done())
        {
            self.close_conn(slot, Closed::Eof, now);
        }
    }

    /// Handles what the connection holds and what its socket has.
    fn dispatch(&mut self, slot: usize, now: Millis, reads: &PinnedReader<'_>) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if conn.connecting {
            return;
        }
        let budget = self.state.io.max_batch;
        let result = conn
            .stream
            .read_and_dispatch(&mut self.state.dispatch(now, reads), budget);
        match result {
            // A TLS handshake's answer, with no reply from the worker to carry it.
            Ok(_) if conn.stream.wants_write() => self.dirty.push(slot),
            Ok(_) => {}
            Err(closed) => self.close_conn(slot, closed, now),
        }
    }

    fn close_conn(&mut self, slot: usize, why: Closed, now: Millis) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        if matches!(why, Closed::Tls(_))
            && let Some(alert) = conn.stream.tls_alert()
        {
            // Best effort: a few bytes into an empty send buffer.
            let _ = conn
                .stream
                .socket
                .send_with_flags(&alert, libc::MSG_DONTWAIT);
        }
        let _ = self.epoll.delete(&conn.stream.socket);
        self.free.push(slot);
        self.state
            .close_stream(conn.stream.association, conn.transport, &why, now);
    }

    /// Watches the connection for what it can do now; one whose held messages may go on is
    /// handled next turn.
    fn update_interest(&mut self, slot: usize) {
        if let Some(Conn {
            stream: conn,
            connecting: false,
            watched,
            ..
        }) = self.conns.get_mut(slot).and_then(Option::as_mut)
        {
            let wanted = (!conn.paused() && !conn.peer_finished(), conn.wants_write());
            if wanted != *watched
                && self
                    .epoll
                    .modify(&conn.socket, TAG_CONN | slot as u64, wanted.0, wanted.1)
                    .is_ok()
            {
                *watched = wanted;
            }
            if conn.holds_input() && !conn.paused() {
                self.resume.push(slot);
            }
        }
    }

    /// Carries out what the worker asked for: replies into write buffers (one write per
    /// connection per turn), SCTP messages (those a full send buffer blocked tried once more),
    /// datagrams, aborts, connections to ENRP peers, forwards into other workers' mailboxes.
    /// What closing associations and failed connections produce is carried out too, for a few
    /// rounds.
    /// Watches the SCTP associations peeled off this turn (as listeners: their slots come after
    /// the listeners' indices) and releases those that ended; closing a socket takes it out of
    /// the epoll set.
    fn watch_peeled_sctp(&mut self) {
        for s in self.state.sctp_sockets.take_opened() {
            let Some(socket) = self.state.sctp_sockets.peeled_socket(s) else {
                continue;
            };
            if let Err(e) = self
                .epoll
                .add(&socket.as_fd(), TAG_LISTENER | s as u64, true, false)
            {
                tracing::warn!(%e, "cannot watch an SCTP association; aborting it");
                if let Some(assoc) = self.state.sctp_sockets.association(s) {
                    self.state.abort_sctp(s, assoc, self.state.shared.now());
                }
            }
        }
        for s in self.state.sctp_sockets.take_closed() {
            self.state.sctp_sockets.release(s);
        }
    }

    fn flush_output(&mut self, now: Millis) {
        for _ in 0..4 {
            self.flush_once(now);
            if self.state.out.is_empty() {
                return;
            }
        }
        self.state.post_forwards();
        self.state.keep_connects();
        self.state.out.clear();
    }

    fn flush_once(&mut self, now: Millis) {
        // What the output confirms is visible to readers before the output leaves.
        self.state.publish_turn();
        // Forwards first: completions may be waiting on them.
        self.state.post_forwards();
        let mut streams = Streams {
            conns: &mut self.conns,
            dirty: &mut self.dirty,
        };
        // Sending a UDP reply never fails here: errors are logged and the reply dropped.
        let _ = self.state.route_output(&mut streams);
        self.state.send_queued_sctp();
        self.state.retry_blocked_sctp(now);
        let dirty = std::mem::take(&mut self.dirty);
        for slot in dirty {
            let result = match self.conns[slot].as_mut() {
                Some(c) => c.stream.flush(),
                None => continue,
            };
            match result {
                Ok(_) => self.update_interest(slot),
                Err(e) => self.close_conn(slot, Closed::Io(e), now),
            }
        }
        for slot in std::mem::take(&mut self.finishing) {
            self.close_if_done(slot, now);
        }
        for slot in self.state.carry_out_aborts(now) {
            self.close_conn(slot, Closed::Eof, now);
        }
        self.start_connects(now);
        // SCTP in UDP: data, SACKs, handshake answers and the aborts' ABORTs.
        let mut streams = Streams {
            conns: &mut self.conns,
            dirty: &mut self.dirty,
        };
        let _ = self.state.flush_sctp_udp(&mut streams);
    }

    /// Stop: no new work; flush what is queued for up to half a second.
    fn drain_and_stop(&mut self) {
        for l in &self.state.listeners {
            let _ = self.epoll.delete(&l.as_fd());
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            let mut pending = false;
            for c in self.conns.iter_mut().flatten() {
                if c.stream.wants_write() && !c.connecting {
                    pending |= !matches!(c.stream.flush(), Ok(true) | Err(_));
                }
            }
            if !pending {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The epoll driver's side of the output router: replies queue on a connection's write buffer,
/// flushed once per turn; UDP replies are sent at once.
struct Streams<'a> {
    conns: &'a mut [Option<Conn>],
    dirty: &'a mut Vec<usize>,
}

impl Transmitter for Streams<'_> {
    fn queue_stream(&mut self, slot: usize, bytes: &[u8]) {
        if let Some(c) = self.conns[slot].as_mut() {
            if !c.stream.wants_write() && !c.connecting {
                self.dirty.push(slot);
            }
            c.stream.queue(bytes);
        }
    }

    fn send_datagram(
        &mut self,
        socket: &std::net::UdpSocket,
        to: std::net::SocketAddr,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        send_datagram(socket, to, bytes);
        Ok(())
    }

    /// One `sendmsg` with `UDP_SEGMENT`: the kernel cuts the datagrams.
    fn send_segmented(
        &mut self,
        socket: &std::net::UdpSocket,
        to: std::net::SocketAddr,
        bytes: &[u8],
        segment: usize,
    ) -> std::io::Result<()> {
        let sent = u16::try_from(segment)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
            .and_then(|segment| rserpool_net::send_segmented_to(socket, to, bytes, segment));
        if let Err(e) = sent
            && e.kind() != std::io::ErrorKind::WouldBlock
        {
            tracing::debug!(%to, %e, "segmented datagrams not sent");
        }
        Ok(())
    }

    /// One `sendmmsg` for up to 64 datagrams. UDP is best effort: what a full socket buffer
    /// refuses is dropped (SCTP sends it again), errors are logged.
    fn send_datagrams(
        &mut self,
        socket: &std::net::UdpSocket,
        buf: &[u8],
        datagrams: &[(std::net::SocketAddr, std::ops::Range<usize>)],
    ) -> std::io::Result<()> {
        let batch = datagrams
            .iter()
            .map(|(to, range)| (*to, &buf[range.clone()]));
        match rserpool_net::send_batch_to(socket, batch) {
            Ok(sent) if sent < datagrams.len() => {
                tracing::debug!(
                    dropped = datagrams.len() - sent,
                    "datagrams not sent: socket buffer full"
                );
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => tracing::debug!(%e, "datagrams not sent"),
        }
        Ok(())
    }
}
