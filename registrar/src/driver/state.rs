//! What both event loops keep besides their event source and their stream connections: the state
//! machine and its output, the listeners, where each association lives, the mailbox traffic, and
//! the work every loop turn does the same way whatever the driver (configuration reload, timers,
//! mailbox, forwards, the SCTP receive and send loops, metrics of the turn).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rserpool_handlespace::mailbox::Mailbox;
use rserpool_handlespace::{AssociationId, FastMap, Millis, PinnedReader};
use rserpool_net::sctp_udp::{AssociationHandle, SctpUdpEndpoint};
use rserpool_net::{
    AssocState, NetError, SctpAssocId, SctpRecv, SctpRecvBatch, TlsSession, Transport,
    TransportUrl, UdpRecvBatch,
};

use super::admission::SourceTicket;
use super::conn::{Closed, Dispatch, StreamConn};
use super::sctp::{SctpOut, SctpSockets, sctp_listener, send_to_sctp_address};
use super::{IoSettings, Listener, Shared, WorkerSetup, send_datagram};
use crate::core::{
    AssociationInfo, Connect, CoreConfig, Forward, Output, Received, Target, Worker,
};
use crate::metrics::{Limit, Protocol, RequestKind, TransportLabel, WorkerMetrics};

mod sctp_udp;

/// Messages and notifications one `recvmmsg` on an SCTP socket takes at most (epoll).
const SCTP_RECV_BATCH: usize = 32;

/// Datagrams one `recvmmsg` on a UDP listener takes at most (epoll), each into a buffer of the
/// largest message: 16 of 64 KiB on a registrar with ENRP listeners.
const UDP_RECV_BATCH: usize = 16;

/// Least time between two checks of one SCTP socket for peers that stopped reading.
const STALL_CHECK_INTERVAL_MS: Millis = 100;

/// Longest ENRP message accepted: the most a common header's 16-bit length can announce, padded
/// (a handle table page can exceed `limits.max_message_size`, which bounds what PEs and PUs
/// send).
const ENRP_MAX_MESSAGE: usize = 1 << 16;

/// What a driver supplies to the output router ([`LoopState::route_output`]): the writes that
/// go through what the driver owns, its stream connections and how it sends a UDP reply.
pub(super) trait Transmitter {
    /// Queues `bytes` (whole messages, back to back) on the stream connection in `slot`, to be
    /// written by the end of the turn.
    fn queue_stream(&mut self, slot: usize, bytes: &[u8]);

    /// Sends one datagram from the UDP listener `socket` to `to`.
    fn send_datagram(
        &mut self,
        socket: &std::net::UdpSocket,
        to: SocketAddr,
        bytes: &[u8],
    ) -> std::io::Result<()>;

    /// Sends `bytes` to `to` from the UDP listener `socket` as datagrams of `segment` bytes, the
    /// last one shorter: one by one unless the driver has the kernel segment them (UDP GSO).
    fn send_segmented(
        &mut self,
        socket: &std::net::UdpSocket,
        to: SocketAddr,
        bytes: &[u8],
        segment: usize,
    ) -> std::io::Result<()> {
        for datagram in bytes.chunks(segment.max(1)) {
            self.send_datagram(socket, to, datagram)?;
        }
        Ok(())
    }

    /// Sends `datagrams` (destination, bytes in `buf`) from the UDP listener `socket`: one by
    /// one unless the driver batches them.
    fn send_datagrams(
        &mut self,
        socket: &std::net::UdpSocket,
        buf: &[u8],
        datagrams: &[(SocketAddr, std::ops::Range<usize>)],
    ) -> std::io::Result<()> {
        for (to, range) in datagrams {
            self.send_datagram(socket, *to, &buf[range.clone()])?;
        }
        Ok(())
    }
}

/// Where the core's association lives in a driver.
#[derive(Clone, Copy, Debug)]
pub(super) enum Route {
    /// A stream connection in the driver's slot.
    Stream(usize),
    /// An SCTP association.
    Sctp {
        /// Its socket's index in [`LoopState::sctp_sockets`]: the one-to-many listener it is
        /// served on, or its own socket (peeled off).
        socket: usize,
        /// The kernel's association id.
        assoc: SctpAssocId,
    },
    /// An association of SCTP in UDP, run in user space.
    SctpUdp {
        /// The UDP listener whose endpoint holds it.
        listener: usize,
        /// Its handle in the endpoint.
        handle: AssociationHandle,
    },
}

/// The driver-independent part of a worker's event loop.
pub(super) struct LoopState {
    /// The state machine.
    pub worker: Worker,
    /// Its metrics.
    pub metrics: Arc<WorkerMetrics>,
    /// What all workers share.
    pub shared: Arc<Shared>,
    /// The sockets this worker serves, indexed as the core's `UdpReply::listener`.
    pub listeners: Vec<Listener>,
    /// The socket announces and CSP reports leave from (worker 0).
    pub sender: Option<std::net::UdpSocket>,
    /// Driver settings.
    pub io: IoSettings,
    /// Where each open association lives.
    pub routes: FastMap<AssociationId, Route>,
    /// Each incoming association's place in its source address's count.
    tickets: FastMap<AssociationId, SourceTicket>,
    /// What the worker asked for since the driver last carried it out.
    pub out: Output,
    /// The kinds of the requests handled this turn (for the latency histogram).
    pub kinds: Vec<RequestKind>,
    /// This turn's SCTP sends.
    pub sctp_out: SctpOut,
    /// The SCTP listeners and the associations peeled off them.
    pub sctp_sockets: SctpSockets,
    /// ENRP associations the worker asked to open, not yet started by the driver.
    connects: Vec<Connect>,
    /// Associations the worker asked to abort, routed and not yet carried out.
    aborts: Vec<AssociationId>,
    /// Outgoing SCTP associations started on an ENRP one-to-many socket, until the kernel reports
    /// them up: (listener, peer address, the core's association).
    sctp_connects: Vec<(usize, SocketAddr, AssociationId)>,
    /// The core's association of each (SCTP socket, kernel association).
    sctp: FastMap<(usize, SctpAssocId), AssociationId>,
    /// The buffers of the SCTP receives (epoll), made at the first.
    sctp_batch: Option<SctpRecvBatch>,
    /// What a batch of SCTP receives brought, interpreted before it is handled (room kept).
    sctp_received: Vec<std::io::Result<SctpRecv>>,
    /// The buffers of the UDP receives (epoll), made at the first.
    udp_batch: Option<UdpRecvBatch>,
    /// Per SCTP socket, a message arriving in parts: what came so far, or `None` once it
    /// outgrew the largest message accepted (its rest is dropped).
    sctp_partial: FastMap<usize, Option<Vec<u8>>>,
    /// Per SCTP socket: when it was last checked for peers that stopped reading.
    stall_checks: FastMap<usize, Millis>,
    /// The time of the current loop turn ([`Self::begin_turn`]).
    turn_now: Millis,
    /// When the last loop turn ended ([`Self::finish_turn`]): the idle time since then is the
    /// next turn's wait.
    turn_end: Instant,
    /// The SCTP-in-UDP endpoints, per UDP listener that carries SCTP (`sctp+udp://`).
    sctp_udp: FastMap<usize, SctpUdpEndpoint>,
    /// The core's association of each (UDP listener, SCTP-in-UDP association).
    sctp_udp_assocs: FastMap<(usize, AssociationHandle), AssociationId>,
    /// Outgoing SCTP-in-UDP associations until they are up: the core's association and the
    /// peer.
    sctp_udp_connects: FastMap<(usize, AssociationHandle), (AssociationId, SocketAddr)>,
    /// Where a turn's SCTP-in-UDP packets are built before they leave, back to back.
    sctp_udp_buf: Vec<u8>,
    /// The packets in `sctp_udp_buf`: destination and bytes.
    sctp_udp_packets: Vec<(SocketAddr, std::ops::Range<usize>)>,
    /// Per listener: whether the kernel segments UDP sends for it (`UDP_SEGMENT`).
    sctp_udp_gso: Vec<bool>,
    backlog: Backlog<Forward>,
    wake: Vec<bool>,
    buf: Vec<u8>,
    config: Arc<CoreConfig>,
}

impl LoopState {
    /// Takes the worker's setup (the driver keeps nothing else of it) and starts the worker.
    pub fn start(setup: WorkerSetup) -> Self {
        let WorkerSetup {
            mut worker,
            metrics,
            shared,
            listeners,
            sender,
            io,
        } = setup;
        let workers = shared.wakers.len();
        let largest = if listeners.iter().any(|l| l.protocol() == Protocol::Enrp) {
            io.max_message_size.max(ENRP_MAX_MESSAGE)
        } else {
            io.max_message_size
        };
        let config = shared.core_config.load_full();
        let sctp_sockets = SctpSockets::new(listeners.len());
        let sctp_udp = sctp_udp::endpoints(&listeners, &io);
        let sctp_udp_gso = sctp_udp::gso_support(&listeners);
        worker.start(shared.now());
        Self {
            worker,
            metrics,
            shared,
            listeners,
            sender,
            io,
            routes: FastMap::default(),
            tickets: FastMap::default(),
            out: Output::default(),
            kinds: Vec::new(),
            sctp_out: SctpOut::default(),
            sctp_sockets,
            connects: Vec::new(),
            aborts: Vec::new(),
            sctp_connects: Vec::new(),
            sctp: FastMap::default(),
            sctp_batch: None,
            sctp_received: Vec::new(),
            udp_batch: None,
            sctp_partial: FastMap::default(),
            stall_checks: FastMap::default(),
            turn_now: 0,
            turn_end: Instant::now(),
            sctp_udp,
            sctp_udp_assocs: FastMap::default(),
            sctp_udp_connects: FastMap::default(),
            sctp_udp_buf: vec![0; sctp_udp::PACKET_ROOM],
            sctp_udp_packets: Vec::new(),
            sctp_udp_gso,
            backlog: Backlog::new(workers),
            wake: vec![false; workers],
            buf: vec![0; largest.max(64) + 64],
            config,
        }
    }

    /// Hands a configuration published since the last turn (SIGHUP) to the worker.
    pub fn reload_config(&mut self) {
        let latest = self.shared.core_config.load_full();
        if !Arc::ptr_eq(&latest, &self.config) {
            self.config = latest;
            self.worker.reconfigure(Arc::clone(&self.config));
        }
    }

    /// How long to sleep: until the next timer, at most a second (a millisecond while forwards
    /// wait for room in a full mailbox; not at all while this worker's mailbox holds more than
    /// the last turn's bounded drain took, since no one wakes it for those).
    pub fn timeout(&self) -> Duration {
        if !self.shared.mailboxes[self.worker.index()].is_empty() {
            return Duration::ZERO;
        }
        if !self.backlog.is_empty() {
            return Duration::from_millis(1);
        }
        let now = self.shared.millis_at(self.turn_end);
        let next = match (self.worker.next_timeout(), self.sctp_udp_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ms = next.map_or(1_000, |t| t.saturating_sub(now).min(1_000));
        Duration::from_millis(ms)
    }

    /// What a stream connection's received messages are handed to.
    pub fn dispatch<'d>(&'d mut self, now: Millis, reads: &'d PinnedReader<'d>) -> Dispatch<'d> {
        Dispatch::new(&mut self.worker, reads, &mut self.out, &mut self.kinds, now)
    }

    /// The longest message a stream association of `protocol` accepts.
    pub fn max_message(&self, protocol: Protocol) -> usize {
        match protocol {
            Protocol::Asap => self.io.max_message_size,
            Protocol::Enrp => self.io.max_message_size.max(ENRP_MAX_MESSAGE),
        }
    }

    /// Admits one more incoming association from `source` if it fits the worker's connection
    /// limit and the limit per source address; counts and logs a refusal if not. The ticket goes
    /// to [`Self::open_stream`] (or is kept with the SCTP association) and frees the place when
    /// the association closes.
    pub fn admit(&mut self, source: IpAddr) -> Option<SourceTicket> {
        if self.routes.len() >= self.io.max_connections {
            self.metrics.limit_refused(Limit::Connections);
            tracing::debug!(%source, "association refused: the worker's connection limit is reached");
            return None;
        }
        let ticket = self.shared.sources.admit(source);
        if ticket.is_none() {
            self.metrics.limit_refused(Limit::ConnectionsPerSource);
            tracing::debug!(%source, "association refused: limits.max_connections_per_source reached");
        }
        ticket
    }

    /// The TLS session for a connection accepted on `url` (`Ok(None)` for a plain listener),
    /// or for one to the ENRP peer `url` when `outgoing`; an error when the certificates that
    /// would serve it are not configured (the configuration check prevents that).
    pub fn tls_session(
        &self,
        url: &TransportUrl,
        outgoing: bool,
    ) -> Result<Option<TlsSession>, NetError> {
        let Some(asks) = url.tls else {
            return Ok(None);
        };
        let context = self.shared.tls.load();
        let missing = |what: &str| {
            NetError::Tls(format!(
                "{url} needs {what}, which the configuration does not give (tls.certificate, \
                 tls.private_key, tls.ca)"
            ))
        };
        if outgoing {
            let client = context
                .as_ref()
                .and_then(|c| c.client.as_ref())
                .ok_or_else(|| missing("the CA bundle to verify the peer"))?;
            let name = rserpool_net::server_name(None, url.address.ip())?;
            client.connect(name).map(Some)
        } else {
            context
                .as_ref()
                .and_then(|c| c.server.as_ref())
                .and_then(|s| s.accept(asks))
                .map(Some)
                .ok_or_else(|| {
                    missing("a certificate and key (and a CA bundle for client certificates)")
                })
        }
    }

    /// A stream connection of the core's `association` (of `protocol`) on `socket`, over TLS
    /// when `tls` is given.
    pub fn stream_conn<S>(
        &self,
        socket: S,
        association: AssociationId,
        protocol: Protocol,
        tls: Option<TlsSession>,
    ) -> StreamConn<S> {
        let conn = StreamConn::new(
            socket,
            association,
            self.io.buffer_size,
            self.max_message(protocol),
            self.io.max_buffered_bytes,
        );
        match tls {
            Some(session) => conn.with_tls(session),
            None => conn,
        }
    }

    /// Opens the association of a stream connection accepted on `url` (a listener of
    /// `protocol`) from `peer`, held in the driver's `slot`.
    pub fn open_stream(
        &mut self,
        url: TransportUrl,
        protocol: Protocol,
        peer: SocketAddr,
        slot: usize,
        ticket: SourceTicket,
        now: Millis,
    ) -> AssociationId {
        let info = AssociationInfo {
            transport: url.transport,
            generation: url.generation,
            peer_addresses: vec![peer],
            protocol,
        };
        let association = self.worker.open_association(info, now);
        self.routes.insert(association, Route::Stream(slot));
        self.tickets.insert(association, ticket);
        self.metrics.connection_opened(label(url.transport));
        association
    }

    /// Keeps the ENRP associations the output asks to open for [`Self::take_connects`], so that
    /// the output can be cleared in the middle of a turn.
    pub fn keep_connects(&mut self) {
        self.connects.extend_from_slice(self.out.connects());
    }

    /// The ENRP associations to open now. The driver starts each connection, holds it in a slot
    /// noted with [`Self::connecting`], and reports [`Self::connected`] or
    /// [`Self::close_stream`].
    pub fn take_connects(&mut self) -> Vec<Connect> {
        std::mem::take(&mut self.connects)
    }

    /// An outgoing stream connection of `association` was started in the driver's `slot`.
    pub fn connecting(&mut self, association: AssociationId, transport: Transport, slot: usize) {
        self.routes.insert(association, Route::Stream(slot));
        self.metrics.connection_opened(label(transport));
    }

    /// Starts an outgoing SCTP association to an ENRP peer from this worker's ENRP one-to-many
    /// socket of the peer's generation (a non-blocking `connect`); the kernel's
    /// `SCTP_COMM_UP` for the peer's address completes it. A peer that never answers is given up
    /// by the core (its connect timeout aborts the association).
    pub fn start_sctp_connect(&mut self, connect: &Connect) -> Result<(), NetError> {
        let listener = sctp_listener(
            &self.listeners,
            Protocol::Enrp,
            connect.url.generation,
            connect.url.address,
        )
        .ok_or_else(|| {
            NetError::InvalidRequest(format!(
                "{}: no SCTP ENRP endpoint of this generation and address family to connect \
                 from; add one to enrp.listen",
                connect.url
            ))
        })?;
        let Listener::Sctp { socket, .. } = &self.listeners[listener] else {
            unreachable!("found above");
        };
        match socket.socket().connect(&connect.url.address.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(NetError::io(format!("connect {}", connect.url), e)),
        }
        self.sctp_connects
            .push((listener, connect.url.address, connect.association));
        Ok(())
    }

    /// An outgoing connection that could not even be started (no socket, refused at once).
    pub fn connect_failed(&mut self, connect: &Connect, why: &dyn std::fmt::Display, now: Millis) {
        tracing::debug!(peer = %connect.url, %why, "cannot connect to an ENRP peer");
        self.worker
            .close_association(connect.association, now, &mut self.out);
    }

    /// An outgoing connection is up: the worker may send on it from now on.
    pub fn connected(&mut self, association: AssociationId, peer: SocketAddr, now: Millis) {
        self.worker
            .connected(association, vec![peer], now, &mut self.out);
    }

    /// Closes the association of a stream connection that ended for `why`.
    pub fn close_stream(
        &mut self,
        association: AssociationId,
        transport: Transport,
        why: &Closed,
        now: Millis,
    ) {
        match why {
            Closed::Eof => {}
            Closed::Framing(e) => {
                self.metrics.decode_error(None);
                tracing::debug!(%e, "closing a connection whose stream cannot be framed");
            }
            Closed::Io(e) => tracing::debug!(%e, "connection failed"),
            Closed::Tls(e) => {
                self.metrics.limit_refused(Limit::TlsHandshake);
                tracing::debug!(%e, "closing a connection whose TLS session failed");
            }
        }
        self.routes.remove(&association);
        self.tickets.remove(&association);
        self.worker
            .close_association(association, now, &mut self.out);
        self.metrics.connection_closed(label(transport));
    }

    /// Routes the worker's output, the same for every driver: messages to their stream
    /// connection (queued by the driver), SCTP association, UDP listener (sent by the driver) or
    /// sending socket; the aborts and the ENRP connections are kept for the end of the turn
    /// ([`LoopState::carry_out_aborts`], [`LoopState::take_connects`]). Forwards are the
    /// caller's: it posts or keeps them first. Clears the output.
    pub fn route_output(&mut self, driver: &mut impl Transmitter) -> std::io::Result<()> {
        for run in self.out.runs() {
            match run.target {
                Target::Association(a) => match self.routes.get(&a) {
                    Some(&Route::Stream(slot)) => driver.queue_stream(slot, run.bytes()),
                    Some(&Route::Sctp { socket: s, assoc }) => {
                        for bytes in run.messages() {
                            self.sctp_out.send(s, assoc, bytes);
                        }
                    }
                    Some(&Route::SctpUdp { listener, handle }) => {
                        for bytes in run.messages() {
                            sctp_udp::send(
                                &mut self.sctp_udp,
                                &self.listeners,
                                &self.metrics,
                                (listener, handle),
                                bytes,
                                self.turn_now,
                            );
                        }
                    }
                    None => {}
                },
                Target::UdpReply { listener, to } => {
                    if let Some(Listener::Udp { socket, .. }) =
                        self.listeners.get(listener as usize)
                    {
                        for bytes in run.messages() {
                            driver.send_datagram(socket, to, bytes)?;
                        }
                    }
                }
                Target::UdpSend(to) => {
                    if let Some(sender) = &self.sender {
                        run.messages()
                            .for_each(|bytes| send_datagram(sender, to, bytes));
                    }
                }
                Target::SctpAddress(to, generation) => {
                    for bytes in run.messages() {
                        send_to_sctp_address(
                            &self.listeners,
                            &self.sctp_sockets,
                            to,
                            generation,
                            bytes,
                        );
                    }
                }
            }
        }
        self.aborts.extend_from_slice(self.out.aborts());
        self.keep_connects();
        self.out.clear();
        Ok(())
    }

    /// Whether aborts wait to be carried out ([`Self::carry_out_aborts`]).
    pub fn aborts_pending(&self) -> bool {
        !self.aborts.is_empty()
    }

    /// Carries out the aborts routed so far: SCTP associations are aborted here; returns the
    /// driver's stream connections to close.
    pub fn carry_out_aborts(&mut self, now: Millis) -> Vec<usize> {
        let mut streams = Vec::new();
        for a in std::mem::take(&mut self.aborts) {
            match self.routes.get(&a).copied() {
                Some(Route::Stream(slot)) => streams.push(slot),
                Some(Route::Sctp { socket, assoc }) => self.abort_sctp(socket, assoc, now),
                Some(Route::SctpUdp { listener, handle }) => {
                    self.abort_sctp_udp(listener, handle, now);
                }
                None => {}
            }
        }
        streams
    }

    /// Receives from UDP listener `i` with `recvmmsg` ([`UDP_RECV_BATCH`] datagrams a call, at
    /// most `io.max_batch` in all) and hands each datagram to the worker (epoll, level-triggered:
    /// what the budget leaves is reported again; io_uring receives them with its multishot
    /// `recvmsg`).
    pub fn receive_datagrams(&mut self, i: usize, now: Millis, reads: &PinnedReader<'_>) {
        let mut budget = self.io.max_batch.max(1);
        let mut batch = self
            .udp_batch
            .take()
            .unwrap_or_else(|| UdpRecvBatch::new(UDP_RECV_BATCH, self.buf.len()));
        while let Listener::Udp { socket, .. } = &self.listeners[i] {
            match batch.recv(socket) {
                Ok(n) => {
                    for (from, bytes) in batch.datagrams() {
                        self.on_datagram(i, from, bytes, now, reads);
                    }
                    budget = budget.saturating_sub(n);
                    if n < batch.capacity() || budget == 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(%e, "UDP receive failed");
                    break;
                }
            }
        }
        self.udp_batch = Some(batch);
    }

    /// Hands a datagram received on UDP listener `listener` to the worker: an ASAP request, or
    /// an ENRP presence.
    pub fn on_datagram(
        &mut self,
        listener: usize,
        from: SocketAddr,
        bytes: &[u8],
        now: Millis,
        reads: &PinnedReader<'_>,
    ) {
        let Some(Listener::Udp { url, protocol, .. }) = self.listeners.get(listener) else {
            return;
        };
        if url.transport == Transport::SctpUdp {
            self.on_sctp_udp_packet(listener, from, bytes, now, reads);
            return;
        }
        let received = Received::Datagram {
            listener: listener as u32,
            protocol: *protocol,
            generation: url.generation,
            from,
            message: bytes,
        };
        let kind = self.worker.handle(reads, received, now, &mut self.out);
        self.kinds.push(kind);
    }

    /// Receives from SCTP socket `s` with `recvmmsg` ([`SCTP_RECV_BATCH`] messages a call, at
    /// most `io.max_batch` in all) and handles each message and notification
    /// ([`Self::sctp_received`]). Returns whether the socket is drained (false: the budget ran
    /// out first).
    pub fn receive_sctp(&mut self, s: usize, now: Millis, reads: &PinnedReader<'_>) -> bool {
        let mut budget = self.io.max_batch.max(1);
        let mut batch = self.sctp_batch.take().unwrap_or_else(|| {
            let size = self.io.buffer_size.max(self.io.max_message_size) + 64;
            SctpRecvBatch::new(SCTP_RECV_BATCH, size)
        });
        let mut received = std::mem::take(&mut self.sctp_received);
        let drained = loop {
            let Some((socket, ..)) = self.sctp_sockets.get(&self.listeners, s) else {
                break true;
            };
            let max = budget.min(batch.capacity());
            match socket.recv_batch(&mut batch, max) {
                Ok(n) => {
                    received.extend(batch.messages(socket).map(|(r, _)| r));
                    for (i, r) in received.drain(..).enumerate() {
                        self.sctp_received(s, r, batch.payload(i), now, reads);
                    }
                    budget -= n.min(budget);
                    if n < max {
                        break true;
                    }
                    if budget == 0 {
                        break false;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.sctp_received(s, Err(e), &[], now, reads);
                    break true;
                }
            }
        };
        self.sctp_received = received;
        self.sctp_batch = Some(batch);
        drained
    }

    /// Handles what one receive on SCTP socket `s` brought (`payload`: a message's bytes, or
    /// the part of one that fitted), however the driver received it: a listener, or an
    /// association peeled off one. Messages go to the worker (one that came in parts once its
    /// last part is here), notifications open and close associations; an association that comes
    /// up on a listener is peeled off onto a socket of its own, which the driver learns from
    /// [`SctpSockets::take_opened`].
    pub fn sctp_received(
        &mut self,
        s: usize,
        received: std::io::Result<SctpRecv>,
        payload: &[u8],
        now: Millis,
        reads: &PinnedReader<'_>,
    ) {
        let Some((_, url, protocol)) = self.sctp_sockets.get(&self.listeners, s) else {
            return;
        };
        match received {
            Ok(SctpRecv::Data {
                assoc,
                ppid,
                complete,
                ..
            }) => {
                let Some((_, association)) = self.sctp_association(s, assoc) else {
                    return;
                };
                // The largest message the protocol accepts; a longer one is dropped whole.
                let limit = match protocol {
                    Protocol::Enrp => ENRP_MAX_MESSAGE,
                    Protocol::Asap => self.io.max_message_size,
                };
                let partial = self.sctp_partial.remove(&s);
                if partial.is_none() && complete {
                    if payload.len() > limit {
                        self.metrics.limit_refused(Limit::MessageSize);
                        return;
                    }
                    let received = Received::Message {
                        association,
                        ppid: Some(ppid),
                        message: payload,
                    };
                    let kind = self.worker.handle(reads, received, now, &mut self.out);
                    self.kinds.push(kind);
                    return;
                }
                // A message in parts (larger than a receive buffer): kept until its last part,
                // up to the limit; beyond that its rest is dropped.
                let mut sofar = partial.unwrap_or_else(|| Some(Vec::new()));
                if let Some(bytes) = &mut sofar {
                    if bytes.len() + payload.len() > limit {
                        self.metrics.limit_refused(Limit::MessageSize);
                        sofar = None;
                    } else {
                        bytes.extend_from_slice(payload);
                    }
                }
                match sofar {
                    _ if !complete => {
                        self.sctp_partial.insert(s, sofar);
                    }
                    Some(message) => {
                        let received = Received::Message {
                            association,
                            ppid: Some(ppid),
                            message: &message,
                        };
                        let kind = self.worker.handle(reads, received, now, &mut self.out);
                        self.kinds.push(kind);
                    }
                    None => {}
                }
            }
            Ok(SctpRecv::AssocChange {
                assoc,
                state: AssocState::CommUp | AssocState::Restart,
            }) => {
                if self.sctp_association(s, assoc).is_some() || self.outgoing_sctp_up(s, assoc, now)
                {
                    return;
                }
                self.sctp_incoming(s, assoc, url, protocol, now);
            }
            Ok(SctpRecv::AssocChange { assoc, .. } | SctpRecv::Shutdown { assoc }) => {
                let on = self.sctp_association(s, assoc).map_or(s, |(on, _)| on);
                self.forget_sctp(on, assoc, now);
            }
            Ok(SctpRecv::OtherNotification) => {}
            Err(e) => {
                tracing::debug!(%e, "SCTP receive failed");
                // A peeled-off socket fails only with its association.
                if let Some(assoc) = self.sctp_sockets.association(s) {
                    self.forget_sctp(s, assoc, now);
                }
            }
        }
    }

    /// The socket and core association of SCTP association `assoc` that came on socket `s`: a
    /// listener's association may have been peeled off after the driver received its next
    /// messages from the listener (io_uring receives ahead), and is found on its own socket.
    fn sctp_association(&self, s: usize, assoc: SctpAssocId) -> Option<(usize, AssociationId)> {
        if let Some(&association) = self.sctp.get(&(s, assoc)) {
            return Some((s, association));
        }
        let own = self
            .sctp_sockets
            .peeled_slot(assoc)
            .filter(|&own| own != s)?;
        self.sctp
            .get(&(own, assoc))
            .map(|&association| (own, association))
    }

    /// An association came up on SCTP listener `listener`, started by the peer: admitted (or
    /// aborted), peeled off onto a socket of its own where the kernel allows, opened in the
    /// worker.
    fn sctp_incoming(
        &mut self,
        listener: usize,
        assoc: SctpAssocId,
        url: TransportUrl,
        protocol: Protocol,
        now: Millis,
    ) {
        let Some((socket, ..)) = self.sctp_sockets.get(&self.listeners, listener) else {
            return;
        };
        let peer_addresses = socket.peer_addresses(assoc).unwrap_or_default();
        // A multi-homed peer counts as its primary (first) address.
        let source = peer_addresses
            .first()
            .map_or(IpAddr::from([0, 0, 0, 0]), SocketAddr::ip);
        let Some(ticket) = self.admit(source) else {
            if let Some((socket, ..)) = self.sctp_sockets.get(&self.listeners, listener) {
                let _ = socket.abort(assoc);
            }
            return;
        };
        let s = self
            .sctp_sockets
            .peel_off(&self.listeners, listener, assoc, &peer_addresses)
            .unwrap_or(listener);
        let info = AssociationInfo {
            transport: Transport::Sctp,
            generation: url.generation,
            peer_addresses,
            protocol,
        };
        let association = self.worker.open_association(info, now);
        self.tickets.insert(association, ticket);
        self.sctp.insert((s, assoc), association);
        self.routes
            .insert(association, Route::Sctp { socket: s, assoc });
        self.metrics.connection_opened(TransportLabel::Sctp);
    }

    /// Sends the turn's queued SCTP messages with one `sendmmsg` per socket (a batch call each
    /// [`rserpool_net::SCTP_BATCH_MAX`] messages), each socket's in order; those that find the
    /// send buffer full, and the rest of their socket's, join the blocked messages for
    /// [`Self::retry_blocked_sctp`] (the epoll driver; io_uring submits them on its ring).
    pub fn send_queued_sctp(&mut self) {
        let mut queued = self.sctp_out.take_queued();
        let (sockets, out) = (&self.sctp_sockets, &mut self.sctp_out);
        queued.retain_mut(|(s, assoc, message)| {
            let carried = sockets.carries(*s, *assoc);
            if !carried {
                out.reuse(std::mem::take(message));
            }
            carried
        });
        // Stable: each socket's messages keep their order.
        queued.sort_by_key(|q| q.0);
        let mut runs = Vec::new();
        let mut start = 0;
        while start < queued.len() {
            let s = queued[start].0;
            let end = start + queued[start..].iter().take_while(|q| q.0 == s).count();
            let sent = match self.sctp_sockets.get(&self.listeners, s) {
                Some((socket, _, protocol)) => {
                    let messages: Vec<(SctpAssocId, u32, &[u8])> = queued[start..end]
                        .iter()
                        .map(|(_, assoc, m)| (*assoc, protocol.ppid(), &m[..]))
                        .collect();
                    match socket.send_batch(&messages) {
                        Ok(sent) => sent,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                        Err(e) => {
                            // The first message's association failed: the others are tried
                            // one by one.
                            tracing::debug!(%e, "SCTP send failed");
                            1
                        }
                    }
                }
                None => end - start,
            };
            runs.push((start + sent.min(end - start), end));
            start = end;
        }
        let mut unsent = runs.into_iter().peekable();
        for (i, (s, assoc, message)) in queued.drain(..).enumerate() {
            while unsent.peek().is_some_and(|&(_, end)| end <= i) {
                unsent.next();
            }
            match unsent.peek() {
                Some(&(from, _)) if i >= from => self.sctp_out.blocked.push((s, assoc, message)),
                _ => self.sctp_out.reuse(message),
            }
        }
        self.sctp_out.return_queue(queued);
    }

    /// Ends a turn's SCTP sends: those that found a socket's send buffer full, and those queued
    /// behind them. A listener's buffer is shared by all its associations, so one peer that stops
    /// reading would starve every other; a peeled-off association's is its own. Peers that stopped
    /// reading (a zero receive window) are aborted, then the sends are tried once more, in order.
    /// What still finds the buffer full is dropped. Closing the aborted associations may leave
    /// forwards in the output.
    pub fn retry_blocked_sctp(&mut self, now: Millis) {
        if self.sctp_out.blocked.is_empty() {
            return;
        }
        let mut blocked = std::mem::take(&mut self.sctp_out.blocked);
        let mut sockets: Vec<usize> = blocked.iter().map(|b| b.0).collect();
        sockets.sort_unstable();
        sockets.dedup();
        for &s in &sockets {
            self.abort_stalled(s, now);
        }
        let mut full = Vec::new();
        for (s, assoc, bytes) in blocked.drain(..) {
            let socket = self.sctp_sockets.get(&self.listeners, s);
            if let Some((socket, _, protocol)) = socket
                && !full.contains(&s)
                && self.sctp.contains_key(&(s, assoc))
            {
                match socket.send(assoc, protocol.ppid(), 0, &bytes) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        tracing::debug!(
                            "SCTP send buffer full; dropping this turn's other messages"
                        );
                        full.push(s);
                    }
                    Err(e) => tracing::debug!(%e, "SCTP send failed"),
                }
            }
            self.sctp_out.reuse(bytes);
        }
        self.sctp_out.blocked = blocked;
    }

    /// Aborts the associations of SCTP socket `s` whose peers have closed their receive window,
    /// at most once per 100 ms per socket (each check is a system call).
    fn abort_stalled(&mut self, s: usize, now: Millis) {
        let Some((socket, url, _)) = self.sctp_sockets.get(&self.listeners, s) else {
            return;
        };
        if self
            .stall_checks
            .get(&s)
            .is_some_and(|&at| now < at + STALL_CHECK_INTERVAL_MS)
        {
            return;
        }
        self.stall_checks.insert(s, now);
        // A peeled-off socket holds its one association; a listener, any number of them.
        let on_socket: Vec<SctpAssocId> = match self.sctp_sockets.association(s) {
            Some(assoc) => vec![assoc],
            None => self
                .sctp
                .keys()
                .filter(|(on, _)| *on == s)
                .map(|&(_, assoc)| assoc)
                .collect(),
        };
        let stalled: Vec<SctpAssocId> = on_socket
            .into_iter()
            .filter(|&assoc| socket.peer_window(assoc).is_ok_and(|w| w == 0))
            .collect();
        for assoc in stalled {
            tracing::debug!(
                listener = %url,
                assoc = assoc.0,
                "aborting an SCTP association whose peer stopped reading while the send buffer \
                 was full"
            );
            self.metrics.limit_refused(Limit::SendBuffer);
            self.abort_sctp(s, assoc, now);
        }
    }

    /// Aborts an association of SCTP socket `s` and closes it in the worker.
    pub fn abort_sctp(&mut self, s: usize, assoc: SctpAssocId, now: Millis) {
        if let Some((socket, ..)) = self.sctp_sockets.get(&self.listeners, s) {
            let _ = socket.abort(assoc);
        }
        self.forget_sctp(s, assoc, now);
    }

    /// An association came up on listener `i`: if it is one this worker started (its peer is a
    /// pending connect's address and the core still waits for it), the core learns it is up.
    fn outgoing_sctp_up(&mut self, i: usize, assoc: SctpAssocId, now: Millis) -> bool {
        self.sctp_connects
            .retain(|&(_, _, association)| self.worker.has_association(association));
        if self.sctp_connects.is_empty() || self.sctp_sockets.is_peeled(i) {
            return false;
        }
        let Some((socket, ..)) = self.sctp_sockets.get(&self.listeners, i) else {
            return false;
        };
        let peer_addresses = socket.peer_addresses(assoc).unwrap_or_default();
        let Some(k) = self
            .sctp_connects
            .iter()
            .position(|(l, address, _)| *l == i && peer_addresses.contains(address))
        else {
            return false;
        };
        let (_, _, association) = self.sctp_connects.swap_remove(k);
        self.sctp.insert((i, assoc), association);
        self.routes
            .insert(association, Route::Sctp { socket: i, assoc });
        self.metrics.connection_opened(TransportLabel::Sctp);
        self.worker
            .connected(association, peer_addresses, now, &mut self.out);
        true
    }

    /// Association `assoc` of SCTP socket `s` has ended: closed in the worker; a peeled-off
    /// socket closes with it.
    fn forget_sctp(&mut self, s: usize, assoc: SctpAssocId, now: Millis) {
        if self.sctp_sockets.is_peeled(s) {
            self.sctp_sockets.close(s);
            self.stall_checks.remove(&s);
            self.sctp_partial.remove(&s);
        }
        if let Some(association) = self.sctp.remove(&(s, assoc)) {
            self.routes.remove(&association);
            self.tickets.remove(&association);
            self.worker
                .close_association(association, now, &mut self.out);
            self.metrics.connection_closed(TransportLabel::Sctp);
        }
    }

    /// When the last loop turn ended: the idle time of the next one starts there. (The clock
    /// is read twice a turn, when it starts and when it ends: where there is no vDSO, as in
    /// user-mode Linux, each read is a system call.)
    pub fn idle_since(&self) -> Instant {
        self.turn_end
    }

    /// Starts a loop turn at `now` (the time the turn's work is stamped with).
    pub fn begin_turn(&mut self, now: Millis) {
        self.turn_now = now;
        self.worker.begin_turn();
    }

    /// Publishes the worker's changes of the turn so far ([`Worker::publish_turn`]), before
    /// output leaves; pushes to subscribers join the output. Stamped with the turn's time: the
    /// clock is read once a turn, not per message (a system call where there is no vDSO, as in
    /// user-mode Linux).
    pub fn publish_turn(&mut self) {
        self.worker.publish_turn(self.turn_now, &mut self.out);
    }

    /// Handles what other workers forwarded (a bounded batch).
    pub fn drain_mailbox(&mut self, now: Millis) {
        let index = self.worker.index();
        let shared = Arc::clone(&self.shared);
        shared.mailboxes[index].drain(self.io.max_batch.max(64) * 4, |f| {
            self.worker.on_forward(f, now, &mut self.out);
        });
    }

    /// Runs the worker's timers if one is due.
    pub fn run_timers(&mut self, now: Millis) {
        if self.worker.next_timeout().is_some_and(|t| t <= now) {
            self.worker.on_timer(now, &mut self.out);
        }
    }

    /// Keeps the output's forwards for the next [`Self::post_forwards`], so that the output can
    /// be cleared in the middle of a turn.
    pub fn keep_forwards(&mut self) {
        for (to, f) in self.out.take_forwards() {
            self.backlog.keep(to, f);
        }
    }

    /// Posts the forwards a full mailbox refused before, then the output's, to the other
    /// workers' mailboxes in order, and wakes each receiver once. A mailbox that refuses one
    /// is not tried again this turn: the cost is the forwards posted plus the new ones, however
    /// long the backlog (a storm of registrations for another worker's shard).
    pub fn post_forwards(&mut self) {
        let forwards = self.out.take_forwards();
        self.backlog
            .post(&self.shared.mailboxes, forwards, &mut self.wake);
        for (to, wake) in self.wake.iter_mut().enumerate() {
            if std::mem::take(wake) {
                self.shared.wakers[to].wake();
            }
        }
    }

    /// Ends a loop turn: shard gauges, the latency of the requests handled, the turn's timing.
    pub fn finish_turn(&mut self, idle_start: Instant, busy_start: Instant, events: usize) {
        self.worker.publish_gauges();
        self.turn_end = Instant::now();
        let elapsed = self.turn_end - busy_start;
        // Every request of the turn took the turn's time: one observation per kind.
        let mut counts = [0u64; RequestKind::ALL.len()];
        for kind in self.kinds.drain(..) {
            counts[kind as usize] += 1;
        }
        for (kind, count) in RequestKind::ALL.into_iter().zip(counts) {
            if count > 0 {
                self.metrics
                    .latencies(kind, elapsed.as_nanos() as u64, count);
            }
        }
        self.metrics.loop_turn(
            elapsed.as_nanos() as u64,
            (busy_start - idle_start).as_nanos() as u64,
            events as u64,
        );
    }
}

/// The metrics label of a transport.
pub(super) fn label(transport: Transport) -> TransportLabel {
    match transport {
        Transport::Sctp => TransportLabel::Sctp,
        Transport::Tcp => TransportLabel::Tcp,
        Transport::Mptcp => TransportLabel::Mptcp,
        Transport::Udp => TransportLabel::Udp,
        Transport::SctpUdp => TransportLabel::SctpUdp,
    }
}

/// Per receiving worker, the forwards its full mailbox refused, in order: posted before any newer
/// one, and a refusing mailbox is not tried again in the same turn, so a long backlog (a storm
/// of registrations for another worker's shard) costs only what is posted.
#[derive(Debug)]
struct Backlog<T> {
    waiting: Vec<VecDeque<T>>,
}

impl<T> Backlog<T> {
    fn new(workers: usize) -> Self {
        Self {
            waiting: (0..workers).map(|_| VecDeque::new()).collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.waiting.iter().all(VecDeque::is_empty)
    }

    /// Keeps a forward for the next [`Self::post`].
    fn keep(&mut self, to: usize, forward: T) {
        self.waiting[to].push_back(forward);
    }

    /// Posts what waits, then `forwards` (receiver, forward), in order per receiver; keeps what
    /// a full mailbox refuses. Sets `wake[to]` for each receiver that got something.
    fn post(
        &mut self,
        mailboxes: &[Mailbox<T>],
        forwards: impl IntoIterator<Item = (usize, T)>,
        wake: &mut [bool],
    ) {
        for (to, waiting) in self.waiting.iter_mut().enumerate() {
            while let Some(f) = waiting.pop_front() {
                match mailboxes[to].post(f) {
                    Ok(()) => wake[to] = true,
                    Err(f) => {
                        waiting.push_front(f);
                        break;
                    }
                }
            }
        }
        for (to, f) in forwards {
            let waiting = &mut self.waiting[to];
            if !waiting.is_empty() {
                waiting.push_back(f);
                continue;
            }
            match mailboxes[to].post(f) {
                Ok(()) => wake[to] = true,
                Err(f) => waiting.push_back(f),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiver's forwards arrive in the order they were sent, whatever its mailbox refused;
    /// a full mailbox takes nothing more in the turn; another receiver is not held up.
    #[test]
    fn forwards_refused_by_a_full_mailbox_keep_their_order_and_hold_up_no_one_else() {
        let mailboxes: Vec<Mailbox<u32>> = vec![Mailbox::new(2), Mailbox::new(100)];
        let mut backlog = Backlog::new(2);
        let mut wake = [false; 2];
        backlog.post(
            &mailboxes,
            (0..5).map(|i| (0, i)).chain([(1, 100)]),
            &mut wake,
        );
        assert_eq!(wake, [true, true]);
        assert!(!backlog.is_empty());
        let mut got = Vec::new();
        mailboxes[0].drain(1, |f| got.push(f));
        // Room for one: the oldest waiting goes first, the new one waits behind the rest.
        backlog.post(&mailboxes, [(0, 5)], &mut wake);
        mailboxes[0].drain(100, |f| got.push(f));
        backlog.post(&mailboxes, [], &mut wake);
        mailboxes[0].drain(100, |f| got.push(f));
        backlog.post(&mailboxes, [], &mut wake);
        mailboxes[0].drain(100, |f| got.push(f));
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
        assert!(backlog.is_empty());
        let mut other = Vec::new();
        mailboxes[1].drain(100, |f| other.push(f));
        assert_eq!(other, [100]);
    }
}
