//! The one-to-one SCTP listener (`SOCK_STREAM`, RFC 6458 §4): a PE's session server accepts each
//! PU's association on a socket of its own, an [`SctpClient`] like the one the PU connected with,
//! on which data and the ASAP control channel (PPID 11) share the association (RFC 5352 §3.8).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use socket2::{SockAddr, Socket, Type};

use super::{SctpClient, sctp_socket, set_common_options};
use crate::error::{NetError, SocketUse};

/// A listening one-to-one SCTP socket.
#[derive(Debug)]
pub struct SctpListener {
    sock: Socket,
}

impl SctpListener {
    /// Listens on `address` (port 0: any free port) with room for `backlog` associations waiting
    /// to be accepted.
    ///
    /// The socket is non-blocking and close-on-exec, with `SCTP_NODELAY`, `SCTP_RECVRCVINFO`
    /// and 16 streams each way (accepted associations inherit them; [`Self::accept`] sets them
    /// again); a kernel without SCTP gives [`NetError::SctpUnavailable`].
    pub fn bind(address: SocketAddr, backlog: i32) -> Result<Self, NetError> {
        let sock = sctp_socket(address.is_ipv6(), Type::STREAM, SocketUse::Listen)?;
        let fail = |what: &str, e| NetError::io(format!("{what} sctp://{address}"), e);
        set_common_options(&sock).map_err(|(opt, e)| fail(&format!("set {opt} on"), e))?;
        sock.set_reuse_address(true)
            .map_err(|e| fail("set SO_REUSEADDR on", e))?;
        sock.bind(&SockAddr::from(address))
            .map_err(|e| fail("bind", e))?;
        sock.listen(backlog).map_err(|e| fail("listen on", e))?;
        Ok(Self { sock })
    }

    /// Accepts one association: a blocking, close-on-exec [`SctpClient`] with `SCTP_NODELAY`,
    /// `SCTP_RECVRCVINFO` and 16 streams each way, and the peer's primary address.
    /// `WouldBlock` when none is waiting.
    pub fn accept(&self) -> io::Result<(SctpClient, SocketAddr)> {
        // socket2 accepts with accept4(SOCK_CLOEXEC): the new socket is blocking
        let (sock, peer) = self.sock.accept()?;
        set_common_options(&sock).map_err(|(opt, e)| {
            io::Error::new(
                e.kind(),
                format!("set {opt} on an accepted association: {e}"),
            )
        })?;
        sock.set_nonblocking(false)?;
        let peer = peer.as_socket().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "an accepted SCTP association without an IP peer address",
            )
        })?;
        Ok((SctpClient::from_socket(sock), peer))
    }

    /// Where the listener listens.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()?.as_socket().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "an SCTP listener without an IP address",
            )
        })
    }

    /// The socket, for what socket2 offers.
    pub fn socket(&self) -> &Socket {
        &self.sock
    }
}

impl AsFd for SctpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for SctpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sctp::{sctp_nodelay, sctp_support};
    use std::time::Duration;

    /// Where the kernel has SCTP, an accepted association carries messages each way with their
    /// PPIDs and has SCTP_NODELAY; elsewhere the listener's error names the missing SCTP.
    #[test]
    fn a_listener_accepts_an_association_or_names_the_missing_sctp() {
        if sctp_support().is_err() {
            let e = SctpListener::bind("127.0.0.1:0".parse().unwrap(), 8).unwrap_err();
            assert!(matches!(e, NetError::SctpUnavailable { .. }), "{e}");
            assert!(e.to_string().contains("SOCK_STREAM"), "{e}");
            return;
        }
        let listener = SctpListener::bind("127.0.0.1:0".parse().unwrap(), 8).unwrap();
        assert!(listener.socket().nonblocking().unwrap());
        assert!(sctp_nodelay(&listener).unwrap());
        let e = listener.accept().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let address = listener.local_addr().unwrap();
        let client = SctpClient::connect(address, None, Duration::from_secs(10)).unwrap();
        let (server, peer) = loop {
            match listener.accept() {
                Ok(accepted) => break accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(
            peer,
            client.socket().local_addr().unwrap().as_socket().unwrap()
        );
        assert!(sctp_nodelay(&server).unwrap());
        assert!(!server.socket().nonblocking().unwrap());
        client.send(11, 0, b"control").unwrap();
        client.send(7, 1, b"data").unwrap();
        let mut buf = [0; 64];
        assert_eq!(server.recv(&mut buf).unwrap(), (7, 11));
        assert_eq!(&buf[..7], b"control");
        assert_eq!(server.recv(&mut buf).unwrap(), (4, 7));
        server.send(0x4354_4e31, 0, b"answer").unwrap();
        assert_eq!(client.recv(&mut buf).unwrap(), (6, 0x4354_4e31));
        // a message longer than the buffer comes in parts, the last one marked
        let long: Vec<u8> = (0..100).collect();
        client.send(9, 0, &long).unwrap();
        let first = server.recv_part(&mut buf).unwrap().unwrap();
        assert_eq!((first.len, first.ppid, first.complete), (64, 9, false));
        assert_eq!(&buf[..], &long[..64]);
        let rest = server.recv_part(&mut buf).unwrap().unwrap();
        assert_eq!((rest.len, rest.complete), (36, true));
        assert_eq!(&buf[..36], &long[64..]);
        drop(client);
        assert_eq!(server.recv_part(&mut buf).unwrap(), None);
    }
}
