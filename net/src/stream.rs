//! TCP and MPTCP sockets: the registrar's listeners and the options of the connections they
//! accept, its outgoing ENRP connections, and the blocking connections of PEs, PUs and the load
//! generator.

use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{NetError, SocketUse};
use rserpool_protocol::url::{Transport, TransportUrl};

/// Opens a non-blocking, close-on-exec listener for a `tcp://` or `mptcp://` URL.
///
/// Sets `SO_REUSEADDR`, `SO_REUSEPORT` when `reuse_port` (one listener per worker, the kernel
/// spreads connections over them), `TCP_NODELAY` (which accepted sockets inherit), `IPV6_V6ONLY`
/// for IPv6 addresses, and `SO_RCVBUF`/`SO_SNDBUF` to `buffer_bytes` unless it is 0 (the kernel
/// caps them at `net.core.rmem_max`/`wmem_max`). MPTCP uses `IPPROTO_MPTCP` (262); a kernel that
/// refuses it gives [`NetError::MptcpUnavailable`].
pub fn listen_stream(
    url: &TransportUrl,
    reuse_port: bool,
    backlog: u32,
    buffer_bytes: usize,
) -> Result<Socket, NetError> {
    let addr = url.address;
    let sock = stream_socket(url, SocketUse::Listen, Type::STREAM.nonblocking())?;
    let set = |what: &str, r: std::io::Result<()>| {
        r.map_err(|e| NetError::io(format!("set {what} on the listener for {url}"), e))
    };
    set("SO_REUSEADDR", sock.set_reuse_address(true))?;
    if reuse_port {
        set("SO_REUSEPORT", sock.set_reuse_port(true))?;
    }
    if addr.is_ipv6() {
        set("IPV6_V6ONLY", sock.set_only_v6(true))?;
    }
    set("TCP_NODELAY", sock.set_tcp_nodelay(true))?;
    if buffer_bytes > 0 {
        set("SO_RCVBUF", sock.set_recv_buffer_size(buffer_bytes))?;
        set("SO_SNDBUF", sock.set_send_buffer_size(buffer_bytes))?;
    }
    sock.bind(&SockAddr::from(addr))
        .map_err(|e| NetError::io(format!("bind {url}"), e))?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    sock.listen(backlog)
        .map_err(|e| NetError::io(format!("listen on {url}"), e))?;
    Ok(sock)
}

/// A close-on-exec TCP or MPTCP socket of type `ty` (blocking or not) for `url`, which must be a
/// `tcp://` or `mptcp://` URL; an error names what the socket is for and, for MPTCP, the
/// missing kernel support.
fn stream_socket(url: &TransportUrl, used_for: SocketUse, ty: Type) -> Result<Socket, NetError> {
    let addr = url.address;
    let protocol = match url.transport {
        Transport::Tcp => Protocol::TCP,
        Transport::Mptcp => Protocol::MPTCP,
        Transport::Sctp | Transport::Udp | Transport::SctpUdp => {
            return Err(NetError::InvalidRequest(match used_for {
                SocketUse::Listen => format!(
                    "{url} is not a stream listener: listen_stream opens tcp:// and mptcp:// \
                     listeners; open sctp:// with SctpSocket::listen and udp:// with bind_udp"
                ),
                SocketUse::Connect => format!(
                    "{url} is not a stream URL: connect_stream and connect_stream_blocking \
                     connect to tcp:// and mptcp:// peers; connect to sctp:// with \
                     SctpClient::connect"
                ),
            }));
        }
    };
    Socket::new(Domain::for_address(addr), ty.cloexec(), Some(protocol)).map_err(|e| {
        match (url.transport, e.raw_os_error()) {
            (Transport::Mptcp, Some(libc::EPROTONOSUPPORT | libc::ENOPROTOOPT)) => {
                let call = if addr.is_ipv6() {
                    "socket(AF_INET6, SOCK_STREAM, IPPROTO_MPTCP)"
                } else {
                    "socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)"
                };
                NetError::mptcp_unavailable(call, used_for, e)
            }
            _ => {
                let purpose = match used_for {
                    SocketUse::Listen => "for",
                    SocketUse::Connect => "to connect to",
                };
                NetError::io(format!("create a socket {purpose} {url}"), e)
            }
        }
    })
}

/// A stream socket to connect to `url`, of type `ty`, with `TCP_NODELAY` (requests leave at
/// once, as from accepted connections).
fn client_socket(url: &TransportUrl, ty: Type) -> Result<Socket, NetError> {
    let sock = stream_socket(url, SocketUse::Connect, ty)?;
    sock.set_tcp_nodelay(true)
        .map_err(|e| NetError::io(format!("set TCP_NODELAY on the connection to {url}"), e))?;
    Ok(sock)
}

/// Starts a non-blocking, close-on-exec connection to a `tcp://` or `mptcp://` URL (an outgoing
/// ENRP association) with `TCP_NODELAY`, as accepted connections have. The connection completes
/// in the background: wait until the socket is writable, then ask [`connect_outcome`].
pub fn connect_stream(url: &TransportUrl) -> Result<Socket, NetError> {
    let sock = client_socket(url, Type::STREAM.nonblocking())?;
    match sock.connect(&SockAddr::from(url.address)) {
        Ok(()) => Ok(sock),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(sock),
        Err(e) => Err(NetError::io(format!("connect to {url}"), e)),
    }
}

/// Connects a blocking, close-on-exec socket to a `tcp://` or `mptcp://` URL with
/// `TCP_NODELAY`, as a PE, a PU or the load generator does: waiting at most `timeout`, or as long
/// as the kernel keeps trying (about two minutes) when it is `None`.
pub fn connect_stream_blocking(
    url: &TransportUrl,
    timeout: Option<Duration>,
) -> Result<Socket, NetError> {
    connect_stream_blocking_from(url, None, timeout)
}

/// [`connect_stream_blocking`] from the local address `source` if given (on loopback, 127.0.0.2
/// is another host as far as the registrar can tell), else from the address the kernel picks.
pub fn connect_stream_blocking_from(
    url: &TransportUrl,
    source: Option<std::net::IpAddr>,
    timeout: Option<Duration>,
) -> Result<Socket, NetError> {
    let sock = client_socket(url, Type::STREAM)?;
    if let Some(ip) = source {
        sock.bind(&SockAddr::from(std::net::SocketAddr::new(ip, 0)))
            .map_err(|e| NetError::io(format!("bind {ip} for a connection to {url}"), e))?;
    }
    let address = SockAddr::from(url.address);
    match timeout {
        Some(timeout) => sock.connect_timeout(&address, timeout),
        None => sock.connect(&address),
    }
    .map_err(|e| NetError::io(format!("connect to {url}"), e))?;
    Ok(sock)
}

/// The outcome of a [`connect_stream`] once its socket became writable: the peer's address, or
/// why the connection failed.
pub fn connect_outcome(sock: &Socket) -> std::io::Result<std::net::SocketAddr> {
    if let Some(e) = sock.take_error()? {
        return Err(e);
    }
    sock.peer_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("the peer has no IP address"))
}

/// Sets up a connection accepted from a [`listen_stream`] listener: non-blocking (accepted sockets
/// do not inherit it) and `TCP_NODELAY` (inherited on Linux; set again so the guarantee does not
/// rest on that).
pub fn configure_accepted(sock: &Socket) -> std::io::Result<()> {
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)
}

/// `TCP_IS_MPTCP` (Linux 5.16): 1 on an MPTCP socket, 0 on one that fell back to plain TCP.
const TCP_IS_MPTCP: i32 = 43;

/// The transport a connection accepted on a listener of `listening` really runs: an MPTCP
/// listener also takes plain TCP clients (the connection falls back to TCP), which this tells
/// apart where the kernel says (`TCP_IS_MPTCP`); on older kernels, `listening` as it is.
pub fn negotiated_transport(socket: &Socket, listening: Transport) -> Transport {
    use std::os::fd::AsFd;
    if listening != Transport::Mptcp {
        return listening;
    }
    let mut value = [0u8; 4];
    match crate::sys::get_option(socket.as_fd(), libc::SOL_TCP, TCP_IS_MPTCP, &mut value) {
        Ok(4) if i32::from_ne_bytes(value) == 0 => Transport::Tcp,
        _ => Transport::Mptcp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    fn url(s: &str) -> TransportUrl {
        s.parse().unwrap()
    }

    /// The first connection any of `listeners` accepts, waiting up to 10 s.
    fn accept_any(listeners: &[&Socket]) -> Socket {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for l in listeners {
                match l.accept() {
                    Ok((s, _)) => return s,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("accept: {e}"),
                }
            }
            assert!(Instant::now() < deadline, "no connection arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn round_trip(transport: &str) {
        let a = listen_stream(&url(&format!("{transport}://127.0.0.1:0")), true, 16, 0).unwrap();
        let port = a.local_addr().unwrap().as_socket().unwrap().port();
        // a second listener on the same port: one listener per worker
        let b = listen_stream(
            &url(&format!("{transport}://127.0.0.1:{port}")),
            true,
            16,
            1 << 16,
        )
        .unwrap();
        for l in [&a, &b] {
            assert!(l.nonblocking().unwrap());
            assert!(l.reuse_port().unwrap());
            assert!(l.tcp_nodelay().unwrap());
        }
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        client.write_all(b"ping").unwrap();
        let s = accept_any(&[&a, &b]);
        assert!(s.tcp_nodelay().unwrap(), "TCP_NODELAY is inherited");
        configure_accepted(&s).unwrap();
        assert!(s.nonblocking().unwrap());
        s.set_nonblocking(false).unwrap();
        let mut s = TcpStream::from(s);
        let mut buf = [0; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn tcp_listeners_share_a_port_and_accepted_sockets_have_nodelay() {
        round_trip("tcp");
    }

    #[test]
    fn mptcp_listeners_share_a_port_or_say_why_not() {
        match listen_stream(&url("mptcp://127.0.0.1:0"), false, 1, 0) {
            Ok(_) => round_trip("mptcp"),
            // only acceptable where the kernel really refuses MPTCP, and then the message says so
            Err(e @ NetError::MptcpUnavailable { .. }) => {
                assert!(e.to_string().contains("tcp:// listener instead"), "{e}");
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn ipv6_listener_is_v6_only() {
        let l = listen_stream(&url("tcp://[::1]:0"), false, 1, 0).unwrap();
        assert!(l.only_v6().unwrap());
        let port = l.local_addr().unwrap().as_socket().unwrap().port();
        let _c = TcpStream::connect(("::1", port)).unwrap();
        accept_any(&[&l]);
    }

    #[test]
    fn busy_port_without_reuse_port_names_the_remedy() {
        let a = listen_stream(&url("tcp://127.0.0.1:0"), false, 1, 0).unwrap();
        let port = a.local_addr().unwrap().as_socket().unwrap().port();
        let e = listen_stream(&url(&format!("tcp://127.0.0.1:{port}")), false, 1, 0).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("bind tcp://127.0.0.1:{port}")),
            "{text}"
        );
        assert!(text.contains("choose another port"), "{text}");
    }

    #[test]
    fn refuses_datagram_urls() {
        let e = listen_stream(&url("udp://127.0.0.1:0"), false, 1, 0).unwrap_err();
        assert!(e.to_string().contains("bind_udp"), "{e}");
        let e = listen_stream(&url("sctp://127.0.0.1:0"), false, 1, 0).unwrap_err();
        assert!(e.to_string().contains("SctpSocket::listen"), "{e}");
        let e = connect_stream(&url("sctp://127.0.0.1:1")).unwrap_err();
        assert!(e.to_string().contains("SctpClient::connect"), "{e}");
        let e = connect_stream_blocking(&url("udp://127.0.0.1:1"), None).unwrap_err();
        assert!(e.to_string().contains("is not a stream URL"), "{e}");
    }

    #[test]
    fn blocking_connections_have_nodelay_and_name_a_refusal() {
        let l = listen_stream(&url("tcp://127.0.0.1:0"), false, 1, 0).unwrap();
        let port = l.local_addr().unwrap().as_socket().unwrap().port();
        let target = url(&format!("tcp://127.0.0.1:{port}"));
        let c = connect_stream_blocking(&target, Some(Duration::from_secs(5))).unwrap();
        assert!(!c.nonblocking().unwrap());
        assert!(c.tcp_nodelay().unwrap());
        accept_any(&[&l]);
        drop(l);
        let e = connect_stream_blocking(&target, None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("cannot connect to tcp://127.0.0.1:{port}: ")),
            "{e}"
        );
        assert_eq!(std::io::Error::from(e).kind(), ErrorKind::ConnectionRefused);
    }
}
