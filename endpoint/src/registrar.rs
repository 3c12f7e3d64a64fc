//! How an endpoint names a registrar: a transport (SCTP, TCP or MPTCP) and a socket address, and
//! the URL form `sctp://127.0.0.1:3863`, `tcp://127.0.0.1:3863`, `mptcp://[::1]:3863?generation=ng`
//! that configurations and the command line use.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use rserpool_protocol::Generation;

/// The transport to a registrar: an SCTP association (one-to-one, each message whole with PPID
/// 11) or a TCP or MPTCP byte stream (each message framed by its length, RFC 5354 §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StreamTransport {
    /// TCP.
    #[default]
    Tcp,
    /// Multipath TCP (IPPROTO_MPTCP); the same framing as TCP.
    Mptcp,
    /// SCTP (RFC 5352's transport for ASAP); needs kernel SCTP.
    Sctp,
}

impl StreamTransport {
    /// The URL scheme.
    pub const fn scheme(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Mptcp => "mptcp",
            Self::Sctp => "sctp",
        }
    }
}

/// A registrar's ASAP transport address as an endpoint reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Registrar {
    /// SCTP, TCP or MPTCP.
    pub transport: StreamTransport,
    /// The registrar's ASAP listener.
    pub address: SocketAddr,
}

impl Registrar {
    /// A registrar over TCP.
    pub const fn tcp(address: SocketAddr) -> Self {
        Self {
            transport: StreamTransport::Tcp,
            address,
        }
    }

    /// A registrar over MPTCP.
    pub const fn mptcp(address: SocketAddr) -> Self {
        Self {
            transport: StreamTransport::Mptcp,
            address,
        }
    }

    /// A registrar over SCTP.
    pub const fn sctp(address: SocketAddr) -> Self {
        Self {
            transport: StreamTransport::Sctp,
            address,
        }
    }
}

impl fmt::Display for Registrar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.transport.scheme(), self.address)
    }
}

/// A registrar URL: the registrar and the wire generation spoken there (`?generation=ng`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegistrarUrl {
    /// Transport and address.
    pub registrar: Registrar,
    /// RFC unless the URL says `?generation=ng`.
    pub generation: Generation,
}

impl fmt::Display for RegistrarUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.registrar)?;
        if self.generation == Generation::Ng {
            f.write_str("?generation=ng")?;
        }
        Ok(())
    }
}

/// Why a registrar URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlError {
    /// The text given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad registrar URL `{}`: {} (expected e.g. sctp://127.0.0.1:3863, \
             tcp://127.0.0.1:3863 or mptcp://[::1]:3863?generation=ng)",
            self.url, self.reason
        )
    }
}

impl std::error::Error for UrlError {}

impl FromStr for RegistrarUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let err = |reason: String| UrlError {
            url: s.to_owned(),
            reason,
        };
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| err("missing `scheme://`".into()))?;
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "tcp" => StreamTransport::Tcp,
            "mptcp" => StreamTransport::Mptcp,
            "sctp" => StreamTransport::Sctp,
            _ => return Err(err(format!("unknown scheme `{scheme}`"))),
        };
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
            registrar: Registrar { transport, address },
            generation,
        })
    }
}

impl FromStr for Registrar {
    type Err = UrlError;

    /// Parses a URL of the RFC generation (`?generation=ng` is refused here: use
    /// [`RegistrarUrl`] to read the generation too).
    fn from_str(s: &str) -> Result<Self, UrlError> {
        let url: RegistrarUrl = s.parse()?;
        if url.generation != Generation::Rfc {
            return Err(UrlError {
                url: s.to_owned(),
                reason: "parse it as a RegistrarUrl to keep its generation".into(),
            });
        }
        Ok(url.registrar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sctp_tcp_mptcp_and_the_generation() {
        let u: RegistrarUrl = "tcp://127.0.0.1:3863".parse().unwrap();
        assert_eq!(
            u.registrar,
            Registrar::tcp("127.0.0.1:3863".parse().unwrap())
        );
        assert_eq!(u.generation, Generation::Rfc);
        let u: RegistrarUrl = "MPTCP://[::1]:13863/?generation=ng".parse().unwrap();
        assert_eq!(u.registrar.transport, StreamTransport::Mptcp);
        assert_eq!(u.generation, Generation::Ng);
        assert_eq!(u.to_string(), "mptcp://[::1]:13863?generation=ng");
        let r: Registrar = "tcp://localhost:1".parse().unwrap();
        assert_eq!(r.address.port(), 1);
        let u: RegistrarUrl = "sctp://127.0.0.1:3863?generation=ng".parse().unwrap();
        assert_eq!(
            u.registrar,
            Registrar::sctp("127.0.0.1:3863".parse().unwrap())
        );
        assert_eq!(u.generation, Generation::Ng);
        assert_eq!(u.to_string(), "sctp://127.0.0.1:3863?generation=ng");
    }

    #[test]
    fn refuses_bad_urls_with_the_reason() {
        for (url, reason) in [
            ("127.0.0.1:3863", "missing `scheme://`"),
            ("sctp:/127.0.0.1:3863", "missing `scheme://`"),
            ("udp://127.0.0.1:3863", "unknown scheme"),
            ("tcp://127.0.0.1", "missing `:port`"),
            ("tcp://:1", "missing host"),
            ("tcp://127.0.0.1:70000", "bad port"),
            ("tcp://127.0.0.1:1?generation=v3", "generation must be"),
            ("tcp://127.0.0.1:1?x=1", "unknown option"),
        ] {
            let e = url.parse::<RegistrarUrl>().unwrap_err();
            assert!(e.to_string().contains(reason), "{url}: {e}");
        }
        assert!(
            "tcp://127.0.0.1:1?generation=ng"
                .parse::<Registrar>()
                .is_err()
        );
    }
}
