//! Transport URLs: how the command line and the configuration name a listener, a peer or an
//! announce target (`sctp://`, `tcp://`, `mptcp://` or `udp://`, then `host:port`, then an
//! optional `?generation=rfc|ng`).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use rserpool_protocol::Generation;

/// The transport protocol of a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// SCTP one-to-many (RFC 4960; PPID 11 for ASAP, 12 for ENRP).
    Sctp,
    /// TCP: messages back to back on the byte stream.
    Tcp,
    /// Multipath TCP (RFC 8684), framed like TCP; plain TCP clients fall back to it.
    Mptcp,
    /// UDP: announces, presence, and stateless handle resolution.
    Udp,
}

impl Transport {
    /// The URL scheme.
    pub const fn scheme(self) -> &'static str {
        match self {
            Self::Sctp => "sctp",
            Self::Tcp => "tcp",
            Self::Mptcp => "mptcp",
            Self::Udp => "udp",
        }
    }

    /// Whether messages travel on a byte stream and need framing.
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
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad transport URL `{}`: {} (expected e.g. tcp://127.0.0.1:3863 or \
             sctp://[::1]:3863?generation=ng; schemes sctp, tcp, mptcp, udp)",
            self.url, self.reason
        )
    }
}

impl std::error::Error for UrlError {}

impl FromStr for TransportUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let err = |reason: &str| UrlError {
            url: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| err("missing `scheme://`"))?;
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "sctp" => Transport::Sctp,
            "tcp" => Transport::Tcp,
            "mptcp" => Transport::Mptcp,
            "udp" => Transport::Udp,
            _ => return Err(err(&format!("unknown scheme `{scheme}`"))),
        };
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        let address = match authority.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                let (host, port) = authority
                    .rsplit_once(':')
                    .ok_or_else(|| err("missing `:port`"))?;
                if host.is_empty() {
                    return Err(err("missing host"));
                }
                let port: u16 = port
                    .parse()
                    .map_err(|_| err(&format!("bad port `{port}`")))?;
                (host, port)
                    .to_socket_addrs()
                    .map_err(|e| err(&format!("cannot resolve host `{host}`: {e}")))?
                    .next()
                    .ok_or_else(|| err(&format!("host `{host}` has no address")))?
            }
        };
        let mut generation = Generation::Rfc;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("generation", "rfc")) => generation = Generation::Rfc,
                Some(("generation", "ng")) => generation = Generation::Ng,
                Some(("generation", other)) => {
                    return Err(err(&format!(
                        "generation must be `rfc` or `ng`, not `{other}`"
                    )));
                }
                _ => return Err(err(&format!("unknown option `{pair}`"))),
            }
        }
        Ok(Self {
            transport,
            address,
            generation,
        })
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

    #[test]
    fn parses_every_scheme_and_the_generation() {
        let u: TransportUrl = "tcp://127.0.0.1:3863".parse().unwrap();
        assert_eq!(u.transport, Transport::Tcp);
        assert_eq!(u.address, "127.0.0.1:3863".parse().unwrap());
        assert_eq!(u.generation, Generation::Rfc);
        let u: TransportUrl = "sctp://[::1]:9901?generation=ng".parse().unwrap();
        assert_eq!(u.transport, Transport::Sctp);
        assert_eq!(u.generation, Generation::Ng);
        assert_eq!(u.to_string(), "sctp://[::1]:9901?generation=ng");
        assert_eq!(
            "MPTCP://localhost:1/"
                .parse::<TransportUrl>()
                .unwrap()
                .transport,
            Transport::Mptcp
        );
        assert_eq!(
            "udp://239.0.0.50:3863"
                .parse::<TransportUrl>()
                .unwrap()
                .transport,
            Transport::Udp
        );
    }

    #[test]
    fn refuses_bad_urls_with_the_reason() {
        for (url, reason) in [
            ("127.0.0.1:3863", "missing `scheme://`"),
            ("http://127.0.0.1:1", "unknown scheme"),
            ("tcp://127.0.0.1", "missing `:port`"),
            ("tcp://127.0.0.1:99999", "bad port"),
            ("tcp://127.0.0.1:1?generation=v3", "generation must be"),
            ("tcp://127.0.0.1:1?x=1", "unknown option"),
        ] {
            let e = url.parse::<TransportUrl>().unwrap_err();
            assert!(e.to_string().contains(reason), "{url}: {e}");
        }
    }
}
