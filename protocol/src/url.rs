//! Transport URLs: how the registrar's configuration and command line, the endpoint's
//! configuration and command line and the load generator name a transport address. A URL is a
//! scheme (`sctp://`, `tcp://`, `mptcp://` or `udp://`, any case), then `host:port` (an IPv4
//! address, a bracketed IPv6 address or a host name to resolve), an optional `/`, then optional
//! `?generation=rfc` or `?generation=ng` (RFC when absent). One parser serves every tool; each
//! tool says which schemes it takes ([`TransportUrl::parse`] with [`Transport::ALL`],
//! [`Transport::CONNECTIONS`] or [`Transport::STREAMS`]).
//!
//! Values and parsing only, no sockets: the registrar's sans-I/O core holds these values, and
//! `rserpool-net` opens the sockets they name. A host name is resolved with std's
//! `ToSocketAddrs` while parsing.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use crate::Generation;

/// The transport protocol of a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// SCTP (RFC 4960; PPID 11 for ASAP, 12 for ENRP): the registrar listens one-to-many, clients
    /// associate one-to-one.
    Sctp,
    /// TCP: messages back to back on the byte stream, framed by their length (RFC 5354 §4).
    Tcp,
    /// Multipath TCP (RFC 8684, `IPPROTO_MPTCP`), framed like TCP; plain TCP clients fall back
    /// to it.
    Mptcp,
    /// UDP: announces, presence, and stateless handle resolution.
    Udp,
}

impl Transport {
    /// Every transport: what the registrar's URLs take.
    pub const ALL: &'static [Self] = &[Self::Sctp, Self::Tcp, Self::Mptcp, Self::Udp];
    /// The transports that carry a connection to a registrar: what an endpoint's registrar URLs
    /// take.
    pub const CONNECTIONS: &'static [Self] = &[Self::Sctp, Self::Tcp, Self::Mptcp];
    /// The byte-stream transports: what the load generator's URLs take.
    pub const STREAMS: &'static [Self] = &[Self::Tcp, Self::Mptcp];

    /// The URL scheme.
    pub const fn scheme(self) -> &'static str {
        match self {
            Self::Sctp => "sctp",
            Self::Tcp => "tcp",
            Self::Mptcp => "mptcp",
            Self::Udp => "udp",
        }
    }

    /// Whether messages travel on a byte stream and need framing (TCP and MPTCP).
    pub const fn is_stream(self) -> bool {
        matches!(self, Self::Tcp | Self::Mptcp)
    }
}

/// A transport, an address and the wire generation spoken there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransportUrl {
    /// The transport protocol.
    pub transport: Transport,
    /// The socket address.
    pub address: SocketAddr,
    /// The wire generation (RFC unless `?generation=ng`).
    pub generation: Generation,
}

/// Why a transport URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlError {
    /// The text that was given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
    /// The transports the caller takes, which the message names.
    pub accepted: &'static [Transport],
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad transport URL `{}`: {} (expected SCHEME://HOST:PORT with the scheme ",
            self.url, self.reason
        )?;
        for (i, transport) in self.accepted.iter().enumerate() {
            let separator = match i {
                0 => "",
                _ if i + 1 == self.accepted.len() => " or ",
                _ => ", ",
            };
            write!(f, "{separator}{}", transport.scheme())?;
        }
        let example = self.accepted.first().map_or("tcp", |t| t.scheme());
        write!(
            f,
            ", optionally followed by ?generation=rfc or ?generation=ng; e.g. \
             {example}://127.0.0.1:3863 or {example}://[::1]:3863?generation=ng)"
        )
    }
}

impl std::error::Error for UrlError {}

impl TransportUrl {
    /// A URL of the RFC generation.
    pub const fn new(transport: Transport, address: SocketAddr) -> Self {
        Self {
            transport,
            address,
            generation: Generation::Rfc,
        }
    }

    /// The same URL with the wire generation `generation`.
    pub const fn with_generation(self, generation: Generation) -> Self {
        Self { generation, ..self }
    }

    /// Parses `text`, taking only the schemes of `accepted` (an error names them); host names
    /// are resolved, and the first address counts.
    pub fn parse(text: &str, accepted: &'static [Transport]) -> Result<Self, UrlError> {
        let err = |reason: String| UrlError {
            url: text.to_owned(),
            reason,
            accepted,
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| err("missing `scheme://`".into()))?;
        let transport = accepted
            .iter()
            .copied()
            .find(|t| t.scheme().eq_ignore_ascii_case(scheme))
            .ok_or_else(|| err(format!("unknown scheme `{scheme}`")))?;
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        let address = match authority.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                let (host, port) = authority
                    .rsplit_once(':')
                    .ok_or_else(|| err("missing `:port`".into()))?;
                if host.is_empty() {
                    return Err(err("missing host".into()));
                }
                let port: u16 = port
                    .parse()
                    .map_err(|_| err(format!("bad port `{port}`")))?;
                (host, port)
                    .to_socket_addrs()
                    .map_err(|e| err(format!("cannot resolve host `{host}`: {e}")))?
                    .next()
                    .ok_or_else(|| err(format!("host `{host}` has no address")))?
            }
        };
        let mut generation = Generation::Rfc;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            generation = match pair.split_once('=') {
                Some(("generation", "rfc")) => Generation::Rfc,
                Some(("generation", "ng")) => Generation::Ng,
                Some(("generation", other)) => {
                    return Err(err(format!(
                        "generation must be `rfc` or `ng`, not `{other}`"
                    )));
                }
                _ => return Err(err(format!("unknown option `{pair}`"))),
            };
        }
        Ok(Self {
            transport,
            address,
            generation,
        })
    }
}

impl FromStr for TransportUrl {
    type Err = UrlError;

    /// Parses a URL of any of the four schemes.
    fn from_str(s: &str) -> Result<Self, UrlError> {
        Self::parse(s, Transport::ALL)
    }
}

impl fmt::Display for TransportUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.transport.scheme(), self.address)?;
        if self.generation == Generation::Ng {
            f.write_str("?generation=ng")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> TransportUrl {
        text.parse().unwrap()
    }

    #[test]
    fn parses_every_scheme_and_the_generation() {
        let u = url("tcp://127.0.0.1:3863");
        assert_eq!(
            u,
            TransportUrl::new(Transport::Tcp, "127.0.0.1:3863".parse().unwrap())
        );
        assert_eq!(u.generation, Generation::Rfc);
        let u = url("sctp://[::1]:9901?generation=ng");
        assert_eq!(u.transport, Transport::Sctp);
        assert_eq!(u.generation, Generation::Ng);
        assert_eq!(u.to_string(), "sctp://[::1]:9901?generation=ng");
        let u = url("sctp://127.0.0.1:3863?generation=ng");
        assert_eq!(u.address, "127.0.0.1:3863".parse().unwrap());
        assert_eq!(u.to_string(), "sctp://127.0.0.1:3863?generation=ng");
        assert_eq!(url("MPTCP://localhost:1/").transport, Transport::Mptcp);
        assert_eq!(url("tcp://localhost:1").address.port(), 1);
        assert_eq!(url("udp://239.0.0.50:3863").transport, Transport::Udp);
        let u = url("MPTCP://[::1]:13863/?generation=ng");
        assert_eq!(
            (u.transport, u.generation),
            (Transport::Mptcp, Generation::Ng)
        );
        assert_eq!(u.to_string(), "mptcp://[::1]:13863?generation=ng");
        assert_eq!(
            url("tcp://127.0.0.1:1?generation=rfc").generation,
            Generation::Rfc
        );
        let ng = TransportUrl::new(Transport::Udp, "127.0.0.1:1".parse().unwrap())
            .with_generation(Generation::Ng);
        assert_eq!(ng, url("udp://127.0.0.1:1?generation=ng"));
        // empty options are passed over; the last generation given counts
        assert_eq!(url("tcp://127.0.0.1:1?").generation, Generation::Rfc);
        let u = url("tcp://127.0.0.1:1?&generation=rfc&generation=ng");
        assert_eq!(u.generation, Generation::Ng);
    }

    #[test]
    fn each_caller_takes_its_schemes() {
        let u = TransportUrl::parse("mptcp://127.0.0.1:3863?generation=ng", Transport::STREAMS)
            .unwrap();
        assert_eq!(
            (u.transport, u.generation),
            (Transport::Mptcp, Generation::Ng)
        );
        assert_eq!(u.to_string(), "mptcp://127.0.0.1:3863?generation=ng");
        let u = TransportUrl::parse("sctp://127.0.0.1:3863", Transport::CONNECTIONS).unwrap();
        assert_eq!(u.transport, Transport::Sctp);
        let e = TransportUrl::parse("udp://127.0.0.1:3863", Transport::CONNECTIONS).unwrap_err();
        assert!(e.to_string().contains("unknown scheme `udp`"), "{e}");
        assert!(
            e.to_string().contains("the scheme sctp, tcp or mptcp,"),
            "{e}"
        );
        let e = TransportUrl::parse("sctp://127.0.0.1:3863", Transport::STREAMS).unwrap_err();
        assert!(e.to_string().contains("unknown scheme `sctp`"), "{e}");
        assert!(e.to_string().contains("the scheme tcp or mptcp,"), "{e}");
        assert!(e.to_string().contains("e.g. tcp://127.0.0.1:3863"), "{e}");
    }

    #[test]
    fn refuses_bad_urls_with_the_reason() {
        for (text, reason) in [
            ("127.0.0.1:3863", "missing `scheme://`"),
            ("sctp:/127.0.0.1:3863", "missing `scheme://`"),
            ("http://127.0.0.1:1", "unknown scheme `http`"),
            ("tcp://127.0.0.1", "missing `:port`"),
            ("tcp://:1", "missing host"),
            ("tcp://127.0.0.1:99999", "bad port `99999`"),
            ("tcp://127.0.0.1:70000", "bad port"),
            (
                "tcp://127.0.0.1:1?generation=v3",
                "generation must be `rfc` or `ng`, not `v3`",
            ),
            ("tcp://127.0.0.1:1?x=1", "unknown option `x=1`"),
        ] {
            let e = text.parse::<TransportUrl>().unwrap_err();
            assert_eq!(e.url, text);
            assert!(e.reason.contains(reason), "{text}: {e}");
            let message = e.to_string();
            assert!(
                message.starts_with(&format!("bad transport URL `{text}`: {reason}")),
                "{message}"
            );
            assert!(
                message.contains("with the scheme sctp, tcp, mptcp or udp, optionally followed by ?generation=rfc or ?generation=ng"),
                "{message}"
            );
        }
    }
}
