//! Port ownership: a registrar shares each listener's port through `SO_REUSEPORT` among its own
//! workers only. Before it opens a listener it claims the port ([`PortClaim`]):
//!
//! - an abstract Unix socket named after the listener (transport class, address, port), which no
//!   other process can bind while this one lives and which the kernel releases when it exits,
//!   however it exits: a second registrar on the same listener is refused;
//! - a probe bind without `SO_REUSEPORT`, which fails while any other socket of any process holds
//!   the port (with or without `SO_REUSEPORT`, on this address or a wildcard one).
//!
//! Abstract Unix sockets are per network namespace, as ports are. Two registrars started at the
//! same instant on overlapping but different addresses (a wildcard and a specific one) can both
//! pass their probes before either binds; the same listener given twice cannot.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};

use rserpool_protocol::url::{Transport, TransportUrl};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{NetError, SocketUse};

/// What a listener's port is claimed against: stream transports share TCP's port space.
const fn class(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp | Transport::Mptcp => "tcp",
        // SCTP in UDP binds a UDP port.
        Transport::Udp | Transport::SctpUdp => "udp",
        Transport::Sctp => "sctp",
    }
}

/// A listener's port, held for this process until dropped.
#[derive(Debug)]
pub struct PortClaim {
    _name: UnixListener,
}

impl PortClaim {
    /// Claims `url`'s port: [`NetError::PortTaken`] when another registrar holds the same listener
    /// or any other socket holds the port. A port of 0 (the kernel's choice) needs no claim and
    /// is refused with [`NetError::InvalidRequest`].
    pub fn acquire(url: &TransportUrl) -> Result<Self, NetError> {
        if url.address.port() == 0 {
            return Err(NetError::InvalidRequest(format!(
                "{url}: a port of 0 is the kernel's choice and needs no claim"
            )));
        }
        let name = format!(
            "rserpool-registrar {}://{}",
            class(url.transport),
            url.address
        );
        let claimed = UnixAddr::from_abstract_name(name.as_bytes())
            .and_then(|addr| UnixListener::bind_addr(&addr));
        let listener = match claimed {
            Ok(listener) => listener,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(NetError::PortTaken {
                    url: *url,
                    by_registrar: true,
                });
            }
            Err(e) => return Err(NetError::io(format!("claim {url} ({name})"), e)),
        };
        probe(url)?;
        Ok(Self { _name: listener })
    }
}

/// Binds `url`'s address without `SO_REUSEPORT` and closes the socket again: fails with
/// [`NetError::PortTaken`] while any other socket holds the port.
fn probe(url: &TransportUrl) -> Result<(), NetError> {
    let addr = url.address;
    let domain = Domain::for_address(addr);
    let socket = match url.transport {
        Transport::Tcp | Transport::Mptcp => {
            Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))
        }
        Transport::Udp | Transport::SctpUdp => {
            Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))
        }
        Transport::Sctp => {
            match crate::sctp::sctp_socket(addr.is_ipv6(), Type::SEQPACKET, SocketUse::Listen) {
                Ok(socket) => Ok(socket),
                // Opening the listener reports the missing support (or skips it).
                Err(NetError::SctpUnavailable { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
    .map_err(|e| NetError::io(format!("create a socket to probe {url}"), e))?;
    let set = |what: &str, r: io::Result<()>| {
        r.map_err(|e| NetError::io(format!("set {what} on the probe of {url}"), e))
    };
    if url.transport.is_stream() {
        // Connections of a registrar that just exited may linger in TIME_WAIT; they hold no
        // listener.
        set("SO_REUSEADDR", socket.set_reuse_address(true))?;
    }
    if addr.is_ipv6() {
        set("IPV6_V6ONLY", socket.set_only_v6(true))?;
    }
    match socket.bind(&SockAddr::from(addr)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Err(NetError::PortTaken {
            url: *url,
            by_registrar: false,
        }),
        Err(e) => Err(NetError::io(format!("bind {url} (probe)"), e)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener, UdpSocket};

    use rserpool_protocol::Generation;

    use super::*;

    fn url(transport: Transport, address: SocketAddr) -> TransportUrl {
        TransportUrl {
            transport,
            address,
            generation: Generation::Rfc,
            tls: None,
        }
    }

    /// A loopback port nobody holds (the kernel's choice, released again).
    fn free_port() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
    }

    #[test]
    fn a_claimed_listener_cannot_be_claimed_twice_until_dropped() {
        let tcp = url(Transport::Tcp, free_port());
        let claim = PortClaim::acquire(&tcp).expect("a free port");
        let again = PortClaim::acquire(&tcp).expect_err("claimed already");
        assert!(matches!(
            again,
            NetError::PortTaken {
                by_registrar: true,
                ..
            }
        ));
        assert!(again.in_use(), "callers retry while it is in use");
        assert!(
            again.to_string().contains("another rserpool-registrar"),
            "{again}"
        );
        // MPTCP shares TCP's ports.
        let mptcp = url(Transport::Mptcp, tcp.address);
        assert!(PortClaim::acquire(&mptcp).is_err());
        drop(claim);
        PortClaim::acquire(&tcp).expect("released with the claim");
    }

    #[test]
    fn a_port_any_other_socket_holds_is_taken_even_with_so_reuseport() {
        let addr = free_port();
        let other = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        other.set_reuse_port(true).unwrap();
        other.bind(&SockAddr::from(addr)).unwrap();
        other.listen(8).unwrap();
        let err = PortClaim::acquire(&url(Transport::Tcp, addr)).expect_err("held");
        assert!(matches!(
            err,
            NetError::PortTaken {
                by_registrar: false,
                ..
            }
        ));
        assert!(err.to_string().contains("another process"), "{err}");
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let held = udp.local_addr().unwrap();
        assert!(PortClaim::acquire(&url(Transport::Udp, held)).is_err());
        drop(udp);
        PortClaim::acquire(&url(Transport::Udp, held)).expect("released");
    }

    #[test]
    fn a_wildcard_holder_takes_the_port_on_every_address() {
        let wildcard = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = wildcard.local_addr().unwrap().port();
        let loopback = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(PortClaim::acquire(&url(Transport::Udp, loopback)).is_err());
    }

    #[test]
    fn port_zero_needs_no_claim() {
        let any = url(Transport::Tcp, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert!(matches!(
            PortClaim::acquire(&any),
            Err(NetError::InvalidRequest(_))
        ));
    }
}
