//! Batched SCTP receives and sends: many messages in one `recvmmsg` or `sendmmsg` system call
//! instead of one `recvmsg` or `sendmsg` each, for where a system call is dear (about 50 µs in
//! user-mode Linux). Owns [`SctpRecvBatch`], the reusable buffers a batch is received into, and
//! the batch calls of the one-to-many [`SctpSocket`] (`recv_batch`, `send_batch`) and of the
//! one-to-one [`SctpClient`] (the same two).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::{
    RECV_CONTROL_LEN, SNDINFO_CMSG_LEN, SctpAssocId, SctpClient, SctpPart, SctpRecv, SctpSocket,
    missing_rcvinfo, parse_rcvinfo, send_control, sndinfo_cmsg,
};
use crate::sys;

/// The most messages one batch system call moves: an [`SctpRecvBatch`] holds at most this many,
/// and the `send_batch` calls send longer slices in calls of this many. (The kernel's own
/// bound, `UIO_MAXIOV`, is 1024.)
pub const SCTP_BATCH_MAX: usize = sys::MMSG_MAX;

/// The smallest room an [`SctpRecvBatch`] gives a message: the start of any notification the
/// socket layer reads fits.
const MIN_MESSAGE_SIZE: usize = 64;

/// Reusable buffers that one `recvmmsg` receives up to [`SctpRecvBatch::capacity`] messages
/// into, each with its own `message_size` bytes of data and its own room for control messages
/// ([`RECV_CONTROL_LEN`]): allocated once, by [`SctpRecvBatch::new`]. A message longer than
/// `message_size` comes in parts, the rest in the next messages of the batch (or of the next
/// receive), as with `recvmsg`.
///
/// Filled by [`SctpSocket::recv_batch`] (read it with [`SctpRecvBatch::messages`]) or by
/// [`SctpClient::recv_batch`] (read it with [`SctpRecvBatch::parts`]).
#[derive(Debug)]
pub struct SctpRecvBatch {
    /// `capacity` data areas of `message_size` bytes, back to back.
    data: Vec<u8>,
    /// `capacity` control areas of [`RECV_CONTROL_LEN`] bytes, back to back.
    control: Vec<u8>,
    message_size: usize,
    /// What each message of the last receive brought; `capacity` entries, `count` of them valid.
    received: Vec<sys::Received>,
    count: usize,
}

impl SctpRecvBatch {
    /// Buffers for `messages` messages (1 to [`SCTP_BATCH_MAX`], clamped to that range) of
    /// `message_size` bytes each (at least 64, which a notification's start needs: smaller
    /// values are raised to it).
    pub fn new(messages: usize, message_size: usize) -> Self {
        let messages = messages.clamp(1, SCTP_BATCH_MAX);
        let message_size = message_size.max(MIN_MESSAGE_SIZE);
        Self {
            data: vec![0; messages * message_size],
            control: vec![0; messages * RECV_CONTROL_LEN],
            message_size,
            received: vec![sys::Received::default(); messages],
            count: 0,
        }
    }

    /// How many messages one receive takes at most.
    pub fn capacity(&self) -> usize {
        self.received.len()
    }

    /// The room each message has; a longer one comes in parts.
    pub fn message_size(&self) -> usize {
        self.message_size
    }

    /// How many messages (notifications and parts included) the last receive brought.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the last receive brought nothing (or failed, or none was made yet).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// One `recvmmsg` on `fd` of at most `max` messages (at least 1, at most the capacity),
    /// waiting for the first only on a blocking socket (`MSG_WAITFORONE`).
    fn receive(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        self.count = 0;
        let max = max.clamp(1, self.received.len());
        let messages = self
            .data
            .chunks_exact_mut(self.message_size)
            .zip(self.control.chunks_exact_mut(RECV_CONTROL_LEN));
        self.count = sys::recv_mmsg(
            fd,
            messages,
            &mut self.received[..max],
            libc::MSG_WAITFORONE,
        )?;
        Ok(self.count)
    }

    /// Message `i` of the last receive (below `count`): what the kernel said of it, its control
    /// messages and its payload.
    fn message(&self, i: usize) -> (sys::Received, &[u8], &[u8]) {
        let r = self.received[i];
        let data = &self.data[i * self.message_size..][..r.len.min(self.message_size)];
        let control = &self.control[i * RECV_CONTROL_LEN..][..r.control_len.min(RECV_CONTROL_LEN)];
        (r, control, data)
    }

    /// What the last [`SctpSocket::recv_batch`] on `socket` brought, in the order it came: each
    /// message (or part of one) or notification as [`SctpSocket::recv`] reports it, with its
    /// payload (a data message's bytes, a notification's). Read each receive's messages once and
    /// to the end, before the next receive on the socket: the rest of a notification that did
    /// not fit is told from its start by what the socket saw last.
    pub fn messages<'a>(
        &'a self,
        socket: &'a SctpSocket,
    ) -> impl Iterator<Item = (io::Result<SctpRecv>, &'a [u8])> + 'a {
        (0..self.count).map(move |i| {
            let (r, control, payload) = self.message(i);
            (socket.received(r.flags, control, payload), payload)
        })
    }

    /// The payload of message `i` of the last receive (empty beyond [`Self::len`]): for a
    /// caller that needs the bytes again after [`Self::messages`] interpreted the messages.
    pub fn payload(&self, i: usize) -> &[u8] {
        if i < self.count {
            self.message(i).2
        } else {
            &[]
        }
    }

    /// What the last [`SctpClient::recv_batch`] brought, in the order it came, notifications
    /// skipped: each message or part of one as [`SctpClient::recv_part`] reports it (its length,
    /// PPID and whether it is complete), with its payload; `None` (with an empty payload) where
    /// the peer had shut the association down.
    pub fn parts(&self) -> impl Iterator<Item = (io::Result<Option<SctpPart>>, &[u8])> + '_ {
        (0..self.count).filter_map(move |i| {
            let (r, control, payload) = self.message(i);
            if r.flags & libc::MSG_NOTIFICATION != 0 {
                return None;
            }
            if r.len == 0 && r.control_len == 0 {
                return Some((Ok(None), payload));
            }
            let part = parse_rcvinfo(control)
                .ok_or_else(missing_rcvinfo)
                .map(|info| {
                    Some(SctpPart {
                        len: r.len,
                        ppid: info.ppid,
                        complete: r.flags & libc::MSG_EOR != 0,
                    })
                });
            Some((part, payload))
        })
    }
}

/// Sends `total` messages, message `i` being `message(i)` (its `SCTP_SNDINFO` control message
/// and its payload), in `sendmmsg` calls of at most [`SCTP_BATCH_MAX`] with `MSG_NOSIGNAL`;
/// returns how many left: all, or fewer when the send buffer filled or an error stopped a later
/// call (the next send meets it). `WouldBlock` (or another error) when not even the first could
/// go. An interrupted call is made again when `retry_interrupted`.
fn send_messages<'a>(
    fd: BorrowedFd<'_>,
    total: usize,
    message: impl Fn(usize) -> ([u8; SNDINFO_CMSG_LEN], &'a [u8]),
    retry_interrupted: bool,
) -> io::Result<usize> {
    let mut controls = [[0; SNDINFO_CMSG_LEN]; SCTP_BATCH_MAX];
    let mut payloads: [&[u8]; SCTP_BATCH_MAX] = [&[]; SCTP_BATCH_MAX];
    let mut sent = 0;
    while sent < total {
        let n = (total - sent).min(SCTP_BATCH_MAX);
        for (i, (control, payload)) in controls.iter_mut().zip(&mut payloads).take(n).enumerate() {
            (*control, *payload) = message(sent + i);
        }
        let batch = payloads[..n]
            .iter()
            .copied()
            .zip(controls[..n].iter().map(|c| &c[..]));
        match sys::send_mmsg(fd, batch, libc::MSG_NOSIGNAL) {
            Ok(k) => {
                sent += k;
                if k < n {
                    break;
                }
            }
            Err(e) if retry_interrupted && e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) if sent > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

impl SctpSocket {
    /// Receives up to `max` messages and notifications (at least 1, at most
    /// `batch.capacity()`) into `batch` with one `recvmmsg`; returns how many came (also
    /// `batch.len()`), then read them with [`SctpRecvBatch::messages`]. Fewer than `max` means
    /// that nothing more was waiting. `WouldBlock` when nothing is waiting; an interrupted call
    /// is returned as `Interrupted`, as [`SctpSocket::recv`] does.
    pub fn recv_batch(&self, batch: &mut SctpRecvBatch, max: usize) -> io::Result<usize> {
        batch.receive(self.as_fd(), max)
    }

    /// Sends each `(association, PPID, payload)` of `messages` as one message on stream 0, in
    /// order, with one `sendmmsg` per [`SCTP_BATCH_MAX`] messages; returns how many left: all,
    /// or a first part of them when the send buffer filled (or an error stopped a later call,
    /// such as a message to an association that is gone: the next call meets it at its first
    /// message). `WouldBlock` when not even the first could go; an interrupted call is returned
    /// as `Interrupted`, as [`SctpSocket::send`] does.
    pub fn send_batch(&self, messages: &[(SctpAssocId, u32, &[u8])]) -> io::Result<usize> {
        send_messages(
            self.as_fd(),
            messages.len(),
            |i| {
                let (assoc, ppid, payload) = messages[i];
                (send_control(assoc, ppid), payload)
            },
            false,
        )
    }
}

impl SctpClient {
    /// Receives up to `max` messages or parts of messages (at least 1, at most
    /// `batch.capacity()`) into `batch` with one `recvmmsg`; returns how many came,
    /// notifications included (also `batch.len()`), then read them with
    /// [`SctpRecvBatch::parts`]. A blocking socket waits for the first only (`MSG_WAITFORONE`);
    /// fewer than `max` means that nothing more was waiting. `WouldBlock` when a non-blocking
    /// socket has nothing waiting; an interrupted call is made again, as
    /// [`SctpClient::recv_part`] does.
    pub fn recv_batch(&self, batch: &mut SctpRecvBatch, max: usize) -> io::Result<usize> {
        loop {
            match batch.receive(self.as_fd(), max) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                received => return received,
            }
        }
    }

    /// Sends each `(PPID, stream, payload)` of `messages` as one message, in order, asking the
    /// peer to acknowledge at once (`SCTP_SACK_IMMEDIATELY`, as [`SctpClient::send`] does), with
    /// one `sendmmsg` per [`SCTP_BATCH_MAX`] messages; returns how many left: all, or a first
    /// part of them when a non-blocking socket's send buffer filled (or an error stopped a later
    /// call: the next call meets it). `WouldBlock` when not even the first could go; an
    /// interrupted call is made again.
    pub fn send_batch(&self, messages: &[(u32, u16, &[u8])]) -> io::Result<usize> {
        // RFC 7053's I bit, as `snd_flags` holds it
        let flags = libc::SCTP_SACK_IMMEDIATELY as u16;
        send_messages(
            self.as_fd(),
            messages.len(),
            |i| {
                let (ppid, stream, payload) = messages[i];
                (sndinfo_cmsg(stream, flags, ppid, 0), payload)
            },
            true,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Socket, Type};

    /// A connected pair of non-blocking Unix datagram sockets: `recvmmsg` and `sendmmsg` work
    /// on them as on SCTP (which the build host lacks), one datagram a message.
    fn pair() -> (Socket, Socket) {
        let (a, b) = Socket::pair(Domain::UNIX, Type::DGRAM, None).unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Sends `messages` from `sock` without control messages; how many left.
    fn send_plain(sock: &Socket, messages: &[&[u8]]) -> io::Result<usize> {
        sys::send_mmsg(
            sock.as_fd(),
            messages.iter().map(|m| (*m, &[][..])),
            libc::MSG_NOSIGNAL,
        )
    }

    #[test]
    fn sizes_are_clamped_and_nothing_waiting_is_would_block() {
        let batch = SctpRecvBatch::new(0, 0);
        assert_eq!((batch.capacity(), batch.message_size()), (1, 64));
        let mut batch = SctpRecvBatch::new(1000, 300);
        assert_eq!(
            (batch.capacity(), batch.message_size()),
            (SCTP_BATCH_MAX, 300)
        );
        assert_eq!(batch.data.len(), SCTP_BATCH_MAX * 300);
        assert_eq!(batch.control.len(), SCTP_BATCH_MAX * RECV_CONTROL_LEN);
        let (_a, b) = pair();
        let e = batch.receive(b.as_fd(), SCTP_BATCH_MAX).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(batch.is_empty());
    }

    #[test]
    fn one_call_each_way_moves_many_messages_in_order() {
        let (a, b) = pair();
        let messages: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1 + usize::from(i)]).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        assert_eq!(send_plain(&a, &refs).unwrap(), 10);
        let mut batch = SctpRecvBatch::new(16, 64);
        // at most `max`, then the rest; the last call finds fewer than it could take
        assert_eq!(batch.receive(b.as_fd(), 4).unwrap(), 4);
        assert_eq!(batch.len(), 4);
        for (i, sent) in refs.iter().enumerate().take(4) {
            let (r, control, payload) = batch.message(i);
            assert_eq!(payload, *sent, "message {i}");
            assert!(control.is_empty());
            assert_eq!(r.flags & libc::MSG_TRUNC, 0);
        }
        assert_eq!(batch.receive(b.as_fd(), 16).unwrap(), 6);
        for i in 0..6 {
            assert_eq!(batch.message(i).2, refs[4 + i], "message {}", 4 + i);
        }
        // no control messages: what SCTP would deliver without SCTP_RCVINFO is refused
        let (part, payload) = batch.parts().next().unwrap();
        let e = part.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("SCTP_RCVINFO"), "{e}");
        assert_eq!(payload, refs[4]);
    }

    #[test]
    fn long_batches_are_cut_at_the_batch_bound_and_long_messages_at_the_room() {
        let (a, b) = pair();
        let long = [7; 100];
        let refs = vec![&long[..]; SCTP_BATCH_MAX + 5];
        // one system call sends at most SCTP_BATCH_MAX
        assert_eq!(send_plain(&a, &refs).unwrap(), SCTP_BATCH_MAX);
        let mut batch = SctpRecvBatch::new(SCTP_BATCH_MAX, 64);
        assert_eq!(
            batch.receive(b.as_fd(), usize::MAX).unwrap(),
            SCTP_BATCH_MAX
        );
        // a datagram is cut at the room (SCTP would keep the rest for the next message)
        let (r, _, payload) = batch.message(SCTP_BATCH_MAX - 1);
        assert_eq!(payload, &long[..64]);
        assert_ne!(r.flags & libc::MSG_TRUNC, 0);
        assert_eq!(sys::send_mmsg(a.as_fd(), [], 0).unwrap(), 0);
    }

    #[test]
    fn sends_go_in_calls_of_the_batch_bound_until_the_buffer_fills() {
        let (a, b) = pair();
        let payloads: Vec<[u8; 4]> = (0..150u32).map(u32::to_be_bytes).collect();
        // a Unix socket ignores control messages of other levels than SOL_SOCKET
        let message = |i: usize| (send_control(SctpAssocId(1), 11), &payloads[i][..]);
        assert_eq!(send_messages(a.as_fd(), 150, message, false).unwrap(), 150);
        let mut batch = SctpRecvBatch::new(SCTP_BATCH_MAX, 64);
        let mut got = Vec::new();
        while got.len() < 150 {
            let n = batch.receive(b.as_fd(), SCTP_BATCH_MAX).unwrap();
            got.extend((0..n).map(|i| batch.message(i).2.to_vec()));
        }
        assert_eq!(got, payloads);
        // a full send buffer: a first part leaves, then nothing
        a.set_send_buffer_size(4096).unwrap();
        let big = [1; 1024];
        let n = send_messages(a.as_fd(), 200, |_| ([0; SNDINFO_CMSG_LEN], &big[..]), false);
        // a zeroed control message is refused before anything left
        assert_eq!(n.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let full = |_| (send_control(SctpAssocId(1), 11), &big[..]);
        let n = send_messages(a.as_fd(), 200, full, false).unwrap();
        assert!(n > 0 && n < SCTP_BATCH_MAX, "{n} of 200 left");
        let e = send_messages(a.as_fd(), 200, full, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }
}
