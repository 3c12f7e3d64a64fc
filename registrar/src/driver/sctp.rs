//! The SCTP sockets of a worker, for both drivers: its one-to-many listeners and the incoming
//! associations peeled off them, under one index; a loop turn's SCTP sends and those that found
//! a send buffer full; sending to a PE's SCTP address.
//!
//! Why incoming associations are peeled off (RFC 6458 §9.2): a one-to-many socket's receive
//! buffer, backlog and send buffer are shared by all its associations, and the kernel advertises
//! each association a window of the whole buffer. A few peers that flood the socket get the
//! kernel to drop everyone's packets once it is full (seen as `SctpInPktDiscards` in
//! `/proc/net/sctp/snmp`); a legitimate PE's dropped keep-alive ack then waits for its stack's
//! retransmission timeout, one second or more and doubling, and the PE is removed for a
//! keep-alive timeout it did not cause. Peeled off, each association has buffers of its own, as
//! a TCP connection does: a flood fills only the flooder's window.

use std::net::SocketAddr;

use rserpool_handlespace::FastMap;
use rserpool_net::{SctpAssocId, SctpSocket, TransportUrl};
use rserpool_protocol::{Generation, PPID_ASAP};

use super::Listener;
use crate::metrics::Protocol;

/// An incoming association on a socket of its own.
#[derive(Debug)]
struct Peeled {
    socket: SctpSocket,
    /// What the listener it came on serves.
    url: TransportUrl,
    protocol: Protocol,
    assoc: SctpAssocId,
    /// Its peer's addresses when it came up.
    peers: Vec<SocketAddr>,
    /// Its association has ended; the socket waits for the driver to let it go.
    closing: bool,
    /// Its default PPID is set: a plain `send` carries the protocol's PPID, and no
    /// `SCTP_SNDINFO` control message is needed.
    default_ppid: bool,
    /// The driver has a readiness poll armed on it (io_uring).
    armed: bool,
}

/// A worker's SCTP sockets by index: the listeners keep their indices in the worker's listener
/// list; peeled-off associations come after them, in slots that are reused once the driver
/// releases them.
#[derive(Debug)]
pub(super) struct SctpSockets {
    /// How many listeners the worker has (the first peeled slot's index).
    listeners: usize,
    peeled: Vec<Option<Peeled>>,
    free: Vec<usize>,
    /// Peer address to the peeled socket whose association reaches it.
    by_peer: FastMap<SocketAddr, usize>,
    /// The kernel's association id (unique in the system) to its peeled socket.
    by_assoc: FastMap<SctpAssocId, usize>,
    /// Peeled since the driver last looked: it watches them for reading.
    opened: Vec<usize>,
    /// Ended since the driver last looked: it stops watching them and releases them.
    closed: Vec<usize>,
    /// Associations the kernel would not peel off.
    peel_failures: u64,
}

impl SctpSockets {
    /// No peeled-off associations yet beside `listeners` listeners.
    pub fn new(listeners: usize) -> Self {
        Self {
            listeners,
            peeled: Vec::new(),
            free: Vec::new(),
            by_peer: FastMap::default(),
            by_assoc: FastMap::default(),
            opened: Vec::new(),
            closed: Vec::new(),
            peel_failures: 0,
        }
    }

    /// SCTP socket `s`, with the URL and protocol it serves: SCTP listener `s`, or the open
    /// peeled-off association in slot `s`. `None` for any other listener, and for a closing or
    /// free slot.
    pub fn get<'a>(
        &'a self,
        listeners: &'a [Listener],
        s: usize,
    ) -> Option<(&'a SctpSocket, TransportUrl, Protocol)> {
        if s < self.listeners {
            return match &listeners[s] {
                Listener::Sctp {
                    socket,
                    url,
                    protocol,
                } => Some((socket, *url, *protocol)),
                _ => None,
            };
        }
        let p = self.peeled.get(s - self.listeners)?.as_ref()?;
        (!p.closing).then_some((&p.socket, p.url, p.protocol))
    }

    /// Whether `s` is a peeled-off association's slot (open or closing).
    pub fn is_peeled(&self, s: usize) -> bool {
        s >= self.listeners
    }

    /// Moves association `assoc`, which came up on SCTP listener `listener` with `peers`, onto a
    /// socket of its own; returns its index. `None` if the kernel refused (out of file
    /// descriptors, say): the association then stays on the listener, served as before.
    pub fn peel_off(
        &mut self,
        listeners: &[Listener],
        listener: usize,
        assoc: SctpAssocId,
        peers: &[SocketAddr],
    ) -> Option<usize> {
        let (from, url, protocol) = self.get(listeners, listener)?;
        let socket = match from.peel_off(assoc) {
            Ok(socket) => socket,
            Err(e) => {
                // Out of descriptors, this repeats for every association: the first and every
                // thousandth is logged.
                self.peel_failures += 1;
                if self.peel_failures % 1000 == 1 {
                    tracing::warn!(
                        listener = %url,
                        %e,
                        failures = self.peel_failures,
                        "serving an SCTP association on its listener's shared socket"
                    );
                }
                return None;
            }
        };
        let default_ppid = match socket.set_default_ppid(protocol.ppid()) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(%e, "SCTP_DEFAULT_SNDINFO refused; sends carry SCTP_SNDINFO");
                false
            }
        };
        let peeled = Peeled {
            default_ppid,
            socket,
            url,
            protocol,
            assoc,
            peers: peers.to_vec(),
            closing: false,
            armed: false,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.peeled[slot] = Some(peeled);
                slot
            }
            None => {
                self.peeled.push(Some(peeled));
                self.peeled.len() - 1
            }
        };
        let s = self.listeners + slot;
        for &peer in peers {
            self.by_peer.insert(peer, s);
        }
        self.by_assoc.insert(assoc, s);
        self.opened.push(s);
        Some(s)
    }

    /// Whether a message for association `assoc` may go out on SCTP socket `s`: any association
    /// of a listener; on a peeled-off socket only its own, open association (a message queued
    /// for an association that ended must not reach one peeled into the slot since).
    pub fn carries(&self, s: usize, assoc: SctpAssocId) -> bool {
        !self.is_peeled(s) || self.slot(s).is_some_and(|p| !p.closing && p.assoc == assoc)
    }

    /// Whether messages sent on SCTP socket `s` need an `SCTP_SNDINFO` control message: on a
    /// listener (its many associations), not on a peeled-off association with its default
    /// PPID set.
    pub fn needs_send_info(&self, s: usize) -> bool {
        self.slot(s).is_none_or(|p| !p.default_ppid)
    }

    /// The open peeled slot of association `assoc`.
    pub fn peeled_slot(&self, assoc: SctpAssocId) -> Option<usize> {
        self.by_assoc.get(&assoc).copied()
    }

    /// The association of peeled slot `s`, open or closing.
    pub fn association(&self, s: usize) -> Option<SctpAssocId> {
        self.slot(s).map(|p| p.assoc)
    }

    /// The association of peeled slot `s` has ended: the slot closes; the driver learns it from
    /// [`Self::take_closed`]. Nothing for a listener or a slot already closing.
    pub fn close(&mut self, s: usize) {
        let Some(p) = self.slot_mut(s) else {
            return;
        };
        if std::mem::replace(&mut p.closing, true) {
            return;
        }
        let peers = std::mem::take(&mut p.peers);
        let assoc = p.assoc;
        if self.by_assoc.get(&assoc) == Some(&s) {
            self.by_assoc.remove(&assoc);
        }
        for peer in peers {
            if self.by_peer.get(&peer) == Some(&s) {
                self.by_peer.remove(&peer);
            }
        }
        self.closed.push(s);
    }

    /// The slots peeled since the last call, still open: the driver watches them for reading.
    pub fn take_opened(&mut self) -> Vec<usize> {
        let mut opened = std::mem::take(&mut self.opened);
        opened.retain(|&s| self.slot(s).is_some_and(|p| !p.closing));
        opened
    }

    /// The slots closed since the last call: the driver stops watching them and releases them.
    pub fn take_closed(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.closed)
    }

    /// The socket of peeled slot `s`, open or closing (what the driver watches or cancels).
    pub fn peeled_socket(&self, s: usize) -> Option<&SctpSocket> {
        self.slot(s).map(|p| &p.socket)
    }

    /// Whether the driver has a readiness poll armed on peeled slot `s`.
    pub fn armed(&self, s: usize) -> bool {
        self.slot(s).is_some_and(|p| p.armed)
    }

    /// Notes whether the driver has a readiness poll armed on peeled slot `s`.
    pub fn set_armed(&mut self, s: usize, armed: bool) {
        if let Some(p) = self.slot_mut(s) {
            p.armed = armed;
        }
    }

    /// Whether peeled slot `s` is closing (or free).
    pub fn closing(&self, s: usize) -> bool {
        self.slot(s).is_none_or(|p| p.closing)
    }

    /// Lets a closed slot go: its socket is closed (the kernel ends the association if it has
    /// not ended yet) and the slot is free for the next association.
    pub fn release(&mut self, s: usize) {
        if self.slot(s).is_some_and(|p| p.closing) {
            self.peeled[s - self.listeners] = None;
            self.free.push(s - self.listeners);
        }
    }

    /// The open peeled-off association whose peer has address `to`.
    fn reaching(&self, to: SocketAddr) -> Option<(&SctpSocket, SctpAssocId)> {
        let s = *self.by_peer.get(&to)?;
        let p = self.slot(s).filter(|p| !p.closing)?;
        Some((&p.socket, p.assoc))
    }

    fn slot(&self, s: usize) -> Option<&Peeled> {
        self.peeled.get(s.checked_sub(self.listeners)?)?.as_ref()
    }

    fn slot_mut(&mut self, s: usize) -> Option<&mut Peeled> {
        self.peeled
            .get_mut(s.checked_sub(self.listeners)?)?
            .as_mut()
    }
}

/// A loop turn's SCTP sends, and the messages that found their socket's send buffer full.
/// Messages are queued as the output is routed and leave together at the end of the turn: with
/// one `sendmmsg` per socket (epoll, [`super::state::LoopState::send_queued_sctp`]), or in the
/// turn's one `io_uring_enter` (io_uring).
#[derive(Debug, Default)]
pub(super) struct SctpOut {
    /// This turn's messages, in order: (SCTP socket index, association, message). The driver
    /// takes them with [`Self::take_queued`].
    queued: Vec<(usize, SctpAssocId, Vec<u8>)>,
    /// The blocked messages and those of the same socket queued behind them, in order:
    /// (SCTP socket index, association, message). `LoopState::retry_blocked_sctp` empties it.
    pub blocked: Vec<(usize, SctpAssocId, Vec<u8>)>,
    /// Buffers of sent messages, for the next ones.
    spare: Vec<Vec<u8>>,
}

impl SctpOut {
    /// Queues a message for association `assoc` of SCTP socket `s`, to leave at the end of the
    /// turn.
    pub fn send(&mut self, s: usize, assoc: SctpAssocId, bytes: &[u8]) {
        let message = self.buffer(bytes);
        self.queued.push((s, assoc, message));
    }

    /// A copy of `bytes` in a buffer an earlier message gave back.
    fn buffer(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        buf
    }

    /// Keeps a sent message's buffer for a later message.
    pub fn reuse(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.spare.push(buf);
    }

    /// The turn's queued messages to send, in order. Those of a socket with blocked messages
    /// join them instead (behind them, in order), for `LoopState::retry_blocked_sctp`.
    pub fn take_queued(&mut self) -> Vec<(usize, SctpAssocId, Vec<u8>)> {
        let mut queued = std::mem::take(&mut self.queued);
        if !self.blocked.is_empty() {
            let blocked = &mut self.blocked;
            queued.retain_mut(|(s, assoc, message)| {
                if blocked.iter().any(|b| b.0 == *s) {
                    blocked.push((*s, *assoc, std::mem::take(message)));
                    false
                } else {
                    true
                }
            });
        }
        queued
    }

    /// Keeps a message [`Self::take_queued`] gave out for the next turn (queued before that
    /// turn's messages).
    pub fn hold(&mut self, s: usize, assoc: SctpAssocId, message: Vec<u8>) {
        self.queued.push((s, assoc, message));
    }

    /// Gives back the (emptied) list [`Self::take_queued`] lent, to keep its room.
    pub fn return_queue(&mut self, mut queue: Vec<(usize, SctpAssocId, Vec<u8>)>) {
        if self.queued.is_empty() {
            queue.clear();
            self.queued = queue;
        }
    }
}

/// The first SCTP listener of `protocol` and `generation` that can reach `peer` (the same
/// address family: IPv6 listeners are V6ONLY).
pub(super) fn sctp_listener(
    listeners: &[Listener],
    protocol: Protocol,
    generation: Generation,
    peer: SocketAddr,
) -> Option<usize> {
    listeners.iter().position(|l| {
        matches!(l, Listener::Sctp { url, protocol: p, .. }
            if *p == protocol
                && url.generation == generation
                && url.address.is_ipv4() == peer.is_ipv4())
    })
}

/// Sends an ASAP message to a PE at `to`: over the peeled-off association that reaches it if
/// there is one (a listener asked to reach it would start a second association between the same
/// addresses), else from the first SCTP ASAP listener of `generation` and `to`'s address family,
/// over the association the kernel has or sets up with it.
pub(super) fn send_to_sctp_address(
    listeners: &[Listener],
    sockets: &SctpSockets,
    to: SocketAddr,
    generation: Generation,
    bytes: &[u8],
) {
    if let Some((socket, assoc)) = sockets.reaching(to) {
        if let Err(e) = socket.send(assoc, PPID_ASAP, 0, bytes) {
            tracing::debug!(%to, %e, "cannot send to a PE's SCTP association");
        }
        return;
    }
    let socket = sctp_listener(listeners, Protocol::Asap, generation, to).and_then(|i| {
        match &listeners[i] {
            Listener::Sctp { socket, .. } => Some(socket),
            _ => None,
        }
    });
    let Some(socket) = socket else {
        tracing::debug!(%to, "no SCTP ASAP listener to reach a PE from");
        return;
    };
    if let Err(e) = socket.send_to(to, PPID_ASAP, bytes) {
        tracing::debug!(%to, %e, "cannot send to a PE's SCTP address");
    }
}
