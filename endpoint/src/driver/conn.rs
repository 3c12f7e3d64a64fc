//! One connection to a registrar as the driver uses it, over any of the three transports: a TCP
//! or MPTCP byte stream whose messages are framed by their length (RFC 5354 §4), or an SCTP
//! association that carries each message whole ([`super::sctp`]).

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use rserpool_protocol::MAX_MESSAGE_LEN;
use rserpool_protocol::framing::Frames;
use socket2::{Domain, Protocol, Socket, Type};

use super::{IPPROTO_MPTCP, sctp};
use crate::{Registrar, StreamTransport};

/// An open connection to a registrar.
#[derive(Debug)]
pub struct Connection {
    socket: Socket,
    transport: StreamTransport,
}

impl Connection {
    /// Connects to `registrar`, waiting at most `timeout`: TCP and MPTCP with Nagle off, SCTP as
    /// a one-to-one association.
    pub fn open(registrar: &Registrar, timeout: Duration) -> io::Result<Self> {
        let address = registrar.address;
        let socket = match registrar.transport {
            StreamTransport::Sctp => sctp::connect(address, timeout)?,
            StreamTransport::Tcp => stream(address, Protocol::TCP, timeout, |e| e)?,
            StreamTransport::Mptcp => {
                stream(address, Protocol::from(IPPROTO_MPTCP), timeout, |e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "cannot open an MPTCP socket (kernel without MPTCP, or \
                             net.mptcp.enabled=0): {e}"
                        ),
                    )
                })?
            }
        };
        Ok(Self {
            socket,
            transport: registrar.transport,
        })
    }

    /// The transport.
    pub fn transport(&self) -> StreamTransport {
        self.transport
    }

    /// The local address (for SCTP, the primary path's source address).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket address"))
    }

    /// Sends one encoded ASAP message: written whole to a stream, or as one SCTP message with
    /// PPID 11.
    pub fn send(&self, message: &[u8]) -> io::Result<()> {
        if self.transport == StreamTransport::Sctp {
            return sctp::send(&self.socket, message);
        }
        let mut rest = message;
        while !rest.is_empty() {
            match self.socket.send_with_flags(rest, libc::MSG_NOSIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Receives messages until the connection closes or breaks, handing each to `on_message`
    /// until it returns false. A stream whose next message cannot be framed is broken.
    pub fn read_messages(&self, on_message: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
        match self.transport {
            StreamTransport::Sctp => sctp::read_messages(&self.socket, on_message),
            StreamTransport::Tcp | StreamTransport::Mptcp => read_frames(&self.socket, on_message),
        }
    }

    /// A second handle on the same connection (for a reader thread).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            socket: self.socket.try_clone()?,
            transport: self.transport,
        })
    }

    /// Bounds how long a send may block.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket.set_write_timeout(timeout)
    }

    /// Shuts the connection down both ways (an SCTP association gracefully); a reader returns.
    pub fn shutdown(&self) -> io::Result<()> {
        self.socket.shutdown(Shutdown::Both)
    }
}

/// A TCP or MPTCP connection with `TCP_NODELAY` (requests leave at once); `explain` rewords a
/// failure to create the socket.
fn stream(
    address: SocketAddr,
    protocol: Protocol,
    timeout: Duration,
    explain: impl FnOnce(io::Error) -> io::Error,
) -> io::Result<Socket> {
    let socket =
        Socket::new(Domain::for_address(address), Type::STREAM, Some(protocol)).map_err(explain)?;
    socket.connect_timeout(&address.into(), timeout)?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket)
}

/// Frames a byte stream (RFC 5354 §4 lengths, padded to 4) into messages.
fn read_frames(socket: &Socket, mut on_message: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut reader = socket;
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
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
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn a_tcp_connection_sends_whole_messages_and_frames_what_it_reads() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let registrar = Registrar::tcp(listener.local_addr().unwrap());
        let conn = Connection::open(&registrar, Duration::from_secs(5)).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        assert_eq!(conn.transport(), StreamTransport::Tcp);
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
    fn an_unframeable_stream_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let registrar = Registrar::tcp(listener.local_addr().unwrap());
        let conn = Connection::open(&registrar, Duration::from_secs(5)).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(&[1, 0, 0, 2]).unwrap();
        let e = conn.read_messages(|_| true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("below the minimum"), "{e}");
    }
}
