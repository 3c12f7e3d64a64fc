//! The one-to-one SCTP client: a `SOCK_STREAM` association to one peer, as a PE or PU holds it
//! with its registrar and as the registrar's tests play PEs, PUs and ENRP peers. Each message
//! leaves whole with its PPID and stream and asks for an immediate SACK; each arrives whole with
//! its PPID.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use socket2::{SockAddr, Socket, Type};

use super::sndinfo_cmsg;
use super::{RECV_CONTROL_LEN, missing_rcvinfo, parse_rcvinfo, sctp_socket, set_common_options};
use crate::error::{NetError, SocketUse};
use crate::sys;

/// `SCTP_SACK_IMMEDIATELY` (RFC 7053's I bit) as the `snd_flags` field holds it.
const SACK_IMMEDIATELY: u16 = libc::SCTP_SACK_IMMEDIATELY as u16;

/// A one-to-one SCTP association.
#[derive(Debug)]
pub struct SctpClient {
    sock: Socket,
}

/// What one [`SctpClient::recv_part`] received: a message, or a part of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SctpPart {
    /// How many bytes of the buffer it filled.
    pub len: usize,
    /// The message's payload protocol identifier.
    pub ppid: u32,
    /// Whether this is the message's end (`MSG_EOR`); if not, the rest comes with the next
    /// receives (on a one-to-one association, before any other message).
    pub complete: bool,
}

impl SctpClient {
    /// An association accepted by [`super::SctpListener`], its options set.
    pub(super) fn from_socket(sock: Socket) -> Self {
        Self { sock }
    }

    /// Opens a one-to-one association to `address`, waiting at most `timeout` for it to come up.
    /// Bound to `source` if given, the association has that one local address (on loopback,
    /// 127.0.0.2 is another host as far as the peer can tell), where an unbound client lists all
    /// of its own.
    ///
    /// The socket is blocking and close-on-exec, with `SCTP_NODELAY`, `SCTP_RECVRCVINFO` and 16
    /// streams each way; a kernel without SCTP gives [`NetError::SctpUnavailable`].
    pub fn connect(
        address: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Self, NetError> {
        let sock = sctp_socket(address.is_ipv6(), Type::STREAM, SocketUse::Connect)?;
        let fail = |what: &str, e| NetError::io(format!("{what} to sctp://{address}"), e);
        set_common_options(&sock)
            .map_err(|(opt, e)| fail(&format!("set {opt} for a client"), e))?;
        if let Some(ip) = source {
            sock.bind(&SockAddr::from(SocketAddr::new(ip, 0)))
                .map_err(|e| fail(&format!("bind {ip} for an association"), e))?;
        }
        // leaves the socket blocking
        sock.connect_timeout(&SockAddr::from(address), timeout)
            .map_err(|e| fail("connect", e))?;
        Ok(Self { sock })
    }

    /// Sends `msg` as one message with PPID `ppid` on stream `stream`, asking the peer to
    /// acknowledge it at once (`SCTP_SACK_IMMEDIATELY`), so that a request/response exchange
    /// waits for no delayed SACK. `WouldBlock` when a non-blocking socket's send buffer is full.
    pub fn send(&self, ppid: u32, stream: u16, msg: &[u8]) -> io::Result<usize> {
        let control = sndinfo_cmsg(stream, SACK_IMMEDIATELY, ppid, 0);
        loop {
            match sys::send_msg(self.sock.as_fd(), None, msg, &control, libc::MSG_NOSIGNAL) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                sent => return sent,
            }
        }
    }

    /// Receives one message into `buf`: its length and PPID, or `(0, 0)` when the peer has shut
    /// the association down. Notifications are skipped; a message longer than `buf` comes in
    /// parts. `WouldBlock` when a non-blocking socket has nothing waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, u32)> {
        Ok(self.recv_part(buf)?.map_or((0, 0), |p| (p.len, p.ppid)))
    }

    /// Receives one message, or the next part of one longer than `buf`, saying which; `None`
    /// when the peer has shut the association down. Notifications are skipped. `WouldBlock`
    /// when a non-blocking socket has nothing waiting.
    pub fn recv_part(&self, buf: &mut [u8]) -> io::Result<Option<SctpPart>> {
        loop {
            let mut control = [0; RECV_CONTROL_LEN];
            let r = match sys::recv_msg(self.sock.as_fd(), buf, &mut control, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            };
            if r.flags & libc::MSG_NOTIFICATION != 0 {
                continue;
            }
            if r.len == 0 && r.control_len == 0 {
                return Ok(None);
            }
            let info = parse_rcvinfo(&control[..r.control_len]).ok_or_else(missing_rcvinfo)?;
            return Ok(Some(SctpPart {
                len: r.len,
                ppid: info.ppid,
                complete: r.flags & libc::MSG_EOR != 0,
            }));
        }
    }

    /// A second handle on the same association (for a reader thread).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            sock: self.sock.try_clone()?,
        })
    }

    /// The socket, for what socket2 offers (addresses, time-outs, blocking, shutdown).
    pub fn socket(&self) -> &Socket {
        &self.sock
    }
}

impl AsFd for SctpClient {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for SctpClient {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sctp::{SctpRecv, SctpSocket, sctp_nodelay, sctp_support};
    use rserpool_protocol::PPID_ASAP;

    /// Where the kernel has SCTP, a client and the registrar's listener exchange a message each
    /// way with its PPID; elsewhere the client's error names the missing SCTP and the way round.
    #[test]
    fn a_client_talks_to_the_listener_or_names_the_missing_sctp() {
        let wait = Duration::from_secs(10);
        if sctp_support().is_err() {
            let e = SctpClient::connect("127.0.0.1:9".parse().unwrap(), None, wait).unwrap_err();
            assert!(matches!(e, NetError::SctpUnavailable { .. }), "{e}");
            assert!(e.to_string().contains("tcp:// or mptcp://"), "{e}");
            return;
        }
        let server = SctpSocket::listen(&["127.0.0.1:0".parse().unwrap()], false, 4, 0).unwrap();
        let address = server.socket().local_addr().unwrap().as_socket().unwrap();
        let client = SctpClient::connect(address, None, wait).unwrap();
        assert!(sctp_nodelay(&client).unwrap());
        assert!(!client.socket().nonblocking().unwrap());
        assert_eq!(client.send(PPID_ASAP, 2, b"request").unwrap(), 7);
        let mut buf = [0; 64];
        let assoc = loop {
            match server.recv(&mut buf) {
                Ok(SctpRecv::Data {
                    assoc,
                    ppid,
                    stream,
                    len,
                    ..
                }) => {
                    assert_eq!((ppid, stream, &buf[..len]), (PPID_ASAP, 2, &b"request"[..]));
                    break assoc;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        };
        server.send(assoc, PPID_ASAP, 0, b"answer").unwrap();
        let (len, ppid) = client.recv(&mut buf).unwrap();
        assert_eq!((&buf[..len], ppid), (&b"answer"[..], PPID_ASAP));
    }
}
