//! A client's connection to a registrar's ASAP port over any of the connection transports: a
//! TCP or MPTCP byte stream whose messages are framed by their length (RFC 5354 §4), a
//! one-to-one kernel SCTP association that carries each message whole with PPID 11, or the same
//! over UDP (`sctp+udp://`, RFC 6951), an association run in user space by [`SctpUdpClient`]
//! with the registrar's SCTP port 3863 inside the URL's UDP port. Blocking: the endpoint's
//! driver reads on one thread and sends from another. Over `sctp+udp://` keep a thread in
//! [`Connection::read_messages`]: the association's acknowledgements and timers run in the
//! threads that call in, so without a reader the peer retransmits what it sent.
//!
//! A stream connection reads and writes through [`ByteStream`]: the socket's bytes, or a TLS
//! session over them ([`Connection::open_tls`]); neither the framing nor the callers differ.

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rserpool_protocol::framing::Frames;
use rserpool_protocol::{MAX_MESSAGE_LEN, PPID_ASAP};
use socket2::Socket;

use crate::error::NetError;
use crate::sctp::SctpClient;
use crate::sctp_udp_client::SctpUdpClient;
use crate::stream::{connect_stream_blocking, connect_stream_blocking_from};
use crate::tls::{ClientTls, TlsSession, handshake_blocking, server_name};
use rserpool_protocol::url::{Transport, TransportUrl};

/// An open connection to a registrar.
#[derive(Debug)]
pub struct Connection {
    transport: Transport,
    carrier: Carrier,
}

/// What carries a connection's messages.
#[derive(Debug)]
enum Carrier {
    /// An SCTP association: each message whole, with its PPID.
    Sctp(SctpClient),
    /// A TCP or MPTCP byte stream: messages framed by their length.
    Stream(ByteStream),
    /// An SCTP association over UDP, run in user space: each message whole, with its PPID.
    SctpUdp(SctpUdpClient),
}

/// The byte stream under a TCP or MPTCP connection: the socket's bytes as they are, or a TLS
/// session that encrypts in [`Self::write_all`] and decrypts in [`Self::read_into`] over the
/// same socket.
#[derive(Debug)]
enum ByteStream {
    /// The socket itself.
    Plain(Socket),
    /// TLS over the socket; the session is shared by the handles of [`Connection::try_clone`]
    /// (a reader thread and a sender).
    Tls(Arc<TlsStream>),
}

/// A TLS session and its socket.
#[derive(Debug)]
struct TlsStream {
    socket: Socket,
    /// The session, and plaintext that arrived with the handshake.
    state: Mutex<(TlsSession, Vec<u8>)>,
}

/// Writes all of `bytes` to `socket` (blocking, within its write time-out).
fn write_all(socket: &Socket, bytes: &[u8]) -> io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match socket.send_with_flags(rest, libc::MSG_NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what has arrived into `buf`, waiting for at least one byte; 0 at the end of the stream.
fn read_some(socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match io::Read::read(&mut &*socket, buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

impl TlsStream {
    /// Runs the client's handshake on `socket` (blocking, within its time-outs).
    fn handshake(socket: Socket, mut session: TlsSession) -> io::Result<Self> {
        let plain = handshake_blocking(&mut session, &socket)?;
        Ok(Self {
            socket,
            state: Mutex::new((session, plain)),
        })
    }
}

impl ByteStream {
    /// Writes all of `bytes` (blocking, within the socket's write time-out).
    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(socket) => write_all(socket, bytes),
            Self::Tls(tls) => {
                let mut state = tls.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.0.seal(bytes)?;
                let mut out = Vec::with_capacity(bytes.len() + 64);
                state.0.take_outgoing(&mut out);
                // Under the lock: records leave in the order they were sealed.
                write_all(&tls.socket, &out)
            }
        }
    }

    /// Waits for bytes and appends what they carry to `buf` (over TLS, possibly nothing yet);
    /// `false` at the end of the stream.
    fn read_into(&self, chunk: &mut [u8], buf: &mut Vec<u8>) -> io::Result<bool> {
        match self {
            Self::Plain(socket) => {
                let n = read_some(socket, chunk)?;
                buf.extend_from_slice(&chunk[..n]);
                Ok(n > 0)
            }
            Self::Tls(tls) => {
                {
                    let mut state = tls.state.lock().unwrap_or_else(PoisonError::into_inner);
                    if !state.1.is_empty() {
                        buf.append(&mut state.1);
                        return Ok(true);
                    }
                }
                let n = read_some(&tls.socket, chunk)?;
                let mut state = tls.state.lock().unwrap_or_else(PoisonError::into_inner);
                let closed = state.0.receive(&chunk[..n], buf);
                if state.0.wants_write() {
                    // An alert or a key update to answer.
                    let mut out = Vec::new();
                    state.0.take_outgoing(&mut out);
                    let _ = write_all(&tls.socket, &out);
                }
                Ok(n > 0 && !closed?)
            }
        }
    }

    /// A second handle on the same stream.
    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Plain(socket) => Self::Plain(socket.try_clone()?),
            Self::Tls(tls) => Self::Tls(Arc::clone(tls)),
        })
    }

    /// The socket under the stream.
    fn socket(&self) -> &Socket {
        match self {
            Self::Plain(socket) => socket,
            Self::Tls(tls) => &tls.socket,
        }
    }
}

impl Connection {
    /// Connects to the registrar at `address` over `transport`, waiting at most `timeout`: TCP
    /// and MPTCP with `TCP_NODELAY`, SCTP as a one-to-one association ([`SctpClient::connect`]),
    /// SCTP over UDP as an association with SCTP port 3863 at the UDP address `address`
    /// ([`SctpUdpClient::connect`]). UDP carries no connection and is refused.
    pub fn open(
        transport: Transport,
        address: SocketAddr,
        timeout: Duration,
    ) -> Result<Self, NetError> {
        Self::open_from(transport, address, None, timeout)
    }

    /// [`Connection::open`] from the local address `source` if given: on loopback, 127.0.0.2 is
    /// another host as far as the registrar can tell (an SCTP association then has that one
    /// local address).
    pub fn open_from(
        transport: Transport,
        address: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Self, NetError> {
        let url = TransportUrl::new(transport, address);
        let carrier = match transport {
            Transport::Sctp => Carrier::Sctp(SctpClient::connect(address, source, timeout)?),
            Transport::Tcp | Transport::Mptcp => Carrier::Stream(ByteStream::Plain(
                connect_stream_blocking_from(&url, source, Some(timeout))?,
            )),
            Transport::SctpUdp => {
                Carrier::SctpUdp(SctpUdpClient::connect(address, source, timeout)?)
            }
            Transport::Udp => {
                return Err(NetError::InvalidRequest(format!(
                    "{url} names no connection: reach a registrar over sctp://, tcp://, mptcp:// \
                     or sctp+udp://"
                )));
            }
        };
        Ok(Self { transport, carrier })
    }

    /// Connects to the registrar at `address` over TLS on `transport` (TCP or MPTCP), waiting
    /// at most `timeout` for the connection and again for the handshake. The registrar's
    /// certificate must name `server_name`, or the address when `None`; `tls` presents the
    /// client's certificate if it has one.
    pub fn open_tls(
        transport: Transport,
        address: SocketAddr,
        timeout: Duration,
        tls: &ClientTls,
        server: Option<&str>,
    ) -> Result<Self, NetError> {
        let url = TransportUrl::new(transport, address).with_tls();
        if !transport.is_stream() {
            return Err(NetError::InvalidRequest(format!(
                "TLS runs over tcp and mptcp, not over {}: use tcp+tls:// or mptcp+tls://",
                transport.scheme()
            )));
        }
        let session = tls.connect(server_name(server, address.ip())?)?;
        let socket = connect_stream_blocking(&url, Some(timeout))?;
        let saved = socket.read_timeout().ok().flatten();
        let handshake = socket
            .set_read_timeout(Some(timeout))
            .and_then(|()| TlsStream::handshake(socket, session))
            .map_err(|e| NetError::io(format!("TLS handshake with {url}"), e))?;
        handshake
            .socket
            .set_read_timeout(saved)
            .map_err(|e| NetError::io(format!("set up {url}"), e))?;
        Ok(Self {
            transport,
            carrier: Carrier::Stream(ByteStream::Tls(Arc::new(handshake))),
        })
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The kernel socket of an SCTP or stream connection; the user-space association of SCTP
    /// over UDP has its own methods.
    fn kernel_socket(&self) -> Result<&Socket, &SctpUdpClient> {
        match &self.carrier {
            Carrier::Sctp(client) => Ok(client.socket()),
            Carrier::Stream(stream) => Ok(stream.socket()),
            Carrier::SctpUdp(client) => Err(client),
        }
    }

    /// The local address (for SCTP, the primary path's source address; for SCTP over UDP, the
    /// UDP socket's, whose port is also this end's SCTP port).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.kernel_socket() {
            Ok(socket) => socket.local_addr()?.as_socket().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "not an IP socket address")
            }),
            Err(client) => client.local_addr(),
        }
    }

    /// Sends one encoded ASAP message: written whole to a stream, or as one SCTP message with
    /// PPID 11 (over kernel SCTP asking for an immediate SACK).
    pub fn send(&self, message: &[u8]) -> io::Result<()> {
        match &self.carrier {
            Carrier::Sctp(client) => match client.send(PPID_ASAP, 0, message)? {
                n if n == message.len() => Ok(()),
                n => Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("SCTP took {n} of the {} bytes of a message", message.len()),
                )),
            },
            Carrier::Stream(stream) => stream.write_all(message),
            Carrier::SctpUdp(client) => client.send(PPID_ASAP, message),
        }
    }

    /// Receives messages until the connection closes or breaks, handing each to `on_message`
    /// until it returns false. A stream whose next message cannot be framed, or an SCTP message
    /// longer than ASAP allows, breaks the connection with an error.
    pub fn read_messages(&self, on_message: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        match &self.carrier {
            Carrier::Sctp(client) => read_sctp(client, on_message),
            Carrier::Stream(stream) => read_frames(stream, on_message),
            Carrier::SctpUdp(client) => read_sctp_udp(client, on_message),
        }
    }

    /// A second handle on the same connection (for a reader thread).
    pub fn try_clone(&self) -> io::Result<Self> {
        let carrier = match &self.carrier {
            Carrier::Sctp(client) => Carrier::Sctp(client.try_clone()?),
            Carrier::Stream(stream) => Carrier::Stream(stream.try_clone()?),
            Carrier::SctpUdp(client) => Carrier::SctpUdp(client.try_clone()?),
        };
        Ok(Self {
            transport: self.transport,
            carrier,
        })
    }

    /// Bounds how long a read may wait (`None`: for ever); a read that runs out fails with
    /// `WouldBlock` or `TimedOut`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self.kernel_socket() {
            Ok(socket) => socket.set_read_timeout(timeout),
            Err(client) => client.set_read_timeout(timeout),
        }
    }

    /// Bounds how long a send may block.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self.kernel_socket() {
            Ok(socket) => socket.set_write_timeout(timeout),
            Err(client) => client.set_write_timeout(timeout),
        }
    }

    /// Shuts the connection down both ways (an SCTP association gracefully; over UDP waiting
    /// up to 3 s for the registrar's part); a reader returns.
    pub fn shutdown(&self) -> io::Result<()> {
        match self.kernel_socket() {
            Ok(socket) => socket.shutdown(Shutdown::Both),
            Err(client) => client.shutdown(),
        }
    }
}

/// Reads SCTP messages, one per receive, until the association ends. A receive that fills the
/// whole buffer is a message longer than ASAP allows.
fn read_sctp(client: &SctpClient, mut on_message: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN + 1];
    loop {
        let n = match client.recv(&mut buf)? {
            (0, _) => return Ok(()),
            (n, _) => n,
        };
        if n == buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the registrar sent an SCTP message longer than {MAX_MESSAGE_LEN} bytes"),
            ));
        }
        if !on_message(&buf[..n]) {
            return Ok(());
        }
    }
}

/// Reads the messages of an SCTP association over UDP until it ends; messages of another PPID
/// are handed on as over kernel SCTP.
fn read_sctp_udp(
    client: &SctpUdpClient,
    mut on_message: impl FnMut(&[u8]) -> bool,
) -> io::Result<()> {
    while let Some((_, message)) = client.recv()? {
        if !on_message(&message) {
            break;
        }
    }
    Ok(())
}

/// Frames a byte stream (RFC 5354 §4 lengths, padded to 4) into messages.
fn read_frames(stream: &ByteStream, mut on_message: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if !stream.read_into(&mut chunk, &mut buf)? {
            return Ok(());
        }
        let mut frames = Frames::new(&buf, MAX_MESSAGE_LEN);
        for frame in frames.by_ref() {
            if !on_message(frame) {
                return Ok(());
            }
        }
        if let Some(e) = frames.error() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        let consumed = frames.consumed();
        buf.drain(..consumed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn a_tcp_connection_sends_whole_messages_and_frames_what_it_reads() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let conn = Connection::open(Transport::Tcp, listener.local_addr().unwrap(), WAIT).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        assert_eq!(conn.transport(), Transport::Tcp);
        assert_eq!(conn.local_addr().unwrap(), peer.peer_addr().unwrap());
        conn.send(&[0x0b, 0, 0, 8, 1, 2, 3, 4]).unwrap();
        let mut got = [0; 8];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, [0x0b, 0, 0, 8, 1, 2, 3, 4]);
        // Two messages, the second split over two writes, then the end of the stream.
        peer.write_all(&[1, 0, 0, 4, 2, 0, 0, 6, 9]).unwrap();
        peer.write_all(&[9, 0, 0]).unwrap();
        drop(peer);
        let mut seen = Vec::new();
        conn.try_clone()
            .unwrap()
            .read_messages(|m| {
                seen.push(m.to_vec());
                true
            })
            .unwrap();
        assert_eq!(seen, [vec![1, 0, 0, 4], vec![2, 0, 0, 6, 9, 9, 0, 0]]);
    }

    #[test]
    fn a_connection_from_another_loopback_address_comes_from_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let source = IpAddr::from([127, 0, 0, 2]);
        let conn = Connection::open_from(
            Transport::Tcp,
            listener.local_addr().unwrap(),
            Some(source),
            WAIT,
        )
        .unwrap();
        let (_peer, from) = listener.accept().unwrap();
        assert_eq!(from.ip(), source);
        assert_eq!(conn.local_addr().unwrap(), from);
    }

    #[test]
    fn an_unframeable_stream_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let conn = Connection::open(Transport::Tcp, listener.local_addr().unwrap(), WAIT).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(&[1, 0, 0, 2]).unwrap();
        let e = conn.read_messages(|_| true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("below the minimum"), "{e}");
    }

    /// On this machine either SCTP works (a closed port refuses the association) or the error
    /// names the missing kernel SCTP.
    #[test]
    fn connecting_reports_either_refusal_or_missing_sctp() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let e = io::Error::from(
            Connection::open(Transport::Sctp, address, WAIT).expect_err("nothing listens there"),
        );
        let text = e.to_string();
        match crate::sctp_support() {
            Ok(()) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{text}"),
            Err(_) => {
                assert!(text.starts_with("SCTP is not available"), "{text}");
                assert!(
                    text.contains("socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP)"),
                    "{text}"
                );
                assert!(text.contains("modprobe sctp"), "{text}");
            }
        }
    }

    /// A TLS echo server for one connection: what it decrypts it sends back sealed. The names
    /// of the client's certificate come back through the handle.
    fn tls_echo(
        server: crate::ServerTls,
    ) -> (
        SocketAddr,
        std::thread::JoinHandle<io::Result<Option<Vec<String>>>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept()?;
            let mut session = server
                .accept(crate::ClientCertificate::Required)
                .expect("a CA bundle");
            let (mut chunk, mut plain, mut out) = (vec![0; 4096], Vec::new(), Vec::new());
            loop {
                let n = socket.read(&mut chunk)?;
                let closed = match session.receive(&chunk[..n], &mut plain) {
                    Ok(closed) => n == 0 || closed,
                    Err(e) => {
                        // The alert that says why.
                        out.clear();
                        session.take_outgoing(&mut out);
                        socket.write_all(&out)?;
                        return Err(e);
                    }
                };
                if !plain.is_empty() {
                    session.seal(&plain)?;
                    plain.clear();
                }
                out.clear();
                session.take_outgoing(&mut out);
                socket.write_all(&out)?;
                if closed {
                    return Ok(session.peer_names());
                }
            }
        });
        (address, thread)
    }

    #[test]
    fn a_tls_connection_carries_framed_messages_and_is_refused_without_a_certificate() {
        let pki = crate::tls::tests::pki("connection");
        let server =
            crate::ServerTls::load(&pki.issue("registrar", &["127.0.0.1"], "registrar").unwrap())
                .unwrap();
        let client = ClientTls::load(&pki.issue("pe-1", &[], "pe-1").unwrap()).unwrap();
        let (address, echo) = tls_echo(server.clone());
        let conn = Connection::open_tls(Transport::Tcp, address, WAIT, &client, None).unwrap();
        conn.send(&[0x0b, 0, 0, 8, 1, 2, 3, 4]).unwrap();
        conn.send(&[0x0c, 0, 0, 4]).unwrap();
        let mut seen = Vec::new();
        conn.try_clone()
            .unwrap()
            .read_messages(|m| {
                seen.push(m.to_vec());
                seen.len() < 2
            })
            .unwrap();
        assert_eq!(seen, [vec![0x0b, 0, 0, 8, 1, 2, 3, 4], vec![0x0c, 0, 0, 4]]);
        conn.shutdown().unwrap();
        assert_eq!(echo.join().unwrap().unwrap(), Some(vec!["pe-1".to_owned()]));

        let anonymous = ClientTls::load(&crate::TlsFiles {
            ca: pki.issue("x", &[], "x").unwrap().ca,
            ..crate::TlsFiles::default()
        })
        .unwrap();
        let (address, echo) = tls_echo(server);
        let refused = Connection::open_tls(Transport::Tcp, address, WAIT, &anonymous, None)
            .and_then(|c| {
                c.send(&[0x0c, 0, 0, 4])
                    .map_err(|e| NetError::io("send", e))?;
                c.read_messages(|_| true)
                    .map_err(|e| NetError::io("read", e))
            });
        let e = refused.expect_err("no client certificate");
        assert!(e.to_string().contains("Certificate"), "{e}");
        assert!(
            echo.join().unwrap().is_err(),
            "the server refused the handshake"
        );
    }

    #[test]
    fn udp_is_refused() {
        let e = Connection::open(Transport::Udp, "127.0.0.1:1".parse().unwrap(), WAIT).unwrap_err();
        assert!(
            e.to_string()
                .contains("sctp://, tcp://, mptcp:// or sctp+udp://"),
            "{e}"
        );
    }

    /// An `sctp+udp` connection to a user-space SCTP server on loopback: the association comes
    /// up, a message goes out with PPID 11 and its answer comes back, clones and time-outs
    /// work, and a shutdown ends the reader.
    #[test]
    fn an_sctp_over_udp_connection_carries_messages_both_ways() {
        use crate::sctp_udp::{EndpointConfig, EndpointEvent, SctpUdpEndpoint};
        use rserpool_protocol::ASAP_PORT;
        use std::net::UdpSocket;

        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let address = socket.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut endpoint = SctpUdpEndpoint::new(EndpointConfig::server(ASAP_PORT, 4), [7; 32]);
            let start = std::time::Instant::now();
            let (mut buf, mut out) = (vec![0; 65_536], vec![0; 65_536]);
            let mut seen_ppid = None;
            let mut closed = false;
            while !closed && start.elapsed() < WAIT {
                let now = start.elapsed().as_millis() as u64;
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    endpoint.handle_datagram(from, &buf[..n], now);
                }
                endpoint.handle_timeouts(now);
                let mut answers = Vec::new();
                endpoint.poll_events(|handle, event| match event {
                    EndpointEvent::Message { ppid, bytes, .. } => {
                        seen_ppid = Some(ppid);
                        answers.push((handle, bytes.iter().rev().copied().collect::<Vec<_>>()));
                    }
                    EndpointEvent::Closed(_) => closed = true,
                    _ => {}
                });
                for (handle, answer) in answers {
                    endpoint.send(handle, 0, PPID_ASAP, &answer, now).unwrap();
                }
                while let Some((to, n)) = endpoint.poll_transmit(&mut out) {
                    socket.send_to(&out[..n], to).unwrap();
                }
            }
            seen_ppid
        });
        let conn = Connection::open(Transport::SctpUdp, address, WAIT).unwrap();
        assert_eq!(conn.transport(), Transport::SctpUdp);
        assert_eq!(conn.local_addr().unwrap().ip(), address.ip());
        let reader = conn.try_clone().unwrap();
        reader
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let e = reader.read_messages(|_| true).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        reader.set_read_timeout(None).unwrap();
        conn.set_write_timeout(Some(WAIT)).unwrap();
        conn.send(&[0x0b, 0, 0, 8, 1, 2, 3, 4]).unwrap();
        let mut seen = Vec::new();
        reader
            .read_messages(|m| {
                seen.push(m.to_vec());
                false
            })
            .unwrap();
        assert_eq!(seen, [vec![4, 3, 2, 1, 8, 0, 0, 0x0b]]);
        let ended = std::thread::spawn(move || reader.read_messages(|_| true));
        conn.shutdown().unwrap();
        ended.join().unwrap().unwrap();
        assert_eq!(server.join().unwrap(), Some(PPID_ASAP));
    }
}
