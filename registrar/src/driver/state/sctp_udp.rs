//! SCTP in UDP (RFC 6951, `sctp+udp://`) in the event loop: each UDP listener that carries it
//! has an [`SctpUdpEndpoint`] (the associations of its protocol's SCTP port: ASAP 3863, ENRP
//! 9901); the listener's datagrams go to it, its associations open and close the core's, their
//! messages go to the core as kernel SCTP's do, the core's output to them is queued on the
//! association, and the packets leave with the turn's other output ([`LoopState::flush_sctp_udp`]).
//! Timers run with the worker's ([`LoopState::run_sctp_udp_timers`]).

use std::net::SocketAddr;

use rserpool_handlespace::{FastMap, Millis, PinnedReader};
use rserpool_net::sctp_udp::{
    AssociationConfig, AssociationHandle, DEFAULT_LOOPBACK_MTU, EndpointConfig, EndpointError,
    EndpointEvent, PassiveConfig, SctpUdpEndpoint,
};
use rserpool_net::{NetError, Transport, UDP_MAX_SEGMENTS};
use rserpool_protocol::{ASAP_PORT, ENRP_PORT};

use super::{ENRP_MAX_MESSAGE, LoopState, Route, Transmitter};
use crate::core::{AssociationInfo, Connect, Received};
use crate::driver::{IoSettings, Listener};
use crate::metrics::{Limit, Protocol, SctpUdpOutcome, TransportLabel, WorkerMetrics};

/// Room for one packet: the largest a UDP datagram carries.
pub(super) const PACKET_ROOM: usize = 65_536;

/// The SCTP port of `protocol` inside UDP.
const fn sctp_port(protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Asap => ASAP_PORT,
        Protocol::Enrp => ENRP_PORT,
    }
}

/// An endpoint for each UDP listener of `sctp+udp://`: it accepts up to the worker's connection
/// limit; messages up to the protocol's limit (ASAP `limits.max_message_size`, ENRP 64 KiB);
/// a retransmission timeout from 300 ms: above the 200 ms a peer may delay its SACK (Linux's and
/// ours; below it, a lone message such as an ENRP handle update was sent again for nothing,
/// seen against RSPLIB), yet well under RFC 4960's 1 s minimum, which would hold a lost reply of
/// a registrar whose peers are near for a second.
pub(super) fn endpoints(
    listeners: &[Listener],
    io: &IoSettings,
) -> FastMap<usize, SctpUdpEndpoint> {
    let mut endpoints = FastMap::default();
    for (i, listener) in listeners.iter().enumerate() {
        let Listener::Udp { url, protocol, .. } = listener else {
            continue;
        };
        if url.transport != Transport::SctpUdp {
            continue;
        }
        let max_message_size = match protocol {
            Protocol::Asap => io.max_message_size,
            Protocol::Enrp => ENRP_MAX_MESSAGE,
        };
        let port = sctp_port(*protocol);
        let config = EndpointConfig {
            passive: Some(PassiveConfig {
                local_port: port,
                a_rwnd: 262_144,
                outbound_streams: 16,
                inbound_streams: 16,
                cookie_lifespan_ms: 60_000,
            }),
            association: AssociationConfig {
                max_message_size,
                rto_initial_ms: 500,
                rto_min_ms: 300,
                ..AssociationConfig::default()
            },
            max_associations: io.max_connections,
            // What a loopback peer sends must fit one receive buffer whole (io_uring's are
            // `io.buffer_size`, with the datagram's header and address before the payload).
            loopback_mtu: DEFAULT_LOOPBACK_MTU.min(io.buffer_size.saturating_sub(512)),
            ..EndpointConfig::server(port, io.max_connections)
        };
        match SctpUdpEndpoint::with_random_secret(config) {
            Ok(endpoint) => {
                endpoints.insert(i, endpoint);
            }
            Err(e) => tracing::error!(listener = %url, %e, "cannot serve SCTP in UDP"),
        }
    }
    endpoints
}

/// Per listener, whether the kernel segments its UDP sends (`UDP_SEGMENT`, Linux 4.18): checked
/// once for each `sctp+udp://` listener.
pub(super) fn gso_support(listeners: &[Listener]) -> Vec<bool> {
    listeners
        .iter()
        .map(|l| match l {
            Listener::Udp { socket, url, .. } if url.transport == Transport::SctpUdp => {
                rserpool_net::udp_gso_available(std::os::fd::AsFd::as_fd(socket))
            }
            _ => false,
        })
        .collect()
}

/// Queues `bytes` on the SCTP-in-UDP association `(listener, handle)` with its protocol's PPID.
/// A message its send buffer has no room for (a peer that does not acknowledge) is dropped and
/// counted, as kernel SCTP's would be.
pub(super) fn send(
    endpoints: &mut FastMap<usize, SctpUdpEndpoint>,
    listeners: &[Listener],
    metrics: &WorkerMetrics,
    (listener, handle): (usize, AssociationHandle),
    bytes: &[u8],
    now: Millis,
) {
    let (Some(endpoint), Some(l)) = (endpoints.get_mut(&listener), listeners.get(listener)) else {
        return;
    };
    match endpoint.send(handle, 0, l.protocol().ppid(), bytes, now) {
        Ok(()) => {}
        Err(EndpointError::Send(rserpool_net::sctp_udp::SendError::BufferFull { .. })) => {
            metrics.limit_refused(Limit::SendBuffer);
            tracing::debug!("SCTP-in-UDP send buffer full; message dropped");
        }
        Err(e) => tracing::debug!(%e, "SCTP-in-UDP send failed"),
    }
}

/// How many packets at the start of `packets` (destination, bytes back to back) one UDP GSO send
/// carries: to one destination, of the first one's size but the last (no larger), at most
/// [`UDP_MAX_SEGMENTS`] and 64 KiB in all. A message of several packets (a handle table to an
/// ENRP peer) makes such trains; replies to a PU's pipelined requests share packets instead.
fn train_len(packets: &[(SocketAddr, std::ops::Range<usize>)]) -> usize {
    let Some((to, first)) = packets.first() else {
        return 0;
    };
    let size = first.len();
    let mut n = 1;
    let mut total = size;
    for (next_to, range) in &packets[1..] {
        if next_to != to
            || range.len() > size
            || n == UDP_MAX_SEGMENTS
            || total + range.len() > MAX_GSO_BYTES
        {
            break;
        }
        n += 1;
        total += range.len();
        if range.len() < size {
            break;
        }
    }
    n
}

/// The most bytes one UDP GSO send carries (a UDP datagram's limit, less headers).
const MAX_GSO_BYTES: usize = 65_000;

impl LoopState {
    /// An SCTP packet that arrived in a datagram on UDP listener `listener` from `from`.
    pub(super) fn on_sctp_udp_packet(
        &mut self,
        listener: usize,
        from: SocketAddr,
        packet: &[u8],
        now: Millis,
        reads: &PinnedReader<'_>,
    ) {
        let Some(endpoint) = self.sctp_udp.get_mut(&listener) else {
            return;
        };
        endpoint.handle_datagram(from, packet, now);
        self.sctp_udp_events(listener, now, Some(reads));
    }

    /// The earliest deadline of the SCTP-in-UDP endpoints.
    pub(super) fn sctp_udp_timeout(&self) -> Option<Millis> {
        self.sctp_udp
            .values()
            .filter_map(SctpUdpEndpoint::poll_timeout)
            .min()
    }

    /// Runs the SCTP-in-UDP timers due at `now` (retransmissions, delayed SACKs, heartbeats,
    /// handshake retries) and what they bring (associations lost or given up).
    pub fn run_sctp_udp_timers(&mut self, now: Millis, reads: &PinnedReader<'_>) {
        let due: Vec<usize> = self
            .sctp_udp
            .iter()
            .filter(|(_, e)| e.poll_timeout().is_some_and(|t| t <= now))
            .map(|(&i, _)| i)
            .collect();
        for i in due {
            if let Some(endpoint) = self.sctp_udp.get_mut(&i) {
                endpoint.handle_timeouts(now);
            }
            self.sctp_udp_events(i, now, Some(reads));
        }
    }

    /// Sends what the SCTP-in-UDP endpoints have to send (data, SACKs, handshake answers,
    /// retransmissions) through the driver: the turn's one submission on io_uring.
    pub fn flush_sctp_udp(&mut self, driver: &mut impl Transmitter) -> std::io::Result<()> {
        if self.sctp_udp.is_empty() {
            return Ok(());
        }
        let mut totals = [0u64; SctpUdpOutcome::ALL.len()];
        for endpoint in self.sctp_udp.values() {
            let s = endpoint.stats();
            let by_outcome = [
                s.handshake_replies,
                s.out_of_the_blue_answered,
                s.dropped,
                s.replies_dropped,
                s.refused_full,
                s.restarts,
            ];
            for (total, n) in totals.iter_mut().zip(by_outcome) {
                *total += n;
            }
        }
        self.metrics.sctp_udp_totals(totals);
        let (buf, packets) = (&mut self.sctp_udp_buf, &mut self.sctp_udp_packets);
        for (i, endpoint) in &mut self.sctp_udp {
            let Some(Listener::Udp { socket, .. }) = self.listeners.get(*i) else {
                continue;
            };
            // The endpoint's packets one after the other in `buf`, sent together (the epoll
            // driver with `sendmmsg`).
            packets.clear();
            let mut end = 0;
            loop {
                if buf.len() < end + PACKET_ROOM {
                    buf.resize(end + PACKET_ROOM, 0);
                }
                let Some((to, len)) = endpoint.poll_transmit(&mut buf[end..]) else {
                    break;
                };
                packets.push((to, end..end + len));
                end += len;
            }
            let gso = self.sctp_udp_gso.get(*i).copied().unwrap_or(false);
            // Packets in order: a run of single ones, then a train (one GSO send), and so on.
            let (mut singles, mut next) = (0, 0);
            while next < packets.len() {
                let train = if gso { train_len(&packets[next..]) } else { 1 };
                if train < 2 {
                    next += 1;
                    continue;
                }
                driver.send_datagrams(socket, buf, &packets[singles..next])?;
                let (to, first) = &packets[next];
                let end = packets[next + train - 1].1.end;
                driver.send_segmented(socket, *to, &buf[first.start..end], first.len())?;
                next += train;
                singles = next;
            }
            driver.send_datagrams(socket, buf, &packets[singles..])?;
        }
        // A burst (a handle table to a peer) leaves its room; the usual turn needs little.
        if buf.len() > 4 * PACKET_ROOM {
            buf.truncate(PACKET_ROOM);
            buf.shrink_to_fit();
        }
        Ok(())
    }

    /// Starts an outgoing SCTP-in-UDP association to an ENRP peer from this worker's ENRP
    /// listener of the peer's generation and address family; the endpoint's `Connected`
    /// completes it, its `Closed` gives it up.
    pub fn start_sctp_udp_connect(&mut self, connect: &Connect) -> Result<(), NetError> {
        let peer = connect.url.address;
        let listener = self.listeners.iter().position(|l| {
            matches!(l, Listener::Udp { url, protocol: Protocol::Enrp, .. }
                if url.transport == Transport::SctpUdp
                    && url.generation == connect.url.generation
                    && url.address.is_ipv4() == peer.is_ipv4())
        });
        let Some((listener, endpoint)) =
            listener.and_then(|i| self.sctp_udp.get_mut(&i).map(|e| (i, e)))
        else {
            return Err(NetError::InvalidRequest(format!(
                "{}: no sctp+udp ENRP endpoint of this generation and address family to connect \
                 from; add one to enrp.listen",
                connect.url
            )));
        };
        let handle = endpoint
            .connect(peer, ENRP_PORT, self.turn_now)
            .map_err(|e| NetError::InvalidRequest(format!("{}: {e}", connect.url)))?;
        self.sctp_udp_connects
            .insert((listener, handle), (connect.association, peer));
        Ok(())
    }

    /// Aborts SCTP-in-UDP association `(listener, handle)` (an ABORT goes to the peer) and
    /// closes it in the worker.
    pub(super) fn abort_sctp_udp(
        &mut self,
        listener: usize,
        handle: AssociationHandle,
        now: Millis,
    ) {
        if let Some(endpoint) = self.sctp_udp.get_mut(&listener) {
            endpoint.abort(handle);
        }
        self.sctp_udp_events(listener, now, None);
    }

    /// Takes the events of listener `i`'s endpoint: associations accepted (admitted against
    /// the connection limits, or aborted), connected, closed; messages to the worker (`reads`
    /// is the turn's pinned reader; without it there are none to take).
    fn sctp_udp_events(&mut self, i: usize, now: Millis, reads: Option<&PinnedReader<'_>>) {
        let Self {
            sctp_udp,
            sctp_udp_assocs,
            sctp_udp_connects,
            listeners,
            worker,
            routes,
            tickets,
            out,
            kinds,
            metrics,
            shared,
            io,
            ..
        } = self;
        let (Some(endpoint), Some(Listener::Udp { url, protocol, .. })) =
            (sctp_udp.get_mut(&i), listeners.get(i))
        else {
            return;
        };
        let mut refused = Vec::new();
        endpoint.poll_events(|handle, event| match event {
            EndpointEvent::Accepted { peer, .. } => {
                if routes.len() >= io.max_connections {
                    metrics.limit_refused(Limit::Connections);
                    tracing::debug!(%peer, "association refused: the worker's connection limit is reached");
                    refused.push(handle);
                    return;
                }
                let Some(ticket) = shared.sources.admit(peer.ip()) else {
                    metrics.limit_refused(Limit::ConnectionsPerSource);
                    tracing::debug!(%peer, "association refused: limits.max_connections_per_source reached");
                    refused.push(handle);
                    return;
                };
                let info = AssociationInfo {
                    transport: Transport::SctpUdp,
                    generation: url.generation,
                    peer_addresses: vec![peer],
                    protocol: *protocol,
                };
                let association = worker.open_association(info, now);
                tickets.insert(association, ticket);
                sctp_udp_assocs.insert((i, handle), association);
                routes.insert(association, Route::SctpUdp { listener: i, handle });
                metrics.connection_opened(TransportLabel::SctpUdp);
            }
            EndpointEvent::Connected => {
                let Some((association, peer)) = sctp_udp_connects.remove(&(i, handle)) else {
                    return;
                };
                if !worker.has_association(association) {
                    // The core gave up waiting (its connect timeout).
                    refused.push(handle);
                    return;
                }
                sctp_udp_assocs.insert((i, handle), association);
                routes.insert(association, Route::SctpUdp { listener: i, handle });
                metrics.connection_opened(TransportLabel::SctpUdp);
                worker.connected(association, vec![peer], now, out);
            }
            EndpointEvent::Message { ppid, bytes, .. } => {
                let (Some(&association), Some(reads)) = (sctp_udp_assocs.get(&(i, handle)), reads)
                else {
                    return;
                };
                let received = Received::Message {
                    association,
                    ppid: Some(ppid),
                    message: bytes,
                };
                kinds.push(worker.handle(reads, received, now, out));
            }
            EndpointEvent::Closed(reason) => {
                if let Some((association, peer)) = sctp_udp_connects.remove(&(i, handle)) {
                    tracing::debug!(%peer, ?reason, "cannot connect to an ENRP peer over SCTP in UDP");
                    worker.close_association(association, now, out);
                    return;
                }
                if let Some(association) = sctp_udp_assocs.remove(&(i, handle)) {
                    tracing::debug!(?reason, "SCTP-in-UDP association closed");
                    routes.remove(&association);
                    tickets.remove(&association);
                    worker.close_association(association, now, out);
                    metrics.connection_closed(TransportLabel::SctpUdp);
                }
            }
        });
        for handle in refused {
            endpoint.abort(handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(sizes: &[(u8, usize)]) -> Vec<(SocketAddr, std::ops::Range<usize>)> {
        let mut at = 0;
        sizes
            .iter()
            .map(|&(peer, len)| {
                let range = at..at + len;
                at += len;
                (SocketAddr::from(([192, 0, 2, peer], 9899)), range)
            })
            .collect()
    }

    /// A train: one destination, equal sizes, the last one no larger; it ends at another peer, a
    /// larger packet, the segment limit or 64 KiB.
    #[test]
    fn trains_are_equal_packets_to_one_peer() {
        assert_eq!(train_len(&packets(&[])), 0);
        assert_eq!(train_len(&packets(&[(1, 1200)])), 1);
        assert_eq!(
            train_len(&packets(&[(1, 1200), (1, 1200), (1, 300), (1, 1200)])),
            3
        );
        assert_eq!(train_len(&packets(&[(1, 1200), (2, 1200)])), 1);
        assert_eq!(train_len(&packets(&[(1, 300), (1, 1200)])), 1);
        assert_eq!(train_len(&packets(&[(1, 500); 100])), UDP_MAX_SEGMENTS);
        assert_eq!(train_len(&packets(&[(1, 1200); 100])), 54);
        assert_eq!(train_len(&packets(&[(1, 8192); 20])), 7);
    }
}
