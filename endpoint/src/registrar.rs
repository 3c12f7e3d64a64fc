//! How an endpoint names a registrar: a transport (SCTP, TCP or MPTCP, the latter two optionally
//! over TLS, or SCTP over UDP) and a socket address, and the URL form `sctp://127.0.0.1:3863`,
//! `tcp://127.0.0.1:3863`, `tcp+tls://127.0.0.1:3864`, `mptcp://[::1]:3863?generation=ng`,
//! `sctp+udp://127.0.0.1:9899` that
//! configurations and the command line use. The URLs are transport URLs
//! (`rserpool_protocol::url`), parsed by their one parser with the schemes of
//! [`Transport::CONNECTIONS`].

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use rserpool_protocol::Generation;
pub use rserpool_protocol::url::UrlError;
use rserpool_protocol::url::{Transport, TransportUrl};

/// The transport to a registrar: an SCTP association (one-to-one, each message whole with PPID
/// 11; over kernel SCTP or over UDP) or a TCP or MPTCP byte stream (each message framed by its
/// length, RFC 5354 §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StreamTransport {
    /// TCP.
    #[default]
    Tcp,
    /// Multipath TCP (IPPROTO_MPTCP); the same framing as TCP.
    Mptcp,
    /// SCTP (RFC 5352's transport for ASAP); needs kernel SCTP.
    Sctp,
    /// SCTP over UDP (RFC 6951), run in user space: the address is the registrar's UDP port
    /// (9899 by default), the association goes to its ASAP port 3863 inside.
    SctpUdp,
}

impl StreamTransport {
    /// The URL scheme.
    pub const fn scheme(self) -> &'static str {
        self.url_transport().scheme()
    }

    /// The same transport as transport URLs name it.
    pub const fn url_transport(self) -> Transport {
        match self {
            Self::Tcp => Transport::Tcp,
            Self::Mptcp => Transport::Mptcp,
            Self::Sctp => Transport::Sctp,
            Self::SctpUdp => Transport::SctpUdp,
        }
    }
}

impl From<StreamTransport> for Transport {
    fn from(transport: StreamTransport) -> Self {
        transport.url_transport()
    }
}

/// A registrar's ASAP transport address as an endpoint reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Registrar {
    /// SCTP, TCP or MPTCP.
    pub transport: StreamTransport,
    /// The registrar's ASAP listener.
    pub address: SocketAddr,
    /// TLS over the stream (`tcp+tls://`, `mptcp+tls://`; the driver's
    /// [`crate::driver::Options::tls`] says with which certificates).
    pub tls: bool,
}

impl Registrar {
    /// A registrar over TCP.
    pub const fn tcp(address: SocketAddr) -> Self {
        Self {
            transport: StreamTransport::Tcp,
            address,
            tls: false,
        }
    }

    /// A registrar over MPTCP.
    pub const fn mptcp(address: SocketAddr) -> Self {
        Self {
            transport: StreamTransport::Mptcp,
            address,
            tls: false,
        }
    }

    /// A registrar over SCTP.
    pub const fn sctp(address: SocketAddr) -> Self {
        Self {
            transport: StreamTransport::Sctp,
            address,
            tls: false,
        }
    }

    /// A registrar over SCTP over UDP, at its UDP address.
    pub const fn sctp_udp(address: SocketAddr) -> Self {
        Self {
            transport: StreamTransport::SctpUdp,
            address,
            tls: false,
        }
    }

    /// The same registrar over TLS.
    pub const fn with_tls(self) -> Self {
        Self { tls: true, ..self }
    }

    /// The registrar as a transport URL of the RFC generation.
    pub const fn url(&self) -> TransportUrl {
        let url = TransportUrl::new(self.transport.url_transport(), self.address);
        if self.tls { url.with_tls() } else { url }
    }
}

impl fmt::Display for Registrar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.url().fmt(f)
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

impl RegistrarUrl {
    /// The registrar URL as a transport URL.
    pub const fn url(&self) -> TransportUrl {
        self.registrar.url().with_generation(self.generation)
    }
}

impl fmt::Display for RegistrarUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.url().fmt(f)
    }
}

impl FromStr for RegistrarUrl {
    type Err = UrlError;

    /// Parses an `sctp://`, `tcp://`, `mptcp://` or `sctp+udp://` URL with the transport URL
    /// parser.
    fn from_str(s: &str) -> Result<Self, UrlError> {
        let url = TransportUrl::parse(s, Transport::CONNECTIONS)?;
        let transport = match url.transport {
            Transport::Tcp => StreamTransport::Tcp,
            Transport::Mptcp => StreamTransport::Mptcp,
            Transport::Sctp => StreamTransport::Sctp,
            Transport::SctpUdp => StreamTransport::SctpUdp,
            // refused by the parser already: UDP is not among the schemes it was given
            Transport::Udp => {
                return Err(UrlError {
                    url: s.to_owned(),
                    reason: "unknown scheme `udp`".into(),
                    accepted: Transport::CONNECTIONS,
                });
            }
        };
        Ok(Self {
            registrar: Registrar {
                transport,
                address: url.address,
                tls: url.tls.is_some(),
            },
            generation: url.generation,
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
                accepted: Transport::CONNECTIONS,
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
        let u: RegistrarUrl = "sctp+udp://127.0.0.1:9899".parse().unwrap();
        assert_eq!(
            u.registrar,
            Registrar::sctp_udp("127.0.0.1:9899".parse().unwrap())
        );
        assert_eq!(u.to_string(), "sctp+udp://127.0.0.1:9899");
    }

    #[test]
    fn tls_urls_name_a_tls_registrar() {
        let u: RegistrarUrl = "tcp+tls://127.0.0.1:3864".parse().unwrap();
        assert_eq!(
            u.registrar,
            Registrar::tcp("127.0.0.1:3864".parse().unwrap()).with_tls()
        );
        assert_eq!(u.to_string(), "tcp+tls://127.0.0.1:3864");
        assert!(
            !"tcp://127.0.0.1:1"
                .parse::<RegistrarUrl>()
                .unwrap()
                .registrar
                .tls
        );
    }

    #[test]
    fn refuses_bad_urls_with_the_reason() {
        for (url, reason) in [
            ("127.0.0.1:3863", "missing `scheme://`"),
            ("sctp:/127.0.0.1:3863", "missing `scheme://`"),
            ("udp://127.0.0.1:3863", "unknown scheme `udp`"),
            ("tcp://127.0.0.1", "missing `:port`"),
            ("tcp://:1", "missing host"),
            ("tcp://127.0.0.1:70000", "bad port"),
            ("tcp://127.0.0.1:1?generation=v3", "generation must be"),
            ("tcp://127.0.0.1:1?x=1", "unknown option"),
        ] {
            let e = url.parse::<RegistrarUrl>().unwrap_err();
            assert!(e.to_string().contains(reason), "{url}: {e}");
            assert!(
                e.to_string().contains(
                    "with the scheme sctp, tcp, mptcp or sctp+udp (tcp+tls or mptcp+tls for \
                         TLS),"
                ),
                "{url}: {e}"
            );
        }
        assert!(
            "tcp://127.0.0.1:1?generation=ng"
                .parse::<Registrar>()
                .is_err()
        );
    }
}
