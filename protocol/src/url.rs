//! Transport URLs: how the registrar's configuration and command line, the endpoint's
//! configuration and command line and the load generator name a transport address. A URL is a
//! scheme (`sctp://`, `tcp://`, `mptcp://` or `udp://`, any case; `tcp+tls://` and
//! `mptcp+tls://` for TLS 1.3 over a stream, RFC 5352 §9.3), then `host:port` (an IPv4 address, a
//! bracketed IPv6 address or a host name to resolve), an optional `/`, then options:
//! `generation=rfc` or `generation=ng` (RFC when absent) and, on a TLS listener,
//! `client_certificate=required|optional|none` (required when absent: mutual TLS), joined by `&`
//! after a `?`. One parser serves every tool; each tool says which schemes it takes
//! ([`TransportUrl::parse`] with [`Transport::ALL`], [`Transport::CONNECTIONS`] or
//! [`Transport::STREAMS`]; the TLS form of a stream transport is taken wherever the stream
//! transport is).
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
    /// SCTP in UDP (RFC 6951), run in user space: the URL's port is the UDP port (9899 by
    /// RFC 6951's assignment), the SCTP port inside is the protocol's (ASAP 3863, ENRP 9901);
    /// PPIDs and messages as over SCTP.
    SctpUdp,
}

impl Transport {
    /// Every transport: what the registrar's URLs take.
    pub const ALL: &'static [Self] =
        &[Self::Sctp, Self::Tcp, Self::Mptcp, Self::Udp, Self::SctpUdp];
    /// The transports that carry a connection to a registrar: what an endpoint's registrar URLs
    /// take.
    pub const CONNECTIONS: &'static [Self] = &[Self::Sctp, Self::Tcp, Self::Mptcp, Self::SctpUdp];
    /// The byte-stream transports: what the load generator's URLs take.
    pub const STREAMS: &'static [Self] = &[Self::Tcp, Self::Mptcp];

    /// The URL scheme.
    pub const fn scheme(self) -> &'static str {
        match self {
            Self::Sctp => "sctp",
            Self::Tcp => "tcp",
            Self::Mptcp => "mptcp",
            Self::Udp => "udp",
            Self::SctpUdp => "sctp+udp",
        }
    }

    /// Whether messages travel on a byte stream and need framing (TCP and MPTCP).
    pub const fn is_stream(self) -> bool {
        matches!(self, Self::Tcp | Self::Mptcp)
    }
}

/// What a TLS listener asks of its clients (`client_certificate=` in its URL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientCertificate {
    /// Every client presents a certificate the CA bundle vouches for (mutual TLS, RFC 5355
    /// §2.1-2.4: PEs and PRs): the default.
    Required,
    /// A client may present one; if it does, it is verified, else the client has no identity
    /// (e.g. PUs, which RFC 5352 §9.3 lets authenticate the PR only).
    Optional,
    /// No client certificate is asked for.
    None,
}

impl ClientCertificate {
    /// The value of the URL option.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Optional => "optional",
            Self::None => "none",
        }
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
    /// TLS over the stream (`tcp+tls://`, `mptcp+tls://`), and what a listener asks of its
    /// clients; `None` for plain transports.
    pub tls: Option<ClientCertificate>,
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
        if self.accepted.iter().any(|t| t.is_stream()) {
            f.write_str(" (tcp+tls or mptcp+tls for TLS)")?;
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
            tls: None,
        }
    }

    /// The same URL over TLS (a listener requiring client certificates); only stream
    /// transports carry TLS.
    pub const fn with_tls(self) -> Self {
        Self {
            tls: Some(ClientCertificate::Required),
            ..self
        }
    }

    /// The URL's scheme: the transport's, with `+tls` when TLS is on.
    pub const fn scheme(&self) -> &'static str {
        match (self.transport, self.tls.is_some()) {
            (Transport::Tcp, true) => "tcp+tls",
            (Transport::Mptcp, true) => "mptcp+tls",
            (t, _) => t.scheme(),
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
        let (base, tls) = match scheme.len().checked_sub(4) {
            Some(at)
                if scheme.is_char_boundary(at) && scheme[at..].eq_ignore_ascii_case("+tls") =>
            {
                (&scheme[..at], true)
            }
            _ => (scheme, false),
        };
        let transport = accepted
            .iter()
            .copied()
            .find(|t| t.scheme().eq_ignore_ascii_case(base))
            .ok_or_else(|| err(format!("unknown scheme `{scheme}`")))?;
        if tls && !transport.is_stream() {
            return Err(err(format!(
                "TLS runs over tcp and mptcp only, not over {base} (RFC 5355's alternative for \
                 SCTP is IPsec)"
            )));
        }
        let mut client_certificate = tls.then_some(ClientCertificate::Required);
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
            match pair.split_once('=') {
                Some(("generation", "rfc")) => generation = Generation::Rfc,
                Some(("generation", "ng")) => generation = Generation::Ng,
                Some(("generation", other)) => {
                    return Err(err(format!(
                        "generation must be `rfc` or `ng`, not `{other}`"
                    )));
                }
                Some(("client_certificate", value)) if tls => {
                    client_certificate = Some(match value {
                        "required" => ClientCertificate::Required,
                        "optional" => ClientCertificate::Optional,
                        "none" => ClientCertificate::None,
                        other => {
                            return Err(err(format!(
                                "client_certificate must be `required`, `optional` or `none`, \
                                 not `{other}`"
                            )));
                        }
                    });
                }
                Some(("client_certificate", _)) => {
                    return Err(err(
                        "client_certificate applies to TLS listeners (tcp+tls://, mptcp+tls://)"
                            .into(),
                    ));
                }
                _ => return Err(err(format!("unknown option `{pair}`"))),
            }
        }
        Ok(Self {
            transport,
            address,
            generation,
            tls: client_certificate,
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
        write!(f, "{}://{}", self.scheme(), self.address)?;
        let mut separator = '?';
        if self.generation == Generation::Ng {
            write!(f, "{separator}generation=ng")?;
            separator = '&';
        }
        match self.tls {
            None | Some(ClientCertificate::Required) => {}
            Some(c) => write!(f, "{separator}client_certificate={}", c.name())?,
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
        // SCTP in UDP: its own scheme, any case, shown as given; no TLS over it.
        let u = TransportUrl::parse(
            "SCTP+UDP://127.0.0.1:9899?generation=ng",
            Transport::CONNECTIONS,
        )
        .unwrap();
        assert_eq!(
            (u.transport, u.generation),
            (Transport::SctpUdp, Generation::Ng)
        );
        assert_eq!(u.to_string(), "sctp+udp://127.0.0.1:9899?generation=ng");
        let e = TransportUrl::parse("sctp+udp+tls://127.0.0.1:9899", Transport::ALL).unwrap_err();
        assert!(
            e.to_string().contains("TLS runs over tcp and mptcp only"),
            "{e}"
        );
        let e = TransportUrl::parse("sctp+udp://127.0.0.1:9899", Transport::STREAMS).unwrap_err();
        assert!(e.to_string().contains("unknown scheme `sctp+udp`"), "{e}");
        let e = TransportUrl::parse("udp://127.0.0.1:3863", Transport::CONNECTIONS).unwrap_err();
        assert!(e.to_string().contains("unknown scheme `udp`"), "{e}");
        assert!(
            e.to_string().contains(
                "the scheme sctp, tcp, mptcp or sctp+udp (tcp+tls or mptcp+tls for TLS),"
            ),
            "{e}"
        );
        let e = TransportUrl::parse("sctp://127.0.0.1:3863", Transport::STREAMS).unwrap_err();
        assert!(e.to_string().contains("unknown scheme `sctp`"), "{e}");
        assert!(
            e.to_string()
                .contains("the scheme tcp or mptcp (tcp+tls or mptcp+tls for TLS),"),
            "{e}"
        );
        assert!(e.to_string().contains("e.g. tcp://127.0.0.1:3863"), "{e}");
    }

    #[test]
    fn tls_is_a_scheme_suffix_of_the_stream_transports() {
        let u = url("tcp+tls://127.0.0.1:3864");
        assert_eq!(
            (u.transport, u.tls),
            (Transport::Tcp, Some(ClientCertificate::Required))
        );
        assert_eq!(u.to_string(), "tcp+tls://127.0.0.1:3864");
        assert_eq!(
            u,
            TransportUrl::new(Transport::Tcp, "127.0.0.1:3864".parse().unwrap()).with_tls()
        );
        let u = url("MPTCP+TLS://[::1]:3864?generation=ng&client_certificate=optional");
        assert_eq!(
            (u.transport, u.generation, u.tls),
            (
                Transport::Mptcp,
                Generation::Ng,
                Some(ClientCertificate::Optional)
            )
        );
        assert_eq!(
            u.to_string(),
            "mptcp+tls://[::1]:3864?generation=ng&client_certificate=optional"
        );
        let u = url("tcp+tls://127.0.0.1:1?client_certificate=none");
        assert_eq!(u.tls, Some(ClientCertificate::None));
        assert_eq!(
            u.to_string(),
            "tcp+tls://127.0.0.1:1?client_certificate=none"
        );
        assert_eq!(url("tcp://127.0.0.1:1").tls, None);
        let u = TransportUrl::parse("tcp+tls://127.0.0.1:1", Transport::STREAMS).unwrap();
        assert_eq!(u.scheme(), "tcp+tls");
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
            ("sctp+tls://127.0.0.1:1", "TLS runs over tcp and mptcp only"),
            ("udp+tls://127.0.0.1:1", "TLS runs over tcp and mptcp only"),
            ("tcp+tl://127.0.0.1:1", "unknown scheme `tcp+tl`"),
            (
                "tcp://127.0.0.1:1?client_certificate=none",
                "client_certificate applies to TLS listeners",
            ),
            (
                "tcp+tls://127.0.0.1:1?client_certificate=maybe",
                "client_certificate must be `required`, `optional` or `none`, not `maybe`",
            ),
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
                message.contains("with the scheme sctp, tcp, mptcp, udp or sctp+udp (tcp+tls or mptcp+tls for TLS), optionally followed by ?generation=rfc or ?generation=ng"),
                "{message}"
            );
        }
    }
}
