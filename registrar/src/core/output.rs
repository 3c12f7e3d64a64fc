//! What one call into a [`Worker`] asks its driver to do: the [`Output`] with the messages to
//! transmit and their [`Target`]s, associations to abort, ENRP associations to open and forwards
//! to other workers; and the encoding of messages straight into its buffer.

use std::net::SocketAddr;
use std::ops::Range;

use rserpool_handlespace::AssociationId;
use rserpool_protocol::{EncodeError, Generation};

#[cfg(doc)]
use super::Worker;
use super::{Connect, Forward};

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// An association of this worker.
    Association(AssociationId),
    /// A datagram back through the UDP listener `listener` (the driver's index) to `to`.
    UdpReply {
        /// The UDP listener the request came in on.
        listener: u32,
        /// The requester.
        to: SocketAddr,
    },
    /// A datagram from the worker's own UDP sending socket (announces, CSP reports).
    UdpSend(SocketAddr),
    /// An ASAP message to a PE this PR has no association with, over the association the
    /// worker's SCTP ASAP socket of that generation has or sets up with the address (the
    /// keep-alive with the H bit after a takeover, RFC 5353 §3.5.1).
    SctpAddress(SocketAddr, Generation),
}

/// One message to transmit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes.
    pub target: Target,
    range: Range<usize>,
}

/// Consecutive messages to one target ([`Output::runs`]).
#[derive(Clone, Copy, Debug)]
pub struct Run<'a> {
    /// Where they go.
    pub target: Target,
    bytes: &'a [u8],
    messages: &'a [Transmit],
}

impl<'a> Run<'a> {
    /// The messages one by one (for datagrams and SCTP, which keep message boundaries).
    pub fn messages(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.messages.iter().map(|t| &self.bytes[t.range.clone()])
    }

    /// The messages back to back (for a byte stream): the output encodes each message right
    /// after the previous one.
    pub fn bytes(&self) -> &'a [u8] {
        let start = self.messages.first().map_or(0, |t| t.range.start);
        let end = self.messages.last().map_or(0, |t| t.range.end);
        &self.bytes[start..end]
    }
}

/// What one call into a [`Worker`] asks the driver to do. Reused across calls: the driver
/// consumes it and calls [`Output::clear`].
#[derive(Debug, Default)]
pub struct Output {
    /// The encoded messages in `bytes[..used]`. The vector only grows (up to
    /// [`Output::KEEP_BYTES`] across turns) and stays initialised, so encoding the next message
    /// zero-fills nothing: a fill per message cost more than its encoding.
    bytes: Vec<u8>,
    used: usize,
    transmits: Vec<Transmit>,
    pub(super) aborts: Vec<AssociationId>,
    pub(super) connects: Vec<Connect>,
    pub(super) forwards: Vec<(usize, Forward)>,
}

impl Output {
    /// Messages to transmit, in order.
    pub fn transmits(&self) -> impl Iterator<Item = (Target, &[u8])> + '_ {
        self.transmits
            .iter()
            .map(|t| (t.target, &self.bytes[t.range.clone()]))
    }

    /// Messages to transmit, in order, in runs of consecutive messages to one target: a driver
    /// routes a run once and queues a run for a byte stream in one copy.
    pub fn runs(&self) -> impl Iterator<Item = Run<'_>> + '_ {
        let mut rest = &self.transmits[..];
        std::iter::from_fn(move || {
            let target = rest.first()?.target;
            let n = rest.iter().take_while(|t| t.target == target).count();
            let (run, tail) = rest.split_at(n);
            rest = tail;
            Some(Run {
                target,
                bytes: &self.bytes,
                messages: run,
            })
        })
    }

    /// The encode buffer kept across turns; a bigger one (after a turn with a huge output) is
    /// given back.
    const KEEP_BYTES: usize = 1 << 20;

    /// Associations to abort (after their pending transmits).
    pub fn aborts(&self) -> &[AssociationId] {
        &self.aborts
    }

    /// ENRP associations to open.
    pub fn connects(&self) -> &[Connect] {
        &self.connects
    }

    /// Takes the writes to forward to other workers: (worker index, message).
    pub fn take_forwards(&mut self) -> std::vec::Drain<'_, (usize, Forward)> {
        self.forwards.drain(..)
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.transmits.is_empty()
            && self.aborts.is_empty()
            && self.connects.is_empty()
            && self.forwards.is_empty()
    }

    /// Bytes of the messages to transmit (drivers weigh a connection's replies with it).
    pub fn pending_bytes(&self) -> usize {
        self.used
    }

    /// Forgets everything, keeping the allocations.
    pub fn clear(&mut self) {
        self.used = 0;
        if self.bytes.len() > Self::KEEP_BYTES {
            self.bytes.truncate(Self::KEEP_BYTES);
            self.bytes.shrink_to_fit();
        }
        self.transmits.clear();
        self.aborts.clear();
        self.connects.clear();
        self.forwards.clear();
    }

    /// Encodes one message with `encode` straight into the output buffer.
    pub(super) fn transmit(
        &mut self,
        target: Target,
        encode: impl Fn(&mut [u8]) -> Result<usize, EncodeError>,
    ) -> Result<(), EncodeError> {
        const MAX: usize = u16::MAX as usize + 4;
        let start = self.used;
        // Nearly every ASAP message fits in 1 KiB; each retry offers four times the room, the
        // last any message.
        let mut room = 1024;
        loop {
            if self.bytes.len() < start + room {
                self.bytes.resize(start + room, 0);
            }
            match encode(&mut self.bytes[start..]) {
                Ok(n) => {
                    self.used = start + n;
                    self.transmits.push(Transmit {
                        target,
                        range: start..start + n,
                    });
                    return Ok(());
                }
                Err(EncodeError::BufferTooSmall { .. }) if room < MAX => {
                    room = (room * 4).min(MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues bytes encoded elsewhere (a response a shard owner sent back).
    pub(super) fn transmit_bytes(&mut self, target: Target, message: &[u8]) {
        let start = self.used;
        let end = start + message.len();
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[start..end].copy_from_slice(message);
        self.used = end;
        self.transmits.push(Transmit {
            target,
            range: start..end,
        });
    }
}

/// Encodes a message at the end of `buf`, growing it as needed; returns the message's range.
pub(super) fn encode_into(
    buf: &mut Vec<u8>,
    encode: impl Fn(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<Range<usize>, EncodeError> {
    const MAX: usize = u16::MAX as usize + 4;
    let start = buf.len();
    // Nearly every ASAP message fits the first try; each retry offers four times the room (the
    // room is zero-filled first, so offering the largest message's room at once would cost a
    // 64 KiB fill for a 2 KB message), and the last holds any message.
    let mut room = 1024;
    loop {
        buf.resize(start + room, 0);
        match encode(&mut buf[start..]) {
            Ok(n) => {
                buf.truncate(start + n);
                return Ok(start..start + n);
            }
            Err(EncodeError::BufferTooSmall { .. }) if room < MAX => room = (room * 4).min(MAX),
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
}
