//! The built-in echo server, the ceiling a registrar is compared with: one thread, non-blocking
//! sockets polled in a loop (no epoll), every read drained into whole frames and all their
//! answers sent in one write. It answers each frame with the same bytes, or with a frame of a
//! fixed size to stand in for a real response. Over SCTP it is one one-to-many socket: every
//! message that arrived is received (up to 64 in one `recvmmsg`) before the answers go out,
//! each as one message on the association it came from (up to 64 in one `sendmmsg`). Over SCTP
//! over UDP it is one UDP socket and one user-space SCTP endpoint for every association: each
//! turn takes every datagram that waits, answers every message that arrived, runs the timers and
//! sends what is due.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use rserpool_net::sctp_udp::{
    AssociationHandle, EndpointConfig, EndpointError, EndpointEvent, SctpUdpEndpoint, SendError,
    random_secret,
};
use rserpool_net::{
    ClientCertificate, SCTP_BATCH_MAX, SctpAssocId, SctpRecv, SctpRecvBatch, SctpSocket, ServerTls,
};
use rserpool_protocol::framing::Frames;
use rserpool_protocol::url::TransportUrl;
use rserpool_protocol::{ASAP_PORT, AsapMessage, Generation, PPID_ASAP, PoolHandle};

use crate::error::{Error, Result};
use crate::net::{Endpoint, StreamTransport};
use crate::tls::SecureStream;
use crate::workload::MAX_FRAME;

/// Smallest sized reply: header, and a pool-handle parameter with a handle of 4 bytes.
pub const MIN_REPLY: usize = 12;
/// Largest sized reply: the length field's range, rounded down to 4.
pub const MAX_REPLY: usize = MAX_FRAME & !3;

/// How the echo server answers a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EchoReply {
    /// The frame itself.
    Mirror,
    /// A HANDLE_RESOLUTION frame of this many bytes (a multiple of 4 in `MIN_REPLY..=MAX_REPLY`).
    Sized(usize),
}

/// The reply frame of `size` bytes (see [`EchoReply::Sized`]): a HANDLE_RESOLUTION whose pool
/// handle fills the frame, so the client's checks accept it.
pub fn reply_frame(size: usize) -> Result<Vec<u8>> {
    if !size.is_multiple_of(4) || !(MIN_REPLY..=MAX_REPLY).contains(&size) {
        return Err(Error::new(format!(
            "reply size {size} must be a multiple of 4 from {MIN_REPLY} to {MAX_REPLY}"
        )));
    }
    let handle = vec![b'e'; size - 8];
    let mut frame = vec![0; size];
    let len = AsapMessage::HandleResolution {
        subscribe: false,
        pool_handle: PoolHandle(&handle),
        items: None,
    }
    .encode(Generation::Rfc, &mut frame)
    .map_err(|e| Error::new(e.to_string()))?;
    debug_assert_eq!(len, size);
    Ok(frame)
}

/// A running echo server; stopped when dropped.
#[derive(Debug)]
pub struct EchoServer {
    endpoint: Endpoint,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl EchoServer {
    /// Listens on `addr` (port 0 = any) over `transport`, over TLS with `tls` (client
    /// certificates required, as a registrar's TLS listener does), and serves in a thread of its
    /// own.
    pub fn start(
        transport: StreamTransport,
        addr: SocketAddr,
        reply: EchoReply,
        tls: Option<ServerTls>,
    ) -> Result<Self> {
        let template = match reply {
            EchoReply::Mirror => None,
            EchoReply::Sized(size) => Some(reply_frame(size)?),
        };
        if matches!(transport, StreamTransport::Sctp | StreamTransport::SctpUdp) {
            if tls.is_some() {
                return Err(Error::new("the echo server speaks no TLS over SCTP"));
            }
            if transport == StreamTransport::SctpUdp {
                return Self::start_sctp_udp(addr, template);
            }
            return Self::start_sctp(addr, template);
        }
        let url = TransportUrl::new(transport.url_transport(), addr);
        let listener: TcpListener = rserpool_net::listen_stream(&url, false, 1024, 0)
            .map_err(|e| {
                let e = e.into_kernel_error();
                Error::new(format!("echo server: listen on {addr}: {e}"))
            })?
            .into();
        let endpoint = Endpoint {
            tls: tls.is_some(),
            ..Endpoint::new(transport, listener.local_addr()?)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("echo-server".into())
            .spawn(move || serve(&listener, template.as_deref(), tls.as_ref(), &flag))?;
        Ok(Self {
            endpoint,
            stop,
            thread: Some(thread),
        })
    }

    /// The SCTP echo server: one one-to-many socket on `addr`.
    fn start_sctp(addr: SocketAddr, template: Option<Vec<u8>>) -> Result<Self> {
        let socket = SctpSocket::listen(&[addr], false, 1024, 0).map_err(|e| {
            let e = e.into_kernel_error();
            Error::new(format!("echo server: listen on sctp://{addr}: {e}"))
        })?;
        let local = socket
            .socket()
            .local_addr()?
            .as_socket()
            .ok_or_else(|| Error::new("echo server: the SCTP socket has no IP address"))?;
        let endpoint = Endpoint::new(StreamTransport::Sctp, local);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("echo-server".into())
            .spawn(move || serve_sctp(&socket, template.as_deref(), &flag))?;
        Ok(Self {
            endpoint,
            stop,
            thread: Some(thread),
        })
    }

    /// The SCTP-over-UDP echo server: one UDP socket on `addr`, one endpoint on SCTP port 3863.
    fn start_sctp_udp(addr: SocketAddr, template: Option<Vec<u8>>) -> Result<Self> {
        let socket = UdpSocket::bind(addr)
            .map_err(|e| Error::new(format!("echo server: bind sctp+udp://{addr}: {e}")))?;
        socket.set_nonblocking(true)?;
        rserpool_net::set_dont_fragment(std::os::fd::AsFd::as_fd(&socket), addr.is_ipv6())?;
        let endpoint = Endpoint::new(StreamTransport::SctpUdp, socket.local_addr()?);
        let sctp = SctpUdpEndpoint::new(
            EndpointConfig::server(ASAP_PORT, SCTP_UDP_ASSOCIATIONS),
            random_secret()?,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("echo-server".into())
            .spawn(move || serve_sctp_udp(&socket, sctp, template.as_deref(), &flag))?;
        Ok(Self {
            endpoint,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// Stops the server and reports the error that ended it early, if any.
    pub fn stop(mut self) -> Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => Err(Error::new(format!("echo server failed: {e}"))),
            Some(Err(_)) => Err(Error::new("echo server panicked")),
            _ => Ok(()),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        // An error here was already visible to whoever called `stop`; dropping discards it.
        let _ = self.halt();
    }
}

/// One client connection of the echo server.
struct Peer {
    stream: SecureStream,
    inbuf: Box<[u8]>,
    in_len: usize,
    out: Vec<u8>,
    out_pos: usize,
    open: bool,
}

impl Peer {
    fn new(stream: TcpStream, tls: Option<&ServerTls>) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        let mut stream = match tls {
            None => SecureStream::plain(stream),
            Some(tls) => {
                let session = tls.accept(ClientCertificate::Required).ok_or_else(|| {
                    io::Error::new(ErrorKind::InvalidInput, "the echo server has no CA bundle")
                })?;
                SecureStream::tls(stream, session)
            }
        };
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            inbuf: vec![0; 2 * MAX_FRAME].into_boxed_slice(),
            in_len: 0,
            out: Vec::with_capacity(64 * 1024),
            out_pos: 0,
            open: true,
        })
    }

    /// Writes pending replies, then reads and answers; returns whether anything moved.
    fn pump(&mut self, template: Option<&[u8]>) -> bool {
        let mut moved = self.flush();
        if self.out_pos < self.out.len() {
            return moved;
        }
        match self.stream.read(&mut self.inbuf[self.in_len..]) {
            Ok(0) => {
                self.open = false;
                return true;
            }
            Ok(n) => self.in_len += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                return moved;
            }
            Err(_) => {
                self.open = false;
                return true;
            }
        }
        moved = true;
        let mut frames = Frames::new(&self.inbuf[..self.in_len], MAX_FRAME);
        match template {
            Some(t) => frames.by_ref().for_each(|_| self.out.extend_from_slice(t)),
            None => frames.by_ref().for_each(drop),
        }
        let consumed = frames.consumed();
        if frames.error().is_some() {
            self.open = false;
            return true;
        }
        if template.is_none() {
            self.out.extend_from_slice(&self.inbuf[..consumed]);
        }
        self.inbuf.copy_within(consumed..self.in_len, 0);
        self.in_len -= consumed;
        self.flush();
        moved
    }

    /// One write of whatever is pending; returns whether bytes left.
    fn flush(&mut self) -> bool {
        if self.out_pos == self.out.len() {
            return false;
        }
        match self.stream.write(&self.out[self.out_pos..]) {
            Ok(n) => {
                self.out_pos += n;
                if self.out_pos == self.out.len() {
                    self.out.clear();
                    self.out_pos = 0;
                }
                n > 0
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                false
            }
            Err(_) => {
                self.open = false;
                true
            }
        }
    }
}

fn serve(
    listener: &std::net::TcpListener,
    template: Option<&[u8]>,
    tls: Option<&ServerTls>,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut peers: Vec<Peer> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut moved = false;
        match listener.accept() {
            Ok((stream, _)) => {
                peers.push(Peer::new(stream, tls)?);
                moved = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
            Err(e) => return Err(e),
        }
        for peer in &mut peers {
            moved |= peer.pump(template);
        }
        peers.retain(|p| p.open);
        if !moved {
            thread::yield_now();
        }
    }
    Ok(())
}

/// Answers waiting for room in the SCTP socket's send buffer at most; while more wait, the
/// server receives nothing (the clients' windows bound them anyway).
const SCTP_BACKLOG: usize = 64 * 1024;

/// The SCTP echo server's loop: receives every message that arrived (until a batch finds
/// fewer than it could take, or [`SCTP_BACKLOG`] answers wait), then sends their answers in
/// order, in batches; notifications are skipped, a message cut in parts answered once, when its
/// end came.
fn serve_sctp(socket: &SctpSocket, template: Option<&[u8]>, stop: &AtomicBool) -> io::Result<()> {
    // room for any ASAP message whole (4 MiB, touched only where messages land)
    let mut batch = SctpRecvBatch::new(SCTP_BATCH_MAX, MAX_FRAME + 4);
    // (association, offset and length in `answers`), in arrival order
    let mut queue: Vec<(SctpAssocId, usize, usize)> = Vec::new();
    let mut answers: Vec<u8> = Vec::new();
    let mut next = 0;
    // A message longer than its room: its first parts' bytes (mirrored) so far.
    let mut partial: Vec<u8> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut moved = false;
        while queue.len() - next < SCTP_BACKLOG {
            let max = SCTP_BACKLOG - (queue.len() - next);
            let received = match socket.recv_batch(&mut batch, max) {
                Ok(n) => n,
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted =>
                {
                    break;
                }
                Err(e) => return Err(e),
            };
            moved = true;
            for (recv, payload) in batch.messages(socket) {
                let SctpRecv::Data {
                    assoc, complete, ..
                } = recv?
                else {
                    continue;
                };
                if template.is_none() {
                    partial.extend_from_slice(payload);
                }
                if !complete {
                    continue;
                }
                let start = answers.len();
                match template {
                    Some(t) => answers.extend_from_slice(t),
                    None => answers.append(&mut partial),
                }
                queue.push((assoc, start, answers.len() - start));
            }
            // the socket had no more: asking again would find nothing
            if received < max.min(batch.capacity()) {
                break;
            }
        }
        let mut sends: [(SctpAssocId, u32, &[u8]); SCTP_BATCH_MAX] =
            [(SctpAssocId(0), PPID_ASAP, &[]); SCTP_BATCH_MAX];
        while next < queue.len() {
            let count = (queue.len() - next).min(SCTP_BATCH_MAX);
            for (send, &(assoc, start, len)) in sends.iter_mut().zip(&queue[next..next + count]) {
                *send = (assoc, PPID_ASAP, &answers[start..start + len]);
            }
            match socket.send_batch(&sends[..count]) {
                Ok(sent) => {
                    next += sent;
                    moved = true;
                    // the send buffer is full, or the next answer fails: that shows next turn
                    if sent < count {
                        break;
                    }
                }
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted =>
                {
                    break;
                }
                // The association is gone (the client closed): its answer is dropped.
                Err(_) => next += 1,
            }
        }
        if next == queue.len() {
            queue.clear();
            answers.clear();
            next = 0;
        }
        if !moved {
            thread::yield_now();
        }
    }
    Ok(())
}

/// The most associations the SCTP-over-UDP echo server holds.
const SCTP_UDP_ASSOCIATIONS: usize = 65_536;
/// Datagrams the SCTP-over-UDP echo server takes in one turn at most, before it answers.
const SCTP_UDP_DATAGRAMS_PER_TURN: usize = 256;

/// The SCTP-over-UDP echo server's loop: takes every datagram that waits, answers each message
/// that arrived (with `template`, or its own bytes), in order per association, as far as the
/// send buffers have room (the rest waits for the next turn), runs the timers and sends what is
/// due.
fn serve_sctp_udp(
    socket: &UdpSocket,
    mut sctp: SctpUdpEndpoint,
    template: Option<&[u8]>,
    stop: &AtomicBool,
) -> io::Result<()> {
    let start = Instant::now();
    let (mut datagram, mut transmit) = (vec![0; 65_536], vec![0; 65_536]);
    // Answers waiting for room, in arrival order: the association and, when mirrored, the bytes.
    let mut backlog: VecDeque<(AssociationHandle, Option<Vec<u8>>)> = VecDeque::new();
    // A datagram the socket had no room for.
    let mut pending: Option<(SocketAddr, usize)> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut moved = false;
        for _ in 0..SCTP_UDP_DATAGRAMS_PER_TURN {
            let Ok((n, from)) = socket.recv_from(&mut datagram) else {
                break;
            };
            sctp.handle_datagram(from, &datagram[..n], now);
            moved = true;
        }
        sctp.handle_timeouts(now);
        sctp.poll_events(|handle, event| {
            if let EndpointEvent::Message { bytes, .. } = event {
                backlog.push_back((handle, template.is_none().then(|| bytes.to_vec())));
            }
        });
        while let Some((handle, mirrored)) = backlog.front() {
            let answer = mirrored.as_deref().or(template).unwrap_or_default();
            match sctp.send(*handle, 0, PPID_ASAP, answer, now) {
                Err(EndpointError::Send(SendError::BufferFull { .. })) => break,
                // Answered, or the association is gone (the client closed).
                _ => {
                    backlog.pop_front();
                    moved = true;
                }
            }
        }
        loop {
            let next = match pending.take() {
                Some(datagram) => Some(datagram),
                None => sctp.poll_transmit(&mut transmit),
            };
            let Some((to, len)) = next else {
                break;
            };
            match socket.send_to(&transmit[..len], to) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    pending = Some((to, len));
                    break;
                }
                // Sent, or lost as on the wire: the association retransmits.
                _ => moved = true,
            }
        }
        if !moved {
            thread::yield_now();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_frames_have_the_size_asked_and_decode() {
        for size in [12, 64, 196, MAX_REPLY] {
            let f = reply_frame(size).unwrap();
            assert_eq!(f.len(), size);
            assert!(AsapMessage::decode(&f, Generation::Rfc).is_ok(), "{size}");
        }
        for size in [0, 8, 13, MAX_REPLY + 4] {
            assert!(reply_frame(size).is_err(), "{size}");
        }
    }
}
