//! Addresses and sockets: `tcp://` and `mptcp://` URLs (with an optional `?generation=rfc|ng`),
//! connecting and listening over TCP or MPTCP through socket2.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::str::FromStr;

use clap::ValueEnum;
use rserpool_protocol::Generation;
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
        match self {
            Self::Tcp => "tcp",
            Self::Mptcp => "mptcp",
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

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.transport.scheme(), self.addr)?;
        if self.generation == Generation::Ng {
            f.write_str("?generation=ng")?;
        }
        Ok(())
    }
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("bad URL `{s}`: {why} (expected tcp://HOST:PORT or mptcp://HOST:PORT)")
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let transport = match scheme {
            "tcp" => Transport::Tcp,
            "mptcp" => Transport::Mptcp,
            _ => return Err(bad("the scheme must be tcp or mptcp")),
        };
        let (host, generation) = match rest.split_once('?') {
            None => (rest, Generation::Rfc),
            Some((host, "generation=rfc")) => (host, Generation::Rfc),
            Some((host, "generation=ng")) => (host, Generation::Ng),
            Some(_) => return Err(bad("the only query is generation=rfc or generation=ng")),
        };
        let addr = host
            .to_socket_addrs()
            .map_err(|e| bad(&e.to_string()))?
            .next()
            .ok_or_else(|| bad("the host has no address"))?;
        Ok(Self {
            transport,
            addr,
            generation,
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
            ("127.0.0.1:3863", "no scheme"),
            ("sctp://127.0.0.1:3863", "tcp or mptcp"),
            ("tcp://127.0.0.1:3863?generation=v3", "generation="),
            ("tcp://127.0.0.1", "invalid socket address"),
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
