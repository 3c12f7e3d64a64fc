//! Addresses and sockets: `tcp://` and `mptcp://` URLs (with an optional `?generation=rfc|ng`,
//! parsed by the transport URL parser of `rserpool_protocol::url`), connecting and listening over
//! TCP or MPTCP through socket2.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::str::FromStr;

use clap::ValueEnum;
use rserpool_protocol::Generation;
use rserpool_protocol::url::{Transport as UrlTransport, TransportUrl};
use socket2::{Domain, Protocol, Socket, Type};

/// The stream transport ASAP travels on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// Plain TCP.
    #[default]
    Tcp,
    /// Multipath TCP (IPPROTO_MPTCP), framed like TCP.
    Mptcp,
}

impl Transport {
    /// The URL scheme.
    pub const fn scheme(self) -> &'static str {
        self.url_transport().scheme()
    }

    /// The same transport as transport URLs name it.
    pub const fn url_transport(self) -> UrlTransport {
        match self {
            Self::Tcp => UrlTransport::Tcp,
            Self::Mptcp => UrlTransport::Mptcp,
        }
    }

    fn protocol(self) -> Protocol {
        match self {
            Self::Tcp => Protocol::TCP,
            Self::Mptcp => Protocol::MPTCP,
        }
    }

    fn socket(self, addr: SocketAddr) -> io::Result<Socket> {
        Socket::new(
            Domain::for_address(addr),
            Type::STREAM,
            Some(self.protocol()),
        )
    }
}

/// Where an ASAP server listens: transport, address and wire generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// TCP or MPTCP.
    pub transport: Transport,
    /// The server's address.
    pub addr: SocketAddr,
    /// The wire generation spoken there (RFC unless `?generation=ng`).
    pub generation: Generation,
}

impl Endpoint {
    /// An RFC-generation endpoint.
    pub const fn new(transport: Transport, addr: SocketAddr) -> Self {
        Self {
            transport,
            addr,
            generation: Generation::Rfc,
        }
    }
}

impl Endpoint {
    /// The endpoint as a transport URL.
    pub const fn url(&self) -> TransportUrl {
        let mut url = TransportUrl::new(self.transport.url_transport(), self.addr);
        url.generation = self.generation;
        url
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.url().fmt(f)
    }
}

impl FromStr for Endpoint {
    type Err = String;

    /// Parses a `tcp://` or `mptcp://` URL with the transport URL parser.
    fn from_str(s: &str) -> Result<Self, String> {
        let url = TransportUrl::parse(s, UrlTransport::STREAMS).map_err(|e| e.to_string())?;
        let transport = match url.transport {
            UrlTransport::Tcp => Transport::Tcp,
            UrlTransport::Mptcp => Transport::Mptcp,
            // refused by the parser already: not among the schemes it was given
            other => return Err(format!("bad URL `{s}`: {} is not a stream", other.scheme())),
        };
        Ok(Self {
            transport,
            addr: url.address,
            generation: url.generation,
        })
    }
}

/// Connects to `endpoint` with Nagle off (requests leave in one write each).
pub fn connect(endpoint: &Endpoint) -> io::Result<TcpStream> {
    let socket = endpoint.transport.socket(endpoint.addr)?;
    socket.set_tcp_nodelay(true)?;
    socket.connect(&endpoint.addr.into())?;
    Ok(socket.into())
}

/// Listens on `addr` (port 0 = any) over `transport`.
pub fn listen(transport: Transport, addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = transport.socket(addr)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Raises this process's soft limit on open files, if it is lower, to hold `connections` client
/// sockets, as many server sockets (the echo server of `--compare-echo` runs in this process) and
/// some to spare, within the hard limit.
pub fn raise_open_files(connections: usize) -> crate::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let need = 2 * connections as u64 + 64;
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|current| current >= need) {
        return Ok(());
    }
    if limit.maximum.is_some_and(|maximum| maximum < need) {
        return Err(crate::Error::new(format!(
            "{connections} associations need about {need} open files, but the hard limit is {}: \
             raise it (ulimit -Hn as root, or LimitNOFILE in a systemd unit) or use fewer \
             --connections",
            limit.maximum.unwrap_or_default()
        )));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(need),
            maximum: limit.maximum,
        },
    )
    .map_err(|e| crate::Error::new(format!("cannot raise the open-files limit to {need}: {e}")))
}

/// The local address this host would use to reach `peer` (a PE's user-transport address must be
/// one of its association's addresses). Connecting a UDP socket sends nothing.
pub fn local_ip_towards(peer: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = UdpSocket::bind(any)?;
    probe.connect(peer)?;
    Ok(probe.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_scheme_and_generation() {
        let e: Endpoint = "mptcp://127.0.0.1:3863?generation=ng".parse().unwrap();
        assert_eq!(e.transport, Transport::Mptcp);
        assert_eq!(e.addr, "127.0.0.1:3863".parse().unwrap());
        assert_eq!(e.generation, Generation::Ng);
        assert_eq!(e.to_string(), "mptcp://127.0.0.1:3863?generation=ng");
        let t: Endpoint = "tcp://127.0.0.1:1".parse().unwrap();
        assert_eq!(
            (t.transport, t.generation),
            (Transport::Tcp, Generation::Rfc)
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for (url, why) in [
            ("127.0.0.1:3863", "missing `scheme://`"),
            ("sctp://127.0.0.1:3863", "the scheme tcp or mptcp"),
            (
                "tcp://127.0.0.1:3863?generation=v3",
                "?generation=rfc or ?generation=ng",
            ),
            ("tcp://127.0.0.1", "missing `:port`"),
        ] {
            let e = url.parse::<Endpoint>().unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn the_loopback_is_reached_from_the_loopback() {
        let ip = local_ip_towards("127.0.0.1:9".parse().unwrap()).unwrap();
        assert!(ip.is_loopback(), "{ip}");
    }
}
