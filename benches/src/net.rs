//! Addresses and sockets: `tcp://`, `mptcp://`, `sctp://` and `sctp+udp://` URLs (with an
//! optional `?generation=rfc|ng`, parsed by the transport URL parser of `rserpool_protocol::url`),
//! connecting over TCP or MPTCP through `rserpool-net`, and the open-files limit that many
//! connections need.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::str::FromStr;

use clap::ValueEnum;
use rserpool_net::NetError;
use rserpool_protocol::Generation;
use rserpool_protocol::url::{Transport as UrlTransport, TransportUrl};

/// The transport ASAP travels on: a byte stream for every scenario, or SCTP for those that
/// [speak it](crate::cli::ScenarioKind::speaks_sctp).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum StreamTransport {
    /// Plain TCP.
    #[default]
    Tcp,
    /// Multipath TCP (IPPROTO_MPTCP), framed like TCP.
    Mptcp,
    /// SCTP one-to-one associations, each message whole (`hostile`, and `resolve`, `register`,
    /// `churn`, `keepalive` and `echo` through [`crate::tls::SecureStream`]).
    Sctp,
    /// SCTP over UDP (RFC 6951) in user space, each message whole: one UDP socket and one
    /// endpoint per client thread holding its associations ([`crate::sctp_udp`]); `resolve`,
    /// `register`, `churn`, `keepalive` and `echo`. The address is the UDP port.
    SctpUdp,
}

impl StreamTransport {
    /// The URL scheme.
    pub const fn scheme(self) -> &'static str {
        self.url_transport().scheme()
    }

    /// The same transport as transport URLs name it.
    pub const fn url_transport(self) -> UrlTransport {
        match self {
            Self::Tcp => UrlTransport::Tcp,
            Self::Mptcp => UrlTransport::Mptcp,
            Self::Sctp => UrlTransport::Sctp,
            Self::SctpUdp => UrlTransport::SctpUdp,
        }
    }

    /// Whether it is a byte stream (TCP or MPTCP), which every scenario takes.
    pub const fn is_stream(self) -> bool {
        matches!(self, Self::Tcp | Self::Mptcp)
    }
}

/// Where an ASAP server listens: transport, address and wire generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// TCP, MPTCP, SCTP, or SCTP over UDP.
    pub transport: StreamTransport,
    /// The server's address.
    pub addr: SocketAddr,
    /// The wire generation spoken there (RFC unless `?generation=ng`).
    pub generation: Generation,
    /// TLS over the stream (`tcp+tls://`, `mptcp+tls://`).
    pub tls: bool,
}

impl Endpoint {
    /// An RFC-generation endpoint without TLS.
    pub const fn new(transport: StreamTransport, addr: SocketAddr) -> Self {
        Self {
            transport,
            addr,
            generation: Generation::Rfc,
            tls: false,
        }
    }
}

impl Endpoint {
    /// The endpoint as a transport URL.
    pub const fn url(&self) -> TransportUrl {
        let url = TransportUrl::new(self.transport.url_transport(), self.addr)
            .with_generation(self.generation);
        if self.tls { url.with_tls() } else { url }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.url().fmt(f)
    }
}

impl FromStr for Endpoint {
    type Err = String;

    /// Parses a `tcp://`, `mptcp://`, `sctp://` or `sctp+udp://` URL with the transport URL
    /// parser (the command line refuses SCTP for the scenarios that do not speak it).
    fn from_str(s: &str) -> Result<Self, String> {
        let url = TransportUrl::parse(s, UrlTransport::CONNECTIONS).map_err(|e| e.to_string())?;
        let transport = match url.transport {
            UrlTransport::Tcp => StreamTransport::Tcp,
            UrlTransport::Mptcp => StreamTransport::Mptcp,
            UrlTransport::Sctp => StreamTransport::Sctp,
            UrlTransport::SctpUdp => StreamTransport::SctpUdp,
            // refused by the parser already: not among the schemes it was given
            other => {
                return Err(format!(
                    "bad URL `{s}`: {} carries no connection",
                    other.scheme()
                ));
            }
        };
        Ok(Self {
            transport,
            addr: url.address,
            generation: url.generation,
            tls: url.tls.is_some(),
        })
    }
}

/// Connects the socket to `endpoint` with Nagle off (requests leave in one write each),
/// blocking ([`rserpool_net::connect_stream_blocking`]); a failed call gives the kernel's answer
/// alone, as callers name the endpoint. TLS is [`crate::tls::connect`]'s.
pub fn connect(endpoint: &Endpoint) -> io::Result<TcpStream> {
    let url = TransportUrl {
        tls: None,
        ..endpoint.url()
    };
    rserpool_net::connect_stream_blocking(&url, None)
        .map(TcpStream::from)
        .map_err(NetError::into_kernel_error)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_scheme_and_generation() {
        let e: Endpoint = "mptcp://127.0.0.1:3863?generation=ng".parse().unwrap();
        assert_eq!(e.transport, StreamTransport::Mptcp);
        assert_eq!(e.addr, "127.0.0.1:3863".parse().unwrap());
        assert_eq!(e.generation, Generation::Ng);
        assert_eq!(e.to_string(), "mptcp://127.0.0.1:3863?generation=ng");
        let u: Endpoint = "sctp+udp://127.0.0.1:9899".parse().unwrap();
        assert_eq!(u.transport, StreamTransport::SctpUdp);
        assert_eq!(u.to_string(), "sctp+udp://127.0.0.1:9899");
        let t: Endpoint = "tcp://127.0.0.1:1".parse().unwrap();
        assert_eq!(
            (t.transport, t.generation),
            (StreamTransport::Tcp, Generation::Rfc)
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for (url, why) in [
            ("127.0.0.1:3863", "missing `scheme://`"),
            (
                "udp://127.0.0.1:3863",
                "the scheme sctp, tcp, mptcp or sctp+udp",
            ),
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
}
