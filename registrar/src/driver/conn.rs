//! A TCP or MPTCP association as the drivers hold it: the socket, a read buffer split into ASAP
//! messages by the header's length field (design §4), and a write buffer that collects every reply
//! of a batch so that they leave in one `write` or one io_uring send (research: batching replies
//! per read is what lifts the stream ceiling).
//!
//! Both drivers share the framing loop and the backpressure rule here. The epoll driver reads the
//! socket itself ([`StreamConn::read_and_dispatch`]) and writes with [`StreamConn::flush`]; the
//! io_uring driver hands in what the kernel received ([`StreamConn::receive`]) and lends the write
//! buffer to a kernel send ([`StreamConn::take_unsent`], [`StreamConn::give_back`]).
//!
//! Over TLS (`tcp+tls://`, `mptcp+tls://`) the same connection holds a [`TlsSession`]: received
//! bytes are decrypted into the read buffer before framing, replies wait as plaintext until the
//! batch leaves and are then sealed into records in one go (one record per batch, not per reply).
//! No message reaches the worker before the handshake ends, and the worker learns the peer's
//! certificate names first ([`Worker::authenticated`]).

use std::io::{self, Read, Write};

use rserpool_handlespace::{AssociationId, Millis, PinnedReader};
use rserpool_net::TlsSession;
use rserpool_protocol::framing::{Frame, Frames, next_frame};

use crate::core::identity::Identity;
use crate::core::{Output, Received, Worker};
use crate::metrics::RequestKind;

/// Why a connection must be closed.
#[derive(Debug)]
pub enum Closed {
    /// The peer closed its side.
    Eof,
    /// The peer sent a stream that cannot be framed (a length below 4 or above the maximum).
    Framing(rserpool_protocol::framing::FramingError),
    /// A socket error.
    Io(io::Error),
    /// The TLS session failed (handshake refused, bad record).
    Tls(io::Error),
}

/// What handing received messages to the state machine needs. Made once per event: the replies
/// produced since then count against the connection's high-water mark before they are queued.
#[derive(Debug)]
pub struct Dispatch<'a> {
    worker: &'a mut Worker,
    reads: &'a PinnedReader<'a>,
    out: &'a mut Output,
    kinds: &'a mut Vec<RequestKind>,
    now: Millis,
    mark: usize,
}

impl<'a> Dispatch<'a> {
    /// Messages go to `worker` at time `now`, which reads the handlespace through `reads`,
    /// replies into `out`, the kinds of the requests handled into `kinds`.
    pub fn new(
        worker: &'a mut Worker,
        reads: &'a PinnedReader<'a>,
        out: &'a mut Output,
        kinds: &'a mut Vec<RequestKind>,
        now: Millis,
    ) -> Self {
        let mark = out.pending_bytes();
        Self {
            worker,
            reads,
            out,
            kinds,
            now,
            mark,
        }
    }

    /// Reply bytes produced since this dispatch began.
    fn produced(&self) -> usize {
        self.out.pending_bytes().saturating_sub(self.mark)
    }
}

/// One stream association.
#[derive(Debug)]
pub struct StreamConn<S> {
    /// The socket.
    pub socket: S,
    /// The core's ID of this association.
    pub association: AssociationId,
    /// Received bytes; `read[start..end]` are not handled yet. Allocated on first use: the
    /// io_uring driver frames in the kernel's buffers and keeps only what is left over here.
    read: Vec<u8>,
    start: usize,
    end: usize,
    /// The read buffer's size for the epoll driver's reads; beyond it the buffer grows only to
    /// hold what io_uring received while the connection was above the high-water mark.
    read_size: usize,
    /// Longest message accepted; a longer one breaks the stream.
    max_message: usize,
    /// Above this many unsent bytes (queued replies plus those the current batch produced) the
    /// connection's messages are not handled, and its socket not read, until the peer catches
    /// up (`limits.max_buffered_bytes_per_connection`), so that a client that does not read its
    /// replies cannot make the registrar buffer without bound.
    high_water: usize,
    /// Messages wait in the read buffer because the replies passed the high-water mark.
    held: bool,
    /// Queued replies; `write[written..]` are not sent yet.
    write: Vec<u8>,
    written: usize,
    /// Unsent bytes of a write buffer lent to a kernel send (io_uring), if one is in flight.
    lent: Option<usize>,
    /// An empty buffer to queue into while the other one is lent.
    spare: Vec<u8>,
    /// The peer closed its sending side: nothing more to read; the connection closes once the
    /// replies to what it sent are written.
    finished: bool,
    /// The TLS session, on a TLS listener or to a TLS peer.
    tls: Option<Box<Tls>>,
}

/// A connection's TLS state.
#[derive(Debug)]
struct Tls {
    session: TlsSession,
    /// Replies queued and not yet sealed.
    plain_out: Vec<u8>,
    /// Plaintext decrypted from the last bytes received.
    plain_in: Vec<u8>,
    /// The epoll driver's socket reads (ciphertext).
    cipher_in: Vec<u8>,
    /// Whether the worker has been told the peer's identity.
    authenticated: bool,
}

impl<S> StreamConn<S> {
    /// A connection whose socket reads take up to `buffer_size` bytes (at least one message of
    /// `max_message` bytes, the longest it accepts), and that stops taking messages while more
    /// than `high_water` bytes of replies wait.
    pub fn new(
        socket: S,
        association: AssociationId,
        buffer_size: usize,
        max_message: usize,
        high_water: usize,
    ) -> Self {
        let read_size = buffer_size.max(max_message + 4);
        Self {
            socket,
            association,
            read: Vec::new(),
            start: 0,
            end: 0,
            read_size,
            max_message,
            high_water,
            held: false,
            write: Vec::new(),
            written: 0,
            lent: None,
            spare: Vec::new(),
            finished: false,
            tls: None,
        }
    }

    /// The same connection over TLS: every byte in and out goes through `session`.
    pub fn with_tls(mut self, session: TlsSession) -> Self {
        self.tls = Some(Box::new(Tls {
            session,
            plain_out: Vec::new(),
            plain_in: Vec::new(),
            cipher_in: Vec::new(),
            authenticated: false,
        }));
        self
    }

    /// Notes that the peer closed its sending side (a read of 0 bytes, a receive of nothing).
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Whether the peer closed its sending side.
    pub fn peer_finished(&self) -> bool {
        self.finished
    }

    /// Whether the connection is done: the peer finished sending, every message it sent was
    /// handled and every reply written (or lent to a send still in flight: not done).
    pub fn done(&self) -> bool {
        self.finished && !self.held && !self.wants_write() && self.lent.is_none()
    }

    /// Whether replies (or TLS records) are waiting to be written (not counting a buffer lent
    /// to a send).
    pub fn wants_write(&self) -> bool {
        self.written < self.write.len()
            || self
                .tls
                .as_ref()
                .is_some_and(|t| !t.plain_out.is_empty() || t.session.wants_write())
    }

    /// Reply bytes not yet sent, including those of a lent buffer and those not yet sealed.
    pub fn unsent(&self) -> usize {
        self.write.len() - self.written
            + self.lent.unwrap_or(0)
            + self.tls.as_ref().map_or(0, |t| t.plain_out.len())
    }

    /// Over TLS: seals the queued replies into records and moves everything the session has to
    /// send into the write buffer.
    fn seal(&mut self) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        if !tls.plain_out.is_empty() {
            tls.session.seal(&tls.plain_out)?;
            tls.plain_out.clear();
        }
        if tls.session.wants_write() {
            if self.written == self.write.len() {
                self.write.clear();
                self.written = 0;
            }
            tls.session.take_outgoing(&mut self.write);
        }
        Ok(())
    }

    /// After a failed TLS session: the alert that tells the peer why, to send (without waiting)
    /// before the connection closes.
    pub fn tls_alert(&mut self) -> Option<Vec<u8>> {
        let tls = self.tls.as_mut()?;
        let mut alert = Vec::new();
        tls.session.take_outgoing(&mut alert);
        (!alert.is_empty()).then_some(alert)
    }

    /// Over TLS: decrypts `bytes` into the read buffer, tells the worker the peer's identity
    /// once the handshake has ended, and notes a `close_notify`. Without TLS: buffers `bytes`.
    fn decrypt(&mut self, bytes: &[u8], cx: &mut Dispatch<'_>) -> Result<(), Closed> {
        let Some(tls) = self.tls.as_mut() else {
            self.buffer(bytes);
            return Ok(());
        };
        let mut plain = std::mem::take(&mut tls.plain_in);
        let closed = tls
            .session
            .receive(bytes, &mut plain)
            .map_err(Closed::Tls)?;
        if !tls.authenticated && !tls.session.is_handshaking() {
            tls.authenticated = true;
            if let Some(names) = tls.session.peer_names() {
                cx.worker
                    .authenticated(self.association, Identity::new(names), cx.now, cx.out);
            }
        }
        self.finished |= closed;
        self.buffer(&plain);
        plain.clear();
        if let Some(tls) = self.tls.as_mut() {
            tls.plain_in = plain;
        }
        Ok(())
    }

    /// Whether the connection should not be read until its replies drain.
    pub fn paused(&self) -> bool {
        self.unsent() > self.high_water
    }

    /// Whether received messages wait for the replies to drain (call
    /// [`Self::dispatch_buffered`] once the connection is no longer [`Self::paused`]).
    pub fn holds_input(&self) -> bool {
        self.held
    }

    fn over_high_water(&self, cx: &Dispatch<'_>) -> bool {
        self.unsent() + cx.produced() > self.high_water
    }

    /// Hands the complete messages in the read buffer to the worker, as far as the high-water mark
    /// allows. Returns the number of messages.
    pub fn dispatch_buffered(&mut self, cx: &mut Dispatch<'_>) -> Result<usize, Closed> {
        let unsent = self.unsent();
        let (consumed, messages, held) = frame(
            self.association,
            &self.read[self.start..self.end],
            unsent,
            self.high_water,
            self.max_message,
            cx,
        )?;
        self.held = held;
        self.start += consumed;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.read.len() > self.read_size {
                // It held messages back: give the memory back.
                self.read = Vec::new();
            }
        }
        Ok(messages)
    }

    /// Handles bytes the kernel received for this connection (io_uring): frames them in place when
    /// nothing is buffered, and keeps what is left (a partial message, or messages held back by
    /// the high-water mark) in the read buffer. Returns the number of messages.
    pub fn receive(&mut self, bytes: &[u8], cx: &mut Dispatch<'_>) -> Result<usize, Closed> {
        if self.tls.is_some() {
            self.decrypt(bytes, cx)?;
            return self.dispatch_buffered(cx);
        }
        if self.start == self.end {
            let (consumed, messages, held) = frame(
                self.association,
                bytes,
                self.unsent(),
                self.high_water,
                self.max_message,
                cx,
            )?;
            self.held = held;
            self.buffer(&bytes[consumed..]);
            Ok(messages)
        } else {
            self.buffer(bytes);
            self.dispatch_buffered(cx)
        }
    }

    /// Appends to the read buffer, moving what is there to the front or growing it if needed.
    fn buffer(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.read.len() - self.end < bytes.len() && self.start > 0 {
            self.read.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.read.len() - self.end < bytes.len() {
            self.read.resize(self.end + bytes.len(), 0);
        }
        self.read[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Appends a reply to the write buffer (over TLS, to the replies to seal).
    pub fn queue(&mut self, message: &[u8]) {
        if let Some(tls) = self.tls.as_mut() {
            tls.plain_out.extend_from_slice(message);
            return;
        }
        if self.written == self.write.len() {
            self.write.clear();
            self.written = 0;
        }
        self.write.extend_from_slice(message);
    }

    /// Lends the unsent replies to a kernel send (io_uring): the buffer and the offset of its
    /// first unsent byte. `None` while a buffer is lent or when nothing waits. Replies queued
    /// meanwhile go to another buffer; [`Self::give_back`] returns this one.
    pub fn take_unsent(&mut self) -> Option<(Vec<u8>, usize)> {
        if self.lent.is_some() || !self.wants_write() {
            return None;
        }
        if self.seal().is_err() || self.written == self.write.len() {
            return None;
        }
        let buf = std::mem::replace(&mut self.write, std::mem::take(&mut self.spare));
        let from = std::mem::take(&mut self.written);
        self.lent = Some(buf.len() - from);
        Some((buf, from))
    }

    /// Takes back the buffer lent by [`Self::take_unsent`] after the kernel sent `sent` bytes
    /// from `from` on. What it did not send goes out before the replies queued meanwhile.
    pub fn give_back(&mut self, mut buf: Vec<u8>, from: usize, sent: usize) {
        self.lent = None;
        let from = (from + sent).min(buf.len());
        if from == buf.len() {
            buf.clear();
            self.spare = buf;
        } else {
            buf.extend_from_slice(&self.write[self.written..]);
            self.write.clear();
            self.written = 0;
            self.spare = std::mem::replace(&mut self.write, buf);
            self.written = from;
        }
    }
}

impl<S: Read> StreamConn<S> {
    /// Handles the messages the read buffer holds, then reads what the socket has (at most
    /// `budget` reads) and hands every complete message to the worker, stopping at the
    /// high-water mark. Returns the number of messages.
    pub fn read_and_dispatch(
        &mut self,
        cx: &mut Dispatch<'_>,
        budget: usize,
    ) -> Result<usize, Closed> {
        if self.tls.is_some() {
            return self.read_tls_and_dispatch(cx, budget);
        }
        let mut messages = self.dispatch_buffered(cx)?;
        if self.read.len() < self.read_size {
            self.read.resize(self.read_size, 0);
        }
        for _ in 0..budget.max(1) {
            if self.over_high_water(cx) {
                break;
            }
            if self.start > 0 {
                self.read.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let room = self.read.len() - self.end;
            if room == 0 {
                break;
            }
            let Some(n) = read_socket(&mut self.socket, &mut self.read[self.end..])? else {
                break;
            };
            if n == 0 {
                // The peer finished sending; its last requests are still answered.
                self.finished = true;
                break;
            }
            self.end += n;
            messages += self.dispatch_buffered(cx)?;
            if n < room {
                // A short read: the socket is drained.
                break;
            }
        }
        Ok(messages)
    }

    /// [`Self::read_and_dispatch`] over TLS: reads records into a buffer of their own and
    /// hands them to [`Self::receive`], which decrypts them into the read buffer.
    fn read_tls_and_dispatch(
        &mut self,
        cx: &mut Dispatch<'_>,
        budget: usize,
    ) -> Result<usize, Closed> {
        let mut messages = self.dispatch_buffered(cx)?;
        let Some(mut cipher) = self.tls.as_mut().map(|t| std::mem::take(&mut t.cipher_in)) else {
            return Ok(messages);
        };
        cipher.resize(self.read_size, 0);
        // On an error the connection closes, and the buffer with it.
        for _ in 0..budget.max(1) {
            if self.over_high_water(cx) || self.finished {
                break;
            }
            let Some(n) = read_socket(&mut self.socket, &mut cipher)? else {
                break;
            };
            if n == 0 {
                self.finished = true;
                break;
            }
            messages += self.receive(&cipher[..n], cx)?;
            if n < cipher.len() {
                break;
            }
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.cipher_in = cipher;
        }
        Ok(messages)
    }
}

/// One read of a non-blocking socket: `Ok(None)` when it has nothing now, `Ok(Some(0))` at the
/// end of the stream.
fn read_socket(socket: &mut impl Read, buf: &mut [u8]) -> Result<Option<usize>, Closed> {
    loop {
        match socket.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Closed::Io(e)),
        }
    }
}

impl<S: Write> StreamConn<S> {
    /// Writes as much of the write buffer as the socket takes; `Ok(true)` when all is written.
    pub fn flush(&mut self) -> io::Result<bool> {
        self.seal()?;
        while self.written < self.write.len() {
            match self.socket.write(&self.write[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.write.clear();
        self.written = 0;
        Ok(true)
    }
}

/// The framing loop of both drivers: hands every complete message at the front of `bytes` to the
/// worker (each at most `max_message` bytes), and stops early once the connection's replies (`unsent`, plus what this dispatch
/// produced) pass `high_water`. Returns the bytes consumed, the messages handled and
/// whether it stopped at the high-water mark.
fn frame(
    association: AssociationId,
    bytes: &[u8],
    unsent: usize,
    high_water: usize,
    max_message: usize,
    cx: &mut Dispatch<'_>,
) -> Result<(usize, usize, bool), Closed> {
    let mut frames = Frames::new(bytes, max_message);
    let mut messages = 0;
    let mut held = false;
    loop {
        if unsent + cx.produced() > high_water {
            let rest = &bytes[frames.consumed()..];
            held = matches!(next_frame(rest, max_message), Ok(Frame::Complete { .. }));
            break;
        }
        let Some(message) = frames.next() else {
            break;
        };
        let received = Received::Message {
            association,
            ppid: None,
            message,
        };
        cx.kinds
            .push(cx.worker.handle(cx.reads, received, cx.now, cx.out));
        messages += 1;
    }
    if let Some(e) = frames.error() {
        return Err(Closed::Framing(e));
    }
    Ok((frames.consumed(), messages, held))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;

    use rserpool_handlespace::{Limits, PrId};
    use rserpool_protocol::{AsapMessage, Generation, PoolHandle};

    use super::*;
    use crate::core::in_memory::InMemoryPr;
    use crate::core::{AssociationInfo, CoreConfig};
    use rserpool_net::Transport;

    /// The profiles' `limits.max_buffered_bytes_per_connection`.
    const HIGH_WATER: usize = 4 << 20;

    /// A one-worker PR with one TCP association open; its ID.
    fn worker() -> (InMemoryPr, AssociationId) {
        let mut pr = InMemoryPr::new(1, CoreConfig::new(PrId(1)), Limits::default(), 1);
        let info = AssociationInfo {
            transport: Transport::Tcp,
            generation: Generation::Rfc,
            peer_addresses: vec!["127.0.0.1:9".parse().unwrap()],
            protocol: crate::metrics::Protocol::Asap,
        };
        let association = pr.workers_mut()[0].open_association(info, 0);
        (pr, association)
    }

    fn resolutions(n: usize) -> Vec<u8> {
        let mut buf = vec![0; 256];
        let len = AsapMessage::HandleResolution {
            subscribe: false,
            pool_handle: PoolHandle(b"none"),
            items: None,
        }
        .encode(Generation::Rfc, &mut buf)
        .unwrap();
        buf[..len].repeat(n)
    }

    #[test]
    fn messages_cut_anywhere_are_handled_once_whole() {
        let (mut pr, association) = worker();
        let reader = pr.workers()[0].reader().clone();
        let reads = reader.pin();
        let mut conn = StreamConn::new((), association, 64, 64, HIGH_WATER);
        let (mut out, mut kinds) = (Output::default(), Vec::new());
        let stream = resolutions(5);
        let mut handled = 0;
        for chunk in stream.chunks(7) {
            let mut cx = Dispatch::new(&mut pr.workers_mut()[0], &reads, &mut out, &mut kinds, 0);
            handled += conn.receive(chunk, &mut cx).unwrap();
        }
        assert_eq!(handled, 5);
        assert_eq!(kinds.len(), 5);
        assert_eq!(out.transmits().count(), 5, "every request answered");
        assert!(!conn.holds_input());

        let mut cx = Dispatch::new(&mut pr.workers_mut()[0], &reads, &mut out, &mut kinds, 0);
        let broken = conn.receive(&[0, 0, 0, 2], &mut cx);
        assert!(matches!(broken, Err(Closed::Framing(_))), "{broken:?}");
    }

    #[test]
    fn messages_wait_while_the_replies_are_over_the_high_water_mark() {
        let (mut pr, association) = worker();
        let reader = pr.workers()[0].reader().clone();
        let reads = reader.pin();
        let mut conn = StreamConn::new((), association, 64, 64, HIGH_WATER);
        let (mut out, mut kinds) = (Output::default(), Vec::new());
        conn.queue(&vec![0; HIGH_WATER + 1]);
        assert!(conn.paused());
        let mut cx = Dispatch::new(&mut pr.workers_mut()[0], &reads, &mut out, &mut kinds, 0);
        assert_eq!(conn.receive(&resolutions(3), &mut cx).unwrap(), 0);
        assert!(conn.holds_input());

        let (buf, from) = conn.take_unsent().unwrap();
        assert!(conn.paused(), "a lent buffer still counts as unsent");
        conn.give_back(buf, from, HIGH_WATER + 1);
        assert!(!conn.paused() && !conn.wants_write());
        let mut cx = Dispatch::new(&mut pr.workers_mut()[0], &reads, &mut out, &mut kinds, 0);
        assert_eq!(conn.dispatch_buffered(&mut cx).unwrap(), 3);
        assert!(!conn.holds_input());
        assert_eq!(out.transmits().count(), 3);
    }

    #[test]
    fn a_batch_stops_once_its_own_replies_pass_the_high_water_mark() {
        let (mut pr, association) = worker();
        let reader = pr.workers()[0].reader().clone();
        let reads = reader.pin();
        let mut conn = StreamConn::new((), association, 64, 64, HIGH_WATER);
        let (mut out, mut kinds) = (Output::default(), Vec::new());
        conn.queue(&vec![0; HIGH_WATER - 10]);
        let mut cx = Dispatch::new(&mut pr.workers_mut()[0], &reads, &mut out, &mut kinds, 0);
        // The first reply passes the mark: the other messages wait.
        assert_eq!(conn.receive(&resolutions(4), &mut cx).unwrap(), 1);
        assert!(conn.holds_input());
    }

    #[test]
    fn what_a_short_send_leaves_goes_before_replies_queued_meanwhile() {
        let (_, association) = worker();
        let mut conn = StreamConn::new((), association, 64, 64, HIGH_WATER);
        conn.queue(b"abc");
        let (buf, from) = conn.take_unsent().unwrap();
        assert_eq!(&buf[from..], b"abc");
        assert_eq!(conn.take_unsent(), None, "one send in flight at most");
        conn.queue(b"de");
        assert_eq!(conn.unsent(), 5);
        conn.give_back(buf, from, 1);
        let (buf, from) = conn.take_unsent().unwrap();
        assert_eq!(&buf[from..], b"bcde");
        conn.give_back(buf, from, 4);
        assert_eq!(conn.unsent(), 0);
        conn.queue(b"f");
        let (buf, from) = conn.take_unsent().unwrap();
        assert_eq!(&buf[from..], b"f");
    }

    #[test]
    fn epoll_reads_frame_the_socket_and_see_its_end() {
        let (mut pr, association) = worker();
        let reader = pr.workers()[0].reader().clone();
        let reads = reader.pin();
        let (mut peer, socket) = UnixStream::pair().unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut conn = StreamConn::new(socket, association, 64, 64, HIGH_WATER);
        let (mut out, mut kinds) = (Output::default(), Vec::new());
        peer.write_all(&resolutions(10)).unwrap();
        let mut cx = Dispatch::new(&mut pr.workers_mut()[0], &reads, &mut out, &mut kinds, 0);
        assert_eq!(conn.read_and_dispatch(&mut cx, 64).unwrap(), 10);
        let mut replies = Vec::new();
        for (_, bytes) in out.transmits() {
            conn.queue(bytes);
            replies.extend_from_slice(bytes);
        }
        assert!(conn.flush().unwrap(), "all written");
        let mut written = vec![0; replies.len()];
        std::io::Read::read_exact(&mut peer, &mut written).unwrap();
        assert_eq!(written, replies);
        assert!(!conn.peer_finished());
        drop(peer);
        let mut cx = Dispatch::new(&mut pr.workers_mut()[0], &reads, &mut out, &mut kinds, 0);
        assert_eq!(conn.read_and_dispatch(&mut cx, 64).unwrap(), 0);
        assert!(conn.peer_finished(), "the end of the stream is seen");
        assert!(
            conn.done(),
            "nothing left to answer: the connection can close"
        );
    }

    #[test]
    fn each_connection_pauses_at_its_own_configured_mark() {
        let association = AssociationId::new(1).unwrap();
        let mut small = StreamConn::new((), association, 64, 64, 65_536);
        let mut large = StreamConn::new((), association, 64, 64, HIGH_WATER);
        for conn in [&mut small, &mut large] {
            conn.queue(&vec![0; 100_000]);
        }
        assert!(small.paused(), "100 000 bytes wait, above its 65 536");
        assert!(!large.paused(), "below its 4 MiB");
    }
}
