//! The epoll driver: a level-triggered event loop per worker over its listeners, its
//! associations, its mailbox wake-up and its timers. Used where io_uring is unavailable (Docker's
//! default seccomp profile, `kernel.io_uring_disabled`) or when configured.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rserpool_handlespace::{AssociationId, Millis};
use rserpool_protocol::PPID_ASAP;

use super::conn::{Closed, StreamConn};
use super::sys::{Epoll, Event};
use super::{IoSettings, Listener, Shared, WorkerSetup, send_datagram};
use crate::core::{AssociationInfo, Forward, Output, Target, Worker};
use crate::metrics::{Limit, RequestKind, TransportLabel, WorkerMetrics};
use crate::net::{AssocState, SctpAssocId, SctpRecv, configure_accepted};
use crate::url::Transport;

const TOKEN_WAKE: u64 = 0;
const TAG_LISTENER: u64 = 1 << 60;
const TAG_CONN: u64 = 2 << 60;
const TAG_MASK: u64 = 0xf << 60;
/// Least time between two checks of one SCTP listener for peers that stopped reading.
const STALL_CHECK_INTERVAL_MS: Millis = 100;

/// Where the core's association lives in this driver.
#[derive(Clone, Copy, Debug)]
enum Route {
    Stream(usize),
    Sctp { listener: usize, assoc: SctpAssocId },
}

struct Loop {
    worker: Worker,
    metrics: Arc<WorkerMetrics>,
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    sender: Option<std::net::UdpSocket>,
    io: IoSettings,
    epoll: Epoll,
    conns: Vec<Option<(StreamConn<socket2::Socket>, Transport)>>,
    free: Vec<usize>,
    routes: HashMap<AssociationId, Route, foldhash::fast::RandomState>,
    sctp: HashMap<(usize, SctpAssocId), AssociationId, foldhash::fast::RandomState>,
    out: Output,
    backlog: Vec<(usize, Forward)>,
    wake: Vec<bool>,
    /// Per listener: when it was last checked for SCTP peers that stopped reading.
    stall_checks: Vec<Option<Millis>>,
    dirty: Vec<usize>,
    kinds: Vec<RequestKind>,
    buf: Vec<u8>,
}

/// Runs one worker on epoll until a stop is requested and the replies are flushed.
pub fn run(setup: WorkerSetup) -> std::io::Result<()> {
    let WorkerSetup {
        worker,
        metrics,
        shared,
        listeners,
        sender,
        io,
    } = setup;
    let epoll = Epoll::new(1024)?;
    let index = worker.index();
    epoll.add(&shared.wakers[index], TOKEN_WAKE, true, false)?;
    for (i, l) in listeners.iter().enumerate() {
        let fd = match l {
            Listener::Stream { socket, .. } => socket.as_raw_fd(),
            Listener::Udp { socket, .. } => socket.as_raw_fd(),
            Listener::Sctp { socket, .. } => socket.as_raw_fd(),
        };
        epoll.add(&RawFdRef(fd), TAG_LISTENER | i as u64, true, false)?;
    }
    let workers = shared.wakers.len();
    let stall_checks = vec![None; listeners.len()];
    let mut l = Loop {
        worker,
        metrics,
        shared,
        listeners,
        sender,
        io,
        epoll,
        conns: Vec::new(),
        free: Vec::new(),
        routes: HashMap::default(),
        sctp: HashMap::default(),
        out: Output::default(),
        backlog: Vec::new(),
        wake: vec![false; workers],
        stall_checks,
        dirty: Vec::new(),
        kinds: Vec::new(),
        buf: vec![0; io.max_message_size.max(64) + 64],
    };
    let now = l.shared.now();
    l.worker.start(now);
    l.run()
}

/// A borrowed raw fd, to register sockets of different types with epoll.
struct RawFdRef(std::os::fd::RawFd);

impl AsRawFd for RawFdRef {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

impl Loop {
    fn run(&mut self) -> std::io::Result<()> {
        let mut events = Vec::with_capacity(1024);
        let mut config = self.shared.core_config.load_full();
        loop {
            if self.shared.stopping() {
                self.drain_and_stop();
                return Ok(());
            }
            let latest = self.shared.core_config.load_full();
            if !Arc::ptr_eq(&latest, &config) {
                config = latest;
                self.worker.reconfigure(Arc::clone(&config));
            }
            let idle_start = Instant::now();
            let timeout = self.timeout();
            events.clear();
            let spin = Duration::from_micros(self.io.busy_poll_us);
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
            let now = self.shared.now();
            for &e in &events {
                self.handle(e, now);
            }
            self.drain_mailbox(now);
            if self.worker.next_timeout().is_some_and(|t| t <= now) {
                self.worker.on_timer(now, &mut self.out);
            }
            self.flush_output(now);
            let elapsed = busy_start.elapsed();
            for kind in self.kinds.drain(..) {
                self.metrics.latency(kind, elapsed.as_nanos() as u64);
            }
            self.metrics.loop_turn(
                elapsed.as_nanos() as u64,
                (busy_start - idle_start).as_nanos() as u64,
                events.len() as u64,
            );
        }
    }

    /// How long to sleep: until the next timer, at most a second.
    fn timeout(&self) -> Duration {
        if !self.backlog.is_empty() {
            return Duration::from_millis(1);
        }
        let now = self.shared.now();
        let ms = self
            .worker
            .next_timeout()
            .map_or(1_000, |t| t.saturating_sub(now).min(1_000));
        Duration::from_millis(ms)
    }

    fn handle(&mut self, e: Event, now: Millis) {
        match e.token & TAG_MASK {
            TAG_LISTENER => self.listener_ready((e.token & !TAG_MASK) as usize, now),
            TAG_CONN => self.conn_ready((e.token & !TAG_MASK) as usize, e, now),
            _ => self.shared.wakers[self.worker.index()].reset(),
        }
    }

    fn listener_ready(&mut self, i: usize, now: Millis) {
        match &self.listeners[i] {
            Listener::Stream { .. } => self.accept(i, now),
            Listener::Udp { .. } => self.receive_datagrams(i, now),
            Listener::Sctp { .. } => self.receive_sctp(i, now),
        }
    }

    fn accept(&mut self, i: usize, now: Millis) {
        for _ in 0..self.io.max_batch.max(1) {
            let Listener::Stream { socket, url } = &self.listeners[i] else {
                return;
            };
            let (url, accepted) = (*url, socket.accept());
            let (socket, peer) = match accepted {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(listener = %url, %e, "accept failed");
                    return;
                }
            };
            if self.routes.len() >= self.io.max_connections {
                self.metrics.limit_refused(Limit::Connections);
                tracing::debug!(%url, "connection refused: the worker's connection limit is reached");
                continue;
            }
            if let Err(e) = configure_accepted(&socket) {
                tracing::debug!(%e, "cannot set up an accepted connection");
                continue;
            }
            let Some(peer) = peer.as_socket() else {
                continue;
            };
            let info = AssociationInfo {
                transport: url.transport,
                generation: url.generation,
                peer_addresses: vec![peer],
            };
            let association = self.worker.open_association(info, now);
            let conn = StreamConn::new(
                socket,
                association,
                self.io.buffer_size,
                self.io.max_message_size,
            );
            let slot = match self.free.pop() {
                Some(s) => s,
                None => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
            };
            if let Err(e) = self
                .epoll
                .add(&conn.socket, TAG_CONN | slot as u64, true, false)
            {
                tracing::warn!(%e, "cannot watch a connection");
                self.free.push(slot);
                self.worker
                    .close_association(association, now, &mut self.out);
                continue;
            }
            self.conns[slot] = Some((conn, url.transport));
            self.routes.insert(association, Route::Stream(slot));
            self.metrics.connection_opened(label(url.transport));
        }
    }

    fn conn_ready(&mut self, slot: usize, e: Event, now: Millis) {
        let Some((conn, _)) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if e.writable {
            match conn.flush() {
                Ok(_) => {}
                Err(err) => return self.close_conn(slot, Closed::Io(err), now),
            }
            self.update_interest(slot);
        }
        let Some((conn, _)) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if e.readable || e.closed {
            let result = conn.read_and_dispatch(
                &mut self.worker,
                now,
                &mut self.out,
                self.io.max_message_size,
                self.io.max_batch,
                &mut self.kinds,
            );
            match result {
                Ok(_) => {}
                Err(closed) => self.close_conn(slot, closed, now),
            }
        }
    }

    fn close_conn(&mut self, slot: usize, why: Closed, now: Millis) {
        let Some((conn, transport)) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        match &why {
            Closed::Eof => {}
            Closed::Framing(e) => {
                self.metrics.decode_error(None);
                tracing::debug!(%e, "closing a connection whose stream cannot be framed");
            }
            Closed::Io(e) => tracing::debug!(%e, "connection failed"),
        }
        let _ = self.epoll.delete(&conn.socket);
        self.free.push(slot);
        self.routes.remove(&conn.association);
        self.worker
            .close_association(conn.association, now, &mut self.out);
        self.metrics.connection_closed(label(transport));
    }

    fn update_interest(&mut self, slot: usize) {
        if let Some((conn, _)) = self.conns.get(slot).and_then(Option::as_ref) {
            let _ = self.epoll.modify(
                &conn.socket,
                TAG_CONN | slot as u64,
                !conn.paused(),
                conn.wants_write(),
            );
        }
    }

    fn receive_datagrams(&mut self, i: usize, now: Millis) {
        let Listener::Udp { socket, url } = &self.listeners[i] else {
            return;
        };
        let generation = url.generation;
        for _ in 0..self.io.max_batch.max(1) {
            match socket.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    let kind = self.worker.on_datagram(
                        i as u32,
                        generation,
                        from,
                        &self.buf[..n],
                        now,
                        &mut self.out,
                    );
                    self.kinds.push(kind);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(%e, "UDP receive failed");
                    return;
                }
            }
        }
    }

    fn receive_sctp(&mut self, i: usize, now: Millis) {
        for _ in 0..self.io.max_batch.max(1) {
            let Listener::Sctp { socket, url } = &self.listeners[i] else {
                return;
            };
            let url = *url;
            let received = socket.recv(&mut self.buf);
            match received {
                Ok(SctpRecv::Data {
                    assoc,
                    ppid,
                    len,
                    complete,
                    ..
                }) => {
                    let Some(&association) = self.sctp.get(&(i, assoc)) else {
                        continue;
                    };
                    if !complete {
                        // Larger than the largest message we accept: not ASAP.
                        self.metrics.limit_refused(Limit::MessageSize);
                        continue;
                    }
                    if ppid != PPID_ASAP {
                        // Checklist PA-21: ENRP (or anything else) on the ASAP port.
                        tracing::debug!(
                            ppid,
                            "SCTP message with a foreign PPID on an ASAP listener; aborting"
                        );
                        if let Listener::Sctp { socket, .. } = &self.listeners[i] {
                            let _ = socket.abort(assoc);
                        }
                        self.forget_sctp(i, assoc, now);
                        continue;
                    }
                    let kind =
                        self.worker
                            .on_message(association, &self.buf[..len], now, &mut self.out);
                    self.kinds.push(kind);
                }
                Ok(SctpRecv::AssocChange { assoc, state }) => match state {
                    AssocState::CommUp | AssocState::Restart => {
                        if self.sctp.contains_key(&(i, assoc)) {
                            continue;
                        }
                        if self.routes.len() >= self.io.max_connections {
                            self.metrics.limit_refused(Limit::Connections);
                            if let Listener::Sctp { socket, .. } = &self.listeners[i] {
                                let _ = socket.abort(assoc);
                            }
                            continue;
                        }
                        let peer_addresses = match &self.listeners[i] {
                            Listener::Sctp { socket, .. } => {
                                socket.peer_addresses(assoc).unwrap_or_default()
                            }
                            _ => Vec::new(),
                        };
                        let info = AssociationInfo {
                            transport: Transport::Sctp,
                            generation: url.generation,
                            peer_addresses,
                        };
                        let association = self.worker.open_association(info, now);
                        self.sctp.insert((i, assoc), association);
                        self.routes
                            .insert(association, Route::Sctp { listener: i, assoc });
                        self.metrics.connection_opened(TransportLabel::Sctp);
                    }
                    _ => self.forget_sctp(i, assoc, now),
                },
                Ok(SctpRecv::Shutdown { assoc }) => self.forget_sctp(i, assoc, now),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(%e, "SCTP receive failed");
                    return;
                }
            }
        }
    }

    /// Sends that found an SCTP socket's send buffer full, and those queued behind them. The
    /// buffer is shared by all the socket's associations, so one peer that stops reading would
    /// starve every other: such peers (a zero receive window) are aborted, then the sends are
    /// tried once more, in order. What still finds the buffer full is dropped.
    fn retry_blocked(&mut self, blocked: Vec<(usize, SctpAssocId, Vec<u8>)>, now: Millis) {
        let mut listeners: Vec<usize> = blocked.iter().map(|b| b.0).collect();
        listeners.sort_unstable();
        listeners.dedup();
        for &listener in &listeners {
            self.abort_stalled(listener, now);
        }
        let mut full = Vec::new();
        for (listener, assoc, bytes) in blocked {
            if full.contains(&listener) || !self.sctp.contains_key(&(listener, assoc)) {
                continue;
            }
            let Listener::Sctp { socket, .. } = &self.listeners[listener] else {
                continue;
            };
            match socket.send(assoc, PPID_ASAP, 0, &bytes) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tracing::debug!("SCTP send buffer full; dropping this turn's other messages");
                    full.push(listener);
                }
                Err(e) => tracing::debug!(%e, "SCTP send failed"),
            }
        }
    }

    /// Aborts the associations of SCTP listener `listener` whose peers have closed their receive
    /// window, at most once per 100 ms per listener (each check is a system call).
    fn abort_stalled(&mut self, listener: usize, now: Millis) {
        let Listener::Sctp { socket, url } = &self.listeners[listener] else {
            return;
        };
        if self.stall_checks[listener].is_some_and(|at| now < at + STALL_CHECK_INTERVAL_MS) {
            return;
        }
        self.stall_checks[listener] = Some(now);
        let stalled: Vec<SctpAssocId> = self
            .sctp
            .keys()
            .filter(|(l, _)| *l == listener)
            .map(|&(_, assoc)| assoc)
            .filter(|&assoc| socket.peer_window(assoc).is_ok_and(|w| w == 0))
            .collect();
        for &assoc in &stalled {
            tracing::debug!(
                listener = %url,
                assoc = assoc.0,
                "aborting an SCTP association whose peer stopped reading while the send buffer \
                 was full"
            );
            let _ = socket.abort(assoc);
            self.metrics.limit_refused(Limit::SendBuffer);
        }
        for assoc in stalled {
            self.forget_sctp(listener, assoc, now);
        }
    }

    fn forget_sctp(&mut self, listener: usize, assoc: SctpAssocId, now: Millis) {
        if let Some(association) = self.sctp.remove(&(listener, assoc)) {
            self.routes.remove(&association);
            self.worker
                .close_association(association, now, &mut self.out);
            self.metrics.connection_closed(TransportLabel::Sctp);
        }
    }

    fn drain_mailbox(&mut self, now: Millis) {
        let index = self.worker.index();
        let shared = Arc::clone(&self.shared);
        shared.mailboxes[index].drain(self.io.max_batch.max(64) * 4, |f| {
            self.worker.on_forward(f, now, &mut self.out);
        });
    }

    /// Carries out what the worker asked for: replies into write buffers (one write per
    /// connection per turn), datagrams, aborts, forwards into other workers' mailboxes.
    fn flush_output(&mut self, now: Millis) {
        // Forwards first: completions may be waiting on them.
        let retry = std::mem::take(&mut self.backlog);
        for (to, f) in retry.into_iter().chain(self.out.take_forwards()) {
            match self.shared.mailboxes[to].post(f) {
                Ok(()) => self.wake[to] = true,
                Err(f) => self.backlog.push((to, f)),
            }
        }
        for (to, wake) in self.wake.iter_mut().enumerate() {
            if std::mem::take(wake) {
                self.shared.wakers[to].wake();
            }
        }
        let mut blocked: Vec<(usize, SctpAssocId, Vec<u8>)> = Vec::new();
        for (target, bytes) in self.out.transmits() {
            match target {
                Target::Association(a) => match self.routes.get(&a) {
                    Some(&Route::Stream(slot)) => {
                        if let Some((conn, _)) = self.conns[slot].as_mut() {
                            if !conn.wants_write() {
                                self.dirty.push(slot);
                            }
                            conn.queue(bytes);
                        }
                    }
                    Some(&Route::Sctp { listener, assoc }) => {
                        // Behind a blocked send of the socket, to keep each association's order.
                        if blocked.iter().any(|b| b.0 == listener) {
                            blocked.push((listener, assoc, bytes.to_vec()));
                        } else if let Listener::Sctp { socket, .. } = &self.listeners[listener] {
                            match socket.send(assoc, PPID_ASAP, 0, bytes) {
                                Ok(_) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                    blocked.push((listener, assoc, bytes.to_vec()));
                                }
                                Err(e) => tracing::debug!(%e, "SCTP send failed"),
                            }
                        }
                    }
                    None => {}
                },
                Target::UdpReply { listener, to } => {
                    if let Some(Listener::Udp { socket, .. }) =
                        self.listeners.get(listener as usize)
                    {
                        send_datagram(socket, to, bytes);
                    }
                }
                Target::UdpSend(to) => {
                    if let Some(sender) = &self.sender {
                        send_datagram(sender, to, bytes);
                    }
                }
            }
        }
        let aborts: Vec<AssociationId> = self.out.aborts().to_vec();
        self.out.clear();
        if !blocked.is_empty() {
            self.retry_blocked(blocked, now);
        }
        let dirty = std::mem::take(&mut self.dirty);
        for slot in dirty {
            let result = match self.conns[slot].as_mut() {
                Some((conn, _)) => conn.flush(),
                None => continue,
            };
            match result {
                Ok(_) => self.update_interest(slot),
                Err(e) => self.close_conn(slot, Closed::Io(e), now),
            }
        }
        for a in aborts {
            match self.routes.get(&a).copied() {
                Some(Route::Stream(slot)) => self.close_conn(slot, Closed::Eof, now),
                Some(Route::Sctp { listener, assoc }) => {
                    if let Listener::Sctp { socket, .. } = &self.listeners[listener] {
                        let _ = socket.abort(assoc);
                    }
                    self.forget_sctp(listener, assoc, now);
                }
                None => {}
            }
        }
        // Closing connections may have produced forwards (their PEs' removal).
        if !self.out.is_empty() {
            for (to, f) in self.out.take_forwards() {
                match self.shared.mailboxes[to].post(f) {
                    Ok(()) => self.shared.wakers[to].wake(),
                    Err(f) => self.backlog.push((to, f)),
                }
            }
            self.out.clear();
        }
    }

    /// Stop: no new work; flush what is queued for up to half a second.
    fn drain_and_stop(&mut self) {
        for l in &self.listeners {
            let fd = match l {
                Listener::Stream { socket, .. } => socket.as_raw_fd(),
                Listener::Udp { socket, .. } => socket.as_raw_fd(),
                Listener::Sctp { socket, .. } => socket.as_raw_fd(),
            };
            let _ = self.epoll.delete(&RawFdRef(fd));
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            let mut pending = false;
            for (conn, _) in self.conns.iter_mut().flatten() {
                if conn.wants_write() {
                    pending |= !matches!(conn.flush(), Ok(true) | Err(_));
                }
            }
            if !pending {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn label(transport: Transport) -> TransportLabel {
    match transport {
        Transport::Sctp => TransportLabel::Sctp,
        Transport::Tcp => TransportLabel::Tcp,
        Transport::Mptcp => TransportLabel::Mptcp,
        Transport::Udp => TransportLabel::Udp,
    }
}
